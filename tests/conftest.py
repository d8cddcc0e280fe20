"""Fixtures shared by the test modules."""

import pytest

import dtrain

CHANNELS = ("shared-memory", "network")


@pytest.fixture(params=CHANNELS)
def array_channel(request, monkeypatch):
    """Run a test once with same-machine workers on shared memory and once with every array
    over the socket (the path workers on other machines take), for every round of the run.

    Jobs inherit the setting from ``dtrain.Job``; coordinators started as subprocesses get it
    from the environment (click's DTRAIN_<COMMAND>_<OPTION> variables).
    """
    on = request.param == "shared-memory"
    monkeypatch.setattr(dtrain.Job, "shared_memory", on)
    for command in ("LAUNCH", "COORDINATOR"):
        monkeypatch.setenv(f"DTRAIN_{command}_SHARED_MEMORY", "1" if on else "0")
    return request.param
