"""What it would cost to *prove* that an unlearning method was run: rows and cells of a PLONKish circuit.

Two sources, kept apart:

* **Measured** — ZK-APEX (level F) and the naive mask (level R) are proven by the chunk circuit of
  :mod:`circuit_compiler.lowering`. Their rows are the compiled circuit's rows
  (``build_chunk_circuit(shape).cs.rows``, range table included) times the number of chunks covering the
  target layers: ``ceil(out·in / B / blocks_per_chunk)`` per layer, every chunk proven because the model
  commitment covers them all.
* **Modelled** — methods that train (retraining, gradient ascent, noisy fine-tuning, ZS-PAG) would need a
  circuit for every step they ran. Its cost is counted from the step's *own program*: the jaxpr of
  forward + backward (+ the optimizer update) at the batch size actually used, walked primitive by primitive:

  - ``dot_general`` / ``conv_general_dilated``: their multiply-accumulates (MACs), and one fixed-point
    rescale per output element;
  - elementwise products (``mul``, ``square``, ``integer_pow``, ``div``): one MAC each (``integer_pow`` of
    power n: n − 1), plus a rescale (``div`` also a range check);
  - non-linear functions (``exp``, ``log``, ``erf``, ``rsqrt``, ``sqrt``, ``tanh``, ...): one table lookup per
    output element;
  - comparisons (``max``, ``gt``, ``reduce_max`` per input element, ``abs``, ``sign``, ...): one range check;
  - data-dependent indexing (``gather``, ``scatter-add``): one lookup per element moved;
  - additions, reshapes, broadcasts, transposes, casts: free (linear constraints fold into other gates).

  Step work is traced on the model's loss at the batch size the method used. A gradient with respect to
  the *inputs* (adversarial attacks) or a forward-mode product (``jvp``) is priced as two forward passes:
  the extra pass of each matmul costs what its forward did, and no weight gradient is formed.

  A rescale or range check costs ``range_limbs`` lookups (two: the OBS circuit's rescale remainder takes two
  limbs). Rows = ceil(MACs / ``lanes``) + ceil(lookups / ``lookups_per_row``), i.e. a training
  circuit packed exactly as densely as the measured OBS circuit (its lane count and its number of lookup
  arguments per row); cells = rows × the OBS circuit's column count. Gaussian noise drawn inside the proof
  (certified unlearning) costs ``rows_per_noise_sample`` rows per sample: one Poseidon permutation (width 3,
  8 full + 57 partial rounds, one row per round) yields two field elements, and each becomes a Gaussian
  through one inverse-CDF lookup.

The model's simplifications favour the training-based methods (free additions, perfect packing, no cells
for the activations the backward pass needs, no commitments to the training data, no per-step proof
overhead), so their model-side row counts are lower bounds; only the noise pricing is an estimate either
way, and it is a small share of any method that also trains. The OBS rows are exact for the compiled
circuit.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
import optax

from jaxapex.baselines.common import (
    ArithmeticWork,
    ChunkCircuitWork,
    NoiseWork,
    StepWork,
    Work,
)

# ----------------------------------------------------------------------------------------- op counting

FREE = frozenset(
    {
        "add",
        "add_any",
        "sub",
        "neg",
        "reduce_sum",
        "broadcast_in_dim",
        "reshape",
        "transpose",
        "squeeze",
        "expand_dims",
        "concatenate",
        "slice",
        "pad",
        "convert_element_type",
        "copy",
        "copy_p",
        "stop_gradient",
        "iota",
        "split",
        "rev",
        "dynamic_slice",
        "dynamic_update_slice",
        "reduce_precision",
        "is_finite",
        "cumsum",
        "zeros_like",
        "select_and_gather_add",
        "not",
        "and",
        "or",
        "xor",
        "shift_left",
        "shift_right_logical",
        "shift_right_arithmetic",
        "random_bits",
        "random_seed",
        "random_wrap",
        "random_unwrap",
        "threefry2x32",
        "optimization_barrier",
        "pvary",
        "real",
        "imag",
    }
)
PRODUCTS = frozenset({"mul", "square"})
NONLINEAR = frozenset(
    {
        "exp",
        "exp2",
        "expm1",
        "log",
        "log1p",
        "tanh",
        "logistic",
        "erf",
        "erfc",
        "erf_inv",
        "rsqrt",
        "sqrt",
        "cbrt",
        "pow",
        "sin",
        "cos",
        "tan",
        "atan2",
        "lgamma",
        "digamma",
        "asin",
        "acos",
        "atan",
        "sinh",
        "cosh",
    }
)
COMPARISONS = frozenset(
    {"max", "min", "gt", "ge", "lt", "le", "abs", "sign", "clamp", "round", "floor", "ceil", "nextafter"}
)
EQUALITIES = frozenset({"eq", "ne", "select_n"})  # one gate each: an inverse witness, or a bit-selected value
REDUCTIONS = frozenset({"reduce_max", "reduce_min", "argmax", "argmin"})
INDEXING = frozenset({"gather", "scatter-add", "scatter_add", "scatter"})


class OpCounts(NamedTuple):
    """``macs`` multiply-accumulates and ``lookups`` table lookups (rescales, range checks, functions)."""

    macs: int = 0
    lookups: int = 0

    def __add__(self, other: OpCounts) -> OpCounts:  # type: ignore[override]
        return OpCounts(self.macs + other.macs, self.lookups + other.lookups)

    def scale(self, factor: int) -> OpCounts:
        return OpCounts(self.macs * factor, self.lookups * factor)


def _size(aval) -> int:
    return int(np.prod(aval.shape, dtype=np.int64)) if aval.shape else 1


def _sub_jaxprs(eqn) -> list[tuple[Any, int]]:
    """Sub-programs of an equation and how many times each runs (scan: its length)."""
    times = int(eqn.params.get("length", 1)) if eqn.primitive.name == "scan" else 1
    found = []
    for value in eqn.params.values():
        for item in value if isinstance(value, (tuple, list)) else (value,):
            if hasattr(item, "jaxpr") and hasattr(item, "consts"):
                found.append((item.jaxpr, times))
            elif hasattr(item, "eqns"):
                found.append((item, times))
    return found


def count_jaxpr(jaxpr, *, range_limbs: int) -> OpCounts:
    """Op counts of a jaxpr (see the module docstring); unknown primitives are an error, never free."""
    total = OpCounts()
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        subs = _sub_jaxprs(eqn)
        if name == "cond":
            branches = [count_jaxpr(j, range_limbs=range_limbs) for j, _ in subs]
            total += max(branches, key=lambda c: (c.macs, c.lookups))
            continue
        if name == "while":
            raise ValueError("cannot price a while loop: its trip count is not static")
        if subs:
            for sub, times in subs:
                if name in ("scatter-add", "scatter_add", "scatter"):
                    continue  # the update combinator (an add) is priced with the scatter itself below
                total += count_jaxpr(sub, range_limbs=range_limbs).scale(times)
            if name not in INDEXING:
                continue
        out = sum(_size(v.aval) for v in eqn.outvars)
        if name == "dot_general":
            (lhs_contract, _), _ = eqn.params["dimension_numbers"]
            lhs_shape = eqn.invars[0].aval.shape
            depth = int(np.prod([lhs_shape[d] for d in lhs_contract], dtype=np.int64))
            total += OpCounts(out * depth, out * range_limbs)
        elif name == "conv_general_dilated":
            rhs = eqn.invars[1].aval.shape
            spec = eqn.params["dimension_numbers"].rhs_spec  # (out feature, in feature, *spatial)
            window = int(np.prod([rhs[d] for d in spec[2:]], dtype=np.int64))
            per_output = window * rhs[spec[1]]
            total += OpCounts(out * per_output, out * range_limbs)
        elif name in PRODUCTS:
            total += OpCounts(out, out * range_limbs)
        elif name == "integer_pow":
            n = abs(int(eqn.params["y"]))
            total += OpCounts(out * max(n - 1, 0), out * range_limbs * max(n - 1, 0))
            if eqn.params["y"] < 0:
                total += OpCounts(out, out * range_limbs)
        elif name == "div":
            total += OpCounts(out, 2 * out * range_limbs)  # quotient rescale and remainder range check
        elif name in NONLINEAR:
            total += OpCounts(0, out)
        elif name in COMPARISONS:
            total += OpCounts(0, out * range_limbs)
        elif name in EQUALITIES:
            total += OpCounts(out, 0)
        elif name in REDUCTIONS:
            total += OpCounts(0, sum(_size(v.aval) for v in eqn.invars[:1]) * range_limbs)
        elif name in INDEXING:
            moved = _size(eqn.invars[-1].aval) if name.startswith("scatter") else out
            total += OpCounts(0, moved)
        elif name in FREE or name in (
            "jit",
            "pjit",
            "custom_jvp_call",
            "custom_vjp_call",
            "custom_vjp_call_jaxpr",
            "remat",
            "checkpoint",
            "closed_call",
            "core_call",
            "scan",
        ):
            pass
        else:
            raise ValueError(f"proof cost model has no price for the primitive {name!r}; add it to a category")
    return total


def count_program(fn: Callable, *args, range_limbs: int = 2) -> OpCounts:
    """Op counts of ``fn(*args)``; ``args`` may be arrays or :class:`jax.ShapeDtypeStruct` (nothing runs)."""
    return count_jaxpr(jax.make_jaxpr(fn)(*args).jaxpr, range_limbs=range_limbs)


# ------------------------------------------------------------------------------------- the cost model


@dataclasses.dataclass(frozen=True, kw_only=True)
class CostModel:
    """Packing of the modelled circuits (module docstring). :func:`cost_model_from_obs_circuit` reads
    ``lanes``, ``lookups_per_row`` and ``columns`` off the compiled OBS circuit."""

    lanes: int = 16
    lookups_per_row: int = 8
    columns: int = 52
    range_limbs: int = 2
    rows_per_noise_sample: int = 33

    def rows(self, counts: OpCounts) -> int:
        return math.ceil(counts.macs / self.lanes) + math.ceil(counts.lookups / self.lookups_per_row)


def _chunk_shape(*, level: str, block_size: int, lanes: int, blocks_per_chunk: int):
    from circuit_compiler.fixedpoint import spec_for_block_size
    from circuit_compiler.lowering import chunk_shape_key

    return chunk_shape_key(
        blocks=blocks_per_chunk,
        block_size=block_size,
        level=level,
        spec=spec_for_block_size(block_size),
        lanes=lanes if level == "F" else None,
    )


@functools.lru_cache(maxsize=16)
def chunk_circuit_statistics(*, level: str, block_size: int, lanes: int, blocks_per_chunk: int) -> dict:
    """``cs.statistics()`` of the compiled chunk circuit of that shape (rows, columns, lookups, cells, ...)."""
    from circuit_compiler.lowering import build_chunk_circuit

    shape = _chunk_shape(level=level, block_size=block_size, lanes=lanes, blocks_per_chunk=blocks_per_chunk)
    stats = dict(build_chunk_circuit(shape).cs.statistics())
    stats["n_columns"] = int(sum(stats["columns"].values()))
    return stats


def cost_model_from_obs_circuit(
    *, block_size: int = 16, lanes: int = 16, blocks_per_chunk: int = 64, **overrides
) -> CostModel:
    """A :class:`CostModel` whose packing is that of the level-F OBS chunk circuit of this shape."""
    stats = chunk_circuit_statistics(level="F", block_size=block_size, lanes=lanes, blocks_per_chunk=blocks_per_chunk)
    fields = dict(lanes=lanes, lookups_per_row=int(stats["lookups"]), columns=int(stats["n_columns"]))
    fields.update(overrides)
    return CostModel(**fields)


class PhaseCost(NamedTuple):
    rows: int
    cells: int
    macs: int
    lookups: int
    measured: bool


class ProofCost(NamedTuple):
    """Total ``rows`` and ``cells``, and the cost of each phase of the method's work."""

    rows: int
    cells: int
    phases: dict[str, PhaseCost]

    @property
    def measured(self) -> bool:
        return all(p.measured for p in self.phases.values())


