"""How often can a one-pass drafter's first draft be kept? (issue 64's "tokens a round"). --bd3_speculate drafts the
next round in the same pass that draws the newest token x_r, so its first draft (x_{r+1}) comes from a state in which
x_r is still [MASK]. This instrument scores, on the sampler's own law (sequences drawn from the clean half), the
expected acceptance sum_y min(p, q) of that first draft against p = the clean half's p(x_{r+1} | x_<=r), for three q:
  model   the noisy half's state the sampler drafts from (its block known before r, [MASK] from r)
  ceiling q* = sum_v p(v | x_<r) p(. | x_<r, v): the best any drafter not knowing x_r can propose (the exact marginal
          under the verifier itself, its 65 branches enumerated)
  knows   the noisy half's state with x_r known ([MASK] from r + 1): what a second, later pass would draft from
Only in-block outcomes (r at most the block's second-last position, the sampler's per-outcome states); windows of 64
from position 0, as the sampler's first window. With k drafts a round, tokens a round <= 1 + k * acceptance of the
first. python dev/draft_ceiling.py CKPT [--n 24] [--seed 0] [--no-ceiling]"""
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import bd3  # noqa: E402
from checkpoint_manager import load_model  # noqa: E402
from utils.cli import ArgParser, at_least, model_path, seed  # noqa: E402
from utils.dist import hold_threads  # noqa: E402
from utils.errors import UserError, run_cli  # noqa: E402


def load_bd3_ar(path):
    """(model, its block) of a --bd3_ar block-diffusion checkpoint, else a one-line error naming what to give."""
    model, ck = load_model(path, "cpu")
    if ck["config"].get("objective") != "bd3" or not ck["config"].get("bd3_ar"):
        raise UserError(f"{path} is not a block-diffusion network trained with a next-token loss on its clean half (the "
                        f"verifier): give one trained with --objective=bd3 --bd3_ar=1, e.g. baby_bd3's")
    return model.eval(), ck["config"]["bd3_block"]


def main(argv):
    ap = ArgParser(prog="dev/draft_ceiling.py", description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=model_path, help="a --bd3_ar model.pt (baby_bd3's)")
    ap.add_argument("--n", type=at_least(2, "a standard error"), default=24, help="sequences drawn from the clean half")
    ap.add_argument("--seed", type=seed, default=0, help="seeds the sequences drawn from the clean half")
    ap.add_argument("--no-ceiling", action="store_true", help="score the model and knows drafters only: the "
                    "ceiling's 65 branches a position are most of the run time")
    args = ap.parse_args(argv)
    hold_threads()  # OMP_NUM_THREADS (or another thread variable), else 1
    model, n = load_bd3_ar(args.checkpoint)
    L, M = model.args.block_size, model.args.vocab_size - 1
    g = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():
        seqs, _ = bd3.sample_clean_ar(model, torch.zeros(args.n, 1, dtype=torch.long), L - 1,
                                      bd3.Blocks(size=n, mask_id=M), generator=g, draft=False)
        res = {"model": [], "knows": []} if args.no_ceiling else {"model": [], "ceiling": [], "knows": []}
        for i, x in enumerate(seqs):
            x = x[None]
            nxt = bd3.bd3_logits(model, torch.full_like(x, M), x, n, M, clean=True)[1].double().softmax(-1)[0]
            rs = [r for r in range(1, L - 1) if r % n <= n - 2]  # r + 1 in r's block
            p_after = nxt[rs]  # p(x_{r+1} | x_<=r), (R, V)
            for name, shift in (("model", 0), ("knows", 1)):
                xt = x.repeat(len(rs), 1)
                for j, r in enumerate(rs):
                    xt[j, r + shift:r // n * n + n] = M  # the block known before r (or r + 1), [MASK] after
                q = bd3.bd3_logits(model, xt, x.repeat(len(rs), 1), n, M, clean=True)[0].double().softmax(-1)
                q = q[torch.arange(len(rs)), torch.tensor(rs) + 1]
                res[name].append(torch.minimum(p_after, q).sum(-1))
            star = []
            for r in ([] if args.no_ceiling else rs):  # q* = sum_v p(v | x_<r) p(. | x_<r, v): the verifier's own marginal over x_r
                branch = x.repeat(M, 1)
                branch[:, r] = torch.arange(M)
                pv = bd3.bd3_logits(model, torch.full_like(branch, M), branch, n, M,
                                    clean=True)[1][:, r].double().softmax(-1)  # (V', V)
                star.append((nxt[r - 1, :M, None] * pv).sum(0))
            if star:
                res["ceiling"].append(torch.minimum(p_after, torch.stack(star)).sum(-1))
            print(f"sequence {i + 1}/{args.n}: " + ", ".join(f"{k} {torch.cat(v).mean():.3f}" for k, v in res.items()),
                  flush=True)
    for k, v in res.items():
        a = torch.stack([s.mean() for s in v])  # per-sequence means: the se over sequences
        print(f"{k:>8}: first-draft acceptance {a.mean():.3f} ± {a.std() / len(a) ** 0.5:.3f}; tokens a round "
              f"<= {1 + (n - 1) * a.mean():.2f} with {n - 1} drafts")


if __name__ == "__main__":
    run_cli(main)
