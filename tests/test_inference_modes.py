"""inference.py beyond one prompt: --live (the canvas redrawn each step), --prompts-file, --interactive, and a
folder written by scripts/export.py in place of the checkpoint. python -m pytest -q tests/test_inference_modes.py"""
import io
import json
import struct

import pytest
import torch

import configurator
import inference
from checkpoint_manager import load_model
from diffusion import Schedule
from helpers import ToyModel, run_cli_here, script
from diffusion import SamplerOptions, denoise
from sampling.trace import ANSI, LiveView
from utils.checkpoint import load_checkpoint
from utils.tokenizer import CharTokenizer


class Terminal(io.StringIO):
    def isatty(self):
        return True


def _live(stream, steps=6, fps=0.0):
    tok = CharTokenizer("abcdefghijk")  # 11 characters: [MASK] = 11, the toy model's mask id
    x = torch.tensor([[0, 1, 2] + [11] * 9])
    gm = x == 11
    view = LiveView(tok, steps, stream=stream, fps=fps)
    view.start([0, 1, 2] + [0] * 9, gm[0].tolist())  # as a canvas holds them: 0 at a blank, shown as [MASK]
    denoise(ToyModel(), x, gm, Schedule(20), 11, SamplerOptions(steps), on_step=view)
    return stream.getvalue()


def test_live_prints_every_step_as_plain_text_when_not_a_terminal():
    out = _live(io.StringIO()).splitlines()
    assert out[0] == "-- step 0: 9 of 9 generated positions masked" and out[1] == "abc" + "_" * 9
    assert [line.split(":")[0] for line in out[::2]] == [f"-- step {i}" + ("/6" if i else "") for i in range(7)]
    assert out[-2].endswith(": 0 of 9 generated positions masked") and "_" not in out[-1] and out[-1].startswith("abc")
    assert "\x1b" not in "".join(out)


def test_live_redraws_in_place_on_a_terminal_with_one_colour_per_state(monkeypatch):
    monkeypatch.setenv("COLUMNS", "8")  # the 12-token canvas wraps onto two lines
    out = _live(Terminal())
    frames = out.split("\x1b[4F\x1b[J")  # back up over the last frame (header, legend, 2 lines), clear below
    assert f"{ANSI['new']}new\x1b[0m" in frames[0] and f"{ANSI['remasked']}re-masked\x1b[0m" in frames[0]  # legend
    canvas = frames[0].split("\n", 2)[2]  # under the header and the legend
    assert len(frames) == 7 and "\x1b[" not in canvas.replace("\x1b[0m", "").replace(ANSI["prompt"], "").replace(
        ANSI["mask"], "")  # the first frame: given text and masks only
    assert f"{ANSI['prompt']}abc\x1b[0m" in frames[0] and f"{ANSI['mask']}____\x1b[0m" in frames[0]
    assert sum(ANSI["new"] in f for f in frames[1:]) >= 3  # revealed this step: on yellow
    assert ANSI["mask"] not in frames[-1].split("\n", 2)[2]  # the canvas of the last frame: no [MASK] left


def test_live_paces_its_frames_on_a_terminal_and_nowhere_else(monkeypatch):
    import time
    clock, naps = [0.0], []

    def sleep(s):
        naps.append(s)
        clock[0] += s
    monkeypatch.setattr(time, "sleep", sleep)
    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])  # the sampler's steps take no time on this clock
    _live(Terminal(), steps=6, fps=8.0)  # 7 frames (step 0 to 6): 6 waits of 1/8 s between them
    assert naps == [0.125] * 6
    naps.clear()
    _live(Terminal(), steps=6)  # fps 0: no pause
    _live(io.StringIO(), steps=6, fps=8.0)  # off a terminal (a pipe, a log): text, not watched, so not paced
    tok_x = torch.tensor([[0, 1, 2] + [11] * 9])
    denoise(ToyModel(), tok_x, tok_x == 11, Schedule(20), 11, SamplerOptions(6))  # sampling without --live
    assert naps == []


# ----------------------------------------------------------------------------- with a trained model

