"""Group Optimal Brain Surgeon: remove the masked weights of each block jointly and move the others to absorb
the removal (DESIGN.md section 3).

For block ``b`` with parameters ``theta`` (B,), inverse Fisher ``G = F^{-1}`` (B, B) and masked set ``S``:

    y = (G[S, S])^{-1} theta_S,    delta = -G[:, S] y,    theta' = theta + delta,  then theta'_S = 0 exactly.

``delta`` minimizes the quadratic loss increase ``1/2 delta^T F delta`` subject to ``delta_S = -theta_S``; the
minimum is ``1/2 theta_S^T y``.

**Forget-aware** (``directions`` U_b (r, B) per block): the compensation must also not move the block along
r public directions that carry the forget set's inputs, ``U_b delta = 0``, where U_b acts on the unmasked
coordinates only (``U_b`` is used as ``U_b * (1 - m_b)``: the removal itself is the forgetting and stays).
With ``C = [E_S; U_b]`` and ``c = [theta_S; 0]`` the minimum of ``1/2 delta^T F delta`` subject to
``C delta = -c`` is

    lambda = (C G C^T)^{-1} c,    delta = -G C^T lambda,    i.e. delta = -G v with v = E_S^T y + U_b^T mu,

closed form per block again; ``r = 0`` is the plain update above. A direction that vanishes off the mask
constrains nothing and is dropped (padding); directions that are linearly dependent off the mask, or more
than ``B - |S|`` of them, make ``C G C^T`` singular and raise. Blocks are independent: the solve is ``vmap``-ed over blocks with ``|S|``
padded to a common ``k``, padded slots carrying an identity row/column in ``G[S, S]`` and a zero ``theta``,
so they get ``y = 0`` and do not touch the real slots. The small ``k x k`` systems are solved in float64.

Two routes to the same update:

- :func:`group_obs` from dense inverse blocks ``G`` (what the proof binds at level F);
- :func:`group_obs_lowrank` from the gradient factor ``V`` (m, B) of ``F = damp I + V^T V`` when the client has
  fewer examples than ``B``: by Woodbury, ``damp * G = I - V^T (damp I + V V^T)^{-1} V``, and the ``damp``
  cancels in ``delta``. Cost per block O(m^2 B) instead of O(B^3), memory ``m * B`` instead of ``B^2``.

:func:`unlearn` runs Fisher -> OBS for every masked layer of a model, block group by block group, on the
blocks the mask touches only (the others have ``delta = 0``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from circuit_compiler.masks import as_bool_mask
from jaxapex.fisher import (
    DEFAULT_MEMORY_BUDGET,
    block_gradients_fn,
    blocks_per_group_for,
    fisher_step,
    invert_blocks,
    outer_product_sum,
    pad_group,
    split_groups,
)
from jaxapex.layers import (
    Path,
    check_block_size,
    from_blocks,
    get_matrix,
    path_name,
    set_matrix,
    to_blocks,
    touched_blocks,
)
from jaxapex.layers import block_label as _label
from jaxapex.layers import layer_prefix as _where
from jaxapex.parallel import batch_mesh, device_batches, on_one_device, reiterable, replicate

PyTree = Any

SLOT_MULTIPLE = 8  # |S| is padded up to a multiple of this, so masks of similar density share a compilation
BLOCK_CHUNK = 64  # blocks per jitted call: bounds the float64 intermediates; larger chunks measured slower on CPU


def padded_slots(mask_blocks: np.ndarray) -> int:
    """Common padded ``|S|``: the largest masked count of any block, rounded up to ``SLOT_MULTIPLE`` (<= B)."""
    largest = int(mask_blocks.sum(axis=1).max(initial=0))
    return min(mask_blocks.shape[1], -(-largest // SLOT_MULTIPLE) * SLOT_MULTIPLE)


def _masked_slots(mask, k):
    """Indices of the masked entries padded to ``k`` slots, and which slots are real."""
    idx = jnp.nonzero(mask, size=k, fill_value=0)[0]
    valid = jnp.arange(k) < jnp.sum(mask)
    return idx, valid


def _apply(theta, mask, delta_free, ok):
    """Outputs in ``theta``'s dtype: ``delta_S = -theta_S`` exactly, ``theta' = theta + delta`` with
    ``theta'_S = 0`` exactly. ``ok`` is False where inputs or the solve were not finite."""
    ok = ok & jnp.all(jnp.isfinite(delta_free)) & jnp.all(jnp.isfinite(theta))
    delta = jnp.where(mask, -theta.astype(jnp.float64), delta_free).astype(theta.dtype)
    theta_new = jnp.where(mask, jnp.zeros_like(theta), theta + delta)
    return theta_new, delta, ok


