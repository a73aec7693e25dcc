"""Soundness audit of a circuit and an honest witness: what the mock prover cannot tell you.

A satisfied mock prover says the honest witness is *accepted*; an audit asks whether *dishonest* ones are
rejected. Four checks:

* **under-constrained cells** -- assigned advice cells that no enabled constraint reads: cell
  ``(column, row)`` is touched if a gate whose selector is on at row ``r`` queries ``(column, rot)`` with
  ``r + rot == row`` (mod 2^k), or an enabled lookup input does, or a copy names it. An untouched cell can
  hold anything; if the statement depends on it, the proof proves nothing about it. (The IR does not record
  which cells a generator wrote; :func:`assigned_cells` says how they are recognized.)
* **single-cell mutations** -- each sampled constrained advice cell gets a nonzero field element added
  (seeded; the increments cycle through a uniformly random field element, +1, -1, a random value below
  2^16 in magnitude, and negation of the cell), and only the checks that can see that cell are re-run
  (:meth:`MockProver.failures_near`), so hundreds of mutations cost milliseconds each. A mutation counts
  as caught when it creates a failure the honest witness did not have.
* **compensated mutations** -- two cells read by one constraint move together so that it still holds
  (the second by ±1 and the first as the constraint dictates, or the first by a random increment and the
  second solved), then every check that now fails is repaired greedily by solving it for a cell not moved
  yet (advice, or a committed column the prover picks freely, like the new model θ'), up to a depth. If
  everything passes in the end, the witness is not unique there: typically a missing range check lets a
  value wrap around p (``Δ + 1, rem - 2^s, θ' + 1`` in a floor division with an unchecked remainder).
* **selector audit** -- a gate or lookup whose selector is never on; an always-on lookup (no selector, info:
  the IR admits it only on plain advice columns at rotation 0, and it checks every usable row of them); on rows beyond ``rows`` (against the
  IR's contract; a constant-one selector over every usable row is how a gate written without a selector
  looks) or in the blinding rows (where Halo2 does not enforce anything); on every row of a circuit whose
  other selectors mark regions (info); not boolean; and a constraint that is identically zero as a
  polynomial (random evaluation) or reads no witness column.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .ir import Assignment, Column, ColumnKind, ConstraintSystem, Expression
from .mock_prover import Failure, MockProver, signed

DELTA_KINDS = ("random", "plus_one", "minus_one", "small", "negate")
_ROW_TRIES = 32  # rows tried per compensated start before it counts as skipped


def _short(v: int) -> str:
    """Decimal for machine-sized values, abbreviated hex for field-sized ones."""
    if abs(v) < 1 << 64:
        return str(v)
    digits = f"{abs(v):x}"
    return f"{'-' if v < 0 else ''}0x{digits[:8]}..({abs(v).bit_length()} bits)"


@dataclasses.dataclass(frozen=True, order=True)
class CellRef:
    column: str
    row: int

    def __str__(self) -> str:
        return f"{self.column}[{self.row}]"


@dataclasses.dataclass(frozen=True)
class Mutation:
    """One single-cell mutation: ``cell += delta`` (``delta`` signed for display)."""

    cell: CellRef
    delta_kind: str
    delta: int
    caught_by: tuple[str, ...]  # "kind name@row" of the new failures, empty when uncaught

    @property
    def caught(self) -> bool:
        return bool(self.caught_by)


@dataclasses.dataclass(frozen=True)
class Move:
    """One cell changed by a compensated mutation: ``cell`` from ``old`` to ``new`` (signed), and why."""

    cell: CellRef
    old: int
    new: int
    reason: str  # "step", "solve <gate>/<constraint>@<row>" or "copy <a> = <b>"

    def __str__(self) -> str:
        return f"{self.cell}: {_short(self.old)} -> {_short(self.new)} ({self.reason})"


@dataclasses.dataclass(frozen=True)
class CompensatedMutation:
    """A multi-cell mutation: two cells of one constraint moved together so that it still holds, then
    further cells solved, one failing constraint at a time, until nothing fails (a second witness: the
    mutation is *uncaught*) or no failure can be repaired (``caught_by`` lists what was left)."""

    gate: str
    constraint: str
    row: int
    moves: tuple[Move, ...]
    caught_by: tuple[str, ...]

    @property
    def caught(self) -> bool:
        return bool(self.caught_by)

    @property
    def solved_constraints(self) -> tuple[str, ...]:
        """The constraints this mutation kept satisfied by solving (the first one first)."""
        names = [f"{self.gate}/{self.constraint}"]
        for m in self.moves:
            if m.reason.startswith("solve "):
                name = m.reason[len("solve ") :].rsplit("@", 1)[0]
                if name not in names:
                    names.append(name)
        return tuple(names)

    def __str__(self) -> str:
        moves = "; ".join(str(m) for m in self.moves)
        verdict = "every check still passes" if not self.caught else f"caught by {', '.join(self.caught_by[:3])}"
        return f"{self.gate}/{self.constraint} on row {self.row}: {moves} -- {verdict}"


@dataclasses.dataclass(frozen=True)
class SelectorFinding:
    """``kind`` is one of dead, blinding_rows, outside_rows, always_on, non_boolean, vacuous, no_witness."""

    kind: str
    name: str  # gate, gate/constraint or lookup name
    severity: str  # "error": unsound, unprovable or against the IR; "warning": likely a mistake; "info"
    detail: str

    def __str__(self) -> str:
        return f"[{self.severity}] {self.kind} {self.name!r}: {self.detail}"


@dataclasses.dataclass
class AuditReport:
    circuit: str
    honest_failures: list[Failure]
    assigned_cells: int
    unconstrained: list[CellRef]
    mutations: list[Mutation]
    compensated: list[CompensatedMutation]
    compensated_skipped: int  # sampled starts where the constraint is not affine in, or ignores, a cell
    selector_findings: list[SelectorFinding]

    @property
    def mutations_caught(self) -> int:
        return sum(m.caught for m in self.mutations)

    @property
    def compensated_caught(self) -> int:
        return sum(m.caught for m in self.compensated)

    @property
    def not_unique(self) -> list[str]:
        """Constraints (gate/constraint) at which a compensated mutation went unnoticed, most frequent first."""
        counts: dict[str, int] = {}
        for m in self.compensated:
            if not m.caught:
                for name in m.solved_constraints:
                    counts[name] = counts.get(name, 0) + 1
        return sorted(counts, key=lambda k: -counts[k])

    @property
    def errors(self) -> list[SelectorFinding]:
        return [f for f in self.selector_findings if f.severity == "error"]

    @property
    def ok(self) -> bool:
        """Honest witness accepted, nothing unconstrained, every mutation caught, no error finding."""
        return (
            not self.honest_failures
            and not self.unconstrained
            and not self.errors
            and self.mutations_caught == len(self.mutations)
            and self.compensated_caught == len(self.compensated)
        )

    def to_json(self, *, sample: int = 20) -> dict[str, Any]:
        tried = len(self.mutations)
        return {
            "circuit": self.circuit,
            "ok": self.ok,
            "honest_failures": len(self.honest_failures),
            "assigned_cells": self.assigned_cells,
            "unconstrained_cells": len(self.unconstrained),
            "mutations_tried": tried,
            "mutations_caught": self.mutations_caught,
            "detection_rate": (self.mutations_caught / tried) if tried else None,
            "mutations_by_delta": {
                kind: [
                    sum(1 for m in self.mutations if m.delta_kind == kind),
                    sum(1 for m in self.mutations if m.delta_kind == kind and m.caught),
                ]
                for kind in DELTA_KINDS
            },
            "compensated_tried": len(self.compensated),
            "compensated_caught": self.compensated_caught,
            "compensated_skipped": self.compensated_skipped,
            "not_unique_at": self.not_unique,
            "selector_findings": [dataclasses.asdict(f) for f in self.selector_findings],
            "unconstrained_sample": [str(c) for c in self.unconstrained[:sample]],
            "uncaught_mutations": [
                {"cell": str(m.cell), "delta": str(m.delta), "kind": m.delta_kind}
                for m in self.mutations
                if not m.caught
            ][:sample],
            "uncaught_compensated": [str(m) for m in self.compensated if not m.caught][:sample],
            "honest_failure_sample": [str(f) for f in self.honest_failures[:sample]],
        }

    def summary(self) -> str:
        tried = len(self.mutations)
        honest = "accepted" if not self.honest_failures else f"{len(self.honest_failures)} failure(s)"
        lines = [
            f"audit of circuit {self.circuit!r}",
            f"  honest witness:          {honest}",
            f"  unconstrained cells:     {len(self.unconstrained)} of {self.assigned_cells} assigned advice cells",
            f"  single-cell mutations:   {self.mutations_caught}/{tried} caught",
            f"  compensated mutations:   {self.compensated_caught}/{len(self.compensated)} caught"
            f" ({self.compensated_skipped} starts skipped: not affine or not read on that row)",
            f"  selector findings:       {len(self.selector_findings)} ({len(self.errors)} errors)",
        ]
        for f in self.honest_failures[:5]:
            lines.append(f"    failure: {f}")
        for c in self.unconstrained[:10]:
            lines.append(f"    unconstrained: {c}")
        for m in [m for m in self.mutations if not m.caught][:10]:
            lines.append(f"    uncaught mutation: {m.cell} += {_short(m.delta)} ({m.delta_kind})")
        if self.not_unique:
            lines.append(
                f"    the witness is not unique at {', '.join(self.not_unique)}: a cell can move with another "
                f"and every check still passes (a missing range check lets a value wrap around p)"
            )
        for m in [m for m in self.compensated if not m.caught][:5]:
            lines.append(f"    uncaught compensated mutation: {m}")
        for f in self.selector_findings:
            lines.append(f"    {f}")
        lines.append(f"  verdict: {'OK' if self.ok else 'PROBLEMS FOUND'}")
        return "\n".join(lines)


# -------------------------------------------------------------------------------- under-constrained cells


def touched_cells(prover: MockProver, *, always_on: bool = True) -> dict[Column, np.ndarray]:
    """Per advice column, a bool array over its assigned span: is the cell read by an enabled constraint?

    ``always_on=False`` leaves out the always-on lookups, which read their column on every usable row and
    so say nothing about where a region's cells are (what :func:`assigned_cells` infers from the reads)."""
    cs, n = prover.cs, prover.n
    touched = {c: np.zeros(prover.assigned_span(c), dtype=bool) for c in cs.columns_of(ColumnKind.ADVICE)}

    def mark(column: Column, rows: np.ndarray) -> None:
        if column in touched:
            flags = touched[column]
            flags[rows[rows < len(flags)]] = True

    constrained: list[tuple[np.ndarray, Sequence[Expression]]] = [
        (prover.enabled_rows(g.selector), [p for _, p in g.polys]) for g in cs.gates
    ] + [(prover.lookup_rows(lk), lk.inputs) for lk in cs.lookups if always_on or not lk.always_on]
    for rows, exprs in constrained:
        for q in frozenset().union(*(e.queries() for e in exprs)):
            mark(q.column, (rows + q.rotation) % n)
    copies = np.asarray(cs.copies, dtype=np.int64).reshape(-1, 4)
    for col_index, row_index in ((0, 1), (2, 3)):
        for cid in np.unique(copies[:, col_index]):
            if 0 <= cid < len(cs.columns):
                mark(cs.columns[cid], copies[copies[:, col_index] == cid, row_index])
    return touched


