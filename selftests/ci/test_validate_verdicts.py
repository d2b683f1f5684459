"""ci/validate-patch's verdicts, end to end, on a QEMU tree that builds in a second.

Why: a failure of the tools on the patched side (a full disk when the build is published)
was reported as "the series breaks the build", exit 1; an outcome seen to change once -- a
flaky test -- was reported as a regression, the re-run left to the user; and a bot asking
for ``--report json`` got no JSON for a series that breaks the build, does not apply or
cannot be judged -- nothing to tell those apart from a crash.
Here the real tools run on tools.prebuilt_qemu_repo (a tree whose build compiles one real C
file and copies a prebuilt QEMU) with a private cache, and the suite run on both sides is
selftests/ci/flip_cases.py, whose outcomes follow a run counter: deterministic, no timing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ivflat.ci import facts
from ivflat.ci.qemubuild import tools_marker
from ivflat.ci.suite import junit_id
from ivflat.device.board import DEVICE_SOURCE
from selftests.inner import INNER_OPTS

from .tools import (
    BISECT,
    VALIDATE,
    Events,
    fake_qemu_repo,
    git,
    interrupt,
    no_leftovers,
    prebuilt_qemu_repo,
    run_tool,
    started_tool,
)

FLIP_CASES = "selftests/ci/flip_cases.py"
FLIP = [FLIP_CASES, *INNER_OPTS]  # what the tool runs as the suite
# ci/build-qemu publishes qemu-system-arm plus two copies of /bin/true: a tmpfs of 1.5 times
# QEMU's size holds one published build, never two.
FULL_DISK = 1.5
WHO = "A U Thor <author@example.org>"
SUBJECT = "[PATCH] ivshmem-flat: the change"  # of patch()'s series


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The prebuilt tree (a stock qemu-system-arm copied as its build) and a private cache
    for the tools (its tools venv marked present: the stand-in configure ignores it)."""
    qemu = shutil.which("qemu-system-arm")
    if qemu is None:
        pytest.skip("no qemu-system-arm on PATH to stand in as a build (ci/install-deps)")
    cache = tmp_path / "cache"
    monkeypatch.setenv("IVSHMEM_SUITE_CACHE", str(cache))
    monkeypatch.setenv("IVSHMEM_TEST_FLIP_DIR", str(tmp_path / "flips"))
    (tmp_path / "flips").mkdir()
    tools_marker(cache).parent.mkdir(parents=True)
    tools_marker(cache).touch()
    return prebuilt_qemu_repo(tmp_path / "qemu", Path(qemu).resolve())


def patch(repo: Path, tmp_path: Path, text: str) -> Path:
    """The device source replaced by *text*, as a format-patch file; the repo stays at its
    base."""
    (repo / DEVICE_SOURCE).write_text(text)
    git(repo, "commit", "-q", "-a", "-m", "ivshmem-flat: the change")
    out = Path(git(repo, "format-patch", "-1", "-o", str(tmp_path / "series"), "HEAD"))
    git(repo, "reset", "-q", "--hard", "HEAD~1")
    return out


def run_dir(res: subprocess.CompletedProcess[str]) -> Path:
    return Path(res.stderr.split("logs in ")[1].split()[0])


def json_only(res: subprocess.CompletedProcess[str], tool: str) -> dict[str, Any]:
    """The JSON document a --report json run of *tool* printed: stdout holds it and nothing
    else (every line for a person is on stderr), under the current schema."""
    doc: dict[str, Any] = json.loads(res.stdout)
    assert (doc["schema"], doc["version"], doc["tool"]) == \
        (facts.SCHEMA, facts.SCHEMA_VERSION, tool), doc
    return doc


