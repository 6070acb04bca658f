"""Fetch feeds and article pages: a polite, bounded, SSRF-guarded HTTP client.

``Fetcher.fetch_feed(source, state)`` and ``Fetcher.fetch_page(url)`` return a
``FetchResult`` or raise a ``FetchError`` subclass. The client is a requests session
whose transport adapter uses our own urllib3 connection classes (the guard and the
watchdog live there); redirects are followed here, hop by hop. Everything that bounds a request
lives here: a connect timeout, a read (idle) timeout, a total deadline that a watchdog
enforces by shutting the socket down (a server trickling one byte a second never trips
a read timeout), a body cap on the bytes received and on the bytes after
decompression (we decompress ourselves in bounded steps, so a gzip bomb stops at the
cap whatever the urllib3 version), a redirect bound, per-host concurrency and spacing,
a total concurrency bound, and the address guard.

The guard (``allow_private_addresses = false``) is enforced where the socket is
opened: the host name is resolved once, every address is checked, and the connection
goes to the checked address (no second lookup that DNS rebinding could answer
differently); a pooled connection that is reused is checked again by its peer address.
Feed URLs written in the config are trusted for their first hop and for redirects that
stay on the same origin; URLs found in content never are.
"""

from __future__ import annotations

import email.utils
import hashlib
import io
import socket
import ssl
import threading
import time
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    LocationValueError,
    NameResolutionError,
    NewConnectionError,
    ReadTimeoutError,
)
from urllib3.exceptions import SSLError as Urllib3SSLError

from ingest.config import FetchConfig, SourceConfig
from ingest.errors import (
    BlockedAddress,
    ConnectError,
    ContentTypeError,
    DNSError,
    FetchError,
    FetchTimeout,
    Gone,
    HTTPStatusError,
    TLSError,
    TooLarge,
    TooManyRedirects,
)
from ingest.models import FetchResult, SourceState
from ingest.urls import host_of, is_public_address, redact_url

FEED_ACCEPT = (
    "application/atom+xml, application/rss+xml, application/feed+json, application/json;q=0.9, "
    "application/rdf+xml;q=0.9, application/xml;q=0.8, text/xml;q=0.8, */*;q=0.5"
)
PAGE_ACCEPT = "text/html, application/xhtml+xml;q=0.9, */*;q=0.5"
# Only gzip is asked for (the contract, and what every feed server offers);
# a server that sends deflate anyway is still decoded, anything else is refused.
ACCEPT_ENCODING = "gzip"
_CHUNK = 64 * 1024
_REDIRECTS = (301, 302, 303, 307, 308)
# Content types that can never hold a feed or an article (RFC 6838 top-level types).
# text/html and application/octet-stream are NOT here: misconfigured servers send
# real feeds with both.
_NEVER_TEXT = ("image/", "audio/", "video/", "font/", "model/")
_NEVER_TEXT_EXACT = {"application/pdf", "application/zip", "application/gzip", "application/x-tar"}


# ---------------------------------------------------------------------------- per-request context

_local = threading.local()


@dataclass
class _RequestContext:
    """What the connection classes need to know about the request running in this thread."""

    guard: bool
    deadline: "_Deadline"


@contextmanager
def _context(ctx: _RequestContext) -> Iterator[None]:
    previous = getattr(_local, "ctx", None)
    _local.ctx = ctx
    try:
        yield
    finally:
        _local.ctx = previous


def _current() -> _RequestContext | None:
    return getattr(_local, "ctx", None)


