"""The command line and config files -> a checked Config: parsing, validation and --help.

    cfg = configurator.get_config(["cpu", "--max_iters=200"])
    python train.py --help          # the presets, then every key by section
"""
import ast
import difflib
import math
import os
import re
from dataclasses import asdict, fields, replace

from config import (BOOLEANS, CHOICES, INT64_MAX, LIMITS, NEEDS, PRESETS, RANGES, SAMPLING_ONLY, TRAINED,
                    UNREAD_WITH, UNSCORED_ORDERS, Config)
from model import DECODERS, ModelArgs
from objectives import OBJECTIVES
from utils.checkpoint import REMOVED, RENAMED
from utils.errors import UserError, shown
from utils.fileio import read_text

TYPES = {f.name: f.type for f in fields(Config)}  # key -> its type
EXAMPLES = {bool: "true", int: "100", float: "0.5", str: "text"}  # a valid value of each type, for the errors
TRISTATE = ("auto", "true", "false")  # a key with these values takes a bare --flag (true) and a bool, as a bool does
BARE = dict(html="auto")  # a path key whose bare --flag names its file itself


def example(name, typ):
    """A valid value of key `name` (of type typ) for the errors: its type's, within its LIMITS."""
    if typ is int and name in LIMITS:
        return str(min(int(EXAMPLES[int]), LIMITS[name][0]))
    return EXAMPLES[typ]


def coerce(name, typ, value, text=False):
    """A config file's or checkpoint's value as the field's type; text=True: a command-line string,
    read first (a file's value is a literal already: '4' is a string there). A tristate takes a
    bool as its word (an older checkpoint's compile=True is 'true')."""
    if CHOICES.get(name) == TRISTATE and isinstance(value, bool):
        return str(value).lower()
    if text and typ is not str:
        text = value.strip()
        if typ in (int, float) and len(text) > 100 and text.lstrip("+-").isdigit():  # past 4,300 digits: no int
            most = "torch's integers are 64-bit" if typ is int else "a float holds at most ~1.8e308"
            raise UserError(f"--{name} is a {len(text):,}-digit number: out of range ({most})")
        try:
            value = BOOLEANS[text.lower()] if typ is bool else ast.literal_eval(text)
        except (KeyError, ValueError, SyntaxError):
            raise UserError(f"--{name}={value!r} is not a valid {typ.__name__}: e.g. --{name}={example(name, typ)}")
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if type(value) is not typ:
        raise UserError(f"{name} must be {typ.__name__}, got {type(value).__name__} {shown(value)}: "
                        f"e.g. {name}={example(name, typ)}")
    return value


def known_key(key):
    """key under its current name (RENAMED maps old names); an unknown or removed key is refused."""
    key = RENAMED.get(key, key)
    if key in REMOVED:
        raise UserError(f"--{key} was removed: no preset used it and it measured level or worse (dev/LOG.md "
                        f"names its verdict; git checkout {REMOVED[key][0]} has it); drop it")
    if key not in TYPES:
        close = difflib.get_close_matches(key, TYPES, n=3, cutoff=0.6)
        hint = f" (did you mean {', '.join(close)}?)" if close else " (--help lists the keys)"
        raise UserError(f"unknown config key '{key}'{hint}")
    return key


def _read_config_file(path):
    """A config file's {key: value}: data, never run; each statement is `key = value`, a literal.
    Read as a text file someone wrote: a UTF-8 BOM (Windows editors write one) and CRLF lines are
    fine; a key set twice is refused naming both lines (which one meant it?)."""
    text = read_text(path, "config file", f"give a .py file of `key = value` lines, or a preset: {', '.join(PRESETS)}")
    text = text.removeprefix("\ufeff")
    out, lines = {}, {}
    line = 1
    try:
        for node in ast.parse(text, path).body:
            line = node.lineno
            if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
                raise ValueError(node)
            key = known_key(node.targets[0].id)
            if key in lines:
                raise UserError(f"config file {path} sets {key} twice, on lines {lines[key]} and {line}: keep one")
            out[key] = _literal(node.value, path, line)
            lines[key] = line
    except (SyntaxError, ValueError) as e:  # a SyntaxError knows its own line
        where = f"config file {path}, line {getattr(e, 'lineno', None) or line}"
        if "Exceeds the limit" in str(e):  # an int literal past 4,300 digits, which Python does not read
            raise UserError(f"{where}: a number past 4,300 digits is out of range (torch's integers are 64-bit)")
        raise UserError(f"{where}: not `key = value` with a literal value (a number, a 'string', True or False): a "
                        f"config file is data, nothing in it runs") from None
    except (RecursionError, MemoryError):  # nested past what Python's parser holds
        raise UserError(f"config file {path}: a value nested too deep to read: a key's value is one number, "
                        f"'string', True or False") from None
    return out


