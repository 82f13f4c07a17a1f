"""The strongest sampler test the repo has: every sampler run unchanged on a perfect denoiser (dev/oracle.py: a
Markov chain's exact posterior). One token a pass, a sampler whose choice of position reads only the law (random,
l2r, margin, entropy, blocks, the AR, bd3's blocks and its drafting rounds) draws the chain's joint exactly; one that
reads the drawn token (confidence) or reveals several at once (the ancestral sampler's Binomial counts, k tokens a
pass) draws another law, dev/oracle.reveal_law's, and each is held to that law too. Chi-square over 20,000 draws of
4 tokens of a 3-symbol chain; a one-line slip in a sampler's law fails here (dev/LOG.md, "The limit").

    python -m pytest -q tests/test_oracle.py
"""
import itertools

import pytest
import torch

import bd3
import diffusion
from diffusion import SamplerOptions, Schedule
from helpers import pooled_chi2, script
from model import sample_causal

oracle = script("dev/oracle")
MASK, N, PROMPT, END = 3, 20_000, 0, 2  # three symbols, [MASK] = 3; draws a case; the tokens around the 4 blanks
# no two rows or columns alike: two positions' laws never tie by symmetry (a tie's winner is a rounding's)
CHAIN = oracle.MarkovChain(torch.tensor([[.62, .27, .11], [.2, .5, .3], [.25, .15, .6]]))
SCHEDULE = Schedule(10)  # t is unread by the oracle; a short table keeps denoise's time lookup cheap


def _law(p, n=4):
    return dict(zip(itertools.product(range(3), repeat=n), p.tolist()))


def _canvas(rows=N):
    """An infill: PROMPT, 4 blanks, END (text on both sides, so that orders that read the law differ from l2r)."""
    x = torch.tensor([[PROMPT] + [MASK] * 4 + [END]] * rows)
    return x, x == MASK


def _denoise(**kw):
    """denoise's 4 tokens after the prompt, in 4 passes of one token unless kw says otherwise."""
    def run(g):
        x, gen = _canvas()
        opts = SamplerOptions(**{**dict(steps=4, remask="none", tokens_per_step="linear"), **kw})
        return diffusion.denoise(oracle.Oracle(CHAIN), x, gen, SCHEDULE, MASK, opts, g)[0][:, 1:5]
    return run


def _bd3(**kw):
    """bd3's block sampler, blocks of 2 (the first holds the prompt), one token a pass: clean context cached."""
    def run(g):
        opts = SamplerOptions(**{**dict(steps=2, remask="none", tokens_per_step="linear"), **kw})
        prompt = torch.full((N, 1), PROMPT)
        return bd3.sample_bd3(oracle.Oracle(CHAIN), prompt, 4, bd3.Blocks(2, MASK), SCHEDULE, opts, g)[0][:, 1:]
    return run


def _ar(g):
    """The AR's sampler: the Transformer's own generate, a KV cache of tokens and positions."""
    return oracle.Oracle(CHAIN, causal=True).generate(torch.full((N, 1), PROMPT), 4, None, g, MASK)[:, 1:]


def _causal(g):
    x = torch.tensor([[PROMPT] + [MASK] * 4] * N)
    return sample_causal(oracle.Oracle(CHAIN, causal=True), x, 1, SamplerOptions(steps=1), g, MASK)[0][:, 1:]


