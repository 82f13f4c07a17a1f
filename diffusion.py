"""Masked (absorbing-state) diffusion, MDLM: the schedule, the forward corruption, the ELBO and the reverse sampler.

Discrete time t in {0..T}. alpha(t) is the probability that a token is still visible: alpha(0) = 1 (clean) and
alpha(T) = 0 (all [MASK]). The negative ELBO (an upper bound on -log p(x0); Austin et al. 2021; Sahoo et al.
2024, MDLM eq. 10 in discrete time) is

    NELBO = sum_t E_q(xt|x0) [ w(t) * sum_{i masked in xt} -log p(x0_i | xt) ],
    w(t)  = (alpha(t-1) - alpha(t)) / (1 - alpha(t)),

estimated by drawing t uniformly from 1..T and multiplying by T. Per-token figures divide by the sequence length
L (not by the number of masked tokens). The reverse sampler (denoise) fills the positions of a canvas marked in
gen_mask and never touches the rest; its switches are config.py's sampling keys:

    order            which masked positions are revealed first: confidence | margin | entropy | random | l2r
    tokens_per_step  how many per step: schedule (1 - alpha(t)) | linear (LLaDA) | cosine (MaskGIT)
    remask           refine (reference: least confident committed tokens go back to [MASK]) | none (LLaDA) | remdm
    threshold        Fast-dLLM: commit every masked position scoring above it, at least one per step; NFE adaptive
    block_length     (config.py: semi_ar_length) semi-autoregressive blocks, left to right (LLaDA); a canvas longer
                     than the model's context slides a window that keeps the last block_size tokens

    python -c "from diffusion import Schedule; s = Schedule(100); print(s.alpha[:3], s.weight[1:4])"
    python inference.py --checkpoint artifacts/models/model.pt --threshold 0.9 --semi-ar-length 32
"""
import math
import time
from dataclasses import replace

import torch
import torch.nn.functional as F

import remasking
from common import (Step, band_times, band_top, beta_proposal, filter_logits, no_mask_logit, proposal_times, reveal_plan,
                    sample_tokens, self_condition_input, stratified_times, time_grid)
from utils.errors import UserError

SCHEDULES = ("cosine", "linear", "cosine_offset")  # Schedule's kinds
LOSS_TYPES = ("elbo", "masked_ce", "all_ce")  # diffusion_loss's objectives
ORDERS = ("confidence", "margin", "entropy", "random", "l2r")
UNSCORED_ORDERS = ("random", "l2r")  # rank by no model score: threshold decoding cannot use them
TOKENS_PER_STEP = ("schedule", "linear", "cosine")
REMASKS = ("refine", "none", "remdm")


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


# ---------------------------------------------------------------------------- forward process and loss
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


def predict_logits(model, xt, t, mask_id, positions=None, sc=None):
    """Model logits (B, L, V) in float32 with the [MASK] logit at -inf: x0 is never [MASK].
    With positions (B, L) bool, only those rows: (N, V). sc: the self-conditioning input (self_condition)."""
    kw = {} if sc is None else dict(sc=sc)
    logits = model(xt, t, **kw) if positions is None else model(xt, t, positions=positions, **kw)
    return no_mask_logit(logits, mask_id)


def self_condition(model, xt, t, masked, mask_id, share, generator=None):
    """Masked diffusion's self-conditioning input (B, L, V): common.self_condition_input over the window's own pass."""
    def logits_of(rows):
        return predict_logits(model, xt, t, mask_id) if rows is None else predict_logits(model, xt[rows], t[rows], mask_id)
    return self_condition_input(logits_of, masked, share, generator)


def check_band(cfg):
    """The training band (mask_min, mask_max) of mdlm and bd3, refused in one line where it cannot work."""
    if not 0 <= cfg.mask_min < cfg.mask_max <= 1:
        raise UserError(f"need 0 <= mask_min < mask_max <= 1, got {cfg.mask_min}, {cfg.mask_max}")
    try:
        band_times(Schedule(cfg.diffusion_steps, cfg.schedule), cfg.mask_min, cfg.mask_max)
    except ValueError as e:
        raise UserError(f"mask_min={cfg.mask_min}, mask_max={cfg.mask_max}: {e}")


