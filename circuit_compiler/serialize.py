"""Stable serialization of a :class:`~circuit_compiler.ir.ConstraintSystem` and its values.

Format ``jaxapex-circuit/1`` -- what the Rust backend reads (documented in ``docs/circuit-format.md``):

``structure`` (JSON)::

    {"format": "jaxapex-circuit/1", "modulus": "<decimal p>", "name": str, "k": int, "rows": int,
     "columns": [{"kind": "advice|fixed|selector|instance|committed|table", "index": i, "name": str}, ...],
     "gates":   [{"name": str, "selector": <column position>, "polys": [{"name": str, "expr": E}, ...]}, ...],
     "lookups": [{"name": str, "selector": <column position> | null, "inputs": [E, ...], "table": [<column position>, ...]}],
     "metadata": {...}}

``E`` is the expression tree of :meth:`Expression.to_json`; a ``query`` node names its column by
``(kind, index)``; constants are signed decimal strings (reduce mod p). "Column position" is the index in
``columns``; a lookup's ``"selector": null`` means always on (its inputs are plain advice columns that
must hold a table value on every usable row). Instance and committed columns are numbered separately but Halo2 needs committed instance
columns first: the backend orders instance columns as all COMMITTED (by index) then all INSTANCE (by index).

``arrays`` (name -> column values, each ``(encoding, bytes)``):
``fixed/<name>``, ``advice/<name>``, ``instance/<name>``, ``committed/<name>``; encodings:
``"i64"`` little-endian signed int64 (``v < 0`` means ``p + v``) or ``"u256"`` 32-byte little-endian canonical
integers in ``[0, p)``. Values beyond the array's length are zero. ``copies`` is an i64 array of shape (m, 4):
``[column position a, row a, column position b, row b]``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .ir import Assignment, Column, ColumnKind, ConstraintSystem, Gate, Lookup, expression_from_json

FORMAT = "jaxapex-circuit/1"


def structure_to_json(cs: ConstraintSystem, modulus: int) -> dict[str, Any]:
    position = {c: i for i, c in enumerate(cs.columns)}
    return {
        "format": FORMAT,
        "modulus": str(modulus),
        "name": cs.name,
        "k": cs.k,
        "rows": cs.rows,
        "columns": [{"kind": c.kind.value, "index": c.index, "name": c.name} for c in cs.columns],
        "gates": [
            {
                "name": g.name,
                "selector": position[g.selector],
                "polys": [{"name": n, "expr": p.to_json()} for n, p in g.polys],
            }
            for g in cs.gates
        ],
        "lookups": [
            {
                "name": lk.name,
                "selector": None if lk.always_on else position[lk.selector],
                "inputs": [e.to_json() for e in lk.inputs],
                "table": [position[c] for c in lk.table],
            }
            for lk in cs.lookups
        ],
        "metadata": _jsonable(dict(cs.metadata)),
    }


def structure_from_json(data: dict[str, Any], fixed: dict[str, np.ndarray], copies: np.ndarray) -> ConstraintSystem:
    if data.get("format") != FORMAT:
        raise ValueError(f"circuit structure: format {data.get('format')!r}, expected {FORMAT!r}")
    columns = tuple(Column(ColumnKind(c["kind"]), int(c["index"]), c["name"]) for c in data["columns"])
    by_key = {(c.kind.value, c.index): c for c in columns}
    gates = tuple(
        Gate(
            g["name"],
            columns[g["selector"]],
            tuple((p["name"], expression_from_json(p["expr"], by_key)) for p in g["polys"]),
        )
        for g in data["gates"]
    )
    lookups = tuple(
        Lookup(
            lk["name"],
            None if lk["selector"] is None else columns[lk["selector"]],
            tuple(expression_from_json(e, by_key) for e in lk["inputs"]),
            tuple(columns[i] for i in lk["table"]),
        )
        for lk in data["lookups"]
    )
    return ConstraintSystem(
        name=data["name"],
        k=int(data["k"]),
        rows=int(data["rows"]),
        columns=columns,
        gates=gates,
        lookups=lookups,
        copies=np.asarray(copies, dtype=np.int64).reshape(-1, 4),
        fixed=fixed,
        metadata=data.get("metadata", {}),
    )


# ------------------------------------------------------------------------------------------ value arrays

_I64_MIN, _I64_MAX = -(1 << 63), (1 << 63) - 1


def encode_values(values: np.ndarray, modulus: int) -> tuple[str, bytes]:
    """Compact, canonical encoding of one column: int64 when every value fits, else 32-byte LE."""
    values = np.asarray(values)
    if values.dtype != object:
        return "i64", values.astype("<i8").tobytes()
    ints = [int(v) % modulus for v in values]
    small = [v if v <= _I64_MAX else v - modulus for v in ints]
    if all(_I64_MIN <= v <= _I64_MAX for v in small):
        return "i64", np.asarray(small, dtype="<i8").tobytes()
    return "u256", b"".join(v.to_bytes(32, "little") for v in ints)


def decode_values(encoding: str, blob: bytes) -> np.ndarray:
    if encoding == "i64":
        return np.frombuffer(blob, dtype="<i8").astype(np.int64)
    if encoding == "u256":
        if len(blob) % 32:
            raise ValueError(f"u256 column of {len(blob)} bytes is not a multiple of 32")
        return np.array([int.from_bytes(blob[i : i + 32], "little") for i in range(0, len(blob), 32)], dtype=object)
    raise ValueError(f"unknown value encoding {encoding!r}")


def fixed_arrays(cs: ConstraintSystem, modulus: int) -> dict[str, tuple[str, bytes]]:
    return {f"fixed/{name}": encode_values(v, modulus) for name, v in cs.fixed.items()}


def witness_arrays(assignment: Assignment, modulus: int) -> dict[str, tuple[str, bytes]]:
    out: dict[str, tuple[str, bytes]] = {}
    for prefix, table in (
        ("advice", assignment.advice),
        ("instance", assignment.instance),
        ("committed", assignment.committed),
    ):
        for name, v in table.items():
            out[f"{prefix}/{name}"] = encode_values(v, modulus)
    return out


# ------------------------------------------------------------------------------------------ files on disk


def save_circuit(
    path: str | os.PathLike, cs: ConstraintSystem, modulus: int, assignment: Assignment | None = None
) -> Path:
    """Write ``structure.json`` + ``values.npz`` into directory ``path`` atomically (temp dir + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        (tmp / "structure.json").write_text(json.dumps(structure_to_json(cs, modulus), indent=1))
        arrays = fixed_arrays(cs, modulus)
        if assignment is not None:
            arrays.update(witness_arrays(assignment, modulus))
        npz = {"copies": cs.copies.astype("<i8")}
        for name, (enc, blob) in arrays.items():
            npz[f"{enc}:{name}"] = np.frombuffer(blob, dtype=np.uint8)
        with open(tmp / "values.npz", "wb") as f:
            np.savez(f, **npz)
        if path.exists():
            old = path.with_name(path.name + ".old")
            os.replace(path, old)
            os.replace(tmp, path)
            _rmtree(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        _rmtree(tmp)
        raise
    return path


def load_circuit(path: str | os.PathLike) -> tuple[ConstraintSystem, int, Assignment | None]:
    path = Path(path)
    for required in ("structure.json", "values.npz"):
        if not (path / required).is_file():
            raise FileNotFoundError(f"saved circuit {path}: missing {required}")
    data = json.loads((path / "structure.json").read_text())
    modulus = int(data["modulus"])
    fixed: dict[str, np.ndarray] = {}
    witness: dict[str, dict[str, np.ndarray]] = {"advice": {}, "instance": {}, "committed": {}}
    with np.load(path / "values.npz", allow_pickle=False) as z:
        copies = z["copies"]
        for key in z.files:
            if key == "copies":
                continue
            enc, name = key.split(":", 1)
            prefix, col = name.split("/", 1)
            values = decode_values(enc, z[key].tobytes())
            (fixed if prefix == "fixed" else witness[prefix])[col] = values
    cs = structure_from_json(data, fixed, copies)
    has_witness = any(witness.values())
    return cs, modulus, (Assignment(**witness) if has_witness else None)


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating):
        return float(x)
    if isinstance(x, np.ndarray):
        return x.tolist()
    return x


def _rmtree(p: Path) -> None:
    import shutil

    shutil.rmtree(p, ignore_errors=True)
