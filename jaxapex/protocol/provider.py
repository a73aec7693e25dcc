"""The provider's side: accept registrations, and verify proof bundles against the registry.

Verification recomputes everything it can from public data (the chunk shape and verifying key from the
registered configuration, the instance columns from the request's mask, which chunks must be proven) and
takes the commitments from the registry, never from the client, except the new θ' commitments that the
proofs bind. A request with K forget directions is verified under the chunk circuit with K forget rows, its
instance columns holding the directions of the provider's OWN request (never the bundle's): a bundle proven
for other directions fails the proof check, one that says it answers other directions (or K = 0) fails the
``forget-directions`` check before any proof is read. It runs as separate steps, each its own function:

1. ``read_bundle``        -- the bundle's manifest, every field type-checked;
2. ``check_bundle``       -- request id, mask hash, forget directions, replay, configuration and SRS
                             against the registry;
3. ``required_chunks``    -- coverage: the chunks the request's mask touches, refusing a request the client's
                             registration cannot cover in full (an unregistered layer, another shape);
4. ``chunk_statements``   -- per chunk, the commitments its proof must open: re-randomizations of the
                             registered θ (and G), each with its proof of knowledge checked, and new θ';
5. ``verify_statements``  -- the proofs, with one batched pairing check (per chunk on failure, to name it);
6. ``Registry.accept``    -- one transaction: compare-and-swap of the model version and the touched chunk
                             commitments, the request id inserted under its uniqueness constraint.

Nothing is written unless every step passed. Steps 1-5 are pure (:func:`check_submission`), so
:func:`verify_many` runs them for many bundles on worker processes or a Ray cluster and keeps step 6 here.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from circuit_compiler import backend
from circuit_compiler.executors import peak_rss_mb
from circuit_compiler.rerandomize import RerandomizationError

from . import chunks as ch
from . import rerandomization as rz
from . import wellformedness
from .artifacts import BUNDLE, REGISTRATION, Artifact, ArtifactError, read_artifact
from .config import ProofConfig
from .registry import Registry, RegistryConflict, RegistryError
from .requests import UnlearningRequest


class VerificationFailed(Exception):
    """A bundle was rejected. ``check`` names the failed check; ``layer``/``chunk`` locate it when relevant."""

    def __init__(self, check: str, message: str, *, layer: str | None = None, chunk: int | None = None):
        where = "" if layer is None else f"layer {layer!r}" + ("" if chunk is None else f" chunk {chunk}") + ": "
        super().__init__(f"[{check}] {where}{message}")
        self.check, self.layer, self.chunk, self.message = check, layer, chunk, message

    def __reduce__(self):  # keyword arguments survive pickling (batches are checked in other processes)
        return _rebuild_failure, (self.check, self.message, self.layer, self.chunk)


def _rebuild_failure(check: str, message: str, layer: str | None, chunk: int | None) -> VerificationFailed:
    return VerificationFailed(check, message, layer=layer, chunk=chunk)


def register(registry: Registry, registration_path: str | Path, *, srs: backend.Srs) -> dict[str, Any]:
    """Record a client's registration (configuration and commitments); a client registers once.

    Every chunk's well-formedness proof must verify against the registered commitments, otherwise
    :class:`VerificationFailed` with check ``"wellformedness"`` names the layer and chunk.
    """
    art = read_artifact(registration_path, REGISTRATION)
    client_id = art.field("client_id", str)
    try:
        config = ProofConfig.from_dict(art.field("config", dict))
    except (ValueError, TypeError) as err:
        raise ArtifactError(f"{art.path}/manifest.json: field 'config': {err}") from err
    if art.field("config_digest", str) != config.digest():
        raise ArtifactError(f"{art.path}/manifest.json: field 'config_digest' does not match field 'config'")
    if config.srs_hash != srs.sha256:
        raise ArtifactError(
            f"{art.path}/manifest.json: field 'config' names SRS {config.srs_hash[:12]}..., the "
            f"provider's SRS {srs.path or ''} is {srs.sha256[:12]}..."
        )
    commitments = art.field("commitments", dict)
    expected_names = set(ch.registered_names(config))
    unknown = sorted(set(commitments) - {layer.name for layer in config.layers})
    if unknown:
        raise ArtifactError(
            f"{art.path}/manifest.json: field 'commitments' names layers {unknown} that field 'config' does not"
        )
    for layer in config.layers:
        per = commitments.get(layer.name)
        if not isinstance(per, list) or len(per) != config.n_chunks(layer):
            raise ArtifactError(
                f"{art.path}/manifest.json: field 'commitments' of layer {layer.name!r} must list "
                f"{config.n_chunks(layer)} chunks"
            )
        for c, entry in enumerate(per):
            if not isinstance(entry, dict) or set(entry) != expected_names:
                raise ArtifactError(
                    f"{art.path}/manifest.json: commitments of layer {layer.name!r} chunk {c} must "
                    f"name {sorted(expected_names)}"
                )
            for name, hexpoint in entry.items():
                if not _is_point_hex(hexpoint):
                    raise ArtifactError(
                        f"{art.path}/manifest.json: commitment {name!r} of layer {layer.name!r} "
                        f"chunk {c} is not a 48-byte hex point"
                    )
    try:  # the chunk circuits' no-wrap bounds assume registered θ and G inside their declared ranges
        wellformedness.verify(
            srs,
            config,
            client_id=client_id,
            commitments=commitments,
            entries=art.field("wellformedness", dict),
            blob=art.blob,
        )
    except wellformedness.WellFormednessError as err:
        raise VerificationFailed(
            "wellformedness", f"registration rejected: {err}", layer=err.layer, chunk=err.chunk
        ) from err
    record = {
        "client_id": client_id,
        "config": config.to_dict(),
        "config_digest": config.digest(),
        "registration": art.hash(),
        "commitments": commitments,
    }
    registry.add(record)
    return {**record, "model_version": 0, "history": []}


def _is_point_hex(x: Any) -> bool:
    if not isinstance(x, str) or len(x) != 2 * backend.COMMITMENT_BYTES:
        return False
    try:
        bytes.fromhex(x)
    except ValueError:
        return False
    return True


# ------------------------------------------------------------------------------------ 1. the bundle


@dataclasses.dataclass(frozen=True)
class ChunkEntry:
    layer: str
    chunk: int
    proof: str  # blob name
    theta: str  # the old-model commitment the client claims (hex)
    theta_new: str  # the new-model commitment the proof binds (hex)
    rerandomization: dict[str, Any]  # "rerandomized" (column -> C' hex) and "rerandomization" (proofs)


@dataclasses.dataclass(frozen=True)
class Bundle:
    artifact: Artifact
    client_id: str
    request_id: str
    mask_hash: str
    config_digest: str
    srs_hash: str
    base_version: int
    chunks: dict[tuple[str, int], ChunkEntry]
    forget_directions: int = 0  # K the client says it proved
    directions_hash: str = ""
    max_delta: float = 0.0  # the repair bound the client proved under (checked against the request's own)


def read_bundle(path: str | Path) -> Bundle:
    """Open a proof bundle and type-check every manifest field (:class:`ArtifactError` naming the field)."""
    art = read_artifact(path, BUNDLE)
    where = f"{art.path}/manifest.json"
    base_version = art.field("base_version", int)
    max_delta = art.manifest.get("max_delta")
    if isinstance(max_delta, bool) or not isinstance(max_delta, (int, float)):
        raise ArtifactError(f"{where}: field 'max_delta' should be a number (weight units), got {max_delta!r}")
    if isinstance(base_version, bool) or base_version < 0:
        raise ArtifactError(f"{where}: field 'base_version' should be an integer >= 0, got {base_version!r}")
    forget_directions = art.manifest.get("forget_directions", 0)  # absent in bundles without directions
    if not isinstance(forget_directions, int) or isinstance(forget_directions, bool) or forget_directions < 0:
        raise ArtifactError(
            f"{where}: field 'forget_directions' should be an integer K >= 0, got {forget_directions!r}"
        )
    directions_hash = art.manifest.get("directions_hash", "")
    if not isinstance(directions_hash, str):
        raise ArtifactError(f"{where}: field 'directions_hash' should be a string, got {directions_hash!r}")
    entries = art.field("chunks", list)
    chunks: dict[tuple[str, int], ChunkEntry] = {}
    for i, e in enumerate(entries):
        field = f"field 'chunks'[{i}]"
        if not isinstance(e, dict):
            raise ArtifactError(f"{where}: {field} should be an object, got {type(e).__name__} {e!r}")
        for name, types in (("layer", str), ("chunk", int), ("proof", str), ("theta", str), ("theta_new", str)):
            if name not in e:
                raise ArtifactError(f"{where}: {field} has no field {name!r}")
            if not isinstance(e[name], types) or isinstance(e[name], bool):
                raise ArtifactError(
                    f"{where}: {field}.{name} should be {types.__name__}, got {type(e[name]).__name__} {e[name]!r}"
                )
        if e["chunk"] < 0:
            raise ArtifactError(f"{where}: {field}.chunk is negative ({e['chunk']})")
        if e["proof"] not in art.manifest["files"]:
            raise ArtifactError(f"{where}: {field}.proof names {e['proof']!r}, which field 'files' does not list")
        key = (e["layer"], e["chunk"])
        if key in chunks:
            raise ArtifactError(f"{where}: {field} lists layer {key[0]!r} chunk {key[1]} a second time")
        chunks[key] = ChunkEntry(
            layer=e["layer"],
            chunk=e["chunk"],
            proof=e["proof"],
            theta=e["theta"],
            theta_new=e["theta_new"],
            rerandomization={k: e[k] for k in ("rerandomized", "rerandomization") if k in e},
        )
    return Bundle(
        artifact=art,
        client_id=art.field("client_id", str),
        request_id=art.field("request_id", str),
        mask_hash=art.field("mask_hash", str),
        config_digest=art.field("config_digest", str),
        srs_hash=art.field("srs_hash", str),
        base_version=base_version,
        chunks=chunks,
        forget_directions=forget_directions,
        directions_hash=directions_hash,
        max_delta=float(max_delta),
    )


# -------------------------------------------------------------------------- 2. header against registry


def check_bundle(bundle: Bundle, record: Mapping[str, Any], request: UnlearningRequest, srs: backend.Srs) -> None:
    """The bundle answers this request, under the registered configuration and SRS, and is not a replay."""
    if bundle.request_id != request.request_id:
        raise VerificationFailed("request", f"bundle answers request {bundle.request_id!r}, not {request.request_id!r}")
    if bundle.mask_hash != request.mask_hash:
        raise VerificationFailed("request", "bundle was made for another mask than this request's")
    check_directions(bundle, request, ProofConfig.from_dict(record["config"]))
    if request.request_id in record["history"]:
        raise VerificationFailed(
            "replay", f"request {request.request_id!r} was already applied by {bundle.client_id!r}"
        )
    if bundle.max_delta != request.max_delta:
        raise VerificationFailed(
            "bound",
            f"bundle was proven under a repair bound of {bundle.max_delta} weight units, the request "
            f"sets {request.max_delta}",
        )
    if bundle.config_digest != record["config_digest"]:
        raise VerificationFailed("config", "bundle was made under another proof configuration than the registered one")
    registered = record["config"].get("srs_hash", "")
    if bundle.srs_hash != srs.sha256 or registered != srs.sha256:
        need_k = ch.circuit_k(ProofConfig.from_dict(record["config"]))
        size = f"; the chunk circuits need k >= {need_k}, this SRS has k = {srs.k}" if srs.k < need_k else ""
        raise VerificationFailed(
            "srs",
            f"bundle SRS {bundle.srs_hash[:12]}..., registered {registered[:12]}..., "
            f"the provider's SRS {srs.path or ''} is {srs.sha256[:12]}...{size}",
        )
    if bundle.base_version != record["model_version"]:
        raise VerificationFailed(
            "stale",
            f"bundle was built on model version {bundle.base_version} of "
            f"{bundle.client_id!r}, the registry is at version {record['model_version']}",
        )


def check_directions(bundle: Bundle, request: UnlearningRequest, config: ProofConfig) -> None:
    """The bundle answers the request's forget directions: the same K (a K = 0 bundle for a K > 0 request
    is the plain update, which may give the forgotten features back), the same directions, and a level
    that proves them (check ``forget-directions``). The proofs are then checked against the request's own
    directions whatever the bundle says."""
    K = request.forget_directions
    if K and config.level != "F":
        raise VerificationFailed(
            "forget-directions",
            f"the request asks for {K} forget direction(s), which only level F proves; the client is "
            f"registered at level {config.level}",
        )
    if bundle.forget_directions != K:
        raise VerificationFailed(
            "forget-directions",
            f"bundle was proven for K = {bundle.forget_directions} forget directions, the request asks K = {K}",
        )
    if bundle.directions_hash != request.directions_hash:
        raise VerificationFailed(
            "forget-directions", "bundle was proven for other forget directions than this request's"
        )


# ---------------------------------------------------------------------------------------- 3. coverage


def required_chunks(config: ProofConfig, request: UnlearningRequest) -> dict[tuple[str, int], np.ndarray]:
    """(layer, chunk) -> that chunk's mask, for every chunk the request touches, from the public mask alone.

    A request is only ever satisfiable in full: a masked position in a layer the client is not registered
    for, or a mask whose shape differs from the registered layer, is rejected (check ``request``).
    """
    registered = {layer.name: layer for layer in config.layers}
    for name, mask in request.masks.items():
        mask = np.asarray(mask)
        if name not in registered:
            if mask.any():
                raise VerificationFailed(
                    "request",
                    f"the request masks {int(mask.sum())} weights of a layer the "
                    f"client is not registered for (registered: {sorted(registered)})",
                    layer=name,
                )
            continue
        layer = registered[name]
        if mask.shape != (layer.out_features, layer.in_features):
            raise VerificationFailed(
                "request",
                f"the request's mask has shape {mask.shape}, the registered matrix is "
                f"({layer.out_features}, {layer.in_features})",
                layer=name,
            )
    expected: dict[tuple[str, int], np.ndarray] = {}
    for layer in config.layers:
        if layer.name not in request.masks:
            continue
        mask_blocks = ch.blocked_mask(request.layer_mask(layer), layer, config)
        parts = ch.split_chunks(mask_blocks, config)
        for c in ch.touched_chunks(mask_blocks, config):
            expected[(layer.name, c)] = parts[c]
    return expected


def required_directions(config: ProofConfig, request: UnlearningRequest) -> dict[tuple[str, int], np.ndarray]:
    """(layer, chunk) -> the quantized forget directions (nb, K, B) of every touched chunk, from the
    request alone (empty for K = 0): the instance values the proofs are checked against."""
    if not request.forget_directions:
        return {}
    out = {}
    for layer in config.layers:
        if layer.name not in request.masks:
            continue
        U_q = ch.layer_directions_q(request.layer_directions(layer.name), layer, config)
        mask_blocks = ch.blocked_mask(request.layer_mask(layer), layer, config)
        parts = ch.split_chunks(U_q, config)
        for c in ch.touched_chunks(mask_blocks, config):
            out[(layer.name, c)] = parts[c]
    return out


def check_chunk_set(bundle: Bundle, expected: Mapping[tuple[str, int], Any]) -> None:
    for key in expected:
        if key not in bundle.chunks:
            raise VerificationFailed(
                "chunks", "chunk is touched by the mask but has no proof", layer=key[0], chunk=key[1]
            )
    for key in bundle.chunks:
        if key not in expected:
            raise VerificationFailed("chunks", "proof for a chunk the mask does not touch", layer=key[0], chunk=key[1])


# ---------------------------------------------------------------------------------- 4. the statements


@dataclasses.dataclass(frozen=True)
class ChunkStatement:
    """What one chunk proof must be checked against: public instances and every committed column's point."""

    layer: str
    chunk: int
    proof: bytes
    instances: dict[str, np.ndarray]
    commitments: dict[str, bytes]
    old_theta: str  # registered θ commitment (hex) the registry swaps out on acceptance
    new_theta: str  # θ' commitment (hex) the registry swaps in


