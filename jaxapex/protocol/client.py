"""The client's three steps: ``commit`` (at personalization), ``unlearn`` and ``prove`` (per request).

The client's private state is a ``client-state`` artifact: the proof configuration, the quantized
weights θ of every target layer, at level F the quantized inverse-Fisher blocks G it committed to, the
salts of every commitment, and the full model parameters. ``unlearn`` produces the *next* state (θ' in
place of θ) carrying a ``pending`` update -- the witness of the transformation -- which ``prove`` turns
into a proof bundle for the provider. The old state is never modified.

Lifecycle: salts belong to commitments. A chunk the request does not touch keeps θ, its commitment and
its salt; a touched chunk gets θ' under a fresh salt. ``model_version`` counts the client's accepted
requests: a bundle names the version it was built on, and the provider accepts it only if the registry
is still there. Once the provider's verdict says VERIFIED, :func:`settle` turns the pending state into
the next plain state (version + 1), ready for the next request; after a rejection the client keeps
using the state it had before ``unlearn``.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from circuit_compiler import backend
from circuit_compiler.fixedpoint import dequantize, quantize, quantize_fisher_blocks
from circuit_compiler.hiding import draw_salt_seed
from circuit_compiler.lowering import lower_chunk
from circuit_compiler.witness import quantized_obs_witness, removal_witness
from jaxapex import layers
from jaxapex.checkpoints import flatten_params as _flatten
from jaxapex.checkpoints import unflatten_params as _unflatten

from . import chunks as ch
from . import rerandomization as rz
from . import wellformedness
from .artifacts import BUNDLE, REGISTRATION, STATE, Artifact, ArtifactError, npz_bytes, read_artifact, write_artifact
from .config import ProofConfig
from .requests import UnlearningRequest


def _layer_blob(i: int) -> str:
    return f"layer-{i:03d}.npz"


def _witness_blob(i: int) -> str:
    return f"witness-{i:03d}.npz"


def layer_matrix(params: Mapping[str, Any], name: str) -> np.ndarray:
    """W (out, in) in float64 of the Dense kernel at path ``name`` ('/'-joined keys); the kernel is (in, out)."""
    return np.asarray(layers.get_kernel(params, tuple(name.split("/"))), dtype=np.float64).T


def set_layer_matrix(params: Mapping[str, Any], name: str, W: np.ndarray) -> dict[str, Any]:
    """``params`` with that kernel set to ``W.T``, in the kernel's own NumPy dtype (the client's state is
    NumPy: what it commits must not pass through float32)."""
    path = tuple(name.split("/"))
    kernel = np.asarray(layers.get_kernel(params, path))
    return layers.replace_leaf(params, path, np.asarray(W, dtype=kernel.dtype).T.reshape(kernel.shape))


# ------------------------------------------------------------------------------------------- the state


@dataclasses.dataclass
class ClientState:
    client_id: str
    config: ProofConfig
    params: dict[str, Any]
    theta_q: dict[str, np.ndarray]  # layer -> (n_blocks, B) int64
    G_q: dict[str, np.ndarray]  # layer -> (n_blocks, B, B) int16/int64 (level F)
    salts: dict[str, list[dict[str, int]]]  # layer -> per chunk {committed column: salt}
    pending: dict[str, Any] | None = None  # the update awaiting a proof (request, old θ and salts)
    witness: dict[str, dict[str, np.ndarray]] | None = None
    model_version: int = 0  # accepted requests so far (the registry's version of these commitments)
    # layer -> per chunk {registered column: its registered commitment (48 bytes)}, where the client knows
    # it: the prover re-randomizes these instead of committing the columns again (missing: computed).
    commitments: dict[str, list[dict[str, bytes]]] = dataclasses.field(default_factory=dict)

    def save(self, path: str | Path) -> Path:
        blobs = {"params.npz": npz_bytes(_flatten(self.params))}
        layers = []
        for i, layer in enumerate(self.config.layers):
            arrays = {"theta_q": self.theta_q[layer.name]}
            if self.config.level == "F":
                arrays["G_q"] = self.G_q[layer.name]
            if layer.name in self.commitments:
                arrays.update(_commitment_arrays(self.commitments[layer.name], ch.registered_names(self.config)))
            blobs[_layer_blob(i)] = npz_bytes(arrays)
            layers.append(layer.name)
            if self.witness is not None:
                blobs[_witness_blob(i)] = npz_bytes(self.witness[layer.name])
        fields = {
            "client_id": self.client_id,
            "config": self.config.to_dict(),
            "layers": layers,
            "salts": {name: [{k: str(v) for k, v in s.items()} for s in per] for name, per in self.salts.items()},
            "pending": self.pending,
            "model_version": self.model_version,
        }
        return write_artifact(path, STATE, fields, blobs)

    @classmethod
    def load(cls, path: str | Path) -> ClientState:
        art = read_artifact(path, STATE)
        config = _config_of(art)
        layers = art.field("layers", list)
        if layers != [layer.name for layer in config.layers]:
            raise ArtifactError(f"{art.path}/manifest.json: field 'layers' {layers} does not match the configuration")
        theta_q, G_q, witness, commitments = {}, {}, {}, {}
        pending = art.field("pending", (dict, type(None)))
        if pending is not None:
            _check_pending(art, pending, config)
        model_version = art.manifest.get("model_version", 0)  # absent in states written before versions
        if not isinstance(model_version, int) or isinstance(model_version, bool) or model_version < 0:
            raise ArtifactError(
                f"{art.path}/manifest.json: field 'model_version' should be an integer >= 0, got {model_version!r}"
            )
        for i, layer in enumerate(config.layers):
            arrays = art.arrays(_layer_blob(i))
            n_blocks, B = config.n_blocks(layer), config.block_size
            theta_q[layer.name] = _expect(arrays, "theta_q", (n_blocks, B), art.path / _layer_blob(i))
            if config.level == "F":
                G_q[layer.name] = _expect(arrays, "G_q", (n_blocks, B, B), art.path / _layer_blob(i))
            if REGISTERED_COMMITMENTS in arrays:  # states written before they were kept lack them
                commitments[layer.name] = _commitments_of_arrays(
                    arrays, ch.registered_names(config), config.n_chunks(layer), art.path / _layer_blob(i)
                )
            if pending is not None:
                witness[layer.name] = art.arrays(_witness_blob(i))
        salts_field = art.field("salts", dict)
        salts = {}
        for layer in config.layers:
            per = salts_field.get(layer.name)
            if not isinstance(per, list) or len(per) != config.n_chunks(layer):
                raise ArtifactError(
                    f"{art.path}/manifest.json: field 'salts' of layer {layer.name!r} must list "
                    f"{config.n_chunks(layer)} chunks"
                )
            salts[layer.name] = [_salt_entry(art, layer.name, c, s, config) for c, s in enumerate(per)]
        params = _unflatten(art.arrays("params.npz"))
        return cls(
            client_id=art.field("client_id", str),
            config=config,
            params=params,
            theta_q=theta_q,
            G_q=G_q,
            salts=salts,
            pending=pending,
            witness=witness if pending is not None else None,
            model_version=model_version,
            commitments=commitments,
        )


def _is_decimal(x: Any) -> bool:
    return isinstance(x, str) and x.isascii() and x.isdigit()


def _salt_entry(art: Artifact, layer: str, chunk: int, entry: Any, config: ProofConfig) -> dict[str, int]:
    names = set(ch.registered_names(config))
    if not isinstance(entry, dict) or set(entry) != names or not all(_is_decimal(v) for v in entry.values()):
        raise ArtifactError(
            f"{art.path}/manifest.json: field 'salts' of layer {layer!r} chunk {chunk} should map "
            f"{sorted(names)} to decimal strings, got {entry!r}"
        )
    return {k: int(v) for k, v in entry.items()}


def _check_pending(art: Artifact, pending: dict[str, Any], config: ProofConfig) -> None:
    where = f"{art.path}/manifest.json: field 'pending'"
    for name in ("request_id", "mask_hash"):
        if not isinstance(pending.get(name), str):
            raise ArtifactError(f"{where}.{name} should be a string, got {pending.get(name)!r}")
    old = pending.get("old_theta_salts")
    for layer in config.layers:
        per = old.get(layer.name) if isinstance(old, dict) else None
        if not isinstance(per, list) or len(per) != config.n_chunks(layer) or not all(map(_is_decimal, per)):
            raise ArtifactError(
                f"{where}.old_theta_salts of layer {layer.name!r} should list {config.n_chunks(layer)} decimal strings"
            )


def _config_of(art: Artifact) -> ProofConfig:
    try:
        return ProofConfig.from_dict(art.field("config", dict))
    except (ValueError, TypeError) as err:
        raise ArtifactError(f"{art.path}/manifest.json: field 'config': {err}") from err


def _expect(arrays: Mapping[str, np.ndarray], key: str, shape: tuple[int, ...], where: Path) -> np.ndarray:
    if key not in arrays:
        raise ArtifactError(f"{where}: missing array {key!r}")
    a = arrays[key]
    if a.shape != shape:
        raise ArtifactError(f"{where}: array {key!r} has shape {a.shape}, expected {shape}")
    return a.astype(np.int64)


REGISTERED_COMMITMENTS, REGISTERED_KNOWN = "registered_commitments", "registered_known"


def _commitment_arrays(per_chunk: list[dict[str, bytes]], names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """(n_chunks, columns, 48) bytes and a (n_chunks, columns) mask of the entries known."""
    points = np.zeros((len(per_chunk), len(names), backend.COMMITMENT_BYTES), dtype=np.uint8)
    known = np.zeros((len(per_chunk), len(names)), dtype=bool)
    for c, entry in enumerate(per_chunk):
        for j, name in enumerate(names):
            if name in entry:
                points[c, j] = np.frombuffer(entry[name], dtype=np.uint8)
                known[c, j] = True
    return {REGISTERED_COMMITMENTS: points, REGISTERED_KNOWN: known}


def _commitments_of_arrays(
    arrays: Mapping[str, np.ndarray], names: tuple[str, ...], n_chunks: int, where: Path
) -> list[dict[str, bytes]]:
    points, known = arrays[REGISTERED_COMMITMENTS], arrays.get(REGISTERED_KNOWN)
    for key, a, shape, dtype in (
        (REGISTERED_COMMITMENTS, points, (n_chunks, len(names), backend.COMMITMENT_BYTES), np.uint8),
        (REGISTERED_KNOWN, known, (n_chunks, len(names)), np.bool_),
    ):
        if a is None or a.shape != shape or a.dtype != dtype:
            got = "missing" if a is None else f"{a.dtype} {a.shape}"
            raise ArtifactError(f"{where}: array {key!r} should be {np.dtype(dtype)} {shape}, got {got}")
    return [{name: points[c, j].tobytes() for j, name in enumerate(names) if known[c, j]} for c in range(n_chunks)]


# --------------------------------------------------------------------------------------------- commit


def commit(
    *,
    client_id: str,
    params: Mapping[str, Any],
    config: ProofConfig,
    srs: backend.Srs,
    inverse_fisher: Mapping[str, np.ndarray] | None = None,
    rng: np.random.Generator | None = None,
    executor: str = "process",
    workers: int | None = None,
    ray_address: str | None = None,
    progress: bool = False,
) -> tuple[ClientState, dict[str, Any]]:
    """Quantize and commit the target layers (and, at level F, the inverse-Fisher blocks G), and prove per
    chunk that the committed values lie in their declared ranges (:mod:`.wellformedness`).

    ``inverse_fisher``: layer name -> G (n_blocks, B, B) float, required at level F. ``executor``,
    ``workers``, ``ray_address``: where the well-formedness proofs run (as :func:`prove`). Returns the private
    state and the registration (``client_id``, configuration, commitments per layer and chunk, the
    ``wellformedness`` entries, and ``proofs``: their blobs, for :func:`write_registration`).
    """
    if config.srs_hash and config.srs_hash != srs.sha256:
        raise ValueError(f"configuration names SRS {config.srs_hash[:12]}..., the loaded SRS is {srs.sha256[:12]}...")
    config = dataclasses.replace(config, srs_hash=srs.sha256)
    if ch.circuit_k(config) > srs.k:
        raise ValueError(f"chunk circuits need k = {ch.circuit_k(config)}, the SRS has k = {srs.k}")
    modulus = ch.chunk_shape(config).field.modulus
    params = {k: v for k, v in _unflatten(_flatten(params)).items()}
    theta_q, G_q, salts, theta_parts, G_parts = {}, {}, {}, {}, {}
    for layer in config.layers:
        W = layer_matrix(params, layer.name)
        if W.shape != (layer.out_features, layer.in_features):
            raise ValueError(
                f"layer {layer.name!r} is {W.shape} in the model, {layer.out_features}×{layer.in_features} "
                "in the configuration"
            )
        blocks = W.reshape(config.n_blocks(layer), config.block_size)
        theta_q[layer.name] = quantize(blocks, config.spec.f_w, config.spec.w_w, name=f"{layer.name} weights")
        if config.level == "F":
            if inverse_fisher is None or layer.name not in inverse_fisher:
                raise ValueError(f"level F needs the inverse-Fisher blocks of layer {layer.name!r}")
            G = np.asarray(inverse_fisher[layer.name], dtype=np.float64)
            if G.shape != (config.n_blocks(layer), config.block_size, config.block_size):
                raise ValueError(
                    f"inverse Fisher of layer {layer.name!r} has shape {G.shape}, expected "
                    f"{(config.n_blocks(layer), config.block_size, config.block_size)}"
                )
            G_q[layer.name], _ = quantize_fisher_blocks(G, config.spec)
        theta_chunks = ch.split_chunks(theta_q[layer.name], config)
        G_chunks = ch.split_chunks(G_q[layer.name], config) if config.level == "F" else [None] * len(theta_chunks)
        salts[layer.name] = [
            {name: draw_salt_seed(modulus, rng) for name in ch.registered_names(config)} for _ in theta_chunks
        ]
        theta_parts[layer.name], G_parts[layer.name] = theta_chunks, G_chunks
    # The well-formedness proofs commit every registered column (in the workers, once each).
    wellformed, proofs, commitments = wellformedness.prove(
        srs,
        config,
        client_id=client_id,
        theta=theta_parts,
        G=G_parts,
        salts=salts,
        executor=executor,
        workers=workers,
        ray_address=ray_address,
        progress=progress,
    )
    state = ClientState(
        client_id=client_id,
        config=config,
        params=params,
        theta_q=theta_q,
        G_q=G_q,
        salts=salts,
        commitments=commitments,
    )
    registration = {
        "client_id": client_id,
        "config": config.to_dict(),
        "config_digest": config.digest(),
        "commitments": {
            layer: [{name: point.hex() for name, point in per.items()} for per in chunks]
            for layer, chunks in commitments.items()
        },
        "wellformedness": wellformed,
        "proofs": proofs,
    }
    return state, registration


def write_registration(path: str | Path, registration: Mapping[str, Any]) -> Path:
    """Write the registration artifact: its fields in the manifest, its well-formedness proofs as blobs."""
    fields = {k: v for k, v in registration.items() if k != "proofs"}
    return write_artifact(path, REGISTRATION, fields, dict(registration.get("proofs", {})))


# -------------------------------------------------------------------------------------------- unlearn


def request_layer_mask(config: ProofConfig, request: UnlearningRequest, layer) -> np.ndarray:
    """The request's mask of a registered layer (all False when the request leaves the layer alone)."""
    if layer.name not in request.masks:
        return np.zeros((layer.out_features, layer.in_features), dtype=bool)
    return request.layer_mask(layer)


