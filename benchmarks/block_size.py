"""Block-size study: what the Fisher block size B buys in personal-accuracy recovery, and what it costs to prove.

    python -m benchmarks.block_size [--quick] [--sizes 16,32,64,128,256,512,576] [--tasks characters,code]
                                    [--recipe-masks] [--override TASK.FIELD=VALUE ...]
                                    [--json PATH] [--plot PATH.png]

B is the only knob that moves both sides of the trade-off (DESIGN.md sections 3 and 4):

* **Recovery.** Group OBS repairs the damage of the mask inside each block of B weights with the client's
  blockwise Fisher: a larger block sees more correlations and has more free weights to absorb a removal.
  Each task (:mod:`jaxapex.tasks`) is trained **once** (global model → personalized model → provider mask;
  none of these depends on B); then, for every B, only the client's Fisher and OBS are recomputed
  (:func:`jaxapex.obs.unlearn`) and the OBS model is evaluated. ``recovery`` = (acc after OBS − acc after
  mask) / (acc personalized − acc after mask) on the client's test data (:func:`jaxapex.evaluate.recovery`);
  ``loss_recovery`` is the same ratio on the client's mean test loss (continuous, so it still resolves
  differences when the mask costs only a few test examples); ``forget_acc`` is the forget-set accuracy after
  OBS (the compensation must not bring the forgotten behaviour back).
* **Proof cost.** The level-F chunk circuit (:mod:`circuit_compiler.lowering`) binds the whole B x B inverse
  Fisher of every block, so its width grows with B. Per B: a chunk sized to fill a 2^16 domain (or, when one
  block needs more, the smallest 2^k with k <= 18), its compiled ``cs.statistics()``: ``cells_per_weight``
  (cells / weights covered), ``rows_per_weight``, ``domain_cells_per_weight`` (2^k x columns / weights: what
  the prover's FFTs and commitments actually pay for), and the chunks the ViT-B fc1 workload (12 x 3072 x 768)
  needs. ``f_over_r`` is the cost over the removal-only level R circuit at the same B (the reference measured
  in the same run).

Per-example gradients of the target matrices do not depend on B, so they are computed once per task
(:func:`fisher_gradients`) and handed to :func:`jaxapex.precomputed.unlearn_from_statistics` at every B: the
Fisher blocks, their inverses and the OBS update are the library's, on exactly the examples
:func:`jaxapex.tasks.client_unlearn` uses (the tests check the two agree). The JSON's
``tasks.*.reference`` compares this study at the recipe's own B with the recipe's own OBS row.

Tasks: ``characters`` (the real-data vision task: MNIST + printed capitals, personalized on handwriting
fonts; the default vision task), ``code`` (byte-level OPT), and ``vision`` (the 8×8 digits, kept as the fast
fixture). Masks: each recipe's own settings, except where :data:`STUDY_OVERRIDES` says otherwise (the 8×8
recipe's whole-neuron mask leaves nothing for OBS to do at B <= fan-in; ``--recipe-masks`` restores it,
``--override`` sets any unlearning field of a recipe).

Blocks larger than a row. A block is B consecutive entries of the row-major flattened W (out, in)
(:func:`jaxapex.layers.to_blocks`, the same cut :mod:`jaxapex.obs` and the circuits use), so B may exceed
the fan-in: on the characters model (fc1 W (256, 64)) B = 128 is two neurons' incoming rows, B = 512 eight.
B must divide out·in (16,384 there), so B = 576 = 9 rows is skipped for that task, and 512 is measured in
its place; a skipped B is skipped for that task only (the row says which layer). The recommended B
(:func:`recommend_block_size`) is the cheapest one whose mean recovery over the tasks is within
``tolerance`` of the best measured.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.report import add_json_option, write_json
from circuit_compiler.fixedpoint import FieldOverflowError, FixedPointSpec, spec_for_block_size
from circuit_compiler.lowering import blocks_to_fill, build_chunk_circuit, chunk_shape_key
from jaxapex import evaluate, tasks
from jaxapex.data import as_batches, take
from jaxapex.layers import check_block_size, example_matrix_gradients, get_matrix, path_name, to_blocks
from jaxapex.parallel import pad_batch
from jaxapex.precomputed import unlearn_from_statistics

DEFAULT_SIZES = (16, 32, 64, 128, 256, 512, 576)
TASK_NAMES = ("characters", "vision", "code")  # every task the study can run
DEFAULT_TASKS = ("characters", "code")  # the real-data vision task and the code task
#: ViT-B/16 fc1: 12 layers of W (out, in) = (3072, 768) -- the paper's proof workload.
VITB_FC1 = (12, 3072, 768)
PROOF_K = 16  # chunks are sized to fill a 2^16 domain ...
PROOF_MAX_K = 18  # ... or the smallest larger one, up to 2^18, when one block does not fit
RECOVERY_TOLERANCE = 0.05
#: The study's mask settings on top of each recipe's (``--recipe-masks`` drops them). The vision recipe masks
#: whole fc1 neurons, i.e. whole rows of W (out, in = 64): every block of B <= 64 that holds a masked weight
#: is then masked entirely and OBS has nothing left to move, so recovery is 0 by construction whatever the
#: Fisher. Masking the 32 largest incoming weights of 30 % of the neurons instead lets B decide, and costs
#: the client enough test predictions for recovery to be measurable.
STUDY_OVERRIDES: dict[str, dict[str, Any]] = {
    "characters": {},
    "vision": {"scorer": "activation", "mask_fraction": 0.3, "weights_per_neuron": 32},
    "code": {},
}
GRADIENT_MEMORY_BUDGET = 4 << 30  # bytes of stored per-example gradients per task

TargetPath = tuple[str, ...]
Params = dict


# ------------------------------------------------------------------------------------------ proof cost


def proof_cost(
    block_size: int,
    *,
    level: str = "F",
    k: int = PROOF_K,
    max_k: int = PROOF_MAX_K,
    spec: FixedPointSpec | None = None,
    workload: tuple[int, int, int] = VITB_FC1,
) -> dict[str, Any]:
    """Rows and cells per model weight of the level-``level`` chunk circuit for blocks of ``block_size``.

    The chunk holds as many blocks as fill a 2^k domain (:func:`circuit_compiler.lowering.blocks_to_fill`);
    when a single block needs more, the smallest k' in (k, max_k] that holds one. ``spec`` defaults to the
    default fixed-point spec with the rescale shift raised to what B needs. At level F the compact layout
    (lanes L = B) is used. ``workload`` = (layers, out, in): the chunks that cover it (``None`` when B does
    not divide out·in). Raises ValueError when no k <= max_k holds one block.
    """
    spec = spec or spec_for_block_size(block_size)
    lanes = block_size if level == "F" else None
    reasons = []
    for domain_k in range(k, max_k + 1):
        try:
            blocks = blocks_to_fill(domain_k, block_size=block_size, level=level, spec=spec, lanes=lanes)
        except FieldOverflowError:
            raise
        except ValueError as err:  # one block needs a larger domain
            reasons.append(f"k={domain_k}: {err}")
            continue
        shape = chunk_shape_key(blocks=blocks, block_size=block_size, level=level, spec=spec, lanes=lanes)
        stats = build_chunk_circuit(shape).cs.statistics()
        columns = int(sum(stats["columns"].values()))
        weights = blocks * block_size
        layers, out_features, in_features = workload
        layer_weights = out_features * in_features
        chunks = layers * math.ceil(layer_weights // block_size / blocks) if layer_weights % block_size == 0 else None
        return {
            "level": level,
            "k": int(stats["k"]),
            "lanes": lanes,
            "spec_s": spec.s,
            "blocks_per_chunk": blocks,
            "weights_per_chunk": weights,
            "rows": int(stats["rows"]),
            "columns": columns,
            "cells": int(stats["cells"]),
            "rows_per_weight": stats["rows"] / weights,
            "cells_per_weight": stats["cells"] / weights,
            "domain_cells_per_weight": (1 << int(stats["k"])) * columns / weights,
            "workload_chunks": chunks,
            "workload_cells": None if chunks is None else chunks * int(stats["cells"]),
        }
    raise ValueError(f"no level-{level} chunk of B={block_size} fits a 2^{max_k} domain: {'; '.join(reasons)}")


# ----------------------------------------------------------------------------------- Fisher gradients


@dataclasses.dataclass(frozen=True)
class FisherGradients:
    """Per-example gradients of the client loss w.r.t. every target matrix, on the client's Fisher examples.

    ``grads[i]`` is (m, out, in) float32 for ``paths[i]`` (matrix orientation ``W = kernel.T``); ``batch_size``
    is the batching the recipe's own OBS uses.
    """

    paths: tuple[TargetPath, ...]
    grads: tuple[np.ndarray, ...]
    batch_size: int

    @property
    def n_examples(self) -> int:
        return int(self.grads[0].shape[0])

    def by_path(self) -> dict[TargetPath, np.ndarray]:
        """The gradients as :func:`jaxapex.precomputed.unlearn_from_statistics` takes them."""
        return dict(zip(self.paths, self.grads))


def fisher_examples(run: tasks.TaskRun) -> dict[str, np.ndarray]:
    """The client examples the recipe's OBS uses (same subset, same seed as :func:`tasks.client_unlearn`)."""
    if "personal_train" not in run.datasets:
        raise KeyError(f"task {run.name!r} has no 'personal_train' dataset (has {sorted(run.datasets)})")
    return take(run.datasets["personal_train"], run.unlearning.fisher_examples, seed=run.settings["seed"])


