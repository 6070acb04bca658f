"""Load and validate the TOML config once, into frozen dataclasses.

Every option's type, default, bounds and one-line description live in the ``SPEC``
tables below; ``config/ingest.example.toml`` documents the same keys (a test keeps
them in step). All problems in a file are collected and reported together as one
``ConfigError`` naming the file and the key.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from ingest import PROJECT_URL, __version__, sourcelists
from ingest.errors import ConfigError
from ingest.urls import canonical_url, is_http_url

DEFAULT_CONFIG_NAME = "ingest.toml"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
MAX_DURATION = 100 * 366 * 86400.0  # a century: far beyond that, datetime arithmetic overflows
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


def parse_duration(value: Any) -> float:
    """Seconds from a number or a string like ``90s``, ``15m``, ``2h``, ``90d``."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 90, '90s', '15m' or '2h'")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ValueError(f"a duration must be a finite number, got {value}")
        if value < 0:
            raise ValueError("a duration cannot be negative")
        if value > MAX_DURATION:
            raise ValueError(f"a duration must be at most {MAX_DURATION:g} s (a century), got {value:g}")
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return parse_duration(float(match.group(1)) * _UNITS[match.group(2)])
    raise ValueError(f"expected a duration such as 90, '90s', '15m' or '2h', got {value!r}")


# ---------------------------------------------------------------------------- dataclasses


@dataclass(frozen=True)
class StoreConfig:
    url: str = "sqlite:///ingest.db"
    retention: float | None = None  # seconds; None keeps everything


@dataclass(frozen=True)
class FetchConfig:
    timeout: float = 20.0
    connect_timeout: float = 10.0
    read_timeout: float = 10.0
    max_bytes: int = 10_000_000
    max_redirects: int = 5
    user_agent: str = f"ingest/{__version__} (+{PROJECT_URL})"
    allow_private_addresses: bool = False
    per_host_concurrency: int = 2
    per_host_delay: float = 0.5
    concurrency: int = 8
    max_interval: float = 86400.0
    backoff_base: float = 60.0
    backoff_max: float = 86400.0
    ca_bundle: str | None = None  # PEM file of CA certificates to trust instead of certifi's


@dataclass(frozen=True)
class ExtractConfig:
    builtin_rules: bool = True
    min_chars: int = 200
    # trafilatura's fallback extractors (readability, jusText) when its own result looks
    # poor: off by default, since on the labelled pages they changed nothing that
    # cleaning keeps or removes and cost half the extraction time (docs/facts.md#trafilatura-fallbacks)
    trafilatura_fallbacks: bool = False
    # K = 3 different texts: on fixtures/dedup K = 2 also learned a real sentence shared
    # by two articles on one event, K = 3 learned only boilerplate (bench/clean_quality.py).
    # M = 50: about a day of a busy feed, so a new footer is learned the day it appears,
    # and the count stays one indexed query over at most 50 items. docs/facts.md#boilerplate-threshold.
    boilerplate_min_count: int = 3
    boilerplate_window: int = 50


@dataclass(frozen=True)
class DedupConfig:
    threshold: float = 0.3
    containment: float = 0.8
    num_perm: int = 128
    shingle_size: int = 3
    min_shingles: int = 30
    min_passages: int = 2
    passage_share: float = 0.6
    seed: int = 1
    canonical: str = "earliest"
    max_candidates: int = 20
    # Paraphrase evidence (docs/dedup.md): sentences aligned in order with agreeing
    # numbers, together with shared rare entities; a number/date guard on every
    # similarity match; index keys over rare entities. False: the decision as it was.
    paraphrase: bool = True
    sentence_share: float = 0.5
    entity_share: float = 0.75
    min_entities: int = 2
    window: float = 3 * 86400.0


@dataclass(frozen=True)
class DaemonConfig:
    workers: int = 4
    processes: int = 0  # 0: one per CPU; 1: parse/extract in the polling threads
    shutdown_timeout: float = 10.0
    listen: str | None = None
    jitter: float = 0.1
    feed_size: int = 50
    # A worker holds a source's lease while it polls it, extended every lease/3 by
    # heartbeats. 60 s: a killed worker's sources wait at most that long (a fifteenth of
    # the default 15-minute interval) before another worker takes them, three missed
    # heartbeats in a row are needed to lose a lease to a busy database, and a worker
    # paused for a minute (SIGSTOP, a VM migration) is fenced out. docs/daemon.md.
    lease: float = 60.0
    name: str | None = None  # this worker's name in the store, logs and metrics (default host:pid)


@dataclass(frozen=True)
class SourceConfig:
    name: str
    url: str  # http(s) URL, or an absolute local path (resolved against the config's folder)
    interval: float = 900.0
    full_text: bool = False
    priority: int = 0
    strip: tuple[str, ...] = ()
    enabled: bool = True
    tags: tuple[str, ...] = ()

    @property
    def is_local(self) -> bool:
        return not is_http_url(self.url)


