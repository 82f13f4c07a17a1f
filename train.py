"""Train a masked diffusion LM (or the AR baseline) from scratch.

    python train.py                      # reference: char Tiny Shakespeare, 6/6/384, 5000 iters
    python train.py cpu                  # the main job: Tiny Shakespeare (data/); its time: README
    python train.py cpu --objective=ar   # the autoregressive baseline, same code and budget
    python train.py cpu --objective=uniform --time_cond=learned  # uniform-state (uniform.py)
    python train.py baby_bd3             # block diffusion (BD3-LM): AR over blocks of 4
    python train.py tinystories_bpe      # BPE: data/stories.txt, artifacts/tokenizer/tokenizer.json
    python train.py cpu --resume         # continue out_dir/model.pt, exactly as if never stopped
    torchrun --standalone --nproc_per_node=4 train.py shakespeare_char  # DDP (NCCL on GPUs)
    python train.py gpt200m --max_iters=0  # the ~200M preset: memory, tokens/s estimates; exit
    python train.py --help               # the presets, then every key: type, default, meaning

main: setup -> load_data -> build -> train (eval / save / step / log) -> finish; the state: one Run.
"""
import math
import os
import shlex
import sys
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace

import torch

import checkpoint_manager
import configurator
import distill
from config import NEEDS, PRESETS, RESUMABLE, Config
from diffusion import Draw, SamplerOptions, Schedule
from evals import bound, report
from model import ModelArgs, Transformer
from objectives import OBJECTIVES, AnyObjective, model_args
from utils import checkpoint, dataloader, dist, fileio, optim, tokenizer, train_log
from utils.train_log import check_memory, estimate_line
from utils.dist import print0
from utils.cli import command
from utils.errors import UserError, run_cli

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
    threads: dist.CpuThreads = None  # a CPU run's thread count: by what its steps measure, unless OMP_NUM_THREADS
    argv: tuple = ()          # the command line, for the commands a stop advises
    sampler: SamplerOptions = None  # the end-of-run samples' sampler, built once from the config


@dataclass
class Data:
    """The tokenizer, the token streams and the fixed validation windows every eval scores."""
    tok: object
    train_ids: object         # np.memmap of token ids
    val_ids: object           # the validation ids, both halves (utils.dataloader.split_ids)
    val_windows: torch.Tensor  # (N, block_size + 1): the fixed validation set
    val_cpt: float            # characters per scored token in val_windows (bits/char)
    meta: dict
    window: int               # tokens per training window: block_size, + 1 for AR
    source: dict = None       # the --init_from checkpoint, read once (its tokenizer here, its weights in build)


@dataclass
class Run:
    """The model, its optimizer and what the loop carries from step to step and checkpoints."""
    model: torch.nn.Module    # what the step runs: DDP-wrapped (and then compiled) under torchrun
    raw_model: Transformer    # uncompiled, unwrapped: state_dict, eval, samples
    eval_model: Transformer   # the EMA copy when --ema, else raw_model
    opt: torch.optim.Optimizer
    ema: optim.EMA
    margs: ModelArgs
    schedule: Schedule
    flops_tok: float          # training FLOPs per token (the objective's estimate): MFU
    start_iter: int = 0
    best_val: float = float("inf")
    best_iter: int = -1       # the eval best.pt holds
    skipped: int = 0          # steps skipped for a non-finite loss or gradient
    loss_acc: torch.Tensor = None  # sum of step losses since the last log line (on device: no sync per step)
    n_acc: int = 0            # the steps in loss_acc
    bad_iter: torch.Tensor = None  # first step with a non-finite loss or gradient, -1 if none (on device)
    saved: str = ""           # the newest complete checkpoint: what a Ctrl-C leaves to --resume
    saved_iter: int = -1
    scaler: torch.amp.GradScaler = None  # loss scaling under fp16 autocast (utils.dist.grad_scaler); off otherwise
    writer: fileio.BackgroundWriter = field(default_factory=fileio.BackgroundWriter)
    objective: AnyObjective | distill.SelfDistillation = None  # its loss compiled with the model where --compile says


