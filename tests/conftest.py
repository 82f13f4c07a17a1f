"""Shared fixtures (helpers: tests/helpers.py). Run the suite from the repo root: python -m pytest -q tests
The fast tier, for the edit-run loop: python -m pytest -q -m "not slow" tests"""
import os

import pytest
import torch

from helpers import TINY, for_objective, real_text

# In-process runs keep torch's thread count as the test process has it: a CPU run picks its own threads only where
# OMP_NUM_THREADS is unset (utils.dist.CpuThreads), and a count that changes with the machine's load would make runs
# in this process differ from one another. The tests of that rule pass their own environment.
os.environ.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))


@pytest.fixture(autouse=True)
def one_thread_unless_slow(request):
    """The fast tier runs torch on one thread: its models are tiny, where a second thread saves nothing and, on shared
    cores, makes every op wait for it (scripts/bench_train.py's fp32 rate, 100,000 small products: 95 s on two threads
    beside other jobs, 0.4 s on one). A slow test keeps the process's count (a trained run gains from two)."""
    if request.node.get_closest_marker("slow"):
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run inside a temp dir so artifacts/ (data cache, checkpoints) never touch the repo."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def train_tiny(tmp_path_factory, name, *extra):
    """Train a TINY model on real text in its own temp dir (data cache included); returns its model.pt."""
    import train
    d = tmp_path_factory.mktemp(name)
    cwd = os.getcwd()
    os.chdir(d)
    try:
        train.main(for_objective([f"--data_path={real_text()}", f"--out_dir={d / 'out'}", "--learning_rate=3e-3",
                                  "--min_lr=3e-4", "--warmup_iters=20", "--gen_len=32", *TINY, *extra]))
    finally:
        os.chdir(cwd)
    return d / "out" / "model.pt"


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    """A tiny diffusion model trained for 300 steps on real text (shared by the slower tests)."""
    return train_tiny(tmp_path_factory, "tiny", "--max_iters=300", "--eval_interval=150")