def chunk_circuit_cost(work: ChunkCircuitWork) -> PhaseCost:
    """Measured rows and cells of the chunk circuits covering ``work.layer_shapes``."""
    stats = chunk_circuit_statistics(
        level=work.level, block_size=work.block_size, lanes=work.lanes, blocks_per_chunk=work.blocks_per_chunk
    )
    chunks = 0
    for out_features, in_features in work.layer_shapes:
        size = out_features * in_features
        if size % work.block_size:
            raise ValueError(
                f"block size {work.block_size} does not divide a target layer of {out_features}×{in_features}"
            )
        chunks += math.ceil(size // work.block_size / work.blocks_per_chunk)
    rows = chunks * int(stats["rows"])
    return PhaseCost(rows=rows, cells=rows * stats["n_columns"], macs=0, lookups=0, measured=True)


def _abstract(tree: Any) -> Any:
    """Shapes and dtypes only (arrays or :class:`jax.ShapeDtypeStruct` leaves)."""
    return jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(np.shape(a), a.dtype if hasattr(a, "dtype") else np.asarray(a).dtype), tree
    )


def _batch_of(example_batch: Mapping[str, Any], size: int) -> dict:
    return {
        k: jax.ShapeDtypeStruct((size, *np.shape(v)[1:]), v.dtype if hasattr(v, "dtype") else np.asarray(v).dtype)
        for k, v in example_batch.items()
    }


