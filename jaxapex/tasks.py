"""The two end-to-end unlearning recipes (everything except the proof).

    global model ──personalize (client data)──▶ personalized model
    global model + forget/retain data ──provider scorer──▶ public mask M
    personalized model ──zero M──▶ masked model ──Group OBS with the client's Fisher──▶ unlearned model

:func:`run_vision_task`: ViT on digits; forget one class; the client personalizes on sketches of its own
classes. :func:`run_code_task`: byte-level OPT on source files of several languages; forget one language;
the client personalizes on another. Both return a :class:`TaskRun` holding the models, masks, data, loss
functions and the metric rows, so that other code (protocol demo, baselines) can reuse every piece.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxapex import evaluate, forget_directions, masking, obs
from jaxapex.data import as_batches, characters_task, digits_task, take
from jaxapex.data.characters import CLASS_NAMES, CharactersDataConfig
from jaxapex.layers import get_matrix, path_name, set_matrix, touched_blocks
from jaxapex.models import (
    ALL_MLP_MATRICES,
    MLP_OUTPUT_MATRIX,
    VIT_PRESETS,
    OPTConfig,
    ViTConfig,
    batch_loss_fn,
    build_model,
    example_loss_fn,
    init_params,
    make_hidden_fn,
    mlp_target_paths,
)
from jaxapex.train import PersonalizeConfig, TrainConfig, fit, personalize

Path = tuple[str, ...]
Params = dict
Rows = dict[str, dict[str, float]]
ROW_NAMES = ("personalized", "masked", "obs")
SCORERS = masking.SCORERS


@dataclasses.dataclass(frozen=True, kw_only=True)
class UnlearningConfig:
    """Provider mask + client correction.

    scorer: ``"activation"`` (mean |act| forget / retain per MLP neuron, DESIGN §3) or ``"second-order"``
        (per-weight ``g·w − λ_H F w²`` saliencies of forget and retain, combined by ``score_combine``:
        ``"ratio"`` the published rule, ``"difference"`` ``I_forget − c_ret·I_retain``, see masking).
    mask_fraction: share of the target weights (second-order) or of the MLP neurons (activation) masked.
    neuron_side: activation scorer only — which weights of a chosen neuron are masked: ``"in"`` its
        incoming weights (row n of fc1's W), ``"out"`` its outgoing weights (column n of fc2's W, i.e. the
        neuron's write into the residual stream; OBS then compensates with the other neurons' writes).
    weights_per_neuron: activation scorer only — mask only the k largest-|w| weights of each chosen neuron
        (of its fc1 row, or of its fc2 column) instead of all of them.
    target_layers: second-order scorer — which MLP matrices it ranks (``("fc1",)`` or ``("fc1", "fc2")``);
        the activation scorer ranks fc1 neurons and masks fc1 or fc2 according to ``neuron_side``.
    block_size, damp, fisher_examples: the client's blockwise Fisher (B, λ, number of per-sample gradients).
    forget_directions: k > 0 makes the compensation forget-aware: per block it may not move along the top-k
        principal directions of the target layer's inputs on the forget set (:mod:`jaxapex.forget_directions`),
        computed by the provider on the global model; ``directions_tokens`` — every token's inputs or the
        class token's only; ``directions_kind`` — ``"principal"`` (top-k principal directions of the forget
        inputs) or ``"contrast"`` (the top-k directions of the forget inputs relative to the retain inputs,
        :func:`jaxapex.forget_directions.contrast_directions`). 0 is plain Group OBS.
    """

    scorer: str = "activation"
    mask_fraction: float = 0.1
    neuron_side: str = "in"
    weights_per_neuron: int | None = None
    target_layers: tuple[str, ...] = ("fc1",)
    cls_only: bool = False
    eps: float = 1e-6
    lambda_h: float = 0.448
    c_ret: float = 2.0
    score_damp: float = 1e-8
    score_combine: str = "ratio"
    score_examples: int | None = None
    block_size: int = 64
    damp: float = 1e-6
    fisher_examples: int | None = None
    batch_size: int = 64
    forget_directions: int = 0
    directions_tokens: str = "all"
    directions_kind: str = "principal"

    def __post_init__(self) -> None:
        if self.scorer not in SCORERS:
            raise ValueError(f"scorer must be one of {SCORERS}, got {self.scorer!r}")
        if not 0 < self.mask_fraction < 1:
            raise ValueError(f"mask_fraction must be in (0, 1), got {self.mask_fraction}")
        if self.scorer == "activation" and self.target_layers not in (("fc1",), ("gate",)):
            raise ValueError(
                f"the activation scorer ranks the neurons of fc1 (or of a SwiGLU MLP's gate); "
                f"target_layers must be ('fc1',) or ('gate',), got {self.target_layers}"
            )
        if self.neuron_side not in ("in", "out"):
            raise ValueError(f"neuron_side must be 'in' (fc1 rows) or 'out' (fc2 columns), got {self.neuron_side!r}")
        if self.scorer != "activation" and (self.weights_per_neuron is not None or self.neuron_side != "in"):
            raise ValueError("weights_per_neuron and neuron_side apply to the activation scorer only")
        if self.weights_per_neuron is not None and self.weights_per_neuron <= 0:
            raise ValueError(f"weights_per_neuron must be positive or None, got {self.weights_per_neuron}")
        if self.forget_directions < 0:
            raise ValueError(f"forget_directions must be >= 0, got {self.forget_directions}")
        if self.directions_kind not in forget_directions.DIRECTION_KINDS:
            raise ValueError(
                f"directions_kind must be one of {forget_directions.DIRECTION_KINDS}, got {self.directions_kind!r}"
            )
        if self.directions_tokens not in forget_directions.TOKENS:
            raise ValueError(
                f"directions_tokens must be one of {forget_directions.TOKENS}, got {self.directions_tokens!r}"
            )


@dataclasses.dataclass
class TaskRun:
    """Everything one recipe produced. ``params_*`` are variables dicts ``{"params": ...}``.

    ``datasets`` maps split names to dicts of arrays; ``client_example_loss`` / ``provider_example_loss``
    are per-example losses ``f(params, example)``; ``evaluate(params)`` computes one metric row.
    """

    name: str
    model: Any
    params_global: Params
    params_personal: Params
    params_masked: Params
    params_obs: Params
    masks: dict[Path, np.ndarray]
    target_paths: tuple[Path, ...]
    datasets: dict[str, dict[str, np.ndarray]]
    client_example_loss: Callable
    provider_example_loss: Callable
    hidden_fn: Callable
    evaluate: Callable[[Params], dict[str, float]]
    rows: Rows
    recovery: float
    unlearning: UnlearningConfig
    settings: dict[str, Any]
    obs_info: dict
    timings: dict[str, float]
    directions: dict[Path, np.ndarray] | None = None

    def summary(self) -> dict[str, Any]:
        """The JSON-ready figures: rows, recovery, mask fraction, block size and the settings used."""
        masked = int(sum(int(m.sum()) for m in self.masks.values()))
        total = int(sum(m.size for m in self.masks.values()))
        return {
            "task": self.name,
            "rows": self.rows,
            "recovery": self.recovery,
            "forget_recovery": evaluate.recovery(
                personalized=self.rows["personalized"]["forget_acc"],
                masked=self.rows["masked"]["forget_acc"],
                obs=self.rows["obs"]["forget_acc"],
            ),
            "mask_fraction": self.unlearning.mask_fraction,
            "masked_weight_fraction": masked / total,
            "masked_weights": masked,
            "target_weights": total,
            "block_size": self.unlearning.block_size,
            "scorer": self.unlearning.scorer,
            "target_layers": [path_name(p) for p in self.target_paths],
            "unlearning": dataclasses.asdict(self.unlearning),
            "settings": self.settings,
            "timings_s": self.timings,
        }


def apply_mask(params: Params, masks: Mapping[Path, np.ndarray]) -> Params:
    """Zero the masked entries of each target matrix W (out, in)."""
    for path, mask in masks.items():
        W = get_matrix(params, path)
        if tuple(np.shape(mask)) != tuple(W.shape):
            raise ValueError(f"mask for {path_name(path)!r} has shape {np.shape(mask)}, W has {tuple(W.shape)}")
        params = set_matrix(params, path, jnp.where(jnp.asarray(mask), 0.0, W))
    return params


def outgoing_neuron_masks(
    neuron_scores: Mapping[Path, np.ndarray], params: Params, fraction: float, *, weights_per_neuron: int | None = None
) -> dict[Path, np.ndarray]:
    """Masks on fc2 (W: (dim, mlp_dim)) removing the outgoing weights (column n) of the globally top
    ``fraction`` of fc1 neurons; with ``weights_per_neuron=k`` only the k largest-|w| entries of each column.

    ``neuron_scores`` maps fc1 kernel paths to (mlp_dim,) scores; each fc1 path's sibling fc2 kernel is masked
    (for a SwiGLU MLP: gate paths, and the sibling down kernel).
    """
    chosen = masking.top_fraction_mask(neuron_scores, fraction)
    masks = {}
    for fc1_path, neurons in chosen.items():
        if fc1_path[-1] != "kernel" or fc1_path[-2] not in MLP_OUTPUT_MATRIX:
            raise ValueError(f"neuron scores must be keyed by fc1 (or gate) kernel paths, got {path_name(fc1_path)!r}")
        fc2_path = (*fc1_path[:-2], MLP_OUTPUT_MATRIX[fc1_path[-2]], "kernel")
        W = np.asarray(get_matrix(params, fc2_path))  # (dim, mlp_dim)
        if neurons.shape != (W.shape[1],):
            raise ValueError(
                f"{path_name(fc1_path)!r}: {neurons.shape[0]} neuron scores, but "
                f"{path_name(fc2_path)!r} reads {W.shape[1]} neurons"
            )
        mask = np.repeat(neurons[None, :], W.shape[0], axis=0)
        if weights_per_neuron is not None:
            if not 1 <= weights_per_neuron <= W.shape[0]:
                raise ValueError(
                    f"weights_per_neuron must lie in [1, {W.shape[0]}] for {path_name(fc2_path)!r}, "
                    f"got {weights_per_neuron}"
                )
            top_rows = np.argsort(-np.abs(W), axis=0, kind="stable")[:weights_per_neuron]
            keep = np.zeros(W.shape, dtype=bool)
            np.put_along_axis(keep, top_rows, True, axis=0)
            mask &= keep
        masks[fc2_path] = mask
    return masks


def provider_mask(
    cfg: UnlearningConfig,
    *,
    params_global: Params,
    provider_example_loss: Callable,
    hidden_fn: Callable,
    forget: Mapping[str, np.ndarray],
    retain: Mapping[str, np.ndarray],
) -> tuple[dict[Path, np.ndarray], tuple[Path, ...]]:
    """The public mask, computed on the GLOBAL model from the provider's forget and retain data.

    Returns ``(masks, target_paths)``: boolean masks shaped like each target matrix W (out, in).
    """
    forget_batches, retain_batches = as_batches(forget, cfg.batch_size), as_batches(retain, cfg.batch_size)
    if cfg.scorer == "activation":
        scores = masking.activation_ratio_scores(
            hidden_fn, params_global, forget_batches, retain_batches, eps=cfg.eps, max_examples=cfg.score_examples
        )
        if cfg.neuron_side == "in":
            masks = masking.neuron_mask(
                scores, params_global, cfg.mask_fraction, weights_per_neuron=cfg.weights_per_neuron
            )
        else:
            masks = outgoing_neuron_masks(
                scores, params_global, cfg.mask_fraction, weights_per_neuron=cfg.weights_per_neuron
            )
    else:
        target_paths = mlp_target_paths(params_global, cfg.target_layers)
        scores = masking.second_order_scores(
            provider_example_loss,
            params_global,
            target_paths,
            forget_batches,
            retain_batches,
            lambda_h=cfg.lambda_h,
            c_ret=cfg.c_ret,
            damp=cfg.score_damp,
            max_examples=cfg.score_examples,
            combine=cfg.score_combine,
        )
        masks = masking.top_fraction_mask(scores, cfg.mask_fraction)
    masks = {tuple(p): np.asarray(m, dtype=bool) for p, m in masks.items()}
    order = mlp_target_paths(params_global, ALL_MLP_MATRICES)
    return masks, tuple(p for p in order if p in masks)


def provider_directions(
    cfg: UnlearningConfig,
    *,
    model,
    params_global: Params,
    masks: Mapping[Path, np.ndarray],
    forget: Mapping[str, np.ndarray],
    retain: Mapping[str, np.ndarray] | None = None,
) -> dict[Path, np.ndarray] | None:
    """The public forget directions that go with the mask, cut into the touched OBS blocks: ``{path:
    (touched blocks, k, B)}`` (None for plain OBS, ``forget_directions=0``). ``retain``: the provider's
    retain set, which ``directions_kind="contrast"`` reads."""
    if cfg.forget_directions == 0:
        return None
    paths = tuple(tuple(p) for p in masks)
    U = forget_directions.forget_directions(
        model,
        params_global,
        paths,
        as_batches(forget, cfg.batch_size),
        k=cfg.forget_directions,
        max_examples=cfg.score_examples,
        tokens=cfg.directions_tokens,
        kind=cfg.directions_kind,
        retain_batches=None if retain is None else as_batches(retain, cfg.batch_size),
    )
    out = {}
    for path in paths:
        shape = tuple(get_matrix(params_global, path).shape)
        touched = touched_blocks(masks[path], cfg.block_size, path=path)
        out[path] = forget_directions.block_directions(U[path], shape, cfg.block_size)[touched]
    return out


def client_unlearn(
    cfg: UnlearningConfig,
    *,
    params_personal: Params,
    masks: Mapping[Path, np.ndarray],
    client_example_loss: Callable,
    personal_train: Mapping[str, np.ndarray],
    seed: int,
    directions: Mapping[Path, np.ndarray] | None = None,
) -> tuple[Params, dict]:
    """Group OBS with the client's blockwise Fisher on (up to ``fisher_examples`` of) its own data;
    forget-aware when the provider's ``directions`` come with the mask."""
    fisher_data = take(personal_train, cfg.fisher_examples, seed=seed)
    return obs.unlearn(
        params_personal,
        masks,
        client_example_loss,
        as_batches(fisher_data, cfg.batch_size),
        block_size=cfg.block_size,
        damp=cfg.damp,
        directions=directions,
    )


