"""The refusal contract: bad input exits 2 with one line `error: ...` naming the problem and a fix the program takes,
before any work, no existing file changed, no temp file left, nothing run from a data file; valid input beside it
reaches the work. Each row runs a CLI's main() in this process, in a fresh directory of small real checkpoints.

Most rows come from the tables the program reads, so a new key, flag or script is tried the moment it exists:
config_rows (each config key's bad values; NEEDS; IGNORES; a sampler switch's unread keys), checkpoint_rows (each
CLI's checkpoint missing, a folder, damaged, a pickle), derived_rows (each script's argparse flags), worker_rows
(each CLI under a torchrun worker's environment). HAND holds what no table states; VALID, each row run until its
work starts. Read-only and full disks are simulated: every write under the named folder raises EACCES or ENOSPC.

    python -m pytest -q tests/test_refusals.py
"""
import argparse
import ast
import builtins
import errno
import fnmatch
import functools
import json
import math
import os
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import inference
import train
from config import CHOICES, LIMITS, NEEDS, RANGES, SAMPLING_ONLY, Config
from helpers import (ENV, FIXTURES, HANG, MICRO, PACING, ROOT, acting_value, assert_one_line_error, for_objective,
                     real_text, run_cli_here, script)
from objectives import OBJECTIVES
from sampling import video
from utils import fileio
from utils.checkpoint import save_checkpoint
from utils.cli import output
from utils.dist import THREAD_VARS
from utils.errors import UserError, run_cli
from utils.values import TYPES, interval


def discover():
    """Every CLI: train.py, inference.py and each scripts/*.py and dev/*.py that defines a top-level main(). A new
    script is found here: its parser's rows (derived_rows) and its checkpoint's (checkpoint_rows, with a BASE) come
    with it."""
    found = [p for p in sorted([*(ROOT / "scripts").glob("*.py"), *(ROOT / "dev").glob("*.py")])
             if any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in ast.parse(p.read_text()).body)]
    return ["train.py", "inference.py", *(f"{p.parent.name}/{p.name}" for p in found)]


