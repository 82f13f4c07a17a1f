"""What the objectives share, below all of them: the noise schedule, time draws and grids, the training band, the
training loss's switches, logits filtering, float64 categorical draws, reveal plans, and the record each sampler fills
once per reverse step (Step). What one objective alone uses lives in its own file (speculative sampling's
keep-or-redraw rule in bd3.py). It imports only the ground floors (config.py, utils/): check_band raises the user's
error itself.

    python -c "from common import Schedule, time_grid; s = Schedule(100); print(s.alpha[:3], time_grid(100, 8))"
"""
import math
from dataclasses import dataclass, replace

import torch

from config import CHOICES
from utils.errors import UserError

LN2 = math.log(2)
SCHEDULES = CHOICES["schedule"]  # Schedule's kinds


# ---------------------------------------------------------------------------- the noise schedule
class Schedule:
    """alpha(t), a token's probability of being still clean (alpha(0) = 1, alpha(T) = 0; mask probability 1 - alpha(t)),
    and the ELBO weight w(t) = (alpha(t-1) - alpha(t)) / (1 - alpha(t)), tabulated for t = 0..T (float64)."""

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
        """(alpha, weight) on `device`, copied there once: a training step indexes them with no host-to-device copy
        (float32 on MPS, which has no float64)."""
        device = torch.device(device)
        if device not in self._on:
            dtype = torch.float32 if device.type == "mps" else torch.float64
            self._on[device] = (self.alpha.to(device, dtype), self.weight.to(device, dtype))
        return self._on[device]

    def mask_prob(self, t):
        return 1.0 - self.on(t.device)[0][t]


# ---------------------------------------------------------------------------- time draws (training and evaluation)
def stratum_time(i, u, total, T):
    """The time in 1..T of stratum i (+ offset u in [0, 1)) of `total` equal slices of [0, 1)."""
    return (torch.floor((i + u) / total * T).long() + 1).clamp_(1, T)


def stratified_times(n, T, generator=None, device="cpu", offset=0, total=None, u=None):
    """n times in 1..T, one per stratum of [0, 1): t_i = floor((i + u) / total * T) + 1 with a shared u ~ U[0,1)
    (antithetic / low-discrepancy t, MDLM: a lower-variance estimate of the bound than independent draws).
    `offset`/`total` place these n draws inside a larger (e.g. multi-rank) batch so the strata cover the global batch;
    pass the same u on every rank."""
    total, device = total or n, torch.device(device)
    if u is None:
        u = torch.rand((), generator=generator, dtype=torch.float64)  # a CPU scalar: read on the host, no copy
    i = torch.arange(offset, offset + n, dtype=torch.float64, device=draw_device(device))  # made where it is used
    return stratum_time(i, u, total, T).to(device)


def band_times(schedule, lo=0.0, hi=1.0):
    """The times t in 1..T whose mask rate 1 - alpha(t) lies in [lo, hi] (long tensor). BD3-LM trains with mask
    rates clipped to a band [beta, omega] to cut the gradient variance; [0, 1] is every t (the full bound)."""
    mp = 1.0 - schedule.alpha
    t = torch.nonzero((mp >= lo - 1e-12) & (mp <= hi + 1e-12)).squeeze(1)
    t = t[t >= 1]
    if len(t) == 0:  # a config reaches here checked (check_band names this empty band to the user first)
        raise ValueError(f"no diffusion time has a mask rate in [{lo}, {hi}] (T={schedule.T}): widen the band "
                         f"(--mask_min, --mask_max)")
    assert t[-1] - t[0] + 1 == len(t), "1 - alpha(t) rises with t: a band is a run of times, band[0] + i"
    return t


