"""Full-text search: `ingest search` and Store.search (SQLite FTS5, PostgreSQL full-text search)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import update

from .conftest import run_cli
from ingest.config import load
from ingest.errors import SearchError
from ingest.search import fts5_query
from ingest.models import ItemRow
from ingest.store import Store, schema
from ingest.text import normalize_words


def _store(config_path: Path) -> Store:
    return Store.open(load(config_path).store.url)


def _body_only_word(items: list[ItemRow]) -> tuple[str, set[int]]:
    """A word found in the body of some stories but in no title; the clusters holding it."""
    title_words = {w for item in items for w in normalize_words(item.title)}
    clusters_of: dict[str, set[int]] = {}
    for item in items:
        for word in set(normalize_words(item.text)):
            clusters_of.setdefault(word, set()).add(item.cluster_id)
    total = len({item.cluster_id for item in items})
    usable = sorted(
        (w for w, cs in clusters_of.items()
         if w not in title_words and len(w) >= 7 and w.isalpha() and 1 <= len(cs) < total),
        key=lambda w: (-len(clusters_of[w]), w),
    )
    word = usable[0]
    return word, clusters_of[word]


def test_search_finds_a_demo_story_by_a_word_in_its_body(demo_config: Path) -> None:
    with _store(demo_config) as store:
        items = store.items()
        clusters = {c.cluster_id: c for c in store.clusters()}
    word, expected = _body_only_word(items)
    done = run_cli("search", "-c", str(demo_config), word, "--json")
    assert done.returncode == 0, done.stderr
    hits = [json.loads(line) for line in done.stdout.splitlines()]
    assert {h["cluster_id"] for h in hits} == expected
    # canonical items by default, one per cluster
    assert all(h["item_id"] == clusters[h["cluster_id"]].canonical_item_id for h in hits)
    assert len(hits) == len(expected)
    assert all(word in h["snippet"].lower() for h in hits)


def test_search_ranks_and_all_copies_lists_every_matching_item(store_url: str, demo_config: Path) -> None:
    with _store(demo_config) as store:
        items = store.items()
        word, _ = _body_only_word(items)
        matching = {i.item_id for i in items if word in normalize_words(i.text)}
        hits = store.search(word, all_copies=True, limit=100)
        assert {h.item_id for h in hits} == matching
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        assert store.search(word, all_copies=True, limit=2) == hits[:2]
        # a phrase: two adjacent words of an item find it
        words = normalize_words(items[0].text)
        hits = store.search(f'"{words[0]} {words[1]}"', all_copies=True, limit=100)
        assert items[0].item_id in {h.item_id for h in hits}


def test_search_operators_or_and_exclusion(store_url: str, demo_config: Path) -> None:
    with _store(demo_config) as store:
        items = store.items()
        by_word: dict[str, set[int]] = {}
        for item in items:
            for word in set(normalize_words(item.title + " " + item.text)):
                by_word.setdefault(word, set()).add(item.cluster_id)
        counts = Counter({w: len(cs) for w, cs in by_word.items() if w.isalpha() and len(w) > 5})
        a, b = [w for w, _ in counts.most_common() if 1 < counts[w] < len({i.cluster_id for i in items})][:2]
        clusters = lambda q: {h.cluster_id for h in store.search(q, limit=100)}  # noqa: E731
        assert clusters(f"{a} OR {b}") == by_word[a] | by_word[b]
        both = {i.cluster_id for i in items if {a, b} <= set(normalize_words(i.title + " " + i.text))}
        assert clusters(f"{a} {b}") == both
        # exclusion works per item: a cluster stays when one of its copies lacks the word
        excluded = {
            i.cluster_id for i in items
            if a in normalize_words(i.title + " " + i.text) and b not in normalize_words(i.title + " " + i.text)
        }
        assert clusters(f"{a} -{b}") == excluded


HOSTILE = ['"', 'foo"bar', "NEAR(a b", "a AND", "NOT", "*", "title:x", "(", "-", "^start", "a OR", "OR b",
           "'quoted'", "übergrößenträger", "x" * 300, "a\x00b", "🙂", "AND OR NOT"]


def test_hostile_queries_give_results_or_a_search_error_never_a_crash(store_url: str, demo_config: Path) -> None:
    with _store(demo_config) as store:
        for query in HOSTILE:
            try:
                store.search(query)
            except SearchError:
                pass  # nothing searchable in it: reported as one line by the CLI


def test_cli_reports_an_empty_query_in_one_line(demo_config: Path) -> None:
    for query, status in (("*:(", 2), ('foo"bar (', 0)):
        done = run_cli("search", "-c", str(demo_config), query)
        assert done.returncode == status, done.stderr
        assert "Traceback" not in done.stderr
    assert done.stdout.startswith("id")
    done = run_cli("search", "-c", str(demo_config), "*:(")
    assert done.stderr.strip() == "ingest: search: nothing to search for in '*:('"


def test_fts5_query_quotes_every_term() -> None:
    assert fts5_query("late header") == '("late" AND "header")'
    assert fts5_query('"late header" cup') == '("late header" AND "cup")'
    assert fts5_query("a OR b c") == '("a") OR ("b" AND "c")'
    assert fts5_query('x -y -"a b"') == '(("x")) NOT ("y" OR "a b")'
    assert fts5_query('say "hi') == '("say" AND "hi")'
    assert fts5_query('foo"bar') == '("foo""bar")'
    for empty in ("", "   ", "* ( :", "OR", "-x"):
        with pytest.raises(SearchError):
            fts5_query(empty)


def test_the_index_follows_updates(store_url: str, demo_config: Path) -> None:
    with _store(demo_config) as store:
        item = store.items()[0]
        old_word = max((w for w in normalize_words(item.text) if w.isalpha()), key=len)
        assert item.item_id in {h.item_id for h in store.search(old_word, all_copies=True, limit=100)}
        with store.engine.begin() as conn:  # rewrite one text the way commit_item does: an UPDATE of items
            conn.execute(update(schema.items).where(schema.items.c.id == item.item_id).values(text="zyxwvut quokka"))
        assert [h.item_id for h in store.search("quokka", all_copies=True)] == [item.item_id]
        assert item.item_id not in {h.item_id for h in store.search(old_word, all_copies=True, limit=100)}
