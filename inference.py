"""Sample from a trained checkpoint and (optionally) render the denoising trace as MP4 + GIF.

    python inference.py --checkpoint artifacts/models/model.pt --prompt "Once upon a time" --gen-len 256 \
        --temperature 1.0 --steps 100 --seed 0 --viz-video artifacts/media/diffusion_trace.mp4 \
        --trace-every 1 --gif-frame-ms 180
    python inference.py cpu --viz-video artifacts/media/cpu.mp4   # the cpu preset's checkpoint and prompt

Model, tokenizer and schedule come from the checkpoint; sampling flags (any config.py key in the
sampling section, or --device/--seed) come from the command line. AR checkpoints sample with a KV cache.
"""
import time

import torch

from config import config_from_dict, get_config
from diffusion import Schedule
from model import ModelArgs, Transformer
from utils.checkpoint import load_checkpoint
from utils.dist import pick_device
from utils.errors import UserError, run_cli
from utils.generate import encode_prompt, generate, generate_with_trace, open_trace
from utils.tokenizer import BPETokenizer, fingerprint, tokenizer_from_state

# settings that belong to the trained model: always taken from the checkpoint
MODEL_KEYS = ("objective", "diffusion_steps", "schedule", "block_size", "n_layer", "n_head", "n_embd",
              "time_cond", "tokenizer", "data_path", "val_path")


def load_model(path, device):
    ckpt = load_checkpoint(path)
    margs = ModelArgs(**ckpt["model_args"])
    model = Transformer(margs)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise UserError(f"checkpoint {path} does not match its own model description ({str(e).splitlines()[0][:100]}): the file is damaged")
    return model.to(device).eval(), ckpt


def main(argv):
    cli = get_config(argv)
    device = pick_device(cli.device)
    model, ckpt = load_model(cli.checkpoint, device)
    saved = config_from_dict(ckpt["config"])
    cfg = get_config(argv, base=saved)  # command line over the checkpoint's settings...
    cfg = cfg.__class__(**{**vars(cfg), **{k: getattr(saved, k) for k in MODEL_KEYS}})  # ...except the model's own
    tok = tokenizer_from_state(ckpt["tokenizer"])
    if any(a.startswith(("--tokenizer_path", "--tokenizer-path")) for a in argv):
        other = BPETokenizer.from_file(cfg.tokenizer_path)
        if fingerprint(other) != fingerprint(tok):
            raise UserError(f"tokenizer {cfg.tokenizer_path} differs from the one {cli.checkpoint} was trained with "
                            f"(vocab {other.vocab_size} vs {tok.vocab_size}): drop --tokenizer_path to use the checkpoint's own")
    encode_prompt(tok, cfg.prompt, cfg.gen_len, model.args.block_size)  # validate before any work
    if tok.kind == "bpe" and cfg.prompt and not cfg.prompt.strip():
        raise UserError("the prompt is empty after normalisation: give some text, or no --prompt at all")

    if cfg.viz_video and cfg.objective == "ar":
        raise UserError("--viz-video shows the denoising of a diffusion model; this checkpoint is autoregressive")
    writer = open_trace(cfg)  # validates the output path before any sampling

    g = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    schedule = Schedule(cfg.diffusion_steps, cfg.schedule)
    print(f"checkpoint {cli.checkpoint}: {cfg.objective}, {model.num_params():,} params, iter {ckpt['iter']}, "
          f"{tok.kind} vocab {tok.vocab_size}; device {device}")
    t0 = time.time()
    if writer is None:
        texts, out, stats = generate(model, tok, cfg.prompt, cfg.gen_len, cfg, schedule, device, g)
    else:
        texts, out, stats = generate_with_trace(writer, model, tok, cfg.prompt, cfg.gen_len, cfg, schedule, device, g)
    dt = time.time() - t0
    for i, text in enumerate(texts):
        if len(texts) > 1:
            print(f"---- sample {i}")
        print(cfg.prompt + text)
    n_tok = cfg.gen_len * len(texts)
    print(f"---- {len(texts)} x {cfg.gen_len} tokens, {stats['nfe']} NFE, {dt:.2f}s ({n_tok / dt:,.0f} tokens/s)")
    if writer is not None:
        res = writer.result
        for w in res.get("warnings", []):
            print(f"warning: {w}")
        written = [p for p in (res.get("mp4"), res.get("gif")) if p]
        print(f"trace: {res['frames']} frames -> {', '.join(written)}")


if __name__ == "__main__":
    run_cli(main)
