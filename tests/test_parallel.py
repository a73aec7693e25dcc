"""Streaming and data-parallel helpers: padding, weights, truncation, sharding."""

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxapex.parallel import (
    BATCH_AXIS,
    batch_mesh,
    batch_size,
    device_batches,
    limit_examples,
    pad_batch,
    padded_size,
    reiterable,
)


def make_batches(sizes, width=3):
    start, batches = 0, []
    for n in sizes:
        x = np.arange(start, start + n, dtype=np.float32)[:, None] * np.ones((1, width), np.float32)
        batches.append({"x": x, "id": np.arange(start, start + n)})
        start += n
    return batches


def test_batch_size_reports_disagreeing_leaves():
    with pytest.raises(ValueError, match="disagree"):
        batch_size({"a": np.zeros((3, 2)), "b": np.zeros((4,))})
    with pytest.raises(ValueError, match="scalar"):
        batch_size({"a": np.float32(1.0)})


def test_pad_batch_repeats_last_example_with_zero_weight():
    (batch,) = make_batches([3])
    padded, weights = pad_batch(batch, 5)
    np.testing.assert_array_equal(padded["id"], [0, 1, 2, 2, 2])
    np.testing.assert_array_equal(weights, [1, 1, 1, 0, 0])
    with pytest.raises(ValueError, match="down to"):
        pad_batch(batch, 2)


@given(st.lists(st.integers(1, 9), min_size=1, max_size=6), st.integers(1, 40))
@settings(max_examples=40, deadline=None)
def test_limit_examples_cuts_exactly(sizes, limit):
    out = list(limit_examples(make_batches(sizes), limit))
    ids = np.concatenate([b["id"] for b in out]) if out else np.zeros(0)
    np.testing.assert_array_equal(ids, np.arange(min(limit, sum(sizes))))


@given(st.lists(st.integers(1, 9), min_size=1, max_size=5), st.sampled_from([None, 2, 3, 4]))
@settings(max_examples=25, deadline=None)
def test_device_batches_cover_every_example_once(sizes, microbatch_size):
    mesh = batch_mesh()
    n_devices = mesh.devices.size
    seen = []
    for batch, weights, n_real in device_batches(make_batches(sizes), mesh, microbatch_size=microbatch_size):
        ids, w = np.asarray(batch["id"]), np.asarray(weights)
        assert ids.shape[0] % n_devices == 0
        if microbatch_size is not None:
            assert ids.shape[0] == padded_size(1, n_devices=n_devices, microbatch_size=microbatch_size)
        assert w.sum() == n_real and np.all(w[:n_real] == 1) and np.all(w[n_real:] == 0)
        seen.extend(ids[:n_real].tolist())
    assert seen == list(range(sum(sizes)))


def test_device_batches_are_sharded_over_the_batch_axis():
    if len(jax.devices()) < 2:
        pytest.skip("needs two devices (tests/conftest.py sets up two virtual CPU devices)")
    mesh = batch_mesh()
    batch, weights, n_real = next(device_batches(make_batches([5]), mesh))
    assert n_real == 5 and batch["x"].shape == (6, 3)
    assert batch["x"].sharding.spec[0] == BATCH_AXIS
    assert len(batch["x"].addressable_shards) == mesh.devices.size


def test_reiterable_buffers_only_one_shot_iterators():
    batches = make_batches([2, 3])
    assert reiterable(batches, passes=3) is batches
    once = iter(make_batches([2, 3, 4]))
    buffered = reiterable(once, passes=2, max_examples=4)
    assert [batch_size(b) for b in buffered] == [2, 2]
    assert [batch_size(b) for b in buffered] == [2, 2]  # a second pass sees the same data


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="max_examples"):
        list(limit_examples(make_batches([2]), 0))
    with pytest.raises(ValueError, match="microbatch_size"):
        list(device_batches(make_batches([2]), batch_mesh(), microbatch_size=0))