def _spd_solve(system, rhs):
    factor = jnp.linalg.cholesky(system)
    return jax.scipy.linalg.cho_solve((factor, True), rhs)


def _dense_block(theta, G, mask, *, k):
    """One block from ``G`` (B, B): ``y = G_SS^{-1} theta_S``, ``delta = -G[:, S] y``."""
    idx, valid = _masked_slots(mask, k)
    cols = jnp.where(valid[None, :], G[:, idx].astype(jnp.float64), 0.0)  # G[:, S], padded columns zero
    pair = valid[:, None] & valid[None, :]
    system = jnp.where(pair, cols[idx, :], jnp.eye(k, dtype=jnp.float64))  # G[S, S], identity on padding
    theta_S = jnp.where(valid, theta[idx].astype(jnp.float64), 0.0)
    y = _spd_solve(system, theta_S)
    return _apply(theta, mask, -(cols @ y), jnp.bool_(True))


def _lowrank_block(theta, V, mask, *, k, damp):
    """One block from ``F = damp I + V^T V`` with ``V`` (m, B). With ``K = damp I + V V^T`` and ``Z = K^{-1} V_S``,
    ``damp G[S, S] = I - V_S^T Z`` and ``damp G[:, S] y = E_S y - V^T (Z y)``: O(m^2 B) per block, and
    ``G[:, S]`` (B, k) is never formed."""
    idx, valid = _masked_slots(mask, k)
    V = V.astype(jnp.float64)
    kernel = damp * jnp.eye(V.shape[0], dtype=jnp.float64) + V @ V.T  # (m, m)
    V_S = jnp.where(valid[None, :], V[:, idx], 0.0)  # (m, k)
    Z = _spd_solve(kernel, V_S)
    pair = valid[:, None] & valid[None, :]
    system = jnp.where(pair, jnp.eye(k, dtype=jnp.float64) - V_S.T @ Z, jnp.eye(k, dtype=jnp.float64))
    theta_S = jnp.where(valid, theta[idx].astype(jnp.float64), 0.0)
    y = _spd_solve(system, theta_S)
    scattered = jnp.zeros(V.shape[1], jnp.float64).at[idx].add(jnp.where(valid, y, 0.0))  # E_S y
    return _apply(theta, mask, -(scattered - V.T @ (Z @ y)), jnp.bool_(True))


def _constraint_columns(mask, directions, *, k):
    """``C^T`` (B, k + r): the unit vectors of the masked slots (zero columns on padding) and the forget
    directions restricted to the unmasked coordinates; and which of the k + r columns are real."""
    idx, valid = _masked_slots(mask, k)
    B = mask.shape[0]
    unit = (jnp.arange(B)[:, None] == idx[None, :]) & valid[None, :]  # (B, k)
    off_mask = jnp.where(mask[None, :], 0.0, directions.astype(jnp.float64))  # (r, B)
    real = jnp.concatenate([valid, jnp.any(off_mask != 0.0, axis=1)])
    return jnp.concatenate([unit.astype(jnp.float64), off_mask.T], axis=1), real, idx, valid


