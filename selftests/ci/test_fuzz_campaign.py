"""ci/fuzz, the campaign tool: concurrent campaigns share one example database (the
scale-out the README describes: a directory, or a real Redis server), and a saved failure
is replayed first. A self-test of the tool: the device catalogue's fixed-seed profile is
qtests/test_fuzz.py.

A campaign mostly waits on QEMU (the bug these find is a hang, judged by a timeout), so the
module's tests run their campaigns side by side: each test's runs are started together at
the module's first test (``started``; the module is one xdist group, so on one worker),
and each test waits for its own and checks what they did, as it would have in turn."""

from __future__ import annotations

import os
import re
import selectors
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from redis import Redis

from ivflat.host import reaper, timeouts
from ivflat.host.paths import REPO
from ivflat.host.reaper import pdeathsig_prefix
from ivflat.plugin.binary import skip_reason, under_test

pytestmark = [pytest.mark.needs_device, pytest.mark.needs_qtest,
              pytest.mark.xdist_group("fuzz-campaigns")]
Run = tuple[int, str]  # a tool's exit status and output


@dataclass
class Runner:
    """Starts the tools; at the module's end (close) it starts no more and kills what
    still runs."""
    procs: list[subprocess.Popen[str]] = field(default_factory=list)
    closed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, cmd: list[str], timeout: float, env: dict[str, str] | None = None) -> Run:
        with self.lock:
            if self.closed:
                raise RuntimeError("the module's tests are over")
            proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True,
                                    env={**os.environ, **(env or {})})
            self.procs.append(proc)
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out

    def close(self) -> None:
        with self.lock:
            self.closed = True
            for proc in self.procs:
                if proc.poll() is None:
                    proc.kill()

    def campaign(self, qemu: Path, db: str | Path, art: Path, seed: int) -> Run:
        return self.run(
            [sys.executable, str(REPO / "ci" / "fuzz"), "--minutes", "1", "--seed", str(seed),
             "--qemu", str(qemu),
             "--model", "fixed", "--only", "version-unchecked", "--db", str(db),
             "--no-shrink", "--stop-on-failure", "--steps", "5", "--artifacts-dir", str(art)],
            timeout=300)


def _shared_dir(runner: Runner, qemu: Path, tmp: Path) -> dict[str, Any]:
    """Two campaigns at once on one directory database, then what it holds, then a third."""
    tmp.mkdir()
    db = tmp / "db"
    with ThreadPoolExecutor(2) as pool:
        first = list(pool.map(lambda i: runner.campaign(qemu, db, tmp / f"art{i}", i + 1),
                              (0, 1)))
    entries = [f.read_bytes() for f in db.rglob("*") if f.is_file()]
    return {"first": first, "entries": entries,
            "third": runner.campaign(qemu, db, tmp / "art3", 99)}


def _rediscover(runner: Runner, qemu: Path, tmp: Path) -> Run:
    return runner.run([sys.executable, str(REPO / "ci" / "fuzz-rediscover"), "--only",
                       "message-range-unchecked", "--seeds", "2", "--minutes", "2",
                       "--qemu", str(qemu)], timeout=600,
                      env={"IVSHMEM_PROGRESS_INTERVAL": "0.01"})  # a run's lines


def _shared_redis(runner: Runner, qemu: Path, tmp: Path, url: str) -> dict[str, Any]:
    """A campaign on the Redis database, what it saved there, then a second campaign."""
    tmp.mkdir()
    first = runner.campaign(qemu, url, tmp / "art1", 1)
    with Redis.from_url(url) as client:
        keys = client.keys("hypothesis-example:*")
    return {"first": first, "keys": keys, "second": runner.campaign(qemu, url, tmp / "art2", 99)}


