"""Each baseline does what its paper says, on a tiny ViT and synthetic 4-class images.

Fixtures train one tiny model (a few seconds); every check compares against an independent computation
(closed forms, brute-force searches, explicit per-class gradients) rather than against the code under test.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxapex.baselines import certified, gradient_ascent, naive_mask, proof_cost, retrain, zk_apex, zs_pag
from jaxapex.baselines.common import (
    ChunkCircuitWork,
    StepWork,
    UnlearningInputs,
    check_disjoint,
    kernel_paths,
    without_examples_of,
)
from jaxapex.evaluate import accuracy
from jaxapex.layers import get_leaf, get_matrix
from jaxapex.models import ViT, ViTConfig, batch_loss_fn, init_params, mlp_target_paths
from jaxapex.train import PersonalizeConfig, TrainConfig, fit

TINY = ViTConfig(image_size=4, patch_size=2, channels=1, dim=16, depth=1, heads=2, mlp_dim=32, num_classes=4)
FORGET_CLASS = 0


def synthetic_images(n_per_class: int, *, seed: int, classes=range(4)) -> dict[str, np.ndarray]:
    """Images (n, 4, 4, 1) in [0, 1]: a fixed random pattern per class plus noise."""
    patterns = np.random.default_rng(1234).uniform(0.0, 1.0, size=(4, 4, 4, 1)).astype(np.float32)
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.asarray(list(classes), np.int32), n_per_class)
    noise = rng.normal(0.0, 0.15, size=(len(labels), 4, 4, 1)).astype(np.float32)
    return {"image": np.clip(patterns[labels] + noise, 0.0, 1.0), "label": labels}


def split_by_class(data, cls):
    keep = data["label"] == cls
    return {k: v[keep] for k, v in data.items()}, {k: v[~keep] for k, v in data.items()}


GLOBAL_RECIPE = TrainConfig(steps=100, batch_size=32, learning_rate=5e-3, seed=0)
PERSONAL_RECIPE = PersonalizeConfig(train=TrainConfig(steps=30, batch_size=16, learning_rate=1e-3, seed=1))


@pytest.fixture(scope="module")
def task():
    model = ViT(TINY)
    loss = batch_loss_fn(model)
    train = synthetic_images(40, seed=0)
    test = synthetic_images(20, seed=1)
    forget, retain = split_by_class(train, FORGET_CLASS)
    personal = synthetic_images(15, seed=2, classes=(1, 2, 3))
    params, _ = fit(loss, init_params(model, 0), train, GLOBAL_RECIPE)
    W = np.asarray(get_matrix(params, mlp_target_paths(params)[0]))
    mask = np.zeros(W.shape, bool)
    mask[:3, :5] = True  # a few neurons' leading weights
    inputs = UnlearningInputs(
        model=model,
        params=params,
        forget=forget,
        global_retain=retain,
        personal=personal,
        masks={mlp_target_paths(params)[0]: mask},
    )
    return dict(model=model, loss=loss, inputs=inputs, test=test)


def forget_loss(task, params) -> float:
    return float(task["loss"](params, task["inputs"].forget))


# ------------------------------------------------------------------------------------------ naive mask


def test_naive_mask_zeroes_exactly_the_mask(task):
    inputs = task["inputs"]
    path, mask = next(iter(inputs.masks.items()))
    new, info = naive_mask.unlearn(inputs)
    W, W_new = np.asarray(get_matrix(inputs.params, path)), np.asarray(get_matrix(new, path))
    assert np.all(W_new[mask] == 0) and np.all(W[mask] != 0)
    np.testing.assert_array_equal(W_new[~mask], W[~mask])
    assert info["n_masked_total"] == int(mask.sum())
    before = jax.tree_util.tree_flatten_with_path(inputs.params)[0]
    after = jax.tree.leaves(new)
    changed = [p for (p, a), b in zip(before, after) if not np.array_equal(a, b)]
    assert len(changed) == 1  # only the masked kernel


def test_naive_mask_rejects_a_mask_of_the_wrong_shape(task):
    inputs = task["inputs"]
    path = next(iter(inputs.masks))
    bad = dataclasses.replace(inputs, masks={path: np.zeros((3, 3), bool)})
    with pytest.raises(ValueError, match="fc1"):
        naive_mask.unlearn(bad)


def test_zk_apex_zeroes_the_mask_and_compensates_only_touched_blocks(task):
    inputs = task["inputs"]
    path, mask = next(iter(inputs.masks.items()))
    config = zk_apex.ZkApexConfig(block_size=16)
    new, info = zk_apex.unlearn(inputs, config=config)
    W, W_new = np.asarray(get_matrix(inputs.params, path)), np.asarray(get_matrix(new, path))
    assert np.all(W_new[mask] == 0)
    touched = np.asarray(mask).reshape(-1, 16).any(axis=1)
    delta = (W_new - W).reshape(-1, 16)
    assert np.all(delta[~touched] == 0)
    assert np.abs(delta[touched][~np.asarray(mask).reshape(-1, 16)[touched]]).max() > 0  # compensation moved others
    assert info["work"][0].level == "F"


# --------------------------------------------------------------------------------------------- retrain


def _recording_loss(model, seen: list):
    """Mean cross-entropy that records, through a host callback, every image row it is evaluated on."""
    base = batch_loss_fn(model)

    def loss(params, batch):
        jax.debug.callback(lambda images: seen.append(np.asarray(images).copy()), batch["image"])
        return base(params, batch)

    return loss


def test_retain_data_holding_forget_examples_is_cleaned_before_retraining(task):
    inputs = task["inputs"]
    leaked = {k: np.concatenate([v[:3], inputs.forget[k][:2], v[3:]]) for k, v in inputs.global_retain.items()}
    with pytest.raises(ValueError, match="global retain data holds 2 example"):
        check_disjoint(leaked, inputs.forget, name="global retain")
    cleaned, dropped = without_examples_of(leaked, inputs.forget)
    assert dropped == 2
    for k in cleaned:
        np.testing.assert_array_equal(cleaned[k], inputs.global_retain[k])


def test_retrain_never_sees_the_forget_data_and_forgets_like_a_model_that_never_saw_the_class(task):
    inputs, test = task["inputs"], task["test"]
    seen: list[np.ndarray] = []
    # two forget examples also sit in the retain data (as repeated content does in real corpora)
    leaked = {k: np.concatenate([v, inputs.forget[k][:2]]) for k, v in inputs.global_retain.items()}
    recorded = dataclasses.replace(inputs, global_retain=leaked, loss_fn=_recording_loss(task["model"], seen))
    config = retrain.RetrainConfig(global_train=GLOBAL_RECIPE, personalize=PERSONAL_RECIPE)
    new, info = retrain.unlearn(recorded, config=config)
    jax.effects_barrier()
    assert info["dropped_forget_duplicates"] == {"global_retain": 2, "personal": 0}
    rows = np.concatenate(seen)
    assert len(rows) >= GLOBAL_RECIPE.steps * GLOBAL_RECIPE.batch_size  # the recorder saw every training batch
    forget_rows = {r.tobytes() for r in inputs.forget["image"]}
    assert not any(r.tobytes() in forget_rows for r in rows)
    forget_test, retain_test = split_by_class(test, FORGET_CLASS)
    assert accuracy(task["model"], inputs.params, forget_test) > 0.9  # the original knows the class
    assert accuracy(task["model"], new, forget_test) <= 0.05  # the retrained model does not
    assert accuracy(task["model"], new, retain_test) > 0.9
    assert [w.phase for w in info["work"]] == ["global_train", "personalize"]
    assert info["work"][0].steps == GLOBAL_RECIPE.steps


# ------------------------------------------------------------------------------------- gradient ascent


def test_gradient_ascent_raises_the_forget_loss(task):
    inputs = task["inputs"]
    config = gradient_ascent.GradientAscentConfig(steps=15, learning_rate=3e-3, forget_batch_size=16)
    new, info = gradient_ascent.unlearn(inputs, config=config)
    before, after = forget_loss(task, inputs.params), forget_loss(task, new)
    assert after > before + 1.0
    assert info["forget_loss_before"] == pytest.approx(before, rel=1e-4)
    assert info["forget_loss_after"] == pytest.approx(after, rel=1e-4)
    forget_test, _ = split_by_class(task["test"], FORGET_CLASS)
    assert accuracy(task["model"], new, forget_test) < 0.5


def test_gradient_ascent_on_targets_moves_only_the_targets(task):
    inputs = task["inputs"]
    config = gradient_ascent.GradientAscentConfig(steps=5, learning_rate=1e-3, trainable="targets")
    new, _ = gradient_ascent.unlearn(inputs, config=config)
    target = next(iter(inputs.masks))
    for (path, a), (_, b) in zip(
        jax.tree_util.tree_flatten_with_path(inputs.params)[0], jax.tree_util.tree_flatten_with_path(new)[0]
    ):
        keys = tuple(str(k.key) for k in path)
        assert np.array_equal(a, b) == (keys != target), keys


# ------------------------------------------------------------------------------------------- certified


def _dp_epsilon_brute_force(c: float, delta: float) -> float:
    """Independent conversion: a dense log grid over α with no refinement."""
    alpha = 1.0 + np.exp(np.linspace(math.log(1e-4), math.log(1e7), 200_001))
    return float(np.min(alpha * c + np.log((alpha - 1) / alpha) - (math.log(delta) + np.log(alpha)) / (alpha - 1)))


def _sigma_by_formula(*, epsilon, delta, C0, C1, lr, lam, T) -> float:
    """σ from the paper's bound, written out independently: bisection on c, then the closed form."""
    lo, hi = 1e-12, 1e3
    for _ in range(60):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if _dp_epsilon_brute_force(mid, delta) <= epsilon else (lo, mid)
    c = lo
    rho = 1 - lr * lam
    K = rho**T * 2 * C0 + sum(rho ** (T - 1 - t) * 2 * lr * C1 for t in range(T))
    weight = sum(rho ** (2 * (T - 1 - t)) for t in range(T))
    return K / math.sqrt(2 * c * weight)


