"""--bd3_speculate at batch 1 on several --bd3_ar checkpoints, timed in turns in one process: tokens a round (pass),
each draft offset's acceptance, and tokens/s; T = 1, the same seeds for every checkpoint. The instrument behind
dev/LOG.md's lever tables (issue 64). python dev/spec_rounds.py CKPT... [--n 32] [--gen 63]"""
import os
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, ".."), HERE]  # the repo, and dev/ (draft_ceiling's loader)
import bd3  # noqa: E402
from draft_ceiling import load_bd3_ar  # noqa: E402
from utils.cli import ArgParser, at_least  # noqa: E402
from utils.errors import run_cli  # noqa: E402


def main(argv):
    ap = ArgParser(prog="dev/spec_rounds.py", description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+", help="--bd3_ar model.pt files (baby_bd3's)")
    ap.add_argument("--n", type=at_least(1), default=32, help="samples drawn from each checkpoint, one at a time "
                    "(batch 1), seeds 1000, 1001, ...")
    ap.add_argument("--gen", type=at_least(1), default=63, help="tokens each sample generates after its one start "
                    "token")
    args = ap.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    runs = []
    for path in args.checkpoints:
        model, block = load_bd3_ar(path)
        runs.append(dict(path=path, model=model, block=block, passes=0, tokens=0, seconds=0.0, kept_at=[0] * block,
                         rounds=0))
    real = bd3.keep_or_redraw
    for s in range(args.n):
        for r in runs:
            def counted(p, q, drafts, generator, r=r):  # how far into each round's drafts the kept ones reach
                out = real(p, q, drafts, generator)
                if drafts.size(1):  # batch 1: the drafts kept, then the verifier's own token
                    r["rounds"] += 1
                    for j in range(out.size(1) - 1):
                        r["kept_at"][j] += 1
                return out
            bd3.keep_or_redraw = counted
            g = torch.Generator().manual_seed(1000 + s)
            t = time.perf_counter()
            with torch.no_grad():
                blocks = bd3.Blocks(size=r["block"], mask_id=r["model"].args.vocab_size - 1)
                _, st = bd3.sample_clean_ar(r["model"], torch.zeros(1, 1, dtype=torch.long), args.gen, blocks,
                                            generator=g)
            r["seconds"] += time.perf_counter() - t
            r["passes"] += st["nfe"]
            r["tokens"] += args.gen
    bd3.keep_or_redraw = real
    for r in runs:
        acc = " / ".join(f"{100 * k / max(r['rounds'], 1):.1f}" for k in r["kept_at"][:r["block"] - 1])
        print(f"{r['path']}: {r['tokens'] / r['passes']:.3f} tokens a pass, drafts kept by offset (cumulative, % of "
              f"drafting rounds) {acc}, {r['tokens'] / r['seconds']:.0f} tokens/s (timing noisy; counting wraps it)")


if __name__ == "__main__":
    run_cli(main)
