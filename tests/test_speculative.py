"""Speculative sampling (bd3.keep_or_redraw) by hand, and block diffusion's self-speculative decoding: the clean
half's AR drafted by the noisy half (bd3.sample_clean_ar), whose samples are that AR's own: greedy token for token
(past the context too), and in distribution against its joint enumerated by hand, with a sampler that keeps every
draft as the control the same test must catch; and at batch 1, where a round checks two or three drafts, against a toy
whose two halves are known by hand. python -m pytest -q tests/test_speculative.py"""
import functools
import itertools
from dataclasses import replace

import pytest
import torch

import bd3
from bd3 import Blocks, bd3_logits, bd3_loss, keep_or_redraw, probs, sample_clean_ar
from diffusion import LossOptions, Schedule, no_mask_logit
from model import ModelArgs, Transformer
from diffusion import SamplerOptions
from utils.draws import Law
from helpers import bd3_drawn, pooled_chi2 as _pooled_chi2

V, MASK = 4, 3  # three tokens and [MASK]
BLOCKS = Blocks(size=4, mask_id=MASK)


def _net(causal, seed, block=16, vocab=V):
    torch.manual_seed(seed)
    m = Transformer(ModelArgs(vocab_size=vocab, block_size=block, n_layer=2, n_head=2, n_embd=16, causal=causal,
                              time_cond="none")).double().eval()
    with torch.no_grad():
        (m.head.weight if m.head is not None else m.tok_emb.weight).mul_(20)  # peaked, unequal distributions
    return m


