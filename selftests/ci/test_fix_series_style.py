"""The fix series (ci/patches/fixes/) passes QEMU's own scripts/checkpatch.pl and carries no
Signed-off-by of anyone (the person who posts it adds theirs).

The checker comes from a real QEMU tree: $IVSHMEM_QEMU_GIT (upstream master: the newest
rules) if set, else Debian's tree the reference build was made from (always there after
ci/setup). Without either, one skip with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ivflat.ci import fixes
from ivflat.paths import cache_dir

from .tools import scaled


def _checkpatch() -> Path:
    trees = [Path(os.environ["IVSHMEM_QEMU_GIT"])] if os.environ.get("IVSHMEM_QEMU_GIT") \
        else []
    info = cache_dir() / "reference" / "BUILDINFO.json"
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
