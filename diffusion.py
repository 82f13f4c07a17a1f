"""Masked (absorbing-state) diffusion, top to bottom: the schedule alpha(t), the time draws, the
forward corruption q(x_t | x_0), the loss and its bound, then the reverse process that samples:
first plain (sample_ancestral), then with its options (denoise). Last, the objective as train.py
and inference.py call it (MaskedDiffusion), on the contract every objective keeps (Objective).
bd3.py, uniform.py and ar.py build on it; learning.md teaches it in the same order.

Discrete time t in 0..T; alpha(t), a token's chance to be still visible, falls from 1 to 0. The
negative ELBO, >= -log p(x0) (Austin et al. 2021; MDLM, Sahoo et al. 2024, eq. 10 in discrete time):

    NELBO = sum_t E_q(xt|x0) [ w(t) * sum_{i masked in xt} -log p(x0_i | xt) ],
    w(t)  = (alpha(t-1) - alpha(t)) / (1 - alpha(t)),

estimated with t drawn from 1..T, the term times T. Per token: over L, not over the masked count.

    python -c "import diffusion; print(diffusion.Schedule(100).alpha[:3])"
    python train.py cpu                              # trains this objective
    python inference.py cpu --prompt "JULIET:"       # samples it (denoise)

The plain sampler on the shipped weights (learning.md's section 3 runs it too):

    import torch, diffusion, checkpoint_manager, utils.tokenizer
    model, ckpt = checkpoint_manager.load_model("artifacts/weights/cpu", "cpu")
    tok = utils.tokenizer.tokenizer_from_state(ckpt["tokenizer"])
    x = torch.tensor([tok.encode("ROMEO:") + [tok.mask_id] * 40])
    schedule = diffusion.Schedule(1000)  # the cpu preset's T
    y = diffusion.sample_ancestral(model, x, x == tok.mask_id, schedule, tok.mask_id, steps=40)
    print(tok.decode(y[0].tolist()))
"""
import math
from dataclasses import dataclass, fields, replace

import torch
import torch.nn.functional as F

from config import RANGES, UNSCORED_ORDERS
from model import sample_causal
from utils.dist import draw_device, on_device
from utils.draws import Law, draw, drawn_law, sample_tokens, uniform_draws
from utils.errors import UserError
from utils.steps import Drew, StepRecord


# ------------------------------------------------------------------------ the schedule alpha(t)
def survival(kind, u):
    """alpha at u = t / T in [0, 1] (float64): config.py's schedule by name. A new schedule is a
    branch here (alpha(0) = 1, falling to alpha(1) = 0: tests/test_options.py) and its name
    there."""
    if kind == "cosine":
        return torch.cos(0.5 * math.pi * u)
    if kind == "linear":
        return 1.0 - u
    raise ValueError(f"unknown schedule {kind!r}")


class Schedule:
    """alpha(t), a token's chance to be still clean (1 at t = 0, 0 at T), and the ELBO weight
    w(t) = (alpha(t-1) - alpha(t)) / (1 - alpha(t)), tabulated for t = 0..T in float64."""

    def __init__(self, T, kind="cosine"):
        alpha = survival(kind, torch.arange(T + 1, dtype=torch.float64) / T)
        alpha[0], alpha[T] = 1.0, 0.0  # exact endpoints (cos(pi/2) is 6e-17, not 0)
        self.T, self.kind, self.alpha, self._on = T, kind, alpha, {}
        self.weight = torch.zeros(T + 1, dtype=torch.float64)  # w(0) unused
        self.weight[1:] = (alpha[:-1] - alpha[1:]) / (1.0 - alpha[1:])

    def on(self, device):
        """(alpha, weight) on `device`, copied once: a step indexes them copy-free (MPS: fp32)."""
        device = torch.device(device)
        if device not in self._on:
            dtype = torch.float32 if device.type == "mps" else torch.float64
            self._on[device] = (self.alpha.to(device, dtype), self.weight.to(device, dtype))
        return self._on[device]

    def mask_prob(self, t):
        return 1.0 - self.on(t.device)[0][t]


# ------------------------------------------------------------------------ time draws
def stratum_time(i, u, total, T):
    """The time in 1..T of stratum i (+ offset u in [0, 1)) of `total` slices of [0, 1)."""
    return (torch.floor((i + u) / total * T).long() + 1).clamp_(1, T)


def stratified_times(n, T, generator=None, device="cpu", offset=0, total=None, u=None):
    """n times in 1..T, one per stratum: t_i = floor((i + u) / total * T) + 1, one shared u ~ U[0,1)
    (MDLM's low-discrepancy t: lower variance). offset/total: their place in the global batch."""
    total, device = total or n, torch.device(device)
    if u is None:
        u = torch.rand((), generator=generator, dtype=torch.float64)  # a CPU scalar: no copy
    i = torch.arange(offset, offset + n, dtype=torch.float64, device=draw_device(device))
    return stratum_time(i, u, total, T).to(device)


def band_times(schedule, lo=0.0, hi=1.0):
    """Times t in 1..T whose mask rate is in [lo, hi] (BD3-LM's band: a lower-variance gradient)."""
    mp = 1.0 - schedule.alpha
    t = torch.nonzero((mp >= lo - 1e-12) & (mp <= hi + 1e-12)).squeeze(1)
    t = t[t >= 1]
    if len(t) == 0:  # check_band refuses such a config first
        raise ValueError(f"no diffusion time has a mask rate in [{lo}, {hi}] (T={schedule.T}): widen the band "
                         f"(--mask_min, --mask_max)")
    assert t[-1] - t[0] + 1 == len(t), "1 - alpha(t) rises with t: a band is a run of times, band[0] + i"
    return t


@dataclass
class Draw:
    """One micro-batch's randomness, keyed (bit-exact on resume and DDP): `generator` draws masks or
    noise; times are stratified over the global batch (`total`, one `u` a step) from `offset`."""
    generator: torch.Generator = None
    u: torch.Tensor = None
    offset: int = 0
    total: int = None
    progress: float = 1.0  # step / max_iters, for a curriculum on t


def repeat_draws(draw, k, n):
    """The Draw of k copies of n windows (--mask_draws): copy j of window i is row j * n + i."""
    return replace(draw, offset=draw.offset * k, total=(draw.total or n) * k)


@dataclass
class Drawn:
    """A pass's draws on the device, made ahead so that a compiled, CUDA-graphed loss is pure
    (bd3.py and uniform.py add their own fields)."""
    t: torch.Tensor             # the times (B,), or bd3's one per block (B, L // L')
    uniform: torch.Tensor       # (B, L) float32 U[0, 1): a token under the mask rate is masked
    rows: torch.Tensor = None   # (R,) the sequences self-conditioning's first pass feeds


