"""bench/scaling_model.py against the formulas of issue 13 and the node counts of shards.py."""

import dataclasses
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "bench"))

import scaling_model as sm  # noqa: E402
import wire_bytes as wb  # noqa: E402

from dtrain.distributed.shards import assign  # noqa: E402

ARRAYS_ONLY = wb.Counting(segment=1 << 62, header=0)  # no TCP/IP headers, no acknowledgements
MESSAGE_HEADERS = 1000  # bytes a message adds to its arrays, at most (msgpack, ZMTP, CURVE)
P = wb.parameter_count("MLP512")


def setup(hosts, micro_shards, **kw) -> sm.Setup:
    return sm.Setup("MLP512", hosts, 32 * hosts, micro_shards, 1e9, counting=ARRAYS_ONLY, **kw)


def free_cpu() -> sm.Costs:
    """Every CPU cost zero: only the wire and its headers take time."""
    return sm.Costs(**{f.name: 0.0 for f in dataclasses.fields(sm.Costs) if f.name != "cores"})


def test_parameter_count_is_the_benchmark_mlp():
    assert P == 784 * 512 + 512 + 512 * 512 + 512 + 512 * 10 + 10


@pytest.mark.parametrize("hosts", [2, 4, 8, 16, 64])
def test_star_moves_2_n_minus_1_copies_through_the_coordinator(hosts):
    link = sm.star(setup(hosts, hosts)).busiest
    copies = 2 * (hosts - 1) * P * 4
    assert copies <= link.sent + link.received <= copies + 2 * (hosts - 1) * MESSAGE_HEADERS


@pytest.mark.parametrize("hosts, micro_shards", [(2, 8), (3, 8), (5, 8), (6, 16), (64, 8)])
def test_star_counts_the_nodes_shards_assign_gives(hosts, micro_shards):
    plan = list(assign(micro_shards, list(range(hosts))).values())[1:]  # worker 0 is local
    values = sum(len(nodes) for nodes in plan)
    tasks = sum(1 for nodes in plan if nodes)
    link = sm.star(setup(hosts, micro_shards)).busiest
    assert values * P * 4 <= link.received <= values * (P * 4 + MESSAGE_HEADERS)
    assert tasks * P * 4 <= link.sent <= tasks * (P * 4 + MESSAGE_HEADERS)


def test_a_non_aligned_span_sends_two_nodes():
    work = sm.host_work(3, 8, 96)
    assert [w.nodes for w in work] == [1, 2, 2]
    assert [w.samples for w in work] == [24, 36, 36]


@pytest.mark.parametrize("hosts", [2, 8, 64, 512])
def test_ring_moves_2_p_4_n_minus_1_over_n_through_every_link(hosts):
    link = sm.ring_bound(setup(hosts, max(8, hosts))).busiest
    expected = 2 * P * 4 * (hosts - 1) / hosts
    assert link.sent == link.received == pytest.approx(expected, abs=1)


@pytest.mark.parametrize("hosts", [2, 8, 64, 512])
def test_sharded_moves_about_the_ring_bytes_through_every_link(hosts):
    step = sm.sharded(setup(hosts, max(8, hosts)))
    expected = 2 * P * 4 * (hosts - 1) / hosts
    for link in (step.busiest, step.typical):
        for carried in (link.sent, link.received):
            assert expected <= carried <= expected + 2 * (hosts - 1) * MESSAGE_HEADERS


def test_issue_example_10m_parameters_64_hosts_10_gbits():
    """The issue on paper: the star needs about 4 s per step, the ring about 64 ms."""
    s = sm.Setup("MLP2048", 64, 32 * 64, 64, 1e10, curve=False, latency_s=0.0, costs=free_cpu())
    assert sm.star(s).seconds == pytest.approx(4.0, rel=0.10)
    assert sm.ring_bound(s).seconds == pytest.approx(0.064, rel=0.10)
    assert sm.sharded(s).seconds == pytest.approx(0.064, rel=0.10)


def test_uplink_schedule_sends_parameters_first_then_first_layers_first():
    # layer 1's gradients are ready at 1, layer 0's at 2; every exchange takes 1 s, reduce 0.5
    arrived = sm.uplink_schedule({0: 2.0, 1: 1.0}, {0: (1.0, 1.0), 1: (1.0, 1.0)},
                                 {0: 0.5, 1: 0.5})
    # grads 1 [1, 2]; grads 0 [2, 3]; params 1 ready 2.5, sent [3, 4]; params 0 [4, 5]
    assert arrived == {1: 4.0, 0: 5.0}


def test_model_bytes_match_the_crosshost_measurements(capsys):
    assert sm.check()
    assert "bytes within 10%" in capsys.readouterr().out
