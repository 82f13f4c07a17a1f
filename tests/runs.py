"""Running train.py in tests: tiny dims, subprocesses (to kill or torchrun them) and in-process runs.

Subprocesses run with OMP_NUM_THREADS=1; run_here(..., threads=1) is the in-process run to compare
them with bit for bit (one process start less).
"""
import json
import os
import socket
import subprocess
import sys

import torch

import train
from conftest import ROOT, real_text

B, L = 8, 32  # micro-batch: 256 tokens
MICRO = ["--n_layer=1", "--n_head=2", "--n_embd=32", f"--block_size={L}", f"--batch_size={B}", "--diffusion_steps=20",
         "--steps=4", "--gen_len=8", "--eval_iters=2", "--device=cpu", "--learning_rate=3e-3", "--warmup_iters=5"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}


def train_args(out, *extra):
    return [str(ROOT / "train.py"), f"--data_path={real_text()}", f"--out_dir={out}", *MICRO, *extra]


def popen(args, cwd, torchrun=None):
    """Each concurrent run gets its own cwd: two processes encoding the same data cache at once would race."""
    os.makedirs(cwd, exist_ok=True)
    pre = [sys.executable]
    if torchrun:
        with socket.socket() as s:  # a free port for the rendezvous
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        pre += ["-m", "torch.distributed.run", "--nnodes=1", f"--nproc_per_node={torchrun}",
                "--master_addr=127.0.0.1", f"--master_port={port}"]
    return subprocess.Popen(pre + args, cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(p, timeout=60):
    out, err = p.communicate(timeout=timeout)
    assert p.returncode == 0, err[-2000:]
    return out


def run_here(args, cwd, threads=None):
    """train.main in this process (saves a process start); threads=1 matches OMP_NUM_THREADS=1 subprocesses."""
    old_cwd, old_threads = os.getcwd(), torch.get_num_threads()
    os.chdir(cwd)
    torch.set_num_threads(threads or old_threads)
    try:
        train.main(args[1:])
    finally:
        os.chdir(old_cwd)
        torch.set_num_threads(old_threads)


def rows(out_dir):
    with open(out_dir / "metrics.jsonl") as f:
        return [json.loads(line) for line in f]
