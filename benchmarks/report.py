"""The one way benchmarks report: a plain-text table on stdout and, with ``--json PATH``, the same figures
as JSON (written atomically, numpy scalars and arrays converted)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any


@dataclasses.dataclass(frozen=True)
class Column:
    """A table column: ``key`` into each row, its ``header``, and a format spec (``",.0f"``) or function."""

    key: str
    header: str
    fmt: str | Callable[[Any], str] = ""

    def cell(self, row: Mapping[str, Any]) -> str:
        value = row.get(self.key)
        if value is None:
            return "-"
        if callable(self.fmt):
            return self.fmt(value)
        return format(value, self.fmt)


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column]) -> str:
    """Right-aligned columns (the first left-aligned), a rule under the header."""
    cells = [[c.header for c in columns]] + [[c.cell(r) for c in columns] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]

    def line(values: list[str]) -> str:
        return "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(values, widths)))

    out = [line(cells[0]), "-" * (sum(widths) + 2 * (len(widths) - 1))]
    out += [line(values) for values in cells[1:]]
    return "\n".join(out)


def print_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column], *, title: str | None = None) -> None:
    if title:
        print(title)
    print(format_table(rows, columns))


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the figures as JSON")


def machine() -> dict[str, Any]:
    """What a reader needs to compare runs from different machines."""
    import numpy as np

    return {
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def _plain(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray) or hasattr(value, "__array__"):  # NumPy and JAX arrays
        return np.asarray(value).tolist()
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def write_json(path: str | os.PathLike | None, figures: Mapping[str, Any], *, quiet: bool = False) -> Path | None:
    """Write ``figures`` to ``path`` (nothing when ``path`` is None): temp file then rename, never half a file."""
    if path is None:
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(figures, indent=1, default=_plain) + "\n")
    os.replace(tmp, path)
    if not quiet:
        print(f"wrote {path}")
    return path
