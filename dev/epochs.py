"""The data-constrained study, fair to both sides: how the dev bound / NLL moves with epochs over a fixed slice of
data for the AR, masked and block diffusion over the same regulariser grid (weight decay x dropout).

Baby-shaped models (widths 64/128 = 0.20M/0.80M params) train on the first 75,000 characters of nanoGPT's train
split of Tiny Shakespeare (its first 90%); the last 10% is validation, its halves dev and test
(utils.dataloader.split_ids). One long run per model, evaluated on dev every epoch, stopped once its best eval is
`patience` epochs old (best.pt keeps the lowest on dev); scripts/eval.py then scores best.pt on test (128 windows x
8 t, paired across runs). Each diffusion run is paired with the AR chosen on dev. The LR follows one cosine over the
planned epochs, so the value at epoch e is not a run trained for e epochs. The first study reproduces at 1b36dc7
(dev/LOG.md, 2026-11-24).

Run from the repo root (one process at a time, one thread each on a shared CPU):

    OMP_NUM_THREADS=1 python dev/epochs.py                      # every run in RUNS, in order (done ones skipped)
    OMP_NUM_THREADS=1 python dev/epochs.py --runs mdlm_wd0.1_do0_s02_75k,ar_wd1.6_do0.1_s02_75k
    python dev/epochs.py --summary-only                         # JSON from the run dirs so far, no training
    python dev/plot_epochs.py artifacts/epochs/summary.json     # the plots (--x flops: vs training FLOPs)

Writes artifacts/epochs/data/{val,train_N}.txt, a dir per run under artifacts/epochs/runs/ (train.log, eval.json) and
artifacts/epochs/summary.json (rewritten after every run; another existing file is only replaced with --overwrite). A run
cut short resumes bit-exact (train.py --resume) when the driver starts again; --restart starts it from scratch.
"""
import contextlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from evals.bound import paired_difference  # noqa: E402
from dev.readers import read_json, read_jsonl  # noqa: E402
from utils.cli import ArgParser, at_least, list_of, output, typed  # noqa: E402
from utils.errors import UserError, run_cli  # noqa: E402
from utils.fileio import atomic_open, read_text  # noqa: E402

ROOT = "artifacts/epochs"
TOKENS_PER_STEP = 12 * 64  # the baby preset's batch x ctx: one epoch of N chars = N / 768 steps
AR, MDLM = ["--objective=ar"], ["--objective=mdlm"]
BD3 = ["--objective=bd3", "--bd3_block=4", "--bd3_loss=all_ce", "--mask_min=0.5", "--mask_max=1.0"]  # baby_bd3's recipe
SIZES = {"s02": ["--n_embd=64"], "s08": []}  # 0.20M, 0.80M params at the baby shape
def fair(objective, decays, dropouts, epochs, patience, size="s02"):
    """The runs of one objective at one size over the regulariser grid, evaluated every epoch."""
    flags = {"ar": AR, "mdlm": MDLM, "bd3": BD3}[objective]
    return {f"{objective}_wd{wd:g}_do{do:g}_{size}_75k": (flags, 75_000, epochs, 1, [f"--weight_decay={wd}",
            f"--dropout={do}", *SIZES[size]], patience) for wd in decays for do in dropouts}


# name: (objective flags, train chars, epochs planned, epochs between evals, extra flags, patience: stop once the
# best eval is this many epochs old, None = never), in priority order. At 0.20M (diffusion's best size in the first
# study) mdlm plans 400 epochs (an 800-epoch run was within 0.03 of its best by 400), bd3 150 (it overfits like the
# AR), the AR 80; at 0.80M mdlm's best came by epoch 300.
RUNS = {
    **fair("ar", (0.1, 0.8, 1.6), (0.0, 0.1, 0.2), 80, 20),
    **fair("mdlm", (0.1, 0.8, 1.6), (0.0, 0.1), 400, 100),
    **fair("bd3", (0.1, 0.8, 1.6), (0.0, 0.1), 150, 50),
    **fair("ar", (0.1, 0.8, 1.6), (0.0, 0.1, 0.2), 80, 20, "s08"),
    **fair("mdlm", (0.1, 0.8, 1.6), (0.0, 0.1), 300, 100, "s08"),
}


