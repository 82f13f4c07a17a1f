"""Score a character-level nanoGPT checkpoint on this repo's fixed windows, beside this repo's checkpoints, paired.

nanoGPT (github.com/karpathy/nanoGPT) trains the AR whose `baby` budget this repo's speedrun borrows. The val loss it
prints averages every position of a few random windows, the first ones read with almost no context; scripts/eval.py
scores the last L tokens of fixed windows of L + 1. This script runs nanoGPT's own model.py on its ckpt.pt over
exactly eval.py's windows (--split, --n-windows; the AR's reading: each token given the up to L before it), scores
each --against checkpoint as eval.py does (its bound, or an AR's exact NLL, n_t times a window), and prints each
one's figure minus nanoGPT's, paired over the windows. It runs the clone's model.py and unpickles its meta.pkl (as
nanoGPT does): point it only at a clone you trust.

    # in a nanoGPT clone (data/shakespeare_char/prepare.py on this repo's data/tinyshakespeare.txt), its baby GPT:
    python train.py config/train_shakespeare_char.py --device=cpu --compile=False --eval_iters=20 --log_interval=1 \\
        --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128 --max_iters=2000 --lr_decay_iters=2000 \\
        --dropout=0.0 --out_dir=out-baby
    python dev/nanogpt_score.py NANOGPT/out-baby/ckpt.pt --against artifacts/models/baby_bd3/model.pt --split test
    python dev/nanogpt_score.py NANOGPT/out-baby/ckpt.pt --against B9/model.pt --orders b9.json   # order_nll's too
"""
import importlib.util
import os
import pickle
import statistics
import sys
from dataclasses import replace

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from diffusion import Schedule  # noqa: E402
from checkpoint_manager import checkpoint_config  # noqa: E402
from dev.order_nll import windows_sha  # noqa: E402
from evals.bound import REPORT, ar_mode, evaluate, paired_difference, report_windows  # noqa: E402
from objectives import OBJECTIVES  # noqa: E402
from scripts.eval import run_name  # noqa: E402
from checkpoint_manager import load_model  # noqa: E402
from dev.readers import read_json  # noqa: E402
from utils.cli import ArgParser, at_least, model_path, own_flags, typed  # noqa: E402
from evals import SPLITS  # noqa: E402
from utils.dataloader import prepare_data  # noqa: E402
from utils.dist import hold_threads  # noqa: E402
from utils.errors import UserError, run_cli  # noqa: E402
from utils.fileio import not_found, refuse_twins  # noqa: E402
from utils.tokenizer import tokenizer_from_state  # noqa: E402


def read_nanogpt_ckpt(path):
    """nanoGPT's checkpoint dict (weights-only load: tensors, numbers and dicts), or a one-line UserError."""
    if not os.path.exists(path):
        raise not_found(path, "nanoGPT's checkpoint", "give the ckpt.pt in its out_dir")
    if not os.path.isfile(path):
        raise UserError(f"nanoGPT's checkpoint {path} is a directory: give the ckpt.pt in it")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # not a torch file, cut short, or objects a weights-only load refuses
        raise UserError(f"{path} is not a nanoGPT checkpoint a weights-only load reads ({type(e).__name__}): give the "
                        f"ckpt.pt nanoGPT's train.py wrote") from None
    if not isinstance(ck, dict) or not {"model", "model_args"} <= set(ck):
        raise UserError(f"{path} is not a nanoGPT checkpoint (no model and model_args): give the ckpt.pt nanoGPT's "
                        f"train.py wrote")
    return ck


class PlainData(pickle.Unpickler):
    """An unpickler that builds only the builtin values nanoGPT's meta.pkl holds (dicts, strings, numbers, lists,
    tuples): a pickle that names a class or a function (how a pickle runs code) is refused before anything runs."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"it names {module}.{name}")


def read_meta(path):
    """nanoGPT's meta.pkl {char: id} (its 'stoi'), read as plain data only."""
    try:
        with open(path, "rb") as f:
            meta = PlainData(f).load()
        stoi = meta["stoi"]
        if not isinstance(stoi, dict) or not all(isinstance(c, str) and isinstance(i, int) for c, i in stoi.items()):
            raise TypeError("stoi is not {str: int}")
    except Exception as e:  # a text file, a cut pickle, one that would run code, another kind of dict
        why = str(e).splitlines()[0][:80] if str(e) else type(e).__name__
        raise UserError(f"{path} is not nanoGPT's meta.pkl of plain data ({why}): nothing in it was run; give the "
                        f"meta.pkl that data/shakespeare_char/prepare.py wrote (--meta)") from None
    return stoi


