"""Artifact directories: a versioned JSON manifest plus binary blobs, written atomically.

Every message between provider and client (registration, request, proof bundle) and every piece of
client state is one directory::

    <artifact>/manifest.json     {"format": "jaxapex/<kind>", "version": 1, ...fields..., "files": {name: sha256}}
    <artifact>/<blob files>      npz / raw bytes, each listed in manifest["files"] with its sha256

Writing builds the whole directory under a temporary name next to the target and swaps it into place:
an atomic exchange of the two directories (Linux ``renameat2(RENAME_EXCHANGE)``), so a crash at any point
leaves the old or the new artifact at the path, never none and never half of one. Where the exchange is
not supported, the old directory is first renamed aside to ``.<name>.old``, and every later read or write
restores it if a crash came between the two renames. Reading checks the format, the version, that exactly the listed
files are present and that every hash matches, and names the file and field on any problem.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

FORMAT_VERSION = 1
MANIFEST = "manifest.json"

# The artifact kinds of the protocol (manifest field "format" is "jaxapex/<kind>").
STATE = "client-state"
REGISTRATION = "registration"
REQUEST = "request"
BUNDLE = "proof-bundle"


class ArtifactError(ValueError):
    """A malformed, incomplete or inconsistent artifact. The message names the file and the field."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """Deterministic npz encoding (no pickles) of named arrays."""
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in sorted(arrays.items())})
    return buf.getvalue()


def write_artifact(path: str | os.PathLike, kind: str, fields: Mapping[str, Any], blobs: Mapping[str, bytes]) -> Path:
    """Atomically (re)write the artifact directory ``path`` of ``kind`` with ``fields`` and ``blobs``."""
    path = Path(path)
    if MANIFEST in blobs:
        raise ArtifactError(f"{path}: a blob may not be called {MANIFEST}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        files = {}
        for name, data in blobs.items():
            if "/" in name or name.startswith("."):
                raise ArtifactError(f"{path}: invalid blob name {name!r}")
            _write_synced(tmp / name, data)
            files[name] = sha256_bytes(data)
        manifest = {"format": f"jaxapex/{kind}", "version": FORMAT_VERSION, **fields, "files": files}
        _write_synced(tmp / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode())
        _fsync_dir(tmp)
        _replace_dir(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _aside(path: Path) -> Path:
    return path.with_name(f".{path.name}.old")


def recover_interrupted_swap(path: str | os.PathLike) -> None:
    """Undo a fallback swap cut between its two renames: the old version back at ``path``."""
    path = Path(path)
    old = _aside(path)
    if old.is_dir() and not path.exists():
        os.replace(old, path)


def _replace_dir(tmp: Path, path: Path) -> None:
    recover_interrupted_swap(path)
    if not path.exists():
        os.replace(tmp, path)
        return
    if not path.is_dir():
        raise ArtifactError(f"{path}: exists and is not a directory")
    if _exchange(tmp, path):
        shutil.rmtree(tmp, ignore_errors=True)  # now the old version
        return
    old = _aside(path)
    shutil.rmtree(old, ignore_errors=True)
    os.replace(path, old)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.replace(old, path)
        raise
    shutil.rmtree(old, ignore_errors=True)


class Artifact:
    """A validated artifact directory: ``manifest`` (dict) and lazily read, hash-checked blobs."""

    def __init__(self, path: Path, manifest: dict[str, Any]):
        self.path = path
        self.manifest = manifest

    @property
    def kind(self) -> str:
        return self.manifest["format"].split("/", 1)[1]

    def field(self, name: str, types: type | tuple[type, ...] | None = None) -> Any:
        if name not in self.manifest:
            raise ArtifactError(f"{self.path / MANIFEST}: missing field {name!r}")
        value = self.manifest[name]
        expects_bool = types is bool or (isinstance(types, tuple) and bool in types)
        if types is not None and (not isinstance(value, types) or (isinstance(value, bool) and not expects_bool)):
            raise ArtifactError(
                f"{self.path / MANIFEST}: field {name!r} should be {types}, got {type(value).__name__} {value!r}"
            )
        return value

    def blob(self, name: str) -> bytes:
        files = self.manifest["files"]
        if name not in files:
            raise ArtifactError(f"{self.path}: manifest lists no file {name!r}")
        data = (self.path / name).read_bytes()
        if sha256_bytes(data) != files[name]:
            raise ArtifactError(
                f"{self.path / name}: contents do not match the sha256 in the manifest (truncated or modified)"
            )
        return data

    def arrays(self, name: str) -> dict[str, np.ndarray]:
        data = self.blob(name)
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except Exception as err:  # zipfile/ValueError from a corrupt npz
            raise ArtifactError(f"{self.path / name}: not a readable npz ({err})") from err

    def hash(self) -> str:
        """Digest of the manifest (which pins every blob by hash): the artifact's identity."""
        return sha256_bytes((self.path / MANIFEST).read_bytes())


def read_artifact(path: str | os.PathLike, kind: str) -> Artifact:
    """Open and validate an artifact of ``kind``; raise :class:`ArtifactError` naming file and field."""
    path = Path(path)
    recover_interrupted_swap(path)
    if not path.is_dir():
        raise ArtifactError(f"{path}: no such artifact directory")
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise ArtifactError(f"{mpath}: missing manifest")
    try:
        manifest = json.loads(mpath.read_text())
    except json.JSONDecodeError as err:
        raise ArtifactError(f"{mpath}: not valid JSON ({err})") from err
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{mpath}: manifest must be a JSON object")
    fmt = manifest.get("format")
    if fmt != f"jaxapex/{kind}":
        raise ArtifactError(f"{mpath}: field 'format' is {fmt!r}, expected 'jaxapex/{kind}'")
    version = manifest.get("version")
    if version != FORMAT_VERSION:
        raise ArtifactError(f"{mpath}: field 'version' is {version!r}, this jaxapex reads version {FORMAT_VERSION}")
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise ArtifactError(f"{mpath}: missing field 'files'")
    present = {p.name for p in path.iterdir() if p.name != MANIFEST}
    missing = sorted(set(files) - present)
    extra = sorted(present - set(files))
    if missing:
        raise ArtifactError(f"{path}: missing file(s) {missing} listed in {MANIFEST}")
    if extra:
        raise ArtifactError(f"{path}: unexpected file(s) {extra} not listed in {MANIFEST}")
    for name, digest in files.items():
        if sha256_file(path / name) != digest:
            raise ArtifactError(
                f"{path / name}: contents do not match the sha256 in the manifest (truncated or modified)"
            )
    return Artifact(path, manifest)
