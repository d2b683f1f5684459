"""ci/bisect on QEMU's real history (the mirror's commits), where a real git tree is given:
``IVSHMEM_QEMU_GIT=/path/to/qemu`` (a clone holding e6c33efed3, the device's first commit on
master, and ece408818d, master of 2026-02-13). Without it these tests skip with that reason;
the same code paths (skips, first parents, the ends) run on the synthetic histories.

Why: a real range has what the synthetic one lacks -- merges, side branches based on a
master older than the device (no hw/misc/ivshmem-flat.c: skips), two wiring variants
(10.0.patch near the device's first commit, 20-master.patch on master).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from ivflat.ci.bisect import use_first_parent
from ivflat.ci.bisectreport import load_steps
from ivflat.ci.gitrepo import git_common_dir, resolve_rev
from ivflat.ci.workclone import WorkClone
from ivflat.device.board import DEVICE_SOURCE
from ivflat.host.timeouts import scaled

from .tools import BISECT, TOOL_TIMEOUT, git, run_tool

QEMU_GIT = os.environ.get("IVSHMEM_QEMU_GIT", "")
FIRST = "e6c33efed3"  # hw/misc/ivshmem-flat: Add ivshmem-flat device
MASTER = "ece408818d"  # upstream master 2026-02-13 (the mirror's master~1)

pytestmark = [
    pytest.mark.slow, pytest.mark.timeout(int(scaled(3 * TOOL_TIMEOUT))),
    # both tests run ci/bisect in the one work clone of the mirror, which the tool (by
    # design) refuses to a second run at once: on one xdist worker, one after the other
    pytest.mark.xdist_group("qemu-mirror-work-clone"),
    pytest.mark.skipif(not QEMU_GIT or (not Path(QEMU_GIT, ".git").exists() and
                       not Path(QEMU_GIT, "HEAD").exists()),
                       reason="no real QEMU git tree: set IVSHMEM_QEMU_GIT to a clone of "
                       f"QEMU holding {FIRST} and {MASTER}"),
]


def src() -> Path:
    return Path(QEMU_GIT).resolve()


def test_real_range_goes_along_first_parents_and_pre_device_commits_skip(
        tmp_path: Path) -> None:
    """The range has merges, so it is bisected along first parents; the first-parent
    commits older than the device's merge lack the device, and a step there is a skip
    (125) said with the reason, decided before any build."""
    first, master = resolve_rev(src(), FIRST), resolve_rev(src(), MASTER)
    assert use_first_parent(src(), first, master, None)
    mainline = git(src(), "rev-list", "--first-parent", f"{first}..{master}").split()
    every = int(git(src(), "rev-list", "--count", f"{first}..{master}"))
    assert len(mainline) < every
    pre = next(c for c in reversed(mainline)
               if git(src(), "ls-tree", c, DEVICE_SOURCE) == "")
    with WorkClone(git_common_dir(src())) as wc:
        wc.checkout(pre)
        res = run_tool([sys.executable, str(BISECT), "--step", "--run-dir",
                        str(tmp_path / "run"), "--", "-k", "test_ivposition"], cwd=wc.path)
    assert res.returncode == 125, res.stderr
    (rec,) = load_steps(tmp_path / "run").values()
    assert rec["verdict"] == "skip" and f"has no {DEVICE_SOURCE}" in rec["reason"]


def _bisect(*args: str) -> tuple[int, str, dict[str, Any]]:
    res = run_tool([sys.executable, str(BISECT), *args, "--source", str(src()), "--",
                    "-k", "test_ivposition"])
    run_dir = Path(res.stderr.split("logs in ")[1].split()[0])
    return res.returncode, res.stderr, load_steps(run_dir) | {"dir": run_dir}


def test_real_range_end_to_end() -> None:
    """ci/bisect FIRST MASTER on the real history. The device's whole life on master passes
    the selection (no commit in the range changes what the suite sees), so the honest
    answer is "nothing to bisect" (exit 2) after testing BAD (master: 20-master.patch,
    offline subprojects); --first-fixed FIRST MASTER tests both ends, so it also builds
    and tests the device's first commit (10.0.patch, with fuzz) and answers "BROKEN
    passes" (exit 2)."""
    rc, err, steps = _bisect(FIRST, MASTER)
    assert "first parents only" in err, err
    assert rc == 2 and "passes the selected tests: nothing to bisect" in err, err
    master = resolve_rev(src(), MASTER)
    assert steps[master]["verdict"] == "good", steps
    log = (steps["dir"] / "steps" / master[:12] / "build.log").read_text()
    assert "20-master.patch" in log and "subprojects: keycodemapdb:" in log, log
    rc, err, steps = _bisect("--first-fixed", FIRST, MASTER)
    assert rc == 2 and "BROKEN" in err and "passes the selected tests" in err, err
    first = resolve_rev(src(), FIRST)
    assert steps[master]["verdict"] == steps[first]["verdict"] == "good", steps
    log = (steps["dir"] / "steps" / first[:12] / "build.log").read_text()
    assert "10.0.patch" in log, log
    print(json.dumps({k: v for k, v in steps.items() if k != "dir"}, indent=1))