@pytest.mark.parametrize("failure", ["compile-error", "disk-full-on-publish"])
def test_patched_tree_not_built_is_a_regression_only_for_its_code(
        tree: Path, tmp_path: Path, failure: str) -> None:
    """A patch that does not compile: verdict BROKEN_BUILD, exit 1, the compiler's error in
    the report (JSON, saved in the run directory too), no Tested-by: nothing was tested.
    The tools failing on the patched side -- its build's publication runs out of space, a
    real ENOSPC from a tmpfs mounted (in a mount namespace of the tool's own, gone with it)
    over the cache's builds/ that holds one build but not two -- is no verdict: exit 3,
    said as an internal error, and a JSON document "cannot-judge" for a bot."""
    base_c = (tree / DEVICE_SOURCE).read_text()
    cmd = [sys.executable, str(VALIDATE)]
    if failure == "compile-error":
        series = patch(tree, tmp_path, base_c + "int broken = ;\n")
    else:
        series = patch(tree, tmp_path, base_c + "/* a comment */\n")
        builds = tmp_path / "cache" / "builds"
        builds.mkdir(parents=True)
        size = int(FULL_DISK * Path(shutil.which("qemu-system-arm") or "").stat().st_size)
        cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-euc",
               'mount -t tmpfs -o "size=$1" ivf-full "$2"; shift 2; exec "$@"', "sh",
               str(size), str(builds), *cmd]
    args = [str(series), "--source", str(tree), "--tested-by", WHO]
    res = run_tool([*cmd, *args, "--report", "json", "--", *FLIP])
    out = res.stdout + res.stderr
    build_log = (run_dir(res) / "build-after.log").read_text()
    doc = json_only(res, "validate-patch")
    assert doc["series"]["subject"] == SUBJECT, doc
    if failure == "compile-error":
        assert res.returncode == 1, out
        assert "int broken = ;" in build_log, build_log  # the compiler's own error
        assert doc["verdict"] == "BROKEN_BUILD", doc
        tail = doc["build_failure"]["log_tail"]
        assert "    2 | int broken = ;" in tail, tail
        assert str(tmp_path) not in "\n".join(tail), tail  # not the work clone's path
        assert doc["after"]["built"] is False and doc["tested_by"] is None, doc
        assert "no Tested-by: line: the series does not build" in res.stderr, out
        assert (run_dir(res) / "report.json").read_text() == res.stdout
        text = run_tool([sys.executable, str(VALIDATE), *args, "--", *FLIP])
        assert text.returncode == 1, text.stdout + text.stderr
        lines = text.stdout.splitlines()
        assert lines[0].startswith("ivshmem-flat suite: BROKEN_BUILD (1 commit(s)"), lines
        assert f"Series: {SUBJECT}" in lines and "  2 | int broken = ;" in text.stdout
        assert lines[-2:] == [f"BROKEN_BUILD: the series breaks the build (1 commit(s) on "
                              f"{git(tree, 'rev-parse', 'HEAD')[:12]});", "    no test ran on it"]
        assert "Tested-by" not in text.stdout and str(tmp_path) not in text.stdout, lines
        assert (run_dir(text) / "report.txt").read_text() == text.stdout
    else:
        assert "No space left on device" in build_log, build_log
        assert "No space left on device" in res.stderr, out  # the reason, said
        assert res.returncode == 3, out
        assert "REGRESSED" not in out and "BROKEN_BUILD" not in out, out
        said = ("internal error: the tools failed to build the patched tree (not the "
                "series' code; no verdict)")
        assert f"ci/validate-patch: cannot judge: {said}" in res.stderr, out
        assert (doc["verdict"], doc["exit"]) == ("cannot-judge", 3), doc
        assert doc["message"].startswith(said), doc
        assert doc["base"]["commit"] == git(tree, "rev-parse", "HEAD"), doc


JUNK = ("From: a@b\nSubject: [PATCH] junk\nMessage-Id: <junk@example.org>\n\n---\n"
        "--- a/no/such/file.c\n+++ b/no/such/file.c\n@@ -1 +1 @@\n-x\n+y\n")


