"""Watch it think, in a browser: a local page where you type a prompt and see the canvas fill a
frame a denoising step, beside a second lane (the AR) continuing the same prompt.

    python inference.py cpu --serve                   # http://127.0.0.1:8000/, the shipped weights
    python inference.py baby_bd3 --serve --race off   # one lane
    python inference.py cpu --serve --host 0.0.0.0    # every interface (said in one line)

http.server and server-sent events: the page (serve_page.html) posts its knobs as JSON to /draw
and reads a frame a step back. The lanes draw in turn, each alone on the machine as scripts/race.py
times them; the page replays both on one clock. One draw at a time; no file is written.

As Jupyter and Vite do against DNS rebinding, a Host not its address or localhost, and a POST from
another site's page (Origin), get a 403; on 0.0.0.0, any address and this machine's names are its.
"""
import errno
import ipaddress
import json
import os
import re
import socket
import sys
import threading
import time
import traceback
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch

from config import CHOICES
from configurator import parse, validate
from diffusion import SamplerOptions
from objectives import OBJECTIVES
from sampling.canvas import build_canvas, fill
from sampling.trace import token_state, token_states
from utils.dist import machine
from utils.errors import UserError, explain, say_interrupted
from utils.fileio import own_or_shipped, require_checkpoints, trace_asked
from utils.tokenizer import fingerprint, normalize_prompt
from utils.cli import key_help
from utils.values import TYPES, check_values

PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "serve_page.html")
# the page's fields, what it sets as flags: the prompt, a seed, the tokens, and every sampler key
# (its own row)
KNOBS = ("prompt", "seed", "gen_len", *SamplerOptions.keys())
MOST_PROMPT = 2_000  # characters: many times the shipped contexts (64 and 128)
MOST_GEN_LEN = 512  # tokens: a windowed sampler could hold the server for hours
MOST_BODY = 64 * 1024  # bytes: the longest prompt, escaped, fits
# what the page does not do: a stream of prompts, a batch (and a trace: fileio.trace_asked)
CLASHES = ("infill", "prefix_file", "suffix_file", "interactive", "prompts_file", "live", "num_samples")
RACE_LANES = ("artifacts/models/baby_ar/model.pt", "artifacts/models/baby_bd3/model.pt")  # --race auto, in order
TIMEOUT = 30  # seconds a client may stall a read or a write


class Stopped(Exception):
    """Ctrl-C: the draw ends at its next step."""


class Lane:
    """A model the page draws from: inference.load's (cfg, run)."""

    def __init__(self, cfg, run):
        self.cfg, self.run, self.name = cfg, run, run["name"]


# ---------------------------------------------------------------------------- start-up
def main(cmd, load):
    """inference.py --serve: answer until Ctrl-C (cmd: its command line, configurator.parse's)."""
    server = open_server(cmd, load)
    try:
        host, port = server.server_address[:2]
        host = f"[{host}]" if ":" in host else host
        print(f"serving http://{host}:{port}/ : open it in a browser; Ctrl-C stops", flush=True)
        server.serve_forever()
    except KeyboardInterrupt:
        drawing = server.stop()
        # run_cli's line, then no teardown: torch's, beside our threads, aborted now and then
        say_interrupted("the server stopped" + (", its draw ended mid-way" if drawing else ""))
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)


def open_server(cmd, load):
    """The server listening, its lanes loaded; the flags and the port checked before any model."""
    cfg, given = cmd.over()
    check_flags(cfg, given)
    server = listen(cfg.host, cfg.port)
    try:
        server.lanes = open_lanes(cmd, cfg, load)
        server.page = page(server.lanes)
        warm_up(server.lanes)
    except BaseException:
        server.server_close()
        raise
    if not is_local(cfg.host):
        print(f"warning: --host {cfg.host} serves every client that can reach this machine on port "
              f"{server.server_address[1]}, not only this one; drop --host to serve 127.0.0.1 alone")
    return server


