"""The sharded reduction (``reduction = sharded``): the workers' reducers sum and step the
parameter ranges, and the bits are those of the in-process run and of the coordinator's star,
for any worker count, after a killed worker and across a resume in either mode."""

import json
import logging
import os
import re
import sys
import threading
import time

import numpy as np
import pytest
import zmq

import dtrain
from dtrain.distributed import protocol as P
from dtrain.distributed.shards import Planner, assign

HERE = os.path.dirname(__file__)
sys.path.insert(0, HERE)
import batched_jobs
import dist_jobs
from procs import dtrain_processes
from range_planes import owning_plane
from test_faults import FaultInjector, _kill

FALLBACK = "the coordinator reduces this run instead"


def _state(model) -> list:
    return [a.clone() for a in model.state_dict().values()]


def _same(a, b) -> bool:
    return len(a) == len(b) and all(x.dtype == y.dtype and np.array_equal(x, y)
                                    for x, y in zip(a, b))


@pytest.mark.parametrize("job", [dist_jobs.MomentumGroups, dist_jobs.AdamDropout,
                                 batched_jobs.CNNBatchNorm])
def test_bit_identical_to_in_process_and_to_the_star_for_1_2_3_workers(job, caplog):
    reference, history = dtrain.fit(job, workers=0)
    ref = _state(reference)
    star, star_history = dtrain.fit(job, workers=2, reduction="coordinator")
    assert _same(_state(star), ref)
    for workers in (1, 2, 3):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="dtrain"):
            model, h = dtrain.fit(job, workers=workers, reduction="sharded")
        assert FALLBACK not in caplog.text
        assert f"over {workers} reducers" in caplog.text  # the ranges were on the workers
        assert _same(_state(model), ref), f"{workers} sharded workers differ"
        assert [r["loss"] for r in h.steps] == [r["loss"] for r in history.steps]
        assert [r["lr"] for r in h.steps] == [r["lr"] for r in history.steps]
    assert dtrain_processes(dist_jobs.__file__) == []


@pytest.mark.parametrize("max_norm", [0.05, 1e9], ids=["clips", "never-clips"])
def test_clip_grad_norm_is_sharded_with_the_in_process_bits(max_norm, caplog):
    """Each reducer sends its ranges' sums of squares, the coordinator adds them in range order
    and sends the factor: the bits of the trainer's range-wise clip_grad_norm_."""
    reference, history = dtrain.fit(dist_jobs.MomentumGroups, workers=0,
                                    clip_grad_norm=max_norm)
    unclipped, _ = dtrain.fit(dist_jobs.MomentumGroups, workers=0)
    assert _same(_state(reference), _state(unclipped)) == (max_norm > 1)  # it did clip
    for workers in (1, 2, 3):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="dtrain"):
            model, h = dtrain.fit(dist_jobs.MomentumGroups, workers=workers,
                                  reduction="sharded", clip_grad_norm=max_norm)
        assert FALLBACK not in caplog.text and f"over {workers} reducers" in caplog.text
        assert _same(_state(model), _state(reference)), f"{workers} sharded workers differ"
        assert [r["loss"] for r in h.steps] == [r["loss"] for r in history.steps]


@pytest.mark.parametrize("clip", [0.0, 0.05], ids=["plain", "clip_grad_norm"])
def test_accumulate_is_sharded_with_the_in_process_bits(clip, caplog):
    """accumulate = 4: reducers add each mini-batch's range sums to buffers of their own and
    step on a group's last mini-batch (the epoch's last group is shorter), as the trainer does
    with whole gradients; the steps in between leave the parameters as they are."""
    settings = dict(accumulate=4, clip_grad_norm=clip)
    reference, history = dtrain.fit(dist_jobs.MomentumGroups, workers=0, **settings)
    assert len(history.steps) // len(history.epochs) % 4 != 0  # a short last group
    single, _ = dtrain.fit(dist_jobs.MomentumGroups, workers=0, clip_grad_norm=clip)
    assert not _same(_state(reference), _state(single))  # accumulating changed something
    for workers in (1, 2, 3):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="dtrain"):
            model, h = dtrain.fit(dist_jobs.MomentumGroups, workers=workers,
                                  reduction="sharded", **settings)
        assert FALLBACK not in caplog.text and f"over {workers} reducers" in caplog.text
        assert _same(_state(model), _state(reference)), f"{workers} sharded workers differ"
        assert [r["loss"] for r in h.steps] == [r["loss"] for r in history.steps]
        assert [r["lr"] for r in h.steps] == [r["lr"] for r in history.steps]


