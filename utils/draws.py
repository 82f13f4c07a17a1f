"""How a token is drawn, for every sampler: the law (Law: temperature, top-k, top-p) in float64, and
exact inverse-CDF draws whose uniforms can be made ahead (so a CUDA graph replays a draw). Random
draws run where utils.dist.draw_device says: the CPU's generator, or the device's when it has
float64 (CUDA; MPS has none).

    python -c "import torch, utils.draws as d; print(d.draw(torch.tensor([[0., 1., 3.]]), None))"
"""
import math
from dataclasses import dataclass, fields

import torch

from utils.dist import draw_device, on_device
from utils.errors import UserError

DEGENERATE_ROW = ("no law to draw from: a row of probabilities has no mass or a NaN/inf entry, as the model's logits "
                  "were not finite (a damaged or diverged model) or a sampling setting validation refuses made them so")


# ------------------------------------------------------------------------ uniforms
def uniforms(shape, generator, device):
    """U(0, 1) float64 draws (shape) on `device`'s draw device, in the order draw() takes them."""
    dev = draw_device(device)
    return torch.rand(shape, generator=on_device(generator, dev), device=dev, dtype=torch.float64)


def uniform_draws(*shape, generator, device):
    """U(0, 1) float64 draws on `device`: the CPU's from `generator`, others seeded by it."""
    return uniforms(shape, generator, device).to(device)


# ------------------------------------------------------------------------ the law
# The least temperature above 0: at 1e-6 a draw is already the argmax; a subnormal T overflows.
MIN_TEMPERATURE = 1e-6


@dataclass(frozen=True)
class Law:
    """How every sampler draws a token from the network's logits: the masked sampler, the AR's
    generate, bd3's rounds and uniform's step all take this one value, so a new filter is a field
    here and its lines in log_probs (config.py gives each field's key, with its comment)."""
    temperature: float = 1.0  # 0 = argmax
    top_k: int = 0            # 0 = off
    top_p: float = 1.0        # 1.0 = off

    @classmethod
    def from_config(cls, cfg):
        """The law a config's keys of the same names set."""
        return cls(**{f.name: getattr(cfg, f.name) for f in fields(cls)})

    def log_probs(self, logits, temperature=None):
        """float64 log-probs (..., V) of float logits: divided by the temperature (temperature=
        overrides it: a number, or a positive (..., 1) tensor; 0 leaves them as they are, for an
        argmax), then -inf outside top-k and top-p."""
        temperature = self.temperature if temperature is None else temperature
        logits = logits.double()
        if torch.is_tensor(temperature) or temperature > 0:
            logits = logits / temperature
        if self.top_k and self.top_k < logits.size(-1):
            kth = torch.topk(logits, self.top_k, dim=-1).values[..., -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if self.top_p < 1.0:
            sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
            p = sorted_logits.softmax(-1)
            drop = p.cumsum(-1) - p >= self.top_p  # keep the smallest prefix whose mass reaches top_p
            drop[..., 0] = False
            logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
        return logits.log_softmax(-1)

    def probs(self, logits):
        """The float64 law (..., V) a token is drawn from: log_probs' exp, one-hot at T = 0."""
        if self.temperature == 0:
            return torch.nn.functional.one_hot(logits.argmax(-1), logits.size(-1)).double()
        return self.log_probs(logits).exp()

    def check(self):
        """Refuses, in the user's words, a law no draw can follow."""
        if 0 < self.temperature < MIN_TEMPERATURE:
            raise UserError(f"temperature={self.temperature} is below {MIN_TEMPERATURE:g}, where a draw is already "
                            f"the argmax (a tiny one overflows the logits): give 0 for the argmax, or "
                            f"{MIN_TEMPERATURE:g}+")

    def describe(self):
        """The law in the words of its flags."""
        return f"temperature {self.temperature:g}, top_k {self.top_k}, top_p {self.top_p:g}"


def drawn_law(logp, greedy):
    """The law sample_tokens drew from, as log-probs (..., V): logp, or at an argmax (T = 0, a
    greedy last step) a point mass there. What a Step's law reports, so the trace page shows it."""
    if not greedy:
        return logp
    return torch.full_like(logp, -math.inf).scatter(-1, logp.argmax(-1, keepdim=True), 0.0)


# ------------------------------------------------------------------------ the draw
def draw(p, generator):
    """One index per row of unnormalised p (..., V) by inverse CDF: exact, and faster than
    torch.multinomial on a CPU (dev/LOG.md, "Two CPU decode costs removed for every sampler"). A row
    with no mass or a NaN/inf raises rather than return its last index ([MASK] for chars)."""
    return draw_at(p, uniforms(p.shape[:-1], generator, p.device))


def draw_at(p, u):
    """draw() with its uniforms u (...) float64 given, on the draw device: no generator, so a CUDA
    graph replays it (the uniforms are drawn before the replay, into a buffer it reads)."""
    c = p.to(u.device, torch.float64).cumsum(-1)  # (..., V) the cumulative mass, on the draw device
    total = c[..., -1]  # a NaN or inf carries into the total, failing the check; _assert_async: no sync
    torch._assert_async(((total > 0) & (total < math.inf)).all(), DEGENERATE_ROW)
    # the first index whose mass passes u * total; clamped: u * total rounded up could pass the last
    index = torch.searchsorted(c, u[..., None] * c[..., -1:], right=True)[..., 0].clamp_(max=c.size(-1) - 1)
    return index.to(p.device)


def sample_tokens(logp, temperature, generator=None):
    """One token per position from float64 log-probs (..., V) (a CPU generator); argmax at T = 0.
    float32 categorical sampling quietly lowers the temperature (Zheng et al. 2024)."""
    if temperature == 0 or logp.numel() == 0:
        return logp.argmax(-1)
    return draw(logp.exp(), generator)
