"""All hyperparameters in one typed block, plus presets and a strict command-line parser.

Defaults are the reference micro-dLLM (char-level, 6/6/384, ctx 256, T=100, cosine
survival schedule, batch 64, 5000 iters, AdamW 3e-4). Override in three layers, later wins:

    python train.py                                   # defaults
    python train.py cpu                               # a named preset (see PRESETS)
    python train.py my_experiment.py                  # a Python file of `key = value` lines
    python train.py cpu --max_iters=200 --device cpu  # --key=value or --key value
    python train.py --resume                          # bare --flag sets a bool to True

Unknown keys and values of the wrong type are rejected (exit 2) with close matches.
"""
import ast
import difflib
import os
from dataclasses import dataclass, fields, asdict, replace

from utils.errors import UserError


@dataclass
class Config:
    # ---- data
    data_path: str = "data/tinyshakespeare.txt"  # text file; make one with scripts/data.py
    val_path: str = ""             # separate validation text; "" = last val_fraction of data_path
    val_fraction: float = 0.1      # nanoGPT's split: first 90% train, last 10% val
    tokenizer: str = "char"        # 'char' (vocab from the data + [MASK]) | 'bpe'
    tokenizer_path: str = "artifacts/tokenizer/tokenizer.json"  # bpe only (scripts/train_tokenizer.py)
    # ---- model
    block_size: int = 256          # context length in tokens
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384              # head_dim = n_embd / n_head = 64
    time_cond: str = "learned"     # 'learned' Embedding(T+1, d) added to the input | 'none'
    # ---- objective
    objective: str = "mdlm"        # 'mdlm' masked diffusion | 'ar' same net, causal, next-token loss
    diffusion_steps: int = 100     # T: discrete time steps of the forward process
    schedule: str = "cosine"       # survival alpha(t): 'cosine' cos(pi/2 t/T) | 'linear' 1 - t/T
    loss_type: str = "elbo"        # 'elbo' weighted NELBO | 'masked_ce' | 'all_ce' (reference objectives)
    # ---- optimisation
    batch_size: int = 64           # sequences per step
    max_iters: int = 5000          # 0 = build everything, print config and parameter count, exit
    learning_rate: float = 3e-4    # peak AdamW LR
    min_lr: float = 3e-5           # cosine decay floor (LR / 10, as nanoGPT)
    warmup_iters: int = 100        # linear warm-up steps
    weight_decay: float = 0.1      # on 2-D weights only
    beta1: float = 0.9
    beta2: float = 0.99            # 0.99: small batches (nanoGPT char recipe)
    grad_clip: float = 1.0         # 0 disables
    # ---- eval, logging, checkpoints
    eval_interval: int = 250       # steps between validation passes
    eval_iters: int = 20           # validation batches per pass (same batches every time)
    log_interval: int = 10         # steps between log lines
    out_dir: str = "artifacts/models"  # model.pt (latest/final) and best.pt land here
    resume: bool = False           # continue from out_dir/model.pt (step, optimizer, LR schedule)
    overwrite: bool = False        # allow replacing checkpoints already in out_dir
    # ---- sampling (inference.py, and the samples at the end of training)
    checkpoint: str = "artifacts/models/model.pt"
    prompt: str = ""               # text the sample must start with
    gen_len: int = 256             # tokens to generate after the prompt
    steps: int = 100               # reverse steps (NFE); <= diffusion_steps
    temperature: float = 1.0       # 0 = argmax; sampled in float64
    top_k: int = 0                 # 0 = off
    top_p: float = 1.0             # 1.0 = off
    num_samples: int = 1           # samples drawn in one batch
    viz_video: str = ""            # MP4 path for the denoising trace (a GIF is written beside it)
    trace_every: int = 1           # record one frame every N steps
    gif_frame_ms: int = 180        # GIF/MP4 frame duration
    # ---- system
    device: str = "auto"           # 'auto' (cuda -> mps -> cpu) | 'cpu' | 'cuda' | 'cuda:1' | 'mps'
    dtype: str = "auto"            # 'auto' (bf16 autocast on CUDA, fp32 elsewhere) | 'float32' | 'bfloat16'
    compile: bool = False          # torch.compile the training model
    seed: int = 1337


# Named presets: a dict of overrides on top of the defaults above.
PRESETS = {
    # nanoGPT's train_shakespeare_char recipe, diffusion flavour (the reference defaults).
    "shakespeare_char": dict(data_path="data/tinyshakespeare.txt", out_dir="artifacts/models/shakespeare_char"),
    # TinyStories at character level; train on the train file, validate on the valid file.
    "tinystories_char": dict(
        data_path="data/tinystories_train.txt", val_path="data/tinystories_valid.txt",
        out_dir="artifacts/models/tinystories_char", prompt="Once upon a time"),
    # Laptop / 2 CPU cores: learns recognisable words in ~10 minutes.
    "cpu": dict(
        data_path="../shared/data/tinystories_train_head.txt", val_path="../shared/data/tinystories_valid_head.txt",
        block_size=128, n_layer=4, n_head=4, n_embd=128, batch_size=32, max_iters=2000,
        learning_rate=1e-3, min_lr=1e-4, warmup_iters=100, eval_interval=250, eval_iters=10,
        steps=64, gen_len=128, prompt="Once upon a time", out_dir="artifacts/models/cpu",
        checkpoint="artifacts/models/cpu/model.pt", viz_video="artifacts/media/cpu_trace.mp4"),
}


