"""Uniform-state diffusion (uniform.py) against brute force, closed forms and invariants, and its wiring.
OMP_NUM_THREADS=1 python -m pytest -q tests/test_uniform.py"""
import itertools
import math
from dataclasses import replace

import pytest
import torch

from diffusion import Schedule
from config import Config
from helpers import Tok, real_text, script
from diffusion import SamplerOptions
from utils.draws import Law
from uniform import (bound_terms, compact, prior_kl, real_ids, reverse_log_probs, sample_uniform, uniform_corrupt,
                     uniform_loss)

pytestmark = pytest.mark.core  # the core tier (pytest.ini): the maths, the loop, the samplers


class Sched:
    """A hand-made schedule (alpha(T) may be > 0, which Schedule never gives): exercises the prior term."""

    def __init__(self, alpha):
        self.alpha = torch.tensor(alpha, dtype=torch.float64)
        self.T = len(alpha) - 1

    def on(self, device):  # as Schedule.on: (alpha, weight) on the device; uniform's maths reads alpha only
        return self.alpha.to(device), None


class TableModel(torch.nn.Module):
    """Logits are a free table indexed by (t, the whole of x_t): any reverse model at all on a toy space.
    The [MASK] column (id mask_id) gets a big logit that the uniform code must ignore."""

    def __init__(self, T, L, vocab_size, mask_id, seed=0):
        super().__init__()
        self.args = type("A", (), {"block_size": L, "vocab_size": vocab_size})()
        g = torch.Generator().manual_seed(seed)
        self.table = torch.nn.Parameter(2 * torch.randn(T + 1, vocab_size ** L, L, vocab_size, generator=g))
        self.mask_id, self.V = mask_id, vocab_size

    def forward(self, idx, t=None, **kw):
        j = (idx * self.V ** torch.arange(idx.size(1))).sum(1)  # joint state of x_t
        out = self.table[t, j].clone()
        out[..., self.mask_id] = 30.0
        return out


class PosteriorModel(torch.nn.Module):
    """pi(x0 | x_t) = the exact posterior of iid tokens drawn from p_data, per position: the optimal model."""

    def __init__(self, p_data, schedule, mask_id, block_size=64):
        super().__init__()
        self.p, self.s, self.mask_id = torch.tensor(p_data, dtype=torch.float64), schedule, mask_id
        self.real = real_ids(len(p_data) + 1, mask_id)
        self.args = type("A", (), {"block_size": block_size, "vocab_size": len(p_data) + 1})()

    def forward(self, idx, t=None, **kw):
        V, a = len(self.p), self.s.alpha[t][:, None, None]  # (B, 1, 1)
        xt = compact(idx, self.real)
        lik = (1 - a) / V + a * torch.nn.functional.one_hot(xt, V).double()  # q(x_t | x0 = j), (B, L, V)
        out = torch.full((*idx.shape, V + 1), -5.0, dtype=torch.float64)
        out[..., self.real] = (self.p * lik).log()
        return out.float()


def brute_force_nelbo(model, x0, sched, V, mask_id):
    """-ELBO by enumerating every trajectory x_1..x_T of the joint (all positions) Markov chain, with the
    reverse kernels built from explicit transition matrices and Bayes: nothing shared with uniform.py."""
    T, L = sched.T, len(x0)
    real = [i for i in range(V + 1) if i != mask_id]
    eye, ones = torch.eye(V, dtype=torch.float64), torch.ones(V, V, dtype=torch.float64) / V
    step = [None] + [(sched.alpha[t] / sched.alpha[t - 1]) * eye + (1 - sched.alpha[t] / sched.alpha[t - 1]) * ones
                     for t in range(1, T + 1)]  # M_t[i, j] = q(x_t = j | x_{t-1} = i), one position
    cum = [eye]
    for t in range(1, T + 1):
        cum.append(cum[-1] @ step[t])  # q(x_t | x0) as a product of steps
    states = list(itertools.product(range(V), repeat=L))  # compact ids

    def reverse(t, xt):  # p(x_{t-1} = y | x_t) for every joint y: product over positions of mixtures
        ids = torch.tensor([[real[v] for v in xt]])
        pi = model(ids, torch.tensor([t]))[0][:, real].double().softmax(-1)  # (L, V)
        per_pos = []
        for i in range(L):
            post = torch.stack([step[t][:, xt[i]] * cum[t - 1][x, :] / cum[t][x, xt[i]] for x in range(V)])  # (x0, y)
            per_pos.append(pi[i] @ post)
        return {y: math.prod(per_pos[i][y[i]].item() for i in range(L)) for y in states}

    rev = {(t, xt): reverse(t, xt) for t in range(1, T + 1) for xt in states}
    total = 0.0
    for traj in itertools.product(states, repeat=T):  # x_1, ..., x_T
        path = [tuple(x0)] + list(traj)
        log_q = sum(math.log(step[t][path[t - 1][i], path[t][i]].item()) for t in range(1, T + 1) for i in range(L))
        log_p = -L * math.log(V) + sum(math.log(rev[(t, path[t])][path[t - 1]]) for t in range(1, T + 1))
        total += math.exp(log_q) * (log_q - log_p)
    return total


