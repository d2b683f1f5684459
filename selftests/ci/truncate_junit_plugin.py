"""pytest plugin for the ci/ self-tests: cut the JUnit XML short after pytest wrote it.

What a pytest killed while writing, or a full disk, leaves behind. Given with ``-p
selftests.ci.truncate_junit_plugin``; the tools must treat it as their own failure (abort the
bisect, exit 3), never as "no test failed" or "bad".
"""

from __future__ import annotations

import os

import pytest


@pytest.hookimpl(trylast=True)  # after junitxml's own sessionfinish wrote the file
def pytest_sessionfinish(session: pytest.Session) -> None:
    path = session.config.option.xmlpath
    if path and os.path.exists(path):
        with open(path, "r+b") as fh:
            fh.truncate(os.path.getsize(path) // 2)
