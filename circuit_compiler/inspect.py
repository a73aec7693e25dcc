"""Inspection of a compiled circuit, for cryptographers: what exactly is proven, and on which cells.

``python -m circuit_compiler.inspect --demo`` (or ``jaxapex circuit inspect``) prints

* a summary -- rows, 2^k, usable rows, columns by kind, gates, lookups, copies, max degree, selector use;
* every gate as ``selector * (polynomial) = 0`` in readable form, every lookup as
  ``(selector * input, ...) in (table, ...)``, and the copies grouped by column pair;
* the first N rows of the table (signed values; large field elements in hex) as markdown or CSV;

and writes, on request, the same report as markdown (``--markdown``), the rows as CSV (``--csv``), a PNG of
the layout (``--png``, :mod:`.layout_plot`) and the statistics as JSON (``--json``: at least ``rows``,
``k``, ``columns`` by kind, ``gates``, ``lookups``, ``copies``, ``max_degree``).

The circuit comes from ``--demo [NAME]`` (:mod:`.demo`) or a directory written by
:func:`~circuit_compiler.serialize.save_circuit`.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .ir import Assignment, Column, ColumnKind, ConstraintSystem
from .layout_plot import ordered_columns
from .mock_prover import MockProver, signed

# ------------------------------------------------------------------------------------------- loading


def load_target(*, demo: str | None, circuit: str | Path | None, seed: int = 0):
    """``(cs, assignment or None, modulus)`` of a demo (by name) or of a saved circuit directory."""
    if (demo is None) == (circuit is None):
        raise ValueError("give exactly one of a demo name or a saved circuit directory")
    if demo is not None:
        from .demo import demo_circuit

        return tuple(demo_circuit(demo, seed=seed))
    from .serialize import load_circuit

    cs, modulus, assignment = load_circuit(circuit)
    return cs, assignment, modulus


# ------------------------------------------------------------------------------------------- summary


def statistics(cs: ConstraintSystem, modulus: int) -> dict[str, Any]:
    """:meth:`ConstraintSystem.statistics` plus the field, selector use and the degree per gate."""
    stats = dict(cs.statistics())
    try:
        from .field import field_by_modulus

        field_name = field_by_modulus(modulus).name
    except (ImportError, KeyError):
        field_name = "custom"
    empty = Assignment(advice={}, instance={}, committed={})
    prover = MockProver(cs, empty, modulus)
    stats.update(
        {
            "field": field_name,
            "modulus": str(modulus),
            "domain_rows": 1 << cs.k,
            "fill": round(cs.rows / (1 << cs.k), 4),
            "selector_rows": {s.name: int(len(prover.enabled_rows(s))) for s in cs.columns_of(ColumnKind.SELECTOR)},
            "gate_degrees": {g.name: g.degree() for g in cs.gates},
            "lookup_degrees": {lk.name: lk.argument_degree() for lk in cs.lookups},  # the argument's
            "copies_by_columns": copies_by_columns(cs),
            "max_rotation": max([abs(q.rotation) for e in cs.all_expressions() for q in e.queries()] + [0]),
        }
    )
    return stats


def copies_by_columns(cs: ConstraintSystem) -> dict[str, int]:
    """``"a = b" -> count`` over the copy constraints."""
    copies = np.asarray(cs.copies, dtype=np.int64).reshape(-1, 4)
    pairs = Counter(zip(copies[:, 0].tolist(), copies[:, 2].tolist()))
    return {f"{cs.columns[a].name} = {cs.columns[b].name}": n for (a, b), n in sorted(pairs.items())}


def format_summary(stats: dict[str, Any]) -> str:
    cols = ", ".join(f"{n} {kind}" for kind, n in stats["columns"].items() if n)
    lines = [
        f"circuit {stats['name']!r} over {stats['field']}",
        f"  rows {stats['rows']} of 2^k = {stats['domain_rows']} (k = {stats['k']}, usable {stats['usable_rows']}, "
        f"{100 * stats['fill']:.1f}% full)",
        f"  columns: {cols}",
        f"  {stats['gates']} gates ({stats['constraints']} constraints), {stats['lookups']} lookups, "
        f"{stats['copies']} copies, max degree {stats['max_degree']}, max |rotation| {stats['max_rotation']}",
        "  selectors: " + ", ".join(f"{k} on {v} rows" for k, v in stats["selector_rows"].items()),
    ]
    return "\n".join(lines)


def format_constraints(cs: ConstraintSystem) -> str:
    """Every gate, lookup and copy group in readable form."""
    lines = ["gates (each constraint must vanish on every row: selector * body = 0)"]
    for g in cs.gates:
        lines.append(f"  gate {g.name}  [selector {g.selector.name}, degree {g.degree()}]")
        for poly_name, poly in g.polys:
            lines.append(f"    {poly_name}: {g.selector.name} * ({poly.pretty()}) = 0")
    lines.append("lookups (the tuple must be a row of the table on every usable row)")
    for lk in cs.lookups:
        if lk.always_on:
            inputs = ", ".join(e.pretty() for e in lk.inputs)
        else:
            inputs = ", ".join(f"{lk.selector.name} * ({e.pretty()})" for e in lk.inputs)
        table = ", ".join(c.name for c in lk.table)
        on = ", always on (no selector)" if lk.always_on else ""
        lines.append(f"  lookup {lk.name}: ({inputs}) in ({table})  [argument degree {lk.argument_degree()}{on}]")
    lines.append("copies (cell equalities)")
    for pair, n in copies_by_columns(cs).items():
        lines.append(f"  {pair}: {n}")
    if not len(cs.copies):
        lines.append("  (none)")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- rows table


def _cell_text(value: int, modulus: int) -> str:
    s = signed(value, modulus)
    return str(s) if abs(s) < 1 << 64 else f"0x{value:x}"


def rows_table(
    cs: ConstraintSystem,
    assignment: Assignment | None,
    modulus: int,
    *,
    start: int = 0,
    count: int = 16,
    columns: Sequence[str] | None = None,
    fmt: str = "markdown",
) -> str:
    """Rows ``[start, start + count)`` as a markdown or CSV table: one column per circuit column (grouped
    by kind), values signed (large field elements in hex); witness columns are blank without an assignment."""
    if fmt not in ("markdown", "csv"):
        raise ValueError(f"rows_table: fmt must be 'markdown' or 'csv', got {fmt!r}")
    chosen: list[Column] = ordered_columns(cs)
    if columns is not None:
        unknown = set(columns) - {c.name for c in chosen}
        if unknown:
            raise KeyError(f"circuit {cs.name!r} has no column(s) {sorted(unknown)}")
        chosen = [c for c in chosen if c.name in set(columns)]
    stop = min(start + count, 1 << cs.k)
    prover = MockProver(cs, assignment or Assignment(advice={}, instance={}, committed={}), modulus)
    header = ["row"] + [c.name for c in chosen]
    kinds = [""] + [c.kind.value for c in chosen]
    body = []
    for row in range(start, stop):
        cells = [str(row)]
        for c in chosen:
            if assignment is None and c.kind in (ColumnKind.ADVICE, ColumnKind.INSTANCE, ColumnKind.COMMITTED):
                cells.append("")
            else:
                cells.append(_cell_text(prover.value(c, row), modulus))
        body.append(cells)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(body)
        return out.getvalue()
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        "| " + " | ".join(f"*{k}*" if k else "" for k in kinds) + " |",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------- report


def markdown_report(
    cs: ConstraintSystem, assignment: Assignment | None, modulus: int, *, rows: int = 16, start: int = 0
) -> str:
    stats = statistics(cs, modulus)
    return (
        "\n\n".join(
            [
                f"# Circuit `{cs.name}`",
                "```\n" + format_summary(stats) + "\n```",
                "## Constraints\n\n```\n" + format_constraints(cs) + "\n```",
                f"## Rows {start}..{start + rows - 1}\n\n"
                + rows_table(cs, assignment, modulus, start=start, count=rows),
            ]
        )
        + "\n"
    )


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Arguments of ``inspect`` (shared by ``python -m circuit_compiler.inspect`` and ``jaxapex circuit``)."""
    if parser is None:
        parser = argparse.ArgumentParser(prog="python -m circuit_compiler.inspect", description=__doc__.split("\n")[0])
    add_target_arguments(parser)
    parser.add_argument("--rows", type=int, default=16, help="rows of the table to show (default 16)")
    parser.add_argument("--start", type=int, default=0, help="first row of the table")
    parser.add_argument("--columns", nargs="+", metavar="NAME", help="only these columns in the table")
    parser.add_argument("--markdown", type=Path, metavar="PATH", help="write the full report as markdown")
    parser.add_argument("--csv", type=Path, metavar="PATH", help="write the table rows as CSV")
    parser.add_argument("--png", type=Path, metavar="PATH", help="write a PNG of the layout")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the statistics as JSON")
    parser.add_argument("--quiet", action="store_true", help="print nothing to stdout")
    parser.set_defaults(func=run_inspect)
    return parser


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    from .demo import DEMOS

    parser.add_argument("circuit", nargs="?", type=Path, help="a saved circuit directory (structure.json + values.npz)")
    parser.add_argument(
        "--demo",
        nargs="?",
        const="obs",
        choices=sorted(DEMOS),
        metavar="NAME",
        help=f"use a demo circuit instead (default obs; one of {', '.join(sorted(DEMOS))})",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the demo's random witness")


def resolve_target(args: argparse.Namespace):
    if args.demo is None and args.circuit is None:
        raise SystemExit("give a saved circuit directory or --demo")
    if args.demo is not None and args.circuit is not None:
        raise SystemExit("give either a saved circuit directory or --demo, not both")
    return load_target(demo=args.demo, circuit=args.circuit, seed=args.seed)


def run_inspect(args: argparse.Namespace) -> int:
    cs, assignment, modulus = resolve_target(args)
    stats = statistics(cs, modulus)
    if not args.quiet:
        print(format_summary(stats))
        print()
        print(format_constraints(cs))
        print()
        print(rows_table(cs, assignment, modulus, start=args.start, count=args.rows, columns=args.columns))
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(markdown_report(cs, assignment, modulus, rows=args.rows, start=args.start))
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        args.csv.write_text(
            rows_table(cs, assignment, modulus, start=args.start, count=args.rows, columns=args.columns, fmt="csv")
        )
    if args.png:
        from .layout_plot import plot_layout

        plot_layout(cs, args.png, assignment=assignment, modulus=modulus)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(stats, indent=1) + "\n")
    for flag in ("markdown", "csv", "png", "json"):
        if getattr(args, flag) and not args.quiet:
            print(f"wrote {getattr(args, flag)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
