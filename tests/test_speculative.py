"""Speculative sampling (bd3.keep_or_redraw) by hand, and block diffusion's self-speculative decoding: the clean
half's AR drafted by the noisy half (bd3.sample_clean_ar), whose samples are that AR's own: greedy token for token
(past the context too), and in distribution against its joint enumerated by hand, with a sampler that keeps every
draft as the control the same test must catch; and at batch 1, where a round checks two or three drafts, against a toy
whose two halves are known by hand. The draft tree (--draft_tree): its rule against its law enumerated on a tiny
vocabulary, with the wrong rules a plausible slip gives; each candidate's column against the uncached pass; its samples
at batch 1 against the toy's joint, and the i.i.d. rule caught. python -m pytest -q tests/test_speculative.py"""
import contextlib
import functools
import itertools
from dataclasses import replace

import numpy as np
import pytest
import torch

import bd3
from bd3 import Blocks, accept_among, bd3_logits, bd3_loss, draw_siblings, keep_or_redraw, probs, sample_clean_ar
from diffusion import LossOptions, Schedule, no_mask_logit
from model import ModelArgs, Transformer
from diffusion import SamplerOptions
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
                                      (2, 5, SamplerOptions(steps=1, temperature=0.7, top_k=2)),
                                      (0, 4, SamplerOptions(steps=1, top_p=0.8)),
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
    net, greedy = _bd3_net(ar=True), SamplerOptions(steps=1, temperature=0)
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
ROUNDS = dict(eager=(False, True), whole=(True, True), tree2=(False, 2), tree3=(False, 3))  # (whole, draft)


@pytest.mark.parametrize("rounds", ROUNDS, ids=["eager rounds", "whole rounds", "a tree of 2", "a tree of 3"])
@pytest.mark.parametrize("P,n", [pytest.param(0, 5, marks=pytest.mark.slow), (1, 6)])
def test_clean_ar_samples_at_batch_1_follow_the_clean_halfs_joint(P, n, rounds):
    """At batch 1 (inference.py's) every row's drafts are its own, so a round checks two or three drafts: the second
    and third drafts' ratios p / q and the residual max(0, p_j - q_j) of a later rejection decide the law. 1,000
    independent draws (a generator each) against the toy's joint by hand, through a block boundary (its bonus token
    and the next block's drafts); the first 200 draws hold over 30 rounds that kept two drafts or more. P = 0: the
    first token from the drafter, its block all [MASK]. The eager rounds (the columns they read), the whole rounds
    (--compile's, here eager: fixed shapes, the check on the device, 3 a call), and a draft tree of 2 and 3
    candidates (--draft_tree: three is every token of the toy), whose first 200 draws keep 30 siblings or more."""
    whole, draft = ROUNDS[rounds]
    net, prompt = MarkovToy(), torch.tensor([[0, 1, 2][:P]], dtype=torch.long)
    net.compiler, net.compiled, net.decode_cache = ((lambda fn: fn) if whole else None), {}, None  # Transformer's
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # ~4,000 passes of a few columns: a second thread only waits (shared cores)
    try:
        draws, late, siblings = [], 0, []
        for seed in range(1_000):
            rounds = []  # the first 200 draws' rounds, as the trace sees them
            hook = rounds.append if seed < 200 else None
            with _siblings_counted(siblings if seed < 200 else []):
                out, st = sample_clean_ar(net, prompt, n, BLOCKS, SamplerOptions(steps=1, replay_steps=3),
                                          torch.Generator().manual_seed(seed), on_step=hook, draft=draft)
            assert out.shape == (1, P + n) and not (out == MASK).any()
            draws.append(out[0, P:].tolist())
            late += sum(int(s.revealed.sum()) >= 3 for s in rounds)  # a round that kept two drafts or more
    finally:
        torch.set_num_threads(threads)
    chi2, limit = _pooled_chi2(draws, _markov_joint(prompt[0].tolist(), n))
    assert chi2 < limit and late > 30, (chi2, limit, late)
    assert draft is True or len(siblings) > 30, len(siblings)


@contextlib.contextmanager
def _siblings_counted(kept):
    """Appends to `kept` each tree round's kept sibling ((position, index) from bd3._walk_tree)."""
    real = bd3._walk_tree

    def walk(*args):
        out = real(*args)
        if out[2] is not None:
            kept.append(out[2])
        return out
    bd3._walk_tree = walk
    try:
        yield kept
    finally:
        bd3._walk_tree = real


