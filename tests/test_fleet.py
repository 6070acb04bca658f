"""Several workers on one PostgreSQL store: they never store an item twice or split a story."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

from sqlalchemy import func, select

from ingest.store import Store
from ingest.store import schema as t

from .conftest import ROOT, FeedServer

VOCABULARY = ("harbour council budget river museum railway storm ferry school bridge market port tunnel "
              "minister court hospital airport festival league station").split()


def _text(seed: int, words: int = 90) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(VOCABULARY) + str(rng.randrange(10_000)) for _ in range(words))


def _config(directory: Path, store_url: str, server: FeedServer, feeds: int) -> Path:
    lines = [f'[store]\nurl = "{store_url}"\n[fetch]\nper_host_delay = 0\nper_host_concurrency = 8\n']
    lines += [f'[[sources]]\nname = "f{i}"\nurl = "{server.url(f"/f{i}")}"\n' for i in range(feeds)]
    path = directory / "ingest.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def test_two_once_runs_at_once_store_every_item_once(tmp_path: Path, postgres_url: str, feed_server: FeedServer) -> None:
    feeds, per_feed = 20, 50
    for i in range(feeds):
        # every story also appears in the next feed: copies race between the two runs too
        feed_server.feed(f"/f{i}", [(f"g{i}-{n}", f"story {i}-{n}", _text(i * 1000 + n)) for n in range(per_feed)]
                         + [(f"c{i}", f"copy of {(i + 1) % feeds}-0", _text(((i + 1) % feeds) * 1000))])
    config = _config(tmp_path, postgres_url, feed_server, feeds)
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    runs = [
        subprocess.Popen([sys.executable, "-m", "ingest", "--once", "-c", str(config), "--log-level", "error"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for _ in range(2)
    ]
    outcomes = [run.communicate(timeout=300) for run in runs]
    for run, (_out, err) in zip(runs, outcomes):
        assert run.returncode == 0, err
        assert "duplicate key" not in err and "Traceback" not in err, err
    with Store.open(postgres_url) as store, store.engine.connect() as conn:
        identities = conn.execute(select(t.items.c.source_id, t.items.c.identity)).all()
        assert len(identities) == len(set(identities)) == feeds * (per_feed + 1)
        # each copy sits in its original's cluster: one cluster per story
        assert conn.execute(select(func.count()).select_from(t.clusters)).scalar_one() == feeds * per_feed
