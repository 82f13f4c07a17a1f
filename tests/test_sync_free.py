"""A training step never waits for the host (issue 63): one step of every objective at its preset's settings (the
loss, backward, clipping, the optimizer and the EMA) runs on the meta device under a dispatch mode that refuses what
would make a GPU wait: a device value read on the host (.item(), bool(), .tolist()), a data-dependent shape (nonzero,
boolean-mask indexing) and a copy between the host and the device. The meta device holds no numbers, so the test
reads the code's shape of work, not its values. python -m pytest -q tests/test_sync_free.py"""
from contextlib import nullcontext

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import train
from diffusion import Schedule
from configurator import get_config
from helpers import Tok, for_objective, model_args
from model import Transformer
from utils import dataloader
from utils.optim import build_optimizer, EMA
from objectives import OBJECTIVES

pytestmark = pytest.mark.core  # the core tier (pytest.ini): the maths, the loop, the samplers

aten = torch.ops.aten
SMALL = ["--n_layer=1", "--n_head=2", "--n_embd=32", "--block_size=16", "--batch_size=4",
         "--device=cpu", "--warmup_iters=1", "--max_iters=10"]
PRESETS = {"mdlm": ["baby"], "bd3": ["baby_bd3"], "ar": ["baby", "--objective=ar"],
           "uniform": ["baby", "--objective=uniform", "--time_cond=learned"]}


class NoHostSync(TorchDispatchMode):
    """Raises on an op that reads a device tensor's values on the host, sizes its output by them, or copies between
    the host and the device ('meta' is the device here), a 0-dim tensor's copy included: torch.tensor(it).to(device)
    a step is a host-to-device copy a step. A CPU scalar given as an operand (t * u, u a 0-dim CPU tensor) is no copy:
    the op reads it on the host and passes its value to the kernel, and dispatch shows no _to_copy."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        leaves = [a for a in tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)]
        on_device = any(t.device.type == "meta" for t in leaves)
        op = func.overloadpacket
        if op is aten._local_scalar_dense and on_device:
            raise AssertionError(f"a device value read on the host: {func}")
        if op in (aten.nonzero, aten.masked_select, aten._unique2, aten.unique_consecutive) and on_device:
            raise AssertionError(f"an output sized by device values: {func}")
        if op in (aten.index, aten.index_put, aten.index_put_) and on_device and any(
                t is not None and t.dtype == torch.bool for t in (args[1] if len(args) > 1 else [])):
            raise AssertionError(f"boolean-mask indexing (a nonzero inside): {func}")
        if op in (aten._to_copy, aten.copy_):
            src = args[1] if op is aten.copy_ else args[0]
            dst = args[0].device if op is aten.copy_ else kwargs.get("device", src.device)
            if torch.device(dst).type != src.device.type:
                raise AssertionError(f"a copy from {src.device} to {dst}: {func} of {tuple(src.shape)}")
        return func(*args, **kwargs)


def training_step(objective, monkeypatch, device):
    """One train.train_step of the objective's preset at SMALL sizes on `device`, its batch fixed (the input
    pipeline's copy is its own: pinned, async); returns a function running step `it`."""
    cfg = get_config(for_objective([*PRESETS[objective], *SMALL]))
    tok = Tok(19)  # 19 characters and [MASK]
    model = Transformer(model_args(cfg, tok.vocab_size)).to(device)
    schedule = Schedule(cfg.diffusion_steps, cfg.schedule)
    schedule.on(device)  # the tables are copied to the device once, before the first step
    run = train.Run(model=model, raw_model=model, eval_model=model, opt=build_optimizer(model, cfg, device), ema=None,
                    margs=model.args, schedule=schedule, flops_tok=1.0,
                    loss_acc=torch.zeros((), device=device), bad_iter=torch.full((), -1, device=device, dtype=torch.long),
                    scaler=torch.amp.GradScaler("cpu", enabled=False), objective=OBJECTIVES[objective])
    run.ema = EMA(model, 0.999) if cfg.ema else None
    env = train.Env(0, 0, 1, True, device, 1, nullcontext(), "float32")
    window = cfg.block_size + OBJECTIVES[objective].WINDOW
    data = train.Data(tok, None, None, None, 1.0, {}, window)
    batch = torch.randint(0, 19, (cfg.batch_size, window), device="cpu").to(device)
    monkeypatch.setattr(dataloader, "get_batch", lambda *a: batch)
    return lambda it: train.train_step(cfg, env, data, run, it)


@pytest.mark.parametrize("objective", list(PRESETS))
def test_a_training_step_makes_no_host_sync(objective, monkeypatch):
    step = training_step(objective, monkeypatch, torch.device("meta"))
    for it in range(2):  # the second step: what every step does once the optimizer's state exists
        with NoHostSync() if it else nullcontext():
            step(it)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("objective", list(PRESETS))
def test_a_cuda_training_step_runs_under_sync_debug_error(objective, monkeypatch):
    """The same step on a real GPU under torch.cuda.set_sync_debug_mode("error"): any synchronising call raises."""
    step = training_step(objective, monkeypatch, torch.device("cuda"))
    step(0)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        step(1)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_the_check_catches_each_kind_of_sync():
    x = torch.ones(4, device="meta")
    for bad in (lambda: x.sum().item(), lambda: x[x > 0], lambda: torch.ones(3).to("meta"), lambda: x.nonzero(),
                lambda: torch.tensor(7).to("meta"), lambda: x.new_zeros(()).copy_(torch.tensor(7.0))):
        with pytest.raises(AssertionError):
            with NoHostSync():
                bad()
    with NoHostSync():  # a CPU scalar as an operand: read on the host, no copy
        assert (x * torch.tensor(2.0, dtype=torch.float64)).device.type == "meta"


