"""A bisect step's build recompiles nothing the wiring only rewrote, and still everything
that changed (ivflat.ci.provenance, issue 23).

Why: --in-place writes the wiring patch into the tree for each build and takes it out
after, so the wired files get a new mtime every step and ninja recompiled and relinked
QEMU (seconds a step) though their content was what it had just built. Now a file that
holds what the last finished compile was of gets back the mtime it had then; these pin
that this never hides a change: one of content, one made by a ninja run that did not go
through provenance.compiling (a developer's, in their build dir), and one whose mtime
went back in time.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from ivflat.ci import provenance
from ivflat.device.board import DEVICE_SOURCE
from ivflat.host.timeouts import scaled

WIRED = "hw/arm/mps2.c"  # a file the wiring rewrites, beside the device source
PROGRAM = "int wired(void);\nint main(void)\n{\n    return wired();\n}\n"


def _wiring(status: int) -> str:
    return f"int wired(void)\n{{\n    return {status};\n}}\n"


@pytest.fixture
def bdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A tree whose build dir links the device source and WIRED into ``qemu-system-arm``
    with real ninja: the binary's exit status says which WIRED it was built from."""
    monkeypatch.setenv("CCACHE_DISABLE", "1")
    tree = tmp_path / "tree"
    for rel, text in ((DEVICE_SOURCE, PROGRAM), (WIRED, _wiring(1))):
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text(text)
    (tree / "build-default").mkdir()
    (tree / "build-default" / "build.ninja").write_text(
        "rule cc\n  command = cc $in -o $out\n"
        f"build qemu-system-arm: cc ../{DEVICE_SOURCE} ../{WIRED}\n")
    return tree / "build-default"


def _rewrite(bdir: Path, rel: str, text: str) -> None:
    """What the wiring does: a new file swapped in, whatever it holds (a new mtime)."""
    new = bdir.parent / (rel + ".new")
    new.write_text(text)
    new.replace(bdir.parent / rel)


def _build(bdir: Path) -> bool:
    """One build through provenance.compiling; whether ninja had anything to do."""
    with provenance.compiling(bdir, [WIRED]):
        out = subprocess.run(["ninja", "-C", str(bdir)], check=True, capture_output=True,
                             text=True, timeout=scaled(60)).stdout
    return "no work to do" not in out


def _built_from(bdir: Path) -> int:
    return subprocess.run([str(bdir / "qemu-system-arm")], timeout=scaled()).returncode


def test_rewritten_but_unchanged_sources_are_not_recompiled(bdir: Path) -> None:
    """Steps that rewrite the same content: built once, then nothing to do."""
    assert _build(bdir)
    for _ in range(2):
        _rewrite(bdir, WIRED, _wiring(1))
        _rewrite(bdir, DEVICE_SOURCE, PROGRAM)
        assert not _build(bdir)
    assert _built_from(bdir) == 1


def test_a_changed_source_is_recompiled_whatever_its_mtime(bdir: Path) -> None:
    """Another content is recompiled even with an mtime older than the binary's, and so is
    the content before it when it comes back (the last compile was of the other)."""
    _build(bdir)
    _rewrite(bdir, WIRED, _wiring(2))
    os.utime(bdir.parent / WIRED, ns=(0, 0))
    assert _build(bdir) and _built_from(bdir) == 2
    _rewrite(bdir, WIRED, _wiring(1))
    assert _build(bdir) and _built_from(bdir) == 1


def test_a_ninja_run_of_its_own_keeps_mtimes_as_they_are(bdir: Path) -> None:
    """A ninja run outside compiling() (a developer's) built another content; the file
    put back to what the record names is then newer than that binary, and stays so: the
    record's mtime would hide that the binary is not of it."""
    _build(bdir)
    _rewrite(bdir, WIRED, _wiring(3))
    subprocess.run(["ninja", "-C", str(bdir)], check=True, capture_output=True,
                   timeout=scaled(60))
    assert _built_from(bdir) == 3
    _rewrite(bdir, WIRED, _wiring(1))
    assert _build(bdir) and _built_from(bdir) == 1
