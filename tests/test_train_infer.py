"""End to end on real text: train, learn, resume, sample, trace; the loop's clock, memory check, LR and splits.
python -m pytest -q tests/test_train_infer.py"""
import json
import math
import re
from types import SimpleNamespace

import pytest
import torch

import train
from checkpoint_manager import load_model
from configurator import get_config
from helpers import MICRO, TINY, for_objective, model_args, real_text, rows, run_cli_here, run_here, script
from utils import dataloader, train_log
from utils.checkpoint import load_checkpoint, save_checkpoint
from utils.errors import UserError
from utils.train_log import check_memory


def test_training_drives_the_bound_well_below_uniform(tiny_ckpt):
    evals = [r for r in rows(tiny_ckpt.parent) if r["kind"] == "eval"]
    ckpt = load_checkpoint(tiny_ckpt)
    V = len(ckpt["tokenizer"]["chars"])  # characters the model can emit ([MASK] excluded)
    uniform = math.log(V)  # the bound of a uniform guess is ln V nats/char exactly
    # measured 3.139 ± 0.064 nats/char against ln V = 4.174
    assert evals[-1]["nats_per_token"] < 0.77 * uniform, (evals, uniform)
    assert evals[-1]["nats_per_token"] < evals[0]["nats_per_token"]
    assert evals[-1]["se"] > 0 and evals[-1]["bits_per_char"] == pytest.approx(evals[-1]["nats_per_token"] / math.log(2))
    assert ckpt["iter"] == 300 and ckpt["config"]["max_iters"] == 300
    assert (tiny_ckpt.parent / "best.pt").is_file()


def test_max_iters_zero_builds_and_exits_without_writing(in_tmp, capsys):
    train.main([f"--data_path={real_text()}", "--out_dir=out", "--max_iters=0", *TINY])
    out = capsys.readouterr().out
    from model import ModelArgs, Transformer
    vocab = len(set(real_text().read_text())) + 1  # the characters + [MASK]
    n = Transformer(ModelArgs(vocab_size=vocab, block_size=64, n_layer=2, n_head=2, n_embd=64, diffusion_steps=20)).num_params()
    assert f"model: {n:,} parameters" in out and re.search(r"^  block_size +\= 64$", out, re.M)  # the resolved config
    assert f"vocab {vocab} (char, [MASK]={vocab - 1})" in out and "max_iters=0: built data" in out
    assert not (in_tmp / "out").exists()


def test_your_own_text_trains_in_its_own_run_from_no_prompt_of_the_presets(in_tmp):
    """Your text's run goes to artifacts/models/PRESET_NAME unless --out_dir says; a preset's prompt is its text's."""
    def setup(*argv):
        return train.setup([*argv, "--max_iters=0"])[0]
    for path in ("notes/my text.txt", "mytext.txt", "data/tinyshakespeare.txt"):
        (in_tmp / path).parent.mkdir(exist_ok=True)
        (in_tmp / path).write_text(real_text().read_text()[:3000])
    assert setup("cpu", "--data_path=notes/my text.txt").out_dir == "artifacts/models/cpu_my_text"
    assert setup("--data_path=mytext.txt").out_dir == "artifacts/models/mytext"  # no preset: the file's name alone
    assert setup("cpu", "baby", "--data_path=mytext.txt").out_dir == "artifacts/models/baby_mytext"  # the last preset
    assert setup("cpu", "--data_path=mytext.txt", "--out_dir=mine").out_dir == "mine"
    assert setup("cpu").out_dir == "artifacts/models/cpu" and setup("cpu").prompt == "ROMEO:"  # the preset's own text
    assert setup("cpu", "--data_path=mytext.txt").prompt == ""
    assert setup("cpu", "--data_path=mytext.txt", "--prompt=the ").prompt == "the "


