"""Import Hugging Face safetensors checkpoints of ViT, OPT and LLaMA-family models into the jaxapex Flax models.

Supported layouts: ``google/vit-base-patch16-224`` (``ViTForImageClassification``),
``facebook/opt-125m`` (``OPTModel``/``OPTForCausalLM``, with or without the ``model.`` prefix) and
``LlamaForCausalLM`` (SmolLM2, Llama 3.2, …). Any config with the same naming works (ViT-S, tiny test
configs, …): the expected tensor table is derived from the config, every tensor's shape is checked against
it *before* anything is loaded, and missing or unexpected names are reported all at once.

A ``config.json`` next to the checkpoint (or passed explicitly) is read and compared with the model config
field by field: heads, eps, rope θ, activation, … — a disagreeing field is refused with its name and both
values, since e.g. a wrong head count would otherwise import silently (the tensor shapes do not show it).

Layout conversions (PyTorch → Flax):
    Linear.weight (out, in)        → Dense kernel (in, out)     transpose
    Conv2d.weight (out, C, p, p)   → Conv kernel (p, p, C, out)
    LayerNorm.weight / .bias       → LayerNorm scale / bias
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import numpy as np

from jaxapex.models import OPT, Llama, LlamaConfig, OPTConfig, ViT, ViTConfig
from jaxapex.models.opt import OPT_POSITION_OFFSET

Layout = Literal["linear", "conv", "same"]
Path = tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """One checkpoint tensor: its name and shape in the checkpoint, where it goes, and how to convert."""

    name: str
    shape: tuple[int, ...]
    path: Path  # into the variables dict, e.g. ("params", "block_0", "mlp", "fc1", "kernel")
    layout: Layout


class CheckpointMismatchError(ValueError):
    """A checkpoint does not match the expected tensor table (names or shapes)."""


class ConfigMismatchError(ValueError):
    """A checkpoint's own configuration (config.json, GGUF metadata) disagrees with the model config."""


def check_config_fields(ours: Mapping[str, Any], theirs: Mapping[str, Any], *, source: str) -> None:
    """Raise :class:`ConfigMismatchError` naming every field where ``theirs`` (the checkpoint's, already in
    our field names and units) disagrees with ``ours``. Floats agree to a relative 1e-6 (GGUF stores float32)."""
    problems = []
    for field, value in theirs.items():
        mine = ours[field]
        if isinstance(mine, float) or isinstance(value, float):
            same = mine is not None and value is not None and math.isclose(float(mine), float(value), rel_tol=1e-6)
        else:
            same = mine == value
        if not same:
            problems.append(f"{field}: checkpoint {value!r}, model config {mine!r}")
    if problems:
        raise ConfigMismatchError(
            f"{source}: the checkpoint's configuration disagrees with the model config — " + "; ".join(problems)
        )


def read_hf_config(path: str | os.PathLike) -> dict[str, Any]:
    """A Hugging Face ``config.json`` as a dict; a one-line error naming the file when it is not JSON."""
    path = os.fspath(path)
    try:
        with open(path) as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        raise ConfigMismatchError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ConfigMismatchError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _hf_field(hf: Mapping[str, Any], name: str, source: str, default: Any = KeyError) -> Any:
    if name in hf:
        return hf[name]
    if default is KeyError:
        raise ConfigMismatchError(f"{source}: field {name!r} is missing")
    return default


def _vit_fields_from_hf(hf: Mapping[str, Any], source: str) -> dict[str, Any]:
    act = _hf_field(hf, "hidden_act", source, "gelu")
    fields = {
        "dim": _hf_field(hf, "hidden_size", source),
        "depth": _hf_field(hf, "num_hidden_layers", source),
        "heads": _hf_field(hf, "num_attention_heads", source),
        "mlp_dim": _hf_field(hf, "intermediate_size", source),
        "image_size": _hf_field(hf, "image_size", source),
        "patch_size": _hf_field(hf, "patch_size", source),
        "channels": _hf_field(hf, "num_channels", source, 3),
        "ln_eps": float(_hf_field(hf, "layer_norm_eps", source)),
        "activation": {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}.get(act, act),
    }
    if "id2label" in hf:
        fields["num_classes"] = len(hf["id2label"])
    return fields


