"""Every error the harness and the ci/ tools define has one root, IvflatError (issue 22).

Why: a fixture's finalizer, a tool's top level or a fuzz run tells "the harness said this,
for a person" from a bug in the code with one ``except IvflatError``; a class defined on a
bare Exception escapes that. Checked on the package as it is: every module is imported and
every exception class it defines is walked, so a new one cannot be forgotten.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys

import qemu.qmp

import ivflat
from ivflat.errors import IvflatError
from ivflat.protocol.qtest import QTestError, QTestTimeout


def _ivflat_exceptions() -> list[type[BaseException]]:
    found = []
    for info in pkgutil.walk_packages(ivflat.__path__, "ivflat."):
        module = importlib.import_module(info.name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__ == info.name:
                found.append(obj)
    return found


def test_every_exception_class_of_the_package_is_an_ivflat_error():
    """Walks every module of ivflat: each exception class it defines derives from
    IvflatError (about 20 of them, so the walk did find the package)."""
    classes = _ivflat_exceptions()
    assert len(classes) >= 15, classes
    assert [c.__qualname__ for c in classes if not issubclass(c, IvflatError)] == []


def test_a_qtest_timeout_is_a_qtest_error_and_a_timeout():
    """``except QTestError`` sees a qtest wait that expired; ``except TimeoutError`` too."""
    assert issubclass(QTestTimeout, QTestError)
    assert issubclass(QTestTimeout, TimeoutError)


def _qmp_exception_names() -> set[str]:
    """The exception classes of qemu.qmp and of each module it loads (qemu.qmp.error's
    ProtocolError is not exported by the package, but a traceback names it all the same;
    the optional TUI, which needs urwid, is not loaded and not ours to judge)."""
    modules = [qemu.qmp, *(m for name, m in sorted(sys.modules.items())
                           if name.startswith("qemu.qmp."))]
    return {name for module in modules
            for name, obj in inspect.getmembers(module, inspect.isclass)
            if issubclass(obj, BaseException) and obj.__module__.startswith("qemu.qmp")}


def test_no_ivflat_exception_borrows_a_name_of_qemu_qmp():
    """A local class named like one of qemu.qmp's (QMPError, qemu.qmp.error's
    ProtocolError) reads as the library's in a traceback or an ``except``."""
    library = _qmp_exception_names()
    assert {"QMPError", "ProtocolError"} <= library
    assert sorted({c.__name__ for c in _ivflat_exceptions()} & library) == []
