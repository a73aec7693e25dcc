"""Table I, vision: personalized → masked → Group OBS on a ViT, over several seeds (mean ± std, worst seed).

    python -m benchmarks.table1 [--task characters|vision] [--quick] [--json PATH] [--seeds 0,1,2]
                                [--block-size B] [--mask-fraction F] [--scorer activation|second-order]
                                [--forget-directions K]

The default task is the real-data one (MNIST digits + printed capitals; the client personalizes on
handwriting fonts; forget the digit 3); ``--task vision`` is the 8×8 digits fixture. Each seed reruns the
whole recipe (data, training, personalization, mask, OBS); the table shows the means, the per-seed lines,
the recovery's spread and the worst seed, and a forget-aware OBS row (k forget directions, same mask and
models). ``--json`` writes the same figures.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from typing import Any

from benchmarks.report import add_json_option, write_json

# The poster's Table I (ViT-B/16, forget "birds", personal "fish" in ImageNet-Sketch), in percent.
PAPER_TABLE1 = {
    "personalized": {"forget_acc": 93.7, "personal_acc": 71.5},
    "masked": {"forget_acc": 60.5, "personal_acc": 69.4},
    "obs": {"forget_acc": 59.5, "personal_acc": 70.9},
    "recovery": (70.9 - 69.4) / (71.5 - 69.4),
}

ROW_LABELS = {"personalized": "personalized", "masked": "after mask", "obs": "after mask + OBS"}


def headline(summary: dict[str, Any]) -> dict[str, float]:
    """Differences in accuracy points that the done-when criteria speak about."""
    rows = summary["rows"]
    return {
        "forget_drop_points": 100 * (rows["personalized"]["forget_acc"] - rows["masked"]["forget_acc"]),
        "personal_cost_points": 100 * (rows["personalized"]["personal_acc"] - rows["masked"]["personal_acc"]),
        "obs_forget_rebound_points": 100 * (rows["obs"]["forget_acc"] - rows["masked"]["forget_acc"]),
        "obs_personal_gain_points": 100 * (rows["obs"]["personal_acc"] - rows["masked"]["personal_acc"]),
    }


def _fmt(value: float, percent: bool) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{100 * value:6.1f}" if percent else f"{value:6.3f}"


def print_table(
    summary: dict[str, Any],
    *,
    columns: list[tuple[str, str, bool]],
    title: str,
    paper: dict | None = None,
    out: Callable[[str], None] = print,
) -> None:
    """Plain-text table: one line per row; ``columns`` = (key, header, shown as percent)."""
    width = 20
    out(title)
    header = f"{'':{width}}" + "".join(f"{h:>14}" for _, h, _ in columns)
    out(header)
    out("-" * len(header))
    for name, label in ROW_LABELS.items():
        row = summary["rows"][name]
        out(f"{label:{width}}" + "".join(f"{_fmt(row.get(k), pct):>14}" for k, _, pct in columns))
    out("")
    h = headline(summary)
    out(f"recovery of personal accuracy  (obs − mask) / (personalized − mask) = {summary['recovery']:.3f}")
    out(
        f"forget accuracy drop by the mask: {h['forget_drop_points']:.1f} points; "
        f"personal accuracy cost of the mask: {h['personal_cost_points']:.1f} points; "
        f"forget accuracy change by OBS: {h['obs_forget_rebound_points']:+.1f} points"
    )
    out(
        f"mask: scorer={summary['scorer']}  mask_fraction={summary['mask_fraction']}  "
        f"(= {100 * summary['masked_weight_fraction']:.2f} % of {summary['target_weights']} target weights, "
        f"{summary['masked_weights']} masked)  block_size B={summary['block_size']}  "
        f"damp={summary['unlearning']['damp']}  fisher_examples={summary['unlearning']['fisher_examples']}"
    )
    if paper:
        out("")
        out("poster Table I (ViT-B/16, ImageNet → ImageNet-Sketch), percent:")
        for name, label in ROW_LABELS.items():
            r = paper[name]
            out(f"  {label:{width}} forget {r['forget_acc']:5.1f}   personal {r['personal_acc']:5.1f}")
        out(
            f"  recovery {paper['recovery']:.3f}   → this run / poster recovery = "
            f"{summary['recovery'] / paper['recovery']:.2f}"
        )
    timings = summary.get("timings_s", {})
    if timings:
        out("timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))


def print_comparison(
    label: str, result: dict[str, Any], *, keys: list[tuple[str, str]], out: Callable[[str], None] = print
) -> None:
    """Rows of a second setting run on the same models (see :func:`jaxapex.tasks.unlearn_with`)."""
    out("")
    out(label)
    for name, row_label in ROW_LABELS.items():
        row = result["rows"][name]
        out(f"  {row_label:20}" + "".join(f"{h} {100 * row[k]:5.1f}   " for k, h in keys))
    out(f"  recovery {result['recovery']:.3f}   masked weight fraction {100 * result['masked_weight_fraction']:.2f} %")


def build_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="shorter training (the CI setting)")
    add_json_option(parser)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--block-size", type=int, default=None, help="OBS block size B (default: the recipe's)")
    parser.add_argument("--mask-fraction", type=float, default=None, help="mask fraction (default: the recipe's)")
    parser.add_argument("--scorer", choices=("activation", "second-order"), default=None)
    parser.add_argument(
        "--extra-seeds",
        type=parse_seeds,
        default=(),
        metavar="N,...",
        help="further seeds to rerun the recipe with; each seed's line and the recovery's "
        "spread are printed and written under 'seeds'",
    )
    parser.add_argument(
        "--no-compare", action="store_true", help="skip the second setting run on the same models for comparison"
    )
    return parser


def parse_seeds(text: str) -> tuple[int, ...]:
    """``"1,2"`` -> ``(1, 2)``."""
    try:
        return tuple(int(item) for item in text.split(",") if item.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--extra-seeds wants comma-separated integers, got {text!r}") from None


def seed_spread(first: dict[str, Any], runner: Callable[[int], Any], seeds: tuple[int, ...]) -> dict[str, Any]:
    """Rows, recovery and headline points of ``first`` (a summary) and of ``runner(seed)`` for each seed,
    with the recovery's mean and sample standard deviation over all of them."""

    def line(summary: dict[str, Any]) -> dict[str, Any]:
        return {
            "rows": {
                name: {k: row[k] for k in ("forget_acc", "personal_acc", "test_acc")}
                for name, row in summary["rows"].items()
            },
            "recovery": summary["recovery"],
            **headline(summary),
        }

    per_seed = {str(first["settings"]["seed"]): line(first)}
    for seed in seeds:
        if str(seed) in per_seed:
            raise ValueError(f"seed {seed} given twice (--seed and --extra-seeds)")
        per_seed[str(seed)] = line(runner(seed).summary())
    recoveries = [entry["recovery"] for entry in per_seed.values()]
    mean = sum(recoveries) / len(recoveries)
    std = math.sqrt(sum((r - mean) ** 2 for r in recoveries) / (len(recoveries) - 1)) if len(recoveries) > 1 else 0.0
    return {"per_seed": per_seed, "recovery_mean": mean, "recovery_std": std}


