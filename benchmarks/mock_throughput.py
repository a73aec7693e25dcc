"""Mock-prover throughput: gate-row evaluations per second, vectorized vs. a plain per-row Python loop.

On one OBS chunk circuit (level F by default, through the real pipeline of :mod:`circuit_compiler.demo`),
a *gate-row evaluation* is one constraint polynomial checked on one row where its selector is on. Both
methods check the same (constraint, row) pairs exactly mod p:

* ``vectorized`` -- :class:`circuit_compiler.mock_prover.MockProver` over all enabled rows at once (best of
  ``--repeats``; the store of column values is built once, outside the timing, and timed separately);
* ``loop`` -- for each enabled row, each constraint: ``Expression.fold`` with Python integers mod p, reading
  canonical values from Python lists (prepared outside the timing). It runs on the first ``--loop-rows``
  enabled rows of every gate and its time is extrapolated linearly to all rows (both figures printed).

Also timed: the same gate evaluations through the slowest exact tier only (Python ints, what field-sized
cells cost), and the full check (gates, lookups, copies, values) from scratch.

    python -m benchmarks.mock_throughput [--blocks 16 --block-size 64 --lanes 8] [--json PATH]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time

import numpy as np

from benchmarks.report import add_json_option, write_json
from circuit_compiler.demo import obs_circuit
from circuit_compiler.ir import ColumnKind, Expression
from circuit_compiler.mock_prover import MockProver, check


def gate_rows(prover: MockProver) -> int:
    return sum(len(prover.enabled_rows(g.selector)) * len(g.polys) for g in prover.cs.gates)


def vectorized_gates(prover: MockProver) -> int:
    """Check every gate on every enabled row; returns the number of failures (0 for an honest witness)."""
    return sum(len(prover.gate_failures(g, prover.enabled_rows(g.selector))) for g in prover.cs.gates)


def exact_tier_gates(prover: MockProver) -> int:
    """The same evaluations through the slowest tier only (Python ints in object arrays): what the check
    costs when no magnitude bound helps (field-sized cells). Returns the number of nonzero values."""
    nonzero = 0
    for g in prover.cs.gates:
        rows = prover.enabled_rows(g.selector)
        for _, poly in g.polys:
            nonzero += int(np.count_nonzero(prover.evaluate(poly, rows)))
    return nonzero


def python_values(prover: MockProver) -> dict:
    """Column -> list of canonical Python ints over the 2^k domain (what a per-row checker reads)."""
    n = prover.n
    out = {}
    for column in prover.cs.columns:
        if column.kind in (ColumnKind.SELECTOR, ColumnKind.TABLE):
            continue
        out[column] = [int(v) for v in prover.values(column, np.arange(n))]
    return out


def evaluate_row(expr: Expression, values: dict, row: int, n: int, p: int) -> int:
    return (
        expr.fold(
            constant=lambda c: c % p,
            query=lambda q: values[q.column][(row + q.rotation) % n],
            negated=lambda a: -a,
            sum=lambda a, b: a + b,
            product=lambda a, b: a * b % p,
            scaled=lambda a, c: a * c % p,
        )
        % p
    )


def loop_gates(prover: MockProver, values: dict, rows_per_gate: int) -> tuple[int, int]:
    """The per-row loop on the first ``rows_per_gate`` enabled rows of each gate: (evaluations, failures)."""
    p, n = prover.modulus, prover.n
    evaluations = failures = 0
    for gate in prover.cs.gates:
        for row in prover.enabled_rows(gate.selector)[:rows_per_gate].tolist():
            for _, poly in gate.polys:
                evaluations += 1
                if evaluate_row(poly, values, row, n, p):
                    failures += 1
    return evaluations, failures


def run(*, blocks: int, block_size: int, lanes: int, level: str, loop_rows: int, repeats: int, seed: int) -> dict:
    build_start = time.perf_counter()
    cs, assignment, modulus = obs_circuit(level=level, blocks=blocks, block_size=block_size, lanes=lanes, seed=seed)
    build_seconds = time.perf_counter() - build_start

    load_start = time.perf_counter()
    prover = MockProver(cs, assignment, modulus)
    for g in cs.gates:
        prover.enabled_rows(g.selector)
    load_seconds = time.perf_counter() - load_start
    evaluations = gate_rows(prover)

    vec_times = []
    for _ in range(repeats):
        start = time.perf_counter()
        vec_failures = vectorized_gates(prover)
        vec_times.append(time.perf_counter() - start)
    vec_seconds = min(vec_times)
    tiers = {k: v // repeats for k, v in prover.tier_rows.items()}

    start = time.perf_counter()
    exact_failures = exact_tier_gates(prover)
    exact_seconds = time.perf_counter() - start

    values = python_values(prover)
    start = time.perf_counter()
    loop_evaluations, loop_failures = loop_gates(prover, values, loop_rows)
    loop_measured = time.perf_counter() - start
    loop_extrapolated = loop_measured * evaluations / loop_evaluations

    full_start = time.perf_counter()
    full_failures = check(cs, assignment, modulus)
    full_seconds = time.perf_counter() - full_start

    if vec_failures or exact_failures or loop_failures or full_failures:
        raise SystemExit(
            f"the honest witness failed: {vec_failures} vectorized, {exact_failures} exact-tier, "
            f"{loop_failures} loop, {len(full_failures)} full-check failures"
        )
    stats = cs.statistics()
    vec_rate = evaluations / vec_seconds
    loop_rate = loop_evaluations / loop_measured
    return {
        "circuit": stats["name"],
        "k": stats["k"],
        "rows": stats["rows"],
        "gates": stats["gates"],
        "constraints": stats["constraints"],
        "lookups": stats["lookups"],
        "copies": stats["copies"],
        "gate_row_evaluations": evaluations,
        "vectorized": {
            "seconds": vec_seconds,
            "evals_per_second": vec_rate,
            "repeats": repeats,
            "store_build_seconds": load_seconds,
            "rows_by_arithmetic_tier": tiers,
        },
        "vectorized_exact_tier_only": {
            "seconds": exact_seconds,
            "evals_per_second": evaluations / exact_seconds,
            "speedup_vs_loop": evaluations / exact_seconds / loop_rate,
        },
        "loop": {
            "evaluations_measured": loop_evaluations,
            "seconds_measured": loop_measured,
            "seconds_extrapolated_to_all_rows": loop_extrapolated,
            "evals_per_second": loop_rate,
            "rows_per_gate": loop_rows,
        },
        "speedup_vs_loop": vec_rate / loop_rate,
        "full_check_seconds": full_seconds,
        "circuit_build_seconds": build_seconds,
        "targets": {"evals_per_second": 1_000_000, "speedup_vs_loop": 20},
        "meets_targets": bool(vec_rate >= 1_000_000 and vec_rate / loop_rate >= 20),
        "machine": {"python": sys.version.split()[0], "numpy": np.__version__, "platform": platform.platform()},
    }


def print_table(r: dict) -> None:
    v, lp = r["vectorized"], r["loop"]
    print(
        f"mock prover throughput on {r['circuit']}: k = {r['k']}, {r['rows']} rows, {r['gates']} gates "
        f"({r['constraints']} constraints), {r['lookups']} lookups, {r['copies']} copies"
    )
    print(f"gate-row evaluations (constraint x enabled row): {r['gate_row_evaluations']:,}")
    print()
    print(f"{'method':<34}{'evaluations':>14}{'seconds':>12}{'evals/s':>16}{'ratio':>9}")
    print(
        f"{'vectorized (numpy, best of ' + str(v['repeats']) + ')':<34}{r['gate_row_evaluations']:>14,}"
        f"{v['seconds']:>12.4f}{v['evals_per_second']:>16,.0f}{r['speedup_vs_loop']:>8.1f}x"
    )
    e = r["vectorized_exact_tier_only"]
    print(
        f"{'vectorized, exact tier only':<34}{r['gate_row_evaluations']:>14,}{e['seconds']:>12.4f}"
        f"{e['evals_per_second']:>16,.0f}{e['speedup_vs_loop']:>8.1f}x"
    )
    print(
        f"{'per-row Python loop (measured)':<34}{lp['evaluations_measured']:>14,}{lp['seconds_measured']:>12.4f}"
        f"{lp['evals_per_second']:>16,.0f}{1.0:>8.1f}x"
    )
    print(
        f"{'  extrapolated to all rows':<34}{r['gate_row_evaluations']:>14,}"
        f"{lp['seconds_extrapolated_to_all_rows']:>12.4f}"
    )
    tiers = ", ".join(f"{k} {n:,}" for k, n in v["rows_by_arithmetic_tier"].items())
    print(f"vectorized evaluations by exact-arithmetic tier: {tiers}")
    print()
    print(
        f"full check from scratch (values, gates, lookups, copies): {r['full_check_seconds']:.4f} s; "
        f"store build {v['store_build_seconds']:.4f} s"
    )
    t = r["targets"]
    print(
        f"targets: >= {t['evals_per_second']:,} evals/s and >= {t['speedup_vs_loop']}x the loop -> "
        f"{'met' if r['meets_targets'] else 'NOT met'}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.mock_throughput", description=__doc__.split("\n")[0])
    parser.add_argument("--blocks", type=int, default=16, help="blocks per chunk (default 16)")
    parser.add_argument("--block-size", type=int, default=64, help="block size B (default 64)")
    parser.add_argument("--lanes", type=int, default=8, help="MAC lanes L (default 8)")
    parser.add_argument("--level", choices=("F", "R"), default="F")
    parser.add_argument("--loop-rows", type=int, default=512, help="enabled rows per gate for the loop (default 512)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    add_json_option(parser)
    args = parser.parse_args(argv)
    result = run(
        blocks=args.blocks,
        block_size=args.block_size,
        lanes=args.lanes,
        level=args.level,
        loop_rows=args.loop_rows,
        repeats=args.repeats,
        seed=args.seed,
    )
    print_table(result)
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
