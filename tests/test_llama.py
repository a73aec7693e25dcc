"""The LLaMA-family decoder on tiny configs: grouped-query attention against a NumPy reference written in
Hugging Face's conventions, padding, layer slices, the GGUF rotary permutation, the safetensors importer and
its config checks; and the exact-variance LayerNorm and padding-aware positions of the ViT/OPT models."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxapex.gguf_import import permute_rotary, unpermute_rotary
from jaxapex.importers import (
    ConfigMismatchError,
    export_hf_tensors,
    import_llama_hf,
    import_opt_hf,
    llama_hf_config,
    llama_hf_tensor_table,
    opt_hf_tensor_table,
    save_hf_safetensors,
    save_llama_hf,
)
from jaxapex.models import (
    LLAMA_PRESETS,
    OPT,
    Llama,
    LlamaConfig,
    OPTConfig,
    build_model,
    config_from_dict,
    config_to_dict,
    init_params,
    make_hidden_fn,
    mlp_target_paths,
)
from jaxapex.models.blocks import layer_norm

TINY = LlamaConfig(vocab_size=50, dim=24, layers=2, heads=6, kv_heads=2, ffn_dim=40, rope_theta=500.0, max_positions=32)


@pytest.fixture(scope="module")
def tiny():
    model = Llama(TINY)
    params = init_params(model, 0)
    # Trained-looking norms, so that the scales matter.
    params = jax.tree_util.tree_map_with_path(
        lambda p, x: (
            x * (1 + 0.3 * jax.random.normal(jax.random.PRNGKey(len(str(p))), x.shape))
            if "scale" in jax.tree_util.keystr(p)
            else x * 10
        ),
        params,
    )
    return model, params


def numpy_llama(t: dict[str, np.ndarray], cfg: LlamaConfig, ids: np.ndarray) -> np.ndarray:
    """float64 forward on HF-named tensors: rotate_half rotary, repeat_kv grouping, SwiGLU, tied head."""
    x = t["model.embed_tokens.weight"][ids].astype(np.float64)
    T, d = len(ids), cfg.head_dim
    inv = 1.0 / cfg.rope_theta ** (np.arange(0, d, 2) / d)
    ang = np.arange(T)[:, None] * inv
    cos, sin = np.cos(np.concatenate([ang, ang], -1)), np.sin(np.concatenate([ang, ang], -1))

    def rope(v):  # (T, h, d)
        half = np.concatenate([-v[..., d // 2 :], v[..., : d // 2]], -1)
        return v * cos[:, None] + half * sin[:, None]

    def rms(v, w):
        return v / np.sqrt((v * v).mean(-1, keepdims=True) + cfg.rms_eps) * w

    for i in range(cfg.layers):
        p = f"model.layers.{i}."
        h = rms(x, t[p + "input_layernorm.weight"])
        q = rope((h @ t[p + "self_attn.q_proj.weight"].T).reshape(T, cfg.heads, d))
        k = rope((h @ t[p + "self_attn.k_proj.weight"].T).reshape(T, cfg.kv_heads, d))
        v = (h @ t[p + "self_attn.v_proj.weight"].T).reshape(T, cfg.kv_heads, d)
        out = np.zeros((T, cfg.heads, d))
        for head in range(cfg.heads):
            kv = head // (cfg.heads // cfg.kv_heads)
            s = q[:, head] @ k[:, kv].T / np.sqrt(d) + np.triu(np.full((T, T), -np.inf), 1)
            w = np.exp(s - s.max(-1, keepdims=True))
            out[:, head] = (w / w.sum(-1, keepdims=True)) @ v[:, kv]
        x = x + out.reshape(T, -1) @ t[p + "self_attn.o_proj.weight"].T
        h = rms(x, t[p + "post_attention_layernorm.weight"])
        g = h @ t[p + "mlp.gate_proj.weight"].T
        x = x + (g / (1 + np.exp(-g)) * (h @ t[p + "mlp.up_proj.weight"].T)) @ t[p + "mlp.down_proj.weight"].T
    return rms(x, t["model.norm.weight"]) @ t["model.embed_tokens.weight"].T


def test_forward_matches_numpy_reference_in_hf_conventions(tiny):
    model, params = tiny
    ids = np.array([3, 17, 5, 42, 8, 8, 1, 30, 12, 0, 49])
    tensors = export_hf_tensors(params, llama_hf_tensor_table(TINY))
    want = numpy_llama(tensors, TINY, ids)
    got = np.asarray(model.apply(params, jnp.asarray(ids[None])))[0]
    assert np.max(np.abs(got - want)) <= 1e-4 * np.max(np.abs(want))


def test_left_padding_leaves_the_real_tokens_unchanged(tiny):
    model, params = tiny
    ids = jnp.array([[7, 3, 9, 11, 2]])
    plain = model.apply(params, ids)
    padded = jnp.concatenate([jnp.zeros((1, 3), jnp.int32), ids], axis=1)
    mask = jnp.array([[0, 0, 0, 1, 1, 1, 1, 1]])
    out = model.apply(params, padded, mask)
    np.testing.assert_allclose(out[:, 3:], plain, rtol=1e-5, atol=1e-5)
    unmasked = model.apply(params, padded)  # without the mask the pads shift positions and are attended to
    assert np.max(np.abs(unmasked[:, 3:] - plain)) > 1e-3


def test_layer_slices_compose_to_the_full_model(tiny):
    model, params = tiny
    ids = jnp.array([[1, 2, 3, 4, 5, 6]])
    residual = Llama(TINY, stop_layer=1).apply(params, ids)
    assert residual.shape == (1, 6, TINY.dim)
    np.testing.assert_allclose(
        Llama(TINY, start_layer=1).apply(params, residual), model.apply(params, ids), rtol=1e-5, atol=1e-5
    )
    with pytest.raises(ValueError, match="residual stream"):
        Llama(TINY, start_layer=1).apply(params, ids)


def test_swiglu_targets_and_hidden_units(tiny):
    model, params = tiny
    assert [p[1:4] for p in mlp_target_paths(params, ("gate", "down"))] == [
        ("layer_0", "mlp", "gate"),
        ("layer_0", "mlp", "down"),
        ("layer_1", "mlp", "gate"),
        ("layer_1", "mlp", "down"),
    ]
    hidden = make_hidden_fn(model)(params, {"tokens": jnp.array([[1, 2, 3, 4]])})  # inputs: first 3 tokens
    path = ("params", "layer_1", "mlp", "gate", "kernel")
    residual = Llama(TINY, stop_layer=1).apply(params, jnp.array([[1, 2, 3]]))
    layer = params["params"]["layer_1"]
    from jaxapex.models.llama import (
        GroupedQueryAttention,
        RMSNorm,
        attention_bias,
        padding_positions,
    )

    attn_in = RMSNorm(TINY.rms_eps).apply({"params": layer["ln1"]}, residual)
    x = residual + GroupedQueryAttention(TINY).apply(
        {"params": layer["attn"]}, attn_in, padding_positions(None, 1, 3), attention_bias(None, 3)
    )
    h = RMSNorm(TINY.rms_eps).apply({"params": layer["ln2"]}, x)
    want = jax.nn.silu(h @ layer["mlp"]["gate"]["kernel"]) * (h @ layer["mlp"]["up"]["kernel"])
    np.testing.assert_allclose(hidden[path], want, rtol=1e-4, atol=1e-5)


def test_untied_head_and_presets():
    cfg = dataclasses.replace(TINY, tie_embeddings=False)
    params = init_params(Llama(cfg), 1)
    assert params["params"]["lm_head"]["kernel"].shape == (TINY.dim, TINY.vocab_size)
    assert (
        config_from_dict(json.loads(json.dumps(config_to_dict(LLAMA_PRESETS["llama32_1b"]))))
        == LLAMA_PRESETS["llama32_1b"]
    )
    shapes = jax.eval_shape(lambda: init_params(build_model("smollm2_135m"), 0))
    assert sum(int(np.prod(a.shape)) for a in jax.tree.leaves(shapes)) == 134_515_008
    with pytest.raises(ValueError, match="kv_heads"):
        LlamaConfig(heads=9, kv_heads=2)


@settings(max_examples=25, deadline=None)
@given(heads=st.integers(1, 4), half=st.integers(1, 4), n_in=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_rotary_permutation_round_trips_and_pairs_halves(heads, half, n_in, seed):
    w = np.random.default_rng(seed).normal(size=(heads * 2 * half, n_in))
    gguf = permute_rotary(w, heads)
    np.testing.assert_array_equal(unpermute_rotary(gguf, heads), w)
    # In GGUF's layout rows 2i and 2i+1 of a head are HF rows i and i + d/2.
    d = 2 * half
    for h in range(heads):
        for i in range(half):
            np.testing.assert_array_equal(gguf[h * d + 2 * i], w[h * d + i])
            np.testing.assert_array_equal(gguf[h * d + 2 * i + 1], w[h * d + half + i])


def test_safetensors_round_trip_and_config_json_checks(tiny, tmp_path):
    model, params = tiny
    path = save_llama_hf(tmp_path, TINY, params)
    config, imported = import_llama_hf(path)
    assert config == TINY
    ids = jnp.array([[4, 8, 15, 16, 23, 42]])
    np.testing.assert_array_equal(model.apply(imported, ids), model.apply(params, ids))
    with pytest.raises(ConfigMismatchError, match=r"heads: checkpoint 6, model config 3"):
        import_llama_hf(path, dataclasses.replace(TINY, heads=3, kv_heads=1))
    with pytest.raises(ConfigMismatchError, match="rope_theta"):
        import_llama_hf(path, dataclasses.replace(TINY, rope_theta=10000.0))
    hf = llama_hf_config(TINY)
    hf["hidden_act"] = "gelu"
    (tmp_path / "config.json").write_text(json.dumps(hf))
    with pytest.raises(ValueError, match="activation"):
        import_llama_hf(path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigMismatchError, match="config.json: not valid JSON"):
        import_llama_hf(path)


def test_opt_import_refuses_a_config_json_with_other_heads(tmp_path):
    cfg = OPTConfig(vocab_size=40, max_positions=12, dim=16, layers=1, heads=2, ffn_dim=24)
    params = init_params(OPT(cfg), 0)
    path = tmp_path / "model.safetensors"
    save_hf_safetensors(path, export_hf_tensors(params, opt_hf_tensor_table(cfg)))
    hf = {
        "hidden_size": 16,
        "num_hidden_layers": 1,
        "num_attention_heads": 4,
        "ffn_dim": 24,
        "vocab_size": 40,
        "max_position_embeddings": 12,
        "activation_function": "relu",
        "do_layer_norm_before": True,
    }
    (tmp_path / "config.json").write_text(json.dumps(hf))
    with pytest.raises(ConfigMismatchError, match="heads: checkpoint 4, model config 2"):
        import_opt_hf(path, cfg)  # the shapes alone cannot tell 2 heads from 4
    hf["num_attention_heads"] = 2
    (tmp_path / "config.json").write_text(json.dumps(hf))
    import_opt_hf(path, cfg)


def test_layer_norm_uses_the_exact_variance():
    x = 1000.0 + np.random.default_rng(0).normal(0, 1e-2, (4, 64)).astype(np.float32)
    ln = layer_norm(1e-5, "ln")
    params = ln.init(jax.random.PRNGKey(0), x)
    x64 = x.astype(np.float64)
    want = (x64 - x64.mean(-1, keepdims=True)) / np.sqrt(x64.var(-1, keepdims=True) + 1e-5)
    got = np.asarray(ln.apply(params, x))
    # E[x²] − E[x]² in float32 at this offset is off by ~0.6 relative; the two-pass variance by ~1e-4
    assert np.max(np.abs(got - want)) / np.max(np.abs(want)) < 1e-3


def test_opt_positions_ignore_left_padding():
    cfg = OPTConfig(vocab_size=30, max_positions=16, dim=16, layers=2, heads=2, ffn_dim=24)
    model = OPT(cfg)
    params = init_params(model, 3)
    ids = jnp.array([[5, 6, 7, 8]])
    padded = jnp.array([[1, 1, 5, 6, 7, 8]])
    mask = jnp.array([[0, 0, 1, 1, 1, 1]])
    np.testing.assert_allclose(model.apply(params, padded, mask)[:, 2:], model.apply(params, ids), rtol=1e-5, atol=1e-5)
    assert np.max(np.abs(model.apply(params, padded)[:, 2:] - model.apply(params, ids))) > 1e-4
