"""The provider's registry of client commitments: one SQLite database (stdlib ``sqlite3``, WAL journal).

Schema (``SCHEMA_VERSION`` in table ``meta``)::

    configurations     digest PK, config JSON                       -- proof configurations clients registered
    clients            client_id PK, config_digest → configurations, registration hash, registered_at,
                       model_version (number of accepted requests)
    fisher_commitments (client_id, layer, chunk, name) PK, point    -- G lanes at level F, fixed forever
    model_commitments  (client_id, layer, chunk) PK, point          -- the *current* θ commitment per chunk
    requests           (client_id, request_id) PK, seq UNIQUE per client, bundle hash, accepted_at
    request_chunks     (client_id, request_id, layer, chunk) PK, old_point, new_point

Accepting a bundle is :meth:`Registry.accept`: one ``BEGIN IMMEDIATE`` transaction that compares and swaps
the client's model version and every touched chunk commitment (the bundle's "old" commitments must still
be current) and inserts the request id under the primary key -- so of two concurrent verifications of
bundles built on the same state exactly one commits, and a request is never accepted twice or lost.
Everything slow (reading bundles, checking proofs) happens before, outside the write lock.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS configurations (
    digest TEXT PRIMARY KEY,
    config TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS clients (
    client_id TEXT PRIMARY KEY,
    config_digest TEXT NOT NULL REFERENCES configurations (digest),
    registration TEXT NOT NULL,
    registered_at TEXT NOT NULL,
    model_version INTEGER NOT NULL DEFAULT 0 CHECK (model_version >= 0)
);
CREATE TABLE IF NOT EXISTS fisher_commitments (
    client_id TEXT NOT NULL REFERENCES clients (client_id),
    layer TEXT NOT NULL,
    chunk INTEGER NOT NULL CHECK (chunk >= 0),
    name TEXT NOT NULL,
    point TEXT NOT NULL,
    PRIMARY KEY (client_id, layer, chunk, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS model_commitments (
    client_id TEXT NOT NULL REFERENCES clients (client_id),
    layer TEXT NOT NULL,
    chunk INTEGER NOT NULL CHECK (chunk >= 0),
    point TEXT NOT NULL,
    PRIMARY KEY (client_id, layer, chunk)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS requests (
    client_id TEXT NOT NULL REFERENCES clients (client_id),
    request_id TEXT NOT NULL,
    seq INTEGER NOT NULL CHECK (seq >= 1),
    bundle TEXT NOT NULL,
    accepted_at TEXT NOT NULL,
    PRIMARY KEY (client_id, request_id),
    UNIQUE (client_id, seq)
);
CREATE TABLE IF NOT EXISTS request_chunks (
    client_id TEXT NOT NULL,
    request_id TEXT NOT NULL,
    layer TEXT NOT NULL,
    chunk INTEGER NOT NULL,
    old_point TEXT NOT NULL,
    new_point TEXT NOT NULL,
    PRIMARY KEY (client_id, request_id, layer, chunk),
    FOREIGN KEY (client_id, request_id) REFERENCES requests (client_id, request_id)
) WITHOUT ROWID;
"""

_CLIENT_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class RegistryError(ValueError):
    """A registry lookup or update that cannot be done (unknown client, unreadable database...)."""


class RegistryConflict(RegistryError):
    """An acceptance lost its compare-and-swap. ``check``: ``replay`` (request already accepted) or
    ``stale`` (the bundle's old commitments or model version are no longer current)."""

    def __init__(self, check: str, message: str):
        super().__init__(message)
        self.check = check


def check_client_id(client_id: Any) -> str:
    if not isinstance(client_id, str) or not _CLIENT_ID.match(client_id) or client_id.startswith("."):
        raise RegistryError(f"client id {client_id!r} must be 1-64 characters of [A-Za-z0-9_.-]")
    return client_id


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