def test_no_verdict_is_a_json_document_too(tree: Path, tmp_path: Path) -> None:
    """With --report json, an exit without a verdict prints a JSON document on stdout, and
    nothing else there (the error is said on stderr, as always): a series that does not
    apply ("not-applied", with its subject and Message-Id), an unknown base and ci/bisect's
    unknown revision or end that cannot be tested ("bad-input", exit 2). Without it stdout
    stays empty. Nothing is built: the series fails before, the fake tree's build is
    declined at once."""
    junk = tmp_path / "junk.patch"
    junk.write_text(JUNK)
    series = [str(junk), "--source", str(tree)]
    fake = fake_qemu_repo(tmp_path / "fake")
    cases = [(VALIDATE, series, "not-applied", "the series does not apply: junk.patch"),
             (VALIDATE, [*series, "--base", "no-such-rev"], "bad-input", "unknown revision"),
             (BISECT, ["no-such-rev", "HEAD", "--source", str(tree)], "bad-input",
              "unknown revision"),
             (BISECT, ["HEAD~1", "HEAD", "--source", str(fake)], "bad-input",
              "cannot be tested")]
    for tool, args, verdict, message in cases:
        res = run_tool([sys.executable, str(tool), *args, "--report", "json"])
        assert res.returncode == 2, (args, res.stdout, res.stderr)
        doc = json_only(res, "bisect" if tool == BISECT else "validate-patch")
        assert (doc["verdict"], doc["exit"]) == (verdict, 2), doc
        assert message in doc["message"] and message in res.stderr, (doc, res.stderr)
        if args is series:
            assert doc["series"] == {"subject": "[PATCH] junk",
                                     "message_id": "junk@example.org"}, doc
        if tool == BISECT:
            assert doc["mode"] == "first-bad", doc
        if "cannot be tested" in message:  # the range is known by then
            assert doc["range"] == {"old": git(fake, "rev-parse", "HEAD~1"),
                                    "new": git(fake, "rev-parse", "HEAD")}, doc
        text = run_tool([sys.executable, str(tool), *args])
        assert text.returncode == 2 and text.stdout == "", (args, text.stdout)
        assert message in text.stderr, text.stderr


def test_changed_outcomes_are_confirmed_before_they_count(tree: Path, tmp_path: Path) -> None:
    """Each test whose outcome changed is re-run 3 times on each side, on the very binaries
    it ran on first: one that fails on every patched run is "reproduced 3/3" and counts;
    one that failed once more in 3 rounds is "flaky 1/3", shown but not counted; the steady
    test is not re-run. All of it is in the run directory, and the base's build kept aside
    for the re-runs is gone after the run, also when a stale one was in the way."""
    series = patch(tree, tmp_path, (tree / DEVICE_SOURCE).read_text() + "/* */\n")
    res = run_tool([sys.executable, str(VALIDATE), str(series), "--source", str(tree),
                    "--report", "md", "--", *FLIP])
    out = res.stdout + res.stderr
    assert res.returncode == 1, out
    regresses, flaky = (junit_id(f"{FLIP_CASES}::test_{t}") for t in ("regresses", "flaky"))
    assert f"- `{regresses}` [passed -> failed] (reproduced 3/3)" in res.stdout, out
    assert f"- `{flaky}` [passed -> failed] (flaky 1/3)" in res.stdout, out
    assert res.stdout.strip().splitlines()[-1].startswith(
        "REGRESSED: 1 test(s) regressed; 1 flaky regression(s) not counted"), out
    flips = {f.name: int(f.read_text()) for f in (tmp_path / "flips").iterdir()}
    assert flips == {"steady": 2, "regresses": 8, "flaky": 8}
    rd = run_dir(res)
    assert sorted(p.name for p in (rd / "confirm").iterdir()) == \
        [f"{side}-{i}" for side in ("after", "before") for i in (1, 2, 3)]
    assert list((tmp_path / "cache" / "builds").glob("*.base")) == []
    # what an older version of the tool left (the link itself renamed aside, then an
    # rmtree() that refused it): the next run replaces it instead of dying on it
    (published,) = (p for p in (tmp_path / "cache" / "builds").iterdir()
                    if p.is_symlink() and p.name.endswith("-default"))
    published.with_name(published.name + ".base").symlink_to("gone.v1")
    again = run_tool([sys.executable, str(VALIDATE), str(series), "--source", str(tree),
                      "--confirm", "1", "--", *FLIP])  # one round keeps the base aside too
    assert again.returncode == 1, again.stdout + again.stderr
    assert list((tmp_path / "cache" / "builds").glob("*.base")) == []


