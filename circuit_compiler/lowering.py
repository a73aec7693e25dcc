"""Lowering of the quantized blockwise OBS update of one chunk of blocks to a PLONKish circuit.

Implements the layouts of docs/circuit.md. A chunk is ``nb`` consecutive blocks of ``B`` weights; the
circuit's structure (columns, gates, selectors, fixed values, copies, k) depends only on its
:class:`ChunkShape` -- never on the mask or the weights -- so one proving/verifying key serves every
chunk of that shape, for every request and client. The mask enters only as instance values.

Levels (DESIGN.md section 4):

* ``"R"`` (removal): committed θ, θ'; instance ``mask`` and ``touched``; removal, update,
  no_delta_on_mask, locality, and the range check of Δ.
* ``"F"`` (Fisher-bound): additionally committed G lanes ``g_0..`` (:attr:`ChunkShape.g_columns`), ``z = G ỹ`` for the whole
  block, and the residual/rescale relations that select by the mask.

Layouts:

* ``"compact"`` (the default; at level F it needs ``lanes == B``): one row per weight. G's upper
  triangle sits in ⌊B/2⌋ + 1 committed lanes, one per cyclic distance (:mod:`.chips.diagonal`), so ``z`` is one
  expression of the row and its neighbours: no accumulator columns, no copy constraints, no permutation
  argument. Δ / ỹ and the remainder share one row of range-checked limbs (:mod:`.chips.weight_rows`), and
  committed values are offset-encoded to stay small and non-negative.
* ``"classic"`` (level F with ``L < B``): the lane/accumulator MAC region of :mod:`.chips.mac`, copied to
  a separate finalization region whose Δ, ỹ and remainder cells are each range-checked.

Every committed column carries random salt cells in rows whose values no constraint depends on, as many as
the evaluations one proof reveals plus one (:mod:`.hiding` derives the count from the circuit's query
rotations), so its KZG commitment and a proof's openings hide the weights. :func:`committed_columns` builds those columns alone (a client commits θ
and G at personalization time, before any mask exists); :func:`chunk_instances` builds the public
columns from the mask alone (what the verifier does).

Entry points: :func:`build_chunk_circuit` (structure only, for keygen), :func:`lower_chunk` (structure and
assignment), :func:`chunk_layer` (cut a layer witness into equally shaped chunks), :func:`chunk_shape_key`,
:func:`blocks_to_fill` (the most blocks a chunk of a given k holds).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .builder import CircuitBuilder
from .chips import diagonal as diagonal_chip
from .chips import forget as forget_chip
from .chips import mac as mac_chip
from .chips import removal as removal_chip
from .chips import rescale as rescale_chip
from .chips import residual as residual_chip
from .chips import update as update_chip
from .chips import weight_rows as weight_rows_chip
from .chips.update import touched_rows
from .field import DEFAULT_FIELD, PrimeField
from .fixedpoint import (
    FixedPointSpec,
    ForgetSpec,
    QuantizationError,
    check_bounds,
    check_fits,
)
from .hiding import draw_salt_seed, expand_salts, salts_needed
from .ir import Assignment, Column, ConstraintSystem, usable_rows
from .masks import as_bool_mask

if TYPE_CHECKING:
    from .witness import LayerWitness

Level = Literal["R", "F"]
LEVELS = ("R", "F")
Layout = Literal["compact", "classic"]
LAYOUTS = ("compact", "classic")

#: Automatic range-table sizes: at least 2^8 rows (tiny chunks), at most 2^16 (a larger table costs more
#: keygen time and prover memory than the lookups it saves on the default widths).
AUTO_LIMB_BITS = (8, 16)


# -------------------------------------------------------------------------------------------- the shape


@dataclasses.dataclass(frozen=True)
class ChunkShape:
    """Everything a chunk circuit's structure (and so its keys) depends on.

    ``lanes`` (L) only exists at level F (normalized to ``None`` at level R): the MAC's width, G entries
    multiplied per row (L = B: the compact layout, one row per weight; :attr:`g_columns` says how many
    committed G columns that takes). ``layout`` ``None`` picks the compact layout when it applies (level R, or level F with
    L = B) and the classic one otherwise; it is resolved here, so equal shapes compare equal.
    ``k=None`` means the smallest k that fits. ``forget`` (compact level F only): the forget-aware rows of
    :mod:`.chips.forget`; ``None`` or 0 directions is the plain circuit (normalized to ``None``), and its
    tolerance is resolved against ``spec`` here.
    """

    blocks: int  # nb
    block_size: int  # B
    level: Level
    spec: FixedPointSpec
    lanes: int | None = None
    k: int | None = None
    field: PrimeField = DEFAULT_FIELD
    layout: Layout | None = None
    forget: ForgetSpec | None = None

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ValueError(f"chunk level must be one of {LEVELS}, got {self.level!r}")
        if self.blocks < 1 or self.block_size < 1:
            raise ValueError(f"chunk shape: blocks={self.blocks}, block_size={self.block_size} must be >= 1")
        if self.layout is not None and self.layout not in LAYOUTS:
            raise ValueError(f"chunk layout must be one of {LAYOUTS} (or None for the default), got {self.layout!r}")
        if self.level == "R":
            if self.forget is not None and self.forget.directions:
                raise ValueError("forget directions are proven at level F only (level R proves no G rows)")
            object.__setattr__(self, "forget", None)
            object.__setattr__(self, "lanes", None)  # no MAC: L does not change the circuit
            object.__setattr__(self, "layout", self.layout or "compact")
            return
        if self.lanes is None or self.lanes < 1 or self.block_size % self.lanes:
            raise ValueError(f"level F needs lanes L dividing B={self.block_size}, got {self.lanes}")
        layout = self.layout or ("compact" if self.lanes == self.block_size else "classic")
        if layout == "compact" and self.lanes != self.block_size:
            raise ValueError(
                f"the compact layout computes a weight's whole row of G on its own row: it needs lanes L = B = "
                f"{self.block_size}, got L = {self.lanes}"
            )
        object.__setattr__(self, "layout", layout)
        if self.forget is not None and self.forget.directions == 0:
            object.__setattr__(self, "forget", None)
        if self.forget is not None:
            if layout != "compact" or self.block_size < 2:
                raise ValueError(
                    f"forget directions need the compact level-F layout and B >= 2 (got layout "
                    f"{layout!r}, B={self.block_size})"
                )
            object.__setattr__(self, "forget", self.forget.resolved(self.spec))

    @property
    def weights(self) -> int:
        """Weights (finalization rows) of the chunk: nb · B."""
        return self.blocks * self.block_size

    @property
    def mac_rows(self) -> int:
        """Rows that compute ``z = G ỹ`` (level F): nb · (B/L) · B classic, nb · B compact; 0 at level R."""
        if self.level == "R":
            return 0
        if self.layout == "compact":
            return self.weights
        return self.blocks * (self.block_size // self.lanes) * self.block_size

    @property
    def first_row(self) -> int:
        """Row of the chunk's first weight: B - 1 in the compact level-F layout (the MAC reads B - 1 rows
        on each side of the blocks), 0 otherwise. Weight q of the chunk sits at row ``first_row + q``."""
        return self.block_size - 1 if (self.layout == "compact" and self.level == "F") else 0

    @property
    def weight_salt_row(self) -> int:
        """First row of the salt cells of ``theta`` and ``theta_new``: just after the weight rows."""
        return self.first_row + self.weights

    @property
    def g_salt_row(self) -> int:
        """First row of the salt cells of the G lanes: just after the MAC rows -- in the compact layout
        after the B - 1 margin rows too, which the lanes' forward rotations (up to B - 1) read."""
        if self.layout == "compact" and self.level == "F":
            return self.first_row + self.mac_rows + self.block_size - 1
        return self.first_row + self.mac_rows

    @property
    def salt_counts(self) -> dict[str, int]:
        """Salt cells per committed column: the openings one proof reveals plus one (:mod:`.hiding`)."""
        return _salt_counts(self)

    def salt_rows(self, name: str) -> range:
        """Rows of the salt cells of committed column ``name`` (consecutive, read by no constraint)."""
        start = self.weight_salt_row if name.startswith("theta") else self.g_salt_row
        return range(start, start + self.salt_counts[name])

    @property
    def used_rows(self) -> int:
        """Rows the circuit uses before any range table: weights, salts and (compact F) the B - 1 margin
        rows on each side of the blocks that the MAC reads."""
        salts_end = max(self.salt_rows(name).stop for name in self.committed_names())
        if self.layout == "compact" and self.level == "F":
            return max(self.weight_salt_row + max(self.block_size - 1, 1), salts_end)
        return max(self.weight_salt_row, self.g_salt_row, salts_end)

    @property
    def max_rotations(self) -> int:
        """Most distinct rotations at which one advice column is queried (sets Halo2's blinding rows)."""
        if self.level == "R":
            return 1
        if self.layout == "compact":
            return 2 * self.block_size - 1  # ỹ at -(B-1) .. B-1
        return 2

    @property
    def natural_k(self) -> int:
        """The smallest k whose usable rows hold :attr:`used_rows` (before range tables)."""
        k = 1
        while usable_rows(k, self.max_rotations) < self.used_rows:
            k += 1
        return k

    @property
    def limb_bits(self) -> int:
        """The range-table size t: ``spec.limb_bits`` when set, else the largest table that fits the
        domain the chunk needs anyway (``k - 1`` bits, within :data:`AUTO_LIMB_BITS`)."""
        if self.spec.limb_bits is not None:
            return self.spec.limb_bits
        lo, hi = AUTO_LIMB_BITS
        return min(hi, max(lo, max(self.natural_k, self.k or 0) - 1))

    @property
    def high_bits(self) -> int:
        """Compact layout: width of the limb field shared by Δ (off the mask) and ỹ (on it)."""
        return max(self.spec.w_delta, self.spec.w_y) if self.level == "F" else self.spec.w_delta

    @property
    def delta_bits(self) -> int:
        """b_Δ: the public bound on the repair, Δ ∈ [-2^(b_Δ-1), 2^(b_Δ-1)) in units of 2^-f_w, proven at
        every layout and level (``spec.w_delta``; the compact level-F rows gate the shared field's limbs
        above it to zero off the mask)."""
        return self.spec.w_delta

    @property
    def checked_spec(self) -> FixedPointSpec:
        """The spec whose widths the circuit actually enforces (the bound analysis runs on it): Δ on
        :attr:`delta_bits`; in the compact layout ỹ is checked on the whole :attr:`high_bits` field."""
        if self.layout == "compact":
            w_y = self.high_bits if self.level == "F" else self.spec.w_y
            if self.forget is not None:  # the MAC multiplies v = ỹ + U_qᵀ μ
                w_y = self.forget.v_bits(w_y)
            return dataclasses.replace(self.spec, w_y=w_y)
        return self.spec

    @property
    def theta_offset(self) -> int:
        """Compact layout: committed weights are ``θ + 2^(w_w - 1)`` (small and non-negative)."""
        return 1 << (self.spec.w_w - 1) if self.layout == "compact" else 0

    @property
    def g_offset(self) -> int:
        """Compact layout: committed G entries are ``G + 2^f_g`` (in ``[0, 2^(f_g+1)]``)."""
        return 1 << self.spec.f_g if self.layout == "compact" else 0

    @property
    def g_columns(self) -> int:
        """Committed G columns: ⌊B/2⌋ + 1 cyclic lanes in the compact layout (:mod:`.chips.diagonal`),
        the L MAC lanes in the classic one, none at level R."""
        if self.level == "R":
            return 0
        return diagonal_chip.lane_count(self.block_size) if self.layout == "compact" else self.lanes

    def g_names(self) -> tuple[str, ...]:
        """Names of the committed G columns, ``g_0 … g_{n-1}``."""
        return tuple(f"g_{l}" for l in range(self.g_columns))

    def committed_names(self) -> tuple[str, ...]:
        return ("theta", "theta_new") + self.g_names()

    def to_dict(self) -> dict[str, Any]:
        return {
            "blocks": self.blocks,
            "block_size": self.block_size,
            "level": self.level,
            "lanes": self.lanes,
            "k": self.k,
            "field": self.field.name,
            "spec": self.spec.to_dict(),
            "layout": self.layout,
            "forget": None if self.forget is None else self.forget.to_dict(),
        }


