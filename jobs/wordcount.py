"""Word count, numba tier: tokens are maximal runs of non-whitespace bytes (``bytes.split()``).

Run it:  mapred run jobs/wordcount.py corpus/ -o out/
Output:  one ``word<TAB>count`` line per distinct token, sorted by token bytes.
"""

from numba import njit

from mapred.kernels import find_space, skip_space

AGGREGATE = "sum"  # how values of equal keys combine: "sum", "min" or "max"


@njit(cache=True, nogil=True)
def scan(buf, pos, starts, ends, values):
    """Emit up to len(starts) (key span, value) pairs from buf[pos:]; return (n, new_pos)."""
    end = len(buf)
    n = 0
    while n < len(starts):
        pos = skip_space(buf, pos, end)
        if pos >= end:
            break
        stop = find_space(buf, pos, end)
        starts[n] = pos
        ends[n] = stop
        values[n] = 1
        n += 1
        pos = stop
    return n, pos
