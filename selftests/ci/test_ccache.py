"""Every compile the tools run goes through ccache, whatever /usr/lib/ccache holds.

Why: a fresh minimal bookworm root's /usr/lib/ccache had no ``cc`` (only the links
update-ccache-symlinks made for arm-none-eabi-gcc), so QEMU's builds, which call plain
``cc``, silently missed the cache, and the Ctrl-C self-tests' compile gate (set as
``CCACHE_PREFIX``) was never called: "the tool exited before compile", three red tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ivflat.ci import ccache

pytestmark = pytest.mark.skipif(shutil.which("ccache") is None, reason="no ccache on PATH")


def _prefix_recorder(tmp_path: Path) -> tuple[Path, Path]:
    """A CCACHE_PREFIX that notes each compiler call, then runs the compiler."""
    log = tmp_path / "calls"
    script = tmp_path / "prefix"
    script.write_text(f'#!/bin/sh\necho "$1" >> {log}\nexec "$@"\n')
    script.chmod(0o755)
    return script, log


@pytest.mark.parametrize("compiler", ccache.COMPILERS)
def test_a_plain_compiler_name_compiles_through_ccache(tmp_path: Path, compiler: str) -> None:
    """With a PATH where the system's masquerade directory is absent (as on a fresh root),
    ``cc``/``gcc``/``c++``/``g++`` of the tools' environment still reach ccache: the
    prefix sees the real compile."""
    prefix, log = _prefix_recorder(tmp_path)
    base = {"PATH": "/usr/bin:/bin", "CCACHE_PREFIX": str(prefix), "CCACHE_RECACHE": "1",
            "HOME": str(tmp_path)}
    env = ccache.compile_env(tmp_path / "cache", base)
    src = tmp_path / "x.c"
    src.write_text("int x;\n")
    subprocess.run([compiler, "-x", "c", "-c", str(src), "-o", str(tmp_path / "x.o")],
                   env=env, check=True, cwd=tmp_path)
    assert log.exists(), f"{compiler} did not go through ccache (PATH={env['PATH']})"
    assert Path(log.read_text().split()[0]).name not in ("ccache",), log.read_text()
    assert env["CCACHE_DIR"] == str(tmp_path / "cache" / "ccache")


def test_a_stale_link_is_replaced(tmp_path: Path) -> None:
    """A link left pointing elsewhere (ccache moved, a half-made directory) is mended."""
    where = tmp_path / ccache.MASQUERADE
    where.mkdir()
    (where / "cc").symlink_to("/nonexistent/ccache")
    assert ccache.masquerade_dir(tmp_path) == where
    wrapper = shutil.which("ccache")
    assert wrapper is not None
    for name in ccache.COMPILERS:
        assert os.path.realpath(where / name) == os.path.realpath(wrapper), name
