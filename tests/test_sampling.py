"""The masked-diffusion sampler (diffusion.denoise): every option's invariants in one class test, each option by hand
(order, counts, threshold, entropy bound, ReMDM, semi-AR blocks, the falling temperature), the samplers' laws against
exact enumerations by chi-square, infilling, and inference.py's sampling. python -m pytest -q tests/test_sampling.py"""
import itertools
import math
import re
import shlex
from dataclasses import replace

import pytest
import torch

import inference
from conftest import train_tiny
from config import Config
from configurator import get_config
from diffusion import (MaskedDiffusion, SamplerOptions, Schedule, denoise, entropy_bound_stay, position_scores,
                       reveal_plan, sigma, time_grid)
from helpers import FIXTURES, ROOT, Args, ToyModel, model_args, pick, pooled_chi2, run_cli_here, script
from model import ModelArgs, Transformer
from objectives import OBJECTIVES
from sampling.canvas import Canvas, build_canvas, fill, parse_infill
from utils.draws import Law
from utils.errors import UserError
from utils.tokenizer import CharTokenizer

pytestmark = pytest.mark.core  # the core tier (pytest.ini): the maths, the loop, the samplers

MASK = 11
EB = dict(entropy_bound=0.5, order="entropy", remask="none")
REMDM = dict(remask="remdm", remask_eta=0.5)


class PositionModel(torch.nn.Module):
    """Ignores the tokens: a fixed table of logits per position (L, V), so each position's law is known."""

    def __init__(self, L=40, V=12):
        super().__init__()
        self.table = torch.randn(L, V, generator=torch.Generator().manual_seed(3))
        if V > MASK:
            self.table[:, MASK] = 50.0  # the [MASK] logit is the largest: the sampler must still never emit it
        self.args = Args(L)

    def forward(self, idx, t=None, **kw):
        return self.table[:idx.size(1)].expand(idx.size(0), -1, -1).clone()


def _table_model(k):
    """A PositionModel whose law at column i is uniform over k[i] tokens: entropy ln k[i] nats."""
    m = PositionModel(L=len(k))
    m.table = torch.full((len(k), 12), -math.inf)
    for i, n in enumerate(k):
        m.table[i, :n] = 0.0
    return m


def _canvas(B=3, P=6, L=40, V=12):
    """A prompt, a generated region, an island of given text inside it (row 1) and a suffix (row 2)."""
    x = torch.randint(0, V - 1, (B, L), generator=torch.Generator().manual_seed(5))
    gm = torch.zeros(B, L, dtype=torch.bool)
    gm[:, P:] = True
    gm[1, 20:25] = False
    gm[2, L - 4:] = False
    return x, gm


def _opts(steps, temperature=1.0, top_k=0, top_p=1.0, **kw):
    return SamplerOptions(steps=steps, law=Law(temperature=temperature, top_k=top_k, top_p=top_p), **kw)


def _run(model, x, gm, mode, steps=12, temperature=1.0, seed=0, on_step=None, T=20, **kw):
    return denoise(model, x.clone(), gm, Schedule(T), MASK, _opts(steps, temperature, **kw, **mode),
                   generator=torch.Generator().manual_seed(seed), on_step=on_step)


def _masked(info, gm):
    return ((info.x == MASK) & gm).sum(1)


# ----------------------------------------------------------------------------- every option, one class test
MODES = [dict(), dict(order="margin"), dict(order="entropy"), dict(order="random", remask="none"),
         dict(order="l2r", remask="none"), dict(tokens_per_step="linear", remask="none"), dict(tokens_per_step="cosine"),
         dict(remask="remdm", remask_eta=0.3), dict(REMDM, tokens_per_step="linear", order="random"),
         dict(threshold=0.5), dict(threshold=0.999, order="margin"), dict(semi_ar_length=7),
         dict(semi_ar_length=7, threshold=0.9, order="entropy"),
         dict(semi_ar_length=5, remask="remdm", remask_eta=0.3, tokens_per_step="linear"),
         dict(REMDM, remask_eta=1.0, semi_ar_length=10), dict(REMDM, semi_ar_length=10, order="random"),
         EB, dict(EB, entropy_bound=3.0, order="confidence"), dict(EB, order="margin"), dict(EB, semi_ar_length=7),
         dict(EB, entropy_bound=1e-9), dict(semi_ar_length=7, entropy_bound=2.0)]
CURVES = {"schedule": lambda r: 1 - Schedule(20).alpha[time_grid(20, 12)[round(r * 12)]].item(),
          "linear": lambda r: 1 - r, "cosine": lambda r: math.cos(math.pi / 2 * r)}


