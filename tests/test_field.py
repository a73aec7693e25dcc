"""Prime fields: moduli, generators, the signed encoding, and algebraic laws across three implementations."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from py_ecc import bls12_381, bn128
from py_ecc.fields.field_elements import FQ

from circuit_compiler.field import (
    BLS12_381_FR,
    BN254_FR,
    DEFAULT_FIELD,
    PrimeField,
    compact_signed,
    field_by_modulus,
    field_by_name,
    galois_field,
)

FIELDS = [BLS12_381_FR, BN254_FR]

# Factorizations of p - 1 (computed once with sympy.factorint; re-verified below from scratch).
P_MINUS_1_FACTORS = {
    BLS12_381_FR.name: {
        2: 32,
        3: 1,
        11: 1,
        19: 1,
        10177: 1,
        125527: 1,
        859267: 1,
        906349: 2,
        2508409: 1,
        2529403: 1,
        52437899: 1,
        254760293: 2,
    },
    BN254_FR.name: {
        2: 28,
        3: 2,
        13: 1,
        29: 1,
        983: 1,
        11003: 1,
        237073: 1,
        405928799: 1,
        1670836401704629: 1,
        13818364434197438864469338081: 1,
    },
}


def is_probable_prime(n: int) -> bool:
    """Miller-Rabin with the first 40 primes as bases (error < 4^-40 for any composite)."""
    bases = [
        2,
        3,
        5,
        7,
        11,
        13,
        17,
        19,
        23,
        29,
        31,
        37,
        41,
        43,
        47,
        53,
        59,
        61,
        67,
        71,
        73,
        79,
        83,
        89,
        97,
        101,
        103,
        107,
        109,
        113,
        127,
        131,
        137,
        139,
        149,
        151,
        157,
        163,
        167,
        173,
    ]
    if n < 2:
        return False
    for b in bases:
        if n % b == 0:
            return n == b
    d, r = n - 1, 0
    while d % 2 == 0:
        d, r = d // 2, r + 1
    for a in bases:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def test_moduli_match_py_ecc():
    assert BLS12_381_FR.modulus == 0x73EDA753299D7D483339D80809A1D80553BDA402FFFE5BFEFFFFFFFF00000001
    assert BLS12_381_FR.modulus == bls12_381.curve_order
    assert BN254_FR.modulus == bn128.curve_order
    assert DEFAULT_FIELD is BLS12_381_FR
    assert BLS12_381_FR.bits == 255 and BN254_FR.bits == 254
    assert field_by_name("bn254_fr") is BN254_FR and field_by_modulus(bls12_381.curve_order) is BLS12_381_FR
    with pytest.raises(KeyError, match="unknown field 'nope'"):
        field_by_name("nope")


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f.name)
def test_primitive_element_generates_the_multiplicative_group(field):
    p, g = field.modulus, field.primitive_element
    assert is_probable_prime(p)
    factors = P_MINUS_1_FACTORS[field.name]
    product = 1
    for q, e in factors.items():
        assert is_probable_prime(q), q
        product *= q**e
    assert product == p - 1
    # g has order p - 1 iff g^((p-1)/q) != 1 for every prime q | p - 1.
    for q in factors:
        assert pow(g, (p - 1) // q, p) != 1, q
    assert pow(g, (p - 1) // 2, p) == p - 1  # in particular a quadratic non-residue
    # ... and the smaller candidates are not generators, so g is the smallest (the conventional choice).
    for h in range(2, g):
        assert any(pow(h, (p - 1) // q, p) == 1 for q in factors), h


def test_non_prime_like_parameters_rejected():
    with pytest.raises(ValueError, match="odd prime"):
        PrimeField("bad", 16, 3)
    with pytest.raises(ValueError, match="primitive element"):
        PrimeField("bad", 7, 9)


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f.name)
def test_galois_field_is_cached_and_matches(field):
    GF = galois_field(field)
    assert galois_field(field) is GF
    assert GF.characteristic == field.modulus
    assert int(GF.primitive_element) == field.primitive_element
    a = GF([field.modulus - 1, 2])
    assert [int(v) for v in a * a] == [1, 4]


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f.name)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_encode_decode_roundtrip(field, data):
    x = data.draw(st.integers(-field.half, field.half))
    v = field.encode(x)
    assert 0 <= v < field.modulus
    assert v == (x if x >= 0 else field.modulus - abs(x))
    assert field.decode(v) == x


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f.name)
def test_encode_decode_edges(field):
    p = field.modulus
    assert field.decode(field.half) == field.half
    assert field.decode(field.half + 1) == -field.half
    assert field.decode(p - 1) == -1
    with pytest.raises(OverflowError, match="exceeds"):
        field.encode(field.half + 1)
    with pytest.raises(ValueError, match="not a canonical"):
        field.decode(p)


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f.name)
@settings(max_examples=30, deadline=None)
@given(values=st.lists(st.integers(-(1 << 63), (1 << 63) - 1), min_size=1, max_size=20))
def test_vectorized_int64_matches_scalar(field, values):
    x = np.array(values, dtype=np.int64)
    encoded = field.encode_array(x)
    assert encoded.dtype == object
    assert list(encoded) == [field.encode(v) for v in values]
    assert list(field.decode_array(encoded)) == values
    assert field.decode_array(encoded).dtype == np.int64
    assert list(field.reduce_array(x)) == [v % field.modulus for v in values]
    assert field.compact(x).dtype == np.int64


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f.name)
@settings(max_examples=30, deadline=None)
@given(values=st.lists(st.integers(-(1 << 200), 1 << 200), min_size=1, max_size=20))
def test_vectorized_object_matches_scalar(field, values):
    x = np.array(values, dtype=object)
    encoded = field.encode_array(x)
    assert list(encoded) == [field.encode(v) for v in values]
    decoded = field.decode_array(encoded)
    assert list(decoded) == values
    small = all(-(1 << 63) <= v < (1 << 63) for v in values)
    assert (decoded.dtype == np.int64) == small
    compact = field.compact(x)
    assert compact.dtype == (np.int64 if small else object)
    assert [field.decode(int(v) % field.modulus) for v in compact] == values


def test_compact_signed():
    assert compact_signed(np.array([1, -2], dtype=object)).dtype == np.int64
    assert compact_signed(np.array([1 << 63], dtype=object)).dtype == object
    assert compact_signed(np.array([], dtype=object)).dtype == np.int64


def py_ecc_class(field: PrimeField) -> type:
    return type(f"FQ_{field.name}", (FQ,), {"field_modulus": field.modulus})


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f.name)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_field_laws_agree_across_galois_python_and_py_ecc(field, data):
    p = field.modulus
    a, b, c = (data.draw(st.integers(0, p - 1)) for _ in range(3))
    GF = galois_field(field)
    Fq = py_ecc_class(field)
    ga, gb, gc = GF(a), GF(b), GF(c)
    qa, qb, qc = Fq(a), Fq(b), Fq(c)
    # the same operations in three implementations
    py = ((a + b) * c % p, (a - b) % p, a * b % p)
    assert (int((ga + gb) * gc), int(ga - gb), int(ga * gb)) == py
    assert (((qa + qb) * qc).n, (qa - qb).n, (qa * qb).n) == py
    # ring and field laws
    assert (ga + gb) * gc == ga * gc + gb * gc
    assert qa * (qb + qc) == qa * qb + qa * qc
    assert ga + (gb + gc) == (ga + gb) + gc and ga * gb == gb * ga
    if a:
        inverse = pow(a, -1, p)
        assert int(GF(1) / ga) == inverse == (Fq(1) / qa).n
        assert int(ga ** (p - 1)) == 1  # Fermat
    # the signed encoding is a ring homomorphism for values that stay within (-p/2, p/2)
    x, y = (data.draw(st.integers(-(1 << 120), 1 << 120)) for _ in range(2))
    assert field.decode(int(GF(field.encode(x)) * GF(field.encode(y)))) == x * y
    assert field.decode(int(Fq(field.encode(x)) - Fq(field.encode(y)))) == x - y


def test_galois_vectorized_arithmetic_matches_python_ints():
    field = BLS12_381_FR
    GF = galois_field(field)
    rng = np.random.default_rng(0)
    a = [int.from_bytes(rng.bytes(40), "little") % field.modulus for _ in range(16)]
    b = [int.from_bytes(rng.bytes(40), "little") % field.modulus for _ in range(16)]
    ga, gb = GF(a), GF(b)
    assert [int(v) for v in ga * gb + ga] == [(x * y + x) % field.modulus for x, y in zip(a, b)]