def check_flags(cfg, given):
    """Refuse what the page cannot do, and each value the tables refuse (a port past 16 bits)."""
    clash = [k for k in CLASHES if k in given] + trace_asked(cfg, given)  # --viz-video off: no file, as here
    if clash:
        raise UserError(f"--serve draws one sample at a time in the page and writes no file: drop "
                        f"--{clash[0].replace('_', '-')}")
    check_values(cfg)
    if not cfg.host:
        raise UserError("--host is empty: give 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)")
    if cfg.race not in ("auto", "off"):  # its file, before the served model is read
        require_checkpoints([cfg.race], "give --race off (no second lane)")


def listen(host, port):
    """A Server bound to host:port, or one line saying why not and what works."""
    no_host = (f"--host {host} is no address of this machine: give 127.0.0.1 (this machine only) or 0.0.0.0 (every "
               f"interface)")
    try:
        return Server((host, port))
    except (socket.gaierror, UnicodeError):
        raise UserError(no_host) from None
    except OSError as e:
        if e.errno == errno.EADDRNOTAVAIL:
            raise UserError(no_host) from None
        # in use, or below 1024 without privileges
        raise UserError(f"cannot listen on port {port} of {host} ({e.strerror}): give another, or --port 0 for "
                        f"any free one (the start-up line names it)") from None


def is_local(host):
    """Whether every address host names is this machine's loopback (127.0.0.0/8, ::1)."""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except socket.gaierror:
        return False
    return all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


def open_lanes(cmd, cfg, load):
    """[the served lane, the race's], each read by inference.load. --race auto goes without a second
    lane, saying so, where it reads another tokenizer."""
    served = Lane(*load(cmd.plus(viz_video="off")))
    path = race_checkpoint(cfg, own_or_shipped(served.cfg.checkpoint))
    if path is None:
        return [served]
    device = ["--device", cfg.device, "--dtype", cfg.dtype]
    race = Lane(*load(parse(["--checkpoint", path, "--viz-video=off", *device])))
    if fingerprint(race.run["tok"]) != fingerprint(served.run["tok"]):
        why = f"{path} reads another tokenizer than {served.name}: a race continues one text"
        if cfg.race != "auto":
            raise UserError(f"--race {why}; give a checkpoint trained on the same text, or --race off")
        print(f"note: no second lane: {why} (give --race PATH of a model trained on the same text)")
        return [served]
    return [served, race]


def race_checkpoint(cfg, served):
    """--race's checkpoint; auto: the baby AR's (your run, else the shipped weights), baby_bd3's
    beside it; None for off."""
    if cfg.race == "off":
        return None
    if cfg.race != "auto":
        return cfg.race
    for path in RACE_LANES:
        found = own_or_shipped(path)
        if os.path.exists(found) and os.path.realpath(found) != os.path.realpath(served):
            return found
    return None


def warm_up(lanes):
    """An untimed draw a lane, as race.py's timing makes one: a model's first passes run slower
    (allocations), which would put the first lane behind on the first draw."""
    for lane in lanes:
        run = lane.run
        cfg = replace(lane.cfg, gen_len=min(lane.cfg.gen_len, MOST_GEN_LEN))
        canvas = build_canvas(cfg, run["opts"], run["tok"], run["model"].args.block_size, fit=True)
        with run["ctx"]:
            fill(run["model"], run["tok"], canvas, cfg, run["opts"], run["device"], torch.Generator())


def page(lanes):
    """serve_page.html with the lanes, the knobs' defaults, the caps, and a field a sampler key (its
    kind, choices and comment; greyed out, with the CLI's refusal, where the model reads none)."""
    cfg, run = lanes[0].cfg, lanes[0].run
    capped = replace(cfg, gen_len=min(cfg.gen_len, MOST_GEN_LEN))
    knobs = {k: getattr(cfg, k) for k in KNOBS}
    # as inference.py fits it
    knobs["gen_len"] = build_canvas(capped, run["opts"], run["tok"], run["model"].args.block_size, fit=True).n_gen
    obj = OBJECTIVES[cfg.objective]
    never = {*obj.IGNORES, *obj.unread(cfg, run["opts"])}  # its switches aside: those are refused as typed
    unread = {}
    for key in (k for k in SamplerOptions.keys() if k in never or k == "replay_steps"):
        try:
            validate(cfg, {key}, training=False)
        except UserError as e:
            unread[key] = str(e)
    sampler = [dict(key=k, kind=TYPES[k].__name__, choices=CHOICES.get(k), help=key_help(k))
               for k in SamplerOptions.keys()]
    about = [dict(name=lane.name, about=f"{lane.cfg.objective}, {lane.run['model'].num_params():,} parameters")
             for lane in lanes]
    data = dict(lanes=about, knobs=knobs, sampler=sampler, unread=unread,
                most=dict(prompt=MOST_PROMPT, gen_len=MOST_GEN_LEN), machine=machine(), context=context_of(lanes[0]))
    with open(PAGE, encoding="utf-8") as f:
        template = f.read()
    return template.replace("/*SERVE_DATA*/", json.dumps(data).replace("</", "<\\/")).encode("utf-8")