def _literal(node, path, line):
    """A config file's value: the literal at node, or one line saying why it cannot be one."""
    try:
        return ast.literal_eval(node)
    except (TypeError, RecursionError, MemoryError) as e:  # {[1]: 2} (unhashable), or nested too deep
        why = "nested too deep" if not isinstance(e, TypeError) else str(e)
        raise UserError(f"config file {path}, line {line}: a literal that cannot become a value ({why}): a key's "
                        f"value is one number, 'string', True or False") from None


def get_config(argv):
    """defaults <- presets and config files <- flags: a checked Config."""
    return parse(argv)[0]


def parse(argv, base=None, check=True):
    """(the Config, the keys the user set by flag or config file); check=False skips validate."""
    cfg = base if base is not None else Config()
    overrides, given, args = {}, set(), list(argv)
    while args:
        arg = args.pop(0)
        if arg.startswith("--"):
            key, eq, value = arg[2:].partition("=")
            key = known_key(key.replace("-", "_"))  # --gen-len == --gen_len
            if not eq:
                # a bare --key sets a bool, a tristate (then to 'true'), or a BARE path key
                bare = TYPES[key] is bool or CHOICES.get(key) == TRISTATE or key in BARE
                if bare and (not args or args[0].startswith("--")):
                    value = BARE.get(key, "true")  # bare --flag
                elif args:
                    value = args.pop(0)
                else:
                    raise UserError(f"--{key} needs a value: e.g. --{key}={example(key, TYPES[key])}")
            overrides[key] = coerce(key, TYPES[key], value, text=True)
        elif arg.endswith(".py"):
            for k, v in _read_config_file(arg).items():
                cfg = replace(cfg, **{k: coerce(k, TYPES[k], v)})
                given.add(k)
        elif arg in PRESETS:
            cfg = replace(cfg, **PRESETS[arg])
        else:
            close = difflib.get_close_matches(arg, list(PRESETS), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            data = f": a text to train on goes in --data_path={arg}" if os.path.isfile(arg) else ""
            raise UserError(f"'{arg}' is neither a preset ({', '.join(PRESETS)}){hint} nor a .py config file nor a "
                            f"--KEY=VALUE flag{data}")
    cfg = replace(cfg, **overrides)
    given |= set(overrides)
    # a text given here replaces a preset's (or a checkpoint's) prompt
    if overrides.get("infill") or overrides.get("prefix_file"):
        cfg = replace(cfg, prompt=overrides.get("prompt", ""))
    if check:
        validate(cfg, given)
    return effective(cfg, given), given


def effective(cfg, given=()):
    """cfg as its objective runs it: IGNORES at their defaults, MODEL's keys at its values, so
    another objective's preset values reach no log or checkpoint. given: the keys the user set."""
    obj, keys = OBJECTIVES[cfg.objective], {f.name for f in fields(Config)}
    unread = {k: getattr(Config, k) for k in obj.IGNORES}
    fixed = {k: v for k, v in obj.MODEL.items() if k in keys}  # MODEL also names ModelArgs' own fields (causal)
    cooled = {}
    fall_unread = "temperature_end_share" in {*obj.IGNORES, *obj.unread(cfg)}
    if fall_unread and cfg.temperature_end_share != 1.0 and not {"temperature", "temperature_end_share"} & set(given):
        # a preset's temperature falls from a hot start: where the fall is unread, so is its start
        cooled = dict(temperature=Config.temperature, temperature_end_share=1.0)
    return replace(cfg, **{**unread, **fixed, **cooled})  # a key unread and fixed (bd3's time_cond) is fixed


def model_args(cfg, vocab_size):
    """The network a config trains: its dimensions, and what its objective fixes."""
    return ModelArgs.from_config(cfg, vocab_size, **OBJECTIVES[cfg.objective].MODEL)


def refuse_changes(cfg, given, saved, what, fix, allowed=()):
    """Refuses, naming both values, a given key set other than `saved` (the checkpoint's config)."""
    bad = [k for k in sorted(given) if k in saved and k not in allowed and getattr(cfg, k) != saved[k]]
    if bad:
        pairs = ", ".join(f"{k}={getattr(cfg, k)!r} (the checkpoint's: {saved[k]!r})" for k in bad)
        raise UserError(f"{what} fixes {', '.join(bad)}: given {pairs}; {fix}")


# ---------------------------------------------------------------------- validation
# The least temperature above 0: at 1e-6 a draw is already the argmax; a subnormal T overflows.
MIN_TEMPERATURE = 1e-6


def validate(cfg, given=(), training=True):
    """Refuse values that cannot work, before any work, in one pass over config.py's tables: each
    key's values alone (check_values), the keys the objective never reads (its IGNORES) and the
    keys each needs (NEEDS); then the rules that tie keys together. The first problem is the
    user's one line. training=False: a sampler's config (inference.py), whose optimiser settings
    no one reads (its checkpoint's); training=True refuses the keys only inference.py reads."""
    check_values(cfg)
    obj = OBJECTIVES[cfg.objective]
    unread = [k for k in obj.IGNORES if k in given]
    if unread:
        raise UserError(f"objective={cfg.objective} does not read --{unread[0]}: {obj.IGNORES[unread[0]]}; drop it")
    if "replay_steps" in given and not obj.decodes(cfg, cfg.num_samples):
        raise UserError(f"--replay_steps paces KV-cached decoding, and this sampler runs none ({DECODERS}): drop it")
    lacking = [idle(cfg, k) for k in sorted(given)]  # the first in name order is named
    if any(lacking):
        raise UserError(next(line for line in lacking if line))
    obj.check(cfg, given, training)
    check_together(cfg, given, training)
    training_only = [k for k in SAMPLING_ONLY if k in given] if training else []
    if training_only:  # train.py: a key only inference.py reads would act on nothing
        raise UserError(f"--{training_only[0]} is inference.py's: train.py's end-of-run samples continue --prompt; "
                        f"drop it, and sample the trained model with python inference.py --{training_only[0]} ...")


def check_values(cfg):
    """Each key's value alone, by the tables: its choices (CHOICES), a finite float, an int within
    its LIMITS, a number within its RANGES; a device this code can use, no empty path, a trace's
    path of its kind (inference.py asks these first, before reading the checkpoint); and heads of
    even size (a checkpoint's config too)."""
    for key, allowed in CHOICES.items():
        if getattr(cfg, key) not in allowed:
            raise UserError(f"{key}={getattr(cfg, key)!r} is not one of {', '.join(allowed)}")
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", cfg.device):
        raise UserError(f"--device={cfg.device} is not a device: use auto, cpu, cuda, cuda:N or mps")
    for key in ("data_path", "out_dir", "tokenizer_path", "checkpoint"):
        if not getattr(cfg, key):
            raise UserError(f"--{key} is empty: give a path, e.g. --{key}={getattr(Config, key)}")
    if cfg.viz_video not in ("auto", "off") and not cfg.viz_video.lower().endswith(".mp4"):
        raise UserError(f"--viz-video {cfg.viz_video!r} is a path ending in .mp4 (a GIF is written beside it), 'auto' "
                        f"(a new file under artifacts/media/) or 'off'")
    if cfg.html not in ("", "auto") and not cfg.html.lower().endswith((".html", ".htm")):
        raise UserError(f"--html {cfg.html!r} is a path ending in .html (one page a browser opens), or a bare --html "
                        f"(a new page under artifacts/media/)")
    for key, typ in TYPES.items():
        value = getattr(cfg, key)
        if typ is float and not math.isfinite(value):
            raise UserError(f"{key} must be a finite number, got {value}")
        # a seed is >= 0 (RANGES): SeedSequence takes no negative one; seeds are added below 2^63
        top, why = LIMITS.get(key, (INT64_MAX, "torch's integers are 64-bit"))
        if typ is int and not -INT64_MAX - 1 <= value <= top:
            raise UserError(f"{key}={shown(value)} is out of range (at most {top:,}: {why})")
    for key, allowed in RANGES.items():
        interval, line = allowed if isinstance(allowed, tuple) else (allowed, "{key} must be >= {low}, got {value}")
        # the interval as RANGES writes it: '[0, 1)', '(0, inf)'
        value = getattr(cfg, key)
        low, high = (float(end) for end in interval[1:-1].split(","))
        above = value >= low if interval[0] == "[" else value > low
        below = value <= high if interval[-1] == "]" else value < high
        if not (above and below):
            raise UserError(line.format(key=key, value=value, low=interval[1:].split(",")[0], **vars(cfg)))
    if cfg.n_embd % cfg.n_head or (cfg.n_embd // cfg.n_head) % 2:
        raise UserError(f"n_embd={cfg.n_embd} must split into n_head={cfg.n_head} heads of even size (RoPE)")


def partners(key):
    """[(other key, the values key acts with)] of NEEDS[key]: one pair, or several (any one)."""
    need = NEEDS[key]
    return need if isinstance(need[0], tuple) else (need,)


def idle(cfg, key):
    """Why key acts on nothing in cfg, as the user's line naming what would make it act; "" when
    it acts. It acts by config.NEEDS (one of its partners at a value it acts with; None: any but
    off, which is False, 0, '' or 'off') with no switch on that leaves it unread (UNREAD_WITH)."""
    switch = next((switch for switch, keys in UNREAD_WITH.items() if key in keys and getattr(cfg, switch)), None)
    if switch:
        return f"--{key} does not act with --{switch}, which decides it: drop one of the two"
    if key not in NEEDS:
        return ""
    pairs = partners(key)
    on = [getattr(cfg, other) not in (False, "", "off") if values is None else getattr(cfg, other) in values
          for other, values in pairs]
    if any(on):
        return ""
    if pairs[0][1] == (False,):  # a switch that must be off: nothing to give
        return f"--{key} acts only without --{pairs[0][0]}: drop one of the two"
    want = " or ".join(f"--{other}" if values is None else " or ".join(f"--{other}={v!r}" for v in values)
                       for other, values in pairs)
    here = ", ".join(f"{other}={getattr(cfg, other)!r}" for other, _ in pairs)
    return f"--{key} acts only with {want} (here {here}): give that too, or drop --{key}"


def check_together(cfg, given, training):
    """The rules between keys, which no table of one key's values can say."""
    if 0 < cfg.temperature < MIN_TEMPERATURE:
        raise UserError(f"temperature={cfg.temperature} is below {MIN_TEMPERATURE:g}, where a draw is already the "
                        f"argmax (a tiny one overflows the logits): give 0 for the argmax, or {MIN_TEMPERATURE:g}+")
    if cfg.threshold and cfg.order in UNSCORED_ORDERS:
        raise UserError(f"threshold decoding commits by the model's score: use --order confidence, margin or entropy, "
                        f"not {cfg.order}")
    if cfg.threshold and cfg.remask == "remdm":
        raise UserError("threshold decoding commits tokens for good: use --remask none (or refine), not remdm")
    if cfg.entropy_bound and cfg.threshold:  # (diffusion.entropy_bound_stay)
        raise UserError("--entropy_bound and --threshold each decide how many tokens a pass reveals: give one of them")
    if cfg.entropy_bound and cfg.order in UNSCORED_ORDERS:
        raise UserError(f"--entropy_bound reveals in the order of a model score: use --order entropy (or confidence, "
                        f"margin), not {cfg.order}; or --entropy_bound 0 (off)")
    if cfg.entropy_bound and (cfg.remask == "remdm" or (cfg.remask == "refine" and "remask" in given)):
        raise UserError(f"--entropy_bound commits tokens for good: use --remask none, not {cfg.remask}")
    if not math.isfinite(cfg.temperature * cfg.temperature_end_share):  # T s must not overflow
        raise UserError(RANGES["temperature_end_share"][1].format(value=cfg.temperature_end_share))
    if cfg.infill and (cfg.prompt or cfg.prefix_file or cfg.suffix_file):
        raise UserError("--infill holds the whole text (given parts and [___] blanks): "
                        "drop --prompt/--prefix_file/--suffix_file")
    if cfg.prompt and cfg.prefix_file:
        raise UserError("give the start of the sample once: --prompt TEXT or --prefix_file FILE, not both")
    if not training:  # the optimiser's rules: its settings are the checkpoint's
        return
    micro = cfg.batch_size * cfg.block_size  # tokens in one micro-batch of one rank
    if cfg.total_batch_size < 0 or cfg.total_batch_size % micro:
        up = max(1, -(-cfg.total_batch_size // micro)) * micro
        raise UserError(f"total_batch_size={cfg.total_batch_size} is not a multiple of batch_size*block_size = {micro} "
                        f"tokens: use --total_batch_size={up} (or 0 for no accumulation)")
    first = dict(learning_rate=cfg.learning_rate / (1 - cfg.beta1), muon_lr=cfg.muon_lr)  # each optimizer's first step
    for key, step in first.items():  # a float32 holds < 3.4e38 (Muon scales by its matrices' shapes)
        if step > 1e37:
            raise UserError(f"{key}={getattr(cfg, key):g}: a first step of {step:.3g} is past float32; give ~3e-3")
    if cfg.min_lr > cfg.learning_rate:  # a preset's floor beside a lower peak given alone (cpu --learning_rate=1e-4)
        raise UserError(f"min_lr={cfg.min_lr} is above learning_rate={cfg.learning_rate}: the schedule would rise, not "
                        f"decay; give --min_lr at most the peak (e.g. a tenth of it, as nanoGPT)")
    if cfg.learning_rate * cfg.weight_decay >= 1:  # AdamW's decoupled decay scales each weight by 1 - lr * wd
        raise UserError(f"learning_rate x weight_decay = {cfg.learning_rate * cfg.weight_decay:g} >= 1: each step's "
                        f"decay would zero or flip every weight; lower one of them (e.g. --weight_decay=0.1)")
    # validation imports the EMA's rule (parsing a flag does not)
    from utils.optim import EMA
    reach = EMA.ramp(cfg.max_iters - 1)  # the EMA's warm-up rule (1+n)/(10+n) at its last update
    if "ema" in given and cfg.ema >= reach and not cfg.resume and cfg.max_iters:
        raise UserError(f"--ema={cfg.ema} cannot act in {cfg.max_iters:,} steps: the EMA's warm-up rule (1+n)/(10+n) "
                        f"stays below {reach:.4f} until the end, so every decay above that averages alike; give --ema "
                        f"below {reach:.4f} or more --max_iters")


def format_config(cfg, marks=None, only=None):
    """`key = value` lines: every key (of only, if given) with marks ({key: '*' or '+'}), else
    those off defaults."""
    d, defaults = asdict(cfg), asdict(Config())
    keys = list(d) if marks is not None else [k for k in d if d[k] != defaults[k]]
    keys = [k for k in keys if only is None or k in only]
    width = max(map(len, keys), default=0)
    return "\n".join(f"{(marks or {}).get(k, ' ')} {k:<{width}} = {d[k]!r}" for k in keys)


# ---------------------------------------------------------------------- --help
def wants_help(argv):
    return any(a in ("-h", "--help") for a in argv)


def help_text(prog, usage, from_checkpoint=False, argv=()):
    """--help: the presets, then every key by section (utils.cli.config_help; from_checkpoint:
    trained keys marked); with argv, the config it resolves to (preset keys '*', given '+')."""
    rest = [a for a in argv if a not in ("-h", "--help")]
    if not rest:
        from utils.cli import config_help  # the scripts' command-line module: read for --help only
        return config_help(prog, usage, from_checkpoint)
    cfg, given = parse(rest, check=False)
    marks = {k: "*" for a in rest if a in PRESETS for k in PRESETS[a]} | dict.fromkeys(given, "+")
    return (f"python {prog} {' '.join(rest)}: the resolved config ('*' a preset's key, '+' a file's or flag's; "
            f"the rest are the defaults; python {prog} --help documents every key)\n{format_config(cfg, marks)}")
