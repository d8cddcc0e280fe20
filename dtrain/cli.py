"""The ``dtrain`` command line: thin click commands that build a config and call into packages."""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback

import click


def option(*param_decls, **attrs):
    """``click.option`` that lists its DTRAIN_* environment variable in --help."""
    return click.option(*param_decls, show_envvar=True, **attrs)


# Options of other launchers that users type from habit, with what dtrain takes instead.
FOREIGN_OPTIONS = {
    "-np": "mpirun's and horovodrun's process count",
    "--np": "mpirun's process count",
    "--nproc_per_node": "torchrun's processes per node",
    "--nproc-per-node": "torchrun's processes per node",
    "--num_processes": "accelerate's process count",
    "--num-processes": "accelerate's process count",
    "--num_gpus": "deepspeed's GPU count",
    "--nnodes": "torchrun's node count",
}


class LaunchCommand(click.Command):
    """A command that explains other launchers' options instead of misparsing them."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        for arg in args:
            if arg == "--":
                break
            flag = arg.split("=", 1)[0]
            if flag in FOREIGN_OPTIONS:
                raise click.UsageError(
                    f"{flag} is {FOREIGN_OPTIONS[flag]}; dtrain {self.name} takes -n/--workers N "
                    "(worker processes on this machine; each computes micro-shards on the CPU) "
                    "and --hostfile FILE for other machines", ctx)
        return super().parse_args(ctx, args)


LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s: %(message)s"


def _setup_logging(verbose: int, quiet: bool = False) -> None:
    """INFO by default (what the run is doing), DEBUG with -vv, warnings only with -q."""
    level = logging.WARNING if quiet else logging.INFO if verbose <= 1 else logging.DEBUG
    logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr)


@click.group(context_settings={"auto_envvar_prefix": "DTRAIN",
                               "help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dtrain")
def main() -> None:
    """dtrain: data-parallel training with PyTorch's API, bit-identical for any worker count."""


def _run_options(func):
    """Options of every command that runs a coordinator: outputs, resume, metrics, verbosity."""
    options = [
        option("--out", type=click.Path(file_okay=False), default=None,
               help="Directory for metrics.jsonl, checkpoints and checkpoint.dtrain; must be "
                    "empty or new unless --resume or --overwrite [default: the --resume "
                    "directory, else runs/SCRIPT]."),
        option("--resume", type=click.Path(exists=True, file_okay=False), default=None,
               help="Continue from the newest valid checkpoint (the final one included) of an "
                    "earlier run's --out DIR."),
        option("--overwrite", is_flag=True,
               help="Replace an earlier run's outputs in --out (metrics, checkpoints) instead "
                    "of refusing to mix runs."),
        option("--tensorboard", is_flag=True,
               help="Also write TensorBoard event files to OUT/tensorboard (needs "
                    "dtrain[tensorboard])."),
        option("--metrics-port", type=click.IntRange(min=0, max=65535), default=None,
               help="Serve Prometheus /metrics and a JSON /status on this port (0: any free)."),
        option("--metrics-host", default="127.0.0.1", show_default=True,
               help="Interface for the metrics/status server."),
        option("--progress/--no-progress", default=True, show_default=True,
               help="Show a progress bar on stderr (the per-epoch lines are printed either "
                    "way)."),
        option("-v", "--verbose", count=True,
               help="-v: tracebacks of errors; -vv: also debug log lines."),
        option("-q", "--quiet", is_flag=True, help="Only warnings and errors in the log."),
    ]
    for opt in reversed(options):
        func = opt(func)
    return func


def _default_out(script: str, out: str | None, resume: str | None,
                 versioned: bool = False, overwrite: bool = False) -> str:
    """Where a run writes: --out, else the directory it resumes, else runs/SCRIPT-NAME (for
    ``launch``, the next free runs/SCRIPT-NAME-N, so a repeated run never mixes with the last)."""
    if out or resume:
        return out or resume
    if versioned:
        from dtrain.launcher.outdir import default_out

        return default_out(script, overwrite)
    return os.path.join("runs", os.path.splitext(os.path.basename(script))[0])


