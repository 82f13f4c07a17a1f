"""inference.py --html: the trace as one HTML page. Every sampler's Steps say where they drew and
from what law (Step.laws), the page embeds every step with sample 0's top candidates, its data
round-trips, and (where Debian's chromium is installed) a real browser loads it without a console
error and its slider moves the canvas.

    python -m pytest -q tests/test_trace_page.py
"""
import json
import re
import shutil
import subprocess

import pytest
import torch

from sampling.canvas import build_canvas, fill
from diffusion import SamplerOptions
from configurator import get_config
from helpers import for_objective, model_args
from model import Transformer
from sampling.trace import Trace
from sampling.page import PageWriter
from utils.tokenizer import CharTokenizer

TOK = CharTokenizer("abcdefghijk")  # 11 characters, [MASK] = 11
SMALL = ["--n_layer=1", "--n_head=2", "--n_embd=16", "--block_size=16", "--diffusion_steps=8", "--gen_len=8",
         "--prompt=abc", "--device=cpu"]
SAMPLERS = {  # name -> the flags of one sampler of each objective
    "mdlm": ["--steps=4"], "mdlm remdm": ["--steps=4", "--remask=remdm", "--remask_eta=0.2"],
    "mdlm threshold": ["--threshold=0.5"], "mdlm dual_sample": ["--dual_ar=0.5", "--time_cond=none", "--dual_sample"],
    "uniform": ["--objective=uniform", "--steps=4"], "bd3": ["--objective=bd3", "--bd3_block=4", "--steps=4"],
    "bd3 past the context": ["--objective=bd3", "--bd3_block=4", "--steps=4", "--gen_len=24"],  # its window moves
    "bd3 speculate": ["--objective=bd3", "--bd3_block=4", "--bd3_ar=1", "--bd3_speculate"],
    "ar": ["--objective=ar"]}


def _setup(flags, seed=0):
    """(cfg, opts, canvas, model): flags' sampler over 2 canvases of a random tiny network."""
    cfg = get_config(for_objective([*SMALL, *flags, "--num_samples=2"]))
    torch.manual_seed(seed)
    model = Transformer(model_args(cfg, TOK.vocab_size)).eval()
    opts = SamplerOptions.from_config(cfg)
    return cfg, opts, build_canvas(cfg, opts, TOK, model.args.block_size), model


def _run(flags, hooks, seed=0):
    cfg, opts, canvas, model = _setup(flags, seed)
    return fill(model, TOK, canvas, cfg, opts, "cpu", torch.Generator().manual_seed(seed), hooks)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_every_samplers_steps_say_where_they_drew_and_from_what_law(name):
    """Step.laws (at, logp): each position a step changed (revealed) has a row there; each row is a law (sums to 1
    in float64) under which the token drawn has mass; positions it names are the canvas's, never given text."""
    steps = []
    _run(SAMPLERS[name], steps.append)
    assert steps
    for st in steps:
        at, logp = st.laws
        B, L = st.x.shape
        assert at.dtype == torch.long and (at >= 0).all() and (at < B * L).all()
        assert st.gen_mask.flatten()[at].all(), "a law at given text"
        assert set(st.revealed.flatten().nonzero().squeeze(1).tolist()) <= set(at.tolist()), "a change with no law"
        p = logp.exp()
        assert torch.allclose(p.sum(-1), torch.ones(len(at), dtype=p.dtype), atol=1e-6)
        drawn = st.revealed.flatten()[at]
        assert (p[drawn].gather(-1, st.x.flatten()[at][drawn][:, None]) > 0).all(), "a token drawn with no mass"


def _page_data(html):
    return json.loads(re.search(r'<script id="trace-data" type="application/json">(.*?)</script>', html, re.S)[1])


