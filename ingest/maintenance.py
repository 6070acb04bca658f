"""Work on what is already stored: re-clean, re-sign, re-cluster.

Each function takes the config and an open store and returns what it did; ``cli.py``
turns that into messages. Nothing here fetches.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Sequence

from ingest import dedup, recluster
from ingest.clean import RuleSet, clean, ruleset
from ingest.config import Config, DedupConfig, SourceConfig
from ingest.models import Document, Fingerprint, Removal
from ingest.pipeline import canonical_policy, utcnow
from ingest.store import Store


def reprocess(
    config: Config, store: Store, sources: Sequence[SourceConfig] | None = None, at: datetime | None = None,
) -> dict[str, tuple[int, int]]:
    """Re-clean the stored items of ``sources`` with today's rules and learned boilerplate.

    Stored text is already clean, so this applies what was added since it was stored
    (paragraphs learned later, new `strip` patterns, new built-in rules) and keeps each
    item's dedup decision. Returns source name -> (items seen, items changed).
    """
    scheme = dedup.scheme_for(config.dedup)
    chosen = list(sources) if sources is not None else list(config.sources)
    states = store.sync_sources(config.sources)
    done: dict[str, tuple[int, int]] = {}
    for source in chosen:
        state = states[source.name]
        rules = ruleset(config.extract.builtin_rules, source.strip)
        learned = store.learned_boilerplate(state.source_id)
        done[source.name] = store.reprocess(
            state.source_id, partial(_recleaned, rules=rules, learned=learned, scheme=scheme), at=at or utcnow(),
        )
    return done


def _recleaned(
    text: str, when: datetime | None, rules: RuleSet, learned: frozenset[str], scheme: dedup.SignatureScheme
) -> tuple[str, Fingerprint, tuple[Removal, ...]] | None:
    """A stored text (of time ``when``) cleaned again with the rules and learned paragraphs in force now."""
    document = clean(Document(title="", text=text), rules, learned)
    if document.text == text:
        return None
    return document.text, dedup.fingerprint(document.text, scheme, when), document.removals


def resign(config: Config, store: Store) -> int:
    """Re-sign every stored text with the config's dedup settings and rebuild the index; items re-signed."""
    scheme = dedup.scheme_for(config.dedup)
    return store.resign(lambda text, when: dedup.fingerprint(text, scheme, when), scheme.as_dict())


@dataclass(frozen=True)
class ReclusterReport:
    """What re-clustering found (``diff``) and, unless a dry run, what it changed (``applied``)."""

    diff: recluster.PartitionDiff
    applied: dict[str, int] | None


def recluster_store(store: Store, cfg: DedupConfig, *, dry_run: bool) -> ReclusterReport:
    """Replay the dedup decisions over the stored history with ``cfg``; apply the new partition unless ``dry_run``.

    The replay writes into a scratch SQLite store in a temporary directory, so the
    stored data is only read until the new partition is applied in one transaction.
    """
    policy = canonical_policy(cfg.canonical)
    history = store.history()
    with tempfile.TemporaryDirectory(prefix="ingest-recluster-") as scratch_dir:
        with Store.open(f"sqlite:///{scratch_dir}/replay.db") as scratch:
            result = recluster.replay(history, scratch, cfg, policy)
    old = {item.item_id: item.cluster_id for item in history}
    diff = recluster.compare(old, result.labels)
    applied = None
    if not dry_run and (diff.merges or diff.splits):
        applied = store.apply_clusters(
            recluster.keep_ids(old, result.labels), recluster.groups_of(result.labels), result.decisions, policy,
        )
    return ReclusterReport(diff, applied)
