"""``--help`` of every command as a user reads it in an 80-column terminal: no line wider than
the terminal, every option name whole, no type tags on flags, the defaults there to read."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from mrtest import ROOT

from mapred.cli import main as cli

COMMANDS = [[], ["run"], ["runs"], ["show"], ["report"], ["hosts"], ["hosts", "check"],
            ["hosts", "setup"]]

# what each command's help must say about defaults (whitespace-normalised: wrapping is free)
DEFAULTS = {
    "run": ["[default: ./hosts.toml if it exists, else this machine with all its cores]",
            "by default the total cores, but at most one per shard",
            "[default: auto]", "[default: 4; x>=1]", "[default: speculation]",
            "[default: $XDG_STATE_HOME/mapred or ~/.local/state/mapred]", "[default: text]"],
    "runs": ["[default: 20; x>=0]", "[default: $XDG_STATE_HOME/mapred or ~/.local/state/mapred]"],
    "show": ["[default: $XDG_STATE_HOME/mapred or ~/.local/state/mapred]"],
    "report": ["[default: ./mapred-report-RUN_ID.html]",
               "[default: $XDG_STATE_HOME/mapred or ~/.local/state/mapred]"],
    "hosts check": ["[default: ./hosts.toml]", "[default: 60.0]"],
    "hosts setup": ["[default: ./hosts.toml]", "[default: the hosts file's python]"],
}


def render_help(args: list[str], columns: int = 80) -> str:
    env = {**os.environ, "COLUMNS": str(columns), "LINES": "50"}
    env.pop("TERMINAL_WIDTH", None)
    script = Path(sys.executable).with_name("mapred")  # as installed: the usage says "mapred"
    argv = [str(script)] if script.is_file() else [sys.executable, "-m", "mapred.cli.main"]
    proc = subprocess.run([*argv, *args, "--help"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=60,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def walk(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """(name path, click command) of the app and every command below it."""
    yield path, command
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from walk(sub, (*path, name))


def option_names(command: Any) -> list[str]:
    return [o for p in command.params if p.param_type_name == "option"
            for o in (*p.opts, *p.secondary_opts)]


def test_every_command_is_covered() -> None:
    found = [list(path) for path, _ in walk(typer.main.get_command(cli.app))]
    assert sorted(found) == sorted(COMMANDS)


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a) or "mapred")
def test_help_is_readable_at_80_columns(args: list[str]) -> None:
    text = render_help(args)
    lines = text.splitlines()
    assert lines and lines[0].startswith("Usage: "), text
    too_wide = [ln for ln in lines if len(ln) > 80]
    assert not too_wide, "\n".join(too_wide)
    for bad in ("<bool>", "…", "╭", "│"):  # flag type tags, cut names or help, rich's boxes
        assert bad not in text, f"{bad!r} in:\n{text}"
    assert not [ln for ln in lines[1:] if ln.endswith("...")], text  # a summary cut short
    command = dict(walk(typer.main.get_command(cli.app)))[tuple(args)]
    for name in option_names(command):
        assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text), f"{name}:\n{text}"
    flat = " ".join(text.split())
    for default in DEFAULTS.get(" ".join(args), []):
        assert default in flat, f"{default!r} not in:\n{text}"


def test_subcommands_are_listed_with_their_whole_summary() -> None:
    top = render_help([])
    for name in ("run", "runs", "show", "report", "hosts"):
        assert re.search(rf"^  {name} +\S", top, re.M), top
    assert "Run a job over a corpus; write OUT/part-NNNNN and OUT/_SUCCESS." in top
    hosts = render_help(["hosts"])
    assert "check  Check every host" in hosts and "setup  Install this mapred" in hosts


def test_a_narrower_terminal_still_gets_whole_names() -> None:
    text = render_help(["run"], columns=60)
    assert max(len(ln) for ln in text.splitlines()) <= 60, text
    assert "--accept-new-host-keys" in text and "--no-speculation" in text
