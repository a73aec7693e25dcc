"""Hugging Face safetensors importers, checked against an independent NumPy forward written directly in
PyTorch's conventions on the checkpoint tensors (nothing is downloaded; checkpoints are synthetic with the
real names and shapes)."""

from __future__ import annotations

import math

import jax
import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import save_file
from scipy.special import erf

from jaxapex.importers import (
    CheckpointMismatchError,
    export_hf_tensors,
    import_opt_hf,
    import_vit_hf,
    opt_hf_tensor_table,
    save_hf_safetensors,
    vit_hf_tensor_table,
)
from jaxapex.models import OPT, OPT_PRESETS, VIT_PRESETS, OPTConfig, ViT, ViTConfig

TINY_VIT = ViTConfig(image_size=8, patch_size=4, channels=3, dim=16, depth=2, heads=2, mlp_dim=32, num_classes=5)
TINY_OPT = OPTConfig(vocab_size=40, max_positions=12, dim=16, layers=2, heads=2, ffn_dim=24)


def synthetic_checkpoint(table, seed: int, dtype=np.float32) -> dict[str, np.ndarray]:
    """Random tensors with the table's names and shapes; layer-norm scales near 1 like a trained model."""
    rng = np.random.default_rng(seed)
    out = {}
    for spec in table:
        scale = 0.3 if spec.name.endswith("weight") else 0.1
        value = rng.normal(0.0, scale, spec.shape)
        if "norm" in spec.name and spec.name.endswith("weight"):
            value = 1.0 + value
        out[spec.name] = value.astype(dtype)
    return out


# --------------------------------------------------------------------------- NumPy references (torch style)


