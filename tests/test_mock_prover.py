"""The vectorized mock prover: honest witnesses pass, every kind of tampering is reported with the right
kind, name, row and values, and its exact arithmetic agrees with a per-row Python-int reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from circuit_compiler.demo import obs_circuit, rescale_circuit
from circuit_compiler.field import BLS12_381_FR, BN254_FR
from circuit_compiler.ir import (
    Assignment,
    Column,
    ColumnKind,
    Constant,
    ConstraintSystem,
    Expression,
    Gate,
    Lookup,
    Negated,
    Product,
    Query,
    Scaled,
    Sum,
    usable_rows,
)
from circuit_compiler.mock_prover import ConstraintViolation, MockProver, assert_satisfied, check, signed

P = BLS12_381_FR.modulus
MASKED_ROWS = (0, 7, 14, 28, 56)  # mask of the seed-0 OBS demo chunk (asserted below)


@pytest.fixture(scope="module")
def obs_f():
    return obs_circuit(level="F")


@pytest.fixture(scope="module")
def obs_r():
    return obs_circuit(level="R")


def keys(failures):
    return {(f.kind, f.name, f.row) for f in failures}


def with_cell(assignment: Assignment, table: str, column: str, row: int, value: int) -> Assignment:
    """A copy of ``assignment`` with one cell replaced (the column becomes canonical object ints if needed)."""
    out = assignment.copy()
    values = getattr(out, table)[column]
    if values.dtype != object and not -(1 << 62) < value < 1 << 62:
        values = np.array([int(v) % P for v in values], dtype=object)
    values[row] = value % P if values.dtype == object else value
    getattr(out, table)[column] = values
    return out


def cell(assignment: Assignment, table: str, column: str, row: int) -> int:
    return signed(int(getattr(assignment, table)[column][row]), P)


# ------------------------------------------------------------------------------------------- honest


def test_demo_mask_is_the_one_the_tampering_tests_assume(obs_f):
    _, assignment, _ = obs_f
    assert tuple(np.flatnonzero(assignment.instance["mask"])) == MASKED_ROWS


def test_honest_obs_witness_passes_at_both_levels(obs_f, obs_r):
    for cs, assignment, modulus in (obs_f, obs_r):
        assert check(cs, assignment, modulus) == []
        assert_satisfied(cs, assignment, modulus)


def test_honest_obs_witness_passes_over_bn254():
    cs, assignment, modulus = obs_circuit(level="F", blocks=2, block_size=8, lanes=2, field=BN254_FR)
    assert modulus == BN254_FR.modulus
    assert check(cs, assignment, modulus) == []


# ------------------------------------------------------------------------------------------ tampering


def test_tampered_delta_fails_exactly_the_gates_that_read_it(obs_f):
    cs, assignment, p = obs_f
    row = 1  # unmasked
    bad = with_cell(assignment, "advice", "delta", row, cell(assignment, "advice", "delta", row) + 1)
    failures = check(cs, bad, p)
    assert keys(failures) == {("gate", "update", row), ("gate", "rescale", row), ("gate", "delta_decompose", row)}
    update = next(f for f in failures if f.name == "update")
    # (1 - m)·(θ' - θ - Δ) with Δ one larger is exactly -1
    assert update.value == -1 and update.constraint == "update"
    shown = {c.column: c.signed for c in update.cells}
    assert shown["delta"] == cell(assignment, "advice", "delta", row) + 1
    assert shown["mask"] == 0
    text = str(update)
    assert "gate 'update/update' on row 1: evaluates to -1, not 0" in text and "delta @ row 1 = " in text


def test_limb_out_of_range_fails_only_its_lookup(obs_f):
    cs, assignment, p = obs_f
    limb1 = assignment.advice["rem_limb_1"]
    row = int(next(r for r in range(64) if limb1[r] >= 1))
    low = int(assignment.advice["rem_limb_0"][row])
    # Same recomposed value (low + 4096 - 4096), so rem_decompose holds; only the table can object.
    bad = with_cell(assignment, "advice", "rem_limb_0", row, low + 4096)
    bad = with_cell(bad, "advice", "rem_limb_1", row, int(limb1[row]) - 1)
    failures = check(cs, bad, p)
    assert keys(failures) == {("lookup", "rem_limb_0", row)}
    assert failures[0].value == (low + 4096,)
    assert "is not in the table" in str(failures[0])


def test_tampered_mac_input_breaks_its_copy_and_the_rows_that_read_it(obs_f):
    cs, assignment, p = obs_f
    row = 3  # block 0, lane group 0, column j = 3: copied from y[3]
    bad = with_cell(assignment, "advice", "y_mac", row, cell(assignment, "advice", "y_mac", row) + 5)
    failures = check(cs, bad, p)
    assert ("copy", "y_mac = y", row) in keys(failures)
    assert ("gate", "y_repeat", row + 16) in keys(failures)  # the next lane group repeats y_mac[-16]
    assert {f.row for f in failures} == {row, row + 16}
    assert {f.name for f in failures if f.kind == "gate"} <= {"mac_step", "y_repeat"}
    copy = next(f for f in failures if f.kind == "copy")
    assert [(c.column, c.row) for c in copy.cells] == [("y_mac", row), ("y", row)]
    assert copy.cells[0].signed == copy.cells[1].signed + 5


def test_flipped_mask_bit_is_caught_on_its_row(obs_f):
    cs, assignment, p = obs_f
    delta, theta_new = assignment.advice["delta"], assignment.committed["theta_new"]
    row = next(r for r in range(64) if r not in MASKED_ROWS and delta[r] != 0 and theta_new[r] != 0)
    bad = with_cell(assignment, "instance", "mask", row, 1)
    assert keys(check(cs, bad, p)) == {
        ("gate", "removal", row),
        ("gate", "no_delta_on_mask", row),
        ("gate", "residual", row),
    }


def test_tampered_committed_weight_fails_the_update(obs_f):
    cs, assignment, p = obs_f
    bad = with_cell(assignment, "committed", "theta", 2, cell(assignment, "committed", "theta", 2) + 1)
    assert keys(check(cs, bad, p)) == {("gate", "update", 2)}


def test_instance_of_wrong_length_or_missing_is_reported(obs_r):
    cs, assignment, p = obs_r
    long = assignment.copy()
    long.instance["mask"] = np.append(long.instance["mask"], 0)
    failures = check(cs, long, p)
    assert [(f.kind, f.name, f.row) for f in failures] == [("value", "mask", None)]
    assert f"has {cs.rows + 1} values but the circuit has {cs.rows} rows" in failures[0].detail
    missing = assignment.copy()
    del missing.instance["touched"]
    extra = assignment.copy()
    extra.advice["stray"] = np.zeros(3, dtype=np.int64)
    assert ("value", "touched", None) in keys(check(cs, missing, p))
    assert ("value", "stray", None) in keys(check(cs, extra, p))


def test_non_canonical_values_are_reported_with_their_cell(obs_r):
    cs, assignment, p = obs_r
    bad = assignment.copy()
    theta = bad.committed["theta"].copy()
    theta[5] = int(theta[5]) + p  # same residue, but not canonical
    bad.committed["theta"] = theta
    failures = check(cs, bad, p)
    assert keys(failures) == {("value", "theta", 5)}
    assert "not a canonical field element" in failures[0].detail


def test_assert_satisfied_names_the_first_failures(obs_f):
    cs, assignment, p = obs_f
    bad = with_cell(assignment, "advice", "delta", 1, cell(assignment, "advice", "delta", 1) + 1)
    with pytest.raises(ConstraintViolation) as err:
        assert_satisfied(cs, bad, p, show=2)
    message = str(err.value)
    assert "3 failure(s)" in message and "on row 1" in message and "... and 1 more" in message
    assert len(err.value.failures) == 3


def test_wrapped_remainder_is_rejected_only_by_the_range_check():
    """The floor division ``n = d·2^s + r`` also holds for ``(d + 1, r - 2^s mod p)``; only the range
    check of r rejects it -- and without one the mock prover accepts the forgery."""
    for broken, expected in ((None, {"r_decompose", "r_limb_0", "r_limb_1"}), ("no_range_check", set())):
        cs, assignment, p = rescale_circuit(broken=broken)
        row, shift = 3, cs.metadata["shift"]
        d, r = int(assignment.advice["d"][row]), int(assignment.advice["r"][row])
        forged = with_cell(assignment, "advice", "d", row, d + 1)
        forged = with_cell(forged, "advice", "r", row, r - (1 << shift))
        d_limbs = _signed_limbs(d + 1, bits=16, limb_bits=4)
        for k, limb in enumerate(d_limbs):
            forged = with_cell(forged, "advice", f"d_limb_{k}", row, limb)
        names = {f.name for f in check(cs, forged, p)}
        assert names <= expected and bool(names) == bool(expected), (broken, names)


def _signed_limbs(value: int, *, bits: int, limb_bits: int) -> list[int]:
    shifted = value + (1 << (bits - 1))
    return [(shifted >> (limb_bits * k)) & ((1 << limb_bits) - 1) for k in range(bits // limb_bits)]


# --------------------------------------------------------------------------------- small IR circuits


def _circuit(rows: int, k: int, columns, gates=(), lookups=(), copies=(), fixed=None) -> ConstraintSystem:
    return ConstraintSystem(
        "t",
        k,
        rows,
        tuple(columns),
        tuple(gates),
        tuple(lookups),
        np.asarray(copies, dtype=np.int64).reshape(-1, 4),
        fixed or {},
    )


A = Column(ColumnKind.ADVICE, 0, "a")
B = Column(ColumnKind.ADVICE, 1, "b")
C = Column(ColumnKind.ADVICE, 2, "c")
Q = Column(ColumnKind.SELECTOR, 0, "q")
OUT = Column(ColumnKind.INSTANCE, 0, "out")
T0 = Column(ColumnKind.TABLE, 0, "t0")
T1 = Column(ColumnKind.TABLE, 1, "t1")


def test_rotation_into_blinding_rows_is_a_failure():
    # acc - acc[-1] on row 0 reads row 2^k - 1, which the real prover fills with random blinding values.
    gate = Gate("step", Q, (("step", A.cur() - A.prev()),))
    cs = _circuit(8, 4, (A, Q), gates=[gate], fixed={"q": np.ones(8, dtype=np.int64)})
    failures = check(cs, Assignment({"a": np.zeros(8, dtype=np.int64)}, {}, {}), P)
    assert keys(failures) == {("gate", "step", 0)}
    assert "blinding row(s) [15]" in failures[0].detail


def test_copy_failures_and_copies_on_non_equality_columns():
    copies = [[0, 2, 3, 0], [0, 3, 2, 1]]  # a[2] = out[0]; a[3] = q[1] (a selector: not allowed)
    cs = _circuit(4, 4, (A, B, Q, OUT), copies=copies, fixed={"q": np.zeros(4, dtype=np.int64)})
    a = np.array([0, 0, 7, 0])
    failures = check(cs, Assignment({"a": a, "b": a}, {"out": np.array([8])}, {}), P)
    assert keys(failures) == {("copy", "a = out", 2), ("copy", "a = q", 3)}
    value = next(f for f in failures if f.name == "a = out")
    assert [(c.column, c.row, c.signed) for c in value.cells] == [("a", 2, 7), ("out", 0, 8)]
    assert "cannot take part in copies" in next(f for f in failures if f.name == "a = q").detail


def test_table_without_zero_row_fails_the_rows_with_the_selector_off():
    lookup = Lookup("in_table", Q, (A.cur(),), (T0,))
    q = np.array([1, 1, 0, 0], dtype=np.int64)
    usable = usable_rows(4, 1)  # a table filling every usable row has no zero padding
    cs = _circuit(4, 4, (A, Q, T0), lookups=[lookup], fixed={"q": q, "t0": np.arange(1, usable + 1, dtype=np.int64)})
    failures = check(cs, Assignment({"a": np.array([3, 5, 0, 0])}, {}, {}), P)
    assert keys(failures) == {("lookup", "in_table", 2)}
    assert f"({usable - 2} such rows)" in failures[0].detail
    assert "no all-zero row" in failures[0].detail


def test_multi_column_lookup_with_field_sized_entries():
    big = P - 12345  # -12345: fits the fast path; P // 3 does not
    t0 = np.array([0, 1, 2, big, P // 3], dtype=object)
    t1 = np.array([0, 10, 20, 7, P // 5], dtype=object)
    lookup = Lookup("pairs", Q, (A.cur(), B.cur()), (T0, T1))
    rows = 6
    cs = _circuit(
        rows, 4, (A, B, Q, T0, T1), lookups=[lookup], fixed={"q": np.ones(rows, dtype=np.int64), "t0": t0, "t1": t1}
    )
    a = np.array([1, 2, big, P // 3, 1, P // 3], dtype=object)
    b = np.array([10, 20, 7, P // 5, 20, P // 5 + 1], dtype=object)
    failures = check(cs, Assignment({"a": a, "b": b}, {}, {}), P)
    assert keys(failures) == {("lookup", "pairs", 4), ("lookup", "pairs", 5)}
    assert next(f for f in failures if f.row == 5).value == (signed(P // 3, P), signed(P // 5 + 1, P))


def test_each_arithmetic_tier_is_exact_and_used():
    """a·b·c - out, checked in each exact tier: int64 (small cells), residues (every cell fits int64, but
    the column-wise bound max|a|·max|b|·max|c| does not: large entries sit in different rows), and Python
    ints (field-sized cells). A wrong ``out`` is found in every tier, a right one never flagged."""
    gate = Gate("abc", Q, (("abc", A.cur() * B.cur() * C.cur() - OUT.cur()),))
    rows = 8
    cs = _circuit(rows, 5, (A, B, C, Q, OUT), gates=[gate], fixed={"q": np.ones(rows, dtype=np.int64)})
    rng = np.random.default_rng(1)
    small = lambda: [int(v) for v in rng.integers(-(1 << 15), 1 << 15, rows)]
    residue = small(), small(), small()
    for row in range(3):  # row r: column r holds ±2^40, the others 1, so every product fits 2^62
        for column in range(3):
            residue[column][row] = (-1) ** row * (1 << 40) if column == row else 1
    field_sized = tuple([P // 3 + int(v) for v in rng.integers(1, 1 << 62, rows)] for _ in range(3))
    for (a, b, c), tier in (((small(), small(), small()), "int64"), (residue, "residue"), (field_sized, "exact")):
        out = [(x * y * z) % P for x, y, z in zip(a, b, c)]
        out[5] = (out[5] + 1) % P
        assignment = Assignment(
            {n: np.array([v % P for v in col], dtype=object) for n, col in zip("abc", (a, b, c))},
            {"out": np.array(out, dtype=object)},
            {},
        )
        prover = MockProver(cs, assignment, P)
        failures = prover.failures()
        assert keys(failures) == {("gate", "abc", 5)}, tier
        assert failures[0].value == -1
        assert prover.tier_rows[tier] == rows and sum(prover.tier_rows.values()) == rows, (tier, prover.tier_rows)


# ------------------------------------------------------------------------------- property: exactness


_EDGE = [
    0,
    1,
    -1,
    2,
    (1 << 31) - 1,
    -(1 << 31),
    (1 << 62) - 1,
    -(1 << 62) + 1,
    1 << 62,
    -(1 << 62),
    (1 << 63) - 1,
    (P - 1) // 2,
    (P + 1) // 2,
]
cell_values = st.one_of(
    st.integers(-(1 << 20), 1 << 20),
    st.integers(-(1 << 45), 1 << 45),
    st.sampled_from(_EDGE),
    st.integers(0, P - 1),
).map(lambda v: v % P)

# For the gate property: mostly small cells with a few 2^40-sized ones, so that the column-wise bound often
# overflows int64 while each row's value fits -- the residue tier -- besides the int64 and exact tiers.
gate_cell_values = st.one_of(
    st.integers(-(1 << 12), 1 << 12),
    st.integers(-(1 << 12), 1 << 12),
    st.integers(-(1 << 12), 1 << 12),
    st.integers(-(1 << 40), 1 << 40),
    cell_values,
).map(lambda v: v % P)

ROTATIONS = (-1, 0, 1)
LEAF_COLUMNS = (A, B, C)


def expressions():
    leaves = st.one_of(
        st.builds(Query, st.sampled_from(LEAF_COLUMNS), st.sampled_from(ROTATIONS)),
        st.builds(Constant, st.one_of(st.integers(-5, 5), st.sampled_from(_EDGE))),
    )
    return st.recursive(
        leaves,
        lambda inner: st.one_of(
            st.builds(Sum, inner, inner),
            st.builds(Product, inner, inner),
            st.builds(Negated, inner),
            st.builds(Scaled, inner, st.one_of(st.integers(-3, 3), st.sampled_from(_EDGE))),
        ),
        max_leaves=8,
    )


def reference_value(expr: Expression, columns: dict, row: int, n: int) -> int:
    """Per-row evaluation with Python ints mod p (cells beyond a column's values are 0)."""

    def read(q: Query) -> int:
        target = (row + q.rotation) % n
        values = columns[q.column.name]
        return int(values[target]) % P if target < len(values) else 0

    return expr.fold(
        constant=lambda c: c % P,
        query=read,
        negated=lambda a: -a % P,
        sum=lambda a, b: (a + b) % P,
        product=lambda a, b: a * b % P,
        scaled=lambda a, c: a * c % P,
    )


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    poly=expressions(),
    values=st.lists(st.tuples(gate_cell_values, gate_cell_values, gate_cell_values), min_size=12, max_size=12),
    tampered=st.dictionaries(st.integers(1, 10), cell_values.filter(bool), max_size=4),
    int64_encoding=st.booleans(),
)
def test_gate_check_matches_per_row_reference(poly, values, tampered, int64_encoding):
    """``out - poly`` with ``out`` computed by the reference and then tampered on some rows fails exactly
    on the tampered rows, with the tampering as its value -- whatever the magnitudes and encodings."""
    rows, k = 12, 5
    out_column = Column(ColumnKind.ADVICE, 3, "out")
    gate = Gate("g", Q, (("g", out_column.cur() - poly),))
    q = np.zeros(rows, dtype=np.int64)
    q[1 : rows - 1] = 1  # rotations ±1 stay inside [0, rows)
    cs = _circuit(rows, k, (A, B, C, out_column, Q), gates=[gate], fixed={"q": q})
    columns = {name: [v[i] for v in values] for i, name in enumerate("abc")}
    out = [reference_value(poly, columns, r, 1 << k) if q[r] else 0 for r in range(rows)]
    for r, d in tampered.items():
        out[r] = (out[r] + d) % P
    columns["out"] = out

    def encode(vals):
        signed_vals = [signed(v, P) for v in vals]
        if int64_encoding and all(-(1 << 63) <= v < 1 << 63 for v in signed_vals):
            return np.array(signed_vals, dtype=np.int64)
        return np.array(vals, dtype=object)

    failures = check(cs, Assignment({n: encode(v) for n, v in columns.items()}, {}, {}), P)
    assert {f.row for f in failures} == set(tampered)
    for f in failures:
        assert f.value == signed(tampered[f.row], P)


