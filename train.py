"""Train a masked diffusion LM (or the AR baseline) from scratch.

    python train.py                                   # reference recipe: char Tiny Shakespeare, 6/6/384, 5000 iters
    python train.py cpu                               # the main job: Tiny Shakespeare (data/), ~18 min on 2 CPU cores
    python train.py cpu --objective=ar                # the autoregressive baseline, same code and budget
    python train.py shakespeare_cpu --objective=uniform --time_cond=learned   # uniform-state diffusion (uniform.py)
    python train.py baby_bd3                          # block diffusion (BD3-LM): AR over blocks of 4, diffusion inside
    python train.py cpu --resume                      # continue from out_dir/model.pt (exactly as if never stopped)
    torchrun --standalone --nproc_per_node=4 train.py shakespeare_char   # DDP (NCCL on GPUs)
    python train.py --help                            # the presets, then every key: type, default, meaning

main reads top to bottom: setup (config, device, DDP) -> load_data -> build (model, optimizer, resume) -> train
(eval / save / step / log) -> finish (final eval, checkpoint, report). The loop's state is one Run, passed along.
"""
import json
import math
import os
import shlex
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace

import torch

import objectives
from checkpoint_manager import load_weights_into, read_checkpoint, source_tokenizer
from common import Draw, Schedule
from configurator import RESUMABLE_KEYS, format_config, help_text, parse, refuse_changes, wants_help
from evals.bound import evaluate, reported
from evals.report import (check_memory, check_report, contention_note, estimate_line, eta_seconds, final_report,
                          first_step_line, fmt_eta, fmt_time, long_run_note, loss_label, steady_step_s, units)
from model import ModelArgs, Transformer
from utils.checkpoint import (BackgroundWriter, host_copy, iter_of, load_latest, numbered_checkpoints,
                              save_run_checkpoint, trim_metrics)
from utils.dataloader import chars_per_token, check_fits, check_inputs, fixed_windows, get_batch, prepare_data, split_ids
from utils.dist import (all_gather_objects, all_reduce_mean, autocast_for, compile_step, grad_accum_steps, grad_scaler,
                        init_distributed, keyed_generator, peak_flops, print0, rng_state, set_rng_state, synchronize)
from utils.errors import UserError, run_cli
from utils.fileio import remove_stale_temps
from utils.optim import EMA, build_optimizer, cap_warmup, lr_at, set_lr
from utils.tokenizer import fingerprint, normalize_prompt, tokenizer_from_state

ASSUMED_MFU = 0.4  # for the startup tokens/s estimate only; the log lines report the measured MFU
EVAL_T = 4  # every eval scores the same windows at the same EVAL_T times each: best.pt compares like with like
STREAM_DATA, STREAM_MASK, STREAM_TIME = 0, 1, 2  # keys of the per-step generators (see train_step)


@dataclass
class Env:
    """Where and how this process trains (fixed after setup)."""
    rank: int
    local_rank: int
    world: int
    master: bool              # rank 0: logs, evaluates and writes
    device: torch.device
    accum: int                # micro-steps per optimizer step
    ctx: object               # autocast context (bf16 on CUDA) or nullcontext
    dtype_name: str
    wandb: object = None      # the wandb module when --wandb_log, else None
    resume: dict = None       # the checkpoint being resumed, else None
    resumed_from: str = ""


@dataclass
class Data:
    tok: object
    train_ids: object         # np.memmap of token ids
    val_ids: object           # the validation ids, both halves (utils.dataloader.split_ids)
    val_windows: torch.Tensor  # (N, block_size + 1): the fixed validation set
    val_cpt: float            # characters per scored token in val_windows (bits/char)
    meta: dict
    window: int               # tokens per training window: block_size, + 1 for AR
    source: dict = None       # the --init_from checkpoint (read once: its tokenizer here, its weights in build)


