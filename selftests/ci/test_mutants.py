"""The mutation tools (ci/mutants, ci/anchor) edit a built tree's device source in place:
a SIGKILLed run must never leave the next build of that tree (the reference!) mutated, nor
a copy of the tree, and a build proves which device source it was compiled from (issue 18,
item 4)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import select
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ivflat.ci import devsource, provenance, qemubuild, werror
from ivflat.ci.wiring import Skip
from ivflat.ci.workclone import debian_base_repo
from ivflat.device.board import DEVICE_SOURCE
from ivflat.host.paths import REPO, cache_dir, reference_dir, reference_tool
from ivflat.host.timeouts import scaled, wait_for

from .conftest import every_slot_locked
from .tools import BUILD_QEMU, TOOL_TIMEOUT, Events, run_tool, started_tool

ORIGINAL = "static int f(void)\n{\n    return 1;\n}\n"


def _tree(tmp_path: Path) -> Path:
    src = tmp_path / "tree" / DEVICE_SOURCE
    src.parent.mkdir(parents=True)
    src.write_text(ORIGINAL)
    bdir = tmp_path / "tree" / "build-default"
    bdir.mkdir()
    return bdir


def test_mutated_restores_on_exit_and_error(tmp_path: Path) -> None:
    """``mutated()`` has the mutant in the device source inside the block and the original back
    after it, whether the block ends normally or raises, with nothing left to restore."""
    bdir = _tree(tmp_path)
    src = devsource.device_source(bdir)
    with devsource.mutated(bdir, "return 1;", "return 2;"):
        assert "return 2;" in src.read_text()
    assert src.read_text() == ORIGINAL
    try:
        with devsource.mutated(bdir, "return 1;", "return 3;"):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert src.read_text() == ORIGINAL and not devsource.restore_leftover(bdir)


def test_sigkilled_mutation_is_repaired_by_the_next_run(tmp_path: Path) -> None:
    """A process killed inside ``mutated()`` leaves the mutant in place and the original
    beside it; ``restore_leftover`` (called first by ci/mutants, ci/anchor and, for every
    build, ci/build-qemu) puts it back."""
    bdir = _tree(tmp_path)
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO / "fixtures")!r})
        from pathlib import Path
        from ivflat.ci import devsource
        with devsource.mutated(Path({str(bdir)!r}), "return 1;", "return 2;"):
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
    src = devsource.device_source(bdir)
    assert "return 2;" in src.read_text()  # what a SIGKILL leaves
    assert devsource.restore_leftover(bdir)
    assert src.read_text() == ORIGINAL and not devsource.restore_leftover(bdir)


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
        assert devsource.device_source(bdir).read_text() == ORIGINAL
        assert not devsource.restore_leftover(bdir)
    finally:
        assert holder.stdin is not None and holder.stdout is not None
        holder.stdin.close()
        holder.wait(timeout=scaled())
        holder.stdout.close()


# --- provenance: a build proves which device source its binary comes from (issue 18, 4)

PROGRAM = "int main(void)\n{\n    return 1;\n}\n"
BUILD_NINJA = ("rule cc\n  command = cc $in -o $out\n"
               f"build qemu-system-arm: cc ../{DEVICE_SOURCE}\n")


def _ninja_tree(tmp_path: Path) -> Path:
    """A tree whose build dir compiles the "device source" into ``qemu-system-arm`` with
    real ninja: the binary's exit status says which source it was compiled from."""
    bdir = _tree(tmp_path)
    devsource.device_source(bdir).write_text(PROGRAM)
    (bdir / "build.ninja").write_text(BUILD_NINJA)
    return bdir


def _compiled_from(bdir: Path) -> int:
    return subprocess.run([str(bdir / "qemu-system-arm")], timeout=scaled()).returncode


