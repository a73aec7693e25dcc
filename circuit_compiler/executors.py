"""Prove many independent chunk circuits: serially, on a local process pool, or on Ray.

Chunks are independent proofs, so they parallelize trivially; what matters is not to repeat work per
chunk. Each worker opens the SRS once (by path: nothing large is pickled) and receives every distinct
circuit structure once (chunks of one shape share one ConstraintSystem and one set of keys); a job then
carries only its assignment. Keys are generated once per (worker, structure) and cached by the backend.

Threads: a proof is itself multi-threaded (rayon). With ``w`` workers on ``c`` cores each worker gets
``c // w`` proving threads (``RAYON_NUM_THREADS``), so the pool never oversubscribes the machine. Larger
``w`` trades per-proof latency for throughput on circuits too small to keep all cores busy.

``executor="ray"`` runs the same workers as Ray actors (a local Ray is started on demand, or pass
``ray_address`` to join a cluster whose nodes can read the SRS path); ``pip install 'jaxapex[ray]'``.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import multiprocessing
import os
import time
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from .ir import Assignment, ConstraintSystem
from .srs import Srs

Executor = Literal["process", "ray", "serial"]


@dataclasses.dataclass(frozen=True)
class ProveJob:
    """One proof to make: ``assignment`` for the circuit ``cs``. ``name`` identifies it in results and
    errors; ``rng_seed`` is for reproducible tests only (see :func:`circuit_compiler.backend.prove`)."""

    name: str
    cs: ConstraintSystem
    assignment: Assignment
    rng_seed: int | None = None


@dataclasses.dataclass(frozen=True)
class ProveResult:
    name: str
    proof: bytes
    vk: bytes  # the verifying key the proof is for (equal for all chunks of one shape)
    circuit_digest: str
    keygen_s: float  # ~0 when the worker already had the keys
    prove_s: float
    worker: str  # "pid:<pid>" of the process that proved it


class ProvingError(RuntimeError):
    """A job failed; the message names the job and the backend's reason."""


# ----------------------------------------------------------------------------------------- the worker


@dataclasses.dataclass
class _Worker:
    """What one worker process holds for its whole life: the SRS, the circuits, the modulus."""

    srs: Srs
    circuits: list[ConstraintSystem]
    modulus: int

    def prove(self, circuit_index: int, assignment: Assignment, rng_seed: int | None, name: str) -> ProveResult:
        from . import backend

        cs = self.circuits[circuit_index]
        try:
            t0 = time.perf_counter()
            keys = backend.keygen(self.srs, cs, self.modulus)
            t1 = time.perf_counter()
            proof = backend.prove(self.srs, keys, cs, assignment, self.modulus, rng_seed=rng_seed)
            t2 = time.perf_counter()
        except Exception as err:  # noqa: BLE001 - re-raised with the job's name, picklable
            raise ProvingError(f"proving job {name!r} (circuit {cs.name!r}) failed: {err}") from None
        return ProveResult(name=name, proof=proof, vk=keys.vk, circuit_digest=keys.circuit_digest,
                           keygen_s=t1 - t0, prove_s=t2 - t1, worker=f"pid:{os.getpid()}")


_WORKER: _Worker | None = None


def _init_process(srs_path: str, srs_sha256: str, circuits: list[ConstraintSystem], modulus: int, threads: int) -> None:
    # Before the extension starts its thread pool: the first rayon use fixes the thread count.
    os.environ["RAYON_NUM_THREADS"] = str(threads)
    global _WORKER
    import warnings

    from .srs import InsecureSrsWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureSrsWarning)  # the parent was warned already
        srs = Srs.load(srs_path, expected_sha256=srs_sha256)
    _WORKER = _Worker(srs=srs, circuits=circuits, modulus=modulus)


def _prove_in_process(circuit_index: int, assignment: Assignment, rng_seed: int | None, name: str) -> ProveResult:
    assert _WORKER is not None, "worker not initialized"
    return _WORKER.prove(circuit_index, assignment, rng_seed, name)


# --------------------------------------------------------------------------------------------- driver


