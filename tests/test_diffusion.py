"""The diffusion maths against hand computations and invariants. python -m pytest -q tests/test_diffusion.py"""
import functools
import math

import pytest
import torch

from ar import ar_loss
from diffusion import LossOptions, Schedule, reveal_plan, stratified_times, time_grid
from utils.draws import Law, sample_tokens
from diffusion import corrupt, diffusion_loss
from diffusion import SamplerOptions, denoise
from helpers import ConstModel, ToyModel, loss
from objectives import OBJECTIVES

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


def test_masking_rate_matches_the_schedule():
    s = Schedule(100)
    g = torch.Generator().manual_seed(0)
    x0 = torch.zeros(400, 256, dtype=torch.long)
    for t in (1, 25, 50, 90, 100):
        xt, m = corrupt(x0, torch.full((400,), t), s, mask_id=7, generator=g)
        p = 1 - s.alpha[t].item()
        assert m.float().mean().item() == pytest.approx(p, abs=4 * math.sqrt(p * (1 - p) / m.numel()) + 1e-9)
        assert ((xt == 7) == m).all()


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
    from diffusion import Draw, band_times
    from configurator import get_config
    from helpers import MICRO, for_objective
    from utils.errors import UserError
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
    with pytest.raises(UserError, match="mask_draws=0"):
        get_config(for_objective([*MICRO, f"--objective={objective}", "--mask_draws=0"]))


def test_mask_draws_are_refused_where_nothing_is_masked():
    from configurator import get_config
    from helpers import MICRO, for_objective
    from utils.errors import UserError
    for objective in ("uniform", "ar"):  # refused, never dropped
        with pytest.raises(UserError, match="not read --mask_draws"):
            get_config([*for_objective([*MICRO, f"--objective={objective}"]), "--mask_draws=2"])


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
    p = torch.tensor([0.5, 0.25, 0.15, 0.07, 0.03], dtype=torch.float64)
    logp = p.log().expand(20000, -1)
    draws = sample_tokens(logp, 1.0, torch.Generator().manual_seed(0))
    counts = torch.bincount(draws, minlength=5).double()
    chi2 = ((counts - 20000 * p) ** 2 / (20000 * p)).sum().item()
    assert chi2 < 18.47  # chi-square, 4 degrees of freedom, p = 0.001


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


def _canvas(B=3, P=6, L=40, V=12):
    g = torch.Generator().manual_seed(5)
    x = torch.randint(0, V - 1, (B, L), generator=g)
    gm = torch.zeros(B, L, dtype=torch.bool)
    gm[:, P:] = True
    gm[1, 20:25] = False  # an infill-like island of fixed text inside the generated region
    return x, gm


@pytest.mark.parametrize("remask", ["refine", "none"])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_sampler_never_touches_fixed_tokens_and_leaves_no_mask(remask, temperature):
    model, s = ToyModel(), Schedule(20)
    x, gm = _canvas()
    counts = []

    def on_step(info):
        masked = (info.x == 11) & info.gen_mask
        counts.append(masked.sum(1))
        assert torch.equal(info.x[~gm], x[~gm])
        if remask == "none":  # committed tokens are final
            before = (info.prev != 11) & gm
            assert torch.equal(info.x[before], info.prev[before])

    out, stats = denoise(model, x.clone(), gm, s, 11, SamplerOptions(10, Law(temperature), remask=remask),
                         generator=torch.Generator().manual_seed(0), on_step=on_step)
    assert torch.equal(out[~gm], x[~gm])
    assert not (out == 11).any() and stats["nfe"] == 10
    n_gen = gm.sum(1)
    plan = reveal_plan(n_gen, [1 - s.alpha[t].item() for t in time_grid(20, 10)[1:]])
    for i, (masked, step_s) in enumerate(zip(counts, time_grid(20, 10)[1:])):  # the schedule's count of still-masked
        assert torch.equal(masked, plan[:, i])  # positions, per sample, moved by at most one so every step reveals one
        assert (masked - torch.round(n_gen * (1 - s.alpha[step_s].item())).long()).abs().max() <= 1


def test_sampler_is_deterministic_for_a_seed():
    model, s = ToyModel(), Schedule(20)
    x, gm = _canvas()
    run = lambda seed: denoise(model, x.clone(), gm, s, 11, SamplerOptions(20), torch.Generator().manual_seed(seed))[0]
    assert torch.equal(run(1), run(1))
    assert not torch.equal(run(1), run(2))


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
    """Issue 94: with the options off (random order, no remasking, no threshold), a step of denoise() draws each token
    it reveals from the law sample_ancestral's step draws from, p(x0_i | x_t) at temperature 1; the one difference is
    the count: the plain step reveals each [MASK] w.p. (alpha(s) - alpha(t)) / (1 - alpha(t)), a Binomial count,
    where denoise reveals the schedule's count exactly. Checked at batch 1 by chi-square, on the first of two steps
    (schedule counts end in the reference's greedy step into t = 0)."""
    from diffusion import sample_ancestral
    from helpers import pooled_chi2
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


def test_the_plain_sampler_keeps_the_forward_marginal_after_each_step():
    """After the steps T -> ... -> s, each blank is still [MASK] w.p. 1 - alpha(s), the forward process's marginal:
    the reveal chances (alpha(s) - alpha(t)) / (1 - alpha(t)) telescope (MDLM). Counted after 2 of 3 steps."""
    from diffusion import sample_ancestral
    from helpers import pooled_chi2
    MASK, schedule = 3, Schedule(10)
    x = torch.tensor([[0, 2, MASK, MASK, MASK]])
    canvas = _first_steps(lambda m, g: sample_ancestral(m, x.clone(), x == MASK, schedule, MASK, 3, g), 1500, k=3)
    s = time_grid(10, 3)[2]
    masked = 1 - schedule.alpha[s].item()  # 1 - alpha(3)
    law = {(k,): math.comb(3, k) * masked ** k * (1 - masked) ** (3 - k) for k in range(4)}
    chi2, limit = pooled_chi2([(int(c),) for c in (canvas[:, 2:] == MASK).sum(1)], law)
    assert chi2 < limit, (chi2, limit)


def test_a_wrong_law_fails_the_tie():
    """The control: draws from the law at temperature 2 (what a unit slip would do) fail the same chi-square."""
    from helpers import pooled_chi2
    MASK = 3
    with torch.no_grad():
        logits = Recorder().net(torch.tensor([[0, 2, MASK, MASK, MASK]])).double()[0, 2, :MASK]
    hot = torch.multinomial(torch.softmax(logits / 2, -1), 1500, replacement=True, generator=torch.Generator().manual_seed(0))
    chi2, limit = pooled_chi2([(int(t),) for t in hot], {(k,): p for k, p in enumerate(torch.softmax(logits, -1).tolist())})
    assert chi2 > limit


@pytest.mark.parametrize("steps", [1, 3, 10])
def test_the_plain_sampler_fills_every_blank_and_never_touches_given_text(steps):
    from diffusion import sample_ancestral
    model, x, gm = ToyModel(), *_canvas()
    out = sample_ancestral(model, x.clone(), gm, Schedule(20), 11, steps, torch.Generator().manual_seed(0))
    assert torch.equal(out[~gm], x[~gm]) and not (out == 11).any()
