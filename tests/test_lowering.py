"""Lowering of the OBS chunk circuit and client-side witness generation.

The central properties: the honest witness satisfies every gate, lookup and copy at both levels; the
circuit's fixed-point θ' equals an independent float64 group-OBS computation within the bound the
compiler states; the structure never depends on the mask or the weights; tampering is caught by name.
"""

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from circuit_compiler.audit import audit
from circuit_compiler.field import BN254_FR, DEFAULT_FIELD
from circuit_compiler.fixedpoint import (
    FieldOverflowError,
    FixedPointSpec,
    ForgetSpec,
    QuantizationError,
    delta_error_bound,
    dequantize,
)
from circuit_compiler.ir import ColumnKind, usable_rows
from circuit_compiler.lowering import (
    ChunkShape,
    blocks_to_fill,
    build_chunk_circuit,
    chunk_instances,
    chunk_layer,
    chunk_shape_key,
    committed_columns,
    draw_salts,
    lower_chunk,
)
from circuit_compiler.mock_prover import check
from circuit_compiler.serialize import load_circuit, save_circuit, structure_to_json
from circuit_compiler.witness import WitnessError, obs_witness, quantized_obs_witness, removal_witness

P = DEFAULT_FIELD.modulus
SPEC = FixedPointSpec(f_w=12, f_g=10, s=16, w_w=16, w_delta=24, w_y=56, limb_bits=8)


# ------------------------------------------------------------------------------------------- helpers


def fisher_inverse_blocks(rng, blocks, B, *, damp=0.5, samples=6):
    """Inverse of a damped empirical Fisher per block: (λI + X Xᵀ/m)⁻¹."""
    X = rng.normal(size=(blocks, B, samples))
    return np.linalg.inv(X @ X.transpose(0, 2, 1) / samples + damp * np.eye(B))


