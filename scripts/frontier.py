"""Sample frontiers: judge samplers by curves, not by one point (learning.md §6).

    python scripts/frontier.py artifacts/models/baby/model.pt artifacts/models/baby_bd3/model.pt \
        artifacts/models/baby_ar/model.pt \
        --ar-checkpoint artifacts/models/baby_ar/model.pt --grid order=random,confidence \
        --grid remask=none,remdm --grid temperature=0.8,0.9,1.0 \
        --json artifacts/eval/frontier_baby.json  # the default grid
    python dev/plot_frontier.py artifacts/eval/frontier_baby.json \
        --out artifacts/plots/frontier_baby.png
    python dev/plot_frontier.py artifacts/eval/frontier_baby.json --x speed  # tokens/s

A point per combination of --grid values (AR: --ar-grid): NFE (forward passes per sample), sample
entropy, gen-PPL under an AR judge, distinct-2/3, tokens/s, and the JS divergence of the samples'
character 1-4-grams from held-out text's. A curve is one sampler over temperature, read where it
crosses the held-out entropy (dev; the divergence on test, its floor dev text's own): lower is
better there. AR and bd3 samples may run past the context (a sliding window).
"""
import itertools
import os
import sys
import time
from dataclasses import fields, replace
from types import SimpleNamespace

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from config import UNSCORED_ORDERS, Config  # noqa: E402
from utils.cli import ArgParser, at_least, key_list, list_of, output, own_flags, seed, typed  # noqa: E402
from utils.errors import UserError, run_cli  # noqa: E402
from utils.fileio import refuse_twins, require_checkpoints  # noqa: E402

DEFAULT_GRID = ["order=random,confidence", "remask=none,remdm", "temperature=0.8,0.9,1.0"]
DEFAULT_AR_GRID = ["temperature=0.7,0.8,0.9,1.0", "top_p=0.9,1.0"]
# 'key=v1,v2', typed as config.py types it; that it is a sampler's key (a grid varies the
# sampler) is checked once the sampler is imported (sampler_grid)
GRID = key_list({f.name: f.type for f in fields(Config)})


def parse_args(argv):
    p = ArgParser(prog="scripts/frontier.py", description="Gen-PPL and n-gram divergence against entropy, per sampler. "
                  "Each curve is read at the held-out entropy, read on dev (the validation split's first half); the "
                  "n-gram divergence is reported against test.")
    p.add_argument("checkpoints", nargs="+", help="model.pt files written by train.py (any objective)")
    p.add_argument("--ar-checkpoint", required=True, help="the AR judge of gen-PPL (same tokenizer and data)")
    p.add_argument("--grid", action="append", type=GRID, default=None, help=f"KEY=V1,V2 for diffusion checkpoints, "
                   f"repeatable; every combination runs (default: {' '.join(DEFAULT_GRID)})")
    p.add_argument("--ar-grid", action="append", type=GRID, default=None,
                   help=f"KEY=V1,V2 for AR checkpoints (default: {' '.join(DEFAULT_AR_GRID)})")
    p.add_argument("--n-samples", type=at_least(2), default=256, help="samples per point and held-out windows; fewer "
                   "move the held-out entropy itself (baby, dev: 2.960 from 32 windows, 2.954 from 256)")
    p.add_argument("--gen-len", type=at_least(0), default=0, help="tokens per sample; 0 = fill the context")
    p.add_argument("--prompt", default="", help="text every sample continues; '' = the AR start token")
    p.add_argument("--batch-size", type=at_least(1), default=32, help="samples per forward pass (not timed)")
    p.add_argument("--data-path", default="", help="override the checkpoints' data_path (held-out text)")
    p.add_argument("--time-batches", type=list_of(at_least(1)), default="1,16", needs=("repeats",),
                   help="comma-separated batch sizes B at which every point's wall-clock tokens/s is timed")
    p.add_argument("--repeats", type=at_least(0), default=3, help="timed rounds per batch size (median); 0 = no timing")
    p.add_argument("--time-draws", type=at_least(1), default=1, needs=("repeats",),
                   help="draws of B samples each point makes in a timed round (its time: their mean; more: less noise "
                   "from samplers whose passes vary)")
    p.add_argument("--threads", type=at_least(1, most=os.cpu_count() or 1), default=None,
                   help="CPU threads of the timed draws, at most this machine's (default: the count OMP_NUM_THREADS or "
                   "another thread variable fixes, else 1; the scored draws choose theirs)")
    p.add_argument("--seed", type=seed, default=0, help="seeds the scored samples (and, after it, the timed ones)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--compile", default="auto", choices=("auto", "true", "false"),
                   help="inference.py's --compile: the KV-cached decode step and bd3's drafting round compiled (auto: "
                   "on CUDA, with CUDA graphs), whatever a checkpoint trained with")
    p.add_argument("--json", type=output, default="", help="write every point here (dev/plot_frontier.py)")
    a = p.parse_args(argv)
    for flag, grid in (("--grid", a.grid or []), ("--ar-grid", a.ar_grid or [])):
        keys = [key for key, _ in grid]
        if len(set(keys)) < len(keys):  # dict() would keep the last alone
            raise UserError(f"{flag} names a key twice: give it once, with all its values (KEY=V1,V2)")
    a.grid_values = dict(a.grid or map(GRID, DEFAULT_GRID))
    a.ar_grid_values = dict(a.ar_grid or map(GRID, DEFAULT_AR_GRID))
    found = require_checkpoints([*a.checkpoints, a.ar_checkpoint], "give paths that exist")  # all at once
    refuse_twins(a.checkpoints)  # its curves twice, timed twice
    a.checkpoints, a.ar_checkpoint = found[:-1], found[-1]
    return a