def fisher_gradients(
    run: tasks.TaskRun, *, chunk: int = 64, memory_budget_bytes: int = GRADIENT_MEMORY_BUDGET
) -> FisherGradients:
    """Per-example gradients of ``run.client_example_loss`` at the personalized model w.r.t. the masked
    target matrices, on :func:`fisher_examples`, computed ``chunk`` examples at a time (one compilation)."""
    data = fisher_examples(run)
    paths = tuple(tuple(p) for p in run.masks)
    m = len(next(iter(data.values())))
    weights = sum(int(np.prod(get_matrix(run.params_personal, p).shape)) for p in paths)
    if m * weights * 4 > memory_budget_bytes:
        raise MemoryError(
            f"task {run.name!r}: storing {m} per-example gradients of {weights} target weights needs "
            f"{m * weights * 4 / 2**30:.1f} GiB > budget {memory_budget_bytes / 2**30:.1f} GiB; "
            "limit the Fisher examples (--override TASK.fisher_examples=N)"
        )

    @jax.jit
    def grads_of(params, batch):
        return example_matrix_gradients(run.client_example_loss, params, paths, batch)

    size = min(chunk, m)
    pieces: list[list[np.ndarray]] = [[] for _ in paths]
    for start in range(0, m, size):
        part = {key: value[start : start + size] for key, value in data.items()}
        real = len(next(iter(part.values())))
        padded, _ = pad_batch(part, size)  # one compiled shape; padded rows are dropped
        for i, g in enumerate(grads_of(run.params_personal, padded)):
            pieces[i].append(np.asarray(g[:real], np.float32))
    return FisherGradients(
        paths=paths, grads=tuple(np.concatenate(p) for p in pieces), batch_size=run.unlearning.batch_size
    )


