"""Train a byte-level BPE tokenizer (Hugging Face `tokenizers`) on a plain-text corpus.

Run from the repo root:

  python scripts/train_tokenizer.py --input data/stories.txt --output artifacts/tokenizer/tokenizer.json
  python scripts/train_tokenizer.py --input ../shared/data/tinystories_train_head.txt --output artifacts/tokenizer/tokenizer.json --vocab-size 4096 --force

The input is split into stories on "<|endoftext|>" (the format scripts/data.py writes).
--vocab-size counts the two special tokens (id 0 "<|endoftext|>", id 1 "[MASK]") and
the 256 byte symbols. "[MASK]" is never produced by encoding text, not even the
literal string "[MASK]" (see utils/bpe.py). Load the result with
utils.bpe.load_tokenizer(path).
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils.errors import ArgParser, UserError, run_cli  # noqa: E402


def parse_args(argv):
    p = ArgParser(prog="scripts/train_tokenizer.py", description="Train a byte-level BPE tokenizer on a text corpus.")
    p.add_argument("--input", required=True, help="UTF-8 text, stories separated by <|endoftext|>")
    p.add_argument("--output", default="artifacts/tokenizer/tokenizer.json", help="tokenizer.json path")
    p.add_argument("--vocab-size", type=int, default=2048, help="total vocab size, special tokens included")
    p.add_argument("--min-frequency", type=int, default=2, help="minimum pair count for a merge")
    p.add_argument("--force", action="store_true", help="overwrite --output if it exists")
    return p.parse_args(argv)


def read_text(path):
    if not os.path.isfile(path):
        raise UserError(f"input file not found: {path}: make one with scripts/data.py or check --input")
    try:
        with open(path, encoding="utf-8", newline="") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}): convert it to UTF-8") from None
    if not text.strip():
        raise UserError(f"input file is empty: {path}: pass a file with text in it")
    return text


def main(argv):
    args = parse_args(argv)
    from utils import bpe

    if args.vocab_size < bpe.MIN_VOCAB_SIZE:
        raise UserError(f"--vocab-size must be at least {bpe.MIN_VOCAB_SIZE} (256 bytes + 2 special tokens), "
                        f"got {args.vocab_size}")
    if args.min_frequency < 1:
        raise UserError(f"--min-frequency must be >= 1, got {args.min_frequency}")
    if os.path.isdir(args.output):
        raise UserError(f"--output {args.output} is a directory: pass a file path such as "
                        f"{os.path.join(args.output, 'tokenizer.json')}")
    if os.path.exists(args.output) and not args.force:
        raise UserError(f"{args.output} already exists: pass --force to overwrite it")

    text = read_text(args.input)
    stories = bpe.split_stories(text)
    mb = len(text.encode("utf-8")) / 1e6

    t0 = time.time()
    tok = bpe.train_bpe(stories, args.vocab_size, args.min_frequency,
                        show_progress=sys.stderr.isatty(), length=len(stories))
    t_train = time.time() - t0
    bpe.save_tokenizer(tok, args.output, force=args.force)

    t0 = time.time()
    n_tokens = len(bpe.encode_text(tok, text))
    t_enc = time.time() - t0

    vocab = tok.get_vocab_size()
    if vocab < args.vocab_size:
        print(f"note: the corpus only supports {vocab} tokens (< --vocab-size {args.vocab_size}) "
              f"at --min-frequency {args.min_frequency}", file=sys.stderr)
    print(f"trained on {len(stories):,} {'story' if len(stories) == 1 else 'stories'}, {len(text):,} characters ({mb:.2f} MB) "
          f"in {t_train:.2f}s ({mb / max(t_train, 1e-9):.1f} MB/s)")
    print(f"vocab size {vocab} (<|endoftext|>={bpe.eot_id(tok)}, [MASK]={bpe.mask_id(tok)}); "
          f"{n_tokens:,} tokens, {len(text) / max(n_tokens, 1):.2f} chars/token; "
          f"encode {mb / max(t_enc, 1e-9):.1f} MB/s")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    run_cli(main)
