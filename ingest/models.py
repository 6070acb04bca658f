"""Frozen dataclasses passed between stages.

The pipeline is ``fetch -> parse -> extract -> clean -> dedup -> store``; each arrow
carries one of these. No library object (feedparser dict, lxml tree, MinHash) crosses
a stage boundary.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime

# An identity is one column of a unique index: PostgreSQL's btree refuses an index row
# over 2,704 bytes ("index row size exceeds btree version 4 maximum", found by the
# property tests with a generated guid of 2.7 KB). Longer guids/links are keyed on their
# SHA-256, so a feed with absurd guids still stores its entries, on both backends alike;
# a canonical URL over the bound is not indexed (pipeline._canonical).
INDEX_KEY_MAX_BYTES = 1024


@dataclass(frozen=True)
class SourceState:
    """What the store remembers about a source between polls."""

    source_id: int
    name: str
    url: str
    effective_url: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    body_hash: str | None = None
    last_polled_at: datetime | None = None
    last_success_at: datetime | None = None
    last_error: str | None = None
    last_error_kind: str | None = None
    consecutive_errors: int = 0
    error_count: int = 0
    next_poll_at: datetime | None = None
    disabled_reason: str | None = None
    ttl: float | None = None  # the feed's last RSS <ttl>, seconds: a 304 keeps honouring it
    poll_count: int = 0
    request_count: int = 0  # HTTP requests sent for this source: feed, redirect hops, article pages


@dataclass(frozen=True)
class FetchResult:
    """One HTTP (or local file) response, already bounded and decompressed."""

    url: str  # what was asked for
    final_url: str  # after redirects
    status: int
    body: bytes = b""
    content_type: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    not_modified: bool = False
    permanent_redirect: str | None = None  # new URL when a 301/308 moved the feed
    max_age: float | None = None  # Cache-Control: max-age, seconds
    body_hash: str | None = None
    fetched_at: datetime | None = None
    elapsed: float = 0.0
    requests: int = 1  # HTTP requests sent, redirects included


@dataclass(frozen=True)
class Entry:
    """One feed entry, as the feed says it."""

    guid: str | None
    url: str | None
    title: str
    author: str | None
    published_at: datetime | None
    updated_at: datetime | None
    content_html: str  # the best body the feed carries (content > summary)
    content_kind: str  # "content" | "summary" | "none"
    language: str | None = None
    enclosure_urls: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    entry_hash: str = ""  # hash of what the feed said: unchanged entries are skipped
    # The link as the feed wrote it (before resolving against the feed's URL, the http(s)
    # check and the feedburner:origLink swap): identities key on it, so the identities
    # stored before links were resolved stay what they were. None: ``url`` is the key.
    raw_link: str | None = None
    # Set by parse when this entry's guid recurs in its feed with another link: the guid
    # alone would fold distinct articles into one item (Miniflux keys such entries on
    # guid + link too); entries repeating guid AND link stay one item.
    guid_repeats: bool = False

    @property
    def identity(self) -> str:
        """Stable key of this entry within its source: guid (with the link when the guid
        recurs in the feed with other links), else link, else first enclosure, else its hash."""
        key = self._identity()
        if len(key.encode("utf-8", "surrogatepass")) <= INDEX_KEY_MAX_BYTES:
            return key
        return "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()

    def _identity(self) -> str:
        link = self.raw_link or self.url
        if self.guid:
            return f"{self.guid} {link}" if self.guid_repeats and link else self.guid
        if link:
            return link
        return self.enclosure_urls[0] if self.enclosure_urls else f"hash:{self.entry_hash}"


@dataclass(frozen=True)
class ParsedFeed:
    title: str | None
    link: str | None
    entries: tuple[Entry, ...]
    ttl: float | None = None  # RSS <ttl>, seconds
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Removal:
    """A piece of text taken out by cleaning, and why."""

    rule: str  # built-in rule name, "source:<n>" for a config pattern, or "learned"
    text: str
    position: str  # "start" | "end" | "whole" | "inline"


@dataclass(frozen=True)
class Document:
    """An article's text and metadata after extraction (and, later, cleaning)."""

    title: str
    text: str  # paragraphs separated by a blank line
    author: str | None = None
    published_at: datetime | None = None
    language: str | None = None
    input_kind: str = "content"  # "page" | "content" | "summary" | "title"
    removals: tuple[Removal, ...] = ()
    notes: tuple[str, ...] = ()  # e.g. why a full-text page was not used

    @property
    def paragraphs(self) -> list[str]:
        return [p for p in self.text.split("\n\n") if p.strip()]


