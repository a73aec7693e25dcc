"""Multiply-accumulate rows, L lanes wide: ``z_i = Σ_j G[i, j] · ỹ_j`` for every row i of every block.

Block b's B×B matrix is walked column by column, L rows of G at a time (lane group g covers rows
``gL .. gL+L-1``, L divides B). Row ``(b, g, j)`` of the region is ``b·(B/L)·B + g·B + j``::

                  | g_0 .. g_{L-1}      | y_mac | acc_0 .. acc_{L-1}            | q_first q_step q_rep |
    (b, g, 0)     | G[gL+l, 0]          |  ỹ_0  | G[gL+l, 0] · ỹ_0               |    1       0     g>0  |
    (b, g, j>0)   | G[gL+l, j]          |  ỹ_j  | acc_l[-1] + G[gL+l, j] · ỹ_j   |    0       1     g>0  |
    (b, g, B-1)   |                     |       | = z_{gL+l}  (copied to the finalization row)          |

    gate mac_first: q_first · (acc_l - g_l · y_mac) = 0                    for every lane l
    gate mac_step:  q_step  · (acc_l - acc_l[-1] - g_l · y_mac) = 0        for every lane l
    gate y_repeat:  q_rep   · (y_mac - y_mac[-B]) = 0                      (groups g > 0; only if B > L)
    copies:         y_mac(b, 0, j) = y(b·B + j),   z(b·B + gL + l) = acc_l(b, g, B-1)

``g_l`` are committed columns (level F): G is bound before the mask is known. The layout depends only on
(nb, B, L), never on the mask: ỹ is zero off the mask (gate ``y_off_mask`` of :mod:`.residual`), so the
whole block can be multiplied. Soundness needs ``B · 2^f_g · 2^(w_y-1) < p/2`` (bound ``mac_partial_sum``).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..builder import CircuitBuilder
from ..fixedpoint import exact_cumsum_products
from ..ir import Column


@dataclasses.dataclass(frozen=True)
class MacConfig:
    block_size: int  # B
    lanes: int  # L
    g: tuple[Column, ...]  # committed G lanes
    y_mac: Column
    acc: tuple[Column, ...]
    q_first: Column
    q_step: Column
    q_rep: Column | None  # absent when L == B (one lane group per block)

    @property
    def groups(self) -> int:
        return self.block_size // self.lanes

    def region_rows(self, blocks: int) -> int:
        """Rows of the MAC region for ``blocks`` blocks: nb · (B/L) · B."""
        return blocks * self.groups * self.block_size

    def layout(
        self, builder: CircuitBuilder, *, blocks: int, y: Column, z: Column, offset: int = 0, y_offset: int = 0
    ) -> None:
        """Enable the selectors of ``blocks`` blocks and copy ỹ in and z out (shape-only; no values).

        The region starts at row ``offset``; the finalization rows holding ``y``/``z`` start at ``y_offset``.
        """
        B, L, ng = self.block_size, self.lanes, self.groups
        b, g, j = np.meshgrid(np.arange(blocks), np.arange(ng), np.arange(B), indexing="ij")
        rows = offset + (b * ng + g) * B + j  # (nb, ng, B)
        builder.enable(self.q_first, rows[:, :, 0])
        builder.enable(self.q_step, rows[:, :, 1:])
        if self.q_rep is not None:
            builder.enable(self.q_rep, rows[:, 1:, :])
        builder.copies(self.y_mac, rows[:, 0, :], y, y_offset + np.arange(blocks * B))
        last = rows[:, :, B - 1]  # (nb, ng)
        for lane, acc in enumerate(self.acc):
            z_rows = y_offset + np.arange(blocks)[:, None] * B + np.arange(ng)[None, :] * L + lane
            builder.copies(z, z_rows, acc, last)

    def assign(self, G: np.ndarray, y: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]:
        """Values of the region for G (nb, B, B) int64 and ỹ (nb, B) int64.

        Returns ``(committed, advice, z)``: the G lanes by column name (rows of the region), y_mac and the
        accumulators (int64 or object ints when beyond 64 bits), and ``z = G ỹ`` (nb·B,) for the
        finalization rows.
        """
        G = np.asarray(G, dtype=np.int64)
        y = np.asarray(y, dtype=np.int64)
        nb, B = y.shape
        if G.shape != (nb, B, B) or B != self.block_size:
            raise ValueError(f"MAC region: G {G.shape} and ỹ {y.shape} do not match B={self.block_size}")
        L, ng = self.lanes, self.groups
        rows = nb * ng * B

        def by_lane(a: np.ndarray) -> np.ndarray:  # (nb, B_i, B_j) -> (L, rows): lane l's column in region order
            return np.ascontiguousarray(a.reshape(nb, ng, L, B).transpose(2, 0, 1, 3)).reshape(L, rows)

        acc = exact_cumsum_products(G, y)  # acc[b, i, j] = Σ_{j' ≤ j} G[b, i, j'] ỹ[b, j']
        committed = dict(zip((c.name for c in self.g), by_lane(G)))
        advice = {self.y_mac.name: np.broadcast_to(y[:, None, :], (nb, ng, B)).reshape(rows)}
        advice.update(zip((c.name for c in self.acc), by_lane(acc)))
        z = acc[:, :, B - 1].reshape(nb * B)
        return committed, advice, z


def configure(builder: CircuitBuilder, *, block_size: int, lanes: int, g: tuple[Column, ...]) -> MacConfig:
    """Allocate ``y_mac``, ``acc_0..acc_{L-1}`` and the selectors; register mac_first, mac_step, y_repeat."""
    if lanes < 1 or block_size % lanes:
        raise ValueError(f"MAC: lanes L={lanes} must divide the block size B={block_size}")
    if len(g) != lanes:
        raise ValueError(f"MAC: {len(g)} G columns for {lanes} lanes")
    y_mac = builder.advice("y_mac")
    acc = tuple(builder.advice(f"acc_{l}") for l in range(lanes))
    q_first = builder.selector("q_first")
    q_step = builder.selector("q_step")
    builder.gate(
        "mac_first", q_first, [(f"mac_first_{l}", acc[l].cur() - g[l].cur() * y_mac.cur()) for l in range(lanes)]
    )
    builder.gate(
        "mac_step",
        q_step,
        [(f"mac_step_{l}", acc[l].cur() - acc[l].prev() - g[l].cur() * y_mac.cur()) for l in range(lanes)],
    )
    q_rep = None
    if block_size > lanes:
        q_rep = builder.selector("q_rep")
        builder.gate("y_repeat", q_rep, [("y_repeat", y_mac.cur() - y_mac.query(-block_size))])
    return MacConfig(
        block_size=block_size, lanes=lanes, g=g, y_mac=y_mac, acc=acc, q_first=q_first, q_step=q_step, q_rep=q_rep
    )
