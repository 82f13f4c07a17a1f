"""Train a masked diffusion LM (or the AR baseline) from scratch.

    python train.py                                   # reference recipe: char Tiny Shakespeare, 6/6/384, 5000 iters
    python train.py cpu                               # laptop preset: ~10 min on 2 CPU cores, local TinyStories
    python train.py cpu --objective=ar                # the autoregressive baseline, same code and budget
    python train.py cpu --max_iters=0                 # build data, tokenizer, model; print config and params; exit
    python train.py tinystories_bpe                   # BPE (data/stories.txt + artifacts/tokenizer/tokenizer.json), 12.23M params
    python train.py cpu --resume                      # continue from out_dir/model.pt (exactly as if never stopped)
    python train.py cpu --optimizer=muon --ema=0.999  # Muon for the block matrices; eval and samples use EMA weights
    python train.py cpu --total_batch_size=16384      # 4 micro-steps of 32 x 128 per optimizer step
    torchrun --standalone --nproc_per_node=4 train.py shakespeare_char   # DDP (NCCL on GPUs)
    torchrun --standalone --nproc_per_node=2 train.py cpu --device=cpu   # DDP on CPU (gloo)
    python train.py gpt200m --max_iters=0             # the ~200M preset: memory and tokens/s estimates, then exit
"""
import json
import math
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import replace

import torch

from config import RESUMABLE_KEYS, config_to_dict, format_config, get_config, renamed_keys
from diffusion import Schedule, ar_loss, diffusion_loss, evaluate, stratified_times
from model import ModelArgs, Transformer
from utils.checkpoint import iter_of, load_latest, numbered_checkpoints, save_run_checkpoint
from utils.dataloader import chars_per_token, check_fits, fixed_windows, get_batch, prepare_data
from utils.dist import (all_gather_objects, all_reduce_mean, autocast_for, estimate_tokens_per_s,
                        grad_accum_steps, init_distributed, keyed_generator, peak_flops, rng_state, set_rng_state)
from utils.errors import UserError, run_cli
from utils.fileio import atomic_open, remove_stale_temps
from utils.generate import continuation, generate
from utils.metrics import ChangeRate, distinct_n
from utils.optim import EMA, build_optimizer, set_lr
from utils.tokenizer import fingerprint, normalize_prompt, tokenizer_from_state
from utils.trace import generate_with_trace, open_trace


ASSUMED_MFU = 0.4  # for the startup tokens/s estimate only; the log lines report the measured MFU
STREAM_DATA, STREAM_MASK, STREAM_TIME = 0, 1, 2  # keys of the per-step generators (see the training loop)


def lr_at(it, cfg):
    """Linear warm-up, then cosine decay to min_lr at max_iters (nanoGPT)."""
    if it < cfg.warmup_iters:
        return cfg.learning_rate * (it + 1) / cfg.warmup_iters
    frac = min(1.0, (it - cfg.warmup_iters) / max(1, cfg.max_iters - cfg.warmup_iters))
    return cfg.min_lr + 0.5 * (1 + math.cos(math.pi * frac)) * (cfg.learning_rate - cfg.min_lr)


