"""The reports of ci/validate-patch and ci/bisect (issue 21, item 4): text ready for a
qemu-devel reply (72 columns, series subject and Message-Id, base, QEMU version, wiring,
suite version, Tested-by), bisect's ``Fixes:`` line, and JSON with the same facts under a
versioned schema. Fed real pytest runs, real git histories and ci/build-qemu's own log
line; nothing is built.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from ivflat.ci import bisectreport, facts, suite
from ivflat.ci.bisectreport import Outcome
from ivflat.ci.gitrepo import FIXED_ENV
from ivflat.ci.series import read_series
from ivflat.ci.validate import conclude

from .test_validate_report import _repo, context, side
from .tools import fake_qemu_repo, git

# what ci/build-qemu --in-place logs (as in every bisect step's and validation's build log)
WIRED = ("build-qemu: wiring: applied ci/patches/wiring/10.0.patch sha256:90a2abfc2bdc01f0 "
         "(in place)\n")
WIRING = "applied ci/patches/wiring/10.0.patch sha256:90a2abfc2bdc01f0"
WHO = "Tested-by: A U Thor <author@example.org>"


def mail_ready(text: str) -> None:
    """72 columns, but for a line that is one unbreakable word after its indent, or a
    trailer (one line, whatever its length, for the tools that read it)."""
    long = [ln for ln in text.splitlines() if len(ln) > 72 and len(ln.split()) > 1
            and not ln.startswith(facts.TRAILERS)]
    assert not long, long


def test_validate_text_is_mail_ready(tmp_path: Path) -> None:
    """The text report of ci/validate-patch is mail-ready (72 columns, no local path): its
    verdict line first, then the series, Message-Id, base, QEMU version, wiring and suite
    version, the newly failing test, and Tested-by last."""
    before, after = side(tmp_path, "before"), side(tmp_path, "after")
    after.build.log.write_text("$ ci/build-qemu ...\n" + WIRED)
    ctx = context(tmp_path)
    ctx.series.msgid = "20241216141818.111255-1-gustavo.romero@linaro.org"
    ctx.qemu_version, ctx.tested_by = "9.2.50", WHO
    assert conclude(ctx, before, after, "text") == 1
    text = (tmp_path / "report.txt").read_text()
    mail_ready(text)
    assert str(tmp_path) not in text  # no local path in a mail
    lines = text.splitlines()
    assert lines[0].startswith("ivshmem-flat suite: REGRESSED (1 commit(s), 6 tests")
    for want in ("Series:     [PATCH 0/1] fixes",
                 "Message-Id: <20241216141818.111255-1-gustavo.romero@linaro.org>",
                 'Base:       aaaaaaaaaaaa ("base")', "QEMU:       9.2.50",
                 f"Wiring:     {WIRING}", f"Suite:      {facts.suite_version()}"):
        assert want in lines, want
    assert "Newly failing (1):" in lines and "  test_fake::test_regresses  [passed -> " \
        "failed]" in lines
    assert lines[-1] == WHO


ALIKE = """
import os
import pytest

AFTER = os.environ.get("IVSHMEM_SELFTEST_SIDE") == "after"
WHY = ("known bug version-unchecked: " + "the greeting's version is read and never checked "
       * 9 + "theend")

@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.xfail(strict=True, reason=WHY)
def test_alike(n):
    assert AFTER, "the bug shows"
