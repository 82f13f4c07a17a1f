"""The mutation harness: does the suite fail on the plausible one-line bugs? (issue 98)

Each mutant (dev/mutants_list.py: a file, an exact fragment, its replacement, a name, the class of
bug and why it is plausible) is applied alone to a scratch copy of the repository (the worktree's
tracked and untracked-but-not-ignored files, never the worktree itself), and tests run there at one
thread, cheap first, stopping at the first failure:

    targeted  the mutant's own test files, README's tier (-m "not slower", pytest.ini)
    fast      the rest of README's tier (every other test file, -m "not slower")
    slow      the slower tier's tests of the mutant's own test files (-m slower)
    rest      the rest of the slower tier (only with --stages ...,rest: minutes a mutant)

A mutant is killed at the first stage that fails (its first failing test is recorded), else it
survives the stages run, or is equivalent where the list says why no test can tell it from the
code. A stage that runs past --limit-s kills too (a hang is a failure CI sees), and says so. One
line a mutant, in a fixed format (status, the tier and stage that killed it, seconds, name, test):

    [ 3/84] killed   fast  targeted     3.6s  ar-prefill-uncounted               tests/test_replay.py::test_...

    python dev/mutants.py --check                 # every fragment found exactly once; nothing run
    python dev/mutants.py                         # all mutants: targeted, fast, slow
    python dev/mutants.py --only NAME [NAME ...]  # some of them
    python dev/mutants.py --verify                # the stages on the unmutated copy (must pass)
    python dev/mutants.py --json artifacts/mutants/baseline.json   # the results, for dev/LOG.md
    python dev/mutants.py --only NAME --stages rest --at COMMIT     # the whole slow tier, at a commit

Run it niced, alone on the machine: each mutant costs from seconds (killed by its own file) to
minutes (a survivor runs the whole fast tier).
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dev.mutants_list import MUTANTS  # noqa: E402
from utils.cli import ArgParser, at_least, list_of, output, typed  # noqa: E402
from utils.errors import UserError, run_cli  # noqa: E402
from utils.fileio import atomic_open  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

STAGES = ("targeted", "fast", "slow", "rest")
TIER = {"targeted": "fast", "fast": "fast", "slow": "slow", "rest": "slow"}  # which tier a stage's kill counts in


# ---------------------------------------------------------------------------- the scratch copy
def repo_files(root):
    """The files a fresh clone of the worktree would hold, with its uncommitted edits and new files."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                         capture_output=True, check=True)
    names = [n for n in out.stdout.decode().split("\0") if n]
    return [n for n in names if os.path.isfile(os.path.join(root, n))]