def obs_at_block_size(run: tasks.TaskRun, block_size: int, *, gradients: FisherGradients) -> tuple[Params, dict]:
    """The personalized model after Group OBS with blocks of ``block_size`` (the recipe's mask, damp and
    Fisher examples): what :func:`tasks.client_unlearn` returns with ``block_size`` swapped in."""
    return unlearn_from_statistics(
        run.params_personal, run.masks, gradients=gradients.by_path(), block_size=block_size, damp=run.unlearning.damp
    )


# ------------------------------------------------------------------------------------------ the study


def divisibility_problem(run: tasks.TaskRun, block_size: int) -> str | None:
    """Why ``block_size`` cannot cut the task's target layers into blocks (naming the layer), or None."""
    for path in run.masks:
        try:
            check_block_size(get_matrix(run.params_personal, path).shape, block_size, path=path)
        except ValueError as err:
            return str(err)
    return None


def mask_block_statistics(masks: Mapping[TargetPath, np.ndarray], block_size: int) -> dict[str, float]:
    """Over all target layers: share of blocks the mask touches, and of those, the share it covers entirely
    (there OBS has no free weight left to compensate with)."""
    touched = full = total = 0
    for path, mask in masks.items():
        blocks = np.asarray(to_blocks(np.asarray(mask, bool), block_size, path=path))
        total += blocks.shape[0]
        touched += int(blocks.any(axis=1).sum())
        full += int(blocks.all(axis=1).sum())
    return {"touched_blocks": touched / total, "fully_masked_blocks": full / max(touched, 1)}


def prediction_count(data: Mapping[str, np.ndarray]) -> int:
    """How many predictions an accuracy over ``data`` averages: one per next-token position for a language
    model's windows (``tokens`` (n, T + 1)), else one per example."""
    if "tokens" in data:
        n, length = np.shape(data["tokens"])
        return int(n * (length - 1))
    return len(next(iter(data.values())))


def personal_loss_fn(run: tasks.TaskRun, *, batch_size: int = 256) -> Callable[[Params], float]:
    """Mean ``client_example_loss`` over the client's test data."""
    if "personal_test" not in run.datasets:
        raise KeyError(f"task {run.name!r} has no 'personal_test' dataset (has {sorted(run.datasets)})")
    losses = jax.jit(jax.vmap(run.client_example_loss, in_axes=(None, 0)))
    batches = as_batches(run.datasets["personal_test"], batch_size)

    def mean_loss(params: Params) -> float:
        total = sum(float(jnp.sum(losses(params, b))) for b in batches)
        return total / sum(len(next(iter(b.values()))) for b in batches)

    return mean_loss


