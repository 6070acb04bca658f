"""The command line: argv, messages, exit codes; every command through a real subprocess."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from ingest.cli import EXPORT_FORMATS, build_parser
from ingest.export import FORMATS

from .conftest import ROOT, run_cli


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
    config = write_config(f'[store]\nurl = "sqlite:///{tmp_path}/x.db"\n[[sources]]\nname = "a"\nurl = "{tmp_path}/a.xml"\n')
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
    config = write_config(f'[store]\nurl = "{url}"\n[[sources]]\nname = "a"\nurl = "{tmp_path}/a.xml"\n')
    done = run_cli("items", "-c", str(config))
    assert done.returncode == 1
    assert says in done.stderr and "sqlite:///PATH" in done.stderr and "postgresql://" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_a_missing_store_folder_is_named(write_config, tmp_path: Path) -> None:
    config = write_config(f'[store]\nurl = "sqlite:///{tmp_path}/gone/x.db"\n[[sources]]\nname = "a"\nurl = "{tmp_path}/a.xml"\n')
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
        config = write_config(f'[store]\nurl = "sqlite:///{mount}/x.db"\n[[sources]]\nname = "a"\nurl = "{tmp_path}/a.xml"\n')
        done = run_cli("items", "-c", str(config))
        assert done.returncode == 1 and f"the folder {mount} is read-only" in done.stderr, done.stderr
    finally:
        subprocess.run(["umount", str(mount)], check=True)