def _killed_with_mutant_compiled(bdir: Path) -> None:
    """What ci/mutants SIGKILLed after building a mutant leaves: the mutant compiled and in
    place, the original beside it."""
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO / "fixtures")!r})
        from pathlib import Path
        from ivflat.ci import devsource
        bdir = Path({str(bdir)!r})
        with devsource.mutated(bdir, "return 1;", "return 2;"):
            devsource.ninja(bdir)
            print("built", flush=True)
            sys.stdin.read()  # until killed
        """)
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True,
                             env=dict(os.environ, CCACHE_DISABLE="1"))
    try:
        assert child.stdout is not None
        ready, _, _ = select.select([child.stdout], [], [], scaled(60))
        assert ready and child.stdout.readline() == "built\n", "the child built no mutant"
    finally:
        child.kill()
        child.communicate()
    assert _compiled_from(bdir) == 2


def test_a_restored_source_is_recompiled_by_ninja(tmp_path: Path) -> None:
    """The original put back by restore_leftover is newer than the mutant's binary: plain
    ninja recompiles it (the rename kept its older mtime, and ninja kept the mutant)."""
    bdir = _ninja_tree(tmp_path)
    _killed_with_mutant_compiled(bdir)
    assert devsource.restore_leftover(bdir)
    subprocess.run(["ninja", "-C", str(bdir)], check=True, capture_output=True)
    assert _compiled_from(bdir) == 1


def test_a_slow_rebuild_says_it_is_still_running(tmp_path: Path) -> None:
    """ci/mutants' and ci/anchor's one-file rebuild prints a progress line with ninja's
    [N/M] and its log while ninja runs (each interval: here shortened). The rebuild's
    second edge is held on a FIFO until the line has come: a slow compile without
    depending on how slow the machine is, and no wait for a fixed time."""
    bdir = _ninja_tree(tmp_path)
    fifo = tmp_path / "gate"
    os.mkfifo(fifo)
    (bdir / "build.ninja").write_text(
        "rule cc\n  command = cc -c $in -o $out\n"
        f"rule held\n  command = timeout {scaled(120):.0f} sh -c 'read go < {fifo}' "
        "&& cc $in -o $out\n"
        f"build device.o: cc ../{DEVICE_SOURCE}\nbuild qemu-system-arm: held device.o\n")
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO / "fixtures")!r})
        from pathlib import Path
        from ivflat.ci import devsource
        devsource.ninja(Path({str(bdir)!r}), what="ci/mutants: m1: rebuilding")
        """)
    log = bdir / devsource.REBUILD_LOG
    held = "ci/mutants: m1: rebuilding: still running"
    seen: list[str] = []
    # read-write: never blocks, and keeps "go" in the FIFO until the held edge opens it
    gate = os.open(fifo, os.O_RDWR)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
                             start_new_session=True,  # its ninja and held edge die with it
                             env=dict(os.environ, CCACHE_DISABLE="1",
                                      IVSHMEM_PROGRESS_INTERVAL="0.05"))
    try:
        stderr = child.stderr
        assert stderr is not None

        def read(left: float) -> None:
            if select.select([stderr], [], [], left)[0]:
                line = stderr.readline()
                assert line, f"the rebuild ended without a progress line: {seen}"
                seen.append(line.rstrip("\n"))

        wait_for(lambda: bool(seen) and seen[-1].startswith(held) and "[1/2]" in seen[-1],
                 60, lambda: f"a progress line of the held edge; said: {seen}", block=read)
        os.write(gate, b"go\n")
        _, err = child.communicate(timeout=scaled(60))
    finally:
        with contextlib.suppress(ProcessLookupError):  # whatever of it is left
            os.killpg(child.pid, signal.SIGKILL)
        if child.poll() is None:
            child.communicate()
        os.close(gate)
    assert child.returncode == 0, err
    assert seen[-1].endswith("[1/2] 50% built); log: " + str(log)), seen[-1]
    assert _compiled_from(bdir) == 1
    assert "[2/2] " in log.read_text()  # ninja's whole output


