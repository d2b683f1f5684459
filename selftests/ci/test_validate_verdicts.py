"""ci/validate-patch's verdicts, end to end, on a QEMU tree that builds in a second.

Why: a failure of the tools on the patched side (a full disk when the build is published)
was reported as "REGRESSED: the series breaks the build", exit 1; and an outcome seen to
change once -- a flaky test -- was reported as a regression, the re-run left to the user.
Here the real tools run on tools.prebuilt_qemu_repo (a tree whose build compiles one real C
file and copies a prebuilt QEMU) with a private cache, and the suite run on both sides is
selftests/ci/flip_cases.py, whose outcomes follow a run counter: deterministic, no timing.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ivflat.ci.qemubuild import tools_marker
from ivflat.ci.suite import junit_id
from ivflat.device.board import DEVICE_SOURCE
from selftests.inner import INNER_OPTS

from .tools import VALIDATE, git, prebuilt_qemu_repo, run_tool

FLIP_CASES = "selftests/ci/flip_cases.py"
FLIP = [FLIP_CASES, *INNER_OPTS]  # what the tool runs as the suite
# ci/build-qemu publishes qemu-system-arm plus two copies of /bin/true: a tmpfs of 1.5 times
# QEMU's size holds one published build, never two.
FULL_DISK = 1.5


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The prebuilt tree (a stock qemu-system-arm copied as its build) and a private cache
    for the tools (its tools venv marked present: the stand-in configure ignores it)."""
    qemu = shutil.which("qemu-system-arm")
    if qemu is None:
        pytest.skip("no qemu-system-arm on PATH to stand in as a build (ci/install-deps)")
    cache = tmp_path / "cache"
    monkeypatch.setenv("IVSHMEM_SUITE_CACHE", str(cache))
    monkeypatch.setenv("IVSHMEM_TEST_FLIP_DIR", str(tmp_path / "flips"))
    (tmp_path / "flips").mkdir()
    tools_marker(cache).parent.mkdir(parents=True)
    tools_marker(cache).touch()
    return prebuilt_qemu_repo(tmp_path / "qemu", Path(qemu).resolve())


def patch(repo: Path, tmp_path: Path, text: str) -> Path:
    """The device source replaced by *text*, as a format-patch file; the repo stays at its
    base."""
    (repo / DEVICE_SOURCE).write_text(text)
    git(repo, "commit", "-q", "-a", "-m", "ivshmem-flat: the change")
    out = Path(git(repo, "format-patch", "-1", "-o", str(tmp_path / "series"), "HEAD"))
    git(repo, "reset", "-q", "--hard", "HEAD~1")
    return out


def run_dir(res: subprocess.CompletedProcess[str]) -> Path:
    return Path(res.stderr.split("logs in ")[1].split()[0])


@pytest.mark.parametrize("failure", ["compile-error", "disk-full-on-publish"])
def test_patched_tree_not_built_is_a_regression_only_for_its_code(
        tree: Path, tmp_path: Path, failure: str) -> None:
    """A patch that does not compile: REGRESSED, exit 1. The tools failing on the patched
    side -- its build's publication runs out of space, a real ENOSPC from a tmpfs mounted
    (in a mount namespace of the tool's own, gone with it) over the cache's builds/ that
    holds one build but not two -- is no verdict: exit 3, said as an internal error."""
    base_c = (tree / DEVICE_SOURCE).read_text()
    cmd = [sys.executable, str(VALIDATE)]
    if failure == "compile-error":
        series = patch(tree, tmp_path, base_c + "int broken = ;\n")
    else:
        series = patch(tree, tmp_path, base_c + "/* a comment */\n")
        builds = tmp_path / "cache" / "builds"
        builds.mkdir(parents=True)
        size = int(FULL_DISK * Path(shutil.which("qemu-system-arm") or "").stat().st_size)
        cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-euc",
               'mount -t tmpfs -o "size=$1" ivf-full "$2"; shift 2; exec "$@"', "sh",
               str(size), str(builds), *cmd]
    res = run_tool([*cmd, str(series), "--source", str(tree), "--", *FLIP])
    out = res.stdout + res.stderr
    build_log = (run_dir(res) / "build-after.log").read_text()
    if failure == "compile-error":
        assert res.returncode == 1, out
        assert "REGRESSED: the series breaks the build" in res.stdout, out
        assert "int broken = ;" in build_log, build_log  # the compiler's own error
    else:
        assert "No space left on device" in build_log, build_log
        assert "No space left on device" in res.stderr, out  # the reason, said
        assert res.returncode == 3, out
        assert "REGRESSED" not in out, out
        assert "ci/validate-patch: cannot judge: internal error: the tools failed to build " \
            "the patched tree (not the series' code; no verdict)" in res.stderr, out


def test_changed_outcomes_are_confirmed_before_they_count(tree: Path, tmp_path: Path) -> None:
    """Each test whose outcome changed is re-run 3 times on each side, on the very binaries
    it ran on first: one that fails on every patched run is "reproduced 3/3" and counts;
    one that failed once more in 3 rounds is "flaky 1/3", shown but not counted; the steady
    test is not re-run. All of it is in the run directory, and the base's build kept aside
    for the re-runs is gone after the run, also when a stale one was in the way."""
    series = patch(tree, tmp_path, (tree / DEVICE_SOURCE).read_text() + "/* */\n")
    res = run_tool([sys.executable, str(VALIDATE), str(series), "--source", str(tree),
                    "--report", "md", "--", *FLIP])
    out = res.stdout + res.stderr
    assert res.returncode == 1, out
    regresses, flaky = (junit_id(f"{FLIP_CASES}::test_{t}") for t in ("regresses", "flaky"))
    assert f"- `{regresses}` [passed -> failed] (reproduced 3/3)" in res.stdout, out
    assert f"- `{flaky}` [passed -> failed] (flaky 1/3)" in res.stdout, out
    assert res.stdout.strip().splitlines()[-1].startswith(
        "REGRESSED: 1 test(s) regressed; 1 flaky regression(s) not counted"), out
    flips = {f.name: int(f.read_text()) for f in (tmp_path / "flips").iterdir()}
    assert flips == {"steady": 2, "regresses": 8, "flaky": 8}
    rd = run_dir(res)
    assert sorted(p.name for p in (rd / "confirm").iterdir()) == \
        [f"{side}-{i}" for side in ("after", "before") for i in (1, 2, 3)]
    assert list((tmp_path / "cache" / "builds").glob("*.base")) == []
    # what an older version of the tool left (the link itself renamed aside, then an
    # rmtree() that refused it): the next run replaces it instead of dying on it
    (published,) = (p for p in (tmp_path / "cache" / "builds").iterdir()
                    if p.is_symlink() and p.name.endswith("-default"))
    published.with_name(published.name + ".base").symlink_to("gone.v1")
    again = run_tool([sys.executable, str(VALIDATE), str(series), "--source", str(tree),
                      "--confirm", "1", "--", *FLIP])  # one round keeps the base aside too
    assert again.returncode == 1, again.stdout + again.stderr
    assert list((tmp_path / "cache" / "builds").glob("*.base")) == []