def _samples(out):
    """The sample texts of inference's stdout (the header names the checkpoint; '---- ' lines hold timings)."""
    return [line for line in out.splitlines() if not line.startswith(("checkpoint ", "---- "))]


def test_export_holds_weights_only_and_samples_exactly_like_the_checkpoint(tiny_ckpt, tmp_path, capsys):
    out_dir = tmp_path / "export"
    code, out, err = run_cli_here(script("export").main, [tiny_ckpt, out_dir], capsys)
    assert code == 0, err
    assert sorted(p.name for p in out_dir.iterdir()) == ["config.json", "model.safetensors", "vocab.json"]
    raw = (out_dir / "model.safetensors").read_bytes()
    header = json.loads(raw[8:8 + struct.unpack("<Q", raw[:8])[0]])
    ckpt = load_checkpoint(tiny_ckpt)
    assert set(header) - {"__metadata__"} == set(ckpt["model"])  # the weights and nothing else
    assert len(raw) < 0.5 * tiny_ckpt.stat().st_size  # the checkpoint also carries AdamW's two moments
    meta = json.loads((out_dir / "config.json").read_text())
    assert meta["model_args"] == ckpt["model_args"] and meta["tokenizer"] == {"kind": "char"}
    assert (meta["objective"], meta["schedule"], meta["iter"]) == ("mdlm", "cosine", 300)
    a, _ = load_model(tiny_ckpt, torch.device("cpu"))
    b, _ = load_model(out_dir, torch.device("cpu"))
    x, t = torch.randint(0, 20, (2, 64)), torch.tensor([3, 17])
    assert torch.equal(a(x, t), b(x, t))
    argv = ["--prompt", "the ", "--gen-len", 24, "--steps", 20, "--seed", 5, "--num-samples", 2, "--viz-video", "off"]
    from_ckpt = run_cli_here(inference.main, ["--checkpoint", tiny_ckpt, *argv], capsys)
    from_export = run_cli_here(inference.main, ["--checkpoint", out_dir, *argv], capsys)
    assert from_ckpt[0] == from_export[0] == 0
    assert _samples(from_ckpt[1]) == _samples(from_export[1]) and len(_samples(from_ckpt[1])) == 2


def test_export_writes_the_weights_a_run_samples_with_and_what_they_are(tmp_path, capsys):
    """A checkpoint trained with --ema (built by hand: its EMA weights apart from its raw ones) and of 2.5 characters
    a token: the export's weights are the EMA's (what the checkpoint samples with), config.json says so, keeps the
    chars per token an export's bits/char divides by, and the --about it was given."""
    from checkpoint_manager import read_checkpoint
    from model import ModelArgs, Transformer
    from utils.checkpoint import save_checkpoint
    a = ModelArgs(vocab_size=11, block_size=16, n_layer=1, n_head=2, n_embd=16, time_cond="none")
    raw = Transformer(a).state_dict()
    ema = {k: v + 0.5 for k, v in raw.items()}
    config = dict(objective="mdlm", block_size=16, n_layer=1, n_head=2, n_embd=16, time_cond="none")
    tok = dict(kind="char", chars="abcdefghij")
    save_checkpoint(tmp_path / "m.pt", dict(model=raw, ema=ema, config=config, model_args=vars(a), iter=7,
                                            meta=dict(chars_per_token=2.5), tokenizer=tok))
    out_dir = tmp_path / "export"
    code, out, err = run_cli_here(script("export").main, [tmp_path / "m.pt", out_dir, "--about", "preset=toy"], capsys)
    assert code == 0, err
    meta = json.loads((out_dir / "config.json").read_text())
    assert meta["ema_weights"] is True and meta["about"] == {"preset": "toy"}
    assert meta["meta"] == {"chars_per_token": 2.5}
    exported, ckpt = load_model(out_dir, torch.device("cpu"))
    assert all(torch.equal(v, ema[k]) for k, v in exported.state_dict().items())
    assert read_checkpoint(str(out_dir))["meta"]["chars_per_token"] == 2.5 == ckpt["meta"]["chars_per_token"]


