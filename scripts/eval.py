"""Evaluate checkpoints side by side: one table of numbers that can be compared and cited.

    python scripts/eval.py artifacts/models/cpu/model.pt artifacts/models/cpu_ar/model.pt \
        --ar-checkpoint artifacts/models/cpu_ar/model.pt --json artifacts/eval/cpu.json
    python scripts/eval.py artifacts/models/cpu/model.pt --n-windows 32 --n-t 4 --n-samples 4

Per checkpoint: the bound (diffusion) or exact NLL (AR) in bits/char ± se, and an AR mode's
(--dual_ar, --bd3_ar); masked reconstruction accuracy and entropy by t; the samples' change rate,
distinct-2/-3, entropy and gen-PPL under --ar-checkpoint (bd3: --steps per block). Elsewhere:
plots, dev/plot.py; infill recovery, dev/infill.py; samplers over temperature, scripts/frontier.py.
"""
import math
import os
import sys
import textwrap
import time
from dataclasses import replace

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from config import CHOICES  # noqa: E402
from evals import REPORT, SPLITS  # noqa: E402
from utils.cli import ArgParser, at_least, config_flags, output, own_flags, seed, typed  # noqa: E402
from utils.errors import UserError, run_cli  # noqa: E402
from utils.fileio import refuse_twins, require_checkpoints  # noqa: E402


def parse_args(argv):
    p = ArgParser(prog="scripts/eval.py", description="Evaluate diffusion and AR checkpoints into one table. The "
                  "samples' sampler takes any of its keys as inference.py does (--steps 8, --top-p 0.9, --order "
                  "random: python inference.py --help documents each); where not given, each checkpoint's own.")
    p.add_argument("checkpoints", nargs="+", help="model.pt files written by train.py (diffusion or AR)")
    p.add_argument("--ar-checkpoint", default="", needs=("n_samples",), help="the AR model that scores the samples "
                   "(gen-PPL); same tokenizer")
    p.add_argument("--split", choices=SPLITS, default=REPORT["split"], help="whose fixed windows: test = the second "
                   "half of the validation text (records report it); dev = its first half (choices read it: train.py's "
                   "evals, best.pt); val = both; train")
    p.add_argument("--data-path", default="", help="override the checkpoint's data_path (e.g. run from elsewhere)")
    p.add_argument("--val-path", default=None, help="override the checkpoint's val_path ('' = split data_path)")
    p.add_argument("--n-windows", type=at_least(2, "a standard error"), default=REPORT["n_windows"],
                   help="fixed evaluation windows, evenly spaced over --split")
    p.add_argument("--n-t", type=at_least(1), default=REPORT["n_t"], help="stratified times per window for the bound")
    p.add_argument("--batch-size", type=at_least(1), default=REPORT["batch_size"], help="windows or samples a pass")
    p.add_argument("--n-samples", type=at_least(0), default=16, help="samples for gen-PPL, distinct-n (0 = none)")
    samples = ("n_samples",)  # flags that act only with samples
    p.add_argument("--gen-len", type=at_least(0), default=0, needs=samples, help="tokens per sample; 0 = fill context")
    p.add_argument("--prompt", default="", needs=samples, help="text every sample starts from; '' = the AR start token")
    p.add_argument("--seed", type=seed, default=REPORT["seed"], help="seeds the bound's draws and the samples")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--dtype", choices=CHOICES["dtype"], default="auto", help="autocast of the forward passes, as "
                   "train.py's --dtype: auto = bf16 on a CUDA GPU that has it (else fp16), fp32 elsewhere")
    p.add_argument("--json", type=output, default="", help="also write every figure here (dev/plot.py entropy)")
    keys = config_flags(p, samples)  # the sampler's keys: which config keys those are, checked once it is imported
    args = p.parse_args(argv)
    args.config_keys = keys
    # every checkpoint named, all at once, before any is read
    found = require_checkpoints([*args.checkpoints, *filter(None, [args.ar_checkpoint])], "give paths that exist")
    refuse_twins(args.checkpoints)  # one scored twice would be paired against itself
    args.checkpoints = found[:len(args.checkpoints)]
    args.ar_checkpoint = found[-1] if args.ar_checkpoint else ""
    return args


