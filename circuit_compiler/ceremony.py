"""Import a public BLS12-381 powers-of-tau ceremony into the project's SRS file (``jaxapex-srs/1``).

Format read: the transcript of the Ethereum KZG ceremony (EIP-4844), ``transcript.json``::

    {"transcripts": [{"numG1Powers": 4096, "numG2Powers": 65,
                      "powersOfTau": {"G1Powers": ["0x<48-byte compressed [τ^i]G1>", ...],
                                      "G2Powers": ["0x<96-byte compressed [τ^i]G2>", ...]}, ...}, ...]}

Points use the standard (ZCash) compressed encoding. The transcript of the smallest size that holds 2^K
G1 powers is used. The Lagrange bases of every domain 2^k, k ≤ K, are computed by an inverse FFT over G1
(py_ecc; pure Python: about (2^k / 2)·k + 2^k scalar multiplications per k, ~8 ms each, so K = 12 takes
several minutes -- once). The written file is then opened with full validation (pairing check of the
monomial powers against [τ]G2, subgroup and Lagrange-consistency checks), so a malformed transcript is
refused rather than half-imported.

Who may generate an SRS: see docs/threat-model.md. A ceremony SRS is what third-party verifiability
needs; soundness for the provider's own verification and zero knowledge do not.
"""

from __future__ import annotations

import datetime
import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from py_ecc.bls.point_compression import decompress_G1, decompress_G2
from py_ecc.optimized_bls12_381 import (
    G1,
    G2,
    Z1,
    add,
    curve_order,
    eq,
    is_inf,
    multiply,
    neg,
    normalize,
    pairing,
)

from .srs import _G1_BYTES, _G2_BYTES, FORMAT, MAGIC, Srs, file_sha256, sidecar_path

FIELD_BYTES = 48


class CeremonyError(ValueError):
    """The transcript cannot be imported (names the file and the field)."""


# ------------------------------------------------------------------------------------------ encodings


def _fq(x: Any) -> bytes:
    return int(x).to_bytes(FIELD_BYTES, "big")


def g1_uncompressed(point: Any) -> bytes:
    """The standard uncompressed G1 encoding (96 bytes; infinity: flag 0x40 and zeros)."""
    if is_inf(point):
        return bytes([0x40]) + bytes(_G1_BYTES - 1)
    x, y = normalize(point)
    return _fq(x.n) + _fq(y.n)


def g2_uncompressed(point: Any) -> bytes:
    """The standard uncompressed G2 encoding (192 bytes): x.c1 | x.c0 | y.c1 | y.c0."""
    if is_inf(point):
        return bytes([0x40]) + bytes(_G2_BYTES - 1)
    x, y = normalize(point)
    return _fq(x.coeffs[1]) + _fq(x.coeffs[0]) + _fq(y.coeffs[1]) + _fq(y.coeffs[0])


def _hex_bytes(text: Any, size: int, where: str) -> bytes:
    if not isinstance(text, str):
        raise CeremonyError(f"{where}: expected a hex string, got {type(text).__name__}")
    try:
        data = bytes.fromhex(text.removeprefix("0x"))
    except ValueError as err:
        raise CeremonyError(f"{where}: not hex ({err})") from err
    if len(data) != size:
        raise CeremonyError(f"{where}: {len(data)} bytes, expected {size}")
    return data


def _g1(text: Any, where: str) -> Any:
    data = _hex_bytes(text, FIELD_BYTES, where)
    try:
        return decompress_G1(int.from_bytes(data, "big"))
    except (ValueError, AssertionError) as err:
        raise CeremonyError(f"{where}: not a compressed BLS12-381 G1 point ({err})") from err


def _g2(text: Any, where: str) -> Any:
    data = _hex_bytes(text, 2 * FIELD_BYTES, where)
    try:
        return decompress_G2((int.from_bytes(data[:FIELD_BYTES], "big"), int.from_bytes(data[FIELD_BYTES:], "big")))
    except (ValueError, AssertionError) as err:
        raise CeremonyError(f"{where}: not a compressed BLS12-381 G2 point ({err})") from err


# ------------------------------------------------------------------------------------------ the math


def root_of_unity(k: int) -> int:
    """Generator of the 2^k-th roots of unity (7^((r-1)/2^k): midnight-curves' choice)."""
    return pow(7, (curve_order - 1) >> k, curve_order)


