"""Fixed-point formats of the OBS circuit, quantization that never clips, and the field-overflow bounds.

Every circuit value is a signed integer at a power-of-two scale (DESIGN.md section 5, docs/circuit.md):

===========  ====================  =================================================================
value        scale                 width
===========  ====================  =================================================================
θ, θ'        2^f_w                 ``w_w`` bits signed (quantization; θ is committed, not range-checked)
Δ            2^f_w                 ``w_delta`` bits signed, range-checked
G            2^f_g                 |G| ≤ 2^f_g after normalizing each block by max|G|; exactly symmetric
ỹ            2^(f_w + s - f_g)     ``w_y`` bits signed, range-checked
rem          1                     ``s`` bits unsigned, range-checked (τ = 2^(s-1) offset on masked rows)
===========  ====================  =================================================================

(The compact chunk layout checks Δ and ỹ in one shared field of ``max(w_delta, w_y)`` bits; the bound
analysis runs on the widths the circuit enforces, ``ChunkShape.checked_spec``.)

:func:`check_bounds` turns these widths into worst-case magnitudes of every intermediate a gate evaluates
and refuses (:class:`FieldOverflowError`) when one could reach p/2, since then a field equality would no
longer imply the integer equality the statement is about. :func:`delta_error_bound` states how far the
circuit's Δ can be from the float64 OBS update on the same (dequantized) inputs for *any* witness the
circuit accepts.

The exact integer helpers at the end (:func:`exact_matvec`, :func:`exact_cumsum_products`) compute
products of quantized matrices exactly, in float64 BLAS or int64 on digit slices, because the MAC sums
routinely exceed 64 bits.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable

import numpy as np

from .field import DEFAULT_FIELD, PrimeField

_INT64_LIMIT = 1 << 63
_FLOAT_EXACT = 1 << 53  # every integer of magnitude < 2^53 is a float64, and so are their exact sums


class QuantizationError(ValueError):
    """A value does not fit the fixed-point width it must be quantized to."""


class FieldOverflowError(ValueError):
    """A circuit intermediate could reach p/2: equalities in the field would not mean integer equalities."""


# ------------------------------------------------------------------------------------------------ the spec


@dataclasses.dataclass(frozen=True)
class FixedPointSpec:
    """Fixed-point formats of one OBS chunk circuit (all keyword-only; see the module table).

    * ``f_w``: fractional bits of θ, θ' and Δ.       * ``w_w``: signed width of quantized θ.
    * ``f_g``: fractional bits of the normalized G.  * ``w_delta``: signed, range-checked width of Δ.
    * ``s``: rescale shift (``Δ = floor(-Gỹ / 2^s)``). * ``w_y``: signed, range-checked width of ỹ.
    * ``limb_bits`` (t): range-table size 2^t. ``None`` (the default) lets each chunk circuit take the
      largest t (8 to 16) whose table fits the rows the chunk needs anyway, so the table never sets k. A
      width that is not a multiple of t ends in a shorter limb (its own smaller table, or a polynomial
      gate for 1-2 bits).

    Rounding ỹ to the nearest integer leaves a solve residual ``|e_q| ≤ ½ Σ_q' |G_qq'| ≤ ½ |S| 2^f_g``;
    the circuit accepts ``e ∈ [-2^(s-1), 2^(s-1))``, so ``s ≥ f_g + log2(B)`` makes plain rounding always
    acceptable; :meth:`validate_block_size` refuses larger blocks, for which the witness generator could
    fail on unlucky ones.

    The defaults are sized for B = 16 (``s = f_g + log2 B``) and for what OBS updates of realistic,
    damped Fisher blocks need (benchmarks/NOTES.md): |Δ| < 2^13 and |Ĝ_SS⁻¹ θ_S| < 2^9 in weight units
    (ỹ is checked on w_y = 30 bits at scale 2^20). The 16 + 30 range-checked bits are three lookups with
    the 15-bit tables of a 2^16-row chunk (and one 1-bit polynomial limb).
    """

    f_w: int = 16
    f_g: int = 12
    s: int = 16
    w_w: int = 24
    w_delta: int = 30
    w_y: int = 30
    limb_bits: int | None = None

    def __post_init__(self) -> None:
        for name in ("f_w", "f_g"):
            if getattr(self, name) < 0:
                raise ValueError(f"FixedPointSpec.{name} must be >= 0, got {getattr(self, name)}")
        if self.limb_bits is not None and not 1 <= self.limb_bits <= 24:
            raise ValueError(
                f"FixedPointSpec.limb_bits must be None (automatic) or in [1, 24] (table of 2^t rows), "
                f"got {self.limb_bits}"
            )
        if self.s < 1:
            raise ValueError(f"FixedPointSpec.s must be >= 1, got {self.s}")
        for name in ("w_w", "w_delta", "w_y"):
            v = getattr(self, name)
            if not 2 <= v <= 63:
                raise ValueError(f"FixedPointSpec.{name}={v} must be in [2, 63] (values are stored as int64)")
        if self.y_frac < 0:
            raise ValueError(f"FixedPointSpec: ỹ scale 2^(f_w + s - f_g) = 2^{self.y_frac} must not be fractional")

    @property
    def y_frac(self) -> int:
        """Fractional bits of ỹ: ``f_w + s - f_g`` (so that G·ỹ has scale 2^(f_w + s))."""
        return self.f_w + self.s - self.f_g

    @property
    def tau(self) -> int:
        """Residual tolerance τ = 2^(s-1): the circuit accepts solve residuals e ∈ [-τ, τ)."""
        return 1 << (self.s - 1)

    def validate_block_size(self, block_size: int) -> None:
        """Refuse block sizes for which nearest rounding of ỹ could leave a residual beyond τ."""
        if block_size < 1:
            raise ValueError(f"block size must be >= 1, got {block_size}")
        if block_size > (1 << (self.s - self.f_g)):
            raise ValueError(
                f"block size B={block_size} is too large for s={self.s}, f_g={self.f_g}: rounding ỹ may leave "
                f"|e| up to B·2^f_g/2 > τ=2^{self.s - 1}; need s >= f_g + log2(B) = {self.f_g + math.ceil(math.log2(block_size))}"
            )

    def for_block_size(self, block_size: int) -> FixedPointSpec:
        """This spec made admissible for blocks of ``block_size``: the rescale shift raised to
        ``s = f_g + ceil(log2 B)`` when it is smaller, and ỹ's width raised by the same number of bits so
        that ỹ keeps the same range in weight units at its finer scale."""
        if block_size < 1:
            raise ValueError(f"block size must be >= 1, got {block_size}")
        extra = max(0, self.f_g + math.ceil(math.log2(block_size)) - self.s)
        return dataclasses.replace(self, s=self.s + extra, w_y=self.w_y + extra)

    def to_dict(self) -> dict[str, int | None]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, int | None]) -> FixedPointSpec:
        return cls(
            **{f.name: None if d[f.name] is None else int(d[f.name]) for f in dataclasses.fields(cls) if f.name in d}
        )


@dataclasses.dataclass(frozen=True)
class ForgetSpec:
    """Fixed-point formats of the forget-aware OBS rows (:mod:`circuit_compiler.chips.forget`).

    * ``directions`` (r): forget directions per block; 0 is the plain circuit.
    * ``f_u``: fractional bits of the public directions, ``U_q = round(U · 2^f_u)`` with rows scaled to
      ``max|U| = 1`` (so |U_q| ≤ 2^f_u).
    * ``w_mu``: signed, range-checked width of μ (scale ``2^(y_frac - f_u)``, so ``U_qᵀ μ`` has ỹ's scale).
    * ``tol_bits``: the stated tolerance ``|U_q Δ_q| < tol = 2^tol_bits`` at scale ``2^(f_u + f_w)``, i.e.
      ``|U_b Δ_b| < 2^(tol_bits - f_u - f_w)`` in weight units for rows with max|U| = 1. The default
      ``None`` means ``f_u + f_w - 10``: 2^-10 ≈ 1e-3 in weight units.
    """

    directions: int = 0
    f_u: int = 6
    w_mu: int = 32
    tol_bits: int | None = None

    def __post_init__(self) -> None:
        if self.directions < 0:
            raise ValueError(f"ForgetSpec.directions must be >= 0, got {self.directions}")
        if not 0 <= self.f_u <= 16:
            raise ValueError(f"ForgetSpec.f_u must be in [0, 16], got {self.f_u}")
        if not 2 <= self.w_mu <= 48:
            raise ValueError(f"ForgetSpec.w_mu must be in [2, 48], got {self.w_mu}")
        if self.tol_bits is not None and not 1 <= self.tol_bits <= 48:
            raise ValueError(f"ForgetSpec.tol_bits must be None or in [1, 48], got {self.tol_bits}")

    def resolved(self, spec: FixedPointSpec) -> ForgetSpec:
        """This spec with the default tolerance made explicit for ``spec``'s f_w."""
        if self.tol_bits is not None:
            return self
        return dataclasses.replace(self, tol_bits=max(1, self.f_u + spec.f_w - 10))

    @property
    def tolerance(self) -> int:
        if self.tol_bits is None:
            raise ValueError("ForgetSpec.tol_bits is unresolved: call resolved(spec) first")
        return 1 << self.tol_bits

    @property
    def mu_offset(self) -> int:
        return 1 << (self.w_mu - 1)

    def v_bits(self, y_bits: int) -> int:
        """Signed width that holds ``v = ỹ + U_qᵀ μ`` for |ỹ| < 2^(y_bits-1): the MAC's input bound."""
        largest = (1 << (y_bits - 1)) + self.directions * (1 << self.f_u) * (1 << (self.w_mu - 1))
        return largest.bit_length() + 1

    def to_dict(self) -> dict[str, int | None]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, int | None]) -> ForgetSpec:
        return cls(
            **{
                f.name: None if d.get(f.name) is None else int(d[f.name])
                for f in dataclasses.fields(cls)
                if f.name in d
            }
        )


