"""Self-distillation through time (SDTT; Deschenaux & Gulcehre 2024, arXiv 2410.21035): a masked
diffusion student learns in one pass what its teacher, a trained checkpoint, does in several, so it
samples in fewer passes. train.py runs this loss in place of the NELBO under --distill_from:

    python train.py baby_fast           # baby distilled: 48 characters in 16 passes
    python train.py baby --distill_from=artifacts/weights/baby --distill_steps=16 --mask_min=0 \
        --mask_max=1 --mask_ramp=0 --out_dir=artifacts/models/my_student
    python inference.py baby_fast --prompt "ROMEO:"

A window is masked at a time t over every rate a sampler visits, x_t. From x_t the teacher takes k
ancestral sub-steps, t -> t - h -> ... -> t - (k - 1) h, h = T / (k S) for a student of S passes,
revealing as diffusion.sample_ancestral reveals. The target at a masked position is the teacher's
law at the sub-step that revealed it, or the last sub-step's where none did. The student reads x_t
once and matches the target's mean over m draws of the sub-steps (the forward KL, whose optimum is
that mean; m draws divide the noise of its gradient by m). The teacher runs without gradient. The
student starts as the teacher's weights, so it begins where one pass of the teacher is. Its
checkpoint is a masked-diffusion model every script reads; its sampler takes S steps. What it
gained: dev/LOG.md, "Fewer passes by self-distillation".
"""
import math
from dataclasses import dataclass

import torch

import checkpoint_manager
from diffusion import Drawn, Schedule, corrupt, dual_ar_loss, predict_logits, self_condition_input
from utils.dist import draw_device, on_device
from utils.draws import draw_at, uniforms
from utils.errors import UserError
from utils.tokenizer import fingerprint, tokenizer_from_state

SUBSTEPS = 3  # k: the teacher's passes a student pass
TARGETS = 4   # m: the draws of the teacher's sub-steps averaged a state


def masked_kl(logp, logq):
    """KL(p || q) per position (...,) of two laws as log-probs (..., V); -inf where a law is 0.
    Written with no inf - inf anywhere: torch.where would pass that NaN to the gradient."""
    p = logp.exp()
    zero = p == 0
    return (p * (logp.masked_fill(zero, 0.0) - logq.masked_fill(zero, 0.0))).sum(-1)


@dataclass(frozen=True)
class Teacher:
    """The trained network a student learns from, run on its chain: its schedule, [MASK]'s id and
    h, its sub-step in the chain's T steps."""
    net: torch.nn.Module
    schedule: Schedule
    mask_id: int
    h: int


@torch.no_grad()
def teacher_target(teacher, xt, t, sc, reveal_u, token_u, first=None):
    """The teacher's k ancestral sub-steps from x_t (B, L) at t (B,), k = len(reveal_u) + 1:
    log-probs (B, L, V), at each position the law of the pass that revealed it, the last pass's
    where none did; and the first pass's law (B, L, V). reveal_u, token_u (k - 1, B, L): each
    sub-step's uniforms, drawn ahead. first: the first pass's law, if read already. sc: the first
    pass's self-conditioning input; each later pass reads the pass before it, as denoise feeds
    it."""
    alpha = teacher.schedule.on(xt.device)[0]
    x, now, sc_now, target = xt, t, sc, None
    for j in range(len(reveal_u) + 1):
        logp = first
        if j > 0 or first is None:
            logits = predict_logits(teacher.net, x, now, teacher.mask_id, sc=sc_now)
            logp = torch.log_softmax(logits, -1)  # (B, L, V)
        masked = x == teacher.mask_id
        target = logp if target is None else torch.where(masked[..., None], logp, target)
        first = logp if j == 0 else first
        if j == len(reveal_u):
            break
        nxt = (now - teacher.h).clamp(min=0)
        # q(x_s = x0 | x_t = [MASK]) = (alpha(s) - alpha(t)) / (1 - alpha(t)), 1 at s = 0
        # (sample_ancestral's)
        reveal = ((alpha[nxt] - alpha[now]) / (1 - alpha[now])).float()  # (B,)
        revealed = masked & (reveal_u[j] < reveal[:, None])
        x = torch.where(revealed, draw_at(logp.exp(), token_u[j]), x)  # drawn at temperature 1
        if sc is not None:  # the last prediction, at the positions still masked
            sc_now = logp.exp() * (x == teacher.mask_id)[..., None]
        now = nxt
    return target, first


@torch.no_grad()
def mean_target(teacher, xt, t, sc, reveal_u, token_u):
    """log E[target] (B, L, V) over m draws of teacher_target (reveal_u, token_u (m, k - 1, B, L)),
    one first pass shared; and that first pass's law."""
    first, targets = None, []
    for r, u in zip(reveal_u, token_u):
        target, first = teacher_target(teacher, xt, t, sc, r, u, first)
        targets.append(target)
    return torch.logsumexp(torch.stack(targets), 0) - math.log(len(targets)), first


