"""The mutation tools (ci/mutants, ci/anchor) edit a built tree's device source in place:
a SIGKILLed run must never leave the next build of that tree (the reference!) mutated."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from ivflat.ci import mutants
from ivflat.paths import REPO
from ivflat.timeouts import scaled

ORIGINAL = "static int f(void)\n{\n    return 1;\n}\n"


def _tree(tmp_path: Path) -> Path:
    src = tmp_path / "tree" / mutants.DEVICE
    src.parent.mkdir(parents=True)
    src.write_text(ORIGINAL)
    bdir = tmp_path / "tree" / "build-default"
    bdir.mkdir()
    return bdir


def test_mutated_restores_on_exit_and_error(tmp_path: Path) -> None:
    bdir = _tree(tmp_path)
    src = mutants.device_source(bdir)
    with mutants.mutated(bdir, "return 1;", "return 2;"):
        assert "return 2;" in src.read_text()
    assert src.read_text() == ORIGINAL
    try:
        with mutants.mutated(bdir, "return 1;", "return 3;"):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert src.read_text() == ORIGINAL and not mutants.restore_leftover(bdir)


def test_sigkilled_mutation_is_repaired_by_the_next_run(tmp_path: Path) -> None:
    """A process killed inside ``mutated()`` leaves the mutant in place and the original
    beside it; ``restore_leftover`` (called first by ci/mutants, ci/anchor and, for every
    build, ci/build-qemu) puts it back."""
    bdir = _tree(tmp_path)
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO / "fixtures")!r})
        from pathlib import Path
        from ivflat.ci import mutants
        with mutants.mutated(Path({str(bdir)!r}), "return 1;", "return 2;"):
            print("mutated", flush=True)
            sys.stdin.read()  # until killed
        """)
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        ready, _, _ = select.select([child.stdout], [], [], scaled())
        assert ready, f"the child did not mutate the source within {scaled()}s"
        assert child.stdout.readline() == "mutated\n"
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=scaled())
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        for pipe in (child.stdin, child.stdout):
            if pipe is not None:
                pipe.close()
    src = mutants.device_source(bdir)
    assert "return 2;" in src.read_text()  # what a SIGKILL leaves
    assert mutants.restore_leftover(bdir)
    assert src.read_text() == ORIGINAL and not mutants.restore_leftover(bdir)