def default_workers(jobs: int, cores: int | None = None) -> int:
    """One worker per 4 cores (a proof scales well to about that many threads), at most one per job."""
    cores = cores or os.cpu_count() or 1
    return max(1, min(jobs, cores // 4))


def _dedupe_circuits(jobs: Sequence[ProveJob], modulus: int) -> tuple[list[ConstraintSystem], list[int]]:
    """Distinct circuits (by digest: equal digests share keys) and each job's index into them."""
    from . import backend

    circuits: list[ConstraintSystem] = []
    index_of: dict[str, int] = {}
    by_object: dict[int, int] = {}
    indices = []
    for job in jobs:
        i = by_object.get(id(job.cs))
        if i is None:
            digest = backend.circuit_digest(job.cs, modulus)
            i = index_of.setdefault(digest, len(circuits))
            if i == len(circuits):
                circuits.append(job.cs)
            by_object[id(job.cs)] = i
        indices.append(i)
    return circuits, indices


def _progress(total: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="proving chunks", unit="proof", disable=not enabled)


def prove_many(
    jobs: Iterable[ProveJob],
    srs: Srs,
    *,
    executor: Executor = "process",
    workers: int | None = None,
    progress: bool = True,
    modulus: int | None = None,
    ray_address: str | None = None,
) -> list[ProveResult]:
    """Prove every job; results in job order. Raises :class:`ProvingError` naming the first failed job.

    ``executor``: ``"process"`` (default; a local pool of ``workers`` processes, see
    :func:`default_workers`), ``"ray"`` (Ray actors; ``ray_address`` to join a running cluster) or
    ``"serial"`` (this process). Workers open the SRS by its path. Worker processes are spawned (not
    forked), so a script calling this must do so under ``if __name__ == "__main__":``.
    """
    from . import backend

    jobs = list(jobs)
    if not jobs:
        return []
    modulus = backend.BLS12_381_SCALAR_MODULUS if modulus is None else int(modulus)
    circuits, indices = _dedupe_circuits(jobs, modulus)
    if executor == "serial":
        worker = _Worker(srs=srs, circuits=circuits, modulus=modulus)
        results = []
        with _progress(len(jobs), progress) as bar:
            for job, i in zip(jobs, indices):
                results.append(worker.prove(i, job.assignment, job.rng_seed, job.name))
                bar.update()
        return results
    if srs.path is None or not srs.path.is_file():
        raise ValueError(f"executor {executor!r} needs a file-backed SRS (workers open it by path); got {srs!r}")
    workers = default_workers(len(jobs)) if workers is None else max(1, int(workers))
    threads = max(1, (os.cpu_count() or 1) // workers)
    calls = [(i, job.assignment, job.rng_seed, job.name) for job, i in zip(jobs, indices)]
    if executor == "process":
        return _run_process_pool(srs, circuits, modulus, calls, workers, threads, progress)
    if executor == "ray":
        return _run_ray(srs, circuits, modulus, calls, workers, threads, progress, ray_address)
    raise ValueError(f"unknown executor {executor!r}; use 'process', 'ray' or 'serial'")


def _run_process_pool(srs: Srs, circuits, modulus, calls, workers, threads, progress) -> list[ProveResult]:
    # "spawn": forking a process whose rayon pool is already running would leave the child without threads.
    context = multiprocessing.get_context("spawn")
    results: list[ProveResult | None] = [None] * len(calls)
    with concurrent.futures.ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_init_process,
        initargs=(str(srs.path), srs.sha256, circuits, modulus, threads),
    ) as pool, _progress(len(calls), progress) as bar:
        futures = {pool.submit(_prove_in_process, *call): n for n, call in enumerate(calls)}
        try:
            for future in concurrent.futures.as_completed(futures):
                results[futures[future]] = future.result()
                bar.update()
        except BaseException:
            for f in futures:
                f.cancel()
            raise
    return results  # type: ignore[return-value]


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ImportError(
            "executor='ray' needs Ray, which is not installed: pip install 'jaxapex[ray]'"
        ) from None
    return ray


def _run_ray(srs: Srs, circuits, modulus, calls, workers, threads, progress, address) -> list[ProveResult]:
    ray = _import_ray()
    if not ray.is_initialized():
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False,
                 runtime_env={"env_vars": {"RAYON_NUM_THREADS": str(threads)}})

    @ray.remote(num_cpus=threads)
    class ProverActor:
        def __init__(self, srs_path: str, srs_sha256: str, circuits, modulus: int, threads: int):
            _init_process(srs_path, srs_sha256, circuits, modulus, threads)

        def prove(self, circuit_index, assignment, rng_seed, name) -> ProveResult:
            return _prove_in_process(circuit_index, assignment, rng_seed, name)

    circuits_ref = ray.put(circuits)
    actors = [ProverActor.remote(str(srs.path), srs.sha256, circuits_ref, modulus, threads) for _ in range(workers)]
    results: list[ProveResult | None] = [None] * len(calls)
    pending: dict[Any, tuple[int, Any]] = {}
    queue = list(enumerate(calls))
    free = list(actors)

    def submit() -> None:
        while free and queue:
            n, call = queue.pop(0)
            actor = free.pop()
            pending[actor.prove.remote(*call)] = (n, actor)

    try:
        with _progress(len(calls), progress) as bar:
            submit()
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                n, actor = pending.pop(done[0])
                try:
                    results[n] = ray.get(done[0])
                except ray.exceptions.RayTaskError as err:
                    cause = err.cause if isinstance(getattr(err, "cause", None), ProvingError) else err
                    raise ProvingError(str(cause)) from None
                free.append(actor)
                bar.update()
                submit()
    finally:
        for actor in actors:
            ray.kill(actor)
    return results  # type: ignore[return-value]
