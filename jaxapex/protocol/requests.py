"""The provider's unlearning request: a public mask per target layer, with an id and a hash.

The mask is in weight space (W is out × in, as in DESIGN.md section 3), so one request serves every client
whatever block size or level it registered under.

Optionally the request also carries K *forget directions* per masked layer, ``U`` (K, in) float64: the
top-K principal directions of the layer's inputs on the forget set (:mod:`jaxapex.forget_directions`).
The client's compensation must then satisfy ``U_b Δ = 0`` within the circuit's tolerance (forget-aware
Group OBS, proven at level F). They are public and bound like the mask: manifest fields
``forget_directions`` (K) and ``directions_hash``, blob ``directions.npz``; K = 0 (the default) is the
plain request and writes neither the hash nor the blob.
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from circuit_compiler.fixedpoint import PROTOCOL_MAX_DELTA, power_of_two_exponent

from .artifacts import REQUEST, ArtifactError, npz_bytes, read_artifact, write_artifact
from .config import LayerShape

MASKS_BLOB = "masks.npz"
DIRECTIONS_BLOB = "directions.npz"


def mask_hash(masks: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over (layer name, shape, packed bits) of every mask, in name order."""
    h = hashlib.sha256()
    for name in sorted(masks):
        m = np.asarray(masks[name], dtype=bool)
        h.update(name.encode() + b"\0" + repr(m.shape).encode() + b"\0" + np.packbits(m.ravel()).tobytes())
    return h.hexdigest()


def directions_hash(directions: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over (layer name, shape, float64 bytes) of every layer's forget directions, in name order."""
    h = hashlib.sha256(b"forget-directions\0")
    for name in sorted(directions):
        U = np.ascontiguousarray(directions[name], dtype="<f8")
        h.update(name.encode() + b"\0" + repr(U.shape).encode() + b"\0" + U.tobytes())
    return h.hexdigest()


@dataclasses.dataclass(frozen=True)
class UnlearningRequest:
    request_id: str
    model_id: str
    masks: Mapping[str, np.ndarray]  # layer name -> bool (out, in)
    description: str = ""
    directions: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)  # layer -> (K, in) float64
    # the public bound on the repair: every proven Δ off the mask lies in [-max_delta, max_delta) (weight
    # units, a power of two); the chunk circuits, and so their keys, depend on it
    max_delta: float = PROTOCOL_MAX_DELTA

    def __post_init__(self) -> None:
        check_directions(self.masks, self.directions, where=f"request {self.request_id!r}")
        power_of_two_exponent(self.max_delta)  # a power of two, or a clear error

    @property
    def mask_hash(self) -> str:
        return mask_hash(self.masks)

    @property
    def forget_directions(self) -> int:
        """K: forget directions per layer (0: the plain request)."""
        return next((int(np.shape(U)[0]) for U in self.directions.values()), 0)

    @property
    def directions_hash(self) -> str:
        """Binds the forget directions (empty for K = 0)."""
        return directions_hash(self.directions) if self.forget_directions else ""

    def layer_directions(self, name: str) -> np.ndarray | None:
        """The forget directions (K, in) of layer ``name``, or None (K = 0, or a layer the request leaves alone)."""
        U = self.directions.get(name)
        return None if U is None else np.asarray(U, dtype=np.float64)

    def layer_mask(self, layer: LayerShape) -> np.ndarray:
        if layer.name not in self.masks:
            raise ValueError(
                f"request {self.request_id!r} has no mask for layer {layer.name!r} (it has {sorted(self.masks)})"
            )
        m = np.asarray(self.masks[layer.name])
        if m.shape != (layer.out_features, layer.in_features):
            raise ValueError(
                f"request {self.request_id!r}: mask of layer {layer.name!r} has shape {m.shape}, the "
                f"model's matrix is ({layer.out_features}, {layer.in_features})"
            )
        return m.astype(bool)

    def masked_fraction(self) -> float:
        total = sum(np.asarray(m).size for m in self.masks.values())
        return float(sum(np.asarray(m).sum() for m in self.masks.values()) / max(total, 1))

    def save(self, path: str | Path) -> Path:
        fields: dict[str, Any] = {
            "request_id": self.request_id,
            "model_id": self.model_id,
            "mask_hash": self.mask_hash,
            "layers": {name: list(np.asarray(m).shape) for name, m in sorted(self.masks.items())},
            "masked_fraction": self.masked_fraction(),
            "description": self.description,
            "forget_directions": self.forget_directions,
            "max_delta": self.max_delta,
        }
        keyed = {f"layer{i}": np.asarray(self.masks[name], dtype=bool) for i, name in enumerate(sorted(self.masks))}
        blobs = {MASKS_BLOB: npz_bytes(keyed)}
        if self.forget_directions:
            fields["directions_hash"] = self.directions_hash
            blobs[DIRECTIONS_BLOB] = npz_bytes(
                {
                    f"layer{i}": np.asarray(self.directions[name], dtype="<f8")
                    for i, name in enumerate(sorted(self.masks))
                }
            )
        return write_artifact(path, REQUEST, fields, blobs)

    @classmethod
    def load(cls, path: str | Path) -> UnlearningRequest:
        art = read_artifact(path, REQUEST)
        layers = art.field("layers", dict)
        for name, shape in layers.items():
            if (
                not isinstance(shape, list)
                or len(shape) != 2
                or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)
            ):
                raise ArtifactError(
                    f"{art.path}/manifest.json: field 'layers'[{name!r}] should be [out, in] "
                    f"(positive integers), got {shape!r}"
                )
        description = art.manifest.get("description", "")
        if not isinstance(description, str):
            raise ArtifactError(f"{art.path}/manifest.json: field 'description' should be a string")
        max_delta = art.manifest.get("max_delta", PROTOCOL_MAX_DELTA)
        try:
            power_of_two_exponent(max_delta)
        except ValueError as err:
            raise ArtifactError(f"{art.path}/manifest.json: field 'max_delta': {err}") from err
        arrays = art.arrays(MASKS_BLOB)
        masks = {}
        for i, name in enumerate(sorted(layers)):
            key = f"layer{i}"
            if key not in arrays:
                raise ArtifactError(f"{art.path / MASKS_BLOB}: missing mask {key!r} of layer {name!r}")
            m = arrays[key]
            if list(m.shape) != list(layers[name]):
                raise ArtifactError(
                    f"{art.path / MASKS_BLOB}: mask of layer {name!r} has shape {m.shape}, "
                    f"manifest field 'layers' says {layers[name]}"
                )
            masks[name] = m.astype(bool)
        directions = _load_directions(art, layers)
        try:
            request = cls(
                request_id=art.field("request_id", str),
                model_id=art.field("model_id", str),
                masks=masks,
                description=description,
                directions=directions,
                max_delta=float(max_delta),
            )
        except ValueError as err:
            raise ArtifactError(f"{art.path / DIRECTIONS_BLOB}: {err}") from None
        if request.mask_hash != art.field("mask_hash", str):
            raise ArtifactError(f"{art.path}/manifest.json: field 'mask_hash' does not match {MASKS_BLOB}")
        if directions and request.directions_hash != art.field("directions_hash", str):
            raise ArtifactError(f"{art.path}/manifest.json: field 'directions_hash' does not match {DIRECTIONS_BLOB}")
        return request


