"""Does the order a diffusion network decodes in change how good its joint is? Each held-out window is revealed one
token a pass in a fixed order (l2r: left to right, r2l: right to left, or random: one per window), every token scored
by the pass that reveals it. The mean is an exact NLL, not a bound: that of the autoregressive model the order
defines. Over uniformly random orders it is an unbiased estimate of the network's continuous-time NELBO, the
T -> infinity limit of the chain scripts/eval.py scores (learning.md §2-3 give the laws). If left to right scores what
random orders do, the reveal order is not what separates a sampler's samples from an AR's.

`mixture` scores the model that sampler is: one uniformly random masked position a pass, so x's probability is the mean
over orders of each order's joint, and its NLL, -log mean_order p_order(x), lies below the mean order's (the NELBO) by
Jensen's gap. It is summed exactly over the 2^S reveal sets of a block of S <= 8 (bd3's blocks: 16 canvases for 4);
for a larger block (mdlm's window) it is an importance-weighted bound over --mixture-k random orders, which tightens
with k (mixture_nll). `causal`, for an mdlm network trained with --dual_ar: its AR mode (the same weights attending
causally over clean text), read as the AR reads a window (its first token as context; inference.py --dual_sample
draws from it).

    python dev/order_nll.py artifacts/models/baby/model.pt --orders random,l2r,r2l --n-windows 32 --device cpu
    python dev/order_nll.py artifacts/models/baby_bd3/model.pt --orders random,l2r    # the order inside each block
    python dev/order_nll.py artifacts/models/baby/model.pt --self-cond-read sampler    # the sampler's joint
    python dev/order_nll.py artifacts/models/baby_bd3/model.pt --orders random,mixture    # the exact NLL
    python dev/order_nll.py artifacts/models/baby/model.pt --orders mixture --semi-ar-length 4    # exact too

The network must read no time (time_cond none: an order defines none). A self-conditioned one reads, as the bound does,
a fresh first pass's prediction (two passes a token); --self-cond-read sampler reads the previous pass's instead, a
joint whose random order estimates no bound (tests/test_order_nll.py). Windows are scripts/eval.py's (--split,
--n-windows). Prints per order nats/token and bits/char +- one standard error, the paired difference from the first
order, and the NLL by quarter of the order. bd3 reads each block after the clean blocks before it, as its sampler
reads them, every block's k-th token in the same pass (L' passes a window). The AR has one order; uniform-state
diffusion has no [MASK] to reveal.

A study's instrument, in dev/ (issue 70): it answers a question about the networks and backs RESULTS' sampler-law
rows (the law of `baby`'s semi-AR sampler, of `baby_bd3`'s random order inside blocks), as dev/nanogpt_score.py backs
nanoGPT's; no user command needs it. Its tests: tests/test_order_nll.py, tests/test_sampling.py (its
law against inference's draws).
"""
import hashlib
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from bd3 import bd3_logits  # noqa: E402
from diffusion import predict_logits, self_condition_input  # noqa: E402
from diffusion import causal_nll  # noqa: E402
from evals.bound import report_windows  # noqa: E402
from evals.samples import open_checkpoint, write_json  # noqa: E402
from evals import SPLITS  # noqa: E402
from objectives import OBJECTIVES  # noqa: E402
from utils.dataloader import prepare_data  # noqa: E402
from utils.dist import pick_device  # noqa: E402
from utils.cli import ArgParser, at_least, list_of, model_path, output, own_flags, seed, typed  # noqa: E402
from utils.errors import UserError, run_cli  # noqa: E402

ORDERS = ("l2r", "r2l", "random", "causal", "mixture")
SC_READS = ("bound", "sampler")  # a self-conditioned network's input: a fresh first pass's prediction, or the last's


