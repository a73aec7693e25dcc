"""Offline code corpus: real source files already present on the machine, as byte-level token windows.

Languages and where their files are found (every fresh Linux + Python install has most of them):

    python  the standard library (``sysconfig`` stdlib path, site-packages excluded)       *.py
    c       system headers under /usr/include                                             *.h
    perl    Perl modules under /usr/share/perl*, /usr/lib/*/perl*                         *.pm, *.pl
    shell   *.sh files, and scripts in /usr/bin, /usr/sbin, /etc whose first line is a POSIX/bash shebang

File selection is deterministic: every candidate path is listed in sorted order, duplicates (same
content) dropped, then a seeded permutation picks the files; each file goes wholly to train or to test,
so no test window shares a file with a training window. Tokens are bytes (vocabulary 256) unless an
``encode`` function (e.g. a pretrained model's BPE tokenizer) turns each file's text into token ids.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import os
import sysconfig
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np

VOCAB_SIZE = 256
_SHELL_SHEBANGS = (b"#!/bin/sh", b"#!/bin/bash", b"#!/usr/bin/env bash", b"#!/usr/bin/env sh", b"#!/bin/dash")


class CorpusError(RuntimeError):
    """The machine does not hold enough files of a language for the requested corpus."""


@dataclasses.dataclass(frozen=True)
class LanguageSource:
    """Where a language's files live: glob patterns for root directories, file-name suffixes, and
    (optionally) directories whose extension-less files count when they start with one of ``shebangs``."""

    roots: tuple[str, ...]
    suffixes: tuple[str, ...]
    exclude_parts: tuple[str, ...] = ()
    shebang_dirs: tuple[str, ...] = ()
    shebangs: tuple[bytes, ...] = ()


def default_sources() -> dict[str, LanguageSource]:
    stdlib = sysconfig.get_paths()["stdlib"]
    return {
        "python": LanguageSource(roots=(stdlib,), suffixes=(".py",), exclude_parts=("site-packages", "dist-packages")),
        "c": LanguageSource(roots=("/usr/include",), suffixes=(".h",)),
        "perl": LanguageSource(
            # unicore/ holds generated Unicode property tables (numbers, not code)
            roots=("/usr/share/perl*", "/usr/lib/*/perl*"),
            suffixes=(".pm", ".pl"),
            exclude_parts=("unicore",),
        ),
        "shell": LanguageSource(
            roots=("/usr/share", "/usr/lib", "/etc"),
            suffixes=(".sh",),
            shebang_dirs=("/usr/bin", "/usr/sbin", "/etc"),
            shebangs=_SHELL_SHEBANGS,
        ),
    }


def _walk_files(root: str, suffixes: Sequence[str], exclude_parts: Sequence[str]) -> Iterable[str]:
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if d not in exclude_parts)
        for name in sorted(filenames):
            if name.endswith(tuple(suffixes)):
                yield os.path.join(dirpath, name)


def _has_shebang(path: str, shebangs: Sequence[bytes]) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError:
        return False
    return head.startswith(tuple(shebangs))


def find_language_files(source: LanguageSource) -> list[str]:
    """Sorted regular files of a language (symlinks resolved and de-duplicated)."""
    found: set[str] = set()
    for pattern in source.roots:
        for root in sorted(glob.glob(pattern)):
            if os.path.isdir(root):
                found.update(_walk_files(root, source.suffixes, source.exclude_parts))
    for directory in source.shebang_dirs:
        if os.path.isdir(directory):
            for name in sorted(os.listdir(directory)):
                path = os.path.join(directory, name)
                if os.path.isfile(path) and "." not in name and _has_shebang(path, source.shebangs):
                    found.add(path)
    real = {os.path.realpath(p) for p in found if os.path.isfile(p)}
    return sorted(real)


def _read(path: str, max_bytes: int) -> bytes | None:
    """File content (at most ``max_bytes``); None for unreadable or binary (NUL-containing) files."""
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes)
    except OSError:
        return None
    return None if b"\x00" in data else data


def file_windows(data: bytes | np.ndarray, *, window: int, max_windows: int) -> np.ndarray:
    """Up to ``max_windows`` non-overlapping windows of ``window`` tokens (bytes, or the given token ids),
    evenly spread over the file (not just its licence header). Returns (k, window) of the input's dtype
    (uint8 for bytes); k = 0 if the file is shorter than one window."""
    tokens = np.frombuffer(data, dtype=np.uint8) if isinstance(data, bytes) else np.asarray(data)
    n_full = len(tokens) // window
    if n_full == 0:
        return np.zeros((0, window), tokens.dtype)
    chosen = np.unique(np.linspace(0, n_full - 1, num=min(max_windows, n_full)).round().astype(int))
    return tokens[: n_full * window].reshape(n_full, window)[chosen]


@dataclasses.dataclass(frozen=True)
class LanguageSplit:
    """Byte windows ``tokens`` int32 (n, window) of one language, the files they came from, and for each
    window the index of its file in ``files`` (``file_index`` (n,))."""

    tokens: np.ndarray
    files: tuple[str, ...]
    file_index: np.ndarray

    def by_files(self, keep: np.ndarray) -> LanguageSplit:
        """The windows of the files whose index is in ``keep`` (file list kept whole, for provenance)."""
        rows = np.isin(self.file_index, keep)
        return LanguageSplit(self.tokens[rows], self.files, self.file_index[rows])

    def as_batch(self) -> dict[str, np.ndarray]:
        return {"tokens": self.tokens}

    def __len__(self) -> int:
        return int(self.tokens.shape[0])


@dataclasses.dataclass(frozen=True)
class CodeCorpus:
    """``splits[language][part]`` with part in ("train", "test"), windows of ``window`` bytes (T + 1)."""

    splits: dict[str, dict[str, LanguageSplit]]
    window: int

    @property
    def languages(self) -> tuple[str, ...]:
        return tuple(self.splits)

    def sizes(self) -> dict[str, dict[str, int]]:
        return {lang: {part: len(s) for part, s in parts.items()} for lang, parts in self.splits.items()}


def build_code_corpus(
    *,
    files_per_language: Mapping[str, int],
    window: int = 65,
    test_fraction: float = 0.25,
    max_windows_per_file: int = 8,
    max_windows_per_test_file: int | None = None,
    test_files: int | None = None,
    max_file_bytes: int = 200_000,
    seed: int = 0,
    sources: Mapping[str, LanguageSource] | None = None,
    encode: Callable[[bytes], np.ndarray] | None = None,
) -> CodeCorpus:
    """Select ``files_per_language[lang]`` files per language and cut them into windows.

    ``encode`` maps a file's bytes to int token ids (default: the bytes themselves); ``window`` then counts
    tokens, and a file must yield at least one window to be used. ``max_windows_per_test_file`` (default:
    ``max_windows_per_file``) lets a held-out set take more of each file than training does; ``test_files``
    (default: ``test_fraction`` of each language's files) holds out exactly that many files per language.

    Raises :class:`CorpusError` naming the language when fewer usable files exist than requested.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if test_files is not None and not all(0 < test_files < wanted for wanted in files_per_language.values()):
        raise ValueError(
            f"test_files={test_files} must leave every language training files: {dict(files_per_language)}"
        )
    if window < 2:
        raise ValueError(f"window must be >= 2 bytes (inputs + one target), got {window}")
    sources = dict(default_sources() if sources is None else sources)
    splits: dict[str, dict[str, LanguageSplit]] = {}
    for offset, (language, wanted) in enumerate(files_per_language.items()):
        if language not in sources:
            raise ValueError(f"unknown language {language!r}; known: {sorted(sources)}")
        if wanted < 2:
            raise ValueError(f"{language}: need at least 2 files (train and test), asked for {wanted}")
        candidates = find_language_files(sources[language])
        rng = np.random.default_rng([seed, offset])
        chosen: list[tuple[str, bytes]] = []
        seen_digests: set[bytes] = set()
        for index in rng.permutation(len(candidates)):
            data = _read(candidates[index], max_file_bytes)
            if data is None or len(data) < window:
                continue
            digest = hashlib.sha256(data).digest()
            if digest in seen_digests:  # identical copies would leak between train and test
                continue
            tokens = data if encode is None else np.asarray(encode(data), np.int32)
            if len(tokens) < window:
                continue
            seen_digests.add(digest)
            chosen.append((candidates[index], tokens))
            if len(chosen) == wanted:
                break
        if len(chosen) < wanted:
            roots = ", ".join(sources[language].roots)
            raise CorpusError(
                f"language {language!r}: found only {len(chosen)} usable files of at least {window} tokens "
                f"(of {len(candidates)} candidates under {roots}); {wanted} requested"
            )
        n_test = max(1, int(round(test_fraction * wanted))) if test_files is None else test_files
        parts = {"train": chosen[n_test:], "test": chosen[:n_test]}
        splits[language] = {}
        for part, files in parts.items():
            cap = (
                max_windows_per_file
                if part == "train" or max_windows_per_test_file is None
                else max_windows_per_test_file
            )
            windows = [file_windows(data, window=window, max_windows=cap) for _, data in files]
            splits[language][part] = LanguageSplit(
                tokens=np.concatenate(windows).astype(np.int32),
                files=tuple(path for path, _ in files),
                file_index=np.concatenate([np.full(len(w), i, np.int32) for i, w in enumerate(windows)]),
            )
    return CodeCorpus(splits=splits, window=window)


def decode(tokens: np.ndarray) -> str:
    """Byte tokens back to text (undecodable bytes replaced), for looking at samples."""
    return bytes(np.asarray(tokens, dtype=np.uint8).tolist()).decode("utf-8", errors="replace")
