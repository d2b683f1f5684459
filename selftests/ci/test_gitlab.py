"""The GitLab CI jobs a QEMU fork includes (ci/gitlab/ivshmem-flat.yml): parsed, resolved
against QEMU's .base_job_template (the fork's own, or ci/gitlab/ivshmem-flat-standalone.yml),
and the test job's lines run locally in order, as GitLab's shell runner runs them (one bash,
set -eo pipefail, the job's variables in the environment, expanded in order).

Why: a CI definition nobody runs rots silently (a renamed option, a path the artifacts
miss); the job did not follow QEMU's conventions (no base template, no sections, apt on
every run, the suite on `main`, the binary path scraped from the log). The run clones this
checkout's HEAD at its commit (the pinned ref), uses a tiny selection (-k test_ivposition)
and a QEMU tree whose build is in the cache (Debian's source as a git repository), so it
costs seconds once built.
"""

from __future__ import annotations

import os
import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml

from ivflat.ci.workclone import debian_base_repo
from ivflat.errors import UserError
from ivflat.host.paths import REPO, cache_dir
from ivflat.host.timeouts import scaled

from .tools import TOOL_TIMEOUT, git, run_tool

GITLAB = REPO / "ci" / "gitlab"
JOB_FILE = GITLAB / "ivshmem-flat.yml"
STANDALONE = GITLAB / "ivshmem-flat-standalone.yml"
QEMU_GIT = os.environ.get("IVSHMEM_QEMU_GIT")
NO_QEMU_GIT = "needs $IVSHMEM_QEMU_GIT (a QEMU clone) for QEMU's own CI files"
SECTION_START = re.compile(r"section_start:\d+:(\w+)\r\x1b\[0K(.*)")
SECTION_END = re.compile(r"section_end:\d+:(\w+)\r\x1b\[0K")


def qemu_file(path: str) -> str:
    if not QEMU_GIT:
        pytest.skip(NO_QEMU_GIT)
    return git(Path(QEMU_GIT).expanduser(), "show", f"master:{path}")


def merged(base: Any, over: Any) -> Any:
    """GitLab's ``extends`` merge: mappings deeply, anything else replaced by *over*."""
    if isinstance(base, dict) and isinstance(over, dict):
        return {**base, **{k: merged(base.get(k), v) for k, v in over.items()}}
    return over


def resolved(name: str, base: str | None = None) -> dict[str, Any]:
    """Job *name* with its ``extends`` applied; .base_job_template from *base* (YAML text),
    else from the standalone file."""
    defs = {**yaml.safe_load(base if base is not None else STANDALONE.read_text()),
            **yaml.safe_load(JOB_FILE.read_text())}

    def resolve(spec: dict[str, Any]) -> dict[str, Any]:
        parents = spec.get("extends", [])
        out: dict[str, Any] = {}
        for parent in [parents] if isinstance(parents, str) else parents:
            out = merged(out, resolve(defs[parent]))
        return merged(out, {k: v for k, v in spec.items() if k != "extends"})
    return resolve(defs[name])


def job_env(overrides: dict[str, str]) -> dict[str, str]:
    """The job's variables, overridden like pipeline variables, $VARs expanded in order."""
    env = dict(os.environ, **{k: v for k, v in overrides.items() if k == "CI_PROJECT_DIR"})
    for key, value in resolved("ivshmem-flat")["variables"].items():
        if key in overrides:
            env[key] = overrides[key]
            continue
        for name, val in env.items():
            value = str(value).replace(f"${name}", val)
        env[key] = value
    return env


def sections(text: str) -> list[tuple[str, str]]:
    """(start|end, name) of each section marker line, in order."""
    found = []
    for line in text.split("\n"):  # not splitlines(): "\r" is inside the marker
        if m := SECTION_START.fullmatch(line):
            found.append(("start", m.group(1)))
        elif m := SECTION_END.fullmatch(line):
            found.append(("end", m.group(1)))
    return found