def assigned_cells(
    prover: MockProver,
    touched: Mapping[Column, np.ndarray],
    assigned: Mapping[str, np.ndarray] | None = None,
) -> dict[Column, np.ndarray]:
    """Per advice column, a bool array over its span: which cells the witness assigns.

    The IR does not record which cells a witness generator wrote (the lowering zero-pads every column to
    ``rows``), so by default a cell of ``[0, rows)`` counts as assigned when it is nonzero or lies inside its
    column's extent -- between the first and the last row that is nonzero or read by a constraint. That
    treats a gap in a region (a selector missing on one row) as assigned and the zero padding around a
    region as not. ``assigned`` (column name -> bool array over rows) replaces the rule for the columns it
    names, for layouts where the generator knows better.
    """
    out = {}
    for column in prover.cs.columns_of(ColumnKind.ADVICE):
        full_span = prover.assigned_span(column)
        span = min(full_span, prover.cs.rows)
        mask = np.zeros(full_span, dtype=bool)
        if assigned is not None and column.name in assigned:
            given = np.asarray(assigned[column.name], dtype=bool)[:span]
            mask[: len(given)] = given
        else:
            nonzero = prover.nonzero_cells(column)[:span]
            used = np.flatnonzero(nonzero | touched[column][:span])
            if len(used):
                mask[used[0] : used[-1] + 1] = True
            mask[:span] |= nonzero
        out[column] = mask
    return out


