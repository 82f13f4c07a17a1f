"""Under --compile (train.py compiles the model) every objective's training step runs as whole graphs: no graph break,
no host sync, in the calls objective.loss makes into the model. Counted with torch._dynamo.explain on CPU.
python -m pytest -q tests/test_compile.py"""
import pytest
import torch

import objectives
from common import Draw, Schedule
from configurator import get_config
from model import Transformer
from utils.tokenizer import CharTokenizer


class Explained(torch.nn.Module):
    """The model, each call also traced by dynamo: breaks[i] is the graph-break count of call i (and why)."""

    def __init__(self, model):
        super().__init__()
        self.model, self.args, self.breaks = model, model.args, []

    def forward(self, *args, **kwargs):
        torch._dynamo.reset()
        out = torch._dynamo.explain(self.model)(*args, **kwargs)
        self.breaks.append((out.graph_break_count, [str(b.reason)[:200] for b in out.break_reasons]))
        return self.model(*args, **kwargs)


@pytest.mark.slow  # ~10 s: dynamo's first trace
@pytest.mark.parametrize("flags", [["--objective=mdlm"], ["--objective=mdlm", "--time_cond=adaln"],
                                   ["--objective=uniform"], ["--objective=ar"], ["--objective=bd3", "--bd3_block=4"]],
                         ids=lambda f: " ".join(f))
def test_the_training_step_of_every_objective_has_no_graph_break(flags):
    cfg = get_config([*flags, "--n_layer=1", "--n_head=2", "--n_embd=16", "--block_size=16", "--batch_size=2",
                      "--device=cpu"])
    tok = CharTokenizer(list("abcdefgh"))
    obj = objectives.get(cfg.objective)
    model = Explained(Transformer(objectives.model_args(cfg, tok.vocab_size)))
    x = torch.randint(0, tok.vocab_size - 1, (2, cfg.block_size + obj.WINDOW), generator=torch.Generator().manual_seed(0))
    u = torch.rand((), dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    loss = obj.loss(model, x, cfg, Schedule(cfg.diffusion_steps, cfg.schedule), tok, Draw(torch.Generator().manual_seed(2), u, 0, 2))
    loss.backward()
    assert model.breaks and all(n == 0 for n, _ in model.breaks), model.breaks


def test_one_cuda_gpu_compiles_the_step_with_cuda_graphs_and_nothing_else_does(monkeypatch):
    """compile_step's policy (dev/LOG.md, cbeb8ba: a reference-recipe step 11.9 -> 6.3 ms on an H200 with CUDA graphs):
    --compile=auto compiles on CUDA only; mode 'reduce-overhead' on one CUDA GPU, the plain compile under DDP (graphs
    unmeasured there) and on a CPU given --compile=true; --compile=false never."""
    from utils.dist import compile_step
    seen = []
    monkeypatch.setattr(torch, "compile", lambda model, **kw: seen.append(kw.get("mode")) or model)
    for flag, device, world in (("auto", "cuda", 1), ("auto", "cuda", 2), ("auto", "cpu", 1), ("true", "cpu", 1),
                                ("false", "cuda", 1)):
        compile_step(torch.nn.Linear(2, 2), get_config([f"--compile={flag}"]), torch.device(device), world)
    assert seen == ["reduce-overhead", None, None]
