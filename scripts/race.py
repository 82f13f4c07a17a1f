"""The race: checkpoints sample the same prompt on one wall clock, drawn side by side (MP4 + GIF).

    python scripts/race.py     # baby_ar (KV cache) against baby_bd3 (self-speculative) and baby
    python scripts/race.py A/model.pt B/model.pt --prompt "ROMEO:" --gen-len 48 --out race.mp4

Each lane samples with its checkpoint's own sampler at batch 1, timed as frontier.py times
(evals.samples.time_draws: a warm-up, then --seeds rounds in which every lane draws in turn, no
callback inside a timed draw). A lane's figures are medians over the seeds, with the lowest and
highest. Its frames replay its median-time draw, stamped step by step on a separate, untimed
draw of that seed, the stamps scaled to the timed draw's seconds. A frame is a tick of that
clock (--tick-ms): each lane shows what it had committed by then. A lane's ratio to the first lane's
tokens/s, seed by seed, is the figure another machine repeats.
"""
import os
import statistics
import sys
import time
from dataclasses import replace

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from config import LIMITS  # noqa: E402
from utils.cli import ArgParser, at_least, output, seed  # noqa: E402
from utils.errors import UserError, run_cli  # noqa: E402
from utils.fileio import own_or_shipped  # noqa: E402

LANES = ["artifacts/models/baby_ar/model.pt", "artifacts/models/baby_bd3/model.pt", "artifacts/models/baby/model.pt"]


def parse_args(argv):
    p = ArgParser(prog="scripts/race.py", description="Samplers racing on one wall clock, drawn side by side.")
    p.add_argument("checkpoints", nargs="*", default=LANES, help="two or more model.pt files, one lane each")
    p.add_argument("--prompt", default="ROMEO:", help="the text every lane continues")
    p.add_argument("--gen-len", type=at_least(1), default=48, help="tokens each lane generates")
    p.add_argument("--seed", type=seed, default=0, help="the warm-up's seed; the timed draws take the next --seeds")
    p.add_argument("--seeds", type=at_least(1), default=21, help="timed draws a lane, one seed each: its figures "
                   "are their medians (frontier.py's --repeats), its frames its median-time draw")
    p.add_argument("--tick-ms", type=at_least(1), default=20, help="wall-clock milliseconds a frame")
    p.add_argument("--frame-ms", type=at_least(10, most=LIMITS["gif_frame_ms"][0]), default=100,
                   help="milliseconds a frame shows in the MP4 and GIF (--tick-ms: real time; 100 by default: 5x "
                   "slower, so a 0.3 s race can be watched)")
    p.add_argument("--threads", type=at_least(1, most=os.cpu_count() or 1), default=None,
                   help="CPU threads every lane samples with (default: the count OMP_NUM_THREADS or another thread "
                   "variable fixes, else 1, as scripts/frontier.py times)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | mps")
    p.add_argument("--out", type=output, default="", help="the MP4, the GIF beside it (--overwrite replaces "
                   "them); none: a new artifacts/media/race_k.mp4, never an earlier race's")
    a = p.parse_args(argv)
    if len(a.checkpoints) < 2:
        raise UserError("a race needs two or more checkpoints: give them, or none for the three baby lanes")
    a.checkpoints = [own_or_shipped(path) for path in a.checkpoints]  # a fresh clone: the shipped weights
    real = [os.path.realpath(path) for path in a.checkpoints]
    twice = next((path for path, r in zip(a.checkpoints, real) if real.count(r) > 1), None)
    if twice is not None:
        raise UserError(f"{twice} is given twice: a race compares different checkpoints; give each once")
    if a.out and not a.out.endswith(".mp4"):
        raise UserError(f"--out {a.out}: give the MP4's path, NAME.mp4 (the GIF goes beside it)")
    if a.overwrite and not a.out:
        raise UserError("--overwrite lets the --out you give replace earlier files (without one, the race's name is "
                        "new each time): give --out NAME.mp4, or drop --overwrite")
    return a


