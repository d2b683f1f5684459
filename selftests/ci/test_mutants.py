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


def test_mutation_run_waits_for_a_build_of_the_tree(tmp_path: Path) -> None:
    """ci/build-qemu holds the tree's lock while it compiles; a mutation run of the same
    tree must wait for it (here: give up, with the timeouts scaled down) and never touch
    the source meanwhile -- else the build could compile a mutant into the reference."""
    bdir = _tree(tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys
            sys.path.insert(0, {str(REPO / "fixtures")!r})
            from pathlib import Path
            from ivflat.ci.proc import tree_lock
            with tree_lock(Path({str(bdir.parent)!r})):
                print("locked", flush=True)
                sys.stdin.read()  # until the test closes stdin
            """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        ready, _, _ = select.select([holder.stdout], [], [], scaled())
        assert ready and holder.stdout.readline() == "locked\n", "the holder took no lock"
        code = textwrap.dedent(f"""
            import sys
            sys.path.insert(0, {str(REPO / "fixtures")!r})
            from pathlib import Path
            from ivflat.ci import mutants
            mutants.MUTANTS[:] = [("m", "returns 2", "return 1;", "return 2;")]
            mutants.run(Path({str(bdir)!r}), None, [])
            """)
        env = dict(os.environ, IVSHMEM_TIMEOUT_SCALE="0.0003")  # ~1 s of BUILD_WAIT
        res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, timeout=scaled(60))
        assert res.returncode != 0 and "still in use by another run" in res.stderr, \
            res.stderr[-2000:]
        assert mutants.device_source(bdir).read_text() == ORIGINAL
        assert not mutants.restore_leftover(bdir)
    finally:
        assert holder.stdin is not None and holder.stdout is not None
        holder.stdin.close()
        holder.wait(timeout=scaled())
        holder.stdout.close()
