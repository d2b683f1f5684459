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

import itertools
import os
import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # no stubs installed: PyYAML gives Any

from ivflat.ci.workclone import debian_base_repo
from ivflat.errors import UserError
from ivflat.host.paths import REPO, cache_dir, reference_dir
from ivflat.host.timeouts import scaled

from .tools import TOOL_TIMEOUT, git, run_tool

GITLAB = REPO / "ci" / "gitlab"
JOB_FILE = GITLAB / "ivshmem-flat.yml"
STANDALONE = GITLAB / "ivshmem-flat-standalone.yml"
QEMU_GIT = os.environ.get("IVSHMEM_QEMU_GIT")
NO_QEMU_GIT = "needs $IVSHMEM_QEMU_GIT (a QEMU clone) for QEMU's own CI files"
SECTION_START = re.compile(r"section_start:\d+:(\w+)\r\x1b\[0K(.*)")
SECTION_END = re.compile(r"section_end:\d+:(\w+)\r\x1b\[0K")
VAR_REF = re.compile(r"\$(?:(\w+)|\{(\w+)\})")


def qemu_file(path: str) -> str:
    if not QEMU_GIT:
        pytest.skip(NO_QEMU_GIT)
    return git(Path(QEMU_GIT).expanduser(), "show", f"master:{path}")


def merged(base: Any, over: Any) -> Any:
    """GitLab's ``extends`` merge: mappings deeply, anything else replaced by *over*."""
    if isinstance(base, dict) and isinstance(over, dict):
        return {**base, **{k: merged(base.get(k), v) for k, v in over.items()}}
    return over


def definitions(base: str | None = None) -> dict[str, Any]:
    """The job file's definitions over .base_job_template from *base* (YAML text), else
    from the standalone file."""
    return {**yaml.safe_load(base if base is not None else STANDALONE.read_text()),
            **yaml.safe_load(JOB_FILE.read_text())}


def ancestors(name: str) -> list[str]:
    """Every definition job *name* extends, directly or not."""
    parents = definitions()[name].get("extends", [])
    parents = [parents] if isinstance(parents, str) else parents
    return [*parents, *(a for p in parents for a in ancestors(p))]


def resolved(name: str, base: str | None = None) -> dict[str, Any]:
    """Job *name* with its ``extends`` applied; .base_job_template from *base* (YAML text),
    else from the standalone file."""
    defs = definitions(base)

    def resolve(spec: dict[str, Any]) -> dict[str, Any]:
        parents = spec.get("extends", [])
        out: dict[str, Any] = {}
        for parent in [parents] if isinstance(parents, str) else parents:
            out = merged(out, resolve(defs[parent]))
        out = merged(out, {k: v for k, v in spec.items() if k != "extends"})
        return out
    return resolve(defs[name])


def matrix_cells(name: str) -> list[dict[str, str]]:
    """The variables of each job GitLab makes of job *name*'s ``parallel:matrix``: per
    entry, every combination of its variables' values (a single value is a list of one)."""
    cells = []
    for entry in resolved(name)["parallel"]["matrix"]:
        values = [v if isinstance(v, list) else [v] for v in entry.values()]
        cells += [dict(zip(entry, combo, strict=True)) for combo in itertools.product(*values)]
    return cells


def expand(value: str, env: dict[str, str]) -> str:
    """*value* with its $VAR / ${VAR} of *env* replaced, as GitLab's runner expands a
    job's variables (one that *env* lacks stays as written)."""
    return VAR_REF.sub(lambda m: env.get(m[1] or m[2], m[0]), value)


def job_env(overrides: dict[str, str], job: str = "ivshmem-flat",
            cell: dict[str, str] | None = None) -> dict[str, str]:
    """Job *job*'s variables (with its matrix *cell*'s), overridden like pipeline
    variables, $VARs expanded in order."""
    env = dict(os.environ, **{k: v for k, v in overrides.items() if k == "CI_PROJECT_DIR"},
               **(cell or {}))
    for key, value in resolved(job)["variables"].items():
        env[key] = overrides[key] if key in overrides else expand(str(value), env)
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
    for name in ("ivshmem-flat", "ivshmem-flat-matrix", "ivshmem-flat-container"):
        assert ".base_job_template" in ancestors(name)
        assert ".ivshmem_flat_vars" in ancestors(name)
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