def test_jobs_follow_qemus_conventions() -> None:
    """Both jobs extend .base_job_template; the test job runs in the image (no apt: the
    install step is skipped by default), needs the image job only if it exists, keeps its
    cache also on failure, has no rules of its own (the base's govern), a suite ref with
    no default, the binary path from --print-binary, and balanced sections."""
    spec = resolved("ivshmem-flat")
    raw = yaml.safe_load(JOB_FILE.read_text())
    for name in ("ivshmem-flat", "ivshmem-flat-container"):
        assert ".base_job_template" in raw[name]["extends"]
        assert "rules" not in raw[name] and "rules" in resolved(name)
    assert spec["image"] == "$IVSHMEM_IMAGE"
    assert spec["variables"]["IVSHMEM_IMAGE"].endswith(":$IVSHMEM_SUITE_REF")
    assert spec["variables"]["IVSHMEM_SUITE_REF"] == ""
    assert spec["variables"]["IVSHMEM_SKIP_INSTALL"] == "1"
    assert spec["needs"] == [{"job": "ivshmem-flat-container", "optional": True}]
    assert spec["cache"]["when"] == "always"
    assert spec["artifacts"]["when"] == "always"
    assert spec["artifacts"]["reports"]["junit"] == "ivshmem-flat/junit.xml"
    assert "ivshmem-flat/" in spec["artifacts"]["paths"]
    assert spec["variables"]["IVSHMEM_OUT"] == "$CI_PROJECT_DIR/ivshmem-flat"
    lines = [*spec["before_script"], *spec["script"]]
    script = "\n".join(lines)
    assert "--print-binary \"$IVSHMEM_OUT/qemu-path\"" in script and "tail" not in script
    assert "--junitxml=\"$IVSHMEM_OUT/junit.xml\"" in script
    opened = [ln.split()[1] for ln in lines if ln.startswith("section_start ")]
    closed = [ln.split()[1] for ln in lines if ln.startswith("section_end ")]
    assert opened == closed == ["suite", "build", "test"]
    container = resolved("ivshmem-flat-container")
    build = next(ln for ln in container["script"] if ln.startswith("docker build"))
    assert "-f suite/ci/gitlab/ivshmem-flat.docker suite" in build
    docker = (GITLAB / "ivshmem-flat.docker").read_text()
    assert "RUN /opt/ivshmem-flat-suite/ci/install-deps" in docker
    assert spec["variables"]["IVSHMEM_SUITE_DIR"] == "/opt/ivshmem-flat-suite"


def test_standalone_base_is_qemus_for_what_the_jobs_use() -> None:
    """The stand-in .base_job_template agrees with QEMU's real one (master's
    .gitlab-ci.d/base.yml) on sections, interruptibility and the fork rule (QEMU_CI)."""
    qemu = yaml.safe_load(qemu_file(".gitlab-ci.d/base.yml"))[".base_job_template"]
    ours = yaml.safe_load(STANDALONE.read_text())[".base_job_template"]
    assert ours["variables"]["FF_SCRIPT_SECTIONS"] == qemu["variables"]["FF_SCRIPT_SECTIONS"]
    assert ours["interruptible"] == qemu["interruptible"] is True
    fork_rule = '$QEMU_CI != "1" && $QEMU_CI != "2"'
    assert any(r.get("if", "").startswith(fork_rule) and r["when"] == "never"
               for r in qemu["rules"])
    assert {"if": fork_rule, "when": "never"} in ours["rules"]
    job = resolved("ivshmem-flat", qemu_file(".gitlab-ci.d/base.yml"))
    assert job["rules"] == qemu["rules"] and job["variables"]["FF_SCRIPT_SECTIONS"] == 1


def bash(script: str, cwd: Path) -> str:
    """stdout of *script* in bash, bytes decoded as they are (no newline translation: the
    markers hold a carriage return)."""
    return subprocess.run(["bash", "-eo", "pipefail", "-c", script], cwd=cwd,
                          capture_output=True, check=True).stdout.decode()


