"""ingest/memo.py: an LRU cache bounded by entries and by its keys' summed size."""

from __future__ import annotations

from ingest.memo import memo


def _counting():  # type: ignore[no-untyped-def]
    calls: list[str] = []

    @memo(entries=3, size=10)
    def shout(text: str, times: int = 1) -> str:
        calls.append(text)
        return text.upper() * times

    return shout, calls


def test_a_hit_is_not_computed_again_and_other_arguments_are_other_keys() -> None:
    shout, calls = _counting()
    assert shout("ab") == "AB" and shout("ab") == "AB" and shout("ab", 2) == "ABAB"
    assert calls == ["ab", "ab"] and shout.cache_info() == (2, 4)


def test_entries_are_evicted_least_recently_used_first() -> None:
    shout, calls = _counting()
    for text in ("a", "b", "c"):
        shout(text)
    shout("a")  # a is the most recent now
    shout("d")  # evicts b
    calls.clear()
    shout("a"), shout("c"), shout("d")
    assert calls == []
    shout("b")
    assert calls == ["b"] and shout.cache_info()[0] == 3


def test_long_keys_take_fewer_places_and_one_over_the_bound_is_never_held() -> None:
    shout, calls = _counting()
    shout("aaaa"), shout("bbbb"), shout("cccc")  # 12 characters > 10: the oldest goes
    assert shout.cache_info() == (2, 8)
    shout("x" * 11)
    assert shout.cache_info() == (2, 8)
    shout("x" * 11)
    assert calls.count("x" * 11) == 2
    shout.cache_clear()
    assert shout.cache_info() == (0, 0)
