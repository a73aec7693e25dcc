"""KZG commitments of committed-instance columns, recomputed independently with py_ecc.

For an SRS from a known test secret τ, the commitment of values v over the 2^k domain must be
Σ_i v_i·L_i(τ)·G1, with the Lagrange polynomials L_i of the 2^k-th roots of unity ω^i (ω = 7^((p-1)/2^k),
which is midnight-curves' root of unity) computed here from their product definition. On an SRS whose
secret nobody knows, commitments must still add up: commit(a) + commit(b) = commit(a + b).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from py_ecc.bls.point_compression import compress_G1, decompress_G1
from py_ecc.optimized_bls12_381 import G1, Z1, add, eq, multiply, normalize

from circuit_compiler import backend as be
from circuit_compiler.srs import Srs, expected_file_size, read_sidecar, srs_info
from jaxapex.cli import main as cli

pytestmark = pytest.mark.prover

P = be.BLS12_381_SCALAR_MODULUS
TAU = 0x2B1F_6A35_09C4_D8E7_1177_5A0B_33E2_9C41_D5F0_8C6E_7A92_1B3D_4C5E_6F70_8192_A3B4 % P
K = 4  # 16-point domain: the independent computation is exact and fast


def root_of_unity(k: int) -> int:
    """Generator of the 2^k-th roots of unity, derived from the multiplicative generator 7."""
    return pow(7, (P - 1) >> k, P)


def test_root_of_unity_is_midnights():
    """midnight-curves stores its 2^32 root of unity in Montgomery form (R = 2^256); it must be 7^t."""
    montgomery_limbs = [0xB9B58D8C5F0E466A, 0x5B1B4C801819D7EC, 0x0AF53AE352A31E64, 0x5BF3ADDA19E9B27B]
    montgomery = sum(limb << (64 * i) for i, limb in enumerate(montgomery_limbs))
    omega = root_of_unity(32)
    assert montgomery == omega * (1 << 256) % P
    assert pow(omega, 1 << 31, P) == P - 1  # order exactly 2^32


def lagrange_at(tau: int, k: int) -> list[int]:
    """L_i(τ) = Π_{j≠i} (τ - ω^j) / (ω^i - ω^j) over the domain {ω^i}, i < 2^k."""
    n = 1 << k
    omega = root_of_unity(k)
    points = [pow(omega, i, P) for i in range(n)]
    out = []
    for i, xi in enumerate(points):
        num = den = 1
        for j, xj in enumerate(points):
            if j != i:
                num = num * (tau - xj) % P
                den = den * (xi - xj) % P
        out.append(num * pow(den, -1, P) % P)
    return out


def g1_bytes(point) -> bytes:
    return compress_G1(point).to_bytes(48, "big")


def g1_point(data: bytes):
    return decompress_G1(int.from_bytes(data, "big"))


def reference_commitment(values: list[int], tau: int, k: int) -> bytes:
    basis = lagrange_at(tau, k)
    scalar = sum(v * l for v, l in zip(values, basis)) % P
    return g1_bytes(multiply(G1, scalar) if scalar else Z1)


@pytest.fixture(scope="module")
def known_srs():
    return Srs.from_secret_insecure(K + 2, TAU)


@pytest.fixture(scope="module")
def dev_srs(tmp_path_factory):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", be.InsecureSrsWarning)
        return Srs.generate_dev(8, tmp_path_factory.mktemp("srs") / "dev.srs", seed=3)


field_elements = st.one_of(st.integers(-(1 << 63), (1 << 63) - 1), st.integers(0, P - 1))


@settings(max_examples=12, deadline=None)
@given(values=st.lists(field_elements, min_size=0, max_size=1 << K), k=st.sampled_from([K, K + 1]))
def test_commitment_is_the_lagrange_combination_at_tau(known_srs, values, k):
    canonical = [v % P for v in values]
    column = np.array(canonical, dtype=object)
    assert be.commit(known_srs, k, column) == reference_commitment(canonical, TAU, k)


@pytest.mark.parametrize("k", [K, K + 1])
def test_lagrange_points_are_the_unit_column_commitments_at_tau(known_srs, k):
    rows = [0, 1, (1 << k) - 2, (1 << k) - 1]
    units = [[0] * r + [1] for r in rows]
    assert be.lagrange_points(known_srs, k, rows) == [reference_commitment(u, TAU, k) for u in units]
    with pytest.raises(be.BackendError, match=f"row {1 << k} is outside the domain"):
        be.lagrange_points(known_srs, k, [1 << k])


def test_int64_and_object_encodings_commit_alike(known_srs):
    values = np.array([-3, 0, 5, -(1 << 62), (1 << 62), 7], dtype=np.int64)
    as_objects = np.array([int(v) % P for v in values], dtype=object)
    assert be.commit(known_srs, K, values) == be.commit(known_srs, K, as_objects)
    assert be.commit(known_srs, K, values) == reference_commitment([int(v) % P for v in values], TAU, K)


def test_missing_rows_are_zero(known_srs):
    values = np.arange(1, 6, dtype=np.int64)
    padded = np.concatenate([values, np.zeros((1 << K) - len(values), np.int64)])
    assert be.commit(known_srs, K, values) == be.commit(known_srs, K, padded)
    assert be.commit(known_srs, K, np.zeros(0, np.int64)) == g1_bytes(Z1)


def test_commitments_are_additively_homomorphic(dev_srs):
    rng = np.random.default_rng(0)
    k = 8
    for _ in range(3):
        a = [int.from_bytes(rng.bytes(32), "little") % P for _ in range(1 << k)]
        b = [int.from_bytes(rng.bytes(32), "little") % P for _ in range(1 << k)]
        ca, cb = (be.commit(dev_srs, k, np.array(x, dtype=object)) for x in (a, b))
        c_sum = be.commit(dev_srs, k, np.array([(x + y) % P for x, y in zip(a, b)], dtype=object))
        assert eq(add(g1_point(ca), g1_point(cb)), g1_point(c_sum))
        assert ca != cb
        # and scaling: commit(3a) = 3·commit(a)
        c3 = be.commit(dev_srs, k, np.array([3 * x % P for x in a], dtype=object))
        assert eq(multiply(g1_point(ca), 3), g1_point(c3))


def test_commitment_is_a_valid_compressed_point(dev_srs):
    c = be.commit(dev_srs, 6, np.arange(64, dtype=np.int64))
    assert len(c) == be.COMMITMENT_BYTES
    x, y = normalize(g1_point(c))
    assert g1_bytes(g1_point(c)) == c and (x, y) != (0, 0)


def test_commitments_of_different_sizes_use_their_own_domain(known_srs):
    """The same values committed over 2^k and 2^(k+1) points differ (different Lagrange bases)."""
    values = np.arange(1, 9, dtype=np.int64)
    assert be.commit(known_srs, K, values) != be.commit(known_srs, K + 1, values)


def test_bad_commit_inputs_raise(known_srs):
    with pytest.raises(be.BackendError, match="do not fit"):
        be.commit(known_srs, K, np.zeros((1 << K) + 1, np.int64))
    with pytest.raises(be.BackendError, match="canonical"):
        be.commit(known_srs, K, np.array([P], dtype=object))
    with pytest.raises(be.BackendError, match="up to k"):
        be.commit(known_srs, known_srs.k + 1, np.zeros(1, np.int64))


# -------------------------------------------------------------------------------------------- SRS files


def test_srs_file_layout_and_info(dev_srs):
    info = srs_info(dev_srs.path)
    assert info["k"] == 8 and info["sha256"] == dev_srs.sha256 and info["development"]
    assert info["bytes"] == expected_file_size(8) and info["size_ok"]
    data = dev_srs.path.read_bytes()
    # [1]G2 then [τ]G2 after magic and k; then the monomial points, the first being the G1 generator
    g0 = data[8 + 4 + 2 * 192 : 8 + 4 + 2 * 192 + 96]
    x = int.from_bytes(g0[:48], "big")
    assert (x, int.from_bytes(g0[48:], "big")) == tuple(int(c) for c in normalize(G1))


def test_srs_secret_matches_the_points(known_srs):
    """The monomial points of a known-τ SRS are τ^i·G1 (read straight from the file)."""
    data = known_srs.path.read_bytes()
    for i in (0, 1, 5):
        raw = data[8 + 4 + 2 * 192 + 96 * i : 8 + 4 + 2 * 192 + 96 * (i + 1)]
        point = (int.from_bytes(raw[:48], "big"), int.from_bytes(raw[48:], "big"))
        assert point == tuple(int(c) for c in normalize(multiply(G1, pow(TAU, i, P))))


def test_loaded_srs_commits_like_the_generated_one(dev_srs):
    values = np.arange(100, dtype=np.int64)
    with pytest.warns(be.InsecureSrsWarning, match="DEVELOPMENT"):  # its sidecar says so
        full = Srs.load(dev_srs.path)  # every point checked
    with pytest.warns(be.InsecureSrsWarning):
        pinned = Srs.load(dev_srs.path, expected_sha256=dev_srs.sha256)
    assert be.commit(full, 7, values) == be.commit(pinned, 7, values) == be.commit(dev_srs, 7, values)
    with pytest.raises(be.BackendError, match="SHA-256"):
        Srs.load(dev_srs.path, expected_sha256="0" * 64)


def test_downsized_srs_is_a_smaller_srs_of_the_same_secret(known_srs, tmp_path):
    small = known_srs.downsize(K, tmp_path / "small.srs")
    assert small.k == K and srs_info(small.path)["size_ok"] and small.sha256 != known_srs.sha256
    values = np.arange(1, 1 << K, dtype=np.int64)
    for k in (K - 1, K):
        assert be.commit(small, k, values[: 1 << k]) == be.commit(known_srs, k, values[: 1 << k])
    Srs.load(small.path).prepare(K)  # passes the full checks on its own


def test_corrupted_srs_files_are_refused(dev_srs, tmp_path):
    data = bytearray(dev_srs.path.read_bytes())
    cases = {
        "magic": (b"NOTANSRS" + bytes(data[8:]), "magic"),
        "truncated": (bytes(data[:-1]), "bytes"),
        "g2": (bytes(data[:20]) + bytes(b ^ 0xFF for b in data[20:40]) + bytes(data[40:]), "G2"),
    }
    # a Lagrange point of k = 7 replaced by another valid point: caught by the basis checks on use
    lagrange_7 = 8 + 4 + 2 * 192 + 96 * ((1 << 8) + (1 << 7) - 2)
    swapped = bytearray(data)
    swapped[lagrange_7 : lagrange_7 + 96] = data[lagrange_7 + 96 : lagrange_7 + 192]
    for name, (blob, message) in cases.items():
        path = tmp_path / f"{name}.srs"
        path.write_bytes(blob)
        with pytest.raises(be.BackendError, match=message):
            Srs.load(path).prepare(7)
    path = tmp_path / "swapped.srs"
    path.write_bytes(bytes(swapped))
    with pytest.raises(be.BackendError, match="Lagrange"):
        Srs.load(path).prepare(7)


def test_cli_generates_and_inspects_an_srs(tmp_path, capsys):
    path = tmp_path / "cli.srs"
    assert cli(["srs", "generate", "--k", "5", "--out", str(path), "--seed", "9"]) == 0
    out, err = capsys.readouterr()
    assert "NOT FOR PRODUCTION" in err
    info = srs_info(path)
    assert info["k"] == 5 and info["sha256"] in out and read_sidecar(path)["development"] is True
    assert cli(["srs", "info", str(path), "--json", "--check"]) == 0
    shown = capsys.readouterr().out
    assert '"check": "ok' in shown and info["sha256"] in shown
    path.write_bytes(path.read_bytes()[:-96])
    assert cli(["srs", "info", str(path)]) == 1
    assert "WRONG SIZE" in capsys.readouterr().out
