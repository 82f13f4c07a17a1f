"""Training-step benchmark: ms/iter, tokens/s and MFU of the config's objective beside ar, same dims.

    python dev/bench_train.py  # the default model (6/6/384, ctx 256, batch 64)
    python dev/bench_train.py cpu --iters=5 --repeats=3  # any preset or config.py --key=value
    python dev/bench_train.py cpu --compare_compile  # every row eager and torch.compile'd
    python dev/bench_train.py gpt200m --vocab_size=2048 --device=cuda --compile
    python dev/bench_train.py baby --objective=bd3 --bd3_block=16  # one run per block size

One training step as train.py takes it (autocast forward, backward, clip, optimizer step), on
random tokens since speed does not depend on the text. Warm-up and compilation are not timed. Rows
take turns, so a drifting load slows all alike. MFU divides by utils/dist.PEAK_FLOPS on CUDA, by
the measured fp32 matmul rate on a CPU.

The laboratory's, in dev/: train.py's log line gives a run its ms/iter, tokens/s and MFU; these
rows side by side (eager and compiled, each objective beside the AR, peak memory) are the study
instrument RESULTS' train-speed rows came from.
"""
import itertools
import os
import statistics
import sys
from dataclasses import replace
from types import SimpleNamespace

import torch
from torch.utils._pytree import tree_leaves

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from diffusion import Draw, SamplerOptions, Schedule  # noqa: E402
from config import SAMPLED  # noqa: E402
from configurator import help_text, parse, validate, wants_help  # noqa: E402
from model import Transformer  # noqa: E402
from objectives import OBJECTIVES, model_args  # noqa: E402
from utils.dist import (CpuThreads, autocast_for, compile_step, keyed_generator, peak_flops, pick_device,  # noqa: E402
                        run_queue, timed)
from utils.cli import ArgParser, at_least  # noqa: E402
from utils.checkpoint import RENAMED  # noqa: E402
from utils.errors import UserError, run_cli  # noqa: E402
from utils.optim import build_optimizer  # noqa: E402
from utils.values import TYPES  # noqa: E402
from utils.train_log import check_memory, estimate_line  # noqa: E402
from train import ASSUMED_MFU  # noqa: E402


# config.py's keys the timed step (one micro-batch of random tokens at peak LR, past the mask-rate
# curriculum) never reads, refused since the rows would time the same. It does read device, dtype,
# seed and compile.
UNREAD = {"data_path", "val_path", "val_fraction", "tokenizer", "tokenizer_path", "max_iters", "data_steps", "min_lr",
          "warmup_iters", "total_batch_size", "ema", "activation_checkpointing", "mask_ramp", "mask_ramp_from",
          "eval_interval", "eval_iters", "log_interval", "out_dir", "resume", "init_from", "overwrite", "keep_last",
          "skip_nonfinite", "wandb_log", "wandb_project",
          *({*SAMPLED, *SamplerOptions.keys()} - {"device", "dtype", "seed", "compile"})}  # the sampler's keys too


def matmul_rate(a, batch_tokens, device):
    """fp32 matmul rate (FLOP/s) on the model's shapes (M = tokens/step), each run to ~1 GFLOP
    to amortize call overhead."""
    d, M = a.n_embd, batch_tokens
    flops, seconds = 0.0, 0.0
    for k, n in ((d, 3 * d), (d, d), (d, 4 * d), (4 * d, d), (d, a.vocab_size)):
        x, w = torch.randn(M, k, device=device), torch.randn(k, n, device=device)
        out = torch.empty(M, n, device=device)
        calls = max(1, round(1e9 / (2 * M * k * n)))
        torch.mm(x, w, out=out)  # warm-up
        flops += 2 * M * k * n * calls
        seconds += timed(lambda: torch.mm(x, w, out=out), device, calls)[0]
    return flops / seconds


