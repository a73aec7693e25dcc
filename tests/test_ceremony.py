"""Import of a BLS12-381 powers-of-tau ceremony transcript (the Ethereum KZG ceremony's transcript.json),
tested on a synthetic transcript written in that format from a known secret: the imported SRS file must
be byte for byte the SRS the backend generates from that secret, and bad transcripts are refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
from py_ecc.bls.point_compression import compress_G1, compress_G2
from py_ecc.optimized_bls12_381 import G1, G2, curve_order, multiply

from circuit_compiler import backend as be
from circuit_compiler.ceremony import CeremonyError, import_ceremony
from circuit_compiler.srs import Srs, srs_info

pytestmark = pytest.mark.prover

TAU = 0x1D3C_5B7A_9F01_2345_6789_ABCD_EF01_2345 % curve_order
K = 3


def transcript(tau: int, n_g1: int, n_g2: int = 3) -> dict:
    g1 = ["0x" + compress_G1(multiply(G1, pow(tau, i, curve_order))).to_bytes(48, "big").hex() for i in range(n_g1)]
    g2 = []
    for i in range(n_g2):
        z1, z2 = compress_G2(multiply(G2, pow(tau, i, curve_order)))
        g2.append("0x" + z1.to_bytes(48, "big").hex() + z2.to_bytes(48, "big").hex())
    return {
        "numG1Powers": n_g1,
        "numG2Powers": n_g2,
        "powersOfTau": {"G1Powers": g1, "G2Powers": g2},
        "witness": {"runningProducts": [], "potPubkeys": [], "blsSignatures": []},
    }


@pytest.fixture(scope="module")
def ceremony_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("ceremony") / "transcript.json"
    # two transcripts, as the real file has (4096 .. 32768 powers): the smallest that fits is used
    path.write_text(json.dumps({"transcripts": [transcript(TAU, 1 << K), transcript(TAU + 1, 1 << (K + 1))]}))
    return path


def test_imported_srs_is_the_srs_of_the_ceremony_secret(ceremony_file, tmp_path):
    srs = import_ceremony(ceremony_file, K, tmp_path / "ceremony.srs")
    reference = Srs.from_secret_insecure(K, TAU, tmp_path / "reference.srs")
    assert (tmp_path / "ceremony.srs").read_bytes() == (tmp_path / "reference.srs").read_bytes()
    assert not srs.development and srs_info(srs.path)["provenance"]["source"]["transcript"] == 0
    column = np.arange(5, dtype=np.int64)
    assert be.commit(srs, K, column) == be.commit(reference, K, column)


def test_bad_transcripts_are_refused_by_field(ceremony_file, tmp_path):
    with pytest.raises(CeremonyError, match="no transcript holds 2\\^5"):
        import_ceremony(ceremony_file, K + 2, tmp_path / "x.srs")
    data = json.loads(ceremony_file.read_text())
    data["transcripts"][0]["powersOfTau"]["G1Powers"][2] = "0x" + "00" * 47
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(CeremonyError, match=r"'transcripts'\[0\]\.powersOfTau\.G1Powers\[2\]: 47 bytes"):
        import_ceremony(bad, K, tmp_path / "x.srs")
    # a point that is not τ^2 (here τ^3 twice): the pairing check refuses it
    data = json.loads(ceremony_file.read_text())
    g1 = data["transcripts"][0]["powersOfTau"]["G1Powers"]
    g1[2] = g1[3]
    bad.write_text(json.dumps(data))
    with pytest.raises(CeremonyError, match="not successive powers"):
        import_ceremony(bad, K, tmp_path / "y.srs")
    assert not (tmp_path / "y.srs").exists()


def test_cli_imports_a_ceremony(ceremony_file, tmp_path, capsys):
    from jaxapex.cli import main as cli

    assert (
        cli(
            ["srs", "import-ceremony", "--transcript", str(ceremony_file), "--k", "2", "--out", str(tmp_path / "c.srs")]
        )
        == 0
    )
    assert "wrote ceremony SRS k=2" in capsys.readouterr().out
    assert (
        cli(
            [
                "srs",
                "import-ceremony",
                "--transcript",
                str(tmp_path / "missing.json"),
                "--k",
                "2",
                "--out",
                str(tmp_path / "d.srs"),
            ]
        )
        == 1
    )
    assert "missing.json" in capsys.readouterr().err