if __name__ == "__main__":  # flags and paths refused before torch is imported (seconds on a busy machine)
    run_cli(parse_args)

import torch  # noqa: E402

from configurator import idle, validate  # noqa: E402
from diffusion import SamplerOptions  # noqa: E402
from model import compile_decode  # noqa: E402
from objectives import OBJECTIVES  # noqa: E402
from evals.samples import (Job, busy_note, draw, held_out_windows, load_judge, open_checkpoint,  # noqa: E402
                           score, speed_figures, start_ids, time_draws, write_json)
from utils.dataloader import prepare_data  # noqa: E402
from sampling.trace import run_name  # noqa: E402
from utils.dist import CpuThreads, pick_device  # noqa: E402


GRID_KEYS = SamplerOptions.keys()  # the keys a grid may vary: every sampler key (config.py documents each)


def sampler_grid(args):
    """Refuse a --grid or --ar-grid key no sampler reads (a grid varies the sampler's keys)."""
    for flag, grid in (("--grid", args.grid_values), ("--ar-grid", args.ar_grid_values)):
        stray = [k for k in grid if k not in GRID_KEYS]
        if stray:
            raise UserError(f"{flag} {stray[0]}=...: {stray[0]} is no sampler key; a grid varies the sampler's: "
                            f"{', '.join(GRID_KEYS)}")


def canonical(settings, obj, cfg):
    """The settings a sampler reads, so points differing only in unread keys are one sampler: all
    but IGNORES, keys its switches leave unread, keys whose partner is off (ReMDM's eta)."""
    s = {k: v for k, v in settings.items() if k not in obj.IGNORES}
    if replace(cfg, **s).order in UNSCORED_ORDERS:  # no score to rank by: no entropy bound
        s.pop("entropy_bound", None)
    point = replace(cfg, **s)  # the point as it runs: its values, else the checkpoint's
    opts = SamplerOptions.from_config(point)
    unread = {*obj.unread(point, opts), *opts.unread()}
    return {k: v for k, v in s.items() if k not in unread and not idle(point, k)}