@pytest.mark.parametrize("temperature", [0.0, 1.0])
@pytest.mark.parametrize("mode", MODES, ids=lambda m: ",".join(f"{k}={v}" for k, v in m.items()) or "reference")
def test_every_mode_keeps_given_text_fills_every_blank_and_counts_its_passes(mode, temperature):
    """At every pass the given text stays and nothing outside the blanks is re-masked or drawn; no [MASK] is left; the
    NFE is the passes run (MaskedDiffusion.passes says as many); a plan's count of [MASK]s left after each step is
    reveal_plan's of its curve (within one of it); with remask none each blank is revealed once, for good, at least one
    a pass; a canvas without a blank comes back unchanged, at no pass; a seed fixes the draws."""
    x, gm = _canvas()
    opts = _opts(12, temperature, **mode)
    steps = []

    def on_step(info):
        assert torch.equal(info.x[~gm], x[~gm]) and not ((info.remasked | info.revealed) & ~gm).any()
        steps.append(info)

    out, stats = _run(ToyModel(), x, gm, mode, temperature=temperature, on_step=on_step)
    assert torch.equal(out[~gm], x[~gm]) and not (out == MASK).any()
    n_gen = gm.sum(1)
    assert stats["nfe"] == len(steps) == max(stats["nfe_per_sample"]) and steps[-1].finished == [True] * 3
    assert all(1 <= n <= g for n, g in zip(stats["nfe_per_sample"], n_gen.tolist()))
    if not opts.adaptive:
        assert stats["nfe"] == MaskedDiffusion().passes(Config(), opts, int(n_gen.max()))
    if not opts.adaptive and not opts.semi_ar_length:
        curve = CURVES[opts.tokens_per_step]
        plan = reveal_plan(n_gen, [curve((i + 1) / 12) for i in range(12)])
        for i, info in enumerate(steps):
            assert torch.equal(_masked(info, gm), plan[:, i])
            assert (plan[:, i] - torch.round(n_gen * curve((i + 1) / 12)).long()).abs().max() <= 1
    if opts.remask == "none":
        for info in steps:
            took_part = (info.prev == MASK).any(1) & (info.time > 0)
            assert (info.revealed.sum(1)[took_part] >= 1).all() and not info.remasked.any()
            assert torch.equal(info.x[info.prev != MASK], info.prev[info.prev != MASK])
        revealed = torch.stack([info.revealed.sum(1) for info in steps])
        assert torch.equal(revealed.sum(0), n_gen)
        assert stats["nfe_per_sample"] == [int((c > 0).sum()) for c in revealed.T]
    empty, st = _run(ToyModel(), x, torch.zeros_like(gm), mode, temperature=temperature)
    assert torch.equal(empty, x) and st["nfe"] == 0 and st["nfe_per_sample"] == [0, 0, 0]
    if temperature:
        assert torch.equal(_run(ToyModel(), x, gm, mode)[0], out)
        assert not torch.equal(_run(ToyModel(), x, gm, mode, seed=1)[0], out)


@pytest.mark.parametrize("mode", MODES[:9] + [dict(semi_ar_length=4, remask="none")], ids=str)
def test_top_k_1_emits_the_argmax_at_every_position(mode):
    model = PositionModel()
    x, gm = _canvas()
    out, _ = _run(model, x, gm, mode, temperature=1.0, top_k=1)
    best = model.table.clone()
    best[:, MASK] = -math.inf  # the [MASK] logit never counts
    assert torch.equal(out[gm], best.argmax(-1).expand(3, -1)[gm])


OFF = [(dict(m), dict(m, semi_ar_length=bl)) for m in (dict(), dict(order="random", remask="none"),
                                                        dict(tokens_per_step="linear"), dict(remask="remdm",
                                                                                             remask_eta=0.3),
                                                        dict(threshold=0.6)) for bl in (34, 1000)]
OFF += [(dict(order="random", remask="none"), dict(order="random", remask="remdm", remask_eta=0.0)),
        (dict(order="random", remask="none"), dict(order="random", remask="none", temperature_end_share=1.0))]


@pytest.mark.parametrize("plain, off", OFF, ids=str)
def test_an_option_at_its_neutral_value_is_the_sampler_without_it(plain, off):
    """One semi-AR block holding every blank, ReMDM at eta 0, a temperature that ends at its whole share: the same
    draws and passes."""
    x, gm = _canvas()
    (a, sa), (b, sb) = (_run(ToyModel(), x, gm, m, seed=4) for m in (plain, off))
    assert torch.equal(a, b) and sa["nfe_per_sample"] == sb["nfe_per_sample"] and sa["blocks"] == sb["blocks"] == 1


def test_reveal_plan_by_hand():
    # 5 positions, fractions still masked 1, 1, 0.9, 0: rounding alone reveals 0, 0, 1 (4.5 rounds to 4), 4
    plan = reveal_plan(torch.tensor([5, 2]), [1.0, 1.0, 0.9, 0.0])
    assert plan[0].tolist() == [4, 3, 2, 0]  # one per step at least, the rest at the end
    assert plan[1].tolist() == [1, 0, 0, 0]  # 2 positions in 4 steps: revealed as early as possible
    # already at least one per step: unchanged (linear counts)
    assert reveal_plan(torch.tensor([8]), [0.75, 0.5, 0.25, 0.0])[0].tolist() == [6, 4, 2, 0]


@pytest.mark.parametrize("mode", [dict(remask="none"), dict(), dict(remask="remdm", remask_eta=0.1),
                                  dict(tokens_per_step="cosine"), dict(semi_ar_length=8)], ids=str)
def test_every_pass_reveals_a_token_and_nfe_counts_the_passes(mode):
    """16 blanks at 48 steps take 16 passes; at fewer steps than blanks each step reveals one or more."""
    x, gm = torch.randint(0, 11, (2, 24)), torch.zeros(2, 24, dtype=torch.bool)
    gm[:, 8:] = True
    for steps, nfe in ((48, 16), (12, 12), (16, 16)):
        before = []
        out, stats = _run(ToyModel(), x, gm, mode, steps=steps, T=100,
                          on_step=lambda info: before.append(((info.prev == MASK) & gm).sum(1) - _masked(info, gm)))
        assert stats["nfe"] == nfe == len(before) and stats["nfe_per_sample"] == [nfe, nfe]
        assert MaskedDiffusion().passes(Config(), _opts(steps, **mode), 16) == nfe
        assert all((d >= 1).all() for d in before) and not (out == MASK).any()


@pytest.mark.parametrize("block_length", [4, 8, 16, 0])
def test_semi_ar_blocks_take_no_greedy_step_but_the_samples_last(block_length, monkeypatch):
    """With schedule counts the step into t = 0 is the reference's greedy clean-up: once a sample, never once a block."""
    import diffusion
    temps, real = [], diffusion.sample_tokens

    def spy(logp, temperature, generator=None):
        temps.append((temperature, logp.size(0)))
        return real(logp, temperature, generator)
    monkeypatch.setattr(diffusion, "sample_tokens", spy)
    x, gm = torch.zeros(1, 64, dtype=torch.long), torch.zeros(1, 64, dtype=torch.bool)
    gm[:, 4:] = True
    _run(ToyModel(block_size=64), x, gm, dict(semi_ar_length=block_length), steps=60 if block_length else 20)
    greedy = [n for t, n in temps if t == 0.0]
    assert len(greedy) <= 1 and sum(greedy) <= 1, temps  # at most the final step, one token


