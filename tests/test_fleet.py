"""Several workers on one PostgreSQL store: leased polls, fenced writes, one cluster per story.

Real daemons (``python -m ingest -c FILE``) against a fresh PostgreSQL schema and a
recording loopback server; the server's request log is the judge of double polls.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from ingest.store import Store
from ingest.store import schema as t

from .conftest import ROOT, FeedServer
from .loopback import Handler, Loopback, rss

VOCABULARY = ("harbour council budget river museum railway storm ferry school bridge market port tunnel "
              "minister court hospital airport festival league station").split()


def _text(seed: int, words: int = 90) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(VOCABULARY) + str(rng.randrange(10_000)) for _ in range(words))


def _config(directory: Path, store_url: str, urls: list[str], *, interval: str = "6s", lease: str = "10s",
            name: str = "ingest.toml", workers: int = 4) -> Path:
    lines = [
        f'[store]\nurl = "{store_url}"\n[fetch]\nper_host_delay = 0\nper_host_concurrency = 64\n'
        f'[daemon]\nlease = "{lease}"\nworkers = {workers}\nprocesses = 1\nshutdown_timeout = "10s"\n'
        f'[defaults]\ninterval = "{interval}"\n'
    ]
    lines += [f'[[sources]]\nname = "f{i}"\nurl = "{url}"\n' for i, url in enumerate(urls)]
    path = directory / name
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


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


def _daemon(config: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("INGEST_CONFIG", None)
    return subprocess.Popen([sys.executable, "-m", "ingest", "-c", str(config)], cwd=config.parent, env=env,
                            stdout=subprocess.DEVNULL, stderr=log.open("w"))


def _stop_all(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _counts(store_url: str) -> tuple[int, int, int]:
    with Store.open(store_url) as store, store.engine.connect() as conn:
        rows = conn.execute(select(t.items.c.source_id, t.items.c.identity)).all()
        clusters = conn.execute(select(func.count()).select_from(t.clusters)).scalar_one()
    return len(rows), len(set(rows)), clusters


def _double_polls(server: Loopback, within: float) -> list[tuple[str, float]]:
    by_path: dict[str, list[float]] = {}
    for seen in server.hits():
        by_path.setdefault(seen.path, []).append(seen.at)
    return [(path, b - a) for path, times in by_path.items() for a, b in zip(sorted(times), sorted(times)[1:])
            if b - a < within]


@pytest.mark.slow
def test_three_daemons_one_killed_poll_every_source_once_per_interval(tmp_path: Path, postgres_url: str) -> None:
    """The acceptance run: 60 sources (20 stories syndicated three ways, 4 items each), interval 6 s,
    lease 10 s; one of three daemons is killed at 12 s, the others stop at 60 s."""
    with Loopback() as server:
        urls = _syndicated(server, stories=20, copies=3, per_feed=4)
        config = _config(tmp_path, postgres_url, urls)
        logs = [tmp_path / f"d{i}.log" for i in range(3)]
        procs = [_daemon(config, log) for log in logs]
        started = time.monotonic()
        try:
            time.sleep(12)
            procs[0].send_signal(signal.SIGKILL)
            time.sleep(60 - (time.monotonic() - started))
            for proc in procs[1:]:
                proc.send_signal(signal.SIGTERM)
            codes = [proc.wait(30) for proc in procs[1:]]
        finally:
            _stop_all(procs)
        end = time.monotonic()
        assert codes == [0, 0], [log.read_text() for log in logs]
        assert _double_polls(server, 3.0) == []
        # every source fetched again in the last 20 s of the 60 s run
        recent = {seen.path for seen in server.hits() if started + 40 <= seen.at <= end}
        assert recent == {u.split(str(server.port), 1)[1] for u in urls}
    assert _counts(postgres_url) == (240, 240, 80)
    for log in logs:
        text = log.read_text()
        assert "Traceback" not in text and "duplicate key" not in text, text


def test_a_paused_worker_is_fenced_out(tmp_path: Path, postgres_url: str) -> None:
    """SIGSTOP a daemon mid-poll past its lease; another takes the source; after SIGCONT the first writes nothing."""
    release = threading.Event()
    first_request = threading.Event()
    items = [(f"s{n}", f"https://site.example/{n}", f"story {n}", _text(n)) for n in range(5)]
    body = rss(items)

    def held(h: Handler) -> None:
        if not first_request.is_set():
            first_request.set()
            release.wait(60)  # the first poll hangs until the test lets it go
        h.reply(200, body, {"Content-Type": "application/rss+xml"})

    with Loopback() as server:
        server.route("/feed", held)
        config = _config(tmp_path, postgres_url, [server.url("/feed")], interval="1h", lease="3s")
        a_log, b_log = tmp_path / "a.log", tmp_path / "b.log"
        a = _daemon(config, a_log)
        procs = [a]
        try:
            assert first_request.wait(30), a_log.read_text()
            a.send_signal(signal.SIGSTOP)
            time.sleep(4)  # past the 3 s lease: no heartbeat from a stopped process
            b = _daemon(config, b_log)
            procs.append(b)
            deadline = time.monotonic() + 30
            while _counts(postgres_url)[0] < 5 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert _counts(postgres_url) == (5, 5, 5), b_log.read_text()
            release.set()
            a.send_signal(signal.SIGCONT)
            deadline = time.monotonic() + 20
            while "lease on source 'f0' lost" not in a_log.read_text() and time.monotonic() < deadline:
                time.sleep(0.2)
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            assert [proc.wait(30) for proc in procs] == [0, 0]
        finally:
            release.set()
            if a.poll() is None:
                a.send_signal(signal.SIGCONT)
            _stop_all(procs)
    assert "lease on source 'f0' lost" in a_log.read_text()
    assert _counts(postgres_url) == (5, 5, 5)
    with Store.open(postgres_url) as store:
        state = store.source_state("f0")
        assert state is not None and state.poll_count == 1  # b's poll; a's record was refused


def test_a_feed_slower_than_two_leases_is_polled_once(tmp_path: Path, postgres_url: str) -> None:
    """Heartbeats keep the lease of a poll that takes 2.5 leases: the other daemon never polls it meanwhile."""
    def slow(h: Handler) -> None:
        time.sleep(7.5)
        h.reply(200, rss([("s1", "https://site.example/1", "one", _text(1))]), {"Content-Type": "application/rss+xml"})

    with Loopback() as server:
        server.route("/slow", slow)
        config = _config(tmp_path, postgres_url, [server.url("/slow")], interval="1h", lease="3s")
        logs = [tmp_path / "a.log", tmp_path / "b.log"]
        procs = [_daemon(config, log) for log in logs]
        try:
            deadline = time.monotonic() + 30
            while _counts(postgres_url)[0] < 1 and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(1)
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            assert [proc.wait(30) for proc in procs] == [0, 0]
        finally:
            _stop_all(procs)
        assert len(server.hits("/slow")) == 1, [log.read_text() for log in logs]
    assert _counts(postgres_url) == (1, 1, 1)


def test_copies_released_to_four_workers_at_once_end_in_one_cluster(tmp_path: Path, postgres_url: str) -> None:
    """A barrier: no feed is answered before all four workers have asked, so the copies race into the store."""
    copies, stories = 4, 10
    barrier = threading.Barrier(copies, timeout=30)
    bodies = {
        f"/c{copy}": rss([(f"c{copy}-s{n}", f"https://site{copy}.example/{n}", f"story {n}", _text(500 + n))
                          for n in range(stories)])
        for copy in range(copies)
    }

    def together(h: Handler) -> None:
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            pass
        h.reply(200, bodies[h.path], {"Content-Type": "application/rss+xml"})

    with Loopback() as server:
        for path in bodies:
            server.route(path, together)
        env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
        runs = []
        for copy in range(copies):
            # four workers with one source each (the same source list: the rest disabled)
            config = _config(tmp_path, postgres_url, [server.url(p) for p in bodies], name=f"w{copy}.toml",
                             workers=1)
            runs.append(subprocess.Popen(
                [sys.executable, "-m", "ingest", "--once", "-c", str(config), "--source", f"f{copy}",
                 "--log-level", "error"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
        outcomes = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [0] * copies, outcomes
    assert _counts(postgres_url) == (copies * stories, copies * stories, stories)


def test_two_once_runs_at_once_store_every_item_once(tmp_path: Path, postgres_url: str, feed_server: FeedServer) -> None:
    feeds, per_feed = 20, 50
    for i in range(feeds):
        # every story also appears in the next feed: copies race between the two runs too
        feed_server.feed(f"/f{i}", [(f"g{i}-{n}", f"story {i}-{n}", _text(i * 1000 + n)) for n in range(per_feed)]
                         + [(f"c{i}", f"copy of {(i + 1) % feeds}-0", _text(((i + 1) % feeds) * 1000))])
    config = _config(tmp_path, postgres_url, [feed_server.url(f"/f{i}") for i in range(feeds)], interval="15m")
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    runs = [
        subprocess.Popen([sys.executable, "-m", "ingest", "--once", "--json", "-c", str(config), "--log-level", "error"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for _ in range(2)
    ]
    outcomes = [run.communicate(timeout=300) for run in runs]
    for run, (_out, err) in zip(runs, outcomes):
        assert run.returncode == 0, err
        assert "duplicate key" not in err and "Traceback" not in err, err
    # every source polled by one run or both (a run that starts after the other left polls again, as cron
    # expects), each poll under its own lease
    polled = [json.loads(out)["sources"] for out, _ in outcomes]
    elsewhere = [len(json.loads(out)["polled_elsewhere"]) for out, _ in outcomes]
    assert sum(polled) + sum(elsewhere) == 2 * feeds
    assert all(1 <= feed_server.hits[f"/f{i}"] <= 2 for i in range(feeds))
    assert _counts(postgres_url) == (feeds * (per_feed + 1), feeds * (per_feed + 1), feeds * per_feed)


def test_once_next_to_a_running_daemon_leaves_it_what_it_polled(tmp_path: Path, postgres_url: str) -> None:
    """`--once` against a store a daemon uses: sources the daemon polled moments ago are not fetched again."""
    with Loopback() as server:
        urls = _syndicated(server, stories=4, copies=2, per_feed=2)
        config = _config(tmp_path, postgres_url, urls, interval="1h")
        log = tmp_path / "daemon.log"
        daemon = _daemon(config, log)
        try:
            deadline = time.monotonic() + 30
            while len({s.path for s in server.hits()}) < len(urls) and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(1)
            env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
            done = subprocess.run([sys.executable, "-m", "ingest", "--once", "--json", "-c", str(config)],
                                  capture_output=True, text=True, env=env, timeout=120)
            assert done.returncode == 0, done.stderr
            summary = json.loads(done.stdout)
            assert summary["sources"] == 0 and len(summary["polled_elsewhere"]) == len(urls)
            assert len(server.hits()) == len(urls)  # one fetch per source: the daemon's
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(30) == 0, log.read_text()
        finally:
            _stop_all([daemon])
