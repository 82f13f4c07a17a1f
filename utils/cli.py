"""How every script reads its command line. Each check is an argparse type, so a slip fails
before any work, as one `error:` line and exit 2 (utils.errors.run_cli):

    p = ArgParser(prog="scripts/eval.py")
    p.add_argument("--json", type=output, default="")  # adds --overwrite (never a checkpoint)
    p.add_argument("--n-windows", type=at_least(2))    # '1' and 'x' refused
    p.add_argument("--bands", type=list_of(band))      # '0-1,0.3-0.8' -> [(0.0, 1.0), (0.3, 0.8)]
    p.add_argument("--grid", type=key_list({"steps": at_least(1)}))  # 'steps=8' -> ('steps', [8])
    p.add_argument("--steps", type=at_least(1), needs=("n_samples",))  # needs --n-samples
    p.add_argument("--seed", type=seed)                # '-1', '2**32' and 'x' refused

Options match by whole name only (`--ar-check` is not --ar-checkpoint, which needs= would miss). An
option given twice takes its last value, as train.py and inference.py take a --key given twice: a
command line is composed (a base command, overrides appended); a KEY=V list names each key once.
"""
import argparse
import difflib
import inspect
import io
import math
import re
import shlex
import shutil
import sys
import textwrap
import tokenize
from contextlib import contextmanager
from dataclasses import asdict, fields

import config
from config import BOOLEANS, CHOICES, INT64_MAX, PRESETS, TRAINED, Config
from utils.errors import UserError
from utils.fileio import check_output, own_or_shipped

KEYS = {f.name for f in fields(Config)}
_TYPES = {f.name: f.type for f in fields(Config)}  # key -> its type, for --help
# a command to run, or what to train another run with: train.py's flags, spelled as it takes them
ELSEWHERE = r"python \S+\.py[^;:,)]*|train(?:ed|s|ing)?(?: it| them| a new one| one)? with [^;:,)]*"


class ArgParser(argparse.ArgumentParser):
    """argparse with one-line errors, no abbreviations and needs= (what is asked is what runs); an
    output (type=output) adds --overwrite, which lets it replace a file (--force: its old name)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)
        self.needs = {}

    def add_argument(self, *args, needs=(), **kwargs):
        action = super().add_argument(*args, **kwargs)
        if needs:
            self.needs[action] = needs
        if kwargs.get("type") is output and "overwrite" not in {a.dest for a in self._actions}:
            # --overwrite, as train.py and inference.py name it; --force (its old name) still works
            super().add_argument("--overwrite", "--force", dest="overwrite", action="store_true",
                                 help="replace an existing output file (not a checkpoint); --force: the same")
        return action

    def parse_known_args(self, args=None, namespace=None):
        a, rest = super().parse_known_args(args, namespace)
        given = typed(args if args is not None else sys.argv[1:])
        for act, needs in self.needs.items():
            if given & set(act.option_strings) and not any(getattr(a, n) for n in needs):
                flags = " or ".join(f"--{n.replace('_', '-')}" for n in needs)
                raise UserError(f"{act.option_strings[0]} acts only with {flags} on (here off): give that too, or drop "
                                f"{act.option_strings[0]}")
        for act in self._actions:
            if act.type is output and getattr(a, act.dest):
                check_output(getattr(a, act.dest), a.overwrite, (act.option_strings or [act.dest])[0])
        return a, rest

    def parse_args(self, args=None, namespace=None):
        a, rest = self.parse_known_args(args, namespace)
        if rest:
            self.error(self.unrecognized(rest))
        return a

    def close_options(self, word):
        """The options a mistyped flag may mean: those it abbreviates, else look-alikes."""
        flag = str(word).split("=")[0]
        options = [o for act in self._actions for o in act.option_strings if o.startswith("--")]
        return [o for o in options if o.startswith(flag)] or difflib.get_close_matches(flag, options, n=3)

    def unrecognized(self, words):
        """argparse's message for words no option took, naming options close to the first flag."""
        flags = [w for w in words if str(w).startswith("--")]
        close = self.close_options(flags[0]) if flags else []
        hint = f" (did you mean {' or '.join(close)}? options take their whole name)" if close else ""
        return f"unrecognized arguments: {' '.join(map(str, words))}{hint}"

    def error(self, message):
        raise UserError(f"{message} (see python {self.prog} --help)")


@contextmanager
def own_flags(args, spelled=None):
    """Refusals raised inside, in the script's own flags: configurator's and train.py's words name
    config.py's --key, which a script takes as --key-with-dashes (args: its parsed namespace) or
    not at all (then named as a setting, key=value, never as a flag it lacks); spelled: keys it
    takes otherwise ({'steps': '--grid steps'}). A command to run (python train.py ...) and what
    to train another run with keep train.py's flags (ELSEWHERE)."""
    spelling = {dest: "--" + dest.replace("_", "-") for dest in vars(args) if dest in KEYS} | (spelled or {})

    def spell(m):
        if m[1] is None:  # ELSEWHERE's: another program's flags, as that program takes them
            return m[0]
        key = m[1].replace("-", "_")
        if key not in KEYS:  # the script's own flag, or no config key
            return m[0]
        return spelling.get(key, key) + (m[2] or "")
    try:
        yield
    except UserError as e:
        raise UserError(re.sub(rf"{ELSEWHERE}|(?<![\w/-])--([a-z][\w-]*)(=[^\s,;:()]+)?", spell, str(e))) from None


