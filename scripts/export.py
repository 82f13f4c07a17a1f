"""Export a trained model to hand on: the weights only, what they are, and the tokenizer.

    python scripts/export.py artifacts/models/cpu/model.pt artifacts/export/cpu
    python inference.py --checkpoint artifacts/export/cpu --seed 0  # same text as model.pt's
    python scripts/export.py artifacts/models/cpu/best.pt artifacts/weights/cpu --overwrite \
        --about preset=cpu --about "command=python train.py cpu" --about "test=<= 1.8683 nats/char"

OUT_DIR gets model.safetensors (the weights the checkpoint samples with, EMA's under --ema; no code
runs on load), config.json (what they are, under a checksum; the run's sampling settings become the
defaults, the user's to edit) and tokenizer.json (BPE) or vocab.json (char). A non-empty OUT_DIR
needs --overwrite.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils.cli import ArgParser  # noqa: E402
from utils.errors import UserError, run_cli  # noqa: E402
from utils.fileio import atomic_open, atomic_path, check_folder, require_checkpoints  # noqa: E402


def parse_args(argv):
    p = ArgParser(prog="scripts/export.py", description="Export a checkpoint's weights, config and tokenizer.")
    p.add_argument("checkpoint", help="a model.pt written by train.py, or a folder this script wrote")
    p.add_argument("out_dir", help="folder to write model.safetensors, config.json and the tokenizer into")
    p.add_argument("--overwrite", "--force", dest="overwrite", action="store_true",
                   help="write into OUT_DIR even if it holds files (--force: the same, its old name)")
    p.add_argument("--about", action="append", default=[], metavar="KEY=VALUE",
                   help="how the weights were made, kept in config.json's 'about' (preset=, command=, trained_at=, "
                        "test=); repeat it for each")
    args = p.parse_args(argv)
    args.about = about_of(args.about)
    check_folder(args.out_dir, f"OUT_DIR {args.out_dir} (a folder: it gets three files)")
    if os.path.isdir(args.out_dir) and os.listdir(args.out_dir) and not args.overwrite:
        raise UserError(f"{args.out_dir} already holds files: pass --overwrite to write into it, or choose another "
                        f"OUT_DIR")
    if os.path.isdir(args.checkpoint) and not exported(args.checkpoint):
        raise UserError(f"{args.checkpoint} is a folder: export a model.pt written by train.py (or a folder this "
                        f"script wrote)")
    args.checkpoint = require_checkpoints([args.checkpoint], "give the path of one that exists")[0]
    if os.path.isdir(args.out_dir) and os.path.samefile(args.checkpoint, args.out_dir):
        raise UserError(f"OUT_DIR {args.out_dir} is the folder being exported: choose another OUT_DIR")
    return args


def exported(path):
    """Whether path is a folder this script wrote (named before torch is imported)."""
    return all(os.path.isfile(os.path.join(path, name)) for name in ("model.safetensors", "config.json"))


def size_mb(path):
    """A checkpoint's size in MB: its file, or every file of an exported folder."""
    files = [os.path.join(path, n) for n in os.listdir(path)] if os.path.isdir(path) else [path]
    return sum(os.path.getsize(f) for f in files) / 1e6


def about_of(pairs):
    """--about's KEY=VALUE pairs as a dict, each key once."""
    about = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key.strip() or key in about:
            why = f"sets {key} twice" if key in about else "is not KEY=VALUE"
            raise UserError(f"--about {pair!r} {why}: give each as --about KEY=VALUE, once, e.g. --about preset=cpu")
        about[key.strip()] = value
    return about


if __name__ == "__main__":  # flags and paths refused before torch is imported (seconds on a busy machine)
    run_cli(parse_args)

from checkpoint_manager import (EXPORT_BPE, EXPORT_CHARS, EXPORT_CONFIG, EXPORT_FORMAT, EXPORT_WEIGHTS,  # noqa: E402
                                checkpoint_config, config_checksum, load_model, read_checkpoint)
from utils.checkpoint import checksum  # noqa: E402
from utils.tokenizer import fingerprint, tokenizer_from_state  # noqa: E402


def export(ckpt, model, out_dir, about=None):
    """Write the three files, config.json last (without it, no export); return their paths. about:
    how the weights were made (the repo's shipped weights say preset, command, commit and test)."""
    from safetensors.torch import save_file
    tok, cfg = tokenizer_from_state(ckpt["tokenizer"]), ckpt["config"]
    meta = dict(format=EXPORT_FORMAT, model_args=ckpt["model_args"], tokenizer={"kind": tok.kind},
                tokenizer_fingerprint=fingerprint(tok), objective=cfg.get("objective", "mdlm"),
                schedule=cfg.get("schedule", "cosine"), diffusion_steps=cfg.get("diffusion_steps"), mask_id=tok.mask_id,
                iter=int(ckpt["iter"]), ema_weights=ckpt.get("ema") is not None or bool(ckpt.get("ema_weights")),
                config=cfg,
                meta={k: v for k, v in ckpt.get("meta", {}).items() if k == "chars_per_token"})
    about = about or ckpt.get("about")  # an export exported again keeps how it was made
    if about:
        meta["about"] = about
    vocab = EXPORT_BPE if tok.kind == "bpe" else EXPORT_CHARS
    paths = [os.path.join(out_dir, n) for n in (EXPORT_WEIGHTS, vocab, EXPORT_CONFIG)]
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta["weights_checksum"] = checksum(weights)  # load_export refuses weights damaged after export
    meta = json.loads(json.dumps(meta))  # as config.json reads back (a tuple is a list there)
    meta["config_checksum"] = config_checksum(meta)  # and a config.json changed after it
    with atomic_path(paths[0]) as tmp:
        save_file(weights, tmp, metadata={"format": "pt"})
        umask = os.umask(0)
        os.umask(umask)  # reading the umask sets it: put it back
        os.chmod(tmp, 0o666 & ~umask)  # safetensors creates it private; the others are readable too
    with atomic_open(paths[1]) as f:
        if tok.kind == "bpe":
            f.write(ckpt["tokenizer"]["json"])
        else:
            json.dump({"chars": "".join(tok.chars)}, f, ensure_ascii=False)
    with atomic_open(paths[2]) as f:
        json.dump(meta, f, indent=1)
    return paths


def main(argv):
    args = parse_args(argv)
    ckpt = read_checkpoint(args.checkpoint)
    # what every reader checks (an objective this version lacks, a config its network does not
    # match), refused before a file is written: else the folder would be one no reader takes
    checkpoint_config(ckpt, f"checkpoint {args.checkpoint}")
    model, ckpt = load_model(args.checkpoint, "cpu", ckpt)
    paths = export(ckpt, model, args.out_dir, args.about)
    ema = ckpt.get("ema") is not None or ckpt.get("ema_weights")
    print(f"exported {args.checkpoint} (iter {ckpt['iter']}, {model.num_params():,} parameters"
          f"{', EMA weights' if ema else ''}) to {args.out_dir}: "
          + ", ".join(f"{os.path.basename(p)} {os.path.getsize(p) / 1e6:.2f} MB" for p in paths)
          + f" (the checkpoint is {size_mb(args.checkpoint):.2f} MB)")
    print(f"sample from it: python inference.py --checkpoint {args.out_dir}")


if __name__ == "__main__":
    run_cli(main)