# ---------------------------------------------------------------------------- a request
def read_knobs(headers, rfile):
    """A POST /draw's JSON object of knobs."""
    if headers.get_content_type() != "application/json":  # which another site's form cannot send
        raise UserError(f"the request is {headers.get_content_type()}: send the knobs as JSON "
                        f"(Content-Type: application/json), as the page does")
    length = headers.get("Content-Length", "")
    if not length.isdigit():
        raise UserError("the request gives no Content-Length: send the knobs as one JSON object")
    if int(length) > MOST_BODY:
        raise UserError(f"the request is {int(length):,} bytes, past the {MOST_BODY:,} this page takes: send a "
                        f"prompt of at most {MOST_PROMPT:,} characters")
    body = rfile.read(int(length))
    try:
        knobs = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise UserError("the request is not UTF-8 text: send the prompt as UTF-8 (a browser does)") from None
    except ValueError as e:
        raise UserError(f"the request is not JSON ({e}): send one object of knobs, e.g. "
                        f'{{"prompt": "ROMEO:", "seed": 0}}') from None
    if not isinstance(knobs, dict):
        raise UserError('the request is JSON but not an object of knobs: send e.g. {"prompt": "ROMEO:", "seed": 0}')
    unknown = sorted(set(knobs) - set(KNOBS))
    if unknown:
        raise UserError(f"unknown knob {unknown[0]!r}: the page sets {', '.join(KNOBS)}")
    return knobs


def in_page_terms(message):
    """A refusal as the page shows it: a knob named by its field, not its flag (--gen-len 95 and
    gen_len: tokens 95; --steps: steps); a flag the page lacks is the server's command line's."""
    knobs = "|".join(k.replace("_", "[-_]") for k in KNOBS)
    message = re.sub(rf"--({knobs})\b", lambda m: m[1].replace("-", "_"), message)
    message = re.sub(r"(?<![\w-])(--[a-z])", r"the server's \1", message)
    return re.sub(r"\bgen_len\b", "tokens", message)


def context_of(lane):
    """The tokens lane's model reads, prompt included, where its sampler stops there; None where it
    writes past them (a sliding window, semi-AR blocks)."""
    obj = OBJECTIVES[lane.cfg.objective]
    if obj.ANY_LENGTH or (obj.SEMI_AR and lane.cfg.semi_ar_length):
        return None
    return lane.run["model"].args.block_size


def fit_tokens(lane, cfg, typed):
    """(cfg, a note or ''): tokens past the room lane's context leaves after the prompt are cut to
    it, as inference.py cuts an untyped --gen-len, or, typed, refused in the page's words."""
    context = context_of(lane)
    if context is None:
        return cfg, ""
    given = len(lane.run["tok"].encode(cfg.prompt))
    room = context - given
    if room < 1:
        raise UserError(f"the prompt is {given:,} tokens, and {lane.name} reads {context} at most, those it writes "
                        f"included: shorten the prompt")
    if cfg.gen_len <= room:
        return cfg, ""
    if typed:
        raise UserError(f"the prompt ({given} tokens) and tokens {cfg.gen_len} make {given + cfg.gen_len}, past "
                        f"{lane.name}'s context of {context}: set tokens to {room} or fewer, or shorten the prompt")
    return replace(cfg, gen_len=room), f"{room} tokens: the prompt's {given} fill the rest of its context of {context}"