def masking_draws(shape, t, share, generator=None, device="cpu"):
    """Drawn for masked diffusion: t, the masks' uniforms, self-conditioning's rows, in order: a
    random round(share * B) of B (R,), None if share >= 1 or 0."""
    dev = draw_device(device)
    uniform = torch.rand(shape, generator=on_device(generator, dev), device=dev).to(device)
    rows = None
    if 0 < share < 1:
        rows = torch.randperm(shape[0], generator=on_device(generator, dev), device=dev)[:round(share * shape[0])]
        rows = rows.to(device)
    return Drawn(t, uniform, rows)


# ------------------------------------------------------------------------ q(x_t | x_0)
def corrupt(x0, t, schedule, mask_id, generator=None, uniform=None):
    """q(xt | x0): each token becomes [MASK] w.p. 1 - alpha(t). x0 (B, L), t (B,); uniform (B, L):
    the deciding U[0, 1) draws (masking_draws), else from generator. Returns (xt, mask)."""
    uniform = masking_draws(x0.shape, t, 0.0, generator, x0.device).uniform if uniform is None else uniform
    p = schedule.mask_prob(t).to(torch.float32)[:, None]  # (B, 1)
    masked = uniform < p
    return torch.where(masked, torch.full_like(x0, mask_id), x0), masked


# ------------------------------------------------------------------------ the loss and the bound
SELF_COND_SHARE = 0.5  # --self_cond feeds half the rows their first pass's x0, the rest train the plain pass


@dataclass(frozen=True)
class LossOptions:
    """The training loss's switches (diffusion_loss, bd3.bd3_loss)."""
    loss_type: str = "elbo"    # 'elbo' (the NELBO), 'masked_ce' / 'all_ce' (plain CE, no w(t))
    self_cond: float = 0.0     # the share of sequences given the first pass's x0; 0: one plain pass
    ar_weight: float = 0.0     # bd3: weight of the clean stream's next-token loss


def no_mask_logit(logits, mask_id):
    """Logits with [MASK] at -inf: x0 is never [MASK] (compared on the device: no index copied)."""
    return logits.masked_fill(torch.arange(logits.size(-1), device=logits.device) == mask_id, float("-inf"))


def predict_logits(model, xt, t, mask_id, positions=None, sc=None):
    """Logits (B, L, V) float32, [MASK] at -inf; positions (N,) flat: those rows only, (N, V)."""
    kw = {k: v for k, v in dict(positions=positions, sc=sc).items() if v is not None}
    return no_mask_logit(model(xt, t, **kw), mask_id)


def self_condition_input(logits_of, masked, rows=None):
    """Self-conditioning's input (B, L, V) (Chen et al. 2022): a no-grad first pass's x0 prediction
    at the masked positions of sequences `rows` (R,) (None: all), zeros elsewhere (as a sampler's
    first step). logits_of(r): (R, L, V), r rows or slice(None). A function of x_t: the NELBO stays
    a bound."""
    with torch.no_grad():
        if rows is None:  # every sequence
            return torch.softmax(logits_of(slice(None)), -1) * masked[..., None]
        probs = torch.softmax(logits_of(rows), -1) * masked[rows][..., None]
        return torch.zeros(*masked.shape, probs.size(-1), device=masked.device).index_copy_(0, rows, probs)


def diffusion_loss(model, x0, schedule, mask_id, opts=LossOptions(), generator=None, t=None, drawn=None):
    """One pass with `opts` (LossOptions): (loss, NELBO in nats/token (B,), aux), the NELBO whatever
    loss_type trains; drawn: made ahead (Drawn), else t (stratified if None), masks drawn here."""
    B, L = x0.shape
    if drawn is None:
        t = stratified_times(B, schedule.T, generator, x0.device) if t is None else t
        drawn = masking_draws(x0.shape, t, opts.self_cond, generator, x0.device)
    t = drawn.t
    xt, masked = corrupt(x0, t, schedule, mask_id, uniform=drawn.uniform)
    sc = None
    if opts.self_cond:  # a first pass over x_t
        sc = self_condition_input(lambda r: predict_logits(model, xt[r], t[r], mask_id), masked, drawn.rows)
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


# ---------------------------------------------------------------- the reverse process, plain
def time_grid(T, steps):
    """Integer times T = t_0 > t_1 > ... > t_steps = 0 for `steps` reverse steps."""
    grid = torch.round(torch.linspace(T, 0, steps + 1, dtype=torch.float64)).long()
    assert len(torch.unique(grid)) == steps + 1, "steps must be <= T"
    return grid.tolist()


@torch.no_grad()
def sample_ancestral(model, x, gen_mask, schedule, mask_id, steps, generator=None):
    """MDLM's ancestral sampler (Sahoo et al. 2024, Algorithm 2), on the grid T = t_0 > ... > 0:
    at each step t -> s the network predicts x0 everywhere, and each position still [MASK] is
    revealed, independently, w.p. (alpha(s) - alpha(t)) / (1 - alpha(t)), taking the token drawn
    from its prediction. So a Binomial count is revealed a step (denoise reveals the schedule's
    count exactly), and all the rest at s = 0. gen_mask (B, L): the blanks; the given text is never
    touched. Returns x (B, L) with every blank filled."""
    alpha = schedule.alpha
    x = torch.where(gen_mask, mask_id, x)  # the blanks start as [MASK]
    grid = time_grid(schedule.T, steps)
    for t, s in zip(grid[:-1], grid[1:]):
        masked = x == mask_id  # (B, L) the positions still to decide
        logits = predict_logits(model, x, torch.full_like(x[:, 0], t), mask_id)  # (B, L, V) p(x0 | x_t)
        x0 = draw(torch.softmax(logits.double(), -1), generator)  # (B, L) a draw at every position, in float64
        reveal = (alpha[s] - alpha[t]) / (1 - alpha[t])  # q(x_s = x0 | x_t = [MASK]): 1 at s = 0
        u = uniform_draws(*x.shape, generator=generator, device=x.device)
        x = torch.where(masked & (u < reveal), x0, x)  # a revealed token stays (absorbing: never re-masked)
    return x


