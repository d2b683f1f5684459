"""``--run-first`` orders a selection, and ``-x`` under xdist exits 1 (issue 23, item 2).

Why: a ci/bisect step runs the tests that failed at earlier steps first and stops at the
first failure; with ``-n 2`` pytest-xdist ended such a run with exit 2 (its stop is an
``Interrupted``, read as a Ctrl-C), which a step must not take for a verdict. Judged in real
inner pytest runs (pytester) of the plugin; no QEMU is needed.
"""

from __future__ import annotations

import pytest

from ivflat.host import timeouts

TESTS = """
def test_a():
    pass

def test_b():
    pass

def test_c():
    assert False, "c fails"

def test_d():
    pass
"""


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_order=TESTS)
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args,
                                         timeout=timeouts.scaled(base=timeouts.START))


def test_named_tests_run_first_and_the_rest_keep_their_order(plugin_pytester):
    """The tests --run-first names run first, in its order, and the rest follow in their own;
    the user's selection still holds (a deselected test stays out) and a name nothing
    matches is ignored, so the list never adds or drops tests."""
    first = plugin_pytester.path / "first.txt"
    first.write_text("test_order.py::test_c\n\ntest_order.py::test_b\nno_such.py::test_x\n")
    res = _run(plugin_pytester, "--collect-only", "-q", f"--run-first={first}", "-k", "not test_d")
    ids = [ln for ln in res.outlines if ln.startswith("test_order.py::")]
    # the selection is the user's: test_d stays deselected, the unknown name is ignored
    assert ids == ["test_order.py::test_c", "test_order.py::test_b", "test_order.py::test_a"]


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_stop_at_the_first_failure_exits_1(plugin_pytester, xdist):
    """-x stops at the first failure with exit 1, serial or under xdist (whose stop pytest
    otherwise reads as an interrupt, exit 2): a bisect step takes 1 as "bad" and 2 as no
    verdict."""
    first = plugin_pytester.path / "first.txt"
    first.write_text("test_order.py::test_c\n")
    res = _run(plugin_pytester, "-x", f"--run-first={first}", *xdist)
    assert res.ret == pytest.ExitCode.TESTS_FAILED, res.stdout.str()
    assert res.parseoutcomes()["failed"] == 1
