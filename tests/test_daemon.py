"""ingest.daemon: the store lock, and the real process.

Process tests start ``python -m ingest -c FILE`` against a loopback feed server with
1-second intervals and watch its store, its log and its exit. The stop tests hold a
page of a full-text feed at the server, so a signal provably lands mid-poll: the
first write batch stored, the next one waiting for the held page. (The stop flag
inside a poll, in-process: tests/test_pipeline.py.)
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from ingest.daemon import StoreLock
from ingest.errors import StoreLocked
from ingest.pool import CHUNK_ENTRIES

from .conftest import run_cli
from .loopback import Hold, Loopback


def words(seed: int, n: int = 60) -> str:
    """A distinct text per seed (so items are not duplicates of each other)."""
    rng = random.Random(seed)
    return " ".join(rng.choice(["alpha", "bravo", "delta", "echo", "kilo", "lima", "oscar", "tango", "zulu",
                                "harbour", "council", "budget", "river", "museum", "railway", "storm"])
                    + str(rng.randrange(1000)) for _ in range(n))


def _items_of(prefix: str, seeds: range) -> list[tuple[str, str, str, str]]:
    return [(f"{prefix}{i}", f"https://example.org/{prefix}{i}", f"item {i}", words(i)) for i in seeds]


# ---------------------------------------------------------------------------- store lock


def test_store_lock_is_exclusive_and_released(tmp_path: Path) -> None:
    path = tmp_path / "store.db.lock"
    first = StoreLock(path)
    with pytest.raises(StoreLocked, match=f"pid {os.getpid()}"):
        StoreLock(path)
    first.release()
    StoreLock(path).release()


# ---------------------------------------------------------------------------- the daemon process


def _config(write_config, sources: dict[str, str] | list[dict], *, name: str = "ingest.toml", shutdown: float = 2,
            **sections: dict) -> Path:
    """A daemon config: the store in data/, 1-second intervals, ``shutdown_timeout``, more ``sections``."""
    daemon = {"shutdown_timeout": shutdown, **sections.pop("daemon", {})}
    return write_config(name=name, store_url="sqlite:///data/store.db", daemon=daemon, defaults={"interval": 1},
                        sources=sources, **sections)


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


def _leased(db: Path, source: str) -> bool:
    """Whether a worker holds ``source`` (claimed, being polled) now."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        row = conn.execute("SELECT lease_token FROM sources WHERE name = ?", (source,)).fetchone()
    return row is not None and row[0] is not None


def _integrity(db: Path) -> str:
    with sqlite3.connect(db) as conn:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]


def _scheduler(base: str) -> str:
    """The daemon's /healthz 'scheduler' ('stopped' once its stop flag is set: polls see it between items)."""
    try:
        with urllib.request.urlopen(base + "/healthz", timeout=10) as response:
            return json.loads(response.read())["scheduler"]
    except urllib.error.HTTPError as exc:  # 503 once stopping
        return json.loads(exc.read())["scheduler"]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    return tmp_path / "data"


# A full-text feed of four write batches; the stop tests hold the page of the first item
# of the second batch, so that when it is asked for, the first batch is stored and the
# poll waits mid-feed.
ITEMS = 4 * CHUNK_ENTRIES
HELD = CHUNK_ENTRIES


def _held_full_text_feed(server: Loopback) -> Hold:
    """``/a``: ITEMS entries whose pages are on ``server``; the page of entry HELD is held."""
    server.feed("/a", [(guid, server.url(f"/p/{i}"), title, text)
                       for i, (guid, _, title, text) in enumerate(_items_of("a", range(ITEMS)))])
    for i in range(ITEMS):
        page = f"<html><body><article><p>{words(i)}</p><p>{words(10_000 + i)}</p></article></body></html>"
        server.respond(f"/p/{i}", page.encode(), headers={"Content-Type": "text/html"})
    return server.hold(f"/p/{HELD}")


def _stop_test_config(write_config, server: Loopback) -> Path:
    # one process: entries are prepared batch by batch in the polling thread (a process
    # pool prepares every batch before the first is stored); pages on loopback; /healthz
    return _config(write_config, [{"name": "a", "url": server.url("/a"), "full_text": True}], shutdown=20,
                   daemon={"processes": 1, "listen": "127.0.0.1:0"},
                   fetch={"allow_private_addresses": True, "per_host_delay": 0})


def test_new_item_is_stored_within_three_intervals(write_config, server, start_daemon, data_dir) -> None:
    server.feed("/a", _items_of("a", range(1, 2)))
    config = _config(write_config, {"a": server.url("/a")})
    daemon = start_daemon(config)
    daemon.wait_for(lambda: len(_items(config)) == 1, 10, "the first item")
    server.feed("/a", _items_of("a", range(2, 3)) + _items_of("a", range(1, 2)))
    added = time.monotonic()
    # read the file directly: a CLI subprocess takes about a second to start on a busy machine
    daemon.wait_for(lambda: _guids(data_dir / "store.db") == {"a1", "a2"}, 6, "the added item")
    assert time.monotonic() - added <= 3 * 1.0  # three intervals
    assert {i["guid"] for i in _items(config)} == {"a1", "a2"}
    assert "a: ok, 1 new, 0 updated, 0 duplicates" in daemon.log  # one line per poll
    assert daemon.stop() == 0


