"""What train.py prints about a run beside its loop: the startup memory and speed estimates, the log it keeps while
training (TrainLog: the first step's time and ETA, the log lines and metrics.jsonl, a note when the run is long for
its device or its cores are shared), the name of the training loss in its log lines and the end-of-training metrics
block with a sample. Every figure carries its unit or says what it counts.

    from evals import report
    name, legend = report.loss_label(cfg)      # 'train all_ce' (the log line's figure) and what it measures
    log = report.TrainLog(cfg, env, start_iter, flops_tok, n_windows, eval_t)   # train.train's log
"""
import json
import os
import shlex
import sys
import textwrap
import time
from contextlib import contextmanager
from dataclasses import asdict, replace

import torch

import objectives
from common import LN2
from configurator import get_config
from canvas import continuation
from evals.metrics import ChangeRate, distinct_n
from trace import StepBar, chain, check_trace_path, generate_with_trace, open_trace, print_written
from utils.checkpoint import trim_metrics
from utils.dist import load_average, peak_flops, print0, synchronize
from utils.errors import UserError

# what each training loss measures (train.py's log lines), beside the validation bound the eval lines report
LOSSES = dict(elbo="the weighted NELBO on training batches", ce="the next-token CE on training batches",
              masked_ce="the unweighted CE over masked positions (no bound)",
              all_ce="the CE over every position, visible ones too (no bound)")


# A CPU process's peak RSS, measured (2026-11-24, torch 2.13, fp32, 1 thread) against model.estimate_memory's saved
# activations A: ~1.7 A (backward's transient gradients beside the saved tensors: 1.6-2.0 over 4/4/128 at 32x128 and
# 64x256, 8/4/128, and the 6/6/384 reference at 64x256, 4.42 GiB against A = 2.40) + ~0.3 GiB of runtime.
CPU_ACT_FACTOR, CPU_RUNTIME_B = 1.7, 0.3 * 2**30


def wrap(text, width=120):
    """A start-up line's prose in lines of at most `width` columns, the later ones indented: a log read in a terminal
    (the legend alone ran to ~520 characters on one line)."""
    return textwrap.fill(text, width, subsequent_indent="  ", break_long_words=False, break_on_hyphens=False)


def fmt_time(s):
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def estimate_line(cfg, model, device, dtype_name, flops_tok, seq, assumed_mfu):
    """(Memory per rank and tokens/s in a line, from the model's own accounting (rough: see model.estimate_memory);
    the bytes a rank needs). seq: the columns of one pass (bd3: both streams); a micro-batch runs mask_draws
    diffusion passes and the dual objective's causal one."""
    tokens = cfg.batch_size * (cfg.mask_draws * seq + (cfg.block_size - 1 if cfg.dual_ar else 0))
    state_b, act_b = model.estimate_memory(tokens, dtype_name == "bfloat16", cfg.ema > 0)
    peak = peak_flops(device)
    est_tps = peak * assumed_mfu / flops_tok if peak else None  # training tokens/s at the assumed MFU
    speed = (f"~{est_tps:,.0f} tokens/s per rank at an assumed {assumed_mfu:.0%} MFU of {peak / 1e12:.0f} TFLOP/s"
             if est_tps else
             f"no tokens/s estimate: no peak FLOP/s known for {device} (scripts/bench_train.py measures one)")
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


def check_memory(cfg, device, need):
    """Refuse, before step 1, a CUDA run its estimate says cannot fit, naming the keys that make it fit."""
    if device.type != "cuda":
        return
    have = torch.cuda.get_device_properties(device).total_memory
    if need > 0.95 * have:
        fix = "add --activation_checkpointing, or " if not cfg.activation_checkpointing else ""
        raise UserError(f"this run needs ~{need / 2**30:.0f} GiB a rank and {device} has {have / 2**30:.0f} GiB: "
                        f"{fix}halve --batch_size and double the micro-steps (--total_batch_size keeps the step)")


