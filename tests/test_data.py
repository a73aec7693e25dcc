"""Offline data: digits + sketch domain, the code corpus, and the generic folder/text loaders."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxapex.data import as_batches, digits_task, load_digit_images, sketch_transform, take
from jaxapex.data.code_corpus import (
    CorpusError,
    LanguageSource,
    build_code_corpus,
    decode,
    default_sources,
    file_windows,
    find_language_files,
)
from jaxapex.data.loaders import byte_windows, load_image_folder, load_text_windows


def test_digits_scenario_partitions_the_data():
    data = digits_task(seed=0, forget_class=3, personal_classes=(0, 1, 2, 4, 5, 6, 7, 8, 9))
    images, labels = load_digit_images()
    assert images.shape == (1797, 8, 8) and images.min() >= 0 and images.max() <= 1
    natural = len(data.global_train) + len(data.global_test)
    personal_pool_size = int(np.isin(labels, data.personal_classes).sum())
    # the natural pool and the personal pool together use each image at most once
    assert natural + len(data.personal_train) + len(data.personal_test) <= 1797
    assert len(data.personal_train) + len(data.personal_test) < personal_pool_size
    assert set(np.unique(data.forget_train.labels)) == {3} and set(np.unique(data.forget_test.labels)) == {3}
    assert 3 not in data.retain_train.labels and 3 not in data.retain_test.labels
    assert 3 not in data.personal_train.labels and 3 not in data.personal_test.labels
    assert len(data.forget_train) + len(data.retain_train) == len(data.global_train)
    # every natural image of the global pool is an actual digit image; sketches are binary strokes
    assert np.isin(data.personal_train.images, (0.0, 1.0)).all()
    flat = images.reshape(1797, -1)
    rows = {row.tobytes() for row in flat}
    assert all(img.reshape(-1).tobytes() in rows for img in data.global_test.images)


def test_digits_scenario_is_deterministic_per_seed():
    a, b, c = digits_task(seed=4), digits_task(seed=4), digits_task(seed=5)
    np.testing.assert_array_equal(a.personal_train.images, b.personal_train.images)
    np.testing.assert_array_equal(a.global_train.labels, b.global_train.labels)
    assert not np.array_equal(a.global_train.images, c.global_train.images)


def test_digits_scenario_rejects_bad_arguments():
    with pytest.raises(ValueError, match="forget_class must be in"):
        digits_task(forget_class=10)
    with pytest.raises(ValueError, match="personal_classes"):
        digits_task(personal_classes=())
    with pytest.raises(ValueError, match="sum to 1"):
        digits_task(split=(0.5, 0.5, 0.5, 0.5))


def test_sketch_of_a_square_is_its_outline():
    """A filled 4×4 square: Sobel is zero on the 2×2 interior and large on the square's border pixels."""
    image = np.zeros((1, 8, 8), np.float32)
    image[0, 2:6, 2:6] = 1.0
    sketch = sketch_transform(image)[0]
    expected = np.zeros((8, 8), np.float32)
    expected[2:6, 2:6] = 1.0
    expected[3:5, 3:5] = 0.0
    np.testing.assert_array_equal(sketch, expected)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(0, 1, width=32), min_size=64, max_size=64))
def test_sketch_strokes_lie_on_the_ink(values):
    image = np.asarray(values, np.float32).reshape(1, 8, 8)
    sketch = sketch_transform(image)
    assert np.isin(sketch, (0.0, 1.0)).all()
    assert not np.any((sketch > 0) & (image <= 0.2))
    np.testing.assert_array_equal(sketch, sketch_transform(image.copy()))


def test_as_batches_and_take():
    data = {"x": np.arange(10), "y": np.arange(10) * 2}
    batches = as_batches(data, 4)
    assert [len(b["x"]) for b in batches] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([b["y"] for b in batches]), data["y"])
    sub = take(data, 3, seed=1)
    assert len(sub["x"]) == 3 and np.array_equal(sub["y"], sub["x"] * 2)
    np.testing.assert_array_equal(take(data, 3, seed=1)["x"], sub["x"])
    assert take(data, None)["x"] is data["x"]
    with pytest.raises(ValueError, match="differ in length"):
        as_batches({"x": np.arange(3), "y": np.arange(4)}, 2)


