"""The provider's unlearning request: a public mask per target layer, with an id and a hash.

The mask is in weight space (W is out × in, as in DESIGN.md section 3), so one request serves every client
whatever block size or level it registered under.
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


def mask_hash(masks: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over (layer name, shape, packed bits) of every mask, in name order."""
    h = hashlib.sha256()
    for name in sorted(masks):
        m = np.asarray(masks[name], dtype=bool)
        h.update(name.encode() + b"\0" + repr(m.shape).encode() + b"\0" + np.packbits(m.ravel()).tobytes())
    return h.hexdigest()


@dataclasses.dataclass(frozen=True)
class UnlearningRequest:
    request_id: str
    model_id: str
    masks: Mapping[str, np.ndarray]  # layer name -> bool (out, in)
    description: str = ""
    # the public bound on the repair: every proven Δ off the mask lies in [-max_delta, max_delta) (weight
    # units, a power of two); the chunk circuits, and so their keys, depend on it
    max_delta: float = PROTOCOL_MAX_DELTA

    def __post_init__(self) -> None:
        power_of_two_exponent(self.max_delta)  # a power of two, or a clear error

    @property
    def mask_hash(self) -> str:
        return mask_hash(self.masks)

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
            "max_delta": self.max_delta,
        }
        keyed = {f"layer{i}": np.asarray(self.masks[name], dtype=bool) for i, name in enumerate(sorted(self.masks))}
        return write_artifact(path, REQUEST, fields, {MASKS_BLOB: npz_bytes(keyed)})

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
        request = cls(
            request_id=art.field("request_id", str),
            model_id=art.field("model_id", str),
            masks=masks,
            description=description,
            max_delta=float(max_delta),
        )
        if request.mask_hash != art.field("mask_hash", str):
            raise ArtifactError(f"{art.path}/manifest.json: field 'mask_hash' does not match {MASKS_BLOB}")
        return request


def new_request_id() -> str:
    return "req-" + secrets.token_hex(8)