def main(argv):
    if configurator.wants_help(argv):
        print(configurator.help_text("train.py", "[PRESET | CONFIG.py]... [--key=value]...", argv=argv))
        return
    cfg, env = setup(argv)
    cfg, data = load_data(cfg, env)
    run = build(cfg, env, data)
    if run is None:
        return  # max_iters=0: built and printed everything
    if run.start_iter >= cfg.max_iters:  # --resume on a run with no step left: the report it ended with
        res = run_eval(cfg, env, data, run, run.start_iter, details=True) if env.master else None
        report_and_close(cfg, env, data, run, res)
        return
    try:
        log = train(cfg, env, data, run)
        finish(cfg, env, data, run, log)
    except KeyboardInterrupt:
        run.writer.wait()  # the checkpoint being written is finished first: the line names it
        raise KeyboardInterrupt(interrupted(cfg, run, argv) if env.master else "") from None


def interrupted(cfg, run, argv):
    """The line a Ctrl-C leaves: the newest complete checkpoint and the command that resumes it."""
    again = command(started_as(), argv, drop=NOT_WITH_RESUME, add=dict(resume=True))
    if run.saved_iter >= cfg.max_iters:
        return (f"training had finished: {run.saved} (iter {run.saved_iter}) is complete; only the report was cut "
                f"short (the report alone: {again})")
    if not run.saved:
        # its metrics.jsonl is there: a new run in out_dir is refused without --overwrite
        start = command(started_as(), argv, add=dict(overwrite=True))
        return (f"before the first checkpoint (due at iter {min(cfg.eval_interval, cfg.max_iters)}): none was saved; "
                f"start again with: {start}")
    return f"the last checkpoint is {run.saved} (iter {run.saved_iter}); continue it with: {again}"


def started_as():
    """train.py's path as it was started."""
    return sys.argv[0] if sys.argv[0].endswith("train.py") else "train.py"


# the keys --resume refuses beside it (config.NEEDS): a resumed run's advice drops them
NOT_WITH_RESUME = tuple(k for k, need in NEEDS.items() if need == ("resume", (False,)))


# ---------------------------------------------------------------- config, device, dist
def setup(argv):
    """The checked config (a resumed run's own), device and rank; prints the start-up lines."""
    cfg, given = configurator.parse(argv).over()  # the command line, read once
    configurator.validate(cfg, given)
    if "data_path" in given and "prompt" not in given and not cfg.resume:  # your own text: not a preset's ROMEO:
        cfg = replace(cfg, prompt="")
    if "data_path" in given and "out_dir" not in given:  # and its own run, not the preset's
        preset = next((a for a in reversed(argv) if a in PRESETS), "")
        cfg = replace(cfg, out_dir=fileio.own_text_dir(preset, cfg.data_path))
    fileio.check_run_folder(cfg)  # a folder it can write, not the shipped weights, no earlier run to replace
    rank, local_rank, world, device = dist.init_distributed(cfg.device)
    if rank == 0:
        for name in fileio.remove_stale_temps(cfg.out_dir):
            print(f"removed {os.path.join(cfg.out_dir, name)}: a partial write of a killed run")
    resume, resumed_from = None, ""
    if cfg.resume:  # the run's own settings, from its newest intact checkpoint
        cfg, resume, resumed_from = resumed_config(cfg, given)
    # the trace written after training, checked before any work: its typed path (a resumed
    # run's is its own), or the folder an auto-named one goes in (max_iters=0 writes none)
    if cfg.max_iters:
        fileio.check_trace(cfg, replace=cfg.overwrite or cfg.resume)
    # accumulation from the global batch in tokens (saved: a resume on another world size keeps it)
    micro_tokens = cfg.batch_size * cfg.block_size
    accum = dist.grad_accum_steps(cfg.total_batch_size, micro_tokens, world)
    cfg = replace(cfg, total_batch_size=micro_tokens * accum * world)
    torch.manual_seed(cfg.seed + rank)
    ctx, dtype_name = dist.autocast_for(device, cfg.dtype)  # and TF32 on CUDA for what runs outside autocast
    wandb = train_log.open_wandb() if cfg.wandb_log and rank == 0 else None  # before any work: a missing package
    dataloader.check_inputs(cfg)  # a missing data file: one line, no config dump
    threads = dist.CpuThreads(device, world)  # a bad OMP_NUM_THREADS: one line too
    capped = ""
    if not resume:  # a resumed run keeps the warm-up it saved
        cfg, capped = optim.cap_warmup(cfg, given)
    again = " ".join(["python train.py", *map(shlex.quote, argv), "--help"])
    print0(train_log.wrap(f"config, what differs from the defaults ({again} prints it all):"))
    print0(configurator.format_config(cfg))
    if capped:
        print0(capped)
    print0(f"device: {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else device.type}), "
           f"dtype: {dtype_name}, world size: {world}, {accum} micro-step(s) per optimizer step")
    print0(threads.line)
    return cfg, Env(rank=rank, local_rank=local_rank, world=world, master=rank == 0, device=device, accum=accum,
                    ctx=ctx, dtype_name=dtype_name, wandb=wandb, resume=resume, resumed_from=resumed_from,
                    threads=threads, argv=tuple(argv), sampler=SamplerOptions.from_config(cfg))


