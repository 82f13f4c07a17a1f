"""dev/order_nll.py: the exact NLL of a network's joint in a fixed reveal order, against hand computations, and the
script on tiny checkpoints. python -m pytest -q tests/test_order_nll.py"""
import itertools
import json
import math
from types import SimpleNamespace

import pytest
import torch

from bd3 import bd3_logits, bd3_loss
from checkpoint_manager import checkpoint_config, load_model
from conftest import train_tiny
from diffusion import LossOptions, Schedule, diffusion_loss, predict_logits, self_condition_input
from helpers import Args, ToyModel, assert_one_line_error, bd3_drawn, run_cli_here, script
from model import ModelArgs, Transformer
from utils.dataloader import fixed_windows, prepare_data
from utils.tokenizer import tokenizer_from_state

pytestmark = pytest.mark.slower  # the slower tier (pytest.ini): a dev/ script's test

order_nll = script("dev/order_nll")
MASK = 11


class Recorder(ToyModel):
    """ToyModel that keeps every input it was given; told no time by the script, it reads t = 1."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, idx, t=None, **kw):
        self.seen.append((idx.clone(), t))
        return super().forward(idx, torch.ones(len(idx), dtype=torch.long), **kw)


def test_each_token_is_scored_by_the_pass_that_sees_exactly_the_tokens_revealed_before_it():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, MASK, (3, 10), generator=g)
    perm = order_nll.order_positions("random", 3, 10, g)  # (3, 1, 10): one block, the window
    model = Recorder()
    logits_of, _ = order_nll.mdlm_pass(model, None, x, MASK)
    nll = order_nll.ordered_nll(logits_of, x, perm, MASK, 12)
    assert len(model.seen) == 10 and nll.shape == (3, 10) and nll.dtype == torch.float64
    perm = perm[:, 0]
    for k, (xt, t) in enumerate(model.seen):
        for b in range(3):
            visible = (xt[b] != MASK).nonzero().squeeze(1).tolist()
            assert sorted(visible) == sorted(perm[b, :k].tolist())  # the tokens revealed before, no others
            assert torch.equal(xt[b, visible], x[b, visible])
        # by hand: the log-softmax over the real tokens at the position the pass reveals
        assert t is None  # told no time
        logits = ToyModel()(xt, torch.ones(3, dtype=torch.long)).double()
        logits[..., MASK] = float("-inf")
        logp = logits.log_softmax(-1)
        for b in range(3):
            i = perm[b, k].item()
            assert nll[b, i].item() == pytest.approx(-logp[b, i, x[b, i]].item(), rel=1e-6)


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
    logits_of, _ = order_nll.mdlm_pass(PerPosition(), None, x, MASK)
    per = [order_nll.ordered_nll(logits_of, x, order_nll.order_positions(o, 2, 8, g), MASK, 12) for o in order_nll.ORDERS]
    assert all(torch.allclose(p, per[0]) for p in per[1:])


def _mixture_by_enumeration(logits_of, x, block, read=None, mask=MASK, vocab=12):
    """-log of the mean over all S! orders (the same order in every block) of each order's joint, per block."""
    B, L = x.shape
    S, n = block or L, L // (block or L)
    joints = [-order_nll.ordered_nll(logits_of, x, (torch.tensor(p) + S * torch.arange(n)[:, None]).expand(B, n, S), mask,
                                     vocab, read).view(B, n, S).sum(-1) for p in itertools.permutations(range(S))]
    return -(torch.logsumexp(torch.stack(joints), 0) - math.log(len(joints))), torch.stack(joints).mean(0).neg()


