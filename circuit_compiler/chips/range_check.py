"""Range check by lookup with limb decomposition.

Proves ``v + offset ∈ [0, 2^w)`` for an expression ``v`` of the current row (``offset = 2^(w-1)`` for a
signed value, 0 for an unsigned one), with ``w = n·t``. The shifted value is split into ``n`` limbs of
``t`` bits, each looked up in the shared table ``[0, 2^t)``, and one gate ties the limbs to the value::

          |   value   | limb_0 | limb_1 | ... | limb_{n-1} |  q  |
    row r |     v     |  a_0   |  a_1   |     |  a_{n-1}   |  1  |   table: 0, 1, ..., 2^t - 1
                                                                 
    gate   <name>_decompose:  q · (v + offset - Σ_k a_k · 2^(t·k)) = 0
    lookup <name>_limb_k:     q · a_k  ∈  table                      (for every k)

Because ``Σ_k a_k 2^(tk) < 2^w < p/2`` the field equation is the integer one. With one limb (``w = t``)
no limb column or gate is needed: the lookup takes ``q · (v + offset)`` directly.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..builder import CircuitBuilder
from ..fixedpoint import QuantizationError
from ..ir import Column, Expression


@dataclasses.dataclass(frozen=True)
class RangeCheckConfig:
    name: str
    value: Expression  # the checked expression, over the current row
    bits: int  # w
    limb_bits: int  # t
    signed: bool
    limbs: tuple[Column, ...]  # empty when w == t (direct lookup)
    selector: Column
    table: Column

    @property
    def offset(self) -> int:
        return 1 << (self.bits - 1) if self.signed else 0

    @property
    def num_limbs(self) -> int:
        return self.bits // self.limb_bits

    @property
    def bounds(self) -> tuple[int, int]:
        """Inclusive range of accepted values of ``v``."""
        return -self.offset, (1 << self.bits) - 1 - self.offset

    def assign(self, values: np.ndarray) -> dict[str, np.ndarray]:
        """Limb columns for ``values`` (int64, one per row of the region).

        Raises :class:`QuantizationError` naming the check, the first offending position and the range
        when a value does not fit: no limbs exist for it, so no honest witness does either.
        """
        values = np.asarray(values)
        if values.dtype == object or not np.issubdtype(values.dtype, np.integer):
            raise TypeError(f"range check {self.name!r}: values must be an int64 array, got dtype {values.dtype}")
        lo, hi = self.bounds
        bad = (values < lo) | (values > hi)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise QuantizationError(
                f"range check {self.name!r}: value {int(values[i])} at position {i} is outside "
                f"[{lo}, {hi}] ({self.bits} bits, {'signed' if self.signed else 'unsigned'}); "
                f"{int(bad.sum())} values out of range"
            )
        if not self.limbs:
            return {}
        shifted = values.astype(np.int64) + np.int64(self.offset)
        mask = (1 << self.limb_bits) - 1
        return {
            column.name: (shifted >> np.int64(self.limb_bits * k)) & np.int64(mask)
            for k, column in enumerate(self.limbs)
        }


def configure(
    builder: CircuitBuilder,
    *,
    name: str,
    value: Expression,
    bits: int,
    limb_bits: int,
    signed: bool,
    selector: Column,
) -> RangeCheckConfig:
    """Allocate limb columns ``<name>_limb_k`` and register the decomposition gate and limb lookups."""
    if bits < 1 or bits % limb_bits:
        raise ValueError(f"range check {name!r}: width {bits} is not a positive multiple of limb_bits={limb_bits}")
    table = builder.range_table(limb_bits)
    n = bits // limb_bits
    offset = 1 << (bits - 1) if signed else 0
    shifted = value + offset if offset else value
    if n == 1:
        builder.lookup(f"{name}_range", selector, [shifted], [table])
        limbs: tuple[Column, ...] = ()
    else:
        limbs = tuple(builder.advice(f"{name}_limb_{k}") for k in range(n))
        identity = shifted - limbs[0].cur()  # v + offset - Σ_k a_k 2^(tk), written flat so it reads as such
        for k in range(1, n):
            identity = identity - limbs[k].cur() * (1 << (limb_bits * k))
        builder.gate(f"{name}_decompose", selector, [(f"{name}_decompose", identity)])
        for k, limb in enumerate(limbs):
            builder.lookup(f"{name}_limb_{k}", selector, [limb.cur()], [table])
    return RangeCheckConfig(
        name=name, value=value, bits=bits, limb_bits=limb_bits, signed=signed, limbs=limbs, selector=selector, table=table
    )
