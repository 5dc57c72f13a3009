"""The numba tier (the mapred.kernels package) against plain-Python references."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections import Counter

import mmh3
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mapred import job as jobmod
from mapred import kernels as K

SCAN = jobmod.load(jobmod.resolve("wordcount"), {}).scan  # the bundled word count's kernel

WS = b" \t\n\r\x0b\x0c"
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# Bytes biased to whitespace, plus look-alikes that bytes.split() does NOT split on.
ALPHABET = list(WS) * 3 + list(b"ab\x00\x1c\x1f\x80\x85\xa0\xff\x08\x0e!")
ws_bytes = st.lists(st.sampled_from(ALPHABET), max_size=80).map(bytes)


# --- references --------------------------------------------------------------------------------

def ref_skip(data: bytes, pos: int, end: int) -> int:
    while pos < end and data[pos] in WS:
        pos += 1
    return pos if pos < end else end


def ref_find(data: bytes, pos: int, end: int) -> int:
    while pos < end and data[pos] not in WS:
        pos += 1
    return pos if pos < end else end


def ref_find_byte(data: bytes, pos: int, end: int, byte: int) -> int:
    i = data.find(bytes([byte]), pos, end)
    return end if i < 0 else i


def ref_escape(key: bytes) -> bytes:
    table = {0x5C: b"\\\\", 0x09: b"\\t", 0x0A: b"\\n", 0x0D: b"\\r"}
    return b"".join(table.get(c, bytes([c])) for c in key)


def ref_combine(pairs, agg: str) -> dict[bytes, int]:
    out: dict[bytes, int] = {}
    for k, v in pairs:
        if k not in out:
            out[k] = v
        elif agg == "sum":
            out[k] += v
        elif agg == "min":
            out[k] = min(out[k], v)
        else:
            out[k] = max(out[k], v)
    return out


def ref_tsv(d: dict[bytes, int]) -> bytes:
    return b"".join(ref_escape(k) + b"\t" + str(v).encode() + b"\n" for k, v in sorted(d.items()))


def placed(data: bytes, offset: int, writable: bool) -> np.ndarray:
    """``data`` as a uint8 array that starts ``offset`` bytes into a larger allocation."""
    raw = bytearray(b"\xee" * offset + data + b"zz")
    arr = np.frombuffer(raw, np.uint8)[offset:offset + len(data)]
    arr.flags.writeable = writable
    return arr


def run_items(run) -> list[tuple[bytes, int]]:
    return [(run.key(i), int(run.values[i])) for i in range(len(run.values))]


def make_run(d: dict[bytes, int]) -> K.Run:
    keys = sorted(d)
    offsets = np.zeros(len(keys) + 1, np.int64)
    offsets[1:] = np.cumsum([len(k) for k in keys])
    blob = np.frombuffer(b"".join(keys), np.uint8).copy()
    return K.Run(offsets, np.array([d[k] for k in keys], np.int64), blob)


# --- whitespace / token helpers ----------------------------------------------------------------

def test_is_space_all_bytes():
    for b in range(256):
        assert K.is_space(b) == (b in WS), b
        assert K.is_space(np.uint8(b)) == (b in WS), b


@SETTINGS
@given(ws_bytes, st.integers(0, 9), st.booleans())
def test_skip_find_every_position_and_alignment(data, offset, writable):
    buf = placed(data, offset, writable)
    n = len(data)
    for end in sorted({n, max(0, n - 1), n // 2, min(n, 9)}):
        for pos in range(end + 1):
            assert K.skip_space(buf, pos, end) == ref_skip(data, pos, end), (data, pos, end)
            assert K.find_space(buf, pos, end) == ref_find(data, pos, end), (data, pos, end)
            for byte in (0x61, 0x00, 0x0A, 0xFF):
                assert K.find_byte(buf, pos, end, byte) == ref_find_byte(data, pos, end, byte)


def test_skip_find_long_runs():
    # runs longer than 8 bytes cross several 64-bit words, ending at every lane
    for lead in range(0, 20):
        for run in range(0, 40):
            data = b"x" * lead + b" \t\n\r\x0b\x0c" * (run // 6) + b" " * (run % 6) + b"y" * 11
            buf = np.frombuffer(data, np.uint8)
            assert K.skip_space(buf, lead, len(data)) == lead + run
            assert K.find_space(buf, 0, len(data)) == (lead if run else len(data))
            assert K.find_byte(buf, 0, len(data), ord("y")) == lead + run


@SETTINGS
@given(ws_bytes, st.integers(1, 5), st.integers(0, 7))
def test_wordcount_scan_equals_bytes_split(data, batch, offset):
    buf = placed(data, offset, False)
    starts, ends, values = (np.empty(batch, np.int64) for _ in range(3))
    got, pos = [], 0
    while pos < len(buf):
        n, pos = SCAN(buf, pos, starts, ends, values)
        got += [data[starts[i]:ends[i]] for i in range(n)]
        assert list(values[:n]) == [1] * n
    assert got == data.split()


@SETTINGS
@given(ws_bytes, st.sampled_from([0, 10, 32, 0xFF]), st.integers(0, 7))
def test_count_byte(data, byte, offset):
    assert K.count_byte(placed(data, offset, True), byte) == data.count(bytes([byte]))


def test_count_byte_large():
    data = os.urandom(1 << 20)
    assert K.count_byte(np.frombuffer(data, np.uint8), 10) == data.count(b"\n")


# --- mmh3 ----------------------------------------------------------------------------------------

SEEDS = st.one_of(st.sampled_from([0, 1, 42, 2**31 - 1, 2**31, 2**32 - 1]), st.integers(0, 2**32 - 1))


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=70), SEEDS, st.integers(0, 5))
def test_mmh3_matches_package(key, seed, offset):
    buf = np.frombuffer(b"\x01" * offset + key + b"\x02\x03", np.uint8)
    assert K.mmh3_32(buf, offset, offset + len(key), seed) == mmh3.hash(key, seed, signed=False)


def test_mmh3_every_tail_length():
    data = bytes(range(256)) * 2
    buf = np.frombuffer(data, np.uint8)
    for ln in range(0, 40):
        for seed in (0, 2**32 - 1, 12345):
            assert K.mmh3_32(buf, 3, 3 + ln, seed) == mmh3.hash(data[3:3 + ln], seed, signed=False)


def test_kernels_module_does_not_import_mmh3():
    code = "import sys, mapred.kernels; print('mmh3' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- KeyTable -----------------------------------------------------------------------------------

# Keys from a pool that makes repeats, shared long prefixes, trailing NULs and 0xff likely.
key_st = st.one_of(
    st.binary(max_size=4),
    st.builds(lambda p, s: p + s, st.sampled_from([b"", b"abcdefg", b"abcdefgh", b"x" * 15, b"y" * 16,
                                                   b"prefix-shared-by-long-keys/" * 2]),
              st.binary(max_size=20)),
    st.sampled_from([b"a", b"a\x00", b"a\x00\x00", b"\xff" * 7, b"\xff" * 8, b"\xff" * 9, b"\\\t\n\r"]),
)


def feed(table, pairs, buf_keys_at, cuts):
    """add_batch the pairs in batches cut at ``cuts``."""
    starts = np.array([s for s, _ in buf_keys_at], np.int64)
    ends = np.array([e for _, e in buf_keys_at], np.int64)
    values = np.array([v for _, v in pairs], np.int64)
    bounds = sorted({0, len(pairs), *[c % (len(pairs) + 1) for c in cuts]})
    for a, b in zip(bounds, bounds[1:], strict=False):
        table.add_batch(starts[a:b], ends[a:b], values[a:b], b - a)


def layout(keys: list[bytes], sep: bytes = b"|") -> tuple[bytes, list[tuple[int, int]]]:
    data, spans = bytearray(), []
    for k in keys:
        spans.append((len(data), len(data) + len(k)))
        data += k + sep
    return bytes(data[:-1] if data else data), spans


@SETTINGS
@given(st.lists(st.tuples(key_st, st.integers(-(2**40), 2**40)), max_size=120),
       st.sampled_from(["sum", "min", "max"]), st.integers(1, 5), SEEDS,
       st.lists(st.integers(0, 200), max_size=4), st.booleans())
def test_table_partitions_match_reference(pairs, agg, nparts, seed, cuts, writable):
    data, spans = layout([k for k, _ in pairs])
    buf = placed(data, 3, writable)
    table = K.KeyTable(buf, K.AGG_BY_NAME[agg], capacity=1)
    feed(table, pairs, spans, cuts)
    ref = ref_combine(pairs, agg)
    assert len(table) == len(ref)
    assert 2 * len(table) <= len(table._index), "index more than half full"
    runs = table.partitions(nparts, seed)
    assert len(runs) == nparts
    got: dict[bytes, int] = {}
    for p, run in enumerate(runs):
        items = run_items(run)
        keys = [k for k, _ in items]
        assert keys == sorted(set(keys)), "run not strictly sorted by key bytes"
        for k, v in items:
            assert mmh3.hash(k, seed, signed=False) % nparts == p
            got[k] = v
    assert got == ref


def test_table_zero_length_and_buffer_end_keys():
    data = b"abcdefghijklmnopqrstuvwxyz0123456789"
    buf = np.frombuffer(data, np.uint8)
    spans = [(0, 0), (5, 5), (len(data), len(data)), (30, 36), (20, 36), (35, 36), (0, 36),
             (0, 1), (0, 16), (0, 17), (19, 36), (0, 0)]
    table = K.KeyTable(buf, K.AGG_SUM)
    starts = np.array([s for s, _ in spans], np.int64)
    ends = np.array([e for _, e in spans], np.int64)
    table.add_batch(starts, ends, np.arange(1, len(spans) + 1, dtype=np.int64), len(spans))
    ref = ref_combine([(data[s:e], i + 1) for i, (s, e) in enumerate(spans)], "sum")
    assert dict(run_items(table.partitions(1, 0)[0])) == ref
    assert ref[b""] == 1 + 2 + 3 + 12


def test_table_tiny_buffers():
    for data in (b"", b"a", b"ab\x00", b"abcdefg", b"abcdefgh", b"abcdefghi"):
        buf = np.frombuffer(data, np.uint8)
        table = K.KeyTable(buf, K.AGG_MAX)
        spans = [(i, j) for i in range(len(data) + 1) for j in range(i, len(data) + 1)]
        starts = np.array([s for s, _ in spans], np.int64)
        ends = np.array([e for _, e in spans], np.int64)
        vals = np.arange(len(spans), dtype=np.int64) - 5
        table.add_batch(starts, ends, vals, len(spans))
        ref = ref_combine([(data[s:e], int(v)) for (s, e), v in zip(spans, vals, strict=True)], "max")
        assert dict(run_items(table.partitions(1, 7)[0])) == ref


def test_table_rejects_spans_outside_buffer():
    buf = np.frombuffer(b"hello world", np.uint8)
    table = K.KeyTable(buf, K.AGG_SUM)
    one = np.ones(1, np.int64)
    for s, e in ((-1, 2), (3, 2), (5, 12)):
        with pytest.raises(ValueError, match="span"):
            table.add_batch(np.array([s], np.int64), np.array([e], np.int64), one, 1)
    with pytest.raises(ValueError):
        table.add_batch(np.zeros(1, np.int64), np.ones(1, np.int64), one, 2)
    with pytest.raises(ValueError):
        K.KeyTable(buf, 3)
    assert len(table) == 0


def test_table_extreme_values_min_max_sum_wraps():
    buf = np.frombuffer(b"k", np.uint8)
    for agg, vals, want in ((K.AGG_MIN, [0, INT64_MIN, INT64_MAX], INT64_MIN),
                            (K.AGG_MAX, [INT64_MIN, -1, INT64_MIN], -1),
                            (K.AGG_SUM, [INT64_MAX, 1], INT64_MIN)):
        table = K.KeyTable(buf, agg)
        n = len(vals)
        table.add_batch(np.zeros(n, np.int64), np.ones(n, np.int64), np.array(vals, np.int64), n)
        assert run_items(table.partitions(1, 0)[0]) == [(b"k", want)]


@pytest.mark.slow
@pytest.mark.parametrize("reserve", [True, False])
def test_table_grows_from_tiny_to_a_million_keys(tmp_path, monkeypatch, reserve):
    from mapred.kernels import table as KT

    if not reserve:  # entries in ordinary arrays, copied on growth (no big mmap reservation)
        monkeypatch.setattr(KT, "_reserve_entries", lambda: None)
    rng = np.random.default_rng(5)
    ids = rng.integers(0, 1_000_000, 2_000_000)
    ids[:1_000_000] = np.arange(1_000_000)  # every id at least once
    rng.shuffle(ids)
    long = b"a-long-shared-prefix-for-keys-"
    words = [(long + b"%d" % i) if i % 7 == 0 else (b"%x" % (i * 2654435761 % 2**40)) for i in ids]
    data = b" ".join(words)
    path = tmp_path / "words.txt"
    path.write_bytes(data)
    buf = np.memmap(path, dtype=np.uint8, mode="r")
    table = K.KeyTable(buf, K.AGG_SUM, capacity=1)
    assert K.aggregate_scan(SCAN, buf, table, batch=4096) == len(words)
    ref = Counter(words)
    assert len(table) == len(ref) == 1_000_000
    assert 2 * len(table) <= len(table._index) <= 8 * len(table)
    assert (len(table._ent) > 10**8) == reserve
    runs = table.partitions(3, 99)
    got = {}
    for p, run in enumerate(runs):
        keys = [run.key(i) for i in range(len(run.values))]
        assert keys == sorted(keys)
        assert len(set(keys)) == len(keys)
        for k in keys[:: 997]:
            assert mmh3.hash(k, 99, signed=False) % 3 == p
        got.update(zip(keys, run.values.tolist(), strict=True))
    assert got == ref


def test_table_exact_on_hash_tag_collisions():
    """Keys whose 32-bit table tags collide must still be told apart (byte comparison)."""
    from numba import njit

    from mapred.kernels import table as KT

    @njit
    def tags(buf, starts, ln):
        out = np.empty(len(starts), np.int64)
        for i in range(len(starts)):
            out[i] = KT.tag_of(buf, starts[i], ln)
        return out

    # the keys differ in: word 0 only, word 1 only, words 0+1, word 2, word 3, word 4 (the last
    # inline word), only beyond the 40 inline bytes (aligned and not)
    for head, tail in ((b"", b"01234567"), (b"abcdefgh", b""), (b"abcd", b""), (b"x" * 16, b""),
                       (b"x" * 24, b"yz"), (b"x" * 32, b""), (b"x" * 40, b""),
                       (b"x" * 45, b"tail")):
        n = 300_000
        data = b"".join(head + i.to_bytes(8, "little") + tail for i in range(n))
        ln = len(head) + 8 + len(tail)
        buf = np.frombuffer(data, np.uint8)
        t = tags(buf, np.arange(n, dtype=np.int64) * ln, ln)
        order = np.argsort(t, kind="stable")
        dup = np.flatnonzero(t[order][1:] == t[order][:-1])
        assert len(dup) > 0, "no tag collision found: make n larger"
        a, b = int(order[dup[0]]), int(order[dup[0] + 1])
        table = K.KeyTable(buf, K.AGG_SUM)
        starts = np.array([a, b, a], np.int64) * ln
        table.add_batch(starts, starts + ln, np.array([1, 10, 100], np.int64), 3)
        got = dict(run_items(table.partitions(1, 0)[0]))
        assert got == {data[a * ln:(a + 1) * ln]: 101, data[b * ln:(b + 1) * ln]: 10}


def test_sort_many_keys_with_equal_prefixes():
    rng = np.random.default_rng(1)
    keys = set()
    for _ in range(20000):
        pre = [b"", b"abcdef", b"abcdefg", b"abcdefgh", b"abcdefghijklmn", b"\x00" * 9, b"\xff" * 21][
            rng.integers(0, 7)]
        keys.add(pre + bytes(rng.integers(0, 256, rng.integers(0, 12)).astype(np.uint8)))
        keys.add(pre + b"\x00" * int(rng.integers(0, 30)))
    keys_l = sorted(keys)
    data, spans = layout(list(keys))
    buf = np.frombuffer(data, np.uint8)
    table = K.KeyTable(buf, K.AGG_SUM)
    feed(table, [(k, 1) for k in keys], spans, [])
    (run,) = table.partitions(1, 0)
    assert [run.key(i) for i in range(len(run.values))] == keys_l


# --- run files ------------------------------------------------------------------------------------

def test_run_file_round_trip_and_empty(tmp_path):
    for d in ({}, {b"": 5}, {b"a": -1, b"b\tc": 2, b"\xff" * 30: INT64_MIN}):
        path = tmp_path / "r.run"
        run = make_run(d)
        size = K.write_run(path, run, K.AGG_MIN)
        assert size == path.stat().st_size == 24 + 8 * (2 * len(d) + 1) + sum(map(len, d))
        back = K.open_run(path)
        assert run_items(back) == sorted(d.items())
        assert K.read_run_header(path) == (K.AGG_MIN, len(d), sum(map(len, d)))
        assert path.read_bytes()[:4] == b"MRN1"


def test_truncated_or_corrupt_run_files_raise(tmp_path):
    good = tmp_path / "good.run"
    K.write_run(good, make_run({b"alpha": 1, b"beta": 2, b"gamma": 3}), K.AGG_SUM)
    data = good.read_bytes()
    bad = tmp_path / "bad.run"
    for cut in range(len(data)):
        bad.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="bad.run"):
            K.open_run(bad)
    for corrupt in (b"MRN2" + data[4:], data + b"\0", data[:4] + b"\x09" + data[5:],
                    data[:24] + (99).to_bytes(8, "little") + data[32:]):
        bad.write_bytes(corrupt)
        with pytest.raises(ValueError, match="bad.run"):
            K.open_run(bad)
    assert run_items(K.open_run(good)) == [(b"alpha", 1), (b"beta", 2), (b"gamma", 3)]


# --- merge to TSV -------------------------------------------------------------------------------

dict_st = st.dictionaries(key_st, st.integers(-(2**40), 2**40), max_size=25)


@SETTINGS
@given(st.lists(dict_st, max_size=7), st.sampled_from(["sum", "min", "max"]),
       st.sampled_from([64, 100, 1 << 20]), st.booleans())
def test_merge_matches_reference(dicts, agg, buf_size, via_files):
    runs = [make_run(d) for d in dicts]
    if via_files:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            paths = [os.path.join(tmp, f"{i}.run") for i in range(len(runs))]
            for p, r in zip(paths, runs, strict=True):
                K.write_run(p, r, K.AGG_BY_NAME[agg])
            runs = [K.open_run(p) for p in paths]
            out = io.BytesIO()
            keys, nbytes = K.merge_runs_to_tsv(runs, K.AGG_BY_NAME[agg], out, buf_size=buf_size)
            del runs
    else:
        out = io.BytesIO()
        keys, nbytes = K.merge_runs_to_tsv(runs, K.AGG_BY_NAME[agg], out, buf_size=buf_size)
    ref = ref_combine([kv for d in dicts for kv in d.items()], agg)
    assert out.getvalue() == ref_tsv(ref)
    assert (keys, nbytes) == (len(ref), len(out.getvalue()))


def test_merge_edge_cases(tmp_path):
    assert K.merge_runs_to_tsv([], K.AGG_SUM, io.BytesIO()) == (0, 0)
    out = io.BytesIO()
    assert K.merge_runs_to_tsv([make_run({}), make_run({})], K.AGG_SUM, out) == (0, 0)
    assert out.getvalue() == b""
    # a key much longer than the output buffer, values at the int64 limits
    d = {b"k" * 5000 + b"\\\n": INT64_MIN, b"\r": INT64_MAX, b"": 0}
    out = io.BytesIO()
    K.merge_runs_to_tsv([make_run(d), make_run({})], K.AGG_MIN, out, buf_size=64)
    assert out.getvalue() == ref_tsv(d)
    # an unbuffered raw file object (write may be partial in general)
    path = tmp_path / "out.tsv"
    with open(path, "wb", buffering=0) as f:
        K.merge_runs_to_tsv([make_run(d)], K.AGG_MAX, f, buf_size=100)
    assert path.read_bytes() == ref_tsv(d)


def test_merge_hundreds_of_runs(tmp_path):
    rng = np.random.default_rng(3)
    dicts = []
    for i in range(300):
        keys = {b"w%d" % x for x in rng.integers(0, 2000, rng.integers(0, 40))}
        dicts.append({k: int(rng.integers(-1000, 1000)) for k in keys})
    paths = []
    for i, d in enumerate(dicts):
        paths.append(tmp_path / f"{i}.run")
        K.write_run(paths[-1], make_run(d), K.AGG_SUM)
    for agg in ("sum", "min", "max"):
        out = io.BytesIO()
        K.merge_runs_to_tsv([K.open_run(p) for p in paths], K.AGG_BY_NAME[agg], out, buf_size=4096)
        assert out.getvalue() == ref_tsv(ref_combine([kv for d in dicts for kv in d.items()], agg))


def test_end_to_end_word_count(tmp_path):
    data = (b"the cat\tsat on the mat\nthe end \\ back\\slash caf\xc3\xa9 \xff\xfe\r\n" * 50
            + b"x" * 100 + b" tail")
    half = data.index(b" ", len(data) // 2)
    outs = []
    for part, (a, b) in enumerate(((0, half), (half, len(data)))):
        buf = np.frombuffer(data[a:b], np.uint8)
        table = K.KeyTable(buf, K.AGG_SUM)
        K.aggregate_scan(SCAN, buf, table, batch=7)
        for p, run in enumerate(table.partitions(2, 11)):
            path = tmp_path / f"m{part}-p{p}.run"
            K.write_run(path, run, K.AGG_SUM)
            outs.append((p, path))
    tsv = b""
    for p in range(2):
        out = io.BytesIO()
        K.merge_runs_to_tsv([K.open_run(path) for q, path in outs if q == p], K.AGG_SUM, out)
        tsv += out.getvalue()
    want = Counter(data.split())
    lines = tsv.splitlines()
    assert len(lines) == len(want)
    assert sorted(lines) == sorted(ref_tsv(dict(want)).splitlines())


# --- escaping -----------------------------------------------------------------------------------

@given(st.binary(max_size=100))
def test_escape_key_py(key):
    assert K.escape_key_py(key) == ref_escape(key)
