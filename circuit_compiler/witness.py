"""Client-side witness generation: from the float OBS inputs of a layer to the circuit's integers.

Given a layer's weights θ (any shape, flattened row-major into blocks of B), its Fisher-inverse blocks
G (n_blocks, B, B) and the public mask, :func:`obs_witness` computes, deterministically:

1. ``θ_q = round(θ · 2^f_w)`` (w_w bits; out-of-range values are an error, never clipped);
2. per block, ``Ĝ = G / max|G|`` (Δ does not change) and ``G_q = round(Ĝ · 2^f_g)``, so |G_q| ≤ 2^f_g;
3. ``ỹ = round(G_q[S,S]⁻¹ θ_q[S] · 2^s)`` on S (solved in float64, then rounded), 0 off S; the residual
   ``e = G_q[S,S] ỹ - θ_q[S] · 2^s`` is then computed *exactly* in integers. If some |e| is outside
   ``[-τ, τ)`` (only possible when float64 round-off moved ỹ, or B > 2^(s - f_g)), ỹ is refined by
   mixed-precision iterative refinement ``ỹ += round(G_SS⁻¹ (-e))`` with exact integer residuals; if that
   does not help, a clear error names the blocks;
4. off S: ``(Δ_i, r_i) = floor-divmod(-(G_q ỹ)_i, 2^s)``; on S: ``Δ_q = 0`` and ``rem_q = e_q + τ``;
5. ``θ' = θ_q + Δ`` off the mask and exactly 0 on it.

Determinism: the output is a pure function of the inputs on a given numpy/LAPACK build. The float solve
may round differently on another BLAS, which can move ỹ by one unit; any ỹ with |e| within τ is a valid
witness, and the error bound of :func:`~circuit_compiler.fixedpoint.delta_error_bound` holds for all of
them.

With public forget directions ``U_q`` (n_blocks, r, B) the witness is the forget-aware update
(:mod:`~circuit_compiler.chips.forget`): the float64 solve of ``[E_S; U_off] G_q [E_S; U_off]ᵀ [ỹ; μ] =
[θ_S 2^s; 0]`` gives μ, rounded to ``μ_q``; then ỹ solves step 3 with the exact integer offset
``(G_q U_offᵀ μ_q)_S`` (so the residual bound τ holds as before), the MAC vector is ``v = ỹ + U_offᵀ μ_q``,
and Δ = floor(-G_q v / 2^s). ``|U_off Δ|`` is then checked against the stated tolerance.

:func:`removal_witness` builds a level-R witness from a float update Δ instead (no G).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .chips.forget import off_mask_directions
from .chips.removal import remove_masked
from .chips.rescale import floor_divide
from .chips.residual import solve_remainder, solve_residual
from .chips.update import apply_update
from .fixedpoint import (
    FixedPointSpec,
    ForgetSpec,
    QuantizationError,
    check_fits,
    dequantize,
    exact_matvec,
    masked_indices,
    masked_system,
    quantize,
    quantize_fisher_blocks,
)
from .masks import as_bool_mask


class WitnessError(ValueError):
    """No witness in the declared widths exists for these inputs (the message says which block and why)."""


@dataclasses.dataclass(frozen=True)
class LayerWitness:
    """The quantized witness of one layer, blocked: per-weight arrays are (n_blocks, B) int64.

    ``G_q`` (n_blocks, B, B), ``G_scale`` (n_blocks,), ``y_q`` and ``rem`` are ``None`` for a
    removal-only (level R) witness. ``weight_shape`` is the shape of the layer's weight matrix.
    """

    spec: FixedPointSpec
    weight_shape: tuple[int, ...]
    theta_q: np.ndarray
    theta_new_q: np.ndarray
    mask: np.ndarray  # bool
    delta_q: np.ndarray
    G_q: np.ndarray | None = None
    G_scale: np.ndarray | None = None  # private per-block normalization (G = G_scale · Ĝ)
    y_q: np.ndarray | None = None
    rem: np.ndarray | None = None
    U_q: np.ndarray | None = None  # (n_blocks, r, B) public forget directions, |U_q| ≤ 2^f_u
    mu_q: np.ndarray | None = None  # (n_blocks, r)

    @property
    def block_size(self) -> int:
        return self.theta_q.shape[1]

    @property
    def n_blocks(self) -> int:
        return self.theta_q.shape[0]

    def theta_new(self) -> np.ndarray:
        """θ' dequantized to float64, in the layer's weight shape."""
        return dequantize(self.theta_new_q, self.spec.f_w).reshape(self.weight_shape)

    def delta(self) -> np.ndarray:
        """Δ dequantized (0 on the mask; the mask itself is applied by removal)."""
        return dequantize(self.delta_q, self.spec.f_w).reshape(self.weight_shape)


def _blocked_inputs(
    theta: np.ndarray, mask: np.ndarray, block_size: int
) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    theta = np.asarray(theta, dtype=np.float64)
    mask = np.asarray(mask)
    if mask.shape != theta.shape:
        raise ValueError(f"mask of shape {mask.shape} does not match θ of shape {theta.shape}")
    mask = as_bool_mask(mask)
    if theta.size % block_size:
        raise ValueError(f"θ has {theta.size} weights, not a multiple of the block size B={block_size}")
    n_blocks = theta.size // block_size
    return theta.reshape(n_blocks, block_size), mask.reshape(n_blocks, block_size), theta.shape


def obs_witness(
    theta: np.ndarray,
    G: np.ndarray,
    mask: np.ndarray,
    *,
    spec: FixedPointSpec,
    refine_steps: int = 4,
    directions: np.ndarray | None = None,
    forget: ForgetSpec | None = None,
) -> LayerWitness:
    """The level-F witness of the blockwise group-OBS update of one layer (see the module docstring).

    theta: float weights, any shape with ``theta.size = n_blocks · B`` (row-major blocks);
    G: (n_blocks, B, B) float inverse-Fisher blocks; mask: bool, same shape as theta. Blocks are
    independent: to bound memory on large layers, call it on ranges of blocks (e.g. one chunk at a time).
    Raises :class:`~circuit_compiler.fixedpoint.QuantizationError` for inputs that do not fit the
    widths and :class:`WitnessError` when no in-range ỹ, Δ exists (ill-conditioned or singular G_SS).
    ``directions`` (n_blocks, r, B) float with ``forget``: the forget-aware witness (each block's rows are
    quantized by :func:`quantize_directions`).
    """
    G = np.asarray(G)
    if G.ndim != 3 or G.shape[1] != G.shape[2]:
        raise ValueError(f"G must be (n_blocks, B, B), got shape {G.shape}")
    B = G.shape[1]
    theta_b, mask_b, weight_shape = _blocked_inputs(theta, mask, B)
    if G.shape[0] != theta_b.shape[0]:
        raise ValueError(f"G has {G.shape[0]} blocks but θ has {theta_b.shape[0]} blocks of B={B}")
    spec.validate_block_size(B)
    theta_q = quantize(theta_b, spec.f_w, spec.w_w, name="theta")
    G_q, G_scale = quantize_fisher_blocks(G, spec)
    U_q = None if directions is None else quantize_directions(directions, forget or ForgetSpec())
    return quantized_obs_witness(
        theta_q,
        G_q,
        mask_b,
        spec=spec,
        weight_shape=weight_shape,
        G_scale=G_scale,
        refine_steps=refine_steps,
        U_q=U_q,
        forget=forget,
    )


def quantize_directions(directions: np.ndarray, forget: ForgetSpec) -> np.ndarray:
    """``round(U_b / max|U_b| · 2^f_u)`` per block (n_blocks, r, B) int64: each block's rows share one positive
    scale (the constraint ``U_b Δ = 0`` does not change), so |U_q| ≤ 2^f_u. All-zero blocks stay zero."""
    U = np.asarray(directions, dtype=np.float64)
    if U.ndim != 3 or not np.isfinite(U).all():
        raise ValueError(f"forget directions must be a finite (n_blocks, r, B) array, got shape {U.shape}")
    scale = np.abs(U).max(axis=(1, 2), keepdims=True, initial=0.0)
    return np.rint(np.ldexp(U / np.where(scale > 0, scale, 1.0), forget.f_u)).astype(np.int64)


def quantized_obs_witness(
    theta_q: np.ndarray,
    G_q: np.ndarray,
    mask: np.ndarray,
    *,
    spec: FixedPointSpec,
    weight_shape: tuple[int, ...] | None = None,
    G_scale: np.ndarray | None = None,
    refine_steps: int = 4,
    U_q: np.ndarray | None = None,
    forget: ForgetSpec | None = None,
) -> LayerWitness:
    """Steps 3-5 of :func:`obs_witness` on already quantized inputs (e.g. the θ and G a client committed).

    theta_q: (n_blocks, B) int64 (w_w bits); G_q: (n_blocks, B, B) int64 with |G_q| ≤ 2^f_g; mask:
    (n_blocks, B) bool. ``weight_shape`` defaults to (n_blocks · B,). ``U_q`` (n_blocks, r, B) int64 with
    ``forget``: the forget-aware witness (module docstring).
    """
    theta_q = np.asarray(theta_q)
    G_q = np.asarray(G_q)
    mask_b = np.asarray(mask)
    if theta_q.ndim != 2 or G_q.shape != theta_q.shape + (theta_q.shape[1],) or mask_b.shape != theta_q.shape:
        raise ValueError(
            f"quantized OBS inputs: θ {theta_q.shape}, G {G_q.shape} and mask {mask_b.shape} must be "
            "(n_blocks, B), (n_blocks, B, B) and (n_blocks, B)"
        )
    mask_b = as_bool_mask(mask_b)
    for name, values in (("theta_q", theta_q), ("G_q", G_q)):
        if not np.issubdtype(values.dtype, np.integer):
            raise TypeError(f"{name} must be an integer (quantized) array, got dtype {values.dtype}")
    theta_q, G_q = theta_q.astype(np.int64), G_q.astype(np.int64)
    check_fits(theta_q, spec.w_w, name="theta_q")
    check_fits(np.abs(G_q) - 1, spec.f_g + 1, name="|G_q| - 1")
    spec.validate_block_size(theta_q.shape[1])
    mu_q = U_off = None
    offset = None
    if U_q is not None and np.asarray(U_q).shape[1:2] != (0,):
        forget = (forget or ForgetSpec(directions=np.asarray(U_q).shape[1])).resolved(spec)
        U_off = _check_directions(U_q, mask_b, forget)
        mu_q = _solve_multipliers(G_q, theta_q, mask_b, U_off, spec, forget)
        offset = exact_matvec(G_q, np.einsum("nrb,nr->nb", U_off, mu_q))  # G U_offᵀ μ_q, exact
    y_q, e = _solve_blocks(G_q, theta_q, mask_b, spec, refine_steps=refine_steps, offset=offset)

    v = y_q if mu_q is None else y_q + np.einsum("nrb,nr->nb", U_off, mu_q)  # the MAC's vector
    z = exact_matvec(G_q, v)  # (n_blocks, B): G v over the whole block
    delta_q, rem = floor_divide(-z, spec.s)  # quotient may be object ints when z is beyond 64 bits
    delta_q = np.where(mask_b, 0, delta_q)
    try:
        check_fits(delta_q, spec.w_delta, name="Δ (quantized)")
    except QuantizationError as err:
        raise WitnessError(
            f"{err}; the OBS update needs more than w_delta={spec.w_delta} bits at f_w={spec.f_w}"
        ) from None
    delta_q = delta_q.astype(np.int64)
    rem = np.where(mask_b, solve_remainder(e, spec.s), rem).astype(np.int64)
    theta_new_q = remove_masked(apply_update(theta_q, delta_q), mask_b)
    if mu_q is not None:
        moved = np.einsum("nrb,nb->nr", U_off, delta_q)  # U_off Δ (Δ = 0 on the mask, U_off = 0 there too)
        tol = forget.tolerance
        bad = (moved < -tol) | (moved >= tol)
        if bad.any():
            b, a = (int(i) for i in np.argwhere(bad)[0])
            raise WitnessError(
                f"block {b}, forget direction {a}: |U_b Δ| = {int(moved[b, a])} exceeds the stated tolerance "
                f"2^{forget.tol_bits} after rounding (increase ForgetSpec.tol_bits or f_w)"
            )
    return LayerWitness(
        spec=spec,
        weight_shape=tuple(weight_shape) if weight_shape is not None else (theta_q.size,),
        theta_q=theta_q,
        theta_new_q=theta_new_q,
        mask=mask_b,
        delta_q=delta_q,
        G_q=G_q,
        G_scale=G_scale,
        y_q=y_q,
        rem=rem,
        U_q=None if mu_q is None else np.asarray(U_q, dtype=np.int64),
        mu_q=mu_q,
    )


def _check_directions(U_q: np.ndarray, mask: np.ndarray, forget: ForgetSpec) -> np.ndarray:
    U_q = np.asarray(U_q)
    if U_q.ndim != 3 or U_q.shape[0] != mask.shape[0] or U_q.shape[2] != mask.shape[1]:
        raise ValueError(
            f"forget directions U_q must be (n_blocks, r, B) = ({mask.shape[0]}, r, {mask.shape[1]}), got {U_q.shape}"
        )
    if U_q.shape[1] != forget.directions:
        raise ValueError(f"U_q holds {U_q.shape[1]} directions per block, ForgetSpec.directions = {forget.directions}")
    if not np.issubdtype(U_q.dtype, np.integer):
        raise TypeError(f"U_q must be quantized integers, got dtype {U_q.dtype}")
    check_fits(np.abs(U_q) - 1, forget.f_u + 1, name="|U_q| - 1")
    return off_mask_directions(U_q, mask)


def _solve_multipliers(
    G_q: np.ndarray, theta_q: np.ndarray, mask: np.ndarray, U_off: np.ndarray, spec: FixedPointSpec, forget: ForgetSpec
) -> np.ndarray:
    """μ_q (n_blocks, r) int64: the rounded multipliers of the float64 solve of
    ``[E_S; U_off] G_q [E_S; U_off]ᵀ [ỹ; μ] = [θ_S 2^s; 0]``; zero on blocks without a mask and on
    directions that vanish off the mask."""
    n, r, B = U_off.shape
    mu = np.zeros((n, r), dtype=np.int64)
    for b in np.flatnonzero(mask.any(axis=1)):
        S = np.flatnonzero(mask[b])
        real = np.flatnonzero(np.any(U_off[b] != 0, axis=1))
        Ct = np.concatenate([np.eye(B)[:, S], U_off[b, real].T.astype(np.float64)], axis=1)
        system = Ct.T @ (G_q[b].astype(np.float64) @ Ct)
        rhs = np.concatenate([np.ldexp(theta_q[b, S].astype(np.float64), spec.s), np.zeros(real.size)])
        try:
            sol = np.linalg.solve(system, rhs)
        except np.linalg.LinAlgError:
            raise WitnessError(
                f"block {b}: [E_S; U_b] G [E_S; U_b]ᵀ is singular (forget directions dependent off "
                "the mask, or more than B - |S| of them)"
            ) from None
        mu[b, real] = np.rint(sol[S.size :]).astype(np.int64)
    try:
        check_fits(mu, forget.w_mu, name="μ (forget multipliers)")
    except QuantizationError as err:
        raise WitnessError(f"{err}; increase ForgetSpec.w_mu") from None
    return mu


def removal_witness(
    theta: np.ndarray, delta: np.ndarray, mask: np.ndarray, *, spec: FixedPointSpec, block_size: int
) -> LayerWitness:
    """A level-R witness: θ' = θ + round(Δ) off the mask, 0 on it; Δ taken as given (no G)."""
    theta_b, mask_b, weight_shape = _blocked_inputs(theta, mask, block_size)
    delta = np.asarray(delta, dtype=np.float64)
    if delta.shape != weight_shape:
        raise ValueError(f"Δ of shape {delta.shape} does not match θ of shape {weight_shape}")
    theta_q = quantize(theta_b, spec.f_w, spec.w_w, name="theta")
    delta_q = np.where(mask_b, 0, quantize(delta.reshape(theta_b.shape), spec.f_w, spec.w_delta, name="delta"))
    theta_new_q = remove_masked(apply_update(theta_q, delta_q), mask_b)
    return LayerWitness(
        spec=spec,
        weight_shape=weight_shape,
        theta_q=theta_q,
        theta_new_q=theta_new_q,
        mask=mask_b,
        delta_q=delta_q.astype(np.int64),
    )