def check_directions(masks: Mapping[str, np.ndarray], directions: Mapping[str, np.ndarray], *, where: str) -> None:
    """Forget directions, when present, give every masked layer the same K >= 1 finite rows of length ``in``."""
    if not directions:
        return
    if set(directions) != set(masks):
        raise ValueError(
            f"{where}: forget directions name layers {sorted(directions)}, the masks {sorted(masks)} "
            "(one (K, in) array per masked layer)"
        )
    ks = set()
    for name, U in directions.items():
        U = np.asarray(U)
        in_features = np.shape(masks[name])[1]
        if U.ndim != 2 or U.shape[1] != in_features or U.shape[0] < 1 or U.dtype.kind != "f":
            raise ValueError(
                f"{where}: forget directions of layer {name!r} should be a float array (K, in) = (K >= 1, "
                f"{in_features}), got {U.dtype} {U.shape}"
            )
        if not np.isfinite(U).all():
            raise ValueError(f"{where}: forget directions of layer {name!r} hold NaN or inf")
        ks.add(U.shape[0])
    if len(ks) > 1:
        raise ValueError(f"{where}: forget directions differ in K across layers ({sorted(ks)}); one K per request")


def _load_directions(art, layers: Mapping[str, list]) -> dict[str, np.ndarray]:
    """The request's forget directions, type-checked against manifest field 'forget_directions' (K)."""
    k = art.manifest.get("forget_directions", 0)  # absent in requests written before forget directions
    if not isinstance(k, int) or isinstance(k, bool) or k < 0:
        raise ArtifactError(
            f"{art.path}/manifest.json: field 'forget_directions' should be an integer K >= 0, got {k!r}"
        )
    has_blob = DIRECTIONS_BLOB in art.manifest["files"]
    if k == 0:
        if has_blob or "directions_hash" in art.manifest:
            raise ArtifactError(
                f"{art.path}/manifest.json: field 'forget_directions' is 0 but the request carries directions"
            )
        return {}
    if not has_blob:
        raise ArtifactError(f"{art.path}/manifest.json: field 'forget_directions' is {k}, no file {DIRECTIONS_BLOB!r}")
    arrays = art.arrays(DIRECTIONS_BLOB)
    out = {}
    for i, name in enumerate(sorted(layers)):
        key = f"layer{i}"
        U = arrays.get(key)
        if U is None or U.dtype != np.float64 or U.shape != (k, layers[name][1]):
            got = "nothing" if U is None else f"{U.dtype} {U.shape}"
            raise ArtifactError(
                f"{art.path / DIRECTIONS_BLOB}: field {key!r} (forget directions of layer {name!r}) should be "
                f"float64 (K, in) = ({k}, {layers[name][1]}) as field 'forget_directions' says, got {got}"
            )
        out[name] = U
    return out


def new_request_id() -> str:
    return "req-" + secrets.token_hex(8)
