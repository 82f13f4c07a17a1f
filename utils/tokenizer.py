"""Tokenizers with a [MASK] token: characters or byte-level BPE (scripts/train_tokenizer.py).
Both store as plain values (`state()`) in every checkpoint.

BPE id 0, "<|endoftext|>", separates stories (an added token). Id 1, "[MASK]", is not added: added
tokens match in raw text first, so a user's "[MASK]" would become the mask.

    tok = BPETokenizer.from_file("artifacts/tokenizer/tokenizer.json")
    tok = CharTokenizer(sorted(set(text)))  # or a token a character
    python scripts/train_tokenizer.py --input data/tinystories_train_head.txt --output t.json
"""
import hashlib
import json
import os
import re
import unicodedata
from itertools import groupby

from utils.errors import UserError
from utils.fileio import atomic_open, check_output

EOT_TOKEN = "<|endoftext|>"
MASK_TOKEN = "[MASK]"
SPECIAL_TOKENS = [EOT_TOKEN, MASK_TOKEN]  # ids 0 and 1
RETRAIN = "retrain it with scripts/train_tokenizer.py"


class CharTokenizer:
    kind = "char"

    def __init__(self, chars):
        self.chars = list(chars)
        self.stoi = {c: i for i, c in enumerate(self.chars)}
        self.mask_id = len(self.chars)  # the last id (66 on Shakespeare)
        self.vocab_size = len(self.chars) + 1

    def encode(self, text):
        unknown = sorted(set(text) - self.stoi.keys())
        if unknown:
            shown = " ".join(repr(c) for c in unknown[:10])
            raise UserError(f"{len(unknown)} character(s) not in the model's vocabulary: {shown}; "
                            f"remove them (the vocab is the training text's characters)")
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

    def __init__(self, tok):  # a tokenizers.Tokenizer that passed check_specials
        self.tok = tok
        self.eot_id, self.mask_id = tok.token_to_id(EOT_TOKEN), tok.token_to_id(MASK_TOKEN)
        self.vocab_size = tok.get_vocab_size()  # [MASK] and <|endoftext|> included

    @classmethod
    def from_json(cls, text, where="the checkpoint's tokenizer"):
        from tokenizers import Tokenizer  # imported lazily: char runs need no `tokenizers`
        try:
            tok = Tokenizer.from_str(text)
        except Exception as e:
            raise UserError(f"cannot read {where} ({type(e).__name__}): it was not written by "
                            f"scripts/train_tokenizer.py") from None
        return cls(check_specials(tok, where))

    @classmethod
    def from_file(cls, path, text="data/stories.txt"):
        """A tokenizer.json from scripts/train_tokenizer.py; if missing, say how to make one."""
        from tokenizers import Tokenizer
        if not os.path.isfile(path):
            raise UserError(f"tokenizer not found: {path}: train one with "
                            f"python scripts/train_tokenizer.py --input {text} --output {path}")
        try:
            tok = Tokenizer.from_file(path)
        except Exception as e:
            raise UserError(f"cannot read tokenizer {path} ({type(e).__name__}): {RETRAIN}") from None
        return cls(check_specials(tok, path))

    def encode(self, text):
        """tok.encode(text).ids, multi-threaded (see encode_chunks)."""
        return [i for ids, _ in self.encode_chunks(text) for i in ids]

    def encode_chunks(self, text, chunk_chars=1 << 20):
        """(ids, n_chars) per ~chunk_chars chunk, in parallel; together: tok.encode(text).ids."""
        batch, n = [], 0
        for piece in split_for_encoding(text):
            batch.append(piece)
            n += len(piece)
            if n >= chunk_chars:
                yield [i for e in self.tok.encode_batch(batch, add_special_tokens=False) for i in e.ids], n
                batch, n = [], 0
        if batch:
            yield [i for e in self.tok.encode_batch(batch, add_special_tokens=False) for i in e.ids], n

    def token_bytes(self):
        """The raw bytes of each id; special tokens give their text's UTF-8."""
        sym = symbol_to_byte()
        special = {t.content for t in self.tok.get_added_tokens_decoder().values()}
        tokens = [self.tok.id_to_token(i) for i in range(self.vocab_size)]
        return [s.encode("utf-8") if s in special or s == MASK_TOKEN else bytes(sym[c] for c in s) for s in tokens]

    def char_counts(self):
        """Characters per id: its UTF-8 lead bytes (additive: a cut character counts once)."""
        counts = [sum((b & 0xC0) != 0x80 for b in bs) for bs in self.token_bytes()]
        counts[self.mask_id] = 0
        return counts

    def decode(self, ids, mask="_"):
        # runs between masks decode whole, keeping byte-level merges intact
        runs = groupby((int(i) for i in ids), key=lambda i: i == self.mask_id)
        return "".join(mask * len(list(run)) if masked else self.tok.decode(list(run), skip_special_tokens=False)
                       for masked, run in runs)

    def token_text(self, i):
        return None if i == self.mask_id else self.tok.decode([int(i)], skip_special_tokens=False)

    def state(self):
        return {"kind": "bpe", "json": self.tok.to_str()}


