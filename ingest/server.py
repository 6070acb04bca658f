"""The daemon's small HTTP server: /healthz, /metrics, /feed.atom and /feed.json.

Routing is a table, ``ROUTES``: path -> handler(app, query) -> Response. Serving a
new page is one line in that dict, e.g. the served feeds::

    "/feed.atom": served_feed("atom"),

A response that carries an ``ETag`` header is answered 304 Not Modified, without a
body, when the request's If-None-Match names that tag (the served feeds use this).

``app`` is the running daemon (see ``App``): its store, its current config (after
SIGHUP reloads), its metrics and its health check. The server is a
``ThreadingHTTPServer`` on its own daemon threads, so a slow scrape never delays a
poll; it only reads. It listens where ``[daemon] listen`` says (off by default)
and has no authentication: keep it on loopback or behind a proxy.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Protocol
from urllib.parse import parse_qs, urlsplit

from ingest import export
from ingest.config import Config
from ingest.errors import ConfigError
from ingest.metrics import CONTENT_TYPE as METRICS_TYPE
from ingest.metrics import Metrics
from ingest.store import Store

log = logging.getLogger("ingest.server")

JSON_TYPE = "application/json"


class App(Protocol):
    """What a route handler may use from the running daemon."""

    store: Store
    metrics: Metrics

    @property
    def config(self) -> Config: ...

    def health(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Response:
    status: int
    content_type: str
    body: bytes | str
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[App, dict[str, list[str]]], Response]


def healthz(app: App, query: dict[str, list[str]]) -> Response:
    """200 with the health JSON when healthy, else 503 with the same JSON."""
    health = app.health()
    return Response(200 if health["ok"] else 503, JSON_TYPE, json.dumps(health, default=str) + "\n")


def metrics(app: App, query: dict[str, list[str]]) -> Response:
    """Prometheus text format."""
    return Response(200, METRICS_TYPE, app.metrics.render())


def served_feed(fmt: str) -> Handler:
    """The latest ``[daemon] feed_size`` clusters as ``fmt`` (atom or jsonfeed), with an ETag."""

    def handler(app: App, query: dict[str, list[str]]) -> Response:
        stories = app.store.stories(limit=app.config.daemon.feed_size)
        info = export.FeedInfo(id=f"urn:uuid:{app.store.store_uid()}", title="ingest: deduplicated stories",
                               updated=export.EPOCH)  # stable for an empty store, so its ETag is too
        body = export.render(stories, fmt, info).encode("utf-8")
        # no-cache, not no-store: a reader keeps the feed and asks again with If-None-Match
        return Response(200, export.MEDIA_TYPES[fmt], body,
                        headers={"ETag": export.etag_of(body), "Cache-Control": "no-cache"})

    return handler


ROUTES: dict[str, Handler] = {
    "/healthz": healthz,
    "/metrics": metrics,
    "/feed.atom": served_feed("atom"),
    "/feed.json": served_feed("jsonfeed"),
}


def not_modified(if_none_match: str | None, etag: str | None) -> bool:
    """RFC 9110 13.1.2: If-None-Match names the current ETag (weak comparison) or is ``*``."""
    if not if_none_match or not etag:
        return False
    if if_none_match.strip() == "*":
        return True
    wanted = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return etag.removeprefix("W/") in wanted


def parse_listen(value: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:9108`` for IPv6) to a (host, port) pair."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"'daemon.listen': expected host:port, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


class Server:
    """``ROUTES`` served on ``address`` from a background thread."""

    def __init__(self, app: App, address: tuple[str, int], routes: dict[str, Handler] | None = None) -> None:
        table = dict(ROUTES if routes is None else routes)

        class _Handler(BaseHTTPRequestHandler):
            server_version = "ingest"

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                self._answer(send_body=True)

            def do_HEAD(self) -> None:  # noqa: N802
                self._answer(send_body=False)

            def _answer(self, send_body: bool) -> None:
                parts = urlsplit(self.path)
                handler = table.get(parts.path)
                if handler is None:
                    response = Response(404, "text/plain; charset=utf-8", f"not found; try {', '.join(table)}\n")
                else:
                    try:
                        response = handler(app, parse_qs(parts.query))
                    except Exception as exc:  # a failing page must not take the server down
                        log.exception("server: %s failed", parts.path)
                        response = Response(500, "text/plain; charset=utf-8", f"internal error: {type(exc).__name__}\n")
                body = response.body.encode("utf-8") if isinstance(response.body, str) else response.body
                if response.status == 200 and not_modified(self.headers.get("If-None-Match"),
                                                           response.headers.get("ETag")):
                    # conditional GET: 304 with the validator and no body (RFC 9110 15.4.5)
                    self.send_response(304)
                    for key in ("ETag", "Cache-Control"):
                        if key in response.headers:
                            self.send_header(key, response.headers[key])
                    self.end_headers()
                    return
                self.send_response(response.status)
                self.send_header("Content-Type", response.content_type)
                self.send_header("Content-Length", str(len(body)))
                if "Cache-Control" not in response.headers:
                    self.send_header("Cache-Control", "no-store")
                for key, value in response.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                if send_body:
                    self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                log.debug("server: %s %s", self.address_string(), format % args)

        class _Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        if ":" in address[0]:
            import socket

            _Server.address_family = socket.AF_INET6
        try:
            self.httpd = _Server(address, _Handler)
        except OSError as exc:
            raise ConfigError(f"'daemon.listen': cannot listen on {address[0]}:{address[1]}: {exc.strerror or exc}") from exc
        self.address = self.httpd.server_address[:2]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="http", daemon=True)

    def start(self) -> None:
        """Serve in the background."""
        self._thread.start()

    def close(self) -> None:
        """Stop serving and close the socket."""
        if self._thread.is_alive():
            self.httpd.shutdown()  # waits for serve_forever, which must be running
        self.httpd.server_close()