def print_seed_spread(spread: dict[str, Any], out: Callable[[str], None] = print) -> None:
    out("")
    out("per seed (accuracy %: personalized → masked → OBS)")
    for seed, entry in spread["per_seed"].items():
        rows = entry["rows"]
        path = lambda key: " → ".join(f"{100 * rows[name][key]:5.1f}" for name in ROW_LABELS)  # noqa: B023 (used at once)
        out(
            f"  seed {seed:>3}  forget {path('forget_acc')}   personal {path('personal_acc')}   "
            f"recovery {entry['recovery']:6.2f}"
        )
    out(
        f"  recovery over {len(spread['per_seed'])} seeds: {spread['recovery_mean']:.2f} ± {spread['recovery_std']:.2f}"
    )


def run_table(runner: Callable[..., Any], args: argparse.Namespace, tag: str) -> tuple[Any, dict[str, Any]]:
    """The recipe ``runner`` (``run_vision_task`` / ``run_code_task``) with the command line's settings:
    the run of ``--seed``, and its summary with the headline points and, for ``--extra-seeds``, the spread."""

    def run_seed(seed: int) -> Any:
        label = tag if seed == args.seed else f"{tag} seed {seed}"
        return runner(
            quick=args.quick,
            seed=seed,
            block_size=args.block_size,
            mask_fraction=args.mask_fraction,
            scorer=args.scorer,
            log=lambda m: print(f"[{label}] {m}", file=sys.stderr),
        )

    run = run_seed(args.seed)
    summary = run.summary()
    summary.update(headline(summary))
    if args.extra_seeds:
        summary["seeds"] = seed_spread(summary, run_seed, args.extra_seeds)
    return run, summary


TASKS = ("characters", "vision")
DEFAULT_SEEDS = (0, 1, 2)
ROWS = ("personalized", "masked", "obs", "obs_forget_aware")


