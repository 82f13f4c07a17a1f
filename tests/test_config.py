"""Config parsing: presets, files, --key=value, strict errors, --help; what a fresh clone needs.
python -m pytest -q tests/test_config.py"""
import io
import json
import math
import os
import subprocess
import sys
import tokenize
from dataclasses import fields

import pytest

from config import NEEDS, PRESETS, RANGES, Config
from configurator import get_config
from helpers import ENV, ROOT, acting_value, model_args, run_cli_here, saved_config
from utils.errors import UserError
from utils.values import TYPES, check_values, interval, within
from objectives import OBJECTIVES


def test_defaults_are_the_reference_recipe():
    c = Config()
    assert (c.tokenizer, c.block_size, c.n_layer, c.n_head, c.n_embd, c.diffusion_steps) == ("char", 256, 6, 6, 384, 100)
    assert (c.batch_size, c.max_iters, c.learning_rate, c.schedule) == (64, 5000, 3e-4, "cosine")


def test_layers_apply_in_order(tmp_path):
    f = tmp_path / "exp.py"
    f.write_text("n_layer = 3\nlearning_rate = 1  # an int is fine for a float\n")
    c = get_config(["cpu", str(f), "--n_layer=5", "--gen-len", "12", "--resume", "--prompt", "Hi there"])
    assert c.n_embd == PRESETS["cpu"]["n_embd"] and c.n_layer == 5 and c.learning_rate == 1.0
    assert c.gen_len == 12 and c.resume is True and c.prompt == "Hi there"


def test_config_file_typo_is_rejected(tmp_path):
    f = tmp_path / "exp.py"
    f.write_text("learnig_rate = 1e-3\n")
    with pytest.raises(UserError, match="did you mean learning_rate"):
        get_config([str(f)])


