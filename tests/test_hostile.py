"""Hostile inputs (fixtures/hostile/cases.toml): each through the real fetch, parse, extract and store.

Every case is served by a loopback server and polled by ``pipeline.process_source``
in a fresh process (tests/loopback.py's memory-probe approach: RSS before the poll,
peak RSS during it after clearing the high-water mark), into a SQLite store in a
temporary folder. The case states its expected outcome and its memory and time
bounds; this file only knows how to serve each kind of body.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import tomllib
import zlib
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.conftest import FIXTURES, ROOT
from tests.loopback import Handler, Loopback, bomb

HOSTILE = FIXTURES / "hostile"
CASES = tomllib.loads((HOSTILE / "cases.toml").read_text(encoding="utf-8"))["case"]

_PROBE = textwrap.dedent("""
    import json, sys, time
    from ingest import dedup
    from ingest.config import load
    from ingest.fetch import Fetcher
    from ingest.pipeline import Deps, process_source
    from ingest.store import Store

    def status_kb(key):
        with open("/proc/self/status") as f:
            return int(f.read().split(key + ":")[1].split()[0])

    config = load(sys.argv[1])
    with Store.open(config.store.url, dedup.scheme_for(config.dedup).as_dict()) as store:
        fetcher = Fetcher(config.fetch)
        state = store.sync_sources(config.sources)["hostile"]
        before = status_kb("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:  # the high-water mark from here on
            f.write("5")
        started = time.monotonic()
        report = process_source(config.sources[0], state, Deps(config, store, fetcher))
        seconds = time.monotonic() - started
        peak = status_kb("VmHWM")
        texts = [r[0] + " " + r[1] for r in store.engine.connect().exec_driver_sql("SELECT title, text FROM items")]
    print(json.dumps({"ok": report.ok, "error_kind": report.error_kind, "error": report.error,
                      "items": len(texts), "before_kb": before,
                      "peak_kb": peak, "seconds": seconds, "texts": texts[:50]}))
""")


# ---------------------------------------------------------------------------- how bodies are served


def many_entries(count: int, link: Callable[[int], str] | None = None, first: int = 0) -> bytes:
    """An RSS feed of ``count`` short entries numbered from ``first`` (each linking ``link(i)``)."""
    parts = ["<?xml version='1.0'?><rss version='2.0'><channel><title>many</title>"]
    for i in range(first, first + count):
        url = f"<link>{link(i)}</link>" if link else ""
        parts.append(f"<item><guid>e{i}</guid><title>Entry number {i} of the long feed</title>{url}"
                     f"<description>Short entry {i}: a few words that are not long enough for extraction.</description></item>")
    parts.append("</channel></rss>")
    return "".join(parts).encode()


def _page(i: int) -> bytes:
    words = " ".join(f"w{(i * 7919 + k) % 5003}" for k in range(400))
    body = "".join(f"<p>Paragraph {p} of article {i}. {words}</p>" for p in range(8))
    return f"<html><head><title>Article {i}</title></head><body><nav>menu</nav><article>{body}</article></body></html>".encode()


def serve(server: Loopback, case: dict[str, Any]) -> str:
    """Route the case on ``server``; the feed's URL."""
    kind, size = case.get("generator"), case.get("size", 0)
    if kind is None:
        body = (HOSTILE / case["file"]).read_bytes().replace(b"{base}", server.url("").rstrip("/").encode())
        for placeholder, (unit, times) in case.get("fill", {}).items():
            body = body.replace(placeholder.encode(), unit.encode() * times)
        server.respond("/feed", body, headers={"Content-Type": "application/rss+xml"})
    elif kind == "endless":
        chunk = b"<!-- " + b"x" * 65_000 + b" -->"
        server.route("/feed", lambda h: h.stream((chunk for _ in range(size // len(chunk))),
                                                 {"Content-Type": "application/rss+xml"}))
    elif kind == "gzip_bomb":
        data = bomb(size)
        server.respond("/feed", data, headers={"Content-Type": "application/rss+xml", "Content-Encoding": "gzip"})
    elif kind == "deflate_bomb":
        compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        zeros = bytes(1 << 20)
        data = b"".join(compressor.compress(zeros) for _ in range(size >> 20)) + compressor.flush()
        server.respond("/feed", data, headers={"Content-Type": "application/rss+xml", "Content-Encoding": "deflate"})
    elif kind == "trickle":
        feed = many_entries(1)

        def trickle(h: Handler) -> None:
            h.send_response(200)
            h.send_header("Content-Type", "application/rss+xml")
            h.send_header("Content-Length", str(len(feed)))
            h.end_headers()
            for i in range(0, len(feed), size):
                h.wfile.write(feed[i:i + size])
                h.wfile.flush()
                time.sleep(1.0)  # the server playing slow: one step a second

        server.route("/feed", trickle)
    elif kind == "redirect_loop":
        server.respond("/feed", status=302, headers={"Location": "/feed"})
    elif kind == "many_entries":
        server.respond("/feed", many_entries(size), headers={"Content-Type": "application/rss+xml"})
    elif kind == "linked_pages":
        server.respond("/feed", many_entries(size, lambda i: server.url(f"/p/{i}")),
                       headers={"Content-Type": "application/rss+xml"})
        for i in range(size):
            server.respond(f"/p/{i}", _page(i), headers={"Content-Type": "text/html"})
    else:
        raise AssertionError(f"case {case['name']}: unknown generator {kind!r}")
    return server.url("/feed")


def probe(tmp_path: Path, case: dict[str, Any], url: str) -> dict[str, Any]:
    """Poll the case's feed once in a fresh process; what happened and what it cost."""
    fetch = "".join(f"{k} = {json.dumps(v)}\n" for k, v in case.get("fetch", {}).items())
    source = "".join(f"{k} = {json.dumps(v)}\n" for k, v in case.get("source", {}).items())
    config = tmp_path / "ingest.toml"
    config.write_text(f'[store]\nurl = "sqlite:///{tmp_path}/store.db"\n[fetch]\n{fetch}\n'
                      f'[[sources]]\nname = "hostile"\nurl = "{url}"\n{source}', encoding="utf-8")
    env = {"PYTHONPATH": str(ROOT), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    done = subprocess.run([sys.executable, "-c", _PROBE, str(config)], capture_output=True, text=True,
                          timeout=case["max_seconds"] + 120, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def _params() -> list[Any]:
    return [pytest.param(c, id=c["name"], marks=[pytest.mark.slow] if c.get("slow") else []) for c in CASES]


@pytest.mark.parametrize("case", _params())
def test_hostile_case(tmp_path: Path, case: dict[str, Any]) -> None:
    expect = case["expect"]
    with Loopback() as server:
        got = probe(tmp_path, case, serve(server, case))
        hits = server.hits()
        requested = {s.path for s in hits}
    growth_mb = (got["peak_kb"] - got["before_kb"]) / 1024
    print(f"{case['name']}: {got['ok']} {got['error_kind']} items={got['items']} growth={growth_mb:.1f} MB "
          f"peak={got['peak_kb'] / 1024:.1f} MB {got['seconds']:.2f} s")
    assert got["ok"] == expect["ok"], got["error"]
    if "error_kind" in expect:
        assert got["error_kind"] == expect["error_kind"], got["error"]
    if "items" in expect:
        assert got["items"] == expect["items"]
    if "requests" in expect:
        assert len(hits) == expect["requests"]
    if "items_max" in expect:
        assert got["items"] <= expect["items_max"]
    for text in expect.get("not_stored", []):
        assert not any(text in t for t in got["texts"]), f"{text!r} was stored"
    for path in expect.get("no_request", []):
        assert path not in requested, f"a request arrived at {path}"
    assert growth_mb <= case["max_growth_mb"], f"memory grew {growth_mb:.0f} MB"
    assert got["seconds"] <= case["max_seconds"], f"took {got['seconds']:.1f} s"


def test_every_case_states_what_it_is_and_its_bounds() -> None:
    names = [c["name"] for c in CASES]
    assert len(names) == len(set(names))
    for case in CASES:
        assert {"name", "what", "expect", "max_growth_mb", "max_seconds"} <= case.keys(), case.get("name")
        assert ("file" in case) != ("generator" in case), case["name"]
        assert "file" not in case or (HOSTILE / case["file"]).is_file(), case["name"]
