"""The capability probe classifies every kind of binary the suite meets, and bad --qemu
input is a clear usage error, not a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ivflat.device.wirings import classify, semantics
from ivflat.host import timeouts
from ivflat.host.paths import REPO, reference_tool
from ivflat.qemu.probe import ProbeError, probe, probe_uncached

DEBIAN_QEMU = Path("/usr/bin/qemu-system-arm")
REFERENCE = reference_tool("qemu-system-arm")  # before a test moves the cache away
_needs_reference = pytest.mark.skipif(REFERENCE is None,
                                      reason="no reference build: run ci/build-qemu")


def _debian_10() -> bool:
    if not DEBIAN_QEMU.exists():
        return False
    out = subprocess.run([str(DEBIAN_QEMU), "--version"], capture_output=True, text=True)
    return "version 10." in out.stdout


@pytest.mark.skipif(not _debian_10(), reason="Debian's qemu-system-arm 10.0.x is not "
                    "installed (ci/install-deps installs it from bookworm-backports)")
def test_debian_stock_binary_is_type_only():
    """Debian 10.0.x: the type exists (props chardev, shmem-size) but is not creatable,
    not wired, and there is no qtest accelerator; the skip reason says all that."""
    caps = probe_uncached(DEBIAN_QEMU)
    assert caps.version.startswith("10.0")
    assert caps.has_device_type
    assert not caps.user_creatable
    assert not caps.wired
    assert not caps.qtest_accel
    assert {"chardev", "shmem-size"} <= set(caps.properties)
    assert caps.device_skip_reason is not None and caps.qtest_skip_reason is not None
    assert "not user-creatable" in caps.device_skip_reason
    assert "ci/build-qemu" in caps.device_skip_reason
    assert "no qtest accelerator" in caps.qtest_skip_reason


@_needs_reference
def test_reference_build_is_wired_with_qtest():
    """The reference build is what the catalogue judges: the probe finds the device
    user-creatable, wired with the suite's wiring and every property, with the qtest
    accelerator, and no reason to skip."""
    assert REFERENCE is not None
    caps = probe_uncached(REFERENCE)
    assert caps.has_device_type and caps.user_creatable and caps.wired and caps.qtest_accel
    assert caps.missing_props == []
    assert caps.device_skip_reason is None and caps.qtest_skip_reason is None
    assert caps.wiring == "suite"


def test_wiring_classified_by_its_realize_error():
    """The suite's wiring checks the addresses before the server; the upstream series'
    (v3) connects to the server first: their errors for `-device ivshmem-flat` alone."""
    ours = ("qemu-system-arm: -device ivshmem-flat: ivshmem-flat: property "
            "x-bus-address-iomem must be set to map the device registers")
    series = ("qemu-system-arm: -device ivshmem-flat: ivshmem server socket not specified "
              "or incorret. Can't create device.")
    assert classify(ours) == "suite" and classify(series) == "series"
    assert semantics("series").refuses_overlap and semantics("suite").refuses_overlap is None


def test_missing_path_is_a_clear_error(tmp_path):
    """A --qemu that does not exist is a ProbeError that says so, not a traceback from deep
    in a subprocess."""
    with pytest.raises(ProbeError, match="no such file"):
        probe_uncached(tmp_path / "qemu-system-arm")


def test_non_qemu_binary_is_a_clear_error():
    """A binary that is not a QEMU system emulator is refused as such, instead of being
    probed into nonsense capabilities."""
    with pytest.raises(ProbeError, match="not a QEMU system emulator"):
        probe_uncached(Path("/bin/true"))


def test_non_arm_qemu_is_a_clear_error(tmp_path):
    """A QEMU of another target (stood in for by a script answering like one, since no
    other qemu-system-* is installed) is refused for lacking mps2-an385."""
    fake = tmp_path / "qemu-system-riscv32"
    fake.write_text('#!/bin/sh\ncase "$*" in\n  --version) echo "QEMU emulator version '
                    '10.0.0";;\n  *) echo "Supported machines are:"; echo "virt  RISC-V";;\n'
                    'esac\n')
    fake.chmod(0o755)
    with pytest.raises(ProbeError, match="no mps2-an385 machine"):
        probe_uncached(fake)


@pytest.mark.parametrize("bad", ["/nonexistent/qemu-system-arm", "/bin/true"])
def test_pytest_reports_bad_qemu_as_usage_error(bad):
    """`pytest --qemu BAD` exits with pytest's usage-error status and one clear line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    res = subprocess.run([sys.executable, "-m", "pytest", f"--qemu={bad}", "-q",
                          "selftests/harness/test_probe.py::test_missing_path_is_a_clear_error"],
                         cwd=REPO, capture_output=True, text=True, env=env,
                         timeout=timeouts.scaled(120))
    assert res.returncode == 4, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    assert bad in res.stderr and ("no such file" in res.stderr or "not a QEMU" in res.stderr)


