"""Forget-aware Group OBS: the closed form against an independent float64 KKT solve, r = 0 is plain OBS,
U_b Δ = 0 off the mask, minimality among updates meeting both constraints, the low-rank route, and
``unlearn`` with directions."""

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxapex.fisher import blockwise_fisher
from jaxapex.layers import get_matrix, to_blocks, touched_blocks
from jaxapex.masking import top_fraction_mask
from jaxapex.obs import group_obs, group_obs_lowrank, unlearn


def random_fisher(rng, n, B, rank, damp):
    V = rng.standard_normal((n, rank, B)) / np.sqrt(rank)
    return V, np.einsum("nri,nrj->nij", V, V) + damp * np.eye(B)


def kkt_reference(F, theta, mask, U):
    """argmin 1/2 d^T F d  s.t.  d_S = -theta_S and (U * (1 - m)) d = 0, from the KKT system on F itself
    (no inverse, no Schur complement): [[F, C^T], [C, 0]] [d; nu] = [0; c]."""
    n, B = theta.shape
    out = np.zeros((n, B))
    for b in range(n):
        S = np.flatnonzero(mask[b])
        if not S.size:
            continue
        rows = [np.eye(B)[q] for q in S] + [u * ~mask[b] for u in U[b] if np.any(u * ~mask[b])]
        C = np.array(rows)
        c = np.concatenate([-theta[b, S], np.zeros(len(rows) - S.size)])
        kkt = np.block([[F[b], C.T], [C, np.zeros((len(C), len(C)))]])
        out[b] = np.linalg.solve(kkt, np.concatenate([np.zeros(B), c]))[:B]
    return out


def quadratic(F, delta):
    return 0.5 * np.einsum("ni,nij,nj->n", delta, F, delta)


# few distinct shapes: each (n, B, rank, r, padded |S|) is one compilation
problems = st.tuples(
    st.just(3),
    st.sampled_from([8, 16]),
    st.sampled_from([4, 12]),
    st.integers(1, 3),
    st.integers(0, 2**31 - 1),
    st.floats(0.05, 0.4),
)


def draw(problem, damp):
    n, B, rank, r, seed, density = problem
    rng = np.random.default_rng(seed)
    V, F = random_fisher(rng, n, B, rank, damp)
    theta = rng.standard_normal((n, B))
    mask = rng.random((n, B)) < density
    mask[:, 0] = True
    mask[:, -r - 1 :] = False  # r directions stay feasible: at least r + 1 unmasked coordinates
    U = rng.standard_normal((n, r, B))
    return V, F, theta, mask, U


@given(problems)
@settings(max_examples=10, deadline=None)
def test_dense_and_lowrank_match_the_kkt_solution(problem):
    V, F, theta, mask, U = draw(problem, damp=1e-2)
    expected = kkt_reference(F, theta, mask, U)
    scale = np.abs(expected).max() + 1.0
    _, dense = group_obs(theta.astype(np.float32), np.linalg.inv(F).astype(np.float32), mask, directions=U)
    np.testing.assert_allclose(np.asarray(dense), expected, rtol=1e-3, atol=1e-4 * scale)
    new, low = group_obs_lowrank(theta.astype(np.float32), V.astype(np.float32), mask, damp=1e-2, directions=U)
    np.testing.assert_allclose(np.asarray(low), expected, rtol=1e-3, atol=1e-4 * scale)
    assert np.all(np.asarray(new)[mask] == 0.0)


@given(problems)
@settings(max_examples=10, deadline=None)
def test_compensation_is_orthogonal_to_the_forget_directions(problem):
    _, F, theta, mask, U = draw(problem, damp=1e-2)
    theta = theta.astype(np.float32)
    _, delta = group_obs(theta, np.linalg.inv(F).astype(np.float32), mask, directions=U)
    delta = np.asarray(delta)
    compensation = np.where(mask, 0.0, delta.astype(np.float64))
    moved = np.einsum("nrb,nb->nr", U, compensation)
    scale = np.abs(U).sum(axis=2) * np.abs(compensation).max(axis=1, keepdims=True)  # |U| |Δ| per constraint
    assert np.all(np.abs(moved) <= 1e-6 * scale + 1e-12)  # float32 output of an exact-in-float64 solve
    plain = np.asarray(group_obs(theta, np.linalg.inv(F).astype(np.float32), mask)[1], np.float64)
    assert np.abs(np.einsum("nrb,nb->nr", U, np.where(mask, 0.0, plain))).max() > 1e3 * np.abs(moved).max()
    np.testing.assert_array_equal(delta[mask], -theta[mask])


