"""A reduce attempt that loses to its backup while its part file is still on the way.

The run is real (the real Runner, real local workers, a real corpus); the one stand-in is the
transport's ``collect``, which behaves like the SSH transport's rsync: the part file stays on the
"host" (the scratch dir) until collected, and the collect of the first attempt of partition 1 is
slow, so that attempt gets a speculative backup that commits while that collect is in flight; the
collects of partition 2 are slower still, so the run is not over when that late collect lands.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

from mrtest import read_output

from mapred import job as jobmod
from mapred import paths
from mapred.cli import main as cli
from mapred.cluster.transport import LocalTransport
from mapred.engine.collect import PartFiles
from mapred.engine.runner import RunConfig, Runner

SLOW = "r00001.0"  # the first attempt of partition 1


class RsyncLikeTransport(LocalTransport):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.late = threading.Event()

    def reduce_output(self, staging: Path, partition: int, attempt: str) -> str:
        out = Path(self.scratch) / "out"
        out.mkdir(exist_ok=True)
        return str(out / paths.reduce_tmp_name(partition, attempt))

    def collect(self, remote: str, target: Path) -> None:
        data = Path(remote).read_bytes()  # rsync has the file open: removing it changes nothing
        if target.name == paths.reduce_tmp_name(1, SLOW):
            time.sleep(4.0)  # long enough for a backup to start (after 2 s) and commit
            self.late.set()
        elif target.name.startswith(".part-00002."):
            time.sleep(8.0)  # the run goes on after the late collect above
        target.write_bytes(data)


def test_a_cancelled_reduces_late_collect_never_lands_in_the_output(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(4):
        (corpus / f"f{i}.txt").write_bytes(b"".join(b"w%d x y\n" % j for j in range(2000)))
    state = tmp_path / "state"
    (state / "logs").mkdir(parents=True)
    transport = RsyncLikeTransport("here", 3, state / "logs", cli._worker_env(),
                                   scratch_root=state / "scratch")
    cfg = RunConfig(job=jobmod.resolve("wordcount"), corpus=corpus, output=tmp_path / "out",
                    state=state, reducers=3)
    summary = Runner(cfg, [transport]).execute()
    assert transport.late.is_set()  # the slow collect did end, after its attempt was cancelled
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["_SUCCESS", "part-00000", "part-00001", "part-00002"], names
    expected: dict[bytes, bytes] = {}
    for f in sorted(corpus.iterdir()):
        for word in f.read_bytes().split():
            expected[word] = str(int(expected.get(word, b"0")) + 1).encode()
    assert read_output(tmp_path / "out") == expected
    events = [json.loads(ln) for ln in
              (paths.run_dir(state, summary.run_id) / "events.jsonl").read_text().splitlines()]
    ends = {e["attempt"]: e["outcome"] for e in events if e["event"] == "task_end"}
    assert ends[SLOW] == "killed" and ends["r00001.1"] == "ok", ends  # it lost to its backup
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_settle_sweeps_what_fenced_attempts_left_and_keeps_part_files(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    staging = tmp_path / "staging"
    staging.mkdir()
    for name in ("part-00000", "_SUCCESS", ".part-00001.r00001.0.tmp",
                 "..part-00001.r00001.0.tmp.Xy12Zq"):
        (staging / name).write_text("x")
    with ThreadPoolExecutor(1) as io:
        PartFiles(staging, io, lambda a, m: None).settle(timeout=1)
    assert sorted(p.name for p in staging.iterdir()) == ["_SUCCESS", "part-00000"]
    shutil.rmtree(staging)
