"""The paper's proof workload: unlearning on fc1 of the 12 ViT-B blocks, proven chunk by chunk with Halo2.

``--model smollm2`` proves the same way the target matrices of the real pretrained language model instead:
the SwiGLU gate, up (1536 × 576) and down (576 × 1536) matrices of SmolLM2-135M's 30 layers (90 matrices,
79.6 M weights), with the same synthetic data on those shapes.

Workload (DESIGN.md section 9): 12 matrices W of 3072 × 768 (fc1 of ViT-B/16, 28.3 M weights), cut row-major
into blocks of B weights and chunks of ``nb`` blocks (the last chunk of a layer zero-padded to the same
shape, so every chunk shares one circuit and one key pair), with a 4 % mask. Only chunks that hold a masked
weight need a proof. Proving cost depends on shapes, not on the weights being pretrained, so the data are
synthetic:

* weights: N(0, σ_l²) per layer, σ_l uniform in [0.02, 0.05];
* inverse-Fisher blocks (level F): ``G = (U Uᵀ / r + λ I)⁻¹`` with ``U`` (B × r, r = 8) Gaussian scaled per
  weight by a log-normal factor (σ = 0.5, gradients of different magnitudes), ``λ`` = 1 % of the mean
  diagonal -- positive definite, normalized per block by the witness generator;
* mask ``random``: exactly 4 % of each layer's weights, uniformly; mask ``second-order``: the global top 4 %
  of a synthetic second-order score ``s = a_row · c_col · |w| · e^(ε/2)`` with log-normal output-neuron
  factors ``a`` (σ = 1; forget-relevant neurons have large ones), input factors ``c`` (σ = 0.3), layer
  factors (σ = 0.3) and noise ε ~ N(0, 1): like the real scorer's output, it concentrates on a subset of
  output neurons (rows), so fewer blocks and chunks are touched.

It proves ``--sample`` sampled touched chunks (uniformly, seeded; ``all`` for every one) in prover worker
processes (``--workers``, default one per CPU, each pinned to its own CPU -- faster than one process with
threads on this machine, see benchmarks/NOTES.md -- or with ``--threads`` rayon threads and ``--no-pin``),
verifies each proof in this process, and extrapolates to the whole workload::

    prove_s_total  = one-time (worker start-up, keygen) + chunks_total × (steady-state wall per chunk)
    verify_s_total = chunks_total × mean(verify_s);   proof_bytes_total = chunks_total × mean(proof_bytes)
    verify_batch_s_total = chunks_total × (the sampled proofs verified in one batch, as the provider does) / n
    peak_rss_mb    = max over prover processes of their peak resident set (VmHWM, see executors.peak_rss_mb)

Per-chunk figures are printed: ``lower_s`` is the chunk's witness generation and lowering, ``prove_s`` the
prover call (encoding the columns included), ``prove_cpu_s`` its CPU time over all threads (what to compare
on a shared machine); keygen happens once per worker and is reported apart. ``--reused registered`` (the
default) proves as the protocol does: the reused columns' commitments (θ, G) are the client's registered
ones, computed in an untimed registration pass and re-randomized to the proof's salts inside the timed
proof, so the prover commits only θ' and its own columns; ``--reused committed`` commits every column. The paper's figures (≈ 2 h, < 0.7 GB,
≈ 400 MB of proofs) are the reference; ratios are ours / paper's.

    python -m benchmarks.vitb_proof [--model vitb|smollm2] [--sample N|all] [--level R|F] [--block-size B] [--lanes L]
        [--blocks-per-chunk nb | --k K] [--mask second-order|random] [--workers W] [--[no-]pin]
        [--spec name=value,...] [--commitment-scheme sized|plain] [--reused registered|committed] --json PATH

The SRS is a development SRS generated once under ``~/.cache/jaxapex`` (never committed).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import math
import multiprocessing
import os
import platform
import resource
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.report import add_json_option, write_json
from circuit_compiler.executors import peak_rss_mb

LAYERS = 12
OUT_FEATURES, IN_FEATURES = 3072, 768
DENSITY = 0.04
# The target matrices W (out, in) of each model, in order. ViT-B: fc1 of its 12 blocks (the paper's workload).
# SmolLM2-135M: the SwiGLU MLP of its 30 layers, gate and up (1536 × 576) and down (576 × 1536) — the
# matrices benchmarks.table_code --model smollm2 masks (there on its top layers only).
MODELS: dict[str, dict[str, Any]] = {
    "vitb": {"title": "ViT-B fc1 × 12 (3072 × 768)", "shapes": ((OUT_FEATURES, IN_FEATURES),) * LAYERS},
    "smollm2": {
        "title": "SmolLM2-135M SwiGLU gate, up, down × 30 (1536 × 576, 576 × 1536)",
        "shapes": ((1536, 576), (1536, 576), (576, 1536)) * 30,
    },
}
PAPER = {"prove_s": 7200.0, "peak_rss_mb": 700.0, "proof_bytes": 400e6}
DEFAULT_SRS_DIR = Path.home() / ".cache" / "jaxapex"


# ------------------------------------------------------------------------------------------ the workload


@dataclasses.dataclass(frozen=True)
class Workload:
    block_size: int
    blocks_per_chunk: int
    mask_kind: str
    seed: int
    model: str = "vitb"

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"--model must be one of {sorted(MODELS)}, got {self.model!r}")
        for out, inp in self.shapes:
            if (out * inp) % self.block_size:
                raise ValueError(f"--block-size {self.block_size} does not divide a {out} × {inp} matrix")

    @property
    def shapes(self) -> tuple[tuple[int, int], ...]:
        return MODELS[self.model]["shapes"]

    def blocks_in(self, layer: int) -> int:
        out, inp = self.shapes[layer]
        return out * inp // self.block_size

    def chunks_in(self, layer: int) -> int:
        return math.ceil(self.blocks_in(layer) / self.blocks_per_chunk)

    @property
    def blocks_per_layer(self) -> int:
        """Blocks of the first matrix (every matrix of both models holds as many weights)."""
        return self.blocks_in(0)

    @property
    def chunks_per_layer(self) -> int:
        return self.chunks_in(0)

    @property
    def chunks_all(self) -> int:
        return sum(self.chunks_in(layer) for layer in range(len(self.shapes)))


def layer_weights(layer: int, seed: int, shape: tuple[int, int] = (OUT_FEATURES, IN_FEATURES)) -> np.ndarray:
    """W (out, in) float64 of one target matrix: N(0, σ²) with σ uniform in [0.02, 0.05]."""
    rng = np.random.default_rng([seed, layer, 0])
    sigma = rng.uniform(0.02, 0.05)
    return rng.normal(scale=sigma, size=shape)


def layer_masks(workload: Workload) -> list[np.ndarray]:
    """One mask (out, in) bool per target matrix, 4 % of the weights in all (see the module docstring)."""
    seed, shapes = workload.seed, workload.shapes
    if workload.mask_kind == "random":
        out = []
        for layer, shape in enumerate(shapes):
            rng = np.random.default_rng([seed, layer, 1])
            flat = np.zeros(shape[0] * shape[1], dtype=bool)
            flat[rng.choice(flat.size, round(DENSITY * flat.size), replace=False)] = True
            out.append(flat.reshape(shape))
        return out
    if workload.mask_kind != "second-order":
        raise ValueError(f"--mask must be 'random' or 'second-order', got {workload.mask_kind!r}")
    scores = []
    for layer, (n_out, n_in) in enumerate(shapes):
        rng = np.random.default_rng([seed, layer, 2])
        rows = rng.lognormal(0.0, 1.0, size=(n_out, 1))
        cols = rng.lognormal(0.0, 0.3, size=(1, n_in))
        noise = np.exp(0.5 * rng.standard_normal((n_out, n_in)))
        weights = np.abs(layer_weights(layer, seed, (n_out, n_in)))
        scores.append((rng.lognormal(0.0, 0.3) * rows * cols * weights * noise).astype(np.float32))
    flat = np.concatenate([s.ravel() for s in scores])
    k = round(DENSITY * flat.size)
    threshold = np.partition(flat, flat.size - k)[flat.size - k]
    return [s >= threshold for s in scores]


def touched_chunks(masks: list[np.ndarray], workload: Workload) -> list[tuple[int, int]]:
    """(layer, chunk) of every chunk that holds a masked weight: the chunks that need a proof."""
    out = []
    nb, B = workload.blocks_per_chunk, workload.block_size
    for layer, mask in enumerate(masks):
        blocks = mask.reshape(-1, B).any(axis=1)
        padded = np.zeros(workload.chunks_in(layer) * nb, dtype=bool)
        padded[: blocks.size] = blocks
        out += [(layer, int(c)) for c in np.flatnonzero(padded.reshape(-1, nb).any(axis=1))]
    return out


def inverse_fisher_blocks(rng: np.random.Generator, blocks: int, B: int, *, rank: int = 8) -> np.ndarray:
    """Synthetic PD inverse-Fisher blocks (blocks, B, B): ``(U Uᵀ/r + λI)⁻¹``, λ = 1 % of the mean diagonal."""
    U = rng.standard_normal((blocks, B, rank)) * rng.lognormal(0.0, 0.5, size=(blocks, B, 1))
    F = U @ np.swapaxes(U, 1, 2) / rank
    damp = 0.01 * np.trace(F, axis1=1, axis2=2) / B
    return np.linalg.inv(F + damp[:, None, None] * np.eye(B))


def chunk_data(workload: Workload, layer: int, chunk: int, mask: np.ndarray) -> dict[str, np.ndarray]:
    """θ (nb, B), G (nb, B, B) and the mask (nb, B) of one chunk, zero-padded past the layer's end."""
    nb, B = workload.blocks_per_chunk, workload.block_size
    first = chunk * nb
    theta = layer_weights(layer, workload.seed, workload.shapes[layer]).reshape(-1, B)[first : first + nb]
    mask_blocks = mask.reshape(-1, B)[first : first + nb]
    valid = theta.shape[0]
    G = inverse_fisher_blocks(np.random.default_rng([workload.seed, layer, 3, chunk]), nb, B)
    pad = nb - valid
    if pad:
        theta = np.concatenate([theta, np.zeros((pad, B))])
        mask_blocks = np.concatenate([mask_blocks, np.zeros((pad, B), dtype=bool)])
    return {"theta": theta, "G": G, "mask": mask_blocks, "valid_blocks": np.int64(valid)}


