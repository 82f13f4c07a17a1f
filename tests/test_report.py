"""What train.py prints beside its loop (utils/train_log.py, evals/report.py): the training loss named for what it is,
and the final metrics block with a unit or a meaning for every figure. python -m pytest -q tests/test_report.py"""
import pytest
import torch

from configurator import get_config
from diffusion import SamplerOptions
from evals.report import final_report
from utils.train_log import first_step_line, fmt_eta, long_run_note, loss_label, projected_step_s
from helpers import FIXTURES, ToyModel, model_args
from utils.tokenizer import CharTokenizer
from objectives import OBJECTIVES


@pytest.mark.parametrize("argv, name, says", [
    (["cpu"], "train all_ce", "CE over every position"),  # the laptop recipe: ~0.8 beside a dev bound ~2.0
    (["cpu", "--loss_type=elbo"], "train elbo", "weighted NELBO"),
    (["cpu", "--loss_type=masked_ce"], "train masked_ce", "(no bound)"),
    (["cpu", "--objective=ar"], "train ce", "next-token CE"),
    (["cpu", "--objective=uniform", "--time_cond=learned"], "train elbo", "weighted NELBO"),
    (["cpu_bd3"], "train elbo", "on mask rates in [0.5, 1] (the bound scores every rate: not comparable to it)"),
    (["baby_bd3", "--bd3_ar=0"], "train all_ce", "CE over every position, visible ones too (no bound) on mask rates in [0.3, 1]"),
    (["baby_bd3", "--bd3_ar=1"], "train all_ce+ar", "in [0.3, 1] (the bound scores every rate: not comparable to it), the mean over 2 masks of each window plus 1 x the clean half's next-token CE"),
    (["baby"], "train all_ce+ar", "on mask rates in [0.2, 0.8] (the bound scores every rate: not comparable to it), the band's top rising from 0.5 to 0.8 over the first 100% of the run: harder windows as it goes, so this loss can rise while the dev bound falls, the mean over 4 masks of each window plus 0.25 x a causal pass's next-token CE"),
    (["baby", "--dual_ar=0"], "train all_ce", "on mask rates in [0.2, 0.8]"),
    (["baby", "--mask_draws=1"], "train all_ce+ar", "while the dev bound falls plus 0.25"),
])
def test_the_log_names_the_training_loss_apart_from_the_validation_figure(argv, name, says):
    label, legend = loss_label(get_config(argv), OBJECTIVES[get_config(argv).objective])
    assert label == name and f"'{name}' is" in legend and says in legend
    assert ("'dev NLL'" if "--objective=ar" in argv else "'dev bound'") in legend


RES = dict(nats_per_token=2.0, se=0.01, bits_per_char=2.9, bpc_se=0.02, ppl=7.4, n_windows=8, n_t=4, recon_acc=0.3,
           entropy_by_t=[(1, 10, 2.5), (11, 20, 2.9)])


def _report(capsys, *flags):
    steps = [] if "--threshold=0.5" in flags else ["--steps=8"]  # threshold decoding reads no --steps: refused beside it
    cfg = get_config(["--block_size=64", "--diffusion_steps=20", *steps, "--gen_len=12", "--viz_video=off", *flags])
    final_report(ToyModel(), CharTokenizer("abcdefghijk"), cfg, SamplerOptions.from_config(cfg), "cpu", RES)
    return capsys.readouterr().out


def test_the_final_metrics_block_labels_every_figure_and_drops_what_the_sampler_fixes(capsys):
    out = _report(capsys, "--remask=none", "--order=random")  # committed tokens final: its change rate is 0 by construction
    assert "reverse-step token change rate: 0 by construction (remask none: committed tokens are final)" in out
    assert ("dev bound (NELBO), the figure that picks best.pt: 2.0000 ± 0.0100 nats/token = 2.0101 ± 0.0139 nats/char = "
            "2.9000 ± 0.0200 bits/char (8 windows x 4 t of the dev half; ± one standard error)") in out and "exp of the bound: an upper bound" in out
    assert "fraction of masked positions whose argmax is the true token" in out and "by time step t of T=20" in out
    assert "distinct-2 (unique / all word bigrams of the 4 samples drawn, prompt excluded; all below)" in out
    assert "NFE (model calls)" in out and all(f"---- sample {i} (prompt '')" in out for i in range(4))
    out = _report(capsys, "--remask=refine")  # the reference sampler revisits committed tokens: the rate is measured
    assert "reverse-step token change rate (fraction of committed tokens a step changes): " in out
    assert "by construction" not in _report(capsys, "--remask=remdm")
    assert "0 by construction (threshold: committed tokens are final)" in _report(capsys, "--threshold=0.5")
    # a gen_len past the context: the samples are cut to what it holds, and the line says why
    full = _report(capsys)
    assert "sampling 4 x 12 tokens\n" in full and "(gen_len=" not in full
    assert "sampling 4 x 64 tokens (gen_len=100: what the context holds after the prompt)" in _report(capsys,
                                                                                                 "--gen_len=100")