def make_scratch(root, at=""):
    """A temp copy of the worktree's files (or of commit `at`'s), a git repository of its own (tests
    read `git ls-files`)."""
    scratch = tempfile.mkdtemp(prefix="mutants-")
    repo = os.path.join(scratch, "repo")
    if at:  # the suite as it stood then: the before of a before-and-after
        os.makedirs(repo)
        tar = subprocess.run(["git", "archive", "--format=tar", at], cwd=root, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", repo], input=tar.stdout, check=True)
    for name in [] if at else repo_files(root):
        dest = os.path.join(repo, name)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.copy2(os.path.join(root, name), dest)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    return scratch, repo


def check_fragment(root, m):
    """The mutated file's text, after checking the fragment occurs exactly once in it (a fragment
    the code no longer holds, after an edit, is named: update dev/mutants_list.py)."""
    with open(os.path.join(root, m["file"]), encoding="utf-8") as f:
        text = f.read()
    found = text.count(m["old"])
    if found != 1 or m["old"] == m["new"]:
        why = f"occurs {found} times in {m['file']}, not once" if found != 1 else "is its own replacement"
        raise UserError(f"mutant {m['name']}: its fragment {why}: update it in dev/mutants_list.py")
    return text


# ---------------------------------------------------------------------------- running the tests
def pytest_args(stage, m):
    """The pytest command line of one stage of mutant m (its own tests: files or test ids)."""
    own = m["tests"]
    own_files = sorted({t.split("::")[0] for t in own})
    base = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider"]
    if stage == "targeted":
        return [*base, "-m", "not slower", *own]
    ignore = [f"--ignore={f}" for f in own_files]
    if stage == "fast":
        return [*base, "-m", "not slower", "tests", *ignore]
    if stage == "slow":
        return [*base, "-m", "slower", *own]
    return [*base, "-m", "slower", "tests", *ignore]


def first_failure(output):
    """The first FAILED or ERROR test named in pytest's short summary, else the output's last line."""
    for line in output.splitlines():
        if line.startswith(("FAILED ", "ERROR ")):
            return line.split(" ", 1)[1].split(" - ")[0]
    lines = [ln for ln in output.splitlines() if ln.strip()]
    return lines[-1][:100] if lines else "(no output)"


def run_stage(repo, stage, m, log, limit_s):
    """(outcome, first failing test, seconds) of one stage: 'pass', 'fail' or 'hang' (past limit_s)."""
    args = pytest_args(stage, m)
    t0 = time.time()
    # one thread, as the suite's own runs; no bytecode cache: a restored file's .pyc could be the mutant's
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.Popen(args, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=limit_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the stage's own process group: pytest and what it started
        output, _ = proc.communicate()
        log.write(f"---- {stage} (past {limit_s} s): {' '.join(args)}\n{output}\n")
        return "hang", f"(past {limit_s} s)", time.time() - t0
    except BaseException:  # a Ctrl-C here reaches only this process (the stage has a session of its own)
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    seconds = time.time() - t0
    log.write(f"---- {stage} rc={proc.returncode} {seconds:.1f}s: {' '.join(args)}\n{output}\n")
    # 0: passed; 5: no test selected (a file with no slow test, say)
    if proc.returncode in (0, 5):
        return "pass", "", seconds
    return "fail", first_failure(output), seconds


def run_mutant(repo, m, stages, log, limit_s, mutate=True):
    """Apply m (or, --together, each of m["group"]) to the scratch copy, run the stages until one
    fails, restore the files: a result dict."""
    originals = {}
    for one in m.get("group", [m]):  # each fragment checked in the copy's own text, mutants before it applied
        path = os.path.join(repo, one["file"])
        text = check_fragment(repo, one)  # the copy's: the worktree may change during a long run
        originals.setdefault(path, text)
        if mutate:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text.replace(one["old"], one["new"]))
    result = dict(name=m["name"], kind=m["kind"], file=m["file"], status="survived", stage="", test="", seconds=0.0)
    try:
        for stage in stages:
            outcome, test, seconds = run_stage(repo, stage, m, log, limit_s)
            result["seconds"] += seconds
            if outcome != "pass":
                result.update(status="killed" if outcome == "fail" else "hung", stage=stage, test=test)
                break
    finally:
        for path, text in originals.items():
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
    if result["status"] == "survived" and m.get("equivalent"):  # no test can tell it from the code: said why
        result.update(status="equal", test=m["equivalent"])
    return result


def line(i, n, r):
    """The fixed-format progress line of one mutant."""
    tier = TIER.get(r["stage"], "-")
    return f"[{i:>2}/{n}] {r['status']:<8} {tier:<5} {r['stage'] or '-':<8} {r['seconds']:>7.1f}s  {r['name']:<34} " \
           f"{r['test']}"


def summary(results):
    """Counts: tried, killed by README's tier (fast), by the slower tier (slow), equivalent (no behaviour changed, each
    with its reason in dev/mutants_list.py), surviving (hangs count as kills)."""
    dead = [r for r in results if r["status"] in ("killed", "hung")]
    fast = sum(TIER[r["stage"]] == "fast" for r in dead)
    slow = sum(TIER[r["stage"]] == "slow" for r in dead)
    alive = [r["name"] for r in results if r["status"] == "survived"]
    equal = sum(r["status"] == "equal" for r in results)
    return dict(tried=len(results), killed_fast=fast, killed_slow=slow, equivalent=equal, survived=len(alive),
                survivors=alive)


def mutant_name(text):
    """--only's names: each a mutant's."""
    if text not in {m["name"] for m in MUTANTS}:
        raise UserError(f"--only {text}: no mutant of that name (python dev/mutants.py --list names them)")
    return text


# the flags read only when tests run
RUN_ONLY = ("--stages", "--limit-s", "--json", "--overwrite", "--force", "--verify", "--keep", "--at", "--together")


def parse_args(argv):
    p = ArgParser(prog="dev/mutants.py", description="The mutation baseline: one-line bugs applied one at a time to "
                  "a scratch copy, the tests run cheap first.")
    p.add_argument("--only", nargs="+", type=mutant_name, default=[], metavar="NAME", help="these mutants, else all")
    p.add_argument("--stages", type=list_of(STAGES), default="targeted,fast,slow",
                   help=f"the stages to run, in order, of {', '.join(STAGES)}")
    p.add_argument("--limit-s", type=at_least(1), default=1800,
                   help="seconds a stage may run; past them it is stopped and the mutant counts as killed (a hang)")
    p.add_argument("--check", action="store_true", help="check every fragment is found exactly once; run nothing")
    p.add_argument("--list", action="store_true", help="list the mutants and their reasons; run nothing")
    p.add_argument("--verify", action="store_true", help="run the stages unmutated, once, over the chosen mutants' "
                   "test files: each must pass")
    p.add_argument("--json", type=output, default="", help="write the results here (after each mutant), "
                   "and pytest's output beside it (NAME.pytest.log)")
    p.add_argument("--keep", action="store_true", help="keep the scratch copy (its path is printed)")
    p.add_argument("--together", action="store_true", help="apply the chosen mutants at once, as one: a long "
                   "stage (rest) paid once for mutants in different code; a failure names a test, not a mutant")
    p.add_argument("--at", default="", metavar="COMMIT", help="test the code and suite of this commit (the "
                   "mutants and the harness stay the worktree's): the before of a before-and-after")
    a = p.parse_args(argv)
    if a.at and subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{a.at}^{{commit}}"], cwd=ROOT,
                               capture_output=True).returncode:
        raise UserError(f"--at {a.at}: no such commit in this repository: give a commit, e.g. --at HEAD")
    given = [f for f in RUN_ONLY if f in typed(argv)]
    if (a.check or a.list) and given:
        mode = "--check" if a.check else "--list"
        raise UserError(f"{given[0]} acts only when mutants run, and {mode} runs nothing: drop one of the two")
    return a


