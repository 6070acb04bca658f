"""End-to-end throughput: ingest against the naive and the best bare pipelines.

``python -m bench`` generates a seeded corpus (``bench.gen``), writes it to a temp
folder, serves it from a loopback HTTP server (a subprocess, so serving does not share
a GIL with what is measured) and runs three contestants on it, each as its own
subprocess, several times:

- ``ingest``: ``python -m ingest --once --json`` on a fresh SQLite store (full_text on
  for the corpus' full-text sources), stage timings from the ``timings`` key;
- ``baseline``: what a user writes in an afternoon: ``requests.get`` each feed and page
  in turn, feedparser and trafilatura with default settings, datasketch MinHash fed
  one shingle at a time with its default SHA-1 hash, an in-memory MinHashLSH; no store;
- ``limit``: the best bare pipeline with the same libraries: concurrent fetches,
  feedparser without sanitising, trafilatura, bulk MinHash with xxh32, the CPU work in
  a process pool over every core; no store, no cleaning, no dedup decision.

Throughput is items (feed entries processed) per second of the contestant's wall time,
interpreter start and imports included. Peak RSS is the sum over the contestant's
process tree, sampled every 50 ms (and the largest single process, from wait4).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
STAGES = ("fetch", "parse", "extract", "dedup", "store")
CONTESTANTS = ("ingest", "baseline", "limit")
BEFORE_ROOT: list[Path] = [ROOT]
BEFORE_PROCESSES: list[int | None] = [None]
SHINGLE = 3
NUM_PERM = 128


# ---------------------------------------------------------------------------- server


def serve(directory: Path, port: int, addresses: tuple[str, ...] = ("127.0.0.1",), etags: bool = False) -> None:
    """Serve every file under ``directory`` from memory on each of ``addresses`` at ``port``
    (HTTP/1.1 keep-alive); with ``etags``, each file's ETag and 304 for a matching If-None-Match."""
    files = {"/" + str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()}
    tags = {path: '"' + hashlib.sha256(body).hexdigest()[:16] + '"' for path, body in files.items()} if etags else {}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # headers and body go out in two writes: without TCP_NODELAY the second waits
        # for the client's delayed ACK (40 ms a response on Linux)
        disable_nagle_algorithm = True

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            path = self.path.split("?", 1)[0]
            body, tag = files.get(path), tags.get(path)
            if body is None or (tag and self.headers.get("If-None-Match") == tag):
                self.send_response(404 if body is None else 304)
                if tag:
                    self.send_header("ETag", tag)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            kind = "application/rss+xml" if path.endswith(".xml") else "text/html; charset=utf-8"
            self.send_header("Content-Type", kind)
            if tag:
                self.send_header("ETag", tag)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.request_queue_size = 256
    servers = [ThreadingHTTPServer((address, port), Handler) for address in addresses]
    for server in servers[1:]:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    print("ready", flush=True)
    servers[0].serve_forever()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------- contestants


def _load_manifest(path: str) -> list[dict[str, Any]]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _shingles(text: str) -> set[str]:
    words = text.lower().split()
    return {" ".join(words[i : i + SHINGLE]) for i in range(max(1, len(words) - SHINGLE + 1))}


def run_baseline(manifest: list[dict[str, Any]]) -> dict[str, Any]:
    """The simplest loop: one request at a time, library defaults, per-shingle SHA-1 MinHash."""
    import feedparser
    import requests
    import trafilatura
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=0.5, num_perm=NUM_PERM)
    items = duplicates = 0
    for source in manifest:
        feed = feedparser.parse(requests.get(source["url"], timeout=30).content)
        for entry in feed.entries:
            if source["full_text"]:
                html = requests.get(entry.link, timeout=30).text
            else:
                html = entry.content[0].value if "content" in entry else entry.get("summary", "")
            text = trafilatura.extract(html) or entry.get("summary", "") or entry.title
            m = MinHash(num_perm=NUM_PERM)
            for shingle in _shingles(text):
                m.update(shingle.encode("utf-8"))
            if lsh.query(m):
                duplicates += 1
            lsh.insert(f"{source['name']}/{items}", m)
            items += 1
    return {"items": items, "duplicates": duplicates}


def _limit_parse(body: bytes) -> list[tuple[str, str]]:
    import feedparser

    feed = feedparser.parse(body, sanitize_html=False, resolve_relative_uris=False)
    return [(e.get("link", ""), e.content[0].value if "content" in e else e.get("summary", "")) for e in feed.entries]


