"""Tests for the denoising-trace renderer (sampling/video.py): real MP4/GIF files, no mocks of the encoders.

Run: pytest tests/test_trace.py -q      (a few seconds on 2 CPU cores; MP4 checks skip without ffmpeg)
"""
import os
import re
import subprocess

import pytest
from PIL import Image

from sampling import video as trace
from sampling.video import STYLE, TraceWriter

FFMPEG = trace._find_ffmpeg()
needs_ffmpeg = pytest.mark.skipif(FFMPEG is None, reason="no ffmpeg (install imageio-ffmpeg)")


def mp4_info(path):
    """Decode the whole video with the same ffmpeg (proves it plays); return (frames, stderr)."""
    p = subprocess.run([FFMPEG, "-hide_banner", "-nostdin", "-i", str(path), "-map", "0:v:0", "-f", "null", "-"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return int(re.findall(r"frame=\s*(\d+)", p.stderr)[-1]), p.stderr


def char_frames(text="ROMEO:\nBut soft, what light through yonder window breaks?", n_frames=12, prompt=6):
    """A synthetic denoising run: reveal the non-prompt characters in n_frames steps (one remask too)."""
    n, frames, shown = len(text), [], set(range(prompt))
    order = sorted(range(prompt, n), key=lambda i: (i * 7919) % 101)  # fixed pseudo-random order
    per = -(-len(order) // n_frames)
    for k in range(n_frames):
        new = set(order[k * per:(k + 1) * per])
        remasked = {order[0]} if k == 3 else set()
        states = ["prompt" if i < prompt else "new" if i in new else "remasked" if i in remasked
                  else "kept" if i in shown else "mask" for i in range(n)]
        tokens = [text[i] if s in ("prompt", "new", "kept") else None for i, s in enumerate(states)]
        conf = [0.3 + 0.7 * ((i % 5) / 4) if s in ("new", "kept") else None for i, s in enumerate(states)]
        frames.append((tokens, states, conf))
        shown = (shown | new) - remasked
    return frames


def write_trace(tmp_path, frames, name="trace", **kw):
    kw.setdefault("frame_ms", 100)
    with TraceWriter(str(tmp_path / f"{name}.mp4"), str(tmp_path / f"{name}.gif"), title="test", **kw) as tw:
        for k, (tokens, states, conf) in enumerate(frames):
            tw.add_frame(tokens, states, step=k, t=1 - k / len(frames), nfe=k + 1, confidence=conf,
                         caption="char" if k % 2 else "")
    return tw, tw.result


def check_gif(path, n_frames, frame_ms, last_ms):
    with Image.open(path) as im:
        assert im.n_frames == n_frames  # one GIF frame per add_frame call; the hold is a longer duration
        size, durations = im.size, []
        for k in range(im.n_frames):
            im.seek(k)
            assert im.size == size
            durations.append(im.info["duration"])
    assert durations[:-1] == [frame_ms] * (n_frames - 1) and durations[-1] == last_ms
    return size


@needs_ffmpeg
def test_char_trace_writes_playable_mp4_and_gif(tmp_path):
    tw, res = write_trace(tmp_path, char_frames())
    assert res == {"mp4": str(tmp_path / "trace.mp4"), "gif": str(tmp_path / "trace.gif"),
                   "frames": 12, "warnings": []}
    # frame_ms=100 and the default 1.5 s hold: the last frame fills ceil(1500/100) = 15 slots, i.e. it
    # is written 14 extra times, so the MP4 has 12 + 14 = 26 frames; the GIF gives it duration 1500 ms.
    assert tw.hold_frames == 15
    frames, log = mp4_info(res["mp4"])
    assert frames == 12 + 14
    assert "h264" in log and "yuv420p" in log
    w, h = check_gif(res["gif"], 12, 100, 1500)
    assert w % 2 == 0 and h % 2 == 0 and f"{w}x{h}" in log  # same size in both outputs
    assert sorted(os.listdir(tmp_path)) == ["trace.gif", "trace.mp4"]  # no temp files left


@needs_ffmpeg
def test_bpe_tokens_newlines_control_chars_and_overflow(tmp_path):
    words = ["Once", " upon", " a", " time", ",", "\n", " there", "\twas", " a", " tiny", "\x00", "",
             " model", " that", " learned", " to", " denoise", ".", "\n\n", "The", " end"]
    frames = []
    for k in range(12):
        states = ["prompt" if i < 2 else "new" if i % 12 == k else "kept" if i % 12 < k else "mask"
                  for i in range(len(words))]
        tokens = [w if s != "mask" else None for w, s in zip(words, states)]
        frames.append((tokens, states, None))
    # a last frame far longer than the grid the first frame fixed: clipped with an ellipsis, same size
    frames.append((words * 8, ["kept"] * len(words) * 8, None))
    tw, res = write_trace(tmp_path, frames, cols=24)
    assert res["frames"] == 13 and res["warnings"] == []
    assert mp4_info(res["mp4"])[0] == 13 + tw.hold_frames - 1
    check_gif(res["gif"], 13, 100, 1500)


def test_the_last_frame_shows_the_whole_sample_however_tall_it_grows(tmp_path):
    """close() sizes the grid to the tallest frame: a sample whose newlines make it taller than its all-[MASK] start
    (which clipped it behind a '...' when the first frame fixed the size) is drawn whole, its last line included."""
    lines = ["ROMEO:", *(f"line {i}" for i in range(14)), "THE END"]
    tokens = list("\n".join(lines))
    states = ["prompt"] * 6 + ["kept"] * (len(tokens) - 6)
    with TraceWriter(None, str(tmp_path / "t.gif"), cols=64) as tw:
        tw.add_frame(tokens[:6] + [None] * (len(tokens) - 6), states[:6] + ["mask"] * (len(tokens) - 6), 0, 1.0, 0)
        tw.add_frame(tokens, states, 1, 0.0, 1)
    assert tw.rows == len(lines) and tw.result["frames"] == 2  # one row a line, the last one too
    img = tw.render(tokens, states)
    y = tw.top + (tw.rows - 1) * tw.ch  # the last line's row: "THE END" drawn there
    inked = {c for _, c in img.crop((tw.m, y, tw.m + int(7 * tw.adv), y + tw.ch)).getcolors(1 << 16)}
    assert inked - {trace.PAGE}, "the sample's last line is not drawn"
    with Image.open(tmp_path / "t.gif") as gif:
        gif.seek(1)
        assert gif.size == tw.size  # the file's last frame is that grid


def test_states_render_differently(tmp_path):
    tw = TraceWriter(None, None, cols=16)
    tokens = list("abcd")

    def frame(state, conf=None):
        states = ["kept", state, "kept", "kept"]
        return tw.render([t if state in ("prompt", "new", "kept") or i != 1 else None for i, t in enumerate(tokens)],
                         states, confidence=None if conf is None else [None, conf, None, None]).tobytes()
    images = {s: frame(s) for s in trace.STATES}
    assert len(set(images.values())) == len(images)  # every state looks different
    assert frame("kept", 0.1) != frame("kept", 0.9) and frame("new", 0.1) != frame("new", 0.9)
    # the 'new' highlight colour is painted only when a cell is 'new' (legend swatch excluded: crop it)
    h = tw.size[1] - tw.m - tw.ch
    crop = lambda b: Image.frombytes("RGB", tw.size, b).crop((0, 0, tw.size[0], h))  # noqa: E731
    assert STYLE["new"][1] in {c for _, c in crop(images["new"]).getcolors(1 << 16)}
    assert STYLE["new"][1] not in {c for _, c in crop(images["kept"]).getcolors(1 << 16)}


def test_without_ffmpeg_writes_gif_and_warns(tmp_path, monkeypatch):
    monkeypatch.setattr(trace, "_find_ffmpeg", lambda: None)
    _, res = write_trace(tmp_path, char_frames(n_frames=5))
    assert res["mp4"] is None and res["gif"] == str(tmp_path / "trace.gif") and res["frames"] == 5
    assert len(res["warnings"]) == 1 and "no ffmpeg found" in res["warnings"][0]
    check_gif(res["gif"], 5, 100, 1500)
    assert os.listdir(tmp_path) == ["trace.gif"]  # no MP4 and no temp files


def _existing_outputs(tmp_path):
    out = tmp_path / "sub"
    out.mkdir()
    for name in ("trace.mp4", "trace.gif"):
        (out / name).write_bytes(b"old " + name.encode())
    return out


def test_exception_inside_context_replaces_nothing(tmp_path):
    out = _existing_outputs(tmp_path)
    with pytest.raises(KeyError):
        with TraceWriter(str(out / "trace.mp4"), str(out / "trace.gif"), frame_ms=100) as tw:
            for tokens, states, conf in char_frames(n_frames=3):
                tw.add_frame(tokens, states, step=0, t=1.0, nfe=1, confidence=conf)
            raise KeyError("sampler crashed")
    assert (out / "trace.mp4").read_bytes() == b"old trace.mp4"
    assert (out / "trace.gif").read_bytes() == b"old trace.gif"
    assert sorted(os.listdir(out)) == ["trace.gif", "trace.mp4"]


def test_ffmpeg_failure_raises_with_its_stderr(tmp_path, monkeypatch):
    fake = tmp_path / "ffmpeg"  # a real process that fails the way a broken ffmpeg would
    fake.write_text("#!/bin/sh\necho 'Unknown encoder libx264' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setattr(trace, "_find_ffmpeg", lambda: str(fake))
    out = _existing_outputs(tmp_path)
    with pytest.raises(RuntimeError, match=r"(?s)ffmpeg exited with code 1.*Unknown encoder libx264"):
        write_trace(out, char_frames(n_frames=4))
    assert (out / "trace.mp4").read_bytes() == b"old trace.mp4"
    assert (out / "trace.gif").read_bytes() == b"old trace.gif"
    assert sorted(os.listdir(out)) == ["trace.gif", "trace.mp4"]


def test_parent_dirs_created_and_zero_frames(tmp_path):
    with TraceWriter(str(tmp_path / "a" / "b" / "t.mp4"), str(tmp_path / "a" / "t.gif")) as tw:
        pass
    assert tw.result["mp4"] is None and tw.result["gif"] is None and tw.result["frames"] == 0
    assert tw.result["warnings"]
    _, res = write_trace(tmp_path / "x" / "y", char_frames(n_frames=2))
    assert os.path.isfile(res["gif"])


@pytest.mark.parametrize("argv, title", [
    (["cpu", "--remask=none"], "micro-dllm  T=1000  64 steps, order random, remask none, temp 1"),
    (["cpu"], "64 steps, order random, remdm cap eta 0.05, temp 1"),  # ReMDM names its schedule
    (["baby"], "48 steps, order random, remask none, temp 1 to 0.1"),
    (["baby_bd3"], "micro-dllm  T=1000  bd3 L'=4, drafts checked by its AR, temp 1"),
    (["baby_bd3", "--bd3_speculate=false"], "bd3 L'=4, 4 steps/block, order l2r, remask none, temp 1"),
    (["baby_bd3", "--bd3_ar=0"], "bd3 L'=4, 4 steps/block, order l2r, remask none, temp 1"),  # speculation needs --bd3_ar
    (["cpu_bd3"], "bd3 L'=4, 4 steps/block, order l2r, remask none, temp 1"),  # too long for the lead: settings first
    (["cpu", "--objective=uniform", "--time_cond=learned"], "micro-dllm  T=1000  uniform noise, 64 steps, temp 1"),
    (["cpu", "--order=confidence", "--remask=remdm", "--tokens_per_step=linear", "--temperature=0.8"],
     "64 steps, linear counts, remdm cap eta 0.05, temp 0.8"),
    (["cpu", "--remask_eta=0.02"], "64 steps, order random, remdm cap eta 0.02, temp 1"),
    (["cpu", "--order=margin", "--remask=none", "--threshold=0.9", "--semi_ar_length=32"], "threshold 0.9, order margin, semi-AR 32, temp 1"),
    (["baby", "--order=entropy", "--entropy_bound=0.5"], "entropy bound 0.5, order entropy, temp 1 to 0.1"),
    (["cpu", "--order=confidence", "--remask=refine"], "micro-dllm  T=1000  64 steps, temp 1"),  # the reference sampler
])
def test_the_trace_header_names_each_sampler_setting(argv, title):
    from configurator import get_config
    from diffusion import SamplerOptions
    from sampling.trace import trace_title
    cfg = get_config(argv)
    got = trace_title(cfg, SamplerOptions.from_config(cfg))
    assert got.endswith(title) and len(got) <= 64  # one line of the 64-cell char frame


def test_a_long_header_wraps_and_the_legend_shows_both_shades_of_kept_text():
    """The info line under the title wraps onto as many lines as it needs (the race's caption was cut at the frame's
    edge), the grid below it; the legend has a swatch for kept text drawn at p ~ 1 and one at p ~ 0 (the two inks
    a kept token shades between), each where its label says."""
    caption = " ".join(f"word{i}" for i in range(60))  # ~420 characters: seven lines of 64
    tw = TraceWriter(None, None, cols=64)
    img = tw.render(list("ab"), ["kept", "kept"], nfe=None, caption=caption)
    assert " ".join(tw._wrap(caption)) == caption and tw.info_rows == len(tw._wrap(caption)) >= 6
    assert tw.top == tw.m + (1 + tw.info_rows) * tw.ch + tw.m  # the grid starts below the last header line
    last = tw.m + tw.info_rows * tw.ch  # the header's last line: inked
    assert {c for _, c in img.crop((tw.m, last, tw.size[0] - tw.m, last + tw.ch)).getcolors(1 << 16)} - {trace.PAGE}
    y, col, inks = tw.size[1] - tw.m - tw.ch, 0, {}
    for (state, conf), label in trace.LEGEND.items():
        x = tw.m + int(col * tw.adv)
        inks[label] = {c for _, c in img.crop((x, y, x + int(tw.adv), y + tw.ch)).getcolors(1 << 16)}
        col += len(label) + 4
    assert STYLE["kept"][0] in inks["kept p~1"] and trace.LOW_CONF_INK in inks["kept p~0"]
