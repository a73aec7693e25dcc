"""Generic loaders for local data sets: an image folder (ImageNet / ImageNet-Sketch layout) and a corpus
of text files (e.g. a CodeParrot dump), producing the arrays the rest of jaxapex consumes.

Image folder layout::

    ROOT/<class name>/<image files>     (.jpg .jpeg .png .bmp .gif .webp, any case)

Classes are the sorted sub-directory names (or ``class_names`` in that order); images are resized to a
square, converted to RGB or grayscale, scaled to [0, 1] and optionally normalized per channel.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Sequence

import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def read_image(path: str, *, image_size: int, channels: int = 3) -> np.ndarray:
    """One image as float32 (image_size, image_size, channels) in [0, 1] (bilinear resize of the whole
    image — a center crop is the caller's choice)."""
    from PIL import Image

    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    try:
        with Image.open(path) as image:
            image = image.convert("L" if channels == 1 else "RGB").resize((image_size, image_size), Image.BILINEAR)
            array = np.asarray(image, dtype=np.float32) / 255.0
    except OSError as err:
        raise ValueError(f"cannot read image {path}: {err}") from None
    return array[..., None] if channels == 1 else array


def load_image_folder(
    root: str | os.PathLike,
    *,
    image_size: int,
    channels: int = 3,
    class_names: Sequence[str] | None = None,
    max_per_class: int | None = None,
    normalize: tuple[Sequence[float], Sequence[float]] | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """``(images float32 (n, S, S, C), labels int32 (n,), class_names)`` from ``ROOT/<class>/<file>``.

    ``class_names`` fixes the label order (e.g. the 1000 ImageNet synsets so labels match a pretrained
    head); missing class directories are an error. ``max_per_class`` takes a seeded random subset of each
    class. ``normalize=(mean, std)`` standardizes channels, e.g. ``(IMAGENET_MEAN, IMAGENET_STD)``.
    """
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"image folder not found: {root}")
    present = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    names = tuple(present if class_names is None else class_names)
    missing = [n for n in names if n not in present]
    if missing:
        raise FileNotFoundError(f"{root}: no directory for class(es) {missing[:8]}")
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label, name in enumerate(names):
        files = sorted(f for f in glob.glob(os.path.join(root, name, "*")) if f.lower().endswith(IMAGE_EXTENSIONS))
        if max_per_class is not None and len(files) > max_per_class:
            files = [files[i] for i in np.sort(rng.choice(len(files), max_per_class, replace=False))]
        for path in files:
            images.append(read_image(path, image_size=image_size, channels=channels))
            labels.append(label)
    if not images:
        raise ValueError(f"{root}: no images with extensions {IMAGE_EXTENSIONS} in the class directories")
    stacked = np.stack(images)
    if normalize is not None:
        mean, std = (np.asarray(v, np.float32).reshape(1, 1, 1, -1) for v in normalize)
        stacked = (stacked - mean) / std
    return stacked, np.asarray(labels, np.int32), names


def list_text_files(
    root: str | os.PathLike, *, suffixes: Sequence[str] = (".py",), max_files: int | None = None, seed: int = 0
) -> list[str]:
    """Sorted files under ``root`` with one of ``suffixes``; a seeded random subset when ``max_files``."""
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"text corpus directory not found: {root}")
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        files.extend(os.path.join(dirpath, f) for f in sorted(filenames) if f.endswith(tuple(suffixes)))
    if max_files is not None and len(files) > max_files:
        files = [files[i] for i in np.sort(np.random.default_rng(seed).choice(len(files), max_files, replace=False))]
    return files


def byte_windows(texts: Iterable[bytes | str], *, window: int, stride: int | None = None) -> np.ndarray:
    """Byte-level token windows int32 (n, window) cut from each text separately (no window spans two
    texts); ``stride`` defaults to ``window`` (non-overlapping). Texts shorter than a window are skipped."""
    if window < 2:
        raise ValueError(f"window must be >= 2, got {window}")
    stride = window if stride is None else stride
    if stride <= 0:
        raise ValueError(f"stride must be positive, got {stride}")
    out = []
    for text in texts:
        data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        array = np.frombuffer(data, dtype=np.uint8)
        starts = range(0, len(array) - window + 1, stride)
        out.extend(array[s : s + window] for s in starts)
    if not out:
        return np.zeros((0, window), np.int32)
    return np.stack(out).astype(np.int32)


def load_text_windows(
    root: str | os.PathLike,
    *,
    window: int,
    suffixes: Sequence[str] = (".py",),
    max_files: int | None = None,
    max_bytes_per_file: int = 1 << 20,
    seed: int = 0,
) -> np.ndarray:
    """Byte windows (n, window) from the text files under ``root`` (binary files, with NUL bytes, skipped)."""
    texts = []
    for path in list_text_files(root, suffixes=suffixes, max_files=max_files, seed=seed):
        with open(path, "rb") as f:
            data = f.read(max_bytes_per_file)
        if b"\x00" not in data:
            texts.append(data)
    return byte_windows(texts, window=window)
