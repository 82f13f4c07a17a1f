"""The diffusion maths against hand computations and invariants: the schedule, the bound and its estimator, the
training draws of t (stratified, the band and its curriculum, k masks a window), the draw's law, and the plain sampler
tied to denoise by chi-square. python -m pytest -q tests/test_diffusion.py"""
import functools
import math

import pytest
import torch

from ar import ar_loss
from configurator import get_config
from diffusion import (Draw, LossOptions, SamplerOptions, Schedule, band_times, denoise, diffusion_loss,
                       sample_ancestral, stratified_times, time_grid)
from helpers import MICRO, ConstModel, ToyModel, for_objective, loss, pooled_chi2
from objectives import OBJECTIVES
from utils.draws import Law, draw, sample_tokens

pytestmark = pytest.mark.core  # the core tier (pytest.ini): the maths, the loop, the samplers


def test_schedule_endpoints_and_weights_by_hand():
    s = Schedule(4, "cosine")
    assert s.alpha[0] == 1 and s.alpha[4] == 0
    a1, a2 = math.cos(math.pi / 8), math.cos(math.pi / 4)
    assert s.weight[2].item() == pytest.approx((a1 - a2) / (1 - a2), rel=1e-12)  # 0.74012
    assert s.weight[1].item() == pytest.approx(1.0)  # alpha(0) = 1
    lin = Schedule(10, "linear")
    assert lin.weight[5].item() == pytest.approx(1 / 5)  # (1/T) / (t/T) = 1/t: MDLM's continuous weight
    # sum_t w(t) (1 - alpha(t)) = alpha(0) - alpha(T) = 1: the bound of a context-free model is its NLL
    for sch in (s, lin, Schedule(100), Schedule(7), Schedule(7, "linear")):
        assert (sch.weight[1:] * (1 - sch.alpha[1:])).sum().item() == pytest.approx(1.0)


