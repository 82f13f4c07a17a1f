"""The end-of-training report: dev and test figures in every unit, sampler metrics, samples.

    python train.py cpu --max_iters=20 --eval_interval=10   # ends with this report
"""
from dataclasses import replace

import torch
from tqdm import tqdm

from evals.bound import LN2
from evals.metrics import ChangeRate, distinct_n
from objectives import OBJECTIVES
from sampling.canvas import continuation, fill
from sampling.trace import chain, open_trace, print_written, run_name
from utils.errors import UserError


def units(res):
    """A bound or NLL per token and per scored char (nats/char = bits/char x ln 2, as eval.py)."""
    return (f"{res['nats_per_token']:.4f} ± {res['se']:.4f} nats/token = {res['bits_per_char'] * LN2:.4f} ± "
            f"{res['bpc_se'] * LN2:.4f} nats/char = {res['bits_per_char']:.4f} ± {res['bpc_se']:.4f} bits/char")


def revisits(cfg, opts):
    """Whether the sampler can change a committed token (else its change rate is 0 by design)."""
    obj = OBJECTIVES[cfg.objective]
    return obj.NOISE_START or (not obj.EXACT and not opts.final())


def check_report(cfg, opts, tok):
    """(prompt tokens, tokens generated) of the end-of-run samples (gen_len, cut to the context),
    refusing before step 1, not after training, what would refuse their canvas
    (sampling.canvas.build_canvas, where the report builds it): a prompt that leaves no room,
    --dual_sample with no prompt to continue, fewer --steps than the semi-AR blocks."""
    prompt_len = len(tok.encode(cfg.prompt))
    gen_len = min(cfg.gen_len, cfg.block_size - prompt_len - OBJECTIVES[cfg.objective].WINDOW)
    if gen_len < 1:
        raise UserError(f"--prompt is {prompt_len} tokens: it leaves no room in the context of {cfg.block_size} for "
                        f"the end-of-run samples; give a shorter prompt")
    if opts.dual_sample and not prompt_len:
        raise UserError("--dual_sample continues a prompt left to right: give the end-of-run samples one (--prompt)")
    opts.check_blocks(opts.n_blocks(gen_len))
    return prompt_len, gen_len


def final_report(model, tok, cfg, opts, device, res, test=None):
    """Final metrics (res: dev eval; test: bound.REPORT's) and >= 4 samples (for distinct-2) drawn
    by opts (diffusion.SamplerOptions)."""
    g = torch.Generator().manual_seed(cfg.seed)
    obj = OBJECTIVES[cfg.objective]
    change = ChangeRate(tok.mask_id)  # the fraction of committed tokens a reverse step changes
    n = max(cfg.num_samples, 4)
    prompt_len, gen_len = check_report(cfg, opts, tok)  # (checked before step 1: it passes)
    # sample 0's trace: a typed path was checked before step 1, 'auto' takes a new name now
    trace = open_trace(cfg, opts, run_name(cfg.out_dir), tok, replace=True)
    canvas = continuation(cfg, opts, tok, cfg.prompt, gen_len, model.args.block_size)
    # a gen_len past the context is cut to what it holds after the prompt, and said so
    cut = f" (gen_len={cfg.gen_len}: what the context holds after the prompt)" if gen_len < cfg.gen_len else ""
    traced = f", tracing sample 0 to {trace.video.paths['mp4']}" if trace.video else ""
    print(f"sampling {n} x {gen_len} tokens{cut}{traced}")
    bar = tqdm(total=obj.passes(cfg, opts, gen_len, prompt_len), desc="sampling", unit="step", leave=False,
               dynamic_ncols=True, disable=None)
    with trace, bar:
        texts, _, stats = fill(model, tok, canvas, replace(cfg, num_samples=n), opts, device, g,
                               chain(trace, change, lambda st: bar.update()))
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
        if revisits(cfg, opts):
            print(f"  reverse-step token change rate (fraction of committed tokens a step changes): {change.rate:.4f}")
        else:
            print(f"  reverse-step token change rate: 0 by construction "
                  f"({opts.final()}: committed tokens are final)")
    print(f"  distinct-2 (unique / all word bigrams of the {n} samples drawn, prompt excluded; all below): "
          f"{distinct_n(texts, 2):.4f}; {stats['nfe']} NFE (model calls), {stats['seconds']:.2f}s")
    for i, text in enumerate(texts):  # sample 0's text is the one the README and records pin
        print(f"---- sample {i} (prompt {cfg.prompt!r})\n{cfg.prompt + text}")
    print_written(trace)