@pytest.mark.slower
def test_cli_exits_2_with_one_line_and_no_traceback():
    r = subprocess.run([sys.executable, "train.py", "--max_itters=3"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr
    assert "unknown config key 'max_itters'" in r.stderr and "max_iters" in r.stderr


def _tiny_checkpoint(path):
    import torch
    from model import ModelArgs, Transformer
    from utils.checkpoint import save_checkpoint
    torch.manual_seed(0)
    a = ModelArgs(vocab_size=3, block_size=16, n_layer=1, n_head=2, n_embd=16, diffusion_steps=10)
    save_checkpoint(path, dict(model=Transformer(a).state_dict(), config=dict(block_size=16, n_layer=1, n_head=2,
                                                                               n_embd=16, diffusion_steps=10),
                               model_args=vars(a), tokenizer=dict(kind="char", chars="ab"), iter=0))
    return path


def test_inference_reads_the_device_the_dtype_the_seed_and_compile_from_its_command_line(tmp_path):
    import inference
    ckpt = _tiny_checkpoint(tmp_path / "model.pt")
    from configurator import parse
    cfg, run = inference.load(parse([f"--checkpoint={ckpt}", "--device=cpu", "--dtype=float32", "--seed=7", "--steps=5",
                                     "--compile=false"]))
    assert (cfg.device, cfg.dtype, cfg.seed, cfg.compile, run["opts"].steps) == ("cpu", "float32", 7, "false", 5)
    assert run["device"].type == "cpu" and run["model"].compiler is None


def _without_comments(source):
    """source with every comment cut out (tokenize: a '#' inside a string stays)."""
    lines = source.splitlines(keepends=True)
    for tok in reversed(list(tokenize.generate_tokens(io.StringIO(source).readline))):
        if tok.type == tokenize.COMMENT:
            row, col = tok.start
            lines[row - 1] = lines[row - 1][:col].rstrip() + "\n"
    return "".join(lines)


def _headings_moved(source):
    """source with every `# ---- section` heading of Config moved to the top of the class: every key then sits
    under the last heading (system), where --help lists it."""
    lines = source.splitlines(keepends=True)
    headings = [line for line in lines if line.strip().startswith("# ----")]
    rest = [line for line in lines if not line.strip().startswith("# ----")]
    top = rest.index("class Config:\n") + 1
    return "".join(rest[:top] + headings + rest[top:])


def _what_the_config_means(folder):
    """In a fresh interpreter whose config.py is folder's: the roles of the keys, the defaults, NEEDS, the presets
    and each preset resolved, the choices (what the program does with the config, never its prose)."""
    code = ("import json, config, configurator as c; from dataclasses import asdict; "
            "print(json.dumps(dict(file=config.__file__, sampled=sorted(config.SAMPLED), trained=config.TRAINED, "
            "resumable=config.RESUMABLE, defaults=asdict(config.Config()), needs=config.NEEDS, presets=config.PRESETS, "
            "resolved={p: asdict(c.get_config([p])) for p in config.PRESETS}, "
            "choices={k: list(v) for k, v in c.CHOICES.items()}), default=str))")
    env = {**ENV, "PYTHONPATH": os.pathsep.join([str(folder), str(ROOT)])}
    out = subprocess.run([sys.executable, "-c", code], cwd=folder, env=env, capture_output=True, text=True, check=True)
    meaning = json.loads(out.stdout)
    assert os.path.dirname(meaning.pop("file")) == str(folder)  # the copy was read, not the repo's config.py
    return meaning


@pytest.mark.slower  # starts two interpreters a case (each imports torch)
@pytest.mark.parametrize("edit", [_without_comments, _headings_moved])
def test_editing_or_moving_a_comment_in_config_py_changes_no_behaviour(edit, tmp_path):
    """config.py is the file users edit: its comments are prose for the reader and --help. With every comment gone,
    or the section headings moved, the keys sampling reads, a resume may change and training fixes, the defaults,
    the presets and the choices stay what they are."""
    source = (ROOT / "config.py").read_text()
    edited = edit(source)
    assert edited != source
    (tmp_path / "as_shipped").mkdir()
    (tmp_path / "as_shipped" / "config.py").write_text(source)
    (tmp_path / "edited").mkdir()
    (tmp_path / "edited" / "config.py").write_text(edited)
    shipped = _what_the_config_means(tmp_path / "as_shipped")
    assert shipped["sampled"] and shipped["trained"] and shipped["resumable"]
    assert _what_the_config_means(tmp_path / "edited") == shipped


def test_each_modules_choices_are_config_pys_own():
    """A key's choices are stated once, on its field in config.py: each module that implements them holds that very
    tuple, and the configurator checks and lists the same."""
    import importlib
    import config
    import configurator
    for module, name, key in [("utils.optim", "OPTIMIZERS", "optimizer"), ("utils.dist", "DTYPES", "dtype"),
                              ("model", "TIME_CONDS", "time_cond")]:
        assert getattr(importlib.import_module(module), name) is config.CHOICES[key], (module, name)
    assert importlib.import_module("diffusion").UNSCORED_ORDERS is config.UNSCORED_ORDERS
    assert tuple(OBJECTIVES) == config.CHOICES["objective"] and configurator.CHOICES is config.CHOICES


@pytest.mark.parametrize("argv, value", [
    (["--compile"], "true"), (["--compile", "--max_iters=3"], "true"), (["--compile=false"], "false"),
    (["--compile", "auto"], "auto"), ([], "auto"), (["gpt200m"], "true")])
def test_compile_is_a_tristate_a_bare_flag_sets_true(argv, value):
    assert get_config(argv).compile == value


@pytest.mark.parametrize("given, value", [(True, "true"), (False, "false"), ("auto", "auto")])
def test_a_bool_compile_from_a_config_file_or_an_older_checkpoint_reads_as_its_word(given, value, tmp_path):
    """A tristate key takes a bool as its word; a checkpoint's config holds a plain str (torch.load weights_only)."""
    import io
    import torch
    from dataclasses import asdict
    f = tmp_path / "exp.py"
    f.write_text(f"compile = {given!r}\n")
    assert get_config([str(f)]).compile == value and saved_config(dict(compile=given)).compile == value
    saved = asdict(get_config([str(f)]))
    assert type(saved["compile"]) is str
    buf = io.BytesIO()
    torch.save(dict(config=saved), buf)
    buf.seek(0)
    assert torch.load(buf, weights_only=True)["config"]["compile"] == value
    with pytest.raises(UserError, match="compile='maybe' is not one of auto, true, false"):
        get_config(["--compile=maybe"])


def test_renamed_keys_keep_their_old_names(tmp_path):
    new = get_config(["--semi-ar-length=8"])
    assert new.semi_ar_length == 8
    assert get_config(["--block-length", "8"]) == new  # old flags
    f = tmp_path / "old.py"
    f.write_text("block_length = 8\n")
    assert get_config([str(f)]) == new  # old config files
    from utils.checkpoint import migrate
    old_ckpt_config = {k: v for k, v in vars(new).items() if k != "semi_ar_length"}
    old_ckpt = dict(config=dict(old_ckpt_config, block_length=8), model={})
    assert saved_config(migrate(old_ckpt)["config"]) == new  # old checkpoints, through the one migration
    with pytest.raises(UserError, match="semi_ar_length must be >= 0"):
        get_config(["--block_length=-1"])


def test_checkpoints_from_before_the_layer_rename_still_load(tmp_path):
    import torch
    from model import ModelArgs, Transformer
    from checkpoint_manager import load_model
    from utils.checkpoint import save_checkpoint
    torch.manual_seed(0)
    a = ModelArgs(vocab_size=11, block_size=16, n_layer=2, n_head=2, n_embd=32, diffusion_steps=10, time_cond="adaln")
    m = Transformer(a)
    old = {k.replace("layers.", "blocks."): v for k, v in m.state_dict().items()}  # adaln.blocks.N and blocks.N
    assert any(k.startswith("blocks.") for k in old) and any(k.startswith("adaln.blocks.") for k in old)
    save_checkpoint(tmp_path / "old.pt", dict(model=old, config={}, model_args=vars(a),
                                              tokenizer=dict(kind="char", chars="abcdefghij"), iter=0))
    fresh, _ = load_model(tmp_path / "old.pt", "cpu")  # every load goes through utils.checkpoint.migrate
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in fresh.state_dict().items())


def test_a_removed_model_option_loads_when_off_and_is_named_when_on(tmp_path):
    """value_residual lived in ModelArgs for a few commits (4e97389 to ab77de4), attn_scale until 2026-11-27:
    checkpoints written then carry them. Off, they changed nothing in the network, so they load; an option in use
    that the code lacks is named, not 'damaged'."""
    import torch
    from utils.checkpoint import REMOVED
    from model import ModelArgs, Transformer
    from checkpoint_manager import load_model
    from utils.checkpoint import save_checkpoint
    a = ModelArgs(vocab_size=11, block_size=16, n_layer=2, n_head=2, n_embd=32, diffusion_steps=10)
    m = Transformer(a)
    for name, off, on in (("value_residual", False, True), ("attn_scale", 0.0, 0.35)):
        for value in (off, on):
            save_checkpoint(tmp_path / "c.pt", dict(model=m.state_dict(), config={}, model_args={**vars(a), name: value},
                                                    tokenizer=dict(kind="char", chars="abcdefghij"), iter=0))
            if value == off:
                fresh, _ = load_model(tmp_path / "c.pt", "cpu")
                assert all(torch.equal(v, m.state_dict()[k]) for k, v in fresh.state_dict().items())
            else:
                with pytest.raises(UserError, match=f"trained with {name}={on}, which this version removed.*"
                                                    f"git checkout {REMOVED[name][0]}"):
                    load_model(tmp_path / "c.pt", "cpu")


@pytest.mark.parametrize("cli", ["train", "inference"])
def test_help_lists_the_presets_then_every_key_with_type_default_and_comment(cli, capsys):
    import importlib
    code, out, err = run_cli_here(importlib.import_module(cli).main, ["--help"], capsys)  # PRESET --help: resolved
    assert code == 0 and not err
    assert out.index("presets:") < out.index("  --learning_rate=FLOAT") < out.index("  --temperature=FLOAT")
    assert all(f"  {name} " in out for name in PRESETS)
    assert all(f"  --{f.name}=" in out for f in fields(Config))  # every key, by section
    assert "peak AdamW LR; default 0.0003" in out  # the comment beside the field in config.py, then the default
    assert "1 = model.pt and best.pt only" in out  # a comment continued on the next line joins its key
    assert "\noptimisation:\n" in out and "\nsampling (inference.py" in out
    assert ("[from the checkpoint]" in out) == (cli == "inference")


def test_a_removed_key_is_named_as_removed_with_where_its_verdict_is(capsys):
    import train
    from utils.checkpoint import REMOVED
    from helpers import assert_one_line_error
    assert not set(REMOVED) & {f.name for f in fields(Config)}  # a removed key is no key
    for key in ("time_beta", "corrector_steps", "bd3_check", "head_on_masked_only"):
        with pytest.raises(UserError, match=f"--{key} was removed.*dev/LOG.md"):
            get_config([f"--{key}=1"])
    # a bare boolean flag too, from the command line: one line, exit 2
    code, out, err = run_cli_here(train.main, ["cpu", "--head_on_masked_only"], capsys)
    assert_one_line_error(code, err, "--head_on_masked_only was removed", "dev/LOG.md names its verdict")


def test_a_presets_help_is_its_resolved_config_with_its_keys_marked(capsys):
    import train
    code, out, err = run_cli_here(train.main, ["baby", "--max_iters=10", "--help"], capsys)
    assert code == 0 and not err
    lines = {ln[2:].split(" = ")[0].strip(): ln for ln in out.splitlines()[1:]}
    assert set(lines) == {f.name for f in fields(Config)}  # every key, once
    assert all(lines[k].startswith("* ") for k in PRESETS["baby"] if k != "max_iters")  # the preset's keys marked
    assert lines["max_iters"].startswith("+ ") and lines["max_iters"].endswith("= 10")  # a flag: given, its value
    assert lines["dropout"].startswith("  ") and lines["mask_draws"].endswith("= 4")  # a default unmarked; resolved


def test_inference_presets_help_is_the_sampling_settings_it_resolves_to(capsys, tmp_path, monkeypatch):
    """Issue 97: inference.py cpu --help was byte for byte inference.py --help (100 steps, refine, gen_len 256), though
    README says --help shows each preset's settings: it shows them as train.py PRESET --help does, '*' the preset's,
    '+' a flag's, the rest the checkpoint's own (here the shipped weights standing in), sampling keys only."""
    import inference
    from utils import fileio
    monkeypatch.setattr(fileio, "REPO", str(tmp_path))  # a fresh clone's: no run of one's own (this checkout may hold)
    monkeypatch.chdir(tmp_path)
    shipped = os.path.relpath(ROOT / "artifacts" / "weights" / "cpu")
    _, plain, _ = run_cli_here(inference.main, ["--help"], capsys)
    code, out, err = run_cli_here(inference.main, ["cpu", "--temperature=0.5", "--help"], capsys)
    assert code == 0 and not err and out != plain
    assert "the sampling settings it resolves to" in out and f"{shipped}'s own" in out
    lines = {ln[2:].split(" = ")[0].strip(): ln for ln in out.splitlines() if " = " in ln}
    assert set(lines) == set(inference.SAMPLED_KEYS)  # a network's or training's key is the checkpoint's: not listed
    assert lines["steps"] == "* steps                 = 64" and lines["gen_len"].endswith("= 96")
    assert lines["remask"].startswith("* ") and lines["remask"].endswith("= 'remdm'")
    assert lines["temperature"].startswith("+ ") and lines["temperature"].endswith("= 0.5")
    assert lines["top_k"].startswith("  ") and lines["checkpoint"].endswith(f"= '{shipped}'")
    # a checkpoint named, no preset: its own settings (baby_bd3's speculative sampler), not the defaults
    code, out, _ = run_cli_here(inference.main, ["--checkpoint", str(ROOT / "artifacts/weights/baby_bd3"), "--help"],
                                capsys)
    lines = {ln[2:].split(" = ")[0].strip(): ln for ln in out.splitlines() if " = " in ln}
    assert code == 0 and lines["bd3_speculate"].endswith("= True") and lines["checkpoint"].startswith("+ ")
    # a preset not trained and not shipped: the defaults its run would save, said so
    code, out, _ = run_cli_here(inference.main, ["tinystories_cpu", "--help"], capsys)
    assert code == 0 and "the rest: the defaults: artifacts/models/tinystories_cpu/model.pt is not trained yet" in out


@pytest.mark.parametrize("script_name, argv", [("dev/bench_train", ["baby", "--n_layer=2", "--iters=3", "--help"]),
                                               ("dev/threads", ["cpu", "--loads", "quiet", "--help"])])
def test_a_dev_script_that_takes_a_preset_shows_its_resolved_config(script_name, argv, capsys):
    """Issue 97: bench_train.py baby --help and threads.py cpu --help printed argparse's help alone: the config they
    time, as train.py resolves the preset, follows it."""
    from helpers import script
    code, out, err = run_cli_here(script(script_name).main, argv, capsys)
    assert code == 0 and not err and "usage: " in out
    lines = {ln[2:].split(" = ")[0].strip(): ln for ln in out.splitlines() if " = " in ln}
    preset = argv[0]
    assert all(lines[k].startswith(("* ", "+ ")) for k in PRESETS[preset]), out
    assert ("+ n_layer" in out) == ("--n_layer=2" in argv)


def test_the_readme_commands_read_the_shipped_corpus():
    """python train.py and python train.py cpu need no file from outside the repo; a preset that does names the
    command that makes it."""
    from utils.dataloader import MAKE_DATA
    for argv in ([], ["cpu"], ["shakespeare_char"]):
        assert get_config(argv).data_path == "data/tinyshakespeare.txt" and (ROOT / "data/tinyshakespeare.txt").is_file()
    assert get_config(["cpu"]).prompt == "ROMEO:"
    for name in PRESETS:
        c = get_config([name])
        for path in filter(None, (c.data_path, c.val_path)):
            assert (ROOT / path).is_file() or path in MAKE_DATA, (name, path)


def test_no_product_file_names_the_development_layout():
    """../shared is where this repo's developers keep data, not something a user has; only tests may look there."""
    offenders = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*.py")
                 if "tests" not in p.relative_to(ROOT).parts and ".venv" not in p.parts and "../shared" in p.read_text()]
    assert not offenders