@pytest.fixture
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty suite cache of this test's own (the probe cache lives there)."""
    monkeypatch.setenv("IVSHMEM_SUITE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@_needs_reference
def test_corrupt_cache_entry_is_probed_again(private_cache):
    """A cache entry that does not parse (an older layout, a half-written edit) means
    "probe again", never a crash of pytest's start-up; the entry is then repaired."""
    ref = REFERENCE
    assert ref is not None
    good = probe(ref)
    cache = private_cache / "probe-cache.json"
    entries = json.loads(cache.read_text())
    (key,) = entries
    entries[key] = {"binary": str(ref), "wired": "yes"}
    cache.write_text(json.dumps(entries))
    assert probe(ref) == good
    assert json.loads(cache.read_text())[key]["properties"] == list(good.properties)
    cache.write_text("{ not json")
    assert probe(ref) == good


@_needs_reference
def test_transient_probe_failure_is_not_cached(private_cache, tmp_path):
    """The qtest-accelerator probe killed by a signal (as the OOM killer would) answers
    "no qtest" for this run only: once the machine recovers, the next probe finds it."""
    flag = tmp_path / "oom"
    flag.touch()
    wrapper = tmp_path / "qemu-system-arm"
    wrapper.write_text(f"""#!/bin/sh
case "$*" in *"-accel qtest"*) [ -e "{flag}" ] && kill -KILL $$;; esac
exec "{REFERENCE}" "$@"
""")
    wrapper.chmod(0o755)
    assert not probe(wrapper).qtest_accel
    flag.unlink()
    assert probe(wrapper).qtest_accel


_PROBE_CHILD = """
import json, os, sys
from dataclasses import asdict
from pathlib import Path
import ivflat.qemu.probe

binary, start_gate, store_gate = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
store = ivflat.qemu.probe._store

def store_together(*args):  # the real store, entered by all children at once
    print("probed", flush=True)
    os.read(store_gate, 1)
    store(*args)

ivflat.qemu.probe._store = store_together
print("ready", flush=True)
os.read(start_gate, 1)  # barrier: EOF for all once the parent closes its end
print(json.dumps(asdict(ivflat.qemu.probe.probe(binary))))
"""


def _release(procs: list[subprocess.Popen[str]], line: str, gate: int,
             fds: set[int]) -> None:
    """Once every child has printed *line* (it then waits on *gate*), close *gate* (the
    write end, one of *fds*): all of them go on at once."""
    for p in procs:
        assert p.stdout is not None
        got = p.stdout.readline()
        assert got == line, (got, p.communicate(timeout=timeouts.scaled()))
    fds.remove(gate)
    os.close(gate)


@_needs_reference
def test_concurrent_probes_share_one_valid_cache(private_cache, tmp_path):
    """Processes probing at once with an empty cache (xdist workers at start-up), two of
    them per binary and three binaries, all storing their answer at the same moment: every
    process gets its binary's answer, and the cache is valid JSON with exactly one entry
    per binary (the lock keeps one writer's read-modify-write from dropping another's
    entry) and no temporary file left."""
    wrappers = [tmp_path / f"qemu-{i}" for i in range(2)]  # other binaries (cache keys)
    for w in wrappers:
        w.write_text(f'#!/bin/sh\nexec "{REFERENCE}" "$@"\n')
        w.chmod(0o755)
    binaries = [b for b in (REFERENCE, *wrappers) for _ in range(2)]
    env = {**os.environ, "PYTHONPATH": str(REPO / "fixtures")}
    start_r, start_w = os.pipe()
    store_r, store_w = os.pipe()
    fds = {start_r, start_w, store_r, store_w}  # still open
    procs: list[subprocess.Popen[str]] = []
    try:
        procs += [subprocess.Popen(
            [sys.executable, "-c", _PROBE_CHILD, str(b), str(start_r), str(store_r)],
            env=env, pass_fds=[start_r, store_r], stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for b in binaries]
        for fd in (start_r, store_r):  # the children hold them
            fds.remove(fd)
            os.close(fd)
        _release(procs, "ready\n", start_w, fds)
        _release(procs, "probed\n", store_w, fds)
        results = [p.communicate(timeout=timeouts.scaled(None, timeouts.START))
                   for p in procs]
    finally:
        for fd in fds:
            os.close(fd)
        for p in procs:
            p.kill()
            p.wait()
    for p, (_, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err
    answers = [json.loads(out) for out, _ in results]
    assert answers[0::2] == answers[1::2], answers
    assert all(a["wired"] and a["qtest_accel"] for a in answers), answers
    entries = json.loads((private_cache / "probe-cache.json").read_text())
    assert sorted(e["binary"] for e in entries.values()) == sorted(
        str(Path(b).resolve()) for b in binaries[::2]), entries
    assert {json.dumps(e, sort_keys=True) for e in entries.values()} == \
        {json.dumps(a, sort_keys=True) for a in answers}
    assert not [f.name for f in private_cache.iterdir() if f.suffix == ".tmp"]
