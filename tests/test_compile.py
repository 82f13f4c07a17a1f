"""The training loss compiled with the model: the split loss (eager draws, then a pure Objective.loss) is the loss
before it (pinned), one graph with no break, reused by later steps, inductor's equal to eager's; compile_step's policy.
Then sampling's compiled steps (tests/test_replay.py's, eager there): few graphs, each drawing eager's tokens.

    python -m pytest -q tests/test_compile.py
"""
import functools
import os
import subprocess
import sys

import pytest
import torch

import bd3
from diffusion import Draw, Schedule
from configurator import get_config
from helpers import Tok, for_objective, model_args
from model import ModelArgs, Transformer, decode
from objectives import OBJECTIVES
from diffusion import SamplerOptions
from test_replay import BLOCKS, MASK, V, _drafting, _net

pytestmark = pytest.mark.slower  # the slower tier (pytest.ini): compilation

SMALL = ["--n_layer=2", "--n_head=2", "--n_embd=32", "--block_size=16", "--batch_size=4", "--device=cpu"]
CASES = {  # each objective at its preset's settings, and the switches the presets leave off
    "mdlm baby": ["baby"],  # self-conditioning, the dual objective's causal pass, 4 masks a window, the band's ramp
    "mdlm reference": [],  # the NELBO, learned time input
    "mdlm masked_ce self_cond": ["--loss_type=masked_ce", "--self_cond"],
    "bd3 baby_bd3": ["baby_bd3"],  # the two-stream pass, self-conditioning, the clean half's loss, 2 masks a window
    "bd3 self_cond elbo": ["--objective=bd3", "--bd3_block=4", "--self_cond", "--mask_min=0.3"],
    "uniform": ["baby", "--objective=uniform", "--time_cond=learned"],
    "ar": ["baby", "--objective=ar"],
}
# (loss, gradient norm, sum over parameters i of (i + 1) * sum |grad_i| in float64) of obj.loss at 6ce747a, before
# the split, torch 2.13.0, one CPU thread. Measure them again at 6ce747a, never from the code under test
BEFORE = {
    "mdlm baby": (3.7050867080688477, 1.3927828428439983, 501.2563893518705),
    "mdlm reference": (2.9946043491363525, 2.3756014967305887, 644.2090341848018),
    "mdlm masked_ce self_cond": (2.9541373252868652, 2.352210171909249, 717.6431601691343),
    "bd3 baby_bd3": (5.745663642883301, 1.5072539219834065, 387.57023993938117),
    "bd3 self_cond elbo": (1.8617709875106812, 0.7639246226778963, 208.55386187820795),
    "uniform": (7.6310954093933105, 2.233410806336097, 709.4617991224634),
    "ar": (2.970127582550049, 1.0844284319746662, 357.21058466746666),
}


def setting(name, flags=()):
    """(obj, model, x, cfg, schedule, tok, draw) of a case: a seeded model, a batch, slot 1 of a global batch of 16,
    30 % into training."""
    cfg = get_config(for_objective([*CASES[name], *SMALL, *flags]))
    obj, tok = OBJECTIVES[cfg.objective], Tok(19)
    torch.manual_seed(0)
    model = Transformer(model_args(cfg, tok.vocab_size))
    x = torch.randint(0, 19, (cfg.batch_size, cfg.block_size + obj.WINDOW), generator=torch.Generator().manual_seed(1))
    draw = Draw(torch.Generator().manual_seed(5), torch.tensor(0.37, dtype=torch.float64), 4, 16, 0.3)
    return obj, model, x, cfg, Schedule(cfg.diffusion_steps, cfg.schedule), tok, draw


def loss_and_grads(model, loss):
    """(loss, gradient norm, checksum) as BEFORE has them, after loss.backward()."""
    loss.backward()
    grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in model.parameters()]
    norm = sum(g.double().square().sum() for g in grads).sqrt().item()
    return loss.item(), norm, sum((i + 1) * g.double().abs().sum() for i, g in enumerate(grads)).item()


@pytest.mark.parametrize("name", list(CASES))
def test_the_split_loss_is_the_loss_before_it(name):
    """train.py's step, draws() eagerly then loss(): the loss, gradient norm and checksum of BEFORE."""
    obj, model, x, cfg, schedule, tok, draw = setting(name)
    drawn = obj.draws(x, cfg, schedule, tok, draw)
    split = loss_and_grads(model, obj.loss(model, x, cfg, schedule, tok, drawn))
    assert split == pytest.approx(BEFORE[name], rel=1e-6, abs=0)


