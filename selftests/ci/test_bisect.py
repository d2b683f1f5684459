"""Self-tests of ci/bisect and ci/validate-patch on a real (synthetic) QEMU history.

Why: both tools glue git, the build and the suite together, and the glue is where they
would silently give wrong answers (a bisect that names the wrong commit, a patch check that
reports no difference). So on a small history built on Debian's QEMU source (see conftest.py)
we check that:

* ci/bisect names the breaking commit and the failing test, skipping the unbuildable commit;
  the history has no meson subprojects in git, so every step builds offline only because
  the build copies them from the user's checkout (and says so in the step's build log);
* ci/bisect --first-fixed names the commit that fixes it;
* ci/validate-patch, given the breaking commit as a patch, reports the newly failing tests
  and exits non-zero;
* neither leaves bisect state, worktrees, changes or processes in the "user's" repository;
* Ctrl-C (SIGINT to the tool's process group, sent on a real progress event, never after a
  guessed delay) stops ci/bisect, ci/validate-patch and ci/build-qemu --in-place within
  its grace period, with one line, no process left (QEMU included) and a clone without bisect state
  or wiring patch, and a new bisect still gives the right answer;

The history is cached (keyed by the Debian version and the recipe); builds reuse the
private clone's build dir and ccache, so a re-run costs a few incremental builds. Needs the
reference build (ci/build-qemu) for the Debian source tree. Marked slow: run with
``--run-slow``.
"""

from __future__ import annotations

import difflib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ivflat.ci import provenance
from ivflat.ci.bisectreport import load_steps
from ivflat.ci.gitrepo import git_common_dir
from ivflat.ci.subprojects import NEEDED
from ivflat.ci.workclone import WorkClone
from ivflat.host.paths import REPO as ROOT
from ivflat.host.timeouts import scaled

from .tools import (
    BISECT,
    BUILD_QEMU,
    IVPOSITION,
    TOOL_TIMEOUT,
    VALIDATE,
    Events,
    History,
    git,
    interrupt,
    no_leftovers,
    processes_mentioning,
    repo_state,
    run_tool,
    started_tool,
)

SELECT = IVPOSITION
CATALOGUE_SELECT = ["-k", "test_ivposition"]  # the whole catalogue, as a user selects

pytestmark = [pytest.mark.slow, pytest.mark.timeout(int(scaled(2 * TOOL_TIMEOUT)))]


@pytest.mark.history_cost(26)
def test_bisect_names_the_breaking_commit(history: History) -> None:
    """ci/bisect names the breaking commit and one of BAD's failing tests, each failure an
    assert on the register (not a fixture error); the unbuildable commit is skipped with
    its reason; a step inside `git bisect run` stops at the first failure and the report
    says so; the subprojects git lacks are copied from the user's checkout; the user's repo,
    the private clone and the process table are left as they were."""
    repo, work = history["repo"], history["work"]
    for name in NEEDED:  # as in a fresh clone: the next build must copy them again
        shutil.rmtree(work / "subprojects" / name, ignore_errors=True)
    before = repo_state(repo)
    res = run_tool([sys.executable, str(BISECT), history["base"], history["tip"],
                    "--source", str(repo), "--", *CATALOGUE_SELECT])
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"First bad commit: {history['breaks']}" in res.stdout
    at_it = res.stdout.split("Failing tests at it:")[1].split("\n\n")[0]
    # The unbuildable commit (the first midpoint) was skipped with the reason, not judged.
    run_dir = Path(res.stderr.split("logs in ")[1].split()[0])
    steps = load_steps(run_dir)
    unbuildable = steps[history["unbuildable"]]
    assert unbuildable["verdict"] == "skip", unbuildable
    assert "build failed" in unbuildable["reason"], unbuildable
    assert steps[history["base"]]["verdict"] == "good"
    assert steps[history["tip"]]["verdict"] == "bad"
    # BAD is checked in full: what fails there is an assert on the register's value, not
    # a fixture that waited for vectors under the id IVPOSITION reports (then an error)
    failed = steps[history["tip"]]["failed"]
    assert failed and all("  (assert " in f for f in failed), failed
    # a step inside `git bisect run` runs BAD's failing tests first and stops at the
    # first failure: one is enough for "bad"
    inside = steps[history["breaks"]]
    assert inside["verdict"] == "bad" and inside["stop_early"], inside
    assert len(inside["failed"]) == 1, inside
    # the report names it (one of BAD's failing tests), and says the step stopped there
    assert at_it.split() and f"{at_it.split()[0]}  (" in "".join(failed), at_it
    assert inside["failed"][0].split()[0] == at_it.split()[0], (inside, at_it)
    assert "(its step stopped at the first failure: the rest were not run)" in at_it
    # the first build (BAD's) took the subprojects git lacks from the user's checkout
    log = (run_dir / "steps" / history["tip"][:12] / "build.log").read_text()
    for name in NEEDED:
        assert f"subprojects: {name}: copied from {repo}/subprojects/{name}" in log, log
    assert repo_state(repo) == before
    assert_clone_reset(work)
    assert processes_mentioning(str(work)) == []