def test_stratified_times_cover_every_stratum():
    g = torch.Generator().manual_seed(0)
    assert sorted(stratified_times(100, 100, g).tolist()) == list(range(1, 101))
    t = stratified_times(8, 100, g)
    assert [(int(v) - 1) * 8 // 100 for v in t] == list(range(8))  # one draw per eighth of [0, 1)
    # two ranks with a shared u tile the global batch exactly like one big batch
    u = torch.tensor(0.3, dtype=torch.float64)
    both = torch.cat([stratified_times(4, 100, offset=r * 4, total=8, u=u) for r in range(2)])
    assert both.tolist() == stratified_times(8, 100, u=u).tolist()


@pytest.mark.parametrize("objective", ["mdlm", "bd3"])
def test_mask_draws_give_k_masks_of_the_same_windows_stratified_over_k_times_the_global_batch(objective, monkeypatch):
    import bd3
    import diffusion
    seen = []
    module, inner = (diffusion, "diffusion_loss") if objective == "mdlm" else (bd3, "bd3_loss")
    monkeypatch.setattr(module, inner,
                        lambda model, x, *a, drawn=None, **k: (seen.append((x, drawn.t)) or x.sum(), None, {}))
    x, u, schedule = torch.randint(0, 7, (4, 8), generator=torch.Generator().manual_seed(0)), torch.tensor(0.3), Schedule(100)
    band = band_times(schedule, 0.2, 0.8)
    n = 1 if objective == "mdlm" else 2  # times a window: one, or one per block of 4
    for k in (1, 3):
        cfg = get_config(for_objective([*MICRO, f"--objective={objective}", "--block_size=8", "--time_cond=none",
                                        "--mask_min=0.2", "--mask_max=0.8", "--bd3_block=4", f"--mask_draws={k}"]))
        seen.clear()
        for offset in (0, 4):  # two micro-batches (or ranks) of 4 in a global batch of 8
            loss(OBJECTIVES[objective], None, x, cfg, schedule, type("Tok", (), dict(mask_id=7)),
                 Draw(torch.Generator().manual_seed(offset), u, offset, 8))
        assert all(torch.equal(xs, x.repeat(k, 1)) for xs, _ in seen)  # k copies of each window, its own noise each
        # the k * 8 copies of the global batch hold one time in each of k * 8 * n strata, as one batch of k * 8 would
        drawn = sorted(torch.cat([t.reshape(-1) for _, t in seen]).tolist())
        assert drawn == sorted(band[stratified_times(k * 8 * n, len(band), u=u) - 1].tolist())


class TimeRecorder(ToyModel):
    """A toy denoiser that keeps the times t it is called with."""

    def __init__(self, seen):
        super().__init__(V=11, mask_id=10)
        self.seen = seen

    def forward(self, idx, t=None, **kw):
        self.seen.append(t.clone())
        return super().forward(idx, t, **kw)


TOK10 = type("Tok", (), {"mask_id": 10})


def test_the_band_trains_mdlm_on_its_mask_rates_only_stratified_and_the_old_key_names_still_work():
    seen, sch = [], Schedule(20)
    x = torch.randint(0, 10, (40, 16), generator=torch.Generator().manual_seed(1))
    cfg = get_config([*MICRO, "--mask_min=0.3", "--mask_max=0.8"])
    assert get_config([*MICRO, "--bd3_mask_min=0.3", "--bd3_mask_max=0.8"]) == cfg  # the old names, aliases now
    loss(OBJECTIVES["mdlm"], TimeRecorder(seen), x, cfg, sch, TOK10,
         Draw(torch.Generator().manual_seed(5), torch.tensor(0.25, dtype=torch.float64), 0, 40))
    band = band_times(sch, 0.3, 0.8)
    p = 1 - sch.alpha[seen[0]]  # the mask rate of each t drawn
    assert ((p >= 0.3 - 1e-9) & (p <= 0.8 + 1e-9)).all()  # every draw inside the band
    counts = torch.bincount(seen[0], minlength=21)[band]  # 40 strata over the band's times: each 40/len(band) +- 1
    assert (counts - 40 / len(band)).abs().max() <= 1


def test_the_curriculum_raises_the_bands_top_from_ramp_from_to_mask_max_by_hand():
    """The band's top at progress p is ramp_from + (max - ramp_from) * min(1, p / ramp): 0.5, 0.65, 0.8, 0.8 here.
    64 strata over a band of at most 60 times reach each of its times, so the latest time drawn is the band's end."""
    sch, x = Schedule(100), torch.zeros(64, 4, dtype=torch.long)

    def latest(cfg, progress):
        draw = Draw(torch.Generator().manual_seed(0), torch.tensor(0.5, dtype=torch.float64), 0, 64, progress)
        t = OBJECTIVES["mdlm"].draws(x, cfg, sch, TOK10, draw).t
        return t.min().item(), t.max().item()

    cfg = get_config([*MICRO, "--mask_min=0.2", "--mask_max=0.8", "--mask_ramp=0.5", "--mask_ramp_from=0.5"])
    for progress, top in ((0.0, 0.5), (0.25, 0.65), (0.5, 0.8), (1.0, 0.8)):
        band = band_times(sch, 0.2, top)
        assert latest(cfg, progress) == (band[0].item(), band[-1].item())
    off = get_config([*MICRO, "--mask_min=0.2", "--mask_max=0.8"])
    full = band_times(sch, 0.2, 0.8)
    assert latest(off, 0.0) == latest(off, 0.7) == (full[0].item(), full[-1].item())


def test_the_curriculum_draws_early_times_from_the_easy_band_and_is_off_by_default():
    seen, sch = [], Schedule(20)
    x = torch.randint(0, 10, (40, 16), generator=torch.Generator().manual_seed(1))
    ramp = get_config([*MICRO, "--mask_min=0.2", "--mask_max=0.8", "--mask_ramp=0.5", "--mask_ramp_from=0.5"])
    band = get_config([*MICRO, "--mask_min=0.2", "--mask_max=0.8"])
    for cfg, progress in ((ramp, 0.0), (ramp, 0.6), (band, 0.0), (band, 0.6)):
        loss(OBJECTIVES["mdlm"], TimeRecorder(seen), x, cfg, sch, TOK10,
             Draw(torch.Generator().manual_seed(5), torch.tensor(0.25, dtype=torch.float64), 0, 40, progress))
    early, late, b0, b1 = (1 - sch.alpha[t] for t in seen)  # mask rates
    assert (early >= 0.2 - 1e-9).all() and (early <= 0.5 + 1e-9).all()  # step 0: the easy band [0.2, 0.5] only
    assert torch.equal(late, b0) and torch.equal(b0, b1) and (late > 0.5).any()  # past the ramp, or none: the band
    assert get_config(MICRO).mask_ramp == 0


def test_the_band_and_its_curriculum_are_refused_where_they_cannot_apply():
    from utils.errors import UserError
    for bad in (["--mask_min=0.8", "--mask_max=0.3"], ["--mask_max=0.8", "--mask_ramp=0.5", "--mask_ramp_from=0.9"],
                ["--mask_min=0.3", "--mask_ramp=0.5", "--mask_ramp_from=0.3"]):
        with pytest.raises(UserError, match="mask_min|mask_ramp"):
            get_config([*MICRO, *bad])
    for objective in ("ar", "bd3", "uniform"):  # refused, never dropped
        with pytest.raises(UserError, match="mask_ramp"):
            get_config([*for_objective([*MICRO, f"--objective={objective}"]), "--mask_ramp=0.5"])


def test_training_tells_the_loss_how_far_it_is(monkeypatch):
    """train_step hands the loss's draws step / max_iters (what the curriculum reads), the same on a resumed run."""
    import train
    from types import SimpleNamespace
    seen, model = [], torch.nn.Linear(2, 1)
    fake = SimpleNamespace(draws=lambda x, cfg, sch, tok, draw: seen.append(draw.progress),
                           loss=lambda model, x, cfg, sch, tok, drawn: model.weight.sum() * 0)
    cfg = get_config([*MICRO, "--max_iters=8"])
    monkeypatch.setitem(OBJECTIVES, cfg.objective, fake)
    env = SimpleNamespace(accum=1, world=1, rank=0, device=torch.device("cpu"), ctx=torch.autocast("cpu", enabled=False))
    data = SimpleNamespace(train_ids=torch.randint(0, 8, (500,)), window=cfg.block_size, tok=None)
    run = SimpleNamespace(model=model, raw_model=model, opt=torch.optim.SGD(model.parameters(), lr=0.0), ema=None,
                          schedule=None, loss_acc=torch.zeros(()), n_acc=0, skipped=0, bad_iter=torch.full((), -1),
                          scaler=torch.amp.GradScaler("cpu", enabled=False), objective=fake)
    train.train_step(cfg, env, data, run, 6)
    assert seen == [6 / 8]


def test_elbo_equals_hand_computation():
    model = ConstModel([math.log(0.7), math.log(0.3), 5.0])  # token 2 is [MASK]: its big logit must be ignored
    x0 = torch.tensor([[0, 1, 0, 0]])
    s = Schedule(4)
    loss, nelbo, aux = diffusion_loss(model, x0, s, mask_id=2, t=torch.tensor([2]), generator=torch.Generator().manual_seed(3))
    m = aux["masked"][0]
    ce = torch.tensor([-math.log(0.7), -math.log(0.3), -math.log(0.7), -math.log(0.7)])
    w = (math.cos(math.pi / 8) - math.cos(math.pi / 4)) / (1 - math.cos(math.pi / 4))
    expected = 4 * w * (ce * m).sum().item() / 4  # T * w(t) * sum over masked / L (not / #masked)
    assert m.any()
    assert nelbo.item() == pytest.approx(expected, rel=1e-5)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    masked_ce, _, _ = diffusion_loss(model, x0, s, 2, LossOptions("masked_ce"), t=torch.tensor([2]), generator=torch.Generator().manual_seed(3))
    assert masked_ce.item() == pytest.approx((ce * m).sum().item() / m.sum().item(), rel=1e-5)
    all_ce, _, _ = diffusion_loss(model, x0, s, 2, LossOptions("all_ce"), t=torch.tensor([2]), generator=torch.Generator().manual_seed(3))
    assert all_ce.item() == pytest.approx(ce.mean().item(), rel=1e-5)


def test_elbo_estimator_is_unbiased_for_a_model_with_a_closed_form():
    # a context-free model's bound equals its exact NLL: mean over positions of -log p(x0_i)
    probs = [0.5, 0.2, 0.3]
    model = ConstModel([math.log(p) for p in probs] + [0.0])
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, 3, (512, 32), generator=g)
    exact = -torch.log(torch.tensor(probs))[x0].mean(1)  # (B,)
    s = Schedule(100)
    est = torch.stack([diffusion_loss(model, x0, s, 3, generator=g)[1] for _ in range(20)]).mean(0)
    err = (est - exact).mean().item()
    se = (est - exact).std().item() / math.sqrt(len(est))
    assert abs(err) < 4 * se, (err, se)