def check_coverage(config: ProofConfig, request: UnlearningRequest) -> None:
    """Refuse a request this client cannot satisfy in full: masked weights in a layer it did not commit."""
    registered = {layer.name for layer in config.layers}
    for name, mask in request.masks.items():
        if name not in registered and np.asarray(mask).any():
            raise ValueError(
                f"request {request.request_id!r} masks layer {name!r}, which this client did not "
                f"commit (committed: {sorted(registered)}); it cannot be satisfied in full"
            )


def unlearn(
    state: ClientState,
    request: UnlearningRequest,
    *,
    removal_update: Callable[[str, np.ndarray, np.ndarray], np.ndarray] | None = None,
    rng: np.random.Generator | None = None,
) -> ClientState:
    """Apply the request: the next state (θ' in place of θ) with the pending witness.

    Level F: Group OBS with the committed G (quantized), solved and rounded exactly as the circuit checks;
    with the request's K forget directions, the forget-aware update (``U_b Δ = 0`` within the circuit's
    tolerance; directions quantized by :func:`.chunks.layer_directions_q`). Level R: θ' = θ + Δ off the mask, 0 on it, with ``Δ = removal_update(layer, W, mask)`` (default 0, plain
    masking) -- level R proves nothing about Δ inside touched blocks. Touched chunks get a fresh θ' salt;
    every other chunk keeps its salt, so its registered commitment stays valid.
    """
    config = state.config
    if state.pending is not None:
        raise ValueError(
            f"client state already carries a pending update for request "
            f"{state.pending.get('request_id')!r}: prove it, and settle it once verified, or unlearn "
            "from the state before it"
        )
    check_coverage(config, request)
    K = request.forget_directions
    if K and config.level != "F":
        raise ValueError(
            f"request {request.request_id!r} asks for {K} forget direction(s): only level F proves the "
            f"compensation, this client committed at level {config.level}"
        )
    spec = ch.bounded_config(config, request.max_delta).spec  # Δ must fit the request's bound
    modulus = ch.chunk_shape(config).field.modulus
    params = state.params
    new_theta_q, witness, new_salts = {}, {}, {}
    for layer in config.layers:
        mask = request_layer_mask(config, request, layer)
        theta = dequantize(state.theta_q[layer.name], config.spec.f_w)
        if config.level == "F":
            # Exactly the committed θ and G: the witness is computed from the quantized values.
            U_q = ch.layer_directions_q(request.layer_directions(layer.name), layer, config)
            w = quantized_obs_witness(
                state.theta_q[layer.name],
                state.G_q[layer.name],
                mask.reshape(theta.shape),
                spec=spec,
                U_q=U_q,
                forget=None if U_q is None else ch.chunk_shape(config, K).forget,
            )
            witness[layer.name] = {
                "theta_q": w.theta_q,
                "theta_new_q": w.theta_new_q,
                "mask": w.mask,
                "delta_q": w.delta_q,
                "y_q": w.y_q,
                "rem": w.rem,
            }
            if w.mu_q is not None:
                witness[layer.name].update(U_q=w.U_q, mu_q=w.mu_q)
        else:
            W = theta.reshape(layer.out_features, layer.in_features)
            delta = np.zeros_like(W) if removal_update is None else removal_update(layer.name, W, mask)
            w = removal_witness(
                theta,
                delta.reshape(theta.shape),
                mask.reshape(theta.shape),
                spec=spec,
                block_size=config.block_size,
            )
            witness[layer.name] = {
                "theta_q": w.theta_q,
                "theta_new_q": w.theta_new_q,
                "mask": w.mask,
                "delta_q": w.delta_q,
            }
        new_theta_q[layer.name] = w.theta_new_q
        touched = set(ch.touched_chunks(np.asarray(w.mask, dtype=bool), config))
        new_salts[layer.name] = [
            {**s, "theta": draw_salt_seed(modulus, rng)} if c in touched else dict(s)
            for c, s in enumerate(state.salts[layer.name])
        ]
        W_new = dequantize(w.theta_new_q, config.spec.f_w).reshape(layer.out_features, layer.in_features)
        params = set_layer_matrix(params, layer.name, W_new)
    pending = {
        "request_id": request.request_id,
        "mask_hash": request.mask_hash,
        "forget_directions": K,
        "directions_hash": request.directions_hash,
        "old_theta_salts": {name: [str(s["theta"]) for s in per] for name, per in state.salts.items()},
    }
    return ClientState(
        client_id=state.client_id,
        config=config,
        params=params,
        theta_q=new_theta_q,
        G_q=state.G_q,
        salts=new_salts,
        pending=pending,
        witness=witness,
        model_version=state.model_version,
        commitments=state.commitments,  # θ's stay registered until the provider accepts the new ones
    )


