"""The reverse sampler of mdlm (diffusion.py) and bd3's blocks (bd3.py): denoise() fills gen_mask's
positions by config.py's sampling keys (SamplerOptions); 'refine' and ReMDM revisit committed ones.

ReMDM (Wang et al. 2025, arXiv 2503.00307, eq. 5): a step t -> s re-masks a committed token w.p.
sigma_t <= min(1, (1 - alpha_s) / alpha_t), keeping q(z_s | x) the forward marginal; with m
committed and n_keep left masked, sigma_max = min(1, n_keep / m). We use the "max-capped" min(eta,
sigma_max) (Sec. 4.1); its loop schedule lost (dev/LOG.md, "The measurements delete what lost").

    python inference.py --checkpoint artifacts/models/model.pt --threshold 0.9 --semi-ar-length 32
"""
import math
import time
from dataclasses import dataclass, fields

import torch

from common import (Step, draw_device, filter_logits, on_device, predict_logits, put_at, reveal_plan, sample_tokens,
                    time_grid)
from config import CHOICES, UNSCORED_ORDERS

ORDERS = CHOICES["order"]
TOKENS_PER_STEP = CHOICES["tokens_per_step"]
REMASKS = CHOICES["remask"]


@dataclass(frozen=True)
class SamplerOptions:
    """The sampler's switches: config.py's keys (documented there), the reference's defaults."""
    steps: int                         # forward passes, split over the semi-AR blocks (bd3: per block)
    temperature: float = 1.0           # 0 = argmax
    top_k: int = 0
    top_p: float = 1.0
    order: str = "confidence"          # which position is revealed first
    tokens_per_step: str = "schedule"  # schedule (1 - alpha(t)) | linear (LLaDA) | cosine (MaskGIT)
    remask: str = "refine"             # refine | none (LLaDA) | remdm
    remask_eta: float = 0.0            # remdm's eta
    threshold: float = 0.0             # Fast-dLLM: commit every position above it, >= 1 per step
    semi_ar_length: int = 0            # blocks left to right (LLaDA); a sliding window past the context
    temperature_end_share: float = 1.0  # T falls to this share as the block fills (_temperature)

    @classmethod
    def from_config(cls, cfg):
        return cls(**{f.name: getattr(cfg, f.name) for f in fields(cls)})

    def __post_init__(self):  # domains only asserted: the configurator words user errors
        assert self.order in ORDERS and self.tokens_per_step in TOKENS_PER_STEP and self.remask in REMASKS, self
        assert self.temperature >= 0 and 0 <= self.remask_eta <= 1 and 0 <= self.threshold <= 1 and self.steps >= 1
        assert self.semi_ar_length >= 0 and self.temperature_end_share >= 0, self  # f > 0 at a draw: T stays > 0
        assert not (self.threshold > 0 and (self.order in UNSCORED_ORDERS or self.remask == "remdm")), \
            "threshold ranks by the model's score, never re-masks"


# the switches of revealing [MASK]s, which ar and uniform refuse
REVEAL_KEYS = tuple(f.name for f in fields(SamplerOptions) if f.name not in ("steps", "temperature", "top_k", "top_p"))


# -------------------------------------------------------------- time, scores and ReMDM's re-masking
def time_for_fraction(schedule, frac):
    """The t (B,) whose training mask rate 1 - alpha(t) is nearest the masked fraction frac (B,)."""
    mp = 1.0 - schedule.on(frac.device)[0][1:]  # (T,) increasing in t, already on the device
    return (mp[None, :] - frac.to(mp.dtype)[:, None]).abs().argmin(1) + 1


def position_scores(logp, cand, order, generator=None, cols=None):
    """(p(cand), ranking score in [0, 1], higher first), (N,) each. logp (N, V): float64 filtered
    log-probs; cand (N,): the drawn tokens; cols (N,): their columns ('l2r' only)."""
    p = logp.exp()
    conf = p.gather(-1, cand[:, None]).squeeze(-1)
    if order == "l2r":  # leftmost first: the network's own left-to-right joint (dev/order_nll.py)
        return conf, 1.0 / (1.0 + cols.to(logp.device, torch.float64))
    if order == "confidence":  # MaskGIT; LLaDA's low-confidence remasking
        return conf, conf
    if order == "margin":  # top-1 minus top-2 probability (Kim et al. 2025, "Train for the worst...")
        top = p.topk(min(2, p.size(-1)), dim=-1).values
        return conf, top[:, 0] - (top[:, 1] if top.size(1) > 1 else 0.0)
    if order == "entropy":  # exp(-H): 1 for a certain prediction, 1/V for a uniform one (Dream 7B)
        ent = -torch.where(p > 0, p * logp, torch.zeros_like(p)).sum(-1)
        return conf, torch.exp(-ent)
    # random, with schedule counts and remask='none': MDLM's ancestral sampling, the count fixed
    return conf, uniform_draws(len(cand), generator=generator, device=logp.device)