class Registry:
    """The registry database at ``path`` (created on first use).

    ``get`` returns a client's record as a plain dict::

        {"client_id", "config", "config_digest", "registration", "registered_at", "model_version",
         "commitments": {layer: [{"theta": hex, "g_0": hex, ...} per chunk]}, "history": [request ids]}
    """

    def __init__(self, path: str | os.PathLike, *, create: bool = True, timeout_s: float = 60.0):
        self.path = Path(path)
        if self.path.is_dir():
            hint = (
                (
                    " (a JSON registry: convert it with `jaxapex registry migrate --from "
                    f"{self.path} --to {self.path}.db`)"
                )
                if any(self.path.glob("*.json"))
                else ""
            )
            raise RegistryError(f"registry {self.path} is a directory, not a registry database{hint}")
        if not create and not self.path.is_file():
            raise RegistryError(f"registry {self.path}: no such registry database")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._timeout_s = timeout_s
        with self._connect() as db:
            db.execute("PRAGMA journal_mode = WAL")  # persistent: readers never block the writer
            with self._write(db):
                for statement in _SCHEMA.split(";"):
                    db.execute(statement)
                version = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
                if version is None:
                    db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                elif version[0] != str(SCHEMA_VERSION):
                    raise RegistryError(
                        f"registry {self.path}: field 'schema_version' is {version[0]!r}, this "
                        f"jaxapex reads version {SCHEMA_VERSION}"
                    )

    # -------------------------------------------------------------------------------------- plumbing

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            db = sqlite3.connect(self.path, timeout=self._timeout_s, isolation_level=None)
        except sqlite3.Error as err:
            raise RegistryError(f"registry {self.path}: cannot open ({err})") from err
        try:
            db.execute("PRAGMA synchronous = FULL")  # an accepted request survives a power cut
            db.execute("PRAGMA foreign_keys = ON")
            yield db
        except sqlite3.DatabaseError as err:
            raise RegistryError(f"registry {self.path}: not a usable registry database ({err})") from err
        finally:
            db.close()

    @contextlib.contextmanager
    def _write(self, db: sqlite3.Connection) -> Iterator[None]:
        """One write transaction: the database's write lock is taken at BEGIN, released at COMMIT/ROLLBACK."""
        db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    # ----------------------------------------------------------------------------------------- reads

    def clients(self) -> list[str]:
        with self._connect() as db:
            return [row[0] for row in db.execute("SELECT client_id FROM clients ORDER BY client_id")]

    def has(self, client_id: str) -> bool:
        check_client_id(client_id)
        with self._connect() as db:
            return db.execute("SELECT 1 FROM clients WHERE client_id = ?", (client_id,)).fetchone() is not None

    def get(self, client_id: str) -> dict[str, Any]:
        """The client's record, read in one snapshot."""
        check_client_id(client_id)
        with self._connect() as db:
            db.execute("BEGIN")  # one read snapshot for all tables
            try:
                return self._record(db, client_id)
            finally:
                db.execute("COMMIT")

    def _record(self, db: sqlite3.Connection, client_id: str) -> dict[str, Any]:
        row = db.execute(
            "SELECT c.config_digest, f.config, c.registration, c.registered_at, c.model_version "
            "FROM clients c JOIN configurations f ON f.digest = c.config_digest "
            "WHERE c.client_id = ?",
            (client_id,),
        ).fetchone()
        if row is None:
            raise RegistryError(f"registry {self.path}: no client {client_id!r} is registered")
        digest, config, registration, registered_at, version = row
        commitments: dict[str, list[dict[str, str]]] = {}

        def slot(layer: str, chunk: int) -> dict[str, str]:
            per = commitments.setdefault(layer, [])
            while len(per) <= chunk:
                per.append({})
            return per[chunk]

        for layer, chunk, point in db.execute(
            "SELECT layer, chunk, point FROM model_commitments WHERE client_id = ? ORDER BY layer, chunk", (client_id,)
        ):
            slot(layer, chunk)["theta"] = point
        for layer, chunk, name, point in db.execute(
            "SELECT layer, chunk, name, point FROM fisher_commitments WHERE client_id = ? ORDER BY layer, chunk, name",
            (client_id,),
        ):
            slot(layer, chunk)[name] = point
        history = [
            r[0] for r in db.execute("SELECT request_id FROM requests WHERE client_id = ? ORDER BY seq", (client_id,))
        ]
        return {
            "client_id": client_id,
            "config": json.loads(config),
            "config_digest": digest,
            "registration": registration,
            "registered_at": registered_at,
            "model_version": version,
            "commitments": commitments,
            "history": history,
        }

    def export(self, client_id: str) -> dict[str, Any]:
        """The record plus the full history: per accepted request its bundle hash, time and chunk swaps."""
        check_client_id(client_id)
        with self._connect() as db:
            db.execute("BEGIN")
            try:
                record = self._record(db, client_id)
                requests = []
                for request_id, seq, bundle, accepted_at in db.execute(
                    "SELECT request_id, seq, bundle, accepted_at FROM requests WHERE client_id = ? ORDER BY seq",
                    (client_id,),
                ).fetchall():
                    chunks = [
                        {"layer": layer, "chunk": chunk, "old": old, "new": new}
                        for layer, chunk, old, new in db.execute(
                            "SELECT layer, chunk, old_point, new_point FROM request_chunks "
                            "WHERE client_id = ? AND request_id = ? ORDER BY layer, chunk",
                            (client_id, request_id),
                        )
                    ]
                    requests.append(
                        {
                            "request_id": request_id,
                            "model_version": seq,
                            "bundle": bundle,
                            "accepted_at": accepted_at,
                            "chunks": chunks,
                        }
                    )
            finally:
                db.execute("COMMIT")
        return {**record, "requests": requests}

    # ---------------------------------------------------------------------------------------- writes

    def add(self, record: Mapping[str, Any]) -> None:
        """Insert a newly registered client (``record`` as :meth:`get` returns it, without history)."""
        check_client_id(record["client_id"])
        with self._connect() as db, self._write(db):
            self._insert(db, record)

    def _insert(self, db: sqlite3.Connection, record: Mapping[str, Any], history: list[str] = ()) -> None:
        client_id = record["client_id"]
        if db.execute("SELECT 1 FROM clients WHERE client_id = ?", (client_id,)).fetchone():
            raise RegistryError(f"registry {self.path}: client {client_id!r} is already registered")
        db.execute(
            "INSERT OR IGNORE INTO configurations VALUES (?, ?)",
            (record["config_digest"], json.dumps(record["config"], sort_keys=True)),
        )
        db.execute(
            "INSERT INTO clients VALUES (?, ?, ?, ?, ?)",
            (
                client_id,
                record["config_digest"],
                record["registration"],
                record.get("registered_at") or _now(),
                len(history),
            ),
        )
        for layer, per in record["commitments"].items():
            for chunk, entry in enumerate(per):
                for name, point in entry.items():
                    if name == "theta":
                        db.execute(
                            "INSERT INTO model_commitments VALUES (?, ?, ?, ?)", (client_id, layer, chunk, point)
                        )
                    else:
                        db.execute(
                            "INSERT INTO fisher_commitments VALUES (?, ?, ?, ?, ?)",
                            (client_id, layer, chunk, name, point),
                        )
        for seq, request_id in enumerate(history, start=1):
            db.execute("INSERT INTO requests VALUES (?, ?, ?, ?, ?)", (client_id, request_id, seq, "", _now()))

    def accept(
        self,
        client_id: str,
        *,
        request_id: str,
        base_version: int,
        updates: Mapping[tuple[str, int], tuple[str, str]],
        bundle_hash: str,
    ) -> int:
        """Record an accepted request atomically; returns the client's new model version.

        ``updates``: (layer, chunk) -> (old commitment, new commitment). Compares and swaps, in one
        transaction: the client's model version must be ``base_version`` and every old commitment current.
        Raises :class:`RegistryConflict` (nothing written) otherwise, or when the request id was accepted.
        """
        check_client_id(client_id)
        with self._connect() as db, self._write(db):
            row = db.execute("SELECT model_version FROM clients WHERE client_id = ?", (client_id,)).fetchone()
            if row is None:
                raise RegistryError(f"registry {self.path}: no client {client_id!r} is registered")
            if db.execute(
                "SELECT 1 FROM requests WHERE client_id = ? AND request_id = ?", (client_id, request_id)
            ).fetchone():
                raise RegistryConflict("replay", f"request {request_id!r} was already accepted from {client_id!r}")
            if row[0] != base_version:
                raise RegistryConflict(
                    "stale",
                    f"the bundle was built on model version {base_version} of "
                    f"{client_id!r}, the registry is at version {row[0]}: another "
                    "request was accepted since",
                )
            for (layer, chunk), (old, new) in sorted(updates.items()):
                swapped = db.execute(
                    "UPDATE model_commitments SET point = ? WHERE client_id = ? AND layer = ? "
                    "AND chunk = ? AND point = ?",
                    (new, client_id, layer, chunk, old),
                ).rowcount
                if swapped != 1:
                    raise RegistryConflict(
                        "stale",
                        f"layer {layer!r} chunk {chunk}: the bundle's old commitment is no longer the registered one",
                    )
            version = base_version + 1
            db.execute("UPDATE clients SET model_version = ? WHERE client_id = ?", (version, client_id))
            try:
                db.execute(
                    "INSERT INTO requests VALUES (?, ?, ?, ?, ?)", (client_id, request_id, version, bundle_hash, _now())
                )
            except sqlite3.IntegrityError as err:  # belt and braces: the primary key is the rule
                raise RegistryConflict("replay", f"request {request_id!r} was already accepted ({err})") from err
            db.executemany(
                "INSERT INTO request_chunks VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (client_id, request_id, layer, chunk, old, new)
                    for (layer, chunk), (old, new) in sorted(updates.items())
                ],
            )
        return version


