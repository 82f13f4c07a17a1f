"""One way to fail on bad input: a one-line message, exit code 2, no traceback.

Entry points run main() through run_cli; a UserError names the problem and the fix. Disk, memory and
non-finite-logit failures and Ctrl-C (exit 130) give one line; a closed pipe ends quietly (141).

    python train.py --max_itters=3   # error: unknown config key 'max_itters' (did you mean ...?)
"""
import errno
import math
import os
import sys


class UserError(Exception):
    """Bad input from the user (flag, file, config). Printed as one line, exit 2."""


def clip(text, most=40):
    """A value as a message quotes it: past `most` characters, its start and its length (a
    5,000-digit number is still one readable line)."""
    text = str(text)
    return text if len(text) <= most else f"{text[:most // 2]}... ({len(text):,} characters)"


def shown(value, most=60):
    """A value as a message quotes it: its clipped repr, or what it is where repr fails."""
    if isinstance(value, int) and value.bit_length() > 14_000:  # (past ~4,200 digits: repr() raises)
        digits = int(math.log10(abs(value))) + 1
        return f"(a {digits:,}-digit number)"
    try:
        text = repr(value)
    except (ValueError, RecursionError):
        return f"(a {type(value).__name__} too large or deep to print)"
    return clip(text, most)


# what sizes a batch or a context, by entry point (main's module); elsewhere the words alone
OOM_FIXES = dict(train="lower --batch_size or --block_size (or raise --total_batch_size to accumulate smaller "
                       "micro-batches)", inference="lower --num-samples or --gen-len",
                 **{"scripts.eval": "lower --batch-size (or --n-samples)", "scripts.frontier": "lower --batch-size"})

_WRITE_FIXES = {
    errno.ENOSPC: "free some space or write somewhere else",
    errno.EDQUOT: "free some space (disk quota) or write somewhere else",
    **dict.fromkeys((errno.EACCES, errno.EPERM), "fix the permissions or choose a location you can write"),
    errno.EROFS: "the filesystem is read-only: choose another location",
    errno.ENAMETOOLONG: "choose a shorter name",
}


def explain(e, program=""):
    """The one-line message for an environmental failure; None for a bug, keeping its traceback.
    program: main's module, whose flags an out-of-memory line names (OOM_FIXES)."""
    if isinstance(e, UserError):
        return str(e)
    if isinstance(e, OSError) and e.errno in _WRITE_FIXES:
        where = f": {e.filename}" if e.filename else ""
        return f"{e.strerror}{where}; {_WRITE_FIXES[e.errno]}"
    # a tensor too large to allocate, or to count the bytes of (past an int64: 'overflowed')
    too_large = ("can't allocate memory", "Storage size calculation overflowed")
    if isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError" or (
            isinstance(e, RuntimeError) and any(t in str(e) for t in too_large)):
        fix = OOM_FIXES.get(program, "ask for fewer windows, samples or tokens at once")
        return f"out of memory: the requested batch or context does not fit; {fix}"
    if isinstance(e, RuntimeError) and str(e).startswith("no law to draw from"):  # draw's: non-finite logits
        return str(e)
    return None


def say_interrupted(why=""):
    """Ctrl-C's one line on stderr: 'interrupted', then why."""
    print(f"interrupted{': ' if why else ''}{' '.join(why.split())}", file=sys.stderr)


def run_cli(main, argv=None):
    try:
        main(sys.argv[1:] if argv is None else argv)
        sys.stdout.flush()  # a reader that went away shows here, not at exit
    except KeyboardInterrupt as e:
        say_interrupted(str(e))
        sys.exit(130)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush cannot fail again
        sys.exit(141)  # 128 + SIGPIPE, as a shell reports it
    except Exception as e:
        msg = explain(e, getattr(main, "__module__", ""))
        if msg is None:
            raise
        if speaks(os.environ):
            # always one line, a word past 200 characters (a 5,000-digit number echoed) clipped
            words = [clip(w, 60) if len(w) > 200 else w for w in msg.split()]
            print(f"error: {' '.join(words)}", file=sys.stderr)
        sys.exit(2)


def speaks(environ):
    """Whether this process prints its refusal: every one but torchrun's workers past the first of
    their node, whose local rank 0 (started beside them by the same agent, which sets
    TORCHELASTIC_RUN_ID) refuses alike in the same log. Rank variables alone (a lone process, a
    hand-made launch, a worker node of several) name no process that would speak for this one."""
    local = environ.get("LOCAL_RANK", "0")
    return not ("TORCHELASTIC_RUN_ID" in environ and local.isdigit() and int(local) > 0)
