"""ingest.fetch against real loopback servers that record every request.

Covers the politeness and hardening of issue 3: headers, conditional GET, redirects,
410, Retry-After, the total concurrency bound, timeouts and the total deadline, the
body cap in bounded memory, gzip bombs, content types, error types, TLS and the SSRF
guard; on the Fetcher, and through a run (``pipeline``) where what a fetch leaves in
the store matters (validators, next poll times, disabling, full-text pages). Per-host
limits across a run's workers and ``--due``: tests/test_worker.py; the CLI's view of
fetch errors: tests/test_cli.py.
"""

from __future__ import annotations

import gzip
import logging
import socket
import subprocess
import threading
import time
import zlib
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path

import pytest
from urllib3.exceptions import NameResolutionError

from ingest.config import FetchConfig, SourceConfig, from_dict
from ingest.errors import (
    BlockedAddress,
    ConfigError,
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
from ingest.fetch import ACCEPT_ENCODING, Fetcher, _classify, _retry_after, resolve_checked
from ingest.store import Store

from .conftest import T0
from .loopback import Loopback, bomb, probe_memory, rss

TEXT = (
    "The harbour council voted on Tuesday to rebuild the northern seawall before winter storms, "
    "after engineers found cracks along forty metres of the old stone wall near the ferry terminal."
)


def fetcher(**options) -> Fetcher:
    options.setdefault("per_host_delay", 0.0)
    return Fetcher(FetchConfig(**options))


def feed_source(url: str, **options) -> SourceConfig:
    return SourceConfig(name="feed", url=url, **options)


# ---------------------------------------------------------------------------- headers and politeness


def test_sends_user_agent_accept_and_gzip(server):
    server.respond("/feed", rss([]), headers={"Content-Type": "application/rss+xml"})
    fetcher(user_agent="ingest-test/1 (+http://example.org/bot)").fetch_feed(feed_source(server.url("/feed")), None)
    (seen,) = server.hits("/feed")
    assert seen.headers["user-agent"] == "ingest-test/1 (+http://example.org/bot)"
    assert "application/rss+xml" in seen.headers["accept"] and "application/atom+xml" in seen.headers["accept"]
    assert seen.headers["accept-encoding"] == ACCEPT_ENCODING == "gzip"
    assert "if-none-match" not in seen.headers and "if-modified-since" not in seen.headers


def test_gzip_body_is_decoded_and_multi_member_gzip_too(server):
    body = rss([("a", "http://example.org/a", "A", TEXT)])
    server.respond("/one", gzip.compress(body), headers={"Content-Encoding": "gzip"})
    half = len(body) // 2
    server.respond("/two", gzip.compress(body[:half]) + gzip.compress(body[half:]), headers={"Content-Encoding": "gzip"})
    server.respond("/raw-deflate", zlib.compress(body)[2:-4], headers={"Content-Encoding": "deflate"})
    f = fetcher()
    for path in ("/one", "/two", "/raw-deflate"):
        assert f.fetch_feed(feed_source(server.url(path)), None).body == body, path


def test_unrequested_encoding_and_truncated_gzip_are_errors(server):
    server.respond("/br", b"\x00\x01", headers={"Content-Encoding": "br"})
    server.respond("/cut", gzip.compress(rss([]) * 50)[:-40], headers={"Content-Encoding": "gzip"})
    f = fetcher()
    with pytest.raises(FetchError, match="unsupported Content-Encoding"):
        f.fetch_feed(feed_source(server.url("/br")), None)
    with pytest.raises(FetchError, match="ends early"):
        f.fetch_feed(feed_source(server.url("/cut")), None)


def test_total_concurrency_bound(server):
    def slow(h):
        time.sleep(0.3)  # slow on purpose (the test): unbounded, the four requests would overlap
        h.reply(200, b"ok", {"Content-Type": "text/html"})

    for n in range(4):
        server.route(f"/p{n}", slow)
    f = fetcher(concurrency=1, per_host_concurrency=4, allow_private_addresses=True)
    threads = [threading.Thread(target=f.fetch_page, args=(server.url(f"/p{n}"),)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(server.hits()) == 4 and server.max_in_flight == 1


# ---------------------------------------------------------------------------- conditional GET and skips


def test_second_poll_sends_validators_and_304_adds_nothing(server, pipeline):
    body = rss([(f"g{n}", f"http://example.org/{n}", f"Story {n}", f"{TEXT} Number {n}.") for n in range(3)])
    etag, modified = '"v1"', "Mon, 05 Jan 2026 10:00:00 GMT"

    def feed(h):
        if h.headers.get("If-None-Match") == etag:
            h.reply(304, headers={"ETag": etag})
        else:
            h.reply(200, body, {"Content-Type": "application/rss+xml", "ETag": etag, "Last-Modified": modified})

    server.route("/feed", feed)
    p = pipeline([{"name": "feed", "url": server.url("/feed")}])
    first = p.run().sources[0]
    assert first.ok and first.items_new == 3
    items_before = p.store.counts()
    p.now = T0 + timedelta(hours=1)
    second = p.run().sources[0]

    first_req, second_req = server.hits("/feed")
    assert "if-none-match" not in first_req.headers
    assert second_req.headers["if-none-match"] == etag
    assert second_req.headers["if-modified-since"] == modified
    assert second.ok and second.not_modified and second.items_new == 0 and second.items_updated == 0
    assert "parse" not in second.timings  # a 304 costs no parsing
    assert p.store.counts() == items_before
    state = p.state()
    assert (state.etag, state.last_modified) == (etag, modified)  # validators kept for the next poll
    assert state.last_success_at == T0 + timedelta(hours=1)
    # and the third poll still sends them
    p.run()
    assert server.hits("/feed")[2].headers["if-none-match"] == etag


def test_same_body_without_validators_is_not_parsed_again(server, pipeline):
    server.respond("/feed", rss([("g", "http://example.org/g", "Story", TEXT)]),
                   headers={"Content-Type": "application/rss+xml"})
    p = pipeline([{"name": "feed", "url": server.url("/feed")}])
    assert p.run().sources[0].items_new == 1
    again = p.run().sources[0]
    assert again.ok and again.not_modified and "parse" not in again.timings
    assert len(server.hits("/feed")) == 2


def test_ttl_is_a_lower_bound_even_on_304_polls(server, pipeline):
    def feed(h):
        if h.headers.get("If-None-Match") == '"t"':
            h.reply(304)
        else:
            h.reply(200, rss([], ttl_minutes=120), {"Content-Type": "application/rss+xml", "ETag": '"t"'})

    server.route("/feed", feed)
    p = pipeline([{"name": "feed", "url": server.url("/feed"), "interval": 900}])
    p.run()
    assert p.state().next_poll_at == T0 + timedelta(minutes=120)
    p.run()  # 304: no body to read the ttl from, the stored one still counts
    assert p.state().next_poll_at == T0 + timedelta(minutes=120)


def test_cache_control_max_age_is_a_lower_bound_capped_by_max_interval(server, pipeline):
    server.respond("/feed", rss([]), headers={"Content-Type": "application/rss+xml", "Cache-Control": "public, max-age=86400"})
    p = pipeline([{"name": "feed", "url": server.url("/feed"), "interval": 600}], fetch={"max_interval": 7200})
    p.run()
    assert p.state().next_poll_at == T0 + timedelta(seconds=7200)


# ---------------------------------------------------------------------------- redirects and 410


@pytest.mark.parametrize("status", [301, 308])
def test_permanent_redirect_updates_effective_url_once(server, pipeline, caplog, status):
    server.respond("/old", status=status, headers={"Location": "/new"})
    server.respond("/new", rss([("g", "http://example.org/g", "Story", TEXT)]),
                   headers={"Content-Type": "application/rss+xml"})
    p = pipeline([{"name": "feed", "url": server.url("/old")}])
    with caplog.at_level(logging.WARNING, logger="ingest"):
        p.run()
        p.run()
        p.run()
    state = p.state()
    assert state.effective_url == server.url("/new")
    assert state.url == server.url("/old")  # the config stays as written
    assert len(server.hits("/old")) == 1 and len(server.hits("/new")) == 3  # later polls go to the new URL
    assert (state.poll_count, state.request_count) == (3, 4)  # the redirect hop is counted
    moved = [r for r in caplog.records if "moved permanently" in r.getMessage()]
    assert len(moved) == 1 and server.url("/new") in moved[0].getMessage()


def test_temporary_redirect_keeps_the_url(server, pipeline):
    server.respond("/feed", status=302, headers={"Location": "/today"})
    server.respond("/today", rss([]), headers={"Content-Type": "application/rss+xml"})
    p = pipeline([{"name": "feed", "url": server.url("/feed")}])
    p.run()
    p.run()
    assert p.state().effective_url is None
    assert len(server.hits("/feed")) == 2


def test_redirect_bound(server):
    server.respond("/loop", status=302, headers={"Location": "/loop"})
    with pytest.raises(TooManyRedirects) as caught:
        fetcher(max_redirects=3).fetch_feed(feed_source(server.url("/loop")), None)
    assert len(server.hits("/loop")) == 4 == caught.value.requests  # every hop is counted on the error too


def test_gone_disables_until_the_config_url_changes(server, pipeline, tmp_path):
    server.respond("/gone", status=410)
    server.respond("/alive", rss([]), headers={"Content-Type": "application/rss+xml"})
    p = pipeline([{"name": "feed", "url": server.url("/gone")}])
    report = p.run().sources[0]
    assert not report.ok and report.error_kind == "gone"
    state = p.state()
    assert "410 Gone" in state.disabled_reason and "until its url in the config changes" in state.disabled_reason
    again = p.run().sources[0]
    assert again.error_kind == "disabled" and "410" in again.error
    assert len(server.hits("/gone")) == 1  # no request while disabled
    # a new URL in the config re-enables it
    q = pipeline([{"name": "feed", "url": server.url("/alive")}])
    assert q.run().sources[0].ok
    assert q.state().disabled_reason is None and len(server.hits("/alive")) == 1


# ---------------------------------------------------------------------------- Retry-After and backoff


def test_429_retry_after_seconds_pushes_next_poll(server, pipeline):
    server.respond("/feed", status=429, headers={"Retry-After": "120"})
    p = pipeline([{"name": "feed", "url": server.url("/feed"), "interval": 60}], fetch={"backoff_base": 10})
    report = p.run().sources[0]
    assert not report.ok and report.error_kind == "http_status" and "429" in report.error
    state = p.state()
    assert state.next_poll_at >= T0 + timedelta(seconds=120)
    assert state.consecutive_errors == 1 and state.error_count == 1


def test_503_retry_after_http_date_pushes_next_poll(server, pipeline):
    when = datetime.now(timezone.utc) + timedelta(seconds=600)
    server.respond("/feed", status=503, headers={"Retry-After": format_datetime(when, usegmt=True)})
    p = pipeline([{"name": "feed", "url": server.url("/feed"), "interval": 60}], fetch={"backoff_base": 10})
    p.run()
    assert p.state().next_poll_at >= T0 + timedelta(seconds=590)


def test_retry_after_parsing():
    now = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)
    assert _retry_after("120", now) == 120
    assert _retry_after("Mon, 05 Jan 2026 12:02:00 GMT", now) == 120
    assert _retry_after("Mon, 05 Jan 2026 11:00:00 GMT", now) == 0  # in the past
    assert _retry_after("soon", now) is None and _retry_after(None, now) is None


def test_errors_back_off_exponentially(server, pipeline):
    server.respond("/feed", status=500)
    p = pipeline([{"name": "feed", "url": server.url("/feed"), "interval": 60}],
                 fetch={"backoff_base": 100, "backoff_max": 100000})
    delays = []
    for _ in range(4):
        p.run()
        delays.append((p.state().next_poll_at - T0).total_seconds())
    # 100, 200, 400, 800 s, each within the +-20% jitter
    for n, delay in enumerate(delays):
        assert 0.8 * 100 * 2**n <= delay <= 1.2 * 100 * 2**n
    assert p.state().consecutive_errors == 4


# ---------------------------------------------------------------------------- limits


def test_declared_length_over_cap_is_refused_before_reading(server):
    server.route("/big", lambda h: (h.send_response(200), h.send_header("Content-Length", str(10**9)),
                                    h.end_headers(), h.wfile.write(b"x" * 10)))
    with pytest.raises(TooLarge, match="declares"):
        fetcher(max_bytes=1 << 20).fetch_feed(feed_source(server.url("/big")), None)


def test_endless_body_is_cut_at_max_bytes(server):
    server.route("/endless", lambda h: h.stream(iter(lambda: b"x" * 65536, None)))
    started = time.monotonic()
    with pytest.raises(TooLarge, match="max_bytes=2000000"):
        fetcher(max_bytes=2_000_000).fetch_feed(feed_source(server.url("/endless")), None)
    assert time.monotonic() - started < 10


def test_gzip_bomb_is_refused(server):
    server.respond("/bomb", bomb(200 << 20), headers={"Content-Encoding": "gzip", "Content-Type": "application/rss+xml"})
    with pytest.raises(TooLarge, match="after decompression"):
        fetcher(max_bytes=1_000_000).fetch_feed(feed_source(server.url("/bomb")), None)


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc to reset the peak RSS")
def test_endless_and_bomb_bodies_stay_in_bounded_memory(server):
    """An endless body and a 1 GB gzip bomb, max_bytes = 8 MB: the peak grows by about the cap, not the stream.

    Peak RSS is the child's VmHWM, reset just before the fetch (ru_maxrss would include
    the parent's RSS, inherited across fork and exec, and could never fail this test).
    """
    cap = 8_000_000
    server.route("/endless", lambda h: h.stream(iter(lambda: b"x" * 65536, None)))
    server.respond("/bomb", bomb(1 << 30), headers={"Content-Encoding": "gzip"})

    endless = probe_memory(server.url("/endless"), cap)
    assert "larger than max_bytes" in endless["outcome"]
    growth = (endless["peak_kb"] - endless["before_kb"]) * 1024
    assert growth < 1.5 * cap + (8 << 20), endless  # measured: about 1.0 x cap (the kept body)

    bombed = probe_memory(server.url("/bomb"), cap)
    assert "after decompression" in bombed["outcome"]
    growth = (bombed["peak_kb"] - bombed["before_kb"]) * 1024
    assert growth < 1.5 * cap + (8 << 20) < (1 << 30) // 40, bombed  # inflating it would take 1 GB


def test_trickling_body_is_cut_by_the_total_deadline(server):
    """One byte every 0.2 s never trips the 10 s read timeout; the 1.5 s deadline cuts it."""

    def trickle(h):
        # finite (6 s), so a broken deadline fails this test instead of hanging it
        h.stream(((time.sleep(0.2), b"<")[1] for _ in range(30)), {"Content-Type": "application/rss+xml"})

    server.route("/trickle", trickle)
    started = time.monotonic()
    with pytest.raises(FetchTimeout, match="total deadline of 1.5s"):
        fetcher(timeout=1.5, read_timeout=10).fetch_feed(feed_source(server.url("/trickle")), None)
    assert time.monotonic() - started < 5  # generous: the machine is shared


def test_trickling_headers_are_cut_by_the_total_deadline(server):
    def trickle_headers(h):
        h.wfile.write(b"HTTP/1.1 200 OK\r\n")
        for _ in range(30):  # trickled on purpose (the test): each line within the read timeout
            h.wfile.write(b"X-Slow: 1\r\n")
            h.wfile.flush()
            time.sleep(0.2)

    server.route("/slow-headers", trickle_headers)
    started = time.monotonic()
    with pytest.raises(FetchTimeout, match="total deadline"):
        fetcher(timeout=1.5, read_timeout=10).fetch_feed(feed_source(server.url("/slow-headers")), None)
    assert time.monotonic() - started < 5  # generous: the machine is shared


def test_silent_server_trips_the_read_timeout():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts the connection (kernel backlog), never answers
    try:
        started = time.monotonic()
        with pytest.raises(FetchTimeout, match="read_timeout"):
            fetcher(timeout=10, read_timeout=0.5).fetch_feed(
                feed_source(f"http://127.0.0.1:{listener.getsockname()[1]}/"), None)
        assert time.monotonic() - started < 5  # generous: the machine is shared
    finally:
        listener.close()


@pytest.mark.parametrize("mime", ["image/png", "video/mp4", "application/pdf", "font/woff2"])
def test_content_types_that_cannot_be_feeds_are_refused(server, mime):
    server.respond("/x", b"\x89PNG....", headers={"Content-Type": mime})
    with pytest.raises(ContentTypeError, match=mime):
        fetcher().fetch_feed(feed_source(server.url("/x")), None)


@pytest.mark.parametrize("mime", ["text/html; charset=utf-8", "application/octet-stream", "text/plain", "application/json"])
def test_content_types_that_may_be_feeds_are_accepted(server, mime):
    server.respond("/x", rss([]), headers={"Content-Type": mime})
    assert fetcher().fetch_feed(feed_source(server.url("/x")), None).body == rss([])


# ---------------------------------------------------------------------------- errors as types


def test_connection_refused_is_a_connect_error():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()
    with pytest.raises(ConnectError, match="refused"):
        fetcher().fetch_feed(feed_source(f"http://127.0.0.1:{port}/"), None)


def test_name_resolution_failure_is_a_dns_error():
    """Mapped from urllib3's own exception: a real lookup would leave loopback (tests never do)."""
    failure = NameResolutionError("no-such-host.invalid", None, socket.gaierror(-2, "Name or service not known"))
    error = _classify(failure, "http://no-such-host.invalid/", FetchConfig())
    assert isinstance(error, DNSError) and "no-such-host.invalid" in str(error)


# ---------------------------------------------------------------------------- TLS


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    """A private CA and a server certificate it signed for the name ``localhost`` only (not 127.0.0.1)."""
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=ingest test CA",
             "-keyout", "ca.key", "-out", "ca.pem", cwd=d)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "server.key",
             "-out", "server.csr", cwd=d)
    (d / "san.cnf").write_text("subjectAltName = DNS:localhost\n", encoding="utf-8")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "2", "-extfile", "san.cnf", "-out", "server.pem", cwd=d)
    return {"ca": d / "ca.pem", "cert": d / "server.pem", "key": d / "server.key"}


