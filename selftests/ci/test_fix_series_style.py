"""The fix series (ci/patches/fixes/) passes QEMU's own scripts/checkpatch.pl and carries no
Signed-off-by of anyone (the person who posts it adds theirs).

The checker comes from a real QEMU tree: $IVSHMEM_QEMU_GIT (upstream master: the newest
rules) if set, else Debian's tree the reference build was made from (always there after
ci/setup). Without either, one skip with the reason.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ivflat.ci import fixes
from ivflat.host.paths import reference_dir
from ivflat.host.timeouts import scaled

from .tools import git


def _checkpatch() -> Path:
    trees = [Path(os.environ["IVSHMEM_QEMU_GIT"])] if os.environ.get("IVSHMEM_QEMU_GIT") \
        else []
    info = reference_dir() / "BUILDINFO.json"
    if info.exists():
        trees.append(Path(json.loads(info.read_text())["tree"]))
    for tree in trees:
        if (tree / "scripts" / "checkpatch.pl").exists():
            return tree / "scripts" / "checkpatch.pl"
    pytest.skip("no QEMU tree with scripts/checkpatch.pl: set IVSHMEM_QEMU_GIT or run "
                "ci/build-qemu (Debian's tree)")


PATCHES = [p for p in sorted(fixes.FIXES_DIR.glob("*.patch")) if "cover-letter" not in p.name]


@pytest.mark.parametrize("patch", PATCHES, ids=lambda p: p.name[:4])
def test_fix_is_checkpatch_clean_and_unsigned(patch: Path) -> None:
    """Each patch of the fix series is clean under QEMU's checkpatch.pl --no-signoff, and the
    only error without that flag is the missing Signed-off-by: the poster adds theirs, and
    nobody else's may be in it."""
    if shutil.which("perl") is None:
        pytest.skip("perl is missing (Debian's perl-base has it)")
    script = _checkpatch()
    clean = subprocess.run(["perl", str(script), "--no-signoff", str(patch)],
                           capture_output=True, text=True, timeout=scaled(60))
    assert clean.returncode == 0 and "total: 0 errors, 0 warnings" in clean.stdout, \
        f"{script} --no-signoff {patch.name}:\n{clean.stdout}{clean.stderr}"
    signed = subprocess.run(["perl", str(script), str(patch)], capture_output=True,
                            text=True, timeout=scaled(60))
    errors = [ln for ln in signed.stdout.splitlines() if ln.startswith("ERROR")]
    assert errors == ["ERROR: Missing Signed-off-by: line(s)"], \
        f"{patch.name} must carry no Signed-off-by (the sender adds one): {errors}"


def test_series_applies_to_its_base_commit_on_master(tmp_path: Path) -> None:
    """QEMU takes a series against master: the cover letter names its base-commit, and every
    patch applies there exactly, in order, with each ``index`` line naming the blob it
    changes (what ``git am --3way`` needs). Checked in a shared clone of
    $IVSHMEM_QEMU_GIT without a checkout (an index only), so the mirror stays untouched.
    The reference tree gets the same patches by git apply (test_fixes, reference-fixes)."""
    qemu = os.environ.get("IVSHMEM_QEMU_GIT", "")
    if not qemu:
        pytest.skip("no upstream QEMU git tree: set IVSHMEM_QEMU_GIT")
    cover = (fixes.FIXES_DIR / "0000-cover-letter.patch").read_text()
    bases = re.findall(r"^base-commit: ([0-9a-f]{40})$", cover, re.M)
    assert len(bases) == 1, "the cover letter must name one base-commit (format-patch --base)"
    clone = tmp_path / "q"
    git(tmp_path, "clone", "-q", "--shared", "--no-checkout", qemu, str(clone))
    git(clone, "read-tree", bases[0])
    for patch in PATCHES:
        for path, pre in re.findall(r"^diff --git a/(\S+) .*\nindex ([0-9a-f]+)\.\.",
                                    patch.read_text(), re.M):
            blob = git(clone, "rev-parse", f":{path}")
            assert blob.startswith(pre), f"{patch.name}: index {pre} is not {path} here " \
                f"({blob[:10]}): regenerate the series on {bases[0][:10]}"
        res = subprocess.run(["git", "-C", str(clone), "apply", "--cached", str(patch)],
                             capture_output=True, text=True)
        assert res.returncode == 0, f"{patch.name} does not apply on {bases[0][:10]}: " \
            f"{res.stderr}"