def test_ar_loss_equals_hand_computation():
    model = ConstModel([math.log(0.6), math.log(0.4)])
    x = torch.tensor([[0, 1, 1, 0]])
    loss, nll = ar_loss(model, x)  # predicts 1, 1, 0 from 0, 1, 1
    assert loss.item() == pytest.approx((-2 * math.log(0.4) - math.log(0.6)) / 3, rel=1e-6)


def test_float64_sampling_matches_the_target_distribution():
    """The inverse-CDF draw (on the probabilities' device where it has float64, else the CPU): its frequencies match p
    by chi-square and a wrong law's fail it, a zero-mass entry (filtered, or [MASK] last) never comes, an unnormalised
    row is its normalised law, and a seed fixes the draws."""
    from utils.dist import draw_device
    assert draw_device(torch.device("cuda", 1)) == torch.device("cuda", 1)
    assert draw_device(torch.device("mps")) == draw_device(torch.device("cpu")) == torch.device("cpu")
    p = torch.tensor([0.0, 0.5, 0.0, 0.2, 0.3, 0.0], dtype=torch.float64)
    n, live = 60_000, p > 0
    counts = torch.bincount(draw((3 * p).expand(n, 6), torch.Generator().manual_seed(0)), minlength=6).double()
    assert counts[~live].sum() == 0  # never a zero-mass entry, the last one included
    chi2 = lambda q: ((counts[live] - n * q[live]) ** 2 / (n * q[live])).sum().item()  # noqa: E731
    assert chi2(p) < 13.8  # 2 degrees of freedom: P(chi2 > 13.8) = 0.001
    assert chi2(torch.tensor([0.0, 0.3, 0.0, 0.4, 0.3, 0.0], dtype=torch.float64)) > 13.8
    assert draw(torch.eye(6, dtype=torch.float64)[[5, 0, 2]], torch.Generator().manual_seed(1)).tolist() == [5, 0, 2]
    a, b = (draw(p.expand(4, 2, 6), torch.Generator().manual_seed(3)) for _ in range(2))
    assert a.shape == (4, 2) and torch.equal(a, b)
    q = torch.tensor([0.5, 0.25, 0.15, 0.07, 0.03], dtype=torch.float64)  # through the sampler's log-probs
    counts = torch.bincount(sample_tokens(q.log().expand(20000, -1), 1.0, torch.Generator().manual_seed(0)),
                            minlength=5).double()
    assert ((counts - 20000 * q) ** 2 / (20000 * q)).sum().item() < 18.47  # chi-square, 4 degrees of freedom