def resumed_config(cfg, given):
    """(cfg, checkpoint, path) of --resume: the run's settings from its newest intact checkpoint,
    only resumable keys given again."""
    resume, resumed_from = checkpoint.load_latest(cfg.out_dir, warn=print0)
    # a removed key that acted on its network or training: the run cannot go on as it was
    for part in ("config", "model_args"):
        for note in checkpoint.removed_notes(resume[part], f"--resume: {resumed_from}", ("network", "training")):
            print0(note)
    saved = asdict(checkpoint_manager.checkpoint_config(resume, resumed_from))
    configurator.refuse_changes(cfg, given, saved, f"--resume: {resumed_from}",
                                "drop those flags to continue the run, or train a new one in another --out_dir",
                                RESUMABLE)
    keep = {k: v for k, v in saved.items() if k not in RESUMABLE}
    return replace(cfg, **keep), resume, resumed_from


# ---------------------------------------------------------------- data and tokenizer
def load_data(cfg, env):
    """Tokenizer, token streams, fixed dev windows; checks the prompt and end-of-run samples now."""
    tok = tokenizer.tokenizer_from_state(env.resume["tokenizer"]) if env.resume else None
    # the --init_from checkpoint, read once (its weights are build's); a resumed run has its own
    source = None
    init = cfg.init_from or cfg.distill_from  # a distilled student starts as its teacher
    if init and not env.resume:
        source = checkpoint_manager.read_checkpoint(init, "give another --init_from")
        for note in source["notes"]:  # its removed keys that acted on no network
            print0(note)
        tok = checkpoint_manager.source_tokenizer(init, cfg.tokenizer, cfg.objective, source)
    if env.world > 1 and not env.master:
        torch.distributed.barrier()  # rank 0 encodes the token cache first; the others then read it
    tok, train_ids, val_ids, meta = dataloader.prepare_data(cfg, tok, verbose=env.master)
    if env.world > 1 and env.master:
        torch.distributed.barrier()
    window = cfg.block_size + OBJECTIVES[cfg.objective].WINDOW  # AR predicts L tokens from a window of L+1
    dataloader.split_ids(train_ids, val_ids, "train", window)  # a window fits
    dev_ids = dataloader.split_ids(train_ids, val_ids, "dev", cfg.block_size + 1)  # choices read dev; test is eval.py's
    # every objective scores the last block_size tokens of these windows (AR: the first is context)
    asked = cfg.eval_iters * cfg.batch_size
    val_windows = dataloader.fixed_windows(dev_ids, asked, cfg.block_size + 1)
    # bits/char = summed ELBO / chars the scored tokens decode to (exact for BPE too; 1.0 for char)
    val_cpt = dataloader.chars_per_token(tok, val_windows[:, 1:])
    cfg = replace(cfg, prompt=tokenizer.normalize_prompt(tok, cfg.prompt))  # a bad prompt fails now, not after training
    report.check_report(cfg, env.sampler, tok)  # and so do the end-of-run samples' canvas and trace path
    fewer = "" if len(val_windows) == asked else f", all the split holds of the {asked} asked"
    line = (f"data: {meta['train_tokens']:,} train / {meta['val_tokens']:,} val tokens, vocab {tok.vocab_size} "
            f"({tok.kind}, [MASK]={tok.mask_id}), {meta['chars_per_token']:.3f} chars/token on val ({val_cpt:.3f} in "
            f"the {len(val_windows)} disjoint eval windows of its dev half{fewer})")
    print0(train_log.wrap(line))
    return cfg, Data(tok, train_ids, val_ids, val_windows, val_cpt, meta, window, source)


