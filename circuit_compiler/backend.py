"""Real zero-knowledge proofs for compiled circuits: keys, proofs, verification and commitments.

Backend-neutral API over the Halo2 extension ``circuit_compiler._halo2`` (midnight-proofs, PLONK with
KZG commitments over BLS12-381; see DESIGN.md section 6):

* :class:`Srs`       -- a KZG structured reference string (file + SHA-256), :meth:`Srs.generate_dev` / :meth:`Srs.load`;
* :func:`keygen`     -- verifying and proving keys of a :class:`~circuit_compiler.ir.ConstraintSystem`
  (structure, fixed values and copies only -- never a witness); cached by circuit digest;
* :func:`prove`      -- a proof (bytes) for an :class:`~circuit_compiler.ir.Assignment`;
* :func:`keygen_vk`  -- the verifying key alone (what a verifier needs; no proving key is built);
* :func:`verify`     -- ``True``/``False``; :func:`verify_or_raise` raises :class:`VerificationError` naming
  the failed check; :func:`verify_batch_or_raise` checks many proofs with one pairing check;
* :func:`commit`     -- the KZG commitment of a committed-instance column, exactly as the prover binds it;
* :func:`mock_prove` -- midnight-proofs' own MockProver on the same circuit (failures as strings).

Commitment schemes (``commitment_scheme``, default :func:`default_commitment_scheme`): ``"sized"``, the
extension's own multi-scalar multiplications (affine bases once, scalars grouped by bit length, a
content-keyed cache so a column committed before -- a registered θ or G column -- is not recomputed), or
``"plain"``, midnight-proofs' KZG commitments unchanged (the reference). Both give the same commitments and
standard KZG proofs that the unmodified verifier accepts; :func:`commitment_stats` times their calls.

Committed columns are the verifier's view of private-but-bound data (the model weights): the verifier
gets their 48-byte commitments, never the values. Public instance columns are given in clear.

Values follow :mod:`circuit_compiler.serialize`: int64 arrays (``v < 0`` means ``p + v``) or object arrays
of canonical ints; every array is encoded once and handed to Rust as bytes. Keygen, proving and
verification release the GIL and run multi-threaded (rayon; ``RAYON_NUM_THREADS`` caps the threads).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
import threading
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .ir import Assignment, ColumnKind, ConstraintSystem
from .serialize import NonCanonicalValue, encode_values, structure_to_json
from .srs import InsecureSrsWarning, Srs, _halo2, file_sha256, srs_info  # noqa: F401 (re-exported)

BackendError = _halo2.Halo2Error
VerificationError = _halo2.VerificationError

#: The BLS12-381 scalar field: every circuit proven by this backend lives in it.
BLS12_381_SCALAR_MODULUS = int(_halo2.scalar_modulus(), 16)

#: Bytes of a compressed BLS12-381 G1 point (a commitment).
COMMITMENT_BYTES = 48

#: How the prover computes commitments (see the module docstring); the first is the default.
COMMITMENT_SCHEMES = ("sized", "plain")
COMMITMENT_SCHEME_ENV = "JAXAPEX_COMMITMENT_SCHEME"


def default_commitment_scheme() -> str:
    """The scheme named by ``$JAXAPEX_COMMITMENT_SCHEME``, else ``"sized"``."""
    return _commitment_scheme(os.environ.get(COMMITMENT_SCHEME_ENV) or COMMITMENT_SCHEMES[0], COMMITMENT_SCHEME_ENV)


def _commitment_scheme(name: str | None, what: str = "commitment_scheme") -> str:
    if name is None:
        return default_commitment_scheme()
    if name not in COMMITMENT_SCHEMES:
        raise BackendError(f"{what}: expected one of {', '.join(COMMITMENT_SCHEMES)}, got {name!r}")
    return name


def commitment_stats(reset: bool = False) -> dict[str, tuple[int, float, float]]:
    """(calls, wall seconds, CPU seconds) spent in the prover's commitment scheme since the last reset,
    process-wide: ``commit_lagrange`` (column commitments), ``commit`` (quotient pieces), ``multi_open`` (the
    KZG opening, its two MSMs included), ``cache_hits`` (commit_lagrange calls served from the cache, 0 s).
    CPU seconds are the whole process's during the calls: a call's own when the prover is pinned to one CPU."""
    return {name: (int(c), float(w), float(t)) for name, (c, w, t) in _halo2.commitment_stats(reset).items()}


def clear_commitment_cache() -> None:
    """Forget the cached column commitments of the ``"sized"`` scheme."""
    _halo2.clear_commitment_cache()


def _check_modulus(modulus: int) -> None:
    if int(modulus) != BLS12_381_SCALAR_MODULUS:
        raise BackendError(
            f"this backend proves over the BLS12-381 scalar field (p = {BLS12_381_SCALAR_MODULUS}); "
            f"the circuit is over p = {modulus}"
        )


# ------------------------------------------------------------------------------------ circuit encoding


def _column_bytes(values: Any, modulus: int, what: str) -> tuple[str, bytes]:
    """(encoding, bytes) of one column (:func:`~circuit_compiler.serialize.encode_values`): integer arrays as
    int64, object arrays of canonical field elements as int64, int64 + a few 256-bit values, or u256."""
    values = np.asarray(values)
    if values.ndim != 1:
        raise BackendError(f"{what}: expected a 1-D column, got shape {values.shape}")
    if values.dtype != object and values.dtype.kind not in "iub":
        raise BackendError(f"{what}: values must be integers, got dtype {values.dtype}")
    if values.dtype.kind == "u" and values.size and int(values.max()) > np.iinfo(np.int64).max:
        values = values.astype(object)
    try:
        return encode_values(values, modulus, reduce=False)
    except NonCanonicalValue as e:
        raise BackendError(f"{what}: {e}") from None


@dataclasses.dataclass(frozen=True)
class _Compiled:
    """What the backend derives from one ConstraintSystem object, computed once per object."""

    structure_digest: str  # the structure JSON without name/metadata: gates, lookups, columns, k, rows
    circuit_digest: str  # plus fixed values and copies: equal digests <=> equal keys
    handle: Any  # _halo2.CircuitStructure with values


_compiled_by_id: dict[int, tuple[weakref.ref, _Compiled]] = {}
_compiled_lock = threading.Lock()


def _digest_of_structure(data: dict[str, Any]) -> str:
    # The name and metadata label a circuit (chunk index, layer, bounds report) but do not change its
    # constraints, so circuits differing only there share keys.
    shape = {key: value for key, value in data.items() if key not in ("name", "metadata")}
    return hashlib.sha256(json.dumps(shape, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _compile(cs: ConstraintSystem, modulus: int) -> _Compiled:
    """Encode ``cs`` for the backend (memoized per ConstraintSystem object; they are immutable)."""
    _check_modulus(modulus)
    key = id(cs)
    with _compiled_lock:
        hit = _compiled_by_id.get(key)
        if hit is not None and hit[0]() is cs:
            return hit[1]
    data = structure_to_json(cs, modulus)
    structure_digest = _digest_of_structure(data)
    digest = hashlib.sha256(structure_digest.encode())
    fixed = {}
    for name in sorted(cs.fixed):
        encoding, blob = _column_bytes(cs.fixed[name], modulus, f"fixed column {name!r}")
        fixed[name] = (encoding, blob)
        digest.update(f"|{name}|{encoding}|{len(blob)}|".encode())
        digest.update(blob)
    copies = np.ascontiguousarray(cs.copies, dtype="<i8").tobytes()
    digest.update(b"|copies|")
    digest.update(copies)
    handle = _halo2.CircuitStructure(json.dumps(data, separators=(",", ":")), fixed, copies)
    compiled = _Compiled(structure_digest=structure_digest, circuit_digest=digest.hexdigest(), handle=handle)
    with _compiled_lock:
        _compiled_by_id[key] = (weakref.ref(cs, lambda _, key=key: _compiled_by_id.pop(key, None)), compiled)
    return compiled


def circuit_digest(cs: ConstraintSystem, modulus: int = BLS12_381_SCALAR_MODULUS) -> str:
    """SHA-256 identifying what the keys of ``cs`` depend on (structure, fixed values, copies)."""
    return _compile(cs, modulus).circuit_digest


def _assignment_bytes(cs: ConstraintSystem, assignment: Assignment, modulus: int) -> tuple[dict, dict, dict]:
    out = []
    for kind, table in (
        (ColumnKind.ADVICE, assignment.advice),
        (ColumnKind.INSTANCE, assignment.instance),
        (ColumnKind.COMMITTED, assignment.committed),
    ):
        out.append(
            {
                name: _column_bytes(values, modulus, f"{kind.value} column {name!r} of {cs.name!r}")
                for name, values in table.items()
            }
        )
    return out[0], out[1], out[2]


# -------------------------------------------------------------------------------------------- the keys


@dataclasses.dataclass(frozen=True, eq=False)
class Keys:
    """Verifying key (serialized, what a verifier stores) and the proving key (in memory) of one circuit.

    Pickles without the proving key (a worker regenerates it on first use from the circuit).
    """

    vk: bytes
    circuit_digest: str
    structure_digest: str
    srs_sha256: str
    k: int
    handle: Any = dataclasses.field(default=None, repr=False)

    def __reduce__(self):
        return (Keys, (self.vk, self.circuit_digest, self.structure_digest, self.srs_sha256, self.k, None))


# A proving key holds the fixed and permutation polynomials in extended form: ~1.2 GB at k = 18 for an
# OBS chunk. The cache keeps the most recently used few (set_key_cache_size).
_key_cache_size = 4
_key_cache: collections.OrderedDict[tuple[str, str], Keys] = collections.OrderedDict()
_key_lock = threading.Lock()


def set_key_cache_size(size: int) -> None:
    """How many proving keys :func:`keygen` keeps (least recently used ones are dropped; 0 disables)."""
    global _key_cache_size
    with _key_lock:
        _key_cache_size = max(0, int(size))
        while len(_key_cache) > _key_cache_size:
            _key_cache.popitem(last=False)


def keygen(srs: Srs, cs: ConstraintSystem, modulus: int = BLS12_381_SCALAR_MODULUS) -> Keys:
    """Verifying and proving keys of ``cs`` (structure, fixed values and copies; no witness).

    Cached per (SRS, circuit digest): every chunk of one shape reuses the first chunk's keys.
    """
    compiled = _compile(cs, modulus)
    key = (srs.sha256, compiled.circuit_digest)
    with _key_lock:
        if key in _key_cache:
            _key_cache.move_to_end(key)
            return _key_cache[key]
    if cs.k > srs.k:
        raise BackendError(f"circuit {cs.name!r} needs k = {cs.k}, the SRS only has k = {srs.k}")
    handle = _halo2.keygen(srs.handle, compiled.handle)
    keys = Keys(
        vk=handle.vk_bytes(),
        circuit_digest=compiled.circuit_digest,
        structure_digest=compiled.structure_digest,
        srs_sha256=srs.sha256,
        k=cs.k,
        handle=handle,
    )
    with _key_lock:
        _key_cache[key] = keys
        while len(_key_cache) > _key_cache_size:
            _key_cache.popitem(last=False)
    return keys


def keygen_vk(srs: Srs, cs: ConstraintSystem, modulus: int = BLS12_381_SCALAR_MODULUS) -> bytes:
    """The serialized verifying key of ``cs`` alone: what a verifier needs, without the proving key's
    extended polynomials (a fraction of :func:`keygen`'s time and memory). Equal to ``keygen(...).vk``."""
    compiled = _compile(cs, modulus)
    if cs.k > srs.k:
        raise BackendError(f"circuit {cs.name!r} needs an SRS of k >= {cs.k}, the SRS has k = {srs.k}")
    return bytes(_halo2.keygen_vk(srs.handle, compiled.handle).to_bytes())


def clear_key_cache() -> None:
    with _key_lock:
        _key_cache.clear()


# ---------------------------------------------------------------------------------------- prove/verify


def _prove(
    srs: Srs,
    keys: Keys,
    cs: ConstraintSystem,
    assignment: Assignment,
    modulus: int,
    rng_seed: int | None,
    commitment_scheme: str | None,
    known_commitments: Mapping[str, bytes] | None,
    *,
    report: bool,
) -> Any:
    scheme = _commitment_scheme(commitment_scheme)
    compiled = _compile(cs, modulus)
    if keys.circuit_digest != compiled.circuit_digest:
        raise BackendError(
            f"keys were generated for circuit {keys.circuit_digest[:12]}..., not for {cs.name!r} "
            f"({compiled.circuit_digest[:12]}...)"
        )
    if keys.srs_sha256 != srs.sha256:
        raise BackendError(f"keys were generated with SRS {keys.srs_sha256[:12]}..., not {srs.sha256[:12]}...")
    if keys.handle is None:  # unpickled keys: regenerate the proving key (cached) and insist on the same vk
        fresh = keygen(srs, cs, modulus)
        if fresh.vk != keys.vk:
            raise BackendError(f"regenerated verifying key of {cs.name!r} differs from the one given")
        keys = fresh
    advice, instance, committed = _assignment_bytes(cs, assignment, modulus)
    known = _known_commitments(cs, known_commitments)
    seed = None if rng_seed is None else int(rng_seed) % (1 << 64)
    return _halo2.prove(srs.handle, keys.handle, advice, instance, committed, seed, scheme, known, report)


def prove(
    srs: Srs,
    keys: Keys,
    cs: ConstraintSystem,
    assignment: Assignment,
    modulus: int = BLS12_381_SCALAR_MODULUS,
    *,
    rng_seed: int | None = None,
    commitment_scheme: str | None = None,
    known_commitments: Mapping[str, bytes] | None = None,
) -> bytes:
    """A proof that ``assignment`` satisfies ``cs``, binding its committed columns to their commitments.

    The prover does not re-check the witness: an unsatisfying assignment yields a proof that fails
    verification (run :func:`mock_prove` or the Python mock prover to find out why); only a lookup input
    missing from its table makes proving itself fail. ``rng_seed`` fixes the blinding randomness, for tests
    only (a known seed removes zero knowledge); proofs of circuits with lookups still vary, since
    midnight-proofs fills the permuted lookup tables in hash-map order. ``commitment_scheme``: ``"sized"``
    or ``"plain"`` (default :func:`default_commitment_scheme`); the proof verifies the same either way.
    ``known_commitments``: committed column name -> its commitment (48 bytes), which the caller already
    holds (a client's registered commitments, re-randomized): under ``"sized"`` the prover hashes those
    columns instead of committing them. They are not checked: a wrong one yields a proof that fails
    verification. ``"plain"`` ignores them (the reference recomputes everything).
    """
    return _prove(srs, keys, cs, assignment, modulus, rng_seed, commitment_scheme, known_commitments, report=False)


def prove_with_commitments(
    srs: Srs,
    keys: Keys,
    cs: ConstraintSystem,
    assignment: Assignment,
    modulus: int = BLS12_381_SCALAR_MODULUS,
    *,
    rng_seed: int | None = None,
    commitment_scheme: str | None = None,
    known_commitments: Mapping[str, bytes] | None = None,
) -> tuple[bytes, dict[str, bytes]]:
    """:func:`prove`, and the commitment of every committed column the proof binds (what the verifier
    needs): the known ones as given, the others computed once for both (``"sized"``), where calling
    :func:`commit` afterwards in another process would repeat each MSM."""
    proof, commitments = _prove(
        srs, keys, cs, assignment, modulus, rng_seed, commitment_scheme, known_commitments, report=True
    )
    return bytes(proof), {name: bytes(point) for name, point in commitments.items()}


def _known_commitments(cs: ConstraintSystem, known: Mapping[str, bytes] | None) -> dict[str, bytes]:
    committed = {c.name for c in cs.columns if c.kind == ColumnKind.COMMITTED}
    out = {}
    for name, point in (known or {}).items():
        if name not in committed:
            raise BackendError(f"known commitment for {name!r}: {cs.name!r} has no committed column of that name")
        if not isinstance(point, (bytes, bytearray)) or len(point) != COMMITMENT_BYTES:
            raise BackendError(
                f"known commitment for {name!r}: expected {COMMITMENT_BYTES} bytes (compressed G1), got {point!r:.40}"
            )
        out[name] = bytes(point)
    return out


_vk_cache: collections.OrderedDict[tuple[str, str], Any] = collections.OrderedDict()


def _verifying_key(vk: Keys | bytes, structure: ConstraintSystem | Mapping[str, Any] | str, modulus: int) -> Any:
    vk_bytes = vk.vk if isinstance(vk, Keys) else bytes(vk)
    if isinstance(structure, ConstraintSystem):
        _check_modulus(modulus)
        data = structure_to_json(structure, modulus)
    elif isinstance(structure, str):
        data = json.loads(structure)
    else:
        data = dict(structure)
    _check_modulus(int(data["modulus"]))
    key = (_digest_of_structure(data), hashlib.sha256(vk_bytes).hexdigest())
    with _key_lock:
        if key in _vk_cache:
            _vk_cache.move_to_end(key)
            return _vk_cache[key]
    shape = _halo2.CircuitStructure(json.dumps(data, separators=(",", ":")))
    handle = _halo2.VerifyingKey.from_bytes(shape, vk_bytes)
    with _key_lock:
        _vk_cache[key] = handle
        while len(_vk_cache) > 16:
            _vk_cache.popitem(last=False)
    return handle


def verify_or_raise(
    srs: Srs,
    vk: Keys | bytes,
    structure: ConstraintSystem | Mapping[str, Any] | str,
    proof: bytes,
    instances: Mapping[str, Any],
    commitments: Mapping[str, bytes],
    modulus: int = BLS12_381_SCALAR_MODULUS,
) -> None:
    """Check ``proof``; raise :class:`VerificationError` naming the failed check.

    ``vk``: the serialized verifying key (or :class:`Keys`); ``structure``: the circuit (a
    ConstraintSystem, or the structure JSON of :func:`~circuit_compiler.serialize.structure_to_json` --
    the verifier needs no fixed values or copies, the vk binds them); ``instances``: every public
    instance column by name; ``commitments``: every committed column by name (48-byte G1 points).
    """
    if isinstance(vk, Keys) and vk.srs_sha256 != srs.sha256:
        raise VerificationError(f"keys were generated with SRS {vk.srs_sha256[:12]}..., not {srs.sha256[:12]}...")
    handle = _verifying_key(vk, structure, modulus)
    public = {name: _column_bytes(values, modulus, f"instance column {name!r}") for name, values in instances.items()}
    points = {name: bytes(c) for name, c in commitments.items()}
    _halo2.verify(srs.handle, handle, bytes(proof), public, points)


def verify_batch_or_raise(
    srs: Srs,
    vk: Keys | bytes,
    structure: ConstraintSystem | Mapping[str, Any] | str,
    items: list[tuple[bytes, Mapping[str, Any], Mapping[str, bytes]]],
    modulus: int = BLS12_381_SCALAR_MODULUS,
) -> None:
    """Check many proofs of one circuit with one final pairing check (random linear combination of their
    KZG guards). ``items``: (proof, instances, commitments) as for :func:`verify_or_raise`. A proof that
    cannot even be read raises :class:`VerificationError` prefixed ``proof <index>:``; a failed combined
    pairing check raises without an index (verify one by one to locate the bad proof)."""
    if isinstance(vk, Keys) and vk.srs_sha256 != srs.sha256:
        raise VerificationError(f"keys were generated with SRS {vk.srs_sha256[:12]}..., not {srs.sha256[:12]}...")
    handle = _verifying_key(vk, structure, modulus)
    encoded = [
        (
            bytes(proof),
            {name: _column_bytes(values, modulus, f"instance column {name!r}") for name, values in instances.items()},
            {name: bytes(c) for name, c in commitments.items()},
        )
        for proof, instances, commitments in items
    ]
    _halo2.verify_batch(srs.handle, handle, encoded)


def verify(
    srs: Srs,
    vk: Keys | bytes,
    structure: ConstraintSystem | Mapping[str, Any] | str,
    proof: bytes,
    instances: Mapping[str, Any],
    commitments: Mapping[str, bytes],
    modulus: int = BLS12_381_SCALAR_MODULUS,
) -> bool:
    """``True`` iff ``proof`` verifies (see :func:`verify_or_raise` for the arguments and the reason).

    A verifying key or structure that cannot be read is the caller's error: it raises :class:`BackendError`.
    """
    try:
        verify_or_raise(srs, vk, structure, proof, instances, commitments, modulus)
    except VerificationError:
        return False
    return True


def commit(
    srs: Srs, k: int, values: Any, modulus: int = BLS12_381_SCALAR_MODULUS, *, commitment_scheme: str | None = None
) -> bytes:
    """KZG commitment (48-byte compressed G1) of one column: Σ_i v_i·[L_i(τ)]G1 over the 2^k domain.

    This is what a proof binds a committed-instance column to, so a client commits its weights once (with
    a random salt cell, see the lowering) and the verifier checks proofs against that commitment.
    Commitments are additively homomorphic: commit(a) + commit(b) = commit(a + b). With the ``"sized"``
    scheme (the default) the commitment is cached, so proving the same column later does not recompute it.
    """
    _check_modulus(modulus)
    scheme = _commitment_scheme(commitment_scheme)
    encoding, blob = _column_bytes(values, modulus, "committed column")
    return _halo2.commit(srs.handle, int(k), encoding, blob, scheme)


def lagrange_points(srs: Srs, k: int, rows: Sequence[int]) -> list[bytes]:
    """[L_r(τ)]_1 for each row r of the 2^k domain (the commitment of the unit column at r), read from the
    SRS's Lagrange basis: equal to ``commit(srs, k, e_r)`` without the domain-sized MSM."""
    return [bytes(p) for p in _halo2.lagrange_points(srs.handle, int(k), [int(r) for r in rows])]


G1_IDENTITY = bytes([0xC0]) + bytes(COMMITMENT_BYTES - 1)  # the compressed point at infinity


def g1_msm(points: Sequence[bytes], scalars: Sequence[int]) -> bytes:
    """Σ_i s_i·P_i over BLS12-381 G1 (48-byte compressed points, integer scalars reduced mod r), compressed.

    Raises :class:`BackendError` naming a point that is not a valid compressed G1 point.
    """
    r = BLS12_381_SCALAR_MODULUS
    return bytes(_halo2.g1_msm([bytes(p) for p in points], [(int(s) % r).to_bytes(32, "little") for s in scalars]))


def mock_prove(cs: ConstraintSystem, assignment: Assignment, modulus: int = BLS12_381_SCALAR_MODULUS) -> list[str]:
    """Run midnight-proofs' MockProver (on the 2^k domain); its failures as strings, empty if satisfied."""
    compiled = _compile(cs, modulus)
    advice, instance, committed = _assignment_bytes(cs, assignment, modulus)
    return _halo2.mock_prove(compiled.handle, advice, instance, committed)


def halo2_usable_rows(cs: ConstraintSystem, modulus: int = BLS12_381_SCALAR_MODULUS) -> int:
    """Rows Halo2 lets ``cs`` use at its k (for cross-checking :func:`circuit_compiler.ir.usable_rows`)."""
    return _compile(cs, modulus).handle.usable_rows


def statistics(cs: ConstraintSystem, modulus: int = BLS12_381_SCALAR_MODULUS) -> dict[str, int]:
    """Halo2-side shape of ``cs``: column counts, lookups, gates, degree, blinding rows, copies."""
    return dict(_compile(cs, modulus).handle.statistics())
