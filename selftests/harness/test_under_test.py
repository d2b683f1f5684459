"""Which binary a run judges when the user names one (issue 21, item 2).

``--qemu``, then ``$QEMU``, then QEMU's own ``$QTEST_QEMU_BINARY`` and
``$QEMU_TEST_QEMU_BINARY``; ``~`` expanded in every one, also in ``--qemu=~/x``, where bash
leaves it alone (the README's own commands failed with "no such file"). Judged by
:func:`named_qemu` and :func:`tool_binary` (the ci/ tools') for the order, and by real
inner pytest runs and a real ci/ command for the expansion.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from ivflat.host import timeouts
from ivflat.host.paths import REPO, cache_dir, reference_command, reference_tool
from ivflat.qemu.under_test import QEMU_ENV, named_qemu, reference_binary, tool_binary

TESTS = """
import pytest

@pytest.mark.needs_device
def test_device(dev):
    assert dev.ivposition >= 0
"""


@pytest.mark.parametrize("doc", ["README.md", "docs/running.md"])
def test_docs_give_the_order(doc: str) -> None:
    """The README and docs/running.md say which binary wins in the order of the code:
    ``--qemu``, then :data:`QEMU_ENV` in turn, then the reference build."""
    text = " ".join((REPO / doc).read_text().split())
    assert "wins" in text, doc
    said = text[text.index("wins"):][:400]  # the sentence that says it
    names = ["`--qemu`", *(f"`${v}`" for v in QEMU_ENV), "the reference build"]
    at = [said.find(n) for n in names]
    assert -1 not in at and at == sorted(at), (dict(zip(names, at, strict=True)), said)


@pytest.mark.parametrize("first", ["--qemu", *QEMU_ENV])
def test_first_named_wins(monkeypatch: pytest.MonkeyPatch, first: str) -> None:
    """Each source set together with every later one: the earliest wins."""
    order = ["--qemu", "QEMU", "QTEST_QEMU_BINARY", "QEMU_TEST_QEMU_BINARY"]
    assert list(QEMU_ENV) == order[1:]
    for var in QEMU_ENV:
        monkeypatch.delenv(var, raising=False)
    for name in order[order.index(first):]:
        if name != "--qemu":
            monkeypatch.setenv(name, f"/from/{name}")
    option = "/from/--qemu" if first == "--qemu" else None
    assert named_qemu(option) == Path(f"/from/{first}")


def test_a_tool_takes_the_named_binary_else_the_flavours_reference(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The ci/ tools' rule (tool_binary): --qemu wins; else a variable, for the default
    flavour only (ci/fuzz --sanitize is asked for on the command line, so it beats $QEMU);
    else the flavour's published reference, never PATH. A reference's name and the
    ci/build-qemu line that publishes it come from one place (the fix series adds -fixes)."""
    monkeypatch.setenv("IVSHMEM_SUITE_CACHE", str(tmp_path))
    for var in QEMU_ENV:
        monkeypatch.delenv(var, raising=False)
    assert reference_binary("sanitize") == cache_dir() / "reference-sanitize" / "qemu-system-arm"
    assert reference_binary("sanitize", fixes=True) == \
        tmp_path / "reference-sanitize-fixes" / "qemu-system-arm"
    assert reference_command("sanitize", fixes=True) == "ci/build-qemu --sanitize --with-fixes"
    assert reference_command() == "ci/build-qemu"
    assert tool_binary(None) == tmp_path / "reference" / "qemu-system-arm"
    monkeypatch.setenv("QEMU", "/from/QEMU")
    assert tool_binary(None) == Path("/from/QEMU")
    assert tool_binary(None, "sanitize") == tmp_path / "reference-sanitize" / "qemu-system-arm"
    assert tool_binary("/from/--qemu", "sanitize") == Path("/from/--qemu")
    assert tool_binary("/from/--qemu") == Path("/from/--qemu")


@pytest.mark.parametrize("name", ["--qemu", "QEMU_TEST_QEMU_BINARY"])
def test_tilde_expanded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str) -> None:
    """A binary named with ~, by --qemu or a variable, is found in $HOME: a shell that did
    not expand the ~ (a quoted value, an ini file) still names the right binary."""
    monkeypatch.setenv("HOME", str(tmp_path))
    for var in QEMU_ENV:
        monkeypatch.delenv(var, raising=False)
    if name != "--qemu":
        monkeypatch.setenv(name, "~/q")
    assert named_qemu("~/q" if name == "--qemu" else None) == tmp_path / "q"


@pytest.mark.parametrize("how", ["--qemu=~", "QEMU_TEST_QEMU_BINARY"])
def test_run_on_a_binary_named_with_tilde(plugin_pytester: pytest.Pytester,
                                          monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    """A real run: ``--qemu=~/bin/qemu-system-arm`` (pytester's HOME) runs the device test.
    An empty cache: no reference build to fall back on unnoticed."""
    binary = reference_tool("qemu-system-arm")
    if binary is None:
        pytest.skip("no reference build (ci/build-qemu)")
    home = Path(os.environ["HOME"])  # pytester's own
    monkeypatch.setenv("IVSHMEM_SUITE_CACHE", str(home / "empty-cache"))
    (home / "bin").mkdir()
    (home / "bin" / "qemu-system-arm").symlink_to(binary)
    args = []
    if how == "--qemu=~":
        args.append("--qemu=~/bin/qemu-system-arm")
    else:
        monkeypatch.setenv(how, "~/bin/qemu-system-arm")
    plugin_pytester.makepyfile(TESTS)
    res = plugin_pytester.runpytest_subprocess("-p", "no:cacheprovider", *args,
                                               timeout=timeouts.scaled(base=timeouts.START))
    res.assert_outcomes(passed=1)


def test_ci_path_option_expands_tilde(tmp_path: Path) -> None:
    """A ci/ command's path option: ci/fuzz names the expanded path it could not use."""
    env = {**os.environ, "HOME": str(tmp_path), "IVSHMEM_SUITE_CACHE": str(tmp_path / "c")}
    res = subprocess.run([str(REPO / "ci" / "fuzz"), "--minutes", "1", "--qemu=~/nope"],
                         capture_output=True, text=True, env=env, timeout=timeouts.scaled(60))
    assert res.returncode == 4, res.stderr
    assert f"{tmp_path}/nope does not exist" in res.stderr