def fmt_time(s):
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def main(argv):
    # ---------------------------------------------------------------- config, device, dist
    cfg = get_config(argv)
    rank, local_rank, world, device = init_distributed(cfg.device)
    master = rank == 0
    print0 = print if master else (lambda *a, **k: None)
    ckpt_path, best_path = os.path.join(cfg.out_dir, "model.pt"), os.path.join(cfg.out_dir, "best.pt")
    resume_ckpt = None
    if master:
        for name in remove_stale_temps(cfg.out_dir):
            print(f"removed {os.path.join(cfg.out_dir, name)}: a partial write of a killed run")
    if cfg.resume:
        resume_ckpt, resumed_from = load_latest(cfg.out_dir, warn=print0)
        saved = renamed_keys(resume_ckpt["config"])
        # the run's own settings win; only the resumable ones (schedule length, intervals, checkpointing, device) change
        keep = {k: v for k, v in saved.items() if k not in RESUMABLE_KEYS}
        cfg = replace(get_config(argv), **keep)
    elif (os.path.exists(ckpt_path) or numbered_checkpoints(cfg.out_dir)) and not cfg.overwrite and cfg.max_iters > 0:
        raise UserError(f"{cfg.out_dir} already holds checkpoints: pass --resume to continue them, --overwrite to "
                        f"replace them, or --out_dir=NEW_DIR")
    # gradient accumulation from the global batch in tokens; the resolved total is saved, so a resume on
    # another world size keeps the same global batch
    micro_tokens = cfg.batch_size * cfg.block_size
    accum = grad_accum_steps(cfg.total_batch_size, micro_tokens, world)
    cfg = replace(cfg, total_batch_size=micro_tokens * accum * world)
    torch.manual_seed(cfg.seed + rank)
    ctx, dtype_name = autocast_for(device, cfg.dtype)
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")  # TF32 matmuls for whatever runs outside bf16 autocast
        torch.backends.cudnn.allow_tf32 = True
    wandb = None
    if cfg.wandb_log and master:
        try:
            import wandb  # optional: only imported when asked for
        except ImportError:
            raise UserError("--wandb_log needs the wandb package: pip install wandb (metrics.jsonl is written either way)")
    print0(f"config:\n{format_config(cfg)}")
    print0(f"device: {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else device.type}), "
           f"dtype: {dtype_name}, world size: {world}, {accum} micro-step(s) per optimizer step")

    # ---------------------------------------------------------------- data and tokenizer
    tok = tokenizer_from_state(resume_ckpt["tokenizer"]) if resume_ckpt else None
    if world > 1 and not master:
        torch.distributed.barrier()  # rank 0 encodes the token cache first; the others then read it
    tok, train_ids, val_ids, meta = prepare_data(cfg, tok, verbose=master)
    if world > 1 and master:
        torch.distributed.barrier()
    ar = cfg.objective == "ar"
    window = cfg.block_size + 1 if ar else cfg.block_size  # AR predicts L tokens from a window of L+1
    check_fits(train_ids, window, "train")
    check_fits(val_ids, window, "validation")
    val_windows = fixed_windows(val_ids, cfg.eval_iters * cfg.batch_size, window)
    # bits/char = ELBO summed over the val windows / the characters those windows decode to (per-window
    # counts, exact for BPE too); the scored tokens are x[:, 1:] for AR. 1.0 for char.
    val_cpt = chars_per_token(tok, val_windows[:, 1:] if ar else val_windows)
    cfg = replace(cfg, prompt=normalize_prompt(tok, cfg.prompt))  # a bad prompt fails now, not after training
    print0(f"data: {meta['train_tokens']:,} train / {meta['val_tokens']:,} val tokens, vocab {tok.vocab_size} "
           f"({tok.kind}, [MASK]={tok.mask_id}), {meta['chars_per_token']:.3f} chars/token on val "
           f"({val_cpt:.3f} in the {len(val_windows)} eval windows)")

    # ---------------------------------------------------------------- model
    margs = ModelArgs.from_config(cfg, tok.vocab_size)
    model = Transformer(margs).to(device)
    n_params = model.num_params()
    tokens_per_step = micro_tokens * accum * world
    print0(f"model: {n_params:,} parameters, {model.flops_per_token() / 1e6:.1f} MFLOP/token (training), "
           f"{tokens_per_step:,} tokens/step = {world} rank(s) x {accum} micro-step(s) x {cfg.batch_size} x {cfg.block_size}")
    schedule = Schedule(cfg.diffusion_steps, cfg.schedule)
    # memory and speed from the model's own accounting (rough: see model.estimate_memory)
    masked_head = cfg.head_on_masked_only and not ar and cfg.loss_type != "all_ce"
    head_frac = (1 - schedule.alpha[1:]).mean().item() if masked_head else 1.0  # E_t[mask rate]
    state_b, act_b = model.estimate_memory(cfg.batch_size, cfg.block_size, dtype_name == "bfloat16", head_frac, cfg.ema > 0)
    peak = peak_flops(device)
    est_tps = estimate_tokens_per_s(model.flops_per_token(), peak, ASSUMED_MFU)
    speed = (f"~{est_tps:,.0f} tokens/s per rank at an assumed {ASSUMED_MFU:.0%} MFU of {peak / 1e12:.0f} TFLOP/s"
             if est_tps else f"no tokens/s estimate: no peak FLOP/s known for {device} (scripts/bench_train.py measures one)")
    print0(f"estimate per rank: ~{(state_b + act_b) / 2**30:.1f} GiB = {state_b / 2**30:.1f} weights+grads+"
           f"{cfg.optimizer}{'+EMA' if cfg.ema else ''} + {act_b / 2**30:.1f} activations of a {cfg.batch_size}x"
           f"{cfg.block_size} micro-batch; {speed}")
    if cfg.max_iters == 0 and not cfg.resume:
        print0("max_iters=0: built data, tokenizer and model; exiting without training")
        return
    opt = build_optimizer(model, cfg, device)
    start_iter, best_val, skipped = 0, float("inf"), 0
    loss_acc, n_acc = torch.zeros((), device=device), 0  # sum of step losses since the last log line
    bad_iter = torch.full((), -1, device=device, dtype=torch.long)  # first step with a non-finite loss (kept on device: no sync)
    if resume_ckpt:
        model.load_state_dict(resume_ckpt["model"])
        base_lrs = [g["base_lr"] for g in opt.param_groups]
        opt.load_state_dict(resume_ckpt["optimizer"])
        for g, base in zip(opt.param_groups, base_lrs):  # checkpoints from before base_lr existed lack it
            g["base_lr"] = base
        start_iter, best_val = resume_ckpt["iter"], resume_ckpt.get("best_val", best_val)
        rng = resume_ckpt.get("rng")
        if isinstance(rng, list) and len(rng) == world:  # global RNGs per rank (the batches are keyed, see below)
            set_rng_state(rng[rank])
        if "loop" in resume_ckpt:  # a log window cut by the checkpoint continues where it was
            loss_acc.copy_(resume_ckpt["loop"]["loss_acc"])
            n_acc = resume_ckpt["loop"]["n_acc"]
            skipped = resume_ckpt["loop"].get("skipped", 0)
        print0(f"resumed from {resumed_from} at iter {start_iter} (best val {best_val:.4f})")
        if start_iter >= cfg.max_iters:
            raise UserError(f"{resumed_from} is already at iter {start_iter} >= max_iters={cfg.max_iters}: raise --max_iters to train further")
    ema = EMA(model, cfg.ema) if cfg.ema else None
    if ema and resume_ckpt and "ema" in resume_ckpt:
        ema.load_state_dict(resume_ckpt["ema"], resume_ckpt["ema_updates"])
    eval_model = ema.model if ema else model  # eval, best.pt selection and samples use the EMA weights when on
    raw_model = model  # uncompiled, unwrapped: for state_dict, eval and sampling
    if cfg.compile:
        model = torch.compile(model)
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[local_rank] if device.type == "cuda" else None)

    def snapshot(it, val):
        """The checkpoint dict (on rank 0; None elsewhere). Every rank must call it: it gathers their RNG states,
        and makes the running loss sum the same on all ranks so that a resume continues the log window exactly."""
        all_reduce_mean(loss_acc, world)
        check_finite(it, loss_acc.item())
        rngs = all_gather_objects(rng_state(), world)
        if not master:
            return None
        out = dict(model=raw_model.state_dict(), optimizer=opt.state_dict(), config=config_to_dict(cfg),
                   model_args=vars(margs), tokenizer=tok.state(), tokenizer_fingerprint=fingerprint(tok),
                   iter=it, best_val=best_val, val=val, meta=meta, rng=rngs,
                   loop=dict(loss_acc=loss_acc.cpu(), n_acc=n_acc, skipped=skipped))
        if ema:
            out.update(ema=ema.state_dict(), ema_updates=ema.updates)
        return out

    def check_finite(it, value):
        """Stop on a non-finite loss (averaged over ranks: all stop together) before anything is saved."""
        if not math.isfinite(value):
            step = bad_iter.item() + 1 if bad_iter.item() >= 0 else it
            raise UserError(f"loss became {value} at iter {step}: stopped; the last good checkpoint in {cfg.out_dir} "
                            f"is kept. Try a lower --learning_rate, --grad_clip=1, --dtype=float32, or "
                            f"--skip_nonfinite=N to skip up to N bad steps, then --resume")

    def save_checkpoints(it, res):
        """model.pt always; best.pt too when this eval is the best so far (both with the same state)."""
        nonlocal best_val
        is_best = master and res["nats_per_token"] < best_val
        if is_best:
            best_val = res["nats_per_token"]
        state = snapshot(it, res)
        if master:
            for path in save_run_checkpoint(cfg.out_dir, state, cfg.keep_last, is_best):
                if iter_of(path) > it:
                    print(f"removed {path}: a checkpoint of the run this one replaces")

    def run_eval(it, n_t=1, details=False):
        res = evaluate(eval_model, val_windows, schedule, tok.mask_id, cfg.objective, cfg.batch_size, device, ctx,
                       n_t=n_t, seed=cfg.seed, chars_per_token=val_cpt, details=details)
        what = "NLL" if ar else "bound"
        print0(f"eval {it}: val {what} {res['nats_per_token']:.4f} ± {res['se']:.4f} nats/token, "
               f"{res['bits_per_char']:.4f} ± {res['bpc_se']:.4f} bits/char{' (EMA weights)' if ema else ''}")
        return res

    metrics_path = os.path.join(cfg.out_dir, "metrics.jsonl")
    if master:
        os.makedirs(cfg.out_dir, exist_ok=True)
        trim_metrics(metrics_path, start_iter if cfg.resume else -1)
        if wandb is not None:
            wandb.init(project=cfg.wandb_project, name=os.path.basename(os.path.normpath(cfg.out_dir)),
                       config=config_to_dict(cfg))

    def log_row(**row):
        if master:
            with open(metrics_path, "a") as f:
                f.write(json.dumps(row) + "\n")
            if wandb is not None:
                wandb.log({f"{row['kind']}/{k}": v for k, v in row.items() if isinstance(v, (int, float))}, step=row["iter"])

    # ---------------------------------------------------------------- training loop
    # Every random draw of a step is keyed by (seed, stream, step, slot), slot = rank * accum + micro, its
    # place in the global batch: the global batch depends only on the seed and step, so a resumed run, or
    # the same global batch split as 2 ranks x 1 micro-step or 1 rank x 2, sees the same data, masks and t.
    model.train()
    flops_step = raw_model.flops_per_token() * tokens_per_step
    t_last, tokens_since, timed_iters = time.time(), 0, 0
    t_train_start, train_time = time.time(), 0.0
    for it in range(start_iter, cfg.max_iters):
        if it % cfg.eval_interval == 0 and it > start_iter:
            res = run_eval(it) if master else None
            log_row(kind="eval", iter=it, **(res or {}))
            save_checkpoints(it, res)
            t_last = time.time()  # the clock stops during eval

        lr = lr_at(it, cfg)
        set_lr(opt, lr / cfg.learning_rate)  # Muon's groups follow the same warm-up and decay from muon_lr
        # stratified t over the global batch of B * accum * world sequences (MDLM): one shared u per step
        u = torch.rand((), generator=keyed_generator(cfg.seed, STREAM_TIME, it), dtype=torch.float64)
        step_loss = torch.zeros((), device=device)
        for micro in range(accum):
            slot = rank * accum + micro
            x = get_batch(train_ids, cfg.batch_size, window, keyed_generator(cfg.seed, STREAM_DATA, it, slot), device)
            # DDP averages gradients across ranks only on the last micro-step; the others accumulate locally
            with model.no_sync() if world > 1 and micro < accum - 1 else nullcontext():
                with ctx:
                    if ar:
                        loss, _ = ar_loss(model, x)
                    else:
                        t = stratified_times(cfg.batch_size, cfg.diffusion_steps, device=device, offset=slot * cfg.batch_size,
                                             total=cfg.batch_size * accum * world, u=u)
                        loss, _, _ = diffusion_loss(model, x, schedule, tok.mask_id, cfg.loss_type,
                                                    keyed_generator(cfg.seed, STREAM_MASK, it, slot), t=t,
                                                    masked_only=cfg.head_on_masked_only, mask_span=cfg.mask_span)
                (loss / accum).backward()  # the mean over micro-steps; DDP's all-reduce makes it the global mean
            step_loss += loss.detach() / accum
        norm = None
        if cfg.grad_clip > 0 or cfg.skip_nonfinite:
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
        update = True
        if cfg.skip_nonfinite:  # one host sync per step; the norm of the all-reduced gradients is the same on every rank
            ok = (torch.isfinite(step_loss) & torch.isfinite(norm)).float()
            update = all_reduce_mean(ok, world).item() == 1.0
            if not update:
                skipped += 1
                print0(f"warning: non-finite loss or gradient at iter {it + 1}: step skipped, no update "
                       f"({skipped} of at most {cfg.skip_nonfinite})")
                if skipped > cfg.skip_nonfinite:
                    raise UserError(f"{skipped} steps had a non-finite loss or gradient (the last at iter {it + 1}), more "
                                    f"than --skip_nonfinite={cfg.skip_nonfinite}: stopped; the last good checkpoint in "
                                    f"{cfg.out_dir} is kept. Try a lower --learning_rate or --dtype=float32, then --resume")
        else:
            bad_iter = torch.where(torch.isfinite(step_loss) | (bad_iter >= 0), bad_iter, it)
        if update:
            opt.step()
            if ema:
                ema.update(raw_model)
            loss_acc += step_loss
            n_acc += 1
        opt.zero_grad(set_to_none=True)
        tokens_since += tokens_per_step
        timed_iters += 1

        if (it + 1) % cfg.log_interval == 0 or it + 1 == cfg.max_iters:
            loss_avg = all_reduce_mean(loss_acc / max(n_acc, 1), world).item()  # one sync per log line, not per step
            check_finite(it + 1, loss_avg)
            if device.type == "cuda":
                torch.cuda.synchronize()
            dt = time.time() - t_last
            train_time += dt
            tps = tokens_since / dt
            eta = (cfg.max_iters - it - 1) * dt / timed_iters
            mfu = f" | mfu {flops_step * timed_iters / dt / peak * 100:.1f}%" if peak else ""
            print0(f"iter {it + 1}/{cfg.max_iters} | loss {loss_avg:.4f} | lr {lr:.2e} | "
                   f"{dt / timed_iters * 1000:.0f} ms/it | {tps:,.0f} tok/s{mfu} | eta {fmt_time(eta)}")
            sys.stdout.flush()
            log_row(kind="train", iter=it + 1, loss=loss_avg, lr=lr, tok_per_s=tps, seconds=train_time)
            loss_acc.zero_(); n_acc = 0; tokens_since = timed_iters = 0
            t_last = time.time()

    # ---------------------------------------------------------------- final eval, checkpoint, metrics
    res = run_eval(cfg.max_iters, n_t=4, details=True) if master else None
    if master:
        log_row(kind="eval", iter=cfg.max_iters, **{k: v for k, v in res.items() if k != "entropy_by_t"})
    save_checkpoints(cfg.max_iters, res)
    if not master:
        torch.distributed.destroy_process_group()
        return
    print(f"saved {ckpt_path} (best val {best_val:.4f} nats/token in {best_path}); trained {fmt_time(time.time() - t_train_start)}")
    final_report(eval_model, tok, cfg, schedule, device, res, meta["chars_per_token"])
    if wandb is not None:
        wandb.finish()
    if world > 1:
        torch.distributed.destroy_process_group()


