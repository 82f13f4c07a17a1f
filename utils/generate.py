"""What to generate and how: the canvas (given text and blanks, from --prompt, --infill or --prefix_file/
--suffix_file), then generate(), the glue that fills it with sampler.py's reverse loop (diffusion) or AR
decoding with a KV cache, and renders the text. The way down: build_canvas -> generate -> sampler.sample.

    python inference.py --checkpoint M.pt --infill "The cat [___] on the mat"     # 5 tokens: one per marker character
    python inference.py --checkpoint M.pt --infill "Once upon a [___:12]. The end."
    python inference.py --checkpoint M.pt --prefix_file start.txt --suffix_file end.txt --gen-len 64

Given text is encoded piece by piece and spliced back verbatim around the decoded blanks, so every given
character comes out exactly as given, for the char and the BPE tokenizer alike. A blank is N [MASK]
tokens: [___:N] sets N; a bare [___] (any number of underscores) takes one token per character of the
marker, so for a char model the output lines up with what was typed.

    c = Canvas.from_parts(tok, ["Once upon a ", 12, ". The end."])    # str = given text, int = a blank of N tokens
    texts, out, stats = generate(model, tok, c, cfg, schedule, device)  # or build_canvas(cfg, tok, block_size)
    c.render(out[0].tolist(), tok), c.fills(out[0].tolist(), tok)       # the full text; the blanks' texts
    with StepBar(cfg.steps) as bar: generate(..., on_step=chain(bar, other_hook))   # a progress bar on a terminal
"""
import re
import time
from dataclasses import replace

import torch

from sampler import sample, sample_ar
from sampler_bd3 import sample_bd3
from uniform import sample_uniform
from utils.errors import UserError
from utils.fileio import read_text

BLANK = re.compile(r"\[(_+)(?::(\d+))?\]")  # [___] or [___:12]
BLANK_HELP = "mark each gap with [___] (one token per marker character) or [___:N] (N tokens)"


class Canvas:
    """Given text and blanks in order: parts are (text, ids) for given text and (None, n) for a blank of n tokens."""

    def __init__(self, parts):
        self.parts = parts
        self.ids = [i for text, p in parts for i in (p if text is not None else [0] * p)]
        self.gen = [text is None for text, p in parts for _ in range(p if text is None else len(p))]
        self.n_gen = sum(self.gen)
        first = next(k for k, (text, _) in enumerate(parts) if text is None) if self.n_gen else len(parts)
        self.prefix = "".join(text for text, _ in parts[:first])  # the given text before the first blank
        self.prefix_len = sum(len(p) for _, p in parts[:first])  # in tokens
        self.is_continuation = len(parts) == first + 1  # given text, then one blank: what an AR model can do

    def __len__(self):
        return len(self.ids)

    @classmethod
    def from_parts(cls, tok, pieces):
        """pieces: str (given text) or int (a blank of that many tokens), in order."""
        parts = []
        for p in pieces:
            if isinstance(p, str):
                if p:  # each piece encoded alone: the ids decode back to exactly this text
                    parts.append((p, list(tok.encode(p))))
            elif isinstance(p, int) and not isinstance(p, bool) and p >= 1:
                parts.append((None, p))
            else:
                raise UserError(f"a blank must be a whole number of tokens >= 1, got {p!r}")
        return cls(parts)

    def tensors(self, batch, device):
        """x (batch, L) long with the given ids (0 at blanks) and gen_mask (batch, L) bool, True at blanks."""
        x = torch.tensor(self.ids, dtype=torch.long, device=device).repeat(batch, 1)
        gm = torch.tensor(self.gen, dtype=torch.bool, device=device).repeat(batch, 1)
        return x, gm

    def fills(self, row, tok):
        """The decoded text of each blank, from one generated row (list of ids, length L)."""
        out, pos = [], 0
        for text, p in self.parts:
            n = p if text is None else len(p)
            if text is None:
                out.append(tok.decode(row[pos:pos + n]))
            pos += n
        return out

    def render(self, row, tok):
        """The full text: the given pieces verbatim, each blank replaced by its decoded fill."""
        fills = iter(self.fills(row, tok))
        return "".join(text if text is not None else next(fills) for text, _ in self.parts)


def parse_infill(text, tok):
    """--infill text -> Canvas. Raises UserError if there is no blank or a blank is empty."""
    pieces, pos = [], 0
    for m in BLANK.finditer(text):
        pieces.append(text[pos:m.start()])
        n = int(m.group(2)) if m.group(2) is not None else len(m.group(0))
        if n < 1:
            raise UserError(f"blank {m.group(0)} asks for 0 tokens: use [___:N] with N >= 1")
        pieces.append(n)
        pos = m.end()
    pieces.append(text[pos:])
    if len(pieces) == 1:
        raise UserError(f"--infill text has no blank: {BLANK_HELP}")
    return Canvas.from_parts(tok, pieces)