@pytest.mark.parametrize("lam", [0.0, 750.0, 3.0])
def test_certified_noise_scale_matches_the_formula(lam):
    schedule = dict(model_clip=0.5, grad_clip=10.0, learning_rate=1e-4, weight_decay=lam, steps=7)
    sigma = certified.noise_std(epsilon=1.0, delta=1e-5, **schedule)
    expected = _sigma_by_formula(epsilon=1.0, delta=1e-5, C0=0.5, C1=10.0, lr=1e-4, lam=lam, T=7)
    assert sigma == pytest.approx(expected, rel=1e-4)
    if lam == 0.0:  # the λ = 0 closed form: K = 2 C0 + 2 γ C1 T, weight T
        c = certified.rdp_coefficient_for(1.0, 1e-5)
        assert sigma == pytest.approx((2 * 0.5 + 2 * 1e-4 * 10.0 * 7) / math.sqrt(2 * c * 7), rel=1e-12)
    achieved = certified.achieved_guarantee(sigma, delta=1e-5, **schedule)
    assert achieved["epsilon"] == pytest.approx(1.0, abs=1e-7)
    assert certified.achieved_guarantee(0.99 * sigma, delta=1e-5, **schedule)["epsilon"] > 1.0 + 1e-3


@settings(max_examples=40, deadline=None)
@given(c=st.floats(1e-6, 50.0), log_delta=st.floats(-12.0, -2.0))
def test_rdp_conversion_is_the_grid_minimum_and_beats_the_classical_bound(c, log_delta):
    delta = 10.0**log_delta
    epsilon, alpha = certified.rdp_to_dp(c, delta)
    assert epsilon <= _dp_epsilon_brute_force(c, delta) + 1e-9
    assert epsilon >= _dp_epsilon_brute_force(c, delta) - 1e-6 * max(1.0, epsilon)
    # the classical conversion ε = αc + log(1/δ)/(α − 1), minimized: c + 2 sqrt(c log(1/δ))
    assert epsilon <= c + 2 * math.sqrt(c * math.log(1 / delta)) + 1e-9
    assert alpha > 1


