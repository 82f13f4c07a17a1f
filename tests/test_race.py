"""scripts/race.py: checkpoints sampling one prompt on one wall clock. Each lane is timed through the
code frontier.py times (evals.samples.draw), frames are ticks of that clock, and every refusal
(another tokenizer, a lane that cannot sample the prompt, an output that exists) comes before any
sampling and writes nothing.

    python -m pytest -q tests/test_race.py
"""
import pytest
from PIL import Image

from helpers import MICRO, FIXTURES, assert_one_line_error, for_objective, real_text, run_cli_here, run_here, script

race = script("race")


@pytest.fixture(scope="module")
def lanes(tmp_path_factory):
    """Two tiny checkpoints on one text (an AR and masked diffusion), and one on another text (another vocabulary)."""
    d = tmp_path_factory.mktemp("lanes")
    for name, text, flags in (("ar", real_text(), ["--objective=ar"]), ("mdlm", real_text(), []),
                              ("other", FIXTURES / "tiny_stories.txt", [])):
        run_here(for_objective(["train.py", f"--data_path={text}", f"--out_dir={d / name}", *MICRO, "--max_iters=2",
                                "--eval_interval=100", *flags]), d, threads=1)
    return d


@pytest.mark.slow
def test_a_race_stamps_each_lane_by_the_clock_and_draws_one_frame_a_tick(lanes, tmp_path, capsys):
    out = tmp_path / "race.mp4"
    code, text, err = run_cli_here(race.main, [lanes / "ar/model.pt", lanes / "mdlm/model.pt", "--prompt", "ROMEO:",
                                               "--gen-len", 8, "--repeats", 3, "--tick-ms", 1, "--out", out], capsys)
    assert code == 0, err
    ar, mdlm = [line for line in text.splitlines() if "tokens/s" in line]
    assert "8 passes, 1.00 tokens a pass, p_cache 1.00" in ar  # a token a pass, one column a token
    assert "4 passes, 2.00 tokens a pass" in mdlm  # MICRO's --steps=4 for its 8 blanks
    frames = int(text.split("race: ")[1].split(" frames")[0])
    gif = Image.open(tmp_path / "race.gif")
    assert gif.n_frames == frames >= 2 and "frames of 1 ms" in text


@pytest.mark.slow
@pytest.mark.parametrize("argv, words", [
    (["ar/model.pt", "other/model.pt"], "has another tokenizer than"),
    (["ar/model.pt", "mdlm/model.pt", "--gen-len", "100"], "mdlm/model.pt cannot race on this prompt"),
    (["ar/model.pt"], "a race needs two or more checkpoints"),
    (["ar/model.pt", "mdlm/model.pt", "--out", "old.mp4"], "old.mp4 already exists: pass --overwrite"),
    (["ar/model.pt", "mdlm/model.pt", "--out", "v.mp4"], "v.gif already exists"),  # the GIF beside it counts
])
def test_a_race_that_cannot_run_is_refused_before_any_sampling(argv, words, lanes, monkeypatch, capsys):
    monkeypatch.chdir(lanes)
    (lanes / "old.mp4").write_bytes(b"an earlier race")
    (lanes / "v.gif").write_bytes(b"an earlier race's GIF")
    monkeypatch.setattr(race, "run_lane", lambda *a: pytest.fail("sampled before the refusal"))
    code, _, err = run_cli_here(race.main, argv, capsys)
    assert_one_line_error(code, err, words)
    assert (lanes / "old.mp4").read_bytes() == b"an earlier race"
