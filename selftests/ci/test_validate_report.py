"""ci/validate-patch's classification, series reading and report, on real pytest and git output.

Why: the verdict is only as good as the reading of JUnit XML and of the series. A fixed
known bug is a strict xfail that passes, which pytest writes as a *failure*
("[XPASS(strict)] ..."): read naively it is a regression and the tool would reject the very
series it should welcome. So a tiny real pytest module is run twice ("base": the bug shows;
"patched": fixed, plus a regression, a new skip and a new pass) and its JUnit compared; and
real ``git format-patch --cover-letter`` output (one mbox, cover letter first, patches out
of order) is split and applied to a real repository. Fast: no QEMU is built.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ivflat.ci import suite, validate_report
from ivflat.ci.gitrepo import FIXED_ENV
from ivflat.ci.series import Patch, Series, apply, read_series
from ivflat.ci.suite import Build, junit_id, parse_junit
from ivflat.ci.validate import bug_id, bug_table, compare, conclude, rerun_options
from ivflat.ci.validate_report import FIXED
from ivflat.device import known_bugs
from ivflat.host.paths import REPO
from ivflat.host.timeouts import scaled
from selftests.inner import INNER_OPTS

from .tools import TOOL_TIMEOUT, VALIDATE, History, git, run_tool

COVER_MAIL = ("From 0 Mon Sep 17 00:00:00 2001\nFrom: a <a@b>\n"
              "Subject: [PATCH 0/1] one fix\n\nThe cover letter: no diff, not applied.\n\n")

MODULE = '''
import os
import pytest

AFTER = os.environ.get("IVSHMEM_SELFTEST_SIDE") == "after"

@pytest.mark.xfail(strict=True, reason="known bug version-unchecked: greeting not checked")
def test_known_bug():
    assert AFTER, "the bug shows"

def test_regresses():
    assert not AFTER, "broken by the series"

def test_newly_skipped():
    if AFTER:
        pytest.skip("device gone")

def test_newly_passing():
    assert AFTER, "was broken"

def test_steady():
    pass

@pytest.mark.xfail(strict=True, reason="known bug eof-mid-greeting: hangs")
def test_still_xfail():
    assert False
'''


def side(tmp_path: Path, name: str, module: str = MODULE) -> validate_report.Side:
    mod = tmp_path / "test_fake.py"
    mod.write_text(module)
    xml = tmp_path / f"{name}.xml"
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          *INNER_OPTS, f"--junitxml={xml}", mod.name], cwd=tmp_path,
                         capture_output=True, text=True,
                         env=dict(os.environ, IVSHMEM_SELFTEST_SIDE=name), timeout=scaled(120))
    outcomes, messages = parse_junit(xml)
    run = suite.TestRun(res.returncode, outcomes, messages, 1.0, res.stdout)
    return validate_report.Side(name, "0" * 40, Build(0, None, 2.0, tmp_path / f"build-{name}.log"),
                       run)


def context(tmp_path: Path) -> validate_report.Context:
    s = Series([Patch(tmp_path / "p", tmp_path / "p", "[PATCH 1/1] fix it", True)],
               cover="[PATCH 0/1] fixes")
    return validate_report.Context(tmp_path, "a" * 40, "aaaaaaa base", s, 1, "default", tmp_path,
                          ["-k", "x"], 60.0)


def test_strict_xpass_is_fixed_with_its_bug_id_not_a_regression(tmp_path: Path) -> None:
    """A strict XPASS (written by pytest as a failure) is FIXED with its bug's id, not newly
    failing; the regression, new skip and new pass fall in their own groups, and the
    markdown report heads with the verdict and shows each group, the JUnit and the series."""
    before, after = side(tmp_path, "before"), side(tmp_path, "after")
    assert after.tests.outcomes["test_fake::test_known_bug"] == "failed"  # as pytest says
    groups = compare(before.tests, after.tests)
    assert [(t, m.split(":")[0]) for t, _, m in groups[FIXED]] == \
        [("test_fake::test_known_bug", "version-unchecked")]
    assert [t for t, _, _ in groups["Newly failing"]] == ["test_fake::test_regresses"]
    assert [t for t, _, _ in groups["Newly skipped"]] == ["test_fake::test_newly_skipped"]
    assert [t for t, _, _ in groups["Newly passing"]] == ["test_fake::test_newly_passing"]
    assert groups["Other changes"] == []
    assert conclude(context(tmp_path), before, after, "md") == 1
    md = (tmp_path / "report.md").read_text()
    assert md.startswith("### ivshmem-flat suite: REGRESSED (1 known bug(s) FIXED, "
                         "2 test(s) regressed)")
    fixed = md.split("**FIXED (1)**")[1].split("**")[0]
    assert "`test_fake::test_known_bug` [xfailed -> XPASS(strict)]: version-unchecked" in fixed
    assert "test_fake::test_regresses" in md.split("**REGRESSED")[1].split("**Newly")[0]
    assert "device gone" in md.split("**Newly skipped (1)**")[1]
    assert str(tmp_path / "tests-after" / "junit.xml") in md
    assert "[PATCH 0/1] fixes" in md and "1. [PATCH 1/1] fix it" in md


def test_a_series_that_only_fixes_exits_0(tmp_path: Path) -> None:
    """A series that fixes a known bug and breaks nothing exits 0, its verdict line OK with
    the fixed bug named."""
    only_fix = MODULE.split("def test_regresses")[0]
    before, after = side(tmp_path, "before", only_fix), side(tmp_path, "after", only_fix)
    assert conclude(context(tmp_path), before, after, "text") == 0
    groups = compare(before.tests, after.tests)
    line = validate_report.verdict_line(groups, 0, before)
    assert line.startswith("OK: 0 test(s) regressed; 1 test(s) FIXED (known bugs: "
                           "version-unchecked)")


def test_registry_tests_map_to_their_bug() -> None:
    """FIXED names the registry's id even when the reason does not (a truncated message)."""
    for bug in known_bugs.BUGS:
        for t in bug.tests:
            assert bug_id(junit_id(t), "") == bug.id
    assert junit_id("qtests/test_x.py::TestC::test_a[1]") == "qtests.test_x.TestC::test_a[1]"
    assert bug_id("qtests.test_x::test_y", "[XPASS(strict)] no id here") == "unregistered"


