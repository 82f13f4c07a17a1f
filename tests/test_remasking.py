"""Samplers that revisit committed tokens (sampler.py): ReMDM's sigma schedules (constant, cap, rescale, loop) and
the end-of-sampling corrector, in the masked-diffusion sampler and block by block in bd3; their config keys.
python -m pytest -q tests/test_remasking.py"""
import pytest
import torch

import bd3
import diffusion
from bd3 import sample_bd3
from configurator import get_config
from common import Schedule
from helpers import MICRO, ToyModel, for_objective
from sampler import SamplerOptions, corrector_positions, denoise, loop_plan, loop_split, sigma
from utils.errors import UserError

MASK = 11
LOOP = dict(remask="remdm", remdm_schedule="loop", remask_eta=0.5, remdm_alpha_on=0.5, remdm_t_on=0.6, remdm_t_off=0.2)


def _canvas(B=3, P=6, L=40, V=12):
    """A prompt, a generated region, an island of fixed text inside it (row 1) and a suffix (row 2)."""
    x = torch.randint(0, V - 1, (B, L), generator=torch.Generator().manual_seed(5))
    gm = torch.zeros(B, L, dtype=torch.bool)
    gm[:, P:] = True
    gm[1, 20:25] = False
    gm[2, L - 4:] = False
    return x, gm


def _run(x, gm, steps=12, seed=0, on_step=None, **kw):
    return denoise(ToyModel(), x.clone(), gm, Schedule(20), MASK, SamplerOptions(steps, 1.0, **kw),
                   generator=torch.Generator().manual_seed(seed), on_step=on_step)


def test_sigma_schedules_by_hand():
    m, k = torch.tensor([10, 4, 0]), torch.tensor([5, 8, 3])  # committed before, masked after the step
    # sigma_max = min(1, (1 - alpha_s) / alpha_t) = min(1, n_keep / m): 0.5, 1 (capped), 0 (nothing committed)
    assert sigma("cap", 0.3, m, k).tolist() == [0.3, 0.3, 0.0]
    assert sigma("rescale", 0.3, m, k).tolist() == pytest.approx([0.15, 0.3, 0.0])
    assert sigma("constant", 0.3, m, k).tolist() == [0.3, 0.3, 0.3]
    assert sigma("loop", 0.3, m, k).tolist() == [0.0] * 3 and sigma("loop", 0.3, m, k, loop_step=True).tolist() == [0.3] * 3


def test_loop_split_by_hand():
    # 20 steps, 40 tokens, alpha_on 0.5: 20 masked in the loop; 1 - t_on = 0.4 -> 8 steps, t_off = 0.2 -> 4, loop 8
    assert loop_split(20, 40, 0.5, 0.6, 0.2) == (8, 8, 4)
    assert loop_split(20, 4, 0.5, 0.6, 0.2) == (2, 16, 2)  # a reveal phase takes at most a step per token
    assert loop_split(20, 4, 0.9, 0.6, 0.2) == (4, 0, 0)  # nothing masked at alpha_on: no loop to run


MODES = [dict(remask="remdm", remdm_schedule="cap", remask_eta=0.5), dict(remask="remdm", remdm_schedule="rescale", remask_eta=1.0),
         LOOP, dict(LOOP, tokens_per_step="linear", order="random"), dict(corrector_steps=3, corrector_frac=0.2),
         dict(LOOP, corrector_steps=2, semi_ar_length=10, order="random"),
         dict(corrector_steps=3, corrector_frac=0.2, corrector_pick="random")]


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
    assert st["nfe"] == len(steps) == diffusion.passes(cfg, n_gen) == max(st["nfe_per_sample"])
    assert steps[-1].finished == [True] * 3


@pytest.mark.parametrize("kind", ["cap", "rescale", "loop"])
def test_eta_zero_is_the_sampler_without_remasking(kind):
    x, gm = _canvas()
    plain, _ = _run(x, gm, remask="none", order="random")
    off, _ = _run(x, gm, remask="remdm", remask_eta=0.0, remdm_schedule=kind, order="random")
    assert torch.equal(plain, off)


def test_corrector_off_is_unchanged_and_counts_its_passes():
    x, gm = _canvas()
    base, st0 = _run(x, gm)
    same, _ = _run(x, gm, corrector_steps=0, corrector_frac=0.5)
    assert torch.equal(base, same)
    frames = []
    out, st = _run(x, gm, corrector_steps=4, corrector_frac=0.25, on_step=frames.append)
    assert st["nfe"] == st0["nfe"] + 4 and st["nfe_per_sample"] == [n + 4 for n in st0["nfe_per_sample"]]
    assert torch.equal(frames[-5].x, base)  # the predictor's sample unchanged, then K passes
    n = gm.sum(1)
    for info in frames[-4:]:  # each pass re-masks round(0.25 n) tokens, the least confident, and redraws them all
        assert torch.equal(info.remasked.sum(1), torch.round(n * 0.25).long())
        assert not (info.remasked & ~gm).any() and torch.equal(info.revealed, info.remasked)
        assert not (info.x == MASK).any()


def test_corrector_after_threshold_decoding_redraws_all_it_re_masks():
    x, gm = _canvas()
    base, st0 = _run(x, gm, threshold=0.5, remask="none")
    out, st = _run(x, gm, threshold=0.5, remask="none", corrector_steps=3, corrector_frac=0.5)
    assert not (out == MASK).any() and torch.equal(out[~gm], x[~gm]) and st["nfe"] == st0["nfe"] + 3