def _bodies(out):
    """[(prompt header, its sample)]: the '==== prompt' lines of a session and the text after each (a sample may
    hold newlines: Tiny Shakespeare's text does)."""
    session = []
    for line in _samples(out):
        if line.startswith("==== prompt"):
            session.append((line, []))
        else:
            session[-1][1].append(line)
    return [(h, "\n".join(body)) for h, body in session]


def _one(out):
    """The sample text of a one-prompt run, newlines included."""
    return ["\n".join(_samples(out))]


def test_each_prompt_of_a_session_gets_its_own_seed_and_the_seed_reproduces_the_session(tiny_ckpt, tmp_path, capsys,
                                                                                         monkeypatch):
    common = ["--checkpoint", tiny_ckpt, "--gen-len", 16, "--steps", 10, "--order", "random", "--remask", "none"]
    # prompt k draws with seed + k - 1: the printed seed reproduces it alone
    alone = [_one(run_cli_here(inference.main, [*common, "--prompt", p, "--seed", s, "--viz-video", "off"], capsys)[1])
             for p, s in (("the ", 2), ("and ", 3))]
    f = tmp_path / "prompts.txt"
    f.write_text("the \n\nand \n")  # blank lines are skipped
    code, out, _ = run_cli_here(inference.main, [*common, "--seed", 2, "--prompts-file", f], capsys)
    session = _bodies(out)
    assert code == 0 and [h for h, _ in session] == ["==== prompt 1/2: 'the ' (seed 2)", "==== prompt 2/2: 'and ' (seed 3)"]
    assert [s for _, s in session] == alone[0] + alone[1]
    assert session[0][1][len("the "):] != session[1][1][len("and "):]  # two prompts, two continuations
    again = run_cli_here(inference.main, [*common, "--seed", 2, "--prompts-file", f], capsys)[1]
    assert _bodies(again) == session  # --seed: the same session
    monkeypatch.setattr("sys.stdin", io.StringIO("the \n\u2603\nand \n"))  # a bad line says why, takes no seed, goes on
    code, out, err = run_cli_here(inference.main, [*common, "--seed", 2, "--interactive"], capsys)
    assert code == 0 and [h for h, _ in _bodies(out)] == ["==== prompt 1: 'the ' (seed 2)", "==== prompt 2: 'and ' (seed 3)"]
    assert [s for _, s in _bodies(out)] == alone[0] + alone[1]
    assert err.count("\n") == 1 and err.startswith("error: 1 character(s) not in the model's vocabulary")


def test_the_readme_prompts_file_ships_and_samples(tiny_ckpt, capsys):
    import re
    from helpers import ROOT
    files = re.findall(r"inference\.py \S+ --prompts-file (\S+)", (ROOT / "README.md").read_text())
    assert files and all((ROOT / f).is_file() for f in files)  # the README's command names a file the repo has
    # the tiny model reads Tiny Shakespeare's characters, as the cpu preset's does
    code, out, err = run_cli_here(inference.main, ["--checkpoint", tiny_ckpt, "--gen-len", 8, "--steps", 4,
                                                   "--prompts-file", ROOT / files[0]], capsys)
    n = len((ROOT / files[0]).read_text().split("\n")) - 1
    assert code == 0 and err == "" and f"==== prompt {n}/{n}: " in out
    assert "NFE 4 per sample (model calls), 4 batched passes" in out  # each figure says what it counts


def test_a_presets_sampling_settings_apply_to_a_checkpoint_trained_at_other_batch_settings(tiny_ckpt, in_tmp, capsys):
    """inference.py cpu --checkpoint X: the preset's sampler over X's model; its batch and optimiser keys are training's,
    which sampling does not read, so X's stay (X's total batch is no multiple of the preset's batch)."""
    code, out, err = run_cli_here(inference.main, ["cpu", "--checkpoint", tiny_ckpt, "--gen-len", 8, "--steps", 8],
                                  capsys)  # (the checkpoint's chain has T = 20: the preset's 64 steps would not fit)
    assert code == 0, err
    assert "sampler: 8 steps, schedule counts, order random, remask remdm cap eta=0.05" in out  # the preset's sampler