def _limit_analyse(htmls: list[str]) -> list[bytes]:
    import trafilatura
    import xxhash
    from datasketch import MinHash

    template = MinHash(num_perm=NUM_PERM, hashfunc=xxhash.xxh32_intdigest)
    out = []
    for html in htmls:
        text = trafilatura.extract(html) or ""
        m = template.copy()
        m.update_batch([s.encode("utf-8") for s in _shingles(text)])
        out.append(m.hashvalues.tobytes())
    return out


def run_limit(manifest: list[dict[str, Any]], processes: int, threads: int = 16) -> dict[str, Any]:
    """Concurrent fetches, CPU work (parse, extract, bulk xxh32 MinHash) in a process pool."""
    import requests

    session = requests.Session()
    session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=threads * 2))
    cpu = ProcessPoolExecutor(processes)
    pages = ThreadPoolExecutor(threads, thread_name_prefix="page")

    def one(source: dict[str, Any]) -> int:
        entries = cpu.submit(_limit_parse, session.get(source["url"], timeout=30).content).result()
        if source["full_text"]:
            htmls = list(pages.map(lambda e: session.get(e[0], timeout=30).text, entries))
        else:
            htmls = [content for _, content in entries]
        half = max(1, len(htmls) // 2)  # two chunks: both cores get work from one big source
        signatures = [s for chunk in cpu.map(_limit_analyse, [htmls[:half], htmls[half:]]) for s in chunk]
        return len(signatures)

    with cpu, pages, ThreadPoolExecutor(threads, thread_name_prefix="feed") as feeds:
        items = sum(feeds.map(one, manifest))
    return {"items": items}


# ---------------------------------------------------------------------------- measuring


def _tree_rss(root: int) -> int:
    """Resident bytes of ``root`` and its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry)
        children.setdefault(int(fields[1]), []).append(pid)  # ppid
        rss[pid] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")  # rss in pages
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo += children.get(pid, [])
    return total


def measure(cmd: list[str], env: dict[str, str], cwd: Path) -> dict[str, Any]:
    """Run ``cmd``; its wall time, peak RSS (tree, sampled; and largest process) and stdout JSON."""
    out_file = tempfile.TemporaryFile()
    err_file = tempfile.TemporaryFile()
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out_file, stderr=err_file)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_rss(proc.pid))
            done.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    done.set()
    sampler.join()
    out_file.seek(0)
    err_file.seek(0)
    stdout, stderr = out_file.read().decode(), err_file.read().decode()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{stderr[-3000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    return {
        "wall": wall, "peak_rss_tree": peak, "peak_rss_max_process": usage.ru_maxrss * 1024,
        "cpu": usage.ru_utime + usage.ru_stime, "output": result,
    }


def _ingest_config(directory: Path, manifest: list[dict[str, Any]], processes: int | None) -> Path:
    lines = [
        "[store]", f'url = "sqlite:///{directory / "store.db"}"', "",
        "[fetch]",
        "allow_private_addresses = true  # the corpus is served on loopback",
        # one loopback host stands for many real hosts: no politeness delay, like the
        # bare pipelines (real runs spread their requests over many hosts)
        "per_host_delay = 0", "per_host_concurrency = 16", "concurrency = 16", "",
        "[daemon]", "workers = 16",
    ]
    if processes is not None:
        lines.append(f"processes = {processes}")
    lines.append("")
    for source in manifest:
        lines += ["[[sources]]", f'name = "{source["name"]}"', f'url = "{source["url"]}"',
                  f"full_text = {'true' if source['full_text'] else 'false'}", ""]
    path = directory / "ingest.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def run_contestant(name: str, work: Path, manifest_path: Path, manifest: list[dict[str, Any]],
                   processes: int | None, run: int, ingest_root: Path = ROOT) -> dict[str, Any]:
    """One measured run of one contestant."""
    label = name
    if name == "before":  # ingest from another checkout (--before), to measure a change
        name, ingest_root, processes = "ingest", BEFORE_ROOT[0], BEFORE_PROCESSES[0]
    env = {**os.environ, "PYTHONPATH": str(ingest_root if name == "ingest" else ROOT)}
    if name == "ingest":
        scratch = work / f"{label}-{run}"
        scratch.mkdir()
        config = _ingest_config(scratch, manifest, processes)
        cmd = [sys.executable, "-m", "ingest", "--once", "--json", "--log-level", "error", "-c", str(config)]
    else:
        cmd = [sys.executable, "-m", "bench.run", name, str(manifest_path)]
        if name == "limit" and processes:
            cmd += ["--processes", str(processes)]
    # cwd outside any checkout: `python -m` puts the cwd first on sys.path, ahead of PYTHONPATH
    result = measure(cmd, env, work)
    out = result["output"]
    items = out.get("items", out.get("items_new", 0) + out.get("items_updated", 0))
    result["items"] = items
    return result


def _commit(root: Path) -> str | None:
    done = subprocess.run(["git", "-C", str(root), "describe", "--always", "--dirty"], capture_output=True, text=True)
    return done.stdout.strip() or None


def _stats(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def bench(args: argparse.Namespace) -> dict[str, Any]:
    """Generate, serve, run each contestant ``repeats`` times (interleaved); the figures."""
    from bench.gen import generate, write

    started = time.perf_counter()
    corpus = generate(args.sources, args.items, args.seed, args.full_text_share)
    generated = time.perf_counter() - started
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as tmp:
        work = Path(tmp)
        write(corpus, work / "www", port)
        manifest = [
            {"name": f"s{s:04d}", "url": f"http://127.0.0.1:{port}{corpus.feed_path(s)}",
             "full_text": s in corpus.full_text_sources}
            for s in range(corpus.sources)
        ]
        manifest_path = work / "manifest.json"
        manifest_path.write_text(json.dumps(manifest), encoding="utf-8")
        server = subprocess.Popen(
            [sys.executable, "-m", "bench.run", "serve", str(work / "www"), str(port)],
            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True,
        )
        try:
            assert server.stdout is not None and server.stdout.readline().strip() == "ready"
            runs: dict[str, list[dict[str, Any]]] = {c: [] for c in args.contestants}
            for run in range(args.repeats):
                for name in args.contestants:  # interleaved, so machine noise hits all alike
                    result = run_contestant(name, work, manifest_path, manifest, args.processes, run, args.ingest_root)
                    runs[name].append(result)
                    print(f"  run {run + 1}/{args.repeats} {name:<8} {result['items'] / result['wall']:8.1f} items/s"
                          f"  ({result['items']} items in {result['wall']:.2f}s)", file=sys.stderr, flush=True)
        finally:
            server.terminate()
            server.wait()
    return summarise(args, corpus, runs, generated)


def summarise(args: argparse.Namespace, corpus: Any, runs: dict[str, list[dict[str, Any]]],
              generated: float) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": args.name,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "load_at_end": os.getloadavg()},
        "corpus": {"seed": corpus.seed, "sources": corpus.sources, "items_per_source": corpus.items_per_source,
                   "items": len(corpus.items), "full_text_sources": len(corpus.full_text_sources),
                   "copies": sum(i.relation != "original" for i in corpus.items),
                   "feed_bytes": corpus.feed_bytes, "page_bytes": corpus.page_bytes, "generated_s": round(generated, 2)},
        "repeats": args.repeats, "processes": args.processes,
        "ingest_commit": _commit(args.ingest_root),
        "before_commit": _commit(BEFORE_ROOT[0]) if "before" in args.contestants else None,
        "before_processes": BEFORE_PROCESSES[0],
        "contestants": {},
    }
    for name, results in runs.items():
        items = results[0]["items"]
        entry: dict[str, Any] = {
            "items": items,
            "items_per_s": _stats([r["items"] / r["wall"] for r in results]),
            "sources_per_s": _stats([corpus.sources / r["wall"] for r in results]),
            "wall_s": _stats([r["wall"] for r in results]),
            "cpu_s": _stats([r["cpu"] for r in results]),
            "peak_rss_mb": _stats([r["peak_rss_tree"] / 2**20 for r in results]),
            "peak_rss_max_process_mb": _stats([r["peak_rss_max_process"] / 2**20 for r in results]),
        }
        if name in ("ingest", "before"):
            totals = {s: statistics.median([r["output"].get("timings", {}).get(s, 0.0) for r in results]) for s in STAGES}
            whole = sum(totals.values()) or 1.0
            entry["stage_share"] = {s: round(v / whole, 3) for s, v in totals.items()}
            entry["duplicates"] = results[0]["output"].get("duplicates")
            entry["clusters"] = results[0]["output"].get("clusters")
        elif name == "baseline":
            entry["duplicates"] = results[0]["output"].get("duplicates")
        out["contestants"][name] = entry
    c = out["contestants"]
    if "ingest" in c:
        for other, key in (("baseline", "ingest_over_baseline"), ("limit", "ingest_over_limit"),
                           ("before", "ingest_over_before")):
            if other in c:
                out[key] = _stats([
                    (a["items"] / a["wall"]) / (b["items"] / b["wall"]) for a, b in zip(runs["ingest"], runs[other])
                ]) | {"of_medians": c["ingest"]["items_per_s"]["median"] / c[other]["items_per_s"]["median"]}
    return out


def table(result: dict[str, Any]) -> str:
    """The figures as a Markdown table."""
    corpus = result["corpus"]
    lines = [
        f"corpus: {corpus['sources']} sources x {corpus['items_per_source']} items = {corpus['items']} items "
        f"({corpus['copies']} syndicated copies, {corpus['full_text_sources']} full-text sources, "
        f"feeds {corpus['feed_bytes'] / 2**20:.1f} MB, pages {corpus['page_bytes'] / 2**20:.1f} MB), seed {corpus['seed']}; "
        f"{result['repeats']} runs each on {result['machine']['cpus']} CPUs (shared machine: expect noise)",
        "",
        "| contestant | items/s min / median / max | sources/s (median) | wall s (median) | CPU s (median) | peak RSS MB, tree (median) |",
        "|---|---|---|---|---|---|",
    ]
    for name, c in result["contestants"].items():
        ips = c["items_per_s"]
        lines.append(
            f"| {name} | {ips['min']:.1f} / {ips['median']:.1f} / {ips['max']:.1f} | {c['sources_per_s']['median']:.2f} "
            f"| {c['wall_s']['median']:.2f} | {c['cpu_s']['median']:.1f} | {c['peak_rss_mb']['median']:.0f} |"
        )
    for key, label in (("ingest_over_baseline", "ingest / baseline"), ("ingest_over_limit", "ingest / limit"),
                       ("ingest_over_before", "ingest / before")):
        if key in result:
            r = result[key]
            lines.append(f"\n{label} (per interleaved run): min {r['min']:.2f}, median {r['median']:.2f}, max {r['max']:.2f}; "
                         f"ratio of medians {r['of_medians']:.2f}")
    for name in ("ingest", "before"):
        if name in result["contestants"] and "stage_share" in result["contestants"][name]:
            share = result["contestants"][name]["stage_share"]
            lines.append(f"\n{name} stage share (thread time, median run): "
                         + ", ".join(f"{s} {share[s] * 100:.0f}%" for s in STAGES))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    p = sub.add_parser("serve", help="(internal) serve a corpus folder")
    p.add_argument("directory", type=Path)
    p.add_argument("port", type=int)
    for name in ("baseline", "limit"):
        p = sub.add_parser(name, help=f"(internal) run the {name} pipeline over a manifest")
        p.add_argument("manifest")
        p.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--sources", type=int, default=20, help="feeds in the corpus (default 20)")
    parser.add_argument("--items", type=int, default=50, help="entries per feed (default 50)")
    parser.add_argument("--seed", type=int, default=None, help="corpus seed (default: bench.gen.SEED)")
    parser.add_argument("--full-text-share", type=float, default=0.3, help="share of sources with full_text on")
    parser.add_argument("--repeats", type=int, default=5, help="measured runs per contestant (default 5)")
    parser.add_argument("--processes", type=int, default=None,
                        help="process pool size for ingest ([daemon] processes) and the limit (default: all CPUs)")
    parser.add_argument("--only", action="append", choices=CONTESTANTS, dest="contestants",
                        help="run only this contestant (repeatable)")
    parser.add_argument("--ingest-root", type=Path, default=ROOT,
                        help="checkout whose ingest package is measured (to compare before/after a change)")
    parser.add_argument("--before", type=Path, default=None, metavar="CHECKOUT",
                        help="also run ingest from this checkout, interleaved (contestant 'before')")
    parser.add_argument("--before-processes", type=int, default=None, metavar="N",
                        help="[daemon] processes for the 'before' contestant (e.g. 1: without the process pool)")
    parser.add_argument("--name", default=None, help="results file name (default: <sources>x<items>)")
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args.directory, args.port)
        return 0
    if args.command == "baseline":
        started = time.perf_counter()
        out = run_baseline(_load_manifest(args.manifest))
        print(json.dumps(out | {"elapsed": time.perf_counter() - started}))
        return 0
    if args.command == "limit":
        started = time.perf_counter()
        out = run_limit(_load_manifest(args.manifest), args.processes)
        print(json.dumps(out | {"elapsed": time.perf_counter() - started}))
        return 0
    from bench.gen import SEED

    args.seed = SEED if args.seed is None else args.seed
    args.contestants = args.contestants or list(CONTESTANTS)
    if args.before or args.before_processes is not None:
        BEFORE_ROOT[0] = (args.before or ROOT).resolve()
        BEFORE_PROCESSES[0] = args.before_processes if args.before_processes is not None else args.processes
        args.contestants.insert(1, "before")
    args.name = args.name or f"{args.sources}x{args.items}"
    result = bench(args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{args.name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(table(result))
    print(f"\nwritten: {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
