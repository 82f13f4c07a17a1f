"""Masked (absorbing-state) diffusion, top to bottom: the schedule alpha(t), the time draws, the
forward corruption q(x_t | x_0), the loss and its bound, then the reverse process that samples.
bd3.py, uniform.py and ar.py build on it; learning.md teaches it in the same order.

Discrete time t in 0..T; alpha(t), a token's chance to be still visible, falls from 1 to 0. The
negative ELBO, >= -log p(x0) (Austin et al. 2021; MDLM, Sahoo et al. 2024, eq. 10 in discrete time):

    NELBO = sum_t E_q(xt|x0) [ w(t) * sum_{i masked in xt} -log p(x0_i | xt) ],
    w(t)  = (alpha(t-1) - alpha(t)) / (1 - alpha(t)),

estimated with t drawn from 1..T, the term times T. Per token: over L, not over the masked count.

    python -c "import diffusion; print(diffusion.Schedule(100).alpha[:3])"
    python train.py cpu                              # trains this objective
    python inference.py cpu --prompt "JULIET:"       # samples it
"""
import math
import time
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from config import CHOICES, UNSCORED_ORDERS
from utils.errors import UserError


# ------------------------------------------------------------------------ the schedule alpha(t)
class Schedule:
    """alpha(t), a token's chance to be still clean (1 at t = 0, 0 at T), and the ELBO weight
    w(t) = (alpha(t-1) - alpha(t)) / (1 - alpha(t)), tabulated for t = 0..T in float64."""

    def __init__(self, T, kind="cosine"):
        t = torch.arange(T + 1, dtype=torch.float64)
        if kind == "cosine":
            alpha = torch.cos(0.5 * math.pi * t / T)
        elif kind == "linear":
            alpha = 1.0 - t / T
        else:
            raise ValueError(f"unknown schedule {kind!r}")
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
def draw_device(device):
    """Where draws run: on the device if it has float64 (CUDA), else on the CPU (MPS has none)."""
    device = torch.device(device)
    return torch.device("cpu") if device.type in ("cpu", "mps") else device


def on_device(generator, device):
    """The generator for draws on `device`: `generator` on the CPU, else one it seeds (no sync)."""
    if generator is None or torch.device(device).type in ("cpu", "meta"):
        return generator
    return torch.Generator(device).manual_seed(int(torch.randint(2 ** 62, (), generator=generator)))


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


def band_top(cfg, progress):
    """The band's top at `progress` (0..1) of training: mask_max, or rising from mask_ramp_from over
    the first mask_ramp of the run: easy, less-masked windows first (Quokka 2025)."""
    if cfg.mask_ramp <= 0:
        return cfg.mask_max
    return cfg.mask_ramp_from + (cfg.mask_max - cfg.mask_ramp_from) * min(1.0, progress / cfg.mask_ramp)


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
    """A pass's draws on the device, made ahead so that a compiled, CUDA-graphed loss_of is pure."""
    t: torch.Tensor             # the times (B,), or bd3's one per block (B, L // L')
    uniform: torch.Tensor       # (B, L) float32 U[0, 1): a token under the rate is masked (uniform: noised)
    rows: torch.Tensor = None   # (R,) the sequences self-conditioning's first pass feeds
    noise: torch.Tensor = None  # uniform noise's (B, L) random tokens, indices into the real vocabulary
    # host numbers, which a compiled pass cannot read
    n_times: int = 0            # bd3: the times its band holds, k of its weight k * w(t_b)
    prior: float = 0.0          # uniform noise: its prior term per token (uniform.prior_kl)


def masking_draws(shape, t, share, generator=None, device="cpu", n_times=0):
    """Drawn for masked diffusion: t, the masks' uniforms, self-conditioning's rows, in order."""
    dev = draw_device(device)
    uniform = torch.rand(shape, generator=on_device(generator, dev), device=dev).to(device)
    return Drawn(t, uniform, self_condition_rows(shape[0], share, generator, device), n_times=n_times)


def self_condition_rows(n, share, generator=None, device="cpu"):
    """round(share * n) random rows of n (R,) for self-conditioning; None if share >= 1 or 0."""
    if not 0 < share < 1:
        return None
    dev = draw_device(device)
    return torch.randperm(n, generator=on_device(generator, dev), device=dev)[:round(share * n)].to(device)


