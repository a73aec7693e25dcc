"""The soundness audit: clean on the lowered OBS circuits; finds planted unconstrained cells, non-unique
witnesses (missing range checks) and gates without a real selector, and names them."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from circuit_compiler.audit import (
    audit,
    compensated_mutation_check,
    mutation_check,
    prover_chosen_columns,
    selector_audit,
    unconstrained_cells,
)
from circuit_compiler.demo import obs_circuit, rescale_circuit
from circuit_compiler.field import BLS12_381_FR
from circuit_compiler.ir import Assignment, Column, ColumnKind, ConstraintSystem, Gate, Lookup
from circuit_compiler.mock_prover import MockProver, check

P = BLS12_381_FR.modulus


@pytest.fixture(scope="module")
def obs_f():
    return obs_circuit(level="F")


def without_range_check(cs: ConstraintSystem, name: str) -> ConstraintSystem:
    """``cs`` with the range check of advice ``name`` (its decomposition gate and limb lookups) removed."""
    gates = tuple(g for g in cs.gates if g.name != f"{name}_decompose")
    lookups = tuple(lk for lk in cs.lookups if not lk.name.startswith(f"{name}_limb_"))
    assert len(gates) == len(cs.gates) - 1 and len(lookups) < len(cs.lookups)
    return dataclasses.replace(cs, gates=gates, lookups=lookups)


def with_selector_off(cs: ConstraintSystem, selector: str, row: int) -> ConstraintSystem:
    values = np.array(cs.fixed[selector])
    values[row] = 0
    return dataclasses.replace(cs, fixed={**cs.fixed, selector: values})


# ------------------------------------------------------------------------------------ clean circuits


def test_lowered_obs_circuit_level_f_is_clean(obs_f):
    cs, assignment, p = obs_f
    report = audit(cs, assignment, p, mutations=256, compensated=96)
    summary = report.to_json()
    assert summary["honest_failures"] == 0
    assert summary["unconstrained_cells"] == 0
    assert summary["mutations_tried"] == 256 and summary["mutations_caught"] == 256
    assert summary["detection_rate"] == 1.0
    assert summary["compensated_tried"] == 96 and summary["compensated_caught"] == 96
    assert summary["selector_findings"] == [] and summary["ok"]
    # every advice column had its share of the sampled cells
    assert {m.cell.column for m in report.mutations} == {c.name for c in cs.columns_of(ColumnKind.ADVICE)}
    assert {m.delta_kind for m in report.mutations} == {"random", "plus_one", "minus_one", "small", "negate"}


def test_lowered_obs_circuit_level_r_is_clean():
    cs, assignment, p = obs_circuit(level="R")
    report = audit(cs, assignment, p, mutations=64, compensated=48)
    assert report.ok, report.summary()
    assert prover_chosen_columns(cs) == ()  # at level R θ' is an input, not something the relation fixes


def test_compact_obs_circuit_with_selector_free_limb_lookups_is_clean():
    """The compact layout looks its limbs up always on (no selector): the audit reports each such lookup
    (info), still finds every mutation of the weight rows, and does not count the zero limbs off the weight
    rows as assigned cells (an always-on lookup reads every row, which says nothing about a region)."""
    cs, assignment, p = obs_circuit(level="F", lanes=16)
    assert cs.max_degree() == 4
    report = audit(cs, assignment, p, mutations=64, compensated=32)
    assert report.ok, report.summary()
    summary = report.to_json()
    assert summary["unconstrained_cells"] == 0 and summary["mutations_caught"] == 64
    assert summary["compensated_caught"] == 32
    always_on = sorted(lk.name for lk in cs.lookups if lk.always_on)
    assert always_on and len(always_on) == len(cs.lookups)
    assert sorted((f.kind, f.name, f.severity) for f in report.selector_findings) == [
        ("no_selector", name, "info") for name in always_on
    ]
    weight_rows = range(*cs.metadata["layout"]["finalization_rows"])
    assert {m.cell.row for m in report.mutations if "_limb_" in m.cell.column} <= set(weight_rows)


def test_a_lookup_without_a_selector_may_only_read_plain_advice_columns():
    a, t = Column(ColumnKind.ADVICE, 0, "a"), Column(ColumnKind.TABLE, 0, "t")
    theta = Column(ColumnKind.COMMITTED, 0, "theta")
    Lookup("plain", None, (a.cur(),), (t,))  # accepted
    for bad in (a.next(), a.cur() * 2, a.cur() + 1, theta.cur()):
        with pytest.raises(ValueError, match="without a selector every input must be an advice column at rotation 0"):
            Lookup("bad", None, (bad,), (t,))


def test_sound_rescale_chip_is_clean():
    cs, assignment, p = rescale_circuit()
    report = audit(cs, assignment, p, mutations=64, compensated=64)
    assert report.ok, report.summary()


# ---------------------------------------------------------------------------- under-constrained cells


def test_cells_of_a_row_without_its_selector_are_reported(obs_f):
    cs, assignment, p = obs_f
    row = 9
    weakened = with_selector_off(cs, "q_fin", row)
    assert check(weakened, assignment, p) == []  # the mock prover cannot see this
    found = unconstrained_cells(weakened, assignment, p)
    # y and z keep their copies into the MAC region; everything else on the row is now free
    expected = {
        "delta",
        "delta_limb_0",
        "delta_limb_1",
        "rem",
        "rem_limb_0",
        "rem_limb_1",
        "y_limb_0",
        "y_limb_1",
        "y_limb_2",
        "y_limb_3",
    }
    assert {(c.column, c.row) for c in found} == {(name, row) for name in expected}


def test_stray_advice_column_is_reported_cell_by_cell():
    cs, assignment, p = rescale_circuit(rows=16)
    stray = Column(ColumnKind.ADVICE, len(cs.columns_of(ColumnKind.ADVICE)), "stray")
    cs = dataclasses.replace(cs, columns=cs.columns + (stray,))
    values = np.zeros(cs.rows, dtype=np.int64)
    values[[2, 11]] = [5, -7]
    assignment = Assignment({**assignment.advice, "stray": values}, assignment.instance, assignment.committed)
    # assigned: the nonzero cells and the gap between them (the column's extent), not the zero padding
    assert [(c.column, c.row) for c in unconstrained_cells(cs, assignment, p)] == [("stray", r) for r in range(2, 12)]
    explicit = {"stray": np.ones(cs.rows, dtype=bool)}  # the generator says it wrote every row
    assert len(unconstrained_cells(cs, assignment, p, assigned=explicit)) == cs.rows


# --------------------------------------------------------------------------------------- mutations


def test_single_cell_mutations_miss_exactly_the_cells_a_product_gate_ignores():
    """With only ``a·b = c``, changing b is invisible exactly where a = 0 (and a where b = 0)."""
    a, b, c = (Column(ColumnKind.ADVICE, i, n) for i, n in enumerate("abc"))
    q = Column(ColumnKind.SELECTOR, 0, "q")
    rows = 12
    cs = ConstraintSystem(
        "product",
        5,
        rows,
        (a, b, c, q),
        (Gate("mul", q, (("mul", a.cur() * b.cur() - c.cur()),)),),
        (),
        np.zeros((0, 4), dtype=np.int64),
        {"q": np.ones(rows, dtype=np.int64)},
    )
    av = np.array([0, 3, 0, 5, 1, 0, 2, 2, 0, 1, 1, 4])
    bv = np.array([7, 0, 0, 1, 2, 3, 0, 5, 9, 1, 0, 2])
    assignment = Assignment({"a": av, "b": bv, "c": av * bv}, {}, {})
    prover = MockProver(cs, assignment, P)
    cells = [(column, r) for column in (a, b, c) for r in range(rows)]
    uncaught = {(m.cell.column, m.cell.row) for m in mutation_check(prover, cells, seed=3) if not m.caught}
    expected = {("b", r) for r in np.flatnonzero(av == 0)} | {("a", r) for r in np.flatnonzero(bv == 0)}
    assert uncaught == expected
    assert check(cs, assignment, P) == []  # mutations were undone


def test_missing_range_check_in_the_rescale_chip_is_caught_and_named():
    cs, assignment, p = rescale_circuit(broken="no_range_check")
    report = audit(cs, assignment, p, mutations=32, compensated=64)
    assert not report.ok
    assert report.unconstrained == [] and report.mutations_caught == len(report.mutations)  # single cells: fine
    assert "rescale/rescale" in report.not_unique
    witness = next(m for m in report.compensated if not m.caught and m.moves[0].cell.column == "d")
    # a second witness: d one larger (range-checked limbs follow), r one 2^s lower -- it wrapped below 0
    assert witness.moves[0].new - witness.moves[0].old in (1, -1)
    r_move = next(m for m in witness.moves if m.cell.column == "r")
    assert r_move.new - r_move.old == -(witness.moves[0].new - witness.moves[0].old) * (1 << cs.metadata["shift"])
    assert "not unique at" in report.summary() and "rescale/rescale" in report.to_json()["not_unique_at"]


@pytest.mark.parametrize("checked", ["rem", "delta"])
def test_dropping_a_range_check_of_the_obs_circuit_is_caught(obs_f, checked):
    """Without the range check of rem (or Δ), ``Δ ± 1, rem ∓ 2^s, θ' ± 1`` (limbs adjusted) is a second
    witness at level F: the new model θ' is no longer determined by θ, G and the mask."""
    cs, assignment, p = obs_f
    broken = without_range_check(cs, checked)
    assert check(broken, assignment, p) == []
    focus = ["rescale"]
    sound = audit(cs, assignment, p, mutations=0, compensated=48, focus=focus)
    report = audit(broken, assignment, p, mutations=0, compensated=48, focus=focus)
    assert sound.compensated_caught == 48
    assert report.compensated_caught < 48 and "rescale/rescale" in report.not_unique
    for m in report.compensated:
        if not m.caught:
            moved = {move.cell.column for move in m.moves}
            assert {"delta", "rem", "theta_new"} <= moved and m.moves[0].cell.row == m.row


