r"""Certified unlearning by noisy fine-tuning on the retain data with gradient clipping (Koloskova, Allouah,
Jha, Guerraoui, Koyejo, "Certified Unlearning for Neural Networks", ICML 2025, the "gradient clipping"
variant).

Algorithm (the whole parameter vector x ∈ R^d is one vector; norms are Euclidean):

    x_0     = Π_{C0}(x̂)                                   x̂ = the model to unlearn, Π_C(v) = v·min(1, C/‖v‖)
    x_{t+1} = x_t − γ (Π_{C1}(g_t) + λ x_t) + ξ_{t+1}      ξ ~ N(0, σ² I_d),  t = 0 … T−1
    then optionally noiseless fine-tuning on the retain data (any optimizer).

``g_t`` is the mean gradient of a mini-batch drawn from the *retain* data only (batch clipping, not
per-example clipping: both processes below see the same batches, so no per-example sensitivity is needed).
With ``retain_source="retain"`` a step draws one batch of the global retain data and one of the client's
data and averages their losses (each source with its own loss, as in training).

Guarantee ((ε, δ)-unlearning). Compare the run started from x̂ = A(D) with the same run started from
A(D \ D_f) (the certifying algorithm). Both start in the ball of radius C0, so their initial distance is at most
2·C0, and they apply the *same* random maps (same retain batches, same step sizes):
φ_t(x) = ρ x − γ Π_{C1}(g_t(x)) with ρ = 1 − γλ. For any x, y,

    ‖φ_t(x) − φ_t(y)‖ ≤ ρ ‖x − y‖ + s,    s = 2 γ C1,

whatever the loss (no smoothness or convexity is used: the clipped gradients differ by at most 2·C1).
Privacy amplification by iteration with shifted Rényi divergences (Feldman, Mironov, Talwar, Thakurta 2018):
a map as above turns a shift z into ρ z + s (data processing on a coupling), and Gaussian noise converts
shift a into divergence α a²/(2σ²). Spending the shifts a_t optimally (Cauchy–Schwarz: a_t ∝ ρ^{T−1−t} σ_t²,
back-loaded, so no intermediate shift goes negative) to bring the final shift to 0 gives, for every order
α > 1 and in both directions,

    D_α(U ‖ Ā) ≤ α · c,     c = K² / (2 Σ_{t=0}^{T−1} ρ^{2(T−1−t)} σ²),
    K = ρ^T · 2 C0 + Σ_{t=0}^{T−1} ρ^{T−1−t} · 2 γ C1.

(:func:`rdp_coefficient`; with λ = 0: K = 2 C0 + 2 γ C1 T and the denominator is 2 T σ².) This Rényi bound
converts to (ε, δ) by the conversion of Canonne, Kamath and Steinke (2020, Prop. 12) / Balle et al. (2020):

    ε(δ) = min_{α > 1}  α c + log((α − 1)/α) − (log δ + log α)/(α − 1)          (:func:`rdp_to_dp`)

and noiseless fine-tuning on the retain data afterwards is post-processing, so it keeps the guarantee.
Calibration (:func:`noise_std`) inverts this: the largest c with ε(c) ≤ ε_target (ε(c) is increasing in c;
found by bracketing on log c), then σ = K / sqrt(2 c Σ_t ρ^{2(T−1−t)}).

Assumptions, stated plainly: the batches and step sizes are chosen independently of the forget set; the
learning rate is constant and ρ = 1 − γλ ∈ (0, 1]; the noise is exactly Gaussian (float sampling is not
modelled); the guarantee is about the parameters after the noisy phase, not about any intermediate model.
The authors' public configurations use a 10 % random forget set, batches of 128 and δ = 1e-5 (the defaults
here). ``steps=None`` uses their rule of thumb: T = ⌈C0/(γ C1)⌉, or with λ > 0 the smaller
⌈log(2 λ C0 / C1)/(γ λ)⌉ when positive (after it the C0 term of K is below the gradient term 2 C1/λ).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import numpy as np
import optax
from scipy import optimize

from jaxapex.baselines.common import (
    ArithmeticWork,
    NoiseWork,
    StepWork,
    Stopwatch,
    UnlearningInputs,
    as_inputs,
    clip_by_norm,
    config_dict,
    count_params,
    global_norm,
)
from jaxapex.train import dataset_size, iterate_batches

RETAIN_SOURCES = ("retain", "global", "personal")


@dataclasses.dataclass(frozen=True, kw_only=True)
class CertifiedConfig:
    """Target ``epsilon``/``delta``; model clip ``model_clip`` C0 (``None``: the model's own norm, so the
    initial clip is the identity); gradient clip ``grad_clip`` C1; constant step ``learning_rate`` γ; L2
    ``weight_decay`` λ; ``steps`` T (``None``: the paper's rule); ``batch_size`` of the retain batches; then
    ``finetune_steps`` of noiseless Adam fine-tuning at ``finetune_learning_rate``.

    The defaults of the noisy phase are the authors' public MNIST configuration (C0 = 0.01, C1 = 10,
    λ = 750, γ = 1e-4, batch 128, δ = 1e-5): the model is shrunk almost to the origin, a few noisy steps
    make it indistinguishable from a model that never saw the forget set, and the noiseless fine-tuning on
    the retain data then does the work of relearning."""

    epsilon: float = 1.0
    delta: float = 1e-5
    model_clip: float | None = 0.01
    grad_clip: float = 10.0
    learning_rate: float = 1e-4
    weight_decay: float = 750.0
    steps: int | None = None
    batch_size: int = 128
    retain_source: str = "retain"
    finetune_steps: int = 0
    finetune_learning_rate: float = 1e-3
    finetune_batch_size: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.epsilon > 0 or not 0 < self.delta < 1:
            raise ValueError(f"CertifiedConfig needs epsilon > 0 and 0 < delta < 1, got {self.epsilon}, {self.delta}")
        if self.model_clip is not None and not self.model_clip > 0:
            raise ValueError(f"CertifiedConfig.model_clip must be positive or None, got {self.model_clip}")
        if not self.grad_clip > 0 or not self.learning_rate > 0 or self.weight_decay < 0:
            raise ValueError(
                f"CertifiedConfig needs grad_clip > 0, learning_rate > 0, weight_decay >= 0; got "
                f"{self.grad_clip}, {self.learning_rate}, {self.weight_decay}"
            )
        if not self.learning_rate * self.weight_decay < 1:
            raise ValueError(
                f"CertifiedConfig: learning_rate * weight_decay = {self.learning_rate * self.weight_decay} must be "
                "< 1 (the contraction factor 1 - γλ must be positive)"
            )
        if self.steps is not None and self.steps <= 0:
            raise ValueError(f"CertifiedConfig.steps must be positive or None, got {self.steps}")
        if self.finetune_steps < 0 or self.batch_size <= 0 or self.finetune_batch_size <= 0:
            raise ValueError("CertifiedConfig: batch sizes must be positive and finetune_steps >= 0")
        if self.retain_source not in RETAIN_SOURCES:
            raise ValueError(
                f"CertifiedConfig.retain_source must be one of {RETAIN_SOURCES}, got {self.retain_source!r}"
            )


# ------------------------------------------------------------------------------------------ accounting


def default_steps(*, model_clip: float, grad_clip: float, learning_rate: float, weight_decay: float) -> int:
    """The authors' rule of thumb for T (see the module docstring)."""
    steps = math.ceil(model_clip / (grad_clip * learning_rate))
    if weight_decay > 0:
        shorter = math.ceil(math.log(2 * weight_decay * model_clip / grad_clip) / (learning_rate * weight_decay))
        if 0 < shorter < steps:
            steps = shorter
    return max(1, steps)


