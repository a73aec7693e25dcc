"""`jaxapex verify` with a verifying key only, against the proving-key path it replaced.

A synthetic level-F client (one fc1-like layer cut into chunks whose circuit has k = 16 by default) is
committed, registered, asked to unlearn a mask touching every chunk, and proven. Then, each in a fresh
process on a fresh copy of the registry:

* ``pk``        -- what verification used to do: a full keygen (proving key) then one verify per chunk;
* ``vk-first``  -- `jaxapex verify`, first run for this circuit shape: builds the verifying key (keygen_vk)
                   and caches it next to the registry;
* ``vk-cached`` -- `jaxapex verify` again: the key read from the cache (the target: < 2 s in all);
* ``no-batch``  -- the same with one pairing check per chunk instead of one batched check.

Figures: the process's wall and CPU time, its peak RSS, and the proof-checking time per chunk.

    python -m benchmarks.verify_keys [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from benchmarks.report import add_json_option, write_json

ROOT = Path(__file__).resolve().parents[1]

_PK_SCRIPT = """
import json, sys, time, warnings
from circuit_compiler.executors import peak_rss_mb
t0 = time.perf_counter()
from circuit_compiler import backend
from circuit_compiler.srs import Srs
from jaxapex.protocol import chunks as ch, provider
from jaxapex.protocol.registry import Registry
from jaxapex.protocol.requests import UnlearningRequest
from jaxapex.protocol.config import ProofConfig
registry, request, bundle_path, srs_path = sys.argv[1:5]
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    srs = Srs.load(srs_path)
request = UnlearningRequest.load(request)
bundle = provider.read_bundle(bundle_path)
record = Registry(registry).get(bundle.client_id)
config = ProofConfig.from_dict(record["config"])
statements = provider.chunk_statements(
    bundle, record, config, provider.required_chunks(config, request), srs,
    provider.required_directions(config, request))
circuit = ch.chunk_circuit(ch.bounded_config(config, request.max_delta), request.forget_directions)
keys = backend.keygen(srs, circuit.cs)  # the proving key, as verification used to build
t1 = time.perf_counter()
for s in statements:
    backend.verify_or_raise(srs, keys, circuit.cs, s.proof, s.instances, s.commitments)
t2 = time.perf_counter()
print(json.dumps({"verify_s": t2 - t1, "chunks": len(statements),
                  "peak_rss_mb": peak_rss_mb()}))
