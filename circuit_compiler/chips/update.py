"""Update addition: θ' = θ + Δ off the mask, Δ = 0 on it, and Δ bounded to w_delta bits.

          | theta | theta_new | delta | delta limbs |  m  | touched |  q  |
    row r |   θ   |    θ'     |   Δ   |     ...     |  m  |   t     |  1  |

    gate update:            q · (1 - m) · (θ' - θ - Δ) = 0
    gate no_delta_on_mask:  q · m · Δ = 0
    gate locality (level R): q · (1 - t) · Δ = 0        t = 1 on the rows of blocks that hold a masked index
    range delta:            Δ + 2^(w_delta-1) ∈ [0, 2^w_delta)

On masked rows θ' is pinned by the removal chip, so Δ would be free there; ``no_delta_on_mask`` pins it
to 0 (no unconstrained cells). At level F, Δ is determined by the rescale chip and locality follows from
ỹ = 0 in untouched blocks; at level R (no G) the ``touched`` instance column states it directly.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..builder import CircuitBuilder
from ..ir import Column
from . import range_check
from .range_check import RangeCheckConfig


@dataclasses.dataclass(frozen=True)
class UpdateConfig:
    theta: Column
    theta_new: Column
    delta: Column
    mask: Column
    touched: Column | None
    delta_range: RangeCheckConfig
    selector: Column

    def assign(self, delta: np.ndarray) -> dict[str, np.ndarray]:
        """Limbs of the range check of Δ (int64, one value per row)."""
        return self.delta_range.assign(delta)


def apply_update(theta: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """``θ + Δ`` in int64, refusing a sum that would overflow int64."""
    theta = np.asarray(theta, dtype=np.int64)
    delta = np.asarray(delta, dtype=np.int64)
    out = theta + delta
    overflow = ((theta ^ out) & (delta ^ out)) < 0  # sign flip that neither operand explains
    if overflow.any():
        i = int(np.flatnonzero(overflow.ravel())[0])
        raise OverflowError(f"update: θ + Δ overflows int64 at position {i}")
    return out


def touched_rows(mask: np.ndarray) -> np.ndarray:
    """``touched`` (nb, B) bool: every position of a block that holds at least one masked index."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"touched_rows: mask must be (blocks, B), got {mask.shape}")
    return np.broadcast_to(mask.any(axis=1, keepdims=True), mask.shape).copy()


def configure(
    builder: CircuitBuilder,
    *,
    theta: Column,
    theta_new: Column,
    delta: Column,
    mask: Column,
    delta_bits: int,
    limb_bits: int,
    selector: Column,
    touched: Column | None = None,
) -> UpdateConfig:
    m = mask.cur()
    builder.gate("update", selector, [("update", (1 - m) * (theta_new.cur() - theta.cur() - delta.cur()))])
    builder.gate("no_delta_on_mask", selector, [("no_delta_on_mask", m * delta.cur())])
    if touched is not None:
        builder.gate("locality", selector, [("locality", (1 - touched.cur()) * delta.cur())])
    delta_range = range_check.configure(
        builder, name="delta", value=delta.cur(), bits=delta_bits, limb_bits=limb_bits, signed=True, selector=selector
    )
    return UpdateConfig(
        theta=theta,
        theta_new=theta_new,
        delta=delta,
        mask=mask,
        touched=touched,
        delta_range=delta_range,
        selector=selector,
    )