# ------------------------------------------------------------------------------------------------ code


def _write_tree(root, files: dict[str, bytes]) -> None:
    for rel, content in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(content)


@pytest.fixture()
def fake_sources(tmp_path):
    _write_tree(
        tmp_path / "py", {f"pkg/m{i}.py": (f"def f{i}(x):\n    return x + {i}\n" * 20).encode() for i in range(12)}
    )
    _write_tree(tmp_path / "py", {"site-packages/skip.py": b"x = 1\n" * 100, "pkg/short.py": b"x"})
    _write_tree(
        tmp_path / "pl", {f"lib/M{i}.pm": (f"sub f{i} {{ return $_[0] + {i}; }}\n" * 20).encode() for i in range(6)}
    )
    _write_tree(tmp_path / "pl", {"lib/copy.pm": (b"sub f0 { return $_[0] + 0; }\n" * 20)})  # duplicate of M0
    _write_tree(
        tmp_path / "bin",
        {
            "tool": b"#!/bin/sh\necho hi\n" * 20,
            "binary": b"#!/bin/sh\x00\x01" * 40,
            "other": b"#!/usr/bin/python3\nprint()\n" * 20,
        },
    )
    return {
        "python": LanguageSource(roots=(str(tmp_path / "py"),), suffixes=(".py",), exclude_parts=("site-packages",)),
        "perl": LanguageSource(roots=(str(tmp_path / "p*"),), suffixes=(".pm",)),
        "shell": LanguageSource(
            roots=(), suffixes=(".sh",), shebang_dirs=(str(tmp_path / "bin"),), shebangs=(b"#!/bin/sh",)
        ),
    }


def test_file_discovery_respects_patterns_and_exclusions(fake_sources):
    py = find_language_files(fake_sources["python"])
    assert len(py) == 13 and not any("site-packages" in p for p in py)
    assert py == sorted(py)
    shell = find_language_files(fake_sources["shell"])
    assert [os.path.basename(p) for p in shell] == ["binary", "tool"]  # shebang match; binary dropped on read


def test_corpus_is_deterministic_and_splits_by_file(fake_sources):
    kwargs = dict(files_per_language={"python": 8, "perl": 6}, window=17, sources=fake_sources, seed=3)
    a, b = build_code_corpus(**kwargs), build_code_corpus(**kwargs)
    for lang in ("python", "perl"):
        for part in ("train", "test"):
            np.testing.assert_array_equal(a.splits[lang][part].tokens, b.splits[lang][part].tokens)
        train, test = a.splits[lang]["train"], a.splits[lang]["test"]
        assert not set(train.files) & set(test.files)
        assert train.tokens.shape[1] == 17 and train.tokens.dtype == np.int32
        # each window is a substring of the file it is attributed to
        for row, index in zip(train.tokens[:5], train.file_index[:5]):
            with open(train.files[index], "rb") as f:
                assert bytes(row.astype(np.uint8).tolist()) in f.read()
    # the perl duplicate counts once: 6 distinct files exist, all used
    assert len(a.splits["perl"]["train"].files) + len(a.splits["perl"]["test"].files) == 6
    contents = set()
    for part in ("train", "test"):
        for path in a.splits["perl"][part].files:
            with open(path, "rb") as f:
                contents.add(f.read())
    assert len(contents) == 6
    c = build_code_corpus(**{**kwargs, "seed": 4})
    assert set(c.splits["python"]["test"].files) != set(a.splits["python"]["test"].files)


