"""Where the work runs: device, precision, peak FLOP/s, gradient accumulation, DDP written out
(torchrun's RANK / LOCAL_RANK / WORLD_SIZE; without them, one process), keyed draws, RNG states.

    torchrun --standalone --nproc_per_node=2 train.py cpu --device=cpu   # gloo on CPU
"""
import copy
import os
import platform
import random
import time
from contextlib import nullcontext

import numpy as np
import torch

from config import CHOICES
from utils.errors import UserError

DTYPES = CHOICES["dtype"]  # see precision

PEAK_FLOPS = {  # dense bf16 peak FLOP/s (fp32 accumulate, no sparsity); unlisted: no MFU, not a wrong one
    "NVIDIA H100 80GB HBM3": 989e12, "NVIDIA H100 PCIe": 756e12, "NVIDIA H200": 989e12,  # the first is the SXM5
    "NVIDIA A100-SXM4-80GB": 312e12, "NVIDIA A100-SXM4-40GB": 312e12, "NVIDIA A100 80GB PCIe": 312e12,
    "NVIDIA A100-PCIE-40GB": 312e12, "NVIDIA L4": 121e12, "NVIDIA GeForce RTX 4090": 165e12,
    "NVIDIA GeForce RTX 3090": 71e12,  # 142 is the fp16-accumulate figure
}


DEVICE_TYPES = ("cpu", "cuda", "mps")  # the ones this program runs on


def devices_here():
    """This machine's devices ('cpu', 'cuda:0', ..., 'mps'), listed when --device is refused."""
    cuda = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return ["cpu", *cuda, *(["mps"] if torch.backends.mps.is_available() else [])]


