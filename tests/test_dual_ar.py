"""Masked diffusion's dual objective (--dual_ar): a second pass of the same network, attending causally over the clean
window, learns the next token beside the diffusion loss. Its causal pass is the AR network of the same weights; the
training loss is the diffusion loss plus the weight times that term on the same draws; the bound (what eval.py
scores) does not read it; the key is checked and only mdlm reads it.

    python -m pytest -q tests/test_dual_ar.py
"""
import pytest
import torch
import torch.nn.functional as F

import ar
import diffusion
from common import Draw, Schedule
from configurator import get_config
from helpers import MICRO, for_objective
from model import ModelArgs, Transformer
from utils.errors import UserError

V, MASK = 12, 11
ARGS = dict(vocab_size=V, block_size=16, n_layer=2, n_head=2, n_embd=16, time_cond="none")


def nets():
    """An mdlm network and the causal (AR) network with the same weights."""
    torch.manual_seed(0)
    bidir = Transformer(ModelArgs(**ARGS)).eval()
    causal = Transformer(ModelArgs(**ARGS, causal=True)).eval()
    causal.load_state_dict(bidir.state_dict())
    return bidir, causal


def batch():
    return torch.randint(0, MASK, (4, 16), generator=torch.Generator().manual_seed(1))


def test_the_causal_pass_is_the_ar_network_of_the_same_weights():
    bidir, causal = nets()
    x = batch()
    logits = causal(x[:, :-1])
    logits[..., MASK] = float("-inf")  # as every diffusion prediction: x0 is never [MASK]
    expect = F.cross_entropy(logits.reshape(-1, V), x[:, 1:].reshape(-1))
    assert torch.allclose(diffusion.dual_ar_loss(bidir, x, MASK), expect, rtol=0, atol=1e-6)
    # and it reads no token after the one it predicts: the bidirectional network's own pass over the window does
    assert not torch.allclose(diffusion.dual_ar_loss(bidir, x, MASK), ar.ar_loss(bidir, x)[0], atol=1e-3)
    y = x.clone()
    y[:, -1] = (y[:, -1] + 1) % MASK  # the last token is only a target: the other 14 terms stay
    per = lambda z: F.cross_entropy(causal(z[:, :-1])[:, :-1].reshape(-1, V), z[:, 1:-1].reshape(-1), reduction="none")
    assert torch.equal(per(x), per(y))


def test_loss_is_the_diffusion_loss_plus_the_weight_times_the_causal_term_on_the_same_draws():
    bidir, _ = nets()
    x, schedule = batch(), Schedule(100)
    base = get_config([*MICRO, "--objective=mdlm", "--block_size=16", "--mask_min=0.2", "--mask_max=0.8", "--time_cond=none"])

    def loss(weight):
        cfg = get_config([*MICRO, "--objective=mdlm", "--block_size=16", "--mask_min=0.2", "--mask_max=0.8", "--time_cond=none",
                          f"--dual_ar={weight}"])
        tok = type("Tok", (), dict(mask_id=MASK))
        return diffusion.loss(bidir, x, cfg, schedule, tok, Draw(torch.Generator().manual_seed(3), torch.tensor(0.25)))

    assert base.dual_ar == 0
    expect = loss(0) + 0.5 * diffusion.dual_ar_loss(bidir, x, MASK)
    assert torch.allclose(loss(0.5), expect, rtol=0, atol=1e-6) and loss(0.5) > loss(0) + 0.1


def test_the_key_is_checked_and_only_mdlm_reads_it():
    base = for_objective([*MICRO, "--objective=mdlm", "--time_cond=none"])
    assert get_config([*base, "--dual_ar=1"]).dual_ar == 1.0
    for bad in ("--dual_ar=-1", "--dual_ar=1 --time_cond=learned"):
        with pytest.raises(UserError, match="dual_ar"):
            get_config([*base, *bad.split()])
    for objective, fix in (("bd3", "--bd3_ar"), ("uniform", "--objective=mdlm"), ("ar", "next token")):
        with pytest.raises(UserError, match=f"dual_ar.*{fix}"):  # refused, never dropped
            get_config([*for_objective([*MICRO, f"--objective={objective}"]), "--dual_ar=1"])
