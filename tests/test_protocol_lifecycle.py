"""The protocol as real processes run it, on a tiny ViT (fc1 16×8, B = 4, 4 chunks): three successive
requests through the CLI, concurrent `jaxapex verify` processes racing on one registry, and SIGKILL at
random points of verify, prove and an artifact overwrite -- the registry and every artifact always hold
the old or the new version, never none, and an accepted request is never lost."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("circuit_compiler.backend")

from circuit_compiler import backend as be
from circuit_compiler.srs import Srs
from jaxapex.checkpoints import save_checkpoint
from jaxapex.cli import main
from jaxapex.data.digits import digits_task
from jaxapex.models import build_model, init_params
from jaxapex.models.vit import ViTConfig
from jaxapex.protocol import chunks as ch
from jaxapex.protocol import client
from jaxapex.protocol.artifacts import read_artifact
from jaxapex.protocol.registry import Registry
from jaxapex.protocol.requests import UnlearningRequest

FC1 = "params/block_0/mlp/fc1/kernel"
OUT, IN, B, BLOCKS_PER_CHUNK = 16, 8, 4, 8  # 32 blocks of 4: 4 chunks of 4 rows of W each
ROOT = Path(__file__).resolve().parents[1]


def run(*argv) -> int:
    return main([str(a) for a in argv])


def _cli(*argv) -> list[str]:
    return [sys.executable, "-m", "jaxapex", *map(str, argv)]


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "RAYON_NUM_THREADS": "1",
        "PYTHONWARNINGS": "ignore",
    }


def _request(root: Path, request_id: str, chunk: int) -> Path:
    """A request masking three weights in the rows of W that make up ``chunk``."""
    mask = np.zeros((OUT, IN), dtype=bool)
    mask[4 * chunk, [1, 6]] = True
    mask[4 * chunk + 2, 3] = True
    return UnlearningRequest(request_id=request_id, model_id="micro", masks={FC1: mask}).save(root / request_id)


def _copy_db(src: Path, dst: Path) -> None:
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)
    keys = src.with_name(src.name + ".vk")
    if keys.is_dir():  # the provider's cached verifying keys
        shutil.copytree(keys, dst.with_name(dst.name + ".vk"), dirs_exist_ok=True)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Committed and registered client 'alice' (level F): state-0, registry.db, SRS; files only."""
    root = tmp_path_factory.mktemp("lifecycle")
    config = ViTConfig(image_size=8, patch_size=4, channels=1, dim=8, depth=1, heads=2, mlp_dim=16, num_classes=10)
    params = init_params(build_model(config), seed=0)
    save_checkpoint(root / "personal.ckpt", params, config)
    data = digits_task(seed=0)
    np.savez(root / "personal.npz", **{k: v[:32] for k, v in data.personal_train.as_batch().items()})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Srs.generate_dev(11, root / "srs.bin", seed=3)
    assert (
        run(
            "commit",
            "--model",
            root / "personal.ckpt",
            "--data",
            root / "personal.npz",
            "--client-id",
            "alice",
            "--srs",
            root / "srs.bin",
            "--block-size",
            B,
            "--lanes",
            B,
            "--blocks-per-chunk",
            BLOCKS_PER_CHUNK,
            "--state",
            root / "state-0",
            "--registration",
            root / "registration",
        )
        == 0
    )
    assert (
        run(
            "register",
            "--registry",
            root / "registry.db",
            "--registration",
            root / "registration",
            "--srs",
            root / "srs.bin",
        )
        == 0
    )
    return root


def _prove(srs: Path, state: Path, request: Path, out: Path) -> Path:
    pending = out.with_name(f"{out.name}-state")
    assert run("unlearn", "--state", state, "--request", request, "--out", pending) == 0
    assert (
        run("prove", "--state", pending, "--request", request, "--srs", srs, "--out", out, "--executor", "serial") == 0
    )
    return pending


