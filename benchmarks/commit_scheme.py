"""Prover time per chunk with midnight's plain KZG commitments against the prover's own scheme ("sized").

    python -m benchmarks.commit_scheme [--block-sizes 16 128] [--k 14] [--sample 2] [--level F] [--json PATH]

The ViT-B fc1 chunks of ``benchmarks.vitb_proof`` (the same synthetic weights, inverse-Fisher blocks, random
4 % mask and seeded sample of touched chunks) are lowered once each and proven, one after the other in this
process, three ways:

* ``plain``: midnight-proofs' KZG commitments (the reference);
* ``sized``: the prover's own scheme (affine bases, scalars grouped by bit length), its commitment cache
  cleared first -- columns the process has never committed;
* ``sized+registered``: the committed θ and G columns committed first (``backend.commit``, untimed, as the
  client does at registration), so the prover's commitments of them are cache hits.

Every proof is checked by the plain KZG verifier. Per proof: wall and CPU time (user + system of this
process), and the scheme's own split (``backend.commitment_stats``): ``commit_lagrange`` (column
commitments: committed, advice, lookup and permutation columns), ``commit`` (quotient pieces and the
vanishing argument's random polynomial), ``multi_open`` (the KZG opening: its two MSMs, which stay on
midnight's path, and the polynomial arithmetic) and the rest (witness synthesis, FFTs, quotient
evaluation, lookup and permutation products, evaluations).

The process is pinned to one CPU (``--no-pin`` to lift it), as ``vitb_proof``'s recommended pinned workers
are, so the prover is single-threaded and its CPU time is what one of two provers on the 2-core machine
spends. The whole-workload figure is extrapolated, not measured: touched chunks × mean CPU per chunk / 2
(two pinned provers).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
import warnings
from typing import Any

import numpy as np

from benchmarks import vitb_proof
from benchmarks.report import Column, add_json_option, machine, print_table, write_json

VARIANTS = ("plain", "sized", "sized+registered")


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def prove_timed(srs, keys, cs, assignment, variant: str) -> tuple[bytes, dict[str, Any]]:
    """One proof of ``variant``: the proof and its wall, CPU and split figures."""
    from circuit_compiler import backend

    scheme = "plain" if variant == "plain" else "sized"
    backend.clear_commitment_cache()
    if variant == "sized+registered":
        for values in assignment.committed.values():
            backend.commit(srs, cs.k, values, commitment_scheme="sized")
    backend.commitment_stats(reset=True)
    cpu, wall = _cpu_seconds(), time.perf_counter()
    proof = backend.prove(srs, keys, cs, assignment, commitment_scheme=scheme)
    wall, cpu = time.perf_counter() - wall, _cpu_seconds() - cpu
    stats = backend.commitment_stats(reset=True)
    parts = ("commit_lagrange", "commit", "multi_open")
    row = {"variant": variant, "prove_s": wall, "prove_cpu_s": cpu}
    for part in parts:
        calls, part_wall, part_cpu = stats[part]
        row |= {f"{part}_calls": calls, f"{part}_s": part_wall, f"{part}_cpu_s": part_cpu}
    row["rest_s"] = wall - sum(row[f"{p}_s"] for p in parts)
    row["rest_cpu_s"] = cpu - sum(row[f"{p}_cpu_s"] for p in parts)
    return proof, row | {"cache_hits": stats["cache_hits"][0], "proof_bytes": len(proof)}


def measure_block_size(args: argparse.Namespace, block_size: int) -> dict[str, Any]:
    from circuit_compiler import backend
    from circuit_compiler.lowering import chunk_instances

    plan_args = argparse.Namespace(
        model="vitb",
        level=args.level,
        block_size=block_size,
        lanes=None,
        layout=None,
        blocks_per_chunk=None,
        k=args.k,
        spec=None,
        mask="random",
        seed=args.seed,
        sample=str(args.sample),
        srs_dir=args.srs_dir,
    )
    plan = vitb_proof.plan(plan_args)
    nb = plan.config.blocks_per_chunk
    keys = backend.keygen(plan.srs, plan.cs)
    rows = []
    for layer, chunk in plan.sample:
        cs, assignment, masked, _ = vitb_proof.lower_job(plan.config, plan.workload, layer, chunk, plan.masks[layer])
        part = plan.masks[layer].reshape(-1, block_size)[chunk * nb : (chunk + 1) * nb]
        part = np.concatenate([part, np.zeros((nb - part.shape[0], block_size), dtype=bool)])
        instances = chunk_instances(plan.shape, part)
        commitments = {
            name: backend.commit(plan.srs, cs.k, v, commitment_scheme="plain")
            for name, v in assignment.committed.items()
        }
        for variant in args.variants:
            proof, row = prove_timed(plan.srs, keys, cs, assignment, variant)
            if not backend.verify(plan.srs, keys.vk, plan.cs, proof, instances, commitments):
                raise RuntimeError(
                    f"B = {block_size}, layer {layer} chunk {chunk}: the {variant} proof does not verify"
                )
            where = {"block_size": block_size, "layer": layer, "chunk": chunk, "masked": masked}
            rows.append(where | {"committed_columns": len(assignment.committed)} | row)
            print(
                f"B = {block_size:>3} layer {layer:>2} chunk {chunk:>4} {variant:<17} wall {row['prove_s']:6.2f} s, "
                f"cpu {row['prove_cpu_s']:6.2f} s (CPU: commit_lagrange {row['commit_lagrange_cpu_s']:.2f}, commit "
                f"{row['commit_cpu_s']:.2f}, open {row['multi_open_cpu_s']:.2f}, rest {row['rest_cpu_s']:.2f})",
                flush=True,
            )
    means = {}
    for variant in args.variants:
        mine = [r for r in rows if r["variant"] == variant]
        means[variant] = {key: float(np.mean([r[key] for r in mine])) for key in mine[0] if key.endswith("_s")}
    chunks_total = len(plan.todo)
    return {
        "block_size": block_size,
        "level": args.level,
        "k": plan.cs.k,
        "blocks_per_chunk": nb,
        "chunks_total": chunks_total,
        "chunks_proved": len(plan.sample),
        "per_proof": rows,
        "mean": means,
        "committed_columns": len(plan.shape.committed_names()),
        "speedup_cpu": {
            v: means["plain"]["prove_cpu_s"] / means[v]["prove_cpu_s"] if "plain" in means else None
            for v in args.variants
        },
        "extrapolated_prove_s_total_2_pinned": {v: chunks_total * means[v]["prove_cpu_s"] / 2 for v in args.variants},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--block-sizes", type=int, nargs="+", default=[16, 128])
    parser.add_argument("--k", type=int, default=14, help="domain size 2^k the chunks fill")
    parser.add_argument("--sample", type=int, default=2, help="touched chunks proven per block size")
    parser.add_argument("--level", choices=("R", "F"), default="F")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pin", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--srs-dir", default=str(vitb_proof.DEFAULT_SRS_DIR))
    add_json_option(parser)
    args = parser.parse_args(argv)
    if args.pin:  # before the extension starts its thread pools: they size themselves by the allowed CPUs
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    warnings.simplefilter("ignore")
    load_before = os.getloadavg()
    results = [measure_block_size(args, b) for b in args.block_sizes]
    summary = []
    for r in results:
        for v in args.variants:
            m = r["mean"][v]
            summary.append(
                {
                    "setting": f"B = {r['block_size']}, k = {r['k']}, {v}",
                    "wall": m["prove_s"],
                    "cpu": m["prove_cpu_s"],
                    "commit_lagrange": m["commit_lagrange_cpu_s"],
                    "commit": m["commit_cpu_s"],
                    "open": m["multi_open_cpu_s"],
                    "rest": m["rest_cpu_s"],
                    "speedup": r["speedup_cpu"][v],
                    "total": r["extrapolated_prove_s_total_2_pinned"][v],
                }
            )
    print_table(
        summary,
        [
            Column("setting", "per chunk, mean"),
            Column("wall", "wall s", ".2f"),
            Column("cpu", "CPU s", ".2f"),
            Column("commit_lagrange", "CPU: commit_lagrange", ".2f"),
            Column("commit", "commit", ".2f"),
            Column("open", "open", ".2f"),
            Column("rest", "rest", ".2f"),
            Column("speedup", "CPU ×", ".2f"),
            Column("total", "ViT-B total s (extrap.)", ",.0f"),
        ],
        title=f"level {args.level}, one prover pinned to one CPU: {args.pin}; load {load_before} -> {os.getloadavg()}",
    )
    write_json(
        args.json,
        {
            "results": results,
            "pinned": args.pin,
            "load_before": load_before,
            "load_after": os.getloadavg(),
            "machine": machine(),
            "extrapolation": "ViT-B total = touched chunks × mean prover CPU per chunk / 2 (two pinned provers)",
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
