"""ingest: poll syndication feeds, clean article text, collapse syndicated copies into clusters."""

__version__ = "0.1.0"
PROJECT_URL = "https://github.com/ingest-project/ingest"
