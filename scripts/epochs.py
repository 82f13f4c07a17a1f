"""The epochs study: how the validation bound / NLL moves with epochs over a fixed slice of data.

Baby models (4/4/128, ctx 64, batch 12, lr 1e-3) train on the first N characters of nanoGPT's train split
of Tiny Shakespeare (first 90%) and validate on its last 10%; one long run per model, evaluated every few
epochs (train.py's metrics.jsonl), then scripts/eval.py scores best.pt (128 windows x 8 t). Note the LR
follows one cosine over the whole run, so the value at epoch e is not a run trained for e epochs.

Run from the repo root (one process at a time, one thread each on a shared CPU):

    OMP_NUM_THREADS=1 python scripts/epochs.py                      # every run in RUNS, in order (done ones skipped)
    OMP_NUM_THREADS=1 python scripts/epochs.py --runs mdlm_75k,ar_75k
    python scripts/epochs.py --summary-only                         # JSON from the run dirs so far, no training
    python scripts/plot.py epochs artifacts/epochs/summary.json     # the plot

Writes artifacts/epochs/data/{val,train_N}.txt, one run dir per run under artifacts/epochs/runs/ (train log
train.log, eval.json from scripts/eval.py) and artifacts/epochs/summary.json. A run dir that exists and is
not finished is refused unless --force (then train.py --overwrite starts it again).
"""
import json
import math
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils.errors import ArgParser, UserError, run_cli  # noqa: E402
from utils.fileio import atomic_open  # noqa: E402

ROOT = "artifacts/epochs"
TOKENS_PER_STEP = 12 * 64  # the baby preset's batch x ctx: one epoch of N chars = N / 768 steps
AR, MDLM, BD3 = ["--objective=ar"], ["--objective=mdlm"], ["--objective=bd3", "--bd3_block=4"]

# name: (objective flags, train chars, epochs, epochs between evals, extra flags). AR overfits early, so its runs
# stop at 80 epochs (60 on the half slice); bd3 costs ~2x a step (the doubled window), so 80. In priority order.
RUNS = {
    "mdlm_75k": (MDLM, 75_000, 200, 2, []),
    "ar_75k": (AR, 75_000, 80, 1, []),
    "ar_d02_75k": (AR, 75_000, 80, 1, ["--dropout=0.2"]),
    "bd3_75k": (BD3, 75_000, 80, 2, []),
    "mdlm_37k": (MDLM, 37_500, 150, 2, []),
    "ar_37k": (AR, 37_500, 60, 1, []),
    "ar_d02_37k": (AR, 37_500, 60, 1, ["--dropout=0.2"]),
    "ar_d01_75k": (AR, 75_000, 80, 1, ["--dropout=0.1"]),
}


def prepare_data(sizes):
    """nanoGPT's split of data/tinyshakespeare.txt: val = last 10%, train slices = first N of the first 90%."""
    with open("data/tinyshakespeare.txt") as f:
        text = f.read()
    cut = int(len(text) * 0.9)
    os.makedirs(f"{ROOT}/data", exist_ok=True)
    files = {"val": text[cut:], **{f"train_{n}": text[:cut][:n] for n in sizes}}
    for name, part in files.items():
        path = f"{ROOT}/data/{name}.txt"
        if not os.path.isfile(path):
            with atomic_open(path) as f:
                f.write(part)
    return {name: f"{ROOT}/data/{name}.txt" for name in files}


def run_one(name, paths, force, eval_iters):
    flags, n_chars, epochs, per_eval, extra = RUNS[name]
    out = f"{ROOT}/runs/{name}"
    if os.path.isfile(f"{out}/eval.json"):
        print(f"{name}: done already ({out}/eval.json)", flush=True)
        return
    if os.path.exists(out) and not force:
        raise UserError(f"{out} exists but is not finished: look at {out}/train.log, then --force to start it again")
    os.makedirs(out, exist_ok=True)
    steps_per_epoch = n_chars / TOKENS_PER_STEP
    cmd = [sys.executable, "train.py", "baby", *flags, *extra, f"--data_path={paths[f'train_{n_chars}']}",
           f"--val_path={paths['val']}", f"--max_iters={round(epochs * steps_per_epoch)}",
           f"--eval_interval={round(per_eval * steps_per_epoch)}", f"--eval_iters={eval_iters}", "--keep_last=1",
           "--log_interval=500", f"--out_dir={out}", "--viz_video=", "--overwrite"]
    t0 = time.time()
    print(f"{name}: {' '.join(cmd[1:])}", flush=True)
    with open(f"{out}/train.log", "w") as log:
        if subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode:
            raise UserError(f"{name}: train.py failed, see {out}/train.log")
    ev = [sys.executable, "scripts/eval.py", f"{out}/best.pt", "--n-samples", "0", "--infill-len", "0",
          "--json", f"{out}/eval.json", "--force"]
    with open(f"{out}/eval.log", "w") as log:
        if subprocess.run(ev, stdout=log, stderr=subprocess.STDOUT).returncode:
            raise UserError(f"{name}: scripts/eval.py failed, see {out}/eval.log")
    s = summarise(name)
    print(f"{name}: {time.time() - t0:.0f}s; best {s['best_nats']:.3f} nats/char at epoch {s['best_epoch']:.1f}; "
          f"eval.py on best.pt {s['final_nats']:.3f} +- {s['final_se']:.3f}", flush=True)