def _repo(path: Path) -> Path:
    env = dict(os.environ, **FIXED_ENV)
    path.mkdir()
    (path / "f.txt").write_text("one\n")
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "base"]):
        subprocess.run(["git", "-C", str(path), *cmd], check=True, env=env)
    for n in (2, 3):
        (path / "f.txt").write_text((path / "f.txt").read_text() + f"line {n}\n")
        subprocess.run(["git", "-C", str(path), "commit", "-q", "-a", "-m", f"add line {n}"],
                       check=True, env=env)
    return path


def test_mbox_with_cover_letter_out_of_order_applies_in_order(tmp_path: Path) -> None:
    """One mbox, cover letter first and patch 2/2 before 1/2 (a mail client's order), is read
    as the cover and the patches by number, and applies in that order."""
    repo = _repo(tmp_path / "repo")
    mails = git(repo, "format-patch", "--cover-letter", "-2", "--stdout")
    parts = mails.split("\nFrom ")
    assert len(parts) == 3
    # cover letter, then patch 2/2 before 1/2: a mail client's order
    mbox = tmp_path / "series.mbox"
    mbox.write_text("\nFrom ".join([parts[0], parts[2], parts[1]]) + "\n")
    series = read_series([mbox], tmp_path / "split")
    assert series.cover is not None and "[PATCH 0/2]" in series.cover
    assert [p.subject for p in series.patches] == ["[PATCH 1/2] add line 2",
                                                   "[PATCH 2/2] add line 3"]
    git(repo, "reset", "-q", "--hard", "HEAD~2")
    head = apply(repo, series)
    assert git(repo, "log", "--format=%s", "-2", head).splitlines() == ["add line 3",
                                                                         "add line 2"]
    assert (repo / "f.txt").read_text() == "one\nline 2\nline 3\n"


def test_fix_series_files_read_as_numbered_patches_and_a_cover(tmp_path: Path) -> None:
    """The shipped series, as `ci/validate-patch ci/patches/fixes/*.patch` reads it: a
    v2 cover letter 0/N and patches 1/N .. N/N, one per file, in order (numbers padded to
    N's width, as git format-patch writes them: 01/10)."""
    files = sorted((REPO / "ci/patches/fixes").glob("*.patch"))
    n = len(files) - 1
    w = len(str(n))
    series = read_series(files, tmp_path)
    assert series.cover is not None and f"[PATCH v2 {0:0{w}}/{n}]" in series.cover
    assert [p.subject.split("]")[0] for p in series.patches] == \
        [f"[PATCH v2 {i:0{w}}/{n}" for i in range(1, n + 1)]
    assert series.skipped == []