# ------------------------------------------------------------------------ q(x_t | x_0)
def corrupt(x0, t, schedule, mask_id, generator=None, uniform=None):
    """q(xt | x0): each token becomes [MASK] w.p. 1 - alpha(t). x0 (B, L), t (B,); uniform (B, L):
    the deciding U[0, 1) draws (masking_draws), else from generator. Returns (xt, mask)."""
    uniform = masking_draws(x0.shape, t, 0.0, generator, x0.device).uniform if uniform is None else uniform
    p = schedule.mask_prob(t).to(torch.float32)[:, None]  # (B, 1)
    masked = uniform < p
    return torch.where(masked, torch.full_like(x0, mask_id), x0), masked


# ------------------------------------------------------------------------ the loss and the bound
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


def self_condition_input(logits_of, masked, share, generator=None, rows=None):
    """Self-conditioning's input (B, L, V) (Chen et al. 2022): a no-grad first pass's x0 prediction
    at the masked positions of a random `share` of sequences, zeros elsewhere (as a sampler's first
    step). logits_of(rows): (R, L, V), None = all. A function of x_t: the NELBO stays a bound."""
    rows = self_condition_rows(masked.size(0), share, generator, masked.device) if rows is None else rows
    with torch.no_grad():
        if rows is None:  # share >= 1: every sequence
            return torch.softmax(logits_of(None), -1) * masked[..., None]
        probs = torch.softmax(logits_of(rows), -1) * masked[rows][..., None]
        return torch.zeros(*masked.shape, probs.size(-1), device=masked.device).index_copy_(0, rows, probs)


def self_condition(model, xt, t, masked, mask_id, share, generator=None, rows=None):
    """Self-conditioning's input (B, L, V): self_condition_input over xt's own pass."""
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


# ------------------------------------------------------------------------ the reverse process
def time_grid(T, steps):
    """Integer times T = t_0 > t_1 > ... > t_steps = 0 for `steps` reverse steps."""
    grid = torch.round(torch.linspace(T, 0, steps + 1, dtype=torch.float64)).long()
    assert len(torch.unique(grid)) == steps + 1, "steps must be <= T"
    return grid.tolist()


def filter_logits(logits, temperature=1.0, top_k=0, top_p=1.0):
    """Temperature, top-k, top-p on float64 logits (..., V) -> log-probs, -inf outside top-k/p.
    temperature: a number (0: unscaled, for an argmax) or a positive (..., 1) tensor."""
    logits = logits.double()
    if torch.is_tensor(temperature) or temperature > 0:
        logits = logits / temperature
    if top_k and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        p = sorted_logits.softmax(-1)
        drop = p.cumsum(-1) - p >= top_p  # keep the smallest prefix whose mass reaches top_p
        drop[..., 0] = False
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits.log_softmax(-1)


def sample_tokens(logp, temperature, generator=None):
    """One token per position from float64 log-probs (..., V) (a CPU generator); argmax at T = 0.
    float32 categorical sampling quietly lowers the temperature (Zheng et al. 2024)."""
    return logp.argmax(-1) if temperature == 0 or logp.numel() == 0 else draw(logp.exp(), generator)


def drawn_law(logp, greedy):
    """The law sample_tokens drew from, as log-probs (..., V): logp, or at an argmax (T = 0, a
    greedy last step) a point mass there. What Step.law reports, so the trace page shows it."""
    if not greedy:
        return logp
    return torch.full_like(logp, -math.inf).scatter(-1, logp.argmax(-1, keepdim=True), 0.0)


DEGENERATE_ROW = ("no law to draw from: a row of probabilities has no mass or a NaN/inf entry, as the model's logits "
                  "were not finite (a damaged or diverged model) or a sampling setting validation refuses made them so")


def draw(p, generator):
    """One index per row of unnormalised p (..., V) by inverse CDF: exact, and faster than
    torch.multinomial on a CPU (dev/LOG.md, "Two CPU decode costs removed for every sampler"). A row
    with no mass or a NaN/inf raises rather than return its last index ([MASK] for chars)."""
    return draw_at(p, uniforms(p.shape[:-1], generator, p.device))


