"""train.py's log: the start-up estimates (memory, tokens/s), the refusal of a run that cannot
fit, the legend, a line a window (loss, lr, ms/it, tok/s, MFU, ETA), notes, metrics.jsonl's rows.

    python train.py gpt200m --max_iters=0   # the estimates alone, nothing trained
"""
import json
import os
import statistics
import sys
import textwrap
import time
from contextlib import contextmanager
from dataclasses import asdict, replace

import torch

from config import PRESETS, Config
from utils.fileio import atomic_open
from utils.dist import peak_flops, print0, run_queue, synchronize
from utils.errors import UserError

# what each training loss measures (train.py's log lines), beside the eval lines' validation bound
LOSSES = dict(elbo="the weighted NELBO on training batches", ce="the next-token CE on training batches",
              masked_ce="the unweighted CE over masked positions (no bound)",
              all_ce="the CE over every position, visible ones too (no bound)",
              kl="the student's KL to its teacher's passes over masked positions (distill.py; no bound)")



def wrap(text, width=120):
    """Start-up prose wrapped at `width`, later lines indented (the legend ran ~520 columns)."""
    return textwrap.fill(text, width, subsequent_indent="  ", break_long_words=False, break_on_hyphens=False)


def fmt_time(s):
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def eta_seconds(cfg, accum, eval_s, done, step_s, eval_t):
    """Time left: the steps, the evals (+ checkpoints) to come and the final one. An eval not yet
    measured is priced by its forward passes: eval_t / 3 of a step's compute."""
    eval_s = eval_s or cfg.eval_iters * eval_t * step_s / (3 * accum)
    evals_left = (cfg.max_iters - 1) // cfg.eval_interval - (done - 1) // cfg.eval_interval
    return (cfg.max_iters - done) * step_s + (evals_left + 1) * eval_s


SETTLE_WINDOWS = 3  # the recent log windows; until that many follow the first: "(settling)"
SHARED_EVERY_S = 600  # the shared-cores note comes again when steps slow again, at most this often


def projected_step_s(window_s):
    """(s/step of the history, of the last SETTLE_WINDOWS, settled): medians of the windows but the
    first (setup); the history steadies the ETA, the recent windows follow a change of load."""
    history = window_s[1:] or window_s
    return statistics.median(history), statistics.median(history[-SETTLE_WINDOWS:]), len(window_s) > SETTLE_WINDOWS


def fmt_span(etas):
    """The first of etas (the history's), or their range when they disagree by more than 20 %."""
    low, high = min(etas), max(etas)
    return fmt_time(etas[0]) if high <= 1.2 * low else f"{fmt_time(low)}-{fmt_time(high)}"


def fmt_eta(etas, settled):
    return f"eta {fmt_span(etas)}" if settled else f"eta ~{fmt_span(etas)} (settling)"


def budget(cfg):
    """A run's size for comparing presets: non-embedding parameters (12 L d^2) x training tokens."""
    tokens = cfg.max_iters * (cfg.total_batch_size or cfg.batch_size * cfg.block_size)
    return 12 * cfg.n_layer * cfg.n_embd ** 2 * tokens


def first_step_line(cfg, done, step_s, eta):
    """The first step's time and a first, rough ETA (a log line's settles from later windows)."""
    return f"iter {done}/{cfg.max_iters} | {step_s:.2f} s/step (the first, setup included) | {fmt_eta([eta], False)}"


def contention_note(window_s, device, threads=None):
    """A note when a CPU's cores are shared (the last window far slower than the fastest, or more
    threads ready than cores): what the run already does (CpuThreads); a fix only if one is left."""
    if device.type != "cpu" or len(window_s) < 3:
        return ""
    slow = window_s[-1] / min(window_s[1:])
    running, cores = run_queue(), os.cpu_count() or 1
    if slow < 2 and (running is None or running <= cores):
        return ""
    seen = [f"steps run {slow:.1f}x slower than this run's fastest"] if slow >= 1.5 else []
    seen += [] if running is None or running <= cores else [f"{running} threads ready to run on {cores} cores"]
    note = f"note: {', '.join(seen)}: another process shares the cores; "
    if threads is not None and (threads.auto or threads.given == 1):  # no fix left in this run: fewer jobs
        why = "fewer when its steps slow" if threads.auto else threads.fixed_by
        return note + f"this run already takes {threads.n} thread(s) ({why}): run one job at a time for its speed"
    return note + "give each run one thread (OMP_NUM_THREADS=1 python train.py ...) or run one at a time"


