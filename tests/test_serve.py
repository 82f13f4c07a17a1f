"""inference.py --serve (sampling/serve.py): the page's server, spoken to over HTTP as a browser does. A draw
streams a frame a step and ends with the text inference.py prints for that seed; every bad request is one message
and the server keeps answering; a second draw while one runs is answered at once; a client that leaves stops its
draw; a port in use, a bad host or a clashing flag is one line before any model is read; nothing is written.
The slower tier (pytest.ini) drives the page in headless Chromium (Playwright) where both are installed, and stops
a server with Ctrl-C mid-draw.

    python -m pytest -q tests/test_serve.py -m "not slower"
    python -m pytest -q tests/test_serve.py          # with the browser (CONTRIBUTING.md: how to install it)
"""
import http.client
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import replace

import pytest

import configurator
from diffusion import SamplerOptions
import inference
import train
from helpers import ENV, ROOT, assert_one_line_error, ctrl_c_default, run_cli_here
from sampling import serve

WEIGHTS = ROOT / "artifacts" / "weights"
SERVED = ["--checkpoint", str(WEIGHTS / "cpu"), "--serve", "--port", "0", "--device", "cpu"]
RACE = ["--race", str(WEIGHTS / "baby_ar")]
LONG = {"prompt": "ROMEO:", "seed": 0, "gen_len": 120, "steps": 120}  # 120 steps: time to interrupt it


@pytest.fixture
def slow_steps(monkeypatch):
    """Each step of a draw 20 ms longer: a long draw lasts 2.4 s on any machine."""
    real = serve.Frames.__call__

    def slower(self, st):
        time.sleep(0.02)
        return real(self, st)
    monkeypatch.setattr(serve.Frames, "__call__", slower)


@pytest.fixture(scope="module")
def where(tmp_path_factory):
    """An empty folder the server runs in: it must stay empty."""
    d = tmp_path_factory.mktemp("serve_cwd")
    old = os.getcwd()
    os.chdir(d)
    yield d
    os.chdir(old)


@pytest.fixture(scope="module")
def server(where):
    """The shipped cpu weights racing the shipped baby AR, on a free port, served from a thread."""
    s = serve.open_server(configurator.parse([*SERVED, *RACE]), inference.load)
    thread = threading.Thread(target=s.serve_forever, daemon=True)
    thread.start()
    yield s
    s.shutdown()
    s.stop()  # a draw still running ends at its next step


def post(port, body, content_type="application/json"):
    """POST /draw: the open connection and its response."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    conn.request("POST", "/draw", data, {"Content-Type": content_type})
    return conn, conn.getresponse()


def events(response):
    """The stream's (name, data) events, read as they arrive."""
    name = None
    for raw in iter(response.readline, b""):
        line = raw.decode("ascii").rstrip("\n")
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            yield name, json.loads(line[6:])


def draw(port, knobs):
    conn, response = post(port, knobs)
    assert response.status == 200, response.read()
    out = list(events(response))
    conn.close()
    return out


def idle(server, seconds=20):
    """Wait until no draw holds the server (its last line printed): True, or False after `seconds`."""
    end = time.time() + seconds
    while server.busy.locked() and time.time() < end:
        time.sleep(0.02)
    return not server.busy.locked()


def printed_sample(argv, capsys):
    """The text inference.py prints for argv (between its checkpoint line and its figures)."""
    code, out, err = run_cli_here(inference.main, [*argv, "--viz-video=off", "--device=cpu"], capsys)
    assert code == 0, err
    return out.split("\ncheckpoint ", 1)[1].split("\n", 1)[1].split("\n---- ")[0]


def replay(evs, lane):
    """A lane's canvas rebuilt from its start and its frames' changed cells, as the page rebuilds it; after each
    frame, its [MASK]s are the ones the frame counts (a re-masked position left out would keep its old token)."""
    cells = next(d["cells"] for n, d in evs if n == "start" and d["lane"] == lane)
    for name, d in evs:
        if name == "frame" and d["lane"] == lane:
            for i, text, state in d["cells"]:
                cells[i] = [text, state]
            assert sum(text is None for text, _ in cells) == d["masked"], d
    return cells