def shift_budget(
    *, model_clip: float, grad_clip: float, learning_rate: float, weight_decay: float, steps: int
) -> float:
    """K = ρ^T · 2 C0 + Σ_t ρ^{T−1−t} · 2 γ C1 with ρ = 1 − γλ: the total shift the noise must absorb."""
    rho = 1.0 - learning_rate * weight_decay
    geometric = steps if rho == 1.0 else (1.0 - rho**steps) / (1.0 - rho)
    return rho**steps * 2.0 * model_clip + 2.0 * learning_rate * grad_clip * geometric


def noise_weight(*, learning_rate: float, weight_decay: float, steps: int) -> float:
    """Σ_{t<T} ρ^{2(T−1−t)}: how much of each step's noise variance survives to the end."""
    rho = 1.0 - learning_rate * weight_decay
    return float(steps) if rho == 1.0 else (1.0 - rho ** (2 * steps)) / (1.0 - rho**2)


def rdp_coefficient(
    sigma: float, *, model_clip: float, grad_clip: float, learning_rate: float, weight_decay: float, steps: int
) -> float:
    """c such that the noisy phase is (α, α·c)-Rényi-unlearning for every α > 1."""
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    k = shift_budget(
        model_clip=model_clip, grad_clip=grad_clip, learning_rate=learning_rate, weight_decay=weight_decay, steps=steps
    )
    return (
        k
        * k
        / (2.0 * sigma * sigma * noise_weight(learning_rate=learning_rate, weight_decay=weight_decay, steps=steps))
    )


