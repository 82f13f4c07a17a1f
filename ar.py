"""The autoregressive baseline, trained and scored by the same code as the diffusion objectives: the same network
with causal attention, the next-token loss (its exact NLL), and KV-cached decoding, also past the context.

    python train.py cpu --objective=ar
    python inference.py --checkpoint artifacts/models/cpu_ar/model.pt --prompt "ROMEO:"
"""
import torch
import torch.nn.functional as F

from common import filter_logits, sample_tokens


def ar_loss(model, x):
    """Next-token loss of the causal baseline. x (B, L+1): predict x[:, 1:] from x[:, :-1].
    Returns (loss, per-sequence NLL in nats/token (B,))."""
    logits = model(x[:, :-1])
    nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), x[:, 1:].reshape(-1), reduction="none")
    nll = nll.view(x.size(0), -1).mean(1)
    return nll.mean(), nll.detach()


@torch.no_grad()
def sample_ar(model, prompt, gen_len, temperature=1.0, top_k=0, top_p=1.0, generator=None):
    """Autoregressive sampling with a KV cache. prompt (B, P) with P >= 1. Returns (B, P + gen_len)."""
    B, P = prompt.shape
    assert P + gen_len <= model.args.block_size, "AR sampling beyond block_size: use sample_ar_window"
    cache = model.new_kv_cache(B, prompt.device, next(model.parameters()).dtype)
    logits = model(prompt, kv_cache=cache)[:, -1]
    out = [prompt]
    for i in range(gen_len):
        nxt = sample_tokens(filter_logits(logits, temperature, top_k, top_p), temperature, generator)
        out.append(nxt[:, None])
        if i + 1 < gen_len:
            logits = model(nxt[:, None], kv_cache=cache, start_pos=P + i)[:, -1]
    return torch.cat(out, 1)


@torch.no_grad()
def sample_ar_window(model, prompt, gen_len, temperature=1.0, top_k=0, top_p=1.0, generator=None, keep=None):
    """AR decoding with a KV cache, past the context by the same window as sample_bd3: when the next token does not
    fit, keep the last `keep` tokens (default half the window) and recompute their cache in one pass. Within the
    context it is sample_ar step for step: one forward per token (a recompute replaces one).
    prompt (B, P), P >= 1. Returns (B, P + gen_len)."""
    B, P = prompt.shape
    W = model.args.block_size
    keep = keep or W // 2
    seq, lo = prompt, max(0, P - W)

    def restart(lo):  # a fresh cache over seq[:, lo:]; the logits of the next token
        cache = model.new_kv_cache(B, prompt.device, next(model.parameters()).dtype)
        return cache, model(seq[:, lo:], kv_cache=cache)[:, -1]

    cache, logits = restart(lo)
    for i in range(gen_len):
        nxt = sample_tokens(filter_logits(logits, temperature, top_k, top_p), temperature, generator)
        seq = torch.cat([seq, nxt[:, None]], 1)
        if i + 1 == gen_len:
            break
        if seq.size(1) - lo > W:  # no room for this token: slide the window
            lo = seq.size(1) - keep
            cache, logits = restart(lo)
        else:
            logits = model(nxt[:, None], kv_cache=cache, start_pos=seq.size(1) - 1 - lo)[:, -1]
    return seq


# ---------------------------------------------------------------------------- the objective (objectives.py)
MODEL = dict(causal=True, time_cond="none")
WINDOW = 1  # a training window of L + 1 tokens scores its last L
IGNORES = dict.fromkeys(  # no diffusion: no time, no schedule, no reverse sampler
    ("time_cond", "loss_type", "schedule", "diffusion_steps", "mask_span", "head_on_masked_only", "steps", "order",
     "tokens_per_step", "remask", "remask_eta", "threshold", "semi_ar_length", "bd3_block", "bd3_mask_min",
     "bd3_mask_max"), "an AR model predicts the next token: no noise, time, schedule or reverse steps")
CONTINUES_ONLY = EXACT = True  # continues a prompt; its score is the exact NLL, not a bound
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
    out = sample_ar(model, x[:, :P], x.size(1) - P, cfg.temperature, cfg.top_k, cfg.top_p, generator)
    return out, dict(nfe=x.size(1) - P, nfe_per_sample=[x.size(1) - P] * len(x))


def passes(cfg, n_gen, n_prompt=0):
    return n_gen


def describe(cfg):
    return "AR + KV cache"
