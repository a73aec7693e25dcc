"""Flax models: configs, shapes, causality, OPT's position offset, MLP target paths, sown activations and
the loss functions."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxapex.models import (
    OPT,
    VIT_PRESETS,
    OPTConfig,
    ViT,
    ViTConfig,
    batch_loss_fn,
    build_model,
    config_from_dict,
    config_to_dict,
    example_loss_fn,
    init_params,
    make_hidden_fn,
    mlp_target_paths,
    per_example_losses_fn,
    restrict_logits,
)

VIT = ViTConfig(image_size=8, patch_size=2, channels=1, dim=16, depth=2, heads=2, mlp_dim=24, num_classes=4)
LM = OPTConfig(vocab_size=32, max_positions=16, dim=16, layers=2, heads=2, ffn_dim=24)


@pytest.fixture(scope="module")
def vit():
    model = ViT(VIT)
    params = init_params(model, 0)
    # perturb the zero-initialized head and cls token so every output depends on every parameter
    rng = np.random.default_rng(1)
    params = jax.tree.map(lambda a: a + 0.05 * rng.normal(size=a.shape).astype(np.float32), params)
    return model, params


@pytest.fixture(scope="module")
def lm():
    model = OPT(LM)
    return model, init_params(model, 0)


@pytest.fixture(scope="module")
def lm_apply(lm):
    return jax.jit(lm[0].apply)


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="image_size=10 is not a multiple of patch_size=4"):
        ViTConfig(image_size=10, patch_size=4)
    with pytest.raises(ValueError, match="dim=10 is not divisible by heads=3"):
        OPTConfig(dim=10, heads=3)
    with pytest.raises(ValueError, match="OPTConfig.layers must be a positive int, got 0"):
        OPTConfig(layers=0)
    with pytest.raises(ValueError, match="unknown model preset 'vit_huge'"):
        build_model("vit_huge")


def test_config_dict_round_trip_and_unknown_fields():
    for cfg in (VIT, LM, VIT_PRESETS["vit_b16"]):
        assert config_from_dict(config_to_dict(cfg)) == cfg
    with pytest.raises(ValueError, match=r"unknown ViTConfig fields \['depht'\]"):
        config_from_dict({**config_to_dict(VIT), "depht": 3})
    with pytest.raises(ValueError, match="'kind'"):
        config_from_dict({"dim": 3})


def test_forward_shapes_and_input_checks(vit, lm):
    model, params = vit
    assert model.apply(params, jnp.zeros((3, 8, 8, 1))).shape == (3, 4)
    with pytest.raises(ValueError, match=r"ViT expects images of shape \(batch, \(8, 8, 1\)\)"):
        model.apply(params, jnp.zeros((3, 8, 8, 3)))
    model, params = lm
    assert model.apply(params, jnp.zeros((2, 16), jnp.int32)).shape == (2, 16, 32)
    with pytest.raises(ValueError, match="sequence length 17 exceeds OPTConfig.max_positions=16"):
        model.apply(params, jnp.zeros((1, 17), jnp.int32))


@settings(max_examples=20, deadline=None)
@given(data=st.data())
def test_lm_is_causal(lm, lm_apply, data):
    """Changing the tokens from position t on never changes the logits at positions < t."""
    _, params = lm
    apply = lm_apply
    cut = data.draw(st.integers(1, 15))
    tokens = np.array(data.draw(st.lists(st.integers(0, 31), min_size=16, max_size=16)))
    other = tokens.copy()
    other[cut:] = (other[cut:] + data.draw(st.integers(1, 31))) % 32
    a, b = apply(params, tokens[None])[0], apply(params, other[None])[0]
    np.testing.assert_allclose(a[:cut], b[:cut], atol=1e-5)
    assert not np.allclose(a[cut:], b[cut:])


def test_opt_positions_are_offset_by_two(lm):
    """Position p reads row p + 2 of embed_positions; rows 0 and 1 get no gradient."""
    model, params = lm
    loss = lambda p: model.apply(p, jnp.arange(16)[None] % 32).sum()
    grad = jax.grad(loss)(params)["params"]["embed_positions"]["embedding"]
    assert grad.shape == (18, 16)
    np.testing.assert_array_equal(grad[:2], 0.0)
    assert np.all(np.abs(grad[2:]).sum(axis=1) > 0)


def test_lm_head_is_tied_to_the_token_embedding(lm):
    model, params = lm
    logits, state = model.apply(params, jnp.arange(5)[None], capture_intermediates=True)
    hidden = state["intermediates"]["final_ln"]["__call__"][0]
    embedding = params["params"]["embed_tokens"]["embedding"]
    np.testing.assert_allclose(logits, hidden @ embedding.T, rtol=1e-5, atol=1e-5)


def test_target_paths_follow_block_order():
    model = build_model("vit_b16")
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), model.dummy_input()))
    fc1 = mlp_target_paths(shapes)
    assert fc1 == tuple(("params", f"block_{i}", "mlp", "fc1", "kernel") for i in range(12))
    both = mlp_target_paths(shapes, which=("fc1", "fc2"))
    assert both[:3] == (
        ("params", "block_0", "mlp", "fc1", "kernel"),
        ("params", "block_0", "mlp", "fc2", "kernel"),
        ("params", "block_1", "mlp", "fc1", "kernel"),
    )
    with pytest.raises(ValueError, match="which must name MLP layers"):
        mlp_target_paths(shapes, which=("fc3",))


@pytest.mark.parametrize("which", ["vit", "lm"])
def test_hidden_fn_returns_post_activation_fc1_outputs(vit, lm, which):
    """The sown activations equal the activation applied to fc1's captured output, keyed by fc1's path."""
    model, params = vit if which == "vit" else lm
    batch = (
        {"image": jax.random.uniform(jax.random.PRNGKey(2), (3, 8, 8, 1)), "label": jnp.zeros(3, int)}
        if which == "vit"
        else {"tokens": jax.random.randint(jax.random.PRNGKey(2), (3, 9), 0, 32)}
    )
    hidden = make_hidden_fn(model)(params, batch)
    inputs = batch["image"] if which == "vit" else batch["tokens"][:, :-1]
    _, state = model.apply(params, inputs, capture_intermediates=True)
    act = (lambda u: jax.nn.gelu(u, approximate=False)) if which == "vit" else jax.nn.relu
    block = "block" if which == "vit" else "layer"
    assert set(hidden) == {("params", f"{block}_{i}", "mlp", "fc1", "kernel") for i in range(2)}
    for i in range(2):
        pre = state["intermediates"][f"{block}_{i}"]["mlp"]["fc1"]["__call__"][0]
        np.testing.assert_allclose(hidden[("params", f"{block}_{i}", "mlp", "fc1", "kernel")], act(pre), atol=1e-6)
    if which == "vit":
        cls = make_hidden_fn(model, cls_only=True)(params, batch)
        for path, value in hidden.items():
            np.testing.assert_array_equal(cls[path], value[:, :1])
    else:
        with pytest.raises(ValueError, match="cls_only"):
            make_hidden_fn(model, cls_only=True)


def test_loss_functions_agree_with_a_manual_cross_entropy(vit, lm):
    model, params = vit
    images = jax.random.uniform(jax.random.PRNGKey(3), (5, 8, 8, 1))
    labels = jnp.array([0, 1, 2, 3, 1])
    batch = {"image": images, "label": labels}
    logits = np.asarray(model.apply(params, images), np.float64)
    manual = -(logits[np.arange(5), labels] - np.log(np.exp(logits).sum(1)))
    np.testing.assert_allclose(per_example_losses_fn(model)(params, batch), manual, rtol=1e-5)
    np.testing.assert_allclose(batch_loss_fn(model)(params, batch), manual.mean(), rtol=1e-5)
    one = example_loss_fn(model)
    for i in range(5):
        np.testing.assert_allclose(one(params, {"image": images[i], "label": labels[i]}), manual[i], rtol=1e-5)
    # restricted to classes {1, 3}: softmax over those two logits only
    sub = np.array([1, 3])
    restricted = -(logits[np.arange(5), labels] - np.log(np.exp(logits[:, sub]).sum(1)))
    keep = np.isin(labels, sub)
    np.testing.assert_allclose(
        per_example_losses_fn(model, classes=sub)(params, batch)[keep], restricted[keep], rtol=1e-5
    )

    model, params = lm
    tokens = jax.random.randint(jax.random.PRNGKey(4), (2, 7), 0, 32)
    logits = model.apply(params, tokens[:, :-1])
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean(axis=1)
    np.testing.assert_allclose(per_example_losses_fn(model)(params, {"tokens": tokens}), nll, rtol=1e-6)
    with pytest.raises(ValueError, match="does not apply to the language model"):
        per_example_losses_fn(model, classes=[1])


def test_restrict_logits_never_predicts_outside_the_subset():
    logits = jax.random.normal(jax.random.PRNGKey(5), (50, 10))
    predictions = np.asarray(jnp.argmax(restrict_logits(logits, [2, 5, 7]), axis=-1))
    assert set(predictions) <= {2, 5, 7}
    np.testing.assert_array_equal(restrict_logits(logits, None), logits)