@dataclass
class Run:
    """The model, its optimizer and everything the loop carries from step to step (and saves)."""
    model: torch.nn.Module    # what the step runs: compiled and/or DDP-wrapped
    raw_model: Transformer    # uncompiled, unwrapped: state_dict, eval, samples
    eval_model: Transformer   # the EMA copy when --ema, else raw_model
    opt: torch.optim.Optimizer
    ema: EMA
    margs: ModelArgs
    schedule: Schedule
    metrics_path: str
    flops_tok: float          # training FLOPs per token (the objective's estimate): MFU
    start_iter: int = 0
    best_val: float = float("inf")
    best_iter: int = -1       # the eval best.pt holds
    skipped: int = 0          # steps skipped for a non-finite loss or gradient
    loss_acc: torch.Tensor = None  # sum of step losses since the last log line (on device: no sync per step)
    n_acc: int = 0
    bad_iter: torch.Tensor = None  # first step with a non-finite loss, -1 if none (on device: no sync)
    t_start: float = 0.0
    eval_s: float = 0.0       # seconds the last eval + checkpoint took (the ETA counts the ones to come)
    saved: str = ""           # the newest complete checkpoint: what a Ctrl-C leaves to --resume
    saved_iter: int = -1
    scaler: torch.amp.GradScaler = None  # loss scaling under fp16 autocast (utils.dist.grad_scaler); off otherwise
    writer: BackgroundWriter = field(default_factory=BackgroundWriter)  # checkpoints written beside the steps


def main(argv):
    if wants_help(argv):
        print(help_text("train.py", "[PRESET | CONFIG.py]... [--key=value]...", argv=argv))
        return
    cfg, env = setup(argv)
    cfg, data = load_data(cfg, env)
    run = build(cfg, env, data)
    if run is None:
        return  # max_iters=0: built and printed everything
    try:
        train(cfg, env, data, run)
        finish(cfg, env, data, run)
    except KeyboardInterrupt:
        run.writer.wait()  # a checkpoint being written is finished first: the line below names it
        raise KeyboardInterrupt(interrupted(cfg, run, argv) if env.master else "") from None


def interrupted(cfg, run, argv):
    """What a Ctrl-C leaves behind, in one line."""
    if run.saved_iter >= cfg.max_iters:
        return f"training had finished: {run.saved} (iter {run.saved_iter}) is complete; only the report was cut short"
    if not run.saved:
        return (f"before the first checkpoint (due at iter {min(cfg.eval_interval, cfg.max_iters)}): none was saved; "
                f"run the same command to start again")
    prog = sys.argv[0] if sys.argv[0].endswith("train.py") else "train.py"  # the path it was started by
    again = shlex.join(["python", prog, *argv, *([] if cfg.resume else ["--resume"])])
    return f"the last checkpoint is {run.saved} (iter {run.saved_iter}); continue it with: {again}"