def test_a_job_that_cannot_be_sharded_falls_back_and_says_why(caplog):
    reference, _ = dtrain.fit(dist_jobs.FullBatchLBFGS, workers=0)
    with caplog.at_level(logging.WARNING):
        model, _ = dtrain.fit(dist_jobs.FullBatchLBFGS, workers=2, reduction="sharded")
    assert FALLBACK in caplog.text and "closure" in caplog.text
    assert _same(_state(model), _state(reference))


def test_a_job_error_on_the_workers_is_reported(monkeypatch):
    monkeypatch.setenv("DTRAIN_TEST_FAIL", "1")
    from dtrain.distributed.coordinator import WorkerError

    with pytest.raises(WorkerError, match="deliberate failure in the training script"):
        dtrain.fit(dist_jobs.FailsAtStep3, workers=2, reduction="sharded")
    assert dtrain_processes(dist_jobs.__file__) == []


def test_genuinely_diverging_training_continues_like_single_process(caplog):
    reference, ref_history = dtrain.fit(dist_jobs.Diverges, workers=0)
    assert not np.isfinite(ref_history.steps[-1]["loss"])
    with caplog.at_level(logging.WARNING):
        model, history = dtrain.fit(dist_jobs.Diverges, workers=2, reduction="sharded")
    assert "the training diverged" in caplog.text and FALLBACK not in caplog.text
    for p, q in zip(model.parameters(), reference.parameters()):
        np.testing.assert_array_equal(p._data, q._data)  # NaN == NaN here


@pytest.mark.parametrize("what", ["grads", "loss"])
@pytest.mark.parametrize("reduction", ["coordinator", "sharded", "sharded-clip"])
def test_one_workers_nonfinite_values_cost_time_not_bits(tmp_path, monkeypatch, caplog, what,
                                                         reduction):
    """A worker whose node comes out NaN (only its gradients, or its loss too) while no other
    worker reproduces it: checked by another worker, the faulty one is evicted and the run
    ends with the clean bits, as in the star. Sharded, its gradients had already been summed
    by the reducers (its loss alone was checked, and taken as the training diverging): the
    run went on with NaN parameters. With clip_grad_norm the NaN reaches every range through
    the norm's factor before the reducer that summed it names the node."""
    clip = 0.05 if reduction == "sharded-clip" else 0.0
    reduction = reduction.removesuffix("-clip")
    reference, history = dtrain.fit(dist_jobs.CorruptsOnce, workers=0, clip_grad_norm=clip)
    marker = tmp_path / "corrupt"
    monkeypatch.setenv("DTRAIN_TEST_CORRUPT", str(marker))
    monkeypatch.setenv("DTRAIN_TEST_CORRUPT_WHAT", what)
    with caplog.at_level(logging.INFO, logger="dtrain"):
        model, h = dtrain.fit(dist_jobs.CorruptsOnce, workers=3, reduction=reduction,
                              step_timeout=600, clip_grad_norm=clip)
    assert marker.exists(), "no worker corrupted anything: the test did not test anything"
    assert "(nonfinite)" in caplog.text and "evicted" in caplog.text
    assert "the training diverged" not in caplog.text
    assert (FALLBACK not in caplog.text) and ("range map" in caplog.text) == (
        reduction == "sharded")
    assert _same(_state(model), _state(reference))
    assert [r["loss"] for r in h.steps] == [r["loss"] for r in history.steps]
    assert dtrain_processes(dist_jobs.__file__) == []


