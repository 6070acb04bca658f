"""A real HTTP/1.1 server on a loopback address that records every request.

Used by the fetch tests and by bench/fetch_limits.py (with a memory probe that fetches
in a fresh process and reports its peak RSS). Routes are functions of the
request handler, so a test can answer with anything a hostile server would send:
endless bodies, trickled bytes, gzip bombs, redirects, validators.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import time
import zlib
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Iterable
from xml.sax.saxutils import escape

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Seen:
    """One request as the server received it."""

    path: str
    headers: dict[str, str]  # lower-case names
    at: float  # time.monotonic() on arrival


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so connection reuse is exercised
    server: "_Server"

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        box = self.server.box
        box._arrive(Seen(self.path, {k.lower(): v for k, v in self.headers.items()}, time.monotonic()))
        try:
            route = box.routes.get(self.path.split("?", 1)[0])
            if route is None:
                self.reply(404, b"not found")
            else:
                route(self)
        except (BrokenPipeError, ConnectionResetError):  # the client hung up: expected for caps and deadlines
            self.close_connection = True
        finally:
            box._leave()

    def reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        """Send a whole response with a Content-Length."""
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.server.box.add_sent(len(body))

    def stream(self, chunks: Iterable[bytes], headers: dict[str, str] | None = None, status: int = 200) -> None:
        """Send a body of unknown length (until the connection closes)."""
        self.close_connection = True
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Connection", "close")
        self.end_headers()
        for chunk in chunks:
            self.wfile.write(chunk)
            self.wfile.flush()
            self.server.box.add_sent(len(chunk))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    box: "Loopback"

    def handle_error(self, request: object, client_address: object) -> None:
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            return  # a client that hangs up (cap, deadline, refused redirect) is what these tests cause
        super().handle_error(request, client_address)


class _Server6(_Server):
    address_family = socket.AF_INET6


class Loopback:
    """A recording server on ``host`` (127.0.0.1, 127.0.0.2, ::1 ...), port chosen by the OS."""

    def __init__(self, host: str = "127.0.0.1", tls: tuple[str, str] | None = None) -> None:
        self.host = host
        self.scheme = "https" if tls else "http"
        self.routes: dict[str, Callable[[Handler], None]] = {}
        self.requests: list[Seen] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.bytes_sent = 0
        self._lock = threading.Lock()
        cls = _Server6 if ":" in host else _Server
        self._server = cls((host, 0), Handler)
        self._server.box = self
        self.port = self._server.server_address[1]
        if tls:  # (certificate chain file, key file): https with that certificate
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str = "/") -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{path}"

    def route(self, path: str, handler: Callable[[Handler], None]) -> None:
        self.routes[path] = handler

    def respond(self, path: str, body: bytes = b"", status: int = 200, headers: dict[str, str] | None = None) -> None:
        """A fixed answer on ``path``."""
        self.routes[path] = lambda h: h.reply(status, body, headers)

    def hits(self, path: str | None = None) -> list[Seen]:
        with self._lock:
            return [r for r in self.requests if path is None or r.path.split("?", 1)[0] == path]

    def add_sent(self, n: int) -> None:
        with self._lock:
            self.bytes_sent += n

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "Loopback":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _arrive(self, seen: Seen) -> None:
        with self._lock:
            self.requests.append(seen)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1


def rss(items: Iterable[tuple[str, str, str, str]], ttl_minutes: int | None = None, title: str = "Loopback") -> bytes:
    """An RSS 2.0 document of ``(guid, link, title, text)`` items."""
    body = [f"<rss version='2.0'><channel><title>{escape(title)}</title><link>http://example.org/</link>"]
    if ttl_minutes is not None:
        body.append(f"<ttl>{ttl_minutes}</ttl>")
    for guid, link, item_title, text in items:
        body.append(
            f"<item><guid isPermaLink='false'>{escape(guid)}</guid><link>{escape(link)}</link>"
            f"<title>{escape(item_title)}</title><description>{escape(text)}</description></item>"
        )
    body.append("</channel></rss>")
    return "".join(body).encode("utf-8")


def bomb(decompressed: int, chunk: int = 1 << 20) -> bytes:
    """A gzip body of ``decompressed`` zero bytes (about 1000:1)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(chunk)
    parts = [compressor.compress(zeros) for _ in range(decompressed // chunk)]
    parts.append(compressor.flush())
    return b"".join(parts)


_MEMORY_PROBE = textwrap.dedent("""
    import json, sys, time
    from ingest.config import FetchConfig, SourceConfig
    from ingest.errors import FetchError
    from ingest.fetch import Fetcher

    def status_kb(key):
        with open("/proc/self/status") as f:
            return int(f.read().split(key + ":")[1].split()[0])

    fetcher = Fetcher(FetchConfig(max_bytes=int(sys.argv[2]), timeout=60, per_host_delay=0))
    before = status_kb("VmRSS")
    # Reset the high-water mark: ru_maxrss would report the parent's RSS, inherited across fork+exec.
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    started = time.monotonic()
    try:
        fetcher.fetch_feed(SourceConfig(name="x", url=sys.argv[1]), None)
        outcome = "fetched"
    except FetchError as exc:
        outcome = str(exc)
    print(json.dumps({"before_kb": before, "peak_kb": status_kb("VmHWM"), "outcome": outcome,
                      "seconds": time.monotonic() - started}))
""")


def probe_memory(url: str, max_bytes: int) -> dict:
    """Fetch ``url`` in a fresh process (config URL: trusted): RSS before, peak RSS during (Linux /proc, KiB)."""
    env = {"PYTHONPATH": str(ROOT), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    done = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, url, str(max_bytes)], capture_output=True, text=True,
                          timeout=120, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"memory probe failed: {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout)