if __name__ == "__main__":  # flags and paths refused before the rest is imported
    run_cli(parse_args)

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from configurator import validate  # noqa: E402
from objectives import effective  # noqa: E402
from diffusion import SamplerOptions  # noqa: E402
from evals.bound import ar_mode, evaluate, paired_difference, report_windows  # noqa: E402
from evals.metrics import ChangeRate  # noqa: E402
from evals.samples import Job, draw, load_judge, open_checkpoint, score, start_ids, write_json  # noqa: E402
from objectives import OBJECTIVES  # noqa: E402
from sampling.trace import chain  # noqa: E402
from utils.dataloader import prepare_data  # noqa: E402
from utils.dist import CpuThreads, autocast_for, pick_device  # noqa: E402
from utils.tokenizer import fingerprint  # noqa: E402


def load_run(path, args, device, given=()):
    """A checkpoint's model, tokenizer and configs, checked before work; given: utils.cli.typed."""
    model, ckpt, cfg, tok = open_checkpoint(path, device, args.data_path, args.val_path)
    obj = OBJECTIVES[cfg.objective]
    # Sample as the preset and inference.py do; a given flag replaces its setting.
    # A checkpoint's remdm, which no flag names, yields only to a given --remask.
    # a flag its objective never reads (others' runs do) stays unset for it: every key is the
    # checkpoint's
    scfg = effective(replace(cfg, **sampler_flags(args)), given=set(vars(cfg)))
    opts = SamplerOptions.from_config(scfg)  # the samples' sampler, built once
    if "steps" in given_sampler_keys(given) and args.n_samples and opts.adaptive:
        rule = f"threshold ({opts.threshold:g}: each step commits what it is sure enough of)"
        if opts.entropy_bound:
            rule = f"entropy bound ({opts.entropy_bound:g}: each step reveals what fits under it)"
        raise UserError(f"{path} decodes by {rule}, which reads no step count: drop --steps")
    if args.n_samples:
        # refuse what train.py and inference.py refuse (--steps > T too), of the flags it reads
        read = {key for key in given_sampler_keys(given) if key not in obj.IGNORES}
        validate(scfg, read, training=False)
    return dict(path=path, model=model, ckpt=ckpt, cfg=cfg, scfg=scfg, opts=opts, obj=obj, tok=tok,
                fp=fingerprint(tok))


def sampler_flags(args):
    """{key: value} of the sampler settings given on the command line."""
    return {key: getattr(args, key) for key in SamplerOptions.keys() if getattr(args, key) is not None}


def given_sampler_keys(given):
    """The sampler keys set by a flag typed on the command line (utils.cli.typed's)."""
    return {key for key in SamplerOptions.keys() if {f"--{key}", f"--{key.replace('_', '-')}"} & set(given)}


def keep_sampler_keys(args):
    """Refuse a config key given that no sampler reads (utils.cli.config_flags took every key of
    config.py), then drop the others from args: the rest are each checkpoint's own."""
    stray = [key for key in args.config_keys if key not in SamplerOptions.keys() and getattr(args, key) is not None]
    if stray:
        flag = f"--{stray[0].replace('_', '-')}"
        raise UserError(f"{flag} is no sampler key: eval.py's flags of config.py's keys set the samples' sampler "
                        f"({', '.join(SamplerOptions.keys())}); the rest are each checkpoint's own: drop it")
    for key in args.config_keys:
        if key not in SamplerOptions.keys():
            delattr(args, key)


def overridden(args):
    """The given sampler settings for the start-up line ('' if none)."""
    asked = [f"{key}={value}" for key, value in sampler_flags(args).items()]
    return f" but {', '.join(asked)}" if asked else ""


