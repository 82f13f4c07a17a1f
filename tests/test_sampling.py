"""Samplers, infilling, semi-AR blocks, threshold decoding, block masking, the sampler benchmark.
python -m pytest -q tests/test_sampling.py   (the float64 chi-square test lives in tests/test_diffusion.py)"""
import math
import re
import pytest
import torch

import inference
from conftest import train_tiny
from helpers import FIXTURES, Args, ToyModel, run_cli_here
from diffusion import Schedule, reveal_plan, time_grid
from diffusion import MaskedDiffusion, SamplerOptions, denoise, position_scores
from config import Config
from utils.draws import Law
from utils.errors import UserError
from sampling.canvas import Canvas, build_canvas, parse_infill
from utils.tokenizer import CharTokenizer
from objectives import OBJECTIVES

pytestmark = pytest.mark.core  # the core tier (pytest.ini): the maths, the loop, the samplers

MASK = 11


class PositionModel(torch.nn.Module):
    """Ignores the tokens: a fixed table of logits per position (L, V), so each position's argmax is known."""

    def __init__(self, L=40, V=12):
        super().__init__()
        self.table = torch.randn(L, V, generator=torch.Generator().manual_seed(3))
        if V > MASK:
            self.table[:, MASK] = 50.0  # the [MASK] logit is the largest: the sampler must still never emit it
        self.args = Args(L)

    def forward(self, idx, t=None, **kw):
        return self.table[:idx.size(1)].expand(idx.size(0), -1, -1).clone()


def _canvas(B=3, P=6, L=40, V=12):
    """A prompt, a generated region, and (row 1) an island of fixed text inside it: an infill layout."""
    g = torch.Generator().manual_seed(5)
    x = torch.randint(0, V - 1, (B, L), generator=g)
    gm = torch.zeros(B, L, dtype=torch.bool)
    gm[:, P:] = True
    gm[1, 20:25] = False
    gm[2, L - 4:] = False  # a suffix
    return x, gm


MODES = [dict(), dict(order="margin"), dict(order="entropy"), dict(order="random", remask="none"), dict(order="l2r", remask="none"),
         dict(tokens_per_step="linear", remask="none"), dict(tokens_per_step="cosine"),
         dict(remask="remdm", remask_eta=0.3), dict(threshold=0.5), dict(threshold=0.999, order="margin"),
         dict(semi_ar_length=7), dict(semi_ar_length=7, threshold=0.9, order="entropy"),
         dict(semi_ar_length=5, remask="remdm", remask_eta=0.3, tokens_per_step="linear"),
         dict(entropy_bound=0.5, order="entropy", remask="none"), dict(semi_ar_length=7, entropy_bound=2.0)]


def _opts(steps, temperature=1.0, top_k=0, top_p=1.0, **kw):
    """SamplerOptions of `steps` steps, its law (temperature, top_k, top_p) and the rest by name."""
    return SamplerOptions(steps=steps, law=Law(temperature=temperature, top_k=top_k, top_p=top_p), **kw)


def _run(model, x, gm, mode, steps=12, temperature=1.0, seed=0, on_step=None, **kw):
    return denoise(model, x.clone(), gm, Schedule(20), MASK, _opts(steps, temperature, **kw, **mode),
                   generator=torch.Generator().manual_seed(seed), on_step=on_step)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
@pytest.mark.parametrize("mode", MODES, ids=lambda m: ",".join(f"{k}={v}" for k, v in m.items()) or "reference")
def test_given_text_never_changes_and_no_mask_is_left(mode, temperature):
    x, gm = _canvas()

    def on_step(info):
        assert torch.equal(info.x[~gm], x[~gm])  # prompt, infill context and suffix, at every step
        assert not (info.remasked & ~gm).any() and not (info.revealed & ~gm).any()

    out, stats = _run(ToyModel(), x, gm, mode, temperature=temperature, on_step=on_step)
    assert torch.equal(out[~gm], x[~gm])
    assert not (out == MASK).any()
    assert len(stats["nfe_per_sample"]) == 3 and all(n >= 1 for n in stats["nfe_per_sample"])


