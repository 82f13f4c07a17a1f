"""Block diffusion (BD3-LM, Arriola et al. 2025), end to end: the attention mask, the bound with per-block times, the
two-stream training pass, and block-by-block decoding with a KV cache of the clean blocks.

Cut the window into blocks of L' tokens. log p(x) = sum_b log p(x^b | x^<b), and each block's term is bounded by
the masked-diffusion NELBO of that block alone (diffusion.py), given the clean earlier blocks, with its own t (eq. 6):

    -log p(x) <= sum_b E_t_b E_q [ T w(t_b) * sum_{i in block b, masked} -log p(x0_i | x_t^b, x0^<b) ]

One forward pass covers every block: the network reads [x_t ; x_0] (2L tokens) under bd3_attn_mask, and the loss
sits on the noisy half. L' = 1 is the AR model (in expectation: a masked token sees only the clean tokens before
it); L' = L is MDLM. --bd3_ar also trains the clean half, then token-causal, on the next token in the same pass (AR
and diffusion together, as dual-objective LMs); the bound is still the noisy half's.

Decoding goes left to right, a block at a time, against a KV cache of the clean blocks before it (a reverse step
costs one block, not the context): each block is denoised by sampler.denoise (with all its switches); or, with
--bd3_speculate on a --bd3_ar network, the clean half's AR samples token by token, the noisy half drafting whole
blocks (sample_clean_ar, whose speculative-sampling rule keep_or_redraw lives here, its one user). As in training,
the block and its clean context sit in a window of block_size tokens (RoPE positions 0..block_size-1, blocks aligned
to its start); when the next block does not fit, the window jumps and keeps its last half (in whole blocks), whose
keys/values are recomputed once: every step sees what the network saw in training, and the cached decode equals the
two-stream pass over the whole window (tests/helpers.py) at any length. A finished block enters the cache in the
next block's first step.

    python train.py baby --objective=bd3 --bd3_block=4
    python inference.py --checkpoint artifacts/models/baby/model.pt --prompt "ROMEO:" --gen-len 600
"""
import time
from dataclasses import replace
from functools import lru_cache

import torch
import torch.nn.functional as F

import sampler
from common import (LossOptions, Step, band_times, check_band, draw, draw_device, filter_logits, masking_draws,
                    no_mask_logit, on_device, repeat_draws, self_condition_input, stratified_times)
from config import CHOICES
from decode import decode, new_kv_cache
from sampler import REVEAL_KEYS, SamplerOptions
from utils.errors import UserError


# ---------------------------------------------------------------------------- attention masks
@lru_cache(maxsize=16)
def bd3_attn_mask(L, block, device, causal=False):
    """Block-diffusion attention over [x_t ; x_0] (2L, 2L) bool, True = may attend (BD3-LM, Arriola et al. 2025): a
    noisy query of block b sees its own noisy block (both ways) and the clean blocks < b; a clean query of block b sees
    the clean blocks <= b (causal: the clean tokens up to its own); no clean query sees a noisy key. Built once."""
    i = torch.arange(2 * L, device=device)
    clean, blk = i >= L, (i % L) // block  # (2L,) which half, which block
    q_clean, k_clean, qb, kb = clean[:, None], clean[None, :], blk[:, None], blk[None, :]
    noisy_own = ~q_clean & ~k_clean & (qb == kb)
    noisy_ctx = ~q_clean & k_clean & (kb < qb)
    clean_causal = q_clean & k_clean & ((i[None, :] <= i[:, None]) if causal else (kb <= qb))
    return noisy_own | noisy_ctx | clean_causal


# ---------------------------------------------------------------------------- the bound
BD3_LOSSES = CHOICES["bd3_loss"]


def bd3_times(n, n_blocks, allowed, generator=None, device="cpu", offset=0, total=None, u=None):
    """A time for every block of n sequences: (n, n_blocks) long. The n * n_blocks draws are stratified_times over
    the global batch's total * n_blocks blocks, mapped onto `allowed`, then shuffled over (sequence, block) with
    `generator` so the blocks of one sequence get unrelated strata."""
    dev = draw_device(device)  # drawn where they are used: a keyed generator's times, no host copy
    idx = stratified_times(n * n_blocks, len(allowed), generator, dev, offset * n_blocks, (total or n) * n_blocks, u)
    perm = torch.randperm(len(idx), generator=on_device(generator, dev), device=dev)
    return (idx[perm] - 1 + int(allowed[0])).view(n, n_blocks).to(device)  # allowed: a run of times on the host