class _Traffic:
    """Array bytes of the messages the coordinator sends and receives, by type."""

    def __init__(self, monkeypatch):
        self.bytes: dict = {}
        self.count: dict = {}
        send, decode = P.send, P.decode

        def counting_send(socket, msg, *args, **kwargs):
            env = msg if isinstance(msg, P.Envelope) else msg.envelope("")
            self._add("sent " + env.type, env.arrays)
            return send(socket, msg, *args, **kwargs)

        def counting_decode(frames, *args, **kwargs):
            env = decode(frames, *args, **kwargs)
            self._add("received " + env.type, env.arrays)
            return env

        monkeypatch.setattr(P, "send", counting_send)
        monkeypatch.setattr(P, "decode", counting_decode)

    def _add(self, key: str, arrays: dict) -> None:
        self.bytes[key] = self.bytes.get(key, 0) + sum(np.asarray(a).nbytes
                                                       for a in arrays.values())
        self.count[key] = self.count.get(key, 0) + 1


def test_the_coordinator_carries_no_gradients_or_parameters_per_step(monkeypatch):
    job, steps = dist_jobs.MomentumGroups, 12  # two epochs of 6 steps
    model, _ = dtrain.fit(job, workers=0)
    params = sum(p._data.nbytes for p in model.parameters())
    star = _Traffic(monkeypatch)
    dtrain.fit(job, workers=2, max_steps=steps, shared_memory=False)
    star_bytes = star.bytes["sent task"] + star.bytes["received grads"]
    assert star_bytes >= 2 * 2 * params * steps  # every parameter out, every gradient in
    monkeypatch.undo()

    sharded = _Traffic(monkeypatch)
    dtrain.fit(job, workers=2, max_steps=steps, shared_memory=False, reduction="sharded")
    assert "sent task" not in sharded.count
    assert sharded.count["sent steptask"] == 2 * steps
    assert sharded.bytes["received grads"] == 0  # losses, counts: no arrays
    assert sharded.bytes["sent steptask"] == 0
    # arrays only at the start (each range's state, once) and at the two epoch ends (the
    # ranges gathered for validation and the checkpoint): parameters plus momentum
    moved = {k: v for k, v in sharded.bytes.items() if v}
    assert set(moved) == {"sent rangestate", "received rangestate"}
    assert moved["sent rangestate"] <= 2 * params
    assert moved["received rangestate"] == 2 * 2 * params
    assert sum(moved.values()) <= 6 * params < star_bytes / 4  # however many steps


class _HostTraffic:
    """Bytes each worker thread sends off its host per step message type, and the bytes
    the coordinator's socket sends and receives (every message counted where it is sent: the
    peers' on their senders' threads)."""

    def __init__(self, monkeypatch, coordinator: str, workers: list, sealed: bool):
        self.coordinator = coordinator
        self.workers = workers
        self.out = [0] * len(workers)  # per worker: bytes to other hosts' reducers
        self.into = [0] * len(workers)  # per worker: bytes from other hosts' reducers/workers
        self.co = 0  # step messages through the coordinator's socket
        self.mechanisms = set()  # ZeroMQ mechanisms of the peers' sockets
        self.frame = 0  # the largest array frame a worker sent a peer
        self.lock = threading.Lock()  # the workers' sender threads count too
        send, send_packed = P.send, P.send_packed

        def counting_send(socket, msg, *args, **kwargs):  # the coordinator's and to it
            if msg.TYPE in P.STEP_TYPES | {P.GRADS}:
                frames = P.pack(msg, "j", kwargs.get("frame_bytes") or P.frame_bytes_for(socket))
                self._count(socket, sum(len(f) for f in frames))
            return send(socket, msg, *args, **kwargs)

        def counting_send_packed(socket, frames, flags=0):  # to peers, as sent: sealed or not
            self._count(socket, sum(memoryview(f).nbytes for f in frames))
            if not sealed:  # a sealed message's frames are the ciphertexts
                with self.lock:
                    self.frame = max(self.frame, *(memoryview(f).nbytes for f in frames[1:]))
            return send_packed(socket, frames, flags)

        monkeypatch.setattr(P, "send", counting_send)
        monkeypatch.setattr(P, "send_packed", counting_send_packed)

    def _count(self, socket, nbytes: int) -> None:
        endpoint = socket.getsockopt(zmq.LAST_ENDPOINT).decode()
        with self.lock:
            if socket.type == zmq.DEALER and endpoint != self.coordinator:
                self.mechanisms.add(socket.getsockopt(zmq.MECHANISM))
            if endpoint == self.coordinator or socket.type == zmq.ROUTER:
                self.co += nbytes
                return
            for i, w in enumerate(self.workers):  # a peer DEALER: whose, and to whom
                if w.plane is not None and socket in w.plane.sender.sockets.values():
                    if endpoint != w.plane.address:  # its own reducer is on its own host
                        self.out[i] += nbytes
                        for j, other in enumerate(self.workers):
                            if other.plane is not None and other.plane.address == endpoint:
                                self.into[j] += nbytes


