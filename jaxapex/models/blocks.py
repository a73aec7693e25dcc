"""Transformer building blocks shared by the ViT and the OPT-style decoder.

Parameter names follow one scheme in both models so that masks, Fisher blocks and importers address the
same paths: ``ln1`` → ``attn`` (``query``/``key``/``value``/``out``) → ``ln2`` → ``mlp`` (``fc1``/``fc2``).
Every projection is a ``flax.linen.Dense`` whose kernel is ``(in, out)``; a PyTorch ``Linear.weight`` is
``(out, in)``, i.e. the transposed kernel.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

# Name under which each MLP sows its hidden activations (after the nonlinearity) into the
# ``intermediates`` collection; ``jaxapex.models.make_hidden_fn`` reads it back.
HIDDEN_NAME = "fc1_act"

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    # Exact (erf) GELU, as in Hugging Face ViT; flax's default tanh approximation would not match imports.
    "gelu": lambda x: nn.gelu(x, approximate=False),
    "gelu_tanh": lambda x: nn.gelu(x, approximate=True),
    "relu": nn.relu,
}

_DENSE_INIT = nn.initializers.normal(stddev=0.02)


def activation_fn(name: str) -> Callable[[jax.Array], jax.Array]:
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}") from None


class SelfAttention(nn.Module):
    """Multi-head self-attention with biased q/k/v/out projections.

    ``x``: (batch, tokens, dim) → (batch, tokens, dim). With ``causal`` token t attends to tokens ≤ t;
    ``attention_mask`` (batch, tokens), 0 at padding, keeps every query from reading padded keys.
    Scores are computed in float32 whatever the input dtype, for a stable softmax.
    """

    dim: int
    heads: int
    causal: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, attention_mask: jax.Array | None = None) -> jax.Array:
        batch, tokens, dim = x.shape
        if dim != self.dim:
            raise ValueError(f"SelfAttention expects feature size {self.dim}, got input of shape {x.shape}")
        head_dim = self.dim // self.heads

        def project(name: str) -> jax.Array:
            y = nn.Dense(self.dim, kernel_init=_DENSE_INIT, name=name)(x)
            return y.reshape(batch, tokens, self.heads, head_dim)

        q, k, v = project("query"), project("key"), project("value")
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) / math.sqrt(head_dim)
        if self.causal:
            allowed = jnp.tril(jnp.ones((tokens, tokens), dtype=bool))
            scores = jnp.where(allowed, scores, jnp.finfo(jnp.float32).min)
        if attention_mask is not None:
            scores = jnp.where(attention_mask.astype(bool)[:, None, None, :], scores, jnp.finfo(jnp.float32).min)
        weights = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
        mixed = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(batch, tokens, self.dim)
        return nn.Dense(self.dim, kernel_init=_DENSE_INIT, name="out")(mixed)


class MLP(nn.Module):
    """fc1 → activation → fc2. Sows the hidden activations (..., hidden) as ``intermediates/fc1_act``."""

    dim: int
    hidden: int
    activation: str

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = activation_fn(self.activation)(nn.Dense(self.hidden, kernel_init=_DENSE_INIT, name="fc1")(x))
        self.sow("intermediates", HIDDEN_NAME, h)
        return nn.Dense(self.dim, kernel_init=_DENSE_INIT, name="fc2")(h)


def layer_norm(eps: float, name: str) -> nn.LayerNorm:
    """LayerNorm with the exact variance E[(x − E[x])²], as PyTorch computes it. Flax's default
    ``use_fast_variance`` (E[x²] − E[x]²) cancels catastrophically on activations with a large common offset."""
    return nn.LayerNorm(epsilon=eps, use_fast_variance=False, name=name)


class PreLNBlock(nn.Module):
    """x + attn(ln1(x)), then + mlp(ln2(x)). ``x``: (batch, tokens, dim)."""

    dim: int
    heads: int
    mlp_dim: int
    activation: str
    ln_eps: float
    causal: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, attention_mask: jax.Array | None = None) -> jax.Array:
        x = x + SelfAttention(self.dim, self.heads, self.causal, name="attn")(
            layer_norm(self.ln_eps, "ln1")(x), attention_mask
        )
        return x + MLP(self.dim, self.mlp_dim, self.activation, name="mlp")(layer_norm(self.ln_eps, "ln2")(x))
