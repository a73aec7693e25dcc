"""Why the compiled Halo2 extension cannot be imported, said so that the user knows what to type.

The usual cause after ``pip install .``: Python was started in the repository root (``python -m ...``
puts the current directory first on ``sys.path``), so it imports the *source tree*, which has no compiled
extension, instead of the installed package, which has one.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

DISTRIBUTION = "jaxapex"


def installed_extension() -> Path | None:
    """The compiled extension of the installed ``jaxapex`` distribution, if one is installed."""
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in dist.files or ():
        if file.parts[:1] == ("circuit_compiler",) and file.name.startswith("_halo2"):
            path = Path(dist.locate_file(file))
            if path.is_file():
                return path.resolve()
    return None


def missing_extension_message(package_dir: Path, installed: Path | None) -> str:
    """The one-paragraph explanation for an ``ImportError`` of ``circuit_compiler._halo2``."""
    package_dir = package_dir.resolve()
    if installed is not None and installed.parent != package_dir:
        root = package_dir.parent
        return (
            f"the Halo2 extension is missing from {package_dir}: Python imported the source tree in {root} "
            f"(the current directory comes first on sys.path), which shadows the installed jaxapex in "
            f"{installed.parent.parent}, where the extension is. Either run from another directory, or "
            f"install editable so the source tree gets the extension: `pip install -e .` in {root}"
        )
    return (
        f"the Halo2 extension circuit_compiler._halo2 is not built for {package_dir}: run `pip install -e .` "
        f"from the repository root (it needs a Rust toolchain; `maturin develop --release` also works)"
    )
