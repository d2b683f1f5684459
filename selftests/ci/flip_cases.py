"""Tests whose outcome follows how often they ran, not the QEMU under test.

ci/validate-patch's self-tests (test_validate_verdicts.py) run this module as PYTEST-ARGS to
get a change that reproduces and one that is flaky, deterministically (no timing, no load).
Each test counts its runs in a file of ``$IVSHMEM_TEST_FLIP_DIR`` (unset: it skips).
ci/validate-patch runs the base, then the patched build, then rounds of (base, patched): a
test's odd runs are on the base, its even runs on the patched build. Not named test_*.py: it
runs only when named.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def run_number(name: str) -> int:
    """This run's number for the test *name* (1 for its first run)."""
    where = os.environ.get("IVSHMEM_TEST_FLIP_DIR")
    if not where:
        pytest.skip("IVSHMEM_TEST_FLIP_DIR is not set (ci/validate-patch's self-tests set it)")
    counter = Path(where) / name
    n = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(f"{n}\n")
    return n


def test_steady() -> None:
    """Passes on every run, base and patched: an outcome that never changes, so the tool must
    not re-run it nor name it in the report."""
    assert run_number("steady") >= 1


def test_regresses() -> None:
    """Fails on every patched run: a regression that reproduces in every round."""
    assert run_number("regresses") % 2 == 1, "fails on the patched build"


def test_flaky() -> None:
    """Fails on the first two patched runs only (runs 2 and 4): newly failing, then seen
    again in the first round of re-runs, not in the other two."""
    assert run_number("flaky") not in (2, 4), "failed this time"