# ---------------------------------------------------------------- config, device, dist; data and tokenizer
def setup(argv):
    cfg, given = parse(argv)
    if os.path.isfile(cfg.out_dir):  # a checkpoint, say: never written over
        raise UserError(f"--out_dir={cfg.out_dir} is a file, not a folder: give --out_dir=NEW_DIR")
    rank, local_rank, world, device = init_distributed(cfg.device)
    resume, resumed_from = None, ""
    if rank == 0:
        for name in remove_stale_temps(cfg.out_dir):
            print(f"removed {os.path.join(cfg.out_dir, name)}: a partial write of a killed run")
    if cfg.resume:
        resume, resumed_from = load_latest(cfg.out_dir, warn=print0)
        # the run's own settings; only the resumable ones (schedule length, intervals, checkpointing, device) change
        refuse_changes(cfg, given, resume["config"], f"--resume: {resumed_from}",
                       "drop those flags to continue the run, or train a new one in another --out_dir", RESUMABLE_KEYS)
        cfg = replace(cfg, **{k: v for k, v in resume["config"].items() if k not in RESUMABLE_KEYS})
    elif ((os.path.exists(os.path.join(cfg.out_dir, "model.pt")) or numbered_checkpoints(cfg.out_dir))
          and not cfg.overwrite and cfg.max_iters > 0):
        raise UserError(f"{cfg.out_dir} already holds checkpoints: pass --resume to continue them, --overwrite to "
                        f"replace them, or --out_dir=NEW_DIR")
    # gradient accumulation from the global batch in tokens (saved: a resume on another world size keeps it)
    micro_tokens = cfg.batch_size * cfg.block_size
    accum = grad_accum_steps(cfg.total_batch_size, micro_tokens, world)
    cfg = replace(cfg, total_batch_size=micro_tokens * accum * world)
    torch.manual_seed(cfg.seed + rank)
    ctx, dtype_name = autocast_for(device, cfg.dtype)  # and TF32 on CUDA for what runs outside autocast
    wandb = None
    if cfg.wandb_log and rank == 0:
        try:
            import wandb  # optional: only imported when asked for
        except ImportError:
            raise UserError("--wandb_log needs the wandb package: pip install wandb (metrics.jsonl is written either way)")
    check_inputs(cfg)  # a missing data file: one line, no config dump
    cfg, capped = (cfg, "") if resume else cap_warmup(cfg, given)  # a resumed run keeps the warm-up it saved
    again = " ".join(["python train.py", *map(shlex.quote, argv), "--help"])
    print0(f"config, what differs from the defaults ({again} prints it all):\n{format_config(cfg)}")
    if capped:
        print0(capped)
    print0(f"device: {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else device.type}), "
           f"dtype: {dtype_name}, world size: {world}, {accum} micro-step(s) per optimizer step")
    return cfg, Env(rank, local_rank, world, rank == 0, device, accum, ctx, dtype_name, wandb, resume, resumed_from)


def load_data(cfg, env):
    tok = tokenizer_from_state(env.resume["tokenizer"]) if env.resume else None
    source = read_checkpoint(cfg.init_from) if cfg.init_from and not env.resume else None  # a resumed run has its own
    if source is not None:
        tok = source_tokenizer(cfg.init_from, cfg.tokenizer, cfg.objective, source)  # as --resume does it
    if env.world > 1 and not env.master:
        torch.distributed.barrier()  # rank 0 encodes the token cache first; the others then read it
    tok, train_ids, val_ids, meta = prepare_data(cfg, tok, verbose=env.master)
    if env.world > 1 and env.master:
        torch.distributed.barrier()
    window = cfg.block_size + objectives.get(cfg.objective).WINDOW  # AR predicts L tokens from a window of L+1
    check_fits(train_ids, window, "train")
    dev_ids = split_ids(train_ids, val_ids, "dev")  # choices read dev; the test half is for scripts/eval.py to report
    check_fits(dev_ids, cfg.block_size + 1, "dev (the first half of validation)")
    # every objective scores the last block_size tokens of the same windows (AR reads the first as context)
    asked = cfg.eval_iters * cfg.batch_size
    val_windows = fixed_windows(dev_ids, asked, cfg.block_size + 1)
    # bits/char = summed ELBO / the characters the scored tokens decode to (exact for BPE too; 1.0 for char)
    val_cpt = chars_per_token(tok, val_windows[:, 1:])
    cfg = replace(cfg, prompt=normalize_prompt(tok, cfg.prompt))  # a bad prompt fails now, not after training
    check_report(cfg, tok)  # and so do the end-of-run samples' canvas and trace path
    print0(f"data: {meta['train_tokens']:,} train / {meta['val_tokens']:,} val tokens, vocab {tok.vocab_size} "
           f"({tok.kind}, [MASK]={tok.mask_id}), {meta['chars_per_token']:.3f} chars/token on val "
           f"({val_cpt:.3f} in the {len(val_windows)} disjoint eval windows of its dev half"
           f"{'' if len(val_windows) == asked else f', all the split holds of the {asked} asked'})")
    return cfg, Data(tok, train_ids, val_ids, val_windows, val_cpt, meta, window, source)


