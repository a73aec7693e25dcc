"""The code-unlearning recipe on a pretrained decoder (jaxapex.pretrained_task), on a tiny random LLaMA with
a byte tokenizer and a few synthetic source files: the cached residual stream is exact, the seeds split by
file, and the recipe's masks, OBS and rows hold together. The real SmolLM2 runs in benchmarks.table_code."""

from __future__ import annotations

import argparse
import dataclasses

import jax
import numpy as np
import pytest

from jaxapex.data import code_corpus
from jaxapex.data.code_corpus import LanguageSource
from jaxapex.evaluate import lm_metrics
from jaxapex.gguf_import import PretrainedLM
from jaxapex.layers import get_matrix
from jaxapex.models import LLAMA_PRESETS, Llama, init_params
from jaxapex.pretrained_task import (
    build_pool,
    pretrained_code_config,
    residual_stream,
    run_pretrained_code_task,
    seed_datasets,
    top_params,
)
from jaxapex.train import TrainConfig

LANGUAGES = ("python", "c", "perl", "shell")


class ByteTokenizer:
    def encode_batch(self, texts):
        return [list(text.encode()) for text in texts]


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("code")
    rng = np.random.default_rng(0)
    out = {}
    for lang in LANGUAGES:
        directory = root / lang
        directory.mkdir()
        for i in range(6):
            words = rng.choice([f"{lang}_{w}" for w in ("if", "for", "x", "return", "(", ")", ";")], size=60)
            (directory / f"f{i}.txt").write_text(f"# file {i}\n" + " ".join(words) + "\n")
        out[lang] = LanguageSource(roots=(str(directory),), suffixes=(".txt",))
    return out


