"""Masked (absorbing-state) diffusion, MDLM: the forward corruption, the loss and its bound, and the
objective interface (objectives.py). Schedule: common.Schedule; reverse sampler: sampler.denoise.

Discrete time t in 0..T; alpha(t), a token's chance to be still visible, falls from 1 to 0. The
negative ELBO, >= -log p(x0) (Austin et al. 2021; MDLM, Sahoo et al. 2024, eq. 10 in discrete time):

    NELBO = sum_t E_q(xt|x0) [ w(t) * sum_{i masked in xt} -log p(x0_i | xt) ],
    w(t)  = (alpha(t-1) - alpha(t)) / (1 - alpha(t)),

estimated with t drawn from 1..T, the term times T. Per token: over L, not over the masked count.
"""
from dataclasses import replace

import torch
import torch.nn.functional as F

import sampler
from common import (LossOptions, band_times, band_top, check_band, masking_draws, no_mask_logit, predict_logits,
                    repeat_draws, self_condition_input, stratified_times)
from decode import generate_canvas
from sampler import REVEAL_KEYS, SamplerOptions
from utils.errors import UserError



# ------------------------------------------------------------------------- forward process and loss
def corrupt(x0, t, schedule, mask_id, generator=None, uniform=None):
    """q(xt | x0): each token becomes [MASK] w.p. 1 - alpha(t). x0 (B, L), t (B,); uniform (B, L):
    the deciding U[0, 1) draws (common.masking_draws), else from generator. Returns (xt, mask)."""
    uniform = masking_draws(x0.shape, t, 0.0, generator, x0.device).uniform if uniform is None else uniform
    p = schedule.mask_prob(t).to(torch.float32)[:, None]  # (B, 1)
    masked = uniform < p
    return torch.where(masked, torch.full_like(x0, mask_id), x0), masked


def self_condition(model, xt, t, masked, mask_id, share, generator=None, rows=None):
    """Self-conditioning's input (B, L, V): common.self_condition_input over xt's own pass."""
    return self_condition_input(lambda r: predict_logits(model, xt if r is None else xt[r], t if r is None else t[r],
                                                         mask_id), masked, share, generator, rows)


def diffusion_loss(model, x0, schedule, mask_id, opts=LossOptions(), generator=None, t=None, drawn=None):
    """One pass with `opts` (LossOptions): (loss, NELBO in nats/token (B,), aux), the NELBO whatever
    loss_type trains; drawn: made ahead (Drawn), else t (stratified if None), masks drawn here."""
    B, L = x0.shape
    if drawn is None:
        t = stratified_times(B, schedule.T, generator, x0.device) if t is None else t
        drawn = masking_draws(x0.shape, t, opts.self_cond, generator, x0.device)
    t = drawn.t
    xt, masked = corrupt(x0, t, schedule, mask_id, uniform=drawn.uniform)
    sc = self_condition(model, xt, t, masked, mask_id, opts.self_cond, rows=drawn.rows) if opts.self_cond else None
    logits = predict_logits(model, xt, t, mask_id, sc=sc)
    ce = F.cross_entropy(logits.view(B * L, -1), x0.view(-1), reduction="none").view(B, L)
    w = (schedule.T * schedule.on(x0.device)[1][t]).float()  # (B,) T * w(t)
    nelbo = (w[:, None] * ce * masked).sum(1) / L  # (B,) nats per token
    if opts.loss_type == "elbo":
        loss = nelbo.mean()
    elif opts.loss_type == "masked_ce":
        loss = (ce * masked).sum() / masked.sum().clamp(min=1)
    elif opts.loss_type == "all_ce":
        loss = ce.mean(1).mean()
    else:
        raise ValueError(f"unknown loss_type {opts.loss_type!r}")
    return loss, nelbo.detach(), dict(t=t, masked=masked, logits=logits.detach(), ce=ce.detach())


# -------------------------------------------------------------------- the objective (objectives.py)
IGNORES = dict.fromkeys(("bd3_block", "bd3_loss", "bd3_speculate", "bd3_ar"),
                        "block diffusion's keys: use --objective=bd3")