def trim_metrics(path, upto):
    """Keep the rows of metrics.jsonl up to iter `upto` (-1: none): a run killed after its last checkpoint
    has logged rows that the resumed run logs again. Unreadable lines (a row cut by the kill) are dropped."""
    keep = []
    if upto >= 0 and os.path.exists(path):
        with open(path) as f:
            for line in f:
                try:
                    if json.loads(line)["iter"] <= upto:
                        keep.append(line.rstrip("\n") + "\n")
                except (json.JSONDecodeError, KeyError, TypeError):
                    pass
    with atomic_open(path) as f:
        f.writelines(keep)

def final_report(model, tok, cfg, schedule, device, res, chars_per_token=1.0):
    """The end-of-training metrics block and a few samples."""
    g = torch.Generator().manual_seed(cfg.seed)
    change = ChangeRate()
    n = max(cfg.num_samples, 4)
    prompt_len = len(tok.encode(cfg.prompt))
    gen_len = min(cfg.gen_len, cfg.block_size - prompt_len - (cfg.objective == "ar"))
    # the denoising trace of sample 0 (its frame sized for prompt + gen_len tokens)
    writer = open_trace(cfg, prompt_len + gen_len, chars_per_token) if cfg.objective == "mdlm" else None
    canvas = continuation(cfg, tok, cfg.prompt, gen_len, model.args.block_size)
    if writer is None:
        texts, _, stats = generate(model, tok, canvas, cfg, schedule, device, g, on_step=change, num_samples=n)
    else:
        texts, _, stats = generate_with_trace(writer, model, tok, canvas, replace(cfg, num_samples=n), schedule, device, g,
                                              on_step=change)
    ar = cfg.objective == "ar"
    print("---- final validation metrics")
    print(f"  val {'NLL' if ar else 'bound (NELBO)'}: {res['nats_per_token']:.4f} ± {res['se']:.4f} "
          f"nats/token = {res['bits_per_char']:.4f} ± {res['bpc_se']:.4f} bits/char "
          f"({res['n_windows']} windows{'' if ar else ' x %d t' % res['n_t']})")
    print(f"  perplexity (per token, {'exact' if ar else 'from the bound'}): {res['ppl']:.3f}")
    if "recon_acc" in res:
        print(f"  masked reconstruction accuracy: {res['recon_acc']:.4f}")
        print("  entropy per timestep (nats, masked positions): " +
              "  ".join(f"t{lo}-{hi}:{e:.2f}" for lo, hi, e in res["entropy_by_t"]))
        print(f"  reverse-step token change rate: {change.rate:.4f}")
    print(f"  distinct-2 of {n} samples (prompt excluded): {distinct_n(texts, 2):.4f}; "
          f"{stats['nfe']} NFE, {stats['seconds']:.2f}s")
    print(f"---- sample (prompt {cfg.prompt!r})")
    print(cfg.prompt + texts[0])
    if writer is not None:
        for w in writer.result["warnings"]:
            print(f"warning: {w}")
        print(f"trace: {writer.result['frames']} frames -> " + ", ".join(p for p in (writer.result["mp4"], writer.result["gif"]) if p))


if __name__ == "__main__":
    run_cli(main)
