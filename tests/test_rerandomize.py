"""Re-randomized commitments: the chunk proof verifies against C', and the proof of knowledge of the salt
shifts rejects a wrong shift, another request's context and a C' that changes a committed value."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
from py_ecc.bls.point_compression import compress_G1, decompress_G1
from py_ecc.optimized_bls12_381 import G1, add, curve_order, multiply

from circuit_compiler import backend as be
from circuit_compiler import rerandomize as rr
from circuit_compiler.fixedpoint import FixedPointSpec
from circuit_compiler.hiding import expand_salts
from circuit_compiler.lowering import (
    ChunkShape,
    chunk_layer,
    committed_columns,
    draw_salts,
    lower_chunk,
)
from circuit_compiler.witness import obs_witness

pytestmark = pytest.mark.prover

SPEC = FixedPointSpec(limb_bits=8)
B, NB = 4, 2


@pytest.fixture(scope="module")
def srs(tmp_path_factory):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", be.InsecureSrsWarning)
        return be.Srs.generate_dev(10, tmp_path_factory.mktemp("srs") / "dev.srs", seed=11)


@pytest.fixture(scope="module")
def chunk():
    rng = np.random.default_rng(5)
    theta = rng.normal(0, 0.5, size=NB * B)
    a = rng.normal(size=(NB, B, 2 * B))
    G = np.linalg.inv(a @ a.transpose(0, 2, 1) / (2 * B) + 0.1 * np.eye(B))
    mask = np.zeros(NB * B, bool)
    mask[[1, 6]] = True
    (c,) = chunk_layer(obs_witness(theta, G, mask, spec=SPEC), blocks_per_chunk=NB)
    return c


SHAPE = ChunkShape(blocks=NB, block_size=B, level="F", spec=SPEC, lanes=B)
CTX = rr.context("req-1", "fc1", 0)


def columns(chunk, salts):
    return committed_columns(SHAPE, salts=salts, theta=chunk.theta_q, G=chunk.G_q)


def rerandomized(srs, chunk, registered_salts, new_salts):
    """(registered commitments, presented commitments, shifts, k) of the reused columns."""
    old, new = columns(chunk, registered_salts), columns(chunk, new_salts)
    k = lower_chunk(
        *chunk.lowering_inputs(), spec=SPEC, level="F", lanes=B, salts={**registered_salts, "theta_new": 1}
    )[0].k
    p = SHAPE.field.modulus
    shifts = {
        name: rr.salt_shifts(
            expand_salts(registered_salts[name], name, SHAPE.salt_counts[name], p),
            expand_salts(new_salts[name], name, SHAPE.salt_counts[name], p),
            p,
        )
        for name in old
    }
    return (
        {n: be.commit(srs, k, v) for n, v in old.items()},
        {n: be.commit(srs, k, v) for n, v in new.items()},
        shifts,
        k,
    )


SALT_ROWS = {name: list(SHAPE.salt_rows(name)) for name in SHAPE.committed_names()}


def test_chunk_proof_verifies_against_the_rerandomized_commitments(srs, chunk):
    registered_salts = draw_salts(SHAPE, rng=np.random.default_rng(1))
    new_salts = {**draw_salts(SHAPE, rng=np.random.default_rng(2)), "theta_new": registered_salts["theta_new"]}
    registered, presented, shifts, k = rerandomized(srs, chunk, registered_salts, new_salts)
    assert all(registered[n] != presented[n] for n in registered)
    derived, proofs = rr.prove_columns(srs, k, salt_rows=SALT_ROWS, shifts=shifts, presented=presented, ctx=CTX)
    assert derived == registered  # C' − Σ r_j P_j is the registered commitment
    rr.verify_columns(srs, k, salt_rows=SALT_ROWS, registered=registered, presented=presented, proofs=proofs, ctx=CTX)
    # the chunk proof made with the shifted salts verifies against C' (and not against C)
    cs, a = lower_chunk(*chunk.lowering_inputs(), spec=SPEC, level="F", lanes=B, salts=new_salts)
    keys = be.keygen(srs, cs)
    proof = be.prove(srs, keys, cs, a)
    against_new = {**presented, "theta_new": be.commit(srs, cs.k, a.committed["theta_new"])}
    assert be.verify(srs, keys.vk, cs, proof, a.instance, against_new)
    assert not be.verify(srs, keys.vk, cs, proof, a.instance, {**against_new, "theta": registered["theta"]})


def test_rerandomized_moves_the_registered_commitment_without_the_column(srs, chunk):
    """C' from C and the shifts alone equals committing the column with its new salt cells."""
    registered_salts = draw_salts(SHAPE, rng=np.random.default_rng(6))
    new_salts = draw_salts(SHAPE, rng=np.random.default_rng(7))
    registered, presented, shifts, k = rerandomized(srs, chunk, registered_salts, new_salts)
    for name in registered:
        moved = rr.rerandomized(srs, k, rows=SALT_ROWS[name], shifts=shifts[name], registered=registered[name])
        assert moved == presented[name], name
    # the shifts of another column move it elsewhere
    wrong = rr.rerandomized(srs, k, rows=SALT_ROWS["theta"], shifts=shifts["g_0"], registered=registered["theta"])
    assert wrong != presented["theta"]
    with pytest.raises(ValueError, match="2 salt rows, 1 shifts"):
        rr.rerandomized(srs, k, rows=[1, 2], shifts=[3], registered=registered["theta"])


