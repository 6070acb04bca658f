"""The daemon: the store lock, the stop flag, and the real process.

Process tests start ``python -m ingest -c FILE`` against a loopback feed server with
1-second intervals and watch its store, its log and its exit.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from .conftest import run_cli
from ingest.config import load
from ingest.errors import StoreLocked
from ingest.fetch import Fetcher
from ingest.pipeline import Deps, process_source
from ingest.daemon import StoreLock
from ingest.store import Store

def words(seed: int, n: int = 60) -> str:
    """A distinct text per seed (so items are not duplicates of each other)."""
    rng = random.Random(seed)
    return " ".join(rng.choice(["alpha", "bravo", "delta", "echo", "kilo", "lima", "oscar", "tango", "zulu",
                                "harbour", "council", "budget", "river", "museum", "railway", "storm"])
                    + str(rng.randrange(1000)) for _ in range(n))


# ---------------------------------------------------------------------------- store lock


def test_store_lock_is_exclusive_and_released(tmp_path: Path) -> None:
    path = tmp_path / "store.db.lock"
    first = StoreLock(path)
    with pytest.raises(StoreLocked, match=f"pid {os.getpid()}"):
        StoreLock(path)
    first.release()
    StoreLock(path).release()


# ---------------------------------------------------------------------------- stop flag (pipeline)


def test_stop_flag_leaves_the_rest_of_the_feed_for_the_next_poll(tmp_path: Path, write_config, feed_server) -> None:
    feed_server.feed("/f", [(f"g{i}", f"title {i}", words(i)) for i in range(5)])
    path = write_config(f"""
        [store]
        url = "sqlite:///store.db"
        [[sources]]
        name = "f"
        url = "{feed_server.url('/f')}"
    """)
    config = load(path)
    calls = iter([False, False, True])  # stop after two items
    with Store.open(config.store.url) as store:
        fetcher = Fetcher(config.fetch)
        states = store.sync_sources(config.sources)
        report = process_source(config.sources[0], states["f"], Deps(config, store, fetcher,
                                                                     should_stop=lambda: next(calls, True)))
        assert report.ok and report.items_new == 2
        assert any("stopped with 3 entries not processed" in w for w in report.warnings)
        assert store.counts()["items"] == 2
        after = store.source_state("f")
        assert after is not None and after.next_poll_at is None and after.body_hash is None  # poll not recorded
        report = process_source(config.sources[0], after, Deps(config, store, fetcher))
        assert report.items_new == 3 and report.items_unchanged == 2
        fetcher.close()


# ---------------------------------------------------------------------------- the daemon process


def _config(
    write_config, sources: list[tuple[str, str]], extra: str = "", name: str = "ingest.toml", shutdown: float = 2
) -> Path:
    body = "".join(f'[[sources]]\nname = "{n}"\nurl = "{u}"\n' for n, u in sources)
    return write_config(
        f"""[store]\nurl = "sqlite:///data/store.db"\n[daemon]\nshutdown_timeout = {shutdown}\n{extra}\n"""
        f"""[defaults]\ninterval = 1\n{body}""",
        name,
    )


def _items(config: Path) -> list[dict]:
    result = run_cli("items", "--json", "-c", str(config))
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def _guids(db: Path) -> set[str]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return {row[0] for row in conn.execute("SELECT guid FROM items")}


def _stored(db: Path) -> int:
    """Items in the store now (0 before it exists), read without the CLI's start-up time."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            return conn.execute("SELECT count(*) FROM items").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


# A feed big enough that writing it takes seconds (the stop tests signal mid-feed): 300
# items sufficed until write batches made the store fast enough to finish within the
# half second these tests used to wait.
ITEMS = 2000


def _integrity(db: Path) -> str:
    with sqlite3.connect(db) as conn:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    return tmp_path / "data"


def test_new_item_is_stored_within_three_intervals(write_config, feed_server, start_daemon, data_dir) -> None:
    feed_server.feed("/a", [("a1", "first", words(1))])
    config = _config(write_config, [("a", feed_server.url("/a"))])
    daemon = start_daemon(config)
    daemon.wait_for(lambda: len(_items(config)) == 1, 10, "the first item")
    feed_server.feed("/a", [("a2", "second", words(2)), ("a1", "first", words(1))])
    added = time.monotonic()
    # read the file directly: a CLI subprocess takes about a second to start on a busy machine
    daemon.wait_for(lambda: _guids(data_dir / "store.db") == {"a1", "a2"}, 6, "the added item")
    assert time.monotonic() - added <= 3 * 1.0  # three intervals
    assert {i["guid"] for i in _items(config)} == {"a1", "a2"}
    assert "a: ok, 1 new, 0 updated, 0 duplicates" in daemon.log  # one line per poll
    assert daemon.stop() == 0


def test_sighup_adds_a_source_and_keeps_running_on_an_invalid_config(
    write_config, feed_server, start_daemon, data_dir
) -> None:
    feed_server.feed("/a", [("a1", "first", words(1))])
    feed_server.feed("/b", [("b1", "from b", words(3))])
    config = _config(write_config, [("a", feed_server.url("/a"))])
    daemon = start_daemon(config)
    daemon.wait_log("a: ok, 1 new")
    assert feed_server.hits.get("/b") is None

    _config(write_config, [("a", feed_server.url("/a")), ("b", feed_server.url("/b"))])
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.wait_log("reload: 2 sources (1 added, 0 removed, 0 changed)")
    daemon.wait_for(lambda: "b1" in {i["guid"] for i in _items(config)}, 6, "the added source's item")

    config.write_text(config.read_text() + "\n[daemon.nonsense\n")  # broken TOML
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.wait_log("keeping the running config")
    error_lines = [line for line in daemon.log.splitlines() if "reload: config:" in line]
    assert len(error_lines) == 1 and "invalid TOML" in error_lines[0]
    polls = feed_server.hits["/b"]
    daemon.wait_for(lambda: feed_server.hits["/b"] >= polls + 2, 6, "polls after the failed reload")
    assert daemon.proc.poll() is None
    assert daemon.stop() == 0


