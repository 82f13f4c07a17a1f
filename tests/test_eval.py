"""scripts/eval.py and dev/plot.py end to end; the bound's ±, gen-PPL, sample scores and infill recovery by hand;
adaLN-Zero. python -m pytest -q tests/test_eval.py"""
import json
import math

import pytest
import torch

from config import Config
from conftest import train_tiny
from helpers import ConstModel, Tok, real_text, script as _script
from diffusion import SamplerOptions
from evals.bound import evaluate
from dev.infill import infill_recovery, span_starts
from evals.metrics import ar_nll, distinct_n, gen_ppl, ngram_js, sample_entropy
from evals.samples import held_out_windows, score
from model import ModelArgs, Transformer
from utils.checkpoint import load_checkpoint, save_checkpoint
from utils.tokenizer import CharTokenizer


def _train(tmp_path_factory, name, *extra):
    return train_tiny(tmp_path_factory, name, "--max_iters=40", "--eval_interval=20", "--min_lr=3e-5",
                      "--warmup_iters=10", "--gen_len=16", "--log_interval=10", "--eval_iters=2", *extra)


@pytest.fixture(scope="module")
def ar_ckpt(tmp_path_factory):
    return _train(tmp_path_factory, "tiny_ar", "--objective=ar")


@pytest.fixture(scope="module")
def adaln_ckpt(tmp_path_factory):
    return _train(tmp_path_factory, "tiny_adaln", "--time_cond=adaln", "--schedule=linear")


def test_samples_come_from_each_checkpoints_own_sampler_unless_a_flag_says(adaln_ckpt, tmp_path):
    """eval.py samples with each checkpoint's own sampler, a flag given replacing one setting; the table names it."""
    ev = _script("eval")
    ck = load_checkpoint(adaln_ckpt)
    ck["config"].update(order="random", remask="remdm", remask_eta=0.05, steps=12, temperature=0.9)
    own = tmp_path / "own.pt"
    save_checkpoint(own, ck)
    run = ev.load_run(str(own), ev.parse_args([str(own), "--n-samples", "2"]), torch.device("cpu"))
    s = run["scfg"]
    assert (s.order, s.remask, s.remask_eta, s.steps, s.temperature) == ("random", "remdm", 0.05, 12, 0.9)
    own_sampler = run["obj"].describe(run["cfg"], SamplerOptions.from_config(run["cfg"]))
    assert run["obj"].describe(s, run["opts"]) == own_sampler  # the table names the sampler it ran
    argv = [str(own), "--n-samples", "2", "--order", "confidence", "--remask", "none"]
    s = ev.load_run(str(own), ev.parse_args(argv), torch.device("cpu"), {"--order", "--remask"})["scfg"]
    assert (s.order, s.remask, s.steps, s.temperature) == ("confidence", "none", 12, 0.9)


