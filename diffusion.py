"""Masked (absorbing-state) diffusion: schedule, forward corruption, losses, ELBO, reverse sampler.

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


class Schedule:
    """alpha(t), the mask probability 1 - alpha(t) and the ELBO weight w(t), tabulated for t = 0..T (float64)."""

    def __init__(self, T, kind="cosine"):
        t = torch.arange(T + 1, dtype=torch.float64)
        if kind == "cosine":
            alpha = torch.cos(0.5 * math.pi * t / T)
        elif kind == "linear":
            alpha = 1.0 - t / T
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
    t = torch.floor((i + u) / total * T).long() + 1
    return t.clamp_(1, T).to(device)


def corrupt(x0, t, schedule, mask_id, generator=None):
    """q(xt | x0): every token independently becomes [MASK] with probability 1 - alpha(t).
    x0 (B, L) long, t (B,) long. Returns xt (B, L) and the boolean mask (B, L)."""
    p = schedule.mask_prob(t).to(torch.float32)[:, None]  # (B, 1)
    u = torch.rand(x0.shape, generator=generator, device="cpu").to(x0.device)  # CPU draws: same on any device
    masked = u < p
    return torch.where(masked, torch.full_like(x0, mask_id), x0), masked


def predict_logits(model, xt, t, mask_id):
    """Model logits (B, L, V) in float32 with the [MASK] logit at -inf: x0 is never [MASK]."""
    logits = model(xt, t)
    return logits.index_fill(-1, torch.tensor([mask_id], device=logits.device), float("-inf"))


def diffusion_loss(model, x0, schedule, mask_id, loss_type="elbo", generator=None, t=None):
    """One training/eval pass. Returns (loss to optimise, per-sequence NELBO in nats/token (B,), dict).
    The NELBO estimate is returned whatever loss_type is trained, so validation always reports the bound."""
    B, L = x0.shape
    if t is None:
        t = stratified_times(B, schedule.T, generator, x0.device)
    xt, masked = corrupt(x0, t, schedule, mask_id, generator)
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


# ----------------------------------------------------------------------------- sampling

def filter_logits(logits, temperature=1.0, top_k=0, top_p=1.0):
    """Temperature, top-k and top-p (nucleus) on float64 logits (..., V). Returns log-probabilities."""
    logits = logits.double()
    if temperature > 0:
        logits = logits / temperature
    if top_k and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) >= top_p  # keep the smallest prefix whose mass reaches top_p
        drop[..., 0] = False
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits.log_softmax(-1)


def sample_tokens(logp, temperature, generator=None):
    """Draw one token per position from float64 log-probs (..., V); argmax when temperature == 0.
    float64 matters: float32 categorical sampling quietly lowers the temperature (Zheng et al. 2024)."""
    if temperature == 0:
        return logp.argmax(-1)
    probs = logp.exp().reshape(-1, logp.size(-1))
    draws = torch.multinomial(probs.cpu(), 1, generator=generator).to(logp.device)
    return draws.view(logp.shape[:-1])


def time_grid(T, steps):
    """Integer times T = t_0 > t_1 > ... > t_steps = 0 for `steps` reverse steps."""
    grid = torch.round(torch.linspace(T, 0, steps + 1, dtype=torch.float64)).long()
    assert len(torch.unique(grid)) == steps + 1, "steps must be <= T"
    return grid.tolist()


@torch.no_grad()
def sample(model, x, gen_mask, schedule, mask_id, steps, temperature=1.0, top_k=0, top_p=1.0,
           remask="refine", generator=None, on_step=None):
    """Reverse process t = T -> 0 in `steps` steps over a batch.

    x (B, L): the canvas; positions where gen_mask (B, L) is True are generated (start as
    [MASK]), all others are fixed text and are never changed. After the step t -> s, exactly
    round(n_gen * (1 - alpha(s))) generated positions stay masked: the least confident ones.
    remask='refine' (the reference behaviour): a committed token keeps the confidence it was
    committed with and is re-masked if newer candidates are more confident, so later steps can
    revise it. remask='none' (LLaDA): committed tokens are final.
    Candidates are drawn in float64 (argmax at temperature 0); the last step, into t = 0, is a
    greedy pass over whatever is still masked. on_step(dict) is called after every step.
    Returns (x, stats) with no [MASK] left in generated positions."""
    B, L = x.shape
    gen_mask = gen_mask.bool()
    x = torch.where(gen_mask, torch.full_like(x, mask_id), x)
    n_gen = gen_mask.sum(1)  # (B,)
    conf = torch.zeros(B, L, dtype=torch.float64, device=x.device)
    grid = time_grid(schedule.T, steps)
    for i in range(steps):
        t, s = grid[i], grid[i + 1]
        is_masked = (x == mask_id) & gen_mask
        final = s == 0
        logits = predict_logits(model, x, torch.full((B,), t, device=x.device, dtype=torch.long), mask_id)
        logp = filter_logits(logits, temperature, top_k, top_p)
        cand = sample_tokens(logp, 0.0 if final else temperature, generator)
        cand_conf = logp.gather(-1, cand[..., None]).squeeze(-1).exp()
        proposal = torch.where(is_masked, cand, x)
        score = torch.where(is_masked, cand_conf, conf if remask == "refine" else torch.full_like(conf, math.inf))
        score = score.masked_fill(~gen_mask, math.inf)  # fixed text is never chosen for masking
        # how many generated positions stay masked after this step, per sample
        n_masked = torch.round(n_gen.double() * (1.0 - schedule.alpha[s].item())).long()
        rank = score.argsort(-1).argsort(-1)  # 0 = least confident
        stay_masked = rank < n_masked[:, None]
        new_x = torch.where(stay_masked, torch.full_like(x, mask_id), proposal)
        revealed = is_masked & ~stay_masked
        remasked = ~is_masked & gen_mask & stay_masked
        conf = torch.where(revealed, cand_conf, conf)
        prev, x = x, new_x
        if on_step is not None:
            on_step(dict(step=i + 1, t=t, s=s, x=x, prev=prev, revealed=revealed, remasked=remasked,
                         conf=conf, logp=logp, is_masked_before=is_masked, gen_mask=gen_mask))
    assert not ((x == mask_id) & gen_mask).any(), "sampler left a [MASK]"
    return x, dict(nfe=steps)


@torch.no_grad()
def sample_ar(model, prompt, gen_len, temperature=1.0, top_k=0, top_p=1.0, generator=None):
    """Autoregressive sampling with a KV cache. prompt (B, P) with P >= 1. Returns (B, P + gen_len)."""
    B, P = prompt.shape
    assert P + gen_len <= model.args.block_size, "AR sampling beyond block_size is not supported"
    cache = model.new_kv_cache(B, prompt.device, next(model.parameters()).dtype)
    logits = model(prompt, kv_cache=cache)[:, -1]
    out = [prompt]
    for i in range(gen_len):
        nxt = sample_tokens(filter_logits(logits, temperature, top_k, top_p), temperature, generator)
        out.append(nxt[:, None])
        if i + 1 < gen_len:
            logits = model(nxt[:, None], kv_cache=cache, start_pos=P + i)[:, -1]
    return torch.cat(out, 1)
