"""Block diffusion (BD3-LM): the attention mask, the bound against hand computations and its AR / MDLM ends,
the block sampler's KV cache against the uncached pass, on untrained networks (a trained run: tests/test_bd3_run.py).
python -m pytest -q tests/test_bd3.py"""
import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from bd3 import (Blocks, CachedBlockModel, CleanCache, RoundCache, bd3_attn_mask, bd3_logits, bd3_loss, round_layout,
                 bd3_times, pending_mask, sample_bd3)
from diffusion import LossOptions, Schedule, band_times, stratified_times
from model import decode
from diffusion import diffusion_loss
from diffusion import SamplerOptions
from utils.draws import Law
from model import ModelArgs, Transformer
from helpers import WindowBlockModel, bd3_drawn, pick, uncached_bd3
from utils.errors import UserError

pytestmark = pytest.mark.core  # the core tier (pytest.ini): the maths, the loop, the samplers

CPU = torch.device("cpu")
V, MASK = 11, 10  # 10 tokens + [MASK]


def _tiny(block_size=16, **kw):
    torch.manual_seed(0)
    return Transformer(ModelArgs(vocab_size=V, block_size=block_size, n_layer=2, n_head=2, n_embd=32,
                                 diffusion_steps=10, time_cond="none", **kw)).eval()


