"""Source lists: `sources_files` (OPML 1.0/2.0, TOML), duplicates, `sources --export-opml` round trip."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from .conftest import run_cli, write_config_file
from ingest.config import load
from ingest.errors import ConfigError
from ingest.sourcelists import to_opml


OPML = """\
<?xml version="1.0" encoding="UTF-8"?>
<opml version="{version}">
  <head><title>my subscriptions</title></head>
  <body>
    <outline text="Gadget Zone" type="rss" xmlUrl="https://gadgets.example/rss"/>
    <outline text="News" title="News">
      <outline text="World">
        <outline title="World Times" text="ignored when title is there" type="rss" xmlUrl="https://worldtimes.example/feed"/>
      </outline>
    </outline>
    <outline text="Wire again" type="rss" xmlUrl="https://WIRE.example/feed.xml?utm_source=opml"/>
  </body>
</opml>
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    """A source file (OPML, or anything a test feeds to the loader as it is)."""
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _config(tmp_path: Path, files: list[str], **sections: object) -> Path:
    """ingest.toml with ``sources_files = files``, a store and one source of its own ("wire")."""
    return write_config_file(tmp_path, sources_files=files, store_url="sqlite:///store.db",
                             sources={"wire": "https://wire.example/feed.xml"}, **sections)


