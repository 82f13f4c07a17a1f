"""A config's values, wherever they come from (a flag, a config file, a checkpoint's saved config):
each key known by its current name, each value as its key's type and within config.py's tables.
configurator.py reads the command line through these; checkpoint_manager.py reads a saved config
through them too, with no command-line module in between.

    python -c "from utils.values import coerce; print(coerce('temperature', 1))"   # 1.0
"""
import difflib
import math
import re
from dataclasses import fields

from config import CHOICES, INT64_MAX, LIMITS, RANGES, Config
from utils.checkpoint import REMOVED, RENAMED
from utils.errors import UserError, shown

TYPES = {f.name: f.type for f in fields(Config)}  # key -> its type
EXAMPLES = {bool: "true", int: "100", float: "0.5", str: "text"}  # a valid value of each type, for the errors
TRISTATE = ("auto", "true", "false")  # a key with these values takes a bool, as its word


def example(name, typ):
    """A valid value of key `name` (of type typ) for the errors: its type's, within its LIMITS."""
    if typ is int and name in LIMITS:
        return str(min(int(EXAMPLES[int]), LIMITS[name][0]))
    return EXAMPLES[typ]


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


def coerce(name, value):
    """A literal (a config file's, a checkpoint's, a flag's once read) as key `name`'s type: an int
    where a float is asked is that float; a tristate takes a bool as its word (an older
    checkpoint's compile=True is 'true'); any other type is refused."""
    typ = TYPES[name]
    if CHOICES.get(name) == TRISTATE and isinstance(value, bool):
        return str(value).lower()
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if type(value) is not typ:
        raise UserError(f"{name} must be {typ.__name__}, got {type(value).__name__} {shown(value)}: "
                        f"e.g. {name}={example(name, typ)}")
    return value


def interval(key):
    """(low, high, low included, high included) of key's range as config.RANGES writes it: '[0, 1)',
    '(0, inf)'."""
    allowed = RANGES[key]
    text = allowed[0] if isinstance(allowed, tuple) else allowed
    low, high = (float(end) for end in text[1:-1].split(","))
    return low, high, text[0] == "[", text[-1] == "]"


def within(key, value):
    """Whether value lies in key's range (config.RANGES)."""
    low, high, low_in, high_in = interval(key)
    above = value >= low if low_in else value > low
    below = value <= high if high_in else value < high
    return above and below


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
        line = allowed[1] if isinstance(allowed, tuple) else "{key} must be >= {low}, got {value}"
        if not within(key, getattr(cfg, key)):
            low = interval(key)[0]
            raise UserError(line.format(key=key, value=getattr(cfg, key), low=f"{low:g}", **vars(cfg)))
    if cfg.n_embd % cfg.n_head or (cfg.n_embd // cfg.n_head) % 2:
        raise UserError(f"n_embd={cfg.n_embd} must split into n_head={cfg.n_head} heads of even size (RoPE)")
