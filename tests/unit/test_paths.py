"""Manifest path rules (Appendix B.4)."""

from __future__ import annotations

import sys
import tracemalloc
import unicodedata
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.protocol import paths as paths_module
from pipeline.protocol.errors import RemoteProtocolError
from pipeline.protocol.paths import (
    _FORBIDDEN_CHAR,
    MAX_COMPONENT_BYTES,
    MAX_PATH_BYTES,
    _HashSet,
    _validate_exactly,
    validate_manifest_paths,
    validate_path,
)


def _rejected(path: str) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as info:
        validate_path(path)
    assert info.value.code == "bad_path"
    return info.value


def _rejected_list(paths: Sequence[str]) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as info:
        validate_manifest_paths(paths)
    assert info.value.code == "bad_path"
    return info.value


@pytest.mark.parametrize(
    "path",
    [
        "a",
        "a/b/c",
        ".hidden/.x",
        "...",
        "a..b/..c/c..",
        "with space/and-dash_and.dot",
        "café/naïve.txt",  # NFC
        "日本語/ファイル.txt",
        "emoji/\U0001f600.png",
        "nbsp\u00a0is/not a control",
        "zero\u200bwidth",  # Cf, not Cc
        "1:x",  # a digit is not a drive letter
        "ab:c",
        "a/C:",  # a drive letter only counts at the start
    ],
)
def test_accepted(path: str) -> None:
    validate_path(path)
    validate_manifest_paths([path])


@pytest.mark.parametrize(
    ("path", "rule"),
    [
        ("", "empty"),
        ("/a", "absolute"),
        ("/", "absolute"),
        ("C:", "drive letter"),
        ("c:x", "drive letter"),
        ("Z:/a", "drive letter"),
        ("a/", "empty component"),
        ("a//b", "empty component"),
        (".", "'.' component"),
        ("..", "'..' component"),
        ("a/..", "'..' component"),
        ("a/./b", "'.' component"),
        ("a\\b", "backslash"),
        ("a\x00b", "'\\x00'"),
        ("a\tb", "control"),
        ("a\nb", "control"),
        ("a\x1fb", "control"),
        ("a\x7fb", "control"),  # DEL is Cc
        ("a\x85b", "control"),  # C1 NEL
        ("a\x9fb", "control"),
        ("cafe\u0301", "NFC"),  # NFD spelling of café
        ("\u212b", "NFC"),  # ANGSTROM SIGN normalizes to U+00C5
        ("a\ud800b", "Unicode"),  # lone surrogate
    ],
)
def test_rejected(path: str, rule: str) -> None:
    error = _rejected(path)
    assert rule in error.message
    assert repr(path) in error.message
    _rejected_list(["fine", path])


def test_control_character_set_is_exactly_category_cc() -> None:
    # paths.py uses a fixed character class for speed; Cc is closed under
    # Unicode's stability policy, so it must agree with unicodedata everywhere.
    every = "".join(chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF)
    matched = set(_FORBIDDEN_CHAR.findall(every))
    assert matched == {c for c in every if unicodedata.category(c) == "Cc"} | {"\\"}
    for char in matched:
        _rejected(f"a{char}b")
    for char in "\u00a0\u00ad\u200b\u200e\u2028\u2029\ufeff\U000e0001":
        validate_path(f"a{char}b")


def test_component_limit_is_255_utf8_bytes() -> None:
    validate_path("x" * MAX_COMPONENT_BYTES)
    _rejected("x" * (MAX_COMPONENT_BYTES + 1))
    # 127 two-byte characters + 1 = 255 bytes, though only 128 characters.
    validate_path("é" * 127 + "x")
    error = _rejected("é" * 128)  # 128 characters, 256 bytes
    assert "256 UTF-8 bytes" in error.message
    validate_path("d/" + "\U0001f600" * 63 + "abc")  # 255 bytes
    _rejected("d/" + "\U0001f600" * 64)  # 256 bytes


def _path_of_bytes(total: int) -> str:
    """A valid-looking path of exactly ``total`` UTF-8 bytes with multi-byte components."""
    component = "é" * 100  # 200 bytes
    parts: list[str] = []
    size = 0
    while size + 201 + 1 <= total:
        parts.append(component)
        size += 201  # component and its separator
    parts.append("x" * (total - size))
    path = "/".join(parts)
    assert len(path.encode("utf-8")) == total
    return path


def test_path_limit_is_4096_utf8_bytes() -> None:
    longest = _path_of_bytes(MAX_PATH_BYTES)
    assert len(longest) < MAX_PATH_BYTES  # fewer characters than bytes
    validate_path(longest)
    error = _rejected(_path_of_bytes(MAX_PATH_BYTES + 1))
    assert "4097 UTF-8 bytes" in error.message


def test_long_path_is_truncated_in_the_message() -> None:
    error = _rejected(_path_of_bytes(MAX_PATH_BYTES + 1))
    assert len(error.message) < 300


