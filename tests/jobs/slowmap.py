"""Test job: a word count whose mapper sleeps on a ``SLOW`` record (``-p seconds=N``, default 3),
so that a test can keep the host of a shard busy for a known time."""

import time

SECONDS = 3.0


def init(params):
    global SECONDS
    SECONDS = float(params.get("seconds", "3"))


def mapper(line):
    if line == b"SLOW":
        time.sleep(SECONDS)
        return
    for word in line.split():
        yield word, 1


def reducer(key, values):
    yield key, sum(values)