STEP_CHAIN = SEMI_AR = True  # its sampler walks the schedule's grid (eval.py scores that chain); blocks


def flops(model, cfg):
    """Training FLOPs per window token: self-conditioning adds a forward (2 per weight) for half the
    rows, each of mask_draws is a pass, the dual objective a pass over L - 1 tokens."""
    L = cfg.block_size
    diffusion = cfg.mask_draws * (7 / 6 if cfg.self_cond else 1)
    return model.flops_per_token() * (diffusion + ((L - 1) / L if cfg.dual_ar else 0)), L


def unread(cfg):
    return ("steps", *REVEAL_KEYS) if cfg.dual_sample else ()


def check(cfg, given=()):
    if cfg.dual_ar < 0 or (cfg.dual_ar and cfg.time_cond != "none"):
        raise UserError(f"dual_ar={cfg.dual_ar} with time_cond={cfg.time_cond}: the dual objective's causal pass reads "
                        f"clean text with no time; give dual_ar >= 0 (e.g. 1) with --time_cond=none, or 0 (off)")
    if cfg.dual_sample and not cfg.dual_ar:
        raise UserError("--dual_sample draws from the AR mode that --dual_ar trains, and this network was trained "
                        "without it (dual_ar=0): drop --dual_sample, or train with --dual_ar=0.25")
    clash = sorted(set(given) & set(unread(cfg)))  # unread keys given on the command line
    if clash:
        raise UserError(f"--dual_sample draws left to right from the network's AR mode, one token a pass: --{clash[0]} "
                        f"sets the diffusion sampler; drop one of the two")
    check_band(cfg)
    if cfg.mask_ramp:
        if not 0 < cfg.mask_ramp <= 1 or not cfg.mask_min < cfg.mask_ramp_from <= cfg.mask_max:
            raise UserError(f"mask_ramp={cfg.mask_ramp}, mask_ramp_from={cfg.mask_ramp_from}: need 0 < mask_ramp <= 1 "
                            f"(a fraction of max_iters) and mask_min={cfg.mask_min} < mask_ramp_from <= "
                            f"mask_max={cfg.mask_max}")
        check_band(replace(cfg, mask_max=cfg.mask_ramp_from))  # the first step's band must hold a time
    if (cfg.steps > cfg.diffusion_steps and cfg.tokens_per_step == "schedule" and not cfg.threshold
            and not cfg.dual_sample):
        raise UserError(f"steps={cfg.steps} exceeds diffusion_steps={cfg.diffusion_steps}: use "
                        f"--steps={cfg.diffusion_steps} or fewer, or --tokens_per_step=linear (its step count is free)")


def draws(x, cfg, schedule, tok, draw):
    """x's draws (common.Drawn), eager, keyed: per mask_draws copy a t stratified over BD3-LM's
    clipped band (less noisy, biased: eval scores the full bound), masks, self-conditioning rows."""
    schedule.on(x.device)  # tables on x's device now: a CUDA graph of loss_of would own a first copy
    n = len(x) * cfg.mask_draws  # the copies' sequences
    draw = repeat_draws(draw, cfg.mask_draws, len(x))
    band = band_times(schedule, cfg.mask_min, band_top(cfg, draw.progress))  # on the host: band[0] + i
    t = stratified_times(n, len(band), None, x.device, draw.offset, draw.total, draw.u) - 1 + int(band[0])
    return masking_draws((n, x.size(1)), t, options(cfg).self_cond, draw.generator, x.device)


def loss_of(model, x, cfg, schedule, tok, drawn):
    """Each mask_draws copy reads its own mask and t; the dual objective reads each window once."""
    copies = x.repeat(cfg.mask_draws, 1)
    loss = diffusion_loss(model, copies, schedule, tok.mask_id, options(cfg), t=drawn.t, drawn=drawn)[0]
    return loss + cfg.dual_ar * dual_ar_loss(model, x, tok.mask_id) if cfg.dual_ar else loss