def settle(state: ClientState, verdict: Mapping[str, Any] | None = None) -> ClientState:
    """The state to keep once the provider accepted the proof: the pending update dropped, version + 1.

    ``verdict``: the provider's verdict (``jaxapex verify --json``); when given it must say VERIFIED, for
    this client, this request and the next model version, otherwise :class:`ValueError` (keep the state
    from before ``unlearn`` after a rejection).
    """
    if state.pending is None:
        raise ValueError("client state has no pending update to settle (it is already settled)")
    if verdict is not None:
        expected = {
            "verified": True,
            "client_id": state.client_id,
            "request_id": state.pending["request_id"],
            "model_version": state.model_version + 1,
        }
        for name, value in expected.items():
            if verdict.get(name) != value:
                raise ValueError(
                    f"verdict field {name!r} is {verdict.get(name)!r}, settling this state needs "
                    f"{value!r}"
                    + (
                        " (the provider rejected the bundle: keep the state from before unlearn)"
                        if name == "verified"
                        else ""
                    )
                )
    return dataclasses.replace(
        state,
        pending=None,
        witness=None,
        model_version=state.model_version + 1,
        commitments=_without_replaced_theta(state),
    )


def _without_replaced_theta(state: ClientState) -> dict[str, list[dict[str, bytes]]]:
    """The registered commitments after the pending request is accepted: θ of every chunk it touched is
    now the new model's (not kept here: the next proof of that chunk commits it), G is unchanged."""
    out = {}
    for layer in state.config.layers:
        if layer.name not in state.commitments:
            continue
        touched = set(ch.touched_chunks(np.asarray(state.witness[layer.name]["mask"], dtype=bool), state.config))
        out[layer.name] = [
            {name: point for name, point in entry.items() if not (name == "theta" and c in touched)}
            for c, entry in enumerate(state.commitments[layer.name])
        ]
    return out