def test_the_eta_projects_from_the_runs_history_and_gives_a_range_when_recent_windows_disagree():
    # the run: a slow first window (setup, a shared machine), then steadier ones
    assert projected_step_s([6.4]) == (6.4, 6.4, False)  # only the first window: all there is, settling
    assert projected_step_s([6.4, 1.5]) == (1.5, 1.5, False)  # the first left out once another is timed
    assert projected_step_s([6.4, 1.5, 2.0, 1.6]) == (1.6, 1.6, True)  # settled
    assert projected_step_s([6.4, 1.5, 2.0, 1.6, 9.0, 1.7]) == (1.7, 1.7, True)  # one slow window moves it not
    # issue 82: windows at 0.55 s, then another job halves the speed: the history holds the ETA, the recent
    # windows move first, and the line shows both
    assert projected_step_s([2.0] + [0.55] * 20 + [1.1] * 3) == (0.55, 1.1, True)
    assert fmt_eta([3500], False) == "eta ~58m20s (settling)" and fmt_eta([3500, 3600], True) == "eta 58m20s"
    assert fmt_eta([3500, 7000], True) == "eta 58m20s-1h56m" and fmt_eta([7000, 3500], True) == "eta 58m20s-1h56m"
    cfg = get_config(["cpu"])
    assert first_step_line(cfg, 1, 6.4, 12840) == "iter 1/2000 | 6.40 s/step (the first, setup included) | eta ~3h34m (settling)"


def test_the_long_run_note_is_revised_when_the_steps_slow_or_speed_up_by_half(monkeypatch, capsys, tmp_path):
    """Issue 82: "this run needs ~2h01m" was printed once and never corrected while the steps ran 2x slower."""
    from types import SimpleNamespace
    from utils.train_log import TrainLog
    from utils.dist import CpuThreads
    monkeypatch.setattr("utils.train_log.run_queue", lambda: 1)
    cfg = get_config(["baby", f"--out_dir={tmp_path}"])
    threads = CpuThreads(torch.device("meta"), environ={})
    env = SimpleNamespace(device=torch.device("cpu"), master=False, wandb=None, threads=threads)
    log = TrainLog(cfg, env, OBJECTIVES[cfg.objective], 0, flops_tok=1.0, n_windows=8, eval_t=4)
    capsys.readouterr()
    for eta, step_s in (([7000], 0.5), ([7200], 0.6), ([14000, 7000], 1.0), ([14000], 1.0), ([3000], 0.3)):
        log.notes(eta, step_s, settled=True)
    notes = capsys.readouterr().out.replace("\n  ", " ").splitlines()
    assert notes == ["note: this run needs ~1h56m on this device (cpu)",  # 0.6 and 1.0 s: within half of 0.5, 0.6
                     "note: this run now needs ~1h56m-3h53m on this device: its steps take 2.0x their time at the last note",
                     "note: this run now needs ~50m00s on this device: its steps take 0.3x their time at the last note"]