def diffusion_loss(model, x0, schedule, mask_id, loss_type="elbo", generator=None, t=None, masked_only=False,
                   mask_span=0, weight=None, self_cond=0.0):
    """One training/eval pass. Returns (loss to optimise, per-sequence NELBO in nats/token (B,), dict).
    The NELBO estimate is returned whatever loss_type is trained, so validation always reports the bound.
    masked_only: run the output head on masked positions only (same NELBO; aux logits are then (N, V)).
    weight (B,): each sequence's importance weight in the loss (t drawn from a proposal, proposal_times).
    self_cond: the share of sequences given the network's first prediction (self_condition); 0 = one plain pass."""
    B, L = x0.shape
    if t is None:
        t = stratified_times(B, schedule.T, generator, x0.device)
    # mask_span > 1 masks aligned runs whole (corrupt's span). The same weighted sum is then the NELBO of a
    # run-level absorbing process (a run is one super-token; the factorised denoiser gives -log p(run) = sum
    # of its CEs; the random phase is a latent with a uniform prior), so it is still an upper bound on
    # -log p(x0), but for a sampler that reveals whole runs: not the per-token bound, which validation
    # (bound below, mask_span=0) always reports.
    xt, masked = corrupt(x0, t, schedule, mask_id, generator, span=mask_span)
    sc = self_condition(model, xt, t, masked, mask_id, self_cond, generator) if self_cond else None
    if masked_only and loss_type != "all_ce":  # unmasked positions carry zero loss: skip their logits
        logits = predict_logits(model, xt, t, mask_id, positions=masked, sc=sc)  # (N, V)
        ce_m = F.cross_entropy(logits, x0[masked], reduction="none")  # (N,)
        ce = torch.zeros(B, L, dtype=ce_m.dtype, device=x0.device).masked_scatter(masked, ce_m)  # (B, L), 0 elsewhere
    else:
        logits = predict_logits(model, xt, t, mask_id, sc=sc)
        ce = F.cross_entropy(logits.view(B * L, -1), x0.view(-1), reduction="none").view(B, L)
    w = (schedule.T * schedule.weight.to(x0.device)[t]).float()  # (B,) importance weight T * w(t)
    nelbo = (w[:, None] * ce * masked).sum(1) / L  # (B,) nats per token, normalised by L
    iw = torch.ones(B, device=x0.device) if weight is None else weight  # (B,)
    if loss_type == "elbo":
        loss = (iw * nelbo).mean()
    elif loss_type == "masked_ce":
        loss = (iw[:, None] * ce * masked).sum() / masked.sum().clamp(min=1)
    elif loss_type == "all_ce":
        loss = (iw * ce.mean(1)).mean()
    else:
        raise ValueError(f"unknown loss_type {loss_type!r}")
    return loss, nelbo.detach(), dict(t=t, masked=masked, logits=logits.detach(), ce=ce.detach())


# ---------------------------------------------------------------------------- the reverse sampler
def time_for_fraction(schedule, frac):
    """The time t in 1..T whose mask probability 1 - alpha(t) is nearest to frac (B,): what a time-conditioned
    model is told when the canvas's masked fraction is off the grid (the index must mean the training mask rate)."""
    mp = 1.0 - schedule.alpha[1:].to(frac.device)  # (T,) increasing in t
    return (mp[None, :] - frac.double()[:, None]).abs().argmin(1) + 1


def masked_fraction(tokens_per_step, schedule, grid, i, steps):
    """Fraction of a block still masked after step i (0-based) of `steps`; 0 after the last step."""
    r = (i + 1) / steps
    if tokens_per_step == "schedule":
        return 1.0 - schedule.alpha[grid[i + 1]].item()
    if tokens_per_step == "linear":
        return 1.0 - r  # LLaDA: the same number of tokens every step
    return math.cos(0.5 * math.pi * r)  # MaskGIT (Chang et al. 2022): few tokens early, many late


