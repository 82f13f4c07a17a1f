"""The network's KV-cached decoding, one token a pass: the cache (KVCache), a pass written into it (decode), sampling
with it past the context (generate, nanoGPT's generate) and the one-token step compiled for sampling (compile_decode).
Shared by the objectives that decode causally: the AR baseline (ar.py), a dual-trained network's AR mode
(diffusion.py's --dual_sample) and block diffusion's clean half at batch > 1 (bd3.py). model.py stays the network: it
reads a cache it is handed (Attention's kv_cache) and builds none.

    from decode import generate
    out = generate(model, prompt, 100, temperature=0.8, top_k=50)   # prompt (B, P) -> (B, P + 100)
"""
import torch

from common import filter_logits, sample_tokens


class KVCache:
    """Per-layer key/value buffers over the context for causal decoding (decode), (B, H, context, D) each,
    preallocated in the keys' dtype; pos, on the device, counts the columns written. update writes a pass's keys and
    values at pos (index_copy_) and returns what the pass reads: static, the whole buffers (the pass's mask hides the
    keys not written yet), so that no shape changes from one token to the next and a CUDA graph can replay a step
    (compile_decode; the buffers are marked static for torch.compile, which writes into them in place); else the
    first `end` columns, the keys written, counted on the host: eager decoding's (the whole cache measured 2-15 %
    slower on a CPU, 2026-11-27: 4/4/128 to 6/6/384, batch 1 and 16)."""

    def __init__(self, n_layer, batch, n_head, size, head_dim, device, dtype, static):
        shape = (batch, n_head, size, head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.pos, self.layer = torch.zeros((), dtype=torch.long, device=device), 0
        self.cols, self.static = torch.arange(size, device=device), static  # cols: every column's position
        for t in (*self.k, *self.v, self.pos):
            torch._dynamo.mark_static_address(t)
        self.reset()

    def reset(self):
        """Empty: the next pass writes from column 0 (a new decode, or the window's slide)."""
        self.pos.zero_()
        self.end = len(self.cols) if self.static else 0

    def update(self, k, v):
        i, at = self.layer, self.pos + self.cols[:k.size(2)]  # this pass's positions
        # in the cache's dtype: under autocast keys may come in float32 (qk_norm), and attention reads them in bf16
        self.k[i].index_copy_(2, at, k.to(self.k[i].dtype))
        self.v[i].index_copy_(2, at, v.to(self.v[i].dtype))
        self.layer = (i + 1) % len(self.k)
        return self.k[i][:, :, :self.end], self.v[i][:, :, :self.end]


def new_kv_cache(model, batch, device):
    """The KVCache of a decode over model's context for `batch` rows, empty: static where a compiled decode step
    replays it, in the dtype the keys will have (autocast's where it is on: the cache is not cast whole at every token;
    else the weights'). Kept on the model (model.decode_cache) and handed to the next decode of the same kind: a CUDA
    graph replays a step on the buffers it was recorded with."""
    a, c, device = model.args, model.decode_cache, torch.device(device)
    on = torch.amp.is_autocast_available(device.type) and torch.is_autocast_enabled(device.type)  # (meta: none)
    dtype = torch.get_autocast_dtype(device.type) if on else model.tok_emb.weight.dtype
    static = model.compiled_decode is not None  # where a compiled step replays it
    if c is None or (c.k[0].shape[0], c.k[0].device, c.k[0].dtype, c.static) != (batch, device, dtype, static):
        c = KVCache(a.n_layer, batch, a.n_head, a.block_size, a.n_embd // a.n_head, device, dtype, static)
        model.decode_cache = c
    c.reset()
    return c


def decode(model, idx, cache):
    """A pass of idx (B, n) through model, the columns after those cache (a KVCache) holds, written into it: each
    column sees the cache and the columns up to its own (causal, whatever the network trained: a bidirectional one's
    AR mode is --dual_sample's). Returns the last column's logits (B, V), float32. On a static cache its shapes depend
    on n alone (the positions read on the device, attention over the whole cache masked to the keys written), so a
    CUDA graph replays a one-token step (model.compiled_decode: compile_decode)."""
    n = idx.size(1)
    pos = cache.pos + cache.cols[:n]  # (n,) each column's position
    if not cache.static:  # the keys written alone: one column reads them all, unmasked
        cache.end += n
    seen = None if n == 1 and not cache.static else cache.cols[:cache.end] <= pos[:, None]  # (n, keys)
    logits = model(idx, kv_cache=cache, rope_pos=pos, attn_mask=seen)[:, -1]
    cache.pos += n
    return logits


@torch.no_grad()
def generate(model, prompt, gen_len, *, temperature=1.0, top_k=0, top_p=1.0, generator=None, mask_id=None,
             on_token=None):
    """Autoregressive sampling with a KV cache (nanoGPT's generate): one forward per token, the prompt's in one
    pass. Past the context, by the same window as bd3's sampler: when the next token does not fit, keep the last
    half of the window and recompute its cache in one pass (which gives the next token's logits). prompt (B, P),
    P >= 1. The draw's settings come by name, as nanoGPT's (temperature, top_k; top_p too): below the samplers, it
    takes no sampler's options object. mask_id: a token never drawn ([MASK] is in the vocabulary but never a target:
    ~2e-5 of an AR's draws at baby were it). A bidirectional network's AR mode (diffusion.py's --dual_sample) reads
    its context with the causal mask the AR's attention implies (decode). Draws in float64 (common.sample_tokens),
    after each step, outside its graph when compiled. on_token(tokens so far, the filtered logits the last one was
    drawn from) after each token. Returns (B, P + gen_len)."""
    (B, P), W = prompt.shape, model.args.block_size
    seq, lo = prompt, max(0, P - W)
    step = model.compiled_decode or decode  # a token a call: the CUDA graph when compiled
    cache = new_kv_cache(model, B, prompt.device)
    logits = decode(model, seq[:, lo:], cache)  # the prompt's pass, eager (its length varies)
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
        if seq.size(1) - lo > W:  # no room for this token: slide the window, its kept half's cache recomputed
            lo = seq.size(1) - W // 2
            cache.reset()
            logits = decode(model, seq[:, lo:], cache)
        else:
            logits = step(model, nxt[:, None], cache)
    return seq


def compile_decode(model, cfg, device):
    """--compile for sampling (config.compile), where train.py compiles its step (utils.dist.compile_step): 'auto' on
    CUDA, 'true' anywhere. What is compiled is the one-token step of KV-cached decoding (decode: the AR's token,
    --dual_sample's, bd3's clean half at batch > 1), whole (fullgraph) at static shapes, a graph per batch size, with
    CUDA graphs on CUDA (mode 'reduce-overhead': a step replays as one graph instead of ~220 launches); its cache is
    then the static one. Eager still: the prompt's pass and the window's recomputing one (their lengths vary), the
    draw after each step (common.filter_logits and common.draw, whose device generator is seeded by a CPU draw each
    time), the diffusion samplers' passes and bd3's speculative round (its columns vary by round). Sets
    model.compiled_decode, which generate and bd3's clean half call as decode(model, idx, cache)."""
    device = torch.device(device)
    if cfg.compile == "true" or (cfg.compile == "auto" and device.type == "cuda"):
        mode = "reduce-overhead" if device.type == "cuda" else None
        model.compiled_decode = torch.compile(decode, mode=mode, fullgraph=True, dynamic=False)