def check_band(cfg):
    """Refuses mdlm's and bd3's training draws (mask_min, mask_max, mask_draws) when they cannot work, in one line."""
    if cfg.mask_draws < 1:
        raise UserError(f"mask_draws={cfg.mask_draws}: give the masks drawn of each window a step, 1 or more (e.g. 2)")
    if not 0 <= cfg.mask_min < cfg.mask_max <= 1:
        raise UserError(f"need 0 <= mask_min < mask_max <= 1, got {cfg.mask_min}, {cfg.mask_max}")
    try:
        band_times(Schedule(cfg.diffusion_steps, cfg.schedule), cfg.mask_min, cfg.mask_max)
    except ValueError as empty:  # no time in the band: band_times says which band and how to widen it
        raise UserError(str(empty)) from None


def band_top(cfg, progress):
    """The training band's top at `progress` (0..1) of training: mask_max, or under the curriculum (mask_ramp > 0) a
    line from mask_ramp_from at step 0 to mask_max once mask_ramp of the run is done: the early steps see only the
    easier, less-masked windows (an easy-to-hard curriculum on t, Quokka 2025)."""
    if cfg.mask_ramp <= 0:
        return cfg.mask_max
    return cfg.mask_ramp_from + (cfg.mask_max - cfg.mask_ramp_from) * min(1.0, progress / cfg.mask_ramp)


@dataclass(frozen=True)
class LossOptions:
    """The training loss's switches, as masked diffusion (diffusion_loss) and block diffusion (bd3_loss) read them."""
    loss_type: str = "elbo"    # what is trained: 'elbo' (the NELBO), 'masked_ce' / 'all_ce' (plain CE, no w(t))
    self_cond: float = 0.0     # the share of sequences given the network's first prediction of x0; 0: one plain pass
    ar_weight: float = 0.0     # bd3: weight of the clean stream's next-token loss (the model's clean_causal)


@dataclass
class Draw:
    """The random draws of one training micro-batch: `generator` (keyed by seed, step and slot) draws the masks or
    the noise; the times are stratified over the global batch of `total` sequences with one shared `u` per step,
    this micro-batch holding sequences offset .. offset + B - 1. Keyed draws make a resumed or DDP run bit for bit
    the run that never stopped."""
    generator: torch.Generator = None
    u: torch.Tensor = None
    offset: int = 0
    total: int = None
    progress: float = 1.0  # the fraction of training done (step / max_iters): what a curriculum on t reads


def repeat_draws(draw, k, n):
    """The Draw of k copies of a micro-batch of n windows, for k independent masks (and times) of each window
    (--mask_draws): copy j of window i is row j * n + i, its stratum offset * k + j * n + i of the global k * total."""
    return replace(draw, offset=draw.offset * k, total=(draw.total or n) * k)


@dataclass
class Drawn:
    """The random draws of one training pass, made ahead of it (an objective's draws(), eager, from the keyed
    generator): its loss_of is then a pure function of the model, the batch and these tensors, with no generator,
    which is what a compiled (and CUDA-graphed) step can hold. Tensors on the device; None where nothing is drawn."""
    t: torch.Tensor             # the times (B,), or bd3's one per block (B, L // L')
    uniform: torch.Tensor       # (B, L) float32 U[0, 1): a token is masked (uniform: noised) where it is under the rate
    rows: torch.Tensor = None   # (R,) the sequences self-conditioning's first pass feeds (self_condition_rows)
    noise: torch.Tensor = None  # uniform noise's (B, L) random tokens, as indices into the real vocabulary
    # numbers of the config read on the host, which a compiled pass cannot read itself (the same all run)
    n_times: int = 0            # bd3: the times its band holds, k of its weight k * w(t_b)
    prior: float = 0.0          # uniform noise: its prior term per token (uniform.prior_kl)


def masking_draws(shape, t, share, generator=None, device="cpu", n_times=0):
    """Drawn for masked diffusion (mdlm, bd3): the times t, the masks' uniforms (shape) and, when 0 < share < 1,
    self-conditioning's rows, drawn in that order from `generator` where draws run (draw_device, on_device)."""
    dev = draw_device(device)
    uniform = torch.rand(shape, generator=on_device(generator, dev), device=dev).to(device)
    return Drawn(t, uniform, self_condition_rows(shape[0], share, generator, device), n_times=n_times)