def test_the_long_run_note_names_the_laptop_preset_only_to_a_bigger_run():
    cpu = torch.device("cpu")
    assert long_run_note(get_config(["cpu"]), cpu, [1800]) == ""  # under an hour: no note
    assert long_run_note(get_config(["cpu"]), cpu, [5000]) == "note: this run needs ~1h23m on this device (cpu)"  # it is that preset
    assert "python train.py" not in long_run_note(get_config(["baby"]), cpu, [5000])  # smaller than the laptop preset
    for argv in (["shakespeare_char"], ["cpu", "--max_iters=5000"]):  # bigger: the laptop preset is the cheaper run
        assert long_run_note(get_config(argv), cpu, [5000]).endswith("(README's Presets table): python train.py cpu")
    assert "python train.py" not in long_run_note(get_config(["shakespeare_char"]), torch.device("meta"), [5000])  # not a CPU


def test_a_shared_machine_is_named_with_its_fix(monkeypatch):
    """Steps several times slower than the run's fastest (a second torch process on the cores), or more threads
    ready to run than cores: one note naming the fix; a quiet machine, another device or too few windows: none."""
    import os
    from utils.train_log import contention_note
    cpu = torch.device("cpu")
    monkeypatch.setattr("utils.train_log.run_queue", lambda: 1)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert contention_note([0.5, 0.25, 0.26, 0.25], cpu) == ""
    note = contention_note([0.5, 0.25, 0.26, 4.0], cpu)
    assert "16.0x slower" in note and "OMP_NUM_THREADS=1" in note
    monkeypatch.setattr("utils.train_log.run_queue", lambda: 4)
    assert "4 threads ready to run on 2 cores" in contention_note([0.5, 0.25, 0.26, 0.27], cpu)
    assert contention_note([0.5, 0.25, 0.26, 4.0], torch.device("meta")) == "" and contention_note([1, 4], cpu) == ""


@pytest.fixture
def torch_threads():
    """torch's thread count as the test found it, put back after (CpuThreads sets it)."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_the_shared_cores_note_says_what_the_run_already_does(monkeypatch, torch_threads):
    """Issue 73: the note repeated advice already followed (OMP_NUM_THREADS=1 when it was set)."""
    import os
    from utils.train_log import contention_note
    from utils.dist import CpuThreads
    cpu = torch.device("cpu")
    monkeypatch.setattr("utils.train_log.run_queue", lambda: 3)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    slow = [0.5, 0.25, 0.26, 4.0]
    one = CpuThreads(cpu, environ={"OMP_NUM_THREADS": "1"}, cores=2)
    assert "already takes 1 thread(s) (OMP_NUM_THREADS=1)" in contention_note(slow, cpu, one)
    assert "OMP_NUM_THREADS=1 python" not in contention_note(slow, cpu, one)
    auto = CpuThreads(cpu, environ={}, cores=2)
    assert "already takes 1 thread(s) (fewer when its steps slow)" in contention_note(slow, cpu, auto)
    torch.set_num_threads(4)  # what OMP_NUM_THREADS=4 makes torch run, which CpuThreads reads (issue 90)
    four = CpuThreads(cpu, environ={"OMP_NUM_THREADS": "4"}, cores=2)
    assert "OMP_NUM_THREADS=1 python train.py" in contention_note(slow, cpu, four)


@pytest.mark.parametrize("argv, columns", [
    # mdlm: 3 masks of each window, each a pass of L = 8 columns, and the dual objective's causal pass over L - 1:
    # 2 x (3 x 8 + 7) = 62 columns a micro-batch
    (["--mask_draws=3", "--dual_ar=0.5", "--time_cond=none"], 62),
    (["--mask_draws=3"], 48),  # 2 x 3 x 8: no causal pass
    (["--dual_ar=0.5", "--time_cond=none"], 30),  # 2 x (8 + 7)
    # bd3: each pass reads x_t (L = 8 columns) and x_0 less its last block (8 - 4): 2 masks, 2 x 2 x 12
    (["--objective=bd3", "--bd3_block=4", "--mask_draws=2"], 48),
])
def test_the_memory_estimate_counts_every_pass_of_a_micro_batch_by_hand(argv, columns):
    """The start-up estimate's activations, counted by hand: per column, one layer of width 32 saves 68 x 32 = 2,176
    bytes in fp32, and the head 12 bytes per logit of a 20-token vocabulary, 240: 2,416 bytes a column, over every
    column the micro-batch's passes read (batch 2: mask_draws passes of the objective's columns, plus the dual
    objective's causal pass)."""
    from utils.train_log import estimate_line
    from model import Transformer
    cfg = get_config(["--n_layer=1", "--n_head=2", "--n_embd=32", "--block_size=8", "--batch_size=2",
                      "--diffusion_steps=20", "--steps=20", *argv])
    model = Transformer(model_args(cfg, 20))
    flops_tok, seq = OBJECTIVES[cfg.objective].flops(model, cfg)
    line, need = estimate_line(cfg, model, torch.device("meta"), "float32", flops_tok, seq, 0.4)
    assert need == model.num_params() * 16 + columns * 2_416  # weights, grads and AdamW's two moments: 16 bytes each
    assert f"({columns:,} columns in its passes)" in line or columns == 2 * 8


