"""When to poll a source next: interval, feed hints and error backoff. Pure."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from ingest.config import FetchConfig


def next_poll(
    now: datetime,
    interval: float,
    cfg: FetchConfig,
    *,
    consecutive_errors: int = 0,
    retry_after: float | None = None,
    max_age: float | None = None,
    ttl: float | None = None,
    rng: random.Random | None = None,
) -> datetime:
    """The next poll time after a poll at ``now``.

    On success: the source's interval, raised to the feed's own hints (``Cache-Control:
    max-age``, RSS ``<ttl>``) but never beyond ``max_interval``. After errors:
    exponential backoff from ``backoff_base``, doubling per consecutive error, capped at
    ``backoff_max``, with +-20% jitter so failing sources spread out; a ``Retry-After``
    from a 429/503 is a floor that the jitter never undercuts.
    """
    rng = rng or random.Random()
    if consecutive_errors > 0:
        delay = min(cfg.backoff_max, cfg.backoff_base * 2 ** (consecutive_errors - 1))
        delay = max(delay, interval) * rng.uniform(0.8, 1.2)
        delay = min(delay, cfg.backoff_max)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return now + timedelta(seconds=delay)
    hint = max(max_age or 0.0, ttl or 0.0)
    delay = max(interval, min(hint, cfg.max_interval))
    if retry_after is not None:
        delay = max(delay, retry_after)
    return now + timedelta(seconds=delay)
