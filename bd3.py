"""Block diffusion (BD3-LM, Arriola et al. 2025): its attention mask, bound, two-stream training
pass and block-by-block decoding. Each block of L' tokens is bounded given the clean blocks before
it, at its own t (eq. 6):

    -log p(x) <= sum_b E_t_b E_q [ T w(t_b) sum_{i in b, masked} -log p(x0_i | x_t^b, x0^<b) ]

One pass reads [x_t ; x_0] (2L tokens) under bd3_attn_mask; the loss sits on the noisy half.
L' = 1 is the AR in expectation, L' = L is MDLM. --bd3_ar also trains the clean half on the next
token, which --bd3_speculate samples. Decoding caches the clean blocks in windows aligned as in
training, so it equals the two-stream pass (tests/helpers.py).

    python train.py baby --objective=bd3 --bd3_block=4
    python inference.py --checkpoint artifacts/models/baby/model.pt --prompt "ROMEO:" --gen-len 600
"""
import time
from dataclasses import dataclass, replace
from functools import lru_cache

import torch
import torch.nn.functional as F

from diffusion import (LAW_KEYS, SELF_COND_SHARE, Drawn, LossOptions, Objective, SamplerOptions, Schedule,
                       band_times, check_band, denoise, masking_draws, no_mask_logit, repeat_draws, sampler_keys_but,
                       self_condition_input, stratified_times)
from model import KVCache, decode, decode_steps, new_kv_cache, replay
from utils.dist import draw_device, on_device
from utils.draws import draw, draw_at, uniforms
from utils.errors import UserError
from utils.steps import ordered_step, prompt_length


# -------------------------------------------------------------------- attention masks
@lru_cache(maxsize=16)
def bd3_attn_mask(L, block, device, causal=False):
    """[x_t ; x_0]'s attention (2L, 2L) bool, True = may attend: a noisy query of block b sees its
    own block and the clean blocks < b; a clean one the clean blocks <= b (causal: up to itself)."""
    i = torch.arange(2 * L, device=device)
    clean, blk = i >= L, (i % L) // block  # (2L,) which half, which block
    q_clean, k_clean, qb, kb = clean[:, None], clean[None, :], blk[:, None], blk[None, :]
    noisy_own = ~q_clean & ~k_clean & (qb == kb)
    noisy_ctx = ~q_clean & k_clean & (kb < qb)
    clean_causal = q_clean & k_clean & ((i[None, :] <= i[:, None]) if causal else (kb <= qb))
    return noisy_own | noisy_ctx | clean_causal


# -------------------------------------------------------------------- the noise and the bound


@dataclass
class BlockDrawn(Drawn):
    """A pass's draws (diffusion.Drawn), t one a block (B, L // L'), and the band they came from."""
    n_times: int = 0  # the times the band holds, k of the weight k * w(t_b): a host number


def block_draws(shape, t, share, generator, device, n_times):
    """BlockDrawn: diffusion.masking_draws' masks and self-conditioning rows, then n_times."""
    return BlockDrawn(**vars(masking_draws(shape, t, share, generator, device)), n_times=n_times)


def bd3_times(n, n_blocks, allowed, generator=None, device="cpu", offset=0, total=None, u=None):
    """A time per block of n sequences, (n, n_blocks) long: stratified over the global batch's
    blocks, mapped onto `allowed`, and shuffled so one sequence's blocks get unrelated strata."""
    dev = draw_device(device)  # where draws run: no host copy of the times
    idx = stratified_times(n * n_blocks, len(allowed), generator, dev, offset * n_blocks, (total or n) * n_blocks, u)
    perm = torch.randperm(len(idx), generator=on_device(generator, dev), device=dev)
    return (idx[perm] - 1 + int(allowed[0])).view(n, n_blocks).to(device)  # allowed: a run of times on the host


def bd3_logits(model, xt, x0, block, mask_id, sc=None, clean=False):
    """The noisy half's logits (B, L, V), [MASK] at -inf, of one pass over [xt ; x0] (B, 2L); sc
    (B, L, V): self-conditioning's input. The last clean block, context for no one, is left out;
    clean=True (--bd3_ar) keeps it and also returns x0[:, 1:]'s next-token logits (B, L - 1, V)."""
    L, causal = x0.size(1), getattr(getattr(model, "args", None), "clean_causal", False)
    # under torch.compile the mask is traced, not cached: dynamo ignores a cache and warns of it
    attn_mask = bd3_attn_mask.__wrapped__ if torch.compiler.is_compiling() else bd3_attn_mask
    if clean:
        assert causal, "the next-token logits of the clean half need a clean_causal network (--bd3_ar)"
        sc = None if sc is None else torch.cat([sc, torch.zeros_like(sc)], 1)
        out = model(torch.cat([xt, x0], 1), attn_mask=attn_mask(L, block, x0.device, True),
                    rope_pos=torch.arange(L, device=x0.device).repeat(2), sc=sc)  # both halves at 0..L-1
        return no_mask_logit(out[:, :L], mask_id), no_mask_logit(out[:, L:-1], mask_id)
    if block == L:  # one block: no clean context, MDLM's pass
        return no_mask_logit(model(xt, sc=sc), mask_id)
    n = 2 * L - block
    rope = torch.arange(L, device=x0.device).repeat(2)[:n]
    if sc is not None:
        sc = torch.cat([sc, sc.new_zeros(sc.size(0), n - L, sc.size(2))], 1)  # (B, n, V)
    mask = attn_mask(L, block, x0.device, causal)[:n, :n]
    # head_cols: the head reads only the noisy half (no sync, no graph break)
    logits = model(torch.cat([xt, x0[:, :L - block]], 1), attn_mask=mask, rope_pos=rope, sc=sc, head_cols=L)
    return no_mask_logit(logits, mask_id)  # x0 is never [MASK]


