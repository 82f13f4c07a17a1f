"""Checkpoints: plain dicts of tensors and Python values, written atomically, loaded weights_only.
checkpoint_manager.py builds the model from one (load_model). A training run's directory:
    model.pt          the latest (what --resume and inference read)
    best.pt           the best validation bound so far
    model_<iter>.pt   with keep_last = K >= 2, the K newest; model.pt links to the newest
    metrics.jsonl     the log rows; a resume drops those after its checkpoint
A kill leaves each file whole or absent; a checksum, checked on load, catches what torch does not.

    python train.py cpu --resume   # the run's newest intact checkpoint, loaded here
"""
import hashlib
import os
import pickle
import re
import shutil
import warnings

import torch

from utils.errors import UserError
from utils.fileio import atomic_path, not_found, numbered_checkpoints

REQUIRED = {"model": dict, "config": dict, "model_args": dict, "tokenizer": dict, "iter": int}
USE_INSTEAD = "give a model.pt written by train.py or a folder written by scripts/export.py"
# old config key -> its name now ("block" is BD3-LM's; the mask band is mdlm's too)
RENAMED = {"block_length": "semi_ar_length", "bd3_mask_min": "mask_min", "bd3_mask_max": "mask_max"}
# Keys the measurements removed (dev/LOG.md, "The measurements delete what lost"): {key: (the last
# commit with it, the values that act as this version does)}; another value goes on at that commit.
REMOVED = dict(
    time_beta=("bcc25a1", 0.0), mask_span=("2d3bdbd", 0), mask_blocks=("2d3bdbd", 0), mir_weight=("a2e0d46", 0.0),
    mir_mask_max=("a2e0d46", 0.5), bd3_suffix_mix=("f39e744", 0.0), cooldown=("748393b", 0.0),
    attn_scale=("3cea44f", 0.0), value_residual=("ab77de4", False), dual_draft=("072746b", 0),
    threshold_rule=("796eedb", "above"), bd3_check=("18a4230", "l2r", "ar"),
    remdm_schedule=("0bf5f38", "constant", "cap"), remdm_alpha_on=("0bf5f38", 0.9), remdm_t_on=("0bf5f38", 0.55),
    remdm_t_off=("0bf5f38", 0.05), corrector_steps=("fc80f4d", 0), corrector_frac=("fc80f4d", 0.1),
    corrector_pick=("fc80f4d", "confidence"), draft=("d7a1d0d", ""), draft_len=("d7a1d0d", 4),
    live_fps=("b191f40", 8.0), muon_ns_dtype=("321e25a", "auto"), head_on_masked_only=("51be282", False))


def migrate(ckpt):
    """ckpt (or an export's) under today's names (RENAMED, blocks.N -> layers.N) and meanings (an
    empty viz_video, once 'no trace', is 'off'): old runs load."""
    ckpt["config"] = {RENAMED.get(k, k): v for k, v in ckpt["config"].items()}
    if ckpt["config"].get("viz_video") == "":
        ckpt["config"]["viz_video"] = "off"
    for key in ("model", "ema"):
        if ckpt.get(key) is not None:
            ckpt[key] = {re.sub(r"^(adaln\.)?blocks\.", r"\1layers.", k): v for k, v in ckpt[key].items()}
    return ckpt


# What each removed key acted on, which decides where an old run's value of it still matters: the
# network (its weights mean something else: refused everywhere) or its training (refused by
# --resume, which goes on training as it was). A sampler's setting, or one that changed nothing a
# run computes (a display pace, a faster path to the same loss), is dropped with a note.
REMOVED_ACTED_ON = dict(
    network=("attn_scale", "value_residual"),
    training=("time_beta", "mask_span", "mask_blocks", "mir_weight", "mir_mask_max", "bd3_suffix_mix", "cooldown",
              "muon_ns_dtype"),
    sampler=("dual_draft", "threshold_rule", "bd3_check", "remdm_schedule", "remdm_alpha_on", "remdm_t_on",
             "remdm_t_off", "corrector_steps", "corrector_frac", "corrector_pick", "draft", "draft_len"),
    nothing=("live_fps", "head_on_masked_only"))