def chunk_statements(
    bundle: Bundle,
    record: Mapping[str, Any],
    config: ProofConfig,
    expected: Mapping[tuple[str, int], np.ndarray],
    srs: backend.Srs,
    directions: Mapping[tuple[str, int], np.ndarray] | None = None,
) -> list[ChunkStatement]:
    """Re-randomizations of the registered θ (and G lanes), each proven against the registry
    (:mod:`.rerandomization`), θ' from the bundle, instances from the public mask and the request's
    quantized forget directions (``directions``, from :func:`required_directions`)."""
    directions = directions or {}
    out = []
    for (layer, c), mask_chunk in expected.items():
        e = bundle.chunks[(layer, c)]
        registered = record["commitments"][layer][c]
        if e.theta != registered["theta"]:
            raise VerificationFailed(
                "commitment", "the bundle's old-model commitment is not the registered one", layer=layer, chunk=c
            )
        if not _is_point_hex(e.theta_new):
            raise VerificationFailed("commitment", "new commitment is not a 48-byte hex point", layer=layer, chunk=c)
        try:  # the proof opens C' = C + Σ r_j·[L_{s_j}(τ)], proven to commit to the registered values
            commitments = rz.check_entry(
                srs,
                config,
                registered=registered,
                entry=e.rerandomization,
                request_id=bundle.request_id,
                layer=layer,
                chunk=c,
            )
        except RerandomizationError as err:
            raise VerificationFailed(
                "rerandomization",
                f"re-randomized commitments rejected against the registered ones: {err}",
                layer=layer,
                chunk=c,
            ) from err
        commitments["theta_new"] = bytes.fromhex(e.theta_new)
        try:
            proof = bundle.artifact.blob(e.proof)
        except ArtifactError as err:
            raise VerificationFailed("proof-file", str(err), layer=layer, chunk=c) from err
        out.append(
            ChunkStatement(
                layer=layer,
                chunk=c,
                proof=proof,
                instances=ch.instances_for(config, mask_chunk, directions.get((layer, c))),
                commitments=commitments,
                old_theta=registered["theta"],
                new_theta=e.theta_new,
            )
        )
    return out