MAINS = {"train.py": lambda: train.main, "inference.py": lambda: inference.main}
MAINS.update({cli: (lambda n=cli[:-3]: script(n if n.startswith("dev/") else n[8:]).main) for cli in discover()
              if cli.startswith(("scripts/", "dev/"))})


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Small checkpoints of each kind the rows need (diffusion, AR on another text, uniform, dual, decoding by
    threshold or entropy bound), an export, and files spoiled in each way a row names."""
    d = tmp_path_factory.mktemp("files")
    common = ["--max_iters=4", "--eval_interval=4", "--log_interval=2", "--keep_last=1", *MICRO]
    no_steps = [a for a in common if not a.startswith("--steps=")]
    runs = dict(dm=common, ar=[f"--data_path={FIXTURES / 'tiny_stories.txt'}", "--objective=ar", *common],
                uni=["--objective=uniform", *common], dual=["--dual_ar=0.25", "--time_cond=none", *common],
                th=["--threshold=0.5", *no_steps], ar_sh=["--objective=ar", *common],
                eb=["--entropy_bound=0.5", "--order=entropy", "--remask=none", *no_steps])
    cwd = os.getcwd()
    os.chdir(d)
    try:
        for out, args in runs.items():
            train.main(for_objective([f"--data_path={real_text()}", f"--out_dir={out}", *args]))
    finally:
        os.chdir(cwd)
    (d / "empty.txt").write_text("")
    (d / "short.txt").write_text("To be, or not")
    (d / "text.txt").write_text(real_text().read_text()[:20000])
    (d / "old.txt").write_text("a file someone cares about\n")
    good = (d / "dm" / "model.pt").read_bytes()
    (d / "truncated.pt").write_bytes(good[: len(good) // 2])
    (d / "nul.pt").write_bytes(b"weights\0\0\0\x01\x02 and more" * 50)  # UTF-8, yet binary: NUL bytes
    torch.save({"weights": torch.zeros(3)}, d / "foreign.pt")
    torch.save({"model": {}, "model_args": {}}, d / "nanogpt.pt")  # the keys of nanoGPT's ckpt.pt, for its model.py
    (d / "broken.py").write_text("import a_module_nobody_has\n")
    (d / "evil.pt").write_bytes(b"cos\nsystem\n(S'touch PWNED'\ntR.")  # os.system('touch PWNED') if unpickled
    (d / "evil.pkl").write_bytes(b"cos\nsystem\n(S'touch PWNED'\ntR.")
    raw = torch.load(d / "dm" / "model.pt", weights_only=True)  # damaged after it was written: a weight changed,
    next(iter(raw["model"].values())).view(-1)[:8] += 1.0  # the checksum it carries no longer matches
    torch.save(raw, d / "damaged.pt")
    raw = torch.load(d / "dm" / "model.pt", weights_only=True)  # a diverged run's weights, with their own checksum
    next(iter(raw["model"].values())).fill_(float("nan"))
    save_checkpoint(d / "nan.pt", {k: v for k, v in raw.items() if k != "checksum"})
    (d / "not_a_tokenizer.json").write_text('{"hello": 1}')
    script("train_tokenizer").main(["--input", str(d / "text.txt"), "--output", str(d / "tokenizer.json"),
                                    "--vocab-size", "300"])
    script("export").main([str(d / "dm" / "model.pt"), str(d / "exp")])
    shutil.copytree(d / "exp", d / "exp_novocab")
    (d / "exp_novocab" / "vocab.json").unlink()
    shutil.copytree(d / "exp", d / "exp_altered")  # an export whose weights changed after export
    from safetensors.torch import load_file, save_file
    w = load_file(d / "exp_altered" / "model.safetensors")
    next(iter(w.values())).view(-1)[:8] += 1.0
    save_file(w, d / "exp_altered" / "model.safetensors")
    shutil.copytree(d / "exp", d / "exp_damaged")
    w = d / "exp_damaged" / "model.safetensors"
    w.write_bytes(w.read_bytes()[:100])
    (d / "empty_dir").mkdir()
    (d / "folder.mp4").mkdir()  # a folder named as a file: --viz-video's
    (d / "folder.html").mkdir()  # and --html's
    (d / "old.html").write_text("<p>a page someone cares about</p>\n")
    (d / "trace.gif").mkdir()  # the GIF trace.mp4 would write beside it
    (d / "prompts.txt").write_text("ROMEO:\ncaf\u00e9 \u2603\n")
    (d / "prompts_ok.txt").write_text("ROMEO:\nTo be\n")
    # eval.py's JSON with one AR run (nothing to plot per timestep), the same cut short, an export's config.json cut
    eval_json = json.dumps(dict(settings={}, runs=[dict(name="ar/model.pt", path="ar/model.pt", objective="ar")]))
    (d / "eval.json").write_text(eval_json)
    (d / "cut.json").write_text(eval_json[: len(eval_json) // 2])
    shutil.copytree(d / "exp", d / "exp_cutjson")
    c = d / "exp_cutjson" / "config.json"
    c.write_bytes(c.read_bytes()[:200])
    (d / "old.png").write_bytes(b"\x89PNG\r\n\x1a\n a plot someone cares about")
    # config files: a BOM and CRLF lines, a key set twice, a number past 4,300 digits; literals that are no value
    (d / "bom.py").write_bytes(b"\xef\xbb\xbftemperature = 0.5\r\nseed = 3\r\n")
    (d / "bom_train.py").write_bytes(b"\xef\xbb\xbfn_layer = 1\r\nn_head = 2\r\n")
    (d / "neighbours.py").write_text("n_head = 0x2\nn_layer = +1\nlearning_rate = 3e-3\nwarmup_iters = 1_0\n"
                                     "temperature = 1\n")
    for name, (text, _) in BAD_CONFIG_FILES.items():
        (d / f"{name}.py").write_text(text + "\n")
    # runs with keys this version removed: ones no network, loss or law read (dropped), one training read (refused)
    raw = torch.load(d / "dm" / "model.pt", weights_only=True)
    for name, extra in (("old_display", dict(live_fps=4.0, remdm_t_on=0.3)), ("old_training", dict(time_beta=0.5))):
        shutil.copytree(d / "dm", d / name)
        edited = {**{k: v for k, v in raw.items() if k != "checksum"}, "config": {**raw["config"], **extra}}
        for file in ("model.pt", "best.pt"):
            (d / name / file).unlink()
            save_checkpoint(d / name / file, edited)
    return d


def _fail_writes(monkeypatch, root, code, pattern="*"):
    """Writes under `root` to names matching `pattern` raise OSError(code), as on a read-only or full disk."""
    root = os.path.abspath(root)
    err = OSError(code, os.strerror(code))

    def hit(path):
        p = os.path.abspath(os.fspath(path))
        return p.startswith(root + os.sep) and fnmatch.fnmatch(os.path.basename(p), pattern)

    def guard(real, is_write=lambda *a, **k: True, arg=0):
        def wrapped(*a, **k):
            if hit(a[arg]) and is_write(*a, **k):
                raise OSError(code, os.strerror(code), os.fspath(a[arg]))
            return real(*a, **k)
        return wrapped

    writing = lambda f, mode="r", *a, **k: any(c in mode for c in "wax+")  # noqa: E731
    monkeypatch.setattr(builtins, "open", guard(builtins.open, writing))
    monkeypatch.setattr(os, "makedirs", guard(os.makedirs, lambda p, *a, **k: not os.path.isdir(p)))
    monkeypatch.setattr(os, "mkdir", guard(os.mkdir))
    for name in ("replace", "rename", "link"):
        monkeypatch.setattr(os, name, guard(getattr(os, name), arg=1))
    return err


def _spoil(case, monkeypatch, d):
    """Set up a failing environment; returns the files the CLI may still change (none but a log)."""
    if case == "readonly":
        (d / "ro").mkdir()
        _fail_writes(monkeypatch, d / "ro", errno.EACCES)
    elif case == "full":  # the disk fills when the resumed run writes its next checkpoint
        shutil.copytree(d / "dm", d / "run")
        _fail_writes(monkeypatch, d, errno.ENOSPC, pattern="model*")
        return {d / "run" / "metrics.jsonl"}  # the resumed run's log rows before the failed save
    elif case == "damaged_run":  # a run whose only checkpoint (best.pt is the same file) was damaged in place
        shutil.copytree(d / "dm", d / "run")
        for name in ("model.pt", "best.pt"):
            (d / "run" / name).write_bytes((d / "damaged.pt").read_bytes())
    elif case in ENVIRONMENTS:  # torchrun's variables as a stray shell or a hand-made launch leaves them
        for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID",
                     *THREAD_VARS):
            monkeypatch.delenv(name, raising=False)
        for name, value in ENVIRONMENTS[case].items():
            monkeypatch.setenv(name, value)
    elif case == "media_blocked":  # a file where artifacts/media, the auto-named trace's folder, would be
        shutil.rmtree(d / "artifacts" / "media", ignore_errors=True)
        (d / "artifacts").mkdir(exist_ok=True)
        (d / "artifacts" / "media").write_text("not a folder\n")
    elif case == "media_readonly":  # artifacts/media a folder this user cannot write (root can: os.access says so)
        media = d / "artifacts" / "media"
        media.mkdir(parents=True, exist_ok=True)
        _fail_writes(monkeypatch, media, errno.EACCES)
        access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **k: not (mode & os.W_OK and os.path.abspath(p) == str(media))
                            and access(p, mode, **k))
    elif case == "log_folder":  # a folder where a run writes its log (a copy gone wrong, say)
        shutil.copytree(d / "dm", d / "run")
        (d / "run" / "metrics.jsonl").unlink()
        (d / "run" / "metrics.jsonl").mkdir()
    elif case == "epochs_run":  # a study run whose eval.json was cut short
        run = d / "artifacts" / "epochs" / "runs" / "mdlm_wd0.1_do0_s02_75k"
        run.mkdir(parents=True)
        (run / "metrics.jsonl").write_text(json.dumps(dict(kind="eval", iter=98, bits_per_char=3.0, bpc_se=0.02)) + "\n")
        (run / "eval.json").write_text('{"runs": [{"bits_per_char": 2.9')
    return set()


DM, AR = "dm/model.pt", "ar/model.pt"
T = [f"--data_path={real_text()}", *MICRO, "--max_iters=4", "--eval_interval=2"]
EV = [DM, "--n-windows", "2", "--n-t", "1", "--n-samples", "0"]
RC = [DM, "dual/model.pt"]  # a race of two checkpoints trained on one text: the lanes share a tokenizer
FR = [AR, "--ar-checkpoint", AR, "--n-samples", "2", "--ar-grid", "temperature=1.0"]  # the fixture's AR judges itself
FQ = ["--ar-checkpoint", "ar_sh/model.pt", "--n-samples", "2", "--repeats", "0"]  # a judge of Shakespeare, no timing
GS = [AR, AR, "--smoke"]  # dev/gpu_sample.py past parsing (the fixture has no --bd3_ar network: refused at load)
BT = ["--n_layer=1", "--n_head=2", "--n_embd=32", "--block_size=32", "--batch_size=2", "--iters=1", "--repeats=1",
      "--warmup=0", "--device=cpu"]
UNDER = "old.txt is a file, not a folder"  # old.txt/x: a path under a regular file
DAMAGED = ("is damaged", "checksum")
# what each CLI needs on its command line to get past parsing (required positionals and options), to its device and
# to its checkpoint (DM or AR, where it reads one)
TRAIN, INFER = [*T, "--out_dir=x"], ["--checkpoint", DM]  # train.py and inference.py past every check
BASE = {"train.py": [*TRAIN, f"--init_from={DM}"], "inference.py": INFER,
        "scripts/eval.py": [DM], "scripts/frontier.py": [AR, "--ar-checkpoint", AR], "dev/plot.py": ["curves", "dm"],
        "scripts/export.py": [DM, "out"], "scripts/data.py": ["--output", "o.txt"], "dev/bench_train.py": BT,
        "scripts/train_tokenizer.py": ["--input", "text.txt"], "dev/order_nll.py": [DM], "dev/infill.py": [DM],
        "dev/nanogpt_score.py": ["old.txt", "--against", DM], "dev/bd3_variance.py": [DM], "dev/draft_ceiling.py": [DM],
        "dev/spec_rounds.py": [DM], "dev/two_pass.py": [DM, AR], "dev/threads.py": ["cpu"], "dev/epochs.py": [],
        "dev/plot_epochs.py": ["s.json"], "dev/plot_frontier.py": ["eval.json"], "dev/gpu_sample.py": GS,
        "scripts/race.py": RC, "dev/bench_serve.py": ["cpu"], "dev/mutants.py": [],
        "dev/limit.py": ["--json", "l.json", "--checkpoints", DM], "dev/plot_limit.py": ["eval.json"],
        "dev/distill_study.py": [DM, "--out-dir", "o"]}


# ----------------------------------------------------------------------------- rows from config.py's tables
def reader(key):
    """The first objective that reads a key (mdlm's first): a row gives it, so the key is checked, not unread."""
    return next(name for name, obj in OBJECTIVES.items() if key not in obj.IGNORES)


def range_words(key, value):
    """RANGES' refusal of key at value, as validation words it (its line, or '{key} must be >= {low}')."""
    allowed = RANGES[key]
    line = allowed[1] if isinstance(allowed, tuple) else "{key} must be >= {low}, got {value}"
    return line.format(key=key, value=value, low=f"{interval(key)[0]:g}", **vars(replace(Config(), **{key: value})))


def bad_values(key):
    """[(the text of a value config.py's tables refuse for key, the words of its refusal)]: a word that is no number
    or bool, a float for an int, infinity for a float, a choice it lacks, each finite end of its range crossed, the
    most its LIMITS (or an int64) hold passed."""
    typ, out = TYPES[key], []
    if typ in (bool, int, float):
        word = "maybe" if typ is bool else "ten"
        out.append((word, f"--{key}={word!r} is not a valid {typ.__name__}"))
    if typ is int:
        most = LIMITS.get(key, (2 ** 63 - 1,))[0]
        out += [("1.5", f"{key} must be int, got float 1.5"), (str(most + 1), f"{key}={most + 1} is out of range")]
    if typ is float:
        out.append(("1e999", f"{key} must be a finite number, got inf"))
    if key in CHOICES:
        out.append(("nonsense", f"{key}='nonsense' is not one of"))
    if key in RANGES:
        low, high, low_in, high_in = interval(key)
        step = 1 if typ is int else 0.5
        ends = [low - step if low_in else low] if math.isfinite(low) else []
        ends += [high + step if high_in else high] if math.isfinite(high) else []
        out += [(str(typ(v)), range_words(key, typ(v))) for v in ends]
    return out


def config_rows():
    """Every key's refused values through train.py (the objective that reads it given), and through inference.py
    the keys it takes from its command line that the checkpoint's objective reads."""
    rows = []
    for key in TYPES:
        objective = [] if reader(key) == "mdlm" else [f"--objective={reader(key)}"]
        for text, words in bad_values(key):
            rows.append(("train.py", [*for_objective([*T, *objective]), "--out_dir=x", f"--{key}={text}"], words))
            if key in inference.SAMPLED_KEYS and key not in OBJECTIVES["mdlm"].IGNORES:
                rows.append(("inference.py", ["--checkpoint", DM, f"--{key}={text}"], words))
    return rows


def partners_off(key):
    """Flags that turn off each key config.NEEDS ties key to, where its default acts (viz_video 'auto', say)."""
    need = NEEDS[key]
    flags = []
    for other, values in need if isinstance(need[0], tuple) else (need,):
        default = getattr(Config, other)
        if values is None and default not in (False, "", "off", 0):  # any but off acts: give it off
            flags.append(f"--{other}={'off' if isinstance(default, str) else 0}")
        elif values is not None and default in values:  # its default acts (resume=False): give the other bool
            flags.append(f"--{other}={not default}")
    return flags


def needs_rows():
    """Each key config.NEEDS ties to another, given with that one off: refused, naming what it acts with."""
    rows = []
    for key in NEEDS:
        cli = "inference.py" if key in SAMPLING_ONLY or key in ("trace_every", "gif_frame_ms") else "train.py"
        value = acting_value(key, getattr(Config, key))[0]
        rows.append((cli, [*(INFER if cli == "inference.py" else TRAIN), *partners_off(key), f"--{key}={value}"],
                     f"--{key} acts only"))
    return rows


def ignored_rows():
    """Each key an objective never reads (its IGNORES), given: refused, naming the objective."""
    return [("train.py", [*for_objective([*T, f"--objective={name}"]), "--out_dir=x", f"--{key}={getattr(Config, key)}"],
             f"objective={name} does not read --{key}") for name, obj in OBJECTIVES.items() for key in obj.IGNORES]


def unread_sampler_rows():
    """Each sampler key a switch of the sampler leaves unread (SamplerOptions.unread: an argmax's filters, ReMDM's eta
    off ReMDM, a count an adaptive rule sets), given beside that switch: refused in the switch's words."""
    import configurator
    from diffusion import SamplerOptions
    rows, base = [], configurator.parse(MICRO).over()[0]  # the fixture checkpoint's sampler
    ignored = OBJECTIVES["mdlm"].IGNORES  # the fixture's objective; it runs no decoder, which PACING's keys pace
    for key in (k for k in SamplerOptions.keys() if k not in ignored and k not in PACING):
        for value in acting_value(key, getattr(base, key)):
            switched = SamplerOptions.from_config(replace(base, **{key: value}))
            for other, line in switched.unread().items():
                given = acting_value(other, getattr(base, other))[0]
                rows.append(("inference.py", [*INFER, f"--{key}={value}", f"--{other}={given}"], line.split(":")[0]))
    return rows


def checkpoint_rows():
    """Each CLI's checkpoint (the first DM or AR of its BASE) swapped for one missing, a folder, a damaged one, a
    pickle that would run code, an export whose config.json was cut short: one shared reader refuses each."""
    swaps = [("missing.pt", "missing.pt not found"), ("empty_dir", "empty_dir"), ("damaged.pt", DAMAGED),
             ("evil.pt", "a weights-only load refuses"), ("exp_cutjson", "unreadable config.json")]
    rows = []
    for cli, base in BASE.items():
        at = next((i for i, word in enumerate(base) if DM in word or AR in word), None)
        if at is None:
            continue
        was = DM if DM in base[at] else AR
        rows += [(cli, [*base[:at], base[at].replace(was, swap), *base[at + 1:]], words) for swap, words in swaps]
    return rows


# ----------------------------------------------------------------------------- rows no table states
# config files that are no config: {name: (text, the words of train.py's refusal)}
BAD_CONFIG_FILES = dict(
    twice=("temperature = 0.5\nseed = 3\n# later\ntemperature = 0.7",
           "config file twice.py sets temperature twice, on lines 1 and 4: keep one"),
    long=(f"seed = {'9' * 5000}", "long.py, line 1: a number past 4,300 digits is out of range"),
    unhashable=("n_layer = {[1]: 2}", "unhashable.py, line 1: a literal that cannot become a value (unhashable type: "
                "'list')"),
    set_of_sets=("n_layer = {{1}}", "(unhashable type: 'set')"),
    deep_sum=("n_layer = " + "+".join(["1"] * 100000), "deep_sum.py: a value nested too deep to read"),
    deep_sign=("n_layer = " + "-" * 100000 + "1", "deep_sign.py: a value nested too deep to read"),
    hex_digits=("seed = 0x" + "f" * 5000, "seed=(a 6,021-digit number) is out of range"),
    big_tuple=("n_layer = (" + "1," * 200000 + ")", "got tuple (1, 1, 1"),  # one short line
    inf_int=("n_layer = 1e999", "n_layer must be int, got float inf"),
    bytes_str=("prompt = b'x'", "prompt must be str, got bytes b'x'"),
    a_set=("n_layer = {1, 2}", "n_layer must be int, got set {1, 2}"),
    a_complex=("temperature = 1j", "temperature must be float, got complex 1j"),
    float_int=("n_layer = 2.0", "n_layer must be int, got float 2.0"))
# (cli, argv, the words the one line holds: a string or a tuple of strings, [a _spoil case])
HAND = [
    # ---- train.py: its text, its run folder, its resume, the rules between its keys
    ("train.py", ["--max_itters=3"], "unknown config key 'max_itters' (did you mean max_iters"),
    ("train.py", [*T, "--max_it=3"], "unknown config key 'max_it' (did you mean max_iters"),
    ("train.py", ["nope_preset"], "is neither a preset"),
    ("train.py", [*T, "--data_path=missing.txt"], "data_path missing.txt not found"),
    ("train.py", [*T, "--data_path=empty_dir"], "is a directory"),
    ("train.py", [*T, "--data_path=empty.txt"], "data_path empty.txt is empty"),
    ("train.py", [*T, "--data_path=short.txt"], "too few for one window"),
    # the training text alone too short, its validation text long enough: the train split is named
    ("train.py", [*T, "--data_path=short.txt", f"--val_path={real_text()}"], "the train split has"),
    # an accepted extreme that left no text to validate on died in np.memmap ("cannot mmap an empty file")
    ("train.py", [*TRAIN, "--val_fraction=1e-320"], "leaves no validation text"),
    ("train.py", [*TRAIN, "--val_fraction=0.99999999999"], "leaves no training text"),
    ("train.py", [*T, "--data_path=mine.txt"], "give --data_path=PATH of a UTF-8 text file"),
    ("train.py", ["--max_iters=0"], "run from the repository root"),  # data/tinyshakespeare.txt is not here
    ("train.py", [*T, "--tokenizer=bpe", "--tokenizer_path=not_a_tokenizer.json"], "cannot read tokenizer"),
    ("train.py", [*T, "--tokenizer=bpe", "--tokenizer_path=cut.json"], "cannot read tokenizer"),
    ("train.py", [*T, "--out_dir=none", "--resume"], "--resume: no checkpoint in none"),
    ("train.py", [*T, "--out_dir=dm"], "dm already holds checkpoints: pass --resume"),
    ("train.py", [*T, "--out_dir=dm/model.pt", "--overwrite"], "dm/model.pt is a file, not a folder"),
    ("train.py", [*T, f"--out_dir={ROOT / 'artifacts' / 'weights' / 'cpu'}"], "weights the repo ships"),
    ("train.py", [*T, f"--out_dir={ROOT / 'artifacts' / 'weights'}", "--overwrite"], "which training never"),
    ("train.py", [*T, "--out_dir="], "--out_dir is empty: give a path"),
    ("train.py", [*TRAIN, "--tokenizer=bpe", "--tokenizer_path="], "--tokenizer_path is empty"),
    ("train.py", [*TRAIN, "--prompt=\u2603"], "not in the model's vocabulary"),
    ("train.py", [*TRAIN, "--total_batch_size=300"], "total_batch_size=300 is not a multiple"),
    ("train.py", [*T, "--mask_min=0.8", "--mask_max=0.2"], "mask_min"),
    ("train.py", [*TRAIN, "--max_iters=100", "--ema=0.95"], "--ema=0.95 cannot act in 100 steps"),
    ("train.py", [*TRAIN, "--learning_rate=1e38", "--min_lr=0", "--weight_decay=0"],
     "learning_rate=1e+38: a first step of 1e+39 is past float32"),
    ("train.py", [*TRAIN, "--optimizer=muon", "--muon_lr=1e300"], "muon_lr=1e+300: a first step"),
    # a run that diverges saves nothing after it
    ("train.py", [*TRAIN, "--optimizer=muon", "--muon_lr=1e30", "--eval_interval=1"],
     ("the dev figure became non-finite by iter 1: stopped, no checkpoint saved", "--muon_lr=1e+30 is the first thing "
      "to lower", "--muon_lr=0.02 and --overwrite")),
    ("train.py", [*TRAIN, "--learning_rate=1e30", "--min_lr=0", "--weight_decay=0", "--max_iters=40"],
     ("non-finite", "--learning_rate=1e+30 is the first thing to lower", "--learning_rate=0.0003")),
    ("train.py", [*T, "--out_dir=ro/run"], "Permission denied", "readonly"),
    ("train.py", [*T, "--out_dir=run", "--max_iters=8", "--resume"], "No space left on device", "full"),
    ("train.py", [*T, "--out_dir=run", "--max_iters=8", "--resume"], (*DAMAGED, "retrain it"), "damaged_run"),
    # a resumed run keeps its own settings: a flag that would change one is refused, not dropped
    ("train.py", for_objective([*T, "--out_dir=dm", "--max_iters=8", "--resume", "--objective=ar", "--n_embd=64"]),
     "fixes n_embd, objective: given n_embd=64 (the checkpoint's: 32), objective='ar' (the checkpoint's: 'mdlm')"),
    ("train.py", [*T, "--out_dir=dm", "--max_iters=8", "--resume", "--steps=2"], "steps=2 (the checkpoint's: 4)"),
    # its advice, --resume, drops --init_from (VALID runs it)
    ("train.py", [*T, "--out_dir=dm", "--init_from=ar/model.pt"], "pass --resume to continue them (dropping "
     "--init_from"),
    ("train.py", [*T, "--out_dir=old_training", "--max_iters=8", "--resume"],
     ("was trained with time_beta=0.5, which this version removed", "git checkout bcc25a1")),
    ("train.py", [*TRAIN, "--threshold=0.5"], "--steps acts only without --threshold"),
    ("train.py", [*TRAIN, "--entropy_bound=0.5"], "--steps does not act with --entropy_bound"),
    ("train.py", [*[a for a in T if not a.startswith("--steps=")], "--out_dir=x", "--objective=bd3", "--bd3_block=4",
                  "--bd3_ar=1", "--bd3_speculate", "--entropy_bound=0.5"],
     "--entropy_bound does not apply with --bd3_speculate"),
    ("train.py", [*TRAIN, "--live"], "--live is inference.py's"),
    ("train.py", [*TRAIN, "--infill=To [___] be"], "--infill is inference.py's"),
    ("train.py", [*TRAIN, "--serve"], "--serve is inference.py's"),
    ("train.py", [*TRAIN, "--max_iters=" + "9" * 5000], "--max_iters is a 5,000-digit number: out of range"),
    ("train.py", [*TRAIN, "--entropy_bound=" + "9" * 5000], "a float holds at most"),
    ("train.py", [*T, "--out_dir=" + "n" * 300], ("--out_dir", "past the 255 this filesystem takes")),
    ("train.py", [*TRAIN, "--viz_video=old.txt/v.mp4"], UNDER),
    ("train.py", [*TRAIN, "--viz_video=trace.mp4"], "--viz-video trace.gif is a directory"),
    ("train.py", TRAIN, "--viz-video names its new file in artifacts/media", "media_blocked"),
    ("train.py", [*T, "--out_dir=run", "--max_iters=8", "--resume"], "run/metrics.jsonl is a folder where the run "
     "writes its metrics.jsonl: move it away, or give --out_dir=NEW_DIR", "log_folder"),
    ("train.py", [*T, "--out_dir=run", "--overwrite"], "run/metrics.jsonl is a folder", "log_folder"),
    # ---- inference.py: its checkpoint (or export), its canvas, its trace, its stream of prompts
    ("inference.py", [*INFER, "--temperatur", "0.5"], "unknown config key 'temperatur' (did you mean temperature"),
    ("inference.py", ["--check", DM], "unknown config key 'check' (did you mean checkpoint"),
    ("inference.py", ["--checkpoint", AR, "--replay-steps", "four"], "e.g. --replay_steps=64"),
    ("inference.py", [*INFER, "--temperature", "1e-320"], "temperature=1e-320 is below 1e-06"),
    ("inference.py", ["--checkpoint", "nan.pt"], "no law to draw from"),  # non-finite logits: no [MASK] text
    ("inference.py", [*INFER, "--learning_rate=1"], "--learning_rate sets training, which sampling"),
    ("inference.py", [*INFER, "--n_layer=3"], "fixes n_layer: given n_layer=3 (the checkpoint's: 1)"),
    ("inference.py", [*INFER, "--objective=ar"], "objective='ar' (the checkpoint's: 'mdlm')"),
    ("inference.py", [*INFER, "--diffusion_steps=50", "--steps=10"], "diffusion_steps=50"),
    ("inference.py", [*INFER, "--steps", "21"], "steps=21 exceeds diffusion_steps=20"),  # the chain's T is 20
    ("inference.py", [*INFER, "--dual_sample"], "trained without it (dual_ar=0): drop --dual_sample"),
    ("inference.py", [*INFER, "--compile=true"], "this sampler runs none"),
    ("inference.py", [*INFER, "--replay-steps", "8"], "--replay_steps paces KV-cached decoding"),
    ("inference.py", [*INFER, "--threshold", "0.5", "--steps", "3"], "--steps acts only without --threshold"),
    ("inference.py", [*INFER, "--entropy_bound", "0.5", "--threshold", "0.9"],
     "--entropy_bound and --threshold each decide how many tokens a pass reveals: give one of them"),
    ("inference.py", [*INFER, "--entropy_bound", "0.5", "--order", "random"],
     "use --order entropy (or confidence, margin), not random; or --entropy_bound 0 (off)"),
    ("inference.py", ["--checkpoint", "eb/model.pt", "--order", "random"],  # the checkpoint's bound, an order given
     "--entropy_bound reveals in the order of a model score: use --order entropy (or confidence, margin), not random"),
    ("inference.py", [*INFER, "--entropy_bound", "0.5", "--remask", "remdm"],
     "--entropy_bound commits tokens for good: use --remask none, not remdm"),
    ("inference.py", [*INFER, "--entropy_bound", "0.5", "--remask", "refine"], "use --remask none, not refine"),
    ("inference.py", [*INFER, "--threshold", "0.5", "--order", "random"], "threshold decoding commits by the model's"),
    ("inference.py", [*INFER, "--threshold", "0.5", "--remask", "remdm"], "use --remask none (or refine), not remdm"),
    ("inference.py", ["--checkpoint", "dual/model.pt", "--dual_sample", "--prompt", "To", "--entropy_bound", "0.5"],
     "--entropy_bound sets the diffusion sampler; drop one of the two"),
    ("inference.py", [*INFER, "--prompt", "caf\u00e9 \u2603"], "not in the model's vocabulary"),
    ("inference.py", ["--checkpoint", "exp", "--prompt", "caf\u00e9"], "not in the model's vocabulary"),
    ("inference.py", [*INFER, "--infill", "no blanks here"], "has no blank"),
    ("inference.py", [*INFER, "--infill", "To [___:90] be"], "exceeds the model's context of 32"),
    ("inference.py", [*INFER, "--infill", "To [___] be", "--gen-len", "4"], "drop --gen-len"),
    ("inference.py", [*INFER, "--infill", "To [___:100000000000000000000000] be"],
     "asks for 100,000,000,000,000,000,000,000 tokens"),
    ("inference.py", [*INFER, "--infill", f"To [___:{'9' * 5000}] be"], "asks for a 5,000-digit count"),
    # past the context: each refusal's advice runs (test_a_refusals_advice_runs)
    ("inference.py", ["--checkpoint", "uni/model.pt", "--infill", "To [___:40] be"], "shorten the text or the blanks"),
    ("inference.py", ["--checkpoint", "dual/model.pt", "--dual_sample", "--prompt", "To", "--gen-len", "500"],
     ("exceeds the model's context of 32 tokens", "use --gen-len 30")),  # it continues a prompt only
    ("inference.py", [*INFER, "--gen-len", "500"], ("exceeds the model's context", "or use --gen-len 32")),
    ("inference.py", [*INFER, "--gen-len", "60"], "--semi-ar-length 15"),  # 4 steps, 4 blocks
    # 62 tokens in 4 steps: blocks of 16 (rounded up); blocks of 15 would be 5, more than the steps, and refused
    ("inference.py", [*INFER, "--gen-len", "62"], "--semi-ar-length 16"),
    ("inference.py", [*INFER, "--threshold", "0.9", "--gen-len", "500"], "exceeds the model's context"),
    ("inference.py", [*INFER, "--prompt", "To be, or not to be, that is the question:", "--gen-len", "9"],
     "shorten the given text, or decode in blocks"),  # a prompt past the context alone: no --gen-len fits
    # anything that is not a checkpoint, or one cut short or foreign
    ("inference.py", ["--checkpoint", "/etc/passwd"], "checkpoint /etc/passwd is a text file, not a checkpoint"),
    ("inference.py", ["--checkpoint", "tokenizer.json"], "is a text file, not a checkpoint"),
    ("inference.py", ["--checkpoint", "empty.txt"], "checkpoint empty.txt is empty"),
    ("inference.py", ["--checkpoint", "truncated.pt"], "is corrupt, truncated"),
    ("inference.py", ["--checkpoint", "nul.pt"], "is corrupt, truncated"),  # not "a text file": it holds NULs
    ("inference.py", ["--checkpoint", "foreign.pt"], "not a micro-dllm checkpoint (missing keys)"),
    ("inference.py", ["--checkpoint", "dm"], "dm is a directory without model.safetensors and config.json"),
    ("inference.py", ["--checkpoint", "exp/model.safetensors"], "pass the folder it is in, --checkpoint exp"),
    ("inference.py", ["--checkpoint", "exp_novocab"], "exp_novocab lacks vocab.json"),
    ("inference.py", ["--checkpoint", "exp_damaged"], "is corrupt or not a safetensors file"),
    ("inference.py", ["--checkpoint", "exp_altered"], DAMAGED),
    ("inference.py", [*INFER, "--tokenizer_path", "not_a_tokenizer.json"], "cannot read tokenizer"),
    ("inference.py", [*INFER, "--tokenizer_path", "tokenizer.json"],
     ("differs from the one dm/model.pt was trained with", "drop --tokenizer_path")),
    ("inference.py", [*INFER, "--num-samples", "1000000000"], "out of memory"),
    ("inference.py", [*INFER, "--prefix_file", "missing.txt"], "--prefix_file missing.txt not found"),
    ("inference.py", [*INFER, "--prompts-file", "missing.txt"], "--prompts-file missing.txt not found"),
    ("inference.py", [*INFER, "--prompts-file", "empty_dir"], "is a directory"),
    ("inference.py", [*INFER, "--prompts-file", "empty.txt"], "has no prompts"),
    ("inference.py", [*INFER, "--prompts-file", "data/prompts.txt"], "run from the repository root"),
    ("inference.py", [*INFER, "--prompts-file", "prompts.txt"], "prompts.txt, prompt 2: 2 character(s)"),
    # a stream of prompts records no trace: a trace's flag beside it is refused, naming it
    ("inference.py", [*INFER, "--interactive", "--prompt", "x"], "--interactive supplies the prompts"),
    ("inference.py", [*INFER, "--prompts-file", "prompts.txt", "--viz-video", "v.mp4"], "drop --viz-video"),
    ("inference.py", [*INFER, "--prompts-file", "prompts.txt", "--gif-frame-ms", "100"],
     "--prompts-file supplies the prompts, one sample each, and records no trace: drop --gif-frame-ms"),
    ("inference.py", [*INFER, "--interactive", "--trace-every", "2"], "records no trace: drop --trace-every"),
    ("inference.py", [*INFER, "--interactive", "--overwrite"], "records no trace: drop --overwrite"),
    ("inference.py", [*INFER, "--prompts-file", "prompts_ok.txt", "--viz-video", "auto"],
     "records no trace: drop --viz-video"),
    # its trace's outputs: the kind of path, a folder or a file where a file or a folder goes, a name too long
    ("inference.py", [*INFER, "--viz-video", "x.gif"], "is a path ending in .mp4"),
    ("inference.py", [*INFER, "--viz-video", ""], "--viz-video '' is a path ending in .mp4"),
    ("inference.py", [*INFER, "--gen-len", "8", "--viz-video", "old.png"], "is a path ending in .mp4"),
    ("inference.py", [*INFER, "--viz-video", DM], "is a path ending in .mp4"),
    ("inference.py", [*INFER, "--viz-video", "folder.mp4"], "--viz-video folder.mp4 is a directory"),
    ("inference.py", [*INFER, "--viz-video", "old.txt/v.mp4"], UNDER),
    ("inference.py", [*INFER, "--gen-len", "8", "--viz-video", "ro/v.mp4"], "Permission denied", "readonly"),
    ("inference.py", [*INFER, "--gen-len", "8", "--viz-video", "v.mp4", "--html", "v.mp4"],
     "--html 'v.mp4' is a path ending in .html"),
    ("inference.py", [*INFER, "--html", "dm/metrics.jsonl", "--overwrite"], "is a path ending in .html"),
    ("inference.py", [*INFER, "--html", "page"], "--html 'page' is a path ending in .html"),
    ("inference.py", [*INFER, "--html", "folder.html"], "--html folder.html is a directory"),
    ("inference.py", [*INFER, "--html", "old.html"], "old.html already exists: pass --overwrite"),
    ("inference.py", [*INFER, "--gen-len", "8", "--viz-video", "n" * 300 + "/v.mp4"],
     "a name of 300 characters, past the 255"),
    # the auto-named trace's folder, artifacts/media, under a file or unwritable
    ("inference.py", [*INFER, "--gen-len", "8"], "--viz-video names its new file in artifacts/media (or give it a "
     "path): artifacts/media is a file, not a folder", "media_blocked"),
    ("inference.py", [*INFER, "--viz-video", "off", "--html"], "--html names its new file in artifacts/media",
     "media_blocked"),
    ("inference.py", [*INFER, "--gen-len", "8"], "artifacts/media is not a folder you can write", "media_readonly"),
    # config files read by inference.py as by train.py
    ("inference.py", ["twice.py", *INFER], "sets temperature twice, on lines 1 and 4"),
    ("inference.py", ["big_tuple.py", *INFER], "(600,000 characters)"),
    # the live server's flags, each refused before a model is read or a port taken (tests/test_serve.py: its requests)
    ("inference.py", [*INFER, "--serve", "--interactive"],
     "--serve draws one sample at a time in the page and writes no file: drop --interactive"),
    ("inference.py", [*INFER, "--serve", "--port", "0", "--host", "192.0.2.1"],
     "--host 192.0.2.1 is no address of this machine"),
    ("inference.py", [*INFER, "--serve", "--port", "0", "--race", AR],
     ("--race ar/model.pt reads another tokenizer than dm", "or --race off")),
    ("inference.py", [*INFER, "--serve", "--port", "0", "--race", "no/model.pt"], ("no/model.pt not found",
                                                                                   "or give --race off")),
    # ---- the scripts: their own inputs and outputs (their checkpoints: checkpoint_rows; their flags: derived_rows)
    ("scripts/eval.py", [DM, "--steps", "4", "--ar-checkpoint", DM], "is a mdlm model: give an AR checkpoint"),
    ("scripts/eval.py", [DM, "--steps", "4", "--ar-checkpoint", AR], "differs from the scorer"),
    ("scripts/eval.py", [*EV, "--ar-checkpoint", AR], "--ar-checkpoint acts only with --n-samples"),
    ("scripts/eval.py", [*EV, "--steps", "4"], "--steps acts only with --n-samples"),
    ("scripts/eval.py", [DM, "--n-windows", "2", "--n-layer", "2"], "--n-layer is no sampler key"),
    ("scripts/eval.py", [AR, "--n-windows", "2", "--n-samples", "0", "--n-t", "2"], "--n-t acts on none"),
    ("scripts/eval.py", [AR, "--n-windows", "2", "--n-samples", "1", "--steps", "4"], "--steps acts on none"),
    ("scripts/eval.py", [*EV[:-4], "--n-samples", "1", "--steps", "4", "--prompt", "To be" * 20],
     "it fills the context of dm/model.pt"),
    ("scripts/eval.py", [*EV, "--val-path", "empty.txt"], ("val_path empty.txt is empty", "text in it")),
    ("scripts/eval.py", [*EV, "--n-t", str(2 ** 62)], "out of memory"),  # too large to count the bytes of
    ("scripts/eval.py", [DM, "--n-windows", "9" * 5000], ("--n-windows", "a 5,000-digit number")),
    ("scripts/eval.py", [DM, f"./{DM}", "--n-windows", "2", "--n-samples", "0"], "dm/model.pt and ./dm/model.pt are one "
     "checkpoint: give each once"),  # it was scored twice, the second paired against itself
    ("scripts/eval.py", ["a.pt", DM, "b.pt", "--ar-checkpoint", "c.pt", "--n-samples", "1"],
     ("checkpoint a.pt, b.pt, c.pt not found: train them first", "or give paths that exist")),
    # its sampler flags checked as inference.py checks them, in its own spelling
    ("scripts/eval.py", ["eb/model.pt", "--n-windows", "2", "--n-samples", "1", "--remask", "refine"],
     "--entropy-bound commits tokens for good: use --remask none, not refine"),
    ("scripts/eval.py", ["eb/model.pt", "--n-windows", "2", "--n-samples", "1", "--steps", "4"],
     "eb/model.pt decodes by entropy bound (0.5: each step reveals what fits under it), which reads no step count: "
     "drop --steps"),
    ("scripts/eval.py", ["th/model.pt", "--n-windows", "2", "--n-samples", "1", "--steps", "4"],
     "th/model.pt decodes by threshold (0.5: each step commits what it is sure enough of), which reads no step count: "
     "drop --steps"),
    ("scripts/eval.py", ["eb/model.pt", "--n-windows", "2", "--n-samples", "1", "--order", "l2r"],
     "use --order entropy (or confidence, margin), not l2r"),
    ("scripts/frontier.py", [*FR, "--prompt", "To be" * 20], "it fills the context of 32"),
    ("scripts/frontier.py", [*FR, "--threads", "100000"], "--threads: must be <= "),  # torch.set_num_threads
    ("scripts/frontier.py", [*FR, "--grid", f"steps={'9' * 5000}"], ("--grid", "(5,009 characters)")),
    ("scripts/frontier.py", [*FR, "--grid", "n_layer=2"], "n_layer is no sampler key"),
    ("scripts/frontier.py", [*FR, "--repeats", "0", "--time-batches", "1,2"], "--time-batches acts only with --repeats"),
    ("scripts/frontier.py", [DM, "--ar-checkpoint", AR, "--n-samples", "2", "--compile", "true"],
     ("--compile compiles the KV-cached decode step, and none of these samplers runs it", "drop it")),
    ("scripts/frontier.py", [*FR, "--ar-grid", "temperature=0.8,0.8"], "'temperature=0.8,0.8' names a value twice"),
    ("scripts/frontier.py", [*FR[:-1], "temperature=0.8", "--ar-grid", "temperature=0.9"],
     "--ar-grid names a key twice"),  # dict() kept the last
    ("scripts/frontier.py", [AR, "--ar-checkpoint", AR, "--grid", "temperature=1.0"], "none is given: drop --grid"),
    ("scripts/frontier.py", [*FR, "--ar-grid", "steps=4"], "no sampler of these checkpoints reads steps"),
    ("scripts/frontier.py", [DM, "--ar-checkpoint", AR, "--grid", "remask=none", "--grid", "remask_eta=0.1"],
     "no sampler of these checkpoints reads remask_eta"),
    ("scripts/frontier.py", ["th/model.pt", "--ar-checkpoint", "ar_sh/model.pt", "--grid", "steps=4,8"],
     "--grid steps acts only without --grid threshold"),
    ("scripts/frontier.py", [DM, *FQ, "--grid", "entropy_bound=-1"], "entropy_bound is a budget in nats, >= 0"),
    ("scripts/frontier.py", [DM, *FQ, "--grid", "entropy_bound=0.5", "--grid", "remask=remdm"],
     "use --grid remask none, not remdm"),
    # a threshold checkpoint's grid off the threshold runs its --steps: past its chain's T
    ("scripts/frontier.py", ["th/model.pt", *FQ, "--grid", "threshold=0", "--grid", "temperature=1.0"],
     "steps=100 exceeds diffusion_steps=20: use --grid steps=20 or fewer, or --grid tokens_per_step=linear"),
    ("scripts/frontier.py", [AR, "ar/../ar/model.pt", *FR[1:]], "ar/model.pt and ar/../ar/model.pt are one checkpoint: "
     "give each once"),
    ("scripts/export.py", ["dm", "out"], "dm is a folder"),
    # an export is exported again, never into itself
    ("scripts/export.py", ["exp", "./exp/", "--overwrite"], "is the folder being exported"),
    ("scripts/export.py", [DM, "old.txt"], "old.txt is a file"),
    ("scripts/export.py", [DM, "exp"], "exp already holds files: pass --overwrite"),
    ("scripts/export.py", [DM, DM, "--overwrite"], "is a file"),
    ("scripts/export.py", [DM, "ro/exp"], "Permission denied", "readonly"),
    ("scripts/export.py", [DM, "n" * 300], ("OUT_DIR", "choose a shorter name")),
    ("scripts/race.py", [DM, "./dm/model.pt"], "dm/model.pt is given twice: a race compares different checkpoints"),
    ("scripts/race.py", [DM], "a race needs two or more checkpoints"),
    ("scripts/race.py", [*RC, "--out", "x.gif"], "--out x.gif: give the MP4's path"),
    ("scripts/race.py", [*RC, "--overwrite"], "give --out NAME.mp4, or drop --overwrite"),
    ("scripts/race.py", [*RC, "--gen-len", "100"], ("dm/model.pt cannot race on this prompt", "use --gen-len 26")),
    ("scripts/race.py", [*RC, "--prompt", "To be" * 8], ("exceeds its context of 32", "give a shorter --prompt")),
    ("scripts/race.py", [*RC, "--out", "trace.mp4"], "--out trace.gif is a directory"),
    ("scripts/data.py", ["--input-file", "missing.txt", "--output", "o.txt"], ("missing.txt", "not found")),
    ("scripts/data.py", ["--input-file", "empty_dir", "--output", "o.txt"], ("--input-file", "empty_dir")),
    ("scripts/data.py", ["--input-file", "text.txt", "--output", "old.txt"], "old.txt already exists: pass "
     "--overwrite"),
    ("scripts/data.py", ["--input-file", "text.txt", "--output", DM, "--overwrite"], "is a checkpoint"),
    ("scripts/data.py", ["--input-file", "cut.json", "--output", "o.txt"], "could not read cut.json"),
    ("scripts/data.py", ["--input-file", "empty.txt", "--output", "o.txt"], "input file is empty"),
    ("scripts/data.py", ["--input-file", "data/tinyshakespeare.txt", "--output", "o.txt"], "run from the repository "
     "root"),
    ("scripts/data.py", ["--output", "o.txt"], "--dataset"),  # no source
    # a flag's kind dropped from its parser drops its derived rows too: one hand row a kind keeps it
    ("scripts/data.py", ["--input-file", "text.txt", "--num-stories", "-1", "--output", "o.txt"],
     "--num-stories: must be >= 0"),
    ("scripts/data.py", ["--input-file", "text.txt", "--output", "empty_dir"], "empty_dir is a directory"),
    ("scripts/train_tokenizer.py", ["--input", "text.txt", "--output", "t.json", "--vocab-size", "5"], ">= 258"),
    ("scripts/train_tokenizer.py", ["--input", "text.txt", "--output", "t.json", "--vocab-size", str(2 ** 62)],
     ("--vocab-size", "<= 1,048,576")),
    ("dev/order_nll.py", [DM, "--orders", "l2r,5"], ("--orders", "l2r, r2l, random")),
    ("scripts/data.py", ["--input-file", "text.txt", "--output", "ro/o.txt"], "Permission denied", "readonly"),
    ("scripts/data.py", ["--input-file", "text.txt", "--output", "n" * 300], ("--output", "choose a shorter name")),
    ("scripts/data.py", ["--input-file", "text.txt", "--split", "validation", "--output", "o.txt"],
     "--split acts only with --dataset"),
    ("scripts/data.py", ["--input-file", "text.txt", "--seed", "3", "--output", "o.txt"],
     "--seed acts only with --num-stories"),
    ("scripts/data.py", ["--input-file", "text.txt", "--text-field", "x", "--output", "o.txt"],
     "--text-field does not apply to text.txt, one document"),
    ("scripts/data.py", ["--input-file", "eval.json", "--split-blank-lines", "--output", "o.txt"],
     "--split-blank-lines does not apply to eval.json, a file of records"),
    ("scripts/train_tokenizer.py", ["--input", "missing.txt", "--output", "t.json"], "--input missing.txt not found"),
    ("scripts/train_tokenizer.py", ["--input", "empty_dir", "--output", "t.json"], "is a directory"),
    ("scripts/train_tokenizer.py", ["--input", "empty.txt", "--output", "t.json"], "is empty"),
    # ---- the laboratory's scripts (dev/): refusals of their own
    ("dev/order_nll.py", [DM, "--orders", "causal"], "trained without it: drop causal"),
    ("dev/order_nll.py", [DM, "--mixture-k", "4"], "no mixture"),
    ("dev/order_nll.py", [DM, "--orders", "l2r,r2l", "--seed", "3"], "--seed draws random orders"),
    ("dev/infill.py", [AR], "only continues a prompt"),
    ("dev/infill.py", ["eb/model.pt", "--steps", "4", "--span", "8"], "decodes by entropy bound (0.5"),
    ("dev/infill.py", ["th/model.pt", "--steps", "4", "--span", "8"], "decodes by threshold (0.5"),
    ("dev/infill.py", [DM, "--span", "17"], "--span 17 does not fit the middle half of a 32-token window, where a span "
     "has context on both sides: give --span 16 or fewer"),  # it scored 16 of the 17 asked
    ("dev/nanogpt_score.py", ["nanogpt.pt", "--against", DM, "--model-py", "old.txt", "--meta", "old.txt"],
     "old.txt is not a Python file"),
    ("dev/nanogpt_score.py", ["nanogpt.pt", "--against", DM, "--model-py", "broken.py", "--meta", "old.txt"],
     "does not run as nanoGPT's model.py (ModuleNotFoundError"),
    ("dev/nanogpt_score.py", ["foreign.pt", "--against", DM], "no model and model_args"),
    ("dev/nanogpt_score.py", ["evil.pt", "--against", DM], "is not a nanoGPT checkpoint"),
    ("dev/nanogpt_score.py", ["old.txt", "--against", AR, "--n-t", "2"], "drop --n-t"),
    ("dev/nanogpt_score.py", ["old.txt", "--against", DM, DM], "dm/model.pt and dm/model.pt are one checkpoint"),
    ("dev/bench_train.py", ["--n_layer=x"], "--n_layer='x' is not a valid int"),
    ("dev/bench_train.py", [*BT, "--compare"], ("did you mean --compare_compile", "whole name")),
    ("dev/bench_train.py", [*BT, "--n_embd=65536", "--n_head=64", "--n_layer=64"], "GiB a rank, cpu has"),
    ("dev/bench_train.py", [*BT, "twice.py"], "sets temperature twice"),
    ("dev/bench_train.py", [*BT, "--max_iters=10"], "--max_iters is not read by the timed step"),
    ("dev/bench_train.py", [*BT, "--temperature=0.5"], "--temperature is not read"),
    ("dev/bench_train.py", [*BT, "--compare_compile", "--compile=false"], "--compare_compile times every row eager "
     "and compiled, so --compile=false is never read: drop one of the two"),
    ("dev/plot.py", ["curves", "missing_dir"], "missing_dir/metrics.jsonl not found"),
    ("dev/plot.py", ["curves", "dm", "--out", "x.txt"], "should end in .png"),
    ("dev/plot.py", ["entropy", "cut.json"], ("cut.json", "JSON")),
    ("dev/plot.py", ["entropy", "eval.json"], "no diffusion runs with entropy_by_t"),
    ("dev/plot_frontier.py", ["old.txt"], "old.txt"),  # not JSON
    ("dev/plot_epochs.py", ["not_a_tokenizer.json"], "'runs'"),
    ("dev/epochs.py", ["--summary-only", "--summary", "s.json"], "eval.json is not complete JSON", "epochs_run"),
    ("dev/epochs.py", ["--summary-only", "--restart"], "--restart sets the training --summary-only skips"),
    ("dev/epochs.py", ["--summary-only", "--eval-iters", "3"], "--eval-iters sets the training --summary-only"),
    ("dev/spec_rounds.py", [DM, "--k", "2"], ("--k sets the AR's tokens", "give --ar or --compile")),
    ("dev/gpu_sample.py", [DM, AR, "--smoke"], "give an AR checkpoint"),
    ("dev/gpu_sample.py", [*GS, "--tokens", "5"], "drop --tokens"),
    ("dev/bench_serve.py", ["cpu_bd3"], "artifacts/models/cpu_bd3/model.pt not found: train it first"),
    ("dev/threads.py", ["cpu", "--gap", "5"], "--gap acts only with --starts"),
    ("dev/threads.py", ["cpu", "--starts", "--loads", "quiet"], "--loads acts only on the step table"),
    ("dev/mutants.py", ["--check", "--keep"], "--keep acts only when mutants run, and --check runs nothing"),
    ("dev/mutants.py", ["--list", "--stages", "fast"], "--stages acts only when mutants run"),
    ("dev/mutants.py", ["--stages", ","], ("--stages", "names no value")),
    ("dev/limit.py", ["--json", "l.json", "--no-oracle"], "runs nothing"),
    ("dev/limit.py", ["--json", "l.json", "--samplers", ";"], ("--samplers", "names no sampler")),
    ("dev/limit.py", ["--json", "l.json", "--tokens-a-pass", "5"], "does not divide"),
    ("dev/limit.py", ["--json", "l.json"], "run from the repository root"),  # the chain's text, data/tinyshakespeare.txt
    ("dev/limit.py", ["--json", "l.json", "--short-len", "0", "--short-prompt", "x"], "--short-prompt acts only with"),
    ("dev/limit.py", ["--json", "l.json", "--no-oracle", "--checkpoints", DM, "--short-len", "2"],
     "--short-len sets the oracle's"),
    ("dev/limit.py", ["--json", "l.json", "--samplers", "AR", "--drafted-samples", "8"], "--drafted-samples acts only"),
    ("dev/plot_limit.py", ["eval.json"], "'rows'"),
    ("dev/plot_limit.py", ["eval.json", "--samplers", "nope"], ("--samplers", "'nope'")),
    ("dev/bench_train.py", [*BT, "--activation_checkpointing"], "--activation_checkpointing is not read"),
    ("dev/draft_ceiling.py", [DM], "not a block-diffusion network trained with a next-token loss"),
    ("dev/spec_rounds.py", [DM], "not a block-diffusion network trained with a next-token loss"),
    ("dev/two_pass.py", [DM, AR], "not a block-diffusion network trained with a next-token loss"),
    ("dev/gpu_sample.py", [AR, DM, "--smoke"], "not a block diffusion network trained with bd3_ar=1"),
    ("dev/bd3_variance.py", [DM, "--bands", "0.8-0.2"], ("--bands", "0.8-0.2")),
    ("scripts/frontier.py", [*FR, "--grid", "temperature="], ("--grid", "temperature=")),
]
HAND += [("train.py", [*T, f"{name}.py", "--out_dir=x"], words) for name, (_, words) in BAD_CONFIG_FILES.items()]
# the --device torch was not built for or this machine lacks: one line naming the devices there are
BAD_DEVICES = ("xla", "meta", "cpu:1", "cuda:7", "mps", "cuda:x")
HAND += [(cli, [*base, f"--device={v}"], f"--device={v}") for cli, base in (("train.py", TRAIN), ("inference.py", INFER),
                                                                            ("dev/bench_train.py", BT))
         for v in BAD_DEVICES]

# torchrun's environment read strictly (utils.dist.torchrun_ranks), and whole: the thread variables read together
ENVIRONMENTS = {"rank_alone": dict(RANK="1"),
                "no_master": dict(RANK="1", LOCAL_RANK="1", WORLD_SIZE="2", MASTER_PORT="29500"),
                "not_a_number": dict(RANK="one", LOCAL_RANK="0", WORLD_SIZE="2", MASTER_ADDR="localhost",
                                     MASTER_PORT="29500"),
                # a worker of a hand-made launch (or of a node past the first): its own refusal is its only line
                "worker": dict(RANK="1", LOCAL_RANK="1", WORLD_SIZE="2", MASTER_ADDR="localhost", MASTER_PORT="29500"),
                "mkl_bad": dict(OMP_NUM_THREADS="1", MKL_NUM_THREADS="two"),  # torch reads MKL's over OMP's
                "openblas_bad": dict(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="0"),
                "limit_bad": dict(OMP_THREAD_LIMIT="-1")}
HAND += [("train.py", TRAIN, ("RANK set but not LOCAL_RANK", "unset RANK"), "rank_alone"),
         ("train.py", TRAIN, "set but not MASTER_ADDR: start the run with torchrun", "no_master"),
         ("train.py", TRAIN, "must be whole numbers", "not_a_number"),
         ("inference.py", [*INFER, "--temperature", "-1"], "temperature must be >= 0", "rank_alone")]
HAND += [(cli, BASE[cli], "MKL_NUM_THREADS=two is not a positive integer", "mkl_bad")
         for cli in ("train.py", "inference.py", "scripts/eval.py", "scripts/frontier.py", "dev/bench_train.py",
                     "scripts/race.py", "dev/spec_rounds.py", "dev/two_pass.py", "dev/draft_ceiling.py",
                     "dev/nanogpt_score.py")]
HAND += [(cli, BASE[cli], f"{var} is not a positive integer", case)
         for cli in ("train.py", "inference.py", "scripts/eval.py", "scripts/race.py", "dev/bench_train.py")
         for var, case in (("OPENBLAS_NUM_THREADS=0", "openblas_bad"), ("OMP_THREAD_LIMIT=-1", "limit_bad"))]


def parser_of(cli):
    """The argparse parser a scripts/ or dev/ CLI builds, caught as its main() starts to parse (train.py and
    inference.py take config.py's keys instead: None)."""
    if cli in ("train.py", "inference.py"):
        return None

    class Caught(Exception):
        pass

    def catch(self, *a, **k):
        raise Caught(self)
    real, argparse.ArgumentParser.parse_known_args = argparse.ArgumentParser.parse_known_args, catch
    try:
        MAINS[cli]()([])
    except Caught as e:
        return e.args[0]
    finally:
        argparse.ArgumentParser.parse_known_args = real
    raise AssertionError(f"{cli}: main() never parsed its arguments")


def derived_rows():
    """Rows read off each parser, so a new flag of the shared kinds (utils/cli.py) is tried unlisted: a count below
    its minimum, a list with a wrong or no element, a folder for an output, range_rows, each option abbreviated,
    each of BAD_DEVICES (after BASE, what the CLI needs to get that far)."""
    rows = []
    for cli in discover():
        for a in getattr(parser_of(cli), "_actions", []):
            flag = a.option_strings[0] if a.option_strings else None
            if flag and getattr(a.type, "minimum", None) is not None:
                rows.append((cli, [flag, str(a.type.minimum - 1)], (flag, f">= {a.type.minimum}"), None, "zero"))
            if flag and getattr(a.type, "element", str) is not str:  # a list of any strings has no wrong item
                rows.append((cli, [flag, "nope"], (flag, "'nope'"), None, "list"))
            if flag and not isinstance(getattr(a.type, "element", None), (dict, type(None))):  # a list that is empty
                rows.append((cli, [*BASE[cli], flag, ","], (flag, "','"), None, "list"))
            if flag and a.type is output:  # a folder where its file goes
                rows.append((cli, [*BASE[cli], flag, "empty_dir"], (flag, "empty_dir"), None, "output"))
            if not flag or a.dest == "help":
                continue
            rows += [(cli, argv, words, None, "range") for argv, words in range_rows(flag, a.type)]
            prefix = flag[:-2] if len(flag) >= 6 else flag[:-1]  # one argparse would have taken for the flag
            if len(prefix) > 2:  # '--' alone is the end of the options
                rows.append((cli, [*BASE[cli], prefix], (f"unrecognized arguments: {prefix}", flag), None,
                             "abbreviation"))
            if flag == "--device":
                rows += [(cli, [*BASE[cli], flag, v], f"--device={v}", None, "device") for v in BAD_DEVICES]
    return rows


def range_rows(flag, kind):
    """[(argv, words)]: the values a number flag of utils/cli.py's kinds cannot hold, each refused while parsing."""
    element = getattr(kind, "element", None)
    if isinstance(element, dict):  # key_list: each float key 'nan', each int key past an int64
        return ([([flag, f"{k}=nan"], (flag, "finite")) for k, t in element.items() if t is float] +
                [([flag, f"{k}={2 ** 63}"], (flag, "an int64")) for k, t in element.items() if t is int])
    if element is not None:  # list_of: a good item, then one its kind cannot hold
        inner = range_rows(flag, element) if callable(element) else []
        return [([flag, f"1,{argv[-1]}"], words) for argv, words in inner]
    minimum = getattr(kind, "minimum", None)
    if isinstance(minimum, float):
        return [([f"{flag}={v}"], (flag, "must be a finite number")) for v in ("nan", "inf", "-inf", "1e999")]
    if isinstance(minimum, int):
        most = getattr(kind, "most", None)
        too_large = [([flag, str(most + 1)], (flag, f"<= {most:,}"))] if most is not None else []
        return [([flag, str(2 ** 63)], (flag, "an int64")), *too_large]
    return []


@functools.lru_cache(maxsize=None)
def flags_of(cli):
    """Every spelling of every flag the CLI takes: config.py's keys (train.py, inference.py and bench_train.py's
    rest), its parser's options."""
    from utils.values import TYPES
    keys = {f"--{k}" for k in TYPES} | {f"--{k.replace('_', '-')}" for k in TYPES}
    if cli in ("train.py", "inference.py"):
        return frozenset(keys | {"--help"})
    options = {o for a in parser_of(cli)._actions for o in a.option_strings}
    return frozenset(options | (keys if cli == "dev/bench_train.py" else set()))


# what a refusal may name that is not its CLI's flag: a command to run, what a run was trained with, another program's
# flag, the words it could not read (echoed)
ELSEWHERE = re.compile(r"python \S+\.py[^;:,]*|train(?:ed|s|ing)?(?: it| them| a new one| one)? with [^;:,)]*|"
                       r"\S+\.py(?:'s)? --\S+|unrecognized arguments: [^(]*")


def foreign_flags(cli, err):
    """The flags a one-line refusal names that its CLI does not take (outside ELSEWHERE's mentions)."""
    own = ELSEWHERE.sub("", err)
    named = {m.rstrip(".,;:'\")") for m in re.findall(r"(?<![\w/-])--[a-z][\w-]*", own)}
    return sorted(f for f in named if f.split("=")[0] not in flags_of(cli))


def _state(d):
    """Each file's (inode, size, modification time): a write in place moves the time, a replacement the inode."""
    return {p: (st.st_ino, st.st_size, st.st_mtime_ns) for p in Path(d).rglob("*") if p.is_file()
            for st in (p.stat(),)}


def _linked_copy(files, d):
    """The fixture folder as hard links (a copy a row is slow): a write in place still shows, as a moved time."""
    def link(src, dst):
        try:
            os.link(src, dst)
        except OSError:  # another filesystem
            shutil.copy2(src, dst)
    shutil.copytree(files, d, copy_function=link)


def worker_rows(rows):
    """Each CLI's first plain refusal of rows, under a torchrun worker's whole rank environment: a worker past local
    rank 0 of torchrun's leaves the line to that one, but a hand-made launch's worker is alone: it says its own."""
    first = {}
    for cli, argv, words, *spoiler in rows:
        if not spoiler:
            first.setdefault(cli, (cli, argv, words, "worker"))
    return list(first.values())


GENERATED = config_rows() + needs_rows() + ignored_rows() + unread_sampler_rows() + checkpoint_rows()
ROWS = [(cli, argv, words, *spoiler, None)[:4] for cli, argv, words, *spoiler in HAND + GENERATED]
ROWS += worker_rows(ROWS) + [row[:4] for row in derived_rows()]


@pytest.mark.parametrize("cli, argv, words, spoiler", ROWS, ids=[f"{i:04d}-{r[0]}" for i, r in enumerate(ROWS)])
def test_bad_input_exits_2_with_one_line_and_changes_nothing(cli, argv, words, spoiler, files, tmp_path, monkeypatch,
                                                             capsys):
    d = tmp_path / "case"
    _linked_copy(files, d)
    monkeypatch.chdir(d)
    main = MAINS[cli]()
    may_change = _spoil(spoiler, monkeypatch, d)
    before = _state(d)
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        run_cli(main, [str(a) for a in argv])
    err = assert_one_line_error(e.value.code, capsys.readouterr().err, *([words] if isinstance(words, str) else words))
    assert not foreign_flags(cli, err), f"{cli} has no {foreign_flags(cli, err)}: {err}"
    monkeypatch.undo()
    after = _state(d)
    assert {p: h for p, h in after.items() if p in before and p not in may_change} == \
        {p: h for p, h in before.items() if p not in may_change}, "an existing file changed"
    assert not [p for p in after if ".tmp" in p.name], "a temp file was left behind"
    assert not (d / "PWNED").exists()


def test_every_output_flag_goes_through_the_shared_check():
    """Every script's output flag (--json, --out, --output, --summary) is utils.cli.output's, whose rows (a file there,
    a checkpoint, a folder, a path under a file) hold for all."""
    from utils.cli import output
    for cli in discover():
        for a in getattr(parser_of(cli), "_actions", []):
            if {"--json", "--out", "--output", "--summary"} & set(a.option_strings):
                assert a.type is output, f"{cli} {a.option_strings[0]}: take it with type=utils.cli.output"


def test_without_ffmpeg_the_gif_is_written_and_a_warning_says_why(files, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(video, "_find_ffmpeg", lambda: None)
    run_cli(inference.main, ["--checkpoint", str(files / DM), "--gen-len", "8", "--viz-video", "v.mp4"])
    out = capsys.readouterr()
    assert (tmp_path / "v.gif").stat().st_size > 0 and not (tmp_path / "v.mp4").exists()
    assert "no ffmpeg found" in out.out + out.err


def test_ctrl_c_in_sampling_is_one_line_and_leaves_no_half_video(files, tmp_path, monkeypatch, capsys):
    from sampling import trace
    real, calls = trace.Trace.__call__, []

    def interrupt_at_step_2(self, info):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, info)

    monkeypatch.setattr(trace.Trace, "__call__", interrupt_at_step_2)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        run_cli(inference.main, ["--checkpoint", str(files / DM), "--viz-video", "v.mp4"])
    assert e.value.code == 130 and capsys.readouterr().err == "interrupted\n"
    assert not list(tmp_path.iterdir())  # no MP4, no GIF, no temp file


@pytest.mark.slower
def test_output_cut_short_by_its_reader_ends_quietly(files, tmp_path):
    """python inference.py ... | head -1: ~200 KB of samples into a pipe whose reader leaves after one line."""
    # in a temp folder: its trace goes to artifacts/media/ under the folder it runs in
    p = subprocess.Popen([sys.executable, str(ROOT / "inference.py"), "--checkpoint", str(files / DM), "--num-samples",
                          "3000", "--gen-len", "24"], cwd=tmp_path, env=ENV, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    first = p.stdout.readline()
    p.stdout.close()
    err = p.stderr.read()
    p.wait(timeout=HANG)
    assert first.startswith(b"checkpoint ") and err == b"" and p.returncode == 141


def test_a_device_index_past_the_gpus_is_one_line_naming_those_there_are(monkeypatch):
    """cuda:7 on a one-GPU machine (the CPU rows cannot reach it here: CUDA is refused before its index)."""
    from utils import dist
    from utils.errors import UserError
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert dist.pick_device("cuda:0") == torch.device("cuda", 0) and dist.pick_device("cuda") == torch.device("cuda")
    with pytest.raises(UserError, match=r"--device=cuda:7: this machine has no cuda device 7; use one of cpu, cuda:0"):
        dist.pick_device("cuda:7")


@pytest.mark.parametrize("argv, words", [
    (["cpu", "--data_path=missing.txt"], "data_path missing.txt not found"),
    (["cpu", "--val_path=missing_val.txt"], "val_path missing_val.txt not found"),
])
def test_a_missing_input_file_is_the_first_line_not_after_the_config(argv, words, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(fileio, "REPO", str(tmp_path))  # what the user's own clone holds (data/stories.txt) is no input
    (tmp_path / "data").mkdir()
    shutil.copy(real_text(), tmp_path / "data" / "tinyshakespeare.txt")
    with pytest.raises(SystemExit) as e:
        run_cli(train.main, [*argv, "--max_iters=0"])
    out, err = capsys.readouterr()
    assert e.value.code == 2 and words in err and out == ""  # nothing printed before the error: no config dump


# ----------------------------------------------------------------------------- an export or checkpoint is input too
def _chars(meta, d, cut=0, extra=""):
    """Swap the export's vocabulary for another (its fingerprint recomputed, as a forger would): the network's
    vocab_size no longer matches it (fewer: an IndexError on a high id; more: [MASK] read as a character)."""
    from utils.tokenizer import fingerprint, tokenizer_from_state
    chars = json.loads((d / "vocab.json").read_text())["chars"]
    chars = (chars[:-cut] if cut else chars) + extra
    (d / "vocab.json").write_text(json.dumps({"chars": chars}))
    meta["tokenizer_fingerprint"] = fingerprint(tokenizer_from_state(dict(kind="char", chars=chars)))


ARGS, CFG, TOP = "model_args", "config", None  # TOP: config.json's own fields
EDITS = [  # (part, key, value or an edit of (meta, folder), words): model_args are refused before a layer is built
    (ARGS, "n_layer", "1", "n_layer='1', which is no ModelArgs int"),
    (ARGS, "n_layr", 1, "n_layr=1, which is no ModelArgs key"),
    (ARGS, "n_layer", 10 ** 9, "n_layer=1,000,000,000, outside 1 to 4,096"),  # built layers for hours
    (ARGS, "n_embd", 0, "n_embd=0, outside 1 to 1,048,576"),
    (ARGS, "attn_scale", 0.35, ("attn_scale=0.35, which this version removed", "git checkout 3cea44f")),
    (ARGS, "vocab", lambda m, d: _chars(m, d, cut=3), "its tokenizer has"),
    (ARGS, "vocab", lambda m, d: _chars(m, d, extra="\u00e9\u00e8"), "its tokenizer has"),
    (CFG, "max_itters", 3, "unknown config key 'max_itters' (did you mean max_iters"),
    (CFG, "diffusion_steps", "20", "diffusion_steps must be int, got str"),
    (CFG, "temperature", float("nan"), "temperature must be a finite number, got nan"),  # JSON's NaN
    (CFG, "diffusion_steps", 10 ** 12, "diffusion_steps=1000000000000 is out of range"),
    (CFG, "objective", "mdlm2", "objective='mdlm2' is not one of"),
    # each field checked against the rest: the config's objective, the top level's objective, schedule, T, [MASK]
    (CFG, "objective", "ar", ("its config (objective='ar') describes a network with", "causal=True",
                              "its model_args hold", "causal=False")),
    (TOP, "objective", "ar", "config.json's objective='ar' disagrees"),
    (TOP, "schedule", "linear", "config.json's schedule='linear' disagrees"),
    (TOP, "diffusion_steps", 5, "config.json's diffusion_steps=5 disagrees"),
    (TOP, "mask_id", 3, "config.json's mask_id=3 disagrees"),
    (TOP, "format", "micro-dllm export 9", "format='micro-dllm export 9' is not 'micro-dllm export 1'"),
    (TOP, "ema_weights", 3, "ema_weights=3 is neither true nor false"),
    (TOP, "iter", -1, "iter=-1 is no step count"),
    (TOP, "meta", {"chars_per_token": "x"}, "holds no chars_per_token > 0"),
    (ARGS, "causal", True, "describes a network with causal=False, its model_args hold causal=True"),
    (ARGS, "block_size", 64, "describes a network with block_size=32, its model_args hold block_size=64"),
    (CFG, "n_layer", 2, "describes a network with n_layer=2, its model_args hold n_layer=1"),
    (CFG, "tokenizer", "bpe", "its config says tokenizer='bpe', its tokenizer is 'char'"),
]


@pytest.mark.parametrize("part, key, value, words", EDITS, ids=[f"{p or 'top'}-{k}-{i}" for i, (p, k, *_) in
                                                             enumerate(EDITS)])
def test_an_edited_export_is_refused_in_one_line_as_a_command_line_would_be(part, key, value, words, files, tmp_path,
                                                                            monkeypatch, capsys):
    """An export's config.json (its checksum recomputed) goes through the command line's checks; model_args before
    any layer is built."""
    import checkpoint_manager
    d = tmp_path / "e"
    shutil.copytree(files / "exp", d)
    meta = json.loads((d / "config.json").read_text())
    if callable(value):
        value(meta, d)
    elif part is TOP:
        meta[key] = value
    else:
        meta[part][key] = value
    meta["config_checksum"] = checkpoint_manager.config_checksum(meta)
    (d / "config.json").write_text(json.dumps(meta))
    if part == ARGS:
        monkeypatch.setattr(checkpoint_manager, "Transformer", lambda *a: pytest.fail("a layer was built"))
    code, _, err = run_cli_here(inference.main, ["--checkpoint", d], capsys)
    assert_one_line_error(code, err, *([words] if isinstance(words, str) else words))


def _edited(files, path, part, changes):
    """The fixture's model.pt with `changes` in its `part` (config, model_args), the checksum recomputed."""
    raw = torch.load(files / DM, weights_only=True)
    save_checkpoint(path, {**{k: v for k, v in raw.items() if k != "checksum"}, part: {**raw[part], **changes}})
    return path


def test_an_edited_checkpoint_is_refused_as_its_export_would_be(files, tmp_path, capsys):
    """The same checks on a model.pt whose checksum was recomputed after the edit: its config and its model_args."""
    edits = [(CFG, "n_layer", "1", "n_layer must be int"), (ARGS, "block_size", 2 ** 40, "outside 1 to 2,147,483,647"),
             # what a weights-only load still reads that no key can be
             (CFG, "n_layer", {1, 2}, "got set {1, 2}"), (CFG, "temperature", 1j, "got complex 1j"),
             (CFG, "prompt", b"x", "got bytes b'x'"), (CFG, "n_layer", tuple(range(100000)), "(688,890 characters)"),
             (ARGS, "n_layer", {1}, "n_layer={1}, which is no ModelArgs int")]
    for part, key, value, words in edits:
        code, _, err = run_cli_here(inference.main, ["--checkpoint", _edited(files, tmp_path / "e.pt", part,
                                                                              {key: value})], capsys)
        assert code == 2 and words in err and err.count("\n") == 1, err


@pytest.mark.parametrize("saved, said", [(dict(device="cuda:7"), "; device cpu,"), (dict(compile="true"), "")])
def test_a_checkpoints_own_sampling_keys_are_no_flags_typed_here(saved, said, files, tmp_path, capsys):
    """A run's saved device='cuda:7' or compile='true': this machine's device samples, and the start-up line names
    no step compiled (a masked-diffusion sampler runs no decode step)."""
    path = _edited(files, tmp_path / "c.pt", CFG, saved)
    code, out, err = run_cli_here(inference.main, ["--checkpoint", path, "--gen-len", "4", "--steps", "2",
                                                   "--viz-video", "off"], capsys)
    assert code == 0 and out.startswith("checkpoint ") and "compiled" not in out.splitlines()[0] and said in out, err


@pytest.mark.parametrize("raw, words", [
    ("[" * 100000 + "]" * 100000, "its config.json nests values too deep to read"),
    ("1" + "0" * 5000, "has an unreadable config.json"),  # json reads no int past 4,300 digits
    ("[" + "1, " * 200000 + "1]", "(600,003 characters)"),
    ("1e999", "n_layer must be int, got float inf"),
], ids=["deep", "digits", "long_list", "inf"])
def test_an_export_whose_config_json_holds_what_no_value_can_be_is_one_line(raw, words, files, tmp_path, capsys):
    """config.json as text json.dumps cannot write: nested too deep, too many digits, too long, infinite."""
    d = tmp_path / "e"
    shutil.copytree(files / "exp", d)
    meta = json.loads((d / "config.json").read_text())
    meta["config"]["n_layer"] = "@@"
    text = json.dumps(meta).replace('"@@"', raw)
    from checkpoint_manager import config_checksum
    try:  # its checksum recomputed where the text reads, as a forger would (test_shipped.py: the checksum's own test)
        text = text.replace(meta["config_checksum"], config_checksum(json.loads(text)))
    except (ValueError, RecursionError):
        pass
    (d / "config.json").write_text(text)
    code, _, err = run_cli_here(inference.main, ["--checkpoint", d], capsys)
    assert code == 2 and words in err and err.count("\n") == 1 and len(err) < 400, err[:500]


BEFORE_WORK = [  # (cli, argv, the first piece of work: it must not start, words)
    ("train.py", [*T, "--out_dir=x", "--viz_video=folder.mp4"], "utils.dataloader.prepare_data", "is a directory"),
    ("train.py", [*T, "--out_dir=old.txt/run"], "utils.dataloader.prepare_data", UNDER),
    ("inference.py", ["--checkpoint", DM, "--viz-video", "trace.mp4"], "checkpoint_manager.read_checkpoint",
     "trace.gif is a directory"),
    ("inference.py", ["--checkpoint", DM, "--html", "old.txt/p.html"], "checkpoint_manager.read_checkpoint", UNDER),
    ("inference.py", ["--checkpoint", DM], "checkpoint_manager.read_checkpoint", "artifacts/media is a file",
     "media_blocked"),
    ("train.py", [*T, "--out_dir=x"], "utils.dataloader.prepare_data", "artifacts/media is not a folder you can write",
     "media_readonly"),
    ("train.py", [*T, "--out_dir=run", "--max_iters=8", "--resume"], "utils.dataloader.prepare_data",
     "run/metrics.jsonl is a folder", "log_folder"),
    ("inference.py", ["--checkpoint", DM, "--html", "n" * 300 + ".html"], "checkpoint_manager.read_checkpoint",
     "choose a shorter name"),
    ("scripts/eval.py", [*EV, "--json", "old.txt/e.json"], "checkpoint_manager.read_checkpoint", UNDER),
    ("scripts/frontier.py", [*FR, "--json", "old.txt/f.json"], "checkpoint_manager.read_checkpoint", UNDER),
    ("scripts/export.py", [DM, "old.txt/exp"], "checkpoint_manager.read_checkpoint", UNDER),
    ("dev/plot.py", ["curves", "dm", "--out", "old.txt/c.png"], "dev.plot.read_jsonl", UNDER),
    ("scripts/data.py", ["--input-file", "text.txt", "--output", "old.txt/o.txt"], "scripts.corpus.local_format", UNDER),
    ("scripts/train_tokenizer.py", ["--input", "text.txt", "--output", "old.txt/t.json"],
     "scripts.train_tokenizer.read_text", UNDER),
    ("scripts/eval.py", [DM, "--n-windows", "2", "--n-samples", "1", "--gen-len", "500"], "scripts.eval.evaluate",
     "exceeds the context of dm/model.pt"),
    ("train.py", [*T, "--out_dir=x", "--n_layer=64", "--n_embd=65536", "--n_head=64"], "utils.dataloader.get_batch",
     "GiB a rank, cpu has"),
]


@pytest.mark.parametrize("cli, argv, work, words, spoiler", [(*r, None)[:5] for r in BEFORE_WORK],
                         ids=[f"{r[0]}-{i}" for i, r in enumerate(BEFORE_WORK)])
def test_outputs_are_checked_before_the_work(cli, argv, work, words, spoiler, files, tmp_path, monkeypatch, capsys):
    """An output that cannot be written is refused before the entry point's first piece of work (here failing)."""
    import importlib
    shutil.copytree(files, tmp_path / "case")
    monkeypatch.chdir(tmp_path / "case")
    _spoil(spoiler, monkeypatch, tmp_path / "case")
    module, name = work.rsplit(".", 1)
    original, ran = getattr(importlib.import_module(module), name), lambda *a, **k: pytest.fail(f"{work} ran first")
    for m in list(sys.modules.values()):  # the module's name, and each `from module import name` of it
        if getattr(m, "__dict__", {}).get(name) is original:
            monkeypatch.setattr(m, name, ran)
    code, _, err = run_cli_here(MAINS[cli](), argv, capsys)
    assert code == 2 and words in err and err.count("\n") == 1, err


@pytest.mark.parametrize("argv", [["--n_layer=64", "--n_embd=65536", "--n_head=64"], ["--batch_size=100000000"],
                                  ["--optimizer=muon", "--n_embd=32768", "--n_layer=32", "--n_head=32", "--ema=0.5"]])
def test_a_run_past_the_machines_memory_is_refused_before_its_model_is_built(argv, tmp_path, monkeypatch, capsys):
    """The memory estimate reads a network on the meta device; a real one is never made."""
    real = train.Transformer

    def only_on_meta(*a, **k):
        assert torch.get_default_device().type == "meta", "a real model was built before the memory check"
        return real(*a, **k)
    monkeypatch.setattr(train, "Transformer", only_on_meta)
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli_here(train.main, [*T, "--out_dir=x", "--max_iters=10", *argv], capsys)
    assert code == 2 and "GiB a rank, cpu has" in err and err.count("\n") == 1, err
    assert "estimate: ~" in out and not (tmp_path / "x").exists()


# ----------------------------------------------------------------------------- advice that runs
# A refusal's advice with values ('use --gen-len 24', 'e.g. --max_iters=100'); a placeholder (NEW_DIR) is no value,
# 'train with --dual_ar=0.25' advice for another run
PAIR = r"(--[a-z][a-z0-9_-]*)(?:=([^\s,;:()]+)|\s+(\d[\d.]*)\b)"
ADVICE = re.compile(r"\b(?:use|pass|give|(?<!train )(?<!trained )with|e\.g\.)\s+(%s(?:\s+%s)*)" % (PAIR, PAIR))
# where each entry point's work starts, stopped once the advised command passed every check before it
WORK = {"train.py": "train.train", "inference.py": "inference.fill", "scripts/eval.py":
        "scripts.eval.evaluate", "scripts/frontier.py": "scripts.frontier.grid_of", "scripts/export.py":
        "scripts.export.export", "dev/plot.py": "dev.plot._save", "scripts/data.py": "scripts.corpus.write_corpus",
        "scripts/train_tokenizer.py": "scripts.train_tokenizer.train_bpe", "dev/bench_train.py":
        "dev.bench_train.make_step",
        "dev/order_nll.py": "dev.order_nll.nll_by_pass", "dev/infill.py": "dev.infill.infill_recovery",
        "dev/nanogpt_score.py": "dev.nanogpt_score.nanogpt_per_window", "dev/bd3_variance.py":
        "dev.bd3_variance.band_stats", "dev/draft_ceiling.py": "bd3.sample_clean_ar", "dev/spec_rounds.py":
        "bd3.sample_clean_ar", "dev/two_pass.py": "dev.two_pass.sample_two_pass", "dev/plot_epochs.py":
        "dev.plot_epochs._save", "dev/plot_frontier.py": "dev.plot_frontier._save", "dev/epochs.py":
        "dev.epochs.write_summary", "dev/threads.py": "dev.threads.child", "dev/gpu_sample.py": "dev.gpu_sample.load_model",
        "scripts/race.py": "scripts.race.run_lanes", "dev/bench_serve.py": "dev.bench_serve.start",
        "dev/mutants.py": "dev.mutants.make_scratch"}


class Checked(BaseException):
    """Raised where the work starts: every check passed (run_cli lets it through)."""


def advice(err):
    """[[(flag, value), ...] a clause] of what a one-line refusal advises."""
    clauses = [[(flag, (eq or num).strip("'\"")) for flag, eq, num in re.findall(PAIR, m[0])]
               for m in ADVICE.findall(err)]
    return [c for c in clauses if not any(re.fullmatch(r"[A-Z_.]+", value) for _, value in c)]


def with_advice(argv, clause):
    """argv with each flag of the clause (either spelling) set to its value: its own, if given, dropped."""
    for flag, value in clause:
        names = {"--" + flag[2:].replace("_", "-"), "--" + flag[2:].replace("-", "_")}
        out, i = [], 0
        while i < len(argv):
            word = str(argv[i])
            if word.split("=")[0] in names:  # --flag=v, --flag v, or a bare --flag
                bare = "=" in word or i + 1 == len(argv) or str(argv[i + 1]).startswith("--")
                i += 1 if bare else 2
                continue
            out.append(argv[i])
            i += 1
        argv = [*out, f"{flag}={value}"]
    return argv


def test_advice_is_read_with_its_value():
    assert advice("shorten the prompt, use --gen-len 24, or decode in blocks with --semi-ar-length 8 --steps 63") == [
        [("--gen-len", "24")], [("--semi-ar-length", "8"), ("--steps", "63")]]
    assert advice("pass --force to replace it, or --out_dir=NEW_DIR; e.g. --max_iters=100") == [[("--max_iters", "100")]]
    assert advice("acts only with --remask='remdm': give that too; or train with --dual_ar=0.25") == [
        [("--remask", "remdm")]]
    assert advice("give one trained with --objective=bd3 --bd3_ar=1") == []  # advice for another run
    assert with_advice(["--gen-len", "500", "--live", "--x=1", "--steps=3"], [("--gen_len", "24"), ("--steps", "9")]) \
        == ["--live", "--x=1", "--gen_len=24", "--steps=9"]


# the hand rows with no spoiled environment (a generated row's example value is not advice)
ADVISED = [r for r in ROWS[:len(HAND)] if r[0] in WORK and not r[3]]


def test_a_refusals_advice_runs(files, tmp_path, monkeypatch, capsys):
    """Every refusal that advises a flag's value: the same command with that value is not refused for that flag."""
    d = tmp_path / "case"
    shutil.copytree(files, d)
    monkeypatch.chdir(d)
    reach_work(monkeypatch)
    tried, failed = 0, []
    import matplotlib.pyplot as plt
    for cli, argv, *_ in ADVISED:
        plt.close("all")  # a plot that reached its work (_save, which closes its figure) raised there instead
        try:
            _, _, err = run_cli_here(MAINS[cli](), argv, capsys)
        except Checked:  # refused in the work itself (non-finite logits): no advice before it
            continue
        for clause in advice(err):
            tried += 1
            again = with_advice(argv, clause)
            try:
                code, _, err2 = run_cli_here(MAINS[cli](), again, capsys)
            except Checked:
                continue
            keys = {k for flag, _ in clause for k in (flag[2:].replace("-", "_"), flag[2:].replace("_", "-"))}
            if code == 2 and keys & {w.strip("-") for w in re.findall(r"[\w-]+", err2)}:
                failed.append(f"{cli} {' '.join(map(str, argv))}: {err.strip()} -> {' '.join(map(str, again))}: "
                              f"{err2.strip()}")
    assert tried >= 10 and not failed, "\n".join(failed)


# ----------------------------------------------------------------------------- valid input accepted
# Each row must reach its entry point's work (WORK):
# (cli, argv, environment variables set, or None, or a _spoil case)
CLUSTER = dict(MASTER_ADDR="10.0.0.1", MASTER_PORT="29500")  # what a cluster profile sets for every job
VALID = [
    ("train.py", [*T, "--out_dir=x"], CLUSTER),
    ("inference.py", ["--checkpoint", DM], CLUSTER),
    ("inference.py", ["--checkpoint", DM, "--steps", "20"], None),  # the chain's T: every step on its grid
    ("scripts/eval.py", ["eb/model.pt", "--n-windows", "2", "--n-samples", "1", "--remask", "none"], None),  # bound
    ("train.py", [*T, "--out_dir=x"], dict(OMP_NUM_THREADS="1", MKL_NUM_THREADS="2")),
    # config files with a UTF-8 BOM and CRLF lines; literals that are values
    ("inference.py", ["bom.py", "--checkpoint", DM], None),
    ("dev/bench_train.py", [*BT, "bom_train.py"], None),
    ("train.py", [*T, "bom_train.py", "--out_dir=x"], None),
    ("train.py", [*T, "neighbours.py", "--out_dir=x"], None),
    # a removed key that changes neither the network, its loss nor a sample's law
    ("inference.py", ["--checkpoint", "old_display/model.pt"], None),
    ("train.py", [*T, "--out_dir=old_display", "--max_iters=8", "--resume"], None),
    ("train.py", [*T, "--out_dir=x", "--init_from=old_display/model.pt"], None),
    ("train.py", [*T, "--out_dir=x", "--init_from=old_training/model.pt"], None),  # a new run: its own training
    ("scripts/eval.py", ["old_training/model.pt", *EV[1:]], None),
    # a threshold checkpoint: its own threshold at a temperature, and a --grid of steps with the threshold off
    ("scripts/frontier.py", ["th/model.pt", *FQ, "--grid", "temperature=1.0"], None),
    ("scripts/frontier.py", ["th/model.pt", *FQ, "--grid", "steps=4,8", "--grid", "threshold=0", "--grid",
                             "temperature=1.0"], None),
    # the entropy bound beside the fixed-step sampler, and each edge of its range
    ("scripts/frontier.py", [DM, *FQ, "--grid", "order=random,entropy", "--grid", "entropy_bound=0,0.5,1e300", "--grid",
                             "steps=2,4", "--grid", "remask=none"], None),
    ("inference.py", ["--checkpoint", DM, "--entropy_bound", "0.5", "--order", "entropy", "--remask", "none"], None),
    ("inference.py", ["--checkpoint", DM, "--entropy_bound", "1e300", "--order", "margin"], None),  # one pass
    ("inference.py", ["--checkpoint", DM, "--entropy_bound", "1e-320"], None),  # a token a pass
    ("inference.py", ["--checkpoint", "eb/model.pt", "--order", "random", "--entropy_bound", "0", "--steps", "4"], None),
    ("inference.py", ["--checkpoint", "eb/model.pt", "--html", "--viz-video", "off"], None),
    ("scripts/eval.py", ["eb/model.pt", "--n-windows", "2", "--n-samples", "1", "--order", "confidence"], None),
    ("scripts/race.py", ["eb/model.pt", DM, "--seeds", "1", "--gen-len", "20"], None),
    ("dev/infill.py", ["eb/model.pt"], None),
    ("dev/infill.py", [DM], None),  # its default span on a 32-token context: 16, not 20 refused
    ("dev/infill.py", [DM, "--data-path", str(real_text()), "--span", "16"], None),  # told --data_path, which it lacked
    # siblings: the page reads --gif-frame-ms as the MP4 does
    ("inference.py", ["--checkpoint", DM, "--viz-video", "off", "--html", "--gif-frame-ms", "100"], None),
    ("inference.py", ["--checkpoint", AR, "--viz-video", "off", "--html"], None),  # the AR's trace: a token a frame
    ("inference.py", ["--checkpoint", AR, "--live"], None),
    ("inference.py", ["--checkpoint", AR, "--viz-video", "ar.mp4"], None),  # all three alike on an AR
    ("scripts/export.py", ["exp", "exp_again"], None),  # an export exported again (the shipped weights' case)
    ("train.py", [*T, "--out_dir=dm", "--max_iters=8", "--resume"], None),  # what the --init_from row above advises
    # a stream with --viz-video off; --html alone beside a blocked artifacts/media; a preset given your own text
    ("inference.py", ["--checkpoint", DM, "--prompts-file", "prompts_ok.txt", "--viz-video", "off"], None),
    ("inference.py", ["--checkpoint", DM, "--html", "page.html"], "media_blocked"),
    ("train.py", ["cpu", *T], None),
    # the environment a cluster sets, every thread variable: a positive count
    ("inference.py", ["--checkpoint", DM], dict(OMP_NUM_THREADS="4", MKL_NUM_THREADS="1")),
    # each math library's own variable, alone or as a cap
    ("train.py", [*T, "--out_dir=x"], dict(OPENBLAS_NUM_THREADS="1")),
    ("inference.py", ["--checkpoint", DM], dict(OMP_NUM_THREADS="2", OMP_THREAD_LIMIT="1")),
    ("scripts/race.py", [*RC, "--gen-len", "8"], dict(VECLIB_MAXIMUM_THREADS="1")),
    ("scripts/race.py", [*RC, "--gen-len", "8", "--threads", "1"], dict(OMP_NUM_THREADS="2")),
]


def reach_work(monkeypatch):
    """Every entry point's work (WORK) raises Checked: what reaches it passed every check."""
    import importlib
    for module, name in (w.rsplit(".", 1) for w in WORK.values()):
        monkeypatch.setattr(importlib.import_module(module), name, lambda *a, **k: (_ for _ in ()).throw(Checked()))


@pytest.mark.parametrize("cli, argv, environ", VALID, ids=[f"{i:02d}-{r[0]}" for i, r in enumerate(VALID)])
def test_valid_input_reaches_the_work(cli, argv, environ, files, tmp_path, monkeypatch, capsys):
    shutil.copytree(files, tmp_path / "case")
    monkeypatch.chdir(tmp_path / "case")
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", *THREAD_VARS):
        monkeypatch.delenv(name, raising=False)
    if isinstance(environ, str):  # a spoiled environment (_spoil's case)
        _spoil(environ, monkeypatch, tmp_path / "case")
    for name, value in (environ if isinstance(environ, dict) else {}).items():
        monkeypatch.setenv(name, value)
    reach_work(monkeypatch)
    try:
        code, _, err = run_cli_here(MAINS[cli](), argv, capsys)
    except Checked:
        return
    pytest.fail(f"{cli} {' '.join(map(str, argv))} with {environ}: exit {code} before its work: {err}")


def test_a_flag_given_twice_takes_its_last_value_on_every_entry_point():
    """A command line is composed (a base, then overrides): the last value wins (a config file's repeat is refused)."""
    import configurator
    from utils.cli import ArgParser, at_least
    assert configurator.parse(["--max_iters=3", "--max_iters", "5", "--max-iters=7"]).over()[0].max_iters == 7
    p = ArgParser(prog="x")
    p.add_argument("--n-t", type=at_least(1), default=1)
    assert p.parse_args(["--n-t", "2", "--n-t=4"]).n_t == 4


@pytest.mark.slower
def test_under_torchrun_a_refusal_is_said_once_by_local_rank_0(tmp_path):
    from helpers import popen
    p = popen([str(ROOT / "train.py"), "--batch_size=0", "--device=cpu", "--max_iters=0"], tmp_path, torchrun=2)
    _, err = p.communicate(timeout=HANG)
    assert p.returncode != 0 and err.count("error: batch_size must be >= 1") == 1, err[-3000:]


def test_a_removed_key_that_acted_on_no_network_is_dropped_with_a_note(files, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(files)
    code, out, err = run_cli_here(inference.main, ["--checkpoint", "old_display/model.pt", "--viz-video", "off"], capsys)
    assert code == 0, err
    assert "note: checkpoint old_display/model.pt has live_fps=4.0, which this version removed: dropped (it changed " \
           "neither the network, its loss nor a sample)" in out
    assert "remdm_t_on=0.3, which this version removed: dropped (a sampler's setting" in out
    from utils.checkpoint import REMOVED, REMOVED_ACTED_ON
    named = [k for keys in REMOVED_ACTED_ON.values() for k in keys]
    assert sorted(named) == sorted(REMOVED)  # every removed key says what it acted on


def test_a_default_output_never_collides_and_a_typed_one_is_refused_unless_overwrite(files, tmp_path, monkeypatch,
                                                                                        capsys):
    """A default path is new each time; a typed one is refused when it exists, unless --overwrite (or --force)."""
    shutil.copytree(files / "dm", tmp_path / "dm")
    monkeypatch.chdir(tmp_path)
    plot = MAINS["dev/plot.py"]()
    for _ in range(2):
        assert run_cli_here(plot, ["curves", "dm"], capsys)[0] == 0
    assert sorted(p.name for p in (tmp_path / "artifacts" / "plots").iterdir()) == ["curves_1.png", "curves_2.png"]
    assert run_cli_here(plot, ["curves", "dm", "--out", "c.png"], capsys)[0] == 0
    code, _, err = run_cli_here(plot, ["curves", "dm", "--out", "c.png"], capsys)
    assert code == 2 and "c.png already exists: pass --overwrite to replace it" in err
    for flag in ("--overwrite", "--force"):
        assert run_cli_here(plot, ["curves", "dm", "--out", "c.png", flag], capsys)[0] == 0
    code, _, err = run_cli_here(plot, ["curves", "missing_dir"], capsys)  # nothing plotted: no placeholder left
    assert code == 2 and len(list((tmp_path / "artifacts" / "plots").iterdir())) == 2


def test_a_scripts_refusal_names_its_own_flags_and_keeps_another_programs():
    """utils.cli.own_flags: a script's flags in its spelling, a key it lacks as a setting, train.py's commands kept."""
    from types import SimpleNamespace
    from utils.cli import own_flags
    from utils.errors import UserError

    def said(msg, **spelled):
        with pytest.raises(UserError) as e, own_flags(SimpleNamespace(gen_len=8, n_samples=1), spelled):
            raise UserError(msg)
        return str(e.value)
    assert said("use --gen_len 24 or --semi_ar_length=8") == "use --gen-len 24 or semi_ar_length=8"
    assert said("steps=100 exceeds T: use --steps=20", steps="--grid steps") == "steps=100 exceeds T: use --grid steps=20"
    assert said("train it first (python train.py baby --out_dir=run), or --n-samples 0") == \
        "train it first (python train.py baby --out_dir=run), or --n-samples 0"
    assert said("acts only with --dual_ar: train with --dual_ar=0.25") == "acts only with dual_ar: train with --dual_ar=0.25"


def test_a_resumed_log_with_bytes_no_row_of_ours_holds_is_trimmed_not_a_traceback(tmp_path):
    """--resume trims metrics.jsonl to its checkpoint: rows up to it stay, a line of no UTF-8 goes."""
    from utils.train_log import trim_metrics
    log = tmp_path / "metrics.jsonl"
    rows = [json.dumps(dict(kind="train", iter=i, loss=1.0)) + "\n" for i in (2, 4, 6)]
    log.write_bytes("".join(rows[:2]).encode() + b'\xff\xfe{"iter": 3}\n' + rows[2].encode())
    trim_metrics(str(log), 4)
    assert log.read_text() == "".join(rows[:2])


def test_who_prints_a_refusal_and_when_torchruns_variables_mean_a_process_group(monkeypatch):
    """torchrun's workers past local rank 0 leave the line to it; every other process says its own. MASTER_ADDR and
    MASTER_PORT alone are a cluster's profile, no process group."""
    from utils import dist
    from utils.errors import speaks
    worker = dict(RANK="3", LOCAL_RANK="1", WORLD_SIZE="4", MASTER_ADDR="n0", MASTER_PORT="29500")
    assert speaks({}) and speaks(worker) and speaks({**worker, "RANK": "2", "LOCAL_RANK": "0"})
    assert not speaks({**worker, "TORCHELASTIC_RUN_ID": "none"})
    assert speaks({**worker, "TORCHELASTIC_RUN_ID": "none", "LOCAL_RANK": "0", "RANK": "2"})  # a second node's first
    for name in dist.TORCHRUN_VARS:
        monkeypatch.delenv(name, raising=False)
    for name, value in CLUSTER.items():
        monkeypatch.setenv(name, value)
    assert dist.torchrun_ranks() is None
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match="MASTER_PORT set but not RANK: .* or unset WORLD_SIZE for a single process"):
        dist.torchrun_ranks()


@pytest.mark.slower
@pytest.mark.parametrize("cli, argv", [("scripts/eval.py", ["--help"]), ("scripts/eval.py", ["a.pt", "b.pt"]),
                                       ("scripts/frontier.py", ["--help"]), ("scripts/export.py", ["a.pt", "out"])])
def test_help_and_a_refused_path_answer_before_torch_is_imported(cli, argv, tmp_path):
    """--help and a missing path are answered before torch's import (16-19 s on a busy machine)."""
    r = subprocess.run([sys.executable, "-X", "importtime", str(ROOT / cli), *argv], cwd=tmp_path, env=ENV,
                       capture_output=True, text=True, timeout=HANG)
    imported = {line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    assert r.returncode == (0 if argv == ["--help"] else 2) and "torch" not in imported, r.stderr[-500:]