def build_canvas(cfg, tok, block_size, objective="mdlm"):
    """The canvas a config asks for, checked against the model before any work."""
    if cfg.infill:
        c = parse_infill(cfg.infill, tok)
    else:
        # verbatim, trailing newline included: every given character stays
        prefix = read_text(cfg.prefix_file, "--prefix_file", "give a UTF-8 text file") if cfg.prefix_file else cfg.prompt
        suffix = read_text(cfg.suffix_file, "--suffix_file", "give a UTF-8 text file") if cfg.suffix_file else ""
        c = Canvas.from_parts(tok, [prefix, cfg.gen_len, suffix])
    if objective == "ar" and not c.is_continuation:
        raise UserError("infilling and --suffix_file need a diffusion checkpoint: an AR model only continues a prompt")
    if objective == "bd3":
        if not c.is_continuation:
            raise UserError("infilling and --suffix_file need an mdlm checkpoint: block diffusion (bd3) is autoregressive "
                            "over blocks and only continues a prompt")
        return c  # any length: the block sampler slides its window past the context
    if len(c) > block_size and objective == "ar":
        raise UserError(f"prompt ({c.prefix_len} tokens) + --gen-len {c.n_gen} = {len(c)} exceeds the model's context "
                        f"of {block_size} tokens: shorten the prompt or use --gen-len {max(block_size - c.prefix_len, 1)}")
    if len(c) > block_size and not (c.is_continuation and cfg.semi_ar_length):
        what = (f"prompt ({c.prefix_len} tokens) + --gen-len {c.n_gen}" if c.is_continuation else
                f"given text ({len(c) - c.n_gen} tokens) + blanks ({c.n_gen} tokens)")
        fix = (f"shorten the prompt, use --gen-len {max(block_size - c.prefix_len, 1)}, or decode in blocks with "
               f"--semi-ar-length {max(1, block_size // 4)}" if c.is_continuation else "shorten the text or the blanks")
        raise UserError(f"{what} = {len(c)} exceeds the model's context of {block_size} tokens: {fix}")
    if len(c) > block_size and cfg.semi_ar_length >= block_size:
        raise UserError(f"--semi-ar-length {cfg.semi_ar_length} leaves no context in a window of {block_size} tokens: "
                        f"use --semi-ar-length {max(1, block_size // 4)}")
    n_blocks = -(-c.n_gen // cfg.semi_ar_length) if cfg.semi_ar_length else 1
    if not cfg.threshold and cfg.steps < n_blocks:
        raise UserError(f"--steps {cfg.steps} is fewer than the {n_blocks} blocks of --semi-ar-length {cfg.semi_ar_length}: "
                        f"use --steps {n_blocks} or more, or a longer --semi-ar-length")
    return c


def continuation(cfg, tok, prompt, gen_len, block_size):
    """The canvas of a plain continuation: prompt, then gen_len tokens (no infill, no prefix/suffix files)."""
    plain = replace(cfg, prompt=prompt, gen_len=gen_len, infill="", prefix_file="", suffix_file="")
    return build_canvas(plain, tok, block_size, cfg.objective)


# ----------------------------------------------------------------------------- sampling glue

class StepBar:
    """An on_step hook: a tqdm bar over the sampler's steps, with an ETA, on stderr when it is a terminal
    (and on=True). A context manager: the bar is gone when the block ends, however it ends."""

    def __init__(self, total, on=True, desc="sampling"):
        from tqdm import tqdm
        self.bar = tqdm(total=total, desc=desc, unit="step", leave=False, disable=None if on else True, dynamic_ncols=True)

    def __call__(self, info):
        self.bar.update(1)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.bar.close()


def chain(*hooks):
    """One on_step hook that calls each of the given ones (None ones left out); None if there are none."""
    hooks = [h for h in hooks if h is not None]
    return None if not hooks else hooks[0] if len(hooks) == 1 else (lambda info: [h(info) for h in hooks])


def ar_start_token(tok):
    """An AR model needs one token to condition on when the prompt is empty."""
    if tok.kind == "char":
        return tok.stoi.get("\n", 0)
    return tok.eot_id if tok.eot_id is not None else 0


def sampler_options(cfg):
    """sampler.sample's keyword switches, from a config."""
    return dict(order=cfg.order, tokens_per_step=cfg.tokens_per_step, remask=cfg.remask, remask_eta=cfg.remask_eta,
                threshold=cfg.threshold, block_length=cfg.semi_ar_length)


def describe_sampler(cfg):
    """One line naming every sampling setting in force."""
    if cfg.objective == "ar":
        how = "AR + KV cache"
    elif cfg.objective == "uniform":
        how = f"{cfg.steps} ancestral uniform-noise steps (every position redrawn each step)"
    elif cfg.threshold:
        how = f"threshold {cfg.threshold:g} (NFE adaptive, committed tokens final), order {cfg.order}"
    else:
        remask = f"remdm eta={cfg.remask_eta:g}" if cfg.remask == "remdm" else cfg.remask
        how = f"{cfg.steps} steps, {cfg.tokens_per_step} counts, order {cfg.order}, remask {remask}"
    if cfg.objective == "bd3":
        how = how.replace(f"{cfg.steps} steps", f"{min(cfg.steps, cfg.bd3_block)} steps per block")
        how = how.replace("schedule counts", "linear counts")  # sampler_bd3: no greedy last step per block
        how = f"block diffusion, blocks of {cfg.bd3_block} with a KV cache, " + how
    blocks = f", blocks of {cfg.semi_ar_length}" if cfg.semi_ar_length and cfg.objective != "ar" else ""
    return f"{how}{blocks}, temperature {cfg.temperature:g}, top_k {cfg.top_k}, top_p {cfg.top_p:g}"


@torch.no_grad()
def generate(model, tok, canvas, cfg, schedule, device, generator=None, on_step=None, num_samples=None):
    """Fill `canvas` (a continuation, infill blanks, prefix + suffix) with either objective's sampler.
    Returns (texts: each sample's text after the canvas's leading given text, tokens (B, L), stats); stats
    adds full_texts (given text verbatim, blanks filled), fills (per sample, per blank), prompt_tokens."""
    B = num_samples or cfg.num_samples
    model.eval()
    t0 = time.time()
    if cfg.objective == "ar":
        start = canvas.ids[:canvas.prefix_len] or [ar_start_token(tok)]
        if len(start) + canvas.n_gen > model.args.block_size:
            raise UserError(f"--gen-len {canvas.n_gen} plus a start token exceeds the context of {model.args.block_size}: "
                            f"use --gen-len {model.args.block_size - 1}")
        prompt_t = torch.tensor(start, device=device).repeat(B, 1)
        out = sample_ar(model, prompt_t, canvas.n_gen, cfg.temperature, cfg.top_k, cfg.top_p, generator)
        P, stats = len(start), dict(nfe=canvas.n_gen, nfe_per_sample=[canvas.n_gen] * B)
        full = [canvas.prefix + tok.decode(row[P:].tolist()) for row in out]
        fills = [[f[len(canvas.prefix):]] for f in full]
    elif cfg.objective == "bd3":
        prompt_t = torch.tensor(canvas.ids[:canvas.prefix_len], dtype=torch.long, device=device).repeat(B, 1)  # may be empty
        out, stats = sample_bd3(model, prompt_t, canvas.n_gen, cfg.bd3_block, schedule, tok.mask_id, cfg.steps,
                                cfg.temperature, cfg.top_k, cfg.top_p, generator=generator, on_step=on_step,
                                **sampler_options(cfg))
        P = canvas.prefix_len
        full = [canvas.render(row, tok) for row in out.tolist()]
        fills = [[f[len(canvas.prefix):]] for f in full]
    else:
        x, gen_mask = canvas.tensors(B, device)
        if cfg.objective == "uniform":
            out, stats = sample_uniform(model, x, gen_mask, schedule, tok.mask_id, cfg.steps, cfg.temperature, cfg.top_k,
                                        cfg.top_p, generator=generator, on_step=on_step)
        else:
            out, stats = sample(model, x, gen_mask, schedule, tok.mask_id, cfg.steps, cfg.temperature, cfg.top_k,
                                cfg.top_p, generator=generator, on_step=on_step, **sampler_options(cfg))
        P = canvas.prefix_len
        rows = out.tolist()
        full = [canvas.render(row, tok) for row in rows]
        fills = [canvas.fills(row, tok) for row in rows]
    stats["seconds"] = time.time() - t0
    stats.setdefault("seconds_per_sample", [stats["seconds"]] * B)
    stats.update(prompt_tokens=P, full_texts=full, fills=fills)
    return [f[len(canvas.prefix):] for f in full], out, stats
