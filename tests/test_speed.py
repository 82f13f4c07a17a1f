"""Every speed figure, counted and timed one way: each sampler's NFE is its network calls (a forward hook counts
them: prompt prefills, window jumps, bd3's noisy-half first token), p_cache's columns are read as the rule says
(by hand), and scripts/race.py and scripts/frontier.py report the same figures for the same draws, because both time
through evals.samples.time_draws (a fake clock that advances with the network's columns makes them exact).

    python -m pytest -q tests/test_speed.py
"""
import statistics
import time
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from bd3 import Blocks, sample_clean_ar
from configurator import get_config
from diffusion import SamplerOptions
from evals.samples import Job, busy_note, columns_counted, draw, speed_figures, time_draws
from helpers import for_objective, model_args, script
from model import Transformer

pytestmark = pytest.mark.core  # the core tier (pytest.ini): the maths, the loop, the samplers

V, MASK = 12, 11  # a toy vocabulary: 11 tokens and [MASK]
SMALL = ["--n_layer=1", "--n_head=2", "--n_embd=16", "--block_size=16", "--diffusion_steps=8", "--device=cpu"]
SAMPLERS = {  # name -> (flags, tokens generated): past the context of 16, the windows move
    "ar": (["--objective=ar"], 8), "ar past the context": (["--objective=ar"], 24),
    "mdlm": (["--steps=4"], 8), "mdlm threshold": (["--threshold=0.5"], 8),
    "mdlm semi-AR past the context": (["--steps=6", "--semi_ar_length=4"], 20),
    "mdlm dual_sample": (["--dual_ar=0.5", "--time_cond=none", "--dual_sample"], 8),
    "uniform": (["--objective=uniform", "--steps=4"], 8),
    "bd3": (["--objective=bd3", "--bd3_block=4", "--steps=4"], 8),
    "bd3 past the context": (["--objective=bd3", "--bd3_block=4", "--steps=4"], 24),
    "bd3 speculate": (["--objective=bd3", "--bd3_block=4", "--bd3_ar=1", "--bd3_speculate"], 8),
    "bd3 speculate past the context": (["--objective=bd3", "--bd3_block=4", "--bd3_ar=1", "--bd3_speculate"], 30)}


def _net(flags, seed=0):
    """(sampling config, a random tiny network) of a sampler's flags."""
    cfg = get_config(for_objective([*SMALL, *flags]))
    torch.manual_seed(seed)
    return cfg, Transformer(model_args(cfg, V)).eval()


def _job(model, cfg, B):
    """The Job that draws cfg's samples B a batch: its sampler built from cfg, as the scripts build it."""
    return Job(model, replace(cfg, num_samples=B), SamplerOptions.from_config(cfg), MASK)


class Calls:
    """A forward hook on the network: its calls and every column they read, per call."""

    def __init__(self, model):
        self.columns = []
        self.hook = model.register_forward_pre_hook(lambda m, args: self.columns.append(args[0].numel()))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.hook.remove()


@pytest.mark.parametrize("B", [1, 2])
@pytest.mark.parametrize("name", list(SAMPLERS))
def test_every_samplers_passes_are_its_network_calls(name, B):
    """The NFE draw() reports (tokens a pass = gen_len / NFE) is every call of the network: a forward hook counts
    them. sample_clean_ar left out its prefills (27 calls for 26 passes after ROMEO:, 122 for 116 at 200 tokens)."""
    flags, G = SAMPLERS[name]
    cfg, model = _net(flags)
    start = [1, 2, 3, 4, 5] if "bd3" in name else [1, 2, 3]
    with Calls(model) as calls:
        _, nfe = draw(_job(model, cfg, B), start, G, B, torch.Generator().manual_seed(0))
    assert len(nfe) == B and max(nfe) == len(calls.columns) > 0  # threshold: the slowest sample takes part in each


def test_bd3s_first_token_from_its_noisy_half_is_a_call():
    """With no prompt the clean half has nothing to read: the first token is the noisy half's, one call of its own."""
    cfg, model = _net(SAMPLERS["bd3 speculate"][0])
    with Calls(model) as calls:
        _, st = sample_clean_ar(model, torch.zeros(1, 0, dtype=torch.long), 30, Blocks(4, MASK),
                                generator=torch.Generator().manual_seed(0))
    assert st["nfe"] == len(calls.columns) and st["nfe"] < 30  # drafts kept: fewer calls than tokens


@pytest.mark.parametrize("name, every_call", [("ar", False), ("ar past the context", False), ("mdlm", True),
                                              ("mdlm dual_sample", False), ("uniform", True), ("bd3", False),
                                              ("bd3 past the context", False), ("bd3 speculate", False),
                                              ("bd3 speculate past the context", False)])