@settings(max_examples=40, deadline=None)
@given(
    table=st.lists(st.tuples(cell_values, cell_values), min_size=1, max_size=8),
    inputs=st.lists(st.tuples(st.booleans(), st.integers(0, 7), cell_values, cell_values), min_size=6, max_size=6),
)
def test_lookup_check_matches_set_membership(table, inputs):
    rows = 6
    lookup = Lookup("lk", Q, (A.cur(), B.cur() + 3), (T0, T1))
    cs = _circuit(
        rows,
        5,
        (A, B, Q, T0, T1),
        lookups=[lookup],
        fixed={
            "q": np.ones(rows, dtype=np.int64),
            "t0": np.array([t[0] for t in table], dtype=object),
            "t1": np.array([t[1] for t in table], dtype=object),
        },
    )
    entries = set(table) | {(0, 0)}  # tables are zero-padded
    a, b = [], []
    for from_table, index, x, y in inputs:
        pair = table[index % len(table)] if from_table else (x, y)
        a.append(pair[0])
        b.append((pair[1] - 3) % P)
    expected = {r for r in range(rows) if (a[r], (b[r] + 3) % P) not in entries}
    failures = check(cs, Assignment({"a": np.array(a, dtype=object), "b": np.array(b, dtype=object)}, {}, {}), P)
    assert {f.row for f in failures} == expected


@settings(max_examples=40, deadline=None)
@given(
    values=st.lists(st.tuples(cell_values, cell_values), min_size=8, max_size=8),
    copies=st.lists(
        st.tuples(st.integers(0, 1), st.integers(0, 7), st.integers(0, 1), st.integers(0, 7)), min_size=1, max_size=10
    ),
)
def test_copy_check_matches_cell_equality(values, copies):
    cs = _circuit(8, 5, (A, B), copies=copies)
    columns = {"a": [v[0] for v in values], "b": [v[1] for v in values]}
    failures = check(cs, Assignment({n: np.array(v, dtype=object) for n, v in columns.items()}, {}, {}), P)
    expected = sorted((ca, ra) for ca, ra, cb, rb in copies if columns["ab"[ca]][ra] != columns["ab"[cb]][rb])
    assert sorted(("ab".index(f.cells[0].column), f.row) for f in failures) == expected
