"""The real-data characters task on a tiny configuration, and the provider's forget directions."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from jaxapex import tasks
from jaxapex.data.characters import CLASS_NAMES, CharactersDataConfig, class_label, missing_sources
from jaxapex.layers import get_matrix, to_blocks

needs_data = pytest.mark.skipif(
    bool(missing_sources()),
    reason="real data not installed (jaxapex data status)",
)


def test_class_names():
    assert len(CLASS_NAMES) == 29 and class_label("3") == 3 and class_label("A") == 10
    with pytest.raises(ValueError, match="unknown class 'O'"):
        class_label("O")
    with pytest.raises(ValueError, match="must not include a forget class"):
        CharactersDataConfig(forget_classes=(3,), personal_classes=(3, 4))


def tiny_config() -> tasks.CharactersTaskConfig:
    """The smoke configuration with a little more data and forget-aware OBS (2 directions, B = 32)."""
    smoke = tasks.characters_smoke_config(seed=0)
    return dataclasses.replace(
        smoke,
        data=CharactersDataConfig(
            printed_train_per_class=12,
            printed_test_per_class=3,
            personal_train_per_class=3,
            personal_test_per_class=2,
            mnist_train=400,
            mnist_test=100,
        ),
        unlearning=dataclasses.replace(smoke.unlearning, block_size=32, fisher_examples=16, forget_directions=2),
    )


@needs_data
def test_characters_task_runs_on_a_tiny_configuration(tmp_path):
    run = tasks.run_characters_task(config=tiny_config(), seed=0, cache_dir=tmp_path)
    sizes = run.settings["sizes"]
    assert sizes["global_train"] == 400 + 19 * 12 and sizes["personal_test"] == 28 * 2
    assert run.settings["forget_class"] == "3" and "3" not in run.settings["personal_classes"]
    for row in run.rows.values():
        assert 0 <= row["forget_acc"] <= 1 and 0 <= row["personal_acc"] <= 1
    assert any(m.any() for m in run.masks.values())
    # the masked weights are zero after OBS, and the compensation does not move along the forget directions
    for path, mask in run.masks.items():
        W = np.asarray(get_matrix(run.params_obs, path))
        assert not W[mask].any()
        delta = to_blocks(W - np.asarray(get_matrix(run.params_personal, path)), 32)
        mask_blocks = to_blocks(mask, 32)
        touched = np.flatnonzero(mask_blocks.any(axis=1))
        U = run.directions[path]
        free_delta = np.where(mask_blocks[touched], 0.0, delta[touched])
        assert np.abs(np.einsum("trb,tb->tr", U, free_delta)).max() < 1e-4 * max(1.0, np.abs(delta).max())
    # the renderings are cached: a second build reads them back identically
    again = tasks.characters_task(tiny_config().data, seed=0, cache_dir=tmp_path)
    np.testing.assert_array_equal(again.personal_train.images, run.datasets["personal_train"]["image"])


def test_forget_sweep_summary_means_and_target():
    from benchmarks.forget_sweep import summarize, sweep_points

    points = sweep_points((4,), (1e-6, 1.0), 1e-6)
    assert [(p["k"], p["damp"]) for p in points] == [(0, 1e-6), (0, 1.0), (4, 1e-6), (4, 1e-6)]
    assert [p["tokens"] for p in points[2:]] == ["all", "cls"]
    both = sweep_points((4,), (1e-6,), 1e-6, ("principal", "contrast"))
    assert [(p["kind"], p["tokens"]) for p in both[1:]] == [
        ("principal", "all"),
        ("principal", "cls"),
        ("contrast", "all"),
        ("contrast", "cls"),
    ]
    assert len({p["line"] for p in both}) == 5  # each family its own line in the table and the plot

    def result(recovery, rebound):
        return {
            "recovery": recovery,
            "forget_rebound_points": rebound,
            "obs": dict.fromkeys(("forget_acc", "personal_acc", "test_acc"), 0.5),
        }

    per_seed = {
        0: [result(0.9, 40.0), result(0.2, 2.0), result(0.8, 4.0), {"infeasible": "k > B - |S|"}],
        1: [result(0.7, 30.0), result(0.4, 0.0), result(0.7, 5.0), result(0.1, 0.0)],
    }
    summary = summarize(points, per_seed)
    assert summary[0]["recovery"] == pytest.approx(0.8) and summary[0]["recovery_worst"] == pytest.approx(0.7)
    assert summary[0]["forget_rebound_points"] == pytest.approx(35.0) and not summary[0]["meets_target"]
    assert summary[2]["recovery"] == pytest.approx(0.75) and summary[2]["meets_target"]
    assert summary[3]["infeasible"] == "k > B - |S|"


def test_missing_sources_names_the_absent_ones(monkeypatch):
    from jaxapex.data import characters, sources

    real = sources.source

    class Absent:
        def path(self):
            return None

    monkeypatch.setattr(sources, "source", lambda name: Absent() if name == "mnist" else real(name))
    missing = characters.missing_sources()
    assert "mnist" in missing and set(missing) <= set(characters.SOURCES)
