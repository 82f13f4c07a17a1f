"""dev/distill_study.py, the instruments of issue 104's distillation study (distill.py's own maths: tests/test_distill.py):
a teacher whose law ignores the canvas leaves a round nothing to gain and no loss it cannot remove; the ideal student
is the mean of the teacher's targets, and it samples; the study's loop writes a checkpoint inference.py samples.

    python -m pytest -q tests/test_distill_study.py
"""
import pytest
import torch

import distill
import inference
from diffusion import Schedule
from helpers import run_cli_here, script
from test_distill import MASK, V, CountToy

pytestmark = pytest.mark.slower  # the slower tier (pytest.ini): a dev/ script's test

study = script("dev/distill_study")


def test_a_teacher_whose_law_ignores_the_canvas_leaves_a_round_nothing():
    """Its k-step target is its one pass at every draw: a round can gain nothing, and no loss is left over."""
    schedule = Schedule(100)
    x0 = torch.randint(0, MASK, (6, 8), generator=torch.Generator().manual_seed(1))
    gain, rest, rate = study.reducible_gap(CountToy(slope=torch.zeros(V)), x0, schedule, MASK, 10, 3, 4,
                                           torch.Generator().manual_seed(2), self_cond=False)
    assert len(gain) > 0 and gain.abs().max() < 1e-6 and rest.abs().max() < 1e-6
    assert ((rate > 0) & (rate <= 1)).all()
    gain, rest, _ = study.reducible_gap(CountToy(), x0, schedule, MASK, 10, 3, 4, torch.Generator().manual_seed(2),
                                        self_cond=False)
    assert gain.mean() > 1e-3 and rest.mean() > 1e-3  # a teacher whose passes read each other's reveals


def test_the_ideal_student_is_the_mean_of_the_teachers_targets():
    schedule = Schedule(100)
    ideal = study.IdealStudent(CountToy(), schedule, MASK, 10, 3, 4, seed=5)
    xt = torch.tensor([[0, MASK, MASK, 2, MASK, MASK]] * 2)
    t = torch.tensor([50, 80])
    out = ideal(xt, t)
    g = torch.Generator().manual_seed(5)  # the draws the ideal student makes, in its order
    reveal_u = torch.rand((4, 2, 2, 6), generator=g)
    token_u = torch.rand((4, 2, 2, 6), generator=g, dtype=torch.float64)
    mean, _ = distill.mean_target(distill.Teacher(CountToy(), schedule, MASK, 10), xt, t, None, reveal_u, token_u)
    assert torch.allclose(out, mean)
    again = study.IdealStudent(CountToy(), schedule, MASK, 10, 3, 4, seed=5)  # a sampler's positions= shortcut
    assert torch.equal(again(xt, t, positions=torch.tensor([1, 7])), out.flatten(0, 1)[[1, 7]])


def test_the_studys_checkpoint_samples_through_inference(tiny_ckpt, in_tmp, capsys):
    out = in_tmp / "student"
    study.main([str(tiny_ckpt), "--out-dir", str(out), "--iters", "2", "--log", "1", "--student-steps", "4",
                "--batch-size", "2", "--copies", "1"])
    code, text, err = run_cli_here(inference.main, ["--checkpoint", out / "model.pt", "--viz-video", "off",
                                                    "--seed", "0"], capsys)
    assert code == 0 and "NFE 4 per sample" in text, err