def check_prompt(prompt):
    """Refuse a prompt that is no text, empty, past MOST_PROMPT or not encodable."""
    if not isinstance(prompt, str):  # missing (None), or a number
        raise UserError('the request has no prompt as text: type one (JSON: {"prompt": "ROMEO:"})')
    if not prompt:
        # no common start: the AR reads a start token there, diffusion nothing
        raise UserError("the prompt is empty: type some text for both lanes to continue")
    if len(prompt) > MOST_PROMPT:
        raise UserError(f"the prompt is {len(prompt):,} characters, past the {MOST_PROMPT:,} this page takes: "
                        f"shorten it")
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError:  # JSON's "\ud800": half a character
        raise UserError("the prompt holds half a character (an unpaired surrogate): send UTF-8 text") from None


def jobs_for(lanes, knobs):
    """[(lane, cfg, canvas)]: the knobs read as inference.py reads its flags (the same refusals);
    the race lane keeps its own sampler and takes the prompt, length and seed, as race.py's do."""
    check_prompt(knobs.get("prompt"))
    first = lanes[0]
    flags = [f"--{key}={value}" for key, value in knobs.items()]  # KEY=VALUE: a value is never a flag
    cfg, given = parse(flags).over(first.cfg)
    validate(cfg, given, training=False)
    if "gen_len" not in knobs:  # the box as the page showed it: page()'s capped count
        cfg = replace(cfg, gen_len=min(cfg.gen_len, MOST_GEN_LEN))
    if cfg.gen_len > MOST_GEN_LEN:
        raise UserError(f"tokens {cfg.gen_len:,} is past the {MOST_GEN_LEN} this page draws: set tokens to "
                        f"{MOST_GEN_LEN} or fewer")
    jobs = []
    for k, lane in enumerate(lanes):
        tok = lane.run["tok"]
        if k > 0:
            cfg = replace(lane.cfg, gen_len=cfg.gen_len, seed=cfg.seed, num_samples=1)
        cfg = replace(cfg, prompt=normalize_prompt(tok, knobs["prompt"]))
        cfg, note = fit_tokens(lane, cfg, typed="gen_len" in knobs)
        opts = SamplerOptions.from_config(cfg)  # the page's sampler, built once a request
        try:
            canvas = build_canvas(cfg, opts, tok, lane.run["model"].args.block_size)
        except UserError as e:
            raise UserError(f"{lane.name} cannot continue this prompt: {e}") from None
        canvas.note = note  # the page shows it beside the lane's sampler
        jobs.append((lane, cfg, opts, canvas))
    return jobs


def plan(cfg, opts, canvas):
    """(the sampler in a line, its passes or None): this module's one call of the objective."""
    obj = OBJECTIVES[cfg.objective]
    return obj.describe(cfg, opts), obj.passes(cfg, opts, canvas.n_gen, canvas.prefix_len)


# ---------------------------------------------------------------------------- a draw
class Frames:
    """on_step: a 'frame' event a step of sample 0 (the positions it changed, passes, seconds); the
    first step sends the canvas it started from first ([MASK]s, or uniform noise)."""

    def __init__(self, send, lane, tok, stopping):
        self.send, self.lane, self.tok, self.stopping = send, lane, tok, stopping
        self.frames, self.t0 = 0, time.perf_counter()

    def __call__(self, st):
        if self.stopping.is_set():
            raise Stopped()
        seconds = time.perf_counter() - self.t0
        x, gen = st.x[0], st.gen_mask[0]
        if self.frames == 0:
            z = [False] * len(x)
            cells = token_states(self.tok, st.prev[0].tolist(), gen.tolist(), z, z)
            self.send("start", dict(lane=self.lane, cells=cells))
        revealed, remasked = st.revealed[0], st.remasked[0]
        changed = (x != st.prev[0]) | revealed | remasked
        cells = []
        for i in changed.nonzero()[:, 0].tolist():
            tid = int(x[i])
            text = None if tid == self.tok.mask_id else self.tok.token_text(tid)
            cells.append([i, text, token_state(text, bool(gen[i]), bool(revealed[i]), bool(remasked[i]))])
        masked = int(((x == self.tok.mask_id) & gen).sum())
        self.send("frame", dict(lane=self.lane, passes=int(st.nfe[0]), seconds=seconds, masked=masked, cells=cells))
        self.frames += 1