@pytest.mark.parametrize("mode", MODES, ids=lambda m: ",".join(f"{k}={v}" for k, v in m.items()) or "reference")
def test_a_canvas_without_a_blank_comes_back_unchanged_in_every_mode(mode):
    """One blank's neighbour: step mode torch.cat its plans of no blocks (a ValueError); threshold returned x."""
    x, gm = _canvas()
    out, stats = _run(ToyModel(), x, torch.zeros_like(gm), mode)
    assert torch.equal(out, x) and stats["nfe"] == 0 and stats["nfe_per_sample"] == [0, 0, 0]


@pytest.mark.parametrize("mode", MODES[:9] + [dict(semi_ar_length=4, remask="none")])
def test_top_k_1_emits_the_argmax_at_every_position(mode):
    model = PositionModel()
    x, gm = _canvas()
    out, _ = _run(model, x, gm, mode, temperature=1.0, top_k=1)
    best = model.table.clone()
    best[:, MASK] = -math.inf  # the [MASK] logit never counts
    assert torch.equal(out[gm], best.argmax(-1).expand(3, -1)[gm])


@pytest.mark.parametrize("tau, block", [(1.0, 0), (0.999, 0), (1.0, 6), (0.01, 0)])
def test_threshold_decoding_always_terminates(tau, block):
    x, gm = _canvas()
    out, stats = _run(ToyModel(), x, gm, dict(threshold=tau, semi_ar_length=block))
    assert not (out == MASK).any()
    n_gen = gm.sum(1).tolist()
    assert all(1 <= n <= g for n, g in zip(stats["nfe_per_sample"], n_gen))
    if tau == 1.0:  # nothing scores above 1: exactly one commit per step
        assert stats["nfe_per_sample"] == n_gen and stats["nfe"] == max(n_gen)
    assert all(0 < s <= stats["seconds"] for s in stats["seconds_per_sample"])


def test_threshold_commits_many_per_step_when_confident_and_reports_per_sample_nfe():
    model = PositionModel()
    model.table[:, 3] = 20.0  # p(3) ~ 1 at every position
    x, gm = _canvas()
    gm[0, 30:] = False  # samples of different lengths
    _, stats = _run(model, x, gm, dict(threshold=0.9))
    assert stats["nfe_per_sample"] == [1, 1, 1] and stats["nfe"] == 1
    _, stats = _run(model, x, gm, dict(threshold=0.9, semi_ar_length=10))  # one step per block
    assert stats["nfe_per_sample"] == [math.ceil(n / 10) for n in gm.sum(1).tolist()]


def test_the_threshold_commits_every_position_above_it_and_at_least_the_best():
    """Fast-dLLM's threshold by hand on positions of known confidence (the model ignores the tokens): sorted 0.99, 0.95,
    0.9, 0.7, 0.5, 0.3, 0.2, 0.15 at 0.92: the two above it at the first step, then the best alone at each step."""
    conf = torch.tensor([0.5, 0.99, 0.2, 0.9, 0.15, 0.95, 0.7, 0.3], dtype=torch.float64)
    model = PositionModel(L=8)
    model.table = torch.log(torch.cat([conf[:, None], ((1 - conf) / 10)[:, None].expand(-1, 10),
                                       torch.zeros(8, 1)], 1)).float()  # token 0 at c, ten others share the rest
    x, gm = torch.zeros(1, 8, dtype=torch.long), torch.ones(1, 8, dtype=torch.bool)
    counts = []
    _, stats = _run(model, x, gm, dict(threshold=0.92), temperature=0.0,
                    on_step=lambda st: counts.append(int(st.revealed.sum())))
    assert counts == [2, 1, 1, 1, 1, 1, 1] and stats["nfe"] == 7, counts


@pytest.mark.parametrize("mode", [dict(), dict(order="random", remask="none"), dict(tokens_per_step="linear"),
                                  dict(remask="remdm", remask_eta=0.3), dict(threshold=0.6)])
