"""The provider's side: accept registrations, and verify proof bundles against the registry.

Verification recomputes everything it can from public data (the chunk shape and keys from the registered
configuration, the instance columns from the request's mask, which chunks are touched) and takes the
commitments from the registry, never from the client, except the new θ' commitments that the proofs bind.
The registry is updated only after every check passed.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from circuit_compiler import backend

from . import chunks as ch
from .artifacts import ArtifactError, read_artifact
from .client import BUNDLE, REGISTRATION
from .config import ProofConfig
from .registry import Registry, RegistryError
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
    """Record a client's registration (configuration and commitments); a client registers once."""
    art = read_artifact(registration_path, REGISTRATION)
    client_id = art.field("client_id", str)
    try:
        config = ProofConfig.from_dict(art.field("config", dict))
    except (ValueError, TypeError) as err:
        raise ArtifactError(f"{art.path}/manifest.json: field 'config': {err}") from err
    if art.field("config_digest", str) != config.digest():
        raise ArtifactError(f"{art.path}/manifest.json: field 'config_digest' does not match field 'config'")
    if config.srs_hash != srs.sha256:
        raise ArtifactError(f"{art.path}/manifest.json: registered under SRS {config.srs_hash[:12]}..., the "
                            f"provider's SRS is {srs.sha256[:12]}...")
    commitments = art.field("commitments", dict)
    expected_names = {"theta"} | ({f"g_{l}" for l in range(config.lanes)} if config.level == "F" else set())
    for layer in config.layers:
        per = commitments.get(layer.name)
        if not isinstance(per, list) or len(per) != config.n_chunks(layer):
            raise ArtifactError(f"{art.path}/manifest.json: field 'commitments' of layer {layer.name!r} must list "
                                f"{config.n_chunks(layer)} chunks")
        for c, entry in enumerate(per):
            if not isinstance(entry, dict) or set(entry) != expected_names:
                raise ArtifactError(f"{art.path}/manifest.json: commitments of layer {layer.name!r} chunk {c} must "
                                    f"name {sorted(expected_names)}")
            for name, hexpoint in entry.items():
                if not _is_point_hex(hexpoint):
                    raise ArtifactError(f"{art.path}/manifest.json: commitment {name!r} of layer {layer.name!r} "
                                        f"chunk {c} is not a 48-byte hex point")
    if registry.has(client_id):
        raise RegistryError(f"client {client_id!r} is already registered")
    record = {"client_id": client_id, "config": config.to_dict(), "config_digest": config.digest(),
              "registration": art.hash(), "commitments": commitments, "history": []}
    registry.put(client_id, record)
    return record


def _is_point_hex(x: Any) -> bool:
    if not isinstance(x, str) or len(x) != 2 * backend.COMMITMENT_BYTES:
        return False
    try:
        bytes.fromhex(x)
    except ValueError:
        return False
    return True


@dataclasses.dataclass
class VerificationReport:
    client_id: str
    request_id: str
    chunks_verified: int
    verify_s: float
    per_chunk: list[dict[str, Any]]


def verify(registry: Registry, request: UnlearningRequest, bundle_path: str | Path, *, srs: backend.Srs,
           update_registry: bool = True) -> VerificationReport:
    """Check a proof bundle; on success replace the touched chunk commitments in the registry.

    Raises :class:`VerificationFailed` naming the failed check (and layer/chunk); the registry is then
    left unchanged.
    """
    client_id = bundle_client_id(bundle_path)
    try:
        record = registry.get(client_id)
    except RegistryError as err:
        raise VerificationFailed("registry", str(err)) from err
    report, new_record = check_bundle(record, request, bundle_path, srs=srs)
    if update_registry:
        registry.put(client_id, new_record)
    return report


def bundle_client_id(bundle_path: str | Path) -> str:
    """The client a bundle claims to come from (checked against the registry by :func:`check_bundle`)."""
    try:
        return read_artifact(bundle_path, BUNDLE).field("client_id", str)
    except ArtifactError as err:
        raise VerificationFailed("bundle", f"malformed proof bundle: {err}") from err


