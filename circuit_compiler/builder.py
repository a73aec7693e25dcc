"""A small builder that collects columns, gates, lookups, copies and fixed values into a ConstraintSystem.

Chips call :meth:`CircuitBuilder.advice` & co. in their ``configure`` step and :meth:`enable`,
:meth:`assign_fixed` and :meth:`copies` (vectorized over rows) in their layout step; :meth:`build`
materializes the fixed columns and picks the smallest ``k`` whose usable rows hold everything,
range tables included. The builder only ever sees *structure*: witness values go into an
:class:`~circuit_compiler.ir.Assignment` built separately, so keys can be generated without a witness.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from .ir import Cell, Column, ColumnKind, ConstraintSystem, Expression, Gate, Lookup, usable_rows

MAX_K = 28  # 2^28 rows: far beyond what one chunk proof should be


@dataclasses.dataclass
class _FixedWrites:
    rows: list[np.ndarray] = dataclasses.field(default_factory=list)
    values: list[np.ndarray] = dataclasses.field(default_factory=list)


class CircuitBuilder:
    """Accumulates one circuit. Column names are unique across kinds; gate and lookup names are unique."""

    def __init__(self, name: str):
        self.name = name
        self._columns: list[Column] = []
        self._position: dict[Column, int] = {}  # column -> its index in the built system's columns
        self._names: set[str] = set()
        self._count: dict[ColumnKind, int] = {kind: 0 for kind in ColumnKind}
        self._gates: list[Gate] = []
        self._lookups: list[Lookup] = []
        self._copies: list[np.ndarray] = []
        self._fixed: dict[Column, _FixedWrites] = {}
        self._tables: dict[int | tuple[str, int], Column] = {}  # range_table(bits), interval_table(size)
        self._rows = 0  # one past the last row anything touches
        self.metadata: dict[str, Any] = {}

    # ------------------------------------------------------------------------------------------ columns
    def _column(self, kind: ColumnKind, name: str) -> Column:
        if name in self._names:
            raise ValueError(f"circuit {self.name!r}: column name {name!r} is already taken")
        column = Column(kind, self._count[kind], name)
        self._count[kind] += 1
        self._columns.append(column)
        self._position[column] = len(self._columns) - 1
        self._names.add(name)
        if kind in (ColumnKind.FIXED, ColumnKind.SELECTOR, ColumnKind.TABLE):
            self._fixed[column] = _FixedWrites()
        return column

    def advice(self, name: str) -> Column:
        return self._column(ColumnKind.ADVICE, name)

    def fixed(self, name: str) -> Column:
        return self._column(ColumnKind.FIXED, name)

    def selector(self, name: str) -> Column:
        return self._column(ColumnKind.SELECTOR, name)

    def instance(self, name: str) -> Column:
        return self._column(ColumnKind.INSTANCE, name)

    def committed(self, name: str) -> Column:
        return self._column(ColumnKind.COMMITTED, name)

    def table(self, name: str) -> Column:
        return self._column(ColumnKind.TABLE, name)

    def range_table(self, bits: int) -> Column:
        """The shared lookup table ``[0, 2^bits)`` (created once per width; it contains the zero row)."""
        if bits not in self._tables:
            column = self.table(f"range_{bits}")
            self.assign_fixed(column, np.arange(1 << bits, dtype=np.int64), np.arange(1 << bits, dtype=np.int64))
            self._tables[bits] = column
        return self._tables[bits]

    def interval_table(self, size: int) -> Column:
        """The shared lookup table ``[0, size)``, for a closed range that is not a power of two (its rows
        must fit the circuit: ``size`` rows are used)."""
        if size < 1:
            raise ValueError(f"interval table: size {size} must be >= 1")
        key = ("interval", size)
        if key not in self._tables:
            column = self.table(f"interval_{size}")
            self.assign_fixed(column, np.arange(size, dtype=np.int64), np.arange(size, dtype=np.int64))
            self._tables[key] = column
        return self._tables[key]

    @property
    def columns(self) -> tuple[Column, ...]:
        return tuple(self._columns)

    # ------------------------------------------------------------------------------------ gates, lookups
    def gate(
        self, name: str, selector: Column, polys: Sequence[tuple[str, Expression]] | Mapping[str, Expression]
    ) -> Gate:
        """Register ``selector * poly == 0`` for each named poly (the IR refuses non-selector switches)."""
        if any(g.name == name for g in self._gates):
            raise ValueError(f"circuit {self.name!r}: gate {name!r} is already defined")
        items = tuple(polys.items()) if isinstance(polys, Mapping) else tuple(polys)
        if not items:
            raise ValueError(f"circuit {self.name!r}: gate {name!r} has no constraints")
        self._check_known(selector, f"gate {name!r}")
        for _, poly in items:
            for q in poly.queries():
                self._check_known(q.column, f"gate {name!r}")
        gate = Gate(name, selector, items)
        self._gates.append(gate)
        return gate

    def lookup(
        self, name: str, selector: Column | None, inputs: Sequence[Expression], table: Sequence[Column]
    ) -> Lookup:
        """Register ``selector * inputs ∈ table``; ``selector=None``: always on (see :class:`~.ir.Lookup`)."""
        if any(lk.name == name for lk in self._lookups):
            raise ValueError(f"circuit {self.name!r}: lookup {name!r} is already defined")
        lookup = Lookup(name, selector, tuple(inputs), tuple(table))
        if selector is not None:
            self._check_known(selector, f"lookup {name!r}")
        for e in lookup.inputs:
            for q in e.queries():
                self._check_known(q.column, f"lookup {name!r}")
        self._lookups.append(lookup)
        return lookup

    def _check_known(self, column: Column, where: str) -> None:
        if column not in self._position:
            raise ValueError(f"circuit {self.name!r}: {where} uses {column!r}, which this builder did not allocate")

    # ------------------------------------------------------------------------------------ row contents
    def enable(self, selector: Column, rows: np.ndarray | slice | Iterable[int]) -> None:
        """Switch ``selector`` on at ``rows`` (an index array, a slice or an iterable of rows)."""
        if selector.kind is not ColumnKind.SELECTOR:
            raise ValueError(f"circuit {self.name!r}: enable() needs a selector, got {selector!r}")
        rows = self._rows_array(rows)
        self.assign_fixed(selector, rows, np.ones(len(rows), dtype=np.int64))

    def assign_fixed(self, column: Column, rows: np.ndarray | slice | Iterable[int], values: np.ndarray | int) -> None:
        """Set fixed/selector/table values at ``rows`` (later writes to the same row win)."""
        if column not in self._fixed:
            raise ValueError(
                f"circuit {self.name!r}: {column!r} is not a fixed, selector or table column of this builder"
            )
        rows = self._rows_array(rows)
        values = np.broadcast_to(np.asarray(values), rows.shape)
        if values.dtype != object:
            values = values.astype(np.int64)
        writes = self._fixed[column]
        writes.rows.append(rows)
        writes.values.append(np.array(values))
        self._touch(rows)

    def copy(self, a: Cell, b: Cell) -> None:
        self.copies(a.column, [a.row], b.column, [b.row])

    def copies(
        self, column_a: Column, rows_a: np.ndarray | Sequence[int], column_b: Column, rows_b: np.ndarray | Sequence[int]
    ) -> None:
        """Equality constraints ``column_a[rows_a[i]] == column_b[rows_b[i]]`` for every i (vectorized)."""
        rows_a = np.asarray(rows_a, dtype=np.int64).ravel()
        rows_b = np.asarray(rows_b, dtype=np.int64).ravel()
        if rows_a.shape != rows_b.shape:
            raise ValueError(
                f"circuit {self.name!r}: copies {column_a.name}->{column_b.name}: {rows_a.shape} vs {rows_b.shape} rows"
            )
        for c in (column_a, column_b):
            self._check_known(c, "copy")
            if c.kind in (ColumnKind.SELECTOR, ColumnKind.TABLE):
                raise ValueError(f"circuit {self.name!r}: cannot copy-constrain {c!r}")
        ia, ib = self._position[column_a], self._position[column_b]
        self._copies.append(np.stack([np.full_like(rows_a, ia), rows_a, np.full_like(rows_b, ib), rows_b], axis=1))
        self._touch(rows_a)
        self._touch(rows_b)

    def reserve_rows(self, rows: int) -> None:
        """Declare that rows ``[0, rows)`` are used (e.g. by witness-only cells such as salts)."""
        self._rows = max(self._rows, int(rows))

    def _rows_array(self, rows: np.ndarray | slice | Iterable[int]) -> np.ndarray:
        if isinstance(rows, slice):
            if rows.stop is None:
                raise ValueError("row slices need an explicit stop")
            rows = np.arange(*rows.indices(rows.stop))
        rows = np.asarray(list(rows) if not isinstance(rows, np.ndarray) else rows, dtype=np.int64).ravel()
        if rows.size and rows.min() < 0:
            raise ValueError(f"circuit {self.name!r}: negative row {int(rows.min())}")
        return rows

    def _touch(self, rows: np.ndarray) -> None:
        if rows.size:
            self._rows = max(self._rows, int(rows.max()) + 1)

    # --------------------------------------------------------------------------------------------- build
    def build(self, k: int | None = None) -> ConstraintSystem:
        """The ConstraintSystem: fixed columns materialized over the used rows, ``k`` the smallest that fits
        (or the given one, checked)."""
        rows = max(self._rows, 1)
        fixed: dict[str, np.ndarray] = {}
        for column, writes in self._fixed.items():
            is_object = any(v.dtype == object for v in writes.values)
            values = np.zeros(rows, dtype=object if is_object else np.int64)
            for r, v in zip(writes.rows, writes.values):
                values[r] = v
            values.setflags(write=False)
            fixed[column.name] = values
        copies = np.concatenate(self._copies) if self._copies else np.zeros((0, 4), dtype=np.int64)
        copies.setflags(write=False)
        probe = ConstraintSystem(
            name=self.name,
            k=MAX_K,
            rows=rows,
            columns=tuple(self._columns),
            gates=tuple(self._gates),
            lookups=tuple(self._lookups),
            copies=copies,
            fixed=fixed,
            metadata=dict(self.metadata),
        )
        queries = probe.max_advice_queries()
        needed = next((kk for kk in range(1, MAX_K + 1) if usable_rows(kk, queries) >= rows), None)
        if needed is None:
            raise ValueError(f"circuit {self.name!r}: {rows} rows do not fit any k <= {MAX_K}")
        if k is None:
            k = needed
        elif k < needed:
            raise ValueError(
                f"circuit {self.name!r}: k={k} gives {usable_rows(k, queries)} usable rows but {rows} are "
                f"needed (smallest k that fits: {needed})"
            )
        return dataclasses.replace(probe, k=k)