def test_a_draw_streams_a_frame_a_step_and_ends_with_the_text_inference_prints(server, capsys):
    knobs = {"prompt": "JULIET:", "seed": 3, "gen_len": 24, "steps": 12, "temperature": 0.9, "order": "confidence"}
    evs = draw(server.server_address[1], knobs)
    assert [n for n, _ in evs if n in ("lane", "done", "end")] == ["lane", "done", "lane", "done", "end"]
    done = [d for n, d in evs if n == "done"]
    for lane in (0, 1):
        frames = [d for n, d in evs if n == "frame" and d["lane"] == lane]
        passes = [f["passes"] for f in frames]
        assert passes == sorted(set(passes)) and frames[-1]["masked"] == 0 < frames[0]["masked"]
        assert [f["seconds"] for f in frames] == sorted(f["seconds"] for f in frames)
        assert done[lane]["frames"] == len(frames) and done[lane]["seconds"] >= frames[-1]["seconds"]
        cells = replay(evs, lane)
        assert "".join(text for text, _ in cells) == done[lane]["text"]  # the frames add up to the text
        assert {state for _, state in cells} <= {"prompt", "kept", "new"}
    assert len([n for n, d in evs if n == "frame" and d["lane"] == 0]) == 12 == done[0]["passes"]  # a frame a step
    assert idle(server)
    capsys.readouterr()
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in knobs.items()]
    assert done[0]["text"] == printed_sample(["--checkpoint", str(WEIGHTS / "cpu"), *flags], capsys)
    # the race lane: its checkpoint's own sampler, the prompt, length and seed the page gave
    assert done[1]["text"] == printed_sample(["--checkpoint", str(WEIGHTS / "baby_ar"), "--prompt=JULIET:", "--seed=3",
                                              "--gen-len=24"], capsys)


BAD = [
    # (body, content type, words of the message)
    (b'{"seed": 0}', None, "has no prompt as text: type one"),
    (b'{"prompt": ""}', None, "the prompt is empty"),
    (json.dumps({"prompt": "x" * 2001}).encode(), None, "2,001 characters, past the 2,000"),
    (b'{"prompt": "' + b"a" * 70_000 + b'"}', None, "70,014 bytes, past the 65,536"),
    (b'{"prompt": "\xff\xfeROMEO"}', None, "not UTF-8"),
    (b'{"prompt": "\\ud800"}', None, "unpaired surrogate"),
    (b"prompt=ROMEO", None, "not JSON"),
    (b'["ROMEO:"]', None, "not an object of knobs"),
    (b'{"prompt": 5}', None, "has no prompt as text"),
    (b'{"prompt": "ROMEO:"}', "text/plain", "send the knobs as JSON"),
    (b'{"prompt": "ROMEO:", "n_layer": 5}', None, "unknown knob 'n_layer': the page sets prompt, seed, gen_len, steps"),
    (b'{"prompt": "ROMEO:", "steps": 0}', None, "steps must be >= 1, got 0"),
    (b'{"prompt": "ROMEO:", "steps": 5000}', None, ("steps=5000 exceeds diffusion_steps=1000",
                                                   "or tokens_per_step=linear")),
    (b'{"prompt": "ROMEO:", "steps": "abc"}', None, "steps='abc' is not a valid int"),
    (b'{"prompt": "ROMEO:", "steps": 1.5}', None, "steps must be int"),
    (b'{"prompt": "ROMEO:", "temperature": -1}', None, "temperature must be >= 0"),
    (b'{"prompt": "ROMEO:", "temperature": "hot"}', None, "temperature='hot' is not a valid float"),
    (b'{"prompt": "ROMEO:", "order": "sideways"}', None, "order='sideways' is not one of"),
    (b'{"prompt": "ROMEO:", "seed": -1}', None, "seed must be >= 0"),
    (b'{"prompt": "ROMEO:", "seed": ' + b"9" * 400 + b"}", None, "400-digit number"),
    (b'{"prompt": "ROMEO:", "gen_len": 513}', None, "tokens 513 is past the 512 this page draws"),
    (b'{"prompt": "ROMEO:", "gen_len": 200}', None, ("the prompt (6 tokens) and tokens 200 make 206, past cpu's context "
                                                     "of 128", "set tokens to 122 or fewer, or shorten the prompt")),
    (b'{"prompt": "' + b"x" * 128 + b'"}', None, "the prompt is 128 tokens, and cpu reads 128 at most"),
    (b'{"prompt": "ROMEO \\u2603"}', None, "not in the model's vocabulary"),
]


