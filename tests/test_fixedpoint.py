"""Fixed point: quantization that refuses, per-block normalization, field-overflow bounds, exact products."""

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from circuit_compiler.field import BLS12_381_FR, BN254_FR
from circuit_compiler.fixedpoint import (
    FieldOverflowError,
    FixedPointSpec,
    QuantizationError,
    bounds,
    check_bounds,
    check_fits,
    delta_error_bound,
    dequantize,
    exact_cumsum_products,
    exact_matvec,
    normalize_blocks,
    obs_transfer_matrix,
    quantize,
    quantize_fisher_blocks,
    signed_range,
)

# ----------------------------------------------------------------------------------------- quantization


def test_quantize_exact_values_and_round_half_even():
    q = quantize(np.array([0.5, -0.25, 1.0 / 3, 0.375, -0.375]), 3, 8, name="w")
    # 0.375·8 = 3 exactly; 1/3·8 = 2.67 -> 3; ties: 0.5·8 = 4, -0.25·8 = -2 (exact)
    assert q.tolist() == [4, -2, 3, 3, -3]
    ties = quantize(np.array([0.0625, 0.1875, -0.0625]), 3, 8)  # 0.5, 1.5, -0.5 units -> even
    assert ties.tolist() == [0, 2, 0]
    assert q.dtype == np.int64


def test_quantize_range_edges_and_refusal_message():
    lo, hi = signed_range(8)
    assert (lo, hi) == (-128, 127)
    assert quantize(np.array([127 / 16, -8.0]), 4, 8).tolist() == [127, -128]
    x = np.zeros((2, 3))
    x[1, 2] = 8.0  # 128 at scale 2^4: one past the top of a signed 8-bit value
    with pytest.raises(QuantizationError) as err:
        quantize(x, 4, 8, name="theta")
    message = str(err.value)
    assert "theta[1, 2]" in message and "8.0" in message and "[-8.0, 7.9375]" in message
    assert "1 of 6 values" in message


def test_quantize_refuses_non_finite():
    with pytest.raises(QuantizationError, match=r"G\[0, 1\] = nan is not finite"):
        quantize(np.array([[0.0, np.nan]]), 4, 8, name="G")


@settings(max_examples=50, deadline=None)
@given(
    frac=st.integers(0, 30),
    width=st.integers(2, 40),
    values=st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=10),
)
def test_quantize_never_clips(frac, width, values):
    x = np.array(values)
    lo, hi = signed_range(width)
    ideal = np.rint(x * 2.0**frac)
    try:
        q = quantize(x, frac, width)
    except QuantizationError:
        assert ((ideal < lo) | (ideal > hi)).any()
        return
    assert np.array_equal(q, ideal.astype(np.int64))
    assert np.all(np.abs(dequantize(q, frac) - x) <= 2.0 ** (-frac - 1))


def test_check_fits_names_value():
    check_fits(np.array([-4, 3]), 3, name="d")
    with pytest.raises(QuantizationError, match=r"d\[1\] = 4 does not fit a signed 3-bit range \[-4, 3\]"):
        check_fits(np.array([0, 4]), 3, name="d")
    with pytest.raises(QuantizationError, match="unsigned 2-bit"):
        check_fits(np.array([-1]), 2, name="r", signed=False)


# ---------------------------------------------------------------------------------------------- the spec


def test_spec_validation():
    spec = FixedPointSpec()
    assert spec.y_frac == spec.f_w + spec.s - spec.f_g
    assert spec.tau == 1 << (spec.s - 1)
    assert FixedPointSpec.from_dict(spec.to_dict()) == spec
    assert spec.limb_bits is None and spec.to_dict()["limb_bits"] is None  # chosen per chunk shape
    pinned = FixedPointSpec(w_y=50, limb_bits=12)  # widths need not be whole limbs: the top limb is shorter
    assert FixedPointSpec.from_dict(pinned.to_dict()) == pinned
    with pytest.raises(ValueError, match=r"limb_bits must be None \(automatic\) or in \[1, 24\]"):
        FixedPointSpec(limb_bits=25)
    with pytest.raises(ValueError, match="w_delta=72 must be in"):
        FixedPointSpec(w_delta=72)
    with pytest.raises(ValueError, match="must not be fractional"):
        FixedPointSpec(f_w=0, f_g=30, s=12)
    with pytest.raises(ValueError, match="block size B=8192 is too large"):
        FixedPointSpec(f_g=12, s=24).validate_block_size(8192)
    FixedPointSpec(f_g=12, s=24).validate_block_size(4096)


def test_default_widths_fit_the_default_block_size_exactly():
    """s = f_g + log2(16): plain rounding of ỹ always meets the residual bound at B = 16, not beyond."""
    spec = FixedPointSpec()
    spec.validate_block_size(16)
    with pytest.raises(ValueError, match="need s >= f_g \\+ log2\\(B\\) = 17"):
        spec.validate_block_size(32)
    # what the widths admit, in weight units: |Δ| < 2^13 and |Ĝ_SS⁻¹ θ_S| < 2^9
    assert 2.0 ** (spec.w_delta - 1 - spec.f_w) == 2.0**13
    assert 2.0 ** (spec.w_y - 1 - spec.y_frac) == 2.0**9