@pytest.fixture
def tls_server(pki):
    with Loopback("127.0.0.1", tls=(str(pki["cert"]), str(pki["key"]))) as s:
        s.respond("/feed", b"<rss version='2.0'><channel><title>t</title></channel></rss>",
                  headers={"Content-Type": "application/rss+xml"})
        yield s


def test_an_untrusted_certificate_is_refused_with_one_line(tls_server):
    # localhost is the certificate's name, but nothing vouches for its issuer
    with pytest.raises(TLSError) as caught:
        fetcher(allow_private_addresses=True).fetch_page(f"https://localhost:{tls_server.port}/feed")
    assert "certificate verify failed" in str(caught.value) and "\n" not in str(caught.value)
    assert not tls_server.hits("/feed")  # no request was sent over the unverified connection


def test_a_configured_ca_bundle_is_trusted_and_the_host_name_still_checked(tls_server, pki):
    trusting = fetcher(allow_private_addresses=True, ca_bundle=str(pki["ca"]))
    # the guard connects to the address it checked; TLS verifies the URL's host name
    page = trusting.fetch_page(f"https://localhost:{tls_server.port}/feed")
    assert page.status == 200 and page.body.startswith(b"<rss")
    with pytest.raises(TLSError) as caught:  # the certificate does not name 127.0.0.1
        trusting.fetch_page(f"https://127.0.0.1:{tls_server.port}/feed")
    assert "127.0.0.1" in str(caught.value)
    assert len(tls_server.hits("/feed")) == 1


