"""ingest.config: defaults, durations, relative paths, and one clear error per problem.

How the CLI reports a config error (one line, exit 2): tests/test_cli.py.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from ingest.config import SPEC, Config, find_path, load, parse_duration
from ingest.errors import ConfigError

from .conftest import ROOT


@pytest.mark.parametrize(
    "value, seconds",
    [(90, 90.0), (1.5, 1.5), ("90s", 90.0), ("15m", 900.0), ("2h", 7200.0), ("1d", 86400.0), ("250ms", 0.25), (" 3 ", 3.0)],
)
def test_durations(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["soon", "-5s", -1, True, "15 minutes", None])
def test_bad_durations(value):
    with pytest.raises(ValueError):
        parse_duration(value)


def test_minimal_config_gets_defaults_and_resolves_paths(write_config, tmp_path):
    path = write_config(store_url="sqlite:///data/ingest.db", defaults={"interval": "5m"}, sources=[
        {"name": "local", "url": "feeds/local.xml"},
        {"name": "remote", "url": "https://example.org/feed.xml", "interval": 90, "full_text": True},
    ])
    config = load(path)
    assert isinstance(config, Config)
    assert config.store.url == f"sqlite:///{(tmp_path / 'data' / 'ingest.db').resolve()}"
    local, remote = config.sources
    assert local.url == str((tmp_path / "feeds" / "local.xml").resolve()) and local.is_local
    assert local.interval == 300.0 and not local.full_text
    assert remote.interval == 90.0 and remote.full_text and not remote.is_local
    assert config.dedup.canonical == "earliest"


def test_unknown_key_is_named(write_config):
    path = write_config(fetch={"timout": 20})
    with pytest.raises(ConfigError) as info:
        load(path)
    message = str(info.value)
    assert "fetch.timout" in message and str(path) in message and "\n" not in message


def test_every_problem_is_reported_at_once(write_config):
    path = write_config(colour="blue", dedup={"threshold": "high", "canonical": "newest"}, sources=[
        {"name": "a", "url": "ftp://example.org/feed"},
        {"url": "https://example.org/feed"},
        {"name": "b", "url": "https://example.org/b", "strip": ["(unclosed"]},
    ])
    with pytest.raises(ConfigError) as info:
        load(path)
    problems = info.value.problems
    text = " | ".join(problems)
    assert "'colour'" in text
    assert "dedup.threshold" in text and "dedup.canonical" in text
    assert "only http, https or a local path" in text
    assert "missing 'name'" in text
    assert "invalid regular expression" in text
    assert len(problems) == 6


def test_duplicate_source_names_and_wrong_types(write_config):
    path = write_config(fetch={"max_bytes": 12.5, "allow_private_addresses": "yes"}, sources=[
        {"name": "a", "url": "https://example.org/1"},
        {"name": "a", "url": "https://example.org/2"},
    ])
    with pytest.raises(ConfigError) as info:
        load(path)
    text = str(info.value)
    assert "fetch.max_bytes" in text and "expected an integer" in text
    assert "fetch.allow_private_addresses" in text and "true or false" in text
    assert "duplicate source name 'a'" in text


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[store\nurl=", encoding="utf-8")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load(bad)


def test_config_path_precedence(tmp_path):
    assert find_path("given.toml", {"INGEST_CONFIG": "env.toml"}) == Path("given.toml")
    assert find_path(None, {"INGEST_CONFIG": "env.toml"}) == Path("env.toml")
    assert find_path(None, {}) == Path("ingest.toml")


def test_example_config_is_valid_and_documents_every_key():
    """config/ingest.example.toml loads, and names every option the SPEC knows."""
    path = ROOT / "config" / "ingest.example.toml"
    load(path)
    text = path.read_text(encoding="utf-8")
    raw = tomllib.loads(text)
    for section, keys in SPEC.items():
        for key in keys:
            if section == "source":
                assert key in raw["sources"][0], f"example lacks sources.{key}"
            else:
                assert f"{key} =" in text, f"example lacks {section}.{key}"


def test_demo_config_is_valid_and_offline():
    config = load(ROOT / "config" / "demo.toml")
    assert len(config.sources) >= 5
    assert all(s.is_local and Path(s.url).is_file() for s in config.sources)


@pytest.mark.parametrize("key, value", [
    ("timeout", float("nan")), ("timeout", float("inf")), ("per_host_delay", float("inf")), ("backoff_max", 1e300),
])
def test_non_finite_and_huge_numbers_are_refused(write_config, key, value):
    path = write_config(fetch={key: value})
    with pytest.raises(ConfigError, match=key):
        load(path)


def test_upper_case_scheme_is_a_web_source(write_config):
    path = write_config(sources={"a": "HTTPS://Example.org/feed.xml"})
    [source] = load(path).sources
    assert not source.is_local and source.url == "https://Example.org/feed.xml"
