"""Make a plain-text training corpus: stories joined by "\\n<|endoftext|>\\n" (the format of
TinyStories-train.txt), or a single document written unchanged (Tiny Shakespeare).

  # 10,000 random TinyStories, streamed from the Hugging Face hub (never downloaded whole)
  python scripts/data.py --dataset roneneldan/TinyStories --split train --num-stories 10000 \
      --seed 1337 --output data/stories.txt
  # any streaming text dataset (--config optional)
  python scripts/data.py --dataset HuggingFaceFW/fineweb-edu --config sample-10BT \
      --text-field text --num-stories 5000 --output data/fineweb.txt

  # offline: local files (.txt, .jsonl, .json, .parquet, .csv)
  python scripts/data.py --input-file TinyStories-train.txt --num-stories 1000 --seed 1337 \
      --output data/stories.txt
  python scripts/data.py --input-file my_paragraphs.txt --split-blank-lines \
      --output data/paragraphs.txt
  python scripts/data.py --input-file my_corpus.jsonl --text-field content --output data/mine.txt

A local .txt is split on "<|endoftext|>", else on blank lines with --split-blank-lines, else kept
whole. --num-stories N samples N stories (--seed); 0 keeps all, in order.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils.cli import ArgParser, at_least, output, seed, typed  # noqa: E402
from utils.errors import UserError, run_cli  # noqa: E402


def parse_args(argv):
    p = ArgParser(prog="scripts/data.py",
                  description="Make a plain-text corpus from a Hugging Face dataset or a local file.")
    src = p.add_argument_group("source (one of)")
    src.add_argument("--dataset", help="hub dataset name (streamed), e.g. roneneldan/TinyStories")
    src.add_argument("--input-file", help="local .txt/.jsonl/.json/.parquet/.csv file instead of the hub")
    p.add_argument("--config", default=None, needs=("dataset",), help="hub dataset config name, e.g. sample-10BT")
    p.add_argument("--split", default="train", needs=("dataset",),
                   help="the hub dataset's split to stream, e.g. validation")
    p.add_argument("--text-field", default="text", help="record field holding the text (hub/json/parquet/csv)")
    p.add_argument("--num-stories", type=at_least(0), default=0, help="how many stories to sample; 0 = all, in order")
    p.add_argument("--seed", type=seed, default=1337, needs=("num_stories",),
                   help="seeds --num-stories' sample and order (the hub's shuffle)")
    p.add_argument("--shuffle-buffer", type=at_least(1), default=10_000, needs=("num_stories",),
                   help="stories the hub's shuffle holds at once (a local file's sample holds only --num-stories)")
    p.add_argument("--split-blank-lines", action="store_true", needs=("input_file",),
                   help="split a .txt without <|endoftext|> into stories on blank lines")
    p.add_argument("--output", type=output, required=True, help="the corpus .txt to write (train.py's --data_path)")
    return p.parse_args(argv)


# each source reads only the flags READS lists; another is refused, never dropped
SOURCE_FLAGS = ("--config", "--split", "--shuffle-buffer", "--seed", "--text-field", "--split-blank-lines")
READS = {  # source: (what it is, the flags it reads)
    "hub": ("a hub dataset", ("--config", "--split", "--shuffle-buffer", "--seed", "--text-field")),
    "records": ("a file of records", ("--seed", "--text-field")),  # .jsonl/.json/.parquet/.csv: a field of each
    "separator": ("text split on <|endoftext|>", ("--seed",)),
    "blank-lines": ("text split on blank lines", ("--seed", "--split-blank-lines")),
    "document": ("one document, written unchanged", ())}


def refuse_unread(args, argv, source):
    """Refuse a SOURCE_FLAGS flag the source (a READS key) does not read."""
    what, reads = READS[source]
    unread = [f for f in SOURCE_FLAGS if f in typed(argv) and f not in reads]
    if unread:
        raise UserError(f"{unread[0]} does not apply to {args.input_file or args.dataset}, {what}: drop {unread[0]}")


def progress(it, total=None, desc="stories"):
    """A tqdm bar over streaming stories (total None: no ETA), off when stderr is no terminal."""
    from tqdm import tqdm
    return tqdm(it, total=total or None, desc=desc, unit=" stories", unit_scale=True, dynamic_ncols=True, disable=None)


def main(argv):
    args = parse_args(argv)
    # `datasets` imports torch when it is installed (~1 s); nothing here needs it
    os.environ.setdefault("USE_TORCH", "0")
    from scripts import corpus
    if bool(args.dataset) == bool(args.input_file):
        raise UserError("pass exactly one source: --dataset NAME (hub) or --input-file PATH (local file)")
    t0, single = time.time(), False
    if args.input_file:
        fmt = corpus.local_format(args.input_file, args.split_blank_lines)
        refuse_unread(args, argv, "records" if fmt in corpus.DATASETS_BUILDERS.values() else fmt)
        single = fmt == "document"
        if single and args.num_stories > 1:
            raise UserError(f"{args.input_file} is one document (no {corpus.SEPARATOR} in it), so "
                            f"--num-stories does not apply: drop it, or pass --split-blank-lines")
        if fmt in corpus.DATASETS_BUILDERS.values():  # `datasets` logs a parse error, then raises it: say it once
            import datasets
            datasets.utils.logging.set_verbosity(datasets.utils.logging.CRITICAL)
        texts = corpus.iter_local_texts(args.input_file, args.text_field, args.split_blank_lines)
        if not single:
            texts = corpus.sample_texts(progress(texts, desc="reading"), args.num_stories, args.seed)
    else:
        refuse_unread(args, argv, "hub")
        texts = corpus.iter_hf_texts(args.dataset, args.split, args.text_field, args.seed,
                                     args.shuffle_buffer, args.num_stories, config=args.config)
        texts = progress(texts, total=args.num_stories, desc="streaming")
    stats = corpus.write_corpus(texts, args.output, overwrite=args.overwrite, single_document=single)
    dt = time.time() - t0
    if args.num_stories and not single and stats["stories"] < args.num_stories:
        print(f"note: only {stats['stories']:,} stories available, fewer than --num-stories "
              f"{args.num_stories:,}", file=sys.stderr)
    what = "1 document" if single else f"{stats['stories']:,} stories"
    rate = "" if single else f" ({stats['stories'] / max(dt, 1e-9):,.0f} stories/s)"
    print(f"wrote {what}, {stats['chars']:,} characters ({stats['distinct_chars']} distinct) "
          f"to {stats['path']} in {dt:.1f}s{rate}")


if __name__ == "__main__":
    run_cli(main)