@functools.lru_cache(maxsize=64)
def _salt_counts(shape: ChunkShape) -> dict[str, int]:
    """Salt cells per committed column of ``shape``, from the rotations at which its gates query them.

    The gates are built with a fixed range-table size: the table's size sets k, which depends on the rows
    the salts take, while the rotations at which committed columns are queried do not depend on it.
    """
    probe = dataclasses.replace(shape, spec=dataclasses.replace(shape.spec, limb_bits=AUTO_LIMB_BITS[0]), k=None)
    build = _build_compact if probe.layout == "compact" else _build_classic
    builder, _ = build(probe)
    counts = salts_needed(builder.build())
    # θ' 's commitment becomes θ's at the next request: both need the same salt rows
    counts["theta"] = counts["theta_new"] = max(counts["theta"], counts["theta_new"])
    return counts


def chunk_shape_key(
    *,
    blocks: int,
    block_size: int,
    level: Level,
    spec: FixedPointSpec,
    lanes: int | None = None,
    k: int | None = None,
    field: PrimeField = DEFAULT_FIELD,
    layout: Layout | None = None,
    forget: ForgetSpec | None = None,
) -> ChunkShape:
    """The hashable key of a chunk shape: chunks with equal keys share one circuit structure and keys."""
    return ChunkShape(
        blocks=blocks,
        block_size=block_size,
        level=level,
        spec=spec,
        lanes=lanes,
        k=k,
        field=field,
        layout=layout,
        forget=forget,
    )


