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
"""
import json
import os
import tempfile

from utils.errors import UserError

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
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=parent, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(tok.to_str(pretty=True))
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


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


def eot_id(tok):
    return tok.token_to_id(EOT_TOKEN)


def mask_id(tok):
    return tok.token_to_id(MASK_TOKEN)


def encode_text(tok, text):
    """tok.encode(text).ids for a long text, but multi-threaded: the text is cut at
    "<|endoftext|>" (where tokenization restarts anyway) and the pieces go through
    encode_batch. Returns a list of ints."""
    pieces = text.split(EOT_TOKEN)
    eot = eot_id(tok)
    ids = []
    for i, enc in enumerate(tok.encode_batch(pieces, add_special_tokens=False)):
        if i:
            ids.append(eot)
        ids.extend(enc.ids)
    return ids


def decode(tok, ids):
    """Inverse of encode: keeps special tokens, so "<|endoftext|>" round-trips."""
    return tok.decode(list(ids), skip_special_tokens=False)