@pytest.mark.parametrize("bad", [[0.0, 0.0, 0.0], [0.2, float("nan"), 0.3], [0.2, float("inf"), 0.3],
                                 [float("nan")] * 3])
def test_a_row_with_no_mass_or_a_nan_or_inf_entry_is_refused_not_drawn(bad):
    """Its inverse CDF would return the last index ([MASK] for a character vocabulary): refused, whichever row."""
    good = torch.tensor([[0.1, 0.5, 0.4]] * 3, dtype=torch.float64)
    for i in range(3):
        p = good.clone()
        p[i] = torch.tensor(bad, dtype=torch.float64)
        with pytest.raises(RuntimeError, match="^no law to draw from: .* no mass or a NaN/inf entry"):
            draw(p, torch.Generator().manual_seed(0))
    assert draw(good, torch.Generator()).shape == (3,)


def test_top_k_top_p_and_temperature():
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0]])
    assert torch.equal(sample_tokens(Law(top_k=1).log_probs(logits), 1.0, torch.Generator().manual_seed(0)), logits.argmax(-1))
    lp = Law(top_p=0.5).log_probs(logits)  # p = [.61, .22, .14, .03]: the top token alone reaches 0.5
    assert torch.isinf(lp[0, 1:]).all() and lp[0, 0].item() == pytest.approx(0.0)
    lp = Law(top_p=0.7).log_probs(logits)
    assert torch.isfinite(lp[0, :2]).all() and torch.isinf(lp[0, 2:]).all()
    assert Law(0.5).log_probs(logits).exp()[0, 0] > Law(1.0).log_probs(logits).exp()[0, 0]