def bd3_logits(model, xt, x0, block, mask_id, sc=None, clean=False):
    """One block-diffusion pass: the logits of the noisy half of [xt ; x0] (B, 2L) under bd3_attn_mask, with the
    [MASK] logit at -inf. Returns (B, L, V). sc (B, L, V): self-conditioning's input for the noisy half (the clean
    half reads zeros). The clean half is the context of later blocks, so its last block, context for no one, is left
    out (L' = L: all of it, exactly MDLM's pass with time_cond='none'). clean=True, on a clean_causal network
    (--bd3_ar), keeps the whole clean half and also returns its next-token logits (B, L - 1, V) of x0[:, 1:]: (noisy
    logits, next-token logits)."""
    L, causal = x0.size(1), getattr(getattr(model, "args", None), "clean_causal", False)
    if clean:  # the whole clean half, each column's logits predicting the next token
        assert causal, "the next-token logits of the clean half need a clean_causal network (--bd3_ar)"
        sc = None if sc is None else torch.cat([sc, torch.zeros_like(sc)], 1)
        out = model(torch.cat([xt, x0], 1), attn_mask=bd3_attn_mask(L, block, x0.device, True),
                    rope_pos=torch.arange(L, device=x0.device).repeat(2), sc=sc)  # both halves at 0..L-1
        return no_mask_logit(out[:, :L], mask_id), no_mask_logit(out[:, L:-1], mask_id)
    if block == L:  # one block: no clean context, MDLM's pass
        return no_mask_logit(model(xt, sc=sc), mask_id)
    n = 2 * L - block  # the last clean block is context for no one: left out
    rope = torch.arange(L, device=x0.device).repeat(2)[:n]  # both halves at positions 0..L-1
    if sc is not None:
        sc = torch.cat([sc, sc.new_zeros(sc.size(0), n - L, sc.size(2))], 1)  # (B, n, V)
    mask = bd3_attn_mask(L, block, x0.device, causal)[:n, :n]
    # the noisy half by a slice of the head's input: no sync, no graph break
    logits = model(torch.cat([xt, x0[:, :L - block]], 1), attn_mask=mask, rope_pos=rope, sc=sc, head_cols=L)
    return no_mask_logit(logits, mask_id)  # x0 is never [MASK]