# ------------------------------------------------------------------------------------------- quantization


#: ỹ = Ĝ_SS⁻¹ θ_S grows with the conditioning of the client's (damped) Fisher blocks, which the provider
#: cannot know when the configuration is fixed; the protocol's default leaves 2^26 of range in weight units.
PROTOCOL_Y_BITS = 48


#: The protocol's default public bound on the repair, in weight units: every proven Δ off the mask lies in
#: [-PROTOCOL_MAX_DELTA, PROTOCOL_MAX_DELTA). Measured need of honest OBS and the margin: docs/threat-model.md.
PROTOCOL_MAX_DELTA = 2.0


def delta_bits_for(max_delta: float, f_w: int) -> int:
    """b_Δ for a bound of ``max_delta`` weight units (a power of two; :func:`round_up_to_power_of_two`):
    Δ ∈ [-max_delta, max_delta) at scale 2^f_w is exactly Δ_q ∈ [-2^(b_Δ-1), 2^(b_Δ-1))."""
    exponent = power_of_two_exponent(max_delta)
    bits = f_w + exponent + 1
    if not 2 <= bits <= 63:
        raise ValueError(
            f"a repair bound of {max_delta} weight units needs b_Δ = {bits} bits at f_w = {f_w}: not in [2, 63]"
        )
    return bits


