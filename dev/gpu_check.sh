#!/usr/bin/env bash
# micro-dllm GPU check (~6-7 min on one H100; self-limits to DEADLINE s of work). From the repo root: bash dev/gpu_check.sh
# Prints one table last; gpu_check.log, results.json and train_{mdlm,ar,bd3}.log go to $OUT (a temp dir when unset).
# SECTIONS=attention,train,syncs,graphs,runs,recipe,sampling,frontier,gpt200m picks sections (a rerun: the failed one; sampling reads the
# checkpoints runs writes); DEADLINE=450 the seconds of work before later sections are skipped; PYTHON= the interpreter.
# SMOKE=1 runs the same code on the CPU at toy sizes (an API and syntax check, no timings; CUDA-only calls guarded).
# Training rows as scripts/bench_train.make_step (the step makes no host sync: no patch). SMOKE ran clean at ef0588e, torch 2.13.
set -u
cd "$(dirname "$0")/.." || exit 1
WORK=${WORK:-$(mktemp -d)}; OUT=${OUT:-$WORK/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 WORK OUT DEADLINE=${DEADLINE:-450} SMOKE=${SMOKE:-0} SECTIONS=${SECTIONS:-attention,train,syncs,graphs,runs,recipe,sampling,frontier,gpt200m}
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader
"${PYTHON:-python3}" - <<'PY' 2>&1 | tee "$OUT/gpu_check.log" | grep --line-buffered -v -e Warning -e warn -e '^USDT'
import json, os, re, subprocess, sys, time, traceback, warnings, statistics as st
sys.path.insert(0, os.getcwd())
import torch, torch.nn.functional as F
import objectives, bd3, sampler
from common import Draw, Schedule
from configurator import get_config
from model import Transformer
from sampler import SamplerOptions
from utils.dist import autocast_for, keyed_generator, peak_flops
from utils.optim import build_optimizer
T0, DL, SMOKE, OUT, W = time.time(), float(os.environ["DEADLINE"]), os.environ["SMOKE"] == "1", os.environ["OUT"], os.environ["WORK"]
dev = torch.device("cpu" if SMOKE else "cuda")
TOY = ["--n_embd=48", "--block_size=32", "--batch_size=4"] if SMOKE else []
R, LINES = {}, []
left = lambda: DL - (time.time() - T0)
def out(s): LINES.append(s); print(s, flush=True)
def sync(): torch.cuda.synchronize() if dev.type == "cuda" else None
def section(name, need, key):  # skip a section not asked for, or that would overrun the deadline
    if key not in os.environ["SECTIONS"].split(","): return False
    if left() < need: out(f"[skip] {name}: {left():.0f}s left < {need}s"); return False
    print(f"\n== {name} ({time.time() - T0:.0f}s)", flush=True); return True
def guard(f):
    try: return f()
    except Exception as e: out(f"[fail] {f.__name__}: {type(e).__name__}: {str(e)[:200]}"); traceback.print_exc(); return None
def timeit(fn, n, rep):  # median ms of rep rounds of n calls, the device synchronised around each round
    ts = []
    for _ in range(rep):
        sync(); t = time.perf_counter()
        for _ in range(n): fn()
        sync(); ts.append((time.perf_counter() - t) / n * 1e3)
    return st.median(ts)

# ---- S0 environment
out(f"torch {torch.__version__}, {torch.cuda.get_device_name() if dev.type == 'cuda' else 'cpu'}, "
    f"SDPA order {[{0: 'math', 1: 'flash', 2: 'efficient', 3: 'cudnn', 4: 'overrideable'}.get(int(b), b) for b in torch._C._get_sdp_priority_order()] if hasattr(torch._C, '_get_sdp_priority_order') else '?'}")

# ---- S1 attention: which SDPA kernel each pattern hits, fwd+bwd ms; flex_attention for bd3's mask
def attention():
    B, H, D, L = (4, 2, 8, 32) if SMOKE else (64, 6, 64, 256)
    bdt = torch.float32 if SMOKE else torch.bfloat16
    m508 = bd3.bd3_attn_mask(L, 4, dev)[:2 * L - 4, :2 * L - 4]  # bd3_logits' mask at L' = 4 (its last clean block left out)
    cases = {"mdlm full": (L, {}), "mdlm full, cuDNN forced": (L, dict(backend="CUDNN_ATTENTION")),
             "ar is_causal": (L, dict(is_causal=True)), "bd3 bool mask": (2 * L - 4, dict(attn_mask=m508)),
             "bd3 bool mask, cuDNN forced": (2 * L - 4, dict(attn_mask=m508, backend="CUDNN_ATTENTION")),
             "dual_ar tril mask": (L - 1, dict(attn_mask=torch.ones(L - 1, L - 1, dtype=torch.bool, device=dev).tril())),
             "dual_ar is_causal": (L - 1, dict(is_causal=True))}
    res = {}
    from contextlib import nullcontext
    from torch.nn.attention import SDPBackend, sdpa_kernel
    for name, (n, kw) in cases.items():
        kw = dict(kw); be = kw.pop("backend", None)
        if be and SMOKE: continue
        q, k, v = (torch.randn(B, H, n, D, device=dev, dtype=bdt, requires_grad=True) for _ in range(3))
        def f(kw=kw, be=be, q=q, k=k, v=v):
            with sdpa_kernel([getattr(SDPBackend, be)]) if be else nullcontext():
                F.scaled_dot_product_attention(q, k, v, **kw).sum().backward()
        try: f()
        except Exception as e: res[name] = (float("nan"), f"unsupported: {str(e)[:50]}"); continue
        kern = "-"
        if dev.type == "cuda":
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as p: f(); sync()
            names = [e.name for e in p.events() if any(s in e.name.lower() for s in ("flash", "fmha", "attention", "cudnn", "efficient", "sdpa"))]
            kern = names[0][:60] if names else "math (no fused kernel)"
        res[name] = (timeit(f, 10, 3), kern)
    try:  # flex_attention with the same mask as a BlockMask (compiled: eager flex is a slow reference)
        assert not SMOKE, "no flex on the CPU smoke run"
        from torch.nn.attention.flex_attention import flex_attention, create_block_mask
        n = 2 * L - 4
        bm = create_block_mask(lambda b, h, qi, ki: m508[qi, ki], None, None, n, n, device=dev)
        fx = torch.compile(flex_attention)
        q, k, v = (torch.randn(B, H, n, D, device=dev, dtype=bdt, requires_grad=True) for _ in range(3))
        f = lambda: fx(q, k, v, block_mask=bm).sum().backward()
        f(); res["bd3 flex_attention"] = (timeit(f, 10, 3), f"BlockMask sparsity {bm.sparsity():.0f}%")
    except Exception as e:
        res["bd3 flex_attention"] = (float("nan"), f"failed: {type(e).__name__}")
    R["attention"] = res
if section("attention kernels", 60, "attention"): guard(attention)

# ---- training-step rows (as scripts/bench_train.make_step, plus the compile mode and activation checkpointing)
def make_step(flags, vocab=66, mode=None):
    cfg = get_config(flags + TOY + ["--device=" + dev.type])
    torch.manual_seed(cfg.seed)
    obj = objectives.get(cfg.objective)
    model = Transformer(objectives.model_args(cfg, vocab)).to(dev).train()
    model.checkpointing = cfg.activation_checkpointing  # as train.py sets it
    opt = build_optimizer(model, cfg, dev)
    net = model if mode is None else torch.compile(model, **({} if mode == "default" else dict(mode=mode)))
    ctx, _ = autocast_for(dev, cfg.dtype)
    sch, tok = Schedule(cfg.diffusion_steps, cfg.schedule), type("Tok", (), dict(vocab_size=vocab, mask_id=vocab - 1))
    x = torch.randint(0, vocab - 1, (cfg.batch_size, cfg.block_size + obj.WINDOW), generator=keyed_generator(cfg.seed, 0)).to(dev)
    it = [0]
    def step():
        i = it[0] = it[0] + 1
        u = torch.rand((), generator=keyed_generator(cfg.seed, 2, i), dtype=torch.float64)
        with ctx:
            loss = obj.loss(net, x, cfg, sch, tok, Draw(keyed_generator(cfg.seed, 1, i), u))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step(); opt.zero_grad(set_to_none=True)
    flops = obj.flops(model, cfg)[0] * cfg.batch_size * cfg.block_size
    return step, flops, cfg

PEAK = peak_flops(dev) or 989e12
def row(name, flags, mode=None, n=20, rep=5, vocab=66, warm=3):
    try:
        if dev.type == "cuda": torch.cuda.reset_peak_memory_stats()
        step, flops, cfg = make_step(flags, vocab, mode)
        for _ in range(warm): step()
        ms = timeit(step, 2 if SMOKE else n, 1 if SMOKE else rep)
        peak = torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else float("nan")  # weights, AdamW, grads, activations
        r = dict(ms=ms, mtok=cfg.batch_size * cfg.block_size / ms / 1e3, mfu=flops / (ms / 1e3) / PEAK * 100, peak_mib=peak)
    except Exception as e:
        r = dict(error=f"{type(e).__name__}: {str(e)[:120]}"); traceback.print_exc()
    R.setdefault("train", {})[name] = r
    print(f"  {name:<36} {r}", flush=True)
    if dev.type == "cuda": torch.cuda.empty_cache()

def train_rows():
    C = None if SMOKE else "default"  # SMOKE: no inductor on this CPU
    for obj, fl in (("ar", ["--objective=ar"]), ("mdlm", []), ("bd3 L'=4", ["--objective=bd3", "--bd3_block=4"]),
                    ("nanoGPT-like AR", ["--objective=ar", "--dropout=0.2", "--tie_weights=true"]),
                    ("mdlm Muon (baby/cpu optimizer)", ["--optimizer=muon", "--muon_lr=0.005"])):
        row(f"{obj} eager", fl)
        if left() > 200: row(f"{obj} compiled", fl, C)
    if left() > 200: row("mdlm compiled reduce-overhead (CUDA graphs)", [], None if SMOKE else "reduce-overhead")
    torch._dynamo.reset()  # frees the CUDA-graph pool before the memory rows
if section("training step, reference recipe", 150, "train"): guard(train_rows)

# ---- host syncs per training step and per sampler call (torch.cuda.set_sync_debug_mode)
def syncs():  # on the CPU smoke run the same calls, counting nothing
    import traceback as tb
    def count(fn):
        sites = {}
        def hook(message, category, filename, lineno, file=None, line=None):
            if "synchroniz" in str(message):
                fr = [f for f in tb.extract_stack()[:-1] if os.getcwd() in f.filename and "site-packages" not in f.filename]
                w = f"{os.path.relpath(fr[-1].filename)}:{fr[-1].lineno}" if fr else "?"
                sites[w] = sites.get(w, 0) + 1
        old = warnings.showwarning
        with warnings.catch_warnings():
            warnings.simplefilter("always"); warnings.showwarning = hook
            if dev.type == "cuda": torch.cuda.set_sync_debug_mode(1)
            try: fn()
            finally:
                if dev.type == "cuda": torch.cuda.set_sync_debug_mode(0)
                warnings.showwarning = old
        return sites
    res = {}
    for name, fl in (("ar", ["--objective=ar"]), ("mdlm", []), ("bd3", ["--objective=bd3"])):
        step, _, _ = make_step(fl); step()
        res[f"train {name}"] = count(step)
    torch.manual_seed(0)
    V, n = 66, 20 if SMOKE else 32
    for name, fl in (("ar KV cache", ["--objective=ar"]), ("mdlm denoise", []), ("bd3 speculative", ["--objective=bd3", "--bd3_ar=1"])):
        cfg = get_config(fl + TOY + ["--device=" + dev.type])
        m = Transformer(objectives.model_args(cfg, V)).to(dev).eval(); sch = Schedule(cfg.diffusion_steps)
        for B in (1, 16):
            x = torch.cat([torch.randint(0, V - 1, (B, 6), device=dev), torch.full((B, n), V - 1, device=dev)], 1)
            g = torch.Generator().manual_seed(0); ctx, _ = autocast_for(dev, "auto")
            with torch.no_grad(), ctx:
                if name.startswith("ar"): f = lambda: (m.generate(x[:, :6], n, 1.0, 0, 1.0, g, V - 1), dict(nfe=n))
                elif name.startswith("mdlm"): f = lambda: sampler.denoise(m, x, x == V - 1, sch, V - 1, SamplerOptions(steps=16), g)
                else: f = lambda: bd3.sample_clean_ar(m, x[:, :6], n, 4, V - 1, generator=g)  # drafts at B = 1 only
                f(); r = [None]; s = count(lambda: r.__setitem__(0, f()))
            res[f"sample {name} B={B} ({r[0][1]['nfe']} passes, {n} tokens)"] = s
    R["syncs"] = res
    for k, s in res.items():
        top = ", ".join(f"{w} x{c}" for w, c in sorted(s.items(), key=lambda kv: -kv[1])[:6])
        print(f"  {k}: {sum(s.values())} syncs: {top}", flush=True)
if section("host syncs", 40, "syncs"): guard(syncs)

def graph_rows():  # every objective's step compiled with CUDA graphs (train.py's compile on one CUDA GPU)
    for obj, fl in (("ar", ["--objective=ar"]), ("bd3 L'=4", ["--objective=bd3", "--bd3_block=4"]), ("mdlm", [])):
        row(f"{obj} compiled reduce-overhead (CUDA graphs)", fl, None if SMOKE else "reduce-overhead")
    torch._dynamo.reset()
if section("CUDA graphs, every objective", 60, "graphs"): guard(graph_rows)

# ---- 1,000-step shakespeare_char (the reference recipe, compiled), then the AR and bd3 that sampling reads
TRAIN = ("import atexit,runpy,sys,torch; atexit.register(lambda: print('PEAK_MIB', round(torch.cuda.max_memory_allocated()/2**20)"
         " if torch.cuda.is_available() else 0)); sys.argv=['train.py']+sys.argv[1:]; runpy.run_path('train.py', run_name='__main__')")
def train_cmd(out_dir, *flags):
    it = ["--max_iters=20", "--eval_interval=10", "--n_layer=2", "--n_embd=48", "--block_size=32", "--eval_iters=2"] if SMOKE else ["--max_iters=1000"]
    return [sys.executable, "-c", TRAIN, "shakespeare_char", f"--out_dir={out_dir}", "--overwrite", "--log_interval=50",
            f"--compile={'false' if SMOKE else 'true'}", f"--device={dev.type}", *it, *flags]
def parse_run(log, wall):
    last = lambda pat: (re.findall(pat, log) or [None])[-1]
    return dict(wall_s=wall, ms_it=last(r"(\d+) ms/it"), tok_s=last(r"\| ([\d,]+) tok/s"), mfu=last(r"mfu ([\d.]+)%"),
                dev=last(r"eval \d+: dev \w+ [^\n]*?= ([\d.]+) ± [\d.]+ nats/char"),
                test=last(r"test [^\n]*?cite\): [^\n]*?= ([\d.]+) ± [\d.]+ nats/char"), peak_mib=last(r"PEAK_MIB (\d+)"),
                first_step_s=last(r"iter 1/\d+ \| ([\d.]+) s/step"))
def runs():
    t = time.time(); p = subprocess.run(train_cmd(f"{W}/mdlm"), capture_output=True, text=True)
    open(f"{OUT}/train_mdlm.log", "w").write(p.stdout + p.stderr)
    R["run_mdlm"] = parse_run(p.stdout, time.time() - t); print(" ", R["run_mdlm"], flush=True)
    if p.returncode: out(f"[fail] mdlm run rc={p.returncode}: {p.stderr[-300:]}")
    if left() < 110: return
    t = time.time()  # the two checkpoints sampling needs, side by side (their timings are not read)
    ps = {n: subprocess.Popen(train_cmd(f"{W}/{n}", *f), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
          for n, f in (("ar", ["--objective=ar"]), ("bd3", ["--objective=bd3", "--bd3_block=4", "--bd3_ar=1", "--mask_min=0.3",
                                                             "--bd3_loss=all_ce"]))}
    for n, p in ps.items():
        log = p.communicate()[0]; open(f"{OUT}/train_{n}.log", "w").write(log)
        R[f"run_{n}"] = parse_run(log, time.time() - t); print(" ", n, R[f"run_{n}"], flush=True)
        if p.returncode: out(f"[fail] {n} run rc={p.returncode}: {log[-300:]}")
if section("1,000-step shakespeare_char runs", 130, "runs"): guard(runs)

def recipe():  # `python train.py` as a user runs it: the reference recipe, 5,000 steps, compile=auto
    toy = ["--max_iters=20", "--eval_interval=10", "--n_layer=2", "--n_embd=48", "--block_size=32", "--eval_iters=2"]
    t = time.time(); p = subprocess.run([sys.executable, "-c", TRAIN, f"--out_dir={W}/ref", "--overwrite",
                                         f"--device={dev.type}", *(toy if SMOKE else [])], capture_output=True, text=True)
    open(f"{OUT}/train_ref.log", "w").write(p.stdout + p.stderr)
    R["run_ref"] = dict(parse_run(p.stdout, time.time() - t), trained=(re.findall(r"trained (\d+m\d+s)", p.stdout) or [None])[-1])
    print(" ", R["run_ref"], flush=True)
    if p.returncode: out(f"[fail] reference recipe rc={p.returncode}: {p.stderr[-300:]}")
if section("the reference recipe, python train.py", 100, "recipe"): guard(recipe)

# ---- sampling tokens/s at batch 1 and 16: 250 tokens after 'ROMEO:' (inference.py's path)
def sampling():
    import inference, canvas as cv
    G = 26 if SMOKE else 250
    setups = [("ar KV cache", "ar", []), ("mdlm 100 steps (ckpt sampler)", "mdlm", ["--steps=" + ("6" if SMOKE else "100")]),
              ("mdlm cpu-preset sampler (64 st, random, remdm)", "mdlm", ["--steps=" + ("6" if SMOKE else "64"), "--order=random",
                                                                         "--remask=remdm", "--remask_eta=0.05"]),
              ("bd3 speculative (clean half's AR)", "bd3", ["--bd3_speculate=true"]),
              ("bd3 l2r, 1 token a pass", "bd3", ["--order=l2r", "--remask=none", "--steps=4"])]
    res = {}
    for name, run_dir, extra in setups:
        ck = f"{W}/{run_dir}/model.pt"
        if not os.path.exists(ck): res[name] = "no checkpoint"; continue
        for B in (1, 16):
            cfg, run = inference.load(["--checkpoint", ck, f"--device={dev.type}", "--prompt=ROMEO:", f"--gen_len={G}",
                                       f"--num_samples={B}", "--seed=0", *extra])
            c = cv.build_canvas(cfg, run["tok"], run["model"].args.block_size)
            def draw():
                with run["ctx"]:
                    return cv.generate(run["model"], run["tok"], c, cfg, run["schedule"], run["device"], torch.Generator().manual_seed(0))
            draw(); sync(); t = time.perf_counter(); _, _, stats = draw(); sync(); dt = time.perf_counter() - t
            res[f"{name} B={B}"] = dict(tok_s=B * G / dt, passes_per_token=stats["nfe"] / G, seconds=dt)
            print(f"  {name} B={B}: {B * G / dt:,.0f} tokens/s, {stats['nfe'] / G:.2f} passes a token", flush=True)
    R["sampling"] = res
if section("sampling", 45, "sampling"): guard(sampling)

# ---- issue 64 on the GPU: B10 against baby_ar at the held-out entropy, batch 1 and 16 (carry artifacts/gpu: its
# baby_bd3/, baby_ar/ and judge_baby/ model.pt files, ~10 MB each; both sides eager, as inference.py runs)
def frontier():
    g = "artifacts/gpu"
    if not all(os.path.exists(f"{g}/{m}/model.pt") for m in ("baby_bd3", "baby_ar", "judge_baby")):
        out(f"[skip] frontier: carry {g}/{{baby_bd3,baby_ar,judge_baby}}/model.pt"); return
    for seed in (0, 1):
        p = subprocess.run([sys.executable, "scripts/frontier.py", f"{g}/baby_bd3/model.pt", f"{g}/baby_ar/model.pt",
                            "--ar-checkpoint", f"{g}/judge_baby/model.pt", "--device", dev.type, "--n-samples",
                            "16" if SMOKE else "128", "--batch-size", "16" if SMOKE else "64", "--repeats",
                            "1" if SMOKE else "9", "--time-batches", "1,16", "--grid", "bd3_speculate=true", "--grid",
                            "temperature=0.8,0.9,1.0", "--ar-grid", "temperature=0.7,0.8,0.9,1.0", "--ar-grid",
                            "top_p=1.0", "--seed", str(seed)], capture_output=True, text=True)
        open(f"{OUT}/frontier_s{seed}.log", "w").write(p.stdout + p.stderr)
        R[f"frontier seed {seed}"] = [l.strip() for l in p.stdout.splitlines() if "held-out entropy," in l] or p.stderr[-300:]
        print(" ", R[f"frontier seed {seed}"], flush=True)
if section("frontier (issue 64)", 60, "frontier"): guard(frontier)

# ---- gpt200m: one micro-step (32 x 1024, vocab 2048) eager: memory and speed; bd3 doubles the columns
def gpt200m():
    toy = ["--n_layer=2", "--n_embd=64", "--n_head=2", "--block_size=64", "--batch_size=2"] if SMOKE else []
    bd3_2 = ["--objective=bd3", "--bd3_ar=1", "--mask_draws=2"]
    for name, fl in (("gpt200m mdlm", []), ("gpt200m ar", ["--objective=ar"]), ("gpt200m bd3", ["--objective=bd3"]),
                     ("gpt200m bd3 bd3_ar mask_draws=2, act. ckpt", [*bd3_2, "--activation_checkpointing=true"]),
                     ("gpt200m bd3 bd3_ar mask_draws=2", bd3_2)):  # the last is expected to run out of memory
        if left() < 25: break
        row(name, ["gpt200m", "--compile=false", *fl, *toy], vocab=2048, n=2, rep=1, warm=1)
if section("gpt200m micro-step", 50, "gpt200m"): guard(gpt200m)

# ---- the table
json.dump(R, open(f"{OUT}/results.json", "w"), indent=1, default=str)
f = lambda v, d=1: "-" if v is None or v != v else f"{v:,.{d}f}"
print(f"\n==== micro-dllm GPU check, {time.time() - T0:.0f} s ====")
for l in LINES: print(l)
if "attention" in R:
    print("attention fwd+bwd, B64 H6 D64 bf16: " + "; ".join(f"{k} {f(v[0], 2)} ms [{v[1]}]" for k, v in R["attention"].items()))
if "train" in R: print(f"{'train step (64 x 256 tok; gpt200m 32 x 1024)':<44} {'ms':>7} {'Mtok/s':>7} {'MFU%':>6} {'peak MiB':>9}")
for k, r in R.get("train", {}).items():
    print(f"{k:<44} {f(r.get('ms'), 2):>7} {f(r.get('mtok'), 2):>7} {f(r.get('mfu')):>6} {f(r.get('peak_mib'), 0):>9} {r.get('error', '')}")
for k in ("run_mdlm", "run_ar", "run_bd3", "run_ref"):
    if k in R: print("%s %s steps: wall %.0f s (first step %s s), %s ms/it, %s tok/s, mfu %s%%, dev %s, test %s nats/char, peak %s MiB, trained %s" % (
        k, 5000 if k == "run_ref" else 1000, R[k]["wall_s"], R[k]["first_step_s"], R[k]["ms_it"], R[k]["tok_s"], R[k]["mfu"], R[k]["dev"], R[k]["test"], R[k]["peak_mib"], R[k].get("trained")))
for k, r in R.get("sampling", {}).items():
    txt = r if isinstance(r, str) else "%9s tok/s  %.2f passes/token  %.2f s" % (f(r["tok_s"], 0), r["passes_per_token"], r["seconds"])
    print(f"sample {k:<52} {txt}")
for k in ("frontier seed 0", "frontier seed 1"):
    if k in R: print(k + ": " + " | ".join(R[k]) if isinstance(R[k], list) else f"{k}: {R[k]}")
for k, s in R.get("syncs", {}).items():
    print(f"syncs {k}: {sum(s.values())} [" + ", ".join(f"{w} x{c}" for w, c in sorted(s.items(), key=lambda kv: -kv[1])[:5]) + "]")
PY