"""


def test_validate_text_says_a_shared_reason_once_and_whole(tmp_path: Path) -> None:
    """Tests that changed alike for one reason (here three tests of one known bug, fixed)
    are listed under one line giving the change and the reason once, so a mail is not the
    same paragraph 40 times; a reason longer than a report keeps is cut between words
    with "...", never inside one."""
    before = side(tmp_path, "before", ALIKE)
    after = side(tmp_path, "after", ALIKE)
    assert conclude(context(tmp_path), before, after, "text") == 0
    text = (tmp_path / "report.txt").read_text()
    mail_ready(text)
    flat = " ".join(text.split())
    assert flat.count("[xfailed -> XPASS(strict)]") == 1, text  # the reason, once
    assert "[xfailed -> XPASS(strict)] 3 tests:" in flat, text
    for n in (1, 2, 3):
        assert f"test_fake::test_alike[{n}] (reproduced" not in text  # no re-run here
        assert f"      test_fake::test_alike[{n}]" in text.splitlines(), text
    long = after.tests.messages["test_fake::test_alike[1]"]
    assert len(long) <= suite.MESSAGE_CHARS + 4 and long.endswith(" ..."), long
    whole = "[XPASS(strict)] known bug version-unchecked: " + \
        "the greeting's version is read and never checked " * 9 + "theend"
    assert whole.startswith(long[:-4]) and whole[len(long) - 4] == " ", long  # between words


def test_validate_json_has_the_same_facts(tmp_path: Path) -> None:
    """The JSON report carries the text's facts under the versioned schema: verdict, series,
    base, QEMU version, wiring, suite version, fixed bugs and the changes by group."""
    before, after = side(tmp_path, "before"), side(tmp_path, "after")
    after.build.log.write_text(WIRED)
    ctx = context(tmp_path)
    ctx.series.msgid, ctx.qemu_version = "m@x", "9.2.50"
    assert conclude(ctx, before, after, "json") == 1
    doc = json.loads((tmp_path / "report.json").read_text())
    assert (doc["schema"], doc["version"], doc["tool"]) == (facts.SCHEMA,
                                                            facts.SCHEMA_VERSION,
                                                            "validate-patch")
    assert doc["verdict"] == "REGRESSED" and doc["regressed"] == 2
    assert doc["series"]["message_id"] == "m@x"
    assert doc["series"]["subject"] == "[PATCH 0/1] fixes"
    assert doc["base"] == {"commit": "a" * 40, "subject": "base"}
    assert (doc["qemu_version"], doc["wiring"]) == ("9.2.50", WIRING)
    assert doc["suite_version"] == facts.suite_version()
    assert doc["fixed_bugs"] == ["version-unchecked"]
    assert [c["test"] for c in doc["changes"]["Newly failing"]] == ["test_fake::test_regresses"]
    assert doc["after"]["outcomes"]["failed"] >= 1


def test_message_id_read_from_a_real_series(tmp_path: Path) -> None:
    """git format-patch --thread: the cover letter's Message-Id names the series."""
    repo = _repo(tmp_path / "repo")
    out = tmp_path / "out"
    git(repo, "format-patch", "-q", "--thread", "--cover-letter", "-2", "-o", str(out))
    cover = (out / "0000-cover-letter.patch").read_text()
    msgid = next(ln for ln in cover.splitlines() if ln.lower().startswith("message-id:"))
    series = read_series([out], tmp_path / "split")
    assert f"<{series.msgid}>" == msgid.split(":", 1)[1].strip()


