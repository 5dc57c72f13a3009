"""Counted nouns in user-visible messages: ``1 shard``, ``2 shards``, never ``1 shard(s)``.

Standard library only: worker-side modules (``fetch.py``) use it too.
"""

from __future__ import annotations


def plural(n: int, word: str, words: str | None = None) -> str:
    """``plural(1, "shard")`` -> ``1 shard``; ``plural(1200, "shard")`` -> ``1,200 shards``.

    ``words`` is the plural form when it is not ``word + "s"`` (``plural(n, "match", "matches")``).
    """
    return f"{n:,} {word if n == 1 else words or word + 's'}"
