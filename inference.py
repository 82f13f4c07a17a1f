"""Sample from a trained checkpoint or exported folder; optionally watch or record the denoising.

    python inference.py --checkpoint artifacts/models/model.pt --prompt "Once upon a time" \
        --gen-len 256 --steps 100 --temperature 1.0 --seed 0 --trace-every 1 --gif-frame-ms 180 \
        --viz-video artifacts/media/diffusion_trace.mp4
    python inference.py cpu --viz-video artifacts/media/cpu.mp4   # the preset's checkpoint, prompt
    python inference.py cpu --live                                # the canvas, in the terminal
    python inference.py cpu --interactive                         # a sample a prompt, to Ctrl-D
    python inference.py cpu --prompts-file data/prompts.txt       # a sample a line
    python inference.py cpu --serve                               # a page: watch it think, live
    python inference.py --checkpoint artifacts/export/cpu         # from scripts/export.py
    python inference.py tinystories_bpe --gen-len 128 --viz-video artifacts/media/bpe.mp4  # tokens
    python inference.py cpu --infill "ROMEO: I [___:20] the night."
    python inference.py cpu --prefix_file start.txt --suffix_file end.txt --gen-len 64
    python inference.py cpu --threshold 0.9 --order confidence --num-samples 4   # Fast-dLLM
    python inference.py --help                                    # every key, type, default

Model, tokenizer and schedule come from the checkpoint; sampling flags from the command line.
Prompt k of --prompts-file or --interactive draws with seed --seed + k - 1, printed beside it.
"""
import os
import sys
import time
from dataclasses import replace
from functools import partial

import torch
from tqdm import tqdm

from checkpoint_manager import checkpoint_config, load_model, read_checkpoint
from config import PRESETS, TRAINED, Config
from configurator import format_config, help_text, parse, refuse_changes, validate, wants_help
from diffusion import SamplerOptions
from model import DECODERS, compile_decode
from objectives import OBJECTIVES, SAMPLED_KEYS
from sampling import serve
from sampling.canvas import build_canvas, fill
from sampling.trace import LiveView, chain, open_trace, print_written, run_name
from utils.dist import CpuThreads, autocast_for, pick_device
from utils.errors import UserError, run_cli
from utils.fileio import check_trace, own_or_shipped, read_text, trace_asked
from utils.tokenizer import BPETokenizer, fingerprint, normalize_prompt, tokenizer_from_state
from utils.values import check_values

LIVE_FPS = 8.0  # --live's steps a second at most, so the canvas can be watched
USAGE = "[PRESET] [--checkpoint MODEL.pt | EXPORT_DIR] [--key=value]..."


def main(argv):
    if wants_help(argv):
        print(help_for(argv))
        return
    cmd = parse(argv)  # the command line, read once
    if cmd.over()[0].serve:  # the page: its port checked before a model is read
        serve.main(cmd, load)
        return
    cfg, run = load(cmd)
    if cfg.interactive:
        interactive(cfg, run)
    elif cfg.prompts_file:
        prompts = read_prompts(cfg, run)  # every prompt checked before any sampling
        for i, prompt in enumerate(prompts):
            print(f"==== prompt {i + 1}/{len(prompts)}: {prompt!r} (seed {cfg.seed + i})")
            sample_once(replace(cfg, prompt=prompt, seed=cfg.seed + i), run)
    else:
        sample_once(cfg, run)


