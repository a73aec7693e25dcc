"""Fisher → OBS from precomputed statistics equals the loss-and-data pipeline, on both Fisher routes."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from test_obs import FC1, mlp_problem  # noqa: F401 (the fixture)

from jaxapex.fisher import blockwise_fisher
from jaxapex.layers import example_matrix_gradients, get_matrix, to_blocks
from jaxapex.obs import unlearn
from jaxapex.precomputed import unlearn_from_statistics


def _gradients(params, loss_fn, batches, paths, limit=None):
    data = {k: np.concatenate([b[k] for b in batches])[:limit] for k in batches[0]}
    grads = jax.jit(lambda p, d: example_matrix_gradients(loss_fn, p, paths, d))(params, data)
    return {path: np.asarray(g) for path, g in zip(paths, grads)}


@pytest.mark.parametrize(("examples", "route"), [(21, "dense"), (6, "lowrank")])
def test_gradients_give_the_pipelines_update(mlp_problem, examples, route):  # noqa: F811
    params, loss_fn, batches, masks = mlp_problem
    expected, info_expected = unlearn(params, masks, loss_fn, batches, block_size=8, damp=1e-3, max_examples=examples)
    got, info = unlearn_from_statistics(
        params, masks, block_size=8, damp=1e-3, gradients=_gradients(params, loss_fn, batches, list(masks), examples)
    )
    for path, mask in masks.items():
        assert info[path]["method"] == info_expected[path]["method"] == route
        for key in ("n_examples", "touched_blocks", "n_masked", "max_masked_per_block"):
            assert info[path][key] == info_expected[path][key], key
        np.testing.assert_allclose(
            info[path]["quadratic_increase"], info_expected[path]["quadratic_increase"], rtol=1e-3
        )
        W = np.asarray(get_matrix(got, path))
        np.testing.assert_allclose(W, np.asarray(get_matrix(expected, path)), rtol=1e-4, atol=1e-5)
        assert np.all(W[mask] == 0)


def test_fisher_blocks_give_the_pipelines_update_and_must_cover_the_mask(mlp_problem):  # noqa: F811
    params, loss_fn, batches, masks = mlp_problem
    expected, _ = unlearn(params, masks, loss_fn, batches, block_size=8, damp=1e-3, method="dense")
    fisher = {}
    for path, mask in masks.items():
        touched = np.flatnonzero(to_blocks(mask, 8).any(axis=1))
        fisher[path] = (
            touched,
            blockwise_fisher(loss_fn, params, path, batches, block_size=8, damp=1e-3, block_indices=touched),
        )
    got, info = unlearn_from_statistics(params, masks, block_size=8, damp=1e-3, fisher=fisher)
    for path in masks:
        np.testing.assert_allclose(
            np.asarray(get_matrix(got, path)), np.asarray(get_matrix(expected, path)), rtol=1e-4, atol=1e-5
        )
        assert info[path]["method"] == "dense" and info[path]["passes"] == 0

    indices, F = fisher[FC1]
    with pytest.raises(ValueError, match=rf"fc1/kernel'.*no Fisher block for touched blocks \[{indices[0]}\]"):
        unlearn_from_statistics(params, masks, block_size=8, fisher={**fisher, FC1: (indices[1:], F[1:])})
    with pytest.raises(ValueError, match="give its statistics once.*both"):
        unlearn_from_statistics(
            params, masks, block_size=8, fisher=fisher, gradients=_gradients(params, loss_fn, batches, list(masks))
        )
    with pytest.raises(ValueError, match=r"gradients must be \(m > 0, 8, 6\)"):
        unlearn_from_statistics(params, {FC1: masks[FC1]}, block_size=8, gradients={FC1: np.zeros((3, 6, 8))})