def test_certified_step_adds_noise_of_the_calibrated_scale_and_clips_the_gradient():
    d = 200_000
    params = {"w": jnp.asarray(np.random.default_rng(0).normal(size=d).astype(np.float32))}
    zero_loss = lambda p, batch: 0.0 * jnp.sum(p["w"])
    step = certified.noisy_step_fn(zero_loss, grad_clip=1.0, learning_rate=0.1, weight_decay=2.0, sigma=0.03)
    new = step(params, jax.random.PRNGKey(0), {"x": jnp.zeros((1,))})
    noise = np.asarray(new["w"]) - (1 - 0.1 * 2.0) * np.asarray(params["w"])
    assert noise.std() == pytest.approx(0.03, rel=0.01) and abs(noise.mean()) < 3 * 0.03 / math.sqrt(d)
    steep_loss = lambda p, batch: 1e6 * jnp.sum(p["w"])  # gradient norm 1e6 · sqrt(d), clipped to C1 = 1
    step = certified.noisy_step_fn(steep_loss, grad_clip=1.0, learning_rate=0.1, weight_decay=0.0, sigma=0.0)
    moved = np.asarray(step(params, jax.random.PRNGKey(0), None)["w"]) - np.asarray(params["w"])
    assert np.linalg.norm(moved) == pytest.approx(0.1 * 1.0, rel=1e-4)


