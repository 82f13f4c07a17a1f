"""Where the work runs: device, precision, peak FLOP/s, gradient accumulation; DDP written out (no wrappers that hide
gradient sync); the draws that make DDP and resume exact (keyed per-step generators, per-rank RNG states).

torchrun sets RANK / LOCAL_RANK / WORLD_SIZE; without them this is a single process.
    torchrun --standalone --nproc_per_node=2 train.py cpu --device=cpu   # gloo on CPU
"""
import functools
import os
import random
import time
from contextlib import nullcontext

import numpy as np
import torch

from utils.errors import UserError

DTYPES = ("auto", "float32", "bfloat16", "float16")  # config.dtype, see precision

# dense bf16 tensor-core peak FLOP/s (fp32 accumulate, no sparsity; vendor datasheets) by the exact name
# torch.cuda.get_device_name gives, for MFU: a device not listed gets no MFU rather than a wrong one
PEAK_FLOPS = {
    "NVIDIA H100 80GB HBM3": 989e12, "NVIDIA H100 PCIe": 756e12, "NVIDIA H200": 989e12,  # the first is the SXM5
    "NVIDIA A100-SXM4-80GB": 312e12, "NVIDIA A100-SXM4-40GB": 312e12, "NVIDIA A100 80GB PCIe": 312e12,
    "NVIDIA A100-PCIE-40GB": 312e12, "NVIDIA L4": 121e12, "NVIDIA GeForce RTX 4090": 165e12,
    "NVIDIA GeForce RTX 3090": 71e12,  # 142 is the fp16-accumulate figure
}


DEVICE_TYPES = ("cpu", "cuda", "mps")  # what the program runs on; torch names more (xla, meta, ...), built or not


def devices_here():
    """The devices this machine has, by name ('cpu', 'cuda:0', ..., 'mps'): what a refused --device is told to use."""
    cuda = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return ["cpu", *cuda, *(["mps"] if torch.backends.mps.is_available() else [])]


def pick_device(name):
    """The torch.device --device names: 'auto' is the first accelerator there is, else the CPU. A name that is not a
    device, a type torch here was not built for or the program does not run on (xla, meta, ...), an accelerator this
    machine lacks and an index past its devices (cuda:7 on one GPU, cpu:1) are each one UserError naming the devices
    there are, never a traceback at the first tensor."""
    available = dict(cuda=torch.cuda.is_available, mps=torch.backends.mps.is_available)
    if name == "auto":  # the first accelerator there is, else the CPU
        return torch.device(next((kind for kind, there in available.items() if there()), "cpu"))
    kind, colon, index = name.partition(":")
    here = ", ".join(devices_here())
    if kind not in DEVICE_TYPES or (colon and not index.isdigit()):
        raise UserError(f"--device={name} is not a device: use auto, cpu, cuda, cuda:N or mps (here: {here})")
    if kind in available and not available[kind]():
        raise UserError(f"--device={name} but {kind.upper()} is not available here: use --device=cpu (or auto; "
                        f"here: {here})")
    count = torch.cuda.device_count() if kind == "cuda" else 1  # the CPU and an Apple GPU are one device each
    if colon and int(index) >= count:
        raise UserError(f"--device={name}: this machine has no {kind} device {int(index)}; use one of {here} (or auto)")
    return torch.device(kind, int(index)) if colon else torch.device(kind)


