"""What every unlearning method receives and reports, so all of them can sit in one table.

Inputs. :class:`UnlearningInputs` holds the model to unlearn (the client's *personalized* parameters) and
the data each method may use, split by origin:

* ``forget``: the examples to forget, as the model saw them in training (the provider's forget split);
* ``global_retain``: the rest of the global training data (what a full retrain trains the global model on);
* ``personal``: the client's personalization data (it holds no forget example);
* ``masks``: the provider's public mask ``{target path: bool (out, in)}`` of ``W = kernel.T``, for the
  mask-based methods.

Each method reads only what its paper allows: the naive mask reads ``masks``; ZK-APEX reads ``masks`` and
``personal``; gradient ascent reads ``forget`` and retained data; certified fine-tuning reads retained data
only; ZS-PAG reads ``forget`` alone; retraining trains on ``global_retain`` and ``personal`` and reads
``forget`` only to drop any identical example from them.

Outputs. Every method is ``unlearn(inputs, *, config) -> (new_params, info)`` with ``info`` a dict holding at
least ``method``, ``wall_s``, ``config`` (the hyper-parameters, JSON-ready) and ``work``: a tuple of the
work items below, which :mod:`jaxapex.baselines.proof_cost` prices as rows of a circuit that would prove
the method was run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxapex.models import OPT, ViT, batch_loss_fn
from jaxapex.train import dataset_size

Params = dict
Batch = Mapping[str, np.ndarray]
LossFn = Callable[[Params, Batch], jax.Array]  # mean loss over a batch
Path = tuple[str, ...]
Model = ViT | OPT


# ------------------------------------------------------------------------------------------ work items


class StepWork(NamedTuple):
    """``steps`` repetitions of one computation on batches of ``batch_size`` examples.

    kind: ``"forward"`` (loss only), ``"grad"`` (forward and backward, no parameter update), ``"train"``
    (forward, backward and an ``optimizer`` update: ``"sgd"`` or ``"adam"``), ``"input_grad"`` (the
    gradient with respect to the inputs only) or ``"jvp"`` (a forward-mode product).
    """

    phase: str
    kind: str
    steps: int
    batch_size: int
    optimizer: str = "sgd"


class ArithmeticWork(NamedTuple):
    """Extra arithmetic outside model passes (clipping norms, projections, ...): ``macs`` multiply-adds and
    ``lookups`` table lookups (non-linear functions, comparisons, rescales)."""

    phase: str
    macs: int
    lookups: int


class NoiseWork(NamedTuple):
    """``samples`` Gaussian samples that the proof must show were drawn honestly (from a committed seed)."""

    phase: str
    samples: int


class ChunkCircuitWork(NamedTuple):
    """The OBS chunk circuit of :mod:`circuit_compiler.lowering` over the target layers.

    level ``"F"`` proves the Group-OBS update, ``"R"`` the removal alone. ``layer_shapes`` are the ``(out, in)``
    shapes of the target matrices; every chunk of every layer is proven (the model commitment covers them all).
    """

    phase: str
    level: str
    layer_shapes: tuple[tuple[int, int], ...]
    block_size: int
    lanes: int
    blocks_per_chunk: int


Work = StepWork | ArithmeticWork | NoiseWork | ChunkCircuitWork


# ---------------------------------------------------------------------------------------------- inputs


def _row_digests(data: Batch) -> list[bytes]:
    n = dataset_size(data)
    arrays = [np.ascontiguousarray(np.asarray(data[k])) for k in sorted(data)]
    return [hashlib.blake2b(b"".join(a[i].tobytes() for a in arrays), digest_size=16).digest() for i in range(n)]


def example_digests(data: Batch) -> set[bytes]:
    """One digest per example (all its arrays' bytes), to check that two datasets share no example."""
    return set(_row_digests(data))


def check_disjoint(data: Batch, forget: Batch, *, name: str) -> None:
    """``ValueError`` if ``data`` contains any example of ``forget`` (byte-identical rows)."""
    shared = example_digests(data) & example_digests(forget)
    if shared:
        raise ValueError(f"the {name} data holds {len(shared)} example(s) of the forget set")


def without_examples_of(data: Batch, forget: Batch) -> tuple[dict[str, np.ndarray], int]:
    """``data`` without its rows byte-identical to a row of ``forget``, and how many were dropped. (Real
    corpora repeat content — licence headers, blank windows — so another file may hold a forget example.)"""
    forget_digests = example_digests(forget)
    keep = np.array([d not in forget_digests for d in _row_digests(data)], dtype=bool)
    return {k: np.asarray(v)[keep] for k, v in data.items()}, int((~keep).sum())


@dataclasses.dataclass(frozen=True, kw_only=True)
class UnlearningInputs:
    """The personalized model to unlearn and the data the methods may read (see the module docstring).

    model: a :class:`~jaxapex.models.ViT` or :class:`~jaxapex.models.OPT`.
    params: the personalized variables ``{"params": ...}``.
    forget, global_retain, personal: datasets (dicts of equally long arrays; ``{"image", "label"}`` or
        ``{"tokens"}``).
    masks: the provider mask ``{path: bool (out, in)}``; ``None`` when no mask-based method is run.
    loss_fn: mean loss over a batch of global data (forget, global retain); defaults to the model's
        cross-entropy (:func:`jaxapex.models.batch_loss_fn`).
    personal_loss_fn: mean loss over a batch of the client's data, as its personalization used it (e.g.
        restricted to the client's classes); defaults to ``loss_fn``.
    """

    model: Model
    params: Params
    forget: Batch
    global_retain: Batch | None = None
    personal: Batch | None = None
    masks: Mapping[Path, np.ndarray] | None = None
    loss_fn: LossFn | None = None
    personal_loss_fn: LossFn | None = None

    def __post_init__(self) -> None:
        for name in ("forget", "global_retain", "personal"):
            data = getattr(self, name)
            if data is not None and dataset_size(data) == 0:
                raise ValueError(f"UnlearningInputs.{name} is empty")

    @property
    def batch_loss(self) -> LossFn:
        return self.loss_fn if self.loss_fn is not None else batch_loss_fn(self.model)

    @property
    def personal_loss(self) -> LossFn:
        return self.personal_loss_fn if self.personal_loss_fn is not None else self.batch_loss

    def retain_sources(self, which: str) -> list[tuple[Batch, LossFn]]:
        """The retained data as ``[(dataset, its loss)]``: ``"personal"`` (the client's own data),
        ``"global"`` (the global data minus the forget set) or ``"retain"`` (both, each with its own loss)."""
        options = {
            "personal": [("personal", self.personal, self.personal_loss)],
            "global": [("global_retain", self.global_retain, self.batch_loss)],
        }
        options["retain"] = options["global"] + options["personal"]
        if which not in options:
            raise ValueError(f"retain source must be one of {sorted(options)}, got {which!r}")
        sources = [(data, loss) for name, data, loss in options[which] if data is not None]
        if not sources:
            names = [name for name, _, _ in options[which]]
            raise ValueError(f"retain source {which!r} needs UnlearningInputs.{' or '.join(names)}, which is None")
        return sources

    def require(self, *names: str, method: str) -> None:
        missing = [n for n in names if getattr(self, n) is None]
        if missing:
            raise ValueError(f"{method} needs UnlearningInputs.{', '.join(missing)}, which is None")


def mean_of_example_loss(example_loss: Callable) -> LossFn:
    """Mean over a batch of a per-example loss ``f(params, example)`` (``vmap`` over the examples)."""

    def loss(params, batch):
        return jnp.mean(jax.vmap(example_loss, in_axes=(None, 0))(params, batch))

    return loss


def as_inputs(run_or_inputs: Any, **overrides: Any) -> UnlearningInputs:
    """:class:`UnlearningInputs` from itself or from a :class:`jaxapex.tasks.TaskRun` (read by attribute:
    ``model``, ``params_personal``, ``masks``, ``datasets["forget_train" | "retain_train" |
    "personal_train"]``, and the per-example ``provider_example_loss`` / ``client_example_loss``).
    ``overrides`` replace fields."""
    if isinstance(run_or_inputs, UnlearningInputs):
        return dataclasses.replace(run_or_inputs, **overrides) if overrides else run_or_inputs
    run = run_or_inputs
    required = ("model", "params_personal", "datasets", "provider_example_loss", "client_example_loss")
    missing = [name for name in required if not hasattr(run, name)]
    if missing:
        raise TypeError(f"cannot build UnlearningInputs from a {type(run).__name__}: it has no {missing}")
    datasets = run.datasets
    for split in ("forget_train", "retain_train", "personal_train"):
        if split not in datasets:
            raise KeyError(f"{type(run).__name__}.datasets has no {split!r} split (has {sorted(datasets)})")
    fields = dict(
        model=run.model,
        params=run.params_personal,
        forget=datasets["forget_train"],
        global_retain=datasets["retain_train"],
        personal=datasets["personal_train"],
        masks=getattr(run, "masks", None),
        loss_fn=mean_of_example_loss(run.provider_example_loss),
        personal_loss_fn=mean_of_example_loss(run.client_example_loss),
    )
    fields.update(overrides)
    return UnlearningInputs(**fields)


# ----------------------------------------------------------------------------------------- utilities


def config_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (nested) config dataclass."""

    def plain(value):
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (tuple, list)):
            return [plain(v) for v in value]
        if isinstance(value, (np.integer, np.floating)):
            return value.item()
        return value

    return plain(config)


class Stopwatch:
    """``with Stopwatch() as sw: ...`` then ``sw.seconds``; blocks on JAX results passed to :meth:`ready`."""

    def __enter__(self) -> Stopwatch:
        self._start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self._start

    @staticmethod
    def ready(tree: Any) -> Any:
        return jax.block_until_ready(tree)


def global_norm(tree: Any) -> jax.Array:
    return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)))


def clip_by_norm(tree: Any, max_norm: float) -> Any:
    """``tree * min(1, max_norm / ||tree||)`` (the whole pytree as one vector)."""
    norm = global_norm(tree)
    factor = jnp.minimum(1.0, max_norm / jnp.maximum(norm, 1e-30))
    return jax.tree.map(lambda x: (x * factor).astype(x.dtype), tree)


def count_params(tree: Any) -> int:
    return int(sum(np.size(x) for x in jax.tree.leaves(tree)))


def kernel_paths(params: Params, *, include_head: bool = True) -> tuple[Path, ...]:
    """Paths of every ``flax.linen.Dense`` kernel (2-D leaf named ``kernel``), in tree order; the conv patch
    embedding (a 4-D kernel) is excluded. ``include_head=False`` keeps only the kernels inside the blocks."""
    out = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        keys = tuple(str(getattr(k, "key", getattr(k, "name", k))) for k in path)
        if keys[-1] != "kernel" or np.ndim(leaf) != 2:
            continue
        in_block = len(keys) > 1 and keys[1].split("_")[0] in ("block", "layer")
        if include_head or in_block:
            out.append(keys)
    return tuple(out)
