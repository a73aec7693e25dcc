"""Registration well-formedness: a proof that every registered committed value lies in its declared range.

The chunk circuit's no-wrap bounds (:func:`~circuit_compiler.fixedpoint.check_bounds`) assume that the
committed weights fit ``w_w`` signed bits and the committed G entries satisfy ``|G| ≤ 2^f_g``; the chunk
circuit itself never re-checks them. A client proves them once, at registration, per chunk, in this
circuit over the *same* committed columns (``theta`` and, at level F, the G lanes ``g_0 …``) on the same 2^k
domain and rows as the chunk circuit, so it binds exactly the commitments the client registers::

            | theta | g_l | theta_range limbs | q_theta | q_g |
    row r   |  θ_r  | g_r |       ...         |    1    |  1  |   (r < salt rows)

    θ:   range_check(θ − θ_offset, w_w bits, signed)                     -> θ ∈ [−2^(w_w−1), 2^(w_w−1))
    G:   interval_check(G, −2^f_g, 2^f_g)                                -> |G| ≤ 2^f_g

(G = g − g_offset.) |G| ≤ 2^f_g is a closed range of 2^(f_g+1) + 1 values: one lookup per G lane into a
table of exactly those values (``interval_<2^(f_g+1)+1>``) where the circuit's rows can hold that table
(k = 14 and up at the default f_g = 12), otherwise two one-sided checks against a power-of-two table,
``range_check(G + 2^f_g, f_g + 2 bits)`` and ``range_check(2^f_g − G, f_g + 2 bits)`` (both non-negative,
summing to 2^(f_g+1), so each is at most that) -- twice the lookup arguments. Every row the chunk circuit
could read -- everything before the salt rows -- is checked; the salt rows are not (they hold random field
elements) and no chunk constraint reads them.

Entry points: :func:`build_wellformed_circuit` (structure, for keygen), :func:`wellformed_assignment`
(the witness from the committed columns; raises :class:`QuantizationError` naming the column and row when
a value is out of range, since no honest witness exists then).
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from .builder import CircuitBuilder
from .chips import range_check
from .chips.range_check import IntervalCheckConfig, RangeCheckConfig
from .fixedpoint import QuantizationError
from .ir import Assignment, ConstraintSystem
from .lowering import ChunkShape, build_chunk_circuit


def registered_names(shape: ChunkShape) -> tuple[str, ...]:
    """The committed columns a client registers: θ and, at level F, the G lanes (not θ')."""
    return tuple(name for name in shape.committed_names() if name != "theta_new")


def checked_rows(shape: ChunkShape, name: str) -> range:
    """Rows of column ``name`` the well-formedness circuit range-checks: every row before its salts."""
    return range(shape.salt_rows(name).start)


@dataclasses.dataclass(frozen=True)
class Check:
    """One range check of a committed column: it checks ``sign · v + shift`` (v: the stored value less
    the column's offset)."""

    config: RangeCheckConfig | IntervalCheckConfig
    sign: int = 1
    shift: int = 0


@dataclasses.dataclass(frozen=True)
class WellFormedCircuit:
    shape: ChunkShape
    cs: ConstraintSystem
    checks: dict[str, tuple[Check, ...]]  # committed column -> its range checks


@functools.lru_cache(maxsize=16)
def build_wellformed_circuit(shape: ChunkShape) -> WellFormedCircuit:
    """The well-formedness circuit of ``shape``'s registered columns (same k as the chunk circuit)."""
    chunk_cs = build_chunk_circuit(shape).cs
    spec, t = shape.spec, shape.limb_bits
    level = f"_L{shape.lanes}" if shape.level == "F" else ""
    b = CircuitBuilder(f"wellformed_{shape.level}_nb{shape.blocks}_B{shape.block_size}{level}_{shape.layout}")
    checks: dict[str, tuple[Check, ...]] = {}
    theta = b.committed("theta")
    q_theta = b.selector("q_theta")
    checks["theta"] = (
        Check(
            range_check.configure(
                b,
                name="theta_range",
                value=theta.cur() - shape.theta_offset,
                bits=spec.w_w,
                limb_bits=t,
                signed=True,
                selector=q_theta,
            )
        ),
    )
    b.enable(q_theta, np.arange(checked_rows(shape, "theta").stop))
    if shape.level == "F":
        q_g = b.selector("q_g")
        bound = 1 << spec.f_g
        one_lookup = 2 * bound + 1 <= chunk_cs.rows  # the interval's table fits the rows the circuit has
        for name in registered_names(shape)[1:]:
            g = b.committed(name).cur() - shape.g_offset
            if one_lookup:
                interval = range_check.configure_interval(
                    b, name=f"{name}_range", value=g, lo=-bound, hi=bound, selector=q_g
                )
                checks[name] = (Check(interval),)
                continue
            lo, hi = (
                range_check.configure(
                    b, name=f"{name}_{side}", value=value, bits=spec.f_g + 2, limb_bits=t, signed=False, selector=q_g
                )
                for side, value in (("lo", g + bound), ("hi", bound - g))
            )
            checks[name] = (Check(lo, 1, bound), Check(hi, -1, bound))
        b.enable(q_g, np.arange(shape.g_salt_row))
    b.reserve_rows(chunk_cs.rows)
    b.metadata.update(
        circuit="wellformed",
        shape=shape.to_dict(),
        checked_rows={name: [0, checked_rows(shape, name).stop] for name in registered_names(shape)},
    )
    return WellFormedCircuit(shape=shape, cs=b.build(k=chunk_cs.k), checks=checks)


def _signed(column: np.ndarray, rows: range, modulus: int, name: str) -> np.ndarray:
    """Rows of a committed column (canonical field ints) as signed integers; refuses what int64 cannot hold."""
    out = np.zeros(len(rows), dtype=np.int64)
    for i, r in enumerate(rows):
        v = int(column[r]) % modulus
        v = v - modulus if v > modulus // 2 else v
        if abs(v) >= 1 << 62:
            raise QuantizationError(
                f"committed column {name!r} row {r}: value of {v.bit_length()} bits is far outside every declared range"
            )
        out[i] = v
    return out


def wellformed_assignment(circuit: WellFormedCircuit, committed: dict[str, np.ndarray]) -> Assignment:
    """The witness of the well-formedness proof for the registered ``committed`` columns (with salts).

    ``committed`` holds the columns exactly as committed (:func:`~circuit_compiler.lowering.committed_columns`).
    """
    shape, cs = circuit.shape, circuit.cs
    p = shape.field.modulus
    advice: dict[str, np.ndarray] = {}
    out_committed: dict[str, np.ndarray] = {}
    for name, configs in circuit.checks.items():
        if name not in committed:
            raise KeyError(f"well-formedness: no committed column {name!r} (have {sorted(committed)})")
        column = np.asarray(committed[name], dtype=object)
        if len(column) != cs.rows:
            raise ValueError(f"well-formedness: column {name!r} has {len(column)} rows, the circuit {cs.rows}")
        out_committed[name] = column
        rows = checked_rows(shape, name)
        stored = _signed(column, rows, p, name)
        value = stored - (shape.theta_offset if name == "theta" else shape.g_offset)
        for check in configs:
            try:
                limbs = check.config.assign(check.sign * value + check.shift)
            except QuantizationError as err:
                raise QuantizationError(f"registered column {name!r} is out of its declared range: {err}") from err
            for limb, values in limbs.items():
                full = np.zeros(cs.rows, dtype=np.int64)
                full[: len(values)] = values
                advice[limb] = full
    missing = {c.name for c in cs.columns if c.kind.value == "advice"} - set(advice)
    assert not missing, f"well-formedness left advice columns unassigned: {sorted(missing)}"
    return Assignment(advice=advice, instance={}, committed=out_committed)
