"""Encoding the committed columns for the Rust prover: the per-value Python loop against the vectorized
"i64+u256" encoder, side by side in one process.

    python -m benchmarks.encode_columns [--k 16] [--level F] [--repeats 7] [--json PATH]

One ViT-B fc1 chunk of ``benchmarks.vitb_proof`` (its synthetic weights, inverse-Fisher blocks, random 4 %
mask and first touched chunk, B = 16, the compact layout filling 2^k rows) is lowered once. Its committed
columns (θ, θ' and the G lanes: small offset-encoded values plus the salt cells, random field elements)
are what every proof ships to the prover as ``(encoding, bytes)``. Timed, each ``--repeats`` times, the
median kept:

* ``before``: the validation and encoder this replaced (kept below, verbatim): a generator checking every
  value, then ``int(v) % p`` and ``to_bytes`` per value, "u256" for any column holding a salt;
* ``after``: ``backend._column_bytes`` (vectorized validation, "i64+u256": only the salt cells converted
  one by one).

Per column (the θ column, one 2^k column) and per chunk (all committed columns): wall and CPU time (user +
system of this process, single-threaded: numpy and Python only) and the bytes shipped.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks import vitb_proof
from benchmarks.report import Column, add_json_option, machine, print_table, write_json

_I64_MIN, _I64_MAX = -(1 << 63), (1 << 63) - 1


# -------------------------------------------------------------------------------- the replaced functions


def before_encode_values(values: np.ndarray, modulus: int) -> tuple[str, bytes]:
    """``serialize.encode_values`` before "i64+u256"."""
    values = np.asarray(values)
    if values.dtype != object:
        return "i64", values.astype("<i8").tobytes()
    ints = [int(v) % modulus for v in values]
    small = [v if v <= _I64_MAX else v - modulus for v in ints]
    if all(_I64_MIN <= v <= _I64_MAX for v in small):
        return "i64", np.asarray(small, dtype="<i8").tobytes()
    return "u256", b"".join(v.to_bytes(32, "little") for v in ints)


def before_column_bytes(values: Any, modulus: int, what: str) -> tuple[str, bytes]:
    """``backend._column_bytes`` before "i64+u256" (its checks of object columns)."""
    values = np.asarray(values)
    if values.dtype == object:
        bad = next(
            (i for i, v in enumerate(values) if not (isinstance(v, (int, np.integer)) and 0 <= v < modulus)), None
        )
        if bad is not None:
            raise ValueError(f"{what}: value at row {bad} is not a canonical field element in [0, p): {values[bad]!r}")
    return before_encode_values(values, modulus)


# ------------------------------------------------------------------------------------------ measuring


def lower_first_chunk(k: int, level: str, seed: int):
    """(cs, assignment) of the first touched ViT-B fc1 chunk, B = 16, filling 2^k rows (as vitb_proof)."""
    from circuit_compiler.lowering import blocks_to_fill

    spec = vitb_proof.parse_spec(None).for_block_size(16)
    lanes = 16 if level == "F" else None
    nb = blocks_to_fill(k, block_size=16, level=level, spec=spec, lanes=lanes, layout=None)
    workload = vitb_proof.Workload(block_size=16, blocks_per_chunk=nb, mask_kind="random", seed=seed)
    config = vitb_proof.ProverConfig(
        level=level,
        block_size=16,
        lanes=lanes,
        blocks_per_chunk=nb,
        layout=None,
        spec=spec.to_dict(),
        srs_path="",
        srs_sha256="",
    )
    masks = vitb_proof.layer_masks(workload)
    layer, chunk = vitb_proof.touched_chunks(masks, workload)[0]
    cs, assignment, _, _ = vitb_proof.lower_job(config, workload, layer, chunk, masks[layer])
    return cs, assignment


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, float, Any]:
    """Median wall and CPU seconds of ``repeats`` calls, and the last result."""
    walls, cpus = [], []
    for _ in range(repeats):
        cpu, wall = time.process_time(), time.perf_counter()
        out = fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus), out


def measure(columns: dict[str, np.ndarray], modulus: int, repeats: int) -> dict[str, dict[str, Any]]:
    from circuit_compiler.backend import _column_bytes

    ways = {"before": before_column_bytes, "after": _column_bytes}
    out = {}
    for way, encode in ways.items():
        wall, cpu, encoded = timed(lambda encode=encode: [encode(v, modulus, n) for n, v in columns.items()], repeats)
        out[way] = {
            "wall_s": wall,
            "cpu_s": cpu,
            "bytes": sum(len(blob) for _, blob in encoded),
            "encodings": sorted({encoding for encoding, _ in encoded}),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--k", type=int, default=16, help="domain size 2^k the chunk fills")
    parser.add_argument("--level", choices=("R", "F"), default="F")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    add_json_option(parser)
    args = parser.parse_args(argv)

    from circuit_compiler.backend import BLS12_381_SCALAR_MODULUS as P
    from circuit_compiler.serialize import decode_values, encode_values

    cs, assignment = lower_first_chunk(args.k, args.level, args.seed)
    committed = dict(assignment.committed)
    for name, values in committed.items():  # the two encoders agree on every value
        encoding, blob = encode_values(values, P, reduce=False)
        assert [int(v) % P for v in decode_values(encoding, blob, P)] == [int(v) for v in values], name
    cases = {"one column (theta)": {"theta": committed["theta"]}, f"chunk ({len(committed)} columns)": committed}
    rows = []
    for case, columns in cases.items():
        result = measure(columns, P, args.repeats)
        before, after = result["before"], result["after"]
        for way in ("before", "after"):
            r = result[way]
            rows.append({"case": case, "way": way, **r, "encodings": "/".join(r["encodings"])})
        rows[-1]["speedup_cpu"] = before["cpu_s"] / after["cpu_s"]
        rows[-1]["speedup_wall"] = before["wall_s"] / after["wall_s"]
    print_table(
        rows,
        [
            Column("case", "median of repeats"),
            Column("way", "encoder"),
            Column("wall_s", "wall ms", lambda s: f"{1e3 * s:.1f}"),
            Column("cpu_s", "CPU ms", lambda s: f"{1e3 * s:.1f}"),
            Column("speedup_wall", "× wall", ".1f"),
            Column("speedup_cpu", "× CPU", ".1f"),
            Column("bytes", "bytes", ",d"),
            Column("encodings", "encoding"),
        ],
        title=f"ViT-B fc1 chunk, level {args.level}, B = 16, k = {cs.k} ({cs.rows} rows), {args.repeats} repeats",
    )
    write_json(
        args.json,
        {
            "k": cs.k,
            "rows": cs.rows,
            "level": args.level,
            "repeats": args.repeats,
            "committed_columns": len(committed),
            "rows_table": rows,
            "machine": machine(),
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
