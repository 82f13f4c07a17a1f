"""Uniform-state discrete diffusion (UDLM, Schiff et al. 2024; Duo, Sahoo et al. 2025; D3PM, Austin
et al. 2021): forward noise, the exact NELBO and its estimator, the ancestral sampler. No [MASK]:
noise is a uniform draw from the V real ids. Per position, with alpha(t) from diffusion.Schedule:

    q(x_t | x_0)     = alpha(t) onehot(x_0) + (1 - alpha(t)) / V
    q(x_t | x_s)     = b onehot(x_s) + (1 - b) / V,  b = alpha(t) / alpha(s)  (s < t)
    q(x_s | x_t, x0) = q(x_t | x_s) q(x_s | x0) / q(x_t | x0)
    p(x_s | x_t)     = sum_x0 pi(x0) q(x_s | x_t, x0),  pi = the model's x0 distribution

p is exact when pi is the true p(x0 | x_t) (tests/test_uniform.py). Estimated as mdlm's (t drawn
stratified over 1..T, the term times T; derivation: learning.md), the NELBO >= -log p(x0) is

    KL(q(x_T | x0) || uniform) + E_q(x_1|x0) [-log pi(x0 | x_1)]
        + sum_{t=2..T} E_q(x_t|x0) KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t))

    python -c "import uniform, diffusion; print(uniform.prior_kl(diffusion.Schedule(100), 65))"
    python train.py cpu --objective=uniform --time_cond=learned
"""
import math
import time
from dataclasses import dataclass

import torch

from diffusion import (LAW_KEYS, Drawn, Objective, Schedule, no_mask_logit, put_at, sampler_keys_but,
                       stratified_times, time_grid)
from utils.dist import draw_device, on_device
from utils.draws import drawn_law, sample_tokens
from utils.errors import UserError
from utils.steps import Step


def real_ids(vocab_size, mask_id, device="cpu"):
    """Every id but [MASK] (last for char, 1 for BPE): what noise draws and the model predicts."""
    return torch.cat([torch.arange(mask_id, device=device), torch.arange(mask_id + 1, vocab_size, device=device)])


def compact(x, real):
    """Token ids -> positions in `real` (0..V-1), the index space of the maths below."""
    return torch.searchsorted(real.to(x.device), x.contiguous())


@dataclass
class NoiseDrawn(Drawn):
    """A pass's draws (diffusion.Drawn) and the noise's own: random tokens, the prior term."""
    noise: torch.Tensor = None  # (B, L) random tokens, indices into the real vocabulary
    prior: float = 0.0          # the prior term per token (prior_kl): a host number, which a compiled pass cannot read


def noise_draws(shape, t, schedule, V, generator=None, device="cpu"):
    """One pass's noise (NoiseDrawn), made ahead as a compiled step needs: per token a U[0, 1)
    draw (kept under alpha(t)), then a random real index, on the device; and the prior term."""
    dev = draw_device(device)
    g = on_device(generator, dev)
    uniform = torch.rand(shape, generator=g, device=dev)
    noise = torch.randint(0, V, shape, generator=g, device=dev)
    return NoiseDrawn(t, uniform.to(device), noise=noise.to(device), prior=prior_kl(schedule, V))


def uniform_corrupt(x0, t, schedule, real, generator=None, drawn=None):
    """q(x_t | x0), x0 (B, L), t (B,): a token is kept w.p. alpha(t), else redrawn (x0 included)."""
    drawn = noise_draws(x0.shape, t, schedule, len(real), generator, x0.device) if drawn is None else drawn
    a = schedule.on(x0.device)[0][t].float()[:, None]  # (B, 1)
    return torch.where(drawn.uniform < a, x0, real.to(x0.device)[drawn.noise])


def _log_kernel(a, x, V):
    """log(a onehot(x) + (1 - a) / V) over j (B, L, V) float64, a (B,): every distribution here.
    In j: q(x_s = j | x0 = x) for a = alpha(s), q(x_t = x | x_s = j) for a = alpha(t|s),
    q(x_t = x | x0 = j) for a = alpha(t) (the kernel is symmetric)."""
    a = a.double()[:, None, None]
    miss = (torch.log1p(-a) - math.log(V)).expand(*x.shape, V)  # log((1 - a) / V); -inf when a = 1
    hit = torch.log(a + (1 - a) / V).expand(*x.shape, 1)
    return miss.scatter(-1, x[..., None], hit)


def reverse_log_probs(logp0, xt, a_s, a_t, V):
    """log p(x_s = j | x_t) (B, L, V) float64, p = sum_x0 pi(x0) q(x_s | x_t, x0). logp0 (B, L, V):
    log pi over the real ids; xt (B, L) compact ids; a_s > a_t (B,) float64.

        w(x0) = pi(x0) / q(x_t | x0),  S = sum_x0 w(x0)
        p(x_s = j | x_t) = q(x_t | x_s = j) * (a_s w(j) + (1 - a_s) / V * S)

    Cheap: linear in onehot(x0) over q(x_t | x0). Log space keeps s = 0 and tiny pi finite."""
    logp0 = logp0.double()
    log_a = _log_kernel(a_t / a_s, xt, V)  # log q(x_t | x_s = j), alpha(t | s) = a_t / a_s
    logw = logp0 - _log_kernel(a_t, xt, V)  # log pi(j) - log q(x_t | x0 = j)
    as3 = a_s[:, None, None]
    mix = torch.logaddexp(torch.log(as3) + logw,
                          torch.log1p(-as3) - math.log(V) + torch.logsumexp(logw, -1, keepdim=True))
    return log_a + mix


