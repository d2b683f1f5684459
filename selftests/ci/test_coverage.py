"""ci/coverage: line, branch and function coverage of the device through gcovr, its HTML,
and every line or branch never run either a known gap with its reason or a failure
(issue 21).

Why: QEMU developers look at gcovr's HTML (``make coverage-html``) and need branch
coverage too; and a gap that appears (a device change, a test removed) must fail rather
than wait for a reader of the list. The fast tests compile a small C file in the device's
place with gcc --coverage (a real gcov build dir laid out like QEMU's:
``<tree>/build-coverage/<lib>.p/hw_misc_ivshmem-flat.c.gcno``), run it, and read the real
counters through the real command with real gcovr, judged against known gaps of their
own; the slow one runs ci/coverage --html with the whole catalogue on the reference
coverage build, judged against ivflat.ci.coverage_gaps.GAPS.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ivflat.ci import coverage, coverage_gaps
from ivflat.ci.proc import tree_lock
from ivflat.device.board import DEVICE_SOURCE
from ivflat.host.cli import Exit
from ivflat.host.paths import REPO, reference_dir
from ivflat.host.timeouts import scaled

from .tools import TOOL_TIMEOUT, run_tool

COVERAGE = REPO / "ci" / "coverage"
PROGRAM = """\
#include <stdlib.h>

static int never(void)
{
    return 7;
}

