"""Solve residual bound: ỹ solves the masked block system up to |e| ≤ τ, and ỹ vanishes off the mask.

On a masked row q the circuit does not compute ``y = G_SS⁻¹ θ_S``; it *verifies* it: with
``z_q = (G ỹ)_q`` from the MAC region, ``z_q = θ_q · 2^s + e_q`` where ``e_q = rem_q - τ`` and
``rem_q ∈ [0, 2^s)`` (range-checked by the rescale chip), i.e. ``e_q ∈ [-τ, τ)`` with τ = 2^(s-1)::

          |  z  | theta | rem |  y  | y limbs |  m  |  q  |
    row r |  z  |   θ   |  r  |  ỹ  |   ...   |  m  |  1  |

    gate residual:   q · m · (z - θ · 2^s - rem + τ) = 0
    gate y_off_mask: q · (1 - m) · ỹ = 0
    range y:         ỹ + 2^(w_y-1) ∈ [0, 2^w_y)

Soundness needs ``|z| + |θ|·2^s + rem + τ < p/2`` (bound ``residual``). θ is a committed column whose
range the circuit does not check; the bound assumes the w_w-bit θ the client committed.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..builder import CircuitBuilder
from ..field import compact_signed
from ..ir import Column
from . import range_check
from .range_check import RangeCheckConfig


@dataclasses.dataclass(frozen=True)
class ResidualConfig:
    z: Column
    theta: Column
    rem: Column
    mask: Column
    y: Column
    shift: int  # s
    y_range: RangeCheckConfig
    selector: Column

    @property
    def tau(self) -> int:
        return 1 << (self.shift - 1)

    def assign(self, y: np.ndarray) -> dict[str, np.ndarray]:
        """Limbs of the range check of ỹ (int64, one value per row)."""
        return self.y_range.assign(y)


def solve_residual(z: np.ndarray, theta: np.ndarray, shift: int) -> np.ndarray:
    """``e = z - θ · 2^s`` exactly (int64 when it fits, else object ints)."""
    z = np.asarray(z).astype(object)
    theta = np.asarray(theta, dtype=np.int64).astype(object)
    return compact_signed(z - theta * (1 << shift))


def solve_remainder(e: np.ndarray, shift: int) -> np.ndarray:
    """The ``rem`` cell of a masked row: ``e + τ`` (int64); in ``[0, 2^s)`` exactly when ``e ∈ [-τ, τ)``."""
    return np.asarray(e).astype(np.int64) + np.int64(1 << (shift - 1))


def configure(
    builder: CircuitBuilder,
    *,
    z: Column,
    theta: Column,
    rem: Column,
    mask: Column,
    y: Column,
    shift: int,
    y_bits: int,
    limb_bits: int,
    selector: Column,
) -> ResidualConfig:
    """Register gates ``residual`` and ``y_off_mask`` and the signed range check of ỹ."""
    tau = 1 << (shift - 1)
    m = mask.cur()
    builder.gate("residual", selector, [("residual", m * (z.cur() - theta.cur() * (1 << shift) - rem.cur() + tau))])
    builder.gate("y_off_mask", selector, [("y_off_mask", (1 - m) * y.cur())])
    y_range = range_check.configure(
        builder, name="y", value=y.cur(), bits=y_bits, limb_bits=limb_bits, signed=True, selector=selector
    )
    return ResidualConfig(z=z, theta=theta, rem=rem, mask=mask, y=y, shift=shift, y_range=y_range, selector=selector)