def typed(argv):
    """The options typed on a command line (`--n-t=4` -> '--n-t'), for needs= to check."""
    return {str(w).split("=")[0] for w in argv if str(w).startswith("--")}


def output(path):
    """An output file: refused if it exists unless --overwrite, and if a checkpoint even then."""
    return path


def command(prog, argv, drop=(), add=None):
    """`python PROG ARGV`, quoted, the keys of drop and add removed with their values (as
    configurator.parse reads them), then add's set (True: a bare --key): advice that runs."""
    gone = {*drop, *(add or {})}
    kept, args = [], list(argv)
    while args:
        arg = args.pop(0)
        key, eq, _ = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        if key.replace("-", "_") not in gone:
            kept.append(arg)
        elif not eq and args and not args[0].startswith("--"):
            args.pop(0)  # its value, as the next word
    kept += [f"--{k}" if v is True else f"--{k}={v}" for k, v in (add or {}).items()]
    return shlex.join(["python", prog, *kept])


def model_path(path):
    """A checkpoint path as read: the shipped weights for a preset's run not trained yet."""
    return own_or_shipped(path)


def at_least(minimum, why="", most=None):
    """A count (a float if minimum is), refused below `minimum` (`why`: the reason) or above `most`.
    A float must be finite: 'nan' passes any bound, 'inf' never ends a loop."""
    kind = type(minimum)

    def count(text):
        if kind is int and len(text) > 100 and text.strip().lstrip("+-").isdigit():  # past 4,300 digits: no int
            raise argparse.ArgumentTypeError(f"must fit an int64 (at most {INT64_MAX:,} either way), got a "
                                             f"{len(text.strip()):,}-digit number")
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a valid {kind.__name__}") from None
        fits(v, text)
        if v < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}{f' ({why})' if why else ''}, got {text}")
        if most is not None and v > most:
            raise argparse.ArgumentTypeError(f"must be <= {most:,}, got {text}")
        return v
    count.minimum = minimum  # for the tests, which try values past each bound
    count.most = most
    return count


def fits(v, text):
    """v (read from `text`); an ArgumentTypeError for a float not finite or an int past int64."""
    if isinstance(v, float) and not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    if isinstance(v, int) and not -INT64_MAX <= v <= INT64_MAX:
        raise argparse.ArgumentTypeError(f"must fit an int64 (at most {INT64_MAX:,} either way), got {text}")
    return v


def seed(text):
    """A seed: numpy's and the hub's shuffles take seeds in [0, 2**32)."""
    return at_least(0, most=2 ** 32 - 1)(text)


seed.minimum, seed.most = 0, 2 ** 32 - 1  # as at_least's, for the tests


def list_of(element):
    """'a,b,c' -> [element(a), ...]; element: a type, a check (band) or a tuple of names."""
    def items(text):
        values = [v.strip() for v in text.split(",") if v.strip()]
        if not values:
            raise argparse.ArgumentTypeError(f"{text!r} names no value: give one or more, separated by commas")
        return [item(v) for v in values]

    def item(v):
        if isinstance(element, tuple) and v not in element:
            raise argparse.ArgumentTypeError(f"{v!r} is not one of {', '.join(element)}")
        try:
            return v if isinstance(element, tuple) else fits(element(v), v)
        except ValueError:  # a plain type; the checks word their own errors
            raise argparse.ArgumentTypeError(f"{v!r} is not a valid {element.__name__}") from None
    items.element = element
    return items


def boolean(text):
    """'true' / 'false' (1 / 0, yes / no, on / off: config.BOOLEANS) -> bool."""
    if text.lower() not in BOOLEANS:
        raise ValueError(text)
    return BOOLEANS[text.lower()]


def config_flags(p, needs=()):
    """--KEY VALUE (dashes or underscores) for every config.py key the script does not take itself,
    typed as config.py types it and left out of --help (its description names them): a script's
    flags for a sampler's keys, known before torch is imported. Which keys a sampler reads is
    checked once it is (scripts/eval.py). Returns the keys it added."""
    own = {a.dest for a in p._actions}
    added = [key for key in _TYPES if key not in own]
    for key in added:
        typ = _TYPES[key]
        kind = dict(type=boolean if typ is bool else typ)
        if key in CHOICES:
            kind = dict(choices=CHOICES[key])
        names = sorted({f"--{key.replace('_', '-')}", f"--{key}"})
        p.add_argument(*names, dest=key, default=None, needs=needs, help=argparse.SUPPRESS, **kind)
    return added