def unconstrained_cells(
    cs: ConstraintSystem, assignment: Assignment, modulus: int, *, assigned: Mapping[str, np.ndarray] | None = None
) -> list[CellRef]:
    """Assigned advice cells that no enabled gate, enabled lookup or copy touches (sorted)."""
    prover = MockProver(cs, assignment, modulus)
    touched = touched_cells(prover)
    region = touched_cells(prover, always_on=False)
    return _unconstrained(prover, assigned_cells(prover, region, assigned), touched)


def _unconstrained(
    prover: MockProver, assigned: dict[Column, np.ndarray], touched: dict[Column, np.ndarray]
) -> list[CellRef]:
    out = []
    for column in prover.cs.columns_of(ColumnKind.ADVICE):
        for row in np.flatnonzero(assigned[column] & ~touched[column]):
            out.append(CellRef(column.name, int(row)))
    return out


# ------------------------------------------------------------------------------------------- mutations


def _failure_key(f: Failure) -> str:
    return f"{f.kind} {f.qualified_name}@{f.row}"


def _new_failures(prover: MockProver, cells: Sequence[tuple[Column, int]], before: set[str]) -> tuple[str, ...]:
    return tuple(sorted({_failure_key(f) for f in prover.failures_near(cells)} - before))


def _delta(kind: str, current: int, modulus: int, rng: random.Random) -> int:
    """A nonzero increment mod p of the given kind."""
    if kind == "plus_one":
        return 1
    if kind == "minus_one":
        return modulus - 1
    if kind == "small":
        return rng.choice([-1, 1]) * rng.randrange(2, 1 << 16) % modulus
    if kind == "negate" and current % modulus:
        return (-2 * current) % modulus
    return rng.randrange(1, modulus)


