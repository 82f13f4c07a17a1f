#!/usr/bin/env bash
# micro-dllm GPU check (~8 min on one H100; self-limits to DEADLINE s of work). From the repo root: bash dev/gpu_check.sh
# Prints one table last; gpu_check.log, results.json and the subprocesses' logs go to $OUT (a temp dir when unset).
# By default README's GPU lines first, as typed (readme: `python train.py` -- REF_ITERS=N cuts it to N steps --,
# `python inference.py --prompt "ROMEO:"`, README's torchrun line over NCCL on the seeds' BPE recipe, BPE_ITERS steps),
# then babies (baby_bd3 and README's baby AR line trained here when artifacts/gpu does not carry them), then issue 74's: step (the reference recipe's mdlm step eager / compiled / graphed, its loss compiled
# with the model by dev/bench_train.make_step), sampling (issue 89's table, dev/gpu_sample.py, <= 3 min: the AR a graph a
# token and k a replay, bd3's forward graphed and its whole round k a replay, batch 1 and 16, T = 1, 0, 0.5), frontier (B10
# against baby_ar at the held-out entropy, both sides graphed; carry artifacts/gpu), gpt200m (each objective's compiled and
# graphed micro-step, MFU and peak memory). A loan's first job: SECTIONS=babies,sampling bash dev/gpu_check.sh (~4 min).
# The earlier sections run when named:
# SECTIONS=readme,babies,attention,train,syncs,graphs,runs,recipe,step,sampling,frontier,gpt200m is every one (sampling and frontier
# fall back to the checkpoints runs writes when artifacts/gpu is not carried). DEADLINE=450 the seconds of work before
# later sections and rows are skipped (SMOKE: 1200); PYTHON= the interpreter.
# SMOKE=1 runs every section on the CPU at toy sizes (an API and syntax check, no timings; CUDA-only calls guarded;
# torch.compile traced by dynamo's eager backend, no inductor). SMOKE ran clean at the commit that last changed this file.
set -uo pipefail  # the Python below failing fails the script (a pipe reports its last command)
cd "$(dirname "$0")/.." || exit 1
WORK=${WORK:-$(mktemp -d)}; OUT=${OUT:-$WORK/out}; mkdir -p "$OUT"
ALL=readme,babies,attention,train,syncs,graphs,runs,recipe,step,sampling,frontier,gpt200m
[ "${SMOKE:-0}" = 1 ] && DEFAULT=$ALL || DEFAULT=readme,babies,step,sampling,frontier,gpt200m
# SMOKE's default deadline reaches every section on a busy 2-core CPU (dynamo traces each sampling row: ~2 min)
[ "${SMOKE:-0}" = 1 ] && DEADLINE=${DEADLINE:-1200}
export PYTHONUNBUFFERED=1 WORK OUT DEADLINE=${DEADLINE:-450} SMOKE=${SMOKE:-0} SECTIONS=${SECTIONS:-$DEFAULT}
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader
"${PYTHON:-python3}" - <<'PY' 2>&1 | tee "$OUT/gpu_check.log" | grep --line-buffered -v -e Warning -e warn -e '^USDT'
import json, os, re, subprocess, sys, time, traceback, warnings, statistics as st
sys.path.insert(0, os.getcwd())
import torch, torch.nn.functional as F
import bd3, configurator, diffusion
from diffusion import Draw, SamplerOptions, Schedule
from configurator import get_config
from model import Transformer
from objectives import OBJECTIVES
from utils.dist import autocast_for, keyed_generator, peak_flops
from utils.optim import build_optimizer
import dev.bench_train as bt
from contextlib import contextmanager
from torch._dynamo.utils import counters
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

# ---- README's GPU lines as typed: python train.py, python inference.py --prompt "ROMEO:", the torchrun line (NCCL)
TRAIN = ("import atexit,runpy,sys,torch; atexit.register(lambda: print('PEAK_MIB', round(torch.cuda.max_memory_allocated()/2**20)"
         " if torch.cuda.is_available() else 0)); sys.argv=['train.py']+sys.argv[1:]; runpy.run_path('train.py', run_name='__main__')")
def parse_run(log, wall):
    last = lambda pat: (re.findall(pat, log) or [None])[-1]
    return dict(wall_s=wall, ms_it=last(r"(\d+) ms/it"), tok_s=last(r"\| ([\d,]+) tok/s"), mfu=last(r"mfu ([\d.]+)%"),
                dev=last(r"eval \d+: dev \w+ [^\n]*?= ([\d.]+) ± [\d.]+ nats/char"),
                test=last(r"test [^\n]*?cite\): [^\n]*?= ([\d.]+) ± [\d.]+ nats/char"), peak_mib=last(r"PEAK_MIB (\d+)"),
                first_step_s=last(r"iter 1/\d+ \| ([\d.]+) s/step"), trained=last(r"trained (\d+m\d+s)"))
