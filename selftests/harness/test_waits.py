"""One wait primitive, one contract: ivflat.host.timeouts.wait_for (issue 22).

Why: waits with a meaning each (one scaling its bound, one expecting a scaled one, one
raising a protocol error) are each right alone and wrong together. These pin the one
contract every wait shares: the bound is scaled once, here; expiry raises WaitTimeout (a
TimeoutError and an IvflatError) saying the bound and what it saw; *stop* ends the wait
early; a Condition wakes it without polling.
"""

from __future__ import annotations

import threading
import time

import pytest

from ivflat.errors import IvflatError
from ivflat.host import timeouts


def test_expiry_says_the_scaled_bound_and_what_it_saw_then():
    """*what* is asked at expiry (it can report the state then), the bound in the message
    is the base times the scale factor, and the error is both a TimeoutError and an
    IvflatError."""
    asked = []

    def what() -> str:
        asked.append(1)
        return f"have {len(asked)}"

    with pytest.raises(timeouts.WaitTimeout) as info:
        timeouts.wait_for(lambda: False, 0.02, what)
    assert str(info.value) == f"after {timeouts.scaled(0.02):.3g}s: have 1"
    assert isinstance(info.value, TimeoutError) and isinstance(info.value, IvflatError)


def test_the_bound_is_scaled_once_by_wait_for(monkeypatch):
    """A base bound of 0.05 s under a scale of 4 waits 0.2 s: the caller passes the base."""
    monkeypatch.setenv(timeouts.ENV, "4")
    monkeypatch.setattr(timeouts, "_scale", None)
    start = time.monotonic()
    with pytest.raises(timeouts.WaitTimeout, match=r"^after 0\.2s: "):
        timeouts.wait_for(lambda: False, 0.05, "never")
    assert time.monotonic() - start >= 0.2


def test_stop_ends_the_wait_early_and_says_so():
    """False (not a timeout) when *stop* holds before *pred*; True when *pred* holds."""
    assert timeouts.wait_for(lambda: False, 100, "x", stop=lambda: True) is False
    assert timeouts.wait_for(lambda: True, 100, "x", stop=lambda: True) is True


def test_a_condition_wakes_the_wait_without_polling():
    """With *cond*, a notify ends the wait; no poll interval is involved (the bound is
    huge, and the test's own timeout would catch a wait that slept it out)."""
    cond = threading.Condition()
    state = {"ready": False}

    def later() -> None:
        with cond:
            state["ready"] = True
            cond.notify_all()

    timer = threading.Timer(0.05, later)
    timer.start()
    try:
        start = time.monotonic()
        assert timeouts.wait_for(lambda: state["ready"], 10_000, "ready", cond=cond)
        assert time.monotonic() - start < timeouts.scaled()
    finally:
        timer.cancel()
        timer.join()


def test_block_is_given_the_time_left():
    """*block(left)* is the event source (a read, a select): called with what remains of
    the bound, never more."""
    lefts: list[float] = []
    timeouts.wait_for(lambda: len(lefts) >= 3, 5, "three blocks", block=lefts.append)
    bound = timeouts.scaled(5)
    assert len(lefts) == 3 and all(0 < left <= bound for left in lefts)
