"""Recovery of the client's accuracy vs restoration of the forgotten class, as the compensation varies:
plain Group OBS along its damping line, and forget-aware OBS with k forget directions (every token's fc1
inputs, or the class token's only; the forget inputs' principal directions, or their directions relative to
the retain inputs') — on the real-data characters task, over several seeds.

    python -m benchmarks.forget_sweep [--quick] [--seeds 0,1,2] [--ks 2,8,32] [--damps ...]
                                      [--kinds principal,contrast] [--json PATH] [--plot PATH]

Each seed runs the recipe once (models cached under runs/cache/characters, shared with benchmarks.table1);
every point then reuses that seed's mask and models and changes only the compensation. A point reports,
averaged over seeds: recovery = (OBS − masked) / (personalized − masked) of personal accuracy, and the forget
rebound = forget accuracy after OBS − after the mask (points). The wanted corner: recovery ≥ 0.70 with a
rebound ≤ 5 points.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.report import Column, add_json_option, print_table, write_json
from benchmarks.table1 import parse_seeds

DEFAULT_KS = (2, 8, 32)
DEFAULT_DAMPS = (1e-6, 1e-3, 1e-1, 10.0)
TOKENS = ("all", "cls")


def parse_floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(item) for item in text.split(",") if item.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"want comma-separated numbers, got {text!r}") from None


def parse_kinds(text: str) -> tuple[str, ...]:
    from jaxapex.forget_directions import DIRECTION_KINDS

    kinds = tuple(t for t in text.split(",") if t)
    unknown = sorted(set(kinds) - set(DIRECTION_KINDS))
    if unknown or not kinds:
        raise argparse.ArgumentTypeError(f"--kinds wants some of {DIRECTION_KINDS}, got {text!r}")
    return kinds


def sweep_points(ks, damps, base_damp: float, kinds=("principal",)) -> list[dict[str, Any]]:
    """The settings: the damping line (k = 0), then k > 0 for each choice of directions (at ``base_damp``)."""
    points = [{"line": "damping", "k": 0, "tokens": "all", "kind": "principal", "damp": d} for d in damps]
    points += [
        {
            "line": f"forget-aware ({t} tokens{', contrast' if kind == 'contrast' else ''})",
            "k": k,
            "tokens": t,
            "kind": kind,
            "damp": base_damp,
        }
        for kind in kinds
        for t in TOKENS
        for k in ks
        if k
    ]
    return points


def point_rows(run, point: dict[str, Any]) -> dict[str, Any]:
    from jaxapex.tasks import unlearn_with

    un = dataclasses.replace(
        run.unlearning,
        forget_directions=point["k"],
        directions_tokens=point["tokens"],
        directions_kind=point.get("kind", "principal"),
        damp=point["damp"],
    )
    try:
        result = unlearn_with(run, un, masks=run.masks, masked_row=run.rows["masked"])
    except ValueError as err:  # k directions do not fit next to a block's masked weights (k > B - |S|)
        return {"infeasible": str(err)}
    rows = result["rows"]
    return {
        "recovery": result["recovery"],
        "forget_rebound_points": 100 * (rows["obs"]["forget_acc"] - rows["masked"]["forget_acc"]),
        "obs": {k: rows["obs"][k] for k in ("forget_acc", "personal_acc", "test_acc")},
    }


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _std(values: list[float]) -> float:
    m = _mean(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0


def summarize(points: list[dict[str, Any]], per_seed: dict[int, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    out = []
    for i, point in enumerate(points):
        results = [per_seed[s][i] for s in per_seed]
        if any("infeasible" in r for r in results):
            out.append({**point, "infeasible": next(r["infeasible"] for r in results if "infeasible" in r)})
            continue
        rec = [r["recovery"] for r in results]
        reb = [r["forget_rebound_points"] for r in results]
        out.append(
            {
                **point,
                "recovery": _mean(rec),
                "recovery_std": _std(rec),
                "recovery_worst": min(rec),
                "forget_rebound_points": _mean(reb),
                "forget_rebound_std": _std(reb),
                "personal_acc": _mean([r["obs"]["personal_acc"] for r in results]),
                "forget_acc": _mean([r["obs"]["forget_acc"] for r in results]),
                "test_acc": _mean([r["obs"]["test_acc"] for r in results]),
                "meets_target": _mean(rec) >= 0.70 and _mean(reb) <= 5.0,
            }
        )
    return out


def plot(summary: list[dict[str, Any]], masked: dict[str, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    summary = [p for p in summary if "infeasible" not in p]
    for line in dict.fromkeys(p["line"] for p in summary):
        pts = [p for p in summary if p["line"] == line]
        xs = [p["recovery"] for p in pts]
        ys = [p["forget_rebound_points"] for p in pts]
        ax.errorbar(
            xs,
            ys,
            xerr=[p["recovery_std"] for p in pts],
            yerr=[p["forget_rebound_std"] for p in pts],
            marker="o",
            capsize=2,
            label=line,
        )
        for p, x, y in zip(pts, xs, ys):
            ax.annotate(
                f"damp {p['damp']:g}" if line == "damping" else f"k={p['k']}",
                (x, y),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
    ax.axhspan(-100, 5, xmin=0, xmax=1, color="green", alpha=0.05)
    ax.axvline(0.70, color="green", ls="--", lw=0.8)
    ax.axhline(5.0, color="green", ls="--", lw=0.8)
    ax.set_xlabel("recovery of personal accuracy (OBS − mask) / (personalized − mask)")
    ax.set_ylabel("forget accuracy given back by OBS (points)")
    ax.set_title(
        f"characters task, mean ± std over seeds; mask: forget {100 * masked['forget_drop']:.0f} pts, "
        f"personal −{100 * masked['personal_cost']:.1f} pts",
        fontsize=9,
    )
    ymax = max(p["forget_rebound_points"] + p["forget_rebound_std"] for p in summary)
    ax.set_ylim(min(-2.0, min(p["forget_rebound_points"] for p in summary) - 2), max(10.0, ymax + 3))
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the quick recipe (shorter global training)")
    parser.add_argument("--seeds", type=parse_seeds, default=(0, 1, 2), metavar="N,...")
    parser.add_argument("--ks", type=parse_seeds, default=DEFAULT_KS, metavar="K,...", help="forget directions")
    parser.add_argument("--damps", type=parse_floats, default=DEFAULT_DAMPS, metavar="D,...", help="damping line")
    parser.add_argument(
        "--kinds",
        type=parse_kinds,
        default=("principal", "contrast"),
        metavar="principal,contrast",
        help="forget directions: the forget inputs' principal directions and/or their contrast with the retain inputs",
    )
    parser.add_argument("--plot", type=Path, default=Path("benchmarks/results/forget_sweep.png"))
    add_json_option(parser)
    args = parser.parse_args(argv)
    from jaxapex.tasks import run_characters_task

    start = time.perf_counter()
    per_seed: dict[int, list[dict[str, Any]]] = {}
    runs_info = []
    points = None
    for seed in args.seeds:
        run = run_characters_task(
            quick=args.quick, seed=seed, log=lambda m, s=seed: print(f"[sweep seed {s}] {m}", file=sys.stderr)
        )
        points = points or sweep_points(args.ks, args.damps, run.unlearning.damp, args.kinds)
        rows = run.rows
        runs_info.append(
            {
                "seed": seed,
                "forget_drop": rows["personalized"]["forget_acc"] - rows["masked"]["forget_acc"],
                "personal_cost": rows["personalized"]["personal_acc"] - rows["masked"]["personal_acc"],
                "rows": {n: {k: rows[n][k] for k in ("forget_acc", "personal_acc", "test_acc")} for n in rows},
            }
        )
        per_seed[seed] = []
        for point in points:
            per_seed[seed].append(point_rows(run, point))
            r = per_seed[seed][-1]
            if "infeasible" in r:
                print(f"[sweep seed {seed}] {point} infeasible: {r['infeasible']}", file=sys.stderr)
                continue
            print(
                f"[sweep seed {seed}] {point['line']:28} k={point['k']:<3} damp={point['damp']:<8g} "
                f"recovery {r['recovery']:6.3f}  forget rebound {r['forget_rebound_points']:+6.1f}",
                file=sys.stderr,
            )
    summary = summarize(points, per_seed)
    masked = {k: _mean([i[k] for i in runs_info]) for k in ("forget_drop", "personal_cost")}
    print_table(
        summary,
        [
            Column("line", "compensation"),
            Column("k", "k"),
            Column("damp", "damp", "g"),
            Column("recovery", "recovery", ".3f"),
            Column("recovery_std", "± std", ".3f"),
            Column("recovery_worst", "worst", ".3f"),
            Column("forget_rebound_points", "forget back (pts)", "+.1f"),
            Column("personal_acc", "personal %", lambda v: f"{100 * v:.1f}"),
            Column("forget_acc", "forget %", lambda v: f"{100 * v:.1f}"),
            Column("meets_target", "target met", lambda v: "yes" if v else "no"),
        ],
        title=f"forget-aware Group OBS sweep, characters task, seeds {list(args.seeds)} (means); the mask drops the "
        f"forget class by {100 * masked['forget_drop']:.1f} points and costs {100 * masked['personal_cost']:.1f} "
        f"points of personal accuracy",
    )
    plot(summary, masked, args.plot)
    print(f"plot: {args.plot}")
    wall = round(time.perf_counter() - start, 1)
    print(f"total wall time {wall:.1f} s")
    write_json(
        args.json,
        {
            "task": "characters",
            "seeds": list(args.seeds),
            "quick": args.quick,
            "points": summary,
            "per_seed": {str(s): v for s, v in per_seed.items()},
            "runs": runs_info,
            "masked": masked,
            "wall_s": wall,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
