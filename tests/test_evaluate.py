"""Evaluation metrics against brute-force references."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxapex.evaluate import (
    accuracy,
    lm_metrics,
    membership_inference_auc,
    mia_auc,
    per_example_metrics,
    recovery,
    roc_auc,
)
from jaxapex.models import OPT, OPTConfig, ViT, ViTConfig, init_params

scores = st.lists(st.integers(-5, 5).map(float), min_size=1, max_size=25)


@settings(max_examples=60, deadline=None)
@given(scores, scores)
def test_roc_auc_equals_pairwise_probability(pos, neg):
    """AUC = P(pos > neg) + ½ P(pos = neg), computed over all pairs (ties are common in integers)."""
    pairs = [(1.0 if p > n else 0.5 if p == n else 0.0) for p in pos for n in neg]
    assert roc_auc(np.array(pos), np.array(neg)) == pytest.approx(sum(pairs) / len(pairs), abs=1e-12)


def test_membership_inference_direction_and_errors():
    assert membership_inference_auc(np.array([0.1, 0.2]), np.array([1.0, 2.0])) == 1.0  # members: lower loss
    assert membership_inference_auc(np.array([1.0, 2.0]), np.array([0.1, 0.2])) == 0.0
    assert membership_inference_auc(np.ones(4), np.ones(3)) == 0.5
    with pytest.raises(ValueError, match="needs both classes"):
        roc_auc(np.array([]), np.array([1.0]))


def test_recovery():
    assert recovery(personalized=0.715, masked=0.694, obs=0.709) == pytest.approx(1.5 / 2.1)
    assert recovery(personalized=0.8, masked=0.6, obs=0.8) == pytest.approx(1.0)
    assert recovery(personalized=0.8, masked=0.6, obs=0.5) == pytest.approx(-0.5)
    assert math.isnan(recovery(personalized=0.7, masked=0.7, obs=0.9))


@pytest.fixture(scope="module")
def vit():
    cfg = ViTConfig(image_size=4, patch_size=2, channels=1, dim=8, depth=1, heads=2, mlp_dim=8, num_classes=3)
    model = ViT(cfg)
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda a: a + rng.normal(0, 0.5, a.shape).astype(np.float32), init_params(model, 0))
    data = {
        "image": rng.uniform(size=(23, 4, 4, 1)).astype(np.float32),
        "label": rng.integers(0, 3, 23).astype(np.int32),
    }
    return model, params, data


@pytest.mark.parametrize("batch_size", [1, 5, 23, 64])
def test_classifier_metrics_match_a_direct_computation(vit, batch_size):
    model, params, data = vit
    logits = np.asarray(model.apply(params, data["image"]), np.float64)
    nll = -(logits[np.arange(23), data["label"]] - np.log(np.exp(logits).sum(1)))
    losses, correct = per_example_metrics(model, params, data, batch_size=batch_size)
    np.testing.assert_allclose(losses, nll, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(correct, logits.argmax(1) == data["label"])
    assert accuracy(model, params, data, batch_size=batch_size) == pytest.approx(
        np.mean(logits.argmax(1) == data["label"])
    )
    sub = [0, 2]
    restricted = np.where(np.isin(np.arange(3), sub), logits, -np.inf).argmax(1)
    assert accuracy(model, params, data, classes=sub) == pytest.approx(np.mean(restricted == data["label"]))


def test_lm_metrics_match_a_direct_computation():
    cfg = OPTConfig(vocab_size=11, max_positions=8, dim=8, layers=1, heads=2, ffn_dim=8)
    model = OPT(cfg)
    params = init_params(model, 1)
    tokens = np.random.default_rng(1).integers(0, 11, (7, 6)).astype(np.int32)
    logits = np.asarray(model.apply(params, tokens[:, :-1]), np.float64)
    targets = tokens[:, 1:]
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp, targets[..., None], -1)[..., 0]
    metrics = lm_metrics(model, params, {"tokens": tokens}, batch_size=3)
    assert metrics["nll"] == pytest.approx(nll.mean(), rel=1e-5)
    assert metrics["perplexity"] == pytest.approx(math.exp(nll.mean()), rel=1e-5)
    assert metrics["accuracy"] == pytest.approx(np.mean(logits.argmax(-1) == targets))
    with pytest.raises(ValueError, match="does not apply to the language model"):
        accuracy(model, params, {"tokens": tokens}, classes=[1])


def test_mia_auc_on_a_model(vit):
    model, params, data = vit
    losses, _ = per_example_metrics(model, params, data)
    order = np.argsort(losses)
    members = {k: v[order[:10]] for k, v in data.items()}
    nonmembers = {k: v[order[10:]] for k, v in data.items()}
    assert mia_auc(model, params, members, nonmembers) == 1.0  # the 10 lowest-loss examples as members
    assert mia_auc(model, params, nonmembers, members) == 0.0
