"""ZS-PAG: zero-shot unlearning with proxy adversarial data (Chen, Zhu, Yu, Zhou, IJCAI 2025).

Only the forget samples are available. The three steps of the paper, and how each open choice is made here
(the paper's code is not public; every choice below is ours and is stated so it can be changed):

1. **Proxies for the missing retain data** — adversarial samples generated *from the forget samples*.
   Vision: targeted L∞ PGD from every forget image towards every other class (``targets_per_sample`` of
   them, chosen at random when fewer than all), images kept in [0, 1]; a proxy's group is its target class.
   Language model (token inputs are discrete): untargeted L∞ PGD on the *token embeddings* that maximizes
   the loss of the true next tokens, with radius ``attack_epsilon`` × the RMS of the embeddings; one group.
   PGD uses ``attack_steps`` signed-gradient steps of ``2.5 · radius / attack_steps`` from zero; at most
   ``max_proxies`` proxies are kept (a seeded random subset). Proxy labels are the model's own predictions
   at the proxy (what the model says the retain data looks like).
2. **The subspace to avoid** — for every updated Dense kernel (in, out), the proxies' inputs to that layer
   (all token positions) are collected; per group, the top right-singular vectors holding an
   ``energy_threshold`` share of the squared singular values (the Gradient-Projection-Memory criterion) span
   the group's subspace; the union over groups, orthonormalized, is the layer's proxy subspace U (in, k).
   Every gradient of the unlearning loss is projected as G ← G − U (Uᵀ G), so to first order the layer's
   outputs on proxy inputs do not move. The threshold is the method's main knob: the union over nine
   classes' subspaces fills the whole input space of most layers of the digits ViT at 0.97 (nothing can
   move), while 0.9 leaves the first block and the head room to unlearn. Only Dense kernels are updated (biases, norms and embeddings stay
   fixed — a bias has no input direction to project against); the optimizer is SGD with momentum, which
   keeps every update inside the orthogonal complement (Adam's per-coordinate scaling would leave it).
3. **Influence-based pseudo-labels** — each forget example (each position, for the language model) is
   relabeled to the class whose descent step helps the proxies most, to first order: with g_p the gradient of
   the proxy loss and P the projection, a step on (x, c) changes the proxy loss by −η ⟨P ∇ℓ(x, c), g_p⟩ =
   −η ⟨p(x) − e_c, J(x) P g_p⟩, so c = argmin_c u_c with u = J(x) P g_p, one forward-mode product per
   example. Candidates are the classes other than the true one, or with ``label_candidates=k`` the k most
   probable of them (useful for the language model, where a 256-way choice by influence alone picks
   implausible bytes).

The unlearning objective on the forget set is then ``CE(x, pseudo-label) − ascent_weight · CE(x, y)``: the
relabeling pushes the forget samples towards the classes that help the retained data, and the optional
ascent term (off by default) pushes them off their true labels directly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxapex.baselines.common import (
    ArithmeticWork,
    StepWork,
    Stopwatch,
    UnlearningInputs,
    as_inputs,
    config_dict,
    kernel_paths,
)
from jaxapex.forget_directions import capture_dense_inputs
from jaxapex.layers import get_leaf, path_name, replace_leaf
from jaxapex.models import OPT, ViT
from jaxapex.train import dataset_size, iterate_batches

Path = tuple[str, ...]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ZsPagConfig:
    """See the module docstring for the meaning of each field."""

    attack_epsilon: float = 0.3
    attack_steps: int = 10
    targets_per_sample: int | None = None
    max_proxies: int = 2048
    energy_threshold: float = 0.9
    label_candidates: int | None = None
    ascent_weight: float = 0.0
    steps: int = 100
    batch_size: int = 32
    learning_rate: float = 0.01
    momentum: float = 0.9
    include_head: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.attack_epsilon > 0 or self.attack_steps <= 0:
            raise ValueError(
                f"ZsPagConfig: attack_epsilon and attack_steps must be positive, got "
                f"{self.attack_epsilon}, {self.attack_steps}"
            )
        if not 0 < self.energy_threshold < 1:
            raise ValueError(f"ZsPagConfig.energy_threshold must be in (0, 1), got {self.energy_threshold}")
        if self.steps <= 0 or self.batch_size <= 0 or not self.learning_rate > 0:
            raise ValueError("ZsPagConfig: steps, batch_size and learning_rate must be positive")
        if (self.label_candidates is not None and self.label_candidates < 1) or self.max_proxies < 1:
            raise ValueError(
                f"ZsPagConfig: label_candidates (or None) and max_proxies must be >= 1, got "
                f"{self.label_candidates}, {self.max_proxies}"
            )


class Proxies(NamedTuple):
    """Adversarial proxies: ``batch`` (the source examples, repeated), ``delta`` (the perturbation of the
    continuous input: images (n, H, W, C) or token embeddings (n, T, dim)), ``labels`` (the model's predictions
    at the proxies: (n,) or (n, T)) and ``groups`` (n,) int (target class, or 0)."""

    batch: dict
    delta: jax.Array
    labels: jax.Array
    groups: np.ndarray


# ------------------------------------------------------------------------------- model-specific plumbing


def _is_vision(model) -> bool:
    return isinstance(model, ViT)


def targets_of(model, batch: Mapping) -> jax.Array:
    """Labels (n,) for the ViT, next tokens (n, T) for the LM."""
    return batch["label"] if _is_vision(model) else batch["tokens"][:, 1:]


def _embedding_interceptor(delta):
    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        module = context.module
        if isinstance(module, nn.Embed) and context.method_name == "__call__" and module.name == "embed_tokens":
            out = out + delta.astype(out.dtype)
        return out

    return interceptor


def perturbed_logits(model, params, batch: Mapping, delta: jax.Array | None) -> jax.Array:
    """Logits with the continuous input moved by ``delta`` (image pixels, or token embeddings for the LM)."""
    if _is_vision(model):
        images = batch["image"] if delta is None else batch["image"] + delta
        return model.apply(params, images)
    tokens = batch["tokens"][:, :-1]
    if delta is None:
        return model.apply(params, tokens)
    with nn.intercept_methods(_embedding_interceptor(delta)):
        return model.apply(params, tokens)


def delta_shape(model, batch: Mapping) -> tuple[int, ...]:
    if _is_vision(model):
        return tuple(batch["image"].shape)
    n, t = batch["tokens"].shape
    return (n, t - 1, model.config.dim)


def token_embedding_rms(model: OPT, params) -> float:
    table = params["params"]["embed_tokens"]["embedding"]
    return float(jnp.sqrt(jnp.mean(jnp.square(table))))


def cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean cross-entropy over every example (and position)."""
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets).mean()


