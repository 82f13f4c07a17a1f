"""The budgets that keep the product small enough to read, reported, never a failing test (issue 103: a ceiling a
new key or a wrapped line crosses is no bug): code lines (Python's tokenizer: no docstrings, no comment-only lines,
no blanks), so that a reason written down never competes with a line of code. Beside the counts, shape caps that
packing would break: no long function, no long line, no conditional expression inside another, no `;`, no walrus
but the `while (x := ...)` idiom (none on the reading path); imports only pointing down the floors; the documents'
sentence lengths; prose wrapped and dated nowhere. The suite keeps the rules a slip breaks for real (tests/
test_objectives.py: no import cycle, the network imports no sampler, the product never imports dev/).

    python dev/budgets.py        # every count against its ceiling, and every cap's offenders
"""
import ast
import dataclasses
from dataclasses import fields
import io
import re
import statistics
import subprocess
import sys
import tokenize

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from config import Config  # noqa: E402

# Code lines of every .py outside tests/ and dev/: a fixed ceiling (issue 79), never today's count. A change makes room
# for what it adds; how the count moved: dev/LOG.md, "The product's code-line budget". Issue 86 set each ceiling about
# 5 % above the tree after issues 86-90 (6,141 code, 1,438 on the reading path, 8,705 physical lines, 21,861 words):
# a guard with room, not a target to fill (dev/LOG.md, "The shape the product promises").
# Issue 96 added the served page (sampling/serve.py: 314 code lines, 415 physical, ~630 prose words; its keys and
# dispatch ~10 lines and ~90 words): each ceiling below rose by what it added, none of the room before it taken.
# Issue 105's edges rose them the same way: the server's Host and Origin checks and the page's fit to the model's
# context, the export's config checksum and the list of shipped files, the line for a run in progress (+133 code
# lines, +207 physical, +625 prose words).
# Issue 104's distillation (distill.py, its two keys and preset, train.py's two hooks, the other objectives' refusal of
# its keys): +129 code lines, +16 on the reading path, +203 physical lines, +734 prose words, +2 keys.
PRODUCT_CODE_LINES = 6_983 + 129
READING_PATH = ("config.py", "model.py", "diffusion.py", "train.py")
READING_CODE_LINES = 1_520 + 16
PRODUCT_PHYSICAL_LINES = 9_857 + 203  # every line of the product's .py files: code, prose and blanks (issue 79)
# docstring and comment words (issue 79: 28,628 before its prose rule). Issue 97's edges add their reasons (each
# refusal's why, the thread variables, the advised commands): +336 words after a trim of 446, the ceiling with them.
# Issue 98's inference.load, read as nanoGPT's sample.py with its checks named (values and outputs first, then
# sampling_config): +60 words of what each check refuses. Issue 95's entropy-bounded reveal (EB-Sampler, a published
# method kept even when level): +210 words of its rule and its refusals. Issue 98's merges (part 3) keep the helpers
# two or more callers share (dropout, model_args, weights, is_shipped, lacks_keys, repeat_draws, mask_prob, chain,
# time_for_fraction) where writing each inline would copy a rule: +65 words of their docstrings
PRODUCT_PROSE_WORDS = 25_145 + 734
PROSE_COLUMNS = 100  # docstring and comment-only lines; code may use LINE_COLUMNS
FILE_LINES = {"evals/report.py": 200}  # a file that grew nine jobs once
PARAMETERS = 8  # the most a product function takes (self and cls left out)
CONFIG_KEYS = 91 + 2  # 86 with issue 89's replay_steps (k steps a replay: a key the issue asks for); about 5 % of room
FUNCTION_CODE_LINES = {"reading": 50, "product": 60}  # the longest function, in code lines (nested ones inside it)
LINE_COLUMNS = 120
# The documents are read for their sentences, not counted in lines (issue 86): the median words a sentence, the
# sentences past 45 words, commit hashes and dates in the prose (history belongs in dev/LOG.md). nanoGPT's README has
# a median of 15 words a sentence, nanochat's 17 (doc_stats below, their count). RESULTS names one commit a measured
# table group, under it: 13 with the entropy bound's (issue 95), 14 with the limit's (issue 104), 15 with
# distillation's.
DOCS = {"README.md": dict(median=18, over45=2, hashes=0, dates=0), "RESULTS.md": dict(median=20, over45=3, hashes=15),
        "learning.md": dict(median=22, over45=10, hashes=15)}
OBJECTIVES = ("ar", "diffusion", "bd3", "uniform")  # OBJECTIVES: one module each

