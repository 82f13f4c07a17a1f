"""The shape of the house: one objective per module, each a class on diffusion.Objective's contract, behind one
table of plain instances (objectives.OBJECTIVES) that an editor's go-to-definition follows; imports that only point
down (the network imports no sampler), a config.py that imports nothing from the project, and a fifth objective that
is one class, its name and one table line.

    python -m pytest -q tests/test_objectives.py
"""
import ast
import inspect
import re

import pytest
import torch

import configurator
from config import CHOICES
from diffusion import SamplerOptions
from helpers import MICRO, ROOT, for_objective, model_args, real_text, run_cli_here, saved_config
from model import Transformer
from objectives import OBJECTIVES

pytestmark = pytest.mark.core  # the core tier (pytest.ini): the maths, the loop, the samplers

FLAGS = dict(MODEL=dict, WINDOW=int, IGNORES=dict, CONTINUES_ONLY=bool, ANY_LENGTH=bool, NOISE_START=bool,
             EXACT=bool, BLOCKS=bool, SEMI_AR=bool, LOSS_KEY=str)  # the interface's values, by type
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


def test_the_product_never_imports_the_laboratory():
    """dev/ holds the studies: a product module that imported one would ship an experiment to every user."""
    known = {module_name(p) for p in PRODUCT}
    offenders = [p.name for p in PRODUCT if any(n.split(".")[0] == "dev" for n in project_imports(p, known | {"dev"}))]
    dev = {f"dev.{p.stem}" for p in (ROOT / "dev").glob("*.py")}
    offenders += [p.name for p in PRODUCT if project_imports(p, dev)]
    assert not offenders


def test_config_imports_nothing_from_the_project():
    known = {module_name(p) for p in PRODUCT} | {"utils", "scripts"}
    assert project_imports(ROOT / "config.py", known) == set()


# the interface's functions: each one's leading parameters, in the order every caller passes them
SIGNATURES = dict(check=("cfg", "opts", "given"), draws=("x", "cfg", "schedule", "tok", "draw"),
                  loss=("model", "x", "cfg", "schedule", "tok", "drawn"),
                  eval_times=("cfg", "L"), bound=("model", "x", "cfg", "schedule", "tok", "t", "generator"), flops=("model", "cfg"),
                  sample=("model", "x", "gen_mask", "cfg", "opts", "mask_id", "generator", "on_step"),
                  passes=("cfg", "opts", "n_gen", "n_prompt"), describe=("cfg", "opts", "brief"),
                  ar_nll=("model", "windows", "cfg", "mask_id"), unread=("cfg", "opts"), decodes=("cfg", "opts", "batch"))


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_every_objective_offers_the_interface(name):
    """Every objective an instance of the contract (diffusion.Objective) in its own module, defining what has no
    default itself, each method taking what its callers pass, and the answers of a MICRO config agreeing with the
    flags (an exact score has no times)."""
    from configurator import get_config
    from diffusion import Objective
    from model import Transformer
    obj = OBJECTIVES[name]
    assert isinstance(obj, Objective) and type(obj).__module__ == {"mdlm": "diffusion"}.get(name, name)
    for k in ("draws", "loss", "bound", "sample", "passes", "describe"):  # the contract's without a default
        assert getattr(type(obj), k) is not getattr(Objective, k), k
        assert getattr(type(obj), k).__module__ == type(obj).__module__, k  # its own, not a sibling's
    for k, params in SIGNATURES.items():
        assert tuple(inspect.signature(getattr(obj, k)).parameters)[:len(params)] == params, k
    for k, kind in FLAGS.items():
        assert isinstance(getattr(obj, k), kind), k
    assert set(obj.MODEL) <= {"causal", "time_cond", "self_cond", "clean_causal"} and obj.WINDOW in (0, 1)
    cfg = get_config(for_objective([*MICRO, f"--objective={name}"]))
    assert hasattr(cfg, obj.LOSS_KEY) and all(hasattr(cfg, k) and why for k, why in obj.IGNORES.items())
    opts = SamplerOptions.from_config(cfg)
    obj.check(cfg, opts, set())  # MICRO is valid for every objective
    n_times = obj.eval_times(cfg, cfg.block_size)
    assert isinstance(n_times, int) and n_times >= 0 and (n_times == 0) == obj.EXACT
    model = Transformer(model_args(cfg, 12))
    assert all(getattr(model.args, k) == v for k, v in obj.MODEL.items())
    flops, columns = obj.flops(model, cfg)
    assert flops >= model.flops_per_token() and columns >= cfg.block_size
    n = obj.passes(cfg, opts, 8)
    assert n is None or (isinstance(n, int) and n >= 1)
    assert isinstance(obj.describe(cfg, opts), str) and obj.describe(cfg, opts)