@pytest.mark.parametrize("cipher", ["aes-gcm", "curve"])
def test_each_host_carries_about_2P_N_minus_1_over_N_and_the_coordinator_almost_nothing(
        tmp_path, monkeypatch, cipher):
    """Counted as sent, sealed or not. Under CURVE, range arrays travel in frames of at most
    CURVE_FRAME_BYTES (cut small here so the ranges are split) and are joined with the same
    bits; sealed (aes-gcm), peers' sockets carry no mechanism."""

    from dtrain.distributed.security import client_keys_from_dir, keygen
    from dtrain.launcher.run import RunConfig, run
    from dtrain.workers.worker import Worker, WorkerConfig
    from test_faults import _free_port

    monkeypatch.setattr(P, "CURVE_FRAME_BYTES", 4096)
    keys = str(tmp_path / "keys")
    keygen(keys)
    address = f"tcp://127.0.0.1:{_free_port()}"
    workers = [Worker(WorkerConfig(connect=address, script=dist_jobs.__file__, job_name="Wide",
                                   rank=r, name=f"w{r}", keys=client_keys_from_dir(keys)))
               for r in range(2)]
    traffic = _HostTraffic(monkeypatch, address, workers, sealed=cipher == "aes-gcm")
    threads = [threading.Thread(target=w.run, daemon=True) for w in workers]
    for t in threads:
        t.start()
    try:
        model, history = run(RunConfig(job=dist_jobs.Wide, workers=0, remote_workers=2,
                                       bind=address, keys_dir=keys,
                                       overrides={"reduction": "sharded",
                                                  "peer_cipher": cipher}))
    finally:
        for t in threads:
            t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    assert traffic.mechanisms == {zmq.CURVE if cipher == "curve" else zmq.NULL}
    reference, _ = dtrain.fit(dist_jobs.Wide, workers=0)
    assert _same(_state(model), _state(reference))
    steps, n = len(history.steps), 2
    wire = sum(p._data.nbytes for p in model.parameters())  # P * 4
    # each way, as a ring all-reduce: the other reducers' slices of this worker's gradients
    # and this reducer's new parameters for the other workers go out; the mirror comes in
    ideal = 2 * wire * (n - 1) / n
    for i in range(n):
        assert 0.9 * ideal <= traffic.out[i] / steps <= 1.2 * ideal, (traffic.out, ideal)
        assert 0.9 * ideal <= traffic.into[i] / steps <= 1.2 * ideal, (traffic.into, ideal)
    assert traffic.co / steps < 0.01 * wire
    assert traffic.frame == (4096 if cipher == "curve" else 0)


@pytest.mark.parametrize("extra", [{}, {"clip_grad_norm": 0.01}, {"accumulate": 4}],
                         ids=["plain", "clip_grad_norm", "accumulate"])
