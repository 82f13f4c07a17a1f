"""Watching the sampler's steps (utils.steps.Step): MP4 + GIF frames (video.py) and an HTML page
(page.py), recorded by one Trace; --live. inference.sample_once calls them from fill's on_step.

    python inference.py cpu --prompt "JULIET:"   # a new MP4 and GIF in artifacts/media/
    python inference.py cpu --live --html        # the canvas in the terminal; a page to scrub"""
import os
import shutil
import sys
import time
from contextlib import ExitStack
from itertools import groupby

import torch

from objectives import OBJECTIVES
from utils.steps import Step
from sampling.page import PageWriter
from sampling.video import TraceWriter
from utils.fileio import MEDIA, check_trace, fresh_path, trace_paths


def token_states(tok, ids, gen, revealed, remasked):
    """[(text, state)] per position of one sample: text None for [MASK], state from video.STATES."""
    texts = [None if tid == tok.mask_id else tok.token_text(tid) for tid in ids]
    return [(text, token_state(text, g, rev, rem)) for text, g, rev, rem in zip(texts, gen, revealed, remasked)]


def token_state(text, generated, revealed, remasked):
    """A position's state in a frame: prompt (given), remasked, mask, new (this step) or kept."""
    if not generated:
        return "prompt"
    if remasked:
        return "remasked"
    if text is None:
        return "mask"
    return "new" if revealed else "kept"


class Trace(ExitStack):
    """on_step: sample 0's steps as frames (tokens coloured by confidence, NFE and block on top)
    for a video (every cfg.trace_every passes) and a page (every step: scrubbed, not played), either
    None.
    seconds: the time spent recording. Sample in `with trace:` (no files on error)."""

    def __init__(self, tok, cfg, video=None, page=None):
        super().__init__()
        self.tok, self.T, self.video, self.page = tok, cfg.diffusion_steps, video, page
        self.writers = [(w, every) for w, every in ((video, cfg.trace_every), (page, 1)) if w is not None]
        for writer, _ in self.writers:
            self.push(writer)  # its __exit__: closed as `with` ends
        self.frames, self.drawn_done, self.seen_nfe, self.seconds = 0, False, 0, 0.0

    def frame(self, st, t, nfe, caption, writers):
        """Sample 0 of st as one frame (t: its header's time); a page gets top candidates too."""
        cells = token_states(self.tok, st.x[0].tolist(), st.gen_mask[0].tolist(), st.revealed[0].tolist(),
                             st.remasked[0].tolist())
        confidence = [c if state != "prompt" and text is not None else None
                      for (text, state), c in zip(cells, st.conf[0].tolist())]
        for writer in writers:
            top = {"top": self.top(st, writer.candidates)} if getattr(writer, "candidates", 0) else {}
            writer.add_frame([text for text, _ in cells], [state for _, state in cells], step=st.step,
                             t=t / self.T, nfe=nfe, confidence=confidence, caption=caption, **top)
        self.frames += 1

    def top(self, st, k):
        """{position: [(text, probability)]}: sample 0's k likeliest tokens where the step drew."""
        if st.laws is None:
            return {}
        at, logp = st.laws
        mine = at < st.x.size(1)  # sample 0's rows
        p, ids = logp[mine].exp().topk(min(k, logp.size(-1)), -1)
        return {int(i): [(self.tok.token_text(t), round(q, 4)) for t, q in zip(row_ids, row_p) if q > 0]
                for i, row_ids, row_p in zip(at[mine].tolist(), ids.tolist(), p.tolist())}

    def start(self, x, gen_mask):
        """The first frame, every writer's: x (B, L) as the sampler starts from it."""
        z = torch.zeros_like(gen_mask)
        first = Step(step=0, nfe=None, time=None, x=x, prev=x, gen_mask=gen_mask, revealed=z, remasked=z,
                     conf=torch.zeros(x.shape, dtype=torch.float64), finished=[False])
        self.frame(first, self.T, 0, "", [w for w, _ in self.writers])

    def __call__(self, st):
        if not self.writers:
            return
        # timed apart: the sampling's tokens/s leaves the recording out
        began = time.perf_counter()
        self.record(st)
        self.seconds += time.perf_counter() - began

    def record(self, st):
        if self.frames == 0:  # step 1's prev is where the sampler starts: [MASK]s, or uniform noise's x_T
            self.start(st.prev, st.gen_mask)
        nfe = int(st.nfe[0])
        if self.drawn_done or nfe == self.seen_nfe:
            return  # its final frame is drawn, or it sat the step out (threshold decoding)
        done = bool(st.finished[0])  # always a frame, drawn once
        self.seen_nfe, self.drawn_done = nfe, done
        writers = [w for w, every in self.writers if nfe % every == 0 or done]
        if writers:
            # the pass's count: the plan's, or what the threshold or bound let through
            caption = f"{int(st.revealed[0].sum())} revealed"
            if st.n_blocks > 1:
                caption = f"block {st.block + 1}/{st.n_blocks}, {caption}"
            self.frame(st, 0 if done else int(st.time[0]), nfe, caption, writers)


