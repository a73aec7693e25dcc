"""The forget-aware level-F rows: the honest witness passes the mock prover and the audit, its Δ is the
float64 forget-aware update within rounding, U_b Δ stays within the stated tolerance, the structure does
not depend on U or the mask, and a plain-OBS witness or a different public U is rejected by name."""

import numpy as np
import pytest

from circuit_compiler.audit import audit
from circuit_compiler.field import DEFAULT_FIELD
from circuit_compiler.fixedpoint import FixedPointSpec, ForgetSpec, dequantize
from circuit_compiler.lowering import (
    ChunkShape,
    chunk_layer,
    chunk_shape_key,
    draw_salts,
    lower_chunk,
)
from circuit_compiler.mock_prover import check
from circuit_compiler.serialize import structure_to_json
from circuit_compiler.witness import WitnessError, obs_witness, quantized_obs_witness

P = DEFAULT_FIELD.modulus
SPEC = FixedPointSpec(f_w=14, f_g=10, s=16, w_w=18, w_delta=24, w_y=40, limb_bits=8)
FORGET = ForgetSpec(directions=2, f_u=6, w_mu=32)
NB, B = 3, 8


def inputs(seed, r=2):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(NB, B, 6))
    G = np.linalg.inv(X @ X.transpose(0, 2, 1) / 6 + 0.5 * np.eye(B))
    theta = np.clip(rng.normal(scale=0.5, size=(NB * B // 4, 4)), -3, 3)
    mask = rng.random(theta.shape) < 0.3
    flat = mask.reshape(NB, B)
    flat[0] = False  # one untouched block
    flat[1, :2] = True
    flat[:, -3:] = False  # room for the directions: at least 3 unmasked positions per block
    return theta, G, mask, rng.normal(size=(NB, r, B))


def lowered(witness, forget=FORGET, seed=0):
    chunk = chunk_layer(witness, blocks_per_chunk=NB)[0]
    shape = chunk_shape_key(blocks=NB, block_size=B, level="F", spec=SPEC, lanes=B, forget=forget)
    salts = draw_salts(shape, rng=np.random.default_rng(seed))
    return chunk, lower_chunk(
        *chunk.lowering_inputs(), spec=SPEC, level="F", lanes=B, salts=salts, forget=forget, **chunk.forget_inputs()
    )


def failures(cs, assignment):
    return sorted({(f.kind, f.name) for f in check(cs, assignment, P)})


@pytest.fixture(scope="module")
def honest():
    theta, G, mask, U = inputs(5)
    w = obs_witness(theta, G, mask, spec=SPEC, directions=U, forget=FORGET)
    chunk, (cs, a) = lowered(w)
    return w, chunk, cs, a


def test_honest_forget_witness_passes_and_matches_the_float_update(honest):
    from jaxapex.obs import group_obs

    w, _, cs, a = honest
    assert check(cs, a, P) == []
    U_off = np.where(w.mask[:, None, :], 0, w.U_q)
    moved = np.einsum("nrb,nb->nr", U_off, w.delta_q)
    assert np.all(np.abs(moved) < FORGET.resolved(SPEC).tolerance)
    theta, G = dequantize(w.theta_q, SPEC.f_w), dequantize(w.G_q, SPEC.f_g)
    _, float_delta = group_obs(theta, G, w.mask, directions=w.U_q.astype(float))
    _, plain_delta = group_obs(theta, G, w.mask)
    circuit_delta = dequantize(w.delta_q, SPEC.f_w)
    error = np.abs(np.where(w.mask, 0, circuit_delta - np.asarray(float_delta))).max()
    shift = np.abs(np.asarray(float_delta) - np.asarray(plain_delta)).max()
    assert error < 1e-2 * shift  # the constraint moves Δ far more than the fixed point perturbs it
    assert (
        np.abs(np.einsum("nrb,nb->nr", U_off, np.where(w.mask, 0, np.asarray(plain_delta)))).max()
        > 100 * np.abs(dequantize(moved, SPEC.f_w + FORGET.f_u)).max() * 2**FORGET.f_u
    )


def test_forget_rows_pass_the_soundness_audit(honest):
    _, _, cs, a = honest
    report = audit(cs, a, P, mutations=96, compensated=24)
    assert report.ok, report.summary()
    assert report.to_json()["unconstrained_cells"] == 0


def test_structure_depends_on_r_only():
    a = inputs(1)
    b = inputs(2)
    structures = []
    for theta, G, mask, U in (a, b):
        w = obs_witness(theta, G, mask, spec=SPEC, directions=U, forget=FORGET)
        structures.append(structure_to_json(lowered(w)[1][0], P))
    assert structures[0] == structures[1]
    plain = ChunkShape(blocks=NB, block_size=B, level="F", spec=SPEC, lanes=B)
    assert ChunkShape(blocks=NB, block_size=B, level="F", spec=SPEC, lanes=B, forget=ForgetSpec(directions=0)) == plain
    with pytest.raises(ValueError, match="level F only"):
        ChunkShape(blocks=NB, block_size=B, level="R", spec=SPEC, forget=FORGET)
    with pytest.raises(ValueError, match="compact level-F layout"):
        ChunkShape(blocks=NB, block_size=B, level="F", spec=SPEC, lanes=4, forget=FORGET)


def test_plain_obs_or_another_public_direction_is_rejected(honest):
    w, chunk, cs, a = honest
    # the plain OBS update with μ = 0 does not keep U_b Δ within the tolerance
    plain = quantized_obs_witness(w.theta_q, w.G_q, w.mask, spec=SPEC)
    forged = chunk_layer(plain, blocks_per_chunk=NB)[0]
    shape = chunk_shape_key(blocks=NB, block_size=B, level="F", spec=SPEC, lanes=B, forget=FORGET)
    salts = draw_salts(shape, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="tolerance"):  # no in-range limbs exist for its U_b Δ
        lower_chunk(
            *forged.lowering_inputs(),
            spec=SPEC,
            level="F",
            lanes=B,
            salts=salts,
            forget=FORGET,
            U_q=chunk.U_q,
            mu_q=np.zeros_like(chunk.mu_q),
        )
    first = B - 1
    # a different public direction (instance) for the same proof
    t = a.copy()
    row = first + B + 5  # block 1, an unmasked position
    assert not chunk.mask[1, 5]
    t.instance["u_0"][row] = (int(t.instance["u_0"][row]) + 3) % P
    assert ("gate", "y_on_mask") in failures(cs, t)
    # μ must be one value per block
    t = a.copy()
    t.advice["mu_1"][row] = (int(t.advice["mu_1"][row]) + 1) % P
    assert ("gate", "mu_constant_1") in failures(cs, t)


def test_witness_errors_and_tolerance_are_stated():
    theta, G, mask, U = inputs(3, r=7)  # 7 directions cannot all hold on block 1 (2+ of its 8 masked)
    with pytest.raises(WitnessError, match="singular"):
        obs_witness(theta, G, mask, spec=SPEC, directions=U, forget=ForgetSpec(directions=7))
    with pytest.raises(ValueError, match="ForgetSpec.directions = 2"):
        obs_witness(theta, G, mask, spec=SPEC, directions=U, forget=FORGET)
    assert FORGET.resolved(SPEC).tol_bits == FORGET.f_u + SPEC.f_w - 10


def test_real_halo2_proof_of_the_forget_rows_verifies_and_binds_u(honest, tmp_path):
    import warnings

    from circuit_compiler import backend as be
    from circuit_compiler.lowering import chunk_instances
    from circuit_compiler.srs import InsecureSrsWarning

    _, chunk, cs, a = honest
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureSrsWarning)
        srs = be.Srs.generate_dev(cs.k, tmp_path / "dev.srs", seed=3)
    assert be.mock_prove(cs, a, P) == []  # midnight's own MockProver agrees with ours
    keys = be.keygen(srs, cs, P)
    proof = be.prove(srs, keys, cs, a, P)
    commitments = {name: be.commit(srs, cs.k, values, P) for name, values in a.committed.items()}
    shape = chunk_shape_key(blocks=NB, block_size=B, level="F", spec=SPEC, lanes=B, forget=FORGET)
    public = chunk_instances(shape, chunk.mask, chunk.U_q)  # what the verifier rebuilds from the request
    be.verify_or_raise(srs, keys, cs, proof, public, commitments, P)
    other = chunk.U_q.copy()
    other[1, 0, 6] += 1  # another public direction: the same proof must fail
    assert not be.verify(srs, keys, cs, proof, chunk_instances(shape, chunk.mask, other), commitments, P)
