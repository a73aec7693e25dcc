"""Fisher + Group OBS throughput on one ViT-B-shaped fc1 layer: jitted JAX vs a NumPy per-block loop.

Workload: W (3072, 768), row-major blocks of B = 576 (4096 blocks), a random 4 % mask, m = 64 synthetic
per-example gradients (Gaussian, std 1e-2), damp 1e-6. The JAX side runs the library's ``unlearn`` on a
loss whose per-example gradient *is* the synthetic gradient, so it times the real path (vmap(grad) ->
block gradients -> Fisher statistics -> OBS), both routes:

- ``lowrank`` (what ``method="auto"`` picks when m < B): Woodbury on the m x B gradient factor of each block;
- ``dense``: F_b (B x B) -> G_b = F_b^{-1} (Cholesky, float64) -> group OBS; the route that also yields the G
  blocks bound by the proof.

The NumPy baseline is the straightforward loop: per block, F_b in float64, ``np.linalg.inv``, the |S| x |S|
solve. Looping over all 4096 blocks takes minutes, so it times ``--numpy-blocks`` blocks and extrapolates
linearly (printed). ``rel_err`` is ``|delta - delta_ref| / |delta_ref|`` (Frobenius) against float64
references: the NumPy loop on its blocks, and on all blocks a float64 Woodbury evaluation in NumPy.
"""

from __future__ import annotations

import argparse
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.report import add_json_option, write_json
from jaxapex.layers import get_matrix, to_blocks
from jaxapex.obs import unlearn

PATH = ("params", "fc1", "kernel")


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux


def make_problem(*, out, inp, m, mask_fraction, seed, grad_std=1e-2):
    rng = np.random.default_rng(seed)
    W = (rng.standard_normal((out, inp)) * 0.02).astype(np.float32)
    grads = (rng.standard_normal((m, out, inp)) * grad_std).astype(np.float32)  # matrix orientation
    mask = np.zeros(out * inp, bool)
    mask[rng.choice(out * inp, int(round(mask_fraction * out * inp)), replace=False)] = True
    return W, grads, mask.reshape(out, inp)


def linear_probe_loss(params, example):
    """A loss whose gradient w.r.t. the kernel is exactly the example's synthetic gradient."""
    return jnp.sum(params["params"]["fc1"]["kernel"] * example["g"])


def run_jax(W, grads, mask, *, block_size, damp, method, microbatch):
    params = {"params": {"fc1": {"kernel": jnp.asarray(W.T)}}}
    kernel_grads = np.ascontiguousarray(np.swapaxes(grads, 1, 2))  # (m, in, out): the kernel orientation
    batches = [{"g": kernel_grads[i : i + microbatch]} for i in range(0, len(grads), microbatch)]
    start = time.perf_counter()
    new_params, info = unlearn(
        params, {PATH: mask}, linear_probe_loss, batches, block_size=block_size, damp=damp, method=method
    )
    W_new = np.asarray(get_matrix(new_params, PATH))
    return time.perf_counter() - start, W_new - W, info[PATH]


def numpy_loop(W, grads, mask, blocks, *, block_size, damp):
    """The straightforward per-block loop in float64; returns (seconds, delta of those blocks (t, B))."""
    theta = W.reshape(-1, block_size)
    mask_blocks = mask.reshape(-1, block_size)
    grad_blocks = grads.reshape(grads.shape[0], -1, block_size)
    deltas = np.zeros((len(blocks), block_size))
    start = time.perf_counter()
    for row, b in enumerate(blocks):
        U = grad_blocks[:, b].astype(np.float64)
        F = damp * np.eye(block_size) + U.T @ U / U.shape[0]
        G = np.linalg.inv(F)
        S = np.flatnonzero(mask_blocks[b])
        if S.size:
            y = np.linalg.solve(G[np.ix_(S, S)], theta[b, S].astype(np.float64))
            deltas[row] = -G[:, S] @ y
            deltas[row, S] = -theta[b, S]
    return time.perf_counter() - start, deltas


def woodbury_reference(W, grads, mask, *, block_size, damp, chunk=256):
    """float64 OBS delta of every block via F^{-1} = (I - V^T (damp I + V V^T)^{-1} V) / damp, V = U / sqrt(m)."""
    theta = W.reshape(-1, block_size).astype(np.float64)
    mask_blocks = mask.reshape(-1, block_size)
    m = grads.shape[0]
    delta = np.zeros_like(theta)
    for start in range(0, theta.shape[0], chunk):
        V = np.swapaxes(grads.reshape(m, -1, block_size)[:, start : start + chunk], 0, 1).astype(np.float64)
        V /= np.sqrt(m)
        K_inv = np.linalg.inv(damp * np.eye(m) + V @ np.swapaxes(V, 1, 2))
        for row in range(V.shape[0]):
            b = start + row
            S = np.flatnonzero(mask_blocks[b])
            if not S.size:
                continue
            cols = -V[row].T @ (K_inv[row] @ V[row][:, S])  # damp * G[:, S]
            cols[S, np.arange(S.size)] += 1.0
            y = np.linalg.solve(cols[S], theta[b, S])
            delta[b] = -cols @ y
            delta[b, S] = -theta[b, S]
    return delta