@dataclass(frozen=True)
class Config:
    path: Path
    store: StoreConfig = field(default_factory=StoreConfig)
    fetch: FetchConfig = field(default_factory=FetchConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    sources: tuple[SourceConfig, ...] = ()
    warnings: tuple[str, ...] = ()

    def source(self, name: str) -> SourceConfig:
        for source in self.sources:
            if source.name == name:
                return source
        raise KeyError(name)


# ---------------------------------------------------------------------------- spec

Check = Callable[[Any], Any]


def _kind(name: str, types: tuple[type, ...], convert: Callable[[Any], Any] = lambda v: v) -> Check:
    def check(value: Any) -> Any:
        if isinstance(value, bool) and bool not in types:
            raise ValueError(f"expected {name}, got a boolean")
        if not isinstance(value, types):
            raise ValueError(f"expected {name}, got {type(value).__name__} {value!r}")
        return convert(value)

    return check


def _bounded(check: Check, low: float | None = None, high: float | None = None) -> Check:
    def bounded(value: Any) -> Any:
        value = check(value)
        if isinstance(value, float) and not math.isfinite(value):  # TOML has nan and inf
            raise ValueError(f"must be a finite number, got {value}")
        if low is not None and value < low:
            raise ValueError(f"must be at least {low}, got {value}")
        if high is not None and value > high:
            raise ValueError(f"must be at most {high}, got {value}")
        return value

    return bounded


def _choice(*choices: str) -> Check:
    def check(value: Any) -> Any:
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")
        return value

    return check


def _duration(low: float = 0.0) -> Check:
    return _bounded(parse_duration, low)


def _optional(check: Check) -> Check:
    return lambda value: None if value in ("", "off", None) else check(value)


def _regex_list(value: Any) -> tuple[str, ...]:
    items = _string_list(value)
    for pattern in items:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from None
    return items


def _string_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"expected a list of strings, got {value!r}")
    return tuple(value)


STRING = _kind("a string", (str,))
BOOL = _kind("true or false", (bool,))
INT = _kind("an integer", (int,))
NUMBER = _kind("a number", (int, float), float)

