"""Self-tests of ci/bisect and ci/validate-patch on a real (synthetic) QEMU history.

Why: both tools glue git, the build and the suite together, and the glue is where they
would silently give wrong answers (a bisect that names the wrong commit, a patch check that
reports no difference). So we build a small history on Debian's QEMU source -- harmless
commits, one commit that breaks IVPOSITION the way a developer plausibly would, a commit
that does not build (and its fix), more harmless commits -- and check that:

* ci/bisect names the breaking commit and the failing test, skipping the unbuildable commit;
* ci/validate-patch, given the breaking commit as a patch, reports the newly failing tests
  and exits non-zero;
* neither leaves bisect state, worktrees, changes or processes in the "user's" repository;
* Ctrl-C (SIGINT to the tool's process group, sent on a real progress event, never after a
  guessed delay) stops ci/bisect, ci/validate-patch and ci/build-qemu --in-place within
  seconds, with one line, no process left (QEMU included) and a clone without bisect state
  or wiring patch, and a new bisect still gives the right answer;
* --sanitize/--coverage reach ci/build-qemu (cheaply: a fake tree build-qemu declines).

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
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from ivflat.paths import load_ci_tool

ROOT = Path(__file__).resolve().parents[2]
BISECT = ROOT / "ci" / "bisect"
VALIDATE = ROOT / "ci" / "validate-patch"
SELECT = ["-k", "test_ivposition"]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]


def _load_lib():
    return load_ci_tool("bisect")


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
    """Run a tool to completion; on timeout or any failure, it is killed with everything it
    started (see started_tool)."""
    with started_tool(cmd) as proc:
        try:
            out, err = proc.communicate(timeout=3000)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{cmd[1]} still running after 3000s")
    err = err.decode(errors="replace")
    sys.stderr.write(err)  # shown by pytest on failure: the tools' progress lines
    return subprocess.CompletedProcess(cmd, proc.returncode, out.decode(errors="replace"), err)


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


MARKER_VAR = "IVF_CI_SELFTEST_MARKER"


def marked_pids(marker: str) -> list[int]:
    """Processes whose environment carries *marker*: everything a tool started, however
    deep, whatever session it moved to (QEMU runs in its own); found through /proc."""
    pids = []
    needle = f"{MARKER_VAR}={marker}".encode()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError):
                if needle in (d / "environ").read_bytes().split(b"\0"):
                    pids.append(int(d.name))
    return pids


@contextlib.contextmanager
def started_tool(cmd: list[str], env: dict[str, str] | None = None):
    """Start a tool with an environment marker (and in its own session, as a shell would).
    Whatever happens in the test, the tool and then every process carrying the marker are
    SIGKILLed (the tools run their children in sessions of their own, the harness runs
    QEMU in one: a process group kill would miss them), and the tool is reaped."""
    marker = uuid.uuid4().hex
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, start_new_session=True,
                            env=dict(os.environ, **(env or {}), **{MARKER_VAR: marker}))
    proc.marker = marker  # type: ignore[attr-defined]
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        for _ in range(100):  # each pass kills all it finds; killed processes fork no more
            left = marked_pids(marker)
            if not left:
                break
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        proc.communicate()


def wait_for(proc: subprocess.Popen, timeout: float, pattern: str | None = None,
             ready: socket.socket | None = None, from_step: bool = True) -> str:
    """A bounded, event-driven wait (select on the tool's stderr and the ready socket of
    qtests/ci/ready_plugin.py; no polling) until *pattern* (a regex; end it with a newline
    to match whole lines) matches the stderr read so far, or, with *ready*, until a test
    body runs (QEMU up) in a pytest -- with *from_step*, one the tool did not start itself,
    i.e. one a `git bisect run` step started. Returns the stderr read."""
    assert proc.stderr is not None
    fd = proc.stderr.fileno()
    data = b""
    deadline = time.monotonic() + timeout
    while True:
        if pattern and re.search(pattern, data.decode(errors="replace"), re.S | re.M):
            return data.decode(errors="replace")
        left = deadline - time.monotonic()
        assert left > 0, f"nothing awaited within {timeout}s:\n{data.decode()}"
        readable = select.select([fd, *([ready] if ready else [])], [], [], left)[0]
        if fd in readable:
            chunk = os.read(fd, 65536)
            assert chunk, f"the tool exited first:\n{data.decode()}"
            data += chunk
        if ready in readable:
            parent = int(ready.recv(4096).split()[0])
            if parent != proc.pid or not from_step:
                return data.decode(errors="replace")


def interrupt(proc: subprocess.Popen, timeout: float) -> tuple[int, str, str, float]:
    """Ctrl-C as a terminal sends it (SIGINT to the foreground process group, i.e. the
    tool's); returns the exit status, the rest of stdout/stderr and how long the exit took."""
    t0 = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {timeout}s after SIGINT")
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"), \
        time.monotonic() - t0


def assert_clean_interrupt(tool: str, rc: int, err: str, seconds: float) -> None:
    """Exit 130 within bounds, one clear line, no traceback from any level."""
    assert rc == 130, (rc, err)
    assert seconds < 30, f"{tool} took {seconds:.1f}s to exit after SIGINT"
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    said = [ln for ln in err.splitlines() if "interrupted" in ln]
    assert said == [f"{tool}: interrupted; the work clone was reset, your checkout is "
                    "untouched"], err


def no_leftovers(proc: subprocess.Popen, work: Path) -> None:
    assert marked_pids(proc.marker) == []  # type: ignore[attr-defined]
    no_leftover_processes(work)


def ctrl_c(cmd: list[str], tmp_path: Path, work: Path, pattern: str | None = None,
           from_step: bool = True) -> tuple[int, str, float]:
    """Start a tool, wait for its *pattern* on stderr (or, without one, for a test body with
    QEMU up, announced by qtests/ci/ready_plugin.py), Ctrl-C it, and check nothing it
    started is left. Returns the exit status, the stderr seen and how long the exit took."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as ready:
        ready.bind(str(tmp_path / "ready.sock"))
        with started_tool(cmd, {"IVF_CI_READY_SOCKET": str(tmp_path / "ready.sock")}) as proc:
            if pattern:
                seen = wait_for(proc, 600, pattern=pattern)
            else:
                seen = wait_for(proc, 600, ready=ready, from_step=from_step)
            rc, _out, err, seconds = interrupt(proc, timeout=60)
            sys.stderr.write(seen + err)
            no_leftovers(proc, work)
    return rc, seen + err, seconds


def assert_clone_reset(work: Path) -> None:
    gitdir = work / ".git"
    for leftover in ("BISECT_START", "BISECT_LOG", "rebase-apply", "index.lock"):
        assert not (gitdir / leftover).exists(), leftover
    assert git(work, "for-each-ref", "refs/bisect") == ""
    # the transient wiring patch (and any half-applied series) reverted
    assert git(work, "status", "--porcelain", "--untracked-files=no") == ""


@pytest.mark.parametrize("when", ["building", "testing"])
def test_bisect_ctrl_c_resets_the_clone(history: dict, tmp_path: Path, when: str) -> None:
    """Ctrl-C in a step of `git bisect run` (after it skipped the unbuildable commit): while
    it builds (its "building ..." line), or while a test body runs with QEMU up (a datagram
    from qtests/ci/ready_plugin.py in a pytest started by the step)."""
    repo, lib = history["repo"], history["lib"]
    work = lib.WorkClone(lib.git_common_dir(repo)).path
    before = repo_state(repo)
    cmd = [sys.executable, str(BISECT), history["base"], history["tip"], "--source", str(repo),
           "--", *SELECT, "-p", "qtests.ci.ready_plugin"]
    rc, err, seconds = ctrl_c(cmd, tmp_path, work, pattern=(
        r"SKIP \(cannot build.*?: building \.\.\.\n" if when == "building" else None))
    assert_clean_interrupt("ci/bisect", rc, err, seconds)
    assert repo_state(repo) == before
    assert_clone_reset(work)
    if when == "building":
        # the lock is released and the clone is usable: a new run gives the right answer
        res = run_tool(cmd)
        assert res.returncode == 0, res.stdout + res.stderr
        assert f"First bad commit: {history['breaks']}" in res.stdout
    else:
        with lib.WorkClone(lib.git_common_dir(repo)):  # the lock was released
            pass


@pytest.mark.parametrize("when", ["building", "testing"])
def test_validate_patch_ctrl_c_resets_the_clone(history: dict, tmp_path: Path,
                                                when: str) -> None:
    """Ctrl-C while the patched tree builds in the clone (the series applied with `git am`,
    then the wiring patch), or while the suite runs on the base build with QEMU up."""
    repo, lib = history["repo"], history["lib"]
    work = lib.WorkClone(lib.git_common_dir(repo)).path
    patch = Path(git(repo, "format-patch", "-1", "-o", str(tmp_path), history["breaks"]))
    before = repo_state(repo)
    cmd = [sys.executable, str(VALIDATE), str(patch), "--source", str(repo),
           "--base", f"{history['breaks']}^", "--", *SELECT, "-p", "qtests.ci.ready_plugin"]
    rc, err, seconds = ctrl_c(cmd, tmp_path, work, from_step=False, pattern=(
        r"building patched .*\.\.\.\n" if when == "building" else None))
    assert_clean_interrupt("ci/validate-patch", rc, err, seconds)
    assert repo_state(repo) == before
    assert_clone_reset(work)
    with lib.WorkClone(lib.git_common_dir(repo)):  # the lock was released
        pass


def test_build_in_place_ctrl_c_restores_the_checkout(history: dict, tmp_path: Path) -> None:
    """ci/build-qemu --in-place interrupted while ninja runs (its "$ ninja" line: the wiring
    patch is applied by then) reverts the patch, stops ninja and its compilers, says so in
    one line. Run on the work clone, which the test holds (its lock) meanwhile."""
    repo, lib = history["repo"], history["lib"]
    with lib.WorkClone(lib.git_common_dir(repo)) as wc:
        wc.checkout(history["tip"])
        head = git(wc.path, "rev-parse", "HEAD")
        cmd = [sys.executable, str(ROOT / "ci" / "build-qemu"), "--source", str(wc.path),
               "--in-place"]
        rc, err, seconds = ctrl_c(cmd, tmp_path, wc.path, pattern=r"^build-qemu: \$ ninja .*\n")
        assert rc == 130, err
        assert seconds < 30, seconds
        assert "Traceback" not in err, err
        assert err.strip().splitlines()[-1] == \
            "build-qemu: interrupted; the checkout was restored", err
        assert git(wc.path, "status", "--porcelain", "--untracked-files=no") == ""
        assert git(wc.path, "rev-parse", "HEAD") == head


def fake_qemu_repo(path: Path, env: dict[str, str]) -> Path:
    """Just enough of a QEMU tree for the tools to accept it and for ci/build-qemu to
    decline it at once (no hw/misc/ivshmem-flat.c: exit 125) -- nothing is ever built."""
    for rel in ("configure", "hw/misc/meson.build", "hw/arm/meson.build"):
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_text(f"# {rel}\n")
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "one"]):
        subprocess.run(["git", "-C", str(path), *cmd], check=True, env=env,
                       stdout=subprocess.DEVNULL)
    (path / "hw/misc/meson.build").write_text("# two\n")
    subprocess.run(["git", "-C", str(path), "commit", "-q", "-a", "-m", "two"], check=True,
                   env=env)
    return path


@pytest.mark.parametrize("flavour", ["sanitize", "coverage"])
def test_flavour_reaches_build_qemu(tmp_path: Path, flavour: str) -> None:
    """--sanitize/--coverage are handed to `ci/build-qemu --in-place` by both tools and by
    the --step command `git bisect run` runs (seen in the step's build.log and steps.jsonl).
    Cheap: a fake QEMU tree that build-qemu declines at once, a private cache (nothing lands
    in the real one, no sanitizer build ever starts)."""
    lib = _load_lib()
    src = fake_qemu_repo(tmp_path / "qemu", dict(os.environ, **lib.FIXED_ENV))
    cache = tmp_path / "cache"
    env = dict(os.environ, IVSHMEM_SUITE_CACHE=str(cache))

    def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
        res = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                             text=True, timeout=120)
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
    step = lib.step_command(tmp_path / "step-run", flavour, ["-k", "x"])
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