def _spec_option(spec):
    """The command-line option of one declared setting (None: keep the job's value)."""
    flag = "--" + spec.name.replace("_", "-")
    text = f"{spec.help} [default: the job's, else {spec.default!r}]"
    if spec.type is bool:
        return option(f"{flag}/--no-{flag[2:]}", spec.name, default=None, help=text)
    if spec.choices:
        kind = click.Choice(spec.choices)
    elif spec.type is int:
        kind = click.IntRange(min=spec.low) if spec.low is not None else click.INT
    elif spec.type is float:
        kind = click.FloatRange(min=spec.low, min_open=spec.low_open) \
            if spec.low is not None else click.FLOAT
    else:
        kind = click.STRING
    return option(flag, spec.name, type=kind, default=None, help=text)


def _settings_options(func):
    """Every declared job setting as an option, plus --set NAME=VALUE and --settings FILE."""
    from dtrain.distributed.settings import SPECS

    options = [_spec_option(spec) for spec in SPECS] + [
        option("--set", "set_pairs", multiple=True, metavar="NAME=VALUE", envvar="DTRAIN_SET",
               help="Override a setting or one of the job's hyperparameters (a class attribute "
                    "such as lr = 0.1); repeatable."),
        option("--settings", "settings_file", envvar="DTRAIN_SETTINGS",
               type=click.Path(exists=True, dir_okay=False),
               default=None, help="TOML, YAML or JSON file of settings and hyperparameters "
                                  "(options and --set override it)."),
    ]
    for opt in reversed(options):
        func = opt(func)
    return func


def _overrides(settings: dict) -> dict:
    """Settings file, then --set pairs, then explicit options: the later wins."""
    from dtrain.launcher.settings_file import (
        SettingsFileError,
        parse_set_pairs,
        read_settings_file,
    )

    path, pairs = settings.pop("settings_file", None), settings.pop("set_pairs", ())
    try:
        merged = read_settings_file(path) if path else {}
        merged.update(parse_set_pairs(pairs))
    except SettingsFileError as e:
        raise click.UsageError(str(e)) from None
    merged.update({k: v for k, v in settings.items() if v is not None})
    return merged


@main.command(cls=LaunchCommand)
@click.argument("script", type=click.Path(exists=True, dir_okay=False))
@option("-n", "--workers", type=click.IntRange(min=0), default=2, show_default=True,
              help="Worker processes to start on this machine (0: train in-process).")
@option("--job", "job_name", default=None, help="Job class to run when SCRIPT has several.")
@option("--bind", default="tcp://127.0.0.1:0", show_default=True,
              help="Address the coordinator listens on (port 0: any free port).")
@option("--max-restarts", type=click.IntRange(min=0), default=0, show_default=True,
              help="Times a crashed local worker is restarted before the run fails.")
@option("--start-method", type=click.Choice(["fork", "spawn"]), default=None,
              envvar="DTRAIN_START_METHOD",
              help="Local workers are forked from the launcher once it imported dtrain (fork: "
                   "starts faster), or new interpreters (spawn) [default: fork].")
@option("--insecure", is_flag=True,
              help="Turn CURVE encryption off (debugging only; prints a warning).")
