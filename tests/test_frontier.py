"""Sample frontiers (scripts/frontier.py, dev/plot_frontier.py): the grid, the n-gram Jensen-Shannon divergence
against hand computations and against repetition, and the JSON of a run on tiny checkpoints (slow).
python -m pytest -q tests/test_frontier.py"""
import contextlib
import json

import pytest
import torch

from conftest import train_tiny
from evals import samples
from config import Config
from configurator import get_config
from diffusion import SamplerOptions
from evals.metrics import char_ngrams, js_divergence, ngram_js
from helpers import MICRO, assert_one_line_error, for_objective, model_args, real_text, run_cli_here, script
from utils.errors import UserError
from objectives import OBJECTIVES

frontier = script("frontier")


def test_js_divergence_by_hand():
    # P = {a: 1/2, b: 1/2}, Q = {a: 1}: M = {a: 3/4, b: 1/4}; KL(P||M) = 1/2 log2(2/3) + 1/2 log2(2), KL(Q||M) = log2(4/3)
    want = 0.5 * (0.5 * -0.5849625007211562 + 0.5) + 0.5 * 0.4150374992788438
    assert js_divergence(char_ngrams(["ab"], 1), char_ngrams(["aa"], 1)) == pytest.approx(want, abs=1e-12)
    assert js_divergence({"x": 3}, {"x": 7}) == 0.0 and js_divergence({"x": 1}, {"y": 1}) == pytest.approx(1.0)
    assert char_ngrams(["abc", "bc"], 2) == {"ab": 1, "bc": 2}  # never across two samples
    js, mean = ngram_js(["aaaa"], "abab", ns=(1, 2))
    assert js == {1: pytest.approx(want), 2: pytest.approx(1.0)} and mean == pytest.approx((want + 1) / 2)


def test_repeating_one_character_scores_worse_than_real_text():
    text = real_text().read_text()[:200_000]
    half = len(text) // 2
    ref, other = text[:half], text[half:]
    real = [other[i * 1000:i * 1000 + 64] for i in range(16)]  # 16 samples of 64 characters of held-out text
    rep = ["e" * 64] * 16
    mixed = [s[:32] + "e" * 32 for s in real]  # half repeated: in between
    (js_real, m_real), (js_rep, m_rep), (_, m_mixed) = (ngram_js(t, ref) for t in (real, rep, mixed))
    assert all(js_rep[n] > js_real[n] for n in (1, 2, 3, 4)) and m_real < m_mixed < m_rep


def grid(*specs, flag="--grid"):
    """The grid a command line's --grid (or --ar-grid) flags give: {key: [typed values]}. (Parsing refuses a
    checkpoint path that does not exist; it reads none: this file stands in.)"""
    a = frontier.parse_args([__file__, "--ar-checkpoint", __file__, *(x for spec in specs for x in (flag, spec))])
    return a.grid_values if flag == "--grid" else a.ar_grid_values