def long_run_note(cfg, device, eta, moved=None):
    """A note when the run needs over an hour here (eta: settled, one or a range), naming the laptop
    preset on a CPU if the run is bigger; moved (step time over the last note's): a revised note."""
    if moved is not None:
        return (f"note: this run now needs ~{fmt_span(eta)} on this device: its steps take {moved:.1f}x their time "
                f"at the last note")
    if max(eta) <= 3600:
        return ""
    bigger = device.type == "cpu" and budget(cfg) > budget(replace(Config(), **PRESETS["cpu"]))
    return f"note: this run needs ~{fmt_span(eta)} on this device ({device.type})" + (
        "; the laptop preset (4/4/128, 2,000 steps) trains in minutes (README's Presets table): python train.py cpu"
        if bigger else "")


def loss_label(cfg, obj):
    """(the log line's name for its training loss, a line saying what it measures); cfg as its
    objective `obj` runs it (configurator.effective: another objective's keys off)."""
    name = "ce" if obj.EXACT else getattr(cfg, obj.LOSS_KEY)
    if cfg.distill_from:  # distill.py's loss in place of the objective's
        name = "kl"
    # bd3_ar: the clean half's next token, in the same pass; dual_ar: in a second, causal pass
    ar, who = (cfg.bd3_ar, "the clean half") if cfg.bd3_ar else (cfg.dual_ar, "a causal pass")
    band = (f" on mask rates in [{cfg.mask_min:g}, {cfg.mask_max:g}] (the bound scores every rate: not comparable "
            f"to it)" if (cfg.mask_min, cfg.mask_max) != (0, 1) else "")
    if cfg.mask_ramp:  # the curriculum: a rising training loss is the band moving, not divergence
        band += (f", the band's top rising from {cfg.mask_ramp_from:g} to {cfg.mask_max:g} over the first "
                 f"{cfg.mask_ramp:.0%} of the run: harder windows as it goes, so this loss can rise while the dev "
                 f"bound falls")
    draws = f", the mean over {cfg.mask_draws} masks of each window" if cfg.mask_draws > 1 else ""
    val = "'dev NLL' is the exact NLL" if obj.EXACT else "'dev bound' is the NELBO"
    what = LOSSES[name] + band + draws + (f" plus {ar:g} x {who}'s next-token CE" if ar else "")
    name += "+ar" if ar else ""
    return f"train {name}", (f"log: 'train {name}' is {what}; {val} on the fixed dev windows (validation's first "
                             f"half), the figure to compare (both nats/token; the eval lines give nats/char, the "
                             f"README's unit, too)")


def open_wandb():
    """The wandb module, imported only for --wandb_log (optional); rank 0 logs."""
    try:
        import wandb
    except ImportError:
        raise UserError("--wandb_log needs the wandb package: pip install wandb (metrics.jsonl is written either way)")
    return wandb


def trim_metrics(path, upto):
    """Keep metrics.jsonl's rows up to iter `upto` (-1: none), dropping lines a kill cut (and
    bytes that are no UTF-8, which no row of ours holds)."""
    keep = []
    if upto >= 0 and os.path.exists(path):
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    if json.loads(line)["iter"] <= upto:
                        keep.append(line.rstrip("\n") + "\n")
                except (json.JSONDecodeError, KeyError, TypeError):
                    pass
    with atomic_open(path) as f:
        f.writelines(keep)


