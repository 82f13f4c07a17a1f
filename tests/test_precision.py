"""Precision and peak FLOP/s, on CPU: the dtype policy per device (bf16, fp16 + GradScaler, fp32), the scaler in
train.py's step (same update as without it, skipped on an overflow), and the exact-name MFU peak table.
python -m pytest -q tests/test_precision.py"""
from types import SimpleNamespace

import pytest
import torch

import train
from configurator import get_config
from diffusion import Schedule
from helpers import model_args
from model import Transformer
from utils.dist import PEAK_FLOPS, autocast_for, grad_scaler, peak_flops_of, precision
from utils.errors import UserError
from utils.tokenizer import CharTokenizer
from objectives import OBJECTIVES

pytestmark = pytest.mark.core  # the core tier (pytest.ini): the maths, the loop, the samplers

CUDA, CPU, MPS = torch.device("cuda"), torch.device("cpu"), torch.device("mps")


def test_auto_picks_bf16_only_on_a_gpu_that_has_it():
    assert precision(CUDA, "auto", bf16_supported=True) == "bfloat16"
    assert precision(CUDA, "auto", bf16_supported=False) == "float16"  # V100, T4: fp16 + GradScaler
    assert precision(CPU, "auto") == precision(MPS, "auto") == "float32"
    assert precision(CUDA, "float32", bf16_supported=False) == "float32"
    assert precision(CPU, "bfloat16") == "bfloat16" and precision(CPU, "float16") == "float16"  # asked for: given
    with pytest.raises(UserError, match="no bf16"):
        precision(CUDA, "bfloat16", bf16_supported=False)


def test_half_precision_on_mps_is_refused_before_torch_2_13():
    """MPS's fp16/bf16 attention let queries see later tokens before torch 2.13: refused; fp32 runs."""
    for dtype in ("float16", "bfloat16"):
        with pytest.raises(UserError, match=f"--dtype={dtype} on MPS needs torch 2.13 or newer"):
            precision(MPS, dtype, torch_version="2.12.1+cpu")
        assert precision(MPS, dtype, torch_version="2.13.0") == precision(MPS, dtype, torch_version="3.0.0") == dtype
        assert precision(CPU, dtype, torch_version="2.12.1") == dtype  # only MPS's kernels
    assert precision(MPS, "auto", torch_version="2.5.0") == precision(MPS, "float32", torch_version="2.5.0") == "float32"


def test_the_scaler_is_on_only_under_fp16():
    assert grad_scaler(CPU, "float16").is_enabled()
    assert not grad_scaler(CPU, "bfloat16").is_enabled() and not grad_scaler(CPU, "float32").is_enabled()
    ctx, name = autocast_for(CPU, "auto")
    assert name == "float32" and not isinstance(ctx, torch.autocast)


def _step(scaler, flags=()):
    """One train.train_step of a tiny mdlm model from a fixed init; returns (parameters before, after, run)."""
    cfg = get_config(["--n_layer=1", "--n_head=2", "--n_embd=16", "--block_size=16", "--batch_size=4", "--grad_clip=1.0",
                      "--device=cpu", *flags])
    tok = CharTokenizer(list("abcdefgh"))
    torch.manual_seed(0)
    model = Transformer(model_args(cfg, tok.vocab_size))
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    env = SimpleNamespace(accum=1, world=1, rank=0, device=CPU, ctx=torch.autocast("cpu", enabled=False))
    data = SimpleNamespace(train_ids=torch.randint(0, 8, (1000,), generator=torch.Generator().manual_seed(1)),
                           window=cfg.block_size, tok=tok)
    run = SimpleNamespace(model=model, raw_model=model, opt=opt, ema=None, schedule=Schedule(cfg.diffusion_steps),
                          loss_acc=torch.zeros(()), n_acc=0, skipped=0, bad_iter=torch.full((), -1), scaler=scaler,
                          objective=OBJECTIVES[cfg.objective])
    train.train_step(cfg, env, data, run, 0)
    return before, [p.detach().clone() for p in model.parameters()], run


def test_a_step_with_the_scaler_updates_the_weights_as_without_it():
    before, plain, _ = _step(grad_scaler(CPU, "float32"))
    _, scaled, run = _step(torch.amp.GradScaler("cpu", init_scale=2.0 ** 16))
    assert all(torch.allclose(a, b, rtol=1e-6, atol=1e-7) for a, b in zip(plain, scaled))
    assert run.scaler.get_scale() == 2.0 ** 16 and run.n_acc == 1
    assert not any(torch.equal(a, b) for a, b in zip(before, plain))  # the step did move every weight


@pytest.mark.parametrize("flags", [[], ["--skip_nonfinite=3"]])
def test_an_overflowing_scaled_step_is_skipped_and_the_scale_backs_off(flags):
    """At a loss scale of 2^127 every gradient overflows: the update skipped, the scale halved, no bad step counted."""
    before, after, run = _step(torch.amp.GradScaler("cpu", init_scale=2.0 ** 127), flags)
    assert all(torch.equal(a, b) for a, b in zip(before, after)) and run.n_acc == 1
    assert run.scaler.get_scale() == 2.0 ** 126 and run.skipped == 0


def test_the_loss_scale_is_checkpointed_and_a_resume_goes_on_at_it():
    """fp16's GradScaler state (the scale it backed off to, its good steps) rides in the checkpoint and resumes."""
    _, _, run = _step(torch.amp.GradScaler("cpu", init_scale=2.0 ** 127))
    run.margs, run.best_val, run.best_iter = run.raw_model.args, 9.0, 0
    cfg = get_config(["--device=cpu"])
    env = SimpleNamespace(world=1, master=True, device=CPU)
    data = SimpleNamespace(tok=CharTokenizer(list("abcdefgh")), meta={})
    ck = train.snapshot(cfg, env, data, run, 1, dict(nats_per_token=9.0))
    assert ck["scaler"]["scale"] == 2.0 ** 126
    _, _, fresh = _step(grad_scaler(CPU, "float16"))
    assert fresh.scaler.get_scale() == 2.0 ** 16
    fresh.best_val = float("inf")
    for g in fresh.opt.param_groups:
        g["base_lr"] = 1e-2
    train.resume_state(cfg, SimpleNamespace(resume=ck, world=1, rank=0, resumed_from="model.pt"), fresh)
    assert fresh.scaler.get_scale() == 2.0 ** 126
    assert fresh.scaler.state_dict() == run.scaler.state_dict()
    _, _, fp32 = _step(grad_scaler(CPU, "float32"))
    fp32.margs, fp32.best_val, fp32.best_iter = fp32.raw_model.args, 9.0, 0
    assert "scaler" not in train.snapshot(cfg, env, data, fp32, 1, dict(nats_per_token=9.0))  # no scaler, nothing saved


def test_peak_flops_by_exact_device_name():
    assert peak_flops_of("NVIDIA H100 80GB HBM3") == 989e12 and peak_flops_of("NVIDIA H100 PCIe") == 756e12
    for near in ("NVIDIA H100 NVL", "Tesla V100-SXM2-16GB", "Some Future GPU", "H100"):  # no MFU rather than a guess
        assert peak_flops_of(near) is None
    assert all(v < 1e15 for v in PEAK_FLOPS.values())  # dense figures: none of the sparse 2x ones
