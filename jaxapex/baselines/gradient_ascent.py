"""Gradient ascent on the forget set with a retain (descent) term ("gradient difference").

Each step draws a forget batch ``B_f`` and a retain batch ``B_r`` and follows the gradient of

    L(θ) = −min(CE(θ; B_f), cap) + retain_weight · CE(θ; B_r)

so the loss on the forget set goes *up* while the loss on retained data is held down. ``cap`` (optional)
stops the ascent once the forget loss is high enough, the usual guard against the divergence of unbounded
ascent. The retain batches come from the client's own data (``retain_source="personal"``, the default: the
client runs the unlearning, with its personalization loss), from the global data minus the forget set
(``"global"``), from both (``"retain"``, one batch of each, each with its own loss, averaged), or are left
out (``"none"``: pure ascent).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxapex.baselines.common import (
    StepWork,
    Stopwatch,
    UnlearningInputs,
    as_inputs,
    config_dict,
    kernel_paths,
)
from jaxapex.train import dataset_size, iterate_batches

RETAIN_SOURCES = ("personal", "global", "retain", "none")
TRAINABLE = ("all", "kernels", "targets")


@dataclasses.dataclass(frozen=True, kw_only=True)
class GradientAscentConfig:
    """steps, batch sizes and ``learning_rate`` of the ``optimizer`` (``"adam"`` or ``"sgd"``);
    ``trainable``: ``"all"`` parameters, every Dense ``"kernels"``, or only the mask's ``"targets"``."""

    steps: int = 50
    forget_batch_size: int = 32
    retain_batch_size: int = 64
    learning_rate: float = 1e-4
    retain_weight: float = 1.0
    forget_loss_cap: float | None = None
    optimizer: str = "adam"
    retain_source: str = "personal"
    trainable: str = "all"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps <= 0 or self.forget_batch_size <= 0 or self.retain_batch_size <= 0:
            raise ValueError(
                f"GradientAscentConfig needs positive steps and batch sizes, got steps={self.steps}, "
                f"forget_batch_size={self.forget_batch_size}, retain_batch_size={self.retain_batch_size}"
            )
        if not self.learning_rate > 0:
            raise ValueError(f"GradientAscentConfig.learning_rate must be positive, got {self.learning_rate}")
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"GradientAscentConfig.optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        if self.retain_source not in RETAIN_SOURCES:
            raise ValueError(
                f"GradientAscentConfig.retain_source must be one of {RETAIN_SOURCES}, got {self.retain_source!r}"
            )
        if self.trainable not in TRAINABLE:
            raise ValueError(f"GradientAscentConfig.trainable must be one of {TRAINABLE}, got {self.trainable!r}")


def trainable_labels(params: Any, paths: set | None) -> Any:
    """A tree like ``params`` with ``"train"`` on the leaves in ``paths`` (all leaves if ``None``) and
    ``"freeze"`` elsewhere, for :func:`optax.multi_transform`."""

    def label(path, _leaf):
        keys = tuple(str(getattr(k, "key", getattr(k, "name", k))) for k in path)
        return "train" if paths is None or keys in paths else "freeze"

    return jax.tree_util.tree_map_with_path(label, params)


def make_optimizer(params: Any, *, name: str, learning_rate: float, trainable: set | None):
    inner = optax.adam(learning_rate) if name == "adam" else optax.sgd(learning_rate)
    return optax.multi_transform({"train": inner, "freeze": optax.set_to_zero()}, trainable_labels(params, trainable))


def _trainable_paths(inputs: UnlearningInputs, which: str) -> set | None:
    if which == "all":
        return None
    if which == "kernels":
        return set(kernel_paths(inputs.params))
    inputs.require("masks", method="gradient_ascent with trainable='targets'")
    return {tuple(p) for p in inputs.masks}


def mean_loss(loss_fn, params, data, *, batch_size: int = 256) -> float:
    """Mean of ``loss_fn`` over ``data`` in batches (weighted by batch size)."""
    n = dataset_size(data)
    total = 0.0
    for start in range(0, n, batch_size):
        chunk = {k: v[start : start + batch_size] for k, v in data.items()}
        total += float(loss_fn(params, chunk)) * dataset_size(chunk)
    return total / n


def unlearn(run_or_inputs: Any, *, config: GradientAscentConfig = GradientAscentConfig()) -> tuple[Any, dict]:
    """Ascent on ``inputs.forget`` with the retain term. ``info``: forget and retain losses before/after."""
    inputs: UnlearningInputs = as_inputs(run_or_inputs)
    sources = [] if config.retain_source == "none" else inputs.retain_sources(config.retain_source)
    retain_losses = [loss for _, loss in sources]
    loss_fn = jax.jit(inputs.batch_loss)
    cap = jnp.inf if config.forget_loss_cap is None else float(config.forget_loss_cap)
    optimizer = make_optimizer(
        inputs.params,
        name=config.optimizer,
        learning_rate=config.learning_rate,
        trainable=_trainable_paths(inputs, config.trainable),
    )

    def objective(params, forget_batch, retain_batches):
        forget_loss = inputs.batch_loss(params, forget_batch)
        total = -jnp.minimum(forget_loss, cap)
        if retain_batches:
            retain_loss = sum(loss(params, b) for loss, b in zip(retain_losses, retain_batches)) / len(retain_batches)
            total = total + config.retain_weight * retain_loss
        return total, forget_loss

    @jax.jit
    def step(params, opt_state, forget_batch, retain_batches):
        (_, forget_loss), grads = jax.value_and_grad(objective, has_aux=True)(params, forget_batch, retain_batches)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, forget_loss

    jitted_retain_losses = [jax.jit(loss) for loss in retain_losses]

    def retain_loss_of(params):
        if not sources:
            return None
        return sum(mean_loss(loss, params, data) for (data, _), loss in zip(sources, jitted_retain_losses)) / len(
            sources
        )

    forget_before = mean_loss(loss_fn, inputs.params, inputs.forget)
    retain_before = retain_loss_of(inputs.params)
    forget_batches = iterate_batches(inputs.forget, config.forget_batch_size, seed=config.seed)
    retain_streams = [
        iterate_batches(data, config.retain_batch_size, seed=config.seed + 1 + i) for i, (data, _) in enumerate(sources)
    ]
    params, opt_state = inputs.params, optimizer.init(inputs.params)
    with Stopwatch() as sw:
        for _ in range(config.steps):
            retain_batches = [next(stream) for stream in retain_streams]
            params, opt_state, _ = step(params, opt_state, next(forget_batches), retain_batches)
        Stopwatch.ready(params)
    forget_after = mean_loss(loss_fn, params, inputs.forget)
    if not np.isfinite(forget_after):
        raise FloatingPointError(
            f"gradient ascent diverged (forget loss {forget_after}); lower learning_rate={config.learning_rate} "
            "or set forget_loss_cap"
        )
    forget_batch = min(config.forget_batch_size, dataset_size(inputs.forget))
    retain_batch = sum(min(config.retain_batch_size, dataset_size(data)) for data, _ in sources)
    work = (
        StepWork("ascent_forget", "grad", config.steps, forget_batch),
        # one optimizer update per step, with the retain examples' forward and backward passes
        StepWork("descent_retain", "train", config.steps, retain_batch, config.optimizer),
    )
    info = {
        "method": "gradient_ascent",
        "wall_s": sw.seconds,
        "config": config_dict(config),
        "forget_loss_before": forget_before,
        "forget_loss_after": forget_after,
        "retain_loss_before": retain_before,
        "retain_loss_after": retain_loss_of(params),
        "work": work,
    }
    return params, info
