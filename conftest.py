"""Load the harness plugin (fixtures/ivflat) from *this* checkout.

Why: ``pip install -e .`` records one checkout's path; with several clones (a bisect
clone, CI's clone, a colleague's worktree) or after that checkout is gone, ``-p
ivflat.plugin.options`` would import the wrong harness or none at all. pytest's
``pythonpath = ["fixtures"]`` (pyproject.toml) puts this checkout's ``fixtures/`` first --
relative to the rootdir, this file's directory -- so ``pytest`` here always tests with the
harness that sits beside the tests, installed or not.
"""

# pytester: the self-tests run real inner pytest sessions of the plugin
pytest_plugins = ("ivflat.plugin.options", "pytester")