def test_time_grid():
    assert time_grid(100, 100) == list(range(100, -1, -1))
    g = time_grid(100, 7)
    assert g[0] == 100 and g[-1] == 0 and all(a > b for a, b in zip(g, g[1:]))


# ----------------------------------------------------------------------------- the plain sampler, and denoise beside it
class Stop(Exception):
    """Raised by Recorder at the network's k-th call: the canvas it reads is the result of the steps before."""


class Recorder(torch.nn.Module):
    """A tiny time-blind network whose predictions depend on the context (so a law is not one table), stopping the
    sampler at its k-th pass with the canvas it was handed."""

    def __init__(self, k=2):
        super().__init__()
        self.net = _net()
        self.args, self.calls, self.k = self.net.args, 0, k

    def forward(self, idx, t=None, **kw):
        self.calls += 1
        if self.calls == self.k:
            raise Stop(idx.clone())
        return self.net(idx, t, **kw)


@functools.lru_cache(maxsize=1)
def _net():
    from model import ModelArgs, Transformer
    torch.manual_seed(4)
    net = Transformer(ModelArgs(vocab_size=4, block_size=8, n_layer=1, n_head=2, n_embd=16, time_cond="none")).eval()
    with torch.no_grad():
        net.head.weight.mul_(20)  # peaked laws, far from uniform: a wrong law shows
    return net


def _first_steps(sampler, n, k=2):
    """n runs of `sampler(model, generator)` at batch 1: the canvas after each one's first k - 1 steps."""
    out = []
    for seed in range(n):
        model = Recorder(k=k)
        try:
            sampler(model, torch.Generator().manual_seed(seed))
        except Stop as canvas:
            out.append(canvas.args[0][0])
    return torch.stack(out)


