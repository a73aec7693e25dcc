"""Registration well-formedness circuit: in-range θ and G (boundaries included) prove; out-of-range ones,
such as attack B's field-sized G, have no witness, and a forged witness fails both provers."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest

from circuit_compiler import backend as be
from circuit_compiler.fixedpoint import FixedPointSpec, QuantizationError
from circuit_compiler.lowering import (
    ChunkShape,
    build_chunk_circuit,
    committed_columns,
    draw_salts,
)
from circuit_compiler.wellformed import (
    build_wellformed_circuit,
    checked_rows,
    registered_names,
    wellformed_assignment,
)

pytestmark = pytest.mark.prover

SPEC = FixedPointSpec(limb_bits=8)
NB, B = 2, 4
P = be.BLS12_381_SCALAR_MODULUS


def honest_columns(shape, seed=0):
    spec = shape.spec
    rng = np.random.default_rng(seed)
    theta = rng.integers(-(1 << (spec.w_w - 1)), 1 << (spec.w_w - 1), size=(NB, B))
    theta[0, 0], theta[1, 3] = -(1 << (spec.w_w - 1)), (1 << (spec.w_w - 1)) - 1  # both ends of the range
    G = None
    if shape.level == "F":
        A = rng.integers(-(1 << spec.f_g), (1 << spec.f_g) + 1, size=(NB, B, B))
        G = np.triu(A) + np.triu(A, 1).transpose(0, 2, 1)
        G[0, 0, 1] = G[0, 1, 0] = 1 << spec.f_g
        G[1, 2, 3] = G[1, 3, 2] = -(1 << spec.f_g)
    return committed_columns(shape, salts=draw_salts(shape, rng=rng), theta=theta, G=G)


SHAPES = [("F", B, None), ("F", 2, "classic"), ("R", None, None)]


@pytest.mark.parametrize("level, lanes, layout", SHAPES)
def test_in_range_registrations_satisfy_the_circuit(level, lanes, layout):
    shape = ChunkShape(blocks=NB, block_size=B, level=level, spec=SPEC, lanes=lanes, layout=layout)
    circuit = build_wellformed_circuit(shape)
    assignment = wellformed_assignment(circuit, honest_columns(shape))
    assert be.mock_prove(circuit.cs, assignment) == []
    assert circuit.cs.k == build_chunk_circuit(shape).cs.k  # same domain: same commitments
    # every row before the salts is checked, no salt row is
    for name in assignment.committed:
        selector = "q_theta" if name == "theta" else "q_g"
        on = np.flatnonzero(circuit.cs.fixed[selector])
        assert on.tolist() == list(checked_rows(shape, name))
        assert not set(shape.salt_rows(name)) & set(on.tolist())


def attack_b_value(seed: int = 1) -> int:
    """An entry of attack B's G = (2^s / L)(diag(d∘(θ + M d)) − M d dᵀ): a field element of ~255 bits."""
    L, M, d_i, d_j = 7, 3, 5 + seed, 11
    return (1 << SPEC.s) * pow(L, -1, P) * (-M * d_i * d_j) % P


def test_attack_b_g_has_no_witness_and_a_forged_one_fails():
    shape = ChunkShape(blocks=NB, block_size=B, level="F", spec=SPEC, lanes=B)
    circuit = build_wellformed_circuit(shape)
    columns = honest_columns(shape)
    honest = wellformed_assignment(circuit, columns)
    row = shape.first_row + 1  # block 0, G[1, 2] on lane 1
    attacked = {k: v.copy() for k, v in columns.items()}
    attacked["g_1"][row] = (attack_b_value() + shape.g_offset) % P
    with pytest.raises(QuantizationError, match="'g_1'"):
        wellformed_assignment(circuit, attacked)
    # one past the bound is refused too (|G| = 2^f_g + 1), and so is a θ outside w_w bits
    attacked["g_1"][row] = (1 << SPEC.f_g) + 1 + shape.g_offset
    with pytest.raises(QuantizationError, match="g_1_hi"):
        wellformed_assignment(circuit, attacked)
    wide = {k: v.copy() for k, v in columns.items()}
    wide["theta"][shape.first_row] = (1 << SPEC.w_w) + shape.theta_offset
    with pytest.raises(QuantizationError, match="'theta'"):
        wellformed_assignment(circuit, wide)
    # A prover that keeps the honest limbs next to the attack value violates the decomposition gates
    forged = honest.copy()
    forged.committed["g_1"][row] = (attack_b_value() + shape.g_offset) % P
    failures = be.mock_prove(circuit.cs, forged)
    assert failures and all("g_1_" in f for f in failures), failures[:3]


