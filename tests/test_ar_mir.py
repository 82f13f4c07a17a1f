"""The AR baseline's masked-input auxiliary loss (--mir_weight, --mir_mask_max): off it is the plain next-token loss
bit for bit; on, its masked positions are exactly the ones the generator draws, and the loss is the clean loss plus
the weight times the loss on those inputs.

    python -m pytest -q tests/test_ar_mir.py
"""
import pytest
import torch

import ar
from configurator import get_config
from helpers import MICRO, for_objective
from model import ModelArgs, Transformer
from utils.errors import UserError

V, MASK = 12, 11


def causal_model():
    torch.manual_seed(0)
    return Transformer(ModelArgs(vocab_size=V, block_size=16, n_layer=1, n_head=2, n_embd=16, causal=True,
                                 time_cond="none")).eval()


def batch():
    return torch.randint(0, MASK, (4, 17), generator=torch.Generator().manual_seed(1))


def test_weight_zero_is_the_plain_next_token_loss_bit_for_bit():
    model, x = causal_model(), batch()
    assert torch.equal(ar.mir_loss(model, x, MASK, 0.0, 0.5, torch.Generator().manual_seed(2)), ar.ar_loss(model, x)[0])


def test_masked_positions_are_exactly_those_drawn():
    x = batch()[:, :-1]
    inputs, hit = ar.masked_inputs(x, MASK, 0.5, torch.Generator().manual_seed(3))
    # the same draws by hand: one rate per row, then one uniform per token
    g = torch.Generator().manual_seed(3)
    r = torch.rand(4, 1, generator=g, dtype=torch.float64) * 0.5
    expect = torch.rand(x.shape, generator=g, dtype=torch.float64) < r
    assert torch.equal(hit, expect)
    assert torch.equal(inputs[hit], torch.full((int(hit.sum()),), MASK)) and torch.equal(inputs[~hit], x[~hit])
    assert 0 < hit.float().mean() < 0.5  # rates ~ U[0, 0.5]: some masking, well under half on average


def test_mask_rate_follows_the_range():
    x = torch.zeros(4000, 64, dtype=torch.long)
    _, hit = ar.masked_inputs(x, MASK, 0.5, torch.Generator().manual_seed(4))
    rates = hit.double().mean(1)
    assert abs(rates.mean().item() - 0.25) < 0.01  # E[r] = 0.5 / 2
    assert rates.max().item() < 0.5 + 4 * (0.25 / 64) ** 0.5  # no row far above the range's top


def test_loss_is_clean_plus_weight_times_masked_input_loss():
    model, x = causal_model(), batch()
    got = ar.mir_loss(model, x, MASK, 0.4, 0.5, torch.Generator().manual_seed(5))
    inputs, _ = ar.masked_inputs(x[:, :-1], MASK, 0.5, torch.Generator().manual_seed(5))
    expect = ar.ar_loss(model, x)[0] + 0.4 * ar.ar_loss(model, x, inputs)[0]
    assert torch.allclose(got, expect, rtol=0, atol=1e-6)
    assert ar.ar_loss(model, x, inputs)[0] > ar.ar_loss(model, x)[0] - 1.0  # a real second pass on other inputs
    assert not torch.equal(inputs, x[:, :-1])


def test_keys_are_checked_and_only_ar_reads_them():
    base = for_objective([*MICRO, "--objective=ar"])
    assert get_config([*base, "--mir_weight=0.4", "--mir_mask_max=0.5"]).mir_weight == 0.4
    for bad in ("--mir_weight=-1", "--mir_mask_max=0", "--mir_mask_max=1.5"):
        with pytest.raises(UserError, match="mir_"):
            get_config([*base, bad])
    for objective in ("mdlm", "bd3", "uniform"):  # refused, never dropped
        with pytest.raises(UserError, match="mir_weight.*--objective=ar"):
            get_config([*MICRO, f"--objective={objective}", "--mir_weight=0.4"])
