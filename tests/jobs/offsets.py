"""Test job: every record's file and byte offset (``ctx``), so that runs can be compared on where
each record was found, not only on what it holds."""


def mapper(line, ctx):
    yield f"{ctx.path}:{ctx.offset}", len(line)


def reducer(key, values):
    yield key, sum(values)