# ---------------------------------------------------------------- model, optimizer, resume
def build(cfg, env, data):
    """Model and estimates, then optimizer, EMA, resumed state: the Run (None when max_iters=0)."""
    margs = model_args(cfg, data.tok.vocab_size)
    # the estimates read a network on the meta device (shapes, no storage): a run that cannot fit is
    # refused before its weights, optimizer or first batch take a byte
    with torch.device("meta"):
        shape = Transformer(margs)
    obj = distill.objective(OBJECTIVES[cfg.objective], cfg, data.tok, env.device)  # --distill_from's loss, or its own
    flops_tok, seq = obj.flops(shape, cfg)
    print0(f"model: {shape.num_params():,} parameters, {flops_tok / 1e6:.1f} MFLOP/token (training), "
           f"{cfg.total_batch_size:,} tokens/step = {env.world} rank(s) x {env.accum} micro-step(s) x "
           f"{cfg.batch_size} x {cfg.block_size}")
    shape.checkpointing = cfg.activation_checkpointing  # the estimate counts what it keeps
    line, need = estimate_line(cfg, shape, env.device, env.dtype_name, flops_tok, seq, ASSUMED_MFU)
    print0(train_log.wrap(line))
    check_memory(cfg, env.device, need, env.world)
    if cfg.max_iters == 0 and not cfg.resume and not (cfg.init_from or cfg.distill_from):  # (their fit: on the model)
        print0("max_iters=0: built data and tokenizer, sized the model; exiting without training")
        return None
    model = Transformer(margs).to(env.device)
    model.checkpointing = cfg.activation_checkpointing
    if data.source is not None:
        print0(checkpoint_manager.load_weights_into(model, cfg.init_from or cfg.distill_from, data.tok, data.source))
        data.source = None  # its weights are the model's now: the checkpoint (optimizer, EMA) is not held all run
    if cfg.max_iters == 0 and not cfg.resume:
        print0("max_iters=0: built data, tokenizer and model; exiting without training")
        return None
    schedule = Schedule(cfg.diffusion_steps, cfg.schedule)
    run = Run(model=model, raw_model=model, eval_model=model, opt=optim.build_optimizer(model, cfg, env.device),
              ema=None, margs=margs, schedule=schedule, flops_tok=flops_tok,
              loss_acc=torch.zeros((), device=env.device),
              bad_iter=torch.full((), -1, device=env.device, dtype=torch.long),
              scaler=dist.grad_scaler(env.device, env.dtype_name))
    if env.resume:
        resume_state(cfg, env, run)
    run.ema = optim.EMA(model, cfg.ema) if cfg.ema and env.master else None  # only rank 0 evaluates and saves it
    if run.ema and env.resume and "ema" in env.resume:
        run.ema.load_state_dict(env.resume["ema"], env.resume["ema_updates"])
    run.eval_model = run.ema.model if run.ema else model  # eval, best.pt and samples: the EMA's
    reach = optim.EMA.ramp(cfg.max_iters - 1)  # the decay its warm-up rule reaches by the last step
    if run.ema and cfg.ema >= reach:
        print0(f"EMA: its warm-up rule (1+n)/(10+n) stays below {cfg.ema} all run: any decay above {reach:.4f} "
               f"averages alike")
    # DDP wraps before compile (the compiled backward overlaps the all-reduce)
    if env.world > 1:
        run.model = dist.wrap_ddp(run.model, env.device, env.local_rank)
    run.objective, run.model = dist.compile_step(obj, run.model, cfg, env.device, env.world)
    if env.master:
        os.makedirs(cfg.out_dir, exist_ok=True)
    return run


