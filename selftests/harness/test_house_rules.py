"""The house rules a reviewer would otherwise check by eye: short modules, a package map that
names every module (issue 22's "where does X live" from the map alone), every name imported
from the module that defines it (no re-exports), a docstring on every test stating the
contract it checks, and one bounded wait (timeouts.wait_for).

The layering itself is import-linter's job (pyproject.toml, run by .ci/run).
"""

from __future__ import annotations

import ast
import subprocess
import tomllib
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


def test_every_ci_module_has_its_layer():
    """Every module of ivflat.ci sits in a layer of the import-linter contract that keeps
    its commands above its library: a module left out is bound by no layer, and a library
    module importing a command would pass unseen."""
    contracts = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"][
        "importlinter"]["contracts"]
    layers = next(c["layers"] for c in contracts if c.get("type") == "layers"
                  and any("ivflat.ci." in layer for layer in c["layers"]))
    named = {m.strip() for layer in layers for m in layer.replace("|", ":").split(":")}
    modules = {f"ivflat.ci.{p.stem}" for p in (PACKAGE / "ci").glob("*.py")
               if p.name != "__init__.py"}
    assert not modules - named, f"ivflat.ci modules in no layer: {sorted(modules - named)}"


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


def _module_name(path: Path) -> str:
    """The dotted name of *path*, a file of the ivflat package."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level(tree: ast.Module) -> Iterator[ast.stmt]:
    """The module-level statements of *tree*, including those under if/try (TYPE_CHECKING,
    optional imports), not those inside functions or classes."""
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If | ast.Try):
            todo += node.body + node.orelse + getattr(node, "finalbody", [])
            todo += [s for h in getattr(node, "handlers", []) for s in h.body]


def _ivflat_imports(tree: ast.Module, everywhere: bool = False) -> Iterator[tuple[str, str, str]]:
    """(module, name, bound name) of each module-level ``from ivflat... import name`` (with
    *everywhere*, also those inside functions)."""
    for node in ast.walk(tree) if everywhere else _top_level(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and node.module.split(".")[0] == "ivflat":
            for alias in node.names:
                yield node.module, alias.name, alias.asname or alias.name


def _own_names() -> dict[str, set[str]]:
    """For each module of ivflat, the names it owns: what it defines, its submodules, and for
    a package's __init__ what it imports from its own submodules (the package's face)."""
    owned: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        module, tree = _module_name(path), ast.parse(path.read_text())
        names = owned.setdefault(module, set())
        if path.name == "__init__.py":
            names |= {p.stem for p in path.parent.glob("*.py")}
            names |= {p.parent.name for p in path.parent.glob("*/__init__.py")}
            names |= {bound for source, _, bound in _ivflat_imports(tree)
                      if source.startswith(module + ".")}
        for node in _top_level(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    return owned


def test_every_name_is_imported_from_the_module_that_defines_it():
    """Every ``from ivflat.x import name`` in the repository (harness, tests, ci/ commands)
    names the module that defines *name* (or a package whose __init__ takes it from one of
    its own modules): one home for each helper, found by reading the import line. A module
    that passes on a name it imported (a back-compat re-export, an ``__all__`` listing
    another module's name) gives the name two homes and fails here."""
    owned = _own_names()
    borrowed = []
    for name in _python_files():
        for module, imported, _ in _ivflat_imports(ast.parse((REPO / name).read_text()), True):
            if module in owned and imported not in owned[module]:
                borrowed.append(f"{name}: {imported} from {module}")
    assert len(owned) > 50, sorted(owned)  # the walk found the package
    assert not borrowed, ("names imported through a module that does not define them "
                          "(import them from their home):\n  " + "\n  ".join(borrowed))


def test_no_all_lists_a_name_of_another_module():
    """No module's ``__all__`` lists a name it imported from another ivflat module, except a
    package's __init__ listing its own submodules' names: ``__all__`` says what a module
    owns, and listing a borrowed name invites imports through it."""
    listed = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module, tree = _module_name(path), ast.parse(path.read_text())
        own_prefix = module + "." if path.name == "__init__.py" else None
        foreign = {bound for source, _, bound in _ivflat_imports(tree)
                   if own_prefix is None or not source.startswith(own_prefix)}
        for node in _top_level(tree):
            if isinstance(node, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
                names = ast.literal_eval(node.value)
                listed += [f"{path.relative_to(REPO)}: {n}" for n in names if n in foreign]
    assert not listed, "__all__ lists names defined elsewhere:\n  " + "\n  ".join(listed)


WAITS = "fixtures/ivflat/host/timeouts.py"  # the one home of a deadline loop
BUDGET_OK = "# budget-ok"  # on a ``while`` line: a run's time budget, not a wait


def _waiting_files() -> list[str]:
    """The code whose waits follow timeouts' contract: the harness, the ci/ commands and
    the tests (the catalogue's and the self-tests')."""
    return [f for f in _python_files()
            if f.startswith(("fixtures/ivflat/", "ci/", "qtests/", "selftests/"))
            and f != WAITS]


def _calls_monotonic(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute | ast.Name)
               and (n.func.attr if isinstance(n.func, ast.Attribute) else n.func.id)
               == "monotonic" for n in ast.walk(node))


def test_every_bounded_wait_is_timeouts_wait_for():
    """Outside ivflat.host.timeouts no module, test or self-test included, has a deadline
    loop (a ``while`` that reads time.monotonic()) nor raises a bare TimeoutError: every
    wait goes through timeouts.wait_for, so its bound is scaled once and its expiry is a
    WaitTimeout (an IvflatError) saying what it saw. A loop on a run's time budget (not
    scaled: the user asked for that long) says so with ``# budget-ok`` on its ``while``
    line."""
    found = []
    files = _waiting_files()
    for name in files:
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
    assert len([f for f in files if f.startswith("fixtures/")]) > 100  # it found the harness
    assert "selftests/ci/tools.py" in files and any(f.startswith("qtests/") for f in files)
    assert not found, ("bounded waits of their own (use timeouts.wait_for; a wait's expiry "
                       "is its WaitTimeout):\n  " + "\n  ".join(found))
