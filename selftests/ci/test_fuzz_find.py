"""ci/fuzz --known-bugs find over all bugs: each failure the model attributes to known bugs
counts as their rediscovery and switches them back on (as is), so one campaign goes on to
find the others instead of finding the easiest one again and again."""

from __future__ import annotations

import io
from pathlib import Path

from ivflat.device.model import AS_IS, FIXED
from ivflat.fuzz import FuzzConfig
from ivflat.fuzz.campaign import Failure, Stats, moved_on


def _failure(diverged: list[str], at: float) -> Failure:
    return Failure(error="AssertionError", program="", diverged=diverged, found_after=at,
                   found_at=at)


def test_rediscovered_bugs_are_switched_back_on() -> None:
    """In find mode the model starts with every bug fixed; each failure it attributes to known
    bugs switches those back on, records when each was first rediscovered, and says so, so the
    campaign goes on to look for the others."""
    config, stats, out = FuzzConfig(binary=Path("q"), mode="find"), Stats(), io.StringIO()
    assert config.bugs == FIXED
    config = moved_on(config, _failure(["version-unchecked"], 6.5), stats, out)
    assert config.bugs == {"version-unchecked"}
    assert stats.rediscovered == {"version-unchecked": 6.5}
    config = moved_on(config, _failure(["version-unchecked", "own-vector-opaque"], 9.0),
                      stats, out)
    assert config.bugs == {"version-unchecked", "own-vector-opaque"}
    assert stats.rediscovered == {"version-unchecked": 6.5, "own-vector-opaque": 9.0}
    assert "rediscovered own-vector-opaque at 9.0s" in out.getvalue()


def test_new_bugs_expect_mode_and_only_change_nothing() -> None:
    """A failure no known bug explains, any failure in expect mode, and one of the bug chosen
    with --only leave the configuration as it was and count no rediscovery: only find mode
    over all bugs switches bugs back on."""
    stats = Stats()
    find = FuzzConfig(binary=Path("q"), mode="find")
    assert moved_on(find, _failure([], 1.0), stats, io.StringIO()) == find  # a new bug
    expect = FuzzConfig(binary=Path("q"), mode="expect")
    assert moved_on(expect, _failure(["version-unchecked"], 1.0), stats,
                    io.StringIO()).bugs == AS_IS
    only = FuzzConfig(binary=Path("q"), mode="find", only="version-unchecked")
    assert moved_on(only, _failure(["version-unchecked"], 1.0), stats,
                    io.StringIO()) == only
    assert stats.rediscovered == {}
