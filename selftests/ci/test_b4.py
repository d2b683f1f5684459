"""ci/validate-patch --msgid through the real b4 (issue 21): ``b4 am -m`` picks a series
out of a thread saved from a mail client, offline; without a branch, a thread or the
network, ``b4 am`` fails and the tool says so (exit 2).

The thread is real ``git format-patch --cover-letter --thread`` output concatenated into
one mbox, on a QEMU-looking tree that ci/build-qemu declines at once: nothing is built.
git has no identity here (``GIT_CONFIG_GLOBAL=/dev/null``, as in a CI container), which
b4 am needs; b4's cache is the test's own.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from ivflat.ci.series import from_msgid, read_series
from ivflat.errors import UserError

from .test_msgid import validate
from .tools import fake_qemu_repo, git

pytestmark = pytest.mark.skipif(shutil.which("b4") is None,
                                reason="b4 is not installed (ci/install-deps installs it)")


def thread(repo: Path, tmp: Path) -> tuple[Path, str]:
    """Two commits on *repo* posted as a threaded series with a cover letter, saved as one
    mbox; *repo* back on its base. Returns the mbox and the cover letter's Message-Id."""
    for rel in ("hw/arm/meson.build", "configure"):
        (repo / rel).write_text(f"# {rel}, changed\n")
        git(repo, "commit", "-q", "-a", "-m", f"{rel.split('/')[0]}: change {rel}")
    files = git(repo, "format-patch", "--cover-letter", "--thread", "-2", "-o",
                str(tmp / "posted")).split()
    git(repo, "reset", "-q", "--hard", "HEAD~2")
    mbox = tmp / "thread.mbox"
    mbox.write_text("\n".join(Path(f).read_text() for f in sorted(files)))
    cover = Path(sorted(files)[0]).read_text()
    msgid = next(ln.split("<", 1)[1].rstrip(">") for ln in cover.splitlines()
                 if ln.lower().startswith("message-id:"))
    return mbox, msgid


def offline_env(tmp: Path) -> dict[str, str]:
    return {"GIT_CONFIG_GLOBAL": "/dev/null", "XDG_CACHE_HOME": str(tmp / "xdg-cache"),
            "IVSHMEM_SUITE_CACHE": str(tmp / "cache"), "IVSHMEM_PROGRESS_INTERVAL": "0"}


def test_b4_picks_the_series_out_of_a_saved_thread(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The real b4, offline, with no git identity: from a thread saved as one mbox it
    writes the series as an .mbx whose patches are the thread's, in order; a message id
    the thread does not hold is an error that quotes b4."""
    repo = fake_qemu_repo(tmp_path / "qemu")
    mbox, msgid = thread(repo, tmp_path)
    for key, value in offline_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    base = git(repo, "rev-parse", "HEAD")
    got = from_msgid(msgid, repo, base, tmp_path / "m", mbox)
    assert [p.name for p in got.glob("*.mbx")], list(got.iterdir())
    series = read_series([got], tmp_path / "s")
    assert [p.subject for p in series.patches] == [
        "[PATCH 1/2] hw: change hw/arm/meson.build", "[PATCH 2/2] configure: change configure"]
    with pytest.raises(UserError, match=r"b4 am found no series of that id in .*\n.*"
                       r"Could not find no-such@example\.org"):
        from_msgid("no-such@example.org", repo, base, tmp_path / "m2", mbox)


def test_b4_says_it_is_still_running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    """While b4 am runs (up to minutes on a slow network), a line says so every interval
    (here shortened below b4's start-up time), with where its output goes."""
    repo = fake_qemu_repo(tmp_path / "qemu")
    mbox, msgid = thread(repo, tmp_path)
    for key, value in offline_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("IVSHMEM_PROGRESS_INTERVAL", "0.01")
    from_msgid(msgid, repo, git(repo, "rev-parse", "HEAD"), tmp_path / "m", mbox)
    err = capsys.readouterr().err
    log = tmp_path / "b4.log"
    assert f"ci/validate-patch: b4 am {msgid}: still running (" in err, err
    assert f"; log: {log}\n" in err and log.read_text(), err


def test_validate_patch_takes_the_series_out_of_a_saved_thread(tmp_path: Path) -> None:
    """The whole command gets past fetching: both patches applied in the tools' clone,
    then the base cannot be built (a tree ci/build-qemu declines): exit 3. --mbox alone
    is bad usage."""
    repo = fake_qemu_repo(tmp_path / "qemu")
    mbox, msgid = thread(repo, tmp_path)
    env = {**os.environ, **offline_env(tmp_path)}
    res = validate("--msgid", msgid, "--mbox", str(mbox), "--source", str(repo), env=env)
    assert res.returncode == 3, res.stderr
    assert f"{msgid}: picked out of {mbox} with b4 am" in res.stderr
    assert "2 patch(es) on " in res.stderr and "cannot be built/wired" in res.stderr
    res = validate("--mbox", str(mbox), "--source", str(repo), env=env)
    assert res.returncode == 2 and "--mbox needs --msgid" in res.stderr, res.stderr


def test_no_branch_and_no_thread_b4_am_fails_clearly(tmp_path: Path) -> None:
    """No branch of that name, no --mbox: b4 am asks lore.kernel.org, which either cannot
    be reached or has no such message; both are exit 2 naming b4 am."""
    repo = fake_qemu_repo(tmp_path / "qemu")
    env = {**os.environ, **offline_env(tmp_path)}
    msgid = "no-such-series.20260101@ivshmem-flat-suite.invalid"
    res = validate("--msgid", msgid, "--source", str(repo), env=env)
    assert res.returncode == 2, res.stderr
    assert f"{msgid}: no branch of that name in" in res.stderr
    assert "b4 am could not fetch it" in res.stderr