def _source_list(directory: Path, name: str, sources: list[dict]) -> Path:
    """A TOML source list (``[[sources]]`` tables) in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    return write_config_file(directory, name=name, sources=sources)


@pytest.mark.parametrize("version", ["1.0", "2.0"])
def test_opml_outlines_become_sources_nested_category_as_tags_repeat_kept_once(tmp_path: Path, version: str) -> None:
    _write(tmp_path, "feeds.opml", OPML.format(version=version))
    config = load(_config(tmp_path, ["feeds.opml"]))
    # the OPML yields 3 sources; one repeats the config's own source, so 1 + 2 remain
    assert [s.name for s in config.sources] == ["wire", "Gadget Zone", "World Times"]
    assert config.source("World Times").tags == ("News", "World")
    assert config.source("World Times").url == "https://worldtimes.example/feed"
    assert config.source("Gadget Zone").tags == ()
    repeats = [w for w in config.warnings if "same URL" in w]
    assert repeats == ["source 'Wire again': same URL as 'wire', kept once"]


def test_globs_toml_files_and_defaults_apply(tmp_path: Path) -> None:
    _source_list(tmp_path / "sources", "a.toml", [{"name": "a", "url": "https://a.example/feed", "tags": ["x"]}])
    _source_list(tmp_path / "sources", "b.toml", [{"name": "b", "url": "local/b.xml"}])
    _write(tmp_path, "feeds.opml", OPML.format(version="2.0"))
    config = load(_config(tmp_path, ["sources/*.toml", "feeds.opml"], defaults={"interval": "1h"}))
    assert [s.name for s in config.sources] == ["wire", "a", "b", "Gadget Zone", "World Times"]
    assert config.source("b").url == str((tmp_path / "sources" / "local" / "b.xml").resolve())  # relative to its file
    assert all(s.interval == 3600 for s in config.sources)


def test_export_opml_then_reimport_round_trips(tmp_path: Path) -> None:
    _write(tmp_path, "feeds.opml", OPML.format(version="2.0"))
    _source_list(tmp_path, "more.toml", [
        {"name": "Tagged & <odd>", "url": "https://odd.example/?a=1&b=2", "tags": ["News", "Tech"]},
        {"name": "file", "url": "feeds/local.xml"},
    ])
    config_path = _config(tmp_path, ["feeds.opml", "more.toml"])
    original = load(config_path)
    out = tmp_path / "export" / "sources.opml"
    out.parent.mkdir()
    done = run_cli("sources", "-c", str(config_path), "--export-opml", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    stdout = run_cli("sources", "-c", str(config_path), "--export-opml").stdout
    assert stdout.split("<body>")[1] == out.read_text(encoding="utf-8").split("<body>")[1]

    again = load(write_config_file(tmp_path / "export", name="only.toml", sources_files=["sources.opml"]))
    def key(s):  # noqa: E306
        return (s.name, s.url, s.tags)
    web = [s for s in original.sources if not s.is_local]  # local files are not exported (and not importable)
    assert len(web) == len(original.sources) - 1
    assert sorted(map(key, again.sources)) == sorted(map(key, web))
    assert "local-file sources are not written to OPML: file" in done.stderr


def test_malformed_opml_is_a_one_line_config_error_naming_the_file(tmp_path: Path) -> None:
    _write(tmp_path, "broken.opml", '<?xml version="1.0"?>\n<opml version="2.0"><body>\n<outline text="a"\n</body>')
    config_path = _config(tmp_path, ["broken.opml"])
    done = run_cli("sources", "-c", str(config_path), "--export-opml")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "broken.opml" in lines[0] and "not valid OPML" in lines[0]
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "body, reason",
    [
        ('<?xml version="1.0"?><rss version="2.0"><channel/></rss>', "not OPML"),
        ("", "not valid OPML"),
        ('<opml version="2.0"><body><outline text="x" xmlUrl="ftp://x.example/f"/></body></opml>', "only http"),
    ],
)
def test_other_bad_source_files_are_reported(tmp_path: Path, body: str, reason: str) -> None:
    _write(tmp_path, "list.opml", body)
    with pytest.raises(ConfigError) as caught:
        load(_config(tmp_path, ["list.opml"]))
    assert reason in str(caught.value) and "list.opml" in str(caught.value)


def test_entity_bomb_and_external_entity_are_refused_quickly(tmp_path: Path) -> None:
    secret = _write(tmp_path, "secret.txt", "TOP-SECRET")
    levels = ['<!ENTITY l0 "lol">'] + [f'<!ENTITY l{i} "{("&l" + str(i - 1) + ";") * 10}">' for i in range(1, 10)]
    bomb = (
        '<?xml version="1.0"?>\n<!DOCTYPE opml [\n' + "\n".join(levels)
        + f'\n<!ENTITY xxe SYSTEM "file://{secret}">\n]>\n'
        '<opml version="2.0"><body><outline text="&l9;" xmlUrl="https://a.example/f"/>'
        '<outline text="&xxe;" xmlUrl="https://b.example/f"/></body></opml>'
    )
    _write(tmp_path, "bomb.opml", bomb)
    started = time.perf_counter()
    with pytest.raises(ConfigError) as caught:
        load(_config(tmp_path, ["bomb.opml"]))
    assert time.perf_counter() - started < 2
    assert "bomb.opml" in str(caught.value) and "entity" in str(caught.value)
    assert "TOP-SECRET" not in str(caught.value)


def test_a_doctype_without_entities_is_harmless(tmp_path: Path) -> None:
    _write(tmp_path, "feeds.opml", '<?xml version="1.0"?>\n<!DOCTYPE opml SYSTEM "file:///etc/passwd">\n'
                                   + OPML.format(version="2.0").split("\n", 1)[1])
    config = load(_config(tmp_path, ["feeds.opml"]))
    assert len(config.sources) == 3


def test_missing_file_and_unmatched_glob(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(_config(tmp_path, ["nope.opml"]))
    assert "nope.opml: file not found" in str(caught.value)
    config = load(_config(tmp_path, ["lists/*.opml"]))
    assert config.warnings == ("sources_files: 'lists/*.opml' matches no file",)


def test_to_opml_escapes_and_nests_tags() -> None:
    from lxml import etree

    from ingest.config import SourceConfig

    name, url = """a "b" <c> & 'd'""", "https://x.example/?q=1&r=2"
    root = etree.fromstring(to_opml([SourceConfig(name=name, url=url, tags=("A", "B"))]).encode("utf-8"))
    assert root.get("version") == "2.0"
    [feed] = root.findall("body/outline/outline/outline")
    assert (feed.get("title"), feed.get("xmlUrl")) == (name, url)
    assert [o.get("text") for o in feed.iterancestors("outline")] == ["B", "A"]


def test_opml_outline_cannot_name_a_local_file(write_config, tmp_path):
    (tmp_path / "list.opml").write_text(
        '<?xml version="1.0"?><opml version="2.0"><head/><body>'
        '<outline text="secrets" xmlUrl="/etc/passwd"/><outline text="up" xmlUrl="../../etc/hostname"/>'
        '<outline text="ok" xmlUrl="https://ok.example/feed"/></body></opml>', encoding="utf-8")
    path = write_config(sources_files=["list.opml"])
    with pytest.raises(ConfigError) as info:
        load(path)
    text = str(info.value)
    assert "'secrets'" in text and "'up'" in text and "only http or https" in text


def test_absolute_glob_in_sources_files(write_config, tmp_path):
    folder = tmp_path / "lists"
    folder.mkdir()
    _source_list(folder, "a.toml", [{"name": "a", "url": "https://a.example/feed"}])
    path = write_config(sources_files=[f"{folder}/*.toml"])
    assert [s.name for s in load(path).sources] == ["a"]