def test_semi_ar_with_one_block_equals_the_plain_sampler(mode):
    x, gm = _canvas()
    plain, s0 = _run(ToyModel(), x, gm, mode, seed=4)
    for bl in (int(gm.sum(1).max()), 1000):
        one, s1 = _run(ToyModel(), x, gm, dict(mode, semi_ar_length=bl), seed=4)
        assert torch.equal(one, plain) and s1["nfe_per_sample"] == s0["nfe_per_sample"] and s1["blocks"] == 1


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


@pytest.mark.parametrize("kind, f", [("linear", lambda r: 1 - r), ("cosine", lambda r: math.cos(math.pi / 2 * r))])
def test_tokens_per_step_counts(kind, f):
    x, gm = _canvas()
    n_gen, counts = gm.sum(1).double(), []
    _run(ToyModel(), x, gm, dict(tokens_per_step=kind), steps=9,
         on_step=lambda info: counts.append(((info.x == MASK) & gm).sum(1)))
    plan = reveal_plan(gm.sum(1), [f((i + 1) / 9) for i in range(9)])
    for i, c in enumerate(counts):
        assert torch.equal(c, plan[:, i])
        assert (c - torch.round(n_gen * f((i + 1) / 9)).long()).abs().max() <= 1  # on the curve, give or take one


def test_remdm_remasks_committed_tokens_and_keeps_counts_on_schedule():
    x, gm = _canvas()
    s, n_gen, remasked = Schedule(20), gm.sum(1), []
    plan = reveal_plan(n_gen, [1 - s.alpha[t].item() for t in time_grid(20, 10)[1:]])  # the schedule's counts

    def on_step(info):
        assert torch.equal(((info.x == MASK) & gm).sum(1), plan[:, info.step - 1])
        assert not (info.remasked & (info.prev == MASK)).any()  # only committed tokens go back
        remasked.append(info.remasked.sum().item())

    _run(ToyModel(), x, gm, dict(remask="remdm", remask_eta=0.5), steps=10, on_step=on_step)
    assert sum(remasked) > 0 and remasked[-1] == 0


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
    """16 tokens at 48 steps: 16 passes (the schedule's counts used to run out 3-9 steps early: 48 NFE),
    and with fewer steps than tokens, every requested step reveals at least one; MaskedDiffusion.passes (the
    passes eval.py and inference.py estimate) says as many."""
    x, gm = torch.randint(0, 11, (2, 24)), torch.zeros(2, 24, dtype=torch.bool)
    gm[:, 8:] = True
    for steps, nfe in ((48, 16), (12, 12), (16, 16)):
        before = []
        out, stats = denoise(ToyModel(), x.clone(), gm, Schedule(100), MASK, _opts(steps, 1.0, **mode),
                             generator=torch.Generator().manual_seed(0),
                             on_step=lambda info: before.append(((info.prev == MASK) & gm).sum(1) -
                                                                ((info.x == MASK) & gm).sum(1)))
        assert stats["nfe"] == nfe == len(before) and stats["nfe_per_sample"] == [nfe, nfe]
        assert MaskedDiffusion().passes(Config(), _opts(steps, 1.0, **mode), 16) == nfe
        assert all((d >= 1).all() for d in before) and not (out == MASK).any()


def nearest_time(s, frac):
    """By hand: the t in 1..T whose mask rate 1 - alpha(t) is nearest frac (the first of a tie)."""
    return min(range(1, s.T + 1), key=lambda t: abs(1 - s.alpha[t].item() - frac))


def told_times(model, s, x, gm, opts):
    """Each pass's (t told (B,), masked share of the window the model saw (B,)) in one denoise() call."""
    told = []
    forward = model.forward

    def recording(idx, t=None, **kw):
        told.append((t.clone(), (idx == MASK).double().mean(1)))
        return forward(idx, t, **kw)

    model.forward = recording
    denoise(model, x, gm, s, MASK, opts, generator=torch.Generator().manual_seed(0))
    return told