def open_lanes(args, device):
    """Each lane's model, sampling config, its sampler (built once) and tokenizer (one for all),
    checked on the prompt."""
    from diffusion import SamplerOptions
    from objectives import OBJECTIVES
    from sampling.canvas import build_canvas
    from sampling.trace import run_name
    from evals.samples import open_checkpoint, start_ids
    from utils.tokenizer import fingerprint
    lanes = []
    for path in args.checkpoints:
        model, _, cfg, tok = open_checkpoint(path, device)
        cfg = replace(cfg, prompt=args.prompt, gen_len=args.gen_len, num_samples=1)
        name = run_name(path)  # its run folder's or export's name
        lanes.append(dict(path=path, name=name, model=model, cfg=cfg, opts=SamplerOptions.from_config(cfg), tok=tok))
        if fingerprint(tok) != fingerprint(lanes[0]["tok"]):
            raise UserError(f"{path} has another tokenizer than {lanes[0]['path']}: a race compares one text")
    P = len(start_ids(lanes[0]["tok"], args.prompt))
    for lane in lanes:
        obj, cfg, W = OBJECTIVES[lane["cfg"].objective], lane["cfg"], lane["model"].args.block_size
        windowed = obj.ANY_LENGTH or (obj.SEMI_AR and lane["opts"].semi_ar_length)
        if P + args.gen_len > W and not windowed:  # the race sets only --prompt and --gen-len of a lane
            fix = f"use --gen-len {W - P} or less" if P < W else "give a shorter --prompt"
            raise UserError(f"{lane['path']} cannot race on this prompt: the prompt ({P} tokens) + --gen-len "
                            f"{args.gen_len} exceeds its context of {W} tokens: {fix}")
        try:
            build_canvas(cfg, lane["opts"], lane["tok"], W)
        except UserError as e:
            raise UserError(f"{lane['path']} cannot race with its saved sampler settings: {e}") from None
    return lanes