def test_certified_unlearning_reports_its_guarantee_and_reads_only_retain_data(task):
    inputs = task["inputs"]
    seen: list[np.ndarray] = []
    recorded = dataclasses.replace(inputs, loss_fn=_recording_loss(task["model"], seen))
    config = certified.CertifiedConfig(epsilon=2.0, batch_size=32, finetune_steps=5, finetune_batch_size=32)
    new, info = certified.unlearn(recorded, config=config)
    jax.effects_barrier()
    assert info["epsilon"] == pytest.approx(2.0, abs=1e-7) and info["delta"] == 1e-5
    assert info["steps"] == certified.default_steps(
        model_clip=0.01, grad_clip=10.0, learning_rate=1e-4, weight_decay=750.0
    )
    assert info["sigma"] == pytest.approx(
        _sigma_by_formula(epsilon=2.0, delta=1e-5, C0=0.01, C1=10.0, lr=1e-4, lam=750.0, T=info["steps"]), rel=1e-4
    )
    forget_rows = {r.tobytes() for r in inputs.forget["image"]}
    assert seen and not any(r.tobytes() in forget_rows for batch in seen for r in batch)
    phases = [w.phase for w in info["work"]]
    assert phases == ["model_clip", "noisy_descent", "gradient_clip", "gaussian_noise", "finetune"]


# ---------------------------------------------------------------------------------------------- ZS-PAG


@pytest.fixture(scope="module")
def zs_run(task):
    config = zs_pag.ZsPagConfig(
        attack_epsilon=0.5, attack_steps=10, energy_threshold=0.8, steps=40, batch_size=16, learning_rate=0.05
    )
    new, info = zs_pag.unlearn(task["inputs"], config=config)
    return new, info, config


def test_zs_pag_update_is_orthogonal_to_the_proxy_subspace(task, zs_run):
    new, info, _ = zs_run
    params = task["inputs"].params
    moved = 0
    for path, U in info["bases"].items():
        delta = np.asarray(get_leaf(new, path)) - np.asarray(get_leaf(params, path))  # (in, out)
        assert U.shape[0] == delta.shape[0]
        np.testing.assert_allclose(U.T @ U, np.eye(U.shape[1]), atol=1e-8)
        norm = np.linalg.norm(delta)
        if norm > 0:
            moved += 1
            assert np.linalg.norm(U.T @ delta) <= 1e-4 * norm, path
    assert moved > 0
    untouched = set(kernel_paths(params))
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        keys = tuple(str(k.key) for k in path)
        if keys not in untouched:  # biases, norms, embeddings stay fixed
            np.testing.assert_array_equal(np.asarray(get_leaf(new, keys)), np.asarray(leaf))


def test_zs_pag_forgets_from_the_forget_set_alone(task, zs_run):
    new, info, _ = zs_run
    assert info["forget_loss_after"] > info["forget_loss_before"] + 0.5
    assert info["attack_success"] > 0.5
    assert info["pseudo_label_counts"][FORGET_CLASS] == 0  # never relabeled to its own class
    forget_test, retain_test = split_by_class(task["test"], FORGET_CLASS)
    assert accuracy(task["model"], new, forget_test) < accuracy(task["model"], task["inputs"].params, forget_test)