# ----------------------------------------------------------------------------- each option by hand
def test_threshold_passes_by_hand():
    """At tau = 1 nothing scores above it: one commit a pass, n_gen passes; where p ~ 1 everywhere one pass a sample,
    or a block (samples of different lengths, their own NFE and seconds)."""
    x, gm = _canvas()
    for block in (0, 6):
        _, stats = _run(ToyModel(), x, gm, dict(threshold=1.0, semi_ar_length=block))
        assert stats["nfe_per_sample"] == gm.sum(1).tolist() and stats["nfe"] == max(gm.sum(1).tolist())
        assert all(0 < s <= stats["seconds"] for s in stats["seconds_per_sample"])
    model = PositionModel()
    model.table[:, 3] = 20.0  # p(3) ~ 1 at every position
    gm[0, 30:] = False
    _, stats = _run(model, x, gm, dict(threshold=0.9))
    assert stats["nfe_per_sample"] == [1, 1, 1] and stats["nfe"] == 1
    _, stats = _run(model, x, gm, dict(threshold=0.9, semi_ar_length=10))  # one step per block
    assert stats["nfe_per_sample"] == [math.ceil(n / 10) for n in gm.sum(1).tolist()]


def test_the_threshold_commits_every_position_above_it_and_at_least_the_best():
    """Confidences 0.99, 0.95, 0.9, 0.7, ... at 0.92: the two above it at the first pass, then the best alone."""
    conf = torch.tensor([0.5, 0.99, 0.2, 0.9, 0.15, 0.95, 0.7, 0.3], dtype=torch.float64)
    model = PositionModel(L=8)
    model.table = torch.log(torch.cat([conf[:, None], ((1 - conf) / 10)[:, None].expand(-1, 10),
                                       torch.zeros(8, 1)], 1)).float()  # token 0 at c, ten others share the rest
    x, gm = torch.zeros(1, 8, dtype=torch.long), torch.ones(1, 8, dtype=torch.bool)
    counts = []
    _, stats = _run(model, x, gm, dict(threshold=0.92), temperature=0.0,
                    on_step=lambda st: counts.append(int(st.revealed.sum())))
    assert counts == [2, 1, 1, 1, 1, 1, 1] and stats["nfe"] == 7, counts


