"""Train a masked diffusion LM (or the AR baseline) from scratch.

    python train.py                                   # reference recipe: char Tiny Shakespeare, 6/6/384, 5000 iters
    python train.py cpu                               # laptop preset: ~10 min on 2 CPU cores, local TinyStories
    python train.py cpu --objective=ar                # the autoregressive baseline, same code and budget
    python train.py cpu --max_iters=0                 # build data, tokenizer, model; print config and params; exit
    python train.py cpu --resume                      # continue from out_dir/model.pt
    torchrun --standalone --nproc_per_node=4 train.py shakespeare_char   # DDP
"""
import json
import math
import os
import sys
import time
from dataclasses import replace

import torch

from config import config_to_dict, format_config, get_config
from diffusion import Schedule, ar_loss, diffusion_loss, stratified_times
from model import ModelArgs, Transformer
from utils.checkpoint import load_checkpoint, save_checkpoint
from utils.data import check_fits, fixed_windows, get_batch, prepare_data
from utils.dist import all_reduce_mean, autocast_for, init_distributed, peak_flops
from utils.errors import UserError, run_cli
from utils.generate import generate, generate_with_trace, open_trace
from utils.metrics import ChangeRate, distinct_n, evaluate
from utils.tokenizer import fingerprint, tokenizer_from_state


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
    if cfg.resume:
        resume_ckpt = load_checkpoint(ckpt_path)
        saved = resume_ckpt["config"]
        # the run's own settings win; only schedule length, intervals and device may change on resume
        keep = {k: v for k, v in saved.items() if k not in ("max_iters", "eval_interval", "log_interval", "device",
                                                            "resume", "overwrite", "compile", "eval_iters")}
        cfg = replace(get_config(argv), **keep)
    elif os.path.exists(ckpt_path) and not cfg.overwrite and cfg.max_iters > 0:
        raise UserError(f"{ckpt_path} already exists: pass --resume to continue it, --overwrite to replace it, "
                        f"or --out_dir=NEW_DIR")
    torch.manual_seed(cfg.seed + rank)
    ctx, dtype_name = autocast_for(device, cfg.dtype)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    print0(f"config:\n{format_config(cfg)}")
    print0(f"device: {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else device.type}), "
           f"dtype: {dtype_name}, world size: {world}")

    # ---------------------------------------------------------------- data and tokenizer
    tok = tokenizer_from_state(resume_ckpt["tokenizer"]) if resume_ckpt else None
    tok, train_ids, val_ids, meta = prepare_data(cfg, tok, verbose=master)
    ar = cfg.objective == "ar"
    window = cfg.block_size + 1 if ar else cfg.block_size  # AR predicts L tokens from a window of L+1
    check_fits(train_ids, window, "train")
    check_fits(val_ids, window, "validation")
    val_windows = fixed_windows(val_ids, cfg.eval_iters * cfg.batch_size, window)
    print0(f"data: {meta['train_tokens']:,} train / {meta['val_tokens']:,} val tokens, vocab {tok.vocab_size} "
           f"({tok.kind}, [MASK]={tok.mask_id}), {meta['chars_per_token']:.3f} chars/token on val")

    # ---------------------------------------------------------------- model
    margs = ModelArgs.from_config(cfg, tok.vocab_size)
    model = Transformer(margs).to(device)
    n_params = model.num_params()
    tokens_per_step = cfg.batch_size * cfg.block_size * world
    print0(f"model: {n_params:,} parameters, {model.flops_per_token() / 1e6:.1f} MFLOP/token (training), "
           f"{tokens_per_step:,} tokens/step")
    if cfg.max_iters == 0 and not cfg.resume:
        print0("max_iters=0: built data, tokenizer and model; exiting without training")
        return
    schedule = Schedule(cfg.diffusion_steps, cfg.schedule)
    opt = torch.optim.AdamW(model.optimizer_groups(cfg.weight_decay), lr=cfg.learning_rate,
                            betas=(cfg.beta1, cfg.beta2), fused=device.type == "cuda")
    start_iter, best_val = 0, float("inf")
    g_data = torch.Generator().manual_seed(cfg.seed + 1000 * rank)      # which windows
    g_mask = torch.Generator().manual_seed(cfg.seed + 1000 * rank + 1)  # which tokens get masked
    g_time = torch.Generator().manual_seed(cfg.seed + 7)                # shared u for stratified t (same on all ranks)
    if resume_ckpt:
        model.load_state_dict(resume_ckpt["model"])
        opt.load_state_dict(resume_ckpt["optimizer"])
        start_iter, best_val = resume_ckpt["iter"], resume_ckpt.get("best_val", best_val)
        rng = resume_ckpt.get("rng", {})
        for g, k in ((g_data, "data"), (g_mask, "mask"), (g_time, "time")):
            if k in rng:
                g.set_state(rng[k])
        print0(f"resumed from {ckpt_path} at iter {start_iter} (best val {best_val:.4f})")
        if start_iter >= cfg.max_iters:
            raise UserError(f"{ckpt_path} is already at iter {start_iter} >= max_iters={cfg.max_iters}: raise --max_iters to train further")
    raw_model = model
    if cfg.compile:
        model = torch.compile(model)
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[local_rank] if device.type == "cuda" else None)

    def save(path, it, val):
        save_checkpoint(path, dict(model=raw_model.state_dict(), optimizer=opt.state_dict(), config=config_to_dict(cfg),
                                   model_args=vars(margs), tokenizer=tok.state(), tokenizer_fingerprint=fingerprint(tok),
                                   iter=it, best_val=best_val, val=val, meta=meta,
                                   rng=dict(data=g_data.get_state(), mask=g_mask.get_state(), time=g_time.get_state())))

    def run_eval(it, n_t=1, details=False):
        res = evaluate(raw_model, val_windows, schedule, tok.mask_id, cfg.objective, cfg.batch_size, device, ctx,
                       n_t=n_t, seed=cfg.seed, chars_per_token=meta["chars_per_token"], details=details)
        what = "NLL" if ar else "bound"
        print0(f"eval {it}: val {what} {res['nats_per_token']:.4f} ± {res['se']:.4f} nats/token, "
               f"{res['bits_per_char']:.4f} ± {res['bpc_se']:.4f} bits/char")
        return res

    metrics_path = os.path.join(cfg.out_dir, "metrics.jsonl")
    if master:
        os.makedirs(cfg.out_dir, exist_ok=True)
        if not cfg.resume:
            open(metrics_path, "w").close()

    def log_row(**row):
        if master:
            with open(metrics_path, "a") as f:
                f.write(json.dumps(row) + "\n")

    # ---------------------------------------------------------------- training loop
    model.train()
    flops_step = raw_model.flops_per_token() * tokens_per_step
    peak = peak_flops(device)
    t_last, tokens_since, timed_iters = time.time(), 0, 0
    t_train_start, train_time = time.time(), 0.0
    loss_acc = torch.zeros((), device=device)
    for it in range(start_iter, cfg.max_iters):
        if it % cfg.eval_interval == 0 and it > start_iter:
            res = run_eval(it)
            log_row(kind="eval", iter=it, **res)
            if master:
                if res["nats_per_token"] < best_val:
                    best_val = res["nats_per_token"]
                    save(best_path, it, res)
                save(ckpt_path, it, res)
            t_last = time.time()  # the clock stops during eval

        lr = lr_at(it, cfg)
        for group in opt.param_groups:
            group["lr"] = lr
        x = get_batch(train_ids, cfg.batch_size, window, g_data, device)
        with ctx:
            if ar:
                loss, _ = ar_loss(model, x)
            else:
                # stratified t over the global batch: this rank's B draws sit at offset rank*B
                u = torch.rand((), generator=g_time, dtype=torch.float64)
                t = stratified_times(cfg.batch_size, cfg.diffusion_steps, device=device, offset=rank * cfg.batch_size,
                                     total=cfg.batch_size * world, u=u)
                loss, _, _ = diffusion_loss(model, x, schedule, tok.mask_id, cfg.loss_type, g_mask, t=t)
        if not torch.isfinite(loss):
            raise UserError(f"loss became {loss.item()} at iter {it}: the last good checkpoint {ckpt_path} is kept; "
                            f"try a lower --learning_rate or --dtype=float32, then --resume")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        loss_acc += loss.detach()
        tokens_since += tokens_per_step
        timed_iters += 1

        if (it + 1) % cfg.log_interval == 0 or it + 1 == cfg.max_iters:
            loss_avg = all_reduce_mean(loss_acc / timed_iters, world).item()
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
            loss_acc.zero_(); tokens_since = timed_iters = 0
            t_last = time.time()

    # ---------------------------------------------------------------- final eval, checkpoint, metrics
    if not master:
        torch.distributed.destroy_process_group()
        return
    res = run_eval(cfg.max_iters, n_t=4, details=True)
    log_row(kind="eval", iter=cfg.max_iters, **{k: v for k, v in res.items() if k != "entropy_by_t"})
    if res["nats_per_token"] < best_val:
        best_val = res["nats_per_token"]
        save(best_path, cfg.max_iters, res)
    save(ckpt_path, cfg.max_iters, res)
    print(f"saved {ckpt_path} (best val {best_val:.4f} nats/token in {best_path}); trained {fmt_time(time.time() - t_train_start)}")
    final_report(raw_model, tok, cfg, schedule, device, res)
    if world > 1:
        torch.distributed.destroy_process_group()


