"""One error tree for everything ingest raises on purpose.

Each message starts with the stage (``fetch: body larger than 10000000 bytes``) so a
one-line report names the cause; the source name is added by whoever reports it.
Lower-layer errors (requests, sqlite3, psycopg, lxml) are wrapped where they happen
with ``raise ... from exc``; only ``cli.py`` turns these into messages and exit codes.
"""

from __future__ import annotations


class IngestError(Exception):
    """Base of every error ingest raises on purpose."""

    stage = "ingest"
    kind = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return f"{self.stage}: {self.message}"


class ConfigError(IngestError):
    """The configuration file is missing, malformed or invalid (exit status 2)."""

    stage = "config"
    kind = "config"

    def __init__(self, problems: list[str] | str, path: str | None = None) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.path = path
        where = f"{path}: " if path else ""
        super().__init__(where + "; ".join(self.problems))


class FetchError(IngestError):
    """A feed or page could not be fetched."""

    stage = "fetch"
    kind = "fetch"
    requests = 1  # HTTP requests sent before the failure (redirect hops included); set by fetch


class FetchTimeout(FetchError):
    kind = "timeout"


class TooLarge(FetchError):
    kind = "too_large"


class HTTPStatusError(FetchError):
    kind = "http_status"

    def __init__(self, message: str, status: int, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class Gone(HTTPStatusError):
    """410 Gone: the source is disabled until its config changes."""

    kind = "gone"


class BlockedAddress(FetchError):
    """The URL resolves to an address the SSRF guard refuses, or has a refused scheme."""

    kind = "blocked"


class TLSError(FetchError):
    kind = "tls"


class DNSError(FetchError):
    kind = "dns"


class ConnectError(FetchError):
    kind = "connect"


class ContentTypeError(FetchError):
    kind = "content_type"


class TooManyRedirects(FetchError):
    kind = "redirects"


class ParseError(IngestError):
    """The body is not a feed we can read."""

    stage = "parse"
    kind = "parse"


class StoreError(IngestError):
    """The store cannot be opened, migrated or written."""

    stage = "store"
    kind = "store"


class NotFound(StoreError):
    """A command named an item (or other row) that the store does not hold."""

    kind = "not_found"


class SignatureMismatch(StoreError):
    """The store's signatures were made with other settings than the running config."""

    kind = "signature_mismatch"


class StoreLocked(StoreError):
    """Another daemon already holds this SQLite store."""

    kind = "locked"


class LeaseLost(IngestError):
    """This worker's lease on a source ran out or was taken over: its writes are fenced out.

    Not a StoreError: the store is fine, and the run goes on with other sources.
    """

    stage = "store"
    kind = "fenced"


class SourceListMismatch(ConfigError):
    """Live workers sharing the store run another source list than this config."""

    kind = "source_list"


class SearchError(IngestError):
    """A search query holds nothing to search for."""

    stage = "search"
    kind = "search"
