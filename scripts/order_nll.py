"""Exact NLL of a diffusion network's joint, reveal order by order (the laws each order scores: learning.md §2-3):
each token of a held-out window scored by the pass that reveals it, one a pass in a fixed order (l2r, r2l, random),
the NLL of the AR model the order defines. `mixture`: the random-order sampler's own law, below the NELBO by Jensen's
gap (mixture_nll); `causal`: the AR mode of an mdlm network trained with --dual_ar, read as the AR reads a window.

    python scripts/order_nll.py artifacts/models/baby/model.pt --orders random,l2r,r2l --n-windows 32 --device cpu
    python scripts/order_nll.py artifacts/models/baby_bd3/model.pt --orders random,l2r    # the order inside each block
    python scripts/order_nll.py artifacts/models/baby/model.pt --self-cond-read sampler    # the sampler's joint
    python scripts/order_nll.py artifacts/models/baby_bd3/model.pt --orders random,mixture    # the exact NLL
    python scripts/order_nll.py artifacts/models/baby/model.pt --orders mixture --semi-ar-length 4    # exact too

The network must read no time (time_cond none: an order defines none). Windows are scripts/eval.py's (--split,
--n-windows); bd3 reads each block after the clean blocks before it, every block's k-th token in the same pass.
"""
import hashlib
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

import objectives  # noqa: E402
from bd3 import bd3_logits  # noqa: E402
from common import predict_logits, self_condition_input  # noqa: E402
from diffusion import causal_nll  # noqa: E402
from evals.bound import report_windows  # noqa: E402
from evals.samples import open_checkpoint, write_json  # noqa: E402
from utils.dataloader import SPLITS, prepare_data  # noqa: E402
from utils.dist import pick_device  # noqa: E402
from utils.cli import ArgParser, at_least, list_of, output  # noqa: E402
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
    """NLL (B, L) float64 of each token of x (B, L), all masked at first, pass k revealing perm[:, :, k] (a position a
    block), each scored by the pass that sees exactly the tokens revealed before it. logits_of(xt, sc): (B, L, V),
    [MASK] at -inf. self_cond: None, 'bound' (a fresh first pass's prediction a pass) or 'sampler' (the previous's)."""
    assert self_cond in (None, *SC_READS), self_cond
    B, L = x.shape
    perm = perm.to(x.device)
    rows = torch.arange(B, device=x.device)[:, None]
    xt = torch.full_like(x, mask_id)
    last = torch.zeros(B, L, vocab_size, device=x.device)  # the sampler's latest prediction
    nll = torch.zeros(B, L, dtype=torch.float64, device=x.device)
    for k in range(perm.size(2)):
        masked = xt == mask_id
        sc = (self_condition_input(lambda r: logits_of(xt, None), masked, 1.0) if self_cond == "bound" else
              last * masked[..., None] if self_cond == "sampler" else None)  # the latest prediction where still masked
        logits = logits_of(xt, sc)
        last = torch.softmax(logits, -1) if self_cond == "sampler" else last
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
    position of every block a pass: -log mean_order p_order(block) over the S! orders, exact up to EXACT_BLOCK
    positions; beyond, -log mean_j p_order_j(block) over k random orders, whose expectation lies between the mixture's
    NLL and the mean order's, tighter as k grows. semi_ar S (mdlm, block 0): blocks of S left to right."""
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
        sc = self_condition_input(lambda r: logits_of(xt, None), xt == mask_id, 1.0) if self_cond == "bound" else None
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
    p = ArgParser(prog="scripts/order_nll.py",
                  description="Exact NLL of a diffusion network's joint (mdlm, bd3), reveal order by order.")
    p.add_argument("checkpoint", help="an mdlm or bd3 model.pt written by train.py")
    p.add_argument("--orders", type=list_of(ORDERS), default="l2r,random", help=f"from {', '.join(ORDERS)}")
    p.add_argument("--n-windows", type=at_least(2, "a standard error"), default=128, help="fixed windows of --split")
    p.add_argument("--split", choices=SPLITS, default="test", help="as scripts/eval.py's: test reports, dev chooses")
    p.add_argument("--batch-size", type=at_least(1), default=128)
    p.add_argument("--seed", type=int, default=0, help="seeds the random orders")
    p.add_argument("--self-cond-read", choices=SC_READS, default="bound", help="a self-conditioned network's input: "
                   "a fresh first pass's prediction (the bound's reading) or the previous pass's (the sampler's)")
    p.add_argument("--mixture-k", type=at_least(2, "a mixture"), default=None, help=f"--orders mixture over blocks "
                   f"above {EXACT_BLOCK} positions (mdlm's window): random orders of its bound (default {MIXTURE_K})")
    p.add_argument("--semi-ar-length", type=at_least(1), default=0, help=f"--orders mixture of an mdlm network "
                   f"sampled semi-autoregressively (inference.py --semi_ar_length S, S <= {EXACT_BLOCK}): exact")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", type=output, default="", help="write the figures here")
    return p.parse_args(argv)


def windows_sha(windows):
    """A fingerprint of the windows scored (their token ids): a figure paired against another's must read the same."""
    return hashlib.sha256(windows.cpu().numpy().tobytes()).hexdigest()[:16]


def mean_se(v):
    return v.mean().item(), (v.std() / math.sqrt(len(v))).item()


