"""The main job end to end on tiny training settings: every role through its artifacts, a verified level-F
proof, the accuracy table, the JSON figures and the plot."""

from __future__ import annotations

import dataclasses
import json

import pytest

pytest.importorskip("circuit_compiler.backend")

from jaxapex import tasks
from jaxapex.cli import main
from jaxapex.data.characters import missing_sources
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


def test_demo_task_option_is_parsed_with_its_default():
    from jaxapex.cli import build_parser
    from jaxapex.demo_tasks import DEFAULT_TASK, DEMO_TASKS

    parser = build_parser()
    assert parser.parse_args(["demo"]).task == DEFAULT_TASK
    assert parser.parse_args(["demo", "--task", "characters"]).task == "characters"
    assert set(DEMO_TASKS) == {"characters", "digits"}
    with pytest.raises(SystemExit) as err:
        parser.parse_args(["demo", "--task", "imagenet"])
    assert err.value.code == 2
    with pytest.raises(ValueError, match="DemoOptions.task: unknown task 'imagenet'"):
        run_demo(DemoOptions(out_dir=".", task="imagenet"))


@pytest.mark.skipif(missing_sources(), reason="real data not installed (jaxapex data status)")
def test_demo_cli_routes_task_characters_to_the_characters_recipe(tmp_path, monkeypatch, capsys):
    """``jaxapex demo --task characters`` runs the characters recipe (here its smoke configuration, swapped in
    behind the command line) and proves and verifies it."""
    from jaxapex.demo_tasks import DEMO_TASKS

    calls = []

    def smoke_characters(**kwargs):
        calls.append(kwargs)
        kwargs["config"] = tasks.characters_smoke_config(seed=kwargs["seed"])
        return tasks.run_characters_task(**kwargs, cache_dir=tmp_path / "cache")

    monkeypatch.setitem(DEMO_TASKS, "characters", dataclasses.replace(DEMO_TASKS["characters"], run=smoke_characters))
    out = tmp_path / "demo"
    code = main(
        ["demo", "--task", "characters", "--quick", "--out", str(out), "--no-progress", "--json", str(out / "d.json")]
    )
    assert code == 0
    assert len(calls) == 1 and calls[0]["quick"] is True
    result = json.loads((out / "d.json").read_text())
    assert result["task"] == "characters" and result["verified"] is True
    assert result["weights"] == 2 * 64 * 32  # the smoke model's two fc1 layers
    assert "VERIFIED" in capsys.readouterr().out
