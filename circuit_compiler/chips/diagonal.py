"""``z = G ỹ`` on one row per weight, from G's upper triangle stored cyclically in ⌊B/2⌋ + 1 lanes.

The compact layout's MAC. Row ``r = b·B + i`` holds weight i of block b, and ỹ sits in one advice column
``y``. Committed lane ρ (ρ = 0 … H, H = ⌊B/2⌋) holds the block's symmetric G at cyclic distance ρ: row
i of the block holds ``G[i, (i+ρ) mod B]``. Every unordered pair {i, j} has one cyclic distance
``min((j-i) mod B, (i-j) mod B) ≤ H`` and is stored once, at the row it is ρ ahead of -- except the
pairs at distance exactly B/2 (B even), which both rows would hold; lane B/2 keeps them on the block's
first half only (rows i < B/2; the other half is 0 and never read)::

                    | g_0        g_1                  ...  g_ρ                     | y    | first |
    row b·B + i     | G[i, i]    G[i, (i+1) mod B]    ...  G[i, (i+ρ) mod B] (+o)  | ỹ_i  | i = 0 |

    z_r = Σ_j G[i, j] ỹ_j = Σ_{ρ=0..B-1} G[i, (i+ρ) mod B] ỹ_{(i+ρ) mod B}

        ρ = 0:             (g_0 - o) · y
        1 ≤ ρ ≤ H:         (g_ρ - o) · (c_ρ · y[+ρ] + a_ρ · y[ρ-B])             this row's lane ρ
        ρ = B - σ > H:     c'_σ · (g_σ[-σ] - o) · y[-σ] + a'_σ · (g_σ[B-σ] - o) · y[B-σ]
                           (j = (i - σ) mod B holds G[j, (j+σ) mod B] = G[i, j] in its lane σ)

    a_ρ  = Σ_{d=1..ρ} first[+d]    = [i + ρ ≥ B]  (a block start among the next ρ rows),  c_ρ = 1 - a_ρ
    a'_σ = Σ_{d=0..σ-1} first[-d]  = [i < σ]      (a block start among this row and the σ-1 before), c'_σ = 1 - a'_σ

For B even, lane H is read forward only where ``c_H = 1`` (``a_H`` term dropped: row i < H) and
backward only where ``c'_H = 1`` (row i ≥ H reads row i - H): the upper-diagonal reading, so each
pair is read from its one stored cell and the circuit's G is symmetric by construction.

``first`` is a fixed column, 1 on every block's first row and on the row after the last block, so the
coefficients a, c depend on the shape alone and are 0/1 on every weight row (no two block starts lie
within B - 1 rows). A product is read with coefficient 1 only when both its cells lie in the row's own
block: only the block's own B² entries ever meet ỹ (no accumulators, no copy constraints, hence no
permutation argument). Half the lanes of the upper-diagonal storage (B lanes) for the same products.

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
from ..ir import Column, Expression, balanced_sum


@dataclasses.dataclass(frozen=True)
class DiagonalMacConfig:
    block_size: int  # B
    g: tuple[Column, ...]  # committed lanes: lane ρ = G at cyclic distance ρ (+ o), ρ = 0 … ⌊B/2⌋
    y: Column  # ỹ, one value per weight row
    first: Column  # fixed: 1 on each block's first row and on the row after the last block
    q_outside: Column | None  # ỹ = 0 on the B - 1 margin rows on each side of the blocks (None when B = 1)
    g_offset: int  # o = 2^f_g

    def margin_rows(self) -> int:
        """Rows before and after the blocks that the MAC reads (``y[∓ρ]``) and ``y_outside`` pins: B - 1."""
        return self.block_size - 1

    def product(self) -> Expression:
        """``z = (G ỹ)_i`` of the current row (degree 3: coefficient × lane × ỹ). The prefix sums of
        ``first`` grow by one term per distance and are shared between consecutive a_ρ (and a'_σ); the
        products are summed as a balanced tree (:func:`~circuit_compiler.ir.balanced_sum`), so the
        expression's depth grows with B/2 (the prefix sums), not with the 2B products."""
        B, o = self.block_size, self.g_offset
        half = B // 2
        terms: list[Expression] = [(self.g[0].cur() - o) * self.y.cur()]
        ahead: Expression | None = None  # a_ρ = Σ_{d=1..ρ} first[+d], one term longer each step
        behind: Expression | None = None  # a'_σ = Σ_{d=0..σ-1} first[-d]
        # distances ρ > B/2 are read backward, from lane σ = B - ρ: one loop over the lanes covers both
        for rho in range(1, half + 1):
            ahead = self.first.query(rho) if ahead is None else ahead + self.first.query(rho)
            behind = self.first.query(1 - rho) if behind is None else behind + self.first.query(1 - rho)
            lane = self.g[rho]
            if 2 * rho == B:  # distance B/2, stored on the first half only: the upper-diagonal reading
                terms.append((1 - ahead) * ((lane.cur() - o) * self.y.query(rho)))
                terms.append((1 - behind) * ((lane.query(-rho) - o) * self.y.query(-rho)))
                continue
            # forward: j = (i + ρ) mod B, in this row's lane ρ
            terms.append((lane.cur() - o) * ((1 - ahead) * self.y.query(rho) + ahead * self.y.query(rho - B)))
            # backward: j = (i - ρ) mod B holds G[j, i] in its lane ρ
            terms.append((1 - behind) * ((lane.query(-rho) - o) * self.y.query(-rho)))
            terms.append(behind * ((lane.query(B - rho) - o) * self.y.query(B - rho)))
        return balanced_sum(terms)

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
        return dict(zip((c.name for c in self.g), cyclic_lanes(G, offset=self.g_offset)))


def lane_count(block_size: int) -> int:
    """Committed G lanes of the compact layout: ⌊B/2⌋ + 1 (cyclic distances 0 … ⌊B/2⌋)."""
    return block_size // 2 + 1


def cyclic_lanes(G: np.ndarray, *, offset: int) -> np.ndarray:
    """``(⌊B/2⌋ + 1, nb·B)`` int64: lane ρ row ``b·B + i`` = ``G[b, i, (i+ρ) mod B] + offset``, except
    lane B/2 (B even), which holds its pairs on rows i < B/2 only (0 elsewhere).

    Reads each unordered pair once, from the row it is ρ ahead of (the upper triangle for ρ = B/2), so G
    must be symmetric for the circuit's product to equal ``G ỹ`` -- the lowering checks that.
    """
    G = np.asarray(G, dtype=np.int64)
    nb, B, _ = G.shape
    i = np.arange(B)
    out = np.zeros((lane_count(B), nb, B), dtype=np.int64)
    for rho in range(lane_count(B)):
        rows = i[: B - rho] if 2 * rho == B else i
        out[rho][:, rows] = G[:, rows, (rows + rho) % B] + offset
    return out.reshape(lane_count(B), nb * B)


def configure(builder: CircuitBuilder, *, block_size: int, g: tuple[Column, ...], g_offset: int) -> DiagonalMacConfig:
    """Allocate ``y``, the fixed ``first`` and (for B > 1) ``q_outside``; register gate ``y_outside``."""
    if len(g) != lane_count(block_size):
        raise ValueError(
            f"diagonal MAC: {len(g)} G lanes for block size B={block_size} (⌊B/2⌋ + 1 = {lane_count(block_size)}: "
            "one per cyclic distance)"
        )
    y = builder.advice("y")
    first = builder.fixed("first")
    q_outside = None
    if block_size > 1:
        q_outside = builder.selector("q_outside")
        builder.gate("y_outside", q_outside, [("y_outside", y.cur())])
    return DiagonalMacConfig(block_size=block_size, g=g, y=y, first=first, q_outside=q_outside, g_offset=g_offset)
