"""The leftover check of the ci/ self-tests counts only processes under its own root.

Why: a fresh-root run of the README's commands (a chroot on the same machine, same paths
inside) saw a host ci/bisect's ``git -C <cache>/src/work/...`` as its own leftover, three
red tests: readlink() of /proc/<pid>/root reads "/" from inside a chroot for the host's
root too, so roots have to be compared as inodes.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from ivflat.host.paths import REPO
from ivflat.host.timeouts import scaled

# Run in a mount namespace of its own (unshare): /proc bound into an empty root, chroot
# there, then list what mentions the marker (read from stdin: not in our own cmdline).
READER = """
import os, subprocess, sys
sys.path[:0] = [{repo!r}, {fixtures!r}]
from selftests.ci.tools import processes_mentioning
root, chroot = sys.argv[1], sys.argv[2] == "chroot"
marker = sys.stdin.readline().strip()
if chroot:
    subprocess.run(["mount", "--bind", "/proc", root + "/proc"], check=True)
    os.chroot(root)
print(processes_mentioning(marker), flush=True)
"""


def _reader(root: Path, marker: str, chroot: bool) -> str:
    code = READER.format(repo=str(REPO), fixtures=str(REPO / "fixtures"))
    res = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable,
                          "-c", code, str(root), "chroot" if chroot else "plain"],
                         input=marker + "\n", capture_output=True, text=True,
                         timeout=scaled(120), check=False)
    assert res.returncode == 0, res.stderr
    return res.stdout


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="needs root and unshare (a chroot in a mount namespace)")
def test_a_process_under_another_root_is_not_a_leftover(tmp_path: Path) -> None:
    """The leftover check counts a process that mentions the marker when run under the same
    root, and not when run inside a chroot on the same machine (same paths, another root):
    only processes under its own root are its leftovers."""
    root = tmp_path / "root"
    (root / "proc").mkdir(parents=True)
    marker = f"ivf-other-root-{uuid.uuid4().hex}"
    host = subprocess.Popen([sys.executable, "-c", "import sys; print(flush=True); "
                             "sys.stdin.read()", marker], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    try:
        assert host.stdout is not None
        assert select.select([host.stdout], [], [], scaled(60))[0], "the process did not start"
        host.stdout.readline()
        assert marker in _reader(root, marker, chroot=False)  # the control: seen as ours
        assert _reader(root, marker, chroot=True).strip() == "[]"  # from inside a chroot
    finally:
        host.kill()
        host.wait()
