"""ci/validate-patch --msgid (issue 21, item 5): a posted series by its message id.

A QEMU mirror keeps every posted series as a branch named by its message id (local, or a
remote's ``origin/<id>``); without one, ``b4 am`` fetches it; without b4, one clear error.
Judged offline on small real git histories (the tools' private cache, a QEMU-looking tree
that ci/build-qemu declines at once: nothing is built), and on the real v3 series branch
when ``$IVSHMEM_QEMU_GIT`` names a mirror.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ivflat.ci.series import apply, branch_for, from_msgid, read_series
from ivflat.errors import UserError
from ivflat.host.timeouts import scaled

from .test_validate_report import _repo
from .tools import VALIDATE, fake_qemu_repo, git, repo_state

MSGID = "20250102030405.12345-1-dev@example.org"
V3 = "20241216141818.111255-1-gustavo.romero@linaro.org"  # ivshmem-flat v3, 7 patches


def posted(repo: Path) -> str:
    """The last two commits of *repo* as a branch named MSGID, main back on the base."""
    git(repo, "branch", MSGID, "HEAD")
    git(repo, "reset", "-q", "--hard", "HEAD~2")
    return git(repo, "rev-parse", "HEAD")


def test_local_branch_named_by_the_message_id(tmp_path: Path) -> None:
    """A local branch named by the message id is read as the series, its patches in order,
    and the repository it came from is only read."""
    repo = _repo(tmp_path / "repo")
    base = posted(repo)
    before = repo_state(repo)
    series = read_series([from_msgid(MSGID, repo, base, tmp_path / "m")], tmp_path / "s")
    assert [p.subject for p in series.patches] == ["[PATCH 1/2] add line 2",
                                                   "[PATCH 2/2] add line 3"]
    assert repo_state(repo) == before  # the source is only read


def test_remote_branch_named_by_the_message_id(tmp_path: Path) -> None:
    """In a mirror's clone the series is only a remote's ``origin/<id>`` branch: it is found
    there and read."""
    repo = _repo(tmp_path / "repo")
    base = posted(repo)
    clone = tmp_path / "mirror"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    assert git(clone, "branch", "--list", MSGID) == ""  # only origin/<id>
    assert branch_for(clone, MSGID) == f"refs/remotes/origin/{MSGID}"
    series = read_series([from_msgid(MSGID, clone, base, tmp_path / "m")], tmp_path / "s")
    assert len(series.patches) == 2


def no_git_identity(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """git as on a fresh machine or a CI runner: no identity configured, and none guessed
    (``user.useConfigOnly``, so the result does not hang on the host name)."""
    config = tmp_path / "gitconfig-without-identity"
    config.write_text("[user]\n\tuseConfigOnly = true\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    for var in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME",
                "GIT_COMMITTER_EMAIL", "EMAIL"):
        monkeypatch.delenv(var, raising=False)


def test_a_series_for_an_older_tree_names_its_fork_point(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A branch forked before master added a file the series adds too (ivshmem-flat v3 on
    master): applying it on master fails with a hint naming the fork point as the --base
    to try; on that fork point it applies. With no git identity configured (a fresh
    machine): git refuses an ``am --abort`` without one, which left the clone mid-am."""
    no_git_identity(tmp_path, monkeypatch)
    repo = _repo(tmp_path / "repo")
    fork = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "-b", MSGID)
    (repo / "dev.c").write_text("the series' device\n")
    git(repo, "add", "dev.c")
    git(repo, "commit", "-q", "-m", "add the device")
    git(repo, "checkout", "-q", "-")
    (repo / "dev.c").write_text("master's device\n")
    git(repo, "add", "dev.c")
    git(repo, "commit", "-q", "-m", "master adds the device")
    master = git(repo, "rev-parse", "HEAD")
    series = read_series([from_msgid(MSGID, repo, master, tmp_path / "m")], tmp_path / "s")
    assert series.posted_on == fork
    tree = tmp_path / "tree"
    subprocess.run(["git", "clone", "-q", str(repo), str(tree)], check=True)
    with pytest.raises(UserError, match=rf"creates dev\.c, which the base already has.*"
                       rf"\(try --base {fork[:10]}\)\)$"):
        apply(tree, series)
    git(tree, "checkout", "-q", fork)
    after = apply(tree, series)
    assert git(tree, "rev-parse", f"{after}~1") == fork


