"""The prover's own commitment scheme ("sized": affine bases, scalars grouped by bit length, a content cache)
against midnight-proofs' plain KZG commitments: same commitments, and proofs that the unmodified KZG verifier
accepts (the verifier in the extension is always the plain scheme) and rejects when tampered with.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from test_halo2_backend import full_circuit, mac_circuit, obs_chunk

from circuit_compiler import backend as be

pytestmark = pytest.mark.prover

P = be.BLS12_381_SCALAR_MODULUS


@pytest.fixture(scope="module")
def srs(tmp_path_factory):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", be.InsecureSrsWarning)
        return be.Srs.generate_dev(12, tmp_path_factory.mktemp("srs") / "dev.srs", seed=7)


@pytest.fixture(scope="module")
def level_f(srs):
    """(cs, assignment, keys, commitments) of an honest level-F chunk; commitments by the plain scheme."""
    cs, assignment = obs_chunk(level="F", seed=3)
    keys = be.keygen(srs, cs)
    plain = {n: be.commit(srs, cs.k, v, commitment_scheme="plain") for n, v in assignment.committed.items()}
    return cs, assignment, keys, plain


def test_sized_proofs_verify_with_the_plain_scheme(srs, level_f):
    cs, assignment, keys, plain = level_f
    be.clear_commitment_cache()
    proof = be.prove(srs, keys, cs, assignment, commitment_scheme="sized")
    # The verifier commits nothing: it reads the proof with midnight's KZGCommitmentScheme and takes the
    # commitments computed by the reference scheme.
    be.verify_or_raise(srs, keys.vk, cs, proof, assignment.instance, plain)
    reference = be.prove(srs, keys, cs, assignment, commitment_scheme="plain")
    be.verify_or_raise(srs, keys.vk, cs, reference, assignment.instance, plain)


def test_tampered_sized_proofs_are_rejected(srs, level_f):
    cs, assignment, keys, plain = level_f
    proof = be.prove(srs, keys, cs, assignment, commitment_scheme="sized")
    rng = np.random.default_rng(0)
    for position in [0, 47, len(proof) // 2, *rng.integers(0, len(proof), 4)]:
        forged = bytearray(proof)
        forged[int(position)] ^= 0x01
        assert not be.verify(srs, keys.vk, cs, bytes(forged), assignment.instance, plain), position
    # The proof binds the committed columns: another column's commitment in place of θ's is refused.
    names = sorted(plain)
    swapped = {**plain, names[0]: plain[names[1]]}
    assert not be.verify(srs, keys.vk, cs, proof, assignment.instance, swapped)


def test_a_dishonest_witness_gives_a_rejected_sized_proof(srs, level_f):
    cs, assignment, keys, plain = level_f
    advice = {name: np.array(values, copy=True) for name, values in assignment.advice.items()}
    advice["acc_0"][0] += 1  # the first accumulator of the G·ỹ product (no lookup reads it)
    dishonest = type(assignment)(advice=advice, instance=assignment.instance, committed=assignment.committed)
    assert be.mock_prove(cs, dishonest), "the mutation must break a constraint"
    proof = be.prove(srs, keys, cs, dishonest, commitment_scheme="sized")
    assert not be.verify(srs, keys.vk, cs, proof, assignment.instance, plain)


def test_both_schemes_give_byte_identical_seeded_proofs(srs):
    """Without lookups a seeded proof is deterministic, so every commitment in it (advice, permutation,
    quotient pieces, opening) must be the same point under both schemes."""
    cs, assignment = full_circuit()
    keys = be.keygen(srs, cs)
    sized = be.prove(srs, keys, cs, assignment, rng_seed=5, commitment_scheme="sized")
    plain = be.prove(srs, keys, cs, assignment, rng_seed=5, commitment_scheme="plain")
    assert sized == plain


def test_the_provers_keys_commit_the_fixed_columns_as_the_verifiers(srs, level_f):
    """keygen commits the fixed and permutation columns with the sized scheme, keygen_vk (the verifier's
    path) with midnight's KZG: the serialized verifying keys must be identical."""
    cs, _, keys, _ = level_f
    assert keys.vk == be.keygen_vk(srs, cs)
    mac, _ = mac_circuit()
    assert be.keygen(srs, mac).vk == be.keygen_vk(srs, mac)


