"""Room codes (Appendix C.3): shape, entropy, word list, normalization."""

from __future__ import annotations

import math
import re

from hypothesis import given
from hypothesis import strategies as st

from pipeline.signaling.codes import (
    CODE_ENTROPY_BITS,
    NUMBER_BOUND,
    WORDS_PER_CODE,
    is_valid_code,
    new_code,
    normalize_code,
)
from pipeline.signaling.words import WORDS

# Words that must never appear in a code read aloud between strangers.
BLOCKLIST = {
    "ass", "bitch", "bomb", "crap", "damn", "dead", "die", "dick", "drug", "fuck", "gun",
    "hate", "hell", "kill", "murder", "nazi", "naked", "nude", "piss", "porn", "rape",
    "sex", "shit", "slut", "suicide", "terror", "whore",
}  # fmt: skip


def test_entropy_is_at_least_32_bits_and_matches_the_drawing() -> None:
    possible_codes = NUMBER_BOUND * len(set(WORDS)) ** WORDS_PER_CODE
    assert possible_codes >= 2**32
    assert CODE_ENTROPY_BITS >= 32
    assert math.isclose(2**CODE_ENTROPY_BITS, possible_codes)


def test_word_list_is_distinct_short_lowercase_ascii() -> None:
    assert len(set(WORDS)) == len(WORDS)
    for word in WORDS:
        assert re.fullmatch(r"[a-z]{2,8}", word), word


def test_word_list_has_nothing_offensive() -> None:
    assert not BLOCKLIST & set(WORDS)


def test_new_code_shape() -> None:
    code = new_code()
    number, *words = code.split("-")
    assert 0 <= int(number) < NUMBER_BOUND
    assert str(int(number)) == number
    assert len(words) == WORDS_PER_CODE
    assert all(word in WORDS for word in words)
    assert is_valid_code(code)
    assert normalize_code(code) == code


def test_new_codes_differ() -> None:
    # 200 draws from ~2**37 codes collide with probability ~1e-7.
    codes = {new_code() for _ in range(200)}
    assert len(codes) == 200


def test_normalize_trims_and_lowercases() -> None:
    assert normalize_code("  7-Orbit-LANTERN-velvet\n") == "7-orbit-lantern-velvet"


def test_is_valid_code_accepts_case_and_spaces() -> None:
    assert is_valid_code(" 7-ORBIT-lantern-Velvet ")
    assert is_valid_code("0-ant-bee")


def test_is_valid_code_rejects_other_shapes() -> None:
    for bad in [
        "",
        "7",
        "7-orbit",
        "orbit-lantern-velvet",
        "1000-orbit-lantern-velvet",
        "7--orbit-lantern",
        "7-orbit-lantern-",
        "7 orbit lantern velvet",
        "7-orbit-lan7ern-velvet",
        "7-örbit-lantern-velvet",
        "-7-orbit-lantern",
    ]:
        assert not is_valid_code(bad), bad


@given(st.text())
def test_normalize_is_idempotent(text: str) -> None:
    once = normalize_code(text)
    assert normalize_code(once) == once


@given(st.integers(0, NUMBER_BOUND - 1), st.lists(st.sampled_from(WORDS), min_size=2, max_size=5))
def test_codes_of_list_words_are_valid_in_any_case(number: int, words: list[str]) -> None:
    code = "-".join([str(number), *words])
    assert is_valid_code(code)
    assert is_valid_code(f"  {code.upper()}\t")
