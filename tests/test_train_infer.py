"""End to end on real text: train a tiny model, check it learns, resume, sample, render the trace.
python -m pytest -q tests/test_train_infer.py"""
import json
import math
import re

import pytest
import torch

import train
from checkpoint_manager import load_model
from utils import train_log
from helpers import ROOT, TINY, model_args, real_text, run_script
from utils import dataloader
from utils.checkpoint import load_checkpoint, save_checkpoint
from utils.errors import UserError



def test_training_drives_the_bound_well_below_uniform(tiny_ckpt):
    rows = [json.loads(l) for l in open(tiny_ckpt.parent / "metrics.jsonl")]
    evals = [r for r in rows if r["kind"] == "eval"]
    ckpt = load_checkpoint(tiny_ckpt)
    V = len(ckpt["tokenizer"]["chars"])  # characters the model can emit ([MASK] excluded)
    uniform = math.log(V)  # the bound of a uniform guess is ln V nats/char exactly
    # 3.139 ± 0.064 nats/char against ln V = 4.174 (3.122 when the windows' first L tokens were scored, not the last L)
    assert evals[-1]["nats_per_token"] < 0.77 * uniform, (evals, uniform)
    assert evals[-1]["nats_per_token"] < evals[0]["nats_per_token"]
    assert evals[-1]["se"] > 0 and evals[-1]["bits_per_char"] == pytest.approx(evals[-1]["nats_per_token"] / math.log(2))
    assert ckpt["iter"] == 300 and ckpt["config"]["max_iters"] == 300
    assert (tiny_ckpt.parent / "best.pt").is_file()


def test_checkpoint_round_trip_gives_identical_logits(tiny_ckpt, tmp_path):
    model, ckpt = load_model(tiny_ckpt, torch.device("cpu"))
    x, t = torch.randint(0, 20, (2, 64)), torch.tensor([3, 17])
    before = model(x, t)
    save_checkpoint(tmp_path / "copy.pt", ckpt)
    again, _ = load_model(tmp_path / "copy.pt", torch.device("cpu"))
    assert torch.equal(before, again(x, t))


def test_max_iters_zero_builds_and_exits_without_writing(in_tmp, capsys):
    train.main([f"--data_path={real_text()}", "--out_dir=out", "--max_iters=0", *TINY])
    out = capsys.readouterr().out
    from model import ModelArgs, Transformer
    vocab = len(set(real_text().read_text())) + 1  # the characters + [MASK]
    n = Transformer(ModelArgs(vocab_size=vocab, block_size=64, n_layer=2, n_head=2, n_embd=64, diffusion_steps=20)).num_params()
    assert f"model: {n:,} parameters" in out and re.search(r"^  block_size +\= 64$", out, re.M)  # the resolved config
    assert f"vocab {vocab} (char, [MASK]={vocab - 1})" in out and "max_iters=0: built data" in out
    assert not (in_tmp / "out").exists()


def test_training_on_your_own_text_samples_from_nothing_not_after_the_presets_prompt(in_tmp, monkeypatch):
    """A preset's prompt (cpu's ROMEO:) is its text's: given another --data_path, the end-of-run sample
    starts from nothing unless --prompt says otherwise."""
    cfg, _ = train.setup(["cpu", f"--data_path={real_text()}", "--out_dir=out", "--max_iters=0"])
    assert cfg.prompt == ""
    cfg, _ = train.setup(["cpu", f"--data_path={real_text()}", "--out_dir=out", "--max_iters=0", "--prompt=the "])
    assert cfg.prompt == "the "
    monkeypatch.chdir(ROOT)  # the preset's own text, data/tinyshakespeare.txt
    cfg, _ = train.setup(["cpu", f"--out_dir={in_tmp / 'out'}", "--max_iters=0"])
    assert cfg.prompt == "ROMEO:"


