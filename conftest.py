"""Load the harness plugin (fixtures/ivflat) from *this* checkout.

Why: ``pip install -e .`` records one checkout's path; with several clones (a bisect
clone, CI's clone, a colleague's worktree) or after that checkout is gone, ``-p
ivflat.plugin.options`` would import the wrong harness or none at all. Putting this checkout's
``fixtures/`` first makes ``pytest`` here always test with the harness that sits beside
the tests, installed or not.
"""

import sys
from pathlib import Path

_FIXTURES = str(Path(__file__).resolve().parent / "fixtures")
if _FIXTURES not in sys.path:
    sys.path.insert(0, _FIXTURES)

# pytester: the self-tests run real inner pytest sessions of the plugin
pytest_plugins = ("ivflat.plugin.options", "pytester")