def test_objective_branches_outside_the_table_are_few_and_say_why():
    """No `objective ==` / `objective in` outside the table and option validation: at most 5, each commented."""
    pattern = re.compile(r"objective *(==|!=| in | not in )")
    hits = [(p.name, line) for p in PRODUCT for line in p.read_text().splitlines() if pattern.search(line)]
    assert len(hits) <= 5, hits
    assert all("#" in line for _, line in hits), hits


def test_longest_product_function_fits_on_a_screen():
    longest = max((n.end_lineno - n.lineno + 1, p.name, n.name) for p in PRODUCT
                  for n in ast.walk(ast.parse(p.read_text())) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))
    assert longest[0] <= 80, longest


def test_a_fifth_objective_is_one_class_and_one_table_line(tmp_path, monkeypatch, capsys):
    """A toy objective registered in the table (and named among config.py's choices) trains, evaluates,
    checkpoints and samples through the same entry points, which reach it only through the table (it counts its
    calls)."""
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


# ----------------------------------------------------------------------------- keys an objective does not read
def _flag(key):
    from config import Config
    return f"--{key}={getattr(Config(), key)}"  # its default value: refused for being given, not for its value


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_every_objective_refuses_every_given_key_it_does_not_read(name, tmp_path):
    """One mechanism for all (configurator.validate over the objective's IGNORES): by flag or config file, a key the
    objective does not read is refused in a message naming the key, the objective and why."""
    from configurator import get_config
    from utils.errors import UserError
    ignored = OBJECTIVES[name].IGNORES
    assert ignored and all(isinstance(why, str) and why for why in ignored.values()), name
    for key in ignored:
        with pytest.raises(UserError, match=rf"objective={name} does not read --{key}: {re.escape(ignored[key])}; drop"):
            get_config([f"--objective={name}", _flag(key)])
        f = tmp_path / f"{key}.py"
        f.write_text(f"objective = {name!r}\n{key} = {getattr(get_config([]), key)!r}\n")
        with pytest.raises(UserError, match=f"--{key}"):
            get_config([str(f)])
    read = [k for k in ("temperature", "top_k", "seed", "n_layer") if k not in ignored]
    assert get_config([f"--objective={name}", *map(_flag, read)]).objective == name  # the keys it reads pass


def test_a_presets_unread_keys_are_not_refused():
    """A preset sets keys for its own objective; switching the objective leaves them unread, not refused."""
    from configurator import get_config
    assert get_config(["cpu_bd3", "--objective=mdlm"]).bd3_block == 4
    assert get_config(["cpu", "--objective=ar"]).objective == "ar"


def test_mdlm_and_ar_refuse_block_diffusion_keys_on_the_command_line(capsys):
    from helpers import assert_one_line_error
    import train
    for name in ("mdlm", "ar"):
        code, _, err = run_cli_here(train.main, [f"--objective={name}", "--bd3_block=8", "--bd3_mask_min=0.3"], capsys)
        assert_one_line_error(code, err, f"objective={name}", "--bd3_block")