def test_the_readme_states_the_parameter_count_train_py_cpu_prints():
    import re
    import configurator
    from model import Transformer
    m = re.search(r"`python train.py cpu` trains .*?, an ([\d,]+)-parameter model", (ROOT / "README.md").read_text(), re.S)
    vocab = len(set((ROOT / "data/tinyshakespeare.txt").read_text())) + 1  # the chars + [MASK]
    n = Transformer(model_args(get_config(["cpu"]), vocab)).num_params()
    assert m and int(m[1].replace(",", "")) == n


def test_a_presets_falling_temperature_does_not_leave_its_hot_start_to_an_objective_that_ignores_the_fall():
    """baby's sampler starts at 1.0 and cools as the canvas fills (end share 0.1): a pair. The AR and uniform read
    no fall, so baby --objective=ar samples at a constant default temperature unless one is given."""
    from configurator import get_config
    assert (get_config(["baby"]).temperature, get_config(["baby"]).temperature_end_share) == (1.0, 0.1)
    for objective in ("ar", "uniform"):
        c = get_config(["baby", f"--objective={objective}"])
        assert (c.temperature, c.temperature_end_share) == (1.0, 1.0), objective
    assert get_config(["baby", "--objective=ar", "--temperature=1.3"]).temperature == 1.3  # what the user asks runs
    # mdlm's AR mode reads no fall either (configurator.effective, through its unread keys)
    c = get_config(["baby", "--dual_sample"])
    assert (c.temperature, c.temperature_end_share) == (1.0, 1.0)