def test_ca_bundle_is_relative_to_the_config_and_must_exist(tmp_path, pki):
    (tmp_path / "ca.pem").write_bytes(pki["ca"].read_bytes())
    config = from_dict({"fetch": {"ca_bundle": "ca.pem"}}, tmp_path / "ingest.toml")
    assert config.fetch.ca_bundle == str((tmp_path / "ca.pem").resolve())
    with pytest.raises(ConfigError, match=r"'fetch.ca_bundle': no such file: .*missing\.pem"):
        from_dict({"fetch": {"ca_bundle": "missing.pem"}}, tmp_path / "ingest.toml")


def test_tls_failure_is_a_tls_error(server):
    server.respond("/", b"plain http")
    with pytest.raises(TLSError):
        fetcher(allow_private_addresses=True).fetch_page(f"https://127.0.0.1:{server.port}/")


@pytest.mark.parametrize("status", [404, 500, 300])
def test_http_errors_carry_the_status(server, status):
    server.respond("/x", b"no", status=status)
    with pytest.raises(HTTPStatusError) as caught:
        fetcher().fetch_feed(feed_source(server.url("/x")), None)
    assert caught.value.status == status and not isinstance(caught.value, Gone)


def test_credentials_in_the_url_go_only_to_their_origin(server, other_server):
    server.respond("/feed", status=302, headers={"Location": other_server.url("/elsewhere")})
    other_server.respond("/elsewhere", rss([]), headers={"Content-Type": "application/rss+xml"})
    url = server.url("/feed").replace("http://", "http://reader:s3cret@")
    fetcher(allow_private_addresses=True).fetch_feed(feed_source(url), None)
    assert server.hits("/feed")[0].headers["authorization"].startswith("Basic ")
    assert "authorization" not in other_server.hits("/elsewhere")[0].headers