@pytest.mark.parametrize("name, flags", [*((n, []) for n in CASES), ("mdlm reference", ["--time_cond=adaln"])],
                         ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_the_whole_pure_loss_of_every_objective_is_one_graph(name, flags):
    """Everything loss() does, the model's calls included, traced by dynamo as one graph: no break, no host sync."""
    obj, model, x, cfg, schedule, tok, draw = setting(name, flags)
    drawn = obj.draws(x, cfg, schedule, tok, draw)
    torch._dynamo.reset()
    out = torch._dynamo.explain(obj.loss)(model, x, cfg, schedule, tok, drawn)
    assert (out.graph_count, out.graph_break_count) == (1, 0), [str(b.reason)[:300] for b in out.break_reasons]


def test_steps_of_a_run_reuse_one_graph():
    """Five steps as a run takes them (other keys, u, slots, the band's top rising) run the one graph traced at the
    first."""
    from torch._dynamo.utils import counters
    obj, model, x, cfg, schedule, tok, _ = setting("mdlm baby")
    torch._dynamo.reset()
    counters.clear()
    loss = torch.compile(obj.loss, backend="eager")
    for step in range(5):
        draw = Draw(torch.Generator().manual_seed(step), torch.tensor(step / 5, dtype=torch.float64), step % 2 * 4, 8,
                    step / 4)
        loss(model, x, cfg, schedule, tok, obj.draws(x, cfg, schedule, tok, draw)).backward()
    assert counters["stats"]["unique_graphs"] == 1  # a Python number the graph read, changing, would make a second


def test_inductor_compiles_the_loss_with_the_model_to_eagers_loss_and_gradients():
    """torch.compile (inductor, CPU) of mdlm's whole loss: two steps give eager's loss and gradients to rounding."""
    got = {}
    for name in ("eager", "compiled"):
        obj, model, x, cfg, schedule, tok, _ = setting("mdlm reference", ["--n_layer=1", "--n_embd=16"])
        loss_fn = torch.compile(obj.loss) if name == "compiled" else obj.loss
        got[name] = []
        for step in range(2):
            draw = Draw(torch.Generator().manual_seed(step), torch.tensor(0.1 + step / 2, dtype=torch.float64), 0, 4)
            loss = loss_fn(model, x, cfg, schedule, tok, obj.draws(x, cfg, schedule, tok, draw))
            grads = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)
            got[name].append((loss.detach(), [g for g in grads if g is not None]))
    for (eager, eager_grads), (compiled, compiled_grads) in zip(got["eager"], got["compiled"]):
        torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-6)
        for a, b in zip(compiled_grads, eager_grads, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_one_process_compiles_the_loss_with_the_model_and_ddp_the_model_alone(monkeypatch):
    """--compile=auto compiles on CUDA only: one process the objective's whole loss ('reduce-overhead' on CUDA),
    DDP the wrapped model alone; false never."""
    from utils.dist import compile_step
    seen = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: seen.append((fn, kw.get("mode"))) or fn)
    obj, model = OBJECTIVES["mdlm"], torch.nn.Linear(2, 2)
    out = {}
    for flag, device, world in (("auto", "cuda", 1), ("auto", "cuda", 2), ("auto", "cpu", 1), ("true", "cpu", 1),
                                ("false", "cuda", 1)):
        out[flag, device, world] = compile_step(obj, model, get_config([f"--compile={flag}"]), torch.device(device),
                                                world)
        assert out[flag, device, world][1] is model
    assert seen == [(obj.loss, "reduce-overhead"), (model, None), (obj.loss, None)]
    for key in (("auto", "cuda", 2), ("auto", "cpu", 1), ("false", "cuda", 1)):
        assert out[key][0] is obj  # uncompiled: the table's own objective
    compiled = out["auto", "cuda", 1][0]  # a copy whose loss is compiled: the table's objective untouched
    assert compiled is not obj and type(compiled) is type(obj) and "loss" in vars(compiled) and "loss" not in vars(obj)


# ----------------------------------------------------------------------------- sampling's compiled steps

def test_the_compiled_steps_are_two_graphs_per_batch_size():
    """decode_steps compiled on a counting backend (the AR, bd3's clean half at batch > 1): two graphs a batch size
    for a decode past the context (k tokens a call, or one), the eager decode's tokens."""
    from torch._dynamo.testing import CompileCounter
    torch._dynamo.reset()
    for model, sample in ((_net(0), lambda m, x, g: m.generate(x, 30, generator=g, mask_id=MASK)),
                          (_net(1, False, True), lambda m, x, g: bd3.sample_clean_ar(m, x, 30, BLOCKS, generator=g,
                                                                                     draft=False)[0])):
        counter = CompileCounter()
        eager = [sample(model, x, torch.Generator().manual_seed(3)) for x in (torch.zeros(2, 3, dtype=torch.long),
                                                                             torch.ones(1, 2, dtype=torch.long))]
        model.compiler = functools.partial(torch.compile, backend=counter, fullgraph=True, dynamic=False)
        got = [sample(model, x, torch.Generator().manual_seed(3)) for x in (torch.zeros(2, 3, dtype=torch.long),
                                                                           torch.zeros(2, 3, dtype=torch.long))]
        assert counter.frame_count == 2 and torch.equal(got[0], eager[0]) and torch.equal(got[1], eager[0])
        assert torch.equal(sample(model, torch.ones(1, 2, dtype=torch.long), torch.Generator().manual_seed(3)),
                           eager[1]) and counter.frame_count == 4
        torch._dynamo.reset()


