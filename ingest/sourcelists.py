"""Source lists named by ``sources_files``: OPML 1.0/2.0 outlines and TOML files of ``[[sources]]``.

This module reads the file formats and returns raw source tables, each with where it
came from; ``ingest.config`` validates them (with the main config's rules) and merges
them into the source list. Read at config time, so every problem is reported with
the file that holds it. ``to_opml`` writes a source list back as OPML 2.0.
"""

from __future__ import annotations

import glob
import re
import tomllib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable
from xml.sax.saxutils import quoteattr

from lxml import etree

if TYPE_CHECKING:
    from ingest.config import SourceConfig

_ENTITY = re.compile(rb"<!ENTITY", re.IGNORECASE)


@dataclass(frozen=True)
class ListedSource:
    """One source table read from a list file, before validation."""

    where: str  # "feeds.opml: outline 'Name'", for messages
    table: dict[str, Any]
    base: Path  # relative paths in the table are relative to this folder
    allow_local: bool  # OPML names URLs by definition: a local path there is refused


def load_files(patterns: Any, base: Path, problems: list[str]) -> tuple[list[ListedSource], list[str]]:
    """Source tables from every file matching ``patterns`` (relative to ``base``, globs allowed); warnings."""
    if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
        problems.append("'sources_files' must be a list of paths or glob patterns")
        return [], []
    listed: list[ListedSource] = []
    warnings: list[str] = []
    for pattern in patterns:
        # glob.glob, not Path.glob: an absolute pattern is allowed too
        paths = (
            sorted(Path(p) for p in glob.glob(str(base / pattern)))
            if any(c in pattern for c in "*?[") else [base / pattern]
        )
        if not paths:
            warnings.append(f"sources_files: {pattern!r} matches no file")
        for path in paths:
            if not path.is_file():
                problems.append(f"sources_files: {path}: file not found")
                continue
            if path.suffix.lower() == ".toml":
                listed += _from_toml(path, problems)
            else:
                listed += _from_opml(path, problems)
    return listed, warnings


def _from_toml(path: Path, problems: list[str]) -> list[ListedSource]:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        problems.append(f"{path}: {exc}")
        return []
    unknown = set(raw) - {"sources"}
    if unknown:
        problems.append(f"{path}: unknown key(s) {', '.join(sorted(unknown))} (expected [[sources]])")
    tables = raw.get("sources", [])
    if not isinstance(tables, list):
        problems.append(f"{path}: 'sources' must be an array of tables ([[sources]])")
        return []
    return [ListedSource(f"{path.name}: sources[{index}]", table, path.parent, True) for index, table in enumerate(tables)]


def _from_opml(path: Path, problems: list[str]) -> list[ListedSource]:
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
    try:
        body = path.read_bytes()
    except OSError as exc:
        problems.append(f"{path}: cannot read: {exc.strerror or exc}")
        return []
    # OPML needs no entities; declaring any is how an entity bomb or an external
    # entity (a local file read) starts, so it is refused before lxml sees it.
    if _ENTITY.search(body):
        problems.append(f"{path}: not valid OPML: entity declarations (<!ENTITY) are refused")
        return []
    try:
        root = etree.fromstring(body, parser, base_url=str(path))
    except (etree.XMLSyntaxError, ValueError) as exc:
        problems.append(f"{path}: not valid OPML: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
        return []
    if root is None:
        problems.append(f"{path}: not valid OPML: empty document")
        return []
    body = root.find("body")
    if root.tag != "opml" or body is None:
        problems.append(f"{path}: not OPML (no <opml><body>)")
        return []
    out: list[ListedSource] = []
    for outline, category in _outlines(body, ()):
        url = (outline.get("xmlUrl") or "").strip()
        name = (outline.get("title") or outline.get("text") or url).strip()
        table: dict[str, Any] = {"name": name, "url": url}
        if category:
            table["tags"] = list(category)
        out.append(ListedSource(f"{path.name}: outline {name!r}", table, path.parent, False))
    return out


def _outlines(node: Any, category: tuple[str, ...]):
    for outline in node.iterfind("outline"):
        if outline.get("xmlUrl"):
            yield outline, category
        else:
            label = (outline.get("title") or outline.get("text") or "").strip()
            yield from _outlines(outline, category + ((label,) if label else ()))
        # an outline with xmlUrl and children: children are still read
        if outline.get("xmlUrl") and len(outline):
            yield from _outlines(outline, category)


def to_opml(sources: Iterable[SourceConfig], title: str = "ingest sources") -> str:
    """The sources as an OPML 2.0 document; a source's tags become nested folders (read back as tags)."""
    now = datetime.now(timezone.utc).strftime("%a, %d %b %Y %H:%M:%S GMT")
    root = _Folder()
    for source in sources:
        folder = root
        for tag in source.tags:
            folder = folder.folders.setdefault(tag, _Folder())
        folder.sources.append(source)
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<opml version="2.0">',
        f"  <head><title>{_xml_text(title)}</title><dateCreated>{now}</dateCreated></head>",
        "  <body>",
        *_folder_lines(root, "    "),
        "  </body>",
        "</opml>",
        "",
    ]
    return "\n".join(lines)


class _Folder:
    def __init__(self) -> None:
        self.folders: dict[str, _Folder] = {}
        self.sources: list[SourceConfig] = []


def _folder_lines(folder: _Folder, indent: str) -> list[str]:
    lines = [
        f"{indent}<outline type=\"rss\" text={quoteattr(s.name)} title={quoteattr(s.name)} xmlUrl={quoteattr(s.url)}/>"
        for s in folder.sources
    ]
    for name, child in folder.folders.items():
        lines.append(f"{indent}<outline text={quoteattr(name)} title={quoteattr(name)}>")
        lines += _folder_lines(child, indent + "  ")
        lines.append(f"{indent}</outline>")
    return lines


def _xml_text(text: str) -> str:
    return re.sub(r"[<>&]", lambda m: {"<": "&lt;", ">": "&gt;", "&": "&amp;"}[m.group()], text)