class TrainLog:
    """What train.py prints and writes beside its loop, and its step clock (evals: clock_stopped).
    A step costs no host sync; a log line one, and a synchronize before the clock is read."""

    def __init__(self, cfg, env, obj, start_iter, flops_tok, n_windows, eval_t):
        self.cfg = cfg
        self.env = env
        self.flops_tok = flops_tok  # training FLOPs per token: the MFU
        self.eval_t = eval_t        # the times each eval scores a window at (the ETA prices an unmeasured eval by it)
        self.first = start_iter + 1  # the first step this process takes: its time is printed at once
        self.peak = peak_flops(env.device)  # None where no peak is known: no MFU
        self.metrics_path = os.path.join(cfg.out_dir, "metrics.jsonl")
        if env.master:
            # a resumed run logs again what came after its checkpoint; a new run starts it empty
            if cfg.resume:
                trim_metrics(self.metrics_path, start_iter)
            else:
                open(self.metrics_path, "w").close()
            if env.wandb is not None:
                name = os.path.basename(os.path.normpath(cfg.out_dir))
                env.wandb.init(project=cfg.wandb_project, name=name, config=asdict(cfg))
        self.last = time.time()     # the clock: when the steps since the last log line began (evals left out)
        self.started = time.time()  # the run's wall clock, evals included (finish's "trained ...")
        self.tokens = 0             # tokens trained since the last log line
        self.steps = 0              # steps since the last log line
        self.window_s = []          # s/step of each log window: the ETA and the shared-cores note read them
        self.train_s = 0.0          # seconds spent stepping, evals left out (metrics.jsonl's "seconds")
        self.eval_s = 0.0           # seconds the last eval + checkpoint took (the ETA counts the ones to come)
        self.noted_s = None         # s/step when the long-run note was printed: noted again when it moves a lot
        self.shared = False         # whether the last log line found the cores shared
        self.shared_at = -SHARED_EVERY_S  # when the shared-cores note was last printed
        self.loss_name, legend = loss_label(cfg, obj)
        print0(wrap(legend))
        print0(wrap(f"best.pt: the lowest dev figure of the evals ({n_windows} windows x {eval_t} t of the dev half of "
                    f"validation, the same windows and times at every eval, the final one included)"))

    def due(self, done):
        """Whether a log line follows step `done` (1-based): every log_interval, and the last."""
        return done % self.cfg.log_interval == 0 or done == self.cfg.max_iters

    def step(self, done, lr, loss=None):
        """After each step: count and time it; with the loss, the log line, else a first ETA."""
        self.tokens += self.cfg.total_batch_size
        self.steps += 1
        change = self.env.threads.tick()  # a CPU run's thread count, by what its steps measure
        if change:
            print0(change)
        if loss is not None:
            self.line(done, lr, loss)
        elif done == self.first:  # (a first step with a log line due, log_interval=1 say, has that line instead)
            synchronize(self.env.device)
            step_s = time.time() - self.last
            eta = eta_seconds(self.cfg, self.env.accum, self.eval_s, done, step_s, self.eval_t)
            print0(first_step_line(self.cfg, done, step_s, eta))

    def line(self, done, lr, loss):
        """The log line since the last (loss, lr, ms/it, tok/s, MFU, ETA), its notes and row."""
        synchronize(self.env.device)  # the steps queued on the device are done before the clock is read
        dt = time.time() - self.last
        self.train_s += dt
        tok_per_s = self.tokens / dt
        self.window_s.append(dt / self.steps)
        *step_s, settled = projected_step_s(self.window_s)  # the history's and the recent windows'
        eta = [eta_seconds(self.cfg, self.env.accum, self.eval_s, done, s, self.eval_t) for s in step_s]
        mfu = ""
        if self.peak:
            mfu = f" | mfu {self.flops_tok * self.cfg.total_batch_size * self.steps / dt / self.peak * 100:.1f}%"
        print0(f"iter {done}/{self.cfg.max_iters} | {self.loss_name} {loss:.4f} | lr {lr:.2e} | "
               f"{dt / self.steps * 1000:.0f} ms/it | {tok_per_s:,.0f} tok/s{mfu} | {fmt_eta(eta, settled)}")
        self.notes(eta, max(step_s), settled)
        sys.stdout.flush()
        self.row(kind="train", iter=done, loss=loss, lr=lr, tok_per_s=tok_per_s, seconds=self.train_s)
        self.tokens = 0
        self.steps = 0
        self.last = time.time()

    def notes(self, eta, step_s, settled):
        """The notes: long-run once settled (again if step time moves by half), and shared cores."""
        moved = None if self.noted_s is None else step_s / self.noted_s
        if settled and (moved is None or not 1 / 1.5 < moved < 1.5):
            note = long_run_note(self.cfg, self.env.device, eta, moved)
            if note:
                print0(wrap(note))
                self.noted_s = step_s
        shared = contention_note(self.window_s, self.env.device, self.env.threads)
        if shared and not self.shared and time.time() - self.shared_at >= SHARED_EVERY_S:
            print0(wrap(shared))
            self.shared_at = time.time()
        self.shared = bool(shared)

    @contextmanager
    def clock_stopped(self):
        """Around an eval and its checkpoint: the clock stops (the steps before it, since the last
        log line, still count), and the time it took prices the evals still to come in the ETA."""
        start = time.time()
        yield
        self.eval_s = time.time() - start
        self.last += self.eval_s
        self.env.threads.restart()  # the eval is no step's time

    def row(self, **row):
        """One row of metrics.jsonl (and wandb), on rank 0."""
        if not self.env.master:
            return
        row.pop("per_window", None)  # eval.py's JSON keeps those; the log keeps the figures
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.env.wandb is not None:
            figures = {f"{row['kind']}/{k}": v for k, v in row.items() if isinstance(v, (int, float))}
            self.env.wandb.log(figures, step=row["iter"])

    def elapsed(self):
        """Seconds since the log opened, evals included: what finish calls the time trained."""
        return time.time() - self.started


