"""The device source compiled again with -Werror after a build (ivflat.ci.werror).

Why: the suite builds QEMU with --disable-werror, QEMU's CI with --enable-werror, so a
warning a series adds to the device passed every build here and failed QEMU's CI. The check
must read the build's own compile command (meson's compile_commands.json), see a real
warning with the tree's warning flags, and leave the build alone: no object, dependency
file or ninja state written, so ninja recompiles nothing for it. Real compiles with the
machine's cc, on a meson-shaped build dir and through ci/build-qemu on
tools.prebuilt_qemu_repo (seconds).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ivflat.ci import suite, werror
from ivflat.ci.qemubuild import tools_marker
from ivflat.ci.validate_report import Side, added_warnings
from ivflat.device.board import DEVICE_SOURCE
from ivflat.host.timeouts import scaled

from .tools import BUILD_QEMU, git, prebuilt_qemu_repo

CLEAN_C = "int ivshmem_flat_probe(void);\nint ivshmem_flat_probe(void)\n{\n    return 0;\n}\n"
WARNING_C = CLEAN_C.replace("{\n", "{\n    int unused;\n")  # -Wunused-variable (-Wall)
# meson's shape: run in the build dir, the source relative to it, -MD/-MQ/-MF and -o
MESON_CMD = ("cc -m64 -Ilibcommon.a.p -fdiagnostics-color=auto -Wall -O2 -g -MD -MQ "
             "libcommon.a.p/hw_misc_ivshmem-flat.c.o -MF "
             "libcommon.a.p/hw_misc_ivshmem-flat.c.o.d -o "
             "libcommon.a.p/hw_misc_ivshmem-flat.c.o -c ../hw/misc/ivshmem-flat.c")
OBJ = "libcommon.a.p/hw_misc_ivshmem-flat.c.o"


def meson_tree(tmp_path: Path, source: str, form: str = "command") -> Path:
    """A tree with the device source and a build dir holding its compile command (as
    ``command`` or ``arguments``, or as a coverage build's with ``--coverage``) and a
    stand-in object; returns the build dir."""
    tree = tmp_path / "tree"
    (tree / "hw/misc").mkdir(parents=True)
    (tree / DEVICE_SOURCE).write_text(source)
    bdir = tree / "build-default"
    (bdir / "libcommon.a.p").mkdir(parents=True)
    (bdir / OBJ).write_text("the build's object\n")
    cmd = MESON_CMD.replace(" -c ", " --coverage -c ") if form == "gcov" else MESON_CMD
    entry = {"directory": str(bdir), "file": "../hw/misc/ivshmem-flat.c", "output": OBJ,
             "arguments" if form == "arguments" else "command":
             cmd.split() if form == "arguments" else cmd}
    other = {"directory": str(bdir), "file": "../hw/misc/other.c", "command": "cc -c x.c"}
    (bdir / "compile_commands.json").write_text(json.dumps([other, entry]))
    return bdir


def state(bdir: Path) -> dict[str, tuple[str, int]]:
    """Every file of *bdir*: content hash and mtime."""
    return {str(p.relative_to(bdir)): (hashlib.sha256(p.read_bytes()).hexdigest(),
                                       p.stat().st_mtime_ns)
            for p in sorted(bdir.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("form", ["command", "arguments", "gcov"])
def test_the_build_compile_command_again_with_werror(tmp_path: Path, form: str) -> None:
    """Clean source: "clean"; ``int unused;`` in a function: "warns", the compiler's lines
    naming the file relative to the tree (no local path); the build dir unchanged either
    way (no object, no .d written, and for a coverage build's ``--coverage`` compile no
    .gcno, which gcc names after the source when the object goes to /dev/null)."""
    bdir = meson_tree(tmp_path, CLEAN_C, form)
    argv = werror.werror_argv(werror.compile_command(bdir)[0])
    assert argv[-4:] == ["-Werror", "-fdiagnostics-color=never", "-o", "/dev/null"], argv
    assert not {"-MD", "-MF", "-MQ", OBJ} & set(argv), argv
    before = state(bdir)
    assert werror.check(bdir) == {"result": "clean", "output": []}
    (bdir.parent / DEVICE_SOURCE).write_text(WARNING_C)
    found = werror.check(bdir)
    assert found["result"] == "warns", found
    first = werror.diagnostics(found)
    assert first and first[0].startswith(f"{DEVICE_SOURCE}:4:9: error: unused variable "
                                         "'unused' [-Werror=unused-variable]"), found
    assert str(tmp_path) not in "\n".join(found["output"]), found
    assert state(bdir) == before


def test_no_compile_command_is_not_checked(tmp_path: Path) -> None:
    """Without compile_commands.json, or without the device in it: "not checked", why."""
    bdir = meson_tree(tmp_path, CLEAN_C)
    (bdir / "compile_commands.json").write_text(json.dumps([{
        "directory": str(bdir), "file": "../hw/misc/other.c", "command": "cc -c x.c"}]))
    assert werror.check(bdir) == {"result": "not checked", "output": [
        f"compile_commands.json has no compile of {DEVICE_SOURCE}"]}
    (bdir / "compile_commands.json").unlink()
    found = werror.check(bdir)
    assert found["result"] == "not checked", found
    assert found["output"][0].startswith("no readable compile_commands.json"), found
    assert werror.diagnostics(found) == [] and werror.warning(found) == []


def _side(result: str | None, built: bool = True) -> Side:
    b = suite.Build(0, Path("/q/qemu-system-arm") if built else None, 1.0, Path("/log"),
              werror={"result": result, "output": [f"{DEVICE_SOURCE}:1:1: warning: w"]}
              if result else None)
    return Side("x", "c", b, suite.TestRun(0, {}, {}, 0.0, ""))


def test_warnings_count_only_when_the_series_adds_them() -> None:
    """The patched side warns: added when the base compiled clean or has no device; not
    when the base warns too, or was not checked (nothing known to compare with)."""
    warns = _side("warns")
    line = [f"{DEVICE_SOURCE}:1:1: warning: w"]
    assert added_warnings(_side("clean"), warns) == line
    assert added_warnings(_side(None, built=False), warns) == line
    for base in ("warns", "not checked", None):
        assert added_warnings(_side(base), warns) == [], base
    assert added_warnings(_side("clean"), _side("clean")) == []


def test_build_qemu_records_it_and_says_a_warning(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """ci/build-qemu on a tree that compiles clean: BUILDINFO.json says "clean", no
    WARNING; with ``int unused;`` added: "warns" and a WARNING line with the compiler's,
    also from the published build when nothing is rebuilt. The check wrote nothing in the
    build dir: the same check again leaves every file as it was, ninja has no work. A
    published build without the record is rebuilt to get it."""
    qemu = shutil.which("qemu-system-arm")
    if qemu is None:
        pytest.skip("no qemu-system-arm on PATH to stand in as a build (ci/install-deps)")
    cache = tmp_path / "cache"
    monkeypatch.setenv("IVSHMEM_SUITE_CACHE", str(cache))
    tools_marker(cache).parent.mkdir(parents=True)
    tools_marker(cache).touch()
    src = prebuilt_qemu_repo(tmp_path / "qemu", Path(qemu).resolve())
    said = "WARNING: hw/misc/ivshmem-flat.c does not compile with -Werror"

    def build() -> tuple[subprocess.CompletedProcess[str], dict[str, object]]:
        res = subprocess.run([sys.executable, str(BUILD_QEMU), "--source", str(src)],
                             capture_output=True, text=True, timeout=scaled(300),
                             stdin=subprocess.DEVNULL)
        assert res.returncode == 0, res.stderr
        info = json.loads((Path(res.stdout.split()[-1]).parent / "BUILDINFO.json")
                          .read_text())
        return res, info

    res, info = build()
    assert info[werror.KEY] == {"result": "clean", "output": []}, info
    assert said not in res.stderr and "-Werror: clean (" in res.stderr, res.stderr
    with open(src / DEVICE_SOURCE, "a") as fh:  # the wiring's property kept
        fh.write(WARNING_C)
    git(src, "commit", "-q", "-a", "-m", "warns")
    for _ in range(2):
        res, info = build()
        assert info[werror.KEY]["result"] == "warns", info  # type: ignore[index]
        assert f"{said} (QEMU's CI builds with --enable-werror):\n" in res.stderr, res.stderr
        assert "error: unused variable 'unused' [-Werror=unused-variable]" in res.stderr
    assert "up to date" in res.stderr, res.stderr
    bdir = Path(str(info["build_dir"]))
    before = state(bdir)
    assert werror.check(bdir)["result"] == "warns"
    assert state(bdir) == before
    ninja = subprocess.run(["ninja", "-C", str(bdir), "-n"], capture_output=True, text=True,
                           timeout=scaled(60))
    assert "no work to do" in ninja.stdout, ninja.stdout
    # a build published before the check was recorded: rebuilt (nothing to compile) for it
    published = Path(res.stdout.split()[-1]).parent / "BUILDINFO.json"
    published.write_text(json.dumps({k: v for k, v in info.items() if k != werror.KEY}))
    res, info = build()
    assert f"building: its BUILDINFO.json has no {werror.KEY}" in res.stderr, res.stderr
    assert info[werror.KEY]["result"] == "warns", info  # type: ignore[index]