def _round_robin_sample(
    candidates: dict[Column, np.ndarray], count: int, rng: random.Random
) -> list[tuple[Column, int]]:
    """Up to ``count`` cells, spread evenly over the columns (every column gets its share first)."""
    pools = []
    for column, rows in candidates.items():
        rows = [int(r) for r in rows]
        rng.shuffle(rows)
        if rows:
            pools.append((column, rows))
    out: list[tuple[Column, int]] = []
    depth = 0
    while len(out) < count and any(depth < len(rows) for _, rows in pools):
        for column, rows in pools:
            if depth < len(rows) and len(out) < count:
                out.append((column, rows[depth]))
        depth += 1
    return out


def mutation_check(prover: MockProver, cells: Sequence[tuple[Column, int]], *, seed: int = 0) -> list[Mutation]:
    """Mutate each cell in turn (restoring it afterwards) and record which new failures appear."""
    rng = random.Random(seed)
    out = []
    for i, (column, row) in enumerate(cells):
        kind = DELTA_KINDS[i % len(DELTA_KINDS)]
        original = prover.value(column, row)
        delta = _delta(kind, original, prover.modulus, rng)
        before = {_failure_key(f) for f in prover.failures_near([(column, row)])}
        prover.set_cell(column, row, original + delta)
        try:
            caught = _new_failures(prover, [(column, row)], before)
        finally:
            prover.set_cell(column, row, original)
        out.append(Mutation(CellRef(column.name, row), kind, signed(delta, prover.modulus), caught))
    return out