def test_matrix_runs_the_jobs_lines_per_tree_and_flavour() -> None:
    """ivshmem-flat-matrix expands to the 6 cells (3 trees x 2 flavours), runs the test
    job's very lines (one definition), and gives each cell its own output directory,
    artifacts, JUnit report and ccache, so no cell's files hide another's."""
    cells = matrix_cells("ivshmem-flat-matrix")
    assert sorted((c["IVSHMEM_TREE"], c["IVSHMEM_FLAVOUR"]) for c in cells) == sorted(
        itertools.product(["reference", "master", "series"], ["default", "sanitize"]))
    matrix, single = resolved("ivshmem-flat-matrix"), resolved("ivshmem-flat")
    for key in ("image", "needs", "timeout", "before_script", "script"):
        assert matrix[key] == single[key], key
    assert matrix["cache"]["when"] == "always" and matrix["artifacts"]["when"] == "always"
    assert single["variables"]["IVSHMEM_TREE"] == "series"
    assert single["variables"]["IVSHMEM_FLAVOUR"] == "default"
    project = "/builds/qemu"
    outs, keys = set(), set()
    for cell in cells:
        env = job_env({"CI_PROJECT_DIR": project}, "ivshmem-flat-matrix", cell)
        rel = f"ivshmem-flat-{cell['IVSHMEM_TREE']}-{cell['IVSHMEM_FLAVOUR']}"
        assert env["IVSHMEM_OUT"] == f"{project}/{rel}"
        assert [expand(p, env) for p in matrix["artifacts"]["paths"]] == [f"{rel}/"]
        assert expand(matrix["artifacts"]["reports"]["junit"], env) == f"{rel}/junit.xml"
        outs.add(env["IVSHMEM_OUT"])
        keys.add(expand(matrix["cache"]["key"], env))
    assert len(outs) == len(keys) == len(cells) == 6