def test_sampling_an_ar_checkpoint_refuses_diffusion_flags(in_tmp, capsys):
    """inference.py reads the checkpoint's objective: --steps means nothing to an AR model. (In a temp folder: the
    traces go to its artifacts/media/.)"""
    tmp_path = in_tmp
    import inference
    import train
    from helpers import assert_one_line_error
    out = tmp_path / "ar"
    train.main(for_objective([f"--data_path={real_text()}", f"--out_dir={out}", *MICRO, "--objective=ar",
                              "--max_iters=1", "--eval_interval=1"]))
    ck = f"--checkpoint={out / 'model.pt'}"
    code, _, err = run_cli_here(inference.main, [ck, "--steps=8", "--device=cpu"], capsys)
    assert_one_line_error(code, err, "objective=ar", "--steps")
    code, text, err = run_cli_here(inference.main, [ck, "--gen_len=4", "--temperature=0.5", "--device=cpu"], capsys)
    assert code == 0, err
    assert "device cpu, float32 forward passes, float64 draws" in text.splitlines()[0]  # the precision that sampled


@pytest.mark.parametrize("argv, passes", [
    # (the flags, the training FLOPs per window token as a multiple of one pass of the network over the window, by hand)
    (["--objective=ar"], 1.0),
    (["--objective=uniform", "--time_cond=learned"], 1.0),
    ([], 1.0),                                              # mdlm: one masked pass
    (["--mask_draws=4"], 4.0),                              # four masks of each window: four passes
    (["--self_cond"], 7 / 6),                               # + a forward (2 of 6 FLOPs a weight) for half the rows
    (["--mask_draws=3", "--self_cond"], 3 * 7 / 6),
    (["--time_cond=none", "--dual_ar=0.25"], 1 + 31 / 32),  # + the causal pass over L - 1 tokens
    (["--time_cond=none", "--dual_ar=0.25", "--mask_draws=4"], 4 + 31 / 32),  # the causal pass reads each window once
])
def test_the_training_flops_of_every_objective_by_hand(argv, passes):
    """objective.flops against a hand count: the window's passes (mask_draws, self-conditioning's extra forward, the
    dual objective's causal pass), each 6 FLOPs a weight plus attention (model.flops_per_token). bd3 by hand below."""
    from configurator import get_config
    cfg = get_config(for_objective([*MICRO, *argv]))
    model = Transformer(model_args(cfg, 12))
    flops, columns = OBJECTIVES[cfg.objective].flops(model, cfg)
    assert columns == cfg.block_size and flops == pytest.approx(model.flops_per_token() * passes, rel=1e-12)


@pytest.mark.parametrize("argv, columns, passes", [
    (["--bd3_block=4"], 2 * 32 - 4, 1.0),                  # [x_t ; x_0 less its last block]
    (["--bd3_block=4", "--bd3_ar=1"], 2 * 32, 1.0),        # the clean half whole (its next-token loss)
    (["--bd3_block=4", "--mask_draws=2"], 2 * 32 - 4, 2.0),
    (["--bd3_block=8", "--mask_draws=2", "--self_cond"], 2 * 32 - 8, 2 * 7 / 6),
])
def test_bd3s_training_flops_by_hand(argv, columns, passes):
    """bd3's pass reads `columns` columns for the window's 32 tokens: per window token, flops_per_token(columns) x
    columns / 32, once per pass."""
    from configurator import get_config
    cfg = get_config([*MICRO, "--objective=bd3", *argv])
    model = Transformer(model_args(cfg, 12))
    flops, cols = OBJECTIVES["bd3"].flops(model, cfg)
    assert cols == columns and flops == pytest.approx(model.flops_per_token(columns) * columns / 32 * passes, rel=1e-12)


SAMPLERS = [["--objective=mdlm"], ["--objective=mdlm", "--time_cond=none", "--dual_ar=0.25", "--dual_sample"],
            ["--objective=bd3", "--bd3_block=4"], ["--objective=bd3", "--bd3_block=4", "--bd3_ar=1", "--bd3_speculate"],
            ["--objective=uniform"], ["--objective=ar"]]


def _sampler_cfg(argv):
    from configurator import get_config
    micro = [a for a in MICRO if not ({"--bd3_speculate", "--dual_sample"} & set(argv) and a.startswith("--steps"))]
    return get_config(for_objective([*micro, "--prompt=ab", *argv]))


