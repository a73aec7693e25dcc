"""LLaMA-family decoder in flax.linen: RMSNorm, rotary embeddings, grouped-query attention, SwiGLU MLP.

Parameter tree (``model.init(...)['params']``), named after the shared block scheme::

    embed_tokens/embedding (vocab_size, dim)              also the LM head when ``tie_embeddings``
    layer_{i}/ln1/scale, attn/{query (dim, H·d), key (dim, K·d), value (dim, K·d), out (H·d, dim)},
              ln2/scale, mlp/{gate (dim, ffn_dim), up (dim, ffn_dim), down (ffn_dim, dim)}
    final_norm/scale
    lm_head/kernel (dim, vocab_size)                      only when the head is untied

No projection has a bias. Rotary embeddings use Hugging Face's layout (``rotate_half``: dimension i pairs
with i + d/2); GGUF files store q/k rows interleaved instead, and :mod:`jaxapex.gguf_import` undoes that.

``start_layer`` / ``stop_layer`` run a slice of the layers on the same parameter tree: ``stop_layer=k``
returns the residual stream entering layer ``k`` (batch, T, dim); ``start_layer=k`` takes that residual
stream as input and returns logits. A recipe that only changes layers ≥ k computes the first part once.
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxapex.models.blocks import HIDDEN_NAME

_DENSE_INIT = nn.initializers.normal(stddev=0.02)


@dataclasses.dataclass(frozen=True, kw_only=True)
class LlamaConfig:
    """rope_scaling: ``None`` or Llama 3's frequency rescaling ``(factor, low_freq_factor, high_freq_factor,
    original_max_positions)``."""

    vocab_size: int = 49152
    dim: int = 576
    layers: int = 30
    heads: int = 9
    kv_heads: int = 3
    ffn_dim: int = 1536
    rope_theta: float = 100000.0
    rope_scaling: tuple[float, float, float, int] | None = None
    rms_eps: float = 1e-5
    max_positions: int = 8192
    tie_embeddings: bool = True
    activation: str = "silu"

    def __post_init__(self) -> None:
        for field in ("vocab_size", "dim", "layers", "heads", "kv_heads", "ffn_dim", "max_positions"):
            value = getattr(self, field)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"LlamaConfig.{field} must be a positive int, got {value!r}")
        if self.dim % self.heads:
            raise ValueError(f"LlamaConfig.dim={self.dim} is not divisible by heads={self.heads}")
        if self.heads % self.kv_heads:
            raise ValueError(f"LlamaConfig.heads={self.heads} is not a multiple of kv_heads={self.kv_heads}")
        if self.head_dim % 2:
            raise ValueError(f"LlamaConfig head_dim={self.head_dim} must be even for rotary embeddings")
        if self.activation != "silu":
            raise ValueError(f"LlamaConfig.activation={self.activation!r}; the SwiGLU MLP uses 'silu'")
        if not (self.rope_theta > 0 and self.rms_eps > 0):
            raise ValueError(f"LlamaConfig rope_theta={self.rope_theta} and rms_eps={self.rms_eps} must be positive")
        if self.rope_scaling is not None and len(self.rope_scaling) != 4:
            raise ValueError(
                f"LlamaConfig.rope_scaling must be (factor, low, high, original_max_positions), "
                f"got {self.rope_scaling!r}"
            )

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads


LLAMA_PRESETS: dict[str, LlamaConfig] = {
    # Byte-level test fixture: two layers, grouped-query attention (4 query heads share 2 key/value heads).
    "llama_tiny": LlamaConfig(
        vocab_size=256, dim=64, layers=2, heads=4, kv_heads=2, ffn_dim=128, rope_theta=10000.0, max_positions=256
    ),
    "smollm2_135m": LlamaConfig(),
    "llama32_1b": LlamaConfig(
        vocab_size=128256,
        dim=2048,
        layers=16,
        heads=32,
        kv_heads=8,
        ffn_dim=8192,
        rope_theta=500000.0,
        rope_scaling=(32.0, 1.0, 4.0, 8192),
        max_positions=131072,
    ),
}


def rope_frequencies(cfg: LlamaConfig) -> jax.Array:
    """Inverse frequencies (head_dim / 2,) float32, with Llama 3's rescaling when configured."""
    d = cfg.head_dim
    inv = 1.0 / (cfg.rope_theta ** (jnp.arange(0, d, 2, dtype=jnp.float32) / d))
    if cfg.rope_scaling is None:
        return inv
    factor, low, high, original = cfg.rope_scaling
    wavelength = 2 * math.pi / inv
    smooth = (original / wavelength - low) / (high - low)
    medium = (wavelength >= original / high) & (wavelength <= original / low)
    scaled = jnp.where(wavelength > original / low, inv / factor, inv)
    return jnp.where(medium, (1 - smooth) * inv / factor + smooth * inv, scaled)


def rotate(x: jax.Array, positions: jax.Array, inv_freq: jax.Array) -> jax.Array:
    """Rotary embedding, Hugging Face layout. ``x``: (batch, T, heads, d); ``positions``: (batch, T)."""
    angles = positions[..., None].astype(jnp.float32) * inv_freq  # (batch, T, d/2)
    angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return (x * jnp.cos(angles) + rotated * jnp.sin(angles)).astype(x.dtype)


def padding_positions(attention_mask: jax.Array | None, batch: int, length: int) -> jax.Array:
    """Position of each token counting only the real tokens before it (left padding does not shift them);
    ``arange`` without a mask. Padded slots get position 0. Returns (batch, T) int32."""
    if attention_mask is None:
        return jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))
    mask = attention_mask.astype(jnp.int32)
    return jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0) * mask