def test_eval_table_json_and_plots_end_to_end(adaln_ckpt, ar_ckpt, in_tmp, capsys):
    ev = _script("eval")
    out = in_tmp / "eval.json"
    args = [str(adaln_ckpt), str(ar_ckpt), "--ar-checkpoint", str(ar_ckpt), "--n-windows", "4", "--n-t", "2",
            "--n-samples", "2", "--gen-len", "24", "--steps", "5", "--device", "cpu",
            "--json", str(out)]
    ev.main(args)
    text = capsys.readouterr().out
    for label in ("objective", "params", "tokens seen", "test NLL/bound (nats/char)", "the same in bits/char", "(nats/token)", "perplexity",
                  "masked recon accuracy", "entropy by t", "reverse-step change rate", "distinct-2", "distinct-3",
                  f"gen-PPL (per token; judge {ar_ckpt.parent.name}/model.pt)"):
        assert label in text, label
    ppl = next(l for l in text.splitlines() if l.startswith("gen-PPL"))
    assert "self-scored" not in ppl.split("|")[1] and "self-scored" in ppl.split("|")[2]  # the judge scoring itself
    assert "40,960" in text  # tokens seen: 40 iters x 16 x 64 x 1 rank
    recon = next(l for l in text.splitlines() if l.startswith("masked recon accuracy"))
    assert recon.split("|")[2].strip() == "n/a" and recon.split("|")[1].strip() != "n/a"  # AR column: n/a
    d = json.loads(out.read_text())
    dm, ar = d["runs"]
    assert (dm["objective"], ar["objective"]) == ("mdlm", "ar") and dm["time_cond"] == "adaln"
    assert ar["time_cond"] == "none"  # what the network has (the AR fixes it), not the config's unread value
    assert d["precision"] == dm["precision"] == "float32" and "cpu, float32 forward passes" in text  # what scored it
    assert dm["n_t"] == 2 and dm["n_windows"] == 4 and dm["bits_per_char"] > 0 and dm["bpc_se"] > 0
    assert ar["bits_per_char"] == pytest.approx(ar["nats_per_token"] / math.log(2))  # char tokenizer: 1 char/token
    assert (dm["self_scored"], ar["self_scored"]) == (False, True) and dm["judge"] == str(ar_ckpt)
    assert dm["gen_ppl"] > 1 and ar["gen_ppl"] > 1
    assert len(dm["entropy_by_t"]) == 10
    # the second run minus the first, window by window, by hand (char tokenizer: nats/token = nats/char)
    diff = [b - a for a, b in zip(dm["per_window"], ar["per_window"])]
    mean = sum(diff) / 4
    se = math.sqrt(sum((v - mean) ** 2 for v in diff) / 3 / 4)
    assert ar["paired_vs_first"] == pytest.approx([mean, se], rel=1e-9) and "paired_vs_first" not in dm
    row = next(l for l in text.splitlines() if "minus the first run's, paired" in l).split("|")
    assert row[1].strip() == "-" and row[2].strip() == f"{mean:+.4f} ± {se:.4f}"
    plot = _script("dev/plot")
    from PIL import Image
    for what, inputs in (("curves", [adaln_ckpt.parent, ar_ckpt.parent]), ("entropy", [out])):
        png = in_tmp / "plots" / f"{what}.png"
        plot.main([what, *map(str, inputs), "--out", str(png)])
        with Image.open(png) as im:
            assert im.format == "PNG" and im.size[0] > 500


def test_a_scorer_whose_vocabulary_has_the_size_but_other_ids_is_refused(adaln_ckpt, ar_ckpt, tmp_path,
                                                                         monkeypatch, capsys):
    """Compared by size, such a judge scored gen-PPL on other characters (the mutant scorer-tokenizer-by-size)."""
    from helpers import run_cli_here
    ck = load_checkpoint(ar_ckpt)
    ck["tokenizer"] = dict(ck["tokenizer"], chars=ck["tokenizer"]["chars"][::-1])  # same size, other ids
    other = tmp_path / "other_ar.pt"
    save_checkpoint(other, ck)
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli_here(_script("eval").main, [adaln_ckpt, "--ar-checkpoint", other, "--steps", "20",
                                                        "--device", "cpu"], capsys)
    assert code == 2 and "differs from the scorer" in err and err.count("\n") == 1, err


def ConstAR(probs, block_size=32):
    """The same next-token distribution after every prefix."""
    return ConstModel(torch.tensor(probs).log().tolist(), block_size)


class Bigram(torch.nn.Module):
    """p(next = cur + 1 mod V | cur) = 0.9: catches an off-by-one between logits and targets."""

    def __init__(self, V=5):
        super().__init__()
        self.V, self.args = V, ModelArgs(vocab_size=V, block_size=32)

    def forward(self, idx, t=None, **kw):
        p = torch.full((*idx.shape, self.V), 0.1 / (self.V - 1))
        p.scatter_(-1, ((idx + 1) % self.V)[..., None], 0.9)
        return p.log()