def table1_parser() -> argparse.ArgumentParser:
    parser = build_parser(__doc__.splitlines()[0])
    parser.set_defaults(seed=None)  # no --seed / --extra-seeds / --seeds: DEFAULT_SEEDS
    parser.add_argument(
        "--task",
        choices=TASKS,
        default="characters",
        help="characters: MNIST + printed capitals, client on handwriting fonts (default); "
        "vision: the 8x8 digits fixture",
    )
    parser.add_argument(
        "--seeds",
        type=parse_seeds,
        default=None,
        metavar="N,...",
        help="seeds to run the whole recipe with (default 0,1,2; overrides --seed / --extra-seeds)",
    )
    parser.add_argument(
        "--forget-directions",
        type=int,
        default=8,
        metavar="K",
        help="k of the forget-aware OBS row (same mask, same models); 0 leaves the row out",
    )
    return parser


def _runner(task: str) -> Callable[..., Any]:
    from jaxapex import tasks

    return {"characters": tasks.run_characters_task, "vision": tasks.run_vision_task}[task]


def seed_entry(run: Any, *, seed: int, forget_directions: int) -> dict[str, Any]:
    """One seed's summary with its headline points and, for k > 0, the forget-aware OBS row computed on the
    same mask and models."""
    import dataclasses

    from jaxapex.tasks import unlearn_with

    summary = run.summary()
    summary.update(headline(summary), seed=seed)
    if forget_directions:
        aware = unlearn_with(
            run,
            dataclasses.replace(run.unlearning, forget_directions=forget_directions),
            masks=run.masks,
            masked_row=run.rows["masked"],
        )
        summary["rows"] = {**summary["rows"], "obs_forget_aware": aware["rows"]["obs"]}
        summary["forget_aware_recovery"] = aware["recovery"]
    return summary


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std


def aggregate(entries: list[dict[str, Any]], *, forget_directions: int) -> dict[str, Any]:
    """Means (and sample standard deviations) over seeds of every row metric, the recovery and the headline
    points; the worst seed by recovery; each seed's own figures under ``per_seed``."""
    first = entries[0]
    rows, rows_std = {}, {}
    for name in ROWS:
        if name not in first["rows"]:
            continue
        keys = [k for k, v in first["rows"][name].items() if isinstance(v, (int, float))]
        stats = {k: _mean_std([e["rows"][name][k] for e in entries]) for k in keys}
        rows[name] = {k: m for k, (m, _) in stats.items()}
        rows_std[name] = {k: sd for k, (_, sd) in stats.items()}
    recoveries = [e["recovery"] for e in entries]
    recovery, recovery_std = _mean_std(recoveries)
    worst = min(range(len(entries)), key=lambda i: recoveries[i])
    seeds = [e["seed"] for e in entries]
    per_seed = [
        {
            "seed": e["seed"],
            "rows": {n: {k: e["rows"][n][k] for k in ("forget_acc", "personal_acc", "test_acc")} for n in e["rows"]},
            "recovery": e["recovery"],
            "forget_aware_recovery": e.get("forget_aware_recovery"),
            "global_acc": e["settings"].get("global_acc"),
            "timings_s": e["timings_s"],
            **headline(e),
        }
        for e in entries
    ]
    out = {
        "task": first["task"],
        "seeds": seeds,
        "mask_fraction": first["mask_fraction"],
        "block_size": first["block_size"],
        "n_eval": first["settings"].get("n_eval"),
        "rows": rows,
        "rows_std": rows_std,
        "recovery": recovery,
        "recovery_std": recovery_std,
        "recovery_by_seed": recoveries,
        "worst_seed": {"seed": seeds[worst], "recovery": recoveries[worst]},
        "per_seed": per_seed,
        **{k: _mean_std([p[k] for p in per_seed])[0] for k in headline(first)},
    }
    if forget_directions and "obs_forget_aware" in rows:
        aware = [e["forget_aware_recovery"] for e in entries]
        mean, std = _mean_std(aware)
        out["forget_aware"] = {
            "k": forget_directions,
            "directions": "top-k principal directions of the fc1 inputs on the forget set (global model)",
            "recovery": mean,
            "recovery_std": std,
            "recovery_by_seed": aware,
            "forget_rebound_points": 100 * (rows["obs_forget_aware"]["forget_acc"] - rows["masked"]["forget_acc"]),
        }
    # the first seed's descriptive fields, for print_table
    for key in ("scorer", "masked_weight_fraction", "masked_weights", "target_weights", "unlearning", "settings"):
        out[key] = first[key]
    return out