def test_your_own_text_trains_in_its_own_run_named_by_the_preset_and_the_file(in_tmp):
    """Issue 97: python train.py cpu --data_path=mytext.txt was refused: the preset's run, artifacts/models/cpu, held
    checkpoints. Without --out_dir a run on your own text goes to artifacts/models/PRESET_NAME (NAME: the file's),
    resumed alike; an --out_dir given wins."""
    def out_dir(*argv):
        return train.setup([*argv, "--max_iters=0"])[0].out_dir
    for path in ("notes/my text.txt", "mytext.txt", "data/tinyshakespeare.txt"):
        (in_tmp / path).parent.mkdir(exist_ok=True)
        (in_tmp / path).write_text(real_text().read_text()[:3000])
    assert out_dir("cpu", "--data_path=notes/my text.txt") == "artifacts/models/cpu_my_text"
    assert out_dir("--data_path=mytext.txt") == "artifacts/models/mytext"  # no preset: the file's name alone
    assert out_dir("cpu", "baby", "--data_path=mytext.txt") == "artifacts/models/baby_mytext"  # the last preset wins
    assert out_dir("cpu", "--data_path=mytext.txt", "--out_dir=mine") == "mine"
    assert out_dir("cpu") == "artifacts/models/cpu"  # the preset's own text: its own run


def test_the_first_try_on_your_own_text_runs_beside_the_presets_run_and_its_advice_resumes_it(in_tmp, capsys):
    """The preset's run exists (it holds checkpoints); training on your text writes beside it, touches nothing there,
    and a second try is refused with advice (--resume) that runs."""
    from helpers import MICRO, run_cli_here
    (in_tmp / "artifacts" / "models" / "cpu").mkdir(parents=True)
    (in_tmp / "artifacts" / "models" / "cpu" / "model.pt").write_bytes(b"the preset's own run")
    (in_tmp / "mytext.txt").write_text(real_text().read_text()[:30000])
    argv = ["cpu", "--data_path=mytext.txt", *MICRO, "--max_iters=4", "--eval_interval=2", "--viz_video=off"]
    code, out, err = run_cli_here(train.main, argv, capsys)
    assert code == 0, err
    assert load_checkpoint(in_tmp / "artifacts" / "models" / "cpu_mytext" / "model.pt")["iter"] == 4
    assert (in_tmp / "artifacts" / "models" / "cpu" / "model.pt").read_bytes() == b"the preset's own run"
    code, _, err = run_cli_here(train.main, argv, capsys)
    assert code == 2 and "artifacts/models/cpu_mytext already holds checkpoints: pass --resume" in err
    code, out, err = run_cli_here(train.main, [*argv[:-3], "--max_iters=6", "--eval_interval=2", "--resume"], capsys)
    assert code == 0 and "resumed from artifacts/models/cpu_mytext/model.pt at iter 4" in out, err


def test_refuses_to_overwrite_then_resumes(tiny_ckpt, in_tmp, capsys):
    out = in_tmp / "run"
    args = [f"--data_path={real_text()}", f"--out_dir={out}", "--eval_interval=20", "--gen_len=16", *TINY]
    train.main([*args, "--max_iters=20"])
    before = (out / "model.pt").read_bytes()
    with pytest.raises(UserError, match="--resume"):
        train.main([*args, "--max_iters=20"])
    assert (out / "model.pt").read_bytes() == before  # nothing lost
    train.main([*args, "--max_iters=30", "--resume"])
    ck = load_checkpoint(out / "model.pt")
    assert ck["iter"] == 30 and ck["config"]["max_iters"] == 30
    # a run with no step left (finished, or --max_iters lowered to where it was cut): its report alone
    files = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    train.main([*args, "--max_iters=20", "--resume"])
    text = capsys.readouterr().out
    assert "is at iter 30 >= max_iters=20: no step to train, so only its end-of-run report follows" in text
    assert "---- final validation metrics" in text and "  test bound" in text and "iter 31" not in text
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files  # nothing written