def _conversion(alpha: np.ndarray, c: float, delta: float) -> np.ndarray:
    return alpha * c + np.log1p(-1.0 / alpha) - (math.log(delta) + np.log(alpha)) / (alpha - 1.0)


def rdp_to_dp(c: float, delta: float) -> tuple[float, float]:
    """(ε, α*) from D_α ≤ α c for all α > 1: the minimum over α of the CKS conversion (module docstring).

    A log-spaced grid of α − 1 in [1e-4, 1e8] locates the minimum; a bounded scalar search refines it.
    """
    if not c > 0 or not 0 < delta < 1:
        raise ValueError(f"rdp_to_dp needs c > 0 and 0 < delta < 1, got c={c}, delta={delta}")
    log_excess = np.linspace(math.log(1e-4), math.log(1e8), 4001)
    values = _conversion(1.0 + np.exp(log_excess), c, delta)
    i = int(np.argmin(values))
    lo, hi = log_excess[max(i - 1, 0)], log_excess[min(i + 1, len(log_excess) - 1)]
    res = optimize.minimize_scalar(
        lambda u: float(_conversion(1.0 + math.exp(u), c, delta)),
        bounds=(lo, hi),
        method="bounded",
        options={"xatol": 1e-10},
    )
    best_u, best = (res.x, float(res.fun)) if res.fun < values[i] else (log_excess[i], float(values[i]))
    return best, 1.0 + math.exp(best_u)


def rdp_coefficient_for(epsilon: float, delta: float) -> float:
    """The largest c whose conversion :func:`rdp_to_dp` gives at most ``epsilon`` at ``delta``."""
    if not epsilon > 0 or not 0 < delta < 1:
        raise ValueError(f"need epsilon > 0 and 0 < delta < 1, got {epsilon}, {delta}")
    f = lambda log_c: rdp_to_dp(math.exp(log_c), delta)[0] - epsilon
    lo, hi = math.log(1e-14), math.log(1e6)
    if f(lo) > 0:
        raise ValueError(f"epsilon={epsilon} is unreachable at delta={delta} (even c=1e-14 gives more)")
    return math.exp(optimize.brentq(f, lo, hi, xtol=1e-12, rtol=1e-12))


def noise_std(
    *,
    epsilon: float,
    delta: float,
    model_clip: float,
    grad_clip: float,
    learning_rate: float,
    weight_decay: float,
    steps: int,
) -> float:
    """σ of the per-step Gaussian noise for (ε, δ)-unlearning after ``steps`` noisy steps."""
    c = rdp_coefficient_for(epsilon, delta)
    k = shift_budget(
        model_clip=model_clip, grad_clip=grad_clip, learning_rate=learning_rate, weight_decay=weight_decay, steps=steps
    )
    return k / math.sqrt(2.0 * c * noise_weight(learning_rate=learning_rate, weight_decay=weight_decay, steps=steps))


def achieved_guarantee(sigma: float, *, delta: float, **schedule) -> dict[str, float]:
    """(ε, δ) actually achieved with noise ``sigma`` (and the Rényi coefficient and best order behind it)."""
    c = rdp_coefficient(sigma, **schedule)
    epsilon, alpha = rdp_to_dp(c, delta)
    return {"epsilon": epsilon, "delta": delta, "rdp_coefficient": c, "alpha": alpha}


# ------------------------------------------------------------------------------------------- the method