class _Repairer:
    """Moves cells of a :class:`MockProver` in place, remembering originals and the failures each cell
    already had, and solves failing checks for cells not moved yet. :meth:`restore` undoes everything."""

    def __init__(self, prover: MockProver, free: frozenset[Column], rng: random.Random):
        self.prover, self.free, self.rng = prover, free, rng
        self.original: dict[tuple[Column, int], int] = {}
        self.baseline: set[str] = set()
        self.moves: list[Move] = []

    def settable(self, column: Column, row: int) -> bool:
        return column in self.free and row < self.prover.assigned_span(column) and (column, row) not in self.original

    def register(self, cell: tuple[Column, int]) -> None:
        if cell not in self.original:
            self.baseline |= {_failure_key(f) for f in self.prover.failures_near([cell])}
            self.original[cell] = self.prover.value(*cell)

    def move(self, cell: tuple[Column, int], value: int, reason: str) -> None:
        self.register(cell)
        old = self.prover.value(*cell)
        self.prover.set_cell(*cell, value)
        p = self.prover.modulus
        self.moves.append(Move(CellRef(cell[0].name, cell[1]), signed(old, p), signed(value, p), reason))

    def restore(self) -> None:
        for cell, value in self.original.items():
            self.prover.set_cell(*cell, value)

    def new_failures(self) -> list[Failure]:
        return [f for f in self.prover.failures_near(list(self.original)) if _failure_key(f) not in self.baseline]

    def coefficient(self, poly: Expression, row: int, cell: tuple[Column, int]) -> tuple[int, int] | None:
        """``(c, v0)`` with ``poly(row) = c·x + v0`` as a function of the cell's value x (others fixed), or
        None when it is not affine in x. Leaves the cell as it was."""
        p = self.prover.modulus
        at = np.array([row], dtype=np.int64)
        current = self.prover.value(*cell)
        values = []
        try:
            for trial in (0, 1, 2):
                self.prover.set_cell(*cell, trial)
                values.append(int(self.prover.evaluate(poly, at)[0]))
        finally:
            self.prover.set_cell(*cell, current)
        v0, v1, v2 = values
        if (v2 - 2 * v1 + v0) % p:
            return None
        return (v1 - v0) % p, v0

    def solution(self, poly: Expression, row: int, cell: tuple[Column, int]) -> int | None:
        """The value of ``cell`` that makes ``poly`` vanish at ``row``, or None when ``poly`` is not affine
        in it with a nonzero coefficient."""
        found = self.coefficient(poly, row, cell)
        if found is None or found[0] == 0:
            return None
        c, v0 = found
        p = self.prover.modulus
        return (-v0 * pow(c, -1, p)) % p

    def solve(self, poly: Expression, row: int, cells: Sequence[tuple[Column, int]], reason: str) -> bool:
        """Solve ``poly`` at ``row`` for the candidate cell whose value changes least (ties broken at
        random): small changes are the ones that slip through range checks. False if none is solvable."""
        p = self.prover.modulus
        best = None
        for cell in cells:
            value = self.solution(poly, row, cell)
            if value is not None:
                change = abs(signed(value - self.prover.value(*cell), p))
                key = (change, self.rng.random())
                if best is None or key < best[0]:
                    best = (key, cell, value)
        if best is None:
            return False
        self.move(best[1], best[2], reason)
        return True

    def repair(self, failure: Failure) -> bool:
        """One move that removes ``failure`` (a gate or copy failure), if a free cell allows it."""
        cs, n = self.prover.cs, self.prover.n
        if failure.kind == "gate" and failure.value is not None:
            gate = next(g for g in cs.gates if g.name == failure.name)
            poly = dict(gate.polys)[failure.constraint]
            cells = {(q.column, (failure.row + q.rotation) % n) for q in poly.queries()}
            candidates = sorted((c for c in cells if self.settable(*c)), key=lambda c: (c[0].name, c[1]))
            return self.solve(poly, failure.row, candidates, f"solve {failure.qualified_name}@{failure.row}")
        if failure.kind == "copy" and len(failure.cells) == 2:
            a, b = ((cs.column(c.column), c.row) for c in failure.cells)
            for target, source in ((a, b), (b, a)):
                if self.settable(*target):
                    self.move(target, self.prover.value(*source), f"copy {failure.name}")
                    return True
        return False