def help_for(argv):
    """--help: every key; with a preset or flags, the sampling settings they resolve to, marked as
    train.py marks its config."""
    rest = [a for a in argv if a not in ("-h", "--help")]
    if not rest:
        return help_text("inference.py", USAGE, from_checkpoint=True)
    cmd = parse(rest)
    where, _ = cmd.over()
    path = own_or_shipped(where.checkpoint)
    saved, source = Config(), f"the defaults: {where.checkpoint} is not trained yet"
    if os.path.exists(path):
        saved = checkpoint_config(read_checkpoint(path), f"checkpoint {path}")
        source = f"{path}'s own"
    cfg, given = over_checkpoint(cmd, saved)
    cfg = replace(cfg, checkpoint=path)  # the one read
    marks = {k: "*" for a in rest if a in PRESETS for k in PRESETS[a]} | dict.fromkeys(given, "+")
    return (f"python inference.py {' '.join(rest)}: the sampling settings it resolves to ('*' a preset's key, '+' a "
            f"file's or flag's; the rest: {source}; the network and its training are the checkpoint's; python "
            f"inference.py --help documents every key)\n{format_config(cfg, marks, only=SAMPLED_KEYS)}")


def over_checkpoint(cmd, saved):
    """(cfg, the keys given) of the command line (configurator.CommandLine) laid over a
    checkpoint's config: its sampling keys only."""
    cfg, flags = cmd.over(saved)
    # a preset's model and training keys do not apply: the checkpoint's stay
    kept = {k: getattr(saved, k) for k in vars(saved) if k not in SAMPLED_KEYS and k != "tokenizer_path"}
    cfg = replace(cfg, **kept)
    if "viz_video" not in flags:  # untyped: a new MP4 and GIF; none beside --html or a stream of prompts
        cfg = replace(cfg, viz_video="off" if cfg.interactive or cfg.prompts_file or cfg.html else "auto")
    return cfg, flags


def load(cmd):
    """(sampling config, run) of a command line read once (configurator.parse): nanoGPT's
    sample.py with the checks named. Each value alone and the trace's outputs are checked first;
    then the checkpoint is read, the flags are laid over its settings and checked
    (sampling_config), and only then is its model built. run["opts"]: the sampler, built once."""
    where, _ = over_checkpoint(cmd, Config())  # the flags alone, before the checkpoint is read
    check_values(where)  # a value no key takes (a --viz-video of the wrong kind, say)
    check_trace(where, where.overwrite)  # the outputs: a typed path that cannot be written, or artifacts/media
    path = own_or_shipped(where.checkpoint)  # a fresh clone's: the shipped weights
    ckpt = read_checkpoint(path, "pass --checkpoint PATH")
    saved = checkpoint_config(ckpt, f"checkpoint {path}")
    tok = tokenizer_from_state(ckpt["tokenizer"])
    cfg, flags = sampling_config(cmd, saved, tok, path)
    opts = SamplerOptions.from_config(cfg)
    device = pick_device(where.device)  # this machine's, not the one it trained on
    model, ckpt = load_model(path, device, ckpt)
    ctx, precision = autocast_for(device, cfg.dtype)  # training's policy
    if OBJECTIVES[cfg.objective].decodes(cfg, opts, cfg.num_samples):
        compile_decode(model, cfg, device)  # --compile: the KV-cached decoding steps, bd3's drafting rounds
    elif "compile" in flags and cfg.compile == "true":
        raise UserError(f"--compile compiles the KV-cached decode step, and this sampler runs none ({DECODERS}): "
                        f"drop it")
    compiled = "" if model.compiler is None else f", decoding compiled ({opts.replay_steps} steps a replay)"
    threads = CpuThreads(device)  # as train.py: by what the passes measure, unless OMP_NUM_THREADS
    print(f"checkpoint {path}: {cfg.objective}, {model.num_params():,} params, iter {ckpt['iter']}, "
          f"{tok.kind} vocab {tok.vocab_size}; device {device}, {precision} forward passes{compiled}, float64 draws; "
          f"{threads.line}")
    return cfg, dict(model=model, tok=tok, opts=opts, device=device, ctx=ctx,
                     cpt=ckpt.get("meta", {}).get("chars_per_token", 4.0), fit_gen_len="gen_len" not in flags,
                     threads=threads, name=run_name(path))