def test_each_bad_request_is_one_message_and_the_server_answers_after_it(server):
    port = server.server_address[1]
    for body, content_type, words in BAD:
        conn, response = post(port, body, content_type or "application/json")
        answer = json.loads(response.read())
        conn.close()
        assert response.status == 400 and set(answer) == {"error"}, (body[:60], answer)
        assert all(w in answer["error"] for w in ([words] if isinstance(words, str) else words)), answer
        assert "Traceback" not in answer["error"] and "\n" not in answer["error"]
        # in the page's words: its fields, not their flags (issue 105: --gen-len 95); a flag the page lacks is the
        # server's command line's, and said so
        assert not re.search(r"(?<!the server's )--[a-z]", answer["error"]), answer
        assert "unknown knob" in words or not re.search("gen_len|gen-len", answer["error"]), answer  # JSON's own key
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/nowhere")
    response = conn.getresponse()
    assert response.status == 404 and "the page is /" in json.loads(response.read())["error"]
    assert draw(port, {"prompt": "ROMEO:", "gen_len": 8, "steps": 4})[-1][0] == "end"


def request(port, method, path, headers, body=None, host="127.0.0.1"):
    """(status, body) of one request with exactly these headers: http.client adds no Host of its own here."""
    conn = http.client.HTTPConnection(host, port, timeout=60)
    conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
    for key, value in headers.items():
        conn.putheader(key, value)
    if body is not None:
        conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, data


SMALL = json.dumps({"prompt": "ROMEO:", "gen_len": 4, "steps": 2}).encode()
JSON = {"Content-Type": "application/json"}
# a page of another site whose name points at 127.0.0.1 (DNS rebinding) sends its own name; a Host no browser sends
REFUSED_HOSTS = ["evil.example", "evil.example:{port}", "localhost.evil.example:{port}", "127.0.0.1.nip.io:{port}",
                 "10.0.0.1:{port}", "[::2]:{port}", "::1", "", "a b", "localhost:port"]
# its address and the loopback's names, any case, a final dot, IPv6 in brackets; without a port, or another one (an
# ssh tunnel: -L 9000:localhost:PORT)
ANSWERED_HOSTS = ["127.0.0.1:{port}", "localhost:{port}", "LocalHost.:{port}", "[::1]:{port}", "127.0.0.1",
                  "localhost:9000"]


def test_a_request_naming_another_host_is_refused_on_every_route_and_the_server_answers_after_it(server):
    port = server.server_address[1]
    for host in REFUSED_HOSTS:
        for method, path in (("GET", "/"), ("GET", "/nowhere"), ("HEAD", "/"), ("POST", "/draw"), ("POST", "/x")):
            body = SMALL if method == "POST" else None
            status, data = request(port, method, path, {"Host": host.format(port=port), **JSON}, body)
            assert status == 403, (host, method, path, status)
            if method != "HEAD":
                error = json.loads(data)["error"]
                assert re.search(r"not this server|no host\[:port\]", error) and "\n" not in error, error
                assert error.endswith(f"open the page at http://127.0.0.1:{port}/"), error
    status, data = request(port, "GET", "/", {"Host": f"127.0.0.1:{port}", "host": f"evil.example:{port}"})
    assert status == 403 and "two Hosts" in json.loads(data)["error"]
    for host in ANSWERED_HOSTS:
        status, data = request(port, "GET", "/", {"Host": host.format(port=port)})
        assert status == 200 and b"serve-data" in data, host
    assert request(port, "HEAD", "/", {"Host": f"localhost:{port}"}) == (200, b"")
    assert request(port, "GET", "/", {})[0] == 200  # no Host (HTTP/1.0's way; no browser sends that)
    assert idle(server) and draw(port, {"prompt": "ROMEO:", "gen_len": 8, "steps": 4})[-1][0] == "end"