@pytest.mark.parametrize("argv, words", [
    (["--temperature=1e999"], "temperature must be a finite number, got inf"),
    (["baby_bd3", "--temperature=1e999"], "temperature must be a finite number, got inf"),  # bd3 ended in an assert
    (["--objective=ar", "--temperature=1e999"], "temperature must be a finite number"),  # the AR printed RO________
    (["--temperature=1e-320"], "temperature=1e-320 is below 1e-06, where a draw is already the argmax"),
    (["--temperature=1e-7"], "give 0 for the argmax, or 1e-06+"),
    (["--temperature=1e305", "--temperature_end_share=1e5"], "whose product with it is finite, got 100000.0"),
    (["--temperature_end_share=1e7"], "give a number in [0, 1e6]"),  # T (s + (1 - s) f) rounds to 0 at s = 2^64
    (["--top_p=1e999"], "top_p must be a finite number, got inf"),
    (["--learning_rate=-1e999"], "learning_rate must be a finite number, got -inf"),
])
def test_a_temperature_or_filter_that_can_make_a_row_with_no_law_is_refused(argv, words):
    """Each would leave the draw a row with no mass or a NaN/inf (logits / T overflowing float64): refused at
    validation in one line; the floor, 1e-6, is where a draw is already an argmax (utils.draws.MIN_TEMPERATURE)."""
    with pytest.raises(UserError) as e:
        get_config(argv)
    assert words in str(e.value)
    assert get_config(["--temperature=1e-6"]).temperature == 1e-6 and get_config(["--temperature=0"]).temperature == 0