def test_a_run_beside_the_presets_refuses_a_second_try_and_its_advice_resumes_it(in_tmp, capsys):
    """Beside the preset's run, touching nothing there; its advice (--resume) runs; no step left: a report."""
    (in_tmp / "artifacts" / "models" / "cpu").mkdir(parents=True)
    (in_tmp / "artifacts" / "models" / "cpu" / "model.pt").write_bytes(b"the preset's own run")
    (in_tmp / "mytext.txt").write_text(real_text().read_text()[:30000])
    argv = ["cpu", "--data_path=mytext.txt", *MICRO, "--eval_interval=2", "--viz_video=off"]
    run = in_tmp / "artifacts" / "models" / "cpu_mytext"
    code, out, err = run_cli_here(train.main, [*argv, "--max_iters=4"], capsys)
    assert code == 0 and load_checkpoint(run / "model.pt")["iter"] == 4, err
    assert (in_tmp / "artifacts" / "models" / "cpu" / "model.pt").read_bytes() == b"the preset's own run"
    before = (run / "model.pt").read_bytes()
    code, _, err = run_cli_here(train.main, [*argv, "--max_iters=4"], capsys)
    assert code == 2 and "artifacts/models/cpu_mytext already holds checkpoints: pass --resume" in err
    assert (run / "model.pt").read_bytes() == before  # nothing lost
    code, out, err = run_cli_here(train.main, [*argv, "--max_iters=6", "--resume"], capsys)
    assert code == 0 and "resumed from artifacts/models/cpu_mytext/model.pt at iter 4" in out, err
    ck = load_checkpoint(run / "model.pt")
    assert ck["iter"] == 6 and ck["config"]["max_iters"] == 6
    files = {p.name: p.read_bytes() for p in run.iterdir()}
    code, text, err = run_cli_here(train.main, [*argv, "--max_iters=4", "--resume"], capsys)
    assert code == 0 and "is at iter 6 >= max_iters=4: no step to train, so only its end-of-run report follows" in text
    assert "---- final validation metrics" in text and "  test bound" in text and "iter 7" not in text
    assert {p.name: p.read_bytes() for p in run.iterdir()} == files  # nothing written


def test_inference_writes_text_mp4_and_gif_and_the_same_seed_gives_the_same_text(tiny_ckpt, tmp_path, capsys):
    import inference
    from PIL import Image
    import imageio_ffmpeg
    video = tmp_path / "media" / "trace.mp4"
    argv = ["--checkpoint", tiny_ckpt, "--prompt", "the ", "--gen-len", 40, "--steps", 20, "--seed", 0]
    code, out, err = run_cli_here(inference.main, [*argv, "--temperature", 1.0, "--viz-video", video, "--trace-every",
                                                   2, "--gif-frame-ms", 100], capsys)
    assert code == 0, err
    text = out.splitlines()[1]
    assert text.startswith("the ") and len(text) >= 40 and "_" not in text[4:]
    n_frames = 1 + 20 // 2  # the all-[MASK] start, then every 2nd of 20 steps
    with Image.open(video.with_suffix(".gif")) as gif:
        assert gif.n_frames == n_frames
    hold = math.ceil(1500 / 100)  # the last frame is held 1.5 s: 14 extra frames in the MP4
    assert imageio_ffmpeg.count_frames_and_secs(str(video))[0] == n_frames + hold - 1
    assert run_cli_here(inference.main, [*argv, "--viz-video", "off"], capsys)[1].splitlines()[1] == text


def _fake_clock_run(monkeypatch, step_s, *argv, eval_s=0.0):
    clock = [0.0]
    real_step, real_eval = train.train_step, train.run_eval

    def step(*a, **k):
        clock[0] += step_s
        return real_step(*a, **k)

    def evaluate(*a, **k):
        clock[0] += eval_s
        return real_eval(*a, **k)
    monkeypatch.setattr(train, "train_step", step)
    monkeypatch.setattr(train, "run_eval", evaluate)
    monkeypatch.setattr(train_log, "time", SimpleNamespace(time=lambda: clock[0]))  # the log's clock
    monkeypatch.setattr(train_log, "run_queue", lambda: 1)  # a quiet machine: no shared-cores note
    train.main([f"--data_path={real_text()}", "--out_dir=out", "--overwrite", *MICRO, "--eval_interval=100", *argv])


def test_the_log_clock_counts_steps_and_stops_during_evals(in_tmp, monkeypatch):
    """metrics.jsonl's seconds count training time only, also with evals between two log lines."""
    _fake_clock_run(monkeypatch, 1.0, "--max_iters=12", "--eval_interval=5", "--log_interval=6", eval_s=100.0)
    assert [r["seconds"] for r in rows(in_tmp / "out") if r["kind"] == "train"] == [6.0, 12.0]


