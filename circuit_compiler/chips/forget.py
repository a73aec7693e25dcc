"""Forget-aware OBS rows: the vector G multiplies is ``v = ỹ + U_bᵀ μ``, and ``U_b Δ`` stays within a tolerance.

Compact level-F layout only; this chip adds columns to the weight rows (row ``r = b·B + i`` = weight i of
block b) for each of the r forget directions a < r::

                    | u_a          | mu_a  | acc_a                         | mu_a limbs | err_a limbs        | first
    row b·B + i     | U_b[a, i]    | μ_b,a | Σ_{i' ≤ i} U_b[a, i'] Δ_i'    |  μ + h_μ   | acc + tol  (i=B-1) |
                    | (instance)   |       |                               |            | 0          (i<B-1) |

    y_forget:    y - m · (H - h) - Σ_a u_a · mu_a = 0          v = ỹ on the mask plus U_bᵀ μ (replaces y_on_mask)
    mu_constant: (1 - first[+1]) · (mu_a[+1] - mu_a) = 0        one μ_b,a per block
    mu_range:    mu_a + h_μ - L^μ_a = 0                         |μ| < 2^(w_μ - 1)  (limbs looked up)
    accumulate:  acc_a - (1 - first) · acc_a[-1] - u_a · (θ'_e - θ_e) = 0
    within_tol:  L^err_a - first[+1] · (acc_a + tol) = 0        at a block's last row: U_b Δ ∈ [-tol, tol)
    forget_outside (selector q_outside): mu_a = 0, acc_a = 0   on the diagonal MAC's margin rows

all but the last behind the weight-row selector ``q_fin``; the μ and err limbs are looked up always on
(every usable row, no selector: 0 off the weight rows, as the weight rows' limbs; :mod:`.weight_rows`). All
these gates have degree ≤ 3, so the forget rows keep the circuit at degree 4. ``acc_a[-1]`` on a block's first row and
``mu_a[+1]`` on its last row are read with a zero coefficient; the margin gate pins the two such cells
that lie outside the blocks (as ``y_outside`` does for ỹ), so no cell a constraint reads is left free. ``first`` is the diagonal MAC's fixed column (1 on each
block's first row and on the row after the last block), so the last row of a block is ``first[+1] = 1``
and every selector depends on the shape alone. The instance ``u_a`` holds the public direction restricted
to the unmasked coordinates (``U_b ⊙ (1 - m)``, built by the verifier from the request), so on the mask
``v = ỹ`` and ``θ' - θ = -θ`` does not enter the accumulator; keys depend on r and the widths only, never
on U or the mask. ``r = 0`` adds nothing: the plain level-F circuit.

The MAC then computes ``z = G v`` exactly as before (:mod:`.diagonal`), and the weight rows'
``residual_rescale`` gate gives ``(G v)_S = θ_S·2^s + e`` and ``Δ = floor(-G v / 2^s)`` off the mask. Soundness
needs ``|v| ≤ 2^(w_y-1) + r·2^f_u·2^(w_μ-1)`` in the bound analysis (``ChunkShape.checked_spec``) and
``|acc| ≤ B·2^f_u·(2^w_w + 2^w_delta)`` far below p/2, which the lowering checks.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..builder import CircuitBuilder
from ..fixedpoint import ForgetSpec, QuantizationError
from ..ir import Column, Expression
from . import range_check
from .range_check import LimbsConfig


@dataclasses.dataclass(frozen=True)
class ForgetRowsConfig:
    spec: ForgetSpec
    u: tuple[Column, ...]  # instance, one per direction
    mu: tuple[Column, ...]
    acc: tuple[Column, ...]
    mu_limbs: tuple[LimbsConfig, ...]
    err_limbs: tuple[LimbsConfig, ...]

    def extra(self) -> Expression:
        """``Σ_a u_a · mu_a``: what the weight rows' y gate adds to ỹ."""
        total: Expression | None = None
        for u, mu in zip(self.u, self.mu):
            term = u.cur() * mu.cur()
            total = term if total is None else total + term
        assert total is not None
        return total

    def assign(self, *, U_off: np.ndarray, mu: np.ndarray, delta_full: np.ndarray) -> dict[str, np.ndarray]:
        """Advice over the weight rows: μ repeated on its block, the running sums of ``U_b Δ`` and the limbs.

        U_off (nb, r, B) int64, zero on the mask; mu (nb, r) int64; delta_full (nb, B) int64 = θ' - θ.
        Out-of-range μ or a final sum outside [-tol, tol) raise QuantizationError naming the field.
        """
        nb, r, B = U_off.shape
        tol = self.spec.tolerance
        out: dict[str, np.ndarray] = {}
        # |U_q Δ| partial sums ≤ B·2^f_u·2^(w_delta) stay far inside int64 (ForgetSpec.check)
        partial = np.cumsum(U_off.astype(np.int64) * np.asarray(delta_full, dtype=np.int64)[:, None, :], axis=2)
        last = np.zeros(B, dtype=bool)
        last[-1] = True
        for a in range(r):
            out[self.mu[a].name] = np.repeat(mu[:, a].astype(np.int64), B)
            out[self.acc[a].name] = partial[:, a, :].ravel()
            out.update(self.mu_limbs[a].assign(out[self.mu[a].name] + np.int64(self.spec.mu_offset)))
            final = partial[:, a, -1]
            if np.any((final < -tol) | (final >= tol)):
                b = int(np.flatnonzero((final < -tol) | (final >= tol))[0])
                raise QuantizationError(
                    f"forget direction {a}, block {b}: U_b Δ = {final[b]} is outside the stated "
                    f"tolerance [-{tol}, {tol}) (2^{self.spec.tol_bits})"
                )
            err = np.where(np.tile(last, nb), np.repeat(final + tol, B), 0).astype(np.int64)
            out.update(self.err_limbs[a].assign(err))
        return out


