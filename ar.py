"""The AR baseline on the same code: a causal network, exact next-token NLL, KV-cached decoding."""
import torch.nn.functional as F

from decode import generate_canvas, prompt_length
from sampler import REVEAL_KEYS


def ar_loss(model, x):
    """Next-token loss of x (B, L + 1): (the mean to train on, the exact NLL (B,) in nats/token)."""
    logits = model(x[:, :-1])
    nll = F.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten(), reduction="none").view(len(x), -1).mean(1)
    return nll.mean(), nll.detach()


# -------------------------------------------------------------------- the objective (objectives.py)
MODEL = dict(causal=True, time_cond="none", self_cond=False, clean_causal=False)
WINDOW = 1  # a training window of L + 1 tokens scores its last L
IGNORES = dict.fromkeys(("time_cond", "loss_type", "schedule", "diffusion_steps", "steps",
                         *REVEAL_KEYS, "bd3_block", "mask_min", "mask_max", "bd3_loss", "bd3_speculate", "bd3_ar",
                         "dual_ar", "dual_sample", "mask_ramp", "mask_ramp_from", "self_cond", "mask_draws"),
                        "an AR model predicts the next token: no noise, time, schedule or reverse steps")
IGNORES |= dict.fromkeys(("viz_video", "trace_every", "gif_frame_ms", "live"), "an AR model has no denoising to watch")
CONTINUES_ONLY = EXACT = ANY_LENGTH = True  # continues a prompt; scores the exact NLL; writes past the context
TRACE = False  # no denoising to watch


def draws(x, cfg, schedule, tok, draw):
    """None: the next-token loss draws no noise."""
    return None


def loss_of(model, x, cfg, schedule, tok, drawn):
    return ar_loss(model, x)[0]


def eval_times(cfg, L):
    return 0  # exact: no t to draw


def bound(model, x, cfg, schedule, tok, t, generator):
    """The exact NLL per window (B,) of x[:, 1:] given what precedes each token."""
    return ar_loss(model, x)[1], None


def sample(model, x, gen_mask, cfg, schedule, mask_id, generator=None, on_step=None):
    """Continue x's prefix (>= 1 token: the canvas adds a start token) over its blanks."""
    return generate_canvas(model, x, prompt_length(x, gen_mask), cfg, generator, mask_id, on_step)


def passes(cfg, n_gen, n_prompt=0):
    return n_gen


def decodes(cfg, batch):
    return True  # one token a pass through decode.py's step


def describe(cfg):
    return "AR + KV cache"
