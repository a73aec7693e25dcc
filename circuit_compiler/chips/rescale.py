"""Rescale: floor division by 2^s with a range-checked remainder.

For a numerator ``n`` (an expression of the current row), a quotient cell ``d`` and a remainder cell ``r``,
enforce ``n = d · 2^s + r`` with ``0 ≤ r < 2^s``, i.e. ``d = floor(n / 2^s)``. In the OBS circuit the
numerator is ``-z = -(G ỹ)_i``, the quotient is Δ_i and the gate is switched by ``c = 1 - m`` (unmasked rows;
masked rows reuse ``rem`` for the solve residual, see :mod:`.residual`)::

          |  z  | delta | rem | rem limbs |  m  |  q  |
    row r |  z  |   Δ   |  r  |    ...    |  m  |  1  |

    gate rescale:  q · c · (Δ · 2^s + r - n) = 0        here: q · (1 - m) · (z + Δ · 2^s + r) = 0
    range  rem:    r ∈ [0, 2^s)                           (limbs looked up, see range_check)

The quotient's own range (Δ has w_delta bits) is checked by the update chip. Soundness needs
``|n| + |Δ|·2^s + r < p/2`` -- the ``rescale`` bound of :func:`~circuit_compiler.fixedpoint.check_bounds`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..builder import CircuitBuilder
from ..field import compact_signed
from ..ir import Column, Expression, Negated
from . import range_check
from .range_check import RangeCheckConfig


@dataclasses.dataclass(frozen=True)
class RescaleConfig:
    numerator: Expression
    quotient: Column
    remainder: Column
    shift: int
    condition: Expression | None
    remainder_range: RangeCheckConfig
    selector: Column

    def identity(self) -> Expression:
        """``d · 2^s + r - n``: zero exactly when (d, r) is the floor division of n (given the range of r)."""
        scaled = self.quotient.cur() * (1 << self.shift) + self.remainder.cur()
        if isinstance(self.numerator, Negated):  # n = -x: write "+ x", which reads as the docs do
            return scaled + self.numerator.inner
        return scaled - self.numerator

    def assign(self, numerator: np.ndarray) -> dict[str, np.ndarray]:
        """Quotient and remainder of ``numerator`` (int64 or object ints), with the remainder's limbs."""
        quotient, remainder = floor_divide(numerator, self.shift)
        return {self.quotient.name: quotient, self.remainder.name: remainder, **self.remainder_range.assign(remainder)}


def floor_divide(numerator: np.ndarray, shift: int) -> tuple[np.ndarray, np.ndarray]:
    """``(floor(n / 2^s), n mod 2^s)`` exactly, for int64 or object (Python int) arrays.

    The remainder is always in ``[0, 2^s)`` and int64; the quotient is int64 when it fits.
    """
    numerator = np.asarray(numerator)
    if numerator.dtype == object:
        quotient = numerator // (1 << shift)
        remainder = (numerator - quotient * (1 << shift)).astype(np.int64)
        return compact_signed(quotient), remainder
    numerator = numerator.astype(np.int64)
    return numerator >> np.int64(shift), numerator & np.int64((1 << shift) - 1)


def configure(
    builder: CircuitBuilder,
    *,
    name: str,
    numerator: Expression,
    quotient: Column,
    remainder: Column,
    shift: int,
    limb_bits: int,
    selector: Column,
    condition: Expression | None = None,
) -> RescaleConfig:
    """Register gate ``<name>``: ``selector · condition · (d·2^s + r - n) = 0`` and the remainder's range check."""
    rem_range = range_check.configure(
        builder,
        name=remainder.name,
        value=remainder.cur(),
        bits=shift,
        limb_bits=limb_bits,
        signed=False,
        selector=selector,
    )
    config = RescaleConfig(
        numerator=numerator,
        quotient=quotient,
        remainder=remainder,
        shift=shift,
        condition=condition,
        remainder_range=rem_range,
        selector=selector,
    )
    identity = config.identity()
    builder.gate(name, selector, [(name, condition * identity if condition is not None else identity)])
    return config