def _opt_fields_from_hf(hf: Mapping[str, Any], source: str) -> dict[str, Any]:
    dim = _hf_field(hf, "hidden_size", source)
    for name, want in (("do_layer_norm_before", True), ("word_embed_proj_dim", dim)):
        if _hf_field(hf, name, source, want) != want:
            raise ConfigMismatchError(f"{source}: {name}={hf[name]!r} is not supported (this OPT needs {want!r})")
    return {
        "dim": dim,
        "layers": _hf_field(hf, "num_hidden_layers", source),
        "heads": _hf_field(hf, "num_attention_heads", source),
        "ffn_dim": _hf_field(hf, "ffn_dim", source),
        "vocab_size": _hf_field(hf, "vocab_size", source),
        "max_positions": _hf_field(hf, "max_position_embeddings", source),
        "activation": _hf_field(hf, "activation_function", source, "relu"),
    }


def _llama_rope_scaling(hf: Mapping[str, Any], source: str) -> tuple[float, float, float, int] | None:
    scaling = hf.get("rope_scaling")
    if scaling is None:
        return None
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind != "llama3":
        raise ConfigMismatchError(f"{source}: rope_scaling type {kind!r} is not supported (only 'llama3')")
    return (
        float(scaling["factor"]),
        float(scaling["low_freq_factor"]),
        float(scaling["high_freq_factor"]),
        int(scaling["original_max_position_embeddings"]),
    )


def llama_config_from_hf(hf: Mapping[str, Any], *, source: str = "config.json") -> LlamaConfig:
    """A :class:`LlamaConfig` from a Hugging Face ``LlamaForCausalLM`` config.json."""
    heads = _hf_field(hf, "num_attention_heads", source)
    dim = _hf_field(hf, "hidden_size", source)
    if _hf_field(hf, "head_dim", source, dim // heads) != dim // heads:
        raise ConfigMismatchError(
            f"{source}: head_dim={hf['head_dim']} differs from hidden_size / heads "
            f"= {dim // heads}; this Llama needs them equal"
        )
    if hf.get("attention_bias") or hf.get("mlp_bias"):
        raise ConfigMismatchError(f"{source}: attention_bias / mlp_bias are not supported (LLaMA has no biases)")
    return LlamaConfig(
        vocab_size=_hf_field(hf, "vocab_size", source),
        dim=dim,
        layers=_hf_field(hf, "num_hidden_layers", source),
        heads=heads,
        kv_heads=_hf_field(hf, "num_key_value_heads", source, heads),
        ffn_dim=_hf_field(hf, "intermediate_size", source),
        rope_theta=float(_hf_field(hf, "rope_theta", source, 10000.0)),
        rope_scaling=_llama_rope_scaling(hf, source),
        rms_eps=float(_hf_field(hf, "rms_norm_eps", source)),
        max_positions=_hf_field(hf, "max_position_embeddings", source),
        tie_embeddings=bool(_hf_field(hf, "tie_word_embeddings", source, False)),
        activation=_hf_field(hf, "hidden_act", source, "silu"),
    )


def llama_hf_config(config: LlamaConfig) -> dict[str, Any]:
    """The Hugging Face config.json of ``config`` (inverse of :func:`llama_config_from_hf`)."""
    c = config
    out = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": c.vocab_size,
        "hidden_size": c.dim,
        "num_hidden_layers": c.layers,
        "num_attention_heads": c.heads,
        "num_key_value_heads": c.kv_heads,
        "intermediate_size": c.ffn_dim,
        "rope_theta": c.rope_theta,
        "rms_norm_eps": c.rms_eps,
        "max_position_embeddings": c.max_positions,
        "tie_word_embeddings": c.tie_embeddings,
        "hidden_act": c.activation,
        "head_dim": c.head_dim,
        "attention_bias": False,
        "mlp_bias": False,
        "rope_scaling": None,
    }
    if c.rope_scaling is not None:
        factor, low, high, original = c.rope_scaling
        out["rope_scaling"] = {
            "rope_type": "llama3",
            "factor": factor,
            "low_freq_factor": low,
            "high_freq_factor": high,
            "original_max_position_embeddings": original,
        }
    return out


def _config_json_path(checkpoint: str | os.PathLike, config_json: str | os.PathLike | None) -> str | None:
    if config_json is not None:
        if not os.path.isfile(config_json):
            raise FileNotFoundError(f"config.json not found: {config_json}")
        return os.fspath(config_json)
    beside = os.path.join(os.path.dirname(os.path.abspath(checkpoint)), "config.json")
    return beside if os.path.isfile(beside) else None


