"""scripts/race.py: checkpoints sampling one prompt on one wall clock, timed as frontier.py times
(tests/test_speed.py holds the two together); a refusal comes before any sampling; its default output is new.

    python -m pytest -q tests/test_race.py
"""
import pytest
import torch
from PIL import Image

from helpers import MICRO, FIXTURES, assert_one_line_error, for_objective, real_text, run_cli_here, run_here, script
from test_speed import _lanes

race = script("race")


@pytest.fixture
def toy_race(monkeypatch, tmp_path):
    """race.main on three tiny random lanes (the AR, bd3's speculative sampler, mdlm), in a fresh directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(race, "open_lanes", lambda args, device: _lanes())
    return ["a.pt", "b.pt", "c.pt", "--prompt", "abc", "--gen-len", "6", "--seeds", "3", "--tick-ms", "50"]


def test_the_default_output_is_a_new_name_each_race_and_a_typed_one_is_replaced_only_when_told(toy_race, tmp_path,
                                                                                                 capsys):
    for k in (1, 2):
        code, out, err = run_cli_here(race.main, toy_race, capsys)
        assert code == 0, err
        gif = tmp_path / "artifacts" / "media" / f"race_{k}.gif"
        assert gif.exists() and str(gif.relative_to(tmp_path)) in out
    assert not (tmp_path / "artifacts" / "media" / "race_3.gif").exists()
    first = (tmp_path / "artifacts" / "media" / "race_1.gif").read_bytes()
    code, _, err = run_cli_here(race.main, [*toy_race, "--out", "artifacts/media/race_1.mp4"], capsys)
    assert_one_line_error(code, err, "already exists: pass --overwrite")
    assert (tmp_path / "artifacts" / "media" / "race_1.gif").read_bytes() == first
    code, _, err = run_cli_here(race.main, [*toy_race, "--out", "artifacts/media/race_1.mp4", "--overwrite"], capsys)
    assert code == 0, err


@pytest.mark.parametrize("ready, busy", [(2, False), (9, True)])
def test_the_race_says_when_the_machine_was_too_busy_for_its_figures(ready, busy, toy_race, monkeypatch, capsys):
    """A busy machine is said beside the figures and in the frames."""
    from evals import samples
    from sampling import video
    monkeypatch.setattr(samples, "run_queue", lambda: ready)
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    captions = []
    real = video.TraceWriter.add_frame
    monkeypatch.setattr(video.TraceWriter, "add_frame", lambda self, *a, caption="", **k: captions.append(caption) or
                        real(self, *a, caption=caption, **k))
    code, out, err = run_cli_here(race.main, toy_race, capsys)
    assert code == 0, err
    note = f"note: the machine was busy: {ready} threads ready to run on 2 cores"
    assert (note in out) == busy and all(("a busy machine" in c) == busy for c in captions) and captions
    assert all("medians (lowest-highest) of 3 seeds" in c for c in captions)


def test_each_lane_after_the_first_is_read_as_its_paired_ratio(toy_race, monkeypatch, capsys):
    """The ratio to the first lane, seed by seed (one round, one load): the median of the ratios, not the ratio of
    the medians; a slower lane reads below 1."""
    assert race.paired_ratio([1.0, 2.0, 3.0], [0.5, 4.0, 3.0]) == (1.0, 0.5, 2.0)  # medians' ratio: 0.67
    assert race.paired_ratio([1.0, 1.0, 1.0], [2.0, 2.0, 4.0]) == (0.5, 0.25, 0.5)  # twice as slow: 0.5x
    from evals import samples
    real = samples.time_draws

    def fixed(jobs, *a, **k):  # the first lane 10 ms a draw, the others 5 and 20: 2x and 0.5x its tokens/s
        timings, ready = real(jobs, *a, **k)
        for row, ms in zip(timings, (10, 5, 20)):
            row["seconds"] = [ms / 1000] * len(row["seconds"])
        return timings, ready
    monkeypatch.setattr(samples, "time_draws", fixed)
    code, out, err = run_cli_here(race.main, toy_race, capsys)
    assert code == 0, err
    said = [line for line in out.splitlines() if "x the tokens/s (" in line]
    assert [line.split(": ")[1].split("x")[0] for line in said] == ["2.00", "0.50"], said
    assert all("over 3 seeds" in line for line in said)


def test_a_lanes_frames_walk_its_stamps_on_the_timed_clock(toy_race, capsys):
    """Before the first stamp a lane is all [MASK]; at its median seconds whole and 'done'; a token revealed within
    the tick is new; its caption leads its frames."""
    from evals.samples import start_ids
    lanes = _lanes()
    args = race.parse_args(toy_race)
    race.run_lanes(lanes, start_ids(lanes[0]["tok"], "abc"), args, torch.device("cpu"))
    for lane in lanes:
        texts, states = race.lane_cells(lane, 0.0, 0.05)
        label = "".join(t for t, s in zip(texts, states) if s == "label")
        assert states.count("mask") == 6 and "done at" not in label
        texts, states = race.lane_cells(lane, lane["seconds"], 0.05)
        label = "".join(t for t, s in zip(texts, states) if s == "label")
        assert states.count("mask") == 0 and f"(done at {lane['seconds']:.2f} s)" in label
        assert label.startswith(lane["caption"].split(", ")[0])
        t, st = lane["stamps"][len(lane["stamps"]) // 2]
        _, states = race.lane_cells(lane, t, 1e-9)
        assert states.count("new") == int(st.revealed[0].sum())


def test_an_even_number_of_seeds_shows_the_lower_middle_draw(monkeypatch):
    """With 4 seeds (on test_speed's fake clock) a lane's frames replay the lower of its two middle draws."""
    from types import SimpleNamespace
    from evals import samples
    from test_speed import Clock
    lanes, timed, real = _lanes(), [], samples.time_draws
    Clock(monkeypatch, [lane["model"] for lane in lanes])
    monkeypatch.setattr(samples, "time_draws", lambda *a: timed.append(real(*a)) or timed[-1])
    race.run_lanes(lanes, [1, 2, 3], SimpleNamespace(gen_len=10, seeds=4, seed=16), torch.device("cpu"))
    timings = timed[0][0]
    assert any(sorted(t["seconds"])[1] < sorted(t["seconds"])[2] for t in timings)  # the two middles differ
    for lane, t in zip(lanes, timings):
        lower = sorted(range(4), key=lambda i: t["seconds"][i])[1]
        assert (lane["seed"], lane["seconds"]) == (t["seeds"][lower], t["seconds"][lower])


def test_the_frames_run_until_the_slowest_lane_is_done_at_the_threads_asked(toy_race, monkeypatch, capsys):
    """On a fake clock, a frame a millisecond: the last frame shows every lane whole (the clock runs to the slowest
    lane's median draw), and every caption names the --threads the lanes drew with."""
    from sampling import video
    from test_speed import Clock
    lanes, frames = _lanes(), []
    Clock(monkeypatch, [lane["model"] for lane in lanes])
    monkeypatch.setattr(race, "open_lanes", lambda args, device: lanes)
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    real = video.TraceWriter.add_frame
    monkeypatch.setattr(video.TraceWriter, "add_frame", lambda self, texts, states, *a, caption="", **k:
                        frames.append((states, caption)) or real(self, texts, states, *a, caption=caption, **k))
    threads = torch.get_num_threads()
    try:
        code, out, err = run_cli_here(race.main, [*toy_race, "--tick-ms", "1", "--threads", "2"], capsys)
    finally:
        torch.set_num_threads(threads)
    assert code == 0, err
    seconds = sorted(lane["seconds"] for lane in lanes)
    assert int(seconds[0] * 1000) < int(seconds[-1] * 1000)  # the lanes end at different ticks
    assert frames[-1][0].count("mask") == 0 and [s.count("mask") > 0 for s, _ in frames].count(True) >= 1
    assert all("2 thread(s)" in caption for _, caption in frames)


def test_a_lane_too_long_for_its_context_is_told_a_gen_len_the_race_has(monkeypatch, capsys):
    """The advice is a --gen-len the race takes, not inference.py's --semi-ar-length."""
    import evals.samples
    from utils.errors import UserError
    lanes = _lanes()
    monkeypatch.setattr(evals.samples, "open_checkpoint", lambda path, device: (
        lanes[2]["model"], None, lanes[2]["cfg"], lanes[2]["tok"]))
    args = race.parse_args(["m.pt", "n.pt", "--prompt", "abc", "--gen-len", "40"])
    with pytest.raises(UserError) as e:
        race.open_lanes(args, "cpu")
    assert "use --gen-len 13 or less" in str(e.value) and "semi" not in str(e.value)


@pytest.fixture(scope="module")
def lanes(tmp_path_factory):
    """Tiny checkpoints: an AR and mdlm on one text, one on another text, and mdlm's with its characters reordered."""
    from utils.checkpoint import load_checkpoint, save_checkpoint
    d = tmp_path_factory.mktemp("lanes")
    for name, text, flags in (("ar", real_text(), ["--objective=ar"]), ("mdlm", real_text(), []),
                              ("other", FIXTURES / "tiny_stories.txt", [])):
        run_here(for_objective(["train.py", f"--data_path={text}", f"--out_dir={d / name}", *MICRO, "--max_iters=2",
                                "--eval_interval=100", *flags]), d, threads=1)
    ck = load_checkpoint(d / "mdlm" / "model.pt")
    ck["tokenizer"] = dict(ck["tokenizer"], chars=ck["tokenizer"]["chars"][::-1])
    (d / "flipped").mkdir()
    save_checkpoint(d / "flipped" / "model.pt", ck)
    return d


def test_a_race_of_trained_checkpoints_draws_one_frame_a_tick(lanes, tmp_path, capsys):
    out = tmp_path / "race.mp4"
    code, text, err = run_cli_here(race.main, [lanes / "ar/model.pt", lanes / "mdlm/model.pt", "--prompt", "ROMEO:",
                                               "--gen-len", 8, "--seeds", 3, "--tick-ms", 1, "--out", out], capsys)
    assert code == 0, err
    ar, mdlm = [line for line in text.splitlines() if "tokens a pass" in line]
    assert "mdlm / ar: " in text and "x the tokens/s (" in text  # the lane's ratio to the first
    # a token a pass, and the prompt's pass before its last token (8 / 9 calls); one column a token
    assert "0.89 tokens a pass (0.89-0.89), p_cache 1.00" in ar
    assert "2.00 tokens a pass (2.00-2.00)" in mdlm  # MICRO's --steps=4 for its 8 blanks
    frames = int(text.split("race: ")[1].split(" frames")[0])
    gif = Image.open(tmp_path / "race.gif")
    assert gif.n_frames == frames >= 2 and "frames of 1 ms" in text


@pytest.mark.parametrize("argv, words", [
    (["ar/model.pt", "other/model.pt"], "has another tokenizer than"),
    (["ar/model.pt", "flipped/model.pt"], "has another tokenizer than"),  # its size the same: compared whole
    (["ar/model.pt", "mdlm/model.pt", "--gen-len", "100"], "mdlm/model.pt cannot race on this prompt"),
    (["ar/model.pt", "mdlm/model.pt", "--out", "old.mp4"], "old.mp4 already exists: pass --overwrite"),
    (["ar/model.pt", "mdlm/model.pt", "--out", "v.mp4"], "v.gif already exists"),  # the GIF beside it counts
])
def test_a_race_that_cannot_run_is_refused_before_any_sampling(argv, words, lanes, monkeypatch, capsys):
    monkeypatch.chdir(lanes)
    (lanes / "old.mp4").write_bytes(b"an earlier race")
    (lanes / "v.gif").write_bytes(b"an earlier race's GIF")
    monkeypatch.setattr(race, "run_lanes", lambda *a: pytest.fail("sampled before the refusal"))
    code, _, err = run_cli_here(race.main, argv, capsys)
    assert_one_line_error(code, err, words)
    assert (lanes / "old.mp4").read_bytes() == b"an earlier race" and not list(lanes.glob("artifacts/media/race*"))
