"""The ci/ self-tests' synthetic QEMU history (slow tests) and their lock.

The history is built on Debian's QEMU source as a git repository -- harmless commits, one
commit that breaks IVPOSITION the way a developer plausibly would, a commit that does not
build (and its fix), more harmless commits, then the commit that fixes IVPOSITION (for
``ci/bisect --first-fixed``) and one more harmless commit -- cached under
``<cache>/selftest/``, keyed by the Debian version and the recipe below.

Like a real QEMU checkout, the history does not carry the meson subprojects in git: its
first commit drops them from the index (``DROPPED``), and they stay in the repository's
work tree as meson leaves them after downloading them (ignored by
``subprojects/.gitignore``). So the tools' private clones and ``git archive`` exports have
none, and every build must take them from the user's tree (``ivflat.ci.subprojects``).

Each xdist worker has a *slot* of its own: a copy of the history (the same commits: the
recipe is deterministic) and so a work clone of its own, since the tools share one work
clone per repository and refuse a second user at once; a test holds its slot's lock. The
history's tests form one xdist group per worker, so the workers run them side by side from
the start; builds keyed by source (``ci/build-qemu --rev``) are shared by the slots, the
in-place ones live in each clone's build dir (a new slot's first build is a full one,
ccache hits, once per machine). A test whose slot a concurrent run on the same cache holds
takes another slot that is free, if one was made.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ivflat.ci.gitrepo import FIXED_ENV, git_common_dir
from ivflat.ci.workclone import WorkClone, debian_base_repo
from ivflat.device.board import DEVICE_SOURCE
from ivflat.errors import UserError
from ivflat.host.locks import LockBusy, file_lock
from ivflat.host.paths import cache_dir

from .tools import TOOL_TIMEOUT, History, git

UNIMP = "hw/misc/unimp.c"
DOC = "docs/system/devices/ivshmem-flat.rst"

# (subject, file, old, new, role). Each commit touches one file, as real commits do.
HISTORY: list[tuple[str, str, str, str, str]] = [
    ("docs/ivshmem-flat: fix double space", DOC,
     "an aarch64 VM  (using", "an aarch64 VM (using", "harmless"),
    ("ivshmem-flat: clarify the vector-info comment", DEVICE_SOURCE,
     "passed to the handler via the 'opaque' pointer.",
     "passed to the handler via its 'opaque' pointer.", "harmless"),
    ("ivshmem-flat: report IVPOSITION 1-based like the guest driver expects", DEVICE_SOURCE,
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
    ("ivshmem-flat: comment on the INTMASK read", DEVICE_SOURCE,
     "ret = 0; /* Ignore read since all bits are reserved in rev 1. */\n        break;\n"
     "    case INTSTATUS:",
     "ret = 0; /* Reads as zero: all bits are reserved in rev 1. */\n        break;\n"
     "    case INTSTATUS:", "harmless"),
    ("docs/ivshmem-flat: wording", DOC,
     "is meant to be used on machines", "is intended for machines", "harmless"),
    # After "tip": the fix lands (what ci/bisect --first-fixed finds), then one more commit.
    ("ivshmem-flat: IVPOSITION is the id the server assigned", DEVICE_SOURCE,
     "ret = s->own.id + 1;", "ret = s->own.id;", "fixes"),
    ("docs/ivshmem-flat: wording again", DOC,
     "is intended for machines", "is meant for machines", "harmless"),
]
DROPPED = ("keycodemapdb", "berkeley-softfloat-3", "berkeley-testfloat-3")
HISTORY_GROUP = "selftest-history"  # + "-<n>": the tests taking a slot's lock (xdist_group)
SLOT_WAIT = 3 * TOOL_TIMEOUT  # a slot's holder is one test: at most test_real_history's
RECIPE = hashlib.sha256(json.dumps([DROPPED, HISTORY]).encode()).hexdigest()[:12]


def slot() -> int:
    """This process's history slot: its xdist worker's number (gw1 -> 1), else 0."""
    return int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)


def _lock_path(cache: Path, n: int) -> Path:
    return cache / "selftest" / (".lock" + (f"-{n}" if n else ""))


@contextlib.contextmanager
def selftest_lock(cache: Path, n: int | None = None) -> Iterator[None]:
    """One self-test at a time per slot (this worker's unless *n*), across concurrent runs
    on the cache: the tools share one work clone per repository and refuse a second user at
    once (by design), and the history is built in place. The holder is one test, so the
    wait is bounded by the longest test's (SLOT_WAIT, scaled); past it, LockBusy names the
    holder."""
    n = slot() if n is None else n
    with file_lock(_lock_path(cache, n), f"history slot {n}", wait=SLOT_WAIT):
        yield


@contextlib.contextmanager
def every_slot_locked(cache: Path) -> Iterator[None]:
    """Every slot's lock (this run's workers' and any other run's), taken in order: for a
    test that must exclude all of the history's tests, whichever worker runs them."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    known = {int(p.name.removeprefix(".lock-")) for p in (cache / "selftest").glob(".lock-*")}
    with contextlib.ExitStack() as stack:
        for n in sorted(known | set(range(workers))):  # 0: ".lock"
            stack.enter_context(selftest_lock(cache, n))
        yield


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "history_cost(seconds): about how long a test of "
                            "the synthetic history takes (to balance its xdist groups)")