@pytest.fixture(scope="module")
def srs(tmp_path_factory):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", be.InsecureSrsWarning)
        return be.Srs.generate_dev(10, tmp_path_factory.mktemp("srs") / "dev.srs", seed=5)


def test_real_proof_binds_the_registered_commitments(srs):
    shape = ChunkShape(blocks=NB, block_size=B, level="F", spec=SPEC, lanes=B)
    circuit = build_wellformed_circuit(shape)
    columns = honest_columns(shape)
    assignment = wellformed_assignment(circuit, columns)
    keys = be.keygen(srs, circuit.cs)
    proof = be.prove(srs, keys, circuit.cs, assignment)
    commitments = {
        name: be.commit(srs, circuit.cs.k, values) for name, values in columns.items() if name != "theta_new"
    }
    assert be.verify(srs, keys.vk, circuit.cs, proof, {}, commitments)
    # against the commitment of an attack-B lane the same proof fails
    attacked = columns["g_1"].copy()
    attacked[shape.first_row + 1] = (attack_b_value() + shape.g_offset) % P
    assert not be.verify(
        srs, keys.vk, circuit.cs, proof, {}, {**commitments, "g_1": be.commit(srs, circuit.cs.k, attacked)}
    )


# |G| ≤ 2^4: 33 allowed values, an interval table these tiny circuits' rows can hold
INTERVAL_SPEC = FixedPointSpec(limb_bits=8, f_g=4)


def test_g_takes_one_lookup_per_lane_where_the_interval_table_fits(srs):
    shape = ChunkShape(blocks=NB, block_size=B, level="F", spec=INTERVAL_SPEC, lanes=B)
    circuit = build_wellformed_circuit(shape)
    lanes = registered_names(shape)[1:]
    assert [lk.name for lk in circuit.cs.lookups if lk.name.startswith("g_")] == [f"{g}_range_interval" for g in lanes]
    assert circuit.cs.fixed["interval_33"][:33].tolist() == list(range(33))
    # where it does not fit (|G| ≤ 2^12: 8193 values), two one-sided checks per lane
    fallback = build_wellformed_circuit(dataclasses.replace(shape, spec=SPEC))
    assert sum(lk.name.startswith("g_1_") for lk in fallback.cs.lookups) == 4  # lo and hi, two 8-bit limbs each
    columns = honest_columns(shape)  # G = ±2^f_g included
    assignment = wellformed_assignment(circuit, columns)
    assert be.mock_prove(circuit.cs, assignment) == []
    bound, row = 1 << INTERVAL_SPEC.f_g, shape.first_row + 1
    for bad in (bound + 1, -bound - 1, attack_b_value()):
        stored = (bad + shape.g_offset) % P
        attacked = {k: v.copy() for k, v in columns.items()}
        attacked["g_1"][row] = stored
        with pytest.raises(QuantizationError, match="'g_1'"):
            wellformed_assignment(circuit, attacked)
        forged = assignment.copy()
        forged.committed["g_1"][row] = stored
        failures = be.mock_prove(circuit.cs, forged)
        assert failures and all("g_1_range_interval" in f for f in failures), (bad, failures[:3])
    # a real proof binds the registered commitments
    keys = be.keygen(srs, circuit.cs)
    proof = be.prove(srs, keys, circuit.cs, assignment)
    commitments = {name: be.commit(srs, circuit.cs.k, values) for name, values in assignment.committed.items()}
    assert be.verify(srs, keys.vk, circuit.cs, proof, {}, commitments)
