"""Block-diffusion decoding (BD3-LM, Arriola et al. 2025): left to right, one block of L' tokens at a time, each
block denoised by today's reverse sampler (sampler.sample, with every one of its switches) against a KV cache of
the clean blocks before it, so a reverse step costs one block, not the context. Past the model's context the
window slides; AR decoding past the context (the baseline that bd3 is timed against) uses the same window.

The window. Training saw windows of block_size tokens cut into blocks aligned to the window's start, so decoding
keeps one: the noisy block and the clean context before it sit inside a window of block_size tokens, with RoPE
positions 0..block_size-1. When the next block does not fit, the window jumps forward and keeps only its last
`keep` tokens (whole blocks; half the window by default), whose keys/values are recomputed once from scratch.
So every reverse step sees exactly what the same network sees in training (the noisy last block of a window),
and the cached decode equals an uncached one (cache=False recomputes the window at every step) at any length.
A finished block enters the cache in the next block's first step (one pass of 2 L' tokens, no extra forward).

    python inference.py --checkpoint artifacts/models/baby_bd3/model.pt --prompt "ROMEO:" --gen-len 600
"""
import time
from functools import lru_cache

import torch

from diffusion_bd3 import bd3_logits
from model import block_causal_mask
from sampler import filter_logits, sample, sample_tokens


class CleanCache:
    """Keys/values of the clean context, per layer (B, H, n, D), and its token ids (B, n). model.Attention calls
    update(k, v) once per layer with the new columns' keys/values (after RoPE); it gets [cached ; new] back. Of
    the new columns the first `store` (clean blocks entering the context) are kept; a noisy block's never are."""

    def __init__(self, n_layer):
        self.k, self.v = [None] * n_layer, [None] * n_layer
        self.layer, self.store, self.rows = 0, 0, None
        self.ids = None

    def __len__(self):
        return 0 if self.ids is None else self.ids.size(1)

    def update(self, k, v):
        i = self.layer
        self.layer = (i + 1) % len(self.k)
        n = self.store
        if self.k[i] is not None:
            n += self.k[i].size(2)
            ck, cv = (self.k[i], self.v[i]) if self.rows is None else (self.k[i][self.rows], self.v[i][self.rows])
            k, v = torch.cat([ck, k], 2), torch.cat([cv, v], 2)
        if self.store:
            self.k[i], self.v[i] = k[:, :, :n], v[:, :, :n]
        return k, v


@lru_cache(maxsize=64)
def pending_mask(n0, m, block, device):
    """Attention of one pass over [m pending clean columns ; a noisy block] after n0 cached ones: (m + block,
    n0 + m + block) bool. The clean columns see the cache and each other block-causally (as the clean half in
    training), never the noisy block; the noisy block sees everything."""
    mask = torch.ones(m + block, n0 + m + block, dtype=torch.bool, device=device)
    mask[:m, n0:n0 + m] = block_causal_mask(m, block, device)
    mask[:m, n0 + m:] = False
    return mask


class CachedBlockModel:
    """What sampler.sample calls as its model while it denoises one block: it is handed the window (clean context,
    then the block) and returns logits for positions inside the block, running only the block through the network
    against the cached context. Context the cache lacks (the prompt, the block finished last, a window recomputed
    after a jump) rides along in the same pass and enters the cache: no extra forward. sample() may pass a subset
    of the rows (threshold decoding drops finished samples); their cache rows are found by their context ids
    (rows with equal ids have equal keys/values)."""

    def __init__(self, model, cache, block):
        self.model, self.cache, self.block, self.args = model, cache, block, model.args

    def __call__(self, idx, t=None, positions=None):
        kv, n0 = self.cache, len(self.cache)
        m = idx.size(1) - self.block - n0  # clean columns not yet cached
        assert m >= 0 and m % self.block == 0 and n0 % self.block == 0, "the cache holds whole blocks of the window"
        if n0 and (idx.size(0) != kv.ids.size(0) or not torch.equal(idx[:, :n0], kv.ids)):
            assert not m, "new context enters the cache with every row"
            same = (idx[:, None, :n0] == kv.ids[None]).all(-1)  # (R, B)
            assert same.any(1).all(), "a row's context is not in the cache"
            kv.rows = same.float().argmax(1)
        if positions is not None:
            assert not positions[:, :n0 + m].any(), "only the noisy block is decided"
            positions = positions[:, n0:]
        mask = pending_mask(n0, m, self.block, idx.device) if m else None
        kv.store = m
        try:
            logits = self.model(idx[:, n0:], kv_cache=kv, start_pos=n0, attn_mask=mask, positions=positions)
        finally:
            kv.store, kv.rows = 0, None
        if m:
            kv.ids = idx[:, n0:n0 + m] if kv.ids is None else torch.cat([kv.ids, idx[:, n0:n0 + m]], 1)
        if positions is None:  # the window's shape, zeros over the context
            logits = torch.cat([logits.new_zeros(idx.size(0), n0, logits.size(-1)), logits[:, m:]], 1)
        return logits


class WindowBlockModel:
    """The uncached reference: every call runs the two-stream training pass over the whole window
    ([x_t ; x_0] with the context clean in x_0 and the block noisy in x_t), and keeps the block's logits."""

    def __init__(self, model, block, mask_id):
        self.model, self.block, self.mask_id, self.args = model, block, mask_id, model.args

    def __call__(self, idx, t=None, positions=None):
        n = idx.size(1) - self.block
        xt = torch.cat([torch.full_like(idx[:, :n], self.mask_id), idx[:, n:]], 1)  # noisy context: never read
        x0 = torch.cat([idx[:, :n], torch.zeros_like(idx[:, n:])], 1)  # clean block: only later blocks read it
        logits = bd3_logits(self.model, xt, x0, self.block, self.mask_id)  # (R, n + block, V)
        return logits if positions is None else logits[positions]


