"""The JUnit XML says what was judged: QEMU, wiring, flavour, device source, suite version
(issue 21, ivflat.plugin.run_facts).

Why: a JUnit file kept by CI said which tests passed, not of which QEMU, with which wiring,
build flavour or suite version. Read back from the file a real inner pytest run writes
(pytester, a real pytest process, also under xdist where only the controller writes it),
against the real reference builds and their BUILDINFO.json; suite_version on real git.
"""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from ivflat.device import known_bugs
from ivflat.device.board import DEVICE_SOURCE
from ivflat.host import timeouts
from ivflat.host.paths import REPO, reference_command
from ivflat.plugin.run_facts import UNKNOWN, binary_facts, suite_version
from ivflat.qemu.probe import probe
from ivflat.qemu.under_test import buildinfo, reference_binary

DEBIAN = Path("/usr/bin/qemu-system-arm")


def junit_properties(path: Path) -> dict[str, str]:
    suite = ET.parse(path).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")  # type: ignore[assignment]
    assert suite is not None
    return {p.get("name", ""): p.get("value", "") for p in suite.iter("property")}


@pytest.mark.parametrize("fixes,xdist", [(False, ""), (False, "-n 2"), (True, "")])
def test_junit_names_what_was_judged(plugin_pytester: pytest.Pytester, fixes: bool,
                                     xdist: str) -> None:
    """The JUnit XML of a run, serial or under xdist, of the reference build and of the fixed
    one, names the binary, its version, wiring and flavour, the device source and its hash,
    the bugs the build fixes, the server backend and the suite's git version, the build's
    facts as its BUILDINFO.json records them: a kept result says what it judged."""
    binary = reference_binary(fixes=fixes)
    if not binary.exists():
        pytest.skip(f"no {binary.parent.name} build ({reference_command(fixes=fixes)})")
    plugin_pytester.makepyfile("def test_one():\n    pass\n")
    res = plugin_pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", f"--qemu={binary}", "--junitxml=junit.xml", *xdist.split(),
        timeout=timeouts.scaled(base=timeouts.START))
    assert res.ret == 0, res.stdout.str()
    props = junit_properties(plugin_pytester.path / "junit.xml")
    info = buildinfo(binary)
    described = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"],
                               capture_output=True, text=True, check=True).stdout.strip()
    assert props["qemu_binary"] == str(binary.resolve())
    assert props["qemu_version"] == probe(binary).version and props["qemu_version"][0].isdigit()
    assert props["wiring"] == "suite"
    assert props["wiring_patch"] == info["wiring"] and "ci/patches/wiring/" in info["wiring"]
    assert props["flavour"] == "default"
    assert props["qemu_source"] == info["source"]
    assert props["device_source_sha256"] == info["sources"][DEVICE_SOURCE]
    assert len(props["device_source_sha256"]) == 64
    assert props["known_bugs_fixed"] == (
        ",".join(sorted(known_bugs.fixed_by(info["fixes"]["patches"])))
        if fixes else "none")
    assert props["ivshmem_server"] == "python"
    assert props["suite_version"] == described


def test_binary_without_buildinfo_is_said_unknown() -> None:
    """Debian's stock binary: no wiring, and what only BUILDINFO.json knows is unknown."""
    if not DEBIAN.exists():
        pytest.skip(f"{DEBIAN} not installed (ci/install-deps)")
    facts = binary_facts(DEBIAN, probe(DEBIAN))
    assert facts["wiring"] == "none" and facts["qemu_version"] == probe(DEBIAN).version
    assert [facts[k] for k in ("wiring_patch", "flavour", "qemu_source",
                               "device_source_sha256")] == [UNKNOWN] * 4


def test_suite_version_is_its_own_checkouts(tmp_path: Path) -> None:
    """A tagged checkout with an edit: ``<tag>-dirty``; a copy of the suite inside another
    repository (a QEMU fork's CI checkout) without a .git of its own: unknown, never the
    enclosing repository's description."""
    repo = tmp_path / "suite"
    repo.mkdir()
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@localhost",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@localhost", "HOME": str(tmp_path)}
    (repo / "f").write_text("one\n")
    for cmd in (["init", "-q"], ["add", "f"], ["commit", "-q", "-m", "one"],
                ["tag", "-a", "-m", "v1", "v1"]):
        subprocess.run(["git", "-C", str(repo), *cmd], check=True, env=env)
    assert suite_version(repo) == "v1"
    (repo / "f").write_text("two\n")
    assert suite_version(repo) == "v1-dirty"
    (repo / "copy").mkdir()
    assert suite_version(repo / "copy") == UNKNOWN