# ------------------------------------------------------------------------------------- the prover worker


@dataclasses.dataclass(frozen=True)
class ProverConfig:
    level: str
    block_size: int
    lanes: int | None
    blocks_per_chunk: int
    layout: str | None
    spec: dict
    srs_path: str
    srs_sha256: str
    reused: str = "registered"  # "registered": the client's commitments of θ and G; "committed": recomputed


BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


@contextlib.contextmanager
def _blas_threads_of_new_processes(threads: int | None):
    """Processes started inside run NumPy's BLAS with ``threads`` threads (None: unchanged). A pinned worker
    has one CPU: BLAS threads sized by the machine's CPUs would only contend for it (B = 128, k = 14, 2
    pinned workers: a worker's first lowering 1.0 s with the default threads, 0.5 s with one). Spawned
    processes read these variables when they import NumPy, before any initializer runs."""
    saved = {name: os.environ.get(name) for name in BLAS_THREAD_VARIABLES}
    if threads is not None:
        os.environ.update({name: str(threads) for name in BLAS_THREAD_VARIABLES})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _init_worker(threads: int | None, pin: bool, counter, commitment_scheme: str | None = None) -> None:
    """Runs in each prover process before the extension starts its thread pools.

    ``pin``: bind the process to one CPU of its own (worker i -> CPU i mod n). The MSM thread pool
    (blst) and rayon size themselves by the CPUs a process may use, so a pinned worker is single-threaded:
    W pinned workers compare process-level parallelism with one process of W threads.
    """
    if pin:
        with counter.get_lock():
            index = counter.value
            counter.value += 1
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpus[index % len(cpus)]})
    if threads:
        os.environ["RAYON_NUM_THREADS"] = str(threads)
    if commitment_scheme:  # backend.prove's default in this process
        os.environ["JAXAPEX_COMMITMENT_SCHEME"] = commitment_scheme
    warnings.simplefilter("ignore")


