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
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

from .ir import Assignment, ConstraintSystem
from .srs import Srs

Executor = Literal["process", "ray", "serial"]


@dataclasses.dataclass(frozen=True)
class ProveJob:
    """One proof to make: ``assignment`` for the circuit ``cs``. ``name`` identifies it in results and
    errors; ``rng_seed`` is for reproducible tests only; ``known_commitments``: committed columns whose
    commitments the caller already holds (see :func:`circuit_compiler.backend.prove`)."""

    name: str
    cs: ConstraintSystem
    assignment: Assignment
    rng_seed: int | None = None
    known_commitments: Mapping[str, bytes] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class ProveResult:
    name: str
    proof: bytes
    vk: bytes  # the verifying key the proof is for (equal for all chunks of one shape)
    circuit_digest: str
    keygen_s: float  # ~0 when the worker already had the keys
    prove_s: float
    worker: str  # "pid:<pid>" of the process that proved it
    commitments: dict[str, bytes]  # every committed column's commitment, as the proof binds it


class ProvingError(RuntimeError):
    """A job failed; the message names the job and the backend's reason."""


# ----------------------------------------------------------------------------------------- the worker


@dataclasses.dataclass
class _Worker:
    """What one worker process holds for its whole life: the SRS, the circuits, the modulus."""

    srs: Srs
    circuits: list[ConstraintSystem]
    modulus: int

    def prove(
        self,
        circuit_index: int,
        assignment: Assignment,
        rng_seed: int | None,
        name: str,
        known_commitments: Mapping[str, bytes],
    ) -> ProveResult:
        from . import backend

        cs = self.circuits[circuit_index]
        try:
            t0 = time.perf_counter()
            keys = backend.keygen(self.srs, cs, self.modulus)
            t1 = time.perf_counter()
            # The commitments come back with the proof: computing them again in the caller's process would
            # repeat every MSM the proof already did.
            proof, commitments = backend.prove_with_commitments(
                self.srs, keys, cs, assignment, self.modulus, rng_seed=rng_seed, known_commitments=known_commitments
            )
            t2 = time.perf_counter()
        except Exception as err:
            raise ProvingError(f"proving job {name!r} (circuit {cs.name!r}) failed: {err}") from None
        return ProveResult(
            name=name,
            proof=proof,
            vk=keys.vk,
            circuit_digest=keys.circuit_digest,
            keygen_s=t1 - t0,
            prove_s=t2 - t1,
            worker=f"pid:{os.getpid()}",
            commitments=commitments,
        )


# --------------------------------------------------------------------------------------------- driver


def peak_rss_mb() -> float:
    """This process's peak resident set in MB since it started its program.

    Linux's ``ru_maxrss`` survives ``fork`` + ``exec``: a worker or CLI process started from a large parent
    reports the parent's peak. ``VmHWM`` belongs to the address space, which ``exec`` replaces, so it is
    read first; ``ru_maxrss`` is the fallback where ``/proc`` is absent.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


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


def prove_many(
    jobs: Iterable[ProveJob],
    srs: Srs,
    *,
    executor: Executor = "process",
    workers: int | None = None,
    progress: bool = True,
    modulus: int | None = None,
    ray_address: str | None = None,
    circuits: Sequence[ConstraintSystem] | None = None,
    total: int | None = None,
    in_flight: int | None = None,
) -> list[ProveResult]:
    """Prove every job; results in job order. Raises :class:`ProvingError` naming the first failed job.

    ``executor``: ``"process"`` (default; a local pool of ``workers`` processes, see
    :func:`default_workers`), ``"ray"`` (Ray actors; ``ray_address`` to join a running cluster) or
    ``"serial"`` (this process). Workers open the SRS by its path. Worker processes are spawned (not
    forked), so a script calling this must do so under ``if __name__ == "__main__":``.

    With ``circuits`` (every circuit the jobs use) ``jobs`` may be a lazy iterable: it is drawn as workers
    free up, at most ``in_flight`` jobs (default twice the workers) handed out and not yet done, so a
    caller can lower witnesses one by one while the workers prove, in bounded memory, on one pool for all.
    ``total``: the number of jobs, for the progress bar.
    """
    from . import backend

    modulus = backend.BLS12_381_SCALAR_MODULUS if modulus is None else int(modulus)
    if circuits is None:
        jobs = list(jobs)
        circuits, indices = _dedupe_circuits(jobs, modulus)
        calls: Iterable[tuple] = [_call_of(job, i) for job, i in zip(jobs, indices)]
        total = len(jobs)
    else:
        circuits = list(circuits)
        calls = (_call_of(job, _index_of(job, circuits, modulus)) for job in jobs)
    if executor == "serial":
        worker = _Worker(srs=srs, circuits=circuits, modulus=modulus)
        results = []
        with _progress(total, progress) as bar:
            for call in calls:
                results.append(worker.prove(*call))
                bar.update()
        return results
    if not circuits:
        return []
    return map_on_workers(
        _prove_call,
        calls,
        init=_open_worker,
        init_args=(file_backed_srs_path(srs, executor), srs.sha256, circuits, modulus),
        executor=executor,
        workers=workers,
        progress=progress,
        desc="proving chunks",
        unit="proof",
        ray_address=ray_address,
        total=total,
        in_flight=in_flight,
    )


def _call_of(job: ProveJob, circuit_index: int) -> tuple:
    return (circuit_index, job.assignment, job.rng_seed, job.name, dict(job.known_commitments))


def _index_of(job: ProveJob, circuits: list[ConstraintSystem], modulus: int) -> int:
    """The job's circuit among the given ones (the same object, else the same digest)."""
    from . import backend

    for i, cs in enumerate(circuits):
        if cs is job.cs:
            return i
    digest = backend.circuit_digest(job.cs, modulus)
    for i, cs in enumerate(circuits):
        if backend.circuit_digest(cs, modulus) == digest:
            return i
    raise ValueError(f"job {job.name!r}: its circuit {job.cs.name!r} is not among the circuits given to prove_many")


