"""Masked (absorbing-state) diffusion: schedule, forward corruption, losses, the ELBO and its validation
estimate with a standard error (samplers: sampler.py).

Discrete time t in {0..T}. alpha(t) is the probability that a token is still visible:
alpha(0) = 1 (clean) and alpha(T) = 0 (all [MASK]). The negative ELBO (an upper bound
on -log p(x0), Austin et al. 2021; Sahoo et al. 2024, MDLM) is

    NELBO = sum_t E_q(xt|x0) [ w(t) * sum_{i masked in xt} -log p(x0_i | xt) ],
    w(t)  = (alpha(t-1) - alpha(t)) / (1 - alpha(t)),

estimated by drawing t uniformly from 1..T and multiplying by T. Per-token figures
divide by the sequence length L (not by the number of masked tokens).

    python -c "from diffusion import Schedule; s = Schedule(100); print(s.alpha[:3], s.weight[1:4])"
"""
import math

import torch
import torch.nn.functional as F

from diffusion_bd3 import bd3_loss

OBJECTIVES = ("mdlm", "uniform", "ar", "bd3")  # masked diffusion (diffusion_loss) | uniform-state (uniform.py) | causal
                                               # (ar_loss) | block diffusion (diffusion_bd3.py)
SCHEDULES = ("cosine", "linear", "cosine_offset")  # Schedule's kinds
LOSS_TYPES = ("elbo", "masked_ce", "all_ce")  # diffusion_loss's objectives
LN2 = math.log(2)


class Schedule:
    """alpha(t), the mask probability 1 - alpha(t) and the ELBO weight w(t), tabulated for t = 0..T (float64)."""

    def __init__(self, T, kind="cosine"):
        t = torch.arange(T + 1, dtype=torch.float64)
        if kind == "cosine":
            alpha = torch.cos(0.5 * math.pi * t / T)
        elif kind == "linear":
            alpha = 1.0 - t / T
        elif kind == "cosine_offset":
            # offset s = 0.008 (Nichol & Dhariwal 2021): the slope at t = 0 is no longer zero, so the first
            # steps mask more (t=1 of 100: 3.2e-4 vs 1.2e-4); divided by its t = 0 value so alpha(0) = 1
            s = 0.008
            alpha = torch.cos(0.5 * math.pi * (t / T + s) / (1 + s)) / math.cos(0.5 * math.pi * s / (1 + s))
        else:
            raise ValueError(f"unknown schedule {kind!r}")
        alpha[0], alpha[T] = 1.0, 0.0  # exact endpoints (cos(pi/2) is 6e-17, not 0)
        self.T, self.kind, self.alpha = T, kind, alpha
        self.weight = torch.zeros(T + 1, dtype=torch.float64)  # w(0) unused
        self.weight[1:] = (alpha[:-1] - alpha[1:]) / (1.0 - alpha[1:])

    def mask_prob(self, t):
        return 1.0 - self.alpha.to(t.device)[t]


def stratified_times(n, T, generator=None, device="cpu", offset=0, total=None, u=None):
    """n times in 1..T, one per stratum of [0, 1): t_i = floor((i + u) / total * T) + 1 with a
    shared u ~ U[0,1) (antithetic / low-discrepancy t, MDLM). `offset`/`total` place these n
    draws inside a larger (e.g. multi-rank) batch so the strata cover the global batch; pass the
    same u on every rank."""
    total = total or n
    if u is None:
        u = torch.rand((), generator=generator, dtype=torch.float64)
    i = torch.arange(offset, offset + n, dtype=torch.float64)
    return stratum_time(i, u, total, T).to(device)


def stratum_time(i, u, total, T):
    """The time in 1..T of stratum i (+ offset u in [0, 1)) of `total` equal slices of [0, 1)."""
    return (torch.floor((i + u) / total * T).long() + 1).clamp_(1, T)