def refuse_unread(runs, args, given):
    """Refuse a flag no run reads (all ignore it; --n-t: all exact); needs= covers the rest."""
    keys = [key for key in given_sampler_keys(given) if all(key in r["obj"].IGNORES for r in runs)]
    unread = sorted(f for f in given if f.lstrip("-").replace("-", "_") in keys)
    if all(r["obj"].EXACT for r in runs):
        unread.append("--n-t")
    unread = [f for f in unread if f in given]
    if unread:
        kinds = ", ".join(sorted({r["cfg"].objective for r in runs}))
        raise UserError(f"{unread[0]} acts on none of these checkpoints ({kinds}): drop {unread[0]}")


def sample_plan(run, args, judge):
    """(start ids each sample continues, tokens per sample: --gen-len or what fills the context),
    checked against the run's context and the scorer's before any run is scored."""
    start = start_ids(run["tok"], args.prompt)
    if not args.gen_len and len(start) >= run["cfg"].block_size:  # nothing left to fill
        raise UserError(f"--prompt is {len(start)} tokens: it fills the context of {run['path']} "
                        f"({run['cfg'].block_size}); give a shorter --prompt")
    gen_len = args.gen_len or run["cfg"].block_size - len(start)
    L = run["cfg"].block_size
    if len(start) + gen_len > L or (judge is not None and len(start) + gen_len - 1 > judge.args.block_size):
        raise UserError(f"prompt ({len(start)} tokens) + --gen-len {gen_len} exceeds the context of {run['path']} "
                        f"or of the scorer: use a shorter --gen-len")
    return start, gen_len


def label(cfg, obj):
    """The objective with what tells two runs apart: block size, schedule and T, and the time
    conditioning where free ('mdlm (cosine, T=100, none)')."""
    parts = [f"L'={cfg.bd3_block}"] if obj.BLOCKS else []
    if not obj.EXACT:
        parts += [cfg.schedule, f"T={cfg.diffusion_steps}"]
    if "time_cond" not in obj.MODEL:  # bd3 and the AR read no time
        parts.append(cfg.time_cond)
    return f"{cfg.objective} ({', '.join(parts)})" if parts else cfg.objective


def evaluate_run(run, args, judge, bar, threads):
    """One checkpoint's row: its bound on fixed windows, then its samples."""
    model, cfg, scfg, tok, ckpt, obj = run["model"], run["cfg"], run["scfg"], run["tok"], run["ckpt"], run["obj"]
    t0, L = time.time(), cfg.block_size
    _, train_ids, val_ids, _ = prepare_data(cfg, tok, verbose=False)
    windows, cpt = report_windows(tok, train_ids, val_ids, args.split, args.n_windows, L)
    res = evaluate(model, windows, replace(cfg, batch_size=args.batch_size), tok, n_t=args.n_t, seed=args.seed,
                   chars_per_token=cpt, details=True)
    row = dict(path=str(run["path"]), name=run_name(run["path"]), objective=cfg.objective, label=label(cfg, obj),
               exact=obj.EXACT, params=model.num_params(),
               tokens_seen=int(ckpt["iter"]) * (cfg.total_batch_size or cfg.batch_size * L),  # 0: one rank's batch
               iter=int(ckpt["iter"]), tokenizer=tok.kind, tokenizer_fingerprint=run["fp"], schedule=cfg.schedule,
               diffusion_steps=cfg.diffusion_steps,  # the chain scored: the checkpoint's T
               time_cond=model.args.time_cond,  # the network's (bd3 and the AR have none)
               loss_type=getattr(cfg, obj.LOSS_KEY),  # bd3's is bd3_loss
               bd3_block=cfg.bd3_block if obj.BLOCKS else None, chars_per_token=cpt, split=args.split, **res)
    per = ar_mode(model, cfg, windows, tok.mask_id, args.batch_size)  # --dual_ar, --bd3_ar: an AR too, exactly scored
    if per is not None:
        row["ar_mode"] = dict(nats_per_token=per.mean().item(), se=(per.std() / len(per) ** 0.5).item(),
                              per_window=per.tolist(), chars_per_token=cpt)
    g = torch.Generator().manual_seed(args.seed)
    start, gen_len = run["plan"]
    row["sampler"] = obj.describe(scfg, run["opts"])
    if args.n_samples:
        change = None if obj.EXACT else ChangeRate(tok.mask_id)
        threads.restart()  # no pass spans the bound's evaluation
        hooks = chain(change, lambda st: bar.update(), threads.tick)
        job = Job(model, replace(scfg, num_samples=args.batch_size), run["opts"], tok.mask_id)
        out, _ = draw(job, start, gen_len, args.n_samples, g, on_step=hooks)
        row.update(score(out, len(start), tok, judge, args.batch_size), gen_len=gen_len, n_samples=args.n_samples)
        row["change_rate"] = None if obj.EXACT else change.rate
    row["seconds"] = time.time() - t0
    return row


