"""The ``--quick`` switch of the distributed benchmarks and the run-length options it shortens.

Each run-length option (untimed warm-up steps, timed steps, repeats, ...) defaults to a full
value, or to a short one under ``--quick`` (a smoke run); a value given on the command line wins
over both. Declared once per benchmark as ``{name: (help, quick, full)}``.
"""

from __future__ import annotations

import argparse


def add_run_length_options(parser: argparse.ArgumentParser, quick_help: str,
                           options: dict[str, tuple[str, int, int]]) -> None:
    """Add ``--quick`` and one integer option per entry of ``options``."""
    parser.add_argument("--quick", action="store_true", help=quick_help)
    for name, (help_text, quick, full) in options.items():
        parser.add_argument(f"--{name}", type=int, default=None,
                            help=f"{help_text} (default {full}; {quick} with --quick)")


def settle_run_length(args: argparse.Namespace, options: dict[str, tuple[str, int, int]]) -> None:
    """Fill every run-length option not given with its quick or full default."""
    for name, (_, quick, full) in options.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
