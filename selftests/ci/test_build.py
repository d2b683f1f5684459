"""Slow self-tests of ci/build-qemu and of a bisect step on the synthetic history.

Why: concurrent builds of the same source raced on the publish step; ci/build-qemu wrote to
the user's repository (`git worktree prune`, `git stash create`); a truncated JUnit file
made a bisect step answer "bad".
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ivflat.ci.gitrepo import git_common_dir
from ivflat.ci.workclone import WorkClone
from ivflat.host.paths import cache_dir
from ivflat.host.timeouts import scaled

from .tools import (
    BISECT,
    BUILD_QEMU,
    IVPOSITION,
    TOOL_TIMEOUT,
    History,
    git,
    repo_state,
    run_tool,
    started_tool,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(int(scaled(2 * TOOL_TIMEOUT)))]


@pytest.mark.history_cost(4)
def test_concurrent_builds_of_one_source_both_succeed(history: History) -> None:
    """Two `ci/build-qemu --source REPO --rev C` at once: both exit 0 and print the same
    binary, which works; one published result (no temporary left); the user's repository is
    byte-identical (refs, stash, worktrees, index, objects, .git entries)."""
    repo, commit = history["repo"], history["base"]
    before = repo_state(repo)
    # forget the published result (not the tree and its build dir: that is a full build),
    # so both runs race to build and publish it
    for old in (cache_dir() / "builds").glob(f"git-{commit}-*"):
        if old.is_symlink():  # the published name; its versions are directories
            old.unlink()
        else:
            shutil.rmtree(old)
    cmd = [sys.executable, str(BUILD_QEMU), "--source", str(repo), "--rev", commit]
    with started_tool(cmd) as one, started_tool(cmd) as two, \
            ThreadPoolExecutor(2) as pool:
        # both read at once: the one that builds fills its pipes (ninja's output on a cold
        # tree) while the other waits for the tree's lock; read one by one, they deadlocked
        done = list(pool.map(lambda t: t.proc.communicate(timeout=scaled(TOOL_TIMEOUT)),
                             (one, two)))
        outs = [(t.proc.returncode, out.decode(), err.decode())
                for t, (out, err) in zip((one, two), done, strict=True)]
    assert [rc for rc, _, _ in outs] == [0, 0], outs
    (binary,) = {Path(out.strip().splitlines()[-1]) for _, out, _ in outs}
    # the commit has no subprojects in git: the export took them from the user's checkout
    # (or found them there from an earlier run), and said so
    said = "".join(err for _, _, err in outs)
    assert (f"subprojects: keycodemapdb: copied from {repo}/subprojects/keycodemapdb" in said
            or "subprojects: keycodemapdb: present in" in said), said
    assert binary.exists() and (binary.parent / "ivshmem-server").exists()
    info = json.loads((binary.parent / "BUILDINFO.json").read_text())
    assert info["wiring_patch"] == "10.0.patch" and info["source"] == f"git-{commit}"
    assert "-10.0-" in binary.parent.name  # the wiring variant is part of the cache key
    siblings = sorted(p.name for p in binary.parent.parent.iterdir()
                      if p.name.startswith(binary.parent.name))
    # the published symlink and the one version it points at: no .tmp-*, no other version
    assert siblings == sorted([binary.parent.name, os.readlink(binary.parent)]), siblings
    assert repo_state(repo) == before
    res = run_tool([sys.executable, "-m", "pytest", "qtests/test_registers.py", "-q",
                    "-p", "no:cacheprovider", f"--qemu={binary}", "-k", "ivposition"])
    assert res.returncode == 0, res.stdout


@pytest.mark.history_cost(6)
def test_truncated_junit_aborts_the_bisect_step(history: History, tmp_path: Path) -> None:
    """A bisect step whose pytest left a truncated JUnit file exits 128 (the bisect stops)
    and says INTERNAL ERROR -- before the fix it answered 1, "bad"."""
    with WorkClone(git_common_dir(history["repo"])) as wc:
        wc.checkout(history["base"])
        res = run_tool([sys.executable, str(BISECT), "--step", "--run-dir",
                        str(tmp_path / "run"), "--", *IVPOSITION, "-p",
                        "selftests.ci.truncate_junit_plugin"], cwd=wc.path)
        assert git(wc.path, "status", "--porcelain", "--untracked-files=no") == ""
    assert res.returncode == 128, res.stderr
    assert "INTERNAL ERROR" in res.stderr and "cannot read the JUnit XML" in res.stderr
    (rec,) = (json.loads(ln) for ln in (tmp_path / "run" / "steps.jsonl").read_text()
              .splitlines())
    assert rec["verdict"] == "abort" and rec["internal"], rec
