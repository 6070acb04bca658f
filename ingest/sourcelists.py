"""Source lists named by ``sources_files``: OPML 1.0/2.0 outlines and TOML files of ``[[sources]]``.

Read at config time (part of validation), so every problem is reported with the
file that holds it. Sources whose URL repeats one already listed are reported once
and kept once (first wins: the main config, then files in the order given).
"""

from __future__ import annotations

import glob
import re
import tomllib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

from lxml import etree

from ingest.config import SourceConfig, source_from_table
from ingest.urls import canonical_url, is_http_url

_ENTITY = re.compile(rb"<!ENTITY", re.IGNORECASE)


def load_files(
    patterns: Any, base: Path, defaults: dict[str, Any], problems: list[str]
) -> tuple[list[SourceConfig], list[str]]:
    """Sources from every file matching ``patterns`` (relative to ``base``, globs allowed)."""
    if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
        problems.append("'sources_files' must be a list of paths or glob patterns")
        return [], []
    sources: list[SourceConfig] = []
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
                sources += _from_toml(path, defaults, problems)
            else:
                sources += _from_opml(path, defaults, problems)
    return sources, warnings


def merge(first: list[SourceConfig], more: list[SourceConfig]) -> tuple[list[SourceConfig], list[str]]:
    """Append ``more`` to ``first``, dropping repeated URLs and renaming clashing names."""
    seen_urls = {_url_key(s.url): s.name for s in first}
    names = {s.name for s in first}
    out = list(first)
    warnings: list[str] = []
    for source in more:
        key = _url_key(source.url)
        if key in seen_urls:
            warnings.append(f"source {source.name!r}: same URL as {seen_urls[key]!r}, kept once")
            continue
        name = source.name
        counter = 2
        while name in names:
            name = f"{source.name} ({counter})"
            counter += 1
        if name != source.name:
            source = SourceConfig(**{**source.__dict__, "name": name})
        seen_urls[key] = name
        names.add(name)
        out.append(source)
    return out, warnings


def _url_key(url: str) -> str:
    return canonical_url(url) if is_http_url(url) else url


def _from_toml(path: Path, defaults: dict[str, Any], problems: list[str]) -> list[SourceConfig]:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        problems.append(f"{path}: {exc}")
        return []
    unknown = set(raw) - {"sources"}
    if unknown:
        problems.append(f"{path}: unknown key(s) {', '.join(sorted(unknown))} (expected [[sources]])")
    out = []
    for index, table in enumerate(raw.get("sources", [])):
        source = source_from_table(table, f"{path.name}: sources[{index}]", defaults, path.parent, problems)
        if source:
            out.append(source)
    return out


def _from_opml(path: Path, defaults: dict[str, Any], problems: list[str]) -> list[SourceConfig]:
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
    out: list[SourceConfig] = []
    for outline, category in _outlines(body, ()):
        url = (outline.get("xmlUrl") or "").strip()
        name = (outline.get("title") or outline.get("text") or url).strip()
        table: dict[str, Any] = {"name": name, "url": url}
        if category:
            table["tags"] = list(category)
        source = source_from_table(
            table, f"{path.name}: outline {name!r}", defaults, path.parent, problems, allow_local=False
        )
        if source:
            out.append(source)
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


def to_opml(sources: list[SourceConfig], title: str = "ingest sources") -> str:
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
