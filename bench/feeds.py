"""Feeds out, search, retention and re-clustering at a few thousand items.

    python -m bench.feeds [--sources 40] [--items 50] [--postgres URL]

Writes the synthetic corpus (bench.gen, full-content feeds) as local feed files,
ingests it once into a fresh SQLite store (and a fresh PostgreSQL schema when
``--postgres`` is given), then times the library calls behind ``ingest export``,
the served feed (latest ``feed_size`` clusters), ``ingest search``, ``ingest prune
--dry-run`` and ``ingest recluster --dry-run``. Prints a table and writes
bench/results/feeds.json. Bounded: the default is 2,000 items (a few minutes at most).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from bench.gen import generate
from ingest import dedup, export, recluster
from ingest.config import load
from ingest.fetch import Fetcher
from ingest.pipeline import Deps, canonical_policy
from ingest.worker import run_once
from ingest.store import Store, normalize_url

RESULTS = Path(__file__).resolve().parent / "results" / "feeds.json"


def _timed(fn):  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def build(directory: Path, sources: int, items: int, store_url: str) -> Path:
    """Feed files and a config over them; returns the config path."""
    corpus = generate(sources, items, full_text_share=0.0)
    lines = [f'[store]\nurl = "{store_url}"\n']
    for source in range(sources):
        path = directory / f"s{source:04d}.xml"
        path.write_bytes(corpus.files[corpus.feed_path(source)].replace(b"{port}", b"8080"))
        lines.append(f'[[sources]]\nname = "s{source:04d}"\nurl = "{path}"\n')
    config = directory / "bench.toml"
    config.write_text("\n".join(lines), encoding="utf-8")
    return config


def measure(config_path: Path, queries: int = 30) -> dict[str, float | int | str]:
    """Ingest once, then time export, served feed, search, prune and recluster dry runs."""
    config = load(config_path)
    policy = canonical_policy(config.dedup.canonical)
    out: dict[str, float | int | str] = {}
    with Store.open(config.store.url, dedup.scheme_for(config.dedup).as_dict()) as store:
        fetcher = Fetcher(config.fetch)
        report, out["ingest_s"] = _timed(lambda: run_once(Deps(config, store, fetcher)))
        fetcher.close()
        counts = store.counts()
        out.update(items=counts["items"], clusters=counts["clusters"])
        info = export.FeedInfo(id=f"urn:uuid:{store.store_uid()}", title="bench", updated=datetime.now(timezone.utc))
        stories, out["stories_all_s"] = _timed(lambda: store.stories())
        for fmt in ("atom", "jsonfeed"):
            body, out[f"render_{fmt}_all_s"] = _timed(lambda: export.render(stories, fmt, info))
            out[f"{fmt}_bytes"] = len(body.encode("utf-8"))
        _, out["served_feed_50_s"] = _timed(
            lambda: export.render(store.stories(limit=config.daemon.feed_size), "atom", info))

        rng = random.Random(1)
        texts = [i.text for i in store.items(limit=500)]
        words = [w for t in texts for w in t.split() if w.isalpha() and len(w) > 5]
        latencies = []
        for _ in range(queries):
            query = " ".join(rng.sample(words, rng.choice((1, 1, 2))))
            _, took = _timed(lambda: store.search(query))
            latencies.append(took * 1000)
        out["search_median_ms"] = round(statistics.median(latencies), 2)
        out["search_max_ms"] = round(max(latencies), 2)

        dates = sorted(i.published_at or i.fetched_at for i in store.items())
        counts_, out["prune_dry_run_s"] = _timed(
            lambda: store.prune(dates[len(dates) // 2], policy, dry_run=True))
        out["prune_would_drop"] = counts_["items"]

        history, out["history_read_s"] = _timed(store.history)
        old = {i.item_id: i.cluster_id for i in history}
        for threshold in (config.dedup.threshold, 0.99):
            cfg = recluster.with_threshold(config.dedup, threshold)
            with tempfile.TemporaryDirectory() as scratch_dir:
                with Store.open(f"sqlite:///{scratch_dir}/replay.db") as scratch:
                    result, took = _timed(lambda: recluster.replay(history, scratch, cfg, policy))
            diff = recluster.compare(old, result.labels)
            out[f"recluster_{threshold}_s"] = round(took, 2)
            out[f"recluster_{threshold}_merges_splits"] = f"{diff.merges}/{diff.splits}"
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=int, default=40)
    parser.add_argument("--items", type=int, default=50, help="entries per source")
    parser.add_argument("--postgres", metavar="URL", help="also measure on a fresh schema of this PostgreSQL")
    args = parser.parse_args(argv)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-feeds-") as tmp:
        directory = Path(tmp)
        backends = {"sqlite": f"sqlite:///{directory / 'store.db'}"}
        schema = None
        if args.postgres:
            import sqlalchemy as sa

            schema = f"bench_{uuid.uuid4().hex[:10]}"
            admin = sa.create_engine(normalize_url(args.postgres))
            with admin.begin() as conn:
                conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
            sep = "&" if "?" in args.postgres else "?"
            backends["postgresql"] = f"{args.postgres}{sep}options=-csearch_path%3D{schema}"
        try:
            for name, url in backends.items():
                sub = directory / name
                sub.mkdir()
                results[name] = measure(build(sub, args.sources, args.items, url))
        finally:
            if schema:
                with admin.begin() as conn:
                    conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
                admin.dispose()
    keys = list(next(iter(results.values())))
    print(f"{'measure':<34}" + "".join(f"{b:>14}" for b in results))
    for key in keys:
        print(f"{key:<34}" + "".join(f"{results[b][key]!s:>14}" for b in results))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"sources": args.sources, "items_per_source": args.items, "results": results},
                                  indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