def prover_chosen_columns(cs: ConstraintSystem) -> tuple[str, ...]:
    """Committed columns whose values the prover picks at proving time and the statement should
    *determine*, as the circuit's builder declares them (``cs.metadata["prover_chosen_columns"]``): for an
    OBS chunk at level F that is θ' (a function of θ, G and the mask); at level R θ' is an input of the
    statement (any in-range Δ is allowed), so nothing committed is free there."""
    return tuple(cs.metadata.get("prover_chosen_columns", ()))


def compensated_mutation_check(
    prover: MockProver,
    *,
    samples: int,
    depth: int = 4,
    prover_chosen: Sequence[str] = (),
    focus: Sequence[str] | None = None,
    seed: int = 0,
) -> tuple[list[CompensatedMutation], int]:
    """Sampled multi-cell mutations (see :class:`CompensatedMutation`); returns them and the number of
    sampled starts skipped (on none of a few random rows is the constraint affine in both cells with
    nonzero coefficients).

    Starts cycle through every (constraint, ordered pair of free cells it reads, step) combination, on a
    random enabled row each time. Steps alternate between *unit* -- the second cell moves by ±1 and the
    first by whatever keeps the constraint at zero (``Δ + 1, rem - 2^s`` is such a step) -- and *random*
    -- the first cell moves by a random increment and the second is solved. ``depth`` bounds the repair
    moves that follow. Free cells: advice, and the ``prover_chosen`` committed columns. ``focus`` (gate
    or ``gate/constraint`` names) restricts the starts to those constraints.
    """
    rng = random.Random(seed)
    p, n = prover.modulus, prover.n
    cs = prover.cs
    free = frozenset(cs.columns_of(ColumnKind.ADVICE)) | frozenset(cs.column(name) for name in prover_chosen)
    if focus is not None:
        known = {g.name for g in cs.gates} | {f"{g.name}/{n}" for g in cs.gates for n, _ in g.polys}
        unknown = sorted(set(focus) - known)
        if unknown:
            raise KeyError(f"circuit {cs.name!r} has no gate or constraint {unknown}")
    combos = []
    for gate in cs.gates:
        rows = prover.enabled_rows(gate.selector)
        if not len(rows):
            continue
        for poly_name, poly in gate.polys:
            if focus is not None and gate.name not in focus and f"{gate.name}/{poly_name}" not in focus:
                continue
            readable = sorted(q for q in poly.queries() if q.column in free)
            for qa in readable:
                for qb in readable:
                    if qa != qb:
                        for step in ("unit", "random"):
                            combos.append((gate, poly_name, poly, rows, qa, qb, step))
    rng.shuffle(combos)
    out: list[CompensatedMutation] = []
    skipped = 0
    for attempt in range(4 * samples):
        if not combos or len(out) >= samples:
            break
        gate, poly_name, poly, rows, qa, qb, step = combos[attempt % len(combos)]
        repairer = _Repairer(prover, free, rng)
        start = None
        for _ in range(_ROW_TRIES):  # a row where the constraint reads both cells (mask-dependent factors)
            row = int(rows[rng.randrange(len(rows))])
            a = (qa.column, (row + qa.rotation) % n)
            b = (qb.column, (row + qb.rotation) % n)
            if a == b or not (repairer.settable(*a) and repairer.settable(*b)):
                continue
            ca, cb = repairer.coefficient(poly, row, a), repairer.coefficient(poly, row, b)
            if ca is not None and cb is not None and ca[0] and cb[0]:
                start = (row, a, b)
                break
        if start is None:
            skipped += 1
            continue
        row, a, b = start
        reason = f"solve {gate.name}/{poly_name}@{row}"
        try:
            if step == "unit":
                repairer.move(b, prover.value(*b) + rng.choice((1, p - 1)), "step")
                repairer.solve(poly, row, [a], reason)
            else:
                increment = _delta(rng.choice(DELTA_KINDS), prover.value(*a), p, rng)
                repairer.move(a, prover.value(*a) + increment, "step")
                repairer.solve(poly, row, [b], reason)
            left = repairer.new_failures()
            for _ in range(depth):
                if not left:
                    break
                rng.shuffle(left)
                if not any(repairer.repair(f) for f in left):
                    break
                left = repairer.new_failures()
        finally:
            repairer.restore()
        out.append(
            CompensatedMutation(
                gate.name, poly_name, row, tuple(repairer.moves), tuple(sorted({_failure_key(f) for f in left}))
            )
        )
    return out, skipped


