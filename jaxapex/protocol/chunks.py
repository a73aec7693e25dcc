"""What provider and client compute identically: chunk shapes, chunking of layer arrays, commitments.

Both sides must cut a layer into the same chunks (``blocks_per_chunk`` consecutive row-major blocks,
zero-padded at the end of the layer) and build the same circuit structure per chunk shape, otherwise
commitments and keys would not line up. Everything here is a pure function of the proof configuration.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import tempfile
from pathlib import Path

import numpy as np

from circuit_compiler import backend
from circuit_compiler.fixedpoint import delta_bits_for
from circuit_compiler.lowering import (
    ChunkShape,
    build_chunk_circuit,
    chunk_instances,
    chunk_shape_key,
    committed_columns,
    split_blocks,
)
from circuit_compiler.masks import as_bool_mask

from .config import LayerShape, ProofConfig


def chunk_shape(config: ProofConfig) -> ChunkShape:
    """The one chunk shape of a configuration (every chunk of every layer shares it, so one key pair)."""
    return chunk_shape_key(
        blocks=config.blocks_per_chunk,
        block_size=config.block_size,
        level=config.level,
        spec=config.spec,
        lanes=config.lanes if config.level == "F" else None,
    )


def bounded_config(config: ProofConfig, max_delta: float) -> ProofConfig:
    """The registered configuration with the request's bound on the repair: Δ's proven width ``w_delta``
    becomes b_Δ (:func:`~circuit_compiler.fixedpoint.delta_bits_for`). The chunk circuits and keys depend on
    it; the committed columns (rows, salts, domain) do not, so the registered commitments stay valid."""
    bounded = dataclasses.replace(
        config, spec=dataclasses.replace(config.spec, w_delta=delta_bits_for(max_delta, config.spec.f_w))
    )
    registered, proven = chunk_shape(config), chunk_shape(bounded)
    if circuit_k(bounded) != circuit_k(config) or any(
        registered.salt_rows(n) != proven.salt_rows(n) for n in registered.committed_names()
    ):
        raise ValueError(f"a repair bound of {max_delta} weight units would change the committed layout")
    return bounded


@functools.lru_cache(maxsize=8)
def _circuit(shape: ChunkShape):
    return build_chunk_circuit(shape)


def circuit_k(config: ProofConfig) -> int:
    return _circuit(chunk_shape(config)).cs.k


def chunk_circuit(config: ProofConfig):
    return _circuit(chunk_shape(config))


def split_chunks(blocked: np.ndarray, config: ProofConfig) -> list[np.ndarray]:
    """Cut a blocked layer array (n_blocks, ...) into chunks of ``blocks_per_chunk``, zero-padding the last."""
    return split_blocks(blocked, config.blocks_per_chunk)


def blocked_mask(mask: np.ndarray, layer: LayerShape, config: ProofConfig) -> np.ndarray:
    """A layer mask (out, in) as (n_blocks, B) bool, validated against the layer's shape."""
    mask = np.asarray(mask)
    expected = (layer.out_features, layer.in_features)
    if mask.shape != expected:
        raise ValueError(f"mask of layer {layer.name!r} has shape {mask.shape}, the model's matrix is {expected}")
    return as_bool_mask(mask, where=f"layer {layer.name!r}: ").reshape(config.n_blocks(layer), config.block_size)


def touched_chunks(mask_blocks: np.ndarray, config: ProofConfig) -> list[int]:
    """Indices of the chunks that contain at least one masked weight (the only ones that need a proof)."""
    return [c for c, part in enumerate(split_chunks(mask_blocks, config)) if part.any()]


def chunk_commitments(
    srs: backend.Srs,
    config: ProofConfig,
    *,
    salts: dict[str, int],
    theta: np.ndarray | None = None,
    theta_new: np.ndarray | None = None,
    G: np.ndarray | None = None,
) -> dict[str, str]:
    """Commitments (hex) of the given committed columns of one chunk, exactly as its proof binds them."""
    shape = chunk_shape(config)
    columns = committed_columns(shape, salts=salts, theta=theta, theta_new=theta_new, G=G)
    return {
        name: backend.commit(srs, circuit_k(config), values, shape.field.modulus).hex()
        for name, values in columns.items()
    }


def instances_for(config: ProofConfig, mask_chunk: np.ndarray) -> dict[str, np.ndarray]:
    """The public instance columns of one chunk, from its mask alone (what the verifier recomputes)."""
    return chunk_instances(chunk_shape(config), mask_chunk)


def verifying_key(config: ProofConfig, srs: backend.Srs, cache_dir: str | os.PathLike | None = None) -> bytes:
    """The chunk circuit's verifying key (no proving key is ever built here), cached in ``cache_dir``.

    The cache file is named by the SRS hash and the circuit digest -- exactly what the key depends on
    (structure, fixed values, copies) -- so a changed circuit or SRS never reuses a stale key.
    """
    circuit = chunk_circuit(config)
    modulus = chunk_shape(config).field.modulus
    if circuit.cs.k > srs.k:
        where = f" {srs.path}" if srs.path else ""
        raise ValueError(
            f"SRS{where}: chunk circuits of this configuration need k >= {circuit.cs.k}, the SRS has k = {srs.k}"
        )
    if cache_dir is None:
        return backend.keygen_vk(srs, circuit.cs, modulus)
    cache_dir = Path(cache_dir)
    path = cache_dir / f"{srs.sha256[:16]}-{backend.circuit_digest(circuit.cs, modulus)[:32]}.vk"
    if path.is_file():
        return path.read_bytes()
    vk = backend.keygen_vk(srs, circuit.cs, modulus)
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=cache_dir)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(vk)
        os.replace(tmp, path)  # concurrent builders write identical bytes; the last rename wins
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return vk
