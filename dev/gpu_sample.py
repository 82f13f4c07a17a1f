"""Sampling tokens/s on the GPU at batch 1 and 16 for the AR's KV-cached decode and bd3's clean-half decode (the
--bd3_speculate sampler without drafts: one token a pass at batch > 1), on random weights of the reference size (the
speed of a pass does not depend on the weights; drafts' acceptance does, so batch 1 here is the clean half alone).
python dev/gpu_sample.py [--smoke]"""
import sys, time
import torch
sys.path.insert(0, ".")
import bd3, objectives
from configurator import get_config
from model import Transformer
from utils.dist import autocast_for

smoke = "--smoke" in sys.argv
dev = torch.device("cpu" if smoke else "cuda")
toy = ["--n_layer=2", "--n_embd=48", "--block_size=64"] if smoke else []
G, V = (20 if smoke else 250), 66
ctx, _ = autocast_for(dev, "auto")
for name, flags in (("ar KV cache", ["--objective=ar"]), ("bd3 clean half (--bd3_speculate, no drafts)", ["--objective=bd3", "--bd3_ar=1"])):
    cfg = get_config(flags + toy + ["--device=" + dev.type])
    m = Transformer(objectives.model_args(cfg, V)).to(dev).eval()
    for B in (1, 16):
        prompt = torch.randint(0, V - 1, (B, 6), device=dev)
        def f():
            g = torch.Generator().manual_seed(0)
            with torch.no_grad(), ctx:
                if name.startswith("ar"):
                    return m.generate(prompt, G, 1.0, 0, 1.0, g, V - 1)
                return bd3.sample_clean_ar(m, prompt, G, cfg.bd3_block, V - 1, generator=g, draft=False)[0]
        f()
        ts = []
        for _ in range(3):
            if dev.type == "cuda": torch.cuda.synchronize()
            t = time.perf_counter(); f()
            if dev.type == "cuda": torch.cuda.synchronize()
            ts.append(time.perf_counter() - t)
        dt = sorted(ts)[1]
        print(f"{name:<46} B={B:<3} {B * G / dt:>9,.0f} tokens/s  {dt / G * 1e3:.2f} ms a token", flush=True)