def prepare_data(sizes):
    """nanoGPT's split of data/tinyshakespeare.txt: val = last 10%, train slices = first N of the first 90%."""
    text = read_text("data/tinyshakespeare.txt", "the study's text", "restore it: git checkout -- data/tinyshakespeare.txt")
    cut = int(len(text) * 0.9)
    files = {"val": text[cut:], **{f"train_{n}": text[:cut][:n] for n in sizes}}
    for name, part in files.items():
        path = f"{ROOT}/data/{name}.txt"
        if not os.path.isfile(path):
            with atomic_open(path) as f:
                f.write(part)
    return {name: f"{ROOT}/data/{name}.txt" for name in files}


def train_command(name, paths, eval_iters, out):
    """The train.py command line of one study run (paths: the slices dev/epochs.py cut)."""
    flags, n_chars, epochs, per_eval, extra, patience = RUNS[name]
    steps_per_epoch = n_chars / TOKENS_PER_STEP
    # the baby preset as the study began (2026-11-24), so its runs stay comparable: the flags undo what the preset
    # gained later (--mask_ramp and --dual_ar are mdlm's only, --mask_draws diffusion's: the AR refuses them; the grid
    # sets the decay)
    return [sys.executable, "train.py", "baby", "--qk_norm=false", "--optimizer=adamw", "--ema=0", "--min_lr=1e-4", *flags,
           *(["--mask_ramp=0", "--dual_ar=0"] if flags == MDLM else []),
           *(["--self_cond=false", "--diffusion_steps=100", "--mask_draws=1"] if flags in (MDLM, BD3) else []),
           *extra, f"--data_path={paths[f'train_{n_chars}']}",
           f"--val_path={paths['val']}", f"--max_iters={round(epochs * steps_per_epoch)}",
           f"--eval_interval={round(per_eval * steps_per_epoch)}", f"--eval_iters={eval_iters}", "--keep_last=1",
           "--log_interval=500", f"--out_dir={out}", "--viz_video=off"]


def run_one(name, paths, restart, eval_iters):
    patience = RUNS[name][5]
    out = f"{ROOT}/runs/{name}"
    if os.path.isfile(f"{out}/eval.json"):
        print(f"{name}: done already ({out}/eval.json)", flush=True)
        return
    cmd = train_command(name, paths, eval_iters, out)
    stopped = os.path.isfile(f"{out}/stopped.json")  # trained already, stopped early by the patience rule
    resume = not stopped and os.path.isfile(f"{out}/model.pt") and not restart
    if os.path.exists(out) and not (resume or stopped or restart):
        raise UserError(f"{out} exists with no checkpoint to resume: look at {out}/train.log, then --restart to start again")
    os.makedirs(out, exist_ok=True)
    if not stopped:
        cmd.append("--resume" if resume else "--overwrite")
        if resume:  # bit-exact continuation (tests/test_train_scale.py); the summary lists the restarts
            with open(f"{out}/resumed.txt", "a") as f:
                f.write(time.strftime("%Y-%m-%d %H:%M:%S\n"))
        t0 = time.time()
        print(f"{name}: {' '.join(cmd[1:])}", flush=True)
        with open(f"{out}/train.log", "a" if resume else "w") as log:
            # a driver started in the background (nohup ... &) ignores SIGINT, and its children would inherit that:
            # give train.py Python's own Ctrl-C back, so the patience rule's SIGINT ends it like a Ctrl-C
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                    preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
            while proc.poll() is None:  # the patience rule: Ctrl-C (best.pt is kept) once the best eval is old
                time.sleep(5)
                curve = summarise(name)["curve"]
                if patience and curve and curve[-1]["epoch"] - min(curve, key=lambda c: c["nats"])["epoch"] >= patience:
                    proc.send_signal(signal.SIGINT)
                    try:
                        proc.wait(timeout=300)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
                    with atomic_open(f"{out}/stopped.json") as f:
                        json.dump(dict(epoch=curve[-1]["epoch"], patience=patience), f)
                    break
        if proc.returncode and not os.path.isfile(f"{out}/stopped.json"):
            raise UserError(f"{name}: train.py failed, see {out}/train.log")
        print(f"{name}: trained in {time.time() - t0:.0f}s", flush=True)
    ev = [sys.executable, "scripts/eval.py", f"{out}/best.pt", "--n-samples", "0",
          "--json", f"{out}/eval.json", "--overwrite"]
    with open(f"{out}/eval.log", "w") as log:
        if subprocess.run(ev, stdout=log, stderr=subprocess.STDOUT).returncode:
            raise UserError(f"{name}: scripts/eval.py failed, see {out}/eval.log")
    s = summarise(name)
    print(f"{name}: best {s['best_nats']:.3f} nats/char at epoch {s['best_epoch']:.1f}; "
          f"eval.py on best.pt {s['final_nats']:.3f} +- {s['final_se']:.3f}", flush=True)


