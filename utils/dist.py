"""Where the work runs: device, precision, peak FLOP/s, gradient accumulation, DDP written out,
and the keyed draws and RNG states that make DDP and resume exact.

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

from config import CHOICES
from utils.errors import UserError

DTYPES = CHOICES["dtype"]  # see precision

# Dense bf16 peak FLOP/s (fp32 accumulate, no sparsity), by torch.cuda.get_device_name.
# A device not listed gets no MFU rather than a wrong one.
PEAK_FLOPS = {
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
    """The torch.device --device names ('auto': the first accelerator, else the CPU). An unknown
    type, a missing accelerator or a bad index (cuda:7) is a UserError listing the devices here,
    not a traceback at the first tensor."""
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
    """The thread count of a CPU run, unless OMP_NUM_THREADS (or MKL_NUM_THREADS) fixes it: every
    core no other process holds (the 1-minute load average less ours), at least one, split over
    torchrun's ranks, refitted at each log line. A thread waiting for a busy core holds up the whole
    step, so no fixed count suits both a quiet and a busy machine: dev/LOG.md, "How many CPU
    threads a run wants"."""

    def __init__(self, device, world=1, environ=None, cores=None, load=None):
        environ = os.environ if environ is None else environ
        given = environ.get("OMP_NUM_THREADS") or environ.get("MKL_NUM_THREADS")
        self.given = int(given) if given and given.strip().isdigit() and int(given) > 0 else None
        self.auto = device.type == "cpu" and self.given is None
        self.cores = max(1, (cores or _torch_default_threads()) // world)
        self.load = load or load_average  # (a test passes its own)
        self.n = torch.get_num_threads()
        if self.auto:
            self.n = self.fit(mine=0)
            torch.set_num_threads(self.n)

    def fit(self, mine):
        """The cores others leave (load less `mine`, ours), at least one; all if no load average."""
        load = self.load()
        if load is None:
            return self.cores
        others = max(0, round(load - mine))
        return max(1, min(self.cores, self.cores - others))

    def line(self, follows=True):
        """The start-up line: the count, who chose it, how to change it (follows: will follow())."""
        if self.given is not None:
            return f"threads: {self.given} (OMP_NUM_THREADS)"
        if not self.auto:
            return f"threads: {self.n} (torch's default; the device does the work)"
        goes = "; it follows the load as the run goes" if follows else ""
        return (f"threads: {self.n} of {self.cores} core(s), those no other process holds{goes} "
                f"(OMP_NUM_THREADS=N fixes it)")

    def follow(self):
        """Refit the count to the load; returns a line saying the change, or "" when none."""
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
    """torch's own thread count, read once, before anything sets another."""
    return torch.get_num_threads()


def load_average():
    """The 1-minute load average (processes ready to run), or None where the OS keeps none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def compile_step(loss_of, model, cfg, device, world=1):
    """(loss_of, model) as the training step runs them, compiled where --compile says ('auto': on
    CUDA, where eager is launch-bound; no CPU gain measured). One process compiles the pure loss
    loss_of(model, x, cfg, schedule, tok, drawn) whole, with CUDA graphs on CUDA (dev/LOG.md, "the
    first idle-GPU check"). DDP compiles the model alone, the case torch tests: its DDPOptimizer
    splits the graph at gradient buckets, so the backward overlaps the all-reduce."""
    if not (cfg.compile == "true" or (cfg.compile == "auto" and device.type == "cuda")):
        return loss_of, model
    if world > 1:
        return loss_of, torch.compile(model)
    return torch.compile(loss_of, mode="reduce-overhead" if device.type == "cuda" else None), model


def precision(device, dtype="auto", bf16_supported=None):
    """The autocast dtype's name. 'auto' is bf16 on a GPU that has it (Ampere on), fp16 with a
    GradScaler where bf16 is emulated (V100, T4), fp32 elsewhere (bf16 measured 2.4x slower on CPU).
    bf16_supported: asked of the GPU when None."""
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


def torchrun_ranks():
    """(rank, local_rank, world) from torchrun's environment, None outside torchrun; a UserError names a
    variable missing or inconsistent (a partial environment would fail deep in init_process_group)."""
    given = [v for v in TORCHRUN_VARS if v in os.environ]
    if not given:
        return None
    missing = [v for v in TORCHRUN_VARS if v not in os.environ]
    if missing:
        raise UserError(f"{', '.join(given)} set but not {missing[0]}: start the run with torchrun (it sets "
                        f"{', '.join(TORCHRUN_VARS)}), or unset {', '.join(given)} for a single process")
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


def all_reduce_mean(x, world):
    if world > 1:
        torch.distributed.all_reduce(x)
        x /= world
    return x


def grad_accum_steps(total_batch_size, micro_tokens, world):
    """Micro-steps so that world * accum * micro_tokens == total_batch_size (0: one micro-batch):
    a recipe's step is the same on any world size."""
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
    """A CPU generator seeded from ints, e.g. (seed, stream, step, slot): stateless draws, the
    same after a resume or over any split into ranks and micro-steps."""
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