def _forget_block(theta, mask, directions, times_G, *, k):
    """One block of the forget-aware update: ``lambda = (C G C^T)^{-1} [theta_S; 0]``, ``delta = -G C^T lambda``.
    ``times_G(M)`` is ``G M`` up to a positive factor (which cancels)."""
    Ct, real, idx, valid = _constraint_columns(mask, directions, k=k)
    GCt = times_G(Ct)  # (B, k + r)
    n = Ct.shape[1]
    pair = real[:, None] & real[None, :]
    system = jnp.where(pair, Ct.T @ GCt, jnp.eye(n, dtype=jnp.float64))
    theta_S = jnp.where(valid, theta[idx].astype(jnp.float64), 0.0)
    rhs = jnp.concatenate([theta_S, jnp.zeros(n - k, jnp.float64)])
    lam = _spd_solve(system, rhs)
    return _apply(theta, mask, -(GCt @ jnp.where(real, lam, 0.0)), jnp.bool_(True))


def _forget_dense_block(theta, G, mask, directions, *, k):
    return _forget_block(theta, mask, directions, lambda M: G.astype(jnp.float64) @ M, k=k)


def _forget_lowrank_block(theta, V, mask, directions, *, k, damp):
    """``damp G M = M - V^T (damp I + V V^T)^{-1} V M`` (Woodbury), O(m^2 B + m B (k + r)) per block."""
    V = V.astype(jnp.float64)
    kernel = damp * jnp.eye(V.shape[0], dtype=jnp.float64) + V @ V.T
    return _forget_block(theta, mask, directions, lambda M: M - V.T @ _spd_solve(kernel, V @ M), k=k)


@partial(jax.jit, static_argnames=("k",))
def _forget_obs_dense(theta, G, mask, directions, *, k):
    return jax.vmap(partial(_forget_dense_block, k=k))(theta, G, mask, directions)


@partial(jax.jit, static_argnames=("k",))
def _forget_obs_lowrank(theta, V, mask, directions, *, damp, k):
    return jax.vmap(partial(_forget_lowrank_block, k=k, damp=damp))(theta, V, mask, directions)


@partial(jax.jit, static_argnames=("k",))
def _group_obs_dense(theta, G, mask, *, k):
    return jax.vmap(partial(_dense_block, k=k))(theta, G, mask)


@partial(jax.jit, static_argnames=("k",))
def _group_obs_lowrank(theta, V, mask, damp, *, k):
    return jax.vmap(partial(_lowrank_block, k=k, damp=damp))(theta, V, mask)


def _in_chunks(solve, arrays, chunk):
    """Run ``solve`` on ``chunk`` blocks at a time (the last chunk padded by repeating its last block, so one
    compilation serves every chunk) and concatenate; bounds the float64 intermediates to O(chunk * B * k)."""
    n = arrays[0].shape[0]
    if n <= chunk:
        return solve(*arrays)
    pieces = []
    for start in range(0, n, chunk):
        part = [a[start : start + chunk] for a in arrays]
        real = part[0].shape[0]
        if real < chunk:
            part = [jnp.concatenate([p, jnp.repeat(p[-1:], chunk - real, axis=0)]) for p in part]
        pieces.append([out[:real] for out in solve(*part)])
    return tuple(jnp.concatenate(outs) for outs in zip(*pieces))


def _check_theta_mask(theta_blocks, mask_blocks, *, path) -> np.ndarray:
    if theta_blocks.ndim != 2:
        raise ValueError(f"{_where(path)}theta_blocks must have shape (n_blocks, B), got {tuple(theta_blocks.shape)}")
    mask = np.asarray(mask_blocks)
    if mask.shape != tuple(theta_blocks.shape):
        raise ValueError(f"{_where(path)}mask blocks have shape {mask.shape}, theta blocks {tuple(theta_blocks.shape)}")
    return as_bool_mask(mask, where=_where(path))


def _check_directions(directions, shape, *, path) -> np.ndarray | None:
    """``directions`` (n, r, B) as float64, or None when absent or r = 0 (the plain update)."""
    if directions is None:
        return None
    directions = np.asarray(directions, dtype=np.float64)
    n, B = shape
    if directions.ndim != 3 or directions.shape[0] != n or directions.shape[2] != B:
        raise ValueError(
            f"{_where(path)}forget directions must have shape (n_blocks, r, B) = ({n}, r, {B}), got {directions.shape}"
        )
    if not np.isfinite(directions).all():
        raise ValueError(f"{_where(path)}forget directions hold NaN or inf")
    return directions if directions.shape[1] else None