# ---------------------------------------------------------------- model, optimizer, resume
def build(cfg, env, data):
    """The model and its estimates; then (unless max_iters=0) the optimizer, EMA and the resumed state."""
    margs = objectives.model_args(cfg, data.tok.vocab_size)
    model = Transformer(margs).to(env.device)
    if data.source is not None:
        print0(load_weights_into(model, cfg.init_from, data.tok, data.source))
    flops_tok, seq = objectives.get(cfg.objective).flops(model, cfg)
    print0(f"model: {model.num_params():,} parameters, {flops_tok / 1e6:.1f} MFLOP/token (training), "
           f"{cfg.total_batch_size:,} tokens/step = {env.world} rank(s) x {env.accum} micro-step(s) x "
           f"{cfg.batch_size} x {cfg.block_size}")
    schedule = Schedule(cfg.diffusion_steps, cfg.schedule)
    model.checkpointing = cfg.activation_checkpointing  # before the estimate, which counts what it keeps
    line, need = estimate_line(cfg, model, schedule, env.device, env.dtype_name, flops_tok, seq, ASSUMED_MFU)
    print0(line)
    check_memory(cfg, env.device, need)
    if cfg.max_iters == 0 and not cfg.resume:
        print0("max_iters=0: built data, tokenizer and model; exiting without training")
        return None
    run = Run(model=model, raw_model=model, eval_model=model, opt=build_optimizer(model, cfg, env.device), ema=None,
              margs=margs, schedule=schedule, metrics_path=os.path.join(cfg.out_dir, "metrics.jsonl"),
              loss_acc=torch.zeros((), device=env.device), bad_iter=torch.full((), -1, device=env.device, dtype=torch.long),
              scaler=grad_scaler(env.device, env.dtype_name), flops_tok=flops_tok)
    if env.resume:
        resume_state(cfg, env, run)
    run.ema = EMA(model, cfg.ema) if cfg.ema and env.master else None  # only rank 0 evaluates and saves it
    if run.ema and env.resume and "ema" in env.resume:
        run.ema.load_state_dict(env.resume["ema"], env.resume["ema_updates"])
    run.eval_model = run.ema.model if run.ema else model  # eval, best.pt selection and samples use the EMA weights when on
    if run.ema and cfg.ema >= (reach := EMA.ramp(cfg.max_iters - 1)):
        print0(f"EMA: its warm-up rule (1+n)/(10+n) stays below {cfg.ema} all run: any decay above {reach:.4f} averages alike")
    if env.world > 1:  # wrapped before it is compiled: the compiled backward overlaps the all-reduce (DDPOptimizer);
        run.model = torch.nn.parallel.DistributedDataParallel(  # the RoPE tables are the same on every rank: no broadcast
            run.model, device_ids=[env.local_rank] if env.device.type == "cuda" else None, broadcast_buffers=False)
    run.model = compile_step(run.model, cfg, env.device, env.world)
    if env.master:
        os.makedirs(cfg.out_dir, exist_ok=True)
        trim_metrics(run.metrics_path, run.start_iter if cfg.resume else -1)
        if env.wandb is not None:
            name = os.path.basename(os.path.normpath(cfg.out_dir))
            env.wandb.init(project=cfg.wandb_project, name=name, config=asdict(cfg))
    return run


def resume_state(cfg, env, run):
    """Weights, optimizer, step, best val, RNG states and the open log window from the checkpoint."""
    ck = env.resume
    run.raw_model.load_state_dict(ck["model"])
    base_lrs = [g["base_lr"] for g in run.opt.param_groups]
    run.opt.load_state_dict(ck["optimizer"])
    for g, base in zip(run.opt.param_groups, base_lrs):  # checkpoints from before base_lr existed lack it
        g["base_lr"] = base
    run.start_iter, run.best_val, run.best_iter = ck["iter"], ck.get("best_val", run.best_val), ck.get("best_iter", -1)
    if isinstance(rng := ck.get("rng"), list) and len(rng) == env.world:  # each rank's global RNGs (batches are keyed)
        set_rng_state(rng[env.rank])
    if ck.get("scaler") and run.scaler is not None and run.scaler.is_enabled():
        run.scaler.load_state_dict(ck["scaler"])
    if "loop" in ck:  # a log window cut by the checkpoint continues where it was
        run.loss_acc.copy_(ck["loop"]["loss_acc"])
        run.n_acc, run.skipped = ck["loop"]["n_acc"], ck["loop"].get("skipped", 0)
    print0(f"resumed from {env.resumed_from} at iter {run.start_iter} (best dev {run.best_val:.4f})")
    run.saved, run.saved_iter = env.resumed_from, run.start_iter
    if run.start_iter >= cfg.max_iters:
        raise UserError(f"{env.resumed_from} is already at iter {run.start_iter} >= max_iters={cfg.max_iters}: "
                        f"raise --max_iters to train further")


