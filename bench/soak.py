"""Soak: the daemon for N minutes against many loopback feeds; is resident memory flat?

    python -m bench.soak [--minutes 10] [--sources 500] [--interval 15] [--sample 15]

A threaded loopback server (in this process) serves ``/feed/<n>`` for every source:
ten items each, with ETag/If-None-Match (most polls end in 304). Every ``--churn``
seconds each feed gains a new item, at a per-feed offset so changes spread out; the
stories are shared by groups of feeds, so dedup sees copies. The daemon runs as a
subprocess (``python -m ingest -c FILE``); every ``--sample`` seconds this samples
its VmRSS from /proc/<pid>/status and its /metrics. Prints a table and the RSS slope
(least squares over the samples after the first ``--warmup`` seconds), writes JSON
to bench/results/soak.json. Not run by pytest.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from xml.sax.saxutils import escape

ROOT = Path(__file__).resolve().parent.parent
WORDS = ("council budget river museum railway storm harbour election vaccine market drought festival "
         "bridge court strike airport school hospital energy climate").split()


def story(story_id: int, words: int = 180) -> str:
    rng = random.Random(story_id)
    return " ".join(f"{rng.choice(WORDS)}{rng.randrange(5000)}" for _ in range(words))


class Feeds:
    """Feed n at time t: its last ten items; a new one every ``churn`` s at offset n."""

    def __init__(self, sources: int, churn: float, group: int) -> None:
        self.sources, self.churn, self.group = sources, churn, group
        self.started = time.time()
        self.requests = 0
        self.not_modified = 0

    def body(self, n: int) -> bytes:
        offset = (n * self.churn) / self.sources
        head = int((time.time() - self.started + offset) // self.churn)
        items = []
        for k in range(head, head - 10, -1):
            sid = k * 1000 + n // self.group  # feeds of one group carry the same story
            items.append(
                f"<item><guid>feed{n}-item{k}</guid><title>Story {sid}</title>"
                f"<link>https://example.org/{n}/{k}</link><description>{escape(story(sid))}</description></item>"
            )
        return (f'<?xml version="1.0"?><rss version="2.0"><channel><title>feed {n}</title>'
                f'<link>https://example.org/{n}</link>{"".join(items)}</channel></rss>').encode()


def serve(feeds: Feeds) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802
            feeds.requests += 1
            match = re.fullmatch(r"/feed/(\d+)", self.path)
            if not match:
                self.send_error(404)
                return
            body = feeds.body(int(match.group(1)))
            etag = '"' + hashlib.sha1(body).hexdigest()[:16] + '"'
            if self.headers.get("If-None-Match") == etag:
                feeds.not_modified += 1
                self.send_response(304)
                self.send_header("ETag", etag)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/rss+xml")
            self.send_header("ETag", etag)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 256

    server = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def scrape(base: str) -> dict[str, float]:
    text = urllib.request.urlopen(base + "/metrics", timeout=10).read().decode()
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        head, value = line.rsplit(" ", 1)
        name = head.split("{", 1)[0]
        key = name
        if name in ("ingest_polls_total", "ingest_items_total"):
            outcome = re.search(r'outcome="(\w+)"', head)
            key = f"{name}:{outcome.group(1) if outcome else ''}"
        totals[key] = totals.get(key, 0.0) + float(value)
    return totals


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (x, y) points."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    den = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / den if den else 0.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--sources", type=int, default=500)
    ap.add_argument("--interval", type=float, default=15.0, help="poll interval of every source, seconds")
    ap.add_argument("--churn", type=float, default=60.0, help="each feed gains an item this often, seconds")
    ap.add_argument("--group", type=int, default=25, help="feeds that carry the same stories")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--sample", type=float, default=15.0, help="seconds between samples")
    ap.add_argument("--warmup", type=float, default=60.0, help="seconds left out of the slope")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "soak.json"))
    args = ap.parse_args(argv)

    feeds = Feeds(args.sources, args.churn, args.group)
    server = serve(feeds)
    port = server.server_address[1]
    workdir = Path(tempfile.mkdtemp(prefix="ingest-soak-"))
    sources = "".join(
        f'[[sources]]\nname = "feed{n}"\nurl = "http://127.0.0.1:{port}/feed/{n}"\n' for n in range(args.sources)
    )
    metrics_port = _free_port()
    base = f"http://127.0.0.1:{metrics_port}"
    config = workdir / "ingest.toml"
    config.write_text(
        f'[store]\nurl = "sqlite:///{workdir}/store.db"\n'
        f'[fetch]\nper_host_delay = 0\nper_host_concurrency = 64\nconcurrency = 64\n'
        f'[daemon]\nworkers = {args.workers}\nlisten = "127.0.0.1:{metrics_port}"\n'
        f"[defaults]\ninterval = {args.interval}\n{sources}"
    )
    log_path = workdir / "daemon.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(log_path, "w") as log:
        daemon = subprocess.Popen([sys.executable, "-m", "ingest", "-c", str(config), "--log-level", "warning",
                                   "--log-format", "json"], stderr=log, stdout=subprocess.DEVNULL, env=env)
    print(f"soak: {args.sources} sources every {args.interval:g}s for {args.minutes:g} min, "
          f"workers {args.workers}, daemon pid {daemon.pid}, work dir {workdir}", flush=True)
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(base + "/healthz", timeout=5).read()
            break
        except OSError:
            if time.monotonic() > deadline or daemon.poll() is not None:
                daemon.kill()
                print(f"soak: the daemon did not start; see {log_path}", file=sys.stderr)
                return 1
            time.sleep(0.5)

    started = time.monotonic()
    samples: list[dict[str, float]] = []
    print(f"{'min':>5} {'RSS MB':>7} {'polls':>7} {'304/unch':>8} {'errors':>6} {'items':>6} {'dups':>5} "
          f"{'lag p~':>7} {'missed':>6}", flush=True)
    try:
        while True:
            elapsed = time.monotonic() - started
            metrics = scrape(base)
            lag_n = metrics.get("ingest_scheduler_lag_seconds_count", 0.0)
            sample = {
                "t": round(elapsed, 1), "rss_kb": rss_kb(daemon.pid),
                "polls": metrics.get("ingest_polls_total:ok", 0) + metrics.get("ingest_polls_total:not_modified", 0)
                + metrics.get("ingest_polls_total:error", 0),
                "not_modified": metrics.get("ingest_polls_total:not_modified", 0),
                "errors": metrics.get("ingest_polls_total:error", 0),
                "items": metrics.get("ingest_items_total:new", 0),
                "duplicates": metrics.get("ingest_items_total:duplicate", 0),
                "lag_mean": metrics.get("ingest_scheduler_lag_seconds_sum", 0.0) / lag_n if lag_n else 0.0,
                "missed": metrics.get("ingest_polls_missed_total", 0),
            }
            samples.append(sample)
            print(f"{elapsed / 60:5.1f} {sample['rss_kb'] / 1024:7.1f} {sample['polls']:7.0f} "
                  f"{sample['not_modified']:8.0f} {sample['errors']:6.0f} {sample['items']:6.0f} "
                  f"{sample['duplicates']:5.0f} {sample['lag_mean']:7.2f} {sample['missed']:6.0f}", flush=True)
            if elapsed >= args.minutes * 60 or daemon.poll() is not None:
                break
            time.sleep(max(0.0, args.sample - (time.monotonic() - started - elapsed)))
    finally:
        stop_at = time.monotonic()
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(60)
        stop_seconds = time.monotonic() - stop_at
        server.shutdown()

    steady = [(s["t"] / 60, s["rss_kb"] / 1024) for s in samples if s["t"] >= args.warmup]
    first, last = samples[0], samples[-1]
    warm = next((s for s in samples if s["t"] >= args.warmup), first)
    result = {
        "sources": args.sources, "interval": args.interval, "minutes": args.minutes, "workers": args.workers,
        "rss_start_mb": round(first["rss_kb"] / 1024, 1), "rss_after_warmup_mb": round(warm["rss_kb"] / 1024, 1),
        "rss_end_mb": round(last["rss_kb"] / 1024, 1), "rss_max_mb": round(max(s["rss_kb"] for s in samples) / 1024, 1),
        "rss_slope_mb_per_min": round(slope(steady), 3),
        "polls": last["polls"], "polls_per_s": round(last["polls"] / max(last["t"], 1), 1),
        "items": last["items"], "duplicates": last["duplicates"], "errors": last["errors"],
        "missed": last["missed"], "lag_mean_s": round(last["lag_mean"], 3),
        "feed_requests": feeds.requests, "feed_304": feeds.not_modified,
        "exit_code": code, "stop_seconds": round(stop_seconds, 2), "samples": samples,
    }
    print(f"RSS: start {result['rss_start_mb']} MB, after {args.warmup:g}s {result['rss_after_warmup_mb']} MB, "
          f"end {result['rss_end_mb']} MB, max {result['rss_max_mb']} MB; slope after warm-up "
          f"{result['rss_slope_mb_per_min']} MB/min")
    print(f"polls {result['polls']:.0f} ({result['polls_per_s']}/s), items {result['items']:.0f}, "
          f"duplicates {result['duplicates']:.0f}, errors {result['errors']:.0f}, missed {result['missed']:.0f}, "
          f"mean lag {result['lag_mean_s']}s; SIGTERM -> exit {code} in {stop_seconds:.1f}s")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    return 0 if code == 0 else 1


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if __name__ == "__main__":
    sys.exit(main())
