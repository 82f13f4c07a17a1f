"""The network: a transformer with RoPE, parameter-free RMSNorm, relu^2 MLP and no biases;
bidirectional for diffusion, causal (one flag) for the AR baseline. The diffusion step t enters as
a learned embedding or through adaLN-Zero (time_cond). A mask and positions are handed in by the
objective (attn_mask=, rope_pos=: bd3.py); below the network, its KV-cached decoding (generate).

    python -c "from model import *; print(Transformer(ModelArgs(vocab_size=66)).num_params())"
    # 10706304: the reference micro-dLLM char model (65 characters + [MASK])
"""
import functools
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from config import CHOICES
from utils.draws import Law, draw_at, drawn_law, uniforms
from utils.steps import ordered_step

TIME_CONDS = CHOICES["time_cond"]


@dataclass
class ModelArgs:
    vocab_size: int
    block_size: int = 256
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384
    diffusion_steps: int = 100   # T; the time embedding has T+1 rows (t = 0..T)
    time_cond: str = "learned"   # 'learned' | 'adaln' | 'none'
    causal: bool = False         # True for the AR baseline
    dropout: float = 0.0         # training only: embeddings, attention weights and outputs, MLP output (nanoGPT)
    qk_norm: bool = False        # RMSNorm on queries and keys after RoPE (nanochat)
    self_cond: bool = False      # also read a previous prediction of x0 (probabilities, forward's sc=)
    tie_weights: bool = False    # the output head reuses the token embedding's matrix (no head of its own)
    clean_causal: bool = False   # bd3: the clean stream attends token-causally (it also learns next-token prediction)

    @classmethod
    def from_config(cls, cfg, vocab_size, **fixed):
        """The model a config describes; fixed: its objective's MODEL (what it fixes)."""
        return cls(**{**dict(vocab_size=vocab_size, block_size=cfg.block_size, n_layer=cfg.n_layer, n_head=cfg.n_head,
                             n_embd=cfg.n_embd, diffusion_steps=cfg.diffusion_steps, time_cond=cfg.time_cond,
                             dropout=cfg.dropout, qk_norm=cfg.qk_norm, self_cond=cfg.self_cond,
                             tie_weights=cfg.tie_weights, clean_causal=cfg.bd3_ar > 0), **fixed})


def dropout(p):
    """nn.Dropout(p), off in eval mode; p = 0 builds nothing (an identity: no draw, no op)."""
    return nn.Dropout(p) if p > 0 else nn.Identity()


def rms_norm(x):
    return F.rms_norm(x, (x.size(-1),))  # no learnable gain, as in the reference


def apply_rope(x, cos, sin):
    x1, x2 = x.chunk(2, dim=-1)  # x: (B, H, L, D); rotate the two halves of each head as pairs
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).type_as(x)


class Attention(nn.Module):
    def __init__(self, a: ModelArgs):
        super().__init__()
        self.n_head, self.causal, self.p_attn, self.qk_norm = a.n_head, a.causal, a.dropout, a.qk_norm
        self.qkv = nn.Linear(a.n_embd, 3 * a.n_embd, bias=False)
        self.proj = nn.Linear(a.n_embd, a.n_embd, bias=False)
        self.drop = dropout(a.dropout)

    def forward(self, x, cos, sin, kv_cache=None, attn_mask=None):
        B, L, C = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4)  # 3x (B, H, L, D)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if self.qk_norm:  # unit-RMS queries and keys: the attention logits' scale cannot drift (nanochat)
            q, k = rms_norm(q), rms_norm(k)
        if kv_cache is not None:  # cached decoding: this pass's keys/values written, the cache's read
            k, v = kv_cache.update(k, v)
        # causal only when the queries start at position 0 (a cached decode step sees all keys)
        is_causal = self.causal and q.size(2) == k.size(2) and q.size(2) > 1 and attn_mask is None
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal,
                                           dropout_p=self.p_attn if self.training else 0.0)  # dropout: on the weights
        return self.drop(self.proj(y.transpose(1, 2).reshape(B, L, C)))


class MLP(nn.Module):
    def __init__(self, a: ModelArgs):
        super().__init__()
        self.fc = nn.Linear(a.n_embd, 4 * a.n_embd, bias=False)
        self.proj = nn.Linear(4 * a.n_embd, a.n_embd, bias=False)
        self.drop = dropout(a.dropout)

    def forward(self, x):
        return self.drop(self.proj(F.relu(self.fc(x)).square()))  # relu^2 (Primer, So et al. 2021)