def without_b4(tmp: Path) -> str:
    """A PATH with git and no b4 (which lives beside git once installed)."""
    bindir = tmp / "bin-without-b4"
    bindir.mkdir()
    (bindir / "git").symlink_to(shutil.which("git") or "/usr/bin/git")
    return str(bindir)


def test_no_branch_and_no_b4_is_a_clear_error(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """With no branch of that message id and no b4 to fetch it, a UserError says b4 is not
    installed (exit 2), not a git error or a traceback."""
    repo = _repo(tmp_path / "repo")
    base = git(repo, "rev-parse", "HEAD")
    monkeypatch.setenv("PATH", without_b4(tmp_path))
    with pytest.raises(UserError, match="b4 is not installed"):
        from_msgid(MSGID, repo, base, tmp_path / "m")


def test_a_directory_of_mbx_files(tmp_path: Path) -> None:
    """b4 am's output: *.mbx."""
    repo = _repo(tmp_path / "repo")
    d = tmp_path / "b4"
    d.mkdir()
    (d / "v1_20250102_dev_add_lines.mbx").write_text(
        git(repo, "format-patch", "--stdout", "-2", "HEAD"))
    assert len(read_series([d], tmp_path / "s").patches) == 2


def validate(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(VALIDATE), *args], capture_output=True,
                          text=True, env=env, timeout=scaled(300), stdin=subprocess.DEVNULL)


def test_validate_patch_takes_the_series_by_message_id(tmp_path: Path) -> None:
    """The whole command: the branch is found, applied in the tools' clone (one commit),
    then the base cannot be built (a tree ci/build-qemu declines): exit 3, never 0. A
    message id with no branch and no b4: exit 2, saying so."""
    repo = fake_qemu_repo(tmp_path / "qemu")
    git(repo, "checkout", "-q", "-b", MSGID)
    (repo / "hw/arm/meson.build").write_text("# changed\n")
    git(repo, "commit", "-q", "-a", "-m", "hw/arm: change")
    git(repo, "checkout", "-q", "master" if git(repo, "branch", "--list", "master")
        else "main")
    env = {**os.environ, "IVSHMEM_SUITE_CACHE": str(tmp_path / "cache"),
           "IVSHMEM_PROGRESS_INTERVAL": "0"}
    res = validate("--msgid", f"<{MSGID}>", "--source", str(repo), env=env)
    assert res.returncode == 3, res.stderr
    assert f"the branch refs/heads/{MSGID}" in res.stderr
    assert "1 patch(es) on " in res.stderr and "cannot be built/wired" in res.stderr
    env["PATH"] = without_b4(tmp_path)
    res = validate("--msgid", "no-such@example.org", "--source", str(repo), env=env)
    assert res.returncode == 2, res.stderr
    assert "no-such@example.org: no branch of that name in" in res.stderr
    assert "b4 is not installed" in res.stderr
    assert validate("x.patch", "--msgid", MSGID, env=env).returncode == 2


def test_the_real_v3_series_from_a_mirror(tmp_path: Path) -> None:
    """On a real QEMU mirror, the v3 ivshmem-flat series is read by its message id: seven
    patches, from adding the device to its qtest."""
    mirror = os.environ.get("IVSHMEM_QEMU_GIT")
    if not mirror:
        pytest.skip("no QEMU mirror: set IVSHMEM_QEMU_GIT")
    src = Path(mirror).expanduser()
    base = git(src, "rev-parse", "master")
    series = read_series([from_msgid(V3, src, base, tmp_path / "m")], tmp_path / "s")
    subjects = [p.subject for p in series.patches]
    assert len(subjects) == 7, subjects
    assert subjects[0] == "[PATCH 1/7] hw/misc/ivshmem-flat: Add ivshmem-flat device"
    assert subjects[-1] == "[PATCH 7/7] tests/qtest: Add ivshmem-flat test"
