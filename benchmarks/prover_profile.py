"""Where a chunk proof's CPU time goes: MSM / FFT / quotient evaluation / other, from ``perf`` call stacks.

    python -m benchmarks.prover_profile [--block-size 16] [--k 14] [--level F] [--proofs 3] [--frequency 499]
        [--json PATH]

Lowers the first sampled ViT-B fc1 chunk of ``benchmarks.vitb_proof`` and proves it ``--proofs`` times in a
child process pinned to one CPU, under ``perf record --call-graph dwarf`` (nothing else runs MSMs there: no
commitments, no verification), then sorts every sample of the prover (stacks through midnight-proofs, blst
or the extension; Python lowering and keygen left out) by the innermost frame it recognizes:

* ``msm``: blst's Pippenger and point arithmetic (``POINTonE1*``, ``*_384``: only G1 arithmetic uses the
  384-bit base field) -- commitments of columns, quotient pieces and the opening;
* ``fft``: ``best_fft`` / ``recursive_butterfly*`` (coefficient <-> evaluation conversions, extended cosets);
* ``quotient``: midnight's ``evaluation`` module (the gate, lookup and permutation numerators on the
  extended domain);
* ``other``: the rest (lookup permutations and products, witness synthesis, transcript, allocation).

DWARF unwinding truncates some worker-thread stacks; a sample whose frames name none of the above but whose
leaf is 384-bit arithmetic is counted as ``msm``, one with a 256-bit leaf (scalar field: FFT or quotient)
as ``field256`` -- reported apart, so the shares stay honest about what could not be attributed.
Needs ``perf`` (linux-perf) and permission to profile (root, or ``kernel.perf_event_paranoid`` ≤ 1).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.report import Column, add_json_option, machine, print_table, write_json

PROVER = re.compile(r"midnight_proofs|midnight_curves|blst|POINTonE1|_mont_|halo2|rayon")
SKIP = re.compile(r"keygen")
CATEGORIES = (
    ("msm", re.compile(r"pippenger|POINTonE1|multi_exp|msm|blst_p1")),
    ("fft", re.compile(r"best_fft|butterfly|\bfft\b|::fft::")),
    ("quotient", re.compile(r"plonk::evaluation::|Evaluator")),
)
LEAF_384 = re.compile(r"_384")
LEAF_256 = re.compile(r"_256|blst_fr_|fr::|Fq as ff")


def classify(frames: list[str]) -> str | None:
    """The category of one sample (frames leaf first), or None when it is not the prover's."""
    joined = "\n".join(frames)
    if not PROVER.search(joined) or SKIP.search(joined):
        return None
    for frame in frames:
        for name, pattern in CATEGORIES:
            if pattern.search(frame):
                return name
    if frames and LEAF_384.search(frames[0]):
        return "msm"
    if frames and LEAF_256.search(frames[0]):
        return "field256"
    return "other"


def samples(script_output: str) -> list[list[str]]:
    """``perf script -F tid,ip,sym`` text -> each sample's symbol names, leaf first."""
    out = []
    for block in script_output.split("\n\n"):
        lines = [line.split(None, 1) for line in block.strip().splitlines()[1:]]
        out.append([parts[1] for parts in lines if len(parts) == 2])
    return out


def prove_repeatedly(args: argparse.Namespace) -> None:
    """The profiled child: one chunk lowered once, keygen, ``args.proofs`` sized proofs; prints per-proof CPU."""
    import time

    from benchmarks import commit_scheme, vitb_proof
    from circuit_compiler import backend

    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    plan_args = argparse.Namespace(
        model="vitb", level=args.level, block_size=args.block_size, lanes=None, layout=None,
        blocks_per_chunk=None, k=args.k, spec=None, mask="random", seed=0, sample="1",
        srs_dir=str(vitb_proof.DEFAULT_SRS_DIR),
    )  # fmt: skip
    plan = vitb_proof.plan(plan_args)
    layer, chunk = plan.sample[0]
    cs, assignment, _, _ = vitb_proof.lower_job(plan.config, plan.workload, layer, chunk, plan.masks[layer])
    keys = backend.keygen(plan.srs, plan.cs)
    for _ in range(args.proofs):
        cpu, wall = commit_scheme._cpu_seconds(), time.perf_counter()
        backend.prove(plan.srs, keys, cs, assignment, commitment_scheme="sized")
        print(f"proof: wall {time.perf_counter() - wall:.2f} s, cpu {commit_scheme._cpu_seconds() - cpu:.2f} s")


def profile(args: argparse.Namespace) -> dict[str, Any]:
    if shutil.which("perf") is None:
        raise SystemExit("prover_profile: perf is not installed (Debian package linux-perf)")
    with tempfile.TemporaryDirectory(prefix="jaxapex-perf-") as tmp:
        data = Path(tmp) / "perf.data"
        command = [sys.executable, "-m", "benchmarks.prover_profile", "--child", "--block-size", str(args.block_size)]
        command += ["--k", str(args.k), "--level", args.level, "--proofs", str(args.proofs)]
        record = ["perf", "record", "-q", "-F", str(args.frequency), "--call-graph", "dwarf,16384", "-o", str(data)]
        run = subprocess.run(record + ["--"] + command, capture_output=True, text=True, env=os.environ.copy())
        if run.returncode:
            raise SystemExit(f"prover_profile: {' '.join(command)} failed:\n{run.stderr[-2000:]}")
        script = subprocess.run(
            ["perf", "script", "-i", str(data), "-F", "tid,ip,sym"], capture_output=True, text=True, check=True
        ).stdout
    counts = collections.Counter(c for c in map(classify, samples(script)) if c is not None)
    total = sum(counts.values())
    shares = {name: counts[name] / total for name in ("msm", "fft", "quotient", "field256", "other")}
    return {
        "block_size": args.block_size,
        "k": args.k,
        "level": args.level,
        "frequency_hz": args.frequency,
        "prover_samples": total,
        "shares": shares,
        "proofs": [line for line in run.stdout.splitlines() if line.startswith("proof:")],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--block-size", type=int, default=16)
    parser.add_argument("--k", type=int, default=14)
    parser.add_argument("--level", choices=("R", "F"), default="F")
    parser.add_argument("--frequency", type=int, default=499, help="perf samples per second")
    parser.add_argument("--proofs", type=int, default=3, help="proofs of the chunk (keygen's share shrinks)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    add_json_option(parser)
    args = parser.parse_args(argv)
    if args.child:
        prove_repeatedly(args)
        return 0
    result = profile(args)
    row = {"setting": f"level {args.level}, B = {args.block_size}, k = {args.k}", "samples": result["prover_samples"]}
    row |= {name: 100 * share for name, share in result["shares"].items()}
    print("\n".join(result["proofs"]))
    print_table(
        [row],
        [Column("setting", "one sized chunk proof"), Column("samples", "prover samples")]
        + [Column(name, f"{name} %", ".1f") for name in ("msm", "fft", "quotient", "field256", "other")],
        title="share of the prover's perf samples (DWARF call stacks; field256 = 256-bit leaf, caller unknown)",
    )
    write_json(args.json, result | {"machine": machine()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
