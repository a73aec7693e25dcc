"""Each chip in a small circuit of its own: honest values pass, tampered cells fail with the named check."""

import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from circuit_compiler.builder import CircuitBuilder
from circuit_compiler.chips import diagonal, mac, range_check, removal, rescale, residual, update, weight_rows
from circuit_compiler.field import DEFAULT_FIELD
from circuit_compiler.fixedpoint import QuantizationError, exact_matvec
from circuit_compiler.ir import Assignment, Cell, ColumnKind, usable_rows
from circuit_compiler.mock_prover import check

P = DEFAULT_FIELD.modulus


def failures(cs, assignment):
    return sorted({(f.kind, f.name, f.row) for f in check(cs, assignment, P)}, key=str)


def column(rows, values, dtype=np.int64):
    out = np.zeros(rows, dtype=dtype)
    out[: len(values)] = values
    return out


# ------------------------------------------------------------------------------------------ range check


def range_circuit(*, bits, limb_bits, signed, n):
    b = CircuitBuilder("range")
    v = b.instance("v")
    q = b.selector("q")
    config = range_check.configure(
        b, name="v", value=v.cur(), bits=bits, limb_bits=limb_bits, signed=signed, selector=q
    )
    b.enable(q, np.arange(n))
    return b.build(), config


@pytest.mark.parametrize("signed", [True, False])
def test_range_check_accepts_exactly_the_range(signed):
    cs, config = range_circuit(bits=12, limb_bits=4, signed=signed, n=6)
    lo, hi = config.bounds
    assert (lo, hi) == ((-2048, 2047) if signed else (0, 4095))
    values = np.array([lo, hi, 0, 1, hi - 1, lo + 1], dtype=np.int64)
    limbs = config.assign(values)
    assert sorted(limbs) == ["v_limb_0", "v_limb_1", "v_limb_2"]
    shifted = values + config.offset
    assert np.array_equal(limbs["v_limb_0"] + 16 * limbs["v_limb_1"] + 256 * limbs["v_limb_2"], shifted)
    rows = cs.rows
    a = Assignment(
        advice={k: column(rows, v) for k, v in limbs.items()}, instance={"v": column(rows, values)}, committed={}
    )
    assert failures(cs, a) == []

    # one past the top: v + offset = 2^12 has no 4-bit limbs; the only decomposition puts 16 in the top limb
    forged = a.copy()
    forged.instance["v"][1] = hi + 1
    forged.advice["v_limb_0"][1] = forged.advice["v_limb_1"][1] = 0
    forged.advice["v_limb_2"][1] = 16
    assert failures(cs, forged) == [("lookup", "v_limb_2", 1)]
    # a limb that does not recompose the value
    wrong = a.copy()
    wrong.advice["v_limb_1"][3] = (wrong.advice["v_limb_1"][3] + 1) % 16
    assert failures(cs, wrong) == [("gate", "v_decompose", 3)]
    with pytest.raises(
        QuantizationError,
        match=r"range check 'v': value 4096 at position 0 is outside \[0, 4095\]"
        if not signed
        else r"value 2048 at position 0 is outside \[-2048, 2047\]",
    ):
        config.assign(np.array([hi + 1]))


def test_interval_check_accepts_exactly_the_closed_interval():
    b = CircuitBuilder("interval")
    v, q = b.instance("v"), b.selector("q")
    config = range_check.configure_interval(b, name="v", value=v.cur(), lo=-3, hi=5, selector=q)
    b.enable(q, np.arange(4))
    cs = b.build()
    assert [lk.name for lk in cs.lookups] == ["v_interval"] and not cs.gates
    assert cs.fixed["interval_9"][:9].tolist() == list(range(9))  # exactly hi - lo + 1 values, no power of two
    values = np.array([-3, 5, 0, 4], dtype=np.int64)
    assert config.assign(values) == {}
    a = Assignment(advice={}, instance={"v": column(cs.rows, values)}, committed={})
    assert failures(cs, a) == []
    for outside in (6, -4):
        forged = a.copy()
        forged.instance["v"][2] = outside
        assert failures(cs, forged) == [("lookup", "v_interval", 2)]
        with pytest.raises(QuantizationError, match=rf"value {outside} at position 0 is outside \[-3, 5\]"):
            config.assign(np.array([outside]))
    with pytest.raises(ValueError, match=r"empty interval \[2, 1\]"):
        range_check.configure_interval(CircuitBuilder("x"), name="w", value=v.cur(), lo=2, hi=1, selector=q)


def test_single_limb_range_check_looks_up_the_value_itself():
    cs, config = range_circuit(bits=8, limb_bits=8, signed=True, n=3)
    assert config.limbs == () and [lk.name for lk in cs.lookups] == ["v_range"] and not cs.gates
    assert config.assign(np.array([-128, 127, 5])) == {}
    good = Assignment(advice={}, instance={"v": column(cs.rows, [-128, 127, 5])}, committed={})
    assert failures(cs, good) == []
    bad = Assignment(advice={}, instance={"v": column(cs.rows, [-129, 127, 128])}, committed={})
    assert failures(cs, bad) == [("lookup", "v_range", 0), ("lookup", "v_range", 2)]


