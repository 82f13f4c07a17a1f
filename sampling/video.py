"""The trace video: the sampler's state at each step, drawn as a grid of monospace cells coloured
by state, streamed to an MP4 (ffmpeg) and a GIF. close() sizes the grid to the tallest frame, so
the finished sample is never clipped; the files replace their targets only when it succeeds.
    with TraceWriter("out.mp4", "out.gif", title="char MDM") as tw: tw.add_frame(...)  # trace.py
"""
import math
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from contextlib import suppress

from PIL import GifImagePlugin, Image, ImageChops, ImageDraw, ImageFont

from utils.fileio import drop_if_empty

STATES = ("prompt", "mask", "new", "kept", "remasked")
PAGE, HEAD_INK = (250, 250, 247), (55, 55, 65)
STYLE = {  # state -> (ink, cell background or None)
    "prompt": ((80, 80, 88), (222, 226, 234)), "mask": ((170, 170, 170), None),
    "new": ((15, 15, 15), (255, 186, 30)), "kept": ((25, 30, 55), None), "remasked": ((210, 25, 25), (255, 214, 214)),
    "label": (HEAD_INK, None)}  # label: text that is no token (scripts/race.py's lane captions)
LOW_CONF_INK = (120, 160, 220)  # 'kept' ink fades towards this as confidence -> 0
# the legend: (state, confidence) -> label; kept text is dark if drawn at p ~ 1, blue at p ~ 0
LEGEND = {("prompt", None): "prompt", ("mask", None): "mask", ("new", None): "new", ("kept", 1.0): "kept p~1",
          ("kept", 0.0): "kept p~0", ("remasked", None): "remasked"}
# Placeholders and stand-ins for control characters; all in DejaVu Sans Mono (matplotlib ships it).
GLYPH = dict(mask="_", remask="×", empty="∅")
VISIBLE = {i: "¤" for i in [*range(32), *range(127, 160)]} | {ord("\n"): "↵", ord("\t"): "→"}
NO_FFMPEG = "no ffmpeg found: install imageio-ffmpeg or put ffmpeg on PATH; wrote GIF only"


def _find_ffmpeg():
    """The system's ffmpeg (usually the fuller build), else imageio-ffmpeg's."""
    exe = shutil.which("ffmpeg")
    with suppress(Exception):  # not installed, or no binary for this platform
        import imageio_ffmpeg
        exe = exe or imageio_ffmpeg.get_ffmpeg_exe()
    return exe if exe and os.access(exe, os.X_OK) else None


def _load_fonts(size):
    """(regular, bold) DejaVu Sans Mono; matplotlib's copy, found on the path, not imported."""
    mpl = [os.path.join(p, "matplotlib", "mpl-data", "fonts", "ttf") for p in sys.path if p]
    for d in ["/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/TTF", "/usr/share/fonts/dejavu",
              "/Library/Fonts", os.path.expanduser("~/.fonts"), *mpl]:
        reg, bold = os.path.join(d, "DejaVuSansMono.ttf"), os.path.join(d, "DejaVuSansMono-Bold.ttf")
        if os.path.isfile(reg):
            f = ImageFont.truetype(reg, size)
            return f, (ImageFont.truetype(bold, size) if os.path.isfile(bold) else f)
    f = ImageFont.load_default(size=size)  # scalable since Pillow 10.1
    return f, f


def info_line(step, t, nfe, caption):
    """The header's second line: the step, its time and NFE, then the caption; a frame of no one
    step (nfe None: the race) shows its caption alone."""
    if nfe is None:
        return caption
    return f"step {step}  t={t:.3f}  NFE {nfe}" + (f"  |  {caption}" if caption else "")


def _mix(a, b, w):
    return tuple(round(x + (y - x) * min(1.0, max(0.0, float(w)))) for x, y in zip(a, b))


