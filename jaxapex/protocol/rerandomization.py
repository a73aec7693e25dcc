"""Per-request re-randomization of the registered commitments a chunk proof reuses (θ, and G at level F).

The client proves each chunk against C' = C + Σ r_j·[L_{s_j}(τ)]_1 (fresh salt cells) and sends C' with a
proof of knowledge of the shifts r_j bound to the request, layer and chunk
(:mod:`circuit_compiler.rerandomize`); the provider checks that proof against the registered C and then
verifies the chunk proof against C'. Without it, every request would open the same salted polynomials
again and the provider would accumulate linear relations among the hidden weights.

Bundle entry fields: ``theta`` (the registered θ commitment), ``rerandomized`` (column -> C' hex) and
``rerandomization`` (column -> proof).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

from circuit_compiler import backend
from circuit_compiler import rerandomize as rr

from . import chunks as ch
from .config import ProofConfig


def reused_columns(config: ProofConfig) -> tuple[str, ...]:
    """Registered columns a chunk proof opens: the old model θ and, at level F, the G lanes."""
    return ch.registered_names(config)


def fresh_salts(config: ProofConfig, registered: Mapping[str, int]) -> dict[str, int]:
    """``registered`` with new random salt seeds (OS CSPRNG) for every reused column."""
    p = ch.chunk_shape(config).field.modulus
    return {**registered, **{name: secrets.randbelow(p) for name in reused_columns(config)}}


def salt_rows(config: ProofConfig) -> dict[str, list[int]]:
    shape = ch.chunk_shape(config)
    return {name: list(shape.salt_rows(name)) for name in reused_columns(config)}


def _shifts(config: ProofConfig, registered_salts: Mapping[str, int], salts: Mapping[str, int]) -> dict[str, list[int]]:
    return rr.seed_shifts(ch.chunk_shape(config), reused_columns(config), registered_salts, salts)


def presented_commitments(
    srs: backend.Srs,
    config: ProofConfig,
    *,
    registered: Mapping[str, bytes],
    registered_salts: Mapping[str, int],
    salts: Mapping[str, int],
) -> dict[str, bytes]:
    """C' of every reused column whose registered commitment C the client holds (``registered``), for
    the chunk proven with ``salts``: what the prover may take as known instead of committing the column."""
    shifts = _shifts(config, registered_salts, salts)
    rows, k = salt_rows(config), ch.circuit_k(config)
    return {
        name: rr.rerandomized(srs, k, rows=rows[name], shifts=shifts[name], registered=registered[name])
        for name in reused_columns(config)
        if name in registered
    }


def prove_entry(
    srs: backend.Srs,
    config: ProofConfig,
    *,
    registered_salts: Mapping[str, int],
    salts: Mapping[str, int],
    presented: Mapping[str, bytes],
    request_id: str,
    layer: str,
    chunk: int,
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The bundle entry fields for one chunk proven with ``salts``, and the registered commitment of every
    reused column. ``presented``: the commitments the chunk proof binds (C', as the prover reports them)."""
    registered, proofs = rr.prove_columns(
        srs,
        ch.circuit_k(config),
        salt_rows=salt_rows(config),
        shifts=_shifts(config, registered_salts, salts),
        presented=presented,
        ctx=rr.context(request_id, layer, chunk),
    )
    entry = {
        "theta": registered["theta"].hex(),  # the registered θ commitment this proof builds on
        "rerandomized": {name: presented[name].hex() for name in reused_columns(config)},
        "rerandomization": {name: proof.to_json() for name, proof in proofs.items()},
    }
    return entry, registered


def check_entry(
    srs: backend.Srs,
    config: ProofConfig,
    *,
    registered: Mapping[str, str],
    entry: Mapping[str, Any],
    request_id: str,
    layer: str,
    chunk: int,
) -> dict[str, bytes]:
    """The commitments the chunk proof must verify against (C' per reused column), once their proofs of
    re-randomization check out against the ``registered`` ones; raises
    :class:`~circuit_compiler.rerandomize.RerandomizationError` naming the column otherwise."""
    presented, proofs = entry.get("rerandomized"), entry.get("rerandomization")
    if not isinstance(presented, dict) or not isinstance(proofs, dict):
        raise rr.RerandomizationError("entry lacks 'rerandomized' commitments or their 'rerandomization' proofs")
    names = reused_columns(config)
    try:
        presented_bytes = {name: bytes.fromhex(presented[name]) for name in names if name in presented}
    except (TypeError, ValueError) as err:
        raise rr.RerandomizationError(f"re-randomized commitment is not hex: {err}") from err
    rr.verify_columns(
        srs,
        ch.circuit_k(config),
        salt_rows=salt_rows(config),
        registered={name: bytes.fromhex(registered[name]) for name in names},
        presented=presented_bytes,
        proofs={name: rr.ColumnProof.from_json(proofs[name]) for name in names if name in proofs},
        ctx=rr.context(request_id, layer, chunk),
    )
    return presented_bytes