def bd3_loss(model, x0, schedule, mask_id, block, generator=None, t=None, allowed=None, opts=LossOptions(),
             drawn=None):
    """Block-diffusion NELBO of x0 (B, L) with blocks of `block` tokens. t (B, L // block) per-block times, drawn
    here (stratified over the batch) if None, from `allowed` (band_times; default 1..T). Each block is masked with
    probability 1 - alpha(t_b) and weighted by k * w(t_b), k = len(allowed): with every t allowed that is T * w(t),
    so the sum over blocks estimates sum_b NELBO(x^b | x^<b) >= -log p(x0); a clipped band estimates only its share
    (train with it, never report it). opts: the switches of common.LossOptions; loss_type='all_ce' trains the
    plain CE of every noisy position, no w(t); ar_weight > 0 adds the clean half's next-token CE (--bd3_ar). The
    NELBO returned is the same whatever is trained. drawn: the pass's draws made ahead (common.Drawn, draws(): a
    compiled step's, the pass then a pure function of its tensors; its n_times is k), else the times, the masks and
    self-conditioning's rows are drawn here from generator. Returns (loss, per-sequence NELBO in nats/token (B,),
    dict(t, t_tok (B, L), masked, logits, ce))."""
    B, L = x0.shape
    assert L % block == 0, f"block {block} must divide the window {L}"
    if drawn is None:
        allowed = torch.arange(1, schedule.T + 1) if allowed is None else allowed
        t = bd3_times(B, L // block, allowed, generator, x0.device) if t is None else t
        drawn = masking_draws(x0.shape, t, opts.self_cond, generator, x0.device, len(allowed))
    t = drawn.t
    t_tok = t.repeat_interleave(block, 1)  # (B, L) each token's block time
    p = schedule.mask_prob(t_tok).to(torch.float32)
    masked = drawn.uniform < p
    xt = torch.where(masked, torch.full_like(x0, mask_id), x0)
    sc = None
    if opts.self_cond:  # the first pass is the same two-stream pass, without sc, for the chosen rows
        sc = self_condition_input(lambda r: bd3_logits(model, xt if r is None else xt[r], x0 if r is None else x0[r],
                                                       block, mask_id), masked, opts.self_cond, rows=drawn.rows)
    # ar_weight: the clean half's next-token logits too
    out = bd3_logits(model, xt, x0, block, mask_id, sc=sc, clean=opts.ar_weight > 0)
    logits, nxt = out if opts.ar_weight > 0 else (out, None)
    ce = F.cross_entropy(logits.reshape(B * L, -1), x0.view(-1), reduction="none").view(B, L)
    w = (drawn.n_times * schedule.on(x0.device)[1][t_tok]).float()  # (B, L) importance weight k * w(t_b)
    nelbo = (w * ce * masked).sum(1) / L  # (B,) nats per token, normalised by L as the MDLM bound
    loss = ce.mean() if opts.loss_type == "all_ce" else nelbo.mean()
    if nxt is not None:
        loss = loss + opts.ar_weight * F.cross_entropy(nxt.reshape(-1, nxt.size(-1)), x0[:, 1:].reshape(-1))
    return loss, nelbo.detach(), dict(t=t, t_tok=t_tok, masked=masked, logits=logits.detach(), ce=ce.detach())


# ---------------------------------------------------------------------------- decoding
class CleanCache:
    """Keys/values of the clean context, per layer, in buffers (B, H, capacity, D) written in place (grown by
    doubling), and its token ids (B, n). model.Attention calls update(k, v) per layer with the new columns' keys/values
    (after RoPE) and gets [cached ; new] back, a view: no copy of the context a pass. The first `store` new columns
    (clean blocks entering the context) are kept, a noisy block's never: the next pass writes over them."""

    def __init__(self, n_layer):
        self.k, self.v, self.n = [None] * n_layer, [None] * n_layer, [0] * n_layer
        self.layer, self.store, self.rows, self.ids = 0, 0, None, None

    def __len__(self):
        return 0 if self.ids is None else self.ids.size(1)

    def update(self, k, v):
        i, n, m = self.layer, self.n[self.layer], k.size(2)
        self.layer = (i + 1) % len(self.k)
        if self.rows is not None:  # a subset of the rows reads the cache (CachedBlockModel); nothing enters it
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

    def truncate(self, n):
        """Keep the first n columns of every layer (sample_clean_ar: the newest token and the drafts a round kept)."""
        self.n = [n] * len(self.n)


@lru_cache(maxsize=64)
def pending_mask(n0, m, block, device, causal=False):
    """Attention of one pass over [m pending clean columns ; a noisy block] after n0 cached ones: (m + block,
    n0 + m + block) bool. The clean columns see the cache and each other as the clean half in training
    (block-causally, or token-causally: causal), never the noisy block; the noisy block sees everything."""
    mask = torch.ones(m + block, n0 + m + block, dtype=torch.bool, device=device)
    mask[:m, n0:n0 + m] = bd3_attn_mask(m, block, device, causal)[m:, m:]  # the clean-clean quarter
    mask[:m, n0 + m:] = False
    return mask


class CachedBlockModel:
    """denoise()'s model while it denoises one block: handed the window (clean context, then the block), it runs only
    the block through the network against the cached context. Context the cache lacks (the prompt, the block finished
    last, a window recomputed after a jump) rides along in the same pass and enters the cache. denoise() may pass a
    subset of the rows (threshold decoding drops finished ones): their cache rows are those with equal context ids."""

    def __init__(self, model, cache, block):
        self.model, self.cache, self.block, self.args = model, cache, block, model.args

    def __call__(self, idx, t=None, positions=None, sc=None):
        kv, n0 = self.cache, len(self.cache)
        m = idx.size(1) - self.block - n0  # clean columns not yet cached
        assert m >= 0 and m % self.block == 0 and n0 % self.block == 0, "the cache holds whole blocks of the window"
        if n0 and idx.size(0) != kv.ids.size(0):  # a subset of the rows (threshold): find each one's cache row
            assert not m, "new context enters the cache with every row"
            same = (idx[:, None, :n0] == kv.ids[None]).all(-1)  # (R, B)
            assert same.any(1).all(), "a row's context is not in the cache"
            kv.rows = same.float().argmax(1)
        if positions is not None:  # denoise()'s flat indices into the window (the noisy block's) -> its columns n0..
            positions = positions // idx.size(1) * (idx.size(1) - n0) + positions % idx.size(1) - n0
        mask = pending_mask(n0, m, self.block, idx.device, getattr(self.args, "clean_causal", False)) if m else None
        kv.store = m
        try:
            logits = self.model(idx[:, n0:], kv_cache=kv, start_pos=n0, attn_mask=mask, positions=positions,
                                sc=None if sc is None else sc[:, n0:])  # zeros over the clean columns, as in training
        finally:
            kv.store, kv.rows = 0, None
        if m:
            kv.ids = idx[:, n0:n0 + m] if kv.ids is None else torch.cat([kv.ids, idx[:, n0:n0 + m]], 1)
        if positions is None:  # the window's shape, zeros over the context (cached and riding along)
            logits = torch.cat([logits.new_zeros(idx.size(0), n0 + m, logits.size(-1)), logits[:, m:]], 1)
        return logits


class BlockOutput:
    """sample_bd3's output while it is decoded block by block: the tokens (B, total) in whole blocks (the first may
    hold the prompt's last tokens, the last is generated whole and cut to `width`), the generated positions, each
    token's confidence (what on_step reads), and the reverse steps and forward passes so far."""

    def __init__(self, prompt, gen_len, block, mask_id):
        B, P = prompt.shape
        dev = prompt.device
        self.width = P + gen_len  # the columns returned
        self.block = block
        total = -(-(P + gen_len) // block) * block  # whole blocks
        self.out = torch.cat([prompt, torch.full((B, total - P), mask_id, dtype=prompt.dtype, device=dev)], 1)
        self.gen = torch.arange(total, device=dev)[None].expand(B, -1) >= P  # (B, total)
        self.conf = torch.zeros(B, total, dtype=torch.float64, device=dev)  # each token's, as on_step reads it
        self.starts = range(P // block * block, total, block)  # from the first block holding a generated position
        self.nfe = torch.zeros(B, dtype=torch.long)  # forward passes each sample took part in
        self.steps = 0  # batched forward passes

    def hook(self, on_step, lo, hi, b):
        """The on_step denoise() gets while it decodes block b in the window [lo, hi): on_step called with full()'s
        Step over the whole output. None without an on_step (denoise() then builds no Step)."""
        def block_step(st):
            on_step(self.full(st, lo, hi, b))
        return None if on_step is None else block_step

    def full(self, st, lo, hi, b):
        """denoise()'s Step for the window [lo, hi) -> the same Step over the whole output's first `width` columns
        (earlier blocks as committed, later ones still [MASK]); steps and NFE counted over the whole generation."""
        def put(base, w):  # base with its columns [lo, hi) replaced by w
            return torch.cat([base[:, :lo], w, base[:, hi:]], 1)[:, :self.width]

        zeros = torch.zeros_like(self.gen)
        n_blocks = len(self.starts)
        self.conf[:, hi - self.block:hi] = st.conf[:, -self.block:]  # this block's; the context keeps its blocks'
        return replace(st, x=put(self.out, st.x), prev=put(self.out, st.prev), revealed=put(zeros, st.revealed),
                       remasked=put(zeros, st.remasked), gen_mask=self.gen[:, :self.width],
                       conf=self.conf[:, :self.width].clone(), step=self.steps + st.step, nfe=self.nfe + st.nfe,
                       block=b, n_blocks=n_blocks, finished=[f and b == n_blocks - 1 for f in st.finished])


@torch.no_grad()
def sample_bd3(model, prompt, gen_len, block, schedule, mask_id, opts, generator=None, on_step=None):
    """Continue prompt (B, P) by gen_len tokens, block by block, each denoised with opts (SamplerOptions; steps per
    block, at most its generated tokens; tokens_per_step='schedule' becomes 'linear'). on_step gets denoise()'s Step
    over the whole output (B, P + gen_len), block / n_blocks / nfe / step counted over the whole generation.
    Returns (tokens (B, P + gen_len), stats: nfe, nfe_per_sample, seconds, seconds_per_sample, blocks)."""
    t0 = time.perf_counter()
    W = model.args.block_size
    if W % block or opts.semi_ar_length:
        raise ValueError(f"block {block} must divide the context {W}; semi-AR blocks do not apply to bd3")
    if opts.tokens_per_step == "schedule" and not opts.threshold:
        # denoise()'s schedule counts end each call with a greedy pass (the reference's step into t = 0): once per
        # block here, that would make every L'-th token an argmax (every token at L' = 1). Equal counts instead.
        opts = replace(opts, tokens_per_step="linear")
    keep = min((W // 2) // block * block, W - block)  # kept when the window jumps: half of it, in whole blocks
    o = BlockOutput(prompt, gen_len, block, mask_id)
    lo = 0  # the window's start: blocks are aligned to it, as in training
    denoiser = CachedBlockModel(model, CleanCache(model.args.n_layer), block)
    for b, pos in enumerate(o.starts):
        if pos - lo + block > W:  # the block does not fit: jump, keeping the last `keep` clean tokens
            lo = pos - keep
            denoiser.cache = CleanCache(model.args.n_layer)  # refilled, with the kept tokens, by the block's first step
        hi = pos + block
        # the context is fixed text to denoise(): only this block is generated
        now = torch.cat([torch.zeros_like(o.gen[:, lo:pos]), o.gen[:, pos:hi]], 1)
        x, st = sampler.denoise(denoiser, o.out[:, lo:hi], now, schedule, mask_id, opts, generator,
                                o.hook(on_step, lo, hi, b))
        o.out[:, lo:hi] = x
        o.nfe += torch.tensor(st["nfe_per_sample"])
        o.steps += st["nfe"]
    seconds = time.perf_counter() - t0
    return o.out[:, :o.width], dict(nfe=o.steps, nfe_per_sample=o.nfe.tolist(), seconds=seconds,
                                    seconds_per_sample=[seconds] * len(prompt), blocks=len(o.starts))


# ------------------------------------------------------------------------ self-speculative decoding (--bd3_speculate)
def probs(logits, opts):
    """The sampling distribution (..., V) float64 of logits under the sampler's temperature, top_k and top_p (opts, a
    SamplerOptions): the target p and the proposal q of speculative sampling, which must be the laws drawn from
    (argmax one-hot at temperature 0, where the check keeps a draft exactly when it is the target's argmax)."""
    if opts.temperature == 0:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.size(-1)).double()
    return filter_logits(logits, opts.temperature, opts.top_k, opts.top_p).exp()


def keep_or_redraw(p, q, drafts, generator):
    """Speculative sampling (Leviathan et al. 2023; Chen et al. 2023): draft i is kept while u < p_i / q_i, the first
    rejected is redrawn from max(0, p_i - q_i) (normalised), a bonus token drawn from p when all are kept; whatever q,
    every token is p-distributed given those before it. p (B, k + 1, V): the target's distributions (its last the
    bonus's, absent where the block ends); q (B, k, V): the drafter's, of drafts (B, k). Returns the round's tokens
    (B, j + 1), j the fewest drafts any row kept (rows advance together): token j is each row's redraw from the
    residual max(0, p_j - q_j) (a row that kept draft j keeps it), or the bonus draw from p_k when every row kept all
    k (a p of k rows has no bonus: the k drafts). The one host read a round is j, how many columns the next pass has."""
    B, k = drafts.shape
    if k == 0:
        return draw(p[:, 0], generator)[:, None]
    pd = p[:, :k].gather(-1, drafts[..., None])[..., 0]  # (B, k) each draft's probability under p, and under q
    qd = q.gather(-1, drafts[..., None])[..., 0]
    dev = draw_device(p.device)
    u = torch.rand(B, k, generator=on_device(generator, dev), device=dev, dtype=torch.float64).to(p.device)
    kept = (u * qd < pd).long().cumprod(1).sum(1)  # (B,) drafts kept before the first rejection
    j = int(kept.min())  # the round's one host read: how many columns the next pass has
    if j == k and p.size(1) == k:
        return drafts
    if j == k:
        last = draw(p[:, k], generator)
    else:
        resid = (p[:, j] - q[:, j]).clamp(min=0)
        resid = torch.where(resid.sum(-1, keepdim=True) > 0, resid, p[:, j])  # p = q: nothing to correct
        last = torch.where(kept > j, drafts[:, j], draw(resid, generator))
    return torch.cat([drafts[:, :j], last[:, None]], 1)


@lru_cache(maxsize=1024)
def round_layout(n0, kd, sb, states, nxt, n, device):
    """sample_clean_ar's pass after n0 cached clean columns (window positions 0..n0-1): the newest token and kd drafts
    as clean columns (positions n0..n0+kd), then a noisy copy of the block [sb, sb + n) per r in states (its columns
    before r known), then (nxt) the next block. Returns (RoPE positions (C,), attention (C, n0 + C) bool): clean
    columns see the clean columns up to their own (as the --bd3_ar clean half in training), a noisy copy sees the
    clean columns before its block and its own block (as a noisy block in training), never the other copies."""
    pos = torch.cat([torch.arange(n0, n0 + kd + 1), *[torch.arange(sb, sb + n)] * len(states),
                     *([torch.arange(sb + n, sb + 2 * n)] if nxt else [])])
    group = torch.cat([torch.zeros(kd + 1, dtype=torch.long), torch.arange(len(states) + nxt).repeat_interleave(n) + 1])
    keys = torch.cat([torch.arange(n0), pos])  # every key's position; the cached ones are clean
    clean_k = torch.cat([torch.ones(n0, dtype=torch.bool), group == 0])
    own = torch.cat([torch.zeros(n0, dtype=torch.long), group])[None] == group[:, None]
    start = torch.where(pos < sb + n, sb, sb + n)[:, None]  # each noisy column's block start
    mask = torch.where((group == 0)[:, None], clean_k & (keys[None] <= pos[:, None]),
                       clean_k & (keys[None] < start) | own)
    return pos.to(device), mask.to(device)


@torch.no_grad()
def ar_nll(model, windows, cfg, mask_id):
    """A --bd3_ar network's AR mode (B,), the law --bd3_speculate samples at temperature 1, on windows[:, 1:] (the
    bound's tokens): the mean NLL, the first from the noisy half's all-[MASK] block (the clean half has nothing to
    read yet, as in sample_clean_ar without a prompt), each next one from the clean half. None without --bd3_ar."""
    if not cfg.bd3_ar:
        return None
    x = windows[:, 1:]
    first = no_mask_logit(model(torch.full_like(x[:, :cfg.bd3_block], mask_id))[:, :1], mask_id)
    nxt = bd3_logits(model, torch.full_like(x, mask_id), x, cfg.bd3_block, mask_id, clean=True)[1]
    logp = torch.log_softmax(torch.cat([first, nxt], 1).double(), -1)
    return -logp.gather(-1, x[..., None]).squeeze(-1).mean(1)


def _draft_round(model, kv, seq, lo, q, q_at, end, fill, mask_id, opts, generator):
    """One round of sample_clean_ar at batch 1, one pass: the newest token of seq (B, S) and the drafts drawn from the
    proposal q (B, m, V) of the columns from q_at (none if q is None) as clean columns against the cache kv of the
    window from lo, checked by their next-token p (keep_or_redraw), beside the noisy states the next round drafts
    from. Returns (the tokens kept (B, k), the next round's proposal q or None, its q_at)."""
    S = seq.size(1)
    n = fill.size(1)  # the block
    dev = seq.device
    sb = lo + (S - lo) // n * n  # the block holding position S, aligned to the window's start
    e = sb + n
    drafts = draw(q[:, S - q_at:min(e, end) - q_at], generator) if q is not None else seq[:, :0]
    kd = drafts.size(1)
    # an outcome r (the newest token after this round) needs a state to draft from when a token follows it: in this
    # block, or in the next one where it fits the window
    outcomes = [r for r in range(S, S + kd + 1) if r + 1 < end and (r <= e - 2 or e + n - lo <= model.args.block_size)]
    states = tuple(r for r in outcomes if r <= e - 2)  # outcome r: the next drafts come from state r
    nxt = states != tuple(outcomes)  # an outcome finishes the block: the next block drafts
    known = torch.cat([seq[:, sb:], drafts], 1)  # the block's columns as this round would keep them
    noisy = [torch.cat([known[:, :r - sb], fill[:, r - e:]], 1) for r in states]  # state r: known before r, [MASK] on
    cols = torch.cat([seq[:, -1:], drafts, *noisy, *([fill] if nxt else [])], 1)
    if cols.size(1) == 1:  # one clean column: no mask, the fast kernel
        pos = torch.arange(S - 1 - lo, S - lo, device=dev)
        mask = None
    else:
        pos, mask = round_layout(S - 1 - lo, kd, sb - lo, tuple(r - sb for r in states), nxt, n, dev)
    kv.store = kd + 1
    logits = no_mask_logit(model(cols, kv_cache=kv, rope_pos=pos, attn_mask=mask), mask_id)
    p = probs(logits[:, :min(kd + 1, end - S)], opts)  # on the device: one host read a round (kd > 0)
    new = keep_or_redraw(p, q[:, S - q_at:S - q_at + kd] if kd else None, drafts, generator)
    kv.truncate(S - 1 - lo + new.size(1))  # the newest token and the kept drafts
    r = S + new.size(1) - 1  # the newest token: the next round drafts from the state of its outcome
    if r not in outcomes:
        return new, None, q_at
    if r in states:  # the block's noisy copy for r
        c = kd + 1 + n * states.index(r)
        return new, probs(logits[:, c:c + n], opts), sb
    return new, probs(logits[:, -n:], opts), e  # the next block's, all [MASK]: its drafts from e


@torch.no_grad()
def sample_clean_ar(model, prompt, gen_len, block, mask_id, opts=SamplerOptions(steps=1), generator=None,
                    on_step=None, draft=None):
    """Continue prompt (B, P) by gen_len exact samples of a --bd3_ar network's clean half, its next-token model (an
    AR), the noisy half drafting: one pass a round (--bd3_speculate). The pass reads the newest token and the drafts
    left in its block as clean columns against a KV cache of the text before: their next-token distributions p
    check the drafts (keep_or_redraw: each kept while u < p / q, the first rejected redrawn from max(0, p - q), a
    bonus token from p when all are kept), so any proposal keeps p's law (Leviathan et al. 2023). The same pass holds
    the noisy states the next round drafts from, one per outcome r: the block with the drafts before column r known
    and r onwards [MASK] (the newest token r is drawn by this pass, so no state knows it), or the next block all
    [MASK] after this one's drafts (_draft_round). The window is sample_bd3's (blocks aligned to its start; a block
    that does not fit restarts it on the last half, whose first round is a plain AR step). Rows advance by the row
    that kept fewest, so draft=None drafts at batch 1 only: at batch 16 a round kept 1.00 token and cost 3.1x a
    one-column pass (dev/LOG.md); there the clean half decodes alone in the AR's loop (its KV cache), the same law,
    its step CUDA-graphed under --compile (decode.decode on the static cache). A drafting round stays eager: its columns
    (the drafts left, a noisy copy per state, the next block) and the cache's kept length follow what the last round
    kept, read on the host; fixed shapes would pass the widest round every time (every state's copy, masked).
    opts: a SamplerOptions whose temperature, top_k and top_p shape p and q (the block sampler's switches do not
    apply). Returns (tokens (B, P + gen_len), stats: nfe, nfe_per_sample, seconds, seconds_per_sample, kept: drafts
    kept per pass)."""
    t0 = time.perf_counter()
    B, P = prompt.shape
    W = model.args.block_size
    dev = prompt.device
    end = P + gen_len
    keep = min((W // 2) // block * block, W - block)  # kept when the window jumps: half of it, in whole blocks
    fill = torch.full((B, block), mask_id, device=dev)  # a noisy block all [MASK]
    if draft is None:
        draft = B == 1
    seq = prompt  # the text so far
    lo = 0  # the window's start
    kv = None  # the window's cache of the text before the newest token
    q = None  # the drafter's proposal (B, m, V) for the columns from q_at; None: the next round drafts nothing
    q_at = 0
    passes = 0
    kept = 0  # drafts kept, over all rounds
    if not P:  # nothing for the clean half to read: the first token is the noisy half's, its block all [MASK]
        seq = draw(probs(no_mask_logit(model(fill)[:, :1], mask_id), opts), generator)
        passes = 1
    while seq.size(1) < end:
        S = seq.size(1)
        # a fresh window at the start, and when the newest token's block does not fit: the text before it cached
        if kv is None or (S - lo) // block * block + block > W:
            lo = 0 if kv is None and S // block * block + block <= W else S - keep
            kv = _window_cache(model, seq, lo, draft)
            q = None  # the first round after a jump is a plain AR step
        prev = seq
        if draft:
            new, q, q_at = _draft_round(model, kv, seq, lo, q, q_at, end, fill, mask_id, opts, generator)
            kept += new.size(1) - 1
        else:  # batch > 1: the clean half alone, as the AR decodes (its KV cache, its compiled step; dev/LOG.md)
            new = _clean_step(model, seq, kv, mask_id, opts, generator)
        seq = torch.cat([seq, new], 1)
        passes += 1
        if on_step is not None:
            on_step(_round_step(prev, seq, P, end, passes, mask_id))
    seconds = time.perf_counter() - t0
    return seq, dict(nfe=passes, nfe_per_sample=[passes] * B, seconds=seconds, seconds_per_sample=[seconds] * B,
                     kept=kept / max(passes, 1))


def _window_cache(model, seq, lo, draft):
    """sample_clean_ar's cache of a fresh window starting at lo: the text from lo up to the newest token (exclusive)
    passed once, causally. Drafting (batch 1): a CleanCache the rounds' clean columns extend; else the AR's KV cache,
    prefilled by decode, as the AR's own loop does."""
    S, B, dev = seq.size(1), seq.size(0), seq.device
    kv = CleanCache(model.args.n_layer) if draft else new_kv_cache(model, B, dev)
    n = S - 1 - lo  # the tokens before the newest one
    if n > 0 and draft:
        kv.store = n
        model(seq[:, lo:S - 1], kv_cache=kv, rope_pos=torch.arange(n, device=dev),
              attn_mask=torch.ones(n, n, dtype=torch.bool, device=dev).tril())
    elif n > 0:
        decode(model, seq[:, lo:S - 1], kv)  # the AR's prefill, causal over its cache
    return kv


def _clean_step(model, seq, kv, mask_id, opts, generator):
    """One token (B, 1) a row from the clean half's next-token law given the newest token and the cache before it:
    sample_clean_ar at batch > 1, one pass a token, the AR's decode step (CUDA-graphed under --compile)."""
    # the newest token, its strides the same at every token: a compiled step recompiles on new ones (a view's grow
    # with seq, and contiguous() keeps a (1, 1) view's)
    newest = seq[:, -1:].clone(memory_format=torch.contiguous_format)
    logits = (model.compiled_decode or decode)(model, newest, kv)
    logits[:, mask_id] = float("-inf")
    return draw(probs(logits, opts), generator)[:, None]


def _round_step(prev, seq, P, end, passes, mask_id):
    """sample_clean_ar's round as a Step over the whole output (the trace, --live): the tokens so far, [MASK] after."""
    B, S = seq.shape
    x = F.pad(seq, (0, end - S), value=mask_id)
    before = F.pad(prev, (0, end - prev.size(1)), value=mask_id)
    gen = torch.arange(end, device=seq.device)[None].expand(B, -1) >= P
    return Step(step=passes, nfe=torch.full((B,), passes), time=torch.zeros(B, dtype=torch.long), x=x, prev=before,
                gen_mask=gen, revealed=x != before, remasked=torch.zeros_like(gen),
                conf=torch.zeros(B, end, dtype=torch.float64), finished=[S >= end] * B)


# ---------------------------------------------------------------------------- the objective (objectives.py)
MODEL = dict(time_cond="none")  # each block has its own t, and its [MASK] count tells its rate
IGNORES = {**dict.fromkeys(("time_cond", "loss_type"), "it trains the block-diffusion bound, with no time input"),
           "semi_ar_length": "it decodes in its own blocks of bd3_block tokens",
           **dict.fromkeys(("dual_ar", "dual_sample"), "masked diffusion's dual objective; block diffusion's "
                                                         "next-token loss is --bd3_ar, its sampler --bd3_speculate"),
           **dict.fromkeys(("mask_ramp", "mask_ramp_from"), "masked diffusion's curriculum on t: use --objective=mdlm")}
CONTINUES_ONLY = ANY_LENGTH = BLOCKS = True  # continues a prompt block by block, past the context
LOSS_KEY = "bd3_loss"  # its training loss is picked by bd3_loss (loss_type is mdlm's)


def unread(cfg):
    """The sampler keys cfg's switches leave unread: under --bd3_speculate (clean_check: the clean half's AR, drafted
    by the noisy half) the block sampler's steps and reveal keys."""
    return ("steps", *REVEAL_KEYS) if clean_check(cfg) else ()


def check(cfg, given=()):
    if not 1 <= cfg.bd3_block <= cfg.block_size or cfg.block_size % cfg.bd3_block:
        raise UserError(f"bd3_block={cfg.bd3_block} must divide block_size={cfg.block_size}: e.g. --bd3_block=4")
    if cfg.bd3_loss not in BD3_LOSSES:
        raise UserError(f"bd3_loss={cfg.bd3_loss!r} is not one of {', '.join(BD3_LOSSES)}")
    if cfg.bd3_ar < 0:
        raise UserError(f"bd3_ar={cfg.bd3_ar} weighs the clean half's next-token loss: give 0 (off) or more, e.g. 1")
    band_problem = check_band(cfg)
    if band_problem:
        raise UserError(band_problem)
    if cfg.bd3_speculate and not cfg.bd3_ar and "bd3_speculate" in given:  # a preset's falls back to block sampling
        raise UserError("--bd3_speculate samples the clean half's next-token model, which only a --bd3_ar network has "
                        "trained: drop --bd3_speculate, or use a model trained with --bd3_ar=1")
    if clean_check(cfg) and 2 * cfg.bd3_block > cfg.block_size:  # keep = 0: a moved window would hold no text
        raise UserError(f"--bd3_speculate needs bd3_block <= block_size / 2 = {cfg.block_size // 2} (its window moves "
                        f"by whole blocks and keeps half): e.g. --bd3_block=4")
    clash = [k for k in unread(cfg) if k in given]
    if clash:
        raise UserError(f"--{clash[0]} does not apply with --bd3_speculate (it drafts and checks whole blocks, at "
                        f"temperature, top_k and top_p only): drop one of them")
    # no steps <= T limit: the block sampler's counts are linear (or cosine), never on the schedule's grid


def draws(x, cfg, schedule, tok, draw):
    """The random draws of the micro-batch x's loss (common.Drawn), made eagerly from the keyed generator: a t per
    block, stratified over the global batch's blocks (shared u), from the clipped band if one is set; the generator
    shuffles them, then draws the masks and self-conditioning's rows; mask_draws > 1: as many copies of each window."""
    # the schedule's tables on x's device now, eagerly: loss_of only reads them (a CUDA graph would own a first copy)
    schedule.on(x.device)
    n = len(x) * cfg.mask_draws  # the copies' sequences
    draw = repeat_draws(draw, cfg.mask_draws, len(x))
    band = band_times(schedule, cfg.mask_min, cfg.mask_max)
    t = bd3_times(n, cfg.block_size // cfg.bd3_block, band, draw.generator, x.device, draw.offset, draw.total, draw.u)
    return masking_draws((n, x.size(1)), t, options(cfg).self_cond, draw.generator, x.device, len(band))


def loss_of(model, x, cfg, schedule, tok, drawn):
    """The training loss of the micro-batch x (B, L) given its draws: a pure function of the model, x and drawn's
    tensors (the two-stream pass, its first pass for self-conditioning, the clean half's loss), what train.py
    compiles with the model."""
    copies = x.repeat(cfg.mask_draws, 1)
    return bd3_loss(model, copies, schedule, tok.mask_id, cfg.bd3_block, t=drawn.t, opts=options(cfg), drawn=drawn)[0]


def options(cfg):
    """The training loss's switches: self-conditioning feeds half the sequences their first pass's prediction."""
    return LossOptions(cfg.bd3_loss, 0.5 if cfg.self_cond else 0.0, cfg.bd3_ar)


def eval_times(cfg, L):
    return L // cfg.bd3_block  # one t per block


def bound(model, x, cfg, schedule, tok, t, generator):
    _, nelbo, aux = bd3_loss(model, x, schedule, tok.mask_id, cfg.bd3_block, generator=generator, t=t,
                             opts=LossOptions(self_cond=1.0 if cfg.self_cond else 0.0))
    return nelbo, dict(scored=aux["masked"], pred=aux["logits"].argmax(-1), logits=aux["logits"], t_tok=aux["t_tok"])


def flops(model, cfg):
    """The two-stream pass's per-token count over its n columns (x_t, and x_0 less its last block: all of it with
    bd3_ar; the mask saves no attention FLOPs in dense SDPA) times n / L per window token. Self-conditioning adds a
    forward of that pass (2 per weight) for half the sequences, as mdlm's; each of mask_draws is a pass of its own."""
    n, sc = 2 * cfg.block_size - (0 if cfg.bd3_ar else cfg.bd3_block), 7 / 6 if cfg.self_cond else 1
    return model.flops_per_token(n) * n / cfg.block_size * sc * cfg.mask_draws, n


def clean_check(cfg):
    """Whether the clean half's AR samples, the noisy half drafting (--bd3_speculate on a --bd3_ar network; a preset's
    --bd3_speculate on a network without one samples with the blocks' sampler, check() refuses a given one)."""
    return cfg.bd3_speculate and cfg.bd3_ar > 0


def sample(model, x, gen_mask, cfg, schedule, mask_id, generator=None, on_step=None):
    P = int(gen_mask[0].long().argmax()) if gen_mask[0].any() else x.size(1)  # a continuation: given text, then blanks
    opts = replace(SamplerOptions.from_config(cfg), semi_ar_length=0)  # it decodes in its own blocks
    if clean_check(cfg):
        return sample_clean_ar(model, x[:, :P], x.size(1) - P, cfg.bd3_block, mask_id, opts, generator, on_step)
    return sample_bd3(model, x[:, :P], x.size(1) - P, cfg.bd3_block, schedule, mask_id, opts, generator, on_step)


def passes(cfg, n_gen, n_prompt=0):
    """Forward passes per sample: min(steps, its positions) for each block (None: threshold, speculation)."""
    if cfg.threshold or clean_check(cfg):
        return None
    k = cfg.bd3_block
    end = -(-(n_prompt + n_gen) // k) * k  # the last block is generated whole, then cut
    return sum(min(cfg.steps, b + k - max(b, n_prompt)) for b in range(n_prompt // k * k, end, k))


def describe(cfg):
    if clean_check(cfg):
        return (f"block diffusion's clean half (its AR) + KV cache, drafted {cfg.bd3_block} a round by the noisy half "
                f"at batch 1 (self-speculative; alone at batch > 1)")
    opts, k = SamplerOptions.from_config(cfg), min(cfg.steps, cfg.bd3_block)
    steps = sampler.describe(replace(opts, steps=k, semi_ar_length=0)).replace(f"{k} steps", f"{k} steps per block")
    steps = steps.replace("schedule counts", "linear counts")  # sample_bd3: no greedy last step per block
    return f"block diffusion, blocks of {cfg.bd3_block} with a KV cache, {steps}"