def corrupt(x0, t, schedule, mask_id, generator=None, span=0):
    """q(xt | x0): every token independently becomes [MASK] with probability 1 - alpha(t).
    span > 1: span masking instead; aligned runs of `span` tokens (random phase per sequence) are
    masked whole, each with probability 1 - alpha(t), so every token's mask probability is unchanged.
    x0 (B, L) long, t (B,) long. Returns xt (B, L) and the boolean mask (B, L)."""
    p = schedule.mask_prob(t).to(torch.float32)[:, None]  # (B, 1)
    if span > 1:  # CPU draws: same on any device
        B, L = x0.shape
        run = (torch.arange(L)[None, :] + torch.randint(0, span, (B, 1), generator=generator)) // span  # (B, L)
        u = torch.rand(B, L // span + 2, generator=generator).gather(1, run).to(x0.device)
    else:
        u = torch.rand(x0.shape, generator=generator, device="cpu").to(x0.device)
    masked = u < p
    return torch.where(masked, torch.full_like(x0, mask_id), x0), masked


def predict_logits(model, xt, t, mask_id, positions=None):
    """Model logits (B, L, V) in float32 with the [MASK] logit at -inf: x0 is never [MASK].
    With positions (B, L) bool, only those rows: (N, V)."""
    logits = model(xt, t) if positions is None else model(xt, t, positions=positions)
    return logits.index_fill(-1, torch.tensor([mask_id], device=logits.device), float("-inf"))


def diffusion_loss(model, x0, schedule, mask_id, loss_type="elbo", generator=None, t=None, masked_only=False,
                   mask_span=0):
    """One training/eval pass. Returns (loss to optimise, per-sequence NELBO in nats/token (B,), dict).
    The NELBO estimate is returned whatever loss_type is trained, so validation always reports the bound.
    masked_only: run the output head on masked positions only (same NELBO; aux logits are then (N, V))."""
    B, L = x0.shape
    if t is None:
        t = stratified_times(B, schedule.T, generator, x0.device)
    # mask_span > 1 masks aligned runs whole (corrupt's span). The same weighted sum is then the NELBO of a
    # run-level absorbing process (a run is one super-token; the factorised denoiser gives -log p(run) = sum
    # of its CEs; the random phase is a latent with a uniform prior), so it is still an upper bound on
    # -log p(x0), but for a sampler that reveals whole runs: not the per-token bound, which validation
    # (evaluate below, mask_span=0) always reports.
    xt, masked = corrupt(x0, t, schedule, mask_id, generator, span=mask_span)
    if masked_only and loss_type != "all_ce":  # unmasked positions carry zero loss: skip their logits
        logits = predict_logits(model, xt, t, mask_id, positions=masked)  # (N, V)
        ce_m = F.cross_entropy(logits, x0[masked], reduction="none")  # (N,)
        ce = torch.zeros(B, L, dtype=ce_m.dtype, device=x0.device).masked_scatter(masked, ce_m)  # (B, L), 0 elsewhere
    else:
        logits = predict_logits(model, xt, t, mask_id)
        ce = F.cross_entropy(logits.view(B * L, -1), x0.view(-1), reduction="none").view(B, L)
    w = (schedule.T * schedule.weight.to(x0.device)[t]).float()  # (B,) importance weight T * w(t)
    nelbo = (w[:, None] * ce * masked).sum(1) / L  # (B,) nats per token, normalised by L
    if loss_type == "elbo":
        loss = nelbo.mean()
    elif loss_type == "masked_ce":
        loss = (ce * masked).sum() / masked.sum().clamp(min=1)
    elif loss_type == "all_ce":
        loss = ce.mean()
    else:
        raise ValueError(f"unknown loss_type {loss_type!r}")
    return loss, nelbo.detach(), dict(t=t, masked=masked, logits=logits.detach(), ce=ce.detach())


def ar_loss(model, x):
    """Next-token loss of the causal baseline. x (B, L+1): predict x[:, 1:] from x[:, :-1].
    Returns (loss, per-sequence NLL in nats/token (B,))."""
    logits = model(x[:, :-1])
    nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), x[:, 1:].reshape(-1), reduction="none")
    nll = nll.view(x.size(0), -1).mean(1)
    return nll.mean(), nll.detach()


# ---------------------------------------------------------------------------- validation: the bound with an error bar
# The bound is estimated per sequence with n_t stratified times t_k = floor((k + u) / n_t * T) + 1
# (u ~ U[0,1) per sequence), which is unbiased for (1/T) sum_t of the per-t terms; the standard
# error is the spread of those per-sequence estimates over the fixed validation windows. mc_se_max
# bounds the part of it due to the random t and masks, from the differences of neighbouring strata
# ("collapsed strata", Cochran 1977 §5A.12): an upper bound, since it also counts the drift between strata.

