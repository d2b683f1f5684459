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

from ivflat.ci import bugreports, bugrepros
from ivflat.device import known_bugs
from ivflat.host.paths import cache_dir
from ivflat.host.timeouts import ASAN_SCALE, scaled

SECONDS = scaled(3.0)  # how long QEMU runs in a reproducer (a hang is judged at its end)
AT_ONCE = 6  # reproducers running together: mostly idle, but each starts QEMU and a server
GROUP = pytest.mark.xdist_group("bug-reproducers")
Runs = dict[tuple[str, bool], "Future[tuple[int, str]]"]  # (bug id, fixed) -> its run


def _path(name: str) -> Path:
    return cache_dir() / name / "qemu-system-arm"


def _binary(name: str) -> Path:
    binary = _path(name)
    if not binary.exists():
        flags = " --sanitize" * ("sanitize" in name) + " --with-fixes" * ("fixes" in name)
        pytest.skip(f"no {name} build (ci/build-qemu{flags})")
    return binary


def _build_name(bug: known_bugs.KnownBug, fixed: bool) -> str:
    """The reference build the bug's reproducer needs (an ASan one for an ASan-only bug)."""
    return "reference" + "-sanitize" * (bug.needs == known_bugs.ASAN) + "-fixes" * fixed


def _build_for(bug: known_bugs.KnownBug, fixed: bool) -> Path:
    return _binary(_build_name(bug, fixed))


def _seconds(bug: known_bugs.KnownBug) -> float:
    """How long QEMU runs: an ASan build starts and runs ~3x slower."""
    return SECONDS * (ASAN_SCALE if bug.needs == known_bugs.ASAN else 1.0)


def test_committed_reports_are_what_the_registry_generates() -> None:
    """The reports in ci/patches/reports/ are what ci/bug-reports makes of the registry now: a
    report that drifted from the registry would tell a maintainer something the suite no
    longer says."""
    stale = bugreports.drift()
    assert stale == [], f"stale reports {stale}: run ci/bug-reports and commit the result"


def test_every_registered_bug_has_one_report() -> None:
    """Each registered bug has exactly one report and one reproducer, and nothing else has
    either: a new bug without them, or a stale one left behind, fails here."""
    assert set(bugreports.generate()) == {f"{b.id}.md" for b in known_bugs.BUGS}
    assert set(bugrepros.REPROS) == set(known_bugs.BY_ID)


def test_a_registry_change_makes_the_reports_stale(monkeypatch: pytest.MonkeyPatch) -> None:
    """The drift check sees a changed registry title (the generator reads the registry)."""
    bug = known_bugs.BUGS[0]
    changed = known_bugs.KnownBug(bug.id, bug.title + " (reworded)", bug.tests, bug.needs,
                                  bug.fix, bug.upstream, bug.crash)
    monkeypatch.setattr(known_bugs, "BUGS", (changed, *known_bugs.BUGS[1:]))
    assert bugreports.drift() == [f"{bug.id}.md"]


FIXED = {"test_reproducer_shows_the_bug_on_the_reference": False,
         "test_reproducer_sees_no_bug_with_the_fix": True}  # the tests below


@pytest.fixture(scope="module")
def reproducer_runs(request: pytest.FixtureRequest) -> Iterator[Runs]:
    """Every reproducer run that this session's tests of the module ask for (those whose
    build exists: the others skip), AT_ONCE at a time, the longest first; on leaving, the
    ones not started are dropped and the running ones waited for (bugreports.run bounds
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
            build = _path(_build_name(bug, fixed))
            if build.exists():
                runs[bug.id, fixed] = pool.submit(bugreports.run, bug, build, _seconds(bug))
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
    assert (rc, bugreports.verdict(out)[:4]) == (1, "BUG:"), out


@pytest.mark.slow
@GROUP
@pytest.mark.parametrize("bug", [b for b in known_bugs.BUGS if b.fix], ids=lambda b: b.id)
def test_reproducer_sees_no_bug_with_the_fix(bug: known_bugs.KnownBug,
                                             reproducer_runs: Runs) -> None:
    """Each reproducer of a bug with a fix says ``OK:`` and exits 0 on the build carrying the
    fix series: with the BUG test above, proof that its check can fail both ways."""
    _build_for(bug, fixed=True)
    rc, out = reproducer_runs[bug.id, True].result()
    assert (rc, bugreports.verdict(out)[:3]) == (0, "OK:"), out