def main(argv):
    a = parse_args(argv)
    chosen = [m for m in MUTANTS if not a.only or m["name"] in a.only]
    for m in chosen:  # (in the worktree; a run checks its copy's text again)
        check_fragment(ROOT, m)
    if a.list:
        for m in chosen:
            print(f"{m['name']:<34} {m['kind']:<26} {m['file']}: {m['why']}")
    if a.check or a.list:
        print(f"{len(chosen)} mutants, every fragment found once")
        return
    scratch, repo = make_scratch(ROOT, a.at)
    os.makedirs(os.path.join(ROOT, "artifacts", "mutants"), exist_ok=True)
    # pytest's output: beside the JSON (NAME.pytest.log), else artifacts/mutants/last_run.log
    log_path = os.path.join(ROOT, "artifacts", "mutants", "last_run.log")
    if a.json:
        log_path = os.path.splitext(a.json)[0] + ".pytest.log"
    print(f"scratch copy {repo}; pytest output in {log_path}; stages {', '.join(a.stages)}", flush=True)
    results = []
    tests = sorted({t for m in chosen for t in m["tests"]})
    if a.verify:  # the stages once, unmutated, over every chosen mutant's test files: each must pass
        chosen = [dict(chosen[0], name="unmutated", tests=tests)]
    elif a.together:
        # no files of its own: its stages run whole (each mutant's own slow tests ran with it alone, not the others')
        chosen = [dict(name=f"together ({len(chosen)})", kind="", file="", tests=["tests"], group=chosen)]
    try:
        with open(log_path, "w", encoding="utf-8") as log:
            for i, m in enumerate(chosen, 1):
                log.write(f"==== {m['name']}: {m['file']}\n")
                r = run_mutant(repo, m, a.stages, log, a.limit_s, mutate=not a.verify)
                if a.verify:
                    r["status"] = "clean" if r["status"] == "survived" else "BROKEN"
                log.flush()
                results.append(r)
                print(line(i, len(chosen), r), flush=True)
                if a.json:  # after each mutant: a long run stopped keeps what it found
                    with atomic_open(a.json) as f:
                        json.dump(dict(stages=a.stages, results=results, **summary(results)), f, indent=1)
    finally:
        if not a.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    s = summary(results)
    print(f"tried {s['tried']}, killed by the fast tier {s['killed_fast']}, by the slow tier {s['killed_slow']}, "
          f"equivalent {s['equivalent']}, surviving {s['survived']}"
          + (f": {', '.join(s['survivors'])}" if s["survivors"] else ""))


if __name__ == "__main__":
    run_cli(main)
