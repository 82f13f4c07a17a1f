"""Ctrl-C in training, as a terminal sends it: a real SIGINT to a started train.py, sent once the run has said it
reached a step (its eval line), never after a wait; the line it leaves names the newest checkpoint and the command
that resumes it, and that command does. Moved here from tests/test_bad_input.py (issue 106). It failed there on a
busy machine: its line named iter 5 while model.pt held iter 10 (the SIGINT landed inside the checkpoint writer's
submit: utils/fileio.ctrl_c_held), and its deadlines of 60 s and 120 s were near (29 s from SIGINT to exit at a
load of 17, 5 s alone).

    python -m pytest -q tests/test_interrupts.py
"""
import signal
import subprocess
import sys

import pytest
import torch

from helpers import ENV, HANG, MICRO, ROOT, read_until, real_text


@pytest.mark.slower
@pytest.mark.parametrize("extra", [[], ["--overwrite"]])
def test_ctrl_c_in_training_names_the_last_checkpoint_and_the_command_that_resumes_it(extra, tmp_path):
    """Issue 97: after --overwrite the advised command kept it, and --resume refuses the two together (exit 2)."""
    args = [str(ROOT / "train.py"), f"--data_path={real_text()}", "--out_dir=run", *MICRO, "--max_iters=100000",
            "--eval_interval=5", "--log_interval=5", *extra]
    # SIGINT at its default in the child: a shell starts background jobs (nohup ... &) with it ignored, and a Python
    # started that way never raises KeyboardInterrupt
    p = subprocess.Popen([sys.executable, *args], cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    read_until(p, "eval 10:")  # a real SIGINT once a checkpoint or two exist: the run has said it scored step 10
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=HANG)
    assert p.returncode == 130 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("interrupted: the last checkpoint is run/model.pt (iter ") and err.rstrip().endswith(" --resume")
    it = int(err.split("(iter ")[1].split(")")[0])
    assert it >= 5 and torch.load(tmp_path / "run" / "model.pt", weights_only=True)["iter"] == it
    # the advice works: the same command with --resume continues from that iter
    again = err.split("continue it with: ")[1].split()
    r = subprocess.run([sys.executable, *again[1:], f"--max_iters={it + 5}"], cwd=tmp_path, env=ENV, capture_output=True,
                       text=True, timeout=HANG)
    assert r.returncode == 0 and f"resumed from run/model.pt at iter {it}" in r.stdout, r.stderr
