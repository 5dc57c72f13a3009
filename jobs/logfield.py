"""Count one whitespace-separated field of every line (numba tier), e.g. client IPs of an
access log (field 0) or status codes (field 8 of the common log format).

Run it:  mapred run jobs/logfield.py access.log -o out/ -p field=8
Lines with fewer fields are skipped.
"""

from numba import njit

from mapred.kernels import find_byte, find_space, skip_space

AGGREGATE = "sum"
PARAMS = {"field": "0"}  # -p KEY=VALUE this job takes, with defaults: other keys are refused


def init(params):
    field = int(params["field"])
    if field < 0:
        raise ValueError(f"parameter field must be >= 0, got {field}")
    return (field,)  # extra arguments for scan()


@njit(cache=True, nogil=True)
def scan(buf, pos, starts, ends, values, field):
    end = len(buf)
    n = 0
    while n < len(starts) and pos < end:
        eol = find_byte(buf, pos, end, 10)  # this line is buf[pos:eol]
        start = skip_space(buf, pos, eol)
        for _ in range(field):
            start = skip_space(buf, find_space(buf, start, eol), eol)
        if start < eol:
            starts[n] = start
            ends[n] = find_space(buf, start, eol)
            values[n] = 1
            n += 1
        pos = eol + 1
    return n, min(pos, end)