def uniforms(shape, generator, device):
    """U(0, 1) float64 draws (shape) on `device`'s draw device, in the order draw() takes them."""
    dev = draw_device(device)
    return torch.rand(shape, generator=on_device(generator, dev), device=dev, dtype=torch.float64)


def draw_at(p, u):
    """draw() with its uniforms u (...) float64 given, on the draw device: no generator, so a CUDA
    graph replays it (the uniforms are drawn before the replay, into a buffer it reads)."""
    c = p.to(u.device, torch.float64).cumsum(-1)  # (..., V) the cumulative mass, on the draw device
    total = c[..., -1]  # a NaN or inf carries into the total, failing the check; _assert_async: no sync
    torch._assert_async(((total > 0) & (total < math.inf)).all(), DEGENERATE_ROW)
    # the first index whose mass passes u * total; clamped: u * total rounded up could pass the last
    index = torch.searchsorted(c, u[..., None] * c[..., -1:], right=True)[..., 0].clamp_(max=c.size(-1) - 1)
    return index.to(p.device)


def uniform_draws(*shape, generator, device):
    """U(0, 1) float64 draws on `device`: the CPU's from `generator`, others seeded by it."""
    dev = draw_device(device)
    return torch.rand(*shape, generator=on_device(generator, dev), device=dev, dtype=torch.float64).to(device)


def put_at(base, at, values):
    """A copy of base, flat positions `at` (n,) set to values (n,): masked_scatter with no sync."""
    return base.flatten().scatter(0, at, values).view_as(base)


@dataclass
class Step:
    """A reverse step as reported to on_step. Tensors: (B, L) over the canvas unless noted."""
    step: int                 # batched forward passes so far
    nfe: torch.Tensor         # (B,) forward passes each sample has taken part in
    time: torch.Tensor        # (B,) the time the model was told (0 for samples that skip the step)
    x: torch.Tensor           # the canvas after the step
    prev: torch.Tensor        # the canvas before it
    gen_mask: torch.Tensor    # generated positions (the rest is given text, never changed)
    revealed: torch.Tensor    # positions that took a new token this step
    remasked: torch.Tensor    # positions sent back to [MASK]
    conf: torch.Tensor        # float64 probability of each committed token when drawn (0 where none)
    finished: list            # (B,) bool: the sample takes part in no further step
    block: int = 0            # the semi-AR or bd3 block being decoded, of n_blocks
    n_blocks: int = 1
    law: tuple = None         # (at (n,) flat positions of the canvas, logp (n, V)): what the step drew from there


@dataclass(frozen=True)
class SamplerOptions:
    """The reverse sampler's switches: config.py's sampling keys (documented there)."""
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
    replay_steps: int = 4              # decoders: tokens (bd3 at batch 1: rounds) a call (model.decode_steps)

    @classmethod
    def from_config(cls, cfg):
        return cls(steps=cfg.steps, temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p, order=cfg.order,
                   tokens_per_step=cfg.tokens_per_step, remask=cfg.remask, remask_eta=cfg.remask_eta,
                   threshold=cfg.threshold, semi_ar_length=cfg.semi_ar_length,
                   temperature_end_share=cfg.temperature_end_share, replay_steps=cfg.replay_steps)

    def __post_init__(self):  # domains only asserted: the configurator words user errors
        assert self.order in CHOICES["order"] and self.remask in CHOICES["remask"], self
        assert self.tokens_per_step in CHOICES["tokens_per_step"], self
        assert self.temperature >= 0 and 0 <= self.remask_eta <= 1 and 0 <= self.threshold <= 1 and self.steps >= 1
        assert self.semi_ar_length >= 0 and self.temperature_end_share >= 0, self  # f > 0 at a draw: T stays > 0
        assert self.replay_steps >= 1, self
        assert not (self.threshold > 0 and (self.order in UNSCORED_ORDERS or self.remask == "remdm")), \
            "threshold ranks by the model's score, never re-masks"


# the switches of revealing [MASK]s, which ar and uniform refuse
REVEAL_KEYS = ("order", "tokens_per_step", "remask", "remask_eta", "threshold", "semi_ar_length",
               "temperature_end_share")


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