def test_the_first_step_prints_a_settling_eta_and_a_long_run_notes_it_once_settled(in_tmp, monkeypatch, capsys):
    _fake_clock_run(monkeypatch, 1000.0, "--max_iters=40", "--log_interval=5")  # 1000 s a step: 40 steps > 3 h
    out = capsys.readouterr().out
    assert "iter 1/40 | 1000.00 s/step (the first, setup included) | eta ~" in out and "(settling)" in out
    assert "iter 15/40 |" in out and "eta ~" in out.split("iter 15/40 |")[1].split("\n")[0]  # 2 windows past the first
    assert "| eta 6h17m" in out.split("iter 20/40 |")[1].split("\n")[0]  # 3 past the first: settled (20 steps + the final eval left)
    # the note, once, after the first settled ETA; no preset named (MICRO is smaller than the laptop's)
    assert out.count("note: this run needs ~6h17m on this device (cpu)\n") == 1 and "python train.py cpu" not in out
    assert out.index("iter 20/40 |") < out.index("note:") < out.index("iter 25/40 |")
    _fake_clock_run(monkeypatch, 1.0, "--max_iters=12", "--log_interval=1")  # its own log line comes anyway: no second
    assert capsys.readouterr().out.count("iter 1/12 |") == 1


def test_the_cpu_memory_estimate_counts_what_a_cpu_process_holds():
    """On CPU the peak RSS is ~1.7x the saved activations + 0.3 GiB (measured 4.42 GiB); elsewhere the tensors alone."""
    from model import Transformer
    from utils.train_log import estimate_line
    cfg = get_config([])
    model = Transformer(model_args(cfg, 66))
    line, _ = estimate_line(cfg, model, torch.device("cpu"), "float32", 70.9e6, 256, 0.4)
    assert line.startswith("estimate: ~4.5 GiB peak RSS on CPU = 0.2 weights+grads+adamw + 4.1 activations")
    line, _ = estimate_line(cfg, model, torch.device("meta"), "float32", 70.9e6, 256, 0.4)
    assert line.startswith("estimate per rank: ~2.6 GiB of meta memory")


def test_a_cpu_run_past_the_machines_ram_is_refused_only_when_it_would_train(monkeypatch):
    """check_memory on a CPU: past the RAM (shared by its ranks) refused, in GiB to a tenth; equal to it passes."""
    import os
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
    """check_memory on CUDA: a rank has 95 % of its own GPU's memory (ranks do not divide it)."""
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
    from utils.optim import lr_at
    c = get_config(["--max_iters=1000", "--warmup_iters=100", "--learning_rate=1e-3", "--min_lr=1e-4"])
    assert lr_at(0, c) == 1e-5 and lr_at(99, c) == 1e-3  # (it + 1) / warmup of the peak
    assert abs(lr_at(550, c) - 5.5e-4) < 1e-12  # half way through the decay: the mid point of peak and floor
    assert abs(lr_at(1000, c) - 1e-4) < 1e-12 and abs(lr_at(1100, c) - 1e-4) < 1e-12  # the floor, and past max_iters


def test_a_short_run_caps_the_presets_warmup_at_a_tenth_of_its_steps():
    from configurator import parse as read, validate
    from utils.optim import cap_warmup, lr_at

    def parse(argv):  # as train.py's setup
        cfg, given = read(argv).over()
        validate(cfg, given)
        return cfg, given
    cfg, given = parse(["cpu", "--max_iters=40"])  # the preset's 100 warm-up steps would never reach the peak LR
    capped, note = cap_warmup(cfg, given)
    assert capped.warmup_iters == 4 and "warmup_iters=100 capped at 10% of max_iters=40" in note
    assert lr_at(3, capped) == capped.learning_rate and lr_at(2, capped) < capped.learning_rate
    assert lr_at(39, capped) > capped.min_lr and abs(lr_at(40, capped) - capped.min_lr) < 1e-12
    assert cap_warmup(*parse(["cpu"]))[0].warmup_iters == 100  # 100 of 2,000: left alone, no line
    assert cap_warmup(*parse(["cpu"]))[1] == ""
    assert cap_warmup(*parse(["cpu", "--max_iters=40", "--warmup_iters=30"]))[0].warmup_iters == 30  # the user's own
    assert cap_warmup(*parse(["cpu", "--max_iters=5"]))[0].warmup_iters == 1


