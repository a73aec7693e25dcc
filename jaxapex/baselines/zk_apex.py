"""ZK-APEX's client step behind the common baseline interface: the provider's mask, compensated by Group OBS
from the blockwise empirical Fisher of the client's personal data (:func:`jaxapex.obs.unlearn`).

The proof of this step is the chunk circuit of :mod:`circuit_compiler.lowering` at level F (Fisher-bound):
its rows are *measured* from the compiled circuit by :mod:`jaxapex.baselines.proof_cost`, not modelled.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax

from jaxapex.baselines.common import ChunkCircuitWork, Stopwatch, UnlearningInputs, as_inputs, config_dict
from jaxapex.data import as_batches, take
from jaxapex.layers import get_matrix, path_name
from jaxapex.obs import unlearn as obs_unlearn


@dataclasses.dataclass(frozen=True, kw_only=True)
class ZkApexConfig:
    """``block_size`` B and ``damp`` of the Fisher blocks; ``fisher_examples`` personal examples drawn at
    random with ``seed`` (``None``: all, in order); ``batch_size`` examples per gradient pass; the proof
    layout (``level``, ``lanes``, ``blocks_per_chunk``) prices the circuit."""

    block_size: int = 16
    damp: float = 1e-6
    fisher_examples: int | None = None
    seed: int = 0
    batch_size: int = 64
    method: str = "auto"
    level: str = "F"
    lanes: int = 16
    blocks_per_chunk: int = 64


def _example_loss(batch_loss):
    def loss(params, example):
        return batch_loss(params, jax.tree.map(lambda a: a[None], example))

    return loss


def proof_work(params: Any, masks: Any, config: ZkApexConfig) -> tuple[ChunkCircuitWork]:
    """The chunk circuits that prove the update of the masked layers."""
    shapes = tuple(tuple(int(s) for s in get_matrix(params, tuple(p)).shape) for p in masks)
    return (ChunkCircuitWork("obs", config.level, shapes, config.block_size, config.lanes, config.blocks_per_chunk),)


def unlearn(run_or_inputs: Any, *, config: ZkApexConfig = ZkApexConfig()) -> tuple[Any, dict]:
    """Mask + Group OBS on the personal data. ``info["layers"]`` is :func:`jaxapex.obs.unlearn`'s per-layer
    report (keyed by layer name, without the inverse blocks)."""
    inputs: UnlearningInputs = as_inputs(run_or_inputs)
    inputs.require("masks", "personal", method="zk_apex_obs")
    batches = as_batches(take(inputs.personal, config.fisher_examples, seed=config.seed), config.batch_size)
    with Stopwatch() as sw:
        new_params, layers = obs_unlearn(
            inputs.params,
            inputs.masks,
            _example_loss(inputs.personal_loss),
            batches,
            block_size=config.block_size,
            damp=config.damp,
            method=config.method,
        )
        Stopwatch.ready(new_params)
    info = {
        "method": "zk_apex_obs",
        "wall_s": sw.seconds,
        "config": config_dict(config),
        "layers": {
            path_name(p): {k: v for k, v in layer.items() if k not in ("G", "block_indices")}
            for p, layer in layers.items()
        },
        "work": proof_work(inputs.params, inputs.masks, config),
    }
    return new_params, info