class _Deadline:
    """Shuts the request's socket down when the total deadline passes.

    A read timeout bounds each wait for bytes, not the request: a server sending one
    byte every few seconds (or a header line at a time) would hold a worker forever.
    A timer that calls ``shutdown()`` on the socket wakes the blocked ``recv``.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._timer = threading.Timer(max(seconds, 0.0), self._expire)
        self._timer.daemon = True

    def __enter__(self) -> "_Deadline":
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        with self._lock:
            self._sock = None

    def attach(self, sock: socket.socket | None) -> None:
        with self._lock:
            self._sock = sock
            if self.expired and sock is not None:
                _shutdown(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            if self._sock is not None:
                _shutdown(self._sock)


def _shutdown(sock: socket.socket) -> None:
    try:
        # socket.socket.shutdown, not SSLSocket.shutdown: the latter also drops the SSL
        # object under the thread that is reading from it.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass


# ---------------------------------------------------------------------------- address guard


def resolve_checked(host: str, port: int) -> str:
    """Resolve ``host`` and return one address to connect to; refuse non-public ones."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise DNSError(f"cannot resolve {host}: {exc.strerror or exc}") from exc
    addresses = [info[4][0] for info in infos]
    blocked = [a for a in addresses if not is_public_address(a)]
    if blocked:
        raise BlockedAddress(f"{host} resolves to non-public address {blocked[0]} (allow_private_addresses is off)")
    return addresses[0]


class _GuardMixin:
    """Resolve-check-connect on new connections; re-check the peer of reused ones."""

    def _new_conn(self):  # type: ignore[no-untyped-def]
        ctx = _current()
        if ctx is None or not ctx.guard:
            return super()._new_conn()  # type: ignore[misc]
        original = self._dns_host  # type: ignore[has-type]
        # connect to the address that was checked: no second lookup for rebinding to answer
        self._dns_host = resolve_checked(original, self.port)  # type: ignore[attr-defined]
        try:
            return super()._new_conn()  # type: ignore[misc]
        finally:
            self._dns_host = original

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        ctx = _current()
        if ctx is not None:
            ctx.deadline.attach(self.sock)  # type: ignore[attr-defined]

    def request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        ctx = _current()
        sock = self.sock  # type: ignore[attr-defined]
        if ctx is not None and sock is not None:  # a pooled connection, opened for another request
            if ctx.guard:
                try:
                    peer = sock.getpeername()[0]
                except OSError:
                    peer = ""
                if not is_public_address(peer):
                    raise BlockedAddress(f"{self.host} is connected to non-public address {peer or '?'}")  # type: ignore[attr-defined]
            ctx.deadline.attach(sock)
        return super().request(*args, **kwargs)  # type: ignore[misc]


class _GuardedHTTPConnection(_GuardMixin, HTTPConnection):
    pass


class _GuardedHTTPSConnection(_GuardMixin, HTTPSConnection):
    pass


class _GuardedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


class _Session(requests.Session):
    """A requests session that leaves redirects to ``Fetcher._follow``.

    Redirects are followed hop by hop there, each hop under the guard, the deadline
    and the host limits. requests would otherwise read every redirect's body just to
    prepare ``Response.next``, and a body that runs until the connection closes would
    hold the request until its deadline.
    """

    def resolve_redirects(self, *args, **kwargs):  # type: ignore[no-untyped-def, override]
        return iter(())


class _GuardedAdapter(HTTPAdapter):
    """requests' transport adapter with connection pools whose connections carry the guard."""

    def init_poolmanager(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _GuardedHTTPPool, "https": _GuardedHTTPSPool}


# ---------------------------------------------------------------------------- politeness


class HostLimiter:
    """At most ``concurrency`` requests in flight per host, starts at least ``delay`` s apart."""

    def __init__(self, concurrency: int, delay: float) -> None:
        self.concurrency = concurrency
        self.delay = delay
        self._lock = threading.Lock()
        self._slots: dict[str, threading.Semaphore] = {}
        self._next_start: dict[str, float] = {}

    @contextmanager
    def slot(self, host: str) -> Iterator[None]:
        """Hold one of ``host``'s slots, waiting for its spacing first."""
        with self._lock:
            semaphore = self._slots.setdefault(host, threading.Semaphore(self.concurrency))
        with semaphore:
            with self._lock:
                now = time.monotonic()
                start = max(now, self._next_start.get(host, 0.0))
                self._next_start[host] = start + self.delay
            if start > now:
                time.sleep(start - now)
            yield


