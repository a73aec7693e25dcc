"""Every unlearning method side by side on the vision and code tasks, with the cost of proving each.

    python -m benchmarks.baselines [--quick] [--tasks characters,code] [--json PATH]

Tasks: ``characters`` (the real-data vision task, the default: forget the digit 3 of a ViT trained on MNIST
+ printed capitals and personalized on handwriting fonts), ``code`` (byte-level OPT, forget Perl) and
``vision`` (the 8×8 digits, kept as the fast fixture).

One recipe run per task (:mod:`jaxapex.tasks`: global model → personalization → provider mask) gives the
personalized model that every method then unlearns, reading only what its paper allows
(:mod:`jaxapex.baselines`). Per method: ``forget_acc`` (forget-class / forget-language test data),
``personal_acc`` (the client's test data), ``test_acc`` (the other classes / languages), ``mia`` (AUC of a
loss-threshold membership attack telling forget-set training examples from unseen ones of the same class or
language: 0.5 = nothing left to detect), ``wall_s`` (the method alone, compilation included) and
``proof_rows`` (:mod:`jaxapex.baselines.proof_cost`: *measured* for the chunk circuits of ZK-APEX and the naive
mask, a *lower bound* for every method that trains). ``rows_vs_obs`` is each method's proof rows over
ZK-APEX's. The ``personalized`` line is the model before unlearning, for reference.

The recipe run already produced and evaluated the personalized, masked and OBS models; rows whose model is
bit-identical to one of those reuse the recipe's metrics. With ``--quick`` the ZK-APEX row *is* the recipe's
OBS run (same call, same inputs) with its measured time; without it, ZK-APEX runs again through
:mod:`jaxapex.baselines.zk_apex` and the JSON records its largest difference from the recipe's (0 expected).
A table at the paper's scale (ViT-B/16) follows, computed from shapes alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from benchmarks.report import add_json_option, write_json
from jaxapex import tasks
from jaxapex.baselines import (
    METHODS,
    CertifiedConfig,
    GradientAscentConfig,
    NaiveMaskConfig,
    RetrainConfig,
    ZkApexConfig,
    ZsPagConfig,
    as_inputs,
    proof_cost,
    zk_apex,
)
from jaxapex.baselines.common import UnlearningInputs, config_dict

METHOD_ORDER = ("zk_apex_obs", "naive_mask", "retrain", "gradient_ascent", "certified", "zs_pag")
LANES = 16
CHUNK_WEIGHTS = 1024  # weights per proven chunk (the protocol default: 64 blocks of 16)


def proof_layout(block_size: int) -> dict[str, int]:
    return dict(
        block_size=block_size, lanes=min(LANES, block_size), blocks_per_chunk=max(1, CHUNK_WEIGHTS // block_size)
    )


#: task name -> (recipe runner, its config factory)
TASKS: dict[str, tuple[Callable[..., Any], Callable[..., Any]]] = {
    "characters": (tasks.run_characters_task, tasks.characters_config),
    "vision": (tasks.run_vision_task, tasks.vision_config),
    "code": (tasks.run_code_task, tasks.code_config),
}
IMAGE_TASKS = ("characters", "vision")


def method_configs(kind: str, run: Any, recipe: Any, *, quick: bool) -> dict[str, Any]:
    """The hyper-parameters of every method on one task (the recipe's own for ZK-APEX and retraining).

    Retraining repeats the task's global training and personalization from scratch without the forget set
    (with ``--quick``, the quick recipe's shorter global training). Image tasks share the other methods'
    settings: 28×28 and 8×8 images in [0, 1], one forget class."""
    un = run.unlearning
    image = kind in IMAGE_TASKS
    layout = proof_layout(un.block_size)
    global_steps = recipe.global_train.steps
    configs = {
        "zk_apex_obs": ZkApexConfig(
            block_size=un.block_size,
            damp=un.damp,
            fisher_examples=un.fisher_examples,
            seed=run.settings["seed"],
            batch_size=un.batch_size,
            level="F",
            lanes=layout["lanes"],
            blocks_per_chunk=layout["blocks_per_chunk"],
        ),
        "naive_mask": NaiveMaskConfig(**layout),
        "retrain": RetrainConfig(
            global_train=recipe.global_train, personalize=recipe.personalization, init_seed=run.settings["seed"]
        ),
        "gradient_ascent": GradientAscentConfig(
            steps=30 if quick else 60,
            learning_rate=1e-4,
            forget_batch_size=32,
            retain_batch_size=64,
            retain_source="personal",
        ),
        # the authors' MNIST noisy phase, then noiseless fine-tuning on all retained data for a share of the
        # global training's steps: half of them, or with --quick a quarter (images) or an eighth (code)
        "certified": CertifiedConfig(
            epsilon=1.0,
            delta=1e-5,
            retain_source="retain",
            batch_size=128,
            finetune_steps=max(1, global_steps // (2 if not quick else 4 if image else 8)),
            finetune_batch_size=32 if quick else 64,
        ),
        "zs_pag": ZsPagConfig(
            # characters: the union of 28 target classes' subspaces at 0.9 fills every 64-wide layer input, so
            # nothing could move (measured: the model came back unchanged); 0.7 leaves room in the head
            energy_threshold=0.7 if kind == "characters" else 0.9,
            attack_epsilon=0.3 if image else 0.5,
            attack_steps=10 if image or not quick else 5,
            max_proxies=2048 if image else (256 if quick else 1024),
            label_candidates=None if image else 8,
            steps=60 if quick else 120,
            learning_rate=0.01,
            batch_size=32,
        ),
    }
    return configs


def _recipe(kind: str, run: Any, *, quick: bool, seed: int, config: Any = None) -> Any:
    """The task's training recipe (``config``, or the task's default), checked against what the run reports
    it used."""
    recipe = config if config is not None else TASKS[kind][1](quick=quick, seed=seed)
    settings = run.settings
    used = (settings.get("global_steps"), settings.get("personal_steps"))
    expected = (recipe.global_train.steps, recipe.personalization.train.steps)
    if used != expected:
        raise RuntimeError(f"{kind} run trained with (global, personal) steps {used}, its recipe says {expected}")
    return recipe


def _row(metrics: dict[str, float]) -> dict[str, float]:
    return {
        "forget_acc": float(metrics["forget_acc"]),
        "personal_acc": float(metrics["personal_acc"]),
        "test_acc": float(metrics["test_acc"]),
        "mia": float(metrics["forget_mia_auc"]),
        "mia_personal": float(metrics["mia_auc"]),
    }


def _max_abs_diff(a: Any, b: Any) -> float:
    import jax

    return float(
        max(
            np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)))
            for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
        )
    )


def _json_info(info: dict) -> dict:
    """The JSON-ready part of a method's info (no arrays, no work tuples)."""
    skip = {"work", "bases", "layers", "config"}
    out = {}
    for key, value in info.items():
        if key in skip:
            continue
        if isinstance(value, (np.floating, np.integer)):
            value = value.item()
        if isinstance(value, (int, float, str, bool, list, dict)) or value is None:
            out[key] = value
    return out


def check_methods(methods: Sequence[str]) -> tuple[str, ...]:
    """``methods`` in table order; ValueError naming unknown ones, or a selection without ZK-APEX (every
    proof cost is reported relative to it)."""
    unknown = sorted(set(methods) - set(METHOD_ORDER))
    if unknown or "zk_apex_obs" not in methods:
        raise ValueError(
            f"methods must include zk_apex_obs and come from {', '.join(METHOD_ORDER)}; got {', '.join(methods)}"
        )
    return tuple(name for name in METHOD_ORDER if name in methods)


def run_task(
    kind: str,
    *,
    quick: bool,
    seed: int,
    log: Callable[[str], None],
    config: Any = None,
    methods: Sequence[str] = METHOD_ORDER,
) -> dict:
    """``methods`` (default all) on one task; ``config`` replaces the task's recipe (tests pass a tiny one)."""
    if kind not in TASKS:
        raise ValueError(f"unknown task {kind!r}; known: {', '.join(TASKS)}")
    methods = check_methods(methods)
    runner = TASKS[kind][0]
    start = time.perf_counter()
    run = runner(quick=quick, seed=seed, log=log, config=config)
    recipe_s = time.perf_counter() - start
    recipe = _recipe(kind, run, quick=quick, seed=seed, config=config)
    inputs: UnlearningInputs = as_inputs(run)
    configs = method_configs(kind, run, recipe, quick=quick)
    layout = proof_layout(run.unlearning.block_size)
    cost_model = proof_cost.cost_model_from_obs_circuit(**layout)
    example = {k: v[:1] for k, v in inputs.forget.items()}
    coster = proof_cost.StepCoster(inputs.batch_loss, inputs.params, example, range_limbs=cost_model.range_limbs)

    # The recipe already evaluated the personalized, masked and OBS models; a method whose output is
    # bit-identical to one of them reuses that row instead of evaluating again.
    rows = {"personalized": {**_row(run.rows["personalized"]), "wall_s": None, "proof_rows": None}}
    recipe_outputs = {"naive_mask": ("masked", run.params_masked), "zk_apex_obs": ("obs", run.params_obs)}
    details = {}
    for name in methods:
        log(f"[{kind}] {name} ...")
        detail: dict[str, Any] = {"config": config_dict(configs[name])}
        if name == "zk_apex_obs" and quick:
            # --quick reuses the recipe's own OBS run (the same call on the same inputs; the full run repeats
            # it and records the difference, 0 when deterministic) and its measured time
            params = run.params_obs
            info = {
                "method": name,
                "wall_s": float(run.timings["obs"]),
                "work": zk_apex.proof_work(inputs.params, inputs.masks, configs[name]),
            }
            detail["from_recipe"] = True
        else:
            params, info = METHODS[name](inputs, config=configs[name])
        metrics = None
        if name in recipe_outputs:
            row_name, reference = recipe_outputs[name]
            difference = _max_abs_diff(params, reference)
            detail[f"max_abs_diff_vs_recipe_{row_name}"] = difference
            metrics = run.rows[row_name] if difference == 0.0 else None
        cost = proof_cost.proof_cost(info["work"], cost_model=cost_model, coster=coster)
        rows[name] = {
            **_row(metrics or run.evaluate(params)),
            "wall_s": round(info["wall_s"], 3),
            "proof_rows": cost.rows,
            "proof_cells": cost.cells,
            "proof_measured": cost.measured,
        }
        detail.update(info=_json_info(info), proof_phases={phase: p._asdict() for phase, p in cost.phases.items()})
        details[name] = detail
        log(f"[{kind}] {name}: {rows[name]}")
    obs_rows = rows["zk_apex_obs"]["proof_rows"]
    for name in methods:
        rows[name]["rows_vs_obs"] = rows[name]["proof_rows"] / obs_rows
    return {
        "rows": rows,
        "methods": details,
        "recipe_wall_s": round(recipe_s, 3),
        "recipe_rows": run.rows,
        "settings": run.settings,
        "mask": {
            "fraction": run.unlearning.mask_fraction,
            "block_size": run.unlearning.block_size,
            "masked_weights": int(sum(int(m.sum()) for m in run.masks.values())),
        },
        "proof_layout": layout,
        "cost_model": dataclasses.asdict(cost_model),
    }


# ------------------------------------------------------------------------------------- paper scale

IMAGENET_TRAIN = 1_281_167


def scale_estimate() -> dict:
    """Proof rows at the paper's scale (ViT-B/16, fc1 of its 12 blocks), from shapes alone (nothing runs).

    ZK-APEX: the measured chunk circuits (protocol layout: B = 16, 16 lanes, 64 blocks per chunk, level F).
    Retraining-based checks, as lower bounds from the same cost model: re-personalization alone (480 images,
    10 epochs, batch 32, Adam: the client's part) and the global retraining that must precede it
    (ImageNet-1k, 300 epochs, batch 1024, AdamW: the DeiT-B recipe).
    """
    import jax
    import jax.numpy as jnp

    from jaxapex.baselines.common import ChunkCircuitWork, StepWork
    from jaxapex.models import batch_loss_fn, build_model

    model = build_model("vit_b16")
    params = {"params": jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), model.dummy_input()))["params"]}
    example = {
        "image": jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32),
        "label": jax.ShapeDtypeStruct((1,), jnp.int32),
    }
    layout = proof_layout(16)
    cost_model = proof_cost.cost_model_from_obs_circuit(**layout)
    coster = proof_cost.StepCoster(batch_loss_fn(model), params, example, range_limbs=cost_model.range_limbs)
    fc1 = ((model.config.mlp_dim, model.config.dim),) * model.config.depth
    personal_steps = math.ceil(480 * 10 / 32)
    global_steps = math.ceil(IMAGENET_TRAIN * 300 / 1024)
    workloads = {
        "zk_apex_obs (ViT-B fc1, level F)": [ChunkCircuitWork("obs", "F", fc1, **layout)],
        "naive_mask (ViT-B fc1, level R)": [ChunkCircuitWork("removal", "R", fc1, **layout)],
        "retrain: re-personalize (480 img x 10 ep)": [StepWork("personalize", "train", personal_steps, 32, "adam")],
        "retrain: global (ImageNet x 300 ep) + re-personalize": [
            StepWork("global_train", "train", global_steps, 1024, "adam"),
            StepWork("personalize", "train", personal_steps, 32, "adam"),
        ],
    }
    rows = {name: proof_cost.proof_cost(work, cost_model=cost_model, coster=coster) for name, work in workloads.items()}
    obs = rows["zk_apex_obs (ViT-B fc1, level F)"].rows
    return {
        "forward_macs_per_image": coster.counts("forward", 1).macs,
        "proof_layout": layout,
        "rows": {
            name: {"proof_rows": c.rows, "proof_cells": c.cells, "rows_vs_obs": c.rows / obs, "measured": c.measured}
            for name, c in rows.items()
        },
    }


