"""The canonical store (SQLAlchemy 2 Core over SQLite or PostgreSQL)."""

from ingest.store.store import Store, Writer, normalize_url

__all__ = ["Store", "Writer", "normalize_url"]