def rel_err(delta, reference) -> float:
    return float(np.linalg.norm(delta - reference) / np.linalg.norm(reference))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_json_option(parser)
    parser.add_argument("--quick", action="store_true", help="fewer NumPy blocks, lowrank JAX route only")
    parser.add_argument("--numpy-blocks", type=int, default=None, help="blocks the NumPy loop times (default 256)")
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    out, inp, block_size, mask_fraction, damp = 3072, 768, 576, 0.04, 1e-6
    W, grads, mask = make_problem(out=out, inp=inp, m=args.examples, mask_fraction=mask_fraction, seed=args.seed)
    n_blocks = out * inp // block_size
    routes = ["lowrank"] if args.quick else ["lowrank", "dense"]

    results = {}
    for method in routes:
        first_s, _, _ = run_jax(W, grads, mask, block_size=block_size, damp=damp, method=method, microbatch=16)
        seconds, delta, info = run_jax(W, grads, mask, block_size=block_size, damp=damp, method=method, microbatch=16)
        results[method] = dict(seconds=seconds, first_call_s=first_s, delta=delta, info=info)
    jax_peak = peak_rss_gb()

    n_numpy = args.numpy_blocks or (32 if args.quick else 256)
    rng = np.random.default_rng(args.seed + 1)
    blocks = np.sort(rng.choice(n_blocks, min(n_numpy, n_blocks), replace=False))
    numpy_subset_s, numpy_delta = numpy_loop(W, grads, mask, blocks, block_size=block_size, damp=damp)
    numpy_s = numpy_subset_s * n_blocks / len(blocks)
    reference = woodbury_reference(W, grads, mask, block_size=block_size, damp=damp)
    # the two float64 references agree with each other to ~1e-10; both are reported
    reference_gap = rel_err(reference[blocks], numpy_delta)

    figures = dict(
        shape=[out, inp],
        block_size=block_size,
        n_blocks=n_blocks,
        mask_fraction=mask_fraction,
        n_examples=args.examples,
        damp=damp,
        backend=jax.default_backend(),
        device=str(jax.devices()[0].device_kind),
        n_devices=len(jax.devices()),
        numpy_blocks_timed=int(len(blocks)),
        numpy_subset_s=numpy_subset_s,
        numpy_s=numpy_s,
        numpy_extrapolated=len(blocks) < n_blocks,
        reference_gap=reference_gap,
        peak_rss_gb_jax=jax_peak,
        peak_rss_gb=peak_rss_gb(),
    )
    for method, r in results.items():
        delta_blocks = to_blocks(r["delta"], block_size)
        err = max(rel_err(delta_blocks[blocks], numpy_delta), rel_err(delta_blocks, reference))
        prefix = "" if method == routes[0] else f"{method}_"
        figures.update(
            {
                f"{prefix}jax_s": r["seconds"],
                f"{prefix}jax_first_call_s": r["first_call_s"],
                f"{prefix}speedup": numpy_s / r["seconds"],
                f"{prefix}rel_err": err,
                f"{prefix}jax_passes": r["info"]["passes"],
            }
        )
    figures["jax_route"] = routes[0]

    print(
        f"Fisher + Group OBS, W {out}x{inp}, B={block_size} ({n_blocks} blocks), {mask_fraction:.0%} mask, "
        f"m={args.examples} examples, damp={damp:g}; JAX on {figures['n_devices']} x {figures['device']}"
    )
    print(f"{'route':<28}{'seconds':>10}{'first call':>12}{'speedup':>10}{'rel_err':>11}")
    print(f"{'NumPy per-block loop (f64)':<28}{numpy_s:>10.2f}{'':>12}{1.0:>10.1f}{'(ref)':>11}")
    for method in routes:
        prefix = "" if method == routes[0] else f"{method}_"
        print(
            f"{'JAX unlearn ' + method:<28}{figures[prefix + 'jax_s']:>10.2f}{figures[prefix + 'jax_first_call_s']:>12.2f}"
            f"{figures[prefix + 'speedup']:>10.1f}{figures[prefix + 'rel_err']:>11.2e}"
        )
    if figures["numpy_extrapolated"]:
        print(f"NumPy timed on {len(blocks)} of {n_blocks} blocks ({numpy_subset_s:.2f} s), extrapolated linearly.")
    print(
        f"float64 references (NumPy loop vs Woodbury) differ by {reference_gap:.1e}; "
        f"peak RSS {figures['peak_rss_gb_jax']:.2f} GB after JAX, {figures['peak_rss_gb']:.2f} GB overall "
        f"(inputs: {grads.nbytes / 2**30:.2f} GB of synthetic gradients)"
    )
    write_json(args.json, figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
