"""The corpus maker behind scripts/data.py (whose docstring gives the output format): reads the
Hugging Face hub or local files, writes one plain-text file.

    python scripts/data.py --input-file notes.txt --output data/notes.txt   # through this module"""
import sys

if __name__ == "__main__":  # a module: run as a file, it names its command
    said = ("scripts/corpus.py is the corpus maker behind scripts/data.py, not a command: "
            "run python scripts/data.py --help")
    asked = bool({"-h", "--help"} & set(sys.argv))
    print(said if asked else f"error: {said}", file=sys.stdout if asked else sys.stderr)
    sys.exit(0 if asked else 2)

import functools  # noqa: E402
import gc  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import urllib.error  # noqa: E402
import urllib.request  # noqa: E402

from utils.errors import UserError  # noqa: E402
from utils.fileio import atomic_open, check_output, not_found  # noqa: E402
from utils.tokenizer import EOT_TOKEN  # noqa: E402

SEPARATOR = EOT_TOKEN  # "<|endoftext|>"
JOINER = "\n" + SEPARATOR + "\n"  # between (and after) stories in the output
DATASETS_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}  # -> `datasets` builder
TEXT_EXTENSIONS = (".txt", ".text", ".md")
_CHUNK = 1 << 20  # characters read at a time
_BLANK_LINE = re.compile(r"\r?\n[ \t]*\r?\n")


# ----------------------------------------------------------------------------- hub
def _first_line(e, limit=160):
    s = " ".join(str(e).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _unreachable(name, why):
    return UserError(f"could not reach the Hugging Face hub for '{name}' (offline? {why}): pass a local file "
                     f"instead: --input-file PATH (a .txt, .jsonl, .json, .parquet or .csv file you have)")


def _probe_hub(name, timeout=5.0):
    """Fail in seconds (not `datasets`' ~25 s of retries) when the hub is unreachable. Any HTTP
    answer counts as reachable; urllib honours proxy env variables."""
    from huggingface_hub import constants
    req = urllib.request.Request(constants.ENDPOINT.rstrip("/") + "/api/datasets", method="HEAD")
    try:
        urllib.request.urlopen(req, timeout=timeout).close()
    except urllib.error.HTTPError:
        return  # the server answered
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise _unreachable(name, f"{type(reason).__name__}: {_first_line(reason, 80)}") from None


def _hub_error(name, split, e):
    """The UserError for an exception `datasets` raised while talking to the hub."""
    from datasets.exceptions import DatasetNotFoundError
    kind, msg = type(e).__name__, _first_line(e)
    if isinstance(e, DatasetNotFoundError):
        return UserError(f"dataset '{name}' was not found on the Hugging Face hub (or it is gated: "
                         f"run `hf auth login`): check --dataset, or pass a local file with --input-file")
    if "OfflineModeIsEnabled" in msg:
        return _unreachable(name, "HF_HUB_OFFLINE is set")
    if isinstance(e, ConnectionError) and "reach" in msg:
        inner = re.search(r"\((\w+)\)\s*$", msg)  # "Couldn't reach 'x' on the Hub (LocalEntryNotFoundError)"
        return _unreachable(name, f"{kind}: {inner.group(1)}" if inner else kind)
    if isinstance(e, ValueError) and "split" in msg.lower():
        return UserError(f"bad --split '{split}' for dataset '{name}' ({msg}): pass one of its splits")
    if isinstance(e, (ConnectionError, TimeoutError)) or "Connection" in kind or "Timeout" in kind:
        return _unreachable(name, f"{kind}: {_first_line(e, 80)}")
    return UserError(f"loading '{name}' from the Hugging Face hub failed ({kind}: {msg}): "
                     f"check --dataset/--config/--split, or pass a local file with --input-file")


def _texts_from_records(records, text_field, where, on_error, empty=None):
    """Yield each record's `text_field` string (skipped if None), checking the field on the first
    record. on_error(e): the UserError for other iterator errors. empty: the message if no text."""
    n, it = 0, iter(records)
    try:
        for i, rec in enumerate(it):
            if i == 0 and text_field not in rec:
                fields = ", ".join(sorted(map(str, rec))) or "(none)"
                raise UserError(f"text field '{text_field}' is not in the records of {where} "
                                f"(fields: {fields}): pass --text-field NAME")
            value = rec.get(text_field)
            if value is None:
                continue
            if not isinstance(value, str):
                raise UserError(f"text field '{text_field}' of {where} holds {type(value).__name__}, "
                                f"not text: pass --text-field with a string column")
            n += 1
            yield value
    except UserError:
        raise
    except Exception as e:  # network and parse errors
        raise on_error(e) from None
    finally:  # a parquet reader left half read aborts at exit (datasets#7879, arrow#45214):
        getattr(it, "close", lambda: None)()  # end it now, while Arrow is alive
        gc.collect()
    if n == 0 and empty:
        raise UserError(empty)


def iter_hf_texts(name, split="train", text_field="text", seed=1337, shuffle_buffer=10_000, num=0, config=None):
    """Stream num of a hub dataset's texts (0: all, in order), connecting now: errors raise here."""
    # short timeouts; huggingface_hub reads them when it is first imported
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "10")
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "20")
    offline = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    if not any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on") for k in offline):
        _probe_hub(name)
    import datasets
    on_error = functools.partial(_hub_error, name, split)
    try:
        ds = datasets.load_dataset(name, config, split=split, streaming=True)
        if num:
            ds = ds.shuffle(seed=seed, buffer_size=shuffle_buffer).take(num)
    except Exception as e:  # only the hub call: map every failure to one line
        raise on_error(e) from None
    return _texts_from_records(ds, text_field, f"'{name}'", on_error)


