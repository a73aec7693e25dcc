"""Provider-side mask selection: which weights (or MLP neurons) to remove to forget a data set.

Two scorers (DESIGN.md section 3), both streaming over data sets of any size with running sums, jitted, and
data-parallel over a 1-D device mesh when several devices exist (see :mod:`jaxapex.parallel`):

- :func:`second_order_scores` -- per weight, ``s(D) = g_mean * w - lambda_H * (F_diag + damp) * w**2`` on the
  forget and the retain set, combined as ``s_forget / (c_ret * s_retain + 1e-12)``.
- :func:`activation_ratio_scores` -- per MLP hidden neuron, ``mean|act| on forget / (mean|act| on retain + eps)``.

Then :func:`top_fraction_mask` (global top fraction of weight scores) or :func:`neuron_mask` (weights of the
top neurons) turn scores into boolean masks shaped like the target matrices ``W`` (out, in).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxapex.layers import Path, example_matrix_gradients, get_matrix, path_name
from jaxapex.parallel import batch_mesh, device_batches, replicate, weighted_sum

#: The provider's scorers, by the one name each goes by everywhere (recipes, CLI, JSON).
SCORERS = ("second-order", "activation")

PyTree = Any
LossFn = Callable[[PyTree, PyTree], jax.Array]


class GradientMoments(NamedTuple):
    """First and second moments of the per-example gradients of the target matrices.

    ``mean`` and ``mean_sq`` map each path to an array (out, in); ``n_examples`` is the number of examples.
    """

    mean: dict
    mean_sq: dict
    n_examples: int


def _as_paths(target_paths: Sequence[Path]) -> tuple[Path, ...]:
    paths = tuple(tuple(path) for path in target_paths)
    if not paths:
        raise ValueError("at least one target path is needed")
    duplicates = {path_name(p) for p in paths if paths.count(p) > 1}
    if duplicates:
        raise ValueError(f"target paths repeat: {sorted(duplicates)}")
    return paths


def gradient_moments(
    loss_fn: LossFn,
    params: PyTree,
    target_paths: Sequence[Path],
    batches: Iterable[PyTree],
    *,
    max_examples: int | None = None,
    mesh=None,
    microbatch_size: int | None = None,
    data_name: str = "data set",
) -> GradientMoments:
    """Mean and mean square of per-example gradients of the target matrices, streamed over ``batches``.

    One jitted step per (micro-)batch computes ``vmap(grad)`` for the batch and adds its weighted sums to
    running totals that live on the devices; memory is O(batch * matrix size), independent of the data set.
    """
    paths = _as_paths(target_paths)
    mesh = batch_mesh() if mesh is None else mesh
    params = replicate(params, mesh)

    def step(sums, params, batch, weights):
        grads = example_matrix_gradients(loss_fn, params, paths, batch)
        return [
            (total + weighted_sum(g, weights), total_sq + weighted_sum(g * g, weights))
            for (total, total_sq), g in zip(sums, grads)
        ]

    step = jax.jit(step, donate_argnums=0)
    shapes = [get_matrix(params, p).shape for p in paths]
    sums = replicate([(jnp.zeros(shape, jnp.float32), jnp.zeros(shape, jnp.float32)) for shape in shapes], mesh)
    n_examples = 0
    for batch, weights, n_real in device_batches(
        batches, mesh, max_examples=max_examples, microbatch_size=microbatch_size
    ):
        sums = step(sums, params, batch, weights)
        n_examples += n_real
    if n_examples == 0:
        raise ValueError(f"the {data_name} yielded no examples")
    mean = {p: total / n_examples for p, (total, _) in zip(paths, sums)}
    mean_sq = {p: total_sq / n_examples for p, (_, total_sq) in zip(paths, sums)}
    return GradientMoments(mean, mean_sq, n_examples)


def saliency(moments: GradientMoments, params: PyTree, *, lambda_h: float, damp: float) -> dict:
    """Per-weight second-order saliency ``g_mean * w - lambda_H * (F_diag + damp) * w**2`` (out, in) per path.

    ``F_diag = mean_sq`` is the diagonal of the empirical Fisher; ``damp`` regularizes it as in the Fisher blocks.
    """
    scores = {}
    for path, g_mean in moments.mean.items():
        w = get_matrix(params, path).astype(jnp.float32)
        f_diag = moments.mean_sq[path] + damp
        scores[path] = g_mean * w - lambda_h * f_diag * w * w
    return scores


def second_order_scores(
    loss_fn: LossFn,
    params: PyTree,
    target_paths: Sequence[Path],
    forget_batches: Iterable[PyTree],
    retain_batches: Iterable[PyTree],
    *,
    lambda_h: float = 0.448,
    c_ret: float = 2.0,
    damp: float = 1e-8,
    max_examples: int | None = None,
    mesh=None,
    microbatch_size: int | None = None,
) -> dict:
    """Second-order weight scores ``s_forget / (c_ret * s_retain + 1e-12)``, one array (out, in) per path.

    ``loss_fn(params, example)`` is a per-example loss (``example`` = one item of a batch, no batch axis).
    ``max_examples`` caps each data set separately (the public ViT-B settings use 480 gradients).
    Defaults are the public ViT-B/16 settings; OPT-125M uses ``lambda_h=0.5, c_ret=1.5``. The ratio follows the
    published rule literally: where ``s_retain`` is negative the denominator is too, so rank with care when
    retain saliencies change sign.
    """
    paths = _as_paths(target_paths)
    options = dict(max_examples=max_examples, mesh=mesh, microbatch_size=microbatch_size)
    forget = gradient_moments(loss_fn, params, paths, forget_batches, data_name="forget set", **options)
    retain = gradient_moments(loss_fn, params, paths, retain_batches, data_name="retain set", **options)
    s_forget = saliency(forget, params, lambda_h=lambda_h, damp=damp)
    s_retain = saliency(retain, params, lambda_h=lambda_h, damp=damp)
    return {p: s_forget[p] / (c_ret * s_retain[p] + 1e-12) for p in paths}


def mean_abs_activations(
    hidden_fn: Callable[[PyTree, PyTree], Mapping],
    params: PyTree,
    batches: Iterable[PyTree],
    *,
    max_examples: int | None = None,
    mesh=None,
    microbatch_size: int | None = None,
    data_name: str = "data set",
) -> dict:
    """``mean |act|`` per hidden neuron, averaged over examples and any token axes: ``{path: (n_neurons,)}``.

    ``hidden_fn(params, batch)`` returns ``{path: hidden (batch, ..., n_neurons)}``.
    """
    mesh = batch_mesh() if mesh is None else mesh
    params = replicate(params, mesh)

    def batch_sums(params, batch, weights):
        hidden = hidden_fn(params, batch)
        sums = {}
        for path, act in hidden.items():
            per_example = jnp.abs(act.astype(jnp.float32)).reshape(act.shape[0], -1, act.shape[-1])
            positions = per_example.shape[1]
            sums[path] = (weighted_sum(per_example.sum(axis=1), weights), jnp.sum(weights) * positions)
        return sums

    batch_sums = jax.jit(batch_sums)
    totals, n_examples = None, 0
    for batch, weights, n_real in device_batches(
        batches, mesh, max_examples=max_examples, microbatch_size=microbatch_size
    ):
        sums = batch_sums(params, batch, weights)
        totals = sums if totals is None else jax.tree_util.tree_map(jnp.add, totals, sums)
        n_examples += n_real
    if n_examples == 0:
        raise ValueError(f"the {data_name} yielded no examples")
    return {tuple(path): total / count for path, (total, count) in totals.items()}


def activation_ratio_scores(
    hidden_fn: Callable[[PyTree, PyTree], Mapping],
    params: PyTree,
    forget_batches: Iterable[PyTree],
    retain_batches: Iterable[PyTree],
    *,
    eps: float = 1e-6,
    max_examples: int | None = None,
    mesh=None,
    microbatch_size: int | None = None,
) -> dict:
    """Selective-pruning neuron scores ``mean|act| forget / (mean|act| retain + eps)``: ``{path: (n_neurons,)}``.

    ``hidden_fn(params, batch) -> {fc1 path: post-nonlinearity hidden activations (batch, ..., n_neurons)}``.
    """
    options = dict(max_examples=max_examples, mesh=mesh, microbatch_size=microbatch_size)
    forget = mean_abs_activations(hidden_fn, params, forget_batches, data_name="forget set", **options)
    retain = mean_abs_activations(hidden_fn, params, retain_batches, data_name="retain set", **options)
    if set(forget) != set(retain):
        raise ValueError(
            f"hidden_fn returned different layers on the forget set {sorted(map(path_name, forget))} "
            f"and the retain set {sorted(map(path_name, retain))}"
        )
    return {path: forget[path] / (retain[path] + eps) for path in forget}


def _check_fraction(fraction: float) -> None:
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must lie in [0, 1], got {fraction}")


def top_fraction_mask(scores: Mapping, fraction: float) -> dict:
    """Boolean masks selecting the globally highest-scoring ``round(fraction * total)`` entries.

    ``scores`` maps paths to arrays of any shape; the masks have the same shapes. The count is exact: ties at
    the threshold are broken deterministically in favour of earlier entries, in the order of ``scores``'
    keys and then of the row-major index. ``round`` is Python's (halves go to the even integer).
    NaN scores raise ``ValueError`` naming the layer.
    """
    _check_fraction(fraction)
    paths = list(scores)
    if not paths:
        raise ValueError("top_fraction_mask needs at least one score array")
    arrays = [np.asarray(scores[p]) for p in paths]
    for path, values in zip(paths, arrays):
        n_nan = int(np.isnan(values).sum())
        if n_nan:
            raise ValueError(f"scores of layer {path_name(path)!r} hold {n_nan} NaN value(s)")
    flat = np.concatenate([values.ravel() for values in arrays])
    total = flat.size
    k = int(round(fraction * total))
    selected = np.zeros(total, dtype=bool)
    if k > 0:
        threshold = np.partition(flat, total - k)[total - k]  # the k-th largest score
        selected = flat > threshold
        ties = np.flatnonzero(flat == threshold)
        selected[ties[: k - int(selected.sum())]] = True
    masks, offset = {}, 0
    for path, values in zip(paths, arrays):
        masks[path] = selected[offset : offset + values.size].reshape(values.shape)
        offset += values.size
    return masks


def neuron_mask(
    neuron_scores: Mapping,
    params: PyTree,
    fraction: float,
    *,
    weights_per_neuron: int | None = None,
) -> dict:
    """Weight masks (out, in) of the fc1 matrices covering the globally top ``fraction`` of neurons.

    ``neuron_scores`` maps fc1 paths to scores (n_neurons,), with ``n_neurons`` = the matrix's ``out``. A chosen
    neuron ``n`` masks row ``n`` of ``W`` (its incoming weights); with ``weights_per_neuron=k`` only the ``k``
    entries of that row with the largest ``|w|`` (ties to the lower column).
    """
    chosen = top_fraction_mask(neuron_scores, fraction)
    masks = {}
    for path, rows in chosen.items():
        W = np.asarray(get_matrix(params, path))
        if rows.shape != (W.shape[0],):
            raise ValueError(
                f"neuron scores of layer {path_name(path)!r} have shape {rows.shape}; the matrix W (out, in) = "
                f"{W.shape} has {W.shape[0]} neurons"
            )
        if weights_per_neuron is None:
            masks[path] = np.repeat(rows[:, None], W.shape[1], axis=1)
            continue
        if not 1 <= weights_per_neuron <= W.shape[1]:
            raise ValueError(
                f"weights_per_neuron must lie in [1, {W.shape[1]}] for layer {path_name(path)!r}, "
                f"got {weights_per_neuron}"
            )
        top_columns = np.argsort(-np.abs(W), axis=1, kind="stable")[:, :weights_per_neuron]
        mask = np.zeros(W.shape, dtype=bool)
        np.put_along_axis(mask, top_columns, True, axis=1)
        masks[path] = mask & rows[:, None]
    return masks