@pytest.fixture(scope="module")
def setup(sources):
    model_config = LLAMA_PRESETS["llama_tiny"]
    lm = PretrainedLM(
        config=model_config,
        variables=init_params(Llama(model_config), 0),
        tokenizer=ByteTokenizer(),
        path="random-init",
    )
    base = pretrained_code_config(model_config, quick=True)
    cfg = dataclasses.replace(
        base,
        files_per_language=tuple((lang, 4) for lang in LANGUAGES),
        eval_files_per_language=2,
        eval_windows_per_file=3,
        window=33,
        max_windows_per_file=2,
        top_layers=1,
        personalization=dataclasses.replace(
            base.personalization, train=TrainConfig(steps=3, batch_size=4, learning_rate=1e-2, seed=1)
        ),
        unlearning=dataclasses.replace(base.unlearning, score_examples=8, fisher_examples=8, batch_size=4),
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(code_corpus, "default_sources", lambda: sources)
        run = run_pretrained_code_task(config=cfg, pretrained=lm, seed=0)
        pool = build_pool(cfg, lm.variables, lambda data: np.frombuffer(data, np.uint8))
    return lm, cfg, run, pool


def test_the_cached_residual_stream_gives_the_full_models_metrics(setup):
    lm, cfg, _, pool = setup
    k = cfg.first_top_layer
    tokens = pool.splits["c"].tokens
    hidden = residual_stream(lm.config, lm.variables, tokens, stop_layer=k, batch_size=3)  # padded last chunk
    np.testing.assert_allclose(hidden, pool.hidden["c"], rtol=1e-5, atol=1e-5)
    full = lm_metrics(Llama(lm.config), lm.variables, {"tokens": tokens})
    top = lm_metrics(Llama(lm.config, start_layer=k), top_params(lm.variables, k), {"tokens": tokens, "hidden": hidden})
    assert top["accuracy"] == pytest.approx(full["accuracy"], abs=1e-6)
    assert top["nll"] == pytest.approx(full["nll"], rel=1e-5)
    assert sorted(top_params(lm.variables, k)["params"]) == ["embed_tokens", "final_norm", f"layer_{k}"]


def test_seeds_share_the_held_out_files_and_split_the_clients_by_file(setup):
    _, cfg, _, pool = setup
    held_out_by_seed, personal_by_seed = [], []
    for seed in (0, 1, 2, 3):
        data = seed_datasets(pool, cfg, seed=seed)
        for name in ("forget_train", "retain_train", "personal_train"):
            assert len(data[name]["tokens"]) == len(data[name]["hidden"]) > 0
        train_rows = {
            tuple(r) for name in ("forget_train", "retain_train", "personal_train") for r in data[name]["tokens"]
        }
        for lang in LANGUAGES:
            test_rows = {tuple(r) for r in data[f"test_{lang}"]["tokens"]}
            assert test_rows and not test_rows & train_rows
            # the held-out files take up to eval_windows_per_file windows each, training files fewer
            assert len(data[f"test_{lang}"]["tokens"]) <= cfg.eval_files_per_language * cfg.eval_windows_per_file
        personal = {tuple(r) for r in data["personal_train"]["tokens"]}
        assert not personal & {tuple(r) for r in data["retain_train"]["tokens"]}
        held_out_by_seed.append(b"".join(data[f"test_{lang}"]["tokens"].tobytes() for lang in LANGUAGES))
        personal_by_seed.append(frozenset(personal))
    assert len(set(held_out_by_seed)) == 1  # every seed is evaluated on the same windows
    assert len(set(personal_by_seed)) > 1  # the seed picks which client-language files the client holds


def test_recipe_masks_the_top_mlp_and_obs_removes_exactly_the_mask(setup):
    _, cfg, run, _ = setup
    summary = run.summary()
    assert summary["masked_weight_fraction"] == pytest.approx(0.04, abs=1e-3)
    assert {p[1] for p in run.target_paths} == {f"layer_{cfg.first_top_layer}"}
    assert {p[3] for p in run.target_paths} == {"gate", "up", "down"}
    for path, mask in run.masks.items():
        W_obs = np.asarray(get_matrix(run.params_obs, path))
        assert np.all(W_obs[mask] == 0)
        assert not np.allclose(W_obs[~mask], np.asarray(get_matrix(run.params_personal, path))[~mask])
    leaves = jax.tree.leaves(
        jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), run.params_global, run.params_personal)
    )
    assert not all(leaves)  # LoRA moved the top layer
    for row in summary["rows"].values():
        assert set(row) >= {"forget_acc", "personal_acc", "test_acc"} | {f"{lang}_acc" for lang in LANGUAGES}
        assert row["forget_acc"] == row["python_acc"] and row["personal_acc"] == row["c_acc"]
        assert min(row["perl_acc"], row["shell_acc"]) <= row["test_acc"] <= max(row["perl_acc"], row["shell_acc"])
    assert summary["settings"]["n_eval"]["c"] == len(run.datasets["test_c"]["tokens"]) * 32


def test_config_errors_name_the_field():
    cfg = LLAMA_PRESETS["llama_tiny"]
    with pytest.raises(ValueError, match="PretrainedCodeConfig.forget_language='cobol'"):
        dataclasses.replace(pretrained_code_config(cfg), forget_language="cobol")
    with pytest.raises(ValueError, match="PretrainedCodeConfig.top_layers"):
        dataclasses.replace(pretrained_code_config(cfg), top_layers=3)


def test_forget_aware_obs_runs_on_the_same_models_and_changes_the_update(setup):
    from jaxapex.tasks import unlearn_forget_aware

    _, _, run, _ = setup
    result = unlearn_forget_aware(run, k=2)
    assert result["rows"]["masked"] == run.rows["masked"]
    assert result["unlearning"]["forget_directions"] == 2
    assert result["rows"]["obs"]["personal_ppl"] != run.rows["obs"]["personal_ppl"]