def _layer_norm(x, weight, bias, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def _linear(x, t, name):
    return x @ t[f"{name}.weight"].T + t[f"{name}.bias"]


def _softmax(x):
    x = x - x.max(-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


def _attention(q, k, v, heads, causal):
    n, t, d = q.shape
    hd = d // heads
    split = lambda a: a.reshape(n, t, heads, hd).transpose(0, 2, 1, 3)
    scores = split(q) @ split(k).transpose(0, 1, 3, 2)
    if causal:
        scores = np.where(np.tril(np.ones((t, t), bool)), scores, -np.inf)
    return (_softmax(scores) @ split(v)).transpose(0, 2, 1, 3).reshape(n, t, d)


def numpy_vit(t: dict, cfg: ViTConfig, images_nhwc: np.ndarray) -> np.ndarray:
    x = images_nhwc.astype(np.float64).transpose(0, 3, 1, 2)  # NCHW as in PyTorch
    n, p, g = x.shape[0], cfg.patch_size, cfg.grid
    patches = x.reshape(n, cfg.channels, g, p, g, p).transpose(0, 2, 4, 1, 3, 5)  # n, gy, gx, C, p, p
    w = t["vit.embeddings.patch_embeddings.projection.weight"]
    emb = np.einsum("nyxcij,dcij->nyxd", patches, w) + t["vit.embeddings.patch_embeddings.projection.bias"]
    emb = emb.reshape(n, g * g, cfg.dim)
    cls = np.broadcast_to(t["vit.embeddings.cls_token"], (n, 1, cfg.dim))
    h = np.concatenate([cls, emb], 1) + t["vit.embeddings.position_embeddings"]
    for i in range(cfg.depth):
        pre = f"vit.encoder.layer.{i}"
        a = _layer_norm(h, t[f"{pre}.layernorm_before.weight"], t[f"{pre}.layernorm_before.bias"], cfg.ln_eps)
        q, k, v = (_linear(a, t, f"{pre}.attention.attention.{s}") for s in ("query", "key", "value"))
        q = q / math.sqrt(cfg.head_dim)
        h = h + _linear(_attention(q, k, v, cfg.heads, causal=False), t, f"{pre}.attention.output.dense")
        a = _layer_norm(h, t[f"{pre}.layernorm_after.weight"], t[f"{pre}.layernorm_after.bias"], cfg.ln_eps)
        u = _linear(a, t, f"{pre}.intermediate.dense")
        h = h + _linear(0.5 * u * (1 + erf(u / math.sqrt(2))), t, f"{pre}.output.dense")
    h = _layer_norm(h, t["vit.layernorm.weight"], t["vit.layernorm.bias"], cfg.ln_eps)
    return _linear(h[:, 0], t, "classifier")


def numpy_opt(t: dict, cfg: OPTConfig, tokens: np.ndarray, prefix: str = "model.decoder") -> np.ndarray:
    n, length = tokens.shape
    embed = t[f"{prefix}.embed_tokens.weight"].astype(np.float64)
    h = embed[tokens] + t[f"{prefix}.embed_positions.weight"][np.arange(length) + 2]
    for i in range(cfg.layers):
        pre = f"{prefix}.layers.{i}"
        a = _layer_norm(h, t[f"{pre}.self_attn_layer_norm.weight"], t[f"{pre}.self_attn_layer_norm.bias"], cfg.ln_eps)
        q = _linear(a, t, f"{pre}.self_attn.q_proj") * cfg.head_dim**-0.5  # OPT scales q after the projection
        k, v = _linear(a, t, f"{pre}.self_attn.k_proj"), _linear(a, t, f"{pre}.self_attn.v_proj")
        h = h + _linear(_attention(q, k, v, cfg.heads, causal=True), t, f"{pre}.self_attn.out_proj")
        a = _layer_norm(h, t[f"{pre}.final_layer_norm.weight"], t[f"{pre}.final_layer_norm.bias"], cfg.ln_eps)
        h = h + _linear(np.maximum(_linear(a, t, f"{pre}.fc1"), 0.0), t, f"{pre}.fc2")
    h = _layer_norm(h, t[f"{prefix}.final_layer_norm.weight"], t[f"{prefix}.final_layer_norm.bias"], cfg.ln_eps)
    return h @ embed.T


# ------------------------------------------------------------------------------------------------- tests


def test_full_size_tables_match_the_published_layouts():
    vit = {s.name: s.shape for s in vit_hf_tensor_table(VIT_PRESETS["vit_b16"])}
    assert len(vit) == 200
    assert vit["vit.embeddings.patch_embeddings.projection.weight"] == (768, 3, 16, 16)
    assert vit["vit.embeddings.position_embeddings"] == (1, 197, 768)
    assert vit["vit.embeddings.cls_token"] == (1, 1, 768)
    assert vit["vit.encoder.layer.11.intermediate.dense.weight"] == (3072, 768)
    assert vit["vit.encoder.layer.11.output.dense.weight"] == (768, 3072)
    assert vit["vit.encoder.layer.0.attention.attention.query.weight"] == (768, 768)
    assert vit["classifier.weight"] == (1000, 768)
    assert sum(math.prod(s) for s in vit.values()) == 86_567_656  # HF ViTForImageClassification

    opt = {s.name: s.shape for s in opt_hf_tensor_table(OPT_PRESETS["opt_125m"])}
    assert len(opt) == 196
    assert opt["model.decoder.embed_tokens.weight"] == (50272, 768)
    assert opt["model.decoder.embed_positions.weight"] == (2050, 768)
    assert opt["model.decoder.layers.11.fc1.weight"] == (3072, 768)
    assert opt["model.decoder.layers.11.fc2.weight"] == (768, 3072)
    assert opt["model.decoder.layers.3.self_attn.out_proj.bias"] == (768,)
    assert sum(math.prod(s) for s in opt.values()) == 125_239_296  # HF OPTForCausalLM (tied head)


def test_full_size_tables_agree_with_the_flax_models():
    """Every table entry lands on a real parameter with the converted shape (abstract init, no arrays)."""
    for table, model in (
        (vit_hf_tensor_table(VIT_PRESETS["vit_b16"]), ViT(VIT_PRESETS["vit_b16"])),
        (opt_hf_tensor_table(OPT_PRESETS["opt_125m"]), OPT(OPT_PRESETS["opt_125m"])),
    ):
        shapes = jax.eval_shape(lambda m=model: m.init(jax.random.PRNGKey(0), m.dummy_input()))
        leaves = {tuple(str(k.key) for k in p): a.shape for p, a in jax.tree_util.tree_flatten_with_path(shapes)[0]}
        targets = {s.path: s for s in table}
        assert set(targets) == set(leaves)
        for path, spec in targets.items():
            if spec.layout == "linear":
                converted = spec.shape[::-1]
            elif spec.layout == "conv":
                converted = (spec.shape[2], spec.shape[3], spec.shape[1], spec.shape[0])
            else:
                converted = spec.shape
            assert leaves[path] == converted, path


def test_vit_import_matches_numpy_reference(tmp_path):
    tensors = synthetic_checkpoint(vit_hf_tensor_table(TINY_VIT), seed=1)
    path = tmp_path / "model.safetensors"
    save_file(tensors, str(path))
    params = import_vit_hf(path, TINY_VIT)
    images = np.random.default_rng(2).normal(size=(3, 8, 8, 3)).astype(np.float32)
    ours = np.asarray(ViT(TINY_VIT).apply(params, images))
    np.testing.assert_allclose(ours, numpy_vit(tensors, TINY_VIT, images), rtol=2e-4, atol=2e-4)


@pytest.mark.parametrize("prefix", ["model.decoder", "decoder"])
def test_opt_import_matches_numpy_reference(tmp_path, prefix):
    tensors = synthetic_checkpoint(opt_hf_tensor_table(TINY_OPT, prefix=prefix), seed=3)
    if prefix == "model.decoder":  # OPTForCausalLM exports also carry the tied head
        tensors["lm_head.weight"] = tensors[f"{prefix}.embed_tokens.weight"].copy()
    path = tmp_path / "model.safetensors"
    save_file(tensors, str(path))
    params = import_opt_hf(path, TINY_OPT)
    tokens = np.random.default_rng(4).integers(0, TINY_OPT.vocab_size, size=(2, 10))
    ours = np.asarray(OPT(TINY_OPT).apply(params, tokens))
    np.testing.assert_allclose(ours, numpy_opt(tensors, TINY_OPT, tokens, prefix), rtol=2e-4, atol=2e-4)


def test_half_precision_checkpoints_import_as_float32(tmp_path):
    tensors = synthetic_checkpoint(opt_hf_tensor_table(TINY_OPT), seed=5, dtype=ml_dtypes.bfloat16)
    path = tmp_path / "bf16.safetensors"
    save_file(tensors, str(path))
    params = import_opt_hf(path, TINY_OPT)
    kernel = params["params"]["layer_1"]["mlp"]["fc1"]["kernel"]
    assert kernel.dtype == np.float32
    np.testing.assert_array_equal(kernel, tensors["model.decoder.layers.1.fc1.weight"].astype(np.float32).T)


def test_mismatches_are_reported_by_name(tmp_path):
    tensors = synthetic_checkpoint(vit_hf_tensor_table(TINY_VIT), seed=6)
    del tensors["vit.encoder.layer.1.intermediate.dense.bias"]
    tensors["vit.encoder.layer.0.output.dense.weight"] = np.zeros((16, 31), np.float32)
    tensors["vit.encoder.layer.7.extra.weight"] = np.zeros((2,), np.float32)
    path = tmp_path / "bad.safetensors"
    save_file(tensors, str(path))
    with pytest.raises(CheckpointMismatchError) as info:
        import_vit_hf(path, TINY_VIT)
    message = str(info.value)
    assert "1 missing: vit.encoder.layer.1.intermediate.dense.bias" in message
    assert "1 unexpected: vit.encoder.layer.7.extra.weight" in message
    assert "vit.encoder.layer.0.output.dense.weight: checkpoint (16, 31), expected (16, 32)" in message


def test_wrong_config_is_caught_before_loading(tmp_path):
    tensors = synthetic_checkpoint(opt_hf_tensor_table(TINY_OPT), seed=7)
    path = tmp_path / "opt.safetensors"
    save_file(tensors, str(path))
    deeper = OPTConfig(vocab_size=40, max_positions=12, dim=16, layers=3, heads=2, ffn_dim=24)
    with pytest.raises(CheckpointMismatchError, match=r"missing: model\.decoder\.layers\.2\."):
        import_opt_hf(path, deeper)


def test_untied_lm_head_is_rejected(tmp_path):
    tensors = synthetic_checkpoint(opt_hf_tensor_table(TINY_OPT), seed=8)
    tensors["lm_head.weight"] = tensors["model.decoder.embed_tokens.weight"] + 1.0
    path = tmp_path / "untied.safetensors"
    save_file(tensors, str(path))
    with pytest.raises(CheckpointMismatchError, match="not tied"):
        import_opt_hf(path, TINY_OPT)


def test_missing_file_and_foreign_layout_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        import_vit_hf(tmp_path / "nope.safetensors", TINY_VIT)
    path = tmp_path / "foreign.safetensors"
    save_file({"transformer.h.0.mlp.c_fc.weight": np.zeros((2, 2), np.float32)}, str(path))
    with pytest.raises(CheckpointMismatchError, match="model.decoder"):
        import_opt_hf(path, TINY_OPT)


def test_export_round_trips(tmp_path):
    table = vit_hf_tensor_table(TINY_VIT)
    tensors = synthetic_checkpoint(table, seed=9)
    src = tmp_path / "src.safetensors"
    save_file(tensors, str(src))
    params = import_vit_hf(src, TINY_VIT)
    exported = export_hf_tensors(params, table)
    assert set(exported) == set(tensors)
    for name, value in tensors.items():
        np.testing.assert_array_equal(exported[name], value)
    dst = tmp_path / "dst.safetensors"
    save_hf_safetensors(dst, exported)
    again = import_vit_hf(dst, TINY_VIT)
    jax.tree.map(np.testing.assert_array_equal, params, again)