def _drafted(g):
    """bd3's self-speculative rounds: the noisy half (the posterior given the clean context) drafts a block, the
    clean half (the next symbol's law) checks it; every row drafts (draft=True), 2,000 a batch."""
    net = oracle.Oracle(CHAIN, block_size=8, clean_causal=True)
    prompt = torch.full((2000, 1), PROMPT)
    return torch.cat([bd3.sample_clean_ar(net, prompt, 4, bd3.Blocks(4, MASK), SamplerOptions(steps=1), g,
                                          draft=True)[0][:, 1:] for _ in range(N // 2000)])


def _whole_rounds(g):
    """The drafting rounds at fixed shapes (--compile's _whole_round, here eager), 2 rounds a call."""
    net = oracle.Oracle(CHAIN, block_size=8, clean_causal=True)
    net.compiler = lambda fn: fn  # the Transformer's switch to the whole rounds; identity: no compilation
    prompt, opts = torch.full((2000, 1), PROMPT), SamplerOptions(steps=1, replay_steps=2)
    return torch.cat([bd3.sample_clean_ar(net, prompt, 4, bd3.Blocks(4, MASK), opts, g, draft=True)[0][:, 1:]
                      for _ in range(N // 2000)])


def _ancestral(steps):
    def run(g):
        x, gen = _canvas()
        return diffusion.sample_ancestral(oracle.Oracle(CHAIN), x, gen, SCHEDULE, MASK, steps, g)[:, 1:5]
    return run


# one token a pass, the position chosen by the law alone: the chain's joint, exactly (denoise fills the infill canvas;
# the AR and bd3 continue the prompt)
EXACT = {"random": _denoise(order="random"), "l2r": _denoise(order="l2r"), "margin": _denoise(order="margin"),
         "entropy": _denoise(order="entropy"),
         "entropy bound, margin": _denoise(order="margin", entropy_bound=1e-9),
         "semi-AR blocks of 2, random": _denoise(order="random", semi_ar_length=2),
         "semi-AR blocks of 2, entropy": _denoise(order="entropy", semi_ar_length=2),
         "bd3 blocks, random": _bd3(order="random"), "bd3 blocks, margin": _bd3(order="margin"),
         "AR generate": _ar, "AR sample_causal": _causal, "bd3 drafting rounds": _drafted,
         "bd3 whole rounds": _whole_rounds}
CONTINUES = ("bd3 blocks, random", "bd3 blocks, margin", "AR generate", "AR sample_causal", "bd3 drafting rounds",
             "bd3 whole rounds")
INFILL = CHAIN.joint(PROMPT, 4, END)


CORE = ("random", "margin", "bd3 blocks, margin", "AR generate", "bd3 drafting rounds", "confidence",
        "ancestral, 4 steps", "2 a pass, confidence")  # the core tier's cases (pytest.ini); the rest in README's
SLOWER = ("bd3 whole rounds",)  # ~20 s on a busy core: CI's second line


def _tiers(names):
    tier = {**dict.fromkeys(CORE, pytest.mark.core), **dict.fromkeys(SLOWER, pytest.mark.slower)}
    return [pytest.param(n, marks=tier[n]) if n in tier else n for n in names]


@pytest.mark.parametrize("name", _tiers(EXACT))
def test_one_token_a_pass_chosen_by_the_law_draws_the_chains_joint(name):
    draws = EXACT[name](torch.Generator().manual_seed(1)).tolist()
    chi2, limit = pooled_chi2(draws, _law(CHAIN.joint(PROMPT, 4) if name in CONTINUES else INFILL))
    assert chi2 < limit, (name, chi2, limit)


def _plan(steps):
    """denoise's plan for 4 blanks in `steps` linear passes: the [MASK]s left after each."""
    x, gen = _canvas(1)
    return diffusion.Blocks(gen, SCHEDULE, SamplerOptions(steps=steps, tokens_per_step="linear")).plans[0][0].tolist()


def _ancestral_coins(steps):
    grid, alpha = diffusion.time_grid(SCHEDULE.T, steps), SCHEDULE.alpha
    return [float((alpha[s] - alpha[t]) / (1 - alpha[t])) for t, s in zip(grid[:-1], grid[1:])]


# what the rest draw: dev/oracle.reveal_law's law, which is not the chain's (why beside each)
OTHER = {
    # one token a pass, but the position is the one whose drawn candidate is likeliest: a rare candidate loses its
    # turn and is redrawn later, mostly as a likely symbol, so rare symbols are under-drawn (mode-seeking)
    "confidence": (_denoise(order="confidence"), dict(kind="order", order="confidence"), _plan(4)),
    "threshold 1 (the best alone)": (_denoise(order="confidence", threshold=1.0),
                                     dict(kind="threshold", order="confidence", value=1.0), None),
    "entropy bound, confidence": (_denoise(order="confidence", entropy_bound=1e-9),
                                  dict(kind="entropy_bound", order="confidence", value=1e-9), None),
    # steps = length, but each position's coin is its own: a Binomial count a step, several at once now and then
    "ancestral, 4 steps": (_ancestral(4), dict(kind="ancestral", p=_ancestral_coins(4)), None),
    # k tokens a pass: those revealed together come from the product of their marginals
    "2 a pass, random": (_denoise(order="random", steps=2), dict(kind="random"), _plan(2)),
    "2 a pass, l2r": (_denoise(order="l2r", steps=2), dict(kind="order", order="l2r"), _plan(2)),
    "2 a pass, margin": (_denoise(order="margin", steps=2), dict(kind="order", order="margin"), _plan(2)),
    "2 a pass, confidence": (_denoise(order="confidence", steps=2), dict(kind="order", order="confidence"), _plan(2)),
    "threshold 0.4": (_denoise(order="confidence", threshold=0.4), dict(kind="threshold", order="confidence",
                                                                        value=0.4), None),
    "entropy bound 1, margin": (_denoise(order="margin", entropy_bound=1.0),
                                dict(kind="entropy_bound", order="margin", value=1.0), None),
}


@pytest.mark.parametrize("name", _tiers(OTHER))
def test_the_rest_draw_their_enumerated_law_which_is_detectably_not_the_chains(name):
    run, rule, plan = OTHER[name]
    draws = run(torch.Generator().manual_seed(2)).tolist()
    law, _ = oracle.reveal_law(CHAIN, PROMPT, 4, rule, plan, after=(END,))
    assert abs(float(law.sum()) - 1) < 1e-12
    chi2, limit = pooled_chi2(draws, _law(law))
    assert chi2 < limit, (name, "its own law", chi2, limit)
    chi2, limit = pooled_chi2(draws, _law(INFILL))
    assert chi2 > limit, (name, "the chain's joint", chi2, limit)


@pytest.mark.parametrize("name", ["schedule counts", "ReMDM"])
def test_schedule_counts_and_remdm_are_not_exact_even_one_token_a_pass(name):
    """tokens_per_step=schedule (the default) takes the argmax at its last step (MDLM's step into t = 0). ReMDM
    keeps the plan's count of [MASK]s: a pass that re-masks j committed tokens reveals j + 1 at once, from the
    product of their marginals (its re-masking alone, a set drawn apart from the tokens, would keep the law)."""
    kw = dict(tokens_per_step="schedule") if name == "schedule counts" else dict(remask="remdm", remask_eta=0.5)
    draws = _denoise(order="random", **kw)(torch.Generator().manual_seed(3)).tolist()
    chi2, limit = pooled_chi2(draws, _law(INFILL))
    assert chi2 > limit, (chi2, limit)


@pytest.mark.slower
def test_the_drafting_rounds_at_batch_1_draw_the_chains_joint():
    """inference.py's case: one sample, so every round drafts and checks its own block (2,000 draws, a generator
    each; the batched cases above advance all rows by the slowest)."""
    net, draws = oracle.Oracle(CHAIN, block_size=8, clean_causal=True), []
    for s in range(2000):
        g = torch.Generator().manual_seed(s)
        draws.append(bd3.sample_clean_ar(net, torch.full((1, 1), PROMPT), 4, bd3.Blocks(4, MASK),
                                         SamplerOptions(steps=1), g)[0][0, 1:].tolist())
    chi2, limit = pooled_chi2(draws, _law(CHAIN.joint(PROMPT, 4)))
    assert chi2 < limit, (chi2, limit)


@pytest.mark.core
def test_the_posterior_is_the_joint_conditioned_on_what_is_visible():
    """Forward-backward against the joint of every 6-symbol window (the first from pi) summed by hand, on random
    visibility patterns; and the oracle read through bd3's KV cache of the clean context equals its plain pass."""
    seqs = torch.tensor(list(itertools.product(range(3), repeat=6)))
    p = CHAIN.pi[seqs[:, 0]] * torch.exp(-CHAIN.nll(seqs, 1))
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        x = torch.randint(0, 3, (1, 6), generator=g)
        x[torch.rand(1, 6, generator=g) < 0.6] = MASK
        fits = ((seqs == x) | (x == MASK)).all(1)
        want = torch.stack([torch.bincount(seqs[fits, i], p[fits], 3) / p[fits].sum() for i in range(6)])
        assert torch.allclose(CHAIN.posterior(x, MASK)[0], want, atol=1e-12)
    net, x = oracle.Oracle(CHAIN), torch.tensor([[0, 2, 1, 1, MASK, 2, MASK, MASK]])
    assert net(x).dtype == torch.float32 and net(x)[..., MASK].eq(float("-inf")).all()  # [MASK] is never drawn
    cached = bd3.CachedBlockModel(net, bd3.CleanCache(1), 4)
    assert torch.equal(cached(x)[:, 4:], net(x)[:, 4:])  # the context enters the cache on the first pass
    assert torch.equal(cached(x)[:, 4:], net(x)[:, 4:])  # and is read from it after


def test_the_limit_readings_are_zero_on_the_chains_own_samples_and_not_on_a_collapse():
    """dev/limit.py's readings (what dev/plot_limit.py draws): on 2,000 texts drawn from the Shakespeare chain itself
    the excess NLL is 0 within 4 se and the transition KL at its finite-sample floor; on its greedy text (each
    character the likeliest after the last) the excess is far below 0, the samples likelier than the chain's own,
    and the transition KL far above the floor: the reading that says wrong."""
    limit = script("dev/limit")
    chain, tok, _ = oracle.shakespeare()
    g = torch.Generator().manual_seed(0)
    seqs = [torch.tensor(tok.encode("ROMEO:")).repeat(2000, 1)]
    for _ in range(48):
        seqs.append(torch.multinomial(chain.P[seqs[-1][:, -1]], 1, generator=g))
    own = limit.score(chain, torch.cat(seqs, 1), 6, [48] * 2000)
    assert abs(own["excess"]) < 4 * own["excess_se"] and own["trans_kl"] < 0.03, own
    assert abs(own["trans_h"] - chain.entropy_rate()) < 0.1, own
    greedy = [seqs[0][:1]]
    for _ in range(48):
        greedy.append(chain.P[greedy[-1][:, -1]].argmax(-1, keepdim=True))
    collapsed = limit.score(chain, torch.cat(greedy, 1).repeat(2, 1), 6, [48, 48])
    assert collapsed["excess"] < -0.5 and collapsed["trans_kl"] > 0.3, collapsed