def blocks_to_fill(
    k: int,
    *,
    block_size: int,
    level: Level,
    spec: FixedPointSpec,
    lanes: int | None = None,
    layout: Layout | None = None,
    field: PrimeField = DEFAULT_FIELD,
) -> int:
    """The most blocks a chunk whose circuit is exactly 2^k rows can hold (size chunks to fill 2^k:
    one row more than that costs a domain twice as large). Raises ValueError if one block needs more."""

    def shape(blocks: int) -> ChunkShape:
        return ChunkShape(
            blocks=blocks, block_size=block_size, level=level, spec=spec, lanes=lanes, field=field, layout=layout
        )

    one = shape(1)
    per_block = shape(2).used_rows - one.used_rows  # rows grow affinely with the blocks
    capacity = usable_rows(k, one.max_rotations)
    blocks = max(1, (capacity - one.used_rows) // per_block + 1)
    while blocks > 1 and shape(blocks).used_rows > capacity:
        blocks -= 1
    needed = build_chunk_circuit(shape(blocks)).cs.k
    if needed > k:
        raise ValueError(
            f"{blocks} block(s) of B={block_size} at level {level} already need k = {needed} > {k} "
            f"(range table of 2^{shape(blocks).limb_bits} rows)"
        )
    return blocks


# ------------------------------------------------------------------------------------------ the circuit


@dataclasses.dataclass(frozen=True)
class ChunkCircuit:
    """The structure of one chunk circuit and the chip configs that know its columns.

    Classic layout: ``removal``, ``update`` (both levels), ``rescale``, ``residual``, ``mac`` (level F).
    Compact layout: ``rows`` (both levels) and ``diagonal`` (level F). The others are ``None``.
    """

    shape: ChunkShape
    cs: ConstraintSystem
    q_fin: Column
    removal: removal_chip.RemovalConfig | None = None
    update: update_chip.UpdateConfig | None = None
    rescale: rescale_chip.RescaleConfig | None = None
    residual: residual_chip.ResidualConfig | None = None
    mac: mac_chip.MacConfig | None = None
    rows: weight_rows_chip.WeightRowsConfig | None = None
    diagonal: diagonal_chip.DiagonalMacConfig | None = None
    forget: forget_chip.ForgetRowsConfig | None = None

    def column(self, name: str) -> Column:
        return self.cs.column(name)


@functools.lru_cache(maxsize=32)
def build_chunk_circuit(shape: ChunkShape) -> ChunkCircuit:
    """The circuit of ``shape`` without any witness (what keygen needs). Cached; arrays are read-only.

    Refuses (:class:`~circuit_compiler.fixedpoint.FieldOverflowError`) a spec whose intermediates could
    wrap the field, and block sizes for which rounding ỹ could fail the residual bound.
    """
    report = check_bounds(shape.checked_spec, block_size=shape.block_size, field=shape.field)
    if shape.level == "F":
        shape.spec.validate_block_size(shape.block_size)
    build = _build_compact if shape.layout == "compact" else _build_classic
    builder, configs = build(shape)
    builder.reserve_rows(shape.used_rows)
    builder.metadata.update(
        circuit="obs_chunk",
        shape=shape.to_dict(),
        # what the statement must determine (the audit's compensated mutations try to move it): at level F
        # θ' is a function of θ, G and the mask; at level R any in-range Δ is allowed
        prover_chosen_columns=["theta_new"] if shape.level == "F" else [],
        layout={
            "name": shape.layout,
            "finalization_rows": [shape.first_row, shape.first_row + shape.weights],
            "mac_rows": [shape.first_row, shape.first_row + shape.mac_rows],
            "salt_rows": {name: list(shape.salt_rows(name)) for name in shape.committed_names()},
            "limb_bits": shape.limb_bits,
            "offsets": {"theta": shape.theta_offset, "g": shape.g_offset},
            "delta_bits": shape.delta_bits,
        },
        bounds=report.to_dict(),
    )
    return ChunkCircuit(shape=shape, cs=builder.build(k=shape.k), **configs)


def _circuit_name(shape: ChunkShape) -> str:
    lanes = f"_L{shape.lanes}" if shape.level == "F" else ""
    layout = "_classic" if shape.layout == "classic" else ""
    forget = f"_U{shape.forget.directions}" if shape.forget is not None else ""
    return f"obs_chunk_{shape.level}_nb{shape.blocks}_B{shape.block_size}{lanes}{layout}{forget}"


def _build_compact(shape: ChunkShape) -> tuple[CircuitBuilder, dict[str, Any]]:
    """One row per weight: G's cyclic lanes, ỹ and the shared limbs on the same rows (docs/circuit.md)."""
    spec, B = shape.spec, shape.block_size
    b = CircuitBuilder(_circuit_name(shape))
    theta = b.committed("theta")
    theta_new = b.committed("theta_new")
    g_lanes = tuple(b.committed(name) for name in shape.g_names())
    mask = b.instance("mask")
    touched = b.instance("touched") if shape.level == "R" else None
    q_fin = b.selector("q_fin")
    diagonal = forget = None
    if shape.level == "F":
        diagonal = diagonal_chip.configure(b, block_size=B, g=g_lanes, g_offset=shape.g_offset)
        if shape.forget is not None:
            forget = forget_chip.configure(
                b,
                spec=shape.forget,
                theta=theta,
                theta_new=theta_new,
                first=diagonal.first,
                limb_bits=shape.limb_bits,
                selector=q_fin,
                outside=diagonal.q_outside,
            )
        rows = weight_rows_chip.configure(
            b,
            theta=theta,
            theta_new=theta_new,
            mask=mask,
            high_bits=shape.high_bits,
            limb_bits=shape.limb_bits,
            delta_bits=shape.delta_bits,
            theta_offset=shape.theta_offset,
            selector=q_fin,
            product=diagonal.product(),
            y=diagonal.y,
            shift=spec.s,
            y_extra=None if forget is None else forget.extra(),
        )
        diagonal.layout(b, blocks=shape.blocks, offset=shape.first_row)
    else:
        rows = weight_rows_chip.configure(
            b,
            theta=theta,
            theta_new=theta_new,
            mask=mask,
            high_bits=shape.high_bits,
            limb_bits=shape.limb_bits,
            theta_offset=shape.theta_offset,
            selector=q_fin,
            touched=touched,
        )
    b.enable(q_fin, shape.first_row + np.arange(shape.weights))
    return b, {"q_fin": q_fin, "rows": rows, "diagonal": diagonal, "forget": forget}


def _build_classic(shape: ChunkShape) -> tuple[CircuitBuilder, dict[str, Any]]:
    """Lane/accumulator MAC region copied into a finalization region (docs/circuit.md, classic layout)."""
    spec, B, nb = shape.spec, shape.block_size, shape.blocks
    t = shape.limb_bits
    b = CircuitBuilder(_circuit_name(shape))

    theta = b.committed("theta")
    theta_new = b.committed("theta_new")
    g_lanes = tuple(b.committed(name) for name in shape.g_names())
    mask = b.instance("mask")
    touched = b.instance("touched") if shape.level == "R" else None
    q_fin = b.selector("q_fin")
    delta = b.advice("delta")

    removal = removal_chip.configure(b, theta_new=theta_new, mask=mask, selector=q_fin)
    update = update_chip.configure(
        b,
        theta=theta,
        theta_new=theta_new,
        delta=delta,
        mask=mask,
        delta_bits=spec.w_delta,
        limb_bits=t,
        selector=q_fin,
        touched=touched,
    )
    rescale = residual = mac = None
    if shape.level == "F":
        y = b.advice("y")
        rem = b.advice("rem")
        z = b.advice("z")
        rescale = rescale_chip.configure(
            b,
            name="rescale",
            numerator=-z.cur(),
            quotient=delta,
            remainder=rem,
            shift=spec.s,
            limb_bits=t,
            selector=q_fin,
            condition=1 - mask.cur(),
        )
        residual = residual_chip.configure(
            b, z=z, theta=theta, rem=rem, mask=mask, y=y, shift=spec.s, y_bits=spec.w_y, limb_bits=t, selector=q_fin
        )
        mac = mac_chip.configure(b, block_size=B, lanes=shape.lanes, g=g_lanes)
        mac.layout(b, blocks=nb, y=y, z=z)

    b.enable(q_fin, np.arange(shape.weights))
    return b, {
        "q_fin": q_fin,
        "removal": removal,
        "update": update,
        "rescale": rescale,
        "residual": residual,
        "mac": mac,
    }


# ----------------------------------------------------------------------------------------- the values


def draw_salts(shape: ChunkShape, *, rng: np.random.Generator | None = None) -> dict[str, int]:
    """One uniformly random salt seed per committed column of ``shape`` (a field element).

    Each seed expands to the column's :attr:`ChunkShape.salt_counts` salt cells
    (:func:`~circuit_compiler.hiding.expand_salts`). ``rng=None`` uses the OS CSPRNG (:mod:`secrets`) --
    what a real client must do; a numpy Generator makes tests reproducible. The client keeps the salts of
    θ (and G) with its model: the proof must use the salts of the registered commitments (or of their
    re-randomization, :mod:`.rerandomize`), and θ' 's salt becomes θ's at the next request.
    """
    return {name: draw_salt_seed(shape.field.modulus, rng) for name in shape.committed_names()}


def _column(rows: int, values: np.ndarray, *, start: int = 0) -> np.ndarray:
    """A length-``rows`` column with ``values`` placed at ``[start, start + len)`` and zeros elsewhere."""
    values = np.asarray(values).ravel()
    out = np.zeros(rows, dtype=object if values.dtype == object else np.int64)
    out[start : start + len(values)] = values
    return out


def committed_columns(
    shape: ChunkShape,
    *,
    salts: Mapping[str, int | Sequence[int]],
    theta: np.ndarray | None = None,
    theta_new: np.ndarray | None = None,
    G: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """The committed columns (canonical field ints, object arrays) that are given, each with its salt cells.

    ``salts`` maps each column name to a salt seed (an int, expanded) or to the list of its
    :attr:`ChunkShape.salt_counts` salt cells.

    theta, theta_new: (nb, B) int64; G: (nb, B, B) int64 (level F). This is exactly what
    :func:`lower_chunk` puts in the assignment, so a commitment made from it at personalization time
    matches the proof's committed instance. In the compact layout the values are offset-encoded
    (``θ + 2^(w_w-1)``, G's cyclic lanes ``+ 2^f_g``; :attr:`ChunkShape.theta_offset`, ``g_offset``).
    """
    cs = build_chunk_circuit(shape).cs
    field = shape.field
    out: dict[str, np.ndarray] = {}

    def with_salt(name: str, values: np.ndarray) -> np.ndarray:
        if name not in salts:
            raise KeyError(f"no salt for committed column {name!r} (have {sorted(salts)})")
        rows = shape.salt_rows(name)
        cells = expand_salts(salts[name], name, len(rows), field.modulus)
        column = field.encode_array(_column(cs.rows, values, start=shape.first_row))
        column[rows.start : rows.stop] = cells
        return column

    for name, values in (("theta", theta), ("theta_new", theta_new)):
        if values is not None:
            values = _check_vector(values, shape, name)
            if shape.layout == "compact":
                values = weight_rows_chip.encode_weights(values.ravel(), shape.theta_offset)
            out[name] = with_salt(name, values)
    if G is not None:
        if shape.level != "F":
            raise ValueError("G is committed only at level F")
        G = _check_G(G, shape)
        circuit = build_chunk_circuit(shape)
        if shape.layout == "compact":
            lanes = circuit.diagonal.lanes(G)
        else:
            nb, B, L = shape.blocks, shape.block_size, shape.lanes
            by_lane = G.reshape(nb, B // L, L, B).transpose(0, 1, 3, 2).reshape(-1, L)
            lanes = {column.name: by_lane[:, l] for l, column in enumerate(circuit.mac.g)}
        for name, values in lanes.items():
            out[name] = with_salt(name, values)
    return out


def chunk_instances(shape: ChunkShape, mask: np.ndarray, directions: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The public instance columns of a chunk from its mask (nb, B) and, with forget directions, their
    quantized values ``directions`` (nb, r, B) (|U_q| ≤ 2^f_u): what the verifier recomputes."""
    mask = _check_mask(mask, shape)
    rows = build_chunk_circuit(shape).cs.rows
    out = {"mask": _column(rows, mask.astype(np.int64), start=shape.first_row)}
    if shape.forget is not None:
        U_off = forget_chip.off_mask_directions(_check_directions(directions, shape), mask)
        for a in range(shape.forget.directions):
            out[f"u_{a}"] = _column(rows, U_off[:, a, :], start=shape.first_row)
    elif directions is not None and np.asarray(directions).size:
        raise ValueError("forget directions given for a chunk shape without them (ChunkShape.forget)")
    if shape.level == "R":
        out["touched"] = _column(rows, touched_rows(mask).astype(np.int64), start=shape.first_row)
    return out


def lower_chunk(
    theta_q: np.ndarray,
    theta_new_q: np.ndarray,
    G_q: np.ndarray | None,
    mask: np.ndarray,
    y_q: np.ndarray | None,
    delta_q: np.ndarray | None,
    rem: np.ndarray | None,
    *,
    spec: FixedPointSpec,
    level: Level,
    lanes: int | None = None,
    salts: Mapping[str, int | Sequence[int]],
    k: int | None = None,
    field: PrimeField = DEFAULT_FIELD,
    layout: Layout | None = None,
    forget: ForgetSpec | None = None,
    U_q: np.ndarray | None = None,
    mu_q: np.ndarray | None = None,
) -> tuple[ConstraintSystem, Assignment]:
    """Lower one chunk: ``(ConstraintSystem, Assignment)``.

    All per-weight arrays are (nb, B) int64 (``mask`` bool or 0/1): θ, θ', ỹ, Δ, rem; ``G_q`` is
    (nb, B, B) int64 with |G| ≤ 2^f_g (and symmetric, in the compact layout). ``G_q``, ``y_q`` and ``rem``
    are needed at level F and ignored at level R. ``salts`` maps every committed column name (``theta``,
    ``theta_new``, ``g_l``) to a salt seed (:func:`draw_salts`) or its list of salt cells. ``layout`` as in
    :class:`ChunkShape`. ``forget`` with ``U_q`` (nb, r, B) and ``mu_q`` (nb, r): the forget-aware rows
    (:mod:`.chips.forget`); then ``y_q`` is ỹ (on the mask) and the MAC multiplies ``v = ỹ + (U_q ⊙ (1 - m))ᵀ μ``.

    Values are placed as given -- a dishonest witness lowers fine and fails the mock prover -- except
    that values outside the widths the circuit's soundness assumes are refused with a clear error:
    range-checked cells (Δ, ỹ, rem) have no limbs then, and θ, θ', G must fit the bound analysis.
    """
    theta_q = np.asarray(theta_q)
    if theta_q.ndim != 2:
        raise ValueError(f"theta_q must be (blocks, B), got shape {theta_q.shape}")
    shape = ChunkShape(
        blocks=theta_q.shape[0],
        block_size=theta_q.shape[1],
        level=level,
        spec=spec,
        lanes=lanes,
        k=k,
        field=field,
        layout=layout,
        forget=forget,
    )
    circuit = build_chunk_circuit(shape)
    cs = circuit.cs
    rows = cs.rows

    theta_q = _check_vector(theta_q, shape, "theta_q")
    theta_new_q = _check_vector(theta_new_q, shape, "theta_new_q")
    delta_q = _check_vector(delta_q, shape, "delta_q")
    check_fits(theta_q, spec.w_w, name="theta_q")
    _check_magnitude(theta_new_q, (1 << (spec.w_w - 1)) + (1 << (spec.w_delta - 1)), "theta_new_q")
    if level == "F":
        if G_q is None or y_q is None or rem is None:
            raise ValueError("level F needs G_q, y_q and rem")
        G_q = _check_G(G_q, shape)
        y_q = _check_vector(y_q, shape, "y_q")
        rem = _check_vector(rem, shape, "rem")

    committed = committed_columns(
        shape, salts=salts, theta=theta_q, theta_new=theta_new_q, G=G_q if level == "F" else None
    )
    extra = set(salts) - set(shape.committed_names())
    if extra:
        raise KeyError(f"salts for unknown committed columns {sorted(extra)} (level {level})")
    instance = chunk_instances(shape, mask, U_q if shape.forget is not None else None)
    if shape.layout == "compact":
        advice = _compact_advice(circuit, mask=_check_mask(mask, shape), delta=delta_q, y=y_q, rem=rem)
        if shape.forget is not None:
            advice.update(
                _forget_advice(
                    circuit, mask=_check_mask(mask, shape), U_q=U_q, mu_q=mu_q, y=y_q, delta_full=theta_new_q - theta_q
                )
            )
    else:
        advice = _classic_advice(circuit, G=G_q, delta=delta_q, y=y_q, rem=rem)
    advice = {name: _column(rows, values, start=shape.first_row) for name, values in advice.items()}
    for name, values in advice.items():
        if values.dtype == object:
            advice[name] = field.reduce_array(values)
    missing = {c.name for c in cs.columns if c.kind.value == "advice"} - set(advice)
    assert not missing, f"lowering left advice columns unassigned: {sorted(missing)}"
    return cs, Assignment(advice=advice, instance=instance, committed=committed)


def _compact_advice(
    circuit: ChunkCircuit, *, mask: np.ndarray, delta: np.ndarray, y: np.ndarray | None, rem: np.ndarray | None
) -> dict[str, np.ndarray]:
    """ỹ (level F) and the shared limbs of every weight row; values over the weight rows only."""
    out = circuit.rows.assign(
        mask=mask.ravel(),
        delta=delta.ravel(),
        y=None if y is None else y.ravel(),
        rem=None if rem is None else rem.ravel(),
    )
    if circuit.diagonal is not None:
        out[circuit.diagonal.y.name] = y.ravel()
    return out


def _forget_advice(
    circuit: ChunkCircuit,
    *,
    mask: np.ndarray,
    U_q: np.ndarray | None,
    mu_q: np.ndarray | None,
    y: np.ndarray,
    delta_full: np.ndarray,
) -> dict[str, np.ndarray]:
    """The MAC's vector ``v = ỹ + U_offᵀ μ`` (replacing ỹ in column y) and the forget rows' advice."""
    shape = circuit.shape
    U_off = forget_chip.off_mask_directions(_check_directions(U_q, shape), mask)
    if mu_q is None:
        raise ValueError("forget-aware lowering needs mu_q (blocks, r)")
    mu_q = np.asarray(mu_q)
    if mu_q.shape != U_off.shape[:2] or not np.issubdtype(mu_q.dtype, np.integer):
        raise ValueError(
            f"mu_q must be an integer array of shape (blocks, r) = {U_off.shape[:2]}, got {mu_q.shape} {mu_q.dtype}"
        )
    v = y.astype(np.int64) + np.einsum("nrb,nr->nb", U_off, mu_q.astype(np.int64))
    out = {circuit.diagonal.y.name: v.ravel()}
    out.update(circuit.forget.assign(U_off=U_off, mu=mu_q.astype(np.int64), delta_full=delta_full))
    return out


def _classic_advice(
    circuit: ChunkCircuit, *, G: np.ndarray | None, delta: np.ndarray, y: np.ndarray | None, rem: np.ndarray | None
) -> dict[str, np.ndarray]:
    """Finalization cells (Δ, ỹ, rem, z and their limbs) and the MAC region (y_mac, accumulators)."""
    out = {"delta": delta.ravel(), **circuit.update.assign(delta.ravel())}
    if circuit.shape.level == "F":
        _, mac_advice, z = circuit.mac.assign(G, y)  # its G lanes are committed_columns' (with salts)
        out.update({"y": y.ravel(), "rem": rem.ravel(), "z": z})
        out.update(circuit.residual.assign(y.ravel()))
        out.update(circuit.rescale.remainder_range.assign(rem.ravel()))
        out.update(mac_advice)
    return out


# --------------------------------------------------------------------------------------------- chunking


@dataclasses.dataclass(frozen=True)
class ChunkWitness:
    """One chunk of a layer witness: (nb, B) arrays (``G_q`` (nb, B, B)), zero-padded past ``valid_blocks``.

    ``G_q``, ``y_q``, ``rem`` are ``None`` for a removal-only (level R) witness.
    """

    index: int  # chunk number within the layer
    first_block: int  # layer block index of row block 0
    valid_blocks: int  # blocks that hold layer data; the rest are padding (mask 0, all values 0)
    theta_q: np.ndarray
    theta_new_q: np.ndarray
    G_q: np.ndarray | None
    mask: np.ndarray
    y_q: np.ndarray | None
    delta_q: np.ndarray
    rem: np.ndarray | None
    U_q: np.ndarray | None = None  # (nb, r, B) public forget directions (forget-aware witness)
    mu_q: np.ndarray | None = None  # (nb, r)

    @property
    def blocks(self) -> int:
        return self.theta_q.shape[0]

    @property
    def block_size(self) -> int:
        return self.theta_q.shape[1]

    def lowering_inputs(self) -> tuple:
        """``(theta_q, theta_new_q, G_q, mask, y_q, delta_q, rem)`` -- the positional arguments of :func:`lower_chunk`."""
        return (self.theta_q, self.theta_new_q, self.G_q, self.mask, self.y_q, self.delta_q, self.rem)

    def forget_inputs(self) -> dict[str, np.ndarray]:
        """``U_q`` and ``mu_q`` as keyword arguments of :func:`lower_chunk` (empty for a plain witness)."""
        return {} if self.U_q is None else {"U_q": self.U_q, "mu_q": self.mu_q}


def chunk_layer(witness: LayerWitness, *, blocks_per_chunk: int) -> list[ChunkWitness]:
    """Cut a layer witness (:class:`~circuit_compiler.witness.LayerWitness`, blocked arrays (n_blocks, B))
    into chunks of ``blocks_per_chunk`` blocks; the last chunk is zero-padded so all share one shape.

    Padding blocks have mask 0, θ = θ' = Δ = ỹ = rem = 0 and G = 0: an honest witness of the OBS relation.
    """
    n_blocks = witness.theta_q.shape[0]
    names = ("theta_q", "theta_new_q", "G_q", "mask", "y_q", "delta_q", "rem", "U_q", "mu_q")
    parts = {
        name: split_blocks(a, blocks_per_chunk) for name in names if (a := getattr(witness, name, None)) is not None
    }
    return [
        ChunkWitness(
            index=index,
            first_block=first,
            valid_blocks=min(blocks_per_chunk, n_blocks - first),
            **{name: parts[name][index] if name in parts else None for name in names},
        )
        for index, first in enumerate(range(0, n_blocks, blocks_per_chunk))
    ]


def split_blocks(blocked: np.ndarray, blocks_per_chunk: int) -> list[np.ndarray]:
    """A blocked array (n_blocks, ...) cut into chunks of ``blocks_per_chunk`` blocks, the last zero-padded
    (a zero block is an honest, fully unmasked block: every chunk then has the one shape its keys fit)."""
    if blocks_per_chunk < 1:
        raise ValueError(f"blocks_per_chunk must be >= 1, got {blocks_per_chunk}")
    out = []
    for first in range(0, blocked.shape[0], blocks_per_chunk):
        part = blocked[first : first + blocks_per_chunk]
        if part.shape[0] < blocks_per_chunk:
            pad = np.zeros((blocks_per_chunk - part.shape[0],) + part.shape[1:], dtype=part.dtype)
            part = np.concatenate([part, pad])
        out.append(np.ascontiguousarray(part))
    return out


# ------------------------------------------------------------------------------------------- validation


def _check_vector(values: np.ndarray | None, shape: ChunkShape, name: str) -> np.ndarray:
    if values is None:
        raise ValueError(f"{name} is required")
    values = np.asarray(values)
    expected = (shape.blocks, shape.block_size)
    if values.shape != expected:
        raise ValueError(f"{name} has shape {values.shape}, expected (blocks, B) = {expected}")
    if not np.issubdtype(values.dtype, np.integer):
        raise TypeError(f"{name} must be an integer (quantized) array, got dtype {values.dtype}")
    return values.astype(np.int64)


def _check_directions(directions: np.ndarray | None, shape: ChunkShape) -> np.ndarray:
    """Quantized forget directions (nb, r, B) int64 with |U_q| ≤ 2^f_u, for a shape with forget rows."""
    assert shape.forget is not None
    r = shape.forget.directions
    if directions is None:
        raise ValueError(f"this chunk shape proves {r} forget direction(s): the directions U_q are required")
    directions = np.asarray(directions)
    expected = (shape.blocks, r, shape.block_size)
    if directions.shape != expected:
        raise ValueError(f"forget directions U_q have shape {directions.shape}, expected (blocks, r, B) = {expected}")
    if not np.issubdtype(directions.dtype, np.integer):
        raise TypeError(f"forget directions U_q must be quantized integers, got dtype {directions.dtype}")
    if directions.size and int(np.abs(directions).max()) > (1 << shape.forget.f_u):
        raise QuantizationError(f"forget directions U_q exceed 2^f_u = {1 << shape.forget.f_u} in magnitude")
    return directions.astype(np.int64)


def _check_mask(mask: np.ndarray, shape: ChunkShape) -> np.ndarray:
    mask = np.asarray(mask)
    expected = (shape.blocks, shape.block_size)
    if mask.shape != expected:
        raise ValueError(f"mask has shape {mask.shape}, but the chunk's weights are (blocks, B) = {expected}")
    return as_bool_mask(mask)


def _check_magnitude(values: np.ndarray, bound: int, name: str) -> None:
    """Refuse |values| > bound, naming the first offending (block, position)."""
    bad = np.abs(values) > bound
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise QuantizationError(
            f"{name}{list(idx)} = {int(values[idx])} exceeds the magnitude {bound} the bound analysis assumes "
            f"({int(bad.sum())} values out of range)"
        )


def _check_G(G: np.ndarray, shape: ChunkShape) -> np.ndarray:
    G = np.asarray(G)
    expected = (shape.blocks, shape.block_size, shape.block_size)
    if G.shape != expected:
        raise ValueError(f"G_q has shape {G.shape}, expected (blocks, B, B) = {expected}")
    if not np.issubdtype(G.dtype, np.integer):
        raise TypeError(f"G_q must be an integer (quantized) array, got dtype {G.dtype}")
    G = G.astype(np.int64)
    if G.size and int(np.max(np.abs(G))) > (1 << shape.spec.f_g):
        idx = np.unravel_index(int(np.argmax(np.abs(G))), G.shape)
        raise QuantizationError(
            f"G_q{list(map(int, idx))} = {int(G[idx])} exceeds 2^f_g = {1 << shape.spec.f_g} in magnitude "
            "(blocks must be normalized to max|G| = 1 before quantization)"
        )
    if shape.layout == "compact":
        asymmetric = G != np.swapaxes(G, 1, 2)
        if asymmetric.any():
            b, i, j = (int(v) for v in np.argwhere(asymmetric)[0])
            raise ValueError(
                f"G_q block {b} is not symmetric (G[{i}, {j}] = {int(G[b, i, j])}, G[{j}, {i}] = {int(G[b, j, i])}): "
                "the compact layout commits only the upper triangle of each block "
                "(quantize_fisher_blocks symmetrizes an inverse Fisher)"
            )
    return G
