"""Real Halo2 proofs (midnight-proofs, KZG over BLS12-381) of compiled circuits.

Circuits: a small hand-built IR circuit (a multiply-accumulate gate with a rotation, a range lookup, copies
into advice and a public instance, a committed column) and real OBS chunk circuits from the lowering at
level R and level F (classic and compact layouts). Checked: honest proofs verify; Rust's MockProver and the Python mock prover agree on
honest and mutated witnesses (down to which gate or lookup fails on which row); tampered proofs,
instances and commitments are rejected; bad inputs raise clear errors instead of crashing.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import re
import warnings
import zlib

import numpy as np
import pytest

from circuit_compiler import backend as be
from circuit_compiler import mock_prover
from circuit_compiler.builder import CircuitBuilder
from circuit_compiler.fixedpoint import FixedPointSpec
from circuit_compiler.ir import Assignment, ColumnKind, ConstraintSystem, usable_rows
from circuit_compiler.lowering import ChunkShape, chunk_layer, draw_salts, lower_chunk
from circuit_compiler.serialize import structure_to_json
from circuit_compiler.witness import obs_witness

pytestmark = pytest.mark.prover

P = be.BLS12_381_SCALAR_MODULUS
SPEC = FixedPointSpec(limb_bits=8)  # range tables of 256 rows keep the chunk circuits at k = 10..11


# ------------------------------------------------------------------------------------------ circuits


def mac_circuit(*, n: int = 12, seed: int = 0) -> tuple[ConstraintSystem, Assignment]:
    """acc[r] = acc[r-1] + w[r]·x[r] over rows [0, n) with w committed and x public; every acc in [0, 2^8)
    (lookup); out[0] = acc[n-1] and the public total[0] = out[0] (copies)."""
    b = CircuitBuilder("mac_toy")
    w = b.committed("w")
    x = b.instance("x")
    total = b.instance("total")
    acc = b.advice("acc")
    out = b.advice("out")
    q_first, q_step, q_range = b.selector("q_first"), b.selector("q_step"), b.selector("q_range")
    table = b.range_table(8)
    b.gate("mac_first", q_first, [("acc0", acc.cur() - w.cur() * x.cur())])
    b.gate("mac_step", q_step, [("acc", acc.cur() - acc.prev() - w.cur() * x.cur())])
    b.lookup("acc_range", q_range, [acc.cur()], [table])
    b.enable(q_first, [0])
    b.enable(q_step, np.arange(1, n))
    b.enable(q_range, np.arange(n))
    b.copies(out, [0], acc, [n - 1])
    b.copies(total, [0], out, [0])
    cs = b.build()

    rng = np.random.default_rng(seed)
    rows = cs.rows
    wv = np.zeros(rows, np.int64)
    xv = np.zeros(rows, np.int64)
    wv[:n] = rng.integers(1, 4, n)
    xv[:n] = rng.integers(1, 4, n)
    wv[n] = rng.integers(1 << 40)  # an untouched "salt" cell: hides w in its commitment
    accv = np.zeros(rows, np.int64)
    accv[:n] = np.cumsum(wv[:n] * xv[:n])
    outv = np.zeros(rows, np.int64)
    outv[0] = accv[n - 1]
    totalv = np.zeros(rows, np.int64)
    totalv[0] = accv[n - 1]
    return cs, Assignment(advice={"acc": accv, "out": outv}, instance={"x": xv, "total": totalv}, committed={"w": wv})


def obs_chunk(
    *, level: str, blocks: int = 2, block_size: int = 8, lanes: int = 4, seed: int = 0, masked: int = 3
) -> tuple[ConstraintSystem, Assignment]:
    """An honest OBS chunk (docs/circuit.md) lowered from a random layer with a random mask."""
    rng = np.random.default_rng(seed)
    n = blocks * block_size
    theta = rng.normal(0, 0.5, size=n)
    a = rng.normal(size=(blocks, block_size, 2 * block_size))
    fisher = a @ a.transpose(0, 2, 1) / (2 * block_size) + 0.1 * np.eye(block_size)
    mask = np.zeros(n, bool)
    mask[rng.choice(n, masked, replace=False)] = True
    witness = obs_witness(theta, np.linalg.inv(fisher), mask, spec=SPEC)
    (chunk,) = chunk_layer(witness, blocks_per_chunk=blocks)
    lanes = lanes if level == "F" else None
    shape = ChunkShape(blocks=blocks, block_size=block_size, level=level, spec=SPEC, lanes=lanes)
    salts = draw_salts(shape, rng=rng)
    return lower_chunk(*chunk.lowering_inputs(), spec=SPEC, level=level, lanes=lanes, salts=salts)


CIRCUITS = {
    "mac": lambda seed=0: mac_circuit(seed=seed),
    "obs_R": lambda seed=0: obs_chunk(level="R", seed=seed),
    "obs_F": lambda seed=0: obs_chunk(level="F", seed=seed),
    # the compact layout (L = B): degree 4, limb lookups without a selector
    "obs_F_compact": lambda seed=0: obs_chunk(level="F", lanes=8, seed=seed),
}


@pytest.fixture(scope="module")
def srs(tmp_path_factory):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", be.InsecureSrsWarning)
        return be.Srs.generate_dev(12, tmp_path_factory.mktemp("srs") / "dev.srs", seed=7)


@pytest.fixture(scope="module", params=sorted(CIRCUITS))
def proven(request, srs):
    """(name, cs, assignment, keys, proof, commitments) of an honest proof."""
    cs, assignment = CIRCUITS[request.param]()
    keys = be.keygen(srs, cs)
    proof = be.prove(srs, keys, cs, assignment)
    commitments = {name: be.commit(srs, cs.k, values) for name, values in assignment.committed.items()}
    return request.param, cs, assignment, keys, proof, commitments


def rejection(srs, keys, cs, proof, instances, commitments) -> str:
    """The verifier's reason for rejecting (fails the test if it accepts)."""
    with pytest.raises(be.VerificationError) as err:
        be.verify_or_raise(srs, keys.vk, cs, proof, instances, commitments)
    return str(err.value)