def load_nanogpt(ck, model_py, meta_path, tok):
    """nanoGPT's GPT from its own model.py and checkpoint dict ck (its weights, in eval mode), its character ids
    checked against tok's: each of its meta.pkl's characters must have the same id here."""
    for what, path in (("model.py", model_py), ("meta.pkl", meta_path)):
        if not os.path.isfile(path):
            raise UserError(f"nanoGPT's {what} {path} is not a file: give the ckpt.pt of a character-level run inside "
                            f"its nanoGPT clone, or --model-py / --meta")
    spec = importlib.util.spec_from_file_location("nanogpt_model", model_py)
    if spec is None:  # a path Python does not import from (not .py)
        raise UserError(f"{model_py} is not a Python file: give the model.py of nanoGPT's clone (--model-py)")
    ng = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(ng)
    except Exception as e:  # a text file, another script, a model.py whose imports are missing here
        raise UserError(f"{model_py} does not run as nanoGPT's model.py ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:80] if str(e) else ''}): give the model.py of its clone "
                        f"(--model-py)") from None
    try:
        gpt = ng.GPT(ng.GPTConfig(**ck["model_args"]))
        gpt.load_state_dict({k.removeprefix("_orig_mod."): v for k, v in ck["model"].items()})  # a compiled run's names
    except (AttributeError, TypeError, RuntimeError) as e:
        raise UserError(f"{model_py} does not build the checkpoint's model ({str(e).splitlines()[0][:80]}): give "
                        f"the model.py of the nanoGPT clone that wrote it (--model-py)") from None
    stoi = read_meta(meta_path)
    same = ("score a nanoGPT run prepared from the same text (data/shakespeare_char/prepare.py on "
            "data/tinyshakespeare.txt)")
    if tok.kind != "char" or any(tok.stoi.get(c) != i for c, i in stoi.items()):
        raise UserError(f"{meta_path}'s character ids differ from the checkpoint's tokenizer: {same}")
    # a text without some character: the ids agree, and a window holding it is past nanoGPT's embedding
    lacking = [c for c in tok.chars if c not in stoi]
    if lacking:
        raise UserError(f"{meta_path} has no id for {len(lacking)} of the checkpoint's characters ({lacking[0]!r} "
                        f"first): it was prepared from another text; {same}")
    return gpt.eval()


@torch.no_grad()
def nanogpt_per_window(gpt, windows, batch_size):
    """nats/token per window (N,): the last L tokens of each window of L + 1, each given the up to L before it."""
    L, out = windows.size(1) - 1, []
    if L > gpt.config.block_size:
        raise UserError(f"nanoGPT's context {gpt.config.block_size} is shorter than the windows' {L}: score a run with"
                        f" --block_size={L} or more")
    for i in range(0, len(windows), batch_size):
        x = windows[i:i + batch_size]
        logits, _ = gpt(x[:, :-1].contiguous(), targets=x[:, 1:].contiguous())  # with targets: every position's logits
        out.append(F.cross_entropy(logits.transpose(1, 2).float(), x[:, 1:], reduction="none").double().mean(1))
    return torch.cat(out).tolist()


def main(argv):
    p = ArgParser(prog="dev/nanogpt_score.py", description=__doc__.split("\n\n")[0])
    p.add_argument("ckpt", help="nanoGPT's ckpt.pt (a character-level run, e.g. NANOGPT/out-baby/ckpt.pt)")
    p.add_argument("--against", nargs="+", required=True, type=model_path, help="this repo's model.pt files, scored on the same windows")
    p.add_argument("--model-py", default="", help="nanoGPT's model.py (default: the clone holding the ckpt's folder)")
    p.add_argument("--meta", default="", help="its meta.pkl (default: the clone's data/DATASET/meta.pkl)")
    p.add_argument("--split", choices=SPLITS, default=REPORT["split"], help="whose fixed windows (as scripts/eval.py)")
    p.add_argument("--n-windows", type=at_least(2), default=REPORT["n_windows"],
                   help="fixed windows of --split, evenly spaced (scripts/eval.py's)")
    p.add_argument("--n-t", type=at_least(1), default=REPORT["n_t"], help="times per window for a diffusion bound")
    p.add_argument("--batch-size", type=at_least(1), default=REPORT["batch_size"], help="windows a forward pass reads")
    p.add_argument("--orders", nargs="+", default=[], help="dev/order_nll.py --json files of the same split and "
                   "windows: each order's exact NLL (or the mixture's) paired against nanoGPT's too")
    args = p.parse_args(argv)
    refuse_twins(args.against)  # a run paired against itself
    with own_flags(args):  # refusals name this script's flags
        score_all(args, argv)