def dense_inputs(model, params, batch: Mapping, delta: jax.Array | None, paths: tuple[Path, ...]) -> dict:
    """``{kernel path: inputs of that Dense layer flattened over examples and positions (N, in)}``."""
    return capture_dense_inputs(lambda: perturbed_logits(model, params, batch, delta), paths)


# ---------------------------------------------------------------------------------------- 1. proxies


def pgd(
    loss_of_delta: Callable[[jax.Array], jax.Array],
    delta0: jax.Array,
    *,
    radius,
    steps: int,
    project: Callable[[jax.Array], jax.Array],
) -> jax.Array:
    """``steps`` signed-gradient *descent* steps on ``loss_of_delta`` from ``delta0``, each followed by the
    L∞ clip to ``radius`` and ``project`` (e.g. onto valid pixels). Step size 2.5 · radius / steps."""
    step_size = 2.5 * radius / steps

    def body(_, delta):
        grad = jax.grad(loss_of_delta)(delta)
        delta = jnp.clip(delta - step_size * jnp.sign(grad), -radius, radius)
        return project(delta)

    return jax.lax.fori_loop(0, steps, body, delta0)


def generate_proxies(model, params, forget: Mapping, config: ZsPagConfig) -> Proxies:
    """Adversarial proxies from the forget samples (module docstring, step 1)."""
    rng = np.random.default_rng(config.seed)
    if _is_vision(model):
        labels = np.asarray(forget["label"])
        num_classes = model.config.num_classes
        sources, targets = [], []
        for i, y in enumerate(labels):
            others = np.array([c for c in range(num_classes) if c != y])
            if config.targets_per_sample is not None and config.targets_per_sample < len(others):
                others = rng.choice(others, config.targets_per_sample, replace=False)
            sources.extend([i] * len(others))
            targets.extend(others.tolist())
        sources, targets = np.asarray(sources), np.asarray(targets, np.int32)
        if len(sources) > config.max_proxies:
            keep = np.sort(rng.choice(len(sources), config.max_proxies, replace=False))
            sources, targets = sources[keep], targets[keep]
        batch = {k: np.asarray(v)[sources] for k, v in forget.items()}
        images = jnp.asarray(batch["image"])

        @jax.jit
        def attack(images, targets):
            def loss(delta):  # targeted: descend the loss of the target class
                return cross_entropy(model.apply(params, images + delta), targets)

            return pgd(
                loss,
                jnp.zeros_like(images),
                radius=config.attack_epsilon,
                steps=config.attack_steps,
                project=lambda d: jnp.clip(images + d, 0.0, 1.0) - images,
            )

        delta = attack(images, jnp.asarray(targets))
        groups = targets
    else:
        n = dataset_size(forget)
        keep = np.arange(n) if n <= config.max_proxies else np.sort(rng.choice(n, config.max_proxies, replace=False))
        batch = {k: np.asarray(v)[keep] for k, v in forget.items()}
        radius = config.attack_epsilon * token_embedding_rms(model, params)

        @jax.jit
        def attack(batch):
            true_next = batch["tokens"][:, 1:]

            def loss(delta):  # untargeted: ascend the loss of the true next tokens
                return -cross_entropy(perturbed_logits(model, params, batch, delta), true_next)

            return pgd(
                loss,
                jnp.zeros(delta_shape(model, batch), jnp.float32),
                radius=radius,
                steps=config.attack_steps,
                project=lambda d: d,
            )

        delta = attack(batch)
        groups = np.zeros(len(keep), np.int32)
    predictions = jnp.argmax(jax.jit(lambda b, d: perturbed_logits(model, params, b, d))(batch, delta), axis=-1)
    return Proxies(batch=batch, delta=delta, labels=predictions, groups=np.asarray(groups))