@pytest.mark.parametrize("key", [k for k, t in TYPES.items() if t is float])
def test_a_nan_is_refused_for_every_float_key(key, tmp_path):
    """nan compares False with every bound (0 < nan <= 1 is False, nan < 0 too): each range check alone would let
    it through. A config file cannot write one (float('nan') is a call, and nothing in the file runs); a checkpoint's
    config or an export's config.json (JSON's NaN) can, and is checked as a command line is."""
    f = tmp_path / "nan.py"
    f.write_text(f"{key} = float('nan')\n")
    with pytest.raises(UserError, match="line 1: not `key = value` with a literal value"):
        get_config([str(f)])
    with pytest.raises(UserError, match=f"checkpoint c.pt's config: {key} must be a finite number, got nan"):
        saved_config({key: float("nan")}, "checkpoint c.pt")


def test_a_config_file_is_data_read_line_by_line_and_nothing_in_it_runs(tmp_path, monkeypatch):
    """python train.py my.py exec()ed the file: a line calling os.system ran its command. Now each statement is
    `key = value` with a Python literal; anything else is one line naming its line number, before any of it acts."""
    monkeypatch.chdir(tmp_path)
    ok = tmp_path / "ok.py"
    ok.write_text("# a comment\n\nmax_iters = 7  # why\nprompt = 'Hi'\nqk_norm = True\nlearning_rate = 1e-3\n")
    cfg = get_config([str(ok)])
    assert (cfg.max_iters, cfg.prompt, cfg.qk_norm, cfg.learning_rate) == (7, "Hi", True, 1e-3)
    for body, line in [("max_iters = 3\n__import__('os').system('touch PWNED')\n", 2), ("import os\n", 1),
                       ("n_layer = 2 ** 3\n", 1), ("x = y = 1\n", 1), ("max_iters = len('ab')\n", 1),
                       ("# c\nmax_iters = (\n", 2)]:
        f = tmp_path / "bad.py"
        f.write_text(body)
        with pytest.raises(UserError, match=f"config file .*bad.py, line {line}: "):
            get_config([str(f)])
    assert not (tmp_path / "PWNED").exists()