def test_table_code_criteria_average_the_seeds_and_compare_the_forget_drop_with_the_others():
    from benchmarks.table_code import criteria, per_language_rows

    def rows(python, c, perl, shell):  # accuracy after the mask; 0.5 before it everywhere
        before = {f"{lang}_acc": 0.5 for lang in ("python", "c", "perl", "shell")}
        after = {"python_acc": python, "c_acc": c, "perl_acc": perl, "shell_acc": shell}
        return {"personalized": before, "masked": after, "obs": after}

    per_seed = {"0": {"rows": rows(0.40, 0.46, 0.49, 0.49), "recovery": 0.6}}
    per_seed["1"] = {"rows": rows(0.44, 0.48, 0.50, 0.48), "recovery": 0.2}
    summary = {
        "settings": {"seed": 0, "forget_language": "python", "personal_language": "c"}
        | {"languages": ["python", "c", "perl", "shell"]},
        "rows_by_seed": per_seed,
        "rows": {
            k: {**v, **{f"{lang}_ppl": 1.0 for lang in ("python", "c", "perl", "shell")}}
            for k, v in rows(0.4, 0.46, 0.49, 0.49).items()
        },
    }
    c = criteria(summary)
    assert c["recovery_mean"] == pytest.approx(0.4)
    assert c["personal_cost_points"] == pytest.approx(3.0)  # (4 + 2) / 2
    assert c["forget_drop_points"] == pytest.approx(8.0)  # (10 + 6) / 2
    assert c["others_mean_drop_points"] == pytest.approx((6 / 3 + 4 / 3) / 2)  # seed 0: (4+1+1)/3, seed 1: (2+0+2)/3
    assert c["met"] == {"recovery": False, "personal_cost": True, "forget_drop": True}
    assert per_language_rows(summary)["perl"]["masked"] == {"acc": 0.49, "ppl": 1.0}


def test_table_code_smollm2_end_to_end_on_the_tiny_model(setup, sources, tmp_path, monkeypatch, capsys):
    import json

    from benchmarks import table_code
    from jaxapex import pretrained_task

    lm, cfg, _, _ = setup
    real = pretrained_task.run_pretrained_code_task
    monkeypatch.setattr(code_corpus, "default_sources", lambda: sources)
    monkeypatch.setattr(
        pretrained_task,
        "run_pretrained_code_task",
        lambda **kwargs: real(**{**kwargs, "config": cfg, "pretrained": lm}),
    )
    out = tmp_path / "table.json"
    argv = ["--model", "smollm2", "--quick", "--extra-seeds", "1", "--sweep", "0.1", "--json", str(out)]
    assert table_code.main([*argv, "--compare", "activation,forget-aware"]) == 0
    result = json.loads(out.read_text())
    assert set(result["rows_by_seed"]) == set(result["recovery_by_seed"]) == {"0", "1"}
    assert "python_acc" in result["rows_by_seed"]["1"]["rows"]["masked"]
    assert set(result["criteria"]["met"]) == {"recovery", "personal_cost", "forget_drop"}
    assert [p["mask_fraction"] for p in result["sweep"]] == [0.1]
    assert result["comparison"]["rows"]["obs"] and result["comparison_forget_aware"]["rows"]["obs"]
    assert json.loads(out.with_suffix(".partial.json").read_text())["sweep"][0]["mask_fraction"] == 0.1
    assert "criteria (mean over 2 seeds)" in capsys.readouterr().out


def test_compensation_only_sweep_changes_only_the_compensation(setup):
    from benchmarks.table_code import compensation_only, parse_obs_settings

    _, _, run, _ = setup
    assert parse_obs_settings("1e-4,1e2:3") == ((1e-4, None), (100.0, 3))
    with pytest.raises(argparse.ArgumentTypeError, match="DAMP"):
        parse_obs_settings("tiny")
    # With overwhelming damping the Fisher is a multiple of I: OBS only zeroes the mask, the masked model.
    point = compensation_only(run, 1e12, None)
    assert point["rows"]["masked"] == run.rows["masked"]
    for key, value in run.rows["masked"].items():
        assert point["rows"]["obs"][key] == pytest.approx(value, abs=1e-6), key
    assert set(point["obs_change_points"]) == set(LANGUAGES)
    assert point["unlearning"]["damp"] == 1e12
