"""Issue 89's sampling measurement: an AR checkpoint (baby_ar) against a --bd3_ar one (baby_bd3, --bd3_speculate), 250
tokens after 'ROMEO:' at batch 1 and 16, T = 1, 0 and 0.5, four ways of running the decode on a CUDA GPU:

  ar, a graph a token       the AR's decode_steps compiled (CUDA graphs), one token a replay (--replay_steps 1)
  ar, k a replay            the same, k tokens a replay (--replay_steps k)
  bd3, forward graphed      issue 78's round: the pass a CUDA graph at fixed shapes, the check and the bookkeeping
                            eager with a host read a round (batch 16: the clean half alone, a graph a token)
  bd3, whole round k        the whole round a graph (bd3._rounds), k rounds a replay, a host read a replay
                            (batch 16: the clean half alone, k tokens a replay)

Each row: tokens/s (wall, the median of 3 draws after a warm one that compiles and records the graphs), GPU ms a
step (CUDA events around each replay: a token for the AR, a round for bd3), round / AR step (bd3's ms a round over
the AR's ms a token in the matching row), bd3's tokens/s over the AR's at k, tokens a pass and p_cache (tokens over
the columns the passes read: a whole round reads 1 + n + n^2 at batch 1). Rows run in order of importance (batch 1,
T = 1 first) while --deadline allows. --smoke: the same calls on the CPU, dynamo's eager backend (no inductor, no
graphs; host clocks), 24 tokens, T = 1 and 0, one timed draw a row.

    python dev/gpu_sample.py artifacts/gpu/baby_ar/model.pt artifacts/gpu/baby_bd3/model.pt [--k 4] [--deadline 170]
"""
import functools
import os
import statistics
import sys
import time
from dataclasses import replace

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from checkpoint_manager import checkpoint_config  # noqa: E402
from config import Config  # noqa: E402
from diffusion import SamplerOptions  # noqa: E402
from evals.samples import Job, draw  # noqa: E402
from checkpoint_manager import load_model  # noqa: E402
from model import compile_decode  # noqa: E402
from utils.cli import ArgParser, at_least, model_path, typed  # noqa: E402
from utils.dist import autocast_for  # noqa: E402
from utils.errors import UserError, run_cli  # noqa: E402
from utils.tokenizer import tokenizer_from_state  # noqa: E402

VARIANTS = ("ar, a graph a token", "ar, k a replay", "bd3, forward graphed", "bd3, whole round k")


class Clock:
    """Times each call of a compiled unit (a replay): CUDA events on a GPU, the host's clock on the CPU."""

    def __init__(self, device):
        self.cuda, self.calls = device.type == "cuda", []

    def around(self, fn, steps_of):
        """fn timed; steps_of(args): the steps (tokens or rounds) a call runs."""
        def timed(*args, **kw):
            start = torch.cuda.Event(enable_timing=True) if self.cuda else time.perf_counter()
            if self.cuda:
                start.record()
            out = fn(*args, **kw)
            stop = torch.cuda.Event(enable_timing=True) if self.cuda else time.perf_counter()
            if self.cuda:
                stop.record()
            self.calls.append((start, stop, steps_of(args)))
            return out
        return timed

    def ms_a_step(self):
        """The mean milliseconds a step over the calls since the last reading (then forgets them)."""
        if self.cuda:
            torch.cuda.synchronize()
        ms = sum(a.elapsed_time(b) if self.cuda else (b - a) * 1e3 for a, b, _ in self.calls)
        steps = sum(n for _, _, n in self.calls)
        self.calls = []
        return ms / max(steps, 1)


def compiler(device, smoke):
    """torch.compile as compile_decode calls it (--smoke: dynamo's eager backend, no inductor on a CPU)."""
    if smoke:
        return functools.partial(torch.compile, backend="eager", fullgraph=True, dynamic=False)
    probe = torch.nn.Module()
    compile_decode(probe, replace(Config(), compile="true"), device)
    return probe.compiler


class ForwardGraphed(torch.nn.Module):
    """A --bd3_ar network as issue 78 ran its rounds under --compile: only the round's pass a CUDA graph (its fixed
    shapes, the static cache); the check and the bookkeeping around it (bd3._whole_round, here eager, one round a
    call: a host read a round). The window's passes (the prompt's, a moved window's) run eagerly, as they do in the
    whole-round variant."""

    def __init__(self, model, block, compile_fn, clock):
        super().__init__()
        self.net, self.args, self.tok_emb = model, model.args, model.tok_emb
        self.width = 1 + block + block * block  # a round's columns at batch 1
        self.graphed = compile_fn(model.forward)
        # the rounds eager (bd3's whole-round path, on the static cache), timed a call as the replays are
        self.compiler, self.compiled, self.decode_cache = (lambda fn: clock.around(fn, steps_of)), {}, None

    def forward(self, idx, **kw):
        return (self.graphed if idx.size(1) == self.width else self.net)(idx, **kw)