def layer_inputs(rng, *, blocks, B, density=0.3, damp=0.5):
    theta = np.clip(rng.normal(scale=0.5, size=(blocks * B // 4, 4)), -3, 3)  # a (out, in) matrix
    mask = rng.random(theta.shape) < density
    flat = mask.reshape(blocks, B)
    if blocks >= 3:  # always one untouched and one fully masked block
        flat[0] = False
        flat[1] = True
    return theta, fisher_inverse_blocks(rng, blocks, B, damp=damp), mask


def float_obs_theta_new(witness):
    """Independent reference: group OBS in float64 on the dequantized inputs, block by block."""
    spec = witness.spec
    theta = dequantize(witness.theta_q, spec.f_w)
    G = dequantize(witness.G_q, spec.f_g)
    out = theta.copy()
    for b in range(theta.shape[0]):
        S = np.flatnonzero(witness.mask[b])
        if S.size:
            out[b] += -G[b][:, S] @ np.linalg.solve(G[b][np.ix_(S, S)], theta[b, S])
            out[b, S] = 0.0
    return out


def failures(cs, assignment):
    return sorted({(f.kind, f.name, f.row) for f in check(cs, assignment, P)}, key=str)


def lower(chunk, *, level, lanes, spec=SPEC, seed=0, **kw):
    shape = chunk_shape_key(
        blocks=chunk.blocks, block_size=chunk.block_size, level=level, spec=spec, lanes=lanes, layout=kw.get("layout")
    )
    salts = draw_salts(shape, rng=np.random.default_rng(seed))
    return lower_chunk(*chunk.lowering_inputs(), spec=spec, level=level, lanes=lanes, salts=salts, **kw)


def specs(B):
    """Fixed-point formats wide enough for well-conditioned blocks of size B."""

    @st.composite
    def build(draw):
        t = draw(st.sampled_from([4, 8]))
        f_w = draw(st.integers(6, 14))
        f_g = draw(st.integers(8, 12))
        log_b = int(np.log2(B))
        s = -(-(f_g + log_b + draw(st.integers(0, 6))) // t) * t
        w_delta = -(-(f_w + 12) // t) * t
        return FixedPointSpec(f_w=f_w, f_g=f_g, s=s, w_w=f_w + 3, w_delta=w_delta, w_y=56, limb_bits=t)

    return build()


# --------------------------------------------------------------------------------- the central property


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_honest_witness_satisfies_both_levels_and_matches_float_obs(data):
    B = data.draw(st.sampled_from([4, 8, 16]), label="B")
    blocks = data.draw(st.integers(1, 4), label="blocks")
    per_chunk = data.draw(st.integers(1, 3), label="blocks_per_chunk")
    lanes = data.draw(st.sampled_from([l for l in (1, 2, 4, B) if B % l == 0]), label="lanes")
    spec = data.draw(specs(B), label="spec")
    density = data.draw(st.sampled_from([0.0, 0.15, 0.5, 1.0]), label="density")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    theta, G, mask = layer_inputs(rng, blocks=blocks, B=B, density=density, damp=rng.uniform(0.3, 1.0))

    witness = obs_witness(theta, G, mask, spec=spec)

    # fixed-point θ' vs float64 OBS on the same dequantized inputs, within the compiler's stated bound
    reference = float_obs_theta_new(witness)
    circuit = dequantize(witness.theta_new_q, spec.f_w)
    bound = delta_error_bound(dequantize(witness.G_q, spec.f_g), witness.mask, spec)
    error = np.abs(circuit - reference)
    assert np.all(error <= bound * (1 + 1e-9) + 1e-12), (error - bound).max()
    assert np.all(circuit[witness.mask] == 0)
    assert np.array_equal(witness.theta_new().ravel(), circuit.ravel())

    for chunk in chunk_layer(witness, blocks_per_chunk=per_chunk):
        for level in ("R", "F"):
            cs, assignment = lower(chunk, level=level, lanes=lanes, spec=spec)
            assert failures(cs, assignment) == [], (level, chunk.index)


def test_float_reference_error_is_at_rounding_scale():
    """Not vacuous: the bound is a few units in the last place of θ', and so is the error."""
    rng = np.random.default_rng(11)
    theta, G, mask = layer_inputs(rng, blocks=6, B=16, density=0.2)
    witness = obs_witness(theta, G, mask, spec=SPEC)
    error = np.abs(dequantize(witness.theta_new_q, SPEC.f_w) - float_obs_theta_new(witness))
    bound = delta_error_bound(dequantize(witness.G_q, SPEC.f_g), witness.mask, SPEC)
    ulp = 2.0**-SPEC.f_w
    assert error.max() <= 1.5 * ulp and error.max() > 0
    assert np.median(bound[~witness.mask]) < 20 * ulp


# ----------------------------------------------------------------------------------- structure vs shape


@pytest.mark.parametrize("level, lanes", [("R", None), ("F", 8), ("F", 2)])
def test_structure_depends_only_on_the_shape(level, lanes):
    rng = np.random.default_rng(5)
    witnesses = []
    for density in (0.0, 0.3, 0.9):
        theta, G, mask = layer_inputs(rng, blocks=3, B=8, density=density)
        witnesses.append(obs_witness(theta, G, mask, spec=SPEC))
    lowered = [
        lower(chunk_layer(w, blocks_per_chunk=3)[0], level=level, lanes=lanes, seed=i) for i, w in enumerate(witnesses)
    ]
    assert (
        len({int(w.mask.sum()) for w in witnesses}) == 3
        and len({a.instance["mask"].tobytes() for _, a in lowered}) == 3
    )
    reference, _ = lowered[0]
    keygen = build_chunk_circuit(chunk_shape_key(blocks=3, block_size=8, level=level, spec=SPEC, lanes=lanes)).cs
    for cs, _ in lowered[1:] + [(keygen, None)]:
        assert json.dumps(structure_to_json(cs, P), sort_keys=True) == json.dumps(
            structure_to_json(reference, P), sort_keys=True
        )
        assert cs.fixed.keys() == reference.fixed.keys()
        for name in cs.fixed:
            assert np.array_equal(cs.fixed[name], reference.fixed[name]), name
        assert np.array_equal(cs.copies, reference.copies)
    # no fixed, selector or table column depends on anything but the shape; the mask only sits in instance
    assert [c.name for c in reference.columns_of(ColumnKind.INSTANCE)] == (
        ["mask", "touched"] if level == "R" else ["mask"]
    )


def test_compact_layout_statistics_follow_the_docs():
    spec = FixedPointSpec(f_w=12, f_g=10, s=13, w_w=16, w_delta=24, w_y=28)  # automatic limb size
    shape = chunk_shape_key(blocks=40, block_size=8, level="F", spec=spec, lanes=8)
    assert shape.layout == "compact" and shape.first_row == 7 and shape.weights == shape.mac_rows == 320
    cs = build_chunk_circuit(shape).cs
    # margins of B - 1 rows on both sides; G's salts after the second margin (the lanes' forward rotations
    # read it), 5 cells for g_1 … g_3
    assert shape.used_rows == 7 + 320 + 7 + 5 and cs.rows == max(shape.used_rows, 1 << shape.limb_bits)
    # the table never sets k: t = natural k - 1, within [8, 16]
    assert shape.natural_k == 9 and shape.limb_bits == 8 and cs.k == 9
    names = [c.name for c in cs.columns]
    # G in ⌊B/2⌋ + 1 = 5 cyclic lanes
    assert names[:7] == ["theta", "theta_new"] + [f"g_{l}" for l in range(5)] and "g_5" not in names
    # one advice column for ỹ, then the shared limbs: high (28 bits = 8 + 8 + 8 | 4, a boundary at
    # b_Δ = w_delta = 24), low (13 = 8 + 5)
    assert [c.name for c in cs.columns_of(ColumnKind.ADVICE)] == (
        ["y"] + [f"high_limb_{k}" for k in range(4)] + ["low_limb_0", "low_limb_1"]
    )
    assert [c.name for c in cs.columns_of(ColumnKind.TABLE)] == ["range_8", "range_4", "range_5"]
    assert [g.name for g in cs.gates] == [
        "y_outside",
        "removal",
        "update",
        "delta_bound",
        "y_on_mask",
        "residual_rescale",
    ]
    assert len(cs.lookups) == 6 and len(cs.copies) == 0  # no copies: no permutation argument
    assert all(lk.always_on for lk in cs.lookups)  # limbs in their tables on every usable row
    assert cs.max_degree() == 4 and cs.max_advice_queries() == 2 * 8 - 1
    assert cs.fixed["first"].nonzero()[0].tolist() == [7 + 8 * b for b in range(41)]
    assert np.flatnonzero(cs.fixed["q_fin"]).tolist() == list(range(7, 327))
    assert np.flatnonzero(cs.fixed["q_outside"]).tolist() == list(range(7)) + list(range(327, 334))
    layout = cs.metadata["layout"]
    assert layout["name"] == "compact" and layout["finalization_rows"] == [7, 327] and layout["limb_bits"] == 8
    # salts: openings per proof + 1 (θ, θ' and g_0 are queried at rotation 0 only, g_ρ at 0, -ρ and B - ρ
    # for ρ < B/2, g_{B/2} at 0 and -B/2)
    cells = {"theta": 3, "theta_new": 3, "g_0": 3} | {f"g_{r}": 5 for r in range(1, 4)} | {"g_4": 4}
    starts = {"theta": 327, "theta_new": 327} | {f"g_{r}": 334 for r in range(5)}
    assert layout["salt_rows"] == {name: list(range(starts[name], starts[name] + n)) for name, n in cells.items()}
    assert layout["offsets"] == {"theta": 1 << 15, "g": 1 << 10}
    r_shape = chunk_shape_key(blocks=40, block_size=8, level="R", spec=spec)
    assert r_shape.layout == "compact" and r_shape.first_row == 0 and r_shape.lanes is None
    r_cs = build_chunk_circuit(r_shape).cs
    assert [c.name for c in r_cs.columns_of(ColumnKind.ADVICE)] == [f"high_limb_{k}" for k in range(3)]
    assert [g.name for g in r_cs.gates] == ["removal", "update", "no_delta_on_mask", "locality"]


def test_automatic_limb_size_grows_with_the_chunk_and_blocks_to_fill_fills_2_to_the_k():
    spec = FixedPointSpec()
    for k in (10, 12, 15):
        nb = blocks_to_fill(k, block_size=16, level="F", spec=spec, lanes=16)
        shape = chunk_shape_key(blocks=nb, block_size=16, level="F", spec=spec, lanes=16)
        assert build_chunk_circuit(shape).cs.k == k and shape.limb_bits == k - 1
        bigger = chunk_shape_key(blocks=nb + 1, block_size=16, level="F", spec=spec, lanes=16)
        assert bigger.natural_k == k + 1  # one more block would need the next domain
        assert shape.used_rows <= usable_rows(k, shape.max_rotations)
    r_nb = blocks_to_fill(12, block_size=16, level="R", spec=spec)
    assert build_chunk_circuit(chunk_shape_key(blocks=r_nb, block_size=16, level="R", spec=spec)).cs.k == 12
    assert chunk_shape_key(blocks=r_nb + 1, block_size=16, level="R", spec=spec).natural_k == 13
    with pytest.raises(ValueError, match=r"1 block\(s\) of B=16 at level F already need k = 9 > 5"):
        blocks_to_fill(5, block_size=16, level="F", spec=spec, lanes=16)
    with pytest.raises(ValueError, match=r"need k = 17 > 14 \(range table of 2\^16 rows\)"):
        blocks_to_fill(14, block_size=16, level="F", spec=FixedPointSpec(limb_bits=16), lanes=16)
    assert chunk_shape_key(blocks=4, block_size=16, level="F", spec=spec, lanes=16).limb_bits == 8  # the floor
    assert chunk_shape_key(blocks=8192, block_size=16, level="F", spec=spec, lanes=16).limb_bits == 16  # the cap


def test_classic_layout_statistics_follow_the_docs():
    shape = chunk_shape_key(blocks=3, block_size=8, level="F", spec=SPEC, lanes=2)
    cs = build_chunk_circuit(shape).cs
    assert shape.mac_rows == 3 * (8 // 2) * 8 and shape.weights == 24
    assert cs.rows == max(shape.mac_rows + 1, 1 << SPEC.limb_bits)
    names = {c.name for c in cs.columns}
    assert {"theta", "theta_new", "g_0", "g_1", "mask", "delta", "y", "rem", "z", "y_mac", "acc_0", "acc_1"} <= names
    assert [g.name for g in cs.gates] == [
        "removal",
        "update",
        "no_delta_on_mask",
        "delta_decompose",
        "rem_decompose",
        "rescale",
        "residual",
        "y_off_mask",
        "y_decompose",
        "mac_first",
        "mac_step",
        "y_repeat",
    ]
    assert len(cs.copies) == 2 * shape.weights
    assert max(g.degree() for g in cs.gates) == 3
    assert cs.max_degree() == 5  # its lookups keep the selector factor: q · limb, an argument of degree 5
    assert cs.metadata["shape"]["lanes"] == 2 and cs.metadata["layout"]["salt_rows"]["g_0"] == list(
        range(shape.mac_rows, shape.mac_rows + 3)
    )
    assert shape.layout == "classic" and cs.metadata["layout"]["name"] == "classic"
    r_shape = chunk_shape_key(blocks=3, block_size=8, level="R", spec=SPEC, lanes=2)
    assert r_shape.lanes is None and r_shape == chunk_shape_key(blocks=3, block_size=8, level="R", spec=SPEC, lanes=4)
    assert chunk_shape_key(blocks=3, block_size=8, level="R", spec=SPEC, layout="classic").layout == "classic"


@pytest.mark.parametrize("level, lanes", [("F", 2), ("F", 4), ("R", None)])
def test_salt_cells_are_touched_by_no_constraint(level, lanes):
    rng = np.random.default_rng(3)
    theta, G, mask = layer_inputs(rng, blocks=2, B=4, density=0.5)
    chunk = chunk_layer(obs_witness(theta, G, mask, spec=SPEC), blocks_per_chunk=2)[0]
    cs, a = lower(chunk, level=level, lanes=lanes)
    shape = chunk_shape_key(blocks=2, block_size=4, level=level, spec=SPEC, lanes=lanes)
    for name, row in ((n, r) for n in shape.committed_names() for r in cs.metadata["layout"]["salt_rows"][n]):
        col = cs.column_id(cs.column(name))
        assert not np.any((cs.copies[:, 0] == col) & (cs.copies[:, 1] == row))
        assert not np.any((cs.copies[:, 2] == col) & (cs.copies[:, 3] == row))
        # every gate or lookup that queries the column at rotation r is switched off at row - r
        checks = [(g.name, g.selector, [p for _, p in g.polys]) for g in cs.gates]
        checks += [(lk.name, lk.selector, list(lk.inputs)) for lk in cs.lookups]
        for check_name, selector, exprs in checks:
            for q in set().union(*(e.queries() for e in exprs)):
                if q.column.name == name:
                    assert cs.fixed[selector.name][row - q.rotation] == 0, (name, check_name)
        resalted = a.copy()
        resalted.committed[name][row] = (int(a.committed[name][row]) + 12345) % P
        assert failures(cs, resalted) == []
        assert int(a.committed[name][row]) != 0


# ----------------------------------------------------------------------------------- public-data helpers


def test_commitment_columns_and_instances_from_public_data_match_the_assignment():
    rng = np.random.default_rng(8)
    theta, G, mask = layer_inputs(rng, blocks=3, B=4, density=0.4)
    chunk = chunk_layer(obs_witness(theta, G, mask, spec=SPEC), blocks_per_chunk=3)[0]
    for level in ("R", "F"):
        shape = chunk_shape_key(blocks=3, block_size=4, level=level, spec=SPEC, lanes=4)
        salts = draw_salts(shape, rng=np.random.default_rng(1))
        _, a = lower_chunk(*chunk.lowering_inputs(), spec=SPEC, level=level, lanes=4, salts=salts)
        # what the client commits at personalization (θ, G; no mask yet) is the proof's committed instance
        early = committed_columns(shape, salts=salts, theta=chunk.theta_q, G=chunk.G_q if level == "F" else None)
        for name, values in early.items():
            assert np.array_equal(values, a.committed[name]), name
        public = chunk_instances(shape, chunk.mask)
        assert public.keys() == a.instance.keys()
        for name in public:
            assert np.array_equal(public[name], a.instance[name])
        if level == "R":
            assert (
                public["touched"][: shape.weights].reshape(3, 4).all(axis=1).tolist() == chunk.mask.any(axis=1).tolist()
            )


def test_chunk_layer_pads_the_last_chunk_and_shares_one_key():
    rng = np.random.default_rng(4)
    theta, G, mask = layer_inputs(rng, blocks=5, B=4, density=0.5)
    witness = obs_witness(theta, G, mask, spec=SPEC)
    chunks = chunk_layer(witness, blocks_per_chunk=2)
    assert [(c.index, c.first_block, c.valid_blocks) for c in chunks] == [(0, 0, 2), (1, 2, 2), (2, 4, 1)]
    last = chunks[-1]
    assert np.array_equal(last.theta_q[0], witness.theta_q[4]) and not last.theta_q[1].any()
    assert not last.mask[1].any() and not last.G_q[1].any() and not last.y_q[1].any() and not last.rem[1].any()
    keys = {chunk_shape_key(blocks=c.blocks, block_size=c.block_size, level="F", spec=SPEC, lanes=2) for c in chunks}
    assert len(keys) == 1
    cs, a = lower(last, level="F", lanes=2)
    assert failures(cs, a) == []
    with pytest.raises(ValueError, match="blocks_per_chunk must be >= 1"):
        chunk_layer(witness, blocks_per_chunk=0)


@pytest.mark.parametrize("lanes", [2, 4])
def test_saved_circuit_round_trips_and_still_checks(tmp_path, lanes):
    rng = np.random.default_rng(9)
    theta, G, mask = layer_inputs(rng, blocks=2, B=4, density=0.5)
    chunk = chunk_layer(obs_witness(theta, G, mask, spec=SPEC), blocks_per_chunk=2)[0]
    cs, a = lower(chunk, level="F", lanes=lanes)
    cs2, modulus, a2 = load_circuit(save_circuit(tmp_path / "chunk", cs, P, a))
    assert modulus == P and failures(cs2, a2) == []
    assert json.dumps(structure_to_json(cs2, P)) == json.dumps(structure_to_json(cs, P))


# ------------------------------------------------------------------------------------------- tampering


@pytest.fixture(scope="module")
def lowered_f():
    rng = np.random.default_rng(12)
    theta, G, mask = layer_inputs(rng, blocks=3, B=4, density=0.4)
    mask.reshape(3, 4)[2] = [True, False, False, True]
    chunk = chunk_layer(obs_witness(theta, G, mask, spec=SPEC), blocks_per_chunk=3)[0]
    cs, a = lower(chunk, level="F", lanes=2)
    return chunk, cs, a


def test_tampered_weights_and_updates_are_caught(lowered_f):
    chunk, cs, a = lowered_f
    masked_row, free_row = 8, 9  # block 2: positions 0 and 3 masked, 1 and 2 not
    assert chunk.mask.ravel()[masked_row] and not chunk.mask.ravel()[free_row]

    t = a.copy()
    t.committed["theta_new"][masked_row] = 1  # keep a "removed" weight
    assert failures(cs, t) == [("gate", "removal", masked_row)]

    t = a.copy()
    t.committed["theta_new"][free_row] = (int(t.committed["theta_new"][free_row]) + 1) % P
    assert failures(cs, t) == [("gate", "update", free_row)]

    # a larger Δ on a free row, kept consistent with θ' and the division: the remainder leaves [0, 2^s)
    t = a.copy()
    t.advice["delta"][free_row] += 3
    t.committed["theta_new"][free_row] = (int(t.committed["theta_new"][free_row]) + 3) % P
    t.advice["rem"][free_row] -= 3 << SPEC.s
    found = failures(cs, t)
    assert ("gate", "rescale", free_row) not in found and ("gate", "update", free_row) not in found
    assert ("gate", "rem_decompose", free_row) in found and ("gate", "delta_decompose", free_row) in found

    # ỹ off the mask would let Δ be anything
    t = a.copy()
    t.advice["y"][free_row] = 1
    assert ("gate", "y_off_mask", free_row) in failures(cs, t)

    # the committed G must be the one multiplied (where it meets a nonzero ỹ_j; elsewhere it is inert)
    row = int(np.flatnonzero(a.advice["y_mac"][: 3 * 2 * 4] != 0)[0])
    t = a.copy()
    t.committed["g_1"][row] = (int(t.committed["g_1"][row]) + 1) % P
    gate = "mac_first" if row % 4 == 0 else "mac_step"
    assert failures(cs, t) == [("gate", gate, row)]


def test_a_different_public_mask_is_rejected(lowered_f):
    chunk, cs, a = lowered_f
    flipped = a.copy()
    row = int(np.flatnonzero(~chunk.mask.ravel() & (chunk.theta_new_q.ravel() != 0))[0])
    flipped.instance["mask"][row] = 1  # the verifier asks to remove one more weight
    names = {n for _, n, _ in failures(cs, flipped)}
    assert "removal" in names
    dropped = a.copy()
    dropped.instance["mask"][int(np.flatnonzero(chunk.mask.ravel())[0])] = 0  # ... or one fewer
    assert failures(cs, dropped)


@pytest.mark.parametrize("layout", ["compact", "classic"])
def test_level_r_locality_and_removal(layout):
    rng = np.random.default_rng(13)
    theta, _, mask = layer_inputs(rng, blocks=3, B=4, density=0.5)
    delta = rng.normal(scale=0.01, size=theta.shape) * mask.reshape(3, 4).any(axis=1).repeat(4).reshape(theta.shape)
    witness = removal_witness(theta, delta, mask, spec=SPEC, block_size=4)
    assert witness.G_q is None and witness.y_q is None
    np.testing.assert_allclose(
        witness.theta_new().ravel(),
        np.where(mask.ravel(), 0, dequantize(witness.theta_q.ravel() + np.rint(delta.ravel() * 2**SPEC.f_w), SPEC.f_w)),
    )
    chunk = chunk_layer(witness, blocks_per_chunk=3)[0]
    cs, a = lower(chunk, level="R", lanes=None, layout=layout)
    assert failures(cs, a) == []
    untouched = int(np.flatnonzero(~chunk.mask.any(axis=1))[0]) * 4
    t = a.copy()
    if layout == "classic":
        t.advice["delta"][untouched] = 1
        t.advice["delta_limb_0"][untouched] += 1
    else:  # Δ is the high limbs' value (minus the offset): no Δ cell
        t.advice["high_limb_0"][untouched] += 1
    t.committed["theta_new"][untouched] = (int(t.committed["theta_new"][untouched]) + 1) % P
    assert failures(cs, t) == [("gate", "locality", untouched)]


# ------------------------------------------------------------------------------------ compact layout, level F


@pytest.fixture(scope="module")
def lowered_compact():
    rng = np.random.default_rng(21)
    theta, G, mask = layer_inputs(rng, blocks=3, B=4, density=0.4)
    mask.reshape(3, 4)[2] = [True, False, False, True]
    chunk = chunk_layer(obs_witness(theta, G, mask, spec=SPEC), blocks_per_chunk=3)[0]
    cs, a = lower(chunk, level="F", lanes=4)
    return chunk, cs, a


def test_compact_committed_values_are_small_non_negative_offsets(lowered_compact):
    chunk, cs, a = lowered_compact
    shape = chunk_shape_key(blocks=3, block_size=4, level="F", spec=SPEC, lanes=4)
    first, end = shape.first_row, shape.first_row + shape.weights
    theta_e = np.array([int(v) for v in a.committed["theta"][first:end]])
    assert np.array_equal(theta_e - (1 << (SPEC.w_w - 1)), chunk.theta_q.ravel()) and theta_e.min() >= 0
    theta_new_e = np.array([int(v) for v in a.committed["theta_new"][first:end]])
    assert np.all(theta_new_e[chunk.mask.ravel()] == 1 << (SPEC.w_w - 1))  # removed weights are exactly 0
    for rho in range(3):  # cyclic distances 0 … B/2
        lane = np.array([int(v) for v in a.committed[f"g_{rho}"][first:end]]).reshape(3, 4)
        for i in range(4):
            if rho < 2 or i < 2:
                assert np.array_equal(lane[:, i], chunk.G_q[:, i, (i + rho) % 4] + (1 << SPEC.f_g))
            else:
                assert not lane[:, i].any()  # lane B/2 holds its pairs on the block's first half
        assert 0 <= lane.min() and lane.max() <= 1 << (SPEC.f_g + 1)
        everything_else = np.delete(np.arange(cs.rows), np.r_[first:end, shape.salt_rows(f"g_{rho}")])
        assert not any(int(a.committed[f"g_{rho}"][r]) for r in everything_else)


def test_compact_tampering_is_caught_by_name(lowered_compact):
    chunk, cs, a = lowered_compact
    first = 3  # B - 1 margin rows before the blocks
    masked, free = first + 8, first + 9  # block 2: positions 0 and 3 masked, 1 and 2 not
    assert chunk.mask.ravel()[8] and not chunk.mask.ravel()[9]

    def bumped(table, name, row, delta=1):
        t = a.copy()
        getattr(t, table)[name][row] = (int(getattr(t, table)[name][row]) + delta) % P
        return t

    assert failures(cs, bumped("committed", "theta_new", masked)) == [("gate", "removal", masked)]
    assert failures(cs, bumped("committed", "theta_new", free)) == [("gate", "update", free)]
    assert failures(cs, bumped("committed", "theta", masked)) == [("gate", "residual_rescale", masked)]
    # ỹ off the mask would let Δ be anything
    assert ("gate", "y_on_mask", free) in failures(cs, bumped("advice", "y", free))
    # Δ - 1, rem + 2^s, θ' - 1: division and update hold, the remainder's limbs cannot (s = 16: limbs 8 + 8)
    assert [c.name for c in cs.columns if c.name.startswith("low_limb")] == ["low_limb_0", "low_limb_1"]
    t = bumped("advice", "high_limb_0", free, -1)
    t.committed["theta_new"][free] = (int(t.committed["theta_new"][free]) - 1) % P
    t.advice["low_limb_1"][free] += 1 << 8
    assert failures(cs, t) == [("lookup", "low_limb_1", free)]
    # the committed G must be the one multiplied (where it meets a nonzero ỹ)
    j = int(np.flatnonzero(chunk.mask[2])[0])  # masked position 0 of block 2: ỹ_0 ≠ 0 there
    assert chunk.y_q[2, j] != 0
    found = failures(cs, bumped("committed", "g_1", first + 8 + j))  # G[0, 1] of block 2: enters z_0 and z_1
    assert {row for _, _, row in found} == {first + 8 + 1} and {name for _, name, _ in found} == {"residual_rescale"}
    # the second half of lane B/2 is never multiplied by anything: inert
    assert failures(cs, bumped("committed", "g_2", first + 8 + 2)) == []


def test_compact_circuit_passes_the_soundness_audit(lowered_compact):
    chunk, cs, a = lowered_compact
    report = audit(cs, a, P, mutations=160, compensated=48)
    assert report.ok, report.summary()
    summary = report.to_json()
    assert summary["unconstrained_cells"] == 0 and summary["detection_rate"] == 1.0
    assert {m.cell.column for m in report.mutations} == {c.name for c in cs.columns_of(ColumnKind.ADVICE)}


def test_compact_mask_is_public_and_rejects_a_different_one(lowered_compact):
    chunk, cs, a = lowered_compact
    first = 3
    flipped = a.copy()
    row = int(np.flatnonzero(~chunk.mask.ravel() & (chunk.theta_new_q.ravel() != 0))[0])
    flipped.instance["mask"][first + row] = 1
    assert "removal" in {n for _, n, _ in failures(cs, flipped)}
    dropped = a.copy()
    dropped.instance["mask"][first + int(np.flatnonzero(chunk.mask.ravel())[0])] = 0
    assert failures(cs, dropped)


# -------------------------------------------------------------------------------------------- errors


def test_out_of_range_inputs_are_refused_with_names():
    rng = np.random.default_rng(14)
    theta, G, mask = layer_inputs(rng, blocks=2, B=4)
    big = theta.copy()
    big[1, 2] = 9.0  # w_w = 16 bits at f_w = 12: |θ| < 8
    with pytest.raises(QuantizationError, match=r"theta\[1, 2\] = 9.0 does not fit a signed 16-bit"):
        obs_witness(big, G, mask, spec=SPEC)
    with pytest.raises(ValueError, match=r"mask of shape \(4, 2\) does not match θ of shape \(2, 4\)"):
        obs_witness(theta, G, mask.reshape(4, 2), spec=SPEC)
    with pytest.raises(ValueError, match="G has 3 blocks but θ has 2 blocks"):
        obs_witness(theta, np.concatenate([G, G[:1]]), mask, spec=SPEC)
    with pytest.raises(ValueError, match="mask must be boolean or 0/1"):
        obs_witness(theta, G, mask.astype(int) * 2, spec=SPEC)

    chunk = chunk_layer(obs_witness(theta, G, mask, spec=SPEC), blocks_per_chunk=2)[0]
    shape = chunk_shape_key(blocks=2, block_size=4, level="F", spec=SPEC, lanes=2)
    salts = draw_salts(shape, rng=np.random.default_rng(0))
    inputs = dict(zip(("theta_q", "theta_new_q", "G_q", "mask", "y_q", "delta_q", "rem"), chunk.lowering_inputs()))

    def lowered(**changes):
        return lower_chunk(**{**inputs, **changes}, spec=SPEC, level="F", lanes=2, salts=salts)

    with pytest.raises(
        ValueError, match=r"mask has shape \(4, 2\), but the chunk's weights are \(blocks, B\) = \(2, 4\)"
    ):
        lowered(mask=chunk.mask.reshape(4, 2))
    with pytest.raises(QuantizationError, match=r"theta_q\[0, 1\] = 40000 does not fit a signed 16-bit"):
        lowered(theta_q=np.where(np.arange(8).reshape(2, 4) == 1, 40000, chunk.theta_q))
    G_bad = chunk.G_q.copy()
    G_bad[1, 2, 3] = (1 << SPEC.f_g) + 1
    with pytest.raises(QuantizationError, match=r"G_q\[1, 2, 3\] = 1025 exceeds 2\^f_g = 1024"):
        lowered(G_q=G_bad)
    y_bad = chunk.y_q.copy()
    y_bad[0, 0] = 1 << 55
    with pytest.raises(QuantizationError, match="range check 'y': value 36028797018963968 at position 0"):
        lowered(y_q=y_bad)
    with pytest.raises(KeyError, match="no salt for committed column 'g_1'"):
        lower_chunk(**inputs, spec=SPEC, level="F", lanes=2, salts={k: v for k, v in salts.items() if k != "g_1"})
    with pytest.raises(KeyError, match=r"salts for unknown committed columns \['g_2'\]"):
        lower_chunk(**inputs, spec=SPEC, level="F", lanes=2, salts={**salts, "g_2": 1})
    with pytest.raises(ValueError, match="level F needs G_q, y_q and rem"):
        lowered(G_q=None)
    with pytest.raises(ValueError, match="level F needs lanes L dividing B=4, got 3"):
        lower_chunk(**inputs, spec=SPEC, level="F", lanes=3, salts=salts)
    with pytest.raises(
        ValueError,
        match="compact layout computes a weight.s whole row of G on its own row: it needs lanes L = B = 4, got L = 2",
    ):
        lower_chunk(**inputs, spec=SPEC, level="F", lanes=2, salts=salts, layout="compact")
    with pytest.raises(ValueError, match="chunk layout must be one of"):
        chunk_shape_key(blocks=2, block_size=4, level="F", spec=SPEC, lanes=4, layout="dense")
    compact_salts = draw_salts(
        chunk_shape_key(blocks=2, block_size=4, level="F", spec=SPEC, lanes=4), rng=np.random.default_rng(0)
    )
    skewed = chunk.G_q.copy()
    skewed[1, 0, 2] += 1
    with pytest.raises(ValueError, match=r"G_q block 1 is not symmetric \(G\[0, 2\] = .*\): the compact layout"):
        lower_chunk(**{**inputs, "G_q": skewed}, spec=SPEC, level="F", lanes=4, salts=compact_salts)
    lower_chunk(**{**inputs, "G_q": skewed}, spec=SPEC, level="F", lanes=2, salts=salts)  # classic: any G


def test_bounds_that_could_wrap_the_field_refuse_to_compile():
    wide = FixedPointSpec(f_w=16, f_g=12, s=192, w_w=62, w_delta=24, w_y=48, limb_bits=12)
    with pytest.raises(FieldOverflowError, match="'residual'.*bn254_fr"):
        build_chunk_circuit(ChunkShape(blocks=1, block_size=4, level="F", spec=wide, lanes=4, field=BN254_FR))
    build_chunk_circuit(ChunkShape(blocks=1, block_size=4, level="R", spec=wide))  # BLS12-381 Fr has the room


def test_witness_errors_name_the_block():
    rng = np.random.default_rng(15)
    theta, G, mask = layer_inputs(rng, blocks=3, B=4, density=0.5)
    mask.reshape(3, 4)[2] = [True, True, False, False]
    singular = G.copy()
    singular[2] = 0.0
    singular[2, 3, 3] = 1.0  # block 2 keeps a nonzero entry, but not on S
    with pytest.raises(WitnessError, match=r"G_SS is singular in block\(s\) \[2\]"):
        obs_witness(theta, singular, mask, spec=SPEC)
    # an ill-conditioned G_SS needs a huge ỹ
    narrow = FixedPointSpec(f_w=12, f_g=10, s=16, w_w=16, w_delta=24, w_y=24, limb_bits=8)
    nearly = G.copy()
    nearly[2][np.ix_([0, 1], [0, 1])] = [[1.0, 1.0], [1.0, 1.0 + 2e-3]]
    with pytest.raises(WitnessError, match="ill-conditioned"):
        obs_witness(theta, nearly, mask, spec=narrow)


def test_refinement_repairs_a_poor_float_solve(monkeypatch):
    rng = np.random.default_rng(16)
    theta, G, mask = layer_inputs(rng, blocks=3, B=8, density=0.5)
    honest = obs_witness(theta, G, mask, spec=SPEC)
    solve = np.linalg.solve
    calls = {"n": 0}

    def poor_first_solve(a, b):
        calls["n"] += 1
        x = solve(a, b)
        return x + 1000.0 if calls["n"] == 1 else x  # ỹ off by 1000 units: |e| far beyond τ

    monkeypatch.setattr(np.linalg, "solve", poor_first_solve)
    repaired = obs_witness(theta, G, mask, spec=SPEC)
    assert calls["n"] >= 2
    assert np.array_equal(repaired.y_q, honest.y_q) and np.array_equal(repaired.theta_new_q, honest.theta_new_q)
    monkeypatch.setattr(np.linalg, "solve", lambda a, b: solve(a, b) + 1000.0)  # never good
    with pytest.raises(WitnessError, match=r"solve residual outside \[-τ, τ\)"):
        obs_witness(theta, G, mask, spec=SPEC)


def test_witness_generation_is_deterministic():
    rng = np.random.default_rng(17)
    theta, G, mask = layer_inputs(rng, blocks=4, B=8)
    a, b = obs_witness(theta, G, mask, spec=SPEC), obs_witness(theta, G, mask, spec=SPEC)
    for name in ("theta_q", "theta_new_q", "G_q", "y_q", "delta_q", "rem"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name


def test_quantized_entry_point_agrees_with_the_float_one():
    rng = np.random.default_rng(18)
    theta, G, mask = layer_inputs(rng, blocks=4, B=8)
    w = obs_witness(theta, G, mask, spec=SPEC)
    again = quantized_obs_witness(w.theta_q, w.G_q, w.mask, spec=SPEC, weight_shape=theta.shape)
    for name in ("theta_q", "theta_new_q", "G_q", "y_q", "delta_q", "rem"):
        assert np.array_equal(getattr(again, name), getattr(w, name)), name
    assert again.weight_shape == theta.shape
    # the committed G_q, dequantized, re-normalizes and re-quantizes to itself
    assert np.array_equal(obs_witness(theta, w.G_q.astype(float), mask, spec=SPEC).G_q, w.G_q)
    with pytest.raises(QuantizationError, match=r"\|G_q\| - 1"):
        quantized_obs_witness(w.theta_q, w.G_q * 2, w.mask, spec=SPEC)
    with pytest.raises(ValueError, match="must be \\(n_blocks, B\\), \\(n_blocks, B, B\\)"):
        quantized_obs_witness(w.theta_q, w.G_q[:, :4], w.mask, spec=SPEC)


@pytest.mark.parametrize("k", [14, 16])
@pytest.mark.parametrize("variant", ["R", "F", "F+forget"])
def test_compact_chunks_have_degree_4_so_the_quotient_has_3_pieces(k, variant):
    """Residual and rescale share one gate (q_fin × the degree-3 MAC product) and the limb lookups carry no
    selector (argument degree max(4, 2 + 1 + 1)): degree 4 at the automatic limb size t = k - 1 -- in the
    IR and in midnight-proofs' own constraint system."""
    from circuit_compiler import backend

    level = variant[0]
    spec = FixedPointSpec()
    lanes = 16 if level == "F" else None
    forget = ForgetSpec(directions=2) if variant == "F+forget" else None
    nb = blocks_to_fill(k, block_size=16, level=level, spec=spec, lanes=lanes)
    shape = chunk_shape_key(blocks=nb, block_size=16, level=level, spec=spec, lanes=lanes, forget=forget)
    cs = build_chunk_circuit(shape).cs
    assert shape.limb_bits == k - 1 and cs.k == k
    assert all(lk.always_on for lk in cs.lookups) and cs.max_degree() == 4
    if level == "F":
        assert max(g.degree() for g in cs.gates) == 4 and "residual_rescale" in [g.name for g in cs.gates]
    assert backend.statistics(cs)["degree"] == 4
