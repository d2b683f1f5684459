"""Fast self-tests of the ci/ tools' library and commands (no QEMU build: a tiny fake QEMU
repository that ci/build-qemu declines at once, and a private cache).

Why: the failure modes here gave wrong answers or a poisoned cache before -- a clone left
mid-`git am` by a killed run failed every later ci/validate-patch; an internal error (an
OSError, a truncated JUnit file) became exit 1, "bad" for `git bisect run`; ci/build-qemu
wrote to the user's repository; runs/ grew without bound.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ivflat.ci import wiring
from ivflat.ci.bisect import step_command, unfinished
from ivflat.ci.gitrepo import git_common_dir
from ivflat.ci.proc import InternalError
from ivflat.ci.qemubuild import user_source
from ivflat.ci.subprojects import NEEDED
from ivflat.ci.suite import new_run_dir, parse_junit
from ivflat.ci.trees import configure_stamp, origin_tree, subproject_donors
from ivflat.ci.workclone import WorkClone
from ivflat.host.cli import Exit
from ivflat.host.paths import REPO, cache_dir
from ivflat.host.timeouts import scaled

from .tools import BISECT, BUILD_QEMU, VALIDATE, fake_qemu_repo, git


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private cache, for this process and the tools it starts."""
    path = tmp_path / "cache"
    monkeypatch.setenv("IVSHMEM_SUITE_CACHE", str(path))
    return path


def tool(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=scaled(300), stdin=subprocess.DEVNULL)


def series(src: Path, tmp_path: Path) -> Path:
    patch = tmp_path / "series.patch"
    patch.write_text(git(src, "format-patch", "-1", "--stdout", "HEAD"))
    return patch


def test_clone_left_mid_am_and_mid_bisect_is_repaired(cache: Path, tmp_path: Path) -> None:
    """A run SIGKILLed in the middle of `git am` (and another in a bisect, holding git's
    index lock) left the clone so; the next ci/validate-patch and ci/bisect work as usual
    and leave the clone clean."""
    src = fake_qemu_repo(tmp_path / "qemu")
    with WorkClone(git_common_dir(src)) as wc:
        wc.checkout(git(src, "rev-parse", "HEAD~1"))
    conflicting = tmp_path / "conflict.patch"
    conflicting.write_text(git(src, "format-patch", "-1", "--stdout", "HEAD").replace(
        "-# hw/misc/meson.build", "-# something else"))
    am = subprocess.run(["git", "-C", str(wc.path), "-c", "user.name=x", "-c",
                         "user.email=x@y", "am", str(conflicting)], capture_output=True)
    assert am.returncode != 0 and (wc.path / ".git" / "rebase-apply").is_dir()
    git(wc.path, "bisect", "start", "HEAD", "HEAD~1")
    (wc.path / ".git" / "index.lock").touch()
    (wc.path / "hw" / "misc" / "meson.build").write_text("half-patched\n")

    res = tool(str(VALIDATE), str(series(src, tmp_path)), "--source", str(src),
               "--base", "HEAD~1")
    # the fake base cannot be built: exit 3 -- not "previous rebase directory ... exists"
    assert res.returncode == 3 and "base" in res.stderr, res.stderr
    assert "rebase" not in res.stderr and "Traceback" not in res.stderr, res.stderr
    res = tool(str(BISECT), "HEAD~1", "HEAD", "--source", str(src))
    assert res.returncode == 2 and "cannot be tested" in res.stderr, res.stderr
    gitdir = wc.path / ".git"
    for leftover in ("rebase-apply", "BISECT_START", "index.lock"):
        assert not (gitdir / leftover).exists(), leftover
    assert git(wc.path, "status", "--porcelain") == ""