def test_a_round_keeps_drafts_by_the_ratio_and_redraws_from_the_residual():
    """One position, by hand: p = (0.5, 0.5, 0), q = (0.8, 0.2, 0); draft 0 is kept with probability 0.5 / 0.8,
    and a rejected one is redrawn from max(0, p - q) = (0, 0.3, 0): token 1 always. Draft 1 (p/q > 1) is always kept."""
    p = torch.tensor([[[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]]], dtype=torch.float64)
    q = torch.tensor([[[0.8, 0.2, 0.0]]], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    zeros = [keep_or_redraw(p, q, torch.tensor([[0]]), g).tolist()[0] for _ in range(10_000)]
    kept = sum(z[0] == 0 for z in zeros) / len(zeros)
    assert abs(kept - 0.625) < 0.015 and all(z in ([0, 0], [0, 1], [0, 2], [1]) for z in zeros)  # kept + bonus, or 1
    ones = [keep_or_redraw(p, q, torch.tensor([[1]]), g).tolist()[0] for _ in range(2_000)]
    assert all(o[0] == 1 and len(o) == 2 for o in ones)  # always kept, then the bonus draw from p_1
    bonus = [o[1] for o in ones]
    assert abs(bonus.count(2) / len(bonus) - 0.5) < 0.04 and abs(bonus.count(0) / len(bonus) - 0.2) < 0.04


def test_the_ar_never_emits_mask():
    """[MASK] is in an AR's vocabulary but never a target; a head that favours it must still never draw it."""
    ar = _net(True, 7)
    with torch.no_grad():
        ar.head.weight[MASK] = ar.head.weight[:MASK].mean(0) + 0.5 * ar.tok_emb.weight.mean(0)
        ar.head.weight[MASK] *= 5  # a large [MASK] logit at many positions
    prompt, g = torch.zeros(64, 1, dtype=torch.long), torch.Generator().manual_seed(9)
    assert (ar.generate(prompt, 20, generator=g) == MASK).any()  # the control: unfiltered, it is drawn
    assert not (ar.generate(prompt, 20, generator=g, mask_id=MASK) == MASK).any()


@functools.lru_cache(maxsize=1)
@functools.lru_cache(maxsize=2)
def _bd3_net(ar=False):
    """A bd3 network (blocks of 4, context 8) trained for 200 steps on cycles through tokens 0, 1, 2 that skip one
    w.p. 0.2: each masked column of a block predicts differently, given the context and the columns before it
    (a random network predicts the same at every masked column, and a test that swaps columns would not see it).
    ar: with --bd3_ar's clean half, token-causal and trained on the next token too."""
    torch.manual_seed(0)
    net = Transformer(ModelArgs(vocab_size=V, block_size=8, n_layer=2, n_head=2, n_embd=16, time_cond="none",
                                clean_causal=ar)).double()
    opt, g = torch.optim.Adam(net.parameters(), lr=1e-2), torch.Generator().manual_seed(0)
    for _ in range(200):
        steps = torch.where(torch.rand(64, 7, generator=g) < 0.8, 1, 2)
        x = torch.cat([torch.randint(0, 3, (64, 1), generator=g), steps], 1).cumsum(1) % 3
        drawn = bd3_drawn(x, 4, Schedule(10), g)
        loss = bd3_loss(net, x, Schedule(10), MASK, 4, drawn, LossOptions(ar_weight=float(ar)))[0]
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def _clean_next(net, seq, lo):
    """The clean half's next-token logits after seq (R, S) in the window from lo, by the uncached two-stream pass."""
    x0 = torch.cat([seq[:, lo:], seq[:, :1]], 1)  # a dummy last column: the pass predicts the token after each
    with torch.no_grad():
        return bd3_logits(net, torch.full_like(x0, MASK), x0, 4, MASK, clean=True)[1][:, -1]


def _window_starts(P, n_gen, W=8, n=4):
    """sample_clean_ar's window start before each generated token (a block that does not fit restarts it)."""
    lo, keep, out = None, min((W // 2) // n * n, W - n), []
    for S in range(P, P + n_gen):
        lo = (0 if S // n * n + n <= W else S - keep) if lo is None else lo
        lo = S - keep if lo + (S - lo) // n * n + n - lo > W else lo
        out.append(lo)
    return out


def _clean_joint(net, prompt, n, opts):
    """{the n tokens after prompt (1, P): probability} under the clean half's AR, by enumeration (P = 0: the first
    token from the noisy half's marginal, its block all [MASK])."""
    P, seqs = prompt.size(1), torch.tensor(list(itertools.product(range(V - 1), repeat=n)))
    joint, full = torch.ones(len(seqs), dtype=torch.float64), torch.cat([prompt.expand(len(seqs), -1), seqs], 1)
    with torch.no_grad():
        for i, lo in zip(range(n), _window_starts(P, n)):
            logits = (no_mask_logit(net(torch.full((1, 4), MASK))[:, 0], MASK).expand(len(seqs), -1) if P + i == 0
                      else _clean_next(net, full[:, :P + i], lo))
            joint *= probs(logits, opts).gather(-1, full[:, P + i:P + i + 1])[:, 0]
    return {tuple(s.tolist()): float(q) for s, q in zip(seqs, joint)}


@pytest.mark.parametrize("P,n,opts", [(3, 5, SamplerOptions(steps=1)),
                                      (2, 5, SamplerOptions(steps=1, law=Law(temperature=0.7, top_k=2))),
                                      (0, 4, SamplerOptions(steps=1, law=Law(top_p=0.8))),
                                      (5, 4, SamplerOptions(steps=1))])  # P = 5: the window restarts after one token
def test_clean_ar_samples_follow_the_clean_halfs_joint_and_keeping_every_draft_does_not(P, n, opts, monkeypatch):
    """Drafted by the noisy half, checked by the clean half: 2,400 draws against the clean half's joint enumerated
    by the uncached two-stream pass (across a block boundary, and past the context), by the eager rounds, the whole
    rounds (--compile's, here eager: 2 a call) and the clean half alone; the control that keeps every draft is caught
    by the same test, on both drafting paths."""
    net, prompt = _bd3_net(ar=True), torch.tensor([[0, 1, 2, 0, 1][:P]], dtype=torch.long)
    joint, g = _clean_joint(net, prompt, n, opts), torch.Generator().manual_seed(13)

    def draw_all(path):  # 'alone': the batch's default, the clean half decoding with no drafts
        net.compiler = (lambda fn: fn) if path == "whole" else None
        return [row[P:].tolist() for _ in range(6) for row in sample_clean_ar(
            net, prompt.expand(400, -1), n, BLOCKS, replace(opts, replay_steps=2), g, draft=path != "alone")[0]]
    for path in ("eager", "whole", "alone"):
        chi2, limit = _pooled_chi2(draw_all(path), joint)
        assert chi2 < limit, path
    # the control: every draft kept unchecked (eager), u = 0 keeps every draft p allows (whole rounds)
    monkeypatch.setattr(bd3, "keep_or_redraw", lambda p, q, drafts, generator: drafts if q is not None else
                        keep_or_redraw(p, q, drafts, generator))
    real = bd3.check_drafts
    monkeypatch.setattr(bd3, "check_drafts", lambda p, q, drafts, kd, u, last_u, bonus: real(
        p, q, drafts, kd, torch.zeros_like(u), last_u, bonus))
    for path in ("eager", "whole"):
        chi2, limit = _pooled_chi2(draw_all(path), joint)
        assert chi2 > limit, path
    net.compiler = None


def test_clean_ar_greedy_is_the_clean_halfs_greedy_text_in_fewer_passes_past_the_context():
    """At temperature 0 every token is the clean half's argmax after the text before it (the uncached pass, in the
    same windows), 40 tokens through a context of 8; drafts are kept, so fewer passes than tokens."""
    net, greedy = _bd3_net(ar=True), SamplerOptions(steps=1, law=Law(temperature=0))
    for P in (1, 3, 6):
        prompt = torch.randint(0, MASK, (2, P), generator=torch.Generator().manual_seed(P))
        got, st = sample_clean_ar(net, prompt, 40, BLOCKS, greedy, torch.Generator().manual_seed(1), draft=True)
        want = prompt
        for lo in _window_starts(P, 40):
            want = torch.cat([want, _clean_next(net, want, lo).argmax(-1, keepdim=True)], 1)
        assert torch.equal(got, want) and st["nfe"] < 40 and st["kept"] > 0
        batch, st = sample_clean_ar(net, prompt, 40, BLOCKS, greedy, torch.Generator().manual_seed(1))
        # at batch 2 no drafts: a pass a token, and a call for the text before the newest token at each window's start
        starts = _window_starts(P, 40)
        prefills = sum(S - 1 - lo > 0 for i, (S, lo) in enumerate(zip(range(P, P + 40), starts))
                       if i == 0 or lo != starts[i - 1])
        assert torch.equal(batch, want) and st["nfe"] == 40 + prefills and st["kept"] == 0 and prefills >= 5
        one, st = sample_clean_ar(net, prompt[:1], 40, BLOCKS, greedy, torch.Generator().manual_seed(1))
        assert torch.equal(one, want[:1]) and st["nfe"] < 40  # batch 1 drafts by default


# ------------------------------------------------------------------------------------------ batch 1, by hand
# An order-2 Markov chain as the clean half: p(next | a, b), b the newest token and a the one before it (P1[b] when b
# has none before it). The drafter: a [MASK] column d = 1, 2, 3+ positions after the last token a it sees draws from
# Q[a, d - 1] (Q0 when it sees none), a different law at each column, so a check that reads a draft's q or p in the
# wrong column changes the law.
P1 = torch.tensor([[.6, .3, .1], [.2, .5, .3], [.3, .1, .6]], dtype=torch.float64)
P2 = torch.tensor([[[.7, .2, .1], [.1, .6, .3], [.2, .2, .6]],
                   [[.3, .5, .2], [.5, .1, .4], [.1, .7, .2]],
                   [[.4, .4, .2], [.2, .3, .5], [.6, .1, .3]]], dtype=torch.float64)
Q = torch.tensor([[[.8, .1, .1], [.1, .8, .1], [.1, .1, .8]],
                  [[.1, .8, .1], [.1, .1, .8], [.8, .1, .1]],
                  [[.1, .1, .8], [.8, .1, .1], [.1, .8, .1]]], dtype=torch.float64)
Q0 = torch.tensor([.5, .3, .2], dtype=torch.float64)


class MarkovToy(torch.nn.Module):
    """A --bd3_ar network whose halves are P2 and Q above, read through the attention mask and the KV cache the
    sampler hands it: a column sees the cached columns and this pass's where attn_mask allows (all of them without
    one). A clean column (its token not [MASK]) predicts from its own token and the one it sees a position before;
    a [MASK] column from the last token it sees before its position. The cache stores each column's token as its key
    and its RoPE position as its value, so the positions of cached tokens are the sampler's own."""

    def __init__(self, block_size=8):
        super().__init__()
        self.args = ModelArgs(vocab_size=V, block_size=block_size, n_layer=1)

    def forward(self, idx, kv_cache=None, rope_pos=None, attn_mask=None, **kw):
        B, C = idx.shape
        pos = torch.arange(C) if rope_pos is None else rope_pos
        keys, kpos = idx, pos.expand(B, C)
        if kv_cache is not None:  # (B, K): the cached columns, then this pass's
            k, v = kv_cache.update(idx[:, None, :, None].double(), kpos[:, None, :, None].double())
            keys, kpos = k[:, 0, :, 0].long(), v[:, 0, :, 0].long()
        seen = torch.ones(C, keys.size(1), dtype=torch.bool) if attn_mask is None else attn_mask
        seen = seen[None] & (keys != MASK)[:, None]  # (B, C, K) the tokens each column sees
        before = torch.where(seen & (kpos[:, None] < pos[None, :, None]), kpos[:, None], -1)
        y, at = before.max(-1)  # (B, C) the position of the last token each column sees before its own (-1: none)
        a = keys.gather(1, at).clamp(max=MASK - 1)  # that token (any, where there is none: not read)
        b = idx.clamp(max=MASK - 1)  # a clean column's own token
        clean = torch.where(((y >= 0) & (y == pos - 1))[..., None], P2[a, b], P1[b])
        noisy = torch.where((y >= 0)[..., None], Q[a, (pos - y).clamp(1, 3) - 1], Q0)
        p = torch.where((idx == MASK)[..., None], noisy, clean)
        return torch.cat([p.log(), torch.full_like(p[..., :1], 9.0)], -1)  # [MASK] favoured: it must never be drawn


def _markov_joint(prompt, n):
    """{the n tokens after prompt (a list): probability} under P1/P2, the first from Q0 when there is no prompt."""
    joint = {}
    for s in itertools.product(range(MASK), repeat=n):
        seq, q = prompt + list(s), 1.0
        for i in range(len(prompt), len(seq)):
            if i == 0:
                q *= float(Q0[seq[0]])
            elif i == 1:
                q *= float(P1[seq[0], seq[1]])
            else:
                q *= float(P2[seq[i - 2], seq[i - 1], seq[i]])
        joint[s] = q
    return joint


# P = 1 alone catches every wrong check tried on this test (a column early, the first q in the residual, p / q
# inverted, a redraw skipped, the bonus from the last draft's p, one u a round); P = 0 adds the first token's draw
@pytest.mark.parametrize("whole", [False, True], ids=["eager rounds", "whole rounds"])
@pytest.mark.parametrize("P,n", [(0, 5), (1, 6)])
def test_clean_ar_samples_at_batch_1_follow_the_clean_halfs_joint(P, n, whole):
    """At batch 1 (inference.py's) every row's drafts are its own, so a round checks two or three drafts: the second
    and third drafts' ratios p / q and the residual max(0, p_j - q_j) of a later rejection decide the law. 1,000
    independent draws (a generator each) against the toy's joint by hand, through a block boundary (its bonus token
    and the next block's drafts); the first 200 draws hold over 30 rounds that kept two drafts or more. P = 0: the
    first token from the drafter, its block all [MASK]. The eager rounds (the columns they read), and the whole
    rounds (--compile's, here eager: fixed shapes, the check on the device, 3 a call)."""
    net, prompt = MarkovToy(), torch.tensor([[0, 1, 2][:P]], dtype=torch.long)
    net.compiler, net.compiled, net.decode_cache = ((lambda fn: fn) if whole else None), {}, None  # Transformer's
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # ~4,000 passes of a few columns: a second thread only waits (shared cores)
    try:
        draws, late = [], 0
        for seed in range(1_000):
            rounds = []  # the first 200 draws' rounds, as the trace sees them
            hook = rounds.append if seed < 200 else None
            out, st = sample_clean_ar(net, prompt, n, BLOCKS, SamplerOptions(steps=1, replay_steps=3),
                                      torch.Generator().manual_seed(seed), on_step=hook)
            assert out.shape == (1, P + n) and not (out == MASK).any()
            draws.append(out[0, P:].tolist())
            late += sum(int(s.revealed.sum()) >= 3 for s in rounds)  # a round that kept two drafts or more
    finally:
        torch.set_num_threads(threads)
    chi2, limit = _pooled_chi2(draws, _markov_joint(prompt[0].tolist(), n))
    assert chi2 < limit and late > 30, (chi2, limit, late)
