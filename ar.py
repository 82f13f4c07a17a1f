"""The autoregressive baseline, trained and scored by the same code as the diffusion objectives: the same network
with causal attention, the next-token loss (its exact NLL), and KV-cached decoding, also past the context.

    python train.py cpu --objective=ar
    python inference.py --checkpoint artifacts/models/cpu_ar/model.pt --prompt "ROMEO:"
"""
import torch
import torch.nn.functional as F

from common import filter_logits, sample_tokens
from sampler import REVEAL_KEYS


def ar_loss(model, x):
    """Next-token loss of the causal baseline. x (B, L+1): predict x[:, 1:] from x[:, :-1].
    Returns (loss, per-sequence NLL in nats/token (B,))."""
    logits = model(x[:, :-1])
    nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), x[:, 1:].reshape(-1), reduction="none")
    nll = nll.view(x.size(0), -1).mean(1)
    return nll.mean(), nll.detach()


@torch.no_grad()
def sample_ar_window(model, prompt, gen_len, temperature=1.0, top_k=0, top_p=1.0, generator=None, mask_id=None,
                     on_token=None):
    """Autoregressive sampling with a KV cache: one forward per token, the prompt's in one pass. Past the context, by
    the same window as sample_bd3: when the next token does not fit, keep the last half of the window and recompute
    its cache in one pass (which replaces a token's). prompt (B, P), P >= 1. mask_id: a token never drawn ([MASK] is
    in the vocabulary but never a target: ~2e-5 of an AR's draws at baby were it). A bidirectional network's AR mode
    (diffusion.py's --dual_sample) reads its context with the causal mask the AR's attention implies. on_token(tokens
    so far, the filtered logits the last one was drawn from) after each token. Returns (B, P + gen_len)."""
    (B, P), W = prompt.shape, model.args.block_size
    seq, lo = prompt, max(0, P - W)

    def restart(lo):  # a fresh cache over seq[:, lo:]; the logits of the next token
        cache, m = model.new_kv_cache(B, prompt.device, next(model.parameters()).dtype), seq.size(1) - lo
        causal = None if model.args.causal else torch.ones(m, m, dtype=torch.bool, device=prompt.device).tril()
        return cache, model(seq[:, lo:], kv_cache=cache, attn_mask=causal)[:, -1]

    cache, logits = restart(lo)
    for i in range(gen_len):
        if mask_id is not None:
            logits[:, mask_id] = float("-inf")
        filtered = filter_logits(logits, temperature, top_k, top_p)
        nxt = sample_tokens(filtered, temperature, generator)
        seq = torch.cat([seq, nxt[:, None]], 1)
        if on_token is not None:
            on_token(seq, filtered)
        if i + 1 == gen_len:
            break
        if seq.size(1) - lo > W:  # no room for this token: slide the window
            lo = seq.size(1) - W // 2
            cache, logits = restart(lo)
        else:
            logits = model(nxt[:, None], kv_cache=cache, start_pos=seq.size(1) - 1 - lo)[:, -1]
    return seq


# ---------------------------------------------------------------------------- the objective (objectives.py)
MODEL = dict(causal=True, time_cond="none", self_cond=False, clean_causal=False)
WINDOW = 1  # a training window of L + 1 tokens scores its last L
IGNORES = dict.fromkeys(("time_cond", "loss_type", "schedule", "diffusion_steps", "head_on_masked_only",
                         "steps", *REVEAL_KEYS, "bd3_block", "mask_min", "mask_max", "bd3_loss",
                         "bd3_speculate", "bd3_ar", "dual_ar", "dual_sample", "mask_ramp",
                         "mask_ramp_from", "self_cond", "mask_draws"),
                        "an AR model predicts the next token: no noise, time, schedule or reverse steps")
CONTINUES_ONLY = EXACT = ANY_LENGTH = True  # continues a prompt; scores the exact NLL; writes past the context
TRACE = False  # no denoising to watch


def loss(model, x, cfg, schedule, tok, draw):
    return ar_loss(model, x)[0]


def eval_times(cfg, L):
    return 0  # exact: no t to draw


def bound(model, x, cfg, schedule, tok, t, generator):
    """The exact NLL per window (B,) of x[:, 1:] given what precedes each token."""
    return ar_loss(model, x)[1], None


def sample(model, x, gen_mask, cfg, schedule, mask_id, generator=None, on_step=None):
    """Continue x's given prefix (at least one token: the canvas supplies a start token) over its blanks."""
    P = int(gen_mask[0].long().argmax())
    out = sample_ar_window(model, x[:, :P], x.size(1) - P, cfg.temperature, cfg.top_k, cfg.top_p, generator, mask_id)
    return out, dict(nfe=x.size(1) - P, nfe_per_sample=[x.size(1) - P] * len(x))


def passes(cfg, n_gen, n_prompt=0):
    return n_gen


def describe(cfg):
    return "AR + KV cache"