def resume_state(cfg, env, run):
    """Restore weights, optimizer, step, best val, RNG states and the open log window."""
    ck = env.resume
    run.raw_model.load_state_dict(ck["model"])
    base_lrs = [g["base_lr"] for g in run.opt.param_groups]
    run.opt.load_state_dict(ck["optimizer"])
    for g, base in zip(run.opt.param_groups, base_lrs):  # checkpoints from before base_lr existed lack it
        g["base_lr"] = base
    run.start_iter = ck["iter"]
    run.best_val = ck.get("best_val", run.best_val)
    run.best_iter = ck.get("best_iter", -1)
    rng = ck.get("rng")
    if isinstance(rng, list) and len(rng) == env.world:  # global RNGs per rank (the batches are keyed, see train_step)
        dist.set_rng_state(rng[env.rank])
    if ck.get("scaler") and run.scaler is not None and run.scaler.is_enabled():
        run.scaler.load_state_dict(ck["scaler"])
    if "loop" in ck:  # a log window cut by the checkpoint continues where it was
        run.loss_acc.copy_(ck["loop"]["loss_acc"])
        run.n_acc = ck["loop"]["n_acc"]
        run.skipped = ck["loop"].get("skipped", 0)
    print0(f"resumed from {env.resumed_from} at iter {run.start_iter} (best dev {run.best_val:.4f})")
    run.saved = env.resumed_from
    run.saved_iter = run.start_iter
    if run.start_iter >= cfg.max_iters:
        print0(f"{env.resumed_from} is at iter {run.start_iter} >= max_iters={cfg.max_iters}: no step to train, so "
               f"only its end-of-run report follows (raise --max_iters to train further)")


# ---------------------------------------------------------------- eval, checkpoint
def run_eval(cfg, env, data, run, it, details=False):
    """The dev figure (bound.evaluate's dict) of the weights best.pt would hold; prints its line."""
    with env.ctx:
        res = bound.evaluate(run.eval_model, data.val_windows, cfg, data.tok, n_t=EVAL_T, seed=cfg.seed,
                             chars_per_token=data.val_cpt, details=details)
    what = "NLL" if OBJECTIVES[cfg.objective].EXACT else "bound"
    print0(f"eval {it}: dev {what} {report.units(res)}{' (EMA weights)' if run.ema else ''}")
    return res


def check_finite(cfg, env, run, it, loss, eval_bad=False, weights=False):
    """Stop, on every rank together, once a step's loss or gradients went non-finite (bad_iter), the
    window's mean loss is, the eval figure was (eval_bad: rank 0's, shared) or, weights=True, a
    weight is: checked at each log line and before every save, so nothing after it is saved."""
    step = run.bad_iter.item()
    if math.isfinite(loss) and step < 0 and not eval_bad:
        if not weights or all(torch.isfinite(p).all() for p in run.raw_model.parameters()):
            return
        raise UserError(diverged(cfg, env, run, f"the weights became non-finite by iter {it}"))
    if step >= 0:  # the step that first went non-finite, else the window's end that saw it
        raise UserError(diverged(cfg, env, run, f"a non-finite loss or gradient at iter {step + 1}"))
    what = f"the loss became {loss}" if not math.isfinite(loss) else "the dev figure became non-finite"
    raise UserError(diverged(cfg, env, run, f"{what} by iter {it}"))


