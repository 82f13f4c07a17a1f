"""The config: presets, files and flags in order, config files as data, ranges, NEEDS, old names and checkpoints,
--help, README's figures of the config. python -m pytest -q tests/test_config.py"""
import io
import json
import math
import os
import subprocess
import sys
import tokenize
from dataclasses import fields

import pytest
import torch

from config import NEEDS, PRESETS, RANGES, Config
from configurator import get_config
from helpers import ENV, ROOT, acting_value, model_args, run_cli_here, saved_config
from model import ModelArgs, Transformer
from utils.checkpoint import save_checkpoint
from utils.errors import UserError
from utils.values import TYPES, check_values, interval, within


def test_layers_apply_in_order(tmp_path):
    f = tmp_path / "exp.py"
    f.write_text("n_layer = 3\nlearning_rate = 1  # an int is fine for a float\n")
    c = get_config(["cpu", str(f), "--n_layer=5", "--gen-len", "12", "--resume", "--prompt", "Hi there"])
    assert c.n_embd == PRESETS["cpu"]["n_embd"] and c.n_layer == 5 and c.learning_rate == 1.0
    assert c.gen_len == 12 and c.resume is True and c.prompt == "Hi there"


def _save(path, args, state=None, config=None):
    """A checkpoint of a network of args (a dict of ModelArgs' fields), its weights state (a fresh network's)."""
    state = Transformer(ModelArgs(**args)).state_dict() if state is None else state
    save_checkpoint(path, dict(model=state, config=config or {}, model_args=args, iter=0,
                               tokenizer=dict(kind="char", chars="abcdefghij"[:args["vocab_size"] - 1])))
    return path


def test_inference_reads_the_device_the_dtype_the_seed_and_compile_from_its_command_line(tmp_path):
    import inference
    from configurator import parse
    torch.manual_seed(0)
    args = dict(vocab_size=3, block_size=16, n_layer=1, n_head=2, n_embd=16, diffusion_steps=10)
    ckpt = _save(tmp_path / "model.pt", vars(ModelArgs(**args)), config={k: v for k, v in args.items() if k != "vocab_size"})
    cfg, run = inference.load(parse([f"--checkpoint={ckpt}", "--device=cpu", "--dtype=float32", "--seed=7", "--steps=5",
                                     "--compile=false"]))
    assert (cfg.device, cfg.dtype, cfg.seed, cfg.compile, run["opts"].steps) == ("cpu", "float32", 7, "false", 5)
    assert run["device"].type == "cpu" and run["model"].compiler is None


def _without_comments(source):
    lines = source.splitlines(keepends=True)
    for tok in reversed(list(tokenize.generate_tokens(io.StringIO(source).readline))):
        if tok.type == tokenize.COMMENT:
            row, col = tok.start
            lines[row - 1] = lines[row - 1][:col].rstrip() + "\n"
    return "".join(lines)


def _headings_moved(source):
    lines = source.splitlines(keepends=True)
    headings = [line for line in lines if line.strip().startswith("# ----")]
    rest = [line for line in lines if not line.strip().startswith("# ----")]
    top = rest.index("class Config:\n") + 1
    return "".join(rest[:top] + headings + rest[top:])


def _what_the_config_means(folder):
    """What a fresh interpreter with folder's config.py does with the config: roles, defaults, presets, choices."""
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
    """config.py's comments are prose: cut them, or move the headings, and the config means the same."""
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


@pytest.mark.parametrize("argv, value", [
    (["--compile"], "true"), (["--compile", "--max_iters=3"], "true"), (["--compile=false"], "false"),
    (["--compile", "auto"], "auto"), ([], "auto"), (["gpt200m"], "true")])
def test_compile_is_a_tristate_a_bare_flag_sets_true(argv, value):
    assert get_config(argv).compile == value


@pytest.mark.parametrize("given, value", [(True, "true"), (False, "false"), ("auto", "auto")])
def test_a_bool_compile_from_a_config_file_or_an_older_checkpoint_reads_as_its_word(given, value, tmp_path):
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


