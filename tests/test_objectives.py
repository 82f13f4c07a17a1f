"""Imports that only point down, each objective on diffusion.Objective's contract behind objectives.OBJECTIVES, a
fifth objective as one class and one table line, training FLOPs by hand, every sampler's contract with the canvas.
python -m pytest -q tests/test_objectives.py"""
import ast

import pytest
import torch

from config import CHOICES
from configurator import get_config
from diffusion import SamplerOptions
from helpers import MICRO, ROOT, for_objective, model_args, real_text, run_cli_here
from model import Transformer
from objectives import OBJECTIVES

pytestmark = pytest.mark.core  # the core tier (pytest.ini): the maths, the loop, the samplers

PRODUCT = sorted(p for folder in ("", "utils/", "scripts/", "sampling/", "evals/") for p in ROOT.glob(f"{folder}*.py"))


def module_name(path):
    rel = path.relative_to(ROOT).with_suffix("")
    return ".".join(rel.parts)


def project_imports(path, known):
    """The project modules a file imports, anywhere in it (function-level imports count: they can close a cycle)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        found |= {n for n in names if n in known}
    return found


def test_imports_have_no_cycle():
    known = {module_name(p) for p in PRODUCT}
    graph = {module_name(p): project_imports(p, known) - {module_name(p)} for p in PRODUCT}
    state = {}

    def visit(m, path):
        state[m] = "open"
        for n in sorted(graph.get(m, ())):
            assert state.get(n) != "open", "import cycle: " + " -> ".join(path + [n])
            if n not in state:
                visit(n, path + [n])
        state[m] = "done"

    for m in graph:
        if m not in state:
            visit(m, [m])
    assert graph["config"] == set() and graph["utils.errors"] == set()  # the bottom stays the bottom
    ground = {"config", "utils.dist", "utils.draws", "utils.errors", "utils.steps"}  # keys, where and how a draw runs, a Step
    assert graph["model"] <= ground  # the network and its generate import no sampler (issue 94)
    assert graph["diffusion"] <= ground | {"model"}  # masked diffusion: on the network and the ground
    for name in ("ar", "bd3", "uniform"):  # each builds on diffusion.py and model.py, never on a sibling
        assert graph[name] <= ground | {"diffusion", "model"}, name
    # the table, above the four (and a config as its objective runs it: config.py's keys, model.py's ModelArgs)
    assert graph["objectives"] - {"config", "model"} == {"ar", "bd3", "diffusion", "uniform"}


def test_the_product_never_imports_the_laboratory_nor_names_the_development_layout():
    """No product module imports dev/ (the studies) or names ../shared (the developers' data)."""
    known = {module_name(p) for p in PRODUCT}
    offenders = [p.name for p in PRODUCT if any(n.split(".")[0] == "dev" for n in project_imports(p, known | {"dev"}))]
    dev = {f"dev.{p.stem}" for p in (ROOT / "dev").glob("*.py")}
    offenders += [p.name for p in PRODUCT if project_imports(p, dev)]
    assert not offenders
    named = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*.py")
             if "tests" not in p.relative_to(ROOT).parts and ".venv" not in p.parts and "../shared" in p.read_text()]
    assert not named


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_every_objective_answers_the_contract_for_a_micro_config(name):
    """Each objective answers the contract for a MICRO config; its network holds what the objective fixes (MODEL)."""
    from diffusion import Objective
    obj = OBJECTIVES[name]
    assert isinstance(obj, Objective)
    cfg = get_config(for_objective([*MICRO, f"--objective={name}"]))
    opts = SamplerOptions.from_config(cfg)
    obj.check(cfg, opts, set())
    n_times = obj.eval_times(cfg, cfg.block_size)
    assert isinstance(n_times, int) and n_times >= 0 and (n_times == 0) == obj.EXACT
    model = Transformer(model_args(cfg, 12))
    assert all(getattr(model.args, k) == v for k, v in obj.MODEL.items())
    flops, columns = obj.flops(model, cfg)
    assert flops >= model.flops_per_token() and columns >= cfg.block_size
    n = obj.passes(cfg, opts, 8)
    assert n is None or (isinstance(n, int) and n >= 1)
    assert obj.describe(cfg, opts)


def test_a_fifth_objective_is_one_class_and_one_table_line(tmp_path, monkeypatch, capsys):
    """A toy objective in the table trains, evaluates and samples through the entry points, reached by the table."""
    import inference
    import train
    from diffusion import MaskedDiffusion
    calls = {"draws": 0, "loss": 0, "bound": 0, "sample": 0}
    monkeypatch.chdir(tmp_path)  # the end-of-run sample's trace and inference's go to artifacts/media/ here

    def counted(name):
        def call(self, *args, **kwargs):
            calls[name] += 1
            return getattr(MaskedDiffusion, name)(self, *args, **kwargs)
        return call
    toy = type("Toy", (MaskedDiffusion,), {name: counted(name) for name in calls})()  # masked diffusion, counted
    monkeypatch.setitem(OBJECTIVES, "toy", toy)  # its line in the table
    monkeypatch.setitem(CHOICES, "objective", (*CHOICES["objective"], "toy"))  # config.py lists it
    out = tmp_path / "out"
    train.main([f"--data_path={real_text()}", f"--out_dir={out}", *MICRO, "--objective=toy", "--max_iters=6",
                "--eval_interval=3"])
    assert calls["draws"] == calls["loss"] == 6 and calls["bound"] > 0 and calls["sample"] == 1
    code, text, err = run_cli_here(inference.main, [f"--checkpoint={out / 'model.pt'}", "--prompt=ROMEO:", "--gen_len=8",
                                                    "--device=cpu"], capsys)
    assert code == 0 and "toy," in text and calls["sample"] == 2, err


