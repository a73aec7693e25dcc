"""How many random salt cells a committed column needs so that what a verifier sees hides its values.

A committed column is a polynomial p of degree < 2^k whose KZG commitment [p(τ)]_1 the verifier holds.
Each Halo2 proof over it reveals more linear functionals of p:

* p(x·ω^ρ) for every distinct rotation ρ at which a gate, a lookup or (rotation 0) the permutation
  argument queries the column;
* one more evaluation for the column's opening point set: midnight-proofs' multi-open sends, per set of
  points shared by some polynomials, the evaluation of their random linear combination q at a fresh point.
  We count it for every committed column (conservative: a set shared with blinded advice would mask it).

With the commitment itself that is ``openings + 1`` linear functionals of p. If the column carries that
many uniformly random cells in rows that no enabled constraint reads, the map from the salts to those
functionals is (for all but a negligible set of challenges) a bijection, so the commitment and the
evaluations of one proof are uniform and independent of the committed values: perfect hiding per proof.

A commitment opened in more than one proof (G in every request, θ as the new and then the old model) must
be re-randomized per proof (:mod:`.rerandomize`): otherwise the evaluations of n proofs pile up n times
the functionals against one set of salts.

Entry points: :func:`committed_rotations`, :func:`openings_per_proof`, :func:`salts_needed`,
:func:`rows_read`, :func:`expand_salts`, and :func:`revealed_functionals` (the rank test's matrix).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from .ir import ColumnKind, ConstraintSystem, Expression, Gate, Lookup, usable_rows

#: Evaluations midnight-proofs' multi-open adds per opening point set a polynomial belongs to.
POINT_SET_EVALUATIONS = 1


def _expressions(gates: Iterable[Gate], lookups: Iterable[Lookup]) -> Iterable[tuple[str | None, Expression]]:
    """(selector name, expression) of every gate constraint and lookup input; None: an always-on lookup."""
    for g in gates:
        for _, poly in g.polys:
            yield g.selector.name, poly
    for lk in lookups:
        for e in lk.inputs:
            yield None if lk.always_on else lk.selector.name, e


def committed_rotations(
    gates: Iterable[Gate], lookups: Iterable[Lookup], *, copied: Iterable[str] = ()
) -> dict[str, frozenset[int]]:
    """Distinct rotations at which each committed column is queried (copied columns also at rotation 0)."""
    out: dict[str, set[int]] = {name: {0} for name in copied}
    for _, expr in _expressions(gates, lookups):
        for q in expr.queries():
            if q.column.kind is ColumnKind.COMMITTED:
                out.setdefault(q.column.name, set()).add(q.rotation)
    return {name: frozenset(rot) for name, rot in out.items()}


def _copied_columns(cs: ConstraintSystem) -> set[str]:
    ids = np.unique(np.concatenate([cs.copies[:, 0], cs.copies[:, 2]])) if len(cs.copies) else []
    return {cs.columns[int(i)].name for i in ids if cs.columns[int(i)].kind is ColumnKind.COMMITTED}


def openings_per_proof(rotations: Mapping[str, frozenset[int]] | ConstraintSystem) -> dict[str, int]:
    """Evaluations of each committed column one proof reveals: its rotations plus its point set's one."""
    if isinstance(rotations, ConstraintSystem):
        cs = rotations
        rotations = committed_rotations(cs.gates, cs.lookups, copied=_copied_columns(cs))
        for c in cs.columns_of(ColumnKind.COMMITTED):
            rotations.setdefault(c.name, frozenset())
    return {name: len(rot) + (POINT_SET_EVALUATIONS if rot else 0) for name, rot in rotations.items()}


def salts_needed(rotations: Mapping[str, frozenset[int]] | ConstraintSystem) -> dict[str, int]:
    """Random cells per committed column: openings per proof plus one for the commitment itself."""
    return {name: n + 1 for name, n in openings_per_proof(rotations).items()}


def rows_read(cs: ConstraintSystem, column: str) -> set[int]:
    """Rows of ``column`` whose value some enabled gate, lookup or copy depends on.

    A gate (or lookup) with selector q reads the cell at row r + ρ when q is on at row r and the gate
    queries the column at rotation ρ (rows wrap modulo 2^k, as in Halo2). A salt cell must be in none.
    """
    n = 1 << cs.k
    out: set[int] = set()
    for selector, expr in _expressions(cs.gates, cs.lookups):
        rotations = {q.rotation for q in expr.queries() if q.column.name == column}
        if not rotations:
            continue
        if selector is None:  # always on: every usable row (its inputs are advice columns, never salted)
            enabled = np.arange(usable_rows(cs.k, cs.max_advice_queries()))
        else:
            enabled = np.flatnonzero(np.asarray(cs.fixed[selector]) != 0)
        for rho in rotations:
            out.update(((enabled + rho) % n).tolist())
    if len(cs.copies):
        cid = cs.column_id(cs.column(column))
        for col, row in ((0, 1), (2, 3)):
            out.update(cs.copies[cs.copies[:, col] == cid, row].tolist())
    return out


