"""How many CPU threads does a training step of each CPU preset want (issue 73)? train.py's own step (its batch, loss,
backward, optimizer and EMA, as train.train_step takes it) timed at each thread count, on a quiet machine and with a
second CPU-bound process beside it (another training run of the same preset at one thread, as a user's other job).

Each timing is a fresh process (the thread count set before any work), rounds alternate the thread counts so that a
drifting load slows all alike, and each cell is the median ms a step over its rounds.

    python dev/threads.py cpu baby baby_bd3 tinystories_bpe_cpu --threads 1,2 --steps 8 --rounds 3
    python dev/threads.py cpu --loads quiet                  # no second process

--starts (issue 82): whole `python train.py PRESET --max_iters=300` runs started as a user starts them, with the
rule that picks their threads before (--before, a commit: the 1-minute load average, fitted at log lines) and
after (this tree: by what the steps measure), beside the counts OMP_NUM_THREADS fixes. Cases: one run alone; two
runs started 1 s apart; one run, then a second --gap seconds later. A table: each run's seconds against the fixed
count's, its slowest 20-step window over its median, its thread counts, and (--gap) how long after the second run
started the first took fewer threads. Rows of the old rule wait for the 1-minute load average to fall first.
Run it on a quiet machine; it takes ~30-40 minutes on 2 cores.

    python dev/threads.py cpu --starts                      # before = 1b877fe, the rule issue 82 replaced
    python dev/threads.py cpu --starts --cases together --before 1b877fe --iters 300 --gap 60
"""
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
from utils.cli import ArgParser, at_least, list_of, typed  # noqa: E402
from utils.errors import UserError, run_cli  # noqa: E402

LOADS = ("quiet", "loaded")
CASES = ("alone", "together", "then")
# each case's rows: (rule, environment, checkout); the first is the fixed count the others are read against
ROWS = dict(alone=[("OMP=2", "2", "after"), ("before", None, "before"), ("after", None, "after")],
            together=[("OMP=1", "1", "after"), ("before", None, "before"), ("after", None, "after")],
            then=[("OMP=1", "1", "after"), ("before", None, "before"), ("after", None, "after")])
TARGETS = ("targets (issue 82): alone, after within 1.1x of OMP=2; together, each after run within 1.2x of OMP=1 "
           "and no 20-step window over 3x its median; then, the first run down within 10 s of the second's start")


def build_step(preset, out_dir):
    """train.py's setup, data and model for `preset` (a temp out_dir, nothing saved): a function running step i."""
    import train
    argv = [preset, "--device=cpu", f"--out_dir={out_dir}", "--overwrite", "--max_iters=100000"]
    cfg, env = train.setup(argv)
    cfg, data = train.load_data(cfg, env)
    run = train.build(cfg, env, data)
    return lambda i: train.train_step(cfg, env, data, run, i)


def time_steps(preset, threads, steps, warmup=2):
    """The median seconds of `steps` steps after `warmup`, at `threads` torch threads (this process)."""
    import torch
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as out_dir:
        step = build_step(preset, out_dir)
        for i in range(warmup):
            step(i)
        seconds = []
        for i in range(warmup, warmup + steps):
            t0 = time.perf_counter()
            step(i)
            seconds.append(time.perf_counter() - t0)
    return statistics.median(seconds)


def burn(preset):
    """The second process: steps of `preset` at one thread until killed."""
    import torch
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as out_dir:
        step = build_step(preset, out_dir)
        i = 0
        while True:
            step(i)
            i += 1


def child(args):
    """Run in a fresh process with the thread count in its environment: prints the median ms a step."""
    env = {**os.environ, "OMP_NUM_THREADS": str(args[1]), "MKL_NUM_THREADS": str(args[1])}
    out = subprocess.run([sys.executable, __file__, "--_time", *map(str, args)], cwd=ROOT, env=env,
                         capture_output=True, text=True)
    if out.returncode:
        raise UserError(f"timing {args} failed: {out.stderr.strip().splitlines()[-1:]}")
    return float(out.stdout.strip().splitlines()[-1])