def lagrange_basis(powers: list[Any], k: int) -> list[Any]:
    """[L_i(τ)]G1 over the 2^k domain from [τ^j]G1, j < 2^k: L_i(τ) = (1/n) Σ_j ω^(−ij) τ^j (inverse FFT)."""
    n = 1 << k
    if len(powers) < n:
        raise ValueError(f"{len(powers)} powers for a domain of {n}")
    omega_inv = pow(root_of_unity(k), -1, curve_order)

    def fft(points: list[Any], w: int) -> list[Any]:
        m = len(points)
        if m == 1:
            return points
        even, odd = fft(points[0::2], w * w % curve_order), fft(points[1::2], w * w % curve_order)
        out = [None] * m
        twiddle = 1
        for i in range(m // 2):
            t = odd[i] if twiddle == 1 else multiply(odd[i], twiddle)
            out[i], out[i + m // 2] = add(even[i], t), add(even[i], neg(t))
            twiddle = twiddle * w % curve_order
        return out

    n_inv = pow(n, -1, curve_order)
    return [multiply(p, n_inv) if not is_inf(p) else Z1 for p in fft(list(powers[:n]), omega_inv)]


def check_powers(g1: list[Any], g2_one: Any, g2_tau: Any, where: str) -> None:
    """Refuse unless g1[i] = [τ^i]G1 for the τ of g2_tau = [τ]G2: one pairing equation on random
    combinations, e(Σ ρ_i g1[i+1], [1]G2) = e(Σ ρ_i g1[i], [τ]G2) (wrong powers pass with prob. ≤ 1/r)."""
    if not eq(g1[0], G1) or not eq(g2_one, G2):
        raise CeremonyError(f"{where}: the first G1 and G2 powers must be the generators")
    rho = [secrets.randbelow(curve_order - 1) + 1 for _ in range(len(g1) - 1)]
    shifted, base = Z1, Z1
    for r, lo, hi in zip(rho, g1[:-1], g1[1:]):
        shifted, base = add(shifted, multiply(hi, r)), add(base, multiply(lo, r))
    if pairing(g2_one, shifted) != pairing(g2_tau, base):
        raise CeremonyError(f"{where}: the G1 powers are not successive powers of the τ in G2Powers[1]")


# ------------------------------------------------------------------------------------------ import


def read_transcript(path: str | os.PathLike, k: int) -> tuple[list[Any], Any, Any, dict[str, Any]]:
    """([τ^i]G1 for i < 2^k, [1]G2, [τ]G2, description) from the smallest transcript holding 2^k powers."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CeremonyError(f"{path}: cannot read the transcript JSON ({err})") from err
    transcripts = data.get("transcripts") if isinstance(data, dict) else None
    if not isinstance(transcripts, list) or not transcripts:
        raise CeremonyError(f"{path}: field 'transcripts' must be a non-empty list")
    n = 1 << k
    usable = []
    for i, t in enumerate(transcripts):
        powers = t.get("powersOfTau") if isinstance(t, dict) else None
        if (
            not isinstance(powers, dict)
            or not isinstance(powers.get("G1Powers"), list)
            or not isinstance(powers.get("G2Powers"), list)
        ):
            raise CeremonyError(f"{path}: field 'transcripts'[{i}].powersOfTau must hold lists G1Powers, G2Powers")
        if len(powers["G1Powers"]) >= n and len(powers["G2Powers"]) >= 2:
            usable.append((len(powers["G1Powers"]), i, powers))
    if not usable:
        sizes = [len(t.get("powersOfTau", {}).get("G1Powers", [])) for t in transcripts]
        raise CeremonyError(f"{path}: no transcript holds 2^{k} = {n} G1 powers (sizes {sizes})")
    size, index, powers = min(usable)
    where = f"{path}: field 'transcripts'[{index}].powersOfTau"
    g1 = [_g1(powers["G1Powers"][j], f"{where}.G1Powers[{j}]") for j in range(n)]
    g2 = [_g2(powers["G2Powers"][j], f"{where}.G2Powers[{j}]") for j in range(2)]
    check_powers(g1, g2[0], g2[1], where)
    return g1, g2[0], g2[1], {"transcript": index, "g1_powers": size}


def import_ceremony(
    transcript: str | os.PathLike, k: int, out: str | os.PathLike, *, progress: Callable[[str], None] | None = None
) -> Srs:
    """Convert ``transcript`` into a ``jaxapex-srs/1`` file of size 2^k at ``out`` and open it validated."""
    if not 1 <= k <= 15:
        raise CeremonyError(f"k = {k}: the Ethereum ceremony transcripts hold at most 2^15 G1 powers")
    g1, g2_one, g2_tau, described = read_transcript(transcript, k)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(MAGIC + int(k).to_bytes(4, "little") + g2_uncompressed(g2_one) + g2_uncompressed(g2_tau))
            f.write(b"".join(g1_uncompressed(p) for p in g1))
            for kk in range(1, k + 1):
                if progress is not None:
                    progress(f"Lagrange basis of the 2^{kk} domain")
                f.write(b"".join(g1_uncompressed(p) for p in lagrange_basis(g1, kk)))
        srs = Srs.load(tmp)  # full validation before it gets its name
        srs.prepare(k)
        del srs
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    sha = file_sha256(out)
    sidecar_path(out).write_text(
        json.dumps(
            {
                "format": FORMAT,
                "k": int(k),
                "sha256": sha,
                "development": False,
                "source": {
                    "kind": "ethereum-kzg-ceremony transcript.json",
                    "file": str(Path(transcript).resolve()),
                    "sha256": file_sha256(transcript),
                    **described,
                },
                "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            },
            indent=1,
        )
        + "\n"
    )
    return Srs.load(out)
