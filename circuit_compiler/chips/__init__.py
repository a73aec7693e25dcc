"""Chips of the OBS chunk circuit, one per file, in the halo2 style.

A chip is a ``Config`` dataclass (its columns, selector and parameters), a ``configure(builder, ...)``
that allocates what the chip owns and registers its gates and lookups (every gate behind a selector),
and an ``assign`` that computes the values of the cells the chip derives. Structure and values stay
apart: the lowering places selectors and copies from the shape alone, so keys never see a witness.

* :mod:`.range_check` -- ``v + offset ∈ [0, 2^w)`` by t-bit limbs looked up in a ``[0, 2^t)`` table (a short
  top limb in its own table or a polynomial gate); limbs without a value cell (:func:`configure_limbs`).

Compact layout (one row per weight, no copy constraints):

* :mod:`.diagonal`    -- ``z = G ỹ`` from G's upper triangle stored cyclically, ⌊B/2⌋ + 1 committed lanes.
* :mod:`.weight_rows` -- removal, update, ỹ on the mask, solve residual and rescale over one row of limbs.

Classic layout (lane/accumulator MAC region copied into a finalization region):

* :mod:`.rescale`     -- floor division by 2^s with a range-checked remainder.
* :mod:`.mac`         -- multiply-accumulate rows, L lanes wide: ``z = G ỹ`` per block.
* :mod:`.residual`    -- the solve residual ``(Gỹ)_q - θ_q 2^s ∈ [-τ, τ)`` on masked rows; ỹ = 0 elsewhere.
* :mod:`.removal`     -- masked weights of the new model are exactly 0.
* :mod:`.update`      -- ``θ' = θ + Δ`` off the mask, Δ = 0 on it (and, at level R, outside touched blocks).

The semantic functions next to each chip (``floor_divide``, ``solve_remainder``, ``apply_update``, ...)
are what the client-side witness generator calls, so the witness and the gates share one definition.
"""

from .diagonal import DiagonalMacConfig
from .mac import MacConfig
from .range_check import LimbsConfig, RangeCheckConfig
from .removal import RemovalConfig
from .rescale import RescaleConfig
from .residual import ResidualConfig
from .update import UpdateConfig
from .weight_rows import WeightRowsConfig

__all__ = [
    "DiagonalMacConfig",
    "LimbsConfig",
    "MacConfig",
    "RangeCheckConfig",
    "RemovalConfig",
    "RescaleConfig",
    "ResidualConfig",
    "UpdateConfig",
    "WeightRowsConfig",
]
