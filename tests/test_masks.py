"""No attention mask this project builds leaves a query with nothing to attend to (issue 89). A fully masked row is a
softmax over no keys: NaN on MPS, which then flows into every later layer and, through a KV cache, into later passes.
First each builder over its arguments (bd3_attn_mask, and the slice bd3_logits passes; pending_mask; round_layout at
the columns a round reads and at fixed shapes, its padding included; decode()'s mask over a static cache); then every
mask the samplers and losses actually hand scaled_dot_product_attention (the AR's decode eager and static, bd3's
drafting rounds eager and whole, its clean half alone, its block sampler, --dual_sample, the training passes of bd3 and
--dual_ar), recorded at the attention call.

    python -m pytest -q tests/test_masks.py
"""
import itertools

import pytest
import torch
import torch.nn.functional as F

import bd3
from diffusion import SamplerOptions, Schedule, causal_logits
from model import KVCache, ModelArgs, Transformer, decode

pytestmark = pytest.mark.core  # the core tier (pytest.ini): the maths, the loop, the samplers

V, MASK = 11, 10
CPU = torch.device("cpu")


def _empty_rows(mask):
    """The query rows of a boolean mask (..., queries, keys) that attend to nothing."""
    return (~mask.any(-1)).nonzero().tolist()


@pytest.mark.parametrize("L,block", [(8, 1), (8, 2), (8, 4), (8, 8), (16, 4)])
@pytest.mark.parametrize("causal", [False, True])
def test_bd3s_two_stream_mask_has_no_empty_row(L, block, causal):
    full = bd3.bd3_attn_mask(L, block, CPU, causal)
    n = 2 * L - block  # bd3_logits' pass leaves the last clean block out
    assert _empty_rows(full) == [] and _empty_rows(full[:n, :n]) == []


def test_the_pending_context_mask_has_no_empty_row():
    for n0, m, block, causal in itertools.product((0, 4, 8), (4, 8), (2, 4), (False, True)):
        assert _empty_rows(bd3.pending_mask(n0, m, block, CPU, causal)) == [], (n0, m, block, causal)


def test_a_rounds_layout_has_no_empty_row_read_columns_or_fixed_shapes():
    """Every (cached columns, the block's start, the drafts a round reads) a drafting round can meet in a context of
    16, blocks of 4: the columns an eager round reads, and the fixed shapes (every draft slot and noisy state, the
    unread ones masked: each still sees the newest token)."""
    W, n = 16, 4
    for n0 in range(W - 1):
        S = n0 + 1
        sb = S // n * n
        e = sb + n
        for kd in range(e - S + 1):
            fixed = bd3.round_layout(n0, sb, (0, kd, n, n - 1, True), n, W, W + n * n + 2 * n, CPU)[1]
            # the eager round's columns (_draft_round): the states its outcomes need, the next block if one needs it
            outcomes = [r for r in range(S, S + kd + 1) if r < e - 1 or e + n <= W]
            states = [r for r in outcomes if r < e - 1]
            nxt = len(states) != len(outcomes)
            keys = n0 + 1 + kd + n * (len(states) + nxt)
            read = bd3.round_layout(n0, sb, (S - sb, kd, kd, len(states), nxt), n, W, keys, CPU)[1]
            assert _empty_rows(fixed) == [] and _empty_rows(read) == [], (n0, kd)


def test_decodes_static_cache_mask_has_no_empty_row():
    cache = KVCache(1, 1, 1, 16, 2, CPU, torch.float32, static=False)
    cache.static, cache.end = True, 16  # the mask decode builds over a static cache's whole buffer
    for pos in range(16):
        cache.pos.fill_(pos)
        for n in range(1, 16 - pos + 1):
            seen = cache.cols[:cache.end] <= (cache.pos + cache.cols[:n])[:, None]
            assert _empty_rows(seen) == [], (pos, n)


def _net(**kw):
    torch.manual_seed(0)
    return Transformer(ModelArgs(vocab_size=V, block_size=16, n_layer=1, n_head=2, n_embd=16, time_cond="none",
                                 **kw)).eval()


def test_every_mask_the_samplers_and_losses_pass_has_no_empty_row(monkeypatch):
    seen, sdpa = [], F.scaled_dot_product_attention

    def recorded(q, k, v, attn_mask=None, **kw):
        if attn_mask is not None:
            seen.append(attn_mask)
        return sdpa(q, k, v, attn_mask=attn_mask, **kw)
    monkeypatch.setattr(F, "scaled_dot_product_attention", recorded)
    g, opts, blocks = torch.Generator().manual_seed(0), SamplerOptions(steps=2), bd3.Blocks(size=4, mask_id=MASK)
    prompt = torch.randint(0, MASK, (1, 3), generator=g)
    with torch.no_grad():
        for static in (False, True):  # the eager caches, and the static ones compiled replays run (here eager)
            ar, dual, clean = _net(causal=True), _net(), _net(clean_causal=True)
            for m in (ar, dual, clean):
                m.compiler = (lambda fn: fn) if static else None
            ar.generate(prompt, 20, opts, g, MASK)
            dual.generate(prompt, 10, opts, g, MASK)  # --dual_sample: the AR mode of a bidirectional network
            bd3.sample_clean_ar(clean, prompt, 20, blocks, opts, g)  # drafting rounds, batch 1
            bd3.sample_clean_ar(clean, prompt[:, :0], 20, blocks, opts, g)  # no prompt
            bd3.sample_clean_ar(clean, prompt.expand(2, -1), 20, blocks, opts, g)  # the clean half alone
        bd3.sample_bd3(_net(), prompt, 20, blocks, Schedule(10), opts, g)  # block diffusion, its cached context
        x = torch.randint(0, MASK, (2, 16), generator=g)
        bd3.bd3_logits(clean, torch.full_like(x, MASK), x, 4, MASK, clean=True)  # --bd3_ar's training pass
        bd3.bd3_logits(_net(), torch.full_like(x, MASK), x, 4, MASK)
        causal_logits(dual, x, MASK)  # --dual_ar's
    assert len(seen) > 100 and all(m.dtype == torch.bool for m in seen)
    assert [i for i, m in enumerate(seen) if _empty_rows(m)] == []
