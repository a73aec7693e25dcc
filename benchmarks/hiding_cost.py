"""What hiding and registration checks cost per chunk, on the ViT-B fc1 workload of benchmarks/vitb_proof.

    python -m benchmarks.hiding_cost [--level F] [--block-size 16] [--k 14] [--json PATH]

For one touched chunk of the shape that fills 2^k rows, in this process (one thread, so wall ≈ CPU on an
idle machine; both are printed):

* the chunk proof itself (keygen once, then prove; proof bytes), for reference;
* per request, the re-randomization of the reused commitments (θ and, at level F, the G lanes): the
  client's commitments C' and proofs of knowledge, and the provider's check (py_ecc, pure Python);
* once, at registration: the well-formedness proof (keygen, prove, verify, bytes) and its own
  re-randomization proof and check.

Ratios are to the chunk proof of the same run. The salt cells per column are printed from the shape.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.report import Column, add_json_option, print_table, write_json
from benchmarks.vitb_proof import (
    DEFAULT_SRS_DIR,
    Workload,
    chunk_data,
    dev_srs,
    layer_masks,
    touched_chunks,
)
from circuit_compiler.executors import peak_rss_mb


def _timed(fn):
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def run(args: argparse.Namespace) -> dict[str, Any]:
    from circuit_compiler import backend
    from circuit_compiler import rerandomize as rr
    from circuit_compiler.fixedpoint import FixedPointSpec
    from circuit_compiler.hiding import expand_salts
    from circuit_compiler.lowering import (
        blocks_to_fill,
        build_chunk_circuit,
        chunk_layer,
        chunk_shape_key,
        committed_columns,
        draw_salts,
        lower_chunk,
    )
    from circuit_compiler.wellformed import (
        build_wellformed_circuit,
        registered_names,
        wellformed_assignment,
    )
    from circuit_compiler.witness import obs_witness, removal_witness

    warnings.simplefilter("ignore")
    spec = FixedPointSpec().for_block_size(args.block_size)
    lanes = args.block_size if args.level == "F" else None
    nb = blocks_to_fill(args.k, block_size=args.block_size, level=args.level, spec=spec, lanes=lanes)
    shape = chunk_shape_key(blocks=nb, block_size=args.block_size, level=args.level, spec=spec, lanes=lanes)
    workload = Workload(block_size=args.block_size, blocks_per_chunk=nb, mask_kind="random", seed=args.seed)
    masks = layer_masks(workload)
    layer, chunk = touched_chunks(masks, workload)[0]
    data = chunk_data(workload, layer, chunk, masks[layer])
    if args.level == "F":
        witness = obs_witness(data["theta"].ravel(), data["G"], data["mask"].ravel(), spec=spec)
    else:  # level R proves no G rows: any in-range Δ inside touched blocks costs the same
        delta = np.zeros(data["theta"].size)
        witness = removal_witness(
            data["theta"].ravel(), delta, data["mask"].ravel(), spec=spec, block_size=args.block_size
        )
    (cw,) = chunk_layer(witness, blocks_per_chunk=nb)
    cs = build_chunk_circuit(shape).cs
    srs = dev_srs(cs.k, Path(args.srs_dir))
    p, k = shape.field.modulus, cs.k
    rng = np.random.default_rng(args.seed)
    registered_salts = draw_salts(shape, rng=rng)
    fresh = {**draw_salts(shape, rng=rng), "theta_new": registered_salts["theta_new"]}
    names = registered_names(shape)
    out: dict[str, Any] = {
        "level": args.level,
        "block_size": args.block_size,
        "k": k,
        "blocks_per_chunk": nb,
        "salt_cells": dict(sorted(set(shape.salt_counts.items()))),
        "columns_reused": len(names),
    }

    # the chunk proof, for reference
    (cs, a), _, _ = _timed(
        lambda: lower_chunk(*cw.lowering_inputs(), spec=spec, level=args.level, lanes=lanes, salts=fresh)
    )
    keys, out["chunk_keygen_s"], _ = _timed(lambda: backend.keygen(srs, cs))
    proof, out["chunk_prove_s"], out["chunk_prove_cpu_s"] = _timed(lambda: backend.prove(srs, keys, cs, a))
    out["chunk_proof_bytes"] = len(proof)

    # per request: re-randomized commitments and the proofs of knowledge
    def client_side():
        presented = {n: backend.commit(srs, k, a.committed[n]) for n in names}
        shifts = {
            n: rr.salt_shifts(
                expand_salts(registered_salts[n], n, shape.salt_counts[n], p),
                expand_salts(fresh[n], n, shape.salt_counts[n], p),
                p,
            )
            for n in names
        }
        rows = {n: list(shape.salt_rows(n)) for n in names}
        registered, proofs = rr.prove_columns(
            srs, k, salt_rows=rows, shifts=shifts, presented=presented, ctx=rr.context("bench", "fc1", chunk)
        )
        return presented, registered, proofs, rows

    (presented, registered, proofs, rows), out["rerandomize_prove_s"], out["rerandomize_prove_cpu_s"] = _timed(
        client_side
    )
    _, out["rerandomize_verify_s"], out["rerandomize_verify_cpu_s"] = _timed(
        lambda: rr.verify_columns(
            srs,
            k,
            salt_rows=rows,
            registered=registered,
            presented=presented,
            proofs=proofs,
            ctx=rr.context("bench", "fc1", chunk),
        )
    )
    out["rerandomize_bytes"] = sum(len(json.dumps(pr.to_json())) + 96 for pr in proofs.values())

    # once, at registration: well-formedness
    G = cw.G_q if args.level == "F" else None
    columns = committed_columns(shape, salts=fresh, theta=cw.theta_q, G=G)
    wf = build_wellformed_circuit(shape)
    wa = wellformed_assignment(wf, columns)
    wkeys, out["wellformed_keygen_s"], _ = _timed(lambda: backend.keygen(srs, wf.cs))
    wproof, out["wellformed_prove_s"], out["wellformed_prove_cpu_s"] = _timed(
        lambda: backend.prove(srs, wkeys, wf.cs, wa)
    )
    ok, out["wellformed_verify_s"], _ = _timed(
        lambda: backend.verify(srs, wkeys.vk, wf.cs, wproof, {}, {n: presented[n] for n in names})
    )
    assert ok, "well-formedness proof did not verify"
    out["wellformed_proof_bytes"] = len(wproof)
    out["wellformed_advice_columns"] = wf.cs.statistics()["columns"]["advice"]
    out["ratio_rerandomize_to_prove_cpu"] = out["rerandomize_prove_cpu_s"] / out["chunk_prove_cpu_s"]
    out["ratio_wellformed_to_prove_cpu"] = out["wellformed_prove_cpu_s"] / out["chunk_prove_cpu_s"]
    out["peak_rss_mb"] = peak_rss_mb()
    out["load_average"] = os.getloadavg()
    return out


COLUMNS = (
    Column("step", "per chunk"),
    Column("wall_s", "wall_s", ".2f"),
    Column("cpu_s", "cpu_s", ".2f"),
    Column("bytes", "bytes", "d"),
)


def result_rows(r: dict[str, Any]) -> list[dict[str, Any]]:
    """The measured steps as table rows (wall, CPU, bytes where a step produces bytes)."""
    return [
        {
            "step": "chunk proof (reference)",
            "wall_s": r["chunk_prove_s"],
            "cpu_s": r["chunk_prove_cpu_s"],
            "bytes": r["chunk_proof_bytes"],
        },
        {
            "step": "re-randomization, client (per request)",
            "wall_s": r["rerandomize_prove_s"],
            "cpu_s": r["rerandomize_prove_cpu_s"],
            "bytes": r["rerandomize_bytes"],
        },
        {
            "step": "re-randomization, provider check",
            "wall_s": r["rerandomize_verify_s"],
            "cpu_s": r["rerandomize_verify_cpu_s"],
        },
        {
            "step": "well-formedness proof (once)",
            "wall_s": r["wellformed_prove_s"],
            "cpu_s": r["wellformed_prove_cpu_s"],
            "bytes": r["wellformed_proof_bytes"],
        },
        {"step": "well-formedness verify (once)", "wall_s": r["wellformed_verify_s"]},
    ]


def report(r: dict[str, Any]) -> None:
    title = (
        f"level {r['level']}, B = {r['block_size']}, k = {r['k']}, {r['blocks_per_chunk']} blocks per chunk; "
        f"salt cells per column {r['salt_cells']}; {r['columns_reused']} reused columns; "
        f"load average {', '.join(f'{x:.1f}' for x in r['load_average'])}"
    )
    print_table(result_rows(r), COLUMNS, title=title)
    print(
        f"ratios to the chunk proof (CPU): re-randomization {r['ratio_rerandomize_to_prove_cpu']:.3f}, "
        f"well-formedness {r['ratio_wellformed_to_prove_cpu']:.3f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--level", choices=("R", "F"), default="F")
    parser.add_argument("--block-size", type=int, default=16)
    parser.add_argument("--k", type=int, default=14)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--srs-dir", default=str(DEFAULT_SRS_DIR))
    add_json_option(parser)
    args = parser.parse_args(argv)
    result = run(args)
    report(result)
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
