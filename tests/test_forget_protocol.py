"""Forget directions through the protocol: ``jaxapex mask --forget-directions K`` puts U in the request,
``unlearn``/``prove`` answer it at level F, ``verify`` checks the proofs against U from its own request and
rejects bundles for other directions or for none; malformed direction fields give one-line errors."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest

from jaxapex.forget_directions import block_directions, contrast_directions, principal_directions
from jaxapex.protocol.artifacts import ArtifactError, sha256_file
from jaxapex.protocol.requests import DIRECTIONS_BLOB, UnlearningRequest

# ------------------------------------------------------------------------------------ pure functions


def test_principal_directions_are_the_top_singular_vectors():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 6)) @ np.diag([5.0, 4.0, 3.0, 0.5, 0.2, 0.1])
    U = principal_directions(X.T @ X, 3)
    _, _, Vt = np.linalg.svd(X)
    np.testing.assert_allclose(np.abs(U), np.abs(Vt[:3]), atol=1e-9)
    np.testing.assert_allclose(U @ U.T, np.eye(3), atol=1e-12)
    assert np.all(U[np.arange(3), np.abs(U).argmax(axis=1)] > 0)  # sign convention
    assert principal_directions(X.T @ X, 0).shape == (0, 6)
    with pytest.raises(ValueError, match=r"K = 7 must be in \[0, in = 6\]"):
        principal_directions(X.T @ X, 7)


def test_contrast_directions_find_what_only_the_forget_inputs_use():
    rng = np.random.default_rng(1)
    shared = np.diag([6.0, 5.0, 4.0, 0.3, 0.3, 0.3])  # large directions every input uses
    retain = rng.standard_normal((400, 6)) @ shared
    forget = rng.standard_normal((400, 6)) @ shared
    forget[:, 4] += 2.0 * rng.standard_normal(400)  # a small direction only the forget inputs use
    c_f, c_r = forget.T @ forget / 400, retain.T @ retain / 400
    assert np.argmax(np.abs(principal_directions(c_f, 1)[0])) in (0, 1, 2)  # principal: a shared direction
    U = contrast_directions(c_f, c_r, 1)
    assert np.abs(U[0, 4]) > 0.99 and U[0, 4] > 0
    U3 = contrast_directions(c_f, c_r, 3)
    np.testing.assert_allclose(U3 @ U3.T, np.eye(3), atol=1e-12)  # an orthonormal basis of the span
    assert contrast_directions(c_f, c_r, 0).shape == (0, 6)
    with pytest.raises(ValueError, match=r"K = 7 must be in \[0, in = 6\]"):
        contrast_directions(c_f, c_r, 7)
    with pytest.raises(ValueError, match="square and alike"):
        contrast_directions(c_f, c_r[:5, :5], 2)


def test_block_directions_read_each_weight_at_its_input_coordinate():
    U = np.arange(2 * 8, dtype=float).reshape(2, 8)  # K = 2, in = 8
    for B in (4, 8, 16):  # within a row, a whole row, two rows per block
        blocks = block_directions(U, (4, 8), B)
        assert blocks.shape == (4 * 8 // B, 2, B)
        for b in range(blocks.shape[0]):
            for i in range(B):
                np.testing.assert_array_equal(blocks[b, :, i], U[:, (b * B + i) % 8])
    with pytest.raises(ValueError, match=r"\(K, in\) = \(K, 8\)"):
        block_directions(U[:, :5], (4, 8), 4)


def test_forget_circuit_keeps_the_registered_k_and_salt_rows():
    from circuit_compiler.fixedpoint import spec_for_block_size
    from jaxapex.protocol import chunks as ch
    from jaxapex.protocol.config import LayerShape, ProofConfig

    layers = (LayerShape("params/fc1/kernel", 32, 16),)
    config = ProofConfig(
        layers=layers, level="F", block_size=16, lanes=16, blocks_per_chunk=32, spec=spec_for_block_size(16)
    )
    assert ch.chunk_shape(config, 0) == ch.chunk_shape(config) and ch.chunk_shape(config).forget is None
    for K in (1, 2):
        shape = ch.chunk_shape(config, K)
        assert shape.forget.directions == K and shape.salt_counts == ch.chunk_shape(config).salt_counts
        assert ch.chunk_circuit(config, K).cs.k == ch.circuit_k(config)  # registered commitments stay valid
    removal = ProofConfig(layers=layers, level="R", block_size=16, lanes=16, blocks_per_chunk=32)
    with pytest.raises(ValueError, match="level F only"):
        ch.chunk_shape(removal, 2)


def _request(directions=None, request_id="req-u"):
    masks = {"params/fc1/kernel": np.eye(4, 8, dtype=bool)}
    return UnlearningRequest(request_id=request_id, model_id="m", masks=masks, directions=directions or {})


def test_request_round_trip_binds_the_directions(tmp_path):
    U = np.linspace(-1, 1, 16).reshape(2, 8)
    request = _request({"params/fc1/kernel": U})
    request.save(tmp_path / "r")
    loaded = UnlearningRequest.load(tmp_path / "r")
    assert loaded.forget_directions == 2 and loaded.directions_hash == request.directions_hash
    np.testing.assert_array_equal(loaded.layer_directions("params/fc1/kernel"), U)
    plain = _request()
    plain.save(tmp_path / "p")
    assert UnlearningRequest.load(tmp_path / "p").forget_directions == 0
    assert plain.directions_hash == "" and not (tmp_path / "p" / DIRECTIONS_BLOB).exists()
    other = _request({"params/fc1/kernel": U[::-1]})
    assert other.directions_hash != request.directions_hash


def _rewrite_blob(path, name, arrays):
    """Replace a blob and fix its manifest hash (what a careless writer, not an attacker, would produce)."""
    np.savez(path / name, **arrays)  # name ends in .npz: written as is
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"][name] = sha256_file(path / name)
    (path / "manifest.json").write_text(json.dumps(manifest))


def _edit_manifest(path, **fields):
    manifest = json.loads((path / "manifest.json").read_text())
    manifest.update(fields)
    (path / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    "break_it, message",
    [
        (lambda p: _rewrite_blob(p, DIRECTIONS_BLOB, {"layer0": np.zeros((2, 5))}), r"'layer0'.*\(K, in\) = \(2, 8\)"),
        (lambda p: _rewrite_blob(p, DIRECTIONS_BLOB, {"layer0": np.zeros((2, 8), np.int64)}), r"'layer0'.*float64"),
        (
            lambda p: _rewrite_blob(p, DIRECTIONS_BLOB, {"layer0": np.full((2, 8), np.nan)}),
            r"directions.npz: .*NaN or inf",
        ),
        (lambda p: _rewrite_blob(p, DIRECTIONS_BLOB, {"layer0": np.ones((2, 8))}), "field 'directions_hash'"),
        (lambda p: _edit_manifest(p, forget_directions="two"), "field 'forget_directions' should be an integer"),
        (lambda p: _edit_manifest(p, forget_directions=3), r"'layer0'.*\(3, 8\)"),
        (lambda p: _edit_manifest(p, forget_directions=0), "field 'forget_directions' is 0 but"),
    ],
)
def test_malformed_directions_give_one_line_errors(tmp_path, break_it, message):
    _request({"params/fc1/kernel": np.linspace(-1, 1, 16).reshape(2, 8)}).save(tmp_path / "r")
    break_it(tmp_path / "r")
    with pytest.raises(ArtifactError, match=message) as err:
        UnlearningRequest.load(tmp_path / "r")
    assert str(tmp_path / "r") in str(err.value) and "\n" not in str(err.value)


# ------------------------------------------------------------------------------- through the CLI


@pytest.fixture(scope="module")
def roles(tmp_path_factory):
    pytest.importorskip("circuit_compiler.backend")
    from circuit_compiler.srs import Srs
    from jaxapex.checkpoints import save_checkpoint
    from jaxapex.data.digits import digits_task
    from jaxapex.models import ViTConfig, build_model, init_params

    tmp = tmp_path_factory.mktemp("forget-roles")
    # fc1 is 32 x 16: one chunk of 32 blocks per layer (B = 16), so every proof is small
    config = ViTConfig(image_size=8, patch_size=2, channels=1, dim=16, depth=1, heads=2, mlp_dim=32, num_classes=10)
    params = init_params(build_model(config), seed=0)
    # the initial head is zero, which makes every Fisher block zero (G = I); a random head gives the
    # compensation something to do, so the forget constraint is active
    head = params["params"]["head"]
    head["kernel"] = np.random.default_rng(0).normal(0.0, 0.5, head["kernel"].shape).astype(np.float32)
    save_checkpoint(tmp / "global.ckpt", params, config)
    save_checkpoint(tmp / "personal.ckpt", params, config)
    data = digits_task(seed=0)
    for name, split in (
        ("personal", data.personal_train),
        ("forget", data.forget_train),
        ("retain", data.retain_train),
    ):
        np.savez(tmp / f"{name}.npz", **{k: v[:64] for k, v in split.as_batch().items()})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Srs.generate_dev(12, tmp / "srs.bin", seed=1)
    run = _runner(tmp)
    run("commit", "--model", tmp / "personal.ckpt", "--data", tmp / "personal.npz", "--client-id", "alice",
        "--srs", tmp / "srs.bin", "--block-size", 16, "--state", tmp / "state-0", "--registration", tmp / "registration")  # fmt: skip
    run("register", "--registry", tmp / "registry.db", "--registration", tmp / "registration", "--srs", tmp / "srs.bin")
    run("mask", "--model", tmp / "global.ckpt", "--forget", tmp / "forget.npz", "--retain", tmp / "retain.npz",
        "--fraction", 0.03, "--request-id", "req-1", "--forget-directions", 2, "--out", tmp / "request")  # fmt: skip
    return tmp, run


def _runner(tmp):
    from jaxapex.cli import main

    def run(*argv, expect=0):
        code = main([str(a) for a in argv])
        assert code == expect, f"jaxapex {argv[0]} exited {code}"
        return code

    return run


def _unlearn_and_prove(tmp, run, request, tag):
    run("unlearn", "--state", tmp / "state-0", "--request", request, "--out", tmp / f"state-{tag}")
    run("prove", "--state", tmp / f"state-{tag}", "--request", request, "--srs", tmp / "srs.bin",
        "--out", tmp / f"bundle-{tag}", "--executor", "serial")  # fmt: skip
    return tmp / f"bundle-{tag}"


def _verify(tmp, run, bundle, expect):
    verdict = tmp / f"verdict-{bundle.name}.json"
    run("verify", "--registry", tmp / "registry.db", "--request", tmp / "request", "--bundle", bundle,
        "--srs", tmp / "srs.bin", "--json", verdict, expect=expect)  # fmt: skip
    return json.loads(verdict.read_text())


def test_forget_directions_end_to_end_and_rejections(roles):
    from jaxapex.protocol.client import ClientState
    from jaxapex.protocol.registry import Registry

    tmp, run = roles
    request = UnlearningRequest.load(tmp / "request")
    assert request.forget_directions == 2
    U = request.layer_directions("params/block_0/mlp/fc1/kernel")
    np.testing.assert_allclose(U @ U.T, np.eye(2), atol=1e-9)  # orthonormal principal directions

    good = _unlearn_and_prove(tmp, run, tmp / "request", "good")
    witness = ClientState.load(tmp / "state-good").witness["params/block_0/mlp/fc1/kernel"]
    assert np.abs(witness["mu_q"]).max() > 0  # the constraint was active

    # The same request id and mask, other directions: a real proof, for the wrong U.
    other = UnlearningRequest(
        request_id=request.request_id,
        model_id=request.model_id,
        masks=request.masks,
        directions={name: -np.roll(U, 1, axis=1) for name, U in request.directions.items()},
    )
    other.save(tmp / "request-other")
    wrong = _unlearn_and_prove(tmp, run, tmp / "request-other", "other")

    registry = Registry(tmp / "registry.db")
    before = registry.export("alice")
    assert _verify(tmp, run, wrong, expect=1)["check"] == "forget-directions"
    lying = tmp / "bundle-lying"  # claims the request's directions: the proof itself fails on the verifier's U
    shutil.copytree(wrong, lying)
    _edit_manifest(lying, directions_hash=request.directions_hash)
    assert _verify(tmp, run, lying, expect=1)["check"] == "proof"
    plain = tmp / "bundle-plain"  # says it answers K = 0
    shutil.copytree(good, plain)
    _edit_manifest(plain, forget_directions=0, directions_hash="")
    failed = _verify(tmp, run, plain, expect=1)
    assert failed["check"] == "forget-directions" and "K = 0" in failed["reason"]
    assert registry.export("alice") == before

    verdict = _verify(tmp, run, good, expect=0)
    assert verdict["verified"] is True and verdict["chunks"] >= 1
    assert registry.export("alice")["model_version"] == 1


def test_malformed_request_directions_through_the_cli(roles, capsys):
    tmp, run = roles
    broken = tmp / "request-broken"
    shutil.copytree(tmp / "request", broken)
    _rewrite_blob(broken, DIRECTIONS_BLOB, {"layer0": np.zeros((2, 3))})
    run("unlearn", "--state", tmp / "state-0", "--request", broken, "--out", tmp / "state-x", expect=2)
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and DIRECTIONS_BLOB in err and "'layer0'" in err and "\n" not in err


def test_direction_kinds_are_checked():
    from jaxapex.tasks import UnlearningConfig

    with pytest.raises(ValueError, match="directions_kind must be one of"):
        UnlearningConfig(directions_kind="random")
    from jaxapex.forget_directions import forget_directions

    with pytest.raises(ValueError, match="need the retain set's batches"):
        forget_directions(None, None, (), [{"x": np.zeros((1, 2))}], k=1, kind="contrast")
