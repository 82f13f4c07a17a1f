"""Arrows point down: utils/ is the floor, so none of its modules imports a repo module above it (the objectives,
sampling/, evals/, the entry points); config.py (data: the keys and their choices) is the one it may read. evals/ and
sampling/ in turn sit below the entry points (train.py, inference.py, scripts/).
python -m pytest -q tests/test_layers.py"""
import ast

from helpers import ROOT
import pytest

pytestmark = pytest.mark.core  # the core tier (pytest.ini): the maths, the loop, the samplers

FLOOR_MAY_IMPORT = {"utils", "config"}


def repo_imports(path):
    """The repo's top-level modules and packages that one file imports (anywhere in it, lazy imports included)."""
    repo = {p.stem for p in ROOT.glob("*.py")} | {p.parent.name for p in ROOT.glob("*/__init__.py")}
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names & repo


def test_utils_imports_nothing_above_it():
    above = {f"utils/{p.name}": sorted(repo_imports(p) - FLOOR_MAY_IMPORT) for p in sorted((ROOT / "utils").glob("*.py"))}
    assert not {f: m for f, m in above.items() if m}, "utils/ must not import these modules above it"


def test_evals_and_trace_import_no_entry_point():
    files = sorted((ROOT / "evals").glob("*.py")) + sorted((ROOT / "sampling").glob("*.py"))
    up = {p.name: sorted(repo_imports(p) & {"train", "inference", "scripts"}) for p in files}
    assert not {f: m for f, m in up.items() if m}, "evals/ and sampling/ sit below the entry points"


def test_the_walk_sees_an_import_above_the_floor(tmp_path):
    f = tmp_path / "x.py"
    f.write_text("import torch\nfrom utils.errors import UserError\n\ndef f():\n    from sampling.canvas import fill\n"
                 "    import configurator\n")
    assert repo_imports(f) == {"utils", "sampling", "configurator"}
