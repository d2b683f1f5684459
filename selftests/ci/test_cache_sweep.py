"""What a SIGKILL leaves in the cache is swept by the next run (only a dead owner's), a
published build is never absent while it is replaced, and the suite never silently tests
another QEMU when the reference it expects is broken.

Why (issue 18, item 13): ``<tree>.tmp-*`` (a whole QEMU source tree), ``<out>.tmp-*``,
``probe-cache.json.<pid>.tmp`` and ``ivf-fuzz-*`` directories of killed runs were never
removed; ``publish()`` renamed the old build away before renaming the new one in, and a
suite starting in between fell back to the ``qemu-system-arm`` on PATH.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ivflat.ci.publish import publish, versions
from ivflat.host import reaper
from ivflat.host.paths import REPO, scratch_dirs
from ivflat.host.timeouts import scaled

PRELUDE = f"import sys\nsys.path.insert(0, {str(REPO / 'fixtures')!r})\n"


def _killed_after(code: str, env: dict[str, str], ready: str = "ready") -> None:
    """Run *code* in a child until it prints *ready*, then SIGKILL it (what a lost machine,
    the OOM killer or ``kill -9`` does: no finally, no atexit)."""
    child = subprocess.Popen([sys.executable, "-c", PRELUDE + textwrap.dedent(code)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             env=env)
    try:
        assert child.stdout is not None
        got = select.select([child.stdout], [], [], scaled(60))[0]
        line = child.stdout.readline() if got else ""
        assert line == f"{ready}\n", f"the child said {line!r} within {scaled(60):.0f}s"
    finally:
        child.kill()
        child.communicate()


def _entries(cache: Path) -> list[str]:
    """What is in the cache's scratch places (but the places and the probe cache's lock)."""
    dirs = (cache, cache / "src" / "debian", cache / "fuzz-work")
    return sorted(p.name for d in dirs for p in d.iterdir()
                  if p not in dirs and p.name not in ("src", "probe-cache.json.lock"))


def test_what_a_sigkill_leaves_is_swept_only_once_its_owner_is_dead(tmp_path: Path) -> None:
    """A half-unpacked tree's temporary, a fuzz example's directory (both of SIGKILLed
    processes) and the probe cache's orphaned temporary are swept by the next run; the
    temporaries of a live run (this one) and the tree's lock file are kept."""
    cache = tmp_path / "cache"
    env = dict(os.environ, IVSHMEM_SUITE_CACHE=str(cache))
    tree = cache / "src" / "debian" / "qemu-x"
    # a tree being unpacked (ci/build-qemu's _unpack_once), killed mid-fill
    _killed_after(f"""
        from pathlib import Path
        from ivflat.ci import qemubuild
        def fill(tmp):
            (tmp / "half").write_text("a half-unpacked tree")
            print("ready", flush=True)
            sys.stdin.read()
        qemubuild._unpack_once(Path({str(tree)!r}), "x", fill)
        """, env)
    # a fuzz example's directory (ci/fuzz's work dir), killed with the example open
    (cache / "fuzz-work").mkdir()
    _killed_after(f"""
        from pathlib import Path
        from ivflat.fuzz import FuzzConfig
        from ivflat.fuzz.standby import example_dir
        example_dir(FuzzConfig(binary=Path("/bin/true"),
                               workdir=Path({str(cache / "fuzz-work")!r})))
        print("ready", flush=True)
        sys.stdin.read()
        """, env)
    # the probe cache's temporary, left when its rename fails (here: a directory in the way)
    (cache / "probe-cache.json").mkdir()
    subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent("""
        from pathlib import Path
        from ivflat.qemu import probe
        probe._store(probe.cache_dir() / "probe-cache.json", "k", probe.Capabilities(
            binary="x", version="x", has_device_type=False, user_creatable=False,
            wired=False, qtest_accel=False, properties=()))
        """)], env=env, check=True)
    (cache / "probe-cache.json").rmdir()
    left = _entries(cache)
    assert len(left) == 4, left  # the tree's .lock, its temporary, the probe's, the fuzz dir
    # a live run's temporaries (ours) beside them
    live = [tree.with_name(reaper.tagged_name(tree.name + ".tmp") + "live"),
            cache / "fuzz-work" / (reaper.tagged_name("ivf-fuzz") + "live")]
    for d in live:
        d.mkdir()
    os.environ["IVSHMEM_SUITE_CACHE"] = str(cache)
    try:
        swept = reaper.sweep_dirs(scratch_dirs())
    finally:
        del os.environ["IVSHMEM_SUITE_CACHE"]
    assert len(swept) == 3, swept
    assert all(d.exists() for d in live)
    kept = _entries(cache)
    assert kept == sorted([tree.name + ".lock", *(d.name for d in live)]), kept


def test_a_published_build_is_never_absent(tmp_path: Path) -> None:
    """A reader that keeps looking while a build is published again and again always finds
    one (the old or the new); superseded versions are removed once their grace period is
    over (here: none), and nothing else is left."""
    out = tmp_path / "builds" / "key"
    out.mkdir(parents=True)  # a build published before versions existed: a real directory
    (out / "qemu-system-arm").write_text("old")
    src = tmp_path / "qemu-system-arm"
    stop = tmp_path / "stop"
    reader = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import os, sys
        path, stop = {str(out / "qemu-system-arm")!r}, {str(stop)!r}
        print("reading", flush=True)
        looks = absent = 0
        while not os.path.exists(stop):
            looks += 1
            if not os.path.exists(path):
                absent += 1
        print(looks, absent, flush=True)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert reader.stdout is not None
        assert reader.stdout.readline() == "reading\n"
        for n in range(40):
            src.write_text(f"build {n}")
            publish(out, {"qemu-system-arm": src}, {"n": n})
        stop.touch()
        looks, absent = map(int, reader.communicate(timeout=scaled(60))[0].split())
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.communicate()
    assert absent == 0, f"the build was absent {absent} times of {looks} looks"
    assert out.is_symlink() and (out / "qemu-system-arm").read_text() == "build 39"
    assert len(versions(out)) == 40  # all within their grace period
    last = publish(out, {"qemu-system-arm": src}, {}, grace=0)
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name, last.name]


def test_a_broken_reference_is_an_error_not_another_qemu(tmp_path: Path) -> None:
    """With ``<cache>/reference`` there but resolving to nothing, the suite says so and
    stops (exit 4) instead of testing the qemu-system-arm on PATH."""
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "reference").symlink_to(cache / "builds" / "gone")
    env = {k: v for k, v in os.environ.items() if k != "QEMU"}
    res = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                          "-p", "no:cacheprovider", "qtests/test_registers.py"],
                         cwd=REPO, capture_output=True, text=True, timeout=scaled(120),
                         env={**env, "IVSHMEM_SUITE_CACHE": str(cache)})
    said = res.stdout + res.stderr
    assert res.returncode == pytest.ExitCode.USAGE_ERROR, said
    assert f"the reference build {cache / 'reference'} has no qemu-system-arm" in said, said
