"""The stand-alone bug reports (ci/bug-reports, ci/patches/reports/) and their reproducers.

Why: a report is only worth sending if it says what the registry says (no drift: the
committed files are what the generator makes of the registry now) and if its reproducer,
run as a maintainer would run it, shows the bug on a wired tree. Each reproducer judges
itself (``BUG:`` exit 1, ``OK:`` exit 0), so it is run on the reference build, where the
bug must show, and, marked slow, on ``reference-fixes``, where it must not: a check that
cannot fail would say BUG on both.

A reproducer mostly waits (QEMU runs for a fixed time, a hang is judged at its end), so the
reproducers this process will run are started together, a few at a time, when the first of
their tests asks (one xdist group: they all run on one worker); each test then judges its
own.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from ivflat.ci import bug_report_files, bug_reproducers
from ivflat.device import known_bugs
from ivflat.host.paths import reference_command
from ivflat.host.timeouts import ASAN_SCALE, scaled
from ivflat.qemu.under_test import reference_binary

SECONDS = scaled(3.0)  # how long QEMU runs in a reproducer (a hang is judged at its end)
AT_ONCE = 6  # reproducers running together: mostly idle, but each starts QEMU and a server
GROUP = pytest.mark.xdist_group("bug-reproducers")
Runs = dict[tuple[str, bool], "Future[tuple[int, str]]"]  # (bug id, fixed) -> its run


def _path(bug: known_bugs.KnownBug, fixed: bool) -> Path:
    """The reference build the bug's reproducer needs (an ASan one for an ASan-only bug)."""
    return reference_binary(_flavour(bug), fixes=fixed)


def _flavour(bug: known_bugs.KnownBug) -> str:
    return "sanitize" if bug.needs == known_bugs.ASAN else "default"


def _build_for(bug: known_bugs.KnownBug, fixed: bool) -> Path:
    binary = _path(bug, fixed)
    if not binary.exists():
        pytest.skip(f"no {binary.parent.name} build "
                    f"({reference_command(_flavour(bug), fixes=fixed)})")
    return binary


def _seconds(bug: known_bugs.KnownBug) -> float:
    """How long QEMU runs: an ASan build starts and runs ~3x slower."""
    return SECONDS * (ASAN_SCALE if bug.needs == known_bugs.ASAN else 1.0)


def test_committed_reports_are_what_the_registry_generates() -> None:
    """The reports in ci/patches/reports/ are what ci/bug-reports makes of the registry now: a
    report that drifted from the registry would tell a maintainer something the suite no
    longer says."""
    stale = bug_report_files.drift()
    assert stale == [], f"stale reports {stale}: run ci/bug-reports and commit the result"


def test_every_registered_bug_has_one_report() -> None:
    """Each registered bug has exactly one report and one reproducer, and nothing else has
    either: a new bug without them, or a stale one left behind, fails here."""
    assert set(bug_report_files.generate()) == {f"{b.id}.md" for b in known_bugs.BUGS}
    assert set(bug_reproducers.REPROS) == set(known_bugs.BY_ID)


def test_a_registry_change_makes_the_reports_stale(monkeypatch: pytest.MonkeyPatch) -> None:
    """The drift check sees a changed registry title (the generator reads the registry)."""
    bug = known_bugs.BUGS[0]
    changed = known_bugs.KnownBug(bug.id, bug.title + " (reworded)", bug.tests, bug.needs,
                                  bug.fix, bug.upstream, bug.crash)
    monkeypatch.setattr(known_bugs, "BUGS", (changed, *known_bugs.BUGS[1:]))
    assert bug_report_files.drift() == [f"{bug.id}.md"]


NOT_WIRED = ("fake", "/usr/bin/qemu-system-arm")  # QEMUs that cannot show the device


def _not_wired(which: str, tmp_path: Path) -> Path:
    """A qemu-system-arm that never brings the device up: a stand-in that fails as an
    unwired build does (a script: the reproducer's own logic is what is tested), or the
    distribution's binary (no qtest accelerator, or no wiring)."""
    if which != "fake":
        if not Path(which).exists():
            pytest.skip(f"no {which}")
        return Path(which)
    fake = tmp_path / "qemu-system-arm"
    fake.write_text("#!/bin/sh\necho \"qemu-system-arm: -device ivshmem-flat,...: Property "
                    "'ivshmem-flat.x-bus-address-iomem' not found\" >&2\nexit 1\n")
    fake.chmod(0o755)
    return fake