# ---------------------------------------------------------------------------- SSRF guard (Fetcher)


@pytest.mark.parametrize("url", [
    "http://127.0.0.2:{port}/article",
    "http://localhost:{port}/article",  # a name that resolves to loopback
    # 169.254.169.254 (cloud metadata) and the other non-loopback classes are checked in
    # test_resolve_checked_refuses_every_non_public_class: the same check, without a
    # socket, so that a broken guard cannot send a test's request off this machine
    "http://[::1]:{port}/article",
    "http://[::ffff:127.0.0.2]:{port}/article",  # IPv4-mapped IPv6
    "http://2130706434:{port}/article",  # 127.0.0.2 as one decimal number
    "http://0.0.0.0:{port}/article",
])
def test_guard_blocks_non_public_addresses_before_connecting(other_server, url):
    """End to end on loopback only: a regression must never send a test's request off this machine."""
    with pytest.raises(BlockedAddress, match="non-public address"):
        fetcher().fetch_page(url.format(port=other_server.port))
    assert other_server.hits() == []


@pytest.mark.parametrize("address", [
    "169.254.169.254", "10.0.0.1", "172.16.0.1", "192.168.1.1", "100.64.0.1", "224.0.0.1", "255.255.255.255",
    "0.0.0.0", "fe80::1", "fc00::1", "ff02::1", "::", "::ffff:169.254.169.254", "64:ff9b::a9fe:a9fe", "2130706433",
])
def test_resolve_checked_refuses_every_non_public_class(address):
    """The check the guarded connection runs before opening a socket (literals: no DNS query, no connection)."""
    with pytest.raises(BlockedAddress, match="non-public address"):
        resolve_checked(address, 80)