def test_an_old_checkpoint_loads_and_a_removed_option_in_use_is_named(tmp_path):
    """Old layer names load, a removed option left off loads; one in use is named with the commit that had it."""
    from checkpoint_manager import load_model
    from utils.checkpoint import REMOVED
    torch.manual_seed(0)
    a = ModelArgs(vocab_size=11, block_size=16, n_layer=2, n_head=2, n_embd=32, diffusion_steps=10, time_cond="adaln")
    m = Transformer(a)
    old = {k.replace("layers.", "blocks."): v for k, v in m.state_dict().items()}
    assert any(k.startswith("blocks.") for k in old) and any(k.startswith("adaln.blocks.") for k in old)
    for state, name, value in ((old, "n_layer", 2), (m.state_dict(), "value_residual", False),
                               (m.state_dict(), "attn_scale", 0.0), (m.state_dict(), "attn_scale", 0.35)):
        _save(tmp_path / "c.pt", {**vars(a), name: value}, state)
        if name in REMOVED and value:
            with pytest.raises(UserError, match=f"trained with {name}={value}, which this version removed.*"
                                                f"git checkout {REMOVED[name][0]}"):
                load_model(tmp_path / "c.pt", "cpu")
        else:
            fresh, _ = load_model(tmp_path / "c.pt", "cpu")
            assert all(torch.equal(v, m.state_dict()[k]) for k, v in fresh.state_dict().items())


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
    with pytest.raises(UserError, match="--time_beta was removed.*dev/LOG.md"):
        get_config(["--time_beta=1"])
    # a bare boolean flag too, from the command line: one line, exit 2
    code, out, err = run_cli_here(train.main, ["cpu", "--head_on_masked_only"], capsys)
    assert_one_line_error(code, err, "--head_on_masked_only was removed", "dev/LOG.md names its verdict")


@pytest.mark.parametrize("script_name, argv, flag", [
    ("train", ["baby", "--max_iters=10", "--help"], ("max_iters", "10")),
    ("dev/bench_train", ["baby", "--n_layer=2", "--iters=3", "--help"], ("n_layer", "2")),
    ("dev/threads", ["cpu", "--loads", "quiet", "--help"], None)])
def test_a_presets_help_is_its_resolved_config_with_its_keys_marked(script_name, argv, flag, capsys):
    """PRESET --help (train.py's, a dev script's after its usage): every key resolved, '*' the preset's, '+' a flag."""
    import importlib
    from helpers import script
    main = importlib.import_module(script_name).main if script_name == "train" else script(script_name).main
    code, out, err = run_cli_here(main, argv, capsys)
    assert code == 0 and not err and ("usage: " in out) == (script_name != "train")
    lines = {ln[2:].split(" = ")[0].strip(): ln for ln in out.splitlines() if " = " in ln}
    assert {f.name for f in fields(Config)} <= set(lines)
    assert all(lines[k].startswith("* ") for k in PRESETS[argv[0]] if not flag or k != flag[0])
    if flag:
        assert lines[flag[0]].startswith("+ ") and lines[flag[0]].endswith(f"= {flag[1]}")
    draws = PRESETS[argv[0]].get("mask_draws", 1)  # resolved
    assert lines["dropout"].startswith("  ") and lines["mask_draws"].endswith(f"= {draws}")


def test_inference_presets_help_is_the_sampling_settings_it_resolves_to(capsys, tmp_path, monkeypatch):
    """inference.py PRESET --help: the sampling settings it resolves to, the rest the checkpoint's (or the defaults)."""
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


def test_the_readme_commands_read_the_shipped_corpus():
    """python train.py (cpu) reads the shipped corpus; another preset's file exists or has a command that makes it."""
    from utils.dataloader import MAKE_DATA
    for argv in ([], ["cpu"], ["shakespeare_char"]):
        assert get_config(argv).data_path == "data/tinyshakespeare.txt" and (ROOT / "data/tinyshakespeare.txt").is_file()
    assert get_config(["cpu"]).prompt == "ROMEO:"
    for name in PRESETS:
        c = get_config([name])
        for path in filter(None, (c.data_path, c.val_path)):
            assert (ROOT / path).is_file() or path in MAKE_DATA, (name, path)


