"""Checkpoints: plain dicts of tensors and Python values, written atomically, read without running code;
and load_model, the one way any script gets a trained model.

    save_checkpoint("artifacts/models/model.pt", {...})   # temp file + fsync + os.replace
    ckpt = load_checkpoint("artifacts/models/model.pt")   # torch.load(weights_only=True)
    model, ckpt = load_model("artifacts/models/model.pt", device)   # eval mode; EMA weights when trained with --ema

A training run's directory (save_run_checkpoint / load_latest):
    model.pt          the latest checkpoint (what --resume and inference read)
    best.pt           the one with the best validation bound so far
    model_<iter>.pt   with keep_last = K >= 2: the K newest checkpoints; model.pt is a hard link to the newest
    metrics.jsonl     train.py's log rows; a resumed run first drops the rows logged after its checkpoint (trim_metrics)
A kill at any moment leaves every one of these either complete or absent: each is written to a temp
file and renamed into place, and an older checkpoint is deleted only after a newer one is in place.
"""
import json
import os
import pickle
import re
import shutil
import warnings
import zipfile

import torch

from model import ModelArgs, Transformer
from utils.errors import UserError
from utils.fileio import atomic_open, atomic_path

REQUIRED = ("model", "config", "model_args", "tokenizer", "iter")
_NUMBERED = re.compile(r"^model_(\d+)\.pt$")


def save_checkpoint(path, obj):
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _link(src, dst):
    """dst becomes the same file as src, atomically (a hard link; a copy where links are not supported)."""
    with atomic_path(dst, fsync=False) as tmp:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)


def numbered_checkpoints(out_dir):
    """[(iter, path)] of the model_<iter>.pt files in out_dir, oldest first."""
    found = []
    if os.path.isdir(out_dir):
        for name in os.listdir(out_dir):
            m = _NUMBERED.match(name)
            if m:
                found.append((int(m[1]), os.path.join(out_dir, name)))
    return sorted(found)


def save_run_checkpoint(out_dir, state, keep_last=1, is_best=False):
    """Write model.pt (and best.pt when is_best); with keep_last >= 2 also model_<iter>.pt, keeping the
    keep_last newest. Numbered files from later iters than this one belong to a run that was replaced
    (--overwrite) or abandoned: they are removed. Returns the paths removed."""
    latest = os.path.join(out_dir, "model.pt")
    if keep_last >= 2:
        numbered = os.path.join(out_dir, f"model_{state['iter']:07d}.pt")
        save_checkpoint(numbered, state)
        _link(numbered, latest)
    else:
        save_checkpoint(latest, state)
    if is_best:
        _link(latest, os.path.join(out_dir, "best.pt"))
    removed = []
    older = [p for i, p in numbered_checkpoints(out_dir) if i <= state["iter"]]
    doomed = [p for i, p in numbered_checkpoints(out_dir) if i > state["iter"]]
    doomed += older[:-keep_last] if keep_last >= 2 else older
    for p in doomed:  # only now: a newer complete checkpoint is in place
        os.remove(p)
        removed.append(p)
    return removed


def load_latest(out_dir, warn=print):
    """The newest checkpoint in out_dir that loads: model.pt, or a numbered one that is newer (a kill
    between writing it and linking model.pt) or that stands in for an unreadable model.pt."""
    latest = os.path.join(out_dir, "model.pt")
    ckpt, path, error = None, latest, None
    try:
        ckpt = load_checkpoint(latest)
    except UserError as e:
        error = e
    for it, numbered in reversed(numbered_checkpoints(out_dir)):
        if ckpt is not None and it <= ckpt["iter"]:
            break
        try:
            ckpt, path = load_checkpoint(numbered), numbered
        except UserError:
            continue
        warn(f"warning: {error}; resuming from {numbered}, the newest complete checkpoint" if error else
             f"note: {numbered} is newer than {latest}; resuming from it")
        break
    if ckpt is None:
        if not os.path.exists(latest) and not numbered_checkpoints(out_dir):
            raise UserError(f"--resume: no checkpoint in {out_dir}: drop --resume to start a new run, "
                            f"or point --out_dir at the run to continue")
        raise error
    return ckpt, path


def trim_metrics(path, upto):
    """Keep the rows of metrics.jsonl up to iter `upto` (-1: none): a run killed after its last checkpoint
    has logged rows that the resumed run logs again. Unreadable lines (a row cut by the kill) are dropped."""
    keep = []
    if upto >= 0 and os.path.exists(path):
        with open(path) as f:
            for line in f:
                try:
                    if json.loads(line)["iter"] <= upto:
                        keep.append(line.rstrip("\n") + "\n")
                except (json.JSONDecodeError, KeyError, TypeError):
                    pass
    with atomic_open(path) as f:
        f.writelines(keep)


def load_checkpoint(path, map_location="cpu"):
    if not os.path.isfile(path):
        raise UserError(f"checkpoint {path} not found: train one with python train.py, or pass --checkpoint PATH")
    try:
        with warnings.catch_warnings():  # torch warns on legacy/foreign files; the error below says it in one line
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise UserError(f"checkpoint {path} holds objects a weights-only load refuses (code or foreign classes; it was not "
                        f"written by train.py and may be unsafe): nothing in it was run; use a checkpoint from train.py") from None
    except (zipfile.BadZipFile, RuntimeError, EOFError, ValueError, OSError) as e:
        reason = str(e).splitlines()[0][:80] if str(e) else type(e).__name__
        raise UserError(f"checkpoint {path} is corrupt, truncated or not a micro-dllm checkpoint ({reason}); use another file or retrain")
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in REQUIRED):
        raise UserError(f"checkpoint {path} is not a micro-dllm checkpoint (missing keys); use a file written by train.py")
    return ckpt


def load_model(path, device):
    """(model in eval mode on device, the checkpoint dict) for any checkpoint train.py wrote."""
    ckpt = load_checkpoint(path)
    model = Transformer(ModelArgs(**ckpt["model_args"]))
    try:
        model.load_state_dict(ckpt["ema"] if ckpt.get("ema") is not None else ckpt["model"])  # EMA weights when trained with --ema
    except RuntimeError as e:
        raise UserError(f"checkpoint {path} does not match its own model description ({str(e).splitlines()[0][:100]}): the file is damaged")
    return model.to(device).eval(), ckpt


def iter_of(path):
    """The iteration a numbered checkpoint's file name holds (model_<iter>.pt), else None."""
    m = _NUMBERED.match(os.path.basename(path))
    return int(m[1]) if m else None