def _open_worker(srs_path: str, srs_sha256: str, circuits: list[ConstraintSystem], modulus: int) -> _Worker:
    import warnings

    from .srs import InsecureSrsWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureSrsWarning)  # the parent was warned already
        srs = Srs.load(srs_path, expected_sha256=srs_sha256)
    return _Worker(srs=srs, circuits=circuits, modulus=modulus)


def _prove_call(
    worker: _Worker,
    circuit_index: int,
    assignment: Assignment,
    rng_seed: int | None,
    name: str,
    known_commitments: Mapping[str, bytes],
) -> ProveResult:
    return worker.prove(circuit_index, assignment, rng_seed, name, known_commitments)


def file_backed_srs_path(srs: Srs, executor: str) -> str:
    """The SRS's path, which workers open themselves (nothing large is pickled); refused if in memory only."""
    if srs.path is None or not srs.path.is_file():
        raise ValueError(f"executor {executor!r} needs a file-backed SRS (workers open it by path); got {srs!r}")
    return str(srs.path)


# ------------------------------------------------------------------------------ a pool of stateful workers


_STATE: Any = None


def _init_state(init: Callable[..., Any], init_args: tuple, threads: int) -> None:
    # Before the extension starts its thread pool: the first rayon use fixes the thread count.
    os.environ["RAYON_NUM_THREADS"] = str(threads)
    global _STATE
    _STATE = init(*init_args)


def _call_with_state(fn: Callable[..., Any], call: tuple) -> Any:
    assert _STATE is not None, "worker not initialized"
    return fn(_STATE, *call)


def map_on_workers(
    fn: Callable[..., Any],
    calls: Iterable[tuple],
    *,
    init: Callable[..., Any],
    init_args: tuple,
    executor: Executor = "process",
    workers: int | None = None,
    progress: bool = True,
    desc: str = "working",
    unit: str = "job",
    ray_address: str | None = None,
    total: int | None = None,
    in_flight: int | None = None,
) -> list[Any]:
    """``[fn(state, *call) for call in calls]`` on a pool of workers, results in call order.

    Each worker runs ``state = init(*init_args)`` once (open the SRS, hold the circuits: what every call
    needs) and then serves calls. ``fn`` and ``init`` must be module-level functions (they are pickled by
    name). ``executor``: ``"process"`` (a local spawned pool), ``"ray"`` (one Ray actor per worker; a local
    Ray runtime is started unless one is running or ``ray_address`` names a cluster) or ``"serial"``. The
    first exception a call raises is re-raised here (unwrapped from Ray's wrapper).

    ``calls`` may be a lazy iterable: it is drawn as calls finish, with at most ``in_flight`` handed out and
    not yet done (default: all of a list at once; twice the workers for an iterator). ``total`` sizes the
    progress bar (default ``len(calls)`` where it has one).
    """
    if total is None and isinstance(calls, Sequence):
        total = len(calls)
    if executor == "serial":
        state = init(*init_args)
        out = []
        with _progress(total, progress, desc, unit) as bar:
            for call in calls:
                out.append(fn(state, *call))
                bar.update()
        return out
    if total == 0:
        return []
    workers = default_workers(total or 1 << 30) if workers is None else max(1, int(workers))
    threads = max(1, (os.cpu_count() or 1) // workers)
    if in_flight is None:
        in_flight = len(calls) if isinstance(calls, Sequence) else 2 * workers
    in_flight = max(1, int(in_flight))
    if executor == "process":
        return _run_process_pool(fn, calls, init, init_args, workers, threads, progress, desc, unit, total, in_flight)
    if executor == "ray":
        return _run_ray(fn, calls, init, init_args, workers, threads, progress, desc, unit, ray_address, total)
    raise ValueError(f"unknown executor {executor!r}; use 'process', 'ray' or 'serial'")


def _progress(total: int | None, enabled: bool, desc: str = "proving chunks", unit: str = "proof") -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled)


