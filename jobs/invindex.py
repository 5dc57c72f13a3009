"""Inverted index (plain tier): each word and the sorted list of files that contain it.

Run it:  mapred run invindex corpus/ -o out/
Output:  ``word<TAB>file1<TAB>file2...``: file names relative to the corpus, sorted by their
bytes, each escaped like keys. A two-argument mapper receives the record's context (``ctx.path``).
"""


def mapper(line, ctx):
    path = ctx.path.encode("utf-8", "surrogateescape")
    for word in set(line.split()):
        yield word, path


def combiner(word, paths):
    for path in sorted(set(paths)):
        yield word, path


def reducer(word, paths):
    yield word, sorted(set(paths))