def diverged(cfg, env, run, what):
    """The line a diverged run stops with: what and when, the last finite checkpoint (a resume's
    start; nothing after the step was saved), the rate to lower (its default, or a tenth) and the
    command of each way on."""
    run.writer.wait()  # a checkpoint being written is finished first: the line names it
    flag = "muon_lr" if cfg.optimizer == "muon" else "learning_rate"
    rate = getattr(cfg, flag)
    lower = getattr(Config, flag) if rate > getattr(Config, flag) else rate / 10
    again = "a new run (without --resume)" if cfg.resume else "the run again"
    fresh = command(started_as(), env.argv, drop=("resume",), add={flag: f"{lower:g}", "overwrite": True})
    advice = f"start {again} with e.g. --{flag}={lower:g} and --overwrite: {fresh}"
    if not run.saved:
        return f"{what}: stopped, no checkpoint saved; --{flag}={rate:g} is the first thing to lower: {advice}"
    skip = max(10, 2 * cfg.skip_nonfinite)
    resume = command(started_as(), env.argv, drop=NOT_WITH_RESUME, add=dict(resume=True, skip_nonfinite=skip))
    return (f"{what}: stopped; the last finite checkpoint is {run.saved} (iter {run.saved_iter}), nothing saved after "
            f"it. --{flag}={rate:g} is the first thing to lower: {advice}; or continue that checkpoint, skipping "
            f"such steps: {resume}")


def snapshot(cfg, env, data, run, it, val):
    """The checkpoint dict on rank 0 (None elsewhere). Every rank calls it: it gathers their RNG
    states and averages the running loss, so a resume continues the log window exactly; a
    non-finite loss, gradient, weight or eval figure stops the run instead (check_finite)."""
    eval_bad = float(val is not None and not math.isfinite(val["nats_per_token"]))
    shared = dist.all_reduce_mean(torch.stack([run.loss_acc, torch.tensor(eval_bad, device=env.device)]), env.world)
    run.loss_acc.copy_(shared[0])
    check_finite(cfg, env, run, it, run.loss_acc.item(), eval_bad=shared[1].item() > 0, weights=True)
    rngs = dist.all_gather_objects(dist.rng_state(), env.world)
    if not env.master:
        return None
    out = dict(model=run.raw_model.state_dict(), optimizer=run.opt.state_dict(), config=asdict(cfg),
               model_args=vars(run.margs), tokenizer=data.tok.state(),
               tokenizer_fingerprint=tokenizer.fingerprint(data.tok),
               iter=it, best_val=run.best_val, best_iter=run.best_iter, val=val, meta=data.meta, rng=rngs,
               loop=dict(loss_acc=run.loss_acc.cpu(), n_acc=run.n_acc, skipped=run.skipped))
    if run.ema:
        out.update(ema=run.ema.state_dict(), ema_updates=run.ema.updates)
    # fp16's loss scale and growth count: a resume goes on at the scale it reached, not at 2^16
    if run.scaler is not None and run.scaler.is_enabled():
        out.update(scaler=run.scaler.state_dict())
    return out


def save_checkpoints(cfg, env, data, run, it, res):
    """model.pt always; best.pt too when this eval is the best so far (both with the same state)."""
    is_best = env.master and res["nats_per_token"] < run.best_val
    if is_best:
        run.best_val = res["nats_per_token"]
        run.best_iter = it
        print(f"best.pt <- iter {it}: the lowest eval so far")
    state = snapshot(cfg, env, data, run, it, res)
    if env.master:
        state = checkpoint.host_copy(state)  # the step goes on changing the weights in place: write a copy, on a thread

        def write():
            for path in checkpoint.save_run_checkpoint(cfg.out_dir, state, cfg.keep_last, is_best):
                if fileio.iter_of(path) > it:
                    print(f"removed {path}: a checkpoint of the run this one replaces")
            run.saved = os.path.join(cfg.out_dir, "model.pt")
            run.saved_iter = it
        run.writer.submit(write)