def sampling_config(cmd, saved, tok, path):
    """(cfg, the keys given): the command line over the checkpoint's config `saved`, checked: no
    trained key changed, no training key given, the sampler's keys validated, the prompt normalised
    by `tok`."""
    asked, flags = cmd.over(saved)
    refuse_changes(asked, flags & set(TRAINED), vars(saved), f"checkpoint {path}",
                   "drop those flags (sampling takes them from the checkpoint)")
    training = sorted(flags - set(SAMPLED_KEYS) - set(TRAINED) - {"tokenizer_path"})
    if training:
        raise UserError(f"inference.py samples: --{training[0]} sets training, which sampling does not read; drop it")
    cfg, _ = over_checkpoint(cmd, saved)
    # A stream of prompts (--interactive, --prompts-file) supplies every prompt and records no
    # trace: a prompt, a canvas or a trace's flag beside it is refused, naming it; before validate,
    # whose advice (give --viz-video) would clash here. (--viz-video off asks for what a stream
    # does anyway.)
    clash = [k for k in ("prompt", "infill", "prefix_file", "suffix_file") if k in flags] + trace_asked(cfg, flags)
    clash += ["prompts_file"] if cfg.interactive and cfg.prompts_file else []
    if (cfg.interactive or cfg.prompts_file) and clash:
        stream = "--interactive" if cfg.interactive else "--prompts-file"
        raise UserError(f"{stream} supplies the prompts, one sample each, and records no trace: drop "
                        f"--{clash[0].replace('_', '-')}")
    validate(cfg, flags - {"tokenizer_path"}, training=False)  # tokenizer_path: read below, against the checkpoint's
    if cfg.infill and "gen_len" in flags:  # the blanks set the length
        raise UserError("--infill's blanks set the tokens generated ([___] one per marker character, [___:N] N): "
                        "drop --gen-len")
    typed = cfg.viz_video not in ("auto", "off") or cfg.html not in ("", "auto")  # a path the user chose
    if "overwrite" in flags and not typed:
        raise UserError("--overwrite lets the --viz-video or --html path you give replace an existing file (their "
                        "default names are new each time): give one, or drop --overwrite")
    if "tokenizer_path" in flags:
        other = BPETokenizer.from_file(cfg.tokenizer_path)  # UserError if missing or not ours
        if fingerprint(other) != fingerprint(tok):
            raise UserError(f"tokenizer {cfg.tokenizer_path} (bpe, vocab {other.vocab_size}, fingerprint "
                            f"{fingerprint(other)}) differs from the one {path} was trained with ({tok.kind}, vocab "
                            f"{tok.vocab_size}, fingerprint {fingerprint(tok)}): drop --tokenizer_path to use the "
                            f"checkpoint's own")
    if cfg.interactive or cfg.prompts_file:
        cfg = replace(cfg, prompt="")  # not the checkpoint's default prompt
    return replace(cfg, prompt=normalize_prompt(tok, cfg.prompt)), flags  # BPE: NFC, no trailing spaces


def read_prompts(cfg, run):
    text = read_text(cfg.prompts_file, "--prompts-file", "give a text file with one prompt per line")
    prompts = [normalize_prompt(run["tok"], line) for line in text.splitlines() if line.strip()]
    if not prompts:
        raise UserError(f"--prompts-file {cfg.prompts_file} has no prompts: write one prompt per line")
    for i, p in enumerate(prompts):
        try:
            build_canvas(replace(cfg, prompt=p), run["opts"], run["tok"], run["model"].args.block_size,
                         run["fit_gen_len"])
        except UserError as e:
            raise UserError(f"--prompts-file {cfg.prompts_file}, prompt {i + 1}: {e}") from None
    return prompts