def test_a_killed_worker_costs_time_not_bits(tmp_path, caplog, monkeypatch, extra):
    """With gather_every = 4 the ranges are gathered every 4 steps besides the epoch ends
    (every 6 steps here), so the rollback recomputes at most 3 steps. With clip_grad_norm the
    reducers also wait for the coordinator's factor in every step; with accumulate = 4 some
    gathers (steps 8, 20, ...) fall inside a group and carry its accumulated sums."""
    from dtrain.distributed.sharded import ShardedPlane

    steps = 60
    reference, history = dtrain.fit(dist_jobs.SlowSteps, workers=0, max_steps=steps, **extra)
    if extra:
        plain, _ = dtrain.fit(dist_jobs.SlowSteps, workers=0, max_steps=steps)
        assert not _same(_state(reference), _state(plain))  # the setting did something
    gathered = []
    real_gather = ShardedPlane.gather

    def gather(plane, trainer):
        gathered.append(trainer.step)
        real_gather(plane, trainer)

    monkeypatch.setattr(ShardedPlane, "gather", gather)
    out = str(tmp_path)
    injector = FaultInjector(os.path.join(out, "metrics.jsonl"), [(10, _kill(1))])
    injector.start()
    with caplog.at_level(logging.WARNING):
        model, h = dtrain.fit(dist_jobs.SlowSteps, workers=3, out=out, max_steps=steps,
                              max_restarts=1, reduction="sharded", gather_every=4, **extra)
    injector.join(timeout=10)
    assert injector.error is None, injector.error
    assert len(injector.done) == 1
    recomputed = [int(n) for n in re.findall(r"rolling back to step \d+ and recomputing "
                                             r"(\d+) step", caplog.text)]
    assert recomputed and max(recomputed) < 4, caplog.text
    every_4_or_epoch_end = sorted({*range(4, steps + 1, 4), *range(6, steps + 1, 6)})
    assert set(every_4_or_epoch_end) <= set(gathered), gathered
    assert _same(_state(model), _state(reference))
    assert [r["loss"] for r in h.steps] == [r["loss"] for r in history.steps]
    with open(os.path.join(out, "metrics.jsonl")) as f:  # recomputed steps written once
        written = [json.loads(line) for line in f]
    assert [r["step"] for r in written if r["type"] == "step"] == list(range(steps))
    assert dtrain_processes(dist_jobs.__file__) == []


@pytest.mark.parametrize("accumulate", [1, 3])
@pytest.mark.parametrize("workers,reduction", [(3, "coordinator"), (1, "sharded")])
def test_a_sharded_checkpoint_resumes_on_other_workers_in_either_mode(tmp_path, workers,
                                                                      reduction, accumulate):
    """With accumulate = 3 the checkpoint of step 8 falls inside a group (epoch 1's batches
    0-2 are steps 6-8): it carries one mini-batch's sums, which the resumed run adds to."""
    job = dist_jobs.MomentumGroups
    reference, _ = dtrain.fit(job, workers=0, accumulate=accumulate)
    out = str(tmp_path)
    dtrain.fit(job, workers=2, out=out, max_steps=9, checkpoint_every=4, reduction="sharded",
               accumulate=accumulate)
    os.remove(os.path.join(out, "checkpoint.dtrain"))  # as if killed after step 8
    state = dtrain.load(os.path.join(out, "checkpoints", "step-000000008.dtrain"))
    assert (state["accumulated"]["count"] > 0) == (accumulate > 1)
    model, history = dtrain.fit(job, workers=workers, resume=out, reduction=reduction,
                                accumulate=accumulate)
    assert history.steps[0]["step"] == 8
    assert _same(_state(model), _state(reference))


