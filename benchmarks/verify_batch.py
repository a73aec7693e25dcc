"""Provider-side throughput: bundles verified per minute by ``verify_many`` on Ray with 1 and 2 workers.

    python -m benchmarks.verify_batch [--quick] [--clients 6] [--out-features 32] [--json PATH]

Makes ``--clients`` clients of one synthetic layer (level F), each committing, unlearning one request
that touches every chunk and proving its bundle (serially, untimed), then verifies the whole batch on a
fresh copy of the registry: serially in this process (the reference), and on a local Ray runtime with 1
and with 2 worker actors. Wall time includes starting the actors (each opens the SRS and builds the
verifying key once); Ray's own start-up is reported apart. The figures depend on the machine's load: the
JSON records the load average.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sqlite3
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from benchmarks.report import Column, add_json_option, machine, print_table, write_json

LAYER = "params/mlp/fc1/kernel"


@dataclasses.dataclass
class World:
    """Registered clients, one request, and each client's unlearned state (to prove)."""

    root: Path
    srs: object
    registry: object
    request: object
    states: dict


def make_world(
    root: Path,
    clients: list[str],
    *,
    out_features: int = 8,
    in_features: int = 8,
    block_size: int = 8,
    lanes: int = 4,
    blocks_per_chunk: int = 4,
    mask_rows: tuple[int, ...] = (1, 6),
    seed: int = 0,
) -> World:
    """Clients with random weights and well-conditioned inverse Fishers; the request masks two weights in
    each row of ``mask_rows``, so every chunk holding one of those rows is touched."""
    from circuit_compiler.srs import Srs
    from jaxapex.protocol import chunks, client, provider
    from jaxapex.protocol.config import LayerShape, ProofConfig
    from jaxapex.protocol.registry import Registry
    from jaxapex.protocol.requests import UnlearningRequest

    config = ProofConfig(
        layers=(LayerShape(LAYER, out_features, in_features),),
        level="F",
        block_size=block_size,
        lanes=lanes,
        blocks_per_chunk=blocks_per_chunk,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        srs = Srs.generate_dev(chunks.circuit_k(config), root / "srs.bin", seed=seed)
    registry = Registry(root / "registry.db")
    mask = np.zeros((out_features, in_features), dtype=bool)
    for r in mask_rows:
        mask[r, [0, in_features // 2 + 1]] = True
    request = UnlearningRequest(request_id="req-1", model_id="synthetic", masks={LAYER: mask})
    states = {}
    for n, client_id in enumerate(clients):
        rng = np.random.default_rng(seed * 1000 + n)
        params = {"params": {"mlp": {"fc1": {"kernel": rng.normal(size=(in_features, out_features)) * 0.2}}}}
        A = rng.normal(size=(out_features * in_features // block_size, block_size, block_size))
        G = np.linalg.inv(A @ A.transpose(0, 2, 1) / block_size + 0.2 * np.eye(block_size))
        state0, registration = client.commit(
            client_id=client_id,
            params=params,
            config=config,
            srs=srs,
            inverse_fisher={LAYER: G},
            rng=rng,
            executor="serial",
        )
        client.write_registration(root / f"{client_id}-registration", registration)
        provider.register(registry, root / f"{client_id}-registration", srs=srs)
        states[client_id] = client.unlearn(state0, request, rng=rng)
    return World(root, srs, registry, request, states)


def prove_bundle(world: World, client_id: str, *, executor: str = "serial", workers: int | None = None) -> Path:
    from jaxapex.protocol import client

    fields, blobs = client.prove(
        world.states[client_id], world.request, world.srs, progress=False, executor=executor, workers=workers
    )
    return client.write_bundle(world.root / f"bundle-{client_id}-{executor}", fields, blobs)


def _timed_batch(world: World, bundles: list[Path], executor: str, workers: int) -> dict:
    from jaxapex.protocol import provider
    from jaxapex.protocol.registry import Registry

    registry_copy = world.root / f"registry-{executor}-{workers}.db"
    registry_copy.unlink(missing_ok=True)
    with sqlite3.connect(world.registry.path) as source, sqlite3.connect(registry_copy) as copy:
        source.backup(copy)  # a consistent snapshot of the database (write-ahead log included)
    cpu0, t0 = time.process_time(), time.perf_counter()
    outcomes = provider.verify_many(
        Registry(registry_copy),
        [(world.request, b) for b in bundles],
        srs=world.srs,
        executor=executor,
        workers=workers,
        progress=False,
    )
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    rejected = [str(o.failure) for o in outcomes if not o.accepted]
    if rejected:
        raise RuntimeError(f"honest bundles rejected: {rejected[:2]}")
    chunk_s = sum(c["verify_s"] for o in outcomes for c in o.report.per_chunk)
    return {
        "executor": executor,
        "workers": workers,
        "bundles": len(bundles),
        "chunks": sum(o.report.chunks_verified for o in outcomes),
        "wall_s": wall,
        "driver_cpu_s": cpu,
        "chunk_verify_s": chunk_s,
        "bundles_per_min": 60 * len(bundles) / wall,
    }


def run(
    *, clients: int, out_features: int, in_features: int, block_size: int, blocks_per_chunk: int, seed: int
) -> dict:
    import ray

    from circuit_compiler.executors import ensure_ray

    with tempfile.TemporaryDirectory(prefix="verify_batch_") as tmp:
        names = [f"client{n:03d}" for n in range(clients)]
        t0 = time.perf_counter()
        rows_per_chunk = max(1, block_size * blocks_per_chunk // in_features)
        world = make_world(
            Path(tmp),
            names,
            out_features=out_features,
            in_features=in_features,
            block_size=block_size,
            blocks_per_chunk=blocks_per_chunk,
            mask_rows=tuple(range(0, out_features, rows_per_chunk)),
            seed=seed,
        )
        bundles = [prove_bundle(world, c) for c in names]
        setup_s = time.perf_counter() - t0
        rows = [_timed_batch(world, bundles, "serial", 1)]
        t0 = time.perf_counter()
        ensure_ray(num_cpus=os.cpu_count())
        ray_start_s = time.perf_counter() - t0
        try:
            for workers in (1, 2):
                rows.append(_timed_batch(world, bundles, "ray", workers))
        finally:
            ray.shutdown()
    serial = rows[0]["bundles_per_min"]
    for r in rows:
        r["vs_serial"] = r["bundles_per_min"] / serial
    from jaxapex.protocol import chunks

    return {
        "benchmark": "verify_batch",
        "clients": clients,
        "layer": [out_features, in_features],
        "block_size": block_size,
        "blocks_per_chunk": blocks_per_chunk,
        "chunk_k": chunks.circuit_k(world.states[names[0]].config),
        "setup_s": setup_s,
        "ray_start_s": ray_start_s,
        "rows": rows,
        "machine": machine(),
    }


COLUMNS = [
    Column("executor", "executor"),
    Column("workers", "workers"),
    Column("bundles", "bundles"),
    Column("chunks", "chunks"),
    Column("wall_s", "wall s", ".2f"),
    Column("driver_cpu_s", "driver CPU s", ".2f"),
    Column("chunk_verify_s", "Σ chunk verify s", ".2f"),
    Column("bundles_per_min", "bundles/min", ".1f"),
    Column("vs_serial", "× serial", ".2f"),
]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.verify_batch", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="3 clients of an 8 x 8 layer (a smoke run)")
    p.add_argument("--clients", type=int, default=6)
    p.add_argument("--out-features", type=int, default=32, help="layer rows (a multiple of 4)")
    p.add_argument("--in-features", type=int, default=8)
    p.add_argument("--block-size", type=int, default=8)
    p.add_argument("--blocks-per-chunk", type=int, default=4, help="larger: bigger circuits (k), costlier checks")
    p.add_argument("--seed", type=int, default=0)
    add_json_option(p)
    args = p.parse_args(argv)
    try:
        import ray  # noqa: F401
    except ImportError:
        print("this benchmark needs Ray: pip install 'jaxapex[ray]'", file=sys.stderr)
        return 2
    if args.quick:
        args.clients, args.out_features, args.in_features, args.block_size, args.blocks_per_chunk = 3, 8, 8, 8, 4
    result = run(
        clients=args.clients,
        out_features=args.out_features,
        in_features=args.in_features,
        block_size=args.block_size,
        blocks_per_chunk=args.blocks_per_chunk,
        seed=args.seed,
    )
    print_table(
        result["rows"],
        COLUMNS,
        title=(
            f"{result['clients']} bundles of a {args.out_features} x {args.in_features} layer, chunks of "
            f"{args.blocks_per_chunk} blocks of {args.block_size} (k = {result['chunk_k']}); setup (commit, unlearn, "
            f"prove) {result['setup_s']:.1f} s, Ray start {result['ray_start_s']:.1f} s, load average "
            f"{result['machine']['load_average']}"
        ),
    )
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