def _shape(config: ProverConfig):
    from circuit_compiler.fixedpoint import FixedPointSpec
    from circuit_compiler.lowering import chunk_shape_key

    return chunk_shape_key(
        blocks=config.blocks_per_chunk,
        block_size=config.block_size,
        level=config.level,
        spec=FixedPointSpec.from_dict(config.spec),
        lanes=config.lanes,
        layout=config.layout,
    )


def chunk_part(config: ProverConfig, workload: Workload, layer: int, chunk: int, mask: np.ndarray):
    """(the chunk's witness part, masked weights, valid blocks): witness generation."""
    from circuit_compiler.lowering import chunk_layer
    from circuit_compiler.witness import obs_witness, removal_witness

    shape = _shape(config)
    data = chunk_data(workload, layer, chunk, mask)
    if config.level == "F":
        witness = obs_witness(data["theta"], data["G"], data["mask"], spec=shape.spec)
    else:  # level R proves removal and locality only: plain masking, Δ = 0
        witness = removal_witness(
            data["theta"], np.zeros_like(data["theta"]), data["mask"], spec=shape.spec, block_size=config.block_size
        )
    part = chunk_layer(witness, blocks_per_chunk=config.blocks_per_chunk)[0]
    masked, valid = int(data["mask"].sum()), int(data["valid_blocks"])
    del data, witness
    return part, masked, valid


