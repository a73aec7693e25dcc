"""Forget directions: the top-K principal directions of a target layer's inputs on the forget set.

The forget-aware Group OBS (:mod:`jaxapex.obs`) keeps the compensation from moving a block along public
directions ``U_b``; this module computes them, on the GLOBAL model, as the provider does for a request:

* :func:`capture_dense_inputs` -- the inputs ``x`` (N, in) of chosen Dense layers during one forward pass;
* :func:`principal_directions` -- the top-K right singular vectors of the stacked inputs (uncentered: a
  row's output on the forget set moves by ``Δ_row · x``, so the directions that carry ``x`` are the ones
  its compensation must not move);
* :func:`forget_directions` -- both, over the forget set's batches, per layer: ``{path: U (K, in)}``;
* :func:`block_directions` -- a layer's ``U (K, in)`` read at each weight's input coordinate and cut into
  the OBS blocks: ``(n_blocks, K, B)``. Weight ``(n, j)`` of ``W`` (out, in) gets ``U[:, j]``, so a block
  that spans part of one row constrains that row's segment (and a block spanning several rows the sum
  over its rows).

The request carries ``U`` per layer in weight space, so one request serves every client whatever block
size it registered; the client and the verifier both derive ``U_b`` with :func:`block_directions`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np

from jaxapex.layers import Path, path_name

TOKENS = ("all", "cls")  # which positions' inputs count: every token's, or the first (a ViT's class token)


def capture_dense_inputs(
    forward: Callable[[], object], paths: Sequence[Path], *, tokens: str = "all"
) -> dict[Path, object]:
    """``{kernel path: inputs of that Dense layer (N, in)}`` seen while ``forward()`` runs, flattened over
    examples and positions (``tokens="cls"``: the first position only). A kernel path is
    ``("params", *module path, "kernel")``."""
    if tokens not in TOKENS:
        raise ValueError(f"tokens must be one of {TOKENS}, got {tokens!r}")
    import flax.linen as nn

    wanted = {tuple(p[1:-1]): tuple(p) for p in paths}
    captured: dict[Path, object] = {}

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        if isinstance(module, nn.Dense) and context.method_name == "__call__" and tuple(module.path) in wanted:
            x = args[0]
            if tokens == "cls" and x.ndim == 3:
                x = x[:, :1]
            captured[wanted[tuple(module.path)]] = x.reshape(-1, x.shape[-1])
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(interceptor):
        forward()
    missing = [path_name(p) for p in paths if tuple(p) not in captured]
    if missing:
        raise ValueError(f"no Dense layer call was seen for the kernels {missing}")
    return captured


def principal_directions(gram: np.ndarray, k: int) -> np.ndarray:
    """The top ``k`` eigenvectors (k, in) of the input Gram matrix ``XᵀX`` (in, in), orthonormal rows in
    float64, largest eigenvalue first; each row's sign fixed (its largest-magnitude entry positive) so the
    result does not depend on the eigensolver."""
    gram = np.asarray(gram, dtype=np.float64)
    if gram.ndim != 2 or gram.shape[0] != gram.shape[1]:
        raise ValueError(f"input Gram matrix must be square (in, in), got shape {gram.shape}")
    if not 0 <= k <= gram.shape[0]:
        raise ValueError(f"forget directions: K = {k} must be in [0, in = {gram.shape[0]}]")
    eigvals, eigvecs = np.linalg.eigh((gram + gram.T) / 2)
    top = eigvecs[:, np.argsort(eigvals)[::-1][:k]].T
    signs = np.sign(top[np.arange(k), np.abs(top).argmax(axis=1)])
    return top * np.where(signs == 0, 1.0, signs)[:, None]


def contrast_directions(gram_forget: np.ndarray, gram_retain: np.ndarray, k: int, *, ridge: float = 1e-3) -> np.ndarray:
    """The ``k`` input directions along which the forget set's inputs carry the most energy RELATIVE to the
    retain set's: the top generalized eigenvectors of ``(C_f, C_r + ridge · mean eig(C_r) · I)`` with ``C``
    the mean second moments (Gram / examples). Returned as an orthonormal basis (k, in) of their span
    (what the constraint depends on), rows ordered by eigenvalue and sign-fixed as in
    :func:`principal_directions`.

    Principal directions of the forget inputs are mostly directions every input shares; these are the ones
    a retain input hardly uses, so forbidding them costs the client's repair least per unit of the forget
    class it blocks."""
    cf = np.asarray(gram_forget, dtype=np.float64)
    cr = np.asarray(gram_retain, dtype=np.float64)
    if cf.shape != cr.shape or cf.ndim != 2 or cf.shape[0] != cf.shape[1]:
        raise ValueError(f"forget and retain Gram matrices must be square and alike, got {cf.shape} and {cr.shape}")
    if not 0 <= k <= cf.shape[0]:
        raise ValueError(f"forget directions: K = {k} must be in [0, in = {cf.shape[0]}]")
    cr = (cr + cr.T) / 2
    cr = cr + ridge * max(np.trace(cr) / len(cr), np.finfo(np.float64).tiny) * np.eye(len(cr))
    whiten = np.linalg.cholesky(cr)  # C_r = L Lᵀ: the problem becomes eig(L⁻¹ C_f L⁻ᵀ)
    inner = np.linalg.solve(whiten, np.linalg.solve(whiten, (cf + cf.T) / 2).T)
    eigvals, eigvecs = np.linalg.eigh((inner + inner.T) / 2)
    top = np.linalg.solve(whiten.T, eigvecs[:, np.argsort(eigvals)[::-1][:k]])  # (in, k), C_r-orthogonal
    basis, _ = np.linalg.qr(top)
    basis = basis.T
    signs = np.sign(basis[np.arange(k), np.abs(basis).argmax(axis=1)])
    return basis * np.where(signs == 0, 1.0, signs)[:, None]


def input_grams(
    model,
    params,
    paths: Sequence[Path],
    batches: Iterable[Mapping[str, np.ndarray]],
    *,
    max_examples: int | None = None,
    tokens: str = "all",
) -> tuple[dict[Path, np.ndarray], int]:
    """``({path: XᵀX (in, in) float64}, examples seen)`` of each target layer's inputs over ``batches`` (at
    most ``max_examples``), one forward pass each."""
    import jax

    from jaxapex.models import model_inputs

    paths = tuple(tuple(p) for p in paths)
    collect = jax.jit(
        lambda p, batch: {
            path: x.T.astype("float32") @ x.astype("float32")
            for path, x in capture_dense_inputs(
                lambda: model.apply(p, model_inputs(model, batch)), paths, tokens=tokens
            ).items()
        }
    )
    grams: dict[Path, np.ndarray] = {}
    seen = 0
    for batch in batches:
        if max_examples is not None:
            batch = {key: v[: max_examples - seen] for key, v in batch.items()}
        n = len(next(iter(batch.values())))
        if n == 0:
            break
        for path, g in collect(params, batch).items():
            grams[path] = grams.get(path, 0.0) + np.asarray(g, dtype=np.float64)
        seen += n
    return grams, seen


DIRECTION_KINDS = ("principal", "contrast")


def forget_directions(
    model,
    params,
    paths: Sequence[Path],
    forget_batches: Iterable[Mapping[str, np.ndarray]],
    *,
    k: int,
    max_examples: int | None = None,
    tokens: str = "all",
    kind: str = "principal",
    retain_batches: Iterable[Mapping[str, np.ndarray]] | None = None,
) -> dict[Path, np.ndarray]:
    """``{path: U (k, in)}`` per target layer, from one pass over ``forget_batches`` (and, for
    ``kind="contrast"``, ``retain_batches``), at most ``max_examples`` each: ``kind="principal"`` the top-``k``
    principal directions of the forget inputs (module docstring), ``"contrast"`` the forget-versus-retain
    directions of :func:`contrast_directions`. ``tokens="cls"`` counts the class token's inputs only."""
    if kind not in DIRECTION_KINDS:
        raise ValueError(f"forget directions: kind must be one of {DIRECTION_KINDS}, got {kind!r}")
    if kind == "contrast" and retain_batches is None:
        raise ValueError("contrast forget directions need the retain set's batches")
    paths = tuple(tuple(p) for p in paths)
    forget, seen = input_grams(model, params, paths, forget_batches, max_examples=max_examples, tokens=tokens)
    if not seen:
        raise ValueError("forget directions need at least one forget example")
    if kind == "principal":
        return {path: principal_directions(forget[path], k) for path in paths}
    retain, seen_retain = input_grams(model, params, paths, retain_batches, max_examples=max_examples, tokens=tokens)
    if not seen_retain:
        raise ValueError("contrast forget directions need at least one retain example")
    return {path: contrast_directions(forget[path] / seen, retain[path] / seen_retain, k) for path in paths}


def block_directions(U: np.ndarray, shape: tuple[int, int], block_size: int) -> np.ndarray:
    """A layer's directions ``U`` (K, in) as per-block directions (n_blocks, K, B) of ``W`` (out, in),
    row-major blocks as in :mod:`jaxapex.layers`: entry ``i`` of block ``b`` is ``U[:, (bB + i) mod in]``."""
    U = np.asarray(U, dtype=np.float64)
    out_features, in_features = shape
    if U.ndim != 2 or U.shape[1] != in_features:
        raise ValueError(f"forget directions must have shape (K, in) = (K, {in_features}), got {U.shape}")
    size = out_features * in_features
    if size % block_size:
        raise ValueError(f"block size {block_size} does not divide the matrix size {out_features} * {in_features}")
    flat = np.tile(U, (1, out_features))  # (K, out*in): weight (n, j) reads U[:, j]
    return flat.reshape(U.shape[0], size // block_size, block_size).transpose(1, 0, 2)


__all__ = [
    "DIRECTION_KINDS",
    "TOKENS",
    "block_directions",
    "capture_dense_inputs",
    "contrast_directions",
    "forget_directions",
    "input_grams",
    "principal_directions",
]
