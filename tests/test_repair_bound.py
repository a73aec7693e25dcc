"""The public bound on the repair, b_Δ = w_delta: Δ ∈ [-2^(b_Δ-1), 2^(b_Δ-1)) in units of 2^-f_w, proven at
every layout and level. A witness whose Δ is one past the bound (and otherwise satisfies every OBS relation)
is rejected by both mock provers (named check) and by a real proof; the largest Δ inside is accepted."""

from __future__ import annotations

import numpy as np
import pytest

from circuit_compiler import backend as be
from circuit_compiler.fixedpoint import FixedPointSpec, QuantizationError
from circuit_compiler.lowering import ChunkShape, build_chunk_circuit, draw_salts, lower_chunk
from circuit_compiler.mock_prover import check

P = be.BLS12_381_SCALAR_MODULUS
B_DELTA = 20
SPEC = FixedPointSpec(f_w=16, f_g=12, s=14, w_w=24, w_delta=B_DELTA, w_y=40, limb_bits=8)
NB, B = 2, 4
LARGEST = (1 << (B_DELTA - 1)) - 1  # the largest Δ inside the bound


def failures(cs, assignment):
    return sorted({(f.kind, f.name, f.row) for f in check(cs, assignment, P)}, key=str)


def programmed_repair(delta_1: int):
    """A chunk whose OBS relation forces Δ_1 = ``delta_1`` exactly: block 0 masks position 0, G = 2^f_g·I
    with G_01 = G_10 = -2^f_g (symmetric, in range), θ_0 = delta_1, so ỹ_0 = 4·θ_0 solves the residual
    with e = 0 and Δ_1 = floor(2^f_g·ỹ_0 / 2^s) = θ_0; every other Δ is 0. Returns the lowering inputs."""
    one = 1 << SPEC.f_g
    G = np.tile(np.eye(B, dtype=np.int64) * one, (NB, 1, 1))
    G[0, 0, 1] = G[0, 1, 0] = -one
    mask = np.zeros((NB, B), dtype=bool)
    mask[0, 0] = True
    theta = np.array([[delta_1, 5, -7, 11], [1, -2, 3, -4]], dtype=np.int64)
    y = np.zeros((NB, B), dtype=np.int64)
    y[0, 0] = 4 * delta_1  # G_00 ỹ_0 = θ_0 · 2^s exactly (2^f_g · 4 = 2^s)
    delta = np.zeros((NB, B), dtype=np.int64)
    delta[0, 1] = delta_1
    rem = np.zeros((NB, B), dtype=np.int64)
    rem[0, 0] = 1 << (SPEC.s - 1)  # e + τ with e = 0
    theta_new = np.where(mask, 0, theta + delta)
    return theta, theta_new, G, mask, y, delta, rem


def shape_of(level: str, layout: str | None) -> ChunkShape:
    lanes = (B if layout != "classic" else 2) if level == "F" else None
    return ChunkShape(blocks=NB, block_size=B, level=level, spec=SPEC, lanes=lanes, layout=layout)


def lowered(shape: ChunkShape, delta_1: int, *, seed: int = 0):
    """The chunk lowered under ``shape``; a Δ past the bound is lowered under a spec one bit wider and its
    limbs are re-cut for ``shape`` (the closest a prover can get: every other cell is the honest one)."""
    theta, theta_new, G, mask, y, delta, rem = programmed_repair(delta_1)
    wide = SPEC if abs(delta_1 + 0.5) < (1 << (B_DELTA - 1)) else FixedPointSpec(**{**SPEC.to_dict(), "w_delta": 28})
    salts = draw_salts(shape, rng=np.random.default_rng(seed))
    level = shape.level
    _, assignment = lower_chunk(
        theta,
        theta_new,
        G if level == "F" else None,
        mask,
        y if level == "F" else None,
        delta,
        rem if level == "F" else None,
        spec=wide,
        level=level,
        lanes=shape.lanes,
        layout=shape.layout,
        salts=salts,
    )
    circuit = build_chunk_circuit(shape)
    if wide is not SPEC:
        forge_delta_limbs(circuit, assignment, mask=mask, delta=delta, y=y)
    return circuit, assignment


def forge_delta_limbs(circuit, assignment, *, mask, delta, y) -> None:
    """Write Δ's range-checked limbs for ``circuit`` without its bound check: Δ + h_Δ cut into the limb
    widths, any excess left in the top limb (compact level F: the limbs above b_Δ, which the shared field
    holds; classic / level R: a top limb past its table)."""
    rows0 = circuit.shape.first_row
    if circuit.rows is not None:
        limbs = circuit.rows.high
        on_mask = y + circuit.rows.y_offset if circuit.shape.level == "F" else delta + circuit.rows.delta_offset
        values = np.where(mask, on_mask, delta + circuit.rows.delta_offset).ravel()
    else:
        limbs = circuit.update.delta_range
        values = (delta + limbs.offset).ravel()
    widths, parts, rest = limbs.widths, [], values.astype(object)
    for k, width in enumerate(widths):
        last = k == len(widths) - 1
        parts.append(rest if last else rest % (1 << width))
        rest = rest // (1 << width)
    names = {c.name for c in circuit.cs.columns}
    for name in [n for n in assignment.advice if n not in names]:  # the wider spec's extra limb columns
        del assignment.advice[name]
    for column, part in zip(limbs.limbs, parts):
        assignment.advice[column.name][rows0 : rows0 + values.size] = np.asarray(part, dtype=np.int64)


