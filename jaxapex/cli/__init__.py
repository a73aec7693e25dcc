"""The ``jaxapex`` command line. Each area registers its subcommands from its own module."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# (module, description) -- each module exposes ``register(subparsers)`` adding its subcommands, whose
# handlers are stored as ``func`` on the parsed namespace and return an exit code.
SUBCOMMAND_MODULES = (
    "jaxapex.cli.demo",
    "jaxapex.cli.protocol",
    "jaxapex.cli.srs",
    "jaxapex.cli.circuit",
    "jaxapex.cli.data",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxapex", description="Verifiable personalized machine unlearning (Group OBS + Halo2)."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name == name:  # area not present in this build
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except SystemExit as exit_:  # commands exit with their one-line message on bad input
        if isinstance(exit_.code, str):
            print(exit_.code, file=sys.stderr)
            return 2
        raise
    except Exception as err:  # bad input: one line naming the file and field, no traceback
        if os.environ.get("JAXAPEX_DEBUG") or not _is_input_error(err):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2


def _is_input_error(err: Exception) -> bool:
    """Errors that describe the user's input (files, fields, sizes), not a bug of jaxapex."""
    if isinstance(err, (ValueError, OSError, KeyError)):
        return True
    try:
        from circuit_compiler.backend import BackendError
    except ImportError:  # extension not built
        return False
    return isinstance(err, BackendError)


if __name__ == "__main__":
    sys.exit(main())