def proof_salts(config: ProverConfig, workload: Workload, layer: int, chunk: int) -> dict[str, int]:
    """The salts a chunk is proven with (seeded)."""
    from circuit_compiler.lowering import draw_salts

    return draw_salts(_shape(config), rng=np.random.default_rng([workload.seed, layer, 4, chunk]))


def lower_job(config: ProverConfig, workload: Workload, layer: int, chunk: int, mask: np.ndarray):
    """(cs, assignment, masked weights, valid blocks) of one chunk: witness generation and lowering."""
    from circuit_compiler.lowering import lower_chunk

    shape = _shape(config)
    part, masked, valid = chunk_part(config, workload, layer, chunk, mask)
    cs, assignment = lower_chunk(
        *part.lowering_inputs(),
        spec=shape.spec,
        level=config.level,
        lanes=shape.lanes,
        salts=proof_salts(config, workload, layer, chunk),
        layout=shape.layout,
    )
    del part  # only the circuit and its assignment go on to the prover
    gc.collect()
    return cs, assignment, masked, valid


def registration(config: ProverConfig, workload: Workload, layer: int, chunk: int, mask: np.ndarray, srs):
    """(registered salts, registered commitments) of the chunk's reused columns (θ, G lanes): what the
    client computed once when it registered, under salts of its own (not the proof's)."""
    from circuit_compiler import backend
    from circuit_compiler.lowering import build_chunk_circuit, committed_columns, draw_salts
    from circuit_compiler.wellformed import registered_names

    shape = _shape(config)
    part, _, _ = chunk_part(config, workload, layer, chunk, mask)
    salts = draw_salts(shape, rng=np.random.default_rng([workload.seed, layer, 5, chunk]))
    columns = committed_columns(shape, salts=salts, theta=part.theta_q, G=part.G_q)
    names = registered_names(shape)
    k = build_chunk_circuit(shape).cs.k
    commitments = {name: backend.commit(srs, k, columns[name]) for name in names}
    backend.clear_commitment_cache()  # the proof must not find them: its columns carry other salts anyway
    return salts, commitments


def rerandomized_commitments(
    config: ProverConfig, srs, registered_salts: dict[str, int], salts: dict[str, int], registered: dict[str, bytes]
) -> dict[str, bytes]:
    """C' = C + Σ r_j·P_j per reused column: the client's per-proof work in place of committing the column."""
    from circuit_compiler import rerandomize as rr
    from circuit_compiler.lowering import build_chunk_circuit

    shape = _shape(config)
    k = build_chunk_circuit(shape).cs.k
    shifts = rr.seed_shifts(shape, list(registered), registered_salts, salts)
    return {
        name: rr.rerandomized(srs, k, rows=list(shape.salt_rows(name)), shifts=shifts[name], registered=point)
        for name, point in registered.items()
    }


def register_chunk(job: tuple) -> tuple[dict[str, int], dict[str, bytes]]:
    """In a prover process, before the timed proofs: the registration of one chunk."""
    config, workload, layer, chunk, mask, _ = job
    return registration(config, workload, layer, chunk, mask, _worker_srs(config))