def interactive(cfg, run):
    """Prompts from stdin, a sample each, until EOF; a refused one says why and takes no seed."""
    k, say = 0, partial(print, file=sys.stderr, flush=True) if sys.stdin.isatty() else lambda *a, **kw: None
    say("type a prompt and press Enter (an empty line samples without one); Ctrl-D ends")
    while True:
        say("prompt> ", end="")
        line = sys.stdin.readline()
        if not line:
            say()
            return
        try:
            prompt = normalize_prompt(run["tok"], line.rstrip("\r\n"))
            # refused here: no seed used
            build_canvas(replace(cfg, prompt=prompt), run["opts"], run["tok"], run["model"].args.block_size,
                         run["fit_gen_len"])
            k += 1
            print(f"==== prompt {k}: {prompt!r} (seed {cfg.seed + k - 1})")
            sample_once(replace(cfg, prompt=prompt, seed=cfg.seed + k - 1), run)
        except UserError as e:
            print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        sys.stdout.flush()


def sample_once(cfg, run):
    """One batch of cfg.num_samples samples; prints the texts and a line of figures."""
    model, tok, opts, obj = run["model"], run["tok"], run["opts"], OBJECTIVES[cfg.objective]
    canvas = build_canvas(cfg, opts, tok, model.args.block_size, fit=run["fit_gen_len"])
    if canvas.note:
        print(canvas.note)
    # checks a --viz-video or --html path before sampling
    trace = open_trace(cfg, opts, run["name"], tok, cfg.overwrite)
    g = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    passes = obj.passes(cfg, opts, canvas.n_gen, canvas.prefix_len)
    live = LiveView(tok, passes, fps=LIVE_FPS) if cfg.live else None
    if live:
        live.start(canvas.ids, canvas.gen)
    # an ETA on a terminal's stderr, where --live draws instead
    bar = tqdm(total=passes, desc="sampling", unit="step", leave=False, disable=True if live else None,
               dynamic_ncols=True)
    hooks = chain(trace, live, run["threads"].tick, lambda st: bar.update())
    t0 = time.perf_counter()
    run["threads"].restart()  # no pass spans the time between prompts
    with trace, bar, run["ctx"]:
        texts, out, stats = fill(model, tok, canvas, cfg, opts, run["device"], g, hooks)
        sampled = time.perf_counter()
    # the sampling's own time: the trace's recording and --live's pauses left out
    dt = sampled - t0 - trace.seconds - (live.slept if live else 0)
    recorded = trace.seconds + time.perf_counter() - sampled
    nfes, seconds = stats["nfe_per_sample"], stats["seconds_per_sample"]
    for i, text in enumerate(stats["full_texts"]):
        if len(texts) > 1:
            print(f"---- sample {i}: {nfes[i]} NFE, {seconds[i]:.2f}s")
        if not (live and i == 0):  # --live's last frame already shows sample 0
            print(text)
    unit = "BPE tokens (--gen-len counts tokens, not characters)" if tok.kind == "bpe" else "tokens"
    nfe = f"{nfes[0]}" if min(nfes) == max(nfes) else f"{sum(nfes) / len(nfes):.1f} (min {min(nfes)}, max {max(nfes)})"
    sampler = obj.describe(cfg, opts)
    capped = passes is not None and passes < opts.steps and not obj.BLOCKS  # fewer blanks than --steps (bd3: blocks)
    ran = obj.describe(cfg, replace(opts, steps=passes)) if capped else sampler
    if ran != sampler:
        sampler = f"{ran} (--steps {opts.steps}: one pass a blank at most)"
    also = f"; recording the trace took {recorded:.2f}s more" if trace.writers else ""
    print(f"---- {len(texts)} x {canvas.n_gen} {unit}, NFE {nfe} per sample (model calls), {stats['nfe']} batched "
          f"passes, {dt:.2f}s sampling ({canvas.n_gen * len(texts) / dt:,.0f} tokens/s{also}); sampler: {sampler}, "
          f"{opts.law.describe()}")
    print_written(trace)


if __name__ == "__main__":
    run_cli(main)
