"""Fixtures shared by the test modules."""

import os
import signal
import sys

import pytest

import dtrain
from dtrain.process import command_line
from procs import children

CHANNELS = ("shared-memory", "network")
SHARDED = "network-sharded"  # the sharded reduction, every array over the socket


@pytest.fixture(params=CHANNELS)
def array_channel(request, monkeypatch):
    """Run a test once with same-machine workers on shared memory and once with every array
    over the socket (the path workers on other machines take), for every round of the run;
    a test marked ``with_sharded`` also runs a third time with ``reduction = sharded`` over the
    socket (the workers reduce and step the parameter ranges).

    Jobs inherit the settings from ``dtrain.Job``; coordinators started as subprocesses get
    them from the environment (click's DTRAIN_<COMMAND>_<OPTION> variables).
    """
    on = request.param == "shared-memory"
    reduction = "sharded" if request.param == SHARDED else "coordinator"
    monkeypatch.setattr(dtrain.Job, "shared_memory", on)
    monkeypatch.setattr(dtrain.Job, "reduction", reduction)
    for command in ("LAUNCH", "COORDINATOR"):
        monkeypatch.setenv(f"DTRAIN_{command}_SHARED_MEMORY", "1" if on else "0")
        monkeypatch.setenv(f"DTRAIN_{command}_REDUCTION", reduction)
    return request.param


with_sharded = pytest.mark.parametrize("array_channel", (*CHANNELS, SHARDED), indirect=True)


def assert_reduced_as_asked(array_channel: str, log_text: str) -> None:
    """The run reduced as the fixture asked: sharded runs cut range maps over the reducers
    (not the coordinator's fallback, which would test the star twice), the others none. The
    text is a log with the coordinator's INFO records."""
    if array_channel == SHARDED:
        assert "range map" in log_text, "the run never cut a range map"
        assert "reduces this run instead" not in log_text
    else:
        assert "range map" not in log_text


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A test whose ``helpers.check`` calls could not compare with torch is reported skipped
    (with the reason) once everything else in it passed, never as a quiet pass."""
    outcome = yield
    helpers = sys.modules.get("helpers")
    if call.when != "call" or helpers is None or not helpers.torch_skipped:
        return
    helpers.torch_skipped.clear()
    report = outcome.get_result()
    if report.passed:
        path, line, _ = item.reportinfo()
        report.outcome = "skipped"
        report.longrepr = (str(path), (line or 0) + 1, f"Skipped: {helpers.TORCH_MISSING}")


def _is_dtrain(argv: list) -> bool:
    """``dtrain ...`` or ``python -m dtrain ...`` (not a daemon whose paths mention dtrain)."""
    return bool(argv) and (os.path.basename(argv[0]) == "dtrain" or argv[1:3] == ["-m", "dtrain"])


def _children() -> set:
    """Live (non-zombie) dtrain processes that are children of this pytest process."""
    found = set()
    for pid, state in children(os.getpid()):
        try:
            argv = command_line(pid)
        except OSError:
            continue
        if state != "Z" and _is_dtrain(argv):
            found.add(pid)
    return found


@pytest.fixture(autouse=True)
def _processes_die_with_their_test():
    """Every dtrain process a test started is gone when the test ends, passed or failed: a worker
    left retrying forever used to fail later tests' leftover-process checks."""
    if not os.path.isdir("/proc"):
        yield
        return
    before = _children()
    yield
    kill_started_since(before)


def kill_started_since(before: set) -> list:
    """SIGKILL the dtrain children of this process not in ``before``; returns their pids."""
    killed = sorted(_children() - before)
    for pid in killed:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return killed