def test_attention_mask_by_hand():
    # [x_t blocks 0, 1 ; x_0 blocks 0, 1], L = 4, L' = 2; rows attend to columns marked 1
    want = torch.tensor([[1, 1, 0, 0, 0, 0, 0, 0],   # noisy block 0: itself only
                         [1, 1, 0, 0, 0, 0, 0, 0],
                         [0, 0, 1, 1, 1, 1, 0, 0],   # noisy block 1: itself + clean block 0
                         [0, 0, 1, 1, 1, 1, 0, 0],
                         [0, 0, 0, 0, 1, 1, 0, 0],   # clean block 0: clean block 0
                         [0, 0, 0, 0, 1, 1, 0, 0],
                         [0, 0, 0, 0, 1, 1, 1, 1],   # clean block 1: clean blocks 0, 1
                         [0, 0, 0, 0, 1, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(bd3_attn_mask(4, 2, CPU), want)
    assert torch.equal(pending_mask(0, 4, 2, CPU)[:4, :4], want[4:, 4:])  # the cache's clean columns, as in training
    assert bd3_attn_mask(4, 2, CPU) is bd3_attn_mask(4, 2, CPU)  # built once per shape
    assert torch.equal(bd3_attn_mask(4, 1, CPU)[4:, 4:], torch.ones(4, 4).tril().bool())  # L' = 1: causal
    # --bd3_ar: the clean half token-causal (an AR model's mask), the noisy half's rows as before
    causal = bd3_attn_mask(4, 2, CPU, True)
    assert torch.equal(causal[4:, 4:], torch.ones(4, 4).tril().bool()) and torch.equal(causal[:4], want[:4])
    assert torch.equal(causal[4:, :4], want[4:, :4])
    assert torch.equal(pending_mask(0, 4, 2, CPU, True)[:4, :4], causal[4:, 4:])


def test_a_bd3_ar_networks_clean_half_predicts_each_next_token_from_the_tokens_before_it():
    m, L = _tiny(clean_causal=True), 16
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, 10, (2, L), generator=g)
    xt = torch.where(torch.rand(2, L, generator=g) < 0.5, MASK, x0)
    noisy, nxt = bd3_logits(m, xt, x0, 4, MASK, clean=True)
    assert nxt.shape == (2, L - 1, V)
    torch.testing.assert_close(noisy, bd3_logits(m, xt, x0, 4, MASK))  # the same noisy half as the plain pass
    for i in range(L - 1):  # change every token after i: the next-token logits up to i stay, later ones move
        y0 = x0.clone()
        y0[:, i + 1:] = (y0[:, i + 1:] + 1) % 10
        out = bd3_logits(m, xt, y0, 4, MASK, clean=True)[1]
        torch.testing.assert_close(out[:, :i + 1], nxt[:, :i + 1])
        assert i == L - 2 or not torch.allclose(out[:, i + 1:], nxt[:, i + 1:])
    with pytest.raises(AssertionError, match="clean_causal"):
        bd3_logits(_tiny(), xt, x0, 4, MASK, clean=True)


def test_bd3_ar_adds_its_weighted_next_token_ce_and_leaves_the_bound_alone():
    m, s = _tiny(clean_causal=True), Schedule(10)
    x0 = torch.randint(0, 10, (3, 16), generator=torch.Generator().manual_seed(2))
    runs = {w: bd3_loss(m, x0, s, MASK, 4, bd3_drawn(x0, 4, s, torch.Generator().manual_seed(5)),
                        LossOptions("all_ce", ar_weight=w)) for w in (0.0, 0.5)}
    xt = torch.where(runs[0.5][2]["masked"], MASK, x0)
    by_hand = F.cross_entropy(bd3_logits(m, xt, x0, 4, MASK, clean=True)[1].reshape(-1, V), x0[:, 1:].reshape(-1))
    assert runs[0.5][0].item() == pytest.approx(runs[0.0][0].item() + 0.5 * by_hand.item(), rel=1e-5)
    # the NELBO is the noisy half's, whatever the loss adds (to rounding: the pass with the clean half's last block
    # sums attention over more keys, masked or not, so the bits can differ by CPU kernel)
    torch.testing.assert_close(runs[0.5][1], runs[0.0][1], rtol=1e-6, atol=1e-6)


def test_mask_and_positions_of_a_plain_pass_change_nothing():
    m, x = _tiny(), torch.randint(0, 10, (2, 16))
    full = torch.ones(16, 16, dtype=torch.bool)
    torch.testing.assert_close(m(x, attn_mask=full, rope_pos=torch.arange(16)), m(x))


def _two_stream(m, xt, x0, block):
    return bd3_logits(m, xt, x0, block, MASK)  # (B, L, V)


@pytest.mark.parametrize("block", [1, 4])
def test_perturbing_clean_block_b_changes_no_noisy_logit_of_blocks_up_to_b(block):
    m, L = _tiny(), 16
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, 10, (2, L), generator=g)
    xt = torch.where(torch.rand(2, L, generator=g) < 0.5, MASK, x0)
    base = _two_stream(m, xt, x0, block)
    for b in range(L // block):
        y0 = x0.clone()
        y0[:, b * block:(b + 1) * block] = (y0[:, b * block:(b + 1) * block] + 1) % 10  # the clean half only
        out = _two_stream(m, xt, y0, block)
        upto = (b + 1) * block
        assert torch.equal(out[:, :upto], base[:, :upto]), f"clean block {b} leaked into noisy blocks <= {b}"
        if upto < L:
            assert not torch.allclose(out[:, upto:], base[:, upto:]), "later blocks should see clean block b"


def test_at_block_1_the_clean_stream_is_causal():
    m, L = _tiny(), 16
    x0 = torch.randint(0, 10, (2, L))
    xt = torch.full_like(x0, MASK)
    mask, rope = bd3_attn_mask(L, 1, CPU), torch.arange(L).repeat(2)
    base = m(torch.cat([xt, x0], 1), attn_mask=mask, rope_pos=rope)  # (B, 2L, V): both halves' logits
    for j in (3, 9, 15):
        y0 = x0.clone()
        y0[:, j] = (y0[:, j] + 1) % 10
        out = m(torch.cat([xt, y0], 1), attn_mask=mask, rope_pos=rope)
        assert torch.equal(out[:, L:L + j], base[:, L:L + j])  # clean positions before j
        assert torch.equal(out[:, :j + 1], base[:, :j + 1])  # noisy positions up to j (they see x0 < position)


def test_block_1_bound_equals_the_exact_ar_nll_in_expectation():
    """L' = 1: a masked noisy token sees only clean x0 before it, so its CE is the AR NLL of that token; and
    E_t[T w(t) 1{masked}] = sum_t w(t)(1 - alpha(t)) = 1. So the bound's mean is the exact NLL."""
    m, s, L = _tiny(), Schedule(10), 16
    x0 = torch.randint(0, 10, (4, L), generator=torch.Generator().manual_seed(1))
    exact_ce = torch.nn.functional.cross_entropy(_two_stream(m, torch.full_like(x0, MASK), x0, 1).reshape(-1, V),
                                                 x0.reshape(-1), reduction="none").view(4, L)
    exact = exact_ce.mean().item()
    reps = x0.repeat(256, 1)  # 1024 rows, stratified t over all 1024 * 16 blocks
    with torch.no_grad():
        _, nelbo, aux = bd3_loss(m, reps, s, MASK, 1, bd3_drawn(reps, 1, s, torch.Generator().manual_seed(2)))
    masked = aux["masked"]
    torch.testing.assert_close(aux["ce"][masked], exact_ce.repeat(256, 1)[masked], atol=1e-5, rtol=1e-5)
    se = nelbo.std().item() / math.sqrt(len(nelbo))
    assert abs(nelbo.mean().item() - exact) < 4 * se, (nelbo.mean().item(), exact, se)
    assert 0.5 < exact < 2 * math.log(V)  # a random network: CE near ln 10, not a degenerate 0


def test_one_block_is_mdlm():
    m, s = _tiny(), Schedule(10)
    x0 = torch.randint(0, 10, (3, 16))
    t = torch.tensor([2, 5, 9])
    with torch.no_grad():
        _, bd3, _ = bd3_loss(m, x0, s, MASK, 16, bd3_drawn(x0, 16, s, torch.Generator().manual_seed(4), t=t[:, None]))
        _, mdlm, _ = diffusion_loss(m, x0, s, MASK, generator=torch.Generator().manual_seed(4), t=t)
    torch.testing.assert_close(bd3, mdlm)


class ConstModel(torch.nn.Module):
    """The same logits everywhere, whatever it sees; honours positions= and head_cols= as Transformer does."""

    def __init__(self, logits):
        super().__init__()
        self.logits = torch.tensor(logits, dtype=torch.float32)

    def forward(self, idx, t=None, positions=None, head_cols=None, **kw):
        out = self.logits.expand(*idx.shape, -1).clone()
        return out[:, :head_cols] if positions is None else pick(out, positions)


def test_bd3_bound_equals_hand_computation():
    model = ConstModel([math.log(0.7), math.log(0.3), 5.0])  # token 2 is [MASK]: its big logit is ignored
    x0, s = torch.tensor([[0, 1, 0, 0]]), Schedule(4)
    t = torch.tensor([[2, 4]])  # blocks of 2: block 0 at t = 2, block 1 at t = 4 (all masked)
    _, nelbo, aux = bd3_loss(model, x0, s, 2, 2, bd3_drawn(x0, 2, s, torch.Generator().manual_seed(3), t=t))
    m = aux["masked"][0].double()
    assert m[2:].all()  # alpha(4) = 0
    ce = torch.tensor([-math.log(0.7), -math.log(0.3), -math.log(0.7), -math.log(0.7)], dtype=torch.float64)
    w2 = (math.cos(math.pi / 8) - math.cos(math.pi / 4)) / (1 - math.cos(math.pi / 4))
    w4 = math.cos(3 * math.pi / 8)  # (alpha(3) - 0) / (1 - 0)
    want = 4 * (w2 * (ce[:2] * m[:2]).sum() + w4 * (ce[2:] * m[2:]).sum()) / 4  # T * w(t_b), summed, / L
    assert nelbo.item() == pytest.approx(want.item(), rel=1e-5)


def test_bd3_all_ce_trains_the_plain_ce_of_every_noisy_position_and_reports_the_same_bound():
    model = ConstModel([math.log(0.7), math.log(0.3), 5.0])
    x0, s, t = torch.tensor([[0, 1, 0, 0]]), Schedule(4), torch.tensor([[2, 4]])
    elbo = bd3_loss(model, x0, s, 2, 2, bd3_drawn(x0, 2, s, torch.Generator().manual_seed(3), t=t))
    ce = bd3_loss(model, x0, s, 2, 2, bd3_drawn(x0, 2, s, torch.Generator().manual_seed(3), t=t), LossOptions("all_ce"))
    want = (3 * -math.log(0.7) - math.log(0.3)) / 4  # every noisy position, masked or not, weight 1, / L
    assert ce[0].item() == pytest.approx(want, rel=1e-6) and ce[0].item() != pytest.approx(elbo[0].item())
    assert torch.equal(ce[1], elbo[1])  # the bound it reports does not depend on what is trained


def test_bd3_loss_key_is_checked_and_only_bd3_reads_it():
    from configurator import get_config
    from utils.errors import UserError
    assert get_config(["--objective=bd3", "--bd3_loss=all_ce"]).bd3_loss == "all_ce"
    with pytest.raises(UserError, match="bd3_loss"):
        get_config(["--objective=bd3", "--bd3_loss=masked_ce"])
    for objective in ("mdlm", "uniform", "ar"):
        with pytest.raises(UserError, match="bd3_loss"):
            get_config([f"--objective={objective}", "--bd3_loss=all_ce"])


def test_block_times_are_stratified_and_band_limited():
    T, u = 100, torch.tensor(0.37, dtype=torch.float64)
    t = bd3_times(5, 4, torch.arange(1, T + 1), torch.Generator().manual_seed(0), u=u)
    assert t.shape == (5, 4)
    assert sorted(t.flatten().tolist()) == sorted(stratified_times(20, T, u=u).tolist())  # one per twentieth
    assert len({tuple(r) for r in t.tolist()}) == 5 and any(len(set(r)) > 1 for r in t.tolist())
    s = Schedule(100)
    band = band_times(s, 0.3, 0.8)
    rates = 1 - s.alpha[band]
    assert rates.min() >= 0.3 and rates.max() <= 0.8
    # cosine: 1 - cos(pi/2 * t/100) crosses 0.3 between t = 50 and 51 and 0.8 between 87 and 88
    assert band.tolist() == list(range(51, 88))
    tb = bd3_times(8, 8, band, torch.Generator().manual_seed(1))
    assert ((tb >= 51) & (tb <= 87)).all()
    # a user can ask for it: validation says it in one line (check_band), so a bare call is a program's ValueError
    with pytest.raises(ValueError, match="no diffusion time has a mask rate in .0.01, 0.05.*widen the band"):
        band_times(Schedule(4), 0.01, 0.05)


def test_clipped_band_weights_are_the_bands_share_of_the_bound():
    model = ConstModel([math.log(0.5), math.log(0.5), 0.0])
    s, x0 = Schedule(100), torch.zeros(2000, 8, dtype=torch.long)
    band = band_times(s, 0.3, 0.8)
    _, nelbo, _ = bd3_loss(model, x0, s, 2, 4, bd3_drawn(x0, 4, s, torch.Generator().manual_seed(0), allowed=band))
    share = (s.weight[band] * (1 - s.alpha[band])).sum().item()  # the band's part of sum_t w(t)(1 - alpha(t)) = 1
    assert nelbo.mean().item() == pytest.approx(share * math.log(2), rel=0.03)


@pytest.mark.parametrize("clean_causal", [False, True])
@pytest.mark.parametrize("block,n_ctx", [(1, 0), (1, 7), (4, 0), (4, 8), (4, 12), (8, 8)])
def test_cached_block_logits_equal_the_uncached_pass(block, n_ctx, clean_causal):
    m, g = _tiny(clean_causal=clean_causal), torch.Generator().manual_seed(block + n_ctx)

    def noisy():
        return torch.where(torch.rand(3, block, generator=g) < 0.5, MASK, torch.randint(0, 10, (3, block), generator=g))

    def uncached(window):  # the [MASK] logit is -inf in one and raw in the other: compare the rest
        return WindowBlockModel(m, block, MASK)(window)[:, -block:, :MASK]

    cached = CachedBlockModel(m, CleanCache(m.args.n_layer), block)
    window = torch.cat([torch.randint(0, 10, (3, n_ctx), generator=g), noisy()], 1)
    ref = uncached(window)
    # the first step brings the whole context (a prompt) into the cache in the same pass, later steps read it
    for rows in ([0, 1, 2], [0, 1, 2], [2, 0]):  # threshold decoding drops finished rows: they find their cache rows
        torch.testing.assert_close(cached(window[rows])[:, -block:, :MASK], ref[rows], atol=1e-5, rtol=1e-5)
    assert len(cached.cache) == n_ctx
    # the block finishes; the next block's first step puts it in the cache
    done = torch.where(window[:, -block:] == MASK, 3, window[:, -block:])
    window = torch.cat([window[:, :-block], done, noisy()], 1)
    if window.size(1) <= m.args.block_size:
        torch.testing.assert_close(cached(window)[:, -block:, :MASK], uncached(window), atol=1e-5, rtol=1e-5)
        assert len(cached.cache) == n_ctx + block


SAMPLER_OPTIONS = [dict(), dict(remask="none", order="margin", tokens_per_step="linear"), dict(remask="none", order="l2r"),
                   dict(threshold=0.3, remask="none"), dict(entropy_bound=0.5, order="entropy", remask="none"),
                   dict(remask="remdm", remask_eta=0.3),
                   dict(order="random", remask="none", law=Law(temperature=0.8, top_k=5, top_p=0.9))]


@pytest.mark.parametrize("block", [1, 4, 16])
@pytest.mark.parametrize("opts", SAMPLER_OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "reference")
def test_cached_decode_equals_uncached_past_the_context(block, opts):
    m, s = _tiny(), Schedule(10)
    prompt = torch.randint(0, 10, (3, 6), generator=torch.Generator().manual_seed(0))
    outs = []
    for cache in (True, False):
        frames = []
        with uncached_bd3(MASK, uncached=not cache):
            out, st = sample_bd3(m, prompt, 40, Blocks(size=block, mask_id=MASK), s, SamplerOptions(3, **opts),
                                 torch.Generator().manual_seed(1), on_step=lambda info: frames.append(info))
        outs.append(out)
    assert torch.equal(outs[0], outs[1])
    out = outs[0]
    assert out.shape == (3, 46) and torch.equal(out[:, :6], prompt) and not (out == MASK).any()
    for info in frames:  # the trace's view: the whole output, prompt never touched
        assert info.x.shape == (3, 46) and torch.equal(info.x[:, :6], prompt)
    assert torch.equal(frames[-1].x, out) and all(frames[-1].finished) and frames[-1].block == frames[-1].n_blocks - 1
    if not opts.get("threshold") and not opts.get("entropy_bound"):  # whole blocks up to ceil(46 / L') * L', each min(steps, its generated tokens)
        end = -(-46 // block) * block
        assert st["nfe"] == sum(min(3, b + block - max(b, 6)) for b in range(6 // block * block, end, block))


@pytest.mark.parametrize("static", [False, True], ids=["read columns", "fixed shapes"])
def test_a_clean_ar_round_reads_what_the_two_stream_pass_reads(static):
    """bd3.sample_clean_ar's one pass (round_layout's mask and positions, 4 clean columns cached): its clean columns
    give the two-stream pass's next-token logits, each noisy copy of the block (columns before r known) and the
    next block (all [MASK], after the drafts) the two-stream pass's noisy logits of that state. Static: the fixed
    shapes a compiled round passes, a [MASK] draft slot the round did not fill and every column of the cache read,
    the ones no pass wrote holding noise the mask must hide."""
    m, g = _tiny(clean_causal=True), torch.Generator().manual_seed(3)
    toks = torch.randint(0, MASK, (2, 8), generator=g)  # positions 0..3 cached, 4 the newest, 5..7 drafts
    kv = RoundCache(m.args.n_layer, 2, 40, CPU, static)
    slots = 4 if static else 3
    with torch.no_grad():
        decode(m, toks[:, :4], kv)  # as sample_clean_ar fills a window's cache
        kv.reset(4)
        for t in (*kv.k, *kv.v):  # what no pass wrote: noise
            t[:, :, 4:] = torch.randn(t[:, :, 4:].shape, generator=g, dtype=t.dtype)
        states, fill = (0, 1, 2), torch.full((2, 4), MASK)  # r - 4: the block with its first r - 4 columns known
        clean = torch.cat([toks[:, 4:], fill], 1)[:, :1 + slots]
        cols = torch.cat([clean, *[torch.cat([toks[:, 4:4 + r], fill[:, r:]], 1) for r in states], fill], 1)
        kv.end += 0 if static else cols.size(1)  # read columns: the keys cached and the pass's own
        pos, mask, known = round_layout(4, 4, (0, 3, slots, 3, True), 4, 16, kv.end, CPU)
        assert not mask[:, 4 + 1 + 3:4 + 1 + slots].any()  # a draft slot the round did not fill: read by none
        assert torch.equal(known, torch.arange(4) < torch.tensor(states)[:, None])  # copy r - 4: its first r - 4
        got = m(cols, kv_cache=kv, rope_pos=pos, attn_mask=mask)
        x0 = torch.cat([toks, torch.randint(0, MASK, (2, 8), generator=g)], 1)  # 16: what follows is never read
        for i, r in enumerate(states):
            c = 1 + slots + 4 * i
            xt = torch.cat([x0[:, :4], cols[:, c:c + 4], x0[:, 8:]], 1)
            want = bd3_logits(m, xt, x0, 4, MASK)[:, 4:8]
            assert torch.allclose(got[:, c:c + 4, :MASK], want[..., :MASK], atol=1e-5), r
        xt = torch.cat([x0[:, :8], fill, x0[:, 12:]], 1)
        assert torch.allclose(got[:, -4:, :MASK], bd3_logits(m, xt, x0, 4, MASK)[:, 8:12, :MASK], atol=1e-5)
        nxt = bd3_logits(m, torch.full_like(x0, MASK), x0, 4, MASK, clean=True)[1]
        assert torch.allclose(got[:, :4, :MASK], nxt[:, 4:8, :MASK], atol=1e-5)


def test_a_bd3_ar_network_decodes_with_its_cache_as_without_past_the_context():
    m, s = _tiny(clean_causal=True), Schedule(10)
    prompt = torch.randint(0, 10, (3, 6), generator=torch.Generator().manual_seed(0))
    outs = []
    for cache in (True, False):
        with uncached_bd3(MASK, uncached=not cache):
            outs.append(sample_bd3(m, prompt, 40, Blocks(size=4, mask_id=MASK), s,
                                   SamplerOptions(4, remask="none", order="l2r"), torch.Generator().manual_seed(1))[0])
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0][:, :6], prompt) and not (outs[0] == MASK).any()


def test_schedule_counts_leave_no_greedy_token_per_block():
    # sample()'s schedule counts end with a greedy pass; per block of 1 that would be greedy decoding: same text
    # for every seed. bd3 samples every token instead: schedule counts decode as linear ones (no greedy step), draw
    # for draw, and a block's tokens are not the argmax that greedy decoding (temperature 0) writes.
    m, s = _tiny(), Schedule(10)
    prompt = torch.randint(0, 10, (1, 4), generator=torch.Generator().manual_seed(0))
    draw = lambda k, **kw: tuple(sample_bd3(m, prompt, 12, Blocks(size=1, mask_id=MASK), s, SamplerOptions(1, **kw),
                                            generator=torch.Generator().manual_seed(k))[0][0].tolist())
    outs = [draw(k, tokens_per_step="schedule") for k in range(4)]
    assert outs == [draw(k, tokens_per_step="linear") for k in range(4)]
    greedy = draw(0, tokens_per_step="linear", law=Law(temperature=0.0))
    assert len(set(outs)) > 1 and all(o != greedy for o in outs)


def test_ar_decode_is_the_uncached_one_within_the_context_and_slides_past_it():
    m = _tiny(causal=True)
    prompt = torch.randint(0, 10, (2, 3))
    seq = prompt  # the reference: the whole sequence through the network for every token, no cache
    with torch.no_grad():
        for _ in range(12):
            seq = torch.cat([seq, m(seq)[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(m.generate(prompt, 12, SamplerOptions(1, law=Law(temperature=0))), seq)
    a = m.generate(prompt, 12, generator=torch.Generator().manual_seed(5))
    long = m.generate(prompt, 50, generator=torch.Generator().manual_seed(5))
    assert long.shape == (2, 53) and torch.equal(long[:, :15], a)


@pytest.mark.parametrize("argv,words", [
    (["--objective=bd3", "--bd3_block=5"], "must divide block_size"),
    (["--objective=bd3", "--bd3_block=0"], "must divide block_size"),
    (["--objective=bd3", "--loss_type=masked_ce"], "block-diffusion bound"),
    (["--objective=bd3", "--semi_ar_length=8"], "its own blocks"),
    (["--objective=bd3", "--bd3_mask_min=0.8", "--bd3_mask_max=0.3"], "mask_min < mask_max"),
    (["--objective=bd3", "--bd3_mask_min=0.00001", "--bd3_mask_max=0.0001"], "no diffusion time"),  # t=1 masks 1.2e-4
    (["--objective=bd3", "--bd3_ar=1", "--bd3_speculate", "--order=l2r"], "--order does not apply with --bd3_speculate"),
    (["--objective=bd3", "--bd3_ar=1", "--bd3_speculate", "--steps=4"], "--steps does not apply with --bd3_speculate"),
    (["--objective=mdlm", "--bd3_speculate"], "does not read --bd3_speculate"),
    (["--objective=bd3", "--bd3_speculate"], "only a --bd3_ar network"),
    (["--objective=bd3", "--bd3_ar=1", "--bd3_speculate", "--block_size=16", "--bd3_block=16"],
     "bd3_block <= block_size / 2"),
    (["--objective=bd3", "--bd3_ar=-1"], "bd3_ar=-1.0 weighs"),
    (["--objective=mdlm", "--bd3_ar=1"], "does not read --bd3_ar"),
    (["--objective=uniform", "--bd3_ar=1"], "does not read --bd3_ar"),
])
def test_bad_bd3_settings_are_refused_before_any_work(argv, words):
    from configurator import get_config
    from utils.errors import UserError
    with pytest.raises(UserError, match=words):
        get_config(argv)


def test_bd3_only_continues_a_prompt():
    from configurator import get_config
    from utils.errors import UserError
    from sampling.canvas import build_canvas
    from utils.tokenizer import CharTokenizer
    tok = CharTokenizer(sorted(set("abc ")))
    canvas = lambda cfg: build_canvas(cfg, SamplerOptions.from_config(cfg), tok, 16)
    cfg = replace(get_config(["--objective=bd3"]), infill="a [___:3] b")  # (train.py refuses --infill: inference.py's)
    with pytest.raises(UserError, match="only continues a prompt"):
        canvas(cfg)
    long = canvas(get_config(["--objective=bd3", "--prompt=ab", "--gen_len=100"]))
    assert len(long.ids) == 102  # past the context: the block sampler slides its window
    from helpers import for_objective
    ar_long = canvas(get_config(for_objective(["--objective=ar", "--prompt=ab", "--gen_len=100"])))
    assert len(ar_long.ids) == 102  # and the AR's, decode.generate
    with pytest.raises(UserError, match="exceeds the model's context of 16"):  # masked diffusion has no window to slide
        canvas(get_config(["--prompt=ab", "--gen_len=100"]))


def test_the_trace_keeps_every_earlier_blocks_confidences():
    """Each Step colours every committed token by the probability it was drawn with: earlier blocks keep theirs
    when the window moves on (they were overwritten with zeros, the colour of 'unsure')."""
    m, s = _tiny(), Schedule(10)
    prompt = torch.randint(0, 10, (2, 3), generator=torch.Generator().manual_seed(0))
    steps = []
    out, _ = sample_bd3(m, prompt, 37, Blocks(size=4, mask_id=MASK), s, SamplerOptions(4),
                        torch.Generator().manual_seed(1), steps.append)
    last = steps[-1]
    assert last.block == last.n_blocks - 1 and (last.conf[:, 3:] > 0).all() and (last.conf[:, :3] == 0).all()


def test_the_cached_block_model_returns_the_windows_width_with_context_riding_along():
    m = _tiny()
    idx = torch.randint(0, 10, (2, 12), generator=torch.Generator().manual_seed(0))  # 8 clean tokens, then a block of 4
    cached = CachedBlockModel(m, CleanCache(m.args.n_layer), 4)(idx)  # nothing cached yet: the context rides along
    reference = WindowBlockModel(m, 4, MASK)(idx)
    assert cached.shape == reference.shape == (2, 12, V)
    assert torch.allclose(cached[:, 8:, :MASK], reference[:, 8:, :MASK], atol=1e-5) and (cached[:, :8] == 0).all()


def test_steps_per_block_have_no_limit_of_T():
    """The block sampler's counts are linear, never on the schedule's grid: steps > T is no error for bd3."""
    from configurator import get_config
    assert get_config(["--objective=bd3", "--diffusion_steps=10", "--steps=50", "--bd3_block=16"]).steps == 50