int main(int argc, char **argv)
{
    int n = atoi(argv[1]);

    if (n > 0) {
        n = n * 2;
    } else {
        n = never();
    }
    return 0;
}
"""


def line_of(text: str) -> int:
    return PROGRAM.splitlines().index(text) + 1


@pytest.fixture
def gcov_build(tmp_path: Path) -> Path:
    """A gcov build dir of a tree whose device source is PROGRAM, run once with n=1: the
    `else` arm and never() are never run, `if (n > 0)` is taken one way only."""
    if shutil.which("gcc") is None or shutil.which(coverage.GCOVR) is None:
        pytest.skip("needs gcc and gcovr (ci/install-deps)")
    src = tmp_path / "tree" / DEVICE_SOURCE
    src.parent.mkdir(parents=True)
    src.write_text(PROGRAM)
    bdir = tmp_path / "tree" / "build-coverage"
    (bdir / "libcommon.a.p").mkdir(parents=True)
    obj = "libcommon.a.p/hw_misc_ivshmem-flat.c.o"
    for cmd in (["gcc", "--coverage", "-O0", "-c", f"../{DEVICE_SOURCE}", "-o", obj],
                ["gcc", "--coverage", obj, "-o", "qemu-system-arm"], ["./qemu-system-arm", "1"]):
        subprocess.run(cmd, cwd=bdir, check=True)
    return bdir


def test_lines_branches_and_html_from_real_counters(gcov_build: Path, tmp_path: Path) -> None:
    """From real gcov counters, ci/coverage reports the never-called function, the lines never
    run and the branch never taken by line number, with the same figures in its text, gcovr's
    HTML (the untaken branch highlighted), the .gcov file and the JSON."""
    out = tmp_path / "out"
    res = subprocess.run([sys.executable, str(COVERAGE), "--build", str(gcov_build),
                          "--no-run", "--html", "--out", str(out)],
                         capture_output=True, text=True, timeout=scaled(300))
    assert res.returncode == 0, res.stdout + res.stderr
    never_line, if_line = line_of("        n = never();"), line_of("    if (n > 0) {")
    cov = coverage.figures(coverage.gcovr(gcov_build, tmp_path / "again", html=False))
    assert cov.never_functions == ["never"]
    assert line_of("    return 7;") in cov.never_lines and never_line in cov.never_lines
    assert line_of("        n = n * 2;") not in cov.never_lines
    assert cov.never_branches == {if_line: (1, 2)}
    assert cov.branches == (1, 2) and cov.functions == (1, 2)
    assert cov.lines[1] - cov.lines[0] == len(cov.never_lines)
    text = res.stdout
    assert f"{DEVICE_SOURCE}: lines {coverage.percent(cov.lines)}, branches 1/2 (50.0%), " \
           "functions 1/2 (50.0%)" in text
    assert f"{never_line:5d}: n = never();" in text
    assert f"{if_line:5d}: 1 of 2 never taken: if (n > 0) {{" in text
    page = next((out / "html").glob("index.ivshmem-flat.c.*.html")).read_text()
    assert "never" in page and "Branch 1 not taken" in page  # the source is highlighted
    assert "ivshmem-flat.c" in (out / "html" / "index.html").read_text()
    gcov = (out / "ivshmem-flat.c.gcov").read_text().splitlines()
    assert re.fullmatch(r"\s+0:\s+\d+:        n = never\(\);", gcov[never_line - 1])
    assert json.loads((out / "coverage.json").read_text())["files"]


def test_gcovr_says_it_is_still_running(gcov_build: Path, tmp_path: Path) -> None:
    """While gcovr runs (minutes on a whole QEMU build dir), a line says so every interval
    (here shortened below gcovr's start-up time), with where its output goes."""
    out = tmp_path / "out"
    res = subprocess.run([sys.executable, str(COVERAGE), "--build", str(gcov_build),
                          "--no-run", "--out", str(out)], capture_output=True, text=True,
                         timeout=scaled(300),
                         env={**os.environ, "IVSHMEM_PROGRESS_INTERVAL": "0.01"})
    assert res.returncode == 0, res.stdout + res.stderr
    assert re.search(rf"^ci/coverage: gcovr: still running \(\d+s so far\); log: "
                     rf"{re.escape(str(out / 'gcovr.log'))}$", res.stderr, re.M), res.stderr


def test_nothing_to_report_is_said(gcov_build: Path, tmp_path: Path) -> None:
    """No counters (nothing ran): exit 2 with the reason, no traceback."""
    coverage.zero_counters(gcov_build)
    res = subprocess.run([sys.executable, str(COVERAGE), "--build", str(gcov_build),
                          "--no-run", "--out", str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=scaled(300))
    assert res.returncode == 2 and "no counters were written" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr


def test_a_run_waits_for_the_trees_lock(gcov_build: Path, tmp_path: Path) -> None:
    """ci/coverage holds the tree's lock from zeroing the counters to gcovr's report (as
    builds and ci/mutants do): while another run holds it, it waits (here gives up, the
    timeouts scaled down) and has neither zeroed the counters nor reported."""
    out = tmp_path / "out"
    with tree_lock(gcov_build.parent):
        res = subprocess.run([sys.executable, str(COVERAGE), "--build", str(gcov_build),
                              "--out", str(out), "--", "-k", "no_such_test"],
                             capture_output=True, text=True, timeout=scaled(300),
                             env={**os.environ, "IVSHMEM_TIMEOUT_SCALE": "0.0003"})
    assert res.returncode == 2 and "still in use by another run" in res.stderr, res.stderr
    assert list(gcov_build.glob("**/*.gcda")) and not (out / "coverage.json").exists()


def test_tests_named_are_the_tests_run(gcov_build: Path, tmp_path: Path) -> None:
    """PYTEST-ARGS that name tests run those, not the whole catalogue besides them (the
    suite's one rule, ivflat.ci.suite.catalogue_unless_named): pytest's command line, the
    log's first line, names the file and not qtests/."""
    out = tmp_path / "out"
    subprocess.run([sys.executable, str(COVERAGE), "--build", str(gcov_build), "--out",
                    str(out), "--", "qtests/test_registers.py", "--collect-only"],
                   capture_output=True, text=True, timeout=scaled(300))
    cmd = (out / "pytest.log").read_text().splitlines()[0].split()
    assert "qtests/test_registers.py" in cmd and "qtests/" not in cmd, cmd


@pytest.mark.slow
@pytest.mark.timeout(int(scaled(TOOL_TIMEOUT)))
def test_coverage_html_on_the_reference_coverage_build(tmp_path: Path) -> None:
    """ci/coverage --html on `<cache>/reference-coverage` with the whole catalogue (under
    a minute here): the suite passes, the device's lines and branches are counted, gcovr's
    pages written, and every line never run and branch never taken is in GAPS, none of
    which is stale."""
    if not (reference_dir("coverage") / "BUILDINFO.json").exists():
        pytest.skip("no coverage build (ci/build-qemu --coverage)")
    if shutil.which(coverage.GCOVR) is None:
        pytest.skip("no gcovr (ci/install-deps)")
    out = tmp_path / "out"
    res = run_tool([sys.executable, str(COVERAGE), "--html", "--out", str(out)])
    assert res.returncode == Exit.OK, res.stdout[-3000:] + res.stderr[-3000:]
    m = re.search(r"lines (\d+)/(\d+) .*, branches (\d+)/(\d+) ", res.stdout)
    assert m, res.stdout
    run, lines, taken, branches = map(int, m.groups())
    assert 0 < run < lines and 0 < taken < branches
    assert "every line never run and branch never taken is a known gap" in res.stdout
    assert "warning: stale" not in res.stdout, res.stdout
    assert (out / "html" / "index.html").exists()


def run_with_gaps(gaps: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The real command (ivflat.ci.coverage.main in a process of its own) with *gaps*, a
    Python expression of Gap and Site, as its known gaps instead of the device's."""
    code = ("import sys\nfrom ivflat.ci import coverage\n"
            "from ivflat.ci.coverage_gaps import Gap, Site\n"
            f"sys.exit(coverage.main(sys.argv[1:], gaps={gaps}))")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                          text=True, timeout=scaled(300), cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO / "fixtures")})