def _finish(theta_new, delta, ok, *, path, block_indices, what):
    ok = np.asarray(ok)
    if not ok.all():
        bad = int(np.flatnonzero(~ok)[0])
        raise ValueError(
            f"{_where(path)}block {_label(bad, block_indices)}: the OBS solve gave non-finite values "
            f"({what}); check for NaN inputs or raise damp"
        )
    return theta_new, delta


def group_obs(
    theta_blocks,
    G,
    mask_blocks,
    *,
    path: Path | None = None,
    block_indices: Sequence[int] | None = None,
    chunk: int = BLOCK_CHUNK,
    directions=None,
):
    """Joint OBS update of every block from dense inverse-Fisher blocks.

    ``theta_blocks`` (n, B), ``G`` (n, B, B) symmetric positive definite, ``mask_blocks`` (n, B) bool.
    Returns ``(theta_new, delta)``, both (n, B) in ``theta``'s dtype, with ``theta_new[mask] == 0`` exactly,
    ``delta[mask] == -theta[mask]`` and ``theta_new == theta + delta`` (float arithmetic in that dtype).
    ``path`` and ``block_indices`` (the blocks' indices in their layer) only label errors: shape mismatch,
    or a block whose ``G[S, S]`` is not positive definite or whose inputs hold NaN.
    ``directions`` (n, r, B): the forget-aware update (module docstring), ``U_b delta = 0`` off the mask.
    """
    mask = _check_theta_mask(theta_blocks, mask_blocks, path=path)
    n, B = mask.shape
    if tuple(G.shape) != (n, B, B):
        raise ValueError(f"{_where(path)}G must have shape (n_blocks, B, B) = {(n, B, B)}, got {tuple(G.shape)}")
    k = padded_slots(mask)
    theta_blocks = jnp.asarray(theta_blocks)
    if k == 0:
        return theta_blocks, jnp.zeros_like(theta_blocks)
    directions = _check_directions(directions, (n, B), path=path)
    with jax.enable_x64(True):
        arrays = on_one_device((theta_blocks, jnp.asarray(G), jnp.asarray(mask)))  # see on_one_device
        if directions is None:
            theta_new, delta, ok = _in_chunks(partial(_group_obs_dense, k=k), arrays, chunk)
        else:
            arrays += (on_one_device(jnp.asarray(directions)),)
            theta_new, delta, ok = _in_chunks(partial(_forget_obs_dense, k=k), arrays, chunk)
    labels = None if block_indices is None else np.asarray(block_indices)
    what = (
        "G[S, S] not positive definite?"
        if directions is None
        else "C G C^T singular: forget directions dependent off the mask, or more than B - |S| of them?"
    )
    return _finish(theta_new, delta, ok, path=path, block_indices=labels, what=what)