def score_all(args, argv):
    """nanoGPT's NLL and each --against run's on the same windows, paired."""
    orders = [(path, read_json(path, "a dev/order_nll.py --json file", ("checkpoint", "split", "n_windows", "orders"),
                               "give the --json that order_nll.py wrote (this version records its split)"))
              for path in args.orders]
    hold_threads()  # OMP_NUM_THREADS (or another thread variable), else 1
    runs = [load_model(path, "cpu") for path in args.against]
    cfg = checkpoint_config(runs[0][1], f"checkpoint {args.against[0]}")
    tok = tokenizer_from_state(runs[0][1]["tokenizer"])
    exact = [OBJECTIVES[checkpoint_config(saved, f"checkpoint {path}").objective].EXACT
             for path, (_, saved) in zip(args.against, runs)]
    if "--n-t" in typed(argv) and all(exact):  # an exact NLL draws no times
        raise UserError("--n-t sets the times of a diffusion bound, and every --against run is an AR (its NLL is "
                        "exact): drop --n-t")

    ck = read_nanogpt_ckpt(args.ckpt)
    clone = os.path.dirname(os.path.dirname(os.path.abspath(args.ckpt)))  # nanoGPT writes out_dir/ckpt.pt in its clone
    gpt = load_nanogpt(ck, args.model_py or os.path.join(clone, "model.py"),
                       args.meta or os.path.join(clone, "data", ck.get("config", {}).get("dataset", ""), "meta.pkl"), tok)
    _, train_ids, val_ids, _ = prepare_data(cfg, tok, verbose=False)
    windows, cpt = report_windows(tok, train_ids, val_ids, args.split, args.n_windows, cfg.block_size)
    for path, d in orders:  # the same windows (the split may hold fewer than asked: compare what was scored)
        if (d["split"], d["n_windows"], d.get("tokens")) != (args.split, len(windows), cfg.block_size):
            raise UserError(f"{path} scored {d['n_windows']} windows of {d.get('tokens')} tokens of split {d['split']}, "
                            f"this call {len(windows)} of {cfg.block_size} of {args.split}: give --split and "
                            f"--n-windows as order_nll.py had them, with --against runs of its window")
        if d.get("windows_sha") != windows_sha(windows):
            raise UserError(f"{path} scored other windows than these (another text or tokenizer: their fingerprints "
                            f"differ): pair it against nanoGPT on the text it scored")
    base = nanogpt_per_window(gpt, windows, args.batch_size)
    print(f"{args.split}: {len(base)} windows, the last {cfg.block_size} tokens of each; nats/char ± one standard error")
    print(f"  nanoGPT {args.ckpt} (iter {ck.get('iter_num', '?')}): = {statistics.mean(base):.4f} ± "
          f"{statistics.stdev(base) / len(base) ** 0.5:.4f}")
    for path, (model, saved) in zip(args.against, runs):
        c = checkpoint_config(saved, f"checkpoint {path}")  # the first run's is cfg
        if c.block_size != cfg.block_size or c.data_path != cfg.data_path or c.tokenizer != cfg.tokenizer:
            raise UserError(f"{path} reads other windows than {args.against[0]} (block size, data or tokenizer): score "
                            f"it in its own call")
        res = evaluate(model, windows, replace(c, batch_size=args.batch_size), tok, n_t=args.n_t, chars_per_token=cpt)
        d, dse = paired_difference(base, res["per_window"])
        print(f"  {run_name(path)} ({c.objective}): {res['nats_per_token']:.4f} ± {res['se']:.4f}; minus nanoGPT's: "
              f"{d:+.4f} ± {dse:.4f} (paired)")
        per = ar_mode(model, c, windows, tok.mask_id, args.batch_size)  # its AR mode too (--dual_ar, --bd3_ar)
        if per is not None:
            per = per.tolist()
            d, dse = paired_difference(base, per)
            print(f"    its AR mode (what --dual_sample, --bd3_speculate sample): = {statistics.mean(per):.4f} ± "
                  f"{statistics.stdev(per) / len(per) ** 0.5:.4f}; minus nanoGPT's: {d:+.4f} ± {dse:.4f} (paired)")
    for path, res in orders:
        for order, r in res["orders"].items():
            d, dse = paired_difference(base, r["per_window"])
            print(f"  {run_name(res['checkpoint'])} order_nll {order} ({path}): = {r['nats_per_token']:.4f} ± "
                  f"{r['se']:.4f}; minus nanoGPT's: {d:+.4f} ± {dse:.4f} (paired)")


if __name__ == "__main__":
    run_cli(main)
