"""Training with optax: global training, and client personalization (layer-wise learning-rate decay,
frozen early blocks, optional LoRA merged back into the weights).

Everything works on the variables dict ``{"params": ...}`` and on datasets given as dicts of equally long
NumPy arrays (``{"image", "label"}`` or ``{"tokens"}``); batches are drawn by seeded epoch permutations,
so a run is a pure function of its inputs and seed.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

Params = dict
Batch = Mapping[str, np.ndarray]
LossFn = Callable[[Params, Batch], jax.Array]  # mean loss over a batch
Path = tuple[str, ...]

# Top-level parameter names that sit below the first block (depth 0) in either model.
EMBEDDING_NAMES = frozenset({"patch_embed", "cls_token", "pos_embed", "embed_tokens", "embed_positions"})
_BLOCK_NAME = re.compile(r"^(?:block|layer)_(\d+)$")


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Plain AdamW with linear warmup and cosine decay, gradient clipping by global norm."""

    steps: int
    batch_size: int
    learning_rate: float
    weight_decay: float = 0.0
    warmup_steps: int = 0
    grad_clip: float | None = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps <= 0 or self.batch_size <= 0 or self.learning_rate <= 0:
            raise ValueError(
                f"TrainConfig needs positive steps, batch_size and learning_rate, got "
                f"steps={self.steps}, batch_size={self.batch_size}, learning_rate={self.learning_rate}"
            )
        if not 0 <= self.warmup_steps < self.steps:
            raise ValueError(f"warmup_steps={self.warmup_steps} must be in [0, steps={self.steps})")


@dataclasses.dataclass(frozen=True, kw_only=True)
class PersonalizeConfig:
    """Client fine-tuning.

    layer_decay: learning rate of depth d is ``learning_rate * layer_decay ** (top - d)`` where depth 0
        holds the embeddings, depth i + 1 block i, and ``top = num_blocks + 1`` the final norm and head.
    freeze_blocks: ``None`` trains everything; ``k >= 0`` freezes the embeddings and blocks 0..k-1.
    lora_rank: ``None`` fine-tunes the weights directly; ``r > 0`` instead trains rank-r adapters on the
        kernels of ``lora_targets`` (attention and/or MLP Dense layers of the blocks) and merges them into
        the weights at the end (the non-LoRA leaves are then frozen).
    """

    train: TrainConfig
    layer_decay: float = 1.0
    freeze_blocks: int | None = None
    lora_rank: int | None = None
    lora_alpha: float = 16.0
    lora_targets: tuple[str, ...] = ("attn", "mlp")

    def __post_init__(self) -> None:
        if not 0 < self.layer_decay <= 1:
            raise ValueError(f"layer_decay must be in (0, 1], got {self.layer_decay}")
        if self.freeze_blocks is not None and self.freeze_blocks < 0:
            raise ValueError(f"freeze_blocks must be None or >= 0, got {self.freeze_blocks}")
        if self.lora_rank is not None and self.lora_rank <= 0:
            raise ValueError(f"lora_rank must be None or positive, got {self.lora_rank}")
        if not set(self.lora_targets) <= {"attn", "mlp"} or not self.lora_targets:
            raise ValueError(f"lora_targets must be a non-empty subset of ('attn', 'mlp'), got {self.lora_targets}")


@dataclasses.dataclass
class TrainHistory:
    steps: list[int] = dataclasses.field(default_factory=list)
    losses: list[float] = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    @property
    def final_loss(self) -> float:
        return self.losses[-1] if self.losses else float("nan")


def dataset_size(data: Batch) -> int:
    sizes = {k: len(v) for k, v in data.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"dataset arrays differ in length: {sizes}")
    return next(iter(sizes.values()))


def iterate_batches(data: Batch, batch_size: int, *, seed: int) -> Iterator[dict[str, np.ndarray]]:
    """Endless batches from seeded epoch permutations (drop-last; the whole set if it is smaller)."""
    n = dataset_size(data)
    if n == 0:
        raise ValueError("cannot train on an empty dataset")
    size = min(batch_size, n)
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(n)
        for start in range(0, n - size + 1, size):
            idx = order[start : start + size]
            yield {k: v[idx] for k, v in data.items()}


def make_optimizer(cfg: TrainConfig, *, learning_rate_scale: float = 1.0) -> optax.GradientTransformation:
    peak = cfg.learning_rate * learning_rate_scale
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0 if cfg.warmup_steps else peak,
        peak_value=peak,
        warmup_steps=cfg.warmup_steps,
        decay_steps=cfg.steps,
        end_value=peak * 0.01,
    )
    chain = [optax.clip_by_global_norm(cfg.grad_clip)] if cfg.grad_clip else []
    return optax.chain(*chain, optax.adamw(schedule, weight_decay=cfg.weight_decay))


