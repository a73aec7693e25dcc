"""Per-proof re-randomization of reused commitments, with a Fiat–Shamir Schnorr proof over BLS12-381 G1.

A registered commitment C of a committed column (G at level F in every request; θ as the new model, then
as the old one) would otherwise be opened in several proofs against one set of salt cells, and the
evaluations would pile up. So for each proof the client moves the salt cells s_j by random shifts r_j and
presents

    C' = C + Σ_j r_j·P_j,        P_j = [L_{s_j}(τ)]_1 (the SRS's Lagrange point of salt row s_j),

proving the chunk against C'. Alongside it sends a non-interactive proof of knowledge of the r_j (a
multi-base Schnorr proof): nonces k_j, A = Σ k_j·P_j, challenge c = H(context, rows, C, C', A) and
responses z_j = k_j + c·r_j; the verifier checks Σ z_j·P_j = A + c·(C' − C). Since no constraint reads a
salt row, C' commits to the same values as C in every row the proof talks about (a C' that moves any other
row would need the discrete logarithm of another Lagrange point). The context binds the proof to the
request id, layer, chunk and column, so it cannot be replayed elsewhere.

Points travel as 48-byte compressed G1 (the backend's encoding); the group arithmetic is one
multi-scalar multiplication per step in the Rust extension (blst, :func:`.backend.g1_msm`), which the tests
cross-check against py_ecc.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from . import backend
from .hiding import expand_salts

curve_order = backend.BLS12_381_SCALAR_MODULUS

DOMAIN = b"jaxapex/rerandomize/v1"


class RerandomizationError(ValueError):
    """A re-randomized commitment is not proven to commit to the registered values (names the column)."""


def _msm(points: Sequence[bytes], scalars: Sequence[int]) -> bytes:
    for p in points:
        if len(p) != backend.COMMITMENT_BYTES:
            raise RerandomizationError(f"a G1 point is {backend.COMMITMENT_BYTES} bytes, got {len(p)}")
    try:
        return backend.g1_msm(points, scalars)
    except backend.BackendError as err:
        raise RerandomizationError(f"not a compressed BLS12-381 G1 point: {err}") from err


def salt_basis(srs: Any, k: int, rows: Sequence[int]) -> list[bytes]:
    """[L_s(τ)]_1 for each salt row s of the 2^k domain: the commitment of the unit column at s."""
    return list(_salt_basis(srs, int(k), tuple(int(r) for r in rows)))


@functools.lru_cache(maxsize=256)
def _salt_basis(srs: Any, k: int, rows: tuple[int, ...]) -> tuple[bytes, ...]:
    return tuple(backend.lagrange_points(srs, k, rows))


def context(request_id: str, layer: str, chunk: int) -> bytes:
    """What a re-randomization proof is bound to: one chunk of one request."""
    return b"\x00".join([DOMAIN, request_id.encode(), layer.encode(), str(int(chunk)).encode()])


def salt_shifts(old_cells: Sequence[int], new_cells: Sequence[int], modulus: int = curve_order) -> list[int]:
    """The shifts r_j that take the registered salt cells to the ones of this proof."""
    if len(old_cells) != len(new_cells):
        raise ValueError(f"{len(old_cells)} registered salt cells, {len(new_cells)} new ones")
    return [(int(b) - int(a)) % modulus for a, b in zip(old_cells, new_cells)]


def seed_shifts(
    shape: Any, names: Sequence[str], registered_salts: Mapping[str, int], salts: Mapping[str, int]
) -> dict[str, list[int]]:
    """Per column of ``names``: the shifts r_j from the salt cells its registered seed expands to (in
    ``shape``, a :class:`~.lowering.ChunkShape`) to those of this proof's seed."""
    p = shape.field.modulus
    out = {}
    for name in names:
        count = shape.salt_counts[name]
        out[name] = salt_shifts(
            expand_salts(registered_salts[name], name, count, p), expand_salts(salts[name], name, count, p), p
        )
    return out


def rerandomized(srs: Any, k: int, *, rows: Sequence[int], shifts: Sequence[int], registered: bytes) -> bytes:
    """C' = C + Σ_j r_j·P_j from the registered C alone: the commitment of the column with its salt cells
    moved by ``shifts`` (a few point operations, where committing the column again is a domain-sized MSM)."""
    if len(rows) != len(shifts):
        raise ValueError(f"{len(rows)} salt rows, {len(shifts)} shifts")
    return _msm([registered, *salt_basis(srs, k, rows)], [1, *(int(r) % curve_order for r in shifts)])