def sigma(eta, committed, n_keep):
    """ReMDM's re-masking chance of a committed token (Wang et al. 2025, arXiv 2503.00307, eq. 5):
    min(eta, sigma_max) (B,) float64. A step t -> s may re-mask with sigma_t <= min(1,
    (1 - alpha_s) / alpha_t) and keep q(z_s | x) the forward marginal; with m committed and
    n_keep left masked that is min(1, n_keep / m). The 'max-capped' schedule (Sec. 4.1); its
    loop schedule lost (dev/LOG.md, "The measurements delete what lost")."""
    m, k = committed.double(), n_keep.double()
    smax = torch.where(m > 0, (k / m.clamp(min=1)).clamp(max=1.0), torch.zeros_like(m))  # min(1, (1-alpha_s)/alpha_t)
    return smax.clamp(max=eta)


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


def _plan(n, steps, schedule, opts):
    """Step mode's plan for a block of n (B,) positions: the [MASK]s left after each step (B, S)."""
    S = min(steps, int(n.max()))  # no step without a token to reveal
    done = [(j + 1) / S for j in range(S)]  # the share of the S steps taken after step j
    if opts.tokens_per_step == "schedule":  # the share still masked: 1 - alpha(t) at the grid's next time
        masked = [1.0 - schedule.alpha[t].item() for t in time_grid(schedule.T, S)[1:]]
    elif opts.tokens_per_step == "linear":  # LLaDA
        masked = [1.0 - r for r in done]
    else:  # cosine: MaskGIT (Chang et al. 2022), few early, many late
        masked = [math.cos(0.5 * math.pi * r) for r in done]
    return reveal_plan(n, masked)


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


def _where(mask, n):
    """The flat indices of mask's n True entries, as nonzero() lists them, with no GPU sync."""
    flat = mask.flatten()
    return flat.nonzero().squeeze(1) if flat.is_cpu else flat.to(torch.uint8).argsort(descending=True, stable=True)[:n]


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
        greedy = greedy or self.opts.temperature == 0
        cand = sample_tokens(logp, 0.0 if greedy else self.opts.temperature, self.generator)  # (n,)
        self.law = (decided.at, drawn_law(logp, greedy))  # the Step's: the trace page's candidates
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
        _, new_score = position_scores(logp, cand, self.opts.order, self.generator, cols=cols)  # (n,)
        new_conf = self.law[1].gather(-1, cand[:, None]).squeeze(-1).exp()  # p(cand) under the law it was drawn from
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
    """The reverse process over the canvas x (B, L) by `opts` (SamplerOptions): gen_mask (B, L)
    starts as [MASK], the rest is given text, never changed. Step mode: after step i the
    lowest-scored round(n * f(i)) of a block's n stay masked (f: tokens_per_step); 'refine' and
    ReMDM revisit committed tokens; on_step(Step) after each. Returns (x, stats: nfe,
    nfe_per_sample, seconds_per_sample, seconds, blocks)."""
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


def denoise_passes(opts, n_gen):
    """denoise()'s passes per sample over n_gen positions (None: threshold, adaptive)."""
    if opts.threshold:
        return None
    blen = opts.semi_ar_length or n_gen
    sizes = [min(blen, n_gen - s) for s in range(0, n_gen, blen)]
    return sum(min(p, n) for p, n in zip(split_steps(opts.steps, len(sizes)), sizes))  # at most one a position


def describe_denoise(opts):
    """denoise() with `opts` in one line, as inference.py and eval.py print it."""
    if opts.threshold:
        how = f"threshold {opts.threshold:g} (NFE adaptive, committed tokens final), order {opts.order}"
    else:
        remask = f"remdm cap eta={opts.remask_eta:g}" if opts.remask == "remdm" else opts.remask
        how = f"{opts.steps} steps, {opts.tokens_per_step} counts, order {opts.order}, remask {remask}"
    if opts.temperature_end_share != 1.0:
        how += f", temperature falling to {opts.temperature_end_share:g}x"
    return how + (f", blocks of {opts.semi_ar_length}" if opts.semi_ar_length else "")


