"""Train a byte-level BPE tokenizer (Hugging Face `tokenizers`) on a plain-text corpus.

  python scripts/train_tokenizer.py --input data/stories.txt \
      --output artifacts/tokenizer/tokenizer.json
  python scripts/train_tokenizer.py --input data/tinyshakespeare.txt \
      --output artifacts/tokenizer/shakespeare.json --vocab-size 1024

Stories split on "<|endoftext|>" (data.py's format). --vocab-size counts the 256 bytes and the
specials (0 "<|endoftext|>", 1 "[MASK]", which no text encodes to). Load: BPETokenizer.from_file.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils.cli import ArgParser, at_least, output  # noqa: E402
from utils.errors import run_cli  # noqa: E402
from utils.fileio import read_text  # noqa: E402
from utils.tokenizer import SPECIAL_TOKENS, save_tokenizer, split_stories, train_bpe  # noqa: E402


def main(argv):
    p = ArgParser(prog="scripts/train_tokenizer.py", description="Train a byte-level BPE tokenizer on a text corpus.")
    p.add_argument("--input", required=True, help="UTF-8 text, stories separated by <|endoftext|>")
    p.add_argument("--output", type=output, default="artifacts/tokenizer/tokenizer.json",
                   help="the tokenizer.json to write (train.py's --tokenizer_path)")
    # the trainer reserves memory by vocab size (2**31 aborts); 2**20 is past any use here
    p.add_argument("--vocab-size", type=at_least(256 + len(SPECIAL_TOKENS), "256 bytes + the special tokens",
                                                 most=2 ** 20), default=2048,
                   help="total vocab size, special tokens included (at most 2**20)")
    p.add_argument("--min-frequency", type=at_least(1), default=2, help="minimum pair count for a merge")
    args = p.parse_args(argv)  # an --output that may not be replaced fails here, before slow work
    text = read_text(args.input, "--input", "make one with scripts/data.py", allow_empty=False, newline="")
    stories = split_stories(text)
    mb = len(text.encode("utf-8")) / 1e6
    t0 = time.time()
    tok = train_bpe(stories, args.vocab_size, args.min_frequency, show_progress=sys.stderr.isatty(),
                    length=len(stories))
    t_train = time.time() - t0
    save_tokenizer(tok, args.output, overwrite=args.overwrite)
    t0 = time.time()
    n_tokens = len(tok.encode(text))
    t_enc = time.time() - t0
    if tok.vocab_size < args.vocab_size:
        print(f"note: the corpus only supports {tok.vocab_size} tokens (< --vocab-size {args.vocab_size}) "
              f"at --min-frequency {args.min_frequency}", file=sys.stderr)
    print(f"trained on {len(stories):,} {'story' if len(stories) == 1 else 'stories'}, {len(text):,} characters "
          f"({mb:.2f} MB) in {t_train:.2f}s ({mb / max(t_train, 1e-9):.1f} MB/s)")
    print(f"vocab size {tok.vocab_size} (<|endoftext|>={tok.eot_id}, [MASK]={tok.mask_id}); {n_tokens:,} tokens, "
          f"{len(text) / max(n_tokens, 1):.2f} chars/token; encode {mb / max(t_enc, 1e-9):.1f} MB/s")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    run_cli(main)