def fit(
    loss_fn: LossFn,
    params: Params,
    data: Batch,
    cfg: TrainConfig,
    *,
    optimizer: optax.GradientTransformation | None = None,
    log_every: int = 0,
    log: Callable[[str], None] = print,
    frozen: Params | None = None,
) -> tuple[Params, TrainHistory]:
    """Minimize ``loss_fn(params, batch)`` for ``cfg.steps`` steps; returns the new params and losses.

    ``frozen``: arrays the loss reads but does not train (a LoRA base model); then the loss is called as
    ``loss_fn(params, batch, frozen)``. They enter the compiled step as arguments: closed over, a large
    model would be folded into the program as constants (minutes of XLA compile time for 100 M weights).
    """
    optimizer = optimizer or make_optimizer(cfg)
    opt_state = optimizer.init(params)
    objective = loss_fn if frozen is not None else (lambda p, batch, _frozen: loss_fn(p, batch))

    @jax.jit
    def step(params, opt_state, batch, frozen):
        loss, grads = jax.value_and_grad(objective)(params, batch, frozen)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    history = TrainHistory()
    start = time.perf_counter()
    batches = iterate_batches(data, cfg.batch_size, seed=cfg.seed)
    for i in range(cfg.steps):
        params, opt_state, loss = step(params, opt_state, next(batches), frozen)
        if log_every and (i % log_every == 0 or i == cfg.steps - 1):
            history.steps.append(i)
            history.losses.append(float(loss))
            log(f"step {i:5d}  loss {float(loss):.4f}")
    if not history.losses:
        history.steps.append(cfg.steps - 1)
        history.losses.append(float(loss))
    if not np.isfinite(history.final_loss):
        raise FloatingPointError(f"training diverged: final loss {history.final_loss} (lr={cfg.learning_rate})")
    history.seconds = time.perf_counter() - start
    return params, history


# ----------------------------------------------------------------------------------------------- depths


def _keys(path) -> Path:
    return tuple(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def _module_name(keys: Path) -> str:
    """The top-level module of a leaf (skipping the ``params`` collection name)."""
    return keys[1] if keys and keys[0] == "params" and len(keys) > 1 else keys[0]


def _block_names(params: Params) -> set[str]:
    return {_module_name(_keys(p)) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]}


def num_blocks(params: Params) -> int:
    return sum(1 for n in _block_names(params) if _BLOCK_NAME.match(n))


def layer_depths(params: Params) -> Params:
    """A tree like ``params`` holding each leaf's depth: 0 embeddings, i + 1 for block i, top for the rest."""
    top = num_blocks(params) + 1

    def depth(path, _leaf) -> int:
        name = _module_name(_keys(path))
        if name in EMBEDDING_NAMES:
            return 0
        match = _BLOCK_NAME.match(name)
        return int(match.group(1)) + 1 if match else top

    return jax.tree_util.tree_map_with_path(depth, params)


def personalization_optimizer(params: Params, cfg: PersonalizeConfig) -> optax.GradientTransformation:
    """Per-depth AdamW with layer-wise learning-rate decay; frozen depths get zero updates (and no state)."""
    depths = layer_depths(params)
    top = num_blocks(params) + 1
    frozen_below = -1 if cfg.freeze_blocks is None else cfg.freeze_blocks + 1
    if frozen_below > top:
        raise ValueError(f"freeze_blocks={cfg.freeze_blocks} would freeze everything (model has {top - 1} blocks)")
    labels = jax.tree.map(lambda d: "frozen" if d < frozen_below else f"depth_{d}", depths)
    transforms: dict[str, optax.GradientTransformation] = {"frozen": optax.set_to_zero()}
    for d in range(top + 1):
        transforms[f"depth_{d}"] = make_optimizer(cfg.train, learning_rate_scale=cfg.layer_decay ** (top - d))
    return optax.multi_transform(transforms, labels)


# ------------------------------------------------------------------------------------------------ LoRA


def _get(tree: Mapping, path: Path):
    for key in path:
        tree = tree[key]
    return tree


def _set(tree: Mapping, path: Path, value) -> dict:
    """Copy-on-write update of one leaf of a nested dict."""
    if not path:
        return value
    out = dict(tree)
    out[path[0]] = _set(tree[path[0]], path[1:], value)
    return out


