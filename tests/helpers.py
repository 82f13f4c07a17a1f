"""What the tests share: paths and real text, the two tiny model sizes, running the CLIs (in this process,
as subprocesses, under torchrun), and toy models whose answers are known by hand.
The fixtures (in_tmp, tiny_ckpt) are in conftest.py. Run the suite from the repo root (pytest.ini: the tiers):

    python -m pytest -q -m core tests          # the edit-run loop
    python -m pytest -q -m "not slower" tests  # README's command, CI's first line
    python -m pytest -q -m slower tests        # CI's second line

Subprocesses run with OMP_NUM_THREADS=1; run_here(..., threads=1) is the in-process run to compare
them with bit for bit (one process start less).
"""
import contextlib
import importlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"
FIXTURES = ROOT / "tests" / "fixtures"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}

# Two sizes, for two jobs. TINY learns within a few hundred steps (tests that check a model learned);
# MICRO is the smallest that runs every code path (plumbing: resume, DDP, faults), where only exactness counts.
TINY = ["--n_layer=2", "--n_head=2", "--n_embd=64", "--block_size=64", "--batch_size=16",
        "--diffusion_steps=20", "--steps=20", "--eval_iters=4", "--log_interval=50", "--device=cpu"]
B, L = 8, 32  # MICRO's micro-batch: 256 tokens
MICRO = ["--n_layer=1", "--n_head=2", "--n_embd=32", f"--block_size={L}", f"--batch_size={B}", "--diffusion_steps=20",
         "--steps=4", "--gen_len=8", "--eval_iters=2", "--device=cpu", "--learning_rate=3e-3", "--warmup_iters=5"]


def pick(out, positions):
    """A model's output (B, L, V) at `positions`, flat row-major indices (N,), as model.py."""
    return out.flatten(0, 1)[positions]


def loss(obj, model, x, cfg, schedule, tok, draw):
    """An objective's loss in one call: its draws, then its loss given them (train.py makes the two calls itself, to
    compile only the second)."""
    return obj.loss(model, x, cfg, schedule, tok, obj.draws(x, cfg, schedule, tok, draw))


def for_objective(args):
    """args less the flags its (last) --objective=X does not read: MICRO and TINY set diffusion keys, which
    configurator.validate refuses for AR (the user's rule: a given key that cannot apply is an error)."""
    from objectives import OBJECTIVES
    name = next((str(a).split("=", 1)[1] for a in reversed(args) if str(a).startswith("--objective=")), "mdlm")
    ignored = OBJECTIVES[name].IGNORES
    return [a for a in args if not (str(a).startswith("--") and str(a)[2:].split("=")[0] in ignored)]


def real_text(name="tinyshakespeare.txt"):
    """A real corpus: the repo's data/ (Tiny Shakespeare ships there), else ../shared/data (the development layout,
    absent on a fresh clone), else the small in-repo fixture."""
    for p in (ROOT / "data" / name, SHARED / name):
        if p.is_file():
            return p
    return FIXTURES / "tiny_stories.txt"


# ----------------------------------------------------------------------------- running the CLIs

def script(name):
    """scripts/<name>.py (or, 'dev/NAME', the laboratory's dev/<name>.py) as a module (its main() runs in this process)."""
    return importlib.import_module(name.replace("/", ".") if name.startswith("dev/") else f"scripts.{name}")


def run_cli_here(main, argv, capsys):
    """An entry point's main() the way its __main__ runs it: (exit code, stdout, stderr)."""
    from utils.errors import run_cli
    try:
        run_cli(main, [str(a) for a in argv])
        code = 0
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def run_script(path, *args, cwd=ROOT, env=None, timeout=120):
    """python <path relative to the repo> ARGS in a subprocess: a CompletedProcess with text output."""
    return subprocess.run([sys.executable, str(ROOT / path), *map(str, args)], cwd=cwd, env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(code, err, *words):
    """Exit code 2 and exactly one line on stderr, 'error: ...' holding every word, no traceback. Returns it."""
    assert code == 2, (code, err)
    assert err.startswith("error: ") and err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err and all(w in err for w in words), (words, err)
    return err


def ctrl_c_default():
    """A started process's Ctrl-C as a terminal gives it: a suite run as a background job (nohup, `&` without job
    control) starts its children with SIGINT ignored, and Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def fresh_copy(tmp_path):
    """(a copy of the tracked files, what a fresh clone holds; an environment whose `python` and `torchrun` are this
    interpreter's, as in an activated venv, at one thread)."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.decode()
    repo = tmp_path / "repo"
    for rel in filter(None, files.split("\0")):
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, repo / rel)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, tail in (("python", ""), ("torchrun", " -m torch.distributed.run")):
        (bin_dir / name).write_text(f'#!/bin/sh\nexec "{sys.executable}"{tail} "$@"\n')
        (bin_dir / name).chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", OMP_NUM_THREADS="1",
               PYTHONDONTWRITEBYTECODE="1")
    return repo, env


