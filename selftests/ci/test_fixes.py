"""ci/build-qemu --with-fixes and the suite's "expecting fixes" mode.

Why: a build carrying the fix series must turn every known-bug test into a plain test that
passes, and a build that claims a fix it lacks must fail those tests, not xfail them. And
the series must reach the tree in the variant that applies, or a clear skip. Checked with
real git apply on a small tree (fast), a real pytest run on the reference build with a
claimed-but-absent fix (fast, one test), and, marked slow, the real ``reference-fixes``
build: every known-bug test passes there, none xfails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ivflat.ci import fixes
from ivflat.ci.wiring import Skip
from ivflat.device import known_bugs
from ivflat.host.paths import REPO, reference_command
from ivflat.host.timeouts import scaled
from ivflat.qemu.under_test import fixed_in_build, reference_binary

from .tools import BUILD_QEMU, git

PATCH = """From 0 Mon Sep 17 00:00:00 2001
From: a <a@b>
Subject: [PATCH {n}/2] change {old}

---
diff --git a/f.c b/f.c
--- a/f.c
+++ b/f.c
@@ -1,2 +1,2 @@
 keep
-{old}
+{new}
"""
COVER = "From 0 Mon Sep 17 00:00:00 2001\nFrom: a <a@b>\nSubject: [PATCH 0/2] two\n\nblurb\n"


def _series(d: Path, first_old: str) -> None:
    d.mkdir(parents=True)
    (d / "0000-cover-letter.patch").write_text(COVER)
    (d / "0001-a.patch").write_text(PATCH.format(n=1, old=first_old, new="two"))
    (d / "0002-b.patch").write_text(PATCH.format(n=2, old="two", new="three"))


def test_first_variant_that_applies_and_the_wiring_taken_off(tmp_path: Path) -> None:
    """fill() takes the cache tree's wiring patch off the copy, then applies the first variant
    of the series that applies (here the 10.0 backport, not master's), patches only (not the
    cover letter), records what it applied, and leaves the source tree untouched."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.c").write_text("keep\nwired\n")
    # the cache-owned tree carries the wiring: the copy gets it reverted before the series
    (src / ".wiring-applied.patch").write_text(
        "--- a/f.c\n+++ b/f.c\n@@ -1,2 +1,2 @@\n keep\n-one\n+wired\n")
    fixes_dir = tmp_path / "fixes"
    _series(fixes_dir, "master-context")  # top level: for master, does not apply here
    _series(fixes_dir / "10.0", "one")  # the backport variant
    dest = tmp_path / "dest"
    dest.mkdir()
    info = fixes.fill(src, dest, tmp_path / "work", fixes_dir)
    assert info["variant"] == str(fixes_dir / "10.0")
    assert info["patches"] == ["0001-a.patch", "0002-b.patch"]  # cover letter not applied
    assert info["cover"] == "[PATCH 0/2] two"
    assert (dest / "f.c").read_text() == "keep\nthree\n"
    assert not (dest / ".wiring-applied.patch").exists()
    assert fixes.applied(dest) == info
    assert (src / "f.c").read_text() == "keep\nwired\n"  # the source tree untouched


