"""dev/epochs.py's summary (best epoch, eval.py's figure, training FLOPs, the first epoch below the best AR, the
paired difference and the crossover rule) and dev/plot_epochs.py (vs epochs and vs FLOPs), on run directories
written by hand. python -m pytest -q tests/test_epochs.py"""
import json
import math

import pytest

from helpers import model_args, run_cli_here, script

pytestmark = pytest.mark.slower  # the slower tier (pytest.ini): a dev/ script's test

STEPS = 75_000 / 768  # one epoch of the 75k slice in steps


def _run(root, name, curve, final, per_window, mflop=3.0):
    d = root / "artifacts/epochs/runs" / name
    d.mkdir(parents=True)
    rows = [dict(kind="eval", iter=it, bits_per_char=n / math.log(2), bpc_se=0.02) for it, n in curve]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "train.log").write_text(f"config: ...\nmodel: 803,328 parameters, {mflop:.1f} MFLOP/token (training), ...\n")
    runs = [dict(bits_per_char=final / math.log(2), bpc_se=0.03, iter=curve[-1][0], chars_per_token=1.0,
                 per_window=per_window)]
    (d / "eval.json").write_text(json.dumps(dict(runs=runs)))


def test_summary_finds_each_runs_best_the_paired_difference_and_the_crossover(in_tmp, capsys, monkeypatch):
    ar, mdlm = "ar_wd0.1_do0_s02_75k", "mdlm_wd0.1_do0_s02_75k"
    # AR: windows 2.0 / 2.5 alternating; mdlm 0.1 lower on every window but one: a paired difference far beyond 2 se
    ar_w = [2.0, 2.5] * 8
    md_w = [w - 0.1 for w in ar_w[:-1]] + [ar_w[-1]]
    _run(in_tmp, ar, [(round(STEPS), 2.5), (round(8 * STEPS), 2.25), (round(40 * STEPS), 2.9)], 2.24, ar_w)
    # the other AR reads lower on test (eval.py, 2.20) but higher on its own evals (dev, 2.3): dev chooses
    _run(in_tmp, "ar_wd0.8_do0.1_s02_75k", [(round(STEPS), 2.6), (round(9 * STEPS), 2.3)], 2.20, [w - 0.05 for w in ar_w])
    _run(in_tmp, mdlm, [(round(STEPS), 3.0), (round(100 * STEPS), 2.26), (round(190 * STEPS), 2.20)], 2.21, md_w)
    code, out, err = run_cli_here(script("dev/epochs").main, ["--summary-only"], capsys)
    assert code == 0, err
    s = {r["name"]: r for r in json.loads((in_tmp / "artifacts/epochs/summary.json").read_text())["runs"]}
    assert abs(s[ar]["best_epoch"] - 8) < 0.01 and abs(s[ar]["best_nats"] - 2.25) < 1e-9
    assert s[ar]["params"] == 803_328 and s[ar]["flops_done"] == 3e6 * round(40 * STEPS) * 768
    m = s[mdlm]
    assert m["best_ar"] == ar  # the lower of the two AR configurations on dev, not the lower on test
    assert abs(m["first_epoch_below_best_ar"] - 190) < 0.01 and abs(m["final_nats"] - 2.21) < 1e-9
    d = [b - a for a, b in zip(ar_w, md_w)]  # by hand: mean and se of the paired differences
    mean = sum(d) / len(d)
    se = math.sqrt(sum((v - mean) ** 2 for v in d) / (len(d) - 1) / len(d))
    assert abs(m["minus_best_ar"] - mean) < 1e-12 and abs(m["minus_best_ar_se"] - se) < 1e-12 and m["crossover"]
    plot, drawn = script("dev/plot_epochs"), {}
    save = plot._save

    def keep(plt, fig, out):  # what the figure holds, read before it is written
        ax = fig.axes[0]
        drawn[out] = dict(xlabel=ax.get_xlabel(), lines=[(ln.get_label(), list(ln.get_xdata()), list(ln.get_ydata()),
                                                          ln.get_color(), ln.get_linestyle(), ln.get_marker())
                                                         for ln in ax.get_lines()])
        save(plt, fig, out)
    monkeypatch.setattr(plot, "_save", keep)
    iters = {ar: [round(k * STEPS) for k in (1, 8, 40)], mdlm: [round(k * STEPS) for k in (1, 100, 190)]}
    for x in ("epochs", "flops"):
        code, out, err = run_cli_here(plot.main, ["artifacts/epochs/summary.json", "--x", x,
                                                  "--out", f"e_{x}.png"], capsys)
        assert code == 0 and (in_tmp / f"e_{x}.png").stat().st_size > 0, err
        fig = drawn[f"e_{x}.png"]
        # each run's curve against the x the flag names, by hand: epochs = iter x 768 / 75,000 chars, FLOPs = 3 MFLOP x
        # iter x 768 tokens
        at = (lambda it: it * 768 / 75_000) if x == "epochs" else (lambda it: 3e6 * it * 768)
        assert fig["xlabel"].startswith("epochs" if x == "epochs" else "training FLOPs")
        line = {name: next(ln for ln in fig["lines"] if name in ln[0] and ln[5] != "*") for name in (ar, mdlm)}
        assert line[ar][0].startswith("best AR: ") and line[ar][3:5] == ("k", "--")  # the best AR: black, dashed
        assert [ln[3] for ln in fig["lines"] if ln[0] == "other AR configurations"] == ["0.6"]  # the other: grey
        for name, ys in ((ar, [2.5, 2.25, 2.9]), (mdlm, [3.0, 2.26, 2.20])):
            assert line[name][1] == pytest.approx([at(it) for it in iters[name]], rel=1e-12)
            assert line[name][2] == pytest.approx(ys, rel=1e-12)
        stars = sorted((ln[1][0], ln[2][0]) for ln in fig["lines"] if ln[5] == "*")  # eval.py's figure on best.pt
        want = sorted([(at(iters[ar][-1]), 2.24), (at(iters[mdlm][-1]), 2.21)])  # the grey AR has none
        assert [v for p in stars for v in p] == pytest.approx([v for p in want for v in p], rel=1e-12), stars
    code, out, err = run_cli_here(script("dev/epochs").main, ["--runs", "nope"], capsys)
    assert code == 2 and "'nope' is not one of" in err