def serve_briefly(cmd, cwd, env, timeout=120):
    """A documented `inference.py ... --serve` line run as typed (on a free port, --port 0): once it serves, its page
    is fetched, then Ctrl-C. Returns (exit code, the page's status, stderr)."""
    import urllib.request
    p = subprocess.Popen(["bash", "-c", f"exec {cmd} --port 0"], cwd=cwd, env=env, preexec_fn=ctrl_c_default,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        url = next((line.split()[1] for line in p.stdout if line.startswith("serving http://")), None)
        status = urllib.request.urlopen(url, timeout=30).status if url else None
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=timeout)
    finally:
        p.kill()
    return p.returncode, status, err


# ----------------------------------------------------------------------------- training runs

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
    return subprocess.Popen(pre + args, cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=ctrl_c_default)


def finish(p, timeout=60):
    out, err = p.communicate(timeout=timeout)
    assert p.returncode == 0, err[-8000:]  # a torchrun worker's own error sits above the launcher's summary
    return out


def run_here(args, cwd, threads=None):
    """train.main in this process (saves a process start); threads=1 matches OMP_NUM_THREADS=1 subprocesses."""
    import train
    old_cwd, old_threads = os.getcwd(), torch.get_num_threads()
    os.chdir(cwd)
    torch.set_num_threads(threads or old_threads)
    try:
        train.main([str(a) for a in args[1:]] if str(args[0]).endswith("train.py") else args)
    finally:
        os.chdir(old_cwd)
        torch.set_num_threads(old_threads)


def rows(out_dir):
    with open(Path(out_dir) / "metrics.jsonl") as f:
        return [json.loads(line) for line in f]


# ----------------------------------------------------------------------------- toy models

class Tok:
    """What an objective reads of a tokenizer: the [MASK] id and the vocabulary size ([MASK] included)."""

    def __init__(self, mask_id, vocab_size=None):
        self.mask_id, self.vocab_size = mask_id, vocab_size or mask_id + 1


class Args:
    """The model.args a sampler reads: only the context."""

    def __init__(self, block_size):
        self.block_size = block_size


class ConstModel(torch.nn.Module):
    """Ignores its input: the same logits at every position. Its true NLL is known in closed form."""

    def __init__(self, logits, block_size=64):
        super().__init__()
        self.logits = torch.nn.Parameter(torch.tensor(logits, dtype=torch.float32))
        self.args = Args(block_size)

    def forward(self, idx, t=None, positions=None, head_cols=None, **kw):  # model.Transformer's head options
        out = self.logits.expand(*idx.shape, -1).clone()
        return pick(out, positions) if positions is not None else out[:, :head_cols]


class ToyModel(torch.nn.Module):
    """Logits depend on the input and t (so order matters) and strongly prefer [MASK] = mask_id (which must
    never win). Refuses inputs longer than its context, like the real model."""

    def __init__(self, V=12, block_size=64, mask_id=11):
        super().__init__()
        torch.manual_seed(0)
        self.emb = torch.nn.Embedding(V, V)
        self.mask_id, self.args = mask_id, Args(block_size)

    def forward(self, idx, t=None, positions=None, **kw):
        assert idx.size(1) <= self.args.block_size and t is not None and (t >= 1).all()
        logits = self.emb(idx) + self.emb(idx.roll(1, 1)) + 0.1 * t[:, None, None]
        logits[..., self.mask_id] += 100.0
        return logits if positions is None else pick(logits, positions)


# ----------------------------------------------------------------------------- block diffusion's uncached reference