CASES = [("F", None), ("F", "classic"), ("R", None)]


@pytest.mark.parametrize("level, layout", CASES)
def test_the_largest_repair_inside_the_bound_is_accepted(level, layout):
    shape = shape_of(level, layout)
    for delta_1 in (LARGEST, -LARGEST - 1):
        circuit, assignment = lowered(shape, delta_1)
        assert failures(circuit.cs, assignment) == []
        assert be.mock_prove(circuit.cs, assignment) == []


@pytest.mark.parametrize("level, layout", CASES)
def test_one_past_the_bound_is_refused_at_lowering_and_rejected_by_name(level, layout):
    shape = shape_of(level, layout)
    theta, theta_new, G, mask, y, delta, rem = programmed_repair(LARGEST + 1)
    with pytest.raises(QuantizationError, match="Δ|delta"):
        lower_chunk(
            theta,
            theta_new,
            G if level == "F" else None,
            mask,
            y if level == "F" else None,
            delta,
            rem if level == "F" else None,
            spec=SPEC,
            level=level,
            lanes=shape.lanes,
            layout=shape.layout,
            salts=draw_salts(shape, rng=np.random.default_rng(0)),
        )
    circuit, assignment = lowered(shape, LARGEST + 1)
    found = failures(circuit.cs, assignment)
    row = shape.first_row + 1  # weight 1 of block 0
    if shape.layout == "compact" and level == "F":
        assert found == [("gate", "delta_bound", row)]  # the only relation Δ = 2^(b_Δ-1) violates
        assert any("delta_bound" in f for f in be.mock_prove(circuit.cs, assignment))
    else:  # Δ + h_Δ = 2^b_Δ: the top limb leaves its table
        top = (circuit.rows.high if circuit.rows is not None else circuit.update.delta_range).limbs[-1].name
        assert found == [("lookup", top, row)]
        assert be.mock_prove(circuit.cs, assignment)


@pytest.fixture(scope="module")
def srs(tmp_path_factory):
    return be.Srs.generate_dev(10, tmp_path_factory.mktemp("srs") / "dev.srs", seed=3)


@pytest.mark.prover
def test_a_real_proof_of_a_repair_past_the_bound_does_not_verify(srs):
    shape = shape_of("F", None)
    circuit = build_chunk_circuit(shape)
    keys = be.keygen(srs, circuit.cs)
    verdicts = {}
    for delta_1 in (LARGEST, LARGEST + 1):
        _, assignment = lowered(shape, delta_1, seed=delta_1)
        proof = be.prove(srs, keys, circuit.cs, assignment)
        commitments = {name: be.commit(srs, circuit.cs.k, values, P) for name, values in assignment.committed.items()}
        verdicts[delta_1] = be.verify(srs, keys.vk, circuit.cs, proof, assignment.instance, commitments)
    assert verdicts == {LARGEST: True, LARGEST + 1: False}


def test_the_bound_in_weight_units_maps_to_whole_bits_and_travels_with_the_request(tmp_path):
    import json

    from circuit_compiler.fixedpoint import delta_bits_for, round_up_to_power_of_two
    from jaxapex.protocol.artifacts import ArtifactError
    from jaxapex.protocol.requests import UnlearningRequest

    assert delta_bits_for(1.0, 16) == 17 and delta_bits_for(2.0**-2, 16) == 15  # Δ_q ∈ [-2^16, 2^16) = [-1, 1)
    assert round_up_to_power_of_two(0.3) == 0.5 and round_up_to_power_of_two(2.0) == 2.0
    with pytest.raises(ValueError, match="power of two"):
        delta_bits_for(0.3, 16)
    with pytest.raises(ValueError, match="positive finite"):
        round_up_to_power_of_two(float("nan"))
    masks = {"fc1": np.eye(4, dtype=bool)}
    with pytest.raises(ValueError, match="power of two"):
        UnlearningRequest(request_id="r", model_id="m", masks=masks, max_delta=3.0)
    path = UnlearningRequest(request_id="r", model_id="m", masks=masks, max_delta=0.25).save(tmp_path / "req")
    assert UnlearningRequest.load(path).max_delta == 0.25
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["max_delta"] = 0.3
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="field 'max_delta'"):
        UnlearningRequest.load(path)
