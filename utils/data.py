"""Text -> token ids, encoded once into uint16 files and memory-mapped (nanoGPT's .bin idea).

The split is fixed: with one text file, the first (1 - val_fraction) of its characters
train and the rest validate (nanoGPT's split); with val_path, that file validates.
Encoded splits are cached under artifacts/data/<name>-<hash>/ keyed by the text, the
split and the tokenizer, so a second run starts at once.
"""
import hashlib
import json
import os
import time

import numpy as np
import torch

from utils.errors import UserError
from utils.tokenizer import BPETokenizer, CharTokenizer, fingerprint

CACHE_ROOT = os.path.join("artifacts", "data")


def read_text(path, what="data_path"):
    if not os.path.isfile(path):
        raise UserError(
            f"{what} {path} not found: make it with python scripts/data.py --dataset tinyshakespeare --output {path}, "
            f"or point --{what} at a local text file (e.g. ../shared/data/tinyshakespeare.txt)")
    with open(path, encoding="utf-8", errors="strict") as f:
        try:
            text = f.read()
        except UnicodeDecodeError as e:
            raise UserError(f"{what} {path} is not UTF-8 text (byte {e.start}): convert it to UTF-8")
    if not text.strip():
        raise UserError(f"{what} {path} is empty: give a text file with training data")
    return text


def split_texts(cfg):
    train = read_text(cfg.data_path)
    if cfg.val_path:
        return train, read_text(cfg.val_path, "val_path")
    cut = int(len(train) * (1 - cfg.val_fraction))
    return train[:cut], train[cut:]


def build_tokenizer(cfg, train_text, val_text):
    if cfg.tokenizer == "char":
        return CharTokenizer.from_text(train_text + val_text)  # vocab from all the text, as nanoGPT
    return BPETokenizer.from_file(cfg.tokenizer_path)


def _encode(tok, text, chunk_chars=1 << 20):
    """Encode in chunks (BPE: encode_batch, parallel in Rust); cut chunks at newlines so no token spans a cut."""
    if tok.kind == "char":
        return np.fromiter((tok.stoi[c] for c in text), dtype=np.int64, count=len(text))
    pieces, start = [], 0
    while start < len(text):
        end = min(len(text), start + chunk_chars)
        nl = text.rfind("\n", start, end)
        end = nl + 1 if end < len(text) and nl > start else end
        pieces.append(text[start:end])
        start = end
    ids = tok.encode_batch(pieces)
    return np.concatenate([np.asarray(x, dtype=np.int64) for x in ids]) if ids else np.zeros(0, np.int64)


def prepare_data(cfg, tokenizer=None, verbose=True):
    """Returns (tokenizer, train ids, val ids, meta). ids are read-only np.memmap arrays."""
    train_text, val_text = split_texts(cfg)
    tok = tokenizer or build_tokenizer(cfg, train_text, val_text)
    key = hashlib.sha256()
    for part in (train_text, "\x00split\x00", val_text, fingerprint(tok)):
        key.update(part.encode("utf-8"))
    name = os.path.splitext(os.path.basename(cfg.data_path))[0]
    cache = os.path.join(CACHE_ROOT, f"{name}-{tok.kind}-{key.hexdigest()[:12]}")
    meta_path = os.path.join(cache, "meta.json")
    if not os.path.isfile(meta_path):
        t0 = time.time()
        dtype = np.uint16 if tok.vocab_size <= 65536 else np.uint32
        meta = dict(data_path=cfg.data_path, val_path=cfg.val_path, val_fraction=cfg.val_fraction,
                    tokenizer=tok.kind, tokenizer_fingerprint=fingerprint(tok), dtype=np.dtype(dtype).name)
        os.makedirs(cache, exist_ok=True)
        for split, text in (("train", train_text), ("val", val_text)):
            ids = _encode(tok, text)
            tmp = os.path.join(cache, f"{split}.bin.tmp")
            ids.astype(dtype).tofile(tmp)
            os.replace(tmp, os.path.join(cache, f"{split}.bin"))
            meta[f"{split}_tokens"], meta[f"{split}_chars"] = int(len(ids)), len(text)
        with open(meta_path + ".tmp", "w") as f:
            json.dump(meta, f, indent=1)
        os.replace(meta_path + ".tmp", meta_path)
        if verbose:
            n = meta["train_tokens"] + meta["val_tokens"]
            dt = time.time() - t0
            print(f"encoded {n:,} tokens in {dt:.1f}s ({(meta['train_chars'] + meta['val_chars']) / max(dt, 1e-9) / 1e6:.2f} M chars/s) -> {cache}")
    with open(meta_path) as f:
        meta = json.load(f)
    train = np.memmap(os.path.join(cache, "train.bin"), dtype=meta["dtype"], mode="r")
    val = np.memmap(os.path.join(cache, "val.bin"), dtype=meta["dtype"], mode="r")
    meta["chars_per_token"] = meta["val_chars"] / max(meta["val_tokens"], 1)  # for bits/char of val
    return tok, train, val, meta


def check_fits(ids, length, split):
    if len(ids) < length + 1:
        raise UserError(f"the {split} split has {len(ids)} tokens, fewer than one window of {length + 1}: "
                        f"use more data or a smaller --block_size")


def get_batch(ids, batch_size, length, generator, device):
    """Random windows of `length` tokens: (B, length) long tensor on device."""
    ix = torch.randint(len(ids) - length, (batch_size,), generator=generator).tolist()
    x = torch.from_numpy(np.stack([ids[i:i + length] for i in ix]).astype(np.int64))
    if device.type == "cuda":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


def fixed_windows(ids, n, length):
    """n windows evenly spaced over the split: the same validation set at every eval. (n, length)."""
    starts = np.linspace(0, len(ids) - length - 1, n).astype(np.int64)
    return torch.from_numpy(np.stack([ids[s:s + length] for s in starts]).astype(np.int64))
