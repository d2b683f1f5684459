"""Options of the self-tests' inner pytest runs of tests that use no Hypothesis (synthetic
tests, the IVPOSITION tests the ci/ tools run on the synthetic history): Hypothesis's
pytest plugin imports Hypothesis at the end of every session (in its
pytest_terminal_summary), whether a test used it or not -- about two thirds of the CPU
time of a small run, and the self-tests start some two hundred of them."""

from __future__ import annotations

INNER_OPTS = ("-p", "no:hypothesispytest")
