"""The labelled dedup corpus (fixtures/dedup/*.toml) and feeds rendered from it.

Used by the offline demo (``python -m tests.dedup_corpus demo``), by the dedup quality
benchmark and by the tests. A story file holds one original and its copies; stories
sharing an ``event`` are different articles on one event (hard negatives).
"""

from __future__ import annotations

import argparse
import html
import tomllib
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Iterable

ROOT = Path(__file__).resolve().parent.parent
DEDUP_DIR = ROOT / "fixtures" / "dedup"
# a real syndicated AFP story (from shared/seeds) ending in "Post Disclaimer" and a cookie banner
SEED = ROOT / "fixtures" / "seeds" / "kazakhstan-afp-syndicated.txt"


@dataclass(frozen=True)
class Item:
    id: str
    story: str
    event: str
    source: str
    relation: str
    title: str
    url: str
    guid: str
    published: datetime
    text: str

    @property
    def paragraphs(self) -> list[str]:
        return [p.strip() for p in self.text.strip().split("\n\n") if p.strip()]


def load(directory: Path = DEDUP_DIR, pattern: str = "*.toml") -> list[Item]:
    """Every item of every story file, in file order."""
    items: list[Item] = []
    for path in sorted(directory.glob(pattern)):
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
        for raw in doc["items"]:
            items.append(
                Item(
                    id=raw["id"], story=doc["story"], event=doc["event"], source=raw["source"],
                    relation=raw["relation"], title=raw["title"], url=raw["url"], guid=raw.get("guid") or raw["url"],
                    published=datetime.fromisoformat(raw["published"].replace("Z", "+00:00")), text=raw["text"],
                )
            )
    return items


def rss(title: str, items: Iterable[Item], link: str = "https://example.org/") -> str:
    """An RSS 2.0 feed whose entries carry the item text as content:encoded HTML."""
    out = [
        '<?xml version="1.0" encoding="utf-8"?>',
        '<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/">',
        "<channel>",
        f"<title>{html.escape(title)}</title><link>{html.escape(link)}</link>",
        f"<description>{html.escape(title)}</description>",
    ]
    for item in items:
        body = "".join(f"<p>{html.escape(p)}</p>" for p in item.paragraphs)
        out += [
            "<item>",
            f"<title>{html.escape(item.title)}</title>",
            f"<link>{html.escape(item.url)}</link>",
            f'<guid isPermaLink="false">{html.escape(item.guid)}</guid>',
            f"<pubDate>{format_datetime(item.published)}</pubDate>",
            f"<content:encoded><![CDATA[{body}]]></content:encoded>",
            "</item>",
        ]
    out += ["</channel>", "</rss>", ""]
    return "\n".join(out)


def feeds_by_source(items: Iterable[Item]) -> dict[str, list[Item]]:
    grouped: dict[str, list[Item]] = defaultdict(list)
    for item in items:
        grouped[item.source].append(item)
    return dict(sorted(grouped.items()))


def seed_items() -> list[Item]:
    """The real syndicated AFP story from shared/seeds, as the wire and two republishers."""
    lines = SEED.read_text(encoding="utf-8").split("\n\n")
    title = lines[0].strip()
    paragraphs = [p.strip() for p in lines[1:] if p.strip()]
    cut = next(i for i, p in enumerate(paragraphs) if p.startswith("Post Disclaimer"))
    body, glued = paragraphs[:cut], paragraphs[cut:]
    when = datetime.fromisoformat("2022-01-06T16:00:00+00:00")
    base = dict(story="seed-kazakhstan", event="seed-kazakhstan", relation="original")
    reordered = body[:6] + body[7:9] + [body[6]] + body[9:]
    return [
        Item(id="seed/afp", source="afp-wire", title=title, url="https://www.afp-wire.example/world/kazakhstan-troops",
             guid="afp-kz-0106", published=when, text="\n\n".join(body), **base),
        Item(id="seed/axadle", source="axadle", title=title, url="https://www.axadle.example/2022/01/kazakhstan-troops",
             guid="axadle-88121", published=when.replace(hour=17), text="\n\n".join(body + glued),
             **{**base, "relation": "boilerplate"}),
        Item(id="seed/worldtimes", source="worldtimes-blog",
             title="Kazakhstan: Moscow-led troops land as Almaty counts its dead",
             url="https://worldtimes.example/kazakhstan-moscow-led-troops", guid="wt-5531",
             published=when.replace(hour=18),
             text="\n\n".join(reordered + [f"The post {title} appeared first on World Times."]),
             **{**base, "relation": "reheadline"}),
    ]


DEMO_STORIES = (
    "b-continental-cup-final-2025--match-report",
    "b-continental-cup-final-2025--coach-interview",
    "b-orrin-lumen7-launch--launch-report",
    "b-orrin-lumen7-launch--hands-on-review",
    "b-veltrane-earnings-2025--q2-results",
    "b-veltrane-earnings-2025--q3-results",
)


def write_demo(target: Path) -> list[Path]:
    """Write the demo's feed files (one per source) into ``target``."""
    items = [i for i in load() if i.story in DEMO_STORIES] + seed_items()
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for source, members in feeds_by_source(items).items():
        path = target / f"{source}.xml"
        path.write_text(rss(source, members, f"https://{source}.example/"), encoding="utf-8")
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("what", choices=["demo"])
    parser.add_argument("--out", type=Path, default=ROOT / "fixtures" / "feeds" / "demo")
    args = parser.parse_args()
    for path in write_demo(args.out):
        print(path.relative_to(ROOT))


if __name__ == "__main__":
    main()
