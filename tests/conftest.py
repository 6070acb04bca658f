"""Shared helpers and fixtures: stores, configs, loopback servers, waits, the daemon.

- stores: ``store_url`` runs a test on SQLite always and on PostgreSQL when
  ``INGEST_TEST_POSTGRES_URL`` is set; if it is set and the server does not answer,
  those tests fail (they do not skip);
- configs: ``write_config_file`` (and the ``write_config`` fixture, the same in
  ``tmp_path``) writes every config a test uses, as TOML from plain values;
  ``write_demo_config`` the offline demo with another store;
- loopback servers: ``server`` and ``other_server`` (tests/loopback.py's ``Loopback``
  on 127.0.0.1 and 127.0.0.2); ``demo_run`` the demo served from one and ingested;
- ``wait_for`` waits on a condition (never a fixed sleep); ``pipeline`` runs
  ``run_once`` in-process with a fixed clock; ``start_daemon`` the daemon as a
  subprocess, stopped afterwards.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
import uuid
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import pytest

from .loopback import Item, Loopback, rss
from .pgschema import postgres_schema

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
    with postgres_schema(POSTGRES_URL) as url:  # raises (the test fails) when the server does not answer
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each store test runs on SQLite, and on PostgreSQL when configured."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("postgres_url")


# ---------------------------------------------------------------------------- waiting


def wait_for(
    predicate: Callable[[], Any], timeout: float, what: str, *,
    check: Callable[[], None] | None = None, explain: Callable[[], str] | None = None,
) -> Any:
    """Poll ``predicate`` until it returns something truthy, and return that.

    Fails after ``timeout`` s (the message names ``what``, plus ``explain()``, e.g. a
    log); ``check`` is called between polls and raises to stop waiting early (e.g. the
    process that should make the condition true has exited).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if check is not None:
            check()
        if time.monotonic() >= deadline:
            detail = f":\n{explain()}" if explain else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{detail}")
        time.sleep(0.05)


# ---------------------------------------------------------------------------- configs


def _plain(value: Any) -> Any:
    """``value`` with paths as strings, tuples as lists and mappings as dicts (what TOML and from_dict take)."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def config_values(
    *, store_url: str | None = None, sources: Mapping[str, Any] | Sequence[Mapping[str, Any]] = (), **sections: Any,
) -> dict[str, Any]:
    """A config as plain values: ``[store] url``, ``sources`` (name -> url, or a list of
    tables), and ``sections`` (a mapping is a ``[section]``, anything else a top-level key)."""
    values = _plain(sections)
    if store_url is not None:
        values["store"] = {"url": store_url, **values.get("store", {})}
    listed = [{"name": n, "url": u} for n, u in sources.items()] if isinstance(sources, Mapping) else sources
    if listed:
        values["sources"] = _plain(list(listed))
    return values


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)  # nan, inf and 1e+300 are TOML floats too
    if isinstance(value, str):
        # JSON's escapes are TOML's; DEL is a control character to TOML, not to JSON
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def _table(values: Mapping[str, Any]) -> list[str]:
    def key(name: str) -> str:
        return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name)

    return [f"{key(name)} = {_toml_value(value)}" for name, value in values.items()]


def toml_text(values: Mapping[str, Any]) -> str:
    """``values`` (plain: top-level keys, tables, and a ``sources`` list of tables) as TOML."""
    values = _plain(values)
    lines = _table({k: v for k, v in values.items() if not isinstance(v, dict) and k != "sources"})
    for key, table in values.items():
        if isinstance(table, dict):
            lines += [f"\n[{key}]", *_table(table)]
    for source in values.get("sources", []):
        lines += ["\n[[sources]]", *_table(source)]
    return "\n".join(lines) + "\n"


def write_config_file(
    directory: Path, *, name: str = "ingest.toml", store_url: str | None = None,
    sources: Mapping[str, Any] | Sequence[Mapping[str, Any]] = (), **sections: Any,
) -> Path:
    """Write ``config_values(...)`` as TOML to ``directory/name``; returns its path."""
    path = directory / name
    path.write_text(toml_text(config_values(store_url=store_url, sources=sources, **sections)), encoding="utf-8")
    return path


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[..., Path]:
    """``write_config_file`` in ``tmp_path``."""
    return partial(write_config_file, tmp_path)


def jsonl(text: str) -> list[dict]:
    """The records of JSON Lines output (``--json`` of items, clusters, sources ...)."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def once_in_process(config: Path) -> None:
    """``ingest --once --json -c CONFIG`` in this process, its output swallowed; a
    RuntimeError with the end of its stderr when it exits non-zero (benches and scoring)."""
    import contextlib
    import io

    from ingest.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["--once", "--json", "--log-level", "error", "-c", str(config)])
    if code != 0:
        raise RuntimeError(f"ingest --once exited {code}: {err.getvalue().strip()[-2000:]}")


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