def test_three_successive_requests_through_the_cli(world, tmp_path, capsys):
    root = tmp_path
    for name in ("state-0", "srs.bin", "srs.bin.json"):
        (shutil.copytree if (world / name).is_dir() else shutil.copy)(world / name, root / name)
    _copy_db(world / "registry.db", root / "registry.db")
    registry = Registry(root / "registry.db")
    state = root / "state-0"
    initial = registry.get("alice")["commitments"][FC1]
    replaced = set()  # chunks whose registered θ is a new model's, which the state does not keep
    for i, chunk in enumerate((0, 2, 3)):  # each request touches a chunk no earlier one touched
        request = _request(root, f"req-{i}", chunk)
        before = registry.get("alice")["commitments"][FC1]
        be.commitment_stats(reset=True)
        pending = _prove(root / "srs.bin", state, request, root / f"bundle-{i}")
        # The serial prover took every reused column's commitment from the state (re-randomized), no MSM.
        assert be.commitment_stats(reset=True)["claimed"][0] == len(before[chunk])
        assert (
            run(
                "verify",
                "--registry",
                root / "registry.db",
                "--request",
                request,
                "--bundle",
                root / f"bundle-{i}",
                "--srs",
                root / "srs.bin",
                "--json",
                root / f"verdict-{i}.json",
            )
            == 0
        )
        out = capsys.readouterr().out
        assert "VERIFIED" in out and "per chunk" in out and "peak RSS" in out
        record = registry.get("alice")
        assert record["model_version"] == i + 1 and record["history"] == [f"req-{j}" for j in range(i + 1)]
        after = record["commitments"][FC1]
        assert [c for c in range(4) if after[c]["theta"] != before[c]["theta"]] == [chunk]
        assert all(after[c]["g_0"] == initial[c]["g_0"] for c in range(4))  # G is registered once, never moves
        # Without settling, the pending state cannot start the next request.
        with pytest.raises(ValueError, match="pending"):
            client.unlearn(client.ClientState.load(pending), UnlearningRequest.load(request))
        state = root / f"state-{i + 1}"
        assert run("settle", "--state", pending, "--verdict", root / f"verdict-{i}.json", "--out", state) == 0
        settled = client.ClientState.load(state)
        assert settled.pending is None and settled.model_version == i + 1
        # Salts belong to commitments: the settled state reproduces every registered commitment.
        for c in range(4):
            theta = ch.split_chunks(settled.theta_q[FC1], settled.config)[c]
            G = ch.split_chunks(settled.G_q[FC1], settled.config)[c]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                srs = Srs.load(root / "srs.bin", expected_sha256=settled.config.srs_hash)
            got = ch.chunk_commitments(srs, settled.config, salts=settled.salts[FC1][c], theta=theta, G=G)
            assert got["theta"] == after[c]["theta"]
        # The commitments the settled state keeps are the registry's, less the θ it replaced.
        replaced.add(chunk)
        kept = [{name: point.hex() for name, point in entry.items()} for entry in settled.commitments[FC1]]
        assert kept == [
            {name: h for name, h in after[c].items() if not (name == "theta" and c in replaced)} for c in range(4)
        ]
    # The untouched chunk 1 kept its commitment through all three requests.
    assert registry.get("alice")["commitments"][FC1][1]["theta"] == initial[1]["theta"]
    exported = registry.export("alice")
    assert [r["request_id"] for r in exported["requests"]] == ["req-0", "req-1", "req-2"]
    assert run("registry", "show", "--registry", root / "registry.db", "--client", "alice") == 0
    assert "req-2" in capsys.readouterr().out
    # A settle against a rejection verdict is refused.
    (root / "rejected.json").write_text(json.dumps({"verified": False, "request_id": "req-9"}))
    assert run("settle", "--state", pending, "--verdict", root / "rejected.json", "--out", root / "x") == 2
    assert "rejected" in capsys.readouterr().err