def _challenge(ctx: bytes, name: str, rows: Sequence[int], registered: bytes, presented: bytes, nonce: bytes) -> int:
    h = hashlib.sha512()
    for part in (ctx, name.encode(), ",".join(map(str, rows)).encode(), registered, presented, nonce):
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return int.from_bytes(h.digest(), "little") % curve_order


@dataclasses.dataclass(frozen=True)
class ColumnProof:
    """Schnorr proof for one column: the nonce commitment A and the responses z_j (one per salt row)."""

    nonce: bytes
    responses: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {"nonce": self.nonce.hex(), "responses": [str(z) for z in self.responses]}

    @classmethod
    def from_json(cls, data: Any) -> ColumnProof:
        try:
            return cls(nonce=bytes.fromhex(data["nonce"]), responses=tuple(int(z) for z in data["responses"]))
        except (KeyError, TypeError, ValueError) as err:
            raise RerandomizationError(f"malformed re-randomization proof: {err!r}") from err


def prove_column(
    srs: Any,
    k: int,
    *,
    name: str,
    rows: Sequence[int],
    shifts: Sequence[int],
    presented: bytes,
    ctx: bytes,
) -> tuple[bytes, ColumnProof]:
    """The registered commitment C = C' − Σ r_j P_j and the proof of knowledge of the shifts r_j.

    ``presented`` is C' (the commitment of the column with the shifted salt cells, as the chunk proof binds
    it); ``shifts`` the r_j. Nonces come from the OS CSPRNG.
    """
    if len(rows) != len(shifts):
        raise ValueError(f"column {name!r}: {len(rows)} salt rows, {len(shifts)} shifts")
    bases = salt_basis(srs, k, rows)
    registered = _msm([presented, *bases], [1, *(-int(r) for r in shifts)])
    nonces = [secrets.randbelow(curve_order) for _ in rows]
    nonce = _msm(bases, nonces)
    c = _challenge(ctx, name, rows, registered, presented, nonce)
    responses = tuple((kj + c * int(rj)) % curve_order for kj, rj in zip(nonces, shifts))
    return registered, ColumnProof(nonce=nonce, responses=responses)


def verify_column(
    srs: Any,
    k: int,
    *,
    name: str,
    rows: Sequence[int],
    registered: bytes,
    presented: bytes,
    proof: ColumnProof,
    ctx: bytes,
) -> None:
    """Raise :class:`RerandomizationError` unless ``proof`` shows C' − C = Σ r_j·P_j over the salt rows."""
    if len(proof.responses) != len(rows):
        raise RerandomizationError(f"column {name!r}: {len(proof.responses)} responses for {len(rows)} salt rows")
    if any(not 0 <= z < curve_order for z in proof.responses):
        raise RerandomizationError(f"column {name!r}: responses must be canonical scalars")
    bases = salt_basis(srs, k, rows)
    c = _challenge(ctx, name, rows, registered, presented, proof.nonce)
    # Σ z_j·P_j − A − c·(C' − C) must be the identity
    check = _msm([*bases, proof.nonce, presented, registered], [*proof.responses, -1, -c, c])
    if check != backend.G1_IDENTITY:
        raise RerandomizationError(
            f"column {name!r}: the re-randomized commitment is not the registered one "
            f"moved along its salt rows (proof of knowledge rejected)"
        )


def prove_columns(
    srs: Any,
    k: int,
    *,
    salt_rows: Mapping[str, Sequence[int]],
    shifts: Mapping[str, Sequence[int]],
    presented: Mapping[str, bytes],
    ctx: bytes,
) -> tuple[dict[str, bytes], dict[str, ColumnProof]]:
    """:func:`prove_column` for every column of ``shifts``: (registered commitments, proofs)."""
    registered, proofs = {}, {}
    for name in shifts:
        registered[name], proofs[name] = prove_column(
            srs, k, name=name, rows=salt_rows[name], shifts=shifts[name], presented=presented[name], ctx=ctx
        )
    return registered, proofs


def verify_columns(
    srs: Any,
    k: int,
    *,
    salt_rows: Mapping[str, Sequence[int]],
    registered: Mapping[str, bytes],
    presented: Mapping[str, bytes],
    proofs: Mapping[str, ColumnProof],
    ctx: bytes,
) -> None:
    """:func:`verify_column` for every registered column; each must be presented with its proof."""
    for name in registered:
        if name not in presented or name not in proofs:
            raise RerandomizationError(f"column {name!r}: no re-randomized commitment or no proof for it")
        verify_column(
            srs,
            k,
            name=name,
            rows=salt_rows[name],
            registered=registered[name],
            presented=presented[name],
            proof=proofs[name],
            ctx=ctx,
        )