def test_inference_cli_writes_text_mp4_and_gif(tiny_ckpt, tmp_path):
    video = tmp_path / "media" / "trace.mp4"
    r = run_script("inference.py", "--checkpoint", tiny_ckpt, "--prompt", "the ", "--gen-len", 40, "--steps", 20,
             "--temperature", 1.0, "--seed", 0, "--viz-video", video, "--trace-every", 2, "--gif-frame-ms", 100)
    assert r.returncode == 0, r.stderr
    text = r.stdout.splitlines()[1]
    assert text.startswith("the ") and len(text) >= 40 and "_" not in text[4:]
    from PIL import Image
    import imageio_ffmpeg
    n_frames = 1 + 20 // 2  # the all-[MASK] start, then every 2nd of 20 steps
    with Image.open(video.with_suffix(".gif")) as gif:
        assert gif.n_frames == n_frames
    hold = math.ceil(1500 / 100)  # the last frame is held 1.5 s: 14 extra frames in the MP4
    assert imageio_ffmpeg.count_frames_and_secs(str(video))[0] == n_frames + hold - 1
    # the same seed gives the same text
    r2 = run_script("inference.py", "--checkpoint", tiny_ckpt, "--prompt", "the ", "--gen-len", 40, "--steps", 20, "--seed", 0,
                    "--viz-video", "off")  # no trace: it would go to the repo's artifacts/media/
    assert r2.stdout.splitlines()[1] == text


@pytest.mark.slower
def test_missing_and_corrupt_checkpoints(tmp_path):
    r = run_script("inference.py", "--checkpoint", tmp_path / "nope.pt")
    assert r.returncode == 2 and "not found" in r.stderr
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00\x01 not a checkpoint at all")  # bytes; a text file is told it is one
    r = run_script("inference.py", "--checkpoint", bad)
    assert r.returncode == 2 and "corrupt" in r.stderr and "Traceback" not in r.stderr


def test_the_log_clock_counts_steps_and_stops_during_evals(in_tmp, monkeypatch):
    """ms/it, tok/s, the ETA and metrics.jsonl's seconds count training time only: on a fake clock where a step takes
    1 s and an eval 100 s, 12 steps are 12 s, also when evals fall between two log lines (eval_interval < log_interval)."""
    import types
    clock = [0.0]
    real_step, real_eval = train.train_step, train.run_eval

    def step(*a, **k):
        clock[0] += 1.0
        return real_step(*a, **k)

    def evaluate(*a, **k):
        clock[0] += 100.0
        return real_eval(*a, **k)
    monkeypatch.setattr(train, "train_step", step)
    monkeypatch.setattr(train, "run_eval", evaluate)
    monkeypatch.setattr(train_log, "time", types.SimpleNamespace(time=lambda: clock[0]))  # the log's clock
    from helpers import MICRO, rows
    train.main([f"--data_path={real_text()}", "--out_dir=out", *MICRO, "--max_iters=12", "--eval_interval=5",
                "--log_interval=6"])
    logged = [r["seconds"] for r in rows(in_tmp / "out") if r["kind"] == "train"]
    assert logged == [6.0, 12.0], logged


def _fake_clock_run(monkeypatch, step_s, *argv):
    """train.main on a fake clock where a step takes step_s seconds; returns stdout."""
    import types
    clock = [0.0]
    real_step = train.train_step

    def step(*a, **k):
        clock[0] += step_s
        return real_step(*a, **k)
    monkeypatch.setattr(train, "train_step", step)
    monkeypatch.setattr(train_log, "time", types.SimpleNamespace(time=lambda: clock[0]))  # the log's clock
    monkeypatch.setattr(train_log, "run_queue", lambda: 1)  # a quiet machine: no shared-cores note
    from helpers import MICRO
    train.main([f"--data_path={real_text()}", "--out_dir=out", "--overwrite", *MICRO, "--eval_interval=100", *argv])


