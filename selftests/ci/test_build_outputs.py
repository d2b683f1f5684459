"""What ci/build-qemu hands a CI script: ``--print-binary FILE``.

Why: the GitLab job took the binary's path from ``tail -n 1 build.log``, so a line printed
after it (a warning, a progress line) became "the binary" and the next step failed on a
path that was a sentence. Here the real tool builds tools.prebuilt_qemu_repo (a tree whose
build compiles one C file and copies a stock QEMU: seconds) into a private cache.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ivflat.ci.qemubuild import tools_marker
from ivflat.host.timeouts import scaled

from .tools import BUILD_QEMU, fake_qemu_repo, prebuilt_qemu_repo


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private cache whose tools venv is marked present (the stand-in configure ignores
    it)."""
    path = tmp_path / "cache"
    monkeypatch.setenv("IVSHMEM_SUITE_CACHE", str(path))
    tools_marker(path).parent.mkdir(parents=True)
    tools_marker(path).touch()
    return path


def build(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(BUILD_QEMU), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=scaled(300),
                          stdin=subprocess.DEVNULL)


def test_print_binary_names_the_built_qemu(cache: Path, tmp_path: Path) -> None:
    """Exit 0: FILE holds one line, the absolute path of the published qemu-system-arm
    (the same one stdout names), also for a relative FILE and a second, cached run that
    replaces an older FILE."""
    qemu = shutil.which("qemu-system-arm")
    if qemu is None:
        pytest.skip("no qemu-system-arm on PATH to stand in as a build (ci/install-deps)")
    src = prebuilt_qemu_repo(tmp_path / "qemu", Path(qemu).resolve())
    for _ in range(2):
        (tmp_path / "qemu-path").write_text("stale\n")
        res = build("--source", str(src), "--print-binary", "qemu-path", cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        text = (tmp_path / "qemu-path").read_text()
        assert text.endswith("\n") and text.count("\n") == 1, text
        binary = Path(text.strip())
        assert binary.is_absolute() and binary.name == "qemu-system-arm", text
        assert os.access(binary, os.X_OK) and cache.resolve() in binary.resolve().parents
        assert text.strip() == res.stdout.strip().splitlines()[-1]
    assert "up to date" in res.stderr, "the second run rebuilt"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "qemu", "qemu-path"]


def test_print_binary_untouched_without_a_build(cache: Path, tmp_path: Path) -> None:
    """A tree build-qemu declines (exit 125) writes no FILE; a FILE in a directory that does
    not exist is bad usage (exit 2) before anything is built."""
    src = fake_qemu_repo(tmp_path / "qemu")
    res = build("--source", str(src), "--print-binary", str(tmp_path / "qemu-path"),
                cwd=tmp_path)
    assert res.returncode == 125, res.stderr
    assert not (tmp_path / "qemu-path").exists()
    res = build("--source", str(src), "--print-binary", str(tmp_path / "no" / "qemu-path"),
                cwd=tmp_path)
    assert res.returncode == 2 and "--print-binary" in res.stderr, res.stderr
    assert res.stderr.startswith("usage: ci/build-qemu"), "it started before checking"