class CpuThreads:
    """The thread count of a CPU run. Unless OMP_NUM_THREADS (or MKL_NUM_THREADS) fixes it, the program picks it: every
    core that no other runnable process holds (os.getloadavg's 1-minute average, this process's own threads taken
    out), at least one, shared evenly by the ranks of a torchrun; and again at each of train.py's log lines, as other
    jobs start and end (the load average follows within a minute or two).

    Why not one fixed count (dev/threads.py, dev/LOG.md 2026-11-27): on this repo's 2-core CPU a training step of
    every CPU preset took 1.7-1.9x less time on 2 threads than on 1 with nothing else running, and 1.8-1.9x MORE
    beside one other single-thread run: a thread waiting for a busy core holds up the whole step. Neither count is
    right on both machines; the cores left free are."""

    def __init__(self, device, world=1, environ=None, cores=None, load=None):
        environ = os.environ if environ is None else environ
        given = environ.get("OMP_NUM_THREADS") or environ.get("MKL_NUM_THREADS")
        self.given = int(given) if given and given.strip().isdigit() and int(given) > 0 else None
        self.auto = device.type == "cpu" and self.given is None
        # the cores torch uses by default on this machine, split evenly between the ranks
        self.cores = max(1, (cores or _torch_default_threads()) // world)
        self.load = load or load_average  # (a test passes its own)
        self.n = torch.get_num_threads()
        if self.auto:
            self.n = self.fit(mine=0)
            torch.set_num_threads(self.n)

    def fit(self, mine):
        """The threads to run on: the cores the other runnable processes leave (load minus `mine`, this process's own
        threads, rounded), at least one; every core where the OS keeps no load average (Windows)."""
        load = self.load()
        if load is None:
            return self.cores
        others = max(0, round(load - mine))
        return max(1, min(self.cores, self.cores - others))

    def line(self, follows=True):
        """The start-up line: the count, who chose it and how to change it (follows: whether follow() will run)."""
        if self.given is not None:
            return f"threads: {self.given} (OMP_NUM_THREADS)"
        if not self.auto:
            return f"threads: {self.n} (torch's default; the device does the work)"
        goes = "; it follows the load as the run goes" if follows else ""
        return (f"threads: {self.n} of {self.cores} core(s), those no other process holds{goes} "
                f"(OMP_NUM_THREADS=N fixes it)")

    def follow(self):
        """At a log line: the count fitted to the load again; a line saying the change, or "" when none."""
        if not self.auto:
            return ""
        n = self.fit(mine=self.n)
        if n == self.n:
            return ""
        before, self.n = self.n, n
        torch.set_num_threads(n)
        why = "another process holds a core" if n < before else "a core came free"
        return f"threads: {before} -> {n} ({why}: load {self.load():.1f} on {self.cores} core(s))"


@functools.lru_cache(maxsize=1)
def _torch_default_threads():
    """torch's own thread count for this machine, read the first time it is asked (before anything sets another)."""
    return torch.get_num_threads()


def load_average():
    """The 1-minute load average (processes ready to run), or None where the OS keeps none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def compile_step(loss_of, model, cfg, device, world=1):
    """(loss_of, model) as the training step runs them, torch.compile'd where --compile says: 'auto' compiles on CUDA
    (launch-bound in eager: ~700 kernels a step) and leaves a CPU eager (nothing measured gained there).

    loss_of(model, x, cfg, schedule, tok, drawn) is an objective's pure loss (objectives.py: its random draws made
    before it, eagerly). On one process it is compiled whole, the model's calls inlined: the masking, the weights,
    the cross-entropy, self-conditioning's first pass and the dual objective's causal pass run in the graph with the
    forward (and so the backward), and on one CUDA GPU with CUDA graphs (mode 'reduce-overhead': a step's launches
    replayed as one graph; with the model alone graphed a mdlm step of the reference recipe went 11.9 -> 6.3 ms on
    an H200, RESULTS). Under DDP the model alone, plainly, as before: a compiled DDP module is the case torch
    documents and tests (its DDPOptimizer splits the graph at the gradient buckets, so the backward overlaps the
    all-reduce). A compiled function around the DDP module traced here as one graph (torch 2.13, one gloo rank),
    but whether DDP's forward hooks and that overlap survive is unknown, and no multi-GPU machine was at hand to
    measure it; CUDA graphs under DDP are unmeasured too."""
    if not (cfg.compile == "true" or (cfg.compile == "auto" and device.type == "cuda")):
        return loss_of, model
    if world > 1:
        return loss_of, torch.compile(model)
    return torch.compile(loss_of, mode="reduce-overhead" if device.type == "cuda" else None), model


def precision(device, dtype="auto", bf16_supported=None):
    """The autocast dtype's name: 'auto' is bf16 on a CUDA GPU that has it (Ampere and later), fp16 with a GradScaler
    on one that does not (V100, T4: bf16 there is emulated), fp32 elsewhere (bf16 on these CPUs measured 2.4x slower).
    bf16_supported: the GPU's answer, asked when None."""
    assert dtype in DTYPES, dtype
    if device.type != "cuda" or dtype not in ("auto", "bfloat16"):
        return "float32" if dtype == "auto" else dtype
    if bf16_supported or (bf16_supported is None and torch.cuda.is_bf16_supported(including_emulation=False)):
        return "bfloat16"
    if dtype == "bfloat16":
        raise UserError(f"--dtype=bfloat16 but this GPU ({device}) has no bf16 tensor cores: "
                        f"use --dtype=auto (fp16 with loss scaling) or --dtype=float32")
    return "float16"


