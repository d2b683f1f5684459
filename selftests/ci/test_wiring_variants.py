"""The wiring patch's variants (ci/patches/wiring/, ivflat.ci.wiring): which one a tree
gets. Real patches on the files they touch, copied from Debian's QEMU source as the
reference build unpacked it; nothing is built.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ivflat.ci import fixes, wiring
from ivflat.ci.proc import tree_lock
from ivflat.device.board import DEVICE_SOURCE
from ivflat.host.locks import LockBusy
from ivflat.host.paths import reference_dir

TREE_WAIT = 60.0  # base seconds a test waits for the reference tree's lock


def wiring_files(dest: Path) -> Path:
    """The files the wiring patch touches, from Debian's QEMU source as the reference build
    unpacked it: a tree small enough to patch in a test."""
    info = reference_dir() / "BUILDINFO.json"
    if not info.exists():
        pytest.skip("no reference build (ci/build-qemu) for Debian's QEMU source")
    tree = Path(json.loads(info.read_text())["tree"])
    patch = wiring.PATCH_DIR / "10.0.patch"
    # under the tree's lock: ci/mutants and ci/anchor rewrite its device source meanwhile,
    # for as long as a mutation run lasts (an hour): past a minute, a skip that says so
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(tree_lock(tree, wait=TREE_WAIT))
        except LockBusy as exc:
            pytest.skip(f"the reference tree's sources are being rewritten: {exc}")
        for rel in sorted({ln[6:].split("\t")[0].strip()
                           for ln in patch.read_text().splitlines()
                           if ln.startswith("+++ b/")}):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(tree / rel, dest / rel)
        applied = tree / wiring.APPLIED
        if applied.exists():  # the reference tree carries the wiring: take it out again
            subprocess.run(["patch", "-p1", "-R", "-s", "-F3", "--no-backup-if-mismatch",
                            "-i", str(applied)], cwd=dest, check=True, capture_output=True)
    assert not wiring.has_wiring(dest)
    return dest


def test_wiring_variants_first_that_applies(tmp_path: Path) -> None:
    """Variants are tried in name order; one that does not apply is passed over; a tree
    with the wiring gets nothing; a tree none applies to is a Skip naming what was tried;
    no variant at all is a WiringError (a broken checkout, no verdict on the tree)."""
    tree = wiring_files(tmp_path / "tree")
    assert wiring.choose(tree) == wiring.PATCH_DIR / "10.0.patch"
    variants = tmp_path / "variants"
    variants.mkdir()
    (variants / "00-other-line.patch").write_text(
        "--- a/hw/arm/mps2.c\n+++ b/hw/arm/mps2.c\n@@ -1,1 +1,1 @@\n-no such line\n+x\n")
    shutil.copy(wiring.PATCH_DIR / "10.0.patch", variants / "10.0.patch")
    assert wiring.choose(tree, variants) == variants / "10.0.patch"
    done = wiring.apply(tree, variants / "10.0.patch")
    assert wiring.has_wiring(tree) and done.key.startswith("10.0-")
    assert wiring.apply_transient(tree)[0].describe() == "tree already wired"
    (variants / "10.0.patch").unlink()
    plain = wiring_files(tmp_path / "plain")
    with pytest.raises(wiring.Skip, match=wiring.NOT_APPLY) as exc:
        wiring.choose(plain, variants)
    assert "00-other-line.patch" in str(exc.value)
    (variants / "00-other-line.patch").unlink()
    with pytest.raises(wiring.WiringError, match="no wiring patch in"):
        wiring.choose(plain, variants)


def test_wiring_variant_needing_least_fuzz_wins(tmp_path: Path) -> None:
    """On a tree where every variant needs fuzz (the device code moved: here the reference
    plus the fix series, as master plus the series), the variant that fits best wins, not
    the first in name order: --with-fixes on master once got 10.0.patch, fuzzed into
    master's mps2.c, instead of 20-master.patch."""
    tree = wiring_files(tmp_path / "tree")
    for fix in sorted(fixes.FIXES_DIR.glob("0*.patch")):
        if "cover-letter" not in fix.name:
            subprocess.run(["git", "apply", f"--include={DEVICE_SOURCE}", str(fix)],
                           cwd=tree, check=True, capture_output=True,
                           env={**os.environ, "GIT_DIR": str(tmp_path / "none")})
    variants = tmp_path / "variants"
    variants.mkdir()
    good = wiring.PATCH_DIR / "10.0.patch"
    shutil.copy(good, variants / "10.0.patch")
    # an older line's variant: the same change, but mps2.c's context fits only with fuzz
    worse = good.read_text().replace(' #include "hw/qdev-clock.h"\n',
                                     ' #include "hw/qdev-clock-old.h"\n')
    assert worse != good.read_text()
    (variants / "00-older-line.patch").write_text(worse)
    for v in variants.iterdir():
        assert subprocess.run(["patch", "-p1", "-s", "--dry-run", "-F0", "-i", str(v)],
                              cwd=tree, capture_output=True).returncode != 0, v.name
    assert wiring.choose(tree, variants) == variants / "10.0.patch"