# --------------------------------------------------------------------------------------- selector audit


def selector_audit(prover: MockProver, *, seed: int = 0) -> list[SelectorFinding]:
    """Structural findings about selectors and constraint bodies (see the module docstring)."""
    cs, usable = prover.cs, prover.usable
    findings: list[SelectorFinding] = []
    n_selectors_partial = sum(1 for c in cs.columns_of(ColumnKind.SELECTOR) if not _on_everywhere(prover, c))
    switched = [(f"gate {g.name!r}", g.name, g.selector) for g in cs.gates] + [
        (f"lookup {lk.name!r}", lk.name, lk.selector) for lk in cs.lookups if not lk.always_on
    ]
    for lk in cs.lookups:
        if lk.always_on:  # the IR admits plain advice columns only (ir.Lookup); the lookup checks every row
            columns = ", ".join(sorted({q.column.name for e in lk.inputs for q in e.queries()}))
            findings.append(
                SelectorFinding(
                    "no_selector",
                    lk.name,
                    "info",
                    f"lookup {lk.name!r} has no selector: {columns} must hold a table value on every usable row "
                    f"({usable}); the lookup argument leaves out the blinding rows",
                )
            )
    for what, name, selector in switched:
        rows_on = np.flatnonzero(prover.nonzero_cells(selector))
        if len(rows_on) == 0:
            findings.append(
                SelectorFinding(
                    "dead", name, "warning", f"{what}: selector {selector.name!r} is never on; it constrains nothing"
                )
            )
            continue
        blinding = rows_on[rows_on >= usable]
        if len(blinding):
            findings.append(
                SelectorFinding(
                    "blinding_rows",
                    name,
                    "error",
                    f"{what}: selector {selector.name!r} is on in {len(blinding)} row(s) at or beyond the usable rows "
                    f"({usable}), where Halo2 does not enforce constraints -- a constant selector is a constraint "
                    f"without a selector",
                )
            )
        padding = rows_on[(rows_on >= cs.rows) & (rows_on < usable)]
        if len(padding):
            findings.append(
                SelectorFinding(
                    "outside_rows",
                    name,
                    "error",
                    f"{what}: selector {selector.name!r} is on in {len(padding)} row(s) beyond the circuit's "
                    f"{cs.rows} rows (first {int(padding[0])}); a selector on every usable row is a constraint "
                    f"written without a selector",
                )
            )
        if cs.rows > 1 and n_selectors_partial and _on_everywhere(prover, selector):
            findings.append(
                SelectorFinding(
                    "always_on",
                    name,
                    "info",
                    f"{what}: selector {selector.name!r} is on in all {cs.rows} rows while other selectors are not",
                )
            )
        nonbool = rows_on[prover.values(selector, rows_on) != 1]
        if len(nonbool):
            r = int(nonbool[0])
            findings.append(
                SelectorFinding(
                    "non_boolean",
                    name,
                    "error",
                    f"{what}: selector {selector.name!r} has {len(nonbool)} value(s) other than 0/1 "
                    f"(row {r}: {signed(prover.value(selector, r), prover.modulus)})",
                )
            )
    rng = random.Random(seed)
    for gate in cs.gates:
        for poly_name, poly in gate.polys:
            label = f"{gate.name}/{poly_name}"
            witness = [
                q
                for q in poly.queries()
                if q.column.kind in (ColumnKind.ADVICE, ColumnKind.INSTANCE, ColumnKind.COMMITTED)
            ]
            if not witness:
                findings.append(
                    SelectorFinding(
                        "no_witness",
                        label,
                        "warning",
                        "the constraint reads no advice, instance or committed column: it is a statement about "
                        "fixed values only",
                    )
                )
            if _identically_zero(poly, prover.modulus, rng):
                findings.append(
                    SelectorFinding(
                        "vacuous",
                        label,
                        "error",
                        f"the constraint {poly.pretty()} is the zero polynomial: it holds for every witness",
                    )
                )
    return findings