# ------------------------------------------------------------------------------------------- honest


def test_honest_proofs_verify(srs, proven):
    name, cs, assignment, keys, proof, commitments = proven
    assert be.verify(srs, keys.vk, cs, proof, assignment.instance, commitments)
    # The verifier needs only the structure JSON (no fixed values, no copies) and the serialized vk.
    structure = structure_to_json(cs, P)
    assert be.verify(srs, keys.vk, structure, proof, assignment.instance, commitments)
    assert be.verify(srs, keys.vk, json.dumps(structure), proof, assignment.instance, commitments)


def test_public_instances_verify_with_or_without_zero_padding(srs, proven):
    name, cs, assignment, keys, proof, commitments = proven
    trimmed = {}
    for column, values in assignment.instance.items():
        values = np.asarray(values)
        nonzero = np.flatnonzero(values)
        trimmed[column] = values[: nonzero[-1] + 1 if nonzero.size else 0]
        assert len(trimmed[column]) < len(values), f"{name}: {column} has no zero padding to drop"
    assert be.verify(srs, keys.vk, cs, proof, trimmed, commitments)


def test_halo2_and_ir_agree_on_usable_rows(proven):
    _, cs, *_ = proven
    assert be.halo2_usable_rows(cs) == usable_rows(cs.k, cs.max_advice_queries())


def full_circuit(k: int = 6) -> tuple[ConstraintSystem, Assignment]:
    """c = 2a + x on every usable row, and a copy from the last row to the first (no lookup)."""
    b = CircuitBuilder("full")
    a, c = b.advice("a"), b.advice("c")
    x = b.instance("x")
    q = b.selector("q")
    b.gate("double", q, [("c", c.cur() - a.cur() * 2 - x.cur())])
    rows = usable_rows(k, 1)
    b.enable(q, np.arange(rows))
    b.copies(a, [rows - 1], c, [0])
    cs = b.build(k=k)
    av = np.zeros(rows, np.int64)
    xv = np.arange(rows, dtype=np.int64)
    cv = 2 * av + xv
    av[rows - 1] = cv[0]
    cv[rows - 1] = 2 * av[rows - 1] + xv[rows - 1]
    return cs, Assignment(advice={"a": av, "c": cv}, instance={"x": xv}, committed={})


