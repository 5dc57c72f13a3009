"""Matching lines with their counts, like ``grep -E PATTERN | sort | uniq -c`` (plain tier).

Run it:  mapred run grep corpus/ -o out/ -p pattern='err(or)?'
Output:  ``line<TAB>count`` for every distinct line that matches (Python ``re`` syntax, applied to
the line's bytes with ``re.search``; add ``-p ignore_case=1`` for case-insensitive matching).
"""

import re

PATTERN = None
PARAMS = {"pattern": None, "ignore_case": "0"}  # None: required


def init(params):
    global PATTERN
    flags = re.IGNORECASE if params["ignore_case"] not in ("", "0") else 0
    try:
        PATTERN = re.compile(params["pattern"].encode("utf-8", "surrogateescape"), flags)
    except re.error as e:
        raise ValueError(f"parameter pattern is not a valid regular expression: {e}") from None


def mapper(line):
    if PATTERN.search(line):
        yield line, 1


def combiner(line, counts):
    yield line, sum(counts)


reducer = combiner
