"""The ML computations each role runs before the cryptography: the provider's mask, the client's Fisher.

Thin glue over :mod:`jaxapex.masking` and :mod:`jaxapex.fisher` that speaks in the protocol's terms:
layers are named by their '/'-joined parameter paths, masks and matrices are NumPy arrays W-shaped
(out, in), and data sets are dicts of arrays (``image``/``label`` or ``tokens``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from jaxapex import fisher, masking
from jaxapex.forget_directions import forget_directions
from jaxapex.layers import get_matrix, path_name
from jaxapex.models import example_loss_fn, make_hidden_fn, mlp_target_paths

Data = Mapping[str, np.ndarray]
SCORERS = masking.SCORERS


def batches(data: Data, batch_size: int = 64) -> Iterator[dict[str, np.ndarray]]:
    """Deterministic batches (in order) of a dict-of-arrays data set."""
    n = len(next(iter(data.values())))
    for start in range(0, n, batch_size):
        yield {k: np.asarray(v[start : start + batch_size]) for k, v in data.items()}


def target_paths(params: Mapping, layers: Sequence[str] = ("fc1",)) -> tuple[tuple[str, ...], ...]:
    return mlp_target_paths(params, which=tuple(layers))


def provider_masks(
    model,
    params: Mapping,
    paths: Sequence[tuple[str, ...]],
    forget: Data,
    retain: Data,
    *,
    fraction: float,
    scorer: str = "second-order",
    lambda_h: float = 0.448,
    c_ret: float = 2.0,
    max_examples: int | None = 480,
) -> dict[str, np.ndarray]:
    """The provider's public mask: the global top ``fraction`` of target weights by ``scorer``.

    ``second-order``: per-weight score of DESIGN.md section 3; ``activation``: MLP neurons ranked by the
    forget/retain activation ratio, the mask covering whole neurons (rows of fc1's W).
    """
    if scorer == "second-order":
        scores = masking.second_order_scores(
            example_loss_fn(model),
            params,
            paths,
            batches(forget),
            batches(retain),
            lambda_h=lambda_h,
            c_ret=c_ret,
            max_examples=max_examples,
        )
        masks = masking.top_fraction_mask(scores, fraction)
    elif scorer == "activation":
        scores = masking.activation_ratio_scores(
            make_hidden_fn(model), params, batches(forget), batches(retain), max_examples=max_examples
        )
        masks = masking.neuron_mask({p: scores[p] for p in paths}, params, fraction)
    else:
        raise ValueError(f"unknown scorer {scorer!r}; choose one of {SCORERS}")
    return {path_name(p): np.asarray(masks[p], dtype=bool) for p in paths}


def provider_directions(
    model,
    params: Mapping,
    paths: Sequence[tuple[str, ...]],
    forget: Data,
    *,
    k: int,
    max_examples: int | None = 480,
) -> dict[str, np.ndarray]:
    """The request's forget directions: layer name -> U (k, in), the top-``k`` principal directions of the
    layer's inputs on the forget set, on the global model (:mod:`jaxapex.forget_directions`); {} for k = 0."""
    if k == 0:
        return {}
    U = forget_directions(model, params, paths, batches(forget), k=k, max_examples=max_examples)
    return {path_name(p): U[tuple(p)] for p in paths}


def inverse_fisher(
    loss,
    params: Mapping,
    paths: Sequence[tuple[str, ...]],
    data: Data,
    *,
    block_size: int,
    damp: float = 1e-6,
    max_examples: int | None = 480,
) -> dict[str, np.ndarray]:
    """G = F⁻¹ per block of every target layer, from the client's own data: layer name -> (n_blocks, B, B).

    ``loss(params, example)`` is the client's per-example loss (e.g. restricted to its own classes).
    """
    out = {}
    for p in paths:
        W = np.asarray(get_matrix(params, p))
        n_blocks = W.size // block_size
        G = np.zeros((n_blocks, block_size, block_size), dtype=np.float64)
        for group in fisher.blockwise_fisher_inverse(
            loss, params, p, batches(data), block_size=block_size, damp=damp, max_examples=max_examples
        ):
            G[np.asarray(group.block_indices)] = np.asarray(group.G, dtype=np.float64)
        out[path_name(p)] = G
    return out