class WindowBlockModel:
    """bd3.CachedBlockModel's uncached reference: every call runs the two-stream training pass over the whole window
    ([x_t ; x_0] with the context clean in x_0 and the block noisy in x_t), and keeps the block's logits."""

    def __init__(self, model, block, mask_id):
        self.model, self.block, self.mask_id, self.args = model, block, mask_id, model.args

    def __call__(self, idx, t=None, positions=None, sc=None):
        from bd3 import bd3_logits
        n = idx.size(1) - self.block
        xt = torch.cat([torch.full_like(idx[:, :n], self.mask_id), idx[:, n:]], 1)  # noisy context: never read
        x0 = torch.cat([idx[:, :n], torch.zeros_like(idx[:, n:])], 1)  # clean block: only later blocks read it
        logits = bd3_logits(self.model, xt, x0, self.block, self.mask_id, sc=sc)  # (R, n + block, V); sc 0 off the block
        return logits if positions is None else pick(logits, positions)


def bd3_drawn(x0, block, schedule, generator, t=None, allowed=None, share=0.0):
    """bd3.bd3_loss's draws (bd3.BlockDrawn) for x0 (B, L), made as it once made them itself: the times
    t (B, L // block), or one a block stratified over `allowed` (default 1..T), then the masks and
    self-conditioning's rows (share, the loss's self_cond) from generator; n_times = len(allowed)."""
    from bd3 import bd3_times, block_draws
    allowed = torch.arange(1, schedule.T + 1) if allowed is None else allowed
    t = bd3_times(len(x0), x0.size(1) // block, allowed, generator, x0.device) if t is None else t
    return block_draws(x0.shape, t, share, generator, x0.device, len(allowed))


@contextlib.contextmanager
def uncached_bd3(mask_id, uncached=True):
    """Inside it bd3.sample_bd3 decodes through WindowBlockModel instead of its KV cache (uncached=False: unchanged)."""
    import bd3
    real = bd3.CachedBlockModel
    if uncached:
        bd3.CachedBlockModel = lambda model, cache, block: WindowBlockModel(model, block, mask_id)
    try:
        yield
    finally:
        bd3.CachedBlockModel = real


def pooled_chi2(samples, joint, least=5.0):
    """(chi-square, a limit far in its tail) with the outcomes expected fewer than `least` times pooled into one
    cell: an outcome of probability 1e-8 drawn once would otherwise dominate the sum."""
    n, counts = len(samples), {}
    for s in samples:
        counts[tuple(s)] = counts.get(tuple(s), 0) + 1
    big = {s: q for s, q in joint.items() if n * q >= least}
    rest = (n - sum(counts.get(s, 0) for s in big), n * (1 - sum(big.values())))  # (observed, expected)
    cells = [(counts.get(s, 0), n * q) for s, q in big.items()] + ([rest] if rest[1] >= least else [])
    chi2 = sum((o - e) ** 2 / e for o, e in cells) + (rest[0] if rest[1] < least else 0)  # ~0 expected: each counts
    df = len(cells) - 1
    return chi2, df + 5 * (2 * df) ** 0.5


def model_args(cfg, vocab_size):
    """The network a config trains, as train.py and checkpoint_manager build it: its objective fixes some keys."""
    from objectives import model_args as trains
    return trains(cfg, vocab_size)


def saved_config(config, where="a checkpoint"):
    """checkpoint_config of a file that holds only `config`: no network or vocabulary to check it against."""
    from checkpoint_manager import checkpoint_config
    tokenizer = dict(kind=config.get("tokenizer", "char"))
    return checkpoint_config(dict(config=config, model_args={}, tokenizer=tokenizer), where)


def acting_value(key, default):
    """Values of a config key other than its default, by config.py's tables: its other choices; the other bool; a
    number halfway to its range's low end, or just above it (an int's next one); a text with a letter more."""
    import math
    from config import CHOICES, RANGES
    from utils.values import TYPES, interval
    if key in CHOICES:
        return [c for c in CHOICES[key] if c != default]
    if TYPES[key] is bool:
        return [not default]
    if TYPES[key] is str:
        return [f"{default}x"]
    low, high = interval(key)[:2] if key in RANGES else (0, math.inf)
    if TYPES[key] is int:
        return [int((low + default) // 2) if default > low + 1 else default + 1]
    return [(low + default) / 2 if default > low else min(default + 0.5, (default + high) / 2)]


PACING = ("replay_steps",)  # sampler keys that pace decoding: the samples do not depend on them (config.py says so)