def train_bpe(texts_iter, vocab_size=2048, min_frequency=2, show_progress=False, length=None):
    """A byte-level BPETokenizer trained on texts split on "<|endoftext|>". vocab_size counts bytes
    and specials; fewer only if no pair is seen min_frequency times."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE(ignore_merges=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=show_progress)
    tok.train_from_iterator((p for text in texts_iter for p in split_stories(text)), trainer=trainer, length=length)
    spec = json.loads(tok.to_str())  # the trainer adds every special; [MASK] must not be (see top)
    spec["added_tokens"] = [a for a in spec["added_tokens"] if a["content"] != MASK_TOKEN]
    return BPETokenizer.from_json(json.dumps(spec), "the trained tokenizer")


def save_tokenizer(tok, path, overwrite=False):
    check_output(path, overwrite)
    with atomic_open(path) as f:
        f.write(tok.tok.to_str(pretty=True))


def check_specials(tok, where):
    """tok, if <|endoftext|> is an added token and [MASK] in the vocab but not added."""
    if tok.token_to_id(EOT_TOKEN) is None or tok.token_to_id(MASK_TOKEN) is None:
        raise UserError(f"{where} lacks {EOT_TOKEN} or {MASK_TOKEN}: {RETRAIN}")
    added = {t.content for t in tok.get_added_tokens_decoder().values()}
    if MASK_TOKEN in added:
        raise UserError(f"{where} matches the literal text {MASK_TOKEN} as the mask token: {RETRAIN}")
    if EOT_TOKEN not in added:
        raise UserError(f"{where} does not treat {EOT_TOKEN} as a special token: {RETRAIN}")
    return tok


def split_stories(text):
    return [p for p in text.split(EOT_TOKEN) if p.strip()]


# No BPE token crosses a " " or "\n" before printable ASCII: GPT-2's pre-tokenizer (Radford et al.
# 2019) splits "  word" into " " and " word", and no pre-token has whitespace after a non-space.
# Fuzzed in tests/test_bpe.py. ASCII only: Rust may differ on Unicode whitespace.
_SAFE_CUT = re.compile(r"[ \n](?=[!-~])")


def split_for_encoding(text, piece_chars=1 << 12):
    """Pieces that encode apart to exactly the whole's ids: "<|endoftext|>" alone (added tokens
    match before pre-tokenization), and a cut at the first safe point past piece_chars."""
    pos = 0
    while pos < len(text):
        k = text.find(EOT_TOKEN, pos)
        end = len(text) if k < 0 else k
        while end - pos > piece_chars:
            cut = _SAFE_CUT.search(text, pos + piece_chars, end)
            if cut is None:  # no safe point before the next EOT: the rest goes whole
                break
            yield text[pos:cut.start()]
            pos = cut.start()
        if pos < end:
            yield text[pos:end]
        if k < 0:
            return
        yield EOT_TOKEN
        pos = k + len(EOT_TOKEN)


def symbol_to_byte():
    """GPT-2's byte alphabet: printable Latin-1 bytes as themselves, the other 68 chr(256 + k)."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table = {chr(b): b for b in printable}
    for k, b in enumerate(b for b in range(256) if chr(b) not in table):
        table[chr(256 + k)] = b
    return table


def fingerprint(tokenizer):
    """A short hash of the tokenizer's definition, recorded by checkpoints and data caches."""
    blob = json.dumps(tokenizer.state(), sort_keys=True).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]


def normalize_prompt(tok, prompt):
    """A BPE prompt NFC-normalised, trailing spaces/tabs cut: alone, a space is a rare BPE token."""
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
