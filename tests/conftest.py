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
    from ingest.pipeline import Deps, run_once
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
