"""ci/validate-patch on a series that adds the device (issue 21: the v3 series' report).

ivshmem-flat v3 (posted Dec 2024) adds hw/misc/ivshmem-flat.c. On master, which has had
the device since e6c33efed3, it cannot apply; on its own base there is no device to test
before it. Either way the tool must say why, not only "does not apply" or "cannot judge". Here:
the real tools on tools.prebuilt_qemu_repo trees (one real C file compiled, a prebuilt
QEMU published as the build) with a private cache.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ivflat.ci.qemubuild import tools_marker
from ivflat.device.board import DEVICE_SOURCE as DEVICE
from ivflat.host.paths import reference_dir

from .tools import VALIDATE, git, prebuilt_qemu_repo, run_tool

REFERENCE = reference_dir() / "qemu-system-arm"  # the real cache's, before the private one


@pytest.fixture
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private cache for the tools, its tools venv marked present (the stand-in configure
    ignores it)."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("IVSHMEM_SUITE_CACHE", str(cache))
    tools_marker(cache).parent.mkdir(parents=True)
    tools_marker(cache).touch()
    return cache


def device_series(repo: Path, out: Path) -> tuple[Path, str]:
    """*repo*'s device source taken out in a base commit, and a format-patch that adds it
    back (the series); returns the patch and the base."""
    text = (repo / DEVICE).read_text()
    git(repo, "rm", "-q", DEVICE)
    (repo / "hw/misc").mkdir(parents=True, exist_ok=True)
    (repo / "hw/misc/meson.build").write_text("# the other devices\n")
    git(repo, "add", "hw/misc/meson.build")
    git(repo, "commit", "-q", "-m", "no device yet")
    base = git(repo, "rev-parse", "HEAD")
    (repo / DEVICE).parent.mkdir(parents=True, exist_ok=True)
    (repo / DEVICE).write_text(text)
    git(repo, "add", DEVICE)
    git(repo, "commit", "-q", "-m", "hw/misc/ivshmem-flat: Add ivshmem-flat device")
    patch = Path(git(repo, "format-patch", "-1", "-o", str(out), "HEAD"))
    return patch, base


def validate(*args: str) -> subprocess.CompletedProcess[str]:
    return run_tool([sys.executable, str(VALIDATE), *args])


def test_a_series_adding_the_device_is_judged_on_its_own(private_cache: Path,
                                                          tmp_path: Path) -> None:
    """The base has no device and the series adds it: the base is neither built nor tested,
    every test of the patched build is new, and the known bugs it shows are listed as
    such -- a verdict (exit 0 here: nothing fails), not "cannot judge" (exit 3)."""
    if not REFERENCE.exists():
        pytest.skip("no reference build to stand in as the patched build (ci/build-qemu)")
    repo = prebuilt_qemu_repo(tmp_path / "qemu", REFERENCE.resolve())
    patch, base = device_series(repo, tmp_path / "series")
    res = validate(str(patch), "--source", str(repo), "--base", base, "--report", "json",
                   "--", "qtests/test_registers.py", "qtests/test_doorbell.py", "-k",
                   "ivposition or narrow or far_out_of_range")
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert f"the base has no {DEVICE} and the series adds it" in res.stderr, out
    report = json.loads(res.stdout)
    assert report["before"]["built"] is False and report["after"]["built"] is True, out
    assert report["before"]["outcomes"] == {}, out
    new = report["changes"]["New tests"]
    assert new and all(e["change"].startswith("- -> ") for e in new), out
    verdicts = {b["id"]: b["verdict"] for b in report["known_bugs"]}
    assert verdicts["narrow-read-inside-register"] == "still shows (xfail)", verdicts
    # ASan-only: its one selected test skips on a default build, the base ran nothing
    assert verdicts["doorbell-vector-unchecked"].startswith("not judged"), verdicts
    assert report["regressed"] == 0 and report["verdict"] == "OK", out
    run_dir = Path(res.stderr.split("logs in ")[1].split()[0])
    assert not (run_dir / "confirm").exists(), "new tests are no change to confirm"
    text = validate(str(patch), "--source", str(repo), "--base", base, "--",
                    "qtests/test_registers.py", "-k", "ivposition")
    assert text.returncode == 0, text.stdout + text.stderr
    assert "base not built (it has no ivshmem-flat)" in text.stdout, text.stdout
    assert "passed (not listed)" in text.stdout, text.stdout


def test_a_series_adding_a_file_the_base_has_says_so(private_cache: Path,
                                                     tmp_path: Path) -> None:
    """v3 on master: the series creates the device source, which the base already has. It
    does not apply (exit 2), and the error says why and what to do, without git am's advice
    for a user in the middle of an am (the tool's am, in its private clone, is aborted)."""
    repo = prebuilt_qemu_repo(tmp_path / "qemu", Path("/bin/true"))
    patch, _ = device_series(repo, tmp_path / "series")
    with (repo / DEVICE).open("a") as f:  # the base's device has moved on since
        f.write("int later;\n")
    git(repo, "commit", "-q", "-a", "-m", "hw/misc/ivshmem-flat: a later change")
    res = validate(str(patch), "--source", str(repo), "--base", "HEAD")
    assert res.returncode == 2, res.stdout + res.stderr
    assert f"(it creates {DEVICE}, which the base already has" in res.stderr, res.stderr
    assert "give the commit it was posted on as --base" in res.stderr, res.stderr
    # git am's advice is for a user inside an am; the tool's private one is aborted
    assert "git am --continue" not in res.stderr and "hint:" not in res.stderr, res.stderr
