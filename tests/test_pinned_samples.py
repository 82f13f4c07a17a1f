"""Pinned samples: each objective's sampler, run by inference.py with a fixed seed on a checkpoint whose weights are
small integers over 8 (drawn by torch's CPU generator, the same on every machine); the sample text is pinned. A silent
change to a sampler, its random draws, the canvas or the checkpoint path fails here, the way tests/test_golden.py pins
the training losses. The weights come from integers, not from training: a trained model's floats differ by CPU
(an AMD EPYC machine sampled another mdlm text from a 40-step run than an Intel one), while these differ at most in
the forward pass's last bits, which a float64 draw crosses once in ~10^7. If a change is meant to move them, re-pin
and say why. bd3's --bd3_speculate drafts at batch 1; its round compiled at fixed shapes samples the same text.

    python -m pytest -q tests/test_pinned_samples.py
"""
import pytest
import torch

import inference
from helpers import MICRO, ROOT, for_objective, run_cli_here, run_here
from utils.checkpoint import load_checkpoint, save_checkpoint

RUNS = {  # objective -> (extra training flags, sampling flags)
    "mdlm": ([], ["--steps=8", "--remask=refine"]),
    "bd3": (["--objective=bd3", "--bd3_block=4"], ["--steps=4"]),
    "uniform": (["--objective=uniform"], ["--steps=8"]),
    "ar": (["--objective=ar"], []),
    "bd3 speculate": (["--objective=bd3", "--bd3_block=4", "--bd3_ar=1"], ["--bd3_speculate=true"]),  # batch 1: drafts
    "mdlm entropy bound": ([], ["--entropy_bound=0.5", "--order=entropy", "--remask=none"]),  # issue 95's EB-Sampler
}
# pinned 2026-11-28, torch 2.13.0 CPU, AMD EPYC; the same at 1 and 2 threads and under other CPUs' kernels
# (ATEN_CPU_CAPABILITY=default, avx2, avx512 with MKL_ENABLE_INSTRUCTIONS=SSE4_2 or AVX2)
PINNED = {
    "mdlm": "ROMEO:RHRehVhe'V.WHHVFR\nk!uOhH",
    "bd3": "ROMEO:&gbjjjV'V3 ii'jZqqjjjkjX",
    "uniform": "ROMEO:VbVAuAyP&hafbhVr\nSfVfRfV",
    "ar": "ROMEO:!JdFdcHXXjFSSOs,!Zv.dc'H",
    "bd3 speculate": "ROMEO:!?3;:pBT\n;kRWnEQ& z3WWnF",  # pinned 2026-11-28 at a18cdd5 (before issue 78's round)
    "mdlm entropy bound": "ROMEO:HBvRhH;WfaRVVwvL\nHWHhmqP",  # pinned 2026-11-29, torch 2.13.0 CPU, AMD EPYC
}


def integer_weights(state):
    """state's tensors replaced, in name order, by integers in [-3, 3] over 8 (norm scales 1): exact in float32."""
    out = {}
    for i, name in enumerate(sorted(state)):
        g = torch.Generator().manual_seed(1000 + i)
        w = torch.randint(-3, 4, state[name].shape, generator=g).to(state[name].dtype) / 8
        out[name] = torch.ones_like(state[name]) if "norm" in name else w
    return out


def integer_checkpoint(objective, tmp_path):
    """A one-step run of `objective` (its config, tokenizer and layout), its weights then replaced by integer_weights."""
    out = tmp_path / "out"
    run_here(for_objective(["train.py", f"--data_path={ROOT / 'data' / 'tinyshakespeare.txt'}", f"--out_dir={out}",
                            *MICRO, "--max_iters=1", "--eval_interval=1", "--seed=7", *RUNS[objective][0]]),
             tmp_path, threads=1)
    ckpt = load_checkpoint(out / "model.pt")
    ckpt.pop("checksum", None)
    ckpt["model"] = integer_weights(ckpt["model"])
    ckpt["ema"] = None
    path = tmp_path / "integer.pt"
    save_checkpoint(path, ckpt)
    return path


@pytest.mark.parametrize("objective", list(RUNS))
def test_a_fixed_seed_gives_the_pinned_sample(objective, tmp_path, capsys, monkeypatch):
    path = integer_checkpoint(objective, tmp_path)
    monkeypatch.chdir(tmp_path)  # its trace goes to artifacts/media/ here
    capsys.readouterr()
    code, text, err = run_cli_here(inference.main, [f"--checkpoint={path}", "--prompt=ROMEO:", "--gen_len=24",
                                                    "--seed=3", "--device=cpu", *RUNS[objective][1]], capsys)
    assert code == 0, err
    sample = text.split("\n", 1)[1].split("\n---- ")[0]  # after the checkpoint line
    assert sample == PINNED[objective], repr(sample)


@pytest.mark.slower
def test_bd3s_compiled_drafting_round_gives_the_pinned_sample(tmp_path, capsys, monkeypatch):
    """--compile=true on --bd3_speculate at batch 1 (issue 78): the drafting round's pass compiled whole at fixed
    shapes (traced by dynamo's eager backend: no inductor on this CPU) samples the eager round's pinned text."""
    path = integer_checkpoint("bd3 speculate", tmp_path)
    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: compile_(fn, backend="eager", fullgraph=True, dynamic=False))
    capsys.readouterr()
    code, text, err = run_cli_here(inference.main, [f"--checkpoint={path}", "--prompt=ROMEO:", "--gen_len=24",
                                                    "--seed=3", "--device=cpu", "--bd3_speculate=true",
                                                    "--compile=true"], capsys)
    torch._dynamo.reset()
    assert code == 0, err
    assert "compiled" in text.splitlines()[0] and text.split("\n", 1)[1].split("\n---- ")[0] == PINNED["bd3 speculate"]
