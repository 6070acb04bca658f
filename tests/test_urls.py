"""ingest.urls: address classification for the SSRF guard, canonical URLs, redaction, host keys."""

from __future__ import annotations

import pytest

from ingest.urls import canonical_url, host_of, is_public_address, is_relative_url, redact_url, resolve_url


@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.0.0.2", "127.255.255.254",  # loopback /8
    "10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.0.1",  # RFC 1918
    "169.254.169.254", "169.254.0.1",  # link-local, cloud metadata
    "100.64.0.1",  # shared address space (RFC 6598)
    "0.0.0.0", "255.255.255.255", "224.0.0.1", "239.255.255.250", "240.0.0.1",  # unspecified, broadcast, multicast, reserved
    "192.0.2.1", "198.18.0.1", "198.51.100.1", "203.0.113.1",  # documentation, benchmarking
    "::1", "::", "fe80::1", "fe80::1%eth0", "fc00::1", "fd12:3456::1", "ff02::1", "2001:db8::1",
    "::ffff:127.0.0.1", "::ffff:169.254.169.254", "::ffff:10.0.0.1",  # IPv4-mapped
    "2002:7f00:1::1",  # 6to4 wrapping 127.0.0.1
    "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe",  # NAT64 of loopback and metadata
    "not-an-address", "", "2130706433",
])
def test_non_public_addresses(address):
    assert not is_public_address(address)


@pytest.mark.parametrize("address", [
    "93.184.215.14", "8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808",
])
def test_public_addresses(address):
    assert is_public_address(address)


@pytest.mark.parametrize("url, expected", [
    ("HTTP://WWW.Example.ORG:80/a/b/?utm_source=x&b=2&a=1#frag", "https://example.org/a/b?a=1&b=2"),
    ("https://example.org", "https://example.org/"),
    ("https://example.org:8443/x?fbclid=1", "https://example.org:8443/x"),
])
def test_canonical_url(url, expected):
    assert canonical_url(url) == expected


def test_redact_url():
    assert redact_url("https://user:pw@example.org:8080/feed?x=1") == "https://***@example.org:8080/feed?x=1"
    assert redact_url("https://example.org/feed") == "https://example.org/feed"


def test_host_of_is_the_politeness_key():
    assert host_of("https://Example.ORG/feed") == "example.org"
    assert host_of("http://127.0.0.1:8080/x") == "127.0.0.1:8080"
    assert host_of("not a url") == ""


@pytest.mark.parametrize("link, base, expected", [
    ("a.html", "https://example.org/feeds/rss.xml", "https://example.org/feeds/a.html"),
    ("/a", "https://example.org/feeds/rss.xml", "https://example.org/a"),
    ("//cdn.example.org/a", "https://example.org/", "https://cdn.example.org/a"),
    ("\n https://other.example/x \n", "https://example.org/", "https://other.example/x"),
    ("a.html", "https://example.org/ ", "https://example.org/a.html"),  # a base padded with a space
    ("mailto:desk@example.org", "https://example.org/", "mailto:desk@example.org"),
    ("a.html", None, "a.html"),  # no base: unchanged, still relative
    ("http://[::1/a", "https://example.org/", "http://[::1/a"),  # cannot be joined: as it was
])
def test_resolve_url(link, base, expected):
    assert resolve_url(link, base) == expected


@pytest.mark.parametrize("url, relative", [
    ("a.html", True), ("/a", True), ("//host/a", True), ("https://a/", False), ("mailto:x@y", False),
])
def test_is_relative_url(url, relative):
    assert is_relative_url(url) is relative