# The floors of the house, lowest first: a module imports only from floors below its own (siblings on one floor never
# import each other, except within utils/, the ground, and evals/ and scripts/, each one package).
FLOORS = (
    ("config",),                              # the keys, their choices and the presets: data
    ("utils",),                               # helpers that know nothing of the model
    ("model",),                               # the network and its KV-cached generate: it imports no sampler
    ("diffusion",),                           # masked diffusion: schedule, draws, loss, bound, the reverse sampler
    ("ar", "bd3", "uniform"),                 # the objectives that build on both, siblings
    ("objectives",),                          # the objectives by name: the table above the four
    ("configurator",),                        # the command line -> a checked Config, one pass over config.py's tables
    ("checkpoint_manager",),                  # a model, and its checked config, from a checkpoint or an export
    ("distill",),                             # a trained checkpoint as a teacher: train.py's --distill_from loss
    ("sampling",),                            # what inference.py draws and shows: the canvas, the trace
    ("evals",),                               # the bound, sample metrics, the end-of-run report
    ("train", "inference", "scripts"),        # what a user runs
)


# ---------------------------------------------------------------------------- what is counted
def tracked(pattern="*.py"):
    """The files git tracks (a fresh clone's), else every matching file below the root but .venv and artifacts."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--", pattern], cwd=ROOT, capture_output=True, check=True)
        paths = [ROOT / p for p in out.stdout.decode().split("\0") if p]
    except (OSError, subprocess.CalledProcessError):
        paths = []
    return paths or [p for p in ROOT.rglob(pattern) if not {".venv", "artifacts"} & set(p.relative_to(ROOT).parts)]


def product():
    return [p for p in tracked() if p.relative_to(ROOT).parts[0] not in ("tests", "dev") and p.is_file()]


def docstring_lines(tree):
    """The line numbers of every docstring (module, class, function): prose, not code."""
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                lines |= set(range(first.lineno, first.end_lineno + 1))
    return lines


def code_lines(source):
    """The set of line numbers holding code: a token other than a comment, a newline or indentation, outside a
    docstring (a string statement spanning lines counts each line it spans, as any multi-line token does)."""
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENCODING,
            tokenize.ENDMARKER}
    lines = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type not in skip:
            lines |= set(range(tok.start[0], tok.end[0] + 1))
    return lines - docstring_lines(ast.parse(source))


def count(path):
    return len(code_lines(path.read_text()))


# ---------------------------------------------------------------------------- the shape caps
def functions(path):
    """[(name, code lines)] of every top-level function and method (nested functions count in their parent's)."""
    source = path.read_text()
    tree, code = ast.parse(source), code_lines(source)
    out = []

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                span = range(child.lineno, child.end_lineno + 1)
                out.append((f"{prefix}{child.name}", sum(n in code for n in span)))
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
    visit(tree, "")
    return out


def prose(path):
    """(docstring and comment words, [(line number, its text)] of prose-only lines) of a file."""
    source = path.read_text()
    tree, words, lines = ast.parse(source), 0, docstring_lines(ast.parse(source))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                words += len(first.value.value.split())
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            words += len(tok.string.lstrip("#").split())
            if not tok.line[:tok.start[1]].strip():  # a comment alone on its line
                lines.add(tok.start[0])
    text = source.splitlines()
    return words, [(n, text[n - 1]) for n in sorted(lines)]


def wide_prose(path):
    return [f"{path.relative_to(ROOT)}:{n}" for n, line in prose(path)[1] if len(line) > PROSE_COLUMNS]


DATED = re.compile(r"\b20\d\d-\d\d-\d\d\b|\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)[0-9a-f]{7,40}\b")  # a date; a hash


def dated_prose(path):
    """Prose lines of a product file naming a date or a commit hash (history belongs in dev/LOG.md)."""
    source, (_, lines) = path.read_text(), prose(path)
    comments = [t.string for t in tokenize.generate_tokens(io.StringIO(source).readline) if t.type == tokenize.COMMENT]
    docs = [line for _, line in lines]
    return [f"{path.relative_to(ROOT)}: {m}" for text in docs + comments for m in DATED.findall(text)]


def many_parameters(path):
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            names = [x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs)] + [x.arg for x in (a.vararg, a.kwarg) if x]
            names = [n for n in names if n not in ("self", "cls")]
            if len(names) > PARAMETERS:
                found.append(f"{path.relative_to(ROOT)}:{node.name} ({len(names)})")
    return found


def long_functions(paths, cap):
    return [(f"{p.relative_to(ROOT)}:{name}", n) for p in paths for name, n in functions(p) if n > cap]


def long_lines(path):
    return [f"{path.relative_to(ROOT)}:{i}" for i, line in enumerate(path.read_text().splitlines(), 1)
            if len(line) > LINE_COLUMNS]


def chained_conditionals(path):
    """Conditional expressions with another in their test, body or else: `a if c else b if d else e`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.IfExp) and any(isinstance(n, ast.IfExp) for part in (node.test, node.body, node.orelse)
                                               for n in ast.walk(part)):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def semicolons(path):
    toks = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
    return [f"{path.relative_to(ROOT)}:{t.start[0]}" for t in toks if t.type == tokenize.OP and t.string == ";"]


def walruses(path, idiom_allowed):
    """Assignment expressions, but (idiom_allowed) the one that is a `while` loop's whole test: `while (x := f()):`."""
    tree = ast.parse(path.read_text())
    idiom = {id(node.test) for node in ast.walk(tree) if isinstance(node, ast.While)} if idiom_allowed else set()
    return [f"{path.relative_to(ROOT)}:{node.lineno}" for node in ast.walk(tree)
            if isinstance(node, ast.NamedExpr) and id(node) not in idiom]