def test_sighup_removes_a_source(write_config, feed_server, start_daemon, data_dir) -> None:
    feed_server.feed("/a", [("a1", "first", words(1))])
    feed_server.feed("/b", [("b1", "from b", words(3))])
    config = _config(write_config, [("a", feed_server.url("/a")), ("b", feed_server.url("/b"))])
    daemon = start_daemon(config)
    daemon.wait_for(lambda: feed_server.hits.get("/b", 0) >= 1, 10, "a poll of b")
    _config(write_config, [("a", feed_server.url("/a"))])
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.wait_log("reload: 1 sources (0 added, 1 removed, 0 changed)")
    time.sleep(0.5)  # a poll of b already running may finish
    polls_b, polls_a = feed_server.hits["/b"], feed_server.hits.get("/a", 0)
    daemon.wait_for(lambda: feed_server.hits.get("/a", 0) >= polls_a + 2, 6, "polls of a")
    assert feed_server.hits["/b"] == polls_b
    assert daemon.stop() == 0


def test_sigterm_during_a_slow_response_exits_0_in_time(write_config, feed_server, start_daemon, data_dir) -> None:
    feed_server.feed("/a", [(f"a{i}", f"item {i}", words(i)) for i in range(20)])
    feed_server.feed("/slow", [("s1", "slow", words(99))])
    feed_server.delay["/slow"] = 30.0
    config = _config(write_config, [("a", feed_server.url("/a")), ("slow", feed_server.url("/slow"))])
    daemon = start_daemon(config)
    daemon.wait_log("a: ok, 20 new")
    daemon.wait_for(lambda: feed_server.hits.get("/slow"), 10, "the slow request")
    sent = time.monotonic()
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(2 + 2) == 0  # shutdown_timeout (2 s) + 2 s
    assert time.monotonic() - sent < 4
    assert "still running after 2s" in daemon.log
    assert _integrity(data_dir / "store.db") == "ok"
    assert len(_items(config)) == 20


def test_second_signal_exits_at_once_without_corrupting_the_store(
    write_config, feed_server, start_daemon, data_dir
) -> None:
    # many items (seconds of work): the signals land while items are being written
    feed_server.feed("/a", [(f"a{i}", f"item {i}", words(i)) for i in range(ITEMS)])
    feed_server.feed("/slow", [("s1", "slow", words(99))])
    feed_server.delay["/slow"] = 30.0
    config = _config(write_config, [("a", feed_server.url("/a")), ("slow", feed_server.url("/slow"))],
                     shutdown=20)
    daemon = start_daemon(config)
    daemon.wait_for(lambda: feed_server.hits.get("/slow") and _stored(data_dir / "store.db"), 20, "the first items")
    daemon.proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    sent = time.monotonic()
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(5) == 128 + signal.SIGTERM
    assert time.monotonic() - sent < 1.5
    assert "SIGTERM again: exiting at once" in daemon.log
    assert _integrity(data_dir / "store.db") == "ok"
    stored = _items(config)
    assert len(stored) < ITEMS and all(item["text"] for item in stored)  # whole items only


def test_sigterm_lets_the_item_in_hand_finish_and_exits_0(write_config, feed_server, start_daemon, data_dir) -> None:
    feed_server.feed("/a", [(f"a{i}", f"item {i}", words(i)) for i in range(ITEMS)])
    config = _config(write_config, [("a", feed_server.url("/a"))], shutdown=20)
    daemon = start_daemon(config)
    daemon.wait_for(lambda: _stored(data_dir / "store.db"), 20, "the first items")
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(20) == 0
    assert "entries not processed" in daemon.log and "INFO ingest.daemon: stopped" in daemon.log
    assert _integrity(data_dir / "store.db") == "ok"
    first = len(_items(config))
    assert 0 < first < ITEMS
    # the rest is done on the next start: the interrupted poll was not recorded
    daemon = start_daemon(config)
    daemon.wait_for(lambda: _stored(data_dir / "store.db") == ITEMS, 60, "the remaining items")
    assert len(_items(config)) == ITEMS
    assert daemon.stop() == 0


def test_second_daemon_on_the_same_sqlite_store_refuses(write_config, feed_server, start_daemon, data_dir) -> None:
    feed_server.feed("/a", [("a1", "first", words(1))])
    config = _config(write_config, [("a", feed_server.url("/a"))])
    daemon = start_daemon(config)
    daemon.wait_log("daemon started")
    other = _config(write_config, [("a", feed_server.url("/a"))], name="other.toml")  # same store file
    second = run_cli("-c", str(other), timeout=20)
    assert second.returncode == 1
    assert f"another ingest daemon (pid {daemon.proc.pid}) already runs on" in second.stderr
    assert "Traceback" not in second.stderr
    assert daemon.proc.poll() is None
    assert daemon.stop() == 0