def _run_process_pool(fn, calls, init, init_args, workers, threads, progress, desc, unit, total, in_flight):
    # "spawn": forking a process whose rayon pool is already running would leave the child without threads.
    context = multiprocessing.get_context("spawn")
    results: dict[int, Any] = {}
    source = enumerate(calls)
    with (
        concurrent.futures.ProcessPoolExecutor(
            max_workers=workers,
            mp_context=context,
            initializer=_init_state,
            initargs=(init, init_args, threads),
        ) as pool,
        _progress(total, progress, desc, unit) as bar,
    ):
        pending: dict[concurrent.futures.Future, int] = {}

        def submit() -> None:
            while len(pending) < in_flight:
                item = next(source, None)
                if item is None:
                    return
                n, call = item
                pending[pool.submit(_call_with_state, fn, call)] = n

        try:
            submit()
            while pending:
                done, _ = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
                for future in done:
                    results[pending.pop(future)] = future.result()
                    bar.update()
                submit()
        except BaseException:
            for f in pending:
                f.cancel()
            raise
    return [results[n] for n in range(len(results))]


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ImportError("executor='ray' needs Ray, which is not installed: pip install 'jaxapex[ray]'") from None
    return ray


def ensure_ray(address: str | None = None, *, num_cpus: int | None = None, attempts: int = 3) -> Any:
    """The ``ray`` module with a runtime connected: the running one, the cluster at ``address`` (or
    ``RAY_ADDRESS``), else a new local one of ``num_cpus`` CPUs (default: all). A local start is retried:
    Ray gives its raylet a fixed 30 s to register, which a loaded machine can miss."""
    ray = _import_ray()
    for attempt in range(1, attempts + 1):
        if ray.is_initialized():
            return ray
        try:
            ray.init(
                address=address,
                num_cpus=None if address else num_cpus,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
                ignore_reinit_error=True,
            )
        except Exception as err:
            if attempt == attempts or "timed out during startup" not in str(err):
                raise
            ray.shutdown()
    return ray


class _StatefulActor:
    """The body of a Ray actor: one worker's state, serving calls."""

    def __init__(self, init: Callable[..., Any], init_args: tuple, threads: int):
        _init_state(init, init_args, threads)

    def call(self, fn: Callable[..., Any], call: tuple) -> Any:
        return _call_with_state(fn, call)


def _run_ray(fn, calls, init, init_args, workers, threads, progress, desc, unit, address, total) -> list[Any]:
    ray = ensure_ray(address)
    actor_class = ray.remote(num_cpus=threads)(_StatefulActor)
    args_ref = ray.put(init_args)
    actors = [actor_class.remote(init, args_ref, threads) for _ in range(workers)]
    results: dict[int, Any] = {}
    pending: dict[Any, tuple[int, Any]] = {}
    source = enumerate(calls)  # drawn one call per free actor, in order
    free = list(actors)

    def submit() -> None:
        while free:
            item = next(source, None)
            if item is None:
                return
            n, call = item
            actor = free.pop()
            pending[actor.call.remote(fn, call)] = (n, actor)

    try:
        with _progress(total, progress, desc, unit) as bar:
            submit()
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                n, actor = pending.pop(done[0])
                try:
                    results[n] = ray.get(done[0])
                except ray.exceptions.RayTaskError as err:
                    cause = getattr(err, "cause", None)
                    raise (cause if isinstance(cause, Exception) else RuntimeError(str(err))) from None
                free.append(actor)
                bar.update()
                submit()
    finally:
        for actor in actors:
            ray.kill(actor)
    return [results[n] for n in range(len(results))]
