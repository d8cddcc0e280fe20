#!/bin/bash
# A throwaway Slurm cluster on this one machine: a private munged, slurmctld and several slurmd
# "nodes" (127.0.0.1, 127.0.0.2, ... all loopback), to try deploy/slurm/dtrain.sbatch for real.
#
#   deploy/slurm/local-cluster.sh up        # prints the SLURM_CONF line to export
#   export SLURM_CONF=/tmp/dtrain-slurm/slurm.conf
#   SCRIPT=examples/digits.py sbatch --ntasks=3 deploy/slurm/dtrain.sbatch
#   deploy/slurm/local-cluster.sh down      # cancels its jobs, stops only what "up" started
#
# Needs root (slurmd runs jobs as their user) and Debian's slurm-wlm and munge packages.
# Settings (environment): DTRAIN_SLURM_DIR (state, spool and logs; default /tmp/dtrain-slurm),
# DTRAIN_SLURM_NODES (default 3), DTRAIN_SLURM_CPUS (CPUs declared per node, default 2),
# DTRAIN_SLURM_PORT (slurmctld's port; slurmd nodes use the next ones; default 16817).
# "up" is idempotent: a cluster already up in DIR is left as it is. Nothing outside DIR is
# written: the daemons, munged included, use sockets, pid files and logs under DIR.
set -euo pipefail

DIR=${DTRAIN_SLURM_DIR:-/tmp/dtrain-slurm}
NODES=${DTRAIN_SLURM_NODES:-3}
CPUS=${DTRAIN_SLURM_CPUS:-2}
PORT=${DTRAIN_SLURM_PORT:-16817}
CONF=$DIR/slurm.conf
MUNGE_SOCKET=$DIR/munge/munge.socket
export SLURM_CONF=$CONF

die() { echo "local-cluster: $*" >&2; exit 1; }
say() { echo "local-cluster: $*" >&2; }

node_names() { seq -f "127.0.0.%g" 1 "$NODES"; }

# pid files of the daemons this script starts (and only those are ever signalled)
pid_files() {
    echo "$DIR/munge/munged.pid"
    echo "$DIR/run/slurmctld.pid"
    for n in $(node_names); do echo "$DIR/run/slurmd-$n.pid"; done
}

alive() {  # alive PIDFILE: the process it names is running
    [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

check_tools() {
    [ "$(id -u)" = 0 ] || die "must run as root (slurmd starts jobs as their users)"
    local missing=()
    for tool in munged slurmctld slurmd sinfo; do
        command -v "$tool" >/dev/null || missing+=("$tool")
    done
    [ ${#missing[@]} = 0 ] || die "missing ${missing[*]}: apt-get install -y slurm-wlm munge"
    [ -r /etc/munge/munge.key ] || die "no /etc/munge/munge.key (Debian's munge package makes it)"
}

write_conf() {
    local last=$((PORT + NODES))
    cat > "$CONF" <<EOF
# written by deploy/slurm/local-cluster.sh: one host, $NODES slurmd nodes on loopback
ClusterName=dtrain-local
SlurmctldHost=localhost
SlurmctldPort=$PORT
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
MailProg=/bin/true
ReturnToService=2
KillWait=5
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
NodeName=127.0.0.[1-$NODES] NodeHostname=localhost NodeAddr=127.0.0.1 Port=[$((PORT + 1))-$last] CPUs=$CPUS State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

wait_for() {  # wait_for SECONDS WHAT COMMAND...: poll until COMMAND succeeds
    local seconds=$1 what=$2
    shift 2
    local end=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $end ] || die "$what did not happen within ${seconds}s (logs in $DIR/log)"
        sleep 0.2
    done
}

nodes_idle() {
    [ "$(sinfo -h -N -t idle -o %N | sort -u | wc -l)" = "$NODES" ]
}

up() {
    check_tools
    if [ -f "$CONF" ] && alive "$DIR/run/slurmctld.pid" && nodes_idle; then
        say "already up in $DIR"
        echo "export SLURM_CONF=$CONF"
        return
    fi
    down_daemons  # a half-started earlier attempt in DIR
    mkdir -p "$DIR"/{state,spool,run,log,munge}
    chmod 0755 "$DIR"
    chown munge:munge "$DIR/munge"
    chmod 0755 "$DIR/munge"  # munged requires that everyone may reach its socket
    write_conf
    # munged refuses to run as root: it runs as the munge user with Debian's key
    runuser -u munge -- munged --socket="$MUNGE_SOCKET" --pid-file="$DIR/munge/munged.pid" \
        --log-file="$DIR/munge/munged.log" --seed-file="$DIR/munge/munged.seed"
    wait_for 10 "munged start" test -S "$MUNGE_SOCKET"
    slurmctld -f "$CONF"
    for n in $(node_names); do
        slurmd -f "$CONF" -N "$n"
    done
    wait_for 30 "all $NODES nodes idle" nodes_idle
    say "up: $NODES nodes ($(sinfo -h -o %N)), $CPUS CPUs each, state and logs in $DIR"
    echo "export SLURM_CONF=$CONF"
}

stop_pidfiles() {  # stop_pidfiles FILE...: SIGTERM their processes together, SIGKILL after 10 s
    local file pids=()
    for file in "$@"; do
        alive "$file" && pids+=("$(cat "$file")")
    done
    if [ ${#pids[@]} -gt 0 ]; then
        kill "${pids[@]}" 2>/dev/null || true
        local end=$((SECONDS + 10))
        while kill -0 "${pids[@]}" 2>/dev/null && [ $SECONDS -lt $end ]; do sleep 0.1; done
        kill -9 "${pids[@]}" 2>/dev/null || true
    fi
    rm -f "$@"
}

down_daemons() {
    # the slurmd nodes first, then the controller, munged last (the others authenticate
    # through it)
    stop_pidfiles $(pid_files | grep slurmd-)
    stop_pidfiles "$DIR/run/slurmctld.pid"
    stop_pidfiles "$DIR/munge/munged.pid"
}

down() {
    [ -d "$DIR" ] || { say "nothing in $DIR"; return; }
    if alive "$DIR/run/slurmctld.pid"; then
        # jobs first: their slurmstepd processes outlive slurmd
        local jobs
        jobs=$(squeue -h -o %i 2>/dev/null || true)
        [ -z "$jobs" ] || scancel --full $jobs || true
        local end=$((SECONDS + 30))
        while [ -n "$(squeue -h -o %i 2>/dev/null)" ] && [ $SECONDS -lt $end ]; do sleep 0.2; done
        [ -z "$(squeue -h -o %i 2>/dev/null)" ] || say "warning: jobs still listed after 30 s"
    fi
    down_daemons
    rm -rf "$DIR"/{state,spool,run,munge} "$CONF"
    say "down (logs kept in $DIR/log)"
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    *) echo "usage: $0 up|down   (state in \$DTRAIN_SLURM_DIR, default /tmp/dtrain-slurm)" >&2
       exit 2 ;;
esac