# ---------------------------------------------------------------------------- sampling
def time_grid(T, steps):
    """Integer times T = t_0 > t_1 > ... > t_steps = 0 for `steps` reverse steps."""
    grid = torch.round(torch.linspace(T, 0, steps + 1, dtype=torch.float64)).long()
    assert len(torch.unique(grid)) == steps + 1, "steps must be <= T"
    return grid.tolist()


def no_mask_logit(logits, mask_id):
    """Logits with [MASK] at -inf: x0 is never [MASK] (a column compared on the device: no index copied to it)."""
    return logits.masked_fill(torch.arange(logits.size(-1), device=logits.device) == mask_id, float("-inf"))


def predict_logits(model, xt, t, mask_id, positions=None, sc=None):
    """Model logits (B, L, V) in float32 with the [MASK] logit at -inf: x0 is never [MASK]. With positions, flat
    row-major indices (N,), only those rows: (N, V), the head run where the sampler looks. sc: the self-conditioning
    input (self_condition_input)."""
    kw = {k: v for k, v in dict(positions=positions, sc=sc).items() if v is not None}
    return no_mask_logit(model(xt, t, **kw), mask_id)


def self_condition_rows(n, share, generator=None, device="cpu"):
    """Which of n sequences self-conditioning's first pass feeds: a random round(share * n) of them (R,) long, drawn
    where draws run; None when share >= 1 (all of them) or share is 0 (none: no first pass)."""
    if not 0 < share < 1:
        return None
    dev = draw_device(device)
    return torch.randperm(n, generator=on_device(generator, dev), device=dev)[:round(share * n)].to(device)


def self_condition_input(logits_of, masked, share, generator=None, rows=None):
    """Self-conditioning's input (B, L, V) (Chen et al. 2022): the network's own prediction of x0 from a first pass
    without it (no gradient) at the masked positions, for a random `share` of the sequences (the others read zeros,
    as a sampler's first step does: training feeds half, so the net serves both passes). logits_of(rows): that pass's
    logits (R, L, V) for the sequences `rows` (None = all). rows: those drawn ahead (self_condition_rows; a compiled
    step's), else drawn here from generator. A function of x_t still, it keeps the NELBO a bound."""
    rows = self_condition_rows(masked.size(0), share, generator, masked.device) if rows is None else rows
    with torch.no_grad():
        if rows is None:  # share >= 1: every sequence
            return torch.softmax(logits_of(None), -1) * masked[..., None]
        probs = torch.softmax(logits_of(rows), -1) * masked[rows][..., None]
        return torch.zeros(*masked.shape, probs.size(-1), device=masked.device).index_copy_(0, rows, probs)


def filter_logits(logits, temperature=1.0, top_k=0, top_p=1.0):
    """Temperature, top-k and top-p (nucleus) on float64 logits (..., V). Returns log-probabilities (-inf outside
    top-k / top-p). temperature: a number (0: left as is, for an argmax), or a tensor (..., 1) of positive
    per-position temperatures."""
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


def draw_device(device):
    """Where random draws run: on the device itself when it has float64 (CUDA), else on the CPU (MPS has none)."""
    device = torch.device(device)
    return torch.device("cpu") if device.type in ("cpu", "mps") else device


def on_device(generator, device):
    """The generator to draw on `device` with: `generator` (a CPU generator) itself on the CPU, and on meta, which
    reads no numbers; on an accelerator a generator there, seeded by one draw of `generator` (a CPU draw: no device
    sync), so a key or a seed still fixes every draw and no host-made tensor is copied to the device."""
    if generator is None or torch.device(device).type in ("cpu", "meta"):
        return generator
    return torch.Generator(device).manual_seed(int(torch.randint(2 ** 62, (), generator=generator)))


def sample_tokens(logp, temperature, generator=None):
    """Draw one token per position from float64 log-probs (..., V); argmax when temperature == 0. float64 matters:
    float32 categorical sampling quietly lowers the temperature (Zheng et al. 2024). generator: a CPU generator
    (on_device: the draw stays on a float64 device, no host copy of the probabilities)."""
    return logp.argmax(-1) if temperature == 0 or logp.numel() == 0 else draw(logp.exp(), generator)


