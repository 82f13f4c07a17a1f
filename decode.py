"""The network's KV-cached decoding, one token a pass: KVCache, decode, generate (past the context,
as nanoGPT's), compile_decode; for the AR, --dual_sample and bd3's clean half (and its rounds)."""
import torch
import torch.nn.functional as F

from common import Step, filter_logits, sample_tokens

DECODERS = "the AR, --dual_sample and bd3's --bd3_speculate run it"  # objective.decodes


class KVCache:
    """Per-layer key/value buffers (B, H, context, D), pos (on the device) the columns written.
    Static: update writes at pos, returns whole buffers (the mask hides unwritten keys: a CUDA graph
    replays it); else it slices a pass in before `end` (host-counted), returns the first `end`."""

    def __init__(self, n_layer, batch, n_head, size, head_dim, device, dtype, static):
        shape = (batch, n_head, size, head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.pos, self.layer = torch.zeros((), dtype=torch.long, device=device), 0
        self.cols, self.static = torch.arange(size, device=device), static  # each column's position
        if static:  # for torch.compile, whose import an eager run need not pay (~2 s)
            for t in (*self.k, *self.v, self.pos):
                torch._dynamo.mark_static_address(t)
        self.reset()

    def reset(self, n=0):
        """Keep the first n columns: 0 empties it (a new decode, the window's slide); bd3's drafting
        round keeps its newest token and the drafts it accepted."""
        self.pos.fill_(n)
        self.end = len(self.cols) if self.static else n

    def update(self, k, v):
        i, m = self.layer, k.size(2)
        # in the cache's dtype: under autocast qk_norm's keys may be float32; attention reads bf16
        if self.static:
            at = self.pos + self.cols[:m]  # this pass's positions
            self.k[i].index_copy_(2, at, k.to(self.k[i].dtype))
            self.v[i].index_copy_(2, at, v.to(self.v[i].dtype))
        else:
            self.k[i][:, :, self.end - m:self.end], self.v[i][:, :, self.end - m:self.end] = k, v
        self.layer = (i + 1) % len(self.k)
        return self.k[i][:, :, :self.end], self.v[i][:, :, :self.end]


def new_kv_cache(model, batch, device):
    """An empty KVCache for `batch` rows: static under a compiled step, in autocast's dtype (no cast
    a token); kept as model.decode_cache, as a CUDA graph replays on the buffers it recorded."""
    a, c, device = model.args, model.decode_cache, torch.device(device)
    on = torch.amp.is_autocast_available(device.type) and torch.is_autocast_enabled(device.type)  # (meta: none)
    dtype = torch.get_autocast_dtype(device.type) if on else model.tok_emb.weight.dtype
    static = model.compiled_decode is not None
    if c is None or (c.k[0].shape[0], c.k[0].device, c.k[0].dtype, c.static) != (batch, device, dtype, static):
        c = KVCache(a.n_layer, batch, a.n_head, a.block_size, a.n_embd // a.n_head, device, dtype, static)
        model.decode_cache = c
    c.reset()
    return c


def decode(model, idx, cache):
    """A causal pass of idx (B, n) after the cache's columns, written into it: the last column's
    logits (B, V) float32. On a static cache shapes depend on n alone (a CUDA graph replays)."""
    n = idx.size(1)
    pos = cache.pos + cache.cols[:n]  # (n,) each column's position
    if not cache.static:  # only the keys written: one column reads them all, unmasked
        cache.end += n
    seen = None if n == 1 and not cache.static else cache.cols[:cache.end] <= pos[:, None]  # (n, keys)
    logits = model(idx, kv_cache=cache, rope_pos=pos, attn_mask=seen)[:, -1]
    cache.pos += n
    return logits


@torch.no_grad()
def generate(model, prompt, gen_len, opts=None, generator=None, mask_id=None, on_token=None):
    """Sample gen_len tokens after prompt (B, P >= 1) with a KV cache, as nanoGPT's generate: one
    pass a token. Past the context, keep the window's last half and recompute its cache. opts:
    temperature, top_k, top_p (None: T = 1, no filter); mask_id: never drawn (never a target, yet
    ~2e-5 of an AR's draws); on_token(seq, filtered logits) a token. Returns (B, P + gen_len)."""
    temperature, top_k, top_p = (1.0, 0, 1.0) if opts is None else (opts.temperature, opts.top_k, opts.top_p)
    (B, P), W = prompt.shape, model.args.block_size
    seq, lo = prompt, max(0, P - W)
    step = model.compiled_decode or decode  # the CUDA graph when compiled
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
        if seq.size(1) - lo > W:  # no room: slide the window, recompute its kept half's cache
            lo = seq.size(1) - W // 2
            cache.reset()
            logits = decode(model, seq[:, lo:], cache)
        else:
            logits = step(model, nxt[:, None], cache)
    return seq


def ordered_step(prev, seq, P, L, n, mask_id, p, conf=None):
    """A pass of ordered decoding (the AR's token, a bd3 round) as a Step over L tokens: seq (B, S)
    so far ([MASK] after), prev before it, n passes, p (B, k, V) its k tokens' laws, conf (B, L)."""
    (B, S), dev = seq.shape, seq.device
    x = F.pad(seq, (0, L - S), value=mask_id)
    before = F.pad(prev, (0, L - prev.size(1)), value=mask_id)
    gen = (torch.arange(L, device=dev) >= P).expand(B, L)
    cols = torch.arange(prev.size(1), S, device=dev)  # the pass's new tokens
    at = (torch.arange(B, device=dev)[:, None] * L + cols).flatten()
    if conf is None:
        conf = torch.zeros(B, L, dtype=torch.float64, device=dev)
    return Step(step=n, nfe=torch.full((B,), n), time=torch.zeros(B, dtype=torch.long), x=x, prev=before,
                gen_mask=gen, revealed=x != before, remasked=torch.zeros_like(gen), conf=conf,
                finished=[S >= L] * B, law=(at, p[:, :S - prev.size(1)].flatten(0, 1).log()))


def prompt_length(x, gen_mask):
    """P, the given tokens of a continuation x (B, L): each row's first P, then blanks (none: L)."""
    P = int(gen_mask[0].long().argmax()) if gen_mask[0].any() else x.size(1)
    assert (gen_mask == gen_mask[:1]).all() and gen_mask[0, P:].all(), "one prompt length in every row, then blanks"
    return P


def generate_canvas(model, x, P, opts, generator=None, mask_id=None, on_step=None):
    """generate() over x (B, L) with P given tokens first, a Step a token: (x filled, stats)."""
    B, L = x.shape
    conf = torch.zeros(B, L, dtype=torch.float64, device=x.device)

    def token_done(seq, filtered):  # the drawn token's probability, then a Step of the canvas so far
        p = torch.softmax(filtered.double() / max(opts.temperature, 1e-9), -1)
        conf[:, seq.size(1) - 1] = p.gather(-1, seq[:, -1:]).squeeze(-1)
        on_step(ordered_step(seq[:, :-1], seq, P, L, seq.size(1) - P, mask_id, p[:, None], conf.clone()))

    out = generate(model, x[:, :P], L - P, opts, generator, mask_id, token_done if on_step else None)
    return out, dict(nfe=L - P, nfe_per_sample=[L - P] * B)


def compile_decode(model, cfg, device):
    """--compile for sampling ('auto': CUDA): compiled_decode (a token) and compiled_pass (bd3's
    drafting round), whole at static shapes, CUDA-graphed on CUDA (a replay, not ~220 launches)."""
    device = torch.device(device)
    if cfg.compile == "true" or (cfg.compile == "auto" and device.type == "cuda"):
        mode = "reduce-overhead" if device.type == "cuda" else None
        model.compiled_decode = torch.compile(decode, mode=mode, fullgraph=True, dynamic=False)
        model.compiled_pass = torch.compile(model.forward, mode=mode, fullgraph=True, dynamic=False)