@torch.no_grad()
def evaluate(model, windows, schedule, mask_id, objective, batch_size, device, ctx, n_t=1, seed=0,
             chars_per_token=1.0, details=False, entropy_bins=10, block=0):
    """Bound (mdlm, uniform; bd3 with blocks of `block` tokens) or exact NLL (ar) over fixed windows (N, L) or (N, L+1) for ar.
    Returns dict: nats_per_token, se, bits_per_char, bpc_se, ppl (per token) and, with
    details, recon_acc and entropy_by_t (list of (t_lo, t_hi, mean entropy in nats)): at the masked
    positions for mdlm, at the positions the noise changed for uniform."""
    was_training = model.training
    model.eval()
    g = torch.Generator().manual_seed(seed)
    per_seq, mc_var, correct, n_masked = [], [], 0, 0
    T = schedule.T
    ent_sum = torch.zeros(entropy_bins, dtype=torch.float64)
    ent_cnt = torch.zeros(entropy_bins, dtype=torch.float64)
    # t stratified over all windows too: window w's k-th draw lies in stratum k * N + perm[w] of N * n_t equal
    # slices of [0, 1), so even one draw per window covers the time axis evenly (same expectation, far less noise)
    N = len(windows)
    perm = torch.randperm(N, generator=g)
    if objective == "bd3":  # every block has its own t: a permutation per block position, so blocks are unrelated
        n_blocks = windows.size(1) // block
        perm = torch.stack([perm] + [torch.randperm(N, generator=g) for _ in range(n_blocks - 1)], 1)  # (N, n_blocks)
    for i in range(0, len(windows), batch_size):
        x = windows[i:i + batch_size].to(device)
        if objective == "ar":
            with ctx:
                _, nll = ar_loss(model, x)
            per_seq.append(nll.double().cpu())
            continue
        ests = torch.zeros(len(x), n_t, dtype=torch.float64)  # (B, n_t) one estimate per stratum
        u = torch.rand(len(x), n_t, *perm.shape[1:], generator=g, dtype=torch.float64)
        for k in range(n_t):
            t = stratum_time(k * N + perm[i:i + len(x)], u[:, k], N * n_t, T).to(device)  # (B,) or (B, n_blocks)
            with ctx:
                if objective == "uniform":
                    from uniform import uniform_loss  # here, not at the top: uniform.py builds on this module
                    _, nelbo, aux = uniform_loss(model, x, schedule, mask_id, generator=g, t=t)
                    m, pred = aux["noised"], aux["real"][aux["logits"].argmax(-1)]
                elif objective == "bd3":
                    _, nelbo, aux = bd3_loss(model, x, schedule, mask_id, block, generator=g, t=t)
                    t = aux["t_tok"]  # (B, L): the entropy bins below go by each token's own t
                    m, pred = aux["masked"], aux["logits"].argmax(-1)
                else:
                    _, nelbo, aux = diffusion_loss(model, x, schedule, mask_id, generator=g, t=t)
                    m, pred = aux["masked"], aux["logits"].argmax(-1)
            ests[:, k] = nelbo.double().cpu()
            if details:
                logits = aux["logits"]
                correct += ((pred == x) & m).sum().item()
                n_masked += m.sum().item()
                logp = logits.log_softmax(-1)
                ent = -(logp.exp() * logp.nan_to_num(neginf=0.0)).sum(-1)  # (B, L)
                if t.dim() == 1:
                    b = ((t - 1) * entropy_bins // T).cpu()
                    ent_sum.index_add_(0, b, (ent * m).sum(1).double().cpu())
                    ent_cnt.index_add_(0, b, m.sum(1).double().cpu())
                else:  # bd3: per token
                    b = ((t - 1) * entropy_bins // T).flatten().cpu()
                    ent_sum.index_add_(0, b, (ent * m).flatten().double().cpu())
                    ent_cnt.index_add_(0, b, m.flatten().double().cpu())
        per_seq.append(ests.mean(1))
        if n_t > 1:  # strata (0,1), (2,3), ...: Var(mean) ~ sum_j d_j^2 / n_t^2, scaled for an odd one out
            d = ests[:, 1:n_t - n_t % 2:2] - ests[:, 0:n_t - n_t % 2:2]  # (B, n_t // 2)
            mc_var.append(d.square().sum(1) * (n_t / (2 * d.size(1))) / n_t ** 2)
    model.train(was_training)
    v = torch.cat(per_seq)
    mean, se = v.mean().item(), (v.std().item() / math.sqrt(len(v)) if len(v) > 1 else float("nan"))
    out = dict(nats_per_token=mean, se=se, bits_per_char=mean / chars_per_token / LN2,
               bpc_se=se / chars_per_token / LN2, ppl=math.exp(mean), n_windows=len(v), n_t=n_t)
    if mc_var:
        out["mc_se_max"] = torch.cat(mc_var).sum().sqrt().item() / len(v)
    if details and objective != "ar":
        out["recon_acc"] = correct / max(n_masked, 1)
        edges = [round(1 + j * T / entropy_bins) for j in range(entropy_bins + 1)]
        out["entropy_by_t"] = [(edges[j], edges[j + 1] - 1, (ent_sum[j] / ent_cnt[j]).item() if ent_cnt[j] else float("nan"))
                               for j in range(entropy_bins)]
    return out
