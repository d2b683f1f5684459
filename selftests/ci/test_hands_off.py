"""The ci/ tools delete and restore only what they created (fast: tiny trees, nothing is
built, a private cache).

Why: ``ci/build-qemu --in-place`` wiped a developer's own ``build-coverage/`` (no stamp of
ours: "reconfigure") and, after the build, `git checkout HEAD --` the files the wiring
patch touched, throwing away edits saved to them during the build (and deleting their
``*.orig``/``*.rej``). Every new run pruned ``<cache>/runs`` to the newest few, live runs
included: two jobs on one cache (a shared CI runner) deleted each other's logs, JUnit and
series, and a bisect died on its own missing ``steps.jsonl``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ivflat.ci import wiring
from ivflat.ci.qemubuild import OWNED, TOOLS_REQS
from ivflat.ci.suite import new_run_dir
from ivflat.ci.wiring import sha
from ivflat.device.board import DEVICE_SOURCE
from ivflat.host.paths import REPO
from ivflat.host.timeouts import scaled

from .tools import BUILD_QEMU, fake_qemu_repo, git, run_tool


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private cache, for this process and the tools it starts."""
    path = tmp_path / "cache"
    monkeypatch.setenv("IVSHMEM_SUITE_CACHE", str(path))
    return path


def wired_checkout(path: Path, cache: Path) -> Path:
    """A clean checkout ci/build-qemu --in-place goes straight to configure with: the device
    carries the wiring already, configure is a script that fails (exit 125: nothing is
    built) and the tools venv counts as made (nothing is installed)."""
    fake_qemu_repo(path, device=True)
    (path / DEVICE_SOURCE).write_text(f'/* {wiring.WIRING_MARK} */\n')
    (path / "configure").write_text("#!/bin/sh\nexit 1\n")
    (path / "configure").chmod(0o755)
    git(path, "commit", "-q", "-a", "-m", "wired")
    venv = cache / "tools-venv"
    venv.mkdir(parents=True)
    (venv / ("reqs-" + sha(" ".join(TOOLS_REQS).encode())[:12])).touch()
    return path


def test_in_place_never_wipes_a_build_dir_it_did_not_make(cache: Path,
                                                          tmp_path: Path) -> None:
    """A developer's build-coverage/ (no mark of ours) is refused, left as it was; one we
    made (our mark) is ours to reconfigure, and a killed run's half-made one is swept."""
    src = wired_checkout(tmp_path / "qemu", cache)
    mine = src / "build-coverage"
    mine.mkdir()
    (mine / "build.ninja").write_text("# the developer's own configuration\n")
    res = run_tool([str(BUILD_QEMU), "--source", str(src), "--in-place", "--coverage"],
                   {"IVSHMEM_SUITE_CACHE": str(cache)})
    assert res.returncode == 2 and "was not made by ci/build-qemu" in res.stderr, res.stderr
    assert [p.name for p in mine.iterdir()] == ["build.ninja"]

    ours = src / "build-default"
    ours.mkdir()
    (ours / OWNED).write_text("")
    (ours / "stale").write_text("")
    half = src / "build-default.ivflat-new-x"  # a run killed before its rename
    half.mkdir()
    (half / OWNED).write_text("")
    res = run_tool([str(BUILD_QEMU), "--source", str(src), "--in-place"],
                   {"IVSHMEM_SUITE_CACHE": str(cache)})
    assert res.returncode == 125 and "configure failed" in res.stderr, res.stderr
    assert not ours.exists() and not half.exists()  # configure failed: nothing left
    assert sorted(p.name for p in src.iterdir()) == [".git", "build-coverage", "configure",
                                                      "hw"]


def files(tree: Path) -> dict[str, bytes]:
    return {str(p.relative_to(tree)): p.read_bytes() for p in tree.rglob("*")
            if p.is_file() and ".git" not in p.parts}


def test_in_place_restores_only_files_still_as_it_wrote_them(tmp_path: Path) -> None:
    """The wiring goes in for the build and comes out after, byte for byte; but a file
    saved meanwhile (the developer's edit) keeps their content, and their own *.orig is
    never deleted."""
    tree = tmp_path / "tree"
    board, dev = "hw/arm/mps2.c", DEVICE_SOURCE
    for rel, text in ((board, "board\n"), (dev, "device\n"), (f"{board}.orig", "theirs\n")):
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text(text)
    git(tree, "init", "-q")
    git(tree, "add", "-A")
    git(tree, "commit", "-q", "-m", "unwired")
    variants = tmp_path / "variants"
    variants.mkdir()
    (variants / "10.0.patch").write_text(
        f"--- a/{board}\n+++ b/{board}\n@@ -1 +1,2 @@\n board\n+wired board\n"
        f"--- a/{dev}\n+++ b/{dev}\n@@ -1 +1,2 @@\n device\n+{wiring.WIRING_MARK}\n")
    before = files(tree)

    done, written = wiring.apply_transient(tree, variants)
    assert done.patch == variants / "10.0.patch" and wiring.has_wiring(tree)
    assert (tree / board).read_text() == "board\nwired board\n"
    assert wiring.restore_files(tree, written) == []
    assert files(tree) == before

    done, written = wiring.apply_transient(tree, variants)
    (tree / board).write_text("board\nwired board\nsaved during the build\n")
    assert wiring.restore_files(tree, written) == [board]
    assert (tree / board).read_text() == "board\nwired board\nsaved during the build\n"
    assert (tree / dev).read_text() == "device\n"
    assert (tree / f"{board}.orig").read_text() == "theirs\n"


OWNER_CHILD = """
import sys
from ivflat.ci.suite import new_run_dir
print(new_run_dir("validate", keep=1), flush=True)
sys.stdin.read()  # the run lives until the test closes our stdin
"""


def run_owner(alive: bool) -> tuple[subprocess.Popen[str], Path]:
    """Another tool's run: a process that made a run dir and, if *alive*, still lives."""
    proc = subprocess.Popen([sys.executable, "-c", OWNER_CHILD], text=True,
                            stdin=subprocess.PIPE if alive else subprocess.DEVNULL,
                            stdout=subprocess.PIPE,
                            env=dict(os.environ, PYTHONPATH=str(REPO / "fixtures")))
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert line, f"the owner exited with {proc.wait()} before making its run"
    if not alive:
        assert proc.wait(timeout=scaled(60)) == 0
    return proc, Path(line)


def test_runs_of_live_owners_are_never_pruned(cache: Path) -> None:
    """keep=1: every older run may go -- except a live one. A dead owner's run and a run
    without an owner (an older version's) go; a live process's stays until it is gone."""
    live, live_run = run_owner(alive=True)
    try:
        _, dead_run = run_owner(alive=False)
        older = cache / "runs" / "validate-20200101-000000-x"
        older.mkdir()
        mine = new_run_dir("validate", keep=1)
        assert live_run.is_dir() and mine.is_dir()
        assert not dead_run.exists() and not older.exists()
    finally:
        assert live.stdin is not None
        live.stdin.close()
        live.wait(timeout=scaled(60))
    again = new_run_dir("validate", keep=1)
    assert not live_run.exists()
    assert mine.is_dir() and again.is_dir()  # both this live process's