def write_demo_config(
    directory: Path, store_url: str, extra_sources: Sequence[Mapping[str, Any]] = (), **sections: Mapping[str, Any],
) -> Path:
    """config/demo.toml as demo.toml in ``directory``: absolute feed paths, another store,
    ``sections`` merged into the demo's, ``extra_sources`` after its sources."""
    demo_path = ROOT / "config" / "demo.toml"
    demo = tomllib.loads(demo_path.read_text(encoding="utf-8"))
    sources = [{**s, "url": str((demo_path.parent / s["url"]).resolve())} for s in demo.pop("sources")]
    sources += extra_sources
    merged = {key: {**demo.get(key, {}), **sections.get(key, {})} for key in demo.keys() | sections.keys()}
    merged["store"]["url"] = store_url
    return write_config_file(directory, name="demo.toml", sources=sources, **merged)


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


# ---------------------------------------------------------------------------- loopback servers and runs


@pytest.fixture
def server() -> Iterator[Loopback]:
    """A recording loopback HTTP server on 127.0.0.1 (tests/loopback.py)."""
    with Loopback("127.0.0.1") as s:
        yield s


@pytest.fixture
def other_server() -> Iterator[Loopback]:
    """A second server on another loopback address: the 'private origin' that must stay untouched."""
    with Loopback("127.0.0.2") as s:
        yield s


DEMO_FEEDS = FIXTURES / "feeds" / "demo"
# The demo sources ``demo_run`` serves: copies of a few stories (the seed story in three
# of them), not the whole demo.
DEMO_RUN_SOURCES = ("afp-wire", "axadle", "worldtimes-blog", "reuters-wire", "sportsdesk", "rssdigest",
                    "newsnow-syndicate")


def serve_demo_feed(server: Loopback, name: str) -> str:
    """Serve fixtures/feeds/demo/NAME.xml at /NAME.xml; returns its URL."""
    path = f"/{name}.xml"
    server.respond(path, (DEMO_FEEDS / f"{name}.xml").read_bytes(), headers={"Content-Type": "application/rss+xml"})
    return server.url(path)


@pytest.fixture
def demo_run(server: Loopback, write_config: Callable[..., Path]) -> tuple[Path, subprocess.CompletedProcess]:
    """``DEMO_RUN_SOURCES`` served from loopback and ingested by ``ingest --once --json``: (config, that run)."""
    urls = {name: serve_demo_feed(server, name) for name in DEMO_RUN_SOURCES}
    config = write_config(store_url="sqlite:///store.db", fetch={"per_host_delay": 0}, sources=urls)
    return config, run_cli("--once", "--json", "-c", str(config))


# A local paper's stories, each with a reference marker and the same membership footer
# (learned as boilerplate on its third sighting): (title, first paragraph, second).
HARBOUR_FOOTER = "Harbour Times is owned by its readers. Become a member from $5 a month and support local journalism."
HARBOUR_STORIES = [
    ("Seawall upgrade approved", "The council approved a 4.2 million dollar upgrade of the Eastern Beach seawall on "
     "Tuesday after engineers found cracks along a third of its length.", "Work will start in autumn and take two "
     "years, with the boat ramp closed for six months while the southern section is rebuilt."),
    ("Ferry timetable changes", "The harbour ferry will run every twenty minutes at peak times from March, the "
     "operator said, after a year of complaints about crowded morning sailings.", "Weekend services will start an "
     "hour earlier, and a new late sailing will leave the city wharf at half past eleven on Fridays."),
    ("Bakery wins national award", "A Wharf Street bakery has won a national award for its sourdough, beating more "
     "than three hundred entries in the annual judging held in the capital.", "The owners said they would keep "
     "their prices as they are and hire two more apprentices before the summer season."),
    ("Netball final tickets sold out", "Tickets for Saturday's netball grand final sold out within an hour, the "
     "league said, the fastest sale in the competition's forty year history.", "Organisers will put up a big "
     "screen on the foreshore so fans without tickets can watch the match together."),
]