def test_a_build_recompiles_a_source_whatever_its_mtime(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever brought the original back (here a rename that keeps its old mtime, as the
    restore did before), the next compile through ivflat.ci.provenance recompiles it and
    records the source it compiled; a published build of the mutant is stale."""
    monkeypatch.setenv("CCACHE_DISABLE", "1")
    bdir = _ninja_tree(tmp_path)
    src = devsource.device_source(bdir)
    _killed_with_mutant_compiled(bdir)
    assert provenance.recorded(bdir) == provenance.digests(bdir.parent)  # the mutant's
    src.with_name(src.name + devsource.ORIG_SUFFIX).replace(src)  # old mtime, no utime
    assert provenance.recorded(bdir) != provenance.digests(bdir.parent)
    out = tmp_path / "out"
    out.mkdir()
    for name in qemubuild.OUTPUTS:
        (out / name).write_text("")
    (out / "BUILDINFO.json").write_text(json.dumps(
        {"sources": provenance.digests(bdir.parent), werror.KEY: {"result": werror.CLEAN}}))
    assert "no record of a finished compile" in str(qemubuild._stale(out, bdir))
    devsource.ninja(bdir)
    assert _compiled_from(bdir) == 1
    recorded = provenance.recorded(bdir)
    assert recorded == provenance.digests(bdir.parent)
    assert recorded is not None and recorded[DEVICE_SOURCE] == hashlib.sha256(
        PROGRAM.encode()).hexdigest()
    assert qemubuild._stale(out, bdir) is None
    src.write_text(PROGRAM.replace("1;", "3;"))  # the tree no longer holds that source
    assert "built from other sources" in str(qemubuild._stale(out, bdir))


def test_no_copy_is_taken_of_a_mutated_tree(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The fix series' tree and the Debian base repository are copies of the reference
    tree: taken while a killed mutation run's leftover is there, they kept the mutant (and
    its original, which a build of the fixes tree put back over the fixes)."""
    monkeypatch.setenv("IVSHMEM_SUITE_CACHE", str(tmp_path / "cache"))
    bdir = _tree(tmp_path)
    tree = bdir.parent
    (tree / ".unpacked").write_text("1:10.0.0-1\n")
    ref = tmp_path / "cache" / "reference"
    ref.mkdir(parents=True)
    (ref / "BUILDINFO.json").write_text(json.dumps(
        {"tree": str(tree), "sources": provenance.digests(tree)}))
    src = devsource.device_source(bdir)
    for copy in ("fixes", "debian-git"):
        src.with_name(src.name + devsource.ORIG_SUFFIX).write_text(ORIGINAL)
        src.write_text(ORIGINAL.replace("return 1;", "return 2;"))
        if copy == "fixes":  # no series applies to this tree: it is left, not copied
            with pytest.raises(Skip):
                qemubuild.with_fixes(tmp_path / "cache", "x", tree)
        else:
            repo = debian_base_repo()
            assert (repo / DEVICE_SOURCE).read_text() == ORIGINAL
            assert not list(repo.rglob("*" + devsource.ORIG_SUFFIX))
        assert src.read_text() == ORIGINAL and not devsource.restore_leftover(bdir)


@pytest.mark.slow
@pytest.mark.timeout(int(scaled(2 * TOOL_TIMEOUT)))
def test_sigkilled_mutants_then_build_qemu_leaves_the_reference_unmutated(
        tmp_path: Path) -> None:
    """The issue's reproducer on the real reference: ``ci/mutants --only
    ivposition-off-by-one`` SIGKILLed once its mutant is built and under test, then
    ``ci/build-qemu``: the tree is whole again, the build dir's binary and the published
    one are unmutated (BUILDINFO's hash is the original source's, IVPOSITION is right)."""
    if reference_tool("qemu-system-arm") is None:
        pytest.skip("no reference build: run ci/build-qemu")
    with every_slot_locked(cache_dir()):  # no history test meanwhile, on any worker
        res = run_tool([sys.executable, str(BUILD_QEMU)])
        assert res.returncode == 0, res.stderr[-3000:]
        info = json.loads((reference_dir() / "BUILDINFO.json").read_text())
        tree, bdir = Path(info["tree"]), Path(info["build_dir"])
        original = (tree / DEVICE_SOURCE).read_bytes()
        events = Events(tmp_path / "events.sock")
        try:
            cmd = [sys.executable, str(REPO / "ci" / "mutants"), "--only",
                   "ivposition-off-by-one", "--", "-p", "selftests.ci.ready_plugin",
                   "-k", "test_ivposition_reports_server_assigned_id"]
            # the test parks once it has announced itself: killed while under test, never
            # after a fast test's end let ci/mutants restore the source first
            hold = {"IVSHMEM_TEST_READY_HOLD": str(scaled(TOOL_TIMEOUT))}
            with started_tool(cmd, env={**events.env(), **hold}) as tool:
                events.wait(tool, kind="test")  # the mutant is built and under test
                tool.proc.kill()  # and everything it started, on leaving the block
        finally:
            events.close()
        src = tree / DEVICE_SOURCE
        assert src.with_name(src.name + devsource.ORIG_SUFFIX).exists()  # what it leaves
        res = run_tool([sys.executable, str(BUILD_QEMU)])
        assert res.returncode == 0, res.stderr[-3000:]
        assert src.read_bytes() == original
        assert not src.with_name(src.name + devsource.ORIG_SUFFIX).exists()
        binary = Path(res.stdout.strip().splitlines()[-1])
        built = json.loads((binary.parent / "BUILDINFO.json").read_text())
        assert built["sources"][DEVICE_SOURCE] == hashlib.sha256(original).hexdigest()
        assert provenance.recorded(bdir) == provenance.digests(tree)
        for qemu in (bdir / "qemu-system-arm", binary):
            res = run_tool([sys.executable, "-m", "pytest", "qtests/test_registers.py",
                            "-q", "-p", "no:cacheprovider", f"--qemu={qemu}",
                            "-k", "test_ivposition_reports_server_assigned_id"])
            assert res.returncode == 0, f"{qemu}:\n{res.stdout[-3000:]}"