# ------------------------------------------------------------------------ left to right
def ordered_step(prev, seq, P, L, n, mask_id, p, conf):
    """A pass of ordered decoding (the AR's token, a bd3 round) as a Step over L tokens: seq (B, S)
    so far ([MASK] after), prev before it, n passes, p (B, k, V) the laws its k new tokens were
    drawn from; conf (B, L), each token's probability when drawn, is updated with theirs."""
    (B, S), dev = seq.shape, seq.device
    x = F.pad(seq, (0, L - S), value=mask_id)
    before = F.pad(prev, (0, L - prev.size(1)), value=mask_id)
    gen = (torch.arange(L, device=dev) >= P).expand(B, L)
    cols = torch.arange(prev.size(1), S, device=dev)  # the pass's new tokens
    at = (torch.arange(B, device=dev)[:, None] * L + cols).flatten()
    law = p[:, :S - prev.size(1)]  # (B, k, V)
    conf[:, cols] = law.gather(-1, seq[:, cols, None]).squeeze(-1).double()
    return Step(step=n, nfe=torch.full((B,), n), time=torch.zeros(B, dtype=torch.long), x=x, prev=before,
                gen_mask=gen, revealed=x != before, remasked=torch.zeros_like(gen), conf=conf.clone(),
                finished=[S >= L] * B, law=(at, law.flatten(0, 1).log()))


def prompt_length(x, gen_mask):
    """P, the given tokens of a continuation x (B, L): each row's first P, then blanks (none: L)."""
    P = int(gen_mask[0].long().argmax()) if gen_mask[0].any() else x.size(1)
    assert (gen_mask == gen_mask[:1]).all() and gen_mask[0, P:].all(), "one prompt length in every row, then blanks"
    return P


def sample_causal(model, x, P, opts, generator=None, mask_id=None, on_step=None):
    """Continue x (B, L) after its P given tokens with a causal pass a token (model.generate, a KV
    cache), a Step a token: exact samples of the network's left-to-right law. (x filled, stats)."""
    B, L = x.shape
    conf = torch.zeros(B, L, dtype=torch.float64, device=x.device)

    def token_done(seq, filtered):  # a Step of the canvas so far
        # filtered: log-probs at the temperature already (model.generate drew from them)
        p = drawn_law(filtered, opts.temperature == 0).exp()
        on_step(ordered_step(seq[:, :-1], seq, P, L, seq.size(1) - P, mask_id, p[:, None], conf))

    counts = {}  # every network call: a token's, and the prompt's pass before its last token
    out = model.generate(x[:, :P], L - P, opts, generator, mask_id, token_done if on_step else None, counts)
    return out, dict(nfe=counts["calls"], nfe_per_sample=[counts["calls"]] * B)


# ------------------------------------------------------------------------ the objective mdlm
# What train.py, inference.py and the scripts ask of an objective (configurator.OBJECTIVES): each of
# diffusion.py, bd3.py, uniform.py and ar.py states every name below.
MODEL = dict(clean_causal=False)  # the ModelArgs it fixes
WINDOW = 0  # tokens a training window needs beyond block_size
IGNORES = dict.fromkeys(("bd3_block", "bd3_loss", "bd3_speculate", "bd3_ar"),
                        "block diffusion's keys: use --objective=bd3")  # {key it never reads: why}, refused given
CONTINUES_ONLY = False  # its samples only continue a prompt
ANY_LENGTH = False  # its sampler writes past the model's context
NOISE_START = False  # its reverse process starts from random tokens, not [MASK]
EXACT = False  # its score is the exact NLL, not a bound
STEP_CHAIN = True  # its sampler walks the schedule's time grid (eval.py scores that chain)
BLOCKS = False  # it decodes bd3_block tokens at a time
SEMI_AR = True  # its sampler can decode semi-autoregressive blocks (--semi_ar_length)
LOSS_KEY = "loss_type"  # the config key that picks its training loss


def check(cfg, given=()):
    """Refuse values that cannot apply (given: the keys the user set)."""
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


def unread(cfg):
    """The sampler keys cfg's switches leave unread (refused given): --dual_sample's."""
    return ("steps", *REVEAL_KEYS) if cfg.dual_sample else ()


