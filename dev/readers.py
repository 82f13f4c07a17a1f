"""JSON readers the studies share (dev/plot.py, dev/epochs.py, dev/plot_epochs.py, dev/nanogpt_score.py): a damaged
or foreign file is one UserError naming the fix. Only dev/ reads these files, so they live here, not in utils/.

    from dev.readers import read_json, read_jsonl
"""
import sys

if __name__ == "__main__":  # run as a file: a module, so it names the command that uses it (as --help asks)
    said = ("dev/readers.py holds the JSON readers the studies share, not a command: run "
            "python dev/plot.py --help (or dev/epochs.py, dev/plot_epochs.py, dev/nanogpt_score.py)")
    asked = bool({"-h", "--help"} & set(sys.argv))
    print(said if asked else f"error: {said}", file=sys.stdout if asked else sys.stderr)
    sys.exit(0 if asked else 2)

import json  # noqa: E402

from utils.errors import UserError  # noqa: E402
from utils.fileio import read_text  # noqa: E402


def read_json(path, what, keys, fix, rows=()):
    """`path`'s JSON object, with `keys` and each run's `rows`, else a UserError naming `fix`."""
    try:
        d = json.loads(read_text(path, what, fix))
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not complete JSON ({e.msg} at character {e.pos}; cut short?): {fix}") from None
    lacks = [k for k in keys if not isinstance(d, dict) or k not in d]
    if not lacks:
        lacks = [f"runs[{i}].{k}" for i, r in enumerate(d.get("runs", [])) for k in rows if k not in r]
    if lacks:
        raise UserError(f"{path} is not {what} (it has no {lacks[0]!r}): {fix}")
    return d


def read_jsonl(path, what, fix):
    """The rows of a JSON-lines file (train.py's metrics.jsonl); a damaged line is one UserError."""
    try:
        return [json.loads(line) for line in read_text(path, what, fix).splitlines() if line.strip()]
    except json.JSONDecodeError as e:
        raise UserError(f"{path} holds a line that is not JSON ({e.msg}): the file is damaged") from None
