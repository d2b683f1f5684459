"""The house rules a reviewer would otherwise check by eye: short modules, a package map that
names every module (issue 22's "where does X live" from the map alone), a docstring on
every test stating the contract it checks, and one bounded wait (timeouts.wait_for).

The layering itself is import-linter's job (pyproject.toml, run by .ci/run).
"""

from __future__ import annotations

import ast
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ivflat.host.paths import REPO

MAX_LINES = 400  # the guide's "short modules (<= ~400 lines)"
PACKAGE = REPO / "fixtures" / "ivflat"


def _python_files() -> list[str]:
    """Every tracked Python file: *.py and the extension-less ci/ commands with a python
    shebang."""
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True,
                             check=True).stdout.decode().split("\0")
    files = []
    for name in filter(None, tracked):
        path = REPO / name
        if name.endswith(".py"):
            files.append(name)
        elif name.startswith("ci/") and path.is_file() and "/" not in name[3:]:
            with path.open("rb") as f:
                if f.readline().startswith(b"#!/usr/bin/env python"):
                    files.append(name)
    return files


def test_no_module_is_longer_than_the_limit():
    """No Python module of the suite (harness, tests, ci/ commands) is over MAX_LINES: a
    longer one is split by concern, not grown."""
    long = {f: n for f in _python_files()
            if (n := len((REPO / f).read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them by concern): {long}"


@pytest.mark.parametrize("package", sorted(p.parent.relative_to(PACKAGE.parent).as_posix()
                                           for p in PACKAGE.rglob("__init__.py")))
def test_package_map_names_every_module(package):
    """Every package's __init__ docstring names each of its modules and sub-packages, so the
    map alone says where a thing lives; a new module without a line there fails."""
    pkg_dir = PACKAGE.parent / package
    doc = ast.get_docstring(ast.parse((pkg_dir / "__init__.py").read_text())) or ""
    members = sorted({p.stem for p in pkg_dir.glob("*.py") if p.stem != "__init__"}
                     | {p.parent.name for p in pkg_dir.glob("*/__init__.py")})
    named = ("``{}``", "``{}/``", ":mod:`.{}`")
    missing = [m for m in members if not any(form.format(m) in doc for form in named)]
    assert doc, f"{package}/__init__.py has no docstring (the package's map)"
    assert not missing, f"{package}/__init__.py's map does not name: {missing}"


def _test_functions(path: Path) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    """The test functions of *path*: ``test_*`` at module level or in a class."""
    for node in ast.parse(path.read_text()).body:
        for f in node.body if isinstance(node, ast.ClassDef) else [node]:
            if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef) and f.name.startswith("test_"):
                yield f


def test_every_test_states_its_contract():
    """Every test function in qtests/ and selftests/ has a docstring saying what must hold and
    why: a failure, and a change to the test, is judged against that contract; an assertion
    with none stated cannot be told apart from an accident of the implementation."""
    bare = [f"{path.relative_to(REPO)}:{f.lineno} {f.name}"
            for root in ("qtests", "selftests")
            for path in sorted((REPO / root).rglob("*.py"))
            for f in _test_functions(path) if ast.get_docstring(f) is None]
    assert not bare, ("test functions without a docstring (state the contract):\n  "
                      + "\n  ".join(bare))


WAITS = "fixtures/ivflat/host/timeouts.py"  # the one home of a deadline loop
BUDGET_OK = "# budget-ok"  # on a ``while`` line: a run's time budget, not a wait


def _harness_files() -> list[str]:
    """The harness and the ci/ commands: the code whose waits follow timeouts' contract."""
    return [f for f in _python_files()
            if f.startswith(("fixtures/ivflat/", "ci/")) and f != WAITS]


def _calls_monotonic(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute | ast.Name)
               and (n.func.attr if isinstance(n.func, ast.Attribute) else n.func.id)
               == "monotonic" for n in ast.walk(node))


def test_every_bounded_wait_is_timeouts_wait_for():
    """Outside ivflat.host.timeouts no module has a deadline loop (a ``while`` that reads
    time.monotonic()) nor raises a bare TimeoutError: every wait goes through
    timeouts.wait_for, so its bound is scaled once and its expiry is a WaitTimeout (an
    IvflatError) saying what it saw. A loop on a run's time budget (not scaled: the user
    asked for that long) says so with ``# budget-ok`` on its ``while`` line."""
    found = []
    for name in _harness_files():
        text = (REPO / name).read_text()
        lines = text.splitlines()
        for node in ast.walk(ast.parse(text)):
            if (isinstance(node, ast.While) and _calls_monotonic(node)
                    and BUDGET_OK not in lines[node.lineno - 1]):
                found.append(f"{name}:{node.lineno}: a deadline loop")
            elif isinstance(node, ast.Raise) and node.exc is not None:
                exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
                if isinstance(exc, ast.Name) and exc.id == "TimeoutError":
                    found.append(f"{name}:{node.lineno}: raise TimeoutError")
    assert len(_harness_files()) > 100  # the walk did find the harness
    assert not found, ("bounded waits of their own (use timeouts.wait_for; a wait's expiry "
                       "is its WaitTimeout):\n  " + "\n  ".join(found))
