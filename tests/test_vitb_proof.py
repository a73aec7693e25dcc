"""The ViT-B proof benchmark on a tiny domain: real proofs of sampled chunks, and the extrapolation."""

import dataclasses
import json
import math

import numpy as np
import pytest

from benchmarks import vitb_proof as vp


def test_masks_have_the_stated_density_and_touched_chunks_cover_every_masked_block():
    workload = vp.Workload(block_size=16, blocks_per_chunk=4092, mask_kind="random", seed=0)
    masks = vp.layer_masks(workload)
    per_layer = vp.OUT_FEATURES * vp.IN_FEATURES
    assert [int(m.sum()) for m in masks] == [round(vp.DENSITY * per_layer)] * vp.LAYERS
    touched = set(vp.touched_chunks(masks, workload))
    for layer, mask in enumerate(masks):
        blocks = np.flatnonzero(mask.reshape(-1, 16).any(axis=1))
        assert {(layer, int(b) // 4092) for b in blocks} == {c for c in touched if c[0] == layer}
    second_order = vp.layer_masks(dataclasses.replace(workload, mask_kind="second-order"))
    assert sum(int(m.sum()) for m in second_order) == round(vp.DENSITY * per_layer * vp.LAYERS)


def test_smollm2_workload_covers_its_90_swiglu_matrices():
    workload = vp.Workload(block_size=256, blocks_per_chunk=1000, mask_kind="random", seed=0, model="smollm2")
    assert len(workload.shapes) == 90 and workload.shapes[2] == (576, 1536)
    assert sum(a * b for a, b in workload.shapes) == 90 * 1536 * 576
    assert workload.chunks_all == 90 * math.ceil(1536 * 576 / 256 / 1000)
    masks = vp.layer_masks(workload)
    assert [m.shape for m in masks[:3]] == [(1536, 576), (1536, 576), (576, 1536)]
    assert all(int(m.sum()) == round(vp.DENSITY * m.size) for m in masks)
    touched = vp.touched_chunks(masks, workload)
    assert len(touched) == workload.chunks_all  # a random 4 % mask touches every chunk
    with pytest.raises(ValueError, match="--block-size 100 does not divide a 1536 × 576 matrix"):
        vp.Workload(block_size=100, blocks_per_chunk=4, mask_kind="random", seed=0, model="smollm2")


@pytest.mark.parametrize(
    "level, block_size, scheme, reused",
    [("F", 16, None, "registered"), ("F", 32, None, "committed"), ("R", 16, "plain", "registered")],
)
def test_sampled_chunks_are_proven_verified_and_extrapolated(
    tmp_path, level, block_size, scheme, reused, capsys, monkeypatch
):
    """Every sampled proof is verified against the commitments the prover reports (with ``--reused
    registered``, the registered ones re-randomized: a wrong derivation would fail verification)."""
    monkeypatch.delenv("JAXAPEX_COMMITMENT_SCHEME", raising=False)
    out = tmp_path / "vitb.json"
    code = vp.main(
        [
            *(["--commitment-scheme", scheme] if scheme else []),
            "--reused",
            reused,
            "--sample",
            "2",
            "--k",
            "10",
            "--workers",
            "1",
            "--level",
            level,
            "--block-size",
            str(block_size),
            "--srs-dir",
            str(tmp_path / "srs"),
            "--json",
            str(out),
        ]
    )
    assert code == 0
    result = json.loads(out.read_text())
    assert result["chunks_proved"] == len(result["per_chunk"]) == 2
    assert result["block_size"] == block_size and result["level"] == level
    assert result["commitment_scheme"] == (scheme or "sized") and result["reused"] == reused
    # B = 32 needs a larger rescale shift than the default spec (s >= f_g + log2 B)
    assert result["spec"]["s"] >= result["spec"]["f_g"] + math.ceil(math.log2(block_size))
    chunks = result["chunks_total"]
    assert chunks == vp.LAYERS * result["chunks_per_layer"]  # a random 4 % mask touches every chunk
    mean_bytes = np.mean([c["proof_bytes"] for c in result["per_chunk"]])
    assert result["proof_bytes_total"] == pytest.approx(chunks * mean_bytes, rel=1e-6)
    assert result["prove_s_total"] == pytest.approx(
        result["one_time_s"] + chunks * result["prove_s_per_chunk"], rel=1e-2
    )
    assert result["peak_rss_mb"] == pytest.approx(max(c["rss_mb"] for c in result["per_chunk"]), abs=0.1)  # rounded
    # the sampled proofs also pass as one batch (the provider's path), extrapolated per proof
    assert result["verify_batch_s"] > 0
    batch_total = chunks * result["verify_batch_s"] / 2  # verify_batch_s is rounded to 0.1 ms
    assert result["verify_batch_s_total"] == pytest.approx(batch_total, abs=chunks * 1e-4 + 0.01)
    assert "whole workload" in capsys.readouterr().out


def test_bad_spec_is_named():
    with pytest.raises(ValueError, match="--spec: 'x=1' is not name=value"):
        vp.parse_spec("x=1")


def test_commit_scheme_benchmark_proves_each_chunk_three_ways(tmp_path, capsys):
    from benchmarks import commit_scheme

    out = tmp_path / "commit_scheme.json"
    args = ["--block-sizes", "16", "--k", "10", "--sample", "1", "--no-pin", "--srs-dir", str(tmp_path / "srs")]
    assert commit_scheme.main([*args, "--json", str(out)]) == 0
    (result,) = json.loads(out.read_text())["results"]
    rows = result["per_proof"]
    assert [r["variant"] for r in rows] == list(commit_scheme.VARIANTS)  # each verified by the plain verifier
    plain, sized, registered = rows
    assert plain["cache_hits"] == sized["cache_hits"] == 0
    committed = registered["committed_columns"]
    # θ, θ' and the ⌊B/2⌋ + 1 = 9 cyclic G lanes; the registered ones are not recomputed
    assert committed == 2 + 9 and registered["cache_hits"] == committed
    for r in rows:
        assert r["commit_lagrange_calls"] > committed and r["multi_open_calls"] == 1
        assert 0 < r["commit_lagrange_cpu_s"] + r["commit_cpu_s"] + r["multi_open_cpu_s"] <= r["prove_cpu_s"]
    assert "ViT-B total" in capsys.readouterr().out


def test_client_prove_benchmark_runs_the_protocol_end_to_end(tmp_path, capsys):
    from benchmarks import client_prove

    out = tmp_path / "client.json"
    assert client_prove.main(["--quick", "--workers", "1", "--srs-dir", str(tmp_path / "srs"), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [s["step"] for s in result["steps"]] == ["commit", "register", "unlearn", "prove", "verify"]
    assert result["chunks_verified"] == result["chunks"] >= 2  # a random 4 % mask touches every chunk
    assert result["masked_weights"] == round(0.04 * 256 * 64)
    assert all(s["wall_s"] > 0 and s["cpu_s"] >= s["cpu_here_s"] >= 0 for s in result["steps"])
    assert "prove" in capsys.readouterr().out
