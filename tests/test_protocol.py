"""End-to-end protocol on a tiny synthetic layer: honest clients are accepted, dishonest ones rejected
with the failed check named, bad artifacts give clear errors, and rejections leave the registry unchanged."""

from __future__ import annotations

import dataclasses
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

backend = pytest.importorskip("circuit_compiler.backend")

from circuit_compiler.srs import Srs  # noqa: E402
from jaxapex.protocol import client, provider  # noqa: E402
from jaxapex.protocol.artifacts import ArtifactError, read_artifact, sha256_file  # noqa: E402
from jaxapex.protocol.config import LayerShape, ProofConfig  # noqa: E402
from jaxapex.protocol.registry import Registry  # noqa: E402
from jaxapex.protocol.requests import UnlearningRequest  # noqa: E402

LAYER = "params/mlp/fc1/kernel"
OUT, IN, B = 8, 8, 8


@pytest.fixture(scope="module")
def srs(tmp_path_factory):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Srs.generate_dev(13, tmp_path_factory.mktemp("srs") / "srs.bin", seed=7)


def _inverse_fisher(rng, n_blocks):
    A = rng.normal(size=(n_blocks, B, B))
    return np.linalg.inv(A @ A.transpose(0, 2, 1) / B + 0.2 * np.eye(B))


def _mask(rows_cols):
    m = np.zeros((OUT, IN), dtype=bool)
    for r, c in rows_cols:
        m[r, c] = True
    return m


@dataclasses.dataclass
class World:
    root: Path
    srs: Srs
    config: ProofConfig
    registry: Registry
    state0: client.ClientState
    params: dict
    G: np.ndarray
    request: UnlearningRequest

    def registry_bytes(self) -> str:
        return json.dumps(self.registry.export("alice"), sort_keys=True)


