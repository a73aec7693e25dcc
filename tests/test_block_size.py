"""The block-size study (benchmarks/block_size.py) on tiny recipes: JSON and plot, proof costs checked against
the compiled circuits, the gradient replay against the recipe's own client OBS, skipping and recommending."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks import block_size as bs
from circuit_compiler.lowering import build_chunk_circuit, chunk_shape_key
from jaxapex import tasks
from jaxapex.data.characters import missing_sources
from jaxapex.layers import get_matrix
from jaxapex.models import OPTConfig, ViTConfig

SIZES = (16, 32)
NOT_A_DIVISOR = 48  # the tiny models' target matrices hold 2048 weights
FIXTURE_TASKS = ("vision", "code")  # the fast fixtures (8×8 digits, byte-level code); characters has its own test


def _short(train, steps):
    return dataclasses.replace(train, steps=steps, warmup_steps=0)


def tiny_vision_config() -> tasks.VisionTaskConfig:
    """fc1 W (64, 32); 24 Fisher examples, so B=16 takes the dense route and B=32 the low-rank one."""
    cfg = tasks.vision_config(quick=True, seed=0)
    return dataclasses.replace(
        cfg,
        model=ViTConfig(image_size=8, patch_size=2, channels=1, dim=32, depth=1, heads=2, mlp_dim=64, num_classes=10),
        global_train=_short(cfg.global_train, 40),
        personalization=dataclasses.replace(
            cfg.personalization, train=_short(cfg.personalization.train, 10), freeze_blocks=0
        ),
        unlearning=dataclasses.replace(
            cfg.unlearning, weights_per_neuron=16, mask_fraction=0.25, fisher_examples=24, block_size=16
        ),
    )


def tiny_code_config() -> tasks.CodeTaskConfig:
    """fc1 W (64, 32), fc2 W (32, 64); the recipe's own B is 32."""
    cfg = tasks.code_config(quick=True, seed=0)
    return dataclasses.replace(
        cfg,
        model=OPTConfig(vocab_size=256, max_positions=128, dim=32, layers=1, heads=2, ffn_dim=64),
        files_per_language=(("python", 4), ("c", 16), ("perl", 4), ("shell", 3)),
        max_windows_per_file=3,
        global_train=_short(cfg.global_train, 20),
        personalization=dataclasses.replace(cfg.personalization, train=_short(cfg.personalization.train, 5)),
        unlearning=dataclasses.replace(cfg.unlearning, fisher_examples=24, block_size=32),
    )


@pytest.fixture(scope="module")
def runs():
    return {
        "vision": tasks.run_vision_task(config=tiny_vision_config()),
        "code": tasks.run_code_task(config=tiny_code_config()),
    }


@pytest.fixture(scope="module")
def study(runs, tmp_path_factory):
    """The command line end to end on the tiny recipes (training replaced by the fixture's runs)."""
    out = tmp_path_factory.mktemp("block_size")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bs, "train_tasks", lambda names, **_: {name: runs[name] for name in names})
        code = bs.main(
            [
                "--tasks",
                ",".join(FIXTURE_TASKS),
                "--sizes",
                ",".join(map(str, (*SIZES, NOT_A_DIVISOR))),
                "--json",
                str(out / "study.json"),
                "--plot",
                str(out / "study.png"),
            ]
        )
    assert code == 0
    return json.loads((out / "study.json").read_text()), out


def test_json_has_one_row_per_size_with_both_tasks_and_the_proof_cost(study):
    result, out = study
    rows = {row["block_size"]: row for row in result["rows"]}
    assert sorted(rows) == [*SIZES, NOT_A_DIVISOR]
    for size in SIZES:
        row = rows[size]
        for task in FIXTURE_TASKS:
            assert row[f"{task}_skipped"] is None
            for field in ("recovery", "loss_recovery", "forget_acc", "personal_acc"):
                assert f"{task}_{field}" in row
            assert 0.0 <= row[f"{task}_forget_acc"] <= 1.0
            assert row[f"{task}_loss_recovery"] is not None and math.isfinite(row[f"{task}_loss_recovery"])
        assert row["cells_per_weight"] > 0 and row["rows_per_weight"] > 0
    assert set(result["settings"]) >= {"sizes", "level", "proof_k", "tasks", "quick", "recommendation_rule"}
    assert result["settings"]["level"] == "F"
    assert (out / "study.png").stat().st_size > 10_000


