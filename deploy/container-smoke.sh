#!/bin/bash
# Build deploy/Dockerfile with podman on this machine and run it: dtrain --help as the image's
# unprivileged user, then a coordinator container and two worker containers that train
# examples/digits.py with the sharded reduction (the default across pods: the workers seal their
# messages to each other) and CURVE keys mounted read-only, as deploy/k8s/ mounts its Secrets.
#
#   deploy/container-smoke.sh          # build (if needed) and run the smoke test
#   deploy/container-smoke.sh build    # only build; prints the image name
#
# No registry is needed: the base image is made locally (debootstrap of Debian bookworm with
# python3 and a venv on PATH, tagged localhost/dtrain-base:bookworm-DIGEST) and given to
# "podman build --from", so the Dockerfile builds unchanged. The image is tagged by a digest of
# the Dockerfile and the files it copies, so it is rebuilt only when those change; it is also
# tagged dtrain:0.1.0, the name the Kubernetes manifests use. Needs root, podman, runc and
# debootstrap (apt-get install -y podman runc debootstrap). Containers it starts are removed
# on exit; images are kept as a cache (podman rmi to drop them).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$ROOT/deploy/podman/containers.conf}
BASE=localhost/dtrain-base:bookworm  # + a digest of build_base, so a changed recipe rebuilds
say() { echo "container-smoke: $*" >&2; }
die() { say "$*"; exit 1; }