@pytest.hookimpl(tryfirst=True)  # before xdist's worker names the grouped tests
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests that take a slot's lock through a fixture go in one xdist group per
    worker (selftests/conftest.py), the longest first, each to the group with the least
    so far (by their ``history_cost`` mark; 1 s unmarked). Under loadgroup each worker
    starts with one group (the groups are the largest units), so the history's long tests
    run on both workers at once, each in its own slot."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    load = [0.0] * workers
    costs = []
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if "history" in fixtures:
            mark = item.get_closest_marker("history_cost")
            costs.append((float(mark.args[0]) if mark else 1.0, item))
    for cost, item in sorted(costs, key=lambda c: -c[0]):  # stable: collection order
        n = load.index(min(load))
        load[n] += cost
        item.add_marker(pytest.mark.xdist_group(f"{HISTORY_GROUP}-{n}"))


@pytest.fixture
def history() -> Iterator[History]:
    """A slot of the synthetic repository (a --shared clone of the Debian base repo plus
    HISTORY), created once per slot, Debian version and recipe: its path and commit ids,
    the slot's lock held for the test (:func:`_free_slot`)."""
    try:
        base_repo = debian_base_repo()
    except UserError as exc:
        pytest.skip(str(exc))
    cache = cache_dir()
    with _free_slot(cache, _ready_slots(base_repo, cache)) as n:
        yield _make_history(base_repo, cache, n)


@contextlib.contextmanager
def _free_slot(cache: Path, ready: list[int]) -> Iterator[int]:
    """This worker's slot if no one holds it, else another slot already made that no one
    holds (a concurrent run on the same cache has its tests in them too), else this
    worker's when its holder is done: never a new slot (a full build) for want of a free
    one."""
    mine = slot()
    for n in [mine, *(r for r in ready if r != mine)]:
        with contextlib.ExitStack() as held:
            try:  # at once or not at all (LockBusy)
                held.enter_context(file_lock(_lock_path(cache, n), f"history slot {n}"))
            except LockBusy:
                continue
            yield n
            return
    with selftest_lock(cache, mine):
        yield mine


def _history_repo(base_repo: Path, cache: Path, n: int) -> Path:
    return cache / "selftest" / (f"history-{base_repo.name}-{RECIPE}" + (f"-{n}" if n else ""))


def _ready_slots(base_repo: Path, cache: Path) -> list[int]:
    """The slots whose history is made, in order."""
    prefix = _history_repo(base_repo, cache, 0).name
    found = [int(p.name.removeprefix(prefix).removeprefix("-") or 0)
             for p in (cache / "selftest").glob(prefix + "*")
             if p.name.removeprefix(prefix).removeprefix("-").isdigit() or p.name == prefix]
    return sorted(n for n in found if (_history_repo(base_repo, cache, n) / ".git" /
                                       "ivflat-ready").exists())


def _make_history(base_repo: Path, cache: Path, n: int) -> History:
    repo = _history_repo(base_repo, cache, n)
    if not (repo / ".git" / "ivflat-ready").exists():
        tmp = repo.with_name(repo.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "clone", "-q", "--shared", str(base_repo), str(tmp)],
                       check=True)
        env = dict(os.environ, **FIXED_ENV)
        subprocess.run(["git", "-C", str(tmp), "rm", "-r", "-q", "--cached",
                        *(f"subprojects/{n}" for n in DROPPED)], check=True, env=env)
        subprocess.run(["git", "-C", str(tmp), "commit", "-q", "-m",
                        "subprojects: not in git (meson downloads them)"], check=True,
                       env=env)
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
    base, rest = commits[1], commits[2:]  # commits[0]: Debian's tree with subprojects
    roles = {role: [c for c, h in zip(rest, HISTORY, strict=True) if h[4] == role]
             for role in ("harmless", "breaks", "unbuildable", "fixes")}
    fixed = roles["fixes"][0]
    # "tip": the last commit before the fix (still broken); "head": after it
    return {"repo": repo, "base": base, "tip": rest[rest.index(fixed) - 1],
            "breaks": roles["breaks"][0], "unbuildable": roles["unbuildable"][0],
            "fixed": fixed, "head": rest[-1], "work": WorkClone(git_common_dir(repo)).path}