def test_an_unlisted_gap_fails_and_a_listed_one_passes(gcov_build: Path,
                                                       tmp_path: Path) -> None:
    """Judged (--check), a line never run and a branch never taken that the known gaps do
    not list exit 5 and are printed with the Site that would list each, while the listed
    ones are not printed; with those Sites added it exits 0, and a listed line that runs
    is a warning, not a failure. Not judged (--no-run alone: a run of one's own), the
    same counters exit 0."""
    args = ["--build", str(gcov_build), "--no-run", "--out", str(tmp_path / "out")]
    known = ("Site('never', 'static int never(void)', never_run=True), "
             "Site('never', 'return 7;', never_run=True)")
    res = run_with_gaps(f"(Gap('what', 'why', ({known},)),)", *args, "--check")
    assert res.returncode == Exit.UNEXPLAINED, res.stdout + res.stderr
    unexplained = res.stdout.partition("never run and not a known gap")[2]
    assert unexplained, res.stdout
    never_line, if_line = line_of("        n = never();"), line_of("    if (n > 0) {")
    suggested = ["Site('main', 'n = never();', never_run=True)",
                 "Site('main', 'if (n > 0) {', branches=1)"]
    assert f"{never_line:5d}: line never run: n = never();\n         {suggested[0]}\n" \
        in unexplained, res.stdout
    assert f"{if_line:5d}: 1 of 2 branches never taken: if (n > 0) {{\n" \
        f"         {suggested[1]}\n" in unexplained, res.stdout
    for listed in ("return 7;", "static int never"):
        assert listed not in unexplained.partition("annotated source:")[0], res.stdout

    stale = "Site('main', 'n = n * 2;', never_run=True)"
    res = run_with_gaps(f"(Gap('what', 'why', ({known}, {', '.join(suggested)}, {stale})),)",
                        *args, "--check")
    assert res.returncode == Exit.OK, res.stdout + res.stderr
    assert "every line never run and branch never taken is a known gap" in res.stdout
    assert f"warning: stale known gap (line {line_of('        n = n * 2;')} runs now): " \
        f"{stale}" in res.stdout, res.stdout

    res = run_with_gaps(f"(Gap('what', 'why', ({known},)),)", *args)
    assert res.returncode == Exit.OK, res.stdout + res.stderr
    assert "2 line(s) with code never run are not known gaps (not judged" \
        in res.stdout, res.stdout


def test_the_docs_table_is_the_known_gaps() -> None:
    """docs/tools.md's table of what no test runs is GAPS rendered (so they cannot
    drift): on failure, paste the table below into the page."""
    table = coverage_gaps.markdown(coverage_gaps.GAPS)
    assert table in (REPO / "docs" / "tools.md").read_text(), "\n" + table


def test_every_known_gap_is_a_line_of_the_reference_tree() -> None:
    """Each Site of GAPS names a line of the reference coverage build's device source (a
    typo or a moved line is found without a coverage run)."""
    info = reference_dir("coverage") / "BUILDINFO.json"
    if not info.exists():
        pytest.skip("no coverage build (ci/build-qemu --coverage)")
    tree = Path(json.loads(info.read_text())["tree"])
    keys = set(coverage_gaps.keys((tree / DEVICE_SOURCE).read_text().splitlines()))
    sites = [s for gap in coverage_gaps.GAPS for s in gap.sites]
    assert sites and [s.literal() for s in sites if s.key not in keys] == []
