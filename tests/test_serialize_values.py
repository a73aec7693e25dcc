"""Column value encodings ("i64", "u256", "i64+u256"): the encoder's choice, round trips through Python's
decoder and the Rust extension's, vectorized validation with the row of the first bad value, and malformed
bytes rejected with a one-line error on both sides."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from circuit_compiler import backend as be
from circuit_compiler.ir import Assignment
from circuit_compiler.serialize import (
    SPARSE,
    NonCanonicalValue,
    decode_values,
    encode_values,
    load_circuit,
    save_circuit,
)
from circuit_compiler.srs import _halo2

P = be.BLS12_381_SCALAR_MODULUS
I64_MAX = (1 << 63) - 1


def reference_encoding(values: np.ndarray) -> tuple[str, bytes]:
    """The encoder before "i64+u256" (one value at a time): i64 when all fit, else u256 of everything."""
    ints = [int(v) % P for v in values]
    small = [v if v <= I64_MAX else v - P for v in ints]
    if all(-(1 << 63) <= v <= I64_MAX for v in small):
        return "i64", np.asarray(small, dtype="<i8").tobytes()
    return "u256", b"".join(v.to_bytes(32, "little") for v in ints)


def mixed_column(rng: np.random.Generator, n: int, large: int) -> np.ndarray:
    """Canonical object column: small ± values (negatives as p - |v|), int64 extremes, ``large`` field-sized."""
    values = rng.integers(-(1 << 20), 1 << 20, n).astype(object) % P
    if n >= 4:
        values[:4] = [I64_MAX, P - (1 << 63), (1 << 63), P - (1 << 63) - 1][:4]  # edges: small, small, large, large
    rows = rng.choice(n, min(large, n), replace=False)
    values[rows] = [int(x) % P for x in rng.integers(1, 1 << 62, (rows.size, 5)).astype(object).prod(axis=1)]
    return values


def canonical(values: np.ndarray) -> list[int]:
    return [int(v) % P for v in values]


COLUMNS = {
    "empty": np.zeros(0, dtype=object),
    "all small": (np.arange(-50, 50).astype(object) % P),
    "all large": np.array([P - 1 - (i << 200) for i in range(64)], dtype=object),
    "salted": mixed_column(np.random.default_rng(1), 4096, 3),
    "half large": mixed_column(np.random.default_rng(2), 1000, 500),
    "one value": np.array([P // 3], dtype=object),
}


@pytest.mark.parametrize("name", sorted(COLUMNS))
def test_columns_round_trip_through_the_python_decoder(name):
    values = COLUMNS[name]
    encoding, blob = encode_values(values, P)
    assert canonical(decode_values(encoding, blob, P)) == canonical(values)


def test_the_encoder_keeps_small_values_as_int64_and_lists_the_large_ones():
    assert encode_values(COLUMNS["all small"], P) == reference_encoding(COLUMNS["all small"])
    assert encode_values(COLUMNS["empty"], P)[0] == "i64"
    assert encode_values(COLUMNS["all large"], P) == reference_encoding(COLUMNS["all large"])  # u256 is shorter
    values = COLUMNS["salted"]
    encoding, blob = encode_values(values, P)
    assert encoding == SPARSE
    large = np.flatnonzero([not (v <= I64_MAX or v >= P - (1 << 63)) for v in values])
    assert len(blob) == 24 + 8 * values.size + 40 * large.size
    header = np.frombuffer(blob[:24], "<u8")
    assert header.tolist() == [1, values.size, large.size]
    rows = np.frombuffer(blob, "<u8", count=large.size, offset=24 + 8 * values.size)
    assert rows.tolist() == large.tolist()


def test_random_mixed_columns_round_trip():
    rng = np.random.default_rng(7)
    for _ in range(20):
        n = int(rng.integers(0, 300))
        values = mixed_column(rng, n, int(rng.integers(0, n + 1)))
        encoding, blob = encode_values(values, P)
        assert canonical(decode_values(encoding, blob, P)) == canonical(values), (n, encoding)


def test_unreduced_and_numpy_integers_are_taken_mod_p():
    values = np.array([-1, P, P + 5, np.int64(-3), np.uint64(7), True, 3 * P - 7], dtype=object)
    assert encode_values(values, P) == reference_encoding(values)
    values[-1] = 3 * P + (1 << 100)
    encoding, blob = encode_values(values, P)
    assert encoding == SPARSE and canonical(decode_values(encoding, blob, P)) == canonical(values)


def test_non_canonical_values_name_the_first_bad_row():
    for bad_row, bad in ((0, P), (5, -1), (7, 2.5), (3, "1")):
        values = np.zeros(10, dtype=object)
        values[bad_row] = bad
        values[9] = P + 1
        with pytest.raises(NonCanonicalValue, match=f"row {bad_row} is not a canonical field element"):
            encode_values(values, P, reduce=False)
        with pytest.raises(be.BackendError, match=f"^col: value at row {bad_row} is not a canonical field element"):
            be._column_bytes(values, P, "col")
    with pytest.raises(NonCanonicalValue, match="row 2"):
        encode_values(np.array([0, 1, 2.5], dtype=object), P)  # a non-integer is refused even when reducing


@pytest.fixture(scope="module")
def srs(tmp_path_factory):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", be.InsecureSrsWarning)
        return be.Srs.generate_dev(12, tmp_path_factory.mktemp("srs") / "dev.srs", seed=7)


@pytest.mark.prover
@pytest.mark.parametrize("name", sorted(COLUMNS))
def test_rust_decodes_every_encoding_to_the_same_field_elements(srs, name):
    values = COLUMNS[name][: 1 << 12]
    encoding, blob = encode_values(values, P)
    u256 = b"".join(v.to_bytes(32, "little") for v in canonical(values))
    for scheme in ("plain", "sized"):
        be.clear_commitment_cache()
        reference = _halo2.commit(srs.handle, 12, "u256", u256, scheme)
        assert bytes(_halo2.commit(srs.handle, 12, encoding, blob, scheme)) == bytes(reference), (encoding, scheme)


def sparse_blob(n: int, rows: list[int], large: list[int], *, version: int = 1, small: np.ndarray | None = None):
    small = np.zeros(n, "<i8") if small is None else small
    header = np.array([version, n, len(rows)], "<u8").tobytes()
    tail = b"".join(v.to_bytes(32, "little") for v in large)
    return header + small.tobytes() + np.array(rows, "<u8").tobytes() + tail


MALFORMED = {
    "short header": (b"\x01" * 10, "shorter than its 24-byte header"),
    "version": (sparse_blob(4, [1], [P - 1 >> 1], version=2), "layout version 2, expected 1"),
    "length": (sparse_blob(4, [1], [P - 1 >> 1])[:-1], "need 96"),
    "row beyond": (sparse_blob(4, [4], [P >> 1]), "large value at row 4, beyond its 4 rows"),
    "unordered rows": (sparse_blob(4, [2, 1], [P >> 1, P >> 2]), "not strictly increasing"),
    "repeated rows": (sparse_blob(4, [1, 1], [P >> 1, P >> 2]), "not strictly increasing"),
    "slot not 0": (sparse_blob(4, [2], [P >> 1], small=np.array([0, 0, 5, 0], "<i8")), "row 2 holds a large value"),
    "not < p": (sparse_blob(4, [0, 3], [P >> 1, P]), "value at row 3 is not < p"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_sparse_bytes_are_rejected_by_python(name):
    blob, message = MALFORMED[name]
    with pytest.raises(ValueError, match=message) as info:
        decode_values(SPARSE, blob, P)
    assert "\n" not in str(info.value)


@pytest.mark.prover
@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_sparse_bytes_are_rejected_by_rust(srs, name):
    blob, message = MALFORMED[name]
    with pytest.raises(Exception, match=message) as info:
        _halo2.commit(srs.handle, 4, SPARSE, blob, "plain")
    assert "\n" not in str(info.value) and str(info.value).startswith("committed values: ")


def test_old_encodings_stay_readable():
    values = [5, P - 2, P >> 1]
    u256 = b"".join(v.to_bytes(32, "little") for v in values)
    assert decode_values("u256", u256, P).tolist() == values
    assert decode_values("i64", np.array([5, -2], "<i8").tobytes(), P).tolist() == [5, -2]
    with pytest.raises(ValueError, match="row 1 is not < p"):
        decode_values("u256", (1).to_bytes(32, "little") + P.to_bytes(32, "little"), P)
    with pytest.raises(ValueError, match="unknown value encoding"):
        decode_values("i32", b"", P)


def test_a_saved_circuit_with_salted_columns_round_trips(tmp_path):
    from test_halo2_backend import obs_chunk

    cs, assignment = obs_chunk(level="F", seed=3)
    rng = np.random.default_rng(4)
    committed = {}
    for name, column in assignment.committed.items():
        column = np.asarray(column, dtype=object).copy()
        column[-3:] = [int(x) for x in rng.integers(1, 1 << 62, 3).astype(object) ** 4 % P]  # field-sized cells
        committed[name] = column
    salted = Assignment(advice=assignment.advice, instance=assignment.instance, committed=committed)
    _, modulus, loaded = load_circuit(save_circuit(tmp_path / "chunk", cs, P, salted))
    assert modulus == P
    for table in ("advice", "instance", "committed"):
        ours, theirs = getattr(salted, table), getattr(loaded, table)
        assert sorted(ours) == sorted(theirs)
        for name in ours:
            assert canonical(theirs[name]) == canonical(ours[name]), (table, name)
    encodings = {encode_values(v, P)[0] for v in committed.values()}
    assert encodings == {SPARSE}
