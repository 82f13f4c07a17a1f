"""The suite's own rules, each checked: a test that writes in the repository's artifacts/ fails, naming what it
touched (conftest.py).

    python -m pytest -q tests/test_suite.py
"""
import os
import re

from conftest import artifacts_files, artifacts_touched
from helpers import ROOT


def test_a_file_written_in_the_repos_artifacts_is_found_named_and_so_is_one_changed_or_removed(tmp_path):
    before = artifacts_files()
    trace = ROOT / "artifacts" / f"out_{os.getpid()}.gif"  # what a trace left before the rule
    trace.write_bytes(b"GIF89a")
    try:
        assert artifacts_touched(before, artifacts_files()) == [str(trace)]
        written = artifacts_files()
        os.utime(trace, ns=(0, 0))  # the same name, written again
        assert artifacts_touched(written, artifacts_files()) == [str(trace)]
    finally:
        trace.unlink()  # gone again: the rule sees nothing of this test
    assert artifacts_touched(written, artifacts_files()) == [str(trace)]  # removed
    assert artifacts_touched(before, artifacts_files()) == []
    (tmp_path / "artifacts").mkdir()  # a temp folder's artifacts/ is the test's own
    assert artifacts_touched(before, artifacts_files()) == []