# ----------------------------------------------------------------------------- local files
def _read_chunks(path):
    """path's text, _CHUNK characters at a time; an unreadable or non-UTF-8 file is a UserError."""
    # newline="" keeps \r\n, so a single document is written back unchanged
    try:
        with open(path, encoding="utf-8", newline="") as f:
            yield from iter(lambda: f.read(_CHUNK), "")
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 text ({_first_line(e, 80)}): convert it to UTF-8") from None
    except OSError as e:
        raise UserError(f"cannot read {path} ({type(e).__name__}: {_first_line(e, 80)}): check the file") from None


def local_format(path, split_blank_lines=False):
    """How iter_local_texts reads `path`: 'separator' if it holds <|endoftext|>, else 'blank-lines'
    if split_blank_lines, else 'document' (one text, unchanged); or a `datasets` builder name."""
    if not os.path.exists(path):
        raise not_found(path, "--input-file", "check the path")
    if not os.path.isfile(path):
        raise UserError(f"--input-file {path} is not a regular file: pass a .txt/.jsonl/.json/.parquet/.csv file")
    if os.path.getsize(path) == 0:
        raise UserError(f"input file is empty: {path}: pass a file with text in it")
    ext = os.path.splitext(path)[1].lower()
    if ext in DATASETS_BUILDERS:
        return DATASETS_BUILDERS[ext]
    if ext and ext not in TEXT_EXTENSIONS:
        raise UserError(f"unsupported input file type '{ext}' ({path}): use .txt, .jsonl, .json, .parquet or .csv")
    tail = ""
    for chunk in _read_chunks(path):
        window = tail + chunk  # a separator cut by a chunk boundary is still found
        if SEPARATOR in window:
            return "separator"
        tail = window[-(len(SEPARATOR) - 1):]
    return "blank-lines" if split_blank_lines else "document"


def iter_local_texts(path, text_field="text", split_blank_lines=False):
    """A local file's texts, lazily (records: their `text_field`); local_format checks it now."""
    fmt = local_format(path, split_blank_lines)
    if fmt in ("document", "separator", "blank-lines"):
        return _iter_text(path, fmt)
    # a datasets builder streams as the hub does
    import datasets

    def on_error(e):
        return UserError(f"could not read {path} as {fmt} ({type(e).__name__}: {_first_line(e)}): check the file")

    try:
        ds = datasets.load_dataset(fmt, data_files=os.path.abspath(path), split="train", streaming=True)
    except Exception as e:
        raise on_error(e) from None
    return _texts_from_records(ds, text_field, path, on_error, f"input file has no records: {path}")


def _iter_text(path, fmt):
    """A .txt read as `fmt`: the one document, or the stripped non-empty pieces."""
    if fmt == "document":
        text = "".join(_read_chunks(path))
        if not text.strip():
            raise UserError(f"input file has no text (only whitespace): {path}")
        yield text
        return
    split = (lambda s: s.split(SEPARATOR)) if fmt == "separator" else _BLANK_LINE.split
    n = 0
    for piece in map(str.strip, _split_stream(_read_chunks(path), split)):
        if piece:
            n += 1
            yield piece
    if n == 0:
        raise UserError(f"input file has no stories (only separators/whitespace): {path}")


def _split_stream(chunks, split):
    """Split a chunk stream with `split(buffer) -> parts`; a chunk's last part carries over."""
    buf = ""
    for chunk in chunks:
        *parts, buf = split(buf + chunk)
        yield from parts
    yield buf


# ----------------------------------------------------------------------------- sampling / writing
def sample_texts(texts, num=0, seed=1337):
    """`num` texts picked uniformly in O(num) memory (reservoir sampling, random.Random(seed)), in
    seeded random order; all, shuffled, if fewer. num=0 returns `texts` unchanged."""
    if num == 0:
        return texts
    rng = random.Random(seed)
    reservoir = []
    for i, t in enumerate(texts):
        if i < num:
            reservoir.append(t)
            continue
        j = rng.randint(0, i)  # text i replaces a kept one with chance num / (i + 1)
        if j < num:
            reservoir[j] = t
    rng.shuffle(reservoir)
    return reservoir


def write_corpus(texts, path, overwrite=False, single_document=False):
    """Write texts to `path` atomically as they arrive: each stripped, empties skipped, + JOINER
    (single_document: the one text as is). Returns {stories, chars, distinct_chars, path}."""
    check_output(path, overwrite)
    stories, chars, seen = 0, 0, set()
    with atomic_open(path, newline="") as f:
        for text in texts:
            if not single_document:
                text = text.strip()
                if not text:
                    continue
                text += JOINER
            f.write(text)
            seen.update(text)
            chars += len(text)
            stories += 1
        if stories == 0:
            raise UserError("no stories to write (the input had no text): check the input")
    return {"stories": stories, "chars": chars, "distinct_chars": len(seen), "path": path}
