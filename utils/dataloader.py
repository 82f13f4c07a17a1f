"""The training data: text encoded once into memory-mapped uint16 files (nanoGPT's .bin), cached in
artifacts/data/ by text, split and tokenizer; then random training windows and fixed validation
windows. One file splits as nanoGPT's (its last val_fraction validates) unless val_path is given.

    python train.py cpu --max_iters=0   # encodes data/tinyshakespeare.txt once, then exits
"""
import hashlib
import json
import os
import time

import numpy as np
import torch

from utils.errors import UserError
from utils.fileio import atomic_open, atomic_path, read_text, remove_stale_temps
from utils.tokenizer import BPETokenizer, CharTokenizer, fingerprint, save_tokenizer, train_bpe

CACHE_ROOT = os.path.join("artifacts", "data")

_TINYSTORIES = "python scripts/data.py --dataset roneneldan/TinyStories"
MAKE_DATA = {  # how to make each file a preset reads
    **{f"data/{name}": f"it ships with the repository: restore it with git checkout -- data/{name}"
       for name in ("tinyshakespeare.txt", "tinystories_train_head.txt", "tinystories_valid_head.txt")},
    "data/stories.txt": f"{_TINYSTORIES} --split train --num-stories 10000 --seed 1337 --output data/stories.txt",
    "data/tinystories_train.txt": f"{_TINYSTORIES} --split train --output data/tinystories_train.txt",
    "data/tinystories_valid.txt": f"{_TINYSTORIES} --split validation --output data/tinystories_valid.txt",
}


def _read(path, what):
    cmd = MAKE_DATA.get(os.path.normpath(path))
    if cmd:
        fix = (cmd if cmd.startswith("it ") else f"make it with {cmd} (online)") + f", or give --{what}=ANY_TEXT_FILE"
    else:
        fix = (f"give --{what}=PATH of a UTF-8 text file (python scripts/data.py makes one from a hub dataset or "
               f"local file)")
    return read_text(path, what, fix, allow_empty=False)


def check_inputs(cfg):
    """Fail on a missing input before any work; a missing BPE is trained later, a bad one fails."""
    for what in ("data_path", "val_path"):
        path = getattr(cfg, what)
        if path and not os.path.isfile(path):
            _read(path, what)  # raises the one-line error
    if cfg.tokenizer == "bpe" and os.path.isfile(cfg.tokenizer_path):
        BPETokenizer.from_file(cfg.tokenizer_path)


def split_texts(cfg):
    train = _read(cfg.data_path, "data_path")
    if cfg.val_path:
        return train, _read(cfg.val_path, "val_path")
    cut = int(len(train) * (1 - cfg.val_fraction))
    if not 0 < cut < len(train):  # a fraction so near 0 or 1 that one side gets no character
        side = "validation" if cut == len(train) else "training"
        raise UserError(f"val_fraction={cfg.val_fraction:g} leaves no {side} text of {cfg.data_path}'s "
                        f"{len(train):,} characters: give --val_fraction=0.1 (nanoGPT's), or --val_path")
    return train[:cut], train[cut:]


def build_tokenizer(cfg, train_text, val_text):
    """The run's tokenizer; a BPE not trained yet is trained on data_path and saved."""
    if cfg.tokenizer == "char":
        return CharTokenizer(sorted(set(train_text + val_text)))  # vocab: all the text's characters, as nanoGPT
    path, src = cfg.tokenizer_path, cfg.data_path
    if os.path.isfile(path):
        return BPETokenizer.from_file(path, text=src)
    print(f"tokenizer: {path} does not exist, so training a 2,048-token byte-level BPE on {src} "
          f"(what python scripts/train_tokenizer.py --input {src} --output {path} does)")
    tok = train_bpe([train_text + ("" if cfg.val_path else val_text)], 2048)  # all data_path, as that command
    save_tokenizer(tok, path)
    return tok


def _encode_to_file(tok, text, path, dtype, desc, verbose):
    """Encode text into a file of `dtype` ids; returns the token count."""
    from tqdm import tqdm
    t0, n_tok = time.time(), 0
    with open(path, "wb") as f, tqdm(total=len(text), desc=f"encoding {desc}", unit="char", unit_scale=True,
                                     disable=None if verbose else True, leave=False) as bar:
        for ids, n_chars in tok.encode_chunks(text):
            np.asarray(ids, dtype=dtype).tofile(f)
            n_tok += len(ids)
            bar.update(n_chars)
    if verbose:
        dt = max(time.time() - t0, 1e-9)
        print(f"encoded {desc}: {len(text):,} chars -> {n_tok:,} tokens in {dt:.2f}s "
              f"({len(text) / dt / 1e6:.2f} M chars/s, {n_tok / dt / 1e6:.2f} M tokens/s)")
    return n_tok


