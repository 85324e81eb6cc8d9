"""The one-byte-per-file verdict map behaves as the dict it replaced."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.protocol.verdicts import MAX_FILE_ID, Verdicts, verdict_in

VERDICT = st.sampled_from(["verified", "mismatch", "io_error"])
OPS = st.lists(st.tuples(st.booleans(), st.integers(0, 300), VERDICT), max_size=200)


@given(OPS)
def test_it_matches_a_dict_under_any_sets_and_deletes(ops: list[tuple[bool, int, str]]) -> None:
    model: dict[int, str] = {}
    verdicts = Verdicts()
    for is_set, file_id, verdict in ops:
        if is_set:
            model[file_id] = verdict
            verdicts[file_id] = verdict  # type: ignore[assignment]
        elif file_id in model:
            del model[file_id]
            del verdicts[file_id]
        else:
            with pytest.raises(KeyError):
                del verdicts[file_id]
        assert verdicts == model
        letters = verdicts.letters(301)
        assert [verdict_in(letters, i) for i in range(302)] == [model.get(i) for i in range(302)]
        assert len(verdicts) == len(model)
        assert list(verdicts) == sorted(model)
        for kind in ("verified", "mismatch", "io_error"):
            assert verdicts.count(kind) == sum(1 for v in model.values() if v == kind)  # type: ignore[arg-type]


def test_missing_and_out_of_range_ids() -> None:
    verdicts = Verdicts()
    verdicts[3] = "verified"
    assert 3 in verdicts and 2 not in verdicts and 4 not in verdicts and -1 not in verdicts and "3" not in verdicts
    assert verdicts.get(2) is None and verdicts.get(-1) is None and verdicts[3] == "verified"
    with pytest.raises(KeyError):
        verdicts[-1] = "verified"
    with pytest.raises(KeyError):
        verdicts[MAX_FILE_ID + 1] = "verified"
    with pytest.raises(KeyError):
        verdicts[0] = "lost"  # type: ignore[assignment]
    assert dict(verdicts) == {3: "verified"}


def test_it_costs_a_byte_per_file() -> None:
    verdicts = Verdicts()
    for file_id in range(100_000):
        verdicts[file_id] = "verified"
    assert len(verdicts._letters) == 100_000 and verdicts.count("verified") == 100_000


def test_the_letters_cover_every_file_asked_for() -> None:
    verdicts = Verdicts()
    verdicts[1] = "mismatch"
    verdicts[2] = "io_error"
    assert verdicts.letters(5) == "-me--"
    assert verdicts.letters(2) == "-m"
    assert verdict_in("-me--", 1) == "mismatch" and verdict_in("-me--", 0) is None and verdict_in("-m", 7) is None
