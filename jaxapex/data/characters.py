"""The real-data vision scenario: handwritten digits (MNIST) + printed capitals for the provider's global
model, handwriting / script fonts for the client — the offline analogue of ImageNet → ImageNet-Sketch.

Classes: the 10 MNIST digits, then the capitals of :data:`LETTERS` (those that cannot be read as a digit:
no B, G, I, O, Q, S, Z), rendered from printed faces. The client personalizes on renderings of its classes
in handwriting / script faces (a disjoint set of fonts: a real style shift); the provider asks to forget a
class (or several: a superclass), whose global-domain images form the forget set.

MNIST is CC BY-SA 3.0 (Y. LeCun, C. Cortes, C. J. C. Burges). Font licences: each Debian font package's own;
the Hershey fonts acknowledgement is in :mod:`jaxapex.data.fonts`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jaxapex.data.digits import ImageSet
from jaxapex.data.fonts import ALPHANUMERIC, RenderConfig, font_faces, render_characters
from jaxapex.data.mnist import load_mnist

LETTERS = "ACDEFHJKLMNPRTUVWXY"
CLASS_NAMES = tuple("0123456789") + tuple(LETTERS)
NUM_CLASSES = len(CLASS_NAMES)
DEFAULT_CACHE = Path("runs/cache/characters")
SOURCES = ("mnist", "printed-fonts", "handwriting-fonts")  # the data sources this task reads


def missing_sources() -> tuple[str, ...]:
    """The sources of :data:`SOURCES` not installed here (``jaxapex data status`` says how to install them)."""
    from jaxapex.data import sources

    return tuple(name for name in SOURCES if sources.source(name).path() is None)


@dataclasses.dataclass(frozen=True)
class CharactersTaskData:
    """global_*: MNIST digits + printed capitals (all classes); forget_* / retain_*: the forget classes /
    the others within them; personal_*: handwriting-font renderings of ``personal_classes``."""

    global_train: ImageSet
    global_test: ImageSet
    forget_train: ImageSet
    forget_test: ImageSet
    retain_train: ImageSet
    retain_test: ImageSet
    personal_train: ImageSet
    personal_test: ImageSet
    forget_classes: tuple[int, ...]
    personal_classes: tuple[int, ...]

    def sizes(self) -> dict[str, int]:
        return {f.name: len(getattr(self, f.name)) for f in dataclasses.fields(self) if f.type == "ImageSet"}


@dataclasses.dataclass(frozen=True, kw_only=True)
class CharactersDataConfig:
    """How much to render (per class) and how much MNIST to use (None: all of it)."""

    forget_classes: tuple[int, ...] = (3,)
    personal_classes: tuple[int, ...] | None = None  # None: every class but the forget classes
    printed_train_per_class: int = 1000
    printed_test_per_class: int = 200
    personal_train_per_class: int = 60
    personal_test_per_class: int = 30
    mnist_train: int | None = None
    mnist_test: int | None = None
    render: RenderConfig = RenderConfig()

    def __post_init__(self) -> None:
        for field in ("forget_classes", "personal_classes"):
            classes = getattr(self, field)
            if classes is not None and (not classes or not all(0 <= c < NUM_CLASSES for c in classes)):
                raise ValueError(f"CharactersDataConfig.{field} must be non-empty classes in [0, {NUM_CLASSES})")
        if self.personal_classes is not None and set(self.personal_classes) & set(self.forget_classes):
            raise ValueError("CharactersDataConfig: the client's classes must not include a forget class")

    def client_classes(self) -> tuple[int, ...]:
        if self.personal_classes is not None:
            return tuple(sorted(self.personal_classes))
        return tuple(c for c in range(NUM_CLASSES) if c not in self.forget_classes)


def class_label(name: str) -> int:
    """The label of a class name (``"3"``, ``"E"``)."""
    try:
        return CLASS_NAMES.index(name)
    except ValueError:
        raise ValueError(f"unknown class {name!r}; classes are {''.join(CLASS_NAMES)}") from None


def _rendered(
    style: str, classes: Sequence[int], per_class: int, *, seed: int, render: RenderConfig, cache_dir: Path | None
) -> tuple[np.ndarray, np.ndarray]:
    """Renderings (uint8 (n, S, S), labels) of ``classes`` in ``style`` faces; cached on disk by content key."""
    faces = font_faces(style, ALPHANUMERIC)
    chars = "".join(CLASS_NAMES[c] for c in classes)
    key_data = {
        "style": style,
        "chars": chars,
        "per_class": per_class,
        "seed": seed,
        "render": dataclasses.asdict(render),
        "faces": [f.name for f in faces],
    }
    key = hashlib.sha256(json.dumps(key_data, sort_keys=True).encode()).hexdigest()[:16]
    path = None if cache_dir is None else Path(cache_dir) / f"{style}-{key}.npz"
    if path is not None and path.is_file():
        with np.load(path) as cached:
            return cached["images"], cached["labels"]
    images, labels, _ = render_characters(
        faces, chars, list(classes), per_class, seed=seed, config=render, progress=True
    )
    images = np.round(images * 255).astype(np.uint8)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp.npz")
        np.savez_compressed(tmp, images=images, labels=labels)
        os.replace(tmp, path)
    return images, labels


def _image_set(images: np.ndarray, labels: np.ndarray) -> ImageSet:
    return ImageSet((images.astype(np.float32) / 255.0)[..., None], labels.astype(np.int32))


def characters_task(
    config: CharactersDataConfig = CharactersDataConfig(), *, seed: int = 0, cache_dir: Path | None = DEFAULT_CACHE
) -> CharactersTaskData:
    """The scenario for ``seed``: MNIST's own train/test split (subsampled by ``seed`` when limited), and
    fresh renderings per seed (printed train and test, handwriting train and test from separate streams)."""
    rng = np.random.default_rng(seed)
    letters = list(range(10, NUM_CLASSES))
    streams = rng.integers(2**31, size=4)

    def mnist(split: str, limit: int | None) -> tuple[np.ndarray, np.ndarray]:
        images, labels = load_mnist(split)
        if limit is not None and limit < len(labels):
            keep = np.sort(rng.choice(len(labels), limit, replace=False))
            images, labels = images[keep], labels[keep]
        return images, labels.astype(np.int32)

    def printed(per_class: int, stream: int) -> tuple[np.ndarray, np.ndarray]:
        return _rendered("printed", letters, per_class, seed=int(stream), render=config.render, cache_dir=cache_dir)

    parts = {
        "train": (mnist("train", config.mnist_train), printed(config.printed_train_per_class, streams[0])),
        "test": (mnist("test", config.mnist_test), printed(config.printed_test_per_class, streams[1])),
    }
    global_sets = {
        split: _image_set(np.concatenate([d[0], p[0]]), np.concatenate([d[1], p[1]])) for split, (d, p) in parts.items()
    }
    client = config.client_classes()
    personal = {
        split: _image_set(
            *_rendered("handwriting", client, per_class, seed=int(stream), render=config.render, cache_dir=cache_dir)
        )
        for split, per_class, stream in (
            ("train", config.personal_train_per_class, streams[2]),
            ("test", config.personal_test_per_class, streams[3]),
        )
    }
    forget = {split: np.isin(s.labels, config.forget_classes) for split, s in global_sets.items()}
    return CharactersTaskData(
        global_train=global_sets["train"],
        global_test=global_sets["test"],
        forget_train=global_sets["train"].where(forget["train"]),
        forget_test=global_sets["test"].where(forget["test"]),
        retain_train=global_sets["train"].where(~forget["train"]),
        retain_test=global_sets["test"].where(~forget["test"]),
        personal_train=personal["train"],
        personal_test=personal["test"],
        forget_classes=tuple(sorted(config.forget_classes)),
        personal_classes=client,
    )
