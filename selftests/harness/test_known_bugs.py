"""The known-bug registry and the tests agree, and its pytest surface works.

Why: the strict xfails come from fixtures/ivflat/device/known_bugs.py. A test that names a bug
nobody registered, a registered bug no test shows, or a registry entry pointing at a test
that was renamed would silently lose a bug's guard; this file fails instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ivflat.device import known_bugs
from ivflat.host.paths import REPO
from ivflat.plugin.known_bugs import DUMP_ENV, status
from ivflat.qemu.probe import Capabilities


def _pytest(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    dump = tmp_path_factory.mktemp("kb") / "dump.json"
    res = _pytest("--collect-only", "-q", "qtests/", env={DUMP_ENV: str(dump)})
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    dumped: dict[str, Any] = json.loads(dump.read_text())
    return dumped


def test_ids_are_unique_and_stable_looking():
    """Bug ids are unique and lower-case without spaces: they are typed on command lines
    (--known-bugs-fixed), written into BUILDINFO.json and matched as strings."""
    ids = [b.id for b in known_bugs.BUGS]
    assert len(ids) == len(set(ids))
    assert all(i == i.lower() and " " not in i for i in ids), ids


def test_registry_and_tests_agree(collection):
    """Every bug has >= 1 test, every listed test exists and carries the mark, every mark
    names a registered bug listed for that test."""
    problems = known_bugs.consistency_problems(collection["marked"],
                                               set(collection["collected"]))
    assert problems == []
    assert all(b.tests for b in known_bugs.BUGS)


def test_consistency_check_sees_each_kind_of_disagreement():
    """The checker itself can fail: a stray id, a missing test, a missing mark."""
    bug = known_bugs.BUGS[0]
    collected = {t for b in known_bugs.BUGS for t in b.tests}
    marked = {t: [b.id] for b in known_bugs.BUGS for t in b.tests}
    assert known_bugs.consistency_problems(marked, collected) == []
    stray = {**marked, "qtests/x.py::t": ["no-such-bug"]}
    assert "unregistered" in known_bugs.consistency_problems(stray, collected)[0]
    gone = collected - {bug.tests[0]}
    assert "does not exist" in known_bugs.consistency_problems(marked, gone)[0]
    unmarked = {k: v for k, v in marked.items() if k != bug.tests[0]}
    assert "does not carry" in known_bugs.consistency_problems(unmarked, collected)[0]


def test_unknown_id_is_a_clear_error():
    """A mark naming an id nobody registered fails at import with the id and the registered
    ones, instead of a test guarding nothing."""
    with pytest.raises(KeyError, match=r"unknown known-bug id 'nope'.*registered"):
        known_bugs.known_bug("nope", raises=AssertionError)


def test_lookup_by_test():
    """The registry finds the bug a test shows from its node id, and no bug for a test it
    does not list: failure reports and verdicts name the right bug."""
    bug = known_bugs.get("own-vector-opaque")
    assert known_bugs.bug_for_test(bug.tests[0]) is bug
    assert known_bugs.bug_for_test("qtests/test_doorbell.py::nope") is None


def _caps(**kw) -> Capabilities:
    base = dict(binary="q", version="10.0.13", has_device_type=True, user_creatable=True,
                wired=True, qtest_accel=True, properties=(), asan=False)
    return Capabilities(**{**base, **kw})


def test_status_on_kinds_of_binary():
    """A bug's status follows the binary: it applies (xfail) where its condition holds, is not
    judged where it cannot be seen (an ASan-only bug without ASan, no QEMU) and is absent
    where the device is."""
    asan_bug = known_bugs.get("doorbell-vector-unchecked")
    plain = known_bugs.get("version-unchecked")
    assert status(plain, _caps()) == "applies (xfail)"
    assert status(asan_bug, _caps()) == "not judged: needs ASan"
    assert status(asan_bug, _caps(asan=True)) == "applies (xfail)"
    assert status(plain, _caps(has_device_type=False)) == "device absent"
    assert status(plain, None) == "not judged: no QEMU found"


def test_known_bugs_option_lists_and_exits(tmp_path: Path):
    """``pytest --known-bugs`` prints each bug with a status and runs no test."""
    res = _pytest("--list-known-bugs", "qtests/")
    assert res.returncode == 0, res.stdout + res.stderr
    for bug in known_bugs.BUGS:
        assert f"{bug.id}: " in res.stdout
    assert "passed" not in res.stdout and "collected" not in res.stdout


@pytest.mark.parametrize("bug_id", ["version-unchecked", "disconnect-own-id"])
def test_marked_tests_become_strict_xfails(collection, bug_id):
    """Spot check through pytest itself: a known-bug test is reported as xfailed (strict),
    with the registry's title as reason; also a bug whose symptom is a crash (its
    signature matched: KnownBugCrash)."""
    bug = known_bugs.get(bug_id)
    res = _pytest("-q", "-rx", bug.tests[0])
    if "skipped" in res.stdout and "xfailed" not in res.stdout:
        pytest.skip("no wired QEMU to judge the bug on")
    assert "1 xfailed" in res.stdout, res.stdout[-2000:]
    assert f"known bug {bug.id}" in res.stdout
