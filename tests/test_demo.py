"""The main job end to end on tiny training settings: every role through its artifacts, a verified level-F
proof, the accuracy table, the JSON figures and the plot."""

from __future__ import annotations

import dataclasses
import json

import pytest

pytest.importorskip("circuit_compiler.backend")

from jaxapex import tasks
from jaxapex.cli import main
from jaxapex.demo import DemoOptions, format_result, run_demo


def _tiny_config():
    cfg = tasks.vision_config(quick=True, seed=0)
    return dataclasses.replace(
        cfg,
        global_train=dataclasses.replace(cfg.global_train, steps=60, warmup_steps=5),
        personalization=dataclasses.replace(
            cfg.personalization, train=dataclasses.replace(cfg.personalization.train, steps=10, warmup_steps=2)
        ),
    )


def test_demo_runs_and_verifies(tmp_path):
    result = run_demo(DemoOptions(out_dir=tmp_path, quick=True, level="F", progress=False, task_config=_tiny_config()))
    assert result["verified"] is True, result["failure"]
    assert result["level"] == "F" and result["chunks"] >= 1 and result["proof_bytes"] > 0
    for row in ("personalized", "masked", "obs"):
        assert set(result["table"][row]) >= {"forget_acc", "personal_acc", "test_acc"}
    assert (tmp_path / "demo.png").stat().st_size > 0
    assert json.loads((tmp_path / "demo.json").read_text())["verified"] is True
    # The served model is the proven one: masked weights exactly zero in the final client state.
    from jaxapex.protocol import client
    from jaxapex.protocol.requests import UnlearningRequest

    state = client.ClientState.load(tmp_path / "client" / "state-1")
    request = UnlearningRequest.load(tmp_path / "provider" / "request")
    for name, mask in request.masks.items():
        assert (client.layer_matrix(state.params, name)[mask] == 0).all()
    assert "VERIFIED" in format_result(result)


def test_demo_cli_help_lists_roles(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("demo", "commit", "register", "mask", "unlearn", "prove", "verify", "srs", "circuit"):
        assert command in out
