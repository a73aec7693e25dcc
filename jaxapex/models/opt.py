"""OPT-style decoder-only language model in flax.linen (pre-LN, learned positions, tied LM head).

Parameter tree (``model.init(...)['params']``)::

    embed_tokens/embedding (vocab_size, dim)             also the (tied) LM head
    embed_positions/embedding (max_positions + 2, dim)   OPT offsets positions by 2
    layer_{i}/ln1, attn/{query,key,value,out}, ln2, mlp/{fc1 (dim, ffn_dim), fc2 (ffn_dim, dim)}
    final_ln/{scale, bias}

Tokens are int32 (batch, T) with T ≤ max_positions; the output is logits (batch, T, vocab_size), where
position t predicts token t + 1.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxapex.models.blocks import ACTIVATIONS, PreLNBlock, layer_norm

# OPT's learned position embedding reserves the first two rows (a fairseq legacy); position p uses row p + 2.
OPT_POSITION_OFFSET = 2


@dataclasses.dataclass(frozen=True, kw_only=True)
class OPTConfig:
    vocab_size: int = 50272
    max_positions: int = 2048
    dim: int = 768
    layers: int = 12
    heads: int = 12
    ffn_dim: int = 3072
    activation: str = "relu"
    ln_eps: float = 1e-5

    def __post_init__(self) -> None:
        for field in ("vocab_size", "max_positions", "dim", "layers", "heads", "ffn_dim"):
            value = getattr(self, field)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"OPTConfig.{field} must be a positive int, got {value!r}")
        if self.dim % self.heads:
            raise ValueError(f"OPTConfig.dim={self.dim} is not divisible by heads={self.heads}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"OPTConfig.activation={self.activation!r}; expected one of {sorted(ACTIVATIONS)}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads


# Byte-level presets use 256 tokens (one per byte value).
OPT_PRESETS: dict[str, OPTConfig] = {
    "opt_tiny": OPTConfig(vocab_size=256, max_positions=128, dim=128, layers=2, heads=4, ffn_dim=512),
    "opt_small_bytes": OPTConfig(vocab_size=256, max_positions=256, dim=256, layers=4, heads=8, ffn_dim=1024),
    "opt_125m": OPTConfig(),
}


class OPT(nn.Module):
    """``tokens`` (batch, T) int → logits (batch, T, vocab_size).

    ``attention_mask`` (batch, T), 1 for real tokens and 0 for padding: as in Hugging Face's OPT, positions
    count real tokens only (``cumsum(mask) * mask − 1``, padded slots at −1, all offset by 2) and padded keys
    are never attended to, so a left-padded prompt gets the same logits as the unpadded one.
    """

    config: OPTConfig

    @nn.compact
    def __call__(self, tokens: jax.Array, attention_mask: jax.Array | None = None) -> jax.Array:
        cfg = self.config
        if tokens.ndim != 2:
            raise ValueError(f"OPT expects tokens of shape (batch, T), got {tuple(tokens.shape)}")
        length = tokens.shape[1]
        if length > cfg.max_positions:
            raise ValueError(f"sequence length {length} exceeds OPTConfig.max_positions={cfg.max_positions}")
        embed = nn.Embed(
            cfg.vocab_size, cfg.dim, embedding_init=nn.initializers.normal(stddev=0.02), name="embed_tokens"
        )
        positions = nn.Embed(
            cfg.max_positions + OPT_POSITION_OFFSET,
            cfg.dim,
            embedding_init=nn.initializers.normal(stddev=0.02),
            name="embed_positions",
        )
        if attention_mask is None:
            position_ids = jnp.arange(length)[None]
        else:
            mask = attention_mask.astype(jnp.int32)
            position_ids = jnp.cumsum(mask, axis=1) * mask - 1
        x = embed(tokens) + positions(position_ids + OPT_POSITION_OFFSET)
        for i in range(cfg.layers):
            x = PreLNBlock(cfg.dim, cfg.heads, cfg.ffn_dim, cfg.activation, cfg.ln_eps, causal=True, name=f"layer_{i}")(
                x, attention_mask
            )
        x = layer_norm(cfg.ln_eps, "final_ln")(x)
        return embed.attend(x)

    def dummy_input(self, batch: int = 1, length: int | None = None) -> jax.Array:
        length = min(self.config.max_positions, 8) if length is None else length
        return jnp.zeros((batch, length), jnp.int32)