check_tools() {
    [ "$(id -u)" = 0 ] || die "must run as root (debootstrap, podman with host networking)"
    local missing=()
    for tool in podman runc debootstrap; do
        command -v "$tool" >/dev/null || missing+=("$tool")
    done
    [ ${#missing[@]} = 0 ] \
        || die "missing ${missing[*]}: apt-get install -y podman runc debootstrap"
}

build_base() {
    podman image exists "$BASE" && return
    local tmp SYS=/sbin:/bin
    tmp=$(mktemp -d /tmp/dtrain-base-XXXXXX)
    # shellcheck disable=SC2064
    trap "rm -rf '$tmp'" RETURN
    say "making $BASE with debootstrap (about a minute)"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$tmp/root" >"$tmp/debootstrap.log" 2>&1 \
        || { tail -20 "$tmp/debootstrap.log" >&2; die "debootstrap failed"; }
    # this machine's certificate bundle (it may hold extra authorities pip needs to reach PyPI)
    cp /etc/ssl/certs/ca-certificates.crt "$tmp/root/etc/ssl/certs/ca-certificates.crt"
    chroot "$tmp/root" python3 -m venv /opt/python
    rm -rf "$tmp/root"/var/cache/apt/archives/*.deb "$tmp/root"/var/lib/apt/lists/*
    tar -C "$tmp/root" -c . | podman import --quiet \
        --change "ENV PATH=/opt/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:$SYS" \
        --change 'CMD ["python3"]' - "$BASE" >/dev/null
}

image_name() {  # a tag per content of the Dockerfile and of what it copies
    local digest
    digest=$(cd "$ROOT" && find deploy/Dockerfile pyproject.toml README.md \
                 dtrain/ workers/ launcher/ examples/ \
                 -type f ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 \
             | LC_ALL=C sort -z | xargs -0 sha256sum | cat - <(echo "$BASE") | sha256sum \
             | cut -c1-16)
    echo "localhost/dtrain:src-$digest"
}

build() {
    check_tools
    local image
    image=$(image_name)
    if ! podman image exists "$image"; then
        build_base
        say "building $image from deploy/Dockerfile"
        podman build --quiet --from "$BASE" -f "$ROOT/deploy/Dockerfile" -t "$image" "$ROOT" \
            >/dev/null
        podman tag "$image" localhost/dtrain:0.1.0
        # older builds of this script (other contents) are only a cache: keep the newest
        podman images --format '{{.Repository}}:{{.Tag}}' \
            | grep -E '^localhost/(dtrain:src-|dtrain-base:bookworm-)' \
            | grep -v -x -e "$image" -e "$BASE" | xargs -r podman rmi >/dev/null 2>&1 || true
    fi
    podman tag "$image" localhost/dtrain:0.1.0
    echo "$image"
}

NAMES=()  # containers this run started: removed on exit, whatever happens
WORK=""
cleanup() {
    [ ${#NAMES[@]} = 0 ] || podman rm -f "${NAMES[@]}" >/dev/null 2>&1 || true
    [ -z "$WORK" ] || rm -rf "$WORK"
}

smoke() {
    local image port
    image=$(build)
    say "dtrain --help as the image's user"
    [ "$(podman run --rm "$image" id -u)" = 10001 ] || die "the image does not run as uid 10001"
    podman run --rm "$image" dtrain --help >/dev/null
    trap cleanup EXIT
    WORK=$(mktemp -d /tmp/dtrain-smoke-XXXXXX)
    keys "$image" "$WORK"
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])')
    mkdir -m 0775 "$WORK/runs" && chown 10001:10001 "$WORK/runs"
    local tag=$$ job="smoke-$$"
    NAMES=("dtrain-smoke-coordinator-$tag" "dtrain-smoke-worker0-$tag" "dtrain-smoke-worker1-$tag")
    say "a coordinator and two workers on examples/digits.py (2 epochs, sharded as across pods)"
    # host networking (containers.conf), each container with a host name of its own, as pods
    podman run -d --name "${NAMES[0]}" --hostname dtrain-coordinator \
        -v "$WORK/coordinator:/keys:ro" -v "$WORK/runs:/runs" \
        "$image" dtrain coordinator --bind "tcp://127.0.0.1:$port" --workers 2 --keys /keys \
        --job-id "$job" --epochs 2 --reduction sharded --no-progress --out /runs/digits \
        examples/digits.py >/dev/null
    for rank in 0 1; do
        podman run -d --name "${NAMES[$((rank + 1))]}" --hostname "dtrain-worker-$rank" \
            -v "$WORK/worker:/keys:ro" -e "DTRAIN_COORDINATOR=tcp://127.0.0.1:$port" "$image" \
            dtrain worker --keys /keys --job-id "$job" --rank "$rank" examples/digits.py >/dev/null
    done
    local code
    code=$(timeout 600 podman wait "${NAMES[0]}")
    local logs
    logs=$(podman logs "${NAMES[0]}" 2>&1)
    echo "$logs" >&2
    [ "$code" = 0 ] || die "the coordinator exited with code $code"
    grep -q "peers seal with AES-256-GCM" <<<"$logs" \
        || die "the workers did not reduce by range with sealed messages (no 'peers seal' logged)"
    [ -f "$WORK/runs/digits/checkpoint.dtrain" ] || die "no checkpoint written"
    for name in "${NAMES[@]:1}"; do
        [ "$(timeout 60 podman wait "$name")" = 0 ] || die "$name did not exit cleanly"
    done
    say "ok: trained in containers, outputs were in the coordinator's /runs"
}

keys() {  # keys IMAGE DIR: DIR/coordinator and DIR/worker, as the two Secrets hold them
    local image=$1 dir=$2
    podman run --rm -v "$dir:/out" --user 0 "$image" dtrain keygen /out/all >/dev/null
    mkdir -p "$dir/coordinator" "$dir/worker"
    cp "$dir"/all/{coordinator.key,coordinator.key_secret,worker.key} "$dir/coordinator/"
    cp "$dir"/all/{worker.key,worker.key_secret,coordinator.key} "$dir/worker/"
    rm -rf "$dir/all"
    # a Secret volume with defaultMode 0440 and fsGroup 10001
    chown -R 0:10001 "$dir/coordinator" "$dir/worker"
    chmod 0440 "$dir"/coordinator/* "$dir"/worker/*
    chmod 0755 "$dir/coordinator" "$dir/worker"
}

BASE=$BASE-$(declare -f build_base | sha256sum | cut -c1-12)

case "${1:-smoke}" in
    build) build ;;
    smoke) smoke ;;
    *) echo "usage: $0 [build|smoke]" >&2; exit 2 ;;
esac