def test_the_time_index_is_the_mask_rate_of_the_whole_window():
    """An infill of 20 tokens in a 128-token window: 15.6 % of what the model sees is masked, so it is told
    t = 36 of 100 (cosine), not t = 100 (all masked, as the grid of the generated positions would say)."""
    s = Schedule(100)
    x, gm = torch.randint(0, 11, (1, 128)), torch.zeros(1, 128, dtype=torch.bool)
    gm[:, 60:80] = True
    told = told_times(ToyModel(block_size=128), s, x, gm, _opts(10, 1.0))
    assert told[0][0].item() == 36 == nearest_time(s, 20 / 128)
    for t, frac in told:  # every step: the t whose mask rate is nearest the window's masked fraction
        assert t.tolist() == [nearest_time(s, f) for f in frac.tolist()]


def test_the_time_told_inverts_the_schedule():
    """On the linear schedule of T = 20 a window of 20 blanks with m still masked has mask rate m / 20 = 1 - alpha(m):
    one token a pass, the passes are told t = 20, 19, ..., 1."""
    s = Schedule(20, "linear")
    x, gm = torch.zeros(2, 20, dtype=torch.long), torch.ones(2, 20, dtype=torch.bool)
    told = told_times(ToyModel(block_size=20), s, x, gm, _opts(20, 1.0, tokens_per_step="linear"))
    assert [t.tolist() for t, _ in told] == [[m, m] for m in range(20, 0, -1)]


def test_l2r_reveals_the_leftmost_masked_position_each_step():
    """order=l2r at one token a step decodes left to right, stepping over fixed text (row 1's island), whatever
    the model prefers: the network's left-to-right joint (dev/order_nll.py scores it)."""
    x, gm = _canvas()
    n = gm.sum(1)  # 34, 29, 30 generated positions

    def on_step(info):
        for r in range(3):
            if info.revealed[r].any():
                cols = info.revealed[r].nonzero().squeeze(1)
                assert len(cols) == 1 and cols.item() == (gm[r] & (info.prev[r] == MASK)).nonzero().min().item()

    out, stats = _run(PositionModel(), x, gm, dict(order="l2r", remask="none", tokens_per_step="linear"), steps=int(n.max()),
                      on_step=on_step)
    assert stats["nfe_per_sample"] == n.tolist() and not (out == MASK).any()


def test_the_temperature_falls_with_the_share_of_the_block_still_masked():
    """temperature_end_share s: a token drawn while a share f of the block is masked is drawn at T * (s + (1 - s) * f).
    Two generated positions, left to right, one a step: the first at f = 1 (T), the second at f = 1/2. Checked
    against the hand-computed softmax over 20,000 draws (a constant T is 0.1 off at the second)."""
    model, B = PositionModel(L=3), 20000
    model.table[2, :MASK] = torch.linspace(-2.0, 2.0, MASK)
    x = torch.zeros(B, 3, dtype=torch.long)
    gm = torch.zeros(B, 3, dtype=torch.bool)
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
    # share 1 is the constant temperature: the same draws as without the key
    same = [_run(model, x[:64], gm[:64], dict(order="random", remask="none", **kw), steps=2, temperature=T)[0]
            for kw in (dict(), dict(temperature_end_share=1.0))]
    assert torch.equal(*same)


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


@pytest.mark.parametrize("keys", [
    dict(infill="ab [___:20]"),  # given text, then a blank: a continuation, which --gen-len was named for
    dict(infill="ab [___:20] c"),
    dict(infill="ab [___:40]", steps=4, semi_ar_length=8),
    dict(infill="a [___:99999999999] b"),
])
def test_an_infill_refusal_speaks_of_its_text_and_blanks_and_each_fix_it_advises_is_taken(keys):
    """--infill sets its length by its blanks and refuses --gen-len (and a prompt or files beside it): its refusals
    say text and blanks, and each flag they advise, given, makes the canvas (issue 105: "--gen-len 20")."""
    from config import Config

    def build(cfg):
        return build_canvas(cfg, SamplerOptions.from_config(cfg), TOK, 16)
    with pytest.raises(UserError) as refused:
        build(Config(**keys))
    said = str(refused.value)
    assert not re.search(r"gen[-_]len|--prompt|prefix|suffix", said), said
    for flag, value in re.findall(r"(?:use|with) (--[a-z-]+) (\d+)", said):  # the fixes advised
        build(Config(**{**keys, flag[2:].replace("-", "_"): int(value)}))


