"""The race: checkpoints sample the same prompt on one wall clock, drawn side by side (MP4 + GIF).

    python scripts/race.py     # baby_ar (KV cache) against baby_bd3 (self-speculative) and baby
    python scripts/race.py A/model.pt B/model.pt --prompt "ROMEO:" --gen-len 48 --out race.mp4

Each lane samples with its checkpoint's own sampler at batch 1, one seed, warmed first, timed as
frontier.py times (evals.samples.draw). A frame is a tick of that clock (--tick-ms): each lane shows
what it had committed by then, with its tokens/s, passes, tokens a pass and p_cache.
"""
import os
import platform
import sys
import time
from dataclasses import replace

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils.cli import ArgParser, at_least, output, seed  # noqa: E402
from utils.errors import UserError, run_cli  # noqa: E402

LANES = ["artifacts/models/baby_ar/model.pt", "artifacts/models/baby_bd3/model.pt", "artifacts/models/baby/model.pt"]


def parse_args(argv):
    p = ArgParser(prog="scripts/race.py", description="Samplers racing on one wall clock, drawn side by side.")
    p.add_argument("checkpoints", nargs="*", default=LANES, help="two or more model.pt files, one lane each")
    p.add_argument("--prompt", default="ROMEO:", help="the text every lane continues")
    p.add_argument("--gen-len", type=at_least(1), default=48, help="tokens each lane generates")
    p.add_argument("--seed", type=seed, default=0, help="the one seed every lane draws with")
    p.add_argument("--repeats", type=at_least(1), default=5, help="timed draws a lane, the same tokens each: the "
                   "median one is drawn (frontier.py's rule: the median of its rounds)")
    p.add_argument("--tick-ms", type=at_least(1), default=20, help="wall-clock milliseconds a frame")
    p.add_argument("--frame-ms", type=at_least(10), default=100, help="milliseconds a frame shows in the MP4 and "
                   "GIF (--tick-ms: real time; 100 by default: 5x slower, so a 0.3 s race can be watched)")
    p.add_argument("--threads", type=at_least(1, most=os.cpu_count() or 1), default=1,
                   help="CPU threads every lane samples with (scripts/frontier.py's default: 1)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | mps")
    p.add_argument("--out", type=output, default="artifacts/media/race.mp4", help="the MP4; the GIF goes beside it")
    a = p.parse_args(argv)
    if len(a.checkpoints) < 2:
        raise UserError("a race needs two or more checkpoints: give them, or none for the three baby lanes")
    return a


def open_lanes(args, device):
    """Each lane's model, sampling config and tokenizer (one for all), checked on the prompt."""
    from sampling.canvas import build_canvas
    from evals.samples import open_checkpoint
    from utils.tokenizer import fingerprint
    lanes = []
    for path in args.checkpoints:
        model, _, cfg, tok = open_checkpoint(path, device)
        cfg = replace(cfg, prompt=args.prompt, gen_len=args.gen_len, num_samples=1)
        name = os.path.basename(os.path.dirname(os.path.abspath(path)))
        lanes.append(dict(path=path, name=name, model=model, cfg=cfg, tok=tok))
        if fingerprint(tok) != fingerprint(lanes[0]["tok"]):
            raise UserError(f"{path} has another tokenizer than {lanes[0]['path']}: a race compares one text")
    for lane in lanes:
        try:
            build_canvas(lane["cfg"], lane["tok"], lane["model"].args.block_size)
        except UserError as e:
            raise UserError(f"{lane['path']} cannot race on this prompt: {e}") from None
    return lanes


def run_lane(lane, start, args):
    """Warm the lane, then time --repeats draws of the one seed, steps stamped by the clock; the
    median draw is the lane's: seconds, passes, columns, stamps [(seconds, Step of sample 0)]."""
    import torch
    from evals.samples import columns_counted, draw
    gen = lambda: torch.Generator().manual_seed(args.seed)  # noqa: E731
    with columns_counted(lane["model"], len(start)) as seen:
        draw(lane["model"], lane["cfg"], start, args.gen_len, 1, lane["tok"].mask_id, gen())
    runs = []
    for _ in range(args.repeats):
        stamps, t0 = [], time.perf_counter()
        _, nfe = draw(lane["model"], lane["cfg"], start, args.gen_len, 1, lane["tok"].mask_id, gen(),
                      on_step=lambda st: stamps.append((time.perf_counter() - t0, st)))
        runs.append((time.perf_counter() - t0, stamps))
    seconds, stamps = sorted(runs, key=lambda r: r[0])[len(runs) // 2]
    lane.update(seconds=seconds, passes=nfe[0], columns=seen["columns"], stamps=stamps)
    lane["caption"] = (f"{lane['name']}: {args.gen_len / lane['seconds']:,.0f} tokens/s, {nfe[0]} passes, "
                       f"{args.gen_len / nfe[0]:.2f} tokens a pass, p_cache {args.gen_len / seen['columns']:.2f}")
    print(f"{lane['path']}: {lane['caption']} ({lane['seconds']:.3f} s)")


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
    label = lane["caption"] + (f"; done at {lane['seconds']:.2f} s" if now >= lane["seconds"] else "") + "\n"
    return [*label, *(c for c, _ in cells), "\n\n"], ["label"] * len(label) + [s for _, s in cells] + ["label"]


def machine():
    """This CPU's model name (Linux's /proc/cpuinfo), else what Python knows."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def main(argv):
    args = parse_args(argv)
    from utils.fileio import trace_paths
    from utils.fileio import check_output
    for path in trace_paths(args.out):  # the MP4 and the GIF beside it: checked before any work
        check_output(path, args.force, "--out")
    import torch
    from evals.samples import start_ids
    from utils.dist import pick_device
    from sampling.video import TraceWriter
    device = pick_device(args.device)
    lanes = open_lanes(args, device)
    torch.set_num_threads(args.threads)
    start = start_ids(lanes[0]["tok"], args.prompt)
    for lane in lanes:
        run_lane(lane, start, args)
    where = f"{machine()}, {torch.get_num_threads()} thread(s)" if device.type == "cpu" else str(device)
    mp4, gif = trace_paths(args.out)
    tick, ticks = args.tick_ms / 1000, int(max(lane["seconds"] for lane in lanes) * 1000 // args.tick_ms) + 1
    slow = f", shown {args.frame_ms / args.tick_ms:g}x slower" if args.frame_ms != args.tick_ms else ""
    with TraceWriter(mp4, gif, frame_ms=args.frame_ms, cols=84, title="micro-dllm race: one prompt, one clock") as w:
        for k in range(ticks + 1):
            texts, states = zip(*[lane_cells(lane, k * tick, tick) for lane in lanes])
            w.add_frame(sum(texts, []), sum(states, []), k, 0.0, None,
                        caption=f"{k * tick:.2f} s of wall clock{slow}; {where}; batch 1, seed {args.seed}")
    written = [p for p in (w.result["mp4"], w.result["gif"]) if p]
    print(f"race: {ticks + 1} frames of {args.tick_ms} ms -> {', '.join(written)}")


if __name__ == "__main__":
    run_cli(main)
