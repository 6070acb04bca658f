"""Fetch feeds and article pages: a polite, bounded, SSRF-guarded HTTP client.

``Fetcher.fetch_feed(source, state)`` and ``Fetcher.fetch_page(url)`` return a
``FetchResult`` or raise a ``FetchError`` subclass. Everything that bounds a request
lives here: connect/read timeouts, a total deadline, a body cap enforced while
streaming (after decompression, so gzip bombs stop at the same cap), a redirect bound,
per-host concurrency and spacing, and the address guard.

The guard (``allow_private_addresses = false``) is enforced where the socket is
opened: the host name is resolved once, every address is checked, and the connection
goes to the checked address (no second lookup that DNS rebinding could answer
differently). Feed URLs written in the config are trusted for their first hop and for
redirects that stay on the same origin; URLs found in content never are.
"""

from __future__ import annotations

import email.utils
import hashlib
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

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
_CHUNK = 64 * 1024
# Content types that can never hold a feed or an article (RFC 6838 top-level types).
_NEVER_TEXT = ("image/", "audio/", "video/", "font/", "model/")
_NEVER_TEXT_EXACT = {"application/pdf", "application/zip", "application/octet-stream+zip"}


# ---------------------------------------------------------------------------- address guard

_guard = threading.local()


def _guard_enabled() -> bool:
    return getattr(_guard, "enabled", False)


@contextmanager
def _guarded(enabled: bool) -> Iterator[None]:
    previous = _guard_enabled()
    _guard.enabled = enabled
    try:
        yield
    finally:
        _guard.enabled = previous


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
    def _new_conn(self):  # type: ignore[no-untyped-def]
        if not _guard_enabled():
            return super()._new_conn()  # type: ignore[misc]
        original = self._dns_host  # type: ignore[has-type]
        self._dns_host = resolve_checked(original, self.port)  # type: ignore[attr-defined]
        try:
            return super()._new_conn()  # type: ignore[misc]
        finally:
            self._dns_host = original


class _GuardedHTTPConnection(_GuardMixin, HTTPConnection):
    pass


class _GuardedHTTPSConnection(_GuardMixin, HTTPSConnection):
    pass


class _GuardedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


class _GuardedAdapter(HTTPAdapter):
    def init_poolmanager(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _GuardedHTTPPool, "https": _GuardedHTTPSPool}


# ---------------------------------------------------------------------------- politeness


class HostLimiter:
    """At most ``concurrency`` requests in flight per host, at least ``delay`` s apart."""

    def __init__(self, concurrency: int, delay: float) -> None:
        self.concurrency = concurrency
        self.delay = delay
        self._lock = threading.Lock()
        self._slots: dict[str, threading.Semaphore] = {}
        self._next_start: dict[str, float] = {}

    @contextmanager
    def slot(self, host: str) -> Iterator[None]:
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
    """One per process: a pooled HTTP session plus per-host limits. Thread-safe."""

    def __init__(self, cfg: FetchConfig) -> None:
        self.cfg = cfg
        self.limiter = HostLimiter(cfg.per_host_concurrency, cfg.per_host_delay)
        self.session = requests.Session()
        # A proxy from the environment would make the address guard check the proxy,
        # not the target: the guard needs direct connections.
        self.session.trust_env = False
        adapter = _GuardedAdapter(pool_connections=32, pool_maxsize=max(cfg.concurrency, 4), max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers.update(
            {"User-Agent": cfg.user_agent, "Accept-Encoding": "gzip, deflate", "Connection": "keep-alive"}
        )

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
        return self._get(url, headers, trusted_origin=_origin(source.url), kind="feed")

    def fetch_page(self, url: str) -> FetchResult:
        """Fetch an article page named by feed content (never trusted: guarded, http(s) only)."""
        return self._get(url, {"Accept": PAGE_ACCEPT}, trusted_origin=None, kind="page")

    # -- internals

    def _get(self, url: str, headers: dict[str, str], trusted_origin: str | None, kind: str) -> FetchResult:
        started = time.monotonic()
        deadline = started + self.cfg.timeout
        fetched_at = datetime.now(timezone.utc)
        permanent: str | None = None
        all_permanent = True
        requests_sent = 0
        current = url
        for _hop in range(self.cfg.max_redirects + 1):
            _check_scheme(current)
            guard = not self.cfg.allow_private_addresses and _origin(current) != trusted_origin
            requests_sent += 1
            response = self._request(current, headers, deadline, guard)
            if response.status in (301, 302, 303, 307, 308):
                location = response.headers.get("location")
                if not location:
                    raise HTTPStatusError(f"HTTP {response.status} without Location from {redact_url(current)}", response.status)
                target = urljoin(current, location)
                all_permanent = all_permanent and response.status in (301, 308)
                if all_permanent:
                    permanent = target
                current = target
                continue
            break
        else:
            raise TooManyRedirects(f"more than {self.cfg.max_redirects} redirects from {redact_url(url)}")

        status = response.status
        elapsed = time.monotonic() - started
        if status == 304:
            return FetchResult(
                url=url, final_url=current, status=304, not_modified=True, fetched_at=fetched_at,
                elapsed=elapsed, permanent_redirect=permanent, requests=requests_sent,
                etag=response.headers.get("etag"), last_modified=response.headers.get("last-modified"),
                max_age=_max_age(response.headers.get("cache-control")),
            )
        if status == 410:
            raise Gone(f"HTTP 410 Gone from {redact_url(current)}: the source is disabled until its config changes", 410)
        if status >= 400:
            retry_after = _retry_after(response.headers.get("retry-after")) if status in (429, 503) else None
            raise HTTPStatusError(f"HTTP {status} from {redact_url(current)}", status, retry_after)
        content_type = response.headers.get("content-type")
        _check_content_type(content_type, current)
        return FetchResult(
            url=url,
            final_url=current,
            status=status,
            body=response.body,
            content_type=content_type,
            etag=response.headers.get("etag"),
            last_modified=response.headers.get("last-modified"),
            permanent_redirect=permanent,
            max_age=_max_age(response.headers.get("cache-control")),
            body_hash=hashlib.sha256(response.body).hexdigest(),
            fetched_at=fetched_at,
            elapsed=elapsed,
            requests=requests_sent,
        )

    def _request(self, url: str, headers: dict[str, str], deadline: float, guard: bool) -> _Response:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FetchTimeout(f"deadline of {self.cfg.timeout:g}s passed before {redact_url(url)}")
        timeout = (min(self.cfg.connect_timeout, remaining), min(self.cfg.timeout, remaining))
        with self.limiter.slot(host_of(url)), _guarded(guard):
            try:
                with self.session.get(url, headers=headers, timeout=timeout, stream=True, allow_redirects=False) as r:
                    lowered = {k.lower(): v for k, v in r.headers.items()}
                    if r.status_code >= 300:
                        return _Response(url, r.status_code, lowered, b"")
                    _check_declared_length(lowered, self.cfg.max_bytes, url)
                    body = _read_capped(r, self.cfg.max_bytes, deadline, url, self.cfg.timeout)
                    return _Response(url, r.status_code, lowered, body)
            except FetchError:
                raise
            except requests.exceptions.SSLError as exc:
                raise TLSError(f"TLS error with {redact_url(url)}: {_root_cause(exc)}") from exc
            except (requests.exceptions.ConnectTimeout, requests.exceptions.ReadTimeout) as exc:
                raise FetchTimeout(f"timed out after {self.cfg.timeout:g}s: {redact_url(url)}") from exc
            except requests.exceptions.ConnectionError as exc:
                raise _connection_error(exc, url) from exc
            except requests.exceptions.ContentDecodingError as exc:
                raise FetchError(f"cannot decompress body of {redact_url(url)}: {_root_cause(exc)}") from exc
            except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema, ValueError) as exc:
                raise FetchError(f"invalid URL {redact_url(url)!r}: {exc}") from exc
            except requests.exceptions.RequestException as exc:
                raise FetchError(f"{redact_url(url)}: {_root_cause(exc)}") from exc


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


