"""``jaxapex circuit inspect|audit``: look at a compiled circuit and audit its soundness.

* ``inspect`` -- summary, readable gates and lookups, the first rows as a table, ``--png`` layout,
  ``--json`` statistics (see :mod:`circuit_compiler.inspect`).
* ``audit`` -- the mock prover on the honest witness, under-constrained cells, single-cell and compensated
  mutations, selector findings (see :mod:`circuit_compiler.audit`); exit code 1 when it finds problems.

Both take a saved circuit directory or ``--demo [NAME]``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    from circuit_compiler import inspect as circuit_inspect

    parser = subparsers.add_parser(
        "circuit", help="inspect or audit a compiled circuit", description=__doc__.split("\n")[0]
    )
    actions = parser.add_subparsers(dest="circuit_command", metavar="ACTION")
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])

    inspect_parser = actions.add_parser("inspect", help="summary, gates, rows table, layout PNG, JSON statistics")
    circuit_inspect.build_parser(inspect_parser)

    audit_parser = actions.add_parser("audit", help="under-constrained cells, mutation detection, selector findings")
    circuit_inspect.add_target_arguments(audit_parser)
    audit_parser.add_argument("--mutations", type=int, default=256, help="single-cell mutations to try (default 256)")
    audit_parser.add_argument(
        "--compensated", type=int, default=256, help="multi-cell compensated mutations to try (default 256)"
    )
    audit_parser.add_argument("--depth", type=int, default=4, help="repair moves per compensated mutation (default 4)")
    audit_parser.add_argument(
        "--prover-chosen",
        nargs="*",
        metavar="COLUMN",
        default=None,
        help="committed columns the prover picks freely (default: theta_new for OBS chunks at level F)",
    )
    audit_parser.add_argument(
        "--focus",
        nargs="+",
        metavar="GATE",
        help="start compensated mutations only at these gates (or gate/constraint)",
    )
    audit_parser.add_argument("--audit-seed", type=int, default=0, help="seed of the mutation sampling")
    audit_parser.add_argument("--json", type=Path, metavar="PATH", help="write the report as JSON")
    audit_parser.add_argument("--quiet", action="store_true", help="print nothing to stdout")
    audit_parser.set_defaults(func=run_audit)


def run_audit(args: argparse.Namespace) -> int:
    from circuit_compiler.audit import audit
    from circuit_compiler.inspect import resolve_target

    cs, assignment, modulus = resolve_target(args)
    if assignment is None:
        raise SystemExit(f"{args.circuit}: the saved circuit has no witness values; the audit needs an honest witness")
    start = time.perf_counter()
    report = audit(
        cs,
        assignment,
        modulus,
        mutations=args.mutations,
        compensated=args.compensated,
        depth=args.depth,
        prover_chosen=args.prover_chosen,
        focus=args.focus,
        seed=args.audit_seed,
    )
    seconds = time.perf_counter() - start
    if not args.quiet:
        print(report.summary())
        print(f"  ({seconds:.2f} s)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**report.to_json(), "seconds": round(seconds, 3)}, indent=1) + "\n")
        if not args.quiet:
            print(f"wrote {args.json}")
    return 0 if report.ok else 1
