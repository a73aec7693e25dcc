"""Proving many chunks: serial, process-pool and Ray executors give proofs that verify, in job order."""

from __future__ import annotations

import builtins
import dataclasses
import warnings

import numpy as np
import pytest

from circuit_compiler import backend as be
from circuit_compiler.builder import CircuitBuilder
from circuit_compiler.executors import ProveJob, ProvingError, default_workers, prove_many
from circuit_compiler.ir import Assignment, ConstraintSystem

pytestmark = pytest.mark.prover


def scaled_sum_circuit() -> ConstraintSystem:
    """out = 3·a + x on 20 rows (x public, a committed), plus a copy of out[0] into a public total."""
    b = CircuitBuilder("scaled_sum")
    a, x, total = b.committed("a"), b.instance("x"), b.instance("total")
    out = b.advice("out")
    q = b.selector("q")
    b.gate("scaled_sum", q, [("out", out.cur() - a.cur() * 3 - x.cur())])
    b.enable(q, np.arange(20))
    b.copies(total, [0], out, [0])
    return b.build()


CS = scaled_sum_circuit()


def job(n: int, *, broken: bool = False) -> ProveJob:
    rng = np.random.default_rng(n)
    a = rng.integers(-1000, 1000, CS.rows)
    x = rng.integers(-1000, 1000, CS.rows)
    out = 3 * a + x
    if broken:
        out[0] += 1  # the copy into the public total still holds; the gate does not
    total = np.zeros(CS.rows, np.int64)
    total[0] = out[0]
    return ProveJob(
        f"chunk-{n}", CS, Assignment(advice={"out": out}, instance={"x": x, "total": total}, committed={"a": a})
    )


@pytest.fixture(scope="module")
def srs(tmp_path_factory):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", be.InsecureSrsWarning)
        return be.Srs.generate_dev(CS.k, tmp_path_factory.mktemp("srs") / "dev.srs", seed=5)


def check_results(srs, jobs, results):
    assert [r.name for r in results] == [j.name for j in jobs]
    keys = be.keygen(srs, CS)
    for j, r in zip(jobs, results):
        assert r.vk == keys.vk and r.circuit_digest == keys.circuit_digest and r.prove_s > 0
        coms = {"a": be.commit(srs, CS.k, j.assignment.committed["a"])}
        assert be.verify(srs, r.vk, CS, r.proof, j.assignment.instance, coms), r.name
    # proofs are bound to their own chunk's instances
    other = jobs[1].assignment
    coms = {"a": be.commit(srs, CS.k, other.committed["a"])}
    assert not be.verify(srs, results[0].vk, CS, results[0].proof, other.instance, coms)


def test_serial(srs):
    jobs = [job(n) for n in range(3)]
    check_results(srs, jobs, prove_many(jobs, srs, executor="serial", progress=False))


def test_process_pool_loads_keys_once_per_worker(srs):
    jobs = [job(n) for n in range(5)]
    results = prove_many(jobs, srs, executor="process", workers=2, progress=False)
    check_results(srs, jobs, results)
    assert all(r.worker.startswith("pid:") for r in results)
    by_worker: dict[str, list[float]] = {}
    for r in results:
        by_worker.setdefault(r.worker, []).append(r.keygen_s)
    # each worker generated the keys for its first job only; its later jobs hit its key cache
    for times in by_worker.values():
        times.sort()
        assert len(times) == 1 or times[-2] < 0.2 * times[-1], times


def test_a_failing_job_is_named(srs):
    jobs = [job(0), job(1, broken=True)]
    results = prove_many(jobs, srs, executor="serial", progress=False)
    # the prover does not check gates: the broken witness proves, but its proof does not verify
    coms = {"a": be.commit(srs, CS.k, jobs[1].assignment.committed["a"])}
    assert not be.verify(srs, results[1].vk, CS, results[1].proof, jobs[1].assignment.instance, coms)
    bad = ProveJob(
        "chunk-missing",
        CS,
        Assignment(advice={}, instance=jobs[0].assignment.instance, committed=jobs[0].assignment.committed),
    )
    for executor in ("serial", "process"):
        with pytest.raises(ProvingError, match="chunk-missing"):
            prove_many([jobs[0], bad], srs, executor=executor, workers=1, progress=False)


@pytest.mark.parametrize("executor", ["serial", "process"])
def test_lazy_jobs_are_proven_on_one_pool_in_order(srs, executor):
    """Given the circuits, jobs may come from a generator, proven on one pool for all: results in job
    order, with their commitments."""
    drawn = []

    def jobs():
        for n in range(5):
            drawn.append(n)
            yield job(n)

    results = prove_many(jobs(), srs, executor=executor, workers=1, progress=False, circuits=[CS], total=5, in_flight=2)
    check_results(srs, [job(n) for n in range(5)], results)
    assert drawn == list(range(5)) and len({r.worker for r in results}) == 1
    for n, r in enumerate(results):
        assert r.commitments == {"a": be.commit(srs, CS.k, job(n).assignment.committed["a"])}
    # a job whose circuit was not announced is refused, naming it
    stranger = ProveJob("chunk-x", dataclasses.replace(CS, name="larger", k=CS.k + 1), job(0).assignment)
    with pytest.raises(ValueError, match="job 'chunk-x': its circuit 'larger' is not among the circuits"):
        prove_many(iter([job(0), stranger]), srs, executor=executor, workers=1, progress=False, circuits=[CS])


def test_default_workers_leave_threads_for_each_proof():
    assert default_workers(10, cores=2) == 1
    assert default_workers(10, cores=16) == 4
    assert default_workers(2, cores=64) == 2


def test_ray_missing_gives_install_hint(srs, monkeypatch):
    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(ImportError, match=r"pip install 'jaxapex\[ray\]'"):
        prove_many([job(0)], srs, executor="ray", progress=False)


def test_ray(srs):
    pytest.importorskip("ray")
    jobs = [job(n) for n in range(3)]
    check_results(srs, jobs, prove_many(jobs, srs, executor="ray", workers=2, progress=False))


def test_unknown_executor_is_refused(srs):
    with pytest.raises(ValueError, match="unknown executor"):
        prove_many([job(0)], srs, executor="threads", progress=False)  # type: ignore[arg-type]


def test_peak_rss_of_a_child_is_its_own_not_its_parents():
    """A process started from a large parent reports its own peak (ru_maxrss would carry the parent's)."""
    import subprocess
    import sys

    from circuit_compiler.executors import peak_rss_mb

    ballast = np.ones(300 * 2**20 // 8)  # 300 MB touched in this process
    assert peak_rss_mb() >= 300
    out = subprocess.run(
        [sys.executable, "-c", "from circuit_compiler.executors import peak_rss_mb; print(peak_rss_mb())"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert 1 < float(out.stdout) < 150, out.stdout
    del ballast