# ------------------------------------------------------------------------------------------ 5. proofs


def verify_statements(
    srs: backend.Srs,
    vk: bytes,
    config: ProofConfig,
    statements: list[ChunkStatement],
    *,
    batch: bool = True,
    directions: int = 0,
) -> list[dict[str, Any]]:
    """Check every chunk proof; per-chunk figures (verify_s, proof_bytes) in statement order.

    ``batch``: one combined pairing check for all chunks (each proof still fully read and its transcript
    replayed); only if that fails are the chunks verified one by one, so the failure names its chunk.
    """
    structure = ch.chunk_circuit(config, directions).cs
    modulus = ch.chunk_shape(config).field.modulus
    if batch and len(statements) > 1:
        t0 = time.perf_counter()
        try:
            backend.verify_batch_or_raise(
                srs, vk, structure, [(s.proof, s.instances, s.commitments) for s in statements], modulus
            )
            each = (time.perf_counter() - t0) / len(statements)
            return [
                {"layer": s.layer, "chunk": s.chunk, "verify_s": each, "proof_bytes": len(s.proof)} for s in statements
            ]
        except (backend.VerificationError, backend.BackendError):
            pass  # locate (and name) the failing chunk below
    figures = []
    for s in statements:
        t0 = time.perf_counter()
        try:
            backend.verify_or_raise(srs, vk, structure, s.proof, s.instances, s.commitments, modulus)
        except backend.VerificationError as err:
            raise VerificationFailed(
                "proof",
                f"proof rejected against the registered commitments and the request's mask ({err})",
                layer=s.layer,
                chunk=s.chunk,
            ) from err
        except backend.BackendError as err:
            raise VerificationFailed("proof", f"malformed proof ({err})", layer=s.layer, chunk=s.chunk) from err
        figures.append(
            {"layer": s.layer, "chunk": s.chunk, "verify_s": time.perf_counter() - t0, "proof_bytes": len(s.proof)}
        )
    return figures