def test_the_first_step_prints_a_settling_eta_and_a_long_run_notes_it_once_settled(in_tmp, monkeypatch, capsys):
    _fake_clock_run(monkeypatch, 1000.0, "--max_iters=40", "--log_interval=5")  # 1000 s a step: 40 steps > 3 h
    out = capsys.readouterr().out
    assert "iter 1/40 | 1000.00 s/step (the first, setup included) | eta ~" in out and "(settling)" in out
    assert "iter 15/40 |" in out and "eta ~" in out.split("iter 15/40 |")[1].split("\n")[0]  # 2 windows past the first
    assert "| eta 6h17m" in out.split("iter 20/40 |")[1].split("\n")[0]  # 3 past the first: settled (20 steps + the final eval left)
    # the note, once, after the first settled ETA; MICRO is smaller than the laptop preset: no preset named
    assert out.count("note: this run needs ~6h17m on this device (cpu)\n") == 1 and "python train.py cpu" not in out
    assert out.index("iter 20/40 |") < out.index("note:") < out.index("iter 25/40 |")
    _fake_clock_run(monkeypatch, 1.0, "--max_iters=40", "--log_interval=5")  # 40 s: no note
    out = capsys.readouterr().out
    assert "iter 1/40 | 1.00 s/step" in out and "note:" not in out
    _fake_clock_run(monkeypatch, 1.0, "--max_iters=12", "--log_interval=1")  # its own log line comes anyway: no second
    assert capsys.readouterr().out.count("iter 1/12 |") == 1


def test_the_cpu_memory_estimate_counts_what_a_cpu_process_holds():
    """On CPU the peak RSS is ~1.7x the activations saved for backward + 0.3 GiB (measured: 4.42 GiB for the reference
    recipe, whose saved tensors are 2.56 GiB); elsewhere the line is the tensors alone and says so."""
    import torch
    from configurator import get_config
    from model import Transformer
    from utils.train_log import estimate_line
    cfg = get_config([])
    model = Transformer(model_args(cfg, 66))
    line, _ = estimate_line(cfg, model, torch.device("cpu"), "float32", 70.9e6, 256, 0.4)
    assert line.startswith("estimate: ~4.5 GiB peak RSS on CPU = 0.2 weights+grads+adamw + 4.1 activations")
    line, _ = estimate_line(cfg, model, torch.device("meta"), "float32", 70.9e6, 256, 0.4)
    assert line.startswith("estimate per rank: ~2.6 GiB of meta memory")


def test_a_cpu_run_past_the_machines_ram_is_refused_only_when_it_would_train(monkeypatch):
    """check_memory on a CPU: a need past the RAM (sysconf's pages, shared by its ranks) is refused with the keys, in
    GiB to a tenth (whole GiB hid a GB-for-GiB slip, 7 %); a need equal to the RAM passes, as at max_iters=0 (the
    estimate alone, as gpt200m's line)."""
    import os
    import torch
    from configurator import get_config
    from utils.train_log import check_memory
    from utils.errors import UserError
    monkeypatch.setattr(os, "sysconf", lambda name: {"SC_PAGE_SIZE": 4096, "SC_PHYS_PAGES": 2**20}[name])  # 4 GiB
    cpu, run = torch.device("cpu"), get_config(["--max_iters=10"])
    with pytest.raises(UserError, match=r"needs ~5\.0 GiB a rank, cpu has 4\.0 GiB a rank: add --activation_check"):
        check_memory(run, cpu, 5 * 2**30)
    with pytest.raises(UserError, match=r"needs ~2\.5 GiB a rank, cpu has 2\.0 GiB a rank"):  # two ranks share the RAM
        check_memory(run, cpu, 2.5 * 2**30, ranks=2)
    with pytest.raises(UserError, match=r"needs ~4\.0 GiB a rank, cpu has 4\.0 GiB a rank"):  # a byte past it
        check_memory(run, cpu, 4 * 2**30 + 1)
    check_memory(run, cpu, 4 * 2**30)  # all of it: passes
    check_memory(get_config(["--max_iters=0"]), cpu, 5 * 2**30)
    check_memory(run, cpu, 2 * 2**30, ranks=2)