# ---------------------------------------------------------------- the memory and speed a run needs
# CPU peak RSS ~ 1.7 x estimate_memory's activations (backward's gradients beside them) + 0.3 GiB
CPU_ACT_FACTOR, CPU_RUNTIME_B = 1.7, 0.3 * 2**30  # measured: dev/LOG.md, "peak RSS on the CPU"


def estimate_line(cfg, model, device, dtype_name, flops_tok, seq, assumed_mfu):
    """(start-up line: memory a rank and tokens/s, the bytes a rank needs). seq: one pass's columns
    (bd3: both streams); a micro-batch runs mask_draws passes + the dual objective's causal one."""
    tokens = cfg.batch_size * (cfg.mask_draws * seq + (cfg.block_size - 1 if cfg.dual_ar else 0))
    state_b, act_b = model.estimate_memory(tokens, dtype_name == "bfloat16", cfg.ema > 0)
    peak = peak_flops(device)
    est_tps = peak * assumed_mfu / flops_tok if peak else None  # training tokens/s at the assumed MFU
    speed = (f"~{est_tps:,.0f} tokens/s per rank at an assumed {assumed_mfu:.0%} MFU of {peak / 1e12:.0f} TFLOP/s"
             if est_tps else
             f"no tokens/s estimate: no peak FLOP/s known for {device} (dev/bench_train.py measures one)")
    state = f"{state_b / 2**30:.1f} weights+grads+{cfg.optimizer}{'+EMA' if cfg.ema else ''}"
    batch = f"a {cfg.batch_size}x{cfg.block_size} micro-batch" + (f" ({tokens:,} columns in its passes)"
                                                                   if tokens != cfg.batch_size * cfg.block_size else "")
    if device.type == "cpu":  # the tensors alone undercount a CPU process: see CPU_ACT_FACTOR
        total = state_b + CPU_ACT_FACTOR * act_b + CPU_RUNTIME_B
        return (f"estimate: ~{total / 2**30:.1f} GiB peak RSS on CPU = {state} + {CPU_ACT_FACTOR * act_b / 2**30:.1f} "
                f"activations and their gradients in backward for {batch} + {CPU_RUNTIME_B / 2**30:.1f} runtime; "
                f"{speed}"), total
    return (f"estimate per rank: ~{(state_b + act_b) / 2**30:.1f} GiB of {device.type} memory = {state} + "
            f"{act_b / 2**30:.1f} activations saved for backward of {batch}; {speed}"), state_b + act_b


def check_memory(cfg, device, need, ranks=1):
    """Refuse before step 1 a run its estimate says cannot fit (a GPU; a CPU's RAM, by ranks)."""
    if device.type == "cuda":
        have = 0.95 * torch.cuda.get_device_properties(device).total_memory
    elif device.type == "cpu" and cfg.max_iters and "SC_PHYS_PAGES" in getattr(os, "sysconf_names", {}):
        have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / ranks  # torchrun's ranks share it
    else:  # (a CPU at max_iters=0: the estimate alone)
        return
    if need > have:
        fix = "add --activation_checkpointing, or " if not cfg.activation_checkpointing else ""
        raise UserError(f"this run needs ~{need / 2**30:.1f} GiB a rank, {device} has {have / 2**30:.1f} GiB a rank: "
                        f"{fix}halve --batch_size and double the micro-steps (--total_batch_size keeps the step)")
