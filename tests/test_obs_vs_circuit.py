"""The two OBS implementations meet: the JAX pipeline researchers run (per-example gradients → Fisher
blocks → inverse → ``group_obs``) and the fixed-point Δ the circuit proves (``obs_witness`` with the
protocol's formats) agree on the same (θ, G, mask) within the bound the compiler states."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from circuit_compiler.fixedpoint import delta_error_bound, dequantize, spec_for_block_size
from circuit_compiler.witness import obs_witness
from jaxapex.fisher import invert_blocks
from jaxapex.obs import group_obs
from jaxapex.precomputed import fisher_from_gradients


def jax_inverse_fisher(rng, *, n_blocks: int, B: int, examples: int, damp: float) -> np.ndarray:
    """G = F⁻¹ from per-example gradients of a (n_blocks·B/4, 4) matrix, through the library's Fisher path."""
    grads = rng.normal(size=(examples, n_blocks * B // 4, 4)).astype(np.float32)
    F = fisher_from_gradients(grads, B, np.arange(n_blocks), damp=damp)
    return np.asarray(invert_blocks(F), np.float64)


# Few distinct shapes (each compiles once): B, blocks and example counts low-rank (3) and full-rank (24).
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    B=st.sampled_from([4, 8, 16]),
    n_blocks=st.sampled_from([1, 3]),
    density=st.sampled_from([0.1, 0.3, 0.6, 1.0]),
    examples=st.sampled_from([3, 24]),
    damp=st.sampled_from([0.05, 0.3, 1.0]),
    seed=st.integers(0, 2**32 - 1),
)
def test_jax_group_obs_and_the_circuit_delta_agree_within_the_stated_bound(B, n_blocks, density, examples, damp, seed):
    rng = np.random.default_rng(seed)
    theta = np.clip(rng.normal(scale=0.5, size=(n_blocks * B // 4, 4)), -3, 3)
    mask = rng.random(theta.shape) < density
    G = jax_inverse_fisher(rng, n_blocks=n_blocks, B=B, examples=examples, damp=damp)
    spec = spec_for_block_size(B)  # the formats the protocol proves

    witness = obs_witness(theta, G, mask, spec=spec)  # the circuit's side: what the proof is about

    # JAX group OBS on exactly the values the circuit commits: the dequantized θ̂ and Ĝ
    theta_hat = dequantize(witness.theta_q, spec.f_w)
    G_hat = dequantize(witness.G_q, spec.f_g)
    _, delta_jax = group_obs(jnp.asarray(theta_hat, jnp.float32), G_hat, witness.mask)
    delta_jax = np.asarray(delta_jax, np.float64)
    delta_circuit = dequantize(witness.theta_new_q, spec.f_w) - theta_hat

    bound = delta_error_bound(G_hat, witness.mask, spec)
    float32_slack = 4 * np.finfo(np.float32).eps * (1 + np.abs(delta_jax))  # group_obs returns θ's float32
    error = np.abs(delta_circuit - delta_jax)
    assert np.all(error <= bound + float32_slack), float((error - bound - float32_slack).max())
    # on the mask both remove the weight exactly
    assert np.array_equal(delta_circuit[witness.mask], -theta_hat[witness.mask])
    assert np.all(dequantize(witness.theta_new_q, spec.f_w)[witness.mask] == 0)


def test_the_bound_is_not_vacuous():
    """The error is a few units in the last place of θ', and the bound is of that order too."""
    rng = np.random.default_rng(4)
    theta = rng.normal(scale=0.5, size=(16, 4))
    mask = rng.random(theta.shape) < 0.25
    G = jax_inverse_fisher(rng, n_blocks=4, B=16, examples=24, damp=0.3)
    spec = spec_for_block_size(16)
    witness = obs_witness(theta, G, mask, spec=spec)
    theta_hat, G_hat = dequantize(witness.theta_q, spec.f_w), dequantize(witness.G_q, spec.f_g)
    _, delta_jax = group_obs(jnp.asarray(theta_hat, jnp.float32), G_hat, witness.mask)
    error = np.abs(dequantize(witness.theta_new_q, spec.f_w) - theta_hat - np.asarray(delta_jax, np.float64))
    ulp = 2.0**-spec.f_w
    assert 0 < error.max() <= 2 * ulp
    assert np.median(delta_error_bound(G_hat, witness.mask, spec)[~witness.mask]) < 50 * ulp
