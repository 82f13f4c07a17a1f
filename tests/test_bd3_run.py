"""A tiny block-diffusion run end to end: trained on real text (blocks of 4), it learns, writes past its context
through inference.py, and scripts/eval.py counts the passes its sampler runs; dev/bd3_variance.py ranks its bands
(the slower tier). tests/test_bd3.py holds bd3's maths and sampler, on untrained networks (the core tier).

    python -m pytest -q tests/test_bd3_run.py
"""
import math
from dataclasses import replace

import pytest
import torch

from diffusion import SamplerOptions
from helpers import ENV, run_script
from conftest import train_tiny


@pytest.fixture(scope="module")
def bd3_ckpt(tmp_path_factory):
    """A tiny bd3 model (blocks of 4) trained for 200 steps on real text."""
    return train_tiny(tmp_path_factory, "bd3", "--objective=bd3", "--bd3_block=4", "--max_iters=200",
                      "--eval_interval=100")


def test_a_tiny_bd3_run_learns_and_writes_past_its_context(bd3_ckpt, tmp_path):
    from checkpoint_manager import checkpoint_config
    from checkpoint_manager import load_model
    from utils.checkpoint import load_checkpoint
    from sampling.canvas import continuation, fill
    from utils.tokenizer import tokenizer_from_state
    ck = load_checkpoint(bd3_ckpt)
    tok = tokenizer_from_state(ck["tokenizer"])
    assert ck["val"]["nats_per_token"] < math.log(tok.vocab_size - 1) - 1.0  # well below a uniform guess
    model, _ = load_model(bd3_ckpt, "cpu")
    cfg = checkpoint_config(ck, "a checkpoint")
    opts = SamplerOptions.from_config(cfg)
    canvas = continuation(cfg, opts, tok, "ROMEO:", 150, model.args.block_size)  # 156 tokens from a context of 64
    texts, out, stats = fill(model, tok, canvas, replace(cfg, num_samples=2), opts, "cpu",
                             torch.Generator().manual_seed(0))
    prompt = torch.tensor(tok.encode("ROMEO:"))
    assert out.shape == (2, 156) and (out[:, :6] == prompt).all() and not (out == tok.mask_id).any()
    assert all(f.startswith("ROMEO:") and len(t) == 150 for f, t in zip(stats["full_texts"], texts))
    r = run_script("inference.py", "--checkpoint", bd3_ckpt, "--prompt", "ROMEO:", "--gen-len", 150, "--trace-every", 8,
                   "--viz-video", tmp_path / "bd3.mp4", cwd=tmp_path, env=ENV)
    assert r.returncode == 0, r.stderr
    assert "block diffusion, blocks of 4" in r.stdout and (tmp_path / "bd3.gif").stat().st_size > 0


@pytest.mark.slower  # a dev/ script's test
def test_variance_script_ranks_the_bands(bd3_ckpt, capsys):
    from helpers import run_cli_here, script
    code, out, err = run_cli_here(script("dev/bd3_variance").main, [bd3_ckpt, "--bands", "0-1,0.5-1", "--draws", 4, "--batch", 4],
                                  capsys)
    assert code == 0, err
    rows = {line.split()[0]: [float(v) for v in line.split()[1:]] for line in out.splitlines()[-2:]}
    assert set(rows) == {"0-1", "0.5-1"} and all(v > 0 for r in rows.values() for v in r)
    # (mean loss, its sd / mean, gradient variance / |E g|^2). Clipping the band to the high mask rates leaves out the
    # near-clean blocks, whose large weights make the gradient noisy (BD3-LM): its relative gradient variance ranks
    # below the full range's (0.70 against 1.15 here; lower on every one of 6 seeds of the draws, 0.50-0.70 against
    # 1.09-2.54). Its loss is the band's share of the bound, a part of the full range's sum: smaller.
    assert rows["0.5-1"][2] < rows["0-1"][2] and rows["0.5-1"][0] < rows["0-1"][0], rows


def test_eval_counts_the_passes_bd3_samples_run(bd3_ckpt, tmp_path_factory, capsys, monkeypatch):
    """scripts/eval.py on a bd3 checkpoint: --steps past T is allowed (steps are per block), the sampler row says how
    many steps each block takes, and the progress bar counts the passes the block sampler really runs."""
    from helpers import run_cli_here, script
    judge = train_tiny(tmp_path_factory, "bd3_judge", "--objective=ar", "--max_iters=20", "--eval_interval=20")
    monkeypatch.chdir(tmp_path_factory.mktemp("bd3_eval"))  # eval.py encodes its data into artifacts/data/ here
    ev = script("eval")
    counted = {}

    class Counting(ev.tqdm):
        def update(self, n=1):
            counted["done"] += n

    monkeypatch.setattr(ev, "tqdm", Counting)
    # the start token + 22 tokens are 6 blocks of 4, the first holding the start token and the last generated whole,
    # then cut (3, 4, 4, 4, 4, 4 generated): 23 passes at 30 steps (one token per step), 12 at 2 steps per block; not
    # 30 passes per batch
    for steps, per_block, passes in ((30, 4, 23), (2, 2, 12)):
        counted["done"] = 0
        code, out, err = run_cli_here(ev.main, [bd3_ckpt, "--ar-checkpoint", judge, "--n-windows", 8, "--n-t", 2,
                                                "--n-samples", 2, "--gen-len", 22, "--steps", steps,
                                                "--device", "cpu"], capsys)
        assert code == 0, err
        lines = out.splitlines()
        at = next(i for i, line in enumerate(lines) if line.startswith("sampler"))
        rows = [lines[at]] + [line for line in lines[at + 1:at + 4] if not line.split("|")[0].strip()]  # its wraps
        assert f"{per_block} steps per block" in " ".join(r.split("|")[1].strip() for r in rows)
        assert counted["done"] == passes, (steps, counted)
