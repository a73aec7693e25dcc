"""Model checkpoints: one directory with ``params.safetensors`` (flattened path names) and ``config.json``.

Layout::

    CHECKPOINT/
      config.json          {"format": "jaxapex-checkpoint", "version": 1, "model": {"kind": ..., ...},
                            "metadata": {...}, "tensors": {name: [shape, dtype]}}
      params.safetensors   tensors named by their path in the variables dict, "/"-joined
                           (e.g. "params/block_0/mlp/fc1/kernel")

Writes are atomic: the directory is assembled under a temporary name next to the destination and renamed
into place, so a crash never leaves a half-written checkpoint. Loading checks the file list, the format
version, and that every tensor matches the config's model (names and shapes), naming what differs.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from typing import Any

import numpy as np

FORMAT = "jaxapex-checkpoint"
VERSION = 1
CONFIG_FILE = "config.json"
PARAMS_FILE = "params.safetensors"
SEPARATOR = "/"


class CheckpointError(ValueError):
    """A checkpoint directory is missing, malformed, or does not match its model config."""


def flatten_params(params: Mapping) -> dict[str, np.ndarray]:
    """``{"params": {"block_0": {...}}}`` → ``{"params/block_0/...": array}``."""
    import jax  # here, not at module level: reading a client's state needs no JAX

    flat = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        keys = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
        bad = [k for k in keys if SEPARATOR in k]
        if bad:
            raise CheckpointError(f"parameter key(s) {bad} contain {SEPARATOR!r} and cannot be flattened")
        flat[SEPARATOR.join(keys)] = np.asarray(leaf)
    return flat


def unflatten_params(flat: Mapping[str, np.ndarray]) -> dict:
    tree: dict = {}
    for name, array in flat.items():
        node = tree
        *parents, leaf = name.split(SEPARATOR)
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = array
    return tree


def save_checkpoint(
    directory: str | os.PathLike,
    params: Mapping,
    config,
    *,
    metadata: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> str:
    """Write ``params`` (variables dict) and ``config`` (ViTConfig / OPTConfig) to ``directory``."""
    from safetensors.numpy import save_file

    from jaxapex.models import config_to_dict

    directory = os.path.abspath(os.fspath(directory))
    if os.path.exists(directory) and not overwrite:
        raise FileExistsError(f"checkpoint directory already exists: {directory} (pass overwrite=True)")
    flat = flatten_params(params)
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "model": config_to_dict(config),
        "metadata": dict(metadata or {}),
        "tensors": {name: [list(a.shape), str(a.dtype)] for name, a in sorted(flat.items())},
    }
    parent = os.path.dirname(directory)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".ckpt-", dir=parent)
    try:
        save_file({k: np.ascontiguousarray(v) for k, v in flat.items()}, os.path.join(staging, PARAMS_FILE))
        with open(os.path.join(staging, CONFIG_FILE), "w") as f:
            json.dump(manifest, f, indent=2, sort_keys=True)
        if os.path.exists(directory):  # overwrite: move the old one aside first so the swap is quick
            old = tempfile.mkdtemp(prefix=".ckpt-old-", dir=parent)
            os.replace(directory, os.path.join(old, "previous"))
            os.replace(staging, directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


def load_checkpoint(directory: str | os.PathLike) -> tuple[dict, Any, dict]:
    """``(params, config, metadata)`` from a checkpoint directory, validated against the model."""
    from safetensors.numpy import load_file

    directory = os.fspath(directory)
    config_path, params_path = os.path.join(directory, CONFIG_FILE), os.path.join(directory, PARAMS_FILE)
    for path in (config_path, params_path):
        if not os.path.isfile(path):
            raise CheckpointError(f"checkpoint {directory}: missing file {os.path.basename(path)}")
    try:
        with open(config_path) as f:
            manifest = json.load(f)
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{config_path}: not valid JSON ({err})") from None
    if manifest.get("format") != FORMAT:
        raise CheckpointError(f"{config_path}: field 'format' is {manifest.get('format')!r}, expected {FORMAT!r}")
    if manifest.get("version") != VERSION:
        raise CheckpointError(
            f"{config_path}: field 'version' is {manifest.get('version')!r}, this code reads {VERSION}"
        )
    import jax

    from jaxapex.models import build_model, config_from_dict

    try:
        config = config_from_dict(manifest["model"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{config_path}: field 'model' is invalid: {err}") from None
    flat = load_file(params_path)
    model = build_model(config)
    reference = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), model.dummy_input()))
    expected = {name: tuple(a.shape) for name, a in flatten_params_shapes(reference).items()}
    got = {name: tuple(a.shape) for name, a in flat.items()}
    missing, unexpected = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
    wrong = sorted(f"{n}: {got[n]} != {expected[n]}" for n in set(expected) & set(got) if got[n] != expected[n])
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{params_path} does not match the {manifest['model'].get('kind')} config: "
            f"missing {missing[:8]}, unexpected {unexpected[:8]}, wrong shapes {wrong[:8]}"
        )
    return unflatten_params(flat), config, dict(manifest.get("metadata", {}))


def flatten_params_shapes(tree: Mapping) -> dict[str, Any]:
    """Like :func:`flatten_params` for a tree of ``ShapeDtypeStruct`` (no arrays materialized)."""
    import jax

    return {
        SEPARATOR.join(str(getattr(k, "key", k)) for k in path): leaf
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
    }
