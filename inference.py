"""Sample from a trained checkpoint and (optionally) render the denoising trace as MP4 + GIF.

    python inference.py --checkpoint artifacts/models/model.pt --prompt "Once upon a time" --gen-len 256 \
        --temperature 1.0 --steps 100 --seed 0 --viz-video artifacts/media/diffusion_trace.mp4 \
        --trace-every 1 --gif-frame-ms 180
    python inference.py cpu --viz-video artifacts/media/cpu.mp4   # the cpu preset's checkpoint and prompt
    python inference.py tinystories_bpe --gen-len 128 --viz-video artifacts/media/bpe.mp4  # BPE: --gen-len in tokens
    python inference.py cpu --infill "Once upon a time, [___:20] went to the park."     # fill the blanks only
    python inference.py cpu --prefix_file start.txt --suffix_file end.txt --gen-len 64  # prefix + suffix
    python inference.py cpu --threshold 0.9 --num-samples 4                             # Fast-dLLM, NFE adaptive
    python inference.py cpu --semi-ar-length 32 --gen-len 512 --remask none --tokens-per-step linear  # semi-AR, past the context
    python inference.py --help                                    # every key, its type, default and meaning

Model, tokenizer and schedule come from the checkpoint; sampling flags (any config.py key in the
sampling section, or --device/--seed) come from the command line. AR checkpoints sample with a KV cache.
"""
import time

import torch

from config import TRAINED_KEYS, config_from_dict, get_config, help_text, wants_help
from diffusion import Schedule
from utils.checkpoint import load_model
from utils.dist import pick_device
from utils.errors import UserError, run_cli
from utils.generate import build_canvas, describe_sampler, generate
from utils.tokenizer import BPETokenizer, fingerprint, normalize_prompt, tokenizer_from_state
from utils.trace import generate_with_trace, open_trace

USAGE = "[PRESET] [--checkpoint MODEL.pt] [--key=value]..."


def main(argv):
    if wants_help(argv):
        print(help_text("inference.py", USAGE, from_checkpoint=True))
        return
    cli = get_config(argv)
    device = pick_device(cli.device)
    model, ckpt = load_model(cli.checkpoint, device)
    saved = config_from_dict(ckpt["config"])
    cfg = get_config(argv, base=saved)  # command line over the checkpoint's settings...
    cfg = cfg.__class__(**{**vars(cfg), **{k: getattr(saved, k) for k in TRAINED_KEYS}})  # ...except the model's own
    if not any(a.startswith(("--viz-video", "--viz_video")) for a in argv):
        cfg = cfg.__class__(**{**vars(cfg), "viz_video": ""})  # write a video only when asked here: never replace one by default
    tok = tokenizer_from_state(ckpt["tokenizer"])
    if any(a.startswith(("--tokenizer_path", "--tokenizer-path")) for a in argv):
        other = BPETokenizer.from_file(cfg.tokenizer_path)  # UserError if missing or not ours
        if fingerprint(other) != fingerprint(tok):
            raise UserError(f"tokenizer {cfg.tokenizer_path} (bpe, vocab {other.vocab_size}, fingerprint {fingerprint(other)}) "
                            f"differs from the one {cli.checkpoint} was trained with ({tok.kind}, vocab {tok.vocab_size}, "
                            f"fingerprint {fingerprint(tok)}): drop --tokenizer_path to use the checkpoint's own")
    cfg = cfg.__class__(**{**vars(cfg), "prompt": normalize_prompt(tok, cfg.prompt)})  # BPE: NFC, no trailing spaces
    canvas = build_canvas(cfg, tok, model.args.block_size, cfg.objective)  # prompt/infill/prefix+suffix, checked

    if cfg.viz_video and cfg.objective == "ar":
        raise UserError("--viz-video shows the denoising of a diffusion model; this checkpoint is autoregressive")
    # validates the output path before any sampling; BPE frames are sized for the whole generation
    writer = open_trace(cfg, len(canvas), ckpt.get("meta", {}).get("chars_per_token", 4.0))

    g = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    schedule = Schedule(cfg.diffusion_steps, cfg.schedule)
    print(f"checkpoint {cli.checkpoint}: {cfg.objective}, {model.num_params():,} params, iter {ckpt['iter']}, "
          f"{tok.kind} vocab {tok.vocab_size}; device {device}")
    t0 = time.time()
    if writer is None:
        texts, out, stats = generate(model, tok, canvas, cfg, schedule, device, g)
    else:
        texts, out, stats = generate_with_trace(writer, model, tok, canvas, cfg, schedule, device, g)
    dt = time.time() - t0
    per = list(zip(stats["nfe_per_sample"], stats["seconds_per_sample"]))
    for i, text in enumerate(stats["full_texts"]):
        if len(texts) > 1:
            print(f"---- sample {i}: {per[i][0]} NFE, {per[i][1]:.2f}s")
        print(text)
    n_tok = canvas.n_gen * len(texts)
    unit = "BPE tokens (--gen-len counts tokens, not characters)" if tok.kind == "bpe" else "tokens"
    nfes = [n for n, _ in per]
    nfe = f"{nfes[0]}" if min(nfes) == max(nfes) else f"{sum(nfes) / len(nfes):.1f} (min {min(nfes)}, max {max(nfes)})"
    print(f"---- {len(texts)} x {canvas.n_gen} {unit}, NFE {nfe} per sample, {stats['nfe']} batched, {dt:.2f}s "
          f"({n_tok / dt:,.0f} tokens/s); sampler: {describe_sampler(cfg)}")
    if writer is not None:
        res = writer.result
        for w in res.get("warnings", []):
            print(f"warning: {w}")
        written = [p for p in (res.get("mp4"), res.get("gif")) if p]
        print(f"trace: {res['frames']} frames -> {', '.join(written)}")


if __name__ == "__main__":
    run_cli(main)