def prove_chunk(job: tuple) -> dict[str, Any]:
    """In a prover process: witness, lowering, (keygen once), proof, commitments of one chunk.

    ``registered``: None (``config.reused == "committed"``: the prover commits every column), or the
    chunk's registration (:func:`register_chunk`, untimed: it happens once, before any request), whose
    commitments are re-randomized to the proof's salts inside the timed proof."""
    from circuit_compiler import backend

    config, workload, layer, chunk, mask, registered = job
    srs = _worker_srs(config)
    started = time.time()
    t0 = time.perf_counter()
    cs, assignment, masked, valid = lower_job(config, workload, layer, chunk, mask)
    t1 = time.perf_counter()
    keys = backend.keygen(srs, cs)  # once per process and shape (the backend caches keys)
    t2 = time.perf_counter()
    first_keygen = keys.circuit_digest not in _KEYGEN_DONE
    _KEYGEN_DONE.add(keys.circuit_digest)
    cpu = _cpu_seconds()
    known = {}
    if registered is not None:
        known = rerandomized_commitments(
            config, srs, registered[0], proof_salts(config, workload, layer, chunk), registered[1]
        )
    proof, commitments = backend.prove_with_commitments(srs, keys, cs, assignment, known_commitments=known)
    t3 = time.perf_counter()
    prove_cpu_s = _cpu_seconds() - cpu
    return {
        "layer": layer,
        "chunk": chunk,
        "k": cs.k,
        "rows": cs.rows,
        "masked": masked,
        "valid_blocks": valid,
        "lower_s": t1 - t0,
        "keygen_s": t2 - t1 if first_keygen else 0.0,
        "prove_s": t3 - t2,
        "prove_cpu_s": prove_cpu_s,
        "proof": proof,
        "proof_bytes": len(proof),
        "vk": keys.vk,
        "commitments": {name: c.hex() for name, c in commitments.items()},
        "rss_mb": peak_rss_mb(),
        "pid": os.getpid(),
        "started": started,
        "finished": time.time(),
    }


_SRS_CACHE: dict[str, Any] = {}
_KEYGEN_DONE: set[str] = set()


def _cpu_seconds() -> float:
    """User + system CPU time of this process, all threads (less sensitive to other load than wall time)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _worker_srs(config: ProverConfig):
    from circuit_compiler.srs import Srs

    if config.srs_path not in _SRS_CACHE:
        _SRS_CACHE[config.srs_path] = Srs.load(config.srs_path, expected_sha256=config.srs_sha256)
    return _SRS_CACHE[config.srs_path]


# ----------------------------------------------------------------------------------------------- the run


def dev_srs(k: int, directory: Path):
    """A development SRS of size 2^k from ``directory`` (generated once, seeded; never committed)."""
    from circuit_compiler.srs import Srs, srs_info

    directory.mkdir(parents=True, exist_ok=True)
    for candidate in sorted(directory.glob("srs-dev-k*-seed0.bin")):
        if srs_info(candidate)["k"] >= k:
            return Srs.load(candidate)
    return Srs.generate_dev(k, directory / f"srs-dev-k{k}-seed0.bin", seed=0)


@dataclasses.dataclass(frozen=True)
class Plan:
    """What a run proves: the workload, its masks, the touched chunks and the sampled ones, the chunk
    circuit's shape (``cs``: its structure, for keygen and verification) and the prover configuration."""

    workload: Workload
    masks: list[np.ndarray]
    todo: list[tuple[int, int]]
    sample: list[tuple[int, int]]
    config: ProverConfig
    shape: Any
    cs: Any
    srs: Any


