"""How well does a checkpoint fill a held-out span from both sides? Each of --n-infill validation windows loses
--span tokens in its middle half; the checkpoint's own sampler (its preset's, --temperature aside) fills them. Prints
the fraction of spans filled exactly and of tokens (characters for a char tokenizer) filled right; nanoDLM reports
0.156 for 20 Shakespeare characters.

    python dev/infill.py artifacts/models/baby/model.pt --span 20 --n-infill 64 --device cpu

A study's instrument: it left scripts/eval.py, where every documented command turned it off (--infill-len 0) and no
README or RESULTS figure read it (dev/LOG.md, "The product's budget after issues 77-82"). The AR and bd3 only
continue a prompt: they have no figure here.
"""
import os
import sys
from dataclasses import replace

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from diffusion import SamplerOptions  # noqa: E402
from configurator import validate  # noqa: E402
from evals import SPLITS  # noqa: E402
from evals.samples import open_checkpoint  # noqa: E402
from objectives import OBJECTIVES  # noqa: E402
from utils.cli import ArgParser, at_least, model_path, own_flags, seed  # noqa: E402
from utils.dataloader import fixed_windows, prepare_data, split_ids  # noqa: E402
from utils.dist import pick_device  # noqa: E402
from utils.errors import UserError, run_cli  # noqa: E402
from utils.fileio import require_checkpoints  # noqa: E402


SPAN = 20  # --span's default: nanoDLM's held-out characters


def span_starts(n, L, span, generator):
    """A held-out span start per window, uniform over the middle half: context on both sides."""
    lo, hi = L // 4, max(L // 4 + 1, 3 * L // 4 - span + 1)
    return torch.randint(lo, hi, (n,), generator=generator)


@torch.no_grad()
def infill_recovery(model, windows, cfg, opts, mask_id, span, generator=None, batch_size=32):
    """Hold out `span` tokens of each window (N, L), filled from both sides by cfg's objective run
    by opts (diffusion.SamplerOptions): infill_exact (whole span right), infill_acc (a token's),
    infill_span, infill_n."""
    N, L = windows.shape
    assert span < L, f"infill span {span} must be shorter than the window {L}"
    starts = span_starts(N, L, span, generator)
    gen_mask = (torch.arange(L)[None] >= starts[:, None]) & (torch.arange(L)[None] < starts[:, None] + span)  # (N, L)
    gen_mask, hits, exact = gen_mask.to(windows.device), 0, 0
    for i in range(0, N, batch_size):
        x, gm = windows[i:i + batch_size], gen_mask[i:i + batch_size]
        out, _ = OBJECTIVES[cfg.objective].sample(model, x.clone(), gm, cfg, opts, mask_id, generator)
        hits += ((out == x) & gm).sum().item()
        exact += ((out == x) | ~gm).all(1).sum().item()  # fixed text counts as right: a row is exact iff its span is
    return dict(infill_exact=exact / N, infill_acc=hits / (N * span), infill_span=span, infill_n=N)


def parse_args(argv):
    p = ArgParser(prog="dev/infill.py", description="Held-out spans filled from both sides by a checkpoint's sampler.")
    p.add_argument("checkpoint", type=model_path, help="a model.pt written by train.py (masked or uniform-state diffusion)")
    p.add_argument("--span", type=at_least(1), default=None, help="held-out tokens a window; default 20 (nanoDLM's "
                   "chars), or half the context if that is less")
    p.add_argument("--n-infill", type=at_least(1), default=64, help="validation windows, one held-out span each")
    p.add_argument("--temperature", type=at_least(0.0), default=0.0, help="0 = the most likely fill")
    p.add_argument("--steps", type=at_least(1), default=None, help="reverse steps; default: the checkpoint's own")
    p.add_argument("--split", choices=SPLITS, default="test", help="whose windows (scripts/eval.py's halves)")
    p.add_argument("--data-path", default="", help="override the checkpoint's data_path (e.g. run from elsewhere)")
    p.add_argument("--val-path", default=None, help="override the checkpoint's val_path ('' = split data_path)")
    p.add_argument("--batch-size", type=at_least(1), default=32, help="windows a pass")
    p.add_argument("--seed", type=seed, default=0, help="seeds the spans and the sampler")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | mps")
    args = p.parse_args(argv)
    require_checkpoints([args.checkpoint], "give a path that exists")
    return args


def main(argv):
    args = parse_args(argv)
    with own_flags(args):  # refusals name this script's flags
        infill_all(args)


def infill_all(args):
    """The checkpoint's spans filled and scored, one line."""
    device = pick_device(args.device)
    model, _, cfg, tok = open_checkpoint(args.checkpoint, device, args.data_path, args.val_path)
    if OBJECTIVES[cfg.objective].CONTINUES_ONLY:
        raise UserError(f"{args.checkpoint} is {cfg.objective}, whose sampler only continues a prompt: give a "
                        f"masked or uniform-state diffusion checkpoint")
    L = cfg.block_size
    if args.span is None:  # the default fits any context: a small one's middle half
        args.span = min(SPAN, L // 2)
    if args.span > L // 2:  # past it a span ran off its window's end: fewer tokens scored than asked
        raise UserError(f"--span {args.span} does not fit the middle half of a {L}-token window, where a span has "
                        f"context on both sides: give --span {L // 2} or fewer")
    scfg = replace(cfg, temperature=args.temperature, steps=args.steps or cfg.steps)
    opts = SamplerOptions.from_config(scfg)  # the sampler, built once
    if args.steps and opts.adaptive:
        rule = f"threshold ({opts.threshold:g}: each step commits what it is sure enough of)"
        if opts.entropy_bound:
            rule = f"entropy bound ({opts.entropy_bound:g}: each step reveals what fits under it)"
        raise UserError(f"{args.checkpoint} decodes by {rule}, which reads no step count: drop --steps")
    validate(scfg, {"steps"} if args.steps else set(), training=False)
    _, train_ids, val_ids, _ = prepare_data(cfg, tok, verbose=False)
    windows = fixed_windows(split_ids(train_ids, val_ids, args.split), args.n_infill, L).to(device)
    g = torch.Generator().manual_seed(args.seed)
    res = infill_recovery(model, windows, scfg, opts, tok.mask_id, args.span, g, args.batch_size)
    if res["infill_n"] < args.n_infill:
        print(f"--n-infill {args.n_infill}, but the {args.split} split holds {res['infill_n']} disjoint windows")
    print(f"{args.checkpoint}: {res['infill_n']} spans of {args.span} tokens ({args.split}), {obj_line(scfg, opts)}: "
          f"exact {res['infill_exact']:.4f}, tokens right {res['infill_acc']:.4f}")


def obj_line(cfg, opts):
    """The sampler in force, as inference.py names it, and its temperature."""
    return f"{OBJECTIVES[cfg.objective].describe(cfg, opts)}, temperature {opts.law.temperature:g}"


if __name__ == "__main__":
    run_cli(main)
