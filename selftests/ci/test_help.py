"""``--help`` of every ci/ command: safe, named ``ci/x``, every option documented, exit codes.

Issue 21: ``ci/setup --help`` used to install packages and build QEMU. Each command runs
here with a fresh, empty ``$IVSHMEM_SUITE_CACHE`` (and HOME) that must stay empty, and with
tripwires first on PATH for the programs that install or build (apt-get, sudo, make,
ninja...): they record being run and fail, so a --help that starts working is caught
whatever the machine lets it do. Not slow: nothing is built.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ivflat.ci.mutants import MUTANTS
from ivflat.device.known_bugs import BY_ID
from ivflat.host.paths import REPO
from ivflat.host.timeouts import scaled

CI = REPO / "ci"
COMMANDS = sorted(p.name for p in CI.iterdir()
                  if p.is_file() and os.access(p, os.X_OK) and not p.name.startswith("_"))
TRIPWIRES = ("apt-get", "apt-cache", "sudo", "dpkg-query", "tee", "make", "ninja", "meson",
             "git", "gcc", "arm-none-eabi-gcc", "pip", "stress-ng")
EXIT_ROW = re.compile(r"^  (\d+|\*)\s+\S")


def undocumented(text: str) -> list[str]:
    """Option entries of an argparse-style help with no help text."""
    lines = text.splitlines()
    starts = [i for i, ln in enumerate(lines) if ln in ("positional arguments:", "options:")]
    bad = []
    for i in range(starts[0] if starts else len(lines), len(lines)):
        ln = lines[i]
        if ln == "Exit status:":
            break
        if not ln.startswith("  ") or ln.startswith("   "):
            continue
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if "  " not in ln.strip() and not nxt.startswith("   "):
            bad.append(ln.strip())
    return bad


def docstring_head(script: Path) -> str | None:
    """The first line of a Python script's docstring (None for a shell script)."""
    text = script.read_text()
    if not text.startswith("#!/usr/bin/env python3"):
        return None
    doc = ast.get_docstring(ast.parse(text))
    return doc.splitlines()[0] if doc else None


def test_every_command_is_covered() -> None:
    """The commands found in ci/ (executable, not ``_``-prefixed) include those that install,
    build and run: a listing gone empty or short would leave test_help checking nothing."""
    assert {"setup", "install-deps", "build-qemu", "bisect", "validate-patch", "fuzz",
            "mutants"} <= set(COMMANDS), COMMANDS


@pytest.mark.parametrize("name", COMMANDS)
def test_help(name: str, tmp_path: Path) -> None:
    """``ci/<name> --help`` exits 0, runs none of the tripwired programs, writes nothing to
    the cache or HOME, and prints on stdout only: a usage line naming ``ci/<name>``, help for
    every option, an exit status table and the script's own docstring when it has one."""
    cache, home, trip = tmp_path / "cache", tmp_path / "home", tmp_path / "bin"
    for d in (cache, home, trip):
        d.mkdir()
    ran = tmp_path / "ran"
    for prog in TRIPWIRES:
        (trip / prog).write_text(f"#!/bin/sh\necho {prog} \"$@\" >>{ran}\nexit 1\n")
        (trip / prog).chmod(0o755)
    env = {**os.environ, "IVSHMEM_SUITE_CACHE": str(cache), "HOME": str(home),
           "XDG_CACHE_HOME": str(home / ".cache"),
           "PATH": f"{trip}:{Path(sys.executable).parent}:{os.environ['PATH']}"}
    res = subprocess.run([str(CI / name), "--help"], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=scaled(60))
    assert res.returncode == 0, res.stderr
    assert not ran.exists(), f"--help ran: {ran.read_text()}"
    assert not list(cache.iterdir()) and not list(home.iterdir()), \
        f"--help wrote {list(cache.iterdir())} {list(home.iterdir())}"
    assert res.stderr == ""
    text = res.stdout
    assert text.startswith(f"usage: ci/{name} "), text[:200]
    assert not undocumented(text), f"options without help: {undocumented(text)}"
    rows = text.split("\nExit status:\n", 1)[-1].splitlines() if "\nExit status:\n" in text \
        else []
    codes = [m.group(1) for r in rows if (m := EXIT_ROW.match(r))]
    assert "0" in codes, f"no exit status table:\n{text}"
    head = docstring_head(CI / name)
    if head is not None:  # its own docstring, not its library module's
        assert " ".join(head.split()) in " ".join(text.split()), head


ONLY = {"mutants": [m[0] for m in MUTANTS], "anchor": [m[0] for m in MUTANTS],
        "fuzz": list(BY_ID), "fuzz-rediscover": list(BY_ID), "bug-reports": list(BY_ID)}
"""The commands with an --only and the names it takes: mutants or known-bug ids."""


@pytest.mark.parametrize("name", sorted(ONLY))
def test_only_lists_its_choices(name: str) -> None:
    """The --help of a command with --only lists every name it takes (a mutant's, a known
    bug's), so --only can be given one without reading the source."""
    res = subprocess.run([str(CI / name), "--help"], capture_output=True, text=True,
                         check=True, timeout=scaled(60))
    text = " ".join(res.stdout.split())
    missing = [n for n in ONLY[name] if n not in text]
    assert not missing, missing


@pytest.mark.parametrize("name", sorted(ONLY))
def test_only_refuses_an_unknown_name(name: str, tmp_path: Path) -> None:
    """``--only no-such-name`` is bad usage: exit 2 with one line naming it, before anything
    runs -- never an empty verdict (exit 0) nor a traceback."""
    extra = {"fuzz": ["--minutes", "1"], "fuzz-rediscover": ["--paths", "qtest"],
             "bug-reports": ["--run", "/bin/true", "--label", "x"],
             "anchor": ["--source", str(tmp_path)]}.get(name, [])
    res = subprocess.run([str(CI / name), *extra, "--only", "no-such-name"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=scaled(60))
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr, res.stderr
    assert f"ci/{name}: error: " in res.stderr and "'no-such-name'" in res.stderr, res.stderr
