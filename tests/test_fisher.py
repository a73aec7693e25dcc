"""Blockwise empirical Fisher and its inverse, against an independent NumPy reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxapex.fisher import (
    blockwise_fisher,
    blockwise_fisher_inverse,
    fisher_block_groups,
    invert_blocks,
)
from jaxapex.parallel import batch_mesh

PATH = ("params", "clf", "kernel")
N_IN, N_OUT = 6, 4  # W is (4, 6): 24 entries


def softmax_params(seed=0):
    rng = np.random.default_rng(seed)
    return {"params": {"clf": {"kernel": rng.standard_normal((N_IN, N_OUT)).astype(np.float32)}}}


def softmax_loss(params, example):
    logits = example["x"] @ params["params"]["clf"]["kernel"]
    return -jax.nn.log_softmax(logits)[example["y"]]


def make_batches(n, size, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, N_IN)).astype(np.float32)
    y = rng.integers(0, N_OUT, n)
    return x, y, [{"x": x[i : i + size], "y": y[i : i + size]} for i in range(0, n, size)]


def reference_fisher(params, x, y, block_size, damp):
    """F_b = damp I + mean_i g_ib g_ib^T with g_i = (softmax - onehot) x^T flattened row-major, in float64."""
    K = np.asarray(params["params"]["clf"]["kernel"], np.float64)
    logits = x.astype(np.float64) @ K
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(len(y)), y] -= 1.0
    g = (p[:, :, None] * x[:, None, :]).reshape(len(y), -1, block_size)  # (m, n_blocks, B)
    return np.einsum("mbi,mbj->bij", g, g) / len(y) + damp * np.eye(block_size)


@pytest.mark.parametrize("block_size", [4, 6, 8, 12])
def test_blockwise_fisher_matches_numpy_reference(block_size):
    params = softmax_params()
    x, y, batches = make_batches(19, 5)
    F = blockwise_fisher(softmax_loss, params, PATH, batches, block_size=block_size, damp=1e-3)
    assert F.shape == (24 // block_size, block_size, block_size) and F.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(F), reference_fisher(params, x, y, block_size, 1e-3), rtol=1e-5, atol=1e-7)


def test_block_subsets_groups_and_one_shot_iterators_agree_with_the_full_fisher():
    params = softmax_params(seed=2)
    x, y, batches = make_batches(13, 4, seed=3)
    full = np.asarray(blockwise_fisher(softmax_loss, params, PATH, batches, block_size=4))
    subset = blockwise_fisher(softmax_loss, params, PATH, batches, block_size=4, block_indices=[5, 1, 3])
    np.testing.assert_allclose(np.asarray(subset), full[[1, 3, 5]], rtol=1e-6)
    groups = list(
        fisher_block_groups(softmax_loss, params, PATH, iter(batches), block_size=4, blocks_per_group=4, max_examples=9)
    )
    assert [g.block_indices.tolist() for g in groups] == [[0, 1, 2, 3], [4, 5]]
    assert all(g.n_examples == 9 for g in groups)
    first9 = np.asarray(blockwise_fisher(softmax_loss, params, PATH, batches, block_size=4, max_examples=9))
    np.testing.assert_allclose(np.concatenate([np.asarray(g.F) for g in groups]), first9, rtol=1e-6)
    np.testing.assert_allclose(first9, reference_fisher(params, x[:9], y[:9], 4, 1e-6), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("batch", [3, 5])  # odd batches do not split over two devices: padded with weight 0
def test_sharded_fisher_equals_single_device(batch):
    if len(jax.devices()) < 2:
        pytest.skip("needs two devices (tests/conftest.py sets up two virtual CPU devices)")
    params = softmax_params(seed=4)
    _, _, batches = make_batches(11, batch, seed=5)
    single = blockwise_fisher(softmax_loss, params, PATH, batches, block_size=8, mesh=batch_mesh(jax.devices()[:1]))
    sharded = blockwise_fisher(softmax_loss, params, PATH, batches, block_size=8, mesh=batch_mesh())
    micro = blockwise_fisher(softmax_loss, params, PATH, batches, block_size=8, microbatch_size=4)
    np.testing.assert_allclose(np.asarray(sharded), np.asarray(single), rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(np.asarray(micro), np.asarray(single), rtol=1e-5, atol=1e-8)


def test_block_size_must_divide_and_indices_must_exist():
    params = softmax_params()
    _, _, batches = make_batches(4, 2)
    with pytest.raises(ValueError, match=r"layer 'params/clf/kernel'.*block_size 5 does not divide.*4 \* 6 = 24"):
        blockwise_fisher(softmax_loss, params, PATH, batches, block_size=5)
    with pytest.raises(ValueError, match=r"layer 'params/clf/kernel'.*\[7\] out of range \[0, 6\)"):
        blockwise_fisher(softmax_loss, params, PATH, batches, block_size=4, block_indices=[0, 7])
    with pytest.raises(ValueError, match="no examples"):
        blockwise_fisher(softmax_loss, params, PATH, [], block_size=4)


def random_spd(rng, n, B, rank, damp):
    U = rng.standard_normal((n, rank, B)) * rng.uniform(0.01, 3.0)
    return np.einsum("nri,nrj->nij", U, U) / rank + damp * np.eye(B)


@given(
    st.integers(1, 5),
    st.integers(2, 12),
    st.integers(1, 20),
    st.sampled_from([1e-6, 1e-3, 1.0]),
    st.integers(0, 2**31 - 1),
)
@settings(max_examples=30, deadline=None)
def test_invert_blocks_inverts_badly_conditioned_blocks(n, B, rank, damp, seed):
    F = random_spd(np.random.default_rng(seed), n, B, rank, damp).astype(np.float32)
    reference = np.linalg.inv(F.astype(np.float64))
    for method in ("lapack", "xla"):
        G = np.asarray(invert_blocks(F, method=method, chunk_size=2))
        assert G.dtype == np.float32 and np.array_equal(G, np.swapaxes(G, 1, 2))
        np.testing.assert_allclose(G, reference, rtol=1e-5, atol=1e-5 * np.abs(reference).max())


def test_blockwise_fisher_inverse_groups_match_inverting_the_full_fisher():
    params = softmax_params(seed=6)
    _, _, batches = make_batches(10, 3, seed=7)
    F = blockwise_fisher(softmax_loss, params, PATH, batches, block_size=4, damp=1e-2)
    G = np.asarray(invert_blocks(F))
    groups = list(
        blockwise_fisher_inverse(
            softmax_loss, params, PATH, batches, block_size=4, damp=1e-2, block_indices=[4, 0, 2], blocks_per_group=2
        )
    )
    assert [g.block_indices.tolist() for g in groups] == [[0, 2], [4]]
    np.testing.assert_allclose(np.concatenate([np.asarray(g.G) for g in groups]), G[[0, 2, 4]], rtol=1e-5)


@pytest.mark.parametrize("method", ["lapack", "xla"])
def test_invert_blocks_names_the_bad_block_and_layer(method):
    F = random_spd(np.random.default_rng(0), 4, 3, 3, 1e-2)
    nan = F.copy()
    nan[2, 0, 1] = np.nan
    with pytest.raises(ValueError, match=r"layer 'enc/fc1/kernel': block 12 holds NaN"):
        invert_blocks(nan, path=("enc", "fc1", "kernel"), block_indices=[3, 7, 12, 20], method=method)
    indefinite = F.copy()
    indefinite[3] = np.diag([1.0, -1.0, 1.0])
    with pytest.raises(ValueError, match=r"block 3 is not positive definite"):
        invert_blocks(indefinite, method=method, chunk_size=2)
    skewed = F.copy()
    skewed[1, 0, 2] += 1.0
    with pytest.raises(ValueError, match=r"layer 'x': block 1 is not symmetric"):
        invert_blocks(skewed, path=("x",), method=method)
    with pytest.raises(ValueError, match=r"shape \(n_blocks, B, B\)"):
        invert_blocks(F[:, :2], method=method)