SAMPLERS = {"baby": ["baby"], "cpu": ["cpu"], "shakespeare_char": ["shakespeare_char"],
            "l2r_blocks": ["baby", "--order=l2r", "--semi_ar_length=4"]}


@pytest.mark.parametrize("preset", list(SAMPLERS))
def test_a_denoising_pass_makes_no_host_sync(preset):
    """Every pass of a block of denoise() at a preset's sampler (baby: random order, the falling temperature; cpu:
    ReMDM; shakespeare_char: confidence, refine; and l2r in semi-AR blocks), self-conditioning included: the call's
    state is built on the CPU (its one read of the layout and copy of the plan), then moved to meta for the passes."""
    from diffusion import Blocks, Denoising, SamplerOptions, fill_by_plan
    from utils.steps import StepRecord
    cfg = get_config(for_objective([*SAMPLERS[preset], *SMALL]))
    tok, meta = Tok(19), torch.device("meta")
    model = Transformer(model_args(cfg, tok.vocab_size)).eval()
    schedule = Schedule(cfg.diffusion_steps, cfg.schedule)
    gen_mask = torch.ones(2, cfg.block_size, dtype=torch.bool)
    gen_mask[:, :4] = False  # a prompt of 4
    opts = SamplerOptions.from_config(cfg)
    blocks = Blocks(gen_mask, schedule, opts)  # the call's setup: the layout read, the plans made
    x = torch.where(gen_mask, tok.mask_id, 0)
    sc = torch.zeros(*x.shape, model.args.vocab_size) if model.args.self_cond else None  # as denoise() starts it
    state = Denoising(model, schedule, tok.mask_id, opts, torch.Generator().manual_seed(0), x,
                      torch.zeros_like(x, dtype=torch.float64), sc)
    record = StepRecord(gen_mask, tok.mask_id, blocks.last, None)
    model.to(meta), schedule.on(meta)
    for name in ("x", "kept", "sc"):
        if getattr(state, name) is not None:
            setattr(state, name, getattr(state, name).to(meta))
    blocks.of, blocks.plans_d = blocks.of.to(meta), [p.to(meta) for p in blocks.plans_d]
    with NoHostSync(), torch.no_grad():
        for b in range(blocks.n):
            fill_by_plan(state, record, blocks, blocks.block(b, cfg.block_size), greedy_end=b == blocks.n - 1)
    assert record.steps == sum(p.size(1) for p in blocks.plans) and record.steps > 1


def checked_from_the_first_pass(model):
    """The model, with the sync check entered at its first forward (after the call's setup: its one read of the
    canvas's layout); returns a function that leaves it."""
    mode, forward = NoHostSync(), model.forward

    def first(*args, **kw):
        if not getattr(mode, "entered", False):
            mode.entered = True
            mode.__enter__()
        return forward(*args, **kw)
    model.forward = first
    return lambda: mode.__exit__(None, None, None) if getattr(mode, "entered", False) else None


@pytest.mark.parametrize("objective", ["uniform", "ar"])
def test_a_uniform_step_and_a_kv_cached_ar_token_make_no_host_sync(objective):
    """Every step of the uniform sampler and every token of the AR's KV-cached decode (decode.generate) on meta."""
    import uniform
    from diffusion import SamplerOptions
    from utils.draws import Law
    cfg = get_config(for_objective([*PRESETS[objective], *SMALL]))
    tok, meta = Tok(19), torch.device("meta")
    model = Transformer(model_args(cfg, tok.vocab_size)).eval().to(meta)
    schedule = Schedule(cfg.diffusion_steps, cfg.schedule)
    schedule.on(meta)
    x, gen_mask = torch.zeros(2, cfg.block_size, dtype=torch.long, device=meta), torch.ones(2, cfg.block_size).bool()
    gen_mask[:, :4] = False  # given text; on the CPU, as the call's one read of the layout would bring it
    leave = checked_from_the_first_pass(model)
    try:
        if objective == "uniform":
            opts = SamplerOptions(steps=4, law=Law(temperature=1.0, top_p=0.9))
            uniform.sample_uniform(model, x, gen_mask, schedule, tok.mask_id, opts, torch.Generator().manual_seed(0))
        else:
            model.generate(x[:, :4], 12, SamplerOptions(1, law=Law(top_k=5)), torch.Generator().manual_seed(0),
                           tok.mask_id)
    finally:
        leave()


def test_bd3_clean_half_decoding_at_batch_2_makes_no_host_sync():
    """--bd3_speculate at batch > 1 (the clean half decodes alone, one token a pass): every pass on meta, its draws
    on the device (at batch 1 a round reads one number on the host: how many drafts it kept)."""
    import bd3
    cfg = get_config(for_objective([*PRESETS["bd3"], *SMALL, "--bd3_ar=true"]))
    tok, meta = Tok(19), torch.device("meta")
    model = Transformer(model_args(cfg, tok.vocab_size)).eval().to(meta)
    leave = checked_from_the_first_pass(model)
    try:
        seq, stats = bd3.sample_clean_ar(model, torch.zeros(2, 5, dtype=torch.long, device=meta), 9,
                                         bd3.Blocks(size=cfg.bd3_block, mask_id=tok.mask_id),
                                         generator=torch.Generator().manual_seed(0))
    finally:
        leave()
    assert seq.shape == (2, 14) and stats["nfe"] == 1 + 9  # the prompt's prefill, then a pass a token
