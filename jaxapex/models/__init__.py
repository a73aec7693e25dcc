"""Flax models (ViT, OPT-style decoder, LLaMA-family decoder), their presets, loss functions and MLP target paths.

Conventions used across jaxapex:

* ``params`` is the full variables dict returned by ``model.init`` (``{"params": {...}}``), so it can be
  passed to ``model.apply`` unchanged; a *target path* is a tuple of keys into it ending at a Dense kernel
  (in, out), e.g. ``("params", "block_0", "mlp", "fc1", "kernel")``.
* A vision batch is ``{"image": float32 (n, H, W, C), "label": int32 (n,)}``; a language batch is
  ``{"tokens": int32 (n, T + 1)}`` (inputs ``tokens[:, :-1]``, targets ``tokens[:, 1:]``); for a
  :class:`Llama` with ``start_layer > 0`` it also holds ``"hidden"`` float32 (n, T, dim), the residual stream
  entering that layer, which is then the model's input.
* Per-example functions take one item of a batch (no batch axis), which is what ``vmap(grad(...))`` wants.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxapex.models.blocks import HIDDEN_NAME, MLP, PreLNBlock, SelfAttention
from jaxapex.models.llama import LLAMA_PRESETS, Llama, LlamaConfig
from jaxapex.models.opt import OPT, OPT_POSITION_OFFSET, OPT_PRESETS, OPTConfig
from jaxapex.models.vit import VIT_PRESETS, ViT, ViTConfig

__all__ = [
    "ALL_MLP_MATRICES",
    "HIDDEN_NAME",
    "LLAMA_PRESETS",
    "MLP",
    "MLP_OUTPUT_MATRIX",
    "OPT",
    "OPT_POSITION_OFFSET",
    "OPT_PRESETS",
    "PRESETS",
    "VIT_PRESETS",
    "Llama",
    "LlamaConfig",
    "OPTConfig",
    "PreLNBlock",
    "SelfAttention",
    "ViT",
    "ViTConfig",
    "batch_loss_fn",
    "build_model",
    "config_from_dict",
    "config_to_dict",
    "example_loss_fn",
    "init_params",
    "make_hidden_fn",
    "mlp_target_paths",
    "model_inputs",
    "per_example_losses_fn",
    "restrict_logits",
]

Path = tuple[str, ...]
Model = ViT | OPT | Llama
Config = ViTConfig | OPTConfig | LlamaConfig
PRESETS: dict[str, Config] = {**VIT_PRESETS, **OPT_PRESETS, **LLAMA_PRESETS}
_MODEL_KINDS: dict[str, tuple[type, type]] = {
    "vit": (ViT, ViTConfig),
    "opt": (OPT, OPTConfig),
    "llama": (Llama, LlamaConfig),
}
# MLP matrices by role: the one whose output neurons the activation scorer ranks (its rows are a neuron's
# incoming weights) → the one that writes those neurons back into the residual stream (its columns).
MLP_OUTPUT_MATRIX: dict[str, str] = {"fc1": "fc2", "gate": "down"}
ALL_MLP_MATRICES = ("fc1", "fc2", "gate", "up", "down")


def build_model(config: Config | str) -> Model:
    """A model from a config or a preset name (``vit_tiny`` … ``vit_b16``, ``opt_tiny`` … ``opt_125m``,
    ``llama_tiny``, ``smollm2_135m``, ``llama32_1b``)."""
    if isinstance(config, str):
        try:
            config = PRESETS[config]
        except KeyError:
            raise ValueError(f"unknown model preset {config!r}; known: {sorted(PRESETS)}") from None
    if isinstance(config, ViTConfig):
        return ViT(config)
    if isinstance(config, OPTConfig):
        return OPT(config)
    if isinstance(config, LlamaConfig):
        return Llama(config)
    raise TypeError(f"expected a ViTConfig, OPTConfig, LlamaConfig or preset name, got {type(config).__name__}")


def init_params(model: Model, seed: int) -> dict:
    """Fresh variables ``{"params": ...}`` for ``model`` from an integer seed."""
    return {"params": model.init(jax.random.PRNGKey(seed), model.dummy_input())["params"]}


def config_to_dict(config: Config) -> dict[str, Any]:
    """JSON-ready ``{"kind": "vit"|"opt"|"llama", **fields}``."""
    kind = next(k for k, (_, cls) in _MODEL_KINDS.items() if isinstance(config, cls))
    return {"kind": kind, **{f: getattr(config, f) for f in config.__dataclass_fields__}}


def config_from_dict(data: Mapping[str, Any]) -> Config:
    """Inverse of :func:`config_to_dict`; unknown fields are an error (they would be silently ignored)."""
    data = dict(data)
    kind = data.pop("kind", None)
    if kind not in _MODEL_KINDS:
        raise ValueError(f"model config field 'kind' must be one of {sorted(_MODEL_KINDS)}, got {kind!r}")
    cls = _MODEL_KINDS[kind][1]
    unknown = sorted(set(data) - set(cls.__dataclass_fields__))
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields {unknown}")
    if isinstance(data.get("rope_scaling"), list):  # JSON has no tuples
        data["rope_scaling"] = tuple(data["rope_scaling"])
    return cls(**data)


def model_inputs(model: Model, batch: Mapping[str, jax.Array]) -> jax.Array:
    """The array ``model.apply`` consumes from a batch (images, or all tokens but the last)."""
    if isinstance(model, ViT):
        return batch["image"]
    if isinstance(model, Llama) and model.start_layer:
        return batch["hidden"]
    return batch["tokens"][:, :-1]


def restrict_logits(logits: jax.Array, classes: Sequence[int] | None) -> jax.Array:
    """Logits with every class outside ``classes`` set to -inf-like (a client's own label set); identity
    for ``None``. ``logits``: (..., num_classes)."""
    if classes is None:
        return logits
    allowed = np.zeros(logits.shape[-1], bool)
    allowed[np.asarray(classes, dtype=int)] = True
    return jnp.where(allowed, logits, jnp.finfo(logits.dtype).min)


def per_example_losses_fn(
    model: Model, *, classes: Sequence[int] | None = None
) -> Callable[[dict, Mapping[str, jax.Array]], jax.Array]:
    """``f(params, batch) -> (n,)`` cross-entropy per example (mean over tokens for the LM).

    ``classes`` (vision only) restricts the softmax to a label subset: a client whose task covers only its
    own classes trains and is scored among those, leaving the other classes' logits untouched.
    """
    if isinstance(model, ViT):

        def losses(params, batch):
            logits = restrict_logits(model.apply(params, batch["image"]), classes)
            return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])

    else:
        if classes is not None:
            raise ValueError("classes= restricts a classifier's labels; it does not apply to the language model")

        def losses(params, batch):
            logits = model.apply(params, model_inputs(model, batch))
            nll = optax.softmax_cross_entropy_with_integer_labels(logits, batch["tokens"][:, 1:])
            return nll.mean(axis=-1)

    return losses


def batch_loss_fn(
    model: Model, *, classes: Sequence[int] | None = None
) -> Callable[[dict, Mapping[str, jax.Array]], jax.Array]:
    """``f(params, batch) -> scalar`` mean loss over the batch."""
    losses = per_example_losses_fn(model, classes=classes)
    return lambda params, batch: losses(params, batch).mean()


def example_loss_fn(
    model: Model, *, classes: Sequence[int] | None = None
) -> Callable[[dict, Mapping[str, jax.Array]], jax.Array]:
    """``f(params, example) -> scalar`` for ONE example (no batch axis) — the per-sample loss that
    ``vmap(grad(f))`` turns into per-sample gradients."""
    losses = per_example_losses_fn(model, classes=classes)

    def loss(params, example):
        return losses(params, jax.tree.map(lambda a: a[None], example))[0]

    return loss


def _path_keys(path) -> Path:
    return tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def _natural_key(path: Path) -> tuple:
    """Sort ``block_10`` after ``block_9``."""
    return tuple(tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", part)) for part in path)


def mlp_target_paths(params: Mapping, which: Sequence[str] = ("fc1",)) -> tuple[Path, ...]:
    """Paths of the MLP Dense kernels named in ``which`` (``"fc1"``, ``"fc2"`` of the ViT/OPT MLP; ``"gate"``,
    ``"up"``, ``"down"`` of the LLaMA SwiGLU MLP), in block order.

    Found from the tree itself, so it works for any depth and for trees with or without the
    ``"params"`` top level.
    """
    allowed = set(ALL_MLP_MATRICES)
    bad = sorted(set(which) - allowed)
    if bad or not which:
        raise ValueError(f"which must name MLP layers among {sorted(allowed)}, got {tuple(which)!r}")
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    paths = [
        keys
        for keys in (_path_keys(p) for p, _ in leaves)
        if len(keys) >= 3 and keys[-1] == "kernel" and keys[-3] == "mlp" and keys[-2] in which
    ]
    if not paths:
        raise ValueError(f"no MLP kernels named {tuple(which)} found in the parameter tree")
    # block order, then the MLP's own order (gate, up, down) rather than alphabetical
    return tuple(sorted(paths, key=lambda p: (_natural_key(p[:-2]), ALL_MLP_MATRICES.index(p[-2]))))


def make_hidden_fn(
    model: Model, *, cls_only: bool = False
) -> Callable[[dict, Mapping[str, jax.Array]], dict[Path, jax.Array]]:
    """``hidden_fn(params, batch) -> {fc1 (or gate) target path: activations (n, tokens, mlp_dim)}``.

    The activations are the MLP hidden units after the nonlinearity (``silu(gate) * up`` in a SwiGLU MLP) —
    the "neurons" the activation-ratio scorer ranks; neuron j is column j of the fc1 / gate kernel (row j of
    W = kernel.T). ``cls_only`` (ViT)
    keeps only the class token's activations (n, 1, mlp_dim): the token the classifier reads.
    """
    if cls_only and not isinstance(model, ViT):
        raise ValueError("cls_only applies to the ViT (the decoders have no class token)")

    first = "gate" if isinstance(model, Llama) else "fc1"

    def hidden_fn(params, batch):
        if "params" not in params:
            raise ValueError("hidden_fn expects the variables dict {'params': ...} returned by model.init")
        _, state = model.apply(params, model_inputs(model, batch), mutable=["intermediates"])
        out: dict[Path, jax.Array] = {}
        for path, leaf in jax.tree_util.tree_flatten_with_path(state["intermediates"])[0]:
            keys = _path_keys(path)
            # sow stores a tuple: (..., "mlp", "fc1_act", "0")
            if len(keys) >= 3 and keys[-3] == "mlp" and keys[-2] == HIDDEN_NAME:
                out[("params", *keys[:-2], first, "kernel")] = leaf[:, :1] if cls_only else leaf
        return out

    return hidden_fn


def count_params(params: Mapping) -> int:
    return sum(int(jnp.size(x)) for x in jax.tree.leaves(params))