# ---------------------------------------------------------------------------------------------- prove


@dataclasses.dataclass(frozen=True)
class ChunkJob:
    layer: str
    chunk: int
    inputs: tuple  # lower_chunk positional arguments
    salts: dict[str, int]
    forget: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # U_q, mu_q of the chunk (K > 0)


def chunk_jobs(state: ClientState, request: UnlearningRequest) -> list[ChunkJob]:
    """One job per chunk touched by the mask, with everything needed to lower and prove it."""
    config = state.config
    if state.pending is None or state.witness is None:
        raise ValueError("client state has no pending update: run unlearn first")
    if state.pending["request_id"] != request.request_id or state.pending["mask_hash"] != request.mask_hash:
        raise ValueError(f"pending update is for request {state.pending['request_id']!r}, not {request.request_id!r}")
    if state.pending.get("directions_hash", "") != request.directions_hash:
        raise ValueError(
            f"pending update was computed for other forget directions than request {request.request_id!r}'s "
            f"(K = {state.pending.get('forget_directions', 0)}, the request's K = {request.forget_directions})"
        )
    jobs = []
    for layer in config.layers:
        w = state.witness[layer.name]
        old_salts = [int(s) for s in state.pending["old_theta_salts"][layer.name]]
        parts = {key: ch.split_chunks(np.asarray(w[key]), config) for key in w}
        G_parts = ch.split_chunks(state.G_q[layer.name], config) if config.level == "F" else None
        for c in ch.touched_chunks(np.asarray(w["mask"]), config):
            salts = {
                **state.salts[layer.name][c],
                "theta": old_salts[c],
                "theta_new": state.salts[layer.name][c]["theta"],
            }
            inputs = (
                parts["theta_q"][c],
                parts["theta_new_q"][c],
                None if G_parts is None else G_parts[c],
                parts["mask"][c],
                parts["y_q"][c] if "y_q" in parts else None,
                parts["delta_q"][c],
                parts["rem"][c] if "rem" in parts else None,
            )
            forget = {key: parts[key][c] for key in ("U_q", "mu_q") if key in parts}
            jobs.append(ChunkJob(layer=layer.name, chunk=c, inputs=inputs, salts=salts, forget=forget))
    return jobs


