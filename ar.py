"""The AR baseline on the same code: a causal network, exact next-token NLL, KV-cached decoding.

    python train.py baby --objective=ar --out_dir=artifacts/models/baby_ar
"""
import torch.nn.functional as F

from diffusion import LAW_KEYS, Objective, sampler_keys_but
from model import sample_causal
from utils.steps import prompt_length


def ar_loss(model, x):
    """Next-token loss of x (B, L + 1): (the mean to train on, the exact NLL (B,) in nats/token)."""
    logits = model(x[:, :-1])
    nll = F.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten(), reduction="none").view(len(x), -1).mean(1)
    return nll.mean(), nll.detach()


class AutoRegressive(Objective):
    """--objective=ar: the exact NLL; samples a token a pass with model.generate."""
    MODEL = dict(causal=True, time_cond="none", self_cond=False, clean_causal=False)
    WINDOW = 1  # a training window of L + 1 tokens scores its last L
    # of its sampler's keys it reads the law and the replay's pace: a token a pass
    IGNORES = dict.fromkeys(("time_cond", "loss_type", "schedule", "diffusion_steps",
                             *sampler_keys_but(*LAW_KEYS, "replay_steps"), "bd3_block", "mask_min", "mask_max",
                             "bd3_loss", "bd3_ar", "dual_ar", "mask_ramp", "mask_ramp_from", "self_cond", "mask_draws"),
                            "an AR model predicts the next token: no noise, time, schedule or reverse steps")
    IGNORES.update(dict.fromkeys(("distill_from", "distill_steps"), "distill.py distils masked diffusion: use "
                                 "--objective=mdlm"))
    CONTINUES_ONLY = True  # continues a prompt
    ANY_LENGTH = True  # writes past the context
    EXACT = True  # scores the exact NLL
    # (its loss is the next-token CE whatever loss_type says: it refuses loss_type given)

    def draws(self, x, cfg, schedule, tok, draw):
        """None: the next-token loss draws no noise."""
        return None

    def loss(self, model, x, cfg, schedule, tok, drawn):
        return ar_loss(model, x)[0]

    def eval_times(self, cfg, L):
        return 0  # exact: no t to draw

    def bound(self, model, x, cfg, schedule, tok, t, generator):
        """The exact NLL per window (B,) of x[:, 1:] given what precedes each token."""
        return ar_loss(model, x)[1], None

    def sample(self, model, x, gen_mask, cfg, opts, mask_id, generator=None, on_step=None):
        """Continue x's prefix (>= 1 token: the canvas adds a start token) over its blanks."""
        return sample_causal(model, x, prompt_length(x, gen_mask), opts, generator, mask_id, on_step)

    def passes(self, cfg, opts, n_gen, n_prompt=0):
        return n_gen

    def decodes(self, cfg, opts, batch):
        return True  # one token a pass through model.decode

    def describe(self, cfg, opts, brief=False):
        return "AR, a token a pass" if brief else "AR + KV cache"
