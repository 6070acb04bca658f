"""ingest.server: /healthz and /metrics, with an in-process route table and against a running daemon."""

from __future__ import annotations

import json
import random
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from .conftest import run_cli
from ingest.config import load
from ingest.errors import ConfigError
from ingest.daemon import Daemon
from ingest.server import ROUTES, Response, Server, parse_listen
from ingest.store import Store


def get(url: str) -> tuple[int, str, str]:
    """Status, content type and body of a GET (error statuses included)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.headers["Content-Type"], r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def words(seed: int, n: int = 60) -> str:
    rng = random.Random(seed)
    return " ".join(f"w{rng.randrange(100000)}" for _ in range(n))


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, value = line.rsplit(" ", 1)
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


# ---------------------------------------------------------------------------- in process


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:9108") == ("127.0.0.1", 9108)
    assert parse_listen("[::1]:9108") == ("::1", 9108)
    assert parse_listen(":9108") == ("127.0.0.1", 9108)
    for bad in ("9108", "host:", "host:99999", "host:x"):
        with pytest.raises(ConfigError, match="daemon.listen"):
            parse_listen(bad)


def test_routes_are_a_table_and_unknown_paths_are_404(write_config, tmp_path: Path) -> None:
    config = load(write_config(store_url="sqlite:///store.db"))
    with Store.open(config.store.url) as store:
        daemon = Daemon(config, store)  # not started: its scheduler is not running
        routes = {**ROUTES, "/hello": lambda app, query: Response(200, "text/plain", f"hi {query.get('n')}")}
        server = Server(daemon, ("127.0.0.1", 0), routes)
        server.start()
        base = f"http://127.0.0.1:{server.address[1]}"
        try:
            assert get(base + "/hello?n=1") == (200, "text/plain", "hi ['1']")
            status, _, body = get(base + "/nope")
            assert status == 404 and "/healthz" in body
            status, ctype, body = get(base + "/healthz")
            health = json.loads(body)
            assert status == 503 and ctype == "application/json"
            assert health["scheduler"] == "stopped" and health["store"] == "ok" and health["ok"] is False
            status, ctype, body = get(base + "/metrics")
            assert status == 200 and ctype.startswith("text/plain; version=0.0.4")
            assert "ingest_polls_in_flight 0.0" in body
            assert "python_gc_objects_collected_total" not in body  # own registry, not the global one
        finally:
            server.close()


def test_listen_on_a_busy_port_is_a_config_error(write_config) -> None:
    config = load(write_config(store_url="sqlite:///store.db"))
    with Store.open(config.store.url) as store:
        daemon = Daemon(config, store)
        first = Server(daemon, ("127.0.0.1", 0))
        try:
            with pytest.raises(ConfigError, match="cannot listen on 127.0.0.1"):
                Server(daemon, ("127.0.0.1", first.address[1]))
        finally:
            first.close()


# ---------------------------------------------------------------------------- a running daemon


def _config(write_config, server) -> Path:
    return write_config(store_url="sqlite:///data/store.db", daemon={"listen": "127.0.0.1:0", "shutdown_timeout": 2},
                        defaults={"interval": 1},
                        sources={"a": server.url("/a"), "b": server.url("/b"), "broken": server.url("/missing")})


def _items(*items: tuple[str, str, str]) -> list[tuple[str, str, str, str]]:
    """Feed items from (guid, title, text)."""
    return [(guid, f"https://example.org/{guid}", title, body) for guid, title, body in items]


def test_metrics_count_what_the_store_holds(tmp_path: Path, write_config, server, start_daemon) -> None:
    (tmp_path / "data").mkdir()
    text = words(7, 80)
    server.feed("/a", _items(("a1", "one", words(1)), ("a2", "two", words(2)), ("a3", "copy", text)))
    server.feed("/b", _items(("b1", "three", words(3)), ("b2", "copy", text)))  # b2 duplicates a3
    config = _config(write_config, server)
    daemon = start_daemon(config)
    base = daemon.address()
    daemon.wait_for(lambda: metric(get(base + "/metrics")[2], "ingest_polls_total", source="b") >= 2, 10, "polls")
    daemon.wait_for(lambda: metric(get(base + "/metrics")[2], "ingest_polls_total", source="a") >= 2, 10, "polls")
    body = get(base + "/metrics")[2]
    items = [json.loads(line) for line in run_cli("items", "--json", "-c", str(config)).stdout.splitlines()]
    by_source = {s: sum(1 for i in items if i["source"] == s) for s in ("a", "b")}
    assert by_source == {"a": 3, "b": 2}
    for source, count in by_source.items():
        assert metric(body, "ingest_items_total", source=source, outcome="new") == count
    # one cluster of two: the copy in b is a duplicate
    clustered = {i["cluster"] for i in items}
    assert metric(body, "ingest_items_total", outcome="duplicate") == len(items) - len(clustered) == 1
    assert metric(body, "ingest_polls_total", source="a", outcome="ok") == 1  # then 304/unchanged polls
    assert metric(body, "ingest_polls_total", source="a", outcome="not_modified") >= 1
    assert metric(body, "ingest_poll_errors_total", source="broken", kind="http_status") >= 1
    assert metric(body, "ingest_fetch_seconds_count") >= 4
    assert metric(body, "ingest_processing_seconds_count") >= 2
    assert metric(body, "ingest_scheduler_lag_seconds_count") >= 4
    assert 'url="' not in body and "127.0.0.1" not in body  # names only, never URLs

    server.feed("/b", _items(("b3", "four", words(4)), ("b1", "three", words(3)), ("b2", "copy", text)))
    # new items only: b already counts 2 new + 1 duplicate, a sum over outcomes would not wait for b3
    daemon.wait_for(lambda: metric(get(base + "/metrics")[2], "ingest_items_total", source="b", outcome="new") >= 3,
                    10, "b3")
    stored = run_cli("items", "--json", "--source", "b", "-c", str(config)).stdout.splitlines()
    assert metric(get(base + "/metrics")[2], "ingest_items_total", source="b", outcome="new") == len(stored) == 3
    assert daemon.stop() == 0


def test_healthz_turns_503_when_the_store_is_gone(tmp_path: Path, write_config, server, start_daemon) -> None:
    (tmp_path / "data").mkdir()
    server.feed("/a", _items(("a1", "one", words(1))))
    server.feed("/b", _items(("b1", "two", words(2))))
    config = _config(write_config, server)
    daemon = start_daemon(config)
    base = daemon.address()
    status, _, body = get(base + "/healthz")
    health = json.loads(body)
    assert status == 200, body
    assert health["scheduler"] == "running" and health["store"] == "ok" and health["sources"] == 3
    assert health["overdue"] == 0
    (tmp_path / "data").rename(tmp_path / "moved")
    status, _, body = get(base + "/healthz")
    assert status == 503
    assert "no longer exists" in json.loads(body)["store"]
    assert daemon.proc.poll() is None  # still running: the store may come back
    (tmp_path / "moved").rename(tmp_path / "data")
    daemon.wait_for(lambda: get(base + "/healthz")[0] == 200, 5, "healthy again")
    assert daemon.stop() == 0


def test_postgresql_allows_two_daemons_and_healthz_notices_a_missing_schema(
    postgres_url: str, write_config, server, start_daemon
) -> None:
    import sqlalchemy as sa

    from ingest.store import normalize_url

    from .conftest import POSTGRES_URL

    server.feed("/a", _items(("a1", "one", words(1))))
    schema = postgres_url.rsplit("%3D", 1)[1]
    config = write_config(store_url=postgres_url, daemon={"listen": "127.0.0.1:0"}, defaults={"interval": 1},
                          sources={"a": server.url("/a")})
    first, second = start_daemon(config), start_daemon(config)  # no lock on PostgreSQL
    bases = [first.address(), second.address()]
    for base in bases:
        status, _, body = get(base + "/healthz")
        assert status == 200, body
    admin = sa.create_engine(normalize_url(POSTGRES_URL or ""))
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f'ALTER SCHEMA "{schema}" RENAME TO "{schema}_away"'))
        for base in bases:
            status, _, body = get(base + "/healthz")
            assert status == 503 and "store unreachable" in json.loads(body)["store"]
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'ALTER SCHEMA "{schema}_away" RENAME TO "{schema}"'))
        admin.dispose()
    first.wait_for(lambda: get(bases[0] + "/healthz")[0] == 200, 5, "healthy again")
    assert first.stop() == 0 and second.stop() == 0
