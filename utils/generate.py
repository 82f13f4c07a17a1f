"""Prompt -> text for both objectives (the diffusion sampler, or AR decoding with a KV cache),
and the hook that turns the sampler's steps into trace frames (MP4 + GIF)."""
import os
import time

import torch

from diffusion import sample, sample_ar
from utils.errors import UserError


def encode_prompt(tok, prompt, gen_len, block_size):
    ids = tok.encode(prompt) if prompt else []
    if gen_len < 1:
        raise UserError(f"--gen-len must be >= 1 token, got {gen_len}")
    if len(ids) + gen_len > block_size:
        raise UserError(f"prompt ({len(ids)} tokens) + --gen-len {gen_len} = {len(ids) + gen_len} exceeds the model's "
                        f"context of {block_size} tokens: shorten the prompt or use --gen-len {max(block_size - len(ids), 1)}")
    return ids


def ar_start_token(tok):
    """An AR model needs one token to condition on when the prompt is empty."""
    if tok.kind == "char":
        return tok.stoi.get("\n", 0)
    from utils.bpe import EOT_TOKEN
    eot = tok.tok.token_to_id(EOT_TOKEN)
    return eot if eot is not None else 0


@torch.no_grad()
def generate(model, tok, prompt, gen_len, cfg, schedule, device, generator=None, on_step=None, num_samples=None):
    """Returns (list of generated texts without the prompt, full token tensor (B, L), stats)."""
    B = num_samples or cfg.num_samples
    ids = encode_prompt(tok, prompt, gen_len, model.args.block_size)
    model.eval()
    t0 = time.time()
    if cfg.objective == "ar":
        start = ids or [ar_start_token(tok)]
        if len(start) + gen_len > model.args.block_size:
            raise UserError(f"--gen-len {gen_len} plus a start token exceeds the context of {model.args.block_size}: use --gen-len {model.args.block_size - 1}")
        prompt_t = torch.tensor(start, device=device).repeat(B, 1)
        out = sample_ar(model, prompt_t, gen_len, cfg.temperature, cfg.top_k, cfg.top_p, generator)
        P, stats = len(start), dict(nfe=gen_len)
    else:
        P = len(ids)
        x = torch.zeros(B, P + gen_len, dtype=torch.long, device=device)
        x[:, :P] = torch.tensor(ids, dtype=torch.long, device=device)
        gen_mask = torch.zeros_like(x, dtype=torch.bool)
        gen_mask[:, P:] = True
        out, stats = sample(model, x, gen_mask, schedule, tok.mask_id, cfg.steps, cfg.temperature, cfg.top_k,
                            cfg.top_p, generator=generator, on_step=on_step)
    stats["seconds"] = time.time() - t0
    stats["prompt_tokens"] = P
    texts = [tok.decode(row[P:].tolist()) for row in out]
    return texts, out, stats


class TraceHook:
    """Turns the sampler's per-step info into trace frames for one sample of the batch."""

    def __init__(self, writer, tok, every, T, row=0):
        self.writer, self.tok, self.every, self.T, self.row, self.frames = writer, tok, every, T, row, 0

    def frame(self, x, gen_mask, revealed, remasked, conf, step, t):
        ids, gm = x[self.row].tolist(), gen_mask[self.row].tolist()
        rev, rem, cf = revealed[self.row].tolist(), remasked[self.row].tolist(), conf[self.row].tolist()
        tokens, states, confidence = [], [], []
        for i, tid in enumerate(ids):
            text = None if tid == self.tok.mask_id else self.tok.token_text(tid)
            tokens.append(text)
            state = "prompt" if not gm[i] else "remasked" if rem[i] else "mask" if text is None else "new" if rev[i] else "kept"
            states.append(state)
            confidence.append(cf[i] if gm[i] and text is not None else None)
        self.writer.add_frame(tokens, states, step=step, t=t / self.T, nfe=step, confidence=confidence)
        self.frames += 1

    def start(self, x, gen_mask):
        z = torch.zeros_like(gen_mask)
        self.frame(x.masked_fill(gen_mask, self.tok.mask_id), gen_mask, z, z, torch.zeros(x.shape, dtype=torch.float64), 0, self.T)

    def __call__(self, info):
        last = info["s"] == 0
        if info["step"] % self.every == 0 or last:
            self.frame(info["x"], info["gen_mask"], info["revealed"], info["remasked"], info["conf"], info["step"], info["s"])


def open_trace(cfg):
    """A TraceWriter for cfg.viz_video (GIF beside it), or None. Checks the path before any work."""
    if not cfg.viz_video:
        return None
    if not cfg.viz_video.lower().endswith(".mp4"):
        raise UserError(f"--viz-video {cfg.viz_video} should end in .mp4 (a GIF is written beside it)")
    out_dir = os.path.dirname(cfg.viz_video) or "."
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {out_dir} for --viz-video ({e.strerror}): choose a writable path")
    if not os.access(out_dir, os.W_OK):
        raise UserError(f"{out_dir} is not writable: choose another --viz-video path")
    from utils.trace import TraceWriter
    return TraceWriter(cfg.viz_video, os.path.splitext(cfg.viz_video)[0] + ".gif", frame_ms=cfg.gif_frame_ms,
                       cols=64 if cfg.tokenizer == "char" else 72,
                       title=f"micro-dllm  T={cfg.diffusion_steps}  steps={cfg.steps}  temp={cfg.temperature}")


def generate_with_trace(writer, model, tok, prompt, gen_len, cfg, schedule, device, generator=None, on_step=None):
    """generate() for one sample while recording its trace; returns what generate() returns.
    The writer is closed here (its .result says what was written)."""
    hook = TraceHook(writer, tok, cfg.trace_every, cfg.diffusion_steps)
    ids = encode_prompt(tok, prompt, gen_len, model.args.block_size)
    x = torch.zeros(1, len(ids) + gen_len, dtype=torch.long)
    x[:, :len(ids)] = torch.tensor(ids, dtype=torch.long)
    gen_mask = torch.zeros_like(x, dtype=torch.bool)
    gen_mask[:, len(ids):] = True
    both = hook if on_step is None else (lambda info: (hook(info), on_step(info)))
    with writer:
        hook.start(x, gen_mask)
        return generate(model, tok, prompt, gen_len, cfg, schedule, device, generator, on_step=both)
