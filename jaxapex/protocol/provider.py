"""The provider's side: accept registrations, and verify proof bundles against the registry.

Verification recomputes everything it can from public data (the chunk shape and keys from the registered
configuration, the instance columns from the request's mask, which chunks are touched) and takes the
commitments from the registry, never from the client, except the new θ' commitments that the proofs bind.
The registry is updated only after every check passed.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from circuit_compiler import backend
from circuit_compiler.rerandomize import RerandomizationError

from . import chunks as ch
from . import rerandomization as rz
from . import wellformedness
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
        self.check, self.layer, self.chunk = check, layer, chunk


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
    try:  # the chunk circuits' no-wrap bounds assume registered θ and G inside their declared ranges
        wellformedness.verify(srs, config, client_id=client_id, commitments=commitments,
                              entries=art.field("wellformedness", dict), blob=art.blob)
    except wellformedness.WellFormednessError as err:
        raise VerificationFailed("wellformedness", f"registration rejected: {err}", layer=err.layer,
                                 chunk=err.chunk) from err
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
    try:
        art = read_artifact(bundle_path, BUNDLE)
        client_id = art.field("client_id", str)
    except ArtifactError as err:
        raise VerificationFailed("bundle", f"malformed proof bundle: {err}") from err
    try:
        record = registry.get(client_id)
    except RegistryError as err:
        raise VerificationFailed("registry", str(err)) from err
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
        theta_new = e.get("theta_new")
        if not _is_point_hex(theta_new):
            raise VerificationFailed("commitment", "new commitment is not a 48-byte hex point", layer=layer_name, chunk=c)
        try:  # the proof opens re-randomizations of the registered θ (and G), proven to commit to the same values
            commitments = rz.check_entry(srs, config, registered=registered, entry=e, request_id=request.request_id,
                                         layer=layer_name, chunk=c)
        except RerandomizationError as err:
            raise VerificationFailed("rerandomization", f"re-randomized commitments rejected against the registered "
                                                        f"ones: {err}", layer=layer_name, chunk=c) from err
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
    if update_registry:
        for (layer_name, c), theta_new in new_commitments.items():
            record["commitments"][layer_name][c]["theta"] = theta_new
        record["history"].append(request.request_id)
        registry.put(client_id, record)
    return report
