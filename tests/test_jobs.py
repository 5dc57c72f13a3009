"""Every bundled job against an independent, obviously-correct reference on real, awkward text.

The references below read the corpus with their own walker (tests/conftest.py), split lines and
tokens with plain Python and escape keys with their own table: they share no code with mapred.
Each job runs with a tiny shard size (many shards, pieces and packs) and several reducers.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from mrtest import corpus_files, escape, read_output, run_mapred


def lines_of(data: bytes) -> list[bytes]:
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return lines


def run_job(job: str, corpus: Path, out: Path, env: dict[str, str], *extra: str) -> dict:
    run_mapred("run", job, corpus, "-o", out, "--shard-size", "64K", "--reducers", "3",
               *extra, env=env)
    return read_output(out)


def test_wordcount_matches_bytes_split(awkward_corpus, tmp_path, state_env):
    got = run_job("jobs/wordcount.py", awkward_corpus, tmp_path / "out", state_env)
    want = Counter()
    for _, data in corpus_files(awkward_corpus):
        want.update(data.split())  # files never share a token: count per file
    assert got == {escape(k): str(v).encode() for k, v in want.items()}
    assert b"skipped" not in got  # hidden files are not input


def test_wordcount_bundled_name_on_gzip_dictionary(real_text, tmp_path, state_env):
    gcide = real_text[1]  # dictzip is gzip: read transparently, one shard
    got = run_job("wordcount", gcide, tmp_path / "out", state_env)
    import gzip

    want = Counter(gzip.decompress(gcide.read_bytes()).split())
    assert len(want) > 100_000
    assert got == {escape(k): str(v).encode() for k, v in want.items()}


def test_grep_matches_re_reference(awkward_corpus, tmp_path, state_env):
    pattern = r"error|[Ll]ove"
    got = run_job("grep", awkward_corpus, tmp_path / "out", state_env, "-p",
                  f"pattern={pattern}")
    rx = re.compile(pattern.encode())
    want = Counter(line for _, data in corpus_files(awkward_corpus)
                   for line in lines_of(data) if rx.search(line))
    assert len(want) > 20
    assert got == {escape(k): str(v).encode() for k, v in want.items()}


def test_grep_agrees_with_grep_sort_uniq(real_text, tmp_path, state_env):
    import subprocess

    fortunes = real_text[0]
    got = run_job("grep", fortunes, tmp_path / "out", state_env, "-p", "pattern=the")
    shell = subprocess.run(f"LC_ALL=C grep -a -E the '{fortunes}' | LC_ALL=C sort | uniq -c",
                           shell=True, capture_output=True, check=True).stdout
    want = {}
    for row in lines_of(shell):
        count, _, line = row.lstrip().partition(b" ")
        want[escape(line)] = count
    assert got == want


def test_ngrams_matches_reference(awkward_corpus, tmp_path, state_env):
    got = run_job("ngrams", awkward_corpus, tmp_path / "out", state_env, "-p", "n=3")
    want = Counter()
    for _, data in corpus_files(awkward_corpus):
        for line in lines_of(data):
            words = line.split()
            want.update(b" ".join(words[i:i + 3]) for i in range(len(words) - 2))
    assert got == {escape(k): str(v).encode() for k, v in want.items()}


def test_invindex_matches_reference(awkward_corpus, tmp_path, state_env):
    got = run_job("invindex", awkward_corpus, tmp_path / "out", state_env)
    want = defaultdict(set)
    for name, data in corpus_files(awkward_corpus):
        for word in data.split():
            want[word].add(name.encode("utf-8", "surrogateescape"))
    expected = {escape(w): b"\t".join(escape(f) for f in sorted(files))
                for w, files in want.items()}
    assert got == expected
    assert got[b"injection"] == b"$(touch PWNED).txt"
    assert got[b"literal"] == b"backslash\\\\name.txt"
    assert not (awkward_corpus / "PWNED").exists() and not Path("PWNED").exists()


def test_ctx_gives_each_record_its_file_and_byte_offset(awkward_corpus, tmp_path, state_env):
    got = run_job("tests/jobs/offsets.py", awkward_corpus, tmp_path / "out", state_env)
    want = {}
    for name, data in corpus_files(awkward_corpus):
        at = 0
        for line in lines_of(data):  # a record starts where the previous one's newline ended
            key = f"{name}:{at}".encode("utf-8", "surrogateescape")
            want[escape(key)] = str(len(line)).encode()
            at += len(line) + 1
    assert len(want) > 1000
    assert got == want


def test_logfield_counts_a_field(tmp_path, state_env):
    log = tmp_path / "access.log"
    rows = []
    for i in range(5000):
        ip = f"198.18.{i % 7}.{i % 13}"
        status = [200, 404, 500, 301][i % 4]
        rows.append(f'{ip} - - [27/Nov/2026:10:00:{i % 60:02d}] "GET /p{i % 11} HTTP/1.1" '
                    f"{status} {i}")
    rows.append("short")  # fewer fields: skipped for field 8
    log.write_text("\n".join(rows))  # no final newline
    for field in ("0", "8"):
        out = tmp_path / f"out{field}"
        got = run_job("jobs/logfield.py", log, out, state_env, "-p", f"field={field}")
        want = Counter(r.split()[int(field)].encode() for r in rows
                       if len(r.split()) > int(field))
        assert got == {k: str(v).encode() for k, v in want.items()}


@pytest.mark.parametrize("job,params", [("wordcount", []), ("ngrams", ["-p", "n=2"])])
def test_tiny_memory_budget_spills_and_gives_the_same_output(job, params, dictionary_sample,
                                                             tmp_path, state_env):
    """A key set far larger than the budget completes: maps spill sorted runs, reducers merge."""
    import json

    fortunes = dictionary_sample
    hosts = tmp_path / "hosts.toml"
    hosts.write_text('[[host]]\nname = "small"\naddress = "local"\ncores = 2\n'
                     'memory = "1M"\n')
    run_mapred("run", job, fortunes, "-o", tmp_path / "roomy", "--reducers", "3", *params,
               env=state_env)
    roomy = read_output(tmp_path / "roomy")
    run_mapred("run", job, fortunes, "-o", tmp_path / "tight", "--hosts", hosts,
               "--reducers", "3", *params, env=state_env)
    assert read_output(tmp_path / "tight") == roomy
    summaries = list(Path(state_env["XDG_STATE_HOME"]).glob("mapred/runs/*/summary.json"))
    spills = [json.loads(p.read_text())["counters"]["spills"] for p in summaries]
    assert max(spills) >= 2 * min(spills), spills  # the tight run spilled several times per task