def test_the_mixture_is_the_mean_over_every_order_of_its_joint_and_below_the_mean_orders_nll(monkeypatch):
    """--orders mixture equals the mean over the S! orders' joints, lies below the mean order's NLL (Jensen's gap),
    and has no gap for a network whose logits ignore the canvas."""
    g = torch.Generator().manual_seed(0)
    for L, block in ((4, 0), (8, 4), (8, 2)):
        x = torch.randint(0, MASK, (3, L), generator=g)
        logits_of, _ = order_nll.mdlm_pass(Recorder(), None, x, MASK)
        got = order_nll.mixture_nll(logits_of, x, block, MASK, 12)
        want, mean_order = _mixture_by_enumeration(logits_of, x, block)
        assert got.shape == (3, L // (block or L)) and got.dtype == torch.float64
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
        assert (got < mean_order - 1e-3).all()  # this toy's orders differ: a strict gap
    x = torch.randint(0, MASK, (2, 4), generator=g)
    flat = ToyModel()
    per_position = lambda xt, sc: flat(torch.zeros_like(xt), torch.ones(len(xt), dtype=torch.long))  # canvas-blind
    per_order = order_nll.ordered_nll(per_position, x, order_nll.order_positions("l2r", 2, 4, g), MASK, 12).sum(1)
    torch.testing.assert_close(order_nll.mixture_nll(per_position, x, 0, MASK, 12)[:, 0], per_order)
    # beyond EXACT_BLOCK: -log mean over k random orders of their joints, the orders drawn from the generator
    monkeypatch.setattr(order_nll, "EXACT_BLOCK", 2)
    x = torch.randint(0, MASK, (3, 8), generator=g)
    logits_of, _ = order_nll.mdlm_pass(Recorder(), None, x, MASK)
    got = order_nll.mixture_nll(logits_of, x, 4, MASK, 12, k=3, generator=torch.Generator().manual_seed(5))
    g5 = torch.Generator().manual_seed(5)
    joints = torch.stack([-order_nll.ordered_nll(logits_of, x, order_nll.order_positions("random", 3, 8, g5, 4), MASK,
                                                 12).view(3, 2, 4).sum(-1) for _ in range(3)])
    torch.testing.assert_close(got, -(torch.logsumexp(joints, 0) - math.log(3)))
    assert (got <= -joints.mean(0) + 1e-12).all()  # never above the mean of the orders it drew


def test_the_semi_autoregressive_mixture_reads_each_block_after_the_ones_before_it():
    """--semi-ar-length S: block j's NLL is the mixture over its S! orders, the blocks before it revealed."""
    x = torch.randint(0, MASK, (3, 6), generator=torch.Generator().manual_seed(3))
    logits_of, _ = order_nll.mdlm_pass(Recorder(), None, x, MASK)
    got = order_nll.mixture_nll(logits_of, x, 0, MASK, 12, semi_ar=3)
    assert got.shape == (3, 2)
    for j in range(2):
        joints = []
        for p in itertools.permutations(range(3)):  # the window's order: the blocks before, this one's, the rest after
            order = torch.tensor(list(range(3 * j)) + [3 * j + i for i in p] + list(range(3 * j + 3, 6)))
            nll = order_nll.ordered_nll(logits_of, x, order.expand(3, 1, 6), MASK, 12)
            joints.append(-nll[:, 3 * j:3 * j + 3].sum(1))
        torch.testing.assert_close(got[:, j], -(torch.logsumexp(torch.stack(joints), 0) - math.log(6)))


def test_the_sampler_read_mixture_is_the_mean_over_every_order_of_the_samplers_joint():
    """--self-cond-read sampler: the mixture over the sampler's joints, another law than the bound reading's; a semi-AR
    block's first pass reads no prediction (zeros), as diffusion.denoise keeps none off its block."""
    M, V = 8, 9
    x = torch.randint(0, M, (3, 6), generator=torch.Generator().manual_seed(4))
    model = _self_conditioned(6)
    logits_of, _ = order_nll.mdlm_pass(model, None, x, M)
    for block in (3, 2):  # two blocks of 3 (6 orders), three of 2
        got = order_nll.mixture_nll(logits_of, x, block, M, V, self_cond="sampler")
        want = _mixture_by_enumeration(logits_of, x, block, "sampler", M, V)[0]
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
        bound = order_nll.mixture_nll(logits_of, x, block, M, V, self_cond="bound")
        assert (got - bound).abs().max() > 1e-3  # another law: the reading matters on this network
    got = order_nll.mixture_nll(logits_of, x, 0, M, V, self_cond="sampler", semi_ar=3)
    for j in range(2):  # block j by hand: the blocks before it shown, a fresh prediction chain started at zeros
        base = torch.where(torch.arange(6) < 3 * j, x, M)
        joints = []
        for p in itertools.permutations(range(3)):
            xt, sc, logp = base.clone(), torch.zeros(3, 6, V), 0.0
            for i in p:
                logits = logits_of(xt, sc)
                logp = logp + logits.double().log_softmax(-1)[:, 3 * j + i].gather(-1, x[:, 3 * j + i, None])[:, 0]
                keep = torch.zeros(6, dtype=torch.bool)
                keep[3 * j:3 * j + 3] = True
                xt[:, 3 * j + i] = x[:, 3 * j + i]
                sc = logits.softmax(-1) * keep[:, None] * (xt == M)[..., None]
            joints.append(logp)
        torch.testing.assert_close(got[:, j], -(torch.logsumexp(torch.stack(joints), 0) - math.log(6)))


@pytest.mark.parametrize("order", [o for o in order_nll.ORDERS if o != "mixture"])
def test_block_diffusion_blocks_share_a_pass_and_each_is_read_after_the_clean_blocks_before_it(order):
    """bd3: every block takes its k-th token in one pass, equal to scoring each block alone, the others [MASK]."""
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


def _self_conditioned(L, seed=0):
    """A tiny time-free network whose self-conditioning matters (sc_proj not zero)."""
    torch.manual_seed(seed)
    model = Transformer(ModelArgs(vocab_size=9, block_size=L, n_layer=1, n_head=2, n_embd=32, time_cond="none",
                                  self_cond=True)).eval()
    torch.nn.init.normal_(model.sc_proj.weight, std=2.0)
    return model


def _bound_ce(model, xt, x, block, mask_id):
    """CE (B, L) of x given the canvas xt, the network read as its bound reads it (self_condition_input)."""
    masked = xt == mask_id
    with torch.no_grad():
        if block:
            sc = self_condition_input(lambda r: bd3_logits(model, xt, x, block, mask_id), masked)
            logits = bd3_logits(model, xt, x, block, mask_id, sc=sc)
        else:
            sc = self_condition_input(lambda r: predict_logits(model, xt, None, mask_id), masked)
            logits = predict_logits(model, xt, None, mask_id, sc=sc)
    return -logits.double().log_softmax(-1).gather(-1, x[..., None]).squeeze(-1)


def _continuous_nelbo(model, x, block, mask_id):
    """The continuous-time NELBO (B,) nats/token exactly: each k-subset of a block's S tokens weighs 1 / (k C(S, k))."""
    B, L = x.shape
    S, total = block or L, torch.zeros(B, dtype=torch.float64)
    for k in range(1, S + 1):
        for sub in itertools.combinations(range(S), k):
            masked = torch.zeros(B, L, dtype=torch.bool)
            masked[:, [j + b for b in range(0, L, S) for j in sub]] = True
            ce = _bound_ce(model, torch.where(masked, mask_id, x), x, block, mask_id)
            total += (ce * masked).sum(1) / (k * math.comb(S, k))
    return total / L


@pytest.mark.parametrize("block", [0, 3], ids=["mdlm", "bd3"])
def test_random_orders_estimate_a_self_conditioned_networks_bound_read_as_the_bound_reads_it(block):
    """The random order's figure (bound reading) is the exact NELBO within its se; the sampler's reading is not."""
    L, M, R = 6, 8, 256  # 4 windows x 256 random orders each
    model = _self_conditioned(L)
    x = torch.randint(0, M, (4, L), generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(2)
    if block:  # the bound's CE at a mask it drew (self_cond=1.0: what bd3.bound and diffusion.bound pass)
        drawn = bd3_drawn(x, block, Schedule(20), g, t=torch.tensor([[5, 12], [19, 2], [9, 9], [15, 7]]), share=1.0)
        _, _, aux = bd3_loss(model, x, Schedule(20), M, block, drawn, LossOptions(self_cond=1.0))
    else:
        _, _, aux = diffusion_loss(model, x, Schedule(20), M, LossOptions(self_cond=1.0), g,
                                   t=torch.tensor([5, 12, 19, 9]))
    masked = aux["masked"]
    torch.testing.assert_close(_bound_ce(model, torch.where(masked, M, x), x, block, M) * masked,
                               aux["ce"].double() * masked, rtol=1e-5, atol=1e-6)
    exact = _continuous_nelbo(model, x, block, M)  # (4,)
    xr = x.repeat_interleave(R, 0)
    logits_of, _ = (order_nll.bd3_pass(model, SimpleNamespace(bd3_block=block), xr, M) if block else
                    order_nll.mdlm_pass(model, None, xr, M))
    perm = order_nll.order_positions("random", len(xr), L, torch.Generator().manual_seed(3), block)
    gap = {}
    for read in order_nll.SC_READS:
        d = order_nll.ordered_nll(logits_of, xr, perm, M, 9, read).mean(1) - exact.repeat_interleave(R)
        gap[read] = d.mean().item(), d.std().item() / math.sqrt(len(d))
    assert abs(gap["bound"][0]) < 2 * gap["bound"][1], gap  # unbiased: within its standard error
    assert abs(gap["sampler"][0]) > 3 * gap["sampler"][1], gap  # another joint: what the old default scored


def _by_hand(path, n, read="bound"):
    """A checkpoint's left-to-right NLL per window (n,) on the script's windows, written out here."""
    model, ck = load_model(path, "cpu")
    cfg, tok = checkpoint_config(ck, "a checkpoint"), tokenizer_from_state(ck["tokenizer"])
    L, M = cfg.block_size, tok.mask_id
    val = prepare_data(cfg, tok, verbose=False)[2]
    x = fixed_windows(val[len(val) // 2:], n, L + 1)[:, 1:]  # the script's default split: test, the second half
    block = cfg.bd3_block if cfg.objective == "bd3" else 0
    S, nll, last = block or L, torch.zeros(n, L, dtype=torch.float64), torch.zeros(n, L, model.args.vocab_size)
    for k in range(S):
        xt = torch.where((torch.arange(L) % S >= k)[None], M, x)  # the first k tokens of each block visible
        if read == "bound":
            ce = _bound_ce(model, xt, x, block, M)
        else:
            with torch.no_grad():
                logits = model(xt, sc=last * (xt == M)[..., None]).float()
            logits[..., M] = float("-inf")
            last = logits.softmax(-1)
            ce = -logits.double().log_softmax(-1).gather(-1, x[..., None]).squeeze(-1)
        nll[:, k::S] = ce[:, k::S]
    return nll.mean(1)


def _check_figures(d, by_hand):
    """The JSON's l2r figures against the hand computation (to rounding), and the invariants tying the others."""
    ln2, l2r = 0.6931471805599453, d["orders"]["l2r"]
    assert l2r["nats_per_token"] == pytest.approx(by_hand.mean().item(), rel=1e-9)
    assert l2r["se"] == pytest.approx(by_hand.std().item() / math.sqrt(len(by_hand)), rel=1e-9)
    assert l2r["per_window"] == pytest.approx(by_hand.tolist(), rel=1e-9)  # what pairs two checkpoints
    for o, r in d["orders"].items():
        assert r["se"] > 0 and (o == "mixture") == (r["by_quarter"] is None)  # the mixture has no pass order
        if r["by_quarter"]:  # quarters of equal size: their mean is the figure
            assert len(r["by_quarter"]) == 4 and r["nats_per_token"] == pytest.approx(sum(r["by_quarter"]) / 4, rel=1e-9)
        assert r["bits_per_char"] == pytest.approx(r["nats_per_token"] / d["chars_per_token"] / ln2)
        if o != "l2r":  # a paired mean difference is the difference of the means
            assert r["paired_vs_l2r"][0] == pytest.approx(r["nats_per_token"] - l2r["nats_per_token"], abs=1e-9)


def test_the_script_on_tiny_checkpoints_and_its_refusals(tiny_ckpt, in_tmp, tmp_path_factory, tmp_path, capsys):
    """In a temp folder: dev/order_nll.py encodes its data into artifacts/data/ where it runs."""
    mdlm = train_tiny(tmp_path_factory, "order_mdlm", "--time_cond=none", "--self_cond", "--max_iters=10",
                      "--eval_interval=10")
    out = tmp_path / "o.json"
    code, text, err = run_cli_here(order_nll.main, [mdlm, "--orders", "l2r,random,r2l", "--n-windows", "4",
                                                    "--device", "cpu", "--json", out], capsys)
    assert code == 0, err
    d = json.loads(out.read_text())
    assert d["n_windows"] == 4 and d["objective"] == "mdlm" and list(d["orders"]) == ["l2r", "random", "r2l"]
    assert d["self_cond_read"] == "bound" and "read as the bound reads it" in text
    _check_figures(d, _by_hand(mdlm, 4))
    assert "random:" in text and "paired against l2r" in text
    code, text, err = run_cli_here(order_nll.main, [mdlm, "--orders", "l2r", "--n-windows", "4", "--device", "cpu",
                                                    "--self-cond-read", "sampler", "--json", tmp_path / "s.json"],
                                   capsys)
    assert code == 0 and "do NOT estimate the bound" in text, err
    d = json.loads((tmp_path / "s.json").read_text())
    assert d["self_cond_read"] == "sampler"
    _check_figures(d, _by_hand(mdlm, 4, "sampler"))
    bd3 = train_tiny(tmp_path_factory, "order_bd3", "--objective=bd3", "--bd3_block=4", "--self_cond", "--max_iters=10",
                     "--eval_interval=10")
    code, text, err = run_cli_here(order_nll.main, [bd3, "--orders", "l2r,random,mixture", "--n-windows", "4", "--device",
                                                    "cpu", "--json", tmp_path / "b.json"], capsys)
    assert code == 0 and "in each block of 4 (4 passes a window)" in text and "exact" in text, err
    d = json.loads((tmp_path / "b.json").read_text())
    assert d["objective"] == "bd3" and d["block"] == 4
    _check_figures(d, _by_hand(bd3, 4))
    model, ck = load_model(bd3, "cpu")  # the mixture against the 24 orders taken one by one on the script's windows
    cfg, tok = checkpoint_config(ck, "a checkpoint"), tokenizer_from_state(ck["tokenizer"])
    val = prepare_data(cfg, tok, verbose=False)[2]
    x = fixed_windows(val[len(val) // 2:], 4, cfg.block_size + 1)[:, 1:]
    logits_of, _ = order_nll.bd3_pass(model, cfg, x, tok.mask_id)
    want = _mixture_by_enumeration(logits_of, x, 4, "bound", tok.mask_id, model.args.vocab_size)[0].sum(1)
    want = want / cfg.block_size
    assert d["orders"]["mixture"]["per_window"] == pytest.approx(want.tolist(), rel=1e-6)
    ar = train_tiny(tmp_path_factory, "order_ar", "--objective=ar", "--max_iters=10", "--eval_interval=10")
    for argv, words in (([tiny_ckpt], ("time_cond=learned", "--time_cond=none")), ([ar], ("ar model", "bd3")),
                        ([mdlm, "--orders", "mixture", "--self-cond-read", "sampler"],
                         ("--orders mixture", "--self-cond-read sampler")),
                        ([mdlm, "--orders", "l2r", "--semi-ar-length", "2"], ("--orders mixture",)),
                        ([mdlm, "--orders", "mixture", "--semi-ar-length", "5"], ("divisor", "--semi-ar-length 5")),
                        ([bd3, "--orders", "mixture", "--semi-ar-length", "2"], ("bd3 has its blocks",)),
                        ([bd3, "--orders", "mixture", "--mixture-k", "4"], ("--mixture-k 4", "exactly"))):
        code, _, err = run_cli_here(order_nll.main, [*argv, "--device", "cpu"], capsys)
        assert_one_line_error(code, err, *words)
    code, text, err = run_cli_here(order_nll.main, [mdlm, "--orders", "mixture", "--mixture-k", "2", "--n-windows", "2",
                                                    "--device", "cpu", "--json", tmp_path / "k.json"], capsys)
    assert code == 0 and "a bound over 2 random orders" in text, err
    assert json.loads((tmp_path / "k.json").read_text())["mixture_k"] == 2
    code, text, err = run_cli_here(order_nll.main, [mdlm, "--orders", "mixture", "--semi-ar-length", "4", "--n-windows",
                                                    "2", "--device", "cpu", "--json", tmp_path / "m.json"], capsys)
    assert code == 0 and "exact, semi-autoregressive blocks of 4" in text, err
    assert json.loads((tmp_path / "m.json").read_text())["semi_ar_length"] == 4


def test_the_causal_order_is_the_ar_network_of_the_same_weights_read_as_the_ar_reads_a_window():
    """--orders causal: each of the window's last L tokens scored by the causal network of the same weights."""
    torch.manual_seed(0)
    a = dict(vocab_size=9, block_size=12, n_layer=2, n_head=2, n_embd=16, time_cond="none")
    bidir, causal = Transformer(ModelArgs(**a)).eval(), Transformer(ModelArgs(**a, causal=True)).eval()
    causal.load_state_dict(bidir.state_dict())
    w = torch.randint(0, 8, (3, 13), generator=torch.Generator().manual_seed(2))  # windows of L + 1, [MASK] = 8
    logits = causal(w[:, :-1]).double()
    logits[..., 8] = float("-inf")
    expect = -torch.log_softmax(logits, -1).gather(-1, w[:, 1:, None]).squeeze(-1)
    got = order_nll.causal_nll(bidir, w, 8)
    assert got.shape == (3, 12) and torch.allclose(got, expect, atol=1e-5, rtol=0)
    w2 = w.clone()
    w2[:, -1] = (w2[:, -1] + 1) % 8  # the last token is only a target: every earlier score stays
    assert torch.allclose(order_nll.causal_nll(bidir, w2, 8)[:, :-1], got[:, :-1], atol=1e-6, rtol=0)