def test_zs_pag_pseudo_labels_maximize_first_order_influence(task, zs_run):
    """Brute force: for every example and every candidate class, the explicit gradient ∇ℓ(x, c) dotted with
    the projected proxy gradient; the chosen label must be the argmax."""
    _, info, config = zs_run
    model, params, forget = task["model"], task["inputs"].params, task["inputs"].forget
    proxies = info["proxies"]
    assert proxies.labels.shape == (len(proxies.groups),) and len(proxies.groups) == 3 * len(forget["label"])
    bases = info["bases"]
    paths = tuple(bases)
    kernels = {p: get_leaf(params, p) for p in paths}

    def loss(kernels, images, labels):
        p = params
        for path, k in kernels.items():
            p = zs_pag.replace_leaf(p, path, k)
        logits = model.apply(p, images)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    g_proxy = jax.grad(loss)(kernels, proxies.batch["image"] + proxies.delta, proxies.labels)
    direction = {p: np.asarray(g) - bases[p] @ (bases[p].T @ np.asarray(g)) for p, g in g_proxy.items()}
    chosen = info["pseudo_labels"]
    per_example_grad = jax.jit(jax.vmap(lambda image, label: jax.grad(loss)(kernels, image[None], label[None])))
    n = len(forget["label"])
    scores = np.full((n, TINY.num_classes), -np.inf)
    for c in range(TINY.num_classes):
        g = per_example_grad(forget["image"], jnp.full((n,), c, jnp.int32))  # {path: (n, in, out)}
        alignment = sum(np.einsum("nij,ij->n", np.asarray(g[p], np.float64), direction[p]) for p in paths)
        scores[:, c] = np.where(forget["label"] == c, -np.inf, alignment)
    best = scores.max(axis=1)
    picked = scores[np.arange(n), chosen]
    assert np.all(picked >= best - 1e-5 * np.maximum(1.0, np.abs(best))), (picked, best)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), threshold=st.floats(0.05, 0.99), n=st.integers(2, 30), d=st.integers(1, 12))
def test_energy_basis_is_the_smallest_basis_reaching_the_threshold(seed, threshold, n, d):
    X = np.random.default_rng(seed).normal(size=(n, d)) * np.logspace(0, -2, d)
    U = zs_pag.energy_basis(X, threshold)
    k = U.shape[1]
    np.testing.assert_allclose(U.T @ U, np.eye(k), atol=1e-9)
    total = np.sum(X**2)
    assert np.sum((X @ U) ** 2) >= threshold * total * (1 - 1e-9)
    s = np.linalg.svd(X, compute_uv=False)
    assert np.sum(s[: k - 1] ** 2) < threshold * total  # one direction fewer would not do


# ------------------------------------------------------------------------------------------ proof cost