@pytest.mark.parametrize("argv", SAMPLERS, ids=lambda a: "+".join(a))
def test_every_sampler_returns_a_canvas_without_a_blank_unchanged(argv):
    """The neighbour of a canvas with blanks, through objective.sample: ar.sample read its prompt as 0 tokens long
    (argmax of an all-False gen_mask) and raised an IndexError; the others returned x."""
    cfg = _sampler_cfg(argv)
    model = Transformer(model_args(cfg, 5)).eval()
    x = torch.randint(0, 4, (2, 10), generator=torch.Generator().manual_seed(0))
    out, _ = OBJECTIVES[cfg.objective].sample(model, x.clone(), torch.zeros_like(x, dtype=torch.bool), cfg,
                                              SamplerOptions.from_config(cfg), 4, torch.Generator().manual_seed(0))
    assert torch.equal(out, x), argv


@pytest.mark.parametrize("argv", SAMPLERS, ids=lambda a: "+".join(a))
def test_every_sampler_keeps_each_rows_given_tokens_or_refuses_the_layout(argv):
    """Through objective.sample, prompts of different lengths in one batch, and given text after the blanks: ar and
    bd3 read row 0's prompt length for every row and overwrote the other rows' prompts and any suffix."""
    from utils.errors import UserError
    cfg = _sampler_cfg(argv)
    model = Transformer(model_args(cfg, 5)).eval()
    x = torch.randint(0, 4, (2, 12), generator=torch.Generator().manual_seed(0))
    ragged, suffix = torch.zeros_like(x, dtype=torch.bool), torch.zeros_like(x, dtype=torch.bool)
    ragged[0, 3:], ragged[1, 7:], suffix[:, 3:9] = True, True, True
    for gen_mask in (ragged, suffix):
        try:
            out, _ = OBJECTIVES[cfg.objective].sample(model, x.clone(), gen_mask, cfg, SamplerOptions.from_config(cfg),
                                                      4, torch.Generator().manual_seed(0))
        except (AssertionError, UserError):  # a left-to-right sampler continues one prompt length
            assert cfg.objective in ("ar", "bd3") or cfg.dual_sample, argv
            continue
        assert torch.equal(out[~gen_mask], x[~gen_mask]), argv


@pytest.mark.parametrize("argv", SAMPLERS, ids=lambda a: "+".join(a))
def test_every_sampler_runs_without_autograd(argv):
    """A sampler that keeps autograd on builds a graph at every pass (a decorator lost in a refactor costs time and
    memory, never a wrong token): every network call of every sampler runs with gradients off."""
    from sampling.canvas import build_canvas
    from utils.tokenizer import CharTokenizer
    cfg = _sampler_cfg(argv)
    tok = CharTokenizer("abcd")
    model = Transformer(model_args(cfg, tok.vocab_size)).eval()
    calls = []
    model.register_forward_pre_hook(lambda m, a: calls.append(torch.is_grad_enabled()))
    opts = SamplerOptions.from_config(cfg)
    canvas = build_canvas(cfg, opts, tok, cfg.block_size)  # the interface, as the scripts call it
    x, gen_mask = torch.tensor(canvas.ids).repeat(2, 1), torch.tensor(canvas.gen).repeat(2, 1)  # as fill builds them
    OBJECTIVES[cfg.objective].sample(model, x, gen_mask, cfg, opts, tok.mask_id, torch.Generator().manual_seed(0))
    assert calls and not any(calls), argv


def test_an_unknown_objective_is_refused_with_the_known_ones(tmp_path):
    """Issue 97, the restructured contract's edge: an objective name the table does not hold, in a config file or in a
    checkpoint's config, is refused in one line listing every known one (the table's names are config.py's CHOICES);
    a known one beside it runs."""
    from configurator import get_config
    from utils.errors import UserError
    known = ", ".join(OBJECTIVES)
    f = tmp_path / "c.py"
    f.write_text("objective = 'masked'\n")
    with pytest.raises(UserError, match=f"objective='masked' is not one of {known}"):
        get_config([str(f)])
    with pytest.raises(UserError, match=f"a checkpoint's config: objective='masked' is not one of {known}"):
        saved_config(dict(objective="masked"))
    f.write_text("objective = 'bd3'\n")
    assert get_config([str(f)]).objective == "bd3" and saved_config(dict(objective="ar")).objective == "ar"
    assert tuple(OBJECTIVES) == CHOICES["objective"]  # one list of names, never two
