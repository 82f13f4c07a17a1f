"""Golden losses: a seeded 10-step tiny run's per-step training losses, pinned. If a change is meant to move them,
re-pin with the printed values and say why in the commit.

    python -m pytest -q tests/test_golden.py
"""
import json

import pytest

from helpers import ROOT, for_objective, run_here

pytestmark = pytest.mark.core  # the core tier (pytest.ini): the maths, the loop, the samplers

ARGS = ["--n_layer=2", "--n_head=2", "--n_embd=32", "--block_size=32", "--batch_size=4", "--max_iters=10",
        "--log_interval=1", "--eval_interval=10", "--eval_iters=2", "--learning_rate=3e-3", "--warmup_iters=2",
        "--diffusion_steps=20", "--steps=4", "--gen_len=8", "--device=cpu", "--seed=1337",
        f"--data_path={ROOT / 'data' / 'tinyshakespeare.txt'}"]

GOLDEN = {
    # measured 2026-11-23, torch 2.13.0 CPU, one thread
    "mdlm": [4.05367, 3.96786, 4.27937, 3.79166, 3.1145, 5.01187, 3.59853, 2.48769, 2.9214, 4.4047],
    "mdlm_recipe": [4.17624, 4.08915, 3.97921, 3.82953, 3.72841, 3.76183, 3.62411, 3.51522, 3.51196, 3.59544],
    "ar": [4.19208, 4.18795, 4.04547, 3.99351, 3.91025, 3.91061, 3.82091, 3.78252, 3.80481, 3.8497],
}
EXTRA = {"mdlm": [], "mdlm_recipe": ["--time_cond=none", "--loss_type=all_ce"], "ar": ["--objective=ar"]}


@pytest.mark.parametrize("name", list(GOLDEN))
def test_pinned_losses_of_a_seeded_tiny_run(name, tmp_path):
    out = tmp_path / "out"
    run_here(for_objective(["train.py", *ARGS, f"--out_dir={out}", *EXTRA[name]]), tmp_path, threads=1)
    losses = [r["loss"] for r in map(json.loads, open(out / "metrics.jsonl")) if r["kind"] == "train"]
    assert len(losses) == 10
    assert losses == pytest.approx(GOLDEN[name], abs=2e-4), [round(x, 5) for x in losses]