def test_inference_samples_the_same_tokens_with_the_decode_step_compiled(tmp_path, capsys, monkeypatch):
    """inference.py --compile=true on an AR checkpoint (dynamo's eager backend): said, and the eager decode's sample."""
    import inference
    from helpers import run_cli_here
    from utils.checkpoint import save_checkpoint
    a = ModelArgs(vocab_size=V, block_size=16, n_layer=1, n_head=2, n_embd=16, causal=True, time_cond="none")
    config = dict(objective="ar", block_size=16, n_layer=1, n_head=2, n_embd=16, time_cond="none")
    save_checkpoint(tmp_path / "m.pt", dict(model=_net(0).__class__(a).state_dict(), config=config,
                                            model_args=vars(a), iter=0, tokenizer=dict(kind="char", chars="abcdefghij")))
    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: compile_(fn, backend="eager", fullgraph=True, dynamic=False))
    texts = {}
    for flag in ("false", "true"):
        code, out, err = run_cli_here(inference.main, [f"--checkpoint={tmp_path / 'm.pt'}", "--prompt=abc",
                                                       "--gen_len=30", "--num_samples=2", "--seed=3",
                                                       f"--compile={flag}", "--viz-video=off"], capsys)
        assert code == 0, err
        assert ("decoding compiled" in out.splitlines()[0]) == (flag == "true")
        texts[flag] = [line for line in out.splitlines()[1:] if not line.startswith("---- ")]  # the samples
    assert texts["true"] == texts["false"] and len(texts["true"]) == 2 and texts["true"][1].startswith("abc")
    torch._dynamo.reset()


def test_the_compiled_drafting_rounds_are_one_graph(monkeypatch):
    """k = 4 whole rounds compiled on a counting backend: one graph for two samples, a host read a call, the eager
    rounds' tokens."""
    from torch._dynamo.testing import CompileCounter
    torch._dynamo.reset()
    prompt, opts = torch.randint(0, 10, (1, 3), generator=torch.Generator().manual_seed(5)), SamplerOptions(1)
    eager = bd3.sample_clean_ar(_drafting(1, False), prompt, 30, BLOCKS, opts, torch.Generator().manual_seed(3))
    m, counter, calls = _net(1, False, True), CompileCounter(), []

    def compiler(fn):
        compiled = torch.compile(fn, backend=counter, fullgraph=True, dynamic=False)
        return lambda *args: calls.append(args[3]) or compiled(*args)  # (model, cache, uniforms, k, ...)
    m.compiler = compiler
    prefills = []  # the eager passes of the text before the newest token, at each window's start
    monkeypatch.setattr(bd3, "decode", lambda *a: prefills.append(1) or decode(*a))
    for _ in range(2):
        out, stats = bd3.sample_clean_ar(m, prompt, 30, BLOCKS, opts, torch.Generator().manual_seed(3))
        # the eager rounds' tokens and kept drafts; its NFE adds the rounds a replay ran without room
        assert torch.equal(out, eager[0]) and stats["kept"] == eager[1]["kept"] and eager[1]["nfe"] <= stats["nfe"] < 30
    rounds = 2 * stats["nfe"] - len(prefills)  # the calls that commit tokens (the NFE counts the prefills too)
    assert counter.frame_count == 1 and set(calls) == {4} and len(prefills) > 0
    assert rounds <= 4 * len(calls) < rounds + 4 * 8  # a read a call; some rounds idle at a jump
    torch._dynamo.reset()


def test_eager_decoding_never_imports_the_compiler():
    """The AR's decode and bd3's drafting rounds, eager, run without importing torch._dynamo (~2 s an eager sample)."""
    code = ("import sys, torch; sys.path.insert(0, 'tests'); import bd3, test_replay as t; "
            "from diffusion import SamplerOptions; "
            "t._net(0).generate(torch.zeros(1, 3, dtype=torch.long), 20, SamplerOptions(1)); "
            "bd3.sample_clean_ar(t._net(0, False, True), torch.zeros(1, 3, dtype=torch.long), 20, t.BLOCKS); "
            "print('torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.stdout.strip() == "False", out.stderr[-2000:]