def test_the_plain_sampler_and_a_step_of_denoise_draw_each_revealed_token_from_the_same_law():
    """With the options off a step of denoise() draws each token it reveals from sample_ancestral's law, p(x0_i | x_t);
    the plain step reveals a Binomial count ((alpha(s) - alpha(t)) / (1 - alpha(t)) each), denoise the schedule's
    exactly. At batch 1 by chi-square, on the first of two steps; draws at temperature 2 fail the same test."""
    MASK, T, n = 3, 10, 1500
    x = torch.tensor([[0, 2, MASK, MASK, MASK]])
    gen = x == MASK
    schedule = Schedule(T)
    with torch.no_grad():
        law = torch.softmax(Recorder().net(x).double()[0, 2:, :MASK], -1)  # (3 blanks, 3 tokens): p(x0 | x_T), no [MASK]
    plain = _first_steps(lambda m, g: sample_ancestral(m, x.clone(), gen, schedule, MASK, 2, g), n)[:, 2:]
    opts = SamplerOptions(2, order="random", remask="none")
    steps = _first_steps(lambda m, g: denoise(m, x.clone(), gen, schedule, MASK, opts, g), n)[:, 2:]
    reveal = schedule.alpha[5].item()  # t = 10 -> s = 5: (alpha(5) - alpha(10)) / (1 - alpha(10)) = alpha(5)
    for canvas in (plain, steps):
        for i in range(3):  # each blank's revealed tokens against p(x0_i | x_T)
            drawn = canvas[:, i][canvas[:, i] != MASK]
            chi2, limit = pooled_chi2([(int(t),) for t in drawn], {(k,): law[i, k].item() for k in range(MASK)})
            assert chi2 < limit, (i, chi2, limit)
    counts = (plain != MASK).sum(1)
    binomial = {(k,): math.comb(3, k) * reveal ** k * (1 - reveal) ** (3 - k) for k in range(4)}
    chi2, limit = pooled_chi2([(int(c),) for c in counts], binomial)
    assert chi2 < limit and len(set(counts.tolist())) > 1, (chi2, limit)  # the plain step: a Binomial count
    assert ((steps != MASK).sum(1) == 3 - round(3 * (1 - reveal))).all()  # denoise: the schedule's count, exactly
    hot = torch.multinomial(torch.softmax(law[0].log() / 2, -1), n, replacement=True,
                            generator=torch.Generator().manual_seed(0))  # the control: a unit slip's law
    chi2, limit = pooled_chi2([(int(t),) for t in hot], {(k,): law[0, k].item() for k in range(MASK)})
    assert chi2 > limit


def test_the_plain_sampler_keeps_the_forward_marginal_after_each_step():
    """After the steps T -> ... -> s, each blank is still [MASK] w.p. 1 - alpha(s), the forward process's marginal:
    the reveal chances (alpha(s) - alpha(t)) / (1 - alpha(t)) telescope (MDLM). Counted after 2 of 3 steps."""
    MASK, schedule = 3, Schedule(10)
    x = torch.tensor([[0, 2, MASK, MASK, MASK]])
    canvas = _first_steps(lambda m, g: sample_ancestral(m, x.clone(), x == MASK, schedule, MASK, 3, g), 1500, k=3)
    s = time_grid(10, 3)[2]
    masked = 1 - schedule.alpha[s].item()  # 1 - alpha(3)
    law = {(k,): math.comb(3, k) * masked ** k * (1 - masked) ** (3 - k) for k in range(4)}
    chi2, limit = pooled_chi2([(int(c),) for c in (canvas[:, 2:] == MASK).sum(1)], law)
    assert chi2 < limit, (chi2, limit)


@pytest.mark.parametrize("steps", [1, 3, 10])
def test_the_plain_sampler_fills_every_blank_and_never_touches_given_text(steps):
    x = torch.randint(0, 11, (3, 40), generator=torch.Generator().manual_seed(5))
    gm = torch.zeros(3, 40, dtype=torch.bool)
    gm[:, 6:] = True
    gm[1, 20:25] = False  # an island of given text inside the blanks
    model = ToyModel()
    out = sample_ancestral(model, x.clone(), gm, Schedule(20), 11, steps, torch.Generator().manual_seed(0))
    assert torch.equal(out[~gm], x[~gm]) and not (out == 11).any()
