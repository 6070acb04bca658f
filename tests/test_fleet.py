"""Several workers on one PostgreSQL store: leased polls, fenced writes, one cluster per story.

Real daemons (``python -m ingest -c FILE``, ``start_daemon``) and ``--once`` runs against
a fresh PostgreSQL schema and a recording loopback server; the server's request log is
the judge of double polls. Where a test needs an order of events it holds a route at
the server (a poll that hangs, copies released together) and waits on conditions.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import func, select, text

from ingest.store import Store
from ingest.store import schema as t

from .conftest import ROOT, wait_for, write_config_file
from .loopback import Handler, Loopback, rss

VOCABULARY = ("harbour council budget river museum railway storm ferry school bridge market port tunnel "
              "minister court hospital airport festival league station").split()


def _text(seed: int, words: int = 90) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(VOCABULARY) + str(rng.randrange(10_000)) for _ in range(words))


def _config(directory: Path, store_url: str, urls: list[str], *, interval: str = "6s", lease: str = "10s",
            name: str = "ingest.toml", workers: int = 4) -> Path:
    """Sources f0, f1 ... on ``urls``; no politeness delay (one loopback host stands for many)."""
    return write_config_file(
        directory, name=name, store_url=store_url, fetch={"per_host_delay": 0, "per_host_concurrency": 64},
        daemon={"lease": lease, "workers": workers, "processes": 1, "shutdown_timeout": "10s"},
        defaults={"interval": interval}, sources={f"f{i}": url for i, url in enumerate(urls)},
    )


def _syndicated(server: Loopback, stories: int, copies: int, per_feed: int) -> list[str]:
    """``stories`` groups of ``copies`` feeds; the feeds of a group carry the same ``per_feed`` stories."""
    urls = []
    for group in range(stories):
        for copy in range(copies):
            items = [(f"g{group}-c{copy}-s{n}", f"https://site{copy}.example/{group}/{n}", f"story {group}-{n}",
                      _text(group * 100 + n)) for n in range(per_feed)]
            path = f"/g{group}c{copy}"
            server.respond(path, rss(items), headers={"Content-Type": "application/rss+xml"})
            urls.append(server.url(path))
    return urls


def _counts(store_url: str) -> tuple[int, int, int]:
    with Store.open(store_url) as store, store.engine.connect() as conn:
        rows = conn.execute(select(t.items.c.source_id, t.items.c.identity)).all()
        clusters = conn.execute(select(func.count()).select_from(t.clusters)).scalar_one()
    return len(rows), len(set(rows)), clusters


def _sql(store_url: str, query: str) -> object:
    """The first value of the first row ``query`` gives (None without rows), by plain SQL."""
    with Store.open(store_url) as store, store.engine.connect() as conn:
        return conn.execute(text(query)).scalar()


def _once(config: Path, *args: str) -> subprocess.Popen:
    """``ingest --once -c CONFIG ARGS`` started in the background (stdout and stderr piped)."""
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    return subprocess.Popen([sys.executable, "-m", "ingest", "--once", "-c", str(config), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _double_polls(server: Loopback, within: float) -> list[tuple[str, float]]:
    by_path: dict[str, list[float]] = {}
    for seen in server.hits():
        by_path.setdefault(seen.path, []).append(seen.at)
    return [(path, b - a) for path, times in by_path.items() for a, b in zip(sorted(times), sorted(times)[1:])
            if b - a < within]


# about 60 s by design (the acceptance run of issue 14): not marked slow, so the
# README's command, and CI, run it
def test_three_daemons_one_killed_poll_every_source_once_per_interval(
    tmp_path: Path, postgres_url: str, server: Loopback, start_daemon,
) -> None:
    """The acceptance run: 60 sources (20 stories syndicated three ways, 4 items each), interval 6 s,
    lease 10 s; one of three daemons is killed at 12 s, the others stop at 60 s."""
    urls = _syndicated(server, stories=20, copies=3, per_feed=4)
    config = _config(tmp_path, postgres_url, urls)
    daemons = [start_daemon(config) for _ in range(3)]
    started = time.monotonic()
    # the run's length is the test: ten intervals, the kill after two
    time.sleep(12)
    daemons[0].proc.send_signal(signal.SIGKILL)
    time.sleep(60 - (time.monotonic() - started))
    for daemon in daemons[1:]:
        daemon.proc.send_signal(signal.SIGTERM)
    codes = [daemon.proc.wait(30) for daemon in daemons[1:]]
    end = time.monotonic()
    assert codes == [0, 0], [daemon.log for daemon in daemons]
    assert _double_polls(server, 3.0) == []
    # every source fetched again in the last 20 s of the 60 s run
    recent = {seen.path for seen in server.hits() if started + 40 <= seen.at <= end}
    assert recent == {u.split(str(server.port), 1)[1] for u in urls}
    assert _counts(postgres_url) == (240, 240, 80)
    for daemon in daemons:
        log = daemon.log
        assert "Traceback" not in log and "duplicate key" not in log, log


def test_a_paused_worker_is_fenced_out(tmp_path: Path, postgres_url: str, server: Loopback, start_daemon) -> None:
    """SIGSTOP a daemon mid-poll past its lease; another takes the source; after SIGCONT the first writes nothing."""
    items = [(f"s{n}", f"https://site.example/{n}", f"story {n}", _text(n)) for n in range(5)]
    server.feed("/feed", items)
    held = server.hold("/feed", first=1)  # the first poll hangs until the test lets it go
    config = _config(tmp_path, postgres_url, [server.url("/feed")], interval="1h", lease="3s")
    a = start_daemon(config)
    try:
        held.wait(timeout=30)
        a.proc.send_signal(signal.SIGSTOP)
        # past the 3 s lease (on the store's clock): no heartbeat comes from a stopped process
        wait_for(lambda: _sql(postgres_url, "SELECT lease_until <= now() FROM sources WHERE name = 'f0'"), 10,
                 "a's lease to run out")
        b = start_daemon(config)
        b.wait_for(lambda: _counts(postgres_url)[0] >= 5, 30, "b's poll")
        assert _counts(postgres_url) == (5, 5, 5), b.log
        held.release()
        a.proc.send_signal(signal.SIGCONT)
        wait_for(lambda: "lease on source 'f0' lost" in a.log, 20, "a to notice its lost lease", explain=lambda: a.log)
        for daemon in (a, b):
            daemon.proc.send_signal(signal.SIGTERM)
        assert [daemon.proc.wait(30) for daemon in (a, b)] == [0, 0]
    finally:
        held.release()
        if a.proc.poll() is None:
            a.proc.send_signal(signal.SIGCONT)  # a stopped process ignores SIGTERM until continued
    assert "lease on source 'f0' lost" in a.log
    assert _counts(postgres_url) == (5, 5, 5)
    with Store.open(postgres_url) as store:
        state = store.source_state("f0")
        assert state is not None and state.poll_count == 1  # b's poll; a's record was refused


def test_a_feed_slower_than_two_leases_is_polled_once(
    tmp_path: Path, postgres_url: str, server: Loopback, start_daemon,
) -> None:
    """Heartbeats keep the lease of a poll that takes 2.5 leases: the other daemon never polls it meanwhile."""
    def slow(h: Handler) -> None:
        time.sleep(7.5)  # the test: an answer slower than two leases of 3 s
        h.reply(200, rss([("s1", "https://site.example/1", "one", _text(1))]), {"Content-Type": "application/rss+xml"})

    server.route("/slow", slow)
    config = _config(tmp_path, postgres_url, [server.url("/slow")], interval="1h", lease="3s")
    daemons = [start_daemon(config) for _ in range(2)]
    # the poll is over when it is recorded (its item is stored before that)
    daemons[0].wait_for(lambda: _sql(postgres_url, "SELECT poll_count FROM sources WHERE name = 'f0'") == 1, 30,
                        "the slow poll")
    for daemon in daemons:
        daemon.proc.send_signal(signal.SIGTERM)
    assert [daemon.proc.wait(30) for daemon in daemons] == [0, 0]
    assert len(server.hits("/slow")) == 1, [daemon.log for daemon in daemons]
    assert _counts(postgres_url) == (1, 1, 1)


def test_copies_released_to_four_workers_at_once_end_in_one_cluster(
    tmp_path: Path, postgres_url: str, server: Loopback,
) -> None:
    """No feed is answered before all four workers have asked, so the copies race into the store."""
    copies, stories = 4, 10
    for copy in range(copies):
        server.feed(f"/c{copy}", [(f"c{copy}-s{n}", f"https://site{copy}.example/{n}", f"story {n}", _text(500 + n))
                                  for n in range(stories)])
    paths = [f"/c{copy}" for copy in range(copies)]
    held = server.hold(*paths)
    runs = []
    for copy in range(copies):
        # four workers with one source each (the same source list: the rest disabled)
        config = _config(tmp_path, postgres_url, [server.url(p) for p in paths], name=f"w{copy}.toml", workers=1)
        runs.append(_once(config, "--source", f"f{copy}", "--log-level", "error"))
    try:
        held.wait(copies, timeout=60)
    finally:
        held.release()
    outcomes = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [0] * copies, outcomes
    assert _counts(postgres_url) == (copies * stories, copies * stories, stories)


# 15-20 s: the acceptance check of issues 14 and 15 (two --once at once), so not slow
def test_two_once_runs_at_once_store_every_item_once(tmp_path: Path, postgres_url: str, server: Loopback) -> None:
    feeds, per_feed = 20, 50
    for i in range(feeds):
        # every story also appears in the next feed: copies race between the two runs too
        server.feed(f"/f{i}", [(f"g{i}-{n}", f"https://example.org/g{i}-{n}", f"story {i}-{n}", _text(i * 1000 + n))
                               for n in range(per_feed)]
                    + [(f"c{i}", f"https://example.org/c{i}", f"copy of {(i + 1) % feeds}-0",
                        _text(((i + 1) % feeds) * 1000))])
    config = _config(tmp_path, postgres_url, [server.url(f"/f{i}") for i in range(feeds)], interval="15m")
    runs = [_once(config, "--json", "--log-level", "error") for _ in range(2)]
    outcomes = [run.communicate(timeout=300) for run in runs]
    for run, (_out, err) in zip(runs, outcomes):
        assert run.returncode == 0, err
        assert "duplicate key" not in err and "Traceback" not in err, err
    # every source polled by one run or both (a run that starts after the other left polls again, as cron
    # expects), each poll under its own lease
    polled = [json.loads(out)["sources"] for out, _ in outcomes]
    elsewhere = [len(json.loads(out)["polled_elsewhere"]) for out, _ in outcomes]
    assert sum(polled) + sum(elsewhere) == 2 * feeds
    assert all(1 <= len(server.hits(f"/f{i}")) <= 2 for i in range(feeds))
    assert _counts(postgres_url) == (feeds * (per_feed + 1), feeds * (per_feed + 1), feeds * per_feed)


def test_once_next_to_a_running_daemon_leaves_it_what_it_polled(
    tmp_path: Path, postgres_url: str, server: Loopback, start_daemon,
) -> None:
    """`--once` against a store a daemon uses: sources the daemon polled moments ago are not fetched again."""
    urls = _syndicated(server, stories=4, copies=2, per_feed=2)
    config = _config(tmp_path, postgres_url, urls, interval="1h")
    daemon = start_daemon(config)
    # every source polled by the daemon, and each poll recorded
    daemon.wait_for(lambda: _sql(postgres_url, "SELECT count(*) FROM sources WHERE poll_count >= 1") == len(urls),
                    30, "the daemon's polls")
    done = _once(config, "--json")
    out, err = done.communicate(timeout=120)
    assert done.returncode == 0, err
    summary = json.loads(out)
    assert summary["sources"] == 0 and len(summary["polled_elsewhere"]) == len(urls)
    assert len(server.hits()) == len(urls)  # one fetch per source: the daemon's
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(30) == 0, daemon.log
