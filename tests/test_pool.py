"""ingest.pool: forked, niced workers for the CPU-bound stages, and a run through them.

A run with a process pool stores the same items, texts and clusters as a run in one
process, boilerplate learned on the way included (demo feeds served from loopback).
"""

from __future__ import annotations

import gc
import os
import weakref
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from xml.sax.saxutils import escape

from sqlalchemy import text

from ingest.config import from_dict
from ingest.dedup import scheme_for
from ingest.fetch import Fetcher
from ingest.pipeline import Deps
from ingest.pool import AHEAD, WORKER_NICE, cpu_pool, in_order
from ingest.store import Store
from ingest.worker import run_once

from .conftest import DEMO_RUN_SOURCES, config_values, serve_demo_feed
from .loopback import Item, Loopback, rss


def _run_in_process(server: Loopback, tmp_path: Path, processes: int, extra_feeds: dict[str, bytes]):
    """One in-process run_once over the demo sources (+ extra feeds); (stored items, cluster memberships)."""
    urls = {name: serve_demo_feed(server, name) for name in DEMO_RUN_SOURCES}
    for name, body in extra_feeds.items():
        server.respond(f"/{name}.xml", body, headers={"Content-Type": "application/rss+xml"})
        urls[name] = server.url(f"/{name}.xml")
    raw = config_values(
        store_url=f"sqlite:///{tmp_path / f'p{processes}.db'}", sources=urls, fetch={"per_host_delay": 0},
        daemon={"workers": 1, "processes": processes},  # one polling thread: sources in config order
    )
    config = from_dict(raw, tmp_path / "ingest.toml")
    with Store.open(config.store.url, scheme_for(config.dedup).as_dict()) as store:
        fetcher = Fetcher(config.fetch)
        try:
            report = run_once(Deps(config, store, fetcher))
        finally:
            fetcher.close()
        assert not report.failed
        with store.engine.connect() as conn:
            rows = conn.execute(text(
                "SELECT s.name, i.guid, i.text, i.cluster_id FROM items i JOIN sources s ON s.id = i.source_id"
            )).all()
    items = {(source, guid): body for source, guid, body, _ in rows}
    members: dict[int, list[tuple[str, str]]] = {}
    for source, guid, _, cluster in rows:
        members.setdefault(cluster, []).append((source, guid))
    return items, sorted(sorted(m) for m in members.values())


def _boilerplate_feed(count: int) -> bytes:
    """A feed whose entries all end with the same promo paragraph (learned as boilerplate on the way)."""
    promo = "Subscribe to the Harbour Gazette morning briefing for the stories that matter to the coast, every day."
    items = [
        Item(
            guid=f"gazette-{n}", link=f"https://gazette.example/{n}", title=f"Harbour council notes, week {n}",
            published=datetime(2025, 3, 1 + n, 8, 0, tzinfo=timezone.utc),
            content="".join(f"<p>{escape(paragraph)}</p>" for paragraph in [
                f"The harbour council met for the {n}th time this season and heard {n * 3} complaints about moorings.",
                f"Councillor number {n} proposed {n + 2} new berths near the eastern breakwater, citing waiting lists.",
                promo,
            ]),
        )
        for n in range(1, count + 1)
    ]
    return rss(items, title="gazette", link="https://example.org/")


def test_process_pool_gives_the_same_items_and_clusters_as_one_process(server: Loopback, tmp_path: Path):
    # 12 items, one task of CHUNK_ENTRIES (16): all are cleaned before the promo is learned
    # at the third, so the later ones are cleaned again as they are stored
    extra = {"gazette": _boilerplate_feed(12)}
    serial_items, serial_clusters = _run_in_process(server, tmp_path, 1, extra)
    pooled_items, pooled_clusters = _run_in_process(server, tmp_path, 2, extra)
    assert pooled_clusters == serial_clusters and any(len(c) > 1 for c in serial_clusters)
    assert pooled_items == serial_items
    gazette = [body for (source, _), body in serial_items.items() if source == "gazette"]
    # learned after its third sighting: the later items are stored without it, in both runs
    assert sum("Harbour Gazette morning briefing" not in body for body in gazette) >= 6


def test_cpu_pool_runs_work_in_other_processes_at_lower_priority():
    assert cpu_pool(1) is None
    pool = cpu_pool(2)
    assert pool is not None
    with pool:
        assert pool.submit(os.getpid).result() != os.getpid()
        # the store writer (this process) comes first when the CPUs are busy
        assert pool.submit(os.nice, 0).result() == min(19, os.nice(0) + WORKER_NICE)


def test_in_order_keeps_no_result_it_has_handed_back() -> None:
    """Memory stays bounded by the calls in flight: a feed of 10,000 linked pages must not hold them all."""
    class Prepared:
        pass

    made: list[weakref.ref] = []

    def prepare(i: int) -> list[Prepared]:
        item = Prepared()
        made.append(weakref.ref(item))
        return [item]

    most_alive = 0
    with ThreadPoolExecutor(2) as executor:
        for batch in in_order(executor, prepare, ((i,) for i in range(60)), max_batch=1):
            del batch
            gc.collect()
            most_alive = max(most_alive, sum(ref() is not None for ref in made))
    assert len(made) == 60 and most_alive <= AHEAD
