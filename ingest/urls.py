"""URL helpers defined once: canonical form, address classification, redaction."""

from __future__ import annotations

import ipaddress
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

# Query parameters that only track the click, never select the article.
_TRACKING_PREFIXES = ("utm_", "mc_", "pk_", "piwik_", "hsa_")
_TRACKING_NAMES = {
    "fbclid", "gclid", "dclid", "gclsrc", "msclkid", "yclid", "igshid", "mkt_tok",
    "ref", "ref_src", "ref_url", "cmpid", "ito", "ns_mchannel", "ns_source", "ns_campaign",
    "ns_linkname", "ns_fee", "at_medium", "at_campaign", "xtor", "smid", "share",
}
_DEFAULT_PORTS = {"http": 80, "https": 443}


def is_http_url(url: str | None) -> bool:
    """True for an http or https URL (scheme compared case-insensitively, RFC 3986 3.1)."""
    if not url:
        return False
    try:
        return urlsplit(url.strip()).scheme.lower() in ("http", "https") and "://" in url
    except ValueError:
        return False


def resolve_url(link: str, base: str | None) -> str:
    """``link`` resolved against ``base`` (RFC 3986 section 5); unchanged when there is no base.

    Surrounding whitespace is dropped from both (feeds pad URLs with newlines); a link
    that cannot be joined (a malformed IPv6 host) comes back as it was.
    """
    link = link.strip()
    if not base or not base.strip():
        return link
    try:
        return urljoin(base.strip(), link)
    except ValueError:
        return link


def is_relative_url(url: str) -> bool:
    """True when ``url`` has no scheme (a relative reference, RFC 3986 4.2), so it needs a base."""
    try:
        return not urlsplit(url.strip()).scheme
    except ValueError:
        return False


def canonical_url(url: str) -> str:
    """A comparable form of ``url``: lower-case scheme and host, no default port,
    no fragment, no tracking parameters, sorted query, no trailing slash on paths."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return url.strip()
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower().rstrip(".")
    if host.startswith("www."):
        host = host[4:]
    netloc = host
    if port and port != _DEFAULT_PORTS.get(scheme):
        netloc = f"{host}:{port}"
    query = [
        (k, v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if k.lower() not in _TRACKING_NAMES and not k.lower().startswith(_TRACKING_PREFIXES)
    ]
    path = parts.path or "/"
    if len(path) > 1 and path.endswith("/"):
        path = path.rstrip("/")
    # http and https copies of one page are one page
    scheme = "https" if scheme in ("http", "https") else scheme
    return urlunsplit((scheme, netloc, path, urlencode(sorted(query)), ""))


def is_public_address(address: str) -> bool:
    """True when ``address`` (IPv4 or IPv6) is a globally routable unicast address.

    Refuses loopback, private (RFC 1918, RFC 4193), link-local (169.254.0.0/16,
    fe80::/10, incl. cloud metadata 169.254.169.254), multicast, reserved,
    unspecified, shared (100.64.0.0/10) and the IPv4-mapped forms of all of them.
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped or ip.sixtofour
        if mapped is not None:
            return is_public_address(str(mapped))
        if ip in ipaddress.ip_network("64:ff9b::/96"):  # NAT64 embeds an IPv4 address
            return is_public_address(str(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)))
    return bool(
        ip.is_global
        and not ip.is_multicast
        and not ip.is_reserved
        and not ip.is_loopback
        and not ip.is_link_local
        and not ip.is_private
        and not ip.is_unspecified
    )


def redact_url(url: str) -> str:
    """``url`` without any ``user:password@`` part, safe to log."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))


def host_of(url: str) -> str:
    """Lower-case host[:port] of ``url`` ('' when it has none): the politeness key."""
    try:
        parts = urlsplit(url)
        return (parts.hostname or "").lower() + (f":{parts.port}" if parts.port else "")
    except ValueError:
        return ""
