"""The ci/ tools never write to a git repository around their cache (fast: a tiny fake QEMU
repository, nothing is built).

Why: the GitLab job puts the cache inside the QEMU tree under test
(``IVSHMEM_SUITE_CACHE=$CI_PROJECT_DIR/...``), a dotfiles ``$HOME`` puts it inside another
repository. git run on a work clone whose ``.git`` is broken (no HEAD after a crash or a full
disk) walked up into that enclosing repository, and the clone's repair (``reset --hard``,
``clean -ffd``, deleting ``refs/bisect/*``) destroyed the work there. Here the enclosing
repository holds every kind of uncommitted work, the clone is broken every way the repair
handles, the tools run, and the enclosing repository must be byte for byte as it was.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from ivflat.ci import fixes
from ivflat.ci.bisect import _bisect_run
from ivflat.ci.gitrepo import git_common_dir
from ivflat.ci.suite import new_run_dir
from ivflat.ci.workclone import WorkClone

from .tools import BISECT, BUILD_QEMU, VALIDATE, fake_qemu_repo, git, run_tool


def clone_git(clone: Path, *args: str) -> str:
    """git on the clone and nothing else (the test's own check must not walk up either)."""
    return git(clone, f"--git-dir={clone / '.git'}", f"--work-tree={clone}", *args)


def outer_repo(path: Path) -> Path:
    """A developer's repository with work in every state git knows: a modified tracked
    file, a staged change, an untracked file, a bisect under way (refs/bisect/*), a stash.
    The cache inside it is in .git/info/exclude, as a CI project would ignore it."""
    path.mkdir()
    for rel in ("tracked.c", "staged.c", "sub/deep.c"):
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_text(f"/* {rel} */\n")
    git(path, "init", "-q")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "one")
    (path / "tracked.c").write_text("/* stashed */\n")
    git(path, "stash", "-q")
    (path / "tracked.c").write_text("/* modified, not staged */\n")
    (path / "staged.c").write_text("/* staged */\n")
    git(path, "add", "staged.c")
    (path / "untracked.c").write_text("/* untracked */\n")
    git(path, "update-ref", "refs/bisect/bad", "HEAD")
    (path / ".git" / "info" / "exclude").write_text("/cache/\n")
    return path


def snapshot(repo: Path, skip: Path) -> dict[str, str]:
    """Every file and directory under *repo* (``.git`` included, *skip* left out): type,
    mode, mtime and a hash of its bytes; and what git says of it (read without any lock:
    plain `git status` would refresh the index)."""
    seen = {}
    for root, dirs, files in os.walk(repo):
        dirs[:] = [d for d in dirs if Path(root, d) != skip]
        for p in (Path(root), *(Path(root, f) for f in files)):
            st = p.lstat()
            data = (os.readlink(p).encode() if p.is_symlink()
                    else p.read_bytes() if p.is_file() else b"")
            seen[str(p.relative_to(repo))] = (f"{st.st_mode:o} {st.st_mtime_ns} "
                                              f"{hashlib.sha256(data).hexdigest()[:16]}")
    seen["git status"] = subprocess.run(
        ["git", "--no-optional-locks", "-C", str(repo), "status", "--porcelain=v2",
         "--untracked-files=all"], check=True, capture_output=True, text=True).stdout
    return seen


def _am_conflict(clone: Path) -> None:
    head = git(clone, "rev-parse", "HEAD")
    git(clone, "checkout", "-q", "--detach", "HEAD~1")
    patch = git(clone, "format-patch", "-1", "--stdout", head).replace(
        "-# hw/misc/meson.build", "-# something else")
    res = subprocess.run(["git", "-C", str(clone), "-c", "user.name=x", "-c",
                          "user.email=x@y", "am"], input=patch, text=True,
                         capture_output=True)
    assert res.returncode != 0 and (clone / ".git" / "rebase-apply").is_dir(), res


def _merge_states(clone: Path) -> None:
    head = git(clone, "rev-parse", "HEAD")
    for name in ("MERGE_HEAD", "CHERRY_PICK_HEAD", "REVERT_HEAD"):
        (clone / ".git" / name).write_text(head + "\n")
    (clone / ".git" / "MERGE_MSG").write_text("merge\n")
    (clone / ".git" / "sequencer").mkdir()
    (clone / ".git" / "rebase-merge").mkdir()


def _only_objects_and_refs(clone: Path) -> None:
    for p in (clone / ".git").iterdir():
        if p.name not in ("objects", "refs"):
            shutil.rmtree(p) if p.is_dir() else p.unlink()


def _bisecting(clone: Path) -> None:
    git(clone, "bisect", "start", "HEAD", "HEAD~1")


def _locks(clone: Path) -> None:
    for name in ("index.lock", "HEAD.lock", "packed-refs.lock", "config.lock"):
        (clone / ".git" / name).write_text("")


def _dirty(clone: Path) -> None:
    (clone / "configure").write_text("half-patched\n")
    (clone / "configure.orig").write_text("left by patch(1)\n")


