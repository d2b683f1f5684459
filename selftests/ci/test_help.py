"""``--help`` of every ci/ command: safe, named ``ci/x``, every option documented, exit codes.

Issue 21: ``ci/setup --help`` used to install packages and build QEMU. Each command runs
here with a fresh, empty ``$IVSHMEM_SUITE_CACHE`` (and HOME) that must stay empty, and with
tripwires first on PATH for the programs that install or build (apt-get, sudo, make,
ninja...): they record being run and fail, so a --help that starts working is caught
whatever the machine lets it do. Not slow: nothing is built.
"""

from __future__ import annotations

import ast
import functools
import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ivflat.ci.mutants import MUTANTS
from ivflat.device.known_bugs import BY_ID
from ivflat.host.cli import Exit
from ivflat.host.paths import REPO
from ivflat.host.timeouts import scaled
from ivflat.qemu.under_test import QEMU_ENV

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


def exit_codes(text: str) -> list[str]:
    """The codes (and ``*``) of the "Exit status:" table of a --help."""
    rows = text.split("\nExit status:\n", 1)[-1].splitlines() if "\nExit status:\n" in text \
        else []
    return [m.group(1) for r in rows if (m := EXIT_ROW.match(r))]


def tripwired(tmp_path: Path) -> tuple[dict[str, str], Path, Path, Path]:
    """An environment whose cache and HOME are fresh empty directories and whose PATH
    starts with tripwires for :data:`TRIPWIRES`, which append their command line to a
    file and fail: (environment, cache, HOME, that file)."""
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
    return env, cache, home, ran


@functools.cache
def help_text(name: str) -> str:
    """``ci/<name> --help``, run once per worker: it is the same in every environment
    (test_help shows it reads and writes nothing)."""
    return subprocess.run([str(CI / name), "--help"], capture_output=True, text=True,
                          check=True, timeout=scaled(60)).stdout


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
    env, cache, home, ran = tripwired(tmp_path)
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
    assert "0" in exit_codes(text), f"no exit status table:\n{text}"
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
    text = " ".join(help_text(name).split())
    missing = [n for n in ONLY[name] if n not in text]
    assert not missing, missing


@pytest.mark.parametrize("name", sorted(ONLY))
def test_only_refuses_an_unknown_name(name: str, tmp_path: Path) -> None:
    """``--only no-such-name`` is bad usage: exit 2 with one line naming it, before anything
    runs -- never an empty verdict (exit 0) nor a traceback."""
    extra = {"fuzz": ["--minutes", "1"], "fuzz-rediscover": ["--paths", "qtest"],
             "bug-reports": ["--run", "/bin/true", "--label", "x"],
             "anchor": ["--source", str(tmp_path)]}.get(name, [])
    env, _, _, ran = tripwired(tmp_path)  # a refusal that failed would start no build
    res = subprocess.run([str(CI / name), *extra, "--only", "no-such-name"], env=env,
                         capture_output=True, text=True, cwd=tmp_path, timeout=scaled(60))
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    assert not ran.exists(), ran.read_text()
    assert "Traceback" not in res.stderr, res.stderr
    assert f"ci/{name}: error: " in res.stderr and "'no-such-name'" in res.stderr, res.stderr


@pytest.mark.parametrize("name", COMMANDS)
def test_bad_usage_status_is_in_the_table(name: str, tmp_path: Path) -> None:
    """``ci/<name> --no-such-option`` exits with a status its --help's exit table lists
    (by number: a ``*`` row is the status of a step, not bad usage), and runs nothing."""
    env, _, _, ran = tripwired(tmp_path)
    res = subprocess.run([str(CI / name), "--no-such-option"], capture_output=True,
                         text=True, env=env, cwd=tmp_path, timeout=scaled(60))
    assert not ran.exists(), f"a typo ran: {ran.read_text()}"
    assert res.returncode != 0, res.stdout
    codes = exit_codes(help_text(name))
    assert str(res.returncode) in codes, (res.returncode, codes, res.stderr)