def round_up_to_power_of_two(x: float) -> float:
    """The smallest power of two ≥ x > 0 (how a requested max |Δ| becomes a bound on whole limbs)."""
    if not (math.isfinite(x) and x > 0):
        raise ValueError(f"a repair bound must be a positive finite number of weight units, got {x!r}")
    return math.ldexp(1.0, math.ceil(math.log2(x)))


def power_of_two_exponent(x: float) -> int:
    """e with x = 2^e, refusing anything that is not a positive power of two (ValueError)."""
    if not (isinstance(x, (int, float)) and math.isfinite(x) and x > 0):
        raise ValueError(f"a repair bound must be a positive finite number of weight units, got {x!r}")
    mantissa, exponent = math.frexp(x)
    if mantissa != 0.5:
        raise ValueError(f"a repair bound must be a power of two in weight units, got {x!r} (round it up)")
    return exponent - 1


def spec_for_block_size(block_size: int, base: FixedPointSpec | None = None) -> FixedPointSpec:
    """The fixed-point formats the protocol proves (ỹ on ``PROTOCOL_Y_BITS`` at B = 16), made admissible for
    blocks of ``block_size`` (see :meth:`FixedPointSpec.for_block_size`). The one rule for a block size:
    the protocol, the demo and the block-size study all take their spec from here."""
    return (base or FixedPointSpec(w_y=PROTOCOL_Y_BITS)).for_block_size(block_size)