def test_resolve_checked_returns_the_checked_address_for_a_public_literal():
    assert resolve_checked("93.184.215.14", 443) == "93.184.215.14"  # resolved only: nothing is connected


@pytest.mark.parametrize("url", ["file:///etc/passwd", "gopher://127.0.0.1:70/", "ftp://example.org/x", "data:,hi"])
def test_only_http_and_https_schemes(url):
    with pytest.raises(BlockedAddress, match="refused scheme"):
        fetcher(allow_private_addresses=True).fetch_page(url)


def test_allow_private_addresses_lifts_the_guard(other_server):
    other_server.respond("/article", b"<html><p>hello</p></html>", headers={"Content-Type": "text/html"})
    assert fetcher(allow_private_addresses=True).fetch_page(other_server.url("/article")).status == 200
    assert len(other_server.hits("/article")) == 1


def test_config_feed_on_loopback_is_trusted_but_not_its_redirect_elsewhere(server, other_server):
    server.respond("/feed", rss([]), headers={"Content-Type": "application/rss+xml"})
    server.respond("/moved-here", status=301, headers={"Location": "/feed"})  # same origin: trusted
    server.respond("/moved-away", status=302, headers={"Location": other_server.url("/feed")})
    other_server.respond("/feed", rss([]))
    f = fetcher()
    assert f.fetch_feed(feed_source(server.url("/feed")), None).status == 200
    assert f.fetch_feed(feed_source(server.url("/moved-here")), None).status == 200
    with pytest.raises(BlockedAddress):
        f.fetch_feed(feed_source(server.url("/moved-away")), None)
    assert other_server.hits() == []