# ---------------------------------------------------------------------------- fetcher


@dataclass(frozen=True)
class _Response:
    url: str
    status: int
    headers: dict[str, str]
    body: bytes


class Fetcher:
    """One per process: pooled connections plus per-host and total limits. Thread-safe."""

    def __init__(self, cfg: FetchConfig) -> None:
        self.cfg = cfg
        self.limiter = HostLimiter(cfg.per_host_concurrency, cfg.per_host_delay)
        self._in_flight = threading.BoundedSemaphore(cfg.concurrency)
        self.session = _Session()
        # No proxy or .netrc from the environment: the guard must check the target, not a
        # proxy; and no default headers: every request states its own.
        self.session.trust_env = False
        self.session.headers.clear()
        # certificates are always verified, against certifi's bundle or the configured one
        self.session.verify = cfg.ca_bundle or True
        adapter = _GuardedAdapter(pool_connections=64, pool_maxsize=cfg.per_host_concurrency, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def close(self) -> None:
        self.session.close()

    # -- public

    def fetch_feed(self, source: SourceConfig, state: SourceState | None) -> FetchResult:
        """Fetch a source's feed with conditional-GET validators from ``state``."""
        if source.is_local:
            return read_local(source.url, self.cfg.max_bytes)
        url = (state.effective_url if state and state.effective_url else None) or source.url
        headers = {"Accept": FEED_ACCEPT}
        if state and state.etag:
            headers["If-None-Match"] = state.etag
        if state and state.last_modified:
            headers["If-Modified-Since"] = state.last_modified
        return self._get(url, headers, trusted_origin=_origin(source.url))

    def fetch_page(self, url: str) -> FetchResult:
        """Fetch an article page named by feed content (never trusted: guarded, http(s) only)."""
        return self._get(url, {"Accept": PAGE_ACCEPT}, trusted_origin=None)

    # -- internals

    def _get(self, url: str, headers: dict[str, str], trusted_origin: str | None) -> FetchResult:
        counter = [0]
        try:
            return self._follow(url, headers, trusted_origin, counter)
        except FetchError as exc:
            exc.requests = counter[0]
            raise

    def _follow(self, url: str, headers: dict[str, str], trusted_origin: str | None, counter: list[int]) -> FetchResult:
        fetched_at = datetime.now(timezone.utc)
        budget = self.cfg.timeout  # time spent waiting for a host slot does not count
        permanent: str | None = None
        all_permanent = True
        requests_sent = 0
        current = url
        for _hop in range(self.cfg.max_redirects + 1):
            _check_scheme(current)
            guard = not self.cfg.allow_private_addresses and _origin(current) != trusted_origin
            hop_headers = {**headers, **_auth_header(current, url)}
            requests_sent += 1
            counter[0] = requests_sent
            with self.limiter.slot(host_of(current)), self._in_flight:
                started = time.monotonic()
                try:
                    response = self._request(_without_userinfo(current), hop_headers, budget, guard)
                finally:
                    budget -= time.monotonic() - started
            if response.status in _REDIRECTS:
                location = response.headers.get("location")
                if not location:
                    raise HTTPStatusError(
                        f"HTTP {response.status} without Location from {redact_url(current)}", response.status
                    )
                target = urljoin(current, location.strip())
                # a permanent move is the target of the leading run of 301/308 hops
                all_permanent = all_permanent and response.status in (301, 308)
                if all_permanent:
                    permanent = target
                current = target
                continue
            break
        else:
            raise TooManyRedirects(f"more than {self.cfg.max_redirects} redirects from {redact_url(url)}")

        status = response.status
        elapsed = self.cfg.timeout - budget
        common = dict(
            url=url, final_url=current, status=status, fetched_at=fetched_at, elapsed=elapsed,
            permanent_redirect=permanent, requests=requests_sent,
            etag=response.headers.get("etag"), last_modified=response.headers.get("last-modified"),
            max_age=_max_age(response.headers.get("cache-control")),
        )
        if status == 304:
            return FetchResult(not_modified=True, **common)
        if status == 410:
            raise Gone(
                f"HTTP 410 Gone from {redact_url(current)}: source disabled until its url in the config changes", 410
            )
        if not 200 <= status < 300:
            retry_after = _retry_after(response.headers.get("retry-after")) if status in (429, 503) else None
            raise HTTPStatusError(f"HTTP {status} from {redact_url(current)}", status, retry_after)
        return FetchResult(
            body=response.body, content_type=response.headers.get("content-type"),
            body_hash=hashlib.sha256(response.body).hexdigest(), **common,
        )

    def _request(self, url: str, headers: dict[str, str], budget: float, guard: bool) -> _Response:
        """One HTTP exchange, bounded by ``budget`` seconds; the body only for 2xx."""
        cfg = self.cfg
        if budget <= 0:
            raise FetchTimeout(f"total deadline of {cfg.timeout:g}s passed before {redact_url(url)}")
        timeout = (min(cfg.connect_timeout, budget), min(cfg.read_timeout, budget))
        headers = {"User-Agent": cfg.user_agent, "Accept-Encoding": ACCEPT_ENCODING, **headers}
        with _Deadline(budget) as deadline, _context(_RequestContext(guard, deadline)):
            response = None
            try:
                # stream=True: requests hands over the undecoded urllib3 response (``raw``),
                # which is read and decompressed below in bounded steps
                response = self.session.get(
                    url, headers=headers, allow_redirects=False, stream=True, timeout=timeout
                ).raw
                lowered = {k.lower(): v for k, v in response.headers.items()}
                if not 200 <= response.status < 300:
                    _discard(response)
                    return _Response(url, response.status, lowered, b"")
                _check_content_type(lowered.get("content-type"), url)
                _check_declared_length(lowered, cfg.max_bytes, url)
                body = _read_capped(response, lowered.get("content-encoding", ""), cfg.max_bytes, url)
                if deadline.expired:  # a read-until-close body ends quietly when the watchdog fires
                    raise FetchTimeout(f"total deadline of {cfg.timeout:g}s passed while reading {redact_url(url)}")
                response.release_conn()
                return _Response(url, response.status, lowered, body)
            except BaseException as exc:
                if response is not None:
                    response.close()
                    response.release_conn()
                if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit: not ours to rename
                    raise
                if deadline.expired and not isinstance(exc, (TooLarge, BlockedAddress, ContentTypeError)):
                    raise FetchTimeout(
                        f"total deadline of {cfg.timeout:g}s passed while fetching {redact_url(url)}"
                    ) from exc
                if isinstance(exc, FetchError):
                    raise
                raise _classify(exc, url, cfg) from exc


def read_local(path: str, max_bytes: int) -> FetchResult:
    """Read a local feed file named in the config (never a path found in content)."""
    file = Path(path)
    try:
        size = file.stat().st_size
        if size > max_bytes:
            raise TooLarge(f"{path} is {size} bytes, larger than max_bytes={max_bytes}")
        body = file.read_bytes()
    except FileNotFoundError as exc:
        raise FetchError(f"no such file: {path}") from exc
    except OSError as exc:
        raise FetchError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return FetchResult(
        url=path, final_url=path, status=200, body=body, body_hash=hashlib.sha256(body).hexdigest(),
        fetched_at=datetime.now(timezone.utc), requests=0,
    )


# ---------------------------------------------------------------------------- body


class _Decoder:
    """Content-Encoding decoder that never returns more than ``_CHUNK`` bytes per step.

    ``zlib`` with ``max_length`` keeps a gzip bomb (1 GB of zeros in 1 MB) from ever
    being inflated past the cap: memory stays at the cap plus one chunk.
    """

    def __init__(self, encoding: str, url: str) -> None:
        self.url = url
        self.encoding = encoding.strip().lower()
        if self.encoding in ("", "identity"):
            self._obj = None
        elif self.encoding in ("gzip", "x-gzip"):
            self._obj = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif self.encoding == "deflate":
            self._obj = zlib.decompressobj(zlib.MAX_WBITS)  # zlib-wrapped; raw deflate handled below
            self._first = True
        else:
            raise FetchError(f"unsupported Content-Encoding {encoding!r} from {redact_url(url)} (we ask for gzip)")

    def feed(self, data: bytes) -> Iterator[bytes]:
        """Decoded pieces of ``data``, each at most ``_CHUNK`` bytes."""
        if self._obj is None:
            yield data
            return
        while data:
            try:
                piece = self._obj.decompress(data, _CHUNK)
            except zlib.error as exc:
                if self.encoding == "deflate" and getattr(self, "_first", False):
                    # RFC 9110 deflate is zlib-wrapped, but some servers send raw deflate
                    self._obj = zlib.decompressobj(-zlib.MAX_WBITS)
                    self._first = False
                    continue
                raise FetchError(f"cannot decompress body of {redact_url(self.url)}: {exc}") from exc
            self._first = False
            if piece:
                yield piece
            data = self._obj.unconsumed_tail
            if self._obj.eof:
                rest = self._obj.unused_data
                if rest[:2] == b"\x1f\x8b":  # another gzip member (RFC 1952 2.2)
                    self._obj = zlib.decompressobj(16 + zlib.MAX_WBITS)
                    data = rest + data
                else:
                    return  # trailing garbage after the stream is ignored, as browsers do
        # input consumed, but zlib may hold output back once max_length was reached
        while not self._obj.eof:
            piece = self._obj.decompress(b"", _CHUNK)
            if not piece:
                break
            yield piece

    def finish(self) -> None:
        """Raise if the compressed stream ended early."""
        if self._obj is not None and not self._obj.eof:
            raise FetchError(f"compressed body of {redact_url(self.url)} ends early")


def _read_capped(response: urllib3.BaseHTTPResponse, encoding: str, max_bytes: int, url: str) -> bytes:
    """The decoded body, cut with TooLarge once raw or decoded bytes pass ``max_bytes``."""
    decoder = _Decoder(encoding, url)
    body = io.BytesIO()  # getvalue() hands over its buffer without a copy: peak ~1x the body
    size = received = 0
    for raw in response.stream(_CHUNK, decode_content=False):
        received += len(raw)
        if received > max_bytes:
            raise TooLarge(f"body of {redact_url(url)} larger than max_bytes={max_bytes}")
        for piece in decoder.feed(raw):
            size += len(piece)
            if size > max_bytes:
                raise TooLarge(f"body of {redact_url(url)} larger than max_bytes={max_bytes} after decompression")
            body.write(piece)
    decoder.finish()
    return body.getvalue()


def _discard(response: urllib3.BaseHTTPResponse) -> None:
    """Drop a redirect's or error's body: keep the connection only if the body is small and delimited."""
    remaining = getattr(response, "length_remaining", None)
    small = (remaining is not None and remaining <= _CHUNK) or getattr(response, "chunked", False)
    if small:
        try:
            small = len(response.read(_CHUNK + 1, decode_content=False)) <= _CHUNK
        except Exception:  # the body does not matter; the connection is simply not reused
            small = False
    if not small:  # a body that runs until the connection closes would hold us to the deadline
        response.close()
    response.release_conn()


def _check_declared_length(headers: dict[str, str], max_bytes: int, url: str) -> None:
    length = headers.get("content-length", "").strip()
    if length.isdigit() and int(length) > max_bytes:
        raise TooLarge(f"{redact_url(url)} declares {length} bytes, larger than max_bytes={max_bytes}")


def _check_scheme(url: str) -> None:
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise BlockedAddress(f"refused scheme {scheme or '(none)'!r} in {redact_url(url)}: only http and https")


def _check_content_type(content_type: str | None, url: str) -> None:
    if not content_type:
        return
    mime = content_type.split(";", 1)[0].strip().lower()
    if mime.startswith(_NEVER_TEXT) or mime in _NEVER_TEXT_EXACT:
        raise ContentTypeError(f"{redact_url(url)} is {mime}, which cannot be a feed or an article")


# ---------------------------------------------------------------------------- helpers


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme.lower()}://{host_of(url)}"