def test_a_gpu_run_past_its_memory_is_refused_before_step_1(monkeypatch):
    """check_memory on CUDA, torch.cuda's properties stood in: 95 % of the GPU's memory is what a rank has (each rank
    its own GPU: ranks do not divide it), in GiB to a tenth; a need within it passes."""
    import torch
    from types import SimpleNamespace
    from configurator import get_config
    from utils.train_log import check_memory
    from utils.errors import UserError
    total = 80 * 2**30  # an 80 GiB GPU: 76.0 GiB to use
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: SimpleNamespace(total_memory=total))
    gpu, run = torch.device("cuda", 0), get_config(["--max_iters=10"])
    for ranks in (1, 8):
        with pytest.raises(UserError, match=r"needs ~76\.1 GiB a rank, cuda:0 has 76\.0 GiB a rank: add --activ"):
            check_memory(run, gpu, 76.1 * 2**30, ranks)
        check_memory(run, gpu, 0.95 * total, ranks)  # all it has: passes
    with pytest.raises(UserError, match="halve --batch_size") as e:
        check_memory(get_config(["--max_iters=10", "--activation_checkpointing"]), gpu, 100 * 2**30)
    assert "--activation_checkpointing" not in str(e.value)  # on already: not advised


def test_the_lr_warms_up_linearly_then_falls_by_a_cosine_to_the_floor():
    from configurator import get_config
    from utils.optim import lr_at
    c = get_config(["--max_iters=1000", "--warmup_iters=100", "--learning_rate=1e-3", "--min_lr=1e-4"])
    assert lr_at(0, c) == 1e-5 and lr_at(99, c) == 1e-3  # (it + 1) / warmup of the peak
    assert abs(lr_at(550, c) - 5.5e-4) < 1e-12  # half way through the decay: the mid point of peak and floor
    assert abs(lr_at(1000, c) - 1e-4) < 1e-12 and abs(lr_at(1100, c) - 1e-4) < 1e-12  # the floor, and past max_iters

def test_a_short_run_caps_the_presets_warmup_at_a_tenth_of_its_steps():
    from configurator import parse as read, validate

    def parse(argv):  # the command line read and checked, as train.py's setup
        cfg, given = read(argv).over()
        validate(cfg, given)
        return cfg, given
    from utils.optim import cap_warmup, lr_at
    cfg, given = parse(["cpu", "--max_iters=40"])  # the preset's 100 warm-up steps would never reach the peak LR
    capped, note = cap_warmup(cfg, given)
    assert capped.warmup_iters == 4 and "warmup_iters=100 capped at 10% of max_iters=40" in note
    assert lr_at(3, capped) == capped.learning_rate and lr_at(2, capped) < capped.learning_rate
    assert lr_at(39, capped) > capped.min_lr and abs(lr_at(40, capped) - capped.min_lr) < 1e-12
    assert cap_warmup(*parse(["cpu"]))[0].warmup_iters == 100  # 100 of 2,000: left alone, no line
    assert cap_warmup(*parse(["cpu"]))[1] == ""
    assert cap_warmup(*parse(["cpu", "--max_iters=40", "--warmup_iters=30"]))[0].warmup_iters == 30  # the user's own
    assert cap_warmup(*parse(["cpu", "--max_iters=5"]))[0].warmup_iters == 1


