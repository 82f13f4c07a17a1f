"""Byte-level BPE tokenizer (Hugging Face `tokenizers`) with two special tokens:

  id 0  "<|endoftext|>"  story separator. An *added special token*: the literal text
                         "<|endoftext|>" in input encodes to this one id.
  id 1  "[MASK]"         the diffusion mask. In the vocabulary but deliberately NOT an
                         added token, so encode() can never produce it (see below).

Mask-token design: `tokenizers` matches the content of every added token in the raw
input before anything else, so if "[MASK]" were an added token, a user text containing
"[MASK]" would encode to the mask id and a masked diffusion model could not tell it
from a real mask. Here "[MASK]" lives only in the BPE model's vocab (id 1) with no merge
leading to it, and the byte-level pre-tokenizer always splits "[MASK]" into "[", "MASK",
"]" (punctuation and letters go to different pre-tokens), so no input text can ever
encode to id 1. token_to_id("[MASK]") == 1 and decode([1]) == "[MASK]" still work, and
the mask id is only ever placed by model code. Caveats: decode(..., skip_special_tokens=True)
drops "<|endoftext|>" but keeps "[MASK]"; do not wrap this file in a transformers
tokenizer with mask_token="[MASK]" (that would add it as a matched token again).

Any byte sequence is encodable (the 256 byte symbols are in the initial alphabet), and
decode(encode(text), skip_special_tokens=False) == text byte for byte (use decode() here).

    from utils.bpe import train_bpe, save_tokenizer, load_tokenizer, encode_text, decode
    tok = train_bpe(stories, vocab_size=2048, min_frequency=2)
    save_tokenizer(tok, "artifacts/tokenizer/tokenizer.json")
    tok = load_tokenizer("artifacts/tokenizer/tokenizer.json")
    ids = encode_text(tok, open("data/stories.txt").read()); assert decode(tok, ids) == text
    for ids, n_chars in encode_chunks(tok, text): ...   # the same ids, ~1M characters at a time
    sum(char_counts(tok)[i] for i in ids) == len(text)   # characters per token, for bits/char
"""
import json
import os
import re

from utils.errors import UserError
from utils.fileio import atomic_open

EOT_TOKEN = "<|endoftext|>"
MASK_TOKEN = "[MASK]"
SPECIAL_TOKENS = [EOT_TOKEN, MASK_TOKEN]  # ids 0 and 1
MIN_VOCAB_SIZE = 256 + len(SPECIAL_TOKENS)  # byte alphabet + specials, no merges


def split_stories(text):
    """Split text on "<|endoftext|>" into pieces, newlines kept, whitespace-only pieces dropped."""
    return [p for p in text.split(EOT_TOKEN) if p.strip()]


def _pieces(texts_iter):
    for text in texts_iter:
        if EOT_TOKEN in text:
            yield from split_stories(text)
        elif text.strip():
            yield text


def _drop_mask_from_added_tokens(tok):
    from tokenizers import Tokenizer
    spec = json.loads(tok.to_str())
    spec["added_tokens"] = [a for a in spec["added_tokens"] if a["content"] != MASK_TOKEN]
    return Tokenizer.from_str(json.dumps(spec))