@pytest.mark.parametrize("name", ["mdlm", "bd3 speculate", "ar"])
def test_the_page_embeds_every_step_with_its_candidates_and_round_trips(name, tmp_path):
    cfg, opts, canvas, model = _setup(SAMPLERS[name])
    page, steps = PageWriter(tmp_path / "t.html", title="<title></script>", settings="s"), []
    hook = Trace(TOK, cfg, page=page)
    with page:
        fill(model, TOK, canvas, cfg, opts, "cpu", torch.Generator().manual_seed(0),
             lambda st: (steps.append(st), hook(st)))
    data = _page_data((tmp_path / "t.html").read_text())
    assert data["title"] == "<title></script>"  # escaped in the page, itself after the round trip
    assert len(data["steps"]) == 1 + len({int(st.nfe[0]) for st in steps})  # the start, then every step of sample 0
    assert all(state != "mask" for _, state, _ in data["steps"][-1]["cells"])
    for st, shown in zip(steps, data["steps"][1:]):
        assert len(shown["cells"]) == st.x.size(1) and shown["nfe"] == int(st.nfe[0])
        changed = st.revealed[0].nonzero().squeeze(1).tolist()
        assert set(changed) <= {int(i) for i in shown["top"]}, "a token revealed with no candidates"
        for i in changed:
            top = shown["top"][str(i)]
            assert 1 <= len(top) <= 5 and all(a[1] >= b[1] for a, b in zip(top, top[1:]))


def test_one_trace_gives_the_video_every_nth_pass_and_the_page_every_step(tmp_path):
    """--trace-every 3 beside --html: one Trace records both; the video's frames are the start, every third pass and
    the last, the page's the start and every pass, with its candidates; `with trace` closes both."""
    cfg, opts, canvas, model = _setup(["--steps=8", "--trace_every=3"])
    nfes, closed = [], []

    class Video:  # a TraceWriter's add_frame and __exit__
        def add_frame(self, tokens, states, step, t, nfe, confidence=None, caption=""):
            nfes.append(nfe)

        def __exit__(self, *exc):
            closed.append(exc)

    page = PageWriter(tmp_path / "t.html", title="t", settings="s")
    with Trace(TOK, cfg, video=Video(), page=page) as trace:
        _, _, stats = fill(model, TOK, canvas, cfg, opts, "cpu", torch.Generator().manual_seed(0), trace)
    assert stats["nfe_per_sample"][0] == 8 and nfes == [0, 3, 6, 8] and closed == [(None, None, None)]
    steps = _page_data((tmp_path / "t.html").read_text())["steps"]
    assert [s["nfe"] for s in steps] == list(range(9)) and all(s["top"] for s in steps[1:])
    assert trace.seconds > 0


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_a_real_browser_loads_the_page_and_its_slider_moves_the_canvas(tmp_path):
    cfg, opts, canvas, model = _setup(SAMPLERS["mdlm"])
    page = PageWriter(tmp_path / "t.html", title="t", settings="s")
    with page:
        fill(model, TOK, canvas, cfg, opts, "cpu", torch.Generator().manual_seed(0), Trace(TOK, cfg, page=page))
    probe = """<script>
window.__errors = [];
window.addEventListener("error", (e) => window.__errors.push(String(e.message)));
window.addEventListener("load", () => {
  const slider = document.getElementById("slider"), canvas = document.getElementById("canvas");
  const before = canvas.textContent;
  slider.value = slider.max; slider.dispatchEvent(new Event("input"));
  const out = document.createElement("pre"); out.id = "probe";
  out.textContent = JSON.stringify({errors: window.__errors, before, after: canvas.textContent});
  document.body.appendChild(out);
});
</script>"""
    html = (tmp_path / "t.html").read_text().replace('<script id="trace-data"', probe + '<script id="trace-data"', 1)
    (tmp_path / "probe.html").write_text(html)
    out = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
                          (tmp_path / "probe.html").as_uri()], capture_output=True, text=True, timeout=120).stdout
    seen = json.loads(re.search(r'<pre id="probe">(.*?)</pre>', out, re.S)[1].replace("&quot;", '"'))
    assert seen["errors"] == [] and seen["before"] != seen["after"]
    assert seen["before"].startswith("abc") and "_" in seen["before"] and "_" not in seen["after"]


@pytest.mark.parametrize("name", [n for n in SAMPLERS if n != "uniform"])  # uniform noise starts from no [MASK]
def test_a_generated_position_shows_mask_until_a_step_reveals_it(name):
    """What a Step's x holds is what the trace draws: [MASK] wherever no step so far drew a token, or a step sent it
    back (remasked: refine, ReMDM); the AR's and --dual_sample's Steps showed the canvas's placeholder 0s there."""
    drawn = []

    def check(st):
        before = drawn[-1] if drawn else torch.zeros_like(st.revealed)
        drawn.append((st.revealed | before) & ~st.remasked)
        assert torch.equal(st.gen_mask & (st.x != TOK.mask_id), st.gen_mask & drawn[-1])
    _run(SAMPLERS[name], check)
    assert drawn


