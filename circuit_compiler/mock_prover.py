"""Vectorized mock prover: checks an :class:`~circuit_compiler.ir.Assignment` against a
:class:`~circuit_compiler.ir.ConstraintSystem` exactly, modulo the field prime, with Halo2's semantics.

What is checked (all rows at once, with numpy):

* **gates** -- for every gate and every row ``r`` of ``[0, usable_rows)`` whose selector is on,
  every constraint polynomial is zero mod p at ``r``; an advice query that lands in a blinding row
  (``>= usable_rows``, e.g. a rotation of -1 on row 0, which wraps modulo 2^k) is a failure too, because
  the real prover fills those rows with random values;
* **lookups** -- on every usable row the tuple ``selector * inputs`` is a row of the table columns (tables
  are read over ``[0, usable_rows)``, zero-padded, so a table shorter than that contains the zero row);
  an always-on lookup (no selector) checks ``inputs`` itself on every usable row;
* **copies** -- both cells hold the same value; the columns are equality columns and the rows lie in
  ``[0, rows)``;
* **values** -- every witness column of the circuit is assigned, nothing else is, no column is longer than
  ``rows`` (fixed columns: than ``usable_rows``), and every value is an integer in ``[0, p)`` (or an int64,
  ``v < 0`` meaning ``p + v``).

Exact arithmetic, three tiers per (constraint, batch of rows): each column is held as signed int64
representatives (``|v| < 2^62``) plus the few cells too large for that (random salts, tampered cells). An
interval bound computed from the actual column maxima decides the tier:

1. every intermediate provably fits int64 -> plain int64 evaluation; the integer result ``V`` has
   ``|V| < 2^63 < p`` so ``V = 0 (mod p)`` iff ``V = 0``;
2. the final bound is below p -> evaluate modulo a few 31-bit primes whose product exceeds the bound
   (residue number system); ``V = 0`` iff every residue is 0;
3. otherwise, and for rows touching a large cell -> Python integers mod p (object arrays).

Cells beyond a column's values are 0; rotations wrap modulo 2^k.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from .ir import (
    EQUALITY_KINDS,
    Assignment,
    Column,
    ColumnKind,
    ConstraintSystem,
    Expression,
    Gate,
    Lookup,
    Product,
    Query,
    usable_rows,
)

# Cells whose signed representative has |v| < 2^62 are stored inline as int64: abs() and one addition
# of two such values cannot overflow.
SMALL_LIMIT = 1 << 62
_INT64_LIMIT = 1 << 63

WITNESS_KINDS = (ColumnKind.ADVICE, ColumnKind.INSTANCE, ColumnKind.COMMITTED)
FIXED_KINDS = (ColumnKind.FIXED, ColumnKind.SELECTOR, ColumnKind.TABLE)


# ------------------------------------------------------------------------------------------- failures


@dataclasses.dataclass(frozen=True)
class CellValue:
    """One cell involved in a failure. ``value`` is canonical in [0, p); ``signed`` is the representative
    in (-p/2, p/2], which is what a reader wants to see for fixed-point data. ``label`` is how the
    constraint refers to the cell (``acc_0[-1]``) when that differs from the column name."""

    column: str
    row: int
    value: int
    signed: int
    label: str = ""

    def __str__(self) -> str:
        name = self.label or self.column
        return f"{name} @ row {self.row} = {_show(self.signed)}"


@dataclasses.dataclass(frozen=True)
class Failure:
    """A violated check.

    ``kind``: "gate" | "lookup" | "copy" | "value"; ``name``: the gate, lookup or column name (for copies,
    ``"a = b"``); ``constraint``: the constraint name inside a gate; ``row``: the row it was checked on (the
    row of cell ``a`` for copies, ``None`` for whole-column problems); ``cells``: the cells involved and their
    values; ``value``: the polynomial's value (gates, signed) or the looked-up tuple (lookups).
    """

    kind: str
    name: str
    row: int | None
    cells: tuple[CellValue, ...] = ()
    constraint: str = ""
    value: int | tuple[int, ...] | None = None
    detail: str = ""

    @property
    def qualified_name(self) -> str:
        return f"{self.name}/{self.constraint}" if self.constraint else self.name

    def __str__(self) -> str:
        where = "" if self.row is None else f" on row {self.row}"
        head = f"{self.kind} {self.qualified_name!r}{where}"
        if self.kind == "gate" and self.value is not None:
            head += f": evaluates to {_show(self.value)}, not 0"
        elif self.kind == "lookup" and self.value is not None:
            head += f": {tuple(_show(v) for v in self.value)} is not in the table"
        if self.detail:
            head += f": {self.detail}"
        if self.cells:
            head += "\n    " + ", ".join(str(c) for c in self.cells)
        return head


class ConstraintViolation(AssertionError):
    """Raised by :func:`assert_satisfied`; ``failures`` holds every failure found."""

    def __init__(self, message: str, failures: Sequence[Failure]):
        super().__init__(message)
        self.failures = list(failures)


def _show(v: int) -> str:
    return str(v) if abs(v) < 1 << 80 else f"{'-' if v < 0 else ''}0x{abs(v):x}"


def signed(value: int, modulus: int) -> int:
    """The representative of ``value mod p`` in (-p/2, p/2]."""
    value %= modulus
    return value - modulus if value > modulus // 2 else value


# ------------------------------------------------------------------------------------- public entry points


def check(
    cs: ConstraintSystem,
    assignment: Assignment,
    modulus: int,
    *,
    max_failures_per_check: int | None = None,
) -> list[Failure]:
    """Every failure of ``assignment`` against ``cs`` (empty when satisfied), ordered value problems first,
    then gates, lookups and copies in declaration order, rows ascending.

    ``max_failures_per_check`` caps the failures reported per constraint / lookup / column (all are found;
    only the reporting is capped), useful for grossly wrong witnesses of large circuits.
    """
    return MockProver(cs, assignment, modulus).failures(max_failures_per_check=max_failures_per_check)


def assert_satisfied(cs: ConstraintSystem, assignment: Assignment, modulus: int, *, show: int = 10) -> None:
    """Raise :class:`ConstraintViolation` listing the first ``show`` failures if any check fails."""
    failures = check(cs, assignment, modulus)
    if failures:
        shown = "\n".join(f"  {i + 1}. {f}" for i, f in enumerate(failures[:show]))
        more = f"\n  ... and {len(failures) - show} more" if len(failures) > show else ""
        raise ConstraintViolation(
            f"circuit {cs.name!r}: {len(failures)} failure(s) in the mock prover:\n{shown}{more}", failures
        )


# ------------------------------------------------------------------------------------------ column store


@dataclasses.dataclass
class ColumnValues:
    """A column's values over ``[0, span)``, cells beyond being 0.

    ``small[i]`` is the signed int64 representative of cell i when ``|v| < 2^62``; cells too large for
    that are flagged in ``is_big`` (``None`` when there are none) and kept canonical in ``big``.
    ``small`` has one extra trailing 0: the sentinel that every out-of-span row is gathered from.
    """

    small: np.ndarray
    is_big: np.ndarray | None
    big: dict[int, int]
    span: int

    def positions(self, rows: np.ndarray) -> np.ndarray:
        return np.where(rows < self.span, rows, self.span)

    def gather(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        pos = self.positions(rows)
        return self.small[pos], (None if self.is_big is None else self.is_big[pos])

    def value_at(self, row: int, modulus: int) -> int:
        """Canonical value of one cell."""
        if row >= self.span:
            return 0
        if self.is_big is not None and self.is_big[row]:
            return self.big[row]
        return int(self.small[row]) % modulus

    def exact(self, rows: np.ndarray, modulus: int) -> np.ndarray:
        """Canonical Python-int values (object array) at ``rows``."""
        pos = self.positions(rows)
        out = self.small[pos].astype(object) % modulus
        if self.is_big is not None:
            for i in np.flatnonzero(self.is_big[pos]):
                out[i] = self.big[int(pos[i])]
        return out

    def set(self, row: int, value: int, modulus: int) -> None:
        """Overwrite one cell (``row < span``) with a canonical value."""
        s = signed(value, modulus)
        if -SMALL_LIMIT < s < SMALL_LIMIT:
            self.small[row] = s
            if self.is_big is not None:
                self.is_big[row] = False
            self.big.pop(row, None)
        else:
            self.small[row] = 0
            if self.is_big is None:
                self.is_big = np.zeros(len(self.small), dtype=bool)
            self.is_big[row] = True
            self.big[row] = value % modulus


def column_values(values: np.ndarray, modulus: int) -> tuple[ColumnValues, list[tuple[int, str]]]:
    """Parse one column's array into a :class:`ColumnValues` and the list of ``(row, problem)`` found
    (non-integers, values outside [0, p)); bad cells are kept reduced mod p so checking can go on."""
    values = np.asarray(values)
    if values.ndim != 1:
        raise ValueError(f"column values must be one-dimensional, got shape {values.shape}")
    span = len(values)
    problems: list[tuple[int, str]] = []
    big: dict[int, int] = {}
    if values.dtype == np.bool_:
        values = values.astype(np.int64)
    if np.issubdtype(values.dtype, np.signedinteger):
        v64 = values.astype(np.int64)
        large = (v64 >= SMALL_LIMIT) | (v64 <= -SMALL_LIMIT)
        small = np.where(large, 0, v64)
        for i in np.flatnonzero(large):
            big[int(i)] = int(v64[i]) % modulus
    elif np.issubdtype(values.dtype, np.unsignedinteger) or values.dtype == object:
        small = np.zeros(span, dtype=np.int64)
        half = modulus // 2
        for i, raw in enumerate(values.tolist()):
            if isinstance(raw, bool) or not isinstance(raw, (int, np.integer)):
                problems.append((i, f"{raw!r} of type {type(raw).__name__} is not an integer"))
                try:
                    raw = int(raw)
                except (TypeError, ValueError, OverflowError):
                    continue
            v = int(raw)
            if not 0 <= v < modulus:
                problems.append((i, f"{_show(v)} is not a canonical field element in [0, p)"))
                v %= modulus
            s = v - modulus if v > half else v
            if -SMALL_LIMIT < s < SMALL_LIMIT:
                small[i] = s
            else:
                big[i] = v
    else:
        raise TypeError(f"column values must be integers (int64 or Python ints), got dtype {values.dtype}")
    small = np.append(small, np.int64(0))
    is_big = None
    if big:
        is_big = np.zeros(span + 1, dtype=bool)
        is_big[list(big)] = True
    return ColumnValues(small=small, is_big=is_big, big=big, span=span), problems


# ---------------------------------------------------------------------------------------- evaluation


def _residue_primes(count: int) -> list[int]:
    """The ``count`` largest primes below 2^31 (products of two residues fit int64)."""
    primes: list[int] = []
    candidate = (1 << 31) - 1
    while len(primes) < count:
        if all(candidate % d for d in range(3, int(candidate**0.5) + 1, 2)):
            primes.append(candidate)
        candidate -= 2
    return primes


# p < 2^256 and each prime exceeds 2^30.99, so 9 primes cover any bound below p.
RESIDUE_PRIMES = tuple(_residue_primes(9))


def _bounds(expr: Expression, maxabs: Mapping[Query, int], modulus: int) -> tuple[int, int]:
    """(bound on |value|, bound on |any intermediate|) over integers, from the queried columns' maxima."""

    def node(b: int, worst: int) -> tuple[int, int]:
        return b, max(b, worst)

    return expr.fold(
        constant=lambda c: node(abs(signed(c, modulus)), 0),
        query=lambda q: node(maxabs[q], 0),
        negated=lambda a: a,
        sum=lambda a, b: node(a[0] + b[0], max(a[1], b[1])),
        product=lambda a, b: node(a[0] * b[0], max(a[1], b[1])),
        scaled=lambda a, c: node(a[0] * abs(signed(c, modulus)), a[1]),
    )