def group_obs_lowrank(
    theta_blocks,
    V,
    mask_blocks,
    *,
    damp: float,
    path: Path | None = None,
    block_indices: Sequence[int] | None = None,
    chunk: int = BLOCK_CHUNK,
    directions=None,
):
    """Joint OBS update with ``F_b = damp * I + V_b^T V_b`` given by its factor ``V`` (n, m, B).

    For the empirical Fisher, ``V_b`` is the (m, B) matrix of per-example gradients of block ``b`` divided by
    ``sqrt(m)``. Same result and guarantees as :func:`group_obs` with ``G = F^{-1}``, without forming ``G``.
    """
    mask = _check_theta_mask(theta_blocks, mask_blocks, path=path)
    n, B = mask.shape
    if V.ndim != 3 or V.shape[0] != n or V.shape[2] != B:
        raise ValueError(f"{_where(path)}V must have shape (n_blocks, m, B) = ({n}, m, {B}), got {tuple(V.shape)}")
    if not damp > 0:
        raise ValueError(f"{_where(path)}damp must be positive, got {damp}")
    k = padded_slots(mask)
    theta_blocks = jnp.asarray(theta_blocks)
    if k == 0:
        return theta_blocks, jnp.zeros_like(theta_blocks)
    directions = _check_directions(directions, (n, B), path=path)
    with jax.enable_x64(True):
        arrays = on_one_device((theta_blocks, jnp.asarray(V), jnp.asarray(mask)))  # see on_one_device
        if directions is None:
            solve = partial(_group_obs_lowrank, damp=jnp.float64(damp), k=k)
        else:
            arrays += (on_one_device(jnp.asarray(directions)),)
            solve = partial(_forget_obs_lowrank, damp=jnp.float64(damp), k=k)
        theta_new, delta, ok = _in_chunks(solve, arrays, chunk)
    labels = None if block_indices is None else np.asarray(block_indices)
    what = (
        "NaN gradients or damp too small?"
        if directions is None
        else "NaN gradients, or forget directions dependent off the mask / more than B - |S| of them?"
    )
    return _finish(theta_new, delta, ok, path=path, block_indices=labels, what=what)


def check_mask(W, mask, *, path: Path | None = None) -> np.ndarray:
    """``mask`` as a bool array after checking it has ``W``'s shape (out, in)."""
    mask = np.asarray(mask)
    if mask.shape != tuple(W.shape):
        raise ValueError(f"{_where(path)}mask has shape {mask.shape}, the matrix W (out, in) has {tuple(W.shape)}")
    return as_bool_mask(mask, where=_where(path))


def obs_update(
    W,
    G,
    mask,
    *,
    block_size: int,
    block_indices: Sequence[int] | None = None,
    path: Path | None = None,
):
    """OBS update of a whole matrix ``W`` (out, in) with row-major blocks of ``block_size``.

    ``G`` holds the inverse Fisher of every block, (out*in/B, B, B), or, with ``block_indices`` (t,), of those
    blocks only, (t, B, B); the mask must then touch no other block. Returns ``(W_new, delta)`` (out, in).
    """
    mask = check_mask(W, mask, path=path)
    theta = to_blocks(jnp.asarray(W), block_size, path=path)
    mask_blocks = to_blocks(mask, block_size, path=path)
    if block_indices is None:
        theta_new, delta = group_obs(theta, G, mask_blocks, path=path)
        return from_blocks(theta_new, W.shape), from_blocks(delta, W.shape)
    indices = np.asarray(block_indices)
    outside = np.setdiff1d(touched_blocks(mask, block_size), indices)
    if outside.size:
        raise ValueError(
            f"{_where(path)}the mask touches blocks {outside[:8].tolist()} that have no G block "
            f"(G given for {indices.size} blocks)"
        )
    sub_new, sub_delta = group_obs(theta[indices], G, mask_blocks[indices], path=path, block_indices=indices)
    theta_new = theta.at[indices].set(sub_new)
    delta = jnp.zeros_like(theta).at[indices].set(sub_delta)
    return from_blocks(theta_new, W.shape), from_blocks(delta, W.shape)


@jax.jit
def quadratic_increase_dense(F, delta):
    """``1/2 delta_b^T F_b delta_b`` per block: (n, B, B), (n, B) -> (n,)."""
    F_delta = jnp.einsum("nij,nj->ni", F, delta, precision=jax.lax.Precision.HIGHEST)
    return 0.5 * jnp.sum(delta * F_delta, axis=1)


@jax.jit
def quadratic_increase_lowrank(V, delta, damp):
    """``1/2 delta_b^T (damp I + V_b^T V_b) delta_b`` per block: (n, m, B), (n, B) -> (n,)."""
    V_delta = jnp.einsum("nmj,nj->nm", V, delta, precision=jax.lax.Precision.HIGHEST)
    return 0.5 * (damp * jnp.sum(delta * delta, axis=1) + jnp.sum(V_delta * V_delta, axis=1))