@pytest.fixture(scope="module")
def started(request: pytest.FixtureRequest) -> Iterator[dict[str, Future[Any]]]:
    """Test name -> its runs, started together (those of the session's tests of this
    module, when the binary can run them); on leaving, whatever still runs is killed."""
    names = {getattr(item, "originalname", "") for item in request.session.items
             if getattr(item, "module", None) is request.module}
    binary = under_test(request.config)[0]
    runner = Runner()
    tmp = Path(tempfile.mkdtemp(prefix=reaper.tagged_name(reaper.TMP_PREFIX)))
    jobs: dict[str, Callable[[], Any]] = {}
    if binary is not None and skip_reason(request.config) is None:
        jobs = {"test_two_campaigns_share_a_database":
                lambda: _shared_dir(runner, binary, tmp / "dir"),
                "test_rediscover_times_a_bug_and_names_it":
                lambda: _rediscover(runner, binary, tmp)}
        if "test_two_campaigns_share_a_redis_database" in names:
            try:
                url = request.getfixturevalue("redis_url")
            except pytest.skip.Exception:
                pass  # the test skips on its own, saying why
            else:
                jobs["test_two_campaigns_share_a_redis_database"] = \
                    lambda: _shared_redis(runner, binary, tmp / "redis", url)
    pool = ThreadPoolExecutor(len(jobs) or 1)
    try:
        yield {name: pool.submit(job) for name, job in jobs.items() if name in names}
    finally:
        runner.close()
        pool.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


def test_two_campaigns_share_a_database(wired_qemu, started):
    """Two campaigns at once on one example database both record their failure; the
    database stays readable and a third campaign replays a saved failure first (its first
    example fails). The bug searched is version-unchecked (find mode, only that bug), the
    one reachable in a single step."""
    got = started["test_two_campaigns_share_a_database"].result()
    for rc, out in got["first"]:
        assert rc == 1 and "FAILURE" in out, out[-2000:]
    assert got["entries"] and all(got["entries"]), got["entries"]
    rc, out = got["third"]
    assert rc == 1, out[-2000:]
    assert "found in example 1 of the batch" in out, \
        f"the saved failure was not replayed first:\n{out}"


