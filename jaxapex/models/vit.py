"""Vision Transformer (ViT) classifier in flax.linen, named to match the shared block scheme.

Parameter tree (``model.init(...)['params']``)::

    patch_embed/{kernel (p, p, C, dim), bias (dim,)}     Conv with stride p: one token per patch
    cls_token (1, 1, dim)
    pos_embed (1, 1 + n_patches, dim)                    learned, cls first
    block_{i}/ln1, attn/{query,key,value,out}, ln2, mlp/{fc1 (dim, mlp_dim), fc2 (mlp_dim, dim)}
    final_ln/{scale, bias}
    head/{kernel (dim, num_classes), bias}               applied to the cls token

Images are NHWC floats: (batch, image_size, image_size, channels).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxapex.models.blocks import ACTIVATIONS, PreLNBlock, layer_norm


@dataclasses.dataclass(frozen=True, kw_only=True)
class ViTConfig:
    image_size: int = 224
    patch_size: int = 16
    channels: int = 3
    dim: int = 768
    depth: int = 12
    heads: int = 12
    mlp_dim: int = 3072
    num_classes: int = 1000
    activation: str = "gelu"
    ln_eps: float = 1e-12  # Hugging Face ViT's layer_norm_eps

    def __post_init__(self) -> None:
        for field in ("image_size", "patch_size", "channels", "dim", "depth", "heads", "mlp_dim", "num_classes"):
            value = getattr(self, field)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"ViTConfig.{field} must be a positive int, got {value!r}")
        if self.image_size % self.patch_size:
            raise ValueError(
                f"ViTConfig.image_size={self.image_size} is not a multiple of patch_size={self.patch_size}"
            )
        if self.dim % self.heads:
            raise ValueError(f"ViTConfig.dim={self.dim} is not divisible by heads={self.heads}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"ViTConfig.activation={self.activation!r}; expected one of {sorted(ACTIVATIONS)}")

    @property
    def grid(self) -> int:
        """Patches per side."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid**2

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads


VIT_PRESETS: dict[str, ViTConfig] = {
    # 8×8 grayscale digits: 2×2 patches → 16 tokens + cls. Two blocks with a 4× MLP: on this data a
    # deeper, narrower-MLP model routes almost nothing through its last MLPs (zeroing them costs < 2 points),
    # which would leave an MLP mask nothing to remove.
    "vit_tiny": ViTConfig(
        image_size=8, patch_size=2, channels=1, dim=64, depth=2, heads=4, mlp_dim=256, num_classes=10
    ),
    # Same input, wider/deeper: slower, for digit experiments at a larger scale.
    "vit_small_digits": ViTConfig(
        image_size=8, patch_size=2, channels=1, dim=128, depth=4, heads=4, mlp_dim=384, num_classes=10
    ),
    # 28×28 grayscale characters (MNIST digits + capitals, 29 classes): 7×7 patches → 16 tokens + cls; small
    # enough that one seed of the whole recipe trains in minutes on 2 CPU cores.
    "vit_chars": ViTConfig(
        image_size=28, patch_size=7, channels=1, dim=64, depth=3, heads=4, mlp_dim=256, num_classes=29
    ),
    # ViT-S/16 and ViT-B/16 at 224 px (ImageNet-1k head).
    "vit_s16": ViTConfig(dim=384, depth=12, heads=6, mlp_dim=1536),
    "vit_b16": ViTConfig(),
}


class ViT(nn.Module):
    """``images`` (batch, H, W, C) → logits (batch, num_classes)."""

    config: ViTConfig

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        cfg = self.config
        expected = (cfg.image_size, cfg.image_size, cfg.channels)
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(f"ViT expects images of shape (batch, {expected}), got {tuple(images.shape)}")
        batch = images.shape[0]
        patches = nn.Conv(
            cfg.dim,
            kernel_size=(cfg.patch_size, cfg.patch_size),
            strides=(cfg.patch_size, cfg.patch_size),
            padding="VALID",
            kernel_init=nn.initializers.lecun_normal(),
            name="patch_embed",
        )(images)
        # Row-major over the patch grid, as PyTorch's conv(...).flatten(2).transpose(1, 2).
        tokens = patches.reshape(batch, cfg.num_patches, cfg.dim)
        cls = self.param("cls_token", nn.initializers.zeros, (1, 1, cfg.dim))
        x = jnp.concatenate([jnp.broadcast_to(cls, (batch, 1, cfg.dim)).astype(tokens.dtype), tokens], axis=1)
        pos = self.param("pos_embed", nn.initializers.normal(stddev=0.02), (1, 1 + cfg.num_patches, cfg.dim))
        x = x + pos
        for i in range(cfg.depth):
            x = PreLNBlock(
                cfg.dim, cfg.heads, cfg.mlp_dim, cfg.activation, cfg.ln_eps, causal=False, name=f"block_{i}"
            )(x)
        x = layer_norm(cfg.ln_eps, "final_ln")(x)
        return nn.Dense(cfg.num_classes, kernel_init=nn.initializers.zeros, name="head")(x[:, 0])

    def dummy_input(self, batch: int = 1) -> jax.Array:
        cfg = self.config
        return jnp.zeros((batch, cfg.image_size, cfg.image_size, cfg.channels), jnp.float32)
