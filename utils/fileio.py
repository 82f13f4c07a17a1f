"""Files: writes a crash never leaves half done; reads and output checks that fail in one line.

    with atomic_path("out/model.pt") as tmp:  # atomic_open(path) gives a text file
        torch.save(obj, tmp)

The temp NAME.tmp<pid> sits beside the target, so os.replace is an atomic rename, and replaces it,
fsynced, only if the block finished. remove_stale_temps(dir) deletes those a SIGKILL left.
"""
import itertools
import os
import re
import zipfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from config import PRESETS, Config
from utils.errors import UserError

_TEMP = re.compile(r"^(?P<name>.+)\.tmp(?P<pid>\d+)$")
_NUMBERED = re.compile(r"^model_(\d+)\.pt$")
# what a temp adds to its file's name: atomic_path's .tmp<pid>, a trace's .NAME.<pid>-<id>.tmp
TEMP_SUFFIX = 32
RUN_FILES = ("model.pt", "best.pt", "metrics.jsonl")  # a run's files besides model_<iter>.pt
MEDIA = os.path.join("artifacts", "media")  # where a trace goes unless its path is given
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository root


@contextmanager
def atomic_path(path, fsync=True):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)  # readers see the old file or the new one, never half of one
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextmanager
def atomic_open(path, newline=None):
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline=newline) as f:
        yield f


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temps(directory):
    """Delete NAME.tmp<pid> files left in `directory` by killed processes; returns their names."""
    names = sorted(os.listdir(directory)) if os.path.isdir(directory) else []
    temps = [(n, _TEMP.match(n)) for n in names]
    stale = [n for n, m in temps if m and int(m["pid"]) != os.getpid() and not _alive(int(m["pid"]))]
    for name in stale:
        os.remove(os.path.join(directory, name))
    return stale


def read_text(path, what, fix="", allow_empty=True, newline=None):
    """path's UTF-8 text, or a UserError naming `what` and the fix; newline="" keeps "\\r\\n"."""
    try:
        with open(path, encoding="utf-8", newline=newline) as f:
            text = f.read()
    except FileNotFoundError:
        raise not_found(path, what, fix) from None
    except IsADirectoryError:
        raise UserError(f"{what} {path} is a directory: give a text file") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{what} {path} is not UTF-8 text (byte {e.start}): convert it to UTF-8") from None
    except OSError as e:
        raise UserError(f"{what} {path} cannot be read ({e.strerror})") from None
    if not allow_empty and not text.strip():
        raise UserError(f"{what} {path} is empty: give a file with text in it")
    return text


def not_found(path, what, fix=""):
    """The UserError for a missing input; a relative path found under the repo (or shipped there
    in its stead) says where to run."""
    here = os.path.join(REPO, path)  # the path read from the repository root (or the weights it ships there)
    if not os.path.isabs(path) and os.path.exists(own_or_shipped(here)):
        fix = f"paths are relative to where you run: run from the repository root ({REPO}) or give the full path"
    return UserError(f"{what} {path} not found" + (f": {fix}" if fix else ""))


def train_command(path):
    """The command that writes checkpoint `path` (its preset's, else one with --out_dir)."""
    want = os.path.normpath(path)
    for name, preset in PRESETS.items():
        out_dir = preset.get("out_dir", Config.out_dir)
        written = (preset.get("checkpoint", Config.checkpoint), os.path.join(out_dir, "model.pt"),
                   os.path.join(out_dir, "best.pt"))
        if want in {os.path.normpath(p) for p in written}:
            return f"python train.py {name}"
    if want == os.path.normpath(Config.checkpoint):
        return "python train.py"  # the defaults: the reference recipe
    return f"python train.py PRESET --out_dir={os.path.dirname(want) or '.'}"


def own_text_dir(preset, data_path):
    """A run on your own text without --out_dir: artifacts/models/PRESET_NAME (NAME: the file's)."""
    name = re.sub(r"[^\w.-]+", "_", os.path.splitext(os.path.basename(data_path))[0]) or "text"
    return os.path.join(Config.out_dir, f"{preset}_{name}" if preset else name)


# ------------------------------------------------------------------ the weights the repo ships
# scripts/export.py's folders of cpu, baby, baby_bd3 and baby_ar, tracked in git
# (artifacts/README.md): a fresh clone samples, races and scrubs before it trains.
SHIPPED = os.path.join(REPO, "artifacts", "weights")


def own_or_shipped(path):
    """path, unless it is a preset's own run not trained yet (artifacts/models/NAME/model.pt or its
    folder) and the repo ships NAME's weights: then that shipped folder, relative to here."""
    if os.path.exists(path):
        return path
    return shipped_for(path) or path