# ---------------------------------------------------------------------------------------------- the page's laws
LAWS = {  # name -> (flags, the number of samples drawn): bd3's rounds draft at batch 1 only
    "ar": (["--objective=ar"], 2), "mdlm dual_sample": (["--dual_ar=0.5", "--time_cond=none", "--dual_sample"], 2),
    "bd3 speculate": (["--objective=bd3", "--bd3_block=4", "--bd3_ar=1", "--bd3_speculate"], 1),
    "bd3": (["--objective=bd3", "--bd3_block=4", "--steps=4", "--prompt=abcd"], 2), "mdlm": (["--steps=4"], 2)}
TEMPERATURES = {"T=0": ["--temperature=0"], "T=0.5": ["--temperature=0.5"], "T=1": ["--temperature=1"],
                "T=0.5 top-k 3": ["--temperature=0.5", "--top_k=3"], "T=1 top-p 0.8": ["--temperature=1", "--top_p=0.8"]}


def _drawn_from(logits, cfg, greedy=False):
    """The law (..., V) a sampler draws from logits at cfg's temperature, top-k and top-p: a point mass on the
    argmax at T = 0 (or a greedy step), by the test's own hand."""
    from utils.draws import Law
    if cfg.temperature == 0 or greedy:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.size(-1)).double()
    return Law.from_config(cfg).log_probs(logits).exp()


def _laws_by_hand(name, cfg, model, steps):
    """Per Step: {position of sample 0: the law it was drawn from}, recomputed from the tokens and the network alone:
    the causal pass over the final text (AR, --dual_sample, bd3's clean half: a token's law reads the text before it)
    or the pass over the canvas before the step (mdlm's and bd3's reverse steps; mdlm's last schedule step greedy)."""
    from bd3 import bd3_logits
    from diffusion import causal_logits, no_mask_logit, predict_logits
    final = steps[-1].x
    with torch.no_grad():
        if name == "ar":
            logits = model(final).masked_fill(torch.arange(TOK.vocab_size) == TOK.mask_id, float("-inf"))
        elif name == "mdlm dual_sample":
            logits = causal_logits(model, final, TOK.mask_id)
        elif name == "bd3 speculate":  # the clean half's next token after each column
            logits = bd3_logits(model, torch.full_like(final, TOK.mask_id), final, 4, TOK.mask_id, clean=True)[1]
        laws = []
        for k, st in enumerate(steps):
            at = st.laws[0][st.laws[0] < st.x.size(1)].tolist()  # sample 0's positions, flat = its columns
            if name == "mdlm":
                greedy = k == len(steps) - 1 and cfg.tokens_per_step == "schedule"
                rows = _drawn_from(predict_logits(model, st.prev, st.time, TOK.mask_id)[0], cfg, greedy)
            elif name == "bd3":  # the noisy block before the step beside the clean blocks before it, two streams
                rows = _drawn_from(no_mask_logit(bd3_logits(model, st.prev, st.prev, 4, TOK.mask_id), TOK.mask_id)[0], cfg)
            else:  # column i - 1 predicts token i
                rows = _drawn_from(torch.cat([logits[0, :1], logits[0]], 0)[:final.size(1)], cfg)
            laws.append({i: rows[i] for i in at})
    return laws