def test_cells_per_weight_grow_with_the_block_size(study):
    rows = {row["block_size"]: row for row in study[0]["rows"]}
    small, large = rows[SIZES[0]], rows[SIZES[1]]
    assert large["cells_per_weight"] > small["cells_per_weight"]
    assert large["cost_vs_smallest"] == pytest.approx(large["cells_per_weight"] / small["cells_per_weight"])
    # level F binds G: dearer than removal alone, and more so for larger blocks
    assert 1 < small["f_over_r"] < large["f_over_r"]


def test_recost_recomputes_the_costs_from_the_circuit_and_keeps_the_recovery(study, tmp_path, capsys):
    result, _ = study
    stale = json.loads(json.dumps(result))
    for row in stale["rows"]:  # costs of some other circuit
        row["cells_per_weight"], row["columns"], row["f_over_r"] = 1e9, -1, -1.0
    stale["recommended_block_size"] = -1
    saved = tmp_path / "stale.json"
    saved.write_text(json.dumps(stale))
    out = tmp_path / "recosted.json"
    assert bs.main(["--recost", str(saved), "--json", str(out)]) == 0
    recosted = json.loads(out.read_text())
    assert recosted["settings"]["costs_recomputed"] is True
    for before, after in zip(result["rows"], recosted["rows"]):
        # every field as the study computed it: costs from the same circuit, recovery as measured
        assert after == before
    assert recosted["recommended_block_size"] == result["recommended_block_size"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"rows": [], "settings": {"sizes": [16]}}))
    with pytest.raises(SystemExit, match=r"bad.json is not a block-size study: missing field settings.tasks"):
        bs.main(["--recost", str(bad)])