def draw(k, job, send, stopping):
    """Lane k's sample as inference.py draws it (the same text), a frame a step; -> 'done' event."""
    lane, cfg, opts, canvas = job
    run = lane.run
    sampler, passes = plan(cfg, opts, canvas)
    send("lane", dict(lane=k, sampler=sampler, passes=passes, n_gen=canvas.n_gen, note=canvas.note))
    g = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    frames = Frames(send, k, run["tok"], stopping)  # its clock starts here
    with run["ctx"]:
        _, _, stats = fill(run["model"], run["tok"], canvas, cfg, opts, run["device"], g, frames)
    seconds = time.perf_counter() - frames.t0
    return dict(lane=k, text=stats["full_texts"][0], seconds=seconds, passes=stats["nfe_per_sample"][0],
                frames=frames.frames, tokens_per_s=canvas.n_gen / seconds, n_gen=canvas.n_gen)


# ---------------------------------------------------------------------------- who may ask
LOOPBACK = ("localhost", "127.0.0.1", "::1")


def host_name(value):
    """A Host header's name: lowercased, no port, brackets or final dot; None if no host[:port]."""
    m = re.fullmatch(r"(\[[\w:.%]+\]|[^\[\]:/@\s]+)(:\d{1,5})?", value)
    return None if m is None else m[1].strip("[]").rstrip(".").lower()


def is_address(name):
    """name's IP address, or None where it is a name."""
    try:
        return ipaddress.ip_address(name.split("%")[0])
    except ValueError:
        return None


def trusted_names(host):
    """The names a Host may give: the address served and the loopback's; served on every interface
    (0.0.0.0, ::), this machine's names too (and any address: host_refused)."""
    names = {host.lower(), *LOOPBACK}
    if is_address(host) and is_address(host).is_unspecified:
        names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
    return names


def host_refused(value, names):
    """Why a Host is refused, or None. A rebinding page sends its own site's name; an address, or a
    name of this server, is let in. The port is not compared: an ssh tunnel changes it, and a
    rebinding page cannot change the name. No Host (HTTP/1.0) is let in: no browser omits it."""
    if value is None:
        return None
    name = host_name(value)
    if name is None:
        return f"the request's Host {value[:80]!r} is no host[:port]"
    everywhere = "0.0.0.0" in names or "::" in names
    if name in names or (everywhere and is_address(name)):
        return None
    return f"the request names host {name[:80]!r}, not this server (another site's page pointed here is refused)"


def origin_refused(origin, host, names):
    """Why a POST's Origin is refused, or None: only this server's page draws (the MCP spec: check
    Origin). No Origin is let in, as Jupyter does: browsers send one on a cross-site POST; curl
    and scripts send none, and could send any Host."""
    if origin is None:
        return None
    own = re.fullmatch(r"http://([^/]+)", origin)
    if own and host_refused(own[1], names) is None and (host is None or own[1].lower() == host.lower()):
        return None
    return f"the request comes from a page of {origin[:80]!r}, not this server's own page, the one that draws"


