"""Provider mask scorers and mask selection, against hand-computed NumPy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxapex.masking import activation_ratio_scores, neuron_mask, second_order_scores, top_fraction_mask
from jaxapex.parallel import batch_mesh

PATH = ("params", "dense", "kernel")
PATH2 = ("params", "head", "kernel")
N_IN, N_OUT, N_OUT2 = 5, 3, 2


def linear_params(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "params": {
            "dense": {"kernel": rng.standard_normal((N_IN, N_OUT)).astype(np.float32)},
            "head": {"kernel": rng.standard_normal((N_OUT, N_OUT2)).astype(np.float32)},
        }
    }


def squared_loss(params, example):
    """1/2 |head^T (kernel^T x) - y|^2: a two-layer linear model, so both matrices get gradients."""
    hidden = example["x"] @ params["params"]["dense"]["kernel"]
    out = hidden @ params["params"]["head"]["kernel"]
    return 0.5 * jnp.sum((out - example["y"]) ** 2)


def reference_gradients(params, x, y):
    """Per-example gradients w.r.t. W1 = kernel.T (out, in) and W2 = head.T, by hand."""
    K1, K2 = (np.asarray(params["params"][n]["kernel"], np.float64) for n in ("dense", "head"))
    hidden = x @ K1
    residual = hidden @ K2 - y  # (n, out2)
    g2 = residual[:, :, None] * hidden[:, None, :]  # (n, out2, out)
    back = residual @ K2.T  # (n, out)
    g1 = back[:, :, None] * x[:, None, :]  # (n, out, in)
    return {PATH: g1, PATH2: g2}


def make_data(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, N_IN)).astype(np.float32)
    y = rng.standard_normal((n, N_OUT2)).astype(np.float32)
    return x, y


def as_batches(x, y, size):
    return [{"x": x[i : i + size], "y": y[i : i + size]} for i in range(0, len(x), size)]


def reference_scores(params, forget, retain, *, lambda_h, c_ret, damp, combine="ratio"):
    def saliency(x, y):
        grads = reference_gradients(params, x.astype(np.float64), y.astype(np.float64))
        out = {}
        for path, g in grads.items():
            w = np.asarray(params["params"][path[1]]["kernel"], np.float64).T
            out[path] = g.mean(0) * w - lambda_h * ((g**2).mean(0) + damp) * w**2
        return out

    s_f, s_r = saliency(*forget), saliency(*retain)
    if combine == "difference":  # importance I = -s: I_forget - c_ret * I_retain
        return {p: (-s_f[p]) - c_ret * (-s_r[p]) for p in s_f}
    return {p: s_f[p] / (c_ret * s_r[p] + 1e-12) for p in s_f}


@pytest.mark.parametrize(
    "lambda_h,c_ret,combine", [(0.448, 2.0, "ratio"), (0.5, 1.5, "ratio"), (0.448, 5.0, "difference")]
)
def test_second_order_scores_match_hand_computed_reference(lambda_h, c_ret, combine):
    params = linear_params()
    forget, retain = make_data(11, seed=1), make_data(14, seed=2)
    scores = second_order_scores(
        squared_loss,
        params,
        [PATH, PATH2],
        as_batches(*forget, 4),
        as_batches(*retain, 5),
        lambda_h=lambda_h,
        c_ret=c_ret,
        damp=1e-3,
        combine=combine,
    )
    expected = reference_scores(params, forget, retain, lambda_h=lambda_h, c_ret=c_ret, damp=1e-3, combine=combine)
    assert set(scores) == {PATH, PATH2}
    for path in expected:
        assert scores[path].shape == expected[path].shape
        np.testing.assert_allclose(np.asarray(scores[path]), expected[path], rtol=2e-4, atol=1e-5)


def test_second_order_scores_max_examples_uses_only_the_first_examples():
    params = linear_params()
    forget, retain = make_data(20, seed=3), make_data(20, seed=4)
    scores = second_order_scores(
        squared_loss, params, [PATH], as_batches(*forget, 6), as_batches(*retain, 7), max_examples=9, damp=1e-3
    )
    expected = reference_scores(
        params, (forget[0][:9], forget[1][:9]), (retain[0][:9], retain[1][:9]), lambda_h=0.448, c_ret=2.0, damp=1e-3
    )
    np.testing.assert_allclose(np.asarray(scores[PATH]), expected[PATH], rtol=2e-4, atol=1e-5)


@pytest.mark.parametrize("batch", [5, 7])  # 5 and 7 do not divide over two devices: padding with weight 0
def test_second_order_scores_sharded_equal_single_device(batch):
    if len(jax.devices()) < 2:
        pytest.skip("needs two devices (tests/conftest.py sets up two virtual CPU devices)")
    params = linear_params(seed=5)
    forget, retain = make_data(17, seed=6), make_data(13, seed=7)
    run = lambda mesh, micro: second_order_scores(
        squared_loss,
        params,
        [PATH, PATH2],
        as_batches(*forget, batch),
        as_batches(*retain, batch),
        mesh=mesh,
        microbatch_size=micro,
        damp=1e-3,
    )
    single = run(batch_mesh(jax.devices()[:1]), None)
    sharded = run(batch_mesh(), None)
    micro = run(batch_mesh(), 3)
    for path in single:
        np.testing.assert_allclose(np.asarray(sharded[path]), np.asarray(single[path]), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(micro[path]), np.asarray(single[path]), rtol=1e-5, atol=1e-6)


def test_second_order_scores_reject_empty_data_and_bad_paths():
    params = linear_params()
    data = as_batches(*make_data(4, seed=0), 2)
    with pytest.raises(ValueError, match="forget set yielded no examples"):
        second_order_scores(squared_loss, params, [PATH], [], data)
    with pytest.raises(KeyError, match="no key 'missing'"):
        second_order_scores(squared_loss, params, [("params", "missing", "kernel")], data, data)
    with pytest.raises(ValueError, match="repeat"):
        second_order_scores(squared_loss, params, [PATH, PATH], data, data)


def relu_hidden_fn(params, batch):
    """Hidden activations of a tiny MLP with a token axis: (batch, tokens, n_neurons)."""
    return {PATH: jax.nn.relu(batch["x"] @ params["params"]["dense"]["kernel"])}


def test_activation_ratio_scores_match_reference_and_shard():
    params = linear_params(seed=8)
    rng = np.random.default_rng(9)
    forget = rng.standard_normal((9, 4, N_IN)).astype(np.float32)
    retain = rng.standard_normal((12, 4, N_IN)).astype(np.float32)
    K = np.asarray(params["params"]["dense"]["kernel"], np.float64)
    mean_abs = lambda x: np.abs(np.maximum(x @ K, 0)).reshape(-1, N_OUT).mean(0)
    expected = mean_abs(forget) / (mean_abs(retain) + 1e-6)
    for mesh in [batch_mesh(jax.devices()[:1]), batch_mesh()]:
        scores = activation_ratio_scores(
            relu_hidden_fn,
            params,
            [{"x": forget[i : i + 5]} for i in range(0, 9, 5)],
            [{"x": retain[i : i + 5]} for i in range(0, 12, 5)],
            mesh=mesh,
        )
        assert scores[PATH].shape == (N_OUT,)
        np.testing.assert_allclose(np.asarray(scores[PATH]), expected, rtol=1e-5)


score_arrays = st.lists(st.tuples(st.integers(1, 6), st.integers(1, 6)), min_size=1, max_size=3).flatmap(
    lambda shapes: st.tuples(
        *[
            st.lists(st.integers(-3, 3), min_size=r * c, max_size=r * c).map(
                lambda v, r=r, c=c: np.array(v, float).reshape(r, c)
            )
            for r, c in shapes
        ]
    )
)


@given(score_arrays, st.floats(0.0, 1.0))
@settings(max_examples=80, deadline=None)
def test_top_fraction_mask_exact_count_and_ordering(arrays, fraction):
    scores = {("layer", i): a for i, a in enumerate(arrays)}
    masks = top_fraction_mask(scores, fraction)
    flat_scores = np.concatenate([a.ravel() for a in arrays])
    flat_mask = np.concatenate([masks[k].ravel() for k in scores])
    assert all(masks[k].shape == scores[k].shape and masks[k].dtype == bool for k in scores)
    assert flat_mask.sum() == round(fraction * flat_scores.size)
    if 0 < flat_mask.sum() < flat_mask.size:
        assert flat_scores[flat_mask].min() >= flat_scores[~flat_mask].max()
        # ties at the threshold go to the earliest entries in (key order, row-major) order
        threshold = flat_scores[flat_mask].min()
        tied = np.flatnonzero(flat_scores == threshold)
        chosen = flat_mask[tied]
        assert np.all(chosen[: chosen.sum()]) and not np.any(chosen[chosen.sum() :])


def test_top_fraction_mask_rejects_nan_and_bad_fraction():
    with pytest.raises(ValueError, match="layer 'b/kernel'.*1 NaN"):
        top_fraction_mask({("a", "kernel"): np.ones(3), ("b", "kernel"): np.array([1.0, np.nan])}, 0.5)
    with pytest.raises(ValueError, match="fraction"):
        top_fraction_mask({("a",): np.ones(3)}, 1.5)


def test_neuron_mask_covers_rows_or_their_largest_weights():
    params = linear_params(seed=10)
    W = np.asarray(params["params"]["dense"]["kernel"]).T  # (3, 5)
    scores = {PATH: np.array([0.1, 5.0, 2.0])}
    rows = neuron_mask(scores, params, 1 / 3)[PATH]
    np.testing.assert_array_equal(rows, np.repeat(np.array([False, True, False])[:, None], N_IN, axis=1))
    top2 = neuron_mask(scores, params, 2 / 3, weights_per_neuron=2)[PATH]
    assert top2.sum() == 4 and not top2[0].any()
    for row in (1, 2):
        np.testing.assert_array_equal(np.flatnonzero(top2[row]), np.sort(np.argsort(-np.abs(W[row]))[:2]))
    with pytest.raises(ValueError, match="layer 'params/dense/kernel'.*3 neurons"):
        neuron_mask({PATH: np.ones(4)}, params, 0.5)
    with pytest.raises(ValueError, match="weights_per_neuron"):
        neuron_mask(scores, params, 0.5, weights_per_neuron=9)