# ------------------------------------------------------------------------------------------ the draft tree
def _without_replacement(q, k):
    """{ordered k candidates drawn from q (V,) one at a time without replacement: their probability}."""
    support = [int(c) for c in np.flatnonzero(q)]
    out = {}
    for cands in itertools.permutations(support, k):
        prob, left = 1.0, 1.0
        for c in cands:
            prob *= q[c] / left
            left -= q[c]
        out[cands] = prob
    return out


def _kept_chances(p, q, cands, rule):
    """By hand: the chance (given the ones before it rejected) that each candidate is kept, and the law drawn from when
    none is. rule 'rsd': q_i is q without the candidates before i, renormalised, and p_(i+1) = max(0, p_i - q_i)
    normalised (RSD); 'iid': q_i = q (SpecInfer's rule for candidates drawn with replacement); 'stale': the residual
    never updated (p_i = p)."""
    chances = []
    for c in cands:
        chances.append(min(1.0, p[c] / q[c]) if q[c] > 0 else 0.0)
        if rule != "stale":
            resid = np.maximum(p - q, 0)
            p = resid / resid.sum() if resid.sum() > 0 else p
        if rule != "iid":
            q = q.copy()
            q[c] = 0
            q = q / q.sum() if q.sum() > 0 else q
    return chances, p


def _node_law(p, q, tuples, rule):
    """The law of a tree node's token, exactly: each candidate tuple's probability times, for each candidate, the
    chance the ones before it are rejected and it is kept, plus the chance all are rejected times the residual."""
    law = np.zeros_like(p)
    for cands, prob in tuples.items():
        chances, resid = _kept_chances(p, q, cands, rule)
        rejected = 1.0
        for c, a in zip(cands, chances):
            law[c] += prob * rejected * a
            rejected *= 1 - a
        law += prob * rejected * resid
    return law


P_NODE = np.array([0.40, 0.30, 0.15, 0.10, 0.05])
Q_NODE = np.array([0.10, 0.20, 0.50, 0.20, 0.00])  # p has mass where q has none: only the residual reaches token 4


@pytest.mark.parametrize("k", [2, 3, 4])
def test_a_tree_nodes_token_is_p_distributed_by_its_law_enumerated_and_the_plausible_wrong_rules_are_not(k):
    """Five tokens: k candidates drawn from q without replacement, checked by recursive rejection sampling (RSD, Jeon
    et al. 2024), give a token whose law, enumerated over every ordered candidate tuple, is p to 1e-12; and
    bd3.accept_among decides as that rule does (the candidate kept for each u, the residual). The plausible slips are
    other laws: SpecInfer's i.i.d. rule (q in every ratio), a residual never updated, and deterministic top-k
    candidates under the plain rule p / q."""
    rng = np.random.default_rng(k)
    for p, q in ((P_NODE, Q_NODE), (rng.dirichlet(np.ones(5)), rng.dirichlet(np.ones(5) * 0.5))):
        tuples = _without_replacement(q, min(k, int((q > 0).sum())))
        assert abs(sum(tuples.values()) - 1) < 1e-12
        np.testing.assert_allclose(_node_law(p, q, tuples, "rsd"), p, rtol=0, atol=1e-12)
        for wrong in ("iid", "stale"):
            assert np.abs(_node_law(p, q, tuples, wrong) - p).max() > 1e-3, wrong
        top = tuple(int(c) for c in np.argsort(-q)[:k] if q[c] > 0)
        assert np.abs(_node_law(p, q, {top: 1.0}, "iid") - p).max() > 1e-3  # deterministic top-k, the plain rule
        for cands in tuples:
            chances, resid = _kept_chances(p, q, cands, "rsd")
            for u in rng.random((20, len(cands))):
                i, law = accept_among(p, q, cands, u)
                want = next((j for j, a in enumerate(chances) if u[j] < a), None)
                assert i == want, (cands, u, i, want)
                if i is None:
                    np.testing.assert_allclose(law, resid, rtol=0, atol=1e-12)