def test_request_beyond_the_registration_is_rejected_and_names_the_layer(world, tmp_path, capsys):
    """fc1+fc2 request, client registered for fc1 only: the hostile bundle proves fc1 and claims the rest."""
    fc2 = "params/block_0/mlp/fc2/kernel"
    fc1_mask = np.zeros((OUT, IN), dtype=bool)
    fc1_mask[0, 1] = True
    fc2_mask = np.zeros((IN, OUT), dtype=bool)
    fc2_mask[3, 5] = True
    full = UnlearningRequest(request_id="req-both", model_id="micro", masks={FC1: fc1_mask, fc2: fc2_mask})
    full.save(tmp_path / "full")
    # The honest client cannot satisfy it and says so.
    assert run("unlearn", "--state", world / "state-0", "--request", tmp_path / "full", "--out", tmp_path / "p") == 2
    assert "fc2" in capsys.readouterr().err
    # The hostile one proves the fc1 part under the full request's id and mask hash.
    part = UnlearningRequest(request_id="req-both", model_id="micro", masks={FC1: fc1_mask}).save(tmp_path / "part")
    _prove(world / "srs.bin", world / "state-0", part, tmp_path / "bundle")
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    manifest["mask_hash"] = full.mask_hash
    (tmp_path / "bundle" / "manifest.json").write_text(json.dumps(manifest))
    _copy_db(world / "registry.db", tmp_path / "registry.db")
    assert (
        run(
            "verify",
            "--registry",
            tmp_path / "registry.db",
            "--request",
            tmp_path / "full",
            "--bundle",
            tmp_path / "bundle",
            "--srs",
            world / "srs.bin",
            "--json",
            tmp_path / "v.json",
        )
        == 1
    )
    verdict = json.loads((tmp_path / "v.json").read_text())
    assert verdict["check"] == "request" and verdict["layer"] == fc2
    assert Registry(tmp_path / "registry.db").get("alice")["history"] == []


# ---------------------------------------------------------------------------------------- concurrency


@pytest.fixture(scope="module")
def two_bundles(world):
    """Two bundles built on state-0: req-a touches chunk 0, req-b chunk 1 (disjoint: the hardest case)."""
    root = world / "race"
    root.mkdir()
    bundles = {}
    for name, chunk in (("req-a", 0), ("req-b", 1)):
        request = _request(root, name, chunk)
        _prove(world / "srs.bin", world / "state-0", request, root / f"bundle-{name}")
        bundles[name] = (request, root / f"bundle-{name}")
    # Build and cache the verifying key once, as the provider's first verification would.
    trial = root / "warm"
    trial.mkdir()
    _copy_db(world / "registry.db", trial / "registry.db")
    assert (
        run(
            "verify",
            "--registry",
            trial / "registry.db",
            "--request",
            bundles["req-a"][0],
            "--bundle",
            bundles["req-a"][1],
            "--srs",
            world / "srs.bin",
        )
        == 0
    )
    shutil.copytree(trial / "registry.db.vk", world / "registry.db.vk", dirs_exist_ok=True)
    return bundles


@pytest.mark.parametrize("case", ["two-bundles", "same-bundle"])
def test_concurrent_verifications_accept_exactly_one(world, two_bundles, tmp_path, case):
    trials = 10  # per case: 20 in all
    first, second = ("req-a", "req-b") if case == "two-bundles" else ("req-a", "req-a")
    for trial in range(trials):
        d = tmp_path / f"t{trial}"
        d.mkdir()
        _copy_db(world / "registry.db", d / "registry.db")
        procs = []
        for i, name in enumerate((first, second)):
            request, bundle = two_bundles[name]
            procs.append(
                subprocess.Popen(
                    _cli(
                        "verify",
                        "--registry",
                        d / "registry.db",
                        "--request",
                        request,
                        "--bundle",
                        bundle,
                        "--srs",
                        world / "srs.bin",
                        "--json",
                        d / f"v{i}.json",
                    ),
                    env=_env(),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
            )
        codes = [p.wait(timeout=120) for p in procs]
        verdicts = [json.loads((d / f"v{i}.json").read_text()) for i in range(2)]
        assert sorted(codes) == [0, 1], (codes, [p.stderr.read() for p in procs])
        accepted = verdicts[codes.index(0)]
        rejected = verdicts[codes.index(1)]
        assert rejected["check"] in ("stale", "replay"), rejected
        record = Registry(d / "registry.db").get("alice")
        assert record["history"] == [accepted["request_id"]] and record["model_version"] == 1
        touched = 0 if accepted["request_id"] == "req-a" else 1
        assert record["commitments"][FC1][touched]["theta"] == accepted["new_commitments"][FC1][str(touched)]


# ------------------------------------------------------------------------------------------- SIGKILL


def _kill_at_random(cmd: list[str], duration: float, rng: random.Random) -> None:
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(rng.uniform(0.0, duration))
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)


