"""Optimizers: AdamW (the default) or Muon for the hidden weight matrices with AdamW for the rest; and the
weight EMA (--ema) used for eval and samples.

Muon (Keller Jordan, 2024, "Muon: An optimizer for hidden layers in neural networks",
kellerjordan.github.io/posts/muon; used in modded-nanogpt and nanochat): SGD with Nesterov
momentum whose update for each 2-D weight matrix is replaced by the nearest semi-orthogonal
matrix, U V^T of the update's SVD, computed approximately with a few Newton-Schulz iterations.
Embeddings, the output head and anything not 2-D keep AdamW: Muon is for hidden layers.

    python train.py cpu --optimizer=muon --muon_lr=0.02
    python -c "import torch; from utils.optim import orthogonalize; print(torch.linalg.svdvals(orthogonalize(torch.randn(64, 32))))"
"""
import copy

import torch

# quintic Newton-Schulz coefficients from the Muon write-up: chosen to push every singular value
# in (0, 1] towards ~1 in five steps, trading exact convergence (they land in ~[0.7, 1.2]) for speed
NS_COEFFS = (3.4445, -4.7750, 2.0315)
OPTIMIZERS = ("adamw", "muon")  # config.optimizer, see build_optimizer


def orthogonalize(G, steps=5, eps=1e-7):
    """Approximate U V^T for G = U S V^T (G 2-D) by the quintic iteration X <- a X + b (X X^T) X + c (X X^T)^2 X.
    bf16 on CUDA (the iteration is robust to it, as in the write-up), fp32 elsewhere (bf16 is slow on CPUs)."""
    a, b, c = NS_COEFFS
    X = G.to(torch.bfloat16 if G.is_cuda else torch.float32)
    tall = X.size(0) > X.size(1)
    if tall:  # iterate on the wide orientation so X X^T is the smaller Gram matrix
        X = X.T
    X = X / (X.norm() + eps)  # Frobenius norm >= spectral norm, so all singular values start in [0, 1]
    for _ in range(steps):
        A = X @ X.T
        X = a * X + (b * A + c * A @ A) @ X
    return (X.T if tall else X).to(G.dtype)


class Muon(torch.optim.Optimizer):
    """One optimizer, two kinds of group: groups with use_muon=True get the orthogonalised Nesterov
    momentum update, the others AdamW. One state_dict, so checkpoints and resume need nothing new."""

    def __init__(self, groups):
        super().__init__(groups, dict(lr=0.02, weight_decay=0.0))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            lr, wd = group["lr"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if group["use_muon"]:
                    if not state:
                        state["momentum_buffer"] = torch.zeros_like(p)
                    buf, mu = state["momentum_buffer"], group["momentum"]
                    buf.mul_(mu).add_(p.grad)
                    update = orthogonalize(p.grad.add(buf, alpha=mu), group["ns_steps"])  # Nesterov: g + mu * buf
                    # a semi-orthogonal update has RMS 1/sqrt(max(rows, cols)); the write-up's sqrt(rows/cols)
                    # boost for tall matrices makes it 1/sqrt(fan_in) for every shape
                    scale = max(1.0, p.size(0) / p.size(1)) ** 0.5
                    p.mul_(1 - lr * wd).add_(update, alpha=-lr * scale)
                else:  # AdamW (Loshchilov & Hutter 2019) with bias correction
                    if not state:
                        state["step"] = 0
                        state["exp_avg"] = torch.zeros_like(p)
                        state["exp_avg_sq"] = torch.zeros_like(p)
                    b1, b2 = group["betas"]
                    state["step"] += 1
                    m, v = state["exp_avg"], state["exp_avg_sq"]
                    m.lerp_(p.grad, 1 - b1)
                    v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                    denom = (v / (1 - b2 ** state["step"])).sqrt_().add_(group["eps"])
                    p.mul_(1 - lr * wd).addcdiv_(m, denom, value=-lr / (1 - b1 ** state["step"]))


def is_hidden_matrix(name, p):
    """Muon's share: the 2-D weights inside the transformer layers (not embeddings, not the head)."""
    return p.dim() == 2 and name.startswith("layers.")


def build_optimizer(model, cfg, device):
    """AdamW over the model's own groups, or Muon + AdamW. Every group carries base_lr; set_lr scales it."""
    assert cfg.optimizer in OPTIMIZERS, cfg.optimizer
    if cfg.optimizer == "adamw":
        groups = model.optimizer_groups(cfg.weight_decay)
        for g in groups:
            g["base_lr"] = cfg.learning_rate
        return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2), fused=device.type == "cuda")
    named = list(model.named_parameters())
    hidden = [p for n, p in named if is_hidden_matrix(n, p)]
    adam = dict(use_muon=False, lr=cfg.learning_rate, base_lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2), eps=1e-8)
    # weight decay as in model.optimizer_groups: on 2-D non-embedding weights (here only the head)
    decayed = [p for n, p in named if not is_hidden_matrix(n, p) and p.dim() >= 2 and "emb" not in n]
    rest = [p for n, p in named if not is_hidden_matrix(n, p) and not (p.dim() >= 2 and "emb" not in n)]
    groups = [dict(params=hidden, use_muon=True, lr=cfg.muon_lr, base_lr=cfg.muon_lr, momentum=cfg.muon_momentum,
                   ns_steps=5, weight_decay=0.0),  # no weight decay on Muon's matrices, as in the original
              dict(params=decayed, weight_decay=cfg.weight_decay, **adam),
              dict(params=rest, weight_decay=0.0, **adam)]
    return Muon([g for g in groups if g["params"]])


def set_lr(opt, scale):
    """Every group's lr = its base_lr x the schedule's factor (warm-up, cosine decay)."""
    for g in opt.param_groups:
        g["lr"] = g["base_lr"] * scale


# ---------------------------------------------------------------------------- EMA of the weights
# Polyak & Juditsky 1992. python train.py cpu --ema=0.999: eval, best.pt selection and samples use the
# averaged weights; checkpoints carry them under 'ema' (a plain state_dict) and the update count under
# 'ema_updates'; utils.checkpoint.load_model prefers 'ema' when it is there.

class EMA:
    def __init__(self, model, decay):
        self.decay, self.updates = decay, 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)  # its own uncompiled copy

    def rate(self):
        """The decay used for the next update: ramps up from 0.1 so the average forgets the random
        init quickly in short runs (TensorFlow's ExponentialMovingAverage num_updates rule)."""
        n = self.updates
        return min(self.decay, (1 + n) / (10 + n))

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
