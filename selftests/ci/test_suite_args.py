"""Which tests a tool runs: the catalogue, unless the developer's pytest arguments name
tests of their own (ci/mutants -- qtests/test_fuzz.py: the fuzzer alone)."""

from __future__ import annotations

import pytest

from ivflat.ci.suite import CATALOGUE, catalogue_unless_named, names_tests


@pytest.mark.parametrize("args, named", [
    ([], False),
    (["-k", "test_ivposition", "-n", "2"], False),
    (["--ignore=qtests/test_fuzz.py"], False),
    (["--deselect", "qtests/test_fuzz.py::test_short_profile"], False),
    (["--ignore", "qtests/test_fuzz.py", "-x"], False),
    (["qtests/test_fuzz.py"], True),
    (["-q", "qtests/test_fuzz.py::test_short_profile_finds_nothing_on_the_device_as_it_is"],
     True),
    (["-n", "2", "qtests/"], True),
    (["no-such-file.py"], False),
])
def test_pytest_args_that_name_tests_replace_the_catalogue(args: list[str],
                                                           named: bool) -> None:
    """Arguments that name test files or directories replace the catalogue; options alone
    (-k, -n, --ignore, --deselect, -x) and a path that does not exist filter it."""
    assert names_tests(args) is named
    # what run_suite and the reports put before the arguments
    assert catalogue_unless_named(args) == ([] if named else [CATALOGUE])
    assert catalogue_unless_named(args, None) == []