def test_live_through_the_cli(tiny_ckpt, in_tmp, capsys):
    code, out, _ = run_cli_here(inference.main, ["--checkpoint", tiny_ckpt, "--prompt", "the ", "--gen-len", 16,
                                                 "--steps", 8, "--live"], capsys)
    assert code == 0 and out.count("\n-- step ") == 9 and "-- step 8/8: 0 of 16 generated positions masked" in out
    final = out.split("-- step 8/8: 0 of 16 generated positions masked\n")[1].split("\n")[0]
    assert out.count(final) == 1  # the last frame is the sample: its text is not printed a second time


def test_a_missing_checkpoint_names_the_command_that_trains_it(in_tmp, monkeypatch):
    """Issue 73: `inference.py baby` (and eval.py on baby's checkpoint) said "train one (python train.py cpu ...)".
    The repository is pointed at the empty folder: a checkout that has trained baby keeps this test green, and no
    weights are shipped there (tests/test_shipped.py: where they are, they stand in)."""
    import utils.fileio
    from utils.fileio import train_command
    monkeypatch.setattr(utils.fileio, "REPO", str(in_tmp))
    monkeypatch.setattr(utils.fileio, "SHIPPED", str(in_tmp / "artifacts" / "weights"))  # none shipped here either
    from config import PRESETS
    from utils.errors import UserError
    for name, preset in PRESETS.items():  # every preset's sampling checkpoint is the one its training writes
        assert train_command(preset.get("checkpoint", "artifacts/models/model.pt")) == f"python train.py {name}", name
        assert preset.get("checkpoint", "").startswith(preset.get("out_dir", "artifacts/models")), name
    assert train_command("artifacts/models/model.pt") == "python train.py"
    assert train_command("artifacts/models/baby/best.pt") == "python train.py baby"
    assert train_command("runs/x/model.pt") == "python train.py PRESET --out_dir=runs/x"
    for argv, command in ((["baby"], "python train.py baby"), (["baby_bd3"], "python train.py baby_bd3"),
                          (["--checkpoint", "runs/x/model.pt"], "python train.py PRESET --out_dir=runs/x")):
        with pytest.raises(UserError, match=f"not found: train it first \\({command};"):
            inference.load(configurator.parse(argv))


@pytest.mark.parametrize("objective", ["mdlm", "ar"])
def test_a_default_gen_len_is_fitted_to_the_context_a_typed_one_is_refused(objective, tmp_path, capsys, monkeypatch):
    """README's GPU line, `python inference.py --prompt "ROMEO:"`, samples the reference recipe, whose default gen_len
    (256) fills its 256-token context: the default shrinks to the room the prompt leaves; a --gen-len the user typed is
    never changed, it is refused. The AR's window slides past the context: its length is never fitted, and its start
    token (an empty prompt) needs no room either. A stream of prompts checks and fits each one alike."""
    from helpers import MICRO, L, for_objective, real_text, run_here
    args = for_objective([f"--data_path={real_text()}", *MICRO, f"--gen_len={L}", "--max_iters=2",
                          "--eval_interval=100", f"--objective={objective}"])
    run_here(["train.py", *args, "--out_dir=run"], tmp_path, threads=1)
    ckpt = str(tmp_path / "run" / "model.pt")
    monkeypatch.chdir(tmp_path)  # the samples' traces go to artifacts/media/ here
    capsys.readouterr()
    slides = objective == "ar"
    for prompt, room in (("ROMEO:", L if slides else L - 6), ("", L)):
        code, out, err = run_cli_here(inference.main, ["--checkpoint", ckpt, "--prompt", prompt, "--seed", 0], capsys)
        assert code == 0, err
        fitted = f"--gen-len {L} (the default) exceed the model's context of {L}: generating {room} " in out
        assert fitted == (room < L), out
        assert f"---- 1 x {room} tokens" in out
    code, out, err = run_cli_here(inference.main, ["--checkpoint", ckpt, "--prompt", "ROMEO:", "--gen-len", L], capsys)
    assert (code == 0) == slides and ("exceeds the model's context" in err) != slides and "generating" not in out
    (tmp_path / "p.txt").write_text("ROMEO:\n")
    monkeypatch.setattr("sys.stdin", io.StringIO("ROMEO:\n"))
    for stream in (["--prompts-file", tmp_path / "p.txt"], ["--interactive"]):
        code, out, err = run_cli_here(inference.main, ["--checkpoint", ckpt, *stream], capsys)
        assert code == 0 and f"---- 1 x {L if slides else L - 6} tokens" in out, err


