"""pytest-timeout's per-test bound scales like every other bound (issue 18, item 8).

Why: with the ini's fixed 120 s, a slow but healthy test under ASan (x3) or with
``--timeout-scale`` ended as a bare "Timeout", which ci/bisect counts as bad. Judged in
real inner pytest runs (pytester) of the plugin: the header pytest-timeout prints and the
value each test runs with, also on an xdist worker (scaled once, not twice).
"""

from __future__ import annotations

import tomllib

import pytest

from ivflat.host import timeouts
from ivflat.host.paths import REPO

INI_TIMEOUT = float(tomllib.loads((REPO / "pyproject.toml").read_text())
                    ["tool"]["pytest"]["ini_options"]["timeout"])


def _run(pytester: pytest.Pytester, expected: float, *args: str) -> pytest.RunResult:
    pytester.makepyfile(f"""
        import pytest

        def test_bound(request):
            assert request.config.getoption("timeout") == {expected!r}

        @pytest.mark.timeout(7)
        def test_own_mark_kept(request):
            assert request.node.get_closest_marker("timeout").args == (7,)
        """)
    return pytester.runpytest_subprocess(*args, timeout=timeouts.scaled(base=timeouts.START))


@pytest.mark.parametrize("xdist", [(), ("-n", "1")], ids=["serial", "xdist"])
def test_scale_multiplies_the_ini_timeout(plugin_pytester, xdist):
    """--timeout-scale multiplies the ini's per-test bound, once, serial or on an xdist
    worker, and pytest-timeout says the scaled bound; a test's own timeout mark is kept."""
    res = _run(plugin_pytester, INI_TIMEOUT * 3, "--timeout-scale", "3", *xdist)
    res.stdout.fnmatch_lines([f"timeout: {INI_TIMEOUT * 3}s"])
    res.assert_outcomes(passed=2)


def test_scale_from_the_environment(plugin_pytester, monkeypatch):
    """The scale can come from the environment too (a CI job sets it once for every
    command), with the same effect as the option."""
    monkeypatch.setenv(timeouts.ENV, "2.5")
    res = _run(plugin_pytester, INI_TIMEOUT * 2.5)
    res.stdout.fnmatch_lines([f"timeout: {INI_TIMEOUT * 2.5}s"])
    res.assert_outcomes(passed=2)


def test_an_explicit_timeout_is_taken_as_given(plugin_pytester):
    """An explicit --timeout is the user's bound: it is not scaled."""
    res = _run(plugin_pytester, 50.0, "--timeout-scale", "3", "--timeout", "50")
    res.stdout.fnmatch_lines(["timeout: 50.0s"])
    res.assert_outcomes(passed=2)
