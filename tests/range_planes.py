"""A worker's sharded-reduction plane built in the test process, owning every range.

``owning_plane`` gives a ``RangePlane`` (no CURVE; given ``keys`` and ``seal``, one whose peers
seal their messages under that map key) whose reducer owns all of a job's ranges at
step 0 and has sent itself their parameters, so a test drives it message by message, as a
worker's main loop would, without a coordinator.
"""

from __future__ import annotations

import zmq

from dtrain.distributed import protocol as P
from dtrain.distributed.compute import batch_norm_modules
from dtrain.distributed.job import apply_settings
from dtrain.distributed.param_ranges import model_ranges
from dtrain.distributed.range_optimizer import RangeOptimizer
from dtrain.distributed.range_state import range_payload
from dtrain.distributed.trainer import build_master
from dtrain.workers.ranges import RangePlane


def owning_plane(ctx: zmq.Context, job, send, keys=None, seal: bytes = b"",
                 **overrides) -> tuple:
    """(plane, model, phases, settings) for ``job`` with its settings changed by
    ``overrides``; ``send`` receives what the plane sends the coordinator."""
    settings = job.settings(**overrides)
    apply_settings(job, settings)
    model, phases = build_master(job, settings)
    params, optimizer = list(model.parameters()), phases[0].optimizer
    ranges = model_ranges(model, [optimizer], settings.param_ranges)
    schema = P.ModelSchema.of(model, phases, settings.micro_shards, batch_norm_modules(model))
    schema = P.ModelSchema(schema.names, schema.specs, schema.bn_shapes, schema.micro_shards,
                           schema.phases, ranges)
    plane = RangePlane(ctx, keys, "tcp://127.0.0.1:9", schema, optimizer, params, send,
                       settings.clip_grad_norm, settings.accumulate, settings.peer_cipher)
    try:
        plane.ready("job", P.Ready(0, "network"))
        public = keys.public.decode() if keys is not None else ""
        plane.use_map(P.RangeMap(1, [(plane.address, public)], [0] * len(ranges),
                                 [public] if public else [], seal))
        for index in range(len(ranges)):
            part = RangeOptimizer(optimizer, params, ranges, index)
            plane.load(P.RangeState(0, 1, index, 0, *range_payload(part)))
    except BaseException:
        plane.close()
        raise
    return plane, model, phases, settings