@pytest.mark.history_cost(22)
def test_bisect_first_fixed_names_the_fix(history: History) -> None:
    """Reverse mode: BROKEN = the breaking commit, FIXED = the head; the first commit where
    test_ivposition passes again is the fix (the unbuildable commit in between skipped)."""
    repo, work = history["repo"], history["work"]
    before = repo_state(repo)
    res = run_tool([sys.executable, str(BISECT), "--first-fixed", history["breaks"],
                    history["head"], "--source", str(repo), "--", *SELECT])
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"First fixed commit: {history['fixed']}" in res.stdout, res.stdout
    fixes = res.stdout.split("Tests it fixes")[1]
    assert "test_ivposition_reports_server_assigned_id" in fixes, res.stdout
    run_dir = Path(res.stderr.split("logs in ")[1].split()[0])
    steps = load_steps(run_dir)
    assert steps[history["breaks"]]["verdict"] == "bad"  # the tests fail at BROKEN
    assert steps[history["head"]]["verdict"] == "good"
    assert steps[history["fixed"]]["verdict"] == "good"
    assert steps[history["tip"]]["verdict"] == "bad" or history["tip"] not in steps
    assert repo_state(repo) == before
    assert_clone_reset(work)


def assert_clone_reset(work: Path) -> None:
    gitdir = work / ".git"
    for leftover in ("BISECT_START", "BISECT_LOG", "rebase-apply", "index.lock"):
        assert not (gitdir / leftover).exists(), leftover
    assert git(work, "for-each-ref", "refs/bisect") == ""
    # the transient wiring patch (and any half-applied series) reverted
    assert git(work, "status", "--porcelain", "--untracked-files=no") == ""


def assert_clean_interrupt(tool: str, rc: int, err: str) -> None:
    """Exit 130, one clear line, no traceback from any level, and every child stopped by
    the SIGINT itself (the tool says so when it had to SIGKILL one after its grace)."""
    assert rc == 130, (rc, err)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert "killed" not in err, err
    said = [ln for ln in err.splitlines() if "interrupted" in ln]
    assert said == [f"{tool}: interrupted; the work clone was reset, your checkout is "
                    "untouched"], err


def warm_build(repo: Path, commit: str) -> None:
    """Build *commit* in the work clone as the tools do (incremental; ccache hits on a fresh
    clone), so a later gated run (every compile real, see compile_gate.py) compiles only
    the few files a step changes."""
    with WorkClone(git_common_dir(repo)) as wc:
        wc.checkout(commit)
        res = run_tool([sys.executable, str(BUILD_QEMU), "--source", str(wc.path),
                        "--in-place"])
        assert res.returncode == 0, res.stderr


def ctrl_c_tool(cmd: list[str], tmp_path: Path, work: Path, pattern: str | None = None,
                kind: str = "test", not_from_tool: bool = True) -> tuple[int, str]:
    """Start a tool; wait for *pattern* on its stderr, if given; then for an event of
    *kind*: "test" (a test body runs, QEMU up; with *not_from_tool*, in a pytest a bisect
    step started) or "compile" (the gate is armed after *pattern*: the next real compile
    is held until the Ctrl-C, so the signal always lands mid-build, however fast the
    machine). Then Ctrl-C, and check that nothing it started is left."""
    events = Events(tmp_path / "events.sock")
    gate = tmp_path / "gate-armed"
    try:
        env = events.env(gate if kind == "compile" else None)
        with started_tool(cmd, env) as tool:
            if pattern:
                events.wait(tool, pattern=pattern)
            if kind == "compile":
                gate.touch()
            events.wait(tool, kind=kind, not_from=tool.proc.pid if not_from_tool else None)
            rc, _out, err = interrupt(tool)
            seen = events.stderr.decode(errors="replace") + err
            sys.stderr.write(seen)
            no_leftovers(tool, work)
    finally:
        events.close()
    return rc, seen


@pytest.mark.parametrize("when", [pytest.param("building", marks=pytest.mark.history_cost(30)),
                                  pytest.param("testing", marks=pytest.mark.history_cost(16))])