class Run:
    """One `python train.py` process, its stdout read line by line with the time each line came."""

    def __init__(self, train_py, preset, threads, out_dir, iters):
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
        if threads is not None:
            env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = threads
        # as a user types it (log lines every 10 steps, the old rule's cadence), without the preset's trace video
        argv = [sys.executable, "-u", train_py, preset, f"--out_dir={out_dir}", f"--max_iters={iters}", "--viz_video=off"]
        self.start = time.monotonic()
        self.p = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines = []  # (seconds since the start, line)
        self.reader = threading.Thread(target=self.read, daemon=True)
        self.reader.start()

    def read(self):
        for line in self.p.stdout:
            self.lines.append((time.monotonic() - self.start, line.rstrip()))
        self.p.wait()
        self.seconds = time.monotonic() - self.start

    def finish(self):
        self.reader.join()
        if self.p.returncode:
            raise UserError(f"a run failed ({self.p.returncode}): {[line for _, line in self.lines[-3:]]}")
        ms = [float(m.group(1)) for _, line in self.lines if (m := re.search(r"^iter \d+/\d+ \|.* (\d+) ms/it", line))]
        ms = ms[1:]  # the first window holds the setup
        pairs = [(a + b) / 2 for a, b in zip(ms, ms[1:])]  # 20-step windows from the 10-step log lines
        self.worst = f"{max(pairs) / statistics.median(ms):.2f}" if pairs else "-"
        first = next(int(m.group(1)) for _, line in self.lines if (m := re.match(r"threads: (\d+)", line)))
        self.changes = [(t, int(m.group(1)), int(m.group(2))) for t, line in self.lines
                        if (m := re.match(r"threads: (\d+) -> (\d+)", line))]
        self.counts = "->".join(map(str, [first] + [new for _, _, new in self.changes]))

    def down_after(self, t):
        """Seconds from `t` (since this run's start) to its first step down after it; None if none."""
        return next((s - t for s, old, new in self.changes if s >= t and new < old), None)


def checkout(rev, into):
    """The tree at commit `rev`, unpacked into `into` (no worktree, no change to this checkout): its train.py."""
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", into], input=archive, check=True)
    return os.path.join(into, "train.py")


def settle(limit=0.3, most=300):
    """Wait (at most `most` s) for the 1-minute load average to fall to `limit`: the old rule reads it at the start,
    and the rows before would otherwise leave it a minute of load. Returns the load it starts at."""
    t0 = time.monotonic()
    while os.getloadavg()[0] > limit and time.monotonic() - t0 < most:
        time.sleep(5)
    return os.getloadavg()[0]


def starts(a):
    """The --starts study: each case and rule, runs started as a user starts them; prints the table."""
    print(f"{os.cpu_count()} cores; {', '.join(a.presets)} x {a.iters} steps a run; before = {a.before}'s rule, "
          f"after = this tree's")
    print(f"{'preset':<10} {'case':<9} {'rule':<7} {'load1':>5} {'run':>3} {'seconds':>8} {'x fixed':>8} "
          f"{'worst 20/median':>15} {'threads':<14} down after the 2nd started")
    with tempfile.TemporaryDirectory() as tmp:
        trees = dict(after=os.path.join(ROOT, "train.py"), before=checkout(a.before, tmp))
        for preset in a.presets:
            for case in a.cases:
                fixed = None
                for rule, threads, tree in ROWS[case]:
                    load = settle() if rule == "before" else os.getloadavg()[0]
                    out = tempfile.mkdtemp(dir=tmp)
                    runs = [Run(trees[tree], preset, threads, os.path.join(out, "1"), a.iters)]
                    if case != "alone":
                        time.sleep(1 if case == "together" else a.gap)
                        runs.append(Run(trees[tree], preset, threads, os.path.join(out, "2"), a.iters))
                    for r in runs:
                        r.finish()
                    fixed = fixed or statistics.mean(r.seconds for r in runs)
                    for i, r in enumerate(runs, 1):
                        down = ""
                        if case == "then" and i == 1 and threads is None:  # a fixed count never steps down
                            after = r.down_after(runs[1].start - r.start)
                            down = "never" if after is None else f"{after:.1f} s"
                        print(f"{preset:<10} {case:<9} {rule:<7} {load:5.2f} {i:>3} {r.seconds:8.1f} "
                              f"{r.seconds / fixed:8.2f} {r.worst:>15} {r.counts:<14} {down}", flush=True)
    print(TARGETS)


