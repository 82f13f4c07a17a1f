"""--bd3_speculate at batch 1 on several --bd3_ar checkpoints, timed in turns in one process: tokens a round (pass),
each draft offset's acceptance, and tokens/s; T = 1, the same seeds for every checkpoint. --ar: an AR checkpoint in
the same turns, and each bd3 checkpoint's speed over the AR's, sample by sample (median and quartiles: on a shared
machine a ratio of neighbours is the figure, not a speed). --compile: every sampler as --compile=true runs it (on a
CPU inductor compiles the AR's decode_steps and bd3's whole rounds, --k a call; a first sample each, untimed,
compiles). --tree 1,2,3: each checkpoint with each draft tree of dev/draft_tree.py in the same turns (k candidates at
the first drafted position; a kept sibling counts as a kept draft at its offset, and the share of rounds that kept
one is printed too). The instrument behind dev/LOG.md's lever tables (issues 64, 89, 95).

    python dev/spec_rounds.py CKPT... [--n 32] [--gen 63] [--ar AR_CKPT] [--compile] [--k 4] [--tree 1,2,3,4]
"""
import os
import statistics
import sys
import time
from dataclasses import replace

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, ".."), HERE]  # the repo, and dev/ (draft_ceiling's loader)
import bd3  # noqa: E402
import draft_tree  # noqa: E402
from checkpoint_manager import load_model  # noqa: E402
from configurator import get_config  # noqa: E402
from diffusion import SamplerOptions  # noqa: E402
from draft_ceiling import load_bd3_ar  # noqa: E402
from model import compile_decode  # noqa: E402
from utils.cli import ArgParser, at_least, list_of, typed  # noqa: E402
from utils.errors import UserError, run_cli  # noqa: E402


def main(argv):
    ap = ArgParser(prog="dev/spec_rounds.py", description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+", help="--bd3_ar model.pt files (baby_bd3's)")
    ap.add_argument("--n", type=at_least(1), default=32, help="samples drawn from each checkpoint, one at a time "
                    "(batch 1), seeds 1000, 1001, ...")
    ap.add_argument("--gen", type=at_least(1), default=63, help="tokens each sample generates after its one start "
                    "token")
    ap.add_argument("--ar", help="an AR model.pt (baby_ar's), sampled in the same turns and seeds")
    ap.add_argument("--compile", action="store_true", help="sample as --compile=true does (inductor on a CPU)")
    ap.add_argument("--k", type=at_least(1), default=4, help="--replay_steps: the AR's tokens, bd3's whole rounds "
                    "(under --compile) a call")
    ap.add_argument("--tree", type=list_of(at_least(1, most=8)), default="1", help="draft trees (dev/draft_tree.py: "
                    "candidates at the first drafted position), each checkpoint sampled with each (1: one drafted "
                    "block a round, bd3's own)")
    args = ap.parse_args(argv)
    if args.compile and max(args.tree) > 1:
        raise UserError("--tree runs the eager round (a draft tree is not compiled): drop --compile, or --tree")
    if "--k" in typed(argv) and not (args.ar or args.compile):
        raise UserError("--k sets the AR's tokens and the compiled rounds a call, and neither runs here: give --ar or "
                        "--compile, or drop --k")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    runs = []
    for path in args.checkpoints:
        model, block = load_bd3_ar(path)
        for tree in args.tree:
            runs.append(dict(path=path if len(args.tree) == 1 else f"{path}, a tree of {tree}", model=model,
                             block=block, tree=tree, passes=0, tokens=0, times=[], kept_at=[0] * block, rounds=0,
                             siblings=0))
    if args.ar:
        model, ck = load_model(args.ar, "cpu")
        if ck["config"].get("objective") != "ar":
            raise UserError(f"--ar {args.ar} is not an AR checkpoint: give one trained with --objective=ar (baby_ar's)")
        runs.append(dict(path=args.ar, model=model, block=None, passes=0, tokens=0, times=[]))
    opts = SamplerOptions(steps=1, replay_steps=args.k)
    for r in runs:
        if args.compile:
            compile_decode(r["model"], get_config(["--compile=true"]), "cpu")
            sample(r, args.gen, opts, torch.Generator().manual_seed(0))  # it compiles: untimed
            r.update(passes=0, tokens=0, times=[], rounds=0)
    real, real_walk = bd3.keep_or_redraw, draft_tree.walk_tree
    for s in range(args.n):
        for r in runs:
            def counted(p, q, drafts, generator, r=r):  # how far into each round's drafts the kept ones reach
                out = real(p, q, drafts, generator)
                if drafts.size(1):  # batch 1: the drafts kept, then the verifier's own token
                    r["rounds"] += 1
                    for j in range(out.size(1) - 1):
                        r["kept_at"][j] += 1
                return out

            def walked(p, q, drafts, sibs, left, generator, r=r):  # a tree round: its kept candidates, a sibling
                new, rows, sib = real_walk(p, q, drafts, sibs, left, generator)
                r["rounds"] += 1
                r["siblings"] += sib is not None
                for j in range(min(len(new) - 1, len(drafts))):
                    r["kept_at"][j] += 1
                return new, rows, sib
            bd3.keep_or_redraw, draft_tree.walk_tree = counted, walked
            sample(r, args.gen, opts, torch.Generator().manual_seed(1000 + s))
    bd3.keep_or_redraw, draft_tree.walk_tree = real, real_walk
    ar = runs[-1] if args.ar else None
    for r in runs:
        speed = r["tokens"] / sum(r["times"])
        line = f"{r['path']}: {r['tokens'] / r['passes']:.3f} tokens a pass, {speed:.0f} tokens/s"
        if r["block"] and not args.compile:  # (the whole rounds check drafts on the device: no count here)
            acc = " / ".join(f"{100 * k / max(r['rounds'], 1):.1f}" for k in r["kept_at"][:r["block"]])
            line += f", drafts kept by offset (cumulative, % of drafting rounds) {acc}"
            if r["tree"] > 1:
                line += f", a sibling kept in {100 * r['siblings'] / max(r['rounds'], 1):.1f} %"
        if r["block"] and ar is not None:
            ratio = [a / b for a, b in zip(ar["times"], r["times"])]  # the AR's time over bd3's, sample by sample
            q1, median, q3 = statistics.quantiles(ratio, n=4) if len(ratio) > 1 else ratio * 3
            line += f", {median:.2f}x the AR's speed (median of {len(ratio)} paired samples; quartiles {q1:.2f}-{q3:.2f})"
        print(line + (" (timing noisy; counting wraps it)" if ar is None else ""))


def sample(r, gen, opts, g):
    """One batch-1 sample of r's model after one start token, timed into r."""
    start = torch.zeros(1, 1, dtype=torch.long)
    t = time.perf_counter()
    with torch.no_grad():
        if r["block"] is None:
            r["model"].generate(start, gen, opts, g, r["model"].args.vocab_size - 1)
            passes = gen
        else:
            blocks = bd3.Blocks(size=r["block"], mask_id=r["model"].args.vocab_size - 1)
            with draft_tree.tree_rounds(r["tree"]):
                passes = bd3.sample_clean_ar(r["model"], start, gen, blocks, opts, generator=g)[1]["nfe"]
    r["times"].append(time.perf_counter() - t)
    r["passes"] += passes
    r["tokens"] += gen


if __name__ == "__main__":
    run_cli(main)