def plan(args: argparse.Namespace) -> Plan:
    """The run's plan from the command line (``--sample``, ``--level``, ``--block-size``, ``--k``...)."""
    from circuit_compiler.lowering import blocks_to_fill, build_chunk_circuit

    # the shift (and ỹ's width) grow with log2 B, as the block-size study and the protocol do
    spec = parse_spec(args.spec).for_block_size(args.block_size)
    lanes = (args.lanes or args.block_size) if args.level == "F" else None
    nb = args.blocks_per_chunk or blocks_to_fill(
        args.k, block_size=args.block_size, level=args.level, spec=spec, lanes=lanes, layout=args.layout
    )
    workload = Workload(
        block_size=args.block_size, blocks_per_chunk=nb, mask_kind=args.mask, seed=args.seed, model=args.model
    )
    masks = layer_masks(workload)
    todo = touched_chunks(masks, workload)
    rng = np.random.default_rng([args.seed, 99])
    sample = (
        todo
        if args.sample == "all"
        else [todo[i] for i in sorted(rng.choice(len(todo), min(int(args.sample), len(todo)), replace=False))]
    )
    probe = ProverConfig(
        level=args.level,
        block_size=args.block_size,
        lanes=lanes,
        blocks_per_chunk=nb,
        layout=args.layout,
        spec=spec.to_dict(),
        srs_path="",
        srs_sha256="",
        reused=getattr(args, "reused", "registered"),
    )
    shape = _shape(probe)
    cs = build_chunk_circuit(shape).cs
    srs = dev_srs(cs.k, Path(args.srs_dir))
    config = dataclasses.replace(probe, srs_path=str(srs.path), srs_sha256=srs.sha256)
    return Plan(workload, masks, todo, sample, config, shape, cs, srs)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from circuit_compiler import backend
    from circuit_compiler.lowering import chunk_instances

    warnings.simplefilter("ignore")
    p = plan(args)
    workload, masks, todo, sample = p.workload, p.masks, p.todo, p.sample
    config, shape, cs, srs = p.config, p.shape, p.cs, p.srs
    spec, lanes, nb = shape.spec, config.lanes, config.blocks_per_chunk
    jobs = [(config, workload, layer, chunk, masks[layer], None) for layer, chunk in sample]

    load_before = os.getloadavg()
    ctx = multiprocessing.get_context("spawn")
    counter = ctx.Value("i", 0)
    start = time.perf_counter()
    initargs = (args.threads, args.pin, counter, args.commitment_scheme)
    with _blas_threads_of_new_processes(1 if args.pin else None):
        pool = ctx.Pool(args.workers, initializer=_init_worker, initargs=initargs)
    registration_wall = 0.0
    with pool:
        if config.reused == "registered":  # the clients' registrations: before the requests, not timed
            t = time.perf_counter()
            registered = pool.map(register_chunk, jobs, chunksize=1)
            registration_wall = time.perf_counter() - t
            jobs = [job[:-1] + (r,) for job, r in zip(jobs, registered)]
        results = pool.map(prove_chunk, jobs, chunksize=1)
    batch_wall = time.perf_counter() - start - registration_wall
    load_after = os.getloadavg()

    per_chunk = []
    for (layer, chunk), r in zip(sample, results):
        part = masks[layer].reshape(-1, args.block_size)[chunk * nb : (chunk + 1) * nb]
        part = np.concatenate([part, np.zeros((nb - part.shape[0], args.block_size), dtype=bool)])
        instances = chunk_instances(shape, part)
        commitments = {name: bytes.fromhex(c) for name, c in r["commitments"].items()}
        t = time.perf_counter()
        ok = backend.verify(srs, r["vk"], cs, r["proof"], instances, commitments)  # the verifier needs no witness
        verify_s = time.perf_counter() - t
        if not ok:
            raise RuntimeError(f"the proof of layer {layer} chunk {chunk} does not verify")
        per_chunk.append(
            {
                key: (round(v, 4) if isinstance(v, float) else v)
                for key, v in r.items()
                if key not in ("proof", "vk", "commitments", "started", "finished")
            }
            | {"verify_s": round(verify_s, 4)}
        )

    # the provider's path: all of a bundle's proofs of one circuit in one batch (one final pairing check)
    batch = []
    for (layer, chunk), r in zip(sample, results):
        part = masks[layer].reshape(-1, args.block_size)[chunk * nb : (chunk + 1) * nb]
        part = np.concatenate([part, np.zeros((nb - part.shape[0], args.block_size), dtype=bool)])
        commitments = {name: bytes.fromhex(c) for name, c in r["commitments"].items()}
        batch.append((r["proof"], chunk_instances(shape, part), commitments))
    t = time.perf_counter()
    backend.verify_batch_or_raise(srs, results[0]["vk"], cs, batch)
    verify_batch_s = time.perf_counter() - t

    n = len(per_chunk)
    total = len(todo)
    # One-time costs (worker start-up, keygen once per worker) are counted once; the steady state is the
    # span from the first job's start to the last proof's end, without the keygens that ran inside it.
    span = max(r["finished"] for r in results) - min(r["started"] for r in results)
    keygen_s = max(r["keygen_s"] for r in results)  # workers generate their keys in parallel
    wall_per_chunk = max(span - keygen_s, 0.0) / n
    one_time_s = max(batch_wall - span, 0.0) + keygen_s
    mean = lambda key: float(np.mean([c[key] for c in per_chunk]))
    prove_s_total = one_time_s + total * wall_per_chunk
    peak_rss = max(c["rss_mb"] for c in per_chunk)
    proof_bytes_total = total * mean("proof_bytes")
    verify_s_total = total * mean("verify_s")
    verify_batch_s_total = total * verify_batch_s / n  # one pairing per n proofs: an upper bound for larger batches
    weights_per_chunk = nb * args.block_size
    result = {
        "model": args.model,
        "workload": MODELS[args.model]["title"],
        "target_weights": int(sum(a * b for a, b in workload.shapes)),
        "level": args.level,
        "block_size": args.block_size,
        "lanes": lanes,
        "layout": shape.layout,
        "blocks_per_chunk": nb,
        "k": cs.k,
        "limb_bits": shape.limb_bits,
        "spec": spec.to_dict(),
        "mask": args.mask,
        "workers": args.workers,
        "threads": args.threads,
        "commitment_scheme": args.commitment_scheme or backend.default_commitment_scheme(),
        "reused": config.reused,
        "pinned": args.pin,
        "chunks_per_layer": workload.chunks_per_layer,
        "chunks_total": total,
        "chunks_all": workload.chunks_all,
        "chunks_proved": n,
        "masked_weights": int(sum(m.sum() for m in masks)),
        "keygen_s": round(keygen_s, 3),
        "one_time_s": round(one_time_s, 3),
        "batch_wall_s": round(batch_wall, 3),
        "prove_s_per_chunk": round(wall_per_chunk, 3),
        "prove_s_total": round(prove_s_total, 1),
        "prove_cpu_s_total": round(total * mean("prove_cpu_s"), 1),
        "prove_us_per_weight": round(1e6 * wall_per_chunk / weights_per_chunk, 3),
        "prove_cpu_us_per_weight": round(1e6 * mean("prove_cpu_s") / weights_per_chunk, 3),
        "peak_rss_mb": round(peak_rss, 1),
        "proof_bytes_total": int(proof_bytes_total),
        "verify_s_total": round(verify_s_total, 2),
        "verify_batch_s": round(verify_batch_s, 4),
        "verify_batch_s_total": round(verify_batch_s_total, 2),
        "per_chunk": per_chunk,
        "extrapolation": (
            f"prove_s_total = one-time (worker start-up + keygen) + chunks_total × steady-state wall "
            f"per chunk ({one_time_s:.1f} + {total} × {wall_per_chunk:.3f} s); verify and proof bytes: "
            f"chunks_total × the sampled mean ({n} of {total} touched chunks proved)"
        ),
        "paper": PAPER,
        "ratio_to_paper": {
            "prove_s": round(prove_s_total / PAPER["prove_s"], 4),
            "peak_rss_mb": round(peak_rss / PAPER["peak_rss_mb"], 4),
            "proof_bytes": round(proof_bytes_total / PAPER["proof_bytes"], 5),
        },
        "machine": {
            "cpus": os.cpu_count(),
            "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in load_after],
            "python": platform.python_version(),
        },
        "srs": {"path": str(srs.path), "sha256": srs.sha256, "k": srs.k, "development": srs.development},
    }
    return result