# ---------------------------------------------------------------- training loop
def train(cfg, env, data, run):
    """nanoGPT's loop: every eval_interval steps evaluate and save; step; log. -> the TrainLog."""
    run.model.train()
    obj = OBJECTIVES[cfg.objective]
    log = train_log.TrainLog(cfg, env, obj, run.start_iter, run.flops_tok, len(data.val_windows), EVAL_T)
    for it in range(run.start_iter, cfg.max_iters):
        if it % cfg.eval_interval == 0 and it > run.start_iter:
            with log.clock_stopped():  # an eval and its checkpoint are no step's time
                res = run_eval(cfg, env, data, run, it) if env.master else None
                log.row(kind="eval", iter=it, **(res or {}))
                save_checkpoints(cfg, env, data, run, it, res)

        lr = optim.lr_at(it, cfg)
        optim.set_lr(run.opt, lr / cfg.learning_rate)  # Muon's groups follow the same warm-up and decay from muon_lr
        train_step(cfg, env, data, run, it)

        # the training loss is read on log lines only: one host sync there, none a step
        loss = window_loss(cfg, env, run, it + 1) if log.due(it + 1) else None
        log.step(it + 1, lr, loss)
    return log


def window_loss(cfg, env, run, done):
    """The mean training loss since the last log line, over ranks (the log line's one host sync)."""
    loss = dist.all_reduce_mean(run.loss_acc / max(run.n_acc, 1), env.world).item()
    check_finite(cfg, env, run, done, loss)
    run.loss_acc.zero_()
    run.n_acc = 0
    return loss


def train_step(cfg, env, data, run: Run, it):
    """One optimizer step over accum micro-batches. Draws are keyed by (seed, stream, step, rank *
    accum + micro): a resume or any rank/micro-step split sees the same data, masks and t. (run is
    annotated so that an editor's go-to-definition from obj.loss lands on each objective's loss.)"""
    accum, world, model, obj = env.accum, env.world, run.model, run.objective
    # stratified t over the global batch (B * accum * world sequences, MDLM): one u per step
    u = torch.rand((), generator=dist.keyed_generator(cfg.seed, STREAM_TIME, it), dtype=torch.float64)
    step_loss = torch.zeros((), device=env.device)
    for micro in range(accum):
        slot = env.rank * accum + micro
        key = it % cfg.data_steps if cfg.data_steps else it  # --data_steps: the same batches again, epoch after epoch
        gen = dist.keyed_generator(cfg.seed, STREAM_DATA, key, slot)
        x = dataloader.get_batch(data.train_ids, cfg.batch_size, data.window, gen, env.device)
        # DDP all-reduces gradients on the last micro-step only; the others accumulate locally
        with model.no_sync() if world > 1 and micro < accum - 1 else nullcontext():
            with env.ctx:
                # masks (or noise) and times drawn eagerly: the compiled loss is pure in them
                draw = Draw(generator=dist.keyed_generator(cfg.seed, STREAM_MASK, it, slot), u=u,
                            offset=slot * cfg.batch_size, total=cfg.batch_size * accum * world,
                            progress=it / cfg.max_iters)
                drawn = obj.draws(x, cfg, run.schedule, data.tok, draw)
                loss = obj.loss(model, x, cfg, run.schedule, data.tok, drawn)
            run.scaler.scale(loss / accum).backward()  # mean over micro-steps; DDP's all-reduce: the global mean
        step_loss += loss.detach() / accum
    optimizer_step(cfg, env, run, it, step_loss)


