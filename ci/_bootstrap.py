"""Make ``import ivflat`` find the harness of *this* checkout (its ``fixtures/``).

Imported first by every ci/ script (Python puts the script's own directory, ci/, on the
path). Why not rely on ``pip install -e .`` alone: that records one checkout's path, so a
script of a second clone (a worktree, CI's clone) would run another checkout's library.
pytest gets the same from ``pythonpath`` in pyproject.toml.
"""

import sys
from pathlib import Path

FIXTURES = str(Path(__file__).resolve().parents[1] / "fixtures")
if FIXTURES not in sys.path:
    sys.path.insert(0, FIXTURES)
