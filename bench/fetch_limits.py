"""Fetch politeness and limits, measured against a recording loopback server.

1. Requests and bytes per source over 10 polls of an unchanged feed (``run_once``, as
   ``--once`` would poll it), for a server with ETag, with Last-Modified only, with no
   validators (same body every time), and with a 301 in front of an ETag server.
2. Peak RSS of a fresh process fetching an endless body and a 1 GB gzip bomb with
   max_bytes = 10 MB (vs its RSS at start), and how long a server trickling one byte
   every 0.2 s holds a request whose total deadline is 2 s.

    python -m bench.fetch_limits            # a few seconds; prints a table, writes JSON

Loopback only; the machine is shared, so timings are noisy (memory figures are not).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from ingest import dedup
from ingest.config import FetchConfig, SourceConfig, from_dict
from ingest.errors import FetchError
from ingest.fetch import Fetcher
from ingest.pipeline import Deps
from ingest.worker import run_once
from ingest.store import Store
from tests.loopback import Handler, Loopback, bomb, probe_memory, rss

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "fetch_limits.json"
POLLS = 10
MB = 1_000_000
WORDS = ("council harbour seawall engineers winter storms ferry terminal budget vote residents "
         "contractor stone cracks survey tender mayor report").split()


def _feed() -> bytes:
    """20 items of about 150 words each (about 25 KB), like a typical news feed."""
    items = []
    for n in range(20):
        text = " ".join(WORDS[(n * 7 + k * 3) % len(WORDS)] for k in range(150))
        items.append((f"item-{n}", f"http://example.org/story/{n}", f"Story {n} about the seawall", text))
    return rss(items)


def _server_modes(server: Loopback, body: bytes) -> dict[str, str]:
    etag, modified = '"abc123"', "Mon, 05 Jan 2026 10:00:00 GMT"
    plain = {"Content-Type": "application/rss+xml"}

    def with_etag(h: Handler) -> None:
        if h.headers.get("If-None-Match") == etag:
            h.reply(304, headers={"ETag": etag})
        else:
            h.reply(200, body, {**plain, "ETag": etag})

    def with_last_modified(h: Handler) -> None:
        if h.headers.get("If-Modified-Since") == modified:
            h.reply(304)
        else:
            h.reply(200, body, {**plain, "Last-Modified": modified})

    server.route("/etag", with_etag)
    server.route("/last-modified", with_last_modified)
    server.respond("/none", body, headers=plain)
    server.respond("/moved", status=301, headers={"Location": "/etag-new"})
    server.route("/etag-new", with_etag)
    return {
        "ETag (If-None-Match -> 304)": "/etag",
        "Last-Modified only (If-Modified-Since -> 304)": "/last-modified",
        "no validators, same body (hash skip)": "/none",
        "301 once, then ETag": "/moved",
    }


def polls_of_unchanged_feed() -> list[dict]:
    """Requests, full bodies, bytes and parses over POLLS polls of each kind of server."""
    body = _feed()
    rows = []
    with Loopback() as server, tempfile.TemporaryDirectory() as tmp:
        modes = _server_modes(server, body)
        for label, path in modes.items():
            name = path.strip("/")
            raw = {"store": {"url": f"sqlite:///{Path(tmp) / (name + '.db')}"}, "fetch": {"per_host_delay": 0},
                   "sources": [{"name": name, "url": server.url(path)}]}
            config = from_dict(raw, Path(tmp) / "ingest.toml")
            fetcher = Fetcher(config.fetch)
            before_requests, before_bytes = len(server.hits()), server.bytes_sent
            parsed = 0
            now = datetime(2026, 1, 5, tzinfo=timezone.utc)
            with Store.open(config.store.url, dedup.scheme_for(config.dedup).as_dict()) as store:
                for poll in range(POLLS):
                    clock = now + timedelta(minutes=15 * poll)
                    report = run_once(Deps(config, store, fetcher, clock=lambda c=clock: c)).sources[0]
                    assert report.ok, report.error
                    parsed += "parse" in report.timings
            fetcher.close()
            sent = server.bytes_sent - before_bytes
            rows.append({
                "server": label, "polls": POLLS, "requests": len(server.hits()) - before_requests,
                "full_bodies": round(sent / len(body), 2), "body_bytes_sent": sent, "parsed": parsed,
            })
    return rows


def memory_and_deadline(max_bytes: int) -> list[dict]:
    """Peak RSS on an endless body and a 1 GB gzip bomb; time a trickling server is held."""
    rows = []
    with Loopback() as server:
        server.route("/endless", lambda h: h.stream(iter(lambda: b"x" * 65536, None)))
        server.respond("/bomb", bomb(1 << 30), headers={"Content-Encoding": "gzip"})
        server.route("/trickle", lambda h: h.stream((time.sleep(0.2) or b"<" for _ in range(100))))
        for label, path in (("endless body", "/endless"), ("gzip bomb, 1 GB of zeros in ~1 MB", "/bomb")):
            sent_before = server.bytes_sent
            probe = probe_memory(server.url(path), max_bytes)
            rows.append({
                "case": label, "max_bytes": max_bytes, "rss_start_mb": round(probe["before_kb"] / 1024, 1),
                "rss_peak_mb": round(probe["peak_kb"] / 1024, 1),
                "growth_mb": round((probe["peak_kb"] - probe["before_kb"]) / 1024, 1),
                "wire_bytes_sent_mb": round((server.bytes_sent - sent_before) / MB, 1),
                "seconds": round(probe["seconds"], 2), "outcome": probe["outcome"].split(": ", 1)[-1][:90],
            })
        fetcher = Fetcher(FetchConfig(timeout=2.0, read_timeout=10.0, allow_private_addresses=True))
        started = time.monotonic()
        try:
            fetcher.fetch_feed(SourceConfig(name="t", url=server.url("/trickle")), None)
            outcome = "fetched (deadline NOT enforced)"
        except FetchError as exc:
            outcome = f"{exc.kind}: {exc.message[:70]}"
        rows.append({"case": "trickle, 1 byte / 0.2 s, timeout = 2 s, read_timeout = 10 s",
                     "seconds": round(time.monotonic() - started, 2), "outcome": outcome})
        fetcher.close()
    return rows


def _table(rows: list[dict], columns: list[str]) -> str:
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(v.ljust(w) for v, w in zip(row, widths)) + " |" for row in cells]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-mb", type=int, default=10, help="max_bytes for the memory cases, in MB")
    args = parser.parse_args(argv)
    logging.getLogger("ingest").setLevel(logging.ERROR)  # the 301 case warns once, as it should
    polls = polls_of_unchanged_feed()
    limits = memory_and_deadline(args.max_mb * MB)
    print(f"Requests over {POLLS} polls of an unchanged {len(_feed()) // 1000} KB feed, one source:")
    print(_table(polls, ["server", "polls", "requests", "full_bodies", "body_bytes_sent", "parsed"]))
    print()
    print("Limits (fresh process per case; RSS at start = VmRSS, peak = VmHWM reset just before the fetch):")
    print(_table(limits, ["case", "max_bytes", "rss_start_mb", "rss_peak_mb", "growth_mb", "wire_bytes_sent_mb",
                          "seconds", "outcome"]))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}",
        "polls_of_unchanged_feed": polls, "limits": limits,
    }, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