# ---------------------------------------------------------------------------- bad peers
@pytest.fixture(params=[0.0], ids=["plain"])
def plane(request):
    """A worker's reducer plane, owning every range of MomentumGroups at step 0 (clipping the
    gradient norm to ``request.param`` when a test asks)."""
    ctx = zmq.Context()
    sent = []
    made, _, _, settings = owning_plane(ctx, dist_jobs.MomentumGroups(), sent.append,
                                        param_ranges=3, clip_grad_norm=request.param)
    schema = made.schema
    peer = ctx.socket(zmq.DEALER)
    peer.setsockopt(zmq.LINGER, 0)
    try:
        plan = Planner(110, settings).plan(0, 0, 0)
        cover = assign(5, ["a"])["a"]
        made.task(P.StepTask(0, 0, 1, 0, 0, [], cover, [{"lr": 0.1}, {"lr": 0.05}]), plan)
        peer.connect(made.address)
        yield made, peer, sent, schema, plan, cover
    finally:
        peer.close(0)
        made.close()
        ctx.term()


def _deliver(plane, peer, msg) -> None:
    """Send ``msg`` (frames or a message) from a peer and let the plane handle it."""
    frames = msg if isinstance(msg, list) else P.pack(msg, "job")
    peer.send_multipart(frames)
    assert plane.mailbox.poll(10_000), "the message never arrived"
    plane.poll()


def _grads(schema, plan, index: int, node, **change):
    pieces = schema.ranges.ranges[index]
    grads = [np.ones(P.piece_spec(schema, p)[0], np.float32) for p in pieces]
    fields = dict(step=0, worker=1, version=1, node=node, range=index,
                  count=plan.node_count(node), grads=grads)
    fields.update(change)
    return P.RangeGrads(**fields)


def test_malformed_reducer_messages_are_rejected_and_logged_and_reduction_goes_on(plane,
                                                                                  caplog):
    plane, peer, sent, schema, plan, cover = plane
    node = cover[0]
    wrong_shape = _grads(schema, plan, 0, node)
    wrong_shape.grads[0] = np.ones(wrong_shape.grads[0].size + 1, np.float32)
    wrong_dtype = _grads(schema, plan, 0, node)
    wrong_dtype.grads[0] = wrong_dtype.grads[0].astype(np.float64)
    wrong_range = P.pack(_grads(schema, plan, 0, node), "job")
    header = P.decode(wrong_range).fields
    bad = [
        ([b"not msgpack"], "garbage"),
        (P.encode(P.Envelope(P.RANGEGRADS, "job", 0, 1, {**header, "range": 99},
                             P.decode(wrong_range).arrays)), "fields"),
        (wrong_shape, "shape"),
        (wrong_dtype, "dtype"),
        (_grads(schema, plan, 0, node, step=5), "stale"),
        (_grads(schema, plan, 0, node, version=2), "stale"),
        (_grads(schema, plan, 0, (0, 1) if node != (0, 1) else (1, 2)), "node"),
        (_grads(schema, plan, 0, node, count=plan.node_count(node) + 1), "count"),
        (P.RangeDone(0, 1, 1, 0), "type"),
    ]
    for msg, reason in bad:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="dtrain.worker"):
            _deliver(plane, peer, msg)
        assert f"({reason})" in caplog.text, (reason, caplog.text)
        assert not plane.reducer.owned[0].values and not sent
    for index in range(len(schema.ranges)):  # the good gradients still step every range
        for n in cover:
            _deliver(plane, peer, _grads(schema, plan, index, n))
    done = [m for m in sent if isinstance(m, P.RangeDone)]
    assert sorted(m.range for m in done) == list(range(len(schema.ranges)))
    _deliver(plane, peer, _grads(schema, plan, 0, node))  # a repeat of a stepped step
    assert "(stale)" in caplog.text
    while len(plane.incoming.get(1, {})) < len(schema.ranges):  # its own new parameters
        assert plane.mailbox.poll(10_000)
        plane.poll()