def check_bundle(record: dict[str, Any], request: UnlearningRequest, bundle_path: str | Path, *,
                 srs: backend.Srs) -> tuple[VerificationReport, dict[str, Any]]:
    """Every check of :func:`verify` against a client's registry ``record``, touching no registry.

    Returns the report and the record as it must be after accepting the bundle (a new dict; ``record`` is
    not modified). A pure function of its inputs, so batches of bundles can be checked on other machines
    (:func:`verify_many`). Raises :class:`VerificationFailed`.
    """
    try:
        art = read_artifact(bundle_path, BUNDLE)
        client_id = art.field("client_id", str)
    except ArtifactError as err:
        raise VerificationFailed("bundle", f"malformed proof bundle: {err}") from err
    if client_id != record["client_id"]:
        raise VerificationFailed("registry", f"bundle is from client {client_id!r}, the record is "
                                             f"{record['client_id']!r}'s")
    config = ProofConfig.from_dict(record["config"])

    if art.field("request_id", str) != request.request_id:
        raise VerificationFailed("request", f"bundle answers request {art.manifest['request_id']!r}, "
                                            f"not {request.request_id!r}")
    if art.field("mask_hash", str) != request.mask_hash:
        raise VerificationFailed("request", "bundle was made for another mask than this request's")
    if request.request_id in record["history"]:
        raise VerificationFailed("replay", f"request {request.request_id!r} was already applied by {client_id!r}")
    if art.field("config_digest", str) != record["config_digest"]:
        raise VerificationFailed("config", "bundle was made under another proof configuration than the registered one")
    if art.field("srs_hash", str) != srs.sha256 or config.srs_hash != srs.sha256:
        raise VerificationFailed("srs", f"bundle SRS {art.manifest['srs_hash'][:12]}..., registered "
                                        f"{config.srs_hash[:12]}..., provider {srs.sha256[:12]}...")

    # Which chunks must be proven is computed here from the public mask, not taken from the client.
    expected: dict[tuple[str, int], Any] = {}
    for layer in config.layers:
        mask_blocks = ch.blocked_mask(request.layer_mask(layer), layer, config)
        parts = ch.split_chunks(mask_blocks, config)
        for c in ch.touched_chunks(mask_blocks, config):
            expected[(layer.name, c)] = parts[c]
    entries = art.field("chunks", list)
    given: dict[tuple[str, int], dict[str, Any]] = {}
    for e in entries:
        key = (e.get("layer"), e.get("chunk"))
        if key in given:
            raise VerificationFailed("chunks", "chunk listed twice", layer=key[0], chunk=key[1])
        given[key] = e
    for key in expected:
        if key not in given:
            raise VerificationFailed("chunks", "chunk is touched by the mask but has no proof", layer=key[0],
                                     chunk=key[1])
    for key in given:
        if key not in expected:
            raise VerificationFailed("chunks", "proof for a chunk the mask does not touch", layer=key[0], chunk=key[1])

    shape = ch.chunk_shape(config)
    circuit = ch.chunk_circuit(config)
    keys = backend.keygen(srs, circuit.cs, shape.field.modulus)
    per_chunk, new_commitments = [], {}
    t_total = time.perf_counter()
    for (layer_name, c), mask_chunk in expected.items():
        e = given[(layer_name, c)]
        registered = record["commitments"][layer_name][c]
        if e.get("theta") != registered["theta"]:
            raise VerificationFailed("commitment", "the bundle's old-model commitment is not the registered one",
                                     layer=layer_name, chunk=c)
        theta_new = e.get("theta_new")
        if not _is_point_hex(theta_new):
            raise VerificationFailed("commitment", "new commitment is not a 48-byte hex point", layer=layer_name,
                                     chunk=c)
        commitments = {name: bytes.fromhex(h) for name, h in registered.items()}
        commitments["theta_new"] = bytes.fromhex(theta_new)
        try:
            proof = art.blob(e["proof"])
        except (ArtifactError, KeyError, TypeError) as err:
            raise VerificationFailed("proof-file", str(err), layer=layer_name, chunk=c) from err
        t0 = time.perf_counter()
        try:
            backend.verify_or_raise(srs, keys, circuit.cs, proof, ch.instances_for(config, mask_chunk), commitments,
                                    shape.field.modulus)
        except backend.VerificationError as err:
            raise VerificationFailed("proof", f"proof rejected against the registered commitments and the "
                                              f"request's mask ({err})", layer=layer_name, chunk=c) from err
        except backend.BackendError as err:
            raise VerificationFailed("proof", f"malformed proof ({err})", layer=layer_name, chunk=c) from err
        per_chunk.append({"layer": layer_name, "chunk": c, "verify_s": time.perf_counter() - t0,
                          "proof_bytes": len(proof)})
        new_commitments[(layer_name, c)] = theta_new
    report = VerificationReport(client_id=client_id, request_id=request.request_id, chunks_verified=len(per_chunk),
                                verify_s=time.perf_counter() - t_total, per_chunk=per_chunk)
    new_record = copy.deepcopy(record)
    for (layer_name, c), theta_new in new_commitments.items():
        new_record["commitments"][layer_name][c]["theta"] = theta_new
    new_record["history"].append(request.request_id)
    return report, new_record


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


