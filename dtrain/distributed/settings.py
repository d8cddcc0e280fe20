"""The job settings, declared once: name, type, default, help and range of every setting.

Everything else is derived from ``SPECS``: the ``Settings`` dataclass and its validation, the
``Job`` class attributes, the command-line options of ``dtrain launch`` and ``dtrain
coordinator``, the keywords ``dtrain.fit`` accepts, and the settings table in README.md
(``settings_table()``, which a test compares with the README). Besides the
declared settings a ``Settings`` carries the job's own hyperparameters (``--set lr=0.05``),
so every process of a run builds the same model from the same values.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class Spec:
    """One setting: its name, type, default, help text and allowed values."""

    name: str
    type: type  # int, float, bool or str
    default: object
    help: str
    group: str = "training"  # training | outputs | service
    low: float | None = None  # smallest allowed value
    low_open: bool = False  # True: ``low`` itself is not allowed
    choices: tuple = ()

    def describe_range(self) -> str:
        """The allowed values in words, as the error messages and the README say them."""
        if self.choices:
            return "one of " + ", ".join(str(c) for c in self.choices)
        kind = {int: "integer", float: "number", bool: "true or false", str: "text"}[self.type]
        if self.low == 0 and not self.low_open:
            return f"a non-negative {kind}"
        if self.low == 0 or (self.low == 1 and self.type is int):
            return f"a positive {kind}"
        if self.low is not None:
            return f"a {kind} {'>' if self.low_open else '>='} {self.low}"
        return kind

    def check(self, value) -> None:
        """Raise ValueError naming the setting when ``value`` has the wrong type or range."""
        fits = (isinstance(value, bool) if self.type is bool
                else isinstance(value, str) if self.type is str
                else isinstance(value, int) and not isinstance(value, bool) if self.type is int
                else isinstance(value, (int, float)) and not isinstance(value, bool))
        if fits and self.low is not None:
            fits = value > self.low if self.low_open else value >= self.low
        if fits and self.choices:
            fits = value in self.choices
        if not fits:
            raise ValueError(f"setting {self.name} must be {self.describe_range()}, "
                             f"got {value!r}")
        if self.type is int and value > INT_MAX:
            raise ValueError(f"setting {self.name} must be at most 2**63 - 1 ({INT_MAX}), "
                             f"got {_short(value)}")

    def parse(self, text: str):
        """Convert command-line or environment text to this setting's type."""
        return parse_value(text, self.type, f"setting {self.name}")


INT_MAX = 2**63 - 1  # every process gets the settings in msgpack, whose integers are 64-bit
SCHEDULER_CADENCES = ("epoch", "step")
REDUCTIONS = ("auto", "coordinator", "sharded")
PEER_CIPHERS = ("aes-gcm", "curve")
DTYPES = ("float32", "float64")

SPECS: tuple[Spec, ...] = (
    Spec("batch_size", int, 64, "Global mini-batch size.", low=1),
    Spec("epochs", int, 1, "Number of epochs to train.", low=0),
    Spec("micro_shards", int, 8, "Micro-shards per mini-batch; fixes the result for any worker "
         "count (at most batch_size).", low=1),
    Spec("seed", int, 0, "Seed of initialisation, data order and dropout.", low=0),
    Spec("shuffle", bool, True, "Shuffle the training data every epoch (by seed and epoch)."),
    Spec("drop_last", bool, False, "Drop the last, partial mini-batch of every epoch."),
    Spec("scheduler_step", str, "epoch", "Step the learning-rate scheduler every epoch or every "
         "optimizer step.", choices=SCHEDULER_CADENCES),
    Spec("dtype", str, "float32", "Floating-point type of parameters and data.", choices=DTYPES),
    Spec("eval_batch_size", int, 1024, "Batch size of validation passes.", low=1),
    Spec("max_steps", int, 0, "Stop after this many optimizer steps (0: no limit).", low=0),
    Spec("accumulate", int, 1, "Mini-batches whose gradients are summed before each optimizer "
         "step, which uses their mean over all their samples (max_steps and checkpoint_every "
         "count mini-batches).", low=1),
    Spec("clip_grad_norm", float, 0.0, "Scale the gradients so their global L2 norm is at most "
         "this before every optimizer step (0: off).", low=0),
    Spec("param_ranges", int, 8, "Parameter ranges the reduction and optimizer state are cut "
         "into (element ranges of the flat parameter vector, balanced by bytes; Adafactor's "
         "tensors stay whole). Global norms and dot products (clip_grad_norm, LBFGS, "
         "NonlinearCG) are summed range by range in range order, so this, never the worker or "
         "reducer count, fixes their bits; 8 matches micro_shards so every worker the default "
         "uses can own a range, 1 gives the flat single-vector sums; a model with fewer elements "
         "gets empty ranges.", low=1),
    Spec("threads", int, 1, "BLAS threads per process, held for the whole run by the "
         "coordinator and every worker (equal everywhere for equal bits).", low=1),
    Spec("checkpoint_every", int, 0, "Also checkpoint every N optimizer steps (0: only at "
         "epoch ends); needs an output directory.", group="outputs", low=0),
    Spec("keep_checkpoints", int, 3, "Checkpoints of this run kept in OUT/checkpoints "
         "(0: keep all).", group="outputs", low=0),
    Spec("keep_best", str, "", "Also keep the checkpoint with the best value of this epoch "
         "metric: val_loss keeps the lowest, max:val_accuracy the highest ('': none).",
         group="outputs"),
    Spec("heartbeat_interval", float, 1.0, "Seconds between heartbeats, both ways.",
         group="service", low=0, low_open=True),
    Spec("heartbeat_timeout", float, 5.0, "Seconds of silence before a peer counts as lost "
         "(more than heartbeat_interval).", group="service", low=0, low_open=True),
    Spec("step_timeout", float, 120.0, "Seconds a step may take before the run fails.",
         group="service", low=0, low_open=True),
    Spec("min_workers", int, 1, "Workers needed to train; below it the coordinator waits.",
         group="service", low=1),
    Spec("worker_wait_timeout", float, 60.0, "Seconds to wait for min_workers before failing.",
         group="service", low=0, low_open=True),
    Spec("shared_memory", bool, True, "Exchange arrays through /dev/shm with workers on the "
         "coordinator's machine; off: always over the socket.", group="service"),
    Spec("reduction", str, "auto", "Where gradients are summed and the optimizer steps: "
         "coordinator (every gradient through it), sharded (each worker also reduces and steps "
         "some parameter ranges, so no host carries every gradient: the faster choice when "
         "workers are on other machines), or auto (sharded when the launcher starts or awaits "
         "workers on other machines: a hostfile naming other hosts, a Slurm step on several "
         "nodes, dtrain coordinator listening beyond loopback; coordinator otherwise). Sharding "
         "needs a single-phase job whose optimizer updates elementwise (not a closure optimizer "
         "or Adafactor) without a before_step hook; otherwise the "
         "coordinator reduces and says why. Same bits either way.",
         group="service", choices=REDUCTIONS),
    Spec("peer_cipher", str, "aes-gcm", "Sharded reduction under CURVE: how the workers' "
         "messages to each other are encrypted and authenticated. aes-gcm: sealed with "
         "AES-256-GCM under a key the coordinator sends over CURVE with each range map (several "
         "times cheaper per byte with AES instructions); curve: CURVE on those sockets too. "
         "Without keys (--insecure) peers send in the clear either way.", group="service",
         choices=PEER_CIPHERS),
    Spec("gather_every", int, 0, "Sharded reduction: also gather the ranges into the "
         "coordinator every N optimizer steps, the state a lost reducer rolls back to, so it "
         "costs at most N recomputed steps (0: gathered only at the start, epoch ends and "
         "checkpoints); each gather moves the parameters and optimizer state once.",
         group="service", low=0),
)

