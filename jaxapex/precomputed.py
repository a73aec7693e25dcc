"""Fisher → Group OBS from precomputed block statistics, with no loss function and no data pass.

:func:`jaxapex.obs.unlearn` computes the client's statistics from a loss and its data. When they exist
already — per-example gradients stored once and reused for many block sizes (the block-size study), or
Fisher blocks a client committed at personalization time — :func:`unlearn_from_statistics` runs the same
solve on them:

- ``gradients[path]``: (m, out, in) per-example gradients of the target matrix ``W`` (matrix orientation,
  ``W = kernel.T``, as :func:`jaxapex.layers.example_matrix_gradients` returns them). The touched blocks'
  Fisher is ``F_b = damp * I + (1/m) sum_i g_ib g_ib^T``; ``method="auto"`` solves it from the low-rank
  factor while ``m < B`` and densely otherwise, exactly as :func:`jaxapex.obs.unlearn` decides.
- ``fisher[path]``: ``(block_indices, F)``, Fisher blocks (n, B, B) of the listed blocks, damping included;
  they must cover every block the mask touches. Inverted with :func:`jaxapex.fisher.invert_blocks`.

Blocks are processed in groups sized by ``memory_budget_bytes`` as in :func:`jaxapex.obs.unlearn`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxapex import layers, obs
from jaxapex.fisher import DEFAULT_MEMORY_BUDGET, blocks_per_group_for, invert_blocks, split_groups
from jaxapex.layers import Path, path_name

PyTree = Any


def block_gradients(grads, block_size: int, block_indices: Sequence[int]) -> np.ndarray:
    """(m, out, in) per-example matrix gradients → (m, g, B): their entries in the blocks ``block_indices``."""
    grads = np.asarray(grads, np.float32)
    m = grads.shape[0]
    return grads.reshape(m, -1, block_size)[:, np.asarray(block_indices, np.int64)]


@jax.jit
def _fisher_of(block_grads, damp):
    m, _, B = block_grads.shape
    outer = jnp.einsum("mgi,mgj->gij", block_grads, block_grads, precision=jax.lax.Precision.HIGHEST)
    return outer / m + damp * jnp.eye(B, dtype=jnp.float32)


def fisher_from_gradients(grads, block_size: int, block_indices: Sequence[int], *, damp: float) -> jax.Array:
    """Fisher blocks (g, B, B) float32 of ``block_indices`` from (m, out, in) per-example gradients."""
    return _fisher_of(jnp.asarray(block_gradients(grads, block_size, block_indices)), jnp.float32(damp))


def unlearn_from_statistics(
    params: PyTree,
    masks: Mapping,
    *,
    block_size: int,
    gradients: Mapping | None = None,
    fisher: Mapping | None = None,
    damp: float = 1e-6,
    method: str = "auto",
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET,
) -> tuple[PyTree, dict]:
    """Group OBS of every ``path -> mask (out, in)`` from precomputed statistics (module docstring).

    Exactly one of ``gradients`` / ``fisher`` must cover each masked path. ``method``: ``"auto"``,
    ``"dense"`` or ``"lowrank"`` (gradients only). Returns ``(new_params, info)`` with the same
    ``info[path]`` entries as :func:`jaxapex.obs.unlearn` (``passes`` is 0: no data was read).
    """
    if method not in ("auto", "dense", "lowrank"):
        raise ValueError(f"method must be 'auto', 'dense' or 'lowrank', got {method!r}")
    if not damp > 0:
        raise ValueError(f"damp must be positive, got {damp}")
    gradients = {tuple(p): g for p, g in (gradients or {}).items()}
    fisher = {tuple(p): f for p, f in (fisher or {}).items()}
    per_group = blocks_per_group_for(block_size, memory_budget_bytes)
    new_params, info = params, {}
    for path, mask in masks.items():
        path = tuple(path)
        if (path in gradients) == (path in fisher):
            raise ValueError(
                f"layer {path_name(path)!r}: give its statistics once, as gradients or as Fisher blocks "
                f"({'both' if path in gradients else 'neither'} given)"
            )
        W = layers.get_matrix(params, path)
        mask = obs.check_mask(W, mask, path=path)
        layers.check_block_size(W.shape, block_size, path=path)
        touched = layers.touched_blocks(mask, block_size, path=path)
        theta = np.array(layers.to_blocks(W, block_size, path=path), dtype=np.float32)
        mask_blocks = layers.to_blocks(mask, block_size, path=path)
        if path in gradients:
            solve, n_examples, kind = _gradient_solver(gradients[path], W.shape, path, block_size, damp, method)
        else:
            solve, n_examples, kind = _fisher_solver(fisher[path], path, block_size, touched), None, "dense"
        increase = 0.0
        for group in split_groups(touched, per_group):
            theta_new, delta, group_increase = solve(theta[group], mask_blocks[group], group)
            theta[group] = np.asarray(theta_new)
            increase += float(jnp.sum(group_increase))
        W_new = layers.from_blocks(theta, W.shape)
        info[path] = dict(
            n_blocks=theta.shape[0],
            touched_blocks=int(touched.size),
            n_masked=int(mask.sum()),
            max_masked_per_block=int(mask_blocks.sum(axis=1).max(initial=0)),
            method=kind if touched.size else None,
            passes=0,
            n_examples=n_examples,
            quadratic_increase=increase,
            delta_norm=float(np.linalg.norm(W_new - np.asarray(W, np.float32))),
        )
        new_params = layers.set_matrix(new_params, path, W_new)
    return new_params, info


def _gradient_solver(grads, shape, path: Path, block_size: int, damp: float, method: str):
    grads = np.asarray(grads)
    if grads.ndim != 3 or grads.shape[1:] != tuple(shape) or grads.shape[0] == 0:
        raise ValueError(
            f"layer {path_name(path)!r}: gradients must be (m > 0, {shape[0]}, {shape[1]}), got {grads.shape}"
        )
    m = grads.shape[0]
    kind = method if method != "auto" else ("lowrank" if m < block_size else "dense")

    def solve(theta, mask_blocks, group):
        if kind == "dense":
            F = fisher_from_gradients(grads, block_size, group, damp=damp)
            G = invert_blocks(F, path=path, block_indices=group)
            theta_new, delta = obs.group_obs(theta, G, mask_blocks, path=path, block_indices=group)
            return theta_new, delta, obs.quadratic_increase_dense(F, delta)
        V = jnp.asarray(np.transpose(block_gradients(grads, block_size, group), (1, 0, 2)) / np.sqrt(m))
        theta_new, delta = obs.group_obs_lowrank(theta, V, mask_blocks, damp=damp, path=path, block_indices=group)
        return theta_new, delta, obs.quadratic_increase_lowrank(V, delta, damp)

    return solve, m, kind


def _fisher_solver(blocks, path: Path, block_size: int, touched: np.ndarray):
    try:
        indices, F = blocks
    except (TypeError, ValueError):
        raise ValueError(f"layer {path_name(path)!r}: Fisher statistics must be (block_indices, F)") from None
    indices = np.asarray(indices, np.int64)
    F = np.asarray(F, np.float32)
    if F.ndim != 3 or F.shape[1:] != (block_size, block_size) or indices.shape != (F.shape[0],):
        raise ValueError(
            f"layer {path_name(path)!r}: Fisher blocks must be (n, {block_size}, {block_size}) with n "
            f"block indices, got F {F.shape} and {indices.shape} indices"
        )
    position = {int(b): i for i, b in enumerate(indices)}
    missing = [int(b) for b in touched if int(b) not in position]
    if missing:
        raise ValueError(f"layer {path_name(path)!r}: no Fisher block for touched blocks {missing[:8]}")

    def solve(theta, mask_blocks, group):
        F_group = jnp.asarray(F[[position[int(b)] for b in group]])
        G = invert_blocks(F_group, path=path, block_indices=group)
        theta_new, delta = obs.group_obs(theta, G, mask_blocks, path=path, block_indices=group)
        return theta_new, delta, obs.quadratic_increase_dense(F_group, delta)

    return solve
