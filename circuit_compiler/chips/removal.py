"""Mask removal: every masked weight of the new model is exactly zero.

          | theta_new |  m  |  q  |
    row r |    θ'     |  m  |  1  |

    gate removal:  q · m · θ' = 0

``m`` is the public mask (instance column, 0/1 supplied by the verifier), θ' a committed column, so the
gate is linear in the witness and exact: no range argument is involved.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..builder import CircuitBuilder
from ..ir import Column


@dataclasses.dataclass(frozen=True)
class RemovalConfig:
    theta_new: Column
    mask: Column
    selector: Column

    def assign(self, updated: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        """The θ' column: the updated weights with the masked ones removed."""
        return {self.theta_new.name: remove_masked(updated, mask)}


def remove_masked(updated: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``θ'`` = ``updated`` with masked entries set to exactly 0 (same shape, int64)."""
    updated = np.asarray(updated, dtype=np.int64)
    mask = np.asarray(mask, dtype=bool)
    if updated.shape != mask.shape:
        raise ValueError(f"removal: weights {updated.shape} and mask {mask.shape} differ in shape")
    return np.where(mask, np.int64(0), updated)


def configure(builder: CircuitBuilder, *, theta_new: Column, mask: Column, selector: Column) -> RemovalConfig:
    builder.gate("removal", selector, [("removal", mask.cur() * theta_new.cur())])
    return RemovalConfig(theta_new=theta_new, mask=mask, selector=selector)