def lora_target_paths(params: Params, targets: Sequence[str] = ("attn", "mlp")) -> tuple[Path, ...]:
    """Kernels of the blocks' attention and/or MLP Dense layers, in tree order."""
    out = []
    for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]:
        keys = _keys(path)
        if keys[-1] == "kernel" and len(keys) >= 3 and keys[-3] in targets and _BLOCK_NAME.match(_module_name(keys)):
            out.append(keys)
    if not out:
        raise ValueError(f"no block kernels under {tuple(targets)} to adapt with LoRA")
    return tuple(out)


def lora_init(params: Params, paths: Sequence[Path], *, rank: int, seed: int) -> dict[str, dict[str, jax.Array]]:
    """Adapters ``{"a/b/kernel": {"a": (in, r), "b": (r, out)}}``: ``a`` ~ N(0, 1/in), ``b`` = 0, so the
    merged model starts exactly at ``params``."""
    keys = jax.random.split(jax.random.PRNGKey(seed), len(paths))
    adapters = {}
    for key, path in zip(keys, paths):
        n_in, n_out = _get(params, path).shape
        adapters["/".join(path)] = {
            "a": jax.random.normal(key, (n_in, rank), jnp.float32) / np.sqrt(n_in),
            "b": jnp.zeros((rank, n_out), jnp.float32),
        }
    return adapters


def lora_merge(params: Params, adapters: Mapping[str, Mapping[str, jax.Array]], *, alpha: float) -> Params:
    """``kernel + (alpha / r) · a @ b`` for every adapted kernel; other leaves unchanged."""
    for name, ab in adapters.items():
        path = tuple(name.split("/"))
        rank = ab["a"].shape[1]
        kernel = _get(params, path)
        params = _set(params, path, kernel + (alpha / rank) * (ab["a"] @ ab["b"]).astype(kernel.dtype))
    return params


def _adapter_optimizer(adapters: Mapping[str, Mapping], params: Params, cfg: PersonalizeConfig):
    """Layer-wise learning-rate decay over the adapters, by the depth of the kernel each one adapts.

    The top depth counts from the highest block index, so a tree holding only the last blocks of a model
    (the rest run once, frozen) gets the same rates as the whole tree."""

    def depth(name: str) -> int:
        return int(_BLOCK_NAME.match(_module_name(tuple(name.split("/")))).group(1)) + 1

    indices = [int(m.group(1)) for m in map(_BLOCK_NAME.match, _block_names(params)) if m]
    top = max(indices) + 2

    def label_tree(name: str, adapter: Params) -> Params:
        label = f"depth_{depth(name)}"
        return jax.tree.map(lambda _: label, adapter)

    labels = {name: label_tree(name, ab) for name, ab in adapters.items()}
    transforms = {
        f"depth_{d}": make_optimizer(cfg.train, learning_rate_scale=cfg.layer_decay ** (top - d))
        for d in range(top + 1)
    }
    return optax.multi_transform(transforms, labels)


def personalize(
    loss_fn: LossFn,
    params: Params,
    data: Batch,
    cfg: PersonalizeConfig,
    *,
    log_every: int = 0,
    log: Callable[[str], None] = print,
) -> tuple[Params, TrainHistory]:
    """Fine-tune ``params`` on the client's data.

    With ``cfg.lora_rank`` the base weights stay fixed, adapters are trained on the unfrozen blocks (with
    the same layer-wise decay) and merged into the kernels of the returned params.
    """
    if cfg.lora_rank is None:
        return fit(
            loss_fn,
            params,
            data,
            cfg.train,
            optimizer=personalization_optimizer(params, cfg),
            log_every=log_every,
            log=log,
        )
    first_trainable = 0 if cfg.freeze_blocks is None else cfg.freeze_blocks
    paths = [
        p
        for p in lora_target_paths(params, cfg.lora_targets)
        if int(_BLOCK_NAME.match(_module_name(p)).group(1)) >= first_trainable
    ]
    if not paths:
        raise ValueError(f"freeze_blocks={cfg.freeze_blocks} leaves no block to adapt with LoRA")
    adapters = lora_init(params, paths, rank=cfg.lora_rank, seed=cfg.train.seed)

    def adapter_loss(adapters, batch, base):
        return loss_fn(lora_merge(base, adapters, alpha=cfg.lora_alpha), batch)

    adapters, history = fit(
        adapter_loss,
        adapters,
        data,
        cfg.train,
        optimizer=_adapter_optimizer(adapters, params, cfg),
        log_every=log_every,
        log=log,
        frozen=params,
    )
    return lora_merge(params, adapters, alpha=cfg.lora_alpha), history