def _on_everywhere(prover: MockProver, selector: Column) -> bool:
    rows = prover.cs.rows
    return prover.assigned_span(selector) >= rows and bool(prover.nonzero_cells(selector)[:rows].all())


def _identically_zero(poly: Expression, modulus: int, rng: random.Random, trials: int = 2) -> bool:
    """Schwartz-Zippel: a nonzero polynomial of degree d vanishes at a random point with probability <= d/p."""
    for _ in range(trials):
        point = {q: rng.randrange(modulus) for q in poly.queries()}
        value = (
            poly.fold(
                constant=lambda c: c % modulus,
                query=lambda q: point[q],  # noqa: B023 (folded at once)
                negated=lambda a: -a,
                sum=lambda a, b: a + b,
                product=lambda a, b: a * b % modulus,
                scaled=lambda a, c: a * c % modulus,
            )
            % modulus
        )
        if value:
            return False
    return True


# ----------------------------------------------------------------------------------------------- driver


def audit(
    cs: ConstraintSystem,
    assignment: Assignment,
    modulus: int,
    *,
    mutations: int = 256,
    compensated: int = 256,
    depth: int = 4,
    prover_chosen: Sequence[str] | None = None,
    focus: Sequence[str] | None = None,
    seed: int = 0,
    assigned: Mapping[str, np.ndarray] | None = None,
) -> AuditReport:
    """Run every audit on ``cs`` with its honest ``assignment``.

    ``mutations`` single-cell mutations are sampled (seeded by ``seed``) among the constrained assigned
    advice cells, spread evenly over the advice columns; ``compensated`` multi-cell mutations with up to
    ``depth`` repair moves (:func:`compensated_mutation_check`) may also move the ``prover_chosen``
    committed columns (default :func:`prover_chosen_columns`) and start at the ``focus`` constraints only
    (default all); ``assigned`` narrows which cells count as assigned (see :func:`assigned_cells`).
    """
    prover = MockProver(cs, assignment, modulus)
    honest = prover.failures(max_failures_per_check=20)
    touched = touched_cells(prover)
    assigned_mask = assigned_cells(prover, touched_cells(prover, always_on=False), assigned)
    unconstrained = _unconstrained(prover, assigned_mask, touched)
    rng = random.Random(seed)
    candidates = {c: np.flatnonzero(assigned_mask[c] & touched[c]) for c in cs.columns_of(ColumnKind.ADVICE)}
    cells = _round_robin_sample(candidates, mutations, rng)
    single = mutation_check(prover, cells, seed=seed + 1)
    chosen = prover_chosen_columns(cs) if prover_chosen is None else tuple(prover_chosen)
    for name in chosen:
        if cs.column(name).kind not in (ColumnKind.ADVICE, ColumnKind.COMMITTED):
            raise ValueError(
                f"prover-chosen column {name!r} is a {cs.column(name).kind.value} column; "
                "only committed (or advice) columns can be chosen by the prover"
            )
    pairs, skipped = compensated_mutation_check(
        prover, samples=compensated, depth=depth, prover_chosen=chosen, focus=focus, seed=seed + 2
    )
    return AuditReport(
        circuit=cs.name,
        honest_failures=honest,
        assigned_cells=int(sum(int(m.sum()) for m in assigned_mask.values())),
        unconstrained=unconstrained,
        mutations=single,
        compensated=pairs,
        compensated_skipped=skipped,
        selector_findings=selector_audit(prover, seed=seed + 3),
    )