class Layer(nn.Module):
    """One transformer layer (nanoGPT's 'block'): attention then MLP, each pre-normed, residual."""

    def __init__(self, a: ModelArgs):
        super().__init__()
        self.attn, self.mlp = Attention(a), MLP(a)

    def forward(self, x, cos, sin, kv_cache=None, mod=None, attn_mask=None):
        if mod is None:
            x = x + self.attn(rms_norm(x), cos, sin, kv_cache, attn_mask)
            return x + self.mlp(rms_norm(x))
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = mod  # 6x (B, 1, C), from AdaLN
        x = x + gate_a * self.attn(rms_norm(x) * (1 + scale_a) + shift_a, cos, sin, kv_cache, attn_mask)
        return x + gate_m * self.mlp(rms_norm(x) * (1 + scale_m) + shift_m)


def timestep_embedding(t_frac, dim, max_period=10000.0):
    """Sinusoidal features (B, dim) of t/T in [0, 1], scaled by 1000 as DiT's integer steps. A
    fraction, not the index: the same features mean the same mask rate whatever T is."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t_frac.device) / half)
    args = 1000.0 * t_frac.float()[:, None] * freqs[None]  # (B, half)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class AdaLN(nn.Module):
    """adaLN-Zero (DiT: Peebles & Xie 2023): sinusoid(t/T) -> MLP -> c -> each layer's shift, scale
    and gate of its normalised input (6), and a final shift/scale before the head. Zero-initialised:
    every layer starts as the identity, blind to t; biases (as DiT's) let gates open at any t."""

    def __init__(self, a: ModelArgs):
        super().__init__()
        d, self.T = a.n_embd, a.diffusion_steps
        self.mlp = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.layers = nn.ModuleList(nn.Linear(d, 6 * d) for _ in range(a.n_layer))
        self.final = nn.Linear(d, 2 * d)

    def zero_init(self):
        for p in (*self.layers.parameters(), *self.final.parameters()):  # weights and biases
            nn.init.zeros_(p)

    def forward(self, t):
        """t (B,) integer steps -> (per layer 6x (B, 1, C), final (shift, scale) 2x (B, 1, C))."""
        c = F.silu(self.mlp(timestep_embedding(t / self.T, self.mlp[0].in_features)))  # (B, C)
        layers = [lin(c)[:, None].chunk(6, dim=-1) for lin in self.layers]
        return layers, self.final(c)[:, None].chunk(2, dim=-1)


class Transformer(nn.Module):
    def __init__(self, a: ModelArgs):
        super().__init__()
        assert a.n_embd % a.n_head == 0 and (a.n_embd // a.n_head) % 2 == 0 and a.time_cond in TIME_CONDS
        self.args, self.checkpointing = a, False  # checkpointing: train.py sets it (--activation_checkpointing)
        # generate's KV cache (new_kv_cache); compile_decode's compiler, what it compiled (replay)
        self.decode_cache, self.compiler, self.compiled = None, None, {}
        self.tok_emb = nn.Embedding(a.vocab_size, a.n_embd)
        self.time_emb = nn.Embedding(a.diffusion_steps + 1, a.n_embd) if a.time_cond == "learned" else None
        self.adaln = AdaLN(a) if a.time_cond == "adaln" else None
        # self-conditioning: E[x0's embedding] under the last prediction, by a projection from 0
        self.sc_proj = nn.Linear(a.n_embd, a.n_embd, bias=False) if a.self_cond else None
        # on the input embeddings' sum; p = 0: an identity (no draw), here and in each layer
        self.drop = dropout(a.dropout)
        self.layers = nn.ModuleList(Layer(a) for _ in range(a.n_layer))
        # tied: logits = x @ tok_emb.weight.T, [MASK]'s row too (its logit is -inf downstream)
        self.head = None if a.tie_weights else nn.Linear(a.n_embd, a.vocab_size, bias=False)
        # RoPE's cos/sin tables (block_size, head_dim/2) (Su et al. 2021)
        head_dim = a.n_embd // a.n_head
        inv_freq = 1.0 / 10000.0 ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        angles = torch.outer(torch.arange(a.block_size, dtype=torch.float32), inv_freq)
        self.register_buffer("rope_cos", angles.cos(), persistent=False)
        self.register_buffer("rope_sin", angles.sin(), persistent=False)
        # matrices and embeddings ~ N(0, 0.02) (GPT-2)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, mean=0.0, std=0.02)
        for name, p in self.named_parameters():  # scaled init of residual projections (GPT-2)
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * a.n_layer))
        if self.adaln is not None:
            self.adaln.zero_init()  # after the N(0, 0.02) loop, which would overwrite it
        if self.sc_proj is not None:
            nn.init.zeros_(self.sc_proj.weight)  # reads nothing at first: the network without it

    def forward(self, idx, t=None, kv_cache=None, positions=None, attn_mask=None, rope_pos=None, head_cols=None,
                sc=None):
        """idx (B, L); t (B,) step (unused if time_cond='none'); sc (B, L, V): self_cond's previous
        x0 probabilities (zero rows: none yet). attn_mask (L, L_keys) bool, True = may attend;
        rope_pos (L,): RoPE positions if not 0..L-1. Returns float32 logits (B, L, V), or (N, V) at
        flat `positions` (N,), or (B, head_cols, V) (a slice: no host sync, no graph break)."""
        L, W = idx.size(1), self.args.block_size
        assert t is not None or self.args.time_cond == "none", "time-conditioned model needs t"
        if rope_pos is None:
            assert L <= W, f"sequence of {L} exceeds block_size {W}"
            rope_pos = slice(0, L)
        cos, sin = self.rope_cos[rope_pos][None, None], self.rope_sin[rope_pos][None, None]
        x = self.tok_emb(idx)
        if self.time_emb is not None:
            x = x + self.time_emb(t)[:, None, :]
        if self.sc_proj is not None and sc is not None:
            x = x + self.sc_proj(sc.to(x.dtype) @ self.tok_emb.weight)
        mods, final = self.adaln(t) if self.adaln is not None else ([None] * len(self.layers), None)
        x = self.drop(x)
        recompute = self.checkpointing and self.training and torch.is_grad_enabled()
        for layer, mod in zip(self.layers, mods):
            if recompute:  # --activation_checkpointing: keep each layer's input, recompute its inside in backward
                x = torch.utils.checkpoint.checkpoint(layer, x, cos, sin, kv_cache, mod, attn_mask, use_reentrant=False)
            else:
                x = layer(x, cos, sin, kv_cache, mod, attn_mask)
        x = rms_norm(x)
        if final is not None:
            x = x * (1 + final[1]) + final[0]  # adaLN before the head (DiT's final layer)
        if positions is not None:  # the head only where the sampler looks (a large share of FLOPs at a big vocab)
            x = x.flatten(0, 1)[positions]  # (N, C)
        elif head_cols is not None:
            x = x[:, :head_cols]
        return (F.linear(x, self.tok_emb.weight) if self.head is None else self.head(x)).float()

    @torch.no_grad()
    def generate(self, prompt, gen_len, opts=None, generator=None, mask_id=None, on_token=None, counts=None):
        """Sample gen_len tokens after prompt (B, P >= 1) with a KV cache, as nanoGPT's generate:
        one pass a token, opts.replay_steps of them a call of decode_steps (one CUDA graph replay
        when compiled: no host read between). Past the context, keep the window's last half and
        recompute its cache. opts: the sampler's options, of which it reads the law
        (utils.draws.Law) and replay_steps (None: T = 1, no filter, 4); mask_id: never drawn;
        on_token(seq, the log-probs drawn from) a token; counts, a dict given, gets 'calls': every
        network call, the window's text passed before its newest token included. Returns (B, P +
        gen_len)."""
        law = Law() if opts is None else opts.law
        every = 4 if opts is None else opts.replay_steps
        (B, P), W = prompt.shape, self.args.block_size
        seq, lo, end = prompt, max(0, P - W), P + gen_len
        steps = replay(self, decode_steps)
        cache = new_kv_cache(self, B, prompt.device)
        fresh = True  # the cache is to be filled with the window's text before the newest token
        calls = 0
        while seq.size(1) < end:
            S = seq.size(1)
            if S - lo > W:  # no room for the newest token: keep the window's last half
                lo, fresh = S - W // 2, True
            if fresh:
                cache.reset()
                if S - 1 > lo:
                    decode(self, seq[:, lo:S - 1], cache)  # eager: its length varies
                    calls += 1
                fresh = False
            # `every` tokens if as many fit before the end and the window's next move, else one
            k = every if min(end - S, W + 1 - (S - lo)) >= every else 1
            u = uniforms((k, B), generator, prompt.device)  # drawn before the replay, in the order it reads them
            # a copy: a view's strides grow with seq, and new strides recompile the step
            newest = seq[:, -1:].clone(memory_format=torch.contiguous_format)
            new, laws = steps(self, newest, cache, u, law, mask_id)
            for i in range(k if on_token is not None else 0):
                on_token(torch.cat([seq, new[:, :i + 1]], 1), laws[:, i])
            seq = torch.cat([seq, new], 1)
            calls += k
        if counts is not None:
            counts["calls"] = calls
        return seq

    # ---- accounting: the model owns it
    def num_params(self):
        return sum(p.numel() for p in self.parameters())

    def flops_per_token(self, seq_len=None):
        """Training FLOPs per token: 6 per weight that multiplies (embedding lookups excluded)
        plus attention's 12 * L * d * ctx (PaLM appendix B; nanoGPT's estimate_mfu)."""
        a = self.args
        n = self.num_params() - (0 if self.head is None else self.tok_emb.weight.numel())  # tied: the head's matmul
        # the time embedding is a lookup too; adaLN runs once per sequence, not per token
        n -= sum(p.numel() for m in (self.time_emb, self.adaln) if m is not None for p in m.parameters())
        return 6 * n + 12 * a.n_layer * a.n_embd * (seq_len or a.block_size)

    def estimate_memory(self, tokens, bf16, ema=False):
        """Rough training bytes on one rank, (state, activations): weights, grads, AdamW moments [,
        EMA] in fp32; what backward keeps of `tokens` columns. A layer saves 68 d bytes a token in
        fp32, 50 d in bf16 (tests/test_train_scale.py); the head ~8 bytes a logit + ~4 transient."""
        a = self.args
        state = self.num_params() * (4 * 4 + (4 if ema else 0))
        block = a.n_embd * (50 if bf16 else 68)  # one layer's saved activations per token
        if self.checkpointing:  # every layer's input, and one layer's inside at a time
            layers = a.n_layer * a.n_embd * (2 if bf16 else 4) + block
        else:
            layers = a.n_layer * block
        return state, (layers + 12 * a.vocab_size) * tokens

    def optimizer_groups(self, weight_decay, exclude=()):
        """Decay 2-D matmul weights, not embeddings; exclude: parameters another optimizer holds."""
        named = [(n, p) for n, p in self.named_parameters() if all(p is not q for q in exclude)]
        decay = [p for n, p in named if p.dim() >= 2 and "emb" not in n]
        other = [p for n, p in named if not (p.dim() >= 2 and "emb" not in n)]
        return [dict(params=decay, weight_decay=weight_decay), dict(params=other, weight_decay=0.0)]




