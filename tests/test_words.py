"""Counted nouns in messages: singular for one, plural otherwise, never "(s)"."""

from __future__ import annotations

import re
import tokenize
from pathlib import Path

from mapred.words import plural

ROOT = Path(__file__).resolve().parent.parent


def test_one_is_singular_everything_else_plural() -> None:
    assert plural(1, "shard") == "1 shard"
    assert plural(0, "shard") == "0 shards"
    assert plural(2, "failed attempt") == "2 failed attempts"
    assert plural(12_345, "key") == "12,345 keys"
    assert plural(1, "match", "matches") == "1 match" and plural(3, "match", "matches") == "3 matches"


def test_no_string_of_the_package_says_s_in_parentheses() -> None:
    found = []
    for path in sorted((ROOT / "mapred").glob("*.py")):
        if path.name == "words.py":  # its docstring names what it replaces
            continue
        with path.open("rb") as f:
            for tok in tokenize.tokenize(f.readline):
                if tok.type == tokenize.STRING and re.search(r"[a-z]\(s\)", tok.string):
                    found.append(f"{path.name}:{tok.start[0]}: {tok.string}")
    assert not found, "\n".join(found)
