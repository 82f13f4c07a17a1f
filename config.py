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
import inspect
import io
import os
import re
import shutil
import textwrap
import tokenize
from dataclasses import asdict, dataclass, field, fields, replace

from diffusion import LOSS_TYPES, OBJECTIVES, SCHEDULES, Schedule
from diffusion_bd3 import band_times
from model import TIME_CONDS
from sampler import ORDERS, REMASKS, TOKENS_PER_STEP
from utils.dist import DTYPES
from utils.errors import UserError
from utils.optim import OPTIMIZERS
from utils.tokenizer import TOKENIZERS


def trained(default):
    """A setting of the trained model (or of its data): sampling always takes it from the checkpoint."""
    return field(default=default, metadata={"trained": True})


def resumable(default):
    """A setting a resumed run may change; every other one comes from the checkpoint it resumes."""
    return field(default=default, metadata={"resumable": True})


@dataclass
class Config:
    # ---- data
    data_path: str = trained("data/tinyshakespeare.txt")  # text file; make one with scripts/data.py
    val_path: str = trained("")         # separate validation text; "" = last val_fraction of data_path
    val_fraction: float = 0.1           # nanoGPT's split: first 90% train, last 10% val
    tokenizer: str = trained("char")    # 'char' (vocab from the data + [MASK]) | 'bpe'
    tokenizer_path: str = "artifacts/tokenizer/tokenizer.json"  # bpe only (scripts/train_tokenizer.py)
    # ---- model
    block_size: int = trained(256)      # context length in tokens
    n_layer: int = trained(6)
    n_head: int = trained(6)
    n_embd: int = trained(384)          # head_dim = n_embd / n_head = 64
    time_cond: str = trained("learned")  # 'learned' Embedding(T+1, d) added to the input | 'adaln' (DiT adaLN-Zero) | 'none'
    # ---- objective
    objective: str = trained("mdlm")    # 'mdlm' masked diffusion | 'uniform' uniform-state diffusion (no [MASK];
                                        # uniform.py) | 'ar' same net, causal, next-token loss
                                        # | 'bd3' block diffusion (diffusion_bd3.py)
    bd3_block: int = trained(4)         # bd3: tokens per block L', divides block_size; 1 = AR, block_size = MDLM (BD3-LM)
    bd3_mask_min: float = 0.0           # bd3 training only: mask rates clipped to [min, max] (BD3-LM's variance fix, e.g.
    bd3_mask_max: float = 1.0           #   0.3, 0.8); validation always reports the full bound
    diffusion_steps: int = trained(100)  # T: discrete time steps of the forward process
    schedule: str = trained("cosine")   # survival alpha(t): 'cosine' cos(pi/2 t/T) | 'linear' 1 - t/T | 'cosine_offset' (s=0.008)
    loss_type: str = "elbo"             # 'elbo' weighted NELBO | 'masked_ce' | 'all_ce' (reference objectives)
    mask_span: int = 0                  # >1: training masks aligned spans of this many tokens whole (semi-AR-like); 0 = per token
    # ---- optimisation
    batch_size: int = 64                # sequences per step
    max_iters: int = resumable(5000)    # 0 = build everything, print config and parameter count, exit
    learning_rate: float = 3e-4         # peak AdamW LR
    min_lr: float = 3e-5                # cosine decay floor (LR / 10, as nanoGPT)
    warmup_iters: int = 100             # linear warm-up steps
    weight_decay: float = 0.1           # on 2-D weights only
    beta1: float = 0.9
    beta2: float = 0.99                 # 0.99: small batches (nanoGPT char recipe)
    grad_clip: float = 1.0              # 0 disables
    total_batch_size: int = 0           # tokens per optimizer step, all ranks; 0 = batch_size*block_size*world; more = accumulate
    optimizer: str = "adamw"            # 'adamw' | 'muon' (Muon on the layers' 2-D weights, AdamW on embeddings and head)
    muon_lr: float = 0.02               # peak Muon LR (same warm-up/cosine shape as learning_rate)
    muon_momentum: float = 0.95         # Muon's Nesterov momentum
    ema: float = 0.0                    # 0 = off; else the decay (e.g. 0.999) of a weight average used for eval and samples
    head_on_masked_only: bool = resumable(False)  # mdlm: output head only at masked positions (same loss; elbo/masked_ce)
    # ---- eval, logging, checkpoints
    eval_interval: int = resumable(250)  # steps between validation passes
    eval_iters: int = resumable(20)     # validation batches per pass (same batches every time)
    log_interval: int = resumable(10)   # steps between log lines
    out_dir: str = resumable("artifacts/models")  # model.pt (latest/final) and best.pt land here
    resume: bool = resumable(False)     # continue from out_dir/model.pt (step, optimizer, LR schedule)
    overwrite: bool = resumable(False)  # allow replacing checkpoints already in out_dir
    keep_last: int = resumable(2)       # checkpoints kept: the K newest as model_<iter>.pt (model.pt links the newest) + best.pt;
                                        # 1 = model.pt and best.pt only
    skip_nonfinite: int = resumable(0)  # steps with a NaN/inf loss or gradient skipped (no update) before training stops;
                                        # 0 = stop at the first (> 0 costs one host sync per step)
    # ---- sampling (inference.py, and the samples at the end of training)
    checkpoint: str = "artifacts/models/model.pt"
    prompt: str = ""                    # text the sample must start with
    gen_len: int = 256                  # tokens to generate after the prompt
    steps: int = 100                    # reverse steps (NFE); <= diffusion_steps. bd3: per block, at most its length
    temperature: float = 1.0            # 0 = argmax; sampled in float64
    top_k: int = 0                      # 0 = off
    top_p: float = 1.0                  # 1.0 = off
    num_samples: int = 1                # samples drawn in one batch
    viz_video: str = ""                 # MP4 path for the denoising trace (a GIF is written beside it)
    trace_every: int = 1                # record one frame every N steps
    gif_frame_ms: int = 180             # GIF/MP4 frame duration
    infill: str = ""                    # text with blanks to fill: [___] = one token per marker character, [___:N] = N tokens
    prefix_file: str = ""               # the sample starts with this file's text (instead of --prompt)
    suffix_file: str = ""               # the sample ends with this file's text; gen_len tokens go between
    order: str = "confidence"           # reveal first: 'confidence' | 'margin' (top1 - top2) | 'entropy' (low first) | 'random'
    tokens_per_step: str = "schedule"   # reveals per step: 'schedule' (1 - alpha(t)) | 'linear' (LLaDA) | 'cosine' (MaskGIT)
    remask: str = "refine"              # 'refine' (reference) | 'none' (LLaDA: committed tokens final) | 'remdm' (ReMDM)
    remask_eta: float = 0.02            # remask='remdm': probability a committed token is re-masked each step
    threshold: float = 0.0              # Fast-dLLM: commit every position with confidence > threshold, >= 1 per step; 0 = off
    semi_ar_length: int = 0             # semi-AR: decode left to right, this many tokens at a time (0 = all at once);
                                        # lets prompt + gen_len exceed block_size (a sliding window keeps the latest context)
    live: bool = False                  # redraw the canvas in the terminal at every step (plain text when not a terminal)
    prompts_file: str = ""              # sample once per line of this file (each line a prompt; blank lines skipped)
    interactive: bool = False           # read prompts from stdin in a loop until EOF (Ctrl-D)
    # ---- system
    device: str = resumable("auto")     # 'auto' (cuda -> mps -> cpu) | 'cpu' | 'cuda' | 'cuda:1' | 'mps'
    dtype: str = "auto"                 # 'auto' (bf16 autocast on CUDA, fp32 elsewhere) | 'float32' | 'bfloat16'
    compile: bool = resumable(False)    # torch.compile the training model
    seed: int = 1337
    wandb_log: bool = resumable(False)  # also log to Weights & Biases (pip install wandb); metrics.jsonl is always written
    wandb_project: str = resumable("micro-dllm")


