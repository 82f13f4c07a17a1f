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
first. --tree K (issue 95's draft tree, dev/draft_tree.py): for k = 1..K candidates at that position, the chance one is
kept when they are drawn without replacement and checked by recursive rejection (--trials draws a position), from
the model's state ('rsd k') and from q* ('rsd* k': the ceiling of k candidates no drafter in the pass can pass);
when they are the state's top k, checked by matching, DDTree's rule ('top-q k': the sum of p over them); and when they
are p's own top k ('top-p k'): the most k fixed candidates can keep, which the text's entropy sets (with 'entropy',
nats a token). A sampled candidate can beat its top-k bound (q = p keeps every one); a fixed one cannot.
python dev/draft_ceiling.py CKPT [--n 24] [--seed 0] [--no-ceiling] [--tree 4 [--trials 64]]"""
import os
import sys

import numpy as np
import torch

sys.path[:0] = [os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."),
                os.path.dirname(os.path.abspath(__file__))]  # the repo, and dev/ (draft_tree)
import bd3  # noqa: E402
import draft_tree  # noqa: E402
from checkpoint_manager import load_model  # noqa: E402
from utils.cli import ArgParser, at_least, seed  # noqa: E402
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
    ap.add_argument("checkpoint", help="a --bd3_ar model.pt (baby_bd3's)")
    ap.add_argument("--n", type=at_least(2, "a standard error"), default=24, help="sequences drawn from the clean half")
    ap.add_argument("--seed", type=seed, default=0, help="seeds the sequences drawn from the clean half")
    ap.add_argument("--no-ceiling", action="store_true", help="score the model and knows drafters only: the "
                    "ceiling's 65 branches a position are most of the run time")
    ap.add_argument("--tree", type=at_least(1, most=8), default=1, help="also score 1..TREE candidates at the first "
                    "drafted position (--draft_tree's), against the top candidates of p (the text's ceiling)")
    ap.add_argument("--trials", type=at_least(1), default=64, needs=("tree",), help="draws of the candidates a "
                    "position for --tree's recursive rejection")
    args = ap.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
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
                proposals = dict(model=q) if name == "model" else proposals
            star = []
            for r in ([] if args.no_ceiling else rs):  # q* = sum_v p(v | x_<r) p(. | x_<r, v): the verifier's own marginal over x_r
                branch = x.repeat(M, 1)
                branch[:, r] = torch.arange(M)
                pv = bd3.bd3_logits(model, torch.full_like(branch, M), branch, n, M,
                                    clean=True)[1][:, r].double().softmax(-1)  # (V', V)
                star.append((nxt[r - 1, :M, None] * pv).sum(0))
            if star:
                res["ceiling"].append(torch.minimum(p_after, torch.stack(star)).sum(-1))
                proposals["ceiling"] = torch.stack(star)
            if args.tree > 1:
                for key, value in tree_rows(p_after, proposals, args.tree, args.trials, g).items():
                    res.setdefault(key, []).append(value)
            print(f"sequence {i + 1}/{args.n}: " + ", ".join(f"{k} {torch.cat(v).mean():.3f}" for k, v in res.items()),
                  flush=True)
    for k, v in res.items():
        a = torch.stack([s.mean() for s in v])  # per-sequence means: the se over sequences
        line = f"{k:>8}: first-draft acceptance {a.mean():.3f} ± {a.std() / len(a) ** 0.5:.3f}"
        if k == "entropy":
            line = f"{k:>8}: the verifier's law at the first drafted position, {a.mean():.3f} ± {a.std() / len(a) ** 0.5:.3f} nats"
        elif " " not in k:
            line += f"; tokens a round <= {1 + (n - 1) * a.mean():.2f} with {n - 1} drafts"
        print(line)


def tree_rows(p, proposals, most, trials, g):
    """{row: (R,) each position's chance that a candidate is kept} for k = 1..most candidates: 'rsd k' ('rsd* k' from
    q*) drawn from the proposal without replacement (draft_tree.draw_siblings after one bd3.draw), checked by
    draft_tree.accept_among, `trials` draws a position; 'top-q k' the model's top k, matched (the sum of p over them);
    'top-p k' p's own top k; 'entropy' p's, nats. p (R, V); proposals: {'model': q, 'ceiling': q*} (R, V)."""
    rows = {"entropy": -(p * p.clamp(min=1e-300).log()).sum(-1)}
    p_np = p.numpy()
    for k in range(1, most + 1):
        for name, q in proposals.items():
            q = q / q.sum(-1, keepdim=True)
            q_np, kept = q.numpy(), np.zeros(len(p))
            for j in range(len(p)):
                for _ in range(trials):
                    spine = int(bd3.draw(q[j:j + 1], g)[0])
                    cands = [spine, *draft_tree.draw_siblings(q_np[j:j + 1], [spine], k, g)[0]]
                    u = torch.rand(len(cands), generator=g, dtype=torch.float64).numpy()
                    kept[j] += draft_tree.accept_among(p_np[j], q_np[j], cands, u)[0] is not None
            rows[f"rsd{'*' if name == 'ceiling' else ''} {k}"] = torch.from_numpy(kept / trials)
        rows[f"top-q {k}"] = p.gather(-1, proposals["model"].topk(k, -1).indices).sum(-1)
        rows[f"top-p {k}"] = p.topk(k, -1).values.sum(-1)
    return rows

if __name__ == "__main__":
    run_cli(main)