def test_the_readme_states_the_parameter_counts_train_py_and_train_py_cpu_print():
    import re
    readme = (ROOT / "README.md").read_text()
    vocab = len(set((ROOT / "data/tinyshakespeare.txt").read_text())) + 1  # the chars + [MASK]
    m = re.search(r"`python train.py cpu` trains .*?, an ([\d,]+)-parameter model", readme, re.S)
    assert m and int(m[1].replace(",", "")) == Transformer(model_args(get_config(["cpu"]), vocab)).num_params()
    m = re.search(r"`python train.py`\. It trains the reference recipe .*?: ([\d.]+)M parameters", readme, re.S)
    assert m and float(m[1]) == round(Transformer(model_args(get_config([]), vocab)).num_params() / 1e6, 1)


def test_a_presets_keys_for_another_objective_are_left_unread_and_its_falling_temperature_goes_with_them():
    """Another objective leaves a preset's keys unread, and its falling temperature (a pair) goes with them."""
    assert get_config(["cpu_bd3", "--objective=mdlm"]).bd3_block == 4
    assert get_config(["cpu", "--objective=ar"]).objective == "ar"
    assert (get_config(["baby"]).temperature, get_config(["baby"]).temperature_end_share) == (1.0, 0.1)
    for objective in ("ar", "uniform"):
        c = get_config(["baby", f"--objective={objective}"])
        assert (c.temperature, c.temperature_end_share) == (1.0, 1.0), objective
    assert get_config(["baby", "--objective=ar", "--temperature=1.3"]).temperature == 1.3  # what the user asks runs
    # mdlm's AR mode reads no fall either (configurator.effective, through its unread keys)
    c = get_config(["baby", "--dual_sample"])
    assert (c.temperature, c.temperature_end_share) == (1.0, 1.0)


@pytest.mark.parametrize("argv, words", [
    (["--temperature=1e-7"], "give 0 for the argmax, or 1e-06+"),
    (["--temperature=1e305", "--temperature_end_share=1e5"], "whose product with it is finite, got 100000.0"),
    (["--temperature_end_share=-0.5"], "got -0.5"),  # the last draws' temperature below 0
])
def test_a_temperature_that_can_make_a_row_with_no_law_is_refused(argv, words):
    with pytest.raises(UserError) as e:
        get_config(argv)
    assert words in str(e.value)
    assert get_config(["--temperature=1e-6"]).temperature == 1e-6 and get_config(["--temperature=0"]).temperature == 0


@pytest.mark.parametrize("key", [k for k, t in TYPES.items() if t is float])
def test_a_nan_is_refused_for_every_float_key(key, tmp_path):
    """nan passes every range check: a config file cannot write one; a checkpoint's config can, and is refused."""
    f = tmp_path / "nan.py"
    f.write_text(f"{key} = float('nan')\n")
    with pytest.raises(UserError, match="line 1: not `key = value` with a literal value"):
        get_config([str(f)])
    with pytest.raises(UserError, match=f"checkpoint c.pt's config: {key} must be a finite number, got nan"):
        saved_config({key: float("nan")}, "checkpoint c.pt")


def test_a_config_file_is_data_read_line_by_line_and_nothing_in_it_runs(tmp_path, monkeypatch):
    """Each statement is `key = value` with a literal; anything else is refused by line number before any acts."""
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
    (tmp_path / "typo.py").write_text("learnig_rate = 1e-3\n")
    with pytest.raises(UserError, match="did you mean learning_rate"):
        get_config([str(tmp_path / "typo.py")])


@pytest.mark.parametrize("key", sorted(RANGES))
def test_each_range_holds_its_ends_as_config_py_writes_them(key):
    """RANGES at its edges: a closed end taken and just past it refused, an open end refused and just inside taken."""
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
    """NEEDS' valid side (test_refusals.py holds the refusals): beside what it acts with, a key passes."""
    from configurator import parse, validate
    need = NEEDS[key]
    paths = dict(viz_video="p.mp4", html="p.html")  # a path key's value names its kind of file
    for other, values in need if isinstance(need[0], tuple) else (need,):
        on = acting_value(other, getattr(Config, other))[0] if values is None else values[0]
        flags = [f"--{other}={paths.get(other, on)}"] if values != (False,) else []  # (False,): its default is on
        cfg, given = parse([*flags, f"--{key}={acting_value(key, getattr(Config, key))[0]}"]).over()
        validate(cfg, given, training=False)