def _check_hf_config(config, checkpoint, config_json, fields_from_hf: Callable[[Mapping, str], dict]) -> None:
    """Compare ``config`` with the checkpoint's config.json, when there is one."""
    path = _config_json_path(checkpoint, config_json)
    if path is None:
        return
    theirs = fields_from_hf(read_hf_config(path), path)
    check_config_fields(dataclasses.asdict(config), theirs, source=path)


def _to_flax(array: np.ndarray, layout: Layout) -> np.ndarray:
    if layout == "linear":
        return array.T
    if layout == "conv":
        return array.transpose(2, 3, 1, 0)
    return array


def _from_flax(array: np.ndarray, layout: Layout) -> np.ndarray:
    if layout == "linear":
        return array.T
    if layout == "conv":
        return array.transpose(3, 2, 0, 1)
    return array


def _linear(prefix: str, path: Path, n_in: int, n_out: int) -> list[TensorSpec]:
    return [
        TensorSpec(f"{prefix}.weight", (n_out, n_in), ("params", *path, "kernel"), "linear"),
        TensorSpec(f"{prefix}.bias", (n_out,), ("params", *path, "bias"), "same"),
    ]


def _layer_norm(prefix: str, path: Path, dim: int) -> list[TensorSpec]:
    return [
        TensorSpec(f"{prefix}.weight", (dim,), ("params", *path, "scale"), "same"),
        TensorSpec(f"{prefix}.bias", (dim,), ("params", *path, "bias"), "same"),
    ]


def vit_hf_tensor_table(config: ViTConfig) -> tuple[TensorSpec, ...]:
    """Every tensor of a Hugging Face ``ViTForImageClassification`` checkpoint for ``config``.

    Pure bookkeeping (no arrays): ``vit_hf_tensor_table(VIT_PRESETS["vit_b16"])`` lists the 200 tensors of
    google/vit-base-patch16-224 with their shapes.
    """
    c = config
    specs = [
        TensorSpec(
            "vit.embeddings.patch_embeddings.projection.weight",
            (c.dim, c.channels, c.patch_size, c.patch_size),
            ("params", "patch_embed", "kernel"),
            "conv",
        ),
        TensorSpec(
            "vit.embeddings.patch_embeddings.projection.bias", (c.dim,), ("params", "patch_embed", "bias"), "same"
        ),
        TensorSpec("vit.embeddings.cls_token", (1, 1, c.dim), ("params", "cls_token"), "same"),
        TensorSpec(
            "vit.embeddings.position_embeddings", (1, 1 + c.num_patches, c.dim), ("params", "pos_embed"), "same"
        ),
    ]
    for i in range(c.depth):
        hf, ours = f"vit.encoder.layer.{i}", f"block_{i}"
        specs += _layer_norm(f"{hf}.layernorm_before", (ours, "ln1"), c.dim)
        for proj in ("query", "key", "value"):
            specs += _linear(f"{hf}.attention.attention.{proj}", (ours, "attn", proj), c.dim, c.dim)
        specs += _linear(f"{hf}.attention.output.dense", (ours, "attn", "out"), c.dim, c.dim)
        specs += _layer_norm(f"{hf}.layernorm_after", (ours, "ln2"), c.dim)
        specs += _linear(f"{hf}.intermediate.dense", (ours, "mlp", "fc1"), c.dim, c.mlp_dim)
        specs += _linear(f"{hf}.output.dense", (ours, "mlp", "fc2"), c.mlp_dim, c.dim)
    specs += _layer_norm("vit.layernorm", ("final_ln",), c.dim)
    specs += _linear("classifier", ("head",), c.dim, c.num_classes)
    return tuple(specs)