def test_the_log_notes_print_in_lines_a_terminal_holds(monkeypatch, capsys, tmp_path, torch_threads):
    """The shared-cores and long-run notes ran to ~190 characters on one line in a run's log; TrainLog.notes prints
    each wrapped at 120 columns, the whole sentence kept. The shared-cores note comes again when the steps slow again,
    at most every SHARED_EVERY_S (issue 82: it came once and never again)."""
    import os
    from types import SimpleNamespace
    from utils import train_log
    from utils.dist import CpuThreads
    clock = [1000.0]
    monkeypatch.setattr(train_log, "time", SimpleNamespace(time=lambda: clock[0]))
    monkeypatch.setattr(train_log, "run_queue", lambda: 3)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    cfg = get_config(["baby", f"--out_dir={tmp_path}", "--max_iters=100000"])
    torch.set_num_threads(2)  # what OMP_NUM_THREADS=2 makes torch run, which CpuThreads reads (issue 90)
    threads = CpuThreads(torch.device("cpu"), environ={"OMP_NUM_THREADS": "2"})
    env = SimpleNamespace(device=torch.device("cpu"), master=False, wandb=None, threads=threads)
    log = train_log.TrainLog(cfg, env, OBJECTIVES[cfg.objective], 0, flops_tok=1.0, n_windows=8, eval_t=4)
    capsys.readouterr()
    log.window_s = [0.5, 0.25, 0.26, 4.0]
    log.notes([20 * 3600], 4.0, settled=True)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) >= 4 and max(map(len, lines)) <= 120, lines
    text = " ".join(line.strip() for line in lines)
    assert "this run needs ~20h00m" in text and "python train.py cpu" in text
    assert "3 threads ready to run on 2 cores" in text and "OMP_NUM_THREADS=1 python train.py ..." in text
    shared = []
    monkeypatch.setattr(train_log, "run_queue", lambda: 1)
    for seconds, window in ((60, 4.0), (60, 0.25), (60, 4.0), (600, 0.25), (60, 4.0), (60, 4.0)):
        clock[0] += seconds
        log.window_s.append(window)
        log.notes([20 * 3600], 4.0, settled=True)
        shared.append("this run's fastest" in capsys.readouterr().out)
    # still slow: no repeat; slow again within 10 min: none; slow again after: one; still slow: none
    assert shared == [False, False, False, False, True, False]


def test_wandb_is_imported_only_when_asked_and_its_absence_is_one_line(monkeypatch, tmp_path):
    """--wandb_log without the package: one line naming pip install wandb, from setup, before any work; without
    --wandb_log setup never imports it."""
    import sys
    import train
    from utils.errors import UserError
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    argv = ["--device=cpu", f"--out_dir={tmp_path / 'run'}", f"--data_path={FIXTURES / 'tiny_stories.txt'}"]
    assert train.setup(argv)[1].wandb is None
    with pytest.raises(UserError, match="pip install wandb"):
        train.setup([*argv, "--wandb_log"])


def test_the_shared_cores_note_where_the_os_keeps_no_run_queue(monkeypatch):
    """No /proc/loadavg (macOS, Windows): the note then reads the slow steps alone, never an error."""
    from utils.train_log import contention_note
    monkeypatch.setattr("utils.train_log.run_queue", lambda: None)
    cpu = torch.device("cpu")
    assert contention_note([0.5, 0.25, 0.26, 0.27], cpu) == ""
    note = contention_note([0.5, 0.25, 0.26, 4.0], cpu)
    assert note.startswith("note: steps run 16.0x slower than this run's fastest: another process shares the cores")
