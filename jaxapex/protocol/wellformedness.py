"""Registration well-formedness proofs: per chunk, the registered θ (and G) lie in their declared ranges.

At ``commit`` the client proves, for every chunk, the circuit of :mod:`circuit_compiler.wellformed` over
a re-randomization of the commitments it registers (fresh salts, with a proof of knowledge of the shifts
bound to the client id, layer and chunk: :mod:`.rerandomization`), so the registered salts stay unopened.
``register`` checks every such proof before the client enters the registry. The cost is paid once.

Registration fields: ``wellformedness`` -> layer -> per chunk ``{"proof": blob name, "rerandomized",
"rerandomization"}``; the proofs are blobs of the registration artifact.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from circuit_compiler import backend
from circuit_compiler import rerandomize as rr
from circuit_compiler.lowering import committed_columns
from circuit_compiler.wellformed import (
    build_wellformed_circuit,
    registered_names,
    wellformed_assignment,
)

from . import chunks as ch
from . import rerandomization as rz
from .config import ProofConfig


def request_id(client_id: str) -> str:
    """The context the registration's re-randomization proofs are bound to."""
    return f"registration/{client_id}"


def blob_name(layer_index: int, chunk: int) -> str:
    return f"wellformed-{layer_index:03d}-{chunk:05d}.bin"


def prove(
    srs: backend.Srs,
    config: ProofConfig,
    *,
    client_id: str,
    theta: Mapping[str, Sequence[np.ndarray]],
    G: Mapping[str, Sequence[np.ndarray | None]],
    salts: Mapping[str, Sequence[Mapping[str, int]]],
    executor: str = "process",
    workers: int | None = None,
    ray_address: str | None = None,
    progress: bool = False,
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, bytes], dict[str, list[dict[str, bytes]]]]:
    """Well-formedness proofs of every chunk: (registration field ``wellformedness``, blobs, the registered
    commitments: layer -> per chunk {column: 48-byte commitment}).

    ``theta``/``G``: layer -> per-chunk quantized arrays; ``salts``: layer -> per-chunk registered salts.
    Each column is committed once, by its proof (under the fresh salts); the registered commitment is that
    one moved back along the salt rows.
    """
    from circuit_compiler.executors import ProveJob, prove_many

    shape = ch.chunk_shape(config)
    circuit = build_wellformed_circuit(shape)
    meta = [
        (i, layer.name, c, registered, rz.fresh_salts(config, registered))
        for i, layer in enumerate(config.layers)
        for c, registered in enumerate(salts[layer.name])
    ]

    def jobs():  # lowered one by one as workers free up (bounded memory on big models)
        for _, name, c, _, fresh in meta:
            columns = committed_columns(shape, salts=fresh, theta=theta[name][c], G=G[name][c])
            assignment = wellformed_assignment(circuit, columns)
            yield ProveJob(name=f"{name}#{c} well-formedness", cs=circuit.cs, assignment=assignment)

    results = prove_many(
        jobs(),
        srs,
        executor=executor if len(meta) > 1 else "serial",
        workers=workers,
        ray_address=ray_address,
        progress=progress,
        modulus=shape.field.modulus,
        circuits=[circuit.cs],
        total=len(meta),
    )
    fields: dict[str, list[dict[str, Any]]] = {layer.name: [] for layer in config.layers}
    commitments: dict[str, list[dict[str, bytes]]] = {layer.name: [] for layer in config.layers}
    blobs: dict[str, bytes] = {}
    for (i, name, c, registered, fresh), result in zip(meta, results):
        blobs[blob_name(i, c)] = result.proof
        entry, commitments_c = rz.prove_entry(
            srs,
            config,
            registered_salts=registered,
            salts=fresh,
            presented=result.commitments,
            request_id=request_id(client_id),
            layer=name,
            chunk=c,
        )
        fields[name].append({"proof": blob_name(i, c), **entry})
        commitments[name].append(commitments_c)
    return fields, blobs, commitments


class WellFormednessError(ValueError):
    """A registration's well-formedness proof is missing or does not verify (names layer and chunk)."""

    def __init__(self, message: str, *, layer: str, chunk: int):
        super().__init__(f"layer {layer!r} chunk {chunk}: {message}")
        self.layer, self.chunk = layer, chunk


def verify(
    srs: backend.Srs,
    config: ProofConfig,
    *,
    client_id: str,
    commitments: Mapping[str, list[dict[str, str]]],
    entries: Any,
    blob,
) -> None:
    """Check every chunk's well-formedness proof against the registered ``commitments``.

    ``entries`` is the registration's ``wellformedness`` field, ``blob(name)`` returns a proof blob.
    Raises :class:`WellFormednessError` naming the layer, chunk and reason.
    """
    shape = ch.chunk_shape(config)
    circuit = build_wellformed_circuit(shape)
    keys = backend.keygen(srs, circuit.cs, shape.field.modulus)
    names = registered_names(shape)
    for layer in config.layers:
        per = entries.get(layer.name) if isinstance(entries, dict) else None
        if not isinstance(per, list) or len(per) != config.n_chunks(layer):
            raise WellFormednessError(
                f"field 'wellformedness' must list {config.n_chunks(layer)} chunk proofs", layer=layer.name, chunk=0
            )
        for c, entry in enumerate(per):
            if not isinstance(entry, dict):
                raise WellFormednessError("malformed well-formedness entry", layer=layer.name, chunk=c)
            try:
                presented = rz.check_entry(
                    srs,
                    config,
                    registered=commitments[layer.name][c],
                    entry=entry,
                    request_id=request_id(client_id),
                    layer=layer.name,
                    chunk=c,
                )
                proof = blob(entry.get("proof"))
            except rr.RerandomizationError as err:
                raise WellFormednessError(
                    f"re-randomized commitments rejected: {err}", layer=layer.name, chunk=c
                ) from err
            except (KeyError, TypeError, ValueError) as err:
                raise WellFormednessError(f"proof file: {err}", layer=layer.name, chunk=c) from err
            try:
                backend.verify_or_raise(
                    srs, keys, circuit.cs, proof, {}, {n: presented[n] for n in names}, shape.field.modulus
                )
            except (backend.VerificationError, backend.BackendError) as err:
                raise WellFormednessError(
                    f"range proof of the registered θ/G rejected ({err})", layer=layer.name, chunk=c
                ) from err