@pytest.mark.parametrize("block_size", SIZES)
def test_proof_cost_is_the_compiled_chunk_that_fills_2_to_the_16(block_size):
    cost = bs.proof_cost(block_size)
    spec = bs.spec_for_block_size(block_size)

    def stats(blocks):
        shape = chunk_shape_key(blocks=blocks, block_size=block_size, level="F", spec=spec, lanes=block_size)
        return build_chunk_circuit(shape).cs.statistics()

    chunk = stats(cost["blocks_per_chunk"])
    assert chunk["k"] == cost["k"] == 16
    assert stats(cost["blocks_per_chunk"] + 1)["k"] > 16  # one more block no longer fits the domain
    weights = cost["blocks_per_chunk"] * block_size
    assert cost["cells"] == chunk["cells"] == chunk["rows"] * sum(chunk["columns"].values())
    assert cost["cells_per_weight"] == chunk["cells"] / weights
    assert cost["rows_per_weight"] == chunk["rows"] / weights
    assert cost["domain_cells_per_weight"] == 2**16 * sum(chunk["columns"].values()) / weights
    assert cost["workload_chunks"] == 12 * math.ceil(3072 * 768 // block_size / cost["blocks_per_chunk"])


def test_a_size_that_does_not_divide_a_layer_is_skipped_and_named(study, runs):
    result, _ = study
    row = next(r for r in result["rows"] if r["block_size"] == NOT_A_DIVISOR)
    for task in FIXTURE_TASKS:
        reason = row[f"{task}_skipped"]
        assert reason and f"block_size {NOT_A_DIVISOR} does not divide" in reason and "2048" in reason
        assert "kernel" in reason  # names the layer
        assert row[f"{task}_recovery"] is None and row[f"{task}_forget_acc"] is None
    assert row["cells_per_weight"] > 0  # the proof cost does not depend on the models
    assert bs.divisibility_problem(runs["vision"], 16) is None


@pytest.mark.parametrize("task", FIXTURE_TASKS)
def test_gradient_replay_gives_the_recipes_client_obs(runs, task):
    """Both Fisher routes: with 16 to 31 examples, B=16 is dense and B=32 low-rank."""
    run = runs[task]
    gradients = bs.fisher_gradients(run)
    personal_train = run.datasets["personal_train"]
    assert gradients.n_examples == min(24, len(next(iter(personal_train.values()))))
    assert 16 <= gradients.n_examples < 32  # dense at B=16, low-rank at B=32
    for block_size in SIZES:
        if block_size == run.unlearning.block_size:
            expected = run.params_obs
        else:
            expected, _ = tasks.client_unlearn(
                dataclasses.replace(run.unlearning, block_size=block_size),
                params_personal=run.params_personal,
                masks=run.masks,
                client_example_loss=run.client_example_loss,
                personal_train=run.datasets["personal_train"],
                seed=run.settings["seed"],
            )
        got, info = bs.obs_at_block_size(run, block_size, gradients=gradients)
        for path, mask in run.masks.items():
            assert info[path]["method"] == ("dense" if block_size <= gradients.n_examples else "lowrank")
            W_expected, W_got = np.asarray(get_matrix(expected, path)), np.asarray(get_matrix(got, path))
            np.testing.assert_allclose(W_got, W_expected, rtol=1e-4, atol=1e-6, err_msg=f"{task} B={block_size}")
            assert np.all(W_got[mask] == 0)
            W_personal = np.asarray(get_matrix(run.params_personal, path))
            assert not np.allclose(W_got[~mask], W_personal[~mask])  # OBS moved the surviving weights


def test_the_study_reproduces_the_recipes_own_row(study):
    for task in FIXTURE_TASKS:
        reference = study[0]["tasks"][task]["reference"]
        assert reference["abs_difference"] <= 1e-6, reference


def test_mask_block_statistics_counts_touched_and_fully_masked_blocks():
    mask = np.zeros((4, 8), bool)  # blocks of 4: 8 blocks
    mask[0, :4] = True  # block 0 fully masked
    mask[1, 5] = True  # block 3 touched
    mask[3, 0:2] = True  # block 6 touched
    stats = bs.mask_block_statistics({("w",): mask}, 4)
    assert stats == {"touched_blocks": 3 / 8, "fully_masked_blocks": 1 / 3}
    assert bs.mask_block_statistics({("w",): mask}, 8) == {"touched_blocks": 3 / 4, "fully_masked_blocks": 0.0}


def test_prediction_count_is_examples_or_next_token_positions():
    assert bs.prediction_count({"image": np.zeros((7, 8, 8, 1)), "label": np.zeros(7)}) == 7
    assert bs.prediction_count({"tokens": np.zeros((5, 65), np.int32)}) == 5 * 64


def _row(block_size, cells, **recoveries):
    return {
        "block_size": block_size,
        "cells_per_weight": cells,
        **{f"{name}_recovery": value for name, value in recoveries.items()},
    }


def test_recommendation_takes_the_cheapest_size_within_tolerance():
    rows = [
        _row(16, 30, a=0.70, b=0.80),
        _row(64, 80, a=0.93, b=0.95),
        _row(256, 270, a=0.97, b=0.99),
        _row(576, 600, a=None, b=1.0),
    ]
    assert bs.recommend_block_size(rows, ["a", "b"], tolerance=0.05) == 64
    assert bs.recommend_block_size(rows, ["a", "b"], tolerance=0.01) == 256
    assert bs.recommend_block_size(rows, ["b"], tolerance=0.0) == 576
    assert bs.recommend_block_size([_row(16, 30, a=float("nan"))], ["a"]) is None
    # an overshoot above 1 on one task does not make up for a shortfall on the other
    overshoot = [_row(32, 44, a=1.4, b=0.43), _row(128, 140, a=1.08, b=0.72)]
    assert bs.recommend_block_size(overshoot, ["a", "b"], tolerance=0.05) == 128


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1.2), st.floats(1, 1000)), min_size=1, max_size=8), st.floats(0, 0.3))
def test_recommendation_is_eligible_and_nothing_eligible_is_cheaper(points, tolerance):
    rows = [_row(16 * (i + 1), cells, a=recovery) for i, (recovery, cells) in enumerate(points)]
    chosen = bs.recommend_block_size(rows, ["a"], tolerance=tolerance)
    capped = {row["block_size"]: min(row["a_recovery"], 1.0) for row in rows}
    best = max(capped.values())
    pick = next(row for row in rows if row["block_size"] == chosen)
    assert capped[chosen] >= best - tolerance
    assert all(
        row["cells_per_weight"] >= pick["cells_per_weight"]
        for row in rows
        if capped[row["block_size"]] >= best - tolerance
    )