def position_scores(logp, cand, order, generator=None, cols=None):
    """logp (N, V) float64 filtered log-probs at the N positions being decided, cand (N,) their drawn tokens,
    cols (N,) their columns (read by 'l2r' only). Returns (confidence p(cand) (N,), ranking score (N,) in [0, 1]:
    higher is revealed first)."""
    p = logp.exp()
    conf = p.gather(-1, cand[:, None]).squeeze(-1)
    if order == "l2r":  # leftmost first: one token a step, the network's own left-to-right joint (scripts/order_nll.py)
        return conf, 1.0 / (1.0 + cols.to(logp.device, torch.float64))
    if order == "confidence":  # MaskGIT; LLaDA's low-confidence remasking
        return conf, conf
    if order == "margin":  # top-1 minus top-2 probability (Kim et al. 2025, "Train for the worst...")
        top = p.topk(min(2, p.size(-1)), dim=-1).values
        return conf, top[:, 0] - (top[:, 1] if top.size(1) > 1 else 0.0)
    if order == "entropy":  # exp(-H): 1 for a certain prediction, 1/V for a uniform one (Dream 7B)
        ent = -torch.where(p > 0, p * logp, torch.zeros_like(p)).sum(-1)
        return conf, torch.exp(-ent)
    # random: with schedule counts and remask='none' this is ancestral sampling with the count fixed (MDLM)
    return conf, torch.rand(len(cand), generator=generator, dtype=torch.float64).to(logp.device)


def check_options(steps, temperature, order, tokens_per_step, remask, remask_eta, threshold, block_length):
    """The switches' domains, asserted: the configurator gives users the messages (it reads the lists above)."""
    assert order in ORDERS and tokens_per_step in TOKENS_PER_STEP and remask in REMASKS, (order, tokens_per_step, remask)
    assert temperature >= 0 and 0 <= remask_eta <= 1 and 0 <= threshold <= 1 and block_length >= 0 and steps >= 1
    assert not (threshold > 0 and (order in UNSCORED_ORDERS or remask == "remdm")), \
        "threshold ranks by the model's score, never re-masks"


def _window(now, L, W):
    """Columns [lo, hi) the model sees while decoding the block `now` (B, L): the whole canvas when it fits,
    else the W positions ending at the block's last one (a sliding window keeping the latest context)."""
    if L <= W:
        return 0, L
    cols = now.any(0).nonzero().squeeze(1)
    first, last = cols.min().item(), cols.max().item() + 1
    lo = max(0, last - W)
    if first < lo:
        raise ValueError(f"a block spans {last - first} positions, more than the model's context of {W}")
    return lo, lo + W


