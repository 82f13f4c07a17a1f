"""Device, precision and DDP setup, written out (no wrappers that hide gradient sync).

torchrun sets RANK / LOCAL_RANK / WORLD_SIZE; without them this is a single process.
    torchrun --standalone --nproc_per_node=2 train.py cpu --device=cpu   # gloo on CPU
"""
import os
from contextlib import nullcontext

import torch

from utils.errors import UserError

# dense bf16 peak FLOP/s per GPU, for MFU; an unknown device gets no MFU rather than a wrong one
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10G": 125e12,
              "RTX 4090": 165e12, "RTX 3090": 71e12, "V100": 125e12, "T4": 65e12}


def pick_device(name):
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device={name} is not a device: use auto, cpu, cuda, cuda:N or mps")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device={name} but CUDA is not available here: use --device=cpu (or auto)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"--device={name} but MPS is not available here: use --device=cpu (or auto)")
    return dev


def autocast_for(device, dtype):
    """bf16 autocast on CUDA by default; fp32 elsewhere (bf16 on these CPUs measured 2.4x slower)."""
    use_bf16 = dtype == "bfloat16" or (dtype == "auto" and device.type == "cuda")
    if use_bf16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16), "bfloat16"
    return nullcontext(), "float32"


def peak_flops(device):
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_FLOPS.items() if k in name), None)


def init_distributed(device_name):
    """Returns (rank, local_rank, world_size, device). Starts a process group under torchrun."""
    if "RANK" not in os.environ:
        return 0, 0, 1, pick_device(device_name)
    rank, local_rank, world = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"])
    if device_name in ("auto", "cuda") and torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device, backend = pick_device(device_name if device_name != "auto" else "cpu"), "gloo"
    torch.distributed.init_process_group(backend=backend)
    return rank, local_rank, world, device


def all_reduce_mean(x, world):
    if world > 1:
        torch.distributed.all_reduce(x)
        x /= world
    return x