def test_least_confident_pick_by_hand():
    conf = torch.tensor([[0.9, 0.1, 0.5, 0.2, 0.0], [0.3, 0.2, 0.1, 0.6, 0.7]], dtype=torch.float64)
    now = torch.tensor([[True, True, True, True, False], [False, False, False, False, False]])
    pick = corrector_positions("confidence", conf, now, 0.5)
    assert pick[0].tolist() == [False, True, False, True, False]  # 2 of 4; position 4 (fixed, conf 0) is not in the block
    assert not pick[1].any()


def test_random_pick_is_uniform_over_the_block_and_takes_the_same_count():
    conf = torch.tensor([[0.9, 0.1, 0.5, 0.2, 0.0, 0.7]] * 2, dtype=torch.float64)
    now = torch.tensor([[True, True, True, True, False, True]] * 2)
    g, hits, picks = torch.Generator().manual_seed(0), torch.zeros(2, 6), set()
    for _ in range(4000):
        pick = corrector_positions("random", conf, now, 0.4, g)
        assert pick.sum(1).tolist() == [2, 2] and not (pick & ~now).any()  # round(0.4 * 5), never outside the block
        hits += pick
        picks.add(tuple(pick[0].tolist()))
    assert (hits[:, now[0]] / 4000 - 0.4).abs().max() < 0.04  # each block position 2 / 5 of the time
    assert len(picks) == 10  # all C(5, 2) pairs occur, not only the least confident {1, 3}


def test_loop_holds_the_mask_count_and_remasks_only_inside_it():
    x, gm = _canvas()
    n, counts, remasked = gm.sum(1), [], []
    _run(x, gm, steps=20, on_step=lambda i: (counts.append(((i.x == MASK) & gm).sum(1)), remasked.append(i.remasked.sum().item())),
         **LOOP)
    first, loop, last = loop_split(20, int(n.max()), 0.5, 0.6, 0.2)
    n_on = torch.round(n.double() * 0.5).long()
    for i in range(first - 1, first + loop):  # from the end of the first reveal through the loop: the rate is held
        assert torch.equal(counts[i], n_on)
    assert sum(remasked[first:first + loop]) > 0  # the loop re-masks (and reveals as many)
    assert sum(remasked[:first]) == sum(remasked[first + loop:]) == 0  # MDLM steps outside it


def test_loop_plan_of_a_block_with_nothing_masked_during_the_loop():
    """A 4-token block at alpha_on = 0.9 keeps no token masked in the loop (loop_split: (4, 0, 0)): the plan is the
    plain reveal down to 0, no loop step (it raised an IndexError, which bd3 blocks of 4 under the loop hit)."""
    n = torch.tensor([4, 4])
    keep, looping = loop_plan(n, 20, 0.9, 0.6, 0.2, lambda j, k: 1 - (j + 1) / k)
    assert keep.tolist() == [[3, 2, 1, 0]] * 2 and looping.tolist() == [False] * 4


def test_bd3_remasks_only_inside_the_current_block_and_counts_its_passes():
    torch.manual_seed(0)
    from model import ModelArgs, Transformer
    m = Transformer(ModelArgs(vocab_size=11, block_size=16, n_layer=1, n_head=2, n_embd=32, diffusion_steps=10,
                              time_cond="none")).eval()
    prompt = torch.randint(0, 10, (2, 6), generator=torch.Generator().manual_seed(0))
    opts = dict(remask="remdm", remdm_schedule="loop", remask_eta=0.5, remdm_alpha_on=0.5, remdm_t_on=0.7,
                remdm_t_off=0.2, corrector_steps=1, corrector_frac=0.5)
    frames = []
    out, st = sample_bd3(m, prompt, 18, 4, Schedule(10), 10, SamplerOptions(8, **opts),
                         generator=torch.Generator().manual_seed(1), on_step=frames.append)
    assert torch.equal(out[:, :6], prompt) and not (out == 10).any()
    for info in frames:  # re-masked and redrawn positions all lie in the block being decoded
        blk = torch.arange(info.x.size(1)) // 4 == 1 + info.block
        assert not ((info.remasked | info.revealed) & ~blk).any()
    assert sum(f.remasked.sum().item() for f in frames) > 0
    cfg = get_config([*MICRO, "--objective=bd3", "--bd3_block=4", "--steps=8",
                      *[f"--{k}={v}" for k, v in opts.items()]])
    assert st["nfe"] == len(frames) == bd3.passes(cfg, 18, 6)
    assert "8 steps per block" in bd3.describe(cfg)  # the loop's budget, not capped at the block's 4 tokens


def test_keys_are_checked_and_refused_where_they_cannot_apply():
    assert get_config([*MICRO, "--remask=remdm", "--remdm_schedule=loop"]).remdm_schedule == "loop"
    for bad in (["--remdm_schedule=cap"], ["--remask=remdm", "--remdm_schedule=sometimes"],
                ["--remask=remdm", "--remdm_t_on=0.1", "--remdm_t_off=0.2"], ["--remask=remdm", "--remdm_alpha_on=1"],
                ["--corrector_steps=-1"], ["--corrector_frac=0"], ["--corrector_pick=random"],
                ["--corrector_steps=2", "--corrector_pick=worst"]):
        with pytest.raises(UserError, match="remdm|corrector|remask"):
            get_config([*MICRO, *bad])
    for objective in ("ar", "uniform"):
        with pytest.raises(UserError, match="corrector_steps"):
            get_config([*for_objective([*MICRO, f"--objective={objective}"]), "--corrector_steps=2"])
        assert "remdm_schedule" in __import__("objectives").get(objective).IGNORES
