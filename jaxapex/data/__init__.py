"""Offline data: digits (+ sketch domain), MNIST / Fashion-MNIST and font-rendered characters (the real-data
vision task), a code corpus from the machine's own source files, and generic loaders for image folders and
text files. Datasets are dicts of equally long NumPy arrays. ``jaxapex data status`` lists the sources."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from jaxapex.data.characters import CharactersDataConfig, CharactersTaskData, characters_task
from jaxapex.data.digits import DigitsTaskData, ImageSet, digits_task, load_digit_images, sketch_transform
from jaxapex.data.mnist import load_fashion_mnist, load_mnist, read_idx
from jaxapex.data.sources import MissingDataSource


def as_batches(data: Mapping[str, np.ndarray], batch_size: int) -> list[dict[str, np.ndarray]]:
    """A dataset cut into consecutive batches (the last may be smaller), in order — a re-iterable list."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    sizes = {k: len(v) for k, v in data.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"dataset arrays differ in length: {sizes}")
    n = next(iter(sizes.values()))
    return [{k: v[i : i + batch_size] for k, v in data.items()} for i in range(0, n, batch_size)]


def take(data: Mapping[str, np.ndarray], n: int | None, *, seed: int = 0) -> dict[str, np.ndarray]:
    """A seeded random subset of ``n`` examples (all of them, in order, when ``n`` is None or too large)."""
    size = len(next(iter(data.values())))
    if n is None or n >= size:
        return dict(data)
    idx = np.sort(np.random.default_rng(seed).choice(size, n, replace=False))
    return {k: v[idx] for k, v in data.items()}


__all__ = [
    "CharactersDataConfig",
    "CharactersTaskData",
    "DigitsTaskData",
    "MissingDataSource",
    "ImageSet",
    "as_batches",
    "characters_task",
    "digits_task",
    "load_digit_images",
    "load_fashion_mnist",
    "load_mnist",
    "read_idx",
    "sketch_transform",
    "take",
]
