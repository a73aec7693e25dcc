"""The proof configuration both parties agree on at registration time.

It fixes everything the circuit *shape* depends on (so the proving and verifying keys), and nothing that
depends on a request: target layers and their shapes, block size, lanes, blocks per chunk, the binding
level and the fixed-point formats. The mask of a later request only enters as instance values.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from typing import Any

from circuit_compiler.fixedpoint import PROTOCOL_Y_BITS, FixedPointSpec, spec_for_block_size  # noqa: F401

LEVELS = ("R", "F")


@dataclasses.dataclass(frozen=True)
class LayerShape:
    """One target matrix W (out × in) of the model, by its path name (keys joined with '/')."""

    name: str
    out_features: int
    in_features: int

    @property
    def size(self) -> int:
        return self.out_features * self.in_features


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProofConfig:
    layers: tuple[LayerShape, ...]
    level: str = "F"
    block_size: int = 16
    lanes: int = 16
    blocks_per_chunk: int = 64
    spec: FixedPointSpec = FixedPointSpec()
    srs_hash: str = ""

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ValueError(f"ProofConfig.level must be one of {LEVELS}, got {self.level!r}")
        if self.block_size < 1 or self.lanes < 1 or self.blocks_per_chunk < 1:
            raise ValueError(
                f"ProofConfig: block_size={self.block_size}, lanes={self.lanes}, "
                f"blocks_per_chunk={self.blocks_per_chunk} must all be >= 1"
            )
        if self.block_size % self.lanes:
            raise ValueError(f"ProofConfig: lanes={self.lanes} must divide block_size={self.block_size}")
        names = [layer.name for layer in self.layers]
        if len(set(names)) != len(names):
            raise ValueError(f"ProofConfig: duplicate layer names in {names}")
        for layer in self.layers:
            if layer.size % self.block_size:
                raise ValueError(
                    f"ProofConfig: block size {self.block_size} does not divide layer {layer.name!r} "
                    f"({layer.out_features}×{layer.in_features} = {layer.size} weights)"
                )

    def layer(self, name: str) -> LayerShape:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"proof configuration has no layer {name!r}; layers: {[l.name for l in self.layers]}")

    def n_blocks(self, layer: LayerShape) -> int:
        return layer.size // self.block_size

    def n_chunks(self, layer: LayerShape) -> int:
        return math.ceil(self.n_blocks(layer) / self.blocks_per_chunk)

    @property
    def chunk_weights(self) -> int:
        return self.blocks_per_chunk * self.block_size

    def to_dict(self) -> dict[str, Any]:
        return {
            "layers": [dataclasses.asdict(layer) for layer in self.layers],
            "level": self.level,
            "block_size": self.block_size,
            "lanes": self.lanes,
            "blocks_per_chunk": self.blocks_per_chunk,
            "spec": self.spec.to_dict(),
            "srs_hash": self.srs_hash,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProofConfig:
        try:
            return cls(
                layers=tuple(LayerShape(**layer) for layer in d["layers"]),
                level=d["level"],
                block_size=int(d["block_size"]),
                lanes=int(d["lanes"]),
                blocks_per_chunk=int(d["blocks_per_chunk"]),
                spec=FixedPointSpec.from_dict(d["spec"]),
                srs_hash=str(d.get("srs_hash", "")),
            )
        except KeyError as err:
            raise ValueError(f"proof configuration: missing field {err.args[0]!r}") from err

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()
