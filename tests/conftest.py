"""Shared fixtures: real SQLite files, a real loopback HTTP server, opt-in PostgreSQL.

PostgreSQL: tests marked with the ``store_url`` fixture run against SQLite always
and against PostgreSQL when ``INGEST_TEST_POSTGRES_URL`` is set; if it is set and the
server does not answer, those tests fail (they do not skip).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Callable, Iterator

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
POSTGRES_URL = os.environ.get("INGEST_TEST_POSTGRES_URL")


def pytest_report_header(config: pytest.Config) -> str:
    return f"postgresql: {POSTGRES_URL or 'not configured (INGEST_TEST_POSTGRES_URL unset): SQLite only'}"


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store.db'}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL schema (dropped afterwards); fails when the server is unreachable."""
    if not POSTGRES_URL:
        pytest.skip("INGEST_TEST_POSTGRES_URL not set")
    import sqlalchemy as sa

    from ingest.store import normalize_url

    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(normalize_url(POSTGRES_URL))
    with admin.begin() as conn:  # raises (test fails) when the server does not answer
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each store test runs on SQLite, and on PostgreSQL when configured."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[..., Path]:
    """Write a config file into tmp_path from TOML text (dedented); returns its path."""

    def write(body: str, name: str = "ingest.toml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(body), encoding="utf-8")
        return path

    return write


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 120, env: dict[str, str] | None = None):
    """Run ``python -m ingest ARGS`` in a subprocess of this checkout; returns CompletedProcess."""
    full_env = {k: v for k, v in os.environ.items() if k != "INGEST_CONFIG"}
    full_env.update({"PYTHONPATH": str(ROOT), **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", "ingest", *args], cwd=cwd or ROOT, env=full_env, capture_output=True, text=True,
        timeout=timeout,
    )


@pytest.fixture
def cli() -> Callable[..., subprocess.CompletedProcess]:
    return run_cli


def write_demo_config(directory: Path, store_url: str, extra: str = "") -> Path:
    """config/demo.toml with absolute fixture paths and another store, plus ``extra`` TOML."""
    text = (ROOT / "config" / "demo.toml").read_text(encoding="utf-8")
    text = text.replace('url = "sqlite:///../demo.db"', f'url = "{store_url}"', 1)
    text = text.replace('"../fixtures/', f'"{FIXTURES}/')
    path = directory / "demo.toml"
    path.write_text(text.replace("[store]\n", "[store]\n" + extra, 1) if extra else text, encoding="utf-8")
    return path


def ingest_once(config_path: Path):
    """Load a config and poll every source once, in-process; returns the RunReport."""
    from ingest import dedup
    from ingest.config import load
    from ingest.fetch import Fetcher
    from ingest.pipeline import Deps
    from ingest.worker import run_once
    from ingest.store import Store

    config = load(config_path)
    with Store.open(config.store.url, dedup.scheme_for(config.dedup).as_dict()) as store:
        fetcher = Fetcher(config.fetch)
        try:
            return run_once(Deps(config, store, fetcher))
        finally:
            fetcher.close()


@pytest.fixture
def demo_config(tmp_path: Path, store_url: str) -> Path:
    """The offline demo ingested once into a fresh store (SQLite, and PostgreSQL when configured)."""
    path = write_demo_config(tmp_path, store_url)
    report = ingest_once(path)
    assert not report.failed, report.failed
    return path


def store_snapshot(store) -> dict[str, list[tuple]]:
    """Every row of every table that prune touches, to compare before and after."""
    from sqlalchemy import select

    from ingest.store import schema as t

    with store.engine.connect() as conn:
        return {
            table.name: sorted(tuple(map(str, row)) for row in conn.execute(select(table)))
            for table in (t.items, t.clusters, t.lsh_bands, t.removals, t.paragraphs, t.canonical_changes)
        }


def check_store_consistent(store) -> None:
    """Every cluster has members, a size equal to their number, and a canonical among them; no orphans."""
    from sqlalchemy import func, select

    from ingest.store import schema as t

    with store.engine.connect() as conn:
        members: dict[int, set[int]] = {}
        for row in conn.execute(select(t.items.c.id, t.items.c.cluster_id)):
            members.setdefault(row.cluster_id, set()).add(row.id)
        clusters = conn.execute(select(t.clusters)).all()
        assert {c.id for c in clusters} == set(members)
        for c in clusters:
            assert c.size == len(members[c.id])
            assert c.canonical_item_id in members[c.id]
        item_ids = set().union(*members.values()) if members else set()
        for table in (t.lsh_bands, t.removals, t.paragraphs):
            assert {r.item_id for r in conn.execute(select(table.c.item_id))} <= item_ids
        assert conn.execute(select(func.count()).select_from(t.lsh_bands)).scalar_one() > 0 or not item_ids
        if store.engine.dialect.name == "sqlite":
            # FTS5 checks its index against the content table (items): raises if a delete was missed
            conn.exec_driver_sql("INSERT INTO items_fts(items_fts, rank) VALUES ('integrity-check', 1)")


# ---------------------------------------------------------------------------- daemon and feed server helpers


class FeedServer:
    """A threaded loopback HTTP server whose pages tests change while it runs.

    ``pages[path] = (status, headers, body)``; ``delay[path] = seconds`` holds the
    answer back (a slow feed); ``hits[path]`` counts requests; ``arrived`` is set
    when any request arrives.
    """

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.pages: dict[str, tuple[int, dict[str, str], bytes]] = {}
        self.delay: dict[str, float] = {}
        self.hits: dict[str, int] = {}
        self.arrived = threading.Event()
        self._stop = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                path = self.path.split("?", 1)[0]
                outer.hits[path] = outer.hits.get(path, 0) + 1
                outer.arrived.set()
                if outer._stop.wait(outer.delay.get(path, 0.0)):
                    return
                status, headers, body = outer.pages.get(path, (404, {}, b"not found"))
                try:
                    self.send_response(status)
                    for key, value in {"Content-Type": "application/rss+xml", **headers}.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass

            def log_message(self, *args: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str, userinfo: str = "") -> str:
        return f"http://{userinfo + '@' if userinfo else ''}127.0.0.1:{self.port}{path}"

    def feed(self, path: str, items: list[tuple[str, str, str]]) -> None:
        """Serve an RSS feed at ``path`` with (guid, title, text) items."""
        self.pages[path] = (200, {}, rss(items).encode("utf-8"))

    def close(self) -> None:
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def rss(items: list[tuple[str, str, str]]) -> str:
    """A small RSS 2.0 document from (guid, title, text) items."""
    from xml.sax.saxutils import escape

    body = "".join(
        f"<item><guid>{escape(guid)}</guid><title>{escape(title)}</title>"
        f"<link>https://example.org/{escape(guid)}</link><description>{escape(text)}</description></item>"
        for guid, title, text in items
    )
    return f'<?xml version="1.0"?><rss version="2.0"><channel><title>t</title><link>https://example.org/</link>{body}</channel></rss>'


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    server = FeedServer()
    try:
        yield server
    finally:
        server.close()


class DaemonProcess:
    """``python -m ingest -c CONFIG`` (the daemon) as a subprocess; stderr goes to a file."""

    def __init__(self, config: Path, *extra: str) -> None:
        self.config = config
        self.log_path = config.with_name(f"daemon-{uuid.uuid4().hex[:6]}.log")
        self._log = open(self.log_path, "w", encoding="utf-8")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.pop("INGEST_CONFIG", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ingest", "-c", str(config), *extra], cwd=config.parent, env=env,
            stdout=subprocess.DEVNULL, stderr=self._log,
        )

    @property
    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8")

    def wait_for(self, predicate: Callable[[], object], timeout: float, what: str) -> object:
        """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` s."""
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited ({self.proc.returncode}) waiting for {what}:\n{self.log}")
            time.sleep(0.1)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}:\n{self.log}")

    def wait_log(self, text: str, timeout: float = 15.0) -> None:
        self.wait_for(lambda: text in self.log, timeout, repr(text))

    def address(self, timeout: float = 15.0) -> str:
        """The http://host:port of the daemon's server (read from its start line)."""
        import re

        match = self.wait_for(lambda: re.search(r"metrics on (http://[\d.]+:\d+)/", self.log), timeout, "server")
        return match.group(1)  # type: ignore[union-attr]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@pytest.fixture
def start_daemon() -> Iterator[Callable[..., DaemonProcess]]:
    """Start daemons as subprocesses; every one still running is stopped afterwards."""
    started: list[DaemonProcess] = []

    def start(config: Path, *extra: str) -> DaemonProcess:
        process = DaemonProcess(config, *extra)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()