class TraceWriter:
    def __init__(self, video_path, gif_path, frame_ms=180, cols=64, title="", font_size=14, hold_ms=1500,
                 reserved=False):
        self.paths = {"mp4": video_path, "gif": gif_path}
        self.reserved = reserved  # video_path is fresh_path's empty placeholder: removed if nothing replaces it
        self.frame_ms, self.cols, self.title, self.rows, self.frames = int(frame_ms), int(cols), title, None, []
        self.hold_frames = max(1, math.ceil(hold_ms / self.frame_ms))  # the final sample's slots
        self.font_size, self.font = font_size, None  # loaded at the first render (_fonts)
        self.size, self.warnings, self.result, self._tmp = None, [], None, {}
        self._proc = self._err = self._gif = self._prev = self._pal = None

    def _layout(self, tokens, states, conf=None):
        """[(row, col, glyph, state, conf)]: wrap at cols, short tokens whole, break after "\\n"."""
        cells, r, c = [], 0, 0
        for i, (tok, st) in enumerate(zip(tokens, states)):
            chars = [None] if tok is None or st in ("mask", "remasked") else list(tok) or [""]
            if 0 < c and c + len(chars) > self.cols >= len(chars):
                r, c = r + 1, 0
            for ch in chars:
                if c >= self.cols:
                    r, c = r + 1, 0
                masked = GLYPH["remask" if st == "remasked" else "mask"]  # a [MASK]'s glyph, one cell
                shown = {10: " "} if st == "label" else VISIBLE  # a label's line break is no glyph
                g = masked if ch is None else ch.translate(shown)
                cells.append((r, c, g or GLYPH["empty"], st, None if conf is None else conf[i]))
                r, c = (r + 1, 0) if ch == "\n" else (r, c + 1)
        return cells

    def _fonts(self):
        """Load the fonts and the cell metrics once, at the first frame rendered or sized."""
        if self.font is None:
            self.font, self.bold = _load_fonts(self.font_size)
            # one glyph per cell at this pitch, so even a proportional fallback font lines up
            self.adv, self.ch = self.font.getlength("M"), self.font.getbbox("Mg|_")[3] + 4
            self.m = self.ch // 2  # margin

    def _fix_size(self, frames):
        """Fix the frame size (rawvideo needs one) to the tallest of frames [(tokens, states,
        info)]: its grid rows, and the header lines its info line wraps to."""
        self._fonts()
        self.rows = max([1] + [cells[-1][0] + 1 for cells in (self._layout(t, s) for t, s, _ in frames) if cells])
        # the cells a line holds: the grid's, or more for the legend
        self.fit = max(self.cols, sum(len(label) + 4 for label in LEGEND.values()))
        self.info_rows = max(len(self._wrap(info)) for _, _, info in frames)
        self.top = self.m + (1 + self.info_rows) * self.ch + self.m
        w = 2 * self.m + math.ceil(self.fit * self.adv)
        h = self.top + self.rows * self.ch + self.m + self.ch + self.m
        self.size = (w + w % 2, h + h % 2)  # yuv420p needs even dimensions

    def _wrap(self, info):
        """The header's info line as the lines it takes at the frame's width, broken at spaces."""
        return textwrap.wrap(info.replace("\n", " "), self.fit, break_on_hyphens=False) or [""]

    def _cell(self, d, y, col, glyph, st, conf=None):
        ink, bg = STYLE[st]
        if conf is not None and st == "new":
            bg = _mix(PAGE, bg, 0.25 + 0.75 * conf)
        elif conf is not None and st == "kept":
            ink = _mix(LOW_CONF_INK, ink, conf)
        x0, x1 = self.m + int(col * self.adv), self.m + int((col + 1) * self.adv)
        if bg:
            d.rectangle([x0, y, x1 - 1, y + self.ch - 1], fill=bg)
        if glyph != " ":
            d.text((x0, y + 2), glyph, font=self.bold if st == "new" else self.font, fill=ink)

    def render(self, tokens, states, step=0, t=0.0, nfe=0, confidence=None, caption=""):
        """One frame as an RGB image (the first fixes the size)."""
        self._fonts()
        info = info_line(step, t, nfe, caption)
        if self.size is None:
            self._fix_size([(tokens, states, info)])
        img = Image.new("RGB", self.size, PAGE)
        d = ImageDraw.Draw(img)
        d.text((self.m, self.m), self.title[:self.fit], font=self.bold, fill=HEAD_INK)
        for i, line in enumerate(self._wrap(info)):
            d.text((self.m, self.m + (1 + i) * self.ch), line, font=self.font, fill=HEAD_INK)
        for r, c, g, st, cf in self._layout(tokens, states, confidence):
            self._cell(d, self.top + r * self.ch, c, g, st, cf)
        y, col = self.size[1] - self.m - self.ch, 0
        for (st, cf), label in LEGEND.items():  # a swatch each: kept text at both ends of its confidence shade
            glyph = {"mask": GLYPH["mask"], "remasked": GLYPH["remask"]}.get(st, "a")
            self._cell(d, y, col, glyph, st, cf)
            d.text((self.m + int((col + 1.5) * self.adv), y + 2), label, font=self.font, fill=HEAD_INK)
            col += len(label) + 4
        return img

    def add_frame(self, tokens, states, step, t, nfe, confidence=None, caption=""):
        """Keep one frame's lists (a few KB); close() renders them all at one size."""
        self.frames.append((list(tokens), list(states), step, t, nfe, None if confidence is None else list(confidence),
                            caption))

    def _start(self):
        for key, path in self.paths.items():
            if path:  # beside the target, so os.replace is atomic (not mkstemp: 0600)
                d, base = os.path.split(os.path.abspath(path))
                os.makedirs(d, exist_ok=True)
                self._tmp[key] = os.path.join(d, f".{base}.{os.getpid()}-{id(self):x}.tmp")
        if "gif" in self._tmp:
            self._gif = open(self._tmp["gif"], "wb")
            # one palette for all frames, fitted to every state x confidence
            swatch = self.render(["Mg"] * 30, [s for s in STATES for _ in range(6)],
                                 confidence=[i / 5 for i in range(6)] * 5)
            self._pal = swatch.quantize(256, method=Image.Quantize.MEDIANCUT)
        if "mp4" in self._tmp:
            (w, h), exe = self.size, _find_ffmpeg()
            cmd = [exe, "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s",
                   f"{w}x{h}", "-r", f"1000/{self.frame_ms}", "-i", "-", "-an", "-c:v", "libx264", "-preset",
                   "veryfast", "-tune", "animation", "-crf", "20", "-pix_fmt", "yuv420p", "-movflags",
                   "+faststart", "-f", "mp4", self._tmp["mp4"]]
            if exe:  # stderr to a file: an unread pipe can fill up and stall ffmpeg
                self._err = tempfile.TemporaryFile()
                self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._err)
            else:
                self.warnings.append(NO_FFMPEG if self._gif else NO_FFMPEG.split(";")[0] + "; wrote nothing")
                del self._tmp["mp4"]

    def _ffmpeg(self, data=None):
        """Send frame bytes (None: end and wait); if ffmpeg failed, raise with its stderr."""
        with suppress(OSError):  # ffmpeg died: wait() below reports why
            if data is not None:
                self._proc.stdin.write(data)
                return
            self._proc.stdin.close()
        if self._proc.wait() != 0:
            self._err.seek(0)
            tail = self._err.read().decode(errors="replace").strip()[-1500:]
            self._abort()
            raise RuntimeError(f"ffmpeg exited with code {self._proc.returncode} writing {self.paths['mp4']}:\n{tail}")

    def _gif_write(self, img, ms):
        """Append a GIF frame: the whole image first, then only the changed rectangle."""
        p = img.quantize(palette=self._pal, dither=Image.Dither.NONE)
        idx = Image.frombytes("L", p.size, p.tobytes())  # compare palette indices, not luminance
        if self._prev is None:
            hdr, _ = GifImagePlugin.getheader(p, None, {"loop": 0, "duration": ms})
            self._gif.write(b"".join(hdr))
            box = (0, 0) + p.size
        else:  # a 1x1 patch if unchanged, so GIF frames == add_frame calls
            box = ImageChops.difference(self._prev, idx).getbbox() or (0, 0, 1, 1)
        self._gif.write(b"".join(GifImagePlugin.getdata(p.crop(box), offset=box[:2], duration=ms)))
        self._prev = idx

    def close(self):
        """Render and write every frame, then move the files; -> {mp4, gif, frames, warnings}."""
        if self.result is not None:
            return self.result
        try:
            if self.frames:
                self._fix_size([(*f[:2], info_line(*f[2:5], f[6])) for f in self.frames])
                self._start()
            for i, frame in enumerate(self.frames):
                img, slots = self.render(*frame), self.hold_frames if i == len(self.frames) - 1 else 1
                if self._proc is not None:
                    self._ffmpeg(img.tobytes() * slots)
                if self._gif is not None:
                    self._gif_write(img, self.frame_ms * slots)
            if self._proc is not None:
                self._ffmpeg(None)
                self._err.close()
            if self._gif is not None:
                self._gif.write(b";")  # GIF trailer
                self._gif.close()
            for key, tmp in self._tmp.items():  # only once every encode has succeeded
                os.replace(tmp, self.paths[key])
            done, self._tmp = self._tmp, {}
        except BaseException:
            self._abort()
            raise
        self.result = {k: self.paths[k] if k in done else None for k in ("mp4", "gif")}
        if self.reserved and self.result["mp4"] is None:  # no ffmpeg, or no frames
            drop_if_empty(self.paths["mp4"])
        self.result.update(frames=len(self.frames), warnings=self.warnings
                           + ([] if self.frames else ["no frames added: nothing written"]))
        return self.result

    def _abort(self):
        """Stop ffmpeg and delete temp files, leaving existing outputs; safe to call twice."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        for f in (self._gif, self._err, self._proc and self._proc.stdin):
            with suppress(OSError):
                f and f.close()
        for tmp in self._tmp.values():
            with suppress(FileNotFoundError):
                os.remove(tmp)
        self._tmp, self._prev = {}, None
        if self.reserved:
            drop_if_empty(self.paths["mp4"])
        self.result = dict(mp4=None, gif=None, frames=len(self.frames), warnings=self.warnings + ["aborted"])

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):  # on error, replace nothing
        self.close() if exc_type is None else self._abort()