def test_a_circuit_filling_every_usable_row_proves(srs):
    """Rows up to the last usable one are provable (the boundary the IR's usable_rows promises)."""
    cs, assignment = full_circuit()
    assert cs.rows == usable_rows(cs.k, 1) == be.halo2_usable_rows(cs)
    assert be.mock_prove(cs, assignment) == []
    keys = be.keygen(srs, cs)
    proof = be.prove(srs, keys, cs, assignment)
    assert be.verify(srs, keys.vk, cs, proof, assignment.instance, {})


def test_seeded_proofs_are_reproducible_and_unseeded_ones_are_blinded(srs):
    # No lookup here: midnight-proofs orders the permuted lookup table by hash-map iteration, so proofs of
    # circuits with lookups differ even with one seed (and still verify).
    cs, assignment = full_circuit()
    keys = be.keygen(srs, cs)
    p1 = be.prove(srs, keys, cs, assignment, rng_seed=11)
    p2 = be.prove(srs, keys, cs, assignment, rng_seed=11)
    p3 = be.prove(srs, keys, cs, assignment)
    p4 = be.prove(srs, keys, cs, assignment)
    assert p1 == p2
    assert p3 != p4 and p3 != p1
    assert all(be.verify(srs, keys.vk, cs, p, assignment.instance, {}) for p in (p1, p3, p4))


# --------------------------------------------------------------------------------------------- keys


def test_keys_depend_on_the_structure_only(srs):
    """Chunks of one shape with different weights and masks share one digest and one verifying key; the
    key is reproducible after clearing the cache."""
    cs1, a1 = obs_chunk(level="F", seed=1)
    cs2, a2 = obs_chunk(level="F", seed=2, masked=5)
    assert be.circuit_digest(cs1) == be.circuit_digest(cs2)
    keys1 = be.keygen(srs, cs1)
    be.clear_key_cache()
    keys2 = be.keygen(srs, cs2)
    assert keys1.vk == keys2.vk
    proof = be.prove(srs, keys1, cs2, a2)
    coms = {n: be.commit(srs, cs2.k, v) for n, v in a2.committed.items()}
    assert be.verify(srs, keys2.vk, cs1, proof, a2.instance, coms)


def test_keys_differ_when_fixed_values_differ(srs):
    cs, _ = mac_circuit()
    fixed = dict(cs.fixed)
    q = fixed["q_step"].copy()
    q[5] = 0
    other = dataclasses.replace(cs, fixed={**fixed, "q_step": q})
    assert be.circuit_digest(cs) != be.circuit_digest(other)
    assert be.keygen(srs, cs).vk != be.keygen(srs, other).vk


def test_pickled_keys_regenerate_the_proving_key(srs):
    cs, assignment = mac_circuit()
    keys = be.keygen(srs, cs)
    restored = pickle.loads(pickle.dumps(keys))
    assert restored.handle is None and restored.vk == keys.vk
    be.clear_key_cache()
    proof = be.prove(srs, restored, cs, assignment)
    coms = {"w": be.commit(srs, cs.k, assignment.committed["w"])}
    assert be.verify(srs, restored.vk, cs, proof, assignment.instance, coms)


def test_statistics_reflect_the_circuit(proven):
    _, cs, *_ = proven
    stats = be.statistics(cs)
    assert stats["advice_columns"] == len(cs.columns_of(ColumnKind.ADVICE))
    assert stats["instance_columns"] == len(cs.columns_of(ColumnKind.INSTANCE)) + len(
        cs.columns_of(ColumnKind.COMMITTED)
    )
    assert stats["lookups"] == len(cs.lookups)
    assert stats["copies"] == len(cs.copies)


# ---------------------------------------------------------------------------- mock provers agree


_GATE = re.compile(
    r"^Constraint \d+(?: \('(?P<constraint>[^']*)'\))? in gate \d+ \('(?P<gate>[^']*)'\) "
    r"is not satisfied in Region \d+ \('[^']*'\) at offset (?P<row>\d+)"
)
_LOOKUP = re.compile(
    r"^Lookup (?P<name>.*)\(index: \d+\) is not satisfied in Region \d+ \('[^']*'\) at offset (?P<row>\d+)"
)
_COPY = re.compile(r"^Equality constraint not satisfied")


def rust_failures(cs, assignment) -> set[tuple]:
    out = set()
    for message in be.mock_prove(cs, assignment):
        if m := _GATE.match(message):
            out.add(("gate", f"{m['gate']}/{m['constraint']}", int(m["row"])))
        elif m := _LOOKUP.match(message):
            out.add(("lookup", m["name"], int(m["row"])))
        elif _COPY.match(message):
            out.add(("copy",))
        else:
            raise AssertionError(f"unexpected MockProver failure: {message}")
    return out