def draw_salt_seed(modulus: int, rng: np.random.Generator | None = None) -> int:
    """A uniformly random field element to seed a column's salts (:func:`expand_salts`).

    ``rng=None`` uses the OS CSPRNG (:mod:`secrets`) -- what a real client must do; a NumPy Generator
    makes tests reproducible (48 bytes reduced mod p: statistically uniform for a 255-bit p).
    """
    if rng is None:
        return secrets.randbelow(modulus)
    return int.from_bytes(rng.bytes(48), "little") % modulus


def expand_salts(seed: int | Sequence[int], name: str, count: int, modulus: int) -> list[int]:
    """The ``count`` salt cells of column ``name``: the given list, or cells derived from one secret seed.

    A seed (an int) expands by BLAKE2b(seed, column, index) reduced mod p (512 bits: the bias is
    < 2^-250), so a client keeps one secret per column whatever the circuit needs. ``theta_new`` expands
    like ``theta``: the new model's commitment is the old model's at the next request.
    """
    label = "theta" if name == "theta_new" else name
    if isinstance(seed, (list, tuple, np.ndarray)):
        cells = [int(s) for s in seed]
        if len(cells) != count:
            raise ValueError(f"column {name!r} needs {count} salt cells, got {len(cells)}")
        if any(not 0 <= s < modulus for s in cells):
            raise ValueError(f"salt cells of {name!r} must be canonical field elements")
        return cells
    seed = int(seed)
    if not 0 <= seed < 1 << 512:
        raise ValueError(f"salt seed of {name!r} must be a non-negative integer below 2^512")
    key = seed.to_bytes(64, "little")
    cells = []
    for j in range(count):
        digest = hashlib.blake2b(f"jaxapex-salt/{label}/{j}".encode(), key=key).digest()
        cells.append(int.from_bytes(digest, "little") % modulus)
    return cells


# ------------------------------------------------------------------------------------ the rank test


def lagrange_at(x: int, k: int, modulus: int, rows: Sequence[int]) -> list[int]:
    """L_i(x) over the 2^k roots of unity (generator 7^((p-1)/2^k), midnight-curves') for i in ``rows``.

    Uses L_i(x) = ω^i (x^n - 1) / (n (x - ω^i)); x must not be a root of unity.
    """
    n = 1 << k
    omega = pow(7, (modulus - 1) >> k, modulus)
    zx = (pow(x, n, modulus) - 1) % modulus
    if zx == 0:
        raise ValueError("evaluation point is a root of unity")
    inv_n = pow(n, -1, modulus)
    out = []
    for i in rows:
        wi = pow(omega, i, modulus)
        out.append(wi * zx % modulus * inv_n % modulus * pow((x - wi) % modulus, -1, modulus) % modulus)
    return out


def revealed_functionals(
    *, k: int, modulus: int, salt_rows: Sequence[int], tau: int, x: int, rotations: Iterable[int], x3: int
) -> list[list[int]]:
    """Matrix (functionals × salts) of what the verifier learns about the salt part of one column.

    Rows: the commitment (the polynomial at τ), the evaluation at x·ω^ρ per rotation, and the point-set
    evaluation at x3. Column j holds the functional's value on L_{salt_rows[j]}. Full rank (rank = number
    of functionals) means every combination of revealed values is masked by the salts.
    """
    omega = pow(7, (modulus - 1) >> k, modulus)
    points = [tau] + [x * pow(omega, rho % (1 << k), modulus) % modulus for rho in sorted(rotations)] + [x3]
    return [lagrange_at(pt, k, modulus, salt_rows) for pt in points]


def rank_mod_p(matrix: Sequence[Sequence[int]], modulus: int) -> int:
    """Rank of an integer matrix over GF(p), by Gaussian elimination."""
    rows = [[v % modulus for v in row] for row in matrix]
    rank, cols = 0, len(rows[0]) if rows else 0
    for c in range(cols):
        pivot = next((r for r in range(rank, len(rows)) if rows[r][c]), None)
        if pivot is None:
            continue
        rows[rank], rows[pivot] = rows[pivot], rows[rank]
        inv = pow(rows[rank][c], -1, modulus)
        rows[rank] = [v * inv % modulus for v in rows[rank]]
        for r in range(len(rows)):
            if r != rank and rows[r][c]:
                f = rows[r][c]
                rows[r] = [(a - f * b) % modulus for a, b in zip(rows[r], rows[rank])]
        rank += 1
    return rank