def test_blocks_decode_left_to_right():
    x, gm = _canvas()
    block_of = torch.where(gm, (gm.long().cumsum(1) - 1) // 8, -1)
    seen = []

    def on_step(info):
        b, masked = info.block, (info.x == MASK) & gm
        assert not (masked & (block_of < b) & (block_of >= 0)).any()  # earlier blocks: done
        assert masked[block_of > b].all()  # later blocks: untouched
        seen.append(b)

    _run(ToyModel(), x, gm, dict(semi_ar_length=8), steps=15, on_step=on_step)
    assert seen == sorted(seen) and seen[-1] == 4  # 34 generated positions in row 0 -> 5 blocks


def test_sliding_window_generates_past_the_context():
    model = ToyModel(block_size=16)  # asserts every input is <= 16 tokens
    x, gm = torch.randint(0, 11, (2, 50)), torch.zeros(2, 50, dtype=torch.bool)
    gm[:, 5:] = True
    seen, forward = [], model.forward
    model.forward = lambda idx, t=None, **kw: (seen.append(idx.clone()), forward(idx, t, **kw))[1]
    out, stats = _run(model, x, gm, dict(semi_ar_length=6, remask="none"), steps=16)
    assert torch.equal(out[:, :5], x[:, :5]) and not (out == MASK).any() and stats["blocks"] == 8
    # from the third block on, the window is the 16 positions ending at the block: 10 of context, then the block
    assert len(seen) == 16 and all(idx.size(1) == 16 and not (idx[:, :10] == MASK).any() for idx in seen[4:])
    with pytest.raises(ValueError, match="exceeds the model's context"):
        _run(model, x, gm, {}, steps=16)


def test_remdm_remasks_committed_tokens_only_and_sigma_is_eta_capped_by_hand():
    m, k = torch.tensor([10, 4, 0, 10]), torch.tensor([5, 8, 3, 1])  # committed before, masked after the step
    # sigma_max = min(1, (1 - alpha_s) / alpha_t) = min(1, n_keep / m): 0.5, 1 (capped), 0 (nothing committed), 0.1
    assert sigma(0.3, m, k).tolist() == pytest.approx([0.3, 0.3, 0.0, 0.1])
    x, gm = _canvas()
    remasked = []

    def on_step(info):
        assert not (info.remasked & (info.prev == MASK)).any()  # only committed tokens go back
        remasked.append(info.remasked.sum().item())

    _run(ToyModel(), x, gm, REMDM, steps=10, on_step=on_step)
    assert sum(remasked) > 0 and remasked[-1] == 0


def _told_times(model, s, x, gm, opts):
    """Each pass's (t told (B,), masked share of the window the model saw (B,)) in one denoise() call."""
    told, forward = [], model.forward

    def recording(idx, t=None, **kw):
        told.append((t.clone(), (idx == MASK).double().mean(1)))
        return forward(idx, t, **kw)
    model.forward = recording
    denoise(model, x, gm, s, MASK, opts, generator=torch.Generator().manual_seed(0))
    return told


def test_the_time_told_is_the_mask_rate_of_the_whole_window():
    """An infill of 20 blanks in a 128-token window is told t = 36 of 100 (cosine: 15.6 % masked), not 100, and at
    every pass the t whose mask rate is nearest the window's; on the linear schedule of T = 20 a window of 20 blanks
    revealed one a pass is told t = 20, 19, ..., 1."""
    s = Schedule(100)
    x, gm = torch.randint(0, 11, (1, 128)), torch.zeros(1, 128, dtype=torch.bool)
    gm[:, 60:80] = True
    told = _told_times(ToyModel(block_size=128), s, x, gm, _opts(10))
    nearest = lambda frac: min(range(1, s.T + 1), key=lambda t: abs(1 - s.alpha[t].item() - frac))  # noqa: E731
    assert told[0][0].item() == 36 == nearest(20 / 128)
    for t, frac in told:
        assert t.tolist() == [nearest(f) for f in frac.tolist()]
    x, gm = torch.zeros(2, 20, dtype=torch.long), torch.ones(2, 20, dtype=torch.bool)
    told = _told_times(ToyModel(block_size=20), Schedule(20, "linear"), x, gm, _opts(20, tokens_per_step="linear"))
    assert [t.tolist() for t, _ in told] == [[m, m] for m in range(20, 0, -1)]


def test_l2r_reveals_the_leftmost_masked_position_each_step():
    """Whatever the model prefers, stepping over given text (row 1's island)."""
    x, gm = _canvas()
    n = gm.sum(1)

    def on_step(info):
        for r in range(3):
            if info.revealed[r].any():
                cols = info.revealed[r].nonzero().squeeze(1)
                assert len(cols) == 1 and cols.item() == (gm[r] & (info.prev[r] == MASK)).nonzero().min().item()

    out, stats = _run(PositionModel(), x, gm, dict(order="l2r", remask="none", tokens_per_step="linear"),
                      steps=int(n.max()), on_step=on_step)
    assert stats["nfe_per_sample"] == n.tolist() and not (out == MASK).any()


def test_the_temperature_falls_with_the_share_of_the_block_still_masked():
    """A token drawn while a share f of the block is masked is drawn at T * (s + (1 - s) * f): two positions, left
    to right, at f = 1 and 1/2, against the hand softmax over 20,000 draws (a constant T is 0.1 off at the second)."""
    model, B = PositionModel(L=3), 20000
    model.table[2, :MASK] = torch.linspace(-2.0, 2.0, MASK)
    x, gm = torch.zeros(B, 3, dtype=torch.long), torch.zeros(B, 3, dtype=torch.bool)
    gm[:, 1:] = True
    T, s = 1.5, 0.2
    out, _ = _run(model, x, gm, dict(order="l2r", remask="none", tokens_per_step="linear", temperature_end_share=s),
                  steps=2, temperature=T)
    for col, f in ((1, 1.0), (2, 0.5)):
        want = torch.softmax(model.table[col, :MASK].double() / (T * (s + (1 - s) * f)), -1)
        got = torch.bincount(out[:, col], minlength=MASK)[:MASK].double() / B
        assert (got - want).abs().max() < 0.015, (col, got, want)
    const = torch.softmax(model.table[2, :MASK].double() / T, -1)
    assert (torch.bincount(out[:, 2], minlength=MASK)[:MASK].double() / B - const).abs().max() > 0.08


def test_position_scores_by_hand():
    p = torch.tensor([[0.5, 0.3, 0.2]], dtype=torch.float64)
    cand = torch.tensor([1])
    conf, score = position_scores(p.log(), cand, "confidence")
    assert conf.item() == pytest.approx(0.3) and score.item() == pytest.approx(0.3)
    assert position_scores(p.log(), cand, "margin")[1].item() == pytest.approx(0.2)
    H = -(0.5 * math.log(0.5) + 0.3 * math.log(0.3) + 0.2 * math.log(0.2))
    assert position_scores(p.log(), cand, "entropy")[1].item() == pytest.approx(math.exp(-H))
    lp = torch.tensor([[0.0, -math.inf]], dtype=torch.float64)  # a top-k-filtered row: entropy 0, margin 1
    assert position_scores(lp, torch.tensor([0]), "entropy")[1].item() == 1.0
    assert position_scores(lp, torch.tensor([0]), "margin")[1].item() == 1.0
    p3 = p.expand(3, -1)
    _, score = position_scores(p3.log(), torch.tensor([0, 1, 2]), "l2r", cols=torch.tensor([5, 0, 9]))
    assert score.argsort(descending=True).tolist() == [1, 0, 2]  # leftmost first, whatever the probabilities


# ----------------------------------------------------------------------------- the entropy bound (EB-Sampler)
def _revealed(h, score, bound, masked=None):
    """The columns entropy_bound_stay reveals, per row (lists)."""
    masked = torch.ones_like(h, dtype=torch.bool) if masked is None else masked
    stay = entropy_bound_stay(masked, score, h, bound)
    return [sorted((masked[r] & ~stay[r]).nonzero().squeeze(1).tolist()) for r in range(len(h))]


def test_the_entropy_bound_by_hand_ranked_by_entropy_and_by_another_score():
    """Entropies 3/8, 1/8, 1/2, 1/16, 1/4 and a given column (5): ascending 3, 1, 4, 0, 2, prefix sums less the
    prefix's max 0, 1/16, 3/16, 7/16, 13/16; b reveals every prefix at or under b. Ranked by another score (rows ranked
    each by its own), the bound reads the prefix's largest entropy, not its last."""
    h = torch.tensor([[0.375, 0.125, 0.5, 0.0625, 0.25, 0.0]], dtype=torch.float64)
    masked = torch.tensor([[True] * 5 + [False]])
    want = {0.03125: [3], 0.0625: [1, 3], 0.125: [1, 3], 0.1875: [1, 3, 4], 0.4: [1, 3, 4], 0.4375: [0, 1, 3, 4],
            0.8125: [0, 1, 2, 3, 4], 1e300: [0, 1, 2, 3, 4]}
    for bound, cols in want.items():
        assert _revealed(h, torch.exp(-h), bound, masked) == [cols], bound
    h = torch.tensor([[0.25, 0.0625, 0.125]] * 2, dtype=torch.float64)
    score = torch.tensor([[0.9, 0.8, 0.7], [0.1, 0.2, 0.3]], dtype=torch.float64)  # row 1 ranks 2, 1, 0
    assert _revealed(h, score, 0.1875) == [[0, 1, 2], [0, 1, 2]]
    assert _revealed(h, score, 0.125) == [[0, 1], [1, 2]]
    assert _revealed(h, score, 0.03125) == [[0], [2]]


def test_denoise_reveals_the_entropy_bounds_hand_computed_sets_pass_by_pass():
    """Entropies (units of ln 2) 2, 0, 3, 1, 1, 2. At 2.5: columns 1, 3, 4, 0 (sums less max 0, 0, 1, 2), then 5, 2;
    at 0.5: 1, 3, then one a pass; a huge bound reveals all in one pass. The trace captions what each pass revealed."""
    from sampling.trace import Trace

    class Writer:
        def __init__(self):
            self.frames = []

        def add_frame(self, tokens, states, step, t, nfe, confidence=None, caption=""):
            self.frames.append(caption)

    tok = type("Tok", (), dict(mask_id=MASK, token_text=lambda self, i: "ab"[i % 2]))()
    model = _table_model([4, 1, 8, 2, 2, 4])
    x, gm = torch.zeros(1, 6, dtype=torch.long), torch.ones(1, 6, dtype=torch.bool)
    for bound, want in ((2.5, [[0, 1, 3, 4], [2, 5]]), (0.5, [[1, 3], [4], [0], [5], [2]]), (1e300, [list(range(6))])):
        passes, w = [], Writer()
        trace = Trace(tok, Config(diffusion_steps=10, trace_every=1), video=w)
        out, stats = _run(model, x, gm, dict(EB, entropy_bound=bound * math.log(2)), steps=1, T=10,
                          on_step=lambda st: (passes.append(st.revealed[0].nonzero().squeeze(1).tolist()), trace(st)))
        assert passes == want and stats["nfe"] == len(want) and not (out == MASK).any()
        assert out[0, 1].item() == 0  # the certain column took its one token
        assert w.frames == [""] + [f"{len(p)} revealed" for p in want]


class TiltedModel(ToyModel):
    """ToyModel with a fixed random tilt per column: no two [MASK]s share an entropy."""
    tilt = torch.randn(64, 12, generator=torch.Generator().manual_seed(9))

    def forward(self, idx, t=None, positions=None, **kw):
        logits = super().forward(idx, t) + self.tilt[:idx.size(1)]
        return logits if positions is None else pick(logits, positions)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_an_entropy_bound_near_zero_is_the_entropy_order_one_token_a_pass(temperature):
    x, gm = _canvas()
    x, gm = x[:2], gm[:2].clone()
    gm[0, 35:] = False  # 29 blanks in each row: row 0 a suffix, row 1 an island
    n = int(gm.sum(1)[0])
    eb, eb_stats = _run(TiltedModel(), x, gm, dict(EB, entropy_bound=1e-12), steps=n, temperature=temperature,
                        seed=3, T=100)
    fixed, fixed_stats = _run(TiltedModel(), x, gm, dict(order="entropy", remask="none", tokens_per_step="linear"),
                              steps=n, temperature=temperature, seed=3, T=100)
    assert torch.equal(eb, fixed) and eb_stats["nfe_per_sample"] == fixed_stats["nfe_per_sample"] == [n, n]


def test_block_diffusion_bounds_each_block_by_entropy():
    """A huge bound takes a pass a block, one near 0 a pass a token, --order entropy's draws within each block of 4."""
    from bd3 import Blocks, sample_bd3
    torch.manual_seed(0)
    model = Transformer(ModelArgs(vocab_size=12, block_size=16, n_layer=2, n_head=2, n_embd=32, diffusion_steps=10,
                                  time_cond="none")).eval()
    prompt = torch.randint(0, MASK, (2, 6), generator=torch.Generator().manual_seed(0))

    def run(**mode):
        return sample_bd3(model, prompt, 26, Blocks(size=4, mask_id=MASK), Schedule(10), SamplerOptions(4, **mode),
                          torch.Generator().manual_seed(1))

    out, st = run(**dict(EB, entropy_bound=1e300))
    assert st["nfe"] == st["blocks"] == 7 and torch.equal(out[:, :6], prompt) and not (out == MASK).any()
    tiny, st_tiny = run(**dict(EB, entropy_bound=1e-12))
    fixed, st_fixed = run(order="entropy", remask="none", tokens_per_step="linear")
    assert torch.equal(tiny, fixed) and st_tiny["nfe"] == st_fixed["nfe"] == 26  # a pass a token


def test_the_objectives_and_the_frontier_say_what_the_entropy_bound_runs():
    """Adaptive: no pass count; described; a frontier point drops what it leaves unread (steps at a bounded point,
    the bound at a random-order point)."""
    cfg = get_config(["baby", "--entropy_bound=0.5", "--order=entropy"])
    bd3 = get_config(["baby_bd3", "--bd3_speculate=false", "--entropy_bound=0.5", "--order=entropy"])
    for objective, c, words in (("mdlm", cfg, "entropy bound 0.5 nats (EB-Sampler"), ("bd3", bd3, "entropy bound 0.5")):
        opts = SamplerOptions.from_config(c)
        assert OBJECTIVES[objective].passes(c, opts, 48) is None and words in OBJECTIVES[objective].describe(c, opts)
    grid = dict(order=["random", "entropy"], entropy_bound=[0.0, 0.5], steps=[24, 48])
    points = [s for s, _, _ in script("frontier").grid_points(grid, get_config(["baby"]), OBJECTIVES["mdlm"])]
    assert points == [dict(order="random", steps=24), dict(order="random", steps=48),
                      dict(order="entropy", entropy_bound=0.0, steps=24), dict(order="entropy", entropy_bound=0.0, steps=48),
                      dict(order="entropy", entropy_bound=0.5)]


# ----------------------------------------------------------------------------- the samplers' laws (issue 61, 94)
TOK3 = CharTokenizer("abc")  # three characters, [MASK] = 3
PROMPT = "abca"
order_nll = script("dev/order_nll")


def _law_flags(objective):
    common = ["--block_size=8", "--n_layer=2", "--n_head=2", "--n_embd=16", "--self_cond", "--order=random",
              "--remask=none", "--steps=4", f"--prompt={PROMPT}", "--gen_len=4", "--device=cpu"]
    if objective == "bd3":
        return [*common, "--objective=bd3", "--bd3_block=4"]
    return [*common, "--time_cond=none", "--tokens_per_step=linear", "--semi_ar_length=4"]


def _sc_net(objective, seed, sc_std, emb=1.0):
    """A random self-conditioned network whose self-conditioning input moves its logits, peaked (head x 8)."""
    torch.manual_seed(seed)
    m = Transformer(model_args(get_config(_law_flags(objective)), TOK3.vocab_size)).eval()
    with torch.no_grad():
        m.sc_proj.weight.normal_(0, sc_std)
        m.tok_emb.weight.mul_(emb)
        m.head.weight.mul_(8)
    return m


def _mixture(model, objective, self_cond):
    """{the 4 generated tokens: probability} by order_nll.py's exact mixture over the windows [prompt, y]."""
    ys = torch.tensor(list(itertools.product(range(3), repeat=4)))
    x = torch.cat([torch.tensor(TOK3.encode(PROMPT)).expand(len(ys), -1), ys], 1)
    logits_of, block = order_nll.PASSES[objective](model, get_config(_law_flags(objective)), x, TOK3.mask_id)
    nll = order_nll.mixture_nll(logits_of, x, block, TOK3.mask_id, TOK3.vocab_size, self_cond, semi_ar=0 if block else 4)
    return {tuple(y.tolist()): p for y, p in zip(ys, torch.exp(-nll[:, 1]).tolist())}


def _inference_draws(model, objective, seed):
    """20,000 draws of the 4 tokens after the prompt by inference's sampler (canvas.fill)."""
    cfg = get_config(_law_flags(objective))
    opts = SamplerOptions.from_config(cfg)
    canvas, g = build_canvas(cfg, opts, TOK3, 8), torch.Generator().manual_seed(seed)
    return [row[4:] for _ in range(10)
            for row in fill(model, TOK3, canvas, replace(cfg, num_samples=2000), opts, "cpu", g)[1].tolist()]


@pytest.mark.parametrize("objective", ["mdlm", "bd3"])
def test_inference_draws_the_law_order_nll_scores_read_as_the_sampler_reads_it(objective):
    """mdlm read semi-autoregressively, bd3's blocks; the control: the mixture read as the bound reads it (a fresh
    first pass a canvas), which no sampler draws from, fails the same test."""
    model = _sc_net(objective, 1 if objective == "bd3" else 0, 3.0)
    law, bound_read = _mixture(model, objective, "sampler"), _mixture(model, objective, "bound")
    assert abs(sum(law.values()) - 1) < 1e-9 and abs(sum(bound_read.values()) - 1) < 1e-9  # exact: laws
    draws = _inference_draws(model, objective, 2)
    chi2, limit = pooled_chi2(draws, law)
    assert chi2 < limit, (chi2, limit)
    chi2, limit = pooled_chi2(draws, bound_read)
    assert chi2 > limit, (chi2, limit)


def test_the_sampler_and_the_scorer_read_self_conditioning_at_masked_positions_only():
    """An independent reference for both: the random-order law enumerated plainly (24 orders x 81 outcomes, each
    pass reading the last pass's prediction at the positions still masked, zeros elsewhere) equals order_nll's mixture,
    and inference's draws follow it. The network's sc input outweighs its embedding, so where it is read shows."""
    model = _sc_net("mdlm", 3, 1.0, emb=0.1)
    ys = torch.tensor(list(itertools.product(range(3), repeat=4)))  # (81, 4)
    prompt = torch.tensor(TOK3.encode(PROMPT)).expand(len(ys), -1)
    law = torch.zeros(len(ys), dtype=torch.float64)
    for order in itertools.permutations(range(4)):
        x = torch.cat([prompt, torch.full_like(ys, TOK3.mask_id)], 1)
        sc, chance = torch.zeros(len(ys), 8, TOK3.vocab_size), torch.ones(len(ys), dtype=torch.float64)
        for pos in order:
            with torch.no_grad():
                logits = model(x, None, sc=sc)
            logits[..., TOK3.mask_id] = float("-inf")
            chance = chance * torch.softmax(logits.double(), -1)[:, 4 + pos].gather(1, ys[:, pos, None])[:, 0]
            x = x.clone()
            x[:, 4 + pos] = ys[:, pos]
            sc = torch.softmax(logits, -1) * (x == TOK3.mask_id)[..., None]  # this pass's prediction, masked only
        law += chance / 24
    law = dict(zip(map(tuple, ys.tolist()), law.tolist()))
    mixture = _mixture(model, "mdlm", "sampler")
    assert abs(sum(law.values()) - 1) < 1e-12 and max(abs(law[y] - mixture[y]) for y in law) < 1e-12
    chi2, limit = pooled_chi2(_inference_draws(model, "mdlm", 5), law)
    assert chi2 < limit, (chi2, limit)


@pytest.mark.parametrize("whole", [False, True], ids=["eager rounds", "whole rounds"])
def test_the_ar_mode_scored_is_the_law_bd3_speculate_draws(whole):
    """bd3.ar_nll (eval.py's AR mode of a --bd3_ar network) sums to 1 over every window, and the self-speculative
    sampler's draws follow it by chi-square, eager rounds and whole ones; a flat law fails the same test."""
    import bd3
    flags = ["--block_size=4", "--n_layer=2", "--n_head=2", "--n_embd=16", "--self_cond", "--objective=bd3",
             "--bd3_block=2", "--bd3_ar=1.0", "--bd3_speculate", "--device=cpu"]
    cfg = get_config(flags)
    torch.manual_seed(3)
    model = Transformer(model_args(cfg, TOK3.vocab_size)).eval()
    model.compiler = (lambda fn: fn) if whole else None
    with torch.no_grad():
        model.head.weight.mul_(6)  # peaked: the drafts are often wrong, the check decides
    ys = torch.tensor(list(itertools.product(range(3), repeat=4)))
    windows = torch.cat([torch.zeros(len(ys), 1, dtype=torch.long), ys], 1)  # the first token is context: unread
    law = dict(zip(map(tuple, ys.tolist()), torch.exp(-4 * bd3.ar_nll(model, windows, cfg, TOK3.mask_id)).tolist()))
    assert abs(sum(law.values()) - 1) < 1e-9
    assert bd3.ar_nll(model, windows, get_config([*flags[:-2], "--bd3_ar=0"]), TOK3.mask_id) is None
    g, prompt = torch.Generator().manual_seed(4), torch.zeros(2000, 0, dtype=torch.long)
    draws = [row for _ in range(10) for row in bd3.sample_clean_ar(
        model, prompt, 4, bd3.Blocks(size=2, mask_id=TOK3.mask_id), generator=g, draft=True)[0].tolist()]
    chi2, limit = pooled_chi2(draws, law)
    assert chi2 < limit, (chi2, limit)
    flat = {y: 1 / 81 for y in law}
    assert pooled_chi2(draws, flat)[0] > pooled_chi2(draws, flat)[1]


def test_readmes_semi_ar_row_names_the_sampler_whose_law_its_figure_is():
    """README's `baby` semi-AR row gives flags that, over the preset, are the sampler the law test above draws; it
    says "not its preset's" exactly when the preset alone samples another law."""
    from configurator import parse
    row = next(line for line in (ROOT / "README.md").read_text().splitlines()
               if line.startswith("| `baby` |") and "semi-AR" in line)
    flags = shlex.split(re.search(r"`(--[^`]+)`", row.split("|")[2])[1])
    tied = dict(semi_ar_length=4, order="random", remask="none", tokens_per_step="linear", temperature=1.0,
                temperature_end_share=1.0, top_k=0, top_p=1.0)
    assert {k: getattr(get_config(_law_flags("mdlm")), k) for k in tied} == tied

    def draws_the_tied_law(cfg):
        return all(getattr(cfg, k) == v for k, v in tied.items()) and cfg.steps == cfg.gen_len  # a token a pass

    assert draws_the_tied_law(parse(["baby", *flags]).over()[0])
    assert ("not its preset's" in row) == (not draws_the_tied_law(parse(["baby"]).over()[0]))


# ----------------------------------------------------------------------------- infilling
TOK = CharTokenizer("abcdefghijklmnopqrstuvwxyz .,\n")


def test_infill_markers():
    c = parse_infill("the cat [___] on the mat", TOK)
    assert c.n_gen == 5 and c.prefix == "the cat " and not c.is_continuation  # one token per marker character
    assert parse_infill("a [___:12] b [_]", TOK).n_gen == 15
    assert parse_infill("once upon a [___:3]", TOK).is_continuation
    for bad, words in (("no blanks here", "has no blank"), ("a [___:0] b", "0 tokens")):
        with pytest.raises(UserError, match=words):
            parse_infill(bad, TOK)


@pytest.mark.parametrize("tok_kind", ["char", "bpe"])
def test_infill_output_keeps_every_given_character(tok_kind):
    if tok_kind == "bpe":
        pytest.importorskip("tokenizers")
        from scripts.train_tokenizer import train_bpe
        tok = train_bpe([FIXTURES.joinpath("tiny_stories.txt").read_text()] * 3, vocab_size=300)
        given = ["  Once up\u00f6n ", " time,\n\tthey  ", "."]
    else:
        tok, given = TOK, ["the cat ", " on the mat\n", "."]
    c = Canvas(tok, [given[0], 4, given[1], 3, given[2]])
    assert c.n_gen == 7
    g = torch.Generator().manual_seed(0)
    for _ in range(20):  # whatever fills the blanks, the given text comes back verbatim
        x, gm = torch.tensor([c.ids]), torch.tensor([c.gen])
        x[gm] = torch.randint(0, tok.vocab_size, (7,), generator=g)
        x[x == tok.mask_id] = 2
        text, fills = c.render(x[0].tolist(), tok), c.fills(x[0].tolist(), tok)
        assert text == given[0] + fills[0] + given[1] + fills[1] + given[2]


def _build(cfg, block_size=16):
    return build_canvas(cfg, SamplerOptions.from_config(cfg), TOK, block_size)


@pytest.mark.parametrize("keys", [dict(infill="ab [___:20]"), dict(infill="ab [___:20] c"),
                                  dict(infill="ab [___:40]", steps=4, semi_ar_length=8),
                                  dict(infill="a [___:99999999999] b")])
def test_an_infill_refusal_speaks_of_its_text_and_blanks_and_each_fix_it_advises_is_taken(keys):
    """--infill sets its length by its blanks: its refusals say text and blanks, never --gen-len, and each flag they
    advise, given, makes the canvas."""
    with pytest.raises(UserError) as refused:
        _build(Config(**keys))
    said = str(refused.value)
    assert not re.search(r"gen[-_]len|--prompt|prefix|suffix", said), said
    for flag, value in re.findall(r"(?:use|with) (--[a-z-]+) (\d+)", said):  # the fixes advised
        _build(Config(**{**keys, flag[2:].replace("-", "_"): int(value)}))


def test_build_canvas_checks_sizes():
    with pytest.raises(UserError, match="blanks .* exceeds the model's context of 16"):
        _build(Config(infill="ab [___:20] c"))
    with pytest.raises(UserError, match="--semi-ar-length 4"):
        _build(Config(prompt="ab", gen_len=40, steps=10))
    assert len(_build(Config(prompt="ab", gen_len=40, steps=10, semi_ar_length=8)).ids) == 42  # a sliding window
    with pytest.raises(UserError, match="fewer than the 5 blocks"):
        _build(Config(prompt="ab", gen_len=40, steps=4, semi_ar_length=8))
    with pytest.raises(UserError, match="AR model only continues"):
        _build(Config(infill="a [___] b", objective="ar"), 64)


@pytest.mark.parametrize("objective", ["mdlm", "ar", "uniform", "bd3"])
def test_no_sampler_returns_text_with_mask_in_it(objective, monkeypatch):
    """A sampler that left a blank at [MASK] is refused where the text is decoded, in one line naming the cause."""
    tok = CharTokenizer("abcdefghijk")
    cfg = get_config(["--block_size=64", "--gen_len=12", f"--objective={objective}",
                      *(["--time_cond=learned"] if objective == "uniform" else [])])

    def leaves_one(model, x, gen_mask, *a, **k):
        out = torch.where(gen_mask, 0, x)
        out[-1, gen_mask[-1].nonzero()[-1]] = tok.mask_id  # the last sample's last blank
        return out, dict(nfe=1, nfe_per_sample=[1] * len(x))
    monkeypatch.setattr(OBJECTIVES[objective], "sample", leaves_one)
    opts = SamplerOptions.from_config(cfg)
    with pytest.raises(UserError, match=rf"sample 1 came back with 1 \[MASK\] token\(s\) .* {objective} sampler"):
        fill(ToyModel(), tok, build_canvas(cfg, opts, tok, 64), replace(cfg, num_samples=2), opts, "cpu")


# ----------------------------------------------------------------------------- the CLI (tiny trained model)
def _inference(argv, capsys):
    """inference.py in-process, no trace (a trace would go to the repo's artifacts/media/)."""
    return run_cli_here(inference.main, [*argv, "--viz-video=off"], capsys)


def _sample_text(stdout):
    lines = stdout.splitlines()
    end = next(i for i, line in enumerate(lines) if line.startswith("---- ") and "tokens" in line)
    return "\n".join(lines[1:end])


def test_cli_infill_and_prefix_suffix_keep_the_given_text(tiny_ckpt, tmp_path, tmp_path_factory, capsys):
    code, out, err = _inference(["--checkpoint", tiny_ckpt, "--infill", "the [___:6] and [___] of", "--seed", 1], capsys)
    assert code == 0, err
    m = re.fullmatch(r"the (.{6}) and (.{5}) of", _sample_text(out), re.S)
    assert m and "_" not in m.group(1) + m.group(2)
    # 11 blanks take 11 passes whatever --steps asks (20 here): the summary says what ran
    assert "NFE 11 per sample" in out and "sampler: 11 steps," in out and "(--steps 20: one pass a blank at most)" in out
    # a sampler that reads no --steps (the AR) has nothing capped
    ar = train_tiny(tmp_path_factory, "summary_ar", "--objective=ar", "--max_iters=4", "--eval_interval=4")
    code, out, err = _inference(["--checkpoint", ar, "--gen-len", "8", "--seed", 1], capsys)
    assert code == 0 and "sampler: AR + KV cache, temperature" in out and "--steps" not in out, err
    (tmp_path / "pre.txt").write_text("First Citizen:\n")
    (tmp_path / "suf.txt").write_text("\nSecond Citizen:\n")
    code, out, err = _inference(["--checkpoint", tiny_ckpt, "--prefix_file", tmp_path / "pre.txt", "--suffix_file",
                                 tmp_path / "suf.txt", "--gen-len", 20, "--threshold", 0.5, "--num-samples", 2], capsys)
    assert code == 0, err
    texts = re.split(r"\n---- sample \d+: \d+ NFE, [\d.]+s\n", out.split("\n---- 2 x")[0])[1:]
    assert len(texts) == 2
    for t in texts:
        assert t.startswith("First Citizen:\n") and t.endswith("\nSecond Citizen:\n") and len(t) == 15 + 20 + 17
    code, out, err = _inference(["--checkpoint", tiny_ckpt, "--prompt", "the ", "--gen-len", 100, "--block-length", 16,
                                 "--steps", 14, "--tokens-per-step", "linear", "--remask", "none"], capsys)
    assert code == 0, err  # semi-AR blocks past the context
    assert len(_sample_text(out)) == 104 and "NFE 14 per sample" in out and "blocks of 16" in out


@pytest.mark.parametrize("extra", [dict(remask="remdm", remask_eta=0.5, semi_ar_length=4, steps=12),
                                   dict(threshold=0.3, remask="none")])
def test_trace_of_an_infill(tiny_ckpt, extra):
    """Infill context shows as given text in every frame, a confidence at each committed token; a frame a step."""
    from checkpoint_manager import checkpoint_config, load_model
    from sampling.trace import Trace
    from utils.tokenizer import tokenizer_from_state

    class Frames:
        frames = []

        def add_frame(self, tokens, states, step, t, nfe, confidence=None, caption=""):
            self.frames.append(dict(states=states, nfe=nfe, conf=confidence, caption=caption))

    model, ckpt = load_model(tiny_ckpt, torch.device("cpu"))
    cfg = replace(checkpoint_config(ckpt, "a checkpoint"), num_samples=2, trace_every=1, **extra)
    tok = tokenizer_from_state(ckpt["tokenizer"])
    canvas, w = parse_infill("the [___:5] and [___:4] of", tok), Frames()
    w.frames = []
    _, _, stats = fill(model, tok, canvas, cfg, SamplerOptions.from_config(cfg), "cpu",
                       torch.Generator().manual_seed(0), Trace(tok, cfg, video=w))
    for f in w.frames:
        assert [s == "prompt" for s in f["states"]] == [not g for g in canvas.gen]
        assert all((c is not None) == (s in ("new", "kept")) for c, s in zip(f["conf"], f["states"]))
    assert w.frames[-1]["nfe"] == stats["nfe_per_sample"][0] and "mask" not in w.frames[-1]["states"]
    assert [f["nfe"] for f in w.frames] == list(range(len(w.frames)))  # the start frame, then one per step
    if "remdm" in extra.values():
        assert any("remasked" in f["states"] for f in w.frames) and any("block 3/3" in f["caption"] for f in w.frames)
