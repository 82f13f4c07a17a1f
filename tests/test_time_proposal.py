"""Masked diffusion's training-time proposal (--time_beta): t/T ~ Beta(a, a) with the loss weighted by 1/(T q(t)), so the
weighted loss stays an unbiased estimate of the uniform-t objective. python -m pytest -q tests/test_time_proposal.py"""
import pytest
import torch

import diffusion
from common import Draw, Schedule, band_times, band_top, beta_proposal, proposal_times, stratified_times
from configurator import get_config
from diffusion import diffusion_loss
from helpers import MICRO, ToyModel, for_objective
from utils.errors import UserError


class Recorder(ToyModel):
    """A toy denoiser that keeps the times t it is called with."""

    def __init__(self, seen):
        super().__init__(V=11, mask_id=10)
        self.seen = seen

    def forward(self, idx, t=None, **kw):
        self.seen.append(t.clone())
        return super().forward(idx, t, **kw)


def test_beta_proposal_masses_by_hand():
    q = beta_proposal(4, 2.0, n_grid=100_000)  # Beta(2, 2): density 6 u (1 - u), CDF 3u^2 - 2u^3
    cdf = lambda u: 3 * u ** 2 - 2 * u ** 3
    expect = [cdf((t + 1) / 4) - cdf(t / 4) for t in range(4)]  # 0.15625, 0.34375, 0.34375, 0.15625
    assert q.tolist() == pytest.approx(expect, abs=1e-8)
    assert torch.allclose(beta_proposal(10, 1.0), torch.full((10,), 0.1, dtype=torch.float64))  # a = 1: uniform


def test_stratified_draws_follow_q_and_carry_inverse_weights():
    T, q = 20, beta_proposal(20, 3.0)
    n = 100_000
    t, w = proposal_times(q, n, u=torch.tensor(0.37, dtype=torch.float64))
    counts = torch.bincount(t, minlength=T + 1)[1:].double()
    assert (counts - n * q).abs().max() <= 1.0  # stratified: every t gets its share of the slices, to one draw
    assert torch.allclose(w.double(), 1.0 / (T * q[t - 1]), rtol=1e-6)
    # a = 1 draws exactly the uniform stratified times, with weight 1
    t1, w1 = proposal_times(beta_proposal(T, 1.0), 64, u=torch.tensor(0.5, dtype=torch.float64))
    assert torch.equal(t1, stratified_times(64, T, u=torch.tensor(0.5, dtype=torch.float64))) and torch.all(w1 == 1)


def test_weighted_mean_is_unbiased_for_the_uniform_t_mean():
    """A large-sample check: E_q[w(t) f(t)] = (1/T) sum_t f(t) for an f as steep as the NELBO weight (1/t)."""
    T, g = 100, torch.Generator().manual_seed(0)
    f = lambda t: 1.0 / t.double() + 0.01 * t.double()
    target = f(torch.arange(1, T + 1)).mean().item()
    for a in (0.5, 2.0):  # (at a = 4, q(1) ~ 1e-7: t = 1 is too rare for 100k draws to show, though the mean is exact)
        est = [(w.double() * f(t)).mean().item() for t, w in
               (proposal_times(beta_proposal(T, a), 256, generator=g) for _ in range(400))]
        assert sum(est) / len(est) == pytest.approx(target, rel=0.01), a


def test_the_training_loss_weights_each_sequence_and_a_1_changes_nothing():
    x = torch.randint(0, 10, (8, 16), generator=torch.Generator().manual_seed(1))
    model, sch = ToyModel(V=11, mask_id=10), Schedule(20)
    base = get_config([*MICRO, "--loss_type=elbo"])
    u = torch.tensor(0.3, dtype=torch.float64)
    draw = lambda: Draw(torch.Generator().manual_seed(5), u, 0, 8)
    tok = type("Tok", (), {"mask_id": 10})
    for loss_type in ("elbo", "all_ce", "masked_ce"):
        cfg = get_config([*MICRO, f"--loss_type={loss_type}"])
        plain = diffusion.loss(model, x, cfg, sch, tok, draw())
        uniform = diffusion.loss(model, x, get_config([*MICRO, f"--loss_type={loss_type}", "--time_beta=1"]), sch, tok, draw())
        assert torch.allclose(plain, uniform, atol=1e-6), loss_type
    cfg = get_config([*MICRO, "--loss_type=elbo", "--time_beta=3"])
    t, w = proposal_times(beta_proposal(20, 3.0), 8, 0, 8, u)
    _, nelbo, _ = diffusion_loss(model, x, sch, 10, generator=torch.Generator().manual_seed(5), t=t)
    assert torch.allclose(diffusion.loss(model, x, cfg, sch, tok, draw()), (w * nelbo).mean(), atol=1e-6)
    assert base.time_beta == 0


def test_time_beta_is_refused_where_it_cannot_apply():
    with pytest.raises(UserError, match="time_beta"):
        get_config([*MICRO, "--time_beta=-1"])
    for objective in ("ar", "bd3", "uniform"):  # refused, never dropped
        with pytest.raises(UserError, match="time_beta"):
            get_config([*for_objective([*MICRO, f"--objective={objective}"]), "--time_beta=2"])


