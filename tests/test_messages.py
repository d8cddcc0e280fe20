"""Every message type: built, packed, unpacked to an equal message; every malformed variant of
every field rejected with a ProtocolError naming it (and nothing else raised)."""

import numpy as np
import pytest

from dtrain.distributed import protocol as P
from dtrain.distributed.param_ranges import ParamRanges, Piece

JOB = "job-1"
SCHEMA = P.ModelSchema(names=("w", "b"), specs=(((3, 2), np.dtype(np.float32)),
                                                ((2,), np.dtype(np.float32))),
                       bn_shapes=((2,), None), micro_shards=4, phases=((0, 1), (1,)),
                       ranges=ParamRanges(((Piece(0, 0, 6),), (Piece(1, 0, 1),),
                                           (Piece(1, 1, 2),)), (6, 2)))
W = np.arange(6, dtype=np.float32).reshape(3, 2)
B = np.array([1.0, -2.0], np.float32)
MEAN = np.array([0.5, 0.25], np.float32)

VALID = {
    P.HELLO: P.Hello(instance="a" * 32, name="w0", pid=12, host="node-1", digest="d" * 64,
                     rank=3, machine="node-1/boot"),
    P.WELCOME: P.Welcome(worker=2, step=5, settings={"micro_shards": 4, "lr": 0.1},
                         shared_memory={"params": {"path": "/dev/shm/x"}, "grads": {}}),
    P.READY: P.Ready(worker=2, channel="shared-memory", note="",
                     reducer="tcp://10.0.0.2:5001", public="k" * 40),
    P.TASK: P.Task(step=7, worker=2, epoch=1, batch=3, phase=0, round=9,
                   nodes=[(0, 2), (2, 3)], params={"w": W, "b": B}),
    P.GRADS: P.Grads(step=7, worker=2, round=9, phase=0, node=(0, 2), count=16, loss_sum=3.5,
                     compute_s=0.01, grads={0: W, 1: B}, indices=[0, 1],
                     bn=[(0, 0, MEAN, MEAN), (1, 0, MEAN, MEAN)]),
    P.HEARTBEAT: P.Heartbeat(worker=2, of=b"worker-x", busy=1.25),
    P.STOP: P.Stop(worker=2, step=7, reason="evicted", detail="silent for 6 s"),
    P.ERROR: P.Error(worker=2, step=7, traceback="Traceback ...\nValueError: x", round=9,
                     node=(2, 3)),
    P.BYE: P.Bye(worker=2),
    P.RANGEMAP: P.RangeMap(version=3, reducers=[("tcp://a:1", "k" * 40), ("tcp://b:2", "")],
                           owners=[0, 1, 0], allowed=["k" * 40]),
    P.MAPACK: P.MapAck(worker=2, version=3),
    P.RANGESTATE: P.RangeState(worker=2, version=3, range=0, step=7, params=[W],
                               state=[{"exp_avg": ("array", W),
                                       "step": ("float", np.array(4.0))}]),
    P.GATHER: P.Gather(version=3, ranges=[0, 2]),
    P.STEPTASK: P.StepTask(step=7, worker=2, version=3, epoch=1, batch=2, nodes=[(0, 2)],
                           cover=[(0, 2), (2, 4)], options=[{"lr": 0.1, "betas": [0.9, 0.99],
                                                             "foreach": None}]),
    P.RANGEGRADS: P.RangeGrads(step=7, worker=2, version=3, node=(0, 2), range=2, count=8,
                               grads=[B[1:]]),
    P.RANGEPARAMS: P.RangeParams(step=7, worker=2, version=3, range=0, params=[W]),
    P.RANGEDONE: P.RangeDone(step=7, worker=2, version=3, range=1, nonfinite=[(0, 2), (3, 4)]),
    P.RANGENORM: P.RangeNorm(step=7, worker=2, version=3, range=1, partial=0.125),
    P.CLIPSCALE: P.ClipScale(step=7, version=3, coef=0.5),
}


def _round_trip(msg):
    return P.unpack([bytes(f) for f in P.pack(msg, JOB)], job=JOB, schema=SCHEMA)


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
    return a == b