def _eval_int64(expr: Expression, vals: Mapping[Query, np.ndarray], modulus: int):
    """Integer value over signed representatives; the caller has proved nothing overflows."""
    return expr.fold(
        constant=lambda c: signed(c, modulus),
        query=lambda q: vals[q],
        negated=lambda a: -a,
        sum=lambda a, b: a + b,
        product=lambda a, b: a * b,
        scaled=lambda a, c: a * signed(c, modulus),
    )


def _eval_residue(expr: Expression, vals: Mapping[Query, np.ndarray], prime: int, modulus: int):
    """Integer value over signed representatives, modulo a 31-bit prime (all operands in [0, prime))."""
    return expr.fold(
        constant=lambda c: signed(c, modulus) % prime,
        query=lambda q: vals[q] % prime,
        negated=lambda a: (-a) % prime,
        sum=lambda a, b: (a + b) % prime,
        product=lambda a, b: (a * b) % prime,
        scaled=lambda a, c: (a * (signed(c, modulus) % prime)) % prime,
    )


def _eval_exact(expr: Expression, vals: Mapping[Query, np.ndarray], modulus: int):
    """Canonical value mod p with Python integers (object arrays)."""
    return (
        expr.fold(
            constant=lambda c: c % modulus,
            query=lambda q: vals[q],
            negated=lambda a: -a,
            sum=lambda a, b: a + b,
            product=lambda a, b: (a * b) % modulus,
            scaled=lambda a, c: (a * (c % modulus)) % modulus,
        )
        % modulus
    )