@pytest.mark.parametrize("plane", [0.5], ids=["clipping"], indirect=True)
def test_a_clipping_reducer_steps_its_ranges_only_on_the_coordinators_scale(plane, caplog):
    """With clip_grad_norm a reducer sends each range's sum of squares and steps nothing until
    the CLIPSCALE of that step and map; a stale or repeated one is refused and logged."""
    plane, peer, sent, schema, plan, cover = plane
    for index in range(len(schema.ranges)):
        for n in cover:
            _deliver(plane, peer, _grads(schema, plan, index, n))
    norms = [m for m in sent if isinstance(m, P.RangeNorm)]
    assert sorted(m.range for m in norms) == list(range(len(schema.ranges)))
    elements = sum(int(np.prod(P.piece_spec(schema, p)[0])) for p in schema.ranges.ranges[0])
    mean = len(cover) / plan.size  # every node sent ones
    assert norms[0].partial == pytest.approx(elements * mean * mean)
    assert not any(isinstance(m, (P.RangeParams, P.RangeDone)) for m in sent)
    for wrong, reason in ((P.ClipScale(1, 1, 0.5), "stale"), (P.ClipScale(0, 2, 0.5), "stale")):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="dtrain.worker"):
            plane._locally(plane.clip, wrong)
        assert f"({reason})" in caplog.text
    assert not any(isinstance(m, P.RangeDone) for m in sent) and 1 not in plane.incoming
    plane.clip(P.ClipScale(0, 1, 0.5))
    done = [m for m in sent if isinstance(m, P.RangeDone)]
    assert sorted(m.range for m in done) == list(range(len(schema.ranges)))
    assert sorted(plane.incoming[1]) == list(range(len(schema.ranges)))  # step 1's parameters
    with pytest.raises(P.ProtocolError, match="no range of it waits"):
        plane.clip(P.ClipScale(0, 1, 0.5))  # stepped once only


def test_a_reducer_restarted_at_once_gets_its_zap_handler():
    """A worker that rejoins restarts its reducer, whose ZAP handler binds the address the old
    one released only asynchronously: the bind failed most times (a rejoining worker then hung
    on exit), so a cut link that healed cost the run its worker. Now the bind waits."""
    from dtrain.distributed.security import ServerKeys, start_authenticator

    public, secret = zmq.curve_keypair()
    ctx = zmq.Context()
    try:
        for _ in range(50):
            start_authenticator(ctx, ServerKeys(public, secret, {public})).stop()
    finally:
        ctx.destroy(linger=0)


def test_parameters_far_ahead_are_rejected_and_never_crowd_out_the_next_steps(plane, caplog):
    """A peer's RANGEPARAMS for steps no reducer can have reached yet used to be kept: three
    of them filled the replica's window, after which the real parameters of the next step
    were refused as too far ahead and the worker never computed again (the run timed out)."""
    plane, peer, sent, schema, plan, cover = plane
    pieces = [[np.zeros(P.piece_spec(schema, p)[0], np.float32) for p in schema.ranges.ranges[i]]
              for i in range(len(schema.ranges))]
    for step in (50, 51, 52):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="dtrain.worker"):
            _deliver(plane, peer, P.RangeParams(step, 1, 1, 0, pieces[0]))
        assert "(stale)" in caplog.text, step
    assert set(plane.incoming) <= {1, 2}
    for index in range(len(schema.ranges)):  # the next step's parameters, as a reducer sends
        _deliver(plane, peer, P.RangeParams(1, 1, 1, index, pieces[index]))
    assert sorted(plane.incoming[1]) == list(range(len(schema.ranges)))