def _timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, env=_env(), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - t0


def test_sigkill_during_verify_leaves_old_or_new_registry(world, two_bundles, tmp_path):
    rng = random.Random(1)
    request, bundle = two_bundles["req-a"]

    def verify_cmd(d: Path) -> list[str]:
        return _cli(
            "verify",
            "--registry",
            d / "registry.db",
            "--request",
            request,
            "--bundle",
            bundle,
            "--srs",
            world / "srs.bin",
        )

    (tmp_path / "timing").mkdir()
    _copy_db(world / "registry.db", tmp_path / "timing" / "registry.db")
    duration = _timed(verify_cmd(tmp_path / "timing"))
    pristine = Registry(world / "registry.db").get("alice")
    outcomes = set()
    for trial in range(10):
        d = tmp_path / f"t{trial}"
        d.mkdir()
        _copy_db(world / "registry.db", d / "registry.db")
        _kill_at_random(verify_cmd(d), duration, rng)
        record = Registry(d / "registry.db").get("alice")
        if record["history"]:
            outcomes.add("new")
            assert record["history"] == ["req-a"] and record["model_version"] == 1
            assert record["commitments"][FC1][0]["theta"] != pristine["commitments"][FC1][0]["theta"]
        else:
            outcomes.add("old")
            assert record == pristine
        # Whatever the kill left, the registry still works: a rerun accepts once, or names the replay.
        result = subprocess.run(verify_cmd(d), env=_env(), capture_output=True, text=True)
        assert (result.returncode, "[replay]" in result.stderr) in ((0, False), (1, True)), result.stderr
        assert Registry(d / "registry.db").get("alice")["history"] == ["req-a"]
    assert outcomes  # at least one of old/new observed (both, typically)


def test_sigkill_during_prove_leaves_old_or_new_bundle(world, two_bundles, tmp_path):
    rng = random.Random(2)
    request, old_bundle = two_bundles["req-a"]
    pending = world / "race" / "bundle-req-a-state"
    out = tmp_path / "bundle"
    cmd = _cli(
        "prove",
        "--state",
        pending,
        "--request",
        request,
        "--srs",
        world / "srs.bin",
        "--out",
        out,
        "--executor",
        "serial",
    )
    duration = _timed(cmd)
    for _ in range(10):
        shutil.rmtree(out)
        shutil.copytree(old_bundle, out)
        old_hash = read_artifact(out, client.BUNDLE).hash()
        _kill_at_random(cmd, duration, rng)
        art = read_artifact(out, client.BUNDLE)  # complete: every blob matches its hash
        assert art.hash() == old_hash or art.manifest["request_id"] == "req-a"


_OVERWRITER = """
import sys
from jaxapex.protocol.artifacts import write_artifact
path, i = sys.argv[1], 0
while True:
    i += 1
    write_artifact(path, "test", {"generation": i}, {"blob.bin": bytes([i % 256]) * (1 << 16) * (1 + i % 3)})
"""


def test_sigkill_during_artifact_overwrite_leaves_old_or_new(tmp_path):
    from jaxapex.protocol.artifacts import write_artifact

    rng = random.Random(3)
    path = tmp_path / "artifact"
    generations = set()
    for _ in range(12):
        write_artifact(path, "test", {"generation": 0}, {"blob.bin": b"\0" * (1 << 16)})
        proc = subprocess.Popen([sys.executable, "-c", _OVERWRITER, str(path)], env=_env())
        time.sleep(rng.uniform(0.3, 0.9))  # the interpreter start, then many overwrites
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        art = read_artifact(path, "test")
        generation = art.manifest["generation"]
        assert art.blob("blob.bin")[:1] == bytes([generation % 256])
        generations.add(generation)
    assert len(generations) > 1