def order_positions(order, B, L, generator, block=0):
    """(B, n_blocks, S) long: row b's block j reveals position perm[b, j, k] at pass k. block 0: one block of L."""
    S = block or L
    n = L // S
    if order in ("l2r", "r2l"):
        local = (torch.arange(S) if order == "l2r" else torch.arange(S - 1, -1, -1)).repeat(B, n, 1)
    else:
        local = torch.stack([torch.randperm(S, generator=generator) for _ in range(B * n)]).view(B, n, S)
    return local + S * torch.arange(n)[None, :, None]


@torch.no_grad()
def ordered_nll(logits_of, x, perm, mask_id, vocab_size, self_cond=None):
    """NLL (B, L) float64 of each token of x (B, L) when all start masked and pass k reveals perm[:, :, k] (one
    position per block), each scored by the pass that sees exactly the tokens revealed before it.
    logits_of(xt, sc) -> (B, L, V) logits with the [MASK] logit at -inf. self_cond, for a self-conditioned network:
    'bound' feeds each pass a fresh first pass's prediction over the same canvas (diffusion.self_condition_input),
    'sampler' the previous pass's (diffusion.denoise's reading; zeros at first); None: the network reads none."""
    assert self_cond in (None, *SC_READS), self_cond
    B, L = x.shape
    perm = perm.to(x.device)
    rows = torch.arange(B, device=x.device)[:, None]
    xt = torch.full_like(x, mask_id)
    last = torch.zeros(B, L, vocab_size, device=x.device)  # the sampler's latest prediction, zeros at first
    nll = torch.zeros(B, L, dtype=torch.float64, device=x.device)
    for k in range(perm.size(2)):
        masked = xt == mask_id
        sc = None
        if self_cond == "bound":
            sc = self_condition_input(lambda r: logits_of(xt, None), masked)
        elif self_cond == "sampler":  # the latest prediction of each still-masked position
            sc = last * masked[..., None]
        logits = logits_of(xt, sc)
        if self_cond == "sampler":
            last = torch.softmax(logits, -1)
        pos = perm[:, :, k]  # (B, n_blocks)
        logp = torch.log_softmax(logits[rows, pos].double(), -1)  # (B, n_blocks, V)
        nll[rows, pos] = -logp.gather(-1, x[rows, pos][..., None]).squeeze(-1)
        xt[rows, pos] = x[rows, pos]
    return nll


EXACT_BLOCK = 8  # the mixture over orders is summed exactly up to this block (2^S canvases), sampled beyond it
EXACT_ORDERS = 5  # read as the sampler reads self-conditioning, orders do not share canvases: S! of them, up to this S
MIXTURE_K = 16  # the random orders of a sampled mixture unless --mixture-k says otherwise


def mixture_nll(logits_of, x, block, mask_id, vocab_size, self_cond=None, k=MIXTURE_K, generator=None, semi_ar=0):
    """NLL (B, n_blocks) float64 of each block of x (B, L) under the sampler that reveals one uniformly random masked
    position of every block a pass: the mixture over the S! orders of each order's joint, -log mean_order
    p_order(block). Up to EXACT_BLOCK positions a block it is exact (reveal_sets_nll; read as the sampler reads
    self-conditioning, orders_nll up to EXACT_ORDERS). Beyond it, an importance-weighted bound over k uniformly random
    orders, -log mean_j p_order_j(block), whose expectation lies between the mixture's NLL and the mean order's (the
    NELBO), tightening as k grows. semi_ar S (mdlm, block 0): the semi-autoregressive sampler, blocks of S left to
    right, each after the ones before it are revealed and before the ones after it (S passes a block)."""
    B, L = x.shape
    exact = orders_nll if self_cond == "sampler" else reveal_sets_nll
    if semi_ar:
        pos = torch.arange(L, device=x.device)
        return torch.cat([exact(logits_of, x, torch.where(pos < c[0], x, mask_id), c[None], mask_id, self_cond)
                          for c in pos.view(-1, semi_ar)], 1)
    S = block or L
    n = L // S
    if S <= (EXACT_ORDERS if self_cond == "sampler" else EXACT_BLOCK):
        return exact(logits_of, x, torch.full_like(x, mask_id), torch.arange(L, device=x.device).view(n, S), mask_id,
                     self_cond)
    from tqdm import tqdm
    joints = [-ordered_nll(logits_of, x, order_positions("random", B, L, generator, block), mask_id, vocab_size,
                           self_cond).view(B, n, S).sum(-1)
              for _ in tqdm(range(k), desc="  random orders of the mixture", leave=False, dynamic_ncols=True)]
    return -(torch.logsumexp(torch.stack(joints), 0) - math.log(k))


