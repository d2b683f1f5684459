"""Self-tests of ci/bisect and ci/validate-patch on a real (synthetic) QEMU history.

Why: both tools glue git, the build and the suite together, and the glue is where they
would silently give wrong answers (a bisect that names the wrong commit, a patch check that
reports no difference). So we build a small history on Debian's QEMU source -- harmless
commits, one commit that breaks IVPOSITION the way a developer plausibly would, a commit
that does not build (and its fix), more harmless commits -- and check that:

* ci/bisect names the breaking commit and the failing test, skipping the unbuildable commit;
* ci/validate-patch, given the breaking commit as a patch, reports the newly failing tests
  and exits non-zero;
* neither leaves bisect state, worktrees, changes or processes in the "user's" repository.

The history is cached (keyed by the Debian version and the recipe below); builds reuse the
private clone's build dir and ccache, so a re-run costs a few incremental builds. Needs the
reference build (ci/build-qemu) for the Debian source tree. Marked slow: run with
``--run-slow``.
"""

from __future__ import annotations

import contextlib
import difflib
import fcntl
import hashlib
import importlib.machinery
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BISECT = ROOT / "ci" / "bisect"
VALIDATE = ROOT / "ci" / "validate-patch"
SELECT = ["-k", "test_ivposition"]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]


def _load_lib():
    loader = importlib.machinery.SourceFileLoader("ci_bisect_lib", str(BISECT))
    spec = importlib.util.spec_from_loader("ci_bisect_lib", loader)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["ci_bisect_lib"] = mod  # dataclasses resolve annotations through it
    loader.exec_module(mod)
    return mod


DEV = "hw/misc/ivshmem-flat.c"
UNIMP = "hw/misc/unimp.c"
DOC = "docs/system/devices/ivshmem-flat.rst"

# (subject, file, old, new, role). Each commit touches one file, as real commits do.
HISTORY: list[tuple[str, str, str, str, str]] = [
    ("docs/ivshmem-flat: fix double space", DOC,
     "an aarch64 VM  (using", "an aarch64 VM (using", "harmless"),
    ("ivshmem-flat: clarify the vector-info comment", DEV,
     "passed to the handler via the 'opaque' pointer.",
     "passed to the handler via its 'opaque' pointer.", "harmless"),
    ("ivshmem-flat: report IVPOSITION 1-based like the guest driver expects", DEV,
     "ret = s->own.id;", "ret = s->own.id + 1;", "breaks"),
    # 4th of 8: the midpoint, so the bisect's first step meets it and must skip it.
    ("hw/misc/unimp: log the access size", UNIMP,
     'qemu_log_mask(LOG_UNIMP, "%s: unimplemented device read  "',
     'qemu_log_mask(LOG_UNIMP | unimp_size_log, "%s: unimplemented device read  "',
     "unbuildable"),
    ("hw/misc/unimp: fix build", UNIMP,
     'qemu_log_mask(LOG_UNIMP | unimp_size_log, "%s: unimplemented device read  "',
     'qemu_log_mask(LOG_UNIMP, "%s: unimplemented device read  "', "harmless"),
    ("hw/misc/unimp: comment wording", UNIMP,
     "This is a dummy device which accepts", "This is a stub device which accepts",
     "harmless"),
    ("ivshmem-flat: comment on the INTMASK read", DEV,
     "ret = 0; /* Ignore read since all bits are reserved in rev 1. */\n        break;\n"
     "    case INTSTATUS:",
     "ret = 0; /* Reads as zero: all bits are reserved in rev 1. */\n        break;\n"
     "    case INTSTATUS:", "harmless"),
    ("docs/ivshmem-flat: wording", DOC,
     "is meant to be used on machines", "is intended for machines", "harmless"),
]
RECIPE = hashlib.sha256(json.dumps(HISTORY).encode()).hexdigest()[:12]


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


@contextlib.contextmanager
def selftest_lock(cache: Path):
    """One self-test at a time per cache, across xdist workers and concurrent runs: the tools
    share one work clone per repository and refuse a second user at once (by design), and
    the history is built in place. A blocking flock waits exactly until the holder is done;
    the module's pytest timeout bounds it."""
    path = cache / "selftest" / ".lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@pytest.fixture(scope="module")
def history() -> dict:
    """The synthetic repository (a --shared clone of the Debian base repo plus HISTORY),
    created once per Debian version and recipe; returns its path and commit ids."""
    lib = _load_lib()
    try:
        base_repo = lib.debian_base_repo()
    except lib.UserError as exc:
        pytest.skip(str(exc))
    cache = lib.cache_dir()
    with selftest_lock(cache):
        return _make_history(lib, base_repo, cache)


@pytest.fixture(autouse=True)
def _one_at_a_time(history: dict):
    with selftest_lock(history["lib"].cache_dir()):
        yield