BREAKAGES: dict[str, Callable[[Path], object]] = {  # what they return is not used
    "no HEAD": lambda clone: (clone / ".git" / "HEAD").unlink(),
    "only objects and refs": _only_objects_and_refs,
    "HEAD garbage": lambda clone: (clone / ".git" / "HEAD").write_text("garbage\n"),
    "mid am": _am_conflict,
    "mid merge, cherry-pick, rebase": _merge_states,
    "mid bisect": _bisecting,
    "stale locks": _locks,
    "corrupt index": lambda clone: (clone / ".git" / "index").write_bytes(b"DIRC garbage"),
    "objects gone": lambda clone: (clone / ".git" / "objects" / "info" / "alternates").unlink(),
    "no .git": lambda clone: shutil.rmtree(clone / ".git"),
    "dirty work tree": _dirty,
}


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """The user's QEMU repository (outside), the enclosing repository with the cache in it,
    and a work clone of the first made by the tools' own code."""
    outer = outer_repo(tmp_path / "outer")
    cache = outer / "cache"
    monkeypatch.setenv("IVSHMEM_SUITE_CACHE", str(cache))
    src = fake_qemu_repo(tmp_path / "qemu")
    with WorkClone(git_common_dir(src)) as wc:
        wc.checkout(git(src, "rev-parse", "HEAD"))
    return {"outer": outer, "cache": cache, "src": src, "clone": wc.path}


def _drive(how: str, w: dict[str, Path], tmp_path: Path, env: dict[str, str]) -> None:
    src = w["src"]
    if how == "library":
        with WorkClone(git_common_dir(src)) as wc:
            wc.checkout(git(src, "rev-parse", "HEAD~1"))
        return
    if how == "ci/bisect":
        res = run_tool([str(BISECT), "HEAD~1", "HEAD", "--source", str(src)], env)
        assert res.returncode == 2 and "cannot be tested" in res.stderr, res.stderr
        return
    series = tmp_path / "series.patch"
    series.write_text(git(src, "format-patch", "-1", "--stdout", "HEAD"))
    res = run_tool([str(VALIDATE), str(series), "--source", str(src), "--base", "HEAD~1"], env)
    assert res.returncode == 3 and "base" in res.stderr, res.stderr  # the fake cannot build


@pytest.mark.parametrize("how", ["library", "ci/bisect", "ci/validate-patch"])
@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_broken_clone_never_reaches_the_enclosing_repo(world: dict[str, Path],
                                                       tmp_path: Path, breakage: str,
                                                       how: str) -> None:
    """Repair or recreate the broken clone as ci/bisect and ci/validate-patch do; the
    enclosing repository is untouched and the clone works again."""
    outer, clone = world["outer"], world["clone"]
    before = snapshot(outer, world["cache"])
    BREAKAGES[breakage](clone)
    _drive(how, world, tmp_path, {"IVSHMEM_SUITE_CACHE": str(world["cache"])})
    assert snapshot(outer, world["cache"]) == before
    assert clone_git(clone, "status", "--porcelain") == ""
    assert clone_git(clone, "for-each-ref", "refs/bisect") == ""


def test_hook_environment_never_redirects_the_tools(world: dict[str, Path],
                                                    tmp_path: Path) -> None:
    """A tool started from a hook of the enclosing repository inherits $GIT_DIR,
    $GIT_WORK_TREE and $GIT_INDEX_FILE naming it: the clone's repair must not reset that
    repository, and --source must not be read from it."""
    outer = world["outer"]
    before = snapshot(outer, world["cache"])
    _merge_states(world["clone"])
    hook = {"IVSHMEM_SUITE_CACHE": str(world["cache"]), "GIT_DIR": str(outer / ".git"),
            "GIT_WORK_TREE": str(outer), "GIT_INDEX_FILE": str(outer / ".git" / "index")}
    for how in ("ci/bisect", "ci/validate-patch"):
        _drive(how, world, tmp_path, hook)
    assert snapshot(outer, world["cache"]) == before


def test_other_private_trees_never_reach_the_enclosing_repo(world: dict[str, Path],
                                                             tmp_path: Path) -> None:
    """Every other tree the tools write in the cache, run inside the enclosing repository:
    the export of a dirty checkout (`git apply` of its diff), the fix series' copy (`git
    apply` of each patch), `ci/build-qemu --in-place` on the clone, and `git bisect
    start`/`run` in the clone (each step declined by the build: all skips)."""
    outer, cache, src = world["outer"], world["cache"], world["src"]
    env = {"IVSHMEM_SUITE_CACHE": str(cache)}
    git(src, "commit", "-q", "--allow-empty", "-m", "three")
    before = snapshot(outer, cache)

    (src / "configure").write_text("# uncommitted\n")
    res = run_tool([str(BUILD_QEMU), "--source", str(src)], env)
    assert res.returncode == 125, res.stderr  # exported, then declined: no device
    (export,) = (cache / "src" / "git").glob("git-*-dirty-*[0-9a-f]")
    assert (export / "configure").read_text() == "# uncommitted\n"
    git(src, "checkout", "-q", "--", "configure")

    series = tmp_path / "fixes"
    series.mkdir()
    (series / "0001-new-file.patch").write_text(
        "--- /dev/null\n+++ b/hw/misc/new.c\n@@ -0,0 +1 @@\n+/* new */\n")
    dest = cache / "src" / "fixes" / "x"
    dest.mkdir(parents=True)
    info = fixes.fill(export, dest, tmp_path / "work", series)
    assert info["patches"] == ["0001-new-file.patch"]
    assert (dest / "hw/misc/new.c").read_text() == "/* new */\n"

    with WorkClone(git_common_dir(src)) as wc:
        res = run_tool([str(BUILD_QEMU), "--source", str(wc.path), "--in-place"], env)
        assert res.returncode == 125, res.stderr
        head, good = git(src, "rev-parse", "HEAD"), git(src, "rev-parse", "HEAD~2")
        wc.checkout(head)
        clone_git(wc.path, "bisect", "start", head, good)
        first, candidates, text = _bisect_run(wc, new_run_dir("bisect"), "default",
                                              ["-k", "x"])
        assert first is None and len(candidates) == 2, text
    assert snapshot(outer, cache) == before
