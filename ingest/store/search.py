"""Full-text search over titles and clean text: SQLite FTS5, PostgreSQL tsvector.

The query a user types is made safe by ``ingest.search`` (pure); this module runs it.
SQLite: an external-content FTS5 table ranked by bm25 with title hits weighted twice.
PostgreSQL: ``websearch_to_tsquery`` against the stored ``search_vector`` column
under a GIN index, ranked by ``ts_rank``. Both index words without stemming, so both
backends find the same items.
"""

from __future__ import annotations

from sqlalchemy import bindparam, select, text
from sqlalchemy.exc import SQLAlchemyError

from ingest.errors import StoreError
from ingest.models import SearchHit
from ingest.search import fts5_query, plain_query
from ingest.store import schema as t
from ingest.store.engine import Database, short


def search(db: Database, query: str, *, all_copies: bool = False, limit: int = 20) -> list[SearchHit]:
    """Full-text search over title and clean text, best first; one hit per cluster unless all_copies."""
    per_cluster = "" if all_copies else "WHERE rn = 1"
    query = plain_query(query)
    match = fts5_query(query)  # raises SearchError on both backends when nothing is searchable
    if db.is_postgres:
        vector = "items.search_vector"
        sql = (
            "SELECT item_id, cluster_id, score FROM ("
            f" SELECT items.id AS item_id, items.cluster_id, ts_rank({vector}, q) AS score,"
            f" row_number() OVER (PARTITION BY items.cluster_id ORDER BY ts_rank({vector}, q) DESC, items.id) AS rn"
            f" FROM items, websearch_to_tsquery('simple'::regconfig, :q) AS q WHERE {vector} @@ q"
            f") AS hits {per_cluster} ORDER BY score DESC, item_id LIMIT :limit"
        )
        params = {"q": query, "limit": limit}
    else:
        # title hits weigh twice body hits (bm25 column weights); bm25 is lower-is-better
        # FTS5's auxiliary functions cannot appear in a window: rank in a materialised CTE first
        sql = (
            "WITH matched AS MATERIALIZED ("
            " SELECT items.id AS item_id, items.cluster_id, -bm25(items_fts, 2.0, 1.0) AS score"
            " FROM items_fts JOIN items ON items.id = items_fts.rowid WHERE items_fts MATCH :q"
            "), ranked AS (SELECT *, row_number() OVER (PARTITION BY cluster_id ORDER BY score DESC, item_id) AS rn"
            f" FROM matched) SELECT item_id, cluster_id, score FROM ranked {per_cluster}"
            " ORDER BY score DESC, item_id LIMIT :limit"
        )
        params = {"q": match, "limit": limit}
    try:
        with db.engine.connect() as conn:
            matches = conn.execute(text(sql), params).all()
            snippets: dict[int, str] = {}
            if matches and not db.is_postgres:
                # snippets only for the hits shown: making one for every match cost most of
                # the query time when a common word matched thousands of items
                snippets = {
                    r.rowid: r.snippet for r in conn.execute(
                        text(
                            "SELECT rowid, snippet(items_fts, 1, '[', ']', '...', 16) AS snippet FROM items_fts"
                            " WHERE items_fts MATCH :q AND rowid IN :ids"
                        ).bindparams(bindparam("ids", expanding=True)),
                        {"q": match, "ids": [m.item_id for m in matches]},
                    )
                }
            if db.is_postgres and matches:
                snippets = {
                    r.id: r.snippet for r in conn.execute(
                        text(
                            "SELECT id, ts_headline('simple'::regconfig, text, websearch_to_tsquery('simple'::regconfig, :q),"
                            " 'StartSel=[, StopSel=], MaxWords=24, MinWords=10') AS snippet FROM items"
                            " WHERE id IN :ids"
                        ).bindparams(bindparam("ids", expanding=True)),
                        {"q": query, "ids": [m.item_id for m in matches]},
                    )
                }
            cluster_rows = {
                r.id: r for r in conn.execute(
                    select(t.clusters.c.id, t.clusters.c.canonical_item_id, t.clusters.c.size)
                    .where(t.clusters.c.id.in_({m.cluster_id for m in matches}))
                )
            }
            shown = {m.item_id: m.item_id if all_copies else cluster_rows[m.cluster_id].canonical_item_id
                     for m in matches}
            details = {
                r.id: r for r in conn.execute(
                    select(t.items.c.id, t.sources.c.name, t.items.c.title, t.items.c.url, t.items.c.published_at)
                    .join(t.sources, t.sources.c.id == t.items.c.source_id)
                    .where(t.items.c.id.in_(set(shown.values())))
                )
            }
    except SQLAlchemyError as exc:
        raise StoreError(f"search failed: {short(exc)}") from exc
    hits = []
    for m in matches:
        item = details[shown[m.item_id]]
        hits.append(SearchHit(
            item_id=item.id, cluster_id=m.cluster_id, source=item.name, title=item.title, url=item.url,
            published_at=item.published_at, score=round(float(m.score), 6),
            snippet=" ".join((snippets.get(m.item_id) or "").split()), cluster_size=cluster_rows[m.cluster_id].size,
        ))
    return hits