def run_name(path):
    parent = os.path.basename(os.path.dirname(os.path.abspath(path)))
    return f"{parent}/{os.path.basename(path)}" if parent else os.path.basename(path)


def fmt(v, spec):
    return "n/a" if v is None else format(v, spec)


def paired_with_first(rows):
    """Set r['paired_vs_first'] = (mean, se) of per-window differences from the first run, nats/char
    (far less noisy than either ±); None where the windows differ."""
    a = rows[0]
    per_char = lambda r: [w / r["chars_per_token"] for w in r["per_window"]]  # noqa: E731
    for r in rows[1:]:
        same = len(r["per_window"]) == len(a["per_window"]) and r["chars_per_token"] == a["chars_per_token"]
        for m in filter(None, (r, r.get("ar_mode"))):  # the AR mode's figure too, minus the first run's main one
            m["paired_vs_first"] = paired_difference(per_char(a), per_char(m)) if same else None


def ar_mode_cell(r):
    """A network's AR mode: exact NLL, and minus the first run's on the same windows."""
    m = r.get("ar_mode")
    if m is None:
        return "n/a"
    cell = f"= {m['nats_per_token'] / m['chars_per_token']:.4f} ± {m['se'] / m['chars_per_token']:.4f}"
    paired = m.get("paired_vs_first")
    return cell + ("" if paired is None else "; minus the first run's %+.4f ± %.4f" % paired)


def paired_cell(r):
    """'-' for the first run; n/a for a run scored on other windows (no pairing)."""
    if "paired_vs_first" not in r:
        return "-"
    return "n/a (other windows)" if r["paired_vs_first"] is None else "%+.4f ± %.4f" % r["paired_vs_first"]


CELL = 44  # the widest a table cell runs before it wraps
LN2 = math.log(2)


def table(rows, judge="none"):
    """Metrics down, runs across: easier to read than 15 columns."""
    split = rows[0].get("split", "val")
    lines = [
        ("run", lambda r: r["name"]),
        ("objective", lambda r: r["label"]),
        ("sampler", lambda r: r.get("sampler", "n/a")),
        ("params", lambda r: f"{r['params']:,}"),
        ("tokens seen", lambda r: f"{r['tokens_seen']:,}"),
        (f"{split} NLL/bound (nats/char)",  # README's and RESULTS' unit
         lambda r: f"{'=' if r['exact'] else '<='} {r['bits_per_char'] * LN2:.4f} ± {r['bpc_se'] * LN2:.4f}"),
        ("  the same in bits/char",
         lambda r: f"{'=' if r['exact'] else '<='} {r['bits_per_char']:.4f} ± {r['bpc_se']:.4f}"),
        ("  MC share of the ±, at most (bits/char)", lambda r: fmt(r.get("mc_bpc_max"), ".4f")),
        ("  per token (nats/token)", lambda r: f"{r['nats_per_token']:.4f}"),
        ("  minus the first run's, paired (nats/char)", paired_cell),
        ("its AR mode: --dual_sample's, --bd3_speculate's law (nats/char)", ar_mode_cell),
        ("perplexity (per token)", lambda r: f"{r['ppl']:.3f}"),
        ("masked recon accuracy (fraction)", lambda r: fmt(r.get("recon_acc"), ".4f")),
        ("entropy by t, low->high (nats)",
         lambda r: " ".join(f"{v:.1f}" for _, _, v in r["entropy_by_t"]) if r.get("entropy_by_t") else "n/a"),
        ("reverse-step change rate (fraction)", lambda r: fmt(r.get("change_rate"), ".4f")),
        ("distinct-2 (fraction)", lambda r: fmt(r.get("distinct_2"), ".4f")),
        ("distinct-3 (fraction)", lambda r: fmt(r.get("distinct_3"), ".4f")),
        ("sample entropy (nats)", lambda r: fmt(r.get("sample_entropy"), ".3f")),
        (f"gen-PPL (per token; judge {judge})",
         lambda r: fmt(r.get("gen_ppl"), ".3f") + (" (self-scored)" if r.get("self_scored") else "")),
    ]
    # a cell past CELL columns wraps onto the row's next lines (a sampler's description made the
    # table 308 columns wide)
    cells = [[textwrap.wrap(c, CELL) or [""] for c in [label] + [f(r) for r in rows]] for label, f in lines]
    widths = [max(len(part) for row in cells for part in row[i]) for i in range(len(rows) + 1)]
    out = []
    for row in cells:
        for k in range(max(map(len, row))):
            out.append(" | ".join((cell[k] if k < len(cell) else "").ljust(w) for cell, w in zip(row, widths)))
    out.insert(len(cells[0][1]), "-+-".join("-" * w for w in widths))  # under the run names
    return "\n".join(out)