def eta_seconds(cfg, accum, eval_s, done, step_s, eval_t):
    """Time left: the steps, the evals (+ checkpoints) still to come and the final eval (its eval_s as well).
    Until one eval is measured, an eval pass is priced as its forward passes: eval_t / 3 of a step's compute."""
    eval_s = eval_s or cfg.eval_iters * eval_t * step_s / (3 * accum)
    evals_left = (cfg.max_iters - 1) // cfg.eval_interval - (done - 1) // cfg.eval_interval
    return (cfg.max_iters - done) * step_s + (evals_left + 1) * eval_s


SETTLE_WINDOWS = 3  # log windows the ETA's step time is the median of; until that many follow the first: "(settling)"


def steady_step_s(window_s):
    """(s/step to project from, settled): the median of the last SETTLE_WINDOWS log windows' s/step, the first
    window (setup, and a shared machine's slow first steps) left out once another is timed."""
    recent = sorted((window_s[1:] or window_s)[-SETTLE_WINDOWS:])
    return recent[(len(recent) - 1) // 2], len(window_s) > SETTLE_WINDOWS


def fmt_eta(eta, settled):
    return f"eta {fmt_time(eta)}" if settled else f"eta ~{fmt_time(eta)} (settling)"


def budget(cfg):
    """A run's size for comparing presets: non-embedding parameters (12 L d^2) x training tokens."""
    tokens = cfg.max_iters * (cfg.total_batch_size or cfg.batch_size * cfg.block_size)
    return 12 * cfg.n_layer * cfg.n_embd ** 2 * tokens


def first_step_line(cfg, done, step_s, eta):
    """The first step's time and a first, rough ETA (a log line's ETA settles from steady windows)."""
    return f"iter {done}/{cfg.max_iters} | {step_s:.2f} s/step (the first, setup included) | {fmt_eta(eta, False)}"


def contention_note(window_s, device, threads=None):
    """Once, when the cores are shared: a CPU's last log window several times slower than the run's fastest, or more
    processes ready to run than cores. It says what this run already does about it (threads: utils.dist.CpuThreads;
    a count the program picks follows the load by itself) and names a fix only where one is left to take."""
    if device.type != "cpu" or len(window_s) < 3:
        return ""
    slow = window_s[-1] / min(window_s[1:])
    load = load_average()  # None on an OS that keeps none (Windows): the slow steps alone tell then
    cores = os.cpu_count() or 1
    crowded = load is not None and load > cores + 0.5
    if slow < 2 and not crowded:
        return ""
    ready = "" if load is None else f", {load:.1f} processes ready on {cores} cores"
    note = f"note: steps run {slow:.1f}x slower than this run's fastest{ready}: another process shares them; "
    if threads is not None and threads.auto:
        return note + f"this run's thread count follows the load (now {threads.n}); run one job at a time for its speed"
    if threads is not None and threads.given == 1:
        return note + "this run already takes one thread (OMP_NUM_THREADS=1): run one job at a time for its speed"
    return note + "give each run one thread (OMP_NUM_THREADS=1 python train.py ...) or run one at a time"


def long_run_note(cfg, device, eta):
    """Once the ETA has settled: a note when the run needs more than an hour here; on a CPU, when the run is
    bigger than the laptop preset, it names that preset. "" when the run is shorter."""
    if eta <= 3600:
        return ""
    bigger = device.type == "cpu" and budget(cfg) > budget(get_config(["cpu"]))
    return f"note: this run needs ~{fmt_time(eta)} on this device ({device.type})" + (
        "; the laptop preset (4/4/128, 2,000 steps) trains in minutes (README's Presets table): python train.py cpu"
        if bigger else "")


def loss_label(cfg):
    """(the name of the figure a log line reports as its training loss, a line saying what it measures)."""
    obj = objectives.get(cfg.objective)
    cfg = objectives.effective(cfg)  # another objective's keys at their defaults: off
    name = "ce" if obj.EXACT else getattr(cfg, obj.LOSS_KEY)
    # bd3's clean half learns the next token in the same pass (bd3_ar); mdlm's dual_ar, in a second, causal pass
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


def open_wandb(cfg):
    """The wandb module TrainLog logs to when --wandb_log asks for it (rank 0 logs), else None; imported only then
    (optional)."""
    if not cfg.wandb_log:
        return None
    try:
        import wandb
    except ImportError:
        raise UserError("--wandb_log needs the wandb package: pip install wandb (metrics.jsonl is written either way)")
    return wandb


class TrainLog:
    """What train.py prints and writes beside its loop, and the clock it times the steps by.

    Opening it trims a resumed run's metrics.jsonl to the checkpoint's step, starts wandb and prints the legend (what
    the log line's loss is; what best.pt holds). Then one call a step, step(), prints the first step's time and a
    first ETA, and every log_interval steps (and at the last) the log line, its metrics.jsonl row and, once each, the
    long-run and shared-cores notes. The clock counts steps only: clock_stopped() holds it while the loop evaluates
    and saves, and that time prices the evals still to come. A step costs no host sync; a log line one (its loss,
    which the loop reads) and the device's synchronize before the clock is read.
    """

    def __init__(self, cfg, env, start_iter, flops_tok, n_windows, eval_t):
        self.cfg = cfg
        self.env = env
        self.flops_tok = flops_tok  # training FLOPs per token: the MFU
        self.eval_t = eval_t        # the times each eval scores a window at (the ETA prices an unmeasured eval by it)
        self.first = start_iter + 1  # the first step this process takes: its time is printed at once
        self.peak = peak_flops(env.device)  # None where no peak is known: no MFU
        self.metrics_path = os.path.join(cfg.out_dir, "metrics.jsonl")
        if env.master:
            # a resumed run logs again what came after its checkpoint; a new run starts the file empty
            trim_metrics(self.metrics_path, start_iter if cfg.resume else -1)
            if env.wandb is not None:
                name = os.path.basename(os.path.normpath(cfg.out_dir))
                env.wandb.init(project=cfg.wandb_project, name=name, config=asdict(cfg))
        self.last = time.time()     # the clock: when the steps since the last log line began (evals left out)
        self.started = time.time()  # the run's wall clock, evals included (finish's "trained ...")
        self.tokens = 0             # tokens trained since the last log line
        self.steps = 0              # steps since the last log line
        self.window_s = []          # s/step of each log window: the ETA's median and the shared-cores test read them
        self.train_s = 0.0          # seconds spent stepping, evals left out (metrics.jsonl's "seconds")
        self.eval_s = 0.0           # seconds the last eval + checkpoint took (the ETA counts the ones to come)
        self.noted_long = False     # the long-run note: weighed once, at the first settled ETA
        self.noted_shared = False   # the shared-cores note: printed once, when first seen
        self.loss_name, legend = loss_label(cfg)
        print0(wrap(legend))
        print0(wrap(f"best.pt: the lowest dev figure of the evals ({n_windows} windows x {eval_t} t of the dev half of "
                    f"validation, the same windows and times at every eval, the final one included)"))

    def due(self, done):
        """Whether a log line follows step `done` (1-based): every log_interval steps, and the last."""
        return done % self.cfg.log_interval == 0 or done == self.cfg.max_iters

    def step(self, done, lr, loss=None):
        """After each step: count it; given the loss of the window (a log line is due) print the log line, else,
        after this process's first step, its time and a first ETA (not after log_interval steps)."""
        self.tokens += self.cfg.total_batch_size
        self.steps += 1
        if loss is not None:
            self.line(done, lr, loss)
        elif done == self.first:  # (a first step with a log line due, log_interval=1 say, has that line instead)
            synchronize(self.env.device)
            step_s = time.time() - self.last
            eta = eta_seconds(self.cfg, self.env.accum, self.eval_s, done, step_s, self.eval_t)
            print0(first_step_line(self.cfg, done, step_s, eta))

    def line(self, done, lr, loss):
        """The log line of the steps since the last one: loss, lr, ms/it, tok/s, MFU, ETA; its notes and its row."""
        synchronize(self.env.device)  # the steps queued on the device are done before the clock is read
        dt = time.time() - self.last
        self.train_s += dt
        tok_per_s = self.tokens / dt
        self.window_s.append(dt / self.steps)
        step_s, settled = steady_step_s(self.window_s)  # a median of recent windows: the first steps run slow
        eta = eta_seconds(self.cfg, self.env.accum, self.eval_s, done, step_s, self.eval_t)
        mfu = ""
        if self.peak:
            mfu = f" | mfu {self.flops_tok * self.cfg.total_batch_size * self.steps / dt / self.peak * 100:.1f}%"
        print0(f"iter {done}/{self.cfg.max_iters} | {self.loss_name} {loss:.4f} | lr {lr:.2e} | "
               f"{dt / self.steps * 1000:.0f} ms/it | {tok_per_s:,.0f} tok/s{mfu} | {fmt_eta(eta, settled)}")
        self.notes(eta, settled)
        sys.stdout.flush()
        self.row(kind="train", iter=done, loss=loss, lr=lr, tok_per_s=tok_per_s, seconds=self.train_s)
        self.tokens = 0
        self.steps = 0
        self.last = time.time()

    def notes(self, eta, settled):
        """The long-run note, weighed once from the first settled ETA; a CPU run's thread count fitted to the load again
        (a line when it changes); the shared-cores note, once, when it shows."""
        if settled and not self.noted_long:
            self.noted_long = True
            note = long_run_note(self.cfg, self.env.device, eta)
            if note:
                print0(wrap(note))
        if self.env.threads is not None:
            change = self.env.threads.follow()  # the CPU's thread count fitted to the load again: a line if it moved
            if change:
                print0(change)
        if not self.noted_shared:
            shared = contention_note(self.window_s, self.env.device, self.env.threads)
            if shared:
                print0(wrap(shared))
                self.noted_shared = True

    @contextmanager
    def clock_stopped(self):
        """Around an eval and its checkpoint: the clock stops (the steps before it, since the last log line, still
        count) and the time it took prices the evals still to come in the ETA."""
        start = time.time()
        yield
        self.eval_s = time.time() - start
        self.last += self.eval_s

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


def interrupted(cfg, run, argv):
    """What a Ctrl-C of train.py leaves behind, in one line: the checkpoint to continue from and the command that does
    (run: train.py's Run, its newest complete checkpoint in run.saved)."""
    if run.saved_iter >= cfg.max_iters:
        return f"training had finished: {run.saved} (iter {run.saved_iter}) is complete; only the report was cut short"
    if not run.saved:
        # its metrics.jsonl is there: a new run in out_dir is refused without --overwrite (refuse_earlier_run)
        return (f"before the first checkpoint (due at iter {min(cfg.eval_interval, cfg.max_iters)}): none was saved; "
                f"run the same command{'' if cfg.overwrite else ' with --overwrite'} to start again")
    prog = sys.argv[0] if sys.argv[0].endswith("train.py") else "train.py"  # the path it was started by
    again = shlex.join(["python", prog, *argv, *([] if cfg.resume else ["--resume"])])
    return f"the last checkpoint is {run.saved} (iter {run.saved_iter}); continue it with: {again}"


def units(res):
    """A bound or NLL per token and per character of the scored tokens (nats/char = bits/char x ln 2, as eval.py)."""
    return (f"{res['nats_per_token']:.4f} ± {res['se']:.4f} nats/token = {res['bits_per_char'] * LN2:.4f} ± "
            f"{res['bpc_se'] * LN2:.4f} nats/char = {res['bits_per_char']:.4f} ± {res['bpc_se']:.4f} bits/char")


def revisits(cfg):
    """Whether the sampler in force can change a token it has committed (else its change rate is 0 by design)."""
    obj = objectives.get(cfg.objective)
    return obj.NOISE_START or (obj.TRACE and cfg.remask != "none" and not cfg.threshold)


def report_samples(cfg, tok):
    """(prompt tokens, tokens generated) of the end-of-run samples: gen_len, cut to what the context holds."""
    prompt_len = len(tok.encode(cfg.prompt))
    return prompt_len, min(cfg.gen_len, cfg.block_size - prompt_len - objectives.get(cfg.objective).WINDOW)


# the sampling keys only inference.py reads: the end-of-run samples continue --prompt in the text they print (no
# infill, prefix or suffix file, no --live canvas), from the model just trained, with no prompts from a file or stdin
INFERENCE_ONLY = ("checkpoint", "infill", "prefix_file", "suffix_file", "prompts_file", "interactive", "live")


def refuse_inference_keys(given):
    """A key only inference.py reads, given to train.py (by flag or config file), is refused: it would act on nothing.
    given: the keys the user set (configurator.parse's)."""
    unread = [k for k in INFERENCE_ONLY if k in given]
    if unread:
        raise UserError(f"--{unread[0]} is inference.py's: train.py's end-of-run samples continue --prompt; drop it, "
                        f"and sample the trained model with python inference.py --{unread[0]} ...")


def check_report(cfg, tok):
    """What the end-of-run report will sample, refused before step 1 rather than after training: its canvas and its
    trace's path."""
    prompt_len, gen_len = report_samples(cfg, tok)
    if gen_len < 1:
        raise UserError(f"--prompt is {prompt_len} tokens: it leaves no room in the context of {cfg.block_size} for "
                        f"the end-of-run samples; give a shorter prompt")
    continuation(cfg, tok, cfg.prompt, gen_len, cfg.block_size)
    if cfg.viz_video and objectives.get(cfg.objective).TRACE:
        check_trace_path(cfg)


def final_report(model, tok, cfg, schedule, device, res, chars_per_token=1.0, test=None):
    """The end-of-training metrics block (res: the dev eval; test: the figure the records cite, evals.bound.REPORT)
    and the samples (4 are drawn at least, for distinct-2; each is printed)."""
    g = torch.Generator().manual_seed(cfg.seed)
    obj = objectives.get(cfg.objective)
    change = ChangeRate(tok.mask_id)  # the fraction of committed tokens a reverse step changes
    n = max(cfg.num_samples, 4)
    prompt_len, gen_len = report_samples(cfg, tok)
    writer = open_trace(cfg) if obj.TRACE else None  # sample 0's trace
    canvas = continuation(cfg, tok, cfg.prompt, gen_len, model.args.block_size)
    # a gen_len past the context is cut to what it holds after the prompt, and said so
    cut = f" (gen_len={cfg.gen_len}: what the context holds after the prompt)" if gen_len < cfg.gen_len else ""
    print(f"sampling {n} x {gen_len} tokens{cut}" + (f", tracing sample 0 to {cfg.viz_video}" if writer else ""))
    with StepBar(obj.passes(cfg, gen_len, prompt_len), on=obj.TRACE) as bar:
        texts, _, stats = generate_with_trace(writer, model, tok, canvas, replace(cfg, num_samples=n), schedule,
                                              device, g, on_step=chain(change, bar))
    print("---- final validation metrics")
    what, t = ("NLL", "") if obj.EXACT else ("bound (NELBO)", " x %d t")
    print(f"  dev {what}, the figure that picks best.pt: {units(res)} ({res['n_windows']} windows"
          f"{t and t % res['n_t']} of the dev half; ± one standard error)")
    if test:
        print(f"  test {what} (scripts/eval.py's figure, the one README and RESULTS cite): {units(test)} "
              f"({test['n_windows']} windows{t and t % test['n_t']} of the test half)")
    print(f"  perplexity (per token, {'exp of the NLL' if obj.EXACT else 'exp of the bound: an upper bound'}): "
          f"{res['ppl']:.3f}")
    if "recon_acc" in res:
        where = "positions the noise changed" if obj.NOISE_START else "masked positions"
        print(f"  reconstruction accuracy (fraction of {where} whose argmax is the true token): {res['recon_acc']:.4f}")
        print(f"  prediction entropy (nats, mean over {where}) by time step t of T={cfg.diffusion_steps}: " +
              "  ".join(f"t{lo}-{hi}:{e:.2f}" for lo, hi, e in res["entropy_by_t"]))
        if revisits(cfg):
            print(f"  reverse-step token change rate (fraction of committed tokens a step changes): {change.rate:.4f}")
        else:
            print(f"  reverse-step token change rate: 0 by construction "
                  f"({'threshold' if cfg.threshold else 'remask none'}: committed tokens are final)")
    print(f"  distinct-2 (unique / all word bigrams of the {n} samples drawn, prompt excluded; all below): "
          f"{distinct_n(texts, 2):.4f}; {stats['nfe']} NFE (model calls), {stats['seconds']:.2f}s")
    for i, text in enumerate(texts):  # sample 0's text is the one the README and records pin
        print(f"---- sample {i} (prompt {cfg.prompt!r})\n{cfg.prompt + text}")
    print_written(writer)
