"""Re-clustering for tuning: replay the dedup decisions over the stored history.

``replay(history, scratch, cfg, policy)`` feeds every stored item, in (published
else fetched, id) order, through ``Writer.commit_item`` of a scratch store (a
temporary SQLite file the caller opens): the same candidate lookup, the same
``dedup.decide`` and the same canonical election as ingestion, so the new partition
is what ingesting that history with ``cfg`` would have made, and the real store is
not touched. ``compare`` says how the new partition differs from the stored one
(merges and splits); ``keep_ids`` says which stored cluster id each new cluster
keeps, so cluster uids (and exported entry ids) survive wherever a story survives.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from functools import partial
from typing import Callable, Sequence

from ingest import dedup
from ingest.config import DedupConfig, SourceConfig
from ingest.models import DedupDecision, Document, Entry, ItemOutcome, Member, StoredItem
from ingest.store import Store, Writer


@dataclass(frozen=True)
class Replay:
    """The partition a replay made: item id -> new cluster label, and each item's decision."""

    labels: dict[int, int]
    decisions: dict[int, DedupDecision]


@dataclass(frozen=True)
class PartitionDiff:
    """How a new partition of the same items differs from the stored one."""

    items: int
    clusters_before: int
    clusters_after: int
    merges: int  # new clusters holding items of two or more stored clusters
    splits: int  # stored clusters whose items end up in two or more new clusters
    items_moved: int  # items no longer with the majority of their stored cluster
    unchanged: int  # stored clusters that come out exactly the same

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


# items per write transaction of the replay
REPLAY_BATCH = 500


def replay(
    history: Sequence[StoredItem], scratch: Store, cfg: DedupConfig,
    policy: Callable[[Member], tuple], max_candidates: int | None = None,
) -> Replay:
    """Decide every item again, in order, into the empty ``scratch`` store."""
    priorities: dict[str, int] = {}
    for item in history:
        priorities.setdefault(item.source, item.priority)
    states = scratch.sync_sources(
        SourceConfig(name=name, url=f"replay:{name}", priority=priority) for name, priority in priorities.items()
    )
    scratch_to_stored: dict[int, int] = {}
    labels: dict[int, int] = {}
    decisions: dict[int, DedupDecision] = {}
    for start in range(0, len(history), REPLAY_BATCH):
        # the scratch store is thrown away: large write batches, nothing to keep safe
        with scratch.writer() as writer:
            for item in history[start : start + REPLAY_BATCH]:
                outcome = _replay_one(item, writer, states[item.source].source_id, cfg, policy, max_candidates)
                scratch_to_stored[outcome.item_id] = item.item_id
                labels[item.item_id] = outcome.cluster_id
                decision = outcome.decision or DedupDecision(kind="new")
                if decision.matched_item_id is not None:
                    decision = replace(decision, matched_item_id=scratch_to_stored.get(decision.matched_item_id))
                decisions[item.item_id] = decision
    # the final partition, read back: a later copy may have moved a lone item into its
    # cluster (DedupDecision.absorb), after that item's own outcome was returned
    for row in scratch.items():
        stored_id = scratch_to_stored[row.item_id]
        if labels[stored_id] != row.cluster_id:
            labels[stored_id] = row.cluster_id
            decisions[stored_id] = replace(
                decisions[stored_id], reason=decisions[stored_id].reason + "; moved into the cluster of a later copy",
            )
    return Replay(labels, decisions)


def _replay_one(
    item: StoredItem, writer: Writer, source_id: int, cfg: DedupConfig, policy: Callable[[Member], tuple],
    max_candidates: int | None,
) -> ItemOutcome:
    # identity goes in as the guid, so Entry.identity is the stored identity
    entry = Entry(
        guid=item.identity, url=item.url, title=item.title, author=item.author, published_at=item.published_at,
        updated_at=None, content_html="", content_kind=item.input_kind, entry_hash=item.identity,
    )
    document = Document(
        title=item.title, text=item.text, author=item.author, published_at=item.published_at,
        language=item.language, input_kind=item.input_kind,
    )
    when = item.published_at or item.fetched_at
    fp = item.fingerprint
    # the stored keys are the item's own time bucket; the neighbouring ones are looked up too
    fp = replace(fp, probe_keys=dedup.probe_keys(fp.features, when, dedup.scheme_for(cfg)))
    return writer.commit_item(
        source_id=source_id, entry=entry, canonical_url=item.canonical_url, document=document, fp=fp,
        decide=partial(
            dedup.decide, item.text, cfg=cfg, shingle_count=fp.shingle_count, features=fp.features,
            when=when, signature=fp.signature,
        ),
        policy=policy, max_candidates=max_candidates or cfg.max_candidates, fetched_at=item.fetched_at,
    )

def with_threshold(cfg: DedupConfig, threshold: float) -> DedupConfig:
    """``cfg`` with Jaccard ``threshold`` and every other merge bar raised to at least it.

    A full copy also passes the containment rule and the shared-paragraphs rule, so
    raising the Jaccard bar alone would keep copies of similar length together:
    ``--threshold 0.99`` is meant as "merge only near-identical texts".
    """
    return replace(
        cfg, threshold=threshold, containment=max(cfg.containment, threshold),
        passage_share=max(cfg.passage_share, threshold),
    )


def compare(old: dict[int, int], new: dict[int, int]) -> PartitionDiff:
    """Merges, splits and moved items between two partitions (item -> cluster) of the same items."""
    old_groups, new_groups = _groups(old), _groups(new)
    merges = sum(1 for members in new_groups.values() if len({old[i] for i in members}) > 1)
    splits = sum(1 for members in old_groups.values() if len({new[i] for i in members}) > 1)
    moved = 0
    for members in old_groups.values():
        majority = Counter(new[i] for i in members).most_common(1)[0][1]
        moved += len(members) - majority
    old_sets = {frozenset(m) for m in old_groups.values()}
    unchanged = sum(1 for m in new_groups.values() if frozenset(m) in old_sets)
    return PartitionDiff(
        items=len(old), clusters_before=len(old_groups), clusters_after=len(new_groups), merges=merges,
        splits=splits, items_moved=moved, unchanged=unchanged,
    )


def keep_ids(old: dict[int, int], new: dict[int, int]) -> dict[int, int | None]:
    """For each new label, the stored cluster id it keeps (None: a new cluster).

    A stored cluster goes to the new cluster holding most of its items (ties: the one
    holding its earliest item); each stored id is kept by at most one new cluster.
    Deterministic: the same partitions always give the same answer.
    """
    overlap: Counter[tuple[int, int]] = Counter((new[i], old[i]) for i in old)
    first_item: dict[tuple[int, int], int] = {}
    for item_id in sorted(old):
        first_item.setdefault((new[item_id], old[item_id]), item_id)
    ranked = sorted(overlap, key=lambda pair: (-overlap[pair], first_item[pair]))
    kept: dict[int, int | None] = {label: None for label in set(new.values())}
    used: set[int] = set()
    for label, cluster_id in ranked:
        if kept[label] is None and cluster_id not in used:
            kept[label] = cluster_id
            used.add(cluster_id)
    return kept


def groups_of(labels: dict[int, int]) -> dict[int, list[int]]:
    """Label -> sorted item ids."""
    return {label: sorted(members) for label, members in _groups(labels).items()}


def _groups(partition: dict[int, int]) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = defaultdict(list)
    for item_id, label in partition.items():
        groups[label].append(item_id)
    return groups
