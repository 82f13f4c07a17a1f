"""How quickly the served page starts, shows its first frame and plays its frames (issue 96): `inference.py PRESET
--serve` timed from outside, as a browser meets it, and the cost of streaming a frame a step inside a draw.

Three figures, each a median with its lowest and highest:
- start-up: seconds from launching `python inference.py PRESET --serve --port 0` to its "serving http://" line
  (both lanes read), over --starts fresh processes;
- time to first frame: from sending POST /draw to receiving the first 'frame' event, over --draws draws of the
  page's default knobs (seeds 0, 1, ...), on one server;
- frames a second: the served lane's frames over the seconds from its first frame to its 'done' event, as received.
Then, in this process: the served lane's draw timed with the page's frame hook (events to a sink that drops them)
and without any hook, in turns over the same seeds: the share of a draw the frames cost, before the socket.

    OMP_NUM_THREADS=1 python dev/bench_serve.py cpu --starts 3 --draws 21

Run it from the repository root (a preset's run is read there, or the shipped weights in its place).
"""
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from config import PRESETS  # noqa: E402
from utils.cli import ArgParser, at_least  # noqa: E402
from utils.errors import run_cli  # noqa: E402
from utils.fileio import require_checkpoints  # noqa: E402


def spread(values, fmt="{:.3f}"):
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def start(preset):
    """(process, port, seconds to its serving line)."""
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, os.path.join(ROOT, "inference.py"), preset, "--serve", "--port", "0"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in p.stdout:
        if line.startswith("serving http://"):
            return p, int(re.search(r":(\d+)/", line)[1]), time.perf_counter() - t0
    raise SystemExit(p.stderr.read())


def one_draw(port, knobs):
    """(seconds to the first frame, the served lane's frames a second, its frames) of one draw, as received."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    t0 = time.perf_counter()
    conn.request("POST", "/draw", json.dumps(knobs), {"Content-Type": "application/json"})
    response = conn.getresponse()
    first, done, frames, name = None, None, 0, None
    for raw in iter(response.readline, b""):
        line = raw.decode().strip()
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: ") and json.loads(line[6:]).get("lane") == 0:
            now = time.perf_counter()
            if name == "frame":
                frames += 1
                first = first or now
            elif name == "done":
                done = now
    conn.close()
    return first - t0, (frames - 1) / (done - first), frames


def frame_cost(preset, seeds):
    """(seconds with the page's frame hook, seconds without) of the served lane's draw at each seed, in turns."""
    import inference
    from sampling import serve
    argv = [preset, "--serve", "--race", "off"]
    cmd = inference.parse(argv)  # the command line, read once
    lanes = serve.open_lanes(cmd, cmd.over()[0], inference.load)
    with_hook, without = [], []
    for seed in seeds:
        knobs = dict(prompt=lanes[0].cfg.prompt or "ROMEO:", seed=seed)
        lane, cfg, opts, canvas = serve.jobs_for(lanes, knobs)[0]
        for hooked in (True, False):
            g = inference.torch.Generator().manual_seed(seed)
            hook = serve.Frames(lambda *a: None, 0, lane.run["tok"], threading.Event()) if hooked else None
            t0 = time.perf_counter()
            with lane.run["ctx"]:
                inference.fill(lane.run["model"], lane.run["tok"], canvas, cfg, opts, lane.run["device"], g, hook)
            (with_hook if hooked else without).append(time.perf_counter() - t0)
    return with_hook, without


def main(argv):
    ap = ArgParser(prog="dev/bench_serve.py", description=__doc__.split("\n")[0])
    ap.add_argument("preset", choices=list(PRESETS), help="the preset served (its run, or the shipped weights)")
    ap.add_argument("--starts", type=at_least(1), default=3, help="fresh processes timed to their serving line")
    ap.add_argument("--draws", type=at_least(1), default=21, help="draws timed on one server, seeds 0, 1, ...")
    a = ap.parse_args(argv)
    require_checkpoints([PRESETS[a.preset]["checkpoint"]], "give a preset you trained or whose weights ship")
    from utils.dist import machine, run_queue
    starts, ttff, fps, ready = [], [], [], []
    for k in range(a.starts):
        p, port, seconds = start(a.preset)
        starts.append(seconds)
        if k == 0:  # the draws, on the first server
            page = http.client.HTTPConnection("127.0.0.1", port)
            page.request("GET", "/")
            html = page.getresponse().read().decode()
            knobs = json.loads(re.search(r'application/json">(.*?)</script>', html, re.S)[1])["knobs"]
            one_draw(port, {**knobs, "seed": 0})  # a warm-up
            for seed in range(a.draws):
                ready.append(run_queue())
                first, rate, frames = one_draw(port, {**knobs, "seed": seed})
                ttff.append(first)
                fps.append(rate)
        p.terminate()
        p.wait()
    print(f"{a.preset} --serve on {machine()}, {os.cpu_count()} cores, OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', '-')}; threads ready to run before each draw: {spread(ready, '{:g}')}; "
          f"knobs {knobs}")
    print(f"start-up to the serving line: {spread(starts, '{:.2f}')} s over {a.starts} starts")
    print(f"time to first frame: {spread([t * 1000 for t in ttff], '{:.1f}')} ms; frames a second: "
          f"{spread(fps, '{:.0f}')} ({frames} frames a draw), over {a.draws} draws")
    hooked, bare = frame_cost(a.preset, range(a.draws))
    ratios = [h / b for h, b in zip(hooked, bare)]
    print(f"a draw with the frame hook / without: {spread(ratios)} (draw {spread(bare)} s without)")


if __name__ == "__main__":
    run_cli(main)
