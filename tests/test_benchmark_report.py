"""The benchmarks' one reporter: aligned tables, and JSON written whole (numpy and JAX values converted)."""

from __future__ import annotations

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks.report import Column, format_table, write_json

REPO = Path(__file__).resolve().parents[1]


def test_table_aligns_and_formats_columns():
    rows = [{"name": "serial", "n": 3, "s": 0.5}, {"name": "ray", "n": 12, "s": None}]
    text = format_table(rows, [Column("name", "executor"), Column("n", "n"), Column("s", "wall s", ".2f")])
    assert text.splitlines() == [
        "executor   n  wall s",
        "--------------------",
        "serial     3    0.50",
        "ray       12       -",
    ]


def test_json_converts_array_values_and_replaces_atomically(tmp_path):
    path = tmp_path / "out" / "r.json"
    write_json(path, {"a": np.float32(1.5), "b": np.arange(3), "c": jnp.ones(2), "d": Path("x")}, quiet=True)
    assert json.loads(path.read_text()) == {"a": 1.5, "b": [0, 1, 2], "c": [1.0, 1.0], "d": "x"}
    with pytest.raises(TypeError, match="cannot write object"):
        write_json(path, {"bad": object()}, quiet=True)
    assert json.loads(path.read_text())["a"] == 1.5  # the failed write left the old file whole


@pytest.mark.parametrize(
    "script", sorted(p.stem for p in (REPO / "benchmarks").glob("*.py") if p.stem not in ("__init__", "report"))
)
def test_every_benchmark_takes_json_through_the_reporter(script):
    source = (REPO / "benchmarks" / f"{script}.py").read_text()
    assert "write_json(" in source, script
    assert "add_json_option(" in source or "from benchmarks.table1 import build_parser" in source, script
    assert 'add_argument("--json"' not in source and "json.dump(" not in source, script
