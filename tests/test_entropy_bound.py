"""The entropy-bounded reveal rule (EB-Sampler, Ben-Hamu et al. 2025, arXiv 2505.24857; --entropy_bound): the rule
against hand computations that the plausible one-line bugs fail (a sum instead of the sum minus the max, a descending
sort, an off-by-one in the prefix, the last entropy instead of the largest), the sampler's invariants (given text
never changes, no [MASK] left, at least one token a pass, committed tokens final), its limits (a bound near 0 is
--order entropy one token a pass; a huge one reveals everything in one pass), and what the objectives and scripts
say about it.
python -m pytest -q tests/test_entropy_bound.py"""
import math

import pytest
import torch

from bd3 import Blocks, sample_bd3
from config import Config
from configurator import get_config
from diffusion import SamplerOptions, Schedule, denoise, entropy_bound_stay
from utils.draws import Law
from helpers import Args, ToyModel, pick, script
from model import ModelArgs, Transformer
from objectives import OBJECTIVES
from sampling.trace import Trace

MASK = 11
EB = dict(entropy_bound=0.5, order="entropy", remask="none")


def _revealed(h, score, bound, masked=None):
    """The columns entropy_bound_stay reveals, per row (lists)."""
    masked = torch.ones_like(h, dtype=torch.bool) if masked is None else masked
    stay = entropy_bound_stay(masked, score, h, bound)
    return [sorted((masked[r] & ~stay[r]).nonzero().squeeze(1).tolist()) for r in range(len(h))]


def test_the_rule_by_hand_ranked_by_entropy():
    """Entropies (dyadic: exact in floats) 3/8, 1/8, 1/2, 1/16, 1/4 and a given column (5) the ranking must skip.
    Ascending: columns 3, 1, 4, 0, 2; prefix sums 1/16, 3/16, 7/16, 13/16, 21/16 less the prefix's max 1/16, 1/8, 1/4,
    3/8, 1/2: 0, 1/16, 3/16, 7/16, 13/16. Bound b reveals the columns of every prefix at or under b."""
    h = torch.tensor([[0.375, 0.125, 0.5, 0.0625, 0.25, 0.0]], dtype=torch.float64)
    masked = torch.tensor([[True] * 5 + [False]])
    score = torch.exp(-h)  # --order entropy's score; the given column scores highest of all
    want = {0.03125: [3], 0.0625: [1, 3], 0.125: [1, 3], 0.1875: [1, 3, 4], 0.4: [1, 3, 4], 0.4375: [0, 1, 3, 4],
            0.8125: [0, 1, 2, 3, 4], 1e300: [0, 1, 2, 3, 4]}
    for bound, cols in want.items():
        assert _revealed(h, score, bound, masked) == [cols], bound
    # the bugs: the sum alone stops a column early; a descending sort starts from the most uncertain column
    assert sum([0.0625, 0.125, 0.25]) > 0.1875 and _revealed(h, score, 0.0625, masked) != [[2]]


def test_the_bound_reads_the_largest_entropy_not_the_last_when_the_order_is_another_score():
    """Under --order confidence the ranking is not by entropy: entropies 1/4, 1/16, 1/8 in rank order give prefix sums
    1/4, 5/16, 7/16 less the max 1/4 (each time): 0, 1/16, 3/16 (less the last entry: 0, 1/4, 5/16). Two rows ranked
    differently, each by its own scores."""
    h = torch.tensor([[0.25, 0.0625, 0.125], [0.25, 0.0625, 0.125]], dtype=torch.float64)
    score = torch.tensor([[0.9, 0.8, 0.7], [0.1, 0.2, 0.3]], dtype=torch.float64)  # row 1 ranks 2, 1, 0
    # row 1: 1/8, 1/16, 1/4: sums 1/8, 3/16, 7/16 less the max 1/8, 1/8, 1/4: 0, 1/16, 3/16
    assert _revealed(h, score, 0.1875) == [[0, 1, 2], [0, 1, 2]]
    assert _revealed(h, score, 0.125) == [[0, 1], [1, 2]]
    assert _revealed(h, score, 0.03125) == [[0], [2]]


def _table_model(k):
    """A model ignoring its input whose law at column i is uniform over k[i] tokens: entropy ln k[i] nats."""
    table = torch.full((len(k), 12), -math.inf)
    for i, n in enumerate(k):
        table[i, :n] = 0.0

    class Table(torch.nn.Module):
        args = Args(len(k))

        def forward(self, idx, t=None, positions=None, **kw):
            out = table.expand(idx.size(0), -1, -1).clone()
            return out if positions is None else out.flatten(0, 1)[positions]
    return Table()