PY_COMMANDS = [n for n in COMMANDS if docstring_head(CI / n) is not None]
LIBRARY = re.compile(r"^\s*from ivflat\.ci\.(\w+) import main$", re.M)
IN_PROSE = {"bisect": {Exit.ABORT}}
"""Statuses a command's help explains in its prose rather than its table: ci/bisect's
128, of the `git bisect run` step (--step) it runs itself."""


def returned_statuses(module: Path) -> set[Exit]:
    """What a ci/ library module can make its command exit with, as far as its source
    says: every ``Exit.X`` it names, argparse's 2, and :func:`ivflat.ci.proc.command`'s
    2, 3 and 130 when it runs its body through it."""
    tree = ast.parse(module.read_text())
    found = {Exit[n.attr] for n in ast.walk(tree) if isinstance(n, ast.Attribute)
             and isinstance(n.value, ast.Name) and n.value.id == "Exit"}
    if any(isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "command"
           for n in ast.walk(tree)):
        found |= {Exit.USAGE, Exit.INTERNAL, Exit.INTERRUPTED}
    return found | {Exit.USAGE}


def test_the_static_check_sees_every_command() -> None:
    """Every Python ci/ command is a thin script over an ivflat.ci module (which the next
    test reads), and the ones that run long children are among them."""
    assert {"bisect", "coverage", "fuzz", "fuzz-rediscover"} <= set(PY_COMMANDS)
    assert all(LIBRARY.search((CI / n).read_text()) for n in PY_COMMANDS), PY_COMMANDS


@pytest.mark.parametrize("name", PY_COMMANDS)
def test_every_status_the_library_returns_is_listed(name: str) -> None:
    """Every status a command's library module can return (:func:`returned_statuses`) is
    in its EXITS, the table its --help prints."""
    m = LIBRARY.search((CI / name).read_text())
    assert m, name
    module = importlib.import_module(f"ivflat.ci.{m.group(1)}")
    assert module.__file__
    missing = returned_statuses(Path(module.__file__)) - set(module.EXITS) \
        - IN_PROSE.get(name, set())
    assert not missing, f"ci/{name} can exit {sorted(map(int, missing))}, not in its table"


METAVAR = re.compile(r"(--[\w-]+)[ =]([A-Z][A-Z0-9_-]*)\b")


def usage_and_options(text: str) -> tuple[str, dict[str, str]]:
    """A --help's usage (its first paragraph) and each option's metavar as its entry shows
    it (``--source DIR`` -> {"--source": "DIR"})."""
    usage = text.split("\n\n", 1)[0]
    entries: dict[str, str] = {}
    for ln in text.splitlines():
        if ln.startswith("  -"):
            entries.update(METAVAR.findall(ln.strip().split("  ", 1)[0]))
    return usage, entries


@pytest.mark.parametrize("name", COMMANDS)
def test_usage_agrees_with_the_options(name: str) -> None:
    """The usage line offers -h and names each option's value as the option's own entry
    does (a hand-written usage once said ``--source DIR`` over an entry ``--source
    SOURCE``)."""
    usage, entries = usage_and_options(help_text(name))
    assert "[-h]" in usage, usage
    differ = [(opt, meta, entries[opt]) for opt, meta in METAVAR.findall(usage)
              if opt in entries and entries[opt] != meta]
    assert not differ, differ


def test_qemu_default_names_the_variables() -> None:
    """Every --qemu's help says what the default is: the variables of
    :data:`ivflat.qemu.under_test.QEMU_ENV` in the order they win, then the reference."""
    variables = ", ".join(f"${v}" for v in QEMU_ENV)
    helps = {n: help_text(n) for n in COMMANDS}
    with_qemu = [n for n, h in helps.items() if re.search(r"^  --qemu\b", h, re.M)]
    assert {"fuzz", "diff-pci", "soak"} <= set(with_qemu), with_qemu
    silent = [n for n in with_qemu
              if f"{variables}, else the reference build" not in " ".join(helps[n].split())]
    assert not silent, f"--qemu defaults without {variables}: {silent}"