def test_broken_clone_is_recreated(cache: Path, tmp_path: Path) -> None:
    """A clone broken beyond repair (HEAD garbage, as a crash mid-write leaves it) is cloned
    anew and swapped in, and the run goes on."""
    src = fake_qemu_repo(tmp_path / "qemu")
    with WorkClone(git_common_dir(src)) as wc:
        wc.checkout(git(src, "rev-parse", "HEAD"))
    (wc.path / ".git" / "HEAD").write_text("garbage\n")
    res = tool(str(BISECT), "HEAD~1", "HEAD", "--source", str(src))
    assert res.returncode == 2 and "cannot be tested" in res.stderr, res.stderr
    assert "cloning" in res.stderr, res.stderr
    assert git(wc.path, "rev-parse", "HEAD") == git(src, "rev-parse", "HEAD")
    assert sorted(p.name for p in wc.path.parent.iterdir()) == [wc.path.name,
                                                                wc.path.name + ".lock"]


def test_step_internal_error_aborts_the_bisect(cache: Path, tmp_path: Path) -> None:
    """An OSError inside a `git bisect run` step (here: its log directory cannot be
    created) is exit 128, which stops the bisect, with a loud message -- never 1 ("bad")."""
    src = fake_qemu_repo(tmp_path / "qemu")
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    res = tool(str(BISECT), "--step", "--run-dir", str(blocker / "run"), "--", "-k", "x",
               cwd=src)
    assert res.returncode == 128, res.stderr
    assert "INTERNAL ERROR" in res.stderr and "aborting the bisect" in res.stderr, res.stderr




@pytest.mark.parametrize("failure", ["harness-not-importable", "bad-argument", "no-run-dir"])
def test_step_failing_before_its_verdict_aborts_the_bisect(tmp_path: Path,
                                                           failure: str) -> None:
    """A `git bisect run` step that fails before it can judge -- the harness cannot be
    imported (the suite's checkout moved or was half updated under the bisect: here ci/
    beside an ivflat without its ci package), a bad argument -- exits ABORT, which stops
    `git bisect run`; the 1 of a Python traceback or the 2 of argparse would be taken as
    "bad" and go on to name a wrong first bad commit."""
    src = fake_qemu_repo(tmp_path / "qemu")
    (src / "configure").write_text("# three\n")
    git(src, "commit", "-q", "-a", "-m", "three")
    script, args = BISECT, ["--step", "--run-dir", str(tmp_path / "run")]
    if failure == "harness-not-importable":
        moved = tmp_path / "moved"
        (moved / "ci").mkdir(parents=True)
        shutil.copy(BISECT, moved / "ci" / "bisect")
        shutil.copy(REPO / "ci" / "_bootstrap.py", moved / "ci")
        (moved / "fixtures" / "ivflat").mkdir(parents=True)
        (moved / "fixtures" / "ivflat" / "__init__.py").write_text("")
        script = moved / "ci" / "bisect"
    elif failure == "bad-argument":
        args.append("--no-such-option")
    else:
        args = ["--step"]
    res = tool(str(script), *args, "--", "-k", "x", cwd=src)
    assert res.returncode == Exit.ABORT, res.stderr
    assert "aborting the bisect" in res.stderr, res.stderr
    if failure == "harness-not-importable":
        assert "No module named 'ivflat.ci'" in res.stderr, res.stderr
    git(src, "bisect", "start", "HEAD", "HEAD~2")
    try:
        run = subprocess.run(["git", "-C", str(src), "bisect", "run", sys.executable,
                              str(script), *args, "--", "-k", "x"], capture_output=True,
                             text=True, timeout=scaled(300), stdin=subprocess.DEVNULL)
    finally:
        git(src, "bisect", "reset")
    assert run.returncode != 0, run.stdout
    assert "is the first bad commit" not in run.stdout, run.stdout
    assert f"exit code {Exit.ABORT} from" in run.stdout + run.stderr, run.stdout + run.stderr
    # ci/bisect around such a run: the step died before it recorded anything, which is the
    # tools' failure (exit 3), never "bad input" (exit 2)
    with pytest.raises(InternalError, match="no step recorded why"):
        unfinished([], run.stdout + run.stderr)