def test_denoise_reveals_the_hand_computed_sets_pass_by_pass():
    """Entropies ln 4, 0, ln 8, ln 2, ln 2, ln 4 (in units of ln 2: 2, 0, 3, 1, 1, 2). At 2.5 ln 2: ascending 0, 1, 1, 2, 2,
    3 give 0, 0, 1, 2, 4, 6 (sum less max): columns 1, 3, 4, 0, then 5, 2 (0, 2). At 0.5 ln 2: columns 1, 3 (0, 0, 1),
    then one a pass. The trace's Steps say what each pass revealed; in nats, from the law drawn from."""
    model = _table_model([4, 1, 8, 2, 2, 4])
    x, gm = torch.zeros(1, 6, dtype=torch.long), torch.ones(1, 6, dtype=torch.bool)
    for bound, want in ((2.5, [[0, 1, 3, 4], [2, 5]]), (0.5, [[1, 3], [4], [0], [5], [2]])):
        passes = []
        opts = SamplerOptions(1, entropy_bound=bound * math.log(2), order="entropy", remask="none")
        out, stats = denoise(model, x.clone(), gm, Schedule(10), MASK, opts, torch.Generator().manual_seed(0),
                             on_step=lambda st: passes.append(st.revealed[0].nonzero().squeeze(1).tolist()))
        assert passes == want and stats["nfe"] == len(want) and not (out == MASK).any()
        assert out[0, 1].item() == 0  # the certain column took its one token


def _canvas(B=3, L=40):
    """A prompt, blanks, an island of given text inside them (row 1) and a suffix (row 2)."""
    x = torch.randint(0, MASK, (B, L), generator=torch.Generator().manual_seed(5))
    gm = torch.zeros(B, L, dtype=torch.bool)
    gm[:, 6:] = True
    gm[1, 20:25] = False
    gm[2, L - 4:] = False
    return x, gm


@pytest.mark.parametrize("mode", [EB, dict(EB, entropy_bound=3.0, order="confidence"), dict(EB, order="margin"),
                                  dict(EB, semi_ar_length=7), dict(EB, entropy_bound=1e-9)], ids=str)
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_given_text_never_changes_every_pass_reveals_and_committed_tokens_stay(mode, temperature):
    x, gm = _canvas()
    seen = []

    def on_step(st):
        assert torch.equal(st.x[~gm], x[~gm]) and not st.remasked.any() and not (st.revealed & ~gm).any()
        took_part = (st.prev == MASK).any(1) & (st.time > 0)
        assert (st.revealed.sum(1)[took_part] >= 1).all()  # at least one a pass, a sample that took part
        assert torch.equal(st.x[st.prev != MASK], st.prev[st.prev != MASK])  # committed tokens final
        seen.append(st.revealed.sum(1))

    opts = SamplerOptions(1, law=Law(temperature=temperature), **mode)
    out, stats = denoise(ToyModel(), torch.where(gm, MASK, x), gm, Schedule(20), MASK, opts,
                         torch.Generator().manual_seed(0), on_step)
    assert torch.equal(out[~gm], x[~gm]) and not (out == MASK).any()
    assert torch.equal(torch.stack(seen).sum(0), gm.sum(1))  # each blank revealed once
    assert stats["nfe_per_sample"] == [int((c > 0).sum()) for c in torch.stack(seen).T]


class TiltedModel(ToyModel):
    """ToyModel with a fixed random tilt per column: no two [MASK]s share an entropy (ToyModel's runs of [MASK]s do, and
    a tie is broken leftmost first by the bound, as the sort falls by a fixed count)."""
    tilt = torch.randn(64, 12, generator=torch.Generator().manual_seed(9))

    def forward(self, idx, t=None, positions=None, **kw):
        logits = super().forward(idx, t) + self.tilt[:idx.size(1)]
        return logits if positions is None else pick(logits, positions)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_a_bound_near_zero_is_the_entropy_order_one_token_a_pass(temperature):
    """Below every entropy but the first (0 exactly) the bound reveals the lowest-entropy [MASK] alone: --order entropy
    with linear counts at one token a step, draw for draw (two samples, as many blanks each)."""
    x, gm = _canvas()
    x, gm = x[:2], gm[:2].clone()
    gm[0, 35:] = False  # 29 blanks in each row: row 0 a suffix, row 1 an island
    n = int(gm.sum(1)[0])

    def run(**mode):
        opts = SamplerOptions(n, law=Law(temperature=temperature), **mode)
        return denoise(TiltedModel(), x.clone(), gm, Schedule(100), MASK, opts, torch.Generator().manual_seed(3))

    eb, eb_stats = run(entropy_bound=1e-12, order="entropy", remask="none")
    fixed, fixed_stats = run(order="entropy", remask="none", tokens_per_step="linear")
    assert torch.equal(eb, fixed) and eb_stats["nfe_per_sample"] == fixed_stats["nfe_per_sample"] == [n, n]