def test_jobs_run_one_campaign_in_workers_and_sum_them(wired_qemu, short_tmp):
    """ci/fuzz --jobs 2: two workers, seeds S and S + SEED_STRIDE (each runs at least one
    batch, however short the budget), each line tagged with its worker; the closing line
    sums the steps and examples each worker reported last, and the profile table is the
    workers' summed; exit 0 (the device as it is)."""
    res = subprocess.run(
        [sys.executable, str(REPO / "ci" / "fuzz"), "--minutes", "0.01", "--seed", "5",
         "--qemu", str(wired_qemu), "--no-db", "--paths", "qtest", "--jobs", "2",
         "--profile", "--artifacts-dir", str(short_tmp / "art")],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    out = res.stdout
    assert res.returncode == 0, out[-2000:] + res.stderr[-2000:]
    assert "seed 5," in out and "seed 1000005," in out, out
    last = {}
    for ln in out.splitlines():
        for i in (0, 1):
            if ln.startswith(f"[fuzz {i}]") and " steps " in ln:
                words = ln.split()
                last[i] = (int(words[words.index("examples") + 1]),
                           int(words[words.index("steps") + 1]))
    assert sorted(last) == [0, 1] and all(s > 0 for _, s in last.values()), out
    total = [ln for ln in out.splitlines() if ln.startswith("[fuzz] 2 of 2 processes")]
    assert total, out
    words = total[0].split()
    assert int(words[words.index("examples") + 1]) == sum(e for e, _ in last.values())
    assert int(words[words.index("steps") + 1]) == sum(s for _, s in last.values())
    assert "summed" in out and "| Hypothesis + rules' Python (no span) |" in out, out


def test_rediscover_times_a_bug_and_names_it(wired_qemu, started):
    """ci/fuzz-rediscover on one bug, two seeds: each run finds it (the failure is the
    model's switch for that bug, nothing else) and the table row has both times and a
    median; exit 0. Each run says it is still running (the interval shortened) and where
    the campaign's log is. The bug is one found in a fraction of a second (an own id out of
    range is accepted: QEMU comes up where realize should fail)."""
    rc, out = started["test_rediscover_times_a_bug_and_names_it"].result()
    assert rc == 0, out[-4000:]
    row = [ln for ln in out.splitlines() if ln.startswith("| message-range-unchecked")]
    assert row and row[0].count(",") == 1 and "not found" not in row[0], out
    for seed in (1, 2):
        assert re.search(rf"^\[rediscover\] message-range-unchecked seed {seed}: still running "
                         rf"\(\d+s so far\); log: \S+/message-range-unchecked-{seed}\.log$",
                         out, re.M), out[-4000:]


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """A redis-server of the module's own, on a UNIX socket in a private directory (no TCP
    port, no dump file), stopped at the end with the directory."""
    short_tmp = Path(tempfile.mkdtemp(prefix=reaper.tagged_name(reaper.TMP_PREFIX)))
    try:
        yield from _redis(short_tmp)
    finally:
        shutil.rmtree(short_tmp, ignore_errors=True)


def _redis(short_tmp: Path) -> Iterator[str]:
    binary = shutil.which("redis-server")
    multicall = shutil.which("redis-check-rdb")
    if binary is None and multicall is not None:
        # Debian's redis-tools has the one redis binary, which picks its part by the name
        # it runs under (redis-server is a link to it in the package that adds a service)
        binary = str(short_tmp / "redis-server")
        os.symlink(multicall, binary)
    if binary is None:
        pytest.skip("no redis-server nor redis-check-rdb (Debian package redis-tools: "
                    "ci/install-deps)")
    sock = short_tmp / "redis.sock"
    proc = subprocess.Popen(
        [*pdeathsig_prefix(), binary, "--port", "0", "--unixsocket", str(sock), "--dir",
         str(short_tmp), "--save", "", "--appendonly", "no", "--daemonize", "no"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    assert proc.stdout is not None
    try:
        seen, deadline = b"", timeouts.Deadline(10)
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while b"ready to accept connections" not in seen.lower():  # 7.0 and 7.2 words
                chunk = os.read(proc.stdout.fileno(), 4096) if sel.select(deadline.left()) \
                    else b""
                if not chunk:
                    pytest.fail(f"redis-server did not come up within {deadline.total}s "
                                f"(exit {proc.poll()}): {seen.decode(errors='replace')}")
                seen += chunk
        yield f"unix://{sock}?db=3"
    finally:
        proc.terminate()
        proc.wait(timeout=timeouts.scaled())
        proc.stdout.close()


def test_two_campaigns_share_a_redis_database(wired_qemu, redis_url, started):
    """ci/fuzz --db redis://... on a real Redis server: a campaign saves its failure there,
    and a second campaign, with another seed, replays it first (its first example fails)."""
    got = started["test_two_campaigns_share_a_redis_database"].result()
    rc, out = got["first"]
    assert rc == 1 and "FAILURE" in out, out[-2000:]
    assert got["keys"], "nothing saved in Redis"
    rc, out = got["second"]
    assert rc == 1, out[-2000:]
    assert "found in example 1 of the batch" in out, \
        f"the failure saved in Redis was not replayed first:\n{out}"


def test_an_unusable_redis_database_is_refused_not_a_finding(wired_qemu, short_tmp,
                                                             redis_url):
    """A Redis database the server does not have (db 99 of 16) is refused at once, exit 2
    with the reason: not a campaign whose every example 'fails' on the database."""
    res = subprocess.run(
        [sys.executable, str(REPO / "ci" / "fuzz"), "--minutes", "1", "--qemu",
         str(wired_qemu), "--db", redis_url.replace("db=3", "db=99"), "--artifacts-dir",
         str(short_tmp / "art")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
    assert "cannot use the example database" in res.stderr and "FAILURE" not in res.stdout
