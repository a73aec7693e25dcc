"""Running from a source tree without the compiled extension says exactly what to do."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from circuit_compiler._extension import missing_extension_message

REPO = Path(__file__).resolve().parents[1]


def test_shadowed_install_is_explained(tmp_path):
    site = tmp_path / "site-packages" / "circuit_compiler"
    site.mkdir(parents=True)
    (site / "_halo2.abi3.so").write_bytes(b"")
    source = tmp_path / "repo" / "circuit_compiler"
    source.mkdir(parents=True)
    message = missing_extension_message(source, site / "_halo2.abi3.so")
    assert "shadows the installed jaxapex" in message and str(tmp_path / "site-packages") in message
    assert f"`pip install -e .` in {tmp_path / 'repo'}" in message


def test_unbuilt_tree_says_how_to_build(tmp_path):
    message = missing_extension_message(tmp_path / "circuit_compiler", None)
    assert "not built" in message and "`pip install -e .`" in message


def test_importing_a_source_copy_without_extension_fails_with_the_explanation(tmp_path):
    shutil.copytree(
        REPO / "circuit_compiler",
        tmp_path / "circuit_compiler",
        ignore=shutil.ignore_patterns("_halo2*", "__pycache__"),
    )
    run = subprocess.run(
        [sys.executable, "-c", "import circuit_compiler.backend"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert run.returncode != 0
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: the Halo2 extension") and "pip install -e ." in last, last
    assert str(tmp_path / "circuit_compiler") in last