def test_p_cache_counts_every_column_but_the_prompts_by_hand(name, every_call):
    """columns_counted, p_cache's denominator: every column of every call but the prompt's before its last (whose
    column predicts the first new token), once in each call that reads the prompt: every pass of a sampler without
    a cache, the first of one with a cache. After a window moves its first columns hold generated text, and count
    (rope positions restart there: a rule by position dropped them)."""
    flags, G = SAMPLERS[name]
    cfg, model = _net(flags)
    start = [1, 2, 3, 4, 5] if "bd3" in name else [1, 2, 3]  # bd3: the prompt's last token starts a block
    with Calls(model) as calls, columns_counted(model, start) as seen:
        draw(_job(model, cfg, 2), start, G, 2, torch.Generator().manual_seed(0))
    reads_prompt = len(calls.columns) if every_call else 1
    assert seen["columns"] == sum(calls.columns) - 2 * (len(start) - 1) * reads_prompt
    assert seen["calls"] == len(calls.columns)
    if name == "ar past the context":  # by hand: 1 of the prompt's 3, 21 steps of 1, two slides recomputing 8
        assert seen["columns"] == 2 * (1 + 21 + 2 * 8)


# ---------------------------------------------------------------------------------------- one timing
class Clock:
    """A fake time.perf_counter: 1 ms a network call and 10 us a column it reads (forward hooks), and 1 us a
    reading of the clock itself, so a callback that reads it inside a timed draw shows in the draw's time."""

    def __init__(self, monkeypatch, models):
        self.now = 0.0
        monkeypatch.setattr(time, "perf_counter", self.read)
        for m in models:
            m.register_forward_pre_hook(lambda mod, args: self.advance(1e-3 + 1e-5 * args[0].numel()))

    def advance(self, s):
        self.now += s

    def read(self):
        self.now += 1e-6
        return self.now


def _lanes():
    """Three lanes on one tokenizer: the AR, bd3's self-speculative sampler, mdlm; tiny random networks."""
    from utils.tokenizer import CharTokenizer
    tok = CharTokenizer("abcdefghijk")  # [MASK] = 11
    lanes = []
    # bd3's network 9 draws seeds 17..21 in 6, 4, 5, 4, 6 passes: the first, the fastest and the median all differ
    for name, seed in (("ar", 0), ("bd3 speculate", 9), ("mdlm", 0)):
        cfg, model = _net(SAMPLERS[name][0], seed)
        lanes.append(dict(path=f"{name}/model.pt", name=name, model=model, tok=tok, cfg=replace(cfg, num_samples=1),
                          opts=SamplerOptions.from_config(cfg)))
    return lanes


def test_time_draws_reads_the_median_of_its_rounds_every_call_on_the_clock(monkeypatch):
    """Each timed draw's seconds are its calls' cost on the fake clock, the warm-up and the counted draw untimed;
    tokens/s is gen_len over the median (not the first, not the mean), tokens a pass gen_len over the median
    passes, each with its lowest and highest; seeds follow the warm-up's."""
    lanes = _lanes()
    clock = Clock(monkeypatch, [lane["model"] for lane in lanes])
    jobs = [_job(lane["model"], lane["cfg"], 1) for lane in lanes]
    timings, ready = time_draws(jobs, [1, 2, 3], 10, 1, 5, 16, torch.device("cpu"))
    assert len(ready) == 3 * 5
    for lane, t in zip(lanes, timings):
        assert t["seeds"] == [17, 18, 19, 20, 21] and len(t["seconds"]) == len(t["passes"]) == 5
        for s, seconds, passes in zip(t["seeds"], t["seconds"], t["passes"]):
            with Calls(lane["model"]) as calls:  # the same draw again, its calls priced by hand
                before = clock.now
                _, nfe = draw(_job(lane["model"], lane["cfg"], 1), [1, 2, 3], 10, 1, torch.Generator().manual_seed(s))
                reads = round((clock.now - before - 1e-3 * len(calls.columns) - 1e-5 * sum(calls.columns)) / 1e-6)
            assert nfe == [passes] == [len(calls.columns)]
            assert seconds == pytest.approx(1e-3 * len(calls.columns) + 1e-5 * sum(calls.columns) + 1e-6 * (reads + 1))
        f = speed_figures(t, 1, 10)
        assert f["tokens_per_s"] == pytest.approx(10 / statistics.median(t["seconds"]))
        assert f["spread"] == pytest.approx([10 / max(t["seconds"]), 10 / min(t["seconds"])])
        assert f["tokens_per_pass"] == pytest.approx(10 / statistics.median(t["passes"]))
        assert f["pass_spread"] == pytest.approx([10 / max(t["passes"]), 10 / min(t["passes"])])
        assert f["p_cache"] == pytest.approx(10 / t["columns"])
    bd3 = timings[1]  # its rounds vary by seed: the median is neither the first reading nor the fastest
    assert bd3["passes"][0] > statistics.median(bd3["passes"]) and bd3["seconds"][0] > statistics.median(bd3["seconds"])
    assert min(bd3["seconds"]) < statistics.median(bd3["seconds"])