def prepare_data(cfg, tokenizer=None, verbose=True):
    """(tokenizer, train ids, val ids, meta); the ids are read-only np.memmap arrays."""
    train_text, val_text = split_texts(cfg)
    tok = tokenizer or build_tokenizer(cfg, train_text, val_text)
    key = hashlib.sha256()
    for part in (train_text, "\x00split\x00", val_text, fingerprint(tok)):
        key.update(part.encode("utf-8"))
    name = os.path.splitext(os.path.basename(cfg.data_path))[0]
    cache = os.path.join(CACHE_ROOT, f"{name}-{tok.kind}-{key.hexdigest()[:12]}")
    meta_path = os.path.join(cache, "meta.json")
    if not os.path.isfile(meta_path):
        dtype = np.uint16 if tok.vocab_size <= 65536 else np.uint32
        meta = dict(data_path=cfg.data_path, val_path=cfg.val_path, val_fraction=cfg.val_fraction,
                    tokenizer=tok.kind, tokenizer_fingerprint=fingerprint(tok), dtype=np.dtype(dtype).name)
        os.makedirs(cache, exist_ok=True)
        remove_stale_temps(cache)  # a killed run's half-encoded split
        for split, text in (("train", train_text), ("val", val_text)):
            with atomic_path(os.path.join(cache, f"{split}.bin")) as tmp:
                meta[f"{split}_tokens"] = _encode_to_file(tok, text, tmp, dtype, split, verbose)
            meta[f"{split}_chars"] = len(text)
        with atomic_open(meta_path) as f:  # last: its presence means the cache is complete
            json.dump(meta, f, indent=1)
    with open(meta_path) as f:
        meta = json.load(f)
    train = np.memmap(os.path.join(cache, "train.bin"), dtype=meta["dtype"], mode="r")
    val = np.memmap(os.path.join(cache, "val.bin"), dtype=meta["dtype"], mode="r")
    meta["chars_per_token"] = meta["val_chars"] / max(meta["val_tokens"], 1)  # of the whole val split
    return tok, train, val, meta


SPLITS = dict(train="train", val="val", dev="dev (the first half of validation)",
              test="test (the second half of validation)")  # as a refusal names them


def split_ids(train_ids, val_ids, split, length=0):
    """The ids a split names, refused if they hold no window of `length` tokens. val's first half,
    dev, is what every choice reads (evals, best.pt, lever searches); the second, test, is what
    records report and no choice reads."""
    half = len(val_ids) // 2
    ids = {"train": train_ids, "val": val_ids, "dev": val_ids[:half], "test": val_ids[half:]}[split]
    if len(ids) < length + 1:
        raise UserError(f"the {SPLITS[split]} split has {len(ids):,} tokens, too few for one window ({length + 1:,} "
                        f"needed): use more data or a smaller --block_size")
    return ids


def chars_per_token(tok, windows):
    """Characters per token of the windows (N, L), exactly. Windows score equal token counts, so
    (mean nats/token) / this = summed ELBO / characters scored."""
    counts = torch.tensor(tok.char_counts(), dtype=torch.float64)
    return (counts[windows].sum() / windows.numel()).item()


def get_batch(ids, batch_size, length, generator, device):
    """Random windows of `length` tokens: (B, length) long tensor on device."""
    ix = torch.randint(len(ids) - length, (batch_size,), generator=generator).tolist()
    x = torch.from_numpy(np.stack([ids[i:i + length] for i in ix]).astype(np.int64))
    return x.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else x.to(device)


def fixed_windows(ids, n, length):
    """Up to n evenly spaced, disjoint windows (n', length): the se counts each window once."""
    n = max(1, min(n, (len(ids) - 1) // length))
    starts = np.linspace(0, len(ids) - length - 1, n).astype(np.int64)  # spacing >= length: disjoint
    return torch.from_numpy(np.stack([ids[s:s + length] for s in starts]).astype(np.int64))
