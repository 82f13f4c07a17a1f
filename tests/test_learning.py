"""learning.md's code runs: every ```python block of the guide, in order, in one namespace, from the repo root, as a
reader who pastes them into one Python session would (issue 94). A block checks its idea against the repo's own
function with an `assert`, so a block that raises, or a function that drifted from what the guide says, fails here,
named by the block's heading and its line in learning.md. Each block is timed; the times are printed when run as a
script (and the slowest with pytest -s). Each block also pastes at Python's prompt, as the guide invites.

    python -m pytest -q tests/test_learning.py
    python tests/test_learning.py            # each block's heading, line and seconds, then the total
"""
import ast
import contextlib
import io
import os
import re
import sys
import time
import traceback

import pytest

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))  # helpers, when run as a script
from helpers import ROOT  # noqa: E402 (helpers puts the root on the path)

GUIDE = ROOT / "learning.md"
FENCE = re.compile(r"^```(\w*)\s*$")
HEADING = re.compile(r"^(#{1,6})\s+(.*\S)")
LEAD = re.compile(r"^\*\*([^*]+?)\*\*")  # a paragraph's bold lead, "**One reverse step.** ...": after a blank line
# The sections that teach an idea with code: each holds at least one block (a guide that lost its code fails)
TAUGHT = ("1.", "2.", "3.", "4.", "5.", "6.")
COMPOUND = (ast.For, ast.While, ast.With, ast.If, ast.Try, ast.FunctionDef, ast.ClassDef)


def blocks(text):
    """[(line of the block's first code line, the section heading, the bold lead above it, source)] of every ```python
    block, in order. Other fences (```bash, plain text) are skipped, and nothing inside a fence is read as a heading."""
    out, heading, lead, fence, start, code, previous = [], "", "", None, 0, [], ""
    for n, line in enumerate(text.splitlines(), 1):
        after_blank, previous = not previous.strip(), line
        m = FENCE.match(line)
        if fence is None and m:
            fence, start, code = m.group(1), n + 1, []
        elif fence is not None and line.strip() == "```":
            if fence == "python":
                out.append((start, heading, lead, "\n".join(code) + "\n"))
            fence = None
        elif fence is not None:
            code.append(line)
        elif HEADING.match(line):
            heading, lead = HEADING.match(line).group(2), ""
        elif after_blank and LEAD.match(line):
            lead = LEAD.match(line).group(1).rstrip(".")
    assert fence is None, f"learning.md: a ``` fence opened at line {start - 1} is never closed"
    return out


def name(start, heading, lead):
    return f"learning.md:{start} ({heading}{' › ' + lead if lead else ''})"


def run_blocks(text, path="learning.md", out=None):
    """Run every python block of `text` in one namespace, in order; (name, seconds) of each. A block that raises
    stops the run with an AssertionError naming it, its line and the error. Line numbers in a traceback are the
    guide's own (each block is compiled at its place in the file)."""
    namespace, times = {"__name__": "__learning__"}, []
    for start, heading, lead, source in blocks(text):
        code = compile("\n" * (start - 1) + source, path, "exec")
        t0 = time.perf_counter()
        try:
            with contextlib.redirect_stdout(out or io.StringIO()):
                exec(code, namespace)
        except Exception as e:  # any error in a block: the guide no longer matches the code
            at = [frame.lineno for frame in traceback.extract_tb(e.__traceback__) if frame.filename == path]
            where = f" at line {at[-1]}" if at else ""
            raise AssertionError(f"{name(start, heading, lead)} failed{where}: {type(e).__name__}: {e}") from e
        times.append((name(start, heading, lead), time.perf_counter() - t0))
    return times


