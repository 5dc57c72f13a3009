"""``mapred run --hosts`` on the real test LAN: same bytes as the local run, nothing left behind.

Every run here goes through the real CLI, real sshd hosts (tests/lanlib.py), rsync over OpenSSH,
per-job rsync daemons for the shuffle; the local run of the same job is the reference.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from lanlib import WORKDIR, Lan
from mrtest import run_mapred as mapred

ROOT = Path(__file__).resolve().parents[2]
HOSTILE = b"-rf 'q' \"dq\" $(touch PWNED) `touch PWNED` ;touch PWNED; \xff\xfe\x80 .txt"
JOBS = [
    ("wordcount", []),
    ("grep", ["-p", "pattern=error|e[a-z]+r"]),
    ("ngrams", ["-p", "n=2"]),
    ("invindex", []),
    (str(ROOT / "jobs" / "logfield.py"), ["-p", "field=1"]),
    (str(ROOT / "tests" / "jobs" / "offsets.py"), []),  # ctx.offset is in the corpus file
]


def parts(out: Path) -> dict[str, bytes]:
    assert (out / "_SUCCESS").exists(), sorted(os.listdir(out))
    return {p.name: p.read_bytes() for p in sorted(out.glob("part-*"))}


def host_leftovers(lan: Lan) -> dict[str, list[str]]:
    """Per host: processes of ours and run scratch dirs still there."""
    out = {}
    for h in lan.hosts:
        procs = [_cmdline(p) for p in h.pids()]
        runs = h.run(f"ls -A {WORKDIR}/runs 2>/dev/null").stdout.split()
        if procs or runs:
            out[h.name] = procs + [f"runs/{r}" for r in runs]
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return str(pid)


def wait_clean(lan: Lan, timeout: float = 15) -> dict[str, list[str]]:
    deadline = time.monotonic() + timeout
    while (left := host_leftovers(lan)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def listening(lan: Lan) -> dict[str, list[str]]:
    """TCP listeners on every host other than sshd's port 22."""
    out = {}
    for h in lan.hosts:
        lines = h.run("ss -Hltn").stdout.splitlines()
        extra = [ln for ln in lines if not re.search(r":22\s", ln)]
        if extra:
            out[h.name] = extra
    return out


def find_pwned(lan: Lan, *local_dirs: Path) -> list[str]:
    found = []
    for h in lan.hosts:  # on a host only these are writable: the root fs is read-only
        cp = h.run(f"find /root /tmp /var/tmp /run /dev/shm {WORKDIR} -name 'PWNED*'")
        found += [f"{h.name}:{p}" for p in cp.stdout.split()]
    for d in local_dirs:
        found += [str(p) for p in d.rglob("PWNED*")]
    return found + [str(p) for p in ROOT.glob("PWNED*")]


def random_corpus(root: Path, mbytes: float, seed: int, files: int = 4) -> Path:
    """Text of random words (unique per seed, so no host has it cached yet)."""
    rng = random.Random(seed)
    words = [f"w{seed}x{i}" for i in range(5000)] + ["error", "the", "and"]
    root.mkdir(parents=True)
    per = int(mbytes * (1 << 20) / files)
    for f in range(files):
        lines, size = [], 0
        while size < per:
            line = " ".join(rng.choices(words, k=12)) + "\n"
            lines.append(line)
            size += len(line)
        (root / f"part{f}.txt").write_text("".join(lines))
    return root


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"XDG_STATE_HOME": str(tmp_path / "state")}


@pytest.fixture(scope="module")
def hosts(lan: Lan, lan_mapred: str, lan_hosts_toml: Path) -> Path:
    return lan_hosts_toml


# --------------------------------------------------------------------------- same bytes