def model_line(out):
    """(params, training FLOPs per token) from train.log's model line."""
    with contextlib.suppress(OSError), open(f"{out}/train.log") as f:
        for line in f:
            m = re.match(r"model: ([\d,]+) parameters, ([\d.]+) MFLOP/token", line)
            if m:
                return int(m[1].replace(",", "")), float(m[2]) * 1e6
    return None, None


def summarise(name):
    """One run's curve (epochs, val nats/char +- se, training FLOPs) from metrics.jsonl and eval.py's figure on best.pt."""
    flags, n_chars, epochs, per_eval, extra, patience = RUNS[name]
    out = f"{ROOT}/runs/{name}"
    rows = read_jsonl(f"{out}/metrics.jsonl", "run log", "") if os.path.isfile(f"{out}/metrics.jsonl") else []
    params, flops_tok = model_line(out)
    epoch = lambda it: it * TOKENS_PER_STEP / n_chars  # noqa: E731
    flops = lambda it: flops_tok * it * TOKENS_PER_STEP if flops_tok else None  # noqa: E731
    evals = {}  # the first eval row per iter (runs before issue 26 scored the periodic evals at 1 t, the final at 4)
    for r in rows:
        if r.get("kind") == "eval":
            evals.setdefault(r["iter"], r)
    curve = [dict(epoch=epoch(it), iter=it, flops=flops(it), nats=r["bits_per_char"] * math.log(2),
                  se=r["bpc_se"] * math.log(2)) for it, r in evals.items()]
    n_iters = max(evals, default=0)
    resumed = open(f"{out}/resumed.txt").read().split("\n")[:-1] if os.path.isfile(f"{out}/resumed.txt") else []
    size = next((k for k, v in SIZES.items() if v and v[0] in extra), "s08")
    s = dict(name=name, objective=flags[0].split("=")[1] + (f"/{flags[1].split('=')[1]}" if len(flags) > 1 else ""),
             size=size, extra=extra, train_chars=n_chars, epochs_planned=epochs, patience_epochs=patience, params=params,
             flops_per_token=flops_tok, iters_done=n_iters, epochs_done=epoch(n_iters), flops_done=flops(n_iters),
             resumed=resumed, stopped_early=os.path.isfile(f"{out}/stopped.json"), curve=curve,
             finished=os.path.isfile(f"{out}/eval.json"))
    if curve:
        best = min(curve, key=lambda c: c["nats"])
        s.update(best_nats=best["nats"], best_se=best["se"], best_epoch=best["epoch"], best_flops=best["flops"])
    if s["finished"]:
        r = read_json(f"{out}/eval.json", "scripts/eval.py's JSON", ("runs",), f"delete it, and dev/epochs.py evaluates "
                      f"{name} again", rows=("bits_per_char", "bpc_se", "iter", "chars_per_token"))["runs"][0]
        s.update(final_nats=r["bits_per_char"] * math.log(2), final_se=r["bpc_se"] * math.log(2),
                 final_iter=r["iter"], final_epoch=epoch(r["iter"]), final_flops=flops(r["iter"]),
                 per_window_nats_char=[w / r["chars_per_token"] for w in r.get("per_window", [])])
    return s