def bound_terms(logits_real, x0c, xtc, t, schedule):
    """The NELBO's step-t term (B, L) float64 for one draw x_t: the KL for t >= 2, -log pi(x0 | x_1)
    for t = 1. logits_real (B, L, V) over the real ids; x0c, xtc (B, L) compact ids; t (B,)."""
    V = logits_real.size(-1)
    logp0 = logits_real.double().log_softmax(-1)
    recon = -logp0.gather(-1, x0c[..., None]).squeeze(-1)  # t = 1: p(x0 | x1) = pi
    alpha = schedule.on(logits_real.device)[0]
    # a stand-in a_s < 1 where t = 1 keeps the unused KL finite: no NaN leaks into the gradient
    a_s = torch.where(t == 1, torch.full_like(alpha[t], 0.5), alpha[t - 1])
    a_t = torch.where(t == 1, torch.full_like(alpha[t], 0.25), alpha[t])
    log_p = reverse_log_probs(logp0, xtc, a_s, a_t, V)
    # the true posterior, Bayes: log q(x_t | x_s=j) + log q(x_s=j | x0) - log q(x_t | x0)
    log_z = _log_kernel(a_t, xtc, V).gather(-1, x0c[..., None])  # (B, L, 1)
    log_q = _log_kernel(a_t / a_s, xtc, V) + _log_kernel(a_s, x0c, V) - log_z
    kl = (log_q.exp() * (log_q - log_p)).sum(-1)  # every q > 0 here (a_s < 1), so no 0 * log 0
    return torch.where((t == 1)[:, None], recon, kl)


def prior_kl(schedule, V):
    """KL(q(x_T | x0) || uniform) per token, nats: 0 when alpha(T) = 0 (every schedule here)."""
    a = schedule.alpha[-1].item()
    if a == 0.0:
        return 0.0
    hit = a + (1 - a) / V
    return hit * math.log(V * hit) + (V - 1) * (1 - a) / V * math.log(1 - a)


def uniform_loss(model, x0, schedule, mask_id, generator=None, t=None, vocab_size=None, drawn=None):
    """One pass: (loss, NELBO in nats/token (B,), aux: t, noised (x_t != x0), logits, real);
    vocab_size for a DDP-wrapped model; drawn: noise_draws, else t and generator's noise."""
    B, L = x0.shape
    real = real_ids(vocab_size or model.args.vocab_size, mask_id, x0.device)
    if drawn is None:
        t = stratified_times(B, schedule.T, generator, x0.device) if t is None else t
        drawn = noise_draws(x0.shape, t, schedule, len(real), generator, x0.device)
    t = drawn.t
    xt = uniform_corrupt(x0, t, schedule, real, drawn=drawn)
    logits = no_mask_logit(model(xt, t), mask_id).index_select(-1, real)  # (B, L, V): [MASK] never predicted
    terms = bound_terms(logits, compact(x0, real), compact(xt, real), t, schedule)  # (B, L) float64
    nelbo = (schedule.T * terms.sum(1) + L * drawn.prior) / L
    return nelbo.float().mean(), nelbo.detach().float(), dict(t=t, noised=xt != x0, logits=logits.detach(), real=real)


