"""What train.py prints beside its loop (evals/report.py): the training loss named for what it is, and the final
metrics block with a unit or a meaning for every figure. python -m pytest -q tests/test_report.py"""
import pytest

from configurator import get_config
from common import Schedule
from evals.report import final_report, loss_label
from helpers import ToyModel
from utils.tokenizer import CharTokenizer


@pytest.mark.parametrize("argv, name, says", [
    (["cpu"], "train all_ce", "CE over every position"),  # the laptop recipe: ~0.8 beside a val bound ~2.0
    (["cpu", "--loss_type=elbo"], "train elbo", "weighted NELBO"),
    (["cpu", "--loss_type=masked_ce"], "train masked_ce", "(no bound)"),
    (["cpu", "--objective=ar"], "train ce", "next-token CE"),
    (["cpu", "--objective=uniform", "--time_cond=learned"], "train elbo", "weighted NELBO"),
    (["cpu_bd3"], "train elbo", "on mask rates in [0.5, 1]"),  # a training band: not the full bound the eval scores
    (["baby_bd3"], "train all_ce", "CE over every position, visible ones too (no bound) on mask rates in [0.5, 1]"),
    (["baby"], "train all_ce", "on mask rates in [0.2, 0.8]"),
])
def test_the_log_names_the_training_loss_apart_from_the_validation_figure(argv, name, says):
    label, legend = loss_label(get_config(argv))
    assert label == name and f"'{name}' is" in legend and says in legend
    assert ("'val NLL'" if "--objective=ar" in argv else "'val bound'") in legend


RES = dict(nats_per_token=2.0, se=0.01, bits_per_char=2.9, bpc_se=0.02, ppl=7.4, n_windows=8, n_t=4, recon_acc=0.3,
           entropy_by_t=[(1, 10, 2.5), (11, 20, 2.9)])


def _report(capsys, *flags):
    cfg = get_config(["--block_size=64", "--diffusion_steps=20", "--steps=8", "--gen_len=12", "--viz_video=", *flags])
    final_report(ToyModel(), CharTokenizer("abcdefghijk"), cfg, Schedule(20), "cpu", RES)
    return capsys.readouterr().out


def test_the_final_metrics_block_labels_every_figure_and_drops_what_the_sampler_fixes(capsys):
    out = _report(capsys, "--remask=none", "--order=random")  # committed tokens final: its change rate is 0 by construction
    assert "reverse-step token change rate: 0 by construction (remask none: committed tokens are final)" in out
    assert "(8 windows x 4 t; ± one standard error)" in out and "exp of the bound: an upper bound" in out
    assert "fraction of masked positions whose argmax is the true token" in out and "by time step t of T=20" in out
    assert "distinct-2 (unique / all word bigrams of the 4 samples drawn, prompt excluded; sample 0 below)" in out
    assert "NFE (model calls)" in out and "---- sample 0 (prompt '')" in out
    out = _report(capsys, "--remask=refine")  # the reference sampler revisits committed tokens: the rate is measured
    assert "reverse-step token change rate (fraction of committed tokens a step changes): " in out
    assert "by construction" not in _report(capsys, "--remask=remdm")
    assert "0 by construction (threshold: committed tokens are final)" in _report(capsys, "--threshold=0.5")