def python_failures(cs, assignment) -> set[tuple]:
    out = set()
    for f in mock_prover.check(cs, assignment, P):
        if f.kind == "gate":
            out.add(("gate", f.qualified_name, f.row))
        elif f.kind == "lookup":
            out.add(("lookup", f.name, f.row))
        elif f.kind == "copy":
            out.add(("copy",))
        else:
            raise AssertionError(f"unexpected Python mock prover failure: {f}")
    return out


def mutations(cs: ConstraintSystem, assignment: Assignment, count: int, seed: int):
    """``count`` witnesses, each with one cell of a witness column changed (advice, instance or committed;
    by +1, -1 or a random field element); the row is any row of the circuit half of the time, else a row
    where some selector is on."""
    rng = np.random.default_rng(seed)
    tables = [("advice", assignment.advice), ("instance", assignment.instance), ("committed", assignment.committed)]
    cells = [(kind, name) for kind, table in tables for name in table]
    active = np.flatnonzero(
        np.any([np.asarray(cs.fixed[c.name]) != 0 for c in cs.columns_of(ColumnKind.SELECTOR)], axis=0)
    )
    for _ in range(count):
        kind, name = cells[rng.integers(len(cells))]
        row = int(rng.integers(cs.rows) if rng.random() < 0.5 else rng.choice(active))
        mutated = assignment.copy()
        column = np.array([int(v) % P for v in getattr(mutated, kind)[name]], dtype=object)
        change = [1, -1, int.from_bytes(rng.bytes(40), "little")][rng.integers(3)]
        column[row] = (int(column[row]) + change) % P
        getattr(mutated, kind)[name] = column
        yield f"{kind}:{name}[{row}] {change:+d}"[:60], mutated


def test_mock_provers_accept_the_honest_witness(proven):
    _, cs, assignment, *_ = proven
    assert be.mock_prove(cs, assignment) == []
    assert mock_prover.check(cs, assignment, P) == []


def test_mock_provers_agree_on_mutated_witnesses(proven):
    name, cs, assignment, *_ = proven
    rejected = 0
    for what, mutated in mutations(cs, assignment, count=25, seed=zlib.crc32(name.encode())):
        rust, python = rust_failures(cs, mutated), python_failures(cs, mutated)
        assert rust == python, f"{name}, {what}: Rust {sorted(rust)} vs Python {sorted(python)}"
        rejected += bool(rust)
    assert rejected >= 5, f"{name}: only {rejected} of 25 mutations were caught; the test mutates too little"


def test_mock_provers_agree_on_targeted_mutations():
    """Mutations known to break each kind of constraint of the toy circuit."""
    cs, a = mac_circuit(n=12)
    expect = {
        ("advice", "acc", 3): {("gate", "mac_step/acc", 3), ("gate", "mac_step/acc", 4)},
        ("advice", "acc", 11): {("gate", "mac_step/acc", 11), ("copy",)},
        ("instance", "x", 0): {("gate", "mac_first/acc0", 0)},
        ("committed", "w", 11): {("gate", "mac_step/acc", 11)},
        ("instance", "total", 0): {("copy",)},
        ("advice", "out", 0): {("copy",)},
        ("committed", "w", 12): set(),  # the salt cell: constrained by nothing
    }
    for (kind, name, row), failures in expect.items():
        m = a.copy()
        getattr(m, kind)[name][row] += 1
        assert rust_failures(cs, m) == python_failures(cs, m) == failures, (kind, name, row)
    # an out-of-range accumulator that the gates accept: only the lookup catches it
    m = a.copy()
    m.advice["acc"] = m.advice["acc"].copy()
    m.instance["x"] = m.instance["x"].copy()
    m.committed["w"] = m.committed["w"].copy()
    m.committed["w"][11] = 100
    m.instance["x"][11] = 3
    m.advice["acc"][11] = m.advice["acc"][10] + 300
    m.advice["out"][0] = m.instance["total"][0] = m.advice["acc"][11]
    assert rust_failures(cs, m) == python_failures(cs, m) == {("lookup", "acc_range", 11)}