@pytest.fixture(scope="module")
def committed(srs):
    """The client's commit (with its well-formedness proofs), made once: states are never modified."""
    rng = np.random.default_rng(3)
    params = {"params": {"mlp": {"fc1": {"kernel": rng.normal(size=(IN, OUT)) * 0.2}}}}
    config = ProofConfig(layers=(LayerShape(LAYER, OUT, IN),), level="F", block_size=B, lanes=4, blocks_per_chunk=4)
    G = _inverse_fisher(rng, OUT * IN // B)
    state0, registration = client.commit(
        client_id="alice", params=params, config=config, srs=srs, inverse_fisher={LAYER: G}, rng=rng, executor="serial"
    )
    return params, config, G, state0, registration


@pytest.fixture
def world(tmp_path, srs, committed) -> World:
    params, config, G, state0, registration = committed
    client.write_registration(tmp_path / "registration", registration)
    registry = Registry(tmp_path / "registry.db")
    provider.register(registry, tmp_path / "registration", srs=srs)
    # Row 1 lies in chunk 0 (blocks 0-3), row 6 in chunk 1 (blocks 4-7): both chunks are touched.
    request = UnlearningRequest(request_id="req-1", model_id="tiny", masks={LAYER: _mask([(1, 2), (1, 5), (6, 0)])})
    return World(tmp_path, srs, config, registry, state0, params, G, request)


def _bundle(
    w: World, state: client.ClientState, name: str, request: UnlearningRequest | None = None, executor: str = "serial"
) -> Path:
    fields, blobs = client.prove(state, request or w.request, w.srs, progress=False, executor=executor)
    return client.write_bundle(w.root / name, fields, blobs)


def _rejected(
    w: World, bundle: Path, check: str, request: UnlearningRequest | None = None
) -> provider.VerificationFailed:
    before = w.registry_bytes()
    with pytest.raises(provider.VerificationFailed) as info:
        provider.verify(w.registry, request or w.request, bundle, srs=w.srs)
    assert info.value.check == check, str(info.value)
    assert w.registry_bytes() == before, "a rejected bundle changed the registry"
    return info.value


def _tampered_state(w: World, edit) -> client.ClientState:
    state = client.unlearn(w.state0, w.request, rng=np.random.default_rng(11))
    witness = {name: {k: np.array(v) for k, v in arrays.items()} for name, arrays in state.witness.items()}
    edit(witness[LAYER])
    return dataclasses.replace(state, witness=witness)


def test_honest_client_is_accepted_and_registry_advances(world):
    w = world
    state1 = client.unlearn(w.state0, w.request, rng=np.random.default_rng(5))
    # Masked weights are exactly zero in the new model, which is the committed θ'.
    W1 = client.layer_matrix(state1.params, LAYER)
    assert np.all(W1[w.request.masks[LAYER]] == 0)
    assert np.any(W1[~w.request.masks[LAYER]] != client.layer_matrix(w.params, LAYER)[~w.request.masks[LAYER]])
    state1.save(w.root / "state1")
    state1 = client.ClientState.load(w.root / "state1")
    bundle = _bundle(w, state1, "bundle", executor="process")  # the default, parallel path
    before = json.loads(w.registry_bytes())
    report = provider.verify(w.registry, w.request, bundle, srs=w.srs)
    assert report.chunks_verified == 2
    after = json.loads(w.registry_bytes())
    assert after["history"] == ["req-1"]
    entries = read_artifact(bundle, client.BUNDLE).manifest["chunks"]
    for e in entries:
        assert after["commitments"][LAYER][e["chunk"]]["theta"] == e["theta_new"]
        assert after["commitments"][LAYER][e["chunk"]]["theta"] != before["commitments"][LAYER][e["chunk"]]["theta"]
    # A replay of the accepted bundle is refused.
    _rejected(w, bundle, "replay")

    # A second request builds on the new registered commitments.
    request2 = UnlearningRequest(request_id="req-2", model_id="tiny", masks={LAYER: _mask([(2, 2)])})
    state2 = client.unlearn(client.settle(state1), request2, rng=np.random.default_rng(6))
    report2 = provider.verify(w.registry, request2, _bundle(w, state2, "bundle2", request2), srs=w.srs)
    assert report2.chunks_verified == 1
    # Replaying the first bundle for the second request: it answers another request.
    _rejected(w, bundle, "request", request2)


def test_client_that_ignores_the_request_is_rejected(world):
    def ignore(wit):
        wit["theta_new_q"][:] = wit["theta_q"]
        wit["delta_q"][:] = 0

    err = _rejected(world, _bundle(world, _tampered_state(world, ignore), "b"), "proof")
    assert err.layer == LAYER


def test_client_that_zeroes_part_of_the_mask_is_rejected(world):
    def partial(wit):
        masked = np.argwhere(wit["mask"])
        b, i = masked[0]
        wit["theta_new_q"][b, i] = wit["theta_q"][b, i]

    _rejected(world, _bundle(world, _tampered_state(world, partial), "b"), "proof")


def test_client_that_moves_other_weights_is_rejected(world):
    def move(wit):
        unmasked = np.argwhere(~wit["mask"])
        b, i = unmasked[5]
        wit["theta_new_q"][b, i] += 1000
        wit["delta_q"][b, i] += 1000

    _rejected(world, _bundle(world, _tampered_state(world, move), "b"), "proof")


def test_client_with_another_G_is_rejected(world):
    w = world
    G_other = {LAYER: np.where(np.eye(B, dtype=bool), 4096, 0)[None].repeat(8, 0)}
    # Committing its own G: those commitments are no re-randomization of the registered ones.
    other = dataclasses.replace(w.state0, G_q=G_other, commitments={})
    state = client.unlearn(other, w.request, rng=np.random.default_rng(2))
    _rejected(w, _bundle(w, state, "b"), "rerandomization")
    # Presenting the registered commitments (re-randomized) over its own G: the chunk proof fails.
    other = dataclasses.replace(w.state0, G_q=G_other)
    assert other.commitments, "the state keeps its registered commitments"
    state = client.unlearn(other, w.request, rng=np.random.default_rng(2))
    _rejected(w, _bundle(w, state, "c"), "proof")


def test_swapped_chunks_are_rejected(world):
    w = world
    bundle = _bundle(w, client.unlearn(w.state0, w.request, rng=np.random.default_rng(1)), "b")
    manifest = json.loads((bundle / "manifest.json").read_text())
    a, b = manifest["chunks"]
    a["proof"], b["proof"] = b["proof"], a["proof"]
    a["theta_new"], b["theta_new"] = b["theta_new"], a["theta_new"]
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    _rejected(w, bundle, "proof")


def test_unregistered_commitments_are_rejected(world):
    w = world
    bundle = _bundle(w, client.unlearn(w.state0, w.request, rng=np.random.default_rng(1)), "b")
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["chunks"][0]["rerandomized"]["theta"] = manifest["chunks"][1]["rerandomized"]["theta"]
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    _rejected(w, bundle, "rerandomization")

    # Re-randomization proofs are bound to their chunk: chunk 1's fields moved to chunk 0 do not verify.
    manifest = json.loads((bundle / "manifest.json").read_text())
    for field in ("rerandomized", "rerandomization"):
        manifest["chunks"][0][field] = manifest["chunks"][1][field]
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    _rejected(w, bundle, "rerandomization")

    # A bundle without re-randomized commitments is refused by name.
    manifest = json.loads((bundle / "manifest.json").read_text())
    del manifest["chunks"][0]["rerandomization"]
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    _rejected(w, bundle, "rerandomization")

    # A new-model commitment other than the one the proof binds.
    bundle = _bundle(w, client.unlearn(w.state0, w.request, rng=np.random.default_rng(1)), "b2")
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["chunks"][0]["theta_new"] = manifest["chunks"][1]["theta_new"]
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    _rejected(w, bundle, "proof")


def test_proof_for_another_request_is_rejected(world):
    w = world
    other = UnlearningRequest(request_id="req-x", model_id="tiny", masks={LAYER: _mask([(1, 2), (1, 5), (6, 1)])})
    bundle = _bundle(w, client.unlearn(w.state0, other, rng=np.random.default_rng(1)), "b", other)
    _rejected(w, bundle, "request")
    # Relabelled as an answer to req-1: its re-randomization proofs are bound to req-x (and the chunk
    # proofs still carry the other mask).
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["request_id"], manifest["mask_hash"] = w.request.request_id, w.request.mask_hash
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    _rejected(w, bundle, "rerandomization")


def test_missing_chunk_proof_is_rejected(world):
    w = world
    bundle = _bundle(w, client.unlearn(w.state0, w.request, rng=np.random.default_rng(1)), "b")
    manifest = json.loads((bundle / "manifest.json").read_text())
    dropped = manifest["chunks"].pop()
    (bundle / dropped["proof"]).unlink()
    del manifest["files"][dropped["proof"]]
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    _rejected(w, bundle, "chunks")


# ------------------------------------------------------------------------------------------ bad input


def test_bad_artifacts_give_clear_errors(world, tmp_path):
    w = world
    w.request.save(tmp_path / "req")
    # Missing file.
    broken = tmp_path / "req-missing"
    shutil.copytree(tmp_path / "req", broken)
    (broken / "masks.npz").unlink()
    with pytest.raises(ArtifactError, match="missing file"):
        UnlearningRequest.load(broken)
    # Extra file.
    extra = tmp_path / "req-extra"
    shutil.copytree(tmp_path / "req", extra)
    (extra / "notes.txt").write_text("hi")
    with pytest.raises(ArtifactError, match="unexpected file"):
        UnlearningRequest.load(extra)
    # Truncated blob.
    trunc = tmp_path / "req-trunc"
    shutil.copytree(tmp_path / "req", trunc)
    data = (trunc / "masks.npz").read_bytes()
    (trunc / "masks.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match="masks.npz"):
        UnlearningRequest.load(trunc)
    # Wrong format version.
    ver = tmp_path / "req-version"
    shutil.copytree(tmp_path / "req", ver)
    manifest = json.loads((ver / "manifest.json").read_text())
    manifest["version"] = 99
    (ver / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="'version'"):
        UnlearningRequest.load(ver)
    # Mask that does not fit the model.
    bad = UnlearningRequest(request_id="r", model_id="tiny", masks={LAYER: np.zeros((OUT, IN + 1), dtype=bool)})
    with pytest.raises(ValueError, match="shape"):
        client.unlearn(w.state0, bad)


def test_srs_mismatch_is_refused(world, tmp_path):
    w = world
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        other = Srs.generate_dev(13, tmp_path / "other.bin", seed=8)
    state = client.unlearn(w.state0, w.request, rng=np.random.default_rng(1))
    with pytest.raises(ValueError, match="SRS"):
        client.prove(state, w.request, other, progress=False)
    bundle = _bundle(w, state, "b")
    before = w.registry_bytes()
    with pytest.raises(provider.VerificationFailed, match="srs"):
        provider.verify(w.registry, w.request, bundle, srs=other)
    assert w.registry_bytes() == before


def _rehash_blob(artifact: Path, name: str) -> None:
    """A blob edited on purpose, its manifest hash updated (so the edit reaches the field checks)."""
    manifest = json.loads((artifact / "manifest.json").read_text())
    manifest["files"][name] = sha256_file(artifact / name)
    (artifact / "manifest.json").write_text(json.dumps(manifest))


def test_state_round_trip_and_atomic_rewrite(world, tmp_path):
    w = world
    w.state0.save(tmp_path / "s")
    loaded = client.ClientState.load(tmp_path / "s")
    assert loaded.salts == w.state0.salts
    np.testing.assert_array_equal(loaded.theta_q[LAYER], w.state0.theta_q[LAYER])
    np.testing.assert_array_equal(loaded.G_q[LAYER], w.state0.G_q[LAYER])
    assert loaded.commitments == w.state0.commitments and loaded.commitments[LAYER][0]
    # The registered commitments the state keeps are the registration's.
    registered = w.registry.get("alice")["commitments"][LAYER]
    assert [{n: p.hex() for n, p in e.items()} for e in loaded.commitments[LAYER]] == registered
    # A state written before it kept them loads without them (the prover then commits those columns).
    dataclasses.replace(w.state0, commitments={}).save(tmp_path / "old")
    assert client.ClientState.load(tmp_path / "old").commitments == {}
    # A truncated array is refused, naming the file and the array.
    art = tmp_path / "s"
    blob = next(art.glob("layer-*.npz"))
    with np.load(blob) as z:
        arrays = dict(z)
    arrays["registered_commitments"] = arrays["registered_commitments"][:, :, :47]
    np.savez(blob, **arrays)
    _rehash_blob(art, blob.name)
    with pytest.raises(ArtifactError, match=r"layer-000\.npz: array 'registered_commitments' should be uint8"):
        client.ClientState.load(art)
    w.state0.save(tmp_path / "s")
    # A failing rewrite leaves the old artifact intact.
    bad = dataclasses.replace(w.state0, theta_q={})
    with pytest.raises(KeyError):
        bad.save(tmp_path / "s")
    client.ClientState.load(tmp_path / "s")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_registration_with_an_out_of_range_g_is_rejected(tmp_path, srs, committed):
    """Attack B needs G entries far outside ±2^f_g: a registration committing one has no valid
    well-formedness proof, so ``register`` refuses it and the client never enters the registry."""
    from circuit_compiler.lowering import committed_columns
    from jaxapex.protocol import chunks as ch

    params, config, G, state0, registration = committed
    shape = ch.chunk_shape(config)
    G_c = ch.split_chunks(state0.G_q[LAYER], config)[0]
    columns = committed_columns(shape, salts=state0.salts[LAYER][0], G=G_c)
    lane = columns["g_1"].copy()
    lane[shape.first_row] = (int(lane[shape.first_row]) + (1 << 200)) % shape.field.modulus  # a field-sized entry
    forged = json.loads(json.dumps({k: v for k, v in registration.items() if k != "proofs"}))
    forged["commitments"][LAYER][0]["g_1"] = backend.commit(srs, ch.circuit_k(config), lane).hex()
    client.write_registration(tmp_path / "registration", {**forged, "proofs": registration["proofs"]})
    registry = Registry(tmp_path / "registry")
    with pytest.raises(provider.VerificationFailed) as info:
        provider.register(registry, tmp_path / "registration", srs=srs)
    assert info.value.check == "wellformedness" and "chunk 0" in str(info.value)
    assert not registry.has("alice")
    # a registration without its proofs is refused by name as well
    manifest = json.loads((tmp_path / "registration" / "manifest.json").read_text())
    del manifest["wellformedness"]
    (tmp_path / "registration" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="wellformedness"):
        provider.register(registry, tmp_path / "registration", srs=srs)
