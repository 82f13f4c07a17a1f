"""What to generate: the canvas (given text and blanks from --prompt, --infill or --prefix_file and
--suffix_file), and fill(), which fills it with the objective's sampler and renders the text.

    python inference.py --checkpoint M.pt --infill "The cat [___] on the mat"   # 5 tokens
    python inference.py --checkpoint M.pt --infill "Once upon a [___:12]. The end."

Given text is encoded piece by piece and spliced back verbatim: every given character comes out as
given, char or BPE. [___:N] is N [MASK] tokens; a bare [___] one per marker character.
"""
import re
import time
from dataclasses import replace

import torch

from config import LIMITS
from objectives import OBJECTIVES
from utils.errors import UserError, clip
from utils.fileio import read_text

BLANK = re.compile(r"\[(_+)(?::(\d+))?\]")  # [___] or [___:12]
BLANK_HELP = "mark each gap with [___] (one token per marker character) or [___:N] (N tokens)"


class Canvas:
    """Given text and blanks in order: (text, ids) for given text, (None, n) for a blank."""

    def __init__(self, tok, pieces, note=""):
        """pieces, in order: str (given text) or int (a blank of that many tokens, >= 1)."""
        parts = []
        for p in pieces:
            if isinstance(p, str):
                if p:  # encoded alone: the ids decode back to exactly this text
                    parts.append((p, list(tok.encode(p))))
            else:  # a count the checks before kept within 1 and LIMITS' gen_len
                parts.append((None, p))
        self.parts, self.note = parts, note
        self.ids = [i for text, p in parts for i in (p if text is not None else [0] * p)]  # 0 at blanks
        self.gen = [text is None for text, p in parts for _ in range(p if text is None else len(p))]  # True at blanks
        self.n_gen = sum(self.gen)
        first = next(k for k, (text, _) in enumerate(parts) if text is None) if self.n_gen else len(parts)
        self.prefix = "".join(text for text, _ in parts[:first])  # the given text before the first blank
        self.prefix_len = sum(len(p) for _, p in parts[:first])  # in tokens
        self.is_continuation = len(parts) == first + 1  # given text, then one blank: all an AR can do

    def fills(self, row, tok):
        """Each blank's decoded text, from one generated row (a list of L ids)."""
        out, pos = [], 0
        for text, p in self.parts:
            if text is None:
                out.append(tok.decode(row[pos:pos + p]))
            pos += p if text is None else len(p)
        return out

    def render(self, row, tok):
        """The full text: the given pieces verbatim, each blank replaced by its fill."""
        fills = iter(self.fills(row, tok))
        return "".join(text if text is not None else next(fills) for text, _ in self.parts)


def parse_infill(text, tok):
    """--infill text -> Canvas; UserError without a blank or with an empty one."""
    pieces, pos = [], 0
    for m in BLANK.finditer(text):
        fix = f"use [___:N] with N from 1 to {LIMITS['gen_len'][0]:,}"
        count = m.group(2)
        if count is None:
            n = len(m.group(0))
        elif len(count.lstrip("0")) > 100:  # never read: 5,000 digits are past Python's int conversion
            raise UserError(f"blank {clip(m.group(0))} asks for a {len(count):,}-digit count of tokens: {fix}")
        else:
            n = int(count)
        if not 1 <= n <= LIMITS["gen_len"][0]:  # 10^23 made a list past any memory
            raise UserError(f"blank {m.group(0)} asks for {n:,} tokens: {fix}")
        pieces += [text[pos:m.start()], n]
        pos = m.end()
    pieces.append(text[pos:])
    if len(pieces) == 1:
        raise UserError(f"--infill text has no blank: {BLANK_HELP}")
    return Canvas(tok, pieces)


