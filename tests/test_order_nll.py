"""scripts/order_nll.py: the exact NLL of a diffusion network's joint in a fixed reveal order (one token a pass, per
block for bd3): what each pass sees, the orders, a hand computation, block diffusion's blocks sharing a pass, and the
script on tiny checkpoints (slow).
python -m pytest -q tests/test_order_nll.py"""
import json
from types import SimpleNamespace

import pytest
import torch

from bd3 import bd3_logits
from conftest import train_tiny
from helpers import Args, ToyModel, assert_one_line_error, run_cli_here, script
from model import ModelArgs, Transformer

order_nll = script("order_nll")
MASK = 11


class Recorder(ToyModel):
    """ToyModel (its logits depend on the tokens and t) that keeps every input it was given."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, idx, t=None, **kw):
        self.seen.append((idx.clone(), t.clone()))
        return super().forward(idx, t, **kw)


def test_each_token_is_scored_by_the_pass_that_sees_exactly_the_tokens_revealed_before_it():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, MASK, (3, 10), generator=g)
    perm = order_nll.order_positions("random", 3, 10, g)  # (3, 1, 10): one block, the window
    model = Recorder()
    logits_of, _ = order_nll.mdlm_pass(model, SimpleNamespace(diffusion_steps=20, schedule="cosine"), x, MASK)
    nll = order_nll.ordered_nll(logits_of, x, perm, MASK, 12)
    assert len(model.seen) == 10 and nll.shape == (3, 10) and nll.dtype == torch.float64
    perm = perm[:, 0]
    for k, (xt, t) in enumerate(model.seen):
        for b in range(3):
            visible = (xt[b] != MASK).nonzero().squeeze(1).tolist()
            assert sorted(visible) == sorted(perm[b, :k].tolist())  # the tokens revealed before, no others
            assert torch.equal(xt[b, visible], x[b, visible])
        # by hand: the pass's log-softmax over the real tokens ([MASK] excluded) at the position it reveals
        logits = ToyModel()(xt, t).double()
        logits[..., MASK] = float("-inf")
        logp = logits.log_softmax(-1)
        for b in range(3):
            i = perm[b, k].item()
            assert nll[b, i].item() == pytest.approx(-logp[b, i, x[b, i]].item(), rel=1e-6)
    # the time told is the schedule's t for the masked fraction: all masked at the first pass -> t = T
    assert (model.seen[0][1] == 20).all() and (model.seen[-1][1] < model.seen[0][1]).all()


def test_orders_are_permutations_and_a_context_free_model_scores_every_order_alike():
    g = torch.Generator().manual_seed(1)
    assert order_nll.order_positions("l2r", 2, 5, g).tolist() == [[[0, 1, 2, 3, 4]]] * 2
    assert order_nll.order_positions("r2l", 1, 5, g).tolist() == [[[4, 3, 2, 1, 0]]]
    assert order_nll.order_positions("r2l", 1, 6, g, block=3).tolist() == [[[2, 1, 0], [5, 4, 3]]]  # inside each block
    rnd = order_nll.order_positions("random", 4, 9, g)[:, 0]
    assert all(sorted(r.tolist()) == list(range(9)) for r in rnd) and len({tuple(r.tolist()) for r in rnd}) > 1
    rnd = order_nll.order_positions("random", 2, 12, g, block=4)
    assert all(sorted(b.tolist()) == list(range(4 * j, 4 * j + 4)) for r in rnd for j, b in enumerate(r))

    class PerPosition(torch.nn.Module):  # logits depend on the position alone: every order gives the same joint
        def __init__(self):
            super().__init__()
            self.table, self.args = torch.randn(8, 12, generator=torch.Generator().manual_seed(2)), Args(8)

        def forward(self, idx, t=None, **kw):
            return self.table[:idx.size(1)].expand(idx.size(0), -1, -1).clone()

    x = torch.randint(0, MASK, (2, 8), generator=g)
    logits_of, _ = order_nll.mdlm_pass(PerPosition(), SimpleNamespace(diffusion_steps=20, schedule="cosine"), x, MASK)
    per = [order_nll.ordered_nll(logits_of, x, order_nll.order_positions(o, 2, 8, g), MASK, 12) for o in order_nll.ORDERS]
    assert all(torch.allclose(p, per[0]) for p in per[1:])


@pytest.mark.parametrize("order", order_nll.ORDERS)
def test_block_diffusion_blocks_share_a_pass_and_each_is_read_after_the_clean_blocks_before_it(order):
    """bd3: every block takes its k-th token in the same two-stream pass. Under the block mask a noisy block sees only
    itself and the clean blocks before it, so that must equal scoring each block alone, the others all [MASK]."""
    V, M, block, L = 11, 10, 4, 12
    torch.manual_seed(0)
    model = Transformer(ModelArgs(vocab_size=V, block_size=L, n_layer=2, n_head=2, n_embd=32, diffusion_steps=10,
                                  time_cond="none")).eval()
    g = torch.Generator().manual_seed(4)
    x = torch.randint(0, M, (2, L), generator=g)
    perm = order_nll.order_positions(order, 2, L, g, block)  # (2, 3, 4)
    logits_of, _ = order_nll.bd3_pass(model, SimpleNamespace(bd3_block=block), x, M)
    nll = order_nll.ordered_nll(logits_of, x, perm, M, V)
    for b in range(L // block):
        for k in range(block):
            xt = torch.full_like(x, M)
            for r in range(2):
                xt[r, perm[r, b, :k]] = x[r, perm[r, b, :k]]  # this block's first k tokens; every other block masked
            with torch.no_grad():
                logp = bd3_logits(model, xt, x, block, M).double().log_softmax(-1)
            for r in range(2):
                i = perm[r, b, k].item()
                assert nll[r, i].item() == pytest.approx(-logp[r, i, x[r, i]].item(), rel=1e-5, abs=1e-6)


@pytest.mark.slow
def test_the_script_on_tiny_checkpoints_and_its_refusals(tiny_ckpt, tmp_path_factory, tmp_path, capsys):
    out = tmp_path / "o.json"
    code, text, err = run_cli_here(order_nll.main, [tiny_ckpt, "--orders", "l2r,random,r2l", "--n-windows", "4",
                                                    "--device", "cpu", "--json", out], capsys)
    assert code == 0, err
    d = json.loads(out.read_text())
    assert d["n_windows"] == 4 and d["objective"] == "mdlm" and list(d["orders"]) == ["l2r", "random", "r2l"]
    for o, r in d["orders"].items():
        assert r["nats_per_token"] > 0 and r["se"] > 0 and len(r["by_quarter"]) == 4
        assert r["bits_per_char"] == pytest.approx(r["nats_per_token"] / d["chars_per_token"] / 0.6931471805599453)
        assert ("paired_vs_l2r" in r) == (o != "l2r")
    assert "random:" in text and "paired against l2r" in text
    code, _, err = run_cli_here(order_nll.main, [tiny_ckpt, "--json", out, "--device", "cpu"], capsys)
    assert_one_line_error(code, err, "--force")  # never overwrites a result it was not told to
    code, _, err = run_cli_here(order_nll.main, [tiny_ckpt, "--orders", "sideways"], capsys)
    assert_one_line_error(code, err, "--orders", "l2r")
    bd3 = train_tiny(tmp_path_factory, "order_bd3", "--objective=bd3", "--bd3_block=4", "--self_cond", "--max_iters=10",
                     "--eval_interval=10")
    code, text, err = run_cli_here(order_nll.main, [bd3, "--orders", "random,l2r", "--n-windows", "4", "--device", "cpu",
                                                    "--json", tmp_path / "b.json"], capsys)
    assert code == 0 and "in each block of 4 (4 passes a window)" in text, err
    d = json.loads((tmp_path / "b.json").read_text())
    assert d["objective"] == "bd3" and d["block"] == 4 and d["orders"]["l2r"]["nats_per_token"] > 0
    ar = train_tiny(tmp_path_factory, "order_ar", "--objective=ar", "--max_iters=10", "--eval_interval=10")
    code, _, err = run_cli_here(order_nll.main, [ar, "--device", "cpu"], capsys)
    assert_one_line_error(code, err, "ar model", "bd3")