def test_build_canvas_checks_sizes():
    def build(cfg, block_size):
        return build_canvas(cfg, SamplerOptions.from_config(cfg), TOK, block_size)
    with pytest.raises(UserError, match="blanks .* exceeds the model's context of 16"):
        build(Config(infill="ab [___:20] c"), 16)
    with pytest.raises(UserError, match="--semi-ar-length 4"):
        build(Config(prompt="ab", gen_len=40, steps=10), 16)
    c = build(Config(prompt="ab", gen_len=40, steps=10, semi_ar_length=8), 16)  # a sliding window
    assert len(c.ids) == 42
    with pytest.raises(UserError, match="fewer than the 5 blocks"):
        build(Config(prompt="ab", gen_len=40, steps=4, semi_ar_length=8), 16)
    with pytest.raises(UserError, match="AR model only continues"):
        build(Config(infill="a [___] b", objective="ar"), 64)


# ----------------------------------------------------------------------------- the CLI (tiny trained model)

def _inference(argv, capsys):
    """inference.py in-process, no trace (these tests read the text: a trace would go to the repo's artifacts/media/):
    (exit code, stdout, stderr)."""
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
    # 11 blanks take 11 passes whatever --steps asks (20 here): the summary says what ran (issue 73: "64 steps")
    assert "NFE 11 per sample" in out and "sampler: 11 steps," in out and "(--steps 20: one pass a blank at most)" in out
    # a sampler that reads no --steps (the AR, --dual_sample) has nothing capped: it said "--steps 100: one pass a
    # blank at most" under any --gen-len below the default steps
    ar = train_tiny(tmp_path_factory, "summary_ar", "--objective=ar", "--max_iters=4", "--eval_interval=4")
    code, out, err = _inference(["--checkpoint", ar, "--gen-len", "8", "--seed", 1], capsys)
    assert code == 0, err
    assert "sampler: AR + KV cache, temperature" in out and "--steps" not in out
    (tmp_path / "pre.txt").write_text("First Citizen:\n")
    (tmp_path / "suf.txt").write_text("\nSecond Citizen:\n")
    code, out, err = _inference(["--checkpoint", tiny_ckpt, "--prefix_file", tmp_path / "pre.txt", "--suffix_file",
                                 tmp_path / "suf.txt", "--gen-len", 20, "--threshold", 0.5, "--num-samples", 2], capsys)
    assert code == 0, err
    texts = re.split(r"\n---- sample \d+: \d+ NFE, [\d.]+s\n", out.split("\n---- 2 x")[0])[1:]
    assert len(texts) == 2
    for t in texts:
        assert t.startswith("First Citizen:\n") and t.endswith("\nSecond Citizen:\n") and len(t) == 15 + 20 + 17


def test_cli_semi_ar_beyond_the_context(tiny_ckpt, capsys):
    code, out, err = _inference(["--checkpoint", tiny_ckpt, "--prompt", "the ", "--gen-len", 100, "--block-length", 16,
                                 "--steps", 14, "--tokens-per-step", "linear", "--remask", "none"], capsys)
    assert code == 0, err
    assert len(_sample_text(out)) == 104 and "NFE 14 per sample" in out and "blocks of 16" in out


class _Frames:
    """Stands in for TraceWriter: keeps each frame's states, confidences and header."""

    def __init__(self):
        self.frames = []

    def add_frame(self, tokens, states, step, t, nfe, confidence=None, caption=""):
        self.frames.append(dict(tokens=tokens, states=states, nfe=nfe, conf=confidence, caption=caption))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


@pytest.mark.parametrize("extra", [dict(remask="remdm", remask_eta=0.5, semi_ar_length=4, steps=12),
                                   dict(threshold=0.3, remask="none")])
