"""Train a byte-level BPE tokenizer (Hugging Face `tokenizers`) on a plain-text corpus.

Run from the repo root:

  python scripts/train_tokenizer.py --input data/stories.txt --output artifacts/tokenizer/tokenizer.json
  python scripts/train_tokenizer.py --input data/tinyshakespeare.txt --output artifacts/tokenizer/shakespeare.json --vocab-size 1024

The input is split into stories on "<|endoftext|>" (the format scripts/data.py writes).
--vocab-size counts the two special tokens (id 0 "<|endoftext|>", id 1 "[MASK]") and
the 256 byte symbols. "[MASK]" is never produced by encoding text, not even the
literal string "[MASK]" (see utils/tokenizer.py). Load the result with
utils.tokenizer.BPETokenizer.from_file(path).
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils.errors import ArgParser, UserError, run_cli  # noqa: E402
from utils.fileio import atomic_open, check_output, read_text  # noqa: E402
from utils.tokenizer import EOT_TOKEN, MASK_TOKEN, SPECIAL_TOKENS, BPETokenizer, check_specials, split_stories  # noqa: E402

MIN_VOCAB_SIZE = 256 + len(SPECIAL_TOKENS)  # byte alphabet + specials, no merges


def _pieces(texts_iter):
    for text in texts_iter:
        if EOT_TOKEN in text:
            yield from split_stories(text)
        elif text.strip():
            yield text


def train_bpe(texts_iter, vocab_size=2048, min_frequency=2, show_progress=False, length=None):
    """Train a byte-level BPE tokenizer on an iterable of texts (stories); returns a BPETokenizer.

    The result has fewer than vocab_size tokens (specials and bytes included) only if the corpus runs
    out of pairs seen min_frequency times. Texts are split on "<|endoftext|>", never learned as text.
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
    # the trainer adds every special token as a matched one: [MASK] must not be (see utils/tokenizer.py)
    spec = json.loads(tok.to_str())
    spec["added_tokens"] = [a for a in spec["added_tokens"] if a["content"] != MASK_TOKEN]
    return BPETokenizer(check_specials(Tokenizer.from_str(json.dumps(spec)), "the trained tokenizer"))


def save_tokenizer(tok, path, force=False):
    """Write the tokenizer JSON atomically; parent dirs created; refuse to overwrite without force."""
    check_output(path, force)
    with atomic_open(path) as f:
        f.write(tok.tok.to_str(pretty=True))


def parse_args(argv):
    p = ArgParser(prog="scripts/train_tokenizer.py", description="Train a byte-level BPE tokenizer on a text corpus.")
    p.add_argument("--input", required=True, help="UTF-8 text, stories separated by <|endoftext|>")
    p.add_argument("--output", default="artifacts/tokenizer/tokenizer.json", help="tokenizer.json path")
    p.add_argument("--vocab-size", type=int, default=2048, help="total vocab size, special tokens included")
    p.add_argument("--min-frequency", type=int, default=2, help="minimum pair count for a merge")
    p.add_argument("--force", action="store_true", help="overwrite --output if it exists")
    return p.parse_args(argv)


def main(argv):
    args = parse_args(argv)
    check_output(args.output, args.force)  # fail before any slow work
    text = read_text(args.input, "--input", "make one with scripts/data.py", allow_empty=False, newline="")
    stories = split_stories(text)
    mb = len(text.encode("utf-8")) / 1e6

    t0 = time.time()
    tok = train_bpe(stories, args.vocab_size, args.min_frequency, show_progress=sys.stderr.isatty(), length=len(stories))
    t_train = time.time() - t0
    save_tokenizer(tok, args.output, force=args.force)

    t0 = time.time()
    n_tokens = len(tok.encode(text))
    t_enc = time.time() - t0

    if tok.vocab_size < args.vocab_size:
        print(f"note: the corpus only supports {tok.vocab_size} tokens (< --vocab-size {args.vocab_size}) "
              f"at --min-frequency {args.min_frequency}", file=sys.stderr)
    print(f"trained on {len(stories):,} {'story' if len(stories) == 1 else 'stories'}, {len(text):,} characters ({mb:.2f} MB) "
          f"in {t_train:.2f}s ({mb / max(t_train, 1e-9):.1f} MB/s)")
    print(f"vocab size {tok.vocab_size} (<|endoftext|>={tok.eot_id}, [MASK]={tok.mask_id}); "
          f"{n_tokens:,} tokens, {len(text) / max(n_tokens, 1):.2f} chars/token; "
          f"encode {mb / max(t_enc, 1e-9):.1f} MB/s")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    run_cli(main)