def test_salt_basis_is_the_commitment_of_a_salt_cell(srs):
    rows = list(SHAPE.salt_rows("g_1"))
    column = np.zeros(rows[-1] + 1, dtype=object)
    cells = [3, 0, 5, 7, 2, 11][: len(rows)]
    column[rows] = cells
    basis = [decompress_G1(int.from_bytes(b, "big")) for b in rr.salt_basis(srs, 10, rows)]
    assert len(basis) == len(rows)
    expected = None
    for point, cell in zip(basis, cells):
        if cell:
            expected = multiply(point, cell) if expected is None else add(expected, multiply(point, cell))
    assert compress_G1(expected).to_bytes(48, "big") == be.commit(srs, 10, column)


def test_g1_msm_matches_py_ecc():
    rng = np.random.default_rng(9)
    scalars = [int(x) for x in rng.integers(1, 1 << 62, size=4)] + [curve_order - 5, 0]
    points = [multiply(G1, int(x)) for x in rng.integers(1, 1 << 30, size=6)]
    expected = None
    for pt, sc in zip(points, scalars):
        term = multiply(pt, sc)
        expected = term if expected is None else add(expected, term)
    encoded = [compress_G1(pt).to_bytes(48, "big") for pt in points]
    assert be.g1_msm(encoded, scalars) == compress_G1(expected).to_bytes(48, "big")
    assert be.g1_msm(encoded[:1], [curve_order]) == be.G1_IDENTITY
    with pytest.raises(be.BackendError, match="point 0"):
        be.g1_msm([b"\x01" * 48], [1])


@pytest.fixture(scope="module")
def honest(srs, chunk):
    registered_salts = draw_salts(SHAPE, rng=np.random.default_rng(3))
    new_salts = draw_salts(SHAPE, rng=np.random.default_rng(4))
    registered, presented, shifts, k = rerandomized(srs, chunk, registered_salts, new_salts)
    names = ["theta", "g_2"]  # two columns keep this fast (py_ecc)
    registered = {n: registered[n] for n in names}
    presented = {n: presented[n] for n in names}
    shifts = {n: shifts[n] for n in names}
    _, proofs = rr.prove_columns(srs, k, salt_rows=SALT_ROWS, shifts=shifts, presented=presented, ctx=CTX)
    return registered, presented, shifts, proofs, k


def test_wrong_shift_is_rejected(srs, honest):
    registered, presented, shifts, proofs, k = honest
    wrong = {**shifts, "g_2": [shifts["g_2"][0] + 1] + shifts["g_2"][1:]}
    _, bad = rr.prove_columns(srs, k, salt_rows=SALT_ROWS, shifts=wrong, presented=presented, ctx=CTX)
    with pytest.raises(rr.RerandomizationError, match="column 'g_2'"):
        rr.verify_columns(srs, k, salt_rows=SALT_ROWS, registered=registered, presented=presented, proofs=bad, ctx=CTX)
    forged = {**proofs, "theta": dataclasses.replace(proofs["theta"], responses=(1,) + proofs["theta"].responses[1:])}
    with pytest.raises(rr.RerandomizationError, match="column 'theta'"):
        rr.verify_columns(
            srs, k, salt_rows=SALT_ROWS, registered=registered, presented=presented, proofs=forged, ctx=CTX
        )


def test_proof_for_another_request_or_chunk_is_rejected(srs, honest):
    registered, presented, _, proofs, k = honest
    for ctx in (rr.context("req-2", "fc1", 0), rr.context("req-1", "fc1", 1), rr.context("req-1", "fc2", 0)):
        with pytest.raises(rr.RerandomizationError, match="proof of knowledge rejected"):
            rr.verify_columns(
                srs, k, salt_rows=SALT_ROWS, registered=registered, presented=presented, proofs=proofs, ctx=ctx
            )
    swapped = {"theta": presented["g_2"], "g_2": presented["theta"]}
    with pytest.raises(rr.RerandomizationError):
        rr.verify_columns(srs, k, salt_rows=SALT_ROWS, registered=registered, presented=swapped, proofs=proofs, ctx=CTX)


def test_rerandomized_commitment_that_changes_a_value_is_rejected(srs, honest, chunk):
    registered, presented, shifts, _, k = honest
    # C' moved also along the Lagrange point of a weight row (row B - 1: θ's first weight): the client
    # knows that shift, but the proof only covers salt rows, so no honest proof exists for it
    weight_row = np.zeros(B, dtype=np.int64)
    weight_row[B - 1] = 1
    moved = be.g1_msm([presented["theta"], be.commit(srs, k, weight_row)], [1, 1])
    _, proofs = rr.prove_columns(
        srs, k, salt_rows=SALT_ROWS, shifts={"theta": shifts["theta"]}, presented={"theta": moved}, ctx=CTX
    )
    with pytest.raises(rr.RerandomizationError, match="column 'theta'"):
        rr.verify_columns(
            srs,
            k,
            salt_rows=SALT_ROWS,
            registered={"theta": registered["theta"]},
            presented={"theta": moved},
            proofs=proofs,
            ctx=CTX,
        )
    # and a malformed point is a named error, not a crash
    with pytest.raises(rr.RerandomizationError, match="48 bytes"):
        rr.verify_columns(
            srs,
            k,
            salt_rows=SALT_ROWS,
            registered={"theta": registered["theta"]},
            presented={"theta": b"\x00" * 47},
            proofs=proofs,
            ctx=CTX,
        )