@pytest.mark.slow
@pytest.mark.timeout(int(scaled(2 * TOOL_TIMEOUT)))
@pytest.mark.history_cost(19)
def test_validate_patch_reports_a_fixed_known_bug(history: History, tmp_path: Path) -> None:
    """The real tool on the synthetic history's base (Debian's tree): an mbox holding a cover
    letter and the shipped fix for disconnect-own-id (self-contained: it applies alone).
    Its tests (the hostile server's disconnect, and the ivshmem-pci comparison) turn from
    xfail (a crash matched by the bug's signature) to XPASS(strict); the tool says FIXED
    with the id, nothing regressed, exit 0, and the Markdown report says so too. One round
    of re-runs (--confirm 1): the rounds are test_bisect.py's and test_validate_verdicts.py's
    matter, the reading of XPASS(strict) as FIXED is this one's. (Not
    own-vector-opaque, the first patch: its tests would prove nothing more here; nor the
    other ivshmem-pci comparisons, whose verdicts this fix does not change.)"""
    bug = known_bugs.get("disconnect-own-id")
    assert bug.fix is not None
    mbox = tmp_path / "series.mbx"
    mbox.write_text(COVER_MAIL + (REPO / "ci/patches/fixes" / bug.fix).read_text())
    res = run_tool([sys.executable, str(VALIDATE), str(mbox), "--source", str(history["repo"]),
                    "--base", history["base"], "--report", "md", "--confirm", "1", "--",
                    "-k", "test_disconnect_for_own_id_is_survived or test_ivposition "
                    "or test_same_as_pci and disconnect"])
    assert res.returncode == 0, res.stdout + res.stderr
    assert "cover letter: [PATCH 0/1] one fix" in res.stderr
    fixed = res.stdout.split(f"**FIXED ({len(bug.tests)})**")[1].split("**")[0]
    for test in bug.tests:
        assert f"`{junit_id(test)}` [xfailed -> XPASS(strict)] (reproduced 1/1): {bug.id}: " \
            in fixed, fixed
    assert "**REGRESSED (0 newly failing)**\n\n- none" in res.stdout
    assert f"| {bug.id} | FIXED |" in res.stdout
    assert res.stdout.strip().splitlines()[-1].startswith(
        f"OK: 0 test(s) regressed; {len(bug.tests)} test(s) FIXED (known bugs: {bug.id})")
    run_dir = Path(res.stderr.split("logs in ")[1].split()[0])
    assert (run_dir / "report.md").read_text() == res.stdout


def test_bug_verdicts_fixed_still_shown_and_not_judged(tmp_path: Path) -> None:
    """The known-bug table: a bug whose tests turned is FIXED, one still xfailing still
    shows, one whose tests pass (or skip) alike on both sides is not judged on this build
    (the ASan-only bug on a plain build), one not selected is not run."""
    ids = [junit_id(t) for t in known_bugs.get("doorbell-vector-unchecked").tests]
    fixed_ts = [junit_id(t) for t in known_bugs.get("version-unchecked").tests]
    still_t = junit_id(known_bugs.get("eof-mid-greeting").tests[0])
    before = suite.TestRun(0, {ids[0]: "passed", ids[1]: "skipped", still_t: "xfailed",
                               **dict.fromkeys(fixed_ts, "xfailed")}, {}, 1.0, "")
    after = suite.TestRun(1, {ids[0]: "passed", ids[1]: "skipped", still_t: "xfailed",
                              **dict.fromkeys(fixed_ts, "failed")},
                          dict.fromkeys(fixed_ts,
                                        "[XPASS(strict)] known bug version-unchecked: x"),
                          1.0, "")
    table = dict(bug_table(before, after, compare(before, after)))
    assert table["version-unchecked"] == "FIXED"
    assert table["eof-mid-greeting"] == "still shows (xfail)"
    assert table["doorbell-vector-unchecked"] == "not judged on this build (needs ASan)"
    assert table["own-vector-opaque"] == "not run (deselected)"


def test_a_fix_only_the_qtest_path_sees_is_partly_fixed(tmp_path: Path) -> None:
    """A fix judged on qtest alone is not FIXED: unaligned-doorbell-write's
    test_unaligned_word_write_does_not_ring[qtest] turns XPASS(strict) but its [cpu] twin
    still xfails (v1 of fix 0006: .impl.unaligned stopped the qtest split, TCG's split
    went on), so the table says partly fixed and the verdict names no fixed bug."""
    qtest_t, cpu_t = (junit_id(t) for t in known_bugs.get("unaligned-doorbell-write").tests
                      if "test_unaligned_word_write_does_not_ring" in t)
    before = suite.TestRun(0, {qtest_t: "xfailed", cpu_t: "xfailed"}, {}, 1.0, "")
    after = suite.TestRun(1, {qtest_t: "failed", cpu_t: "xfailed"},
                          {qtest_t: "[XPASS(strict)] known bug unaligned-doorbell-write: x"},
                          1.0, "")
    groups = compare(before, after)
    table = bug_table(before, after, groups)
    assert dict(table)["unaligned-doorbell-write"] == "partly fixed (1 of 2 tests)"
    assert validate_report.fixed_ids(groups, table) == []
    base = validate_report.Side("before", "0" * 40, Build(0, None, 2.0, tmp_path / "b.log"), before)
    assert "known bugs:" not in validate_report.verdict_line(groups, 0, base, table)
    assert "known bugs: unaligned-doorbell-write" in validate_report.verdict_line(groups, 0, base)


def test_rerun_options_name_no_tests_and_never_stop_early() -> None:
    """The re-runs of the changed tests take the user's options but not the test paths (the
    changed tests are named instead) nor -x/--maxfail (a first failure would leave the
    other changed tests unrun: "cannot judge")."""
    args = ["-x", "-k", "ivposition", "qtests/test_registers.py", "--maxfail", "2",
            "--maxfail=3", "--exitfirst", "-n", "2", "--ivshmem-server=qemu"]
    assert rerun_options(args) == ["-k", "ivposition", "-n", "2", "--ivshmem-server=qemu"]
