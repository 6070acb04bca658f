"""A claim restricted to a long ``names=`` list (the daemon passes every enabled source).

Past 65,535 names every PostgreSQL claim failed (one bind parameter a name), past
32,766 every SQLite one; a list that long is applied to the candidates in Python.
"""

from __future__ import annotations

from datetime import datetime, timezone

from ingest.config import SourceConfig
from ingest.store import Store
from ingest.store.leases import NAMES_IN_SQL, Politeness

POLITE = Politeness(concurrency=2, delay=0.0)


def _clock() -> datetime:
    return datetime.now(timezone.utc)


def _claim(store: Store, names, limit: int = 10):
    return store.claim(owner="w", limit=limit, lease_seconds=60, politeness=POLITE, clock=_clock, names=names)


def test_a_claim_among_70000_names_takes_only_the_named_sources(store_url):
    configs = [SourceConfig(name=f"s{i}", url=f"https://h{i}.example/feed") for i in range(30)]
    with Store.open(store_url) as store:
        store.sync_sources(configs)
        # 70,000 names, of which 10 exist: over both backends' bind-parameter limits
        names = [f"s{i}" for i in range(0, 30, 3)] + [f"absent{i}" for i in range(70_000)]
        leases = _claim(store, names, limit=30)
        assert sorted(lease.name for lease in leases) == sorted(f"s{i}" for i in range(0, 30, 3))
        # the other 20 are still claimable by a claim without names
        assert len(_claim(store, None, limit=30)) == 20


def test_named_sources_behind_a_page_of_unnamed_due_ones_are_still_claimed(store_url):
    # the first candidate pages hold only sources outside names (all due, never polled,
    # lower ids): the claim must reach past them
    configs = [SourceConfig(name=f"x{i:04d}", url=f"https://x{i}.example/feed") for i in range(400)]
    configs.append(SourceConfig(name="wanted", url="https://wanted.example/feed"))
    with Store.open(store_url) as store:
        store.sync_sources(configs)
        names = ["wanted"] + [f"absent{i}" for i in range(NAMES_IN_SQL + 1)]
        assert [lease.name for lease in _claim(store, names, limit=1)] == ["wanted"]