def _auth_header(url: str, first_url: str) -> dict[str, str]:
    """Basic auth from ``user:password@`` in the URL, sent only on that URL's origin."""
    parts = urlsplit(first_url)
    if parts.username is None or _origin(url) != _origin(first_url):
        return {}
    userinfo = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
    return urllib3.make_headers(basic_auth=userinfo)


def _without_userinfo(url: str) -> str:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit((parts.scheme, parts.netloc.rsplit("@", 1)[1], parts.path, parts.query, parts.fragment))


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and every exception it wraps (cause, context, urllib3 ``reason``)."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        item = todo.pop()
        if item is None or any(item is s for s in seen):
            continue
        seen.append(item)
        wrapped = [item.__cause__, item.__context__, getattr(item, "reason", None), *item.args]
        todo += [w for w in wrapped if isinstance(w, BaseException)]  # ssl.SSLError.reason is a str
    return seen


def _classify(exc: Exception, url: str, cfg: FetchConfig) -> FetchError:
    """The FetchError subclass for a urllib3/socket/ssl failure."""
    chain = _chain(exc)
    where = redact_url(url)

    def has(*types: type) -> bool:
        return any(isinstance(e, types) for e in chain)

    if has(Urllib3SSLError, ssl.SSLError, ssl.CertificateError):
        return TLSError(f"TLS error with {where}: {_root_cause(exc)}")
    if has(NameResolutionError, socket.gaierror):
        return DNSError(f"cannot resolve host of {where}")
    if has(ReadTimeoutError):
        return FetchTimeout(f"no data for {cfg.read_timeout:g}s (read_timeout) from {where}")
    # urllib3 2 makes NewConnectionError (e.g. connection refused) a ConnectTimeoutError
    if has(ConnectTimeoutError) and not has(NewConnectionError):
        return FetchTimeout(f"connect timed out after {cfg.connect_timeout:g}s: {where}")
    if has(ConnectionRefusedError):
        return ConnectError(f"connection refused by {where}")
    if has(NewConnectionError):
        return ConnectError(f"cannot connect to {where}: {_root_cause(exc)}")
    if has(LocationValueError, requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema):
        return FetchError(f"invalid URL {where!r}: {_root_cause(exc)}")
    if has(socket.timeout):
        return FetchTimeout(f"timed out: {where}")
    return ConnectError(f"connection to {where} failed: {_root_cause(exc)}")


def _root_cause(exc: BaseException) -> str:
    seen = exc
    while seen.__cause__ is not None or seen.__context__ is not None:
        seen = seen.__cause__ or seen.__context__  # type: ignore[assignment]
    text = str(seen) or type(seen).__name__
    return text.splitlines()[0][:200]


def _retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP-date (RFC 9110 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())


def _max_age(value: str | None) -> float | None:
    """``max-age`` of a Cache-Control header in seconds (RFC 9111 5.2.2.1)."""
    if not value:
        return None
    for part in value.split(","):
        name, _, arg = part.strip().partition("=")
        if name.strip().lower() == "max-age" and arg.strip().strip('"').isdigit():
            return float(arg.strip().strip('"'))
    return None
