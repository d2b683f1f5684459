"""Only a known bug's symptom is its expected failure (issue 18, item 5).

Why: an xfail without ``raises=`` turned any failure into the expected one: a SIGSEGV in
the test body, a sanitizer report at teardown. ci/validate-patch then read xfailed ->
xfailed and passed a series that makes the path crash. Judged in real inner pytest runs
(pytester) of the plugin, with real QEMUs of the reference build killed by real signals;
the crash signatures also against an ASan report's text (no ASan build is needed to run
this file).
"""

from __future__ import annotations

import re
import signal

import pytest

from ivflat.device import known_bugs, traces
from ivflat.device.known_bugs import CrashSignature, KnownBugCrash, crash_matches
from ivflat.host import timeouts
from ivflat.host.paths import reference_tool
from ivflat.plugin.known_bugs import raises_problem
from ivflat.protocol.qtest import QTestError, QTestTimeout

CRASHES = """
import os, signal
import pytest
from ivflat.device.known_bugs import KnownBugCrash, known_bug
from ivflat.protocol.qtest import QTestTimeout


def segv(vm, sig=signal.SIGSEGV):
    os.kill(vm.pid, sig)
    vm.wait_exit()


@known_bug("version-unchecked", raises=AssertionError)
def test_symptom(vm):
    assert vm.is_running()
    assert False, "the symptom: a wrong value"


@known_bug("version-unchecked", raises=AssertionError)
def test_segv_then_assert(vm):
    segv(vm)
    assert vm.is_running(), vm.death_reason()


@known_bug("own-vector-opaque", raises=QTestTimeout)
def test_segv_then_wait(vm, dev):
    os.kill(vm.pid, signal.SIGSEGV)
    dev.wait_pulses(1)


@known_bug("disconnect-own-id", raises=KnownBugCrash)
def test_its_signature(vm):
    segv(vm)
    assert not vm.crashed(), vm.death_reason()


@known_bug("disconnect-own-id", raises=KnownBugCrash)
def test_another_crash(vm):
    segv(vm, signal.SIGABRT)
    assert not vm.crashed(), vm.death_reason()
"""

TEARDOWN = """
import pytest
from ivflat.device.known_bugs import known_bug


@pytest.fixture
def bad_teardown():
    yield
    assert False, "a teardown error"


@pytest.fixture
def qemu_failed_at_shutdown():
    yield
    pytest.fail("QEMU failed at shutdown: vm0: crashed while shutting down", pytrace=False)


@pytest.mark.xfail(strict=True, raises=AssertionError)
def test_plain_xfail(bad_teardown):
    assert False, "the symptom"


@known_bug("version-unchecked", raises=AssertionError)
def test_known_bug(bad_teardown):
    assert False, "the symptom"


@known_bug("version-unchecked", raises=AssertionError)
def test_shutdown_report(qemu_failed_at_shutdown):
    assert False, "the symptom"
"""


def _outcomes(res: pytest.RunResult) -> dict[str, list[str]]:
    """test name -> the outcomes ``-rA`` reports for it (a teardown error adds ERROR; pytest
    9.2 also names the phase: "XFAIL at teardown of <file>::<test>")."""
    got: dict[str, list[str]] = {}
    for line in res.outlines:
        m = re.match(r"^(PASSED|FAILED|ERROR|XFAIL|XPASS)(?: at \w+ of)? \S+::(\w+)", line)
        if m:
            got.setdefault(m.group(2), []).append(m.group(1))
    return got


def _run(pytester: pytest.Pytester, source: str, *args: str) -> pytest.RunResult:
    pytester.makepyfile(source)
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA", *args,
                                         timeout=timeouts.scaled(base=timeouts.START))


def test_a_crash_is_never_the_expected_failure(plugin_pytester):
    """A QEMU killed by SIGSEGV fails the test, whether the test then asserts on it or
    waits for a pulse that cannot come; only the bug's own signature (disconnect-own-id:
    SIGSEGV and nothing printed, on a build without ASan) is its expected failure."""
    binary = reference_tool("qemu-system-arm")
    if binary is None:
        pytest.skip("no reference build (ci/build-qemu)")
    res = _run(plugin_pytester, CRASHES, f"--qemu={binary}")
    got = _outcomes(res)
    assert got == {"test_symptom": ["XFAIL"], "test_segv_then_assert": ["FAILED"],
                   "test_segv_then_wait": ["FAILED"], "test_its_signature": ["XFAIL"],
                   "test_another_crash": ["FAILED"]}, res.stdout.str()[-3000:]
    out = res.stdout.str()
    # once in each failing test's traceback (the short summary may repeat it, cut or not
    # at the terminal's width)
    assert len(re.findall(r"^E +ivflat\.device\.known_bugs\.QEMUCrashed: QEMU crashed, which "
                          r"is not the expected failure", out, re.M)) == 3, out[-3000:]
    assert "killed by SIGABRT" in out