@dataclass(frozen=True)
class Fingerprint:
    """How dedup sees a document: hashes, its MinHash signature and its LSH band keys."""

    content_hash: str
    shingle_count: int
    signature: bytes  # num_perm uint32 values, little-endian
    band_keys: tuple[int, ...]
    # sentences with their numbers and the rare entities (ingest.features.encode);
    # computed with the signature so the writer decodes instead of re-reading text
    features: bytes = b""
    # index keys looked up but not stored: the rare-entity bands of the neighbouring
    # time buckets (dedup.fingerprint)
    probe_keys: tuple[int, ...] = ()


@dataclass(frozen=True)
class Candidate:
    """A stored item that may be a copy of the new one (from LSH, URL or content hash)."""

    item_id: int
    cluster_id: int
    title: str
    text: str
    is_canonical: bool
    band_hits: int = 0
    same_url: bool = False  # same canonical URL as the new item
    same_content: bool = False  # same content hash as the new item
    features: bytes = b""  # as stored (Fingerprint.features); b"" for items stored before them
    signature: bytes = b""  # its MinHash signature and shingle count: far candidates skip shingling
    shingle_count: int = 0
    when: datetime | None = None  # published, else fetched (aware UTC): the time window's reference


@dataclass(frozen=True)
class Member:
    """What the canonical policy (``dedup.canonical_key``) looks at in a cluster member."""

    item_id: int
    published_at: datetime | None  # aware UTC
    fetched_at: datetime | None
    priority: int  # of the member's source
    length: int  # characters of clean text


@dataclass(frozen=True)
class Signal:
    """One measured value that took part in a dedup decision, and the bar it was held to."""

    name: str  # e.g. "jaccard", "containment", "sentences", "entities", "numbers", "window"
    value: float
    threshold: float
    passed: bool

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "value": self.value, "threshold": self.threshold, "passed": self.passed}


@dataclass(frozen=True)
class DedupDecision:
    """Where a new item goes, and the numbers behind it, stored so it can be explained."""

    kind: str  # "new" | "duplicate"
    cluster_id: int | None = None
    matched_item_id: int | None = None
    method: str = "none"  # "none" | "url" | "content_hash" | "minhash" | "containment" | "passages" | "paraphrase"
    similarity: float = 0.0  # Jaccard of shingle sets with the matched item
    containment: float = 0.0  # share of the smaller text's shingles found in the other
    canonical_similarity: float = 0.0
    candidates: int = 0
    reason: str = ""
    # one-item clusters that also match this text and the chosen cluster's canonical:
    # the store moves their item into the chosen cluster (arrival order undone)
    absorb: tuple[int, ...] = ()
    # the signals of the match (or of the closest candidate when none matched), stored as values
    evidence: tuple[Signal, ...] = ()


@dataclass(frozen=True)
class PollRecord:
    """What the store keeps of one poll of a source.

    The next poll is ``next_poll_in`` seconds after the time the store records the
    poll at (the database's clock on PostgreSQL, so every worker of a fleet agrees).
    """

    at: datetime  # the worker's clock when the poll ended (SQLite records this time)
    ok: bool
    next_poll_in: float
    error: str | None = None
    error_kind: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    body_hash: str | None = None
    effective_url: str | None = None  # set when a permanent redirect moved the feed
    disabled_reason: str | None = None
    requests: int = 0
    ttl: float | None = None  # the feed's RSS <ttl> in seconds (kept on the source after success)
    host_retry_after: float | None = None  # a 429/503 Retry-After: the whole host waits this long (fleet-wide)


@dataclass(frozen=True)
class ItemOutcome:
    item_id: int
    status: str  # "new" | "updated" | "unchanged"
    cluster_id: int
    decision: DedupDecision | None = None
    learned: tuple[str, ...] = ()  # fingerprints of the paragraphs this item made boilerplate of its source


