"""ReMDM's remasking (diffusion.py), max-capped, in the masked-diffusion sampler and block by block in bd3; their config keys.
python -m pytest -q tests/test_remasking.py"""
import pytest
import torch

import bd3
import diffusion
from bd3 import Blocks, sample_bd3
from configurator import get_config
from diffusion import Schedule
from helpers import MICRO, ToyModel, for_objective
from diffusion import SamplerOptions, denoise, sigma
from utils.draws import Law
from utils.errors import UserError
from objectives import OBJECTIVES

pytestmark = pytest.mark.core  # the core tier (pytest.ini): the maths, the loop, the samplers

MASK = 11
REMDM = dict(remask="remdm", remask_eta=0.5)


def _canvas(B=3, P=6, L=40, V=12):
    """A prompt, a generated region, an island of fixed text inside it (row 1) and a suffix (row 2)."""
    x = torch.randint(0, V - 1, (B, L), generator=torch.Generator().manual_seed(5))
    gm = torch.zeros(B, L, dtype=torch.bool)
    gm[:, P:] = True
    gm[1, 20:25] = False
    gm[2, L - 4:] = False
    return x, gm


def _run(x, gm, steps=12, seed=0, on_step=None, **kw):
    return denoise(ToyModel(), x.clone(), gm, Schedule(20), MASK, SamplerOptions(steps, law=Law(temperature=1.0), **kw),
                   generator=torch.Generator().manual_seed(seed), on_step=on_step)


def test_sigma_is_eta_capped_at_sigma_max_by_hand():
    m, k = torch.tensor([10, 4, 0, 10]), torch.tensor([5, 8, 3, 1])  # committed before, masked after the step
    # sigma_max = min(1, (1 - alpha_s) / alpha_t) = min(1, n_keep / m): 0.5, 1 (capped), 0 (nothing committed), 0.1
    assert sigma(0.3, m, k).tolist() == pytest.approx([0.3, 0.3, 0.0, 0.1])


MODES = [REMDM, dict(REMDM, tokens_per_step="linear", order="random"), dict(REMDM, remask_eta=1.0, semi_ar_length=10),
         dict(REMDM, semi_ar_length=10, order="random")]


@pytest.mark.parametrize("mode", MODES, ids=lambda m: ",".join(f"{k}={v}" for k, v in m.items()))
def test_given_text_never_changes_no_mask_is_left_and_nfe_is_as_counted(mode):
    x, gm = _canvas()
    steps = []
    out, st = _run(x, gm, steps=12, on_step=steps.append, **mode)
    assert torch.equal(out[~gm], x[~gm]) and not (out == MASK).any()
    for info in steps:  # nothing outside the generated positions is ever re-masked or redrawn
        assert not ((info.remasked | info.revealed) & ~gm).any() and torch.equal(info.x[~gm], x[~gm])
    cfg = get_config([*MICRO, "--steps=12", *[f"--{k}={v}" for k, v in mode.items()]])
    n_gen = int(gm.sum(1).max())
    passes = diffusion.MaskedDiffusion().passes(cfg, SamplerOptions.from_config(cfg), n_gen)
    assert st["nfe"] == len(steps) == passes == max(st["nfe_per_sample"])
    assert steps[-1].finished == [True] * 3


def test_eta_zero_is_the_sampler_without_remasking():
    x, gm = _canvas()
    plain, _ = _run(x, gm, remask="none", order="random")
    off, _ = _run(x, gm, remask="remdm", remask_eta=0.0, order="random")
    assert torch.equal(plain, off)


def test_bd3_remasks_only_inside_the_current_block_and_counts_its_passes():
    torch.manual_seed(0)
    from model import ModelArgs, Transformer
    m = Transformer(ModelArgs(vocab_size=11, block_size=16, n_layer=1, n_head=2, n_embd=32, diffusion_steps=10,
                              time_cond="none")).eval()
    prompt = torch.randint(0, 10, (2, 6), generator=torch.Generator().manual_seed(0))
    opts = dict(remask="remdm", remask_eta=0.5)
    frames = []
    out, st = sample_bd3(m, prompt, 18, Blocks(size=4, mask_id=10), Schedule(10), SamplerOptions(4, **opts),
                         generator=torch.Generator().manual_seed(1), on_step=frames.append)
    assert torch.equal(out[:, :6], prompt) and not (out == 10).any()
    for info in frames:  # re-masked and redrawn positions all lie in the block being decoded
        blk = torch.arange(info.x.size(1)) // 4 == 1 + info.block
        assert not ((info.remasked | info.revealed) & ~blk).any()
    assert sum(f.remasked.sum().item() for f in frames) > 0
    cfg = get_config([*MICRO, "--objective=bd3", "--bd3_block=4", "--steps=4",
                      *[f"--{k}={v}" for k, v in opts.items()]])
    sampler = SamplerOptions.from_config(cfg)
    assert st["nfe"] == len(frames) == bd3.BlockDiffusion().passes(cfg, sampler, 18, 6)
    assert "4 steps per block" in bd3.BlockDiffusion().describe(cfg, sampler)


def test_keys_are_checked_and_refused_where_they_cannot_apply():
    assert get_config([*MICRO, "--remask=remdm", "--remask_eta=0.1"]).remask_eta == 0.1
    for bad in (["--remask=remdm", "--remask_eta=1.5"], ["--remask=remdm", "--threshold=0.9"], ["--remask=sometimes"]):
        with pytest.raises(UserError, match="remdm|remask"):  # (--steps needs no --threshold)
            get_config([*(a for a in MICRO if not a.startswith(("--steps=", "--diffusion_steps="))), *bad])
    for objective in ("ar", "uniform"):
        with pytest.raises(UserError, match="remask_eta"):
            get_config([*for_objective([*MICRO, f"--objective={objective}"]), "--remask_eta=0.1"])
        assert "remask_eta" in OBJECTIVES[objective].IGNORES