def summarise(name):
    """One run's curve (epochs, val nats/char +- se) from metrics.jsonl and eval.py's figure on best.pt."""
    flags, n_chars, epochs, per_eval, extra = RUNS[name]
    out = f"{ROOT}/runs/{name}"
    rows = []
    if os.path.isfile(f"{out}/metrics.jsonl"):
        with open(f"{out}/metrics.jsonl") as f:
            rows = [json.loads(line) for line in f if line.strip()]
    n_iters = max([r["iter"] for r in rows if r.get("kind") == "eval"], default=0)
    # one eval row per iter (runs before issue 26 scored the periodic evals at 1 t and the final one at 4)
    curve, seen = [], set()
    for r in rows:
        if r.get("kind") == "eval" and r["iter"] not in seen:
            seen.add(r["iter"])
            curve.append(dict(epoch=r["iter"] * TOKENS_PER_STEP / n_chars, iter=r["iter"],
                              nats=r["bits_per_char"] * math.log(2), se=r["bpc_se"] * math.log(2)))
    s = dict(name=name, objective=flags[0].split("=")[1] + (f"/{flags[1].split('=')[1]}" if len(flags) > 1 else ""),
             extra=extra, train_chars=n_chars, epochs_planned=epochs, iters_done=n_iters,
             epochs_done=n_iters * TOKENS_PER_STEP / n_chars, curve=curve, finished=os.path.isfile(f"{out}/eval.json"))
    if curve:
        best = min(curve, key=lambda c: c["nats"])
        s.update(best_nats=best["nats"], best_se=best["se"], best_epoch=best["epoch"])
    if s["finished"]:
        with open(f"{out}/eval.json") as f:
            r = json.load(f)["runs"][0]
        s.update(final_nats=r["bits_per_char"] * math.log(2), final_se=r["bpc_se"] * math.log(2),
                 final_iter=r["iter"], final_epoch=r["iter"] * TOKENS_PER_STEP / n_chars)
    return s


def write_summary(path):
    runs = [summarise(n) for n in RUNS if os.path.isdir(f"{ROOT}/runs/{n}")]
    for size in sorted({r["train_chars"] for r in runs}):
        ar = [r for r in runs if r["train_chars"] == size and r["objective"] == "ar" and "best_nats" in r]
        if not ar:
            continue
        ar_best = min(r["best_nats"] for r in ar)
        for r in runs:  # the first epoch at which a diffusion run's bound is below every AR run's best at this size
            if r["train_chars"] == size and r["objective"] != "ar":
                below = [c["epoch"] for c in r["curve"] if c["nats"] < ar_best]
                r.update(ar_best_nats=ar_best, first_epoch_below_ar_best=below[0] if below else None)
    with atomic_open(path) as f:
        json.dump(dict(tokens_per_step=TOKENS_PER_STEP, val="last 10% of data/tinyshakespeare.txt", runs=runs), f, indent=1)
    for r in runs:
        fin = f"{r['final_nats']:.3f} +- {r['final_se']:.3f}" if r["finished"] else "(running or unfinished)"
        best = f"{r['best_nats']:.3f} at epoch {r['best_epoch']:.1f}" if "best_nats" in r else "-"
        print(f"  {r['name']:12s} {r['train_chars']:>7,} chars {r['epochs_done']:6.1f} ep  best {best}  eval.py {fin}")
    print(f"wrote {path}")


def main(argv):
    p = ArgParser(prog="scripts/epochs.py", description="Train baby AR / mdlm / bd3 for many epochs on a data slice.")
    p.add_argument("--runs", default=",".join(RUNS), help="comma-separated names from RUNS, run in this order")
    p.add_argument("--eval-iters", type=int, default=50, help="validation batches of 12 windows per periodic eval")
    p.add_argument("--force", action="store_true", help="start an unfinished run dir again (train.py --overwrite)")
    p.add_argument("--summary-only", action="store_true", help="only write the JSON summary from the run dirs")
    p.add_argument("--summary", default=f"{ROOT}/summary.json", help="JSON summary path (replaced)")
    a = p.parse_args(argv)
    names = [n for n in a.runs.split(",") if n]
    unknown = [n for n in names if n not in RUNS]
    if unknown:
        raise UserError(f"unknown run(s) {unknown}: choose from {', '.join(RUNS)}")
    if not a.summary_only:
        paths = prepare_data(sorted({RUNS[n][1] for n in RUNS}))
        for n in names:
            run_one(n, paths, a.force, a.eval_iters)
            write_summary(a.summary)
    write_summary(a.summary)


if __name__ == "__main__":
    run_cli(main)