# ---------------------------------------------------------------------------- the server
class Server(ThreadingHTTPServer):
    """Its lanes, its page, a lock held by the one draw running."""
    daemon_threads = True  # a connection's thread never holds up the exit

    def __init__(self, address):
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, Handler)
        self.lanes, self.page, self.draws, self.drawer = [], b"", 0, None  # drawer: the draw's thread
        self.names = trusted_names(address[0])  # who may ask
        home = address[0] if address[0] in LOOPBACK else "localhost"  # its page's address, in a refusal
        if ":" in home:
            home = f"[{home}]"
        self.home = f"http://{home}:{self.server_address[1]}/"
        self.busy, self.stopping = threading.Lock(), threading.Event()

    def stop(self):
        """Ctrl-C: end a draw at its next step and wait for its thread (one inside torch at exit
        aborts), close. -> whether a draw ran."""
        self.stopping.set()
        drawing = self.busy.locked()
        self.busy.acquire(timeout=10)  # held from here: no draw starts
        if self.drawer is not None:
            self.drawer.join(timeout=10)
        self.server_close()
        return drawing

    def handle_error(self, request, client_address):
        """A client gone (a reset, a stalled read) is quiet; a bug prints its traceback."""
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class Handler(BaseHTTPRequestHandler):
    """GET / is the page, POST /draw a draw's events; anything else a JSON error."""
    timeout = TIMEOUT

    def do_GET(self):
        if self.foreign():
            return
        if self.path.split("?")[0] != "/":
            return self.answer(404, f"no page at {self.path[:80]}: the page is /, and POST /draw draws")
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(self.server.page)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(self.server.page)

    do_HEAD = do_GET  # the page's headers alone

    def do_POST(self):
        if self.foreign():
            return
        if self.path != "/draw":
            return self.answer(404, f"no endpoint {self.path[:80]}: POST the knobs as JSON to /draw")
        try:
            knobs = read_knobs(self.headers, self.rfile)
        except UserError as e:  # the request's shape: JSON and its keys
            return self.answer(400, str(e))
        try:
            jobs = jobs_for(self.server.lanes, knobs)
        except UserError as e:  # a knob's value: shown in the page
            return self.answer(400, in_page_terms(str(e)))
        if not self.server.busy.acquire(blocking=False):
            return self.answer(409, "a draw is running (the server draws one at a time, so that each lane's "
                                    "speed is its own): press go again when it ends")
        try:
            self.stream(jobs)
        finally:
            self.server.busy.release()

    def stream(self, jobs):
        """The draw's events, lane after lane, until a client leaves or the server stops."""
        self.server.draws += 1
        self.server.drawer = threading.current_thread()
        n, prompt = self.server.draws, jobs[0][1].prompt
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        done = []
        try:
            for k, job in enumerate(jobs):
                done.append(draw(k, job, self.event, self.server.stopping))
                self.event("done", done[-1])
            self.event("end", {})
        except (ConnectionError, TimeoutError):
            print(f"draw {n}: the client left mid-draw; the draw stopped", flush=True)
            return
        except Stopped:
            self.quietly("error", dict(message="the server stopped (Ctrl-C on its terminal)"))
            return
        except Exception as e:
            message = explain(e)
            if message is None:  # a bug: its traceback on the terminal
                traceback.print_exc()
                message = f"the server failed ({type(e).__name__}: {e}); its terminal shows where"
            print(f"draw {n}: error: {message}", flush=True)
            self.quietly("error", dict(message=message))
            return
        lanes = "; ".join(f"{job[0].name} {d['n_gen']} tokens in {d['seconds']:.2f} s ({d['passes']} passes)"
                          for job, d in zip(jobs, done))
        print(f"draw {n}: {prompt[:40]!r}, seed {jobs[0][1].seed}: {lanes}", flush=True)

    def event(self, name, data):
        """One server-sent event (ASCII JSON: any text survives)."""
        self.wfile.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode("ascii"))

    def quietly(self, name, data):
        """An event to a client that may be gone already."""
        try:
            self.event(name, data)
        except OSError:
            pass

    def foreign(self):
        """403 (-> True) to a request from elsewhere: a Host not this server's, or two; a POST from
        another site's page."""
        hosts = self.headers.get_all("Host") or [None]
        why = host_refused(hosts[0], self.server.names)
        if why is None and hosts[1:]:
            why = "the request gives two Hosts"
        if why is None and self.command == "POST":
            why = origin_refused(self.headers.get("Origin"), hosts[0], self.server.names)
        if why is not None:
            self.answer(403, f"{why}: open the page at {self.server.home}")
        return why is not None

    def answer(self, status, message):
        """A refusal: JSON {error}; the connection closes (a body unread is no next request)."""
        body = json.dumps(dict(error=message)).encode("ascii")
        self.close_connection = True
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_error(self, code, message=None, explain=None):
        """http.server's refusals in JSON too: a method not served, a request it cannot read."""
        if code == 501:
            message = f"{self.command[:20]} is not served here: GET / is the page, and POST /draw draws"
        self.answer(code, message or "the request cannot be read")

    def log_message(self, format, *args):
        """Quiet: a draw prints its own line."""
