"""What the objectives share, below them all: the noise schedule, time draws, the training band,
logits filtering, float64 draws, reveal plans and the Step a sampler reports each reverse step.

    python -c "import common; print(common.Schedule(100).alpha[:3], common.time_grid(100, 8))"
"""
import math
from dataclasses import dataclass, replace

import torch

from utils.errors import UserError

LN2 = math.log(2)


# ---------------------------------------------------------------------------- the noise schedule
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


# ---------------------------------------------------------------------------- time draws
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


@dataclass(frozen=True)
class LossOptions:
    """The training loss's switches (diffusion_loss, bd3_loss)."""
    loss_type: str = "elbo"    # 'elbo' (the NELBO), 'masked_ce' / 'all_ce' (plain CE, no w(t))
    self_cond: float = 0.0     # the share of sequences given the first pass's x0; 0: one plain pass
    ar_weight: float = 0.0     # bd3: weight of the clean stream's next-token loss


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


# ---------------------------------------------------------------------------- sampling
def time_grid(T, steps):
    """Integer times T = t_0 > t_1 > ... > t_steps = 0 for `steps` reverse steps."""
    grid = torch.round(torch.linspace(T, 0, steps + 1, dtype=torch.float64)).long()
    assert len(torch.unique(grid)) == steps + 1, "steps must be <= T"
    return grid.tolist()


def no_mask_logit(logits, mask_id):
    """Logits with [MASK] at -inf: x0 is never [MASK] (compared on the device: no index copied)."""
    return logits.masked_fill(torch.arange(logits.size(-1), device=logits.device) == mask_id, float("-inf"))


def predict_logits(model, xt, t, mask_id, positions=None, sc=None):
    """Logits (B, L, V) float32, [MASK] at -inf; positions (N,) flat: those rows only, (N, V)."""
    kw = {k: v for k, v in dict(positions=positions, sc=sc).items() if v is not None}
    return no_mask_logit(model(xt, t, **kw), mask_id)


def self_condition_rows(n, share, generator=None, device="cpu"):
    """round(share * n) random rows of n (R,) for self-conditioning; None if share >= 1 or 0."""
    if not 0 < share < 1:
        return None
    dev = draw_device(device)
    return torch.randperm(n, generator=on_device(generator, dev), device=dev)[:round(share * n)].to(device)


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


def draw_device(device):
    """Where draws run: on the device if it has float64 (CUDA), else on the CPU (MPS has none)."""
    device = torch.device(device)
    return torch.device("cpu") if device.type in ("cpu", "mps") else device


def on_device(generator, device):
    """The generator for draws on `device`: `generator` on the CPU, else one it seeds (no sync)."""
    if generator is None or torch.device(device).type in ("cpu", "meta"):
        return generator
    return torch.Generator(device).manual_seed(int(torch.randint(2 ** 62, (), generator=generator)))


def sample_tokens(logp, temperature, generator=None):
    """One token per position from float64 log-probs (..., V) (a CPU generator); argmax at T = 0.
    float32 categorical sampling quietly lowers the temperature (Zheng et al. 2024)."""
    return logp.argmax(-1) if temperature == 0 or logp.numel() == 0 else draw(logp.exp(), generator)


DEGENERATE_ROW = ("no law to draw from: a row of probabilities has no mass or a NaN/inf entry, as the model's logits "
                  "were not finite (a damaged or diverged model) or a sampling setting validation refuses made them so")


def draw(p, generator):
    """One index per row of unnormalised p (..., V) by inverse CDF: exact, and faster than
    torch.multinomial on a CPU (dev/LOG.md, "Two CPU decode costs removed for every sampler"). A row
    with no mass or a NaN/inf raises rather than return its last index ([MASK] for chars)."""
    dev = draw_device(p.device)
    c = p.to(dev, torch.float64).cumsum(-1)  # (..., V) the cumulative mass, on the draw device
    total = c[..., -1]  # a NaN or inf carries into the total, failing the check; _assert_async: no sync
    torch._assert_async(((total > 0) & (total < math.inf)).all(), DEGENERATE_ROW)
    u = torch.rand(c.shape[:-1] + (1,), generator=on_device(generator, dev), device=dev, dtype=torch.float64)
    # the first index whose mass passes u * total; clamped: u * total rounded up could pass the last
    index = torch.searchsorted(c, u * c[..., -1:], right=True)[..., 0].clamp_(max=c.size(-1) - 1)
    return index.to(p.device)


def put_at(base, at, values):
    """A copy of base, flat positions `at` (n,) set to values (n,): masked_scatter with no sync."""
    return base.flatten().scatter(0, at, values).view_as(base)


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