def bd3_loss(model, x0, schedule, mask_id, block, drawn, opts=LossOptions()):
    """Block-diffusion NELBO of x0 (B, L) in blocks of `block` tokens, given its draws (Drawn).
    Block b is masked w.p. 1 - alpha(t_b) and weighted by k * w(t_b), k = drawn.n_times: over all T
    times the sum estimates the bound on -log p(x0), a clipped band its share (never report it).
    Returns (loss, NELBO in nats/token (B,), dict(t, t_tok, masked, logits, ce))."""
    B, L = x0.shape
    assert L % block == 0, f"block {block} must divide the window {L}"
    t = drawn.t
    t_tok = t.repeat_interleave(block, 1)  # (B, L) each token's block time
    p = schedule.mask_prob(t_tok).to(torch.float32)
    masked = drawn.uniform < p
    xt = torch.where(masked, torch.full_like(x0, mask_id), x0)
    sc = None
    if opts.self_cond:  # the first pass: the same two-stream pass, without sc
        sc = self_condition_input(lambda r: bd3_logits(model, xt[r], x0[r], block, mask_id), masked, drawn.rows)
    out = bd3_logits(model, xt, x0, block, mask_id, sc=sc, clean=opts.ar_weight > 0)
    logits, nxt = out if opts.ar_weight > 0 else (out, None)
    ce = F.cross_entropy(logits.reshape(B * L, -1), x0.view(-1), reduction="none").view(B, L)
    w = (drawn.n_times * schedule.on(x0.device)[1][t_tok]).float()  # (B, L) importance weight k * w(t_b)
    nelbo = (w * ce * masked).sum(1) / L  # (B,) nats per token, over L as MDLM's bound
    loss = ce.mean() if opts.loss_type == "all_ce" else nelbo.mean()
    if nxt is not None:
        loss = loss + opts.ar_weight * F.cross_entropy(nxt.reshape(-1, nxt.size(-1)), x0[:, 1:].reshape(-1))
    return loss, nelbo.detach(), dict(t=t, t_tok=t_tok, masked=masked, logits=logits.detach(), ce=ce.detach())


@torch.no_grad()
def ar_nll(model, windows, cfg, mask_id):
    """The mean NLL (B,) of windows[:, 1:] under --bd3_ar's AR mode (--bd3_speculate at temperature
    1): the first token from an all-[MASK] block, the rest from the clean half. None without it."""
    if not cfg.bd3_ar:
        return None
    x = windows[:, 1:]
    first = no_mask_logit(model(torch.full_like(x[:, :cfg.bd3_block], mask_id))[:, :1], mask_id)
    nxt = bd3_logits(model, torch.full_like(x, mask_id), x, cfg.bd3_block, mask_id, clean=True)[1]
    logp = torch.log_softmax(torch.cat([first, nxt], 1).double(), -1)
    return -logp.gather(-1, x[..., None]).squeeze(-1).mean(1)


# -------------------------------------------------------------------- decoding
@dataclass(frozen=True)
class Blocks:
    """What both samplers need of a bd3 network: its block size L' (as trained) and its [MASK]."""
    size: int
    mask_id: int


class CleanCache:
    """Per-layer clean-context keys/values in buffers (B, H, capacity, D) grown by doubling, and its
    ids (B, n). update(k, v) returns a view [cached ; new]; of the new, the first `store` stay."""

    def __init__(self, n_layer):
        self.k, self.v, self.n = [None] * n_layer, [None] * n_layer, [0] * n_layer
        self.layer, self.store, self.rows, self.ids = 0, 0, None, None

    def __len__(self):
        return 0 if self.ids is None else self.ids.size(1)

    def update(self, k, v):
        i, n, m = self.layer, self.n[self.layer], k.size(2)
        self.layer = (i + 1) % len(self.k)
        if self.rows is not None:  # a subset of the rows reads (threshold); nothing enters
            assert not self.store, "new context enters the cache with every row"
            return torch.cat([self.k[i][self.rows, :, :n], k], 2), torch.cat([self.v[i][self.rows, :, :n], v], 2)
        if self.k[i] is None or n + m > self.k[i].size(2) or not n and len(k) != len(self.k[i]):  # grow by doubling
            bufs = [k.new_zeros(*k.shape[:2], max(2 * (n + m), 128), k.size(3)) for _ in range(2)]
            if n:
                bufs[0][:, :, :n], bufs[1][:, :, :n] = self.k[i][:, :, :n], self.v[i][:, :, :n]
            self.k[i], self.v[i] = bufs
        self.k[i][:, :, n:n + m], self.v[i][:, :, n:n + m] = k, v
        self.n[i] = n + self.store
        return self.k[i][:, :, :n + m], self.v[i][:, :, :n + m]


@lru_cache(maxsize=64)
def pending_mask(n0, m, block, device, causal=False):
    """Attention (m + block, n0 + m + block) of [m pending clean columns ; a noisy block] after n0
    cached ones: the clean columns see what they would in training, the noisy block everything."""
    mask = torch.ones(m + block, n0 + m + block, dtype=torch.bool, device=device)
    mask[:m, n0:n0 + m] = bd3_attn_mask(m, block, device, causal)[m:, m:]  # the clean-clean quarter
    mask[:m, n0 + m:] = False
    return mask


class CachedBlockModel:
    """denoise()'s model for one block of the window (context, then block): only the block passes,
    against the cache; context it lacks (the prompt, the last block, a jumped window) enters it."""

    def __init__(self, model, cache, block):
        self.model, self.cache, self.block, self.args = model, cache, block, model.args

    def __call__(self, idx, t=None, positions=None, sc=None):
        kv, n0 = self.cache, len(self.cache)
        m = idx.size(1) - self.block - n0  # clean columns not yet cached
        assert m >= 0 and m % self.block == 0 and n0 % self.block == 0, "the cache holds whole blocks of the window"
        if n0 and idx.size(0) != kv.ids.size(0):  # a subset of the rows: find each one's cache row
            assert not m, "new context enters the cache with every row"
            same = (idx[:, None, :n0] == kv.ids[None]).all(-1)  # (R, B)
            assert same.any(1).all(), "a row's context is not in the cache"
            kv.rows = same.float().argmax(1)
        if positions is not None:  # denoise()'s flat window indices -> the columns from n0
            positions = positions // idx.size(1) * (idx.size(1) - n0) + positions % idx.size(1) - n0
        mask = pending_mask(n0, m, self.block, idx.device, getattr(self.args, "clean_causal", False)) if m else None
        kv.store = m
        try:
            rope = torch.arange(n0, idx.size(1), device=idx.device)  # the columns past the cached ones
            logits = self.model(idx[:, n0:], kv_cache=kv, rope_pos=rope, attn_mask=mask, positions=positions,
                                sc=None if sc is None else sc[:, n0:])  # zeros over the clean columns, as in training
        finally:
            kv.store, kv.rows = 0, None
        if m:
            kv.ids = idx[:, n0:n0 + m] if kv.ids is None else torch.cat([kv.ids, idx[:, n0:n0 + m]], 1)
        if positions is None:  # the window's shape: zeros over the context
            logits = torch.cat([logits.new_zeros(idx.size(0), n0 + m, logits.size(-1)), logits[:, m:]], 1)
        return logits


