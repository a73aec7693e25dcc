"""The whole story on offline data, every role through its real artifacts.

Two tasks (:data:`DEMO_TASKS`): ``characters``, the real-data vision task (a ViT trained on MNIST + printed
capitals, personalized on handwriting fonts, asked to forget the digit 3; needs the data packages of
``jaxapex data status``; trained models are cached under ``runs/cache/characters``), and ``digits``, the
small 8×8 scikit-learn digits task embedded in the package (no data to install; the test fixture).

provider trains the global model → client personalizes → client commits (model and, at level F, its
inverse-Fisher blocks) and registers → provider computes the mask and issues a request → client unlearns
(Group OBS with the committed G) and proves every touched chunk → provider verifies against the registry →
the accuracy table of the personalized, masked and *proven* models.

With ``forget_directions = K > 0`` the request also carries the top-K principal directions of each target
layer's inputs on the forget set (global model), and the client proves the forget-aware update at level F.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from circuit_compiler import fixedpoint
from circuit_compiler.srs import InsecureSrsWarning, Srs

from .demo_tasks import DEFAULT_TASK, DEMO_TASKS
from .protocol import chunks as ch
from .protocol import client, ml, provider
from .protocol.config import LayerShape, ProofConfig
from .protocol.registry import Registry
from .protocol.requests import UnlearningRequest, new_request_id


@dataclasses.dataclass(frozen=True, kw_only=True)
class DemoOptions:
    out_dir: Path
    task: str = DEFAULT_TASK  # a key of DEMO_TASKS
    quick: bool = True
    level: str = "F"
    block_size: int | None = None  # default: the task recipe's block size
    lanes: int | None = None  # default: the block size (one row per output weight)
    blocks_per_chunk: int | None = None  # default: a whole layer per chunk when it fits
    seed: int = 0
    workers: int | None = None
    progress: bool = True
    task_config: Any = None  # the task's config (tasks.CharactersTaskConfig / VisionTaskConfig) overriding the recipe
    forget_directions: int = 0  # K: forget directions in the request (forget-aware OBS, level F)


def _log(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def _peak_rss_mb() -> float:
    """The demo process's own peak (VmHWM). The proving workers' peaks are not in it: ``RUSAGE_CHILDREN``
    would report the largest child's ``ru_maxrss``, which a forked worker inherits from this process's peak,
    so it overstates what proving needs (benchmarks.vitb_proof measures the workers themselves)."""
    from circuit_compiler.executors import peak_rss_mb

    return peak_rss_mb()


def _dev_srs(path: Path, k: int, seed: int) -> Srs:
    if path.exists():
        srs = Srs.load(path)
        if srs.k >= k:
            return srs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureSrsWarning)
        _log(f"generating a DEVELOPMENT SRS (k = {k}) from local randomness: not for production use")
        return Srs.generate_dev(k, path, seed=seed)


def _mask_params(params, masks: dict[str, np.ndarray]):
    for name, mask in masks.items():
        W = client.layer_matrix(params, name)
        params = client.set_layer_matrix(params, name, np.where(mask, 0.0, W))
    return params


def run_demo(options: DemoOptions) -> dict[str, Any]:
    if options.task not in DEMO_TASKS:
        raise ValueError(f"DemoOptions.task: unknown task {options.task!r}; choose from {', '.join(DEMO_TASKS)}")
    task = DEMO_TASKS[options.task]
    if options.forget_directions and options.level != "F":
        raise ValueError(
            f"--forget-directions {options.forget_directions}: forget directions are proven at level F only"
        )
    out = Path(options.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    _log(f"training the global model and personalizing the client ({task.describe})")
    run = task.run(
        quick=options.quick, seed=options.seed, block_size=options.block_size, config=options.task_config, log=_log
    )
    paths = run.target_paths
    B = run.unlearning.block_size
    layers = tuple(LayerShape(ml.path_name(p), *np.asarray(ml.get_matrix(run.params_personal, p)).shape) for p in paths)
    weights_total = sum(layer.size for layer in layers)
    lanes = options.lanes or B
    nb = options.blocks_per_chunk or max(layer.size for layer in layers) // B
    config = ProofConfig(
        layers=layers,
        level=options.level,
        block_size=B,
        lanes=lanes,
        blocks_per_chunk=nb,
        spec=fixedpoint.spec_for_block_size(B),
    )
    srs = _dev_srs(out / "srs.bin", ch.circuit_k(config), options.seed)

    # Client, at personalization time: commitments to θ and (level F) to G, registered with the provider.
    _log(
        f"client: Fisher blocks (B = {B}) on its personal data, commitments to {len(layers)} layers "
        f"({weights_total} weights)"
    )
    t0 = time.perf_counter()
    G = (
        ml.inverse_fisher(
            run.client_example_loss,
            run.params_personal,
            paths,
            run.datasets["personal_train"],
            block_size=B,
            damp=run.unlearning.damp,
            max_examples=run.unlearning.fisher_examples,
        )
        if options.level == "F"
        else None
    )
    state0, registration = client.commit(
        client_id="client-0", params=run.params_personal, config=config, srs=srs, inverse_fisher=G
    )
    state0.save(out / "client" / "state-0")
    client.write_registration(out / "registration", registration)
    for stale in (out / "provider").glob("registry.db*"):  # a rerun starts a fresh registry
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    registry = Registry(out / "provider" / "registry.db")
    provider.register(registry, out / "registration", srs=srs)
    commit_s = time.perf_counter() - t0

    # Provider: the mask (and the forget directions) from the global model and its data, as a request.
    request = UnlearningRequest(
        request_id=new_request_id(),
        model_id=task.model_id,
        masks={ml.path_name(p): np.asarray(run.masks[p], dtype=bool) for p in paths},
        description=f"forget class {run.settings['forget_class']} (the provider's forget set)",
        directions=ml.provider_directions(
            run.model, run.params_global, paths, run.datasets["forget_train"], k=options.forget_directions
        ),
    )
    request.save(out / "provider" / "request")
    request = UnlearningRequest.load(out / "provider" / "request")
    directions = f", {request.forget_directions} forget direction(s) per layer" if request.forget_directions else ""
    _log(
        f"provider: request {request.request_id} masks {request.masked_fraction():.2%} of the target weights"
        f"{directions}"
    )

    # Client: unlearn (Group OBS with the committed G) and prove every touched chunk.
    t0 = time.perf_counter()
    state1 = client.unlearn(client.ClientState.load(out / "client" / "state-0"), request)
    state1.save(out / "client" / "state-1")
    unlearn_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    fields, blobs = client.prove(state1, request, srs, progress=options.progress, workers=options.workers)
    client.write_bundle(out / "client" / "bundle", fields, blobs)
    prove_s = time.perf_counter() - t0
    proof_bytes = sum(len(b) for b in blobs.values())

    # Provider: verification against the registry.
    verified, failure = True, None
    try:
        report = provider.verify(registry, request, out / "client" / "bundle", srs=srs)
        verify_s = report.verify_s
    except provider.VerificationFailed as err:
        verified, failure, verify_s = False, str(err), float("nan")

    # What each model does: the proven model is the one the client now serves.
    params_masked = _mask_params(run.params_personal, request.masks)
    table = {
        "personalized": run.evaluate(run.params_personal),
        "masked": run.evaluate(params_masked),
        "obs": run.evaluate(state1.params),
    }
    float_obs = run.rows["obs"]  # the same OBS in float, before quantization: how much the proof costs in accuracy
    recovery = _recovery(table)
    result = {
        "task": options.task,
        "verified": verified,
        "failure": failure,
        "level": options.level,
        "forget_directions": request.forget_directions,
        "block_size": B,
        "lanes": lanes,
        "blocks_per_chunk": nb,
        "k": ch.chunk_circuit(config, request.forget_directions).cs.k,
        "chunks": len(fields["chunks"]),
        "chunks_total": sum(config.n_chunks(layer) for layer in layers),
        "weights": weights_total,
        "mask_fraction": request.masked_fraction(),
        "commit_s": commit_s,
        "unlearn_s": unlearn_s,
        "prove_s": prove_s,
        "verify_s": verify_s,
        "proof_bytes": proof_bytes,
        "peak_rss_mb": _peak_rss_mb(),
        "table": table,
        "recovery": recovery,
        "float_obs": float_obs,
        "total_s": time.perf_counter() - t_start,
        "srs_sha256": srs.sha256,
    }
    _plot(result, out / "demo.png")
    (out / "demo.json").write_text(json.dumps(result, indent=1))
    return result


def _recovery(table: dict[str, dict[str, float]]) -> float | None:
    p, m, o = (table[r]["personal_acc"] for r in ("personalized", "masked", "obs"))
    return None if abs(p - m) < 1e-12 else (o - m) / (p - m)


def format_result(result: dict[str, Any]) -> str:
    lines = ["", "model                 forget acc   personal acc   test acc"]
    for row in ("personalized", "masked", "obs"):
        r = result["table"][row]
        label = {"obs": "OBS (proven)"}.get(row, row)
        lines.append(f"{label:<20} {r['forget_acc']:>10.3f} {r['personal_acc']:>14.3f} {r['test_acc']:>10.3f}")
    rec = result["recovery"]
    lines.append(f"recovery of personal accuracy: {'n/a' if rec is None else f'{rec:.2f}'}")
    lines.append("")
    forget = result.get("forget_directions", 0)
    lines.append(
        f"level {result['level']}{f' with {forget} forget direction(s)' if forget else ''}, "
        f"B = {result['block_size']}, k = {result['k']}: "
        f"{result['chunks']} of {result['chunks_total']} chunks proven in {result['prove_s']:.1f} s, "
        f"{result['proof_bytes'] / 1024:.1f} KiB of proofs, verified in {result['verify_s']:.2f} s, "
        f"peak RSS (demo process) {result['peak_rss_mb']:.0f} MB"
    )
    lines.append(
        "VERIFIED: the provider accepted the unlearning proof"
        if result["verified"]
        else f"NOT VERIFIED: {result['failure']}"
    )
    return "\n".join(lines)


def _plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = ["personalized", "masked", "obs"]
    metrics = [("forget_acc", "forget set"), ("personal_acc", "personal set"), ("test_acc", "global test")]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    width = 0.26
    for i, row in enumerate(rows):
        vals = [result["table"][row][m] for m, _ in metrics]
        bars = ax.bar(
            np.arange(len(metrics)) + (i - 1) * width, vals, width, label={"obs": "OBS (proven)"}.get(row, row)
        )
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks(np.arange(len(metrics)), [label for _, label in metrics])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("top-1 accuracy")
    status = "verified" if result["verified"] else "NOT verified"
    ax.set_title(
        f"jaxapex demo: level {result['level']} proof {status} ({result['chunks']} chunks, {result['prove_s']:.0f} s)",
        fontsize=9,
    )
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
