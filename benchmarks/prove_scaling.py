"""How Halo2 proving scales with the circuit size 2^k, on OBS chunk circuits that fill 2^k rows.

    python -m benchmarks.prove_scaling [--kmin 10] [--kmax 18] [--level F] [--json PATH]

For each k, an honest OBS chunk (docs/circuit.md; random layer, random sparse mask) with as many blocks as
fit 2^k rows is lowered and proven in a fresh subprocess, which reports keygen, prove and verify seconds,
proof and key sizes and its peak RSS (so each k's memory is measured in isolation). The reference is the
FFT/MSM cost model n·log n: each row shows the measured prove-time ratio to k-1 next to the model's
2·k/(k-1). Targets (issue 4): the ratio stays <= ~2.3 for k = 14..18, and a k = 16 proof verifies in < 1 s.

The development SRS (k = kmax) is created once and reused (``--srs``). ``--threads`` caps the prover's
threads (RAYON_NUM_THREADS).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.report import Column, add_json_option, write_json
from benchmarks.report import print_table as report_table
from circuit_compiler.executors import peak_rss_mb

DEFAULT_SRS_DIR = Path("runs/bench")


# ------------------------------------------------------------------------------------------ the circuit


def chunk_shape_for_k(k: int, *, level: str, block_size: int, lanes: int | None, limb_bits: int):
    """The OBS chunk shape with the most blocks whose circuit fits 2^k rows (its k is exactly ``k``)."""
    from circuit_compiler.fixedpoint import FixedPointSpec
    from circuit_compiler.lowering import ChunkShape, build_chunk_circuit

    spec = FixedPointSpec(limb_bits=limb_bits)

    def shape(blocks: int) -> ChunkShape:
        return ChunkShape(
            blocks=blocks, block_size=block_size, level=level, spec=spec, lanes=lanes if level == "F" else None
        )

    # rows grow affinely in the block count (beyond the range table): measure the slope, then step down.
    rows1, rows2 = (build_chunk_circuit(shape(b)).cs.rows for b in (64, 128))  # past the range table
    per_block = (rows2 - rows1) // 64
    blocks = max(1, ((1 << k) - rows1) // per_block + 64)
    while blocks > 1 and build_chunk_circuit(shape(blocks)).cs.k > k:
        blocks -= 1
    circuit = build_chunk_circuit(shape(blocks)).cs
    if circuit.k != k:
        raise ValueError(f"no {level} chunk of B={block_size} has exactly k={k} (one block needs k={circuit.k})")
    return shape(blocks)


def honest_chunk(shape, *, seed: int, masked_fraction: float = 0.02):
    """(cs, assignment) of an honest chunk of ``shape`` from a random layer, Fisher and mask."""
    from circuit_compiler.lowering import chunk_layer, draw_salts, lower_chunk
    from circuit_compiler.witness import obs_witness

    rng = np.random.default_rng(seed)
    nb, B = shape.blocks, shape.block_size
    theta = rng.normal(0, 0.3, size=nb * B)
    mask = rng.random(nb * B) < masked_fraction
    a = rng.normal(size=(nb, B, 2 * B))
    fisher = a @ a.transpose(0, 2, 1) / (2 * B) + 0.1 * np.eye(B)
    # The group-OBS update; level R proves only its removal/update/locality part.
    witness = obs_witness(theta, np.linalg.inv(fisher), mask, spec=shape.spec)
    (chunk,) = chunk_layer(witness, blocks_per_chunk=nb)
    salts = draw_salts(shape, rng=rng)
    return lower_chunk(
        *chunk.lowering_inputs(), spec=shape.spec, level=shape.level, lanes=shape.lanes, salts=salts, k=None
    )


# ---------------------------------------------------------------------------------------- one k (child)


def measure_one(args: argparse.Namespace) -> dict[str, Any]:
    """Runs in the child: lower, keygen, prove, verify one chunk of size 2^k."""
    from circuit_compiler import backend as be
    from circuit_compiler.serialize import structure_to_json

    t = time.perf_counter()
    shape = chunk_shape_for_k(
        args.k, level=args.level, block_size=args.block_size, lanes=args.lanes, limb_bits=args.limb_bits
    )
    cs, assignment = honest_chunk(shape, seed=args.seed)
    lower_s = time.perf_counter() - t
    rss_lowered = peak_rss_mb()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", be.InsecureSrsWarning)
        srs = be.Srs.load(args.srs, expected_sha256=args.srs_sha256)
    t = time.perf_counter()
    srs.prepare(cs.k)
    srs_s = time.perf_counter() - t

    t = time.perf_counter()
    keys = be.keygen(srs, cs)
    keygen_s = time.perf_counter() - t
    rss_keygen = peak_rss_mb()

    t = time.perf_counter()
    proof = be.prove(srs, keys, cs, assignment)
    prove_s = time.perf_counter() - t
    rss_prove = peak_rss_mb()

    t = time.perf_counter()
    commitments = {name: be.commit(srs, cs.k, values) for name, values in assignment.committed.items()}
    commit_s = time.perf_counter() - t

    structure = structure_to_json(cs, be.BLS12_381_SCALAR_MODULUS)
    verify_times = []
    for _ in range(3):
        be._vk_cache.clear()  # each run reads the verifying key from bytes, as a verifier does
        t = time.perf_counter()
        be.verify_or_raise(srs, keys.vk, structure, proof, assignment.instance, commitments)
        verify_times.append(time.perf_counter() - t)

    stats = cs.statistics()
    halo2 = be.statistics(cs)
    return {
        "k": cs.k,
        "level": shape.level,
        "blocks": shape.blocks,
        "block_size": shape.block_size,
        "lanes": shape.lanes,
        "weights": shape.weights,
        "rows": stats["rows"],
        "cells": stats["cells"],
        "columns": stats["columns"],
        "halo2": halo2,
        "lower_s": lower_s,
        "srs_prepare_s": srs_s,
        "keygen_s": keygen_s,
        "prove_s": prove_s,
        "commit_s": commit_s,
        "verify_s": min(verify_times),
        "proof_bytes": len(proof),
        "vk_bytes": len(keys.vk),
        "cells_per_s": stats["cells"] / prove_s,
        "weights_per_s": shape.weights / prove_s,
        "rss_lowered_mb": rss_lowered,
        "rss_keygen_mb": rss_keygen,
        "rss_prove_mb": rss_prove,
        "rss_final_mb": peak_rss_mb(),
        "threads": int(os.environ.get("RAYON_NUM_THREADS", os.cpu_count() or 1)),
    }


# --------------------------------------------------------------------------------------------- parent


def ensure_srs(path: Path, k: int) -> tuple[Path, str, float]:
    from circuit_compiler.srs import Srs, file_sha256, srs_info

    if path.is_file():
        try:
            if srs_info(path)["k"] >= k and srs_info(path)["size_ok"]:
                return path, file_sha256(path), 0.0
        except ValueError:
            pass
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        srs = Srs.generate_dev(k, path, seed=0)
    return path, srs.sha256, time.perf_counter() - t


def run_child(k: int, args: argparse.Namespace, srs: Path, sha: str) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.prove_scaling",
        "--child",
        "--k",
        str(k),
        "--level",
        args.level,
        "--block-size",
        str(args.block_size),
        "--lanes",
        str(args.lanes),
        "--limb-bits",
        str(args.limb_bits),
        "--seed",
        str(args.seed),
        "--srs",
        str(srs),
        "--srs-sha256",
        sha,
    ]
    env = dict(os.environ)
    if args.threads:
        env["RAYON_NUM_THREADS"] = str(args.threads)
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    out, err = proc.communicate()
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"k={k}: child failed ({proc.returncode}):\n{err[-4000:]}")
    row = json.loads(out.strip().splitlines()[-1])
    # The child's own peak (VmHWM, executors.peak_rss_mb; RUSAGE_CHILDREN here would be the maximum over all
    # children so far): the proving process from lowering to verification.
    row["peak_rss_mb"] = row["rss_final_mb"]
    row["wall_s"] = wall
    return row


COLUMNS = [
    Column("k", "k"),
    Column("blocks", "blocks"),
    Column("weights", "weights"),
    Column("rows", "rows"),
    Column("n_columns", "cols"),
    Column("keygen_s", "keygen s", ".2f"),
    Column("prove_s", "prove s", ".2f"),
    Column("ratio", "ratio", ".2f"),
    Column("model", "model", ".2f"),
    Column("verify_s", "verify s", ".3f"),
    Column("proof_bytes", "proof B"),
    Column("peak_rss_mb", "RSS MB", ".0f"),
    Column("cells_per_s", "Mcells/s", lambda v: f"{v / 1e6:.3f}"),
]


def print_table(rows: list[dict[str, Any]]) -> None:
    """One row per k; ``ratio`` is prove time over the previous k's, ``model`` the n log n expectation."""
    shown, prev = [], None
    for r in rows:
        step = prev is not None and prev["k"] == r["k"] - 1
        shown.append(
            {
                **r,
                "n_columns": sum(r["columns"].values()),
                "ratio": r["prove_s"] / prev["prove_s"] if step else None,
                "model": 2 * r["k"] / (r["k"] - 1) if step else None,
            }
        )
        prev = r
    report_table(shown, COLUMNS)


