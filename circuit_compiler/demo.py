"""Small demo circuits with honest witnesses, for inspection, audits, tests and benchmarks.

* ``obs`` / ``obs-r``: an OBS chunk circuit (docs/circuit.md) at level F / R, through the real pipeline
  (float layer, Fisher-inverse blocks and mask -> quantized witness -> lowering) -- small: 4 blocks of 16.
* ``rescale``: one floor-division chip (``n = d·2^s + r``, ``r`` range-checked by limbs) -- the smallest
  circuit that shows every kind of constraint; and two deliberately broken variants an audit must flag:
  ``rescale-no-range-check`` (the remainder is not range-checked, so ``d + 1, r - 2^s`` -- a remainder that
  wraps around p -- is accepted too) and ``rescale-no-selector`` (the division gate's "selector" is a constant-one
  column over every usable row, which is how Halo2 enforces a gate written without a selector).

:func:`demo_circuit` builds any of them by name (the names in :data:`DEMOS`).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np

from .builder import CircuitBuilder
from .chips import range_check, rescale
from .field import DEFAULT_FIELD, PrimeField
from .fixedpoint import FixedPointSpec
from .ir import Assignment, Column, ColumnKind, ConstraintSystem, usable_rows


class DemoCircuit(NamedTuple):
    cs: ConstraintSystem
    assignment: Assignment
    modulus: int


# ------------------------------------------------------------------------------------------ OBS chunk


def obs_layer_inputs(
    *,
    rows: int,
    cols: int,
    block_size: int,
    mask_fraction: float,
    seed: int,
    samples: int = 64,
    damp: float = 1e-2,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A small synthetic layer: float θ (rows, cols), Fisher-inverse blocks G (n_blocks, B, B) of
    ``F_b = damp·I + (1/m) Σ g gᵀ`` over ``samples`` random per-sample gradients, and a mask with
    ``mask_fraction`` of the weights (at least one per chunk of the demo) set."""
    rng = np.random.default_rng(seed)
    theta = rng.normal(0.0, 0.2, size=(rows, cols))
    n_blocks = theta.size // block_size
    grads = rng.normal(0.0, 1.0, size=(n_blocks, samples, block_size))
    fisher = damp * np.eye(block_size) + np.einsum("nmi,nmj->nij", grads, grads) / samples
    G = np.linalg.inv(fisher)
    G = (G + G.transpose(0, 2, 1)) / 2  # exactly symmetric, as a Cholesky-based inverse would be
    mask = rng.random(theta.shape) < mask_fraction
    mask.reshape(-1)[0] = True  # the first chunk always has work to prove
    return theta, G, mask


#: The demo chunk's fixed-point formats: pinned (12-bit range tables, 24/48-bit widths) so the circuit
#: the inspection tools and their tests show does not move when the library's defaults are retuned.
DEMO_SPEC = FixedPointSpec(s=24, w_delta=24, w_y=48, limb_bits=12)


def obs_circuit(
    *,
    level: str = "F",
    blocks: int = 4,
    block_size: int = 16,
    lanes: int = 4,
    mask_fraction: float = 0.1,
    seed: int = 0,
    spec: FixedPointSpec | None = None,
    field: PrimeField = DEFAULT_FIELD,
) -> DemoCircuit:
    """The first chunk (``blocks`` blocks of ``block_size``) of a synthetic two-chunk layer, through the
    real pipeline: float OBS inputs -> :func:`~circuit_compiler.witness.obs_witness` -> chunk ->
    :func:`~circuit_compiler.lowering.lower_chunk` at ``level`` ("F" or "R"), with seeded salts."""
    from .lowering import ChunkShape, chunk_layer, draw_salts, lower_chunk
    from .witness import obs_witness

    spec = spec if spec is not None else DEMO_SPEC
    weights = 2 * blocks * block_size
    cols = block_size
    theta, G, mask = obs_layer_inputs(
        rows=weights // cols, cols=cols, block_size=block_size, mask_fraction=mask_fraction, seed=seed
    )
    witness = obs_witness(theta, G, mask, spec=spec)
    chunk = chunk_layer(witness, blocks_per_chunk=blocks)[0]
    shape = ChunkShape(
        blocks=blocks, block_size=block_size, level=level, spec=spec, lanes=lanes if level == "F" else None, field=field
    )
    salts = draw_salts(shape, rng=np.random.default_rng(seed + 1))
    cs, assignment = lower_chunk(
        *chunk.lowering_inputs(),
        spec=spec,
        level=level,
        lanes=lanes if level == "F" else None,
        salts=salts,
        field=field,
    )
    return DemoCircuit(cs, assignment, field.modulus)