@pytest.mark.parametrize(
    "bits, widths, tables, gates",
    [
        (10, (4, 4, 2), ["range_4"], ["v_limb_2_bits"]),  # a 2-bit top limb: polynomial gate, no lookup
        (11, (4, 4, 3), ["range_3", "range_4"], []),  # a 3-bit top limb: its own table
        (9, (4, 4, 1), ["range_4"], ["v_limb_2_bits"]),
    ],
)
def test_range_check_with_a_short_top_limb_accepts_exactly_the_range(bits, widths, tables, gates):
    cs, config = range_circuit(bits=bits, limb_bits=4, signed=True, n=4)
    assert config.widths == widths and range_check.limb_widths(bits, 4) == widths
    assert sorted(c.name for c in cs.columns_of(ColumnKind.TABLE)) == tables
    assert [g.name for g in cs.gates if g.name.endswith("_bits")] == gates
    assert range_check.lookups_needed(bits, 4) == len([w for w in widths if w > 2 or w == 4])
    lo, hi = config.bounds
    assert (lo, hi) == (-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
    values = np.array([lo, hi, 0, -1], dtype=np.int64)
    rows = cs.rows
    a = Assignment(
        advice={k: column(rows, v) for k, v in config.assign(values).items()},
        instance={"v": column(rows, values)},
        committed={},
    )
    assert failures(cs, a) == []
    # one past the top: the only decomposition overflows the short top limb
    top = f"v_limb_{len(widths) - 1}"
    forged = a.copy()
    forged.instance["v"][1] = hi + 1
    forged.advice["v_limb_0"][1] = forged.advice["v_limb_1"][1] = 0
    forged.advice[top][1] = 1 << widths[-1]
    kind = "gate" if gates else "lookup"
    assert failures(cs, forged) == [(kind, top + ("_bits" if gates else ""), 1)]
    with pytest.raises(QuantizationError, match=f"outside \\[{lo}, {hi}\\] \\({bits} bits, signed\\)"):
        config.assign(np.array([hi + 1]))


def limbs_circuit(*, bits, limb_bits, n):
    b = CircuitBuilder("limbs")
    v = b.instance("v")
    q = b.selector("q")
    config = range_check.configure_limbs(b, name="x", bits=bits, limb_bits=limb_bits, selector=q)
    b.gate("tie", q, [("tie", v.cur() - config.value)])  # the limbs' value, used in place of a cell
    b.enable(q, np.arange(n))
    return b.build(), config


@settings(max_examples=20, deadline=None)
@given(bits=st.integers(1, 20), limb_bits=st.integers(2, 6), data=st.data())
def test_limbs_without_a_value_cell_hold_exactly_the_unsigned_range(bits, limb_bits, data):
    cs, config = limbs_circuit(bits=bits, limb_bits=limb_bits, n=3)
    hi = (1 << bits) - 1
    values = np.array([0, hi, data.draw(st.integers(0, hi))], dtype=np.int64)
    limbs = config.assign(values)
    assert len(limbs) == len(range_check.limb_widths(bits, limb_bits)) and not any(
        g.name.endswith("decompose") for g in cs.gates
    )
    rows = cs.rows
    a = Assignment(
        advice={k: column(rows, v) for k, v in limbs.items()}, instance={"v": column(rows, values)}, committed={}
    )
    assert failures(cs, a) == []
    # the field's other representative of a value (v + p) has no limbs: p exceeds every limb sum
    wrapped = a.copy()
    wrapped.instance["v"] = wrapped.instance["v"].astype(object)
    wrapped.instance["v"][1] = -1 % P  # "−1" would need limbs summing to p - 1
    assert ("gate", "tie", 1) in failures(cs, wrapped)
    with pytest.raises(QuantizationError, match=f"range check 'x': value -1 at position 0 is outside \\[0, {hi}\\]"):
        config.assign(np.array([-1]))


def test_always_on_limbs_keep_every_check_at_degree_4():
    """``always_on``: lookups without a selector and a 2-bit rest cut into two 1-bit limbs (a 2-bit gate
    q·a(a-1)(a-2)(a-3) would have degree 5); the limbs still hold exactly [0, 2^bits)."""
    b = CircuitBuilder("limbs")
    v, q = b.instance("v"), b.selector("q")
    config = range_check.configure_limbs(b, name="x", bits=10, limb_bits=4, selector=q, always_on=True)
    b.gate("tie", q, [("tie", v.cur() - config.value)])
    b.enable(q, np.arange(3))
    cs = b.build()
    assert config.widths == (4, 4, 1, 1) and range_check.split_limb_widths(10, 4, None) == (4, 4, 2)
    assert [lk.name for lk in cs.lookups if lk.always_on] == ["x_limb_0", "x_limb_1"] and len(cs.lookups) == 2
    assert [g.name for g in cs.gates] == ["x_limb_2_bits", "x_limb_3_bits", "tie"] and cs.max_degree() == 4
    values = np.array([0, 1023, 700], dtype=np.int64)
    a = Assignment(
        advice={k: column(cs.rows, x) for k, x in config.assign(values).items()},
        instance={"v": column(cs.rows, values)},
        committed={},
    )
    assert failures(cs, a) == []
    forged = a.copy()  # 1024 = a 2 in the top bit: its 1-bit gate refuses it
    forged.instance["v"][1] = 1024
    forged.advice["x_limb_0"][1] = forged.advice["x_limb_1"][1] = forged.advice["x_limb_2"][1] = 0
    forged.advice["x_limb_3"][1] = 2
    assert failures(cs, forged) == [("gate", "x_limb_3_bits", 1)]


# ---------------------------------------------------------------------------------------------- rescale


@settings(max_examples=50, deadline=None)
@given(values=st.lists(st.integers(-(1 << 100), 1 << 100), min_size=1, max_size=8), shift=st.integers(1, 40))
def test_floor_divide_matches_python(values, shift):
    for arr in (np.array(values, dtype=object), np.array([v % (1 << 62) - (1 << 61) for v in values], dtype=np.int64)):
        q, r = rescale.floor_divide(arr, shift)
        assert r.dtype == np.int64
        assert [(int(a), int(b)) for a, b in zip(q, r)] == [divmod(int(v), 1 << shift) for v in arr]


def rescale_circuit(n_values, *, shift=8, limb_bits=4, condition=None):
    b = CircuitBuilder("rescale")
    n = b.instance("n")
    c = b.instance("c")
    d, r = b.advice("d"), b.advice("r")
    q = b.selector("q")
    config = rescale.configure(
        b,
        name="rescale",
        numerator=-n.cur(),
        quotient=d,
        remainder=r,
        shift=shift,
        limb_bits=limb_bits,
        selector=q,
        condition=c.cur() if condition is not None else None,
    )
    b.enable(q, np.arange(len(n_values)))
    cs = b.build()
    values = config.assign(-np.asarray(n_values, dtype=object))
    cond = np.ones(len(n_values), dtype=np.int64) if condition is None else np.asarray(condition)
    advice = {k: column(cs.rows, v, dtype=object if v.dtype == object else np.int64) for k, v in values.items()}
    advice = {k: DEFAULT_FIELD.reduce_array(v) if v.dtype == object else v for k, v in advice.items()}
    instance = {
        "n": DEFAULT_FIELD.reduce_array(column(cs.rows, np.asarray(n_values, dtype=object), dtype=object)),
        "c": column(cs.rows, cond),
    }
    return cs, config, Assignment(advice=advice, instance=instance, committed={})


def test_rescale_honest_and_the_wrap_around_forgery():
    n_values = [0, 1, -1, 255, 256, -257, 1 << 70, -(1 << 70) - 3]
    cs, config, a = rescale_circuit(n_values)
    # n is the numerator's negation here: d = floor(-n / 2^8)
    assert config.identity().pretty() == "256 * (d) + r + n"
    assert [int(DEFAULT_FIELD.decode(int(v))) for v in DEFAULT_FIELD.reduce_array(a.advice["d"][:3])] == [0, -1, 0]
    assert failures(cs, a) == []
    # d + 1 and r - 2^s satisfy the division gate; only the remainder's range check can object
    forged = a.copy()
    forged.advice["d"][4] = int(forged.advice["d"][4]) + 1
    forged.advice["r"][4] = int(forged.advice["r"][4]) - 256
    assert failures(cs, forged) == [("gate", "r_decompose", 4)]


def test_rescale_condition_switches_the_gate_off():
    cs, _, a = rescale_circuit([3, 7], condition=[0, 1])
    tampered = a.copy()
    for row in (0, 1):
        tampered.advice["d"][row] = int(tampered.advice["d"][row]) + 5
    assert failures(cs, tampered) == [("gate", "rescale", 1)]


# --------------------------------------------------------------------------------------------------- MAC


def mac_circuit(G, y, lanes):
    nb, B = y.shape
    b = CircuitBuilder("mac")
    g = tuple(b.committed(f"g_{l}") for l in range(lanes))
    y_col, z_col = b.advice("y"), b.advice("z")
    config = mac.configure(b, block_size=B, lanes=lanes, g=g)
    config.layout(b, blocks=nb, y=y_col, z=z_col)
    cs = b.build()
    committed, advice, z = config.assign(G, y)
    rows = cs.rows
    pad = {
        k: column(rows, v, dtype=object if v.dtype == object else np.int64)
        for k, v in {**advice, "y": y.ravel(), "z": z}.items()
    }
    pad = {k: DEFAULT_FIELD.reduce_array(v) if v.dtype == object else v for k, v in pad.items()}
    return (
        cs,
        config,
        Assignment(advice=pad, instance={}, committed={k: column(rows, v) for k, v in committed.items()}),
        z,
    )


@pytest.mark.parametrize("lanes", [1, 2, 4])
def test_mac_computes_G_times_y_exactly_beyond_int64(lanes):
    rng = np.random.default_rng(lanes)
    nb, B = 2, 4
    G = rng.integers(-(1 << 12), (1 << 12) + 1, size=(nb, B, B))
    y = rng.integers(-(1 << 55), 1 << 55, size=(nb, B))
    cs, config, a, z = mac_circuit(G, y, lanes)
    expected = [sum(int(G[b, i, j]) * int(y[b, j]) for j in range(B)) for b in range(nb) for i in range(B)]
    assert [int(v) for v in z] == expected
    assert config.region_rows(nb) == nb * (B // lanes) * B
    assert (config.q_rep is None) == (lanes == B)
    assert len(cs.copies) == 2 * nb * B
    assert failures(cs, a) == []


def test_mac_tampering_is_caught_where_it_happens():
    rng = np.random.default_rng(7)
    nb, B, L = 2, 4, 2
    G = rng.integers(-50, 50, size=(nb, B, B))
    y = rng.integers(-1000, 1000, size=(nb, B))
    cs, config, a, _ = mac_circuit(G, y, L)
    row = (1 * (B // L) + 0) * B + 2  # block 1, lane group 0, column j = 2
    acc = a.copy()
    acc.advice["acc_1"][row] += 1
    assert failures(cs, acc) == [("gate", "mac_step", row), ("gate", "mac_step", row + 1)]
    last = a.copy()  # the final partial sum is copied out to z
    last.advice["acc_0"][row + 1] += 1
    assert failures(cs, last) == [("copy", "z = acc_0", 1 * B + 0), ("gate", "mac_step", row + 1)]
    rep = a.copy()  # ỹ of the second lane group must repeat the first one's
    rep_row = (0 * (B // L) + 1) * B + 1
    rep.advice["y_mac"][rep_row] += 1
    names = {(k, n) for k, n, _ in failures(cs, rep)}
    assert ("gate", "y_repeat") in names and ("gate", "mac_step") in names
    committed = a.copy()  # a different committed G entry changes nothing else: the step gate objects
    committed.committed["g_0"][0] += 1
    assert failures(cs, committed) == [("gate", "mac_first", 0)]
    y_in = a.copy()
    y_in.advice["y"][3] += 1
    assert failures(cs, y_in) == [("copy", "y_mac = y", 3)]


def test_mac_refuses_lanes_not_dividing_B():
    b = CircuitBuilder("mac")
    g = (b.committed("g_0"), b.committed("g_1"), b.committed("g_2"))
    with pytest.raises(ValueError, match="lanes L=3 must divide the block size B=4"):
        mac.configure(b, block_size=4, lanes=3, g=g)


# ------------------------------------------------------------------------------------------ diagonal MAC


def diagonal_circuit(G, y, *, offset=1 << 12):
    """The diagonal MAC alone: ``z`` (instance) must equal the product expression on every weight row."""
    nb, B = y.shape
    b = CircuitBuilder("diag")
    g = tuple(b.committed(f"g_{l}") for l in range(diagonal.lane_count(B)))
    z = b.instance("z")
    q = b.selector("q")
    config = diagonal.configure(b, block_size=B, g=g, g_offset=offset)
    b.gate("z_tie", q, [("z_tie", z.cur() - config.product())])
    first = B - 1
    config.layout(b, blocks=nb, offset=first)
    b.enable(q, first + np.arange(nb * B))
    cs = b.build()
    rows = cs.rows
    z_values = exact_matvec(np.triu(G) + np.swapaxes(np.triu(G, 1), 1, 2), y).ravel()  # the upper triangle, mirrored
    a = Assignment(
        advice={
            "y": DEFAULT_FIELD.reduce_array(
                np.concatenate([np.zeros(first, np.int64), y.ravel(), np.zeros(rows - first - nb * B, np.int64)])
            )
        },
        instance={
            "z": DEFAULT_FIELD.reduce_array(
                np.concatenate(
                    [
                        np.zeros(first, object),
                        np.asarray(z_values, dtype=object),
                        np.zeros(rows - first - nb * B, object),
                    ]
                )
            )
        },
        committed={
            k: DEFAULT_FIELD.encode_array(
                np.concatenate([np.zeros(first, np.int64), v, np.zeros(rows - first - nb * B, np.int64)])
            )
            for k, v in config.lanes(G).items()
        },
    )
    return cs, config, a, first


def symmetric(rng, nb, B, bits=12):
    G = rng.integers(-(1 << bits), (1 << bits) + 1, size=(nb, B, B))
    return np.triu(G) + np.swapaxes(np.triu(G, 1), 1, 2)


@pytest.mark.parametrize("B", [1, 2, 3, 5, 8])
def test_diagonal_mac_computes_G_times_y_exactly_beyond_int64(B):
    rng = np.random.default_rng(B)
    nb = 3
    G = symmetric(rng, nb, B)
    y = rng.integers(-(1 << 55), 1 << 55, size=(nb, B))
    cs, config, a, first = diagonal_circuit(G, y)
    assert failures(cs, a) == []
    expected = [sum(int(G[b, i, j]) * int(y[b, j]) for j in range(B)) for b in range(nb) for i in range(B)]
    assert [DEFAULT_FIELD.decode(int(v)) for v in a.instance["z"][first : first + nb * B]] == expected
    # no copy constraints, no accumulator columns: one advice column (ỹ) whatever B
    assert len(cs.copies) == 0 and [c.name for c in cs.columns_of(ColumnKind.ADVICE)] == ["y"]
    assert cs.max_advice_queries() == 2 * B - 1
    # lanes: G + 2^f_g at cyclic distance ρ = 0 … ⌊B/2⌋; distance B/2 on the block's first half only
    lanes = diagonal.cyclic_lanes(G, offset=1 << 12)
    assert lanes.shape == (B // 2 + 1, nb * B) and lanes.min() >= 0 and lanes.max() <= 1 << 13
    for rho in range(B // 2 + 1):
        for i in range(B):
            unused = 2 * rho == B and i >= rho
            expected_cell = 0 if unused else G[1, i, (i + rho) % B] + (1 << 12)
            assert lanes[rho, B + i] == expected_cell
    # every entry of the upper triangle is stored exactly once
    stored = sorted(
        tuple(sorted((i, (i + rho) % B)))
        for rho in range(B // 2 + 1)
        for i in range(B)
        if not (2 * rho == B and i >= rho)
    )
    assert stored == [(i, j) for i in range(B) for j in range(i, B)]


@pytest.mark.parametrize("B", [4, 5])
def test_diagonal_mac_reads_each_entry_only_inside_its_block(B):
    rng = np.random.default_rng(11)
    nb = 3
    G = symmetric(rng, nb, B, bits=8)
    y = rng.integers(1, 1000, size=(nb, B))  # nonzero: every entry of G meets a ỹ
    cs, config, a, first = diagonal_circuit(G, y)
    row = lambda b, i: first + b * B + i
    # the unused half of lane B/2 (B even) meets only zero coefficients: whatever it holds, nothing changes
    for b in range(nb):
        for i in range(B // 2, B) if B % 2 == 0 else ():
            junk = a.copy()
            junk.committed[f"g_{B // 2}"][row(b, i)] = 123456789
            assert failures(cs, junk) == []
    # a stored entry G[i, (i+ρ) mod B] enters z_i (this row) and z_{(i+ρ) mod B} (by symmetry), nowhere
    # else -- also when the distance wraps around the block's end
    for rho in range(1, B // 2 + 1):
        for i in range(B // 2 if 2 * rho == B else B):
            t = a.copy()
            t.committed[f"g_{rho}"][row(1, i)] += 1
            assert set(failures(cs, t)) == {("gate", "z_tie", row(1, i)), ("gate", "z_tie", row(1, (i + rho) % B))}
    t = a.copy()
    t.committed["g_0"][row(2, 0)] += 1  # the diagonal enters its own row only
    assert failures(cs, t) == [("gate", "z_tie", row(2, 0))]
    # ỹ_j enters every row of its block
    t = a.copy()
    t.advice["y"][row(1, 2)] += 1
    assert {r for _, _, r in failures(cs, t)} == {row(1, i) for i in range(B) if G[1, i, 2] != 0}
    # ỹ outside the blocks (read with zero coefficients) is pinned to 0
    for r in (0, first - 1, row(nb - 1, B - 1) + 1, row(nb - 1, B - 1) + B - 1):
        t = a.copy()
        t.advice["y"][r] = 5
        assert failures(cs, t) == [("gate", "y_outside", r)]


def test_diagonal_mac_expression_stays_shallow_for_large_blocks():
    """The IR walks expressions recursively: the product's depth must grow with the prefix sums (B/2),
    not with its 2B products, so a B = 1024 circuit builds within Python's default recursion limit."""
    B = 1024
    b = CircuitBuilder("diag")
    g = tuple(b.committed(f"g_{l}") for l in range(diagonal.lane_count(B)))
    product = diagonal.configure(b, block_size=B, g=g, g_offset=1).product()
    depth = product.fold(
        constant=lambda _: 1,
        query=lambda _: 1,
        negated=lambda a: a + 1,
        sum=lambda a, c: max(a, c) + 1,
        product=lambda a, c: max(a, c) + 1,
        scaled=lambda a, _: a + 1,
    )
    assert depth <= B // 2 + 2 * 11 + 8 < sys.getrecursionlimit()
    assert product.degree() == 3


def test_diagonal_mac_needs_one_lane_per_cyclic_distance_and_room_before_the_blocks():
    b = CircuitBuilder("diag")
    g = tuple(b.committed(f"g_{l}") for l in range(3))
    with pytest.raises(ValueError, match=r"3 G lanes for block size B=6 \(⌊B/2⌋ \+ 1 = 4"):
        diagonal.configure(b, block_size=6, g=g, g_offset=1)
    config = diagonal.configure(b, block_size=4, g=g, g_offset=1)
    with pytest.raises(ValueError, match="blocks start at row 1, but B - 1 = 3 rows must precede them"):
        config.layout(b, blocks=2, offset=1)


# ------------------------------------------------------------------------------------------- weight rows


def weight_rows_circuit(*, level, shift=8, high_bits=12, limb_bits=4, theta_offset=1 << 9, delta_bits=None):
    """The compact finalization alone; z (level F) is a free instance column here."""
    b = CircuitBuilder("rows")
    theta, theta_new = b.committed("theta"), b.committed("theta_new")
    mask = b.instance("mask")
    q = b.selector("q")
    if level == "F":
        z, y = b.instance("z"), b.advice("y")
        config = weight_rows.configure(
            b,
            theta=theta,
            theta_new=theta_new,
            mask=mask,
            high_bits=high_bits,
            limb_bits=limb_bits,
            delta_bits=delta_bits,
            theta_offset=theta_offset,
            selector=q,
            product=z.cur(),
            y=y,
            shift=shift,
        )
    else:
        config = weight_rows.configure(
            b,
            theta=theta,
            theta_new=theta_new,
            mask=mask,
            high_bits=high_bits,
            limb_bits=limb_bits,
            theta_offset=theta_offset,
            selector=q,
            touched=b.instance("touched"),
        )
    return b, config


def test_weight_rows_accept_the_honest_rows_and_name_each_tampering():
    shift, tau = 8, 128
    mask = np.array([1, 0, 0, 1, 0], dtype=bool)
    theta = np.array([5, -7, 3, -2, 9])
    e = np.array([-tau, 0, 0, tau - 1, 0])  # the extreme accepted residuals
    z = np.where(mask, theta * 256 + e, np.array([0, 1000, -999, 0, 37]))
    y = np.array([11, 0, 0, -4, 0])
    b, config = weight_rows_circuit(level="F", shift=shift)
    b.enable(config.selector, np.arange(5))
    cs = b.build()
    delta, rem = rescale.floor_divide(-z, shift)
    delta = np.where(mask, 0, delta)
    rem = np.where(mask, residual.solve_remainder(np.where(mask, e, 0), shift), rem)
    theta_new = removal.remove_masked(update.apply_update(theta, delta), mask)
    rows = cs.rows
    a = Assignment(
        advice={
            "y": column(rows, y),
            **{k: column(rows, v) for k, v in config.assign(mask=mask, delta=delta, y=y, rem=rem).items()},
        },
        instance={"mask": column(rows, mask.astype(np.int64)), "z": column(rows, z)},
        committed={
            "theta": column(rows, weight_rows.encode_weights(theta, 1 << 9)),
            "theta_new": column(rows, weight_rows.encode_weights(theta_new, 1 << 9)),
        },
    )
    assert failures(cs, a) == []
    assert theta_new.tolist() == [0, -7 + (-1000 // 256), 3 + (999 // 256), 0, 9 + (-37 // 256)]
    assert [g.name for g in cs.gates] == ["removal", "update", "y_on_mask", "residual_rescale"]
    assert not cs.copies.size
    # one gate of degree 4 for both relations on z (z here is an instance, degree 1: the gate is q · m · L)
    assert dict((g.name, g.degree()) for g in cs.gates)["residual_rescale"] == 3
    assert all(lk.always_on for lk in cs.lookups) and cs.max_degree() == 4

    def tamper(kind, name, row, delta):
        t = a.copy()
        getattr(t, kind)[name][row] += delta
        return failures(cs, t)

    assert tamper("committed", "theta_new", 0, 1) == [("gate", "removal", 0)]
    assert tamper("committed", "theta_new", 1, 1) == [("gate", "update", 1)]
    assert tamper("advice", "y", 2, 1) == [("gate", "y_on_mask", 2)]  # ỹ off the mask must be 0
    assert tamper("advice", "y", 3, 1) == [("gate", "y_on_mask", 3)]  # ... and the high limbs on it
    # the merged gate names the row on either side of the mask: a residual one past τ on a masked row
    # (it would need low = 2^s: no limbs hold it), a quotient one off on an unmasked row
    t = a.copy()
    t.instance["z"][3] += 1
    assert failures(cs, t) == [("gate", "residual_rescale", 3)]
    unmasked = a.copy()
    unmasked.instance["z"][1] += 256  # z + 2^s: the floor division now wants Δ - 1
    assert failures(cs, unmasked) == [("gate", "residual_rescale", 1)]
    t.advice["low_limb_1"][3] += 1  # 16 · 16 = 256 = 2^s: the top limb leaves its table
    t.advice["low_limb_0"][3] -= 15
    assert failures(cs, t) == [("lookup", "low_limb_1", 3)]
    # a different floor (Δ - 1, r + 2^s) satisfies the division but not the remainder's range
    t = a.copy()
    t.advice["high_limb_0"][1] -= 1
    t.advice["low_limb_1"][1] += 16
    t.committed["theta_new"][1] -= 1
    assert failures(cs, t) == [("lookup", "low_limb_1", 1)]


def test_weight_row_limbs_are_looked_up_on_every_usable_row():
    """The limb lookups carry no selector: off the weight rows a limb must still be a table value (the
    honest witness leaves 0 there). A behaviour change: with ``q · limb`` any value passed on those rows."""
    b, config = weight_rows_circuit(level="F")
    b.enable(config.selector, np.arange(3))
    cs = b.build()
    rows = cs.rows
    zeros = {c.name: column(rows, []) for c in cs.columns_of(ColumnKind.ADVICE)}
    a = Assignment(
        advice=zeros,
        instance={"mask": column(rows, []), "z": column(rows, [])},
        committed={"theta": column(rows, [1 << 9] * 3), "theta_new": column(rows, [1 << 9] * 3)},
    )
    # an all-zero chunk: Δ = 0 needs high = h_Δ on the weight rows
    for name, v in config.high.assign(np.full(3, config.delta_offset)).items():
        a.advice[name][:3] = v
    assert failures(cs, a) == []
    off_row = 7  # no selector is on here
    inside = a.copy()
    inside.advice["high_limb_0"][off_row] = 15  # a table value: accepted, nothing else reads the cell
    assert failures(cs, inside) == []
    for name in ("high_limb_0", "low_limb_1"):
        outside = a.copy()
        outside.advice[name][off_row] = 16  # one past the 4-bit table
        assert failures(cs, outside) == [("lookup", name, off_row)]


def test_weight_rows_bound_the_repair_off_the_mask_by_whole_limbs():
    """b_Δ = 6 inside a 12-bit shared field: Δ ∈ [-32, 32) off the mask (gate delta_bound), while ỹ on the
    mask keeps all 12 bits; one past either end of the bound is the first rejected value."""
    shift = 8
    b, config = weight_rows_circuit(level="F", shift=shift, high_bits=12, delta_bits=6)
    b.enable(config.selector, np.arange(3))
    cs = b.build()
    assert config.high.widths == (4, 1, 1, 4, 1, 1)  # a boundary at bit b_Δ = 6; 2-bit rests as 1 + 1 bits
    assert "delta_bound" in [g.name for g in cs.gates]
    rows = cs.rows

    def rows_for(delta_1):
        """Row 0 masked with a large ỹ (|ỹ| ≥ 2^5 needs the top limbs); row 1 carries Δ; row 2 Δ = 0."""
        mask = np.array([1, 0, 0], dtype=bool)
        y = np.array([-1500, 0, 0])
        theta = np.array([3, 40, -5])
        z = np.array([3 * 256, -delta_1 * 256 - 7, 0])
        delta = np.array([0, delta_1, 0])
        rem = np.array([128, 7, 0])  # e = 0 on the mask (+ τ), floor remainder off it
        theta_new = np.where(mask, 0, theta + delta)
        high = np.where(mask, y + config.y_offset, delta + config.delta_offset)
        limbs = {**config.high.assign(high), **config.low.assign(rem)}  # the 12-bit field alone, no bound check
        return Assignment(
            advice={"y": column(rows, y), **{k: column(rows, v) for k, v in limbs.items()}},
            instance={"mask": column(rows, mask.astype(np.int64)), "z": column(rows, z)},
            committed={
                "theta": column(rows, weight_rows.encode_weights(theta, 1 << 9)),
                "theta_new": column(rows, weight_rows.encode_weights(theta_new, 1 << 9)),
            },
        )

    for inside in (31, -32, 0):
        assert failures(cs, rows_for(inside)) == [], inside
    for outside in (32, 1000, 2**11):
        assert failures(cs, rows_for(outside)) == [("gate", "delta_bound", 1)], outside
    with pytest.raises(QuantizationError, match="range check 'high'"):  # Δ + h_Δ = -1: no limbs hold it
        rows_for(-33)
    with pytest.raises(QuantizationError, match="repair bound"):
        config.assign(mask=np.array([0, 0, 0], dtype=bool), delta=np.array([0, 32, 0]), y=np.zeros(3), rem=np.zeros(3))


def test_weight_rows_at_level_R_pin_delta_on_the_mask_and_outside_touched_blocks():
    b, config = weight_rows_circuit(level="R", high_bits=8)
    b.enable(config.selector, np.arange(4))
    cs = b.build()
    m = np.array([[1, 0], [0, 0]], dtype=bool)
    touched = update.touched_rows(m).ravel()
    delta = np.array([0, 3, 0, 0])
    theta = np.array([4, 5, 6, 7])
    new = removal.remove_masked(update.apply_update(theta, delta), m.ravel())
    rows = cs.rows
    a = Assignment(
        advice={k: column(rows, v) for k, v in config.assign(mask=m.ravel(), delta=delta).items()},
        instance={"mask": column(rows, m.ravel().astype(np.int64)), "touched": column(rows, touched.astype(np.int64))},
        committed={"theta": column(rows, theta + (1 << 9)), "theta_new": column(rows, new + (1 << 9))},
    )
    assert failures(cs, a) == []
    assert [g.name for g in cs.gates] == ["removal", "update", "no_delta_on_mask", "locality"]
    moved = a.copy()  # a change in an untouched block
    moved.advice["high_limb_0"][2] += 1
    moved.committed["theta_new"][2] += 1
    assert failures(cs, moved) == [("gate", "locality", 2)]
    on_mask = a.copy()
    on_mask.advice["high_limb_0"][0] += 1
    assert failures(cs, on_mask) == [("gate", "no_delta_on_mask", 0)]
    with pytest.raises(QuantizationError, match="Δ \\(repair bound b_Δ = w_delta\\)\\[1\\] = 200"):
        config.assign(mask=m.ravel(), delta=np.array([0, 200, 0, 0]))


def test_weight_rows_refuse_mixed_levels():
    b = CircuitBuilder("rows")
    theta, theta_new, mask, q = b.committed("t"), b.committed("t2"), b.instance("m"), b.selector("q")
    with pytest.raises(ValueError, match="level F need the product z"):
        weight_rows.configure(
            b,
            theta=theta,
            theta_new=theta_new,
            mask=mask,
            high_bits=8,
            limb_bits=4,
            theta_offset=0,
            selector=q,
            product=mask.cur(),
        )
    with pytest.raises(ValueError, match="level R need the 'touched'"):
        weight_rows.configure(
            b, theta=theta, theta_new=theta_new, mask=mask, high_bits=8, limb_bits=4, theta_offset=0, selector=q
        )


# -------------------------------------------------------------------------- residual, removal, update


def finalization_circuit(*, shift=8, touched=False):
    """The finalization row of docs/circuit.md without the MAC region: z is free (instance) here."""
    b = CircuitBuilder("fin")
    theta, theta_new = b.committed("theta"), b.committed("theta_new")
    mask = b.instance("mask")
    z = b.instance("z")
    touched_col = b.instance("touched") if touched else None
    q = b.selector("q")
    delta, y, rem = b.advice("delta"), b.advice("y"), b.advice("rem")
    rm = removal.configure(b, theta_new=theta_new, mask=mask, selector=q)
    up = update.configure(
        b,
        theta=theta,
        theta_new=theta_new,
        delta=delta,
        mask=mask,
        delta_bits=16,
        limb_bits=4,
        selector=q,
        touched=touched_col,
    )
    rs = rescale.configure(
        b,
        name="rescale",
        numerator=-z.cur(),
        quotient=delta,
        remainder=rem,
        shift=shift,
        limb_bits=4,
        selector=q,
        condition=1 - mask.cur(),
    )
    rd = residual.configure(
        b, z=z, theta=theta, rem=rem, mask=mask, y=y, shift=shift, y_bits=16, limb_bits=4, selector=q
    )
    return b, rm, up, rs, rd


def honest_finalization(mask, theta, z, y, *, shift=8, touched=False):
    b, rm, up, rs, rd = finalization_circuit(shift=shift, touched=touched)
    n = len(mask)
    b.enable(rm.selector, np.arange(n))
    cs = b.build()
    mask = np.asarray(mask, dtype=bool)
    delta, rem = rescale.floor_divide(-np.asarray(z), shift)
    delta = np.where(mask, 0, delta)
    e = residual.solve_residual(z, theta, shift)
    rem = np.where(mask, residual.solve_remainder(np.where(mask, e, 0), shift), rem)
    theta_new = rm.assign(update.apply_update(theta, delta), mask)["theta_new"]
    rows = cs.rows
    advice = {"delta": delta, "y": y, "rem": rem, **up.assign(delta), **rd.assign(y), **rs.remainder_range.assign(rem)}
    instance = {"mask": mask.astype(np.int64), "z": np.asarray(z)}
    if touched:
        instance["touched"] = np.full(n, int(mask.any()))
    a = Assignment(
        advice={k: column(rows, v) for k, v in advice.items()},
        instance={k: column(rows, v) for k, v in instance.items()},
        committed={"theta": column(rows, theta), "theta_new": column(rows, theta_new)},
    )
    return cs, a


def test_finalization_chips_accept_the_honest_rows_and_name_each_tampering():
    shift, tau = 8, 128
    mask = np.array([1, 0, 0, 1, 0], dtype=bool)
    theta = np.array([5, -7, 3, -2, 9])
    e = np.array([-tau, 0, 0, tau - 1, 0])  # the extreme accepted residuals
    z = np.where(mask, theta * 256 + e, np.array([0, 1000, -999, 0, 37]))
    y = np.array([11, 0, 0, -4, 0])
    cs, a = honest_finalization(mask, theta, z, y, shift=shift)
    assert failures(cs, a) == []
    assert a.committed["theta_new"][:5].tolist() == [0, -7 + (-1000 // 256), 3 + (999 // 256), 0, 9 + (-37 // 256)]

    def tamper(kind, name, row, delta):
        t = a.copy()
        getattr(t, kind)[name][row] += delta
        return failures(cs, t)

    assert tamper("committed", "theta_new", 0, 1) == [("gate", "removal", 0)]
    assert tamper("committed", "theta_new", 1, 1) == [("gate", "update", 1)]
    assert tamper("advice", "y", 2, 1) == [("gate", "y_decompose", 2), ("gate", "y_off_mask", 2)]
    # a residual one past τ needs rem = 2^s, which the remainder's range check rejects
    t = a.copy()
    t.instance["z"][3] += 1
    assert ("gate", "rem_decompose", 3) not in failures(cs, t)
    assert failures(cs, t) == [("gate", "residual", 3)]
    t.advice["rem"][3] += 1
    assert failures(cs, t) == [("gate", "rem_decompose", 3)]
    # Δ on a masked row would be free if no gate pinned it
    t = a.copy()
    t.advice["delta"][0] += 1
    assert ("gate", "no_delta_on_mask", 0) in failures(cs, t)
    # a different floor (Δ - 1, r + 2^s) breaks the remainder range, not the division
    t = a.copy()
    t.advice["delta"][1] -= 1
    t.advice["rem"][1] += 256
    t.committed["theta_new"][1] -= 1
    assert failures(cs, t) == [("gate", "delta_decompose", 1), ("gate", "rem_decompose", 1)]


def test_locality_gate_at_level_R():
    b = CircuitBuilder("locality")
    theta, theta_new = b.committed("theta"), b.committed("theta_new")
    mask, touched = b.instance("mask"), b.instance("touched")
    delta, q = b.advice("delta"), b.selector("q")
    up = update.configure(
        b,
        theta=theta,
        theta_new=theta_new,
        delta=delta,
        mask=mask,
        delta_bits=8,
        limb_bits=8,
        selector=q,
        touched=touched,
    )
    b.enable(q, np.arange(4))
    cs = b.build()
    m = np.array([[1, 0], [0, 0]], dtype=bool)
    t = update.touched_rows(m).ravel()
    assert t.tolist() == [True, True, False, False]
    delta_v = np.array([0, 3, 0, 0])
    theta_v = np.array([4, 5, 6, 7])
    new = removal.remove_masked(update.apply_update(theta_v, delta_v), m.ravel())
    rows = cs.rows
    a = Assignment(
        advice={"delta": column(rows, delta_v), **{k: column(rows, v) for k, v in up.assign(delta_v).items()}},
        instance={"mask": column(rows, m.ravel().astype(np.int64)), "touched": column(rows, t.astype(np.int64))},
        committed={"theta": column(rows, theta_v), "theta_new": column(rows, new)},
    )
    assert failures(cs, a) == []
    moved = a.copy()  # a change in an untouched block
    moved.advice["delta"][2] = 1
    moved.committed["theta_new"][2] += 1
    assert failures(cs, moved) == [("gate", "locality", 2)]


def test_apply_update_refuses_int64_overflow():
    with pytest.raises(OverflowError, match="position 1"):
        update.apply_update(np.array([0, (1 << 62)]), np.array([0, 1 << 62]))
    with pytest.raises(ValueError, match="differ in shape"):
        removal.remove_masked(np.zeros(3), np.zeros(2, dtype=bool))


# ------------------------------------------------------------------------------------------------ builder


def test_builder_rejects_duplicates_and_foreign_columns():
    b = CircuitBuilder("b")
    a = b.advice("a")
    q = b.selector("q")
    with pytest.raises(ValueError, match="column name 'a' is already taken"):
        b.fixed("a")
    other = CircuitBuilder("other").advice("x")
    with pytest.raises(ValueError, match="uses advice:x, which this builder did not allocate"):
        b.gate("g", q, [("g", other.cur())])
    b.gate("g", q, [("g", a.cur())])
    with pytest.raises(ValueError, match="gate 'g' is already defined"):
        b.gate("g", q, [("g", a.cur())])
    with pytest.raises(ValueError, match="selector must be a selector column"):
        b.gate("h", b.fixed("f"), [("h", a.cur())])
    with pytest.raises(ValueError, match="needs a selector"):
        b.enable(a, [0])
    with pytest.raises(ValueError, match=r"copies a->a: \(2,\) vs \(1,\) rows"):
        b.copies(a, [0, 1], a, [2])
    with pytest.raises(ValueError, match="cannot copy-constrain"):
        b.copy(Cell(q, 0), Cell(a, 0))


def test_builder_picks_the_smallest_k_and_checks_a_given_one():
    b = CircuitBuilder("k")
    a = b.advice("a")
    q = b.selector("q")
    b.gate("step", q, [("step", a.cur() - a.prev())])
    b.enable(q, np.arange(1, 100))
    table = b.range_table(4)
    assert b.range_table(4) is table
    cs = b.build()
    assert cs.rows == 100
    assert usable_rows(cs.k, cs.max_advice_queries()) >= 100 > usable_rows(cs.k - 1, cs.max_advice_queries())
    assert cs.fixed["q"].tolist() == [0] + [1] * 99 and cs.fixed["range_4"][:16].tolist() == list(range(16))
    assert b.build(k=cs.k + 2).k == cs.k + 2
    with pytest.raises(ValueError, match=f"k={cs.k - 1} gives .* usable rows but 100 are needed .*{cs.k}"):
        b.build(k=cs.k - 1)
    assert cs.columns_of(ColumnKind.TABLE)[0].name == "range_4"
    with pytest.raises(ValueError):
        cs.fixed["q"][0] = 1  # built arrays are read-only