def noisy_step_fn(loss_fn, *, grad_clip: float, learning_rate: float, weight_decay: float, sigma: float):
    """jit: (params, key, batch) → params − γ(Π_{C1}(∇loss) + λ params) + σ·N(0, I)."""

    @jax.jit
    def step(params, key, batch):
        grads = clip_by_norm(jax.grad(loss_fn)(params, batch), grad_clip)
        leaves, treedef = jax.tree.flatten(params)
        keys = jax.random.split(key, len(leaves))
        grad_leaves = treedef.flatten_up_to(grads)
        new = [
            p - learning_rate * (g + weight_decay * p) + sigma * jax.random.normal(k, p.shape, p.dtype)
            for p, g, k in zip(leaves, grad_leaves, keys)
        ]
        return jax.tree.unflatten(treedef, new)

    return step


def unlearn(run_or_inputs: Any, *, config: CertifiedConfig = CertifiedConfig()) -> tuple[Any, dict]:
    """Clip, T noisy clipped-gradient steps on the retain data, optional noiseless fine-tuning.

    ``info``: ``sigma``, ``steps``, ``model_clip``, ``initial_norm``, the achieved ``epsilon``/``delta``
    (with ``rdp_coefficient`` and ``alpha``), and the work.
    """
    inputs: UnlearningInputs = as_inputs(run_or_inputs)
    sources = inputs.retain_sources(config.retain_source)
    losses = [loss for _, loss in sources]

    def loss_fn(params, batches):  # the mean of each retained source's own loss on its batch
        return sum(loss(params, b) for loss, b in zip(losses, batches)) / len(batches)

    def draw(streams):
        return [next(stream) for stream in streams]

    initial_norm = float(global_norm(inputs.params))
    model_clip = initial_norm if config.model_clip is None else float(config.model_clip)
    steps = config.steps or default_steps(
        model_clip=model_clip,
        grad_clip=config.grad_clip,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
    )
    schedule = dict(
        model_clip=model_clip,
        grad_clip=config.grad_clip,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        steps=steps,
    )
    sigma = noise_std(epsilon=config.epsilon, delta=config.delta, **schedule)
    guarantee = achieved_guarantee(sigma, delta=config.delta, **schedule)

    step = noisy_step_fn(
        loss_fn,
        grad_clip=config.grad_clip,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        sigma=sigma,
    )
    key = jax.random.PRNGKey(config.seed)
    noisy_streams = [
        iterate_batches(data, config.batch_size, seed=config.seed + i) for i, (data, _) in enumerate(sources)
    ]
    with Stopwatch() as sw:
        params = clip_by_norm(inputs.params, model_clip)
        for _ in range(steps):
            key, sub = jax.random.split(key)
            params = step(params, sub, draw(noisy_streams))
        noisy_norm = float(global_norm(params))
        if config.finetune_steps:
            optimizer = optax.adam(config.finetune_learning_rate)

            @jax.jit
            def finetune_step(params, opt_state, batch):
                grads = jax.grad(loss_fn)(params, batch)
                updates, opt_state = optimizer.update(grads, opt_state, params)
                return optax.apply_updates(params, updates), opt_state

            opt_state = optimizer.init(params)
            tune_streams = [
                iterate_batches(data, config.finetune_batch_size, seed=config.seed + 100 + i)
                for i, (data, _) in enumerate(sources)
            ]
            for _ in range(config.finetune_steps):
                params, opt_state = finetune_step(params, opt_state, draw(tune_streams))
        Stopwatch.ready(params)

    d = count_params(inputs.params)
    noisy_batch = sum(min(config.batch_size, dataset_size(data)) for data, _ in sources)
    tune_batch = sum(min(config.finetune_batch_size, dataset_size(data)) for data, _ in sources)
    work = [
        ArithmeticWork("model_clip", macs=2 * d, lookups=2),  # norm, scale; one sqrt and one division
        StepWork("noisy_descent", "train", steps, noisy_batch, "sgd"),
        ArithmeticWork("gradient_clip", macs=2 * d * steps, lookups=2 * steps),
        NoiseWork("gaussian_noise", samples=d * steps),
    ]
    if config.finetune_steps:
        work.append(StepWork("finetune", "train", config.finetune_steps, tune_batch, "adam"))
    info = {
        "method": "certified",
        "wall_s": sw.seconds,
        "config": config_dict(config),
        "sigma": sigma,
        "steps": steps,
        "model_clip": model_clip,
        "initial_norm": initial_norm,
        "noisy_norm": noisy_norm,
        "shift_budget": shift_budget(**schedule),
        **guarantee,
        "work": tuple(work),
    }
    return params, info