def test_errors_outside_the_call_are_never_the_expected_failure(plugin_pytester):
    """A known-bug test's teardown error is an error, and so is the harness's report of a
    QEMU that crashed while quitting. Whatever pytest does with a plain xfail's teardown
    error (up to 9.0 it judged it by raises=, an XFAIL; 9.2 reports an ERROR), ours never
    depend on it."""
    res = _run(plugin_pytester, TEARDOWN)
    got = _outcomes(res)
    assert sorted(got["test_plain_xfail"]) in (["XFAIL", "XFAIL"], ["ERROR", "XFAIL"]), \
        res.stdout.str()[-3000:]
    assert sorted(got["test_known_bug"]) == ["ERROR", "XFAIL"], res.stdout.str()[-3000:]
    assert sorted(got["test_shutdown_report"]) == ["ERROR", "XFAIL"]
    assert "NotTheBug: teardown failed" in res.stdout.str()


def test_a_mark_must_name_the_symptom(plugin_pytester):
    """Without raises= (or with one that takes a dead QEMU) collection is refused."""
    res = _run(plugin_pytester, """
import pytest

@pytest.mark.known_bug("version-unchecked")
def test_x():
    pass
""", "--collect-only")
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    res.stderr.fnmatch_lines(["*known_bug('version-unchecked'): raises= must name*"])


@pytest.mark.parametrize("raises,problem", [
    (AssertionError, None),
    ((AssertionError, QTestTimeout), None),
    (TimeoutError, None),
    (None, "must name"),
    ("AssertionError", "must name"),
    (Exception, "would accept QTestDisconnected"),
    (RuntimeError, "would accept QEMUStartError"),
    (QTestError, "would accept QTestDisconnected"),
    ((AssertionError, known_bugs.NotTheBug), "would accept NotTheBug"),
    (BaseException, "would accept"),
    (KnownBugCrash, "no crash signature"),
])
def test_raises_rule(raises, problem):
    """raises= must name the symptom as exception classes, and none that would also take
    what a dead QEMU raises (QTestDisconnected, QEMUStartError) or the plugin's NotTheBug,
    or a crash with no signature to tell the bug's crash from another: else the strict
    xfail would pass a series that makes the path crash."""
    got = raises_problem(known_bugs.get("version-unchecked"), raises)
    assert (got is None) if problem is None else (problem in (got or "")), got


def test_crash_bugs_have_a_signature():
    """A bug whose symptom is a crash may say raises=KnownBugCrash because the registry gives
    it a crash signature, the only thing that tells its crash from any other."""
    assert raises_problem(known_bugs.get("disconnect-own-id"), KnownBugCrash) is None
    assert known_bugs.get("doorbell-vector-unchecked").crash is not None


ASAN_REPORT = """\
==4242==ERROR: AddressSanitizer: heap-buffer-overflow on address 0x6110000a1c48 at pc 0x55d1
READ of size 4 at 0x6110000a1c48 thread T0
    #0 0x55d0c3a1b2c3 in event_notifier_set ../util/event_notifier-posix.c:100
    #1 0x55d0c29f0a11 in ivshmem_flat_interrupt_peer ../hw/misc/ivshmem-flat.c:358
    #2 0x55d0c29f0a11 in ivshmem_flat_iomem_write ../hw/misc/ivshmem-flat.c:380
    #3 0x55d0c2c1d0f2 in memory_region_write_accessor ../system/memory.c:497
    #4 0x55d0c2c1c8e1 in access_with_adjusted_size ../system/memory.c:573

0x6110000a1c48 is located 8 bytes after 224-byte region [0x6110000a1b60,0x6110000a1c40)
allocated by thread T0 here:
    #0 0x7f0e1a2b3c4d in calloc (/lib/x86_64-linux-gnu/libasan.so.8+0xd8c4d)
    #1 0x55d0c29f0b22 in ivshmem_flat_add_peer ../hw/misc/ivshmem-flat.c:206
SUMMARY: AddressSanitizer: heap-buffer-overflow ../util/event_notifier-posix.c:100
"""
DOORBELL = known_bugs.get("doorbell-vector-unchecked").crash
OWN_ID = known_bugs.get("disconnect-own-id").crash
SEGV = -signal.SIGSEGV


def test_asan_signature_matches_its_report():
    """The doorbell bug's signature matches its own ASan report, lines before it included,
    and the other crash bug's does not: each crash is credited to its own bug only."""
    assert DOORBELL is not None and OWN_ID is not None
    lines = ASAN_REPORT.splitlines()
    assert crash_matches(DOORBELL, 1, ["qemu: some earlier line", *lines])
    assert not crash_matches(OWN_ID, 1, lines)  # another bug's functions