def grid_points(grid, cfg, obj):
    """Every distinct sampler of a grid: [(settings it reads, config, its sampler)], each one
    validated. A point is the checkpoint's sampler with the grid's settings, as eval.py's flags."""
    points = {}  # sorted settings -> (settings, sampling config, sampler), in grid order
    for values in itertools.product(*grid.values()):
        s = canonical(dict(zip(grid, values)), obj, cfg)
        key = tuple(sorted(s.items()))
        if key not in points:
            scfg = replace(cfg, **s)
            flag = "--ar-grid" if obj.EXACT else "--grid"
            with own_flags(SimpleNamespace(), {k: f"{flag} {k}" for k in GRID_KEYS}):  # a key's fix: its grid's
                validate(scfg, given=set(s), training=False)
            points[key] = (s, scfg, SamplerOptions.from_config(scfg))
    return list(points.values())


def curve_label(settings):
    """The curve a point belongs to: its settings but temperature."""
    return ", ".join(f"{k}={v}" for k, v in sorted(settings.items()) if k != "temperature") or "default"


def at_entropy(points, target, keys=("gen_ppl", "js_mean")):
    """One curve's keys at entropy `target`, interpolated between points; None out of reach."""
    pts = sorted(points, key=lambda q: q["sample_entropy"])
    for a, b in zip(pts, pts[1:]):
        ea, eb = a["sample_entropy"], b["sample_entropy"]
        if ea <= target <= eb:
            w = (target - ea) / (eb - ea) if eb > ea else 0.0
            return {k: a[k] + w * (b[k] - a[k]) for k in keys}
    return None


def grid_of(r, args, judge, start, gen_len, ref, generator, threads):
    """Draw, score and print every point of checkpoint r's grid: a row each (settings, figures)."""
    points = []
    for settings, scfg, opts in r["points"]:
        threads.restart()  # no pass spans the scoring
        job = Job(r["model"], replace(scfg, num_samples=args.batch_size), opts, r["tok"].mask_id)
        samples, nfe = draw(job, start, gen_len, args.n_samples, generator,
                            on_step=threads.tick if threads.auto else None)
        nfe = sum(nfe) / len(nfe)
        s = score(samples, len(start), r["tok"], judge, args.batch_size, reference=ref)
        points.append(dict(curve=curve_label(settings), settings=settings, sampler=r["obj"].describe(scfg, opts),
                           nfe=nfe, temperature=opts.law.temperature, gen_len=gen_len, n_samples=args.n_samples, **s))
        print(f"  {r['path']} [{points[-1]['curve']}] T={opts.law.temperature:g}: NFE {nfe:.1f}, entropy "
              f"{s['sample_entropy']:.3f}, gen-PPL {s['gen_ppl']:.2f}, JS {s['js_mean']:.4f}, "
              f"distinct-2 {s['distinct_2']:.3f}")
    return points


def time_points(runs, args, start, gen_len, device):
    """Time every point at each --time-batches size B (evals.samples.time_draws: the timing race.py
    reads too): seconds_bB (a draw of B), tokens_per_s_bB and its spread_bB, passes_bB,
    tokens_per_pass_bB and its pass_spread_bB, p_cache_bB (on an untimed, counted draw): medians of
    --repeats rounds in which every point draws in turn. Returns the threads ready to run then."""
    jobs = [Job(r["model"], scfg, opts, r["tok"].mask_id) for r in runs for _, scfg, opts in r["points"]]
    rows = [pt for r in runs for pt in r["rows"]]
    paths = [r["path"] for r in runs for _ in r["points"]]
    ready = []
    for b in args.time_batches:
        timings, seen = time_draws(jobs, start, gen_len, b, args.repeats, args.seed, device, args.time_draws)
        ready += seen
        for path, pt, timing in zip(paths, rows, timings):
            f = speed_figures(timing, b, gen_len)
            for key in ("seconds", "tokens_per_s", "spread", "passes", "tokens_per_pass", "pass_spread", "p_cache"):
                pt[f"{key}_b{b}"] = f[key]
            print(f"  {path} [{pt['curve']}] T={pt['temperature']:g}, batch {b}: {f['tokens_per_s']:,.0f} tokens/s "
                  f"({f['spread'][0]:,.0f}-{f['spread'][1]:,.0f}; {f['seconds']:.3f} s a draw, median of "
                  f"{args.repeats} rounds of {args.time_draws}; {f['tokens_per_pass']:.2f} tokens a pass, p_cache "
                  f"{f['p_cache']:.3f}, {f['seconds'] / f['passes'] * 1e3:.2f} ms a pass)")
    return ready


