"""The suite's own rules, each checked: a test that writes in the repository's artifacts/ fails, naming what it
touched (conftest.py); every tier a document names is one pytest.ini declares.

    python -m pytest -q tests/test_suite.py
"""
import ast
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


def marker_expressions(text):
    """The pytest -m expressions a text names (`python -m pip` and the like are not pytest's)."""
    found = re.finditer(r"(\S*)\s+`?-m\s+(\"[^\"]*\"|'[^']*'|\w+)", text)
    return [m[2].strip("\"'") for m in found if not re.fullmatch(r"`?python3?", m[1])]


def test_every_tier_a_document_names_is_one_pytest_ini_declares():
    """A reader who types a tier from README, CONTRIBUTING, learning.md, .ci/run or a test's docstring gets that tier:
    pytest refuses a marker pytest.ini does not declare (learning.md named "not slow", whose marker is slower)."""
    ini = (ROOT / "pytest.ini").read_text(encoding="utf-8")
    declared = set(re.findall(r"^    (\w+):", ini.split("markers =", 1)[1], re.M))
    assert {"core", "slower"} <= declared
    texts = {p: p.read_text(encoding="utf-8") for p in [ROOT / "README.md", ROOT / "CONTRIBUTING.md",
                                                         ROOT / "learning.md", ROOT / ".ci" / "run", ROOT / "pytest.ini"]}
    texts.update({p: ast.get_docstring(ast.parse(p.read_text(encoding="utf-8"))) or ""
                  for p in sorted((ROOT / "tests").glob("*.py"))})  # a test file's docstring: how to run it
    named = {(p.name, e) for p, text in texts.items() for e in marker_expressions(text)}
    assert ("README.md", "not slower") in named  # the check reads what it means to
    unknown = [(name, e) for name, e in sorted(named)
               if set(re.findall(r"\w+", e)) - {"not", "and", "or"} - declared]
    assert not unknown, f"tiers no marker of pytest.ini makes: {unknown}"
    assert marker_expressions('python -m pip install x; pytest -q -m "not slow" tests; `-m core`') == ["not slow",
                                                                                                       "core"]


DURATION = re.compile(r"\b(about|under|in) (a|an|\d+) (minute|minutes|seconds|s)\b")


def test_each_time_given_for_the_suite_names_the_machine_it_assumes():
    """The suite's times (README, CONTRIBUTING, pytest.ini) hold on a quiet machine; the line that gives one says so,
    as the race and the bench say when the machine was busy (issue 105: "2 cores" named no load)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8").split("\n## Tests\n", 1)[1].split("\n## ", 1)[0]
    contributing = (ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8").split("\n## Tests\n", 1)[1]
    ini = (ROOT / "pytest.ini").read_text(encoding="utf-8")
    timed = [line for text in (readme, contributing, ini) for line in text.splitlines() if DURATION.search(line)]
    assert len(timed) >= 7 and DURATION.search("the core: under 90 s, for the edit-run loop")
    unsaid = [line.strip() for line in timed if "quiet" not in line]
    assert not unsaid, f"a time with no load named: {unsaid}"
