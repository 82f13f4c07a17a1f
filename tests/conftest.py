"""Shared test fixtures. Run the suite from the repo root: python -m pytest -q tests"""
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"
FIXTURES = ROOT / "tests" / "fixtures"


def real_text(name="tinyshakespeare.txt"):
    """A real corpus from ../shared/data, else the small in-repo fixture."""
    p = SHARED / name
    return p if p.is_file() else FIXTURES / "tiny_stories.txt"


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run inside a temp dir so artifacts/ (data cache, checkpoints) never touch the repo."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


TINY = ["--n_layer=2", "--n_head=2", "--n_embd=64", "--block_size=64", "--batch_size=16",
        "--diffusion_steps=20", "--steps=20", "--eval_iters=4", "--log_interval=50", "--device=cpu"]


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    """A tiny diffusion model trained for 300 steps on real text (shared by the slower tests)."""
    import train
    d = tmp_path_factory.mktemp("tiny")
    cwd = os.getcwd()
    os.chdir(d)
    try:
        train.main([f"--data_path={real_text()}", f"--out_dir={d / 'out'}", "--max_iters=300", "--eval_interval=150",
                    "--learning_rate=3e-3", "--min_lr=3e-4", "--warmup_iters=20", "--gen_len=32", *TINY])
    finally:
        os.chdir(cwd)
    return d / "out" / "model.pt"