def chain(*hooks):
    """One on_step hook calling each given one (None left out); None if there are none."""
    hooks = [h for h in hooks if h is not None]
    if len(hooks) <= 1:
        return hooks[0] if hooks else None
    return lambda st: [h(st) for h in hooks]


def run_name(path):
    """The name a run's traces take: its folder's (artifacts/models/cpu/model.pt and an exported
    artifacts/export/cpu: cpu)."""
    path = os.path.abspath(path)
    return os.path.basename(path if os.path.isdir(path) else os.path.dirname(path))


def open_trace(cfg, opts, name, tok, replace=False):
    """The Trace cfg asks for (its titles name opts, the sampler), its paths checked before any
    sampling: a TraceWriter for
    cfg.viz_video (the GIF beside it) unless 'off', a PageWriter for --html; 'auto' (a bare --html)
    takes a new artifacts/media/NAME_k file no earlier trace holds. Frames sized at close."""
    check_trace(cfg, replace)
    video = page = None
    if cfg.viz_video != "off":
        auto = cfg.viz_video == "auto"
        mp4, gif = fresh_path(MEDIA, name, ".mp4", ".gif") if auto else trace_paths(cfg.viz_video)
        cols = 64 if cfg.tokenizer == "char" else 72
        title = trace_title(cfg, opts, cols)
        video = TraceWriter(mp4, gif, frame_ms=cfg.gif_frame_ms, cols=cols, title=title, reserved=auto)
    if cfg.html:
        auto = cfg.html == "auto"
        path = fresh_path(MEDIA, name, ".html")[0] if auto else cfg.html
        settings = f"{OBJECTIVES[cfg.objective].describe(cfg, opts)}, temperature {opts.law.temperature:g}"
        page = PageWriter(path, title=trace_title(cfg, opts, 200), settings=settings, frame_ms=cfg.gif_frame_ms,
                          reserved=auto)
    return Trace(tok, cfg, video, page)


def trace_title(cfg, opts, cols=64):
    """A cols-cell header: the sampler's settings off their defaults (its objective's brief
    describe) and the temperature, led by 'micro-dllm  T=100  ' if it fits."""
    obj = OBJECTIVES[cfg.objective]
    temp = f"temp {opts.law.temperature:g}"
    if opts.temperature_end_share != 1.0:  # falling as the canvas fills: name the last draws' too
        temp += f" to {opts.law.temperature * opts.temperature_end_share:.3g}"
    how = f"{obj.describe(cfg, opts, brief=True)}, {temp}"
    head = "micro-dllm  " if obj.EXACT else f"micro-dllm  T={cfg.diffusion_steps}  "
    return head + how if len(head + how) <= cols else how