# --------------------------------------------------------------------------------------- 2. subspaces


def energy_basis(X: np.ndarray, threshold: float) -> np.ndarray:
    """Orthonormal (in, k): the fewest top right-singular vectors of ``X`` (N, in) holding at least
    ``threshold`` of ``‖X‖_F²`` (from the eigen-decomposition of XᵀX in float64)."""
    X = np.asarray(X, np.float64)
    gram = X.T @ X
    eigvals, eigvecs = np.linalg.eigh(gram)
    order = np.argsort(eigvals)[::-1]
    eigvals, eigvecs = np.clip(eigvals[order], 0.0, None), eigvecs[:, order]
    total = eigvals.sum()
    if total <= 0:
        return np.zeros((X.shape[1], 0))
    k = int(np.searchsorted(np.cumsum(eigvals) / total, threshold) + 1)
    return eigvecs[:, : min(k, X.shape[1])]


def union_basis(bases: list[np.ndarray], *, tol: float = 1e-8) -> np.ndarray:
    """Orthonormal basis (in, k) of the span of the columns of all ``bases``."""
    stacked = np.concatenate(bases, axis=1)
    if stacked.shape[1] == 0:
        return stacked
    u, s, _ = np.linalg.svd(stacked, full_matrices=False)
    return u[:, s > tol * max(s.max(), 1.0)]


