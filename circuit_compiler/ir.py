"""A plain, backend-independent PLONKish circuit IR.

The IR is the contract between the lowering (which knows about unlearning) and the provers (the Python
mock prover and the Rust Halo2 backend, which know nothing about it). It is deliberately small:

* ``Column``      -- typed column (advice, fixed, selector, instance, committed instance, lookup table).
* ``Expression``  -- an immutable polynomial over column queries (with rotations) and constants, with one
                     evaluation fold (``Expression.fold``) used for evaluation, degree and serialization.
* ``Gate``        -- named polynomial constraints, each *structurally* behind one selector column: the
                     constraint enforced on row r is ``selector[r] * poly(r) == 0``.
* ``Lookup``      -- named lookup: ``selector * input_i`` must appear as a row of the table columns
                     (so every table contains the all-zero row); or, with no selector ("always on"), a
                     plain advice column must hold a table value on every usable row.
* ``Copy``        -- equality between two cells.
* ``ConstraintSystem`` -- the above plus the number of rows; ``Assignment`` -- the values of every column.

All values are canonical field integers in ``[0, p)``; arrays of small signed integers are accepted as a
compact encoding (``v < 0`` means ``p + v``), see :mod:`circuit_compiler.serialize`.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


class ColumnKind(str, enum.Enum):  # noqa: UP042 (StrEnum would change str() of the kinds)
    ADVICE = "advice"  # private witness, blinded by the prover
    FIXED = "fixed"  # constants chosen at compile time, part of the keys
    SELECTOR = "selector"  # a fixed 0/1 column that switches a gate or lookup on
    INSTANCE = "instance"  # public values, given to the verifier in clear
    COMMITTED = "committed"  # committed instance: the verifier only sees a KZG commitment
    TABLE = "table"  # fixed lookup-table column


@dataclasses.dataclass(frozen=True, order=True)
class Column:
    kind: ColumnKind
    index: int  # index among the columns of the same kind, in declaration order
    name: str

    def query(self, rotation: int = 0) -> Query:
        return Query(self, rotation)

    def cur(self) -> Query:
        return Query(self, 0)

    def prev(self) -> Query:
        return Query(self, -1)

    def next(self) -> Query:
        return Query(self, 1)

    def __repr__(self) -> str:
        return f"{self.kind.value}:{self.name}"


# --------------------------------------------------------------------------------------------- expressions


class Expression:
    """Immutable polynomial expression. Build with ``+ - *`` and ints; evaluate with :meth:`fold`."""

    __slots__ = ()

    def __add__(self, other: Expression | int) -> Expression:
        return Sum(self, as_expression(other))

    def __radd__(self, other: int) -> Expression:
        return Sum(as_expression(other), self)

    def __sub__(self, other: Expression | int) -> Expression:
        return Sum(self, Negated(as_expression(other)))

    def __rsub__(self, other: int) -> Expression:
        return Sum(as_expression(other), Negated(self))

    def __neg__(self) -> Expression:
        return Negated(self)

    def __mul__(self, other: Expression | int) -> Expression:
        if isinstance(other, int):
            return Scaled(self, other)
        return Product(self, other)

    def __rmul__(self, other: int) -> Expression:
        return Scaled(self, other)

    def fold(
        self,
        *,
        constant: Callable[[int], T],
        query: Callable[[Query], T],
        negated: Callable[[T], T],
        sum: Callable[[T, T], T],
        product: Callable[[T, T], T],
        scaled: Callable[[T, int], T],
    ) -> T:
        """The one recursive walk over the tree; everything else is built on it."""
        kw = dict(constant=constant, query=query, negated=negated, sum=sum, product=product, scaled=scaled)
        if isinstance(self, Constant):
            return constant(self.value)
        if isinstance(self, Query):
            return query(self)
        if isinstance(self, Negated):
            return negated(self.inner.fold(**kw))
        if isinstance(self, Sum):
            return sum(self.left.fold(**kw), self.right.fold(**kw))
        if isinstance(self, Product):
            return product(self.left.fold(**kw), self.right.fold(**kw))
        if isinstance(self, Scaled):
            return scaled(self.inner.fold(**kw), self.factor)
        raise TypeError(f"unknown expression node {type(self).__name__}")

    def degree(self) -> int:
        return self.fold(
            constant=lambda _: 0,
            query=lambda q: 1,
            negated=lambda a: a,
            sum=max,
            product=lambda a, b: a + b,
            scaled=lambda a, _: a,
        )

    def queries(self) -> frozenset[Query]:
        return self.fold(
            constant=lambda _: frozenset(),
            query=lambda q: frozenset([q]),
            negated=lambda a: a,
            sum=lambda a, b: a | b,
            product=lambda a, b: a | b,
            scaled=lambda a, _: a,
        )

    def pretty(self) -> str:
        """Readable infix form, e.g. ``q_mac * (acc_0 - acc_0[-1] - G_0 * y)``."""
        return self.fold(
            constant=str,
            query=lambda q: q.column.name if q.rotation == 0 else f"{q.column.name}[{q.rotation:+d}]",
            negated=lambda a: f"-({a})",
            sum=_pretty_sum,
            product=lambda a, b: f"({a}) * ({b})",
            scaled=lambda a, c: f"{c} * ({a})",
        )

    def to_json(self) -> Any:
        """Nested lists: ["const", "123"], ["query", kind, index, rot], ["neg", e], ["sum", a, b],
        ["prod", a, b], ["scale", e, "c"]. Integers are decimal strings of canonical values mod p
        (the serializer reduces them; here they are kept signed)."""
        return self.fold(
            constant=lambda c: ["const", str(c)],
            query=lambda q: ["query", q.column.kind.value, q.column.index, q.rotation],
            negated=lambda a: ["neg", a],
            sum=lambda a, b: ["sum", a, b],
            product=lambda a, b: ["prod", a, b],
            scaled=lambda a, c: ["scale", a, str(c)],
        )


def _pretty_sum(a: str, b: str) -> str:
    # ``b`` renders a Negated node as "-(x)": print "a - x", keeping the parentheses when x is compound.
    if b.startswith("-(") and b.endswith(")"):
        inner = b[2:-1]
        return f"{a} - {inner}" if _is_atomic(inner) else f"{a} - ({inner})"
    return f"{a} + {b}"


def _is_atomic(text: str) -> bool:
    """True when ``text`` has no top-level ``+``/``-`` (products bind tighter and need no parentheses)."""
    depth = 0
    for i, ch in enumerate(text):
        depth += ch in "(["
        depth -= ch in ")]"
        if depth == 0 and text[i : i + 3] in (" + ", " - "):
            return False
    return True


@dataclasses.dataclass(frozen=True)
class Constant(Expression):
    value: int


@dataclasses.dataclass(frozen=True, order=True)
class Query(Expression):
    column: Column
    rotation: int = 0


@dataclasses.dataclass(frozen=True)
class Negated(Expression):
    inner: Expression


@dataclasses.dataclass(frozen=True)
class Sum(Expression):
    left: Expression
    right: Expression


@dataclasses.dataclass(frozen=True)
class Product(Expression):
    left: Expression
    right: Expression


@dataclasses.dataclass(frozen=True)
class Scaled(Expression):
    inner: Expression
    factor: int


def as_expression(x: Expression | int) -> Expression:
    if isinstance(x, Expression):
        return x
    if isinstance(x, (int, np.integer)):
        return Constant(int(x))
    raise TypeError(f"cannot use {x!r} of type {type(x).__name__} in a circuit expression")


def balanced_sum(terms: Sequence[Expression]) -> Expression:
    """``Σ terms`` as a balanced tree of sums: depth ⌈log2 n⌉ instead of the n of a running sum, since
    every walk over an expression (:meth:`Expression.fold`) recurses once per level."""
    if not terms:
        raise ValueError("balanced_sum of no terms")
    level = list(terms)
    while len(level) > 1:
        level = [level[i] + level[i + 1] if i + 1 < len(level) else level[i] for i in range(0, len(level), 2)]
    return level[0]


def expression_from_json(data: Any, columns: Mapping[tuple[str, int], Column]) -> Expression:
    tag = data[0]
    if tag == "const":
        return Constant(int(data[1]))
    if tag == "query":
        return Query(columns[(data[1], data[2])], int(data[3]))
    if tag == "neg":
        return Negated(expression_from_json(data[1], columns))
    if tag == "sum":
        return Sum(expression_from_json(data[1], columns), expression_from_json(data[2], columns))
    if tag == "prod":
        return Product(expression_from_json(data[1], columns), expression_from_json(data[2], columns))
    if tag == "scale":
        return Scaled(expression_from_json(data[1], columns), int(data[2]))
    raise ValueError(f"unknown expression tag {tag!r}")


# ------------------------------------------------------------------------------------- gates, lookups, copies


@dataclasses.dataclass(frozen=True)
class Gate:
    """Named constraints all switched on by one selector: ``selector * poly == 0`` on every row."""

    name: str
    selector: Column
    polys: tuple[tuple[str, Expression], ...]  # (constraint name, polynomial without the selector)

    def __post_init__(self) -> None:
        if self.selector.kind is not ColumnKind.SELECTOR:
            raise ValueError(f"gate {self.name!r}: selector must be a selector column, got {self.selector!r}")
        for poly_name, poly in self.polys:
            for q in poly.queries():
                if q.column.kind in (ColumnKind.SELECTOR, ColumnKind.TABLE):
                    raise ValueError(f"gate {self.name!r}/{poly_name}: may not query {q.column!r} in its body")

    def degree(self) -> int:
        return 1 + max(p.degree() for _, p in self.polys)


@dataclasses.dataclass(frozen=True)
class Lookup:
    """``(selector * inputs[i])_i`` must be a row of ``table`` on every row. Tables contain the zero row.

    ``selector=None`` makes the lookup *always on*: ``(inputs[i])_i`` must be a row of the table on every
    usable row of the domain (the lookup argument itself leaves out the blinding rows). That saves the
    selector factor -- one degree of the lookup argument -- and is allowed only where it cannot read a
    cell another region owns: every input must be a plain advice column at rotation 0, which an honest
    witness leaves 0 (a table value) wherever it does not use it.
    """

    name: str
    selector: Column | None
    inputs: tuple[Expression, ...]
    table: tuple[Column, ...]

    def __post_init__(self) -> None:
        if self.selector is None:
            for e in self.inputs:
                if not (isinstance(e, Query) and e.column.kind is ColumnKind.ADVICE and e.rotation == 0):
                    raise ValueError(
                        f"lookup {self.name!r}: without a selector every input must be an advice column at "
                        f"rotation 0, got {e.pretty()}"
                    )
        elif self.selector.kind is not ColumnKind.SELECTOR:
            raise ValueError(f"lookup {self.name!r}: selector must be a selector column, got {self.selector!r}")
        if len(self.inputs) != len(self.table) or not self.inputs:
            raise ValueError(f"lookup {self.name!r}: {len(self.inputs)} inputs for {len(self.table)} table columns")
        for c in self.table:
            if c.kind is not ColumnKind.TABLE:
                raise ValueError(f"lookup {self.name!r}: {c!r} is not a table column")

    @property
    def always_on(self) -> bool:
        return self.selector is None

    def degree(self) -> int:
        """Degree of the looked-up expressions, the selector factor included."""
        return (0 if self.always_on else 1) + max(e.degree() for e in self.inputs)

    def argument_degree(self) -> int:
        """Degree of the Halo2 lookup argument's constraint (midnight-proofs ``lookup::required_degree``):
        ``max(4, 2 + input degree + table degree)``, tables being plain columns (degree 1). A selector factor
        in the input costs one: an always-on lookup of a column is 4, ``q · limb`` is 5."""
        return max(4, 2 + self.degree() + 1)


@dataclasses.dataclass(frozen=True, order=True)
class Cell:
    column: Column
    row: int


@dataclasses.dataclass(frozen=True)
class Copy:
    a: Cell
    b: Cell


# --------------------------------------------------------------------------------------------- the system

EQUALITY_KINDS = (ColumnKind.ADVICE, ColumnKind.FIXED, ColumnKind.INSTANCE, ColumnKind.COMMITTED)


@dataclasses.dataclass(frozen=True)
class ConstraintSystem:
    """The whole statement: columns, gates, lookups, copies, fixed values and the domain size 2^k.

    ``fixed`` maps every FIXED, SELECTOR and TABLE column name to its values (length ``rows``; the
    prover pads with zeros up to 2^k). Copies are kept as an int64 array of shape (m, 4):
    ``[column_id_a, row_a, column_id_b, row_b]`` with column ids indexing ``self.columns``.
    """

    name: str
    k: int
    rows: int  # rows used (every gate, copy and value lives in [0, rows))
    columns: tuple[Column, ...]
    gates: tuple[Gate, ...]
    lookups: tuple[Lookup, ...]
    copies: np.ndarray  # int64 (m, 4)
    fixed: Mapping[str, np.ndarray]
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError(f"circuit {self.name!r}: duplicate column names")
        limit = usable_rows(self.k, self.max_advice_queries())
        if self.rows > limit:
            raise ValueError(f"circuit {self.name!r}: {self.rows} rows do not fit k={self.k} ({limit} usable rows)")
        for c in self.columns:
            if c.kind in (ColumnKind.FIXED, ColumnKind.SELECTOR, ColumnKind.TABLE):
                if c.name not in self.fixed:
                    raise ValueError(f"circuit {self.name!r}: no values for {c.kind.value} column {c.name!r}")
                if len(self.fixed[c.name]) > (1 << self.k):
                    raise ValueError(f"circuit {self.name!r}: column {c.name!r} longer than 2^k")

    # --- lookups by name / kind
    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"circuit {self.name!r} has no column {name!r}")

    def columns_of(self, kind: ColumnKind) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.kind is kind)

    def column_id(self, column: Column) -> int:
        return self.columns.index(column)

    def max_advice_queries(self) -> int:
        """Distinct rotations at which any one advice column is queried (sets Halo2's blinding rows)."""
        per_column: dict[Column, set[int]] = {}
        for e in self.all_expressions():
            for q in e.queries():
                if q.column.kind is ColumnKind.ADVICE:
                    per_column.setdefault(q.column, set()).add(q.rotation)
        return max((len(r) for r in per_column.values()), default=1)

    def all_expressions(self) -> Iterable[Expression]:
        for g in self.gates:
            for _, p in g.polys:
                yield p
        for lk in self.lookups:
            yield from lk.inputs

    def max_degree(self) -> int:
        """The degree the proof system needs: the highest of the gates (selector included) and the lookup
        arguments (:meth:`Lookup.argument_degree`). Halo2 splits the quotient into ``max_degree - 1``
        pieces of n coefficients, each one more full-size commitment per proof; midnight-proofs' own
        figure (``backend.statistics(cs)["degree"]``) also counts its permutation argument (degree 3)."""
        return max([g.degree() for g in self.gates] + [lk.argument_degree() for lk in self.lookups] + [1])

    def statistics(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "rows": int(self.rows),
            "k": int(self.k),
            "usable_rows": usable_rows(self.k, self.max_advice_queries()),
            "columns": {kind.value: len(self.columns_of(kind)) for kind in ColumnKind},
            "gates": len(self.gates),
            "constraints": sum(len(g.polys) for g in self.gates),
            "lookups": len(self.lookups),
            "copies": int(len(self.copies)),
            "max_degree": int(self.max_degree()),
            "cells": int(self.rows) * len(self.columns),
        }


def usable_rows(k: int, max_advice_queries: int) -> int:
    """Rows a Halo2 (midnight-proofs) circuit of size 2^k can use: the last
    ``max(3, queries) + 2`` rows hold blinding factors and one more row is reserved
    (midnight-proofs: ``n - (ConstraintSystem::blinding_factors() + 1)``)."""
    return (1 << k) - (max(3, max_advice_queries) + 3)


@dataclasses.dataclass
class Assignment:
    """The prover's values: every ADVICE, INSTANCE and COMMITTED column by name.

    Values are numpy arrays of length ``cs.rows``: int64 (small signed integers, ``v < 0`` meaning
    ``p + v``) or object arrays of Python ints already in ``[0, p)``.
    """

    advice: dict[str, np.ndarray]
    instance: dict[str, np.ndarray]
    committed: dict[str, np.ndarray]

    def values(self, column: Column) -> np.ndarray:
        table = {
            ColumnKind.ADVICE: self.advice,
            ColumnKind.INSTANCE: self.instance,
            ColumnKind.COMMITTED: self.committed,
        }.get(column.kind)
        if table is None:
            raise KeyError(f"{column!r} is not a witness or instance column")
        return table[column.name]

    def copy(self) -> Assignment:
        return Assignment(
            advice={k: v.copy() for k, v in self.advice.items()},
            instance={k: v.copy() for k, v in self.instance.items()},
            committed={k: v.copy() for k, v in self.committed.items()},
        )