def test_a_draw_is_started_by_this_servers_own_page_or_a_client_that_is_no_browser(server):
    """A POST's Origin is this server's page (the browser sends it), or none (curl, a script); another site's page,
    an opaque one (null) or another port's is refused. Reading the page is no change: a GET is answered."""
    port = server.server_address[1]
    own = f"127.0.0.1:{port}"
    for origin in ("http://evil.example", f"http://localhost:{port}", "null", f"https://{own}", f"http://{own}.x",
                   f"http://127.0.0.1:{port + 1}", f"http://{own}/path"):
        status, data = request(port, "POST", "/draw", {"Host": own, "Origin": origin, **JSON}, SMALL)
        assert status == 403 and "not this server's own page" in json.loads(data)["error"], origin
    assert request(port, "GET", "/", {"Host": own, "Origin": "http://evil.example"})[0] == 200
    for headers in ({"Host": own, "Origin": f"http://{own}"}, {"Host": f"localhost:{port}"}, {"Host": own}):
        status, data = request(port, "POST", "/draw", {**headers, **JSON}, SMALL)
        assert status == 200 and data.rstrip().endswith(b"event: end\ndata: {}"), (headers, data[-200:])
        assert idle(server)


def test_a_method_the_server_does_not_serve_is_one_json_message(server):
    port = server.server_address[1]
    for method in ("PUT", "DELETE", "OPTIONS", "PATCH"):
        status, data = request(port, method, "/draw", {"Host": f"127.0.0.1:{port}"})
        assert status == 501 and json.loads(data) == {"error": f"{method} is not served here: GET / is the page, "
                                                               f"and POST /draw draws"}


def serving(address):
    """A Server with a stand-in page on address, in a thread (no model: the names it answers are all that is read)."""
    s = serve.Server(address)
    s.page = b"the page"
    threading.Thread(target=s.serve_forever, daemon=True).start()
    return s


def test_served_on_every_interface_any_address_and_this_machines_names_are_its_own():
    """--host 0.0.0.0: a client on the network types the machine's address or name; a rebinding page still sends
    another site's name."""
    s = serving(("0.0.0.0", 0))
    port = s.server_address[1]
    try:
        for host in (f"192.0.2.7:{port}", f"{socket.gethostname()}:{port}", socket.getfqdn(), "localhost", "[::1]"):
            assert request(port, "GET", "/", {"Host": host}) == (200, b"the page"), host
        for host in ("evil.example", f"{socket.gethostname()}.evil.example:{port}"):
            status, data = request(port, "GET", "/", {"Host": host})
            assert status == 403 and f"open the page at http://localhost:{port}/" in json.loads(data)["error"]
    finally:
        s.shutdown()
        s.server_close()