def test_compensated_focus_must_name_a_gate(obs_f):
    cs, assignment, p = obs_f
    with pytest.raises(KeyError, match="no gate or constraint"):
        compensated_mutation_check(MockProver(cs, assignment, p), samples=1, focus=["nonexistent"])


# ------------------------------------------------------------------------------------ selector audit


def test_gate_without_its_selector_is_named():
    cs, assignment, p = rescale_circuit(broken="no_selector")
    assert check(cs, assignment, p) == []  # zero padding satisfies the gate: the mock prover is silent
    report = audit(cs, assignment, p, mutations=16, compensated=16)
    assert [(f.kind, f.name, f.severity) for f in report.selector_findings] == [("outside_rows", "rescale", "error")]
    assert "written without a selector" in report.selector_findings[0].detail
    assert not report.ok


def test_dead_vacuous_and_non_boolean_selectors_are_reported():
    a = Column(ColumnKind.ADVICE, 0, "a")
    q_dead, q_two, q_end = (Column(ColumnKind.SELECTOR, i, n) for i, n in enumerate(("q_dead", "q_two", "q_end")))
    rows, k = 8, 5
    gates = (
        Gate("never", q_dead, (("never", a.cur() - 1),)),
        Gate("trivial", q_two, (("trivial", a.cur() * 3 - a.cur() - a.cur() * 2),)),  # the zero polynomial
        Gate("beyond", q_end, (("beyond", a.cur()),)),
    )
    two = np.zeros(rows, dtype=np.int64)
    two[3] = 2
    end = np.zeros(rows + 4, dtype=np.int64)
    end[rows + 1] = 1  # on after the circuit's rows, in the zero padding
    cs = ConstraintSystem(
        "selectors",
        k,
        rows,
        (a, q_dead, q_two, q_end),
        gates,
        (),
        np.zeros((0, 4), dtype=np.int64),
        {"q_dead": np.zeros(rows, dtype=np.int64), "q_two": two, "q_end": end},
    )
    prover = MockProver(cs, Assignment({"a": np.arange(rows)}, {}, {}), P)
    findings = {(f.kind, f.name, f.severity) for f in selector_audit(prover)}
    assert findings == {
        ("dead", "never", "warning"),
        ("non_boolean", "trivial", "error"),
        ("vacuous", "trivial/trivial", "error"),
        ("outside_rows", "beyond", "error"),
    }