@torch.no_grad()
def orders_nll(logits_of, x, base, cols, mask_id, self_cond="sampler"):
    """reveal_sets_nll with self-conditioning read as the sampler reads it (diffusion.denoise): each pass reads the
    previous pass's prediction at the group's still-masked positions (zeros at the first, and off the group), so an
    order's chance depends on the whole order, not the set revealed: -log mean over the S! orders of their product,
    one pass per ordered prefix (41 passes at S = 4)."""
    L, S = x.size(1), cols.size(1)
    group = torch.zeros(L, dtype=torch.bool, device=x.device)
    group[cols.reshape(-1)] = True
    ends = []  # log-chance (B, n) of x's tokens under each complete order

    def walk(left, xt, sc, logp):
        if not left:
            ends.append(logp)
            return
        logits = logits_of(xt, sc)
        nll = torch.log_softmax(logits.double(), -1).gather(-1, x[..., None]).squeeze(-1)[:, cols]  # (B, n, S)
        last = torch.softmax(logits, -1) * group[:, None]  # this pass's prediction over the group, the next pass's sc
        for i in left:
            shown = xt.clone()
            shown[:, cols[:, i]] = x[:, cols[:, i]]
            walk([j for j in left if j != i], shown, last * (shown == mask_id)[..., None], logp + nll[..., i])
    walk(list(range(S)), base, None, 0.0)  # the first pass reads no prediction (zeros: the same network output)
    return -(torch.logsumexp(torch.stack(ends), 0) - math.lgamma(S + 1))


@torch.no_grad()
def reveal_sets_nll(logits_of, x, base, cols, mask_id, self_cond=None):
    """-log of the chance (B, n) that revealing cols[j] (n, S) one uniformly random position a pass (every group j in
    the same pass) over the canvas base (B, L) draws x's tokens there. g(R), the chance that reveal set R comes first
    with x's tokens, sums over R's last position i: g(R) = sum_i g(R - i) p(x_i | x_(R - i)) / (S - |R| + 1)."""
    B, (n, S) = x.size(0), cols.shape
    logg = torch.full((1 << S, B, n), float("-inf"), dtype=torch.float64, device=x.device)
    logg[0] = 0.0
    for R in range(1 << S):  # every subset before its supersets: R | i > R
        shown = cols[:, [i for i in range(S) if R >> i & 1]].reshape(-1)
        xt = base.clone()
        xt[:, shown] = x[:, shown]
        sc = self_condition_input(lambda r: logits_of(xt, None), xt == mask_id) if self_cond == "bound" else None
        logp = torch.log_softmax(logits_of(xt, sc).double(), -1).gather(-1, x[..., None]).squeeze(-1)[:, cols]
        for i in range(S):
            if not R >> i & 1:
                step = logg[R] + logp[..., i] - math.log(S - bin(R).count("1"))
                logg[R | 1 << i] = torch.logaddexp(logg[R | 1 << i], step)
    return -logg[-1]


def mdlm_pass(model, cfg, x, mask_id):
    """(logits_of: the network's pass over a canvas xt, told no time; its block, 0: the whole window)."""
    return lambda xt, sc: predict_logits(model, xt, None, mask_id, sc=sc), 0


