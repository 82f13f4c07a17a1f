"""Tokenizers with a [MASK] token: characters (vocab read off the data) or byte-level BPE.

Both serialise to plain Python values (`state()`), stored in every checkpoint, so a
checkpoint is self-contained and loads with torch.load(weights_only=True).
"""
import hashlib
import json
import os

from utils.errors import UserError


class CharTokenizer:
    kind = "char"

    def __init__(self, chars):
        self.chars = list(chars)
        self.stoi = {c: i for i, c in enumerate(self.chars)}
        self.mask_id = len(self.chars)  # [MASK] is the last id: vocab 65 chars + 1 = 66 on Shakespeare
        self.vocab_size = len(self.chars) + 1

    @classmethod
    def from_text(cls, text):
        return cls(sorted(set(text)))

    def encode(self, text):
        unknown = sorted(set(text) - self.stoi.keys())
        if unknown:
            shown = " ".join(repr(c) for c in unknown[:10])
            raise UserError(f"{len(unknown)} character(s) not in the model's vocabulary: {shown}; remove them (the vocab is the training text's characters)")
        return [self.stoi[c] for c in text]

    def decode(self, ids, mask="_"):
        return "".join(self.chars[i] if i < len(self.chars) else mask for i in ids)

    def token_text(self, i):
        return self.chars[i] if i < len(self.chars) else None

    def state(self):
        return {"kind": "char", "chars": "".join(self.chars)}


class BPETokenizer:
    kind = "bpe"

    def __init__(self, tok):
        from utils.bpe import MASK_TOKEN  # imported lazily: char runs need no `tokenizers`
        self.tok = tok
        self.mask_id = tok.token_to_id(MASK_TOKEN)
        if self.mask_id is None:
            raise UserError(f"the tokenizer has no {MASK_TOKEN} token: train it with scripts/train_tokenizer.py")
        self.vocab_size = tok.get_vocab_size()

    @classmethod
    def from_json(cls, text):
        from tokenizers import Tokenizer
        try:
            return cls(Tokenizer.from_str(text))
        except Exception as e:
            raise UserError(f"could not read the BPE tokenizer ({type(e).__name__}): retrain it with scripts/train_tokenizer.py")

    @classmethod
    def from_file(cls, path):
        if not os.path.isfile(path):
            raise UserError(f"tokenizer file {path} not found: make it with python scripts/train_tokenizer.py --input DATA.txt --output {path}")
        with open(path, encoding="utf-8") as f:
            return cls.from_json(f.read())

    def encode(self, text):
        return self.tok.encode(text).ids

    def encode_batch(self, texts):
        return [e.ids for e in self.tok.encode_batch(texts)]

    def decode(self, ids, mask="_"):
        out, run = [], []
        for i in ids:  # decode runs between masks so byte-level merges stay intact
            if i == self.mask_id:
                out.append(self.tok.decode(run, skip_special_tokens=False)); run = []
                out.append(mask)
            else:
                run.append(int(i))
        out.append(self.tok.decode(run, skip_special_tokens=False))
        return "".join(out)

    def token_text(self, i):
        return None if i == self.mask_id else self.tok.decode([int(i)], skip_special_tokens=False)

    def state(self):
        return {"kind": "bpe", "json": self.tok.to_str()}


def fingerprint(tokenizer):
    """A short hash of the tokenizer's full definition: checkpoints and data caches record it."""
    blob = json.dumps(tokenizer.state(), sort_keys=True).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]


def tokenizer_from_state(state):
    if state.get("kind") == "char":
        return CharTokenizer(state["chars"])
    if state.get("kind") == "bpe":
        return BPETokenizer.from_json(state["json"])
    raise UserError("the checkpoint's tokenizer record is unreadable: it was not written by micro-dllm")
