"""A run that tested nothing against a named binary exits 6, not 0 (issue 18, item 9).

Why: against Debian's binary every device test skips and pytest exited 0, green in CI and
"good" in a home-made ``git bisect run pytest``. Judged in real inner pytest runs
(pytester) of the plugin against real binaries: Debian's stock qemu-system-arm (has the
type, cannot create the device) and the reference build (the contrary: device tests run).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ivflat.host import timeouts
from ivflat.host.paths import reference_tool
from ivflat.plugin.nothing_tested import NO_DEVICE_TEST
from ivflat.qemu.probe import probe

DEBIAN = Path("/usr/bin/qemu-system-arm")
LINE = "ivflat: no device test ran against {binary}: {reason} (exit status 6)"
TESTS = """
import pytest

@pytest.mark.needs_device
def test_device(dev):
    assert dev.ivposition >= 0

def test_type_only():
    pass
"""


@pytest.fixture(scope="module")
def debian_reason() -> str:
    """Why Debian's binary cannot run device tests (the probe's words)."""
    if not DEBIAN.exists():
        pytest.skip(f"{DEBIAN} not installed (ci/install-deps)")
    caps = probe(DEBIAN)
    if not caps.device_skip_reason:
        pytest.skip(f"{DEBIAN} can create the device: not the stock binary")
    return caps.device_skip_reason


def _run(pytester: pytest.Pytester, *args: str, source: str = TESTS) -> pytest.RunResult:
    pytester.makepyfile(source)
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args,
                                         timeout=timeouts.scaled(base=timeouts.START))


@pytest.mark.parametrize("how", ["--qemu", "QEMU", "QTEST_QEMU_BINARY", "--qemu -n 1"])
def test_named_binary_without_device_exits_6(plugin_pytester, monkeypatch, debian_reason,
                                             how):
    """Named any way (the option, $QEMU, QEMU's own $QTEST_QEMU_BINARY; under xdist the
    controller decides from the workers' reports): one line and exit status 6."""
    opt, *xdist = how.split()
    args = [f"--qemu={DEBIAN}"] if opt == "--qemu" else []
    if not args:
        monkeypatch.setenv(opt, str(DEBIAN))
    res = _run(plugin_pytester, *args, *xdist)
    res.assert_outcomes(passed=1, skipped=1)
    assert res.ret == NO_DEVICE_TEST
    assert res.outlines[-1] == LINE.format(binary=DEBIAN, reason=debian_reason)


def test_a_failure_keeps_its_exit_status(plugin_pytester, debian_reason):
    """A run that also failed keeps pytest's exit status 1 (a failure says more than "nothing
    tested"); the line still says no device test ran."""
    res = _run(plugin_pytester, f"--qemu={DEBIAN}",
               source=TESTS + "\ndef test_broken():\n    assert False\n")
    assert res.ret == pytest.ExitCode.TESTS_FAILED
    assert res.outlines[-1].startswith(f"ivflat: no device test ran against {DEBIAN}: ")


@pytest.mark.parametrize("args", [["-m", "not needs_device"], ["--collect-only"]],
                         ids=["no-device-test-selected", "collect-only"])
def test_nothing_to_judge_is_not_tested_nothing(plugin_pytester, debian_reason, args):
    """A run that selected no device test (-m "not needs_device") or ran none at all
    (--collect-only) asked for nothing to judge: exit 0, no complaint."""
    res = _run(plugin_pytester, f"--qemu={DEBIAN}", *args)
    assert res.ret == pytest.ExitCode.OK
    assert "no device test ran" not in res.stdout.str()


def test_a_binary_found_by_default_is_not_judged(plugin_pytester, monkeypatch, tmp_path,
                                                 debian_reason):
    """No reference build in the cache, Debian's binary found on PATH: the skips are the
    suite telling what it lacks, exit 0 as before."""
    monkeypatch.setenv("IVSHMEM_SUITE_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("PATH", f"{DEBIAN.parent}:{Path('/bin')}")
    res = _run(plugin_pytester)
    res.assert_outcomes(passed=1, skipped=1)
    assert res.ret == pytest.ExitCode.OK


def test_reference_runs_the_device_test(plugin_pytester):
    """Against the reference build the device test runs and passes: the exit status is 0
    and no line says nothing was tested, so the check does not fire on a binary that works."""
    binary = reference_tool("qemu-system-arm")
    if binary is None:
        pytest.skip("no reference build (ci/build-qemu)")
    res = _run(plugin_pytester, f"--qemu={binary}")
    res.assert_outcomes(passed=2)
    assert res.ret == pytest.ExitCode.OK
    assert "no device test ran" not in res.stdout.str()
