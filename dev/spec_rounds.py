"""--bd3_speculate at batch 1 on several --bd3_ar checkpoints, timed in turns in one process: tokens a round (pass),
each draft offset's acceptance, and tokens/s; T = 1, the same seeds for every checkpoint. The instrument behind
dev/LOG.md's lever tables (issue 64). python dev/spec_rounds.py CKPT... [--n 32] [--gen 63]"""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import bd3  # noqa: E402
from utils.checkpoint import load_model  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--gen", type=int, default=63)
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    runs = []
    for path in args.checkpoints:
        model, ck = load_model(path, "cpu")
        runs.append(dict(path=path, model=model.eval(), block=ck["config"]["bd3_block"], passes=0, tokens=0,
                         seconds=0.0, kept_at=[0] * ck["config"]["bd3_block"], rounds=0))
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
                _, st = bd3.sample_clean_ar(r["model"], torch.zeros(1, 1, dtype=torch.long), args.gen, r["block"],
                                            r["model"].args.vocab_size - 1, generator=g)
            r["seconds"] += time.perf_counter() - t
            r["passes"] += st["nfe"]
            r["tokens"] += args.gen
    bd3.keep_or_redraw = real
    for r in runs:
        acc = " / ".join(f"{100 * k / max(r['rounds'], 1):.1f}" for k in r["kept_at"][:r["block"] - 1])
        print(f"{r['path']}: {r['tokens'] / r['passes']:.3f} tokens a pass, drafts kept by offset (cumulative, % of "
              f"drafting rounds) {acc}, {r['tokens'] / r['seconds']:.0f} tokens/s (timing noisy; counting wraps it)")


if __name__ == "__main__":
    main()
