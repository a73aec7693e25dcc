"""The OBS relation on one row per weight, over one shared row of range-checked limbs (compact layout).

Row ``r = b·B + i`` holds weight i of block b. Two unsigned limb fields replace every range-checked cell
of the classic layout (there is no Δ, ỹ-range or remainder *cell*; they are expressions of the limbs):

* ``low``  (s bits):   the floor remainder r_i on unmasked rows, ``e_q + τ`` on masked rows;
* ``high`` (w bits, ``w = max(w_delta, w_y)``): ``Δ_i + h_Δ`` on unmasked rows, ``ỹ_q + h_y`` on masked
  rows, with ``h_Δ = 2^(w_delta-1)`` and ``h_y = 2^(w-1)``.

Δ is 0 on the mask and ỹ is 0 off it, so one field holds both. The two offsets differ so that Δ's bound
is a statement about whole limbs: the high limbs have a boundary at bit ``b = w_delta``, and off the mask
every limb above it is zero, i.e. ``Δ + 2^(b-1) ∈ [0, 2^b)``, ``Δ ∈ [-2^(b-1), 2^(b-1))`` -- the public
bound on the repair (b_Δ), while ỹ on the mask keeps all w bits::

    bit      w-1 .............. b  |  b-1 ............... 0
    H      [    top limbs  T      ] | [   bottom limbs      ]
    m = 0  [      0 (gated)       ] | [  Δ + 2^(b-1)        ]    Δ ∈ [-2^(b-1), 2^(b-1))
    m = 1  [            ỹ + 2^(w-1) over all w bits         ]    ỹ ∈ [-2^(w-1), 2^(w-1))

(with a single offset 2^(w-1) a small Δ would set the top bit, so "top limbs zero" would mean Δ close to
-2^(w-1), not |Δ| small). Committed weights are stored with the offset ``a = 2^(w_w - 1)``
(``θ_e = θ + a``), which keeps them small and non-negative::

          | theta  theta_new | mask | y  | low limbs | high limbs | q_fin |
    row r | θ + a  θ' + a    |  m   | ỹ  |    L      |   H (T)    |   1   |

    removal:     m · (θ'_e - a) = 0                                   θ' = 0 on the mask
    update:      (1 - m) · (θ'_e - θ_e - (H - h_Δ)) = 0               θ' = θ + Δ off the mask
    delta_bound: (1 - m) · T = 0                                      |Δ| ≤ 2^(b-1) off the mask
    y_on_mask:   y - m · (H - h_y) = 0                                ỹ = H - h_y on the mask, 0 elsewhere
    residual_rescale:
        z - m · ((θ_e - a)·2^s - τ + L) + (1 - m) · ((H - h_Δ)·2^s + L) = 0
                                 m = 1: (Gỹ)_q = θ_q 2^s + e_q, e_q = L - τ ∈ [-τ, τ)   (solve residual)
                                 m = 0: Δ_i = floor(-(Gỹ)_i / 2^s), remainder L            (rescale)
    limbs (always on):  every limb of L and H ∈ its table, on every usable row

with ``z`` the product expression of :mod:`.diagonal` and ``T = ⌊H / 2^b⌋`` the recomposition of the top
limbs. All gates are behind ``q_fin``. The two relations on z share one gate: the mask is the verifier's
0/1 instance, so ``z = m·A + (1 - m)·B`` says ``z = A`` on masked rows and ``z = B`` elsewhere, exactly
what the pair ``m·(z - A) = 0``, ``(1 - m)·(z - B) = 0`` said, at degree 4 (q_fin × the degree-3 z) instead
of 5. The limb lookups carry no selector (:func:`~.range_check.configure_limbs` ``always_on``): off the
weight rows an honest witness leaves the limbs 0, a table value; that keeps the lookup argument at degree 4
too, so the quotient has 3 pieces instead of 4. When ``w_delta ≥ w_y`` (and always at level R, where the field is Δ alone) ``w = b``, there are no
top limbs and no ``delta_bound`` gate: the field's own width is the bound. At level R the row carries
``no_delta_on_mask: m · (H - h_Δ) = 0`` and ``locality: (1 - t) · (H - h_Δ) = 0``.

Every limb is constrained on every weight row (by a lookup or a short-limb gate of degree ≤ 3: a 2-bit
rest is cut into two 1-bit limbs, :func:`~.range_check.split_limb_widths`), so on masked rows the
high field is ỹ and on unmasked ones Δ, and nothing is left free. Soundness needs the bounds of
:func:`~circuit_compiler.fixedpoint.check_bounds` with Δ on ``w_delta`` bits and ỹ on ``w``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..builder import CircuitBuilder
from ..fixedpoint import check_fits
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
    high: LimbsConfig  # Δ + h_Δ off the mask, ỹ + h_y on it; limb boundary at bit delta_bits
    shift: int  # s
    theta_offset: int  # a
    selector: Column
    delta_bits: int  # b_Δ = w_delta: Δ ∈ [-2^(b-1), 2^(b-1)) off the mask

    @property
    def delta_offset(self) -> int:
        """h_Δ = 2^(b_Δ - 1): the offset of Δ (unmasked rows)."""
        return 1 << (self.delta_bits - 1)

    @property
    def y_offset(self) -> int:
        """h_y = 2^(w - 1): the offset of ỹ (masked rows, level F)."""
        return 1 << (self.high.bits - 1)

    @property
    def tau(self) -> int:
        return 1 << (self.shift - 1)

    def theta_expr(self) -> Expression:
        return self.theta.cur() - self.theta_offset

    def delta(self) -> Expression:
        """``H - h_Δ``: Δ on unmasked rows."""
        return self.high.value - self.delta_offset

    def y_value(self) -> Expression:
        """``H - h_y``: ỹ on masked rows."""
        return self.high.value - self.y_offset

    def residual_rescale(self, product: Expression) -> Expression:
        """``z - m·((θ_e - a)·2^s - τ + L) + (1 - m)·(Δ·2^s + L)``: the solve residual on masked rows, the
        floor division off them (module docstring). Degree 3, as z is."""
        assert self.low is not None, "level F only"
        m, scale = self.mask.cur(), 1 << self.shift
        on_mask = self.theta_expr() * scale - self.tau + self.low.value
        off_mask = self.delta() * scale + self.low.value
        return product - m * on_mask + (1 - m) * off_mask

    def assign(
        self, *, mask: np.ndarray, delta: np.ndarray, y: np.ndarray | None = None, rem: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """Limb columns (int64, one value per weight row) from the mask and the witness values.

        ``delta``, ``y``, ``rem``: (weights,) int64; ``y`` and ``rem`` only at level F. Values outside the
        fields (Δ off the mask outside its b_Δ-bit bound) raise
        :class:`~circuit_compiler.fixedpoint.QuantizationError` naming the field.
        """
        mask = np.asarray(mask, dtype=bool)
        delta = np.asarray(delta, dtype=np.int64)
        check_fits(np.where(mask, 0, delta), self.delta_bits, name="Δ (repair bound b_Δ = w_delta)")
        high = delta + np.int64(self.delta_offset)
        if self.low is not None:
            if y is None or rem is None:
                raise ValueError("weight rows at level F need ỹ and the remainders")
            high = np.where(mask, np.asarray(y, dtype=np.int64) + np.int64(self.y_offset), high)
        out = self.high.assign(high)
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
    delta_bits: int | None = None,
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
    delta_bits = high_bits if delta_bits is None else delta_bits
    if not 2 <= delta_bits <= high_bits or (not level_f and delta_bits != high_bits):
        raise ValueError(
            f"weight rows: the bound on Δ ({delta_bits} bits) must be in [2, {high_bits}] (the shared field), "
            "and the whole field at level R"
        )
    m = mask.cur()
    high = range_check.configure_limbs(
        builder,
        name="high",
        bits=high_bits,
        limb_bits=limb_bits,
        selector=selector,
        split=delta_bits,
        always_on=True,
    )
    low = (
        range_check.configure_limbs(
            builder, name="low", bits=shift, limb_bits=limb_bits, selector=selector, always_on=True
        )
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
        delta_bits=delta_bits,
    )
    delta = config.delta()
    builder.gate("removal", selector, [("removal", m * (theta_new.cur() - theta_offset))])
    builder.gate("update", selector, [("update", (1 - m) * (theta_new.cur() - theta.cur() - delta))])
    if level_f:
        assert y is not None and low is not None and shift is not None and product is not None
        if delta_bits < high_bits:  # off the mask the limbs above b_Δ are zero: |Δ| ≤ 2^(b_Δ-1)
            builder.gate("delta_bound", selector, [("delta_bound", (1 - m) * high.above())])
        y_on = m * config.y_value()
        y_gate = y.cur() - y_on if y_extra is None else y.cur() - y_on - y_extra
        builder.gate("y_on_mask", selector, [("y_on_mask", y_gate)])
        builder.gate("residual_rescale", selector, [("residual_rescale", config.residual_rescale(product))])
    else:
        assert touched is not None
        builder.gate("no_delta_on_mask", selector, [("no_delta_on_mask", m * delta)])
        builder.gate("locality", selector, [("locality", (1 - touched.cur()) * delta)])
    return config


def encode_weights(theta: np.ndarray, offset: int) -> np.ndarray:
    """Committed weight values ``θ + a`` (int64): small and non-negative for every θ of w_w bits."""
    return np.asarray(theta, dtype=np.int64) + np.int64(offset)