@pytest.mark.parametrize("change", ["kind", "deep frame", "ubsan first", "no frames"])
def test_asan_signature_refuses_other_reports(change):
    """Another report kind, the device only deep in the stack, a UBSan report first or a
    report without frames is not the bug's: a different crash on the same path must not
    count as the known one."""
    assert DOORBELL is not None
    text = ASAN_REPORT
    if change == "kind":
        text = text.replace("heap-buffer-overflow on", "heap-use-after-free on")
    elif change == "deep frame":  # the device only deep in the stack: another crash
        text = re.sub(r"(event_notifier_set|ivshmem_flat_\w+) \.\./", "some_function ../",
                      text, count=3)
        text = text.replace("#4 0x55d0c2c1c8e1 in access_with_adjusted_size",
                            "#4 0x55d0c2c1c8e1 in ivshmem_flat_interrupt_peer")
    elif change == "ubsan first":  # a UBSan report the signature does not name
        text = ("../hw/misc/ivshmem-flat.c:358:5: runtime error: signed integer overflow\n"
                + text)
    else:
        text = "\n".join(ln for ln in text.splitlines() if " in " not in ln)
    assert not crash_matches(DOORBELL, 1, text.splitlines())


# What ci/build-qemu --sanitize (ASan + UBSan) printed first for the two crash bugs on
# 10.0.13: UBSan's report, before ASan's SEGV (ci/validate-patch --sanitize, Dec 2026).
UBSAN_REPORTS = {
    "doorbell-vector-unchecked": """\
../hw/misc/ivshmem-flat.c:358:38: runtime error: index 64 out of bounds for type 'VectorInfo [64]'
    #0 0x55c42fee7edf in ivshmem_flat_interrupt_peer ../hw/misc/ivshmem-flat.c:358
    #1 0x55c42fee7edf in ivshmem_flat_iomem_write ../hw/misc/ivshmem-flat.c:381
    #2 0x55c430fee162 in memory_region_write_accessor ../system/memory.c:497
""",
    "disconnect-own-id": """\
../hw/misc/ivshmem-flat.c:224:5: runtime error: member access within null pointer of type \
'struct QTailQLink'
    #0 0x56237adebb9b in ivshmem_flat_remove_peer ../hw/misc/ivshmem-flat.c:224
    #1 0x56237adebb9b in ivshmem_flat_process_msg ../hw/misc/ivshmem-flat.c:284
    #2 0x56237adebb9b in ivshmem_flat_read_msg ../hw/misc/ivshmem-flat.c:313
""",
}


@pytest.mark.parametrize("bug_id", sorted(UBSAN_REPORTS))
def test_ubsan_report_first_matches_its_signature(bug_id):
    """The sanitizer build reports these bugs through UBSan first: the bug's own UBSan
    kind with its function on top is the symptom; the other bug's report, or the same
    report with the device deep in the stack, is not."""
    sig = known_bugs.get(bug_id).crash
    assert sig is not None
    lines = UBSAN_REPORTS[bug_id].splitlines()
    assert crash_matches(sig, 1, ["qemu: an earlier line", *lines])
    other = next(v for k, v in UBSAN_REPORTS.items() if k != bug_id)
    assert not crash_matches(sig, 1, other.splitlines())
    deep = [re.sub(r"in ivshmem_flat_\w+", "in some_function", ln) for ln in lines]
    assert not crash_matches(sig, 1, deep)


def test_signal_signature_without_a_sanitizer():
    """A build without ASan: the signal and nothing printed (a plain SIGSEGV cannot say
    where it came from; the ASan build checks the function too)."""
    sig = CrashSignature("SEGV on unknown address", ("ivshmem_flat_remove_peer",), "SIGSEGV")
    assert crash_matches(sig, SEGV, [f"{traces.NEW_PEER} New peer ID: 3"])
    assert not crash_matches(sig, -signal.SIGABRT, [])
    assert not crash_matches(sig, 1, [])
    assert not crash_matches(sig, SEGV, ["free(): invalid pointer"])
    assert not crash_matches(CrashSignature("SEGV", ("f",)), SEGV, [])  # ASan-only


UNSEEN = """
import os, signal


def test_crash_after_the_last_check(vm):
    assert vm.is_running()
    os.kill(vm.pid, signal.SIGSEGV)  # then nothing of the harness looks at QEMU again:
    os.waitid(os.P_PID, vm.pid, os.WEXITED | os.WNOWAIT)  # dead (unreaped) by teardown


def test_crash_the_test_waited_for(vm):
    os.kill(vm.pid, signal.SIGSEGV)
    assert vm.wait_exit() == -signal.SIGSEGV
"""


def test_a_crash_after_the_last_check_is_an_error(plugin_pytester):
    """A QEMU that crashed after the test's last look at it (dead before the fixture's
    teardown, which then had nothing left to stop) must not let the test pass: teardown
    reports it as an error. One the test itself waited for and judged is the test's."""
    binary = reference_tool("qemu-system-arm")
    if binary is None:
        pytest.skip("no reference build (ci/build-qemu)")
    res = _run(plugin_pytester, UNSEEN, f"--qemu={binary}")
    got = _outcomes(res)
    assert sorted(got["test_crash_after_the_last_check"]) == ["ERROR", "PASSED"], \
        res.stdout.str()[-3000:]
    assert got["test_crash_the_test_waited_for"] == ["PASSED"], res.stdout.str()[-3000:]
    assert "SIGSEGV" in res.stdout.str()
