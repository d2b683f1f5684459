"""Progress lines of the tools' long steps (issue 21, item 3): what they say, from real
ninja and pytest output, and their cadence -- on an injectable clock and interval, never
by waiting out a minute of wall clock.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from ivflat.ci import progress
from ivflat.ci.bisect import ROUGHLY, eta
from ivflat.errors import UserError
from ivflat.host.timeouts import scaled


def ninja_log(tmp_path: Path, n: int = 4) -> Path:
    """The stdout of a real ninja build of *n* outputs (not a terminal: one line each)."""
    if shutil.which("ninja") is None:
        pytest.skip("ninja not installed (ci/install-deps)")
    d = tmp_path / "b"
    d.mkdir()
    outs = " ".join(f"o{i}" for i in range(n))
    (d / "build.ninja").write_text("rule touch\n  command = touch $out\n"
                                   + "".join(f"build o{i}: touch\n" for i in range(n))
                                   + f"default {outs}\n")
    log = tmp_path / "build.log.stdout"
    with open(log, "w") as fh:
        subprocess.run(["ninja", "-C", str(d), "-j1"], stdout=fh, check=True,
                       timeout=scaled(60))
    return log


def test_ninja_marks_read_from_a_real_build_log(tmp_path: Path) -> None:
    """The last ``[n/N]`` mark of a real ninja log gives how far the build is, finished or
    cut off one output in."""
    log = ninja_log(tmp_path)
    assert progress.how_far([log]) == "[4/4] 100% built"
    text = log.read_text()
    assert text.startswith("ninja: Entering directory")
    log.write_text(text[:text.index("[2/4]")])  # the log as it was one output in
    assert progress.how_far([log]) == "[1/4] 25% built"


def test_pytest_marks_read_from_a_real_run(tmp_path: Path) -> None:
    """The percentage of a real pytest run's output gives how far the tests are."""
    (tmp_path / "test_a.py").write_text("def test_1(): pass\ndef test_2(): pass\n")
    log = tmp_path / "pytest.log"
    with open(log, "w") as fh:
        subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                        "-p", "no:xdist", "-o", "console_output_style=progress", str(tmp_path)],
                       stdout=fh, cwd=tmp_path, timeout=scaled(120))
    assert progress.how_far([log]) == "tests 100% done"


def test_line_says_time_progress_and_log(tmp_path: Path) -> None:
    """A progress line says what runs, for how long, the caller's own figure and the newest
    mark of the logs that exist, then where the log is."""
    log = ninja_log(tmp_path)
    now = [100.0]
    p = progress.Progress("building", [tmp_path / "absent", log], clock=lambda: now[0],
                          extra=lambda: "step 3")
    now[0] += 61
    assert p.line() == (f"building: still running (1m01s so far, step 3, [4/4] 100% built); "
                        f"log: {log}")


def _collect(n: int) -> tuple[list[str], threading.Event, Callable[[str], None]]:
    """A ticker's output: the lines, an event set once *n* have come, the out function."""
    lines: list[str] = []
    enough = threading.Event()

    def out(line: str) -> None:
        lines.append(line)
        if len(lines) >= n:
            enough.set()

    return lines, enough, out


def test_ticks_every_interval_until_the_block_ends(tmp_path: Path) -> None:
    """A real ticker thread at a short interval: lines come while the block runs and
    stop with it."""
    lines, three, out = _collect(3)
    with progress.ticking("testing", [tmp_path / "pytest.log"], every=0.01, out=out):
        assert three.wait(scaled(30)), f"only {lines} in {scaled(30)}s"
    seen = len(lines)
    assert all(ln.startswith("testing: still running (") for ln in lines)
    assert all(ln.endswith(f"log: {tmp_path / 'pytest.log'}") for ln in lines)
    assert "ivflat-progress" not in {t.name for t in threading.enumerate()}
    assert len(lines) == seen  # nothing after the block


def test_a_nested_ticker_is_silent(tmp_path: Path) -> None:
    """A build's ticker inside bisect's own says nothing: one progress line at a time."""
    inner: list[str] = []
    _outer, two, out = _collect(2)
    with progress.ticking("ci/bisect", [], every=0.01, out=out), \
            progress.ticking("building", [], every=0.01, out=inner.append):
        assert two.wait(scaled(30))
    assert inner == []


def test_interval_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The interval is 60 s by default, 0 (no lines) when the environment says so, and a
    value that is not a number is a UserError naming the variable."""
    monkeypatch.delenv(progress.ENV, raising=False)
    assert progress.interval() == 60
    monkeypatch.setenv(progress.ENV, "0")
    assert progress.interval() == 0
    monkeypatch.setenv(progress.ENV, "soon")
    with pytest.raises(UserError, match=progress.ENV):
        progress.interval()


def test_bisect_step_count_and_time_left(tmp_path: Path) -> None:
    """ci/bisect reads git's step estimate and says which step runs, how many are left and,
    once steps have been timed (their build and test times), about how long the rest take."""
    line = "Bisecting: 6 revisions left to test after this (roughly 3 steps)"
    m = ROUGHLY.search(line)
    assert m and m.group(1) == "3"
    assert progress.bisect_eta([], 3) == "step 1, about 3 more after it"
    assert progress.bisect_eta([100, 200], 3) == (
        "step 3, about 3 more after it, ~10m00s to go at 2m30s a step")
    (tmp_path / "steps.jsonl").write_text(
        '{"commit": "a", "build_s": 50, "test_s": 10}\n{"commit": "b", "build_s": 30}\n')
    assert eta(tmp_path, 1) == "step 3, about 1 more after it, ~1m30s to go at 45s a step"


def test_only_the_current_phase_is_read(tmp_path: Path) -> None:
    """A step that is testing shows no build progress (its build log's last [N/M] would
    claim the step is still building)."""
    built = ninja_log(tmp_path)
    testing = tmp_path / "pytest.log"
    testing.write_text("qtests/test_regs.py ..")
    assert progress.how_far([testing, built]) == ""
    assert progress.how_far([tmp_path / "not-yet", built]) == "[4/4] 100% built"