def bd3_pass(model, cfg, x, mask_id):
    """The two-stream pass: each noisy block of xt sees itself and the clean blocks of x (B, L) before it."""
    return lambda xt, sc: bd3_logits(model, xt, x, cfg.bd3_block, mask_id, sc=sc), cfg.bd3_block


PASSES = {"mdlm": mdlm_pass, "bd3": bd3_pass}  # what fills [MASK]: the AR has one order, uniform no [MASK]
# how the network is read (--self-cond-read, None: no self-conditioning), and what the random order then estimates
READINGS = {
    None: "no self-conditioning: each order is the joint a one-token-a-step sampler draws from; random orders "
          "estimate the continuous-time NELBO without bias",
    "bound": "self-conditioning read as the bound reads it (a fresh first pass's prediction, 2 passes a token): "
             "random orders estimate the continuous-time NELBO without bias (the sampler's joint: --self-cond-read "
             "sampler)",
    "sampler": "self-conditioning read as the sampler reads it (the previous pass's prediction): each order is the "
               "joint a one-token-a-step sampler draws from, the mixture the random-order sampler's own law; random "
               "orders do NOT estimate the bound (--self-cond-read bound)",
}


def parse_args(argv):
    p = ArgParser(prog="dev/order_nll.py", description="Does the order a diffusion network (mdlm, bd3) decodes in "
                  "change how good its joint is? The exact NLL of its joint, reveal order by order.")
    p.add_argument("checkpoint", type=model_path, help="an mdlm or bd3 model.pt written by train.py")
    p.add_argument("--orders", type=list_of(ORDERS), default="l2r,random",
                   help=f"comma-separated, each scored and paired against the first: {', '.join(ORDERS)}")
    p.add_argument("--n-windows", type=at_least(2, "a standard error"), default=128,
                   help="fixed windows of --split, evenly spaced (scripts/eval.py's)")
    p.add_argument("--split", choices=SPLITS, default="test", help="whose windows, as scripts/eval.py --split: test "
                   "reports, dev chooses")
    p.add_argument("--batch-size", type=at_least(1), default=128, help="windows read in one forward pass")
    p.add_argument("--seed", type=seed, default=0, help="seeds the random orders (random, a sampled mixture's)")
    p.add_argument("--self-cond-read", choices=SC_READS, default="bound",
                   help="a self-conditioned network's input at each pass: a fresh first pass's prediction (the bound's "
                        "reading: random orders estimate the bound) or the previous pass's (the sampler's joint)")
    p.add_argument("--mixture-k", type=at_least(2, "a mixture"), default=None,
                   help=f"--orders mixture over blocks above {EXACT_BLOCK} positions (mdlm's window): the random "
                        f"orders of its importance-weighted bound (each costs one random order; default {MIXTURE_K})")
    p.add_argument("--semi-ar-length", type=at_least(1), default=0,
                   help=f"--orders mixture of an mdlm network sampled semi-autoregressively (inference.py "
                        f"--semi_ar_length S): blocks of S <= {EXACT_BLOCK} left to right, the mixture in each, exact")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--json", type=output, default="", help="write the figures here, per window too (to pair runs)")
    return p.parse_args(argv)


def windows_sha(windows):
    """A fingerprint of the windows scored (their token ids): a figure paired against another's must read the same."""
    return hashlib.sha256(windows.cpu().numpy().tobytes()).hexdigest()[:16]


def mean_se(v):
    """(mean, standard error of the mean) of the per-window figures v (N,)."""
    return v.mean().item(), (v.std() / math.sqrt(len(v))).item()


def check_network(path, objective, model):
    """Refuse what has no time-free joint to score: an objective without [MASK], a network that reads the time."""
    if PASSES.get(objective) is None:
        raise UserError(f"{path} is a {objective} model: order_nll.py reads masked diffusion (mdlm) "
                        f"and block diffusion (bd3) checkpoints")
    if model.args.time_cond != "none":
        raise UserError(f"{path} reads the diffusion time (time_cond={model.args.time_cond}): a reveal "
                        f"order tells it no time, so its orders define no joint and random ones do not estimate its "
                        f"bound; give a network trained with --time_cond=none (the baby and cpu presets' recipe)")


