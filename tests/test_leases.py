"""store/leases.py: claims, per-host politeness, heartbeats, fenced completion, dead workers' leases.

On SQLite and on PostgreSQL (``store_url``); lease times run on the real clock (they
coordinate processes), schedule times on the clock given.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest

from ingest.config import SourceConfig
from ingest.models import PollRecord
from ingest.store import Store
from ingest.store.leases import Politeness

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)
FREE = Politeness(concurrency=8, delay=0.0)


def clock() -> datetime:
    return NOW


@pytest.fixture
def store(store_url: str):
    with Store.open(store_url) as opened:
        yield opened


def _sync(store: Store, hosts: dict[str, int]) -> None:
    """``count`` sources on each loopback host (host -> count)."""
    store.sync_sources(
        SourceConfig(name=f"{host}-{n}", url=f"http://{host}:8080/feed{n}") for host, count in hosts.items()
        for n in range(count)
    )


def _claim(store: Store, owner: str = "w1", limit: int = 10, politeness: Politeness = FREE, **kw):
    return store.claim(owner=owner, limit=limit, lease_seconds=30, politeness=politeness, clock=clock, **kw)


def test_a_source_is_claimed_by_one_worker_until_its_lease_is_done(store: Store) -> None:
    _sync(store, {"127.0.0.2": 3})
    first = _claim(store, "w1")
    assert sorted(lease.name for lease in first) == ["127.0.0.2-0", "127.0.0.2-1", "127.0.0.2-2"]
    assert _claim(store, "w2") == []  # all leased
    assert store.complete(first[0], first[0].source_id, PollRecord(at=NOW, ok=True, next_poll_in=0), clock=clock)
    again = _claim(store, "w2")  # done and due again at once (next_poll_in 0): claimable
    assert [lease.name for lease in again] == [first[0].name]


def test_never_polled_first_then_the_most_overdue(store: Store) -> None:
    _sync(store, {"127.0.0.2": 3})
    leases = _claim(store)
    for lease, delay in zip(sorted(leases, key=lambda lease: lease.name), (-60, -600, 3600)):
        store.complete(lease, lease.source_id, PollRecord(at=NOW, ok=True, next_poll_in=delay), clock=clock)
    store.sync_sources([SourceConfig(name=f"127.0.0.2-{n}", url=f"http://127.0.0.2:8080/feed{n}") for n in range(3)]
                       + [SourceConfig(name="new", url="http://127.0.0.3:8080/feed")])
    order = [lease.name for lease in _claim(store, limit=10)]
    assert order == ["new", "127.0.0.2-1", "127.0.0.2-0"]  # -2 is not due for an hour


def test_per_host_concurrency_and_delay_hold_across_workers(store: Store) -> None:
    _sync(store, {"127.0.0.2": 5, "127.0.0.3": 1})
    two = Politeness(concurrency=2, delay=0.0)
    first = _claim(store, "w1", politeness=two)
    assert sorted(lease.name for lease in first) == ["127.0.0.2-0", "127.0.0.2-1", "127.0.0.3-0"]
    assert _claim(store, "w2", politeness=two) == []  # the host has its two polls in flight
    # with a delay: one source of a host per claim, and none until the delay has passed
    store.sync_sources([SourceConfig(name=f"d{n}", url=f"http://127.0.0.4:8080/f{n}") for n in range(3)])
    spaced = Politeness(concurrency=8, delay=0.5)
    got = _claim(store, "w1", politeness=spaced, names=["d0", "d1", "d2"])
    assert len(got) == 1 and _claim(store, "w2", politeness=spaced, names=["d0", "d1", "d2"]) == []
    time.sleep(0.6)  # the delay is what is tested
    assert len(_claim(store, "w2", politeness=spaced, names=["d0", "d1", "d2"])) == 1


def test_a_lost_lease_fences_the_poll_record_and_heartbeats_keep_live_ones(store: Store) -> None:
    _sync(store, {"127.0.0.2": 2})
    a, b = _claim(store, "w1")
    assert store.heartbeat([a, b], 30, clock) == {a.token, b.token}
    store.release(a)  # as if it had run out and another worker had taken it
    taken = _claim(store, "w2")
    assert [lease.name for lease in taken] == [a.name]
    assert store.heartbeat([a], 30, clock) == set()
    assert not store.complete(a, a.source_id, PollRecord(at=NOW, ok=True, next_poll_in=60), clock=clock)
    assert store.source_state(a.name).poll_count == 0  # nothing of the fenced poll was written


def test_a_retry_after_pushes_the_whole_host_back(store: Store) -> None:
    _sync(store, {"127.0.0.2": 2})
    (a,) = _claim(store, limit=1, names=["127.0.0.2-0"])
    store.complete(a, a.source_id, PollRecord(at=NOW, ok=False, next_poll_in=600, error="fetch: HTTP 429",
                                              error_kind="http_status", host_retry_after=3600), clock=clock)
    assert _claim(store, "w2") == []  # the other feed of that host waits too


def test_leases_of_dead_workers_on_this_host_are_released(store: Store) -> None:
    _sync(store, {"127.0.0.2": 2})
    _claim(store, "vm:4242:once", names=["127.0.0.2-0"])
    _claim(store, "vm:7:once", names=["127.0.0.2-1"])
    _claim(store, "other-host:4242", names=[])
    released = store.release_dead("vm", alive=lambda pid: pid == 7)
    assert released == ["vm:4242:once"]
    assert [lease.name for lease in _claim(store, "w2")] == ["127.0.0.2-0"]  # 4242's source is free again


def test_a_disabled_or_inactive_source_is_never_claimed(store: Store) -> None:
    _sync(store, {"127.0.0.2": 2})
    (gone,) = _claim(store, names=["127.0.0.2-0"])
    store.complete(gone, gone.source_id, PollRecord(at=NOW, ok=False, next_poll_in=0, error="fetch: HTTP 410 Gone",
                                                    error_kind="gone", disabled_reason="fetch: HTTP 410 Gone"),
                   clock=clock)
    store.sync_sources([SourceConfig(name="127.0.0.2-0", url="http://127.0.0.2:8080/feed0")])  # -1 leaves the config
    assert _claim(store, "w2") == []
    assert _claim(store, "w2", due_only=False) == []