def test_a_huge_bound_reveals_everything_in_one_pass():
    x, gm = _canvas()
    out, stats = denoise(ToyModel(), x.clone(), gm, Schedule(20), MASK, SamplerOptions(1, **dict(EB, entropy_bound=1e300)),
                         torch.Generator().manual_seed(0))
    assert stats["nfe"] == 1 and stats["nfe_per_sample"] == [1, 1, 1] and not (out == MASK).any()


def test_block_diffusion_bounds_each_block():
    """bd3 decodes each block by the rule (in its window, against its cache): a huge bound takes a pass a block, one
    near 0 a pass a token, --order entropy's within each block of 4 draw for draw (tests/test_bd3.py: the cache)."""
    torch.manual_seed(0)
    model = Transformer(ModelArgs(vocab_size=12, block_size=16, n_layer=2, n_head=2, n_embd=32, diffusion_steps=10,
                                  time_cond="none")).eval()
    prompt = torch.randint(0, MASK, (2, 6), generator=torch.Generator().manual_seed(0))
    blocks = Blocks(size=4, mask_id=MASK)

    def run(**mode):
        return sample_bd3(model, prompt, 26, blocks, Schedule(10), SamplerOptions(4, **mode),
                          torch.Generator().manual_seed(1))

    out, st = run(**dict(EB, entropy_bound=1e300))
    assert st["nfe"] == st["blocks"] == 7 and torch.equal(out[:, :6], prompt) and not (out == MASK).any()
    tiny, st_tiny = run(**dict(EB, entropy_bound=1e-12))
    fixed, st_fixed = run(order="entropy", remask="none", tokens_per_step="linear")
    assert torch.equal(tiny, fixed) and st_tiny["nfe"] == st_fixed["nfe"] == 26  # a pass a token


def test_the_objectives_say_what_runs():
    cfg = get_config(["baby", "--entropy_bound=0.5", "--order=entropy"])
    opts = SamplerOptions.from_config(cfg)
    assert OBJECTIVES["mdlm"].passes(cfg, opts, 48) is None  # adaptive
    assert "entropy bound 0.5 nats (EB-Sampler" in OBJECTIVES["mdlm"].describe(cfg, opts)
    bd3 = get_config(["baby_bd3", "--bd3_speculate=false", "--entropy_bound=0.5", "--order=entropy"])
    bd3_opts = SamplerOptions.from_config(bd3)
    assert OBJECTIVES["bd3"].passes(bd3, bd3_opts, 48) is None
    assert "entropy bound 0.5" in OBJECTIVES["bd3"].describe(bd3, bd3_opts)


def test_a_frontier_grid_drops_what_the_bound_leaves_unread():
    """steps at a bounded point, the bound at a random-order point (no score ranks there): each point is the sampler
    it runs, checked."""
    frontier = script("frontier")
    cfg = get_config(["baby"])
    grid = dict(order=["random", "entropy"], entropy_bound=[0.0, 0.5], steps=[24, 48])
    points = [s for s, _, _ in frontier.grid_points(grid, cfg, OBJECTIVES["mdlm"])]
    assert points == [dict(order="random", steps=24), dict(order="random", steps=48),
                      dict(order="entropy", entropy_bound=0.0, steps=24), dict(order="entropy", entropy_bound=0.0, steps=48),
                      dict(order="entropy", entropy_bound=0.5)]


def test_the_trace_captions_each_frame_with_what_its_pass_revealed():
    class Writer:
        frames = []

        def add_frame(self, tokens, states, step, t, nfe, confidence=None, caption=""):
            self.frames.append(caption)

    class Tok:
        mask_id = MASK

        def token_text(self, i):
            return "ab"[i % 2]

    w = Writer()
    model = _table_model([4, 1, 8, 2, 2, 4])
    x, gm = torch.zeros(1, 6, dtype=torch.long), torch.ones(1, 6, dtype=torch.bool)
    denoise(model, x, gm, Schedule(10), MASK, SamplerOptions(1, entropy_bound=2.5 * math.log(2), order="entropy",
                                                             remask="none"),
            torch.Generator().manual_seed(0), on_step=Trace(Tok(), Config(diffusion_steps=10, trace_every=1), video=w))
    assert w.frames == ["", "4 revealed", "2 revealed"]