def test_the_capped_warmup_is_saved_and_a_resume_keeps_it(in_tmp, capsys):
    from helpers import MICRO, rows
    micro = [a for a in MICRO if not a.startswith("--warmup_iters")]  # the default 100 steps, capped
    args = [f"--data_path={real_text()}", "--out_dir=out", *micro, "--eval_interval=10", "--log_interval=1"]
    train.main([*args, "--max_iters=20"])
    assert "warm-up: 2 steps" in capsys.readouterr().out
    assert load_checkpoint(in_tmp / "out" / "model.pt")["config"]["warmup_iters"] == 2
    lrs = {r["iter"]: r["lr"] for r in rows(in_tmp / "out") if r["kind"] == "train"}
    assert lrs[2] == 3e-3 > lrs[1]  # the peak at the capped warm-up's end
    train.main([*args, "--max_iters=40", "--resume"])  # 10 % of 40 would be 4: the run keeps its 2
    assert "warm-up:" not in capsys.readouterr().out
    assert load_checkpoint(in_tmp / "out" / "model.pt")["config"]["warmup_iters"] == 2


@pytest.mark.parametrize("value", [False, True])
def test_a_checkpoint_holding_a_removed_key_that_changed_no_loss_samples_resumes_and_starts_runs(in_tmp, value, capsys):
    """head_on_masked_only (removed, dev/LOG.md) ran the head on the masked rows only: the same network and the same
    NELBO. A checkpoint holding it samples, resumes and starts an --init_from run either way; on, each says in one
    note that it was dropped (issue 90: it was refused, though nothing the run computes depends on it)."""
    from checkpoint_manager import checkpoint_config
    from helpers import MICRO
    args = [f"--data_path={real_text()}", "--out_dir=out", *MICRO, "--eval_interval=2", "--log_interval=1"]
    train.main([*args, "--max_iters=2"])
    path = in_tmp / "out" / "model.pt"
    old = load_checkpoint(path)
    old["config"]["head_on_masked_only"] = value
    save_checkpoint(path, {k: v for k, v in old.items() if k != "checksum"})
    capsys.readouterr()
    model, ckpt = load_model(path, "cpu")  # what inference.py and scripts/eval.py do with it
    assert checkpoint_config(ckpt, "a checkpoint").max_iters == 2
    note = "head_on_masked_only=True, which this version removed: dropped (it changed neither the network"
    assert (note in capsys.readouterr().out) == value
    train.main([*args, "--out_dir=new", f"--init_from={path}", "--max_iters=2"])
    assert (note in capsys.readouterr().out) == value
    train.main([*args, "--max_iters=3", "--resume"])
    assert (note in capsys.readouterr().out) == value
    assert load_checkpoint(path)["iter"] == 3 and "head_on_masked_only" not in load_checkpoint(path)["config"]


def test_every_eval_scores_the_same_way_so_best_pt_is_picked_among_like_figures(in_tmp, capsys):
    """The final eval used 4 t per window and the periodic ones 1: best.pt compared figures of two estimators
    (baby: 2.1991 at 1 t beat the final 2.2126 at 4 t, though the same 4 t give 2.2721 at that step)."""
    from helpers import MICRO, rows
    train.main([f"--data_path={real_text()}", "--out_dir=out", *MICRO, "--max_iters=12", "--eval_interval=4"])
    out = capsys.readouterr().out
    evals = [r for r in rows(in_tmp / "out") if r["kind"] == "eval"]
    assert [r["iter"] for r in evals] == [4, 8, 12] and {r["n_t"] for r in evals} == {train.EVAL_T}
    best = min(evals, key=lambda r: r["nats_per_token"])
    ck = load_checkpoint(in_tmp / "out" / "best.pt")
    assert ck["iter"] == ck["best_iter"] == best["iter"] and f"best.pt <- iter {best['iter']}: the lowest eval so far" in out
    assert f"best.pt: iter {best['iter']}, dev {best['nats_per_token']:.4f} nats/token" in out
    assert "best.pt: the lowest dev figure of the evals (" in out


def test_dev_and_test_are_disjoint_halves_of_validation_and_training_evals_read_only_dev():
    import numpy as np
    from utils.dataloader import fixed_windows, split_ids
    train_ids, val_ids = np.arange(100), np.arange(100, 151)
    dev, test = split_ids(train_ids, val_ids, "dev"), split_ids(train_ids, val_ids, "test")
    assert list(dev) + list(test) == list(val_ids) and len(dev) == 25 and not set(dev) & set(test)
    assert split_ids(train_ids, val_ids, "val") is val_ids and split_ids(train_ids, val_ids, "train") is train_ids
    # train.py's windows: evenly spaced over dev, so no token of the test half is ever read by a choice
    assert fixed_windows(dev, 10, 5).max() < test[0]