def lower_job(job: ChunkJob, config: ProofConfig):
    """The chunk's circuit and witness (the structure is the same for every chunk of the configuration)."""
    shape = ch.chunk_shape(config, 0 if "U_q" not in job.forget else job.forget["U_q"].shape[1])
    return lower_chunk(
        *job.inputs,
        spec=config.spec,
        level=config.level,
        lanes=shape.lanes,
        salts=job.salts,
        field=shape.field,
        k=shape.k,
        forget=shape.forget,
        U_q=job.forget.get("U_q"),
        mu_q=job.forget.get("mu_q"),
    )


def prove(
    state: ClientState,
    request: UnlearningRequest,
    srs: backend.Srs,
    *,
    progress: bool = True,
    workers: int | None = None,
    executor: str = "process",
    ray_address: str | None = None,
    jobs_in_flight: int = 16,
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Prove every touched chunk; returns the bundle's manifest fields and its blobs (one proof per chunk).

    Chunks are independent proofs: ``executor`` ``"process"`` (a local pool, default), ``"ray"`` or
    ``"serial"`` (``ray_address``: a running Ray cluster to join), one pool for the whole request. Witnesses
    are lowered here one by one as workers free up, at most ``jobs_in_flight`` waiting or being proven, so
    memory stays bounded on big models.
    """
    from circuit_compiler.executors import ProveJob, prove_many

    config = state.config
    if config.srs_hash != srs.sha256:
        raise ValueError(
            f"state was committed under SRS {config.srs_hash[:12]}..., the loaded SRS is {srs.sha256[:12]}..."
        )
    registered = chunk_jobs(state, request)
    proven = ch.bounded_config(config, request.max_delta)  # the circuits of the request's repair bound
    modulus = ch.chunk_shape(config).field.modulus
    layer_index = {layer.name: i for i, layer in enumerate(config.layers)}
    # every proof opens θ and G under fresh salts, re-randomized from the registered commitments
    fresh = [dataclasses.replace(job, salts=rz.fresh_salts(config, job.salts)) for job in registered]

    def prove_jobs():
        for old, job in zip(registered, fresh):
            cs, assignment = lower_job(job, proven)
            # the re-randomized commitments the client can derive from its registered ones need no MSM
            known = rz.presented_commitments(
                srs,
                config,
                registered=_registered_commitments(state, old.layer, old.chunk),
                registered_salts=old.salts,
                salts=job.salts,
            )
            yield ProveJob(name=f"{job.layer}#{job.chunk}", cs=cs, assignment=assignment, known_commitments=known)

    jobs = prove_jobs()
    first = next(jobs, None)
    results = []
    if first is not None:  # every chunk of a request shares its circuit
        results = prove_many(
            itertools.chain([first], jobs),
            srs,
            executor=executor if len(registered) > 1 else "serial",
            workers=workers,
            progress=progress,
            modulus=modulus,
            ray_address=ray_address,
            circuits=[first.cs],
            total=len(registered),
            in_flight=jobs_in_flight,
        )
    entries, blobs = [], {}
    for old, job, result in zip(registered, fresh, results):
        name = f"proof-{layer_index[job.layer]:03d}-{job.chunk:05d}.bin"
        blobs[name] = result.proof
        entry, _ = rz.prove_entry(
            srs,
            config,
            registered_salts=old.salts,
            salts=job.salts,
            presented=result.commitments,
            request_id=request.request_id,
            layer=job.layer,
            chunk=job.chunk,
        )
        entries.append(
            {
                "layer": job.layer,
                "chunk": job.chunk,
                "proof": name,
                "theta_new": result.commitments["theta_new"].hex(),
                **entry,
                "prove_s": round(result.prove_s, 4),
            }
        )
    fields = {
        "client_id": state.client_id,
        "request_id": request.request_id,
        "mask_hash": request.mask_hash,
        "forget_directions": request.forget_directions,
        "directions_hash": request.directions_hash,
        "config_digest": config.digest(),
        "max_delta": request.max_delta,
        "srs_hash": srs.sha256,
        "base_version": state.model_version,
        "chunks": entries,
    }
    return fields, blobs


def _registered_commitments(state: ClientState, layer: str, chunk: int) -> dict[str, bytes]:
    per_chunk = state.commitments.get(layer)
    return dict(per_chunk[chunk]) if per_chunk is not None else {}


def write_bundle(path: str | Path, fields: Mapping[str, Any], blobs: Mapping[str, bytes]) -> Path:
    return write_artifact(path, BUNDLE, dict(fields), dict(blobs))