def test_op_counts_of_dense_and_conv_layers_are_exact():
    x = jax.ShapeDtypeStruct((5, 7), jnp.float32)
    w = jax.ShapeDtypeStruct((7, 3), jnp.float32)
    counts = proof_cost.count_program(lambda x, w: x @ w, x, w, range_limbs=2)
    assert counts == proof_cost.OpCounts(macs=5 * 7 * 3, lookups=5 * 3 * 2)
    images = jax.ShapeDtypeStruct((2, 8, 8, 3), jnp.float32)
    kernel = jax.ShapeDtypeStruct((2, 2, 3, 4), jnp.float32)
    conv = lambda a, k: jax.lax.conv_general_dilated(a, k, (2, 2), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    assert proof_cost.count_program(conv, images, kernel, range_limbs=1) == proof_cost.OpCounts(
        macs=2 * 4 * 4 * 4 * (2 * 2 * 3), lookups=2 * 4 * 4 * 4
    )
    tanh = proof_cost.count_program(jnp.tanh, x)
    assert tanh == proof_cost.OpCounts(0, 35)


def test_op_counts_refuse_unknown_primitives():
    with pytest.raises(ValueError, match="no price for the primitive 'cholesky'"):
        proof_cost.count_program(jnp.linalg.cholesky, jax.ShapeDtypeStruct((4, 4), jnp.float32))


def test_vit_forward_macs_match_the_architecture():
    cfg = TINY
    model = ViT(cfg)
    params = init_params(model, 0)
    example = {"image": np.zeros((1, 4, 4, 1), np.float32), "label": np.zeros((1,), np.int32)}
    coster = proof_cost.StepCoster(batch_loss_fn(model), params, example)
    t, d, h = cfg.num_patches + 1, cfg.dim, cfg.mlp_dim
    per_block = t * 4 * d * d + 2 * t * t * d + 2 * t * d * h  # q, k, v, out; scores and mixing; fc1, fc2
    patch = cfg.num_patches * cfg.patch_size**2 * cfg.channels * d
    analytic = cfg.depth * per_block + patch + d * cfg.num_classes
    forward = coster.counts("forward", 3)
    # the matmuls, plus the elementwise products of layer norms, GELU and softmax on top
    assert 3 * analytic <= forward.macs <= 3 * analytic * 1.3
    grad = coster.counts("grad", 3)
    assert 2.5 * forward.macs <= grad.macs <= 3.5 * forward.macs  # backward ≈ twice the forward


def test_chunk_circuit_rows_are_the_compiled_rows_times_the_chunks():
    from circuit_compiler.fixedpoint import FixedPointSpec
    from circuit_compiler.lowering import build_chunk_circuit, chunk_shape_key

    work = ChunkCircuitWork("obs", "F", ((128, 64), (128, 64), (32, 16)), 16, 16, 64)
    cost = proof_cost.proof_cost([work])
    rows = build_chunk_circuit(
        chunk_shape_key(blocks=64, block_size=16, level="F", spec=FixedPointSpec(), lanes=16)
    ).cs.rows
    assert cost.rows == (8 + 8 + 1) * rows and cost.measured


def test_obs_proof_is_over_a_thousand_times_cheaper_than_retraining(task):
    inputs = task["inputs"]
    model = task["model"]
    params = inputs.params
    paths = mlp_target_paths(params)
    shapes = tuple(tuple(get_matrix(params, p).shape) for p in paths)
    obs = proof_cost.proof_cost([ChunkCircuitWork("obs", "F", shapes, 16, 16, 64)])
    retrain_work = [
        StepWork("global_train", "train", GLOBAL_RECIPE.steps, 32, "adam"),
        StepWork("personalize", "train", PERSONAL_RECIPE.train.steps, 16, "adam"),
    ]
    example = {k: v[:1] for k, v in inputs.forget.items()}
    retrained = proof_cost.proof_cost(
        retrain_work,
        loss_fn=batch_loss_fn(model),
        params=params,
        example_batch=example,
        cost_model=proof_cost.cost_model_from_obs_circuit(),
    )
    assert not retrained.measured
    assert retrained.rows >= 1000 * obs.rows


def test_arithmetic_and_noise_work_are_priced_by_the_stated_rule():
    model = proof_cost.CostModel(lanes=16, lookups_per_row=8, columns=50, rows_per_noise_sample=33)
    from jaxapex.baselines.common import ArithmeticWork, NoiseWork

    cost = proof_cost.proof_cost(
        [ArithmeticWork("a", macs=1000, lookups=81), NoiseWork("n", samples=7)], cost_model=model
    )
    assert cost.phases["a"].rows == math.ceil(1000 / 16) + math.ceil(81 / 8)
    assert cost.phases["n"].rows == 7 * 33
    assert cost.rows == cost.phases["a"].rows + 7 * 33 and cost.cells == 50 * cost.rows
    with pytest.raises(ValueError, match="appears twice"):
        proof_cost.proof_cost([ArithmeticWork("a", 1, 1), ArithmeticWork("a", 1, 1)], cost_model=model)


def test_inputs_from_a_task_run_use_its_per_example_losses(task):
    from types import SimpleNamespace

    from jaxapex.baselines.common import as_inputs
    from jaxapex.models import example_loss_fn

    inputs = task["inputs"]
    model = task["model"]
    run = SimpleNamespace(
        model=model,
        params_personal=inputs.params,
        masks=inputs.masks,
        datasets={
            "forget_train": inputs.forget,
            "retain_train": inputs.global_retain,
            "personal_train": inputs.personal,
        },
        provider_example_loss=example_loss_fn(model),
        client_example_loss=lambda params, example: 2.0 * example_loss_fn(model)(params, example),
    )
    built = as_inputs(run)
    assert built.forget is inputs.forget and built.personal is inputs.personal
    batch = {k: v[:7] for k, v in inputs.personal.items()}
    direct = float(jax.jit(batch_loss_fn(model))(inputs.params, batch))
    assert float(jax.jit(built.batch_loss)(inputs.params, batch)) == pytest.approx(direct, rel=1e-5)
    assert float(jax.jit(built.personal_loss)(inputs.params, batch)) == pytest.approx(2 * direct, rel=1e-5)
    del run.client_example_loss
    with pytest.raises(TypeError, match="client_example_loss"):
        as_inputs(run)