def test_no_variant_applies_is_a_skip_quoting_git(tmp_path: Path) -> None:
    """When no variant of the series applies, fill() raises Skip quoting git's complaint (the
    patch and the file), so the reason reaches the user instead of a half-patched tree."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.c").write_text("keep\nsomething else\n")
    fixes_dir = tmp_path / "fixes"
    _series(fixes_dir, "master-context")
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(Skip, match=r"(?s)fix series does not apply.*0001-a.patch.*f\.c"):
        fixes.fill(src, dest, tmp_path / "work", fixes_dir)


def test_registry_fixes_name_the_shipped_patches() -> None:
    """Every fix a known bug names is in ci/patches/fixes/: the bug ids a --with-fixes
    build records come from these names (a bug registered before its fix has none)."""
    shipped = {p.name for p in fixes.FIXES_DIR.glob("*.patch")}
    for bug in _with_fix():
        assert bug.fix in shipped, bug.id
    assert known_bugs.fixed_by(sorted(shipped)) == {b.id for b in _with_fix()}


def _with_fix() -> list[known_bugs.KnownBug]:
    return [b for b in known_bugs.BUGS if b.fix]


def test_buildinfo_fixes_are_read_beside_the_binary(tmp_path: Path) -> None:
    """The bugs a build fixes are those whose fix is among the patches its BUILDINFO.json
    records, read against the registry now; none without the file or with a broken one."""
    binary = tmp_path / "qemu-system-arm"
    assert fixed_in_build(binary) == frozenset()  # no BUILDINFO.json
    fix = known_bugs.get("version-unchecked").fix
    (tmp_path / "BUILDINFO.json").write_text(json.dumps(
        {"fixes": {"patches": [fix, "0099-not-a-fix-of-ours.patch"]}}))
    assert fixed_in_build(binary) == {"version-unchecked"}
    # what ci/build-qemu says of it: the same reading, from the same record
    assert fixes.describe({"variant": "v", "patches": [fix]}) == \
        "v (1 patches; known bugs fixed: version-unchecked)"
    (tmp_path / "BUILDINFO.json").write_text("{truncated")
    assert fixed_in_build(binary) == frozenset()


def _reference(fixes: bool) -> Path:
    binary = reference_binary(fixes=fixes)
    if not binary.exists():
        pytest.skip(f"no {binary.parent.name} build ({reference_command(fixes=fixes)})")
    return binary


def _pytest(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                           "-p", "no:xdist", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=scaled(600), env=dict(os.environ))


def test_a_claimed_fix_the_binary_lacks_fails_the_test(tmp_path: Path) -> None:
    """--known-bugs-fixed on the (unfixed) reference: the bug's test is no xfail and fails."""
    binary = _reference(fixes=False)
    test = known_bugs.get("version-unchecked").tests[0]
    res = _pytest(test, f"--qemu={binary}", "--known-bugs-fixed=version-unchecked",
                  f"--artifacts-dir={tmp_path}")
    assert res.returncode == 1, res.stdout[-3000:]
    assert "1 failed" in res.stdout and "xfail" not in res.stdout.split("=====")[-1], \
        res.stdout[-3000:]
    assert "known bugs fixed in this build" in res.stdout
    bad = _pytest(test, f"--qemu={binary}", "--known-bugs-fixed=no-such-bug")
    assert bad.returncode == 4 and "unknown bug id(s) no-such-bug" in bad.stderr, bad.stderr


@pytest.mark.slow
def test_every_known_bug_test_passes_on_reference_fixes(tmp_path: Path) -> None:
    """On the real ``reference-fixes`` build, the bugs read from its BUILDINFO.json are those
    with a fix, --list-known-bugs says each is fixed, and every known-bug test passes (the
    ASan-only one aside) with no xfail left; the shipped patches stay unchanged in git."""
    binary = _reference(fixes=True)
    info = json.loads((binary.parent / "BUILDINFO.json").read_text())
    # read from the patches it applied, against the registry as it is now
    assert known_bugs.fixed_by(info["fixes"]["patches"]) == {b.id for b in _with_fix()}
    tests = [t for b in _with_fix() for t in b.tests]
    listing = _pytest("--list-known-bugs", f"--qemu={binary}")
    assert listing.stdout.count("fixed in this build") == \
        sum(1 for b in _with_fix() if b.needs is None), listing.stdout
    res = _pytest(*tests, f"--qemu={binary}", f"--artifacts-dir={tmp_path}", "-rA")
    assert res.returncode == 0, res.stdout[-4000:]
    passed = {ln.split()[1] for ln in res.stdout.splitlines() if ln.startswith("PASSED ")}
    # without ASan, the ASan-only bug's far-out-of-range vector is judged nowhere (a skip)
    asan_only = {t for b in _with_fix() if b.needs for t in b.tests}
    assert set(tests) - asan_only <= passed, res.stdout[-4000:]
    assert "xfail" not in res.stdout.strip().splitlines()[-1], res.stdout[-4000:]
    assert git(REPO, "status", "--porcelain", "--", "ci/patches") == ""


@pytest.mark.slow
def test_the_fix_series_compiles_clean_with_werror() -> None:
    """QEMU's CI builds with --enable-werror, the suite with --disable-werror: ci/build-qemu
    --with-fixes (cached: seconds) compiles the fixed device source again with -Werror,
    records it clean in BUILDINFO.json and says no WARNING."""
    _reference(fixes=True)
    res = subprocess.run([sys.executable, str(BUILD_QEMU), "--with-fixes"], cwd=REPO,
                         capture_output=True, text=True, timeout=scaled(1800),
                         stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "WARNING" not in res.stderr, res.stderr[-3000:]
    info = json.loads((Path(res.stdout.split()[-1]).parent / "BUILDINFO.json").read_text())
    assert info["fixes"]["patches"] and info["device_werror"] == {
        "result": "clean", "output": []}, info