def study_task(
    run: tasks.TaskRun, sizes: Sequence[int], *, log: Callable[[str], None] = lambda _msg: None
) -> dict[str, Any]:
    """Recovery and forget accuracy after OBS at every block size in ``sizes`` (one training, reused).

    Returns ``{"by_size": {B: {...} or {"skipped": reason}}, "personalized": row, "masked": row,
    "reference": {...}, ...}``.
    """
    personal_loss = personal_loss_fn(run)
    personalized, masked = run.rows["personalized"], run.rows["masked"]
    loss_personalized, loss_masked = personal_loss(run.params_personal), personal_loss(run.params_masked)
    start = time.perf_counter()
    gradients = fisher_gradients(run)
    gradient_s = time.perf_counter() - start
    log(
        f"{run.name}: {gradients.n_examples} per-example Fisher gradients of {len(gradients.paths)} target "
        f"matrices in {gradient_s:.1f} s"
    )

    by_size: dict[int, dict[str, Any]] = {}
    for block_size in sizes:
        problem = divisibility_problem(run, block_size)
        if problem is not None:
            log(f"{run.name}: B={block_size} skipped: {problem}")
            by_size[block_size] = {"skipped": problem}
            continue
        start = time.perf_counter()
        params_obs, info = obs_at_block_size(run, block_size, gradients=gradients)
        jax.block_until_ready(jax.tree.leaves(params_obs))
        obs_s = time.perf_counter() - start
        row = run.evaluate(params_obs)
        loss = personal_loss(params_obs)
        entry = {
            "recovery": evaluate.recovery(
                personalized=personalized["personal_acc"], masked=masked["personal_acc"], obs=row["personal_acc"]
            ),
            "loss_recovery": evaluate.recovery(personalized=loss_personalized, masked=loss_masked, obs=loss),
            "personal_acc": row["personal_acc"],
            "forget_acc": row["forget_acc"],
            "test_acc": row["test_acc"],
            "personal_loss": loss,
            "quadratic_increase": float(sum(layer["quadratic_increase"] for layer in info.values())),
            "fisher_methods": sorted({layer["method"] for layer in info.values()}),
            "obs_s": obs_s,
            **mask_block_statistics(run.masks, block_size),
        }
        by_size[block_size] = entry
        log(
            f"{run.name}: B={block_size}: recovery {entry['recovery']:.3f}, loss recovery "
            f"{entry['loss_recovery']:.3f}, forget acc {entry['forget_acc']:.3f} (OBS {obs_s:.1f} s)"
        )

    own = run.unlearning.block_size
    reference = {
        "block_size": own,
        "recipe_personal_acc": run.rows["obs"]["personal_acc"],
        "recipe_recovery": run.recovery,
    }
    if own in by_size and "skipped" not in by_size[own]:
        reference["study_personal_acc"] = by_size[own]["personal_acc"]
        reference["abs_difference"] = abs(by_size[own]["personal_acc"] - run.rows["obs"]["personal_acc"])
    mask_cost = personalized["personal_acc"] - masked["personal_acc"]
    predictions = prediction_count(run.datasets["personal_test"])
    lost = mask_cost * predictions  # test predictions the mask cost
    masked_weights = int(sum(int(np.asarray(m).sum()) for m in run.masks.values()))
    target_weights = int(sum(np.asarray(m).size for m in run.masks.values()))
    return {
        "by_size": by_size,
        "personalized": {**personalized, "personal_loss": loss_personalized},
        "masked": {**masked, "personal_loss": loss_masked},
        "mask_cost": mask_cost,
        "recovery_resolution": 1 / lost if lost > 0 else None,
        "personal_test_predictions": predictions,
        "reference": reference,
        "fisher_examples": gradients.n_examples,
        "gradient_s": gradient_s,
        "masked_weights": masked_weights,
        "target_weights": target_weights,
        "target_layers": [path_name(p) for p in run.masks],
        "unlearning": {
            key: (list(value) if isinstance(value, tuple) else value)
            for key, value in dataclasses.asdict(run.unlearning).items()
        },
        "settings": run.settings,
        "timings_s": run.timings,
    }


TASK_FIELDS = ("recovery", "loss_recovery", "personal_acc", "forget_acc", "test_acc", "fully_masked_blocks", "obs_s")
COST_FIELDS = (
    "k",
    "blocks_per_chunk",
    "weights_per_chunk",
    "rows",
    "columns",
    "cells",
    "rows_per_weight",
    "cells_per_weight",
    "domain_cells_per_weight",
    "workload_chunks",
    "workload_cells",
    "spec_s",
)


