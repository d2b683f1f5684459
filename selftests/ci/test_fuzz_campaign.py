"""ci/fuzz, the campaign tool: concurrent campaigns share one example database (the
scale-out the README describes: a directory, or a real Redis server), and a saved failure
is replayed first. A self-test of the tool: the device catalogue's fixed-seed profile is
qtests/test_fuzz.py."""

from __future__ import annotations

import os
import selectors
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from ivflat.host import timeouts
from ivflat.host.paths import REPO
from ivflat.host.reaper import pdeathsig_prefix

pytestmark = [pytest.mark.needs_device, pytest.mark.needs_qtest]


def _campaign(qemu: Path, db: str | Path, art: Path, seed: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(REPO / "ci" / "fuzz"), "--minutes", "1", "--seed", str(seed),
         "--qemu", str(qemu),
         "--model", "fixed", "--only", "version-unchecked", "--db", str(db),
         "--no-shrink", "--stop-on-failure", "--steps", "5", "--artifacts", str(art)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_two_campaigns_share_a_database(wired_qemu, short_tmp):
    """Two campaigns at once on one example database both record their failure; the
    database stays readable and a third campaign replays a saved failure first (its first
    example fails). The bug searched is version-unchecked (find mode, only that bug), the
    one reachable in a single step."""
    db = short_tmp / "db"
    procs = [_campaign(wired_qemu, db, short_tmp / f"art{i}", seed)
             for i, seed in enumerate((1, 2))]
    outs = []
    for p in procs:
        out, _ = p.communicate(timeout=300)
        outs.append(out)
        assert p.returncode == 1 and "FAILURE" in out, out[-2000:]
    entries = [f for f in db.rglob("*") if f.is_file()]
    assert entries and all(f.read_bytes() for f in entries), entries
    third = _campaign(wired_qemu, db, short_tmp / "art3", 99)
    out, _ = third.communicate(timeout=300)
    assert third.returncode == 1, out[-2000:]
    assert "found in example 1 of the batch" in out, \
        f"the saved failure was not replayed first:\n{out}"


def test_jobs_run_one_campaign_in_workers_and_sum_them(wired_qemu, short_tmp):
    """ci/fuzz --jobs 2: two workers, seeds S and S + SEED_STRIDE, each line tagged with
    its worker; the closing line sums the steps and examples each worker reported last,
    and the profile table is the workers' summed; exit 0 (the device as it is)."""
    res = subprocess.run(
        [sys.executable, str(REPO / "ci" / "fuzz"), "--minutes", "0.2", "--seed", "5",
         "--qemu", str(wired_qemu), "--no-db", "--paths", "qtest", "--jobs", "2",
         "--profile", "--artifacts", str(short_tmp / "art")],
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


def test_rediscover_times_a_bug_and_names_it(wired_qemu):
    """ci/fuzz-rediscover on one bug, two seeds: each run finds it (the failure is the
    model's switch for that bug, nothing else) and the table row has both times and a
    median; exit 0."""
    res = subprocess.run(
        [sys.executable, str(REPO / "ci" / "fuzz-rediscover"), "--only",
         "unaligned-doorbell-write", "--seeds", "2", "--minutes", "2", "--qemu",
         str(wired_qemu)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    row = [ln for ln in res.stdout.splitlines() if ln.startswith("| unaligned-doorbell-write")]
    assert row and row[0].count(",") == 1 and "not found" not in row[0], res.stdout


@pytest.fixture
def redis_url(short_tmp: Path) -> Iterator[str]:
    """A redis-server of the test's own, on a UNIX socket in its private directory (no
    TCP port, no dump file), stopped at the end; the directory goes with short_tmp."""
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


def test_two_campaigns_share_a_redis_database(wired_qemu, short_tmp, redis_url):
    """ci/fuzz --db redis://... on a real Redis server: a campaign saves its failure there,
    and a second campaign, with another seed, replays it first (its first example fails)."""
    first = _campaign(wired_qemu, redis_url, short_tmp / "art1", 1)
    out, _ = first.communicate(timeout=300)
    assert first.returncode == 1 and "FAILURE" in out, out[-2000:]
    with Redis.from_url(redis_url) as client:
        assert client.keys("hypothesis-example:*"), "nothing saved in Redis"
    second = _campaign(wired_qemu, redis_url, short_tmp / "art2", 99)
    out, _ = second.communicate(timeout=300)
    assert second.returncode == 1, out[-2000:]
    assert "found in example 1 of the batch" in out, \
        f"the failure saved in Redis was not replayed first:\n{out}"


def test_an_unusable_redis_database_is_refused_not_a_finding(wired_qemu, short_tmp,
                                                             redis_url):
    """A Redis database the server does not have (db 99 of 16) is refused at once, exit 2
    with the reason: not a campaign whose every example 'fails' on the database."""
    res = subprocess.run(
        [sys.executable, str(REPO / "ci" / "fuzz"), "--minutes", "1", "--qemu",
         str(wired_qemu), "--db", redis_url.replace("db=3", "db=99"), "--artifacts",
         str(short_tmp / "art")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
    assert "cannot use the example database" in res.stderr and "FAILURE" not in res.stdout