def test_bisect_report_has_a_fixes_line(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """ci/bisect's text report is mail-ready with a ``Fixes:`` line for the first bad commit,
    the range, QEMU version and wiring, and its failing tests indented however long their
    ids; the JSON has the same facts under the versioned schema."""
    repo = fake_qemu_repo(tmp_path / "qemu", device=True)
    (repo / "VERSION").write_text("9.2.50\n")
    subject = "hw/misc/ivshmem-flat: report IVPOSITION 1-based like the guest driver expects"
    subprocess.run(["git", "-C", str(repo), "add", "VERSION"], check=True)
    subprocess.run(["git", "-C", str(repo), "commit", "-q", "-m", subject], check=True,
                   env=dict(os.environ, **FIXED_ENV))
    good, first = git(repo, "rev-parse", "HEAD~2"), git(repo, "rev-parse", "HEAD")
    run = tmp_path / "run"
    (run / "steps" / first[:12]).mkdir(parents=True)
    (run / "steps" / first[:12] / "build.log").write_text(WIRED)
    failed = ["qtests/test_regs.py::test_ivposition_reports_server_assigned_id  (assert 2 "
              "== 1)",  # one id longer than a line, as real parametrized ids are:
              "qtests.test_registers::test_ivposition_reports_server_assigned_id[65534-qtest]"
              "  (assert 65535 == 65534)"]
    (run / "steps.jsonl").write_text("".join(json.dumps(r) + "\n" for r in (
        {"commit": first, "title": f"{first[:7]} {subject}", "verdict": "bad",
         "build_s": 300.0, "test_s": 40.0, "failed": failed},
        {"commit": good, "title": f"{good[:7]} one", "verdict": "good", "build_s": 30.0,
         "test_s": 40.0})))
    asked = Outcome(good, first, 2, False, False, "default", ["-k", "ivposition"], [], 0.0,
                    tested_by=WHO)
    assert bisectreport.report(repo, run, first, [], 600.0, None, asked, "text") == 0
    text = capsys.readouterr().out
    mail_ready(text)
    assert text == (run / "report.txt").read_text()
    lines = text.splitlines()
    assert f'Fixes: {first[:12]} ("{subject}")' in lines
    assert f"First bad commit: {first}" in lines
    assert "QEMU:   9.2.50" in lines and f"Wiring: {WIRING}" in lines
    assert f"Range:  {good[:12]}..{first[:12]} (2 commits)" in lines
    assert "pytest: qtests/ -k ivposition" in lines  # no test named: the catalogue
    tests = text.split("Failing tests at it:\n")[1].split("\n\n")[0].splitlines()
    assert [ln.split()[0] for ln in tests if ln.startswith("  qtests")] == \
        [f.split()[0] for f in failed]
    assert all(ln.startswith("  ") for ln in tests), tests  # indented, long ids too
    assert lines[-1] == WHO
    assert bisectreport.report(repo, run, first, [], 600.0, None, asked, "json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["schema"], doc["version"], doc["tool"]) == (facts.SCHEMA,
                                                            facts.SCHEMA_VERSION, "bisect")
    assert doc["fixes"] == f'Fixes: {first[:12]} ("{subject}")'
    assert doc["first"]["commit"] == first and doc["verdict"] == "found"
    assert (doc["qemu_version"], doc["wiring"], doc["tests"]) == ("9.2.50", WIRING, failed)


def test_reverse_bisect_report_names_the_tests_asked_for(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Tests named after ``--`` run instead of the catalogue: the pytest line shows just
    them (as the steps ran them), and the fixed tests are told in the user's terms."""
    repo = fake_qemu_repo(tmp_path / "qemu", device=True)
    broken, first = git(repo, "rev-parse", "HEAD~1"), git(repo, "rev-parse", "HEAD")
    run = tmp_path / "run"
    (run / "steps" / first[:12]).mkdir(parents=True)
    (run / "steps" / first[:12] / "build.log").write_text(WIRED)
    failed = ["qtests/test_hostile_server.py::test_x  (assert 0 == 1)"]
    (run / "steps.jsonl").write_text("".join(json.dumps(r) + "\n" for r in (
        {"commit": first, "title": f"{first[:7]} two", "verdict": "good", "build_s": 30.0,
         "test_s": 4.0},
        {"commit": broken, "title": f"{broken[:7]} one", "verdict": "bad", "build_s": 30.0,
         "test_s": 4.0, "failed": failed})))
    args = ["qtests/test_hostile_server.py", "-k", "test_x", "--runxfail"]
    asked = Outcome(broken, first, 1, False, True, "default", args, [], 0.0)
    assert bisectreport.report(repo, run, first, [], 60.0, broken, asked, "text") == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert "pytest: qtests/test_hostile_server.py -k test_x --runxfail" in lines, text
    assert f"First fixed commit: {first}" in lines
    fixed = text.split("Tests it fixes (failing before it, passing from it on):\n")[1]
    assert fixed.splitlines()[0] == f"  {failed[0]}"
    assert "BROKEN" not in text


def test_tested_by_defaults_to_git_identity(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty --tested-by takes git's user name and email, a given one is used as is, none
    means no line; with no git identity to take, the error names user.name."""
    cfg = tmp_path / "gitconfig"
    cfg.write_text("[user]\n\tname = A U Thor\n\temail = author@example.org\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(cfg))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.chdir(tmp_path)
    assert facts.tested_by("") == WHO
    assert facts.tested_by("Q <q@x>") == "Tested-by: Q <q@x>"
    assert facts.tested_by(None) is None
    cfg.write_text("")
    with pytest.raises(ValueError, match=r"user\.name"):
        facts.tested_by("")