def test_a_bad_message_waiting_for_its_step_does_not_cost_the_step(caplog):
    """Gradients that come before their step's STEPTASK wait unchecked against its plan. One
    with a wrong count used to raise out of the STEPTASK's handling: the task was dropped
    with the good gradients waiting beside it, and the worker never computed the step."""
    ctx = zmq.Context()
    sent = []
    made, _, _, settings = owning_plane(ctx, dist_jobs.MomentumGroups(), sent.append,
                                        param_ranges=3)
    peer = ctx.socket(zmq.DEALER)
    peer.setsockopt(zmq.LINGER, 0)
    try:
        schema = made.schema
        plan = Planner(110, settings).plan(0, 0, 0)
        node = assign(5, ["a"])["a"][0]
        peer.connect(made.address)
        bad = _grads(schema, plan, 0, node, count=plan.node_count(node) + 1)
        _deliver(made, peer, bad)  # kept until the step is known
        for index in range(1, len(schema.ranges)):
            _deliver(made, peer, _grads(schema, plan, index, node))
        with caplog.at_level(logging.WARNING):
            made.task(P.StepTask(0, 0, 1, 0, 0, [], [node], [{"lr": 0.1}, {"lr": 0.05}]), plan)
        assert "(count)" in caplog.text
        assert made.pending is None, "the step was never computed"
        done = sorted(m.range for m in sent if isinstance(m, P.RangeDone))
        assert done == list(range(1, len(schema.ranges)))  # the good ones stepped their ranges
        _deliver(made, peer, _grads(schema, plan, 0, node))  # the right one steps range 0
        assert sorted(m.range for m in sent if isinstance(m, P.RangeDone)) == \
            list(range(len(schema.ranges)))
    finally:
        peer.close(0)
        made.close()
        ctx.term()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_reducer_divides_its_own_sums_in_place_with_the_same_bits(dtype):
    """The batch mean of a range goes into the sum the reducer made (no new array of the
    range's size), never into an array it received, and has the bits of a fresh division."""
    from dtrain.distributed.reducer import mean

    rng = np.random.default_rng(0)
    total = rng.standard_normal(1000).astype(dtype) * 37
    want = np.divide(total, 48).astype(dtype, copy=False)
    mine = total.copy()
    assert mean(mine, 48, np.dtype(dtype), owned=True) is mine
    assert mine.tobytes() == want.tobytes()
    received = total.copy()
    got = mean(received, 48, np.dtype(dtype), owned=False)
    assert got is not received and got.tobytes() == want.tobytes()
    assert received.tobytes() == total.tobytes()
    narrowed = mean(total.astype(np.float64), 48, np.dtype(np.float32), owned=True)
    assert narrowed.dtype == np.float32
    assert narrowed.tobytes() == np.divide(total.astype(np.float64), 48).astype(
        np.float32).tobytes()


def test_a_reducer_steps_parameters_in_place_only_once_nothing_holds_them():
    """RANGEPARAMS carry the reducer's own arrays (no copy of a range each step): before it
    steps a range in place, an array that a send ZeroMQ has not finished still holds (or a
    worker's parameters not yet copied) is replaced by a copy, so the bytes on their way
    never change; an array nothing holds is stepped where it is."""
    from dtrain.autograd.tensor import Tensor
    from dtrain.distributed.reducer import unshare

    ctx = zmq.Context()
    try:
        stuck = ctx.socket(zmq.DEALER)  # nobody listens: the message waits in ZeroMQ's queue
        stuck.setsockopt(zmq.LINGER, 0)
        stuck.connect("tcp://127.0.0.1:9")
        router = ctx.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        dealer = ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(f"tcp://127.0.0.1:{router.bind_to_random_port('tcp://127.0.0.1')}")
        for sock, delivered in ((stuck, False), (dealer, True)):
            tensor = Tensor._wrap(np.arange(100_000, dtype=np.float32))
            address = tensor._data.__array_interface__["data"][0]
            P.send(sock, P.RangeParams(1, 0, 1, 0, [tensor._data]), job="j")
            if delivered:  # received, then released by ZeroMQ (its I/O thread, soon after)
                assert router.poll(10_000)
                router.recv_multipart(copy=False)
                deadline = time.monotonic() + 10
                while sys.getrefcount(tensor._data) > 2 and time.monotonic() < deadline:
                    time.sleep(0.001)
            unshare(tensor)
            kept = tensor._data.__array_interface__["data"][0] == address
            assert kept == delivered
            np.testing.assert_array_equal(tensor._data, np.arange(100_000, dtype=np.float32))
            held = tensor._data
            unshare(tensor)
            assert tensor._data is not held
            del held
            address = tensor._data.__array_interface__["data"][0]
            unshare(tensor)  # nothing holds it any more
            assert tensor._data.__array_interface__["data"][0] == address
    finally:
        ctx.destroy(linger=0)
