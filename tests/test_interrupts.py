"""Ctrl-C in training, as a terminal sends it: a real SIGINT once the run has said it reached a step; its line names
the newest checkpoint and the command that resumes it, and that command does.

    python -m pytest -q tests/test_interrupts.py
"""
import signal
import subprocess
import sys

import pytest
import torch

from helpers import ENV, HANG, popen, read_until, train_args


@pytest.mark.slower
@pytest.mark.parametrize("extra", [[], ["--overwrite"]])
def test_ctrl_c_in_training_names_the_last_checkpoint_and_the_command_that_resumes_it(extra, tmp_path):
    """After --overwrite too: the advised command drops it (--resume refuses the two together)."""
    p = popen(train_args("run", "--max_iters=100000", "--eval_interval=5", "--log_interval=5", *extra), tmp_path)
    read_until(p, "eval 10:")  # a checkpoint or two exist
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=HANG)
    assert p.returncode == 130 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("interrupted: the last checkpoint is run/model.pt (iter ") and err.rstrip().endswith(" --resume")
    it = int(err.split("(iter ")[1].split(")")[0])
    assert it >= 5 and torch.load(tmp_path / "run" / "model.pt", weights_only=True)["iter"] == it
    again = err.split("continue it with: ")[1].split()
    r = subprocess.run([sys.executable, *again[1:], f"--max_iters={it + 5}"], cwd=tmp_path, env=ENV, capture_output=True,
                       text=True, timeout=HANG)
    assert r.returncode == 0 and f"resumed from run/model.pt at iter {it}" in r.stdout, r.stderr