def proxy_subspaces(
    model, params, proxies: Proxies, paths: tuple[Path, ...], *, threshold: float, chunk: int = 256
) -> dict[Path, np.ndarray]:
    """``{kernel path: U (in, k)}``: the union over proxy groups of each group's energy basis of the layer's
    inputs (module docstring, step 2)."""
    collect = jax.jit(lambda b, d: dense_inputs(model, params, b, d, paths))
    n = len(proxies.groups)
    per_path: dict[Path, list[np.ndarray]] = {p: [] for p in paths}
    for start in range(0, n, chunk):
        sub = {k: v[start : start + chunk] for k, v in proxies.batch.items()}
        acts = collect(sub, proxies.delta[start : start + chunk])
        for p in paths:
            per_path[p].append(
                np.asarray(acts[p]).reshape(len(proxies.groups[start : start + chunk]), -1, acts[p].shape[-1])
            )
    bases = {}
    for p in paths:
        acts = np.concatenate(per_path[p])  # (n, positions, in)
        group_bases = [
            energy_basis(acts[proxies.groups == g].reshape(-1, acts.shape[-1]), threshold)
            for g in np.unique(proxies.groups)
        ]
        bases[p] = union_basis(group_bases)
    return bases


def project_out(grads: dict, bases: Mapping[Path, np.ndarray]) -> dict:
    """``G − U (Uᵀ G)`` for every kernel gradient G (in, out) with its basis U (in, k)."""
    out = {}
    for p, g in grads.items():
        U = jnp.asarray(bases[p], g.dtype)
        out[p] = g - U @ (U.T @ g)
    return out


# ------------------------------------------------------------------------------------ 3. pseudo-labels


def _with_kernels(params, kernels: Mapping[Path, jax.Array]):
    for p, k in kernels.items():
        params = replace_leaf(params, p, k)
    return params


def influence_pseudo_labels(
    model,
    params,
    forget: Mapping,
    proxies: Proxies,
    bases: Mapping[Path, np.ndarray],
    *,
    candidates: int | None,
    chunk: int = 256,
) -> np.ndarray:
    """Pseudo-labels (n,) or (n, T) of the forget examples (module docstring, step 3)."""
    paths = tuple(bases)
    kernels = {p: get_leaf(params, p) for p in paths}

    def proxy_loss(kernels, batch, delta, labels):
        return cross_entropy(perturbed_logits(model, _with_kernels(params, kernels), batch, delta), labels)

    grad_fn = jax.jit(jax.grad(proxy_loss))
    n_proxies = len(proxies.groups)
    g_proxy = None
    for start in range(0, n_proxies, chunk):
        sl = slice(start, start + chunk)
        sub = {k: v[sl] for k, v in proxies.batch.items()}
        g = grad_fn(kernels, sub, proxies.delta[sl], proxies.labels[sl])
        weight = len(proxies.groups[sl]) / n_proxies
        g = jax.tree.map(lambda a: a * weight, g)  # noqa: B023 (mapped at once)
        g_proxy = g if g_proxy is None else jax.tree.map(jnp.add, g_proxy, g)
    direction = project_out(g_proxy, bases)

    @jax.jit
    def choose(batch):
        def logits_of(kernels):
            return perturbed_logits(model, _with_kernels(params, kernels), batch, None).astype(jnp.float32)

        logits, u = jax.jvp(logits_of, (kernels,), (direction,))
        true = targets_of(model, batch)
        num = logits.shape[-1]
        is_true = jax.nn.one_hot(true, num, dtype=bool)
        k = num - 1 if candidates is None else min(candidates, num - 1)
        # candidate set: the k most probable classes other than the true one
        ranked = jnp.where(is_true, -jnp.inf, logits)
        threshold = jnp.sort(ranked, axis=-1)[..., num - k][..., None]
        allowed = (ranked >= threshold) & ~is_true
        return jnp.argmin(jnp.where(allowed, u, jnp.inf), axis=-1).astype(jnp.int32)

    n = dataset_size(forget)
    out = [np.asarray(choose({k: v[s : s + chunk] for k, v in forget.items()})) for s in range(0, n, chunk)]
    return np.concatenate(out)


# --------------------------------------------------------------------------------------- the method