def signed_range(width: int) -> tuple[int, int]:
    """Inclusive integer range of a signed ``width``-bit value: ``[-2^(w-1), 2^(w-1) - 1]``."""
    return -(1 << (width - 1)), (1 << (width - 1)) - 1


def quantize(x: np.ndarray, frac_bits: int, width: int, *, name: str = "tensor") -> np.ndarray:
    """``round(x · 2^frac_bits)`` as int64, refusing (never clipping) values outside a signed ``width``.

    Rounds half to even (``np.rint``), deterministically. Raises :class:`QuantizationError` naming the
    tensor, the first offending index, its value and the representable range.
    """
    x = np.asarray(x, dtype=np.float64)
    if not 1 <= width <= 63:
        raise ValueError(f"quantize({name}): width must be in [1, 63], got {width}")
    lo, hi = signed_range(width)
    q = x * float(2**frac_bits)  # exact: a power-of-two scale
    np.rint(q, out=q)
    ok = (q >= lo) & (q <= hi)  # False for NaN and ±inf too: one pass finds every bad value
    if not ok.all():
        bad = ~ok
        finite = np.isfinite(x)
        if not finite.all():
            idx = _first_index(~finite)
            raise QuantizationError(
                f"{name}{list(idx)} = {float(x[idx])!r} is not finite ({int((~finite).sum())} such values)"
            )
        idx = _first_index(bad)
        scale = 2.0**frac_bits
        raise QuantizationError(
            f"{name}{list(idx)} = {float(x[idx])!r} does not fit a signed {width}-bit fixed-point value at scale "
            f"2^{frac_bits}: allowed [{lo / scale!r}, {hi / scale!r}]; {int(bad.sum())} of {x.size} values are "
            f"out of range, max |{name}| = {float(np.max(np.abs(x)))!r}"
        )
    return q.astype(np.int64)


def dequantize(q: np.ndarray, frac_bits: int) -> np.ndarray:
    """Integers at scale 2^frac_bits -> float64 (exact for |q| < 2^53)."""
    return np.ldexp(np.asarray(q, dtype=np.float64), -frac_bits)


def check_fits(values: np.ndarray, width: int, *, name: str, signed: bool = True) -> None:
    """Raise :class:`QuantizationError` if an integer array leaves the ``width``-bit range."""
    values = np.asarray(values)
    lo, hi = signed_range(width) if signed else (0, (1 << width) - 1)
    if values.size == 0:
        return
    bad = np.asarray((values < lo) | (values > hi), dtype=bool)
    if bad.any():
        idx = _first_index(bad)
        raise QuantizationError(
            f"{name}{list(idx)} = {int(values[idx])} does not fit a {'signed' if signed else 'unsigned'} "
            f"{width}-bit range [{lo}, {hi}] ({int(bad.sum())} of {values.size} values out of range)"
        )