def read_curves(points, target, keys):
    """Each curve read at the held-out entropy, printed: {curve: at_entropy's reading, NFE and keys,
    or None}."""
    curves = {}
    for pt in points:
        curves.setdefault(pt["curve"], []).append(pt)
    # NFE too: an adaptive sampler's passes (--threshold, --entropy_bound) move with the temperature
    at_held = {c: at_entropy(pts, target, ("nfe", *keys)) for c, pts in curves.items()}
    for c, v in at_held.items():
        nfe = v["nfe"] if v else sum(q["nfe"] for q in curves[c]) / len(curves[c])
        speed = "".join(f", {v[k]:,.0f} tokens/s at batch {k.split('_b')[1]}" for k in keys
                        if k.startswith("tokens") and v)
        print(f"  at the held-out entropy, [{c}] (NFE {nfe:.1f}): " + (
            f"gen-PPL {v['gen_ppl']:.2f}, JS {v['js_mean']:.4f}{speed}" if v else "not reached; entropies " +
            ", ".join(f"{q['sample_entropy']:.2f}" for q in sorted(curves[c], key=lambda q: q["sample_entropy"]))))
    return at_held


def load(path, args, device):
    """Open a checkpoint, checking its grid first: {path, model, cfg, tok, obj, points}."""
    model, _, cfg, tok = open_checkpoint(path, device, args.data_path)
    compile_decode(model, replace(cfg, compile=args.compile), device)  # as inference.py samples
    obj = OBJECTIVES[cfg.objective]
    points = grid_points(args.ar_grid_values if obj.EXACT else args.grid_values, cfg, obj)
    return dict(path=str(path), model=model, cfg=cfg, tok=tok, obj=obj, points=points)


def refuse_unread(runs, args, given):
    """Refuse --compile, --grid, --ar-grid or a KEY no checkpoint reads: it would act as unset."""
    if "--compile" in given and args.compile == "true" and not any(
            r["obj"].decodes(scfg, opts, max(args.batch_size, *args.time_batches))
            for r in runs for _, scfg, opts in r["points"]):
        raise UserError("--compile compiles the KV-cached decode step, and none of these samplers runs it (an AR's "
                        "do, and a grid's dual_sample=true and bd3_speculate=true): drop it")
    for flag, exact, grid in (("--grid", False, args.grid_values), ("--ar-grid", True, args.ar_grid_values)):
        if flag not in given:
            continue
        mine = [r for r in runs if r["obj"].EXACT == exact]
        if not mine:
            kind = "AR" if exact else "diffusion"
            raise UserError(f"{flag} sets the grid of {kind} checkpoints, and none is given: drop {flag}")
        unread = [k for k in grid if not any(k in settings for r in mine for settings, _, _ in r["points"])]
        if unread:  # canonical dropped it from every point
            why = why_unread(mine[0], unread[0])
            with own_flags(SimpleNamespace(), {k: f"{flag} {k}" for k in GRID_KEYS}):  # a key's fix: its grid's
                raise UserError(f"{flag} {unread[0]}=...: no sampler of these checkpoints reads {unread[0]} "
                                f"({mine[0]['path']}: {why}): drop it, or give the grid what it acts with")


