"""Every script answers --help from the repository root: scripts/NAME.py and dev/NAME.py print their usage (a module
that is no command names the one that uses it), exit 0, no traceback.

    python -m pytest -q tests/test_script_help.py
"""
import ast
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from helpers import ENV, HANG, ROOT

# every Python file a reader may run: the scripts and the studies (a package's __init__ is none)
FILES = sorted(str(p.relative_to(ROOT)) for folder in ("scripts", "dev") for p in (ROOT / folder).glob("*.py")
               if p.name != "__init__.py")
# imported by commands, no command of their own: no top-level main()
MODULES = [rel for rel in FILES if not any(isinstance(n, ast.FunctionDef) and n.name == "main"
                                           for n in ast.parse((ROOT / rel).read_text()).body)]


def named_in_docs():
    """The scripts/ and dev/ files README.md and CONTRIBUTING.md name."""
    text = (ROOT / "README.md").read_text() + (ROOT / "CONTRIBUTING.md").read_text()
    return set(re.findall(r"\b((?:scripts|dev)/\w+\.py)\b", text))


def run(rel, *argv):
    return subprocess.run([sys.executable, rel, *argv], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=HANG)


def test_every_file_the_documents_name_is_tried():
    assert {"scripts/corpus.py", "dev/readers.py"} <= set(MODULES)  # the modules are found
    named = named_in_docs()
    assert {"scripts/data.py", "scripts/eval.py", "dev/bench_train.py"} <= named  # the reader is not empty
    assert named <= set(FILES), named - set(FILES)  # each named file exists, so its --help is run below


@pytest.mark.slower
def test_every_script_answers_help_from_the_repository_root():
    with ThreadPoolExecutor(2) as pool:  # two at a time: each imports torch
        results = dict(zip(FILES, pool.map(lambda rel: run(rel, "--help"), FILES)))
    failed = {rel: (r.returncode, (r.stdout + r.stderr)[-400:]) for rel, r in results.items()
              if r.returncode != 0 or "Traceback" in r.stderr or not r.stdout.strip()}
    assert not failed, failed
    for rel, r in results.items():
        if rel in MODULES:  # says which command to run, and that command's --help answers too
            command = re.search(r"run python (\S+\.py) --help", r.stdout)[1]
            assert command in results and results[command].stdout.startswith("usage: "), r.stdout
        else:
            assert r.stdout.startswith("usage: "), (rel, r.stdout[:200])


@pytest.mark.parametrize("rel", MODULES)
def test_a_module_run_as_a_command_is_one_line_naming_the_command(rel):
    r = run(rel)
    assert r.returncode == 2 and r.stderr.startswith(f"error: {rel} ") and r.stderr.count("\n") == 1, r.stderr
    assert "not a command: run python " in r.stderr and r.stdout == ""