def test_a_tree_nodes_drawn_token_follows_p_and_the_iid_rule_does_not(monkeypatch):
    """End to end at one node: the spine's draft from q (bd3.draw), its siblings from bd3.draw_siblings (the
    Gumbel-top-k draw without replacement), bd3.accept_among and a draw from its residual: 20,000 tokens follow p by
    chi-square, for k = 2, 3, 4; SpecInfer's i.i.d. rule on the same candidates fails the same test."""
    p_law = {(c,): float(v) for c, v in enumerate(P_NODE)}
    q = torch.tensor(Q_NODE)[None, None]  # (1, 1, V): one drafted position

    def tokens(k, g, n=20_000):
        out = []
        u = torch.rand(n, generator=g, dtype=torch.float64).numpy()
        for i in range(n):
            spine = int(bd3.draw(q[0], g)[0])
            cands = [spine, *draw_siblings(Q_NODE[None], [spine], k, g)[0]]
            j, resid = bd3.accept_among(P_NODE, Q_NODE, cands, torch.rand(k, generator=g, dtype=torch.float64).numpy())
            out.append((cands[j] if j is not None else bd3._draw_one(resid, u[i]),))
        return out
    for k in (2, 3, 4):
        chi2, limit = _pooled_chi2(tokens(k, torch.Generator().manual_seed(k)), p_law)
        assert chi2 < limit, (k, chi2, limit)

    def iid(p, q, cands, u):
        for i, c in enumerate(cands):
            if u[i] * q[c] < p[c]:
                return i, None
            resid = np.maximum(p - q, 0)
            p = resid / resid.sum()
        return None, p
    monkeypatch.setattr(bd3, "accept_among", iid)
    chi2, limit = _pooled_chi2(tokens(3, torch.Generator().manual_seed(3)), p_law)
    assert chi2 > limit, (chi2, limit)


def test_every_candidate_of_a_tree_round_reads_the_law_of_its_own_path(monkeypatch):
    """The tree's attention mask, positions and cache: in every round of a drafted sample (batch 1, a tree of 3, the
    trained toy network, 40 tokens through a context of 8), the law at each clean column (the newest token's, each
    spine draft's, each sibling's) is the clean half's next-token law after its own path (the text, the spine before
    it, itself) by the uncached two-stream pass, in the round's window; a kept sibling's keys, moved after the
    spine's, make the next round's laws too."""
    net, seen = _bd3_net(ar=True), []
    real_round, real_walk = bd3._tree_round, bd3._walk_tree

    def tree_round(model, s, *args):
        seen.append(dict(seq=s.seq.clone(), lo=s.lo, drafted=s.q is not None))
        return real_round(model, s, *args)

    def walk(p, q, drafts, sibs, left, generator):
        seen[-1].update(p=p, drafts=drafts, sibs=sibs)
        return real_walk(p, q, drafts, sibs, left, generator)
    monkeypatch.setattr(bd3, "_tree_round", tree_round)
    monkeypatch.setattr(bd3, "_walk_tree", walk)
    opts = SamplerOptions(steps=1, temperature=1.5)  # flatter laws: more siblings kept, more of them drawn
    kept = []
    for seed in range(4):
        with _siblings_counted(kept):
            sample_clean_ar(net, torch.tensor([[0]]), 40, BLOCKS, opts, torch.Generator().manual_seed(seed), draft=3)
    rounds = [r for r in seen if r["drafted"]]
    assert len(rounds) > 20 and sum(len(c) for r in rounds for c in r["sibs"]) > 20 and len(kept) > 3
    for r in rounds:
        paths = [r["drafts"][:j] for j in range(len(r["drafts"]) + 1)]  # the newest's column, then the spine's
        paths += [r["drafts"][:j] + [c] for j, cs in enumerate(r["sibs"]) for c in cs]  # then the siblings'
        for row, path in enumerate(paths):
            x = torch.cat([r["seq"], torch.tensor([path], dtype=torch.long)], 1)[:, r["lo"]:]
            L = x.size(1)  # the clean half alone, token-causal: its queries see no noisy column
            with torch.no_grad():
                logits = net(x, attn_mask=torch.ones(L, L, dtype=torch.bool).tril(), rope_pos=torch.arange(L))
            want = probs(no_mask_logit(logits[:, -1], MASK), opts)[0].numpy()
            np.testing.assert_allclose(r["p"][row], want, rtol=0, atol=1e-9)
