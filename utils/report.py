"""What train.py prints about a run beside its loop: the name of the training loss in its log lines and the
end-of-training metrics block with a sample. Every figure carries its unit or says what it counts.

    from utils.report import final_report, loss_label
    print(loss_label(cfg))                      # 'train all_ce' (the log line's figure) and what it measures
"""
from dataclasses import replace

import torch

import objectives
from canvas import continuation, generate
from utils.metrics import ChangeRate, distinct_n
from utils.trace import StepBar, chain, generate_with_trace, open_trace

# what each training loss measures (train.py's log lines), beside the validation bound the eval lines report
LOSSES = dict(elbo="the weighted NELBO on training batches", masked_ce="the unweighted CE over masked positions (no bound)",
              all_ce="the CE over every position, visible ones too (no bound)", ce="the next-token CE on training batches")


def loss_label(cfg):
    """(the name of the figure a log line reports as its training loss, a line saying what it measures)."""
    obj = objectives.get(cfg.objective)
    name = "ce" if obj.EXACT else "elbo" if "loss_type" in obj.IGNORES else cfg.loss_type
    band = (f" on mask rates in [{cfg.bd3_mask_min:g}, {cfg.bd3_mask_max:g}]"
            if name == "elbo" and (cfg.bd3_mask_min, cfg.bd3_mask_max) != (0, 1) and "bd3_mask_min" not in obj.IGNORES else "")
    val = "'val NLL' is the exact NLL" if obj.EXACT else "'val bound' is the NELBO"
    return f"train {name}", (f"log: 'train {name}' is {LOSSES[name]}{band}; {val} on the fixed validation windows, "
                             f"the figure to compare (both nats/token)")


def revisits(cfg):
    """Whether the sampler in force can change a token it has committed (else its change rate is 0 by construction)."""
    obj = objectives.get(cfg.objective)
    return obj.NOISE_START or (obj.TRACE and cfg.remask != "none" and not cfg.threshold)


def final_report(model, tok, cfg, schedule, device, res, chars_per_token=1.0):
    """The end-of-training metrics block and a sample (4 are drawn at least, for distinct-2; sample 0 is printed)."""
    g, obj = torch.Generator().manual_seed(cfg.seed), objectives.get(cfg.objective)
    change = ChangeRate(tok.mask_id)
    n = max(cfg.num_samples, 4)
    prompt_len = len(tok.encode(cfg.prompt))
    gen_len = min(cfg.gen_len, cfg.block_size - prompt_len - obj.WINDOW)
    # the denoising trace of sample 0 (its frame sized for prompt + gen_len tokens)
    writer = open_trace(cfg, prompt_len + gen_len, chars_per_token) if obj.TRACE else None
    canvas = continuation(cfg, tok, cfg.prompt, gen_len, model.args.block_size)
    print(f"sampling {n} x {gen_len} tokens" + (f", tracing sample 0 to {cfg.viz_video}" if writer else ""))
    with StepBar(obj.passes(cfg, gen_len, prompt_len), on=obj.TRACE) as bar:
        if writer is None:
            texts, _, stats = generate(model, tok, canvas, cfg, schedule, device, g, on_step=chain(change, bar), num_samples=n)
        else:
            texts, _, stats = generate_with_trace(writer, model, tok, canvas, replace(cfg, num_samples=n), schedule, device,
                                                  g, on_step=chain(change, bar))
    ar = obj.EXACT
    print("---- final validation metrics")
    print(f"  val {'NLL' if ar else 'bound (NELBO)'}: {res['nats_per_token']:.4f} ± {res['se']:.4f} "
          f"nats/token = {res['bits_per_char']:.4f} ± {res['bpc_se']:.4f} bits/char "
          f"({res['n_windows']} windows{'' if ar else ' x %d t' % res['n_t']}; ± one standard error)")
    print(f"  perplexity (per token, {'exp of the NLL' if ar else 'exp of the bound: an upper bound'}): {res['ppl']:.3f}")
    if "recon_acc" in res:
        where = "positions the noise changed" if obj.NOISE_START else "masked positions"
        print(f"  reconstruction accuracy (fraction of {where} whose argmax is the true token): {res['recon_acc']:.4f}")
        print(f"  prediction entropy (nats, mean over {where}) by time step t of T={cfg.diffusion_steps}: " +
              "  ".join(f"t{lo}-{hi}:{e:.2f}" for lo, hi, e in res["entropy_by_t"]))
        if revisits(cfg):
            print(f"  reverse-step token change rate (fraction of committed tokens a step changes): {change.rate:.4f}")
        else:
            print(f"  reverse-step token change rate: 0 by construction ({'threshold' if cfg.threshold else 'remask none'}: "
                  f"committed tokens are final)")
    print(f"  distinct-2 (unique / all word bigrams of the {n} samples drawn, prompt excluded; sample 0 below): "
          f"{distinct_n(texts, 2):.4f}; {stats['nfe']} NFE (model calls), {stats['seconds']:.2f}s")
    print(f"---- sample 0 (prompt {cfg.prompt!r})")
    print(cfg.prompt + texts[0])
    if writer is not None:
        for w in writer.result["warnings"]:
            print(f"warning: {w}")
        print(f"trace: {writer.result['frames']} frames -> " + ", ".join(p for p in (writer.result["mp4"], writer.result["gif"]) if p))
