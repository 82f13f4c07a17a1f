"""Sampling tokens/s on the GPU at batch 1 and 16: the AR's KV-cached decode and bd3's clean-half decode (the
--bd3_speculate sampler without drafts: one token a pass), on random weights of the reference size (a pass's speed
does not depend on the weights; drafts' acceptance does, so this times the clean half alone). Each variant is timed
in one process with its shapes warmed first (a process pays cuDNN's per-shape attention setup at each new cache
length: dev/LOG.md 2026-11-27), in turns: autocast (as inference.py with --compile=false), cuDNN's attention
excluded, bf16 weights, and the decode step compiled with CUDA graphs on its static cache (inference.py's default on
CUDA: decode.compile_decode; --smoke: traced by dynamo's eager backend, no inductor on a CPU).
python dev/gpu_sample.py [--smoke] [--tokens 250]"""
import os
import sys
import time
from contextlib import contextmanager, nullcontext
from dataclasses import replace

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import bd3  # noqa: E402
import configurator  # noqa: E402
from configurator import get_config  # noqa: E402
from model import compile_decode, decode  # noqa: E402
from model import Transformer  # noqa: E402
from utils.cli import ArgParser, at_least, typed  # noqa: E402
from utils.dist import autocast_for  # noqa: E402
from utils.errors import UserError, run_cli  # noqa: E402


def main(argv):
    ap = ArgParser(prog="dev/gpu_sample.py", description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="the same calls on the CPU at toy sizes")
    ap.add_argument("--tokens", type=at_least(1), default=250, help="tokens each timed sample generates after its "
                    "6-token random prompt (--smoke: 20)")
    args = ap.parse_args(argv)
    if args.smoke and "--tokens" in typed(argv):
        raise UserError("--smoke times 20 tokens at toy sizes: drop --tokens (it sets the GPU's run)")
    if not args.smoke and not torch.cuda.is_available():
        raise UserError("dev/gpu_sample.py times a CUDA GPU and none is here: run it on one, or pass --smoke")
    dev = torch.device("cpu" if args.smoke else "cuda")
    toy = ["--n_layer=2", "--n_embd=48", "--block_size=64"] if args.smoke else []
    G, V = (20 if args.smoke else args.tokens), 66
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    from torch.nn.attention import SDPBackend, sdpa_kernel
    no_cudnn = lambda: sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])
    autocast = lambda: autocast_for(dev, "auto")[0]  # a fresh context each draw
    for name, flags in (("ar KV cache", ["--objective=ar"]), ("bd3 clean half", ["--objective=bd3", "--bd3_ar=1"])):
        cfg = get_config(flags + toy + ["--device=" + dev.type])
        m32 = Transformer(configurator.model_args(cfg, V)).to(dev).eval()
        m16 = Transformer(configurator.model_args(cfg, V)).to(dev).eval()
        m16.load_state_dict(m32.state_dict())
        m16.to(torch.bfloat16 if dev.type == "cuda" else torch.float32)
        graphed = Transformer(configurator.model_args(cfg, V)).to(dev).eval()
        graphed.load_state_dict(m32.state_dict())
        if args.smoke:
            graphed.compiled_decode = torch.compile(decode, backend="eager", fullgraph=True, dynamic=False)
        else:
            compile_decode(graphed, replace(cfg, compile="true"), dev)
        variants = {"autocast": (m32, autocast), "autocast, no cuDNN": (m32, lambda: _both(autocast(), no_cudnn())),
                    "bf16 weights": (m16, nullcontext), "autocast, graphed": (graphed, autocast)}
        for B in (1, 16):
            prompt = torch.randint(0, V - 1, (B, 6), device=dev)

            def run(m, ctx):
                g = torch.Generator().manual_seed(0)
                with torch.no_grad(), ctx():
                    if name.startswith("ar"):
                        return m.generate(prompt, G, generator=g, mask_id=V - 1)
                    return bd3.sample_clean_ar(m, prompt, G, bd3.Blocks(size=cfg.bd3_block, mask_id=V - 1), generator=g,
                                               draft=False)[0]
            for m, ctx in variants.values():
                run(m, ctx)  # every shape seen once
            times = {k: [] for k in variants}
            for _ in range(3):  # in turns
                for k, (m, ctx) in variants.items():
                    sync()
                    t = time.perf_counter()
                    run(m, ctx)
                    sync()
                    times[k].append(time.perf_counter() - t)
            for k, ts in times.items():
                dt = sorted(ts)[1]
                print(f"{name:<15} B={B:<3} {k:<18} {B * G / dt:>9,.0f} tokens/s  {dt / G * 1e3:.2f} ms a token", flush=True)


@contextmanager
def _both(a, b):
    with a, b:
        yield


if __name__ == "__main__":
    run_cli(main)