def _read_capped(r: requests.Response, max_bytes: int, deadline: float, url: str, timeout: float) -> bytes:
    """The decoded body, cut with TooLarge past ``max_bytes`` and FetchTimeout past ``deadline``."""
    chunks: list[bytes] = []
    size = 0
    for chunk in r.iter_content(_CHUNK):
        size += len(chunk)
        if size > max_bytes:
            raise TooLarge(f"body of {redact_url(url)} larger than max_bytes={max_bytes} (after decompression)")
        if time.monotonic() > deadline:
            raise FetchTimeout(f"total deadline of {timeout:g}s passed while reading {redact_url(url)}")
        chunks.append(chunk)
    return b"".join(chunks)


def _check_declared_length(headers: dict[str, str], max_bytes: int, url: str) -> None:
    length = headers.get("content-length", "")
    if length.isdigit() and int(length) > max_bytes and "content-encoding" not in headers:
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


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme.lower()}://{host_of(url)}"


def _connection_error(exc: Exception, url: str) -> FetchError:
    cause = exc
    while cause is not None:
        if isinstance(cause, BlockedAddress):
            return BlockedAddress(f"{cause.message} for {redact_url(url)}")
        if isinstance(cause, DNSError):
            return cause
        if isinstance(cause, urllib3.exceptions.NameResolutionError) or isinstance(cause, socket.gaierror):
            return DNSError(f"cannot resolve host of {redact_url(url)}")
        if isinstance(cause, urllib3.exceptions.ConnectTimeoutError):
            return FetchTimeout(f"connect timed out: {redact_url(url)}")
        cause = cause.__context__ or cause.__cause__ or (cause.args[0] if cause.args and isinstance(cause.args[0], BaseException) else None)  # type: ignore[assignment]
    return ConnectError(f"cannot connect to {redact_url(url)}: {_root_cause(exc)}")


def _root_cause(exc: BaseException) -> str:
    seen = exc
    while seen.__cause__ is not None or seen.__context__ is not None:
        seen = seen.__cause__ or seen.__context__  # type: ignore[assignment]
    text = str(seen) or type(seen).__name__
    return text.splitlines()[0][:200]


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP-date (RFC 9110 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def _max_age(value: str | None) -> float | None:
    if not value:
        return None
    for part in value.split(","):
        name, _, arg = part.strip().partition("=")
        if name.lower() == "max-age" and arg.strip().strip('"').isdigit():
            return float(arg.strip().strip('"'))
    return None