def pick_device(name):
    """--device's torch.device ('auto': an accelerator, else CPU); a bad one lists those here."""
    available = dict(cuda=torch.cuda.is_available, mps=torch.backends.mps.is_available)
    if name == "auto":
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
    """A CPU run's thread count unless OMP_NUM_THREADS fixes it: one at first, more tried when cores
    stay free, kept only if steps run faster; fewer at once when steps slow. A thread waiting for a
    busy core holds up the whole step (dev/LOG.md, "How many CPU threads a run wants")."""

    torch_default = None  # torch's own thread count, read by the first, before anything sets another

    def __init__(self, device, world=1, environ=None, cores=None, clock=time.perf_counter, running=None):
        fixed = fixed_threads(os.environ if environ is None else environ)
        self.given, self.fixed_by = fixed if fixed else (None, "")
        self.auto = device.type == "cpu" and self.given is None
        if not cores and CpuThreads.torch_default is None:
            CpuThreads.torch_default = torch.get_num_threads()
        self.cores = max(1, (cores or CpuThreads.torch_default) // world)
        self.clock = clock
        self.running = running or run_queue  # (a test passes its own clock and run queue)
        self.n = self.given or torch.get_num_threads()
        self.times = []      # the open window's step times
        self.best = None     # this count's best window since it was taken
        self.trial = None    # (the count below, its window) while more threads are on trial
        self.free = 0        # windows in a row that ended with a core free
        self.wait = 10.0     # seconds before the next try up; a lost try doubles it, up to 320
        self.next_try = 0.0
        self.last = None     # when the last step ended; None: the next step is not timed
        if self.given is not None:
            # set: torch holds OpenMP and MKL to it
            torch.set_num_threads(self.given)
        if self.auto:  # one thread to start: more only once measured faster
            self.n = 1
            torch.set_num_threads(1)
        # the start-up line: the count, who chose it, how to change it
        if self.given is not None:
            self.line = f"threads: {self.given} ({self.fixed_by})"
        elif not self.auto:
            self.line = f"threads: {self.n} (torch's default; the device does the work)"
        else:
            self.line = (f"threads: 1 of {self.cores} core(s), more while free and measured faster (OMP_NUM_THREADS=N "
                         f"fixes it)")

    def set(self, n):
        self.n = n
        torch.set_num_threads(n)

    def restart(self):
        """After a pause (an eval, a prompt being typed, other work): the next step is untimed."""
        self.last = None

    def tick(self, st=None):
        """After each step: time it; at a window's end, decide. Returns a change's line or ""."""
        now = self.clock()
        last = self.last
        self.last = now
        if not self.auto or self.cores == 1 or last is None:
            return ""
        self.times.append(now - last)
        # a step slower than the count below (on trial) or 4.5x this count's best decides alone:
        # a job starting beside costs one step, not a window
        if now - last > (self.trial[1] if self.trial else 4.5 * (self.best or float("inf"))):
            return self.decide(now - last, now)
        if len(self.times) >= 8 or sum(self.times) >= 2.0:
            # the window's lower quartile: a few slow steps (GC, a checkpoint written) move it not
            return self.decide(sorted(self.times)[len(self.times) // 4], now)
        return ""

    def decide(self, step_s, now):
        """A window's step time -> keep or end a trial, step down when slow, or try more threads."""
        self.times = []
        if self.trial is not None:
            (below, below_s), self.trial = self.trial, None
            if step_s <= 0.9 * below_s:  # kept if 10 % faster: a second thread beside a busy core loses 10-20x
                self.best = step_s
                self.wait = 10.0
                return f"threads: {below} -> {self.n} (its steps measured {below_s / step_s:.1f}x faster)"
            self.set(below)
            self.wait = min(2 * self.wait, 320.0)
            self.next_try = now + self.wait
            return ""
        if self.best is not None and self.n > 1 and step_s > 1.5 * self.best:
            before, slow = self.n, step_s / self.best
            self.set(max(1, self.n // 2))
            self.best = None
            self.next_try = now + self.wait
            return f"threads: {before} -> {self.n} (steps {slow:.1f}x slower than at their best: the cores are shared)"
        self.best = min(step_s, 1.01 * (self.best or step_s))  # a lucky window fades: noise never adds up to a drop
        running, cpus = self.running(), os.cpu_count() or 1
        self.free = self.free + 1 if running is None or running < cpus else 0
        if self.n < self.cores and self.free >= 2 and now >= self.next_try:
            self.trial = (self.n, step_s)
            self.set(self.cores if running is None else min(self.cores, self.n + cpus - running))
        return ""


# The thread counts the math libraries under torch read. torch reads the first two (MKL's over
# OpenMP's); the others cap the count.
TORCH_VARS = ("MKL_NUM_THREADS", "OMP_NUM_THREADS")
THREAD_VARS = dict(
    MKL_NUM_THREADS="Intel's MKL, torch's BLAS on x86",
    OMP_NUM_THREADS="OpenMP, torch's own parallel loops",
    OPENBLAS_NUM_THREADS="OpenBLAS, torch's BLAS on ARM Linux",
    VECLIB_MAXIMUM_THREADS="Apple's Accelerate, torch's BLAS on macOS",
    OMP_THREAD_LIMIT="OpenMP's cap on all its threads",
)


def fixed_threads(environ, runs=None):
    """(the count, what fixed it) when a variable of THREAD_VARS is set, else None: torch's own
    count (runs: a test's), held to the least of the others, so no library runs more threads than
    the start-up line names. Anything but a positive integer is a UserError."""
    given = {name: environ.get(name, "").strip() for name in THREAD_VARS}
    for name, value in given.items():
        if value and not (value.isdigit() and int(value) > 0):
            raise UserError(f"{name}={value} is not a positive integer: give a thread count, or unset it (the run "
                            f"picks)")
    counts = {name: int(value) for name, value in given.items() if value}
    if not counts:
        return None
    n = torch.get_num_threads() if runs is None else runs  # (nothing sets it where a variable fixes it)
    own = [f"{name}={counts[name]}" for name in TORCH_VARS if name in counts]
    why = " and ".join(own)
    if len(own) == 2 and counts["MKL_NUM_THREADS"] != counts["OMP_NUM_THREADS"]:
        why = f"{own[0]}, which torch reads over {own[1]}"
    caps = {name: count for name, count in counts.items() if name not in TORCH_VARS}
    if caps:
        named = " and ".join(f"{name}={count}" for name, count in caps.items())
        why = f"{why} and {named}" if why else named
    torch_asked = counts.get("MKL_NUM_THREADS", counts.get("OMP_NUM_THREADS"))
    asked = min(count for count in (torch_asked, *caps.values()) if count is not None)
    least = min(caps, key=caps.get) if caps else None
    below_torch = torch_asked is not None and asked < torch_asked
    if least and caps[least] == asked and (below_torch or len(caps) > 1):
        why += f"; every library held to the least, {least}'s"
    if asked < n:
        n = asked
    if n != asked:
        keeps = "MKL keeps to the cores it finds" if own else "the libraries keep to the cores they find"
        why += f"; torch runs {n}: {keeps}"
    return n, why


def hold_threads(environ=None):
    """A timing study's thread count, set and returned: what a thread variable fixes, else one."""
    fixed = fixed_threads(os.environ if environ is None else environ)
    n = fixed[0] if fixed else 1
    torch.set_num_threads(n)
    return n


def run_queue():
    """The threads ready to run now, this one included (/proc/loadavg), or None where the OS keeps
    none. An instant reading: the 1-minute load average lags a second job by a minute."""
    try:
        with open("/proc/loadavg") as f:
            return int(f.read().split()[3].split("/")[0])
    except (OSError, IndexError, ValueError):
        return None


def machine():
    """This CPU's model name (Linux's /proc/cpuinfo), else what Python knows: the race's and the
    served page's caption."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def compile_step(objective, model, cfg, device, world=1):
    """(objective, model) for the step, compiled where --compile says ('auto': on CUDA, where
    eager is launch-bound; CPU: dev/LOG.md, "Compiled on a CPU"). One process compiles the
    objective's pure loss whole, CUDA graphs on CUDA (dev/LOG.md, "the first idle-GPU check"): a
    copy of the objective whose loss is compiled, as nn.Module.compile does in place; DDP compiles
    the model, as torch tests."""
    if not (cfg.compile == "true" or (cfg.compile == "auto" and device.type == "cuda")):
        return objective, model
    if world > 1:
        return objective, torch.compile(model)
    compiled = copy.copy(objective)
    compiled.loss = torch.compile(objective.loss, mode="reduce-overhead" if device.type == "cuda" else None)
    return compiled, model


def precision(device, dtype="auto", bf16_supported=None, torch_version=torch.__version__):
    """The autocast dtype's name. 'auto' is bf16 on a GPU that has it (Ampere on), fp16 with a
    GradScaler where bf16 is emulated (V100, T4), fp32 elsewhere (bf16: 2.4x slower on CPU). Half
    precision on MPS is refused before torch 2.13, whose causal attention let queries see later
    tokens in fp16/bf16 (the AR trains with is_causal, no explicit mask)."""
    assert dtype in DTYPES, dtype
    major, minor = (int(part) for part in torch_version.split("+")[0].split(".")[:2])
    if device.type == "mps" and dtype in ("float16", "bfloat16") and (major, minor) < (2, 13):
        raise UserError(f"--dtype={dtype} on MPS needs torch 2.13 or newer (here {torch_version}): older MPS "
                        f"attention lets a query see later tokens in half precision; use --dtype=float32, or upgrade")
    if device.type != "cuda" or dtype not in ("auto", "bfloat16"):
        return "float32" if dtype == "auto" else dtype
    if bf16_supported or (bf16_supported is None and torch.cuda.is_bf16_supported(including_emulation=False)):
        return "bfloat16"
    if dtype == "bfloat16":
        raise UserError(f"--dtype=bfloat16 but this GPU ({device}) has no bf16 tensor cores: "
                        f"use --dtype=auto (fp16 with loss scaling) or --dtype=float32")
    return "float16"


def autocast_for(device, dtype):
    """(autocast context, dtype name) of precision(); on CUDA also TF32 for matmuls outside it."""
    name = precision(device, dtype)
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")
        torch.backends.cudnn.allow_tf32 = True
    ctx = nullcontext() if name == "float32" else torch.autocast(device_type=device.type, dtype=getattr(torch, name))
    return ctx, name


def grad_scaler(device, dtype_name):
    """Loss scaling for fp16, whose small gradients underflow without it; a no-op otherwise."""
    return torch.amp.GradScaler(device.type, enabled=dtype_name == "float16")


def peak_flops(device):
    return peak_flops_of(torch.cuda.get_device_name(device)) if device.type == "cuda" else None


def peak_flops_of(name):
    return PEAK_FLOPS.get(name.strip())


def print0(*args, **kwargs):
    if os.environ.get("RANK", "0") == "0":  # (torchrun_ranks has checked RANK by the time a run prints)
        print(*args, **kwargs)


TORCHRUN_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
RANK_VARS = TORCHRUN_VARS[:3]  # a process's place; MASTER_ADDR and MASTER_PORT only say where rank 0 listens


def torchrun_ranks():
    """(rank, local_rank, world) from torchrun's environment, None outside it. MASTER_ADDR
    and MASTER_PORT alone, as a cluster profile sets them for every job, are one process. A
    UserError names a variable missing or inconsistent (a partial set would fail deep in
    init_process_group)."""
    given = [v for v in TORCHRUN_VARS if v in os.environ]
    if not any(v in os.environ for v in RANK_VARS):
        return None
    missing = [v for v in TORCHRUN_VARS if v not in os.environ]
    if missing:
        ranks = ", ".join(v for v in given if v in RANK_VARS)
        raise UserError(f"{', '.join(given)} set but not {missing[0]}: start the run with torchrun (it sets "
                        f"{', '.join(TORCHRUN_VARS)}), or unset {ranks} for a single process")
    try:
        numbers = [int(os.environ[v]) for v in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT")]
    except ValueError:
        raise UserError("RANK, LOCAL_RANK, WORLD_SIZE and MASTER_PORT must be whole numbers: start the run with "
                        "torchrun, which sets them") from None
    rank, local_rank, world, port = numbers
    if not (0 <= local_rank <= rank < world and 0 < port < 65536):
        raise UserError(f"torchrun's environment is inconsistent (RANK={rank}, LOCAL_RANK={local_rank}, "
                        f"WORLD_SIZE={world}, MASTER_PORT={port}): start the run with torchrun, which sets them")
    return rank, local_rank, world


def init_distributed(device_name):
    """Returns (rank, local_rank, world_size, device). Starts a process group under torchrun."""
    ranks = torchrun_ranks()
    if ranks is None:
        return 0, 0, 1, pick_device(device_name)
    rank, local_rank, world = ranks
    cuda = device_name in ("auto", "cuda") and torch.cuda.is_available()
    other = "cpu" if device_name == "auto" else device_name  # no CUDA GPU, or another device named: gloo
    device = torch.device("cuda", local_rank) if cuda else pick_device(other)  # one GPU per process, by LOCAL_RANK
    if cuda:
        torch.cuda.set_device(device)
    torch.distributed.init_process_group(backend="nccl" if cuda else "gloo")
    return rank, local_rank, world, device


def wrap_ddp(model, device, local_rank):
    """The model under DDP. RoPE's buffers are alike on every rank, so none is sent each forward:
    torch 2.13 names that forward_sync_buffers=False; broadcast_buffers=False, before, now warns."""
    import inspect
    ddp = torch.nn.parallel.DistributedDataParallel
    renamed = "forward_sync_buffers" in inspect.signature(ddp).parameters
    no_sync = {"forward_sync_buffers" if renamed else "broadcast_buffers": False}
    return ddp(model, device_ids=[local_rank] if device.type == "cuda" else None, **no_sync)


def all_reduce_mean(x, world):
    if world > 1:
        torch.distributed.all_reduce(x)
        x /= world
    return x


def grad_accum_steps(total_batch_size, micro_tokens, world):
    """Micro-steps so world * accum * micro_tokens == total_batch_size: alike on any world size."""
    total = total_batch_size or micro_tokens
    if total % (micro_tokens * world):
        why = (f"world size {world} does not divide total_batch_size={total}" if total % world else
               f"total_batch_size={total} / world size {world} = {total // world} tokens per rank is not a multiple "
               f"of batch_size*block_size = {micro_tokens}")
        fits = [n for n in range(1, 257) if total % (micro_tokens * n) == 0]
        raise UserError(f"{why}: run with a world size in {fits[:8]} or set --total_batch_size to a multiple of "
                        f"{micro_tokens * world}")
    return total // (micro_tokens * world)


def draw_device(device):
    """Where draws run: on the device if it has float64 (CUDA), else on the CPU (MPS has none)."""
    device = torch.device(device)
    return torch.device("cpu") if device.type in ("cpu", "mps") else device


def on_device(generator, device):
    """The generator for draws on `device`: `generator` on the CPU, else one it seeds (no sync)."""
    if generator is None or torch.device(device).type in ("cpu", "meta"):
        return generator
    return torch.Generator(device).manual_seed(int(torch.randint(2 ** 62, (), generator=generator)))


def keyed_generator(*key):
    """A CPU generator seeded by ints, e.g. (seed, stream, step, slot): stateless, so resumable."""
    entropy = [k & 0xFFFFFFFFFFFFFFFF for k in key]  # SeedSequence wants non-negative ints
    return torch.Generator().manual_seed(int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0]))


def rng_state():
    """The global RNG states (torch, CUDA, numpy, python) as weights_only-loadable values."""
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
    """[obj of rank 0, obj of rank 1, ...] on every rank; a collective, so every rank calls it."""
    if world == 1:
        return [obj]
    out = [None] * world
    torch.distributed.all_gather_object(out, obj)
    return out


def synchronize(device):
    """Wait for the work queued on a CUDA device, before reading a clock."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, calls=1):
    """(seconds for `calls` calls of fn, the last result), synchronised on both sides."""
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(calls):
        out = fn()
    synchronize(device)
    return time.perf_counter() - t0, out