def test_the_race_and_frontier_read_the_same_figures_for_the_same_draws(monkeypatch, capsys):
    """race.py's lanes and frontier.py's points, for the same checkpoints, samplers and seeds, in one process on
    one fake clock: the same tokens/s, spread, tokens a pass and p_cache, and the race's caption says them. Its
    frames come from a separate draw stamped step by step, whose callbacks read the clock, never timed: the
    figures would differ if they were (they cost the AR +10-13 % and bd3 +3-5 % of a real draw)."""
    race, frontier = script("race"), script("frontier")
    lanes = _lanes()
    Clock(monkeypatch, [lane["model"] for lane in lanes])
    start, G, n = [1, 2, 3], 10, 5
    args = SimpleNamespace(gen_len=G, seeds=n, seed=16)
    race.run_lanes(lanes, start, args, torch.device("cpu"))
    runs = [dict(path=lane["path"], model=lane["model"], tok=lane["tok"], points=[(None, lane["cfg"], lane["opts"])],
                 rows=[dict(curve="c", temperature=1.0)]) for lane in lanes]
    fargs = SimpleNamespace(time_batches=[1], repeats=n, seed=16, time_draws=1)
    frontier.time_points(runs, fargs, start, G, torch.device("cpu"))
    out = capsys.readouterr().out
    for lane, run in zip(lanes, runs):
        f, pt = lane["figures"], run["rows"][0]
        # equal but for the clock's rounding (a callback timed would add >= 1e-4 of a draw)
        assert [f["tokens_per_s"], *f["spread"], f["tokens_per_pass"], *f["pass_spread"], f["p_cache"]] == pytest.approx(
            [pt["tokens_per_s_b1"], *pt["spread_b1"], pt["tokens_per_pass_b1"], *pt["pass_spread_b1"],
             pt["p_cache_b1"]], rel=1e-9)
        assert f"{lane['name']}: {f['tokens_per_s']:,.0f} tokens/s ({f['spread'][0]:,.0f}-{f['spread'][1]:,.0f})" in out
        assert f"{f['tokens_per_pass']:.2f} tokens a pass" in lane["caption"]
        # the frames replay the median-time draw: its stamps end at the median seconds (n odd: the median itself)
        assert lane["seconds"] == pytest.approx(G / f["tokens_per_s"])
        assert lane["stamps"][-1][0] <= lane["seconds"] and lane["stamps"][-1][1].x[0, len(start):].ne(MASK).all()


def test_time_draws_times_a_draw_when_a_round_makes_several(monkeypatch):
    """frontier.py's --time-draws K: a round times K draws in turn (seeds seed + K * k + j); its seconds are a draw's,
    the round's over K: on the fake clock, the mean of the K draws' own costs."""
    lanes = _lanes()[:1]
    clock = Clock(monkeypatch, [lanes[0]["model"]])
    job = _job(lanes[0]["model"], lanes[0]["cfg"], 1)
    [t], _ = time_draws([job], [1, 2, 3], 10, 1, 2, 0, torch.device("cpu"), 3)
    assert t["seeds"] == [3, 4, 5, 6, 7, 8] and len(t["seconds"]) == 2
    costs = []
    for s in t["seeds"]:
        before = clock.now
        draw(job, [1, 2, 3], 10, 1, torch.Generator().manual_seed(s))
        costs.append(clock.now - before)
    assert t["seconds"] == pytest.approx([sum(costs[:3]) / 3, sum(costs[3:]) / 3], rel=1e-3)


def test_the_busy_note_reads_the_median_of_the_run_queue(monkeypatch):
    """More threads ready to run than cores, at the median of the timed draws: a note; a burst does not make one,
    nor does a queue that fills the cores exactly; an accelerator's figures get none."""
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    cpu = torch.device("cpu")
    assert busy_note([1, 2, 9], cpu) == "" and busy_note([2, 2, 2], cpu) == "" and busy_note([None, None], cpu) == ""
    assert busy_note([3, 3, 4, None], cpu).startswith("note: the machine was busy: 3 threads ready to run on 2 cores "
                                                      "(median while timing, up to 4)")
    assert busy_note([9, 9], torch.device("meta")) == ""