@pytest.mark.parametrize("job,params", JOBS, ids=[Path(j).stem for j, _ in JOBS])
def test_bundled_job_on_three_hosts_matches_the_local_run(
        job: str, params: list[str], hosts: Path, lan: Lan, awkward_corpus: Path,
        tmp_path: Path, env: dict[str, str]) -> None:
    common = [job, awkward_corpus, *params, "--reducers", "5", "--shard-size", "256K"]
    mapred("run", *common, "-o", tmp_path / "local", env=env)
    mapred("run", *common, "-o", tmp_path / "lan", "--hosts", hosts, env=env)
    assert parts(tmp_path / "lan") == parts(tmp_path / "local")
    assert wait_clean(lan) == {}
    assert listening(lan) == {}


def test_relay_shuffle_matches_the_local_run(hosts: Path, lan: Lan, awkward_corpus: Path,
                                             tmp_path: Path, env: dict[str, str]) -> None:
    relay = tmp_path / "relay.toml"
    relay.write_text('shuffle = "relay"\n' + hosts.read_text())
    common = ["wordcount", awkward_corpus, "--reducers", "4", "--shard-size", "512K"]
    mapred("run", *common, "-o", tmp_path / "local", env=env)
    mapred("run", *common, "-o", tmp_path / "lan", "--hosts", relay, env=env)
    assert parts(tmp_path / "lan") == parts(tmp_path / "local")
    assert wait_clean(lan) == {}


def test_hostile_file_names_are_data_not_commands(hosts: Path, lan: Lan, tmp_path: Path,
                                                  env: dict[str, str]) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    names = [HOSTILE, b"-n", b"--rsh=touch PWNED", b"a;touch PWNED;b", b"x\ny newline",
             b"sp ace 'and' \"quotes\"", b"$(touch PWNED)", b"`touch PWNED`", b"\xe9t\xe9"]
    for i, name in enumerate(names):
        with open(os.path.join(bytes(corpus), name), "wb") as f:
            f.write(b"word%d error $(touch PWNED) ;touch PWNED\n" % i * (i + 1))
    common = ["invindex", corpus, "--reducers", "3", "--shard-size", "64"]
    mapred("run", *common, "-o", tmp_path / "local", env=env)
    mapred("run", *common, "-o", tmp_path / "lan", "--hosts", hosts, env=env)
    assert parts(tmp_path / "lan") == parts(tmp_path / "local")
    assert find_pwned(lan, tmp_path) == []


def test_the_report_of_a_lan_run_shows_its_transfers_and_each_hosts_address(
        hosts: Path, lan: Lan, tmp_path: Path, env: dict[str, str]) -> None:
    """Shards sent over rsync (or copied host to host), reduce inputs fetched from the other
    hosts, map outputs checked and part files collected are journaled per attempt and drawn;
    plan.json and the hosts table give each host's address, not its name again."""
    from mapred.history.report import render_report
    from mapred.history.runs import load_run_dir

    corpus = random_corpus(tmp_path / "corpus", 2, seed=os.getpid() + 7)  # cached nowhere
    size = sum(p.stat().st_size for p in corpus.iterdir())
    mapred("run", "wordcount", corpus, "-o", tmp_path / "out", "--hosts", hosts,
           "--shard-size", "256K", "--reducers", "3", "--no-speculation", env=env)
    (run_dir,) = (tmp_path / "state" / "mapred" / "runs").iterdir()
    plan = json.loads((run_dir / "plan.json").read_text())
    assert {h["name"]: h["address"] for h in plan["hosts"]} == {h.name: h.address
                                                                for h in lan.hosts}
    run = load_run_dir(run_dir)
    maps = [a for a in run.attempts if a.kind == "map"]
    stages = [a.staging for a in maps if a.staging is not None]
    assert len(stages) == len(maps) and {t.how for t in stages} <= {"sent", "copied"}, stages
    assert sum(t.nbytes or 0 for t in stages if t.how == "sent") >= size * 0.9, stages
    assert all(t.end > t.start for t in stages)  # rsync takes real time
    assert all(t.peer in {h.name for h in lan.hosts} for t in stages if t.how == "copied")
    assert all([t.kind for t in a.transfers] == ["stage", "collect"] for a in maps)  # checked
    reduces = [a for a in run.attempts if a.kind == "reduce"]
    assert len(reduces) == 3 and all(a.transfers[-1].kind == "collect" for a in reduces)
    for a in reduces:  # (on a cold numba cache one host may map everything alone)
        fetched = [t for t in a.transfers if t.kind == "fetch"]
        if any(m.host != a.host for m in maps):
            assert len(fetched) == 1 and fetched[0].nbytes and fetched[0].end > a.start, a
        else:
            assert fetched == [], a
    assert any(m.host != r.host for m in maps for r in reduces), "no fetch was tested"
    page = render_report(run)
    for h in lan.hosts:
        assert f"<tr><td>{h.name}</td><td>{h.address}</td>" in page
    assert "input sent to the host: " in page and "map outputs fetched from other hosts: " in page
    assert "worker starting on" in page
    assert wait_clean(lan) == {}