def _group_statistics(
    step_dense,
    block_gradients,
    params,
    batches,
    mesh,
    block_idx,
    *,
    n_real_blocks,
    block_size,
    method,
    max_examples,
    microbatch_size,
):
    """One pass over the data for one group: ``("lowrank", V (g, m, B), m)`` while fewer than ``B`` examples
    were seen (``method="auto"``) or always (``"lowrank"``), else ``("dense", F without damp (g, B, B), m)``."""
    rows, total, n_examples = [], None, 0
    for batch, weights, n_real in device_batches(
        batches, mesh, max_examples=max_examples, microbatch_size=microbatch_size
    ):
        n_examples += n_real
        if total is None and method != "dense":
            rows.append(block_gradients(params, batch, block_idx)[:n_real])
            if method == "auto" and n_examples >= block_size:  # the factor would outgrow the dense block
                total = sum(outer_product_sum(r, jnp.ones(r.shape[0], r.dtype)) for r in rows)
                rows = []
            continue
        if total is None:
            total = jnp.zeros((len(block_idx), block_size, block_size), jnp.float32)
        total = step_dense(total, params, batch, weights, block_idx)
    if n_examples == 0:
        raise ValueError("the batches yielded no examples")
    if total is None:
        U = jnp.concatenate(rows, axis=0)[:, :n_real_blocks]  # (m, g, B)
        return "lowrank", jnp.transpose(U, (1, 0, 2)) / np.sqrt(n_examples), n_examples
    return "dense", total[:n_real_blocks] / n_examples, n_examples