def sub_step(cfg):
    """h, the teacher's sub-step in the chain's T steps: T / (k S), rounded."""
    return round(cfg.diffusion_steps / (SUBSTEPS * cfg.distill_steps))


@dataclass
class DistillDrawn(Drawn):
    """A pass's draws (diffusion.Drawn) and the teacher's sub-steps' uniforms, (m, k - 1, B, L)."""
    reveal_u: torch.Tensor = None  # float32, on the device
    token_u: torch.Tensor = None   # float64, on the draw device (utils.draws.draw_at)


class SelfDistillation:
    """The training loss under --distill_from: base's (MaskedDiffusion's) draws of x_t, the
    student's KL to the teacher's mean target, and the dual objective's causal loss as base has it.
    train.py calls draws() and loss() as on any objective (diffusion.Objective); the checkpoint is
    base's, so every other call goes to base."""

    def __init__(self, base, teacher):
        self.base, self.teacher = base, teacher  # teacher: a Teacher

    def draws(self, x, cfg, schedule, tok, draw):
        """base's draws (mask_draws copies, their t, masks and self-conditioning rows), then the
        sub-steps' uniforms from the same keyed generator: a resume draws them again alike."""
        d = self.base.draws(x, cfg, schedule, tok, draw)
        shape = (TARGETS, SUBSTEPS - 1, *d.uniform.shape)
        dev = draw_device(x.device)
        g = on_device(draw.generator, dev)
        reveal_u = torch.rand(shape, generator=g, device=dev).to(x.device)
        token_u = uniforms(shape, draw.generator, x.device)
        return DistillDrawn(d.t, d.uniform, d.rows, reveal_u=reveal_u, token_u=token_u)

    def loss(self, model, x, cfg, schedule, tok, drawn):
        """The mean KL over the copies' masked positions (+ dual_ar times the causal loss)."""
        copies = x.repeat(cfg.mask_draws, 1)
        xt, masked = corrupt(copies, drawn.t, schedule, tok.mask_id, uniform=drawn.uniform)
        sc = None
        if cfg.self_cond:  # the teacher's first reading of x_t, for the rows training's rule picks
            def read(rows):
                return predict_logits(self.teacher.net, xt[rows], drawn.t[rows], tok.mask_id)
            sc = self_condition_input(read, masked, drawn.rows)
        target, _ = mean_target(self.teacher, xt, drawn.t, sc, drawn.reveal_u, drawn.token_u)
        logq = torch.log_softmax(predict_logits(model, xt, drawn.t, tok.mask_id, sc=sc), -1)  # (B, L, V)
        loss = (masked_kl(target, logq) * masked).sum() / masked.sum().clamp(min=1)
        if cfg.dual_ar:
            loss = loss + cfg.dual_ar * dual_ar_loss(model, x, tok.mask_id)
        return loss

    def flops(self, model, cfg):
        """The student's forward and backward on each copy, the teacher's forwards (a third of
        that each: 1 + m (k - 1) passes, and half a pass for self-conditioning), the causal pass."""
        L = cfg.block_size
        teacher = (1 + TARGETS * (SUBSTEPS - 1) + (0.5 if cfg.self_cond else 0)) / 3
        causal = (L - 1) / L if cfg.dual_ar else 0
        return model.flops_per_token() * (cfg.mask_draws * (1 + teacher) + causal), L


def objective(base, cfg, tok, device):
    """base, or under --distill_from the SelfDistillation of it by the checked teacher (in eval
    mode, no gradient), on device."""
    if not cfg.distill_from:
        return base
    if cfg.diffusion_steps < SUBSTEPS * cfg.distill_steps:
        raise UserError(f"distill_steps={cfg.distill_steps} with diffusion_steps={cfg.diffusion_steps}: the "
                        f"teacher's sub-step T / ({SUBSTEPS} x distill_steps) is under one step of the chain; "
                        f"give --distill_steps={cfg.diffusion_steps // SUBSTEPS} or fewer")
    ckpt = checkpoint_manager.read_checkpoint(cfg.distill_from, "give --distill_from a trained masked-diffusion model")
    what = ckpt["config"].get("objective", "mdlm")
    if what != "mdlm":
        raise UserError(f"--distill_from={cfg.distill_from} is a {what} model: self-distillation through time "
                        f"distils masked diffusion; give an mdlm checkpoint (python train.py baby)")
    if fingerprint(tokenizer_from_state(ckpt["tokenizer"])) != fingerprint(tok):
        raise UserError(f"--distill_from={cfg.distill_from} reads another tokenizer than this run: give a "
                        f"teacher trained on this run's text and tokenizer")
    net, _ = checkpoint_manager.load_model(cfg.distill_from, device, ckpt)
    schedule = Schedule(cfg.diffusion_steps, cfg.schedule)
    return SelfDistillation(base, Teacher(net.requires_grad_(False), schedule, tok.mask_id, sub_step(cfg)))