DROPPED = dict(training="a training setting: the weights are read as they are",
               sampler="a sampler's setting: this version's sampler draws instead",
               nothing="it changed neither the network, its loss nor a sample")


def removed_notes(d, what, refused=("network",)):
    """[note] for d's (config or model_args) REMOVED keys at a value this version lacks, each
    dropped; a UserError for the first that acted on a kind in `refused` (REMOVED_ACTED_ON)."""
    notes = []
    for key, value in d.items():
        if key not in REMOVED or value in REMOVED[key][1:]:
            continue
        kind = next(kind for kind, keys in REMOVED_ACTED_ON.items() if key in keys)
        if kind in refused:
            raise UserError(f"{what} was trained with {key}={value!r}, which this version removed (dev/LOG.md names "
                            f"its verdict): use it with the code that had it, git checkout {REMOVED[key][0]}")
        notes.append(f"note: {what} has {key}={value!r}, which this version removed: dropped ({DROPPED[kind]})")
    return notes


def checksum(obj):
    """A digest of all obj holds but 'checksum': tensors' dtype, shape, bytes; others' repr."""
    h = hashlib.blake2b(digest_size=16)
    # (bytes to hash first, value), popped in order: a key's repr just before its value
    stack = [(b"", obj)]
    while stack:
        before, x = stack.pop()
        h.update(before)
        if isinstance(x, dict):
            keys = sorted((k for k in x if k != "checksum"), key=lambda k: (type(k).__name__, str(k)))
            stack.extend((repr(k).encode(), x[k]) for k in reversed(keys))
        elif isinstance(x, (list, tuple)):
            h.update(f"{type(x).__name__}{len(x)}".encode())
            stack.extend((b"", v) for v in reversed(x))
        elif isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy())
        else:
            h.update(repr(x).encode())
    return h.hexdigest()


def fall_back(path):
    """The other checkpoints of path's run, newest first, to name when path is damaged."""
    folder = os.path.dirname(path) or "."
    names = [n for n in ("model.pt", "best.pt") if os.path.isfile(os.path.join(folder, n))]
    others = [p for _, p in reversed(numbered_checkpoints(folder))] + [os.path.join(folder, n) for n in names]
    others = [p for p in others if _intact_other(p, path)][:2]
    return f"fall back to {' or '.join(others)}" if others else "retrain it, or give another run's checkpoint"


def _intact_other(p, path):
    """Whether p is not path, loads and matches its checksum (False on a dangling link, too)."""
    try:
        if os.path.samefile(p, path):
            return False
        ck = torch.load(p, map_location="cpu", weights_only=True)
        return isinstance(ck, dict) and ck.get("checksum") in (None, checksum(ck))
    except Exception:
        return False


def save_checkpoint(path, obj):
    with atomic_path(path) as tmp:
        torch.save({**obj, "checksum": checksum(obj)}, tmp)