@pytest.mark.parametrize("kind", sorted(P.MESSAGE_TYPES))
def test_every_message_type_round_trips(kind):
    msg = VALID[kind]
    got = _round_trip(msg)
    assert type(got) is type(msg)
    for name in msg.__dataclass_fields__:
        assert _same(getattr(msg, name), getattr(got, name)), name


@pytest.mark.parametrize("msg", [
    P.RangeState(worker=2, version=3, range=0, step=7, params=[W], state=[{}], acc=[W * 2],
                 acc_count=12),
    P.RangeState(worker=2, version=3, range=0, step=7, params=[W], state=[{}], acc=[None],
                 acc_count=12),
    P.StepTask(step=7, worker=2, version=3, epoch=1, batch=2, nodes=[(0, 2)], cover=[(0, 2)],
               options=[{"lr": 0.1}], hold=True),
], ids=["accumulated", "accumulated-no-gradient", "hold"])
def test_accumulation_fields_round_trip(msg):
    got = _round_trip(msg)
    for name in msg.__dataclass_fields__:
        assert _same(getattr(msg, name), getattr(got, name)), name


def test_accumulated_gradients_need_a_sample_count():
    env = P.RangeState(worker=2, version=3, range=0, step=7, params=[W], state=[{}],
                       acc=[W], acc_count=1).envelope(JOB)
    env.fields["acc_count"] = 0
    with pytest.raises(P.ProtocolError, match="of no samples"):
        P.unpack([bytes(f) for f in P.encode(env)], job=JOB, schema=SCHEMA)


def test_gradients_in_a_slot_carry_no_arrays():
    msg = P.Grads(step=1, worker=0, round=1, phase=1, node=(3, 4), count=4, loss_sum=1.0,
                  indices=[1], slot=2)
    got = _round_trip(msg)
    assert got.slot == 2 and got.indices == [1] and got.grads == {}


def test_grads_need_the_model_schema():
    frames = P.pack(VALID[P.GRADS], JOB)
    with pytest.raises(P.ProtocolError, match="before the model is known"):
        P.unpack(frames)


BAD_VALUES = ["text", 1.5, -1, 2**63, None, True, [1], {"a": 1}, float("nan"), "x" * 70000]


def _variants():
    """(kind, field, value) for every field of every type and every wrong value."""
    for kind, msg in sorted(VALID.items()):
        fields = P.encode(msg.envelope(JOB))
        header = P.decode(fields).fields
        for field in sorted(header) + ["unexpected"]:
            for value in BAD_VALUES:
                yield kind, field, value


def _still_valid(kind, field, value) -> bool:
    """Wrong-looking values that are in fact legal for that field."""
    legal = {
        ("heartbeat", "busy"): lambda v: type(v) is float and v >= 0 and v == v,
        ("grads", "compute_s"): lambda v: type(v) is float and v >= 0 and v == v,
        ("grads", "loss_sum"): lambda v: type(v) is float,  # NaN too: a diverged run
        ("grads", "slot"): lambda v: v is None,
        ("ready", "note"): lambda v: type(v) is str and len(v) <= P.MAX_TEXT,
        ("stop", "detail"): lambda v: type(v) is str and len(v) <= 4096,
        ("error", "traceback"): lambda v: type(v) is str and len(v) <= P.MAX_TRACEBACK,
        ("welcome", "settings"): lambda v: type(v) is dict,
        ("welcome", "shared_memory"): lambda v: v is None,
        ("hello", "name"): lambda v: type(v) is str and len(v) <= P.MAX_TEXT,
        ("hello", "host"): lambda v: type(v) is str and len(v) <= P.MAX_TEXT,
        ("hello", "machine"): lambda v: type(v) is str and len(v) <= P.MAX_TEXT,
        ("hello", "digest"): lambda v: type(v) is str and len(v) <= P.MAX_TEXT,
        ("hello", "instance"): lambda v: type(v) is str and 0 < len(v) <= 64,
        ("hello", "pid"): lambda v: type(v) is int and v >= -1,
        ("hello", "rank"): lambda v: type(v) is int and v >= 0,
        ("task", "epoch"): lambda v: type(v) is int and v >= 0,
        ("task", "batch"): lambda v: type(v) is int and v >= 0,
        ("task", "round"): lambda v: type(v) is int and v >= 0,
        ("error", "round"): lambda v: type(v) is int and v >= 0,
        ("grads", "round"): lambda v: type(v) is int and v >= 0,
        ("grads", "count"): lambda v: type(v) is int and v >= 16,  # the plan decides
        ("task", "phase"): lambda v: v == 0,
        ("grads", "phase"): lambda v: v == 0,
        ("gather", "ranges"): lambda v: v == [1],
        ("rangegrads", "count"): lambda v: type(v) is int and v >= 0,  # the plan decides
        ("rangestate", "step"): lambda v: type(v) is int and v >= 0,
        ("steptask", "epoch"): lambda v: type(v) is int and v >= 0,
        ("steptask", "batch"): lambda v: type(v) is int and v >= 0,
        # a range without gradient sends None; NaN is a diverging step's, not an error
        ("steptask", "hold"): lambda v: type(v) is bool,
        ("rangestate", "acc_count"): lambda v: type(v) is int and v >= 0,
        ("rangenorm", "partial"): lambda v: v is None or type(v) is float and not v < 0,
        ("clipscale", "coef"): lambda v: type(v) is float and (0 <= v <= 1 or v != v),
    }
    if field == "version" and type(value) is int and value >= 0:
        return True  # the receiver's own version decides
    check = legal.get((kind, field))
    return check is not None and check(value)


