"""Optimizers (AdamW, or Muon on hidden matrices and AdamW on the rest), weight EMA, LR schedule.

Muon (Keller Jordan 2024, kellerjordan.github.io/posts/muon; modded-nanogpt, nanochat): SGD with
Nesterov momentum whose update of each hidden matrix becomes the nearest semi-orthogonal one
(U V^T of its SVD), found by a few Newton-Schulz steps; torch.optim.Muon (torch >= 2.9).

    python train.py cpu --optimizer=muon --muon_lr=0.02
"""
import copy
import functools
import math
from dataclasses import dataclass, replace

import torch
import torch.optim._muon as _torch_muon

from config import CHOICES
from utils.errors import UserError

OPTIMIZERS = CHOICES["optimizer"]  # see build_optimizer


def newton_schulz(grad, ns_coefficients, ns_steps, eps, dtype=torch.float32):
    """torch.optim.Muon's orthogonalisation, step for step, in `dtype` instead of bf16:
    G / |G|_F, then X <- a X + (b A + c A^2) X with A = X X^T, on the wide orientation."""
    a, b, c = ns_coefficients
    x = grad.to(dtype)
    tall = grad.size(0) > grad.size(1)
    if tall:
        x = x.T
    x = x / x.norm().clamp(min=eps)
    for _ in range(ns_steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if tall else x


@dataclass(eq=False)  # one optimizer is itself, not its fields
class MuonAdamW:
    """torch's Muon on the hidden matrices and AdamW on the rest as one optimizer."""
    muon: torch.optim.Muon
    adamw: torch.optim.AdamW
    ns: torch.dtype  # the Newton-Schulz dtype (build_optimizer)

    @property
    def param_groups(self):
        return self.muon.param_groups + self.adamw.param_groups

    def step(self):
        own = _torch_muon._zeropower_via_newtonschulz
        if self.ns != torch.bfloat16:  # torch's is bf16: swap in ours for this step
            _torch_muon._zeropower_via_newtonschulz = functools.partial(newton_schulz, dtype=self.ns)
        try:
            self.muon.step()
        finally:
            _torch_muon._zeropower_via_newtonschulz = own
        self.adamw.step()

    def zero_grad(self, set_to_none=True):
        self.muon.zero_grad(set_to_none)
        self.adamw.zero_grad(set_to_none)

    def state_dict(self):
        return dict(muon=self.muon.state_dict(), adamw=self.adamw.state_dict())

    def load_state_dict(self, state):
        if "muon" not in state:  # the hand-written Muon this replaced (its momentum scaled otherwise)
            raise UserError("the checkpoint's Muon state is from before torch.optim.Muon (micro-dllm 6c6252f and "
                            "earlier): resume it with that version, or start a new run")
        self.muon.load_state_dict(state["muon"])
        self.adamw.load_state_dict(state["adamw"])


def build_optimizer(model, cfg, device):
    """AdamW over model.optimizer_groups, or Muon on the layers' 2-D weights (not the head) and
    AdamW on the rest. Each group carries base_lr, which set_lr scales."""
    assert cfg.optimizer in OPTIMIZERS, cfg.optimizer
    hidden = [p for n, p in model.named_parameters()
              if cfg.optimizer == "muon" and p.dim() == 2 and n.startswith("layers.")]
    groups = [dict(g, base_lr=cfg.learning_rate) for g in model.optimizer_groups(cfg.weight_decay, exclude=hidden)]
    adamw = torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.learning_rate,
                              betas=(cfg.beta1, cfg.beta2), fused=device.type == "cuda")
    if cfg.optimizer == "adamw":
        return adamw
    # A semi-orthogonal update has RMS 1/sqrt(max(rows, cols)); "original" scales lr by
    # max(1, rows/cols)**0.5: 1/sqrt(fan_in) for all shapes. Newton-Schulz drops momentum's scale.
    muon = torch.optim.Muon([dict(params=hidden, base_lr=cfg.muon_lr)], lr=cfg.muon_lr, momentum=cfg.muon_momentum,
                            nesterov=True, weight_decay=0.0, adjust_lr_fn="original")  # no decay, as in the original
    # Newton-Schulz's precision: bf16 on CUDA, fp32 elsewhere, where bf16 is slower (dev/LOG.md,
    # "Muon's Newton–Schulz on a CPU: bf16 against fp32")
    ns = torch.bfloat16 if device.type == "cuda" else torch.float32
    return MuonAdamW(muon, adamw, ns)


def lr_at(it, cfg):
    """Linear warm-up, then cosine decay to min_lr at max_iters (nanoGPT)."""
    if it < cfg.warmup_iters:
        return cfg.learning_rate * (it + 1) / cfg.warmup_iters
    frac = min(1.0, (it - cfg.warmup_iters) / max(1, cfg.max_iters - cfg.warmup_iters))
    return cfg.min_lr + 0.5 * (1 + math.cos(math.pi * frac)) * (cfg.learning_rate - cfg.min_lr)


WARMUP_FRACTION = 0.1  # the most of a run a preset's warm-up may take


def cap_warmup(cfg, given):
    """Caps a warm-up at 10 % of a cut --max_iters, so the run reaches peak LR: (cfg, note)."""
    cap = max(1, int(cfg.max_iters * WARMUP_FRACTION))
    if "warmup_iters" in given or cfg.max_iters <= 0 or cfg.warmup_iters <= cap:
        return cfg, ""
    return replace(cfg, warmup_iters=cap), (f"warm-up: {cap} steps, the preset's warmup_iters={cfg.warmup_iters} "
                                            f"capped at {WARMUP_FRACTION:.0%} of max_iters={cfg.max_iters} "
                                            f"(--warmup_iters=N sets it)")


def set_lr(opt, scale):
    for g in opt.param_groups:
        g["lr"] = g["base_lr"] * scale


# ---------------------------------------------------------------------------- EMA of the weights
class EMA:
    """Weight averaging (Polyak & Juditsky 1992) for eval, best.pt and samples. Checkpoints carry it
    under 'ema' (load_model prefers it), its count under 'ema_updates'."""

    def __init__(self, model, decay):
        self.decay, self.updates = decay, 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)  # its own uncompiled copy

    def rate(self):
        """The decay, up from 0.1 so a short run soon forgets its init (TF's num_updates rule)."""
        return min(self.decay, self.ramp(self.updates))

    @staticmethod
    def ramp(updates):
        """The ramp's decay after `updates` updates; N steps never use more than ramp(N - 1)."""
        return (1 + updates) / (10 + updates)

    @torch.no_grad()
    def update(self, model):
        d = self.rate()
        torch._foreach_lerp_(list(self.model.parameters()), list(model.parameters()), 1.0 - d)  # e += (1-d)(p-e)
        self.updates += 1

    def state_dict(self):
        return self.model.state_dict()

    def load_state_dict(self, weights, updates):
        self.model.load_state_dict(weights)
        self.updates = updates