def why_unread(run, key):
    """Why run's first point leaves `key` unread, in validation's words (the reason canonical
    dropped it)."""
    _, point, opts = run["points"][0]
    obj = run["obj"]
    if key in obj.IGNORES:
        return f"objective={point.objective} does not read {key}: {obj.IGNORES[key]}"
    if key in obj.unread(point, opts):
        return f"its {'dual_sample' if opts.dual_sample else 'bd3_speculate'} reads no {key}"
    return opts.unread().get(key) or idle(point, key) or f"{key} acts only with a scored --order"


def main(argv):
    args = parse_args(argv)
    sampler_grid(args)
    with own_flags(args):  # refusals name this script's flags
        run_frontier(args, argv)


def run_frontier(args, argv):
    """Every checkpoint's points, timed, then their curves (and --json)."""
    device = pick_device(args.device)
    threads = CpuThreads(device)  # the scored draws': by what their passes measure, unless OMP_NUM_THREADS
    runs = [load(path, args, device) for path in args.checkpoints]  # every check before any work
    refuse_unread(runs, args, typed(argv))
    judge = load_judge(args.ar_checkpoint, device, {r["path"]: r["tok"] for r in runs})
    tok = runs[0]["tok"]
    start = start_ids(tok, args.prompt)
    context = min(r["cfg"].block_size for r in runs)
    gen_len = args.gen_len or context - len(start)
    if gen_len < 1:  # the prompt fills the shortest context
        raise UserError(f"--prompt is {len(start)} tokens: it fills the context of {context} tokens; give a shorter "
                        f"--prompt or a --gen-len")
    long = [r["path"] for r in runs if len(start) + gen_len > r["cfg"].block_size and not r["obj"].ANY_LENGTH]
    if long:
        raise UserError(f"start ({len(start)} tokens) + --gen-len {gen_len} exceeds {long[0]}'s context, and its "
                        f"sampler does not slide a window: use a shorter --gen-len")
    _, _, val_ids, _ = prepare_data(runs[0]["cfg"], tok, verbose=False)  # held-out text
    ref = tok.decode(val_ids[len(val_ids) // 2:].tolist())  # test: what the divergence is reported against
    windows = held_out_windows(val_ids[:len(val_ids) // 2], args.n_samples, gen_len,
                               "the validation split's first half (dev)")
    s = score(windows, 0, tok, reference=ref)
    held = dict(sample_entropy=s["sample_entropy"], js=s["js"], js_mean=s["js_mean"], n_windows=len(windows),
                gen_len=gen_len, reference_chars=len(ref), split="dev", reference_split="test")
    timed_threads = args.threads or threads.given or 1
    print(f"device: {device}; scored draws' {threads.line}; timed draws: {timed_threads} thread(s); judge "
          f"{args.ar_checkpoint}; {args.n_samples} samples of {gen_len} tokens per point; held-out entropy "
          f"{held['sample_entropy']:.3f} (dev), n-gram JS of dev text from test's {held['js_mean']:.4f}")
    g = torch.Generator().manual_seed(args.seed)
    for r in runs:
        t0 = time.time()
        r["rows"] = grid_of(r, args, judge, start, gen_len, ref, g, threads)
        r["seconds"] = time.time() - t0
    speed = [f"tokens_per_s_b{b}" for b in args.time_batches] if args.repeats else []
    torch.set_num_threads(timed_threads)  # held while timing, so the points compare
    if speed:
        note = busy_note(time_points(runs, args, start, gen_len, device), device)
        if note:
            print(note)
    rows = [dict(at_held_out=read_curves(r["rows"], held["sample_entropy"], ("gen_ppl", "js_mean", *speed)),
                 path=r["path"], name=run_name(r["path"]),
                 objective=r["cfg"].objective, exact=r["obj"].EXACT, seconds=r["seconds"],
                 self_scored=os.path.samefile(r["path"], args.ar_checkpoint), points=r["rows"]) for r in runs]
    if args.json:
        write_json(args.json, dict(settings=vars(args), device=str(device), threads=torch.get_num_threads(),
                                   torch=torch.__version__, judge=args.ar_checkpoint, held_out=held, runs=rows))


if __name__ == "__main__":
    run_cli(main)