def peak_memory(step, model, opt, device):
    """(peak MiB over one more step of a row, what that counts). CUDA: the allocator's peak over
    the step less what was there before, plus the row's weights and optimizer state; a CUDA graph's
    pool is not counted, its saved activations are. Linux: peak RSS (VmHWM, reset via
    /proc/self/clear_refs), memory kept from earlier rows included. Elsewhere: the peak so far."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        state = tree_leaves([model.state_dict(), opt.state_dict()])  # the row's weights and optimizer state
        own = sum(t.numel() * t.element_size() for t in state if torch.is_tensor(t))
        return (torch.cuda.max_memory_allocated(device) - before + own) / 2**20, "the row's own, on the GPU"
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak RSS (VmHWM) to the current RSS
    except OSError:  # no /proc (macOS): the peak so far, earlier rows included
        import resource  # Unix only
        step()
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
        return rss / (2**20 if sys.platform == "darwin" else 1024), "the process's peak RSS so far (no reset here)"
    step()
    with open("/proc/self/status") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    return kib / 1024, "the process's peak RSS over the row's step"


def make_step(cfg, vocab_size, device):
    """(step, model, optimizer); step() is cfg's next training step as in train.py: draws eagerly,
    then the loss compiled with the model per --compile (compile_step: CUDA graphs on CUDA)."""
    torch.manual_seed(cfg.seed)
    obj = OBJECTIVES[cfg.objective]
    model = Transformer(model_args(cfg, vocab_size)).to(device).train()
    opt = build_optimizer(model, cfg, device)
    obj, step_model = compile_step(obj, model, cfg, device)
    ctx, _ = autocast_for(device, cfg.dtype)
    schedule = Schedule(cfg.diffusion_steps, cfg.schedule)
    vocab = SimpleNamespace(vocab_size=vocab_size, mask_id=vocab_size - 1)  # all a loss reads of a tokenizer
    B, L = cfg.batch_size, cfg.block_size + obj.WINDOW
    x = torch.randint(0, vocab.mask_id, (B, L), generator=keyed_generator(cfg.seed, 0), device="cpu").to(device)
    steps = itertools.count()

    def step():
        i = next(steps)  # the step keys the same draws in every row
        u = torch.rand((), generator=keyed_generator(cfg.seed, 2, i), dtype=torch.float64)
        with ctx:
            drawn = obj.draws(x, cfg, schedule, vocab, Draw(keyed_generator(cfg.seed, 1, i), u))
            loss = obj.loss(step_model, x, cfg, schedule, vocab, drawn)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step, model, opt


def check_rows_fit(rows, vocab_size, device, dtype_name):
    """Refuse rows that together cannot fit (every row's model and optimizer are held at once), from
    networks on the meta device: before a byte is allocated, as train.py does."""
    need = 0
    for _, c in rows:
        with torch.device("meta"):
            shape = Transformer(model_args(c, vocab_size))
        flops, seq = OBJECTIVES[c.objective].flops(shape, c)
        need += estimate_line(c, shape, device, dtype_name, flops, seq, ASSUMED_MFU)[1]
    check_memory(rows[-1][1], device, need)


def main(argv):
    ap = ArgParser(prog="dev/bench_train.py", description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=at_least(1), default=5, help="training steps timed a repeat (their mean)")
    ap.add_argument("--repeats", type=at_least(1), default=3, help="timed repeats of every row, in turns (the median)")
    ap.add_argument("--warmup", type=at_least(0), default=2, help="untimed steps first (compilation happens here)")
    ap.add_argument("--vocab_size", type=at_least(2), default=66, help="with [MASK]: 66 = Shakespeare's, 2048 = BPE")
    ap.add_argument("--compare_compile", action="store_true", help="time every row eager and torch.compile'd")
    if wants_help(argv) and any(a not in ("-h", "--help") for a in argv):  # what a preset or flag resolves to
        _, rest = ap.parse_known_args([a for a in argv if a not in ("-h", "--help")])
        print(ap.format_help())
        print("the config its rows time (each objective's, at these dimensions), as train.py resolves it:")
        print(help_text("train.py", "", argv=[*rest, "--help"]))
        return
    args, rest = ap.parse_known_args(argv)
    for word in rest:  # config.py's; a non-key close to our flags is a slip
        key = word[2:].split("=")[0].replace("-", "_") if word.startswith("--") else None
        if key is not None and key not in TYPES and key not in RENAMED and ap.close_options(word):
            ap.error(ap.unrecognized([word]))
    cfg, given = parse(rest).over()  # the command line, read once, then checked as train.py's
    validate(cfg, given)
    unread = sorted(given & UNREAD)
    if unread:
        raise UserError(f"--{unread[0]} is not read by the timed step (one micro-batch of random tokens at the peak "
                        f"LR, no EMA, evals, checkpoints or samples): drop it")
    if args.compare_compile and "compile" in given:  # each row sets its own
        raise UserError(f"--compare_compile times every row eager and compiled, so --compile={cfg.compile} is never "
                        f"read: drop one of the two")
    device = pick_device(cfg.device)
    CpuThreads(device)  # one thread on a CPU unless OMP_NUM_THREADS says more, held while timing: the rows compare
    _, dtype_name = autocast_for(device, cfg.dtype)  # and on CUDA TF32 outside autocast, as train.py
    tokens = cfg.batch_size * cfg.block_size
    rows = [("ar", replace(cfg, objective="ar")), (cfg.objective, cfg)]
    if args.compare_compile:
        rows = [(f"{name} {tag}", replace(c, compile=on)) for name, c in rows
                for tag, on in (("eager", "false"), ("compiled", "true"))]
    a = model_args(cfg, args.vocab_size)
    check_rows_fit(rows, args.vocab_size, device, dtype_name)
    print(f"device {device} ({dtype_name}), {a.n_layer}L/{a.n_head}H/{a.n_embd}d, ctx {a.block_size}, vocab "
          f"{a.vocab_size}, batch {cfg.batch_size}: {tokens:,} tokens/step; median of {args.repeats} x {args.iters} "
          f"steps after {args.warmup} warm-up; {torch.get_num_threads()} thread(s) (OMP_NUM_THREADS=N times at N)")
    # round-robin, then each row's median (on a CPU, one peak sample per round)
    steps = {name: make_step(c, args.vocab_size, device) for name, c in rows}
    for _ in range(args.warmup):
        for step, *_ in steps.values():
            step()
    times, peaks, ready = {name: [] for name in steps}, [], []
    for _ in range(args.repeats):
        if device.type != "cuda":
            peaks.append(matmul_rate(a, tokens, device))
        for name, (step, *_) in steps.items():
            ready.append(run_queue() or 0)  # threads ready to run, this one included: was the machine quiet?
            times[name].append(timed(step, device, args.iters)[0] / args.iters)
    memory = {name: peak_memory(*row, device) for name, row in steps.items()}  # each row's own untimed step
    if device.type == "cuda":
        peak, src = peak_flops(device), f"{torch.cuda.get_device_name(device)} bf16 peak from utils/dist.PEAK_FLOPS"
    else:
        peak, src = statistics.median(peaks), "fp32 matmul of the model's shapes, measured between the rounds"
    print(f"peak: {peak / 1e9:,.1f} GFLOP/s ({src})" if peak else "peak: unknown for this GPU, so no MFU")
    print_results(steps, times, dict(rows), tokens, peak, memory)
    cores = os.cpu_count() or 1
    if device.type == "cpu" and statistics.median(ready) > cores:
        print(f"note: the machine was busy: {statistics.median(ready):g} threads ready to run on {cores} cores (median "
              f"while timing, up to {max(ready)}); these figures are not its speed, nor their ratios: time it alone")


def print_results(steps, times, configs, tokens, peak, memory):
    """Per row: median ms/iter, tokens/s, MFU and peak MiB; then each row's time over its AR
    partner's, the figure the rows are there to compare."""
    print(f"{'row':<24} {'ms/iter':>9} {'tokens/s':>11} {'MFU':>7} {'peak MiB':>9}")
    results = {}
    for name, (_, model, _) in steps.items():
        sec = results[name] = statistics.median(times[name])
        flops = OBJECTIVES[configs[name].objective].flops(model, configs[name])[0]
        mfu = f"{flops * tokens / sec / peak * 100:6.1f}%" if peak else "     -"
        print(f"{name:<24} {sec * 1000:9.1f} {tokens / sec:11,.0f} {mfu} {memory[name][0]:9,.0f}")
    print(f"peak MiB: {next(iter(memory.values()))[1]}")
    for name, sec in results.items():
        if not name.startswith("ar"):
            # its AR partner: the same --compare_compile tag, or plain "ar"
            ar_name = " ".join(["ar"] + [w for w in name.split() if w in ("eager", "compiled")])
            print(f"time ratio {name} / {ar_name}: {sec / results[ar_name]:.3f}")


if __name__ == "__main__":
    run_cli(main)