def test_a_split_holding_one_window_is_taken_and_one_token_fewer_is_refused():
    """split_ids(..., length): a window of `length` tokens is drawn with its next token beside it, so a split needs
    length + 1. At exactly that, a batch and a fixed window are drawn from it; at one fewer, one line refuses it
    (randint's range would be empty at the first step, and a fixed window would start before the split)."""
    import numpy as np
    from utils.dataloader import fixed_windows, get_batch, split_ids
    ids = np.arange(9)
    with pytest.raises(UserError, match="the train split has 9 tokens, too few for one window \\(10 needed\\)"):
        split_ids(ids, ids, "train", 9)
    taken = split_ids(ids, ids, "train", 8)
    assert get_batch(taken, 2, 8, torch.Generator().manual_seed(0), torch.device("cpu")).tolist() == [list(range(8))] * 2
    assert fixed_windows(split_ids(ids, ids, "val", 8), 4, 9).tolist() == [list(range(9))]


def test_the_final_report_prints_the_figure_scripts_eval_py_gives_the_same_checkpoint(in_tmp, capsys):
    """One model, one reported bound: train.py's last 'test bound' line is what scripts/eval.py model.pt reports
    (evals.bound.REPORT: 128 windows x 8 t of the test half), to the printed digits, beside the dev figure."""
    from helpers import MICRO, run_here, script
    run_here([f"--data_path={real_text()}", "--out_dir=out", *MICRO, "--max_iters=6", "--eval_interval=100"], in_tmp)
    out = capsys.readouterr().out
    assert "  dev bound (NELBO), the figure that picks best.pt: " in out and "of the dev half; ± one standard error)" in out
    line = next(ln for ln in out.splitlines() if ln.startswith("  test bound (NELBO) (scripts/eval.py's figure, the one "
                                                                "README and RESULTS cite): "))
    assert line.endswith("(128 windows x 8 t of the test half)")
    script("eval").main(["out/model.pt", "--n-samples", "0", "--device", "cpu", "--json", "e.json"])
    r = json.load(open(in_tmp / "e.json"))["runs"][0]
    assert (r["split"], r["n_windows"], r["n_t"]) == ("test", 128, 8)
    ln2 = math.log(2)
    assert (f"{r['nats_per_token']:.4f} ± {r['se']:.4f} nats/token = {r['bits_per_char'] * ln2:.4f} ± "
            f"{r['bpc_se'] * ln2:.4f} nats/char = {r['bits_per_char']:.4f} ± {r['bpc_se']:.4f} bits/char") in line


def test_data_steps_repeats_the_same_batches_epoch_after_epoch(in_tmp, monkeypatch):
    """--data_steps=k: step i trains on step i % k's batch (the equal-FLOPs AR's k passes over the same tokens); 0 (the
    default) draws a new batch every step."""
    from helpers import MICRO, for_objective
    seen, real = [], dataloader.get_batch
    monkeypatch.setattr(dataloader, "get_batch", lambda *a: seen.append(real(*a)) or seen[-1])
    for steps in (0, 2):
        seen.clear()
        train.main(for_objective([f"--data_path={real_text()}", "--out_dir=out", "--overwrite", *MICRO, "--max_iters=5",
                                  "--eval_interval=100", "--objective=ar", f"--data_steps={steps}"]))
        same = [torch.equal(seen[i], seen[i + 2]) for i in range(3)]
        assert same == ([True] * 3 if steps else [False] * 3) and not torch.equal(seen[0], seen[1])
    with pytest.raises(UserError, match="data_steps must be >= 0"):
        train.main(["--data_steps=-1"])