def test_bisect_ctrl_c_resets_the_clone(history: History, tmp_path: Path, when: str) -> None:
    """Ctrl-C in a step of `git bisect run` (after it skipped the unbuildable commit): while
    it compiles (held by compile_gate.py), or while a test body runs with QEMU up (a
    datagram from selftests/ci/ready_plugin.py in a pytest started by the step)."""
    repo, work = history["repo"], history["work"]
    if when == "building":
        warm_build(repo, history["tip"])
    before = repo_state(repo)
    cmd = [sys.executable, str(BISECT), history["base"], history["tip"], "--source", str(repo),
           "--", *SELECT, "-p", "selftests.ci.ready_plugin"]
    if when == "building":
        rc, err = ctrl_c_tool(cmd, tmp_path, work, r"SKIP \(cannot build.*?: building \.\.\.\n",
                              kind="compile")
    else:
        rc, err = ctrl_c_tool(cmd, tmp_path, work, kind="test")
    assert_clean_interrupt("ci/bisect", rc, err)
    assert repo_state(repo) == before
    assert_clone_reset(work)
    if when == "building":
        # the lock is released and the clone usable: a new run, which builds over the
        # interrupted build and runs `git bisect run` again, gives the right answer. Two
        # commits (one bisect step) prove that; the whole range is the test above.
        res = run_tool([*cmd[:2], f"{history['breaks']}~2", history["breaks"], *cmd[4:]])
        assert res.returncode == 0, res.stdout + res.stderr
        assert f"First bad commit: {history['breaks']}" in res.stdout
        steps = load_steps(Path(res.stderr.split("logs in ")[1].split()[0]))
        inside = git(repo, "rev-parse", f"{history['breaks']}~1")  # the step in between
        assert steps[inside]["verdict"] == "good" and len(steps) == 3, steps
    else:
        with WorkClone(git_common_dir(repo)):  # the lock was released
            pass


@pytest.mark.parametrize("when", [pytest.param("building", marks=pytest.mark.history_cost(12)),
                                  pytest.param("testing", marks=pytest.mark.history_cost(6))])
def test_validate_patch_ctrl_c_resets_the_clone(history: History, tmp_path: Path,
                                                when: str) -> None:
    """Ctrl-C while the patched tree compiles in the clone (the series applied with `git am`,
    then the wiring patch; held by compile_gate.py), or while the suite runs on the base
    build with QEMU up."""
    repo, work = history["repo"], history["work"]
    if when == "building":
        warm_build(repo, f"{history['breaks']}^")
    patch = Path(git(repo, "format-patch", "-1", "-o", str(tmp_path), history["breaks"]))
    before = repo_state(repo)
    cmd = [sys.executable, str(VALIDATE), str(patch), "--source", str(repo),
           "--base", f"{history['breaks']}^", "--", *SELECT, "-p", "selftests.ci.ready_plugin"]
    if when == "building":
        rc, err = ctrl_c_tool(cmd, tmp_path, work, r"building patched .*\.\.\.\n",
                              kind="compile")
    else:
        rc, err = ctrl_c_tool(cmd, tmp_path, work, kind="test", not_from_tool=False)
    assert_clean_interrupt("ci/validate-patch", rc, err)
    assert repo_state(repo) == before
    assert_clone_reset(work)
    with WorkClone(git_common_dir(repo)):  # the lock was released
        pass


@pytest.mark.history_cost(4)
def test_build_in_place_ctrl_c_restores_the_checkout(history: History, tmp_path: Path) -> None:
    """ci/build-qemu --in-place interrupted while a compile runs (held by compile_gate.py:
    the wiring patch is applied by then) reverts the patch, stops ninja and its compilers,
    says so in one line. Run on the work clone, which the test holds (its lock). A warm
    build of the same commit compiles nothing: the build dir's record of its last compile
    is dropped, so the device sources are compiled again (ivflat.ci.provenance)."""
    warm_build(history["repo"], history["tip"])
    with WorkClone(git_common_dir(history["repo"])) as wc:
        wc.checkout(history["tip"])
        (wc.path / "build-default" / provenance.RECORD).unlink()
        head = git(wc.path, "rev-parse", "HEAD")
        cmd = [sys.executable, str(BUILD_QEMU), "--source", str(wc.path), "--in-place"]
        rc, err = ctrl_c_tool(cmd, tmp_path, wc.path, kind="compile")
        assert rc == 130, err
        assert "Traceback" not in err, err
        assert err.strip().splitlines()[-1] == \
            "build-qemu: interrupted; the checkout was restored", err
        assert git(wc.path, "status", "--porcelain", "--untracked-files=no") == ""
        assert git(wc.path, "rev-parse", "HEAD") == head


