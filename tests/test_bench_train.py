"""dev/bench_train.py's table: every row's peak memory (the RSS over its own untimed step) beside its speed.
python -m pytest -q tests/test_bench_train.py"""
import builtins

import pytest
import torch

from helpers import run_cli_here, script

pytestmark = pytest.mark.slower  # the slower tier (pytest.ini): a dev/ script's test

bench_train = script("dev/bench_train")

TINY = ["--n_layer=1", "--n_head=2", "--n_embd=16", "--block_size=16", "--batch_size=2", "--iters=1", "--repeats=1",
        "--warmup=0", "--device=cpu"]


@pytest.mark.parametrize("objective, flags", [("mdlm", []), ("bd3", ["--objective=bd3", "--bd3_block=4"]),
                                             ("mdlm", ["--compile=false"])])
def test_every_row_prints_its_peak_memory_beside_its_speed(objective, flags, capsys):
    """The AR row and the config's objective's, each with its own peak; --compile (read by the timed step) is taken."""
    code, out, err = run_cli_here(bench_train.main, [*TINY, *flags], capsys)
    assert code == 0, err
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("row "))
    assert lines[head].split()[-2:] == ["peak", "MiB"]
    rows = lines[head + 1:head + 3]
    assert [r.split()[0] for r in rows] == ["ar", objective]
    assert lines[head + 3].startswith("peak MiB:")  # no row beyond the two
    assert all(float(r.split()[-1].replace(",", "")) > 0 for r in rows), rows
    assert "peak MiB: the process's peak RSS over the row's step" in out


def test_without_proc_the_peak_is_the_processs_so_far(monkeypatch):
    """Where /proc cannot reset the peak (macOS), getrusage's peak so far, said as such."""
    real_open = builtins.open

    def no_proc(path, *args, **kwargs):
        if str(path).startswith("/proc/"):
            raise OSError("no /proc here")
        return real_open(path, *args, **kwargs)
    monkeypatch.setattr(builtins, "open", no_proc)
    ran = []
    mib, what = bench_train.peak_memory(lambda: ran.append(1), torch.nn.Linear(2, 2), None, torch.device("cpu"))
    assert mib > 0 and ran == [1] and "so far" in what
