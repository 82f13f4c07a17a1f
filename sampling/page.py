"""The trace as one self-contained HTML page (inference.py --html): trace_page.html beside this
file, with the steps as JSON; a slider walks them, hovering a position shows its top candidates.

    python inference.py baby --html   # a new page in artifacts/media/
    with PageWriter("trace.html", title="mdlm 64 steps") as page: page.add_frame(...)  # trace.py
"""
import json
import os

from utils.fileio import atomic_open, drop_if_empty

TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "trace_page.html")


class PageWriter:
    """video.TraceWriter's twin whose frames become one HTML file at close (on an error, none)."""
    candidates = 5  # the top candidates kept per predicted position (Trace reads it)

    def __init__(self, path, title="", settings="", frame_ms=180, reserved=False):
        self.path, self.title, self.settings, self.frame_ms = path, title, settings, frame_ms
        self.reserved = reserved  # path is fresh_path's empty placeholder: removed if no page replaces it
        self.steps, self.result = [], None

    def add_frame(self, tokens, states, step, t, nfe, confidence=None, caption="", top=None):
        """One step: each position's text (None: [MASK]), state, confidence; top: its candidates."""
        conf = confidence or [None] * len(tokens)
        self.steps.append(dict(step=step, t=t, nfe=nfe, caption=caption, top=top or {},
                               cells=[[text, state, c] for text, state, c in zip(tokens, states, conf)]))

    def page(self):
        """The HTML: the template with the steps embedded ('</' escaped: no early end of script)."""
        data = dict(title=self.title, settings=self.settings, frame_ms=self.frame_ms, steps=self.steps)
        with open(TEMPLATE, encoding="utf-8") as f:
            template = f.read()
        return template.replace("/*TRACE_DATA*/", json.dumps(data, ensure_ascii=False).replace("</", "<\\/"))

    def close(self):
        """Write the page; -> {html, frames, warnings}."""
        if self.result is None:
            with atomic_open(self.path) as f:
                f.write(self.page())
            self.result = dict(html=self.path, frames=len(self.steps), warnings=[])
        return self.result

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):  # on error, write nothing
        if exc_type is None:
            self.close()
        elif self.reserved:
            drop_if_empty(self.path)