def test_the_grid_holds_each_distinct_sampler_once():
    g = grid("remask=none,remdm", "remask_eta=0.05,0.1", "temperature=0.8,1", "steps=8")
    assert g == dict(remask=["none", "remdm"], remask_eta=[0.05, 0.1], temperature=[0.8, 1.0], steps=[8])
    cfg = get_config([*MICRO, "--remask=none"])
    pts = frontier.grid_points(g, cfg, OBJECTIVES["mdlm"])
    # remask none: eta is not read (2 temperatures); remdm: two etas (2 x 2)
    assert len(pts) == 6 and sum(s.get("remask") == "none" for s, _, _ in pts) == 2
    assert all("remask_eta" not in s for s, _, _ in pts if s["remask"] == "none")
    assert {(o.remask, o.remask_eta, o.law.temperature, o.steps) for _, _, o in pts} >= {("remdm", 0.1, 0.8, 8)}
    assert frontier.curve_label(pts[0][0]) == "remask=none, steps=8"
    # an AR checkpoint reads only temperature and top-p of it
    ar_cfg = get_config(for_objective([*MICRO, "--objective=ar"]))
    ar_pts = frontier.grid_points(grid("order=random,confidence", "temperature=0.8,1", "top_p=0.9,1", flag="--ar-grid"),
                                  ar_cfg, OBJECTIVES["ar"])
    assert [s for s, _, _ in ar_pts] == [dict(temperature=t, top_p=p) for t in (0.8, 1.0) for p in (0.9, 1.0)]
    with pytest.raises(UserError, match="steps"):  # a point the objective refuses: steps > diffusion_steps (20)
        frontier.grid_points(dict(steps=[40]), cfg, OBJECTIVES["mdlm"])
    for bad in ("epochs=3", "temperature=hot", "steps=", "bd3_speculate=maybe"):
        with pytest.raises(UserError, match="--grid"):
            grid(bad)
    # a bool key reads its words (bool('false') is True): block diffusion's two samplers, two points
    assert grid("bd3_speculate=false,on") == grid("bd3_speculate=0,true") == dict(bd3_speculate=[False, True])
    for twice in ("bd3_speculate=false,0", "temperature=0.8,0.80"):  # one point, silently, before
        with pytest.raises(UserError, match="names a value twice"):
            grid(twice)
    bd3_cfg = get_config([*MICRO, "--objective=bd3", "--bd3_ar=1"])
    assert [s for s, _, _ in frontier.grid_points(grid("bd3_speculate=false,true"), bd3_cfg, OBJECTIVES["bd3"])] == \
        [dict(bd3_speculate=False), dict(bd3_speculate=True)]
    # baby_bd3 samples its clean half's AR (--bd3_speculate): the default grid's orders are one sampler there (it
    # refused the checkpoint with "--order does not apply with --bd3_speculate"), its temperatures three
    baby_bd3 = frontier.grid_points(grid(*frontier.DEFAULT_GRID), get_config(["baby_bd3"]), OBJECTIVES["bd3"])
    assert [s for s, _, _ in baby_bd3] == [dict(temperature=t) for t in (0.8, 0.9, 1.0)]
    # a key that acts only with another, off at a point, is not that point's (config.NEEDS): top_p at argmax
    pts = frontier.grid_points(grid("temperature=0,1", "top_p=0.9,1"), cfg, OBJECTIVES["mdlm"])
    assert [s for s, _, _ in pts] == [dict(temperature=0.0), dict(temperature=1.0, top_p=0.9),
                                   dict(temperature=1.0, top_p=1.0)]


def test_a_curve_is_read_at_the_held_out_entropy_by_interpolation():
    pts = [dict(sample_entropy=e, gen_ppl=p, js_mean=j) for e, p, j in ((3.0, 30.0, 0.3), (2.0, 10.0, 0.5), (2.5, 20.0, 0.1))]
    assert frontier.at_entropy(pts, 2.75) == pytest.approx(dict(gen_ppl=25.0, js_mean=0.2))
    assert frontier.at_entropy(pts, 2.0) == pytest.approx(dict(gen_ppl=10.0, js_mean=0.5))
    assert frontier.at_entropy(pts, 3.2) is None and frontier.at_entropy(pts[:1], 3.0) is None


@pytest.fixture(scope="module")
def ar_judge(tmp_path_factory):
    return train_tiny(tmp_path_factory, "frontier_ar", "--objective=ar", "--max_iters=30", "--eval_interval=30")


