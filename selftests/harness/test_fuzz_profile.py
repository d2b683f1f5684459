"""ci/fuzz --profile's accounting (ivflat.fuzz.profile): a span inside another is charged
to the outer one, the table's rows add up to the wall time, a disabled profile records
nothing."""

from __future__ import annotations

import time

from ivflat.fuzz.profile import REST, Profile


def _busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_nested_spans_are_charged_to_the_outer_one() -> None:
    """A span inside another is charged to the outer one only, and the time no span took
    is its own row, so the table's rows add up to the wall time instead of counting
    nested time twice."""
    prof = Profile(enabled=True)
    with prof.span("settle"):
        _busy(0.01)
        with prof.span("qtest"):
            _busy(0.01)
    with prof.span("qtest"):
        _busy(0.01)
    assert prof.seconds["settle"] >= 0.02 and prof.calls["settle"] == 1
    assert 0.01 <= prof.seconds["qtest"] < prof.seconds["settle"]
    assert prof.calls["qtest"] == 1  # the nested call is the settle's
    wall = sum(prof.seconds.values()) + 0.5
    table = prof.table(wall, steps=10, examples=1)
    rest = [ln for ln in table.splitlines() if ln.startswith(f"| {REST}")]
    assert rest and "| 0.50 |" in rest[0], table
    assert "10 steps, 1 examples" in table


def test_a_disabled_profile_records_nothing() -> None:
    """A profile that is off records no span: a campaign without --profile keeps no
    accounting it did not ask for."""
    prof = Profile()
    with prof.span("x"):
        pass
    assert not prof.seconds and not prof.calls