def test_gen_ppl_equals_the_hand_computation():
    model = ConstAR([0.5, 0.25, 0.25])
    seqs = torch.tensor([[2, 2, 0, 1, 1, 0], [0, 1, 0, 0, 2, 2]])  # first 2 tokens are the prompt
    scored = [0, 1, 1, 0, 0, 0, 2, 2]
    nll = -sum(math.log([0.5, 0.25, 0.25][k]) for k in scored) / len(scored)
    ppl, mean = gen_ppl(model, seqs, n_prompt=2, batch_size=1)
    assert mean == pytest.approx(nll, rel=1e-6) and ppl == pytest.approx(math.exp(nll), rel=1e-6)
    assert ppl == pytest.approx(2 ** 1.5, rel=1e-6)  # 4 tokens at p=1/2, 4 at p=1/4: exp(mean) = sqrt(2 * 4)
    x = torch.tensor([[0, 1, 2, 3, 4, 0, 1]])
    assert torch.allclose(ar_nll(Bigram(), x, 1), torch.full((1, 6), -math.log(0.9)))
    x[0, 4] = 2  # one surprise: token 4 (p = 0.025 after 3), then 0 after 2 (p = 0.025)
    assert ar_nll(Bigram(), x, 1)[0, 3:5].tolist() == pytest.approx([-math.log(0.025)] * 2, rel=1e-6)


class PositionOracle(torch.nn.Module):
    """Predicts token (position mod 7) with certainty whatever it sees; [MASK] is id 7."""

    def __init__(self, const=None):
        super().__init__()
        self.const, self.args = const, ModelArgs(vocab_size=8, block_size=64)

    def forward(self, idx, t=None, **kw):
        B, L = idx.shape
        target = torch.full((B, L), self.const) if self.const is not None else (torch.arange(L) % 7).expand(B, L)
        return torch.nn.functional.one_hot(target, 8).float() * 20.0


def test_infill_recovery_on_toys_with_known_answers():
    windows = (torch.arange(40) % 7).repeat(6, 1)  # (6, 40) exactly what the oracle predicts
    cfg = Config(steps=10, temperature=0.0, diffusion_steps=10)
    opts = SamplerOptions.from_config(cfg)
    res = infill_recovery(PositionOracle(), windows, cfg, opts, 7, span=5, generator=torch.Generator().manual_seed(0))
    assert res["infill_exact"] == 1.0 and res["infill_acc"] == 1.0
    # always guessing token 0: right exactly where the held-out span holds a 0
    g = torch.Generator().manual_seed(3)
    windows = torch.randint(0, 2, (50, 40), generator=g)
    res = infill_recovery(PositionOracle(const=0), windows, cfg, opts, 7, span=3,
                          generator=torch.Generator().manual_seed(1))
    starts = span_starts(50, 40, 3, torch.Generator().manual_seed(1))
    spans = torch.stack([w[a:a + 3] for w, a in zip(windows, starts.tolist())])
    assert res["infill_acc"] == pytest.approx((spans == 0).float().mean().item())
    assert res["infill_exact"] == pytest.approx((spans == 0).all(1).float().mean().item())
    assert 0 < res["infill_exact"] < res["infill_acc"] < 1