def default_keep(W, block):
    """Clean tokens the window keeps when it jumps: half of it in whole blocks (none when a block fills it)."""
    return min((W // 2) // block * block, W - block)


def to_full(info, out, gen_all, conf_all, lo, hi, width, b, n_blocks, step0, nfe0):
    """sample()'s per-step dict for the window [lo, hi) -> the same dict over the whole output's first `width`
    columns (earlier blocks as committed, later ones still [MASK]); steps and NFE counted from the start."""
    def put(base, w):
        full = base.clone()
        full[:, lo:hi] = w
        return full[:, :width]

    zeros = torch.zeros_like(gen_all)
    conf_all[:, lo:hi] = info["conf"]  # the trace colours every committed token by its confidence, old blocks too
    last = b == n_blocks - 1
    return dict(info, x=put(out, info["x"]), prev=put(out, info["prev"]), revealed=put(zeros, info["revealed"]),
                remasked=put(zeros, info["remasked"]), is_masked_before=put(zeros, info["is_masked_before"]),
                gen_mask=gen_all[:, :width], conf=conf_all[:, :width].clone(), step=step0 + info["step"],
                nfe=nfe0 + info["nfe"], block=b, n_blocks=n_blocks, last=info["last"] and last,
                finished=[f and last for f in info["finished"]])


@torch.no_grad()
def sample_bd3(model, prompt, gen_len, block, schedule, mask_id, steps, temperature=1.0, top_k=0, top_p=1.0,
               remask="refine", generator=None, on_step=None, *, keep=None, cache=True, **options):
    """Continue prompt (B, P) by gen_len tokens, block by block. steps: reverse steps per block (at most its number
    of generated tokens); options: sampler.sample's other switches (order, tokens_per_step, remask_eta, threshold).
    tokens_per_step='schedule' becomes 'linear' (no greedy last step per block; see below).
    Blocks are whole: the first one may hold the prompt's last tokens (fixed), and the last one is generated in
    full and cut. on_step gets sample()'s dict in the coordinates of the whole output (B, P + gen_len), with
    block / n_blocks / nfe / step counted over the whole generation. cache=False: the uncached reference.
    Returns (tokens (B, P + gen_len), stats: nfe (batched forward passes), nfe_per_sample, seconds,
    seconds_per_sample, blocks)."""
    B, P = prompt.shape
    W, dev, t0 = model.args.block_size, prompt.device, time.perf_counter()
    if W % block or options.get("block_length"):
        raise ValueError(f"block {block} must divide the context {W}; semi-AR block_length does not apply to bd3")
    if options.get("tokens_per_step", "schedule") == "schedule" and not options.get("threshold"):
        # sample()'s schedule counts end each call with a greedy pass (the reference's step into t = 0): once per
        # block here, that would make every L'-th token an argmax (every token at L' = 1). Equal counts instead.
        options = dict(options, tokens_per_step="linear")
    keep = default_keep(W, block) if keep is None else keep
    assert keep % block == 0 and 0 <= keep <= W - block, f"keep={keep} must be whole blocks that leave room for one"
    total = -(-(P + gen_len) // block) * block  # whole blocks
    out = torch.cat([prompt, torch.full((B, total - P), mask_id, dtype=prompt.dtype, device=dev)], 1)
    gen_all = torch.arange(total, device=dev)[None].expand(B, -1) >= P  # (B, total)
    conf_all = torch.zeros(B, total, dtype=torch.float64, device=dev)
    first = P // block * block  # the first block holding a generated position
    n_blocks = (total - first) // block
    nfe, steps_done, start = torch.zeros(B, dtype=torch.long), 0, 0
    denoiser = CachedBlockModel(model, CleanCache(model.args.n_layer), block) if cache else WindowBlockModel(model, block, mask_id)
    for b, pos in enumerate(range(first, total, block)):
        if pos - start + block > W:  # the block does not fit: jump, keeping the last `keep` clean tokens
            start = pos - keep
            denoiser.cache = CleanCache(model.args.n_layer)  # refilled, with the kept tokens, by the block's first step
        lo, hi = start, pos + block

        def block_step(info, lo=lo, hi=hi, b=b):
            if on_step is not None:
                on_step(to_full(info, out, gen_all, conf_all, lo, hi, P + gen_len, b, n_blocks, steps_done, nfe))

        now = gen_all[:, lo:hi].clone()
        now[:, :pos - lo] = False  # the context is fixed text to sample(): only this block is generated
        n_gen = int(now[0].sum())
        x, st = sample(denoiser, out[:, lo:hi], now, schedule, mask_id, min(steps, n_gen), temperature,
                       top_k, top_p, remask, generator, block_step, **options)
        out[:, lo:hi] = x
        nfe += torch.tensor(st["nfe_per_sample"])
        steps_done += st["nfe"]
    seconds = time.perf_counter() - t0
    return out[:, :P + gen_len], dict(nfe=steps_done, nfe_per_sample=nfe.tolist(), seconds=seconds,
                                      seconds_per_sample=[seconds] * B, blocks=n_blocks)


@torch.no_grad()
def sample_ar_window(model, prompt, gen_len, temperature=1.0, top_k=0, top_p=1.0, generator=None, keep=None):
    """AR decoding with a KV cache, past the context by the same window as sample_bd3: when the next token does not
    fit, keep the last `keep` tokens (default half the window) and recompute their cache in one pass. Within the
    context it is sampler.sample_ar step for step: one forward per token (a recompute replaces one).
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
