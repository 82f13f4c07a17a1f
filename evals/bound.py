"""Any objective's validation score on fixed windows, ± a standard error: the bound (diffusion) or
exact NLL (AR), per token and per character. evaluate() scores train.py's evals and eval.py's.

The bound takes n_t times per window, stratified over all N windows: window w's k-th draw lies in
slice k * N + perm[w] of N * n_t equal slices of [0, 1), unbiased for (1/T) sum_t of the per-t
terms. The se is the spread of per-window estimates; mc_se_max bounds its Monte Carlo share from
above by neighbouring strata's differences ("collapsed strata", Cochran 1977 §5A.12).

    python scripts/eval.py artifacts/models/baby/model.pt --n-samples 0   # 128 windows x 8 times
"""
import math
from contextlib import nullcontext
from dataclasses import replace

import torch

from diffusion import Schedule, stratum_time
from evals import REPORT
from objectives import OBJECTIVES
from utils.dataloader import chars_per_token, fixed_windows, split_ids

LN2 = math.log(2)  # nats in a bit
ENTROPY_BINS = 10  # time bins of evaluate's entropy_by_t


def paired_difference(a, b):
    """(mean, se) of b - a, two runs' per-window figures: far less noisy than either run's ±."""
    d = [y - x for x, y in zip(a, b)]
    mean = sum(d) / len(d)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in d) / (len(d) - 1) / len(d))


def report_windows(tok, train_ids, val_ids, split, n_windows, L):
    """A split's fixed windows (n, L + 1), and chars per scored token of those (BPE's: ~1 % off)."""
    ids = split_ids(train_ids, val_ids, split, L + 1)
    windows = fixed_windows(ids, n_windows, L + 1)  # every objective scores the same last L tokens of each
    return windows, chars_per_token(tok, windows[:, 1:])


@torch.no_grad()
def ar_mode(model, cfg, windows, mask_id, batch_size):
    """Mean NLL per window (N,), on the host, under the AR mode (--dual_sample's law), or None."""
    obj, dev = OBJECTIVES[cfg.objective], next(model.parameters()).device
    parts = [obj.ar_nll(model, windows[i:i + batch_size].to(dev), cfg, mask_id)
             for i in range(0, len(windows), batch_size)]
    return None if parts[0] is None else torch.cat(parts).cpu()


def reported(model, cfg, tok, train_ids, val_ids, ctx=nullcontext()):
    """evaluate() on REPORT's windows."""
    windows, cpt = report_windows(tok, train_ids, val_ids, REPORT["split"], REPORT["n_windows"], cfg.block_size)
    with ctx:
        return evaluate(model, windows, replace(cfg, batch_size=REPORT["batch_size"]), tok, n_t=REPORT["n_t"],
                        seed=REPORT["seed"], chars_per_token=cpt)


@torch.no_grad()
def evaluate(model, windows, cfg, tok, n_t=1, seed=0, chars_per_token=1.0, details=False):
    """Score the last L tokens of windows (N, L + 1) with cfg's objective, the AR reading the first
    as context (~0.015 nats/char in its favour at L = 64: dev/LOG.md, "From AR to diffusion at the
    baby budget"). Returns summary()'s dict; details adds recon_acc and entropy_by_t by time bin."""
    obj, device = OBJECTIVES[cfg.objective], next(model.parameters()).device
    windows = windows[:, 1 - obj.WINDOW:].contiguous()  # an AR window keeps its first token as context
    was_training = model.training
    model.eval()
    g = torch.Generator().manual_seed(seed)
    schedule = Schedule(cfg.diffusion_steps, cfg.schedule)
    T = schedule.T
    per_seq, mc_var = [], []  # each window's estimate (nats/token); bounds on each batch's Monte Carlo variance
    correct, n_scored = 0, 0  # details: scored positions the argmax gets right, of all scored
    # details: each time bin's summed entropy and count of scored tokens
    ent_sum, ent_cnt = torch.zeros(ENTROPY_BINS, dtype=torch.float64), torch.zeros(ENTROPY_BINS, dtype=torch.float64)
    N, k_times = len(windows), obj.eval_times(cfg, windows.size(1))
    perm = torch.stack([torch.randperm(N, generator=g) for _ in range(max(k_times, 1))], 1)  # (N, k): see the top
    for i in range(0, N, cfg.batch_size):
        x = windows[i:i + cfg.batch_size].to(device)
        if k_times == 0:  # exact: one pass, no times
            nll, _ = obj.bound(model, x, cfg, schedule, tok, None, g)
            per_seq.append(nll.double().cpu())
            continue
        ests = torch.zeros(len(x), n_t, dtype=torch.float64)  # (B, n_t) one estimate per stratum
        u = torch.rand(len(x), n_t, k_times, generator=g, dtype=torch.float64)
        for k in range(n_t):
            t = stratum_time(k * N + perm[i:i + len(x)], u[:, k], N * n_t, T).to(device)  # (B, k_times)
            nelbo, aux = obj.bound(model, x, cfg, schedule, tok, t, g)
            ests[:, k] = nelbo.double().cpu()
            if details:
                m, logp = aux["scored"], aux["logits"].log_softmax(-1)
                correct += ((aux["pred"] == x) & m).sum().item()
                n_scored += m.sum().item()
                ent = -(logp.exp() * logp.nan_to_num(neginf=0.0)).sum(-1)  # (B, L)
                b = ((aux["t_tok"] - 1) * ENTROPY_BINS // T).flatten().cpu()  # each token's own t
                ent_sum.index_add_(0, b, (ent * m).flatten().double().cpu())
                ent_cnt.index_add_(0, b, m.flatten().double().cpu())
        per_seq.append(ests.mean(1))
        if n_t > 1:  # strata (0,1), (2,3), ...: Var(mean) ~ sum_j d_j^2 / n_t^2, scaled for an odd one out
            d = ests[:, 1:n_t - n_t % 2:2] - ests[:, 0:n_t - n_t % 2:2]  # (B, n_t // 2)
            mc_var.append(d.square().sum(1) * (n_t / (2 * d.size(1))) / n_t ** 2)
    model.train(was_training)
    out = summary(torch.cat(per_seq), mc_var, n_t, chars_per_token)
    if details and k_times:
        out["recon_acc"] = correct / max(n_scored, 1)
        edges = [round(1 + j * T / ENTROPY_BINS) for j in range(ENTROPY_BINS + 1)]
        mean = (ent_sum / ent_cnt).tolist()  # nan where a bin saw no token
        out["entropy_by_t"] = [(edges[j], edges[j + 1] - 1, mean[j]) for j in range(ENTROPY_BINS)]
    return out


def summary(v, mc_var, n_t, chars_per_token):
    """evaluate's figures from per-window estimates v (N,) in nats/token: mean, se (per token and
    char), perplexity, v (for paired comparisons), and mc_se_max from mc_var (empty if n_t = 1)."""
    mean = v.mean().item()
    se = v.std().item() / math.sqrt(len(v)) if len(v) > 1 else float("nan")
    out = dict(nats_per_token=mean, se=se, bits_per_char=mean / chars_per_token / LN2,
               bpc_se=se / chars_per_token / LN2, ppl=math.exp(mean), n_windows=len(v), n_t=n_t,
               per_window=v.tolist())
    if mc_var:
        out["mc_se_max"] = torch.cat(mc_var).sum().sqrt().item() / len(v)
        out["mc_bpc_max"] = out["mc_se_max"] / chars_per_token / LN2  # in the units of the ± it is a share of
    return out