def exact_nelbo(model, x0, sched, V, mask_id):
    """Our closed-form terms, with the expectation over x_t done by enumeration: summed over positions, nats."""
    L = len(x0)
    real = real_ids(V + 1, mask_id)
    states = torch.tensor(list(itertools.product(real.tolist(), repeat=L)))  # (V^L, L) every x_t
    x0c = compact(torch.tensor(x0)[None].expand(len(states), -1), real)
    total = L * prior_kl(sched, V)
    for t in range(1, sched.T + 1):
        tt = torch.full((len(states),), t)
        logits = model(states, tt).index_select(-1, real)
        terms = bound_terms(logits, x0c, compact(states, real), tt, sched).sum(1)  # (V^L,)
        a = sched.alpha[t].item()
        same = (states == torch.tensor(x0)).double()
        q = ((a + (1 - a) / V) ** same * ((1 - a) / V) ** (1 - same)).prod(1)  # q(x_t | x0), product over positions
        total += (q * terms).sum().item()
    return total


@pytest.mark.parametrize("mask_id", [3, 1])  # char puts [MASK] last; BPE at id 1
@pytest.mark.parametrize("alpha", [[1.0, 0.8, 0.3, 0.0], [1.0, 0.9, 0.5, 0.2]])
def test_nelbo_equals_brute_force_enumeration(mask_id, alpha):
    sched, V, L = Sched(alpha), 3, 2
    model = TableModel(sched.T, L, V + 1, mask_id)
    for x0 in ([0, 2], [1, 1]):
        x0_ids = [real_ids(V + 1, mask_id)[v].item() for v in x0]
        ours = exact_nelbo(model, x0_ids, sched, V, mask_id)
        assert ours == pytest.approx(brute_force_nelbo(model, x0, sched, V, mask_id), rel=1e-9)


def test_prior_term_by_hand():
    a, V = 0.2, 3
    hit, miss = a + (1 - a) / V, (1 - a) / V
    assert prior_kl(Sched([1.0, 0.5, a]), V) == pytest.approx(hit * math.log(hit * V) + 2 * miss * math.log(miss * V))
    assert prior_kl(Schedule(100), 65) == 0.0


def test_estimator_is_unbiased_for_the_exact_nelbo():
    sched, V, L, mask_id = Sched([1.0, 0.8, 0.3, 0.0]), 3, 2, 3
    model = TableModel(sched.T, L, V + 1, mask_id, seed=1)
    x0 = [2, 0]
    exact = exact_nelbo(model, x0, sched, V, mask_id) / L
    g = torch.Generator().manual_seed(0)
    est = torch.cat([uniform_loss(model, torch.tensor([x0] * 3000), sched, mask_id, g)[1] for _ in range(4)]).double()
    se = est.std().item() / math.sqrt(len(est))
    assert abs(est.mean().item() - exact) < 4 * se, (est.mean().item(), exact, se)


