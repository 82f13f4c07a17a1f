"""The draft tree of dev/draft_tree.py (issue 95, part 2; level on a CPU, so an instrument, not a product option),
exact in law as the figures in dev/LOG.md need it: one node's rule against its law enumerated on five tokens, with
the wrong rules a plausible slip gives (SpecInfer's i.i.d. rule on candidates drawn without replacement, a residual
never updated, deterministic top-k candidates under the plain ratio); its draws by chi-square; each candidate
column's law against the uncached pass (the tree mask, positions by depth, a kept sibling's keys moved); the samples at
batch 1 against the Markov toy's joint (tests/test_speculative.py's), the i.i.d. rule caught by the same test.

    python -m pytest -q tests/test_draft_tree.py
"""
import itertools

import numpy as np
import pytest
import torch

import bd3
from diffusion import SamplerOptions, no_mask_logit
from helpers import pooled_chi2, script
from test_speculative import BLOCKS, MASK, MarkovToy, _bd3_net, _markov_joint
from utils.draws import Law

pytestmark = pytest.mark.slower  # the slower tier (pytest.ini): a dev/ script's test

tree = script("dev/draft_tree")


def _without_replacement(q, k):
    """{ordered k candidates drawn from q (V,) one at a time without replacement: their probability}."""
    out = {}
    for cands in itertools.permutations([int(c) for c in np.flatnonzero(q)], k):
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
    """The law of a node's token, exactly: each candidate tuple's probability times, for each candidate, the chance the
    ones before it are rejected and it is kept, plus the chance all are rejected times the residual."""
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


def _iid(p, q, cands, u):
    """SpecInfer's rule (the proposal q in every ratio), a plausible slip for candidates drawn without replacement."""
    for i, c in enumerate(cands):
        if u[i] * q[c] < p[c]:
            return i, None
        resid = np.maximum(p - q, 0)
        p = resid / resid.sum()
    return None, p


@pytest.mark.parametrize("k", [2, 3, 4])
def test_a_nodes_token_is_p_distributed_by_its_law_enumerated_and_the_plausible_wrong_rules_are_not(k):
    """Five tokens: k candidates drawn from q without replacement, checked by recursive rejection sampling (RSD, Jeon
    et al. 2024), give a token whose law, enumerated over every ordered candidate tuple, is p to 1e-12; and
    accept_among decides as that rule does (the candidate kept for each u, the residual). The plausible slips are
    other laws: the i.i.d. rule, a residual never updated, and deterministic top-k candidates under the plain ratio."""
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
                i, law = tree.accept_among(p, q, cands, u)
                assert i == next((j for j, a in enumerate(chances) if u[j] < a), None), (cands, u, i)
                if i is None:
                    np.testing.assert_allclose(law, resid, rtol=0, atol=1e-12)


def test_a_nodes_drawn_token_follows_p_and_the_iid_rule_does_not(monkeypatch):
    """End to end at one node: the spine's draft from q (utils.draws.draw), its siblings from draw_siblings (Gumbel-top-k,
    without replacement), accept_among and a draw from its residual: 20,000 tokens follow p by chi-square, for
    k = 2, 3, 4; the i.i.d. rule on the same candidates fails the same test."""
    p_law = {(c,): float(v) for c, v in enumerate(P_NODE)}
    q = torch.tensor(Q_NODE)[None]  # (1, V): one drafted position

    def tokens(k, g, n=20_000):
        out, last = [], torch.rand(n, generator=g, dtype=torch.float64).numpy()
        for i in range(n):
            spine = int(bd3.draw(q, g)[0])
            cands = [spine, *tree.draw_siblings(Q_NODE[None], [spine], k, g)[0]]
            j, resid = tree.accept_among(P_NODE, Q_NODE, cands, torch.rand(k, generator=g, dtype=torch.float64).numpy())
            out.append((cands[j] if j is not None else tree.draw_one(resid, last[i]),))
        return out
    for k in (2, 3, 4):
        chi2, limit = pooled_chi2(tokens(k, torch.Generator().manual_seed(k)), p_law)
        assert chi2 < limit, (k, chi2, limit)
    monkeypatch.setattr(tree, "accept_among", _iid)
    chi2, limit = pooled_chi2(tokens(3, torch.Generator().manual_seed(3)), p_law)
    assert chi2 > limit, (chi2, limit)