def test_build_qemu_as_a_bisect_run_command_stops_on_no_verdict(tmp_path: Path) -> None:
    """`git bisect run ci/build-qemu --bisect-run ...`: a failure that says nothing of the
    commit (here bad usage, exit 2 without the option) stops the bisect with 128, where
    git would take 2 as "bad" and name a wrong first bad commit."""
    src = fake_qemu_repo(tmp_path / "qemu")
    (src / "configure").write_text("# three\n")
    git(src, "commit", "-q", "-a", "-m", "three")
    assert tool(str(BUILD_QEMU), "--rev", "HEAD").returncode == 2
    assert tool(str(BUILD_QEMU), "--bisect-run", "--rev", "HEAD").returncode == Exit.ABORT
    git(src, "bisect", "start", "HEAD", "HEAD~2")
    try:
        run = subprocess.run(["git", "-C", str(src), "bisect", "run", sys.executable,
                              str(BUILD_QEMU), "--bisect-run", "--rev", "HEAD"],
                             capture_output=True, text=True, timeout=scaled(300),
                             stdin=subprocess.DEVNULL)
    finally:
        git(src, "bisect", "reset")
    assert "is the first bad commit" not in run.stdout, run.stdout
    assert f"exit code {Exit.ABORT} from" in run.stdout + run.stderr, run.stdout + run.stderr


@pytest.mark.parametrize("cmd", ["bisect", "validate-patch"])
def test_tool_internal_error_is_exit_3(cache: Path, tmp_path: Path, cmd: str) -> None:
    """An OSError in the tool itself (the runs directory is a file) is exit 3 with a loud
    INTERNAL ERROR line: no verdict, not "bad input"."""
    src = fake_qemu_repo(tmp_path / "qemu")
    cache.mkdir()
    (cache / "runs").write_text("")
    args = (["HEAD~1", "HEAD"] if cmd == "bisect"
            else [str(series(src, tmp_path)), "--base", "HEAD~1"])
    res = tool(str(REPO / "ci" / cmd), *args, "--source", str(src))
    assert res.returncode == 3, res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith(f"ci/{cmd}: INTERNAL ERROR: "), \
        res.stderr


