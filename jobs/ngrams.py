"""n-gram counts (plain tier): n consecutive tokens of one line, joined by one space.

Run it:  mapred run ngrams corpus/ -o out/ -p n=3
Tokens are those of word count (``bytes.split()``); an n-gram never crosses a line end.
"""

N = 2
PARAMS = {"n": "2"}


def init(params):
    global N
    try:
        N = int(params["n"])
    except ValueError:
        raise ValueError(f"parameter n must be an integer, got {params['n']!r}") from None
    if N < 1:
        raise ValueError(f"parameter n must be at least 1, got {N}")


def mapper(line):
    words = line.split()
    for i in range(len(words) - N + 1):
        yield b" ".join(words[i : i + N]), 1


def combiner(gram, counts):
    yield gram, sum(counts)


reducer = combiner
