"""Prime fields of the provers and the signed-integer encoding the compiler uses in them.

A circuit value ``x`` (a signed integer of known bounded magnitude) lives in the field as ``x mod p``:
negative ``x`` is ``p - |x|``. Decoding maps ``[0, p)`` back to the symmetric range
``[-(p-1)/2, (p-1)/2]`` -- the unique preimage as long as the bound calculator
(:mod:`circuit_compiler.fixedpoint`) has shown ``|x| < p/2``.

Two representations of a column of values, the ones :class:`~circuit_compiler.ir.Assignment` accepts:

* ``int64`` arrays of small signed integers (``v < 0`` meaning ``p + v``) -- compact and fast;
* ``object`` arrays of Python ints already reduced to ``[0, p)`` -- for values beyond 64 bits.

:func:`compact` picks the first when every value fits. :func:`galois_field` builds the matching
``galois`` field class for vectorized field arithmetic (used by tests and by the mock prover).
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


@dataclasses.dataclass(frozen=True)
class PrimeField:
    """A prime field F_p, identified by name and modulus.

    ``primitive_element`` generates the multiplicative group F_p^*; it is checked against the
    factorization of ``p - 1`` in the tests and lets :func:`galois_field` skip galois' own (minutes-long)
    search for 255-bit primes.
    """

    name: str
    modulus: int
    primitive_element: int

    def __post_init__(self) -> None:
        if self.modulus < 3 or self.modulus % 2 == 0:
            raise ValueError(f"field {self.name!r}: modulus must be an odd prime, got {self.modulus}")
        if not 1 < self.primitive_element < self.modulus:
            raise ValueError(f"field {self.name!r}: primitive element {self.primitive_element} not in (1, p)")

    @property
    def bits(self) -> int:
        return self.modulus.bit_length()

    @property
    def half(self) -> int:
        """``(p - 1) / 2``: the largest magnitude a signed value may have to decode uniquely."""
        return (self.modulus - 1) // 2

    # --- scalars
    def encode(self, x: int) -> int:
        """Signed integer -> canonical field element in ``[0, p)`` (``-x`` becomes ``p - x``)."""
        x = int(x)
        if abs(x) > self.half:
            raise OverflowError(f"{self.name}: |{x}| exceeds (p-1)/2 and would not decode to itself")
        return x % self.modulus

    def decode(self, v: int) -> int:
        """Canonical field element -> the signed integer in ``[-(p-1)/2, (p-1)/2]``."""
        v = int(v)
        if not 0 <= v < self.modulus:
            raise ValueError(f"{self.name}: {v} is not a canonical element of [0, p)")
        return v if v <= self.half else v - self.modulus

    # --- arrays
    def encode_array(self, x: np.ndarray) -> np.ndarray:
        """Signed integers (int64 or object array, any shape) -> object array of canonical ints."""
        x = np.asarray(x)
        if x.dtype == object:
            return np.vectorize(self.encode, otypes=[object])(x) if x.size else x.copy()
        if not np.issubdtype(x.dtype, np.integer):
            raise TypeError(f"{self.name}: cannot encode an array of dtype {x.dtype} (integers only)")
        out = x.astype(object)
        neg = x < 0
        out[neg] = out[neg] + self.modulus
        return out

    def decode_array(self, v: np.ndarray) -> np.ndarray:
        """Field values (int64 compact or object canonical) -> signed ints: int64 if they fit, else object."""
        v = np.asarray(v)
        if v.dtype != object:
            if not np.issubdtype(v.dtype, np.integer):
                raise TypeError(f"{self.name}: cannot decode an array of dtype {v.dtype}")
            return v.astype(np.int64)  # compact encoding: already the signed value
        signed = np.vectorize(self.decode, otypes=[object])(v) if v.size else v.copy()
        return compact_signed(signed)

    def reduce_array(self, v: np.ndarray) -> np.ndarray:
        """Any integer array (int64 compact or object, possibly unreduced) -> object array in ``[0, p)``."""
        v = np.asarray(v)
        if v.dtype != object:
            return self.encode_array(v.astype(np.int64))
        return np.mod(v, self.modulus) if v.size else v.copy()

    def compact(self, x: np.ndarray) -> np.ndarray:
        """Signed integers -> the IR's column encoding: int64 when every value fits, else canonical objects."""
        x = np.asarray(x)
        if x.dtype != object:
            return x.astype(np.int64)
        small = compact_signed(x)
        if small.dtype != object:
            return small
        return self.encode_array(x)

    def __repr__(self) -> str:
        return f"PrimeField({self.name}, p=0x{self.modulus:x})"


def compact_signed(x: np.ndarray) -> np.ndarray:
    """An object array of signed Python ints -> int64 when all fit in 64 bits, else the object array."""
    x = np.asarray(x)
    if x.dtype != object:
        return x.astype(np.int64)
    if x.size == 0:
        return np.zeros(x.shape, dtype=np.int64)
    lo, hi = min(x.flat), max(x.flat)
    if _INT64_MIN <= lo and hi <= _INT64_MAX:
        return x.astype(np.int64)
    return x


# BLS12-381 scalar field: the field of the default (midnight-proofs, KZG) backend. 7 generates F_r^*
# (r - 1 = 2^32 * 3 * 11 * 19 * 10177 * 125527 * 859267 * 906349^2 * 2508409 * 2529403 * 52437899
#  * 254760293^2; see tests/test_field.py).
BLS12_381_FR = PrimeField(
    name="bls12_381_fr",
    modulus=0x73EDA753299D7D483339D80809A1D80553BDA402FFFE5BFEFFFFFFFF00000001,
    primitive_element=7,
)
# BN254 (alt_bn128) scalar field, EVM-verifiable. 5 generates F_r^*. Both moduli are checked against
# py_ecc's curve orders in tests/test_field.py (importing py_ecc's curves here would cost every process,
# the verifier's included, about half a second).
BN254_FR = PrimeField(
    name="bn254_fr",
    modulus=21888242871839275222246405745257275088548364400416034343698204186575808495617,
    primitive_element=5,
)

DEFAULT_FIELD = BLS12_381_FR
FIELDS: dict[str, PrimeField] = {f.name: f for f in (BLS12_381_FR, BN254_FR)}


def field_by_name(name: str) -> PrimeField:
    try:
        return FIELDS[name]
    except KeyError:
        raise KeyError(f"unknown field {name!r}; known: {sorted(FIELDS)}") from None


def field_by_modulus(modulus: int) -> PrimeField:
    for f in FIELDS.values():
        if f.modulus == modulus:
            return f
    raise KeyError(f"no known field has modulus {modulus}")


@functools.cache
def galois_field(field: PrimeField) -> type:
    """The ``galois.GF(p)`` class of ``field`` (cached).

    Built with the known primitive element and ``verify=False``: galois otherwise factors ``p - 1`` and
    searches for a generator, which takes minutes for 255-bit primes. Elements are object arrays.
    """
    import galois

    return galois.GF(field.modulus, primitive_element=field.primitive_element, verify=False)