# ---------------------------------------------------------------------------------------------- verify


@dataclasses.dataclass
class VerificationReport:
    client_id: str
    request_id: str
    chunks_verified: int
    verify_s: float  # the proofs alone
    per_chunk: list[dict[str, Any]]
    model_version: int | None  # the client's model version after acceptance (None: registry not updated)
    new_commitments: dict[str, dict[int, str]] = dataclasses.field(default_factory=dict)  # layer -> chunk -> θ'
    peak_rss_mb: float = 0.0


def verify(
    registry: Registry,
    request: UnlearningRequest,
    bundle_path: str | Path,
    *,
    srs: backend.Srs,
    update_registry: bool = True,
    key_cache: str | Path | None = None,
    batch: bool = True,
) -> VerificationReport:
    """Check a proof bundle; on success swap the touched chunk commitments in the registry (one transaction).

    ``key_cache``: directory of cached verifying keys (default: ``<registry>.vk`` next to the database).
    Raises :class:`VerificationFailed` naming the failed check (and layer/chunk); the registry is then
    left unchanged.
    """
    client_id = _bundle_client(bundle_path)
    record = _registered(registry, client_id)
    vk = _verifying_key(record, request, srs, registry, key_cache)
    report, acceptance = check_submission(srs, request, bundle_path, record, vk, batch=batch)
    if update_registry:
        report.model_version = _accept(registry, client_id, request, acceptance)
    return report