def run_lanes(lanes, start, args, device):
    """Time every lane (evals.samples.time_draws), then stamp its median-time draw on an untimed
    draw of that seed. Each lane gains figures (speed_figures), seed, seconds, stamps [(seconds,
    Step of sample 0)] and its caption. Returns the threads ready to run at each timed draw."""
    from evals.samples import speed_figures, time_draws
    jobs = [job(lane) for lane in lanes]
    timings, ready = time_draws(jobs, start, args.gen_len, 1, args.seeds, args.seed, device)
    for lane, timing in zip(lanes, timings):
        f = speed_figures(timing, 1, args.gen_len)
        # the median-time draw (the lower of two middle ones): its frames end at the median seconds
        k = sorted(range(args.seeds), key=lambda i: timing["seconds"][i])[(args.seeds - 1) // 2]
        lane.update(figures=f, seed=timing["seeds"][k], seconds=timing["seconds"][k])
        lane["stamps"] = stamp(lane, start, args.gen_len, lane["seed"], lane["seconds"])
        lane["caption"] = (f"{lane['name']}: {f['tokens_per_s']:,.0f} tokens/s ({f['spread'][0]:,.0f}-"
                           f"{f['spread'][1]:,.0f}), {f['tokens_per_pass']:.2f} tokens a pass "
                           f"({f['pass_spread'][0]:.2f}-{f['pass_spread'][1]:.2f}), p_cache {f['p_cache']:.2f}")
        print(f"{lane['path']}: {lane['caption']}; median draw {lane['seconds']:.3f} s (seed {lane['seed']})")
    for lane, timing in zip(lanes[1:], timings[1:]):
        ratio, low, high = paired_ratio(timings[0]["seconds"], timing["seconds"])
        print(f"{lane['name']} / {lanes[0]['name']}: {ratio:.2f}x the tokens/s ({low:.2f}-{high:.2f}: the ratio of "
              f"each seed's two draws, median and lowest-highest over {args.seeds} seeds)")
    return ready


def paired_ratio(first, other):
    """(median, lowest, highest) of first[k] / other[k]: a lane's tokens/s over the first's, seed by
    seed (one round, one load)."""
    ratios = sorted(a / b for a, b in zip(first, other))
    return statistics.median(ratios), ratios[0], ratios[-1]


def job(lane):
    """The lane's evals.samples.Job: its model, config and sampler."""
    from evals.samples import Job
    return Job(lane["model"], lane["cfg"], lane["opts"], lane["tok"].mask_id)


def stamp(lane, start, gen_len, seed, seconds):
    """[(seconds, Step of sample 0)] of an untimed draw of `seed` with a callback each step, its
    times scaled so that it ends at `seconds`, the timed draw's: the callbacks cost it nothing."""
    import torch
    from evals.samples import draw
    stamps, t0 = [], time.perf_counter()
    draw(job(lane), start, gen_len, 1, torch.Generator().manual_seed(seed),
         on_step=lambda st: stamps.append((time.perf_counter() - t0, st)))
    total = time.perf_counter() - t0
    return [(t * seconds / total, st) for t, st in stamps]


def lane_cells(lane, now, tick):
    """(texts, states) of a lane at wall-clock second `now`: its caption, then its canvas after the
    last step stamped by then (tokens a step of this tick revealed are new)."""
    from sampling.trace import token_states
    done = [(t, st) for t, st in lane["stamps"] if t <= now]
    t, st = done[-1] if done else (-1.0, lane["stamps"][0][1])
    x = st.x[0] if done else st.prev[0]
    fresh = bool(done) and t > now - tick
    cells = token_states(lane["tok"], x.tolist(), st.gen_mask[0].tolist(),
                         (st.revealed[0] & fresh).tolist(), (st.remasked[0] & fresh).tolist())
    done_at = f"  (done at {lane['seconds']:.2f} s)" if now >= lane["seconds"] else ""
    label = lane["caption"].replace(", ", done_at + "\n", 1) + "\n"  # the name and tokens/s, then the counts
    return [*label, *(c for c, _ in cells), "\n\n"], ["label"] * len(label) + [s for _, s in cells] + ["label"]


def write_frames(lanes, args, where, path):
    """The race's frames, a tick of the clock each, into the MP4 at path and the GIF beside it."""
    from sampling.video import TraceWriter
    from utils.fileio import trace_paths
    mp4, gif = trace_paths(path)
    tick, ticks = args.tick_ms / 1000, int(max(lane["seconds"] for lane in lanes) * 1000 // args.tick_ms) + 1
    slow = f", shown {args.frame_ms / args.tick_ms:g}x slower" if args.frame_ms != args.tick_ms else ""
    seeds = f"medians (lowest-highest) of {args.seeds} seeds, each lane's median-time draw shown"
    with TraceWriter(mp4, gif, frame_ms=args.frame_ms, cols=84, title="micro-dllm race: one prompt, one clock",
                     reserved=not args.out) as w:
        for k in range(ticks + 1):
            texts, states = zip(*[lane_cells(lane, k * tick, tick) for lane in lanes])
            w.add_frame(sum(texts, []), sum(states, []), k, 0.0, None,
                        caption=f"{k * tick:.2f} s of wall clock{slow}; {where}; batch 1; {seeds}")
    written = [p for p in (w.result["mp4"], w.result["gif"]) if p]
    print(f"race: {ticks + 1} frames of {args.tick_ms} ms -> {', '.join(written)}")


def main(argv):
    args = parse_args(argv)
    from utils.fileio import check_output, fresh_path, trace_paths
    if args.out:  # the MP4 and the GIF beside it: checked before any work
        for path in trace_paths(args.out):
            check_output(path, args.overwrite, "--out", "--overwrite")
    import torch
    from evals.samples import busy_note, start_ids
    from sampling.trace import MEDIA
    from utils.dist import hold_threads, machine, pick_device
    held = hold_threads()  # a bad thread variable: one line, before any work
    device = pick_device(args.device)
    lanes = open_lanes(args, device)
    torch.set_num_threads(args.threads or held)
    start = start_ids(lanes[0]["tok"], args.prompt)
    note = busy_note(run_lanes(lanes, start, args, device), device)
    where = f"{machine()}, {torch.get_num_threads()} thread(s)" if device.type == "cpu" else str(device)
    if note:  # said under the figures and in every frame: they are not this machine's speed
        print(note)
        where += ", a busy machine (not its speed)"
    path = args.out
    if not path:  # a name no earlier race holds, taken once the lanes are timed
        path = fresh_path(MEDIA, "race", ".mp4", ".gif")[0]
    write_frames(lanes, args, where, path)


if __name__ == "__main__":
    run_cli(main)