def check_flags(args, argv, cfg, model):
    """Refuse what the network cannot be scored by (check_network) and a flag that cannot apply to it; returns whether
    the mixture is summed exactly."""
    semi, L = args.semi_ar_length, cfg.block_size
    blocks = OBJECTIVES[cfg.objective].BLOCKS  # bd3: its own blocks, read side by side
    S = cfg.bd3_block if blocks else L
    exact = semi or S <= EXACT_BLOCK
    if "causal" in args.orders and not cfg.dual_ar:
        raise UserError(f"--orders causal reads the AR mode of a network trained with --dual_ar; {args.checkpoint} "
                        f"is a {cfg.objective} network trained without it: drop causal")
    drawn = "random" in args.orders or ("mixture" in args.orders and not exact)  # what --seed seeds
    if "--seed" in typed(argv) and not drawn:
        raise UserError(f"--seed draws random orders, and --orders {','.join(args.orders)} draws none (l2r, r2l and "
                        f"causal are fixed, this mixture is summed exactly): drop --seed")
    check_network(args.checkpoint, cfg.objective, model)
    if "--self-cond-read" in typed(argv) and not model.args.self_cond:
        raise UserError(f"--self-cond-read picks how a self-conditioned network is read; {args.checkpoint} was trained "
                        f"without self-conditioning: drop --self-cond-read")
    if ("mixture" in args.orders and model.args.self_cond and args.self_cond_read == "sampler"
            and (semi or S) > EXACT_ORDERS):
        raise UserError(f"--orders mixture --self-cond-read sampler sums a block's S! orders, each read as the sampler "
                        f"reads it, up to blocks of {EXACT_ORDERS}: give an mdlm network --semi-ar-length 4, or a bd3 "
                        f"network of blocks <= {EXACT_ORDERS}")
    if semi and blocks:
        raise UserError(f"--semi-ar-length {semi} scores the mixture of an mdlm network read in blocks; give it "
                        f"with --orders mixture on an mdlm checkpoint ({args.checkpoint} is {cfg.objective}: bd3 has "
                        f"its blocks)")
    if semi and (L % semi or semi > EXACT_BLOCK):
        raise UserError(f"--semi-ar-length {semi}: give a divisor of the window ({L}) of at most {EXACT_BLOCK}, the "
                        f"largest block summed exactly")
    if args.mixture_k is not None and exact:
        raise UserError(f"--mixture-k {args.mixture_k} sets the orders of a sampled mixture, and this call sums its "
                        f"mixture exactly: drop --mixture-k")
    return exact


def nll_by_pass(order, model, cfg, full, args, block, sc_read, mask_id, generator, device):
    """One order's NLL over the windows full (N, L + 1) (their last L tokens scored), batch by batch: (N, L) float64,
    each row's tokens in the order the passes reveal them, so a row's quarters are the order's; for the mixture, which
    has no pass order, (N, n_blocks), each block's NLL."""
    L, V = cfg.block_size, model.args.vocab_size
    pass_of = PASSES[cfg.objective]
    parts = []
    for i in range(0, len(full), args.batch_size):
        x = full[i:i + args.batch_size, 1:].to(device)
        logits_of = pass_of(model, cfg, x, mask_id)[0]
        if order == "mixture":
            parts.append(mixture_nll(logits_of, x, block, mask_id, V, sc_read, args.mixture_k or MIXTURE_K, generator,
                                     args.semi_ar_length).cpu())
            continue
        perm = order_positions("l2r" if order == "causal" else order, len(x), L, generator, block)
        if order == "causal":  # the AR mode reads the whole window, its first token as context
            nll = causal_nll(model, full[i:i + args.batch_size].to(device), mask_id)
        else:
            nll = ordered_nll(logits_of, x, perm, mask_id, V, sc_read)
        parts.append(torch.gather(nll.cpu(), 1, perm.transpose(1, 2).reshape(len(x), L)))  # pass by pass
    return torch.cat(parts)


