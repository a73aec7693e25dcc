"""KZG structured reference strings (SRS): generation for development, loading, hashing, inspection.

A KZG SRS of size 2^K is ``[τ^i]G1`` for i < 2^K (plus their Lagrange-basis form) and ``[τ]G2`` for a
secret τ that nobody may know: whoever knows τ can forge proofs. Two ways to get one:

* :meth:`Srs.generate_dev` -- τ drawn from local randomness. For development and tests only: the process
  that ran it saw τ. It warns (:class:`InsecureSrsWarning`) and records ``"development": true`` in the
  sidecar ``<file>.json``.
* :meth:`Srs.load` -- a file produced elsewhere, e.g. converted from a public multi-party ceremony (secure
  as long as one participant destroyed their share).

Provider and client must use the same SRS: every artifact records :attr:`Srs.sha256` (of the file) and
loading can insist on it. One SRS of size 2^K serves every circuit with k <= K.

File format (``jaxapex-srs/1``, points in the standard uncompressed encoding: G1 96 bytes, G2 192):
8 magic bytes ``JXSRS\\0\\0\\1``, ``K`` (u32 LE), ``[1]G2``, ``[τ]G2``, the 2^K monomial points ``[τ^i]G1``, then
for every k = 1..K the Lagrange basis ``[L_i(τ)]G1`` of the 2^k domain -- so circuits of any size k <= K
need no FFT over G1. A prover reads the points of its k when first needed. Loading checks the header,
the G2 points and (pairing) that the first monomial points are powers of the τ in G2; the points of a k
are checked when read: on the curve always, and -- unless the file is pinned by a trusted SHA-256 --
in the subgroup with Lagrange bases consistent with the monomial points.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import tempfile
import warnings
import weakref
from pathlib import Path
from typing import Any

try:
    from . import _halo2
except ImportError as err:  # pragma: no cover - only without a built extension (tested via the message)
    from ._extension import installed_extension, missing_extension_message

    raise ImportError(missing_extension_message(Path(__file__).parent, installed_extension())) from err

MAGIC = b"JXSRS\x00\x00\x01"
FORMAT = "jaxapex-srs/1"
_G1_BYTES, _G2_BYTES = 96, 192


class InsecureSrsWarning(UserWarning):
    """A development SRS was created or loaded: its creator knows the secret and can forge proofs."""


def file_sha256(path: str | os.PathLike) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def expected_file_size(k: int) -> int:
    return len(MAGIC) + 4 + 2 * _G2_BYTES + ((1 << k) + (2 << k) - 2) * _G1_BYTES


def sidecar_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".json")


def read_sidecar(path: str | os.PathLike) -> dict[str, Any]:
    """The provenance record next to an SRS file (empty if there is none)."""
    side = sidecar_path(path)
    if not side.is_file():
        return {}
    return json.loads(side.read_text())


def srs_info(path: str | os.PathLike) -> dict[str, Any]:
    """What an SRS file is, from its header, size, hash and sidecar (without loading the points)."""
    path = Path(path)
    with open(path, "rb") as f:
        header = f.read(len(MAGIC) + 4)
    if len(header) < len(MAGIC) + 4 or header[: len(MAGIC)] != MAGIC:
        raise ValueError(f"{path} is not a {FORMAT} file (bad magic bytes)")
    k = int.from_bytes(header[len(MAGIC) :], "little")
    size = path.stat().st_size
    side = read_sidecar(path)
    return {
        "path": str(path),
        "format": FORMAT,
        "k": k,
        "max_rows": 1 << k,
        "bytes": size,
        "size_ok": size == expected_file_size(k),
        "sha256": file_sha256(path),
        "development": bool(side.get("development", False)),
        "provenance": side,
    }


class Srs:
    """A KZG SRS in memory, identified by the SHA-256 of its file."""

    def __init__(self, handle: Any, *, sha256: str, path: Path | None, development: bool):
        self._handle = handle
        self.sha256 = sha256
        self.path = path
        self.development = development

    @property
    def k(self) -> int:
        """The largest circuit size (2^k rows) this SRS supports."""
        return self._handle.k

    @property
    def handle(self) -> Any:
        """The extension's SRS object (for :mod:`circuit_compiler.backend`)."""
        return self._handle

    def __repr__(self) -> str:
        where = f" from {self.path}" if self.path else ""
        dev = ", DEVELOPMENT" if self.development else ""
        return f"Srs(k={self.k}, sha256={self.sha256[:16]}...{dev}{where})"

    @classmethod
    def generate_dev(cls, k: int, path: str | os.PathLike, *, seed: int | None = None) -> Srs:
        """Create a development SRS of size 2^k from local randomness; write it (and its sidecar) to ``path``.

        NOT FOR PRODUCTION: this process sees the secret τ, so whoever runs it could forge proofs.
        ``seed`` derives τ deterministically (reproducible tests; anyone knowing the seed knows τ).
        """
        warnings.warn(
            f"generating a DEVELOPMENT SRS (k={k}) from local randomness: its creator knows the secret and "
            "can forge proofs. Do not use it in production; load an SRS from a public ceremony instead.",
            InsecureSrsWarning,
            stacklevel=2,
        )
        seed_bytes = None if seed is None else hashlib.sha256(f"jaxapex-dev-srs/{seed}".encode()).digest()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            _halo2.Srs.generate_unsafe(int(k), str(tmp), seed_bytes)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        sha = file_sha256(path)
        sidecar_path(path).write_text(
            json.dumps(
                {
                    "format": FORMAT,
                    "k": int(k),
                    "sha256": sha,
                    "development": True,
                    "seeded": seed is not None,
                    "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                    "warning": "development SRS from local randomness: NOT FOR PRODUCTION",
                },
                indent=1,
            )
            + "\n"
        )
        # Just written by this process: its hash is trusted, points need no subgroup checks.
        return cls(_halo2.Srs.open(str(path), False), sha256=sha, path=path, development=True)

    @classmethod
    def load(cls, path: str | os.PathLike, *, expected_sha256: str | None = None) -> Srs:
        """Open an SRS file. With ``expected_sha256`` (from an artifact) any other file is refused and
        the points are trusted once the hash matches; without it every point read is fully validated."""
        path = Path(path)
        sha = file_sha256(path)
        if expected_sha256 is not None and sha != expected_sha256:
            raise _halo2.Halo2Error(f"SRS {path} has SHA-256 {sha}, expected {expected_sha256}")
        development = bool(read_sidecar(path).get("development", False))
        if development:
            warnings.warn(f"SRS {path} is a DEVELOPMENT SRS: not for production", InsecureSrsWarning, stacklevel=2)
        handle = _halo2.Srs.open(str(path), expected_sha256 is None)
        return cls(handle, sha256=sha, path=path, development=development)

    @classmethod
    def from_secret_insecure(cls, k: int, tau: int, path: str | os.PathLike | None = None) -> Srs:
        """The SRS of a known secret ``tau`` -- for tests that recompute commitments independently.

        Written to ``path`` (default: a temporary file removed with the returned object)."""
        tau = int(tau) % int(_halo2.scalar_modulus(), 16)
        cleanup = None
        if path is None:
            tmpdir = tempfile.mkdtemp(prefix="jaxapex-srs-")
            path = Path(tmpdir) / f"srs-k{k}.bin"
            cleanup = tmpdir
        path = Path(path)
        _halo2.Srs.generate_from_secret(int(k), tau.to_bytes(32, "little"), str(path))
        srs = cls(_halo2.Srs.open(str(path), False), sha256=file_sha256(path), path=path, development=True)
        if cleanup is not None:
            weakref.finalize(srs, shutil.rmtree, cleanup, True)
        return srs

    def downsize(self, k: int, path: str | os.PathLike) -> Srs:
        """Write the SRS for circuits up to 2^k rows (same secret) to ``path``: a prefix of this file's
        monomial points and its Lagrange bases for 1..k, so a smaller SRS can be shipped on its own."""
        if not 1 <= k <= self.k:
            raise ValueError(f"can only downsize to 1 <= k <= {self.k}, got {k}")
        if self.path is None:
            raise ValueError(f"{self!r} has no file to downsize")
        head = len(MAGIC) + 4 + 2 * _G2_BYTES
        path = Path(path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(self.path, "rb") as src, open(tmp, "wb") as dst:
            header = src.read(head)
            dst.write(MAGIC + int(k).to_bytes(4, "little") + header[len(MAGIC) + 4 :])
            dst.write(src.read((1 << k) * _G1_BYTES))  # g_0 .. g_{2^k - 1}
            src.seek(head + ((1 << self.k) * _G1_BYTES))  # then the Lagrange bases, smallest k first
            dst.write(src.read(((2 << k) - 2) * _G1_BYTES))
        os.replace(tmp, path)
        sha = file_sha256(path)
        if self.development:
            sidecar_path(path).write_text(
                json.dumps(
                    {**read_sidecar(self.path), "k": int(k), "sha256": sha, "downsized_from": self.sha256}, indent=1
                )
                + "\n"
            )
        return Srs(_halo2.Srs.open(str(path), False), sha256=sha, path=path, development=self.development)

    def prepare(self, k: int) -> None:
        """Read (and check) the points of the 2^k domain now rather than at first use."""
        self._handle.prepare(int(k))

    # Pickling (process pools): ship the path and hash; the receiver re-opens the file.
    def __reduce__(self):
        if self.path is None or not self.path.is_file():
            raise TypeError(f"{self!r} has no file to be re-opened from")
        return (_srs_from_path, (str(self.path), self.sha256, self.development))


def _srs_from_path(path: str, sha256: str, development: bool) -> Srs:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureSrsWarning)  # the parent already warned
        srs = Srs.load(path, expected_sha256=sha256)
    srs.development = development
    return srs
