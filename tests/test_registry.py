"""The registry database: records round-trip, acceptance is a compare-and-swap that concurrent processes
cannot break, request ids are unique per client, JSON registries migrate, bad files give named errors."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from jaxapex.protocol.artifacts import read_artifact, recover_interrupted_swap, write_artifact
from jaxapex.protocol.registry import Registry, RegistryConflict, RegistryError, migrate_json_registry


def _point(i: int) -> str:
    return f"{i:096x}"


def _record(client_id: str = "alice", chunks: int = 3) -> dict:
    return {
        "client_id": client_id,
        "config": {"level": "F", "layers": [{"name": "fc1"}]},
        "config_digest": "cfg",
        "registration": "reg-hash",
        "commitments": {"fc1": [{"theta": _point(c), "g_0": _point(100 + c)} for c in range(chunks)]},
    }


def test_record_round_trip_and_accept(tmp_path):
    registry = Registry(tmp_path / "r.db")
    registry.add(_record())
    record = registry.get("alice")
    assert record["commitments"] == _record()["commitments"]
    assert record["model_version"] == 0 and record["history"] == []
    with pytest.raises(RegistryError, match="already registered"):
        registry.add(_record())

    version = registry.accept(
        "alice", request_id="req-1", base_version=0, updates={("fc1", 1): (_point(1), _point(7))}, bundle_hash="b1"
    )
    assert version == 1
    record = registry.get("alice")
    assert record["commitments"]["fc1"][1] == {"theta": _point(7), "g_0": _point(101)}
    assert record["commitments"]["fc1"][0]["theta"] == _point(0)
    assert record["history"] == ["req-1"]
    exported = registry.export("alice")
    assert exported["requests"][0]["chunks"] == [{"layer": "fc1", "chunk": 1, "old": _point(1), "new": _point(7)}]

    before = registry.export("alice")
    with pytest.raises(RegistryConflict) as info:  # the same request id again
        registry.accept("alice", request_id="req-1", base_version=1, updates={}, bundle_hash="b1")
    assert info.value.check == "replay"
    with pytest.raises(RegistryConflict) as info:  # built on version 0, registry is at 1
        registry.accept(
            "alice", request_id="req-2", base_version=0, updates={("fc1", 2): (_point(2), _point(8))}, bundle_hash="b2"
        )
    assert info.value.check == "stale"
    with pytest.raises(RegistryConflict) as info:  # right version, but an old commitment that is not current
        registry.accept(
            "alice",
            request_id="req-2",
            base_version=1,
            updates={("fc1", 2): (_point(2), _point(8)), ("fc1", 1): (_point(1), _point(9))},
            bundle_hash="b2",
        )
    assert info.value.check == "stale"
    assert registry.export("alice") == before  # a lost compare-and-swap writes nothing


def _racer(path: Path, request_id: str, chunk: int, barrier: threading.Barrier, results: list) -> None:
    registry = Registry(path)  # its own connections, as another process would have
    barrier.wait()
    try:
        registry.accept(
            "alice",
            request_id=request_id,
            base_version=0,
            updates={("fc1", chunk): (_point(chunk), _point(50 + chunk))},
            bundle_hash=request_id,
        )
        results.append((request_id, "accepted"))
    except RegistryConflict as err:
        results.append((request_id, err.check))


@pytest.mark.parametrize("same_request", [False, True])
def test_concurrent_accepts_exactly_one_wins(tmp_path, same_request):
    """Threads with their own connections (sqlite3 releases the GIL); real processes race in
    test_protocol_lifecycle.py through `jaxapex verify`."""
    for trial in range(10):
        path = tmp_path / f"r{trial}.db"
        Registry(path).add(_record())
        barrier, results = threading.Barrier(3), []
        names = [("req-a", 0)] * 3 if same_request else [("req-a", 0), ("req-b", 1), ("req-c", 2)]
        threads = [threading.Thread(target=_racer, args=(path, rid, c, barrier, results)) for rid, c in names]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        winners = [rid for rid, outcome in results if outcome == "accepted"]
        assert len(results) == 3 and len(winners) == 1, results
        assert all(o in ("stale", "replay") for _, o in results if o != "accepted")
        record = Registry(path).get("alice")
        assert record["history"] == winners and record["model_version"] == 1


def test_migrate_json_registry(tmp_path):
    src = tmp_path / "old-registry"
    src.mkdir()
    for cid, history in (("alice", ["req-1", "req-2"]), ("bob", [])):
        (src / f"{cid}.json").write_text(json.dumps({**_record(cid), "history": history}))
    registry = Registry(tmp_path / "new.db")
    assert migrate_json_registry(src, registry) == ["alice", "bob"]
    alice = registry.get("alice")
    assert alice["history"] == ["req-1", "req-2"] and alice["model_version"] == 2
    assert alice["commitments"] == _record()["commitments"]
    with pytest.raises(RegistryError, match="is a directory.*registry migrate"):
        Registry(src)
    # A bad record names its file and field, and nothing of the batch is written.
    (src / "carol.json").write_text(json.dumps({**_record("carol"), "history": "req-1"}))
    other = Registry(tmp_path / "other.db")
    with pytest.raises(RegistryError, match=r"carol\.json: field 'history'"):
        migrate_json_registry(src, other)
    assert other.clients() == []


def test_bad_registry_files(tmp_path):
    (tmp_path / "junk.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(RegistryError, match="junk.db"):
        Registry(tmp_path / "junk.db")
    with pytest.raises(RegistryError, match="no such registry database"):
        Registry(tmp_path / "absent.db", create=False)
    registry = Registry(tmp_path / "r.db")
    with pytest.raises(RegistryError, match="no client"):
        registry.get("nobody")
    with pytest.raises(RegistryError, match="client id"):
        registry.get("../etc")


def test_interrupted_fallback_swap_is_recovered(tmp_path):
    """Where directories cannot be exchanged atomically, a kill between the two renames leaves the old
    version aside; the next read puts it back (and the next write then replaces it as usual)."""
    path = tmp_path / "artifact"
    write_artifact(path, "test", {"generation": 1}, {"b.bin": b"1"})
    os.replace(path, tmp_path / ".artifact.old")  # the first rename of the fallback swap, then a crash
    assert not path.exists()
    assert read_artifact(path, "test").manifest["generation"] == 1
    write_artifact(path, "test", {"generation": 2}, {"b.bin": b"2"})
    assert read_artifact(path, "test").manifest["generation"] == 2
    recover_interrupted_swap(path)  # nothing to do: a no-op
    assert sorted(p.name for p in Path(tmp_path).iterdir()) == ["artifact"]