class _Denoiser:
    """The state of one denoise() call (the canvas, each committed token's confidence and ranking score, the
    forward passes per sample) and its reverse step."""

    def __init__(self, model, x, gen_mask, schedule, mask_id, temperature, top_k, top_p, remask, generator,
                 order, remask_eta, threshold, remdm_schedule="constant", temperature_end_share=1.0):
        self.model, self.gen_mask, self.schedule, self.mask_id = model, gen_mask, schedule, mask_id
        self.filt, self.temperature, self.generator = (top_k, top_p), temperature, generator
        self.end_share = temperature_end_share
        assert temperature_end_share >= 0, temperature_end_share  # f > 0 at every draw: T stays > 0
        self.remask, self.order, self.remask_eta, self.threshold = remask, order, remask_eta, threshold
        self.remdm_schedule = remdm_schedule
        B, L = x.shape
        self.mask_tok = torch.full_like(x, mask_id)
        self.x = torch.where(gen_mask, self.mask_tok, x)
        self.conf = torch.zeros(B, L, dtype=torch.float64, device=x.device)  # p(token) when committed: the trace's colour
        self.kept = torch.zeros_like(self.conf)  # its ranking score when committed: what 'refine' compares new ones with
        self.nfe = torch.zeros(B, dtype=torch.long)
        # self-conditioning: each position's latest prediction of x0, read while it is masked (zeros before the first)
        args = getattr(model, "args", None)
        self.sc = torch.zeros(B, L, args.vocab_size, device=x.device) if getattr(args, "self_cond", False) else None

    def step(self, now, lo, hi, n_keep, todo, greedy, phase="step"):
        """One reverse step over the block `now` (B, L) seen through the window [lo, hi): the samples in `todo` (B,)
        are decided, `n_keep` (B,) positions of the block stay masked (step mode); greedy: argmax draws. phase:
        'step', 'loop' (ReMDM's loop at fixed noise) or 'correct' (the corrector: no re-masking by the policy).
        Returns (revealed, remasked, the time told (B,))."""
        x, mask_id = self.x, self.mask_id
        is_masked = (x == mask_id) & now
        sigma = None  # ReMDM's per-row probability that a committed token goes back to [MASK] (remasking.sigma)
        if self.remask == "remdm" and self.remask_eta > 0 and phase != "correct" and not self.threshold:
            sigma = remasking.sigma(self.remdm_schedule, self.remask_eta, (now & ~is_masked).sum(1), n_keep,
                                    loop_step=phase == "loop")
        rows = todo.nonzero().squeeze(1)
        # the time index means what it meant in training: the mask rate of the whole window the model sees
        # (given text counts as visible), not of the generated positions only
        tm = time_for_fraction(self.schedule, (x[rows, lo:hi] == mask_id).double().mean(1))
        dec = is_masked & todo[:, None]  # (B, L) the positions decided this step
        sel = dec[rows, lo:hi]  # (R, W)
        sc = None if self.sc is None else self.sc[rows, lo:hi] * (x[rows, lo:hi] == mask_id)[..., None]
        logits = predict_logits(self.model, x[rows, lo:hi], tm, mask_id, positions=sel, sc=sc)
        if logits.dim() == 3:  # a model without the positions= shortcut returned (R, W, V)
            logits = logits[sel]
        if self.sc is not None:
            self.sc[dec] = torch.softmax(logits, -1)
        logp = filter_logits(logits, self._temperature(is_masked, now, dec), *self.filt)  # (N, V) float64
        cand = sample_tokens(logp, 0.0 if greedy else self.temperature, self.generator)  # (N,)
        cols = dec.nonzero()[:, 1] if self.order == "l2r" else None  # a host sync on CUDA: only when it is read
        c_conf, c_score = position_scores(logp, cand, self.order, self.generator, cols=cols)
        cand_full = x.clone()  # scattered back in row-major order, as logits[sel] was gathered
        cand_full[dec] = cand
        score_new = torch.full_like(self.conf, math.inf)  # +inf: never chosen to stay masked
        score_new[dec] = c_score
        conf_new = self.conf.clone()
        conf_new[dec] = c_conf
        stay = self._stay(is_masked, now & ~is_masked, score_new, rows, todo, n_keep, sigma)
        revealed, remasked = is_masked & ~stay, now & ~is_masked & stay
        self.x = torch.where(stay, self.mask_tok, torch.where(revealed, cand_full, x))
        self.conf = torch.where(revealed, conf_new, self.conf).masked_fill(remasked, 0.0)
        self.kept = torch.where(revealed, score_new, self.kept)
        self.nfe[rows.cpu()] += 1
        told = torch.zeros(len(x), dtype=torch.long, device=x.device)
        told[rows] = tm
        return revealed, remasked, told

    def _temperature(self, is_masked, now, dec):
        """The temperature of this step's draws: a number, or (N, 1) per decided position when it falls with the
        share f of the block still masked, T * (s + (1 - s) * f) for s = temperature_end_share: hot while the
        canvas is mostly [MASK], cooler as the last tokens are placed in full context (RESULTS.md, issue 29)."""
        if self.end_share == 1.0 or self.temperature == 0:
            return self.temperature
        f = is_masked.sum(1).double() / now.sum(1).clamp(min=1)  # (B,) share of the block still masked
        per_row = self.temperature * (self.end_share + (1.0 - self.end_share) * f)
        return per_row[:, None].expand_as(dec)[dec][:, None]  # (N, 1), in dec's row-major order as the logits

    def start_report(self, on_step, t0, last_block, n_blocks, K):
        self.on_step, self.t0, self.last_block, self.n_blocks, self.K = on_step, t0, last_block, n_blocks, K
        self.steps, self.done_at = 0, [0.0] * len(self.x)

    def report(self, b, prev, revealed, remasked, told, block_done):
        """After each forward pass: count it, time the samples that are done, call on_step (common.Step)."""
        self.steps += 1
        left = ((self.x == self.mask_id) & self.gen_mask).any(1).tolist()
        finished = [(not left[r] if self.threshold else True) and block_done and b >= self.last_block[r]
                    for r in range(len(left))]
        for r in range(len(left)):
            if not self.done_at[r] and not left[r] and (self.K == 0 or finished[r]):
                self.done_at[r] = time.perf_counter() - self.t0
        if self.on_step is not None:
            self.on_step(Step(step=self.steps, nfe=self.nfe.clone(), time=told, x=self.x, prev=prev,
                              gen_mask=self.gen_mask, revealed=revealed, remasked=remasked, conf=self.conf, block=b,
                              n_blocks=self.n_blocks, finished=finished))

    def _stay(self, is_masked, committed, score, rows, todo, n_keep, sigma=None):
        """Which positions are [MASK] after the step (B, L). sigma (B,): remask='remdm''s re-masking probability."""
        if self.threshold and n_keep is None:  # Fast-dLLM: every position above the threshold, at least the best one
            commit = is_masked & (score > self.threshold)
            best = score.masked_fill(~is_masked, -1.0).argmax(1)
            commit[rows, best[rows]] = True
            return is_masked & ~commit
        if self.remask == "refine":  # committed tokens compete with the new candidates on their kept score
            score = torch.where(committed, self.kept, score)
        elif sigma is not None and (sigma > 0).any():
            B, L = score.shape
            u = torch.rand(B, L, generator=self.generator, dtype=torch.float64).to(score.device)
            u = u.masked_fill(~committed, 2.0)
            # each committed token w.p. sigma, at most n_keep: those with the smallest u (a random subset)
            forced = (u < sigma.to(u.device)[:, None]) & (u.argsort(1).argsort(1) < n_keep[:, None])
            score = score.masked_fill(forced, -math.inf)
        stay = score.argsort(1).argsort(1) < n_keep[:, None]  # rank 0 = lowest score
        return torch.where(todo[:, None], stay, is_masked)  # a sample sitting this step out is unchanged