def command(key, argv, limit, python=True):  # one README line in a subprocess: (rc, its log), rc and wall in R[key]
    t = time.time()
    try:
        p = subprocess.run(([sys.executable] if python else []) + argv, capture_output=True, text=True, timeout=limit)
        rc, log = p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired as e:
        rc, log = "timeout", (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
    open(f"{OUT}/{key}.log", "w").write(log)
    R[key] = dict(rc=rc, wall_s=round(time.time() - t, 1))
    out(f"{key}: rc={rc}, wall {R[key]['wall_s']} s" + ("" if rc == 0 else f": {log.strip()[-300:]}"))
    return rc, log
def readme():
    smoke = ["--max_iters=10", "--eval_interval=5", "--n_layer=2", "--n_embd=48", "--block_size=32", "--eval_iters=2",
             "--batch_size=4", "--compile=false"] if SMOKE else []
    cut = [f"--max_iters={os.environ['REF_ITERS']}"] if os.environ.get("REF_ITERS") and not SMOKE else []
    out_dir = [f"--out_dir={W}/models"] if SMOKE else []  # SMOKE leaves a user's artifacts/models alone
    rc, log = command("readme_train", ["-c", TRAIN, *out_dir, *smoke, *cut], 200)
    R["readme_train"].update(parse_run(log, R["readme_train"]["wall_s"]))
    if rc == 0:
        ck = [f"--checkpoint={W}/models/model.pt", "--gen-len=8", "--steps=4"] if SMOKE else []
        rc, log = command("readme_inference", ["inference.py", "--prompt", "ROMEO:", *ck], 90)
        R["readme_inference"]["tokens_s"] = (re.findall(r"\(([\d,]+) tokens/s\)", log) or [None])[-1]
    bpe = ["--max_iters=10", "--eval_interval=5", "--n_layer=2", "--n_embd=48", "--block_size=32", "--eval_iters=2",
           "--batch_size=4", "--compile=false", "--device=cpu"] if SMOKE else [f"--max_iters={os.environ.get('BPE_ITERS', 500)}"]
    rc, log = command("readme_torchrun", ["torchrun", "--standalone", "--nproc_per_node=1", "train.py", "tinystories_bpe",
                                          "--data_path=data/tinystories_train_head.txt", "--val_path=data/tinystories_valid_head.txt",
                                          f"--out_dir={W}/ts_bpe", f"--viz_video={W}/ts_bpe.mp4", f"--tokenizer_path={W}/tok.json",
                                          *bpe], 150, python=False)
    R["readme_torchrun"].update(parse_run(log, R["readme_torchrun"]["wall_s"]))
if section("README's GPU lines, as typed", 60, "readme"): guard(readme)

# ---- baby_bd3 and baby's AR as README trains them, here, when artifacts/gpu does not carry them (sampling reads them)
BABIES = dict(baby_bd3=["train.py", "baby_bd3"], baby_ar=["train.py", "baby", "--objective=ar", "--min_lr=1e-4",
              "--muon_momentum=0.95", "--weight_decay=0.1", "--out_dir=artifacts/models/baby_ar"])
def babies():
    toy = ["--max_iters=10", "--eval_interval=5", "--eval_iters=2", "--compile=false"] if SMOKE else []
    ps = {}
    for name, argv in BABIES.items():
        if os.path.exists(f"artifacts/gpu/{name}/model.pt"): continue
        where = [f"--out_dir={W}/{name}"] if SMOKE else []
        ps[name] = (time.time(), subprocess.Popen([sys.executable, *argv, *toy, *where], stdout=subprocess.PIPE,
                                                 stderr=subprocess.STDOUT, text=True))
    for name, (t, p) in ps.items():  # side by side: their timings are each other's neighbours'
        log = p.communicate()[0]; open(f"{OUT}/train_{name}.log", "w").write(log)
        R[f"train_{name}"] = dict(parse_run(log, round(time.time() - t, 1)), rc=p.returncode)
        out(f"train {name}: rc={p.returncode}, wall {R[f'train_{name}']['wall_s']} s, trained {R[f'train_{name}']['trained']}, "
            f"test {R[f'train_{name}']['test']} nats/char" + ("" if p.returncode == 0 else f": {log[-300:]}"))
if section("baby_bd3 and baby_ar, trained here", 90, "babies"): guard(babies)

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

# ---- training-step rows (as dev/bench_train.make_step, plus the compile mode and activation checkpointing)
def make_step(flags, vocab=66, mode=None):
    cfg = get_config(flags + TOY + ["--device=" + dev.type])
    torch.manual_seed(cfg.seed)
    obj = OBJECTIVES[cfg.objective]
    model = Transformer(configurator.model_args(cfg, vocab)).to(dev).train()
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
            drawn = obj.draws(x, cfg, sch, tok, Draw(keyed_generator(cfg.seed, 1, i), u))
            loss = obj.loss(net, x, cfg, sch, tok, drawn)
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
    blocks = bd3.Blocks(size=4, mask_id=V - 1)
    for name, fl in (("ar KV cache", ["--objective=ar"]), ("mdlm denoise", []), ("bd3 speculative", ["--objective=bd3", "--bd3_ar=1"])):
        cfg = get_config(fl + TOY + ["--device=" + dev.type])
        m = Transformer(configurator.model_args(cfg, V)).to(dev).eval(); sch = Schedule(cfg.diffusion_steps)
        for B in (1, 16):
            x = torch.cat([torch.randint(0, V - 1, (B, 6), device=dev), torch.full((B, n), V - 1, device=dev)], 1)
            g = torch.Generator().manual_seed(0); ctx, _ = autocast_for(dev, "auto")
            with torch.no_grad(), ctx:
                if name.startswith("ar"): f = lambda: (m.generate(x[:, :6], n, generator=g, mask_id=V - 1), dict(nfe=n))
                elif name.startswith("mdlm"): f = lambda: diffusion.denoise(m, x, x == V - 1, sch, V - 1, SamplerOptions(steps=16), g)
                else: f = lambda: bd3.sample_clean_ar(m, x[:, :6], n, blocks, generator=g)  # drafts at B = 1 only
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
def train_cmd(out_dir, *flags):
    it = ["--max_iters=20", "--eval_interval=10", "--n_layer=2", "--n_embd=48", "--block_size=32", "--eval_iters=2"] if SMOKE else ["--max_iters=1000"]
    return [sys.executable, "-c", TRAIN, "shakespeare_char", f"--out_dir={out_dir}", "--overwrite", "--log_interval=50",
            f"--compile={'false' if SMOKE else 'true'}", f"--device={dev.type}", *it, *flags]
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

# ---- issue 74: rows through dev/bench_train.make_step (the step as bench_train and train.py take it: the loss
# compiled with the model where make_step compiles it), peak memory by bench_train.peak_memory (the row's own)
@contextmanager
def compile_as(graphs):  # torch.compile as make_step calls it; graphs=False drops CUDA graphs; SMOKE: dynamo's eager backend
    real = torch.compile
    def patched(fn, **kw):
        if SMOKE: kw = dict(backend="eager", fullgraph=kw.get("fullgraph", False), dynamic=kw.get("dynamic"))
        elif not graphs: kw = {**kw, "mode": None}
        return real(fn, **kw)
    torch.compile = patched
    try: yield
    finally: torch.compile = real
def bench_row(key, name, flags, compile_="true", graphs=True, vocab=66, n=20, rep=5, warm=3):
    try:
        cfg = get_config(flags + ["--device=" + dev.type, f"--compile={compile_}"])
        skips = counters["inductor"]["cudagraph_skips"]
        with compile_as(graphs):
            step, model, opt = bt.make_step(cfg, vocab, dev)
            for _ in range(warm): step()  # compiled: the compile, then CUDA graphs' warm-up and recording
            skips = counters["inductor"]["cudagraph_skips"] - skips  # graphs inductor declined (gpu_check.log says why)
            ms = timeit(step, 2 if SMOKE else n, 1 if SMOKE else rep)
            peak, what = bt.peak_memory(step, model, opt, dev)
        flops = OBJECTIVES[cfg.objective].flops(model, cfg)[0] * cfg.batch_size * cfg.block_size
        r = dict(ms=ms, mtok=cfg.batch_size * cfg.block_size / ms / 1e3, mfu=flops / (ms / 1e3) / PEAK * 100, peak_mib=peak,
                 peak_is=what, note=f"{skips} CUDA-graph skips (gpu_check.log: why)" if skips else "")
    except Exception as e:
        r = dict(error=f"{type(e).__name__}: {str(e)[:120]}"); traceback.print_exc()
    R.setdefault(key, {})[name] = r
    print(f"  {name:<44} {r}", flush=True)
    step = model = opt = None
    torch._dynamo.reset()  # the next row compiles afresh; a CUDA-graph pool freed
    if dev.type == "cuda": torch.cuda.empty_cache()

# ---- (a) the reference recipe's mdlm step with its loss: eager, compiled, graphed (target <= 6 ms); the AR graphed beside
def step_rows():
    toy = TOY + ["--n_layer=2"] if SMOKE else []
    for name, fl, c, g in (("mdlm eager", [], "false", True), ("mdlm compiled (no CUDA graphs)", [], "true", False),
                           ("mdlm graphed", [], "true", True), ("ar graphed", ["--objective=ar"], "true", True)):
        if left() < 60: out(f"[skip] step {name}: {left():.0f}s left"); continue
        bench_row("step", name, fl + toy, c, g)
if section("issue 74 (a): the reference step with its loss", 90, "step"): guard(step_rows)

# ---- (c) issue 89's sampling table (dev/gpu_sample.py, under 3 minutes): baby_ar against baby_bd3's preset, 250 tokens
# after ROMEO: at batch 1 and 16, T = 1, 0, 0.5, four variants (the AR a graph a token and k a replay; bd3's forward
# graphed and its whole round k a replay): tokens/s, GPU ms a step (CUDA events), round / AR step, tokens a pass, p_cache.
# Carried artifacts/gpu checkpoints, else those the babies section trained here (SMOKE: toy ones, the CPU, no graphs)
STAND_IN = dict(baby_ar="ar", baby_bd3="bd3", judge_baby="ar")  # the runs section's checkpoint in a carried one's place
def ckpt(name):  # a carried checkpoint, else one trained here, else its stand-in, else None
    for p in (f"artifacts/gpu/{name}/model.pt", f"artifacts/models/{name}/model.pt", f"{W}/{name}/model.pt",
              f"{W}/{STAND_IN[name]}/model.pt"):
        if os.path.exists(p): return p
def sampling():
    cks = [ckpt("baby_ar"), ckpt("baby_bd3")]
    if None in cks: out("[skip] sampling: no baby_ar or baby_bd3 checkpoint (carry artifacts/gpu/{baby_ar,baby_bd3}/model.pt)"); return
    limit = min(300 if SMOKE else 180, max(30, left() - 10))  # (SMOKE: dynamo traces each row on a busy CPU)
    argv = [sys.executable, "dev/gpu_sample.py", *cks, "--deadline", str(limit - 20)] + (["--smoke"] if SMOKE else [])
    rc, log = command("sampling", argv, limit, python=False)
    R["sampling"] = dict(checkpoints=cks, rc=rc, table=[l for l in log.splitlines() if re.match(r"\s*(\d+ |B |sampling,|done)", l)])
if section("issue 89 (c): sampling, the AR and bd3's rounds graphed", 60, "sampling"): guard(sampling)

# ---- (d) issue 64 on the GPU: B10 against baby_ar at the held-out entropy, batch 1 and 16, both sides' decode step graphed
# (frontier.py --compile auto: on CUDA, as inference.py; bd3 drafts at batch 1 in eager rounds). Carry artifacts/gpu: its
# baby_bd3/, baby_ar/ and judge_baby/ model.pt files, ~10 MB each; else runs' checkpoints stand in (SMOKE)
def frontier():
    cks = {m: ckpt(m) for m in ("baby_bd3", "baby_ar", "judge_baby")}
    if None in cks.values(): out("[skip] frontier: carry artifacts/gpu/{baby_bd3,baby_ar,judge_baby}/model.pt"); return
    R["frontier path"] = f"decode step {'graphed' if dev.type == 'cuda' else 'eager'} (--compile auto); {', '.join(cks.values())}"
    out(f"frontier: {R['frontier path']}")
    for seed in (0, 1):
        if seed and left() < 250: out(f"[skip] frontier seed {seed}: {left():.0f}s left (gpt200m's share)"); break
        p = subprocess.run([sys.executable, "scripts/frontier.py", cks["baby_bd3"], cks["baby_ar"],
                            "--ar-checkpoint", cks["judge_baby"], "--device", dev.type, "--n-samples",
                            "16" if SMOKE else "128", "--batch-size", "16" if SMOKE else "64", "--repeats",
                            "1" if SMOKE else "9", "--time-batches", "1,16", "--grid", "bd3_speculate=true", "--grid",
                            "temperature=0.8,0.9,1.0", "--ar-grid", "temperature=0.7,0.8,0.9,1.0", "--ar-grid",
                            "top_p=1.0", "--compile", "auto", "--seed", str(seed)], capture_output=True, text=True)
        open(f"{OUT}/frontier_s{seed}.log", "w").write(p.stdout + p.stderr)
        R[f"frontier seed {seed}"] = [l.strip() for l in p.stdout.splitlines() if "held-out entropy," in l] or p.stderr[-300:]
        print(" ", R[f"frontier seed {seed}"], flush=True)
        if p.returncode: out(f"[fail] frontier seed {seed} rc={p.returncode}: {p.stderr[-300:]}")
if section("issue 74 (d): frontier, both sides graphed", 100, "frontier"): guard(frontier)

# ---- (b) gpt200m: each objective's compiled and graphed micro-step (32 x 1024, vocab 2048): MFU (target >= 35 % for the
# AR and mdlm) and peak memory; bd3 with two masks a window (baby_bd3's recipe) fits only with activation checkpointing
def gpt200m():
    toy = ["--n_layer=2", "--n_embd=64", "--n_head=2", "--block_size=64", "--batch_size=2"] if SMOKE else []
    rows = (("gpt200m mdlm graphed", []), ("gpt200m ar graphed", ["--objective=ar"]), ("gpt200m bd3 graphed", ["--objective=bd3"]),
            ("gpt200m bd3 bd3_ar mask_draws=2, act. ckpt, graphed", ["--objective=bd3", "--bd3_ar=1", "--mask_draws=2",
                                                                     "--activation_checkpointing=true"]))
    for i, (name, fl) in enumerate(rows):  # the AR and mdlm first (the MFU target's), then bd3's while time is left
        if left() < (60 if i < 2 else 150): out(f"[skip] {name}: {left():.0f}s left"); continue
        bench_row("gpt200m", name, ["gpt200m", *fl, *toy], "true", True, vocab=2048, n=3, rep=1, warm=3)
if section("issue 74 (b): gpt200m compiled and graphed", 70, "gpt200m"): guard(gpt200m)

# ---- the table
json.dump(R, open(f"{OUT}/results.json", "w"), indent=1, default=str)
f = lambda v, d=1: "-" if v is None or v != v else f"{v:,.{d}f}"
print(f"\n==== micro-dllm GPU check, {time.time() - T0:.0f} s ====")
for l in LINES: print(l)
if "attention" in R:
    print("attention fwd+bwd, B64 H6 D64 bf16: " + "; ".join(f"{k} {f(v[0], 2)} ms [{v[1]}]" for k, v in R["attention"].items()))
for key, title in (("train", "train step (64 x 256 tok; gpt200m 32 x 1024)"), ("step", "(a) reference step with its loss, 64 x 256"),
                   ("gpt200m", "(b) gpt200m micro-step, 32 x 1024")):
    if key not in R: continue
    print(f"{title:<50} {'ms':>8} {'Mtok/s':>7} {'MFU%':>6} {'peak MiB':>9}")
    for k, r in R[key].items():
        print(f"  {k:<48} {f(r.get('ms'), 2):>8} {f(r.get('mtok'), 2):>7} {f(r.get('mfu')):>6} {f(r.get('peak_mib'), 0):>9} {r.get('error', r.get('note', ''))}")
for k in ("readme_train", "readme_torchrun", "train_baby_bd3", "train_baby_ar"):
    if k in R: print(f"{k}: " + ", ".join(f"{a} {b}" for a, b in R[k].items() if b is not None))
if "readme_inference" in R: print("readme_inference: " + ", ".join(f"{a} {b}" for a, b in R["readme_inference"].items()))
for k in ("run_mdlm", "run_ar", "run_bd3", "run_ref"):
    if k in R: print("%s %s steps: wall %.0f s (first step %s s), %s ms/it, %s tok/s, mfu %s%%, dev %s, test %s nats/char, peak %s MiB, trained %s" % (
        k, 5000 if k == "run_ref" else 1000, R[k]["wall_s"], R[k]["first_step_s"], R[k]["ms_it"], R[k]["tok_s"], R[k]["mfu"], R[k]["dev"], R[k]["test"], R[k]["peak_mib"], R[k].get("trained")))
if "sampling" in R:
    print(f"(c) sampling ({', '.join(R['sampling']['checkpoints'])}), rc {R['sampling']['rc']}")
    for l in R["sampling"]["table"]: print("  " + l)
if "frontier path" in R: print(f"(d) frontier: {R['frontier path']}")
for k in ("frontier seed 0", "frontier seed 1"):
    if k in R: print(k + ": " + " | ".join(R[k]) if isinstance(R[k], list) else f"{k}: {R[k]}")
for k, s in R.get("syncs", {}).items():
    print(f"syncs {k}: {sum(s.values())} [" + ", ".join(f"{w} x{c}" for w, c in sorted(s.items(), key=lambda kv: -kv[1])[:5]) + "]")
PY
