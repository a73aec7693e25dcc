"""The protocol's role commands, each working on files another party sends.

client:   jaxapex commit    (after personalization: state + registration)
provider: jaxapex register  (accept a registration into the registry)
provider: jaxapex mask      (the public mask, as a request)
client:   jaxapex unlearn   (Group OBS with the committed G: the next state)
client:   jaxapex prove     (chunk proofs: the bundle)
provider: jaxapex verify    (every chunk proof against the registry; the registry advances on success)
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
    p.add_argument("--scorer", choices=("second-order", "activation"), default="second-order")
    p.add_argument("--request-id", default=None)
    p.add_argument("--model-id", default="model")
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
    p.add_argument("--json", type=Path, default=None)
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("verify-batch", help="provider: verify many clients' bundles for a request, fanned out",
                       description="Verify the bundles of many clients answering one request, the proof checks "
                                   "spread over worker processes or a Ray cluster; the registry is updated here, "
                                   "per client, for the accepted ones. Exit status 0 only if all were accepted.")
    p.add_argument("--registry", type=Path, required=True)
    p.add_argument("--request", type=Path, required=True)
    p.add_argument("--bundles", type=Path, nargs="+", required=True, help="bundle directories (any clients)")
    p.add_argument("--srs", type=Path, required=True)
    _executor_options(p, "bundle checks")
    p.add_argument("--json", type=Path, default=None, help="write one result per bundle as JSON")
    p.set_defaults(func=cmd_verify_batch)


def _executor_options(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--executor", choices=("process", "ray", "serial"), default="process",
                   help=f"where the {what} run: a local process pool, Ray, or this process")
    p.add_argument("--workers", type=int, default=None, help="parallel workers (default: one per 4 cores)")
    p.add_argument("--ray-address", default=None,
                   help="with --executor ray: join this running cluster ('auto', or host:port); default: the "
                        "RAY_ADDRESS variable, else a local Ray runtime. Every node must read the paths given")


def _load_npz(path: Path, what: str) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise SystemExit(f"error: {what} file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as err:
        raise SystemExit(f"error: {what} file {path} is not a readable .npz ({err})") from None


def _load_model(path: Path):
    from jaxapex.checkpoints import load_checkpoint
    from jaxapex.models import build_model

    params, config, _metadata = load_checkpoint(path)
    return build_model(config), params


def _srs(path: Path):
    from circuit_compiler.srs import Srs

    return Srs.load(path)


def cmd_commit(args: argparse.Namespace) -> int:
    from circuit_compiler.fixedpoint import spec_for_block_size
    from jaxapex.protocol import client, ml
    from jaxapex.protocol.config import LayerShape, ProofConfig

    model, params = _load_model(args.model)
    paths = ml.target_paths(params, args.layers.split(","))
    layers = tuple(LayerShape(ml.path_name(p), *np.asarray(ml.get_matrix(params, p)).shape) for p in paths)
    lanes = args.lanes or args.block_size
    nb = args.blocks_per_chunk or max(layer.size for layer in layers) // args.block_size
    config = ProofConfig(layers=layers, level=args.level, block_size=args.block_size, lanes=lanes,
                         blocks_per_chunk=nb, spec=spec_for_block_size(args.block_size))
    G = None
    if args.level == "F":
        if args.data is None:
            raise SystemExit("error: level F needs --data (the client's data for its Fisher blocks)")
        data = _load_npz(args.data, "client data")
        from jaxapex.models import example_loss_fn

        G = ml.inverse_fisher(example_loss_fn(model), params, paths, data, block_size=args.block_size, damp=args.damp,
                              max_examples=args.max_examples)
    state, registration = client.commit(client_id=args.client_id, params=params, config=config, srs=_srs(args.srs),
                                        inverse_fisher=G)
    state.save(args.state)
    client.write_registration(args.registration, registration)
    print(f"committed {len(layers)} layers in {sum(config.n_chunks(l) for l in layers)} chunks "
          f"(level {args.level}, B = {args.block_size}); registration: {args.registration}")
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

    model, params = _load_model(args.model)
    paths = ml.target_paths(params, args.layers.split(","))
    masks = ml.provider_masks(model, params, paths, _load_npz(args.forget, "forget set"),
                              _load_npz(args.retain, "retain set"), fraction=args.fraction, scorer=args.scorer)
    request = UnlearningRequest(request_id=args.request_id or new_request_id(), model_id=args.model_id, masks=masks)
    request.save(args.out)
    print(f"request {request.request_id}: {request.masked_fraction():.2%} of the target weights masked -> {args.out}")
    return 0


def cmd_unlearn(args: argparse.Namespace) -> int:
    from jaxapex.protocol import client
    from jaxapex.protocol.requests import UnlearningRequest

    state = client.unlearn(client.ClientState.load(args.state), UnlearningRequest.load(args.request))
    state.save(args.out)
    print(f"unlearned; next state (with the pending update to prove): {args.out}")
    return 0


def cmd_prove(args: argparse.Namespace) -> int:
    from jaxapex.protocol import client
    from jaxapex.protocol.requests import UnlearningRequest

    state = client.ClientState.load(args.state)
    request = UnlearningRequest.load(args.request)
    t0 = time.perf_counter()
    fields, blobs = client.prove(state, request, _srs(args.srs), workers=args.workers, executor=args.executor,
                                 ray_address=args.ray_address)
    client.write_bundle(args.out, fields, blobs)
    print(f"{len(fields['chunks'])} chunk proofs ({sum(map(len, blobs.values())) / 1024:.1f} KiB) in "
          f"{time.perf_counter() - t0:.1f} s -> {args.out}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from jaxapex.protocol import provider
    from jaxapex.protocol.registry import Registry
    from jaxapex.protocol.requests import UnlearningRequest

    request = UnlearningRequest.load(args.request)
    result: dict = {"request_id": request.request_id}
    try:
        report = provider.verify(Registry(args.registry), request, args.bundle, srs=_srs(args.srs))
        result.update(verified=True, client_id=report.client_id, chunks=report.chunks_verified,
                      verify_s=report.verify_s)
        print(f"VERIFIED: client {report.client_id!r}, {report.chunks_verified} chunks, {report.verify_s:.2f} s; "
              "registry updated")
        code = 0
    except provider.VerificationFailed as err:
        result.update(verified=False, check=err.check, layer=err.layer, chunk=err.chunk, reason=str(err))
        print(f"NOT VERIFIED: {err}", file=sys.stderr)
        code = 1
    if args.json:
        _write_json(args.json, result)
    return code


def cmd_verify_batch(args: argparse.Namespace) -> int:
    from jaxapex.protocol import provider
    from jaxapex.protocol.registry import Registry
    from jaxapex.protocol.requests import UnlearningRequest

    request = UnlearningRequest.load(args.request)
    t0 = time.perf_counter()
    outcomes = provider.verify_many(Registry(args.registry), [(request, b) for b in args.bundles], srs=_srs(args.srs),
                                    executor=args.executor, workers=args.workers, ray_address=args.ray_address)
    wall = time.perf_counter() - t0
    rows = []
    for o in outcomes:
        if o.accepted:
            rows.append({"bundle": o.bundle, "client_id": o.client_id, "verified": True,
                         "chunks": o.report.chunks_verified, "verify_s": o.report.verify_s})
            print(f"VERIFIED: {o.bundle} (client {o.client_id!r}, {o.report.chunks_verified} chunks)")
        else:
            f = o.failure
            rows.append({"bundle": o.bundle, "client_id": o.client_id, "verified": False, "check": f.check,
                         "layer": f.layer, "chunk": f.chunk, "reason": str(f)})
            print(f"NOT VERIFIED: {o.bundle}: {f}", file=sys.stderr)
    accepted = sum(r["verified"] for r in rows)
    print(f"{accepted}/{len(rows)} bundles accepted in {wall:.1f} s ({60 * len(rows) / wall:.1f} bundles/min, "
          f"executor {args.executor}); registry updated for the accepted ones")
    if args.json:
        _write_json(args.json, {"request_id": request.request_id, "wall_s": wall, "bundles": rows})
    return 0 if accepted == len(rows) else 1


def _write_json(path: Path, value: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=1))
    os.replace(tmp, path)