def test_no_directions_is_plain_obs_exactly():
    rng = np.random.default_rng(1)
    _, F = random_fisher(rng, 5, 12, 6, 1e-3)
    G = np.linalg.inv(F).astype(np.float32)
    theta = rng.standard_normal((5, 12)).astype(np.float32)
    mask = rng.random((5, 12)) < 0.3
    plain = group_obs(theta, G, mask)
    for empty in (np.zeros((5, 0, 12)), None):
        got = group_obs(theta, G, mask, directions=empty)
        np.testing.assert_array_equal(np.asarray(got[1]), np.asarray(plain[1]))
    # directions that vanish off the mask constrain nothing: the same update up to solver round-off
    inside = np.where(mask[:, None, :], rng.standard_normal((5, 2, 12)), 0.0)
    np.testing.assert_allclose(
        np.asarray(group_obs(theta, G, mask, directions=inside)[1]), np.asarray(plain[1]), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("seed", range(3))
def test_forget_aware_update_is_the_constrained_minimum(seed):
    rng = np.random.default_rng(seed)
    n, B, r = 4, 16, 3
    _, F = random_fisher(rng, n, B, 6, 1e-3)
    theta = rng.standard_normal((n, B))
    mask = rng.random((n, B)) < 0.25
    mask[:, 0] = True
    U = rng.standard_normal((n, r, B))
    _, delta = group_obs(theta, np.linalg.inv(F), mask, directions=U)
    delta = np.asarray(delta, np.float64)
    best = quadratic(F, delta)
    _, plain = group_obs(theta, np.linalg.inv(F), mask)
    assert np.all(best >= quadratic(F, np.asarray(plain, np.float64)) * (1 - 1e-9))  # one more constraint
    for _ in range(30):  # any other feasible update (a step in the null space of C) costs more
        step = np.zeros((n, B))
        for b in range(n):
            free = np.flatnonzero(~mask[b])
            Cu = (U[b] * ~mask[b])[:, free]
            null = np.linalg.svd(Cu)[2][r:].T  # (|free|, |free| - r)
            step[b, free] = null @ rng.standard_normal(null.shape[1]) * rng.uniform(1e-3, 1.0)
        assert np.all(quadratic(F, delta + step) >= best * (1 - 1e-9))


def test_infeasible_or_malformed_directions_are_refused():
    rng = np.random.default_rng(2)
    _, F = random_fisher(rng, 2, 6, 6, 1e-2)
    G = np.linalg.inv(F)
    theta = rng.standard_normal((2, 6))
    mask = np.zeros((2, 6), bool)
    mask[:, :3] = True
    with pytest.raises(ValueError, match=r"forget directions must have shape \(n_blocks, r, B\)"):
        group_obs(theta, G, mask, directions=np.ones((2, 1, 5)))
    with pytest.raises(ValueError, match="NaN or inf"):
        group_obs(theta, G, mask, directions=np.full((2, 1, 6), np.nan))
    too_many = rng.standard_normal((2, 4, 6))  # 4 directions on 3 free coordinates
    with pytest.raises(ValueError, match=r"block 1: .*C G C\^T singular"):
        group_obs(theta, G, mask, directions=too_many, block_indices=[1, 5])
    with pytest.raises(ValueError, match="forget directions dependent off the mask"):
        group_obs_lowrank(theta, rng.standard_normal((2, 3, 6)), mask, damp=1e-2, directions=too_many)


def test_unlearn_with_directions_equals_the_fisher_pipeline():
    import flax.linen as nn

    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(3, name="fc2")(nn.gelu(nn.Dense(8, name="fc1")(x)))

    model = MLP()
    rng = np.random.default_rng(3)
    x = rng.standard_normal((21, 6)).astype(np.float32)
    y = rng.integers(0, 3, 21)
    params = model.init(jax.random.PRNGKey(0), x[:1])

    def loss_fn(p, example):
        return -jax.nn.log_softmax(model.apply(p, example["x"][None])[0])[example["y"]]

    batches = [{"x": x[i : i + 5], "y": y[i : i + 5]} for i in range(0, 21, 5)]
    path = ("params", "fc2", "kernel")
    (mask,) = top_fraction_mask({path: rng.standard_normal((3, 8))}, 0.2).values()
    touched = touched_blocks(mask, 8)
    U = rng.standard_normal((touched.size, 2, 8))
    for method, groups in (("dense", 1), ("lowrank", 1), ("dense", None)):
        new, _ = unlearn(
            params,
            {path: mask},
            loss_fn,
            batches,
            block_size=8,
            damp=1e-3,
            method=method,
            blocks_per_group=groups,
            directions={path: U},
        )
        F = np.asarray(
            blockwise_fisher(loss_fn, params, path, batches, block_size=8, damp=1e-3, block_indices=touched), np.float64
        )
        theta = np.asarray(to_blocks(get_matrix(params, path), 8), np.float64)
        expected = kkt_reference(F, theta[touched], to_blocks(mask, 8)[touched], U)
        got = np.asarray(to_blocks(get_matrix(new, path), 8), np.float64)[touched] - theta[touched]
        np.testing.assert_allclose(got, expected, rtol=2e-3, atol=2e-4 * np.abs(expected).max(), err_msg=method)
        assert np.allclose(np.einsum("nrb,nb->nr", U, np.where(to_blocks(mask, 8)[touched], 0, got)), 0, atol=1e-4)
    with pytest.raises(ValueError, match=r"forget directions must have shape \(touched blocks, r, B\)"):
        unlearn(params, {path: mask}, loss_fn, batches, block_size=8, directions={path: U[:, :, :4]})
    with pytest.raises(ValueError, match="layers without a mask"):
        unlearn(params, {path: mask}, loss_fn, batches, block_size=8, directions={path: U, ("params", "x"): U})