def parse_spec(text: str | None):
    """``FixedPointSpec`` defaults overridden by ``name=value,...`` (e.g. ``f_g=11,s=15,limb_bits=12``)."""
    from circuit_compiler.fixedpoint import FixedPointSpec

    if not text:
        return FixedPointSpec()
    fields = {f.name for f in dataclasses.fields(FixedPointSpec)}
    overrides: dict[str, int | None] = {}
    for item in text.split(","):
        name, _, value = item.partition("=")
        if name.strip() not in fields or not value:
            raise ValueError(f"--spec: {item!r} is not name=value with name one of {sorted(fields)}")
        overrides[name.strip()] = None if value.strip() == "None" else int(value)
    return FixedPointSpec(**overrides)


def print_table(result: dict[str, Any]) -> None:
    threads = "1 pinned CPU each" if result["pinned"] else f"{result['threads'] or 'all'} thread(s)"
    print(
        f"{result.get('workload', MODELS['vitb']['title'])}, level {result['level']}, B = {result['block_size']}, layout "
        f"{result['layout']}, {result['blocks_per_chunk']} blocks per chunk (k = {result['k']}, limbs of "
        f"{result['limb_bits']} bits), mask {result['mask']} 4 %, {result['workers']} worker(s) × {threads}"
    )
    print(
        f"load average before/after: {result['machine']['load_before']} / {result['machine']['load_after']} "
        f"on {result['machine']['cpus']} cpus"
    )
    header = (
        f"{'layer':>5} {'chunk':>5} {'masked':>7} {'lower_s':>8} {'keygen_s':>8} {'prove_s':>8} {'cpu_s':>7} "
        f"{'verify_s':>8} {'proof_B':>8} {'rss_MB':>7}"
    )
    print(header)
    for c in result["per_chunk"]:
        print(
            f"{c['layer']:>5} {c['chunk']:>5} {c['masked']:>7} {c['lower_s']:>8.2f} {c['keygen_s']:>8.2f} "
            f"{c['prove_s']:>8.2f} {c['prove_cpu_s']:>7.2f} {c['verify_s']:>8.3f} {c['proof_bytes']:>8} "
            f"{c['rss_mb']:>7.0f}"
        )
    print(f"extrapolation: {result['extrapolation']}")
    rows = [
        ("prove time (s)", result["prove_s_total"], result["paper"]["prove_s"], result["ratio_to_paper"]["prove_s"]),
        (
            "peak RSS per prover (MB)",
            result["peak_rss_mb"],
            result["paper"]["peak_rss_mb"],
            result["ratio_to_paper"]["peak_rss_mb"],
        ),
        (
            "proofs (bytes)",
            result["proof_bytes_total"],
            result["paper"]["proof_bytes"],
            result["ratio_to_paper"]["proof_bytes"],
        ),
    ]
    print(f"{'whole workload':<26} {'this run':>14} {'paper':>14} {'ratio':>8}")
    for name, ours, paper, ratio in rows:
        print(f"{name:<26} {ours:>14,.1f} {paper:>14,.0f} {ratio:>8.4f}")
    print(
        f"chunks: {result['chunks_total']} touched of {result['chunks_all']} ({result['chunks_proved']} proved); "
        f"verify total {result['verify_s_total']:.1f} s one by one, {result['verify_batch_s_total']:.1f} s in "
        f"batches of {result['chunks_proved']}; {result['prove_us_per_weight']:.3f} µs per weight; "
        f"prover CPU time, all chunks: {result['prove_cpu_s_total']:,.0f} s"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sample", default="8", help="chunks to prove (sampled uniformly among the touched ones), or 'all'"
    )
    parser.add_argument("--level", choices=("R", "F"), default="F")
    parser.add_argument(
        "--model", choices=sorted(MODELS), default="vitb", help="whose target matrices (shapes) are proven"
    )
    parser.add_argument("--block-size", type=int, default=16)
    parser.add_argument(
        "--lanes", type=int, default=None, help="level F: committed G columns (default B: compact layout)"
    )
    parser.add_argument("--layout", choices=("compact", "classic"), default=None)
    parser.add_argument("--blocks-per-chunk", type=int, default=None, help="default: the most that fill 2^k rows")
    parser.add_argument(
        "--k", type=int, default=16, help="domain size 2^k the chunks fill (without --blocks-per-chunk)"
    )
    parser.add_argument(
        "--spec",
        default=None,
        help="fixed-point formats overriding the defaults: name=value,... (e.g. f_g=11,s=15,limb_bits=12)",
    )
    parser.add_argument("--mask", choices=("random", "second-order"), default="random")
    parser.add_argument(
        "--workers", type=int, default=len(os.sched_getaffinity(0)), help="prover processes (default: one per CPU)"
    )
    parser.add_argument("--threads", type=int, default=None, help="rayon threads per prover process")
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="pin each prover process to one CPU, single-threaded (default: when there are as "
        "many workers as CPUs; measured faster than threads, benchmarks/NOTES.md)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--srs-dir", default=str(DEFAULT_SRS_DIR))
    parser.add_argument(
        "--commitment-scheme",
        choices=("sized", "plain"),
        default=None,
        help="how provers compute commitments (default: $JAXAPEX_COMMITMENT_SCHEME, else sized; benchmarks/NOTES.md)",
    )
    parser.add_argument(
        "--reused",
        choices=("registered", "committed"),
        default="registered",
        help="the reused columns (θ, G): 'registered' -- the prover takes the client's registered commitments, "
        "re-randomized, as the protocol does (default); 'committed' -- it commits them in every proof",
    )
    add_json_option(parser)
    args = parser.parse_args(argv)

    if args.sample != "all" and (not args.sample.isdigit() or int(args.sample) < 1):
        parser.error(f"--sample must be a positive integer or 'all', got {args.sample!r}")
    if args.workers < 1:
        parser.error(f"--workers must be >= 1, got {args.workers}")
    if args.pin is None:
        args.pin = args.workers >= len(os.sched_getaffinity(0))
    result = run(args)
    print_table(result)
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
