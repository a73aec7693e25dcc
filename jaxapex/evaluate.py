"""Evaluation: top-1 accuracy (vision), next-token accuracy and perplexity (language), recovery, and a
loss-threshold membership-inference score.

All functions evaluate in fixed-size chunks (the last one padded) so one jitted program serves any
dataset size.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxapex.models import OPT, ViT, model_inputs, restrict_logits

Model = ViT | OPT
Batch = Mapping[str, np.ndarray]


@functools.lru_cache(maxsize=32)
def _per_example_stats(model: Model, classes: tuple[int, ...] | None) -> Callable:
    """jit: (params, batch) → (loss (n,), correct-fraction (n,), token count per example)."""

    @jax.jit
    def stats(params, batch):
        logits = model.apply(params, model_inputs(model, batch)).astype(jnp.float32)
        logits = restrict_logits(logits, classes)
        if isinstance(model, ViT):
            targets = batch["label"]
        else:
            targets = batch["tokens"][:, 1:]
        nll = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
        correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
        if nll.ndim == 2:  # language model: average over the window's positions
            return nll.mean(axis=1), correct.mean(axis=1)
        return nll, correct

    return stats


def per_example_metrics(
    model: Model, params, data: Batch, *, batch_size: int = 256, classes: Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(loss (n,), accuracy (n,)) per example; for the LM both are means over the window's positions.

    ``classes`` restricts a classifier's prediction to a label subset (a client's own classes).
    """
    if classes is not None and not isinstance(model, ViT):
        raise ValueError("classes= restricts a classifier's labels; it does not apply to the language model")
    n = len(next(iter(data.values())))
    if n == 0:
        raise ValueError("cannot evaluate on an empty dataset")
    stats = _per_example_stats(model, None if classes is None else tuple(int(c) for c in classes))
    size = min(batch_size, n)
    losses, accs = [], []
    for start in range(0, n, size):
        chunk = {k: v[start : start + size] for k, v in data.items()}
        real = len(next(iter(chunk.values())))
        if real < size:  # pad to the compiled shape; padded rows are dropped below
            chunk = {k: np.concatenate([v, np.repeat(v[-1:], size - real, axis=0)]) for k, v in chunk.items()}
        loss, acc = stats(params, chunk)
        losses.append(np.asarray(loss)[:real])
        accs.append(np.asarray(acc)[:real])
    return np.concatenate(losses), np.concatenate(accs)


def accuracy(
    model: Model, params, data: Batch, *, batch_size: int = 256, classes: Sequence[int] | None = None
) -> float:
    """Top-1 accuracy in [0, 1] (next-token top-1 over all predicted positions for the LM)."""
    return float(per_example_metrics(model, params, data, batch_size=batch_size, classes=classes)[1].mean())


def lm_metrics(model: OPT, params, data: Batch, *, batch_size: int = 256) -> dict[str, float]:
    """Next-token ``accuracy``, mean ``nll`` (nats/token) and ``perplexity`` = exp(nll) over all positions.

    Every window has the same length, so the mean of per-window means is the mean over positions.
    """
    losses, accs = per_example_metrics(model, params, data, batch_size=batch_size)
    nll = float(losses.mean())
    return {"accuracy": float(accs.mean()), "nll": nll, "perplexity": float(math.exp(nll))}


def recovery(*, personalized: float, masked: float, obs: float) -> float:
    """(obs − masked) / (personalized − masked): the share of the accuracy lost to the mask that the
    correction restores (1 = all, 0 = none, < 0 = worse than masking). NaN when the mask cost nothing."""
    lost = personalized - masked
    if abs(lost) < 1e-12:
        return float("nan")
    return (obs - masked) / lost


def roc_auc(positive_scores: np.ndarray, negative_scores: np.ndarray) -> float:
    """Area under the ROC curve = P(score_pos > score_neg) + ½ P(tie), via the Mann–Whitney U statistic."""
    pos, neg = np.asarray(positive_scores, float).ravel(), np.asarray(negative_scores, float).ravel()
    if pos.size == 0 or neg.size == 0:
        raise ValueError(f"roc_auc needs both classes, got {pos.size} positive and {neg.size} negative scores")
    scores = np.concatenate([pos, neg])
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(scores.size, float)
    sorted_scores = scores[order]
    # average ranks over ties
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [scores.size]])
    for s, e in zip(starts, ends):
        ranks[order[s:e]] = (s + e + 1) / 2.0
    u = ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2.0
    return float(u / (pos.size * neg.size))


def membership_inference_auc(member_losses: np.ndarray, nonmember_losses: np.ndarray) -> float:
    """Loss-threshold attack: predict "member" when the loss is low. Returns the attack's AUC over all
    thresholds (0.5 = members indistinguishable, 1 = perfectly separated)."""
    return roc_auc(-np.asarray(member_losses), -np.asarray(nonmember_losses))


def mia_auc(
    model: Model,
    params,
    members: Batch,
    nonmembers: Batch,
    *,
    batch_size: int = 256,
    classes: Sequence[int] | None = None,
) -> float:
    """Membership-inference AUC of ``params`` between two datasets (losses under the same label set)."""
    member_losses, _ = per_example_metrics(model, params, members, batch_size=batch_size, classes=classes)
    nonmember_losses, _ = per_example_metrics(model, params, nonmembers, batch_size=batch_size, classes=classes)
    return membership_inference_auc(member_losses, nonmember_losses)