# ----------------------------------------------------------------------------- issue 97: what a trace writes and costs
def _shipped(name="baby"):
    from helpers import ROOT
    return str(ROOT / "artifacts" / "weights" / name)


@pytest.mark.parametrize("argv, written", [
    (["--html"], {".html"}),  # the page asked for, alone (it wrote an MP4 and a GIF too, unsaid)
    (["--html", "--viz-video", "auto"], {".html", ".mp4", ".gif"}),  # both, when both are asked for
    ([], {".mp4", ".gif"}),  # the default trace
    (["--viz-video", "off"], set()),
])
def test_a_sample_writes_the_traces_asked_for_and_says_each(argv, written, in_tmp, capsys):
    code, out, err = run_cli_here(inference.main, ["--checkpoint", _shipped(), "--gen-len", "8", "--seed", "0", *argv],
                                  capsys)
    assert code == 0, err
    media = in_tmp / "artifacts" / "media"
    made = sorted(media.iterdir()) if media.exists() else []
    assert {p.suffix for p in made} == written
    said = " ".join(line for line in out.splitlines() if line.startswith("trace: "))
    assert all(f"artifacts/media/{p.name}" in said for p in made)  # each file written is named in a line


def test_tokens_per_second_times_the_sampling_apart_from_the_traces_recording(in_tmp, monkeypatch, capsys):
    """148 tokens/s with --viz-video off read 42 with the trace: the recording (each step's frame, the files written
    at close) was in the sampling's seconds. A recording made slow on purpose stays out of them and is said apart."""
    import re
    import time
    from sampling import trace
    real = trace.Trace.record

    def slow(self, st):
        time.sleep(0.05)
        return real(self, st)
    monkeypatch.setattr(trace.Trace, "record", slow)
    code, out, err = run_cli_here(inference.main, ["--checkpoint", _shipped(), "--gen-len", "8", "--steps", "8",
                                                   "--seed", "0"], capsys)
    assert code == 0, err
    sampling, recording = (float(x) for x in re.search(r"([\d.]+)s sampling \([\d,]+ tokens/s; recording the trace "
                                                       r"took ([\d.]+)s more\)", out).groups())
    steps = int(re.search(r"NFE (\d+) per sample", out)[1])
    assert recording >= 0.05 * steps and sampling < 0.05 * steps, out


def test_a_stream_of_prompts_takes_viz_video_off(in_tmp, monkeypatch, capsys):
    """--interactive --viz-video off was refused (off is what a stream records anyway); another trace is still refused."""
    monkeypatch.setattr("sys.stdin", io.StringIO("ROMEO:\n"))
    code, out, err = run_cli_here(inference.main, ["--checkpoint", _shipped(), "--interactive", "--viz-video", "off",
                                                   "--gen-len", "8"], capsys)
    assert code == 0 and "==== prompt 1: 'ROMEO:'" in out, err
    (in_tmp / "p.txt").write_text("ROMEO:\n")
    code, out, err = run_cli_here(inference.main, ["--checkpoint", _shipped(), "--prompts-file", "p.txt",
                                                   "--viz-video", "off", "--gen-len", "8"], capsys)
    assert code == 0 and "==== prompt 1/1" in out, err
    code, _, err = run_cli_here(inference.main, ["--checkpoint", _shipped(), "--interactive", "--viz-video", "auto"],
                                capsys)
    assert code == 2 and "records no trace: drop --viz-video" in err
    assert not (in_tmp / "artifacts" / "media").exists()