def targets(rows: list[dict[str, Any]]) -> dict[str, Any]:
    by_k = {r["k"]: r for r in rows}
    ratios = {k: by_k[k]["prove_s"] / by_k[k - 1]["prove_s"] for k in range(15, 19) if k in by_k and k - 1 in by_k}
    out: dict[str, Any] = {"prove_ratio_by_k": ratios}
    if ratios:
        out["max_prove_ratio_k14_18"] = max(ratios.values())
        out["prove_ratio_ok"] = out["max_prove_ratio_k14_18"] <= 2.3
    if 16 in by_k:
        out["verify_k16_s"] = by_k[16]["verify_s"]
        out["verify_k16_ok"] = by_k[16]["verify_s"] < 1.0
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kmin", type=int, default=10)
    p.add_argument("--kmax", type=int, default=18)
    p.add_argument("--level", choices=("F", "R"), default="F")
    p.add_argument("--block-size", type=int, default=16)
    p.add_argument("--lanes", type=int, default=4)
    p.add_argument("--limb-bits", type=int, default=8, help="range-table bits (8: the table fits k >= 9)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="prover threads (RAYON_NUM_THREADS)")
    p.add_argument("--srs", type=Path, default=None, help="SRS file (created as a development SRS if missing)")
    add_json_option(p)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--k", type=int, help=argparse.SUPPRESS)
    p.add_argument("--srs-sha256", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.child:
        print(json.dumps(measure_one(args)))
        return 0

    srs_path = args.srs or DEFAULT_SRS_DIR / f"dev-k{args.kmax}.srs"
    srs_path.parent.mkdir(parents=True, exist_ok=True)
    srs_path, sha, setup_s = ensure_srs(srs_path, args.kmax)
    print(f"SRS {srs_path} (k={args.kmax}, sha256 {sha[:16]}...){f', generated in {setup_s:.1f} s' if setup_s else ''}")
    print(
        f"OBS chunk level {args.level}, B={args.block_size}"
        + (f", L={args.lanes}" if args.level == "F" else "")
        + f", limb bits {args.limb_bits}, threads {args.threads or os.cpu_count()}\n"
    )
    rows = []
    for k in range(args.kmin, args.kmax + 1):
        rows.append(run_child(k, args, srs_path, sha))
        print(f"  k={k}: prove {rows[-1]['prove_s']:.2f} s", file=sys.stderr)
    print()
    print_table(rows)
    checks = targets(rows)
    print()
    if "max_prove_ratio_k14_18" in checks:
        print(
            f"max prove-time ratio per +1 k over k=14..18: {checks['max_prove_ratio_k14_18']:.2f} "
            f"(target <= 2.3: {'met' if checks['prove_ratio_ok'] else 'NOT met'})"
        )
    if "verify_k16_s" in checks:
        print(
            f"k=16 verification: {checks['verify_k16_s'] * 1e3:.0f} ms (target < 1 s: "
            f"{'met' if checks['verify_k16_ok'] else 'NOT met'})"
        )
    write_json(
        args.json,
        {
            "benchmark": "prove_scaling",
            "srs_sha256": sha,
            "cpu_count": os.cpu_count(),
            "threads": args.threads or os.cpu_count(),
            "rows": rows,
            "targets": checks,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