def configure(
    builder: CircuitBuilder,
    *,
    spec: ForgetSpec,
    theta: Column,
    theta_new: Column,
    first: Column,
    limb_bits: int,
    selector: Column,
    outside: Column,
) -> ForgetRowsConfig:
    """Register the columns and gates of the module docstring; the y gate itself lives in the weight rows."""
    u, mu, acc, mu_limbs, err_limbs = [], [], [], [], []
    last = first.query(1)
    for a in range(spec.directions):
        u_a = builder.instance(f"u_{a}")
        mu_a = builder.advice(f"mu_{a}")
        acc_a = builder.advice(f"acc_{a}")
        mu_l = range_check.configure_limbs(
            builder, name=f"mu_{a}", bits=spec.w_mu, limb_bits=limb_bits, selector=selector, always_on=True
        )
        err_l = range_check.configure_limbs(
            builder, name=f"err_{a}", bits=spec.tol_bits + 1, limb_bits=limb_bits, selector=selector, always_on=True
        )
        builder.gate(f"mu_constant_{a}", selector, [(f"mu_constant_{a}", (1 - last) * (mu_a.query(1) - mu_a.cur()))])
        builder.gate(f"mu_range_{a}", selector, [(f"mu_range_{a}", mu_a.cur() + spec.mu_offset - mu_l.value)])
        step = acc_a.cur() - (1 - first.cur()) * acc_a.query(-1) - u_a.cur() * (theta_new.cur() - theta.cur())
        builder.gate(f"accumulate_{a}", selector, [(f"accumulate_{a}", step)])
        builder.gate(
            f"within_tol_{a}", selector, [(f"within_tol_{a}", err_l.value - last * (acc_a.cur() + spec.tolerance))]
        )
        builder.gate(
            f"forget_outside_{a}", outside, [(f"mu_outside_{a}", mu_a.cur()), (f"acc_outside_{a}", acc_a.cur())]
        )
        u.append(u_a)
        mu.append(mu_a)
        acc.append(acc_a)
        mu_limbs.append(mu_l)
        err_limbs.append(err_l)
    return ForgetRowsConfig(
        spec=spec, u=tuple(u), mu=tuple(mu), acc=tuple(acc), mu_limbs=tuple(mu_limbs), err_limbs=tuple(err_limbs)
    )


def off_mask_directions(U_q: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``U_b ⊙ (1 - m_b)`` (nb, r, B) int64: the directions the circuit's instance holds."""
    return np.where(np.asarray(mask, dtype=bool)[:, None, :], 0, np.asarray(U_q, dtype=np.int64))