# ---------------------------------------------------------------- the reverse process, its options
@dataclass(frozen=True)
class SamplerOptions:
    """Every sampler's options and their rules: config.py's sampling keys (documented there, with
    these defaults), read once at the entry script (from_config) and handed down; no module below
    it reads them off a config. The law a token is drawn from (Law: temperature, top_k, top_p) is
    one value every sampler takes. A new option is a field here, its key in config.py, its rule in
    check."""
    steps: int = 100                  # forward passes, split over the semi-AR blocks (bd3: per block)
    law: Law = Law()                  # temperature, top_k, top_p (utils/draws.py)
    order: str = "confidence"         # which position is revealed first
    tokens_per_step: str = "schedule"  # schedule (1 - alpha(t)) | linear (LLaDA) | cosine (MaskGIT)
    remask: str = "refine"            # refine | none (LLaDA) | remdm
    remask_eta: float = 0.02          # remdm's eta
    threshold: float = 0.0            # Fast-dLLM: commit every position above it, >= 1 per step
    entropy_bound: float = 0.0        # EB-Sampler: reveal while the entropies' sum - max <= it, >= 1 per step
    semi_ar_length: int = 0           # blocks left to right (LLaDA); a sliding window past the context
    temperature_end_share: float = 1.0  # T falls to this share as the block fills (step_temperature)
    replay_steps: int = 4             # decoders: tokens (bd3 at batch 1: rounds) a call (model.decode_steps)
    bd3_speculate: bool = False       # bd3: the clean half's AR, the noisy half drafting
    dual_sample: bool = False         # mdlm: the dual objective's AR mode

    @classmethod
    def keys(cls):
        """The config keys a sampler reads: every field's, the law's in its place."""
        return [k for f in fields(cls) for k in ([g.name for g in fields(Law)] if f.name == "law" else [f.name])]

    @classmethod
    def from_config(cls, cfg):
        """The options a config's keys of the same names set."""
        return cls(law=Law.from_config(cfg), **{f.name: getattr(cfg, f.name) for f in fields(cls) if f.name != "law"})

    @property
    def adaptive(self):
        """Whether each pass sets its own count (threshold, entropy_bound): no plan."""
        return self.threshold > 0 or self.entropy_bound > 0

    def unread(self):
        """{key: the user's line} of the keys these options' own switches leave unread: an argmax
        filters and cools no law, only ReMDM reads its eta, an adaptive rule sets each pass's count
        itself. Given, validation refuses each; a frontier's grid drops it."""
        lines = {}
        if self.law.temperature == 0:
            lines.update({k: _acts_only_with(k, "--temperature", "temperature=0.0")
                          for k in ("top_k", "top_p", "temperature_end_share")})
        if self.remask != "remdm":
            lines["remask_eta"] = _acts_only_with("remask_eta", "--remask='remdm'", f"remask={self.remask!r}")
        for key in ("steps", "tokens_per_step"):
            if self.threshold:
                lines[key] = f"--{key} acts only without --threshold: drop one of the two"
            elif self.entropy_bound:
                lines[key] = f"--{key} does not act with --entropy_bound, which decides it: drop one of the two"
        return lines

    def check(self, given=()):
        """The rules between the options, in the user's words (given: the keys the user set). Each
        value alone is checked before (utils.values.check_values); an objective's own rules, by
        it."""
        self.law.check()
        if self.threshold and self.order in UNSCORED_ORDERS:
            raise UserError(f"threshold decoding commits by the model's score: use --order confidence, margin or "
                            f"entropy, not {self.order}")
        if self.threshold and self.remask == "remdm":
            raise UserError("threshold decoding commits tokens for good: use --remask none (or refine), not remdm")
        if self.entropy_bound and self.threshold:  # (entropy_bound_stay)
            raise UserError("--entropy_bound and --threshold each decide how many tokens a pass reveals: give one of "
                            "them")
        if self.entropy_bound and self.order in UNSCORED_ORDERS:
            raise UserError(f"--entropy_bound reveals in the order of a model score: use --order entropy (or "
                            f"confidence, margin), not {self.order}; or --entropy_bound 0 (off)")
        if self.entropy_bound and (self.remask == "remdm" or (self.remask == "refine" and "remask" in given)):
            raise UserError(f"--entropy_bound commits tokens for good: use --remask none, not {self.remask}")
        if not math.isfinite(self.law.temperature * self.temperature_end_share):  # T s must not overflow
            raise UserError(RANGES["temperature_end_share"][1].format(value=self.temperature_end_share))

    def n_blocks(self, n_gen):
        """The semi-AR blocks of n_gen blanks, decoded left to right (1 without semi_ar_length)."""
        return -(-n_gen // self.semi_ar_length) if self.semi_ar_length else 1

    def check_blocks(self, n_blocks):
        """Refuses fewer steps than blocks: each block takes a pass at least (an adaptive rule
        sets its own)."""
        if not self.adaptive and self.steps < n_blocks:
            raise UserError(f"--steps {self.steps} is fewer than the {n_blocks} blocks of --semi-ar-length "
                            f"{self.semi_ar_length}: use --steps {n_blocks} or more, or a longer --semi-ar-length")

    def passes(self, n_gen):
        """denoise()'s passes a sample over n_gen blanks: the steps split over the semi-AR
        blocks, at most one a position (None: adaptive, each pass sets its count)."""
        if self.adaptive:
            return None
        blen = self.semi_ar_length or n_gen
        sizes = [min(blen, n_gen - s) for s in range(0, n_gen, blen)]  # the semi-AR blocks' positions
        return sum(min(p, n) for p, n in zip(split_steps(self.steps, len(sizes)), sizes))

    def final(self):
        """What keeps committed tokens final ('threshold', 'entropy bound', 'remask none'), or ''
        where a pass may change them (refine, remdm)."""
        if self.threshold:
            return "threshold"
        if self.entropy_bound:
            return "entropy bound"
        return "remask none" if self.remask == "none" else ""

    def describe(self, brief=False, per=""):
        """denoise() with these options in one line, as inference.py, eval.py, frontier.py and the
        trace's page print it; brief: only what is off the defaults (a video's 64-cell title, which
        adds the temperature itself). per: the steps' unit (bd3: ' per block')."""
        if brief:
            return ", ".join(self._brief(per))
        if self.threshold:
            how = f"threshold {self.threshold:g} (NFE adaptive, committed tokens final), order {self.order}"
        elif self.entropy_bound:
            how = (f"entropy bound {self.entropy_bound:g} nats (EB-Sampler: NFE adaptive, committed tokens final), "
                   f"order {self.order}")
        else:
            remask = f"remdm cap eta={self.remask_eta:g}" if self.remask == "remdm" else self.remask
            how = f"{self.steps} steps{per}, {self.tokens_per_step} counts, order {self.order}, remask {remask}"
        if self.temperature_end_share != 1.0:
            how += f", temperature falling to {self.temperature_end_share:g}x"
        return how + (f", blocks of {self.semi_ar_length}" if self.semi_ar_length else "")

    def _brief(self, per):
        """describe(brief=True)'s parts: the settings off their defaults, the step count always."""
        if self.threshold:
            how = [f"threshold {self.threshold:g}"]
        elif self.entropy_bound:
            how = [f"entropy bound {self.entropy_bound:g}"]
        else:
            how = [f"{self.steps} steps{per}"]
        if not self.adaptive and self.tokens_per_step != "schedule":
            how.append(f"{self.tokens_per_step} counts")
        if self.order != "confidence":
            how.append(f"order {self.order}")
        if not self.adaptive and self.remask == "remdm":  # ReMDM is max-capped
            how.append(f"remdm cap eta {self.remask_eta:g}")
        elif not self.adaptive and self.remask != "refine":
            how.append(f"remask {self.remask}")
        return how + ([f"semi-AR {self.semi_ar_length}"] if self.semi_ar_length else [])


def _acts_only_with(key, want, here):
    """The line refusing `key` given where its partner is off, in configurator.idle's words."""
    return f"--{key} acts only with {want} (here {here}): give that too, or drop --{key}"


@torch.no_grad()
def denoise(model, x, gen_mask, schedule, mask_id, opts, generator=None, on_step=None):
    """sample_ancestral's loop with its options (SamplerOptions), each one unit on the plain step:
    how many stay masked after a step (tokens_per_step's plan, or adaptive: --threshold,
    --entropy_bound), which positions go
    first (order), whether committed tokens may return to [MASK] (remask), the law's temperature,
    self-conditioning, and semi-AR blocks left to right (a window past the context). With random
    order and remask='none' a step draws each revealed token as sample_ancestral does, but
    reveals the plan's count, not a Binomial one (tests/test_diffusion.py ties the two), and
    schedule counts end in the reference's greedy step into t = 0. The given text (gen_mask
    False) is never changed. on_step(Step) after each pass (utils/steps.py). Returns (x, stats:
    nfe, nfe_per_sample, seconds_per_sample, seconds, blocks)."""
    L, W, gen_mask = x.size(1), model.args.block_size, gen_mask.bool()
    if L > W and not (opts.semi_ar_length and (gen_mask == gen_mask[:1]).all()):
        raise ValueError(f"a canvas of {L} tokens exceeds the model's context of {W}: decode it in blocks "
                         f"(semi_ar_length) with the same generated positions in every row")
    blocks = Blocks(gen_mask, schedule, opts)
    x = torch.where(gen_mask, mask_id, x)
    sc = None  # self-conditioning's input: zeros before the first prediction
    if getattr(model.args, "self_cond", False):
        sc = torch.zeros(*x.shape, model.args.vocab_size, device=x.device)
    state = Denoising(model, schedule, mask_id, opts, generator, x, torch.zeros_like(x, dtype=torch.float64), sc)
    record = StepRecord(gen_mask, mask_id, blocks.last, on_step)
    # the greedy step into t = 0 ends the sample, not each block (else each block ends in an argmax)
    greedy_end = opts.tokens_per_step == "schedule" and not opts.adaptive
    for b in range(blocks.n):
        block = blocks.block(b, W)
        if opts.adaptive:
            fill_adaptive(state, record, block)
        else:
            fill_by_plan(state, record, blocks, block, greedy_end and b == blocks.n - 1)
    assert not ((state.x == mask_id) & gen_mask).any(), "sampler left a [MASK]"
    return state.x, record.stats(blocks.n)


@dataclass
class Denoising:
    """What one denoise() call carries from pass to pass."""
    model: object
    schedule: Schedule
    mask_id: int
    opts: SamplerOptions
    generator: torch.Generator
    x: torch.Tensor     # (B, L) the canvas: given text, committed tokens, [MASK]s
    kept: torch.Tensor  # (B, L) float64 each committed token's ranking score: what 'refine' compares
    sc: torch.Tensor    # (B, L, V) self-conditioning: each position's latest x0 prediction (None: off)


def fill_by_plan(state, record, blocks, block, greedy_end):
    """Fill a block by its plan: after step i each sample keeps plan[:, i] of its [MASK]s (the plan
    is on the host: no sync a pass). greedy_end: the last step takes the argmax (t = 0)."""
    plan, masked = blocks.plans[block.index], blocks.sizes[block.index]  # (B, S) host; (B,) [MASK]s before
    S = plan.size(1)
    for i in range(S):
        prev = state.x
        todo = masked > plan[:, i]  # the samples with a token to reveal now
        # ReMDM acts where a sample holds a committed token and keeps a [MASK] after the step
        remdm = state.opts.remask_eta > 0 and bool(((blocks.sizes[block.index] > masked) & (plan[:, i] > 0)).any())
        # n_keep from the device copy: the step reads nothing back
        n_keep = blocks.plans_d[block.index][:, i]
        drew = reverse_step(state, block, n_keep, todo, int(masked[todo].sum()), greedy_end and i == S - 1, remdm)
        masked = plan[:, i]
        record.after(block.index, prev, state.x, drew, todo, i == S - 1, masked.tolist())


def fill_adaptive(state, record, block):
    """Fill a block pass by pass, each setting its own count (threshold or entropy bound: see
    stay_masked). The [MASK]s left are read on the host each pass."""
    left = (state.x == state.mask_id) & block.now
    while left.any():
        prev = state.x
        todo = left.any(1).cpu()
        drew = reverse_step(state, block, None, todo, int(left.sum()))
        record.after(block.index, prev, state.x, drew, todo, True)
        left = (state.x == state.mask_id) & block.now


def reverse_step(state, block, n_keep, todo, n, greedy=False, remdm=False):
    """One pass over a Block: the samples `todo` (B, host) decide their n [MASK]s there
    (sample_ancestral's step, with the options as units): predict x0 there, draw a candidate at
    each, score them (order), choose which stay [MASK] (n_keep (B,) of them, or by threshold;
    refine and ReMDM may re-mask committed ones), commit. The draws' order is fixed (candidates,
    then order's, then ReMDM's): seeded samples depend on it. Returns a Drew."""
    opts, x, now = state.opts, state.x, block.now
    d = decide(x, now, todo, block.lo, block.hi, n, state.mask_id)
    logits, told = predict(state, d, block.lo, block.hi)  # (n, V) at the decided positions
    temperature = step_temperature(opts, d.is_masked, now, d.at)
    logp = opts.law.log_probs(logits, temperature)  # (n, V) float64
    greedy = greedy or opts.law.temperature == 0
    cand = sample_tokens(logp, 0.0 if greedy else opts.law.temperature, state.generator)  # (n,)
    _, new_score = position_scores(logp, cand, opts.order, state.generator, cols=d.at % x.size(1))
    score = put_at(torch.full_like(state.kept, math.inf), d.at, new_score)  # (B, L) +inf: never stays masked
    h = put_at(torch.zeros_like(state.kept), d.at, entropy(logp)) if opts.entropy_bound else None  # (B, L) nats
    stay = stay_masked(opts, d, score, state.kept, n_keep, remdm, state.generator, h)
    revealed = d.is_masked & ~stay
    remasked = d.committed & stay
    x = torch.where(revealed, put_at(x, d.at, cand), x)
    state.x = torch.where(stay, state.mask_id, x)
    state.kept = torch.where(revealed, score, state.kept)
    return Drew(at=d.at, laws=drawn_law(logp, greedy), cand=cand, revealed=revealed, remasked=remasked, told=told)


@dataclass
class Decided:
    """The positions one pass decides, flat row-major (nonzero()'s), as its n logits and draws."""
    everyone: bool             # every sample takes part
    rows: torch.Tensor         # (R,) on the host: the samples that take part
    sub: object                # their canvas rows: slice(None) (no gather) when everyone takes part
    is_masked: torch.Tensor    # (B, L) the block's [MASK]s before the step
    committed: torch.Tensor    # (B, L) the block's tokens before the step: what may be re-masked
    taking_part: torch.Tensor  # (B,) on the device: the samples with a position decided
    at: torch.Tensor           # (n,) the decided positions, flat in the canvas (B * L)
    at_window: torch.Tensor    # (n,) the same, flat in the window the model sees (R * W)


def decide(x, now, todo, lo, hi, n, mask_id):
    """The Decided of a pass: the n [MASK]s of block `now` in the samples `todo` (B, host, known
    from the plan: no sync), flat in the canvas and in the window [lo, hi)."""
    everyone = bool(todo.all())
    rows = todo.nonzero().squeeze(1)
    is_masked = (x == mask_id) & now
    decided = is_masked if everyone else is_masked & todo.to(x.device)[:, None]  # (B, L)
    sub = slice(None) if everyone else rows.to(x.device)
    flat = decided.flatten()  # (B * L)
    flat_window = decided[sub, lo:hi].flatten()  # (R * W)
    if flat.is_cpu:
        at = flat.nonzero().squeeze(1)
        at_window = flat_window.nonzero().squeeze(1)
    else:  # in nonzero()'s order with no GPU sync: a stable sort puts the n known True first
        at = flat.to(torch.uint8).argsort(descending=True, stable=True)[:n]
        at_window = flat_window.to(torch.uint8).argsort(descending=True, stable=True)[:n]
    return Decided(everyone=everyone, rows=rows, sub=sub, is_masked=is_masked, committed=(x != mask_id) & now,
                   taking_part=decided.any(1), at=at, at_window=at_window)


def predict(state, d, lo, hi):
    """(logits (n, V) at the decided positions, the t told (B,): 0 where a sample sits out). With
    self-conditioning the network also reads each masked position's last prediction (Chen et al.
    2022; zeros before the first), and this pass's becomes the next one's."""
    window = state.x[d.sub, lo:hi]  # (R, W)
    # t means the training mask rate: of the whole window the model sees, given text included
    win_masked = window == state.mask_id  # (R, W)
    told = time_for_fraction(state.schedule, win_masked.double().mean(1))
    sc = None if state.sc is None else state.sc[d.sub, lo:hi] * win_masked[..., None]
    logits = predict_logits(state.model, window, told, state.mask_id, positions=d.at_window, sc=sc)
    if logits.dim() == 3:  # a model without the positions= shortcut returned (R, W, V)
        logits = logits.flatten(0, 1)[d.at_window]
    if state.sc is not None:
        state.sc.view(-1, state.sc.size(-1))[d.at] = torch.softmax(logits, -1)
    if not d.everyone:
        told = torch.zeros_like(state.x[:, 0]).index_copy_(0, d.sub, told)
    return logits, told


def time_for_fraction(schedule, frac):
    """The t (B,) whose training mask rate 1 - alpha(t) is nearest the masked fraction frac (B,)."""
    mp = 1.0 - schedule.on(frac.device)[0][1:]  # (T,) increasing in t, already on the device
    return (mp[None, :] - frac.to(mp.dtype)[:, None]).abs().argmin(1) + 1


# ---- the options, one unit each
def position_scores(logp, cand, order, generator=None, cols=None):
    """order: (p(cand), ranking score in [0, 1], higher first), (N,) each. logp (N, V): float64
    filtered log-probs; cand (N,): the drawn tokens; cols (N,): their columns ('l2r' only)."""
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
        return conf, torch.exp(-entropy(logp))
    # random, with schedule counts and remask='none': MDLM's ancestral sampling, the count fixed
    return conf, uniform_draws(len(cand), generator=generator, device=logp.device)


def entropy(logp):
    """H (N,) in nats of each law logp (N, V), log-probs."""
    p = logp.exp()
    return -torch.where(p > 0, p * logp, torch.zeros_like(p)).sum(-1)


def stay_masked(opts, d, score, kept, n_keep, remdm=False, generator=None, h=None):
    """tokens_per_step, threshold, entropy_bound and remask: the positions [MASK] after the step
    (B, L), by score: the n_keep lowest (B,), or (n_keep None) Fast-dLLM's threshold or the bound
    on entropies h. 'refine' lets committed tokens compete on their kept score; ReMDM re-masks
    each w.p. sigma (at most n_keep of them)."""
    if opts.threshold and n_keep is None:  # every position above the threshold, at least each sample's best
        commit = d.is_masked & (score > opts.threshold)
        best = score.masked_fill(~d.is_masked, -1.0).argmax(1)
        commit[d.rows, best[d.rows]] = True
        return d.is_masked & ~commit
    if opts.entropy_bound and n_keep is None:
        return entropy_bound_stay(d.is_masked, score, h, opts.entropy_bound)
    if opts.remask == "refine":  # committed tokens compete on their kept score
        score = torch.where(d.committed, kept, score)
    elif remdm and opts.remask == "remdm":
        sigma_t = sigma(opts.remask_eta, d.committed.sum(1), n_keep)  # (B,)
        u = uniform_draws(*score.shape, generator=generator, device=score.device)
        u = u.masked_fill(~d.committed, 2.0)
        # each committed token w.p. sigma, at most n_keep (the smallest u: a random subset)
        forced = (u < sigma_t[:, None]) & (u.argsort(1).argsort(1) < n_keep[:, None])
        score = score.masked_fill(forced, -math.inf)
    stay = score.argsort(1).argsort(1) < n_keep[:, None]  # rank 0 = lowest score
    return torch.where(d.taking_part[:, None], stay, d.is_masked)  # sat out: unchanged


def entropy_bound_stay(is_masked, score, h, bound):
    """The EB-Sampler (Ben-Hamu et al. 2025, arXiv 2505.24857): rank each sample's [MASK]s by
    score, best first, and reveal the largest prefix U within the bound; h (B, L): entropies.
    Returns the [MASK]s that stay (B, L)."""
    # (B, L) [MASK]s first (the last line leaves the rest as they are)
    ranked = score.masked_fill(~is_masked, -math.inf).argsort(dim=1, descending=True, stable=True)
    h_ranked = h.gather(1, ranked)
    # EB's rule, sum_U H - max_U H <= gamma: it bounds the cost of drawing U independently (a
    # joint's entropy is at least its max); it never falls as U grows, and is 0 for U of one
    fits = h_ranked.cumsum(1) - h_ranked.cummax(1).values <= bound
    revealed_ranked = torch.arange(score.size(1), device=score.device) < fits.sum(1, keepdim=True)
    revealed = torch.zeros_like(revealed_ranked).scatter(1, ranked, revealed_ranked)
    return is_masked & ~revealed


def sigma(eta, committed, n_keep):
    """ReMDM's re-masking chance of a committed token (Wang et al. 2025, arXiv 2503.00307, eq. 5):
    min(eta, sigma_max) (B,) float64. A step t -> s may re-mask with sigma_t <= min(1,
    (1 - alpha_s) / alpha_t) and keep q(z_s | x) the forward marginal; with m committed and
    n_keep left masked that is min(1, n_keep / m). The 'max-capped' schedule (Sec. 4.1); its
    loop schedule lost (dev/LOG.md, "The measurements delete what lost")."""
    m, k = committed.double(), n_keep.double()
    smax = torch.where(m > 0, (k / m.clamp(min=1)).clamp(max=1.0), torch.zeros_like(m))  # min(1, (1-alpha_s)/alpha_t)
    return smax.clamp(max=eta)


def step_temperature(opts, is_masked, now, at):
    """temperature_end_share: the draws' temperature, a number, or (n, 1) at `at`: T (s + (1 - s) f)
    at masked share f, s = temperature_end_share (dev/LOG.md, "Reveal order and a falling
    temperature")."""
    temperature, end_share = opts.law.temperature, opts.temperature_end_share
    if end_share == 1.0 or temperature == 0:
        return temperature
    f = is_masked.sum(1).double() / now.sum(1).clamp(min=1)  # (B,)
    return (temperature * (end_share + (1.0 - end_share) * f))[at // now.size(1), None]  # in the logits' order


@dataclass
class Block:
    """One block of the canvas as a pass sees it: its positions (B, L), the window's columns."""
    index: int
    now: torch.Tensor  # (B, L) the block's positions
    lo: int  # the columns [lo, hi) the model sees (all, or a window of its context up to the block)
    hi: int


class Blocks:
    """semi_ar_length and tokens_per_step: the canvas's blocks, decoded left to right (a row's k-th
    generated position is in block k // semi_ar_length; one block without it), and each block's
    plan, the [MASK]s left after each of its steps; read on the host once: no sync a pass."""

    def __init__(self, gen_mask, schedule, opts):
        L = gen_mask.size(1)
        self.of = torch.where(gen_mask, (gen_mask.long().cumsum(1) - 1) // (opts.semi_ar_length or L), -1)  # (B, L)
        self.on_host = self.of.cpu()  # the call's one read of the layout
        self.last = self.on_host.max(1).values.tolist()  # per sample
        self.n = max(self.last) + 1
        opts.check_blocks(self.n)  # a pass a block at least
        self.sizes = [(self.on_host == b).sum(1) for b in range(self.n)]  # (B,) positions of each block
        if opts.adaptive or not self.n:  # each pass sets its own count, or no blank: no plan
            return
        # step mode's plans, host and device: the [MASK]s left after each step of a block (B, S)
        self.plans = []
        for n, steps in zip(self.sizes, split_steps(opts.steps, self.n)):
            S = min(steps, int(n.max()))  # no step without a token to reveal
            done = [(j + 1) / S for j in range(S)]  # the share of the S steps taken after step j
            if opts.tokens_per_step == "schedule":  # the share still masked: 1 - alpha(t) at the grid's next time
                masked = [1.0 - schedule.alpha[t].item() for t in time_grid(schedule.T, S)[1:]]
            elif opts.tokens_per_step == "linear":  # LLaDA
                masked = [1.0 - r for r in done]
            else:  # cosine: MaskGIT (Chang et al. 2022), few early, many late
                masked = [math.cos(0.5 * math.pi * r) for r in done]
            self.plans.append(reveal_plan(n, masked))
        self.plans_d = torch.cat(self.plans, 1).to(gen_mask.device).split([p.size(1) for p in self.plans], 1)

    def block(self, b, W):
        """Block b, seen through the window of the model's context W that ends with it: the columns
        [lo, hi) the model sees are all of them, or the W up to the block's last."""
        L = self.of.size(1)
        if L <= W:
            return Block(b, self.of == b, 0, L)
        cols = (self.on_host == b).any(0).nonzero().squeeze(1)
        first, last = cols.min().item(), cols.max().item() + 1
        lo = max(0, last - W)
        if first < lo:
            raise ValueError(f"a block spans {last - first} positions, more than the model's context of {W}")
        return Block(b, self.of == b, lo, lo + W)


def reveal_plan(n, fractions):
    """Positions still masked after each step (B, S) for blocks of n (B,): round(n * fractions[i]),
    moved so each step reveals a token (rounding leaves empty passes where cosine is flat)."""
    S = len(fractions)
    f = torch.tensor(fractions, dtype=torch.float64)
    base = n[:, None] - torch.round(n[:, None].double() * f[None]).long()  # revealed after step i, (B, S)
    i = torch.arange(1, S + 1)
    # r_i = max(base_i, r_{i-1} + 1), r_0 = 0, in closed form; then a token left for each later step
    r = i + torch.cummax(base - i, dim=1).values.clamp(min=0)
    cap = torch.where(n[:, None] >= S, n[:, None] - (S - i), n[:, None])  # short rows: no tokens to spare
    return n[:, None] - torch.minimum(r, cap)


def split_steps(steps, n_blocks):
    """The steps over n_blocks semi-AR blocks, as even as it goes (the first blocks one more)."""
    return [steps // max(n_blocks, 1) + (b < steps % max(n_blocks, 1)) for b in range(n_blocks)]


def put_at(base, at, values):
    """A copy of base, flat positions `at` (n,) set to values (n,): masked_scatter with no sync."""
    return base.flatten().scatter(0, at, values).view_as(base)


# ------------------------------------------------------------------------ the objective contract
class Objective:
    """What train.py, inference.py, evals/ and scripts/ ask of an objective; each of diffusion.py's
    MaskedDiffusion, bd3.py's BlockDiffusion, uniform.py's UniformDiffusion and ar.py's
    AutoRegressive implements it, and objectives.OBJECTIVES finds one by config.py's name. The entry
    scripts call these and never ask which objective they hold."""
    MODEL = {}  # the ModelArgs it fixes
    WINDOW = 0  # tokens a training window needs beyond block_size
    IGNORES = {}  # {config key it never reads: why}, refused given
    SAMPLER_DEFAULTS = {}  # {sampler key: its own default}, where the config's cannot apply
    CONTINUES_ONLY = False  # its samples only continue a prompt
    ANY_LENGTH = False  # its sampler writes past the model's context
    NOISE_START = False  # its reverse process starts from random tokens, not [MASK]
    EXACT = False  # its score is the exact NLL, not a bound
    BLOCKS = False  # it decodes bd3_block tokens at a time
    SEMI_AR = False  # its sampler can decode semi-autoregressive blocks (--semi_ar_length)
    LOSS_KEY = "loss_type"  # the config key that picks its training loss

    def check(self, cfg, opts, given=(), training=True):
        """Refuse values that cannot apply: cfg's trained and training keys, opts
        (SamplerOptions) its sampler's (given: the keys the user set; training=False: a sampler's
        config, whose training draws no one reads)."""

    def unread(self, cfg, opts):
        """The sampler keys opts's own switches leave unread (refused given)."""
        return ()

    def draws(self, x, cfg, schedule, tok, draw):
        """One micro-batch's randomness (a Drawn), eager, from the keyed Draw: what loss() reads."""
        raise NotImplementedError

    def loss(self, model, x, cfg, schedule, tok, drawn):
        """The training loss of windows x given their draws: pure (train.py may compile it)."""
        raise NotImplementedError

    def flops(self, model, cfg):
        """(Training FLOPs per window token, columns per pass): the MFU's numerator."""
        return model.flops_per_token(), cfg.block_size

    def eval_times(self, cfg, L):
        """Times drawn per window for the bound (0: the score is exact, no time)."""
        return 1

    def bound(self, model, x, cfg, schedule, tok, t, generator):
        """The score per window (B,) at times t (B, k), and evaluate's details (or None)."""
        raise NotImplementedError

    def ar_nll(self, model, windows, cfg, mask_id):
        """The mean NLL (B,) of windows[:, 1:] under the network's own AR mode, or None (none)."""
        return None

    def sample(self, model, x, gen_mask, cfg, opts, mask_id, generator=None, on_step=None):
        """Fill x's (B, L) gen_mask positions by opts (SamplerOptions), the network and its schedule
        being cfg's: (x, stats with nfe and nfe_per_sample)."""
        raise NotImplementedError

    def passes(self, cfg, opts, n_gen, n_prompt=0):
        """Network passes a sample over n_gen blanks (None: adaptive)."""
        raise NotImplementedError

    def decodes(self, cfg, opts, batch):
        """Whether its sampler runs model.compile_decode's KV-cached steps."""
        return False

    def describe(self, cfg, opts, brief=False):
        """The sampler settings in force, in one line (brief: a video's title, its defaults left
        out: SamplerOptions.describe)."""
        raise NotImplementedError


LAW_KEYS = tuple(f.name for f in fields(Law))  # the draw's law: every sampler reads it


def sampler_keys_but(*read):
    """The sampler's keys (SamplerOptions.keys()) but `read`: those a sampler that reads only
    `read` leaves unread, whatever the next option is."""
    return tuple(k for k in SamplerOptions.keys() if k not in read)


# ------------------------------------------------------------------------ the objective mdlm
def check_band(cfg):
    """Refuses mdlm's and bd3's training draws (mask_min, mask_max, mask_draws) that cannot work."""
    if cfg.mask_draws < 1:
        raise UserError(f"mask_draws={cfg.mask_draws}: give the masks drawn of each window a step, 1 or more (e.g. 2)")
    if not 0 <= cfg.mask_min < cfg.mask_max <= 1:
        raise UserError(f"need 0 <= mask_min < mask_max <= 1, got {cfg.mask_min}, {cfg.mask_max}")
    try:
        band_times(Schedule(cfg.diffusion_steps, cfg.schedule), cfg.mask_min, cfg.mask_max)
    except ValueError as empty:  # its message names the band and how to widen it
        raise UserError(str(empty)) from None


def causal_logits(model, x, mask_id):
    """The AR mode --dual_ar trains: next-token logits of a causal pass over clean x (B, L)."""
    causal = torch.ones(x.size(1), x.size(1), dtype=torch.bool, device=x.device).tril()
    return no_mask_logit(model(x, attn_mask=causal), mask_id)


def dual_ar_loss(model, x0, mask_id):
    """The dual objective's AR loss: causal_logits' mean CE (Dual Language Models, Samuel &
    Charpentier 2025, arXiv 2512.14549)."""
    logits = causal_logits(model, x0[:, :-1], mask_id)
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), x0[:, 1:].reshape(-1))


@torch.no_grad()
def causal_nll(model, w, mask_id):
    """NLL (B, L) float64 of w[:, 1:] by the AR mode reading w (B, L + 1): --dual_sample's law."""
    logp = torch.log_softmax(causal_logits(model, w[:, :-1], mask_id).double(), -1)
    return -logp.gather(-1, w[:, 1:, None]).squeeze(-1)


class MaskedDiffusion(Objective):
    """--objective=mdlm: the NELBO above, sampled by denoise() (or, with --dual_sample, the
    network's AR mode, which --dual_ar trains beside it)."""
    MODEL = dict(clean_causal=False)
    IGNORES = dict.fromkeys(("bd3_block", "bd3_loss", "bd3_speculate", "bd3_ar"),
                            "block diffusion's keys: use --objective=bd3")
    SEMI_AR = True

    def check(self, cfg, opts, given=(), training=True):
        if cfg.dual_ar < 0 or (cfg.dual_ar and cfg.time_cond != "none"):
            raise UserError(f"dual_ar={cfg.dual_ar} with time_cond={cfg.time_cond}: the dual objective's causal pass "
                            f"reads clean text with no time; give dual_ar >= 0 (e.g. 1) with --time_cond=none, or 0 "
                            f"(off)")
        if opts.dual_sample and not cfg.dual_ar:
            raise UserError("--dual_sample draws from the AR mode that --dual_ar trains, and this network was trained "
                            "without it (dual_ar=0): drop --dual_sample, or train with --dual_ar=0.25")
        clash = sorted(set(given) & set(self.unread(cfg, opts)))  # unread keys given on the command line
        if clash:
            raise UserError(f"--dual_sample draws left to right from the network's AR mode, one token a pass: "
                            f"--{clash[0]} sets the diffusion sampler; drop one of the two")
        if training:  # the training draws' band and its ramp (a sampler reads neither)
            check_band(cfg)
        if training and cfg.mask_ramp:
            if not 0 < cfg.mask_ramp <= 1 or not cfg.mask_min < cfg.mask_ramp_from <= cfg.mask_max:
                raise UserError(f"mask_ramp={cfg.mask_ramp}, mask_ramp_from={cfg.mask_ramp_from}: need 0 < mask_ramp "
                                f"<= 1 (a fraction of max_iters) and mask_min={cfg.mask_min} < mask_ramp_from <= "
                                f"mask_max={cfg.mask_max}")
            check_band(replace(cfg, mask_max=cfg.mask_ramp_from))  # the first step's band must hold a time
        on_grid = opts.tokens_per_step == "schedule" and not opts.adaptive and not opts.dual_sample
        if on_grid and opts.steps > cfg.diffusion_steps:  # the steps are times of the chain
            raise UserError(f"steps={opts.steps} exceeds diffusion_steps={cfg.diffusion_steps}: use "
                            f"--steps={cfg.diffusion_steps} or fewer, or --tokens_per_step=linear (its step count is "
                            f"free)")

    def unread(self, cfg, opts):
        """--dual_sample's: it reads the law and the replay's pace, no diffusion sampler key."""
        return sampler_keys_but(*LAW_KEYS, "replay_steps", "dual_sample") if opts.dual_sample else ()

    def draws(self, x, cfg, schedule, tok, draw):
        """Per mask_draws copy a t stratified over BD3-LM's clipped band (less noisy, biased: eval
        scores the full bound), masks, self-conditioning rows."""
        schedule.on(x.device)  # tables on x's device now: a CUDA graph of loss() would own a first copy
        n = len(x) * cfg.mask_draws  # the copies' sequences: copy j of window i is row j * len(x) + i
        draw = repeat_draws(draw, cfg.mask_draws, len(x))
        top = cfg.mask_max
        if cfg.mask_ramp > 0:  # the curriculum: easy, less-masked windows first (Quokka 2025)
            top = cfg.mask_ramp_from + (cfg.mask_max - cfg.mask_ramp_from) * min(1.0, draw.progress / cfg.mask_ramp)
        band = band_times(schedule, cfg.mask_min, top)  # on the host: band[0] + i
        t = stratified_times(n, len(band), None, x.device, draw.offset, draw.total, draw.u) - 1 + int(band[0])
        share = SELF_COND_SHARE if cfg.self_cond else 0.0
        return masking_draws((n, x.size(1)), t, share, draw.generator, x.device)

    def loss(self, model, x, cfg, schedule, tok, drawn):
        """diffusion_loss of each mask_draws copy at its own mask and t; the dual objective reads
        each window once."""
        copies = x.repeat(cfg.mask_draws, 1)
        opts = LossOptions(cfg.loss_type, SELF_COND_SHARE if cfg.self_cond else 0.0)
        loss = diffusion_loss(model, copies, schedule, tok.mask_id, opts, t=drawn.t, drawn=drawn)[0]
        if cfg.dual_ar:
            loss = loss + cfg.dual_ar * dual_ar_loss(model, x, tok.mask_id)
        return loss

    def flops(self, model, cfg):
        """Self-conditioning adds a forward (2 per weight) for half the rows, each of mask_draws is
        a pass, the dual objective one over L - 1."""
        L = cfg.block_size
        diffusion = cfg.mask_draws * (7 / 6 if cfg.self_cond else 1)
        return model.flops_per_token() * (diffusion + ((L - 1) / L if cfg.dual_ar else 0)), L

    def bound(self, model, x, cfg, schedule, tok, t, generator):
        """The NELBO per window (B,) at times t (B, 1) (scored: the masked positions)."""
        opts = LossOptions(self_cond=1.0 if cfg.self_cond else 0.0)
        _, nelbo, aux = diffusion_loss(model, x, schedule, tok.mask_id, opts, generator, t=t[:, 0])
        return nelbo, dict(scored=aux["masked"], pred=aux["logits"].argmax(-1), logits=aux["logits"],
                           t_tok=t.expand_as(x))

    def ar_nll(self, model, windows, cfg, mask_id):
        """Under the AR mode (--dual_sample's law at T = 1), or None without --dual_ar."""
        return causal_nll(model, windows, mask_id).mean(1) if cfg.dual_ar else None

    def sample(self, model, x, gen_mask, cfg, opts, mask_id, generator=None, on_step=None):
        """denoise(), or --dual_sample's AR mode."""
        if opts.dual_sample:
            return self.sample_dual(model, x, gen_mask, opts, mask_id, generator, on_step)
        schedule = Schedule(cfg.diffusion_steps, cfg.schedule)
        return denoise(model, x, gen_mask, schedule, mask_id, opts, generator, on_step)

    def sample_dual(self, model, x, gen_mask, opts, mask_id, generator=None, on_step=None):
        """--dual_sample: continue the prompt of x (B, L) over its blank suffix from the AR mode,
        KV-cached, one token a pass: exact samples of causal_nll's joint. Returns (x, stats)."""
        (B, L), dev = x.shape, x.device
        P = int(gen_mask[0].long().argmax()) if gen_mask.any() else L
        if P == 0 or not torch.equal(gen_mask.bool(), (torch.arange(L, device=dev) >= P).expand(B, L)):
            raise UserError("--dual_sample continues a prompt left to right: give a prompt, and no blanks before "
                            "given text (infill needs the diffusion sampler: drop --dual_sample)")
        if L > model.args.block_size:
            raise UserError(f"--dual_sample reads the whole canvas in one context: prompt + gen_len = {L} tokens "
                            f"exceeds block_size {model.args.block_size}; give a shorter --gen_len")
        return sample_causal(model, x, P, opts, generator, mask_id, on_step)

    def passes(self, cfg, opts, n_gen, n_prompt=0):
        """One a token under --dual_sample, else denoise()'s per sample (None: adaptive)."""
        return n_gen if opts.dual_sample else opts.passes(n_gen)

    def decodes(self, cfg, opts, batch):
        """The AR mode runs model.compile_decode's cached step."""
        return opts.dual_sample

    def describe(self, cfg, opts, brief=False):
        if opts.dual_sample and brief:
            return "its AR mode (--dual_sample)"
        if opts.dual_sample:
            return "its AR mode (the dual objective's causal pass) + KV cache, one token a pass"
        return opts.describe(brief)