def autocast_for(device, dtype):
    """(autocast context, dtype name) of precision(device, dtype); on CUDA also TF32 for the matmuls outside it."""
    name = precision(device, dtype)
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")
        torch.backends.cudnn.allow_tf32 = True
    ctx = nullcontext() if name == "float32" else torch.autocast(device_type=device.type, dtype=getattr(torch, name))
    return ctx, name


def grad_scaler(device, dtype_name):
    """Loss scaling for fp16 autocast, whose small gradients underflow without it; disabled (a no-op) otherwise."""
    return torch.amp.GradScaler(device.type, enabled=dtype_name == "float16")


def peak_flops(device):
    return peak_flops_of(torch.cuda.get_device_name(device)) if device.type == "cuda" else None


def peak_flops_of(name):
    return PEAK_FLOPS.get(name.strip())


def print0(*args, **kwargs):
    if int(os.environ.get("RANK", "0")) == 0:
        print(*args, **kwargs)


def init_distributed(device_name):
    """Returns (rank, local_rank, world_size, device). Starts a process group under torchrun."""
    if "RANK" not in os.environ:
        return 0, 0, 1, pick_device(device_name)
    rank, local_rank, world = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"])
    cuda = device_name in ("auto", "cuda") and torch.cuda.is_available()
    other = "cpu" if device_name == "auto" else device_name  # no CUDA GPU, or another device named: gloo
    device = torch.device("cuda", local_rank) if cuda else pick_device(other)  # a GPU per process, by LOCAL_RANK
    if cuda:
        torch.cuda.set_device(device)
    torch.distributed.init_process_group(backend="nccl" if cuda else "gloo")
    return rank, local_rank, world, device


def all_reduce_mean(x, world):
    if world > 1:
        torch.distributed.all_reduce(x)
        x /= world
    return x


def grad_accum_steps(total_batch_size, micro_tokens, world):
    """Micro-steps per optimizer step so that world * accum * micro_tokens == total_batch_size exactly: the recipe's
    step (0: one micro-batch) is the same on any world size, split over the ranks, never multiplied by them."""
    total = total_batch_size or micro_tokens
    if total % (micro_tokens * world):
        why = (f"world size {world} does not divide total_batch_size={total}" if total % world else
               f"total_batch_size={total} / world size {world} = {total // world} tokens per rank is not a multiple "
               f"of batch_size*block_size = {micro_tokens}")
        fits = [n for n in range(1, 257) if total % (micro_tokens * n) == 0]
        raise UserError(f"{why}: run with a world size in {fits[:8]} or set --total_batch_size to a multiple of "
                        f"{micro_tokens * world}")
    return total // (micro_tokens * world)


def keyed_generator(*key):
    """A CPU generator seeded from a tuple of ints, e.g. (seed, stream, step, slot): keyed draws carry no state, so a
    resumed run, or the same global batch split otherwise over ranks and micro-steps, sees the same draws."""
    entropy = [k & 0xFFFFFFFFFFFFFFFF for k in key]  # SeedSequence wants non-negative ints
    return torch.Generator().manual_seed(int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0]))


def rng_state():
    """This process's global RNG states (torch, CUDA, numpy, python) as weights_only-loadable values."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return dict(torch=torch.get_rng_state(), cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                numpy=[kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss], python=random.getstate())


def set_rng_state(s):
    torch.set_rng_state(s["torch"])
    if s["cuda"] and torch.cuda.is_available() and len(s["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(s["cuda"])
    kind, keys, pos, has_gauss, gauss = s["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(s["python"])


def all_gather_objects(obj, world):
    """[obj of rank 0, obj of rank 1, ...] on every rank (a collective: every rank must call it)."""
    if world == 1:
        return [obj]
    out = [None] * world
    torch.distributed.all_gather_object(out, obj)
    return out


def synchronize(device):
    """Wait for the work queued on a CUDA device (it runs asynchronously): before reading a clock."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, calls=1):
    """(seconds for `calls` calls of fn, the last call's result), the device synchronised on both sides."""
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(calls):
        out = fn()
    synchronize(device)
    return time.perf_counter() - t0, out