# ---------------------------------------------------------------------------------------- rescale chip


def rescale_circuit(
    *,
    rows: int = 48,
    shift: int = 8,
    limb_bits: int = 4,
    quotient_bits: int = 16,
    broken: str | None = None,
    seed: int = 0,
    field: PrimeField = DEFAULT_FIELD,
) -> DemoCircuit:
    """A floor division ``d = floor(n / 2^s)`` of public numerators ``n`` (instance), one per row.

    Both outputs are range-checked: the remainder ``r ∈ [0, 2^s)`` by the rescale chip and the quotient as
    a signed ``quotient_bits``-bit value (without it, ``d = (n - r) / 2^s`` mod p exists for *every* r).
    ``broken``: ``None`` (sound), ``"no_range_check"`` (the remainder's range check is left out) or
    ``"no_selector"`` (see the module docstring). Layout (row r)::

        | n (instance) | d | r | r_limb_0 .. | d_limb_0 .. | q_div |
    """
    if broken not in (None, "no_range_check", "no_selector"):
        raise ValueError(f"rescale_circuit: unknown broken variant {broken!r} (no_range_check, no_selector)")
    b = CircuitBuilder(f"rescale{'' if broken is None else '-' + broken.replace('_', '-')}")
    numerator = b.instance("n")
    quotient = b.advice("d")
    remainder = b.advice("r")
    q_div = b.selector("q_div")
    if broken == "no_range_check":
        # The chip's gate alone: nothing bounds r, so the division is not unique modulo p.
        b.gate("rescale", q_div, [("rescale", quotient.cur() * (1 << shift) + remainder.cur() - numerator.cur())])
        remainder_range = None
    else:
        remainder_range = rescale.configure(
            b,
            name="rescale",
            numerator=numerator.cur(),
            quotient=quotient,
            remainder=remainder,
            shift=shift,
            limb_bits=limb_bits,
            selector=q_div,
        ).remainder_range
    quotient_range = range_check.configure(
        b, name="d", value=quotient.cur(), bits=quotient_bits, limb_bits=limb_bits, signed=True, selector=q_div
    )
    b.enable(q_div, np.arange(rows))
    b.metadata.update({"demo": "rescale", "shift": shift, "limb_bits": limb_bits, "broken": broken})
    cs = b.build()
    if broken == "no_selector":
        # Halo2 enforces a gate written without a selector on every usable row; in the IR that is a
        # constant-one selector over [0, usable_rows). Only the division gate loses its selector.
        q_always = Column(ColumnKind.SELECTOR, len(cs.columns_of(ColumnKind.SELECTOR)), "q_always")
        always_on = np.ones(usable_rows(cs.k, cs.max_advice_queries()), dtype=np.int64)
        gates = tuple(dataclasses.replace(g, selector=q_always) if g.name == "rescale" else g for g in cs.gates)
        cs = dataclasses.replace(
            cs, columns=cs.columns + (q_always,), gates=gates, fixed={**cs.fixed, q_always.name: always_on}
        )

    rng = np.random.default_rng(seed)
    bound = 1 << (quotient_bits - 1 + shift)
    n_values = rng.integers(-bound, bound, size=rows, dtype=np.int64)
    d_values, r_values = rescale.floor_divide(n_values, shift)
    advice = {quotient.name: d_values, remainder.name: r_values, **quotient_range.assign(d_values)}
    if remainder_range is not None:
        advice.update(remainder_range.assign(r_values))
    return DemoCircuit(cs, Assignment(advice=advice, instance={numerator.name: n_values}, committed={}), field.modulus)


# ---------------------------------------------------------------------------------------------- registry

DEMOS = {
    "obs": lambda **kw: obs_circuit(**kw),
    "obs-r": lambda **kw: obs_circuit(level="R", **kw),
    "rescale": lambda **kw: rescale_circuit(**kw),
    "rescale-no-range-check": lambda **kw: rescale_circuit(broken="no_range_check", **kw),
    "rescale-no-selector": lambda **kw: rescale_circuit(broken="no_selector", **kw),
}


def demo_circuit(name: str = "obs", **options) -> DemoCircuit:
    """Build the demo called ``name`` (see :data:`DEMOS`) with its options."""
    if name not in DEMOS:
        raise KeyError(f"unknown demo circuit {name!r}; known: {sorted(DEMOS)}")
    return DEMOS[name](**options)


__all__ = ["DEMOS", "DemoCircuit", "demo_circuit", "obs_circuit", "obs_layer_inputs", "rescale_circuit"]