@torch.no_grad()
def sample_uniform(model, x, gen_mask, schedule, mask_id, opts, generator=None, on_step=None):
    """(x, stats) by ancestral sampling: x's (B, L) gen_mask positions start random (x_T), all
    redrawn from p(x_s | x_t) each step; Step.revealed: changed tokens, conf: their probability."""
    (B, L), dev, t0, steps, temperature = x.shape, x.device, time.perf_counter(), opts.steps, opts.law.temperature
    if L > model.args.block_size:
        raise ValueError(f"a canvas of {L} tokens exceeds the model's context of {model.args.block_size}")
    at = gen_mask.flatten().nonzero().squeeze(1).to(dev)  # read once a call: no sync a step
    gen_mask = gen_mask.bool().to(dev)
    real = real_ids(model.args.vocab_size, mask_id, dev)
    V, dd = len(real), draw_device(dev)  # x_T drawn where draws run: on the CPU, the generator's own
    x = torch.where(gen_mask, real[torch.randint(V, (B, L), generator=on_device(generator, dd), device=dd).to(dev)], x)
    grid, alpha = time_grid(schedule.T, steps), schedule.on(dev)[0]
    conf, none = torch.zeros(B, L, dtype=torch.float64, device=dev), torch.zeros_like(gen_mask)
    for i, (t, s) in enumerate(zip(grid, grid[1:])):
        tt = torch.full((B,), t, dtype=torch.long, device=dev)
        logits = no_mask_logit(model(x, tt), mask_id).index_select(-1, real)  # (B, L, V)
        logp0 = opts.law.log_probs(logits)  # float64, -inf outside top-k/top-p
        log_p = reverse_log_probs(logp0, compact(x, real), alpha[torch.full_like(tt, s)], alpha[tt], V)
        log_p = log_p.flatten(0, 1)[at]  # (N, V) generated positions only
        draw = sample_tokens(log_p, temperature, generator)  # (N,)
        prev = x
        x = put_at(x, at, real[draw])  # a new tensor: a hook may keep the old one
        law = drawn_law(log_p, temperature == 0)  # what the tokens were drawn from
        conf = put_at(conf, at, law.gather(-1, draw[:, None]).squeeze(-1).exp())
        if on_step is not None:
            full = log_p.new_full((len(at), model.args.vocab_size), -math.inf).index_copy(1, real, law)
            on_step(Step(step=i + 1, nfe=torch.full((B,), i + 1), time=tt, x=x, prev=prev, gen_mask=gen_mask,
                         revealed=(x != prev) & gen_mask, remasked=none, conf=conf, finished=[i + 1 == steps] * B,
                         laws=(at, full)))
    secs = time.perf_counter() - t0
    return x, dict(nfe=steps, nfe_per_sample=[steps] * B, seconds=secs, seconds_per_sample=[secs] * B, blocks=1)


# ---------------------------------------- the objective
class UniformDiffusion(Objective):
    """--objective=uniform: the NELBO above, sampled by sample_uniform's ancestral steps."""
    MODEL = dict(self_cond=False, clean_causal=False)  # no [MASK] to feed a prediction to
    # it reads steps and the law of its sampler's keys (replay_steps: refused as no decoder's)
    IGNORES = {**dict.fromkeys(("loss_type", *sampler_keys_but("steps", *LAW_KEYS, "replay_steps"), "bd3_block",
                                "mask_min", "mask_max", "bd3_loss", "bd3_ar"),
                              "it trains its NELBO at every position and redraws every position each step, with no "
                              "[MASK]"),
               **dict.fromkeys(("mask_ramp", "mask_ramp_from"),
                               "masked diffusion's training-time draws of t: use --objective=mdlm"),
               **dict.fromkeys(("distill_from", "distill_steps"), "distill.py distils masked diffusion: use "
                               "--objective=mdlm"),
               "self_cond": "masked diffusion's self-conditioning: use --objective=mdlm",
               "mask_draws": "the masks drawn of each window (mdlm, bd3): it has no [MASK]",
               **dict.fromkeys(("dual_ar", "dual_sample"), "masked diffusion's dual objective: use --objective=mdlm")}
    NOISE_START = True  # starts from random tokens
    # (it trains its NELBO whatever loss_type says: it refuses loss_type given)

    def check(self, cfg, opts, given=(), training=True):
        if opts.steps > cfg.diffusion_steps:  # the steps are times of the chain
            raise UserError(f"steps={opts.steps} exceeds diffusion_steps={cfg.diffusion_steps}: "
                            f"use --steps={cfg.diffusion_steps} or fewer")

    def draws(self, x, cfg, schedule, tok, draw):
        """Stratified t over the global batch, keyed noise_draws."""
        schedule.on(x.device)  # tables on x's device now: a CUDA graph of loss() would own a first copy
        t = stratified_times(len(x), schedule.T, device=x.device, offset=draw.offset, total=draw.total, u=draw.u)
        return noise_draws(x.shape, t, schedule, len(real_ids(tok.vocab_size, tok.mask_id)), draw.generator, x.device)

    def loss(self, model, x, cfg, schedule, tok, drawn):
        return uniform_loss(model, x, schedule, tok.mask_id, vocab_size=tok.vocab_size, drawn=drawn)[0]

    def bound(self, model, x, cfg, schedule, tok, t, generator):
        """The NELBO per window (B,) and evaluate's details (scored: where the noise changed x)."""
        _, nelbo, aux = uniform_loss(model, x, schedule, tok.mask_id, generator, t[:, 0], tok.vocab_size)
        return nelbo, dict(scored=aux["noised"], pred=aux["real"][aux["logits"].argmax(-1)], logits=aux["logits"],
                           t_tok=t.expand_as(x))

    def sample(self, model, x, gen_mask, cfg, opts, mask_id, generator=None, on_step=None):
        schedule = Schedule(cfg.diffusion_steps, cfg.schedule)
        return sample_uniform(model, x, gen_mask, schedule, mask_id, opts, generator, on_step)

    def passes(self, cfg, opts, n_gen, n_prompt=0):
        return opts.steps

    def describe(self, cfg, opts, brief=False):
        if brief:
            return f"{cfg.objective} noise, {opts.steps} steps"
        return f"{opts.steps} ancestral uniform-noise steps (every position redrawn each step)"