def plain_diff(repo: Path, commit: str, dest: Path) -> Path:
    """The commit as `diff -u` output (no mail headers, no `diff --git` lines): what a
    developer saves from a review tool; validate-patch applies it with git apply."""
    def blob(rev: str) -> list[str]:  # unstripped: the file's last newline matters
        return subprocess.run(["git", "-C", str(repo), "show", rev], check=True,
                              capture_output=True, text=True).stdout.splitlines(keepends=True)

    out: list[str] = []
    for path in git(repo, "diff", "--name-only", f"{commit}^", commit).split():
        out += difflib.unified_diff(blob(f"{commit}^:{path}"), blob(f"{commit}:{path}"),
                                    f"a/{path}", f"b/{path}")
    dest.write_text("".join(out))
    return dest


@pytest.mark.parametrize("form", [
    pytest.param("format-patch", marks=pytest.mark.history_cost(20)),
    pytest.param("diff-u", marks=pytest.mark.history_cost(14))])
def test_validate_patch_reports_the_breakage(history: History, tmp_path: Path,
                                             form: str) -> None:
    """ci/validate-patch, given the breaking commit as a format-patch or a plain diff, exits 1
    with REGRESSED and the IVPOSITION test newly failing, each change reproduced in every
    round (3/3; the plain diff, which differs only in how it applies, with --confirm 1:
    1/1); it leaves the user's repo, its clone and the process table as they were, and its
    run directory keeps logs and JUnit of every side, never a QEMU binary."""
    repo, work = history["repo"], history["work"]
    rounds = 3 if form == "format-patch" else 1
    if form == "format-patch":
        patch = Path(git(repo, "format-patch", "-1", "-o", str(tmp_path), history["breaks"]))
    else:
        patch = plain_diff(repo, history["breaks"], tmp_path / "ivposition.diff")
    before = repo_state(repo)
    res = run_tool([sys.executable, str(VALIDATE), str(patch), "--source", str(repo),
                    "--base", f"{history['breaks']}^",
                    *(["--confirm", str(rounds)] if rounds != 3 else []), "--", *SELECT])
    assert res.returncode == 1, res.stdout + res.stderr
    newly = res.stdout.split("Newly failing")[1].split("\n\n")[0]
    assert "test_ivposition_reports_server_assigned_id" in newly
    # each changed test re-run on each side, the breakage every time; an entry is
    # its test id's line and what the 72 columns of the mail-ready report wrapped
    entries = [" ".join(e.split()) for e in re.split(r"\n(?=  \S)", newly) if "  [" in e
               or "\n      [" in e]
    assert entries and all(f"] (reproduced {rounds}/{rounds})" in e for e in entries), newly
    assert "REGRESSED" in res.stdout
    assert repo_state(repo) == before
    assert_clone_reset(work)
    assert processes_mentioning(str(work)) == []
    # the run keeps logs and JUnit, never QEMU binaries
    run_dir = Path(res.stderr.split("logs in ")[1].split()[0])
    assert (run_dir / "tests-before" / "junit.xml").exists()
    assert (run_dir / "tests-after" / "junit.xml").exists()
    assert (run_dir / "confirm" / f"before-{rounds}" / "junit.xml").exists()
    binaries = [p for p in run_dir.rglob("*") if p.is_file() and p.read_bytes()[:4] == b"\x7fELF"]
    assert binaries == []


@pytest.mark.history_cost(3)
def test_bad_input_is_a_clear_error(history: History, tmp_path: Path) -> None:
    """No traceback, exit 2, one line saying what is wrong; cheap (nothing is built)."""
    repo = history["repo"]
    cases = [
        ([str(BISECT), "HEAD~1", "HEAD", "--source", str(tmp_path)], "is not a git repository"),
        ([str(BISECT), "no-such-rev", "HEAD", "--source", str(repo)], "unknown revision"),
        ([str(BISECT), "HEAD", "HEAD~1", "--source", str(repo)], "not an ancestor"),
        ([str(BISECT), "HEAD~1", "HEAD", "--source", str(ROOT)], "does not look like a QEMU"),
        ([str(VALIDATE), str(tmp_path / "missing.patch"), "--source", str(repo)],
         "no such file"),
    ]
    junk = tmp_path / "junk.patch"
    junk.write_text("From: a@b\nSubject: [PATCH] junk\n\n---\n"
                    "--- a/no/such/file.c\n+++ b/no/such/file.c\n@@ -1 +1 @@\n-x\n+y\n")
    cases.append(([str(VALIDATE), str(junk), "--source", str(repo)], "does not apply"))
    for cmd, msg in cases:
        res = subprocess.run([sys.executable, *cmd], cwd=ROOT, capture_output=True,
                             text=True, timeout=scaled(300))
        assert res.returncode == 2, (cmd, res.stdout, res.stderr)
        assert msg in res.stderr, (cmd, res.stderr)
        assert "Traceback" not in res.stderr, res.stderr
