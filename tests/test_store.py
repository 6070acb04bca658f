"""ingest.store on SQLite always and on PostgreSQL when INGEST_TEST_POSTGRES_URL is set.

Items new, unchanged and updated; copies joining clusters and canonicals under each
policy; write batches all or nothing; poll records and source sync; learned
boilerplate; candidates; signature schemes and ``Store.resign``. ``ingest resign``
through the CLI: tests/test_maintenance.py.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from functools import partial

import pytest

from ingest import dedup
from ingest.config import DedupConfig, SourceConfig
from ingest.errors import IngestError, StoreError
from ingest.models import Document, Entry, PollRecord
from ingest.store import Store, Writer

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


def _commit(store: Store | Writer, source_id: int, entry: Entry, text: str, published: datetime | None = None,
            canonical_url: str | None = None, at: datetime = T0, policy=None):
    document = Document(title=entry.title, text=text, published_at=published)
    return store.commit_item(
        source_id=source_id, entry=entry, canonical_url=canonical_url, document=document,
        fp=dedup.fingerprint(text, SCHEME),
        decide=partial(dedup.decide, text, cfg=CFG),
        policy=policy or partial(dedup.canonical_key, policy=CFG.canonical),
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
    assert "sixty four" in store.items()[0].text


def test_a_guid_too_long_for_an_index_row_is_stored_under_its_hash(store):
    """PostgreSQL's btree refuses index rows over 2,704 bytes: a 3 KB guid (found by the
    property tests) is keyed on its SHA-256 and still recognised when it comes again."""
    wire = _ids(store)["wire"]
    guid = "urn:x:" + "é" * 1500  # 3,006 bytes in UTF-8
    entry = replace(_entry(guid), entry_hash="h-long-guid")
    first = _commit(store, wire, entry, STORY)
    again = _commit(store, wire, entry, STORY)
    assert (first.status, again.status, again.item_id) == ("new", "unchanged", first.item_id)
    assert entry.identity.startswith("sha256:") and _entry("g1").identity == "g1"


def test_copy_across_sources_joins_and_earlier_copy_becomes_canonical(store):
    ids = _ids(store)
    later = _commit(store, ids["copycat"], _entry("c1"), STORY + "\n\nShare this article", published=T0 + timedelta(hours=2))
    original = _commit(store, ids["wire"], _entry("w1"), STORY, published=T0)
    assert original.decision.kind == "duplicate" and original.cluster_id == later.cluster_id
    [cluster] = store.clusters()
    assert cluster.size == 2 and cluster.canonical_item_id == original.item_id
    detail = store.item(later.item_id)
    assert [(c.old_item_id, c.new_item_id) for c in detail.canonical_changes] == [
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


def test_a_failing_item_in_a_batch_leaves_nothing_and_the_others_commit(store):
    wire = _ids(store)["wire"]

    def fails(_member):  # the canonical election of a copy: after its item row was written
        raise IngestError("store: election failed")

    with store.writer() as writer:
        a = _commit(writer, wire, _entry("a"), STORY)
        with pytest.raises(IngestError):
            _commit(writer, wire, _entry("b"), STORY + "\n\nShare this article", policy=fails)
        c = _commit(writer, wire, _entry("c", title="Insurance"), OTHER)
    assert sorted(i.item_id for i in store.items()) == sorted([a.item_id, c.item_id])
    assert {cluster.cluster_id: cluster.size for cluster in store.clusters()} == {a.cluster_id: 1, c.cluster_id: 1}
    with store.engine.connect() as conn:  # no index rows of the failed item
        for table in ("lsh_bands", "paragraphs", "removals"):
            orphans = conn.exec_driver_sql(f"SELECT count(*) FROM {table} WHERE item_id NOT IN (SELECT id FROM items)")
            assert orphans.scalar_one() == 0


def test_an_error_between_items_rolls_back_the_uncommitted_batch(store):
    wire = _ids(store)["wire"]
    with pytest.raises(RuntimeError):
        with store.writer() as writer:
            _commit(writer, wire, _entry("a"), STORY)
            raise RuntimeError("killed between two items")
    # SQLite commits a batch at its end; PostgreSQL commits each item (see Store.writer)
    assert store.counts()["items"] == (1 if store.is_postgres else 0)
    assert store.counts()["clusters"] == store.counts()["items"]


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
    store.record_poll(wire, PollRecord(at=T0, ok=False, next_poll_in=300, error="fetch: HTTP 500",
                                       error_kind="http_status", requests=1))
    store.record_poll(wire, PollRecord(at=T0, ok=False, next_poll_in=540, error="fetch: HTTP 502",
                                       error_kind="http_status", requests=1))
    state = store.source_state("wire")
    assert state.consecutive_errors == 2 and state.error_count == 2 and state.last_error == "fetch: HTTP 502"
    # the next poll is timed from when the store recorded the poll: the worker's clock on
    # SQLite, the database's on PostgreSQL (so a fleet agrees)
    assert state.next_poll_at == state.last_polled_at + timedelta(minutes=9)
    assert state.last_polled_at == T0 or store.is_postgres
    store.record_poll(wire, PollRecord(at=T0, ok=True, next_poll_in=900, etag='"v1"', body_hash="abc", requests=1))
    state = store.source_state("wire")
    assert state.consecutive_errors == 0 and state.error_count == 2 and state.etag == '"v1"'
    assert state.last_success_at == state.last_polled_at
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
    from ingest.clean import paragraph_fingerprint, strip_learned

    def reclean(stored: str, learned: frozenset[str], when):
        cleaned, removed = strip_learned(stored, learned)
        return (cleaned, dedup.fingerprint(cleaned, SCHEME, when), removed) if removed else None

    entry = _entry(guid, title=f"Story {guid}", text=text)
    document = Document(title=entry.title, text=text)
    return store.commit_item(
        source_id=source_id, entry=entry, canonical_url=None, document=document,
        fp=dedup.fingerprint(text, SCHEME), decide=partial(dedup.decide, text, cfg=CFG),
        policy=lambda m: (m.item_id,), max_candidates=CFG.max_candidates, fetched_at=T0,
        sightings=[(paragraph_fingerprint(p), p) for p in document.paragraphs], learn=(3, 50), reclean=reclean,
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
        assert FOOTER not in item.text and item.text.startswith(STORIES[outcomes.index(o)][:40])
        assert [(r.rule, r.text) for r in item.removals] == [("learned", FOOTER)]
        assert item.content_hash == dedup.fingerprint(item.text, SCHEME).content_hash
        assert item.cluster_id == o.cluster_id and item.decision_method == before[o.item_id].decision_method
    (row,) = store.boilerplate("wire")
    assert (row.text, row.seen, row.window, row.removed) == (FOOTER, 3, 50, 3)

    # the LSH index follows the new text: the clean story finds its re-signed item
    clean_fp = dedup.fingerprint(STORIES[0], SCHEME)
    found = store.candidates(clean_fp, None, 10)
    assert outcomes[0].item_id in {c.item_id for c in found if c.same_content}


def test_versions_of_one_story_do_not_teach_their_paragraphs(store):
    wire = _ids(store)["wire"]
    outcomes = [_commit_learning(store, wire, f"v{i}", f"{STORY}\n\nUpdate {i}: officials gave new figures.")
                for i in range(4)]
    assert len({o.cluster_id for o in outcomes}) == 1  # one story, four versions
    assert all(o.learned == () for o in outcomes)
    assert store.boilerplate("wire") == []
    assert STORY.split("\n\n")[0] in store.item(outcomes[-1].item_id).text


def test_short_items_merged_by_their_shared_footer_still_teach_it(store):
    """Three different one-line summaries + a long footer: dedup may see copies, learning must not."""
    wire = _ids(store)["wire"]
    leads = [
        "The council approved a 4.2 million dollar upgrade of the Eastern Beach seawall on Tuesday.",
        "The harbour ferry will run every twenty minutes at peak times from March, the operator said.",
        "A Wharf Street bakery has won a national award for its sourdough, beating three hundred entries.",
    ]
    footer = ("Harbour Times is owned by its readers, not by a chain or a billionaire. Become a member from $5 a "
              "month and support independent local journalism in the harbour towns and the valley.")
    outcomes = [_commit_learning(store, wire, f"b{i}", f"{lead}\n\n{footer}") for i, lead in enumerate(leads)]
    assert len({o.cluster_id for o in outcomes}) < 3, "precondition: the footer made dedup see copies"
    assert outcomes[2].learned and outcomes[1].learned == ()
    for o, lead in zip(outcomes, leads):
        assert store.item(o.item_id).text == lead
    assert store.boilerplate("wire")[0].seen == 3


def _many_items(store: Store, source_id: int, count: int, cluster: int) -> None:
    """``count`` plain item rows of one source in one cluster (written directly: only the row count matters here)."""
    from ingest.store import schema as t

    rows = [dict(source_id=source_id, identity=f"bulk-{source_id}-{i}", title="t", fetched_at=T0, updated_at=T0,
                 entry_hash="h", input_kind="summary", text=f"text {i}", content_hash=f"c{source_id}-{i}",
                 shingle_count=1, signature=b"s", cluster_id=cluster, decision_method="new", decision_reason="")
            for i in range(count)]
    with store.db.begin(immediate=True) as conn:
        conn.execute(t.items.insert(), rows)


def _plan(conn, statement, params) -> str:
    compiled = statement.compile(conn.engine)
    values = compiled.construct_params(params)
    if conn.dialect.name == "sqlite":
        rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + str(compiled), tuple(values[k] for k in compiled.positiontup))
        return "\n".join(r[3] for r in rows)
    return "\n".join(r[0] for r in conn.exec_driver_sql("EXPLAIN " + str(compiled), values))


def test_a_sources_newest_items_are_read_through_its_index_not_by_sorting_the_source(store):
    """Boilerplate learning reads a source's last N items for every new item: an index range, never a sort of all."""
    from sqlalchemy import insert

    from ingest.store import schema as t
    from ingest.store.statements import Q

    ids = _ids(store)
    with store.db.begin(immediate=True) as conn:
        cluster = conn.execute(insert(t.clusters).values(size=0, created_at=T0, updated_at=T0)).inserted_primary_key[0]
    # a small source's items, then a big source's: the small one's newest items lie under
    # 3,000 others, where walking all items newest first (PostgreSQL's choice for the big
    # source, whose items are the newest) would read them all
    _many_items(store, ids["copycat"], 20, cluster)
    _many_items(store, ids["wire"], 3000, cluster)
    with store.db.begin() as conn:
        conn.exec_driver_sql("ANALYZE")
    with store.db.read() as conn:
        for name in ("wire", "copycat"):
            params = {"b_source": ids[name], "b_window": 50, "b_item": 1, "b_min": 3}
            for statement in (Q.recent_items, Q.frequent_paragraphs):
                plan = _plan(conn, statement, params)
                assert "TEMP B-TREE" not in plan and "Sort" not in plan, plan
                if name == "copycat" or not store.is_postgres:
                    assert "ix_items_source_recent" in plan, plan
            recent = [r.id for r in conn.execute(Q.recent_items, {"b_source": ids[name], "b_window": 50})]
            assert recent == sorted(recent, reverse=True) and len(recent) == (50 if name == "wire" else 20)