def test_the_band_trains_mdlm_on_its_mask_rates_only_stratified_and_the_old_key_names_still_work():
    seen = []

    sch, x = Schedule(20), torch.randint(0, 10, (40, 16), generator=torch.Generator().manual_seed(1))
    cfg = get_config([*MICRO, "--mask_min=0.3", "--mask_max=0.8"])
    assert get_config([*MICRO, "--bd3_mask_min=0.3", "--bd3_mask_max=0.8"]) == cfg  # the old names, aliases now
    diffusion.loss(Recorder(seen), x, cfg, sch, type("Tok", (), {"mask_id": 10}),
                   Draw(torch.Generator().manual_seed(5), torch.tensor(0.25, dtype=torch.float64), 0, 40))
    band = band_times(sch, 0.3, 0.8)
    p = sch.mask_prob(seen[0])
    assert ((p >= 0.3 - 1e-9) & (p <= 0.8 + 1e-9)).all()  # every draw inside the band
    counts = torch.bincount(seen[0], minlength=21)[band]  # 40 strata over the band's times: each 40/len(band) +- 1
    assert (counts - 40 / len(band)).abs().max() <= 1
    with pytest.raises(UserError, match="mask_min"):
        get_config([*MICRO, "--mask_min=0.8", "--mask_max=0.3"])
    with pytest.raises(UserError, match="give one of them"):
        get_config([*MICRO, "--mask_min=0.3", "--time_beta=2"])


def test_the_curriculum_raises_the_bands_top_from_ramp_from_to_mask_max_by_hand():
    cfg = get_config([*MICRO, "--mask_min=0.2", "--mask_max=0.8", "--mask_ramp=0.5", "--mask_ramp_from=0.5"])
    assert [band_top(cfg, p) for p in (0.0, 0.25, 0.5, 1.0)] == pytest.approx([0.5, 0.65, 0.8, 0.8])
    off = get_config([*MICRO, "--mask_min=0.2", "--mask_max=0.8"])
    assert band_top(off, 0.0) == band_top(off, 0.7) == 0.8


def test_the_curriculum_draws_early_times_from_the_easy_band_and_is_off_by_default():
    seen = []

    sch, x, tok = Schedule(20), torch.randint(0, 10, (40, 16), generator=torch.Generator().manual_seed(1)), type("Tok", (), {"mask_id": 10})
    draw = lambda progress: Draw(torch.Generator().manual_seed(5), torch.tensor(0.25, dtype=torch.float64), 0, 40, progress)
    ramp = get_config([*MICRO, "--mask_min=0.2", "--mask_max=0.8", "--mask_ramp=0.5", "--mask_ramp_from=0.5"])
    band = get_config([*MICRO, "--mask_min=0.2", "--mask_max=0.8"])
    for cfg, progress in ((ramp, 0.0), (ramp, 0.6), (band, 0.0), (band, 0.6)):
        diffusion.loss(Recorder(seen), x, cfg, sch, tok, draw(progress))
    early, late, b0, b1 = (sch.mask_prob(t) for t in seen)
    assert (early >= 0.2 - 1e-9).all() and (early <= 0.5 + 1e-9).all()  # step 0: the easy band [0.2, 0.5] only
    assert torch.equal(late, b0) and torch.equal(b0, b1)  # past the ramp, and with no ramp at all: the plain band
    assert (late > 0.5).any()
    assert get_config(MICRO).mask_ramp == 0


def test_the_curriculum_is_refused_where_it_cannot_apply():
    for bad in (["--mask_ramp=1.5"], ["--mask_max=0.8", "--mask_ramp=0.5", "--mask_ramp_from=0.9"],
                ["--mask_min=0.3", "--mask_ramp=0.5", "--mask_ramp_from=0.3"], ["--mask_ramp=0.5", "--time_beta=2"]):
        with pytest.raises(UserError, match="mask_ramp|give one of them"):
            get_config([*MICRO, *bad])
    for objective in ("ar", "bd3", "uniform"):  # refused, never dropped
        with pytest.raises(UserError, match="mask_ramp"):
            get_config([*for_objective([*MICRO, f"--objective={objective}"]), "--mask_ramp=0.5"])


def test_training_tells_the_loss_how_far_it_is(monkeypatch):
    """train_step hands the loss step / max_iters (what the curriculum reads), the same on a resumed run."""
    import objectives
    import train
    from types import SimpleNamespace
    seen, model = [], torch.nn.Linear(2, 1)
    fake = SimpleNamespace(loss=lambda model, x, cfg, sch, tok, draw: seen.append(draw.progress) or model.weight.sum() * 0)
    cfg = get_config([*MICRO, "--max_iters=8"])
    monkeypatch.setattr(objectives, "get", lambda name: fake)
    env = SimpleNamespace(accum=1, world=1, rank=0, device=torch.device("cpu"), ctx=torch.autocast("cpu", enabled=False))
    data = SimpleNamespace(train_ids=torch.randint(0, 8, (500,)), window=cfg.block_size, tok=None)
    run = SimpleNamespace(model=model, raw_model=model, opt=torch.optim.SGD(model.parameters(), lr=0.0), ema=None,
                          schedule=None, loss_acc=torch.zeros(()), n_acc=0, skipped=0, bad_iter=torch.full((), -1),
                          scaler=torch.amp.GradScaler("cpu", enabled=False))
    train.train_step(cfg, env, data, run, 6)
    assert seen == [6 / 8]