def shipped_for(path):
    """The shipped folder that stands in for path where path is a preset's own run (its model.pt or
    folder) and the repo ships that preset's weights, relative to here; else None."""
    asked = os.path.abspath(path)
    run = os.path.dirname(asked) if os.path.basename(asked) == "model.pt" else asked
    shipped = os.path.join(SHIPPED, os.path.basename(run))
    if os.path.dirname(run) != os.path.join(REPO, "artifacts", "models") or not os.path.isdir(shipped):
        return None
    return os.path.relpath(shipped)


def require_checkpoints(paths, instead):
    """The paths to read (own_or_shipped's), or a one-line refusal of those missing: how to train
    each, or `instead` (the caller's way)."""
    missing = [str(p) for p in paths if not os.path.exists(own_or_shipped(p))]
    if missing:
        how = "; ".join(dict.fromkeys(map(train_command, missing)))  # one command may write several
        raise not_found(", ".join(missing), "checkpoint", f"train {'them' if missing[1:] else 'it'} first ({how}; "
                        f"README's Presets table gives the time), or {instead}")
    return [own_or_shipped(p) for p in paths]


def shipped_checksums():
    """{folder name: its config.json's config_checksum} of the weights the repo ships, as
    artifacts/weights/checksums.txt lists them ('CHECKSUM  NAME' a line); {} if it is unreadable."""
    try:
        with open(os.path.join(SHIPPED, "checksums.txt"), encoding="utf-8") as f:
            return {name: digest for digest, name in (line.split() for line in f if line.strip())}
    except (OSError, ValueError):
        return {}


def is_shipped(path):
    """Whether path is the folder of shipped weights or lies in it (training never writes there)."""
    return os.path.commonpath([os.path.abspath(path), SHIPPED]) == SHIPPED


def check_folder(folder, what, name=""):
    """UserError unless folder's nearest existing part is a folder this user can write, and each
    part still to make (and name, a file to write in it, with its temp's suffix) is a name its
    filesystem takes: past it, the write after the work failed with 'File name too long'."""
    there = folder
    while not os.path.exists(there):
        there = os.path.dirname(there) or "."
    if not (os.path.isdir(there) and os.access(there, os.W_OK)):
        state = "not a folder you can write" if os.path.isdir(there) else "a file, not a folder"
        raise UserError(f"{what}: {there} is {state}: choose another path")
    most = os.pathconf(there, "PC_NAME_MAX")
    parts = os.path.relpath(folder, there).split(os.sep) if folder != there else []
    # (a folder's most, or a file's: its temp's name is longer)
    long = [(p, most) for p in parts if len(p) > most] + [(name, most - TEMP_SUFFIX)] * (len(name) > most - TEMP_SUFFIX)
    if long:
        raise UserError(f"{what} (a name of {len(long[0][0]):,} characters, past the {long[0][1]} this filesystem "
                        f"takes): choose a shorter name")


def check_output(path, overwrite=False, flag="--output", overwrite_flag="--overwrite"):
    """UserError unless path may be written now, before any work: not a folder or a checkpoint, its
    folder writable (check_folder), and no file already there unless overwrite."""
    if os.path.isdir(path):
        raise UserError(f"{flag} {path} is a directory: pass a file path")
    check_folder(os.path.dirname(path) or ".", f"{flag} {path}", os.path.basename(path))
    # a checkpoint by its name, or a zip archive (what torch.save writes)
    if os.path.exists(path) and (path.endswith((".pt", ".pth", ".safetensors")) or zipfile.is_zipfile(path)):
        raise UserError(f"{flag} {path} is a checkpoint (or another archive): never replaced, not even with "
                        f"{overwrite_flag}; choose another path")
    if os.path.exists(path) and not overwrite:
        raise UserError(f"{path} already exists: pass {overwrite_flag} to replace it, or choose another {flag} path")


def trace_paths(mp4):
    """(MP4, the GIF beside it): the two files a trace writes, named by its MP4."""
    return mp4, os.path.splitext(mp4)[0] + ".gif"