# ---------------------------------------------------------------------------- the imports
def module_name(path):
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def imported(path):
    """Project-relevant module names a file imports (dotted, as written), function-level imports included."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}  # `from utils import checkpoint`
    return found


def floor_of(name):
    top = name.split(".")[0]
    for i, floor in enumerate(FLOORS):
        if top in floor:
            return i
    return None


def arrows_up(me, names):
    """[(me, name)] for each imported name on me's own floor or above (within utils/, evals/ and scripts/ a package
    may import itself); a module with no floor is reported with each import that has one."""
    mine, package = floor_of(me), me.split(".")[0]
    bad = []
    for name in sorted(names):
        theirs = floor_of(name)
        if theirs is None or (name.split(".")[0] == package and package in ("utils", "evals", "scripts", "sampling")):
            continue
        if mine is None or theirs >= mine:
            bad.append((me, name))
    return bad


def upward_imports(paths):
    return [arrow for p in paths for arrow in arrows_up(module_name(p), imported(p))]


# ---------------------------------------------------------------------------- the documents
def doc_stats(text):
    """{median, over45, hashes, dates} of a markdown document's prose: sentences of 3 words or more, with tables, code
    blocks, headings and images left out, inline code one word, a link its text; hashes outside code blocks."""
    unfenced = re.sub(r"```.*?```", " ", text, flags=re.S)
    hashes = len(re.findall(r"(?<![0-9a-zA-Z/#-])[0-9a-f]{7,12}(?![0-9a-zA-Z])", unfenced))
    dates = len(re.findall(r"\b20\d\d-\d\d-\d\d\b", text))
    lines = ["" if not s.strip() or s.strip().startswith(("|", "#", "!", "<", "[![")) else
             re.sub(r"^([-*+]|\d+\.)\s+", "", s.strip()) for s in unfenced.splitlines()]
    sentences = []
    for para in re.split(r"\n\s*\n", "\n".join(lines)):
        para = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", re.sub(r"`[^`]*`", "CODE", " ".join(para.split())))
        sentences += [n for s in re.split(r"(?<=[.?!])\s+(?=[A-Z`*(\[])", para) if (n := len(s.split())) >= 3]
    return dict(median=statistics.median(sentences) if sentences else 0, over45=sum(n > 45 for n in sentences),
                hashes=hashes, dates=dates)



def summary():
    """Every count against its ceiling and every offender, for the edit loop and the hook."""
    files = product()
    reading = [ROOT / name for name in READING_PATH]
    print(f"product code lines {sum(count(p) for p in files):,} (<= {PRODUCT_CODE_LINES:,}); reading path "
          f"{sum(count(p) for p in reading):,} (<= {READING_CODE_LINES:,}); physical lines "
          f"{sum(len(p.read_text().splitlines()) for p in files):,}")
    print("reading path:", {p.name: count(p) for p in reading})
    print("long functions:", long_functions(reading, FUNCTION_CODE_LINES["reading"])
          + long_functions([p for p in files if p not in reading], FUNCTION_CODE_LINES["product"]))
    print(f"prose words {sum(prose(p)[0] for p in files):,} (<= {PRODUCT_PROSE_WORDS:,}); physical lines <= "
          f"{PRODUCT_PHYSICAL_LINES:,}")
    print("long lines:", [h for p in files for h in long_lines(p)])
    print("wide prose:", [h for p in files for h in wide_prose(p)])
    print("dated prose:", [h for p in files for h in dated_prose(p)])
    print("many parameters:", [h for p in files for h in many_parameters(p)])
    print("chained conditionals:", [h for p in files for h in chained_conditionals(p)])
    print("semicolons:", [h for p in files for h in semicolons(p)])
    print("walruses:", [h for p in files for h in walruses(p, p not in reading)])
    print("upward imports:", upward_imports(files))
    print("modules without a floor:", sorted(module_name(p) for p in files if floor_of(module_name(p)) is None))
    keys = len(fields(Config))
    print(f"config keys {keys} (<= {CONFIG_KEYS})")
    for name, caps in DOCS.items():
        stats = doc_stats((ROOT / name).read_text())
        print(f"{name}: " + ", ".join(f"{k} {stats[k]} (<= {v})" for k, v in caps.items()))


def main(argv):
    from utils.cli import ArgParser
    ArgParser(prog="dev/budgets.py", description="Every budget's count against its ceiling, and every shape cap's "
              "offenders: a report, never a failing test.").parse_args(argv)
    summary()


if __name__ == "__main__":
    from utils.errors import run_cli
    run_cli(main)