@pytest.mark.parametrize("T", [4, 100])
def test_bound_is_tight_under_the_exact_posterior(T):
    """L = 1, pi = the true p(x0 | x_t): every reverse step is exact, so the bound is -log p_data(x0) itself."""
    p_data, mask_id = [0.6, 0.3, 0.1], 3
    sched = Schedule(T)
    model = PosteriorModel(p_data, sched, mask_id)
    for x0 in range(3):
        assert exact_nelbo(model, [x0], sched, 3, mask_id) == pytest.approx(-math.log(p_data[x0]), abs=1e-5)
    # and the stochastic estimator averages to the exact NLL of the data (the entropy of p_data)
    g = torch.Generator().manual_seed(0)
    x0 = torch.multinomial(torch.tensor(p_data), 4000 * 8, replacement=True, generator=g).view(4000, 8)
    est = uniform_loss(model, x0, sched, mask_id, g)[1].double()
    exact = -torch.tensor(p_data).log()[x0].double().mean(1)
    d = est - exact
    assert abs(d.mean().item()) < 4 * d.std().item() / math.sqrt(len(d)) + 1e-6


@pytest.mark.parametrize("t", [1, 2, 37, 100])
def test_forward_marginal_matches_the_schedule(t):
    sched, mask_id = Schedule(100), 1
    real = real_ids(6, mask_id)  # 5 real tokens around a [MASK] at id 1
    V = len(real)
    g = torch.Generator().manual_seed(t)
    x0 = real[torch.randint(0, V, (200, 500), generator=g)]
    xt = uniform_corrupt(x0, torch.full((200,), t), sched, real, g)
    assert not (xt == mask_id).any()
    a = sched.alpha[t].item()
    p = a + (1 - a) / V
    kept = (xt == x0).double().mean().item()
    assert kept == pytest.approx(p, abs=4 * math.sqrt(p * (1 - p) / x0.numel()) + 1e-12)
    changed = xt[xt != x0]  # replacements are uniform over the other real tokens
    counts = torch.bincount(compact(changed, real), minlength=V).double()
    expect = counts.sum() / V
    assert (((counts - expect) ** 2 / expect).sum().item()) < 20.5  # chi-square, 4 dof, p = 0.0004


def test_reverse_step_is_the_bayes_mixture():
    V, g = 4, torch.Generator().manual_seed(0)
    logp0 = torch.randn(5, 3, V, generator=g, dtype=torch.float64).log_softmax(-1)
    xt = torch.randint(0, V, (5, 3), generator=g)
    a_s, a_t = torch.rand(5, generator=g, dtype=torch.float64) * 0.5 + 0.5, torch.rand(5, generator=g, dtype=torch.float64) * 0.5
    out = reverse_log_probs(logp0, xt, a_s, a_t, V).exp()
    assert torch.allclose(out.sum(-1), torch.ones(5, 3, dtype=torch.float64))
    for b, i in itertools.product(range(5), range(3)):
        eye, u = torch.eye(V, dtype=torch.float64), torch.full((V, V), 1.0 / V, dtype=torch.float64)
        step = (a_t[b] / a_s[b]) * eye + (1 - a_t[b] / a_s[b]) * u  # q(x_t | x_s)
        prior = a_s[b] * eye + (1 - a_s[b]) * u  # q(x_s | x0), rows x0
        post = prior * step[:, xt[b, i]][None, :]
        post = post / post.sum(1, keepdim=True)  # q(x_s | x_t, x0), rows x0
        assert torch.allclose(out[b, i], logp0[b, i].exp() @ post, atol=1e-12)
    at_zero = reverse_log_probs(logp0, xt, torch.ones(5, dtype=torch.float64), a_t, V)  # s = 0: p is pi itself
    assert torch.allclose(at_zero, logp0, atol=1e-12)


def test_gradients_stay_finite_at_both_ends():
    sched = Schedule(10)
    model = TableModel(10, 2, 4, 3)
    x0 = torch.tensor([[0, 2]] * 4)
    loss, nelbo, _ = uniform_loss(model, x0, sched, 3, torch.Generator().manual_seed(0), t=torch.tensor([1, 2, 9, 10]))
    loss.backward()
    assert torch.isfinite(nelbo).all() and torch.isfinite(model.table.grad).all()
    assert model.table.grad[..., 3].abs().max() == 0  # the [MASK] logit takes no part