def test_guard_checks_every_hop_of_content_urls(server):
    """A redirect from a (here: allowed) hop cannot lead a content URL to a private one: each hop is checked."""
    server.respond("/article", status=302, headers={"Location": "file:///etc/passwd"})
    with pytest.raises(BlockedAddress, match="refused scheme"):
        fetcher(allow_private_addresses=True).fetch_page(server.url("/article"))


def test_pooled_connection_to_a_trusted_feed_host_is_not_reused_for_content(server):
    """The feed's keep-alive connection to loopback must not carry a guarded page request."""
    server.respond("/feed", rss([]), headers={"Content-Type": "application/rss+xml"})
    server.respond("/article", b"<p>secret</p>", headers={"Content-Type": "text/html"})
    f = fetcher()
    f.fetch_feed(feed_source(server.url("/feed")), None)
    with pytest.raises(BlockedAddress):
        f.fetch_page(server.url("/article"))
    assert server.hits("/article") == []


def test_connects_to_the_address_it_checked_not_a_second_lookup(other_server, monkeypatch):
    """DNS rebinding: the name answers 'public' once, then private. Only the checked answer is used.

    The resolver is replaced (no DNS leaves this machine) and 127.0.0.2 plays the public
    address; a second lookup would answer 127.0.0.3, where nothing listens.
    """
    import ingest.fetch as fetch_module

    answers = iter(["127.0.0.2", "127.0.0.3", "127.0.0.3"])
    real_getaddrinfo = socket.getaddrinfo

    def rebinding(host, port, *args, **kwargs):
        return real_getaddrinfo(next(answers) if host == "rebind.test" else host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    monkeypatch.setattr(fetch_module, "is_public_address", lambda address: address == "127.0.0.2")
    other_server.respond("/a", b"<p>page</p>", headers={"Content-Type": "text/html"})
    result = fetcher().fetch_page(f"http://rebind.test:{other_server.port}/a")
    assert result.status == 200 and len(other_server.hits("/a")) == 1
    assert other_server.hits("/a")[0].headers["host"] == f"rebind.test:{other_server.port}"  # the name is still the Host


# ---------------------------------------------------------------------------- SSRF guard (pipeline, full_text)


def _linked_feed(server: Loopback, links: dict[str, str]) -> None:
    server.feed("/feed", [(guid, link, f"Story {guid}", f"{TEXT} ({guid})") for guid, link in links.items()])


def test_full_text_links_to_private_addresses_get_no_request_and_items_are_kept(server, other_server, pipeline):
    other_server.respond("/secret", b"<html><body><p>internal admin page</p></body></html>", headers={"Content-Type": "text/html"})
    links = {
        "loopback2": other_server.url("/secret"),
        "name": f"http://localhost:{other_server.port}/secret",  # a host name that resolves to loopback
        "ipv6": f"http://[::1]:{other_server.port}/secret",
        "file": "file:///etc/passwd",
    }
    _linked_feed(server, links)
    p = pipeline([{"name": "feed", "url": server.url("/feed"), "full_text": True}])
    report = p.run().sources[0]
    assert report.ok and report.items_new == 4
    assert other_server.hits() == []  # not one request reached the private server
    items = {row.guid: p.store.item(row.item_id) for row in p.store.items()}
    for guid, item in items.items():
        assert item.input_kind != "page" and TEXT in item.text, guid  # stored from the feed's content
        if guid == "file":  # not an http(s) link: parse drops it, so there is no page to fetch at all
            assert item.url is None and item.notes is None
        else:
            assert "full text not fetched (blocked)" in item.notes, guid


def test_full_text_with_allow_private_addresses_fetches_the_page(server, other_server, pipeline):
    page = "<html><body><article>" + "".join(f"<p>{TEXT} Paragraph {n}.</p>" for n in range(6)) + "</article></body></html>"
    other_server.respond("/secret", page.encode(), headers={"Content-Type": "text/html"})
    _linked_feed(server, {"loopback2": other_server.url("/secret")})
    p = pipeline([{"name": "feed", "url": server.url("/feed"), "full_text": True}],
                 fetch={"allow_private_addresses": True})
    assert p.run().sources[0].items_new == 1
    assert len(other_server.hits("/secret")) == 1
    (row,) = p.store.items()
    assert p.store.item(row.item_id).input_kind == "page"


# ---------------------------------------------------------------------------- fetch state in the store


def test_store_keeps_fetch_state_and_a_new_config_url_resets_it(store_url):
    """record_poll / sync_sources on SQLite and PostgreSQL: validators, ttl, errors, disabling, reset."""
    from ingest.models import PollRecord

    source = SourceConfig(name="s", url="http://127.0.0.1:9/feed")
    with Store.open(store_url) as store:
        state = store.sync_sources([source])["s"]
        store.record_poll(state.source_id, PollRecord(
            at=T0, ok=True, next_poll_in=7200, etag='"e"', last_modified="Mon, 05 Jan 2026",
            body_hash="h" * 64, effective_url="http://127.0.0.1:9/new", ttl=7200.0, requests=2))
        store.record_poll(state.source_id, PollRecord(
            at=T0 + timedelta(hours=2), ok=False, next_poll_in=3600, error="fetch: HTTP 410 Gone",
            error_kind="gone", disabled_reason="fetch: HTTP 410 Gone", requests=1))
        state = store.sync_sources([source])["s"]
        assert (state.etag, state.body_hash, state.ttl) == ('"e"', "h" * 64, 7200.0)
        assert state.effective_url == "http://127.0.0.1:9/new" and state.last_success_at is not None
        assert (state.consecutive_errors, state.error_count, state.last_error_kind) == (1, 1, "gone")
        assert state.disabled_reason == "fetch: HTTP 410 Gone"

        moved = store.sync_sources([SourceConfig(name="s", url="http://127.0.0.1:9/other")])["s"]
        assert moved.disabled_reason is None and moved.effective_url is None and moved.etag is None
        assert moved.body_hash is None and moved.ttl is None and moved.next_poll_at is None
        assert moved.consecutive_errors == 0 and moved.error_count == 1  # history kept


def test_redirect_without_a_delimited_body_does_not_wait_for_it(server):
    """A 301 whose body runs until close (no length, not chunked, never closed) must not hold the request."""

    def undelimited(h):
        h.close_connection = True
        h.wfile.write(b"HTTP/1.1 301 Moved\r\nLocation: /feed\r\n\r\n")
        h.wfile.flush()
        time.sleep(8)  # the test: neither a body nor a close (a client that waits takes the 6 s deadline)

    server.route("/old", undelimited)
    server.respond("/feed", rss([]), headers={"Content-Type": "application/rss+xml"})
    started = time.monotonic()
    result = fetcher(timeout=6).fetch_feed(feed_source(server.url("/old")), None)
    assert result.status == 200 and result.permanent_redirect == server.url("/feed")
    assert time.monotonic() - started < 5  # waiting for the body would take the 6 s deadline