SPEC_BY_NAME = {spec.name: spec for spec in SPECS}
HYPERPARAMETER_TYPES = (bool, int, float, str)


def _short(value) -> str:
    """A number as text, shortened when it is huge."""
    text = repr(value)
    return text if len(text) <= 30 else f"{text[:12]}...{text[-6:]} ({len(text)} digits)"


def parse_value(text: str, kind: type, what: str):
    """Convert ``text`` to ``kind`` (bool, int, float or str); ValueError names ``what``."""
    if not isinstance(text, str):
        return text
    if kind is bool:
        lowered = text.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{what} must be true or false, got {text!r}")
    if kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            raise ValueError(f"{what} must be {'an integer' if kind is int else 'a number'}, "
                             f"got {text!r}") from None
    return text


def _validate(self) -> Settings:
    """Raise ValueError naming the first setting that makes no sense; returns self."""
    for spec in SPECS:
        spec.check(getattr(self, spec.name))
    if self.heartbeat_timeout <= self.heartbeat_interval:
        raise ValueError(
            f"setting heartbeat_timeout ({self.heartbeat_timeout}) must exceed "
            f"heartbeat_interval ({self.heartbeat_interval})")
    if self.micro_shards > self.batch_size:
        raise ValueError(f"setting micro_shards ({self.micro_shards}) must not exceed "
                         f"batch_size ({self.batch_size})")
    if self.keep_best:
        from .checkpoint import best_rule

        best_rule(self.keep_best)
    for name, value in self.hyperparameters.items():
        if not (isinstance(name, str) and name.isidentifier()) \
                or not isinstance(value, HYPERPARAMETER_TYPES):
            raise ValueError(f"hyperparameter {name!r}={value!r}: names are identifiers and "
                             "values are numbers, booleans or text")
        if isinstance(value, int) and not -INT_MAX - 1 <= value <= INT_MAX:
            raise ValueError(f"hyperparameter {name} must be within 64-bit integers (at most "
                             f"2**63 - 1 in size), got {_short(value)}")
    return self


def _to_dict(self) -> dict:
    """Plain data for the wire and for checkpoints."""
    return dataclasses.asdict(self)


@classmethod
def _from_dict(cls, data: dict) -> Settings:
    """Rebuild from ``to_dict`` output; unknown keys are an error that names them."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown settings: {', '.join(unknown)}")
    return cls(**data).validate()


@classmethod
def _names(cls) -> list[str]:
    """The declared settings' names, in declaration order."""
    return [spec.name for spec in SPECS]


Settings = dataclasses.make_dataclass(
    "Settings",
    [(spec.name, spec.type, dataclasses.field(default=spec.default)) for spec in SPECS]
    + [("hyperparameters", dict, dataclasses.field(default_factory=dict))],
    namespace={"validate": _validate, "to_dict": _to_dict, "from_dict": _from_dict,
               "names": _names,
               "__doc__": "The knobs of a run (declared in ``SPECS``) and the job's own "
                          "hyperparameters; every process of a job must agree on them, so "
                          "they are sent along."},
)
Settings.__module__ = __name__


def settings_table() -> str:
    """The README's settings table, generated from the declaration."""
    rows = ["| setting | default | allowed | what |", "|---|---|---|---|"]
    for spec in SPECS:
        default = repr(spec.default) if spec.type is str else str(spec.default)
        rows.append(f"| `{spec.name}` | `{default}` | {spec.describe_range()} | {spec.help} |")
    return "\n".join(rows) + "\n"