def test_past_validation_an_infinite_temperature_raises_in_the_draw_instead_of_returning_mask():
    """What validation now refuses, forced past it: the AR's draw at temperature inf (each logit / inf is 0, [MASK]'s
    -inf / inf NaN) raises; it returned [MASK] for every token (the issue's 'RO________')."""
    import torch
    import configurator
    from model import Transformer
    from diffusion import SamplerOptions
    from utils.draws import Law
    cfg = get_config(["--objective=ar", "--block_size=16", "--n_layer=1", "--n_head=2", "--n_embd=16"])
    model = Transformer(model_args(cfg, 12)).eval()
    with pytest.raises(RuntimeError, match="no mass or a NaN/inf entry"):
        model.generate(torch.zeros(1, 2, dtype=torch.long), 4, SamplerOptions(1, Law(temperature=float("inf"))),
                 torch.Generator().manual_seed(0), mask_id=11)


@pytest.mark.parametrize("key", sorted(RANGES))
def test_each_range_holds_its_ends_as_config_py_writes_them(key):
    """RANGES' interval notation read at its edges: a closed end is taken and the number past it refused, an open end
    refused and the number just inside taken (an off-by-one at '[' or ')' is caught on every key at once)."""
    from dataclasses import replace
    low, high, low_in, high_in = interval(key)
    typ = TYPES[key]
    for end, inside_step, closed in ((low, 1, low_in), (high, -1, high_in)):
        if not math.isfinite(end):
            continue
        step = 1 if typ is int else max(abs(end), 1.0) * 1e-9
        taken, refused = (end, end - inside_step * step) if closed else (end + inside_step * step, end)
        assert within(key, typ(taken)) and not within(key, typ(refused)), (key, taken, refused)
        with pytest.raises(UserError):  # and check_values reads the same range
            check_values(replace(Config(), **{key: typ(refused)}))


@pytest.mark.parametrize("key", sorted(NEEDS))
def test_a_key_with_the_key_it_acts_with_is_read(key):
    """config.NEEDS' other side (its refusals: tests/test_refusals.py's needs_rows): given with each key it acts with
    at a value it acts with, a key passes validation."""
    from configurator import parse, validate
    need = NEEDS[key]
    paths = dict(viz_video="p.mp4", html="p.html")  # a path key's value names its kind of file
    for other, values in need if isinstance(need[0], tuple) else (need,):
        on = acting_value(other, getattr(Config, other))[0] if values is None else values[0]
        flags = [f"--{other}={paths.get(other, on)}"] if values != (False,) else []  # (False,): its default is on
        cfg, given = parse([*flags, f"--{key}={acting_value(key, getattr(Config, key))[0]}"]).over()
        validate(cfg, given, training=False)