def _make_history(lib, base_repo: Path, cache: Path) -> dict:
    repo = cache / "selftest" / f"history-{base_repo.name}-{RECIPE}"
    if not (repo / ".git" / "ivflat-ready").exists():
        tmp = repo.with_name(repo.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "clone", "-q", "--shared", str(base_repo), str(tmp)],
                       check=True)
        env = dict(os.environ, **lib.FIXED_ENV)
        for subject, path, old, new, _role in HISTORY:
            f = tmp / path
            text = f.read_text()
            assert text.count(old) == 1, f"recipe out of date for {path}: {old!r}"
            f.write_text(text.replace(old, new))
            subprocess.run(["git", "-C", str(tmp), "commit", "-q", "-a", "-m", subject],
                           check=True, env=env)
        (tmp / ".git" / "ivflat-ready").write_text(RECIPE + "\n")
        shutil.rmtree(repo, ignore_errors=True)
        tmp.rename(repo)
    commits = git(repo, "rev-list", "--reverse", "HEAD").split()
    base, rest = commits[0], commits[1:]
    roles = {role: [c for c, h in zip(rest, HISTORY, strict=True) if h[4] == role]
             for role in ("harmless", "breaks", "unbuildable")}
    return {"repo": repo, "base": base, "tip": rest[-1], "breaks": roles["breaks"][0],
            "unbuildable": roles["unbuildable"][0], "lib": lib}


def repo_state(repo: Path) -> tuple:
    """Everything a tool must leave as it found it in the user's repository."""
    gitdir = repo / ".git"
    return (git(repo, "rev-parse", "HEAD"), git(repo, "status", "--porcelain"),
            git(repo, "worktree", "list", "--porcelain"),
            sorted(p.name for p in gitdir.iterdir()),
            git(repo, "for-each-ref", "--format=%(refname)"))


def run_tool(cmd: list[str]) -> subprocess.CompletedProcess:
    """Run a tool in its own session, so a hung tool is killed as a whole on timeout."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=3000)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait()
    sys.stderr.write(err)  # shown by pytest on failure: the tools' progress lines
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def no_leftover_processes(work: Path) -> None:
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    stray = [ln for ln in ps.splitlines() if str(work) in ln or "ci/bisect --step" in ln]
    assert not stray, stray


def test_bisect_names_the_breaking_commit(history: dict) -> None:
    repo, lib = history["repo"], history["lib"]
    before = repo_state(repo)
    res = run_tool([sys.executable, str(BISECT), history["base"], history["tip"],
                    "--source", str(repo), "--", *SELECT])
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"First bad commit: {history['breaks']}" in res.stdout
    assert "test_ivposition_reports_server_assigned_id" in res.stdout.split(
        "Failing tests at it:")[1]
    # The unbuildable commit (the first midpoint) was skipped with the reason, not judged.
    run_dir = Path(res.stderr.split("logs in ")[1].split()[0])
    steps = lib.load_steps(run_dir)
    unbuildable = steps[history["unbuildable"]]
    assert unbuildable["verdict"] == "skip", unbuildable
    assert "build failed" in unbuildable["reason"], unbuildable
    assert steps[history["base"]]["verdict"] == "good"
    assert steps[history["tip"]]["verdict"] == "bad"
    assert repo_state(repo) == before
    work = lib.WorkClone(lib.git_common_dir(repo)).path
    assert not (work / ".git" / "BISECT_START").exists()
    assert git(work, "status", "--porcelain", "--untracked-files=no") == ""
    no_leftover_processes(work)


def plain_diff(repo: Path, commit: str, dest: Path) -> Path:
    """The commit as `diff -u` output (no mail headers, no `diff --git` lines): what a
    developer saves from a review tool; validate-patch applies it with git apply."""
    def blob(rev: str) -> list[str]:  # unstripped: the file's last newline matters
        return subprocess.run(["git", "-C", str(repo), "show", rev], check=True,
                              capture_output=True, text=True).stdout.splitlines(keepends=True)

    out = []
    for path in git(repo, "diff", "--name-only", f"{commit}^", commit).split():
        out += difflib.unified_diff(blob(f"{commit}^:{path}"), blob(f"{commit}:{path}"),
                                    f"a/{path}", f"b/{path}")
    dest.write_text("".join(out))
    return dest


@pytest.mark.parametrize("form", ["format-patch", "diff-u"])
def test_validate_patch_reports_the_breakage(history: dict, tmp_path: Path, form: str) -> None:
    repo, lib = history["repo"], history["lib"]
    if form == "format-patch":
        patch = Path(git(repo, "format-patch", "-1", "-o", str(tmp_path), history["breaks"]))
    else:
        patch = plain_diff(repo, history["breaks"], tmp_path / "ivposition.diff")
    before = repo_state(repo)
    res = run_tool([sys.executable, str(VALIDATE), str(patch), "--source", str(repo),
                    "--base", f"{history['breaks']}^", "--", *SELECT])
    assert res.returncode == 1, res.stdout + res.stderr
    newly = res.stdout.split("Newly failing")[1].split("\n\n")[0]
    assert "test_ivposition_reports_server_assigned_id" in newly
    assert "REGRESSED" in res.stdout
    assert repo_state(repo) == before
    work = lib.WorkClone(lib.git_common_dir(repo)).path
    assert not (work / ".git" / "rebase-apply").exists()
    assert git(work, "status", "--porcelain", "--untracked-files=no") == ""
    no_leftover_processes(work)


def test_bad_input_is_a_clear_error(history: dict, tmp_path: Path) -> None:
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
                             text=True, timeout=300)
        assert res.returncode == 2, (cmd, res.stdout, res.stderr)
        assert msg in res.stderr, (cmd, res.stderr)
        assert "Traceback" not in res.stderr, res.stderr