@dataclass(frozen=True)
class SourceReport:
    """What one poll of one source did."""

    source: str
    ok: bool
    error: str | None = None
    error_kind: str | None = None
    not_modified: bool = False
    items_seen: int = 0
    items_new: int = 0
    items_updated: int = 0
    items_unchanged: int = 0
    duplicates: int = 0
    warnings: tuple[str, ...] = ()
    item_errors: tuple[str, ...] = ()
    requests: int = 0
    timings: dict[str, float] = field(default_factory=dict, compare=False)
    stopped: bool = False  # asked to stop mid-poll: nothing recorded, the rest is done on the next poll
    fenced: bool = False  # this worker's lease ran out or was taken over: its writes were refused


@dataclass(frozen=True)
class Copy:
    """One member of a cluster other than its canonical item: who else published the story."""

    item_id: int
    source: str
    url: str | None
    title: str
    published_at: datetime | None


@dataclass(frozen=True)
class Story:
    """One cluster as it is exported: its canonical item, clean text, and the other copies."""

    cluster_id: int
    uid: str  # stable across canonical changes: exported entry ids derive from it
    created_at: datetime
    updated_at: datetime  # when the cluster last changed (member added, canonical changed)
    item_id: int
    source: str
    title: str
    url: str | None
    author: str | None
    language: str | None
    published_at: datetime | None
    text: str
    copies: tuple[Copy, ...] = ()


@dataclass(frozen=True)
class SearchHit:
    """One search result: the matching item (or its cluster's canonical item) and where it matched."""

    item_id: int
    cluster_id: int
    source: str
    title: str
    url: str | None
    published_at: datetime | None
    score: float  # higher is better; backend-specific scale (FTS5 bm25, PostgreSQL ts_rank)
    snippet: str
    cluster_size: int


@dataclass(frozen=True)
class StoredItem:
    """Everything re-clustering needs to replay one stored item's dedup decision."""

    item_id: int
    source: str
    priority: int
    identity: str
    url: str | None
    canonical_url: str | None
    title: str
    author: str | None
    language: str | None
    published_at: datetime | None
    fetched_at: datetime
    input_kind: str
    text: str
    cluster_id: int
    fingerprint: Fingerprint


# ---------------------------------------------------------------------------- read models
# What the store answers to the commands that list and show things (ingest.store.queries).
# One vocabulary: ``item_id`` and ``cluster_id`` everywhere, ``*_at`` for times.


@dataclass(frozen=True)
class ItemView:
    """What every read model of an item holds: the item itself, its source and cluster."""

    item_id: int
    source: str
    url: str | None
    guid: str | None
    title: str
    author: str | None
    published_at: datetime | None
    fetched_at: datetime
    input_kind: str
    text: str
    cluster_id: int


@dataclass(frozen=True)
class ItemRow(ItemView):
    """One stored item with its source and cluster, as ``ingest items`` lists it."""

    is_canonical: bool


@dataclass(frozen=True)
class ClusterMember:
    """One member of a cluster, with its signature (for its similarity to the canonical)."""

    item_id: int
    source: str
    url: str | None
    title: str
    signature: bytes
    published_at: datetime | None
    decision_method: str


@dataclass(frozen=True)
class ClusterRow:
    """One cluster and its members, in item order."""

    cluster_id: int
    canonical_item_id: int | None
    size: int
    updated_at: datetime
    members: tuple[ClusterMember, ...]


@dataclass(frozen=True)
class CanonicalChange:
    """A change of a cluster's canonical item, and why."""

    change_id: int
    cluster_id: int
    old_item_id: int | None
    new_item_id: int
    changed_at: datetime
    reason: str


@dataclass(frozen=True)
class ItemDetail(ItemView):
    """Everything known about one item: text, removals, decision, cluster, canonical history."""

    notes: str | None
    content_hash: str
    signature: bytes
    canonical_item_id: int | None
    decision_method: str
    decision_similarity: float
    decision_containment: float
    decision_matched_item_id: int | None
    decision_reason: str
    removals: tuple[Removal, ...]
    members: tuple[ClusterMember, ...]
    canonical_changes: tuple[CanonicalChange, ...]
    decision_evidence: tuple[Signal, ...] = ()  # the signals the decision stored (none before migration 2)


@dataclass(frozen=True)
class LearnedParagraph:
    """A paragraph learned as boilerplate of a source, and how many items it was removed from."""

    source: str
    key: str
    text: str
    seen: int  # different texts of the source's last ``window`` items it stood in when learned
    window: int
    learned_at: datetime
    removed: int