# ------------------------------------------------------------------------------------------ migration


def migrate_json_registry(source: str | os.PathLike, registry: Registry) -> list[str]:
    """Copy every client record of a JSON registry directory (``<client_id>.json`` files, the format before
    the database) into ``registry``, in one transaction; returns the migrated client ids.

    A record's history becomes its accepted requests (bundle hashes were not kept: recorded as empty) and
    its model version the number of them.
    """
    source = Path(source)
    if not source.is_dir():
        raise RegistryError(f"{source}: no such JSON registry directory")
    records = []
    for path in sorted(source.glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise RegistryError(f"{path}: not a readable registry record ({err})") from err
        records.append((path, _legacy_record(path, record)))
    with registry._connect() as db, registry._write(db):
        for _, record in records:
            registry._insert(db, record, history=record["history"])
    return [record["client_id"] for _, record in records]


def _legacy_record(path: Path, record: Any) -> dict[str, Any]:
    def bad(field: str, expected: str) -> RegistryError:
        return RegistryError(f"{path}: field {field!r} should be {expected}")

    if not isinstance(record, dict):
        raise bad("<root>", "a JSON object")
    for field in ("client_id", "config_digest", "registration"):
        if not isinstance(record.get(field), str):
            raise bad(field, "a string")
    if record["client_id"] != path.stem:
        raise RegistryError(f"{path}: field 'client_id' is {record['client_id']!r}, the file name says {path.stem!r}")
    check_client_id(record["client_id"])
    if not isinstance(record.get("config"), dict):
        raise bad("config", "an object")
    history = record.get("history")
    if (
        not isinstance(history, list)
        or not all(isinstance(h, str) for h in history)
        or len(set(history)) != len(history)
    ):
        raise bad("history", "a list of distinct request ids")
    commitments = record.get("commitments")
    if not isinstance(commitments, dict) or not all(
        isinstance(per, list)
        and all(isinstance(e, dict) and "theta" in e and all(isinstance(v, str) for v in e.values()) for e in per)
        for per in commitments.values()
    ):
        raise bad("commitments", "{layer: [{column: hex point} per chunk]} with a 'theta' in every chunk")
    return {**record, "history": history}