@pytest.mark.parametrize("which", NOT_WIRED)
def test_a_qemu_that_does_not_start_gets_no_verdict(which: str, tmp_path: Path) -> None:
    """On a QEMU where the device never comes up, no reproducer says OK or BUG: each says
    ERROR (exit 3) quoting QEMU's error, or SKIP (exit 2) for an ASan-only bug. A check
    that took any exit for a refusal, or anything but OK for the bug, would say one of
    them here."""
    qemu = _not_wired(which, tmp_path)
    said = {}
    for bug in known_bugs.BUGS:
        rc, out = bug_report_files.run(bug, qemu, scaled(3.0))
        said[bug.id] = (rc, bug_report_files.verdict(out))
    wrong = {i: s for i, s in said.items()
             if s[0] not in (2, 3) or not s[1].startswith(("ERROR: QEMU did not start: ",
                                                           "SKIP:"))}
    assert wrong == {}, f"verdicts on {qemu} that is not wired: {wrong}"
    if which == "fake":
        assert all("x-bus-address-iomem" in s[1] for s in said.values() if s[0] == 3), said


def test_a_result_of_a_changed_reproducer_is_not_claimed(tmp_path: Path) -> None:
    """A recorded verdict is shown only while the script that said it is unchanged: a
    report must not claim a result for a reproducer that was not re-run."""
    bug = known_bugs.BUGS[0]
    result = bug_report_files.Result(said="BUG: seen", script=bug_report_files.script_digest(bug),
                               when="2026-01-01")
    run = bug_report_files.Run(os="o", kernel="k", arch="a", qemu="q", results={bug.id: result})
    assert "`BUG: seen`" in bug_report_files.render(bug, {"tree": run})
    run["results"][bug.id] = {**result, "script": "0" * 16}
    text = bug_report_files.render(bug, {"tree": run})
    assert "BUG: seen" not in text and "not run with this reproducer" in text


FIXED = {"test_reproducer_shows_the_bug_on_the_reference": False,
         "test_reproducer_sees_no_bug_with_the_fix": True}  # the tests below


@pytest.fixture(scope="module")
def reproducer_runs(request: pytest.FixtureRequest) -> Iterator[Runs]:
    """Every reproducer run that this session's tests of the module ask for (those whose
    build exists: the others skip), AT_ONCE at a time, the longest first; on leaving, the
    ones not started are dropped and the running ones waited for (bug_report_files.run bounds
    each)."""
    wanted = []
    for item in request.session.items:
        fixed = FIXED.get(getattr(item, "originalname", ""))
        callspec = getattr(item, "callspec", None)
        if (isinstance(item, pytest.Function) and item.module is request.module
                and fixed is not None and callspec is not None
                and not (item.get_closest_marker("slow")
                         and not request.config.getoption("--run-slow"))):
            wanted.append((callspec.params["bug"], fixed))
    with ThreadPoolExecutor(AT_ONCE) as pool:
        runs: Runs = {}
        for bug, fixed in sorted(wanted, key=lambda w: -_seconds(w[0])):  # longest first
            build = _path(bug, fixed)
            if build.exists():
                runs[bug.id, fixed] = pool.submit(bug_report_files.run, bug, build, _seconds(bug))
        try:
            yield runs
        finally:
            pool.shutdown(cancel_futures=True)


@GROUP
@pytest.mark.parametrize("bug", known_bugs.BUGS, ids=lambda b: b.id)
def test_reproducer_shows_the_bug_on_the_reference(bug: known_bugs.KnownBug,
                                                   reproducer_runs: Runs) -> None:
    """Each reproducer, run as a maintainer would, says ``BUG:`` and exits 1 on the reference
    build (an ASan one for an ASan-only bug), where the bug is present."""
    _build_for(bug, fixed=False)
    rc, out = reproducer_runs[bug.id, False].result()
    assert (rc, bug_report_files.verdict(out)[:4]) == (1, "BUG:"), out


@pytest.mark.slow
@GROUP
@pytest.mark.parametrize("bug", [b for b in known_bugs.BUGS if b.fix], ids=lambda b: b.id)
def test_reproducer_sees_no_bug_with_the_fix(bug: known_bugs.KnownBug,
                                             reproducer_runs: Runs) -> None:
    """Each reproducer of a bug with a fix says ``OK:`` and exits 0 on the build carrying the
    fix series: with the BUG test above, proof that its check can fail both ways."""
    _build_for(bug, fixed=True)
    rc, out = reproducer_runs[bug.id, True].result()
    assert (rc, bug_report_files.verdict(out)[:3]) == (0, "OK:"), out
