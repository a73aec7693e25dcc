"""``z = G ỹ`` on one row per weight, from G's upper triangle stored as its B diagonals.

The compact layout's MAC. Row ``r = b·B + i`` holds weight i of block b. Committed lane ρ (ρ < B) holds
the ρ-th upper diagonal of the block's symmetric G, and ỹ sits in one advice column ``y``::

                    | g_0        g_1          ...  g_ρ              | y    | first |
    row b·B + i     | G[i, i]    G[i, i+1]    ...  G[i, i+ρ] (+o)   | ỹ_i  | i = 0 |

    z_r = Σ_j G[i, j] ỹ_j
        = Σ_{ρ ≥ 0} c_ρ · (g_ρ - o) · y[+ρ]             (j = i + ρ ≥ i: this row's diagonals)
        + Σ_{ρ ≥ 1} c'_ρ · (g_ρ[-ρ] - o) · y[-ρ]         (j = i - ρ < i: G[j, i] = G[i, j], row j's lane ρ)

    c_ρ  = 1 - Σ_{d=1..ρ} first[+d]    = [i + ρ < B]  (no block start among the next ρ rows)
    c'_ρ = 1 - Σ_{d=0..ρ-1} first[-d]  = [i ≥ ρ]      (no block start among this row and the ρ-1 before)

``first`` is a fixed column, 1 on every block's first row and on the row after the last block, so the
selectors c, c' depend on the shape alone. They zero every product that would reach across a block
boundary -- including the rotations of block 0 that wrap around to the end of the domain, where the
cells are blinding values -- so only the block's own B² entries ever meet ỹ (no accumulators, no copy
constraints, hence no permutation argument). Cells with ``i + ρ ≥ B`` are never read with a nonzero
coefficient; they are 0 by convention.

Encoding: lanes store ``G + o`` with ``o = 2^f_g`` on the used cells, so every committed value is a
small non-negative integer (``[0, 2^(f_g+1)]``): a multi-scalar multiplication over small scalars is
several times cheaper than over ``p - x``, and the prover commits to every committed column in every
proof.

The blocks start at row B - 1: the B - 1 rows before the first block and after the last one are read
through ``y[∓ρ]`` (with zero coefficients), and there the gate ``y_outside`` (selector ``q_outside``)
pins ỹ to 0 -- so no rotation reaches the blinding rows at the end of the domain, and no cell the MAC
reads is left free. Soundness needs ``B · 2^f_g · max|ỹ| < p/2`` (bound ``mac_partial_sum``).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..builder import CircuitBuilder
from ..ir import Column, Expression


@dataclasses.dataclass(frozen=True)
class DiagonalMacConfig:
    block_size: int  # B
    g: tuple[Column, ...]  # committed lanes: lane ρ = the ρ-th upper diagonal (+ o)
    y: Column  # ỹ, one value per weight row
    first: Column  # fixed: 1 on each block's first row and on the row after the last block
    q_outside: Column | None  # ỹ = 0 on the B - 1 margin rows on each side of the blocks (None when B = 1)
    g_offset: int  # o = 2^f_g

    def margin_rows(self) -> int:
        """Rows before and after the blocks that the MAC reads (``y[∓ρ]``) and ``y_outside`` pins: B - 1."""
        return self.block_size - 1

    def product(self) -> Expression:
        """``z = (G ỹ)_i`` of the current row (degree 3: c × lane × ỹ). The prefix sums of ``first`` grow by
        one term per diagonal and are shared between consecutive c_ρ (and c'_ρ)."""
        o = self.g_offset
        z: Expression = (self.g[0].cur() - o) * self.y.cur()
        ahead: Expression | None = None  # Σ_{d=1..ρ} first[+d], one term longer each step
        behind: Expression | None = None  # Σ_{d=0..ρ-1} first[-d]
        for rho in range(1, self.block_size):
            lane = self.g[rho]
            ahead = self.first.query(rho) if ahead is None else ahead + self.first.query(rho)
            behind = self.first.query(1 - rho) if behind is None else behind + self.first.query(1 - rho)
            z = z + (1 - ahead) * ((lane.cur() - o) * self.y.query(rho))
            z = z + (1 - behind) * ((lane.query(-rho) - o) * self.y.query(-rho))
        return z

    def layout(self, builder: CircuitBuilder, *, blocks: int, offset: int) -> None:
        """Mark the block starts (and the row after the last block) and switch ``y_outside`` on over the
        margins (shape only). The blocks start at row ``offset``, which must leave the B - 1 margin rows."""
        B, margin = self.block_size, self.margin_rows()
        if offset < margin:
            raise ValueError(f"diagonal MAC: blocks start at row {offset}, but B - 1 = {margin} rows must precede them")
        builder.assign_fixed(self.first, offset + np.arange(blocks + 1) * B, 1)
        if self.q_outside is not None:
            end = offset + blocks * B
            builder.enable(
                self.q_outside, np.concatenate([np.arange(offset - margin, offset), np.arange(end, end + margin)])
            )

    def lanes(self, G: np.ndarray) -> dict[str, np.ndarray]:
        """The committed lanes of G (nb, B, B) int64, by column name: (nb·B,) each, ``G + o`` on used cells."""
        return dict(zip((c.name for c in self.g), diagonal_lanes(G, offset=self.g_offset)))


def diagonal_lanes(G: np.ndarray, *, offset: int) -> np.ndarray:
    """``(B, nb·B)`` int64: lane ρ row ``b·B + i`` = ``G[b, i, i+ρ] + offset`` for ``i + ρ < B``, else 0.

    Reads only the upper triangle of each block (the circuit mirrors it), so G must be symmetric for
    the circuit's product to equal ``G ỹ`` -- the lowering checks that.
    """
    G = np.asarray(G, dtype=np.int64)
    nb, B, _ = G.shape
    i = np.arange(B)
    out = np.zeros((B, nb, B), dtype=np.int64)
    for rho in range(B):
        used = i[: B - rho]
        out[rho][:, used] = G[:, used, used + rho] + offset
    return out.reshape(B, nb * B)


def configure(builder: CircuitBuilder, *, block_size: int, g: tuple[Column, ...], g_offset: int) -> DiagonalMacConfig:
    """Allocate ``y``, the fixed ``first`` and (for B > 1) ``q_outside``; register gate ``y_outside``."""
    if len(g) != block_size:
        raise ValueError(f"diagonal MAC: {len(g)} G lanes for block size B={block_size} (one lane per diagonal)")
    y = builder.advice("y")
    first = builder.fixed("first")
    q_outside = None
    if block_size > 1:
        q_outside = builder.selector("q_outside")
        builder.gate("y_outside", q_outside, [("y_outside", y.cur())])
    return DiagonalMacConfig(block_size=block_size, g=g, y=y, first=first, q_outside=q_outside, g_offset=g_offset)
