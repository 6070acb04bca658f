"""polling: next_delay and is_due; pure, with a fixed clock and a seeded rng."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest

from ingest.config import FetchConfig
from ingest.models import SourceState
from ingest.polling import JITTER, is_due, next_delay

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)
CFG = FetchConfig(backoff_base=60, backoff_max=3600, max_interval=7200)


def state(**kw: object) -> SourceState:
    return SourceState(source_id=1, name="s", url="http://127.0.0.1/feed", **kw)  # type: ignore[arg-type]


def delay(**kwargs) -> float:
    kwargs.setdefault("rng", random.Random(7))
    interval = kwargs.pop("interval", 900)
    cfg = kwargs.pop("cfg", CFG)
    return next_delay(interval, cfg, **kwargs)


def test_success_waits_the_interval():
    assert delay() == 900


@pytest.mark.parametrize("hints, expected", [
    ({"max_age": 1800}, 1800),  # the feed asks for less often: honoured
    ({"ttl": 3600}, 3600),
    ({"max_age": 1800, "ttl": 3600}, 3600),  # the larger hint wins
    ({"max_age": 60}, 900),  # a hint never makes us poll more often than the interval
    ({"ttl": 10 * 86400}, 7200),  # capped by max_interval
    ({"max_age": 0}, 900),
])
def test_feed_hints_are_a_lower_bound_capped_by_max_interval(hints, expected):
    assert delay(**hints) == expected


def test_interval_above_max_interval_is_kept():
    assert delay(interval=10000, ttl=50000) == 10000


def test_backoff_doubles_per_error_within_jitter_and_is_capped():
    for errors, base in [(1, 900), (2, 900), (4, 900), (5, 960), (6, 1920), (7, 3600), (30, 3600)]:
        # never sooner than the interval (900); 60 * 2**(n-1) beyond it; capped at 3600
        got = delay(consecutive_errors=errors)
        assert base * (1 - JITTER) <= got <= min(base * (1 + JITTER), 3600), (errors, got)


def test_backoff_jitter_spreads_sources_and_is_reproducible_with_a_seed():
    delays = [delay(consecutive_errors=6, rng=random.Random(seed)) for seed in range(50)]
    assert len(set(delays)) > 40  # spread out
    assert min(delays) >= 1920 * 0.8 and max(delays) <= 1920 * 1.2
    assert delay(consecutive_errors=6, rng=random.Random(3)) == delay(consecutive_errors=6, rng=random.Random(3))


@pytest.mark.parametrize("errors", [1, 3, 20])
def test_retry_after_is_a_floor_jitter_never_undercuts(errors):
    for seed in range(30):
        assert delay(consecutive_errors=errors, retry_after=3000, rng=random.Random(seed)) >= 3000


def test_retry_after_above_backoff_max_is_still_honoured_up_to_the_larger_cap():
    assert 5000 <= delay(consecutive_errors=1, retry_after=5000) <= 5000 * (1 + JITTER)  # above backoff_max=3600
    # a bogus year: capped at max(backoff_max, max_interval), then jittered above it
    assert 7200 <= delay(consecutive_errors=1, retry_after=10**9) <= 7200 * (1 + JITTER)


def test_retry_after_on_success_also_floors():
    assert 1200 <= delay(retry_after=1200) <= 1200 * (1 + JITTER)


def test_feeds_of_one_host_told_to_retry_later_do_not_come_back_in_lockstep():
    """Twenty feeds of one host answered 429 with the same Retry-After: their next polls spread out."""
    delays = [delay(consecutive_errors=1, retry_after=3000, rng=random.Random(seed)) for seed in range(20)]
    assert min(delays) >= 3000 and max(delays) - min(delays) > 300


def test_success_jitter_spreads_polls_within_the_given_share_of_the_interval():
    delays = [delay(jitter=0.1, rng=random.Random(seed)) for seed in range(50)]
    assert all(900 <= d <= 990 for d in delays) and max(delays) - min(delays) > 45


def test_is_due():
    assert is_due(state(), NOW)  # never polled
    later = state(next_poll_at=NOW + timedelta(seconds=1))
    assert not is_due(later, NOW) and is_due(later, NOW + timedelta(seconds=1))
    assert not is_due(state(disabled_reason="fetch: HTTP 410 Gone"), NOW)


def test_a_late_poll_is_pushed_once_by_a_share_of_its_lateness():
    """After an outage a catch-up polls thousands of sources in a burst: their next polls spread out."""
    on_time = [delay(rng=random.Random(seed)) for seed in range(50)]
    late = [delay(overdue=3600, rng=random.Random(seed)) for seed in range(50)]
    assert set(on_time) == {900}
    assert all(900 <= d <= 1800 for d in late) and max(late) - min(late) > 600  # spread over up to one interval
    assert all(900 <= delay(overdue=60, rng=random.Random(seed)) <= 960 for seed in range(20))


def test_hosts_with_more_feeds_than_their_delay_allows_are_named():
    from ingest.config import SourceConfig
    from ingest.polling import overloaded_hosts

    big = [SourceConfig(name=f"b{n}", url=f"https://big.example/f{n}", interval=900) for n in range(2000)]
    small = [SourceConfig(name=f"s{n}", url=f"https://small.example/f{n}", interval=900) for n in range(100)]
    ((host, feeds, wanted, most),) = overloaded_hosts(big + small, FetchConfig(per_host_delay=0.5))
    assert (host, feeds, most) == ("big.example", 2000, 2.0) and abs(wanted - 2000 / 900) < 1e-9
    assert overloaded_hosts(big, FetchConfig(per_host_delay=0)) == []  # no delay, no such limit