def test_truncated_junit_is_an_internal_error(tmp_path: Path) -> None:
    """A JUnit file cut short (a killed pytest, a full disk) is never read as "no test
    failed"."""
    whole = ('<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">'
             '<testcase classname="qtests.test_x" name="test_a"/>'
             '<testcase classname="qtests.test_x" name="test_b"><failure message="boom"/>'
             '</testcase></testsuite></testsuites>')
    xml = tmp_path / "junit.xml"
    xml.write_text(whole)
    assert parse_junit(xml)[0] == {"qtests.test_x::test_a": "passed",
                                   "qtests.test_x::test_b": "failed"}
    xml.write_text(whole[:len(whole) // 2])
    with pytest.raises(InternalError, match="cannot read the JUnit XML"):
        parse_junit(xml)


def test_runs_are_pruned(cache: Path) -> None:
    """<cache>/runs keeps the newest KEEP_RUNS runs per kind; other kinds are untouched."""
    runs = cache / "runs"
    for i in range(7):
        (runs / f"validate-2020010{i}-000000-x").mkdir(parents=True)
    (runs / "bisect-20200101-000000-x").mkdir()
    new = new_run_dir("validate", keep=5)
    left = sorted(p.name for p in runs.iterdir())
    assert left == ["bisect-20200101-000000-x", *[f"validate-2020010{i}-000000-x"
                                                  for i in range(3, 7)], new.name]


def test_build_qemu_exports_a_dirty_tree_without_writing_to_it(cache: Path,
                                                               tmp_path: Path) -> None:
    """ci/build-qemu --source DIR takes HEAD plus the uncommitted changes, with read-only
    git commands: the user's refs, stash, worktrees, index and objects stay as they were."""
    src = fake_qemu_repo(tmp_path / "qemu")
    (src / "configure").write_text("# uncommitted\n")

    def state() -> tuple[str, ...]:
        return (git(src, "for-each-ref"), git(src, "stash", "list"),
                git(src, "worktree", "list"), git(src, "count-objects", "-v"),
                (src / ".git" / "index").read_bytes().hex(),
                " ".join(sorted(p.name for p in (src / ".git").iterdir())))

    before = state()
    ident, tree = user_source(cache_dir(), src, None)
    assert ident.startswith(f"git-{git(src, 'rev-parse', 'HEAD')}-dirty-")
    assert (tree / "configure").read_text() == "# uncommitted\n"
    assert (tree / "hw/misc/meson.build").read_text() == "# two\n"
    assert state() == before
    res = tool(str(BUILD_QEMU), "--source", str(src))  # declined: no device
    assert res.returncode == 125 and "ivshmem-flat.c" in res.stderr, res.stderr
    assert state() == before


def test_build_qemu_skips_a_tree_no_variant_fits(cache: Path, tmp_path: Path) -> None:
    """ci/build-qemu --in-place on a tree whose device source no variant applies to: exit
    125 (bisect "skip") with the clear reason, and the checkout untouched."""
    src = fake_qemu_repo(tmp_path / "qemu", device=True)
    res = tool(str(BUILD_QEMU), "--source", str(src), "--in-place")
    assert res.returncode == 125, res.stderr
    assert wiring.NOT_APPLY in res.stderr and "10.0.patch" in res.stderr, res.stderr
    assert git(src, "status", "--porcelain") == ""


@pytest.mark.parametrize("flavour", ["sanitize", "coverage"])
def test_flavour_reaches_build_qemu(tmp_path: Path, flavour: str) -> None:
    """--sanitize/--coverage are handed to `ci/build-qemu --in-place` by both tools and by
    the --step command `git bisect run` runs (seen in the step's build.log and steps.jsonl).
    Cheap: a fake QEMU tree that build-qemu declines at once, a private cache (nothing lands
    in the real one, no sanitizer build ever starts)."""
    src = fake_qemu_repo(tmp_path / "qemu")
    cache = tmp_path / "cache"
    env = dict(os.environ, IVSHMEM_SUITE_CACHE=str(cache))

    def run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
        res = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                             text=True, timeout=scaled(300))
        assert "Traceback" not in res.stderr, res.stderr
        return res

    def first_line(pattern: str) -> str:
        (log,) = cache.glob(pattern)
        return log.read_text().splitlines()[0]

    res = run(str(BISECT), "HEAD~1", "HEAD", "--source", str(src), f"--{flavour}")
    assert res.returncode == 2 and "BAD" in res.stderr and "cannot be tested" in res.stderr
    assert f"({flavour} build)" in res.stderr, res.stderr
    (run_dir,) = cache.glob("runs/bisect-*")
    (rec,) = (json.loads(ln) for ln in (run_dir / "steps.jsonl").read_text().splitlines())
    assert rec["flavour"] == flavour and "ivshmem-flat.c" in rec["reason"], rec
    assert first_line("runs/bisect-*/steps/*/build.log").endswith(f"--in-place --{flavour}")

    # the command `git bisect run` gets, and what it does in the step
    step = step_command(tmp_path / "step-run", flavour, ["-k", "x"])
    assert step[2:] == ["--step", "--run-dir", str(tmp_path / "step-run"), f"--{flavour}",
                        "--", "-k", "x"]
    res = run(*step[1:], cwd=src)
    assert res.returncode == 125, res.stderr  # skip: no device in this tree
    assert json.loads((tmp_path / "step-run" / "steps.jsonl").read_text())["flavour"] == flavour

    series = tmp_path / "series.patch"
    series.write_text(git(src, "format-patch", "-1", "--stdout", "HEAD"))
    res = run(str(VALIDATE), str(series), "--source", str(src), "--base", "HEAD~1",
              f"--{flavour}")
    assert res.returncode == 3 and "base" in res.stderr, res.stderr  # cannot judge
    assert f"({flavour} build)" in res.stderr, res.stderr
    assert first_line("runs/validate-*/build-before.log").endswith(f"--in-place --{flavour}")

    res = run(str(BISECT), "HEAD~1", "HEAD", "--source", str(src), "--sanitize",
              "--coverage")
    assert res.returncode == 2 and "not allowed with" in res.stderr, res.stderr
    res = run(str(VALIDATE), str(series), "--sanitize", "--coverage")
    assert res.returncode == 2 and "not allowed with" in res.stderr, res.stderr


def _subprojects(tree: Path, have: tuple[str, ...]) -> None:
    """``subprojects/<name>.wrap`` for every needed one, a downloaded copy of *have*."""
    sub = tree / "subprojects"
    sub.mkdir(parents=True, exist_ok=True)
    for name in NEEDED:
        (sub / f"{name}.wrap").write_text(f"[wrap-git]\nrevision = r-{name}\n")
    for name in have:
        (sub / name).mkdir()
        (sub / name / "meson.build").write_text(f"project('{name}')\n")


def test_subproject_donors_user_tree_then_debian(cache: Path, tmp_path: Path) -> None:
    """The export of a git tree (no subprojects in git) takes the user's downloaded ones
    first, the rest from Debian's unpacked tree in the cache; a private clone's donor is the
    checkout it was cloned from; ci/build-qemu says what it copied from where."""
    user = fake_qemu_repo(tmp_path / "user", device=True)
    _subprojects(user, have=("keycodemapdb",))
    (user / ".gitignore").write_text("/subprojects/*/\n")
    git(user, "add", "subprojects", ".gitignore")
    git(user, "commit", "-q", "-m", "wraps")
    debian = cache / "src" / "debian" / "qemu-1_10.0.13+ds-1"
    _subprojects(debian, have=NEEDED)
    (debian / ".unpacked").write_text("1:10.0.13+ds-1\n")
    (cache / "src" / "debian" / "qemu-half").mkdir()  # no .unpacked: never a donor
    assert subproject_donors(cache, user) == [user, debian]
    res = tool(str(BUILD_QEMU), "--source", str(user))
    assert res.returncode == 125, res.stderr  # declined by the wiring, after the export
    said = [ln for ln in res.stderr.splitlines() if "subprojects:" in ln]
    assert said == [
        f"build-qemu: subprojects: keycodemapdb: copied from {user}/subprojects/keycodemapdb",
        *(f"build-qemu: subprojects: {n}: copied from {debian}/subprojects/{n}"
          for n in NEEDED[1:])], res.stderr
    (export,) = (cache / "src" / "git").glob("git-*[0-9a-f]")
    assert all((export / "subprojects" / n / "meson.build").is_file() for n in NEEDED)
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", "--shared", str(git_common_dir(user)), str(clone))
    assert origin_tree(clone) == user
    assert origin_tree(user) is None  # no origin


def test_build_dir_is_configured_afresh_when_the_options_change(tmp_path: Path) -> None:
    """An in-place bisect step from master back to 9.2 kept master's build dir; meson's
    regeneration failed on an option 9.2 does not know ("Unknown options: gdb") and the
    commit became a false skip (seen on the real history). So the configure stamp holds
    the options file: another meson_options.txt, another stamp, a fresh configure."""
    (tmp_path / "meson_options.txt").write_text("option('gdb', type: 'feature')\n")
    newer = configure_stamp(tmp_path, ["configure", "--x"])
    assert newer == configure_stamp(tmp_path, ["configure", "--x"])
    (tmp_path / "meson_options.txt").write_text("option('docs', type: 'feature')\n")
    assert configure_stamp(tmp_path, ["configure", "--x"]) != newer
    assert configure_stamp(tmp_path, ["configure", "--y"]).startswith("configure\n--y\n")