def attention_bias(attention_mask: jax.Array | None, length: int) -> jax.Array:
    """Boolean (batch or 1, 1, T, T): query t may read key s when s ≤ t and s is a real token."""
    allowed = jnp.tril(jnp.ones((length, length), dtype=bool))[None, None]
    if attention_mask is not None:
        allowed = allowed & attention_mask.astype(bool)[:, None, None, :]
    return allowed


class RMSNorm(nn.Module):
    """``x / sqrt(mean(x²) + eps) * scale``, computed in float32."""

    eps: float

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = self.param("scale", nn.initializers.ones, (x.shape[-1],))
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return (normed * scale).astype(x.dtype)


class GroupedQueryAttention(nn.Module):
    """Causal self-attention where query head h reads key/value head ``h // (heads / kv_heads)``."""

    config: LlamaConfig

    @nn.compact
    def __call__(self, x: jax.Array, positions: jax.Array, allowed: jax.Array) -> jax.Array:
        cfg = self.config
        batch, tokens, _ = x.shape
        d = cfg.head_dim

        def project(name: str, heads: int) -> jax.Array:
            y = nn.Dense(heads * d, use_bias=False, kernel_init=_DENSE_INIT, name=name)(x)
            return y.reshape(batch, tokens, heads, d)

        inv_freq = rope_frequencies(cfg)
        q = rotate(project("query", cfg.heads), positions, inv_freq)
        k = rotate(project("key", cfg.kv_heads), positions, inv_freq)
        v = project("value", cfg.kv_heads)
        group = cfg.heads // cfg.kv_heads
        k, v = jnp.repeat(k, group, axis=2), jnp.repeat(v, group, axis=2)
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) / math.sqrt(d)
        scores = jnp.where(allowed, scores, jnp.finfo(jnp.float32).min)
        weights = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
        mixed = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(batch, tokens, cfg.heads * d)
        return nn.Dense(cfg.dim, use_bias=False, kernel_init=_DENSE_INIT, name="out")(mixed)


class SwiGLU(nn.Module):
    """``down(silu(gate(x)) * up(x))``. Sows the hidden units (..., ffn_dim) as ``intermediates/fc1_act``."""

    dim: int
    hidden: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        gate = nn.Dense(self.hidden, use_bias=False, kernel_init=_DENSE_INIT, name="gate")(x)
        up = nn.Dense(self.hidden, use_bias=False, kernel_init=_DENSE_INIT, name="up")(x)
        h = nn.silu(gate) * up
        self.sow("intermediates", HIDDEN_NAME, h)
        return nn.Dense(self.dim, use_bias=False, kernel_init=_DENSE_INIT, name="down")(h)


class LlamaBlock(nn.Module):
    """x + attn(ln1(x)), then + mlp(ln2(x))."""

    config: LlamaConfig

    @nn.compact
    def __call__(self, x: jax.Array, positions: jax.Array, allowed: jax.Array) -> jax.Array:
        cfg = self.config
        x = x + GroupedQueryAttention(cfg, name="attn")(RMSNorm(cfg.rms_eps, name="ln1")(x), positions, allowed)
        return x + SwiGLU(cfg.dim, cfg.ffn_dim, name="mlp")(RMSNorm(cfg.rms_eps, name="ln2")(x))


class Llama(nn.Module):
    """``tokens`` (batch, T) int → logits (batch, T, vocab_size); position t predicts token t + 1.

    ``attention_mask`` (batch, T), 1 for real tokens and 0 for padding: padded keys are never attended to and
    positions count real tokens only (left-padded prompts get the same logits as unpadded ones).
    """

    config: LlamaConfig
    start_layer: int = 0
    stop_layer: int | None = None

    @nn.compact
    def __call__(self, inputs: jax.Array, attention_mask: jax.Array | None = None) -> jax.Array:
        cfg = self.config
        stop = cfg.layers if self.stop_layer is None else self.stop_layer
        if not 0 <= self.start_layer <= stop <= cfg.layers:
            raise ValueError(f"Llama layers [{self.start_layer}, {stop}) do not lie in [0, {cfg.layers}]")
        embed = nn.Embed(
            cfg.vocab_size, cfg.dim, embedding_init=nn.initializers.normal(stddev=0.02), name="embed_tokens"
        )
        if self.start_layer == 0:
            if inputs.ndim != 2:
                raise ValueError(f"Llama expects tokens of shape (batch, T), got {tuple(inputs.shape)}")
            x = embed(inputs)
        else:
            if inputs.ndim != 3 or inputs.shape[-1] != cfg.dim:
                raise ValueError(
                    f"Llama(start_layer={self.start_layer}) expects the residual stream "
                    f"(batch, T, {cfg.dim}), got {tuple(inputs.shape)}"
                )
            x = inputs
        batch, length = inputs.shape[:2]
        if length > cfg.max_positions:
            raise ValueError(f"sequence length {length} exceeds LlamaConfig.max_positions={cfg.max_positions}")
        positions = padding_positions(attention_mask, batch, length)
        allowed = attention_bias(attention_mask, length)
        for i in range(self.start_layer, stop):
            x = LlamaBlock(cfg, name=f"layer_{i}")(x, positions, allowed)
        if self.stop_layer is not None:
            return x
        x = RMSNorm(cfg.rms_eps, name="final_norm")(x)
        if cfg.tie_embeddings:
            return embed.attend(x)
        return nn.Dense(cfg.vocab_size, use_bias=False, kernel_init=_DENSE_INIT, name="lm_head")(x)

    def dummy_input(self, batch: int = 1, length: int | None = None) -> jax.Array:
        length = min(self.config.max_positions, 8) if length is None else length
        if self.start_layer:
            return jnp.zeros((batch, length, self.config.dim), jnp.float32)
        return jnp.zeros((batch, length), jnp.int32)