@option("--hostfile", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Also start workers over ssh on these hosts ('HOST slots=N' per line).")
@option("--ssh-command", default="ssh -o BatchMode=yes", show_default=True,
              help="Runs a command on a host; called as: SSH_COMMAND HOST COMMAND.")
@option("--remote-python", default="python3", show_default=True,
              help="Python with dtrain installed, on the hostfile's hosts.")
@option("--remote-workdir", default=None,
              help="Directory on the hosts that SCRIPT is relative to [default: this one].")
@option("--slurm/--no-slurm", default=None,
              help="srun task 0 coordinates, the others are workers [default: on when "
                   "SLURM_PROCID is set].")
@option("--port", type=click.IntRange(min=1, max=65535), default=29500, show_default=True,
              help="Coordinator port under Slurm.")
@option("--keys", "keys_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="dtrain keygen directory, needed by Slurm tasks (on a shared filesystem).")
@_run_options
@_settings_options
def launch(script, workers, job_name, out, bind, max_restarts, start_method, insecure, resume,
           metrics_port, metrics_host, hostfile, ssh_command, remote_python, remote_workdir,
           slurm, port, keys_dir, progress, verbose, quiet, overwrite, tensorboard, **settings):
    """Train SCRIPT with a coordinator here and WORKERS local worker processes (plus hostfile
    workers over ssh; under srun, task 0 coordinates and the other tasks are workers)."""
    _setup_logging(verbose, quiet)
    from dtrain.launcher.run import RunConfig, run
    from dtrain.process import set_process_title

    ctx = click.get_current_context()
    defaulted = {name for name in ("workers", "bind")
                 if ctx.get_parameter_source(name) == click.core.ParameterSource.DEFAULT}
    cluster = _cluster_setup(script, job_name, insecure, keys_dir, hostfile, ssh_command,
                             remote_python, remote_workdir, slurm, port, max_restarts, verbose)
    if cluster.get("worker") is not None:
        _run_worker(cluster["worker"])
    if cluster and "workers" in defaulted:
        workers = 0
    if cluster.get("bind") and "bind" in defaulted:
        bind = cluster["bind"]
    set_process_title("dtrain-coord")

    if insecure:
        _warn_insecure()
    out = _default_out(script, out, resume, versioned=True, overwrite=overwrite)
    config = RunConfig(job=script, workers=workers, job_name=job_name, out=out, bind=bind,
                       max_restarts=max_restarts, start_method=start_method,
                       progress=progress, epoch_lines=True, resume=resume,
                       overwrite=overwrite, tensorboard=tensorboard,
                       insecure=insecure, metrics_port=metrics_port, metrics_host=metrics_host,
                       keys_dir=keys_dir, remote_workers=cluster.get("remote_workers", 0),
                       job_id=cluster.get("job_id"), starter=cluster.get("starter"),
                       slurm_nodes=cluster.get("slurm_nodes", ()),
                       overrides=_overrides(settings))
    _run_or_exit("dtrain launch", config, run, verbose, out)


def _cluster_setup(script, job_name, insecure, keys_dir, hostfile, ssh_command, remote_python,
                   remote_workdir, slurm, port, max_restarts, verbose) -> dict:
    """What --hostfile or Slurm adds to a launch ({} for a local run)."""
    from dtrain.launcher.hostfile import HostfileError, HostfileWorkers, read_hostfile
    from dtrain.launcher.slurm import SlurmError, in_slurm_step, task_from_env

    if slurm and hostfile:
        raise click.UsageError("--hostfile and --slurm exclude each other")
    if hostfile:
        try:
            hosts = read_hostfile(hostfile)
            return {"starter": HostfileWorkers(
                hosts, script, job_name, ssh_command=ssh_command, remote_python=remote_python,
                remote_workdir=remote_workdir, insecure=insecure, max_restarts=max_restarts,
                extra_args=["-v"] * verbose)}
        except HostfileError as e:
            raise click.UsageError(str(e)) from None
    auto = slurm is None and in_slurm_step()
    if not (slurm or auto):
        return {}
    try:
        task = task_from_env()
    except SlurmError as e:
        raise click.UsageError(f"Slurm: {e}") from None
    if auto and task.ntasks == 1:
        return {}  # a one-task step: an ordinary local run
    if task.role == "worker":
        from dtrain.launcher.env import EnvError, coordinator_address
        from dtrain.workers.worker import WorkerConfig

        try:
            connect = coordinator_address(slurm_port=port)
        except (EnvError, SlurmError) as e:
            raise click.UsageError(str(e)) from None
        return {"worker": WorkerConfig(connect=connect, script=script, job_name=job_name,
                                       job_id=task.run_id() or "", rank=task.procid,
                                       keys=_worker_keys(keys_dir, insecure))}
    if task.ntasks > 1 and not (keys_dir or insecure):
        raise click.UsageError("under Slurm the workers need CURVE keys: dtrain keygen DIR on a "
                               "shared filesystem, then --keys DIR (or --insecure)")
    return {"remote_workers": task.ntasks - 1, "job_id": task.run_id(),
            "bind": f"tcp://0.0.0.0:{port}", "slurm_nodes": task.nodes}


def _worker_keys(keys_dir, insecure):
    """A worker's CURVE keys from --keys DIR, else DTRAIN_CURVE_*; None with --insecure."""
    from dtrain.distributed.security import ClientKeys, SecurityError, client_keys_from_dir

    if insecure:
        _warn_insecure()
        return None
    try:
        keys = client_keys_from_dir(keys_dir) if keys_dir else ClientKeys.from_env()
    except SecurityError as e:
        raise click.ClickException(str(e)) from None
    if keys is None:
        raise click.UsageError("no CURVE keys: pass --keys DIR (see dtrain keygen) or set "
                               "DTRAIN_CURVE_* variables, or --insecure for debugging")
    return keys


def _run_worker(config) -> None:
    """Run a worker process to its end and exit with its code."""
    from dtrain.workers.worker import main as worker_main

    try:
        code = worker_main(config)
    except KeyboardInterrupt:
        code = 130
    except Exception as e:  # noqa: BLE001 - the job's script failed to load: say where, once
        from dtrain.launcher.errors import describe

        click.echo(f"dtrain worker: error: {describe(e, config.script)}", err=True)
        code = 1
    sys.exit(code)


@main.command(cls=LaunchCommand)
@click.argument("script", type=click.Path(exists=True, dir_okay=False))
@option("--bind", default="tcp://0.0.0.0:29500", show_default=True,
              help="Address to listen on for workers.")
@option("--workers", "remote_workers", type=click.IntRange(min=1), default=1,
              show_default=True, help="Workers to wait for before the first step.")
@option("--job", "job_name", default=None, help="Job class to run when SCRIPT has several.")
@option("--job-id", default=None, help="Fixed job id (default: new, or the checkpoint's); "
              "with --resume, only this job's checkpoints are continued.")
@option("--keys", "keys_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="Directory with coordinator.key_secret and allowed workers' *.key files.")
@option("--allow", "allow_dir", type=click.Path(exists=True, file_okay=False),
              default=None, help="Directory of allowed worker public keys (default: --keys).")
@option("--insecure", is_flag=True, help="No CURVE encryption (debugging only).")
@_run_options
@_settings_options
def coordinator(script, bind, remote_workers, job_name, job_id, keys_dir, allow_dir, insecure,
                out, resume, metrics_port, metrics_host, progress, verbose, quiet, overwrite,
                tensorboard, **settings):
    """Coordinate SCRIPT's training for workers started elsewhere (dtrain worker --connect)."""
    _setup_logging(verbose, quiet)
    from dtrain.launcher.run import RunConfig, run
    from dtrain.process import set_process_title

    set_process_title("dtrain-coord")
    if insecure:
        _warn_insecure()
    out = _default_out(script, out, resume)
    config = RunConfig(job=script, workers=0, remote_workers=remote_workers, job_name=job_name,
                       out=out, bind=bind, progress=progress, epoch_lines=True,
                       resume=resume, insecure=insecure,
                       overwrite=overwrite, tensorboard=tensorboard,
                       job_id=job_id, job_id_given=job_id is not None,
                       keys_dir=keys_dir, allow_dir=allow_dir,
                       metrics_port=metrics_port, metrics_host=metrics_host,
                       overrides=_overrides(settings))
    _run_or_exit("dtrain coordinator", config, run, verbose, out)


def _run_or_exit(what: str, config, run, verbose: int, out: str) -> None:
    """Run, turning failures into a message and an exit code."""
    try:
        _, history = run(config)
    except KeyboardInterrupt as e:
        detail = f" ({e})" if str(e) and not str(e).startswith("received signal") else ""
        click.echo(f"\n{what}: interrupted{detail}; all worker processes stopped", err=True)
        sys.exit(130)
    except Exception as e:  # noqa: BLE001 - any failure becomes a message and exit code 1
        from dtrain.launcher.errors import describe

        if verbose >= 1:
            traceback.print_exc()
        text = describe(e, config.job)
        hint = " (-v shows the whole traceback)" if "\n" in text and not verbose else ""
        click.echo(f"{what}: error: {text}{hint}", err=True)
        sys.exit(1)
    click.echo(_summary(history, out), err=True)


def _summary(history, out: str) -> str:
    """The last line of a run: steps taken, the final losses and metrics, where outputs are."""
    if not history.steps:
        return f"done: nothing to train; outputs in {out}"
    last = history.epochs[-1] if history.epochs else history.steps[-1]
    values = ", ".join(f"{k} {v:.4f}" for k, v in last.items()
                       if k.startswith(("val_", "train_loss")) and isinstance(v, float))
    if not values and "loss" in last:
        values = f"loss {last['loss']:.4f}"
    return f"done: {len(history.steps)} steps; {values}; outputs in {out}"


@main.command()
@click.argument("address")
@option("--json", "as_json", is_flag=True, help="Print the raw JSON status.")
@option("--timeout", type=float, default=5.0, show_default=True,
              help="Seconds to wait for the coordinator.")
def status(address, as_json, timeout):
    """Show the live state of a run: ADDRESS is the coordinator's --metrics-port (HOST:PORT)."""
    from dtrain.distributed.status import fetch_status, format_status

    try:
        info = fetch_status(address, timeout)
    except OSError as e:
        raise click.ClickException(f"no dtrain status at {address}: {e}") from e
    click.echo(json.dumps(info, indent=2) if as_json else format_status(info))


def _warn_insecure() -> None:
    click.echo("WARNING: --insecure: traffic is neither encrypted nor authenticated; anyone who "
               "can reach the port can join or read parameters", err=True)


@main.command()
@click.argument("directory", type=click.Path(file_okay=False))
@option("--name", "names", multiple=True, default=("coordinator", "worker"),
              show_default=True, help="Key pairs to create (repeat the option for several).")
def keygen(directory, names):
    """Write CURVE key pairs (NAME.key public, NAME.key_secret private) into DIRECTORY."""
    from dtrain.distributed.security import keygen as make_keys

    for path in make_keys(directory, names):
        click.echo(path)


@main.command()
@click.argument("script", type=click.Path(exists=True, dir_okay=False))
@option("--connect", envvar="DTRAIN_COORDINATOR", default=None,
              help="Coordinator address, e.g. tcp://10.0.0.1:29500 [env: DTRAIN_COORDINATOR; "
                   "under srun: the step's first node, port DTRAIN_PORT or 29500].")
@option("--rank", type=click.IntRange(min=0), default=None,
              help="This worker's number (names it in logs and ps) [default: RANK, "
                   "SLURM_PROCID or JOB_COMPLETION_INDEX, else 0].")
@option("--job", "job_name", default=None, help="Job class to run when SCRIPT has several.")
@option("--job-id", default="", help="Id of the run to join (checked on every message).")
@option("--name", default="", help="Worker name in the coordinator's logs.")
@option("--keys", "keys_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="Directory with worker.key_secret and coordinator.key (dtrain keygen).")
@option("--insecure", is_flag=True, help="No CURVE encryption (debugging only).")
@option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def worker(script, connect, rank, job_name, job_id, name, keys_dir, insecure, verbose):
    """Join the coordinator at CONNECT and compute micro-shard gradients for SCRIPT's job."""
    logging.basicConfig(level=(logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)],
                        format=LOG_FORMAT, stream=sys.stderr)
    from dtrain.launcher.env import EnvError, coordinator_address, normalize_address, worker_rank
    from dtrain.launcher.slurm import SlurmError
    from dtrain.workers.worker import WorkerConfig

    try:
        connect = normalize_address(connect) if connect else coordinator_address()
        rank = rank if rank is not None else (worker_rank() or 0)
    except (EnvError, SlurmError) as e:
        raise click.UsageError(str(e)) from None
    if connect is None:
        raise click.UsageError("no coordinator: pass --connect tcp://HOST:PORT or set "
                               "DTRAIN_COORDINATOR")
    config = WorkerConfig(connect=connect, script=script, job_name=job_name, job_id=job_id,
                          rank=rank, name=name, keys=_worker_keys(keys_dir, insecure))
    _run_worker(config)


def _shape_option(ctx, param, value):
    """Parse '1,64' into (1, 64)."""
    if value is None:
        return None
    try:
        shape = tuple(int(n) for n in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected sizes separated by commas, e.g. 1,64; got {value!r}")
    if not shape or min(shape) < 1:
        raise click.BadParameter(f"sizes must be positive, got {value!r}")
    return shape


@main.command()
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False))
@option("--script", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Training script whose Job builds the model.")
@option("--onnx", "out", required=True, type=click.Path(dir_okay=False),
              help="Where to write the ONNX model.")
@option("--job", "job_name", default=None, help="Job class to use when SCRIPT has several.")
@option("--input-shape", callback=_shape_option, default=None,
              help="Example input shape, e.g. 1,64 [default: one sample of train_data()].")
@option("--opset", type=click.IntRange(min=13), default=17, show_default=True,
              help="ONNX opset version.")
@option("--dynamic-batch/--static-batch", default=True, show_default=True,
              help="Make dim 0 of inputs and outputs a symbolic batch size.")
def export(checkpoint, script, out, job_name, input_shape, opset, dynamic_batch):
    """Export SCRIPT's model with CHECKPOINT's weights to an ONNX file."""
    from dtrain.onnx import export_checkpoint

    try:
        proto = export_checkpoint(checkpoint, script, out, job_name=job_name,
                                  input_shape=input_shape, opset=opset,
                                  dynamic_batch=dynamic_batch)
    except (ImportError, ValueError, RuntimeError, OSError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"wrote {out} ({len(proto.graph.node)} nodes, opset {opset})")


@main.command()
@click.argument("metrics", nargs=-1, required=True, type=click.Path(exists=True))
@option("-o", "--out", default="curves.png", show_default=True,
        type=click.Path(dir_okay=False), help="Image to write: .png, .svg or .pdf.")
def plot(metrics, out):
    """Plot loss, validation metric and learning rate of runs: metrics.jsonl files or run
    directories."""
    from dtrain.plot import plot_metrics

    try:
        plot_metrics(metrics, out)
    except (ImportError, ValueError, OSError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"wrote {out}")


@main.command()
@click.argument("run", type=click.Path(exists=True))
@option("--script", required=True, type=click.Path(exists=True, dir_okay=False),
        help="Training script whose Job builds the model.")
@option("--input", "inputs", required=True, type=click.Path(exists=True, dir_okay=False),
        help="A .npy file of input samples (first axis: samples).")
@option("-o", "--output", default="predictions.npy", show_default=True,
        type=click.Path(dir_okay=False), help="Where to write the outputs (.npy).")
@option("--job", "job_name", default=None, help="Job class to use when SCRIPT has several.")
@option("--batch-size", type=click.IntRange(min=1), default=1024, show_default=True,
        help="Samples per forward pass.")
def predict(run, script, inputs, output, job_name, batch_size):
    """Run the final model of RUN (a run directory or checkpoint) on the samples in --input."""
    import numpy as np

    from dtrain.inference import load_trained
    from dtrain.inference import predict as run_model

    try:
        model = load_trained(run, script, job_name)
        x = np.load(inputs, allow_pickle=False)
        y = run_model(model, x, batch_size)
        np.save(output, y, allow_pickle=False)
    except (ValueError, OSError, RuntimeError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"wrote {output}: outputs of shape {y.shape} for {len(x)} samples")
