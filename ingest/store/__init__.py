"""The canonical store (SQLAlchemy 2 Core over SQLite or PostgreSQL)."""

from ingest.store.store import CanonicalMember, Store, normalize_url

__all__ = ["CanonicalMember", "Store", "normalize_url"]