# section -> key -> (check, one-line description). Defaults come from the dataclasses.
SPEC: dict[str, dict[str, tuple[Check, str]]] = {
    "store": {
        "url": (STRING, "SQLAlchemy URL; a relative sqlite path is relative to this file"),
        "retention": (_optional(_duration(3600)), "drop items older than this with `ingest prune` (off by default)"),
    },
    "fetch": {
        "timeout": (_bounded(NUMBER, 0.1, 600), "total seconds allowed per request (all redirects and the body), enforced even on trickling servers"),
        "connect_timeout": (_bounded(NUMBER, 0.1, 120), "seconds to establish a connection"),
        "read_timeout": (_bounded(NUMBER, 0.1, 600), "seconds to wait for the next bytes of a response"),
        "max_bytes": (_bounded(INT, 1024), "response body cap, after decompression"),
        "max_redirects": (_bounded(INT, 0, 20), "redirects followed per request"),
        "user_agent": (STRING, "User-Agent header"),
        "allow_private_addresses": (BOOL, "let URLs from feed content reach loopback/private addresses"),
        "per_host_concurrency": (_bounded(INT, 1, 64), "concurrent requests to one host"),
        "per_host_delay": (_duration(), "minimum delay between two requests to one host"),
        "concurrency": (_bounded(INT, 1, 256), "concurrent requests in all"),
        "max_interval": (_duration(60), "cap on the poll interval a feed's ttl or max-age can impose"),
        "backoff_base": (_duration(1), "first retry delay after an error; doubles per consecutive error"),
        "backoff_max": (_duration(60), "longest retry delay after errors"),
        "ca_bundle": (_optional(STRING), "PEM file of CA certificates to trust for https instead of the bundled ones (a private CA); relative to this file"),
    },
    "extract": {
        "builtin_rules": (BOOL, "strip the built-in disclaimer/boilerplate rules"),
        "min_chars": (_bounded(INT, 0), "extractions shorter than this fall back to the feed's text"),
        "trafilatura_fallbacks": (BOOL, "also run trafilatura's fallback extractors (readability, jusText): about 1.3x slower extraction"),
        "boilerplate_min_count": (_bounded(INT, 2), "a paragraph seen in this many different texts among a source's recent items is boilerplate"),
        "boilerplate_window": (_bounded(INT, 3), "how many recent items of a source are looked at"),
    },
    "dedup": {
        "threshold": (_bounded(NUMBER, 0.05, 1.0), "Jaccard similarity of word shingles at or above which two texts are one story"),
        "containment": (_bounded(NUMBER, 0.3, 1.0), "share of a shorter text (teaser) found in a longer one at or above which they are one story"),
        "num_perm": (_bounded(INT, 16, 1024), "MinHash permutations"),
        "shingle_size": (_bounded(INT, 1, 10), "words per shingle"),
        "min_shingles": (_bounded(INT, 1), "texts with fewer shingles never merge by similarity, only by URL or exact content"),
        "min_passages": (_bounded(INT, 0, 100), "body paragraphs (20+ words) found near-verbatim in the other text that make a match below the thresholds (0: off)"),
        "passage_share": (_bounded(NUMBER, 0.3, 1.0), "share of the shorter text's body words those paragraphs must cover"),
        "seed": (INT, "MinHash seed (changing it requires `ingest resign`)"),
        "canonical": (_choice("earliest", "priority", "longest"), "which item represents a cluster"),
        "max_candidates": (_bounded(INT, 1, 1000), "LSH candidates verified per new item"),
        "paraphrase": (BOOL, "also match paraphrased copies (sentences + rare entities) and guard every match against reports of another day (false: shingles only, as before; changing it requires `ingest resign`)"),
        "sentence_share": (_bounded(NUMBER, 0.1, 1.0), "share of the shorter text's words in sentences aligned in order, numbers agreeing, for a paraphrase match"),
        "entity_share": (_bounded(NUMBER, 0.1, 1.0), "share of the smaller set of rare entities (uncommon names, long numbers) both texts must have for a paraphrase match"),
        "min_entities": (_bounded(INT, 1, 100), "rare entities both texts must have for a paraphrase match"),
        "window": (_duration(3600), "paraphrase matches only between items published (else fetched) at most this far apart; also the time bucket of the entity index keys (changing it requires `ingest resign`)"),
    },
    "daemon": {
        "workers": (_bounded(INT, 1, 64), "sources polled at once"),
        "processes": (_bounded(INT, 0, 64), "worker processes for parsing, extraction and fingerprints (0: one per CPU; 1: none)"),
        "shutdown_timeout": (_duration(), "time given to in-flight polls on SIGTERM"),
        "listen": (_optional(STRING), "host:port for /healthz, /metrics and the served feeds (off by default)"),
        "jitter": (_bounded(NUMBER, 0, 0.5), "random spread of poll times, as a share of the interval"),
        "feed_size": (_bounded(INT, 1, 1000), "clusters in the served /feed.atom and /feed.json"),
        "lease": (_duration(3), "how long a worker holds a claimed source without a heartbeat (extended every lease/3)"),
        "name": (_optional(STRING), "this worker's name in the store, logs and metrics (default: host:pid)"),
    },
    "defaults": {
        "interval": (_duration(1), "poll interval"),
        "full_text": (BOOL, "fetch the linked article page and extract from it"),
        "priority": (INT, "higher wins with canonical = \"priority\""),
    },
    "source": {
        "name": (STRING, "unique name"),
        "url": (STRING, "http(s) URL, or a path to a local feed file"),
        "interval": (_duration(1), "overrides [defaults]"),
        "full_text": (BOOL, "overrides [defaults]"),
        "priority": (INT, "overrides [defaults]"),
        "strip": (_regex_list, "extra disclaimer patterns (regular expressions) for this source"),
        "enabled": (BOOL, "false keeps the source's items but stops polling it"),
        "tags": (_string_list, "labels (OPML categories land here)"),
    },
}

_SECTION_CLASSES = {
    "store": StoreConfig,
    "fetch": FetchConfig,
    "extract": ExtractConfig,
    "dedup": DedupConfig,
    "daemon": DaemonConfig,
}
_TOP_LEVEL = set(_SECTION_CLASSES) | {"defaults", "sources", "sources_files"}


# ---------------------------------------------------------------------------- loading


def find_path(explicit: str | None, environ: dict[str, str] | None = None) -> Path:
    """The config path: ``-c FILE``, else ``$INGEST_CONFIG``, else ``./ingest.toml``."""
    environ = os.environ if environ is None else environ
    return Path(explicit or environ.get("INGEST_CONFIG") or DEFAULT_CONFIG_NAME)


