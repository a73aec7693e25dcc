"""The role commands on files, as two parties would run them: commit, register, mask, unlearn, prove,
verify — and a tampered bundle rejected by `jaxapex verify` with the registry left unchanged."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest

pytest.importorskip("circuit_compiler.backend")

from circuit_compiler.srs import Srs
from jaxapex.checkpoints import save_checkpoint
from jaxapex.cli import main
from jaxapex.data.digits import digits_task
from jaxapex.models import PRESETS, build_model, init_params
from jaxapex.protocol.registry import Registry
from jaxapex.protocol.requests import UnlearningRequest


def _npz(path, batch):
    np.savez(path, **batch)
    return path


def test_roles_on_files(tmp_path, capsys):
    config = PRESETS["vit_tiny"]
    model = build_model(config)
    params = init_params(model, seed=0)
    save_checkpoint(tmp_path / "global.ckpt", params, config)
    save_checkpoint(tmp_path / "personal.ckpt", params, config)
    data = digits_task(seed=0)
    personal = _npz(tmp_path / "personal.npz", {k: v[:64] for k, v in data.personal_train.as_batch().items()})
    forget = _npz(tmp_path / "forget.npz", {k: v[:64] for k, v in data.forget_train.as_batch().items()})
    retain = _npz(tmp_path / "retain.npz", {k: v[:64] for k, v in data.retain_train.as_batch().items()})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Srs.generate_dev(16, tmp_path / "srs.bin", seed=1)
    srs = str(tmp_path / "srs.bin")

    def run(*argv):
        return main([str(a) for a in argv])

    assert (
        run(
            "commit",
            "--model",
            tmp_path / "personal.ckpt",
            "--data",
            personal,
            "--client-id",
            "alice",
            "--srs",
            srs,
            "--block-size",
            16,
            "--state",
            tmp_path / "state-0",
            "--registration",
            tmp_path / "registration",
        )
        == 0
    )
    assert (
        run(
            "register",
            "--registry",
            tmp_path / "registry.db",
            "--registration",
            tmp_path / "registration",
            "--srs",
            srs,
        )
        == 0
    )
    assert (
        run(
            "mask",
            "--model",
            tmp_path / "global.ckpt",
            "--forget",
            forget,
            "--retain",
            retain,
            "--fraction",
            0.02,
            "--request-id",
            "req-1",
            "--max-delta",
            0.3,
            "--out",
            tmp_path / "request",
        )
        == 0
    )
    assert UnlearningRequest.load(tmp_path / "request").max_delta == 0.5  # rounded up to a power of two
    assert (
        run(
            "unlearn", "--state", tmp_path / "state-0", "--request", tmp_path / "request", "--out", tmp_path / "state-1"
        )
        == 0
    )
    assert (
        run(
            "prove",
            "--state",
            tmp_path / "state-1",
            "--request",
            tmp_path / "request",
            "--srs",
            srs,
            "--out",
            tmp_path / "bundle",
            "--executor",
            "serial",
        )
        == 0
    )

    # A tampered copy first: one proof byte flipped. Rejected, registry unchanged.
    shutil.copytree(tmp_path / "bundle", tmp_path / "tampered")
    manifest = json.loads((tmp_path / "tampered" / "manifest.json").read_text())
    entry = manifest["chunks"][0]
    proof = bytearray((tmp_path / "tampered" / entry["proof"]).read_bytes())
    proof[len(proof) // 2] ^= 1
    (tmp_path / "tampered" / entry["proof"]).write_bytes(bytes(proof))
    registry = Registry(tmp_path / "registry.db")
    before = registry.export("alice")
    code = run(
        "verify",
        "--registry",
        tmp_path / "registry.db",
        "--request",
        tmp_path / "request",
        "--bundle",
        tmp_path / "tampered",
        "--srs",
        srs,
        "--json",
        tmp_path / "v0.json",
    )
    assert code == 1
    assert "sha256" in capsys.readouterr().err  # the blob no longer matches its manifest hash
    assert registry.export("alice") == before

    assert (
        run(
            "verify",
            "--registry",
            tmp_path / "registry.db",
            "--request",
            tmp_path / "request",
            "--bundle",
            tmp_path / "bundle",
            "--srs",
            srs,
            "--json",
            tmp_path / "v.json",
        )
        == 0
    )
    result = json.loads((tmp_path / "v.json").read_text())
    assert result["verified"] is True and result["chunks"] >= 1
    after = registry.export("alice")
    assert after["history"] == ["req-1"] and after["model_version"] == 1
    assert after["commitments"] != before["commitments"]