# ------------------------------------------------------------------------ KV-cached decoding
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
    static = model.compiler is not None
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


def decode_steps(model, newest, cache, u, law, mask_id=None):
    """len(u) tokens, a causal pass each: the newest token (B, 1) passes into the cache, the next
    is drawn from its logits with the uniforms u[i] (B,) (draw's inverse CDF; the argmax at T = 0)
    and passes in turn by `law` (utils.draws.Law). No host read, static shapes on a static cache:
    compiled, the k tokens are one graph (replay). Returns (tokens (B, k), the log-probs each was
    drawn from (B, k, V))."""
    tokens, laws = [], []
    for i in range(len(u)):
        logits = decode(model, newest, cache)
        if mask_id is not None:
            logits[:, mask_id] = float("-inf")  # never a target, yet ~2e-5 of an AR's draws
        logp = law.log_probs(logits)
        newest = (logp.argmax(-1) if law.temperature == 0 else draw_at(logp.exp(), u[i]))[:, None]
        tokens.append(newest)
        laws.append(logp)
    return torch.cat(tokens, 1), torch.stack(laws, 1)


def sample_causal(model, x, P, opts, generator=None, mask_id=None, on_step=None):
    """Continue x (B, L) after its P given tokens with model.generate, a token a pass (a KV cache),
    an ordered Step a token for the trace: exact samples of the network's left-to-right law (the
    AR's sampler, and --dual_sample's). Returns (x filled, stats: nfe, nfe_per_sample)."""
    B, L = x.shape
    conf = torch.zeros(B, L, dtype=torch.float64, device=x.device)

    def token_done(seq, filtered):  # a Step of the canvas so far
        # filtered: log-probs at the temperature already (model.generate drew from them)
        p = drawn_law(filtered, opts.law.temperature == 0).exp()
        on_step(ordered_step(seq[:, :-1], seq, P, L, seq.size(1) - P, mask_id, p[:, None], conf))

    counts = {}  # every network call: a token's, and the prompt's pass before its last token
    out = model.generate(x[:, :P], L - P, opts, generator, mask_id, token_done if on_step else None, counts)
    return out, dict(nfe=counts["calls"], nfe_per_sample=[counts["calls"]] * B)


DECODERS = "the AR, --dual_sample and bd3's --bd3_speculate run it"  # an objective's decodes(): True


def compile_decode(model, cfg, device):
    """--compile for sampling ('auto': CUDA): the decoding steps (decode_steps, bd3's rounds)
    compiled whole at static shapes by replay(), CUDA-graphed on CUDA: k steps a replay, not ~220
    launches and a host read a step."""
    device = torch.device(device)
    if cfg.compile == "true" or (cfg.compile == "auto" and device.type == "cuda"):
        mode = "reduce-overhead" if device.type == "cuda" else None
        model.compiler = functools.partial(torch.compile, mode=mode, fullgraph=True, dynamic=False)


def replay(model, fn):
    """fn as the model's sampler runs it: eager, or compiled by model.compiler (compile_decode) once
    a model, as a CUDA graph replays the buffers it recorded (its static KV cache)."""
    if model.compiler is None:
        return fn
    if fn not in model.compiled:
        model.compiled[fn] = model.compiler(fn)
    return model.compiled[fn]