def test_a_resume_keeps_the_capped_warmup_and_drops_a_removed_key_that_changed_no_loss(in_tmp, capsys):
    """A resume keeps the capped warm-up; a removed key that changed no loss is dropped with a note by every reader."""
    from checkpoint_manager import checkpoint_config
    micro = [a for a in MICRO if not a.startswith("--warmup_iters")]  # the default 100 steps, capped
    args = [f"--data_path={real_text()}", "--out_dir=out", *micro, "--eval_interval=10", "--log_interval=1"]
    train.main([*args, "--max_iters=20"])
    assert "warm-up: 2 steps" in capsys.readouterr().out
    path = in_tmp / "out" / "model.pt"
    old = load_checkpoint(path)
    assert old["config"]["warmup_iters"] == 2
    lrs = {r["iter"]: r["lr"] for r in rows(in_tmp / "out") if r["kind"] == "train"}
    assert lrs[2] == 3e-3 > lrs[1]  # the peak at the capped warm-up's end
    old["config"]["head_on_masked_only"] = True
    save_checkpoint(path, {k: v for k, v in old.items() if k != "checksum"})
    note = "head_on_masked_only=True, which this version removed: dropped (it changed neither the network"
    model, ckpt = load_model(path, "cpu")  # what inference.py and scripts/eval.py do with it
    assert checkpoint_config(ckpt, "a checkpoint").max_iters == 20 and note in capsys.readouterr().out
    train.main([*args, "--out_dir=new", f"--init_from={path}", "--max_iters=2"])
    assert note in capsys.readouterr().out
    train.main([*args, "--max_iters=40", "--resume"])  # 10 % of 40 would be 4: the run keeps its 2
    out = capsys.readouterr().out
    assert note in out and "warm-up:" not in out
    ck = load_checkpoint(path)
    assert ck["iter"] == 40 and ck["config"]["warmup_iters"] == 2 and "head_on_masked_only" not in ck["config"]


def test_every_eval_scores_the_same_way_so_best_pt_is_picked_among_like_figures(in_tmp, capsys):
    """Every eval draws EVAL_T times a window: best.pt compares like figures."""
    train.main([f"--data_path={real_text()}", "--out_dir=out", *MICRO, "--max_iters=12", "--eval_interval=4"])
    out = capsys.readouterr().out
    evals = [r for r in rows(in_tmp / "out") if r["kind"] == "eval"]
    assert [r["iter"] for r in evals] == [4, 8, 12] and {r["n_t"] for r in evals} == {train.EVAL_T}
    best = min(evals, key=lambda r: r["nats_per_token"])
    ck = load_checkpoint(in_tmp / "out" / "best.pt")
    assert ck["iter"] == ck["best_iter"] == best["iter"] and f"best.pt <- iter {best['iter']}: the lowest eval so far" in out
    assert f"best.pt: iter {best['iter']}, dev {best['nats_per_token']:.4f} nats/token" in out
    assert "best.pt: the lowest dev figure of the evals (" in out


def test_dev_and_test_are_disjoint_halves_of_validation_and_a_split_holds_at_least_one_window():
    """dev and test are disjoint halves; a split needs a window's length + 1 tokens: at exactly that, a batch draws."""
    import numpy as np
    from utils.dataloader import fixed_windows, get_batch, split_ids
    train_ids, val_ids = np.arange(100), np.arange(100, 151)
    dev, test = split_ids(train_ids, val_ids, "dev"), split_ids(train_ids, val_ids, "test")
    assert list(dev) + list(test) == list(val_ids) and len(dev) == 25 and not set(dev) & set(test)
    assert split_ids(train_ids, val_ids, "val") is val_ids and split_ids(train_ids, val_ids, "train") is train_ids
    assert fixed_windows(dev, 10, 5).max() < test[0]
    ids = np.arange(9)
    with pytest.raises(UserError, match="the train split has 9 tokens, too few for one window \\(10 needed\\)"):
        split_ids(ids, ids, "train", 9)
    taken = split_ids(ids, ids, "train", 8)
    assert get_batch(taken, 2, 8, torch.Generator().manual_seed(0), torch.device("cpu")).tolist() == [list(range(8))] * 2
    assert fixed_windows(split_ids(ids, ids, "val", 8), 4, 9).tolist() == [list(range(9))]


def test_the_final_report_prints_the_figure_scripts_eval_py_gives_the_same_checkpoint(in_tmp, capsys):
    """train.py's last 'test bound' line is what scripts/eval.py model.pt reports, to the printed digits."""
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
    """--data_steps=k: step i trains on step i % k's batch; 0 draws a new batch every step."""
    seen, real = [], dataloader.get_batch
    monkeypatch.setattr(dataloader, "get_batch", lambda *a: seen.append(real(*a)) or seen[-1])
    for steps in (0, 2):
        seen.clear()
        train.main(for_objective([f"--data_path={real_text()}", "--out_dir=out", "--overwrite", *MICRO, "--max_iters=5",
                                  "--eval_interval=100", "--objective=ar", f"--data_steps={steps}"]))
        same = [torch.equal(seen[i], seen[i + 2]) for i in range(3)]
        assert same == ([True] * 3 if steps else [False] * 3) and not torch.equal(seen[0], seen[1])