# The laptop budget shared by the CPU presets: 4/4/128, ctx 128, 2,000 steps x 32 sequences (8.19M tokens).
_CPU = dict(block_size=128, n_layer=4, n_head=4, n_embd=128, batch_size=32, max_iters=2000,
            learning_rate=1e-3, min_lr=1e-4, warmup_iters=100, eval_interval=250, eval_iters=10,
            steps=64, gen_len=96)

# The masked-diffusion recipe that won the baby speedrun (README records, learning.md): no time input and
# CE on every position, visible ones included (-0.23 nats/char against learned + ELBO at the baby budget).
# A preset applies it only when objective=mdlm and the command line does not set the key: AR ignores
# both, uniform noise needs its time input and trains its own NELBO, bd3 trains its bound.
_MDLM_RECIPE = dict(time_cond="none", loss_type="all_ce")

# Tiny Shakespeare at the laptop budget: the main job (cpu) and the results table's CPU row (shakespeare_cpu).
_SHAKESPEARE_CPU = dict(data_path="data/tinyshakespeare.txt", **_CPU, prompt="ROMEO:")

# Named presets: a dict of overrides on top of the defaults above. The comment above each one is its
# line in `python train.py --help`. A preset whose data file is missing names the command that makes it.
PRESETS = {
    # nanoGPT's "baby" CPU budget (4/4/128, ctx 64, 12 x 2,000 steps = 1,536,000 tokens, <= 0.85M params) on
    # Tiny Shakespeare with nanoGPT's split: the speedrun's yardstick (README records). ~2.5 min on 2 cores.
    "baby": dict(
        data_path="data/tinyshakespeare.txt", block_size=64, n_layer=4, n_head=4, n_embd=128, batch_size=12,
        max_iters=2000, learning_rate=1e-3, min_lr=1e-4, warmup_iters=100, eval_interval=500, eval_iters=10,
        log_interval=100, steps=48, gen_len=48, prompt="ROMEO:", out_dir="artifacts/models/baby",
        checkpoint="artifacts/models/baby/model.pt", viz_video="artifacts/media/baby_trace.mp4"),
    # nanoGPT's train_shakespeare_char recipe, diffusion flavour (the reference defaults; a GPU job).
    "shakespeare_char": dict(data_path="data/tinyshakespeare.txt", out_dir="artifacts/models/shakespeare_char"),
    # TinyStories at character level; train on the train file, validate on the valid file.
    "tinystories_char": dict(
        data_path="data/tinystories_train.txt", val_path="data/tinystories_valid.txt",
        out_dir="artifacts/models/tinystories_char", prompt="Once upon a time"),
    # The reference BPE recipe: 10k TinyStories in data/stories.txt (scripts/data.py), a 2,048-token
    # byte-level BPE (scripts/train_tokenizer.py); the default 6/6/384 model is then 12,228,480 parameters.
    # Validates on the last 10% of the stories; --gen-len counts BPE tokens.
    "tinystories_bpe": dict(
        tokenizer="bpe", data_path="data/stories.txt", tokenizer_path="artifacts/tokenizer/tokenizer.json",
        out_dir="artifacts/models/tinystories_bpe", checkpoint="artifacts/models/tinystories_bpe/model.pt",
        prompt="Once upon a time"),
    # The main job, on a laptop or 2 CPU cores: Tiny Shakespeare (ships in data/), 4/4/128, 2,000 steps, ~15 min; samples and MP4 + GIF.
    "cpu": dict(
        **_SHAKESPEARE_CPU, out_dir="artifacts/models/cpu", checkpoint="artifacts/models/cpu/model.pt",
        viz_video="artifacts/media/cpu_trace.mp4"),
    # The same run as cpu under its results-table name (README), in its own out_dir.
    "shakespeare_cpu": dict(
        **_SHAKESPEARE_CPU, out_dir="artifacts/models/shakespeare_cpu",
        checkpoint="artifacts/models/shakespeare_cpu/model.pt", viz_video="artifacts/media/shakespeare_cpu_trace.mp4"),
    # The laptop budget on char-level TinyStories: data/stories.txt from scripts/data.py (see data/README.md).
    "tinystories_cpu": dict(
        data_path="data/stories.txt", **_CPU, prompt="Once upon a time", out_dir="artifacts/models/tinystories_cpu",
        checkpoint="artifacts/models/tinystories_cpu/model.pt", viz_video="artifacts/media/tinystories_cpu_trace.mp4"),
    # The "speed run a 200M+ model" goal: 16 x 1024, ctx 1024, BPE on all of TinyStories (~206M parameters at a 2,048 vocab).
    # 0.5M tokens per step: 16 micro-batches of 32 x 1024 on one 80 GB GPU (estimated ~30 GiB), fewer per rank
    # under torchrun. train.py prints its memory and tokens/s estimates at startup.
    "gpt200m": dict(
        tokenizer="bpe", data_path="data/tinystories_train.txt", val_path="data/tinystories_valid.txt",
        block_size=1024, n_layer=16, n_head=16, n_embd=1024, batch_size=32, total_batch_size=524288,
        max_iters=2000, learning_rate=3e-4, min_lr=3e-5, warmup_iters=200, beta2=0.95, eval_interval=250,
        eval_iters=20, compile=True, prompt="Once upon a time", gen_len=256, out_dir="artifacts/models/gpt200m",
        checkpoint="artifacts/models/gpt200m/model.pt"),
}