def check_flags(args, argv, cfg, model):
    """Refuse a network with no time-free joint (no [MASK], or it reads the time) and a flag that cannot apply to it;
    returns whether the mixture is summed exactly."""
    if "causal" in args.orders and not cfg.dual_ar:
        raise UserError(f"--orders causal reads the AR mode that --dual_ar trains; {args.checkpoint} is a "
                        f"{cfg.objective} network trained without it: drop causal")
    if PASSES.get(cfg.objective) is None:
        raise UserError(f"{args.checkpoint} is a {cfg.objective} model: order_nll.py reads masked diffusion (mdlm) "
                        f"and block diffusion (bd3) checkpoints")
    if model.args.time_cond != "none":
        raise UserError(f"{args.checkpoint} reads the diffusion time (time_cond={model.args.time_cond}): a reveal "
                        f"order tells it no time, so its orders define no joint and random ones do not estimate its "
                        f"bound; give a network trained with --time_cond=none (the baby and cpu presets' recipe)")
    semi, L = args.semi_ar_length, cfg.block_size
    blocks = objectives.get(cfg.objective).BLOCKS  # bd3: its own blocks, read side by side
    S = cfg.bd3_block if blocks else L
    if "--self-cond-read" in {w.split("=")[0] for w in argv} and not model.args.self_cond:
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
    exact = semi or S <= EXACT_BLOCK
    if args.mixture_k is not None and exact:
        raise UserError(f"--mixture-k {args.mixture_k} sets the orders of a sampled mixture, and this call sums its "
                        f"mixture exactly: drop --mixture-k")
    return exact


def main(argv):
    args = parse_args(argv)
    for flag, v in (("--mixture-k", args.mixture_k), ("--semi-ar-length", args.semi_ar_length)):
        if v and "mixture" not in args.orders:
            raise UserError(f"{flag} {v} acts only with --orders mixture, and --orders {','.join(args.orders)} asks "
                            f"for no mixture: add mixture, or drop {flag}")
    device = pick_device(args.device)
    model, _, cfg, tok = open_checkpoint(args.checkpoint, device)
    exact = check_flags(args, argv, cfg, model)
    semi, L, k, V = args.semi_ar_length, cfg.block_size, args.mixture_k or MIXTURE_K, model.args.vocab_size
    pass_of, sc_read = PASSES[cfg.objective], args.self_cond_read if model.args.self_cond else None
    _, tr, va, _ = prepare_data(cfg, tok, verbose=False)
    full, cpt = report_windows(tok, tr, va, args.split, args.n_windows, L)
    windows, g = full[:, 1:], torch.Generator().manual_seed(args.seed)  # eval.py's windows, their scored tokens
    block = pass_of(model, cfg, windows[:1], tok.mask_id)[1]
    each = f"in each block of {block} ({block} passes a window)" if block else f"({L} passes a window)"
    print(f"{args.checkpoint}: {len(windows)} windows x {L} tokens, one token a pass {each}, {device}")
    print(f"  {READINGS[sc_read]}")
    res, per_window = {}, {}
    for order in args.orders:
        t0, parts = time.time(), []
        for i in range(0, len(windows), args.batch_size):
            x = windows[i:i + args.batch_size].to(device)
            logits_of = pass_of(model, cfg, x, tok.mask_id)[0]
            if order == "mixture":  # (B, n_blocks) NLL of each block, no pass order to report
                parts.append(mixture_nll(logits_of, x, block, tok.mask_id, V, sc_read, k, g, semi).cpu())
                continue
            perm = order_positions("l2r" if order == "causal" else order, len(x), L, g, block)
            nll = (causal_nll(model, full[i:i + args.batch_size].to(device), tok.mask_id) if order == "causal" else
                   ordered_nll(logits_of, x, perm, tok.mask_id, V, sc_read)).cpu()
            parts.append(torch.gather(nll, 1, perm.transpose(1, 2).reshape(len(x), L)))  # pass by pass
        by_step = torch.cat(parts)  # (N, L) pass by pass; mixture: (N, n_blocks)
        per_window[order] = by_step.sum(1) / L
        m, se = mean_se(per_window[order])
        q = None if order == "mixture" else [by_step[:, j * L // 4:(j + 1) * L // 4].mean().item() for j in range(4)]
        res[order] = dict(nats_per_token=m, se=se, bits_per_char=m / cpt / math.log(2), by_quarter=q,
                          per_window=per_window[order].tolist())  # pairs two checkpoints on the same windows
        first, diff = args.orders[0], ""
        if order != first:
            paired = res[order]["paired_vs_" + first] = list(mean_se(per_window[order] - per_window[first]))
            diff = "  {:+.4f} +- {:.4f} paired against {}".format(*paired, first)
        how = (f"by quarter of the order {', '.join(f'{v:.3f}' for v in q)}" if q else
               f"exact, semi-autoregressive blocks of {semi}" if semi else
               "exact" if exact else f"a bound over {k} random orders a block")
        print(f"  {order:>7}: {m:.4f} +- {se:.4f} nats/token, {res[order]['bits_per_char']:.4f} bits/char; "
              f"{how}{diff}  ({time.time() - t0:.0f} s)")
    if args.json:
        write_json(args.json, dict(checkpoint=args.checkpoint, objective=cfg.objective, block=block or L,
                                   split=args.split, n_windows=len(windows), tokens=L, windows_sha=windows_sha(full),
                                   chars_per_token=cpt, seed=args.seed, semi_ar_length=semi,
                                   mixture_k=k if "mixture" in args.orders and not exact else None,
                                   self_cond_read=sc_read, orders=res))


if __name__ == "__main__":
    run_cli(main)
