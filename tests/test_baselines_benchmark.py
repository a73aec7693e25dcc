"""benchmarks.baselines on the characters task's smoke configuration: the methods get rows from the same
personalized model, the mask-based rows are the recipe's own models, and retraining is priced far above
ZK-APEX. (Certified fine-tuning and ZS-PAG are left out here for time: their compilation alone takes ~40 s;
tests/test_baselines.py checks both methods themselves.)"""

from __future__ import annotations

import pytest

from benchmarks import baselines as bl
from jaxapex import tasks
from jaxapex.data.characters import missing_sources

needs_data = pytest.mark.skipif(
    bool(missing_sources()),
    reason="real data not installed (jaxapex data status)",
)


@needs_data
def test_every_method_runs_on_the_characters_task(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the recipe caches its renderings and models under ./runs
    config = tasks.characters_smoke_config()
    methods = ("retrain", "zk_apex_obs", "naive_mask", "gradient_ascent")
    result = bl.run_task("characters", quick=True, seed=0, log=lambda _msg: None, config=config, methods=methods)
    rows = result["rows"]
    assert list(rows) == ["personalized", "zk_apex_obs", "naive_mask", "retrain", "gradient_ascent"]  # table order
    for name in methods:
        for metric in ("forget_acc", "personal_acc", "test_acc", "mia"):
            assert 0.0 <= rows[name][metric] <= 1.0, (name, metric)
        assert rows[name]["proof_rows"] > 0
    # the mask-based rows are the recipe's own masked and OBS models, bit for bit
    assert result["methods"]["naive_mask"]["max_abs_diff_vs_recipe_masked"] == 0.0
    assert result["methods"]["zk_apex_obs"]["max_abs_diff_vs_recipe_obs"] == 0.0
    assert rows["zk_apex_obs"]["personal_acc"] == result["recipe_rows"]["obs"]["personal_acc"]
    # retraining is the recipe's own training without the forget class
    retrain = result["methods"]["retrain"]["config"]
    assert retrain["global_train"]["steps"] == config.global_train.steps
    assert retrain["personalize"]["train"]["steps"] == config.personalization.train.steps
    assert rows["retrain"]["proof_rows"] > 1000 * rows["zk_apex_obs"]["proof_rows"]
    assert result["mask"]["block_size"] == config.unlearning.block_size


def test_unknown_tasks_and_methods_are_refused_with_the_known_ones_named(capsys):
    with pytest.raises(SystemExit) as err:
        bl.main(["--tasks", "audio"])
    assert err.value.code == 2
    assert "choose from characters, vision, code" in capsys.readouterr().err
    for methods in ("retrain,unlearn_harder", "retrain"):  # unknown; or no ZK-APEX to compare against
        with pytest.raises(SystemExit) as err:
            bl.main(["--tasks", "vision", "--methods", methods])
        assert err.value.code == 2
        assert "methods must include zk_apex_obs" in capsys.readouterr().err
