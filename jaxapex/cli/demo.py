"""``jaxapex demo``: the whole verifiable-unlearning story on the embedded offline data."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from jaxapex.demo_tasks import DEFAULT_TASK, DEMO_TASKS

TASK_HELP = (
    "which task (default %(default)s): digits, the small 8x8 task embedded in the package, or characters, the "
    "real-data task (needs `jaxapex data status`'s packages; --quick took ~20 min on 2 shared cores, over the "
    "10-minute budget, which is why it is not the default)"
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="run the end-to-end demo (train, personalize, commit, mask, unlearn, prove, verify)"
    )
    p.add_argument(
        "--task",
        choices=tuple(DEMO_TASKS),
        default=DEFAULT_TASK,
        help=TASK_HELP,
    )
    p.add_argument("--quick", action="store_true", help="small settings that finish in minutes on 2 cores")
    p.add_argument(
        "--out", type=Path, default=Path("runs/demo"), help="directory for every artifact (default runs/demo)"
    )
    p.add_argument("--level", choices=("R", "F"), default="F", help="binding level of the proof (default F)")
    p.add_argument("--block-size", type=int, default=None, help="OBS block size B (default: the recipe's)")
    p.add_argument("--lanes", type=int, default=None, help="MAC lanes per row at level F (default B)")
    p.add_argument("--blocks-per-chunk", type=int, default=None, help="blocks per proof (default: a whole layer)")
    p.add_argument("--workers", type=int, default=None, help="prover processes (default: one per core)")
    p.add_argument(
        "--forget-directions",
        type=int,
        default=0,
        metavar="K",
        help="level F: the request also carries K forget directions per layer and the client proves the "
        "forget-aware update (default 0: plain Group OBS)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="also write the result figures to this JSON file")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from jaxapex.demo import DemoOptions, format_result, run_demo

    result = run_demo(
        DemoOptions(
            out_dir=args.out,
            task=args.task,
            quick=args.quick,
            level=args.level,
            block_size=args.block_size,
            lanes=args.lanes,
            blocks_per_chunk=args.blocks_per_chunk,
            seed=args.seed,
            forget_directions=args.forget_directions,
            workers=args.workers,
            progress=not args.no_progress,
        )
    )
    print(format_result(result))
    print(f"artifacts in {args.out}/ (plot: {args.out / 'demo.png'})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_name(args.json.name + ".tmp")
        tmp.write_text(json.dumps(result, indent=1))
        os.replace(tmp, args.json)
    return 0 if result["verified"] else 1