def test_every_candidate_of_a_tree_round_reads_the_law_of_its_own_path(monkeypatch):
    """The tree's attention mask, positions and cache: in every round of a drafted sample (batch 1, a tree of 3, the
    trained toy network, 40 tokens through a context of 8), the law at each clean column (the newest token's, each
    spine draft's, each sibling's) is the clean half's next-token law after its own path (the text, the spine before
    it, itself) by a plain causal pass over the clean half, in the round's window; a kept sibling's keys, moved after
    the spine's, make the next round's laws too."""
    net, seen = _bd3_net(ar=True), []
    real_round, real_walk = tree.tree_round, tree.walk_tree

    def tree_round(model, s, *args):
        seen.append(dict(seq=s.seq.clone(), lo=s.lo))
        return real_round(model, s, *args)

    def walk(p, q, drafts, sibs, left, generator):
        out = real_walk(p, q, drafts, sibs, left, generator)
        seen[-1].update(p=p, drafts=drafts, sibs=sibs, sibling=out[2])
        return out
    monkeypatch.setattr(tree, "tree_round", tree_round)
    monkeypatch.setattr(tree, "walk_tree", walk)
    opts = SamplerOptions(steps=1, law=Law(temperature=1.5))  # flatter laws: more siblings drawn, more of them kept
    with tree.tree_rounds(3):
        for seed in range(4):
            bd3.sample_clean_ar(net, torch.tensor([[0]]), 40, BLOCKS, opts, torch.Generator().manual_seed(seed))
    assert len(seen) > 20 and sum(len(c) for r in seen for c in r["sibs"]) > 20
    assert sum(r["sibling"] is not None for r in seen) > 3
    for r in seen:
        paths = [r["drafts"][:j] for j in range(len(r["drafts"]) + 1)]  # the newest's column, then the spine's
        paths += [r["drafts"][:j] + [c] for j, cs in enumerate(r["sibs"]) for c in cs]  # then the siblings'
        for row, path in enumerate(paths):
            x = torch.cat([r["seq"], torch.tensor([path], dtype=torch.long)], 1)[:, r["lo"]:]
            L = x.size(1)  # the clean half alone, token-causal: its queries see no noisy column
            with torch.no_grad():
                logits = net(x, attn_mask=torch.ones(L, L, dtype=torch.bool).tril(), rope_pos=torch.arange(L))
            want = bd3.probs(no_mask_logit(logits[:, -1], MASK), opts)[0].numpy()
            np.testing.assert_allclose(r["p"][row], want, rtol=0, atol=1e-9)


def _toy_draws(k, n_draws, P=1, n=6):
    """n_draws batch-1 samples of the Markov toy's clean half (tests/test_speculative.py), drafted by a tree of k, and
    the tree rounds that kept a sibling."""
    net, prompt = MarkovToy(), torch.tensor([[0, 1, 2][:P]], dtype=torch.long)
    net.compiler, net.compiled, net.decode_cache = None, {}, None  # eager rounds
    real_walk, siblings = tree.walk_tree, []

    def walk(*args):
        out = real_walk(*args)
        siblings.append(out[2] is not None)
        return out
    tree.walk_tree = walk
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # passes of a few columns: a second thread only waits (shared cores)
    try:
        with tree.tree_rounds(k):
            draws = [bd3.sample_clean_ar(net, prompt, n, BLOCKS, SamplerOptions(steps=1),
                                         torch.Generator().manual_seed(seed))[0][0, P:].tolist()
                     for seed in range(n_draws)]
    finally:
        tree.walk_tree = real_walk
        torch.set_num_threads(threads)
    return draws, sum(siblings), _markov_joint(prompt[0].tolist(), n)


@pytest.mark.parametrize("k", [2, 3])  # 3: every token of the toy at the first drafted position
def test_a_draft_trees_samples_at_batch_1_follow_the_clean_halfs_joint(k):
    """1,000 independent batch-1 draws (a generator each) of 6 tokens after one, through a block boundary, against the
    toy's joint by hand (the test the one-draft rounds pass in tests/test_speculative.py), with 100 rounds or more that
    kept a sibling."""
    draws, siblings, joint = _toy_draws(k, 1_000)
    chi2, limit = pooled_chi2(draws, joint)
    assert chi2 < limit and siblings > 100, (chi2, limit, siblings)


def test_the_iid_rule_on_a_draft_trees_samples_fails_the_same_test(monkeypatch):
    """The control: SpecInfer's i.i.d. rule checking the siblings drawn without replacement (q in every ratio) draws
    another law, which 2,000 draws of the same test catch."""
    monkeypatch.setattr(tree, "accept_among", _iid)
    draws, _, joint = _toy_draws(2, 2_000)
    chi2, limit = pooled_chi2(draws, joint)
    assert chi2 > limit, (chi2, limit)