def print_seeds(result: dict[str, Any], out: Callable[[str], None] = print) -> None:
    out("")
    out("per seed (accuracy %: personalized → masked → OBS [→ forget-aware OBS])")
    names = [n for n in ROWS if n in result["rows"]]
    for entry in result["per_seed"]:
        rows = entry["rows"]
        path = lambda key: " → ".join(f"{100 * rows[n][key]:5.1f}" for n in names)  # noqa: B023 (used at once)
        aware = entry.get("forget_aware_recovery")
        out(
            f"  seed {entry['seed']:>3}  forget {path('forget_acc')}   personal {path('personal_acc')}   "
            f"recovery {entry['recovery']:5.2f}" + ("" if aware is None else f" (forget-aware {aware:5.2f})")
        )
    out(
        f"  recovery over {len(result['seeds'])} seeds: {result['recovery']:.2f} ± {result['recovery_std']:.2f}, "
        f"worst seed {result['worst_seed']['seed']}: {result['worst_seed']['recovery']:.2f}"
    )
    if "forget_aware" in result:
        fa = result["forget_aware"]
        out(
            f"  forget-aware OBS (k = {fa['k']}): recovery {fa['recovery']:.2f} ± {fa['recovery_std']:.2f}, "
            f"forget accuracy {fa['forget_rebound_points']:+.1f} points from the masked model"
        )


def main(argv: list[str] | None = None) -> int:
    args = table1_parser().parse_args(argv)
    if args.seeds:
        seeds = args.seeds
    elif args.seed is not None or args.extra_seeds:
        seeds = (args.seed or 0, *args.extra_seeds)
    else:
        seeds = DEFAULT_SEEDS
    runner = _runner(args.task)
    start = time.perf_counter()
    entries, first_run = [], None
    for seed in seeds:
        run = runner(
            quick=args.quick,
            seed=seed,
            block_size=args.block_size,
            mask_fraction=args.mask_fraction,
            scorer=args.scorer,
            log=lambda m, seed=seed: print(f"[table1 {args.task} seed {seed}] {m}", file=sys.stderr),
        )
        first_run = first_run or run
        entries.append(seed_entry(run, seed=seed, forget_directions=args.forget_directions))
    summary = aggregate(entries, forget_directions=args.forget_directions)
    if not args.no_compare and first_run.unlearning.scorer == "activation":
        summary["comparison"] = compare_outgoing(first_run)
    summary["paper_table1"] = PAPER_TABLE1
    summary["recovery_vs_paper"] = summary["recovery"] / PAPER_TABLE1["recovery"]
    summary["timings_s"] = {
        k: sum(e["timings_s"].get(k, 0.0) for e in entries) / len(entries) for k in entries[0]["timings_s"]
    }
    summary["wall_s"] = round(time.perf_counter() - start, 2)
    settings = summary["settings"]
    print_table(
        summary,
        columns=[
            ("forget_acc", "forget %", True),
            ("personal_acc", "personal %", True),
            ("test_acc", "test %", True),
            ("mia_auc", "MIA AUC", False),
            ("forget_mia_auc", "forget MIA", False),
        ],
        title=f"Table I ({args.task}) — mean over seeds {list(seeds)}; forget class {settings['forget_class']}, "
        f"client classes {settings['personal_classes']}; n_eval {summary['n_eval']}",
        paper=PAPER_TABLE1,
    )
    if "obs_forget_aware" in summary["rows"]:
        row = summary["rows"]["obs_forget_aware"]
        print(
            f"{'forget-aware OBS':20}"
            + "".join(f"{100 * row[k]:14.1f}" for k in ("forget_acc", "personal_acc", "test_acc"))
        )
    if "comparison" in summary:
        print_comparison(
            "same models, mask on the chosen neurons' OUTGOING weights (fc2 columns), B=64, damp=1e-6, all client "
            "examples — OBS can rebuild a removed neuron's write from the others':",
            summary["comparison"],
            keys=[("forget_acc", "forget"), ("personal_acc", "personal"), ("test_acc", "test")],
        )
    print_seeds(summary)
    print(f"total wall time {summary['wall_s']:.1f} s")
    if args.json:
        write_json(args.json, summary)
    return 0


def compare_outgoing(run) -> dict[str, Any]:
    """The recipe's scorer and fraction, but masking each chosen neuron's outgoing weights (fc2 columns)
    and solving OBS with small blocks and little damping: the setting in which OBS compensates most."""
    import dataclasses

    from jaxapex.tasks import unlearn_with

    alternative = dataclasses.replace(
        run.unlearning, neuron_side="out", block_size=64, damp=1e-6, fisher_examples=None, weights_per_neuron=None
    )
    return unlearn_with(run, alternative)


if __name__ == "__main__":
    sys.exit(main())
