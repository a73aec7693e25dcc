"""Naive masking: zero the provider's masked weights of the personalized model, and nothing else.

This is step 1 of ZK-APEX without the client's compensation (DESIGN.md section 3): ``θ'_S = 0`` for every
masked index ``S`` of every target matrix ``W = kernel.T`` (out, in), every other weight unchanged. Its proof
is the removal-only statement (level R of the chunk circuit): θ'_q = 0 on the mask and θ' = θ elsewhere.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
import numpy as np

from jaxapex.baselines.common import ChunkCircuitWork, Stopwatch, UnlearningInputs, as_inputs, config_dict
from jaxapex.layers import get_matrix, path_name, set_matrix
from jaxapex.obs import check_mask


@dataclasses.dataclass(frozen=True, kw_only=True)
class NaiveMaskConfig:
    """Only the proof layout matters here (it prices the removal circuit): ``block_size`` B, weights per
    chunk ``blocks_per_chunk * B``; ``lanes`` is unused at level R."""

    block_size: int = 16
    lanes: int = 16
    blocks_per_chunk: int = 64


def apply_masks(params: Any, masks: dict) -> Any:
    """New params with ``W[mask] = 0`` for each ``path -> mask (out, in)``; the input is not modified."""
    for path, mask in masks.items():
        path = tuple(path)
        W = get_matrix(params, path)
        mask = check_mask(W, mask, path=path)
        params = set_matrix(params, path, jnp.where(jnp.asarray(mask), jnp.zeros((), W.dtype), W))
    return params


def unlearn(run_or_inputs: Any, *, config: NaiveMaskConfig = NaiveMaskConfig()) -> tuple[Any, dict]:
    """Zero the masked weights. ``info``: ``n_masked`` per layer name and in total, and the removal work."""
    inputs: UnlearningInputs = as_inputs(run_or_inputs)
    inputs.require("masks", method="naive_mask")
    with Stopwatch() as sw:
        new_params = Stopwatch.ready(apply_masks(inputs.params, inputs.masks))
    masks = {tuple(p): np.asarray(m, bool) for p, m in inputs.masks.items()}
    shapes = tuple(tuple(int(s) for s in get_matrix(inputs.params, p).shape) for p in masks)
    info = {
        "method": "naive_mask",
        "wall_s": sw.seconds,
        "config": config_dict(config),
        "n_masked": {path_name(p): int(m.sum()) for p, m in masks.items()},
        "n_masked_total": int(sum(int(m.sum()) for m in masks.values())),
        "work": (ChunkCircuitWork("removal", "R", shapes, config.block_size, config.lanes, config.blocks_per_chunk),),
    }
    return new_params, info