def options(cfg):
    """The loss's switches: self-conditioning feeds half the rows their first pass's prediction."""
    return LossOptions(cfg.loss_type, 0.5 if cfg.self_cond else 0.0)


def dual_ar_loss(model, x0, mask_id):
    """The dual objective (Eso-LM, Sahoo et al. 2025; arXiv 2512.14549): causal_logits' mean CE."""
    logits = causal_logits(model, x0[:, :-1], mask_id)
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), x0[:, 1:].reshape(-1))


def causal_logits(model, x, mask_id):
    """The AR mode --dual_ar trains: next-token logits of a causal pass over clean x (B, L)."""
    causal = torch.ones(x.size(1), x.size(1), dtype=torch.bool, device=x.device).tril()
    return no_mask_logit(model(x, attn_mask=causal), mask_id)


@torch.no_grad()
def causal_nll(model, w, mask_id):
    """NLL (B, L) float64 of w[:, 1:] by the AR mode reading w (B, L + 1): --dual_sample's law."""
    logp = torch.log_softmax(causal_logits(model, w[:, :-1], mask_id).double(), -1)
    return -logp.gather(-1, w[:, 1:, None]).squeeze(-1)


def ar_nll(model, windows, cfg, mask_id):
    """Mean NLL (B,) of windows[:, 1:] under the AR mode (--dual_sample's law at T = 1), or None."""
    return causal_nll(model, windows, mask_id).mean(1) if cfg.dual_ar else None


def bound(model, x, cfg, schedule, tok, t, generator):
    """The NELBO per window (B,) at times t (B, 1), and evaluate's details (scored: the masked)."""
    opts = LossOptions(self_cond=1.0 if cfg.self_cond else 0.0)
    _, nelbo, aux = diffusion_loss(model, x, schedule, tok.mask_id, opts, generator, t=t[:, 0])
    return nelbo, dict(scored=aux["masked"], pred=aux["logits"].argmax(-1), logits=aux["logits"], t_tok=t.expand_as(x))


def sample(model, x, gen_mask, cfg, schedule, mask_id, generator=None, on_step=None):
    if cfg.dual_sample:
        return sample_causal(model, x, gen_mask, cfg, mask_id, generator, on_step)
    return sampler.denoise(model, x, gen_mask, schedule, mask_id, SamplerOptions.from_config(cfg), generator, on_step)


@torch.no_grad()
def sample_causal(model, x, gen_mask, cfg, mask_id, generator=None, on_step=None):
    """--dual_sample: continue the prompt of x (B, L) over its blank suffix from the AR mode,
    KV-cached, one token a pass: exact samples of causal_nll's joint. Returns (x, stats)."""
    (B, L), dev = x.shape, x.device
    P = int(gen_mask[0].long().argmax()) if gen_mask.any() else L
    if P == 0 or not torch.equal(gen_mask.bool(), (torch.arange(L, device=dev) >= P).expand(B, L)):
        raise UserError("--dual_sample continues a prompt left to right: give a prompt, and no blanks before given "
                        "text (infill needs the diffusion sampler: drop --dual_sample)")
    if L > model.args.block_size:
        raise UserError(f"--dual_sample reads the whole canvas in one context: prompt + gen_len = {L} tokens exceeds "
                        f"block_size {model.args.block_size}; give a shorter --gen_len")
    return generate_canvas(model, x, P, cfg, generator, mask_id, on_step)


def decodes(cfg, batch):
    return cfg.dual_sample  # the AR mode draws through decode.py's step


def passes(cfg, n_gen, n_prompt=0):
    """Passes per sample: one a token under --dual_sample, else the sampler's (None: threshold)."""
    if cfg.dual_sample:
        return n_gen
    return sampler.passes(SamplerOptions.from_config(cfg), n_gen)


def describe(cfg):
    if cfg.dual_sample:
        return "its AR mode (the dual objective's causal pass) + KV cache, one token a pass"
    return sampler.describe(SamplerOptions.from_config(cfg))