@dataclasses.dataclass(frozen=True)
class Acceptance:
    """What :meth:`Registry.accept` needs to record a checked bundle."""

    base_version: int
    updates: dict[tuple[str, int], tuple[str, str]]  # (layer, chunk) -> (old θ, new θ')
    bundle_hash: str


def check_submission(
    srs: backend.Srs,
    request: UnlearningRequest,
    bundle_path: str | Path,
    record: Mapping[str, Any],
    vk: bytes,
    *,
    batch: bool = True,
) -> tuple[VerificationReport, Acceptance]:
    """Steps 1-5 against the client's registry ``record``: a pure function, touching no registry.

    Returns the report (``model_version`` None) and what accepting it writes. Raises
    :class:`VerificationFailed`.
    """
    try:
        bundle = read_bundle(bundle_path)
    except ArtifactError as err:
        raise VerificationFailed("bundle", f"malformed proof bundle: {err}") from err
    if bundle.client_id != record["client_id"]:
        raise VerificationFailed(
            "registry", f"bundle is from {bundle.client_id!r}, the record {record['client_id']!r}'s"
        )
    config = ProofConfig.from_dict(record["config"])
    check_bundle(bundle, record, request, srs)
    expected = required_chunks(config, request)
    check_chunk_set(bundle, expected)
    statements = chunk_statements(bundle, record, config, expected, srs, required_directions(config, request))
    t0 = time.perf_counter()
    proven = ch.bounded_config(config, request.max_delta)  # the provider's own request sets the bound
    per_chunk = verify_statements(srs, vk, proven, statements, batch=batch, directions=request.forget_directions)
    verify_s = time.perf_counter() - t0
    new_commitments: dict[str, dict[int, str]] = {}
    for s in statements:
        new_commitments.setdefault(s.layer, {})[s.chunk] = s.new_theta
    report = VerificationReport(
        client_id=bundle.client_id,
        request_id=request.request_id,
        chunks_verified=len(statements),
        verify_s=verify_s,
        per_chunk=per_chunk,
        model_version=None,
        new_commitments=new_commitments,
        peak_rss_mb=peak_rss_mb(),
    )
    acceptance = Acceptance(
        base_version=bundle.base_version,
        bundle_hash=bundle.artifact.hash(),
        updates={(s.layer, s.chunk): (s.old_theta, s.new_theta) for s in statements},
    )
    return report, acceptance