@pytest.mark.parametrize("temperature", list(TEMPERATURES))
@pytest.mark.parametrize("name", list(LAWS))
def test_the_page_shows_the_law_each_token_was_drawn_from(name, temperature, tmp_path):
    """Position by position and step by step, the page's candidates are the top of the law the sampler drew that
    position from, recomputed by hand: normalised, at the step's own input, tempered once (the AR's and
    --dual_sample's were tempered twice: at T = 0.5 a top-1 of 0.88 shown for a draw at 0.78), a point mass where
    the draw is an argmax; and each token revealed is one the law gives mass."""
    flags, B = LAWS[name]
    cfg = get_config(for_objective([*SMALL, *flags, *TEMPERATURES[temperature], f"--num_samples={B}"]))
    torch.manual_seed(0)
    model = Transformer(model_args(cfg, TOK.vocab_size)).eval()
    opts = SamplerOptions.from_config(cfg)
    canvas = build_canvas(cfg, opts, TOK, model.args.block_size)
    page, steps = PageWriter(tmp_path / "t.html", title="t", settings="s"), []
    hook = Trace(TOK, cfg, page=page)
    with page:
        fill(model, TOK, canvas, cfg, opts, "cpu",
             torch.Generator().manual_seed(1), lambda st: (steps.append(st), hook(st)))
    shown = _page_data((tmp_path / "t.html").read_text())["steps"][1:]  # the start frame, then a frame a step
    assert len(shown) == len(steps)
    ids = {TOK.token_text(i): i for i in range(TOK.vocab_size)}
    for st, frame, laws in zip(steps, shown, _laws_by_hand(name, cfg, model, steps)):
        assert {int(i) for i in frame["top"]} == set(laws)
        for i, law in laws.items():
            top = frame["top"][str(i)]
            want = sorted(((p, t) for t, p in enumerate(law.tolist()) if p > 0), reverse=True)[:5]
            assert len(top) == len(want) and ids[top[0][0]] == want[0][1], (i, top, want)
            assert [p for _, p in top] == pytest.approx([p for p, _ in want], abs=1e-4), (i, top, want)
            if st.revealed[0, i]:
                assert law[st.x[0, i]] > 0  # the token drawn is one the law allows
                assert frame["cells"][i][2] == pytest.approx(float(law[st.x[0, i]]), abs=1e-6)  # 'p when drawn'


NODE_PROBE = """
const els = {};
function el() {
  return {style: {}, dataset: {}, children: [], classList: {add() {}, remove() {}}, addEventListener() {},
          replaceChildren(...c) { this.children = c; }, querySelectorAll() { return []; },
          getBoundingClientRect() { return {top: 100, bottom: 118}; }, offsetHeight: 40, offsetWidth: 200,
          closest() { return this; }};
}
global.document = {getElementById: (id) => els[id] || (els[id] = el()), createElement: () => el()};
global.window = {innerWidth: 1000};
els["trace-data"] = Object.assign(el(), {textContent: process.argv[2]});
eval(process.argv[1] + `
const last = data.steps.length - 1;
const first = els.canvas.children.map((c) => [c.className, c.textContent]);
show(last);
const span = els.canvas.children[1];
point({target: span, clientX: 10, clientY: 110});
console.log(JSON.stringify({first, pos: $("pos").textContent, head: $("head").textContent, top: tip.style.top,
  cells: els.canvas.children.map((c) => [c.className, c.textContent])}));`);
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="no node to run the page's script")
def test_the_pages_counter_newlines_blanks_and_tooltip(tmp_path):
    """The page's own script, run by node on a stand-in DOM: the counter reads '2 / 2' beside step 2 (it read
    '3 / 3'), a newline is an arrow one can point at (it was a bare break), each blank its own span with a gap after
    it (a run of them drew as one underline), the tooltip sits above the line pointed at (it covered the next), and
    the page says how to start."""
    page = PageWriter(tmp_path / "t.html", title="t", settings="s")
    page.add_frame(["a", None, None, None], ["prompt", "mask", "mask", "mask"], 0, 1.0, 0)
    page.add_frame(["a", "\n", None, None], ["prompt", "new", "mask", "mask"], 1, 0.5, 1, top={1: [("\n", 0.9)]})
    page.add_frame(["a", "\n", "b", "c"], ["prompt", "kept", "new", "new"], 2, 0.0, 2)
    html = page.page()
    script = re.search(r'<script>\n(.*?)</script>', html, re.S)[1]
    data = json.dumps(_page_data(html))
    out = subprocess.run(["node", "-e", NODE_PROBE, script, data], capture_output=True, text=True, timeout=60)
    seen = json.loads(out.stdout)
    assert seen["first"] == [["prompt", "a"], *[["mask", "_"]] * 3]  # the page opens at the start
    assert seen["pos"] == "2 / 2" and seen["head"].startswith("step 2 ")
    assert seen["cells"] == [["prompt", "a"], ["kept", "\u21b5\n"], ["new", "b"], ["new", "c"]]
    assert seen["top"] == "56px"  # 100 (the line's top) - 40 (the tooltip) - 4
    assert "press play, or drag the slider" in html and re.search(r"\.mask \{[^}]*margin-right", html)