def unlearn(
    params: PyTree,
    masks: Mapping,
    loss_fn,
    batches: Iterable[PyTree],
    *,
    block_size: int,
    damp: float = 1e-6,
    max_examples: int | None = None,
    method: str = "auto",
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET,
    blocks_per_group: int | None = None,
    return_inverse: bool = False,
    mesh=None,
    microbatch_size: int | None = None,
    directions: Mapping | None = None,
) -> tuple[PyTree, dict]:
    """Client-side unlearning: for each ``path -> mask (out, in)``, the blockwise Fisher of the client's data
    (``loss_fn(params, example)`` per example) on the blocks the mask touches, then the Group OBS update.

    ``method``: ``"dense"`` (F -> G = F^{-1} -> :func:`group_obs`), ``"lowrank"`` (:func:`group_obs_lowrank`
    on the gradient factor) or ``"auto"`` (low rank while the client has fewer examples than ``B``, else
    dense). ``return_inverse=True`` forces dense and returns ``G`` of the touched blocks in ``info``.
    Blocks are processed in groups sized by ``memory_budget_bytes`` (or ``blocks_per_group``), one pass over
    the data per group; a one-shot iterator of batches is buffered (inputs only) when several passes are needed.

    ``directions`` (optional) maps a path to its forget directions (t, r, B), one (r, B) per touched block in
    the order of ``touched_blocks(mask)``: the forget-aware update (module docstring) on that layer.

    Returns ``(new_params, info)`` with ``info[path]`` a dict: ``n_examples``, ``n_blocks``, ``touched_blocks``,
    ``n_masked``, ``max_masked_per_block``, ``method``, ``passes``, ``quadratic_increase`` (``1/2 sum_b
    delta_b^T F_b delta_b``), ``delta_norm``, and with ``return_inverse`` also ``block_indices`` and ``G``.
    """
    if method not in ("auto", "dense", "lowrank"):
        raise ValueError(f"method must be 'auto', 'dense' or 'lowrank', got {method!r}")
    if return_inverse and method == "lowrank":
        raise ValueError("return_inverse needs the dense inverse: use method='dense' or 'auto'")
    if return_inverse:
        method = "dense"
    if not damp > 0:
        raise ValueError(f"damp must be positive, got {damp}")
    per_group = blocks_per_group or blocks_per_group_for(block_size, memory_budget_bytes)

    plans = {}
    for path, mask in masks.items():
        path = tuple(path)
        W = get_matrix(params, path)
        mask = check_mask(W, mask, path=path)
        check_block_size(W.shape, block_size, path=path)
        touched = touched_blocks(mask, block_size, path=path)
        layer_directions = None if directions is None else directions.get(path)
        if layer_directions is not None:
            layer_directions = np.asarray(layer_directions)
            if layer_directions.ndim != 3 or layer_directions.shape[::2] != (touched.size, block_size):
                raise ValueError(
                    f"{_where(path)}forget directions must have shape (touched blocks, r, B) = "
                    f"({touched.size}, r, {block_size}), got {layer_directions.shape}"
                )
        plans[path] = (mask, touched, layer_directions)
    if directions is not None:
        unknown = {tuple(p) for p in directions} - set(plans)
        if unknown:
            raise ValueError(f"forget directions for layers without a mask: {sorted(map(path_name, unknown))}")
    passes = sum(len(split_groups(touched, per_group)) for _, touched, _ in plans.values())
    batches = reiterable(batches, passes=passes, max_examples=max_examples)

    mesh = batch_mesh() if mesh is None else mesh
    device_params = replicate(params, mesh)
    new_params, info = params, {}
    for path, (mask, touched, layer_directions) in plans.items():
        W = get_matrix(params, path)
        mask_blocks = to_blocks(mask, block_size, path=path)
        theta = np.array(to_blocks(W, block_size, path=path), dtype=np.float32)
        layer = dict(
            n_blocks=theta.shape[0],
            touched_blocks=int(touched.size),
            n_masked=int(mask.sum()),
            max_masked_per_block=int(mask_blocks.sum(axis=1).max(initial=0)),
            method=None,
            passes=0,
            n_examples=0,
            quadratic_increase=0.0,
        )
        inverses = []
        block_gradients = jax.jit(block_gradients_fn(loss_fn, path, block_size))
        step_dense = fisher_step(loss_fn, path, block_size)
        groups = split_groups(touched, per_group)
        for position, group in zip(np.cumsum([0] + [len(g) for g in groups[:-1]]), groups):
            group_directions = None if layer_directions is None else layer_directions[position : position + len(group)]
            block_idx = replicate(jnp.asarray(pad_group(group, len(groups[0]))), mesh)
            kind, stats, n_examples = _group_statistics(
                step_dense,
                block_gradients,
                device_params,
                batches,
                mesh,
                block_idx,
                n_real_blocks=len(group),
                block_size=block_size,
                method=method,
                max_examples=max_examples,
                microbatch_size=microbatch_size,
            )
            stats = on_one_device(stats)  # off the batch mesh: the solve and its diagnostics run on one device
            if kind == "dense":
                F = stats + damp * jnp.eye(block_size, dtype=jnp.float32)
                G = invert_blocks(F, path=path, block_indices=group)
                theta_new, delta = group_obs(
                    theta[group], G, mask_blocks[group], path=path, block_indices=group, directions=group_directions
                )
                increase = quadratic_increase_dense(F, delta)
                if return_inverse:
                    inverses.append(np.asarray(G))
            else:
                theta_new, delta = group_obs_lowrank(
                    theta[group],
                    stats,
                    mask_blocks[group],
                    damp=damp,
                    path=path,
                    block_indices=group,
                    directions=group_directions,
                )
                increase = quadratic_increase_lowrank(stats, delta, damp)
            theta[group] = np.asarray(theta_new)
            layer.update(
                method=kind if layer["method"] in (None, kind) else "mixed",
                n_examples=n_examples,
                passes=layer["passes"] + 1,
                quadratic_increase=layer["quadratic_increase"] + float(jnp.sum(increase)),
            )
        W_new = from_blocks(theta, W.shape)
        layer["delta_norm"] = float(np.linalg.norm(W_new - np.asarray(W, np.float32)))
        if return_inverse:
            layer["block_indices"] = touched
            layer["G"] = np.concatenate(inverses) if inverses else np.zeros((0, block_size, block_size), np.float32)
        new_params = set_matrix(new_params, path, W_new)
        info[path] = layer
    return new_params, info