def test_frontier_json_and_plot_end_to_end(tiny_ckpt, ar_judge, in_tmp, capsys):
    out = in_tmp / "f.json"
    code, text, err = run_cli_here(frontier.main, [
        tiny_ckpt, ar_judge, "--ar-checkpoint", ar_judge, "--n-samples", "4", "--gen-len", "24", "--device", "cpu",
        "--grid", "order=random", "--grid", "remask=none,remdm",
        "--grid", "steps=8,6", "--grid", "temperature=0.8,1.0",
        "--ar-grid", "temperature=0.9", "--ar-grid", "top_p=0.9,1.0", "--time-batches", "1,2", "--repeats", "1",
        "--json", out], capsys)
    assert code == 0, err
    d = json.loads(out.read_text())
    held = d["held_out"]
    assert d["threads"] == 1 and d["settings"]["time_batches"] == [1, 2]  # one thread unless --threads says more
    assert held["gen_len"] == 24 and 0 < held["sample_entropy"] and set(held["js"]) == {"1", "2", "3", "4"}
    from checkpoint_manager import checkpoint_config
    from evals.samples import held_out_windows, score
    from checkpoint_manager import load_model
    from utils.dataloader import prepare_data
    from utils.tokenizer import tokenizer_from_state
    ck = load_model(tiny_ckpt, "cpu")[1]  # the entropy every curve is read at: dev's windows (a choice reads dev)
    tok = tokenizer_from_state(ck["tokenizer"])
    val = prepare_data(checkpoint_config(ck, "a checkpoint"), tok, verbose=False)[2]
    by_hand = score(held_out_windows(val[:len(val) // 2], 4, 24), 0, tok, reference=tok.decode(val[len(val) // 2:].tolist()))
    assert held["split"] == "dev" and held["sample_entropy"] == pytest.approx(by_hand["sample_entropy"], rel=1e-12)
    assert held["js_mean"] == pytest.approx(by_hand["js_mean"], rel=1e-12)  # dev's windows against test's n-grams
    mdlm, ar = d["runs"]
    assert len(mdlm["points"]) == 8 and len(ar["points"]) == 2 and ar["exact"] and ar["self_scored"]
    assert set(mdlm["at_held_out"]) == {p["curve"] for p in mdlm["points"]}  # one reading per curve (None: not reached)
    for run in (mdlm, ar):  # each curve read by hand from its points: linear between the two that bracket the entropy
        for curve, got in run["at_held_out"].items():
            assert got == _read_by_hand([p for p in run["points"] if p["curve"] == curve], held["sample_entropy"])
    keys = {"curve", "settings", "sampler", "nfe", "temperature", "gen_len", "n_samples", "gen_ppl", "gen_nll",
            "sample_entropy", "distinct_2", "distinct_3", "js", "js_mean", "sample_text"}
    for pt in mdlm["points"] + ar["points"]:
        assert keys <= set(pt) and pt["gen_ppl"] > 1 and 0 <= pt["js_mean"] <= 1 and set(pt["js"]) == set(held["js"])
        for b in (1, 2):  # every point timed at each batch size: tokens/s = B x gen_len / its median seconds
            assert pt[f"seconds_b{b}"] > 0 and pt[f"tokens_per_s_b{b}"] == pytest.approx(b * 24 / pt[f"seconds_b{b}"])
    nfe = {(p["settings"]["remask"], p["settings"]["steps"]): p["nfe"] for p in mdlm["points"]}
    assert nfe[("none", 8)] == 8 and nfe[("none", 6)] == 6 and nfe[("remdm", 8)] == 8  # a pass a step
    assert all(p["nfe"] == 24 for p in ar["points"])  # one pass per token
    for x in ("entropy", "speed", "nfe"):  # against entropy; the curves' readings against tokens/s, NFE (if any reached it)
        code, _, err = run_cli_here(script("dev/plot_frontier").main, [out, "--x", x, "--out", in_tmp / f"{x}.png"], capsys)
        reached = any(v for r in d["runs"] for v in r["at_held_out"].values())
        assert (code, (in_tmp / f"{x}.png").exists()) == ((0, True) if x == "entropy" or reached else (2, False)), err
    code, _, err = run_cli_here(frontier.main, [tiny_ckpt, "--ar-checkpoint", tiny_ckpt, "--device", "cpu"], capsys)
    assert_one_line_error(code, err, "mdlm model")


def _read_by_hand(points, entropy):
    """A curve of one or two points read at `entropy`: linear between the two if they bracket it, else None."""
    if len(points) == 1:
        return None  # one point is no curve
    a, b = sorted(points, key=lambda p: p["sample_entropy"])
    ea, eb = a["sample_entropy"], b["sample_entropy"]
    if not ea <= entropy <= eb:
        return None
    w = (entropy - ea) / (eb - ea) if eb > ea else 0.0
    return {k: pytest.approx(a[k] + w * (b[k] - a[k]), rel=1e-12) for k in a
            if k in ("nfe", "gen_ppl", "js_mean") or k.startswith("tokens_per_s")}


def test_frontier_reads_each_curve_at_the_held_out_entropy(tiny_ckpt, ar_judge, in_tmp, capsys, monkeypatch):
    """A frontier made by hand (draw and score replaced: each point's figures set by its settings, relative to the
    real held-out entropy H) so the reading at H is known: remask=none brackets H a quarter of the way up, remdm
    stays above it (not reached), the AR's curve starts at H exactly."""
    H = {}
    made = {("none", 0.8): (-0.5, 10.0, 0.30), ("none", 1.0): (1.5, 30.0, 0.10),
            ("remdm", 0.8): (0.2, 5.0, 0.2), ("remdm", 1.0): (0.4, 6.0, 0.2),
            ("ar", 0.8): (0.0, 4.0, 0.15), ("ar", 1.0): (1.0, 8.0, 0.25)}

    # passes that change with the temperature, as --entropy_bound's do: read at H a quarter of the way up, 8 (the
    # curve's mean, 12, was printed before)
    nfes = {("none", 0.8): 4.0, ("none", 1.0): 20.0}
    real_score = frontier.score
    drawn, rounds = [], {}
    per_sample_s = {("none", 0.8): 0.1, ("none", 1.0): 0.3, ("remdm", 0.8): 0.2, ("remdm", 1.0): 0.2,
                    ("ar", 0.8): 0.05, ("ar", 1.0): 0.05}

    def key_of(cfg):
        return "ar" if cfg.objective == "ar" else cfg.remask, cfg.temperature

    def fake_draw(job, start, gen_len, n, *args, on_step=None):  # on_step: the thread count's tick
        drawn.append((key_of(job.cfg), n))
        return job.cfg, [nfes.get(key_of(job.cfg), 8.0)]  # the settings ride along as the 'samples'

    def fake_timed(fn, device):  # round k of a point at batch n takes (1, 5, 2)[k] x n x its seconds per sample
        out = fn()
        k = rounds[drawn[-1]] = rounds.get(drawn[-1], -1) + 1
        return (1.0, 5.0, 2.0)[k] * drawn[-1][1] * per_sample_s[drawn[-1][0]], out

    def fake_score(samples, P, tok, judge=None, batch_size=32, reference=None):
        if isinstance(samples, torch.Tensor):  # the held-out windows: the real figures, H read from what main computes
            s = real_score(samples, P, tok, judge, batch_size, reference)
            H["v"] = s["sample_entropy"]
            return s
        de, ppl, js = made[key_of(samples)]
        return dict(gen_ppl=ppl, sample_entropy=H["v"] + de, js_mean=js, distinct_2=0.5)

    for module in (frontier, samples):  # the scored draws, and the timed ones (evals.samples.time_draws)
        monkeypatch.setattr(module, "draw", fake_draw)
    monkeypatch.setattr(frontier, "score", fake_score)
    monkeypatch.setattr(samples, "timed", fake_timed)
    monkeypatch.setattr(samples, "columns_counted", _columns(40))
    out = in_tmp / "h.json"
    code, text, err = run_cli_here(frontier.main, [
        tiny_ckpt, ar_judge, "--ar-checkpoint", ar_judge, "--n-samples", "4", "--gen-len", "24", "--device", "cpu",
        "--grid", "order=random", "--grid", "remask=none,remdm", "--grid", "temperature=0.8,1.0", "--grid", "steps=8",
        "--ar-grid", "temperature=0.8,1.0", "--time-batches", "1,2", "--json", out], capsys)
    assert code == 0, err
    d = json.loads(out.read_text())
    assert d["held_out"]["sample_entropy"] == H["v"]
    # the timing after the figures: per batch size a warm-up and 3 rounds, each round every point of both checkpoints
    # in turn (the AR's between diffusion's rounds, never after all of them)
    points = [k for k, n in drawn[:6]]
    assert [n for _, n in drawn[:6]] == [4] * 6 and len({k[0] for k in points}) == 3
    # per batch: each point's warm-up draw and its counted one (p_cache), then 3 rounds of every point in turn
    assert drawn[6:] == [(k, b) for b in (1, 2) for k in [*(q for q in points for _ in (0, 1)), *points * 3]]
    mdlm, ar = (r["at_held_out"] for r in d["runs"])
    # tokens/s = B x 24 / (the median round, 2 x B x seconds per sample) = 12 / seconds per sample, read at H like
    # gen-PPL: a quarter of the way from 120 (T 0.8) to 40 (T 1.0) = 100; the AR's at its T 0.8 point, 240
    speed = dict(tokens_per_s_b1=100.0, tokens_per_s_b2=100.0)
    assert mdlm == {"order=random, remask=none, steps=8": pytest.approx(dict(nfe=8.0, gen_ppl=15.0, js_mean=0.25,
                                                                             **speed)),
                    "order=random, remask=remdm, steps=8": None}
    assert ar == {"default": pytest.approx(dict(nfe=8.0, gen_ppl=4.0, js_mean=0.15, tokens_per_s_b1=240.0,
                                                tokens_per_s_b2=240.0))}
    for b in (1, 2):
        assert [p[f"seconds_b{b}"] for p in d["runs"][0]["points"]] == pytest.approx([2 * b * per_sample_s[k]
                                                                                     for k in points[:4]])
    assert ("[order=random, remask=none, steps=8] (NFE 8.0): gen-PPL 15.00, JS 0.2500, 100 tokens/s at batch 1, "
            "100 tokens/s at batch 2") in text
    assert "[order=random, remask=remdm, steps=8] (NFE 8.0): not reached" in text
    plot, drawn_fig = script("dev/plot_frontier"), {}
    monkeypatch.setattr(plot, "_save", lambda plt, fig, out: drawn_fig.update(
        {ax.get_title(): sorted((ln.get_xdata()[0], ln.get_ydata()[0], ln.get_marker()) for ln in ax.get_lines())
         for ax in fig.axes}))
    code, _, err = run_cli_here(plot.main, [out, "--x", "speed", "--out", "s.png"], capsys)
    assert code == 0, err  # one marker per sampler that reaches H, at (its tokens/s there, its gen-PPL there)
    assert drawn_fig == {f"speed vs quality, batch {b}": [(pytest.approx(100.0), pytest.approx(15.0), "o"),
                                                          (pytest.approx(240.0), pytest.approx(4.0), "*")] for b in (1, 2)}
    drawn_fig.clear()
    code, _, err = run_cli_here(plot.main, [out, "--x", "nfe", "--out", "n.png"], capsys)
    assert code == 0, err  # the same markers at the curves' NFE (8: every fake draw says so)
    assert drawn_fig == {"quality vs NFE": [(pytest.approx(8.0), pytest.approx(4.0), "*"),
                                            (pytest.approx(8.0), pytest.approx(15.0), "o")]}


def _columns(n):
    """A stand-in for evals.samples.columns_counted: every counted draw read n columns (in one call, say)."""
    @contextlib.contextmanager
    def counted(model, start):
        yield dict(columns=n, calls=1)
    return counted


def test_time_draws_times_k_batches_a_round_each_its_own_seed(monkeypatch):
    # --time-draws K: in each timed round every point draws K batches in turn (seeds seed + K * round + j), and its
    # seconds are a draw's: the round's time / K; the warm-up draw (seed itself) is not timed
    calls = []
    monkeypatch.setattr(samples, "columns_counted", _columns(20))
    monkeypatch.setattr(samples, "draw", lambda job, start, gen_len, n, g: calls.append(
        (job.cfg.prompt, n, g.initial_seed())) or (None, [g.initial_seed()] * n))  # passes a sample: its seed, say
    rows = [dict(curve="c", temperature=1.0), dict(curve="c", temperature=0.8)]
    points = [(None, Config(prompt=p), SamplerOptions()) for p in "ab"]  # the points, told apart by a field
    runs = [dict(model=None, tok=type("T", (), dict(mask_id=0)), rows=rows, points=points, path="x")]
    args = type("A", (), dict(time_batches=[1, 4], time_draws=3, repeats=2, seed=10))
    frontier.time_points(runs, args, [0], 5, torch.device("cpu"))
    per_batch = [("a", 10)] * 2 + [("b", 10)] * 2 + [(p, 10 + 3 * k + j) for k in (1, 2) for p in "ab" for j in range(3)]
    assert calls == [(p, b, s) for b in (1, 4) for p, s in per_batch]
    for row in rows:
        for b in (1, 4):
            assert row[f"seconds_b{b}"] > 0 and row[f"tokens_per_s_b{b}"] == pytest.approx(b * 5 / row[f"seconds_b{b}"])
            assert row[f"p_cache_b{b}"] == pytest.approx(b * 5 / 20)  # B x 5 tokens over the counted draw's 20 columns
    # passes: the median of the timed draws only (seeds 13..18: 15.5), not the warm-up's (seed 10: with it, 15)
    assert rows[0]["passes_b1"] == pytest.approx(15.5) and rows[1]["passes_b4"] == pytest.approx(15.5)
    # tokens a pass: a sample's tokens over a sample's passes, whatever B (not B x 5 over them)
    assert rows[1]["tokens_per_pass_b4"] == pytest.approx(5 / 15.5)


@pytest.mark.parametrize("B", [1, 3])
def test_p_cache_counts_the_columns_each_sampler_reads_past_the_prompt(B):
    """columns_counted, p_cache's denominator, by hand: the AR reads one column a token (its prompt's last predicts the
    first): p_cache 1; masked diffusion reads the whole canvas every pass: (gen_len + 1) columns a row a pass."""
    from diffusion import Schedule  # noqa: F401 (draw builds its own)
    from evals.samples import Job, columns_counted, draw
    from model import Transformer
    P, G, S = 3, 8, 4
    for flags, columns in ((["--objective=ar"], B * G), ([f"--steps={S}"], B * S * (G + 1))):
        cfg = get_config(for_objective(["--n_layer=1", "--n_head=2", "--n_embd=16", "--block_size=16",
                                        "--diffusion_steps=8", f"--num_samples={B}", "--device=cpu", *flags]))
        torch.manual_seed(0)
        model = Transformer(model_args(cfg, 12)).eval()
        with columns_counted(model, [0, 1, 2]) as seen:
            _, passes = draw(Job(model, cfg, SamplerOptions.from_config(cfg), 11), [0, 1, 2], G, B,
                             torch.Generator().manual_seed(0))
        assert seen["columns"] == columns, (flags, seen)
        # the AR: a call a token, and the prompt's pass before its last token (the first step passes that token)
        assert passes == [G + 1 if "--objective=ar" in flags else S] * B