def uniform_draws(*shape, generator, device):
    """U(0, 1) float64 draws on `device`: the CPU's from `generator`, others seeded by it."""
    dev = draw_device(device)
    return torch.rand(*shape, generator=on_device(generator, dev), device=dev, dtype=torch.float64).to(device)


def _where(mask, n):
    """The flat indices of mask's n True entries, as nonzero() lists them, with no GPU sync."""
    flat = mask.flatten()
    return flat.nonzero().squeeze(1) if flat.is_cpu else flat.to(torch.uint8).argsort(descending=True, stable=True)[:n]


def sigma(eta, committed, n_keep):
    """ReMDM's min(eta, sigma_max) (B,) float64: a committed token's chance of re-masking."""
    m, k = committed.double(), n_keep.double()
    smax = torch.where(m > 0, (k / m.clamp(min=1)).clamp(max=1.0), torch.zeros_like(m))  # min(1, (1-alpha_s)/alpha_t)
    return smax.clamp(max=eta)


# -------------------------------------------------------- the plan of a call: blocks, steps, window
def split_steps(steps, n_blocks):
    """The steps over n_blocks semi-AR blocks, as even as it goes (the first blocks one more)."""
    return [steps // max(n_blocks, 1) + (b < steps % max(n_blocks, 1)) for b in range(n_blocks)]


def _plan(n, steps, schedule, opts):
    """Step mode's plan for a block of n (B,) positions: the [MASK]s left after each step (B, S)."""
    def fractions(j, k):  # the share still masked after step j of k
        if opts.tokens_per_step == "schedule":
            return 1.0 - schedule.alpha[time_grid(schedule.T, k)[j + 1]].item()
        r = (j + 1) / k  # linear: LLaDA; cosine: MaskGIT (Chang et al. 2022), few early, many late
        return 1.0 - r if opts.tokens_per_step == "linear" else math.cos(0.5 * math.pi * r)

    S = min(steps, int(n.max()))  # no step without a token to reveal
    return reveal_plan(n, [fractions(j, S) for j in range(S)])


def _window(now, L, W):
    """Columns [lo, hi) the model sees for block `now` (B, L, host): all, or W up to its last."""
    if L <= W:
        return 0, L
    cols = now.any(0).nonzero().squeeze(1)
    first, last = cols.min().item(), cols.max().item() + 1
    lo = max(0, last - W)
    if first < lo:
        raise ValueError(f"a block spans {last - first} positions, more than the model's context of {W}")
    return lo, lo + W


# ------------------------------------------------------------ one call's state and its reverse step
@dataclass
class _Decided:
    """What one step decides; flat indices row-major (nonzero()'s), as its n logits and draws."""
    everyone: bool             # every sample takes part
    rows: torch.Tensor         # (R,) on the host: the samples that take part
    sub: object                # their canvas rows: slice(None) (no gather) when everyone takes part
    is_masked: torch.Tensor    # (B, L) the block's [MASK]s before the step
    committed: torch.Tensor    # (B, L) the block's tokens before the step: what may be re-masked
    taking_part: torch.Tensor  # (B,) on the device: the samples with a position decided
    at: torch.Tensor           # (n,) the decided positions, flat in the canvas (B * L)
    at_window: torch.Tensor    # (n,) the same, flat in the window the model sees (R * W)


class _Denoiser:
    """One denoise() call's state and reverse step; layout and plan read once: no sync a pass."""

    def __init__(self, model, x, gen_mask, schedule, mask_id, opts, generator, on_step):
        self.model, self.gen_mask, self.schedule, self.mask_id = model, gen_mask, schedule, mask_id
        self.opts, self.generator, self.on_step, self.t0 = opts, generator, on_step, time.perf_counter()
        B, L = x.shape
        # semi-AR blocks: a row's k-th generated position is in block k // semi_ar_length
        self.block_of = torch.where(gen_mask, (gen_mask.long().cumsum(1) - 1) // (opts.semi_ar_length or L), -1)
        self.host_blocks = self.block_of.cpu()  # the call's one read of the layout
        self.last_block = self.host_blocks.max(1).values.tolist()  # per sample
        self.n_blocks = max(self.last_block) + 1
        self.steps = 0  # batched passes so far
        self.done_at = [0.0] * B  # seconds to each sample's last fill
        if not opts.threshold and opts.steps < self.n_blocks:
            raise ValueError(f"{opts.steps} steps cannot decode {self.n_blocks} blocks: need one step per block")
        self.sizes = [(self.host_blocks == b).sum(1) for b in range(self.n_blocks)]  # (B,) positions of each block
        if not opts.threshold and self.n_blocks:  # step mode's plans (none without a blank), host and device
            self.plans = [_plan(n, k, schedule, opts)
                          for n, k in zip(self.sizes, split_steps(opts.steps, self.n_blocks))]
            self.plans_d = torch.cat(self.plans, 1).to(x.device).split([p.size(1) for p in self.plans], 1)
        self.mask_tok = torch.full_like(x, mask_id)
        self.x = torch.where(gen_mask, self.mask_tok, x)
        self.conf = torch.zeros(B, L, dtype=torch.float64, device=x.device)  # p(token) at commit: the trace's colour
        self.kept = torch.zeros_like(self.conf)  # ranking score at commit: what 'refine' compares
        self.nfe = torch.zeros(B, dtype=torch.long)
        # self-conditioning: each position's latest x0 prediction, read while it is masked
        args = getattr(model, "args", None)
        self.sc = torch.zeros(B, L, args.vocab_size, device=x.device) if getattr(args, "self_cond", False) else None

    def step(self, now, lo, hi, n_keep, todo, greedy, n, remdm=False):
        """One reverse step over block `now` (B, L) seen through [lo, hi): `todo` (B, host) decide
        their n [MASK]s, n_keep (B,) stay masked. The commit draws after the tokens: seeded samples
        depend on that order. Returns (revealed, remasked, t told (B,))."""
        decided = self._decide(now, todo, lo, hi, n)
        logits, told = self._predict(decided, lo, hi)
        temperature = self._temperature(decided.is_masked, now, decided.at)
        logp = filter_logits(logits, temperature, self.opts.top_k, self.opts.top_p)  # (n, V) float64
        cand = sample_tokens(logp, 0.0 if greedy else self.opts.temperature, self.generator)  # (n,)
        self.law = (decided.at, logp)  # the Step's: the trace page's candidates
        revealed, remasked = self._commit(decided, logp, cand, n_keep, remdm)
        self.nfe += todo
        return revealed, remasked, told

    def _decide(self, now, todo, lo, hi, n):
        """The _Decided of this step: the n [MASK]s of block `now` in the samples `todo` (B, host,
        known from the plan: no sync), flat in the canvas and in the window [lo, hi)."""
        everyone = bool(todo.all())
        rows = todo.nonzero().squeeze(1)
        is_masked = (self.x == self.mask_id) & now
        decided = is_masked if everyone else is_masked & todo.to(self.x.device)[:, None]  # (B, L)
        sub = slice(None) if everyone else rows.to(self.x.device)
        return _Decided(everyone=everyone, rows=rows, sub=sub, is_masked=is_masked,
                        committed=(self.x != self.mask_id) & now, taking_part=decided.any(1),
                        at=_where(decided, n), at_window=_where(decided[sub, lo:hi], n))

    def _predict(self, decided, lo, hi):
        """(logits (n, V) at the decided positions, the t told (B,): 0 where a sample sits out)."""
        window = self.x[decided.sub, lo:hi]  # (R, W)
        # t means the training mask rate: of the whole window the model sees, given text included
        win_masked = window == self.mask_id  # (R, W)
        told = time_for_fraction(self.schedule, win_masked.double().mean(1))
        sc = None if self.sc is None else self.sc[decided.sub, lo:hi] * win_masked[..., None]
        logits = predict_logits(self.model, window, told, self.mask_id, positions=decided.at_window, sc=sc)
        if logits.dim() == 3:  # a model without the positions= shortcut returned (R, W, V)
            logits = logits.flatten(0, 1)[decided.at_window]
        if self.sc is not None:
            self.sc.view(-1, self.sc.size(-1))[decided.at] = torch.softmax(logits, -1)
        if not decided.everyone:
            told = torch.zeros_like(self.x[:, 0]).index_copy_(0, decided.sub, told)
        return logits, told

    def _commit(self, decided, logp, cand, n_keep, remdm):
        """Score cand (n,), pick the [MASK]s (_stay), write x, conf, kept: (revealed, remasked)."""
        cols = decided.at % self.x.size(1)
        new_conf, new_score = position_scores(logp, cand, self.opts.order, self.generator, cols=cols)  # (n,) each
        score = put_at(torch.full_like(self.conf, math.inf), decided.at, new_score)  # (B, L) +inf: never stays masked
        stay = self._stay(decided, score, n_keep, remdm)
        revealed = decided.is_masked & ~stay
        remasked = decided.committed & stay
        drawn = put_at(self.x, decided.at, cand)
        self.x = torch.where(revealed, drawn, self.x)
        self.x = torch.where(stay, self.mask_tok, self.x)
        self.conf = torch.where(revealed, put_at(self.conf, decided.at, new_conf), self.conf).masked_fill(remasked, 0.0)
        self.kept = torch.where(revealed, score, self.kept)
        return revealed, remasked

    def _temperature(self, is_masked, now, at):
        """The draws' temperature: a number, or (n, 1) at `at`, T (s + (1 - s) f) at masked share f,
        s = temperature_end_share (dev/LOG.md, "Reveal order and a falling temperature")."""
        temperature, end_share = self.opts.temperature, self.opts.temperature_end_share
        if end_share == 1.0 or temperature == 0:
            return temperature
        f = is_masked.sum(1).double() / now.sum(1).clamp(min=1)  # (B,)
        return (temperature * (end_share + (1.0 - end_share) * f))[at // now.size(1), None]  # in the logits' order

    def _stay(self, decided, score, n_keep, remdm=False):
        """[MASK] after the step (B, L), by score: the n_keep lowest, or Fast-dLLM's threshold."""
        threshold = self.opts.threshold
        if threshold and n_keep is None:  # every position above the threshold, at least each sample's best
            commit = decided.is_masked & (score > threshold)
            best = score.masked_fill(~decided.is_masked, -1.0).argmax(1)
            commit[decided.rows, best[decided.rows]] = True
            return decided.is_masked & ~commit
        if self.opts.remask == "refine":  # committed tokens compete on their kept score
            score = torch.where(decided.committed, self.kept, score)
        elif remdm and self.opts.remask == "remdm":
            sigma_t = sigma(self.opts.remask_eta, decided.committed.sum(1), n_keep)  # (B,)
            u = uniform_draws(*score.shape, generator=self.generator, device=score.device)
            u = u.masked_fill(~decided.committed, 2.0)
            # each committed token w.p. sigma, at most n_keep (the smallest u: a random subset)
            forced = (u < sigma_t[:, None]) & (u.argsort(1).argsort(1) < n_keep[:, None])
            score = score.masked_fill(forced, -math.inf)
        stay = score.argsort(1).argsort(1) < n_keep[:, None]  # rank 0 = lowest score
        return torch.where(decided.taking_part[:, None], stay, decided.is_masked)  # sat out: unchanged

    def reveal(self, b, now, lo, hi, greedy_end):
        """Fill block `now` by its plan, or until full (threshold); greedy_end: last step argmax."""
        if self.opts.threshold:
            left = (self.x == self.mask_id) & now  # read on the host each pass: the stopping rule is adaptive
            while left.any():
                prev = self.x
                revealed, remasked, told = self.step(now, lo, hi, None, left.any(1).cpu(), False, int(left.sum()))
                self.report(b, prev, revealed, remasked, told, True)
                left = (self.x == self.mask_id) & now
            return
        plan = self.plans[b]  # (B, S) on the host
        masked = self.sizes[b]  # (B,) the block's [MASK]s before the step
        S = plan.size(1)
        for i in range(S):
            prev = self.x
            todo = masked > plan[:, i]  # the samples with a token to reveal now
            # sigma > 0 where a sample holds a committed token and keeps a [MASK] after the step
            remdm = self.opts.remask_eta > 0 and bool(((self.sizes[b] > masked) & (plan[:, i] > 0)).any())
            # n_keep from the device copy: the step reads nothing back
            revealed, remasked, told = self.step(now, lo, hi, self.plans_d[b][:, i], todo, greedy_end and i == S - 1,
                                                 int(masked[todo].sum()), remdm)
            masked = plan[:, i]
            self.report(b, prev, revealed, remasked, told, i == S - 1, masked.tolist())

    def report(self, b, prev, revealed, remasked, told, block_done, masked=None):
        """After each pass: count it, time finished samples, call on_step (masked: host counts)."""
        self.steps += 1
        left = (((self.x == self.mask_id) & self.gen_mask).any(1).tolist() if masked is None else
                [m > 0 or b < last for m, last in zip(masked, self.last_block)])  # later blocks are all [MASK]
        finished = [block_done and not any_left for any_left in left]
        for r, any_left in enumerate(left):
            if not self.done_at[r] and not any_left:
                self.done_at[r] = time.perf_counter() - self.t0
        if self.on_step is not None:
            self.on_step(Step(step=self.steps, nfe=self.nfe.clone(), time=told, x=self.x, prev=prev,
                              gen_mask=self.gen_mask, revealed=revealed, remasked=remasked, conf=self.conf, block=b,
                              n_blocks=self.n_blocks, finished=finished, law=self.law))


@torch.no_grad()
def denoise(model, x, gen_mask, schedule, mask_id, opts, generator=None, on_step=None):
    """Reverse process over the canvas x (B, L) by `opts` (SamplerOptions): gen_mask (B, L) starts
    as [MASK], the rest is given text, never changed. Step mode: after step i the lowest-scored
    round(n * f(i)) of a block's n stay masked (f: tokens_per_step); on_step(common.Step) after
    each. Returns (x, stats: nfe, nfe_per_sample, seconds_per_sample, seconds, blocks)."""
    L, W, gen_mask = x.size(1), model.args.block_size, gen_mask.bool()
    if L > W and not (opts.semi_ar_length and (gen_mask == gen_mask[:1]).all()):
        raise ValueError(f"a canvas of {L} tokens exceeds the model's context of {W}: decode it in blocks "
                         f"(semi_ar_length) with the same generated positions in every row")
    d = _Denoiser(model, x, gen_mask, schedule, mask_id, opts, generator, on_step)
    # the greedy step into t = 0 ends the sample, not each block (else each block ends in an argmax)
    greedy_end = opts.tokens_per_step == "schedule" and not opts.threshold
    for b in range(d.n_blocks):
        lo, hi = _window(d.host_blocks == b, L, W)
        d.reveal(b, d.block_of == b, lo, hi, greedy_end and b == d.n_blocks - 1)
    assert not ((d.x == mask_id) & gen_mask).any(), "sampler left a [MASK]"
    return d.x, dict(nfe=d.steps, nfe_per_sample=d.nfe.tolist(), seconds_per_sample=d.done_at,
                     seconds=time.perf_counter() - d.t0, blocks=d.n_blocks)


# ------------------------------------------------------------------- what a call costs, in one line
def passes(opts, n_gen):
    """denoise()'s passes per sample over n_gen positions (None: threshold, adaptive)."""
    if opts.threshold:
        return None
    blen = opts.semi_ar_length or n_gen
    sizes = [min(blen, n_gen - s) for s in range(0, n_gen, blen)]
    return sum(min(p, n) for p, n in zip(split_steps(opts.steps, len(sizes)), sizes))  # at most one a position


def describe(opts):
    """The sampler in one line, as inference.py and eval.py print it."""
    if opts.threshold:
        how = f"threshold {opts.threshold:g} (NFE adaptive, committed tokens final), order {opts.order}"
    else:
        remask = f"remdm cap eta={opts.remask_eta:g}" if opts.remask == "remdm" else opts.remask
        how = f"{opts.steps} steps, {opts.tokens_per_step} counts, order {opts.order}, remask {remask}"
    if opts.temperature_end_share != 1.0:
        how += f", temperature falling to {opts.temperature_end_share:g}x"
    return how + (f", blocks of {opts.semi_ar_length}" if opts.semi_ar_length else "")
