"""Training: batching, global fit, layer-wise learning-rate decay, frozen blocks, LoRA; checkpoints."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest

from jaxapex.checkpoints import CheckpointError, flatten_params, load_checkpoint, save_checkpoint
from jaxapex.models import OPT, OPTConfig, ViT, ViTConfig, batch_loss_fn, init_params
from jaxapex.train import (
    PersonalizeConfig,
    TrainConfig,
    fit,
    iterate_batches,
    layer_depths,
    lora_init,
    lora_merge,
    lora_target_paths,
    personalize,
)

VIT = ViTConfig(image_size=4, patch_size=2, channels=1, dim=8, depth=3, heads=2, mlp_dim=16, num_classes=3)
LM = OPTConfig(vocab_size=16, max_positions=8, dim=8, layers=2, heads=2, ffn_dim=16)


def _vision_data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n).astype(np.int32)
    images = rng.normal(0, 0.3, (n, 4, 4, 1)).astype(np.float32)
    images[np.arange(n), labels, 0, 0] += 2.0  # a learnable signal: the class lights up one pixel
    return {"image": images, "label": labels}


def _leaf(params, *keys):
    for k in keys:
        params = params[k]
    return np.asarray(params)


def test_iterate_batches_is_a_seeded_epoch_permutation():
    data = {"x": np.arange(10)}
    a = iterate_batches(data, 4, seed=3)
    first_epoch = np.concatenate([next(a)["x"] for _ in range(2)])  # drop-last: 2 batches of 4
    assert len(set(first_epoch)) == 8
    b = iterate_batches(data, 4, seed=3)
    np.testing.assert_array_equal(next(b)["x"], first_epoch[:4])
    assert len(next(iterate_batches(data, 64, seed=0))["x"]) == 10  # batch larger than the set: all of it
    with pytest.raises(ValueError, match="differ in length"):
        next(iterate_batches({"x": np.arange(3), "y": np.arange(2)}, 2, seed=0))


def test_config_errors_name_the_values():
    with pytest.raises(ValueError, match="steps=0"):
        TrainConfig(steps=0, batch_size=2, learning_rate=0.1)
    with pytest.raises(ValueError, match=r"warmup_steps=5 must be in \[0, steps=5\)"):
        TrainConfig(steps=5, batch_size=2, learning_rate=0.1, warmup_steps=5)
    train = TrainConfig(steps=5, batch_size=2, learning_rate=0.1)
    with pytest.raises(ValueError, match="layer_decay must be in"):
        PersonalizeConfig(train=train, layer_decay=1.5)
    with pytest.raises(ValueError, match="lora_targets"):
        PersonalizeConfig(train=train, lora_rank=2, lora_targets=("head",))


def test_fit_learns_and_is_deterministic():
    model = ViT(VIT)
    data = _vision_data()
    cfg = TrainConfig(steps=80, batch_size=16, learning_rate=1e-2, seed=1)
    params0 = init_params(model, 0)
    loss = batch_loss_fn(model)
    trained, history = fit(loss, params0, data, cfg)
    assert float(loss(trained, data)) < 0.5 * float(loss(params0, data))
    again, _ = fit(loss, params0, data, cfg)
    jax.tree.map(np.testing.assert_array_equal, trained, again)


def test_fit_passes_frozen_arrays_as_arguments_not_constants():
    model = ViT(VIT)
    data = _vision_data()
    cfg = TrainConfig(steps=5, batch_size=16, learning_rate=1e-2, seed=1)
    base = init_params(model, 0)
    loss = batch_loss_fn(model)
    shift = jax.tree.map(np.zeros_like, base)

    def shifted(delta, batch, frozen):  # train a shift of frozen weights, as LoRA trains adapters
        return loss(jax.tree.map(lambda w, d: w + d, frozen, delta), batch)

    via_argument, _ = fit(shifted, shift, data, cfg, frozen=base)
    via_closure, _ = fit(lambda delta, batch: shifted(delta, batch, base), shift, data, cfg)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), via_argument, via_closure)
    moved, _ = fit(shifted, shift, data, cfg, frozen=jax.tree.map(lambda w: w * 0.5, base))
    assert not all(jax.tree.leaves(jax.tree.map(np.array_equal, moved, via_argument)))  # frozen is read per call


def test_layer_depths():
    depths = layer_depths(init_params(ViT(VIT), 0))["params"]
    assert depths["patch_embed"]["kernel"] == 0 and depths["cls_token"] == 0 and depths["pos_embed"] == 0
    assert [depths[f"block_{i}"]["mlp"]["fc1"]["kernel"] for i in range(3)] == [1, 2, 3]
    assert depths["final_ln"]["scale"] == 4 and depths["head"]["kernel"] == 4
    lm = layer_depths(init_params(OPT(LM), 0))["params"]
    assert lm["embed_tokens"]["embedding"] == 0 and lm["layer_1"]["attn"]["query"]["kernel"] == 2


def test_personalize_freezes_early_blocks_and_decays_learning_rates():
    """First Adam step moves each weight by ~lr·decay^(top − depth) (|g|/(|g|+eps) ≈ 1): the largest move
    per depth is that learning rate; frozen depths do not move at all."""
    model = ViT(VIT)
    params = init_params(model, 0)
    rng = np.random.default_rng(0)  # no zero (or constant) leaves, so every gradient is non-zero
    params = jax.tree.map(lambda a: a + rng.normal(0, 0.3, a.shape).astype(np.float32), params)
    lr, decay = 1e-2, 0.5
    cfg = PersonalizeConfig(
        train=TrainConfig(steps=1, batch_size=48, learning_rate=lr, grad_clip=None), layer_decay=decay, freeze_blocks=1
    )
    new, _ = personalize(batch_loss_fn(model), params, _vision_data(), cfg)
    moved = lambda *keys: np.abs(_leaf(new, "params", *keys) - _leaf(params, "params", *keys)).max()
    assert moved("patch_embed", "kernel") == 0 and moved("cls_token") == 0  # embeddings frozen
    assert moved("block_0", "mlp", "fc1", "kernel") == 0  # block 0 frozen
    top = 4
    for keys, depth in (
        (("block_1", "mlp", "fc1", "kernel"), 2),
        (("block_2", "attn", "query", "kernel"), 3),
        (("head", "kernel"), 4),
    ):
        assert moved(*keys) == pytest.approx(lr * decay ** (top - depth), rel=1e-3), keys


def test_lora_adapters_start_at_zero_and_merge_low_rank():
    model = OPT(LM)
    params = init_params(model, 0)
    paths = lora_target_paths(params, ("mlp",))
    assert paths == (
        ("params", "layer_0", "mlp", "fc1", "kernel"),
        ("params", "layer_0", "mlp", "fc2", "kernel"),
        ("params", "layer_1", "mlp", "fc1", "kernel"),
        ("params", "layer_1", "mlp", "fc2", "kernel"),
    )
    adapters = lora_init(params, paths, rank=2, seed=0)
    jax.tree.map(np.testing.assert_array_equal, lora_merge(params, adapters, alpha=4.0), params)

    tokens = np.random.default_rng(0).integers(0, 16, (32, 8)).astype(np.int32)
    cfg = PersonalizeConfig(
        train=TrainConfig(steps=20, batch_size=8, learning_rate=1e-2),
        lora_rank=2,
        lora_targets=("mlp",),
        freeze_blocks=1,
    )
    new, _ = personalize(batch_loss_fn(model), params, {"tokens": tokens}, cfg)
    flat_old, flat_new = flatten_params(params), flatten_params(new)
    changed = {k for k in flat_old if not np.array_equal(flat_old[k], flat_new[k])}
    assert changed == {"params/layer_1/mlp/fc1/kernel", "params/layer_1/mlp/fc2/kernel"}  # layer 0 frozen
    for name in changed:
        assert np.linalg.matrix_rank(flat_new[name] - flat_old[name], tol=1e-6) <= 2


def test_checkpoint_round_trip(tmp_path):
    model = ViT(VIT)
    params = init_params(model, 3)
    path = save_checkpoint(tmp_path / "ckpt", params, VIT, metadata={"step": 7})
    loaded, config, metadata = load_checkpoint(path)
    assert config == VIT and metadata == {"step": 7}
    jax.tree.map(np.testing.assert_array_equal, loaded, jax.tree.map(np.asarray, params))
    assert sorted(os.listdir(path)) == ["config.json", "params.safetensors"]
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".ckpt")]  # no staging leftovers
    with pytest.raises(FileExistsError):
        save_checkpoint(path, params, VIT)
    other = init_params(model, 4)
    save_checkpoint(path, other, VIT, overwrite=True)
    np.testing.assert_array_equal(load_checkpoint(path)[0]["params"]["pos_embed"], other["params"]["pos_embed"])


def test_checkpoint_errors_name_the_problem(tmp_path):
    model = OPT(LM)
    path = save_checkpoint(tmp_path / "lm", init_params(model, 0), LM)
    manifest = json.loads((tmp_path / "lm" / "config.json").read_text())
    manifest["model"]["layers"] = 3
    (tmp_path / "lm" / "config.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=r"missing \['params/layer_2/"):
        load_checkpoint(path)
    manifest["model"]["layers"] = 2
    manifest["version"] = 99
    (tmp_path / "lm" / "config.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="field 'version' is 99"):
        load_checkpoint(path)
    os.remove(tmp_path / "lm" / "params.safetensors")
    with pytest.raises(CheckpointError, match="missing file params.safetensors"):
        load_checkpoint(path)


def test_failed_save_leaves_nothing(tmp_path, monkeypatch):
    import safetensors.numpy

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.numpy, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path / "x", init_params(ViT(VIT), 0), VIT)
    assert os.listdir(tmp_path) == []