def test_overrides_are_parsed_and_bad_ones_named():
    parsed = bs.parse_overrides(
        [
            "vision.mask_fraction=0.3",
            "vision.weights_per_neuron=None",
            "code.scorer=activation",
            "code.target_layers=('fc1',)",
        ],
        FIXTURE_TASKS,
    )
    assert parsed == {
        "vision": {"mask_fraction": 0.3, "weights_per_neuron": None},
        "code": {"scorer": "activation", "target_layers": ("fc1",)},
    }
    with pytest.raises(ValueError, match="'learning_rate' is not an unlearning field"):
        bs.parse_overrides(["vision.learning_rate=1"], bs.TASK_NAMES)
    with pytest.raises(ValueError, match="'block_size' is not an unlearning field"):
        bs.parse_overrides(["vision.block_size=64"], bs.TASK_NAMES)
    with pytest.raises(ValueError, match="task 'audio' is not among"):
        bs.parse_overrides(["audio.mask_fraction=0.1"], bs.TASK_NAMES)
    with pytest.raises(ValueError, match="TASK.FIELD=VALUE"):
        bs.parse_overrides(["mask_fraction=0.1"], bs.TASK_NAMES)


# ------------------------------------------------------------------------------------ the characters task


@pytest.mark.skipif(missing_sources(), reason="real data not installed (jaxapex data status)")
def test_characters_is_the_default_task_and_its_blocks_may_span_rows(runs, tmp_path):
    characters = tasks.run_characters_task(config=tasks.characters_smoke_config(), seed=0, cache_dir=tmp_path / "cache")
    trained = []

    def fake_train(names, **_):
        trained.extend(names)
        return {"characters": characters, "code": runs["code"]}

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bs, "train_tasks", fake_train)
        assert bs.main(["--sizes", f"16,64,{NOT_A_DIVISOR}", "--json", str(tmp_path / "study.json")]) == 0
    assert trained == list(bs.DEFAULT_TASKS) == ["characters", "code"]
    result = json.loads((tmp_path / "study.json").read_text())
    rows = {row["block_size"]: row for row in result["rows"]}
    assert rows[64]["characters_skipped"] is None and 0 <= rows[64]["characters_forget_acc"] <= 1
    assert "does not divide" in rows[NOT_A_DIVISOR]["characters_skipped"]
    assert result["tasks"]["characters"]["reference"]["block_size"] == characters.unlearning.block_size

    # B = 64 is two fc1 rows of 32: the study's update is the library's, and a row without a masked weight
    # moves when the other row of its block has one
    gradients = bs.fisher_gradients(characters)
    got, _ = bs.obs_at_block_size(characters, 64, gradients=gradients)
    expected, _ = tasks.client_unlearn(
        dataclasses.replace(characters.unlearning, block_size=64),
        params_personal=characters.params_personal,
        masks=characters.masks,
        client_example_loss=characters.client_example_loss,
        personal_train=characters.datasets["personal_train"],
        seed=0,
    )
    for path, mask in characters.masks.items():
        W_got, W_expected = np.asarray(get_matrix(got, path)), np.asarray(get_matrix(expected, path))
        np.testing.assert_allclose(W_got, W_expected, rtol=1e-4, atol=1e-6)
        assert mask.shape[1] == 32
        rows_masked = mask.any(axis=1)
        partner_masked = rows_masked.reshape(-1, 2)[:, ::-1].reshape(-1)  # the other row of each 64-block
        free_rows = ~rows_masked & partner_masked
        assert free_rows.any(), "the tiny mask leaves no unmasked row beside a masked one"
        moved = np.abs(W_got - np.asarray(get_matrix(characters.params_personal, path)))[free_rows]
        assert (moved.max(axis=1) > 0).all()