class BlockOutput:
    """sample_bd3's output while decoded: tokens in whole blocks, their confidences, the counts."""

    def __init__(self, prompt, gen_len, block, mask_id):
        B, P = prompt.shape
        dev = prompt.device
        self.width = P + gen_len  # the columns returned
        self.block = block
        total = -(-(P + gen_len) // block) * block  # whole blocks
        self.out = torch.cat([prompt, torch.full((B, total - P), mask_id, dtype=prompt.dtype, device=dev)], 1)
        self.gen = torch.arange(total, device=dev)[None].expand(B, -1) >= P  # (B, total)
        self.conf = torch.zeros(B, total, dtype=torch.float64, device=dev)
        self.starts = range(P // block * block, total, block)  # from the first block holding a generated position
        self.nfe = torch.zeros(B, dtype=torch.long)  # forward passes each sample took part in
        self.steps = 0  # batched forward passes

    def hook(self, on_step, lo, hi, b):
        """denoise()'s on_step for block b in [lo, hi), or None (denoise() then builds no Step)."""
        def block_step(st):
            on_step(self.full(st, lo, hi, b))
        return None if on_step is None else block_step

    def full(self, st, lo, hi, b):
        """denoise()'s Step over [lo, hi) as one over the first `width` columns, counts over all."""
        def put(base, w):  # w in base's columns [lo, hi)
            return torch.cat([base[:, :lo], w, base[:, hi:]], 1)[:, :self.width]

        zeros = torch.zeros_like(self.gen)
        n_blocks = len(self.starts)
        at, logp = st.laws
        col = lo + at % (hi - lo)  # the window's flat positions as the output's
        kept = col < self.width
        self.conf[:, hi - self.block:hi] = st.conf[:, -self.block:]  # this block's; the context keeps its blocks'
        return replace(st, x=put(self.out, st.x), prev=put(self.out, st.prev), revealed=put(zeros, st.revealed),
                       remasked=put(zeros, st.remasked), gen_mask=self.gen[:, :self.width],
                       conf=self.conf[:, :self.width].clone(), step=self.steps + st.step, nfe=self.nfe + st.nfe,
                       block=b, n_blocks=n_blocks, finished=[f and b == n_blocks - 1 for f in st.finished],
                       laws=((at // (hi - lo) * self.width + col)[kept], logp[kept]))


def block_options(opts, block):
    """denoise()'s options for one block: at most a step a position, no semi-AR blocks, and linear
    counts for schedule ones, a checkpoint's from before bd3 took linear as its default (schedule
    counts end each call greedily: every L'-th token an argmax, all of them at L' = 1)."""
    opts = replace(opts, steps=min(opts.steps, block), semi_ar_length=0)
    if opts.tokens_per_step == "schedule" and not opts.adaptive:
        opts = replace(opts, tokens_per_step="linear")
    return opts


@torch.no_grad()
def sample_bd3(model, prompt, gen_len, blocks, schedule, opts, generator=None, on_step=None):
    """Continue prompt (B, P) by gen_len tokens block by block, each by denoise (opts.steps
    a block; on_step: Steps over it all). Returns (tokens, stats: nfe, seconds, blocks, ...)."""
    t0 = time.perf_counter()
    W = model.args.block_size
    block = blocks.size
    if W % block:
        raise ValueError(f"block {block} must divide the context {W}")
    opts = block_options(opts, block)  # (semi-AR blocks: its own blocks instead)
    keep = min((W // 2) // block * block, W - block)  # kept when the window jumps: half of it, in whole blocks
    o = BlockOutput(prompt, gen_len, block, blocks.mask_id)
    lo = 0  # the window's start, blocks aligned to it as in training
    denoiser = CachedBlockModel(model, CleanCache(model.args.n_layer), block)
    for b, pos in enumerate(o.starts):
        if pos - lo + block > W:  # no room: jump, keeping the last `keep` tokens
            lo = pos - keep
            denoiser.cache = CleanCache(model.args.n_layer)  # refilled, with the kept tokens, by the block's first step
        hi = pos + block
        # only this block is generated; its context is fixed text
        now = torch.cat([torch.zeros_like(o.gen[:, lo:pos]), o.gen[:, pos:hi]], 1)
        x, st = denoise(denoiser, o.out[:, lo:hi], now, schedule, blocks.mask_id, opts, generator,
                                o.hook(on_step, lo, hi, b))
        o.out[:, lo:hi] = x
        o.nfe += torch.tensor(st["nfe_per_sample"])
        o.steps += st["nfe"]
    seconds = time.perf_counter() - t0
    return o.out[:, :o.width], dict(nfe=o.steps, nfe_per_sample=o.nfe.tolist(), seconds=seconds,
                                    seconds_per_sample=[seconds] * len(prompt), blocks=len(o.starts))


# -------------------------------------------------------------------- self-speculative decoding
def probs(logits, opts):
    """The float64 law (..., V) drawn from (one-hot at T = 0): the check's p and q must be these."""
    return opts.law.probs(logits)


def keep_or_redraw(p, q, drafts, generator):
    """Speculative sampling (Leviathan et al. 2023; Chen et al. 2023): draft i is kept while
    u < p_i / q_i, the first rejected one is redrawn from max(0, p_i - q_i), and a bonus token comes
    from p when all are kept, so each token is p-distributed. p (B, k + 1, V): the target's laws;
    q (B, k, V): the drafts'. Returns (B, j + 1), j the fewest drafts a row kept (one host sync)."""
    B, k = drafts.shape
    if k == 0:
        return draw(p[:, 0], generator)[:, None]
    pd = p[:, :k].gather(-1, drafts[..., None])[..., 0]  # (B, k) the drafts' probabilities under p, then q
    qd = q.gather(-1, drafts[..., None])[..., 0]
    dev = draw_device(p.device)
    u = torch.rand(B, k, generator=on_device(generator, dev), device=dev, dtype=torch.float64).to(p.device)
    kept = (u * qd < pd).long().cumprod(1).sum(1)  # (B,) drafts kept before the first rejection
    j = int(kept.min())
    if j == k and p.size(1) == k:  # every draft kept, and the block ends: no bonus
        return drafts
    if j == k:
        last = draw(p[:, k], generator)
    else:
        resid = (p[:, j] - q[:, j]).clamp(min=0)
        resid = torch.where(resid.sum(-1, keepdim=True) > 0, resid, p[:, j])  # p = q: nothing to correct
        # a row that kept draft j keeps it; the others redraw
        last = torch.where(kept > j, drafts[:, j], draw(resid, generator))
    return torch.cat([drafts[:, :j], last[:, None]], 1)


def check_drafts(p, q, drafts, kd, u, last_u, bonus):
    """keep_or_redraw at fixed shapes with no host read, for the whole round (the eager round reads
    j on the host and skips what it need not compute: dev/LOG.md, "k steps a replay"). The first kd
    of drafts (B, n), drawn from q (B, n, V), checked against p (B, n + 1, V) with uniforms
    u (B, n); the first rejected one redrawn from max(0, p_j - q_j), or the bonus token drawn from
    p_kd when all are kept and a token follows (bonus), with last_u (B,). Returns (tokens
    (B, n + 1), the round's count m (0-d): tokens[:, :m] are its tokens, whether a last token was
    drawn (0-d): its uniforms were read)."""
    (B, n), V = drafts.shape, p.size(-1)
    slot = torch.arange(n, device=drafts.device)
    pd = p[:, :n].gather(-1, drafts[..., None])[..., 0]  # (B, n) the drafts' probabilities under p, then q
    qd = q.gather(-1, drafts[..., None])[..., 0]
    kept = ((u * qd < pd) & (slot < kd)).long().cumprod(1).sum(1)  # (B,) drafts kept before the first rejection
    j = kept.min()  # rows advance by the slowest
    # token j's law: the residual of p_j over q_j after a rejection; the bonus's p_kd (q_kd = 0)
    p_j = p.gather(1, j.expand(B, 1, V))[:, 0]
    q_j = torch.where(j < kd, q.gather(1, j.clamp(max=n - 1).expand(B, 1, V))[:, 0], 0.0)
    resid = (p_j - q_j).clamp(min=0)
    resid = torch.where(resid.sum(-1, keepdim=True) > 0, resid, p_j)  # p = q: nothing to correct
    # a row that kept draft j keeps it; the others draw
    kept_j = drafts.gather(1, j.clamp(max=n - 1).expand(B, 1))[:, 0]
    last = torch.where(kept > j, kept_j, draw_at(resid, last_u))
    tokens = torch.cat([drafts, last[:, None]], 1).scatter(1, j.expand(B, 1), last[:, None])
    drew = (j < kd) | bonus  # every draft kept and no token follows: no last token
    return tokens, j + drew.long(), drew


class RoundCache(KVCache):
    """model.KVCache for sample_clean_ar's drafting rounds, its buffers shaped at the first pass by
    the keys it writes: any network that reads a cache can draft (the tests' toys too)."""

    def __init__(self, n_layer, batch, size, device, static):
        super().__init__(n_layer, batch, 0, size, 0, device, None, static)  # empty until the first pass
        self.text = None  # hold_rounds: what a whole round reads and writes on the device

    def hold_rounds(self, n, W, V):
        """The whole round's state (_whole_round), kept at fixed addresses for a CUDA graph: the
        window's text (room for a round past its end), the drafter's laws q for the block holding
        the next position, whether they are drawn from yet, the text's end in the window (stop);
        and the uniforms the next call reads (u, from u_used on)."""
        B, dev = self.k[0].size(0), self.pos.device
        self.text = torch.zeros(B, W + 2 * n + 1, dtype=torch.long, device=dev)
        self.q = torch.ones(B, n, V, dtype=torch.float64, device=dev)  # a law to draw unread drafts from
        self.drafting = torch.zeros((), dtype=torch.bool, device=dev)
        self.stop = torch.zeros((), dtype=torch.long, device=dev)
        for t in (self.text, self.q, self.drafting, self.stop):
            torch._dynamo.mark_static_address(t)
        self.u = torch.zeros(0, dtype=torch.float64, device=draw_device(dev))

    def new_window(self, text, stop):
        """A moved (or first) window: its text (B, S - lo), its end; no drafter's laws yet."""
        self.text[:, :text.size(1)] = text
        self.stop.fill_(stop)
        self.drafting.fill_(False)

    def update(self, k, v):
        if not self.k[0].numel():  # the first pass, eager: the buffers a compiled pass writes in place
            end = self.end  # (this pass's, which __init__ would empty)
            super().__init__(len(self.k), len(k), k.size(1), len(self.cols), k.size(3), k.device, k.dtype, self.static)
            self.end = end
        return super().update(k, v)


def round_layout(n0, sb, cols, n, W, keys, device):
    """RoPE positions (C,), attention (C, keys) and the copies' known tokens (m, n) of a round's
    pass after n0 cached columns, cols = (t0, kd, slots, m, nxt): the newest token and `slots`
    draft slots (kd filled), m noisy copies of the block from sb (t0 tokens known, then one more
    each), the next block if nxt. Column c is key n0 + c; each sees what it would in training.
    n0, sb and kd may be device numbers (_whole_round's): the layout is then built on the device."""
    t0, kd, slots, m, nxt = cols
    clean = n0 + torch.arange(slots + 1, device=device)
    group = torch.arange(m + nxt, device=device).repeat_interleave(n)  # each noisy column's copy
    start = sb + n * (group == m)  # its block's start: the next block's for the last copy if nxt
    # positions past the context are only a fixed-shape pass's unread columns
    pos = torch.cat([clean, start + torch.arange(n, device=device).repeat(m + nxt)]).clamp(max=W - 1)
    k = torch.arange(keys, device=device) - n0  # each key's column in the pass (< 0: cached)
    # a clean key up to its own position (a clean column) or before its block (a noisy one)
    sees_clean = (k <= kd) & (k + n0 <= torch.cat([clean, start - 1])[:, None])
    copy = torch.cat([torch.full_like(clean, -1), group])  # each column's noisy copy (-1: a clean column)
    own = ((k - slots - 1) // n == copy[:, None]) & (k > slots) & (k < len(pos))
    known = torch.arange(n, device=device) < torch.arange(t0, t0 + m, device=device)[:, None]
    return pos, sees_clean | own, known  # own: a noisy column's own copy


cached_layout = lru_cache(maxsize=1024)(round_layout)  # _draft_round's: its layouts repeat


@dataclass
class Round:
    """sample_clean_ar's state between rounds."""
    seq: torch.Tensor        # (B, S) the text so far
    lo: int = 0              # the window's start
    kv: object = None        # cache of the window's text before the newest token
    q: torch.Tensor = None   # the drafter's laws (B, n, V) for the block holding position S, or None


def _draft_round(model, s, end, fill, mask_id, opts, generator):
    """One round, one pass: the newest token and s.q's drafts as clean columns, checked by their
    next-token laws, beside the noisy states the next round drafts from. Returns (kept, q, laws)."""
    S = s.seq.size(1)
    n = fill.size(1)  # the block
    sb = s.lo + (S - s.lo) // n * n  # the block holding position S, aligned to the window's start
    e = sb + n
    drafts = draw(s.q[:, S - sb:min(e, end) - sb], generator) if s.q is not None else s.seq[:, :0]
    kd = drafts.size(1)
    # outcome r (the round's newest token) needs a state if a token follows, in this block or next
    outcomes = [r for r in range(S, S + kd + 1) if r + 1 < end and (r < e - 1 or e + n - s.lo <= model.args.block_size)]
    # state r: known before r, [MASK] from r on (no state knows r: this pass draws it)
    states = tuple(r for r in outcomes if r < e - 1)
    nxt = states != tuple(outcomes)  # an outcome finishes the block: the next block drafts
    n0 = S - 1 - s.lo
    s.kv.end += 1 + kd + n * (len(states) + nxt)  # the keys it reads: those cached and its own
    pos, mask, known = cached_layout(n0, sb - s.lo, (S - sb, kd, kd, len(states), nxt), n, model.args.block_size,
                                     s.kv.end, fill.device)
    # the block as this round would keep it, in each copy
    block = torch.cat([s.seq[:, sb:], drafts, fill], 1)[:, None, :n]
    noisy = torch.where(known, block, mask_id).flatten(1)
    ids = torch.cat([s.seq[:, -1:], drafts, noisy, fill[:, :n * nxt]], 1)
    logits = no_mask_logit(model(ids, kv_cache=s.kv, rope_pos=pos, attn_mask=mask), mask_id)
    p = probs(logits[:, :min(kd + 1, end - S)], opts)
    new = keep_or_redraw(p, s.q[:, S - sb:S - sb + kd] if kd else None, drafts, generator)
    s.kv.reset(n0 + new.size(1))  # the newest token and the kept drafts
    r = S + new.size(1) - 1  # the newest token: the next round drafts from its outcome's state
    law = p[:, :new.size(1)]  # what each new token was drawn from (the trace page's candidates)
    if r not in outcomes:
        return new, None, law
    if r in states:
        c = 1 + kd + n * (r - S)
        return new, probs(logits[:, c:c + n], opts), law
    return new, probs(logits[:, -n:], opts), law  # the next block's, all [MASK]


@torch.no_grad()
def sample_clean_ar(model, prompt, gen_len, blocks, opts=None, generator=None, on_step=None, draft=None):
    """Continue prompt (B, P) by gen_len exact samples of a --bd3_ar network's clean half (an AR),
    drafted by its noisy half, one pass a round: eager, _draft_round's (the columns it reads, a host
    read a round); compiled (--compile), opts.replay_steps rounds a call of _rounds (fixed shapes,
    one CUDA graph replay, a host read a call). Rows advance by the slowest, so draft=None drafts
    at batch 1 only (dev/LOG.md, "`baby_bd3`'s sampler at batch 16"); undrafted, the clean half
    decodes alone, opts.replay_steps tokens a call. Returns (tokens, stats: nfe (every network
    call, prefills included), nfe_per_sample, seconds, seconds_per_sample, kept: drafts kept a
    round). opts: temperature, top_k, top_p, replay_steps (None: T = 1, no filter, 4)."""
    t0 = time.perf_counter()
    opts = SamplerOptions(steps=1) if opts is None else opts
    B, P = prompt.shape
    W = model.args.block_size
    block, mask_id = blocks.size, blocks.mask_id
    end = P + gen_len
    keep = min((W // 2) // block * block, W - block)  # sample_bd3's jump
    fill = torch.full((B, block), mask_id, device=prompt.device)  # a noisy block all [MASK]
    if draft is None:
        draft = B == 1
    whole = draft and getattr(model, "compiler", None) is not None  # the round whole, at fixed shapes
    s = Round(seq=prompt)
    kv = _round_cache(model, B, block, prompt.device) if draft else new_kv_cache(model, B, prompt.device)
    # calls: every network call (the NFE: prefills included); rounds: the calls that commit tokens
    calls, rounds = 0, 0
    conf = torch.zeros(B, end, dtype=torch.float64, device=prompt.device)  # each token's p when drawn (a Step's)
    if not P:  # nothing for the clean half to read: the first token is the noisy half's
        law = probs(no_mask_logit(model(fill)[:, :1], mask_id), opts)
        s.seq = draw(law, generator)
        calls = 1
        if on_step is not None:
            on_step(ordered_step(prompt, s.seq, P, end, calls, mask_id, law, conf))
    while s.seq.size(1) < end:
        S = s.seq.size(1)
        # a fresh window at the start, and when the newest token's block does not fit
        if s.kv is None or (S - s.lo) // block * block + block > W:
            s.lo = 0 if s.kv is None and S // block * block + block <= W else S - keep
            s.kv = kv
            kv.reset()
            if S - 1 - s.lo > 0:  # the text before the newest token, passed once, causally: a call of its own
                decode(model, s.seq[:, s.lo:S - 1], kv)
                calls += 1
            s.q = None  # the first round after a jump is a plain AR step
            if whole:
                kv.new_window(s.seq[:, s.lo:], end - s.lo)
        if whole:
            made, ran = _replayed_rounds(model, s, kv, opts, mask_id, generator)
            calls += ran - len(made)  # rounds with no room (the end, a window to move): passes, no tokens
        elif draft:
            new, s.q, law = _draft_round(model, s, end, fill, mask_id, opts, generator)
            made = [(new, law)]
        else:
            # why: dev/LOG.md, "bd3's clean half at batch > 1 in the AR's own loop"
            fits = min(end - S, W - (S - s.lo)) >= opts.replay_steps  # before the end and the window's move
            made = _clean_steps(model, s, opts.replay_steps if fits else 1, mask_id, opts, generator)
        for new, law in made:  # each pass's tokens, and the laws they were drawn from
            prev = s.seq
            s.seq = torch.cat([s.seq, new], 1)
            calls += 1
            rounds += 1
            if on_step is not None:
                on_step(ordered_step(prev, s.seq, P, end, calls, mask_id, law, conf))
    seconds = time.perf_counter() - t0
    # a round commits one token, and the drafts it kept
    return s.seq, dict(nfe=calls, nfe_per_sample=[calls] * B, seconds=seconds, seconds_per_sample=[seconds] * B,
                       kept=(end - P - (P == 0) - rounds) / max(rounds, 1))


def _round_cache(model, batch, block, device):
    """The rounds' RoundCache (room for a window and the widest round, from past the window's end):
    static when compiled, and then kept as model.decode_cache (a CUDA graph replays on the buffers
    it recorded)."""
    static = getattr(model, "compiler", None) is not None  # (a toy network has none)
    c = model.decode_cache if static else None
    a = model.args
    if not isinstance(c, RoundCache) or (len(c.k[0]), c.pos.device) != (batch, device):
        c = RoundCache(a.n_layer, batch, a.block_size + block * block + 2 * block, device, static)
    if static and c.text is None:
        c.hold_rounds(block, a.block_size, a.vocab_size)
        model.decode_cache = c
    if static:
        c.u, c.u_used = c.u[:0], 0  # a sample's uniforms are its generator's
    return c


def _clean_steps(model, s, k, mask_id, opts, generator):
    """The clean half's next k tokens, one pass each: the AR's decode_steps (one CUDA graph replay
    under --compile). Returns [(token (B, 1), its law (B, 1, V))]."""
    # a copy, not contiguous(): a view's strides grow with seq, and new strides recompile the step
    newest = s.seq[:, -1:].clone(memory_format=torch.contiguous_format)
    u = uniforms((k, len(newest)), generator, newest.device)
    new, logp = replay(model, decode_steps)(model, newest, s.kv, u, opts.law, mask_id)
    return [(new[:, i:i + 1], logp[:, i:i + 1].exp()) for i in range(k)]


# -------------------------------------------------------------------- the whole round, k a replay
def _replayed_rounds(model, s, c, opts, mask_id, generator):
    """opts.replay_steps whole rounds (_rounds) in one call, then the host's one read: the tokens
    each committed (a round with no room commits none; the window then moves) and the uniforms
    they used, whose rest the next call reads first (the eager rounds' order, so their tokens).
    Returns ([(the round's tokens (B, m), their laws (B, m, V))] for the rounds that committed, the
    rounds run: each a network pass, committing or not)."""
    k, (B, S), n = opts.replay_steps, s.seq.shape, c.q.size(1)
    used = c.u_used
    fresh = uniforms((k * B * (2 * n + 1) - len(c.u) + used,), generator, s.seq.device)
    c.u = torch.cat([c.u[used:], fresh])  # room for k rounds that each draw every slot
    # the first pass shapes the cache's buffers: eager
    rounds = replay(model, _rounds) if c.k[0].numel() else _rounds
    counts, used, laws = rounds(model, c, c.u, k, opts, mask_id)
    *counts, c.u_used = torch.cat([counts, used[None]]).tolist()  # the host's one read
    text, at, made = c.text[:, S - s.lo:S - s.lo + sum(counts)].clone(), 0, []
    for m, law in zip(counts, laws):
        if m:
            made.append((text[:, at:at + m], law[:, :m]))
            at += m
    return made, k


def _rounds(model, c, u, k, opts, mask_id):
    """k drafting rounds in a row (_whole_round), with no host read between: compiled, one CUDA
    graph. Returns (tokens each committed (k,), uniforms used (0-d), each round's laws)."""
    at = torch.zeros((), dtype=torch.long, device=u.device)
    counts, laws = [], []
    for _ in range(k):
        m, at, p = _whole_round(model, c, u, at, opts, mask_id)
        counts.append(m)
        laws.append(p)
    return torch.stack(counts), at, laws


def _whole_round(model, c, u, at, opts, mask_id):
    """_draft_round at fixed shapes, on the device, with no host read: every draft slot and noisy
    state of the block pass, the unread ones [MASK] and masked out. It reads and writes the static
    RoundCache c: the window's text, the drafter's laws q, the cache's length. u (N,): uniforms, the
    round's read from `at` in the order _draft_round draws them. A round without room (the text's
    end, a window to move) commits nothing. Returns (tokens committed (0-d), the next uniform's
    index, the clean columns' laws p (B, n + 1, V))."""
    (B, n, V), W = c.q.shape, model.args.block_size
    slot = torch.arange(n, device=c.pos.device)  # (n,) a draft slot; a column of the block
    row = torch.arange(B, device=c.pos.device)[:, None]  # (B, 1)
    # 1. Where the round stands, in window positions: the newest token at S - 1 (the cache holds
    # the text before it), the block holding S from sb, kd drafts to the block's or the text's end
    S = c.pos + 1
    live = (S < c.stop) & (S < W)  # else the text is done, or the window must move first
    sb = S // n * n
    kd = torch.where(c.drafting, torch.minimum(sb + n, c.stop) - S, 0)
    bonus = S + kd < c.stop  # a token follows the last draft
    # its uniforms, in _draft_round's order: each row's drafts, each row's checks, the last tokens
    u_draft = _read(u, at + row * kd + slot)
    u_check = _read(u, at + B * kd + row * kd + slot)
    u_last = _read(u, at + 2 * B * kd + row[:, 0])
    # 2. The drafts: slot i (position S + i) drawn from q's law for S + i
    q = c.q.gather(1, (S - sb + slot).clamp(max=n - 1)[None, :, None].expand(B, n, V))  # (B, n, V)
    drafts = torch.where(slot < kd, draw_at(q, u_draft), mask_id)  # (B, n)
    # 3. The pass: the newest token, the n draft slots, the block's n - 1 noisy states (state g
    # knows its first g tokens, text or drafts), the next block all [MASK]
    pos, mask, known = round_layout(c.pos, sb, (0, kd, n, n - 1, True), n, W, len(c.cols), slot.device)
    at_block = sb + slot  # (n,)
    from_drafts = drafts.gather(1, (at_block - S).clamp(0, n - 1).expand(B, n))
    block = torch.where(at_block < S, c.text[:, at_block], from_drafts)  # (B, n)
    noisy = torch.where(known, block[:, None], mask_id).flatten(1)  # (B, (n - 1) n)
    newest = c.text.gather(1, (S - 1).expand(B, 1))
    ids = torch.cat([newest, drafts, noisy, torch.full_like(drafts, mask_id)], 1)
    logits = no_mask_logit(model(ids, kv_cache=c, rope_pos=pos, attn_mask=mask), mask_id)
    # 4. The check: the drafts kept, then the first rejected one redrawn, or the bonus token
    p = probs(logits[:, :n + 1], opts)  # (B, n + 1, V) the clean half's next-token laws
    tokens, m, drew = check_drafts(p, q, drafts, kd, u_check, u_last, bonus)
    at = at + live * (2 * B * kd + B * drew)
    m = m * live
    # 5. Commit: the tokens into the text (past them, unread), the cache's length, and the next
    # round's q: the noisy state of the newest token r (its columns 1 + n + n (r - sb); the last
    # state's are the next block's, which r = e - 1 and r = e both draft from)
    c.text.scatter_(1, (S + torch.arange(n + 1, device=S.device)).expand(B, n + 1), tokens)
    r = S + m - 1
    state = 1 + n + n * (r - sb).clamp(0, n - 1) + slot  # (n,)
    q_next = probs(logits.gather(1, state[None, :, None].expand(B, n, V)), opts)
    c.q.copy_(torch.where(live, q_next, c.q))
    c.drafting.copy_(c.drafting | live)
    c.pos.add_(m)
    return m, at, p


def _read(u, at):
    """The uniforms u at indices `at` (any shape; past u's end, unread: clamped)."""
    return u[at.clamp(max=len(u) - 1).to(u.device)]


# ---------------------------------------- the objective
def clean_check(cfg, opts):
    """Whether the clean half samples: --bd3_speculate on a --bd3_ar network (else blocks)."""
    return opts.bd3_speculate and cfg.bd3_ar > 0


class BlockDiffusion(Objective):
    """--objective=bd3: the block NELBO above, sampled block by block (sample_bd3), or by the clean
    half's AR drafted by the noisy half (sample_clean_ar, --bd3_speculate)."""
    MODEL = dict(time_cond="none")  # each block has its own t, and its [MASK] count tells its rate
    IGNORES = {**dict.fromkeys(("time_cond", "loss_type"), "it trains the block-diffusion bound, with no time input"),
               "semi_ar_length": "it decodes in its own blocks of bd3_block tokens",
               **dict.fromkeys(("dual_ar", "dual_sample"),
                               "masked diffusion's dual objective; block diffusion's next-token loss is --bd3_ar, its "
                               "sampler --bd3_speculate"),
               **dict.fromkeys(("mask_ramp", "mask_ramp_from"),
                               "masked diffusion's curriculum on t: use --objective=mdlm"),
               **dict.fromkeys(("distill_from", "distill_steps"), "distill.py distils masked diffusion: use "
                               "--objective=mdlm")}
    CONTINUES_ONLY = True  # continues a prompt block by block,
    ANY_LENGTH = True  # past the context
    BLOCKS = True
    LOSS_KEY = "bd3_loss"  # its training loss is picked by bd3_loss (loss_type is mdlm's)
    # schedule counts would end each block's denoise() in an argmax: a block reveals linearly
    SAMPLER_DEFAULTS = dict(tokens_per_step="linear")

    def unread(self, cfg, opts):
        """Under --bd3_speculate, all but the law and the replay's pace: it drafts and checks whole
        blocks."""
        return sampler_keys_but(*LAW_KEYS, "replay_steps", "bd3_speculate") if clean_check(cfg, opts) else ()

    def check(self, cfg, opts, given=(), training=True):
        if not 1 <= cfg.bd3_block <= cfg.block_size or cfg.block_size % cfg.bd3_block:
            raise UserError(f"bd3_block={cfg.bd3_block} must divide block_size={cfg.block_size}: e.g. --bd3_block=4")
        if cfg.bd3_ar < 0:
            raise UserError(f"bd3_ar={cfg.bd3_ar} weighs the clean half's next-token loss: give 0 (off) or more, e.g. "
                            f"1")
        if training:  # the training draws' band (a sampler reads none of it)
            check_band(cfg)
        if opts.bd3_speculate and not cfg.bd3_ar and "bd3_speculate" in given:  # a preset's falls back to blocks
            raise UserError("--bd3_speculate samples the clean half's next-token model, which only a --bd3_ar network "
                            "has trained: drop --bd3_speculate, or use a model trained with --bd3_ar=1")
        if clean_check(cfg, opts) and 2 * cfg.bd3_block > cfg.block_size:  # keep = 0: a moved window holds no text
            raise UserError(f"--bd3_speculate needs bd3_block <= block_size / 2 = {cfg.block_size // 2} (its window "
                            f"moves by whole blocks and keeps half): e.g. --bd3_block=4")
        clash = [k for k in self.unread(cfg, opts) if k in given]
        if clash:
            raise UserError(f"--{clash[0]} does not apply with --bd3_speculate (it drafts and checks whole blocks, at "
                            f"temperature, top_k and top_p only): drop one of them")
        if "tokens_per_step" in given and opts.tokens_per_step == "schedule" and not opts.adaptive:
            raise UserError("--tokens_per_step schedule would end each of block diffusion's blocks in an argmax: "
                            "give linear (its default) or cosine")
        # no steps <= T limit: block counts are linear (or cosine), never on the schedule's grid
    def options(self, cfg):
        """The loss's switches."""
        share = SELF_COND_SHARE if cfg.self_cond else 0.0
        return LossOptions(loss_type=cfg.bd3_loss, self_cond=share, ar_weight=cfg.bd3_ar)

    def draws(self, x, cfg, schedule, tok, draw):
        """A t per block stratified over the global batch in the band, then the masks and
        self-conditioning's rows, for mask_draws copies."""
        # the schedule's tables on x's device now: a CUDA graph of loss() would own a first copy
        schedule.on(x.device)
        n = len(x) * cfg.mask_draws  # the copies' sequences
        draw = repeat_draws(draw, cfg.mask_draws, len(x))
        band = band_times(schedule, cfg.mask_min, cfg.mask_max)
        t = bd3_times(n, cfg.block_size // cfg.bd3_block, band, draw.generator, x.device, draw.offset, draw.total,
                      draw.u)
        return block_draws((n, x.size(1)), t, self.options(cfg).self_cond, draw.generator, x.device, len(band))

    def loss(self, model, x, cfg, schedule, tok, drawn):
        copies = x.repeat(cfg.mask_draws, 1)
        return bd3_loss(model, copies, schedule, tok.mask_id, cfg.bd3_block, drawn=drawn, opts=self.options(cfg))[0]

    def eval_times(self, cfg, L):
        return L // cfg.bd3_block  # one t per block

    def bound(self, model, x, cfg, schedule, tok, t, generator):
        opts = LossOptions(self_cond=1.0 if cfg.self_cond else 0.0)
        drawn = block_draws(x.shape, t, opts.self_cond, generator, x.device, schedule.T)  # every t allowed: k = T
        _, nelbo, aux = bd3_loss(model, x, schedule, tok.mask_id, cfg.bd3_block, drawn, opts)
        return nelbo, dict(scored=aux["masked"], pred=aux["logits"].argmax(-1), logits=aux["logits"],
                           t_tok=aux["t_tok"])

    def ar_nll(self, model, windows, cfg, mask_id):
        return ar_nll(model, windows, cfg, mask_id)

    def flops(self, model, cfg):
        """FLOPs per token of the two-stream pass over its n columns (x_t, and x_0 less its last
        block unless bd3_ar; dense SDPA saves nothing on the mask) times n / L; self-conditioning
        adds a forward (2 of 6 per weight) for half the rows; each of mask_draws is a pass."""
        n, sc = 2 * cfg.block_size - (0 if cfg.bd3_ar else cfg.bd3_block), 7 / 6 if cfg.self_cond else 1
        return model.flops_per_token(n) * n / cfg.block_size * sc * cfg.mask_draws, n

    def sample(self, model, x, gen_mask, cfg, opts, mask_id, generator=None, on_step=None):
        P = prompt_length(x, gen_mask)
        blocks = Blocks(size=cfg.bd3_block, mask_id=mask_id)
        if clean_check(cfg, opts):
            return sample_clean_ar(model, x[:, :P], x.size(1) - P, blocks, opts, generator, on_step)
        schedule = Schedule(cfg.diffusion_steps, cfg.schedule)
        return sample_bd3(model, x[:, :P], x.size(1) - P, blocks, schedule, opts, generator, on_step)

    def decodes(self, cfg, opts, batch):
        return clean_check(cfg, opts)  # the AR's step at batch > 1, the drafting round's pass at 1 (sample_clean_ar)

    def passes(self, cfg, opts, n_gen, n_prompt=0):
        """Passes a sample: min(steps, positions) per block (None: adaptive, or speculation)."""
        if opts.adaptive or clean_check(cfg, opts):
            return None
        k = cfg.bd3_block
        end = -(-(n_prompt + n_gen) // k) * k  # the last block is generated whole, then cut
        return sum(min(opts.steps, b + k - max(b, n_prompt)) for b in range(n_prompt // k * k, end, k))

    def describe(self, cfg, opts, brief=False):
        k = cfg.bd3_block
        if clean_check(cfg, opts) and brief:
            return f"bd3 L'={k}, drafts checked by its AR"
        if clean_check(cfg, opts):
            return (f"block diffusion's clean half (its AR) + KV cache, drafted {k} a round by the noisy half at "
                    f"batch 1 (self-speculative; alone at batch > 1)")
        if brief:  # the settings off its defaults (SAMPLER_DEFAULTS: its own)
            own = {key: getattr(SamplerOptions(), key) for key, v in self.SAMPLER_DEFAULTS.items()
                   if getattr(opts, key) == v}
            return f"bd3 L'={k}, " + replace(opts, steps=min(opts.steps, k), **own).describe(brief, per="/block")
        return f"block diffusion, blocks of {k} with a KV cache, " + block_options(opts, k).describe(per=" per block")