def _optimizer(name: str) -> optax.GradientTransformation:
    if name == "sgd":
        return optax.sgd(1e-3)
    if name == "adam":
        return optax.adam(1e-3)
    raise ValueError(f"unknown optimizer {name!r} in the work (expected 'sgd' or 'adam')")


class StepCoster:
    """Op counts of one step of each kind for a model, traced once per (kind, batch size, optimizer)."""

    def __init__(self, loss_fn: Callable, params: Any, example_batch: Mapping[str, Any], *, range_limbs: int = 2):
        self.loss_fn = loss_fn
        self.params = _abstract(params)
        self.example_batch = example_batch
        self.range_limbs = range_limbs
        self._cache: dict[tuple, OpCounts] = {}

    def counts(self, kind: str, batch_size: int, optimizer: str = "sgd") -> OpCounts:
        if kind in ("input_grad", "jvp"):
            return self.counts("forward", batch_size).scale(2)
        key = (kind, batch_size, optimizer if kind == "train" else None)
        if key not in self._cache:
            self._cache[key] = self._trace(*key)
        return self._cache[key]

    def _trace(self, kind: str, batch_size: int, optimizer: str | None) -> OpCounts:
        count = functools.partial(count_program, range_limbs=self.range_limbs)
        if kind not in ("forward", "grad", "train"):
            raise ValueError(f"unknown step kind {kind!r} (expected 'forward', 'grad', 'train', 'input_grad' or 'jvp')")
        if batch_size < 0 or (batch_size == 0 and kind != "train"):
            raise ValueError(f"a {kind!r} step needs a positive batch size, got {batch_size}")
        total = OpCounts()
        if batch_size:
            batch = _batch_of(self.example_batch, batch_size)
            if kind == "forward":
                total += count(self.loss_fn, self.params, batch)
            else:
                total += count(jax.value_and_grad(self.loss_fn), self.params, batch)
        if kind == "train":
            opt = _optimizer(optimizer)
            state = jax.eval_shape(opt.init, self.params)

            def update(grads, state, params):
                updates, state = opt.update(grads, state, params)
                return optax.apply_updates(params, updates), state

            total += count(update, self.params, state, self.params)
        return total