# --------------------------------------------------------------------------- refusals


def test_unknown_host_key_is_refused_before_anything_is_sent(
        lan: Lan, lan_mapred: str, awkward_corpus: Path, tmp_path: Path,
        env: dict[str, str]) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    workdir = f"{WORKDIR}/fresh-{uuid.uuid4().hex[:8]}"
    hosts = lan.write_hosts_toml(tmp_path / "hosts.toml", known_hosts=str(empty),
                                 workdir=workdir)
    proc = mapred("run", "wordcount", awkward_corpus, "-o", tmp_path / "out", "--hosts", hosts,
                  env=env, check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    key = lan.hosts[0].dir / "etc-ssh" / "ssh_host_ed25519_key.pub"
    fp = subprocess.run(["ssh-keygen", "-lf", key], capture_output=True, text=True).stdout.split()[1]
    assert "unknown host key" in err and fp in err, err
    assert not (tmp_path / "out").exists()
    for h in lan.hosts:
        assert h.run(["test", "-e", workdir]).returncode != 0, f"{h.name} got {workdir}"
    assert empty.read_text() == ""


def test_changed_host_key_is_refused(lan: Lan, lan_mapred: str, awkward_corpus: Path,
                                     tmp_path: Path, env: dict[str, str]) -> None:
    h1, h2 = lan["h1"], lan["h2"]
    lines = lan.known_hosts.read_text().splitlines()
    h2_key = next(ln for ln in lines if ln.startswith(h2.address + " "))
    wrong = tmp_path / "known_hosts"
    wrong.write_text(h1.address + h2_key[len(h2.address):] + "\n")
    hosts = lan.write_hosts_toml(tmp_path / "hosts.toml", known_hosts=str(wrong))
    doc = hosts.read_text().split("[[host]]")
    hosts.write_text(doc[0] + "[[host]]" + doc[1])  # h1 only
    def fp(h: Any) -> str:
        key = h.dir / "etc-ssh" / "ssh_host_ed25519_key.pub"
        return subprocess.run(["ssh-keygen", "-lf", key], capture_output=True, text=True,
                              check=True).stdout.split()[1]

    for accept in ([], ["--accept-new-host-keys"]):  # a changed key is never accepted
        proc = mapred("run", "wordcount", awkward_corpus, "-o", tmp_path / "out", "--hosts",
                      hosts, *accept, env=env, check=False)
        err = proc.stderr.decode()
        assert proc.returncode == 2 and "host key CHANGED" in err, err
        assert f"it presents ssh-ed25519 key {fp(h1)}, known_hosts has {fp(h2)}" in err, err
        assert f"remove the old key with ssh-keygen -f {wrong} -R {h1.address})" in err, err
        assert not (tmp_path / "out").exists()
        assert wrong.read_text() == h1.address + h2_key[len(h2.address):] + "\n"


def test_accept_new_host_keys_records_the_key(lan: Lan, lan_mapred: str, tmp_path: Path,
                                              env: dict[str, str]) -> None:
    known = tmp_path / "known_hosts"
    hosts = lan.write_hosts_toml(tmp_path / "hosts.toml", known_hosts=str(known))
    proc = mapred("hosts", "check", "--hosts", hosts, env=env, check=False)
    assert proc.returncode == 3 and proc.stdout.decode().count("unknown host key") == 3
    proc = mapred("hosts", "check", "--hosts", hosts, "--accept-new-host-keys", env=env)
    assert sorted(ln.split()[0] for ln in known.read_text().splitlines()) == \
        sorted(h.address for h in lan.hosts)
    assert mapred("hosts", "check", "--hosts", hosts, env=env).returncode == 0


def test_accept_new_into_dev_null_is_refused(lan: Lan, lan_mapred: str, tmp_path: Path,
                                             env: dict[str, str]) -> None:
    hosts = lan.write_hosts_toml(tmp_path / "hosts.toml", known_hosts=os.devnull)
    for cmd, code in ((["run", "wordcount", ROOT / "README.md", "-o", tmp_path / "out"], 2),
                      (["hosts", "check"], 3)):  # check: every host refused
        proc = mapred(*cmd, "--hosts", hosts, "--accept-new-host-keys", env=env, check=False)
        err = (proc.stderr + proc.stdout).decode()
        assert proc.returncode == code, err
        assert f"--accept-new-host-keys refused, known_hosts {os.devnull} is not a regular " \
            "file" in err, err
    assert not (tmp_path / "out").exists()


def test_marker_lines_in_known_hosts_are_honoured(lan: Lan, lan_mapred: str, tmp_path: Path,
                                                  env: dict[str, str]) -> None:
    h1, h2 = lan["h1"], lan["h2"]
    lines = lan.known_hosts.read_text().splitlines()
    h2_key = next(ln for ln in lines if ln.startswith(h2.address + " ")).split(None, 1)[1]
    known = tmp_path / "known_hosts"
    known.write_text(f"@cert-authority *.lan {h2_key}\n" + "\n".join(lines) + "\n"
                     f"@revoked * {h2_key}\n")
    hosts = lan.write_hosts_toml(tmp_path / "hosts.toml", known_hosts=str(known))
    proc = mapred("hosts", "check", "--hosts", hosts, env=env, check=False)
    out = proc.stdout.decode()
    assert proc.returncode == 1, out  # h2 refused, the others usable
    assert "REVOKED" in out and f"{known} line {len(lines) + 2}" in out, out
    assert out.count("REVOKED") == 1 and h1.name in out, out


def test_a_workdir_others_can_write_is_refused_and_the_other_hosts_carry_on(
        lan: Lan, lan_mapred: str, awkward_corpus: Path, tmp_path: Path,
        env: dict[str, str]) -> None:
    workdir = f"{WORKDIR}/shared-{uuid.uuid4().hex[:8]}"
    h1 = lan["h1"]
    h1.run(["mkdir", "-m", "0777", workdir], check=True)
    hosts = lan.write_hosts_toml(tmp_path / "hosts.toml", workdir=workdir)
    proc = mapred("hosts", "check", "--hosts", hosts, env=env, check=False)
    out = proc.stdout.decode()
    line = next(ln for ln in out.splitlines() if h1.name in ln)
    assert proc.returncode == 1, out
    assert f"workdir refused: {workdir} is writable by group and others (mode 0777)" in line, out
    common = ["wordcount", awkward_corpus, "--reducers", "3"]
    mapred("run", *common, "-o", tmp_path / "local", env=env)
    proc = mapred("run", *common, "-o", tmp_path / "lan", "--hosts", hosts, env=env)
    assert f"{workdir} is writable by group and others" in proc.stderr.decode()  # warned
    assert parts(tmp_path / "lan") == parts(tmp_path / "local")
    assert h1.run(["ls", "-A", workdir]).stdout.strip() == ""  # nothing was put there


def test_an_unwritable_workdir_is_refused_by_check_and_run(
        lan: Lan, lan_mapred: str, awkward_corpus: Path, tmp_path: Path,
        env: dict[str, str]) -> None:
    workdir = "/opt/mapred-nowhere/wd"  # the hosts' root filesystem is read-only
    hosts = lan.write_hosts_toml(tmp_path / "hosts.toml", workdir=workdir)
    proc = mapred("hosts", "check", "--hosts", hosts, env=env, check=False)
    out = proc.stdout.decode()
    assert proc.returncode == 3, out
    assert out.count(f"workdir refused: /opt, where {workdir} would be created, is not "
                     "writable") == 3, out
    proc = mapred("run", "wordcount", awkward_corpus, "-o", tmp_path / "out", "--hosts", hosts,
                  env=env, check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 3, err
    assert f"/opt, where {workdir} would be created, is not writable" in err, err
    assert "Is mapred installed" not in err and not (tmp_path / "out").exists()


def test_a_job_module_changed_on_a_host_is_shipped_again(
        lan: Lan, lan_mapred: str, hosts: Path, awkward_corpus: Path, tmp_path: Path,
        env: dict[str, str]) -> None:
    job = tmp_path / "myjob.py"
    job.write_bytes((ROOT / "jobs" / "wordcount.py").read_bytes())
    common = [job, awkward_corpus, "--reducers", "2"]
    mapred("run", *common, "-o", tmp_path / "first", "--hosts", hosts, env=env)
    h1 = lan["h1"]
    found = h1.run(["sh", "-c", f"ls {WORKDIR}/jobs/*/myjob.py"]).stdout.split()
    assert found, "the job module was not shipped to h1"
    planted = 'import os\nos.makedirs("/tmp/planted", exist_ok=True)\n'
    for f in found:
        h1.run(["sh", "-c", f"cat >> {f}"], input=planted, check=True)
    mapred("run", *common, "-o", tmp_path / "second", "--hosts", hosts, env=env)
    assert parts(tmp_path / "second") == parts(tmp_path / "first")
    assert h1.run(["test", "-e", "/tmp/planted"]).returncode != 0, "planted code ran"
    for f in found:
        assert planted not in h1.run(["cat", f]).stdout


def test_a_job_with_its_own_modules_is_shipped_whole_and_errors_name_local_files(
        lan: Lan, lan_mapred: str, hosts: Path, awkward_corpus: Path, tmp_path: Path,
        env: dict[str, str]) -> None:
    """`from helpers import ...` and a package beside the job reach every host; a helper's
    traceback names the file on this machine, not its copy on the host."""
    root = tmp_path / "my jobs"
    (root / "textpkg").mkdir(parents=True)
    (root / "helpers.py").write_text("def words(line):\n    return line.split()\n")
    (root / "textpkg" / "__init__.py").write_text("")
    (root / "textpkg" / "norm.py").write_text(
        "def lower(w):\n    if w == b'BOOM':\n        raise ValueError('boom word')\n"
        "    return w.lower()\n")
    job = root / "multi.py"
    job.write_text("from helpers import words\nfrom textpkg.norm import lower\n"
                   "def mapper(line):\n    for w in words(line):\n        yield lower(w), 1\n"
                   "def reducer(key, values):\n    yield key, sum(values)\n")
    common = [job, awkward_corpus, "--reducers", "3", "--shard-size", "256K"]
    mapred("run", *common, "-o", tmp_path / "local", env=env)
    mapred("run", *common, "-o", tmp_path / "lan", "--hosts", hosts, env=env)
    assert parts(tmp_path / "lan") == parts(tmp_path / "local")
    for h in lan.hosts:  # each host holds the job's directory, manifest last
        listing = h.run(["sh", "-c", f"cd {WORKDIR}/jobs && ls */textpkg/norm.py */MANIFEST.json"])
        assert listing.returncode == 0, listing.stderr
    boom = tmp_path / "boom"
    boom.mkdir()
    (boom / "x.txt").write_bytes(b"fine words\nBOOM\n")
    proc = mapred("run", job, boom, "-o", tmp_path / "failed", "--hosts", hosts,
                  "--max-attempts", "1", env=env, check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert f'File "{root / "textpkg" / "norm.py"}", line 3, in lower' in err, err
    assert f"{WORKDIR}/jobs" not in err, err


# --------------------------------------------------------------------------- cleanup


def _start_long_run(hosts: Path, corpus: Path, out: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "mapred.cli.main", "run", "grep", corpus, "-p", "pattern=e.*r.*o",
         "-o", out, "--hosts", hosts, "--shard-size", "512K", "-q"],
        cwd=ROOT, env={**os.environ, **env}, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_mapping(lan: Lan, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        busy = [h for h in lan.hosts if any("mapred.worker.main" in _cmdline(p) for p in h.pids())]
        if len(busy) == len(lan.hosts):
            time.sleep(1.0)  # into the map phase
            return
        time.sleep(0.1)
    raise AssertionError("workers never started on every host")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill-9"])
def test_interrupt_leaves_no_process_and_no_scratch(sig: int, hosts: Path, lan: Lan,
                                                    tmp_path: Path, env: dict[str, str]) -> None:
    corpus = random_corpus(tmp_path / "corpus", 24, seed=int(sig) * 1000 + os.getpid())
    proc = _start_long_run(hosts, corpus, tmp_path / "out", env)
    try:
        _wait_mapping(lan, proc)
        proc.send_signal(sig)
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    if sig == signal.SIGINT:
        assert code == 130, proc.stderr.read().decode() if proc.stderr else ""
    assert not (tmp_path / "out").exists()
    assert wait_clean(lan) == {}
    assert listening(lan) == {}


def _daemon_of(h: Any, timeout: float = 60) -> tuple[int, str]:
    """(port, password) of the run's shuffle daemon on host h, once it runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in h.pids():
            argv = _cmdline(p).split()
            if "--daemon" in argv:
                port = next(int(a.split("=", 1)[1]) for a in argv if a.startswith("--port="))
                conf = next(a.split("=", 1)[1] for a in argv if a.startswith("--config="))
                password = h.run(["cat", str(Path(conf).parent / "password")], check=True)
                return port, password.stdout.strip()
        time.sleep(0.1)
    raise AssertionError(f"no shuffle daemon on {h.name}")


def test_the_shuffle_daemons_accept_only_the_hosts_of_the_run(
        lan: Lan, lan_mapred: str, tmp_path: Path, env: dict[str, str]) -> None:
    full = lan.write_hosts_toml(tmp_path / "all.toml").read_text().split("\n\n[[host]]")
    assert len(full) == 4
    two = tmp_path / "two.toml"  # h1 and h2 only; h3 is a machine on the LAN, not in the run
    two.write_text("\n\n[[host]]".join(full[:3]))
    corpus = random_corpus(tmp_path / "corpus", 24, seed=os.getpid())
    proc = _start_long_run(two, corpus, tmp_path / "out", env)
    h1, h2, h3 = lan["h1"], lan["h2"], lan["h3"]
    try:
        port, password = _daemon_of(h1)

        def list_map_module(h: Any) -> subprocess.CompletedProcess:
            return h.run(["env", f"RSYNC_PASSWORD={password}", "rsync", "--contimeout=10",
                          f"rsync://mapred@{h1.address}:{port}/map/"])

        seen = list_map_module(h3)  # the right password, from a host outside the run: rsync
        assert seen.returncode == 5, seen  # hides a module a host may not reach ("Unknown")
        assert "access denied" in seen.stderr or "Unknown module 'map'" in seen.stderr, seen
        seen = list_map_module(h2)  # the same request from a host of the run
        assert seen.returncode == 0, seen.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    assert wait_clean(lan) == {}


# --------------------------------------------------------------------------- cache


def _bridge_tx(lan: Lan) -> int:
    out = subprocess.run(["ip", "-s", "-j", "link", "show", lan.bridge], capture_output=True,
                         text=True, check=True).stdout
    return int(json.loads(out)[0]["stats64"]["tx"]["bytes"])


SHARD_STATS = re.compile(rb"host (\S+): shards sent (\d+) \((\d+) bytes\), already cached (\d+), "
                         rb"copied from another host (\d+)")


def shard_stats(stderr: bytes) -> dict[str, dict[str, int]]:
    """Per host, from its stats line (-v): shards sent, bytes sent, cached, copied from a peer."""
    return {m[1].decode(): dict(zip(("sent", "bytes", "cached", "copied"), map(int, m.groups()[1:]),
                                    strict=True))
            for m in SHARD_STATS.finditer(stderr)}


def test_rerun_on_unchanged_corpus_sends_and_copies_no_shard(hosts: Path, lan: Lan,
                                                             tmp_path: Path,
                                                             env: dict[str, str]) -> None:
    """The second run maps every shard on the host whose cache holds it: nothing is sent from
    this machine or copied host to host, and the output is the same.

    One worker per host, six shards, each mapped in 4 s (tests/jobs/slowmap.py), so that no host
    runs out of shards while another still has some waiting (it would then rightly take one
    rather than idle, a copy this test is not about): both runs give each host two. A placement
    blind to the caches gives shards to hosts in the order they come free, which varies."""
    one = tmp_path / "hosts.toml"
    one.write_text(hosts.read_text().replace("[defaults]\n", "[defaults]\ncores = 1\n"))
    job = [str(ROOT / "tests" / "jobs" / "slowmap.py"), "-p", "seconds=4"]
    warm = tmp_path / "warm"  # compile the kernels on every host (else one host maps it all)
    warm.mkdir()
    (warm / "w.txt").write_text("warm up\n")
    mapred("run", *job, warm, "-o", tmp_path / "warm-out", "--hosts", one, env=env)
    corpus = random_corpus(tmp_path / "corpus", 3, seed=os.getpid(), files=6)
    for f in corpus.iterdir():
        with f.open("a") as out:
            out.write("SLOW\n")
    size = sum(p.stat().st_size for p in corpus.iterdir())
    runs = []
    for run in ("first", "again"):
        before = _bridge_tx(lan)
        # (one shard per file; no backups for stragglers: a backup runs on a second host)
        proc = mapred("run", *job, corpus, "-o", tmp_path / run, "--hosts", one,
                      "--shard-size", "800K", "--no-speculation", "-v", env=env)
        runs.append((_bridge_tx(lan) - before, shard_stats(proc.stderr)))
    (wire1, first), (wire2, again) = runs
    names = sorted(h.name for h in lan.hosts)
    assert sorted(first) == sorted(again) == names, runs
    assert sum(s["bytes"] for s in first.values()) >= size and wire1 >= size, runs
    assert [first[h]["sent"] + first[h]["copied"] for h in names] == [2, 2, 2], runs
    assert [(again[h]["sent"], again[h]["copied"], again[h]["cached"]) for h in names] == \
        [(0, 0, 2)] * 3, runs
    assert wire2 < min(p.stat().st_size for p in corpus.iterdir()), runs  # not one shard
    assert parts(tmp_path / "first") == parts(tmp_path / "again")


# --------------------------------------------------------------------------- hosts check


def test_hosts_check_reports_every_host(hosts: Path, lan: Lan, tmp_path: Path,
                                        env: dict[str, str]) -> None:
    proc = mapred("hosts", "check", "--hosts", hosts, env=env)
    lines = proc.stdout.decode().splitlines()
    assert [ln.split()[0] for ln in lines] == [h.name for h in lan.hosts]
    from mapred import __version__

    for line, h in zip(lines, lan.hosts):
        assert line.split()[1:3] == [h.address, "ok"], line
        for part in ("key ssh-ed25519 SHA256:", "python 3.", f"mapred {__version__}", "numba ",
                     "mmh3 ", "rsync ", "cores ", "GiB free"):
            assert part in line, (part, line)

    broken = tmp_path / "broken.toml"
    text = hosts.read_text()
    head, first, rest = text.partition('name = "h1"')
    broken.write_text(head + first + '\npython = "/nonexistent/python3"' + rest)
    proc = mapred("hosts", "check", "--hosts", broken, env=env, check=False)
    out = proc.stdout.decode().splitlines()
    assert proc.returncode == 1, proc.stdout
    assert "FAIL" in out[0] and "/nonexistent/python3" in out[0] and "ok" in out[1]

    none = tmp_path / "none.toml"
    none.write_text(text.replace(f'python = "{lan.python}"', 'python = "/nonexistent/py"'))
    proc = mapred("hosts", "check", "--hosts", none, env=env, check=False)
    assert proc.returncode == 3 and proc.stdout.decode().count("FAIL") == 3


def _cache_dirs(host: Any) -> dict[str, int]:
    """The host's numba cache directories of mapred, with their number of index files."""
    out = host.run("find /root/.cache/mapred -name '*.nbi' 2>/dev/null; true", check=True).stdout
    dirs: dict[str, int] = {}
    for line in out.split():
        d = line.rsplit("/", 1)[0]
        dirs[d] = dirs.get(d, 0) + 1
    return dirs


def test_hosts_setup_installs_a_working_venv_on_every_host_at_once(
        lan: Lan, lan_mapred: str, awkward_corpus: Path, tmp_path: Path,
        env: dict[str, str]) -> None:
    """From a bare Debian python3 on three hosts at once: wheels downloaded here once, shipped,
    installed offline there; its advice, followed, makes check and a run work; run again, it
    changes nothing."""
    workdir = f"{WORKDIR}/setup-{uuid.uuid4().hex[:8]}"
    hosts = lan.write_hosts_toml(tmp_path / "hosts.toml", python="/usr/bin/python3",
                                 workdir=workdir)
    h2_line = f'address = "{lan["h2"].address}"\n'
    hosts.write_text(hosts.read_text().replace(  # h2 names its python: it overrides [defaults]
        h2_line, h2_line + 'python = "/usr/bin/python3"\n'))
    before = _cache_dirs(lan["h1"])
    proc = mapred("hosts", "setup", "--hosts", hosts, env=env, timeout=1200)
    out = proc.stdout.decode()
    venv_python = f"{workdir}/venv/bin/python"
    assert out.count(" installed: ") == 3, out
    assert f'[defaults]:\npython = "{venv_python}"' in out, out
    assert f'h2: python = "{venv_python}"' in out and "h1: python" not in out, out
    hosts.write_text(hosts.read_text().replace('"/usr/bin/python3"', f'"{venv_python}"'))
    check = mapred("hosts", "check", "--hosts", hosts, env=env)
    lines = check.stdout.decode().splitlines()
    assert len([ln for ln in lines if " ok " in ln and f"({venv_python})" in ln]) == 3, lines
    mapred("run", "wordcount", awkward_corpus, "-o", tmp_path / "local", "--reducers", "2",
           env=env)
    mapred("run", "wordcount", awkward_corpus, "-o", tmp_path / "lan", "--reducers", "2",
           "--hosts", hosts, env=env)
    assert parts(tmp_path / "lan") == parts(tmp_path / "local")
    again = mapred("hosts", "setup", "--hosts", hosts, env=env, timeout=1200).stdout.decode()
    assert again.count(" installed: ") == 3 and "nothing to change" in again, again
    # setup compiled the new install's kernels into the host's numba cache (one directory per
    # source directory: the new venv's is new), so its first run does not compile
    after = _cache_dirs(lan["h1"])
    new = [d for d in after if d not in before]
    engine = [d for d in new if d.rsplit("/", 1)[-1].startswith("kernels_")]  # mapred/kernels/
    assert len(engine) == 1 and after[engine[0]] >= 5, (before, after)
    for h in lan.hosts:
        h.run(["rm", "-rf", workdir], check=True)