def main(argv):
    ap = ArgParser(prog="dev/gpu_sample.py", description=__doc__.splitlines()[0])
    ap.add_argument("ar", type=model_path, help="the AR's model.pt (baby_ar's)")
    ap.add_argument("bd3", type=model_path, help="the --bd3_ar network's model.pt (baby_bd3's)")
    ap.add_argument("--k", type=at_least(2), default=4, help="steps a replay of the k rows")
    ap.add_argument("--tokens", type=at_least(1), default=250, help="tokens each sample generates after 'ROMEO:'")
    ap.add_argument("--deadline", type=at_least(1), default=170, help="seconds of work; later rows are skipped")
    ap.add_argument("--smoke", action="store_true", help="the same calls on the CPU (24 tokens), no graphs")
    args = ap.parse_args(argv)
    if args.smoke and "--tokens" in typed(argv):
        raise UserError("--smoke samples 24 tokens on the CPU: drop --tokens (it sets the GPU's run)")
    if not args.smoke and not torch.cuda.is_available():
        raise UserError("dev/gpu_sample.py times CUDA graphs and no CUDA GPU is here: run it on one, or pass --smoke")
    t0, dev = time.perf_counter(), torch.device("cpu" if args.smoke else "cuda")
    G = 24 if args.smoke else args.tokens
    torch._dynamo.config.recompile_limit = 64  # a graph per (batch, temperature, k): 24 rows, one process
    torch._dynamo.config.accumulated_recompile_limit = 512
    compile_fn, clock = compiler(dev, args.smoke), Clock(dev)
    nets = {}
    for side, path in (("ar", args.ar), ("bd3", args.bd3)):
        model, ck = load_model(path, dev)
        cfg = replace(checkpoint_config(ck, f"checkpoint {path}"), device=dev.type)
        if side == "ar" and cfg.objective != "ar":
            raise UserError(f"{path} is a {cfg.objective} model: give an AR checkpoint (baby_ar's) first")
        if side == "bd3" and not (cfg.objective == "bd3" and cfg.bd3_ar):
            raise UserError(f"{path} is not a block diffusion network trained with bd3_ar=1 (baby_bd3 is): give "
                            f"baby_bd3's checkpoint second")
        tok = tokenizer_from_state(ck["tokenizer"])
        model.compiler = lambda fn: clock.around(compile_fn(fn), steps_of)
        nets[side] = (model, replace(cfg, bd3_speculate=side == "bd3", prompt="ROMEO:"), tok)
    forward_graphed = ForwardGraphed(nets["bd3"][0], nets["bd3"][1].bd3_block, compile_fn, clock)
    device_name = torch.cuda.get_device_name() if dev.type == "cuda" else "cpu (smoke: no graphs)"
    print(f"sampling, {G} tokens after 'ROMEO:', {device_name}, torch {torch.__version__}, k = {args.k}", flush=True)
    print(f"{'B':>3} {'T':>4}  {'variant':<22} {'tokens/s':>9} {'ms/step':>8} {'round/AR':>8} {'x AR k':>6} "
          f"{'tok/pass':>8} {'p_cache':>7}", flush=True)
    for B in (1, 16):
        for T in (1.0, 0.0) if args.smoke else (1.0, 0.0, 0.5):
            ar_ms, ar_speed = {}, {}  # by k: the AR rows' ms a token and tokens/s
            for name in VARIANTS:
                if time.perf_counter() - t0 > args.deadline:
                    print(f"{B:>3} {T:>4}  {name:<22} [skip] past --deadline {args.deadline} s", flush=True)
                    continue
                side = name[:name.index(",")]
                model, cfg, tok = nets[side]
                k = 1 if name in ("ar, a graph a token", "bd3, forward graphed") else args.k
                if name == "bd3, forward graphed" and B == 1:
                    model = forward_graphed
                cfg = replace(cfg, temperature=T, replay_steps=k, num_samples=B)
                speed, ms, tokens_a_pass = timed_draws(model, cfg, tok, G, B, clock, dev, 1 if args.smoke else 3)
                columns = 1 + cfg.bd3_block + cfg.bd3_block ** 2 if side == "bd3" and B == 1 else 1
                if side == "ar":
                    ar_ms[k], ar_speed[k] = ms, speed
                per_ar = ms / ar_ms[k] if side == "bd3" and k in ar_ms else None
                over_ar = speed / ar_speed[args.k] if side == "bd3" and args.k in ar_speed else None
                print(f"{B:>3} {T:>4}  {name:<22} {speed:>9,.0f} {ms:>8.3f} {_f(per_ar):>8} {_f(over_ar):>6} "
                      f"{tokens_a_pass:>8.2f} {tokens_a_pass / columns:>7.2f}", flush=True)
    print(f"done in {time.perf_counter() - t0:.0f} s", flush=True)


def timed_draws(model, cfg, tok, G, B, clock, dev, n):
    """(tokens/s, ms a step, tokens a pass) of B samples of G tokens after 'ROMEO:': a warm draw (it compiles and
    records the graphs), then n timed, the median's wall clock."""
    times, passes = [], []
    job = Job(model, cfg, SamplerOptions.from_config(cfg), tok.mask_id)  # the sampler, built once
    for i in range(1 + n):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.no_grad(), autocast_for(dev, "auto")[0]:
            _, nfe = draw(job, tok.encode("ROMEO:"), G, B, torch.Generator().manual_seed(i))
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
        passes.append(statistics.mean(nfe))
        if i == 0:
            clock.ms_a_step()  # the warm draw's calls compile
    return B * G / statistics.median(times[1:]), clock.ms_a_step(), G / statistics.mean(passes[1:])


def steps_of(args):
    """The steps a compiled unit's call runs: decode_steps(model, newest, cache, u, ...) len(u) tokens,
    bd3._rounds(model, cache, u, k, ...) k rounds."""
    return args[3] if isinstance(args[3], int) else len(args[3])


def _f(x):
    return "-" if x is None else f"{x:.2f}"


if __name__ == "__main__":
    run_cli(main)
