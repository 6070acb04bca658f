"""The command line: argv, messages, exit codes and output formats, through a real subprocess.

Options and help, usage errors (one line, exit 2), a missing or unusable config or
store, a failing source as one line and every source failing as exit 1, ``--source``,
``--once`` against ``--once --due``, and what ``items``, ``sources --json``, ``show``
and ``recluster`` print. What the commands do to the store is tested with the module
that does it (tests/test_pipeline.py, test_maintenance.py, test_export.py ...).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from ingest.cli import EXPORT_FORMATS, build_parser
from ingest.export import FORMATS
from ingest.store import Store

from .conftest import DEMO_FEEDS, FIXTURES, ROOT, jsonl, run_cli, serve_demo_feed, wait_for
from .loopback import rss

TEXT = (
    "The harbour council voted on Tuesday to rebuild the northern seawall before winter storms, "
    "after engineers found cracks along forty metres of the old stone wall near the ferry terminal."
)


def _actions(parser: argparse.ArgumentParser):  # type: ignore[no-untyped-def]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from ((f"{name} {a}", act) for a, act in _actions(sub))
        elif not isinstance(action, argparse._HelpAction):
            yield "/".join(action.option_strings) or action.dest, action


def test_every_option_and_argument_has_a_help_line() -> None:
    missing = [name for name, action in _actions(build_parser()) if not action.help or action.help == argparse.SUPPRESS]
    assert not missing, f"options without a help line: {missing}"


def test_the_export_formats_are_the_renderers() -> None:
    assert EXPORT_FORMATS == FORMATS


def test_help_does_not_import_the_heavy_libraries() -> None:
    """`ingest --help` must answer fast: the store, MinHash and feed libraries load only for commands."""
    code = (
        "import sys, ingest.cli\n"
        "try:\n    ingest.cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('sqlalchemy', 'numpy', 'datasketch', 'feedparser', 'trafilatura') if m in sys.modules]\n"
        "print('heavy:' + ','.join(heavy))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "heavy:"


def test_options_before_the_command_are_kept(write_config, tmp_path: Path) -> None:
    config = write_config(store_url=f"sqlite:///{tmp_path}/x.db", sources={"a": tmp_path / "a.xml"})
    # -c given before the command used to be overwritten by the command's own default
    done = run_cli("-c", str(config), "--log-level", "error", "items", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "(none)" in done.stdout
    # and given after the command, as before
    assert run_cli("items", "-c", str(config), cwd=tmp_path).returncode == 0


def test_no_config_says_how_to_start(tmp_path: Path) -> None:
    done = run_cli("items", cwd=tmp_path)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1
    message = done.stderr
    assert "ingest.toml not found" in message and "ingest --once -c config/demo.toml" in message
    assert str(ROOT / "config" / "ingest.example.toml") in message
    # an explicit -c naming a missing file is the plain one-line error
    done = run_cli("items", "-c", str(tmp_path / "nope.toml"), cwd=tmp_path)
    assert done.returncode == 2 and "file not found" in done.stderr and "demo" not in done.stderr


@pytest.mark.parametrize("url, says", [
    ("mysql://user@db.example/feeds", "unsupported store URL scheme 'mysql'"),
    ("feeds.db", "not a store URL"),
])
def test_an_unsupported_store_url_names_the_supported_ones(write_config, tmp_path: Path, url: str, says: str) -> None:
    config = write_config(store_url=url, sources={"a": tmp_path / "a.xml"})
    done = run_cli("items", "-c", str(config))
    assert done.returncode == 1
    assert says in done.stderr and "sqlite:///PATH" in done.stderr and "postgresql://" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_a_missing_store_folder_is_named(write_config, tmp_path: Path) -> None:
    config = write_config(store_url=f"sqlite:///{tmp_path}/gone/x.db", sources={"a": tmp_path / "a.xml"})
    done = run_cli("items", "-c", str(config))
    assert done.returncode == 1 and f"the folder {tmp_path}/gone does not exist" in done.stderr


def test_a_read_only_store_folder_is_named(write_config, tmp_path: Path) -> None:
    """A read-only file system (a tmpfs mounted read-only: root ignores permission bits)."""
    mount = tmp_path / "ro"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {made.stderr.decode().strip()}")
    try:
        config = write_config(store_url=f"sqlite:///{mount}/x.db", sources={"a": tmp_path / "a.xml"})
        done = run_cli("items", "-c", str(config))
        assert done.returncode == 1 and f"the folder {mount} is read-only" in done.stderr, done.stderr
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_cli_unknown_key_exits_2_with_one_line(cli, write_config):
    path = write_config(dedup={"treshold": 0.5})
    result = cli("--once", "-c", str(path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "dedup.treshold" in lines[0] and "Traceback" not in result.stderr


def test_cli_config_from_environment(cli, write_config, tmp_path):
    path = write_config(store_url="sqlite:///env.db")
    result = cli("--once", "--json", env={"INGEST_CONFIG": str(path)})
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "env.db").exists()


@pytest.mark.parametrize("args", [["items", "--limit", "-1"], ["search", "x", "--limit", "0"], ["bogus"], ["show", "abc"]])
def test_usage_errors_are_one_line_exit_2(args, cli):
    result = cli(*args, "-c", str(FIXTURES.parent / "config" / "demo.toml"))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("ingest: usage: ")


def test_bad_export_arguments_are_one_line_usage_errors(demo_config: Path) -> None:
    for args in (["--source", "no-such-source"], ["--since", "last tuesday"], ["--limit", "0"]):
        done = run_cli("export", "-c", str(demo_config), *args)
        assert done.returncode == 2, (args, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


# ---------------------------------------------------------------------------- --once: sources, failures, exit codes


def test_a_failing_source_is_one_line_and_the_others_go_on(server, write_config, cli):
    server.respond("/broken.xml", b"<html>oops</html>", headers={"Content-Type": "application/rss+xml"})
    server.respond("/missing.xml", b"no", status=404)
    urls = {"afp-wire": serve_demo_feed(server, "afp-wire"), "broken": server.url("/broken.xml"),
            "missing": server.url("/missing.xml")}
    result = cli("--once", "--json", "-c", str(write_config(store_url="sqlite:///store.db",
                                                            fetch={"per_host_delay": 0}, sources=urls)))
    assert result.returncode == 0
    summary = json.loads(result.stdout)
    assert summary["sources_failed"] == 2 and summary["items_new"] > 0
    errors = {e["source"]: e["error"] for e in summary["errors"]}
    assert errors["missing"].startswith("fetch: HTTP 404")
    assert errors["broken"].startswith("parse: ")
    stderr_lines = [line for line in result.stderr.splitlines() if "source '" in line]
    assert len(stderr_lines) == 2 and "Traceback" not in result.stderr


def test_every_source_failing_exits_1(server, write_config, cli):
    server.respond("/gone.xml", b"", status=500)
    urls = {"a": server.url("/gone.xml"), "b": FIXTURES / "no-such-file.xml"}
    result = cli("--once", "-c", str(write_config(store_url="sqlite:///store.db", fetch={"per_host_delay": 0},
                                                  sources=urls)))
    assert result.returncode == 1
    assert "source 'a': fetch: HTTP 500" in result.stderr and "source 'b': fetch: no such file" in result.stderr


def test_unusable_store_exits_1(write_config, cli, tmp_path):
    (tmp_path / "blocker").write_text("a file where a folder should be")
    config = write_config(store_url="sqlite:///blocker/store.db", sources={"x": DEMO_FEEDS / "afp-wire.xml"})
    result = cli("--once", "-c", str(config))
    assert result.returncode == 1
    assert result.stderr.startswith("ingest: store: ") and "Traceback" not in result.stderr


def test_source_option_polls_only_the_named_sources(write_config, cli):
    config = write_config(store_url="sqlite:///store.db",
                          sources={"afp-wire": DEMO_FEEDS / "afp-wire.xml", "axadle": DEMO_FEEDS / "axadle.xml"})
    only = cli("--once", "--json", "--source", "axadle", "-c", str(config))
    assert only.returncode == 0 and json.loads(only.stdout)["sources"] == 1
    unknown = cli("--once", "--source", "nope", "-c", str(config))
    assert unknown.returncode == 2
    assert unknown.stderr.strip().splitlines() == ["ingest: config: --source: no source named nope"]


def test_once_polls_everything_and_once_due_only_what_is_due(server, other_server, write_config, cli, tmp_path):
    """`--once` is for cron and polls regardless of poll times; `--once --due` honours interval,
    backoff and Retry-After, and its progress lines count only the sources it polls. A host
    that answered 429 with Retry-After is left alone by later runs too (politeness)."""
    server.respond("/feed", rss([]), headers={"Content-Type": "application/rss+xml"})
    server.respond("/quick", rss([]), headers={"Content-Type": "application/rss+xml"})
    other_server.respond("/busy", status=429, headers={"Retry-After": "3600"})
    store_url = f"sqlite:///{tmp_path / 'cli.db'}"
    config = write_config(store_url=store_url, fetch={"per_host_delay": 0}, sources=[
        {"name": "feed", "url": server.url("/feed"), "interval": "15m"},
        {"name": "busy", "url": other_server.url("/busy"), "interval": "1s"},
        {"name": "quick", "url": server.url("/quick"), "interval": "1s"},
    ])
    first = cli("--once", "--due", "--json", "-c", str(config))  # never polled: all are due
    assert first.returncode == 0 and json.loads(first.stdout)["sources"] == 3
    with Store.open(store_url) as store:  # until "quick" is due again (its 1 s interval has passed)
        due = store.source_state("quick").next_poll_at
        wait_for(lambda: datetime.now(timezone.utc) >= due, 10, "quick's next poll time")
    second = cli("--once", "--due", "--json", "-c", str(config))  # only "quick" is due again
    assert second.returncode == 0 and json.loads(second.stdout)["sources"] == 1
    assert "ingest: [1/1] quick: ok" in second.stderr and "/3]" not in second.stderr
    assert len(server.hits("/feed")) == 1 and len(other_server.hits("/busy")) == 1  # Retry-After: 3600 honoured
    third = cli("--once", "--json", "-c", str(config))
    summary = json.loads(third.stdout)
    assert third.returncode == 0 and summary["sources"] == 2 and summary["deferred"] == ["busy"]
    assert len(server.hits("/feed")) == 2 and len(other_server.hits("/busy")) == 1


# ---------------------------------------------------------------------------- what the commands print


def test_ingest_sources_json_shows_errors_and_success(server, write_config, cli, tmp_path):
    state = {"fail": True}

    def flaky(h):
        if state["fail"]:
            h.reply(500, b"boom")
        else:
            h.reply(200, rss([("g", "http://example.org/g", "Story", TEXT)]), {"Content-Type": "application/rss+xml"})

    server.route("/flaky", flaky)
    server.respond("/gone", status=410)
    config = write_config(store_url=f"sqlite:///{tmp_path / 'cli.db'}", fetch={"per_host_delay": 0},
                          sources={"flaky": server.url("/flaky"), "gone": server.url("/gone")})
    for _ in range(2):
        assert cli("--once", "-c", str(config)).returncode == 1  # every source failed
    rows = {r["name"]: r for r in jsonl(cli("sources", "--json", "-c", str(config)).stdout)}
    flaky_row = rows["flaky"]
    assert flaky_row["consecutive_errors"] == 2 and flaky_row["error_count"] == 2
    assert "HTTP 500" in flaky_row["last_error"] and flaky_row["last_error_kind"] == "http_status"
    assert flaky_row["last_success"] is None and flaky_row["next_poll"] is not None
    assert flaky_row["url"] == flaky_row["effective_url"] == server.url("/flaky")
    gone_row = rows["gone"]
    assert gone_row["enabled"] is False and "410 Gone" in gone_row["disabled_reason"]
    assert gone_row["error_count"] == 1  # disabled after one poll, not polled again
    assert (flaky_row["polls"], flaky_row["requests"]) == (2, 2) and (gone_row["polls"], gone_row["requests"]) == (1, 1)

    state["fail"] = False
    done = cli("--once", "-c", str(config))
    assert done.returncode == 0 and "disabled" in done.stderr
    rows = {r["name"]: r for r in jsonl(cli("sources", "--json", "-c", str(config)).stdout)}
    assert rows["flaky"]["consecutive_errors"] == 0 and rows["flaky"]["error_count"] == 2
    assert rows["flaky"]["last_error"] is None and rows["flaky"]["last_success"] is not None

    table = cli("sources", "-c", str(config)).stdout
    assert "DISABLED: fetch: HTTP 410 Gone" in table


def test_show_explains_an_item(demo_run, cli):
    config, _ = demo_run
    items = jsonl(cli("items", "--json", "-c", str(config)).stdout)
    seed = next(i for i in items if i["source"] == "axadle")
    shown = cli("show", str(seed["id"]), "-c", str(config))
    assert shown.returncode == 0
    assert "not-edited-auto-generated" in shown.stdout and "cookie-consent" in shown.stdout
    detail = json.loads(cli("show", str(seed["id"]), "--json", "-c", str(config)).stdout)
    assert detail["cluster"] == seed["cluster"] and len(detail["members"]) == 3
    assert any("Post Disclaimer" in r["text"] for r in detail["removed"])
    missing = cli("show", "999999", "-c", str(config))
    assert missing.returncode == 1 and "no item with id 999999" in missing.stderr


def test_show_lists_removals_in_text_order_with_rule_names(demo_run, cli):
    config, _ = demo_run
    items = jsonl(cli("items", "--json", "-c", str(config)).stdout)
    seed = next(i for i in items if i["source"] == "axadle")
    detail = json.loads(cli("show", str(seed["id"]), "--json", "-c", str(config)).stdout)
    assert [(r["rule"], r["position"]) for r in detail["removed"]] == [
        ("disclaimer-heading", "end"), ("not-edited-auto-generated", "end"), ("cookie-consent", "whole"),
    ]
    shown = cli("show", str(seed["id"]), "-c", str(config)).stdout
    disclaimer = detail["removed"][1]["text"]
    assert len(disclaimer) > 300 and f"[not-edited-auto-generated, end] {disclaimer}\n" in shown  # whole, not cut
    assert shown.index("[disclaimer-heading, end]") < shown.index("[not-edited-auto-generated, end]") \
        < shown.index("[cookie-consent, whole]")


def test_blocked_page_note_is_shown_by_ingest_show(server, other_server, write_config, cli, tmp_path):
    server.feed("/feed", [("a", other_server.url("/secret"), "Story a", f"{TEXT} (a)")])
    config = write_config(store_url=f"sqlite:///{tmp_path / 'cli.db'}", fetch={"per_host_delay": 0},
                          sources=[{"name": "feed", "url": server.url("/feed"), "full_text": True}])
    assert cli("--once", "-c", str(config)).returncode == 0
    shown = cli("show", "1", "--json", "-c", str(config))
    assert shown.returncode == 0, shown.stderr
    assert "full text not fetched (blocked)" in json.loads(shown.stdout)["notes"]
    assert other_server.hits() == []


def test_recluster_text_report_names_merges_and_splits(demo_config: Path) -> None:
    done = run_cli("recluster", "-c", str(demo_config), "--dry-run", "--threshold", "0.99")
    assert done.returncode == 0, done.stderr
    assert " splits, " in done.stdout and "dry run: nothing changed" in done.stdout