def final_report(model, tok, cfg, schedule, device, res):
    """The end-of-training metrics block and a few samples."""
    g = torch.Generator().manual_seed(cfg.seed)
    change = ChangeRate()
    n = max(cfg.num_samples, 4)
    gen_len = min(cfg.gen_len, cfg.block_size - len(tok.encode(cfg.prompt)) - (cfg.objective == "ar"))
    writer = open_trace(cfg) if cfg.objective == "mdlm" else None  # the denoising trace of sample 0
    if writer is None:
        texts, _, stats = generate(model, tok, cfg.prompt, gen_len, cfg, schedule, device, g, on_step=change, num_samples=n)
    else:
        texts, _, stats = generate_with_trace(writer, model, tok, cfg.prompt, gen_len, replace(cfg, num_samples=n),
                                              schedule, device, g, on_step=change)
    print("---- final validation metrics")
    print(f"  val {'NLL' if cfg.objective == 'ar' else 'bound (NELBO)'}: {res['nats_per_token']:.4f} ± {res['se']:.4f} "
          f"nats/token = {res['bits_per_char']:.4f} ± {res['bpc_se']:.4f} bits/char ({res['n_windows']} windows x {res['n_t']} t)")
    print(f"  perplexity (per token, from the bound): {res['ppl']:.3f}")
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
