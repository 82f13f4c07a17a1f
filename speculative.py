"""Speculative decoding of the AR baseline with a masked-diffusion drafter: exact AR samples in fewer AR passes.

Each round the drafter reads the text so far and k [MASK]s and drafts the k next tokens in one pass (each from its
marginal q_i); the AR scores the last token and the drafts in one cached pass: its conditional p_i at every draft
position and one more. Draft i is kept with probability min(1, p_i / q_i) while every earlier one was; the first
rejected is redrawn from max(0, p_i - q_i) (normalised), and when all k are kept the AR draws a bonus token. Whatever
q is, every token is distributed as the AR's p given those before it (Leviathan et al. 2023; Chen et al. 2023): the
AR's own samples at its temperature / top-k / top-p, only the speed depends on the drafter. APD (Israel et al. 2025,
arXiv 2506.00413) drafts with a diffusion model the same way.

A batch advances together, so one KV cache serves all rows: each round every row emits as many tokens as the row
that kept fewest. Stopping a row early never biases it: each token is p-distributed given what precedes it.

    python train.py baby_draft     # the drafter: one layer, ~30 s of training
    python inference.py --checkpoint artifacts/models/baby_ar/model.pt --draft artifacts/models/baby_draft/model.pt \
        --draft_len 2
"""
import torch

from common import filter_logits
from utils.checkpoint import load_model
from utils.errors import UserError

_DRAFTERS = {}  # (path, device) -> drafter network: loaded once per process, on first use


def load_drafter(path, device, vocab_size):
    """The drafter network of `path` (a masked-diffusion checkpoint without a time input), checked against the AR's
    vocabulary; loaded once per process."""
    key = (str(path), str(device))
    if key not in _DRAFTERS:
        model, ckpt = load_model(path, device)
        c = ckpt["config"]
        if c.get("objective", "mdlm") != "mdlm" or model.args.time_cond != "none":
            raise UserError(f"--draft {path} is a {c.get('objective')} model with time_cond={model.args.time_cond}: "
                            f"the drafter is a masked-diffusion model without a time input (train.py baby_draft)")
        _DRAFTERS[key] = model
    model = _DRAFTERS[key]
    if model.args.vocab_size != vocab_size:
        raise UserError(f"--draft {path} has a vocabulary of {model.args.vocab_size}, the AR {vocab_size}: draft "
                        f"with a model trained with the AR's tokenizer")
    return model


def probs(logits, temperature, top_k, top_p):
    """The sampling distribution (..., V) float64 of logits under the sampler's settings (argmax one-hot at 0)."""
    if temperature == 0:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.size(-1)).double()
    return filter_logits(logits, temperature, top_k, top_p).exp()


def draw(p, generator):
    """One index per row of probabilities p (..., V), on the CPU."""
    return torch.multinomial(p.reshape(-1, p.size(-1)).cpu(), 1, generator=generator).view(p.shape[:-1])


def keep_or_redraw(p, q, drafts, generator):
    """The round's tokens (B, j + 1) from the AR's p (B, k + 1, V) and the drafter's q (B, k, V) of drafts (B, k), j the
    fewest drafts any row kept: token j is each row's redraw from the residual max(0, p_j - q_j) (a row that kept draft
    j keeps it), or the bonus draw from p_k when every row kept all k (p of k rows has no bonus: the k drafts)."""
    B, k = drafts.shape
    if k == 0:
        return draw(p[:, 0], generator)[:, None]
    drafts = drafts.cpu()
    pd, qd = p[:, :k].gather(-1, drafts[..., None])[..., 0], q.gather(-1, drafts[..., None])[..., 0]
    u = torch.rand(B, k, generator=generator, dtype=torch.float64)
    kept = (u * qd < pd).long().cumprod(1).sum(1)  # (B,) drafts kept before the first rejection
    j = int(kept.min())
    if j == k and p.size(1) == k:
        return drafts
    if j == k:
        last = draw(p[:, k], generator)
    else:
        resid = (p[:, j] - q[:, j]).clamp(min=0)
        resid = torch.where(resid.sum(-1, keepdim=True) > 0, resid, p[:, j])  # p = q: nothing to correct
        last = torch.where(kept > j, drafts[:, j], draw(resid, generator))
    return torch.cat([drafts[:, :j], last[:, None]], 1)