def _bundle_client(bundle_path: str | Path) -> str:
    try:
        return read_bundle(bundle_path).client_id
    except ArtifactError as err:
        raise VerificationFailed("bundle", f"malformed proof bundle: {err}") from err


def _registered(registry: Registry, client_id: str) -> dict[str, Any]:
    try:
        return registry.get(client_id)
    except RegistryError as err:
        raise VerificationFailed("registry", str(err)) from err


def _verifying_key(
    record: Mapping[str, Any],
    request: UnlearningRequest,
    srs: backend.Srs,
    registry: Registry,
    key_cache: str | Path | None,
) -> bytes:
    """The chunk circuits' key under the registered configuration, the request's repair bound and its K
    forget directions."""
    try:
        config = ch.bounded_config(ProofConfig.from_dict(record["config"]), request.max_delta)
    except ValueError as err:
        raise VerificationFailed("bound", f"the request's repair bound cannot be proven: {err}") from err
    directions = request.forget_directions if config.level == "F" else 0  # check_directions names the level
    try:
        return ch.verifying_key(
            config,
            srs,
            registry.path.with_name(registry.path.name + ".vk") if key_cache is None else key_cache,
            directions,
        )
    except (ValueError, backend.BackendError) as err:
        raise VerificationFailed("srs", str(err)) from err