def fresh_path(folder, name, *suffixes):
    """[folder/name_k + suffix, for each suffix] for the first k whose files are all free; the first
    is created empty at once (O_EXCL), so two runs started together never take one name."""
    os.makedirs(folder, exist_ok=True)
    for k in itertools.count(1):
        paths = [os.path.join(folder, f"{name}_{k}{suffix}") for suffix in suffixes]
        if any(os.path.exists(p) for p in paths[1:]):
            continue
        try:
            os.close(os.open(paths[0], os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            continue
        return paths


def check_trace(cfg, replace=False):
    """Refuse, before any work, a trace or page that cannot be written: a typed --viz-video whose
    MP4 or the GIF beside it cannot be written or is taken (replace off), a typed --html alike, and
    an auto-named one (--viz-video auto, a bare --html) whose folder, artifacts/media, cannot be
    made or written (a file named artifacts, say). 'off' writes nothing."""
    if cfg.viz_video not in ("auto", "off"):
        for path in trace_paths(cfg.viz_video):
            check_output(path, replace, "--viz-video")
    if cfg.html not in ("", "auto"):
        check_output(cfg.html, replace, "--html")
    auto = [flag for flag, on in (("--viz-video", cfg.viz_video == "auto"), ("--html", cfg.html == "auto")) if on]
    if auto:
        check_folder(MEDIA, f"{auto[0]} names its new file in {MEDIA} (or give it a path)")


TRACE_KEYS = ("viz_video", "html", "trace_every", "gif_frame_ms", "overwrite")  # a sample's trace and its files


def trace_asked(cfg, given):
    """The trace keys given (in order) that ask for a file: each but --viz-video off, which asks for
    none. What --serve, --interactive and --prompts-file refuse alike: they record no trace."""
    return [k for k in TRACE_KEYS if k in given and not (k == "viz_video" and cfg.viz_video == "off")]


def drop_if_empty(path):
    """Remove path if it is an empty file (fresh_path's placeholder, when nothing was written)."""
    if path and os.path.isfile(path) and os.path.getsize(path) == 0:
        os.remove(path)


# ------------------------------------------------------------------------ a training run's folder
def iter_of(path):
    m = _NUMBERED.match(os.path.basename(path))
    return int(m[1]) if m else None


def refuse_twins(paths, flag="checkpoint"):
    """Refuse one file named twice (any spelling of its path): a run scored or raced against
    itself, its row twice in a table."""
    there = [p for p in paths if os.path.exists(own_or_shipped(p))]
    for i, a in enumerate(there):
        twin = next((b for b in there[:i] if os.path.samefile(own_or_shipped(a), own_or_shipped(b))), None)
        if twin is not None:
            raise UserError(f"{twin} and {a} are one {flag}: give each once")


def check_run_folder(cfg):
    """What a training run may do with its folder, checked before any work: one it can write and
    name (check_folder), not the weights the repo ships, no folder where it writes one of its files
    (RUN_FILES: the resumed log's trim, a save's replace and --overwrite would fail on it after the
    work), and a new run over an earlier run's files refused, one line naming every way out."""
    out_dir = cfg.out_dir
    check_folder(out_dir, f"--out_dir={out_dir}")  # a checkpoint, say: never written over
    if is_shipped(out_dir):
        raise UserError(f"--out_dir={out_dir} is inside the folder of weights the repo ships, which training never "
                        f"writes: choose another --out_dir (each preset's own is artifacts/models/PRESET)")
    for name in RUN_FILES:
        path = os.path.join(out_dir, name)
        if os.path.isdir(path):
            raise UserError(f"{path} is a folder where the run writes its {name}: move it away, or give "
                            f"--out_dir=NEW_DIR")
    if cfg.resume or cfg.overwrite or cfg.max_iters == 0:  # (max_iters=0 writes nothing)
        return
    # the run files out_dir holds, replaced only when told to
    held = [n for n in RUN_FILES if os.path.lexists(os.path.join(out_dir, n))]
    held += [os.path.basename(p) for _, p in numbered_checkpoints(out_dir)]
    if any(name == "model.pt" or iter_of(name) is not None for name in held):  # a checkpoint to resume
        drop = " (dropping --init_from: they hold its weights already)" if cfg.init_from else ""
        raise UserError(f"{out_dir} already holds checkpoints: pass --resume to continue them{drop}, --overwrite to "
                        f"replace them, or --out_dir=NEW_DIR")
    if held:  # best.pt and the log of a run whose model.pt is gone (deleted as damaged, say): nothing to resume
        raise UserError(f"{out_dir} already holds an earlier run's {', '.join(held)} (no model.pt to --resume): "
                        f"pass --overwrite to replace them, or --out_dir=NEW_DIR")


def numbered_checkpoints(out_dir):
    """[(iter, path)] of the model_<iter>.pt files in out_dir, oldest first."""
    names = os.listdir(out_dir) if os.path.isdir(out_dir) else []
    return sorted((iter_of(name), os.path.join(out_dir, name)) for name in names if _NUMBERED.match(name))


class BackgroundWriter:
    """Writes checkpoints on a thread, one at a time: DDP ranks wait only for rank 0's host copy."""

    def __init__(self):
        self.pool, self.pending = ThreadPoolExecutor(1), None

    def submit(self, write):
        self.wait()
        self.pending = self.pool.submit(write)

    def wait(self):
        """Join the write in flight, raising its error. A Ctrl-C here leaves it pending, so the
        checkpoint it makes is reported, not called lost."""
        if self.pending is None:
            return
        try:
            self.pending.result()
        except Exception:
            self.pending = None  # a failed write is raised once
            raise
        self.pending = None