def test_on_ipv6_its_bracketed_address_is_its_own():
    try:
        s = serving(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    port = s.server_address[1]
    try:
        assert request(port, "GET", "/", {"Host": f"[::1]:{port}"}, host="::1") == (200, b"the page")
        assert request(port, "GET", "/", {"Host": f"localhost:{port}"}, host="::1")[0] == 200
        for host in ("::1", f"[::2]:{port}", "evil.example"):
            status, data = request(port, "GET", "/", {"Host": host}, host="::1")
            assert status == 403 and f"http://[::1]:{port}/" in json.loads(data)["error"], host
    finally:
        s.shutdown()
        s.server_close()


def test_the_page_knows_the_models_context_and_fits_the_tokens_left_as_shown(server):
    """The page reads cpu's context (128, the prompt's tokens and those written) and caps its tokens box there. The
    box left as shown, a long prompt is answered by fewer tokens, said beside the sampler, as inference.py cuts an
    untyped --gen-len; typed, a count past the room is refused in the page's words (BAD above)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
    conn.request("GET", "/")
    html = conn.getresponse().read().decode("utf-8")
    data = json.loads(re.search(r'<script id="serve-data" type="application/json">(.*?)</script>', html, re.S)[1])
    assert data["context"] == 128 and 'id="context"' in html
    ar = serve.page([server.lanes[1]]).decode("utf-8")  # an AR slides its window: no context to fit
    assert json.loads(re.search(r'application/json">(.*?)</script>', ar, re.S)[1])["context"] is None
    evs = draw(server.server_address[1], {"prompt": "x" * 40, "steps": 8})
    lanes = [d for n, d in evs if n == "lane"]
    assert [lane["n_gen"] for lane in lanes] == [88, 88] and evs[-1][0] == "end"
    assert lanes[0]["note"] == "88 tokens: the prompt's 40 fill the rest of its context of 128" and not lanes[1]["note"]
    evs = draw(server.server_address[1], {"prompt": "x" * 40, "steps": 8, "gen_len": 88})  # typed, and it fits
    assert [d["n_gen"] for n, d in evs if n == "lane"] == [88, 88] and not evs[0][1]["note"]


@pytest.mark.parametrize("knobs", [
    # the neighbour of each refusal above, which must draw
    {"prompt": "R"}, {"prompt": "x" * 100, "gen_len": 28}, {"prompt": "ROMEO:", "steps": 1},
    {"prompt": "ROMEO:", "steps": "8"}, {"prompt": "ROMEO:", "temperature": 0}, {"prompt": "ROMEO:", "order": "l2r"},
    {"prompt": "ROMEO:", "seed": 0}, {"prompt": "ROMEO:", "gen_len": 122}, {"prompt": "ROMEO:", "gen_len": 1},
])
def test_the_neighbours_of_the_refusals_draw(server, knobs):
    evs = draw(server.server_address[1], {"gen_len": 8, "steps": 4, **knobs} if "gen_len" not in knobs else knobs)
    assert evs[-1][0] == "end" and all(d["text"] for n, d in evs if n == "done")


def test_a_second_draw_while_one_runs_is_answered_at_once_and_the_first_goes_on(server, slow_steps):
    port = server.server_address[1]
    conn, response = post(port, LONG)
    stream = events(response)
    assert next(stream)[0] == "lane"
    conn2, second = post(port, {"prompt": "ROMEO:", "gen_len": 8, "steps": 4})
    assert second.status == 409 and "a draw is running" in json.loads(second.read())["error"]
    conn2.close()
    assert [n for n, _ in stream][-1] == "end"  # the first ran to its end
    conn.close()


def test_a_client_that_leaves_mid_draw_stops_it_and_the_server_answers_the_next(server, slow_steps, capsys):
    port = server.server_address[1]
    body = json.dumps(LONG).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as client:
        client.sendall(b"POST /draw HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: "
                       + str(len(body)).encode() + b"\r\n\r\n" + body)
        received = b""
        while b"event: frame" not in received:
            received += client.recv(4096)
    assert idle(server, seconds=1.5)  # its draw, 2.4 s whole, stopped at once
    assert "the client left mid-draw; the draw stopped" in capsys.readouterr().out
    assert draw(port, {"prompt": "ROMEO:", "gen_len": 8, "steps": 4})[-1][0] == "end"


def test_the_page_holds_the_knobs_and_greys_out_those_the_model_does_not_read(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
    conn.request("GET", "/")
    html = conn.getresponse().read().decode("utf-8")
    data = json.loads(re.search(r'<script id="serve-data" type="application/json">(.*?)</script>', html, re.S)[1])
    assert [lane["name"] for lane in data["lanes"]] == ["cpu", "baby_ar"]
    shown = dict(prompt="ROMEO:", steps=64, temperature=1.0, order="random", remask="remdm", seed=1337, gen_len=96)
    assert {k: data["knobs"][k] for k in shown} == shown and data["most"] == dict(prompt=2000, gen_len=512)
    assert [s["key"] for s in data["sampler"]] == SamplerOptions.keys()  # a field for every key of the sampler
    assert "steps" not in data["unread"] and "objective=mdlm does not read --bd3_speculate" in data["unread"][
        "bd3_speculate"]
    ar = serve.page([server.lanes[1]]).decode("utf-8")  # the AR served: no steps, no order; the CLI's refusal says why
    unread = json.loads(re.search(r'application/json">(.*?)</script>', ar, re.S)[1])["unread"]
    assert {"order", "steps"} <= set(unread) and "temperature" not in unread
    assert "objective=ar does not read --steps" in unread["steps"]
    # a default gen_len past the context (and the page's cap) is what inference.py draws: the room after the prompt
    cpu = server.lanes[0]
    long = serve.Lane(replace(cpu.cfg, gen_len=600), cpu.run)
    knobs = json.loads(re.search(r'application/json">(.*?)</script>', serve.page([long]).decode("utf-8"), re.S)[1])
    assert knobs["knobs"]["gen_len"] == 128 - len("ROMEO:")
    serve.warm_up([long])  # the warm-up draws that length too (the whole 600 is refused)


def test_a_port_in_use_is_one_line_before_any_model_is_read_and_its_advice_serves(where, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out, err = run_cli_here(inference.main, ["cpu", "--serve", "--port", str(port)], capsys)
        assert_one_line_error(code, err, f"cannot listen on port {port} of 127.0.0.1 (Address already in use)",
                              "give another, or --port 0 for any free one")
        assert "checkpoint" not in out  # refused before the model was read
        advice = configurator.parse([*SERVED[:3], "--port", "0", "--race", "off"])  # the advice
        s = serve.open_server(advice, inference.load)
        assert s.server_address[1] not in (0, port)
        s.server_close()


TRACE_FLAGS = [["--viz-video", "x.mp4"], ["--viz-video", "auto"], ["--html"], ["--html", "p.html"],
               ["--trace-every", "2"], ["--gif-frame-ms", "100"], ["--overwrite"]]


@pytest.mark.parametrize("mode", [["--serve", "--port", "0", "--race", "off"], ["--interactive"],
                                  ["--prompts-file", "PROMPTS"]])
def test_the_page_and_the_streams_refuse_the_same_trace_flags_and_take_viz_video_off(mode, where, tmp_path, capsys,
                                                                                     monkeypatch):
    """--serve, --interactive and --prompts-file record no trace, so each refuses a trace's flag alike, naming it,
    and each takes --viz-video off: it asks for no file, which is what they do (issue 105: --serve refused it)."""
    (tmp_path / "prompts.txt").write_text("ROMEO:\n")
    mode = [str(tmp_path / "prompts.txt") if a == "PROMPTS" else a for a in mode]
    base = ["--checkpoint", str(WEIGHTS / "cpu"), "--device", "cpu", *mode]
    for flags in TRACE_FLAGS:
        code, out, err = run_cli_here(inference.main, [*base, *flags], capsys)
        assert_one_line_error(code, err, f"drop {flags[0]}")
    if mode[0] == "--serve":
        s = serve.open_server(configurator.parse([*base, "--viz-video", "off"]), inference.load)  # it serves
        s.server_close()
        return
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # --interactive: no prompt, the end at once
    code, out, err = run_cli_here(inference.main, [*base, "--viz-video", "off"], capsys)
    assert code == 0 and "error" not in err, err


@pytest.mark.parametrize("argv, words", [
    (["--interactive"], "--serve draws one sample at a time in the page and writes no file: drop --interactive"),
    (["--viz-video", "x.mp4"], "drop --viz-video"),
    (["--num-samples", "4"], "drop --num-samples"),
    (["--port", "70000"], "--port 70000 is no TCP port: give one from 1 to 65535, or 0"),
    (["--port", "-1"], "--port -1 is no TCP port"),
    (["--host", "192.0.2.1"], "--host 192.0.2.1 is no address of this machine"),
    (["--host", "no such host"], "--host no such host is no address of this machine"),
    (["--race", "nowhere/model.pt"], ("nowhere/model.pt not found", "or give --race off")),
])
def test_a_flag_the_page_cannot_take_is_one_line_before_any_model_is_read(argv, words, where, capsys):
    code, out, err = run_cli_here(inference.main, [*SERVED, *argv], capsys)
    assert_one_line_error(code, err, *([words] if isinstance(words, str) else words))
    assert "checkpoint" not in out


def test_the_keys_of_serve_are_refused_where_they_act_on_nothing(where, capsys):
    code, _, err = run_cli_here(inference.main, ["--checkpoint", str(WEIGHTS / "cpu"), "--port", "8001"], capsys)
    assert_one_line_error(code, err, "--port acts only with --serve")
    code, _, err = run_cli_here(train.main, ["cpu", "--serve"], capsys)
    assert_one_line_error(code, err, "--serve is inference.py's")


def test_a_host_beyond_this_machine_is_said_in_one_line(where, capsys):
    s = serve.open_server(configurator.parse([*SERVED, "--host", "0.0.0.0", "--race", "off"]), inference.load)
    s.server_close()
    out = capsys.readouterr().out
    warned = [line for line in out.splitlines() if line.startswith("warning:")]
    assert len(warned) == 1 and "--host 0.0.0.0 serves every client" in warned[0]
    assert s.server_address[0] == "0.0.0.0"


def test_the_race_lane_auto_is_the_baby_ar_and_baby_bd3_where_the_ar_is_served(monkeypatch):
    monkeypatch.chdir(ROOT)
    if any(os.path.exists(f"artifacts/models/{name}/model.pt") for name in ("baby_ar", "baby_bd3")):
        pytest.skip("a run of your own stands in for the shipped weights here")
    cfg = configurator.parse(["--serve"]).over()[0]
    ar, bd3 = (os.path.join("artifacts", "weights", name) for name in ("baby_ar", "baby_bd3"))
    assert serve.race_checkpoint(cfg, os.path.join("artifacts", "weights", "cpu")) == ar
    assert serve.race_checkpoint(cfg, ar) == bd3
    assert serve.race_checkpoint(configurator.parse(["--serve", "--race", "off"]).over()[0], ar) is None


def test_the_server_wrote_nothing(server, where):
    assert idle(server) and not os.listdir(where)


# ----------------------------------------------------------------------------- the slow tier
def start(argv):
    """inference.py --serve in a subprocess: (process, port), once it serves."""
    p = subprocess.Popen([sys.executable, str(ROOT / "inference.py"), *argv], cwd=ROOT, env=ENV,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=ctrl_c_default)
    for line in p.stdout:
        if line.startswith("serving http://"):
            return p, int(re.search(r":(\d+)/", line)[1])
    raise AssertionError(p.stderr.read())


@pytest.mark.slower
@pytest.mark.parametrize("mid_draw", [True, False])
def test_ctrl_c_stops_the_server_in_one_line_mid_draw_or_idle(mid_draw):
    p, port = start([*SERVED, "--race", "off"])
    try:
        if mid_draw:
            conn, response = post(port, LONG)
            stream = events(response)
            while next(stream)[0] != "frame":
                pass
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=30)
        if mid_draw:
            assert [d for n, d in stream if n == "error"] == [dict(message="the server stopped (Ctrl-C on its "
                                                                           "terminal)")]
    finally:
        p.kill()
    said = "interrupted: the server stopped" + (", its draw ended mid-way" if mid_draw else "")
    assert p.returncode == 130 and err == said + "\n", err


def chromium():
    """The path of a Chromium to drive, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.mark.slower
def test_the_page_in_a_browser_shows_frames_arrive_and_the_text_inference_prints(server, capsys):
    """Headless Chromium types a prompt, presses go, sees each lane's frames and its final text."""
    sync = pytest.importorskip("playwright.sync_api", reason="no playwright: pip install playwright (CONTRIBUTING.md)")
    if chromium() is None:
        pytest.skip("no Chromium installed: apt-get install chromium (CONTRIBUTING.md)")
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"]
    with sync.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), args=args)
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{server.server_address[1]}/")
        page.fill("#prompt", "JULIET:")
        page.fill("#seed", "5")
        page.fill("#gen_len", "40")
        page.fill("#steps", "20")
        page.click("#go")
        page.wait_for_function("document.querySelector('#lane0').dataset.frames > 0")  # a frame arrived, drawn
        page.wait_for_function("document.querySelector('#lane1 .text').textContent.length > 0", timeout=60_000)
        texts = [page.text_content(f"#lane{k} .text") for k in (0, 1)]
        frames = [int(page.get_attribute(f"#lane{k}", "data-frames")) for k in (0, 1)]
        assert page.text_content("#message") == "" and not page.is_disabled("#replay")
        page.fill("#steps", "0")  # a bad knob: the CLI's refusal, in the page
        page.click("#go")
        page.wait_for_function("document.querySelector('#message').textContent.length > 0")
        message = page.text_content("#message")
        browser.close()
    assert frames[0] == 20 and frames[1] == 40  # a frame a denoising step; the AR's a token
    assert idle(server)
    capsys.readouterr()
    assert texts[0] == printed_sample(["--checkpoint", str(WEIGHTS / "cpu"), "--prompt=JULIET:", "--seed=5",
                                       "--gen-len=40", "--steps=20"], capsys)
    assert texts[1] == printed_sample(["--checkpoint", str(WEIGHTS / "baby_ar"), "--prompt=JULIET:", "--seed=5",
                                       "--gen-len=40"], capsys)
    assert message == "steps must be >= 1, got 0"
