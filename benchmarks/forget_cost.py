"""What the forget rows cost: plain level F vs forget-aware level F with K directions, side by side in one run
at the demo's settings.

    python -m benchmarks.forget_cost [--forget-directions 2] [--full] [--seed 0] [--json PATH]

One vision task (the demo's recipe, ``--quick`` unless ``--full``) is trained once; the client commits once
(level F, the recipe's B, L = B, a whole layer per chunk, as ``jaxapex demo``); then the provider issues two
requests with the same mask -- without forget directions and with K -- and the client unlearns, proves
(serial executor, in this process) and the provider verifies each against the same registry record. Per
request: cells and columns of the chunk circuit (per weight), prove time per chunk (wall and CPU of this
process, which includes the prover's threads), proof bytes per chunk, verify time, and the accuracy table
of the proven model (forget / personal accuracy, recovery). Keys are generated inside ``prove``/``verify``
and counted there, as in the demo.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.report import Column, add_json_option, machine, print_table, write_json


def _log(msg: str) -> None:
    print(f"[forget_cost] {msg}", flush=True)


def _timed(fn, *args, **kwargs):
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - w0, time.process_time() - c0


def run(args: argparse.Namespace) -> dict[str, Any]:
    from circuit_compiler import fixedpoint
    from circuit_compiler.srs import InsecureSrsWarning, Srs
    from jaxapex import tasks
    from jaxapex.demo import _mask_params, _recovery
    from jaxapex.protocol import chunks as ch
    from jaxapex.protocol import client, ml, provider
    from jaxapex.protocol.config import LayerShape, ProofConfig
    from jaxapex.protocol.registry import Registry
    from jaxapex.protocol.requests import UnlearningRequest

    warnings.simplefilter("ignore", InsecureSrsWarning)
    t_task = time.perf_counter()
    task = tasks.run_vision_task(quick=not args.full, seed=args.seed, log=lambda m: print(f"[task] {m}", flush=True))
    task_s = time.perf_counter() - t_task
    paths, B = task.target_paths, task.unlearning.block_size
    layers = tuple(
        LayerShape(ml.path_name(p), *np.asarray(ml.get_matrix(task.params_personal, p)).shape) for p in paths
    )
    config = ProofConfig(
        layers=layers,
        level="F",
        block_size=B,
        lanes=B,
        blocks_per_chunk=max(layer.size for layer in layers) // B,
        spec=fixedpoint.spec_for_block_size(B),
    )
    work = Path(tempfile.mkdtemp(prefix="forget-cost-"))
    try:
        srs = Srs.generate_dev(ch.circuit_k(config), work / "srs.bin", seed=args.seed)
        G = ml.inverse_fisher(
            task.client_example_loss,
            task.params_personal,
            paths,
            task.datasets["personal_train"],
            block_size=B,
            damp=task.unlearning.damp,
            max_examples=task.unlearning.fisher_examples,
        )
        _log(f"client: commit (level F, B = {B}, {config.blocks_per_chunk} blocks per chunk)")
        state0, registration = client.commit(
            client_id="client-0", params=task.params_personal, config=config, srs=srs, inverse_fisher=G
        )
        client.write_registration(work / "registration", registration)
        masks = {ml.path_name(p): np.asarray(task.masks[p], dtype=bool) for p in paths}
        personalized = task.evaluate(task.params_personal)
        masked = task.evaluate(_mask_params(task.params_personal, masks))
        rows = []
        for K in (0, args.forget_directions):
            directions = ml.provider_directions(
                task.model, task.params_global, paths, task.datasets["forget_train"], k=K
            )
            request = UnlearningRequest(
                request_id=f"req-K{K}", model_id="digits-vit", masks=masks, directions=directions
            )
            registry = Registry(work / f"registry-K{K}.db")
            provider.register(registry, work / "registration", srs=srs)
            _log(f"K = {K}: unlearn, prove, verify")
            state1, unlearn_s, _ = _timed(client.unlearn, state0, request)
            (fields, blobs), prove_s, prove_cpu_s = _timed(
                client.prove, state1, request, srs, progress=False, executor="serial"
            )
            client.write_bundle(work / f"bundle-K{K}", fields, blobs)
            report, verify_wall_s, _ = _timed(
                provider.verify, registry, request, work / f"bundle-K{K}", srs=srs, key_cache=work / "vk"
            )
            stats = ch.chunk_circuit(config, K).cs.statistics()
            n_chunks = len(fields["chunks"])
            proven = task.evaluate(state1.params)
            rows.append(
                {
                    "K": K,
                    "k": stats["k"],
                    "columns": sum(stats["columns"].values()),
                    "advice_columns": stats["columns"]["advice"],
                    "instance_columns": stats["columns"]["instance"],
                    "cells": stats["cells"],
                    "cells_per_weight": stats["cells"] / config.chunk_weights,
                    "chunks": n_chunks,
                    "unlearn_s": unlearn_s,
                    "prove_s_per_chunk": float(np.mean([c["prove_s"] for c in fields["chunks"]])),
                    "prove_wall_s_per_chunk": prove_s / n_chunks,
                    "prove_cpu_s_per_chunk": prove_cpu_s / n_chunks,
                    "proof_bytes_per_chunk": sum(map(len, blobs.values())) / n_chunks,
                    "verify_s": report.verify_s,
                    "verify_wall_s": verify_wall_s,
                    "verified": report.chunks_verified == n_chunks,
                    "forget_acc": proven["forget_acc"],
                    "personal_acc": proven["personal_acc"],
                    "recovery": _recovery({"personalized": personalized, "masked": masked, "obs": proven}),
                    "max_abs_mu": int(
                        max(
                            (np.abs(w["mu_q"]).max(initial=0) for w in state1.witness.values() if "mu_q" in w),
                            default=0,
                        )
                    ),
                }
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    plain, forget = rows
    return {
        "settings": {
            "quick": not args.full,
            "seed": args.seed,
            "block_size": B,
            "lanes": B,
            "blocks_per_chunk": config.blocks_per_chunk,
            "chunk_weights": config.chunk_weights,
            "layers": [dataclasses.asdict(layer) for layer in layers],
            "mask_fraction": float(sum(m.sum() for m in masks.values()) / sum(m.size for m in masks.values())),
            "forget_spec": ch.chunk_shape(config, args.forget_directions).forget.to_dict(),
        },
        "task_s": task_s,
        "personalized": personalized,
        "masked": masked,
        "rows": rows,
        "extra_cells_per_weight": forget["cells_per_weight"] - plain["cells_per_weight"],
        "prove_cpu_ratio": forget["prove_cpu_s_per_chunk"] / plain["prove_cpu_s_per_chunk"],
        "prove_wall_ratio": forget["prove_wall_s_per_chunk"] / plain["prove_wall_s_per_chunk"],
        "proof_bytes_ratio": forget["proof_bytes_per_chunk"] / plain["proof_bytes_per_chunk"],
        "machine": machine(),
    }


COLUMNS = (
    Column("K", "K"),
    Column("k", "k"),
    Column("advice_columns", "advice cols"),
    Column("instance_columns", "instance cols"),
    Column("cells_per_weight", "cells/weight", ".1f"),
    Column("chunks", "chunks"),
    Column("prove_wall_s_per_chunk", "prove s/chunk", ".2f"),
    Column("prove_cpu_s_per_chunk", "prove CPU s/chunk", ".2f"),
    Column("proof_bytes_per_chunk", "proof B/chunk", ",.0f"),
    Column("verify_s", "verify s", ".3f"),
    Column("forget_acc", "forget acc", ".3f"),
    Column("personal_acc", "personal acc", ".3f"),
    Column("recovery", "recovery", ".2f"),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--forget-directions", type=int, default=2, metavar="K")
    parser.add_argument("--full", action="store_true", help="the full recipe instead of the demo's --quick one")
    parser.add_argument("--seed", type=int, default=0)
    add_json_option(parser)
    args = parser.parse_args(argv)
    if args.forget_directions < 1:
        parser.error("--forget-directions must be >= 1 (it is compared with K = 0)")
    result = run(args)
    s = result["settings"]
    print_table(
        result["rows"],
        COLUMNS,
        title=(
            f"plain vs forget-aware level F at the demo's settings: B = {s['block_size']}, "
            f"{s['blocks_per_chunk']} blocks ({s['chunk_weights']} weights) per chunk, "
            f"{s['mask_fraction']:.2%} masked; masked model: forget {result['masked']['forget_acc']:.3f}, "
            f"personal {result['masked']['personal_acc']:.3f}"
        ),
    )
    print(
        f"forget rows: +{result['extra_cells_per_weight']:.1f} cells per weight; prove time x"
        f"{result['prove_wall_ratio']:.2f} wall, x{result['prove_cpu_ratio']:.2f} CPU; proof bytes x"
        f"{result['proof_bytes_ratio']:.3f}"
    )
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
