"""Self-conditioning (--self_cond): the input starts at zero, training feeds the first pass's prediction to a share
of the rows, the bound by hand (mdlm, bd3). (The samplers' law with it: tests/test_sampling.py; bd3's cached decode
with it: tests/test_bd3.py.)
python -m pytest -q tests/test_self_cond.py"""
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

import bd3
import diffusion
from configurator import get_config
from diffusion import LossOptions, Schedule, diffusion_loss, no_mask_logit, predict_logits, self_condition_input
from helpers import bd3_drawn, model_args
from model import ModelArgs, Transformer

pytestmark = pytest.mark.core  # the core tier (pytest.ini): the maths, the loop, the samplers

V, MASK = 12, 11


def net(seed=0, self_cond=True):
    torch.manual_seed(seed)
    return Transformer(ModelArgs(vocab_size=V, block_size=16, n_layer=1, n_head=2, n_embd=16, diffusion_steps=10,
                                 time_cond="none", self_cond=self_cond)).eval()


def test_the_input_starts_at_zero_and_then_is_read():
    m = net()
    x = torch.randint(0, MASK, (3, 16))
    sc = torch.softmax(torch.randn(3, 16, V), -1)
    assert torch.equal(m(x, sc=sc), m(x))  # zero-initialised projection: the plain network at step 0
    torch.nn.init.normal_(m.sc_proj.weight, std=0.1)
    assert not torch.allclose(m(x, sc=sc), m(x))
    assert torch.equal(m(x, sc=torch.zeros(3, 16, V)), m(x))  # a zero input reads as no input


def test_self_condition_is_the_first_pass_at_masked_positions_for_a_share_of_rows():
    m = net()
    torch.nn.init.normal_(m.sc_proj.weight, std=0.1)
    xt = torch.randint(0, MASK, (8, 16))
    masked = torch.rand(8, 16) < 0.5
    xt[masked] = MASK
    t = torch.full((8,), 5)
    full = self_condition_input(lambda r: predict_logits(m, xt[r], t[r], MASK), masked)
    by_hand = torch.softmax(no_mask_logit(m(xt), MASK), -1) * masked[..., None]
    assert torch.allclose(full, by_hand)
    assert (full[~masked] == 0).all() and torch.allclose(full[masked].sum(-1), torch.ones(int(masked.sum())))
    rows = diffusion.masking_draws(xt.shape, t, 0.5, torch.Generator().manual_seed(0)).rows
    assert len(rows) == 4 and len(set(rows.tolist())) == 4  # exactly half the rows, each once
    half = self_condition_input(lambda r: predict_logits(m, xt[r], t[r], MASK), masked, rows)
    fed = half.flatten(1).abs().sum(1) > 0
    assert fed.nonzero().squeeze(1).tolist() == sorted(rows.tolist())  # the rows drawn, the others zeros
    assert torch.allclose(half[fed], full[fed], atol=1e-6)  # the same prediction (a row's pass does not see the others)


@pytest.mark.parametrize("share", [1.0, 0.5])
def test_the_bound_is_the_weighted_ce_of_the_second_pass_fed_the_first_at_the_rows_drawn(share):
    """By hand: NELBO = (1/L) sum over masked positions of T w(t) CE(second pass), the second pass reading the first
    pass's softmax at the masked positions of the rows drawn (all at share 1, masking_draws' at 0.5), zeros elsewhere."""
    m = net(1)
    torch.nn.init.normal_(m.sc_proj.weight, std=0.2)
    sched, x0, t = Schedule(10, "cosine"), torch.randint(0, MASK, (8, 16)), torch.tensor([2, 4, 7, 10, 3, 5, 8, 9])
    if share == 1.0:
        _, nelbo, aux = diffusion_loss(m, x0, sched, MASK, LossOptions(self_cond=1.0), torch.Generator().manual_seed(3),
                                       t=t)
        rows = torch.arange(8)
    else:
        drawn = diffusion.masking_draws(x0.shape, t, 0.5, torch.Generator().manual_seed(3))
        _, nelbo, aux = diffusion_loss(m, x0, sched, MASK, LossOptions(self_cond=0.5), drawn=drawn)
        rows = drawn.rows
    xt = torch.where(aux["masked"], torch.full_like(x0, MASK), x0)
    first = torch.softmax(no_mask_logit(m(xt), MASK), -1) * aux["masked"][..., None]

    def bound(sc):
        ce = F.cross_entropy(no_mask_logit(m(xt, sc=sc), MASK).transpose(1, 2), x0, reduction="none")
        return (10 * sched.weight[t].float()[:, None] * ce * aux["masked"]).sum(1) / 16
    sc = torch.zeros_like(first)
    sc[rows] = first[rows]
    assert torch.allclose(nelbo, bound(sc), atol=1e-5)
    assert not torch.allclose(nelbo, bound(first if share < 1 else torch.zeros_like(first)))  # the wrong rows fed


@pytest.mark.parametrize("objective", ["ar", "uniform"])
def test_a_preset_with_it_builds_no_input_for_other_objectives(objective):
    """A preset's values for keys an objective does not read are not read: the network must not grow sc_proj."""
    cfg = replace(get_config(["--self_cond=true"]), objective=objective)
    assert model_args(cfg, V).self_cond is False


def test_its_training_flops_count_the_extra_pass():
    m = net()
    assert diffusion.MaskedDiffusion().flops(m, get_config(["--self_cond=true"]))[0] == pytest.approx(
        m.flops_per_token() * 7 / 6)
    cfg = get_config(["--objective=bd3", "--self_cond=true", "--block_size=16", "--bd3_block=4"])
    assert model_args(cfg, V).self_cond is True
    assert bd3.BlockDiffusion().flops(m, cfg) == (pytest.approx(m.flops_per_token(28) * 28 / 16 * 7 / 6), 28)  # 2L - L'


@pytest.mark.parametrize("block", [4, 16])
def test_the_bd3_bound_is_the_weighted_ce_of_the_second_two_stream_pass(block):
    """By hand, as mdlm's: the first two-stream pass's softmax at masked positions of the noisy half feeds the
    second (the clean half reads zeros); the NELBO weights the second pass's CE by T w(t_b) per block. With the
    projection at zero it is the plain bound."""
    m = net(1)
    sched = Schedule(10, "cosine")
    x0 = torch.randint(0, MASK, (4, 16))
    t = torch.randint(1, 11, (4, 16 // block))

    def run(self_cond):
        drawn = bd3_drawn(x0, block, sched, torch.Generator().manual_seed(3), t=t, share=self_cond)
        return bd3.bd3_loss(m, x0, sched, MASK, block, drawn, LossOptions(self_cond=self_cond))

    _, plain, _ = run(0.0)
    torch.testing.assert_close(run(1.0)[1], plain)  # sc_proj starts at zero: the plain network
    torch.nn.init.normal_(m.sc_proj.weight, std=0.2)
    _, nelbo, aux = run(1.0)
    masked = aux["masked"]
    xt = torch.where(masked, torch.full_like(x0, MASK), x0)
    first = torch.softmax(bd3.bd3_logits(m, xt, x0, block, MASK), -1) * masked[..., None]
    ce = F.cross_entropy(bd3.bd3_logits(m, xt, x0, block, MASK, sc=first).transpose(1, 2), x0, reduction="none")
    expect = (10 * sched.weight[aux["t_tok"]].float() * ce * masked).sum(1) / 16
    torch.testing.assert_close(nelbo, expect, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(nelbo, plain)