def write_summary(path):
    runs = [summarise(n) for n in RUNS if os.path.isdir(f"{ROOT}/runs/{n}")]
    for size in sorted({r["train_chars"] for r in runs}):
        ar = [r for r in runs if r["train_chars"] == size and r["objective"] == "ar" and r["finished"]]
        if not ar:
            continue
        best_ar = min(ar, key=lambda r: r["best_nats"])  # the best regularised AR, chosen on its evals (dev), not test
        for r in runs:
            if r["train_chars"] != size or r["objective"] == "ar":
                continue
            below = [c["epoch"] for c in r["curve"] if c["nats"] < best_ar["best_nats"]]
            r.update(best_ar=best_ar["name"], first_epoch_below_best_ar=below[0] if below else None)
            if r["finished"] and r["per_window_nats_char"] and best_ar["per_window_nats_char"]:
                # r - the best AR on the same eval.py windows (nats/char); a crossover counts only below it by > 2 se
                d, se = paired_difference(best_ar["per_window_nats_char"], r["per_window_nats_char"])
                r.update(minus_best_ar=d, minus_best_ar_se=se, crossover=d < -2 * se)
            same = [a for a in ar if a["size"] == r["size"]]  # and the best AR of its own size, where one ran
            if same and r["finished"]:
                b = min(same, key=lambda a: a["best_nats"])
                d, se = paired_difference(b["per_window_nats_char"], r["per_window_nats_char"])
                r.update(same_size_ar=b["name"], minus_same_size_ar=d, minus_same_size_ar_se=se)
    with atomic_open(path) as f:
        json.dump(dict(tokens_per_step=TOKENS_PER_STEP, val="last 10% of data/tinyshakespeare.txt", runs=runs), f, indent=1)
    for r in runs:
        fin = f"{r['final_nats']:.3f} +- {r['final_se']:.3f}" if r["finished"] else "(running or unfinished)"
        best = f"{r['best_nats']:.3f} at epoch {r['best_epoch']:.1f}" if "best_nats" in r else "-"
        vs = f"  vs {r['best_ar']}: {r['minus_best_ar']:+.3f} +- {r['minus_best_ar_se']:.3f}" if "minus_best_ar" in r else ""
        if r.get("same_size_ar") not in (None, r.get("best_ar")):
            vs += f"; vs {r['same_size_ar']}: {r['minus_same_size_ar']:+.3f} +- {r['minus_same_size_ar_se']:.3f}"
        print(f"  {r['name']:22s} {r['train_chars']:>7,} chars {r['epochs_done']:6.1f} ep  best {best}  eval.py {fin}{vs}")
    print(f"wrote {path}")


def main(argv):
    p = ArgParser(prog="dev/epochs.py", description="Train baby AR / mdlm / bd3 for many epochs on a data slice.")
    p.add_argument("--runs", type=list_of(tuple(RUNS)), default=",".join(RUNS),
                   help="comma-separated names from RUNS, run in this order")
    p.add_argument("--eval-iters", type=at_least(1), default=50, help="validation batches of 12 windows per periodic eval")
    p.add_argument("--restart", action="store_true", help="start an unfinished run again (train.py --overwrite) instead "
                   "of resuming it")
    p.add_argument("--summary-only", action="store_true", help="only write the JSON summary from the run dirs")
    p.add_argument("--summary", type=output, default=None, help=f"JSON summary path (default {ROOT}/summary.json, "
                   f"rewritten after every run)")
    a = p.parse_args(argv)
    trains = [f for f in ("--runs", "--eval-iters", "--restart") if f in typed(argv)]
    if a.summary_only and trains:  # what trains, given beside what trains nothing: refused, never dropped
        raise UserError(f"{trains[0]} sets the training --summary-only skips: drop one of them")
    summary = a.summary or f"{ROOT}/summary.json"
    if not a.summary_only:  # (started outside the repository root, the study's text is not found and says so)
        paths = prepare_data(sorted({RUNS[n][1] for n in RUNS}))
        for n in a.runs:
            run_one(n, paths, a.restart, a.eval_iters)
            write_summary(summary)
    write_summary(summary)


if __name__ == "__main__":
    run_cli(main)