# -------------------------------------------------------------------------------------- normalization


def float_obs_delta(G: np.ndarray, theta: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Reference group OBS per block: Δ = -G[:, S] G_SS⁻¹ θ_S (0 for blocks with empty S)."""
    out = np.zeros_like(theta)
    for b in range(G.shape[0]):
        S = np.flatnonzero(mask[b])
        if S.size:
            out[b] = -G[b][:, S] @ np.linalg.solve(G[b][np.ix_(S, S)], theta[b, S])
    return out


def random_fisher_inverse(rng, blocks, B, samples=12, damp=0.1):
    X = rng.normal(size=(blocks, B, samples))
    F = X @ X.transpose(0, 2, 1) / samples + damp * np.eye(B)
    return np.linalg.inv(F)


def test_normalize_blocks_leaves_delta_unchanged():
    rng = np.random.default_rng(1)
    G = random_fisher_inverse(rng, 3, 6) * np.array([1e-3, 5.0, 1e4])[:, None, None]
    theta = rng.normal(size=(3, 6))
    mask = rng.random((3, 6)) < 0.4
    mask[0, :2] = True
    G_hat, scale = normalize_blocks(G)
    assert np.allclose(np.max(np.abs(G_hat), axis=(1, 2)), 1.0)
    assert np.allclose(G_hat * scale[:, None, None], G)
    np.testing.assert_allclose(
        float_obs_delta(G_hat, theta, mask), float_obs_delta(G, theta, mask), rtol=1e-9, atol=1e-12
    )
    zero = normalize_blocks(np.zeros((1, 2, 2)))
    assert zero[1].tolist() == [1.0] and not zero[0].any()


def test_quantize_fisher_blocks_bounds_magnitude():
    rng = np.random.default_rng(2)
    spec = FixedPointSpec(f_g=10)
    G_q, scale = quantize_fisher_blocks(random_fisher_inverse(rng, 4, 8), spec)
    assert G_q.dtype == np.int64 and np.max(np.abs(G_q)) == 1 << spec.f_g  # the max entry maps to exactly 2^f_g
    with pytest.raises(QuantizationError, match="not finite"):
        quantize_fisher_blocks(np.full((1, 2, 2), np.inf), spec)


def test_quantize_fisher_blocks_is_exactly_symmetric_and_refuses_non_symmetric_blocks():
    rng = np.random.default_rng(4)
    spec = FixedPointSpec(f_g=12)
    G = random_fisher_inverse(rng, 5, 8)
    noisy = G + rng.normal(scale=1e-9, size=G.shape)  # round-off of a float inversion
    G_q, _ = quantize_fisher_blocks(noisy, spec)
    assert np.array_equal(G_q, np.swapaxes(G_q, 1, 2))
    # the symmetric part is what gets rounded: on an exactly symmetric input nothing changes
    G_hat, _ = normalize_blocks(G)
    assert np.array_equal(
        quantize_fisher_blocks(G, spec)[0], quantize(0.5 * (G_hat + np.swapaxes(G_hat, 1, 2)), spec.f_g, spec.f_g + 2)
    )
    skewed = G.copy()
    skewed[3, 0, 1] += 0.01 * np.max(np.abs(G[3]))
    with pytest.raises(QuantizationError, match=r"G block 3 is not symmetric: max\|G - Gᵀ\| / max\|G\| = 0.01"):
        quantize_fisher_blocks(skewed, spec)


# ----------------------------------------------------------------------------------------------- bounds


def test_bounds_are_the_worst_case_of_the_formulas():
    spec = FixedPointSpec(f_w=10, f_g=8, s=16, w_w=20, w_delta=16, w_y=32, limb_bits=8)
    B = 16
    report = check_bounds(spec, block_size=B)
    z = B * 2**8 * 2**31
    assert report["mac_partial_sum"].magnitude == z
    assert report["residual"].magnitude == z + 2**19 * 2**16 + (2**16 - 1) + 2**15
    assert report["rescale"].magnitude == z + 2**15 * 2**16 + (2**16 - 1)
    assert report["mac_partial_sum"].fits_int64
    assert report.headroom_bits > 200
    assert "mac_partial_sum" in report.table() and "2^-10" in report.delta_error_formula()
    assert report.to_dict()["limit_bits"] == BLS12_381_FR.half.bit_length()
    with pytest.raises(KeyError, match="no bound named 'nope'"):
        report["nope"]


def test_bounds_refuse_a_mac_that_could_wrap_the_field():
    spec = FixedPointSpec(f_w=200, f_g=190, s=12, w_y=60, limb_bits=12)
    assert bounds(spec, block_size=64)["mac_product"].bits == 250  # each product fits, their sum does not
    with pytest.raises(FieldOverflowError, match=r"'mac_partial_sum' .* ≈ 2\^255.00 >= p/2 ≈ 2\^253.86"):
        check_bounds(spec, block_size=64)


def test_bounds_depend_on_the_field():
    # θ·2^s ≈ 2^253 fits BLS12-381 Fr (p/2 ≈ 2^253.86) but not BN254 Fr (p/2 ≈ 2^252.6).
    spec = FixedPointSpec(f_w=16, f_g=12, s=192, w_w=62, w_delta=24, w_y=48, limb_bits=12)
    report = check_bounds(spec, block_size=8, field=BLS12_381_FR)
    assert report["residual"].bits == 254
    with pytest.raises(FieldOverflowError, match=r"'residual'.*bn254_fr"):
        check_bounds(spec, block_size=8, field=BN254_FR)
    assert bounds(spec, block_size=8, field=BN254_FR)["residual"].magnitude >= BN254_FR.half


# ---------------------------------------------------------------------------------- stated error bound


def test_transfer_matrix_matches_per_block_solves():
    rng = np.random.default_rng(3)
    G = random_fisher_inverse(rng, 4, 7)
    mask = rng.random((4, 7)) < 0.4
    mask[1] = False
    mask[2] = True
    T = obs_transfer_matrix(G, mask)
    for b in range(4):
        S = np.flatnonzero(mask[b])
        expected = np.zeros((7, 7))
        if S.size:
            expected[:, S] = G[b][:, S] @ np.linalg.inv(G[b][np.ix_(S, S)])
        np.testing.assert_allclose(T[b], expected, atol=1e-9)
    bound = delta_error_bound(G, mask, FixedPointSpec(f_w=10))
    assert np.all(bound[mask] == 0) and np.all(bound[~mask] >= 2.0**-10)
    assert np.all(bound[1] == 2.0**-10)  # an untouched block: only the floor of the rescale


# -------------------------------------------------------------------------------------- exact products

big_ints = st.integers(-(1 << 62), (1 << 62) - 1)


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_exact_matvec_and_cumsum_match_python_ints(data):
    m = data.draw(st.integers(1, 5))
    n = data.draw(st.integers(1, 6))
    a_bits = data.draw(st.integers(1, 30))
    x_bits = data.draw(st.integers(1, 62))
    a = np.array(
        data.draw(st.lists(st.integers(-(1 << a_bits), 1 << a_bits), min_size=2 * m * n, max_size=2 * m * n)),
        dtype=np.int64,
    ).reshape(2, m, n)
    x = np.array(
        data.draw(st.lists(st.integers(-(1 << x_bits), 1 << x_bits), min_size=2 * n, max_size=2 * n)), dtype=np.int64
    ).reshape(2, n)
    A, X = a.astype(object), x.astype(object)
    expected = [[sum(A[b, i, j] * X[b, j] for j in range(n)) for i in range(m)] for b in range(2)]
    got = exact_matvec(a, x)
    assert [[int(v) for v in row] for row in got] == expected
    fits = all(-(1 << 63) <= v < (1 << 63) for row in expected for v in row)
    # int64 exactly when the magnitude bound the helper uses fits
    assert (got.dtype == np.int64) == (int(np.abs(a).max()) * int(np.abs(x).max()) * n < 1 << 63)
    assert fits or got.dtype == object
    cum = exact_cumsum_products(a, x)
    assert cum.shape == (2, m, n)
    expected_cum = [
        [[sum(A[b, i, jj] * X[b, jj] for jj in range(j + 1)) for j in range(n)] for i in range(m)] for b in range(2)
    ]
    assert [[[int(v) for v in r] for r in blk] for blk in cum] == expected_cum


def test_exact_products_beyond_int64_use_python_ints():
    a = np.full((1, 1, 4), 1 << 30, dtype=np.int64)
    x = np.full((1, 4), (1 << 62) - 1, dtype=np.int64)
    got = exact_matvec(a, x)
    assert got.dtype == object and int(got[0, 0]) == 4 * (1 << 30) * ((1 << 62) - 1)
    cum = exact_cumsum_products(a, x)
    assert [int(v) for v in cum[0, 0]] == [k * (1 << 30) * ((1 << 62) - 1) for k in range(1, 5)]
    assert exact_matvec(np.zeros((2, 3, 3), dtype=np.int64), x.repeat(2, 0)[:, :3]).tolist() == [[0] * 3] * 2


@given(st.integers(min_value=1, max_value=4096))
def test_for_block_size_admits_the_block_and_keeps_the_range_of_y(block_size):
    """The shift grows just enough for B (never for B <= 16), and ỹ keeps its range in weight units."""
    base = FixedPointSpec()
    spec = base.for_block_size(block_size)
    spec.validate_block_size(block_size)
    assert spec.s == max(base.s, base.f_g + int(np.ceil(np.log2(block_size))))
    assert spec.w_y - spec.y_frac == base.w_y - base.y_frac
    assert (spec.f_w, spec.f_g, spec.w_w, spec.w_delta) == (base.f_w, base.f_g, base.w_w, base.w_delta)
    if spec.s > base.s:
        with pytest.raises(ValueError, match="too large"):
            dataclasses.replace(spec, s=spec.s - 1, w_y=spec.w_y - 1).validate_block_size(block_size)
    with pytest.raises(ValueError, match="block size must be >= 1"):
        base.for_block_size(0)