def _canvas(B=3, L=24, mask_id=1, V=6):
    g = torch.Generator().manual_seed(5)
    real = real_ids(V, mask_id)
    x = real[torch.randint(0, len(real), (B, L), generator=g)]
    gm = torch.zeros(B, L, dtype=torch.bool)
    gm[:, 5:] = True
    gm[1, 12:16] = False  # an infill island inside the generated region
    return x, gm


@pytest.mark.parametrize("temperature,top_k", [(1.0, 0), (0.0, 0), (0.8, 2)])
def test_sampler_keeps_fixed_text_and_never_emits_mask(temperature, top_k):
    model = PosteriorModel([0.4, 0.3, 0.2, 0.1, 0.0 + 1e-9], Schedule(20), mask_id=1)
    x, gm = _canvas()
    seen = []

    def on_step(info):
        assert torch.equal(info.x[~gm], x[~gm])
        assert not (info.x == 1).any()
        seen.append(info.revealed.sum().item())

    out, stats = sample_uniform(model, x.clone(), gm, Schedule(20), 1, SamplerOptions(8, Law(temperature, top_k)),
                                generator=torch.Generator().manual_seed(0), on_step=on_step)
    assert torch.equal(out[~gm], x[~gm]) and not (out == 1).any()
    assert stats["nfe"] == 8 and len(seen) == 8 and sum(seen) > 0  # positions do change between steps


@pytest.mark.parametrize("steps", [1, 3, 20])
def test_sampler_draws_the_data_distribution_under_the_exact_posterior(steps):
    """With pi the exact posterior every ancestral step t -> s is the true reverse step, for any grid: the
    samples are p_data whatever the step count (steps = 1 draws from pi(x0 | x_T) = p_data directly)."""
    p_data, sched = [0.5, 0.3, 0.15, 0.05], Schedule(20)
    model = PosteriorModel(p_data, sched, mask_id=4)
    x = torch.zeros(500, 16, dtype=torch.long)
    out, _ = sample_uniform(model, x, torch.ones_like(x, dtype=torch.bool), sched, 4, SamplerOptions(steps),
                            generator=torch.Generator().manual_seed(steps))
    counts = torch.bincount(out.flatten(), minlength=5).double()
    assert counts[4] == 0
    expect = torch.tensor(p_data, dtype=torch.float64) * out.numel()
    assert ((counts[:4] - expect) ** 2 / expect).sum().item() < 16.27  # chi-square, 3 dof, p = 0.001


class InputModel(torch.nn.Module):
    """Logits that depend on the tokens and on t, so that the reverse path matters."""

    def __init__(self, V=6):
        super().__init__()
        self.emb = torch.nn.Embedding(V, V)
        self.args = type("A", (), {"block_size": 64, "vocab_size": V})()

    def forward(self, idx, t=None, **kw):
        return self.emb(idx) + self.emb(idx.roll(1, 1)) + 0.1 * t[:, None, None]


def test_sampler_is_deterministic_for_a_seed():
    torch.manual_seed(0)
    model = InputModel()
    x, gm = _canvas()
    run = lambda seed: sample_uniform(model, x.clone(), gm, Schedule(20), 1, SamplerOptions(10),
                                      generator=torch.Generator().manual_seed(seed))[0]
    assert torch.equal(run(1), run(1)) and not torch.equal(run(1), run(2))


# ---- wiring: config, train.py, inference.py, scripts/eval.py

TINY_U = ["--objective=uniform", "--n_layer=1", "--n_head=2", "--n_embd=32", "--block_size=32", "--batch_size=8",
          "--diffusion_steps=20", "--steps=5", "--gen_len=16", "--eval_iters=2", "--device=cpu", "--learning_rate=3e-3",
          "--warmup_iters=5", "--log_interval=20"]


@pytest.mark.parametrize("flag", ["--loss_type=masked_ce", "--threshold=0.9", "--semi_ar_length=8", "--steps=50"])
def test_config_refuses_masked_only_options(flag):
    from configurator import get_config
    from utils.errors import UserError
    with pytest.raises(UserError):
        get_config(TINY_U + [flag])