def _run_rows(evaluate_row: Callable[[Params], dict], params: Sequence[Params]) -> Rows:
    return {name: evaluate_row(p) for name, p in zip(ROW_NAMES, params)}


def _recovery(rows: Rows, key: str) -> float:
    return evaluate.recovery(personalized=rows["personalized"][key], masked=rows["masked"][key], obs=rows["obs"][key])


def _timed(timings: dict, name: str, fn: Callable, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    jax.block_until_ready(jax.tree.leaves(out)[:1])
    timings[name] = round(time.perf_counter() - start, 3)
    return out


def _with_unlearning(cfg, optional: Mapping[str, Any], explicit: Mapping[str, Any]):
    """A task config with unlearning settings replaced: ``optional`` ones where not ``None`` (the CLI's
    "recipe default"), ``explicit`` ones as given."""
    changes = {k: v for k, v in optional.items() if v is not None}
    return dataclasses.replace(cfg, unlearning=dataclasses.replace(cfg.unlearning, **changes, **explicit))


def _training_settings(cfg, *, seed: int, quick: bool) -> dict[str, Any]:
    """The settings both recipes record: seed, model and the global / personal training."""
    return {
        "seed": seed,
        "quick": quick,
        "model": dataclasses.asdict(cfg.model),
        "global_steps": cfg.global_train.steps if cfg.global_train is not None else 0,
        "personal_steps": cfg.personalization.train.steps,
        "layer_decay": cfg.personalization.layer_decay,
        "freeze_blocks": cfg.personalization.freeze_blocks,
        "lora_rank": cfg.personalization.lora_rank,
    }


def unlearn_with(
    run: TaskRun,
    unlearning: UnlearningConfig,
    *,
    masks: Mapping[Path, np.ndarray] | None = None,
    masked_row: dict[str, float] | None = None,
) -> dict[str, Any]:
    """The provider mask and client OBS redone with other settings on the SAME global and personalized
    models and data as ``run`` — for comparing settings side by side in one run. ``masks`` (and the
    masked model's ``masked_row``) reuse a mask instead of scoring again, e.g. to vary only the compensation.

    Returns ``{"rows": {"personalized", "masked", "obs"}, "recovery", "masked_weight_fraction",
    "unlearning"}``.
    """
    if masks is None:
        masks, _ = provider_mask(
            unlearning,
            params_global=run.params_global,
            provider_example_loss=run.provider_example_loss,
            hidden_fn=make_hidden_fn(run.model, cls_only=unlearning.cls_only),
            forget=run.datasets["forget_train"],
            retain=run.datasets["retain_train"],
        )
    directions = provider_directions(
        unlearning,
        model=run.model,
        params_global=run.params_global,
        masks=masks,
        forget=run.datasets["forget_train"],
        retain=run.datasets["retain_train"],
    )
    params_obs, _ = client_unlearn(
        unlearning,
        params_personal=run.params_personal,
        masks=masks,
        client_example_loss=run.client_example_loss,
        personal_train=run.datasets["personal_train"],
        seed=run.settings["seed"],
        directions=directions,
    )
    rows = {
        "personalized": run.rows["personalized"],
        "masked": masked_row if masked_row is not None else run.evaluate(apply_mask(run.params_personal, masks)),
        "obs": run.evaluate(params_obs),
    }
    return {
        "rows": rows,
        "recovery": _recovery(rows, "personal_acc"),
        "masked_weight_fraction": sum(int(m.sum()) for m in masks.values()) / sum(m.size for m in masks.values()),
        "unlearning": dataclasses.asdict(unlearning),
    }


def unlearn_forget_aware(run: TaskRun, *, k: int = 8) -> dict[str, Any]:
    """``run``'s own mask, then forget-aware Group OBS: the client's compensation may not move any block
    along the top-``k`` principal directions of its layer's inputs on the provider's forget set
    (:mod:`jaxapex.forget_directions`, on the global model). Same result shape as :func:`unlearn_with`."""
    return unlearn_with(
        run, dataclasses.replace(run.unlearning, forget_directions=k), masks=run.masks, masked_row=run.rows["masked"]
    )


@dataclasses.dataclass(frozen=True)
class Recipe:
    """What differs between the tasks; :func:`run_recipe` does the rest (train → personalize → mask → OBS
    → evaluate → :class:`TaskRun`).

    ``datasets``: the splits as dicts of arrays, with at least ``global_train``, ``personal_train``,
    ``forget_train`` and ``retain_train``; ``client_classes``: the classes the client's loss is restricted
    to (None: all); ``make_evaluate(model) -> evaluate_row(params)``; ``task_settings(model,
    params_global)``: the recipe's own entries of ``TaskRun.settings``; ``describe``: how the logs name a
    split's size (``"natural digits"``, ``"windows"``). A pretrained recipe gives ``model`` and
    ``params_global`` (then there is no global training and ``datasets`` needs no ``global_train``).
    """

    name: str
    config: Any
    datasets: dict[str, dict[str, np.ndarray]]
    make_evaluate: Callable[[Any], Callable[[Params], dict[str, float]]]
    task_settings: Callable[[Any, Params], dict[str, Any]]
    client_classes: Sequence[int] | None = None
    describe: Mapping[str, str] = dataclasses.field(default_factory=dict)
    model_cache: Any = None  # a directory: trained global / personalized models kept per config and seed
    model: Any = None  # a ready model (e.g. a pretrained decoder); default: built from the config
    params_global: Params | None = None  # its pretrained parameters (then no global training)


def _model_cache_file(recipe: Recipe, seed: int):
    """Where the trained models of ``recipe`` for ``seed`` are cached: keyed by everything that shapes them
    (model, data and training configs, seed), never by the unlearning settings."""
    import hashlib
    import json
    from pathlib import Path as FilePath

    if recipe.model_cache is None:
        return None
    cfg = recipe.config
    key = {
        "task": recipe.name,
        "seed": seed,
        "model": dataclasses.asdict(cfg.model),
        "data": dataclasses.asdict(cfg.data) if hasattr(cfg, "data") else None,
        "global_train": dataclasses.asdict(cfg.global_train),
        "personalization": dataclasses.asdict(cfg.personalization),
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return FilePath(recipe.model_cache) / f"{recipe.name}-seed{seed}-{digest}.npz"


def _load_models(path) -> tuple[Params, Params] | None:
    from jaxapex.checkpoints import unflatten_params

    if path is None or not path.is_file():
        return None
    with np.load(path) as stored:
        trees = {
            role: unflatten_params({k.split("|", 1)[1]: stored[k] for k in stored.files if k.startswith(role + "|")})
            for role in ("global", "personal")
        }
    return tuple(jax.tree.map(jnp.asarray, trees[role]) for role in ("global", "personal"))


def _save_models(path, params_global: Params, params_personal: Params) -> None:
    import os

    from jaxapex.checkpoints import flatten_params

    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"global|{k}": v for k, v in flatten_params(params_global).items()}
    arrays |= {f"personal|{k}": v for k, v in flatten_params(params_personal).items()}
    tmp = path.with_name(f".{path.stem}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def run_recipe(
    recipe: Recipe, *, seed: int, quick: bool, log: Callable[[str], None], timings: dict[str, float]
) -> TaskRun:
    """The one recipe skeleton shared by every task (see :class:`Recipe`)."""
    cfg, un, data = recipe.config, recipe.config.unlearning, recipe.datasets
    model = build_model(cfg.model) if recipe.model is None else recipe.model
    provider_example_loss = example_loss_fn(model)
    client_example_loss = (
        provider_example_loss
        if recipe.client_classes is None
        else example_loss_fn(model, classes=recipe.client_classes)
    )

    def size(split: str) -> str:
        return f"{len(next(iter(data[split].values())))} {recipe.describe.get(split, 'examples')}"

    cache_file = _model_cache_file(recipe, seed)
    cached = _load_models(cache_file)
    if cached is not None:
        log(f"trained models read from the cache {cache_file}")
        params_global, params_personal = cached
    else:
        if recipe.params_global is not None:  # a pretrained model: only the client trains
            params_global = recipe.params_global
        else:
            log(f"global training: {cfg.global_train.steps} steps on {size('global_train')}")
            params_global, _ = _timed(
                timings,
                "global_train",
                fit,
                batch_loss_fn(model),
                init_params(model, seed),
                data["global_train"],
                cfg.global_train,
            )
        log(f"personalization: {cfg.personalization.train.steps} steps on {size('personal_train')}")
        params_personal, _ = _timed(
            timings,
            "personalize",
            personalize,
            batch_loss_fn(model, classes=recipe.client_classes),
            params_global,
            data["personal_train"],
            cfg.personalization,
        )
        _save_models(cache_file, params_global, params_personal)
    hidden_fn = make_hidden_fn(model, cls_only=un.cls_only)
    log(f"provider mask: {un.scorer} scorer on {un.target_layers}, fraction {un.mask_fraction}")
    masks, target_paths = _timed(
        timings,
        "mask",
        provider_mask,
        un,
        params_global=params_global,
        provider_example_loss=provider_example_loss,
        hidden_fn=hidden_fn,
        forget=data["forget_train"],
        retain=data["retain_train"],
    )
    params_masked = apply_mask(params_personal, masks)
    directions = provider_directions(
        un,
        model=model,
        params_global=params_global,
        masks=masks,
        forget=data["forget_train"],
        retain=data["retain_train"],
    )
    log(f"client OBS: B={un.block_size}, damp={un.damp}, forget directions k={un.forget_directions}")
    params_obs, obs_info = _timed(
        timings,
        "obs",
        client_unlearn,
        un,
        params_personal=params_personal,
        masks=masks,
        client_example_loss=client_example_loss,
        personal_train=data["personal_train"],
        seed=seed,
        directions=directions,
    )
    evaluate_row = recipe.make_evaluate(model)
    rows = _timed(timings, "evaluate", _run_rows, evaluate_row, (params_personal, params_masked, params_obs))
    return TaskRun(
        name=recipe.name,
        model=model,
        params_global=params_global,
        params_personal=params_personal,
        params_masked=params_masked,
        params_obs=params_obs,
        masks=masks,
        target_paths=target_paths,
        datasets=data,
        client_example_loss=client_example_loss,
        provider_example_loss=provider_example_loss,
        hidden_fn=hidden_fn,
        evaluate=evaluate_row,
        rows=rows,
        recovery=_recovery(rows, "personal_acc"),
        unlearning=un,
        settings={
            **_training_settings(cfg, seed=seed, quick=quick),
            **recipe.task_settings(model, params_global),
            "models_from_cache": cached is not None,
        },
        obs_info=obs_info,
        timings=timings,
        directions=directions,
    )


# ---------------------------------------------------------------------------------------------- vision


@dataclasses.dataclass(frozen=True, kw_only=True)
class VisionTaskConfig:
    model: ViTConfig
    forget_class: int = 3
    personal_classes: tuple[int, ...] = (0, 1, 2, 4, 5, 6, 7, 8, 9)
    global_train: TrainConfig
    personalization: PersonalizeConfig
    unlearning: UnlearningConfig


def vision_config(*, quick: bool = True, seed: int = 0) -> VisionTaskConfig:
    """Defaults of the vision recipe (``quick`` trains the global model for fewer steps).

    Unlearning: the poster's selective pruning — activation ratio on the class token, whole fc1 rows of
    the chosen neurons — with OBS blocks of two fc1 rows (B = 128), so the surviving neighbour neuron of a
    removed one can absorb part of its effect on the client's loss. It forgets without OBS undoing it, but
    recovers little, and on other seeds it hardly forgets: benchmarks/TABLES.md has the measurements.
    """
    return VisionTaskConfig(
        model=VIT_PRESETS["vit_tiny"],
        global_train=TrainConfig(
            steps=1000 if quick else 2000,
            batch_size=64,
            learning_rate=2e-3,
            weight_decay=1e-4,
            warmup_steps=50,
            seed=seed,
        ),
        personalization=PersonalizeConfig(
            train=TrainConfig(steps=100, batch_size=64, learning_rate=1e-3, warmup_steps=10, seed=seed + 1),
            layer_decay=0.8,
            freeze_blocks=1,
        ),
        unlearning=UnlearningConfig(
            scorer="activation",
            cls_only=True,
            neuron_side="in",
            mask_fraction=0.15,
            block_size=128,
            damp=1e-2,
        ),
    )


def run_vision_task(
    *,
    quick: bool = True,
    seed: int = 0,
    block_size: int | None = None,
    mask_fraction: float | None = None,
    scorer: str | None = None,
    config: VisionTaskConfig | None = None,
    log: Callable[[str], None] | None = None,
    **unlearning_overrides: Any,
) -> TaskRun:
    """Global ViT on natural digits → personalize on sketches → provider mask → masked → Group OBS.

    Metric rows (fractions in [0, 1]): ``forget_acc`` (every natural image of the forget class: the
    provider's forget set and the held-out ones, 10-way), ``forget_test_acc`` (the held-out ones only),
    ``personal_acc`` (sketch test images among the client's classes), ``test_acc`` (natural test images of
    the other classes, 10-way), ``mia_auc`` (loss-threshold attack, client's train vs test sketches) and
    ``forget_mia_auc`` (forget-class train vs test images: how well the forget set can still be told apart).
    """
    log = log or (lambda _msg: None)
    cfg = config or vision_config(quick=quick, seed=seed)
    cfg = _with_unlearning(
        cfg, dict(block_size=block_size, mask_fraction=mask_fraction, scorer=scorer), unlearning_overrides
    )
    timings: dict[str, float] = {}

    data = digits_task(seed=seed, forget_class=cfg.forget_class, personal_classes=cfg.personal_classes)
    client_classes = data.personal_classes
    batches = {f.name: getattr(data, f.name).as_batch() for f in dataclasses.fields(data) if f.type == "ImageSet"}
    forget_all = {k: np.concatenate([v, batches["forget_test"][k]]) for k, v in batches["forget_train"].items()}

    def make_evaluate(model) -> Callable[[Params], dict[str, float]]:
        def evaluate_row(params: Params) -> dict[str, float]:
            return {
                "forget_acc": evaluate.accuracy(model, params, forget_all),
                "forget_test_acc": evaluate.accuracy(model, params, batches["forget_test"]),
                "personal_acc": evaluate.accuracy(model, params, batches["personal_test"], classes=client_classes),
                "test_acc": evaluate.accuracy(model, params, batches["retain_test"]),
                "mia_auc": evaluate.mia_auc(
                    model, params, batches["personal_train"], batches["personal_test"], classes=client_classes
                ),
                "forget_mia_auc": evaluate.mia_auc(model, params, batches["forget_train"], batches["forget_test"]),
            }

        return evaluate_row

    def task_settings(model, params_global: Params) -> dict[str, Any]:
        return {
            "forget_class": cfg.forget_class,
            "personal_classes": list(client_classes),
            "sizes": data.sizes(),
            "n_eval": {"forget": len(forget_all["label"]), "personal": len(data.personal_test)},
            "global_acc": {
                "forget": evaluate.accuracy(model, params_global, batches["forget_test"]),
                "test": evaluate.accuracy(model, params_global, batches["retain_test"]),
                "personal": evaluate.accuracy(model, params_global, batches["personal_test"], classes=client_classes),
            },
        }

    recipe = Recipe(
        name="vision",
        config=cfg,
        datasets=batches,
        make_evaluate=make_evaluate,
        task_settings=task_settings,
        client_classes=client_classes,
        describe={"global_train": "natural digits", "personal_train": "sketches"},
    )
    return run_recipe(recipe, seed=seed, quick=quick, log=log, timings=timings)


# ------------------------------------------------------------------------------------------ characters


@dataclasses.dataclass(frozen=True, kw_only=True)
class CharactersTaskConfig:
    model: ViTConfig
    data: CharactersDataConfig = CharactersDataConfig()
    global_train: TrainConfig
    personalization: PersonalizeConfig
    unlearning: UnlearningConfig


def characters_config(*, quick: bool = True, seed: int = 0) -> CharactersTaskConfig:
    """Defaults of the real-data vision recipe (``quick`` trains the global model for fewer steps).

    Mask: the second-order importance difference ``I_forget − 5·I_retain`` (``I = λ_H F w² − g w``, λ_H =
    0.448), global top 2 % of the fc1 weights — the published ratio rule at 4 % hardly forgets here
    (benchmarks/TABLES.md). Compensation: Group OBS with one fc1 row per block (B = 64, the layer's input
    width) from 40 of the client's gradients (fc1 inputs wider than the Fisher's examples, as ViT-B's 768
    against 480), damp 1e-6.
    """
    return CharactersTaskConfig(
        model=VIT_PRESETS["vit_chars"],
        global_train=TrainConfig(
            steps=1000 if quick else 3000,
            batch_size=128,
            learning_rate=2e-3,
            weight_decay=1e-4,
            warmup_steps=60,
            seed=seed,
        ),
        personalization=PersonalizeConfig(
            train=TrainConfig(steps=150, batch_size=64, learning_rate=1e-3, warmup_steps=10, seed=seed + 1),
            layer_decay=0.8,
            freeze_blocks=1,
        ),
        unlearning=UnlearningConfig(
            scorer="second-order",
            score_combine="difference",
            target_layers=("fc1",),
            mask_fraction=0.02,
            lambda_h=0.448,
            c_ret=5.0,
            score_damp=1e-8,
            score_examples=2000,
            block_size=64,
            damp=1e-6,
            fisher_examples=40,
            batch_size=64,
        ),
    )


def characters_smoke_config(*, seed: int = 0) -> CharactersTaskConfig:
    """The characters recipe shrunk to run every step in seconds — for tests and smoke runs (the notebook's
    and the demo's tiny modes), never for figures: a 2-block dim-32 ViT (fc1 W (64, 32), so the recipe's
    B = 64 spans two rows), 300 MNIST + 8 printed renderings per capital, 2 handwriting renderings per
    client class for training and 2 for testing, 30 global and 5 personalization steps; the recipe's mask
    rule at 5 % of fc1 from 64 scorer gradients, OBS from 24 client gradients."""
    base = characters_config(quick=True, seed=seed)
    return dataclasses.replace(
        base,
        model=ViTConfig(image_size=28, patch_size=7, channels=1, dim=32, depth=2, heads=2, mlp_dim=64, num_classes=29),
        data=CharactersDataConfig(
            printed_train_per_class=8,
            printed_test_per_class=2,
            personal_train_per_class=2,
            personal_test_per_class=2,
            mnist_train=300,
            mnist_test=60,
        ),
        global_train=TrainConfig(steps=30, batch_size=32, learning_rate=2e-3, seed=seed),
        personalization=PersonalizeConfig(
            train=TrainConfig(steps=5, batch_size=16, learning_rate=1e-3, seed=seed + 1),
            layer_decay=0.8,
            freeze_blocks=1,
        ),
        unlearning=dataclasses.replace(base.unlearning, mask_fraction=0.05, score_examples=64, fisher_examples=24),
    )


def run_characters_task(
    *,
    quick: bool = True,
    seed: int = 0,
    block_size: int | None = None,
    mask_fraction: float | None = None,
    scorer: str | None = None,
    config: CharactersTaskConfig | None = None,
    log: Callable[[str], None] | None = None,
    cache_dir: Any = "runs/cache/characters",
    eval_cap: int = 3000,
    **unlearning_overrides: Any,
) -> TaskRun:
    """Global ViT on MNIST digits + printed capitals → personalize on handwriting-font renderings of the
    client's classes → provider mask for the forget class(es) → masked → Group OBS.

    Metric rows (fractions): ``forget_acc`` (held-out global-domain images of the forget classes, all-class
    argmax: for the default, MNIST's 1,010 test 3s), ``personal_acc`` (handwriting test renderings among the
    client's classes), ``test_acc`` (``eval_cap`` held-out global-domain images of the other classes) and the
    membership-inference AUCs as in :func:`run_vision_task` (the forget one on as many of the provider's
    forget images as there are held-out ones). The global model's accuracy on the whole global test set is
    in ``settings["global_acc"]``.

    ``cache_dir`` keeps the renderings and the trained global / personalized models (keyed by config and
    seed) so that benchmarks varying only the unlearning settings do not retrain; None disables it.
    """
    log = log or (lambda _msg: None)
    cfg = config or characters_config(quick=quick, seed=seed)
    cfg = _with_unlearning(
        cfg, dict(block_size=block_size, mask_fraction=mask_fraction, scorer=scorer), unlearning_overrides
    )
    timings: dict[str, float] = {}
    data = _timed(timings, "data", characters_task, cfg.data, seed=seed, cache_dir=cache_dir)
    client_classes = data.personal_classes
    batches = {f.name: getattr(data, f.name).as_batch() for f in dataclasses.fields(data) if f.type == "ImageSet"}

    # Every row is evaluated on the same seeded subsets: the retain test set is cut to ``eval_cap`` images,
    # the provider's forget set (members, for the membership-inference AUC) to as many as the held-out
    # forget images; the forget test set and the client's test set are used whole.
    retain_eval = take(batches["retain_test"], eval_cap, seed=seed)
    forget_members = take(batches["forget_train"], len(data.forget_test), seed=seed)

    def make_evaluate(model) -> Callable[[Params], dict[str, float]]:
        def evaluate_row(params: Params) -> dict[str, float]:
            return {
                "forget_acc": evaluate.accuracy(model, params, batches["forget_test"]),
                "personal_acc": evaluate.accuracy(model, params, batches["personal_test"], classes=client_classes),
                "test_acc": evaluate.accuracy(model, params, retain_eval),
                "mia_auc": evaluate.mia_auc(
                    model, params, batches["personal_train"], batches["personal_test"], classes=client_classes
                ),
                "forget_mia_auc": evaluate.mia_auc(model, params, forget_members, batches["forget_test"]),
            }

        return evaluate_row

    def task_settings(model, params_global: Params) -> dict[str, Any]:
        return {
            "forget_classes": [CLASS_NAMES[c] for c in data.forget_classes],
            "forget_class": "+".join(CLASS_NAMES[c] for c in data.forget_classes),
            "personal_classes": "".join(CLASS_NAMES[c] for c in client_classes),
            "classes": len(CLASS_NAMES),
            "sizes": data.sizes(),
            "n_eval": {"forget": len(data.forget_test), "personal": len(data.personal_test)},
            "data": dataclasses.asdict(cfg.data),
            "global_acc": {
                "forget": evaluate.accuracy(model, params_global, batches["forget_test"]),
                "global": evaluate.accuracy(model, params_global, batches["global_test"]),
                "personal": evaluate.accuracy(model, params_global, batches["personal_test"], classes=client_classes),
            },
        }

    recipe = Recipe(
        name="characters",
        config=cfg,
        datasets=batches,
        make_evaluate=make_evaluate,
        task_settings=task_settings,
        client_classes=client_classes,
        describe={"global_train": "MNIST digits + printed capitals", "personal_train": "handwriting renderings"},
        model_cache=None if cache_dir is None else f"{cache_dir}/models",
    )
    return run_recipe(recipe, seed=seed, quick=quick, log=log, timings=timings)


# ------------------------------------------------------------------------------------------------ code


@dataclasses.dataclass(frozen=True, kw_only=True)
class CodeTaskConfig:
    """files_per_language: files drawn per language; the personal language's training files are split
    between the provider's global corpus (``global_share_of_personal``) and the client, disjointly."""

    model: OPTConfig
    files_per_language: tuple[tuple[str, int], ...] = (("python", 120), ("c", 160), ("perl", 120), ("shell", 60))
    forget_language: str = "perl"
    personal_language: str = "c"
    global_share_of_personal: float = 0.25
    window: int = 65
    max_windows_per_file: int = 8
    global_train: TrainConfig
    personalization: PersonalizeConfig
    unlearning: UnlearningConfig

    def __post_init__(self) -> None:
        languages = [lang for lang, _ in self.files_per_language]
        for field in ("forget_language", "personal_language"):
            if getattr(self, field) not in languages:
                raise ValueError(f"CodeTaskConfig.{field}={getattr(self, field)!r} is not among {languages}")
        if self.forget_language == self.personal_language:
            raise ValueError("the forget language and the personal language must differ")
        if not 0 <= self.global_share_of_personal < 1:
            raise ValueError(f"global_share_of_personal must be in [0, 1), got {self.global_share_of_personal}")


def code_config(*, quick: bool = True, seed: int = 0) -> CodeTaskConfig:
    from jaxapex.models import OPT_PRESETS

    return CodeTaskConfig(
        model=OPT_PRESETS["opt_tiny"],
        global_train=TrainConfig(
            steps=800 if quick else 3000,
            batch_size=32,
            learning_rate=3e-3,
            weight_decay=1e-4,
            warmup_steps=50,
            seed=seed,
        ),
        personalization=PersonalizeConfig(
            train=TrainConfig(steps=150, batch_size=32, learning_rate=1e-3, warmup_steps=10, seed=seed + 1),
            layer_decay=0.8,
            freeze_blocks=0,
        ),
        unlearning=UnlearningConfig(
            scorer="second-order",
            target_layers=("fc1", "fc2"),
            mask_fraction=0.1,
            lambda_h=0.5,
            c_ret=1.5,
            block_size=128,
            batch_size=32,
        ),
    )


@dataclasses.dataclass(frozen=True)
class CodeTaskData:
    """Token windows (dicts ``{"tokens": (n, T + 1)}``) of the code scenario."""

    global_train: dict[str, np.ndarray]
    forget_train: dict[str, np.ndarray]
    forget_test: dict[str, np.ndarray]
    retain_train: dict[str, np.ndarray]
    retain_test: dict[str, np.ndarray]
    personal_train: dict[str, np.ndarray]
    personal_test: dict[str, np.ndarray]
    files: dict[str, dict[str, tuple[str, ...]]]

    def sizes(self) -> dict[str, int]:
        return {f.name: len(getattr(self, f.name)["tokens"]) for f in dataclasses.fields(self) if f.name != "files"}


def code_task_data(cfg: CodeTaskConfig, *, seed: int) -> CodeTaskData:
    from jaxapex.data.code_corpus import build_code_corpus

    corpus = build_code_corpus(
        files_per_language=dict(cfg.files_per_language),
        window=cfg.window,
        max_windows_per_file=cfg.max_windows_per_file,
        seed=seed,
    )
    personal = corpus.splits[cfg.personal_language]["train"]
    n_global_files = int(round(cfg.global_share_of_personal * len(personal.files)))
    global_part = personal.by_files(np.arange(n_global_files))
    client_part = personal.by_files(np.arange(n_global_files, len(personal.files)))
    others = [lang for lang in corpus.languages if lang not in (cfg.forget_language, cfg.personal_language)]

    def stack(arrays: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        return {"tokens": np.concatenate([a for a in arrays if len(a)])}

    retain_train = [corpus.splits[lang]["train"].tokens for lang in others] + [global_part.tokens]
    forget_train = corpus.splits[cfg.forget_language]["train"].tokens
    return CodeTaskData(
        global_train=stack(retain_train + [forget_train]),
        forget_train=stack([forget_train]),
        forget_test=corpus.splits[cfg.forget_language]["test"].as_batch(),
        retain_train=stack(retain_train),
        retain_test=stack([corpus.splits[lang]["test"].tokens for lang in others]),
        personal_train=client_part.as_batch(),
        personal_test=corpus.splits[cfg.personal_language]["test"].as_batch(),
        files={lang: {part: s.files for part, s in parts.items()} for lang, parts in corpus.splits.items()},
    )


def run_code_task(
    *,
    quick: bool = True,
    seed: int = 0,
    block_size: int | None = None,
    mask_fraction: float | None = None,
    scorer: str | None = None,
    config: CodeTaskConfig | None = None,
    log: Callable[[str], None] | None = None,
    **unlearning_overrides: Any,
) -> TaskRun:
    """Global byte-level OPT on several languages → personalize on the client's files of one language →
    provider mask from the forget language → masked → Group OBS with the client's Fisher.

    Metric rows: ``forget_acc`` / ``personal_acc`` / ``test_acc`` are next-token top-1 accuracies on held-out
    files of the forget language, the personal language, and the other languages; ``*_ppl`` the matching
    perplexities; ``mia_auc`` (client train vs test windows) and ``forget_mia_auc`` (forget-language train
    vs test windows) are loss-threshold membership-inference AUCs.
    """
    log = log or (lambda _msg: None)
    cfg = config or code_config(quick=quick, seed=seed)
    cfg = _with_unlearning(
        cfg, dict(block_size=block_size, mask_fraction=mask_fraction, scorer=scorer), unlearning_overrides
    )
    timings: dict[str, float] = {}

    data = _timed(timings, "data", code_task_data, cfg, seed=seed)

    def make_evaluate(model) -> Callable[[Params], dict[str, float]]:
        def evaluate_row(params: Params) -> dict[str, float]:
            forget = evaluate.lm_metrics(model, params, data.forget_test)
            personal = evaluate.lm_metrics(model, params, data.personal_test)
            test = evaluate.lm_metrics(model, params, data.retain_test)
            return {
                "forget_acc": forget["accuracy"],
                "personal_acc": personal["accuracy"],
                "test_acc": test["accuracy"],
                "forget_ppl": forget["perplexity"],
                "personal_ppl": personal["perplexity"],
                "test_ppl": test["perplexity"],
                "mia_auc": evaluate.mia_auc(model, params, data.personal_train, data.personal_test),
                "forget_mia_auc": evaluate.mia_auc(model, params, data.forget_train, data.forget_test),
            }

        return evaluate_row

    def task_settings(model, params_global: Params) -> dict[str, Any]:
        global_forget = evaluate.lm_metrics(model, params_global, data.forget_test)
        global_personal = evaluate.lm_metrics(model, params_global, data.personal_test)
        return {
            "forget_language": cfg.forget_language,
            "personal_language": cfg.personal_language,
            "files_per_language": dict(cfg.files_per_language),
            "window": cfg.window,
            "sizes": data.sizes(),
            "global_acc": {"forget": global_forget["accuracy"], "personal": global_personal["accuracy"]},
        }

    recipe = Recipe(
        name="code",
        config=cfg,
        datasets={f.name: getattr(data, f.name) for f in dataclasses.fields(data) if f.name != "files"},
        make_evaluate=make_evaluate,
        task_settings=task_settings,
        describe={"global_train": "windows", "personal_train": "windows"},
    )
    return run_recipe(recipe, seed=seed, quick=quick, log=log, timings=timings)