def _coerce(name, typ, value):
    """Turn a command-line string (or a config-file value) into the field's type."""
    if isinstance(value, str) and typ is not str:
        text = value.strip()
        try:
            if typ is bool:
                low = text.lower()
                if low in ("1", "true", "yes", "on"):
                    return True
                if low in ("0", "false", "no", "off"):
                    return False
                raise ValueError
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise UserError(f"--{name}={value!r} is not a valid {typ.__name__}: e.g. --{name}={_example(typ)}")
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if type(value) is not typ:
        raise UserError(f"{name} must be {typ.__name__}, got {type(value).__name__} {value!r}: e.g. {name}={_example(typ)}")
    return value


def _example(typ):
    return {bool: "true", int: "100", float: "0.5", str: "text"}[typ]


def _check_key(key, known):
    if key not in known:
        close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
        hint = f" (did you mean {', '.join(close)}?)" if close else " (see config.py for the keys)"
        raise UserError(f"unknown config key '{key}'{hint}")


def _read_config_file(path):
    if not os.path.isfile(path):
        raise UserError(f"config file {path} not found: give a path to a .py file of `key = value` lines, or a preset: {', '.join(PRESETS)}")
    ns = {}
    try:
        with open(path) as f:
            exec(compile(f.read(), path, "exec"), {}, ns)  # a config file is the user's own Python, as in nanoGPT
    except Exception as e:
        raise UserError(f"config file {path} failed to run: {type(e).__name__}: {e}")
    return {k: v for k, v in ns.items() if not k.startswith("_")}


def get_config(argv, base=None):
    """Resolve defaults <- presets/config files <- --key=value flags. Returns a Config."""
    types = {f.name: f.type if isinstance(f.type, type) else eval(f.type) for f in fields(Config)}
    cfg = base if base is not None else Config()
    overrides, i = {}, 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--"):
            key, eq, value = arg[2:].partition("=")
            key = key.replace("-", "_")  # --gen-len == --gen_len
            _check_key(key, types)
            if not eq:
                if types[key] is bool and (i + 1 == len(argv) or argv[i + 1].startswith("--")):
                    value = "true"  # bare --flag
                elif i + 1 < len(argv):
                    i, value = i + 1, argv[i + 1]
                else:
                    raise UserError(f"--{key} needs a value: e.g. --{key}={_example(types[key])}")
            overrides[key] = _coerce(key, types[key], value)
        elif arg.endswith(".py"):
            for k, v in _read_config_file(arg).items():
                _check_key(k, types)
                cfg = replace(cfg, **{k: _coerce(k, types[k], v)})
        elif arg in PRESETS:
            cfg = replace(cfg, **PRESETS[arg])
        else:
            close = difflib.get_close_matches(arg, list(PRESETS), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise UserError(f"'{arg}' is neither a preset ({', '.join(PRESETS)}){hint} nor a .py config file nor a --key=value flag")
        i += 1
    cfg = replace(cfg, **overrides)
    validate(cfg)
    return cfg


def validate(cfg):
    """Reject values that cannot work, before any work is done."""
    choices = dict(tokenizer=("char", "bpe"), time_cond=("learned", "none"), objective=("mdlm", "ar"),
                   schedule=("cosine", "linear"), loss_type=("elbo", "masked_ce", "all_ce"),
                   dtype=("auto", "float32", "bfloat16"))
    for key, allowed in choices.items():
        if getattr(cfg, key) not in allowed:
            raise UserError(f"{key}={getattr(cfg, key)!r} is not one of {', '.join(allowed)}")
    positive = ("block_size", "n_layer", "n_head", "n_embd", "diffusion_steps", "batch_size", "eval_interval",
                "eval_iters", "log_interval", "gen_len", "steps", "num_samples", "trace_every", "gif_frame_ms")
    for key in positive:
        if getattr(cfg, key) < 1:
            raise UserError(f"{key} must be >= 1, got {getattr(cfg, key)}")
    if cfg.max_iters < 0:
        raise UserError(f"max_iters must be >= 0, got {cfg.max_iters}")
    if cfg.n_embd % cfg.n_head or (cfg.n_embd // cfg.n_head) % 2:
        raise UserError(f"n_embd={cfg.n_embd} must split into n_head={cfg.n_head} heads of even size (RoPE)")
    if not 0 < cfg.val_fraction < 1:
        raise UserError(f"val_fraction must be in (0, 1), got {cfg.val_fraction}")
    if cfg.learning_rate <= 0 or cfg.min_lr < 0:
        raise UserError("learning_rate must be > 0 and min_lr >= 0")
    if cfg.temperature < 0:
        raise UserError(f"temperature must be >= 0 (0 = argmax), got {cfg.temperature}")
    if cfg.top_k < 0:
        raise UserError(f"top_k must be >= 1, or 0 to turn it off; got {cfg.top_k}")
    if not 0 < cfg.top_p <= 1:
        raise UserError(f"top_p must be in (0, 1], got {cfg.top_p}")
    if cfg.steps > cfg.diffusion_steps and cfg.objective == "mdlm":
        raise UserError(f"steps={cfg.steps} exceeds diffusion_steps={cfg.diffusion_steps}: use --steps={cfg.diffusion_steps} or fewer")


def config_to_dict(cfg):
    return asdict(cfg)


def config_from_dict(d):
    """Rebuild a Config from a checkpoint's dict, ignoring keys this version does not know."""
    known = {f.name for f in fields(Config)}
    return replace(Config(), **{k: v for k, v in d.items() if k in known})


def format_config(cfg):
    d = asdict(cfg)
    width = max(len(k) for k in d)
    return "\n".join(f"  {k:<{width}} = {v!r}" for k, v in d.items())