@pytest.mark.parametrize("kind,field,value", list(_variants()))
def test_every_malformed_field_is_rejected(kind, field, value):
    env = VALID[kind].envelope(JOB)
    fields = dict(env.fields)
    fields[field] = value
    try:
        frames = P.encode(P.Envelope(env.type, env.job, env.step, env.worker, fields,
                                     env.arrays))
    except (OverflowError, TypeError, ValueError):
        pytest.skip("not representable in msgpack: a peer cannot send it either")
    if _still_valid(kind, field, value):
        P.unpack(frames, job=JOB, schema=SCHEMA)
        return
    with pytest.raises(P.ProtocolError) as caught:
        P.unpack(frames, job=JOB, schema=SCHEMA)
    assert field in str(caught.value) or caught.value.reason in ("node", "names", "slot",
                                                                 "fields")


@pytest.mark.parametrize("kind", [P.TASK, P.GRADS, P.RANGESTATE, P.RANGEGRADS, P.RANGEPARAMS])
def test_arrays_of_the_wrong_shape_dtype_or_name_are_rejected(kind):
    env = VALID[kind].envelope(JOB)
    name = sorted(env.arrays)[0]
    for bad in ({**env.arrays, name: np.zeros((5, 5), np.float32)},
                {**env.arrays, name: env.arrays[name].astype(np.float64)},
                {k + "x": v for k, v in env.arrays.items()}):
        frames = P.encode(P.Envelope(env.type, env.job, env.step, env.worker, env.fields, bad))
        with pytest.raises(P.ProtocolError) as caught:
            P.unpack(frames, job=JOB, schema=SCHEMA)
        assert caught.value.reason in ("shape", "dtype", "names")


def test_nodes_outside_the_tree_and_foreign_phases_are_rejected():
    for node in ((0, 3), (1, 2, 3), (4, 5), (-1, 1)):
        msg = P.Grads(step=1, worker=0, round=1, phase=0, node=node, count=1, loss_sum=1.0)
        env = msg.envelope(JOB)
        with pytest.raises(P.ProtocolError, match="node"):
            P.typed(P.decode(P.encode(env)), SCHEMA)
    grads_of_phase_0 = P.Grads(step=1, worker=0, round=1, phase=1, node=(0, 1), count=4,
                               loss_sum=1.0, grads={0: W})
    with pytest.raises(P.ProtocolError, match="phase 1"):
        _round_trip(grads_of_phase_0)


def test_rangedone_names_only_distinct_nodes_of_the_tree_as_nonfinite():
    for nodes in ([[0, 2], [0, 2]], [[0, 3]], [[4, 5]], [[0, 2, 3]], [0, 2], "0,2"):
        env = VALID[P.RANGEDONE].envelope(JOB)
        env.fields["nonfinite"] = nodes
        with pytest.raises(P.ProtocolError) as caught:
            P.unpack(P.encode(env), job=JOB, schema=SCHEMA)
        assert caught.value.reason in ("node", "fields"), nodes
