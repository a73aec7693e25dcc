"""The provider's registry of client commitments.

One JSON file per client (``<registry>/<client_id>.json``) holding the proof configuration the client
registered under, the Fisher (G) commitments at level F (fixed forever), the *current* model commitments
per layer and chunk, and the history of accepted requests. Updates are atomic file replacements made only
after a whole proof bundle verified, so a rejected submission leaves the registry byte-for-byte unchanged.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from .artifacts import ArtifactError

_CLIENT_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class RegistryError(ValueError):
    """A registry lookup or update that cannot be done (unknown client, mismatched commitments...)."""


def _check_client_id(client_id: str) -> str:
    if not isinstance(client_id, str) or not _CLIENT_ID.match(client_id) or client_id.startswith("."):
        raise RegistryError(f"client id {client_id!r} must be 1-64 characters of [A-Za-z0-9_.-]")
    return client_id


class Registry:
    """A directory of client records. ``get`` returns plain dicts; ``put`` replaces a record atomically."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def _record_path(self, client_id: str) -> Path:
        return self.path / f"{_check_client_id(client_id)}.json"

    def clients(self) -> list[str]:
        if not self.path.is_dir():
            return []
        return sorted(p.stem for p in self.path.glob("*.json"))

    def has(self, client_id: str) -> bool:
        return self._record_path(client_id).is_file()

    def get(self, client_id: str) -> dict[str, Any]:
        path = self._record_path(client_id)
        if not path.is_file():
            raise RegistryError(f"registry {self.path}: no client {client_id!r} is registered")
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ArtifactError(f"{path}: corrupt registry record ({err})") from err

    def put(self, client_id: str, record: dict[str, Any]) -> None:
        path = self._record_path(client_id)
        self.path.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=self.path)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(record, f, indent=1, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
