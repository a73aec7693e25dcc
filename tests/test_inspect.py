"""Inspection for cryptographers: the ``jaxapex circuit inspect|audit`` commands, the tables, the layout
PNG and the statistics JSON, on the demo and on a saved circuit."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import pytest

from circuit_compiler.demo import obs_circuit, rescale_circuit
from circuit_compiler.inspect import format_constraints, markdown_report, rows_table, statistics
from circuit_compiler.layout_plot import plot_layout
from circuit_compiler.mock_prover import signed
from circuit_compiler.serialize import save_circuit
from jaxapex.cli import main as jaxapex_main

REQUIRED_KEYS = ("rows", "k", "columns", "gates", "lookups", "copies", "max_degree")


@pytest.fixture(scope="module")
def obs_f():
    return obs_circuit(level="F")


def test_inspect_demo_writes_statistics_png_csv_and_markdown(tmp_path, obs_f, capsys):
    cs, assignment, p = obs_f
    paths = {name: tmp_path / f"out.{name}" for name in ("json", "png", "csv", "md")}
    code = jaxapex_main(
        [
            "circuit",
            "inspect",
            "--demo",
            "--rows",
            "5",
            "--json",
            str(paths["json"]),
            "--png",
            str(paths["png"]),
            "--csv",
            str(paths["csv"]),
            "--markdown",
            str(paths["md"]),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "gate update" in printed and "lookup rem_limb_0" in printed and "z = acc_0: 16" in printed

    stats = json.loads(paths["json"].read_text())
    expected = cs.statistics()
    assert {k: stats[k] for k in REQUIRED_KEYS} == {k: expected[k] for k in REQUIRED_KEYS}
    assert stats["columns"] == {"advice": 17, "fixed": 0, "selector": 4, "instance": 1, "committed": 6, "table": 1}
    assert stats["selector_rows"]["q_fin"] == 64 and stats["field"] == "bls12_381_fr"

    rows = list(csv.reader(io.StringIO(paths["csv"].read_text())))
    header = rows[0]
    assert header[0] == "row" and len(rows) == 6
    for line in rows[1:]:
        r = int(line[0])
        assert int(line[header.index("delta")]) == signed(int(assignment.advice["delta"][r]), p)
        assert int(line[header.index("mask")]) == int(assignment.instance["mask"][r])
        assert int(line[header.index("theta")]) == signed(int(assignment.committed["theta"][r]), p)

    assert "update: q_fin * ((1 - mask) * (theta_new - theta - delta)) = 0" in paths["md"].read_text()

    import matplotlib.image

    image = matplotlib.image.imread(paths["png"])
    assert image.ndim == 3 and image.shape[0] > 400 and image.shape[1] > 600
    assert image[..., :3].std() > 0.1  # a picture, not a blank canvas


def test_inspect_as_a_module_on_a_saved_circuit(tmp_path):
    cs, assignment, p = rescale_circuit(rows=20)
    saved = save_circuit(tmp_path / "rescale", cs, p, assignment)
    out = tmp_path / "s.json"
    result = subprocess.run(
        [sys.executable, "-m", "circuit_compiler.inspect", str(saved), "--json", str(out), "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    stats = json.loads(out.read_text())
    assert {k: stats[k] for k in REQUIRED_KEYS} == {k: cs.statistics()[k] for k in REQUIRED_KEYS}


def test_rows_table_markdown_is_exact():
    cs, assignment, p = rescale_circuit(rows=4)
    table = rows_table(cs, assignment, p, start=1, count=2, columns=["n", "d", "r", "q_div"])
    n, d, r = (int(assignment.instance["n"][1]), int(assignment.advice["d"][1]), int(assignment.advice["r"][1]))
    assert n == d * 256 + r
    lines = table.splitlines()
    assert lines[0] == "| row | n | d | r | q_div |"
    assert lines[2] == "|  | *instance* | *advice* | *advice* | *selector* |"
    assert lines[3] == f"| 1 | {n} | {d} | {r} | 1 |"
    assert lines[4].startswith("| 2 | ") and len(lines) == 5
    with pytest.raises(KeyError, match="no column"):
        rows_table(cs, assignment, p, columns=["nope"])


def test_large_field_elements_show_in_hex_and_witness_columns_blank_without_witness(obs_f):
    cs, assignment, p = obs_f
    salt_row = cs.metadata["layout"]["salt_rows"]["theta"][0]
    table = rows_table(cs, assignment, p, start=salt_row, count=1, columns=["theta"], fmt="csv")
    salt = int(assignment.committed["theta"][salt_row])
    expected = str(signed(salt, p)) if abs(signed(salt, p)) < 1 << 64 else f"0x{salt:x}"
    assert table.splitlines()[1] == f"{salt_row},{expected}"
    structure_only = rows_table(cs, None, p, count=1, columns=["theta", "q_fin"], fmt="csv")
    assert structure_only.splitlines()[1] == "0,,1"


def test_constraints_are_printed_with_selectors_and_degrees(obs_f):
    cs, _, _ = obs_f
    text = format_constraints(cs)
    assert "gate mac_step  [selector q_step, degree 3]" in text
    assert "mac_step_0: q_step * (acc_0 - acc_0[-1] - (g_0) * (y_mac)) = 0" in text
    assert "lookup y_limb_3: (q_fin * (y_limb_3)) in (range_12)  [argument degree 5]" in text
    assert "y_mac = y: 64" in text


def test_layout_of_a_structure_without_witness(tmp_path, obs_f):
    cs, _, p = obs_f
    path = plot_layout(cs, tmp_path / "structure.png", assignment=None, modulus=p)
    assert path.stat().st_size > 10_000
    report = markdown_report(cs, None, p, rows=2)
    assert report.startswith(f"# Circuit `{cs.name}`") and "## Rows 0..1" in report
    assert statistics(cs, p)["gate_degrees"]["rescale"] == 3


def test_audit_command_on_the_demo(tmp_path, capsys):
    out = tmp_path / "a.json"
    code = jaxapex_main(["circuit", "audit", "--demo", "--json", str(out), "--compensated", "32"])
    assert code == 0
    report = json.loads(out.read_text())
    assert report["unconstrained_cells"] == 0
    assert report["mutations_tried"] >= 200 and report["mutations_caught"] == report["mutations_tried"]
    assert report["compensated_caught"] == report["compensated_tried"] == 32
    assert "verdict: OK" in capsys.readouterr().out


def test_audit_command_fails_on_a_broken_chip(tmp_path):
    out = tmp_path / "a.json"
    code = jaxapex_main(
        [
            "circuit",
            "audit",
            "--demo",
            "rescale-no-range-check",
            "--json",
            str(out),
            "--quiet",
            "--mutations",
            "16",
            "--compensated",
            "32",
        ]
    )
    assert code == 1
    report = json.loads(out.read_text())
    assert not report["ok"] and "rescale/rescale" in report["not_unique_at"]
    assert report["uncaught_compensated"]


def test_target_must_be_given_exactly_once_and_audits_need_a_witness(tmp_path, capsys):
    """Each mistake exits with status 2 and one line saying what to give (no traceback)."""

    def error_line(argv: list[str]) -> str:
        assert jaxapex_main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "Traceback" not in err, err
        return err

    assert "--demo" in error_line(["circuit", "inspect"])
    cs, _, p = rescale_circuit(rows=8)
    saved = save_circuit(tmp_path / "structure_only", cs, p)
    assert "not both" in error_line(["circuit", "inspect", str(saved), "--demo"])
    assert "no witness values" in error_line(["circuit", "audit", str(saved)])