def study_rows(
    sizes: Sequence[int],
    task_results: Mapping[str, Mapping[str, Any]],
    costs: Mapping[int, Mapping[str, Any]],
    reference_costs: Mapping[int, Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """One flat row per B: ``{task}_{field}`` for every task (None when skipped, with ``{task}_skipped``)
    and the proof cost fields (``vitb_fc1_chunks`` for the workload's chunks, ``f_over_r`` against level R,
    ``cost_vs_smallest`` against the smallest B)."""
    smallest = costs[min(sizes)]["cells_per_weight"]
    rows = []
    for block_size in sizes:
        row: dict[str, Any] = {"block_size": block_size}
        for name, result in task_results.items():
            entry = result["by_size"][block_size]
            row[f"{name}_skipped"] = entry.get("skipped")
            for field in TASK_FIELDS:
                row[f"{name}_{field}"] = entry.get(field)
        row.update(cost_fields(costs[block_size], reference_costs[block_size], smallest))
        rows.append(row)
    return rows


def cost_fields(cost: Mapping[str, Any], reference_cost: Mapping[str, Any], smallest: float) -> dict[str, Any]:
    """A study row's proof-cost fields from :func:`proof_cost` at the study's level and at level R."""
    fields = {field: cost[field] for field in COST_FIELDS}
    fields["vitb_fc1_chunks"] = fields.pop("workload_chunks")
    fields["vitb_fc1_cells"] = fields.pop("workload_cells")
    fields["level_r_cells_per_weight"] = reference_cost["cells_per_weight"]
    fields["f_over_r"] = cost["cells_per_weight"] / reference_cost["cells_per_weight"]
    fields["cost_vs_smallest"] = cost["cells_per_weight"] / smallest
    return fields


def recost_study(result: Mapping[str, Any], *, log: Callable[[str], None] = lambda _msg: None) -> dict[str, Any]:
    """A saved study with every proof-cost field recomputed from the current chunk circuit, and its
    recommendation redone. The tasks' recovery does not depend on the circuit and is kept as measured."""
    settings = result["settings"]
    sizes = [int(b) for b in settings["sizes"]]
    costs, reference_costs = proof_costs(
        sizes, level=settings["level"], k=settings["proof_k"], max_k=settings["proof_max_k"], log=log
    )
    smallest = costs[min(sizes)]["cells_per_weight"]
    rows = [
        dict(row) | cost_fields(costs[row["block_size"]], reference_costs[row["block_size"]], smallest)
        for row in result["rows"]
    ]
    tolerance = settings.get("tolerance", RECOVERY_TOLERANCE)
    return dict(result) | {
        "rows": rows,
        "recommended_block_size": recommend_block_size(rows, settings["tasks"], tolerance=tolerance),
        "settings": dict(settings) | {"costs_recomputed": True},
    }


def recommend_block_size(
    rows: Sequence[Mapping[str, Any]], task_names: Sequence[str], *, tolerance: float = RECOVERY_TOLERANCE
) -> int | None:
    """The B with the fewest proof cells per weight among those whose mean recovery over ``task_names`` is
    within ``tolerance`` of the best mean measured. Only B measured on every task counts; None if none is.

    A recovery above 1 (OBS ended above the personalized model: test noise, or a regularizing update) counts
    as 1, so one task's lucky overshoot cannot pay for another task's shortfall.
    """

    def mean_recovery(row):
        values = [row[f"{name}_recovery"] for name in task_names]
        if any(v is None or not math.isfinite(v) for v in values):
            return None
        return float(np.mean(np.minimum(values, 1.0)))

    scored = [(row, mean_recovery(row)) for row in rows]
    scored = [(row, r) for row, r in scored if r is not None]
    if not scored:
        return None
    best = max(r for _, r in scored)
    eligible = [row for row, r in scored if r >= best - tolerance]
    return int(min(eligible, key=lambda row: (row["cells_per_weight"], row["block_size"]))["block_size"])


def check_sizes(sizes: Iterable[int]) -> list[int]:
    """Sorted unique block sizes; ValueError naming the bad ones."""
    sizes = sorted(set(int(b) for b in sizes))
    bad = [b for b in sizes if b < 1]
    if not sizes or bad:
        raise ValueError(f"block sizes must be positive integers, got {sizes or 'none'}")
    return sizes


def proof_costs(
    sizes: Sequence[int],
    *,
    level: str = "F",
    k: int = PROOF_K,
    max_k: int = PROOF_MAX_K,
    log: Callable[[str], None] = lambda _msg: None,
) -> tuple[dict[int, dict], dict[int, dict]]:
    """:func:`proof_cost` of every B at ``level`` and, as the reference, at level R."""
    costs, reference_costs = {}, {}
    for block_size in check_sizes(sizes):
        start = time.perf_counter()
        costs[block_size] = proof_cost(block_size, level=level, k=k, max_k=max_k)
        reference_costs[block_size] = proof_cost(block_size, level="R", k=k, max_k=max_k)
        log(
            f"proof cost B={block_size}: {costs[block_size]['cells_per_weight']:.1f} cells/weight at level "
            f"{level} (k={costs[block_size]['k']}, {costs[block_size]['blocks_per_chunk']} blocks/chunk; "
            f"{time.perf_counter() - start:.1f} s)"
        )
    return costs, reference_costs


def block_size_study(
    runs: Mapping[str, tasks.TaskRun],
    *,
    sizes: Sequence[int] = DEFAULT_SIZES,
    level: str = "F",
    k: int = PROOF_K,
    max_k: int = PROOF_MAX_K,
    tolerance: float = RECOVERY_TOLERANCE,
    costs: tuple[Mapping[int, dict], Mapping[int, dict]] | None = None,
    log: Callable[[str], None] = lambda _msg: None,
) -> dict[str, Any]:
    """The whole study on already trained task runs: ``{"rows": [...], "recommended_block_size", "tasks",
    "settings"}`` (see :func:`study_rows`). ``costs``: :func:`proof_costs` of the same sizes and settings,
    when already computed."""
    sizes = check_sizes(sizes)
    costs, reference_costs = costs or proof_costs(sizes, level=level, k=k, max_k=max_k, log=log)
    missing = [b for b in sizes if b not in costs or b not in reference_costs]
    if missing:
        raise ValueError(f"proof costs given for {sorted(costs)}, missing block sizes {missing}")
    task_results = {name: study_task(run, sizes, log=log) for name, run in runs.items()}
    rows = study_rows(sizes, task_results, costs, reference_costs)
    layers, out_features, in_features = VITB_FC1
    return {
        "rows": rows,
        "recommended_block_size": recommend_block_size(rows, list(runs), tolerance=tolerance),
        "tasks": task_results,
        "settings": {
            "sizes": sizes,
            "tasks": list(runs),
            "level": level,
            "proof_k": k,
            "proof_max_k": max_k,
            "reference_level": "R",
            "workload": {"name": "ViT-B fc1", "layers": layers, "out": out_features, "in": in_features},
            "recommendation_rule": f"fewest cells/weight with mean recovery (each capped at 1) >= best - {tolerance}",
            "tolerance": tolerance,
            "spec_by_size": {b: spec_for_block_size(b).to_dict() for b in sizes},
        },
    }


# ----------------------------------------------------------------------------------------- training


TASK_RUNNERS: dict[str, Callable[..., tasks.TaskRun]] = {
    "characters": tasks.run_characters_task,
    "vision": tasks.run_vision_task,
    "code": tasks.run_code_task,
}


def parse_overrides(items: Iterable[str], task_names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``["vision.mask_fraction=0.3", ...]`` -> ``{"vision": {"mask_fraction": 0.3}}``; values are Python
    literals (numbers, None, tuples) or else strings; fields must be :class:`tasks.UnlearningConfig`'s."""
    fields = {f.name for f in dataclasses.fields(tasks.UnlearningConfig)}
    out: dict[str, dict[str, Any]] = {name: {} for name in task_names}
    for item in items:
        target, sep, raw = item.partition("=")
        task, dot, field = target.partition(".")
        if not sep or not dot:
            raise ValueError(f"override {item!r} must look like TASK.FIELD=VALUE (e.g. vision.mask_fraction=0.3)")
        if task not in out:
            raise ValueError(f"override {item!r}: task {task!r} is not among {list(task_names)}")
        if field not in fields or field == "block_size":
            raise ValueError(
                f"override {item!r}: {field!r} is not an unlearning field the study can set "
                f"(choose from {sorted(fields - {'block_size'})})"
            )
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw
        out[task][field] = value
    return out


def train_tasks(
    task_names: Sequence[str],
    *,
    quick: bool,
    seed: int,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    log: Callable[[str], None] = lambda _msg: None,
) -> dict[str, tasks.TaskRun]:
    """Each task's recipe run once (its own block size; the study swaps B in afterwards)."""
    overrides = overrides or {}
    runs = {}
    for name in task_names:
        if name not in TASK_RUNNERS:
            raise ValueError(f"unknown task {name!r}; known: {sorted(TASK_RUNNERS)}")
        start = time.perf_counter()
        runs[name] = TASK_RUNNERS[name](
            quick=quick, seed=seed, log=lambda msg, n=name: log(f"{n}: {msg}"), **dict(overrides.get(name, {}))
        )
        log(f"{name}: recipe trained in {time.perf_counter() - start:.0f} s")
    return runs


# ------------------------------------------------------------------------------------------ reporting


def _fmt(value: Any, spec: str, width: int) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return f"{'-':>{width}}"
    return f"{value:>{width}{spec}}"


def format_table(result: Mapping[str, Any]) -> str:
    """The study as a text table, with the skipped sizes and the recommendation below it."""
    names = result["settings"]["tasks"]
    head = f"{'B':>5}"
    for name in names:
        head += f"{name + ' rec':>12}{'loss rec':>9}{'forget':>8}"
    head += f"{'k':>4}{'blk/chunk':>10}{'rows/w':>8}{'cells/w':>9}{'F/R':>6}{'xB_min':>7}{'ViT-B chunks':>13}"
    lines = [head, "-" * len(head)]
    for row in result["rows"]:
        line = f"{row['block_size']:>5}"
        for name in names:
            line += (
                _fmt(row[f"{name}_recovery"], ".3f", 12)
                + _fmt(row[f"{name}_loss_recovery"], ".3f", 9)
                + _fmt(row[f"{name}_forget_acc"], ".3f", 8)
            )
        line += (
            f"{row['k']:>4}{row['blocks_per_chunk']:>10}{row['rows_per_weight']:>8.3f}"
            f"{row['cells_per_weight']:>9.1f}{row['f_over_r']:>6.1f}{row['cost_vs_smallest']:>7.1f}"
            + _fmt(row["vitb_fc1_chunks"], "d", 13)
        )
        lines.append(line)
    for row in result["rows"]:
        for name in names:
            if row[f"{name}_skipped"]:
                lines.append(f"B={row['block_size']} skipped on {name}: {row[f'{name}_skipped']}")
    for name in names:
        task = result["tasks"][name]
        ref = task["reference"]
        personalized, masked = task["personalized"]["personal_acc"], task["masked"]["personal_acc"]
        predictions = task["personal_test_predictions"]
        lost = task["mask_cost"] * predictions
        lines.append(
            f"{name}: personal acc {personalized:.3f} personalized -> {masked:.3f} after the mask "
            f"({task['masked_weights']} of {task['target_weights']} target weights; {lost:.0f} of {predictions} "
            f"test predictions lost, so one prediction = {1 / lost if lost > 0 else math.nan:.3f} of recovery)"
        )
        check = (
            f"; this study at B={ref['block_size']}: personal acc differs by {ref['abs_difference']:.1e}"
            if "abs_difference" in ref
            else ""
        )
        recovery = ref["recipe_recovery"]  # NaN (null once saved) when the mask cost nothing to recover
        recovery = "n/a" if recovery is None or math.isnan(recovery) else f"{recovery:.3f}"
        lines.append(f"  the recipe's own OBS at B={ref['block_size']}: recovery {recovery}{check}")
        if lost < 3:
            lines.append(
                f"  warning: on {name} the mask costs fewer than 3 test predictions; accuracy recovery "
                "is noise there -- read loss_recovery"
            )
    recommended = result["recommended_block_size"]
    lines.append(
        f"cells/w: proof cells per model weight at level {result['settings']['level']} (chunk filling "
        f"2^{result['settings']['proof_k']}); F/R: over level R at the same B; xB_min: over B="
        f"{result['rows'][0]['block_size']}; ViT-B chunks: chunks covering 12 x 3072 x 768 fc1 weights"
    )
    lines.append(f"recommended B: {recommended} ({result['settings']['recommendation_rule']})")
    return "\n".join(lines)


TASK_COLORS = {"characters": "tab:purple", "vision": "tab:blue", "code": "tab:orange"}
RECOVERY_AXIS = (-50.0, 150.0)  # percent; values beyond are drawn at the edge with their value written


def plot_study(result: Mapping[str, Any], path: str | Path) -> None:
    """Two panels over B (log2 axis): recovery of each task (accuracy solid, loss dashed) and proof cells per
    weight (log scale) at level F beside level R; the recommended B is marked on both."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    sizes = [row["block_size"] for row in rows]
    names = result["settings"]["tasks"]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 8), sharex=True, gridspec_kw={"height_ratios": [1.15, 1.0]})

    def series(key):
        return np.array([np.nan if row[key] is None else row[key] for row in rows], float)

    measured = np.concatenate(
        [100 * series(f"{name}_{key}") for name in names for key in ("recovery", "loss_recovery")]
    )
    measured = measured[np.isfinite(measured)]
    low = max(RECOVERY_AXIS[0], min(0.0, *measured) - 10)  # the axis spans 0..100 and the data, within the
    high = min(RECOVERY_AXIS[1], max(100.0, *measured) + 10)  # bounds; beyond them a point sits on the edge
    for name in names:
        color = TASK_COLORS.get(name)
        resolution = result["tasks"][name].get("recovery_resolution")
        accuracy_label = f"{name}: accuracy recovery" + (
            f" (1 test prediction = {100 * resolution:.1f} % of it)" if resolution else ""
        )
        for key, style, label, extra in (
            ("recovery", "o-", accuracy_label, dict(lw=2)),
            ("loss_recovery", "s--", f"{name}: loss recovery", dict(lw=1.2, alpha=0.7, ms=4)),
        ):
            values = 100 * series(f"{name}_{key}")
            top.plot(sizes, np.clip(values, low, high), style, color=color, label=label, **extra)
            for size, value in zip(sizes, values):
                if np.isfinite(value) and not low <= value <= high:
                    top.annotate(
                        f"{value:.0f}%",
                        (size, np.clip(value, low, high)),
                        textcoords="offset points",
                        xytext=(6, -10 if value > high else 4),
                        fontsize=7,
                        color=color,
                    )
    skipped = [row["block_size"] for row in rows if any(row[f"{name}_skipped"] for name in names)]
    for size in skipped:
        which = [name for name in names if next(r for r in rows if r["block_size"] == size)[f"{name}_skipped"]]
        top.annotate(
            f"{' & '.join(which)}:\nB does not divide\nthe target layers",
            (size, 0.03),
            xycoords=("data", "axes fraction"),
            ha="right" if size == sizes[-1] else "center",
            fontsize=7,
            color="dimgray",
        )
    top.axhline(100, color="gray", lw=0.8, ls=":")
    top.axhline(0, color="gray", lw=0.8, ls=":")
    top.set_ylim(low, high)
    top.set_ylabel("personal recovery after OBS (%)")
    fig.suptitle("Block size B: what OBS recovers, and what proving it costs", fontsize=11)
    top.legend(fontsize=7.5, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False)
    top.grid(alpha=0.3)

    level = result["settings"]["level"]
    cells = series("cells_per_weight")
    bottom.plot(sizes, cells, "o-", color="tab:green", lw=2, label=f"level {level} (G bound): cells / weight")
    bottom.plot(
        sizes,
        series("domain_cells_per_weight"),
        "^:",
        color="tab:green",
        alpha=0.6,
        ms=4,
        label=f"level {level}: 2^k x columns / weight",
    )
    bottom.plot(
        sizes,
        series("level_r_cells_per_weight"),
        "d--",
        color="gray",
        ms=4,
        label="level R (removal only): cells / weight",
    )
    for size, value in zip(sizes, cells):
        bottom.annotate(
            f"{value:.0f}", (size, value), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8
        )
    bottom.set_yscale("log")
    every = np.concatenate([cells, series("level_r_cells_per_weight")])
    bottom.set_ylim(np.nanmin(every) / 1.6, np.nanmax(every) * 2.0)
    bottom.set_ylabel("proof cells per model weight")
    bottom.set_xlabel("block size B (weights per Fisher block)")
    bottom.legend(fontsize=8, loc="upper left")
    bottom.grid(alpha=0.3, which="both")
    bottom.set_xscale("log", base=2)
    bottom.set_xticks(sizes)
    crowded = any(b / a < 1.3 for a, b in zip(sizes, sizes[1:]))  # e.g. 512 and 576: labels would touch
    bottom.set_xticklabels([str(s) for s in sizes], rotation=45 if crowded else 0)
    bottom.minorticks_off()

    recommended = result["recommended_block_size"]
    if recommended is not None:
        for axis in (top, bottom):
            axis.axvline(recommended, color="black", lw=0.8, ls="--", alpha=0.6)
        bottom.annotate(
            f"recommended B = {recommended}",
            (recommended, 0.25),
            xycoords=("data", "axes fraction"),
            xytext=(4, 0),
            textcoords="offset points",
            fontsize=8,
        )
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the recipes' quick training")
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)), help="comma-separated block sizes")
    parser.add_argument(
        "--tasks",
        default=",".join(DEFAULT_TASKS),
        help=f"comma-separated tasks among {', '.join(TASK_NAMES)} (default {','.join(DEFAULT_TASKS)})",
    )
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="TASK.FIELD=VALUE",
        help="unlearning setting of one task's recipe, e.g. vision.mask_fraction=0.3 (repeatable)",
    )
    parser.add_argument(
        "--recipe-masks",
        action="store_true",
        help="the recipes' own mask settings, without the study's (STUDY_OVERRIDES)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--k", type=int, default=PROOF_K, help="domain the proof chunks are sized to fill (2^k)")
    parser.add_argument(
        "--tolerance",
        type=float,
        default=RECOVERY_TOLERANCE,
        help="recovery below the best still accepted by the recommendation",
    )
    add_json_option(parser)
    parser.add_argument("--plot", metavar="PATH.png", help="write the recovery / cost plot")
    parser.add_argument(
        "--recost",
        metavar="RESULTS.json",
        help="no training: recompute a saved study's proof costs from the current circuit (recovery kept), "
        "print it and write --json / --plot",
    )
    args = parser.parse_args(argv)
    if args.recost:
        return recost_main(args)

    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    task_names = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = [name for name in task_names if name not in TASK_RUNNERS]
    if unknown or not task_names:
        parser.error(f"--tasks: unknown task(s) {unknown or 'none given'}; choose from {', '.join(TASK_NAMES)}")
    overrides = {name: {} if args.recipe_masks else dict(STUDY_OVERRIDES.get(name, {})) for name in task_names}
    for name, fields in parse_overrides(args.override, task_names).items():
        overrides[name].update(fields)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)

    start, cpu_start = time.perf_counter(), time.process_time()
    # the circuits first: a lowering problem fails in seconds, not after the training
    costs = proof_costs(sizes, k=args.k, log=log)
    runs = train_tasks(task_names, quick=args.quick, seed=args.seed, overrides=overrides, log=log)
    result = block_size_study(runs, sizes=sizes, k=args.k, tolerance=args.tolerance, costs=costs, log=log)
    result["settings"].update(
        quick=args.quick,
        seed=args.seed,
        overrides=overrides,
        wall_s=round(time.perf_counter() - start, 1),
        cpu_s=round(time.process_time() - cpu_start, 1),  # all threads of this process
        backend=jax.default_backend(),
    )
    title = (
        f"Block-size study ({'quick' if args.quick else 'full'} training, seed {args.seed}, "
        f"{result['settings']['wall_s']:.0f} s)"
    )
    return report_study(result, title, args)


def report_study(result: Mapping[str, Any], title: str, args: argparse.Namespace) -> int:
    """Print the study's table under ``title`` and write ``--json`` / ``--plot`` when asked."""
    print(title)
    print(format_table(result))
    if args.json:
        write_json(args.json, _jsonable(result))
    if args.plot:
        plot_study(result, args.plot)
    return 0


def recost_main(args: argparse.Namespace) -> int:
    path = Path(args.recost)
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise SystemExit(f"block_size --recost: cannot read {path}: {err}") from err
    settings = saved.get("settings") if isinstance(saved, dict) else None
    needed = ("sizes", "tasks", "level", "proof_k", "proof_max_k")
    missing = [f"settings.{f}" for f in needed if not isinstance(settings, dict) or f not in settings]
    if not isinstance(saved, dict) or not isinstance(saved.get("rows"), list):
        missing.append("rows")
    elif any(not isinstance(row, dict) or "block_size" not in row for row in saved["rows"]):
        missing.append("rows[].block_size")
    if missing:
        raise SystemExit(f"block_size --recost: {path} is not a block-size study: missing field {missing[0]}")
    result = recost_study(saved, log=lambda msg: print(msg, file=sys.stderr, flush=True))
    return report_study(result, f"Block-size study {path} with proof costs recomputed from the current circuit", args)


if __name__ == "__main__":
    raise SystemExit(main())