# ---------------------------------------------------------------- eval, log, checkpoint
def run_eval(cfg, env, data, run, it, details=False):
    res = evaluate(run.eval_model, data.val_windows, cfg, run.schedule, data.tok, env.ctx,
                   n_t=EVAL_T, seed=cfg.seed, chars_per_token=data.val_cpt, details=details)
    what = "NLL" if objectives.get(cfg.objective).EXACT else "bound"
    print0(f"eval {it}: dev {what} {units(res)}{' (EMA weights)' if run.ema else ''}")
    return res


def log_row(env, run, **row):
    """One row of metrics.jsonl (and wandb), on rank 0."""
    if env.master:
        row.pop("per_window", None)  # eval.py's JSON keeps those; the log keeps the figures
        with open(run.metrics_path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if env.wandb is not None:
            env.wandb.log({f"{row['kind']}/{k}": v for k, v in row.items() if isinstance(v, (int, float))}, step=row["iter"])


def check_finite(cfg, run, it, value):
    """Stop on a non-finite loss (averaged over ranks: all stop together) before anything is saved."""
    if not math.isfinite(value):
        step = run.bad_iter.item() + 1 if run.bad_iter.item() >= 0 else it
        raise UserError(f"loss became {value} at iter {step}: stopped; the last good checkpoint in {cfg.out_dir} "
                        f"is kept. Try a lower --learning_rate, --grad_clip=1, --dtype=float32, or "
                        f"--skip_nonfinite=N to skip up to N bad steps, then --resume")


def snapshot(cfg, env, data, run, it, val):
    """The checkpoint dict (on rank 0; None elsewhere). Every rank must call it: it gathers their RNG states,
    and makes the running loss sum the same on all ranks so that a resume continues the log window exactly."""
    all_reduce_mean(run.loss_acc, env.world)
    check_finite(cfg, run, it, run.loss_acc.item())
    rngs = all_gather_objects(rng_state(), env.world)
    if not env.master:
        return None
    out = dict(model=run.raw_model.state_dict(), optimizer=run.opt.state_dict(), config=asdict(cfg),
               model_args=vars(run.margs), tokenizer=data.tok.state(), tokenizer_fingerprint=fingerprint(data.tok),
               iter=it, best_val=run.best_val, best_iter=run.best_iter, val=val, meta=data.meta, rng=rngs,
               loop=dict(loss_acc=run.loss_acc.cpu(), n_acc=run.n_acc, skipped=run.skipped))
    if run.ema:
        out.update(ema=run.ema.state_dict(), ema_updates=run.ema.updates)
    if run.scaler is not None and run.scaler.is_enabled():  # fp16's loss scale and its growth count: a resume goes on
        out.update(scaler=run.scaler.state_dict())         # at the scale it reached, not back at 2^16
    return out


def save_checkpoints(cfg, env, data, run, it, res):
    """model.pt always; best.pt too when this eval is the best so far (both with the same state)."""
    is_best = env.master and res["nats_per_token"] < run.best_val
    if is_best:
        run.best_val, run.best_iter = res["nats_per_token"], it
        print(f"best.pt <- iter {it}: the lowest eval so far")
    state = snapshot(cfg, env, data, run, it, res)
    if env.master:
        state = host_copy(state)  # the step goes on changing the weights in place: write a copy, on a thread

        def write():
            for path in save_run_checkpoint(cfg.out_dir, state, cfg.keep_last, is_best):
                if iter_of(path) > it:
                    print(f"removed {path}: a checkpoint of the run this one replaces")
            run.saved, run.saved_iter = os.path.join(cfg.out_dir, "model.pt"), it
        run.writer.submit(write)


# ---------------------------------------------------------------- training loop; final eval, checkpoint, report
def train(cfg, env, data, run):
    run.model.train()
    peak = peak_flops(env.device)
    t_last, tokens_since, timed_iters, window_s = time.time(), 0, 0, []  # window_s: s/step per log line
    noted = contended = False  # the long-run and shared-cores notes, once each
    run.t_start, train_time = time.time(), 0.0
    loss_name, legend = loss_label(cfg)
    print0(f"{legend}\nbest.pt: the lowest dev figure of the evals ({len(data.val_windows)} windows x {EVAL_T} t of the dev "
           f"half of validation, the same windows and times at every eval, the final one included)")
    for it in range(run.start_iter, cfg.max_iters):
        if it % cfg.eval_interval == 0 and it > run.start_iter:
            t_eval = time.time()
            res = run_eval(cfg, env, data, run, it) if env.master else None
            log_row(env, run, kind="eval", iter=it, **(res or {}))
            save_checkpoints(cfg, env, data, run, it, res)
            run.eval_s = time.time() - t_eval
            t_last += run.eval_s  # the clock stops during eval (the steps before it, since the last log line, still count)

        lr = lr_at(it, cfg)
        set_lr(run.opt, lr / cfg.learning_rate)  # Muon's groups follow the same warm-up and decay from muon_lr
        train_step(cfg, env, data, run, it)
        tokens_since += cfg.total_batch_size
        timed_iters += 1
        log_now = (it + 1) % cfg.log_interval == 0 or it + 1 == cfg.max_iters
        if it == run.start_iter and not log_now:  # the first step's time and the ETA now, not after log_interval steps
            synchronize(env.device)
            step_s = time.time() - t_last
            eta = eta_seconds(cfg, env.accum, run.eval_s, it + 1, step_s, EVAL_T)
            print0(first_step_line(cfg, it + 1, step_s, eta))

        if log_now:
            loss_avg = all_reduce_mean(run.loss_acc / max(run.n_acc, 1), env.world).item()  # one sync per log line
            check_finite(cfg, run, it + 1, loss_avg)
            synchronize(env.device)
            dt = time.time() - t_last
            train_time += dt
            tps = tokens_since / dt
            window_s.append(dt / timed_iters)
            step_s, settled = steady_step_s(window_s)  # a median of recent windows: the first steps run slow
            eta = eta_seconds(cfg, env.accum, run.eval_s, it + 1, step_s, EVAL_T)
            mfu = f" | mfu {run.flops_tok * cfg.total_batch_size * timed_iters / dt / peak * 100:.1f}%" if peak else ""
            print0(f"iter {it + 1}/{cfg.max_iters} | {loss_name} {loss_avg:.4f} | lr {lr:.2e} | "
                   f"{dt / timed_iters * 1000:.0f} ms/it | {tps:,.0f} tok/s{mfu} | {fmt_eta(eta, settled)}")
            note, noted = long_run_note(cfg, env.device, eta) if settled and not noted else "", noted or settled
            if note:  # once, from the first settled ETA
                print0(note)
            if not contended and (shared := contention_note(window_s, env.device)):  # once
                print0(shared)
                contended = True
            sys.stdout.flush()
            log_row(env, run, kind="train", iter=it + 1, loss=loss_avg, lr=lr, tok_per_s=tps, seconds=train_time)
            run.loss_acc.zero_()
            run.n_acc = tokens_since = timed_iters = 0
            t_last = time.time()


def train_step(cfg, env, data, run, it):
    """One optimizer step over accum micro-batches; a non-finite step stops training or, with --skip_nonfinite, is
    skipped. Every draw is keyed by (seed, stream, step, slot), slot = rank * accum + micro (its place in the global
    batch), so a resumed run, or the global batch as 2 ranks x 1 micro-step or 1 x 2, draws the same data, masks, t."""
    accum, world, model, obj = env.accum, env.world, run.model, objectives.get(cfg.objective)
    # stratified t over the global batch of B * accum * world sequences (MDLM): one shared u per step
    u = torch.rand((), generator=keyed_generator(cfg.seed, STREAM_TIME, it), dtype=torch.float64)
    step_loss = torch.zeros((), device=env.device)
    for micro in range(accum):
        slot = env.rank * accum + micro
        key = it % cfg.data_steps if cfg.data_steps else it  # --data_steps: the same batches again, epoch after epoch
        x = get_batch(data.train_ids, cfg.batch_size, data.window, keyed_generator(cfg.seed, STREAM_DATA, key, slot), env.device)
        # DDP averages gradients across ranks only on the last micro-step; the others accumulate locally
        with model.no_sync() if world > 1 and micro < accum - 1 else nullcontext():
            with env.ctx:
                draw = Draw(keyed_generator(cfg.seed, STREAM_MASK, it, slot), u, slot * cfg.batch_size,
                            cfg.batch_size * accum * world, it / cfg.max_iters)  # the masks (or noise), the stratified times
                loss = obj.loss(model, x, cfg, run.schedule, data.tok, draw)
            run.scaler.scale(loss / accum).backward()  # the mean over micro-steps; DDP's all-reduce makes it the global mean
        step_loss += loss.detach() / accum
    if cfg.grad_clip > 0 or cfg.skip_nonfinite:
        run.scaler.unscale_(run.opt)  # clip the true gradients (a no-op without fp16)
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
    update = True
    if cfg.skip_nonfinite:  # one host sync per step; the norm of the all-reduced gradients is the same on every rank
        # under fp16 an overflowing scaled gradient is the GradScaler's to skip (it then lowers the scale)
        ok = (torch.isfinite(step_loss) & (torch.isfinite(norm) | run.scaler.is_enabled())).float()
        update = all_reduce_mean(ok, world).item() == 1.0
        if not update:
            run.skipped += 1
            print0(f"warning: non-finite loss or gradient at iter {it + 1}: step skipped, no update "
                   f"({run.skipped} of at most {cfg.skip_nonfinite})")
            if run.skipped > cfg.skip_nonfinite:
                raise UserError(f"{run.skipped} steps had a non-finite loss or gradient (the last at iter {it + 1}), more "
                                f"than --skip_nonfinite={cfg.skip_nonfinite}: stopped; the last good checkpoint in "
                                f"{cfg.out_dir} is kept. Try a lower --learning_rate or --dtype=float32, then --resume")
    else:
        run.bad_iter = torch.where(torch.isfinite(step_loss) | (run.bad_iter >= 0), run.bad_iter, it)
    if update:
        run.scaler.step(run.opt)  # opt.step(), skipped by an enabled scaler when a gradient is inf/NaN
        run.scaler.update()
        if run.ema:
            run.ema.update(run.raw_model)
        run.loss_acc += step_loss
        run.n_acc += 1
    run.opt.zero_grad(set_to_none=True)


def finish(cfg, env, data, run):
    print0(f"final eval: {len(data.val_windows)} windows x {EVAL_T} t" + (f", ~{fmt_time(run.eval_s)}" if run.eval_s else ""))
    res = run_eval(cfg, env, data, run, cfg.max_iters, details=True) if env.master else None
    log_row(env, run, kind="eval", iter=cfg.max_iters, **{k: v for k, v in (res or {}).items() if k != "entropy_by_t"})
    save_checkpoints(cfg, env, data, run, cfg.max_iters, res)
    run.writer.wait()
    if env.master:
        print(f"saved {os.path.join(cfg.out_dir, 'model.pt')} (best.pt: iter {run.best_iter}, dev {run.best_val:.4f} "
              f"nats/token, in {os.path.join(cfg.out_dir, 'best.pt')}); trained {fmt_time(time.time() - run.t_start)}")
        # the test split's figure, as scripts/eval.py reports it
        test = reported(run.eval_model, cfg, run.schedule, data.tok, data.train_ids, data.val_ids, env.ctx)
        final_report(run.eval_model, data.tok, cfg, run.schedule, env.device, res, data.meta["chars_per_token"], test)
        if env.wandb is not None:
            env.wandb.finish()
    if env.world > 1:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    run_cli(main)
