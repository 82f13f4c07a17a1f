"""Pinned samples: a seeded tiny run of each objective, then inference.py with a fixed seed; the sample text is
pinned. A silent change to a sampler, its random draws, the canvas or the checkpoint path fails here, the way
tests/test_golden.py pins the training losses. If a change is meant to move them, re-pin and say why.

    python -m pytest -q tests/test_pinned_samples.py
"""
import pytest

import inference
from helpers import MICRO, ROOT, for_objective, run_cli_here, run_here

RUNS = {  # objective -> (extra training flags, sampling flags)
    "mdlm": ([], ["--steps=8", "--remask=refine"]),
    "bd3": (["--objective=bd3", "--bd3_block=4"], ["--steps=4"]),
    "uniform": (["--objective=uniform"], ["--steps=8"]),
    "ar": (["--objective=ar"], []),
}
PINNED = {  # re-pinned 2026-11-27: common.draw samples by inverse CDF (torch.multinomial before), torch 2.13.0 CPU
    "mdlm": 'ROMEO:  a  e      o\ne  ao r  s',
    "bd3": 'ROMEO: pdoei h  \n  oe hcnoa  \n',
    "uniform": 'ROMEO:fha;w.zQ\nrgpereu QkSnRga',
    "ar": "ROMEO:\nDk3niGYSm:edQw ,eu'nh S",
}


@pytest.mark.slow
@pytest.mark.parametrize("objective", list(RUNS))
def test_a_fixed_seed_gives_the_pinned_sample(objective, tmp_path, capsys):
    train_flags, sample_flags = RUNS[objective]
    out = tmp_path / "out"
    run_here(for_objective(["train.py", f"--data_path={ROOT / 'data' / 'tinyshakespeare.txt'}", f"--out_dir={out}",
                            *MICRO, "--max_iters=40", "--eval_interval=40", "--seed=7", *train_flags]), tmp_path, threads=1)
    capsys.readouterr()
    code, text, err = run_cli_here(inference.main, [f"--checkpoint={out / 'model.pt'}", "--prompt=ROMEO:", "--gen_len=24",
                                                    "--seed=3", "--device=cpu", *sample_flags], capsys)
    assert code == 0, err
    sample = text.split("\n", 1)[1].split("\n---- ")[0]  # after the checkpoint line
    assert sample == PINNED[objective], repr(sample)
