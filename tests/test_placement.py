"""``reduction = auto``: sharded exactly when the launcher starts or awaits workers elsewhere.

The placement rules are checked one by one here; the runs that take them are tested where they
start: a hostfile of other hosts (tests/test_cluster.py), a coordinator awaiting workers from
other namespace hosts (tests/test_netns.py), and local workers below.
"""

import logging
import os
import socket
import sys

import numpy as np
import pytest

import dtrain
from dtrain.distributed.job import Settings
from dtrain.launcher.hostfile import HostSlots
from dtrain.launcher.placement import (
    bind_elsewhere,
    choose_reduction,
    hostfile_elsewhere,
    is_this_machine,
    slurm_elsewhere,
)
from dtrain.launcher.run import RunConfig, _workers_elsewhere

sys.path.insert(0, os.path.dirname(__file__))
import dist_jobs


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "127.0.1.1", "::1", "[::1]",
                                  "alice@localhost", socket.gethostname()])
def test_names_of_this_machine(host):
    assert is_this_machine(host)


@pytest.mark.parametrize("host", ["node1", "alice@node-2.example", "10.0.0.2", "fe80::1"])
def test_names_of_other_machines(host):
    assert not is_this_machine(host)


def test_a_hostfile_is_elsewhere_when_any_host_is_another_machine():
    assert hostfile_elsewhere([HostSlots("localhost", 2)]) is None
    where = hostfile_elsewhere([HostSlots("localhost", 1), HostSlots("node1", 2),
                                HostSlots("bob@node2", 1)])
    assert where == "hosts node1, bob@node2 (hostfile)"


def test_a_slurm_step_is_elsewhere_on_several_nodes():
    assert slurm_elsewhere(("n1", "n1", "n1")) is None
    assert slurm_elsewhere(("n1",)) is None
    assert slurm_elsewhere(("n2", "n1", "n2")) == "2 Slurm nodes"


@pytest.mark.parametrize("bind, elsewhere", [
    ("tcp://127.0.0.1:0", False), ("tcp://127.0.0.1:29500", False), ("tcp://[::1]:5", False),
    ("tcp://localhost:5", False), ("ipc:///tmp/dtrain.sock", False), ("inproc://x", False),
    ("tcp://0.0.0.0:29500", True), ("tcp://10.1.2.3:29500", True), ("tcp://*:29500", True),
    ("tcp://[::]:29500", True), ("tcp://node1:29500", True)])
def test_a_coordinator_awaits_workers_from_elsewhere_unless_bound_to_loopback(bind, elsewhere):
    assert (bind_elsewhere(bind) is not None) == elsewhere


def test_auto_becomes_sharded_only_with_workers_elsewhere(caplog):
    auto = Settings()
    assert auto.reduction == "auto"  # the default
    assert choose_reduction(auto, None).reduction == "coordinator"
    with caplog.at_level(logging.INFO, logger="dtrain.launcher"):
        chosen = choose_reduction(auto, "2 Slurm nodes")
    assert chosen.reduction == "sharded"
    assert "reduction = auto: sharded, since 2 Slurm nodes" in caplog.text
    assert {k: v for k, v in chosen.to_dict().items() if k != "reduction"} == \
        {k: v for k, v in auto.to_dict().items() if k != "reduction"}


@pytest.mark.parametrize("asked", ["coordinator", "sharded"])
def test_an_explicit_reduction_is_kept_wherever_the_workers_are(asked):
    settings = Settings(reduction=asked)
    assert choose_reduction(settings, None).reduction == asked
    assert choose_reduction(settings, "hosts node1 (hostfile)").reduction == asked


def test_the_launcher_reads_the_placement_from_its_config():
    class Starter:
        hosts = [HostSlots("node1", 1)]

    assert _workers_elsewhere(RunConfig(job=None, workers=2)) is None
    assert _workers_elsewhere(RunConfig(job=None, starter=Starter())) == "hosts node1 (hostfile)"
    assert _workers_elsewhere(RunConfig(job=None, remote_workers=2,
                                        bind="tcp://0.0.0.0:29500")) is not None
    assert _workers_elsewhere(RunConfig(job=None, remote_workers=2,
                                        bind="tcp://127.0.0.1:0")) is None
    # a Slurm step on one node: workers beside the coordinator, though it binds 0.0.0.0
    assert _workers_elsewhere(RunConfig(job=None, remote_workers=3, bind="tcp://0.0.0.0:1",
                                        slurm_nodes=("n1",) * 4)) is None
    assert _workers_elsewhere(RunConfig(job=None, remote_workers=3, bind="tcp://0.0.0.0:1",
                                        slurm_nodes=("n1", "n2"))) == "2 Slurm nodes"


def test_local_workers_take_the_star_by_default(caplog):
    """workers=2 on this machine: auto keeps the coordinator's reduction (shared memory)."""
    reference, _ = dtrain.fit(dist_jobs.MomentumGroups, workers=0)
    with caplog.at_level(logging.INFO):
        model, _ = dtrain.fit(dist_jobs.MomentumGroups, workers=2)
    assert "range map" not in caplog.text and "reduction = auto" not in caplog.text
    for (name, a), b in zip(model.state_dict().items(), reference.state_dict().values()):
        assert np.array_equal(a.numpy(), b.numpy()), name