def reading(quarters, semi, exact, k):
    """How an order's figure was read, for its printed line: by quarter of the order, or how the mixture was summed."""
    if quarters:
        return f"by quarter of the order {', '.join(f'{v:.3f}' for v in quarters)}"
    if semi:
        return f"exact, semi-autoregressive blocks of {semi}"
    return "exact" if exact else f"a bound over {k} random orders a block"


def main(argv):
    args = parse_args(argv)
    with own_flags(args):  # refusals name this script's flags
        score_orders(args, argv)


def score_orders(args, argv):
    """Each order's exact NLL of the windows (and --json)."""
    for flag, v in (("--mixture-k", args.mixture_k), ("--semi-ar-length", args.semi_ar_length)):
        if v and "mixture" not in args.orders:
            raise UserError(f"{flag} {v} acts only with --orders mixture, and --orders {','.join(args.orders)} asks "
                            f"for no mixture: add mixture, or drop {flag}")
    device = pick_device(args.device)
    model, _, cfg, tok = open_checkpoint(args.checkpoint, device)
    exact = check_flags(args, argv, cfg, model)
    L = cfg.block_size
    k = args.mixture_k or MIXTURE_K
    sc_read = args.self_cond_read if model.args.self_cond else None
    _, tr, va, _ = prepare_data(cfg, tok, verbose=False)
    full, cpt = report_windows(tok, tr, va, args.split, args.n_windows, L)  # eval.py's windows; the last L scored
    g = torch.Generator().manual_seed(args.seed)
    block = PASSES[cfg.objective](model, cfg, full[:1, 1:], tok.mask_id)[1]
    each = f"in each block of {block} ({block} passes a window)" if block else f"({L} passes a window)"
    print(f"{args.checkpoint}: {len(full)} windows x {L} tokens, one token a pass {each}, {device}")
    print(f"  {READINGS[sc_read]}")
    first = args.orders[0]
    res, per_window = {}, {}
    for order in args.orders:
        t0 = time.time()
        by_step = nll_by_pass(order, model, cfg, full, args, block, sc_read, tok.mask_id, g, device)
        per_window[order] = by_step.sum(1) / L
        m, se = mean_se(per_window[order])
        q = None if order == "mixture" else [by_step[:, j * L // 4:(j + 1) * L // 4].mean().item() for j in range(4)]
        res[order] = dict(nats_per_token=m, se=se, bits_per_char=m / cpt / math.log(2), by_quarter=q,
                          per_window=per_window[order].tolist())  # pairs two checkpoints on the same windows
        diff = ""
        if order != first:
            paired = res[order]["paired_vs_" + first] = list(mean_se(per_window[order] - per_window[first]))
            diff = "  {:+.4f} +- {:.4f} paired against {}".format(*paired, first)
        print(f"  {order:>7}: {m:.4f} +- {se:.4f} nats/token, {res[order]['bits_per_char']:.4f} bits/char; "
              f"{reading(q, args.semi_ar_length, exact, k)}{diff}  ({time.time() - t0:.0f} s)")
    if args.json:
        write_json(args.json, dict(checkpoint=args.checkpoint, objective=cfg.objective, block=block or L,
                                   split=args.split, n_windows=len(full), tokens=L, windows_sha=windows_sha(full),
                                   chars_per_token=cpt, seed=args.seed, semi_ar_length=args.semi_ar_length,
                                   mixture_k=k if "mixture" in args.orders and not exact else None,
                                   self_cond_read=sc_read, orders=res))


if __name__ == "__main__":
    run_cli(main)