def test_commitments_agree_on_columns_of_every_size(srs):
    rng = np.random.default_rng(1)
    n = 1 << 10
    columns = {
        "zeros": np.zeros(n, np.int64),
        "bits": rng.integers(0, 2, n),
        "16-bit": rng.integers(0, 1 << 16, n),
        "small ±": rng.integers(-(1 << 15), 1 << 15, n),
        "62-bit ±": rng.integers(-(1 << 62), 1 << 62, n),
        "full": np.array([int(rng.integers(1 << 62)) ** 5 % P for _ in range(n)], dtype=object),
        "p - 1": np.array([P - 1] * n, dtype=object),
    }
    mixed = [int(v) % P for name in columns for v in columns[name][: n // 8]]
    columns["mixed"] = np.array(mixed + [0] * (n - len(mixed)), dtype=object)
    be.clear_commitment_cache()
    for name, values in columns.items():
        plain = be.commit(srs, 10, values, commitment_scheme="plain")
        assert be.commit(srs, 10, values, commitment_scheme="sized") == plain, name
        assert be.commit(srs, 11, values, commitment_scheme="sized") == be.commit(
            srs, 11, values, commitment_scheme="plain"
        ), name


def test_a_registered_column_is_committed_once(srs):
    cs, assignment = mac_circuit(seed=4)
    keys = be.keygen(srs, cs)
    be.clear_commitment_cache()
    be.commitment_stats(reset=True)
    coms = {n: be.commit(srs, cs.k, v) for n, v in assignment.committed.items()}  # registration
    assert be.commitment_stats()["cache_hits"][0] == 0
    proof = be.prove(srs, keys, cs, assignment)
    stats = be.commitment_stats(reset=True)
    assert stats["cache_hits"][0] == len(coms)  # the prover reused the registered commitments
    assert stats["commit_lagrange"][0] > len(coms) and stats["multi_open"][0] == 1
    assert be.verify(srs, keys.vk, cs, proof, assignment.instance, coms)
    # A changed column is not served from the cache.
    changed = dict(assignment.committed)
    changed["w"] = np.array(changed["w"], copy=True)
    changed["w"][0] += 1
    assert be.commit(srs, cs.k, changed["w"]) == be.commit(srs, cs.k, changed["w"], commitment_scheme="plain")
    assert be.commit(srs, cs.k, changed["w"]) != coms["w"]


def test_known_commitments_are_hashed_not_committed_and_reported_back(srs, level_f):
    cs, assignment, keys, plain = level_f
    names = sorted(plain)
    known = {name: plain[name] for name in names[:-1]}  # the client holds all but one (say θ_new)
    be.clear_commitment_cache()
    be.commitment_stats(reset=True)
    proof, reported = be.prove_with_commitments(srs, keys, cs, assignment, known_commitments=known)
    stats = be.commitment_stats(reset=True)
    assert stats["claimed"][0] == len(known)  # served by the claims, no MSM
    assert stats["cache_hits"][0] == 1  # the last column: committed once for the report, reused by the proof
    assert reported == plain  # every committed column, the computed one equal to the reference's
    be.verify_or_raise(srs, keys.vk, cs, proof, assignment.instance, plain)


def test_a_wrong_known_commitment_spoils_only_its_own_proof(srs, level_f):
    cs, assignment, keys, plain = level_f
    names = sorted(plain)
    wrong = {names[0]: plain[names[1]]}
    be.clear_commitment_cache()
    proof = be.prove(srs, keys, cs, assignment, known_commitments=wrong)
    assert not be.verify(srs, keys.vk, cs, proof, assignment.instance, plain)
    # The claim lived for that proof only and never entered the cache.
    column = assignment.committed[names[0]]
    assert be.commit(srs, cs.k, column) == plain[names[0]]
    assert be.verify(srs, keys.vk, cs, be.prove(srs, keys, cs, assignment), assignment.instance, plain)
    # The reference scheme ignores claims and recomputes.
    reference = be.prove(srs, keys, cs, assignment, commitment_scheme="plain", known_commitments=wrong)
    assert be.verify(srs, keys.vk, cs, reference, assignment.instance, plain)


def test_known_commitments_are_checked_by_name_and_size(srs, level_f):
    cs, assignment, keys, plain = level_f
    with pytest.raises(be.BackendError, match=r"known commitment for 'theta_old': .* has no committed column"):
        be.prove(srs, keys, cs, assignment, known_commitments={"theta_old": next(iter(plain.values()))})
    name = next(iter(plain))
    with pytest.raises(be.BackendError, match=rf"known commitment for '{name}': expected 48 bytes"):
        be.prove(srs, keys, cs, assignment, known_commitments={name: b"\x00" * 47})


def test_the_scheme_is_chosen_by_argument_or_environment(srs, monkeypatch):
    assert be.default_commitment_scheme() == "sized"
    monkeypatch.setenv(be.COMMITMENT_SCHEME_ENV, "plain")
    assert be.default_commitment_scheme() == "plain"
    cs, assignment = full_circuit()
    keys = be.keygen(srs, cs)
    be.commitment_stats(reset=True)
    proof = be.prove(srs, keys, cs, assignment)
    assert be.verify(srs, keys.vk, cs, proof, assignment.instance, {})
    monkeypatch.setenv(be.COMMITMENT_SCHEME_ENV, "fast")
    with pytest.raises(be.BackendError, match=r"JAXAPEX_COMMITMENT_SCHEME: expected one of sized, plain, got 'fast'"):
        be.prove(srs, keys, cs, assignment)
    with pytest.raises(be.BackendError, match=r"commitment_scheme: expected one of sized, plain, got 'kzg'"):
        be.commit(srs, cs.k, np.zeros(4, np.int64), commitment_scheme="kzg")