def _solve_blocks(
    G_q: np.ndarray,
    theta_q: np.ndarray,
    mask: np.ndarray,
    spec: FixedPointSpec,
    *,
    refine_steps: int,
    offset: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """ỹ (n_blocks, B) int64, zero off the mask, and the exact residual e (n_blocks, B), 0 off the mask:
    ``e = G_SS ỹ_S + offset_S - θ_S 2^s`` (``offset``: an exact integer vector per block, default 0).

    Works on the compact |S|×|S| systems (padded to the largest |S| with identity rows, so blocks of any
    |S| share one batched LAPACK call): O(|S|³) per block instead of O(B³).
    """
    n_blocks, B = mask.shape
    y = np.zeros((n_blocks, B), dtype=np.int64)
    e = np.zeros((n_blocks, B), dtype=np.int64)
    touched = np.flatnonzero(mask.any(axis=1))
    if touched.size == 0:
        return y, e
    idx, valid = masked_indices(mask[touched])
    A = masked_system(G_q[touched], idx, valid)  # int64 (nt, s, s): G_SS, identity on padding
    Af = A.astype(np.float64)
    theta_S = np.where(valid, np.take_along_axis(theta_q[touched], idx, axis=1), 0)
    offset_S = (
        np.zeros(theta_S.shape, dtype=object)
        if offset is None
        else np.where(valid, np.take_along_axis(np.asarray(offset, dtype=object)[touched], idx, axis=1), 0)
    )

    def solve(rhs: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            try:
                sol = np.linalg.solve(Af, rhs[..., None])[..., 0]
            except np.linalg.LinAlgError:  # one singular block fails the batch: find which, block by block
                sol = np.full(rhs.shape, np.nan)
                for i in range(len(Af)):
                    try:
                        sol[i] = np.linalg.solve(Af[i], rhs[i][:, None])[:, 0]
                    except np.linalg.LinAlgError:
                        pass
        bad = ~np.isfinite(sol).all(axis=1)
        if bad.any():
            blocks = touched[np.flatnonzero(bad)][:8].tolist()
            raise WitnessError(f"G_SS is singular in block(s) {blocks}: no ỹ solves the masked system")
        limit = float(1 << 62)
        if np.any(np.abs(sol) >= limit):
            b = int(touched[np.flatnonzero((np.abs(sol) >= limit).any(axis=1))[0]])
            raise WitnessError(f"block {b}: ỹ exceeds 2^62 (G_SS is nearly singular); it cannot fit w_y={spec.w_y}")
        return np.rint(sol).astype(np.int64) * valid

    def residual(y_S: np.ndarray) -> np.ndarray:  # exact G_SS ỹ_S + offset_S - θ_S 2^s, 0 on padding
        z = np.asarray(exact_matvec(A, y_S), dtype=object) + offset_S
        return np.where(valid, solve_residual(z, theta_S, spec.s), 0)

    def worst(res: np.ndarray) -> np.ndarray:  # per block max |e| (Python ints: e may exceed int64)
        return np.max(np.abs(np.asarray(res, dtype=object)), axis=1)

    tau = spec.tau
    y_S = solve(np.ldexp(theta_S.astype(np.float64), spec.s) - offset_S.astype(np.float64))
    res = residual(y_S)
    for _ in range(refine_steps):
        bad = ((res < -tau) | (res >= tau)).any(axis=1)
        if not bad.any():
            break
        # mixed-precision iterative refinement: float solve of the exact integer residual
        step = solve(-np.asarray(res, dtype=np.float64)) * bad[:, None]
        if not step.any():
            break  # at the rounding limit: refinement cannot help
        candidate = y_S + step
        cand_res = residual(candidate)
        better = worst(cand_res) < worst(res)
        if not better.any():
            break
        y_S = np.where(better[:, None], candidate, y_S)
        res = np.where(better[:, None], cand_res, res)
    bad = (res < -tau) | (res >= tau)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        raise WitnessError(
            f"solve residual outside [-τ, τ) = [-{tau}, {tau}) in block(s) {touched[rows][:8].tolist()} "
            f"(max |e| = {int(worst(res).max())}); ỹ rounding cannot satisfy the circuit: increase s "
            "(s >= f_g + log2(B) guarantees it) or improve the conditioning of G (damping)"
        )
    try:
        check_fits(y_S, spec.w_y, name="ỹ_S")
    except QuantizationError as err:
        raise WitnessError(
            f"{err}; ỹ = G_SS⁻¹ θ_S · 2^{spec.y_frac} needs more than w_y={spec.w_y} bits: G_SS is ill-conditioned "
            "(increase w_y or the damping of the Fisher)"
        ) from None
    y_t = np.zeros((len(touched), B), dtype=np.int64)
    e_t = np.zeros((len(touched), B), dtype=np.int64)
    np.put_along_axis(y_t, idx, np.where(valid, y_S, 0), axis=1)  # padding slots write 0 to unmasked positions
    np.put_along_axis(e_t, idx, np.where(valid, np.asarray(res).astype(np.int64), 0), axis=1)
    y[touched], e[touched] = y_t, e_t
    return y, e
