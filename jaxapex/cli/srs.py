"""``jaxapex srs``: make a development SRS, or inspect an SRS file.

jaxapex srs generate --k 16 --out artifacts/srs/dev-k16.srs   # DEVELOPMENT ONLY
jaxapex srs info artifacts/srs/dev-k16.srs [--json]
jaxapex srs import-ceremony --transcript transcript.json --k 12 --out artifacts/srs/eth-k12.srs
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings

_BANNER = """\
================================================================================
  WARNING: DEVELOPMENT SRS -- NOT FOR PRODUCTION
  Its secret was drawn on this machine; whoever ran this command (or can read
  this process's memory) could forge proofs that verify against it. For real
  use, load an SRS converted from a public multi-party ceremony.
================================================================================"""


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "srs",
        help="KZG structured reference strings (generate for development, inspect)",
        description="KZG structured reference strings for the Halo2 backend.",
    )
    actions = parser.add_subparsers(dest="srs_command", metavar="ACTION")

    gen = actions.add_parser("generate", help="write a DEVELOPMENT SRS from local randomness (not for production)")
    gen.add_argument("--k", type=int, required=True, help="log2 of the largest circuit (rows) it must serve")
    gen.add_argument("--out", required=True, help="file to write (a sidecar <file>.json records its provenance)")
    gen.add_argument(
        "--seed",
        type=int,
        default=None,
        help="derive the secret from this seed (reproducible tests; anyone with the seed can forge)",
    )
    gen.set_defaults(func=_generate)

    info = actions.add_parser("info", help="show k, size, SHA-256 and provenance of an SRS file")
    info.add_argument("path")
    info.add_argument("--json", action="store_true", help="print the information as JSON")
    info.add_argument(
        "--check",
        action="store_true",
        help="also read and fully validate the points of the largest k (slow for large k)",
    )
    info.set_defaults(func=_info)

    imp = actions.add_parser(
        "import-ceremony", help="convert a public BLS12-381 powers-of-tau ceremony (Ethereum KZG transcript.json)"
    )
    imp.add_argument("--transcript", required=True, help="the ceremony's transcript.json")
    imp.add_argument("--k", type=int, required=True, help="log2 of the largest circuit (rows); at most 15")
    imp.add_argument("--out", required=True, help="SRS file to write (a sidecar <file>.json records its source)")
    imp.set_defaults(func=_import_ceremony)

    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])


def _import_ceremony(args: argparse.Namespace) -> int:
    from circuit_compiler.ceremony import CeremonyError, import_ceremony

    start = time.perf_counter()
    try:
        srs = import_ceremony(
            args.transcript, args.k, args.out, progress=lambda what: print(f"  {what} ...", file=sys.stderr)
        )
    except (CeremonyError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote ceremony SRS k={srs.k} ({2**srs.k} rows) to {srs.path} in {time.perf_counter() - start:.1f} s")
    print(f"sha256 {srs.sha256}")
    return 0


def _generate(args: argparse.Namespace) -> int:
    from circuit_compiler.srs import InsecureSrsWarning, Srs

    if not 1 <= args.k <= 28:
        print(f"error: --k {args.k} out of range [1, 28]", file=sys.stderr)
        return 2
    print(_BANNER, file=sys.stderr)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureSrsWarning)  # the banner says it louder
        srs = Srs.generate_dev(args.k, args.out, seed=args.seed)
    elapsed = time.perf_counter() - start
    print(f"wrote development SRS k={srs.k} ({2**srs.k} rows) to {srs.path} in {elapsed:.1f} s")
    print(f"sha256 {srs.sha256}")
    return 0


def _info(args: argparse.Namespace) -> int:
    from circuit_compiler.srs import InsecureSrsWarning, Srs, srs_info

    try:
        info = srs_info(args.path)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.check:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InsecureSrsWarning)
            start = time.perf_counter()
            try:
                Srs.load(args.path).prepare(info["k"])
                info["check"] = f"ok ({time.perf_counter() - start:.1f} s)"
            except Exception as err:
                info["check"] = f"FAILED: {err}"
    if args.json:
        print(json.dumps(info, indent=1))
    else:
        print(f"path         {info['path']}")
        print(f"format       {info['format']}")
        print(f"k            {info['k']}  (circuits up to {info['max_rows']} rows)")
        print(f"size         {info['bytes']} bytes{'' if info['size_ok'] else '  (WRONG SIZE: truncated or corrupt)'}")
        print(f"sha256       {info['sha256']}")
        print(f"development  {'YES -- NOT FOR PRODUCTION' if info['development'] else 'no (no development sidecar)'}")
        if info["provenance"].get("created"):
            print(f"created      {info['provenance']['created']}")
        if "check" in info:
            print(f"check        {info['check']}")
    return 0 if info["size_ok"] and not str(info.get("check", "ok")).startswith("FAILED") else 1
