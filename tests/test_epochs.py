"""scripts/epochs.py's summary (best epoch, eval.py's figure, the first epoch below AR's best) and scripts/plot.py
epochs, on run directories written by hand. python -m pytest -q tests/test_epochs.py"""
import json
import math

from helpers import run_cli_here, script


def _run(root, name, curve, final):
    d = root / "artifacts/epochs/runs" / name
    d.mkdir(parents=True)
    rows = [dict(kind="eval", iter=it, bits_per_char=n / math.log(2), bpc_se=0.02) for it, n in curve]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    runs = [dict(bits_per_char=final / math.log(2), bpc_se=0.03, iter=curve[-1][0])]
    (d / "eval.json").write_text(json.dumps(dict(runs=runs)))


def test_summary_finds_each_runs_best_and_where_diffusion_passes_ar(in_tmp, capsys):
    steps = 75_000 / 768  # one epoch of the 75k slice in steps
    _run(in_tmp, "ar_75k", [(round(steps), 2.5), (round(8 * steps), 2.25), (round(40 * steps), 2.9)], 2.24)
    _run(in_tmp, "mdlm_75k", [(round(steps), 3.0), (round(100 * steps), 2.26), (round(190 * steps), 2.20)], 2.21)
    code, out, err = run_cli_here(script("epochs").main, ["--summary-only"], capsys)
    assert code == 0, err
    s = {r["name"]: r for r in json.loads((in_tmp / "artifacts/epochs/summary.json").read_text())["runs"]}
    assert abs(s["ar_75k"]["best_epoch"] - 8) < 0.01 and abs(s["ar_75k"]["best_nats"] - 2.25) < 1e-9
    assert abs(s["mdlm_75k"]["first_epoch_below_ar_best"] - 190) < 0.01 and abs(s["mdlm_75k"]["final_nats"] - 2.21) < 1e-9
    code, out, err = run_cli_here(script("plot").main, ["epochs", "artifacts/epochs/summary.json", "--out", "e.png"], capsys)
    assert code == 0 and (in_tmp / "e.png").stat().st_size > 0, err
    code, out, err = run_cli_here(script("epochs").main, ["--runs", "nope"], capsys)
    assert code == 2 and "unknown run" in err