def build_args(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """The build section's lines before ci/build-qemu, run in bash with *env*; stdout is
    then the arguments ci/build-qemu gets (before --print-binary), one a line."""
    script = resolved("ivshmem-flat-matrix")["script"]
    start = script.index(next(ln for ln in script if ln.startswith("section_start build")))
    build = script.index(next(ln for ln in script if ln.startswith("ci/build-qemu ")))
    assert script[build].startswith('ci/build-qemu "${build_args[@]}" --print-binary ')
    echo = "for a in \"${build_args[@]}\"; do printf '%s\\n' \"$a\"; done"
    steps = [*script[start + 1:build], echo]
    return subprocess.run(["bash", "-eo", "pipefail", "-c", "\n".join(steps)], env=env,
                          cwd=cwd, capture_output=True, text=True)


def test_matrix_cells_build_their_tree(tmp_path: Path) -> None:
    """Each cell's build arguments: reference ci/build-qemu's default source, series the
    pipeline's checkout, master upstream's master branch fetched into that checkout (from
    QEMU_UPSTREAM, here a local repository whose other branch must not be taken); sanitize
    adds --sanitize. An unknown tree stops the job (exit 2), saying so."""
    project, upstream = tmp_path / "fork", tmp_path / "upstream"
    for repo in (project, upstream):
        git(tmp_path, "init", "-q", "-b", "master", str(repo))
        git(repo, "commit", "-q", "--allow-empty", "-m", f"{repo.name}")
    master = git(upstream, "rev-parse", "HEAD")
    git(upstream, "checkout", "-q", "-b", "next")
    git(upstream, "commit", "-q", "--allow-empty", "-m", "not master")
    src = ["--source", str(project)]
    want = {"reference": [], "series": src, "master": [*src, "--rev", "FETCH_HEAD"]}
    for cell in matrix_cells("ivshmem-flat-matrix"):
        env = job_env({"CI_PROJECT_DIR": str(project), "QEMU_UPSTREAM": str(upstream)},
                      "ivshmem-flat-matrix", cell)
        res = build_args(env, tmp_path)
        assert res.returncode == 0, (cell, res.stderr)
        flavour = [] if cell["IVSHMEM_FLAVOUR"] == "default" else ["--sanitize"]
        assert res.stdout.splitlines() == [*want[cell["IVSHMEM_TREE"]], *flavour], cell
    assert git(project, "rev-parse", "FETCH_HEAD") == master
    bad = job_env({"CI_PROJECT_DIR": str(project)}, "ivshmem-flat-matrix",
                  {"IVSHMEM_TREE": "stable", "IVSHMEM_FLAVOUR": "default"})
    res = build_args(bad, tmp_path)
    assert res.returncode == 2 and "IVSHMEM_TREE is stable, not reference" in res.stdout


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


def run_locally(tmp_path: Path, job: str, cell: dict[str, str] | None,
                overrides: dict[str, str]) -> tuple[Path, str]:
    """Job *job*'s before_script + script in one bash, on a clone of Debian's QEMU source
    (as the fork's checkout), the suite cloned at this checkout's HEAD commit (the pinned
    ref), `-k test_ivposition`; checks exit 0, the suite's commit and the sections, and
    returns the output directory (IVSHMEM_OUT) and that commit."""
    try:
        base = debian_base_repo()
    except UserError as exc:
        pytest.skip(str(exc))
    project = tmp_path / "qemu-fork"
    subprocess.run(["git", "clone", "-q", "--shared", str(base), str(project)], check=True)
    suite = tmp_path / "suite"
    head = git(REPO, "rev-parse", "HEAD")
    env = job_env({"CI_PROJECT_DIR": str(project), "IVSHMEM_SUITE_DIR": str(suite),
                   "IVSHMEM_SUITE_URL": str(REPO), "IVSHMEM_SUITE_REF": head,
                   "IVSHMEM_SUITE_CACHE": str(cache_dir()),
                   "PYTEST_ARGS": "-k test_ivposition", **overrides}, job, cell)
    assert env["IVSHMEM_SKIP_INSTALL"] == "1"
    spec = resolved(job)
    steps = "\n".join([*spec["before_script"], *spec["script"]])
    res = run_tool(["bash", "-eo", "pipefail", "-c", steps], env=env, cwd=project)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert git(suite, "rev-parse", "HEAD") == head
    assert sections(res.stdout) == [("start", "suite"), ("end", "suite"), ("start", "build"),
                                    ("end", "build"), ("start", "test"), ("end", "test")]
    return Path(env["IVSHMEM_OUT"]), head


def check_outputs(out: Path, head: str) -> Path:
    """The artifacts of a job run in *out*: the binary's path from --print-binary, the
    build log, BUILDINFO, JUnit with the selected tests passed and the properties naming
    that QEMU and the suite's commit *head*. Returns the binary."""
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
    return binary


@pytest.mark.slow
@pytest.mark.timeout(int(scaled(TOOL_TIMEOUT)))
def test_job_steps_run_in_order_locally(tmp_path: Path) -> None:
    """The test job's before_script + script run locally (see run_locally) on the fork's
    checkout: exit 0, the build reused, its path from --print-binary, timed sections, JUnit
    with the selected tests passed and the properties naming the QEMU and the suite's
    commit, BUILDINFO and the build log kept for the artifacts."""
    out, head = run_locally(tmp_path, "ivshmem-flat", None, {"IVSHMEM_OUT": str(tmp_path / "out")})
    check_outputs(out, head)


@pytest.mark.slow
@pytest.mark.timeout(int(scaled(TOOL_TIMEOUT)))
def test_matrix_reference_cell_runs_locally(tmp_path: Path) -> None:
    """The matrix's reference/default cell, its lines run locally as the test job's are:
    it builds ci/build-qemu's default source (Debian's 10.0.x: the cached reference
    build, not the fork's checkout) and writes everything into its own directory."""
    cell = {"IVSHMEM_TREE": "reference", "IVSHMEM_FLAVOUR": "default"}
    out, head = run_locally(tmp_path, "ivshmem-flat-matrix", cell, {})
    assert out == tmp_path / "qemu-fork" / "ivshmem-flat-reference-default"
    binary = check_outputs(out, head)
    assert binary.resolve() == (reference_dir() / "qemu-system-arm").resolve()