def _plan(n, steps, schedule, tokens_per_step, loop=None):
    """One block's counts in step mode: (positions still masked after each step (B, S) long, which steps are ReMDM's
    loop (S,) bool) for rows of n (B,) generated positions; loop: (alpha_on, t_on, t_off) or None."""
    def fractions(j, k):
        grid = time_grid(schedule.T, k) if tokens_per_step == "schedule" else None
        return masked_fraction(tokens_per_step, schedule, grid, j, k)

    if loop:
        return remasking.loop_plan(n, steps, *loop, fractions)
    S = min(steps, int(n.max()))  # no step without a token to reveal
    return reveal_plan(n, [fractions(j, S) for j in range(S)]), torch.zeros(S, dtype=torch.bool)


@torch.no_grad()
def denoise(model, x, gen_mask, schedule, mask_id, steps, temperature=1.0, top_k=0, top_p=1.0,
            remask="refine", generator=None, on_step=None, *, order="confidence", tokens_per_step="schedule",
            remask_eta=0.0, threshold=0.0, block_length=0, remdm_schedule="constant", remdm_alpha_on=0.9, remdm_t_on=0.55,
            remdm_t_off=0.05, corrector_steps=0, corrector_frac=0.1, corrector_pick="confidence",
            temperature_end_share=1.0):
    """Reverse process over a batch. x (B, L): the canvas; positions where gen_mask (B, L) is True are
    generated (start as [MASK]); all others are fixed text and never change.

    Step mode (threshold == 0): `steps` passes split over the blocks (at most one per position); after step i
    the lowest-scored round(n * f(i)) of a block's n positions stay masked (f: tokens_per_step; reveal_plan
    keeps >= 1 reveal per step). remask='refine' (reference): a committed token keeps its commit score and
    goes back to [MASK] if newer candidates score higher; 'none' (LLaDA): committed tokens are final; 'remdm'
    (ReMDM, Wang et al. 2025): each committed token is re-masked w.p. remask_eta (at most as many as stay
    masked, schedule remdm_schedule: remasking.py, where the loop's alpha_on, t_on, t_off are explained). With
    schedule counts the last step (into t = 0) is the reference's greedy pass (the last block's only).
    corrector_steps K > 0: after each block is revealed, K passes re-mask the fraction corrector_frac of its tokens
    drawn with the lowest probability (corrector_pick='confidence'; 'random': a random share) and redraw them
    (remasking.corrector_positions); NFE = steps + K per block. temperature_end_share s != 1: the temperature
    falls linearly with the share f of the block still masked, temperature * (s + (1 - s) * f).
    Threshold mode (Fast-dLLM, Wu et al. 2025): each step commits every masked position scoring above
    `threshold`, at least the best one; committed tokens are final.
    The model is told the t whose 1 - alpha(t) matches the masked fraction of the window it sees. A sample takes
    part in a step only if the step reveals one of its tokens (threshold mode: until it is finished).
    on_step(common.Step) is called after every step. Returns (x with no [MASK] at generated positions, stats):
    nfe (batched forward passes), nfe_per_sample, seconds_per_sample (until the sample's last [MASK] was filled),
    seconds, blocks."""
    check_options(steps, temperature, order, tokens_per_step, remask, remask_eta, threshold, block_length)
    assert remdm_schedule in remasking.REMDM_SCHEDULES and corrector_steps >= 0 and 0 < corrector_frac <= 1
    assert corrector_pick in remasking.CORRECTOR_PICKS, corrector_pick
    assert 0 <= remdm_t_off < remdm_t_on <= 1 and 0 < remdm_alpha_on < 1, (remdm_t_on, remdm_t_off, remdm_alpha_on)
    B, L = x.shape
    W, t0, gen_mask = model.args.block_size, time.perf_counter(), gen_mask.bool()
    # semi-AR blocks: the k-th generated position of a row (left to right) is in block k // block_length
    block_of = torch.where(gen_mask, (gen_mask.long().cumsum(1) - 1) // (block_length or L), -1)  # (B, L)
    last_block = block_of.max(1).values.tolist()  # per sample
    n_blocks = max(last_block) + 1
    if L > W and not (block_length and (gen_mask == gen_mask[:1]).all()):
        raise ValueError(f"a canvas of {L} tokens exceeds the model's context of {W}: decode it in blocks "
                         f"(block_length) with the same generated positions in every row")
    if not threshold and steps < n_blocks:
        raise ValueError(f"{steps} steps cannot decode {n_blocks} blocks: need at least one step per block")
    block_steps = [steps // max(n_blocks, 1) + (b < steps % max(n_blocks, 1)) for b in range(n_blocks)]
    d = _Denoiser(model, x, gen_mask, schedule, mask_id, temperature, top_k, top_p, remask, generator, order,
                  remask_eta, threshold, remdm_schedule, temperature_end_share)
    greedy_end = tokens_per_step == "schedule" and not threshold  # the reference's greedy step into t = 0
    loop = remask == "remdm" and remdm_schedule == "loop" and remask_eta > 0 and not threshold
    K, loop = corrector_steps, (remdm_alpha_on, remdm_t_on, remdm_t_off) if loop else None
    d.start_report(on_step, t0, last_block, n_blocks, K)
    for b in range(n_blocks):
        now = block_of == b  # (B, L) this block's positions
        lo, hi = _window(now, L, W)
        n_now = now.sum(1)  # (B,)
        if not threshold:
            keep_after, looping = _plan(n_now.cpu(), block_steps[b], schedule, tokens_per_step, loop)
            keep_after, S = keep_after.to(x.device), keep_after.size(1)
        i = 0
        while (i < S) if not threshold else ((d.x == mask_id) & now).any():
            is_masked = (d.x == mask_id) & now
            in_loop = not threshold and bool(looping[i])
            # the samples in this forward: those with a token to reveal now (no pass that cannot change them); in
            # the loop, those with tokens held masked (as many re-masked as revealed)
            todo = (keep_after[:, i] > 0 if in_loop else is_masked.sum(1) > keep_after[:, i]) if not threshold \
                else is_masked.any(1)
            prev = d.x
            # with schedule counts the step into t = 0 is the reference's greedy clean-up: the whole sample's last
            # step only, never the last of every semi-AR block (that made every block's last token an argmax)
            revealed, remasked, told = d.step(now, lo, hi, None if threshold else keep_after[:, i], todo,
                                              greedy=greedy_end and i == S - 1 and b == n_blocks - 1,
                                              phase="loop" if in_loop else "step")
            i += 1
            d.report(b, prev, revealed, remasked, told, K == 0 and (threshold or i == S))
        for k in range(K):  # the corrector: re-mask a share of the block's tokens (the least confident), redraw them
            prev, has = d.x, n_now > 0
            pick = remasking.corrector_positions(corrector_pick, d.conf, now & has[:, None], corrector_frac, generator)
            d.x = torch.where(pick, d.mask_tok, d.x)
            revealed, _, told = d.step(now, lo, hi, torch.zeros_like(n_now), has, greedy=False, phase="correct")
            d.report(b, prev, revealed, pick, told, k == K - 1)
    assert not ((d.x == mask_id) & gen_mask).any(), "sampler left a [MASK]"
    return d.x, dict(nfe=d.steps, nfe_per_sample=d.nfe.tolist(), seconds_per_sample=d.done_at,
                     seconds=time.perf_counter() - t0, blocks=n_blocks)


# ---------------------------------------------------------------------------- the objective (objectives.py)
IGNORES = {**dict.fromkeys(("bd3_block", "bd3_loss"),
                           "block diffusion's keys: use --objective=bd3"),
           **dict.fromkeys(("mir_weight", "mir_mask_max"), "the AR baseline's masked-input loss: use --objective=ar")}
STEP_CHAIN = True  # the K-step sampler walks the schedule's grid (scripts/eval.py scores that chain's bound)


def flops(model, cfg):
    """Training FLOPs per window token: self-conditioning adds a forward pass (2 per weight) for half the sequences."""
    return model.flops_per_token() * (7 / 6 if cfg.self_cond else 1), cfg.block_size


def check(cfg, given=()):
    if cfg.time_beta < 0:
        raise UserError(f"time_beta={cfg.time_beta}: give a Beta(a, a) shape a > 0 (e.g. 2), or 0 for uniform t")
    check_band(cfg)
    if cfg.time_beta and (cfg.mask_min, cfg.mask_max) != (0, 1):
        raise UserError("time_beta draws t over the whole range, mask_min/mask_max clip it: give one of them")
    if cfg.mask_ramp:
        if not 0 < cfg.mask_ramp <= 1 or not cfg.mask_min < cfg.mask_ramp_from <= cfg.mask_max:
            raise UserError(f"mask_ramp={cfg.mask_ramp}, mask_ramp_from={cfg.mask_ramp_from}: need 0 < mask_ramp <= 1 (a "
                            f"fraction of max_iters) and mask_min={cfg.mask_min} < mask_ramp_from <= mask_max={cfg.mask_max}")
        if cfg.time_beta:
            raise UserError("time_beta draws t over the whole range, mask_ramp clips it: give one of them")
        check_band(replace(cfg, mask_max=cfg.mask_ramp_from))  # the first step's band must hold a time
    if cfg.steps > cfg.diffusion_steps and cfg.tokens_per_step == "schedule" and not cfg.threshold:
        raise UserError(f"steps={cfg.steps} exceeds diffusion_steps={cfg.diffusion_steps}: use --steps={cfg.diffusion_steps} "
                        f"or fewer, or --tokens_per_step=linear (its step count is free)")


def loss(model, x, cfg, schedule, tok, draw):
    top = band_top(cfg, draw.progress)  # mask_max, or the curriculum's top at this step
    if cfg.time_beta:  # t from a proposal, the loss importance-weighted back to uniform t
        t, weight = proposal_times(beta_proposal(schedule.T, cfg.time_beta), len(x), draw.offset, draw.total, draw.u,
                                   device=x.device)
    elif (cfg.mask_min, top) != (0, 1):  # BD3-LM's clipped band, here for the whole window: t stratified over
        band = band_times(schedule, cfg.mask_min, top)  # the band's times, no reweighting (a biased, less noisy
        strata = stratified_times(len(x), len(band), offset=draw.offset, total=draw.total, u=draw.u)  # objective; eval
        t, weight = band[strata - 1].to(x.device), None  # is the full bound)
    else:
        t, weight = stratified_times(len(x), schedule.T, device=x.device, offset=draw.offset, total=draw.total, u=draw.u), None
    return diffusion_loss(model, x, schedule, tok.mask_id, cfg.loss_type, draw.generator, t=t,
                          masked_only=cfg.head_on_masked_only, mask_span=cfg.mask_span, weight=weight,
                          self_cond=0.5 if cfg.self_cond else 0.0)[0]


def bound(model, x, cfg, schedule, tok, t, generator):
    """The NELBO per window (B,) at times t (B, 1), and what evaluate's details read: the masked positions,
    the argmax there, the logits, each token's t."""
    _, nelbo, aux = diffusion_loss(model, x, schedule, tok.mask_id, generator=generator, t=t[:, 0],
                                   self_cond=1.0 if cfg.self_cond else 0.0)
    return nelbo, dict(scored=aux["masked"], pred=aux["logits"].argmax(-1), logits=aux["logits"], t_tok=t.expand_as(x))


def sampler_options(cfg):
    """denoise()'s switches beyond the basic ones: revisiting committed tokens (ReMDM's schedules, the corrector) and
    the temperature's fall over a block."""
    return {k: getattr(cfg, k) for k in (*remasking.REVISIT_KEYS, "temperature_end_share")}


def sample(model, x, gen_mask, cfg, schedule, mask_id, generator=None, on_step=None):
    return denoise(model, x, gen_mask, schedule, mask_id, cfg.steps, cfg.temperature, cfg.top_k, cfg.top_p, cfg.remask,
                   generator, on_step, order=cfg.order, tokens_per_step=cfg.tokens_per_step, remask_eta=cfg.remask_eta,
                   threshold=cfg.threshold, block_length=cfg.semi_ar_length, **sampler_options(cfg))


def block_passes(cfg, steps, n):
    """Forward passes of one block of n generated positions given `steps` (step mode): the loop schedule's phases
    (remasking.loop_split) or one per step up to one per position, plus the corrector's."""
    if cfg.remask == "remdm" and cfg.remdm_schedule == "loop" and cfg.remask_eta > 0:
        return sum(remasking.loop_split(steps, n, cfg.remdm_alpha_on, cfg.remdm_t_on, cfg.remdm_t_off)) + cfg.corrector_steps
    return min(steps, n) + cfg.corrector_steps


def passes(cfg, n_gen, n_prompt=0):
    if cfg.threshold:
        return None
    blen = cfg.semi_ar_length or n_gen
    sizes = [min(blen, n_gen - s) for s in range(0, n_gen, blen)]
    per = [cfg.steps // len(sizes) + (b < cfg.steps % len(sizes)) for b in range(len(sizes))]
    return sum(block_passes(cfg, p, n) for p, n in zip(per, sizes))


def describe(cfg):
    if cfg.threshold:
        how = f"threshold {cfg.threshold:g} (NFE adaptive, committed tokens final), order {cfg.order}"
    else:
        remask = cfg.remask
        if cfg.remask == "remdm":
            remask = f"remdm {cfg.remdm_schedule} eta={cfg.remask_eta:g}" + (
                f" (alpha_on={cfg.remdm_alpha_on:g}, t_on={cfg.remdm_t_on:g}, t_off={cfg.remdm_t_off:g})"
                if cfg.remdm_schedule == "loop" else "")
        how = f"{cfg.steps} steps, {cfg.tokens_per_step} counts, order {cfg.order}, remask {remask}"
    if cfg.temperature_end_share != 1.0:
        how += f", temperature falling to {cfg.temperature_end_share:g}x"
    if cfg.corrector_steps:
        how += f", corrector {cfg.corrector_steps} x {cfg.corrector_frac:g}" + (
            f" ({cfg.corrector_pick})" if cfg.corrector_pick != "confidence" else "")
    return how + (f", blocks of {cfg.semi_ar_length}" if cfg.semi_ar_length else "")
