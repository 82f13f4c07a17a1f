"""Masked diffusion's training draws of t: the band [mask_min, mask_max] (stratified over its times) and the curriculum
that raises its top (mask_ramp). python -m pytest -q tests/test_band.py"""
import pytest
import torch

from diffusion import Draw, Schedule, band_times
from configurator import get_config
from helpers import MICRO, ToyModel, for_objective, loss
from utils.errors import UserError
from objectives import OBJECTIVES

pytestmark = pytest.mark.core  # the core tier (pytest.ini): the maths, the loop, the samplers


class Recorder(ToyModel):
    """A toy denoiser that keeps the times t it is called with."""

    def __init__(self, seen):
        super().__init__(V=11, mask_id=10)
        self.seen = seen

    def forward(self, idx, t=None, **kw):
        self.seen.append(t.clone())
        return super().forward(idx, t, **kw)


def test_the_band_trains_mdlm_on_its_mask_rates_only_stratified_and_the_old_key_names_still_work():
    seen = []

    sch, x = Schedule(20), torch.randint(0, 10, (40, 16), generator=torch.Generator().manual_seed(1))
    cfg = get_config([*MICRO, "--mask_min=0.3", "--mask_max=0.8"])
    assert get_config([*MICRO, "--bd3_mask_min=0.3", "--bd3_mask_max=0.8"]) == cfg  # the old names, aliases now
    loss(OBJECTIVES["mdlm"], Recorder(seen), x, cfg, sch, type("Tok", (), {"mask_id": 10}),
         Draw(torch.Generator().manual_seed(5), torch.tensor(0.25, dtype=torch.float64), 0, 40))
    band = band_times(sch, 0.3, 0.8)
    p = 1 - sch.alpha[seen[0]]  # the mask rate of each t drawn
    assert ((p >= 0.3 - 1e-9) & (p <= 0.8 + 1e-9)).all()  # every draw inside the band
    counts = torch.bincount(seen[0], minlength=21)[band]  # 40 strata over the band's times: each 40/len(band) +- 1
    assert (counts - 40 / len(band)).abs().max() <= 1
    with pytest.raises(UserError, match="mask_min"):
        get_config([*MICRO, "--mask_min=0.8", "--mask_max=0.3"])


def test_the_curriculum_raises_the_bands_top_from_ramp_from_to_mask_max_by_hand():
    """The band's top at progress p is ramp_from + (max - ramp_from) * min(1, p / ramp): 0.5, 0.65, 0.8, 0.8 here.
    64 strata over a band of at most 60 times reach each of its times, so the latest time drawn is the band's end."""
    sch, x, tok = Schedule(100), torch.zeros(64, 4, dtype=torch.long), type("Tok", (), {"mask_id": 10})

    def latest(cfg, progress):
        draw = Draw(torch.Generator().manual_seed(0), torch.tensor(0.5, dtype=torch.float64), 0, 64, progress)
        t = OBJECTIVES["mdlm"].draws(x, cfg, sch, tok, draw).t
        return t.min().item(), t.max().item()

    cfg = get_config([*MICRO, "--mask_min=0.2", "--mask_max=0.8", "--mask_ramp=0.5", "--mask_ramp_from=0.5"])
    for progress, top in ((0.0, 0.5), (0.25, 0.65), (0.5, 0.8), (1.0, 0.8)):
        band = band_times(sch, 0.2, top)
        assert latest(cfg, progress) == (band[0].item(), band[-1].item())
    off = get_config([*MICRO, "--mask_min=0.2", "--mask_max=0.8"])
    full = band_times(sch, 0.2, 0.8)
    assert latest(off, 0.0) == latest(off, 0.7) == (full[0].item(), full[-1].item())


def test_the_curriculum_draws_early_times_from_the_easy_band_and_is_off_by_default():
    seen = []

    sch, x, tok = Schedule(20), torch.randint(0, 10, (40, 16), generator=torch.Generator().manual_seed(1)), type("Tok", (), {"mask_id": 10})
    draw = lambda progress: Draw(torch.Generator().manual_seed(5), torch.tensor(0.25, dtype=torch.float64), 0, 40, progress)
    ramp = get_config([*MICRO, "--mask_min=0.2", "--mask_max=0.8", "--mask_ramp=0.5", "--mask_ramp_from=0.5"])
    band = get_config([*MICRO, "--mask_min=0.2", "--mask_max=0.8"])
    for cfg, progress in ((ramp, 0.0), (ramp, 0.6), (band, 0.0), (band, 0.6)):
        loss(OBJECTIVES["mdlm"], Recorder(seen), x, cfg, sch, tok, draw(progress))
    early, late, b0, b1 = (1 - sch.alpha[t] for t in seen)  # mask rates
    assert (early >= 0.2 - 1e-9).all() and (early <= 0.5 + 1e-9).all()  # step 0: the easy band [0.2, 0.5] only
    assert torch.equal(late, b0) and torch.equal(b0, b1)  # past the ramp, and with no ramp at all: the plain band
    assert (late > 0.5).any()
    assert get_config(MICRO).mask_ramp == 0


def test_the_curriculum_is_refused_where_it_cannot_apply():
    for bad in (["--mask_ramp=1.5"], ["--mask_max=0.8", "--mask_ramp=0.5", "--mask_ramp_from=0.9"],
                ["--mask_min=0.3", "--mask_ramp=0.5", "--mask_ramp_from=0.3"]):
        with pytest.raises(UserError, match="mask_ramp"):
            get_config([*MICRO, *bad])
    for objective in ("ar", "bd3", "uniform"):  # refused, never dropped
        with pytest.raises(UserError, match="mask_ramp"):
            get_config([*for_objective([*MICRO, f"--objective={objective}"]), "--mask_ramp=0.5"])


def test_training_tells_the_loss_how_far_it_is(monkeypatch):
    """train_step hands the loss's draws step / max_iters (what the curriculum reads), the same on a resumed run."""
    import configurator
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
