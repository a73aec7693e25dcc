"""Blockwise empirical Fisher of one target matrix, its inverse, and the memory plan for large layers.

For a target matrix ``W`` (out, in) cut into row-major blocks of ``B`` entries (:mod:`jaxapex.layers`):

    F_b = damp * I + (1/m) * sum_i g_ib g_ib^T          (B, B) for every block b

over ``m`` per-example gradients ``g_i`` (``vmap(grad)`` of a per-example loss) restricted to block ``b``.
The client needs ``G_b = F_b^{-1}`` (:func:`invert_blocks`).

Memory. The full Fisher of a ViT-B fc1 (3072 x 768, B = 576) is 4096 blocks of 576 x 576 float32 = 5.4 GB,
and its inverse as much again. So the streaming API works on *groups* of blocks:

- :func:`fisher_block_groups` yields ``FisherGroup(block_indices, F, n_examples)`` for groups of at most
  ``blocks_per_group`` blocks (by default as many as fit ``memory_budget_bytes`` = 2 GiB with the Fisher and
  its inverse both held: ``blocks_per_group = budget // (8 B^2)``, 809 blocks for B = 576). Each group is one
  pass over the data, which recomputes the per-example gradients and keeps only that group's outer products.
  A one-shot iterator of batches is buffered (inputs only, never gradients) when several passes are needed.
- ``block_indices`` restricts the work to the blocks that matter, e.g. those touched by a mask
  (:func:`jaxapex.layers.touched_blocks`); untouched blocks have a zero OBS update and need no Fisher.
- :func:`blockwise_fisher_inverse` yields ``InverseGroup(block_indices, G, n_examples)`` group by group.

Peak memory of a pass ~ ``g * B^2 * 4`` (F of the group) + ``g * B^2 * 4`` (G) + an inversion workspace of
``chunk * B^2 * 8 * 3`` (float64, ``chunk`` = 64 blocks) + one micro-batch of per-example gradients
``b * out * in * 4`` and their group slice ``b * g * B * 4``. :func:`blockwise_fisher` returns all requested
blocks at once (``n * B^2 * 4`` bytes) and is meant for layers or block subsets that fit.

Precision. Outer products are summed in float32 at ``HIGHEST`` matmul precision (no TF32/bf16 passes on
accelerators). ``F_b`` is often badly conditioned (rank <= m, so ``damp`` sets its smallest eigenvalues), so
the Cholesky factorization and inverse run in float64 and ``G`` is returned in float32.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxapex.layers import Path, check_block_size, example_matrix_gradients, get_matrix, path_name
from jaxapex.layers import block_label as _block_label
from jaxapex.layers import layer_prefix as _where
from jaxapex.parallel import batch_mesh, device_batches, on_one_device, reiterable, replicate

PyTree = Any

DEFAULT_MEMORY_BUDGET = 2 << 30  # bytes for the Fisher blocks and inverses of one group
INVERT_CHUNK = 64  # blocks per float64 inversion step


class FisherGroup(NamedTuple):
    """Fisher blocks ``F`` (g, B, B) float32 of the blocks ``block_indices`` (g,), from ``n_examples``."""

    block_indices: np.ndarray
    F: jax.Array
    n_examples: int


class InverseGroup(NamedTuple):
    """Inverse Fisher blocks ``G`` (g, B, B) float32 of the blocks ``block_indices`` (g,)."""

    block_indices: np.ndarray
    G: jax.Array
    n_examples: int


def blocks_per_group_for(block_size: int, memory_budget_bytes: int) -> int:
    """How many (B, B) float32 blocks fit the budget with both the Fisher and its inverse held."""
    return max(1, int(memory_budget_bytes) // (8 * block_size * block_size))


def resolve_block_indices(n_blocks: int, block_indices: Sequence[int] | None, *, path: Path) -> np.ndarray:
    """Sorted unique block indices, all blocks by default; ``ValueError`` naming any out-of-range index."""
    if block_indices is None:
        return np.arange(n_blocks)
    indices = np.unique(np.asarray(block_indices, dtype=np.int64).ravel())
    bad = indices[(indices < 0) | (indices >= n_blocks)]
    if bad.size:
        raise ValueError(f"layer {path_name(path)!r}: block indices {bad[:8].tolist()} out of range [0, {n_blocks})")
    return indices


def split_groups(indices: np.ndarray, blocks_per_group: int) -> list[np.ndarray]:
    """Consecutive groups of at most ``blocks_per_group`` indices."""
    if blocks_per_group <= 0:
        raise ValueError(f"blocks_per_group must be positive, got {blocks_per_group}")
    return [indices[i : i + blocks_per_group] for i in range(0, len(indices), blocks_per_group)]


def block_gradients_fn(loss_fn, target_path: Path, block_size: int):
    """``f(params, batch, block_idx) -> (b, g, B)``: per-example gradients of the blocks ``block_idx`` (g,)."""

    def block_gradients(params, batch, block_idx):
        (grads,) = example_matrix_gradients(loss_fn, params, (target_path,), batch)
        blocks = grads.reshape(grads.shape[0], -1, block_size)
        return jnp.take(blocks, block_idx, axis=1)

    return block_gradients


def outer_product_sum(block_grads: jax.Array, weights: jax.Array) -> jax.Array:
    """``sum_i w_i g_ib g_ib^T`` for every block: (b, g, B) and (b,) -> (g, B, B), at full f32 precision."""
    grads = jnp.transpose(block_grads, (1, 0, 2))  # (g, b, B): the block axis leads the batched matmul
    return jnp.einsum("gbi,gbj->gij", grads * weights[None, :, None], grads, precision=jax.lax.Precision.HIGHEST)


def fisher_step(loss_fn, target_path: Path, block_size: int):
    """Jitted ``(total, params, batch, weights, block_idx) -> total + sum_i w_i g_ib g_ib^T`` for (g, B, B)."""
    block_gradients = block_gradients_fn(loss_fn, target_path, block_size)

    def step(total, params, batch, weights, block_idx):
        return total + outer_product_sum(block_gradients(params, batch, block_idx), weights)

    return jax.jit(step, donate_argnums=0)


def pad_group(group: np.ndarray, size: int) -> np.ndarray:
    """``group`` padded to ``size`` by repeating its last index, so every group reuses one compiled step."""
    return np.concatenate([group, np.full(size - len(group), group[-1], group.dtype)])


def fisher_block_groups(
    loss_fn,
    params: PyTree,
    target_path: Path,
    batches: Iterable[PyTree],
    *,
    block_size: int,
    damp: float = 1e-6,
    max_examples: int | None = None,
    block_indices: Sequence[int] | None = None,
    blocks_per_group: int | None = None,
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET,
    mesh=None,
    microbatch_size: int | None = None,
) -> Iterator[FisherGroup]:
    """Yield the Fisher blocks of ``target_path`` group by group, one pass over ``batches`` per group.

    ``loss_fn(params, example)`` is a per-example loss. Groups follow ``block_indices`` (default: all blocks)
    in increasing order. See the module docstring for the memory of a pass.
    """
    target_path = tuple(target_path)
    shape = get_matrix(params, target_path).shape
    n_blocks = check_block_size(shape, block_size, path=target_path)
    indices = resolve_block_indices(n_blocks, block_indices, path=target_path)
    if blocks_per_group is None:
        blocks_per_group = blocks_per_group_for(block_size, memory_budget_bytes)
    groups = split_groups(indices, min(blocks_per_group, max(1, len(indices))))
    batches = reiterable(batches, passes=len(groups), max_examples=max_examples)
    mesh = batch_mesh() if mesh is None else mesh
    params = replicate(params, mesh)
    step = fisher_step(loss_fn, target_path, block_size)
    group_size = len(groups[0]) if groups else 0
    for group in groups:
        block_idx = replicate(jnp.asarray(pad_group(group, group_size)), mesh)
        total = replicate(jnp.zeros((group_size, block_size, block_size), jnp.float32), mesh)
        n_examples = 0
        for batch, weights, n_real in device_batches(
            batches, mesh, max_examples=max_examples, microbatch_size=microbatch_size
        ):
            total = step(total, params, batch, weights, block_idx)
            n_examples += n_real
        if n_examples == 0:
            raise ValueError(f"layer {path_name(target_path)!r}: the batches yielded no examples")
        F = total[: len(group)] / n_examples + damp * jnp.eye(block_size, dtype=jnp.float32)
        yield FisherGroup(group, F, n_examples)


def blockwise_fisher(
    loss_fn,
    params: PyTree,
    target_path: Path,
    batches: Iterable[PyTree],
    *,
    block_size: int,
    damp: float = 1e-6,
    max_examples: int | None = None,
    block_indices: Sequence[int] | None = None,
    mesh=None,
    microbatch_size: int | None = None,
) -> jax.Array:
    """Fisher blocks ``F`` (n, B, B) float32 of ``target_path`` in one pass: all ``out*in/B`` blocks, or the
    ``n`` sorted ``block_indices``. Holds ``n * B^2 * 4`` bytes; use :func:`fisher_block_groups` for layers
    whose Fisher does not fit."""
    shape = get_matrix(params, tuple(target_path)).shape
    n_blocks = check_block_size(shape, block_size, path=tuple(target_path))
    n = len(resolve_block_indices(n_blocks, block_indices, path=tuple(target_path)))
    (group,) = fisher_block_groups(
        loss_fn,
        params,
        target_path,
        batches,
        block_size=block_size,
        damp=damp,
        max_examples=max_examples,
        block_indices=block_indices,
        blocks_per_group=n,
        mesh=mesh,
        microbatch_size=microbatch_size,
    )
    return group.F


def check_fisher_blocks(
    F,
    *,
    path: Path | None = None,
    block_indices: Sequence[int] | None = None,
    offset: int = 0,
    symmetry_rtol: float = 1e-5,
) -> np.ndarray:
    """``F`` (n, B, B) as float64 after checking finiteness and symmetry. Errors name the layer and the block:
    its entry in ``block_indices`` when given, else its position plus ``offset``."""
    F = np.asarray(F, dtype=np.float64)
    finite = np.isfinite(F).all(axis=(1, 2))
    if not finite.all():
        bad = offset + int(np.flatnonzero(~finite)[0])
        raise ValueError(f"{_where(path)}block {_block_label(bad, block_indices)} holds NaN or infinite values")
    scale = np.abs(F).max(axis=(1, 2))
    asymmetry = np.abs(F - np.swapaxes(F, 1, 2)).max(axis=(1, 2))
    skewed = asymmetry > symmetry_rtol * np.maximum(scale, np.finfo(np.float64).tiny)
    if skewed.any():
        position = int(np.flatnonzero(skewed)[0])
        raise ValueError(
            f"{_where(path)}block {_block_label(offset + position, block_indices)} is not symmetric "
            f"(max |F - F^T| = {asymmetry[position]:.3g}, max |F| = {scale[position]:.3g})"
        )
    return F


def _not_pd_error(path, position, labels, detail) -> ValueError:
    return ValueError(
        f"{_where(path)}block {_block_label(position, labels)} is not positive definite ({detail}); "
        "raise damp or check the gradients"
    )


def _invert_lapack(F: np.ndarray, path, labels, offset: int) -> np.ndarray:
    """Per-block LAPACK potrf + potri in float64 (the fastest route on CPU hosts)."""
    from scipy.linalg import lapack

    G = np.empty_like(F)
    lower = np.tril_indices(F.shape[1], -1)
    for b in range(F.shape[0]):
        factor, info = lapack.dpotrf(F[b], lower=1, clean=0)
        if info > 0:
            raise _not_pd_error(path, offset + b, labels, f"Cholesky failed at pivot {info - 1}")
        inverse, info = lapack.dpotri(factor, lower=1)
        if info != 0:
            raise _not_pd_error(path, offset + b, labels, f"inverse failed, LAPACK info {info}")
        inverse[lower[1], lower[0]] = inverse[lower]  # potri fills the lower triangle only
        G[b] = inverse
    return G


@jax.jit
def _checked_inverse(F):
    """float64 batched ``F^{-1}`` via ``L^{-T} L^{-1}``, returned as float32, with per-block diagnostics
    (finite input, asymmetry, scale, finite inverse) so that only (n,) flags leave the device."""
    F = F.astype(jnp.float64)
    finite = jnp.all(jnp.isfinite(F), axis=(1, 2))
    scale = jnp.max(jnp.abs(F), axis=(1, 2))
    asymmetry = jnp.max(jnp.abs(F - jnp.swapaxes(F, 1, 2)), axis=(1, 2))
    L = jax.lax.linalg.cholesky(F, symmetrize_input=False)
    eye = jnp.broadcast_to(jnp.eye(F.shape[-1], dtype=F.dtype), F.shape)
    L_inv = jax.lax.linalg.triangular_solve(L, eye, left_side=True, lower=True)
    G = jnp.einsum("nki,nkj->nij", L_inv, L_inv, precision=jax.lax.Precision.HIGHEST)
    G = 0.5 * (G + jnp.swapaxes(G, 1, 2))
    return G.astype(jnp.float32), finite, asymmetry, scale, jnp.all(jnp.isfinite(G), axis=(1, 2))


def _invert_xla(F, path, labels, chunk_size: int, symmetry_rtol: float = 1e-5) -> jax.Array:
    """Device-resident route: chunks of blocks are checked and inverted on the default backend."""
    pieces = []
    with jax.enable_x64(True):
        for start in range(0, F.shape[0], chunk_size):
            chunk = on_one_device(jnp.asarray(F[start : start + chunk_size]))  # never a multi-device LAPACK call
            G, finite, asymmetry, scale, inverted = _checked_inverse(chunk)
            finite, asymmetry, scale, inverted = map(np.asarray, (finite, asymmetry, scale, inverted))
            if not finite.all():
                bad = start + int(np.flatnonzero(~finite)[0])
                raise ValueError(f"{_where(path)}block {_block_label(bad, labels)} holds NaN or infinite values")
            skewed = asymmetry > symmetry_rtol * np.maximum(scale, np.finfo(np.float64).tiny)
            if skewed.any():
                position = int(np.flatnonzero(skewed)[0])
                raise ValueError(
                    f"{_where(path)}block {_block_label(start + position, labels)} is not symmetric "
                    f"(max |F - F^T| = {asymmetry[position]:.3g}, max |F| = {scale[position]:.3g})"
                )
            if not inverted.all():
                bad = start + int(np.flatnonzero(~inverted)[0])
                raise _not_pd_error(path, bad, labels, "Cholesky gave NaN")
            pieces.append(G)
    return pieces[0] if len(pieces) == 1 else jnp.concatenate(pieces)


def invert_blocks(
    F,
    *,
    path: Path | None = None,
    block_indices: Sequence[int] | None = None,
    chunk_size: int = INVERT_CHUNK,
    method: str = "auto",
) -> jax.Array:
    """``G_b = F_b^{-1}`` for Fisher blocks ``F`` (n, B, B): Cholesky-based, in float64; returns float32 (n, B, B).

    Works ``chunk_size`` blocks at a time, so the float64 workspace stays ``~3 * chunk_size * B^2 * 8`` bytes.
    ``method``: ``"lapack"`` (per-block LAPACK potrf/potri on the host), ``"xla"`` (batched Cholesky and
    triangular solves in float64 on the default JAX backend) or ``"auto"``: LAPACK when the default backend
    is the CPU (measured about 5x faster than XLA's batched Cholesky there), XLA on accelerators.
    Raises ``ValueError`` naming the layer (``path``) and the block (its entry of ``block_indices`` when
    given, else its position) for NaN, asymmetric or non-positive-definite blocks.
    """
    if F.ndim != 3 or F.shape[1] != F.shape[2]:
        raise ValueError(f"{_where(path)}Fisher blocks must have shape (n_blocks, B, B), got {tuple(F.shape)}")
    labels = None if block_indices is None else np.asarray(block_indices)
    if labels is not None and labels.shape != (F.shape[0],):
        raise ValueError(f"{_where(path)}{labels.size} block indices given for {F.shape[0]} blocks")
    if method == "auto":
        method = "lapack" if jax.default_backend() == "cpu" else "xla"
    if method not in ("lapack", "xla"):
        raise ValueError(f"method must be 'auto', 'lapack' or 'xla', got {method!r}")
    if method == "xla":
        return _invert_xla(F, path, labels, chunk_size)
    G = np.empty(F.shape, np.float32)
    for start in range(0, F.shape[0], chunk_size):
        chunk = check_fisher_blocks(F[start : start + chunk_size], path=path, block_indices=labels, offset=start)
        G[start : start + chunk_size] = _invert_lapack(chunk, path, labels, start)
    return jnp.asarray(G)


def blockwise_fisher_inverse(
    loss_fn,
    params: PyTree,
    target_path: Path,
    batches: Iterable[PyTree],
    *,
    block_size: int,
    damp: float = 1e-6,
    max_examples: int | None = None,
    block_indices: Sequence[int] | None = None,
    blocks_per_group: int | None = None,
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET,
    mesh=None,
    microbatch_size: int | None = None,
    method: str = "auto",
) -> Iterator[InverseGroup]:
    """Yield ``InverseGroup(block_indices, G, n_examples)`` group by group (see :func:`fisher_block_groups`)."""
    for group in fisher_block_groups(
        loss_fn,
        params,
        target_path,
        batches,
        block_size=block_size,
        damp=damp,
        max_examples=max_examples,
        block_indices=block_indices,
        blocks_per_group=blocks_per_group,
        memory_budget_bytes=memory_budget_bytes,
        mesh=mesh,
        microbatch_size=microbatch_size,
    ):
        G = invert_blocks(group.F, path=tuple(target_path), block_indices=group.block_indices, method=method)
        yield InverseGroup(group.block_indices, G, group.n_examples)