@pytest.mark.parametrize(
    ("paths", "culprit"),
    [
        (["dup.txt", "dup.txt"], "appears twice"),
        (["a/b/c", "x", "a/b/c"], "appears twice"),
        (["dir", "dir/file"], "which is also a file"),
        (["dir/file", "dir"], "also a directory prefix"),
        (["a", "a/b/c/d"], "which is also a file"),
        (["a/b", "a/b/c"], "which is also a file"),
        (["a/b/c", "a/b"], "also a directory prefix"),
        (["x/y", "a/b/c", "q", "a/b"], "also a directory prefix"),
    ],
)
def test_duplicates_and_file_directory_conflicts(paths: list[str], culprit: str) -> None:
    error = _rejected_list(paths)
    assert culprit in error.message


@pytest.mark.parametrize(
    "paths",
    [
        [],
        ["a/b", "a/c", "a/d/e"],
        ["a/b", "a/bc", "ab/c", "a.b"],
        ["ab", "a/b"],
        ["d/x", "D/x", "d/X"],  # case differs: distinct on the wire
        ["a/b/c", "a/b/d", "b/a/c"],
    ],
)
def test_lists_without_conflicts(paths: list[str]) -> None:
    validate_manifest_paths(paths)


def test_first_offending_path_is_named() -> None:
    error = _rejected_list(["ok", "also/ok", "bad//path", "..", "ok"])
    assert "'bad//path'" in error.message


def _naive_conflict(paths: Sequence[str]) -> bool:
    """Reference: O(n^2) duplicate and file-is-also-a-directory check."""
    for i, first in enumerate(paths):
        for j, second in enumerate(paths):
            if i != j and (first == second or second.startswith(first + "/")):
                return True
    return False


_COMPONENT = st.sampled_from(["a", "b", "ab", "é"])
_PATH = st.lists(_COMPONENT, min_size=1, max_size=4).map("/".join)


@settings(max_examples=400, deadline=None)
@given(st.lists(_PATH, max_size=8))
def test_cross_path_checks_match_a_naive_reference(paths: list[str]) -> None:
    try:
        validate_manifest_paths(paths)
    except RemoteProtocolError as exc:
        assert exc.code == "bad_path"
        assert _naive_conflict(paths)
    else:
        assert not _naive_conflict(paths)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_arbitrary_text_is_accepted_or_rejected_with_bad_path(path: str) -> None:
    try:
        validate_path(path)
    except RemoteProtocolError as exc:
        assert exc.code == "bad_path"
    else:
        # Whatever passes is safe to join under a destination directory.
        assert path and not path.startswith("/")
        assert all(c not in (".", "..", "") for c in path.split("/"))
        assert "\\" not in path
        assert not any(unicodedata.category(c) == "Cc" for c in path)
        assert unicodedata.is_normalized("NFC", path)


def test_many_deep_paths() -> None:
    # 2M components in all; the trie handles this in time linear in the input,
    # where copying every prefix of every path would take ~1000x longer.
    paths = ["/".join(["d"] * 1000 + [f"f{i}"]) for i in range(2000)]
    validate_manifest_paths(paths)
    _rejected_list([*paths, "/".join(["d"] * 500)])


# The fast pass keeps hashes, not strings, and hands any hit to the exact trie
# (_validate_exactly); these tests hold the two to the same verdicts and messages.


def _verdict(check: object, paths: Sequence[str]) -> str | None:
    try:
        check(paths)  # type: ignore[operator]
    except RemoteProtocolError as exc:
        assert exc.code == "bad_path"
        return exc.message
    return None


@settings(max_examples=400, deadline=None)
@given(st.lists(_PATH, max_size=24))
def test_fast_pass_names_the_same_path_as_the_exact_check(paths: list[str]) -> None:
    assert _verdict(validate_manifest_paths, paths) == _verdict(_validate_exactly, paths)


@pytest.mark.parametrize(
    "paths",
    [
        ["a/b", "a/c", "a/d/e", "b"],
        ["a/b", "c", "a/b"],
        ["a/b/c", "x", "a/b"],
        ["a", "x/y", "a/b"],
        ["ok", "bad//path"],
    ],
)
def test_every_hash_colliding_still_gives_the_exact_verdict(
    paths: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = _verdict(_validate_exactly, paths)
    monkeypatch.setattr(paths_module, "hash", lambda _value: 7, raising=False)
    assert _verdict(validate_manifest_paths, paths) == expected


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), max_size=3000))
def test_hash_set_matches_a_set(values: list[int]) -> None:
    table, reference = _HashSet(), set()
    for value in values:
        mapped = value or 1  # the table's stand-in for 0 (its empty mark)
        assert table.add(value) == (mapped not in reference)
        reference.add(mapped)
    assert all(value in table for value in values)
    others = [value ^ 0x5A5A for value in values]
    assert all((other in table) == ((other or 1) in reference) for other in others)


def test_memory_per_path_stays_small() -> None:
    # 50,000 paths of a camera dump: the trie this replaced peaked at ~250 B per
    # path; the fast pass ~32 (tables at most half full, the old one held while
    # growing). Allocations counted by tracemalloc, not timed.
    paths = [f"DCIM/{d:03d}CANON/IMG_{i:05d}.JPG" for d in range(50) for i in range(1000)]
    tracemalloc.start()
    try:
        validate_manifest_paths(paths)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak / len(paths) < 64