def test_sections_without_qemus_script(tmp_path: Path) -> None:
    """In a tree without scripts/ci/gitlab-ci-section the first line defines the same
    section_start/section_end, printing GitLab's markers (QEMU's own, when a QEMU clone is
    given, print the same)."""
    first = resolved("ivshmem-flat")["before_script"][0]
    use = 'section_start demo "A demo"; echo inside; section_end demo'
    out = bash(f"{first}\n{use}", tmp_path)
    assert sections(out) == [("start", "demo"), ("end", "demo")], repr(out)
    assert SECTION_START.fullmatch(out.split("\n")[0]).group(2) == "A demo"  # type: ignore[union-attr]
    if QEMU_GIT:
        (tmp_path / "scripts/ci").mkdir(parents=True)
        (tmp_path / "scripts/ci/gitlab-ci-section").write_text(
            qemu_file("scripts/ci/gitlab-ci-section"))
        theirs = bash(f"{first}\n{use}", tmp_path)
        strip = re.compile(r":\d+:")
        assert strip.sub("::", theirs) == strip.sub("::", out)


def test_unpinned_suite_is_refused(tmp_path: Path) -> None:
    """No IVSHMEM_SUITE_REF: the job stops in its first section, saying so, before it
    clones or builds anything."""
    env = job_env({"CI_PROJECT_DIR": str(tmp_path), "IVSHMEM_SUITE_DIR": str(tmp_path / "s"),
                   "IVSHMEM_SUITE_URL": str(REPO)})
    steps = "\n".join(resolved("ivshmem-flat")["before_script"])
    res = subprocess.run(["bash", "-eo", "pipefail", "-c", steps], env=env, cwd=tmp_path,
                         capture_output=True, text=True)
    assert res.returncode == 2 and "IVSHMEM_SUITE_REF is not set" in res.stdout, res
    assert not (tmp_path / "s").exists() and not (tmp_path / "ivshmem-flat").exists()


@pytest.mark.slow
@pytest.mark.timeout(int(scaled(TOOL_TIMEOUT)))
def test_job_steps_run_in_order_locally(tmp_path: Path) -> None:
    """before_script + script in one bash, on a clone of Debian's QEMU source (as the
    fork's checkout), the suite cloned at this checkout's HEAD commit (the pinned ref):
    exit 0, the build reused, its path from --print-binary, timed sections, JUnit with the
    selected tests passed and the properties naming the QEMU and the suite's commit,
    BUILDINFO and the build log kept for the artifacts."""
    try:
        base = debian_base_repo()
    except UserError as exc:
        pytest.skip(str(exc))
    project = tmp_path / "qemu-fork"
    subprocess.run(["git", "clone", "-q", "--shared", str(base), str(project)], check=True)
    out, suite = tmp_path / "out", tmp_path / "suite"
    head = git(REPO, "rev-parse", "HEAD")
    env = job_env({"CI_PROJECT_DIR": str(project), "IVSHMEM_SUITE_DIR": str(suite),
                   "IVSHMEM_SUITE_URL": str(REPO), "IVSHMEM_SUITE_REF": head,
                   "IVSHMEM_SUITE_CACHE": str(cache_dir()), "IVSHMEM_OUT": str(out),
                   "PYTEST_ARGS": "-k test_ivposition"})
    assert env["IVSHMEM_SKIP_INSTALL"] == "1"
    spec = resolved("ivshmem-flat")
    steps = "\n".join([*spec["before_script"], *spec["script"]])
    res = run_tool(["bash", "-eo", "pipefail", "-c", steps], env=env, cwd=project)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert git(suite, "rev-parse", "HEAD") == head
    assert sections(res.stdout) == [("start", "suite"), ("end", "suite"), ("start", "build"),
                                    ("end", "build"), ("start", "test"), ("end", "test")]
    binary = Path((out / "qemu-path").read_text().strip())
    assert binary.is_absolute() and binary.name == "qemu-system-arm" and binary.exists()
    assert "build-qemu:" in (out / "build.log").read_text()
    assert '"wiring_patch"' in (out / "BUILDINFO.json").read_text()
    root = ET.parse(out / "junit.xml").getroot()
    props = {p.get("name"): p.get("value", "") for p in root.iter("property")}
    assert head.startswith(props["suite_version"]) and len(props["suite_version"]) >= 7
    assert props["qemu_binary"] == str(binary.resolve()) and props["wiring"] == "suite"
    cases = list(root.iter("testcase"))
    assert cases and any("ivposition" in c.get("name", "") for c in cases)
    assert all(len(c) == 0 for c in cases), "a selected test did not pass"