def drafts_of(drafter, seq, k, mask_id, settings, generator):
    """k draft tokens (B, k) after seq and their distributions q (B, k, V): one drafter pass over the last tokens
    of seq (as many as its context holds with the k [MASK]s)."""
    ctx = seq[:, -(drafter.args.block_size - k):]
    x = torch.cat([ctx, torch.full((len(seq), k), mask_id, dtype=seq.dtype, device=seq.device)], 1)
    logits = drafter(x)[:, -k:]
    logits[..., mask_id] = float("-inf")  # a draft is never [MASK]
    q = probs(logits, *settings).cpu()
    return draw(q, generator).to(seq.device), q


@torch.no_grad()
def sample_speculative(model, drafter, prompt, gen_len, k, mask_id, settings=(1.0, 0, 1.0), generator=None, on_round=None):
    """Continue prompt (B, P) by gen_len tokens from the AR `model`, k tokens drafted a round by `drafter`; settings
    = (temperature, top_k, top_p) of both. The AR's window is ar.sample_ar_window's (restart over the last half of
    its context when the next token does not fit; a round never crosses a restart), so at temperature 0 the tokens
    are that function's. Returns (tokens (B, P + gen_len), stats: nfe (passes of both networks), ar_passes,
    draft_passes, kept: drafts kept per drafting round, mean; in a batch, its slowest row's). `model` may be a
    bidirectional network's AR mode (diffusion.py's --dual_sample): its context
    pass then gets the causal mask the AR's attention implies. on_round(tokens so far, passes so far) after each round."""
    (B, P), W = prompt.shape, model.args.block_size
    seq, lo, cache, dev = prompt, max(0, P - W), None, prompt.device
    ar_passes = draft_passes = kept = 0
    while seq.size(1) < P + gen_len:
        S = seq.size(1)
        if cache is None or S - lo > W:  # the first round, or no room for the next token: a fresh window
            lo = lo if cache is None else S - W // 2
            cache = model.new_kv_cache(B, dev, next(model.parameters()).dtype)
            if S - 1 > lo:  # the context before the last token
                m = S - 1 - lo
                causal = None if model.args.causal else torch.ones(m, m, dtype=torch.bool, device=dev).tril()
                model(seq[:, lo:-1], kv_cache=cache, attn_mask=causal)
        kr = min(k, P + gen_len - S - 1, W - (S - lo))  # drafts this round: what is left, what the window holds
        drafts, q = drafts_of(drafter, seq, kr, mask_id, settings, generator) if kr else (seq[:, :0], None)
        n = cache.pos
        # each new column sees the cache and the new columns up to itself
        causal = torch.ones(kr + 1, n + kr + 1, dtype=torch.bool, device=dev).tril(n)
        logits = model(torch.cat([seq[:, -1:], drafts], 1), kv_cache=cache, start_pos=n, attn_mask=causal)
        logits[..., mask_id] = float("-inf")  # as ar.sample_ar_window: the AR never emits [MASK]
        new = keep_or_redraw(probs(logits, *settings).cpu(), q, drafts, generator).to(dev)
        cache.pos = n + new.size(1)  # the last token and the kept drafts; the token just emitted enters next round
        seq = torch.cat([seq, new], 1)
        ar_passes, draft_passes, kept = ar_passes + 1, draft_passes + (kr > 0), kept + (new.size(1) - 1 if kr else 0)
        if on_round is not None:
            on_round(seq, ar_passes + draft_passes)
    return seq, dict(nfe=ar_passes + draft_passes, nfe_per_sample=[ar_passes + draft_passes] * B, ar_passes=ar_passes,
                     draft_passes=draft_passes, kept=kept / max(draft_passes, 1))