def test_every_python_block_of_the_guide_runs(monkeypatch):
    monkeypatch.chdir(ROOT)  # the blocks read artifacts/weights/ and data/ as a reader at the repo root does
    times = run_blocks(GUIDE.read_text(encoding="utf-8"))
    slowest = sorted(times, key=lambda nt: -nt[1])[:3]  # shown with -s: where the guide's seconds go
    print(f"{len(times)} blocks in {sum(s for _, s in times):.2f} s; slowest: " +
          ", ".join(f"{n} {s:.2f} s" for n, s in slowest))


def test_the_first_block_keeps_torch_to_one_thread_as_the_guide_says(monkeypatch):
    """The guide's "a few seconds on one CPU thread" holds in a plain session too (two threads there; beside other work,
    the blocks took 130 s at two threads, 13.5 s at one: issue 105): its first block sets the one thread."""
    import torch
    monkeypatch.chdir(ROOT)
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # a plain `python` on two cores
    try:
        _, _, _, source = blocks(GUIDE.read_text(encoding="utf-8"))[0]
        exec(compile(source, "learning.md", "exec"), {"__name__": "__learning__"})
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_each_teaching_section_shows_code():
    found = {heading.split()[0] for _, heading, _, _ in blocks(GUIDE.read_text(encoding="utf-8"))}
    missing = [s for s in TAUGHT if s not in found]
    assert not missing, f"learning.md's sections {missing} hold no ```python block: put the idea's code beside it"


def paste_breaks(source):
    """Where a block would break when pasted at Python's prompt (before 3.13's): the prompt ends a compound statement
    (for, with, def, ...) at its first blank line, and takes a line after it only past a blank one. [line numbers]"""
    lines, breaks = source.splitlines(), []
    for node in ast.parse(source).body:
        if not isinstance(node, COMPOUND):
            continue
        inside = range(node.lineno, node.end_lineno)  # a blank line before the body's last line ends it early
        breaks += [n + 1 for n in inside if not lines[n].strip() and lines[n + 1][:1].isspace()]
        if node.end_lineno < len(lines) and lines[node.end_lineno].strip():  # the next statement, with no blank line
            breaks.append(node.end_lineno + 1)
    return breaks


def test_each_block_pastes_at_the_python_prompt():
    """The guide says: paste the blocks into one Python session. The prompt reads a blank line as the end of a loop or
    a function, so none may hide inside one, and one must follow each."""
    bad = [f"learning.md:{start + n - 1}" for start, _, _, source in blocks(GUIDE.read_text(encoding="utf-8"))
           for n in paste_breaks(source)]
    assert not bad, f"these lines break a paste at the prompt (a blank line inside a loop or def, or none after): {bad}"
    assert paste_breaks("for i in range(2):\n    x = i\nprint(x)\n") == [3]  # the check itself can fail
    assert paste_breaks("def f():\n    a = 1\n\n    return a\n") == [3]  # the blank line


def test_a_failing_block_is_named_by_its_heading_and_line():
    """The runner itself can fail: a block that raises, or whose assert no longer holds, is reported with its place."""
    text = ("# Guide\n\n## 2. The bound\n\n**The estimator.** Text.\n\n"
            "```python\nx = 1\n```\n\n```bash\nexit 1\n```\n\n```python\nassert x == 2, 'drifted'\n```\n")
    named = r"learning.md:16 \(2. The bound › The estimator\) failed at line 16: AssertionError: drifted"
    with pytest.raises(AssertionError, match=named) as caught:
        run_blocks(text)
    tb = caught.value.__cause__.__traceback__
    while tb.tb_next:
        tb = tb.tb_next
    assert tb.tb_lineno == 16  # the traceback points at the guide's own line
    assert [b[0] for b in blocks(text)] == [8, 16]  # the bash block is skipped


if __name__ == "__main__":
    os.chdir(ROOT)
    total = time.perf_counter()
    for block, seconds in run_blocks(GUIDE.read_text(encoding="utf-8"), out=sys.stderr):
        print(f"{seconds:7.3f} s  {block}")
    print(f"{time.perf_counter() - total:7.3f} s  in all")
