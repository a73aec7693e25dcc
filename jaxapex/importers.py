"""Import Hugging Face safetensors checkpoints of ViT and OPT into the jaxapex Flax models.

Supported layouts: ``google/vit-base-patch16-224`` (``ViTForImageClassification``) and
``facebook/opt-125m`` (``OPTModel``/``OPTForCausalLM``, with or without the ``model.`` prefix). Any config
with the same naming works (ViT-S, tiny test configs, …): the expected tensor table is derived from the
config, every tensor's shape is checked against it *before* anything is loaded, and missing or unexpected
names are reported all at once.

Layout conversions (PyTorch → Flax):
    Linear.weight (out, in)        → Dense kernel (in, out)     transpose
    Conv2d.weight (out, C, p, p)   → Conv kernel (p, p, C, out)
    LayerNorm.weight / .bias       → LayerNorm scale / bias
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping
from typing import Literal

import numpy as np

from jaxapex.models import OPT, OPTConfig, ViT, ViTConfig
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
        TensorSpec("vit.embeddings.patch_embeddings.projection.bias", (c.dim,), ("params", "patch_embed", "bias"), "same"),
        TensorSpec("vit.embeddings.cls_token", (1, 1, c.dim), ("params", "cls_token"), "same"),
        TensorSpec("vit.embeddings.position_embeddings", (1, 1 + c.num_patches, c.dim), ("params", "pos_embed"), "same"),
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
        TensorSpec(f"{prefix}.embed_tokens.weight", (c.vocab_size, c.dim), ("params", "embed_tokens", "embedding"), "same"),
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


def _assemble(
    path: str | os.PathLike, specs: Iterable[TensorSpec], dtype: np.dtype
) -> dict:
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


def _check_against_model(variables: dict, model: ViT | OPT, source: str) -> None:
    """The assembled tree must have exactly the leaves and shapes ``model.init`` would create."""
    import jax

    reference = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), model.dummy_input()))
    want = {jax.tree_util.keystr(p): tuple(a.shape) for p, a in jax.tree_util.tree_flatten_with_path(reference)[0]}
    got = {jax.tree_util.keystr(p): tuple(a.shape) for p, a in jax.tree_util.tree_flatten_with_path(variables)[0]}
    if want != got:
        diff = sorted(set(want.items()) ^ set(got.items()))
        raise CheckpointMismatchError(f"{source}: imported tree differs from the model's parameters at {diff[:8]}")


def import_vit_hf(
    safetensors_path: str | os.PathLike, config: ViTConfig, *, dtype: np.dtype = np.float32
) -> dict:
    """Variables ``{"params": ...}`` for ``ViT(config)`` from a HF ViTForImageClassification safetensors file.

    ``vit.pooler.*`` tensors (present when exported from ``ViTModel`` with a pooler) are ignored since the
    classifier reads the cls token directly.
    """
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
    safetensors_path: str | os.PathLike, config: OPTConfig, *, dtype: np.dtype = np.float32
) -> dict:
    """Variables ``{"params": ...}`` for ``OPT(config)`` from a HF OPT safetensors file.

    The LM head is tied to ``embed_tokens``: an ``lm_head.weight`` in the file is accepted only if it equals
    the token embedding (an untied head cannot be represented and is reported, not silently dropped).
    Checkpoints with ``project_in``/``project_out`` (OPT-350m) are reported as unexpected names.
    """
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
