"""How many CPU threads does a training step of each CPU preset want (issue 73)? train.py's own step (its batch, loss,
backward, optimizer and EMA, as train.train_step takes it) timed at each thread count, on a quiet machine and with a
second CPU-bound process beside it (another training run of the same preset at one thread, as a user's other job).

Each timing is a fresh process (the thread count set before any work), rounds alternate the thread counts so that a
drifting load slows all alike, and each cell is the median ms a step over its rounds.

    python dev/threads.py cpu baby baby_bd3 tinystories_bpe_cpu --threads 1,2 --steps 8 --rounds 3
    python dev/threads.py cpu --loads quiet                  # no second process
"""
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
from utils.cli import ArgParser, at_least, list_of  # noqa: E402
from utils.errors import UserError, run_cli  # noqa: E402

LOADS = ("quiet", "loaded")


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
    a = p.parse_args(argv)
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
