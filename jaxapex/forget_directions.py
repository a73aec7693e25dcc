"""The provider's forget directions for forget-aware Group OBS (``obs.unlearn(..., directions=...)``).

A masked fc1 weight row ``w`` (one neuron) reads the layer input ``x``; a compensation ``delta`` changes that
neuron's pre-activation on input ``x`` by ``delta · x``. Plain OBS chooses ``delta`` to restore the client's
outputs, and when the forget class's inputs lie in the span of the client's, it restores theirs too. Asking
``U_b delta = 0`` for the top-k principal directions ``U_b`` of the forget set's inputs (uncentred: the
directions carrying most of ``sum x x^T`` over the forget set, tokens included) keeps the compensation from
reading the forget inputs back in. The provider computes them on the GLOBAL model from its own forget set:
public, like the mask.

Blocks are row-major pieces of W (out, in) of B entries: with ``B <= in`` a block is a segment of one row and
gets the top-k eigenvectors of the segment's block of the second-moment matrix; with ``B = m * in`` a block
holds m whole rows and gets k directions per row (zero outside it): ``r = k * m``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxapex.layers import check_block_size, get_matrix, path_name, touched_blocks

Path = tuple[str, ...]
TOKENS = ("all", "cls")


def mlp_inputs_fn(model, *, tokens: str = "all") -> Callable[[dict, Mapping[str, np.ndarray]], dict[Path, jax.Array]]:
    """``fn(params, batch) -> {fc1 kernel path: fc1 inputs (n, tokens, dim)}`` of a pre-LN model: the fc1
    input is the output of the block's ``ln2``. ``tokens="cls"`` keeps the class token only (ViT)."""
    from jaxapex.models import model_inputs

    if tokens not in TOKENS:
        raise ValueError(f"tokens must be one of {TOKENS}, got {tokens!r}")

    def inputs_fn(params, batch):
        _, state = model.apply(
            params,
            model_inputs(model, batch),
            capture_intermediates=lambda module, method: module.name == "ln2" and method == "__call__",
            mutable=["intermediates"],
        )
        out = {}
        for path, leaf in jax.tree_util.tree_flatten_with_path(state["intermediates"])[0]:
            keys = tuple(getattr(k, "key", getattr(k, "name", str(k))) for k in path)
            if len(keys) >= 3 and keys[-3] == "ln2" and keys[-2] == "__call__":
                out[("params", *keys[:-3], "mlp", "fc1", "kernel")] = leaf[:, :1] if tokens == "cls" else leaf
        return out

    return inputs_fn


def input_second_moments(
    inputs_fn: Callable, params, batches: Iterable[Mapping[str, np.ndarray]], *, max_examples: int | None = None
) -> dict[Path, np.ndarray]:
    """``sum x x^T`` over the examples' tokens, float64 (dim, dim) per layer."""
    step = jax.jit(lambda p, b: {k: jnp.einsum("ntd,nte->de", v, v) for k, v in inputs_fn(p, b).items()})
    totals: dict[Path, np.ndarray] = {}
    seen = 0
    for batch in batches:
        if max_examples is not None and seen >= max_examples:
            break
        n = len(next(iter(batch.values())))
        if max_examples is not None and seen + n > max_examples:
            batch = {k: v[: max_examples - seen] for k, v in batch.items()}
            n = max_examples - seen
        for path, m in step(params, batch).items():
            totals[path] = totals.get(path, 0.0) + np.asarray(m, np.float64)
        seen += n
    if not totals:
        raise ValueError("the forget set yielded no examples for the forget directions")
    return totals


def top_directions(moment: np.ndarray, k: int) -> np.ndarray:
    """The k leading eigenvectors (k, d) of a symmetric positive semi-definite matrix, largest first, each
    with its largest-|entry| positive (a deterministic sign)."""
    values, vectors = np.linalg.eigh(moment)
    top = vectors[:, np.argsort(-values, kind="stable")[:k]].T
    signs = np.sign(top[np.arange(len(top)), np.argmax(np.abs(top), axis=1)])
    return top * np.where(signs == 0, 1.0, signs)[:, None]


def block_directions(moment: np.ndarray, shape: tuple[int, int], touched: np.ndarray, block_size: int, k: int):
    """Directions (len(touched), r, B) of a layer W of ``shape`` (out, in) whose inputs have second moment
    ``moment`` (in, in), for the blocks ``touched`` (row-major indices)."""
    out_dim, in_dim = shape
    if moment.shape != (in_dim, in_dim):
        raise ValueError(f"input second moment {moment.shape} does not match W's input width {in_dim}")
    if block_size <= in_dim:
        if in_dim % block_size:
            raise ValueError(f"forget directions need B to divide the row width {in_dim} (or be a multiple of it)")
        per_row = in_dim // block_size
        segments = {
            s: top_directions(moment[s * block_size : (s + 1) * block_size, s * block_size : (s + 1) * block_size], k)
            for s in range(per_row)
        }
        return np.stack([segments[int(b) % per_row] for b in touched])
    if block_size % in_dim:
        raise ValueError(f"forget directions need B to be a multiple of the row width {in_dim} (or divide it)")
    rows = block_size // in_dim
    top = top_directions(moment, k)  # (k, in)
    one = np.zeros((rows * k, block_size))
    for row in range(rows):
        one[row * k : (row + 1) * k, row * in_dim : (row + 1) * in_dim] = top
    return np.broadcast_to(one, (len(touched), *one.shape)).copy()


def forget_directions(
    inputs_fn: Callable,
    params_global,
    masks: Mapping[Path, np.ndarray],
    forget_batches: Iterable[Mapping[str, np.ndarray]],
    *,
    block_size: int,
    k: int,
    max_examples: int | None = None,
) -> dict[Path, np.ndarray]:
    """``{path: (touched blocks, r, B)}`` for every masked fc1 layer, in ``touched_blocks`` order; empty when
    ``k == 0`` (plain OBS)."""
    if k < 0:
        raise ValueError(f"the number of forget directions must be >= 0, got {k}")
    if k == 0:
        return {}
    for path in masks:
        if tuple(path)[-2:] != ("fc1", "kernel"):
            raise ValueError(f"forget directions are defined for fc1 layers (their inputs), not {path_name(path)!r}")
    moments = input_second_moments(inputs_fn, params_global, forget_batches, max_examples=max_examples)
    out = {}
    for path, mask in masks.items():
        path = tuple(path)
        W = get_matrix(params_global, path)
        check_block_size(W.shape, block_size, path=path)
        touched = touched_blocks(mask, block_size, path=path)
        if path not in moments:
            raise ValueError(f"no fc1 inputs captured for {path_name(path)!r}")
        out[path] = block_directions(moments[path], tuple(W.shape), touched, block_size, k)
    return out