def options(cfg):
    """The loss's switches: self-conditioning feeds half the rows their first pass's prediction."""
    return LossOptions(cfg.loss_type, 0.5 if cfg.self_cond else 0.0)


def draws(x, cfg, schedule, tok, draw):
    """One micro-batch's draws (Drawn), eager, keyed: per mask_draws copy a t stratified over
    BD3-LM's clipped band (less noisy, biased: eval scores the full bound), masks, self-conditioning
    rows."""
    schedule.on(x.device)  # tables on x's device now: a CUDA graph of loss_of would own a first copy
    n = len(x) * cfg.mask_draws  # the copies' sequences
    draw = repeat_draws(draw, cfg.mask_draws, len(x))
    band = band_times(schedule, cfg.mask_min, band_top(cfg, draw.progress))  # on the host: band[0] + i
    t = stratified_times(n, len(band), None, x.device, draw.offset, draw.total, draw.u) - 1 + int(band[0])
    return masking_draws((n, x.size(1)), t, options(cfg).self_cond, draw.generator, x.device)


def loss_of(model, x, cfg, schedule, tok, drawn):
    """The loss given its draws, pure (train.py compiles it): each mask_draws copy reads its own
    mask and t; the dual objective reads each window once."""
    copies = x.repeat(cfg.mask_draws, 1)
    loss = diffusion_loss(model, copies, schedule, tok.mask_id, options(cfg), t=drawn.t, drawn=drawn)[0]
    return loss + cfg.dual_ar * dual_ar_loss(model, x, tok.mask_id) if cfg.dual_ar else loss


def eval_times(cfg, L):
    """Times per window for the bound (0: an exact score)."""
    return 1


def bound(model, x, cfg, schedule, tok, t, generator):
    """The NELBO per window (B,) at times t (B, 1), and evaluate's details (scored: the masked)."""
    opts = LossOptions(self_cond=1.0 if cfg.self_cond else 0.0)
    _, nelbo, aux = diffusion_loss(model, x, schedule, tok.mask_id, opts, generator, t=t[:, 0])
    return nelbo, dict(scored=aux["masked"], pred=aux["logits"].argmax(-1), logits=aux["logits"], t_tok=t.expand_as(x))


def ar_nll(model, windows, cfg, mask_id):
    """Mean NLL (B,) of windows[:, 1:] under the AR mode (--dual_sample's law at T = 1), or None."""
    return causal_nll(model, windows, mask_id).mean(1) if cfg.dual_ar else None


def flops(model, cfg):
    """(Training FLOPs per window token, columns per pass): self-conditioning adds a forward (2
    per weight) for half the rows, each of mask_draws is a pass, the dual objective one over
    L - 1."""
    L = cfg.block_size
    diffusion = cfg.mask_draws * (7 / 6 if cfg.self_cond else 1)
    return model.flops_per_token() * (diffusion + ((L - 1) / L if cfg.dual_ar else 0)), L


def sample(model, x, gen_mask, cfg, schedule, mask_id, generator=None, on_step=None):
    """Fill x's (B, L) gen_mask positions by denoise(), or --dual_sample's AR mode: (x, stats)."""
    if cfg.dual_sample:
        return sample_dual(model, x, gen_mask, cfg, mask_id, generator, on_step)
    return denoise(model, x, gen_mask, schedule, mask_id, SamplerOptions.from_config(cfg), generator, on_step)


@torch.no_grad()
def sample_dual(model, x, gen_mask, cfg, mask_id, generator=None, on_step=None):
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
    return sample_causal(model, x, P, cfg, generator, mask_id, on_step)


def passes(cfg, n_gen, n_prompt=0):
    """Passes a sample: one a token under --dual_sample, else denoise()'s (None: adaptive)."""
    if cfg.dual_sample:
        return n_gen
    return denoise_passes(SamplerOptions.from_config(cfg), n_gen)


def decodes(cfg, batch):
    """Whether its sampler runs model.compile_decode's cached step: the AR mode does."""
    return cfg.dual_sample


def describe(cfg):
    """The sampler settings in force, in one line."""
    if cfg.dual_sample:
        return "its AR mode (the dual objective's causal pass) + KV cache, one token a pass"
    return describe_denoise(SamplerOptions.from_config(cfg))
