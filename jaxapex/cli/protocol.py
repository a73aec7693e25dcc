"""The protocol's role commands, each working on files another party sends.

client:   jaxapex commit    (after personalization: state + registration)
provider: jaxapex register  (accept a registration into the registry)
provider: jaxapex mask      (the public mask, as a request)
client:   jaxapex unlearn   (Group OBS with the committed G: the next state)
client:   jaxapex prove     (chunk proofs: the bundle)
provider: jaxapex verify    (every chunk proof against the registry; the registry advances on success)
client:   jaxapex settle    (after a VERIFIED verdict: the state for the next request)
provider: jaxapex registry show / export / migrate
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("commit", help="client: commit a personalized model (and at level F its Fisher blocks)")
    p.add_argument("--model", type=Path, required=True, help="personalized model checkpoint")
    p.add_argument("--data", type=Path, help="the client's data (.npz of arrays: image/label or tokens), level F")
    p.add_argument("--client-id", required=True)
    p.add_argument("--srs", type=Path, required=True)
    p.add_argument("--level", choices=("R", "F"), default="F")
    p.add_argument("--layers", default="fc1", help="MLP matrices to target: fc1 or fc1,fc2")
    p.add_argument("--block-size", type=int, default=16)
    p.add_argument("--lanes", type=int, default=None)
    p.add_argument("--blocks-per-chunk", type=int, default=None)
    p.add_argument("--damp", type=float, default=1e-4, help="Fisher damping (relative to its mean diagonal)")
    p.add_argument("--max-examples", type=int, default=480)
    p.add_argument("--state", type=Path, required=True, help="output: the client's private state")
    p.add_argument("--registration", type=Path, required=True, help="output: the public registration")
    _executor_options(p, "well-formedness proofs")
    p.set_defaults(func=cmd_commit)

    p = sub.add_parser("register", help="provider: accept a client's registration")
    p.add_argument("--registry", type=Path, required=True)
    p.add_argument("--registration", type=Path, required=True)
    p.add_argument("--srs", type=Path, required=True)
    p.set_defaults(func=cmd_register)

    p = sub.add_parser("mask", help="provider: compute the public mask and write an unlearning request")
    p.add_argument("--model", type=Path, required=True, help="global model checkpoint")
    p.add_argument("--forget", type=Path, required=True, help="forget set (.npz)")
    p.add_argument("--retain", type=Path, required=True, help="retain set (.npz)")
    p.add_argument("--layers", default="fc1")
    p.add_argument("--fraction", type=float, default=0.04)
    p.add_argument("--scorer", choices=("second-order", "activation"), default="second-order")  # masking.SCORERS
    p.add_argument(
        "--forget-directions",
        type=int,
        default=0,
        metavar="K",
        help="also ship the top-K principal directions of each layer's inputs on the forget set: the "
        "client's compensation must not move along them (forget-aware OBS, proven at level F); default 0",
    )
    p.add_argument("--request-id", default=None)
    p.add_argument("--model-id", default="model")
    p.add_argument(
        "--max-delta",
        type=float,
        default=None,
        help="public bound on the repair, max |Δ| in weight units, rounded up to a power of two "
        "(default: the protocol's, see docs/threat-model.md)",
    )
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=cmd_mask)

    p = sub.add_parser("unlearn", help="client: apply a request (Group OBS with the committed G)")
    p.add_argument("--state", type=Path, required=True)
    p.add_argument("--request", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="output: the next state, carrying the pending update")
    p.set_defaults(func=cmd_unlearn)

    p = sub.add_parser("prove", help="client: prove every chunk the request touches")
    p.add_argument("--state", type=Path, required=True, help="the state written by unlearn")
    p.add_argument("--request", type=Path, required=True)
    p.add_argument("--srs", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    _executor_options(p, "chunk proofs")
    p.set_defaults(func=cmd_prove)

    p = sub.add_parser("verify", help="provider: verify a proof bundle against the registry")
    p.add_argument("--registry", type=Path, required=True)
    p.add_argument("--request", type=Path, required=True)
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--srs", type=Path, required=True)
    p.add_argument("--json", type=Path, default=None, help="write the verdict (what `jaxapex settle` reads)")
    p.add_argument("--no-batch", action="store_true", help="one pairing check per chunk instead of one in all")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("settle", help="client: after a VERIFIED verdict, the state to use for the next request")
    p.add_argument("--state", type=Path, required=True, help="the state written by unlearn (pending update)")
    p.add_argument("--verdict", type=Path, required=True, help="the provider's verdict (jaxapex verify --json)")
    p.add_argument("--out", type=Path, required=True, help="output: the settled state")
    p.set_defaults(func=cmd_settle)

    p = sub.add_parser("registry", help="provider: inspect, export or migrate the registry database")
    rsub = p.add_subparsers(dest="registry_command", metavar="ACTION", required=True)
    q = rsub.add_parser("show", help="print the clients, or one client's record and history")
    q.add_argument("--registry", type=Path, required=True)
    q.add_argument("--client", default=None)
    q.set_defaults(func=cmd_registry_show)
    q = rsub.add_parser("export", help="a client's full record and history as JSON")
    q.add_argument("--registry", type=Path, required=True)
    q.add_argument("--client", required=True)
    q.add_argument("--out", type=Path, default=None, help="file to write (default: stdout)")
    q.set_defaults(func=cmd_registry_export)
    q = rsub.add_parser("migrate", help="copy a JSON registry directory (one file per client) into a database")
    q.add_argument("--from", dest="source", type=Path, required=True)
    q.add_argument("--to", type=Path, required=True)
    q.set_defaults(func=cmd_registry_migrate)

    p = sub.add_parser(
        "verify-batch",
        help="provider: verify many clients' bundles for a request, fanned out",
        description="Verify the bundles of many clients answering one request, the proof checks "
        "spread over worker processes or a Ray cluster; the registry is updated here, "
        "per client, for the accepted ones. Exit status 0 only if all were accepted.",
    )
    p.add_argument("--registry", type=Path, required=True)
    p.add_argument("--request", type=Path, required=True)
    p.add_argument("--bundles", type=Path, nargs="+", required=True, help="bundle directories (any clients)")
    p.add_argument("--srs", type=Path, required=True)
    _executor_options(p, "bundle checks")
    p.add_argument("--json", type=Path, default=None, help="write one result per bundle as JSON")
    p.set_defaults(func=cmd_verify_batch)


def _executor_options(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--executor",
        choices=("process", "ray", "serial"),
        default="process",
        help=f"where the {what} run: a local process pool, Ray, or this process",
    )
    p.add_argument("--workers", type=int, default=None, help="parallel workers (default: one per 4 cores)")
    p.add_argument(
        "--ray-address",
        default=None,
        help="with --executor ray: join this running cluster ('auto', or host:port); default: the "
        "RAY_ADDRESS variable, else a local Ray runtime. Every node must read the paths given",
    )


def _load_npz(path: Path, what: str) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise SystemExit(f"error: {what} file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as err:
        raise SystemExit(f"error: {what} file {path} is not a readable .npz ({err})") from None
    _check_finite(arrays, f"{what} file {path}", "array")
    return arrays


def _load_model(path: Path):
    from jaxapex.checkpoints import flatten_params, load_checkpoint
    from jaxapex.models import build_model

    params, config, _metadata = load_checkpoint(path)
    _check_finite(flatten_params(params), f"checkpoint {path}", "parameter")
    return build_model(config), params


def _check_finite(arrays: dict, where: str, what: str) -> None:
    """NaN/Inf anywhere would surface much later as a confusing error elsewhere: name it here."""
    for name, value in arrays.items():
        value = np.asarray(value)
        if value.dtype.kind in "fc" and not np.isfinite(value).all():
            bad = int((~np.isfinite(value)).sum())
            raise SystemExit(f"error: {where}: {what} {name!r} holds {bad} NaN/Inf value(s) of {value.size}")


def _srs(path: Path, *, need_k: int | None = None, sha256: str | None = None):
    """Open an SRS file; one-line errors naming the file and the k it has and needs."""
    from circuit_compiler.srs import Srs, expected_file_size, srs_info

    if not path.is_file():
        raise SystemExit(
            f"error: SRS file {path} does not exist" + (f" (an SRS of k >= {need_k} is needed)" if need_k else "")
        )
    try:
        info = srs_info(path)
    except ValueError as err:
        raise SystemExit(f"error: SRS file {path}: {err}") from None
    if not info["size_ok"]:
        raise SystemExit(
            f"error: SRS file {path}: header says k = {info['k']}, which takes "
            f"{expected_file_size(info['k'])} bytes; the file has {info['bytes']} (truncated or corrupt)"
        )
    if need_k is not None and info["k"] < need_k:
        raise SystemExit(f"error: SRS file {path} has k = {info['k']}, the chunk circuits need k >= {need_k}")
    if sha256 is not None and info["sha256"] != sha256:
        raise SystemExit(
            f"error: SRS file {path} has SHA-256 {info['sha256'][:16]}..., the artifacts were made "
            f"with SRS {sha256[:16]}..."
        )
    import warnings

    from circuit_compiler.srs import InsecureSrsWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureSrsWarning)  # said once below, not as a warning traceback
        srs = Srs.load(path)
    if srs.development:
        print(f"note: {path} is a DEVELOPMENT SRS (not for production)", file=sys.stderr)
    return srs


def cmd_commit(args: argparse.Namespace) -> int:
    from circuit_compiler.fixedpoint import spec_for_block_size
    from jaxapex.protocol import client, ml
    from jaxapex.protocol.config import LayerShape, ProofConfig

    model, params = _load_model(args.model)
    paths = ml.target_paths(params, args.layers.split(","))
    layers = tuple(LayerShape(ml.path_name(p), *np.asarray(ml.get_matrix(params, p)).shape) for p in paths)
    lanes = args.lanes or args.block_size
    nb = args.blocks_per_chunk or max(layer.size for layer in layers) // args.block_size
    config = ProofConfig(
        layers=layers,
        level=args.level,
        block_size=args.block_size,
        lanes=lanes,
        blocks_per_chunk=nb,
        spec=spec_for_block_size(args.block_size),
    )
    G = None
    if args.level == "F":
        if args.data is None:
            raise SystemExit("error: level F needs --data (the client's data for its Fisher blocks)")
        data = _load_npz(args.data, "client data")
        from jaxapex.models import example_loss_fn

        G = ml.inverse_fisher(
            example_loss_fn(model),
            params,
            paths,
            data,
            block_size=args.block_size,
            damp=args.damp,
            max_examples=args.max_examples,
        )
    from jaxapex.protocol import chunks

    srs = _srs(args.srs, need_k=chunks.circuit_k(config))
    state, registration = client.commit(
        client_id=args.client_id,
        params=params,
        config=config,
        srs=srs,
        inverse_fisher=G,
        executor=args.executor,
        workers=args.workers,
        ray_address=args.ray_address,
        progress=True,
    )
    state.save(args.state)
    client.write_registration(args.registration, registration)
    print(
        f"committed {len(layers)} layers in {sum(config.n_chunks(l) for l in layers)} chunks "
        f"(level {args.level}, B = {args.block_size}); registration: {args.registration}"
    )
    return 0


def cmd_register(args: argparse.Namespace) -> int:
    from jaxapex.protocol import provider
    from jaxapex.protocol.registry import Registry

    record = provider.register(Registry(args.registry), args.registration, srs=_srs(args.srs))
    print(f"registered client {record['client_id']!r}")
    return 0


def cmd_mask(args: argparse.Namespace) -> int:
    from jaxapex.protocol import ml
    from jaxapex.protocol.requests import UnlearningRequest, new_request_id

    if args.forget_directions < 0:
        raise SystemExit(f"error: --forget-directions must be >= 0, got {args.forget_directions}")
    model, params = _load_model(args.model)
    paths = ml.target_paths(params, args.layers.split(","))
    forget = _load_npz(args.forget, "forget set")
    masks = ml.provider_masks(
        model,
        params,
        paths,
        forget,
        _load_npz(args.retain, "retain set"),
        fraction=args.fraction,
        scorer=args.scorer,
    )
    from circuit_compiler.fixedpoint import PROTOCOL_MAX_DELTA, round_up_to_power_of_two

    try:
        max_delta = PROTOCOL_MAX_DELTA if args.max_delta is None else round_up_to_power_of_two(args.max_delta)
    except ValueError as err:
        raise SystemExit(f"error: --max-delta {args.max_delta}: {err}") from None
    try:
        directions = ml.provider_directions(model, params, paths, forget, k=args.forget_directions)
    except ValueError as err:
        raise SystemExit(f"error: --forget-directions {args.forget_directions}: {err}") from None
    request = UnlearningRequest(
        request_id=args.request_id or new_request_id(),
        model_id=args.model_id,
        masks=masks,
        directions=directions,
        max_delta=max_delta,
    )
    request.save(args.out)
    extra = f", {request.forget_directions} forget direction(s) per layer" if request.forget_directions else ""
    print(
        f"request {request.request_id}: {request.masked_fraction():.2%} of the target weights masked{extra}, "
        f"repair bound |Δ| ≤ {max_delta:g} -> {args.out}"
    )
    return 0


def cmd_unlearn(args: argparse.Namespace) -> int:
    from jaxapex.protocol import client
    from jaxapex.protocol.requests import UnlearningRequest

    state = client.unlearn(client.ClientState.load(args.state), UnlearningRequest.load(args.request))
    state.save(args.out)
    print(f"unlearned; next state (with the pending update to prove): {args.out}")
    return 0


def cmd_prove(args: argparse.Namespace) -> int:
    from jaxapex.protocol import chunks, client
    from jaxapex.protocol.requests import UnlearningRequest

    state = client.ClientState.load(args.state)
    request = UnlearningRequest.load(args.request)
    srs = _srs(args.srs, need_k=chunks.circuit_k(state.config), sha256=state.config.srs_hash)
    t0 = time.perf_counter()
    fields, blobs = client.prove(
        state, request, srs, workers=args.workers, executor=args.executor, ray_address=args.ray_address
    )
    client.write_bundle(args.out, fields, blobs)
    print(
        f"{len(fields['chunks'])} chunk proofs ({sum(map(len, blobs.values())) / 1024:.1f} KiB) in "
        f"{time.perf_counter() - t0:.1f} s -> {args.out}"
    )
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from jaxapex.protocol import provider
    from jaxapex.protocol.registry import Registry
    from jaxapex.protocol.requests import UnlearningRequest

    t_start = time.perf_counter()
    request = UnlearningRequest.load(args.request)
    registry = Registry(args.registry, create=False)
    result: dict = {"request_id": request.request_id, "bundle": str(args.bundle)}
    try:
        report = provider.verify(registry, request, args.bundle, srs=_srs(args.srs), batch=not args.no_batch)
        result.update(
            verified=True,
            client_id=report.client_id,
            chunks=report.chunks_verified,
            model_version=report.model_version,
            verify_s=report.verify_s,
            per_chunk=report.per_chunk,
            new_commitments={
                layer: {str(c): h for c, h in per.items()} for layer, per in report.new_commitments.items()
            },
            peak_rss_mb=report.peak_rss_mb,
        )
        times = [c["verify_s"] for c in report.per_chunk]
        per = (
            (f"{min(times) * 1e3:.0f}-{max(times) * 1e3:.0f} ms" if len(set(times)) > 1 else f"{times[0] * 1e3:.0f} ms")
            if times
            else "-"
        )
        print(
            f"VERIFIED: client {report.client_id!r}, request {request.request_id!r}: {report.chunks_verified} "
            f"chunks in {report.verify_s:.2f} s ({per} per chunk{', one batched pairing check' if len(times) > 1 and not args.no_batch else ''}); "
            f"peak RSS {report.peak_rss_mb:.0f} MB; registry at model version {report.model_version}"
        )
        code = 0
    except provider.VerificationFailed as err:
        result.update(verified=False, check=err.check, layer=err.layer, chunk=err.chunk, reason=str(err))
        print(f"NOT VERIFIED: {err}", file=sys.stderr)
        code = 1
    result["wall_s"] = time.perf_counter() - t_start
    if args.json:
        _write_json(args.json, result)
    return code


def cmd_verify_batch(args: argparse.Namespace) -> int:
    from jaxapex.protocol import provider
    from jaxapex.protocol.registry import Registry
    from jaxapex.protocol.requests import UnlearningRequest

    request = UnlearningRequest.load(args.request)
    t0 = time.perf_counter()
    outcomes = provider.verify_many(
        Registry(args.registry),
        [(request, b) for b in args.bundles],
        srs=_srs(args.srs),
        executor=args.executor,
        workers=args.workers,
        ray_address=args.ray_address,
    )
    wall = time.perf_counter() - t0
    rows = []
    for o in outcomes:
        if o.accepted:
            rows.append(
                {
                    "bundle": o.bundle,
                    "client_id": o.client_id,
                    "verified": True,
                    "chunks": o.report.chunks_verified,
                    "verify_s": o.report.verify_s,
                }
            )
            print(f"VERIFIED: {o.bundle} (client {o.client_id!r}, {o.report.chunks_verified} chunks)")
        else:
            f = o.failure
            rows.append(
                {
                    "bundle": o.bundle,
                    "client_id": o.client_id,
                    "verified": False,
                    "check": f.check,
                    "layer": f.layer,
                    "chunk": f.chunk,
                    "reason": str(f),
                }
            )
            print(f"NOT VERIFIED: {o.bundle}: {f}", file=sys.stderr)
    accepted = sum(r["verified"] for r in rows)
    print(
        f"{accepted}/{len(rows)} bundles accepted in {wall:.1f} s ({60 * len(rows) / wall:.1f} bundles/min, "
        f"executor {args.executor}); registry updated for the accepted ones"
    )
    if args.json:
        _write_json(args.json, {"request_id": request.request_id, "wall_s": wall, "bundles": rows})
    return 0 if accepted == len(rows) else 1


def _write_json(path: Path, data) -> None:
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cmd_settle(args: argparse.Namespace) -> int:
    from jaxapex.protocol import client

    state = client.ClientState.load(args.state)
    try:
        verdict = json.loads(args.verdict.read_text())
    except FileNotFoundError:
        raise SystemExit(f"error: verdict file {args.verdict} does not exist") from None
    except json.JSONDecodeError as err:
        raise SystemExit(f"error: verdict file {args.verdict} is not valid JSON ({err})") from None
    if not isinstance(verdict, dict):
        raise SystemExit(f"error: verdict file {args.verdict} should hold a JSON object")
    try:
        settled = client.settle(state, verdict)
    except ValueError as err:
        raise SystemExit(f"error: {args.verdict}: {err}") from None
    settled.save(args.out)
    print(
        f"settled request {state.pending['request_id']!r}: model version {settled.model_version}; next state: "
        f"{args.out}"
    )
    return 0


def cmd_registry_show(args: argparse.Namespace) -> int:
    from jaxapex.protocol.registry import Registry

    registry = Registry(args.registry, create=False)
    if args.client is None:
        clients = registry.clients()
        print(f"registry {args.registry}: {len(clients)} client(s)")
        for client_id in clients:
            record = registry.get(client_id)
            print(
                f"  {client_id}: level {record['config']['level']}, model version {record['model_version']}, "
                f"{len(record['history'])} accepted request(s)"
            )
        return 0
    record = registry.export(args.client)
    config = record["config"]
    layers = ", ".join(
        f"{l['name']} ({l['out_features']}x{l['in_features']}, {len(record['commitments'][l['name']])} chunks)"
        for l in config["layers"]
    )
    print(
        f"client {record['client_id']}: registered {record['registered_at']}, level {config['level']}, "
        f"B = {config['block_size']}, {config['blocks_per_chunk']} blocks per chunk"
    )
    print(f"  layers: {layers}")
    print(
        f"  configuration {record['config_digest'][:16]}..., SRS {config['srs_hash'][:16]}..., "
        f"registration {record['registration'][:16]}..."
    )
    print(f"  model version {record['model_version']}; accepted requests:")
    for r in record["requests"]:
        chunks = ", ".join(f"{c['layer']}#{c['chunk']}" for c in r["chunks"])
        print(
            f"    {r['model_version']:>3}  {r['request_id']}  {r['accepted_at']}  bundle "
            f"{(r['bundle'] or '-')[:16]}  chunks: {chunks or '-'}"
        )
    return 0


def cmd_registry_export(args: argparse.Namespace) -> int:
    from jaxapex.protocol.registry import Registry

    record = Registry(args.registry, create=False).export(args.client)
    if args.out is None:
        print(json.dumps(record, indent=1))
    else:
        _write_json(args.out, record)
        print(f"exported {args.client!r} ({len(record['requests'])} requests) -> {args.out}")
    return 0


def cmd_registry_migrate(args: argparse.Namespace) -> int:
    from jaxapex.protocol.registry import Registry, migrate_json_registry

    clients = migrate_json_registry(args.source, Registry(args.to))
    print(f"migrated {len(clients)} client(s) from {args.source} into {args.to}: {', '.join(clients) or '-'}")
    return 0
