"""Target matrices inside a parameter pytree, and their blocks.

A *target path* is a tuple of keys into a parameter pytree (e.g. a ``flax.linen`` variables dict) that ends
at a Dense kernel of shape ``(in, out)``. Unlearning works on the *target matrix* ``W = kernel.T`` of shape
``(out, in)``, whose row ``n`` holds the incoming weights of output neuron ``n``. ``W`` is flattened
row-major and cut into contiguous blocks of ``B`` entries: block ``b`` holds flat entries ``[bB, (b+1)B)``.

Everything here is functional: ``set_matrix`` returns a new pytree and never mutates its input.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

Path = tuple
PyTree = Any


def path_name(path: Path) -> str:
    """Readable name of a target path for messages: ``('params', 'fc1', 'kernel')`` -> ``params/fc1/kernel``."""
    return "/".join(str(key) for key in path)


def layer_prefix(path: Path | None) -> str:
    """``"layer 'a/b/kernel': "`` to start an error message about ``path`` (empty without one)."""
    return f"layer {path_name(path)!r}: " if path is not None else ""


def block_label(position: int, block_indices: Sequence[int] | np.ndarray | None) -> int:
    """The block an error names: its index in the layer (``block_indices[position]``) when known."""
    return int(position if block_indices is None else block_indices[position])


def get_leaf(params: PyTree, path: Path) -> Any:
    """The leaf at ``path``; a ``KeyError`` names the missing key and the keys that were there."""
    node = params
    for depth, key in enumerate(path):
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError) as err:
            available = list(node.keys()) if isinstance(node, Mapping) else type(node).__name__
            raise KeyError(
                f"target path {path_name(path)!r}: no key {key!r} at depth {depth} "
                f"(under {path_name(path[:depth]) or '<root>'!r}; found {available})"
            ) from err
    return node


def replace_leaf(params: PyTree, path: Path, value: Any) -> PyTree:
    """A copy of ``params`` with the leaf at ``path`` replaced; containers off the path are shared."""
    if not path:
        return value
    key, rest = path[0], path[1:]
    child = replace_leaf(get_leaf(params, (key,)), rest, value) if rest else value
    if type(params).__name__ == "FrozenDict":
        return params.copy({key: child})
    if isinstance(params, Mapping):
        updated = dict(params)
        updated[key] = child
        return updated if type(params) is dict else type(params)(updated)
    if isinstance(params, (list, tuple)):
        items = list(params)
        items[key] = child
        return type(params)(items) if isinstance(params, list) else tuple(items)
    raise TypeError(f"cannot replace key {key!r} inside a {type(params).__name__}")


def get_kernel(params: PyTree, path: Path):
    """The Dense kernel at ``path``, shape ``(in, out)``; ``ValueError`` if it is not a matrix."""
    kernel = get_leaf(params, path)
    shape = getattr(kernel, "shape", None)
    if shape is None or len(shape) != 2:
        raise ValueError(
            f"target path {path_name(path)!r} must point at a 2-D Dense kernel (in, out); got shape {shape}"
        )
    return kernel


def get_matrix(params: PyTree, path: Path):
    """Target matrix ``W = kernel.T``, shape ``(out, in)``."""
    import jax.numpy as jnp  # here, not at the top: the protocol's NumPy-only processes use this module

    return jnp.asarray(get_kernel(params, path)).T


def set_matrix(params: PyTree, path: Path, W) -> PyTree:
    """New params with the kernel at ``path`` set to ``W.T``; ``W`` must have the matrix's shape (out, in)."""
    kernel = get_kernel(params, path)
    expected = (kernel.shape[1], kernel.shape[0])
    if tuple(W.shape) != expected:
        raise ValueError(
            f"set_matrix {path_name(path)!r}: W has shape {tuple(W.shape)}, expected (out, in) = {expected}"
        )
    import jax.numpy as jnp

    return replace_leaf(params, path, jnp.asarray(W, dtype=kernel.dtype).T)


def check_block_size(shape: Sequence[int], block_size: int, *, path: Path | None = None) -> int:
    """Number of blocks of ``block_size`` entries in a matrix of ``shape``; ``ValueError`` if B does not divide."""
    size = int(np.prod(shape))
    where = f"layer {path_name(path)!r}: " if path is not None else ""
    if not isinstance(block_size, (int, np.integer)) or block_size <= 0:
        raise ValueError(f"{where}block_size must be a positive integer, got {block_size!r}")
    if size % block_size:
        raise ValueError(
            f"{where}block_size {block_size} does not divide the matrix size out*in = "
            f"{' * '.join(map(str, shape))} = {size}"
        )
    return size // block_size


def to_blocks(W, block_size: int, *, path: Path | None = None):
    """Row-major blocks of ``W``: shape ``(n_blocks, B)`` with ``n_blocks = out*in / B``."""
    n_blocks = check_block_size(W.shape, block_size, path=path)
    return W.reshape(n_blocks, block_size)


def from_blocks(blocks, shape: Sequence[int]):
    """Inverse of :func:`to_blocks`: ``(n_blocks, B)`` back to a matrix of ``shape``."""
    shape = tuple(int(s) for s in shape)
    if int(np.prod(blocks.shape)) != int(np.prod(shape)):
        raise ValueError(f"from_blocks: blocks of shape {tuple(blocks.shape)} cannot form a matrix {shape}")
    return blocks.reshape(shape)


def touched_blocks(mask, block_size: int, *, path: Path | None = None) -> np.ndarray:
    """Sorted indices of the blocks that hold at least one masked entry of ``mask`` (out, in)."""
    mask_blocks = np.asarray(to_blocks(np.asarray(mask, dtype=bool), block_size, path=path))
    return np.flatnonzero(mask_blocks.any(axis=1))


def example_matrix_gradients(loss_fn, params: PyTree, target_paths: Sequence[Path], batch: PyTree) -> list:
    """Per-example gradients of ``loss_fn`` with respect to the target matrices, for use inside ``jit``.

    ``loss_fn(params, example)`` is a per-example loss; ``batch`` has a leading example axis of size ``b``.
    Returns a list, one entry per path, of arrays ``(b, out, in)`` in the matrix orientation ``W = kernel.T``.
    Only the target kernels are differentiated (``vmap(grad)`` over the examples), so no gradient is formed
    for the rest of the model.
    """
    kernels = [get_kernel(params, path) for path in target_paths]

    def example_loss(target_kernels, example):
        model = params
        for path, kernel in zip(target_paths, target_kernels):
            model = replace_leaf(model, path, kernel)
        return loss_fn(model, example)

    import jax
    import jax.numpy as jnp

    grads = jax.vmap(jax.grad(example_loss), in_axes=(None, 0))(kernels, batch)
    return [jnp.swapaxes(g, 1, 2) for g in grads]