def key_list(types):
    """'key=v1,v2' -> (key, [values]) by `types` (key -> list_of element); no value twice."""
    def pair(text):
        key, eq, values = text.partition("=")
        if not eq or key not in types:
            close = difflib.get_close_matches(key, types, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close and eq else ""
            keys = ", ".join(types) if len(types) <= 20 else "a key of config.py"
            raise argparse.ArgumentTypeError(f"{text!r}: give KEY=V1,V2 with KEY {keys}{hint}")
        try:
            parsed = list_of(boolean if types[key] is bool else types[key])(values)
        except argparse.ArgumentTypeError as e:
            raise argparse.ArgumentTypeError(f"{text!r}: {e}") from None
        if len(set(parsed)) < len(parsed):  # a point run twice would be one point, silently
            raise argparse.ArgumentTypeError(f"{text!r} names a value twice: give each once")
        return key, parsed
    pair.element = types
    return pair


def band(text):
    """'lo-hi' -> (lo, hi), rates in [0, 1]; an empty band (lo >= hi) is refused."""
    try:
        lo, hi = (float(v) for v in text.split("-"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a band lo-hi, e.g. 0.3-0.8") from None
    if not 0 <= lo < hi <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} selects nothing: a band lo-hi needs 0 <= lo < hi <= 1")
    return lo, hi


# ------------------------------------------------------------ train.py's and inference.py's --help
def config_help(prog, usage, from_checkpoint=False):
    """The presets, then every key of config.py by section: --key=TYPE, its comment, its default
    (from_checkpoint: trained keys marked), read off config.py's own source."""
    width = min(shutil.get_terminal_size((100, 24)).columns, 120)

    def wrap(text, indent):
        return textwrap.fill(text, width, initial_indent=indent, subsequent_indent=" " * len(indent))

    out = [f"usage: python {prog} {usage}", "",
           wrap("Layers, later wins: defaults <- presets and .py config files (in order) <- --key=value (or --key "
                "value; dashes work as underscores; a bare --flag sets a bool; a flag given twice takes its last "
                "value, as every script's does). Unknown keys, wrong types and a key set twice in one config file "
                "are refused.", ""), "", "presets:"]
    docs = _preset_docs()
    name_w = max(map(len, PRESETS)) + 2  # the longest name still leaves a gap before its text
    out += [wrap(docs.get(name, ""), f"  {name:<{name_w}}") for name in PRESETS]
    defaults = asdict(Config())
    col = max(len(f"--{k}={t.__name__.upper()}") for k, t in _TYPES.items()) + 4
    for section, keys in _key_docs():
        out += ["", f"{section}:"]
        for key, text in keys:
            tag = " [from the checkpoint]" if from_checkpoint and key in TRAINED else ""
            listed = key in CHOICES and all(f"'{c}'" in text for c in CHOICES[key])
            choice = f" (one of {', '.join(CHOICES[key])})" if key in CHOICES and not listed else ""
            head = f"  --{key}={_TYPES[key].__name__.upper()}"
            out.append(wrap(f"{text}{choice}{'; ' if text or choice else ''}default {defaults[key]!r}{tag}",
                            f"{head:<{col}}"))
    return "\n".join(out)


def key_help(key):
    """config.py's comment on key (its --help text)."""
    return next(text for _, keys in _key_docs() for k, text in keys if k == key)


def _source_lines(obj):
    """[(line, its comment's text or "")] of obj's source (tokenize: a '#' in a string is none)."""
    src = inspect.getsource(obj)
    toks = tokenize.generate_tokens(io.StringIO(src).readline)
    comments = {t.start[0]: t.string.lstrip("#").strip() for t in toks if t.type == tokenize.COMMENT}
    return [(line, comments.get(n, "")) for n, line in enumerate(src.splitlines(), 1)]


def _key_docs():
    """[(section, [(key, comment)])] of Config: '# ---- section' lines, each field's comments."""
    sections, last = [("general", [])], None
    for line, text in _source_lines(Config):
        m = re.match(r"\s+(\w+)\s*:", line)
        if m and m[1] in _TYPES:
            last = [m[1], text]
            sections[-1][1].append(last)
        elif text.startswith("----"):
            sections.append((text.strip("- "), []))
        elif text and last is not None and line.strip().startswith("#"):
            last[1] = f"{last[1]} {text}".strip()
    return [(name, keys) for name, keys in sections if keys]


def _preset_docs():
    """{preset: the comment lines above it in PRESETS}."""
    lines, docs, above = _source_lines(config), {}, []
    start = next(i for i, (line, _) in enumerate(lines) if line.startswith("PRESETS = {")) + 1
    for line, text in lines[start:]:
        m = re.match(r'\s+"(\w+)":', line)
        if m and m[1] in PRESETS:
            docs[m[1]], above = " ".join(above), []
        elif line.strip().startswith("#"):
            above.append(text)
    return docs