def proof_cost(
    work: Sequence[Work],
    *,
    loss_fn: Callable | None = None,
    params: Any = None,
    example_batch: Mapping[str, Any] | None = None,
    cost_model: CostModel | None = None,
    coster: StepCoster | None = None,
) -> ProofCost:
    """Rows and cells of a circuit proving ``work`` (a method's ``info["work"]``).

    Step work is traced from ``loss_fn(params, batch)`` (mean loss) on batches shaped like
    ``example_batch`` (any leading size), or with a shared ``coster``.
    """
    model = cost_model or CostModel()
    phases: dict[str, PhaseCost] = {}
    for item in work:
        if isinstance(item, ChunkCircuitWork):
            cost = chunk_circuit_cost(item)
        elif isinstance(item, StepWork):
            if coster is None:
                if loss_fn is None or params is None or example_batch is None:
                    raise ValueError(f"pricing the step work {item.phase!r} needs loss_fn, params and example_batch")
                coster = StepCoster(loss_fn, params, example_batch, range_limbs=model.range_limbs)
            counts = coster.counts(item.kind, item.batch_size, item.optimizer).scale(item.steps)
            rows = model.rows(counts)
            cost = PhaseCost(rows, rows * model.columns, counts.macs, counts.lookups, False)
        elif isinstance(item, ArithmeticWork):
            counts = OpCounts(item.macs, item.lookups)
            rows = model.rows(counts)
            cost = PhaseCost(rows, rows * model.columns, counts.macs, counts.lookups, False)
        elif isinstance(item, NoiseWork):
            rows = item.samples * model.rows_per_noise_sample
            cost = PhaseCost(rows, rows * model.columns, 0, item.samples, False)
        else:
            raise TypeError(f"unknown work item {item!r}")
        if item.phase in phases:
            raise ValueError(f"work phase {item.phase!r} appears twice")
        phases[item.phase] = cost
    rows = sum(p.rows for p in phases.values())
    cells = sum(p.cells for p in phases.values())
    return ProofCost(rows=rows, cells=cells, phases=phases)
