"""The store on SQLite always and on PostgreSQL when INGEST_TEST_POSTGRES_URL is set."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from functools import partial

import pytest

from ingest import dedup
from ingest.config import DedupConfig, SourceConfig
from ingest.errors import StoreError
from ingest.models import Document, Entry, PollRecord
from ingest.store import Store

CFG = DedupConfig()
SCHEME = dedup.scheme_for(CFG)
T0 = datetime(2025, 10, 30, 8, 0, tzinfo=timezone.utc)

STORY = "\n\n".join(
    [
        "Rescue teams in the river town of Tavera pulled survivors from flooded homes on Thursday as the death toll "
        "from two days of torrential rain rose to fifty one, regional officials said.",
        "The regional governor said more than four thousand people had been moved to schools and sports halls, and "
        "that the army had sent helicopters to reach villages cut off by landslides in the hills above the town.",
        "Forecasters warned that another band of heavy rain could reach the coast by Saturday, and the national "
        "weather service kept its highest alert level for three provinces.",
    ]
)
OTHER = "\n\n".join(
    [
        "Insurers expect claims from the Tavera floods to exceed two hundred million euros, making it the costliest "
        "weather disaster in the region for a decade, an industry association said on Friday.",
        "Brokers said many small businesses in the old town had no flood cover at all, because premiums had tripled "
        "since the last major flood and several insurers had left the market altogether.",
    ]
)


def _entry(guid: str, url: str | None = None, title: str = "Floods", text: str = STORY) -> Entry:
    return Entry(
        guid=guid, url=url, title=title, author=None, published_at=None, updated_at=None,
        content_html=text, content_kind="content", entry_hash=f"h-{guid}-{hash(text)}",
    )


def _commit(store: Store, source_id: int, entry: Entry, text: str, published: datetime | None = None,
            canonical_url: str | None = None, at: datetime = T0):
    document = Document(title=entry.title, text=text, published_at=published)
    return store.commit_item(
        source_id=source_id, entry=entry, canonical_url=canonical_url, document=document,
        fp=dedup.fingerprint(text, SCHEME),
        decide=partial(dedup.decide, text, entry.title, cfg=CFG),
        policy=lambda m: dedup.canonical_key(
            dedup.Member(m.item_id, m.published_at, m.fetched_at, m.priority, m.length), CFG.canonical
        ),
        max_candidates=CFG.max_candidates, fetched_at=at,
    )


@pytest.fixture
def store(store_url):
    with Store.open(store_url, SCHEME.as_dict()) as opened:
        opened.sync_sources([
            SourceConfig(name="wire", url="https://wire.example/feed", priority=5),
            SourceConfig(name="copycat", url="https://copycat.example/feed"),
        ])
        yield opened


def _ids(store: Store) -> dict[str, int]:
    return {s.name: s.source_id for s in store.source_states()}


def test_identity_new_unchanged_updated(store):
    wire = _ids(store)["wire"]
    first = _commit(store, wire, _entry("g1"), STORY)
    assert first.status == "new" and first.decision.kind == "new"
    again = _commit(store, wire, _entry("g1"), STORY)
    assert again.status == "unchanged" and again.item_id == first.item_id
    edited = STORY.replace("fifty one", "sixty four")
    updated = _commit(store, wire, _entry("g1", text=edited), edited)
    assert updated.status == "updated" and updated.item_id == first.item_id
    assert store.counts() == {"items": 1, "clusters": 1, "sources": 2}
    assert "sixty four" in store.items()[0]["text"]


def test_copy_across_sources_joins_and_earlier_copy_becomes_canonical(store):
    ids = _ids(store)
    later = _commit(store, ids["copycat"], _entry("c1"), STORY + "\n\nShare this article", published=T0 + timedelta(hours=2))
    original = _commit(store, ids["wire"], _entry("w1"), STORY, published=T0)
    assert original.decision.kind == "duplicate" and original.cluster_id == later.cluster_id
    [cluster] = store.clusters()
    assert cluster["size"] == 2 and cluster["canonical"] == original.item_id
    detail = store.item(later.item_id)
    assert [(c["old_item_id"], c["new_item_id"]) for c in detail["canonical_changes"]] == [
        (later.item_id, original.item_id)
    ]


def test_same_url_and_same_text_are_exact_duplicates(store):
    ids = _ids(store)
    a = _commit(store, ids["wire"], _entry("w1", url="https://site.example/a"), STORY,
                canonical_url="https://site.example/a")
    b = _commit(store, ids["copycat"], _entry("c9"), OTHER, canonical_url="https://site.example/a")
    assert b.cluster_id == a.cluster_id and b.decision.method == "url"
    c = _commit(store, ids["copycat"], _entry("c10"), STORY.upper())
    assert c.cluster_id == a.cluster_id and c.decision.method == "content_hash"


def test_different_story_starts_its_own_cluster(store):
    ids = _ids(store)
    a = _commit(store, ids["wire"], _entry("w1"), STORY)
    b = _commit(store, ids["copycat"], _entry("c1", title="Insurance"), OTHER)
    assert a.cluster_id != b.cluster_id and b.decision.kind == "new"
    assert store.counts()["clusters"] == 2


def test_failed_decision_leaves_nothing_behind(store):
    wire = _ids(store)["wire"]

    def explode(_candidates):
        raise RuntimeError("crash in the middle of an item")

    document = Document(title="x", text=STORY)
    with pytest.raises(RuntimeError):
        store.commit_item(
            source_id=wire, entry=_entry("boom"), canonical_url=None, document=document,
            fp=dedup.fingerprint(STORY, SCHEME), decide=explode, policy=lambda m: (m.item_id,), max_candidates=5,
        )
    assert store.counts()["items"] == 0 and store.counts()["clusters"] == 0


def test_poll_records_and_source_sync(store):
    wire = _ids(store)["wire"]
    store.record_poll(wire, PollRecord(at=T0, ok=False, next_poll_at=T0 + timedelta(minutes=5), error="fetch: HTTP 500",
                                       error_kind="http_status", requests=1))
    store.record_poll(wire, PollRecord(at=T0, ok=False, next_poll_at=T0 + timedelta(minutes=9), error="fetch: HTTP 502",
                                       error_kind="http_status", requests=1))
    state = store.source_state("wire")
    assert state.consecutive_errors == 2 and state.error_count == 2 and state.last_error == "fetch: HTTP 502"
    assert state.next_poll_at == T0 + timedelta(minutes=9)
    store.record_poll(wire, PollRecord(at=T0, ok=True, next_poll_at=T0 + timedelta(minutes=15), etag='"v1"',
                                       body_hash="abc", requests=1))
    state = store.source_state("wire")
    assert state.consecutive_errors == 0 and state.error_count == 2 and state.etag == '"v1"'
    assert state.last_success_at == T0
    # a changed URL in the config resets what was learned about the old one
    states = store.sync_sources([SourceConfig(name="wire", url="https://wire.example/new-feed")])
    assert states["wire"].etag is None and states["wire"].body_hash is None
    assert [s.name for s in store.source_states()] == ["wire"]  # copycat left the config


def test_scheme_mismatch_is_refused(store_url):
    Store.open(store_url, SCHEME.as_dict()).close()
    other = replace(SCHEME, num_perm=64)
    with pytest.raises(StoreError, match="num_perm: store has 128, config gives 64"):
        Store.open(store_url, other.as_dict())


# ---------------------------------------------------------------- learned boilerplate

FOOTER = "Harbour Times is owned by its readers. Become a member from $5 a month and support local journalism."
STORIES = [
    STORY,
    OTHER,
    "The city library will open on Sundays from next month after the council found money for four more staff, "
    "ending a twelve year gap in weekend opening.\n\nLibrarians said children's reading groups and help with job "
    "applications were the services most often asked for by people who work during the week.",
    "A local bakery on Wharf Street has won a national award for its sourdough, beating more than three hundred "
    "entries from across the country in the annual judging held in the capital.\n\nThe owners said they would "
    "keep prices as they are and hire two more apprentices before the summer season begins.",
]


def _commit_learning(store: Store, source_id: int, guid: str, text: str):
    from ingest.clean import paragraph_key, strip_learned

    def reclean(stored: str, learned: frozenset[str]):
        cleaned, removed = strip_learned(stored, learned)
        return (cleaned, dedup.fingerprint(cleaned, SCHEME), removed) if removed else None

    entry = _entry(guid, title=f"Story {guid}", text=text)
    document = Document(title=entry.title, text=text)
    return store.commit_item(
        source_id=source_id, entry=entry, canonical_url=None, document=document,
        fp=dedup.fingerprint(text, SCHEME), decide=partial(dedup.decide, text, entry.title, cfg=CFG),
        policy=lambda m: (m.item_id,), max_candidates=CFG.max_candidates, fetched_at=T0,
        paragraph_keys=[(paragraph_key(p), p) for p in document.paragraphs], learn=(3, 50), reclean=reclean,
    )


def test_footer_in_three_stories_is_learned_and_removed_from_earlier_items(store):
    wire = _ids(store)["wire"]
    outcomes = [_commit_learning(store, wire, f"s{i}", f"{text}\n\n{FOOTER}") for i, text in enumerate(STORIES[:3])]
    assert [o.learned for o in outcomes[:2]] == [(), ()]
    assert len(outcomes[2].learned) == 1
    assert len({o.cluster_id for o in outcomes}) == 3  # three different stories

    before = {o.item_id: store.item(o.item_id) for o in outcomes}
    for o in outcomes:  # every carrier, the learning item included, lost the footer
        item = store.item(o.item_id)
        assert FOOTER not in item["text"] and item["text"].startswith(STORIES[outcomes.index(o)][:40])
        assert [(r["rule"], r["text"]) for r in item["removals"]] == [("learned", FOOTER)]
        assert item["content_hash"] == dedup.fingerprint(item["text"], SCHEME).content_hash
        assert item["cluster_id"] == o.cluster_id and item["decision_method"] == before[o.item_id]["decision_method"]
    (row,) = store.boilerplate("wire")
    assert (row["text"], row["seen"], row["window"], row["removed"]) == (FOOTER, 3, 50, 3)

    # the LSH index follows the new text: the clean story finds its re-signed item
    clean_fp = dedup.fingerprint(STORIES[0], SCHEME)
    with store.engine.connect() as conn:
        found = store._candidates(conn, clean_fp, None, None, 10)
    assert outcomes[0].item_id in {c.item_id for c in found if c.same_content}


def test_versions_of_one_story_do_not_teach_their_paragraphs(store):
    wire = _ids(store)["wire"]
    outcomes = [_commit_learning(store, wire, f"v{i}", f"{STORY}\n\nUpdate {i}: officials gave new figures.")
                for i in range(4)]
    assert len({o.cluster_id for o in outcomes}) == 1  # one story, four versions
    assert all(o.learned == () for o in outcomes)
    assert store.boilerplate("wire") == []
    assert STORY.split("\n\n")[0] in store.item(outcomes[-1].item_id)["text"]