def test_samples_are_scored_by_hand():
    """evals/samples.score reads the generated part only, its gen-PPL given the P tokens before it."""
    tok = CharTokenizer(sorted(set("\n ab")))  # ids: '\n' 0, ' ' 1, 'a' 2, 'b' 3
    probs = [0.4, 0.1, 0.2, 0.3]
    samples = torch.tensor([[2, 3, 2, 1, 3], [3, 3, 3, 3, 3]])  # 'aba b', 'bbbbb'
    s = score(samples, 1, tok, ConstAR(probs), batch_size=1, reference="ba ab")
    texts = ["ba b", "bbbb"]
    assert s["sample_text"] == "ba b" and s["distinct_2"] == distinct_n(texts, 2) and s["distinct_3"] == 0.0
    assert s["sample_entropy"] == pytest.approx((-0.5 * math.log(0.5) - 0.5 * math.log(0.25) + 0) / 2)  # 2 b, a, " "; 4 b
    nll = lambda ids: -sum(math.log(probs[k]) for k in ids) / len(ids)  # noqa: E731
    assert s["gen_nll"] == pytest.approx(nll([3, 2, 1, 3, 3, 3, 3, 3]), rel=1e-6)
    assert s["gen_ppl"] == pytest.approx(math.exp(s["gen_nll"])) and s["js_mean"] == ngram_js(texts, "ba ab")[1]
    assert score(samples, 0, tok, ConstAR(probs))["gen_nll"] == pytest.approx(nll(samples.flatten().tolist()), rel=1e-6)
    assert "gen_ppl" not in score(samples, 1, tok) and "js" not in score(samples, 1, tok)
    assert held_out_windows(torch.arange(100), 3, 20).tolist() == [list(range(s, s + 20)) for s in (0, 39, 79)]
    assert sample_entropy([[1, 1, 1, 1]]) == 0.0
    assert sample_entropy([[0, 1, 2, 3], [5, 5, 6, 6]]) == pytest.approx((math.log(4) + math.log(2)) / 2)


def test_mc_part_of_the_error_bar_is_conservative_but_close_and_in_the_units_of_the_bar():
    """Identical windows: the spread is Monte Carlo noise alone, which mc_se_max bounds from above."""
    model = ConstAR([0.5, 0.2, 0.3, 1e-9], block_size=32)
    x = torch.randint(0, 3, (1, 32), generator=torch.Generator().manual_seed(0)).repeat(300, 1)
    res = evaluate(model, x, Config(batch_size=100, diffusion_steps=50), Tok(3), n_t=8, seed=0, chars_per_token=4.0)
    assert 0.8 * res["se"] < res["mc_se_max"] < 1.5 * res["se"], res  # measured ratio 0.95-1.11 over seeds and schedules
    assert res["mc_bpc_max"] == pytest.approx(res["mc_se_max"] / 4.0 / math.log(2))
    assert res["bpc_se"] == pytest.approx(res["se"] / 4.0 / math.log(2))


def test_adaln_model_trains_and_its_output_depends_on_t(adaln_ckpt):
    rows = [json.loads(l) for l in open(adaln_ckpt.parent / "metrics.jsonl")]
    train = [r["loss"] for r in rows if r["kind"] == "train"]
    # zero gates at init do not stall it
    assert len(train) == 4 and max(train[2:]) < 0.9 * train[0], train
    ck = load_checkpoint(adaln_ckpt)
    model = Transformer(ModelArgs(**ck["model_args"]))
    model.load_state_dict(ck["model"])
    x = torch.randint(0, 20, (2, 64))
    assert not torch.allclose(model(x, torch.tensor([2, 2])), model(x, torch.tensor([18, 18])), atol=1e-4)


def test_adaln_zero_starts_as_identity_blocks_that_ignore_t():
    torch.manual_seed(0)
    a = dict(vocab_size=11, block_size=16, n_layer=2, n_head=2, n_embd=32, diffusion_steps=10)
    m = Transformer(ModelArgs(**a, time_cond="adaln"))
    x = torch.randint(0, 10, (2, 16))
    torch.testing.assert_close(m(x, torch.tensor([1, 1])), m(x, torch.tensor([9, 9])))
    # zero gates: logits = head(rms_norm(token embedding))
    from model import rms_norm
    torch.testing.assert_close(m(x, torch.tensor([5, 5])), m.head(rms_norm(m.tok_emb(x))))
    # flops per token do not count the once-per-sequence conditioning
    assert m.flops_per_token() == Transformer(ModelArgs(**a, time_cond="none")).flops_per_token()