def _accept(registry: Registry, client_id: str, request: UnlearningRequest, acceptance: Acceptance) -> int:
    try:
        return registry.accept(
            client_id,
            request_id=request.request_id,
            base_version=acceptance.base_version,
            updates=acceptance.updates,
            bundle_hash=acceptance.bundle_hash,
        )
    except RegistryConflict as err:
        raise VerificationFailed(err.check, str(err)) from err


# ------------------------------------------------------------------------------- many bundles at once


@dataclasses.dataclass(frozen=True)
class BatchOutcome:
    """One bundle of a batch: its report when accepted, else the failure (``check`` names it)."""

    bundle: str
    client_id: str | None
    report: VerificationReport | None = None
    failure: VerificationFailed | None = None

    @property
    def accepted(self) -> bool:
        return self.report is not None


def verify_many(
    registry: Registry,
    submissions: Sequence[tuple[UnlearningRequest, str | Path]],
    *,
    srs: backend.Srs,
    executor: str = "process",
    workers: int | None = None,
    progress: bool = True,
    ray_address: str | None = None,
    key_cache: str | Path | None = None,
    batch: bool = True,
) -> list[BatchOutcome]:
    """Verify many bundles (``(request, bundle path)`` pairs, any clients); accept each that passes.

    The checks (:func:`check_submission`) fan out over ``workers`` (``executor`` ``"process"``, ``"ray"``
    or ``"serial"``, as :func:`circuit_compiler.executors.map_on_workers`); workers open the SRS and the
    bundles by path, so on a Ray cluster every node must read those paths. Only this process writes the
    registry, through the same compare-and-swap as :func:`verify`. A client's bundles are checked in
    submission order, one per round (its n-th bundle against the record its first n - 1 left), so the
    outcomes, in submission order, are those of :func:`verify` called on each bundle in turn.
    """
    from circuit_compiler.executors import file_backed_srs_path, map_on_workers

    outcomes: list[BatchOutcome | None] = [None] * len(submissions)
    rounds: list[list[tuple[int, str]]] = []
    seen: dict[str, int] = {}
    for n, (_, bundle) in enumerate(submissions):
        try:
            client_id = _bundle_client(bundle)
        except VerificationFailed as err:
            outcomes[n] = BatchOutcome(str(bundle), None, failure=err)
            continue
        position = seen[client_id] = seen.get(client_id, -1) + 1
        if position == len(rounds):
            rounds.append([])
        rounds[position].append((n, client_id))
    init_args = (srs,) if executor == "serial" else (file_backed_srs_path(srs, executor), srs.sha256)
    for round_ in rounds:
        calls, owners = [], []
        for n, client_id in round_:
            request, bundle = submissions[n]
            try:
                record = _registered(registry, client_id)
                vk = _verifying_key(record, request, srs, registry, key_cache)
                calls.append((request, str(bundle), record, vk, batch))
                owners.append((n, client_id))
            except VerificationFailed as err:
                outcomes[n] = BatchOutcome(str(bundle), client_id, failure=err)
        results = map_on_workers(
            _check_or_failure,
            calls,
            init=_open_srs,
            init_args=init_args,
            executor=executor,
            workers=workers,
            progress=progress,
            desc="verifying bundles",
            unit="bundle",
            ray_address=ray_address,
        )
        for (n, client_id), result in zip(owners, results):
            request, bundle = submissions[n]
            try:
                if isinstance(result, VerificationFailed):
                    raise result
                report, acceptance = result
                report.model_version = _accept(registry, client_id, request, acceptance)
                outcomes[n] = BatchOutcome(str(bundle), client_id, report=report)
            except VerificationFailed as err:
                outcomes[n] = BatchOutcome(str(bundle), client_id, failure=err)
    return outcomes  # type: ignore[return-value]


def _open_srs(srs_or_path: backend.Srs | str, sha256: str | None = None) -> backend.Srs:
    if isinstance(srs_or_path, backend.Srs):
        return srs_or_path
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", backend.InsecureSrsWarning)  # the caller was warned already
        return backend.Srs.load(srs_or_path, expected_sha256=sha256)


def _check_or_failure(
    srs: backend.Srs, request: UnlearningRequest, bundle: str, record: Mapping[str, Any], vk: bytes, batch: bool
) -> tuple[VerificationReport, Acceptance] | VerificationFailed:
    try:
        return check_submission(srs, request, bundle, record, vk, batch=batch)
    except VerificationFailed as err:  # returned, not raised: the other bundles of the batch go on
        return err