def test_trace_of_an_infill(tiny_ckpt, extra):
    from dataclasses import replace

    from checkpoint_manager import load_model
    from sampling.canvas import fill
    from sampling.trace import Trace
    model, ckpt = load_model(tiny_ckpt, torch.device("cpu"))
    from checkpoint_manager import checkpoint_config
    cfg = replace(checkpoint_config(ckpt, "a checkpoint"), num_samples=2, trace_every=1, **extra)
    from utils.tokenizer import tokenizer_from_state
    tok = tokenizer_from_state(ckpt["tokenizer"])
    canvas = parse_infill("the [___:5] and [___:4] of", tok)
    w = _Frames()
    _, _, stats = fill(model, tok, canvas, cfg, SamplerOptions.from_config(cfg), "cpu",
                           torch.Generator().manual_seed(0), Trace(tok, cfg, video=w))
    given = [not g for g in canvas.gen]
    for f in w.frames:  # infill context is shown as given text in every frame
        assert [s == "prompt" for s in f["states"]] == given
        assert all((c is not None) == (s in ("new", "kept")) for c, s in zip(f["conf"], f["states"]))
    assert w.frames[-1]["nfe"] == stats["nfe_per_sample"][0] and "mask" not in w.frames[-1]["states"]
    assert [f["nfe"] for f in w.frames] == list(range(len(w.frames)))  # the start frame, then one per step
    if "remdm" in extra.values():
        assert any("remasked" in f["states"] for f in w.frames) and any("block 3/3" in f["caption"] for f in w.frames)


@pytest.mark.parametrize("args, words", [
    (["--temperature", -1], "temperature"),
    (["--top-p", 0], "top_p"),
    (["--top-p", 1.5], "top_p"),
    (["--top-k", -1], "top_k"),
    (["--steps", 0], "steps must be >= 1"),
    (["--threshold", 1.5], "threshold must be in (0, 1]"),
    (["--temperature-end-share", -0.5], "temperature_end_share"),
    (["--order", "l2r", "--threshold", 0.9], "not l2r"),
    (["--threshold", -0.1], "threshold must be in (0, 1]"),
    (["--order", "best"], "order='best'"),
    (["--infill", "no blanks at all"], "no blank"),
    (["--infill", "the [___:80] end"], "exceeds the model's context of 64"),
    (["--gen-len", 100], "--semi-ar-length 16"),
    (["--prefix_file", "/nonexistent/p.txt"], "not found"),
])
def test_cli_bad_input_exits_2_with_one_line(tiny_ckpt, capsys, args, words):
    code, out, err = _inference(["--checkpoint", tiny_ckpt, *args], capsys)
    assert code == 2 and words in err, err
    assert err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("block_length", [4, 8, 16, 0])
def test_semi_ar_blocks_take_no_greedy_step_but_the_samples_last(block_length, monkeypatch):
    """With schedule counts, the step into t = 0 is the reference's greedy clean-up: once per sample, never once per
    semi-AR block (at temperature 1 that made 15 of 60 tokens argmax draws in blocks of 4)."""
    import diffusion
    temps, real = [], diffusion.sample_tokens

    def spy(logp, temperature, generator=None):
        temps.append((temperature, logp.size(0)))
        return real(logp, temperature, generator)
    monkeypatch.setattr(diffusion, "sample_tokens", spy)
    x = torch.zeros(1, 64, dtype=torch.long)
    gm = torch.zeros(1, 64, dtype=torch.bool)
    gm[:, 4:] = True
    _run(ToyModel(block_size=64), x, gm, dict(semi_ar_length=block_length), steps=60 if block_length else 20, temperature=1.0)
    greedy = [n for t, n in temps if t == 0.0]
    assert len(greedy) <= 1 and sum(greedy) <= 1, temps  # at most the final step, one token