# ----------------------------------------------------------------------------------------- bad input


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    err = [line for line in err if not line.startswith("note:")]
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def test_bad_input_gives_one_line_errors(world, two_bundles, tmp_path, capsys):
    request, bundle = two_bundles["req-a"]
    _copy_db(world / "registry.db", tmp_path / "registry.db")

    def verify(bundle_dir, srs=world / "srs.bin") -> int:
        return run(
            "verify", "--registry", tmp_path / "registry.db", "--request", request, "--bundle", bundle_dir, "--srs", srs
        )

    # Manifest fields of the wrong type.
    for i, (value, field) in enumerate(
        (("x", "field 'chunks'"), (["x"], "field 'chunks'[0]"), ([{"layer": FC1, "chunk": "0"}], "field 'chunks'[0]"))
    ):
        bad = tmp_path / f"bad-{i}"
        shutil.copytree(bundle, bad)
        manifest = json.loads((bad / "manifest.json").read_text())
        manifest["chunks"] = value
        (bad / "manifest.json").write_text(json.dumps(manifest))
        assert verify(bad) == 1
        line = _one_line_error(capsys)
        assert "[bundle]" in line and str(bad / "manifest.json") in line and field in line, line

    # SRS: missing, truncated, another one of the same size, one too small for the chunk circuits.
    k = ch.circuit_k(client.ClientState.load(world / "state-0").config)
    assert verify(bundle, tmp_path / "absent.bin") == 2
    assert "absent.bin does not exist" in _one_line_error(capsys)
    data = (world / "srs.bin").read_bytes()
    (tmp_path / "short.bin").write_bytes(data[: len(data) // 2])
    assert verify(bundle, tmp_path / "short.bin") == 2
    line = _one_line_error(capsys)
    assert "short.bin" in line and "k = 11" in line and "truncated" in line
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Srs.generate_dev(11, tmp_path / "other.bin", seed=99)
        Srs.generate_dev(k - 1, tmp_path / "small.bin", seed=99)
    assert verify(bundle, tmp_path / "other.bin") == 1
    line = _one_line_error(capsys)
    assert "[srs]" in line and "other.bin" in line
    assert verify(bundle, tmp_path / "small.bin") == 1
    line = _one_line_error(capsys)
    assert "[srs]" in line and f"k >= {k}" in line and f"k = {k - 1}" in line
    assert (
        run(
            "prove",
            "--state",
            world / "race" / "bundle-req-a-state",
            "--request",
            request,
            "--srs",
            tmp_path / "small.bin",
            "--out",
            tmp_path / "b",
        )
        == 2
    )
    line = _one_line_error(capsys)
    assert "small.bin" in line and f"k >= {k}" in line
    assert Registry(tmp_path / "registry.db").get("alice")["history"] == []

    # NaN in an attention layer: the checkpoint file and the parameter are named.
    from jaxapex.checkpoints import load_checkpoint

    params, config, _ = load_checkpoint(world / "personal.ckpt")
    attention = params["params"]["block_0"]["attn"]
    name = next(iter(attention))
    leaf = attention[name]["kernel"] if isinstance(attention[name], dict) else attention[name]
    leaf = np.array(leaf)
    leaf.flat[0] = np.nan
    if isinstance(attention[name], dict):
        attention[name]["kernel"] = leaf
    else:
        attention[name] = leaf
    save_checkpoint(tmp_path / "nan.ckpt", params, config)
    assert (
        run(
            "commit",
            "--model",
            tmp_path / "nan.ckpt",
            "--data",
            world / "personal.npz",
            "--client-id",
            "eve",
            "--srs",
            world / "srs.bin",
            "--block-size",
            B,
            "--state",
            tmp_path / "s",
            "--registration",
            tmp_path / "r",
        )
        == 2
    )
    line = _one_line_error(capsys)
    assert "nan.ckpt" in line and "attn" in line and "NaN" in line

    # A client state whose salts field was damaged.
    shutil.copytree(world / "state-0", tmp_path / "state")
    manifest = json.loads((tmp_path / "state" / "manifest.json").read_text())
    manifest["salts"][FC1][0]["theta"] = "0x12"
    (tmp_path / "state" / "manifest.json").write_text(json.dumps(manifest))
    assert run("unlearn", "--state", tmp_path / "state", "--request", request, "--out", tmp_path / "p") == 2
    line = _one_line_error(capsys)
    assert "field 'salts'" in line and "manifest.json" in line