def opt_hf_tensor_table(config: OPTConfig, *, prefix: str = "model.decoder") -> tuple[TensorSpec, ...]:
    """Every tensor of a Hugging Face OPT decoder checkpoint for ``config`` (LM head excluded: it is tied).

    ``prefix`` is ``"model.decoder"`` (``OPTForCausalLM``) or ``"decoder"`` (``OPTModel``, the layout of the
    original facebook/opt-* uploads).
    """
    c = config
    specs = [
        TensorSpec(
            f"{prefix}.embed_tokens.weight", (c.vocab_size, c.dim), ("params", "embed_tokens", "embedding"), "same"
        ),
        TensorSpec(
            f"{prefix}.embed_positions.weight",
            (c.max_positions + OPT_POSITION_OFFSET, c.dim),
            ("params", "embed_positions", "embedding"),
            "same",
        ),
    ]
    for i in range(c.layers):
        hf, ours = f"{prefix}.layers.{i}", f"layer_{i}"
        specs += _layer_norm(f"{hf}.self_attn_layer_norm", (ours, "ln1"), c.dim)
        for hf_proj, proj in (("q_proj", "query"), ("k_proj", "key"), ("v_proj", "value"), ("out_proj", "out")):
            specs += _linear(f"{hf}.self_attn.{hf_proj}", (ours, "attn", proj), c.dim, c.dim)
        specs += _layer_norm(f"{hf}.final_layer_norm", (ours, "ln2"), c.dim)
        specs += _linear(f"{hf}.fc1", (ours, "mlp", "fc1"), c.dim, c.ffn_dim)
        specs += _linear(f"{hf}.fc2", (ours, "mlp", "fc2"), c.ffn_dim, c.dim)
    specs += _layer_norm(f"{prefix}.final_layer_norm", ("final_ln",), c.dim)
    return tuple(specs)


def _format_names(names: Iterable[str], limit: int = 12) -> str:
    names = sorted(names)
    shown = ", ".join(names[:limit])
    return shown + (f", … ({len(names) - limit} more)" if len(names) > limit else "")


