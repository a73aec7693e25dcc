"""``jaxapex data status``: which offline data sources are installed, and the command that installs each."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("data", help="offline data sources: what is installed and how to install the rest")
    actions = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    p = actions.add_parser("status", help="list each data source, whether it is present, and its install command")
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p.add_argument(
        "--debian-packages", action="store_true", help="print only the Debian packages the sources need, one line"
    )
    p.set_defaults(func=run_status)


def run_status(args: argparse.Namespace) -> int:
    from jaxapex.data.sources import HERSHEY_ACKNOWLEDGEMENT, debian_packages, status

    if args.debian_packages:
        print(" ".join(debian_packages()))
        return 0
    rows = status()
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    for row in rows:
        mark = "present" if row["present"] else "MISSING"
        print(f"{row['name']:<18} {mark:<8} {row['description']}")
        print(f"{'':<18} {'':<8} licence: {row['licence']}")
        print(f"{'':<18} {'':<8} {'path: ' + row['path'] if row['present'] else 'install: ' + row['install']}")
    print()
    print(f"Hershey fonts acknowledgement: {HERSHEY_ACKNOWLEDGEMENT}")
    missing = [row["name"] for row in rows if not row["present"]]
    if missing:
        print(f"missing: {', '.join(missing)} (the commands above install them; nothing is downloaded at run time)")
    return 0