def print_written(trace):
    """What a closed trace's writers wrote, after their warnings."""
    for writer, _ in trace.writers:
        res = writer.result
        for w in res["warnings"]:
            print(f"warning: {w}")
        paths = [res.get(k) for k in ("mp4", "gif", "html")]
        print(f"trace: {res['frames']} frames -> " + ", ".join(p for p in paths if p))


# --live: ANSI colours per token state, near the video's palette
ANSI = dict(prompt="\x1b[34m", mask="\x1b[90m", new="\x1b[1;30;43m", kept="", remasked="\x1b[1;37;41m")


class LiveView:
    """--live: sample 0's canvas redrawn in place each step (<= fps a second); text off a tty."""

    def __init__(self, tok, steps, stream=None, fps=0.0):
        self.tok, self.steps, self.out = tok, steps, stream or sys.stdout
        self.tty, self.lines, self.seen_nfe = self.out.isatty(), 0, 0
        # slept: seconds paused, for the caller's timing; shown: the last frame's time
        self.fps, self.slept, self.shown = fps, 0.0, None

    def pace(self):
        """At most fps frames a second on a terminal, whose frames are watched (off it: a log)."""
        wait = self.shown + 1 / self.fps - time.perf_counter() if self.fps > 0 and self.shown is not None else 0
        if wait > 0 and self.tty:
            time.sleep(wait)
            self.slept += wait
        self.shown = time.perf_counter()

    def start(self, ids, gen):
        """Step 0: the canvas's ids (lists), [MASK] where gen (a blank)."""
        z = [False] * len(ids)
        self.draw([self.tok.mask_id if blank else i for i, blank in zip(ids, gen)], gen, z, z, "step 0")

    def __call__(self, st):
        nfe = int(st.nfe[0])
        if nfe == self.seen_nfe:
            return  # sat the step out (threshold decoding)
        self.seen_nfe = nfe
        blocks = f", block {st.block + 1}/{st.n_blocks}" if st.n_blocks > 1 else ""
        self.draw(st.x[0].tolist(), st.gen_mask[0].tolist(), st.revealed[0].tolist(), st.remasked[0].tolist(),
                  f"step {nfe}/{self.steps or '?'}{blocks}")

    def draw(self, ids, gen, revealed, remasked, header):
        self.pace()
        cells = [(c, state) for text, state in token_states(self.tok, ids, gen, revealed, remasked)
                 for c in ("_" if text is None else text)]
        n_masked = sum(1 for tid, g in zip(ids, gen) if g and tid == self.tok.mask_id)
        header = f"{header}: {n_masked} of {sum(gen)} generated positions masked"
        if not self.tty:
            self.out.write(f"-- {header}\n{''.join(c for c, _ in cells)}\n")
            self.out.flush()
            return
        cols, rows = shutil.get_terminal_size((80, 24))
        lines = [[]]
        for c, state in cells:  # wrap by hand: the next frame must know how many lines to go up
            if c == "\n" or len(lines[-1]) >= cols - 1:
                lines.append([])
            if c != "\n":
                lines[-1].append((c, state))
        lines = lines[-(rows - 3):]  # taller than the terminal: show the end, where the work is

        def paint(state, text):
            return f"{ANSI[state]}{text}\x1b[0m" if ANSI[state] else text

        def painted(line):  # each run of one state painted at once
            return "".join(paint(s, "".join(c for c, _ in run)) for s, run in groupby(line, key=lambda cell: cell[1]))
        legend = " ".join(paint(s, w) for s, w in (("prompt", "given"), ("mask", "_ [MASK]"), ("new", "new"),
                                                   ("remasked", "re-masked")))
        body = "\n".join(painted(ln) for ln in lines)
        up = f"\x1b[{self.lines}F\x1b[J" if self.lines else ""  # up to the last frame's first line, clear below
        self.out.write(f"{up}\x1b[1m{header[:cols - 1]}\x1b[0m\n{legend}\n{body}\n")
        self.out.flush()
        self.lines = len(lines) + 2