def test_a_limb_outside_its_table_off_the_weight_rows_fails_both_mock_provers_and_the_proof(srs):
    """Compact layout: the limb lookups have no selector, so a limb on a row no selector switches on must
    still be a table value (degree 4: midnight's own degree says so too)."""
    cs, assignment = obs_chunk(level="F", lanes=8)
    assert cs.max_degree() == 4 and be.statistics(cs)["degree"] == 4
    q_fin = np.asarray(cs.fixed["q_fin"])
    row = int(np.flatnonzero(q_fin[: cs.rows] == 0)[-1])  # after the weight rows, inside the circuit's rows
    bad = assignment.copy()
    bad.advice["high_limb_0"][row] = 1 << SPEC.limb_bits  # one past the table [0, 2^t)
    assert rust_failures(cs, bad) == python_failures(cs, bad) == {("lookup", "high_limb_0", row)}
    fine = assignment.copy()
    fine.advice["high_limb_0"][row] = (1 << SPEC.limb_bits) - 1  # a table value: nothing else reads the cell
    assert rust_failures(cs, fine) == python_failures(cs, fine) == set()
    keys = be.keygen(srs, cs)
    commitments = {name: be.commit(srs, cs.k, values) for name, values in assignment.committed.items()}
    assert be.verify(srs, keys.vk, cs, be.prove(srs, keys, cs, fine), assignment.instance, commitments)
    with pytest.raises(be.BackendError):  # midnight cannot build the permuted lookup columns
        be.prove(srs, keys, cs, bad)


def test_mock_provers_agree_on_changed_fixed_columns():
    cs, a = mac_circuit()
    table = cs.fixed["range_8"].copy()
    table[a.advice["acc"][4]] = 999  # a value the accumulator takes leaves the table
    q = cs.fixed["q_first"].copy()
    q[1] = 1  # mac_first also on row 1
    for fixed in ({"range_8": table}, {"q_first": q}):
        other = dataclasses.replace(cs, fixed={**cs.fixed, **fixed})
        assert rust_failures(other, a) == python_failures(other, a)
        assert rust_failures(other, a)


# ---------------------------------------------------------------------------------------- rejection


def test_every_flipped_byte_is_rejected(srs, proven):
    name, cs, assignment, keys, proof, commitments = proven
    rng = np.random.default_rng(len(proof))
    positions = rng.choice(len(proof), size=min(60, len(proof)), replace=False)
    for position in positions:
        tampered = bytearray(proof)
        tampered[position] ^= int(rng.integers(1, 256))
        reason = rejection(srs, keys, cs, bytes(tampered), assignment.instance, commitments)
        assert reason, f"{name}: flipping byte {position} was rejected without a reason"