def test_a_tie_within_two_standard_errors_is_no_crossover(in_tmp, capsys):
    ar_w = [2.0, 2.5] * 8
    md_w = [w + (-0.3 if i % 2 else 0.28) for i, w in enumerate(ar_w)]  # lower on average, but noisy
    _run(in_tmp, "ar_wd0.1_do0_s02_75k", [(round(8 * STEPS), 2.25)], 2.25, ar_w)
    _run(in_tmp, "mdlm_wd0.1_do0_s02_75k", [(round(100 * STEPS), 2.24)], 2.24, md_w)
    assert run_cli_here(script("dev/epochs").main, ["--summary-only"], capsys)[0] == 0
    s = {r["name"]: r for r in json.loads((in_tmp / "artifacts/epochs/summary.json").read_text())["runs"]}
    assert s["mdlm_wd0.1_do0_s02_75k"]["minus_best_ar"] < 0 and not s["mdlm_wd0.1_do0_s02_75k"]["crossover"]


def test_a_larger_diffusion_run_is_also_paired_with_the_best_ar_of_its_own_size(in_tmp, capsys):
    ar_w = [2.0, 2.5] * 8
    _run(in_tmp, "ar_wd1.6_do0.1_s02_75k", [(round(40 * STEPS), 2.10)], 2.10, ar_w)            # 0.20M: the best AR
    _run(in_tmp, "ar_wd1.6_do0.1_s08_75k", [(round(30 * STEPS), 2.20)], 2.20, [w + 0.1 for w in ar_w])  # 0.80M params
    _run(in_tmp, "mdlm_wd0.1_do0_s08_75k", [(round(300 * STEPS), 2.15)], 2.15, [w + 0.05 for w in ar_w])
    _run(in_tmp, "mdlm_wd0.1_do0_s02_75k", [(round(300 * STEPS), 2.25)], 2.25, [w + 0.15 for w in ar_w])
    assert run_cli_here(script("dev/epochs").main, ["--summary-only"], capsys)[0] == 0
    s = {r["name"]: r for r in json.loads((in_tmp / "artifacts/epochs/summary.json").read_text())["runs"]}
    big = s["mdlm_wd0.1_do0_s08_75k"]
    assert big["size"] == "s08" and big["best_ar"] == "ar_wd1.6_do0.1_s02_75k" and abs(big["minus_best_ar"] - 0.05) < 1e-9
    assert big["same_size_ar"] == "ar_wd1.6_do0.1_s08_75k" and abs(big["minus_same_size_ar"] + 0.05) < 1e-9
    assert s["mdlm_wd0.1_do0_s02_75k"]["same_size_ar"] == "ar_wd1.6_do0.1_s02_75k"  # and the small one its own


def test_every_study_run_resolves_to_the_recipe_it_was_measured_with():
    """The study's commands start from the baby preset, which has gained levers since: each run must still parse
    and train what the study measured (AdamW, no EMA, no QK-norm, no self-conditioning, the 10 % floor, T = 100)."""
    from configurator import get_config
    epochs = script("dev/epochs")
    paths = {f"train_{n}": f"train_{n}.txt" for n in {r[1] for r in epochs.RUNS.values()}} | {"val": "val.txt"}
    for name in epochs.RUNS:
        cfg = get_config(epochs.train_command(name, paths, 10, "out")[2:])
        net = model_args(cfg, 66)  # the AR fixes self-conditioning off in its network, whatever the preset says
        assert (cfg.optimizer, cfg.ema, net.qk_norm, net.self_cond, cfg.min_lr) == ("adamw", 0.0, False, False, 1e-4), name
        assert cfg.objective != "mdlm" or (cfg.mask_ramp, cfg.dual_ar) == (0, 0), name
        assert cfg.objective == "ar" or cfg.mask_draws == 1, name  # one mask a window, as the study ran
        assert cfg.weight_decay == float(name.split("_wd")[1].split("_")[0]), name  # the grid's, not the preset's
        assert cfg.objective == "ar" or cfg.diffusion_steps == 100, name  # the chain the study's bounds are of