def main(argv):
    if argv[:1] == ["--_time"]:
        print(time_steps(argv[1], int(argv[2]), int(argv[3])) * 1000)
        return
    if argv[:1] == ["--_burn"]:
        burn(argv[1])
        return
    p = ArgParser(prog="dev/threads.py", description=__doc__.splitlines()[0])
    p.add_argument("presets", nargs="+", help="the CPU presets whose training step is timed, e.g. cpu baby")
    p.add_argument("--threads", type=list_of(at_least(1)), default=[1, 2, os.cpu_count() or 1],
                   help="thread counts to time (default 1, 2 and every core)")
    p.add_argument("--loads", type=list_of(LOADS), default=list(LOADS),
                   help="quiet: nothing else runs; loaded: a second training process at one thread beside it")
    p.add_argument("--steps", type=at_least(1), default=8, help="timed steps in each process (after 2 untimed)")
    p.add_argument("--rounds", type=at_least(1), default=3, help="processes per cell, thread counts in turn")
    p.add_argument("--starts", action="store_true", help="the study of whole runs started together (issue 82)")
    p.add_argument("--cases", type=list_of(CASES), default=list(CASES), needs=("starts",), help="--starts' cases")
    p.add_argument("--before", default="1b877fe", needs=("starts",),
                   help="the commit whose rule is 'before' (1b877fe: the 1-minute load average, fitted at log lines)")
    p.add_argument("--iters", type=at_least(1), default=300, needs=("starts",), help="--max_iters of each run")
    p.add_argument("--gap", type=at_least(1), default=60, needs=("starts",),
                   help="seconds between the first run and the second in the 'then' case")
    import configurator
    presets = [word for word in argv if word in configurator.PRESETS]
    if {"-h", "--help"} & set(argv) and presets:  # each preset's config, whose training step is timed
        print(p.format_help())
        for name in presets:
            print(configurator.help_text("train.py", "", argv=[name, "--help"]))
        return
    a = p.parse_args(argv)
    table_flags = sorted({"--threads", "--loads", "--steps", "--rounds"} & typed(argv))
    if a.starts and table_flags:
        raise UserError(f"{table_flags[0]} acts only on the step table, not with --starts: drop it")
    if a.starts:
        return starts(a)
    threads = sorted(set(a.threads))
    print(f"{os.cpu_count()} cores; median ms a training step over {a.rounds} processes of {a.steps} steps each")
    print(f"{'preset':<22} {'load':<7} " + " ".join(f"{f'{n} thr':>9}" for n in threads) + "   best")
    for preset in a.presets:
        for load in a.loads:
            other = None
            if load == "loaded":
                env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
                other = subprocess.Popen([sys.executable, __file__, "--_burn", preset], cwd=ROOT, env=env,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(5)  # its setup done: it steps beside every timing
            try:
                ms = {n: [] for n in threads}
                for _ in range(a.rounds):
                    for n in threads:
                        ms[n].append(child([preset, n, a.steps]))
            finally:
                if other is not None:
                    other.kill()
                    other.wait()
            med = {n: statistics.median(v) for n, v in ms.items()}
            best = min(med, key=med.get)
            cells = " ".join(f"{med[n]:9.1f}" for n in threads)
            print(f"{preset:<22} {load:<7} {cells}   {best} thr (" +
                  ", ".join(f"{n}: {med[n] / med[best]:.2f}x" for n in threads) + ")", flush=True)


if __name__ == "__main__":
    run_cli(main)
