"""End-to-end recipes at tiny scale: the shape of what the tables report, the invariants of the pipeline,
and the qualitative claims that hold at this scale (with margins well outside the run-to-run noise).

What is NOT asserted here, because at toy scale it does not hold reliably (see the benchmark report): that
OBS recovers most of the personal accuracy *while* the forget class stays forgotten. On these small models
the fc1 inputs are low-rank, so whatever lets OBS rebuild the client's function also rebuilds the forget
class; the tests below pin down that trade-off instead of hiding it.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from jaxapex.layers import get_matrix, to_blocks
from jaxapex.models import OPTConfig, ViTConfig
from jaxapex.tasks import (
    UnlearningConfig,
    apply_mask,
    code_config,
    run_code_task,
    run_vision_task,
    unlearn_with,
    vision_config,
)

ROW_KEYS = {"forget_acc", "personal_acc", "test_acc", "mia_auc", "forget_mia_auc"}


@pytest.fixture(scope="module")
def vision_run():
    base = vision_config(quick=True, seed=0)
    cfg = dataclasses.replace(
        base,
        model=ViTConfig(image_size=8, patch_size=2, channels=1, dim=32, depth=2, heads=2, mlp_dim=128, num_classes=10),
        global_train=dataclasses.replace(base.global_train, steps=400),
        personalization=dataclasses.replace(
            base.personalization, train=dataclasses.replace(base.personalization.train, steps=60)
        ),
        unlearning=dataclasses.replace(base.unlearning, mask_fraction=0.25, block_size=64),
    )
    return run_vision_task(config=cfg, seed=0)


@pytest.fixture(scope="module")
def code_run():
    base = code_config(quick=True, seed=0)
    cfg = dataclasses.replace(
        base,
        model=OPTConfig(vocab_size=256, max_positions=32, dim=32, layers=1, heads=2, ffn_dim=64),
        files_per_language=(("python", 16), ("c", 24), ("perl", 16), ("shell", 8)),
        window=33,
        max_windows_per_file=4,
        global_train=dataclasses.replace(base.global_train, steps=200),
        personalization=dataclasses.replace(
            base.personalization, train=dataclasses.replace(base.personalization.train, steps=40)
        ),
        # B below the client's window count keeps OBS on the dense-Fisher path
        unlearning=dataclasses.replace(base.unlearning, mask_fraction=0.2, block_size=32, score_examples=64),
    )
    return run_code_task(config=cfg, seed=0)


def _check_summary(summary: dict, run) -> None:
    assert set(summary["rows"]) == {"personalized", "masked", "obs"}
    for row in summary["rows"].values():
        assert ROW_KEYS <= set(row)
        for key in ("forget_acc", "personal_acc", "test_acc", "mia_auc", "forget_mia_auc"):
            assert 0.0 <= row[key] <= 1.0, (key, row[key])
    assert summary["mask_fraction"] == run.unlearning.mask_fraction
    assert summary["block_size"] == run.unlearning.block_size
    json.dumps(summary)  # JSON-ready as it is
    rows = summary["rows"]
    expected = (rows["obs"]["personal_acc"] - rows["masked"]["personal_acc"]) / (
        rows["personalized"]["personal_acc"] - rows["masked"]["personal_acc"]
    )
    assert summary["recovery"] == pytest.approx(expected)


def _check_pipeline_invariants(run) -> None:
    """Masked weights are exactly zero after OBS; only blocks holding a masked entry move; the masked row
    equals the personalized model with the mask applied; every other parameter is untouched."""
    B = run.unlearning.block_size
    assert run.masks and set(run.masks) == set(run.target_paths)
    for path, mask in run.masks.items():
        W_personal = np.asarray(get_matrix(run.params_personal, path))
        W_masked = np.asarray(get_matrix(run.params_masked, path))
        W_obs = np.asarray(get_matrix(run.params_obs, path))
        assert mask.shape == W_personal.shape and mask.any()
        np.testing.assert_array_equal(W_masked, np.where(mask, 0.0, W_personal))
        assert np.all(W_obs[mask] == 0.0)
        touched = to_blocks(mask, B).any(axis=1)
        moved = to_blocks(W_obs != W_personal, B).any(axis=1)
        assert not np.any(moved & ~touched)
    flat = lambda p: {k: np.asarray(v) for k, v in _flatten(p).items()}
    personal, obs = flat(run.params_personal), flat(run.params_obs)
    targets = {"/".join(p) for p in run.masks}
    for name in personal:
        if name not in targets:
            np.testing.assert_array_equal(obs[name], personal[name], err_msg=name)


def _flatten(tree, prefix=()):
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, prefix + (key,)))
        else:
            out["/".join(prefix + (key,))] = value
    return out


def test_vision_summary_and_invariants(vision_run):
    _check_summary(vision_run.summary(), vision_run)
    _check_pipeline_invariants(vision_run)
    # the masked row really is the personalized model with the public mask applied
    again = apply_mask(vision_run.params_personal, vision_run.masks)
    assert vision_run.evaluate(again)["forget_acc"] == vision_run.rows["masked"]["forget_acc"]


def test_vision_personalization_helps_the_client(vision_run):
    """Sketch-domain personalization raises the client's accuracy well above the global model's."""
    settings = vision_run.settings
    assert vision_run.rows["personalized"]["personal_acc"] >= settings["global_acc"]["personal"] + 0.03


def test_vision_mask_forgets_the_class_more_than_the_rest(vision_run):
    """The importance-difference mask (I_forget − 5·I_retain, 2 % of fc1, the real-data recipe's scorer)
    costs the forget class far more than the other classes: measured 51 points against 2 on this fixture.
    (The fixture's activation scorer does not separate them reliably here: 4.2 vs 1.2 points at 25 % of
    the neurons, 0.8 vs 1.6 at 35 %.)"""
    alternative = dataclasses.replace(
        vision_run.unlearning, scorer="second-order", score_combine="difference", c_ret=5.0, mask_fraction=0.02
    )
    rows = unlearn_with(vision_run, alternative)["rows"]
    forget_drop = rows["personalized"]["forget_acc"] - rows["masked"]["forget_acc"]
    test_drop = rows["personalized"]["test_acc"] - rows["masked"]["test_acc"]
    assert forget_drop >= 0.3
    assert forget_drop >= test_drop + 0.2


def test_vision_outgoing_mask_lets_obs_rebuild_the_clients_function(vision_run):
    """The trade-off, measured: masking the neurons' outgoing weights lets OBS (small blocks, full Fisher)
    restore the client's accuracy on its training data — and with it much of the forget class."""
    alternative = dataclasses.replace(vision_run.unlearning, neuron_side="out", block_size=32, damp=1e-6)
    result = unlearn_with(vision_run, alternative)
    rows = result["rows"]
    assert rows["obs"]["personal_acc"] >= rows["masked"]["personal_acc"] - 0.01
    assert rows["obs"]["test_acc"] >= rows["masked"]["test_acc"] - 0.01


def test_code_summary_and_invariants(code_run):
    _check_summary(code_run.summary(), code_run)
    _check_pipeline_invariants(code_run)
    for row in code_run.rows.values():
        assert row["forget_ppl"] >= 1.0 and row["personal_ppl"] >= 1.0


def test_code_mask_costs_the_forget_language(code_run):
    rows = code_run.rows
    assert rows["masked"]["forget_acc"] < rows["personalized"]["forget_acc"]
    assert rows["masked"]["forget_ppl"] > rows["personalized"]["forget_ppl"]


def test_code_obs_moves_toward_the_personalized_model(code_run):
    """OBS lowers the client's loss relative to plain masking (perplexity on its held-out files)."""
    rows = code_run.rows
    assert rows["obs"]["personal_ppl"] <= rows["masked"]["personal_ppl"]


def test_unlearning_config_rejects_inconsistent_settings():
    with pytest.raises(ValueError, match="scorer must be one of"):
        UnlearningConfig(scorer="magnitude")
    with pytest.raises(ValueError, match="mask_fraction must be in"):
        UnlearningConfig(mask_fraction=1.5)
    with pytest.raises(ValueError, match="neuron_side"):
        UnlearningConfig(neuron_side="both")
    with pytest.raises(ValueError, match="activation scorer only"):
        UnlearningConfig(scorer="second-order", weights_per_neuron=4)
    with pytest.raises(ValueError, match="forget language and the personal language must differ"):
        dataclasses.replace(code_config(), forget_language="c")


def test_benchmark_json_has_the_table_shape(vision_run, tmp_path, monkeypatch, capsys):
    import benchmarks.table1 as table1
    import jaxapex.tasks

    monkeypatch.setattr(jaxapex.tasks, "run_vision_task", lambda **kwargs: vision_run)
    monkeypatch.setattr(
        table1,
        "compare_outgoing",
        lambda run: {  # the comparison itself is tested above
            "rows": run.rows,
            "recovery": run.recovery,
            "masked_weight_fraction": 0.0,
            "unlearning": {},
        },
    )
    path = tmp_path / "t1.json"
    assert table1.main(["--task", "vision", "--seeds", "0", "--quick", "--json", str(path)]) == 0
    payload = json.loads(path.read_text())
    assert set(payload["rows"]) == {"personalized", "masked", "obs", "obs_forget_aware"}
    assert {
        "task",
        "seeds",
        "n_eval",
        "recovery",
        "recovery_by_seed",
        "per_seed",
        "mask_fraction",
        "block_size",
        "comparison",
        "forget_drop_points",
        "personal_cost_points",
        "obs_forget_rebound_points",
        "forget_aware",
    } <= set(payload)
    assert payload["seeds"] == [0] and payload["recovery_by_seed"] == [pytest.approx(vision_run.recovery)]
    assert payload["n_eval"] == vision_run.settings["n_eval"] and payload["forget_aware"]["k"] == 8
    assert payload["rows"]["obs"]["forget_acc"] == pytest.approx(vision_run.rows["obs"]["forget_acc"])
    printed = capsys.readouterr().out
    assert f"mask_fraction={vision_run.unlearning.mask_fraction}" in printed
    assert f"block_size B={vision_run.unlearning.block_size}" in printed


def test_seed_spread_reports_each_seed_and_the_recoverys_spread(vision_run):
    import copy

    import benchmarks.table1 as table1

    first = vision_run.summary()

    class Rerun:  # a run of another seed whose OBS row recovered a different share
        def __init__(self, seed):
            self.seed = seed

        def summary(self):
            summary = copy.deepcopy(first)
            rows = summary["rows"]
            lost = rows["personalized"]["personal_acc"] - rows["masked"]["personal_acc"]
            rows["obs"]["personal_acc"] = rows["masked"]["personal_acc"] + 0.25 * self.seed * lost
            summary["recovery"] = 0.25 * self.seed
            return summary

    spread = table1.seed_spread(first, Rerun, (1, 2))
    assert list(spread["per_seed"]) == [str(first["settings"]["seed"]), "1", "2"]
    values = [first["recovery"], 0.25, 0.5]
    assert spread["recovery_mean"] == pytest.approx(np.mean(values))
    assert spread["recovery_std"] == pytest.approx(np.std(values, ddof=1))
    seed_2 = spread["per_seed"]["2"]
    assert seed_2["obs_personal_gain_points"] == pytest.approx(0.5 * seed_2["personal_cost_points"])
    with pytest.raises(ValueError, match="seed 0 given twice"):
        table1.seed_spread(first, Rerun, (0,))
    with pytest.raises(SystemExit):
        table1.build_parser("t").parse_args(["--extra-seeds", "1,x"])


def test_benchmark_prints_the_extra_seeds(vision_run, tmp_path, monkeypatch, capsys):
    import benchmarks.table1 as table1
    import jaxapex.tasks

    seeds_run = []
    monkeypatch.setattr(
        jaxapex.tasks, "run_vision_task", lambda **kwargs: seeds_run.append(kwargs["seed"]) or vision_run
    )
    path = tmp_path / "t1.json"
    argv = ["--task", "vision", "--quick", "--no-compare", "--forget-directions", "0", "--json", str(path)]
    assert table1.main([*argv, "--extra-seeds", "3,4"]) == 0
    assert seeds_run == [0, 3, 4]
    payload = json.loads(path.read_text())
    assert payload["seeds"] == [0, 3, 4] and [e["seed"] for e in payload["per_seed"]] == [0, 3, 4]
    assert payload["recovery_std"] == pytest.approx(0.0)  # the same run three times
    assert payload["worst_seed"]["recovery"] == pytest.approx(vision_run.recovery)
    assert "forget_aware" not in payload and "obs_forget_aware" not in payload["rows"]
    assert "recovery over 3 seeds" in capsys.readouterr().out
    seeds_run.clear()
    assert table1.main(argv) == 0
    assert seeds_run == [0, 1, 2]  # the default: three seeds