def test_draws_stay_on_a_float64_device_and_follow_the_probabilities():
    """common.draw runs on the probabilities' device where it has float64 (CUDA), on the CPU otherwise (MPS has none).
    Its inverse-CDF draw: the frequencies match p (chi-square), a zero-mass entry (the filtered, [MASK] last) never
    comes, unnormalised rows are their normalised law, and a seed fixes the draws."""
    from utils.dist import draw_device
    from utils.draws import draw
    assert draw_device(torch.device("cuda", 1)) == torch.device("cuda", 1)
    assert draw_device(torch.device("mps")) == draw_device(torch.device("cpu")) == torch.device("cpu")
    p = torch.tensor([0.0, 0.5, 0.0, 0.2, 0.3, 0.0], dtype=torch.float64)
    n = 60_000
    x = draw((3 * p).expand(n, 6), torch.Generator().manual_seed(0))  # unnormalised: the same law
    counts = torch.bincount(x, minlength=6).double()
    assert counts[p == 0].sum() == 0  # never a zero-mass entry, the last one included
    live = p > 0
    chi2 = ((counts[live] - n * p[live]) ** 2 / (n * p[live])).sum().item()
    assert chi2 < 13.8, chi2  # 2 degrees of freedom: P(chi2 > 13.8) = 0.001
    drift = torch.tensor([0.0, 0.3, 0.0, 0.4, 0.3, 0.0], dtype=torch.float64)  # a wrong law fails the same test
    assert ((counts[live] - n * drift[live]) ** 2 / (n * drift[live])).sum().item() > 13.8
    one_hot = draw(torch.eye(6, dtype=torch.float64)[[5, 0, 2]], torch.Generator().manual_seed(1))
    assert one_hot.tolist() == [5, 0, 2]  # all the mass on the first or the last entry
    a, b = (draw(p.expand(4, 2, 6), torch.Generator().manual_seed(3)) for _ in range(2))
    assert a.shape == (4, 2) and torch.equal(a, b)


@pytest.mark.parametrize("bad", [[0.0, 0.0, 0.0], [0.2, float("nan"), 0.3], [0.2, float("inf"), 0.3],
                                 [float("nan")] * 3])
def test_a_row_with_no_mass_or_a_nan_or_inf_entry_is_refused_not_drawn(bad):
    """The inverse CDF of such a row would return its last index ([MASK] for a character vocabulary): the draw raises,
    whichever row of the batch it is, and draws the good rows as before."""
    from utils.draws import draw
    good = torch.tensor([[0.1, 0.5, 0.4]] * 3, dtype=torch.float64)
    for i in range(3):
        p = good.clone()
        p[i] = torch.tensor(bad, dtype=torch.float64)
        with pytest.raises(RuntimeError, match="^no law to draw from: .* no mass or a NaN/inf entry"):
            draw(p, torch.Generator().manual_seed(0))
    assert draw(good, torch.Generator()).shape == (3,)


@pytest.mark.parametrize("objective", ["mdlm", "ar", "uniform", "bd3"])
def test_no_sampler_returns_text_with_mask_in_it(objective, monkeypatch):
    """A sampler that left a blank at [MASK] (or drew it) is refused where the text is decoded (canvas.generate), in
    one line naming the likely cause: the [MASK]s of a canvas show only in its steps (--live, the trace)."""
    from dataclasses import replace
    import configurator
    from sampling.canvas import fill
    from configurator import get_config
    tok = CharTokenizer("abcdefghijk")
    cfg = get_config(["--block_size=64", "--gen_len=12", f"--objective={objective}",
                      *(["--time_cond=learned"] if objective == "uniform" else [])])

    def leaves_one(model, x, gen_mask, *a, **k):
        out = torch.where(gen_mask, 0, x)
        out[-1, gen_mask[-1].nonzero()[-1]] = tok.mask_id  # the last sample's last blank
        return out, dict(nfe=1, nfe_per_sample=[1] * len(x))
    monkeypatch.setattr(OBJECTIVES[objective], "sample", leaves_one)
    opts = SamplerOptions.from_config(cfg)
    canvas = build_canvas(cfg, opts, tok, 64)
    with pytest.raises(UserError, match=rf"sample 1 came back with 1 \[MASK\] token\(s\) .* {objective} sampler"):
        fill(ToyModel(), tok, canvas, replace(cfg, num_samples=2), opts, "cpu")