def unlearn(run_or_inputs: Any, *, config: ZsPagConfig = ZsPagConfig()) -> tuple[Any, dict]:
    """ZS-PAG from the forget set alone. ``info``: proxy count and attack success, per-layer subspace
    dimension, pseudo-label histogram, forget loss before/after, the ``proxies``, the ``pseudo_labels``, the
    bases (``{path: U (in, k)}``) and the work."""
    inputs: UnlearningInputs = as_inputs(run_or_inputs)
    model, params, forget = inputs.model, inputs.params, inputs.forget
    paths = kernel_paths(params, include_head=config.include_head)
    with Stopwatch() as sw:
        proxies = generate_proxies(model, params, forget, config)
        bases = proxy_subspaces(model, params, proxies, paths, threshold=config.energy_threshold)
        pseudo = influence_pseudo_labels(model, params, forget, proxies, bases, candidates=config.label_candidates)
        data = dict(forget, pseudo=pseudo)

        def loss(kernels, batch):
            logits = perturbed_logits(model, _with_kernels(params, kernels), batch, None)
            total = cross_entropy(logits, batch["pseudo"])
            if config.ascent_weight:
                total = total - config.ascent_weight * cross_entropy(logits, targets_of(model, batch))
            return total

        optimizer = optax.sgd(config.learning_rate, momentum=config.momentum or None)
        kernels = {p: get_leaf(params, p) for p in paths}
        opt_state = optimizer.init(kernels)

        @jax.jit
        def step(kernels, opt_state, batch):
            grads = project_out(jax.grad(loss)(kernels, batch), bases)
            updates, opt_state = optimizer.update(grads, opt_state, kernels)
            return optax.apply_updates(kernels, updates), opt_state

        batches = iterate_batches(data, config.batch_size, seed=config.seed)
        for _ in range(config.steps):
            kernels, opt_state = step(kernels, opt_state, next(batches))
        new_params = Stopwatch.ready(_with_kernels(params, kernels))

    eval_loss = jax.jit(lambda p, b: cross_entropy(perturbed_logits(model, p, b, None), targets_of(model, b)))
    proxy_targets = proxies.groups if _is_vision(model) else None
    success = (
        float(np.mean(np.asarray(proxies.labels) == proxy_targets))
        if proxy_targets is not None
        else float(np.mean(np.asarray(proxies.labels) != np.asarray(targets_of(model, proxies.batch))))
    )
    n_proxies = len(proxies.groups)
    n_forget = dataset_size(forget)
    batch = min(config.batch_size, n_forget)
    layer_dims = {p: (get_leaf(params, p).shape[0], bases[p].shape[1], get_leaf(params, p).shape[1]) for p in paths}
    positions = int(np.prod(np.shape(targets_of(model, proxies.batch))[1:], dtype=int))
    # Gram matrices of the layer inputs, then checking one eigen-decomposition per group and the union's
    # (V Λ Vᵀ = Gram and Vᵀ V = I: two in³ products each)
    n_groups = len(np.unique(proxies.groups))
    subspace_macs = sum(
        n_proxies * max(positions, 1) * d_in * d_in + (n_groups + 1) * 2 * d_in**3 for d_in, _, _ in layer_dims.values()
    )
    projection_macs = config.steps * sum(2 * d_in * k * d_out for d_in, k, d_out in layer_dims.values())
    info = {
        "method": "zs_pag",
        "wall_s": sw.seconds,
        "config": config_dict(config),
        "n_proxies": n_proxies,
        "attack_success": success,
        "subspace_dim": {path_name(p): int(bases[p].shape[1]) for p in paths},
        "layer_inputs": {path_name(p): int(bases[p].shape[0]) for p in paths},
        "pseudo_label_counts": np.bincount(np.asarray(pseudo).ravel()).tolist(),
        "forget_loss_before": float(eval_loss(params, forget)),
        "forget_loss_after": float(eval_loss(new_params, forget)),
        "bases": bases,
        "proxies": proxies,
        "pseudo_labels": pseudo,
        "work": (
            StepWork("proxy_generation", "input_grad", config.attack_steps, n_proxies),
            StepWork("proxy_activations", "forward", 1, n_proxies),
            ArithmeticWork(
                "subspaces", macs=int(subspace_macs), lookups=int(sum(d_in for d_in, _, _ in layer_dims.values()))
            ),
            StepWork("influence_gradient", "grad", 1, n_proxies),
            StepWork("influence_jvp", "jvp", 1, n_forget),
            StepWork("unlearn", "train", config.steps, batch, "sgd"),
            ArithmeticWork("projection", macs=int(projection_macs), lookups=0),
        ),
    }
    return new_params, info
