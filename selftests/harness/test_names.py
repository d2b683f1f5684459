"""One prefix for the suite's variables, option names that say what they do, the old
names working for one release with a deprecation message (issue 21, item 6).

Judged through the real commands: pytest with the plugin, ci/fuzz and ci/build-images up
to the point where they refuse a binary or a compiler that does not exist (nothing is
built or run), and a real process tagged the previous release's way for the sweep.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ivflat.host import envvars, reaper
from ivflat.host.paths import REPO
from ivflat.host.timeouts import scaled

DEPRECATED = "is deprecated and goes away in the next release"


def test_new_variable_wins_old_one_works_and_says_so(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]
                                                     ) -> None:
    """Every renamed variable has the IVSHMEM_ prefix; the old name still works, with one
    deprecation message however often it is read, and the new name wins when both are set:
    a user's old setup keeps working for a release and is told what to change."""
    for new, old in envvars.RENAMED.items():
        assert new.startswith("IVSHMEM_") and not old.startswith("IVSHMEM_")
    monkeypatch.delenv("IVSHMEM_REPRO_SECONDS", raising=False)
    monkeypatch.setenv("IVF_REPRO_SECONDS", "7")
    monkeypatch.setattr(envvars, "_said", set())
    assert envvars.get("IVSHMEM_REPRO_SECONDS") == "7"
    assert envvars.get("IVSHMEM_REPRO_SECONDS") == "7"
    err = capsys.readouterr().err
    assert err.count("$IVF_REPRO_SECONDS " + DEPRECATED) == 1, err  # said once
    monkeypatch.setenv("IVSHMEM_REPRO_SECONDS", "9")
    assert envvars.get("IVSHMEM_REPRO_SECONDS") == "9"


def _run(*cmd: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, **(env or {})}, timeout=scaled(120),
                          stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("var", ["CROSS", "IVSHMEM_CROSS"])
def test_build_images_cross_prefix(var: str) -> None:
    """ci/build-images takes its cross prefix from $IVSHMEM_CROSS or the old $CROSS, and
    only the old name draws the deprecation message."""
    env = {k: v for k, v in os.environ.items() if k not in ("CROSS", "IVSHMEM_CROSS")}
    res = subprocess.run([str(REPO / "ci" / "build-images")], capture_output=True, text=True,
                         env={**env, var: "no-such-cross-"}, timeout=scaled(60))
    assert res.returncode == 1
    assert "no-such-cross-gcc not found" in res.stderr
    assert (f"$CROSS {DEPRECATED}" in res.stderr) == (var == "CROSS"), res.stderr


@pytest.mark.parametrize("how", [["--model", "fixed"], ["--known-bugs", "find"]])
def test_fuzz_model_option(how: list[str]) -> None:
    """ci/fuzz takes --model fixed and its old spelling --known-bugs find alike (both reach
    the check of --qemu, exit 4), and only the old spelling is called deprecated."""
    res = _run(sys.executable, str(REPO / "ci" / "fuzz"), "--minutes", "1", *how,
               "--qemu=/no/such/qemu")
    assert res.returncode == 4, res.stderr
    old = how[0] == "--known-bugs"
    assert (f"--known-bugs {DEPRECATED}; use --model fixed" in res.stderr) == old, res.stderr


@pytest.mark.parametrize("opt", ["--artifacts-dir", "--artifacts"])
def test_fuzz_artifacts_dir_option(opt: str) -> None:
    """ci/fuzz takes --artifacts-dir and its old name --artifacts alike (both reach the
    check of --qemu, exit 4), and only the old name is called deprecated."""
    res = _run(sys.executable, str(REPO / "ci" / "fuzz"), "--minutes", "1", opt, "x",
               "--qemu=/no/such/qemu")
    assert res.returncode == 4, res.stderr
    assert (f"--artifacts {DEPRECATED}; use --artifacts-dir" in res.stderr) == \
        (opt == "--artifacts"), res.stderr


@pytest.mark.parametrize("opt", ["--artifacts-dir", "--keep-artifacts"])
def test_artifacts_dir_option(plugin_pytester: pytest.Pytester, opt: str) -> None:
    """--artifacts-dir and its old name --keep-artifacts both set where failures leave their
    artifacts (~ expanded), and only the old name is called deprecated."""
    plugin_pytester.makepyfile(
        "def test_where(pytestconfig):\n"
        "    print('DIR=' + str(pytestconfig.getoption('artifacts_dir')))\n")
    res = plugin_pytester.runpytest_subprocess("-p", "no:cacheprovider", "-s",
                                               f"{opt}=~/evidence")
    res.assert_outcomes(passed=1)
    out = res.stdout.str()
    assert f"DIR={Path(os.environ['HOME']) / 'evidence'}" in out
    assert (f"--keep-artifacts {DEPRECATED}; use --artifacts-dir" in out) == \
        (opt == "--keep-artifacts"), out


@pytest.mark.parametrize("opt", ["--list-known-bugs", "--known-bugs"])
def test_list_known_bugs_option(opt: str) -> None:
    """--list-known-bugs and its old name --known-bugs both list the registry and exit 0,
    and only the old name is called deprecated."""
    res = _run(sys.executable, "-m", "pytest", "-p", "no:cacheprovider", opt, "qtests/")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "version-unchecked: " in res.stdout
    assert (f"--known-bugs {DEPRECATED}; use --list-known-bugs" in res.stderr) == \
        (opt == "--known-bugs"), res.stderr


def test_sweep_knows_the_previous_release_tag() -> None:
    """A process a run of the previous release left (tagged IVFLAT_OWNER) is still
    recognised as that run's."""
    assert reaper.OWNER_VAR == "IVSHMEM_OWNER"
    token = "1.2"  # pid 1's tag shape; the process is not swept, only read
    with subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          env={**os.environ, "IVFLAT_OWNER": token}) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        try:
            # cat echoes a line only once it runs: until exec, /proc/<pid>/environ is still
            # ours (a read right after the fork saw no tag)
            proc.stdin.write(b"ready\n")
            proc.stdin.flush()
            assert proc.stdout.readline() == b"ready\n"
            assert reaper._environ_owner(str(proc.pid)) == token
        finally:
            proc.stdin.close()


def test_no_other_prefix_is_left() -> None:
    """Every IVF_/IVFLAT_ name in the tracked files is an old name kept for one release
    (or the firmware header's include guard, a C macro): a new variable gets IVSHMEM_."""
    files = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True,
                           check=True).stdout.decode().split("\0")
    allowed = {*envvars.RENAMED.values(), *reaper.OLD_OWNER_VARS, "IVFLAT_BOARD_H"}
    found: dict[str, str] = {}
    for name in filter(None, files):
        path = REPO / name
        if name.startswith("ci/patches/") or not path.is_file():
            continue
        for word in re.findall(r"\b(?:IVF|IVFLAT)_[A-Z][A-Z0-9_]*", path.read_text(
                errors="replace")):
            if word not in allowed:
                found.setdefault(word, name)
    assert not found, found
