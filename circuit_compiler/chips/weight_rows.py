"""The OBS relation on one row per weight, over one shared row of range-checked limbs (compact layout).

Row ``r = b·B + i`` holds weight i of block b. Two unsigned limb fields replace every range-checked cell
of the classic layout (there is no Δ, ỹ-range or remainder *cell*; they are expressions of the limbs):

* ``low``  (s bits):   the floor remainder r_i on unmasked rows, ``e_q + τ`` on masked rows;
* ``high`` (w bits, ``w = max(w_delta, w_y)``, offset ``h = 2^(w-1)``): ``Δ_i + h`` on unmasked rows,
  ``ỹ_q + h`` on masked rows.

Δ is 0 on the mask and ỹ is 0 off it, so one field holds both. Committed weights are stored with the
offset ``a = 2^(w_w - 1)`` (``θ_e = θ + a``), which keeps them small and non-negative::

          | theta  theta_new | mask | y  | low limbs | high limbs | q_fin |
    row r | θ + a  θ' + a    |  m   | ỹ  |    L      |     H      |   1   |

    removal:    m · (θ'_e - a) = 0                                    θ' = 0 on the mask
    update:     (1 - m) · (θ'_e - θ_e - (H - h)) = 0                  θ' = θ + Δ off the mask
    y_on_mask:  y - m · (H - h) = 0                                   ỹ = H - h on the mask, 0 elsewhere
    residual:   m · (z - (θ_e - a)·2^s + τ - L) = 0                   (Gỹ)_q = θ_q 2^s + e_q, e_q ∈ [-τ, τ)
    rescale:    (1 - m) · (z + (H - h)·2^s + L) = 0                   Δ_i = floor(-(Gỹ)_i / 2^s)

with ``z`` the product expression of :mod:`.diagonal`. At level R (no G) the high field is Δ alone and
the row carries ``no_delta_on_mask: m · (H - h) = 0`` and ``locality: (1 - t) · (H - h) = 0``.

Every limb is constrained on every weight row (by a lookup or a short-limb gate), so on masked rows the
high field is ỹ and on unmasked ones Δ, and nothing is left free. Soundness needs the bounds of
:func:`~circuit_compiler.fixedpoint.check_bounds` with ``w_delta = w_y = w``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..builder import CircuitBuilder
from ..ir import Column, Expression
from . import range_check
from .range_check import LimbsConfig


@dataclasses.dataclass(frozen=True)
class WeightRowsConfig:
    theta: Column
    theta_new: Column
    mask: Column
    touched: Column | None  # level R
    y: Column | None  # level F
    low: LimbsConfig | None  # level F: remainder / residual + τ (s bits)
    high: LimbsConfig  # Δ (+ h) off the mask, ỹ (+ h) on it
    shift: int  # s
    theta_offset: int  # a
    selector: Column

    @property
    def high_offset(self) -> int:
        return 1 << (self.high.bits - 1)

    @property
    def tau(self) -> int:
        return 1 << (self.shift - 1)

    def theta_expr(self) -> Expression:
        return self.theta.cur() - self.theta_offset

    def signed_high(self) -> Expression:
        """``H - h``: Δ on unmasked rows, ỹ on masked rows."""
        return self.high.value - self.high_offset

    def assign(
        self, *, mask: np.ndarray, delta: np.ndarray, y: np.ndarray | None = None, rem: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """Limb columns (int64, one value per weight row) from the mask and the witness values.

        ``delta``, ``y``, ``rem``: (weights,) int64; ``y`` and ``rem`` only at level F. Values outside the
        fields raise :class:`~circuit_compiler.fixedpoint.QuantizationError` naming the field.
        """
        mask = np.asarray(mask, dtype=bool)
        high = np.asarray(delta, dtype=np.int64)
        if self.low is not None:
            if y is None or rem is None:
                raise ValueError("weight rows at level F need ỹ and the remainders")
            high = np.where(mask, np.asarray(y, dtype=np.int64), high)
        out = self.high.assign(high + np.int64(self.high_offset))
        if self.low is not None:
            out.update(self.low.assign(np.asarray(rem, dtype=np.int64)))
        return out


def configure(
    builder: CircuitBuilder,
    *,
    theta: Column,
    theta_new: Column,
    mask: Column,
    high_bits: int,
    limb_bits: int,
    theta_offset: int,
    selector: Column,
    product: Expression | None = None,
    y: Column | None = None,
    shift: int | None = None,
    touched: Column | None = None,
    y_extra: Expression | None = None,
) -> WeightRowsConfig:
    """Register the row's gates and limb checks. Level F: give ``product`` (z), ``y`` and ``shift``;
    level R: give ``touched``. ``y_extra`` (level F, forget directions): the y gate becomes
    ``y - m · (H - h) - y_extra = 0`` (:mod:`.forget`)."""
    level_f = product is not None
    if level_f and (y is None or shift is None or touched is not None):
        raise ValueError("weight rows at level F need the product z, the ỹ column and the shift, and no 'touched'")
    if not level_f and touched is None:
        raise ValueError("weight rows at level R need the 'touched' instance column")
    m = mask.cur()
    high = range_check.configure_limbs(builder, name="high", bits=high_bits, limb_bits=limb_bits, selector=selector)
    low = (
        range_check.configure_limbs(builder, name="low", bits=shift, limb_bits=limb_bits, selector=selector)
        if level_f
        else None
    )
    config = WeightRowsConfig(
        theta=theta,
        theta_new=theta_new,
        mask=mask,
        touched=touched,
        y=y,
        low=low,
        high=high,
        shift=shift or 0,
        theta_offset=theta_offset,
        selector=selector,
    )
    delta = config.signed_high()
    builder.gate("removal", selector, [("removal", m * (theta_new.cur() - theta_offset))])
    builder.gate("update", selector, [("update", (1 - m) * (theta_new.cur() - theta.cur() - delta))])
    if level_f:
        assert y is not None and low is not None and shift is not None and product is not None
        y_gate = y.cur() - m * delta if y_extra is None else y.cur() - m * delta - y_extra
        builder.gate("y_on_mask", selector, [("y_on_mask", y_gate)])
        residual = product - config.theta_expr() * (1 << shift) + config.tau - low.value
        builder.gate("residual", selector, [("residual", m * residual)])
        builder.gate("rescale", selector, [("rescale", (1 - m) * (product + delta * (1 << shift) + low.value))])
    else:
        assert touched is not None
        builder.gate("no_delta_on_mask", selector, [("no_delta_on_mask", m * delta)])
        builder.gate("locality", selector, [("locality", (1 - touched.cur()) * delta)])
    return config


def encode_weights(theta: np.ndarray, offset: int) -> np.ndarray:
    """Committed weight values ``θ + a`` (int64): small and non-negative for every θ of w_w bits."""
    return np.asarray(theta, dtype=np.int64) + np.int64(offset)
