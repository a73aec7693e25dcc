"""Data parallelism over a 1-D device mesh, and streaming of batches.

Every statistic in this package is a *weighted sum over examples* (gradient sums, squared-gradient sums,
Fisher outer products, activation sums). So a batch is split along its leading axis over a 1-D mesh of all
devices, each device sums its share, and XLA inserts the cross-device reduction: the result equals the
single-device one up to float summation order.

A batch whose size is not a multiple of the device count (or of the fixed micro-batch size) is *padded* by
repeating its last example, and every example carries a weight: 1 for real, 0 for padding. Repeating a real
example (rather than zeros) keeps padded rows finite for any model, so ``0 * value`` stays exactly 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

BATCH_AXIS = "batch"
PyTree = Any


def batch_mesh(devices: list | None = None) -> Mesh:
    """A 1-D mesh named ``batch`` over ``devices`` (default: all devices of the default backend)."""
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("batch_mesh needs at least one device")
    return Mesh(np.array(devices), (BATCH_AXIS,))


def batch_size(batch: PyTree) -> int:
    """Size of the leading (example) axis shared by every leaf; ``ValueError`` if leaves disagree."""
    leaves = jax.tree_util.tree_leaves_with_path(batch)
    if not leaves:
        raise ValueError("a batch must hold at least one array")
    sizes = {}
    for key_path, leaf in leaves:
        shape = np.shape(leaf)
        if not shape:
            raise ValueError(f"batch leaf {jax.tree_util.keystr(key_path)!r} is a scalar; it needs a batch axis")
        sizes[jax.tree_util.keystr(key_path)] = shape[0]
    if len(set(sizes.values())) != 1:
        raise ValueError(f"batch leaves disagree on the batch size: {sizes}")
    return next(iter(sizes.values()))


def pad_batch(batch: PyTree, size: int) -> tuple[PyTree, np.ndarray]:
    """Pad ``batch`` to ``size`` examples by repeating its last one; returns ``(padded, weights (size,))``.

    ``weights`` is float32: 1 for the real examples, 0 for the padding.
    """
    n = batch_size(batch)
    if size < n:
        raise ValueError(f"pad_batch: cannot pad a batch of {n} examples down to {size}")
    weights = np.zeros((size,), np.float32)
    weights[:n] = 1.0
    if size == n:
        return batch, weights

    def pad(leaf):
        leaf = np.asarray(leaf)
        tail = np.repeat(leaf[-1:], size - n, axis=0)
        return np.concatenate([leaf, tail], axis=0)

    return jax.tree_util.tree_map(pad, batch), weights


def slice_batch(batch: PyTree, start: int, stop: int) -> PyTree:
    """Examples ``[start, stop)`` of every leaf."""
    return jax.tree_util.tree_map(lambda leaf: leaf[start:stop], batch)


def limit_examples(batches: Iterable[PyTree], max_examples: int | None) -> Iterator[PyTree]:
    """Yield batches until ``max_examples`` examples have been seen, cutting the last batch short."""
    if max_examples is not None and max_examples <= 0:
        raise ValueError(f"max_examples must be positive or None, got {max_examples}")
    seen = 0
    for batch in batches:
        n = batch_size(batch)
        if max_examples is not None and seen + n > max_examples:
            batch, n = slice_batch(batch, 0, max_examples - seen), max_examples - seen
        if n:
            yield batch
        seen += n
        if max_examples is not None and seen >= max_examples:
            return


def padded_size(n: int, *, n_devices: int, microbatch_size: int | None = None) -> int:
    """Size a host batch of ``n`` examples is padded to: the micro-batch size (if set) or ``n``, rounded up
    to a multiple of the device count. A fixed micro-batch size keeps one compiled step for all batches."""
    target = n if microbatch_size is None else microbatch_size
    return -(-target // n_devices) * n_devices


def device_batches(
    batches: Iterable[PyTree],
    mesh: Mesh,
    *,
    max_examples: int | None = None,
    microbatch_size: int | None = None,
) -> Iterator[tuple[PyTree, jax.Array, int]]:
    """Stream ``(sharded_batch, weights, n_real)`` over ``mesh``: batches cut to ``max_examples``, split into
    micro-batches of at most ``microbatch_size``, padded to a multiple of the device count and placed with the
    batch axis sharded. ``weights`` (padded size,) is 1 on real examples and 0 on padding."""
    if microbatch_size is not None and microbatch_size <= 0:
        raise ValueError(f"microbatch_size must be positive or None, got {microbatch_size}")
    n_devices = mesh.devices.size
    sharding = NamedSharding(mesh, P(BATCH_AXIS))
    for batch in limit_examples(batches, max_examples):
        n = batch_size(batch)
        step = n if microbatch_size is None else microbatch_size
        for start in range(0, n, step):
            piece = slice_batch(batch, start, min(n, start + step)) if step < n else batch
            n_real = batch_size(piece)
            padded, weights = pad_batch(
                piece, padded_size(n_real, n_devices=n_devices, microbatch_size=microbatch_size)
            )
            yield jax.device_put(padded, sharding), jax.device_put(weights, sharding), n_real


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
    """Place every leaf of ``tree`` on all devices of ``mesh`` (fully replicated)."""
    return jax.device_put(tree, NamedSharding(mesh, P()))


def on_one_device(tree: PyTree, device=None) -> PyTree:
    """Every leaf of ``tree`` committed to one ``device`` (default: the first device of the default backend).

    For the per-block linear algebra (OBS solves, Fisher inverses): its blocks are independent and small, so
    it gains nothing from the batch mesh, and a program spread over several CPU devices runs one batched
    LAPACK call per device at the same time. jaxlib's CPU LAPACK kernels split a batch into tasks on the
    shared intra-op thread pool and block their pool thread until those tasks finish; with as many
    concurrent calls as pool threads (two devices on a two-core host) every thread waits and the program
    never finishes. A mesh-replicated input would also make every device redo the whole solve.
    """
    return jax.device_put(tree, jax.devices()[0] if device is None else device)


def reiterable(batches: Iterable[PyTree], *, passes: int, max_examples: int | None = None) -> Iterable[PyTree]:
    """Something that can be iterated ``passes`` times. Lists, tuples and other re-iterable collections are
    returned as they are; a one-shot iterator (a generator) is buffered into a list of its batches (inputs
    only, cut to ``max_examples``) when more than one pass is needed."""
    if passes <= 1 or iter(batches) is not batches:
        return batches
    return list(limit_examples(batches, max_examples))


def weighted_sum(values: jax.Array, weights: jax.Array) -> jax.Array:
    """``sum_i weights[i] * values[i]`` over the leading axis (padding rows carry weight 0)."""
    return jnp.tensordot(weights.astype(values.dtype), values, axes=1)