DEGENERATE_ROW = ("no law to draw from: a row of probabilities has no mass or a NaN/inf entry, as the model's logits "
                  "were not finite (a damaged or diverged model) or a sampling setting validation refuses made them so")


def draw(p, generator):
    """One index per row of probabilities p (..., V), unnormalised, drawn where p lives (draw_device; on_device: no host
    copy) by inverse CDF: exact, and at 16 rows of 2,048 ~17x torch.multinomial's speed on a CPU (dev/LOG.md). A row
    with no mass or a NaN/inf entry is no law: the draw raises (RuntimeError) rather than return its last index, which
    for a character vocabulary is [MASK]."""
    dev = draw_device(p.device)
    c = p.to(dev, torch.float64).cumsum(-1)  # (..., V) the cumulative mass, on the draw device
    # a NaN or inf entry carries into the total (p >= 0), and NaN fails both comparisons; checked on the device
    # (_assert_async: no host sync on CUDA, a plain check on the CPU), as torch.multinomial refused such rows
    total = c[..., -1]
    torch._assert_async(((total > 0) & (total < math.inf)).all(), DEGENERATE_ROW)
    u = torch.rand(c.shape[:-1] + (1,), generator=on_device(generator, dev), device=dev, dtype=torch.float64)
    # the first index whose cumulative mass passes u * total; clamped, as u * total rounded up would pass the last
    index = torch.searchsorted(c, u * c[..., -1:], right=True)[..., 0].clamp_(max=c.size(-1) - 1)
    return index.to(p.device)


def put_at(base, at, values):
    """base (a copy) with its flat, row-major positions `at` (n,) set to values (n,): what base.masked_scatter(mask,
    values) gives for the mask whose n True entries are `at`, with no read of that count on the host (a GPU sync)."""
    return base.flatten().scatter(0, at, values).view_as(base)


def reveal_plan(n, fractions):
    """Positions still masked after each step, (B, S) long, for blocks of n (B,) positions: round(n * f_i) for
    the step's masked fraction f_i (f_S = 0), moved just enough that every step reveals at least one token
    (rounding alone leaves empty passes where the cosine schedule is flat, near T and near 0). Needs S <= n;
    a row with fewer positions reveals them as early as it can."""
    S = len(fractions)
    f = torch.tensor(fractions, dtype=torch.float64)
    base = n[:, None] - torch.round(n[:, None].double() * f[None]).long()  # revealed after step i, (B, S)
    i = torch.arange(1, S + 1)
    # r_i = max(base_i, r_{i-1} + 1) with r_0 = 0, in closed form; then leave one token for each later step
    r = i + torch.cummax(base - i, dim=1).values.clamp(min=0)
    cap = torch.where(n[:, None] >= S, n[:, None] - (S - i), n[:, None])  # short rows: no tokens to spare
    return n[:, None] - torch.minimum(r, cap)


@dataclass
class Step:
    """One reverse step as every sampler reports it to its on_step hook (the trace, --live, the progress bar, the
    change rate). Tensors are (B, L) over the whole canvas unless noted."""
    step: int                 # batched forward passes so far
    nfe: torch.Tensor         # (B,) forward passes each sample has taken part in
    time: torch.Tensor        # (B,) the time index the model was told (0 for samples that skip the step)
    x: torch.Tensor           # the canvas after the step
    prev: torch.Tensor        # the canvas before it
    gen_mask: torch.Tensor    # generated positions (the rest is given text, never changed)
    revealed: torch.Tensor    # positions that took a new token this step
    remasked: torch.Tensor    # positions sent back to [MASK]
    conf: torch.Tensor        # float64 probability of each committed token when it was drawn (0 where none)
    finished: list            # (B,) bool: the sample takes part in no further step
    block: int = 0            # semi-AR / block-diffusion block being decoded, of n_blocks
    n_blocks: int = 1