def test_held_out_files_can_take_more_windows_than_training_files(fake_sources):
    kwargs = dict(files_per_language={"python": 8}, window=17, sources=fake_sources, seed=3, max_windows_per_file=1)
    c = build_code_corpus(**kwargs, test_files=3, max_windows_per_test_file=4)
    train, test = c.splits["python"]["train"], c.splits["python"]["test"]
    assert len(test.files) == 3 and len(train.files) == 5
    assert np.bincount(train.file_index).max() == 1 and np.bincount(test.file_index).max() > 1
    plain = build_code_corpus(**kwargs, test_files=3)
    assert plain.splits["python"]["test"].files == test.files  # same files, fewer windows
    assert np.bincount(plain.splits["python"]["test"].file_index).max() == 1
    with pytest.raises(ValueError, match="test_files=8 must leave every language training files"):
        build_code_corpus(**kwargs, test_files=8)


def test_too_few_files_names_the_language(fake_sources):
    with pytest.raises(CorpusError, match=r"language 'perl': found only 6 usable files .* 9 requested"):
        build_code_corpus(files_per_language={"perl": 9}, window=17, sources=fake_sources)
    with pytest.raises(ValueError, match="unknown language 'cobol'"):
        build_code_corpus(files_per_language={"cobol": 3}, sources=fake_sources)


def test_file_windows_spread_over_the_file():
    data = bytes(range(100))
    windows = file_windows(data, window=10, max_windows=3)
    assert [w[0] for w in windows] == [0, 40, 90]
    assert file_windows(b"abc", window=10, max_windows=3).shape == (0, 10)
    assert decode(windows[0]) == bytes(range(10)).decode()


def test_machine_corpus_has_several_languages():
    """The default sources find real files here; Python's standard library is always present."""
    counts = {lang: len(find_language_files(src)) for lang, src in default_sources().items()}
    assert counts["python"] > 200, counts
    assert sum(1 for c in counts.values() if c >= 50) >= 2, counts


# --------------------------------------------------------------------------------------------- loaders


def test_image_folder_loader(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = {}
    for cls in ("cat", "ant"):
        os.makedirs(tmp_path / cls)
        for i in range(3):
            array = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
            Image.fromarray(array).save(tmp_path / cls / f"{i}.png")
            pixels[(cls, i)] = array
    (tmp_path / "ant" / "notes.txt").write_text("not an image")
    images, labels, names = load_image_folder(tmp_path, image_size=6)
    assert names == ("ant", "cat") and images.shape == (6, 6, 6, 3)
    np.testing.assert_array_equal(labels, [0, 0, 0, 1, 1, 1])
    np.testing.assert_allclose(images[3], pixels[("cat", 0)] / 255.0, atol=1e-6)  # same size: no resampling
    gray, _, _ = load_image_folder(tmp_path, image_size=3, channels=1, class_names=("cat",), max_per_class=2)
    assert gray.shape == (2, 3, 3, 1)
    normed, _, _ = load_image_folder(tmp_path, image_size=6, normalize=((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)))
    np.testing.assert_allclose(normed, (images - 0.5) / 0.25, atol=1e-5)
    with pytest.raises(FileNotFoundError, match=r"no directory for class\(es\) \['dog'\]"):
        load_image_folder(tmp_path, image_size=6, class_names=("cat", "dog"))


def test_text_loaders(tmp_path):
    _write_tree(
        tmp_path,
        {
            "a/x.py": b"0123456789",
            "b/y.py": b"abcdefghijklmnop",
            "c/z.txt": b"zzzzzzzzzzzz",
            "d/bin.py": b"12345\x0067890",
        },
    )
    windows = load_text_windows(tmp_path, window=5, suffixes=(".py",))
    assert [decode(w) for w in windows] == ["01234", "56789", "abcde", "fghij", "klmno"]
    overlapping = byte_windows(["abcdef"], window=4, stride=1)
    assert [decode(w) for w in overlapping] == ["abcd", "bcde", "cdef"]
    assert byte_windows(["ab"], window=4).shape == (0, 4)