def check_tensor_table(
    specs: Iterable[TensorSpec],
    available: Mapping[str, tuple[int, ...]],
    *,
    source: str,
    ignore: Iterable[str] = (),
) -> None:
    """Raise :class:`CheckpointMismatchError` listing every missing name, unexpected name and wrong shape.

    ``available`` maps checkpoint names to shapes; names in ``ignore`` may be present or absent.
    """
    specs = list(specs)
    expected = {s.name: s for s in specs}
    ignore = set(ignore)
    missing = sorted(set(expected) - set(available))
    unexpected = sorted(set(available) - set(expected) - ignore)
    wrong = [
        f"{name}: checkpoint {tuple(available[name])}, expected {expected[name].shape}"
        for name in sorted(set(expected) & set(available))
        if tuple(available[name]) != expected[name].shape
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing: {_format_names(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected: {_format_names(unexpected)}")
    if wrong:
        problems.append(f"{len(wrong)} with wrong shape: " + "; ".join(wrong[:12]))
    if problems:
        raise CheckpointMismatchError(f"{source} does not match the expected layout — " + " | ".join(problems))


def _read_shapes(path: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    if not os.path.isfile(path):
        raise FileNotFoundError(f"safetensors checkpoint not found: {path}")
    with safe_open(os.fspath(path), framework="numpy") as f:
        return {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}


def _assemble(path: str | os.PathLike, specs: Iterable[TensorSpec], dtype: np.dtype) -> dict:
    """Load each spec'd tensor, convert its layout, and nest it into a variables dict."""
    from safetensors import safe_open

    variables: dict = {}
    with safe_open(os.fspath(path), framework="numpy") as f:
        for spec in specs:
            array = np.ascontiguousarray(_to_flax(f.get_tensor(spec.name), spec.layout), dtype=dtype)
            node = variables
            for key in spec.path[:-1]:
                node = node.setdefault(key, {})
            node[spec.path[-1]] = array
    return variables


def _check_against_model(variables: dict, model: ViT | OPT | Llama, source: str) -> None:
    """The assembled tree must have exactly the leaves and shapes ``model.init`` would create."""
    import jax

    reference = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), model.dummy_input()))
    want = {jax.tree_util.keystr(p): tuple(a.shape) for p, a in jax.tree_util.tree_flatten_with_path(reference)[0]}
    got = {jax.tree_util.keystr(p): tuple(a.shape) for p, a in jax.tree_util.tree_flatten_with_path(variables)[0]}
    if want != got:
        diff = sorted(set(want.items()) ^ set(got.items()))
        raise CheckpointMismatchError(f"{source}: imported tree differs from the model's parameters at {diff[:8]}")


def import_vit_hf(
    safetensors_path: str | os.PathLike,
    config: ViTConfig,
    *,
    dtype: np.dtype = np.float32,
    config_json: str | os.PathLike | None = None,
) -> dict:
    """Variables ``{"params": ...}`` for ``ViT(config)`` from a HF ViTForImageClassification safetensors file.

    ``vit.pooler.*`` tensors (present when exported from ``ViTModel`` with a pooler) are ignored since the
    classifier reads the cls token directly. ``config_json`` (default: a config.json beside the file, if any)
    must agree with ``config``.
    """
    _check_hf_config(config, safetensors_path, config_json, _vit_fields_from_hf)
    available = _read_shapes(safetensors_path)
    specs = vit_hf_tensor_table(config)
    ignore = {n for n in available if n.startswith("vit.pooler.")}
    check_tensor_table(specs, available, source=os.fspath(safetensors_path), ignore=ignore)
    variables = _assemble(safetensors_path, specs, dtype)
    _check_against_model(variables, ViT(config), os.fspath(safetensors_path))
    return variables


def _opt_prefix(names: Iterable[str], source: str) -> str:
    names = list(names)
    for prefix in ("model.decoder", "decoder"):
        if any(n.startswith(prefix + ".") for n in names):
            return prefix
    raise CheckpointMismatchError(
        f"{source}: no tensor starts with 'model.decoder.' or 'decoder.'; found e.g. {_format_names(names, 5)}"
    )


def import_opt_hf(
    safetensors_path: str | os.PathLike,
    config: OPTConfig,
    *,
    dtype: np.dtype = np.float32,
    config_json: str | os.PathLike | None = None,
) -> dict:
    """Variables ``{"params": ...}`` for ``OPT(config)`` from a HF OPT safetensors file.

    The LM head is tied to ``embed_tokens``: an ``lm_head.weight`` in the file is accepted only if it equals
    the token embedding (an untied head cannot be represented and is reported, not silently dropped).
    Checkpoints with ``project_in``/``project_out`` (OPT-350m) are reported as unexpected names.
    ``config_json`` (default: a config.json beside the file, if any) must agree with ``config``.
    """
    _check_hf_config(config, safetensors_path, config_json, _opt_fields_from_hf)
    source = os.fspath(safetensors_path)
    available = _read_shapes(safetensors_path)
    prefix = _opt_prefix(available, source)
    specs = opt_hf_tensor_table(config, prefix=prefix)
    check_tensor_table(specs, available, source=source, ignore={"lm_head.weight"})
    variables = _assemble(safetensors_path, specs, dtype)
    if "lm_head.weight" in available:
        from safetensors import safe_open

        with safe_open(source, framework="numpy") as f:
            head = np.asarray(f.get_tensor("lm_head.weight"), dtype=dtype)
        embedding = variables["params"]["embed_tokens"]["embedding"]
        if head.shape != embedding.shape or not np.array_equal(head, embedding):
            raise CheckpointMismatchError(
                f"{source}: lm_head.weight {head.shape} is not tied to {prefix}.embed_tokens.weight "
                f"{embedding.shape}; this OPT implementation ties the LM head to the token embedding"
            )
    _check_against_model(variables, OPT(config), source)
    return variables


def llama_hf_tensor_table(config: LlamaConfig) -> tuple[TensorSpec, ...]:
    """Every tensor of a Hugging Face ``LlamaForCausalLM`` checkpoint for ``config`` (``lm_head.weight``
    only when the head is untied)."""
    c = config
    d = c.head_dim
    specs = [
        TensorSpec("model.embed_tokens.weight", (c.vocab_size, c.dim), ("params", "embed_tokens", "embedding"), "same")
    ]
    for i in range(c.layers):
        hf, ours = f"model.layers.{i}", f"layer_{i}"
        specs.append(TensorSpec(f"{hf}.input_layernorm.weight", (c.dim,), ("params", ours, "ln1", "scale"), "same"))
        for hf_proj, proj, n_out in (
            ("q_proj", "query", c.heads * d),
            ("k_proj", "key", c.kv_heads * d),
            ("v_proj", "value", c.kv_heads * d),
        ):
            specs.append(
                TensorSpec(
                    f"{hf}.self_attn.{hf_proj}.weight",
                    (n_out, c.dim),
                    ("params", ours, "attn", proj, "kernel"),
                    "linear",
                )
            )
        specs.append(
            TensorSpec(
                f"{hf}.self_attn.o_proj.weight",
                (c.dim, c.heads * d),
                ("params", ours, "attn", "out", "kernel"),
                "linear",
            )
        )
        specs.append(
            TensorSpec(f"{hf}.post_attention_layernorm.weight", (c.dim,), ("params", ours, "ln2", "scale"), "same")
        )
        for hf_proj, proj, shape in (
            ("gate_proj", "gate", (c.ffn_dim, c.dim)),
            ("up_proj", "up", (c.ffn_dim, c.dim)),
            ("down_proj", "down", (c.dim, c.ffn_dim)),
        ):
            specs.append(
                TensorSpec(f"{hf}.mlp.{hf_proj}.weight", shape, ("params", ours, "mlp", proj, "kernel"), "linear")
            )
    specs.append(TensorSpec("model.norm.weight", (c.dim,), ("params", "final_norm", "scale"), "same"))
    if not c.tie_embeddings:
        specs.append(TensorSpec("lm_head.weight", (c.vocab_size, c.dim), ("params", "lm_head", "kernel"), "linear"))
    return tuple(specs)


def import_llama_hf(
    safetensors_path: str | os.PathLike,
    config: LlamaConfig | None = None,
    *,
    dtype: np.dtype = np.float32,
    config_json: str | os.PathLike | None = None,
) -> tuple[LlamaConfig, dict]:
    """``(config, variables)`` for ``Llama(config)`` from a HF ``LlamaForCausalLM`` safetensors file.

    The config comes from ``config_json`` (default: the config.json beside the file); a ``config`` given as
    well must agree with it field by field. Without a config.json, ``config`` is required. Rotary q/k rows
    are already in the Hugging Face layout the model uses. A tied model's ``lm_head.weight``, when present,
    must equal the token embedding.
    """
    source = os.fspath(safetensors_path)
    path = _config_json_path(safetensors_path, config_json)
    if path is not None:
        from_file = llama_config_from_hf(read_hf_config(path), source=path)
        if config is not None:
            check_config_fields(dataclasses.asdict(config), dataclasses.asdict(from_file), source=path)
        config = from_file
    elif config is None:
        raise ConfigMismatchError(f"{source}: no config.json beside the checkpoint; pass config= or config_json=")
    available = _read_shapes(safetensors_path)
    specs = llama_hf_tensor_table(config)
    ignore = {"lm_head.weight"} if config.tie_embeddings else set()
    ignore |= {n for n in available if n.endswith(".rotary_emb.inv_freq")}  # a buffer older exports carry
    check_tensor_table(specs, available, source=source, ignore=ignore)
    variables = _assemble(safetensors_path, specs, dtype)
    if config.tie_embeddings and "lm_head.weight" in available:
        from safetensors import safe_open

        with safe_open(source, framework="numpy") as f:
            head = np.asarray(f.get_tensor("lm_head.weight"), dtype=dtype)
        if not np.array_equal(head, variables["params"]["embed_tokens"]["embedding"]):
            raise CheckpointMismatchError(
                f"{source}: lm_head.weight differs from model.embed_tokens.weight, but tie_word_embeddings is true"
            )
    _check_against_model(variables, Llama(config), source)
    return config, variables


def save_llama_hf(directory: str | os.PathLike, config: LlamaConfig, variables: Mapping) -> str:
    """Write ``model.safetensors`` and ``config.json`` of ``LlamaForCausalLM`` into ``directory``; returns the
    safetensors path."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(os.fspath(directory), "model.safetensors")
    save_hf_safetensors(path, export_hf_tensors(variables, llama_hf_tensor_table(config)))
    config_path = os.path.join(os.fspath(directory), "config.json")
    tmp = f"{config_path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(llama_hf_config(config), f, indent=2)
    os.replace(tmp, config_path)
    return path


def export_hf_tensors(variables: Mapping, specs: Iterable[TensorSpec]) -> dict[str, np.ndarray]:
    """Our variables → ``{checkpoint name: array}`` in the PyTorch layout of ``specs`` (inverse of import)."""
    out = {}
    for spec in specs:
        node = variables
        for key in spec.path:
            node = node[key]
        out[spec.name] = np.ascontiguousarray(_from_flax(np.asarray(node), spec.layout))
    return out


def save_hf_safetensors(path: str | os.PathLike, tensors: Mapping[str, np.ndarray]) -> None:
    """Write ``tensors`` as a safetensors file, atomically (temp file + rename)."""
    from safetensors.numpy import save_file

    path = os.fspath(path)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