"""


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "PYTHONWARNINGS": "ignore",
    }


def _timed(cmd: list[str | Path]) -> tuple[float, float, str]:
    """Wall and CPU seconds (user + system of the child) of one process, and its stdout."""
    cmd = [str(part) for part in cmd]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    result = subprocess.run(cmd, env=_env(), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stderr}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), result.stdout


def _fresh_registry(src: Path, dst: Path, keep_keys: bool) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)
    keys = src.with_name(src.name + ".vk")
    if keep_keys and keys.is_dir():
        shutil.copytree(keys, dst.with_name(dst.name + ".vk"), dirs_exist_ok=True)
    return dst


def setup(root: Path, *, chunks: int, blocks_per_chunk: int, block_size: int) -> dict:
    """Commit, register, unlearn and prove a synthetic client; returns the paths and the circuit's k."""
    from circuit_compiler.srs import Srs
    from jaxapex.protocol import chunks as ch
    from jaxapex.protocol import client, provider
    from jaxapex.protocol.config import LayerShape, ProofConfig, spec_for_block_size
    from jaxapex.protocol.registry import Registry
    from jaxapex.protocol.requests import UnlearningRequest

    rng = np.random.default_rng(0)
    inputs = 64
    outputs = chunks * blocks_per_chunk * block_size // inputs
    name = "params/mlp/fc1/kernel"
    config = ProofConfig(
        layers=(LayerShape(name, outputs, inputs),),
        level="F",
        block_size=block_size,
        lanes=block_size,
        blocks_per_chunk=blocks_per_chunk,
        spec=spec_for_block_size(block_size),
    )
    k = ch.circuit_k(config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        srs = Srs.generate_dev(k, root / "srs.bin", seed=5)
    params = {"params": {"mlp": {"fc1": {"kernel": rng.normal(size=(inputs, outputs)) * 0.05}}}}
    n_blocks = outputs * inputs // block_size
    A = rng.normal(size=(n_blocks, block_size, block_size))
    G = np.linalg.inv(A @ A.transpose(0, 2, 1) / block_size + np.eye(block_size))
    state, registration = client.commit(
        client_id="bench", params=params, config=config, srs=srs, inverse_fisher={name: G}, rng=rng
    )
    client.write_registration(root / "registration", registration)
    provider.register(Registry(root / "registry.db"), root / "registration", srs=srs)
    mask = np.zeros((outputs, inputs), dtype=bool)
    rows_per_chunk = outputs // chunks
    for c in range(chunks):  # a few weights in every chunk
        mask[c * rows_per_chunk, [3, 17, 40]] = True
    request = UnlearningRequest(request_id="req-bench", model_id="bench", masks={name: mask})
    request.save(root / "request")
    pending = client.unlearn(state, request, rng=rng)
    t0 = time.perf_counter()
    fields, blobs = client.prove(pending, request, srs, progress=True)
    prove_s = time.perf_counter() - t0
    client.write_bundle(root / "bundle", fields, blobs)
    return {"k": k, "chunks": chunks, "prove_s": prove_s, "proof_bytes": sum(map(len, blobs.values()))}


def measure(root: Path) -> list[dict]:
    rows = []
    registry = root / "registry.db"
    verify = [
        sys.executable,
        "-m",
        "jaxapex",
        "verify",
        "--request",
        root / "request",
        "--bundle",
        root / "bundle",
        "--srs",
        root / "srs.bin",
    ]

    wall, cpu, out = _timed(
        [
            sys.executable,
            "-c",
            _PK_SCRIPT,
            _fresh_registry(registry, root / "pk" / "r.db", False),
            root / "request",
            root / "bundle",
            root / "srs.bin",
        ]
    )
    r = json.loads(out.strip().splitlines()[-1])
    rows.append(
        {
            "run": "pk",
            "wall_s": wall,
            "cpu_s": cpu,
            "verify_s_per_chunk": r["verify_s"] / r["chunks"],
            "peak_rss_mb": r["peak_rss_mb"],
        }
    )
    keyed = root / "vk" / "registry.db"
    for run, extra, keep in (("vk-first", [], False), ("vk-cached", [], True), ("no-batch", ["--no-batch"], True)):
        db = _fresh_registry(registry, root / run / "registry.db", False)
        if keep:
            shutil.copytree(keyed.with_name(keyed.name + ".vk"), db.with_name(db.name + ".vk"), dirs_exist_ok=True)
        wall, cpu, _ = _timed([*map(str, verify), "--registry", str(db), "--json", str(root / run / "v.json"), *extra])
        v = json.loads((root / run / "v.json").read_text())
        rows.append(
            {
                "run": run,
                "wall_s": wall,
                "cpu_s": cpu,
                "verify_s_per_chunk": v["verify_s"] / v["chunks"],
                "peak_rss_mb": v["peak_rss_mb"],
            }
        )
        if run == "vk-first":
            keyed.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(db.with_name(db.name + ".vk"), keyed.with_name(keyed.name + ".vk"), dirs_exist_ok=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 chunks instead of 4")
    parser.add_argument("--blocks-per-chunk", type=int, default=2048, help="2048 blocks of 16: k = 16")
    parser.add_argument("--block-size", type=int, default=16)
    add_json_option(parser)
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="jaxapex-verify-keys-"))
    try:
        info = setup(
            root, chunks=2 if args.quick else 4, blocks_per_chunk=args.blocks_per_chunk, block_size=args.block_size
        )
        rows = measure(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(
        f"\nverify a bundle of {info['chunks']} level-F chunks, k = {info['k']} "
        f"(proved in {info['prove_s']:.1f} s, {info['proof_bytes'] / 1024:.0f} KiB); one fresh process per run"
    )
    print(f"{'run':<10} {'wall s':>8} {'CPU s':>8} {'verify ms/chunk':>16} {'peak RSS MB':>12}")
    for r in rows:
        print(
            f"{r['run']:<10} {r['wall_s']:>8.2f} {r['cpu_s']:>8.2f} {r['verify_s_per_chunk'] * 1e3:>16.0f} "
            f"{r['peak_rss_mb']:>12.0f}"
        )
    by = {r["run"]: r for r in rows}
    ratios = {
        "wall pk / vk-cached": by["pk"]["wall_s"] / by["vk-cached"]["wall_s"],
        "peak RSS pk / vk-cached": by["pk"]["peak_rss_mb"] / by["vk-cached"]["peak_rss_mb"],
        "verify per chunk no-batch / batch": by["no-batch"]["verify_s_per_chunk"]
        / by["vk-cached"]["verify_s_per_chunk"],
    }
    for name, value in ratios.items():
        print(f"{name}: {value:.2f}x")
    write_json(args.json, {**info, "runs": rows, "ratios": ratios, "load_average": os.getloadavg()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