def format_scale(result: dict) -> str:
    header = ["workload (paper scale)", "proof_rows", "rows_vs_obs"]
    lines = [
        [name, _fmt(r["proof_rows"], "rows"), _fmt(r["rows_vs_obs"], "ratio")] for name, r in result["rows"].items()
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines)]
    render = lambda cells: "  ".join(
        str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(cells, widths))
    )
    rule = "-" * len(render(header))
    title = f"ViT-B/16 ({result['forward_macs_per_image'] / 1e9:.1f} GMAC per image forward)"
    return "\n".join([title, rule, render(header), rule, *map(render, lines), rule])


def _fmt(value: Any, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "acc":
        return f"{value:.3f}"
    if kind == "s":
        return f"{value:.1f}"
    if kind == "rows":
        return f"{value:.3g}" if value >= 1e6 else f"{int(value):,}"
    if kind == "ratio":
        return f"{value:.3g}x"
    return str(value)


def format_table(kind: str, result: dict) -> str:
    columns = [
        ("forget_acc", "acc"),
        ("personal_acc", "acc"),
        ("test_acc", "acc"),
        ("mia", "acc"),
        ("wall_s", "s"),
        ("proof_rows", "rows"),
        ("rows_vs_obs", "ratio"),
    ]
    header = ["method"] + [c for c, _ in columns]
    lines = [[name] + [_fmt(row.get(c), k) for c, k in columns] for name, row in result["rows"].items()]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines)]
    render = lambda cells: "  ".join(
        str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(cells, widths))
    )
    rule = "-" * len(render(header))
    mask = result["mask"]
    title = (
        f"{kind}: mask {mask['masked_weights']} weights (fraction {mask['fraction']}), B={mask['block_size']}, "
        f"proof chunks of {result['proof_layout']['blocks_per_chunk']} blocks"
    )
    return "\n".join([title, rule, render(header), rule, *map(render, lines), rule])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.baselines", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the quick recipes (short training)")
    parser.add_argument(
        "--tasks",
        default="characters,code",
        help=f"comma-separated, among {', '.join(TASKS)} (default characters,code)",
    )
    parser.add_argument(
        "--methods",
        default=",".join(METHOD_ORDER),
        help=f"comma-separated subset of {', '.join(METHOD_ORDER)} (zk_apex_obs always; default all)",
    )
    parser.add_argument("--seed", type=int, default=0)
    add_json_option(parser)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    kinds = [k.strip() for k in args.tasks.split(",") if k.strip()]
    unknown = sorted(set(kinds) - set(TASKS))
    if unknown or not kinds:
        parser.error(f"unknown tasks {unknown or 'none given'}; choose from {', '.join(TASKS)}")
    try:
        methods = check_methods([m.strip() for m in args.methods.split(",") if m.strip()])
    except ValueError as err:
        parser.error(f"--methods: {err}")
    log = (lambda msg: print(msg, file=sys.stderr, flush=True)) if args.verbose else (lambda _msg: None)
    start, cpu_start = time.perf_counter(), time.process_time()
    results = {}
    for kind in kinds:
        results[kind] = run_task(kind, quick=args.quick, seed=args.seed, log=log, methods=methods)
        print(format_table(kind, results[kind]), flush=True)
        print(flush=True)
    scale = scale_estimate()
    print(format_scale(scale), flush=True)
    total, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    print(f"\ntotal wall time {total:.0f} s, CPU time {cpu:.0f} s (all threads)")
    write_json(
        args.json,
        {
            "quick": args.quick,
            "seed": args.seed,
            "total_wall_s": round(total, 1),
            "total_cpu_s": round(cpu, 1),
            **results,
            "scale": scale,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
