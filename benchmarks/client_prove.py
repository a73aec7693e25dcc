"""The protocol end to end on one ViT-B fc1 matrix: a client registers, answers one request, the provider
checks it -- the time each side spends, split by step, wall and CPU.

Unlike :mod:`benchmarks.vitb_proof` (the prover alone, sampled chunks, extrapolated), this runs the client
and the provider as a user does (``jaxapex commit / unlearn / prove`` and ``register / verify``) on one
whole matrix (3072 × 768, 2.36 M weights; the synthetic weights, inverse-Fisher blocks and random 4 % mask
of vitb_proof), every chunk proven, so it also counts what the protocol adds around the chunk proofs:
well-formedness proofs, re-randomization, the commitments the client publishes, verification::

    python -m benchmarks.client_prove [--block-size 16] [--k 16] [--workers 2] [--quick] --json PATH

``--quick``: a 256 × 64 matrix at k = 10 (seconds; the tests' smoke run). CPU time is this process's plus
its finished worker processes' (user + system); the process pool is pinned as ``prove_many`` runs it.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import vitb_proof
from benchmarks.report import Column, add_json_option, machine, print_table, write_json

LAYER = "params/fc1/kernel"


def _cpu() -> tuple[float, float]:
    """(this process, its reaped children): user + system CPU seconds."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


class Timer:
    """Wall and CPU time (own and children) of each named step."""

    def __init__(self) -> None:
        self.steps: list[dict[str, Any]] = []

    def step(self, name: str, fn, *args, **kwargs):
        wall, (own, children) = time.perf_counter(), _cpu()
        out = fn(*args, **kwargs)
        own_after, children_after = _cpu()
        self.steps.append(
            {
                "step": name,
                "wall_s": round(time.perf_counter() - wall, 3),
                "cpu_s": round(own_after - own + children_after - children, 3),
                "cpu_here_s": round(own_after - own, 3),
            }
        )
        print(f"{name:<10} wall {self.steps[-1]['wall_s']:8.2f} s, CPU {self.steps[-1]['cpu_s']:8.2f} s", flush=True)
        return out


def _commit_workers(args: argparse.Namespace) -> int | None:
    if args.commit_workers is None:
        return args.workers
    return args.commit_workers or None  # 0: executors.default_workers


def run(args: argparse.Namespace) -> dict[str, Any]:
    from circuit_compiler.fixedpoint import FixedPointSpec
    from circuit_compiler.lowering import blocks_to_fill
    from jaxapex.protocol import chunks as ch
    from jaxapex.protocol import client, provider
    from jaxapex.protocol.config import LayerShape, ProofConfig
    from jaxapex.protocol.registry import Registry
    from jaxapex.protocol.requests import UnlearningRequest

    warnings.simplefilter("ignore")
    out_features, in_features = (256, 64) if args.quick else (vitb_proof.OUT_FEATURES, vitb_proof.IN_FEATURES)
    k = 10 if args.quick else args.k
    B = args.block_size
    spec = FixedPointSpec().for_block_size(B)
    nb = blocks_to_fill(k, block_size=B, level="F", spec=spec, lanes=B, layout=None)
    config = ProofConfig(
        layers=(LayerShape(LAYER, out_features, in_features),), block_size=B, lanes=B, blocks_per_chunk=nb, spec=spec
    )
    if ch.circuit_k(config) != k:
        raise RuntimeError(f"{nb} blocks per chunk give k = {ch.circuit_k(config)}, not {k}")
    rng = np.random.default_rng(args.seed)
    W = vitb_proof.layer_weights(0, args.seed, (out_features, in_features))
    n_blocks = W.size // B
    G = vitb_proof.inverse_fisher_blocks(rng, n_blocks, B)
    mask = np.zeros(W.size, dtype=bool)
    mask[rng.choice(W.size, int(round(0.04 * W.size)), replace=False)] = True
    params = {"params": {"fc1": {"kernel": W.T.copy()}}}
    request = UnlearningRequest(request_id="req-1", model_id="vitb-fc1", masks={LAYER: mask.reshape(W.shape)})
    srs = vitb_proof.dev_srs(k, Path(args.srs_dir))
    executor = "serial" if args.workers == 1 else "process"

    timer = Timer()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        state, registration = timer.step(
            "commit",
            client.commit,
            client_id="alice",
            params=params,
            config=config,
            srs=srs,
            inverse_fisher={LAYER: G},
            rng=rng,
            executor=executor,
            workers=_commit_workers(args),
        )
        client.write_registration(root / "registration", registration)
        registry = Registry(root / "registry.db")
        timer.step("register", provider.register, registry, root / "registration", srs=srs)
        pending = timer.step("unlearn", client.unlearn, state, request, rng=rng)
        fields, blobs = timer.step(
            "prove", client.prove, pending, request, srs, progress=False, workers=args.workers, executor=executor
        )
        bundle = client.write_bundle(root / "bundle", fields, blobs)
        report = timer.step("verify", provider.verify, registry, request, bundle, srs=srs)
    chunks = config.n_chunks(config.layers[0])
    return {
        "what": "python -m benchmarks.client_prove: the protocol on one matrix, every chunk proven",
        "matrix": [out_features, in_features],
        "block_size": B,
        "k": k,
        "blocks_per_chunk": nb,
        "chunks": chunks,
        "chunks_verified": report.chunks_verified,
        "masked_weights": int(mask.sum()),
        "workers": args.workers,
        "commit_workers": _commit_workers(args),
        "steps": timer.steps,
        "prove_s_per_chunk": round(next(s["wall_s"] for s in timer.steps if s["step"] == "prove") / chunks, 3),
        "machine": machine(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--block-size", type=int, default=16)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument(
        "--workers",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="worker processes for the well-formedness and chunk proofs (default: one per CPU)",
    )
    parser.add_argument(
        "--commit-workers",
        type=int,
        default=None,
        help="workers for the well-formedness proofs alone (default: --workers; 0: the library's default)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a 256 × 64 matrix at k = 10")
    parser.add_argument("--srs-dir", default=str(vitb_proof.DEFAULT_SRS_DIR))
    add_json_option(parser)
    args = parser.parse_args(argv)
    result = run(args)
    print_table(
        result["steps"],
        [
            Column("step", "step"),
            Column("wall_s", "wall s", ".2f"),
            Column("cpu_s", "CPU s (all processes)", ".2f"),
            Column("cpu_here_s", "CPU s (this process)", ".2f"),
        ],
        title=f"{result['matrix'][0]} × {result['matrix'][1]}, B = {result['block_size']}, k = {result['k']}, "
        f"{result['chunks']} chunks, {result['workers']} workers",
    )
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
