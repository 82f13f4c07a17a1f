"""The command line and config files -> a checked Config: the command line read once (parse),
laid over a fresh config or a checkpoint's (CommandLine.over), validated, and --help. Each value's
type and range: utils/values.py, which a checkpoint's config is read through too.

    cfg, given = configurator.parse(["cpu", "--max_iters=200"]).over()   # unchecked
    cfg = configurator.get_config(["cpu", "--max_iters=200"])            # and validated
    python train.py --help          # the presets, then every key by section
"""
import ast
import difflib
import os
from dataclasses import asdict, dataclass, replace

from config import BOOLEANS, CHOICES, NEEDS, PRESETS, SAMPLING_ONLY, Config
from diffusion import SamplerOptions
from model import DECODERS
from objectives import OBJECTIVES, effective
from utils.errors import UserError
from utils.fileio import read_text
from utils.values import TRISTATE, TYPES, check_values, coerce, example, known_key

BARE = dict(html="auto")  # a path key whose bare --flag names its file itself


def read_flag(name, text):
    """A command-line string as key `name`'s value: read as a literal (a bool by its word), then
    coerced as a config file's literal is."""
    typ = TYPES[name]
    if typ is str:
        return coerce(name, text)
    text = text.strip()
    if typ in (int, float) and len(text) > 100 and text.lstrip("+-").isdigit():  # past 4,300 digits: no int
        most = "torch's integers are 64-bit" if typ is int else "a float holds at most ~1.8e308"
        raise UserError(f"--{name} is a {len(text):,}-digit number: out of range ({most})")
    try:
        value = BOOLEANS[text.lower()] if typ is bool else ast.literal_eval(text)
    except (KeyError, ValueError, SyntaxError):
        raise UserError(f"--{name}={text!r} is not a valid {typ.__name__}: e.g. --{name}={example(name, typ)}")
    return coerce(name, value)


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

@dataclass(frozen=True)
class CommandLine:
    """A command line, read once (parse): its presets' and config files' settings in order, then
    its flags', and the keys the user set (by a file or a flag). over() lays them on any config."""
    layers: tuple  # ({key: value}, ...): each preset and config file in order, the flags last
    given: frozenset

    def over(self, base=None):
        """(the Config these settings make over base (None: a fresh one; inference.py: the
        checkpoint's), the keys given), as its objective runs it (objectives.effective). Unchecked:
        validate() refuses what cannot work."""
        cfg = Config() if base is None else base
        for settings in self.layers:
            cfg = replace(cfg, **settings)
        flags = self.layers[-1]
        # a text given here replaces a preset's (or a checkpoint's) prompt
        if flags.get("infill") or flags.get("prefix_file"):
            cfg = replace(cfg, prompt=flags.get("prompt", ""))
        return effective(cfg, self.given), set(self.given)

    def plus(self, **flags):
        """This command line with more flags, as if typed last (inference.py --serve's lanes write
        no trace)."""
        return CommandLine(layers=(*self.layers[:-1], {**self.layers[-1], **flags}), given=self.given | set(flags))


def parse(argv):
    """argv read once: its presets (config.PRESETS), `key = value` config files and --key=value
    flags (a flag wins over a preset or a file wherever it stands), each key known and each value
    of its type. Returns the CommandLine."""
    layers, flags, given, args = [], {}, set(), list(argv)
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
            flags[key] = read_flag(key, value)
        elif arg.endswith(".py"):
            settings = {k: coerce(k, v) for k, v in _read_config_file(arg).items()}
            layers.append(settings)
            given |= set(settings)
        elif arg in PRESETS:
            layers.append(PRESETS[arg])
        else:
            close = difflib.get_close_matches(arg, list(PRESETS), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            data = f": a text to train on goes in --data_path={arg}" if os.path.isfile(arg) else ""
            raise UserError(f"'{arg}' is neither a preset ({', '.join(PRESETS)}){hint} nor a .py config file nor a "
                            f"--KEY=VALUE flag{data}")
    return CommandLine(layers=(*layers, flags), given=frozenset(given | set(flags)))


def get_config(argv):
    """defaults <- presets and config files <- flags: a checked Config."""
    cfg, given = parse(argv).over()
    validate(cfg, given)
    return cfg


def refuse_changes(cfg, given, saved, what, fix, allowed=()):
    """Refuses, naming both values, a given key set other than `saved` (the checkpoint's config)."""
    bad = [k for k in sorted(given) if k in saved and k not in allowed and getattr(cfg, k) != saved[k]]
    if bad:
        pairs = ", ".join(f"{k}={getattr(cfg, k)!r} (the checkpoint's: {saved[k]!r})" for k in bad)
        raise UserError(f"{what} fixes {', '.join(bad)}: given {pairs}; {fix}")


# ---------------------------------------------------------------------- validation
def validate(cfg, given=(), training=True):
    """Refuse values that cannot work, before any work, in one pass over config.py's tables: each
    key's values alone (check_values), the keys the objective never reads (its IGNORES), the keys
    each needs (NEEDS) and the sampler's keys its switches leave unread (SamplerOptions.unread);
    then the sampler's rules (SamplerOptions.check), the objective's and the rules that tie the
    other keys together. The first problem is the user's one line.
    training=False: a sampler's config (inference.py), whose optimiser settings no one reads (its
    checkpoint's); training=True refuses the keys only inference.py reads."""
    check_values(cfg)
    obj = OBJECTIVES[cfg.objective]
    opts = SamplerOptions.from_config(cfg)
    unread = [k for k in obj.IGNORES if k in given]
    if unread:
        raise UserError(f"objective={cfg.objective} does not read --{unread[0]}: {obj.IGNORES[unread[0]]}; drop it")
    if "replay_steps" in given and not obj.decodes(cfg, opts, cfg.num_samples):
        raise UserError(f"--replay_steps paces KV-cached decoding, and this sampler runs none ({DECODERS}): drop it")
    unread = opts.unread()  # the sampler's keys its own switches leave unread
    lacking = [idle(cfg, k) or unread.get(k, "") for k in sorted(given)]  # the first in name order is named
    if any(lacking):
        raise UserError(next(line for line in lacking if line))
    opts.check(given)
    obj.check(cfg, opts, given, training)
    check_together(cfg, given, training)
    training_only = [k for k in SAMPLING_ONLY if k in given] if training else []
    if training_only:  # train.py: a key only inference.py reads would act on nothing
        raise UserError(f"--{training_only[0]} is inference.py's: train.py's end-of-run samples continue --prompt; "
                        f"drop it, and sample the trained model with python inference.py --{training_only[0]} ...")


def partners(key):
    """[(other key, the values key acts with)] of NEEDS[key]: one pair, or several (any one)."""
    need = NEEDS[key]
    return need if isinstance(need[0], tuple) else (need,)


def idle(cfg, key):
    """Why key acts on nothing in cfg, as the user's line naming what would make it act; "" when
    it acts. It acts by config.NEEDS (one of its partners at a value it acts with; None: any but
    off, which is False, 0, '' or 'off')."""
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
    """The rules between keys, which no table of one key's values can say (the sampler's own:
    SamplerOptions.check)."""
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
    cfg, given = parse(rest).over()
    marks = {k: "*" for a in rest if a in PRESETS for k in PRESETS[a]} | dict.fromkeys(given, "+")
    return (f"python {prog} {' '.join(rest)}: the resolved config ('*' a preset's key, '+' a file's or flag's; "
            f"the rest are the defaults; python {prog} --help documents every key)\n{format_config(cfg, marks)}")