def test_a_store_of_schema_3_gets_the_source_index_on_open(store_url):
    from sqlalchemy import inspect

    from ingest.store.migrations import SCHEMA_VERSION, get_meta

    Store.open(store_url, SCHEME.as_dict()).close()
    with Store.open(store_url, SCHEME.as_dict()) as store:  # as a store made by schema version 3 was
        with store.db.begin(immediate=True) as conn:
            conn.exec_driver_sql("DROP INDEX ix_items_source_recent")
            conn.exec_driver_sql("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    with Store.open(store_url, SCHEME.as_dict()) as store:
        with store.db.read() as conn:
            assert "ix_items_source_recent" in {i["name"] for i in inspect(conn).get_indexes("items")}
        assert get_meta(store.db, "schema_version") == str(SCHEMA_VERSION)


# ---------------------------------------------------------------------------- dedup: candidates, canonical, resign

def _policy_commit(store: Store, source_id: int, guid: str, text: str, policy: str, *, published=None, at=T0):
    document = Document(title="Floods", text=text, published_at=published)
    return store.commit_item(
        source_id=source_id, entry=_entry(guid, text=text), canonical_url=None, document=document,
        fp=dedup.fingerprint(text, SCHEME), decide=partial(dedup.decide, text, cfg=CFG),
        policy=lambda m: dedup.canonical_key(
            dedup.Member(m.item_id, m.published_at, m.fetched_at, m.priority, m.length), policy
        ),
        max_candidates=CFG.max_candidates, fetched_at=at,
    )


def _changes(store: Store, item_id: int) -> list[tuple[int, int]]:
    return [(c.old_item_id, c.new_item_id) for c in store.item(item_id).canonical_changes]


def test_priority_policy_a_wire_copy_arriving_later_becomes_canonical(store):
    ids = _ids(store)  # wire has priority 5, copycat 0
    copy = _policy_commit(store, ids["copycat"], "c1", STORY + "\n\nShare this article", "priority", published=T0)
    wire = _policy_commit(store, ids["wire"], "w1", STORY, "priority", published=T0 + timedelta(hours=1),
                          at=T0 + timedelta(hours=2))
    assert wire.cluster_id == copy.cluster_id
    [cluster] = store.clusters()
    assert cluster.canonical_item_id == wire.item_id and cluster.size == 2
    assert _changes(store, copy.item_id) == [(copy.item_id, wire.item_id)]
    # a later copy from a low-priority source changes nothing
    _policy_commit(store, ids["copycat"], "c2", STORY + "\n\nRead more", "priority", published=T0 - timedelta(hours=1))
    assert store.clusters()[0].canonical_item_id == wire.item_id
    assert len(_changes(store, copy.item_id)) == 1


def test_longest_policy_the_full_text_replaces_a_teaser_as_canonical(store):
    ids = _ids(store)
    teaser = _policy_commit(store, ids["copycat"], "c1", STORY.split("\n\n")[0] + "\n\n" + STORY.split("\n\n")[1],
                            "longest", published=T0)
    full = _policy_commit(store, ids["wire"], "w1", STORY, "longest", published=T0 + timedelta(hours=3))
    assert full.cluster_id == teaser.cluster_id
    assert store.clusters()[0].canonical_item_id == full.item_id
    assert _changes(store, teaser.item_id) == [(teaser.item_id, full.item_id)]


def test_earliest_policy_falls_back_to_fetch_time_without_published_dates(store):
    ids = _ids(store)
    first = _policy_commit(store, ids["copycat"], "c1", STORY, "earliest", at=T0)
    second = _policy_commit(store, ids["wire"], "w1", STORY + "\n\nShare this", "earliest", at=T0 + timedelta(minutes=5))
    assert second.cluster_id == first.cluster_id
    assert store.clusters()[0].canonical_item_id == first.item_id
    assert _changes(store, first.item_id) == []


def _story(n: int) -> str:
    """A realistic unrelated filler text (distinct per n) for index background."""
    places = ["Arlen", "Brask", "Corvo", "Dunmere", "Elsby", "Fenwick", "Garrow", "Holm", "Isca", "Jarrow"]
    topics = ["council budget", "bridge repairs", "school meals", "bus timetable", "harbour dredging",
              "library hours", "water tariffs", "street lighting", "market licences", "park renovation"]
    place, topic = places[n % 10], topics[(n // 10) % 10]
    return "\n\n".join([
        f"Officials in {place} approved changes to the {topic} on meeting number {n}, after a debate that lasted "
        f"well into the evening and drew more than {40 + n} residents to the town hall.",
        f"The plan for the {topic} in {place} will cost about {n * 13 + 7} thousand euros over {2 + n % 5} years, "
        "according to figures presented by the finance committee, and will be reviewed again next spring.",
    ])


def test_candidates_find_the_copy_among_unrelated_items_and_stay_bounded(store):
    ids = _ids(store)
    for n in range(30):
        _commit(store, ids["copycat"], _entry(f"bg{n}", text=_story(n)), _story(n))
    original = _commit(store, ids["wire"], _entry("w1"), STORY)
    copy = _commit(store, ids["copycat"], _entry("c1"), "Home | World | Sport\n\n" + STORY + "\n\nShare this article")
    assert copy.decision.kind == "duplicate" and copy.cluster_id == original.cluster_id
    # the lookup proposed the original and at most a few of the 30 unrelated items
    assert 1 <= copy.decision.candidates <= 5


def test_a_lone_teaser_is_taken_into_the_cluster_of_a_later_copy(store):
    from tests.dedup_corpus import load

    corpus = {i.id: i for i in load(pattern="a-floods-tavera-2025--death-toll.toml")}
    wire, teaser_item, update_item = (corpus[f"a-floods-tavera-2025--death-toll/{k}"] for k in ("wire", "teaser-metro", "update-toll-64"))
    ids = _ids(store)
    # the updated version first, then a teaser of the first version that the update does not contain ...
    update = _commit(store, ids["wire"], _entry("u1", text=update_item.text), update_item.text, published=T0 + timedelta(hours=5))
    teaser = _commit(store, ids["copycat"], _entry("t1", text=teaser_item.text), teaser_item.text, published=T0 + timedelta(hours=1))
    assert teaser.cluster_id != update.cluster_id
    # ... then the original, which matches both: it joins the update's cluster and takes the teaser in
    original = _commit(store, ids["wire"], _entry("w1", text=wire.text), wire.text, published=T0)
    assert original.cluster_id == update.cluster_id and original.decision.absorb == (teaser.cluster_id,)
    [cluster] = store.clusters()
    assert cluster.size == 3
    assert {m.item_id for m in cluster.members} == {update.item_id, teaser.item_id, original.item_id}
    assert cluster.canonical_item_id == original.item_id  # earliest published
    assert "moved into cluster" in store.item(teaser.item_id).decision_reason


@pytest.mark.parametrize("field,value", [("num_perm", 64), ("seed", 7), ("shingle_size", 4), ("datasketch_major", 1)])
def test_scheme_mismatch_names_the_difference(store_url, field, value):
    Store.open(store_url, SCHEME.as_dict()).close()
    other = replace(SCHEME, **{field: value})
    with pytest.raises(StoreError, match=f"{field}: store has {getattr(SCHEME, field)!r}, config gives {value!r}.*resign"):
        Store.open(store_url, other.as_dict())


def test_resign_rebuilds_signatures_and_index_and_keeps_clusters(store_url):
    with Store.open(store_url, SCHEME.as_dict()) as store:
        store.sync_sources([SourceConfig(name="wire", url="https://wire.example/feed")])
        wire = _ids(store)["wire"]
        _commit(store, wire, _entry("w1"), STORY)
        _commit(store, wire, _entry("w2"), STORY + "\n\nShare this article")
        _commit(store, wire, _entry("w3", text=OTHER), OTHER)
        before = [(c.cluster_id, sorted(m.item_id for m in c.members)) for c in store.clusters()]
    new_cfg = replace(CFG, num_perm=64, seed=3, shingle_size=4)
    new_scheme = dedup.scheme_for(new_cfg)
    with pytest.raises(StoreError, match="num_perm"):
        Store.open(store_url, new_scheme.as_dict())
    with Store.open(store_url, new_scheme.as_dict(), check_scheme=False) as store:
        assert store.resign(lambda text, when: dedup.fingerprint(text, new_scheme, when), new_scheme.as_dict()) == 3
    with Store.open(store_url, new_scheme.as_dict()) as store:  # accepted now
        after = [(c.cluster_id, sorted(m.item_id for m in c.members)) for c in store.clusters()]
        assert after == before
        assert store.stored_scheme() == new_scheme.as_dict()
        items = store.items()
        for row in items:
            assert len(store.item(row.item_id).signature) == 4 * 64
        # the rebuilt index finds a new copy under the new scheme
        text = STORY + "\n\nFollow us for more"
        outcome = store.commit_item(
            source_id=_ids(store)["wire"], entry=_entry("w4", text=text), canonical_url=None,
            document=Document(title="Floods", text=text), fp=dedup.fingerprint(text, new_scheme),
            decide=partial(dedup.decide, text, cfg=new_cfg), policy=lambda m: (m.item_id,),
            max_candidates=CFG.max_candidates,
        )
        assert outcome.decision.kind == "duplicate" and outcome.cluster_id == before[0][0]


@pytest.mark.parametrize("read", [
    lambda s: s.items(), lambda s: s.live_workers(60), lambda s: s.fleet_status("me", 60, lambda: T0),
])
def test_a_failing_read_is_a_store_error_in_one_line(store, read):
    """Reads go through the store's read connection: a database error comes out as one
    StoreError line, never a raw SQLAlchemy error (whose text runs over three lines and
    whose escape from the CLI was a traceback)."""
    with store.engine.begin() as conn:
        for table in ("lsh_bands", "removals", "paragraphs", "canonical_changes", "items", "workers", "sources"):
            conn.exec_driver_sql(f"DROP TABLE {table} CASCADE" if store.is_postgres else f"DROP TABLE {table}")
    with pytest.raises(StoreError) as raised:
        read(store)
    assert "\n" not in str(raised.value)