def normalize_blocks(G: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Divide each block of ``G`` (nb, B, B) by its max |entry|, so that max |Ĝ_b| = 1.

    Δ = -G[:, S] G_SS⁻¹ θ_S is invariant under G -> c·G for c > 0, so the scale is never needed in the
    circuit (it stays private). Returns ``(Ĝ, scale)`` with ``Ĝ_b = G_b / scale_b``; all-zero blocks keep
    scale 1.
    """
    G = np.asarray(G, dtype=np.float64)
    if G.ndim != 3 or G.shape[1] != G.shape[2]:
        raise ValueError(f"G must have shape (blocks, B, B), got {G.shape}")
    bad = ~np.isfinite(G)
    if bad.any():
        idx = _first_index(bad)
        raise QuantizationError(f"G{list(idx)} = {float(G[idx])!r} is not finite")
    scale = np.max(np.abs(G), axis=(1, 2))
    scale = np.where(scale > 0, scale, 1.0)
    return G / scale[:, None, None], scale


#: Largest relative asymmetry max|G - Gᵀ| / max|G| accepted from an inverse-Fisher block (float round-off
#: of an inversion is far below it; a non-symmetric input is a different kind of matrix, not noise).
SYMMETRY_TOLERANCE = 1e-3


def quantize_fisher_blocks(G: np.ndarray, spec: FixedPointSpec) -> tuple[np.ndarray, np.ndarray]:
    """Normalize (per block), symmetrize and quantize G: ``(G_q int64 (nb, B, B), scale (nb,))``.

    |G_q| ≤ 2^f_g and G_q is exactly symmetric: an inverse Fisher is symmetric, the chunk circuit stores
    only its upper triangle, and rounding ½(Ĝ + Ĝᵀ) removes the round-off of the float inversion. A block
    further than :data:`SYMMETRY_TOLERANCE` from symmetric is refused (:class:`QuantizationError`).
    """
    G_hat, scale = normalize_blocks(G)
    asymmetry = np.max(np.abs(G_hat - np.swapaxes(G_hat, 1, 2)), axis=(1, 2)) if G_hat.size else np.zeros(0)
    if np.any(asymmetry > SYMMETRY_TOLERANCE):
        b = int(np.argmax(asymmetry))
        raise QuantizationError(
            f"G block {b} is not symmetric: max|G - Gᵀ| / max|G| = {float(asymmetry[b]):.3g} > "
            f"{SYMMETRY_TOLERANCE} ({int((asymmetry > SYMMETRY_TOLERANCE).sum())} such blocks); an inverse Fisher "
            "block is symmetric"
        )
    G_hat = 0.5 * (G_hat + np.swapaxes(G_hat, 1, 2))
    G_q = quantize(G_hat, spec.f_g, spec.f_g + 2, name="G")
    # |Ĝ| ≤ 1 rounds to |G_q| ≤ 2^f_g: the magnitude the bound analysis assumes.
    check_fits(np.abs(G_q) - 1, spec.f_g + 1, name="|G_q| - 1")
    return G_q, scale


def _first_index(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.unravel_index(int(np.flatnonzero(mask.ravel())[0]), mask.shape))


# ---------------------------------------------------------------------------------------- bound analysis


@dataclasses.dataclass(frozen=True)
class Bound:
    """Worst-case magnitude of one circuit intermediate, derived from the declared widths."""

    name: str
    formula: str  # how the magnitude was derived, in the spec's symbols
    magnitude: int  # an upper bound on |value| as an integer (before reduction mod p)

    @property
    def bits(self) -> int:
        return self.magnitude.bit_length()

    @property
    def fits_int64(self) -> bool:
        return self.magnitude < _INT64_LIMIT


@dataclasses.dataclass(frozen=True)
class BoundReport:
    """All intermediates of the chunk circuit with their bounds; ``limit`` = (p-1)/2."""

    spec: FixedPointSpec
    block_size: int
    field: PrimeField
    bounds: tuple[Bound, ...]

    @property
    def limit(self) -> int:
        return self.field.half

    def __getitem__(self, name: str) -> Bound:
        for b in self.bounds:
            if b.name == name:
                return b
        raise KeyError(f"no bound named {name!r}; have {[b.name for b in self.bounds]}")

    @property
    def headroom_bits(self) -> int:
        """Bits between the largest intermediate and p/2 (positive when the circuit is sound)."""
        return self.limit.bit_length() - max(b.bits for b in self.bounds)

    def delta_error_formula(self) -> str:
        return (
            f"|Δ_i - Δ*_i| ≤ 2^-{self.spec.f_w} · (1 + ½ Σ_q∈S |(Ĝ_iS Ĝ_SS⁻¹)_q|) for i ∉ S, and θ'_q = 0 exactly "
            "for q ∈ S, where Δ* is the float OBS update on the dequantized θ and Ĝ (see delta_error_bound)"
        )

    def table(self) -> str:
        """A readable table of every bound against p/2."""
        width = max(len(b.name) for b in self.bounds)
        lines = [
            f"field {self.field.name}: p/2 ≈ 2^{self.limit.bit_length()}; block size B = {self.block_size}; "
            f"headroom {self.headroom_bits} bits",
            f"{'intermediate'.ljust(width)}  bits  int64  bound",
        ]
        for b in self.bounds:
            lines.append(f"{b.name.ljust(width)}  {b.bits:4d}  {'yes' if b.fits_int64 else 'no ':5s}  {b.formula}")
        lines.append(self.delta_error_formula())
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "field": self.field.name,
            "block_size": self.block_size,
            "spec": self.spec.to_dict(),
            "limit_bits": self.limit.bit_length(),
            "bounds": [{"name": b.name, "formula": b.formula, "bits": b.bits} for b in self.bounds],
            "delta_error": self.delta_error_formula(),
        }


def bounds(spec: FixedPointSpec, *, block_size: int, field: PrimeField = DEFAULT_FIELD) -> BoundReport:
    """Worst-case magnitudes of every intermediate of the chunk circuit (no check; see :func:`check_bounds`)."""
    if block_size < 1:
        raise ValueError(f"block size must be >= 1, got {block_size}")
    B = block_size
    theta = 1 << (spec.w_w - 1)
    delta = 1 << (spec.w_delta - 1)
    y = 1 << (spec.w_y - 1)
    g = 1 << spec.f_g
    rem = (1 << spec.s) - 1
    tau = spec.tau
    shift = 1 << spec.s
    z = B * g * y
    items: list[Bound] = [
        Bound("theta", "2^(w_w-1)", theta),
        Bound("delta", "2^(w_delta-1)", delta),
        Bound("y", "2^(w_y-1)", y),
        Bound("G", "2^f_g", g),
        Bound("rem", "2^s - 1", rem),
        Bound("theta_new", "|θ| + |Δ|", theta + delta),
        Bound("mac_product", "G·ỹ ≤ 2^f_g · 2^(w_y-1)", g * y),
        Bound("mac_partial_sum", "Σ_j≤B G·ỹ ≤ B · 2^f_g · 2^(w_y-1)", z),
        Bound("residual", "|z| + |θ|·2^s + rem + τ (masked rows)", z + theta * shift + rem + tau),
        Bound("rescale", "|z| + |Δ|·2^s + rem (unmasked rows)", z + delta * shift + rem),
        Bound("update", "|θ'| + |θ| + |Δ|", 2 * (theta + delta)),
        Bound("delta_range", "Δ + 2^(w_delta-1) < 2^w_delta", (1 << spec.w_delta) - 1),
        Bound("y_range", "ỹ + 2^(w_y-1) < 2^w_y", (1 << spec.w_y) - 1),
        Bound("rem_range", "rem < 2^s", rem),
    ]
    return BoundReport(spec=spec, block_size=B, field=field, bounds=tuple(items))


def check_bounds(spec: FixedPointSpec, *, block_size: int, field: PrimeField = DEFAULT_FIELD) -> BoundReport:
    """:func:`bounds`, refusing with :class:`FieldOverflowError` if any intermediate could reach p/2."""
    report = bounds(spec, block_size=block_size, field=field)
    for b in report.bounds:
        if b.magnitude >= report.limit:
            raise FieldOverflowError(
                f"intermediate {b.name!r} ({b.formula}) can reach ≈ 2^{_log2(b.magnitude):.2f} >= p/2 "
                f"≈ 2^{_log2(report.limit):.2f} in {field.name} with {spec} and B={block_size}: "
                "a field equality would not imply the integer one; reduce the widths"
            )
    return report


def _log2(x: int) -> float:
    shift = max(x.bit_length() - 53, 0)  # exact enough, and safe for ints beyond float range
    return math.log2(x >> shift) + shift


def delta_error_bound(G_hat: np.ndarray, mask: np.ndarray, spec: FixedPointSpec) -> np.ndarray:
    """Per-weight bound on |Δ_circuit - Δ_float| in weight units, for any witness the circuit accepts.

    Derivation (docs/circuit.md): on S the circuit has Ĝ_SS ŷ = θ̂_S + e/2^(f_w+s) with |e| ≤ τ = 2^(s-1);
    off S, Δ̂_i = -(Ĝ ŷ)_i - r_i / 2^(f_w+s) with 0 ≤ r_i < 2^s. Subtracting Δ*_i = -Ĝ_iS Ĝ_SS⁻¹ θ̂_S gives
    ``|Δ̂_i - Δ*_i| ≤ 2^-f_w (1 + ½ ‖Ĝ_iS Ĝ_SS⁻¹‖₁)``. On S the circuit sets θ' = 0 exactly, as OBS does.

    G_hat: (nb, B, B) dequantized normalized G (``G_q / 2^f_g``); mask: (nb, B) bool. Returns (nb, B).
    """
    G_hat = np.asarray(G_hat, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    if G_hat.ndim != 3 or mask.shape != G_hat.shape[:2]:
        raise ValueError(f"delta_error_bound: G_hat {G_hat.shape} and mask {mask.shape} do not match")
    transfer = obs_transfer_matrix(G_hat, mask)  # (nb, B, B): row i = Ĝ_iS Ĝ_SS⁻¹ (zero columns off S)
    bound = np.ldexp(1.0 + 0.5 * np.abs(transfer).sum(axis=2), -spec.f_w)
    return np.where(mask, 0.0, bound)


def obs_transfer_matrix(G: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``T_b = G_b[:, S] G_b[S, S]⁻¹`` embedded in (B, B) (zero columns off S), batched over blocks.

    Solved in the compact |S|-sized systems of :func:`masked_system`; blocks with empty S give 0.
    """
    G = np.asarray(G, dtype=np.float64)
    n, B, _ = G.shape
    T = np.zeros((n, B, B))
    idx, valid = masked_indices(mask)
    if idx.shape[1] == 0:
        return T
    A = masked_system(G, idx, valid)  # (n, s, s)
    cols = np.take_along_axis(G, idx[:, None, :], axis=2) * valid[:, None, :]  # G[:, S] (n, B, s), padded with 0
    # T_S = G[:, S] A⁻¹  <=>  Aᵀ T_Sᵀ = G[:, S]ᵀ
    T_S = np.swapaxes(np.linalg.solve(np.swapaxes(A, 1, 2), np.swapaxes(cols, 1, 2)), 1, 2) * valid[:, None, :]
    np.put_along_axis(T, np.broadcast_to(idx[:, None, :], (n, B, idx.shape[1])), T_S, axis=2)
    return T * np.asarray(mask, dtype=bool)[:, None, :]


def masked_indices(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per block, the masked positions S in increasing order, padded to the largest |S|.

    mask: (n, B) bool. Returns ``idx`` (n, s_max) int64 (padding slots repeat some unmasked position)
    and ``valid`` (n, s_max) bool (False on padding slots).
    """
    mask = np.asarray(mask, dtype=bool)
    counts = mask.sum(axis=1)
    s_max = int(counts.max()) if counts.size else 0
    idx = np.argsort(~mask, axis=1, kind="stable")[:, :s_max].astype(np.int64)
    valid = np.arange(s_max)[None, :] < counts[:, None]
    return idx, valid


def masked_system(G: np.ndarray, idx: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``G[S, S]`` per block (n, s_max, s_max), with padding slots replaced by identity rows/columns.

    Padding decouples: the solution of ``A x = b`` is ``G_SS⁻¹ b_S`` on the valid slots whenever ``b``
    is 0 on the padding ones (and then x is 0 there). Keeps G's dtype (exact for integers).
    """
    n, s = idx.shape
    rows = np.take_along_axis(G, idx[:, :, None], axis=1)  # (n, s, B)
    A = np.take_along_axis(rows, idx[:, None, :], axis=2)  # (n, s, s)
    pair = valid[:, :, None] & valid[:, None, :]
    eye = np.eye(s, dtype=A.dtype)[None] * (~valid)[:, :, None]
    return np.where(pair, A, 0).astype(A.dtype) + eye


# -------------------------------------------------------------------------------- exact integer products


def _max_abs(x: np.ndarray) -> int:
    return int(np.max(np.abs(x))) if x.size else 0


def _digits(x: np.ndarray, h: int) -> list[np.ndarray]:
    """Split int64 ``x`` into base-2^h digits: ``x = Σ_k d_k 2^(hk)``, low digits in [0, 2^h), top signed."""
    digits = []
    mask = (1 << h) - 1
    rest = x.astype(np.int64)
    while True:
        if _max_abs(rest) < (1 << h) or not rest.any():
            digits.append(rest)
            return digits
        digits.append(rest & mask)
        rest = rest >> h  # arithmetic shift: floor division, so negative values keep a signed top digit


def _combine(parts: Iterable[np.ndarray], h: int, bound: int) -> np.ndarray:
    """``Σ_k parts[k] · 2^(hk)`` exactly: int64 when |result| ≤ bound < 2^63 (wrapping partial sums are
    harmless then: int64 arithmetic is exact mod 2^64), else an object array of Python ints."""
    parts = list(parts)
    if bound < _INT64_LIMIT:
        out = parts[0].astype(np.int64, copy=False)  # the parts are fresh arrays: reuse the first
        with np.errstate(over="ignore"):
            for k, p in enumerate(parts[1:], start=1):
                out += p.astype(np.int64) * np.int64(1 << (h * k))
        return out
    out = np.zeros(parts[0].shape, dtype=object)
    for k, p in enumerate(parts):
        out = out + p.astype(object) * (1 << (h * k))
    return out


def exact_matvec(a: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Exact ``a @ x`` for int64 ``a`` (..., m, n) and ``x`` (..., n), batched over leading axes.

    Runs on float64 BLAS over base-2^h digits of ``x``, with h chosen so that every partial sum is an
    integer below 2^53 (hence exact whatever the summation order). Returns int64 when the result provably
    fits, else an object array of Python ints.
    """
    a = np.asarray(a, dtype=np.int64)
    x = np.asarray(x, dtype=np.int64)
    n = a.shape[-1]
    a_max, x_max = _max_abs(a), _max_abs(x)
    if a_max == 0 or x_max == 0 or n == 0:
        return np.zeros(np.broadcast_shapes(a.shape[:-1], x.shape[:-1] + (1,)), dtype=np.int64)
    headroom = _FLOAT_EXACT // (a_max * n)  # a digit must stay below this
    if headroom < 2:
        raise OverflowError(f"exact_matvec: |a| ≤ {a_max} with n={n} leaves no room for float64-exact digits")
    h = headroom.bit_length() - 1
    af = a.astype(np.float64)
    parts = [np.rint(np.matmul(af, d.astype(np.float64)[..., None])[..., 0]).astype(np.int64) for d in _digits(x, h)]
    return _combine(parts, h, a_max * x_max * n)


def exact_cumsum_products(a: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Exact running sums ``out[..., i, j] = Σ_{j' ≤ j} a[..., i, j'] · x[..., j']`` (int64 in, (..., m, n) out).

    The MAC accumulators of the circuit. int64 cumsum over base-2^h digits of ``x`` (exact), combined
    into int64 or Python ints as the bound requires.
    """
    a = np.asarray(a, dtype=np.int64)
    x = np.asarray(x, dtype=np.int64)
    n = a.shape[-1]
    a_max, x_max = _max_abs(a), _max_abs(x)
    if a_max == 0 or x_max == 0 or n == 0:
        return np.zeros(np.broadcast_shapes(a.shape, x.shape[:-1] + (1, n)), dtype=np.int64)
    headroom = (_INT64_LIMIT - 1) // (a_max * n)
    if headroom < 2:
        raise OverflowError(f"exact_cumsum_products: |a| ≤ {a_max} with n={n} overflows int64")
    h = headroom.bit_length() - 1
    xe = x[..., None, :]
    parts = [np.cumsum(a * d, axis=-1) for d in _digits(xe, h)]
    return _combine(parts, h, a_max * x_max * n)