def test_changed_public_instance_is_rejected(srs, proven):
    name, cs, assignment, keys, proof, commitments = proven
    for column, values in assignment.instance.items():
        for row in (0, cs.rows // 2, cs.rows - 1):
            changed = {**assignment.instance, column: np.asarray(values).astype(object)}
            changed[column] = changed[column].copy()
            changed[column][row] = (int(changed[column][row]) + 1) % P
            assert "pairing check" in rejection(srs, keys, cs, proof, changed, commitments)


def test_other_commitments_are_rejected(srs, proven):
    name, cs, assignment, keys, proof, commitments = proven
    if not commitments:
        pytest.skip(f"{name} has no committed columns")
    for column, values in assignment.committed.items():
        other = np.asarray(values).astype(object).copy()
        other[-1] = (int(other[-1]) + 1) % P  # one more cell changed, in a row no constraint reads
        changed = {**commitments, column: be.commit(srs, cs.k, other)}
        assert "pairing check" in rejection(srs, keys, cs, proof, assignment.instance, changed)
    if len(commitments) > 1:
        names = sorted(commitments)
        swapped = {**commitments, names[0]: commitments[names[1]], names[1]: commitments[names[0]]}
        rejection(srs, keys, cs, proof, assignment.instance, swapped)


def test_a_proof_is_not_valid_for_another_chunk(srs):
    cs1, a1 = obs_chunk(level="F", seed=3)
    cs2, a2 = obs_chunk(level="F", seed=4)
    keys = be.keygen(srs, cs1)
    proof = be.prove(srs, keys, cs1, a1)
    coms2 = {n: be.commit(srs, cs2.k, v) for n, v in a2.committed.items()}
    rejection(srs, keys, cs2, proof, a2.instance, coms2)


def test_malformed_proofs_give_clear_errors(srs, proven):
    name, cs, assignment, keys, proof, commitments = proven
    for bad in (b"", proof[:-1], proof[: len(proof) // 2], proof + b"\x00", b"\xff" * len(proof)):
        reason = rejection(srs, keys, cs, bad, assignment.instance, commitments)
        assert "malformed proof" in reason, reason


def test_missing_or_malformed_verifier_inputs_are_named(srs, proven):
    name, cs, assignment, keys, proof, commitments = proven
    if assignment.instance:
        column = sorted(assignment.instance)[0]
        partial = {k: v for k, v in assignment.instance.items() if k != column}
        assert column in rejection(srs, keys, cs, proof, partial, commitments)
    if commitments:
        column = sorted(commitments)[0]
        assert column in rejection(srs, keys, cs, proof, assignment.instance, {**commitments, column: b"\x01" * 48})
        assert "48" in rejection(srs, keys, cs, proof, assignment.instance, {**commitments, column: b"\x01" * 47})
    assert "nonexistent" in rejection(
        srs, keys, cs, proof, {**assignment.instance, "nonexistent": np.zeros(3, np.int64)}, commitments
    )


# ------------------------------------------------------------------------------------------- errors


def test_garbage_verifying_keys_raise_clear_errors(srs):
    cs, assignment = mac_circuit()
    keys = be.keygen(srs, cs)
    for bad in (b"", b"garbage", keys.vk[:-10], keys.vk[:6] + b"\xff\xff\xff\xff" + keys.vk[10:]):
        with pytest.raises(be.BackendError, match="verifying key"):
            be.verify_or_raise(srs, bad, cs, b"", assignment.instance, {})
    other_cs, _ = obs_chunk(level="R")
    with pytest.raises(be.BackendError):
        be.verify_or_raise(srs, keys.vk, other_cs, b"", assignment.instance, {})


def test_bad_assignments_raise_clear_errors(srs):
    cs, assignment = mac_circuit()
    keys = be.keygen(srs, cs)
    missing = Assignment(
        advice={"acc": assignment.advice["acc"]}, instance=assignment.instance, committed=assignment.committed
    )
    with pytest.raises(be.BackendError, match="'out'|\"out\""):
        be.prove(srs, keys, cs, missing)
    extra = assignment.copy()
    extra.advice["nope"] = np.zeros(3, np.int64)
    with pytest.raises(be.BackendError, match="nope"):
        be.prove(srs, keys, cs, extra)
    too_long = assignment.copy()
    too_long.advice["acc"] = np.zeros(cs.rows + 1, np.int64)
    with pytest.raises(be.BackendError, match="acc"):
        be.prove(srs, keys, cs, too_long)
    not_canonical = assignment.copy()
    not_canonical.advice["acc"] = np.array([P] + [0] * (cs.rows - 1), dtype=object)
    with pytest.raises(be.BackendError):
        be.prove(srs, keys, cs, not_canonical)
    floats = assignment.copy()
    floats.advice["acc"] = np.zeros(cs.rows)
    with pytest.raises(be.BackendError, match="dtype"):
        be.prove(srs, keys, cs, floats)


def test_keys_must_match_the_circuit_and_the_srs(srs, tmp_path):
    cs, assignment = mac_circuit()
    other, other_assignment = obs_chunk(level="R")
    keys = be.keygen(srs, cs)
    with pytest.raises(be.BackendError, match="keys were generated for circuit"):
        be.prove(srs, keys, other, other_assignment)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", be.InsecureSrsWarning)
        another = be.Srs.generate_dev(cs.k, tmp_path / "other.srs", seed=8)
    with pytest.raises(be.BackendError, match="SRS"):
        be.prove(another, keys, cs, assignment)


def test_wrong_field_and_oversized_circuits_are_refused(srs):
    cs, assignment = mac_circuit()
    with pytest.raises(be.BackendError, match="BLS12-381"):
        be.keygen(srs, cs, modulus=(1 << 255) - 19)
    big = dataclasses.replace(cs, k=srs.k + 1)
    with pytest.raises(be.BackendError, match=f"k = {srs.k}"):
        be.keygen(srs, big)
