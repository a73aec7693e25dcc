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
``fixed/<name>``, ``advice/<name>``, ``instance/<name>``, ``committed/<name>``; encodings of a column of n values:


* ``"i64"``: n little-endian signed int64 (``v < 0`` means ``p + v``);
* ``"u256"``: n 32-byte little-endian canonical integers in ``[0, p)``;
* ``"i64+u256"`` (layout version 1): a column of small values with a few field-sized ones (the salt cells of a
  committed column), all little-endian::

      u64 version (= 1) | u64 n (rows) | u64 m (large values)
      n x i64   the values as in "i64", 0 at the rows of the large values
      m x u64   the rows of the large values, strictly increasing, each < n
      m x 32 B  the large values, canonical integers in [0, p)

  exactly ``24 + 8 n + 40 m`` bytes. The encoder lists as large only what does not fit int64 (``v`` or
  ``v - p``), and picks it over ``"u256"`` when it is shorter (fewer than ~60 % large values).

Values beyond the array's length are zero. ``copies`` is an i64 array of shape (m, 4):
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
SPARSE = "i64+u256"
SPARSE_VERSION = 1
_SPARSE_HEADER = 24  # u64 version, u64 rows, u64 large values
_SPARSE_LARGE = 8 + 32  # a large value's row and its 32 bytes


class NonCanonicalValue(ValueError):
    """A column value that is not a canonical field element (an integer in ``[0, p)``)."""

    def __init__(self, row: int, value: Any):
        super().__init__(f"value at row {row} is not a canonical field element in [0, p): {value!r}")
        self.row = row


def canonical_ints(values: np.ndarray, modulus: int, *, reduce: bool) -> np.ndarray:
    """An object column -> object array of Python ints in ``[0, p)``, vectorized when all are Python ints.

    ``reduce``: take each value mod p; otherwise a value outside ``[0, p)`` raises :class:`NonCanonicalValue`
    naming the first such row. A value that is no integer always raises.
    """
    if set(map(type, values)) <= {int}:
        inside = (values >= 0) & (values < modulus)
        if inside.all():
            return values
        if reduce:
            return np.mod(values, modulus)
        row = int(np.argmin(inside))
        raise NonCanonicalValue(row, values[row])
    # numpy scalars, bools or a non-integer: one by one (columns the compiler builds hold Python ints)
    out = np.empty(values.shape, dtype=object)
    for row, v in enumerate(values):
        if not isinstance(v, (int, np.integer)) or not (reduce or 0 <= v < modulus):
            raise NonCanonicalValue(row, v)
        out[row] = int(v) % modulus
    return out


def split_large(values: np.ndarray, modulus: int) -> tuple[np.ndarray, np.ndarray]:
    """Canonical Python ints (object array) -> (int64 values, 0 where large; rows of the large ones).

    A value is small when it or ``v - p`` fits int64 (the "i64" encoding's rule); only the others are large.
    """
    low = values <= _I64_MAX
    high = ~low & (values >= modulus + _I64_MIN)
    small = np.zeros(values.shape, dtype="<i8")
    small[low] = values[low].astype(np.int64)
    small[high] = (values[high] - modulus).astype(np.int64)
    return small, np.flatnonzero(~(low | high))


def _u256(values: Any) -> bytes:
    return b"".join(int(v).to_bytes(32, "little") for v in values)


def encode_values(values: np.ndarray, modulus: int, *, reduce: bool = True) -> tuple[str, bytes]:
    """Compact, canonical encoding of one column (see the module docstring): "i64" when every value fits,
    else the shorter of "i64+u256" (small values in place, the large ones listed) and "u256".

    Object arrays of ints are taken mod p (``reduce``) or must already be canonical (else
    :class:`NonCanonicalValue`). Only the large values are converted one by one.
    """
    values = np.asarray(values).ravel()
    if values.dtype != object:
        return "i64", values.astype("<i8").tobytes()
    values = canonical_ints(values, modulus, reduce=reduce)
    small, large = split_large(values, modulus)
    if not large.size:
        return "i64", small.tobytes()
    n, m = values.size, large.size
    if _SPARSE_HEADER + 8 * n + _SPARSE_LARGE * m >= 32 * n:
        return "u256", _u256(values)
    header = np.array([SPARSE_VERSION, n, m], dtype="<u8").tobytes()
    return SPARSE, header + small.tobytes() + large.astype("<u8").tobytes() + _u256(values[large])


def decode_values(encoding: str, blob: bytes, modulus: int) -> np.ndarray:
    """The column of :func:`encode_values`: int64 (signed, as stored) for "i64", else canonical object ints."""
    if encoding == "i64":
        if len(blob) % 8:
            raise ValueError(f"i64 column of {len(blob)} bytes is not a multiple of 8")
        return np.frombuffer(blob, dtype="<i8").astype(np.int64)
    if encoding == "u256":
        if len(blob) % 32:
            raise ValueError(f"u256 column of {len(blob)} bytes is not a multiple of 32")
        return _decode_u256(blob, modulus)
    if encoding == SPARSE:
        return _decode_sparse(blob, modulus)
    raise ValueError(f"unknown value encoding {encoding!r}")


def _decode_u256(blob: bytes, modulus: int, rows: np.ndarray | None = None) -> np.ndarray:
    """32-byte LE integers, each checked < p (``rows``: the rows they stand for, for the error)."""
    out = np.array([int.from_bytes(blob[i : i + 32], "little") for i in range(0, len(blob), 32)], dtype=object)
    over = np.flatnonzero(out >= modulus) if out.size else ()
    if len(over):
        row = int(over[0] if rows is None else rows[over[0]])
        raise ValueError(f"u256 value at row {row} is not < p")
    return out


def _decode_sparse(blob: bytes, modulus: int) -> np.ndarray:
    if len(blob) < _SPARSE_HEADER:
        raise ValueError(f"{SPARSE} column of {len(blob)} bytes is shorter than its {_SPARSE_HEADER}-byte header")
    version, n, m = (int(x) for x in np.frombuffer(blob, dtype="<u8", count=3))
    if version != SPARSE_VERSION:
        raise ValueError(f"{SPARSE} column: layout version {version}, expected {SPARSE_VERSION}")
    expected = _SPARSE_HEADER + 8 * n + _SPARSE_LARGE * m
    if len(blob) != expected:
        raise ValueError(f"{SPARSE} column of {len(blob)} bytes: {n} rows and {m} large values need {expected}")
    small = np.frombuffer(blob, dtype="<i8", count=n, offset=_SPARSE_HEADER).astype(np.int64)
    rows = np.frombuffer(blob, dtype="<u8", count=m, offset=_SPARSE_HEADER + 8 * n)
    if m and rows.max() >= n:
        raise ValueError(f"{SPARSE} column: large value at row {int(rows.max())}, beyond its {n} rows")
    if np.any(rows[1:] <= rows[:-1]):
        raise ValueError(f"{SPARSE} column: the rows of its large values are not strictly increasing")
    placed = small[rows.astype(np.int64)]
    if np.any(placed):
        row = int(rows[np.flatnonzero(placed)[0]])
        raise ValueError(f"{SPARSE} column: row {row} holds a large value but its i64 slot is not 0")
    out = small.astype(object)
    negative = small < 0
    out[negative] = out[negative] + modulus
    out[rows.astype(np.int64)] = _decode_u256(blob[_SPARSE_HEADER + 8 * (n + m) :], modulus, rows)
    return out


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
            values = decode_values(enc, z[key].tobytes(), modulus)
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