def verify_many(registry: Registry, submissions: Sequence[tuple[UnlearningRequest, str | Path]], *,
                srs: backend.Srs, executor: str = "process", workers: int | None = None,
                progress: bool = True, ray_address: str | None = None) -> list[BatchOutcome]:
    """Verify many bundles (``(request, bundle path)`` pairs, from any clients) and update the registry.

    The proof checks fan out over ``workers`` (``executor`` ``"process"``, ``"ray"`` or ``"serial"``,
    as in :func:`circuit_compiler.executors.map_on_workers`): one task per client, which checks that
    client's bundles in the order given, each against the record the previous one left. Workers open the
    SRS and the bundles by path, so on a Ray cluster those paths must be readable on every node. Only
    this process writes the registry, once per client, and only if the client's record did not change
    while its bundles were checked (else they are all reported as rejected with check ``"registry"``).
    Outcomes come back in submission order, each what :func:`verify` on the bundles in turn would give.
    """
    from circuit_compiler.executors import file_backed_srs_path, map_on_workers

    outcomes: list[BatchOutcome | None] = [None] * len(submissions)
    chains: dict[str, list[int]] = {}
    for n, (_, bundle) in enumerate(submissions):
        try:
            chains.setdefault(bundle_client_id(bundle), []).append(n)
        except VerificationFailed as err:
            outcomes[n] = BatchOutcome(str(bundle), None, failure=err)
    calls = []
    for client_id, indices in chains.items():
        try:
            record = registry.get(client_id)
        except RegistryError as err:
            for n in indices:
                outcomes[n] = BatchOutcome(str(submissions[n][1]), client_id,
                                           failure=VerificationFailed("registry", str(err)))
            continue
        calls.append((record, [(n, submissions[n][0], str(submissions[n][1])) for n in indices]))
    if executor == "serial":
        init_args: tuple = (srs,)
    else:
        init_args = (file_backed_srs_path(srs, executor), srs.sha256)
    results = map_on_workers(_check_chain, calls, init=_open_srs, init_args=init_args, executor=executor,
                             workers=workers, progress=progress, desc="verifying clients", unit="client",
                             ray_address=ray_address)
    for (record, _), (chain, final_record) in zip(calls, results):
        client_id = record["client_id"]
        if final_record is not None:
            if registry.get(client_id) != record:
                failure = VerificationFailed("registry", f"the record of {client_id!r} changed during the batch; "
                                                         "submit its bundles again")
                chain = [(n, dataclasses.replace(o, report=None, failure=failure)) for n, o in chain]
            else:
                registry.put(client_id, final_record)
        for outcome_n, outcome in chain:
            outcomes[outcome_n] = outcome
    return outcomes  # type: ignore[return-value]


def _open_srs(srs_or_path: backend.Srs | str, sha256: str | None = None) -> backend.Srs:
    if isinstance(srs_or_path, backend.Srs):
        return srs_or_path
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", backend.InsecureSrsWarning)  # the caller was warned already
        return backend.Srs.load(srs_or_path, expected_sha256=sha256)


def _check_chain(srs: backend.Srs, record: dict[str, Any],
                 items: list[tuple[int, UnlearningRequest, str]]) -> tuple[list[tuple[int, BatchOutcome]],
                                                                           dict[str, Any] | None]:
    """One client's bundles in order, each against the record the accepted ones before it left (what
    :func:`verify` called on each in turn would do); returns the outcomes and the final record."""
    out, current, changed = [], record, False
    for n, request, bundle in items:
        try:
            report, current = check_bundle(current, request, bundle, srs=srs)
            changed = True
            out.append((n, BatchOutcome(bundle, record["client_id"], report=report)))
        except VerificationFailed as err:
            out.append((n, BatchOutcome(bundle, record["client_id"], failure=err)))
    return out, (current if changed else None)