def test_fixed_windows_never_overlap():
    """More windows than the split holds gives the disjoint ones it holds: the ± counts windows as independent."""
    import numpy as np
    from utils.dataloader import fixed_windows
    ids = np.arange(1000)
    for n, length in ((10, 64), (100, 64), (1000, 17), (3, 333)):
        w = fixed_windows(ids, n, length)
        assert w.shape == (min(n, 999 // length), length)
        starts = w[:, 0]
        assert (starts[1:] - starts[:-1] >= length).all() and w[-1, -1] <= 998


@pytest.mark.parametrize("objective", ["mdlm", "ar"])
def test_every_objective_scores_the_same_tokens_of_a_window(objective):
    """Windows of L + 1: each objective scores the last L: a context-free model's exact NLL (token 3 at the first)."""
    p = [0.5, 0.2, 0.3, 1e-4, 1e-9]  # id 4 is [MASK]
    model = ConstAR(p, block_size=32)
    x = torch.randint(0, 3, (64, 33), generator=torch.Generator().manual_seed(0))
    x[:, 0] = 3
    res = evaluate(model, x, Config(objective=objective, batch_size=64, diffusion_steps=50), Tok(4, 5), n_t=4, seed=0)
    exact = -torch.log(torch.tensor(p))[x[:, 1:]].mean().item()
    assert abs(res["nats_per_token"] - exact) < 4 * res["se"] + 1e-6, (res, exact)


def test_a_split_too_short_for_the_windows_asked_is_said(adaln_ckpt, in_tmp, capsys):
    """Where --n-windows asks for more windows than a short split holds, eval.py says how many it scored."""
    ev = _script("eval")
    short = in_tmp / "short.txt"
    short.write_text(real_text().read_text()[:20_000])  # test half of validation: 1,000 chars, 15 windows of 65
    ev.main([str(adaln_ckpt), "--data-path", str(short), "--val-path", "", "--n-windows", "40", "--n-t", "1",
             "--n-samples", "0", "--device", "cpu"])
    out = capsys.readouterr().out
    assert "--n-windows 40, but the test split holds 15 disjoint windows" in out
    ev.main([str(adaln_ckpt), "--data-path", str(short), "--val-path", "", "--n-windows", "15", "--n-t", "1",
             "--n-samples", "0", "--device", "cpu"])
    assert "disjoint windows" not in capsys.readouterr().out  # as many as asked: nothing to say


def test_the_table_reads_every_figure_per_character():
    """eval.py's table at 2.5 chars a token: the bound, its ±, the AR mode's, the paired difference: per char."""
    from evals.bound import summary
    ev = _script("eval")
    cpt, a, b = 2.5, [2.0, 3.0, 4.0, 7.0], [1.0, 3.0, 3.5, 4.5]
    rows = []
    for name, per_window in (("first", a), ("second", b)):
        row = summary(torch.tensor(per_window, dtype=torch.float64), [], 1, cpt)
        row.update(name=name, label="mdlm", params=1, tokens_seen=1, exact=False, chars_per_token=cpt)
        row["ar_mode"] = dict(nats_per_token=sum(per_window) / 4, se=row["se"], per_window=per_window,
                              chars_per_token=cpt)
        rows.append(row)
    ev.paired_with_first(rows)
    table = {line.split("|")[0].strip(): [c.strip() for c in line.split("|")[1:]] for line in
             ev.table(rows).splitlines() if "|" in line}
    se_a = math.sqrt(sum((v - 4.0) ** 2 for v in a) / 3 / 4)  # the mean's standard error, nats/token
    d = [(y - x) / cpt for x, y in zip(a, b)]  # the paired differences, nats/char
    d_se = math.sqrt(sum((v - sum(d) / 4) ** 2 for v in d) / 3 / 4)
    assert table["val NLL/bound (nats/char)"][0] == f"<= {4.0 / cpt:.4f} ± {se_a / cpt:.4f}"
    assert table["the same in bits/char"][0] == f"<= {4.0 / cpt / math.log(2):.4f} ± {se_a / cpt / math.log(2):.4f}"
    assert ev.ar_mode_cell(rows[0]) == f"= {4.0 / cpt:.4f} ± {se_a / cpt:.4f}"  # its row's cells, unwrapped
    assert ev.paired_cell(rows[1]) == f"{sum(d) / 4:+.4f} ± {d_se:.4f}"
