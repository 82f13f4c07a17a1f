"""What to generate: a canvas of given text and blanks, from --prompt, --infill, or --prefix_file/--suffix_file.

    python inference.py --checkpoint M.pt --infill "The cat [___] on the mat"     # 5 tokens: one per marker character
    python inference.py --checkpoint M.pt --infill "Once upon a [___:12]. The end."
    python inference.py --checkpoint M.pt --prefix_file start.txt --suffix_file end.txt --gen-len 64

Given text is encoded piece by piece and spliced back verbatim around the decoded blanks, so every given
character comes out exactly as given, for the char and the BPE tokenizer alike. A blank is N [MASK]
tokens: [___:N] sets N; a bare [___] (any number of underscores) takes one token per character of the
marker, so for a char model the output lines up with what was typed.

    from utils.infill import Canvas
    c = Canvas.from_parts(tok, ["Once upon a ", 12, ". The end."])    # str = given text, int = a blank of N tokens
    x, gen_mask = c.tensors(batch=4, device="cpu")                      # (4, L) each; then sampler.sample(...)
    c.render(x[0].tolist(), tok), c.fills(x[0].tolist(), tok)          # the full text; the blanks' texts
"""
import re

import torch

from utils.errors import UserError

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


def read_text_file(path, flag):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()  # verbatim, trailing newline included: every given character stays
    except FileNotFoundError:
        raise UserError(f"--{flag} {path} not found: give a UTF-8 text file")
    except UnicodeDecodeError as e:
        raise UserError(f"--{flag} {path} is not UTF-8 text (byte {e.start}): convert it to UTF-8")
    except OSError as e:
        raise UserError(f"--{flag} {path} cannot be read ({e.strerror})")


def build_canvas(cfg, tok, block_size, objective="mdlm"):
    """The canvas a config asks for, checked against the model before any work."""
    if cfg.infill:
        c = parse_infill(cfg.infill, tok)
    else:
        prefix = read_text_file(cfg.prefix_file, "prefix_file") if cfg.prefix_file else cfg.prompt
        suffix = read_text_file(cfg.suffix_file, "suffix_file") if cfg.suffix_file else ""
        c = Canvas.from_parts(tok, [prefix, cfg.gen_len, suffix])
    if objective == "ar" and not c.is_continuation:
        raise UserError("infilling and --suffix_file need a diffusion checkpoint: an AR model only continues a prompt")
    if len(c) > block_size and objective == "ar":
        raise UserError(f"prompt ({c.prefix_len} tokens) + --gen-len {c.n_gen} = {len(c)} exceeds the model's context "
                        f"of {block_size} tokens: shorten the prompt or use --gen-len {max(block_size - c.prefix_len, 1)}")
    if len(c) > block_size and not (c.is_continuation and cfg.block_length):
        what = (f"prompt ({c.prefix_len} tokens) + --gen-len {c.n_gen}" if c.is_continuation else
                f"given text ({len(c) - c.n_gen} tokens) + blanks ({c.n_gen} tokens)")
        fix = (f"shorten the prompt, use --gen-len {max(block_size - c.prefix_len, 1)}, or decode in blocks with "
               f"--block-length {max(1, block_size // 4)}" if c.is_continuation else "shorten the text or the blanks")
        raise UserError(f"{what} = {len(c)} exceeds the model's context of {block_size} tokens: {fix}")
    if len(c) > block_size and cfg.block_length >= block_size:
        raise UserError(f"--block-length {cfg.block_length} leaves no context in a window of {block_size} tokens: "
                        f"use --block-length {max(1, block_size // 4)}")
    n_blocks = -(-c.n_gen // cfg.block_length) if cfg.block_length else 1
    if not cfg.threshold and cfg.steps < n_blocks:
        raise UserError(f"--steps {cfg.steps} is fewer than the {n_blocks} blocks of --block-length {cfg.block_length}: "
                        f"use --steps {n_blocks} or more, or a longer --block-length")
    return c