def test_sighup_adds_a_source_and_keeps_running_on_an_invalid_config(
    write_config, server, start_daemon, data_dir
) -> None:
    server.feed("/a", _items_of("a", range(1, 2)))
    server.feed("/b", _items_of("b", range(1, 2)))
    config = _config(write_config, {"a": server.url("/a")})
    daemon = start_daemon(config)
    daemon.wait_log("a: ok, 1 new")
    assert server.hits("/b") == []

    _config(write_config, {"a": server.url("/a"), "b": server.url("/b")})
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.wait_log("reload: 2 sources (1 added, 0 removed, 0 changed)")
    daemon.wait_for(lambda: "b1" in {i["guid"] for i in _items(config)}, 6, "the added source's item")

    # written as text, not values: the point is TOML that does not parse
    config.write_text(config.read_text() + "\n[daemon.nonsense\n")
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.wait_log("keeping the running config")
    error_lines = [line for line in daemon.log.splitlines() if "reload: config:" in line]
    assert len(error_lines) == 1 and "invalid TOML" in error_lines[0]
    polls = len(server.hits("/b"))
    server.wait_hits(polls + 2, "/b", timeout=6)  # polls after the failed reload
    assert daemon.proc.poll() is None
    assert daemon.stop() == 0


def test_sighup_removes_a_source(write_config, server, start_daemon, data_dir) -> None:
    server.feed("/a", _items_of("a", range(1, 2)))
    server.feed("/b", _items_of("b", range(1, 2)))
    config = _config(write_config, {"a": server.url("/a"), "b": server.url("/b")})
    daemon = start_daemon(config)
    server.wait_hits(1, "/b", timeout=10)
    _config(write_config, {"a": server.url("/a")})
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.wait_log("reload: 1 sources (0 added, 1 removed, 0 changed)")
    # a poll of b claimed before the reload may still be running: wait until b is not
    # held (reloaded, the daemon claims it no more)
    daemon.wait_for(lambda: not _leased(data_dir / "store.db", "b"), 10, "b's poll in flight to end")
    polls_b, polls_a = len(server.hits("/b")), len(server.hits("/a"))
    server.wait_hits(polls_a + 2, "/a", timeout=6)
    assert len(server.hits("/b")) == polls_b
    assert daemon.stop() == 0


def test_sigterm_during_a_slow_response_exits_0_in_time(write_config, server, start_daemon, data_dir) -> None:
    server.feed("/a", _items_of("a", range(20)))
    server.feed("/slow", [("s1", "https://example.org/s1", "slow", words(99))])
    slow = server.hold("/slow")  # answered when the test ends: slower than any shutdown_timeout
    config = _config(write_config, {"a": server.url("/a"), "slow": server.url("/slow")})
    daemon = start_daemon(config)
    daemon.wait_log("a: ok, 20 new")
    slow.wait(timeout=10)
    sent = time.monotonic()
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(2 + 2) == 0  # shutdown_timeout (2 s) + 2 s
    assert time.monotonic() - sent < 4
    assert "still running after 2s" in daemon.log
    assert _integrity(data_dir / "store.db") == "ok"
    assert len(_items(config)) == 20


def test_second_signal_exits_at_once_without_corrupting_the_store(
    write_config, server, start_daemon, data_dir
) -> None:
    held = _held_full_text_feed(server)
    daemon = start_daemon(_stop_test_config(write_config, server))
    held.wait(timeout=30)  # mid-poll: the first batch stored, a page of the second held
    base = daemon.address()
    daemon.proc.send_signal(signal.SIGTERM)
    daemon.wait_for(lambda: _scheduler(base) == "stopped", 10, "the first SIGTERM handled")
    sent = time.monotonic()
    daemon.proc.send_signal(signal.SIGTERM)  # the poll still waits for its page
    assert daemon.proc.wait(5) == 128 + signal.SIGTERM
    assert time.monotonic() - sent < 1.5
    assert "SIGTERM again: exiting at once" in daemon.log
    assert _integrity(data_dir / "store.db") == "ok"
    stored = _items(daemon.config)
    assert len(stored) < ITEMS and all(item["text"] for item in stored)  # whole items only


def test_sigterm_lets_the_item_in_hand_finish_and_exits_0(write_config, server, start_daemon, data_dir) -> None:
    held = _held_full_text_feed(server)
    config = _stop_test_config(write_config, server)
    daemon = start_daemon(config)
    held.wait(timeout=30)  # mid-poll: the first batch stored, a page of the second held
    base = daemon.address()
    daemon.proc.send_signal(signal.SIGTERM)
    daemon.wait_for(lambda: _scheduler(base) == "stopped", 10, "the stop flag")
    held.release()  # the poll goes on, and sees the flag before its next item
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


def test_second_daemon_on_the_same_sqlite_store_refuses(write_config, server, start_daemon, data_dir) -> None:
    server.feed("/a", _items_of("a", range(1, 2)))
    config = _config(write_config, {"a": server.url("/a")})
    daemon = start_daemon(config)
    daemon.wait_log("daemon started")
    other = _config(write_config, {"a": server.url("/a")}, name="other.toml")  # same store file
    second = run_cli("-c", str(other), timeout=20)
    assert second.returncode == 1
    assert f"another ingest daemon (pid {daemon.proc.pid}) already runs on" in second.stderr
    assert "Traceback" not in second.stderr
    assert daemon.proc.poll() is None
    assert daemon.stop() == 0
