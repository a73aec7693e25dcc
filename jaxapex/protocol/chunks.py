"""What provider and client compute identically: chunk shapes, chunking of layer arrays, commitments.

Both sides must cut a layer into the same chunks (``blocks_per_chunk`` consecutive row-major blocks,
zero-padded at the end of the layer) and build the same circuit structure per chunk shape, otherwise
commitments and keys would not line up. Everything here is a pure function of the proof configuration
and, for a request with K forget directions, of K.

Keys and K: a request with K > 0 forget directions is proven by the level-F chunk circuit with K forget
rows (:mod:`circuit_compiler.chips.forget`), whose keys depend on the configuration and on K only -- never
on the directions or the mask, which are instance values. The forget circuit is built at the registered
circuit's k and must keep its salt rows, so commitments registered once serve requests of every K.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import tempfile
from pathlib import Path

import numpy as np

from circuit_compiler import backend, wellformed
from circuit_compiler.fixedpoint import ForgetSpec, delta_bits_for
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


def chunk_shape(config: ProofConfig, directions: int = 0) -> ChunkShape:
    """The chunk shape of a configuration (every chunk of every layer shares it, so one key pair) for a
    request with ``directions`` (K) forget directions per block."""
    plain = chunk_shape_key(
        blocks=config.blocks_per_chunk,
        block_size=config.block_size,
        level=config.level,
        spec=config.spec,
        lanes=config.lanes if config.level == "F" else None,
    )
    if not directions:
        return plain
    if config.level != "F":
        raise ValueError(
            f"a request with {directions} forget direction(s) is proven at level F only; this client registered "
            f"level {config.level} (which proves nothing about the compensation)"
        )
    shape = dataclasses.replace(plain, k=_circuit(plain).cs.k, forget=ForgetSpec(directions=directions))
    if shape.salt_counts != plain.salt_counts:
        raise ValueError(
            f"the chunk circuit with {directions} forget direction(s) needs other salt rows than the registered one"
        )
    return shape


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


def chunk_circuit(config: ProofConfig, directions: int = 0):
    return _circuit(chunk_shape(config, directions))


def registered_names(config: ProofConfig) -> tuple[str, ...]:
    """The committed columns a client registers per chunk: θ and, at level F, the G lanes."""
    return wellformed.registered_names(chunk_shape(config))


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


def instances_for(
    config: ProofConfig, mask_chunk: np.ndarray, directions_chunk: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """The public instance columns of one chunk, from its mask and (K > 0) its quantized forget directions
    (nb, K, B) (what the verifier recomputes from its own request)."""
    K = 0 if directions_chunk is None else int(np.shape(directions_chunk)[1])
    return chunk_instances(chunk_shape(config, K), mask_chunk, directions_chunk)


def layer_directions_q(directions: np.ndarray | None, layer: LayerShape, config: ProofConfig) -> np.ndarray | None:
    """A request's forget directions of ``layer`` (K, in) as the circuit's quantized per-block directions
    (n_blocks, K, B) int64 (None for K = 0): one rule for the client's witness and the verifier's instances."""
    from circuit_compiler.witness import quantize_directions
    from jaxapex.forget_directions import block_directions

    if directions is None:
        return None
    blocks = block_directions(directions, (layer.out_features, layer.in_features), config.block_size)
    return quantize_directions(blocks, chunk_shape(config, blocks.shape[1]).forget)


def verifying_key(
    config: ProofConfig, srs: backend.Srs, cache_dir: str | os.PathLike | None = None, directions: int = 0
) -> bytes:
    """The chunk circuit's verifying key (no proving key is ever built here), cached in ``cache_dir``.

    The cache file is named by the SRS hash and the circuit digest -- exactly what the key depends on
    (structure, fixed values, copies) -- so a changed circuit or SRS never reuses a stale key.
    """
    circuit = chunk_circuit(config, directions)
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
