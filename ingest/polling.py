"""When to poll a source next: interval, feed hints, error backoff, jitter. Pure.

Everything here takes the time as an argument (and a seeded ``random.Random`` for
jitter), so tests use a fixed clock.
"""

from __future__ import annotations

import random
from datetime import datetime
from typing import Iterable

from ingest.config import FetchConfig, SourceConfig
from ingest.models import SourceState
from ingest.urls import host_of, is_http_url

# Spread of the backoff delay, so sources that failed together do not retry together.
JITTER = 0.2


def next_delay(
    interval: float,
    cfg: FetchConfig,
    *,
    consecutive_errors: int = 0,
    retry_after: float | None = None,
    max_age: float | None = None,
    ttl: float | None = None,
    jitter: float = 0.0,
    overdue: float = 0.0,
    rng: random.Random | None = None,
) -> float:
    """Seconds from the end of a poll to the next one.

    On success: the source's interval, raised to the feed's own hints (``Cache-Control:
    max-age``, RSS ``<ttl>``) but never beyond ``max_interval``, plus a random share of
    up to ``jitter`` x interval so sources polled together drift apart. After errors:
    exponential backoff from ``backoff_base``, doubling per consecutive error, never
    sooner than the interval, capped at ``backoff_max``, with +-20% jitter so failing
    sources spread out. A ``Retry-After`` (429/503) is a floor that neither the jitter nor
    the cap undercuts, itself capped at ``max(backoff_max, max_interval)`` so a bogus
    header cannot silence a source for a year; above the floor the delay is jittered
    too (up to +20%), so the feeds of one host that answered 429 together do not come
    back in lockstep. A poll that started ``overdue`` seconds late (a catch-up after an
    outage) is pushed once by a random share of that lateness, up to one interval: the
    sources a catch-up polls in a burst come back spread over as long as they were late,
    not in the same burst one interval later.
    """
    rng = rng or random.Random()
    if retry_after is not None:
        retry_after = min(max(retry_after, 0.0), max(cfg.backoff_max, cfg.max_interval))
    if consecutive_errors > 0:
        delay = cfg.backoff_base * 2 ** min(consecutive_errors - 1, 62)
        delay = max(min(delay, cfg.backoff_max), interval) * rng.uniform(1 - JITTER, 1 + JITTER)
        delay = min(delay, cfg.backoff_max)
    else:
        hint = max(max_age or 0.0, ttl or 0.0)
        delay = max(interval, min(hint, cfg.max_interval))
        if jitter:
            delay += rng.uniform(0.0, jitter * interval)
        if overdue > 0:
            delay += rng.uniform(0.0, min(overdue, interval))
    if retry_after is not None and delay < retry_after:
        delay = retry_after * rng.uniform(1.0, 1.0 + JITTER)
    return delay


def overloaded_hosts(sources: Iterable[SourceConfig], cfg: FetchConfig) -> list[tuple[str, int, float, float]]:
    """Hosts whose feeds want more polls per second than ``per_host_delay`` allows: (host, feeds, wanted, most).

    With a delay of d seconds between two claims of one host's feeds, the host gets at
    most 1/d polls a second however many workers there are (2 at the default 0.5 s:
    1,800 feeds at 15 minutes); feeds beyond that are polled later and later.
    """
    if cfg.per_host_delay <= 0:
        return []
    wanted: dict[str, list[float]] = {}
    for source in sources:
        if source.enabled and is_http_url(source.url):
            wanted.setdefault(host_of(source.url), []).append(1.0 / source.interval)
    most = 1.0 / cfg.per_host_delay
    return sorted(((host, len(rates), sum(rates), most) for host, rates in wanted.items() if sum(rates) > most),
                  key=lambda row: -row[2])


def is_due(state: SourceState, now: datetime) -> bool:
    """True when ``state`` is not disabled and its ``next_poll_at`` has come (or was never set)."""
    if state.disabled_reason:
        return False
    return state.next_poll_at is None or state.next_poll_at <= now
