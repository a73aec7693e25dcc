"""Scale-out on a real (local, 2-CPU) Ray runtime: a client proves its chunks on Ray actors, and the
provider verifies a batch of bundles from several clients fanned out over Ray, the registry updated for
exactly the accepted ones."""

from __future__ import annotations

import json
import shutil

import pytest

ray = pytest.importorskip("ray")  # CI installs ray (.ci/run); the skip is for trimmed-down installs only

from benchmarks.verify_batch import LAYER, make_world, prove_bundle  # noqa: E402
from circuit_compiler.executors import ensure_ray  # noqa: E402
from jaxapex.cli import main  # noqa: E402
from jaxapex.protocol import provider  # noqa: E402

pytestmark = pytest.mark.prover

CLIENTS = ("alice", "bob", "carol")


@pytest.fixture(scope="module")
def local_ray():
    """A Ray runtime on this machine only: 2 CPUs, no dashboard, torn down after the module."""
    ensure_ray(num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def world(tmp_path_factory, local_ray):
    """Three registered clients, one request touching two chunks, each client's honest next state."""
    return make_world(tmp_path_factory.mktemp("ray"), list(CLIENTS), seed=7)


def test_client_proves_its_chunks_on_ray_actors(world):
    bundle = prove_bundle(world, "alice", executor="ray", workers=2)
    report = provider.verify(world.registry, world.request, bundle, srs=world.srs, update_registry=False)
    assert report.chunks_verified == 2


def test_provider_verifies_a_batch_of_clients_on_ray(world):
    root, srs, registry, request = world.root, world.srs, world.registry, world.request
    before = {c: registry.get(c) for c in CLIENTS}
    bundles = {c: prove_bundle(world, c) for c in ("alice", "bob")}
    # carol sends alice's bundle under her own name: its old-model commitments are not carol's
    stolen = root / "bundle-carol"
    shutil.copytree(bundles["alice"], stolen)
    manifest = json.loads((stolen / "manifest.json").read_text())
    manifest["client_id"] = "carol"
    (stolen / "manifest.json").write_text(json.dumps(manifest))

    submissions = [
        (request, bundles["alice"]),
        (request, stolen),
        (request, bundles["bob"]),
        (request, bundles["alice"]),
    ]  # alice twice: the second is a replay of the first
    outcomes = provider.verify_many(registry, submissions, srs=srs, executor="ray", workers=2, progress=False)
    assert [o.accepted for o in outcomes] == [True, False, True, False]
    assert [o.client_id for o in outcomes] == ["alice", "carol", "bob", "alice"]
    assert outcomes[1].failure.check == "commitment" and outcomes[1].failure.chunk == 0, str(outcomes[1].failure)
    assert outcomes[3].failure.check == "replay"
    assert registry.get("carol") == before["carol"], "a rejected bundle changed the registry"
    for c in ("alice", "bob"):
        after = registry.get(c)
        assert after["history"] == ["req-1"] and after["commitments"] != before[c]["commitments"]
        for e in json.loads((bundles[c] / "manifest.json").read_text())["chunks"]:
            assert after["commitments"][LAYER][e["chunk"]]["theta"] == e["theta_new"]

    # the CLI, on the updated registry: bob's bundle is now a replay, carol's still not hers
    code = main(
        [
            "verify-batch",
            "--registry",
            str(registry.path),
            "--request",
            str(_request_file(root, request)),
            "--bundles",
            str(bundles["bob"]),
            str(stolen),
            "--srs",
            str(srs.path),
            "--executor",
            "ray",
            "--workers",
            "2",
            "--json",
            str(root / "batch.json"),
        ]
    )
    rows = json.loads((root / "batch.json").read_text())["bundles"]
    assert code == 1 and [r["verified"] for r in rows] == [False, False]
    assert [r["check"] for r in rows] == ["replay", "commitment"]


def _request_file(root, request):
    path = root / "request"
    if not path.exists():
        request.save(path)
    return path