def build_canvas(cfg, opts, tok, block_size, fit=False):
    """The canvas a config asks for (its text keys; opts: the sampler, diffusion.SamplerOptions),
    checked against the model (cfg.objective's) before any work; fit: an untyped --gen-len cut to
    the room the context leaves, said in canvas.note."""
    obj = OBJECTIVES[cfg.objective]
    semi_ar = obj.SEMI_AR and opts.semi_ar_length
    if cfg.infill:
        c = parse_infill(cfg.infill, tok)
    else:
        # verbatim, trailing newline included
        hint = "give a UTF-8 text file"
        prefix = read_text(cfg.prefix_file, "--prefix_file", hint) if cfg.prefix_file else cfg.prompt
        suffix = read_text(cfg.suffix_file, "--suffix_file", hint) if cfg.suffix_file else ""
        c = Canvas(tok, [prefix, cfg.gen_len, suffix])
        given = len(c.ids) - c.n_gen
        room = block_size - given
        # (a sliding window needs no cut; no room: refused below)
        if fit and not (obj.ANY_LENGTH or semi_ar) and 1 <= room < c.n_gen:
            note = (f"note: {given} given token(s) + --gen-len {cfg.gen_len} (the default) exceed the model's "
                    f"context of {block_size}: generating {room} (give --gen-len to choose)")
            c = Canvas(tok, [prefix, room, suffix], note)
    if obj.CONTINUES_ONLY and not c.is_continuation:
        kind = "an AR model" if obj.EXACT else f"objective={cfg.objective}"
        raise UserError(f"infilling and --suffix_file need a masked diffusion checkpoint (mdlm or uniform): {kind} "
                        f"only continues a prompt")
    if opts.dual_sample and not (c.is_continuation and c.prefix_len):  # refused here, before any seed is drawn
        raise UserError("--dual_sample continues a prompt left to right: give one, and no given text after the blank")
    if obj.ANY_LENGTH:
        return c  # its sampler slides a window past the context
    size = len(c.ids)  # given tokens and blanks
    if size > block_size and not (c.is_continuation and semi_ar):
        given = size - c.n_gen
        # (--infill's own words: its blanks, never --gen-len, which it refuses)
        what = (f"prompt ({given} tokens) + --gen-len {c.n_gen}" if c.is_continuation and not cfg.infill else
                f"given text ({given} tokens) + blanks ({c.n_gen} tokens)")
        # each way out one the same command then takes (--infill sets its own length)
        fixes = ["shorten the text or the blanks" if cfg.infill else "shorten the given text"]
        if given < block_size and not cfg.infill:
            fixes.append(f"use --gen-len {block_size - given}")
        if c.is_continuation and obj.SEMI_AR and "semi_ar_length" not in obj.unread(cfg, opts):
            length = max(1, block_size // 4)  # a quarter window
            if obj.passes(cfg, opts, c.n_gen) is not None:  # longer where --steps are fewer than its blocks
                length = max(length, -(-c.n_gen // opts.steps))
            if length < block_size:
                fixes.append(f"decode in blocks with --semi-ar-length {length}")
        raise UserError(f"{what} = {size} exceeds the model's context of {block_size} tokens: {', or '.join(fixes)}")
    if size > block_size and opts.semi_ar_length >= block_size:
        raise UserError(f"--semi-ar-length {opts.semi_ar_length} leaves no context in a window of {block_size} "
                        f"tokens: use --semi-ar-length {max(1, block_size // 4)}")
    if obj.passes(cfg, opts, c.n_gen, c.prefix_len) is not None:  # its steps split over the blocks
        opts.check_blocks(opts.n_blocks(c.n_gen))
    return c


def continuation(cfg, opts, tok, prompt, gen_len, block_size):
    """The canvas of a plain continuation: prompt, then gen_len tokens."""
    plain = replace(cfg, prompt=prompt, gen_len=gen_len, infill="", prefix_file="", suffix_file="")
    return build_canvas(plain, opts, tok, block_size)


def start_token(tok):
    """What an AR conditions on when the prompt is empty: newline, or BPE's EOT."""
    return tok.stoi.get("\n", 0) if tok.kind == "char" else tok.eot_id  # a BPE always has one (check_specials)


def check_no_mask(rows, canvas, tok, objective):
    """Refuse a sample (rows: their ids) whose blanks still hold [MASK]: a sample is text."""
    for i, row in enumerate(rows):
        left = sum(t == tok.mask_id for t, blank in zip(row, canvas.gen) if blank)
        if left:
            raise UserError(f"sample {i} came back with {left} [MASK] token(s) in its text: the {objective} sampler "
                            f"left them undecided, or drew from non-finite logits (a damaged or diverged model)")


@torch.no_grad()
def fill(model, tok, canvas, cfg, opts, device, generator=None, on_step=None):
    """Fill `canvas` with cfg.objective's sampler, run by opts (diffusion.SamplerOptions), a batch
    of cfg.num_samples. Returns (texts after the leading given text, tokens (B, L), stats: the
    sampler's, with seconds and full_texts)."""
    B, obj, t0 = cfg.num_samples, OBJECTIVES[cfg.objective], time.time()
    model.eval()
    x = torch.tensor(canvas.ids, dtype=torch.long, device=device).repeat(B, 1)  # (B, L)
    gen_mask = torch.tensor(canvas.gen, dtype=torch.bool, device=device).repeat(B, 1)
    start = obj.EXACT and not canvas.prefix_len  # AR conditions on a start token when the prompt is empty
    if start:  # its window slides: the extra position needs no room
        x = torch.cat([torch.full((B, 1), start_token(tok), dtype=x.dtype, device=device), x], 1)
        gen_mask = torch.cat([torch.zeros_like(gen_mask[:, :1]), gen_mask], 1)
    out, stats = obj.sample(model, x, gen_mask, cfg, opts, tok.mask_id, generator, on_step)
    rows = out[:, int(start):].tolist()
    check_no_mask(rows, canvas, tok, cfg.objective)
    full = [canvas.render(row, tok) for row in rows]
    stats["seconds"] = time.time() - t0
    stats.setdefault("seconds_per_sample", [stats["seconds"]] * B)
    stats["full_texts"] = full
    return [f[len(canvas.prefix):] for f in full], out, stats