def harbour_feed(stories: Sequence[tuple[str, str, str]]) -> bytes:
    """The Harbour Times feed of ``stories``: content:encoded paragraphs, ``[ref HT-n]`` markers, the footer."""
    return rss([
        Item(guid=f"https://harbour.example/{i}", link=f"https://harbour.example/{i}", title=title,
             published=datetime(2025, 4, i + 1, 8, 0, tzinfo=timezone.utc),
             content=f"<p>{a}</p><p>{b} [ref HT-{i}]</p><p>{HARBOUR_FOOTER}</p>")
        for i, (title, a, b) in enumerate(stories)
    ], title="Harbour Times", link="https://harbour.example/")


T0 = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)


class Pipeline:
    """A config, a real SQLite store and a Fetcher, run with ``run_once`` like ``--once`` at ``now``."""

    def __init__(self, tmp_path: Path, sources: list[dict], fetch: dict | None = None, daemon: dict | None = None):
        from ingest import dedup
        from ingest.config import from_dict
        from ingest.fetch import Fetcher
        from ingest.store import Store

        # jitter 0: the tests check the stored next poll times exactly
        raw = config_values(store_url=f"sqlite:///{tmp_path / 'store.db'}", sources=sources,
                            fetch={"per_host_delay": 0, **(fetch or {})}, daemon={"jitter": 0, **(daemon or {})})
        self.config = from_dict(raw, tmp_path / "ingest.toml")
        self.store = Store.open(self.config.store.url, dedup.scheme_for(self.config.dedup).as_dict())
        self.fetcher = Fetcher(self.config.fetch)
        self.now = T0

    def run(self, **kwargs: Any):  # type: ignore[no-untyped-def]
        """``run_once`` over the config's sources at ``self.now``; returns its RunReport."""
        from ingest.pipeline import Deps
        from ingest.worker import run_once

        return run_once(Deps(self.config, self.store, self.fetcher, clock=lambda: self.now), **kwargs)

    def state(self, name: str = "feed"):  # type: ignore[no-untyped-def]
        return self.store.source_state(name)

    def close(self) -> None:
        self.fetcher.close()
        self.store.close()


@pytest.fixture
def pipeline(tmp_path: Path) -> Iterator[Callable[..., Pipeline]]:
    """Make ``Pipeline``s in tmp_path (one store); each is closed afterwards."""
    made: list[Pipeline] = []

    def make(sources: list[dict], **kwargs: Any) -> Pipeline:
        made.append(Pipeline(tmp_path, sources, **kwargs))
        return made[-1]

    yield make
    for p in made:
        p.close()


# ---------------------------------------------------------------------------- daemon helpers


class DaemonProcess:
    """``python -m ingest -c CONFIG`` (the daemon) as a subprocess; stderr goes to a file."""

    def __init__(self, config: Path, *extra: str) -> None:
        self.config = config
        self.log_path = config.with_name(f"daemon-{uuid.uuid4().hex[:6]}.log")
        self._log = open(self.log_path, "w", encoding="utf-8")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.pop("INGEST_CONFIG", None)
        # its own process group: stop() ends the pool workers it forked too, which a daemon
        # leaving through os._exit (a second signal, polls left after shutdown_timeout) orphans
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ingest", "-c", str(config), *extra], cwd=config.parent, env=env,
            stdout=subprocess.DEVNULL, stderr=self._log, start_new_session=True,
        )

    @property
    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8")

    def wait_for(self, predicate: Callable[[], object], timeout: float, what: str) -> Any:
        """``wait_for`` while this daemon runs: fails at once if it exits; the log is in the message."""

        def running() -> None:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited ({self.proc.returncode}) waiting for {what}:\n{self.log}")

        return wait_for(predicate, timeout, what, check=running, explain=lambda: self.log)

    def wait_log(self, text: str, timeout: float = 15.0) -> None:
        self.wait_for(lambda: text in self.log, timeout, repr(text))

    def address(self, timeout: float = 15.0) -> str:
        """The http://host:port of the daemon's server (read from its start line)."""
        match = self.wait_for(lambda: re.search(r"metrics on (http://[\d.]+:\d+)/", self.log), timeout, "server")
        return match.group(1)  # type: ignore[union-attr]

    def stop(self) -> int:
        """SIGTERM (SIGKILL after 30 s), then end what is left of its process group; its exit status."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self._log.closed:  # once: afterwards the group id may name someone else's group
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # the group this daemon led: only its own children
            except ProcessLookupError:
                pass
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