def load(path: str | os.PathLike[str]) -> Config:
    """Read and validate a config file; raise one ConfigError listing every problem."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("file not found", str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", str(path)) from None
    return from_dict(raw, path)


def from_dict(raw: dict[str, Any], path: Path) -> Config:
    """Validate an already-parsed TOML document (``path`` anchors relative paths)."""
    problems: list[str] = []
    base = path.resolve().parent

    for key in raw:
        if key not in _TOP_LEVEL:
            problems.append(f"unknown key '{key}' (expected one of: {', '.join(sorted(_TOP_LEVEL))})")

    sections: dict[str, Any] = {}
    for name, cls in _SECTION_CLASSES.items():
        values = _section(raw.get(name, {}), name, SPEC[name], problems)
        sections[name] = cls(**values)

    fetch = sections["fetch"]
    if fetch.ca_bundle is not None:
        bundle = (base / fetch.ca_bundle).resolve()
        if not bundle.is_file():
            problems.append(f"'fetch.ca_bundle': no such file: {bundle}")
        sections["fetch"] = replace(fetch, ca_bundle=str(bundle))

    store = sections["store"]
    if store.url.startswith("sqlite:///"):
        sections["store"] = replace(store, url=sqlite_url(store.url, base))

    defaults = _section(raw.get("defaults", {}), "defaults", SPEC["defaults"], problems)
    sources = _sources(raw.get("sources", []), defaults, base, problems)

    listed, warnings = sourcelists.load_files(raw.get("sources_files", []), base, problems)
    extra = [
        source for item in listed
        if (source := source_from_table(item.table, item.where, defaults, item.base, problems, item.allow_local))
    ]
    sources, duplicate_warnings = merge_sources(sources, extra)
    warnings += duplicate_warnings

    if problems:
        raise ConfigError(problems, str(path))
    return Config(path=path.resolve(), sources=tuple(sources), warnings=tuple(warnings), **sections)


def sqlite_url(url: str, base: Path) -> str:
    """Make a relative ``sqlite:///file`` URL absolute against the config's folder."""
    rest = url[len("sqlite:///"):]
    if rest in ("", ":memory:") or rest.startswith("/") or rest.startswith("file:"):
        return url
    return "sqlite:///" + str((base / rest).resolve())


def _section(value: Any, name: str, spec: dict[str, tuple[Check, str]], problems: list[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        problems.append(f"[{name}] must be a table, got {type(value).__name__}")
        return {}
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key not in spec:
            problems.append(f"unknown key '{name}.{key}' (expected one of: {', '.join(spec)})")
            continue
        check, _ = spec[key]
        try:
            out[key] = check(item)
        except ValueError as exc:
            problems.append(f"'{name}.{key}': {exc}")
    return out


def source_from_table(
    table: Any, where: str, defaults: dict[str, Any], base: Path, problems: list[str], allow_local: bool = True
) -> SourceConfig | None:
    """One ``[[sources]]`` table (or an entry of a sources file) to a SourceConfig.

    ``allow_local=False`` (OPML outlines: third-party files whose xmlUrl is a URL by
    definition) refuses local paths, so an imported list cannot make us read a file.
    """
    values = _section(table, where, SPEC["source"], problems)
    if not isinstance(table, dict):
        return None
    missing = [k for k in ("name", "url") if k not in values]
    if missing:
        problems.append(f"{where}: missing {' and '.join(repr(m) for m in missing)}")
        return None
    merged = {**defaults, **values}
    url = merged["url"].strip()
    if "://" in url or not allow_local:
        if not is_http_url(url):
            allowed = "http or https" if not allow_local else "http, https or a local path"
            problems.append(f"'{where}.url': only {allowed}, got {url!r}")
            return None
        scheme = url.split("://", 1)[0]
        url = scheme.lower() + url[len(scheme):]  # HTTPS://host is https://host
    else:
        url = str((base / url).resolve())
    merged["url"] = url
    return SourceConfig(**merged)


def _sources(value: Any, defaults: dict[str, Any], base: Path, problems: list[str]) -> list[SourceConfig]:
    if not isinstance(value, list):
        problems.append("'sources' must be an array of tables ([[sources]])")
        return []
    sources: list[SourceConfig] = []
    seen: set[str] = set()
    for index, table in enumerate(value):
        where = f"sources[{index}]"
        source = source_from_table(table, where, defaults, base, problems)
        if source is None:
            continue
        if source.name in seen:
            problems.append(f"{where}: duplicate source name {source.name!r}")
            continue
        seen.add(source.name)
        sources.append(source)
    return sources


def merge_sources(first: list[SourceConfig], more: list[SourceConfig]) -> tuple[list[SourceConfig], list[str]]:
    """Append ``more`` to ``first``, dropping repeated URLs and renaming clashing names; warnings."""
    seen_urls = {_url_key(s.url): s.name for s in first}
    names = {s.name for s in first}
    out = list(first)
    warnings: list[str] = []
    for source in more:
        key = _url_key(source.url)
        if key in seen_urls:
            warnings.append(f"source {source.name!r}: same URL as {seen_urls[key]!r}, kept once")
            continue
        name = source.name
        counter = 2
        while name in names:
            name = f"{source.name} ({counter})"
            counter += 1
        if name != source.name:
            source = replace(source, name=name)
        seen_urls[key] = name
        names.add(name)
        out.append(source)
    return out, warnings


def _url_key(url: str) -> str:
    return canonical_url(url) if is_http_url(url) else url