# renamed keys: the old names still work on the command line, in config files and in checkpoints' configs
ALIASES = {"block_length": "semi_ar_length",  # "block" is the context (block_size) and BD3-LM's --bd3_block
           "mask_blocks": "mask_span"}


MDLM_RECIPE_PRESETS = ("baby", "cpu", "shakespeare_cpu", "tinystories_cpu")  # the laptop-sized presets


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
        hint = f" (did you mean {', '.join(close)}?)" if close else " (--help lists the keys)"
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
    overrides, i, recipe = {}, 0, {}
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--"):
            key, eq, value = arg[2:].partition("=")
            key = key.replace("-", "_")  # --gen-len == --gen_len
            key = ALIASES.get(key, key)  # the old name of a renamed key
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
            for k, v in renamed_keys(_read_config_file(arg)).items():
                _check_key(k, types)
                recipe = {r: rv for r, rv in recipe.items() if r != k}  # a later file wins over a preset's recipe
                cfg = replace(cfg, **{k: _coerce(k, types[k], v)})
        elif arg in PRESETS:
            cfg = replace(cfg, **PRESETS[arg])
            recipe = _MDLM_RECIPE if arg in MDLM_RECIPE_PRESETS else {}
        else:
            close = difflib.get_close_matches(arg, list(PRESETS), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            data = f": a text to train on goes in --data_path={arg}" if os.path.isfile(arg) else ""
            raise UserError(f"'{arg}' is neither a preset ({', '.join(PRESETS)}){hint} nor a .py config file nor a "
                            f"--key=value flag{data}")
        i += 1
    cfg = replace(cfg, **overrides)
    if cfg.objective == "mdlm":
        cfg = replace(cfg, **{k: v for k, v in recipe.items() if k not in overrides})
    if overrides.get("infill") or overrides.get("prefix_file"):  # a text given here replaces a preset's/checkpoint's prompt
        cfg = replace(cfg, prompt=overrides.get("prompt", ""))
    validate(cfg)
    return cfg


# every choice list, defined once beside the code that implements it
CHOICES = dict(tokenizer=TOKENIZERS, time_cond=TIME_CONDS, objective=OBJECTIVES, schedule=SCHEDULES, loss_type=LOSS_TYPES,
               dtype=DTYPES, optimizer=OPTIMIZERS, order=ORDERS, tokens_per_step=TOKENS_PER_STEP, remask=REMASKS)
TRAINED_KEYS = tuple(f.name for f in fields(Config) if f.metadata.get("trained"))
RESUMABLE_KEYS = tuple(f.name for f in fields(Config) if f.metadata.get("resumable"))


def validate(cfg):
    """Reject values that cannot work, before any work is done."""
    for key, allowed in CHOICES.items():
        if getattr(cfg, key) not in allowed:
            raise UserError(f"{key}={getattr(cfg, key)!r} is not one of {', '.join(allowed)}")
    positive = ("block_size", "n_layer", "n_head", "n_embd", "diffusion_steps", "batch_size", "eval_interval",
                "eval_iters", "log_interval", "gen_len", "steps", "num_samples", "trace_every", "gif_frame_ms")
    for key in positive:
        if getattr(cfg, key) < 1:
            raise UserError(f"{key} must be >= 1, got {getattr(cfg, key)}")
    if cfg.max_iters < 0:
        raise UserError(f"max_iters must be >= 0, got {cfg.max_iters}")
    if cfg.keep_last < 1 or cfg.skip_nonfinite < 0:
        raise UserError(f"keep_last must be >= 1 and skip_nonfinite >= 0; got {cfg.keep_last}, {cfg.skip_nonfinite}")
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
    if cfg.objective == "uniform":
        check_uniform(cfg)
    if cfg.steps > cfg.diffusion_steps and cfg.objective == "mdlm" and cfg.tokens_per_step == "schedule" and not cfg.threshold:
        raise UserError(f"steps={cfg.steps} exceeds diffusion_steps={cfg.diffusion_steps}: use --steps={cfg.diffusion_steps} "
                        f"or fewer, or --tokens_per_step=linear (its step count is free)")
    if cfg.objective == "bd3":
        check_bd3(cfg)
    if not 0 <= cfg.threshold <= 1:
        raise UserError(f"threshold must be in (0, 1] (a confidence), or 0 to turn it off; got {cfg.threshold}")
    if cfg.threshold and cfg.order == "random":
        raise UserError("threshold decoding commits by score: use --order confidence, margin or entropy, not random")
    if cfg.threshold and cfg.remask == "remdm":
        raise UserError("threshold decoding commits tokens for good: use --remask none (or refine), not remdm")
    if not 0 <= cfg.remask_eta <= 1:
        raise UserError(f"remask_eta must be a probability in [0, 1], got {cfg.remask_eta}")
    if cfg.semi_ar_length < 0 or not 0 <= cfg.mask_span <= cfg.block_size:
        raise UserError(f"semi_ar_length must be >= 0 and mask_span in [0, block_size={cfg.block_size}]; "
                        f"got {cfg.semi_ar_length}, {cfg.mask_span}")
    if cfg.infill and (cfg.prompt or cfg.prefix_file or cfg.suffix_file):
        raise UserError("--infill holds the whole text (given parts and [___] blanks): drop --prompt/--prefix_file/--suffix_file")
    if cfg.prompt and cfg.prefix_file:
        raise UserError("give the start of the sample once: --prompt TEXT or --prefix_file FILE, not both")
    micro = cfg.batch_size * cfg.block_size  # tokens in one micro-batch of one rank
    if cfg.total_batch_size < 0 or cfg.total_batch_size % micro:
        up = max(1, -(-cfg.total_batch_size // micro)) * micro
        raise UserError(f"total_batch_size={cfg.total_batch_size} is not a multiple of batch_size*block_size = {micro} "
                        f"tokens: use --total_batch_size={up} (or 0 for no accumulation)")
    if cfg.muon_lr <= 0 or not 0 <= cfg.muon_momentum < 1:
        raise UserError(f"muon_lr must be > 0 and muon_momentum in [0, 1), got {cfg.muon_lr}, {cfg.muon_momentum}")
    if not 0 <= cfg.ema < 1:
        raise UserError(f"ema must be 0 (off) or a decay in (0, 1) such as 0.999, got {cfg.ema}")


def check_uniform(cfg):
    """Uniform-state diffusion trains its NELBO on every position and samples ancestrally on the time grid:
    the masked-diffusion options that would silently do nothing (or something else) are refused."""
    if cfg.loss_type != "elbo" or cfg.mask_span or cfg.head_on_masked_only:
        raise UserError("objective=uniform trains its NELBO at every position: use loss_type=elbo, mask_span=0 "
                        "and head_on_masked_only=false")
    if cfg.threshold or cfg.semi_ar_length or cfg.remask == "remdm":
        raise UserError("objective=uniform samples ancestrally (every position redrawn each step): threshold, "
                        "semi_ar_length and remask=remdm are masked-diffusion samplers; leave them off")
    if cfg.steps > cfg.diffusion_steps:
        raise UserError(f"steps={cfg.steps} exceeds diffusion_steps={cfg.diffusion_steps}: use --steps={cfg.diffusion_steps} or fewer")


def check_bd3(cfg):
    """Block diffusion: whole blocks, its own bound and its own blocks at sampling; a non-empty training band."""
    if not 1 <= cfg.bd3_block <= cfg.block_size or cfg.block_size % cfg.bd3_block:
        raise UserError(f"bd3_block={cfg.bd3_block} must divide block_size={cfg.block_size}: e.g. --bd3_block=4")
    if cfg.loss_type != "elbo" or cfg.mask_span:
        raise UserError("objective=bd3 trains the block-diffusion bound: drop --loss_type and --mask_span")
    if cfg.semi_ar_length:
        raise UserError("objective=bd3 decodes in its own blocks of bd3_block tokens: drop --semi_ar_length")
    if not 0 <= cfg.bd3_mask_min < cfg.bd3_mask_max <= 1:
        raise UserError(f"need 0 <= bd3_mask_min < bd3_mask_max <= 1, got {cfg.bd3_mask_min}, {cfg.bd3_mask_max}")
    try:
        band_times(Schedule(cfg.diffusion_steps, cfg.schedule), cfg.bd3_mask_min, cfg.bd3_mask_max)
    except ValueError as e:
        raise UserError(f"bd3_mask_min={cfg.bd3_mask_min}, bd3_mask_max={cfg.bd3_mask_max}: {e}")
    if min(cfg.steps, cfg.bd3_block) > cfg.diffusion_steps and cfg.tokens_per_step == "schedule" and not cfg.threshold:
        raise UserError(f"steps per block min(steps, bd3_block) exceeds diffusion_steps={cfg.diffusion_steps}: "
                        f"use --steps={cfg.diffusion_steps} or --tokens_per_step=linear")


def config_to_dict(cfg):
    return asdict(cfg)


def renamed_keys(d):
    """d with the old names of renamed keys replaced by the new ones (a config file's, a checkpoint's)."""
    return {ALIASES.get(k, k): v for k, v in d.items()}


def config_from_dict(d):
    """Rebuild a Config from a checkpoint's dict, ignoring keys this version does not know."""
    known = {f.name for f in fields(Config)}
    return replace(Config(), **{k: v for k, v in renamed_keys(d).items() if k in known})


def format_config(cfg):
    d = asdict(cfg)
    width = max(len(k) for k in d)
    return "\n".join(f"  {k:<{width}} = {v!r}" for k, v in d.items())


# ----------------------------------------------------------------------------- --help, read off this file
def wants_help(argv):
    return any(a in ("-h", "--help") for a in argv)


def _comments(source):
    """{line number: comment text} of a source text (tokenize: a '#' inside a string is not a comment)."""
    toks = tokenize.generate_tokens(io.StringIO(source).readline)
    return {t.start[0]: t.string.lstrip("#").strip() for t in toks if t.type == tokenize.COMMENT}


def _key_docs():
    """[(section, [(key, comment)])] from the Config class: its '# ---- section' lines and each field's
    trailing comment (plus comment-only lines under it): the dataclass is the one source of the help."""
    src = inspect.getsource(Config)
    comments, lines = _comments(src), src.splitlines()
    sections, last = [("general", [])], None
    for n, line in enumerate(lines, 1):
        m = re.match(r"\s+(\w+)\s*:", line)
        text = comments.get(n, "")
        if m and m[1] in {f.name for f in fields(Config)}:
            last = [m[1], text]
            sections[-1][1].append(last)
        elif text.startswith("----"):
            sections.append((text.strip("- "), []))
        elif text and last is not None and line.strip().startswith("#"):
            last[1] += " " + text
    return [(name, keys) for name, keys in sections if keys]


def _preset_docs():
    """{preset: the comment lines above it in PRESETS}."""
    src = inspect.getsource(inspect.getmodule(Config))
    comments, docs, above = _comments(src), {}, []
    start = src[:src.index("PRESETS = {")].count("\n") + 1
    for n, line in enumerate(src.splitlines()[start:], start + 1):
        m = re.match(r'\s+"(\w+)":', line)
        if m and m[1] in PRESETS:
            docs[m[1]], above = " ".join(above), []
        elif line.strip().startswith("#"):
            above.append(comments.get(n, ""))
    return docs


def help_text(prog, usage, from_checkpoint=False):
    """The presets, then every key by section: --key=TYPE, its comment, its default. from_checkpoint: the
    model's keys (trained=...) are marked, since a checkpoint fixes them."""
    width = min(shutil.get_terminal_size((100, 24)).columns, 120)
    wrap = lambda text, ind: textwrap.fill(text, width, initial_indent=ind, subsequent_indent=" " * len(ind))  # noqa: E731
    out = [f"usage: python {prog} {usage}", "",
           wrap("Layers, later wins: defaults <- presets and .py config files (in order) <- --key=value (or --key "
                "value; dashes work as underscores; a bare --flag sets a bool). Unknown keys and wrong types are "
                "refused.", ""), "", "presets:"]
    docs = _preset_docs()
    for name in PRESETS:
        out.append(wrap(docs.get(name, ""), f"  {name:<18}"))
    types = {f.name: f.type if isinstance(f.type, type) else eval(f.type) for f in fields(Config)}
    meta = {f.name: f.metadata for f in fields(Config)}
    defaults = asdict(Config())
    col = max(len(f"--{k}={t.__name__.upper()}") for k, t in types.items()) + 4
    for section, keys in _key_docs():
        out += ["", f"{section}:"]
        for key, text in keys:
            tag = " [from the checkpoint]" if from_checkpoint and meta[key].get("trained") else ""
            listed = key in CHOICES and all(f"'{c}'" in text for c in CHOICES[key])
            choice = f" (one of {', '.join(CHOICES[key])})" if key in CHOICES and not listed else ""
            head = f"  --{key}={types[key].__name__.upper()}"
            out.append(wrap(f"{text}{choice}{'; ' if text or choice else ''}default {defaults[key]!r}{tag}",
                            f"{head:<{col}}"))
    return "\n".join(out)