def train_bpe(texts_iter, vocab_size=2048, min_frequency=2, show_progress=False, length=None):
    """Train a byte-level BPE tokenizer on an iterable of texts (stories).

    vocab_size counts everything: the 2 special tokens, the 256 byte symbols and the
    merges (the result is smaller only if the corpus runs out of pairs seen at least
    min_frequency times). Texts that contain "<|endoftext|>" are split on it, so the
    separator is never learned as ordinary text. Returns a tokenizers.Tokenizer.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    if vocab_size < MIN_VOCAB_SIZE:
        raise UserError(f"--vocab-size must be at least {MIN_VOCAB_SIZE} (256 bytes + "
                        f"{len(SPECIAL_TOKENS)} special tokens), got {vocab_size}")
    if min_frequency < 1:
        raise UserError(f"--min-frequency must be >= 1, got {min_frequency}")
    tok = Tokenizer(models.BPE(ignore_merges=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=show_progress)
    tok.train_from_iterator(_pieces(texts_iter), trainer=trainer, length=length)
    tok = _drop_mask_from_added_tokens(tok)
    _check(tok, "the trained tokenizer")
    return tok


def _check(tok, where):
    if tok.token_to_id(EOT_TOKEN) is None or tok.token_to_id(MASK_TOKEN) is None:
        raise UserError(f"{where} lacks {EOT_TOKEN} or {MASK_TOKEN}: retrain it with scripts/train_tokenizer.py")
    added = {t.content for t in tok.get_added_tokens_decoder().values()}
    if MASK_TOKEN in added:
        raise UserError(f"{where} matches the literal text {MASK_TOKEN} as the mask token: "
                        f"retrain it with scripts/train_tokenizer.py")
    if EOT_TOKEN not in added:
        raise UserError(f"{where} does not treat {EOT_TOKEN} as a special token: "
                        f"retrain it with scripts/train_tokenizer.py")


def save_tokenizer(tok, path, force=False):
    """Write tokenizer JSON atomically; parent dirs created; refuse to overwrite without force."""
    if os.path.isdir(path):
        raise UserError(f"--output {path} is a directory: pass a file path such as {path}/tokenizer.json")
    if os.path.exists(path) and not force:
        raise UserError(f"{path} already exists: pass --force to overwrite it")
    with atomic_open(path) as f:
        f.write(tok.to_str(pretty=True))


def load_tokenizer(path):
    """Load a tokenizer.json written by save_tokenizer (UserError if missing or not ours)."""
    from tokenizers import Tokenizer
    if not os.path.isfile(path):
        raise UserError(f"tokenizer not found: {path}: train one with "
                        f"python scripts/train_tokenizer.py --input data/stories.txt --output {path}")
    try:
        tok = Tokenizer.from_file(path)
    except Exception as e:
        raise UserError(f"cannot read tokenizer {path} ({type(e).__name__}): retrain it with "
                        f"scripts/train_tokenizer.py") from None
    _check(tok, path)
    return tok


def tokenizer_from_str(text, where="the checkpoint's tokenizer"):
    """load_tokenizer for the JSON text a checkpoint stores (same checks)."""
    from tokenizers import Tokenizer
    try:
        tok = Tokenizer.from_str(text)
    except Exception as e:
        raise UserError(f"cannot read {where} ({type(e).__name__}): it was not written by "
                        f"scripts/train_tokenizer.py") from None
    _check(tok, where)
    return tok


def eot_id(tok):
    return tok.token_to_id(EOT_TOKEN)


def mask_id(tok):
    return tok.token_to_id(MASK_TOKEN)


# A byte-level pre-token always starts at a " " or "\n" followed by a printable ASCII character:
# GPT-2's pattern (Radford et al. 2019) cuts a whitespace run W before a non-space into W[:-1] and
# W[-1] + " word" (or W[-1] = "\n" alone), and nothing follows a non-space with whitespace in one
# pre-token, so no BPE token crosses that point (fuzz-tested in tests/test_bpe.py). ASCII only:
# Python's and the Rust regex's ideas of Unicode whitespace may differ.
_SAFE_CUT = re.compile(r"[ \n](?=[!-~])")


def split_for_encoding(text, piece_chars=1 << 12):
    """Yield pieces of text that encode independently to exactly the ids of the whole text:
    "<|endoftext|>" on its own (added tokens are matched before pre-tokenization, so tokens
    never cross one), and, inside longer stretches, a cut at the first safe point (above) after
    each piece_chars characters. Concatenated, the pieces are the text."""
    pos = 0
    while pos < len(text):
        k = text.find(EOT_TOKEN, pos)
        end = len(text) if k < 0 else k
        while end - pos > piece_chars:
            m = _SAFE_CUT.search(text, pos + piece_chars, end)
            if m is None:
                break
            yield text[pos:m.start()]
            pos = m.start()
        if pos < end:
            yield text[pos:end]
        if k < 0:
            return
        yield EOT_TOKEN
        pos = k + len(EOT_TOKEN)


def encode_chunks(tok, text, chunk_chars=1 << 20):
    """Yield (ids, n_chars) for consecutive chunks of about chunk_chars characters; each chunk's
    pieces go through encode_batch (parallel in Rust). The concatenated ids == tok.encode(text).ids."""
    batch, n = [], 0
    for piece in split_for_encoding(text):
        batch.append(piece)
        n += len(piece)
        if n >= chunk_chars:
            yield [i for e in tok.encode_batch(batch, add_special_tokens=False) for i in e.ids], n
            batch, n = [], 0
    if batch:
        yield [i for e in tok.encode_batch(batch, add_special_tokens=False) for i in e.ids], n


def encode_text(tok, text):
    """tok.encode(text).ids for a long text, but multi-threaded (see encode_chunks). A list of ints."""
    return [i for ids, _ in encode_chunks(tok, text) for i in ids]


def _symbol_to_byte():
    """The byte-level alphabet (GPT-2, Radford et al. 2019): the 188 printable Latin-1 bytes stand
    for themselves; the other 68 (controls, space, 0x7F-0xA0, 0xAD) map, in byte order, to chr(256 + k)."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table = {chr(b): b for b in printable}
    for k, b in enumerate(b for b in range(256) if chr(b) not in table):
        table[chr(256 + k)] = b
    return table


def token_bytes(tok):
    """The raw bytes of every id (a list indexed by id); special tokens give their text's UTF-8."""
    sym = _symbol_to_byte()
    special = {t.content for t in tok.get_added_tokens_decoder().values()}
    out = []
    for i in range(tok.get_vocab_size()):
        s = tok.id_to_token(i)
        out.append(s.encode("utf-8") if s in special or s == MASK_TOKEN else bytes(sym[c] for c in s))
    return out


def char_counts(tok):
    """Characters each id adds to decoded text: its bytes that start a UTF-8 character (not
    0b10xxxxxx). Additive, so a window that cuts a multi-byte character still counts it once,
    and the counts of encode(text) sum to len(text) exactly. [MASK] counts 0, "<|endoftext|>" 13."""
    counts = [sum((b & 0xC0) != 0x80 for b in bs) for bs in token_bytes(tok)]
    counts[mask_id(tok)] = 0
    return counts


def decode(tok, ids):
    """Inverse of encode: keeps special tokens, so "<|endoftext|>" round-trips."""
    return tok.decode(list(ids), skip_special_tokens=False)