def main(argv):
    args = parse_args(argv)
    keep_sampler_keys(args)
    with own_flags(args):  # refusals name this script's flags
        evaluate_all(args, argv)


def evaluate_all(args, argv):
    """Every checkpoint's row, then the table (and --json)."""
    device = pick_device(args.device)
    threads = CpuThreads(device)  # as train.py: by what the sampling passes measure, unless OMP_NUM_THREADS
    torch.manual_seed(args.seed)
    given = typed(argv)
    runs = [load_run(p, args, device, given) for p in args.checkpoints]
    refuse_unread(runs, args, given)
    judge = load_judge(args.ar_checkpoint, device, {r["path"]: r["tok"] for r in runs}) if args.ar_checkpoint else None
    for r in runs:  # every run's samples fit, before any run is scored
        r["plan"] = sample_plan(r, args, judge)
    ctx, precision = autocast_for(device, args.dtype)  # training's policy (and TF32 on CUDA)
    print(f"device: {device}, {precision} forward passes (float64 draws); {args.split} split, {args.n_windows} windows "
          f"x {args.n_t} t; {args.n_samples} samples, each checkpoint's own sampler{overridden(args)}; "
          f"scorer: {args.ar_checkpoint or 'none'}; {threads.line}")
    rows, t0 = [], time.time()
    # the samples' passes as they run (a count, a rate); each checkpoint's line says what is left
    with tqdm(desc="eval: sampling", unit="pass", leave=False, disable=None if args.n_samples else True,
              dynamic_ncols=True) as bar:
        for i, r in enumerate(runs):
            with ctx:
                row = evaluate_run(r, args, judge, bar, threads)
            rows.append(row)
            # a model scoring its own samples flatters itself
            row.update(precision=precision, judge=args.ar_checkpoint or None,
                       self_scored=bool(args.ar_checkpoint) and os.path.samefile(r["path"], args.ar_checkpoint))
            to_go = len(runs) - i - 1
            eta = f" ({to_go} to go, ~{(time.time() - t0) / (i + 1) * to_go:.0f}s)" if to_go else ""
            print(f"  {row['name']}: {row['seconds']:.1f}s{eta}")
            if row["n_windows"] < args.n_windows:  # a split too short: score all it holds, and say so
                print(f"  {row['name']}: --n-windows {args.n_windows}, but the {args.split} split holds "
                      f"{row['n_windows']} disjoint windows of its context: those scored")
    paired_with_first(rows)
    print(table(rows, run_name(args.ar_checkpoint) if args.ar_checkpoint else "none"))
    if args.json:
        write_json(args.json, dict(settings=vars(args), device=str(device), precision=precision, runs=rows))


if __name__ == "__main__":
    run_cli(main)