def test_a_held_build_says_it_is_still_running(tree: Path, tmp_path: Path) -> None:
    """While the base's build runs (its configure held on a FIFO nobody writes: a slow
    build without depending on the machine's speed), ci/validate-patch says every interval
    (here shortened) that it is still building, for how long, and where the log is; Ctrl-C
    then stops it and all it started."""
    fifo = tmp_path / "gate"
    os.mkfifo(fifo)
    configure = (tree / "configure").read_text().replace(
        "\n", f"\nread go < {fifo}\n", 1)
    (tree / "configure").write_text(configure)
    git(tree, "commit", "-q", "-a", "-m", "configure: held")
    series = patch(tree, tmp_path, (tree / "hw/misc/ivshmem-flat.c").read_text() + "/* */\n")
    events = Events(tmp_path / "events.sock")
    try:
        with started_tool([sys.executable, str(VALIDATE), str(series), "--source", str(tree),
                           "--", *FLIP], env={"IVSHMEM_PROGRESS_INTERVAL": "0.05"}) as tool:
            said = events.wait(tool, r"^building: still running \(\d+s so far\); log: \S+$")
            line = re.findall(r"^building: still running .*$", said, re.M)[-1]
            log = Path(line.split("; log: ")[1])
            assert log.is_file() and (tmp_path / "cache") in log.parents, line
            rc, _, err = interrupt(tool)
            assert rc == 130, said + err
            no_leftovers(tool, tmp_path / "cache")
    finally:
        events.close()


def test_a_series_adding_a_compiler_warning_regresses(tree: Path, tmp_path: Path) -> None:
    """``int unused;`` in a function of the device source: the one test passes on both
    sides, yet the verdict is REGRESSED (exit 1) on a line of its own with the compiler's
    warning -- QEMU's CI builds with -Werror and would fail the series; the JSON says it
    (``added_warnings``) and which side compiles clean."""
    unused = ("int ivflat_probe(void);\nint ivflat_probe(void)\n{\n    int unused;\n"
              "    return 0;\n}\n")
    series = patch(tree, tmp_path, (tree / "hw/misc/ivshmem-flat.c").read_text() + unused)
    args = [str(series), "--source", str(tree)]
    steady = ["--", f"{FLIP_CASES}::test_steady", *INNER_OPTS]
    res = run_tool([sys.executable, str(VALIDATE), *args, *steady])
    assert res.returncode == 1, res.stdout + res.stderr
    said = " ".join(res.stdout.split())
    assert res.stdout.startswith("ivshmem-flat suite: REGRESSED"), res.stdout
    assert ("the series adds compiler warnings to hw/misc/ivshmem-flat.c (QEMU's CI builds "
            "with -Werror): hw/misc/ivshmem-flat.c:5:9: error: unused variable 'unused' "
            "[-Werror=unused-variable]") in said, res.stdout
    assert ("REGRESSED: 0 test(s) regressed; compiler warnings added to "
            "hw/misc/ivshmem-flat.c;") in said, res.stdout
    doc = json_only(run_tool([sys.executable, str(VALIDATE), *args, "--report", "json",
                              *steady]), "validate-patch")
    assert (doc["verdict"], doc["regressed"]) == ("REGRESSED", 0), doc
    assert "unused variable 'unused'" in doc["added_warnings"][0], doc
    assert (doc["before"]["device_werror"], doc["after"]["device_werror"]) == \
        ("clean", "warns"), doc