def host_copy(obj):
    """obj with its tensors copied to the host: a snapshot the training step cannot change."""
    if isinstance(obj, dict):
        return {k: host_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(host_copy(v) for v in obj)
    return obj.detach().to("cpu", copy=True) if isinstance(obj, torch.Tensor) else obj


def _link(src, dst):
    """dst as a hard link to src (already flushed), or a flushed copy where links fail."""
    try:
        with atomic_path(dst, fsync=False) as tmp:
            os.link(src, tmp)
    except OSError:
        with atomic_path(dst) as tmp:
            shutil.copyfile(src, tmp)


def save_run_checkpoint(out_dir, state, keep_last=1, is_best=False):
    """Write model.pt (best.pt when is_best), and with keep_last >= 2 model_<iter>.pt, keeping the
    keep_last newest. Returns the numbered files removed, an abandoned run's later ones too."""
    latest = os.path.join(out_dir, "model.pt")
    if keep_last >= 2:
        numbered = os.path.join(out_dir, f"model_{state['iter']:07d}.pt")
        save_checkpoint(numbered, state)
        _link(numbered, latest)
    else:
        save_checkpoint(latest, state)
    if is_best:
        _link(latest, os.path.join(out_dir, "best.pt"))
    found = numbered_checkpoints(out_dir)
    older = [p for i, p in found if i <= state["iter"]]
    doomed = [p for i, p in found if i > state["iter"]] + (older[:-keep_last] if keep_last >= 2 else older)
    for p in doomed:  # only now: a newer complete checkpoint is in place
        os.remove(p)
    return doomed


def load_latest(out_dir, warn=print):
    """(ckpt, path) of the newest checkpoint in out_dir that loads: model.pt, or a numbered one
    newer (killed before linking) or standing in for an unreadable model.pt."""
    latest = os.path.join(out_dir, "model.pt")
    if not os.path.exists(latest) and not numbered_checkpoints(out_dir):
        raise UserError(f"--resume: no checkpoint in {out_dir}: drop --resume to start a new run, "
                        f"or point --out_dir at the run to continue")
    ckpt, error = None, None
    try:
        ckpt = load_checkpoint(latest)
    except UserError as e:
        error = e
    for it, numbered in reversed(numbered_checkpoints(out_dir)):
        if ckpt is not None and it <= ckpt["iter"]:
            break
        try:
            newer = load_checkpoint(numbered)
        except UserError:
            continue
        warn(f"warning: {error}; resuming from {numbered}, the newest complete checkpoint" if error else
             f"note: {numbered} is newer than {latest}; resuming from it")
        return newer, numbered
    if ckpt is None:
        raise error
    return ckpt, latest


def load_checkpoint(path):
    if not os.path.isfile(path):
        if os.path.isdir(path):
            raise UserError(f"checkpoint {path} is a directory without an exported model in it: {USE_INSTEAD}")
        raise not_found(path, "checkpoint", "train one with train.py (its --out_dir holds model.pt), or pass "
                        "--checkpoint PATH")
    if str(path).endswith(".safetensors"):
        raise UserError(f"{path} holds an exported model's weights only: pass the folder it is in, "
                        f"--checkpoint {os.path.dirname(path) or '.'}")
    try:
        with warnings.catch_warnings():  # torch warns on foreign files; the error below says it once
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # arbitrary bytes fail in many ways (IndexError on /etc/passwd)
        if isinstance(e, pickle.UnpicklingError) and "GLOBAL" in str(e):  # a class or function it refused
            raise UserError(f"checkpoint {path} holds objects a weights-only load refuses (code or foreign "
                            f"classes; it was not written by train.py and may be unsafe): nothing in it was run; use a "
                            f"checkpoint from train.py") from None
        raise UserError(_not_a_checkpoint(path, e)) from None
    if lacks_keys(ckpt):
        raise UserError(f"checkpoint {path} is not a micro-dllm checkpoint (missing keys); {USE_INSTEAD}")
    if "checksum" in ckpt and ckpt["checksum"] != checksum(ckpt):  # checkpoints written before it have none
        raise UserError(f"checkpoint {path} is damaged: what it holds does not match the checksum it was written "
                        f"with; {fall_back(path)}")
    return migrate(ckpt)


def lacks_keys(ckpt, but=None):
    """Whether ckpt is not a dict of REQUIRED's keys and types (but: a key an export lacks)."""
    return not isinstance(ckpt, dict) or any(not isinstance(ckpt.get(k), t) for k, t in REQUIRED.items() if k != but)


def _not_a_checkpoint(path, e):
    with open(path, "rb") as f:
        head = f.read(4096)
    if not head:
        return f"checkpoint {path} is empty (a copy or download that never finished?): {USE_INSTEAD}"
    try:
        head.decode("utf-8")
        is_text = b"\0" not in head
    except UnicodeDecodeError as u:
        is_text = u.start > len(head) - 4 and b"\0" not in head  # a character cut at the end of the read
    if is_text:
        return f"checkpoint {path} is a text file, not a checkpoint: {USE_INSTEAD}"
    reason = str(e).splitlines()[0][:80] if str(e) else type(e).__name__
    return (f"checkpoint {path} is corrupt, truncated or not a micro-dllm checkpoint ({reason}); "
            f"use another file or retrain")