@pytest.mark.parametrize("argv, columns, passes", [
    # (the flags, the columns a pass reads for the window's 32 tokens, the passes a window costs, by hand)
    (["--objective=ar"], 32, 1.0),
    (["--objective=uniform", "--time_cond=learned"], 32, 1.0),
    ([], 32, 1.0),                                              # mdlm: one masked pass
    (["--mask_draws=4"], 32, 4.0),                              # four masks of each window: four passes
    (["--self_cond"], 32, 7 / 6),                               # + a forward (2 of 6 FLOPs a weight), half the rows
    (["--mask_draws=3", "--self_cond"], 32, 3 * 7 / 6),
    (["--time_cond=none", "--dual_ar=0.25"], 32, 1 + 31 / 32),  # + the causal pass over L - 1 tokens
    (["--time_cond=none", "--dual_ar=0.25", "--mask_draws=4"], 32, 4 + 31 / 32),  # the causal pass: once a window
    (["--objective=bd3", "--bd3_block=4"], 2 * 32 - 4, 1.0),    # [x_t ; x_0 less its last block]
    (["--objective=bd3", "--bd3_block=4", "--bd3_ar=1"], 2 * 32, 1.0),  # the clean half whole (its next-token loss)
    (["--objective=bd3", "--bd3_block=4", "--mask_draws=2"], 2 * 32 - 4, 2.0),
    (["--objective=bd3", "--bd3_block=8", "--mask_draws=2", "--self_cond"], 2 * 32 - 8, 2 * 7 / 6),
])
def test_the_training_flops_of_every_objective_by_hand(argv, columns, passes):
    """objective.flops: per window token, flops_per_token(columns) x columns / 32 for each of the window's passes."""
    cfg = get_config(for_objective([*MICRO, *argv]))
    model = Transformer(model_args(cfg, 12))
    flops, cols = OBJECTIVES[cfg.objective].flops(model, cfg)
    want = model.flops_per_token(columns) * columns / 32 * passes
    assert cols == columns and flops == pytest.approx(want, rel=1e-12)


SAMPLERS = [["--objective=mdlm"], ["--objective=mdlm", "--time_cond=none", "--dual_ar=0.25", "--dual_sample"],
            ["--objective=bd3", "--bd3_block=4"], ["--objective=bd3", "--bd3_block=4", "--bd3_ar=1", "--bd3_speculate"],
            ["--objective=uniform"], ["--objective=ar"]]


@pytest.mark.parametrize("argv", SAMPLERS, ids=lambda a: "+".join(a))
def test_every_sampler_keeps_each_rows_given_tokens_and_runs_without_autograd(argv):
    """objective.sample keeps every given token (no blank, ragged, text after blanks) or refuses; no autograd."""
    from sampling.canvas import build_canvas
    from utils.errors import UserError
    from utils.tokenizer import CharTokenizer
    micro = [a for a in MICRO if not ({"--bd3_speculate", "--dual_sample"} & set(argv) and a.startswith("--steps"))]
    cfg = get_config(for_objective([*micro, "--prompt=ab", *argv]))
    opts, tok = SamplerOptions.from_config(cfg), CharTokenizer("abcd")
    model = Transformer(model_args(cfg, tok.vocab_size)).eval()
    calls = []
    model.register_forward_pre_hook(lambda m, a: calls.append(torch.is_grad_enabled()))
    canvas = build_canvas(cfg, opts, tok, cfg.block_size)  # the interface, as the scripts call it
    x = torch.randint(0, 4, (2, 12), generator=torch.Generator().manual_seed(0))
    blank, ragged, suffix = (torch.zeros_like(x, dtype=torch.bool) for _ in range(3))
    ragged[0, 3:], ragged[1, 7:], suffix[:, 3:9] = True, True, True
    cases = [(torch.tensor(canvas.ids).repeat(2, 1), torch.tensor(canvas.gen).repeat(2, 1)),
             (x, blank), (x, ragged), (x, suffix)]
    for i, (ids, gen_mask) in enumerate(cases):
        try:
            out, _ = OBJECTIVES[cfg.objective].sample(model, ids.clone(), gen_mask, cfg, opts, tok.mask_id,
                                                      torch.Generator().manual_seed(0))
        except (AssertionError, UserError):  # a left-to-right sampler continues one prompt length
            assert i >= 2 and (cfg.objective in ("ar", "bd3") or cfg.dual_sample), argv
            continue
        assert torch.equal(out[~gen_mask], ids[~gen_mask]), argv
    assert calls and not any(calls), argv