def _broadcast(value, n: int, dtype) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    return np.full(n, value, dtype=dtype)


# ------------------------------------------------------------------------------------------ the prover


class MockProver:
    """Holds a circuit and its values in checkable form; :meth:`failures` runs every check.

    The cell store can be changed in place (:meth:`set_cell`) and re-checked locally
    (:meth:`failures_near`), which is what the mutation audit does.
    """

    def __init__(self, cs: ConstraintSystem, assignment: Assignment, modulus: int):
        if modulus < _INT64_LIMIT:
            raise ValueError(f"modulus {modulus} is below 2^63; the mock prover assumes a large prime field")
        self.cs = cs
        self.modulus = modulus
        self.n = 1 << cs.k
        self.usable = usable_rows(cs.k, cs.max_advice_queries())
        self.value_failures: list[Failure] = []
        self._store: dict[Column, ColumnValues] = {}
        self._load(assignment)
        self._enabled: dict[Column, np.ndarray] = {}
        self._tables: dict[int, _Table] = {}
        self._copy_index: tuple[np.ndarray, np.ndarray] | None = None
        self._query_cache: dict[int, tuple[Expression, tuple[Query, ...]]] = {}
        self._readers: dict[Column, list[tuple[str, int, int]]] | None = None
        # (constraint, row) evaluations per arithmetic tier of :meth:`nonzero`: int64, residue, exact.
        self.tier_rows: dict[str, int] = {"int64": 0, "residue": 0, "exact": 0}

    # --- loading
    def _load(self, assignment: Assignment) -> None:
        cs = self.cs
        given = {
            ColumnKind.ADVICE: assignment.advice,
            ColumnKind.INSTANCE: assignment.instance,
            ColumnKind.COMMITTED: assignment.committed,
        }
        for kind, table in given.items():
            declared = {c.name for c in cs.columns_of(kind)}
            for name in sorted(set(table) - declared):
                self._value_failure(
                    name, None, f"assignment has {kind.value} column {name!r}, which the circuit does not declare"
                )
        for column in cs.columns:
            if column.kind in WITNESS_KINDS:
                source = given[column.kind]
                if column.name not in source:
                    self._value_failure(column.name, None, f"{column.kind.value} column is not assigned")
                    raw = np.zeros(0, dtype=np.int64)
                else:
                    raw = source[column.name]
                limit, limit_name = cs.rows, "rows"
            else:
                raw = cs.fixed[column.name]
                limit, limit_name = self.usable, "usable rows"
            try:
                values, problems = column_values(raw, self.modulus)
            except (TypeError, ValueError) as err:
                self._value_failure(column.name, None, f"{column.kind.value} column: {err}")
                values, problems = column_values(np.zeros(0, dtype=np.int64), self.modulus)
            for row, problem in problems:
                self._value_failure(column.name, row, problem)
            if values.span > limit:
                self._value_failure(
                    column.name,
                    None,
                    f"{column.kind.value} column has {values.span} values but the circuit has {limit} {limit_name}",
                )
            self._store[column] = values

    def _value_failure(self, name: str, row: int | None, detail: str) -> None:
        self.value_failures.append(Failure(kind="value", name=name, row=row, detail=detail))

    # --- cells (the public view of the store, which the audit and the layout plot read)
    def value(self, column: Column, row: int) -> int:
        return self._store[column].value_at(row % self.n, self.modulus)

    def values(self, column: Column, rows: np.ndarray) -> np.ndarray:
        """Canonical values (Python ints, object array) of ``column`` at ``rows``."""
        return self._store[column].exact(np.asarray(rows, dtype=np.int64) % self.n, self.modulus)

    def assigned_span(self, column: Column) -> int:
        """How many leading rows of ``column`` hold assigned values (the rest read as 0)."""
        return self._store[column].span

    def nonzero_cells(self, column: Column, rows: np.ndarray | None = None) -> np.ndarray:
        """Bool per row of ``rows`` (default: the assigned span): does the cell hold a nonzero value?"""
        values = self._store[column]
        rows = np.arange(values.span) if rows is None else np.asarray(rows, dtype=np.int64) % self.n
        small, big = values.gather(rows)
        return (small != 0) | (big if big is not None else False)

    def set_cell(self, column: Column, row: int, value: int) -> None:
        """Overwrite a witness cell inside its column's values (``row < span``)."""
        values = self._store[column]
        if not 0 <= row < values.span:
            raise IndexError(f"{column!r}: row {row} is outside its {values.span} assigned values")
        values.set(row, value % self.modulus, self.modulus)

    def enabled_rows(self, selector: Column) -> np.ndarray:
        """Rows of [0, usable_rows) where ``selector`` is nonzero (int64, ascending)."""
        if selector not in self._enabled:
            values = self._store[selector]
            top = min(values.span, self.usable)
            on = values.small[:top] != 0
            if values.is_big is not None:
                on |= values.is_big[:top]
            self._enabled[selector] = np.flatnonzero(on).astype(np.int64)
        return self._enabled[selector]

    def lookup_rows(self, lookup: Lookup) -> np.ndarray:
        """Rows of [0, usable_rows) where ``lookup`` applies: its selector's, or all of them (always on)."""
        if lookup.always_on:
            return np.arange(self.usable, dtype=np.int64)
        return self.enabled_rows(lookup.selector)

    def _lookup_on(self, lookup: Lookup, rows: np.ndarray) -> np.ndarray:
        if lookup.always_on:
            return rows < self.usable
        return self._selector_on(lookup.selector, rows)

    def _selector_on(self, selector: Column, rows: np.ndarray) -> np.ndarray:
        small, is_big = self._store[selector].gather(rows)
        on = small != 0
        if is_big is not None:
            on |= is_big
        return on & (rows < self.usable)

    def queries(self, expr: Expression) -> tuple[Query, ...]:
        """``sorted(expr.queries())``, cached per expression object (the walk is the costly part of small
        re-checks)."""
        hit = self._query_cache.get(id(expr))
        if hit is None or hit[0] is not expr:
            hit = (expr, tuple(sorted(expr.queries())))
            self._query_cache[id(expr)] = hit
        return hit[1]

    # --- all checks
    def failures(self, *, max_failures_per_check: int | None = None) -> list[Failure]:
        out = list(self.value_failures)
        for gate in self.cs.gates:
            out += self.gate_failures(gate, self.enabled_rows(gate.selector), limit=max_failures_per_check)
        for index, lookup in enumerate(self.cs.lookups):
            out += self.lookup_failures(index, lookup, limit=max_failures_per_check)
        out += self.copy_failures(np.arange(len(self.cs.copies)), limit=max_failures_per_check)
        return out

    # --- gates
    def _gathered(self, queries: Iterable[Query], rows: np.ndarray):
        """Per query: int64 values at ``rows + rotation`` (mod 2^k) and its big-cell flags."""
        small: dict[Query, np.ndarray] = {}
        big_rows = np.zeros(len(rows), dtype=bool)
        for q in queries:
            target = (rows + q.rotation) % self.n
            vals, is_big = self._store[q.column].gather(target)
            small[q] = vals
            if is_big is not None:
                big_rows |= is_big
        return small, big_rows

    def _exact_values(self, queries: Iterable[Query], rows: np.ndarray) -> dict[Query, np.ndarray]:
        return {q: self._store[q.column].exact((rows + q.rotation) % self.n, self.modulus) for q in queries}

    def nonzero(self, expr: Expression, rows: np.ndarray) -> np.ndarray:
        """Boolean array: is ``expr`` nonzero mod p at each of ``rows``? Exact (see the module docstring)."""
        queries = self.queries(expr)
        small, big_rows = self._gathered(queries, rows)
        result = np.zeros(len(rows), dtype=bool)
        fast = ~big_rows
        if fast.any():
            sub = {q: v[fast] for q, v in small.items()}
            maxabs = {q: (int(np.abs(v).max()) if len(v) else 0) for q, v in sub.items()}
            bound, worst = _bounds(expr, maxabs, self.modulus)
            count = int(fast.sum())
            if worst < _INT64_LIMIT:
                value = _broadcast(_eval_int64(expr, sub, self.modulus), count, np.int64)
                result[fast] = value != 0
                self.tier_rows["int64"] += count
            elif bound < self.modulus:
                nonzero = np.zeros(count, dtype=bool)
                product = 1
                for prime in RESIDUE_PRIMES:
                    nonzero |= _broadcast(_eval_residue(expr, sub, prime, self.modulus), count, np.int64) != 0
                    product *= prime
                    if product > bound:
                        break
                result[fast] = nonzero
                self.tier_rows["residue"] += count
            else:
                fast[:] = False
        slow = ~fast
        if slow.any():
            rows_slow = rows[slow]
            value = _broadcast(
                _eval_exact(expr, self._exact_values(queries, rows_slow), self.modulus), len(rows_slow), object
            )
            result[slow] = value != 0
            self.tier_rows["exact"] += len(rows_slow)
        return result

    def evaluate(self, expr: Expression, rows: np.ndarray) -> np.ndarray:
        """Canonical values of ``expr`` at ``rows`` (object array of Python ints)."""
        queries = self.queries(expr)
        return _broadcast(_eval_exact(expr, self._exact_values(queries, rows), self.modulus), len(rows), object)

    def gate_failures(self, gate: Gate, rows: np.ndarray, *, limit: int | None = None) -> list[Failure]:
        """Check ``gate`` on ``rows`` (which must be rows where its selector is on)."""
        out: list[Failure] = []
        if len(rows) == 0:
            return out
        for poly_name, poly in gate.polys:
            found: list[Failure] = []
            queries = self.queries(poly)
            blinding = np.zeros(len(rows), dtype=bool)
            for q in queries:
                if q.column.kind is ColumnKind.ADVICE:
                    blinding |= (rows + q.rotation) % self.n >= self.usable
            for r in rows[blinding]:
                found.append(self._gate_failure(gate, poly_name, poly, int(r), blinding=True))
            bad = self.nonzero(poly, rows) & ~blinding
            for r in rows[bad][: None if limit is None else max(0, limit - len(found))]:
                found.append(self._gate_failure(gate, poly_name, poly, int(r)))
            out += found[:limit] if limit is not None else found
        return sorted(out, key=lambda f: (f.row, [n for n, _ in gate.polys].index(f.constraint)))

    def _cells(self, queries: Iterable[Query], row: int) -> tuple[CellValue, ...]:
        cells = []
        for q in queries:
            target = (row + q.rotation) % self.n
            value = self.value(q.column, target)
            label = q.column.name if q.rotation == 0 else f"{q.column.name}[{q.rotation:+d}]"
            cells.append(CellValue(q.column.name, target, value, signed(value, self.modulus), label))
        return tuple(cells)

    def _gate_failure(self, gate: Gate, poly_name: str, poly: Expression, row: int, *, blinding: bool = False):
        queries = self.queries(poly)
        if blinding:
            reads = sorted(
                {
                    (row + q.rotation) % self.n
                    for q in queries
                    if q.column.kind is ColumnKind.ADVICE and (row + q.rotation) % self.n >= self.usable
                }
            )
            detail = (
                f"reads advice in blinding row(s) {reads} (usable rows end at {self.usable}; "
                f"the real prover puts random values there)"
            )
            return Failure("gate", gate.name, row, self._cells(queries, row), poly_name, None, detail)
        value = int(self.evaluate(poly, np.array([row]))[0])
        return Failure("gate", gate.name, row, self._cells(queries, row), poly_name, signed(value, self.modulus))

    # --- lookups
    def _table(self, index: int, lookup: Lookup) -> _Table:
        if index not in self._tables:
            self._tables[index] = _Table.build([self._store[c] for c in lookup.table], self.usable, self.modulus)
        return self._tables[index]

    def lookup_inputs(self, lookup: Lookup, rows: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per input: (signed int64 values, big flags, canonical values where big) of ``selector * input``
        (of ``input`` for an always-on lookup)."""
        if lookup.always_on:
            return [self._signed_values(expr, rows) for expr in lookup.inputs]
        selector = Query(lookup.selector, 0)
        sel_small, sel_big = self._gathered([selector], rows)
        # Selectors are almost always 1 where on: skip the multiplication then.
        unit = not sel_big.any() and bool(np.all(sel_small[selector] == 1))
        out = []
        for expr in lookup.inputs:
            full = expr if unit else Product(selector, expr)
            out.append(self._signed_values(full, rows))
        return out

    def _signed_values(self, expr: Expression, rows: np.ndarray):
        queries = self.queries(expr)
        small, big_rows = self._gathered(queries, rows)
        fast = ~big_rows
        signed_vals = np.zeros(len(rows), dtype=np.int64)
        if fast.any():
            sub = {q: v[fast] for q, v in small.items()}
            maxabs = {q: (int(np.abs(v).max()) if len(v) else 0) for q, v in sub.items()}
            bound, worst = _bounds(expr, maxabs, self.modulus)
            if worst < SMALL_LIMIT:
                signed_vals[fast] = _broadcast(_eval_int64(expr, sub, self.modulus), int(fast.sum()), np.int64)
            else:
                fast[:] = False
        is_big = np.zeros(len(rows), dtype=bool)
        canonical = np.zeros(len(rows), dtype=object)
        slow = np.flatnonzero(~fast)
        if len(slow):
            exact = self.evaluate(expr, rows[slow])
            for i, v in zip(slow, exact):
                s = signed(int(v), self.modulus)
                if -SMALL_LIMIT < s < SMALL_LIMIT:
                    signed_vals[i] = s
                else:
                    is_big[i] = True
                    canonical[i] = int(v)
        return signed_vals, is_big, canonical

    def lookup_failures(
        self, index: int, lookup: Lookup, *, rows: np.ndarray | None = None, limit: int | None = None
    ) -> list[Failure]:
        """Check ``lookup`` on its enabled rows (or on ``rows``, restricted to enabled ones)."""
        table = self._table(index, lookup)
        out: list[Failure] = []
        enabled = self.lookup_rows(lookup)
        if rows is None:
            if len(enabled) < self.usable and not table.has_zero:
                first_off = int(np.flatnonzero(~np.isin(np.arange(self.usable), enabled))[0])
                out.append(
                    Failure(
                        "lookup",
                        lookup.name,
                        first_off,
                        value=(0,) * len(lookup.table),
                        detail=f"the table has no all-zero row, which every row with the selector off looks up "
                        f"({self.usable - len(enabled)} such rows)",
                    )
                )
            rows = enabled
        else:
            rows = rows[self._lookup_on(lookup, rows)]
        if len(rows) == 0:
            return out
        inputs = self.lookup_inputs(lookup, rows)
        present = table.contains(inputs, self.modulus)
        queries = sorted(frozenset().union(*(self.queries(e) for e in lookup.inputs)))
        for i in np.flatnonzero(~present)[:limit]:
            looked_up = tuple(int(c[i]) if b[i] else int(s[i]) for s, b, c in inputs)
            out.append(
                Failure(
                    "lookup",
                    lookup.name,
                    int(rows[i]),
                    self._cells(queries, int(rows[i])),
                    value=looked_up,
                    detail=f"table columns {[c.name for c in lookup.table]}",
                )
            )
        return out

    # --- copies
    def copy_failures(self, indices: np.ndarray, *, limit: int | None = None) -> list[Failure]:
        copies = np.asarray(self.cs.copies, dtype=np.int64).reshape(-1, 4)[indices]
        out: list[Failure] = []
        if len(copies) == 0:
            return out
        columns = self.cs.columns
        structural = self._structurally_bad(copies)
        for j in np.flatnonzero(structural):
            ca, ra, cb, rb = (int(x) for x in copies[j])
            out.append(Failure("copy", self._copy_name(ca, cb), ra, detail=self._copy_problem(ca, ra, cb, rb)))
        ok = np.flatnonzero(~structural)
        if len(ok) == 0:
            return out
        sides = []
        for col_index, row_index in ((0, 1), (2, 3)):
            small = np.zeros(len(ok), dtype=np.int64)
            is_big = np.zeros(len(ok), dtype=bool)
            ids = copies[ok, col_index]
            for cid in np.unique(ids):
                sel = ids == cid
                vals, big = self._store[columns[cid]].gather(copies[ok[sel], row_index])
                small[sel] = vals
                if big is not None:
                    is_big[sel] = big
            sides.append((small, is_big))
        (sa, ba), (sb, bb) = sides
        differ = np.where(ba | bb, True, sa != sb)
        for j in np.flatnonzero(differ):
            ca, ra, cb, rb = (int(x) for x in copies[ok[j]])
            va, vb = self.value(columns[ca], ra), self.value(columns[cb], rb)
            if va == vb:
                continue
            if limit is not None and len(out) >= limit:
                break
            cells = (
                CellValue(columns[ca].name, ra, va, signed(va, self.modulus)),
                CellValue(columns[cb].name, rb, vb, signed(vb, self.modulus)),
            )
            out.append(
                Failure(
                    "copy",
                    self._copy_name(ca, cb),
                    ra,
                    cells,
                    detail=f"{columns[ca].name}[{ra}] != {columns[cb].name}[{rb}]",
                )
            )
        return out

    def _structurally_bad(self, copies: np.ndarray) -> np.ndarray:
        """Copies naming a missing column, a column without equality, or a row outside [0, rows)."""
        allowed = np.array([c.kind in EQUALITY_KINDS for c in self.cs.columns] + [False])
        bad = np.zeros(len(copies), dtype=bool)
        for col, row in ((copies[:, 0], copies[:, 1]), (copies[:, 2], copies[:, 3])):
            in_range = (col >= 0) & (col < len(self.cs.columns))
            bad |= ~allowed[np.where(in_range, col, len(self.cs.columns))]
            bad |= (row < 0) | (row >= self.cs.rows)
        return bad

    def _copy_name(self, ca: int, cb: int) -> str:
        names = [self.cs.columns[c].name if 0 <= c < len(self.cs.columns) else f"#{c}" for c in (ca, cb)]
        return f"{names[0]} = {names[1]}"

    def _copy_problem(self, ca: int, ra: int, cb: int, rb: int) -> str:
        for cid, row in ((ca, ra), (cb, rb)):
            if not 0 <= cid < len(self.cs.columns):
                return f"column position {cid} does not exist ({len(self.cs.columns)} columns)"
            column = self.cs.columns[cid]
            if column.kind not in EQUALITY_KINDS:
                return f"{column!r} is a {column.kind.value} column, which cannot take part in copies"
            if not 0 <= row < self.cs.rows:
                return f"{column.name}[{row}] lies outside the circuit's rows [0, {self.cs.rows})"
        return ""

    def copies_of(self, column: Column, row: int) -> np.ndarray:
        """Indices of the copies that name cell (column, row)."""
        if self._copy_index is None:
            copies = np.asarray(self.cs.copies, dtype=np.int64).reshape(-1, 4)
            keys = np.concatenate([copies[:, 0] * self.n + copies[:, 1], copies[:, 2] * self.n + copies[:, 3]])
            which = np.concatenate([np.arange(len(copies)), np.arange(len(copies))])
            order = np.argsort(keys, kind="stable")
            self._copy_index = (keys[order], which[order])
        keys, which = self._copy_index
        key = self.cs.column_id(column) * self.n + row
        lo, hi = np.searchsorted(keys, key, "left"), np.searchsorted(keys, key, "right")
        return np.unique(which[lo:hi])

    # --- local re-check (for mutations)
    def readers(self, column: Column) -> list[tuple[str, int, int]]:
        """``(kind, index, rotation)`` of every gate ("gate", index into cs.gates) and lookup ("lookup")
        that queries ``column`` at ``rotation``."""
        if self._readers is None:
            readers: dict[Column, set[tuple[str, int, int]]] = {}
            for index, gate in enumerate(self.cs.gates):
                for _, poly in gate.polys:
                    for q in self.queries(poly):
                        readers.setdefault(q.column, set()).add(("gate", index, q.rotation))
            for index, lookup in enumerate(self.cs.lookups):
                for expr in lookup.inputs:
                    for q in self.queries(expr):
                        readers.setdefault(q.column, set()).add(("lookup", index, q.rotation))
            self._readers = {c: sorted(r) for c, r in readers.items()}
        return self._readers.get(column, [])

    # --- local re-check (for mutations)
    def failures_near(self, cells: Iterable[tuple[Column, int]]) -> list[Failure]:
        """Re-run only the checks that can see the given cells: gate and lookup rows whose queries land on
        them, and the copies that name them."""
        cells = list(cells)
        rows: dict[tuple[str, int], set[int]] = {}
        for column, row in cells:
            for kind, index, rotation in self.readers(column):
                rows.setdefault((kind, index), set()).add((row - rotation) % self.n)
        out: list[Failure] = []
        for (kind, index), candidates in sorted(rows.items()):
            array = np.array(sorted(candidates), dtype=np.int64)
            if kind == "gate":
                gate = self.cs.gates[index]
                array = array[self._selector_on(gate.selector, array)]
                if len(array):
                    out += self.gate_failures(gate, array)
            else:
                out += self.lookup_failures(index, self.cs.lookups[index], rows=array)
        copy_ids = [self.copies_of(c, r) for c, r in cells]
        if copy_ids:
            out += self.copy_failures(np.unique(np.concatenate(copy_ids)))
        return out


# ---------------------------------------------------------------------------------------------- tables


@dataclasses.dataclass
class _Table:
    """A lookup table's rows over [0, usable_rows): small rows sorted for vectorized membership, rows with
    a large entry in a Python set of canonical tuples."""

    sorted_small: np.ndarray  # structured (one int64 field per column), sorted, unique
    big_rows: frozenset[tuple[int, ...]]
    has_zero: bool
    width: int

    @staticmethod
    def build(columns: Sequence[ColumnValues], usable: int, modulus: int) -> _Table:
        rows = np.arange(usable, dtype=np.int64)
        smalls, bigs = [], np.zeros(usable, dtype=bool)
        for col in columns:
            small, is_big = col.gather(rows)
            smalls.append(small)
            if is_big is not None:
                bigs |= is_big
        width = len(columns)
        keys = _structured([s[~bigs] for s in smalls])
        sorted_small = np.unique(keys)
        big_rows = frozenset(tuple(col.value_at(int(r), modulus) for col in columns) for r in np.flatnonzero(bigs))
        zero = _structured([np.zeros(1, dtype=np.int64)] * width)
        has_zero = bool(len(sorted_small)) and bool(np.isin(zero, sorted_small)[0])
        return _Table(sorted_small=sorted_small, big_rows=big_rows, has_zero=has_zero, width=width)

    def contains(self, inputs: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], modulus: int) -> np.ndarray:
        n = len(inputs[0][0])
        any_big = np.zeros(n, dtype=bool)
        for _, is_big, _ in inputs:
            any_big |= is_big
        present = np.zeros(n, dtype=bool)
        small_rows = np.flatnonzero(~any_big)
        if len(small_rows) and len(self.sorted_small):
            keys = _structured([s[small_rows] for s, _, _ in inputs])
            if self.width == 1:
                present[small_rows] = np.isin(keys["f0"], self.sorted_small["f0"])
            else:
                pos = np.searchsorted(self.sorted_small, keys)
                pos = np.minimum(pos, len(self.sorted_small) - 1)
                present[small_rows] = self.sorted_small[pos] == keys
        for i in np.flatnonzero(any_big):
            key = tuple(int(c[i]) if b[i] else int(s[i]) % modulus for s, b, c in inputs)
            present[i] = key in self.big_rows
        return present


def _structured(columns: Sequence[np.ndarray]) -> np.ndarray:
    dtype = np.dtype([(f"f{i}", np.int64) for i in range(len(columns))])
    out = np.empty(len(columns[0]) if columns else 0, dtype=dtype)
    for i, c in enumerate(columns):
        out[f"f{i}"] = c
    return out
