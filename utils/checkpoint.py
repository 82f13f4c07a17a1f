"""Checkpoints: plain dicts of tensors and Python values, written atomically, read without running code.

    save_checkpoint("artifacts/models/model.pt", {...})   # temp file + fsync + os.replace
    ckpt = load_checkpoint("artifacts/models/model.pt")   # torch.load(weights_only=True)
"""
import os
import pickle
import zipfile

import torch

from utils.errors import UserError

REQUIRED = ("model", "config", "model_args", "tokenizer", "iter")


def save_checkpoint(path, obj):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on POSIX: readers see the old file or the new one, never half
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_checkpoint(path, map_location="cpu"):
    if not os.path.isfile(path):
        raise UserError(f"checkpoint {path} not found: train one with python train.py, or pass --checkpoint PATH")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, ValueError, OSError) as e:
        reason = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        raise UserError(f"checkpoint {path} is corrupt, truncated or not a micro-dllm checkpoint ({reason}); use another file or retrain")
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in REQUIRED):
        raise UserError(f"checkpoint {path} is not a micro-dllm checkpoint (missing keys); use a file written by train.py")
    return ckpt