def optimizer_step(cfg, env, run, it, step_loss):
    """Clip, step the optimizer and EMA, add the loss to the log window. A non-finite step: skipped
    at once with --skip_nonfinite (a host sync), else its iter waits on device (bad_iter) to log."""
    run.scaler.unscale_(run.opt)  # clip the true gradients (a no-op without fp16)
    if cfg.grad_clip > 0:
        norm = torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.grad_clip)
    else:  # the norm alone, for the check below
        norm = torch.nn.utils.get_total_norm([p.grad for p in run.model.parameters() if p.grad is not None])
    # under fp16 an overflowing gradient is the GradScaler's to skip (it lowers the scale); the norm
    # of the all-reduced gradients is the same on every rank
    ok = torch.isfinite(step_loss) & (torch.isfinite(norm) | run.scaler.is_enabled())
    update = True
    if cfg.skip_nonfinite:  # one host sync per step
        update = dist.all_reduce_mean(ok.float(), env.world).item() == 1.0
        if not update:
            run.skipped += 1
            print0(f"warning: non-finite loss or gradient at iter {it + 1}: step skipped, no update "
                   f"({run.skipped} of at most {cfg.skip_nonfinite})")
            if run.skipped > cfg.skip_nonfinite:
                what = (f"{run.skipped} steps had a non-finite loss or gradient (the last at iter {it + 1}), more "
                        f"than --skip_nonfinite={cfg.skip_nonfinite}")
                raise UserError(diverged(cfg, env, run, what))
    else:
        run.bad_iter = torch.where(ok | (run.bad_iter >= 0), run.bad_iter, it)
    if update:
        run.scaler.step(run.opt)  # opt.step(), skipped by an enabled scaler when a gradient is inf/NaN
        run.scaler.update()
        if run.ema:
            run.ema.update(run.raw_model)
        run.loss_acc += step_loss
        run.n_acc += 1
    run.opt.zero_grad(set_to_none=True)


# ---------------------------------------------------------------- final eval, checkpoint, report
def finish(cfg, env, data, run, log):
    """The final eval, the last checkpoint, then on rank 0 the test figure and the report."""
    eval_s = f", ~{train_log.fmt_time(log.eval_s)}" if log.eval_s else ""  # the last eval's time: this one's estimate
    print0(f"final eval: {len(data.val_windows)} windows x {EVAL_T} t{eval_s}")
    # a diverged last update shows in no loss (none follows it): every rank checks its weights first
    check_finite(cfg, env, run, cfg.max_iters, 0.0, weights=True)
    res = run_eval(cfg, env, data, run, cfg.max_iters, details=True) if env.master else None
    log.row(kind="eval", iter=cfg.max_iters, **{k: v for k, v in (res or {}).items() if k != "entropy_by_t"})
    save_checkpoints(cfg, env, data, run, cfg.max_iters, res)
    run.writer.wait()
    if env.master:
        print(f"saved {os.path.join(cfg.out_dir, 'model.pt')} (best.pt: iter {run.best_iter}, dev {run.best_val:.4f} "
              f"nats/token, in {os.path.join(cfg.out_dir, 'best.pt')}); trained {train_log.fmt_time(log.elapsed())}")
    report_and_close(cfg, env, data, run, res)


def report_and_close(cfg, env, data, run, res):
    """On rank 0 the test figure and the report (res: the last dev eval); then every rank closes."""
    if env.master:
        test = bound.reported(run.eval_model, cfg, data.tok, data.train_ids, data.val_ids, env.ctx)
        report.final_report(run.eval_model, data.tok, cfg, env.sampler, env.device, res, test)
        if env.wandb is not None:
            env.wandb.finish()
    if torch.distributed.is_initialized():  # torchrun started one, even for a single rank
        torch.distributed.destroy_process_group()
        # skip C++'s teardown, where gloo ranks died (dev/LOG.md, "Measurements the code cites")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


if __name__ == "__main__":
    run_cli(main)