def test_train_samples_traces_and_evaluates(in_tmp, capsys):
    import json
    import train
    video = in_tmp / "trace.mp4"
    train.main([f"--data_path={real_text()}", "--out_dir=out", "--max_iters=60", "--eval_interval=30",
                f"--viz_video={video}", "--prompt=a", *TINY_U])
    out = capsys.readouterr().out
    evals = [float(line.split("dev bound ")[1].split()[0]) for line in out.splitlines() if line.startswith("eval ")]
    assert len(evals) == 2 and evals[1] < evals[0] < 20  # it learns; the bound is finite
    assert "reconstruction accuracy (fraction of positions the noise changed whose" in out and "trace: 6 frames" in out
    assert (in_tmp / "trace.gif").is_file()
    script("eval").main(["out/model.pt", "--n-windows", "4", "--n-t", "2", "--n-samples", "2", "--steps", "4",
             "--device", "cpu", "--data-path", str(real_text()), "--json", "eval.json"])
    row = json.loads((in_tmp / "eval.json").read_text())["runs"][0]
    assert row["objective"] == "uniform" and row["n_windows"] == 4 and row["n_t"] == 2
    # eval.py's figure is the trained network's bound on its 4 windows, recomputed here (same windows, times, noise)
    from checkpoint_manager import checkpoint_config
    from checkpoint_manager import load_model
    from evals.bound import evaluate
    from utils.dataloader import fixed_windows, prepare_data
    from utils.tokenizer import tokenizer_from_state
    model, ck = load_model(in_tmp / "out" / "model.pt", "cpu")
    cfg, tok = checkpoint_config(ck, "a checkpoint"), tokenizer_from_state(ck["tokenizer"])
    val = prepare_data(cfg, tok, verbose=False)[2]
    windows = fixed_windows(val[len(val) // 2:], 4, cfg.block_size + 1)  # eval.py's default split: test, the second half
    res = evaluate(model, windows, replace(cfg, batch_size=32), tok, n_t=2, seed=0,
                   chars_per_token=row["chars_per_token"])
    assert row["nats_per_token"] == pytest.approx(res["nats_per_token"], rel=1e-9)
    assert row["se"] == pytest.approx(res["se"], rel=1e-9)
    assert row["bits_per_char"] == pytest.approx(row["nats_per_token"] / row["chars_per_token"] / math.log(2))
    # dev/infill.py over 2 spans of 4 tokens: whole tokens right out of 8, whole spans out of 2; a span right is
    # 4 tokens right
    capsys.readouterr()
    script("dev/infill").main(["out/model.pt", "--span", "4", "--n-infill", "2", "--steps", "4"])
    line = capsys.readouterr().out.strip().splitlines()[-1]
    exact, acc = float(line.split("exact ")[1].split(",")[0]), float(line.split("tokens right ")[1])
    assert "2 spans of 4 tokens (test)" in line and (8 * acc).is_integer() and (2 * exact).is_integer()
    assert acc >= exact
    assert 0 < row["change_rate"] < 1  # uniform noise revisits positions: tokens change between steps


def test_uniform_run_resumes_exactly(tmp_path):
    """The uniform noise is drawn from the same keyed per-step generator as the masks, so 20 steps + --resume
    to 40 equal 40 uninterrupted steps bit for bit (losses, evals and weights)."""
    from helpers import rows, run_here, train_args
    from utils.checkpoint import load_checkpoint
    common = ["--objective=uniform", "--eval_interval=10", "--log_interval=5", "--min_lr=3e-3"]  # flat LR: no max_iters in it
    run_here(train_args(tmp_path / "full", *common, "--max_iters=40"), tmp_path, threads=1)
    run_here(train_args(tmp_path / "cut", *common, "--max_iters=20"), tmp_path, threads=1)
    run_here(train_args(tmp_path / "cut", *common, "--max_iters=40", "--resume"), tmp_path, threads=1)
    keys = ("kind", "iter", "loss", "lr", "nats_per_token")
    strip = lambda d: [{k: r.get(k) for k in keys} for r in rows(d) if not (r["kind"] == "eval" and r["iter"] == 20)]
    assert strip(tmp_path / "cut") == strip(tmp_path / "full")  # (the cut run's final eval at 20 used 4 t, not 1)
    a, b = load_checkpoint(tmp_path / "full" / "model.pt")["model"], load_checkpoint(tmp_path / "cut" / "model.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
