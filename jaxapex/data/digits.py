"""Offline vision data: scikit-learn's bundled 8×8 handwritten digits and a sketch-like shifted domain.

This mirrors the paper's ImageNet → ImageNet-Sketch setting at toy scale: the provider's global model sees
natural digits; the client personalizes on *sketches* (edge strokes) of a few classes; the provider asks to
forget one class. The images are disjointly partitioned between the global pool and the personal pool so
no personal image was ever seen by the global model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

NUM_CLASSES = 10
IMAGE_SIZE = 8

_SOBEL_X = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float32)
_SOBEL_Y = _SOBEL_X.T


@dataclasses.dataclass(frozen=True)
class ImageSet:
    """``images`` float32 (n, H, W, C) in [0, 1]; ``labels`` int32 (n,)."""

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"ImageSet wants images (n, H, W, C) and labels (n,), got {self.images.shape} and {self.labels.shape}"
            )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def as_batch(self) -> dict[str, np.ndarray]:
        return {"image": self.images, "label": self.labels}

    def where(self, keep: np.ndarray) -> ImageSet:
        return ImageSet(self.images[keep], self.labels[keep])

    def of_classes(self, classes: Sequence[int]) -> ImageSet:
        return self.where(np.isin(self.labels, np.asarray(classes)))


def _filter3x3(images: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Same-size 2-D correlation with zero padding. ``images``: (n, H, W)."""
    n, h, w = images.shape
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1)))
    out = np.zeros_like(images)
    for dy in range(3):
        for dx in range(3):
            out += kernel[dy, dx] * padded[:, dy : dy + h, dx : dx + w]
    return out


def sketch_transform(
    images: np.ndarray, *, threshold: float = 0.5, ink_level: float = 0.2, dilation: float = 0.0
) -> np.ndarray:
    """Deterministic edge-stroke rendering of grayscale images, (n, H, W) in [0, 1] → same shape.

    Sobel gradient magnitude, normalized per image, thresholded into binary strokes and kept only on the
    inked pixels (value > ``ink_level``), so the lines trace the boundaries of the pen strokes the way a
    pencil sketch outlines shapes; ``dilation`` > 0 additionally thickens them by that fraction of the
    4-neighbour maximum. Class identity survives, pixel statistics do not: a model trained on natural
    digits loses about half its accuracy on these, like ImageNet models on ImageNet-Sketch.
    """
    if images.ndim != 3:
        raise ValueError(f"sketch_transform expects (n, H, W) grayscale images, got {images.shape}")
    images = np.asarray(images, dtype=np.float32)
    magnitude = np.hypot(_filter3x3(images, _SOBEL_X), _filter3x3(images, _SOBEL_Y))
    peak = magnitude.reshape(len(images), -1).max(axis=1)[:, None, None]
    strokes = ((magnitude / np.maximum(peak, 1e-6) >= threshold) & (images > ink_level)).astype(np.float32)
    if dilation:
        padded = np.pad(strokes, ((0, 0), (1, 1), (1, 1)))
        neighbours = np.maximum.reduce(
            [padded[:, :-2, 1:-1], padded[:, 2:, 1:-1], padded[:, 1:-1, :-2], padded[:, 1:-1, 2:]]
        )
        strokes = np.maximum(strokes, dilation * neighbours)
    return strokes


def load_digit_images() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 scikit-learn digits: images float32 (n, 8, 8) in [0, 1], labels int32 (n,)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.images / 16.0).astype(np.float32), digits.target.astype(np.int32)


@dataclasses.dataclass(frozen=True)
class DigitsTaskData:
    """The vision unlearning scenario.

    global_train / global_test: natural digits of all classes (the provider's data).
    forget_train / forget_test: the forget class within global_train / global_test.
    retain_train / retain_test: the other classes within global_train / global_test.
    personal_train / personal_test: sketches of ``personal_classes`` from a disjoint image pool.
    """

    global_train: ImageSet
    global_test: ImageSet
    forget_train: ImageSet
    forget_test: ImageSet
    retain_train: ImageSet
    retain_test: ImageSet
    personal_train: ImageSet
    personal_test: ImageSet
    forget_class: int
    personal_classes: tuple[int, ...]

    def sizes(self) -> dict[str, int]:
        return {f.name: len(getattr(self, f.name)) for f in dataclasses.fields(self) if f.type == "ImageSet"}


def _stratified_split(labels: np.ndarray, fractions: Sequence[float], rng: np.random.Generator) -> list[np.ndarray]:
    """Index arrays partitioning each class by ``fractions`` (summing to 1)."""
    if abs(sum(fractions) - 1.0) > 1e-9 or min(fractions) <= 0:
        raise ValueError(f"split fractions must be positive and sum to 1, got {fractions}")
    parts: list[list[np.ndarray]] = [[] for _ in fractions]
    cuts = np.cumsum(fractions)[:-1]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        for part, chunk in zip(parts, np.split(idx, np.round(cuts * len(idx)).astype(int))):
            part.append(chunk)
    return [np.sort(np.concatenate(p)) for p in parts]


def digits_task(
    *,
    seed: int = 0,
    forget_class: int = 3,
    personal_classes: Sequence[int] = (0, 1, 2, 4, 5, 6, 7, 8, 9),
    split: tuple[float, float, float, float] = (0.45, 0.2, 0.2, 0.15),
    sketch_threshold: float = 0.5,
) -> DigitsTaskData:
    """Build the scenario deterministically from ``seed``.

    ``split`` = fractions of each class going to (global train, global test, personal train, personal test).
    """
    if not 0 <= forget_class < NUM_CLASSES:
        raise ValueError(f"forget_class must be in [0, {NUM_CLASSES}), got {forget_class}")
    personal_classes = tuple(sorted(set(int(c) for c in personal_classes)))
    if not personal_classes or not all(0 <= c < NUM_CLASSES for c in personal_classes):
        raise ValueError(f"personal_classes must be non-empty classes in [0, {NUM_CLASSES}), got {personal_classes}")
    images, labels = load_digit_images()
    rng = np.random.default_rng(seed)
    g_train, g_test, p_train, p_test = _stratified_split(labels, split, rng)

    def natural(idx: np.ndarray) -> ImageSet:
        return ImageSet(images[idx, :, :, None], labels[idx])

    def sketch(idx: np.ndarray) -> ImageSet:
        idx = idx[np.isin(labels[idx], personal_classes)]
        return ImageSet(sketch_transform(images[idx], threshold=sketch_threshold)[:, :, :, None], labels[idx])

    global_train, global_test = natural(g_train), natural(g_test)
    is_forget_train, is_forget_test = global_train.labels == forget_class, global_test.labels == forget_class
    return DigitsTaskData(
        global_train=global_train,
        global_test=global_test,
        forget_train=global_train.where(is_forget_train),
        forget_test=global_test.where(is_forget_test),
        retain_train=global_train.where(~is_forget_train),
        retain_test=global_test.where(~is_forget_test),
        personal_train=sketch(p_train),
        personal_test=sketch(p_test),
        forget_class=forget_class,
        personal_classes=personal_classes,
    )


def ascii_art(image: np.ndarray) -> str:
    """A (H, W[, 1]) image in [0, 1] as text, for quick looks in a terminal."""
    shades = " .:-=+*#%@"
    image = np.asarray(image).reshape(image.shape[0], image.shape[1])
    return "\n".join(
        "".join(shades[min(int(v * (len(shades) - 1) + 0.5), len(shades) - 1)] * 2 for v in row) for row in image
    )
