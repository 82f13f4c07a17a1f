"""Tokenizers with a [MASK] token: characters (vocab read off the data) or byte-level BPE.

Both serialise to plain Python values (`state()`), stored in every checkpoint, so a
checkpoint is self-contained and loads with torch.load(weights_only=True). Both offer
encode / encode_chunks (data preparation) / decode (masks shown as "_") / token_text (one
token, for traces) / char_counts (characters per id, for bits/char).

    tok = BPETokenizer.from_file("artifacts/tokenizer/tokenizer.json")   # or CharTokenizer.from_text(text)
    ids = tok.encode("Once upon a time"); tok.decode(ids); fingerprint(tok)
"""
import hashlib
import json
import unicodedata

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

    def encode_chunks(self, text, chunk_chars=1 << 20):
        for i in range(0, len(text), chunk_chars):
            piece = text[i:i + chunk_chars]
            yield self.encode(piece), len(piece)

    def char_counts(self):
        return [1] * len(self.chars) + [0]  # one character per token; [MASK] none

    def decode(self, ids, mask="_"):
        return "".join(self.chars[i] if i < len(self.chars) else mask for i in ids)

    def token_text(self, i):
        return self.chars[i] if i < len(self.chars) else None

    def state(self):
        return {"kind": "char", "chars": "".join(self.chars)}


class BPETokenizer:
    kind = "bpe"

    def __init__(self, tok):
        from utils import bpe  # imported lazily: char runs need no `tokenizers`
        self.tok, self._bpe = tok, bpe
        self.mask_id = bpe.mask_id(tok)
        self.vocab_size = tok.get_vocab_size()  # [MASK] and <|endoftext|> included

    @classmethod
    def from_json(cls, text):
        from utils.bpe import tokenizer_from_str
        return cls(tokenizer_from_str(text))

    @classmethod
    def from_file(cls, path):
        from utils.bpe import load_tokenizer  # UserError if missing, unreadable or without our specials
        return cls(load_tokenizer(path))

    def encode(self, text):
        return self._bpe.encode_text(self.tok, text)  # == tok.encode(text).ids, multi-threaded

    def encode_batch(self, texts):
        return [e.ids for e in self.tok.encode_batch(list(texts), add_special_tokens=False)]

    def encode_chunks(self, text, chunk_chars=1 << 20):
        """(ids, n_chars) per ~chunk_chars of text (for data preparation with a progress bar)."""
        return self._bpe.encode_chunks(self.tok, text, chunk_chars)

    def char_counts(self):
        return self._bpe.char_counts(self.tok)

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


def normalize_prompt(tok, prompt):
    """BPE prompts are NFC-normalised and lose trailing spaces/tabs (byte-level BPE attaches a space
    to the word after it, so a trailing " " would be a token the model rarely saw). Char prompts are
    kept as typed: every character is a token. A prompt of only whitespace is refused for BPE."""
    if tok.kind != "bpe" or not prompt:
        return prompt
    out = unicodedata.normalize("NFC", prompt).rstrip(" \t")
    if not out.strip():
        raise UserError(f"the prompt {prompt!r} is empty after normalisation (whitespace only): "
                        f"give some text, or leave --prompt out for an unconditional sample")
    return out


def tokenizer_from_state(state):
    if state.get("kind") == "char":
        return CharTokenizer(state["chars"])
    if state.get("kind") == "bpe":
        return BPETokenizer.from_json(state["json"])
    raise UserError("the checkpoint's tokenizer record is unreadable: it was not written by micro-dllm")
