"""The GitLab CI job a QEMU fork includes (ci/gitlab/ivshmem-flat.yml): parsed, and its
steps run locally in order, as GitLab's shell runner runs them (one bash, set -eo pipefail,
the job's variables in the environment, expanded in order).

Why: a CI definition nobody runs rots silently (a renamed option, a path the artifacts
miss); the run uses a tiny selection (-k test_ivposition) and a QEMU tree whose build is in
the cache (Debian's source as a git repository), so it costs seconds once built.
"""

from __future__ import annotations

import os
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from ivflat.ci.proc import UserError
from ivflat.ci.workclone import debian_base_repo
from ivflat.paths import REPO, cache_dir
from ivflat.timeouts import scaled

from .tools import TOOL_TIMEOUT, run_tool

JOB_FILE = REPO / "ci" / "gitlab" / "ivshmem-flat.yml"


def job() -> dict:
    (name, spec), = yaml.safe_load(JOB_FILE.read_text()).items()
    assert name == "ivshmem-flat"
    return spec


def test_job_definition_keeps_junit_and_artifacts() -> None:
    spec = job()
    assert spec["artifacts"]["when"] == "always"
    assert spec["artifacts"]["reports"]["junit"] == "ivshmem-flat/junit.xml"
    assert "ivshmem-flat/" in spec["artifacts"]["paths"]
    script = "\n".join(spec["script"])
    assert "ci/build-qemu --source \"$CI_PROJECT_DIR\"" in script
    assert "--junitxml=\"$IVSHMEM_OUT/junit.xml\"" in script
    assert "--keep-artifacts=\"$IVSHMEM_OUT/artifacts\"" in script
    assert spec["variables"]["IVSHMEM_OUT"] == "$CI_PROJECT_DIR/ivshmem-flat"


def job_env(overrides: dict[str, str]) -> dict[str, str]:
    """The job's variables, overridden like pipeline variables, $VARs expanded in order."""
    env = dict(os.environ, **{k: v for k, v in overrides.items() if k == "CI_PROJECT_DIR"})
    for key, value in job()["variables"].items():
        if key in overrides:
            env[key] = overrides[key]
            continue
        for name, val in env.items():
            value = str(value).replace(f"${name}", val)
        env[key] = value
    return env


@pytest.mark.slow
@pytest.mark.timeout(int(scaled(TOOL_TIMEOUT)))
def test_job_steps_run_in_order_locally(tmp_path: Path) -> None:
    """before_script + script in one bash, on a clone of Debian's QEMU source (as the
    fork's checkout) with this checkout as the suite: exit 0, the build reused, JUnit with
    the selected tests passed, BUILDINFO and the build log kept for the artifacts."""
    try:
        base = debian_base_repo()
    except UserError as exc:
        pytest.skip(str(exc))
    project = tmp_path / "qemu-fork"
    subprocess.run(["git", "clone", "-q", "--shared", str(base), str(project)], check=True)
    out = tmp_path / "out"
    env = job_env({"CI_PROJECT_DIR": str(project), "IVSHMEM_SUITE_DIR": str(REPO),
                   "IVSHMEM_SUITE_CACHE": str(cache_dir()), "IVSHMEM_OUT": str(out),
                   "IVSHMEM_SKIP_INSTALL": "1", "PYTEST_ARGS": "-k test_ivposition"})
    spec = job()
    steps = "\n".join([*spec["before_script"], *spec["script"]])
    res = run_tool(["bash", "-eo", "pipefail", "-c", steps], env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert Path((out / "qemu-path").read_text().strip()).name == "qemu-system-arm"
    assert "build-qemu:" in (out / "build.log").read_text()
    assert '"wiring_patch"' in (out / "BUILDINFO.json").read_text()
    cases = list(ET.parse(out / "junit.xml").iter("testcase"))
    assert cases and any("ivposition" in c.get("name", "") for c in cases)
    assert all(len(c) == 0 for c in cases), "a selected test did not pass"
