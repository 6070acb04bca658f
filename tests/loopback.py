"""The tests' one loopback HTTP server, their one feed builder, and a memory probe.

``Loopback`` is a real HTTP/1.1 server on a loopback address that records every
request with its arrival time. Routes are functions of the request handler, so a test
can answer with anything a hostile server would send: endless bodies, trickled bytes,
gzip bombs, redirects, validators; ``feed`` serves an RSS document, ``respond`` a fixed
answer (call either again to change a page while the server runs). ``hold`` makes
requests wait until the test releases them, and ``wait_hits`` waits until requests
have arrived: tests synchronise with a server on events, never on sleeps.

``rss`` builds the RSS 2.0 documents the tests serve or write. Used by the tests and by
bench/fetch_limits.py (with ``probe_memory``, which fetches in a fresh process and
reports its peak RSS).
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
from datetime import datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterable
from xml.sax.saxutils import escape

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Seen:
    """One request as the server received it."""

    path: str
    headers: dict[str, str]  # lower-case names
    at: float  # time.monotonic() on arrival


# The longest a held request waits for its release: a test that forgets to release
# fails on its own assertions instead of hanging (close() releases every hold too).
HOLD_MAX = 60.0


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so connection reuse is exercised
    # headers and body go out in two writes: without this, every keep-alive response
    # after the first waits out the client's 40 ms delayed ACK
    disable_nagle_algorithm = True
    server: "_Server"

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        box = self.server.box
        box._arrive(Seen(self.path, {k.lower(): v for k, v in self.headers.items()}, time.monotonic()))
        try:
            # a route for the path with its query string (peer feeds' base URLs have
            # one) comes before the route for the bare path
            route = box.routes.get(self.path) or box.routes.get(self.path.split("?", 1)[0])
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


class Hold:
    """Routes that keep requests waiting until ``release()``; counts the requests that arrived.

    ``answers`` maps each held path to the route that answers it once released.
    ``first``: hold only the first that many requests (later ones are answered at
    once); ``None`` holds every request until the release.
    """

    def __init__(self, answers: dict[str, Callable[[Handler], None]], first: int | None = None) -> None:
        self._answers = answers
        self._first = first
        self._released = threading.Event()
        self._arrived = threading.Condition()
        self.arrived = 0

    def __call__(self, handler: Handler) -> None:
        with self._arrived:
            self.arrived += 1
            held = self._first is None or self.arrived <= self._first
            self._arrived.notify_all()
        if held:
            self._released.wait(HOLD_MAX)
        self._answers.get(handler.path, self._answers.get(handler.path.split("?", 1)[0]))(handler)  # type: ignore[misc]

    def wait(self, count: int = 1, timeout: float = 30.0) -> None:
        """Until ``count`` requests have reached these routes (held or not); fails after ``timeout`` s."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: self.arrived >= count, timeout):
                raise AssertionError(f"{self.arrived} of {count} requests reached a held route in {timeout}s")

    def release(self) -> None:
        """Answer the held requests now, and every later one at once."""
        self._released.set()


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
        self._arrival = threading.Condition(self._lock)
        self._holds: list[Hold] = []
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

    def url(self, path: str = "/", userinfo: str = "") -> str:
        """The URL of ``path`` on this server (``userinfo``: ``user:password`` before the host)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{userinfo + '@' if userinfo else ''}{host}:{self.port}{path}"

    def route(self, path: str, handler: Callable[[Handler], None]) -> None:
        self.routes[path] = handler

    def respond(self, path: str, body: bytes = b"", status: int = 200, headers: dict[str, str] | None = None) -> None:
        """A fixed answer on ``path``."""
        self.routes[path] = lambda h: h.reply(status, body, headers)

    def feed(self, path: str, items: Iterable["Item | tuple[str, str, str, str]"], **options: Any) -> None:
        """Serve ``rss(items, **options)`` on ``path`` as application/rss+xml (again: a changed feed)."""
        self.respond(path, rss(items, **options), headers={"Content-Type": "application/rss+xml"})

    def hold(self, *paths: str, first: int | None = None) -> Hold:
        """Hold requests to ``paths`` until the returned ``Hold`` is released; their routes answer then."""
        not_found: Callable[[Handler], None] = lambda h: h.reply(404, b"not found")  # noqa: E731
        hold = Hold({path: self.routes.get(path, not_found) for path in paths}, first)
        self._holds.append(hold)
        for path in paths:
            self.routes[path] = hold
        return hold

    def hits(self, path: str | None = None) -> list[Seen]:
        """The requests so far (to ``path`` without its query string, or all), in order of arrival."""
        with self._lock:
            return self._matching(path)

    def wait_hits(self, count: int = 1, path: str | None = None, timeout: float = 30.0) -> list[Seen]:
        """Until ``count`` requests (to ``path``, or any) have arrived; returns them; fails after ``timeout`` s."""
        with self._arrival:
            if not self._arrival.wait_for(lambda: len(self._matching(path)) >= count, timeout):
                raise AssertionError(f"{len(self._matching(path))} of {count} requests to {path or 'any path'} "
                                     f"arrived in {timeout}s")
            return self._matching(path)

    def _matching(self, path: str | None) -> list[Seen]:
        return [r for r in self.requests if path is None or r.path.split("?", 1)[0] == path]

    def add_sent(self, n: int) -> None:
        with self._lock:
            self.bytes_sent += n

    def close(self) -> None:
        for hold in self._holds:  # no handler thread outlives the test waiting for a release
            hold.release()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "Loopback":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _arrive(self, seen: Seen) -> None:
        with self._arrival:
            self.requests.append(seen)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self._arrival.notify_all()

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1


@dataclass(frozen=True)
class Item:
    """One RSS item; ``rss`` also takes a ``(guid, link, title, text)`` tuple for the common case.

    ``text`` is the description (escaped: HTML in it stays HTML to a feed reader);
    ``content`` is content:encoded HTML; ``None`` leaves an element out.
    """

    guid: str | None
    link: str | None
    title: str | None
    text: str | None = None
    published: datetime | None = None
    author: str | None = None
    content: str | None = None


def rss(items: Iterable[Item | tuple[str, str, str, str]], ttl_minutes: int | None = None,
        title: str = "Loopback", link: str = "http://example.org/") -> bytes:
    """An RSS 2.0 document of ``Item``s or ``(guid, link, title, text)`` tuples."""
    body = ['<?xml version="1.0" encoding="utf-8"?>'
            '<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/">'
            f"<channel><title>{escape(title)}</title><link>{escape(link)}</link>"]
    if ttl_minutes is not None:
        body.append(f"<ttl>{ttl_minutes}</ttl>")
    for given in items:
        item = given if isinstance(given, Item) else Item(*given)
        body.append("<item>")
        if item.guid is not None:
            body.append(f"<guid isPermaLink='false'>{escape(item.guid)}</guid>")
        if item.link is not None:
            body.append(f"<link>{escape(item.link)}</link>")
        if item.title is not None:
            body.append(f"<title>{escape(item.title)}</title>")
        if item.published is not None:
            body.append(f"<pubDate>{format_datetime(item.published)}</pubDate>")
        if item.author is not None:
            body.append(f"<author>{escape(item.author)}</author>")
        if item.text is not None:
            body.append(f"<description>{escape(item.text)}</description>")
        if item.content is not None:
            cdata = item.content.replace("]]>", "]]]]><![CDATA[>")  # a "]]>" in the HTML would end the section
            body.append(f"<content:encoded><![CDATA[{cdata}]]></content:encoded>")
        body.append("</item>")
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
