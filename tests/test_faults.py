"""Crash safety and numerical faults: nothing a kill or a NaN does may cost a run.
python -m pytest -q tests/test_faults.py

Fault cases: SIGKILL halfway through writing a checkpoint; SIGKILL at random moments (3 kills, then
finish); a stale partial write removed on resume; model.pt unreadable or older than a numbered
checkpoint (resume picks the newest complete one); keep-last-K pruning and a replaced run's leftovers;
a NaN loss that stops training (step named, last good checkpoint untouched); NaN steps skipped up to
a cap, and the cap exceeded; atomic writes that fail halfway.
"""
import hashlib
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

import train
from helpers import ROOT
from helpers import ENV, for_objective, popen, rows, run_here, train_args
from utils.checkpoint import load_checkpoint, load_latest
from utils.fileio import numbered_checkpoints
from utils.errors import UserError
from utils.fileio import atomic_open, atomic_path, remove_stale_temps

COMMON = ["--max_iters=300", "--eval_interval=10", "--log_interval=7", "--keep_last=2"]
KEYS = ("kind", "iter", "loss", "lr", "nats_per_token")


def _sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _same_run(a_dir, b_dir):
    """Two run dirs hold the same training: metric rows and final weights equal bit for bit."""
    assert [{k: r.get(k) for k in KEYS} for r in rows(a_dir)] == [{k: r.get(k) for k in KEYS} for r in rows(b_dir)]
    a, b = load_checkpoint(a_dir / "model.pt"), load_checkpoint(b_dir / "model.pt")
    assert a["iter"] == b["iter"] and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    d = tmp_path_factory.mktemp("full")
    run_here(train_args(d / "out", *COMMON), d, threads=1)  # single-threaded, like the subprocesses
    return d / "out"


@pytest.mark.slower
def test_kill_halfway_through_a_checkpoint_write_loses_nothing(tmp_path, uninterrupted, capsys):
    out = tmp_path / "out"
    p = subprocess.Popen([sys.executable, str(ROOT / "tests" / "kill_mid_save.py"), "3", *train_args(out, *COMMON)],
                         cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, err = p.communicate(timeout=120)
    assert p.returncode == -signal.SIGKILL, err[-2000:]
    partial = [n for n in os.listdir(out) if ".tmp" in n]
    assert partial == [f"model_0000030.pt.tmp{p.pid}"]  # half of the 3rd checkpoint, never renamed into place
    ckpt, path = load_latest(out)
    assert ckpt["iter"] == 20 and os.path.samefile(path, out / "model.pt")
    assert [i for i, _ in numbered_checkpoints(out)] == [10, 20]
    capsys.readouterr()
    run_here(train_args(out, *COMMON, "--resume"), tmp_path, threads=1)
    log = capsys.readouterr().out
    assert f"removed {out / partial[0]}: a partial write of a killed run" in log
    assert not [n for n in os.listdir(out) if ".tmp" in n]
    _same_run(out, uninterrupted)


@pytest.mark.slower
def test_random_kills_then_resume_equal_the_uninterrupted_run(tmp_path, uninterrupted):
    """Three SIGKILLs at random moments (seeded), each followed by --resume from whatever is on disk."""
    rng, out, kills = random.Random(7), tmp_path / "out", 0
    for _ in range(3):
        started = bool(numbered_checkpoints(out)) or (out / "model.pt").exists()
        p = popen(train_args(out, *COMMON, *(["--resume"] if started else [])), tmp_path)
        deadline = time.time() + 60
        while not (out / "metrics.jsonl").exists() and p.poll() is None and time.time() < deadline:
            time.sleep(0.005)  # the loop has begun
        time.sleep(rng.uniform(0.0, 0.6))
        p.send_signal(signal.SIGKILL)
        p.communicate()
        kills += p.returncode == -signal.SIGKILL
        if numbered_checkpoints(out):  # what is on disk after a kill always loads
            assert load_latest(out)[0]["iter"] % 10 == 0
    assert kills >= 2, "the runs ended before they could be killed"
    started = bool(numbered_checkpoints(out))
    run_here(train_args(out, *COMMON, *(["--resume"] if started else ["--overwrite"])), tmp_path, threads=1)
    _same_run(out, uninterrupted)


def test_keep_last_k_best_and_a_replaced_runs_leftovers(in_tmp, capsys):
    out = in_tmp / "out"
    run_here(train_args(out, "--max_iters=50", "--eval_interval=10", "--keep_last=3"), in_tmp)
    assert [i for i, _ in numbered_checkpoints(out)] == [30, 40, 50]
    assert os.path.samefile(out / "model.pt", out / "model_0000050.pt")  # a hard link: no second copy
    best = load_checkpoint(out / "best.pt")
    assert best["val"]["nats_per_token"] == best["best_val"] == load_checkpoint(out / "model.pt")["best_val"]
    # a new run into the same dir needs --overwrite; the old run's files stay until the new run has its own
    with pytest.raises(UserError, match="already holds checkpoints"):
        train.main(train_args(out, "--max_iters=20")[1:])
    capsys.readouterr()
    run_here(train_args(out, "--max_iters=20", "--eval_interval=10", "--keep_last=2", "--overwrite"), in_tmp)
    log = capsys.readouterr().out
    assert all(f"removed {out / f'model_00000{i}.pt'}: a checkpoint of the run this one replaces" in log for i in (30, 40, 50))
    assert [i for i, _ in numbered_checkpoints(out)] == [10, 20]
    # resume with keep_last=1: model.pt and best.pt only
    run_here(train_args(out, "--max_iters=30", "--eval_interval=10", "--keep_last=1", "--resume"), in_tmp)
    assert numbered_checkpoints(out) == [] and load_checkpoint(out / "model.pt")["iter"] == 30


def test_resume_reads_the_newest_complete_checkpoint(in_tmp, capsys):
    out = in_tmp / "out"
    run_here(train_args(out, "--max_iters=30", "--eval_interval=10", "--keep_last=3"), in_tmp)
    # killed between writing model_0000030.pt and linking model.pt to it: model.pt is still iter 20
    os.remove(out / "model.pt")
    os.link(out / "model_0000020.pt", out / "model.pt")
    ckpt, path = load_latest(out, warn=print)
    assert ckpt["iter"] == 30 and path.endswith("model_0000030.pt") and "is newer than" in capsys.readouterr().out
    # model.pt truncated (a bad copy, a dying disk): the newest numbered checkpoint that loads stands in
    os.remove(out / "model.pt")
    (out / "model.pt").write_bytes(open(out / "model_0000030.pt", "rb").read()[:5000])
    os.remove(out / "model_0000030.pt")
    ckpt, path = load_latest(out, warn=print)
    assert ckpt["iter"] == 20 and "corrupt" in capsys.readouterr().out
    run_here(train_args(out, "--max_iters=40", "--eval_interval=10", "--keep_last=3", "--resume"), in_tmp)
    assert load_checkpoint(out / "model.pt")["iter"] == 40 and [i for i, _ in numbered_checkpoints(out)] == [20, 30, 40]
    # nothing loadable at all: the error names model.pt
    for _, p in numbered_checkpoints(out):
        open(p, "r+b").truncate(100)
    with pytest.raises(UserError, match="model.pt is corrupt"):
        load_latest(out)


def test_a_checkpoint_damaged_in_place_is_refused_and_resume_skips_it(in_tmp, capsys):
    """4 KB zeroed inside the newest checkpoint's tensor data (torch loads it without complaint: it does not check its
    archive): every reader refuses it in one line naming the run's intact checkpoint to fall back to, and --resume
    continues from the newest intact one, bit for bit as if the damaged one had never been written."""
    out = in_tmp / "out"
    run_here(train_args(out, "--max_iters=30", "--eval_interval=10", "--keep_last=3"), in_tmp)
    newest = out / "model_0000030.pt"  # model.pt is the same file (a hard link)
    raw = bytearray(newest.read_bytes())
    data = raw.index(b"data/0")  # the first tensor's record: its bytes follow its local header
    raw[data + 512:data + 512 + 4096] = bytes(4096)
    newest.write_bytes(raw)
    assert torch.load(newest, weights_only=True)["iter"] == 30  # torch itself sees nothing wrong
    for path in (newest, out / "model.pt"):
        with pytest.raises(UserError, match=f"{path} is damaged.*checksum.*fall back to {out / 'model_0000020.pt'}"):
            load_checkpoint(path)
    ckpt, path = load_latest(out, warn=print)
    assert ckpt["iter"] == 20 and path.endswith("model_0000020.pt") and "is damaged" in capsys.readouterr().out
    run_here(train_args(out, "--max_iters=30", "--eval_interval=10", "--keep_last=3", "--resume"), in_tmp)
    fresh = in_tmp / "fresh"
    run_here(train_args(fresh, "--max_iters=30", "--eval_interval=10", "--keep_last=3"), in_tmp)
    a, b = load_checkpoint(out / "model.pt"), load_checkpoint(fresh / "model.pt")
    assert a["iter"] == 30 and all(torch.equal(v, b["model"][k]) for k, v in a["model"].items())


def _nan_at(monkeypatch, calls):
    """The objective's training loss (its pure part, Objective.loss, what train_step runs) is NaN on these (1-based) training
    calls: a fault on those exact steps."""
    import diffusion
    real, n = diffusion.MaskedDiffusion.loss, [0]

    def loss(*args, **kwargs):
        n[0] += 1
        out = real(*args, **kwargs)
        return out * float("nan") if n[0] in calls else out
    monkeypatch.setattr(diffusion.MaskedDiffusion, "loss", loss)


def test_nan_stops_naming_the_step_and_keeps_the_last_good_checkpoint(in_tmp, monkeypatch):
    out = in_tmp / "out"
    run_here(train_args(out, "--max_iters=10", "--eval_interval=10", "--keep_last=1"), in_tmp)
    before = _sha(out / "model.pt"), _sha(out / "best.pt")
    _nan_at(monkeypatch, {5})
    with pytest.raises(UserError, match=r"non-finite loss or gradient at iter 15: stopped; the last finite checkpoint is "
                                        r".*model.pt \(iter 10\), nothing saved after it. --learning_rate=0.003 is the "
                                        r"first thing to lower: .* --learning_rate=0.0003 .* --resume --skip_nonfinite=10") as e:
        train.main(train_args(out, "--max_iters=40", "--eval_interval=10", "--keep_last=1", "--resume")[1:])
    assert (_sha(out / "model.pt"), _sha(out / "best.pt")) == before  # the NaN weights were never saved
    # issue 97: each command the line advises runs as printed, the fault gone (a new run at the lower rate, then the
    # checkpoint continued skipping such steps)
    import re
    import shlex
    fresh, resume = re.findall(r"python train\.py [^;]*", str(e.value))
    assert "--overwrite" in fresh and "--resume" not in fresh and resume.rstrip().endswith("--resume --skip_nonfinite=10")
    monkeypatch.undo()
    monkeypatch.chdir(in_tmp)  # undo() left it: the runs' traces go to artifacts/media/ here
    for cmd in (resume, fresh):
        train.main(shlex.split(cmd)[2:])
        assert load_checkpoint(out / "model.pt")["iter"] == 40


class NanGrad(torch.autograd.Function):
    """The identity forward; NaN gradients backward: a step whose loss is finite and whose update is not."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g * float("nan")


@pytest.mark.parametrize("clip", ["--grad_clip=1", "--grad_clip=0"])
def test_a_non_finite_gradient_stops_at_its_own_step_and_saves_nothing_after_it(clip, in_tmp, monkeypatch):
    """Issue 90: only the loss was checked, so a NaN gradient showed a step later (the NaN weights' loss), and weights
    made non-finite or huge in the step before a save were saved and called good. The step is named, its rate too."""
    import diffusion
    real, n = diffusion.MaskedDiffusion.loss, [0]

    def loss(*args, **kwargs):
        n[0] += 1
        out = real(*args, **kwargs)
        return NanGrad.apply(out) if n[0] == 7 else out
    monkeypatch.setattr(diffusion.MaskedDiffusion, "loss", loss)
    out = in_tmp / "out"
    with pytest.raises(UserError, match=r"a non-finite loss or gradient at iter 7: stopped; the last finite checkpoint is "
                                        r".*model.pt \(iter 5\)"):
        train.main(train_args(out, "--max_iters=20", "--eval_interval=5", "--log_interval=10", "--keep_last=1", clip)[1:])
    ck = load_checkpoint(out / "model.pt")
    assert ck["iter"] == 5 and all(torch.isfinite(v).all() for v in ck["model"].values())


def test_nan_steps_are_skipped_up_to_the_cap(in_tmp, monkeypatch, capsys):
    _nan_at(monkeypatch, {5, 9})
    run_here(train_args(in_tmp / "a", "--max_iters=20", "--eval_interval=10", "--skip_nonfinite=2"), in_tmp)
    log = capsys.readouterr().out
    assert "non-finite loss or gradient at iter 5: step skipped" in log and "at iter 9" in log
    ck = load_checkpoint(in_tmp / "a" / "model.pt")
    assert ck["loop"]["skipped"] == 2 and all(torch.isfinite(v).all() for v in ck["model"].values())
    assert all(s["step"] == 18 for s in ck["optimizer"]["state"].values())  # 20 steps, 2 without an update
    assert all(math.isfinite(r["loss"]) for r in rows(in_tmp / "a") if r["kind"] == "train")
    _nan_at(monkeypatch, {3, 4, 6})
    with pytest.raises(UserError, match=r"3 steps had a non-finite loss or gradient \(the last at iter 6\), more than --skip_nonfinite=2"):
        train.main(train_args(in_tmp / "b", "--max_iters=20", "--skip_nonfinite=2")[1:])


def test_atomic_writes_leave_the_old_file_or_the_new_one(tmp_path):
    target = tmp_path / "f.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_open(target) as f:
            f.write("half")
            raise RuntimeError("killed")
    with pytest.raises(OSError):
        with atomic_path(target) as tmp:
            open(tmp, "w").write("new")
            raise OSError(28, "No space left on device")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["f.json"]
    with atomic_open(target) as f:
        f.write("new")
    assert target.read_text() == "new"
    # temps of processes that are gone are removed; a live process's are not
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / f"model.pt.tmp{int(dead.stdout)}").write_bytes(b"half")
    (tmp_path / f"model.pt.tmp{os.getpid()}").write_bytes(b"mine")
    assert remove_stale_temps(tmp_path) == [f"model.pt.tmp{int(dead.stdout)}"]
    assert (tmp_path / f"model.pt.tmp{os.getpid()}").exists()


def test_a_copied_run_resumes_into_its_new_directory(in_tmp):
    run_here(train_args(in_tmp / "a", "--max_iters=10", "--eval_interval=10"), in_tmp)
    shutil.copytree(in_tmp / "a", in_tmp / "b")
    before = _sha(in_tmp / "a" / "model.pt")
    run_here(train_args(in_tmp / "b", "--max_iters=20", "--eval_interval=10", "--resume"), in_tmp)
    assert _sha(in_tmp / "a" / "model.pt") == before and load_checkpoint(in_tmp / "b" / "model.pt")["iter"] == 20


def test_where_hard_links_fail_the_copy_is_flushed_before_it_replaces(tmp_path, monkeypatch):
    """best.pt is model.pt's hard link; on a filesystem without links it is a copy, which must reach the disk before
    it replaces the old best.pt (a crash then leaves the old file or the whole new one)."""
    import os
    from utils import checkpoint
    src, dst = tmp_path / "model.pt", tmp_path / "best.pt"
    src.write_bytes(b"new weights")
    dst.write_bytes(b"old weights")
    flushed = []

    def no_link(a, b):
        raise OSError("links not supported here")
    real_fsync = os.fsync
    monkeypatch.setattr(os, "link", no_link)
    monkeypatch.setattr(os, "fsync", lambda fd: (flushed.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd)))
    checkpoint._link(str(src), str(dst))
    assert dst.read_bytes() == b"new weights" and any(".tmp" in p and "best.pt" in p for p in flushed), flushed


# ----------------------------------------------------------------------------- an earlier run's files are kept
def _stub_checkpoint(path, damaged=False):
    """A small checkpoint with every key a reader asks for; damaged: a value changed after its checksum was taken."""
    from utils.checkpoint import save_checkpoint
    save_checkpoint(path, dict(model={"w": torch.ones(2)}, config={}, model_args={}, tokenizer={}, iter=5))
    if damaged:
        raw = torch.load(path, weights_only=True)
        raw["model"]["w"] += 1.0
        torch.save(raw, path)


@pytest.mark.parametrize("name, words", [
    ("model.pt", "out already holds checkpoints: pass --resume to continue them, --overwrite to replace them, or "
                 "--out_dir=NEW_DIR"),
    ("model_0000010.pt", "out already holds checkpoints: pass --resume"),
    ("best.pt", "out already holds an earlier run's best.pt (no model.pt to --resume): pass --overwrite to replace "
                "them, or --out_dir=NEW_DIR"),
    ("metrics.jsonl", "an earlier run's metrics.jsonl (no model.pt to --resume): pass --overwrite"),
    ("media/t.mp4", "media/t.mp4 already exists: pass --overwrite to replace it, or choose another --viz-video path"),
    ("media/t.gif", "media/t.gif already exists: pass --overwrite"),
])
def test_a_new_run_replaces_no_file_an_earlier_run_wrote(name, words, in_tmp):
    """Every file a run writes (model.pt, model_<iter>.pt, best.pt, metrics.jsonl; the end-of-run trace and its GIF)
    found where a new run would write it: refused in one line naming the ways that keep it, the file untouched; with
    --overwrite the run goes on (setup passes), and --max_iters=0, which writes nothing, is not refused."""
    path = in_tmp / ("" if name.startswith("media") else "out") / name
    path.parent.mkdir(parents=True)
    path.write_bytes(b"an earlier run's")
    argv = train_args(in_tmp / "out", "--max_iters=5", "--viz_video=media/t.mp4")[1:]
    argv = [a.replace(f"={in_tmp / 'out'}", "=out") for a in argv]
    with pytest.raises(UserError) as e:
        train.main(argv)
    assert words in str(e.value) and path.read_bytes() == b"an earlier run's"
    train.setup([*argv, "--overwrite"])
    train.main([*argv, "--max_iters=0"])
    assert path.read_bytes() == b"an earlier run's"


def test_a_resumed_run_replaces_its_own_trace(in_tmp):
    """The trace a run wrote at its end (a typed --viz_video) is its own, not an earlier run's file to keep: --resume
    with more steps goes on, and replaces it when the run ends again."""
    argv = [a.replace(f"={in_tmp / 'out'}", "=out") for a in train_args(in_tmp / "out", "--max_iters=2")[1:]]
    train.main([*argv, "--viz_video=media/t.mp4", "--eval_interval=2"])
    assert (in_tmp / "media" / "t.mp4").stat().st_size > 0
    cfg, _ = train.setup([*argv, "--max_iters=4", "--resume"])  # its trace path is the run's own, from its checkpoint
    assert (cfg.max_iters, cfg.viz_video) == (4, "media/t.mp4")


def test_a_default_trace_never_takes_an_earlier_runs_name(in_tmp):
    """--viz_video's default ('auto') is a new artifacts/media/RUN_k.mp4: an earlier run's MP4 or GIF (or a
    placeholder another run holds) moves k on, and a trace that writes nothing leaves no placeholder behind."""
    from sampling.trace import open_trace
    media = in_tmp / "artifacts" / "media"
    media.mkdir(parents=True)
    (media / "out_1.mp4").write_bytes(b"an earlier run's")
    (media / "out_2.gif").write_bytes(b"an earlier run's")
    cfg, env = train.setup(for_objective(["cpu", *train_args(in_tmp / "out", "--max_iters=5", "--objective=ar")[1:]]))
    assert cfg.viz_video == "auto"  # the AR's trace too: its tokens drawn one a pass
    opts = env.sampler  # the end-of-run samples' sampler
    with open_trace(cfg, opts, "out", None) as first, open_trace(cfg, opts, "out", None) as second:  # two at once
        assert (first.video.paths["mp4"], second.video.paths["mp4"]) == ("artifacts/media/out_3.mp4",
                                                                         "artifacts/media/out_4.mp4")
    assert not (media / "out_3.mp4").exists() and not (media / "out_4.mp4").exists()  # no frames: nothing written
    assert (media / "out_1.mp4").read_bytes() == b"an earlier run's"


def test_the_damaged_checkpoints_advice_never_leads_into_replacing_the_runs_files(in_tmp, capsys):
    """The issue's path: model.pt damaged, the refusal says fall back to best.pt; the user deletes model.pt, --resume
    then finds no checkpoint and says to drop --resume; the new run that follows must not replace best.pt and empty
    metrics.jsonl: it is refused, naming --overwrite."""
    out = in_tmp / "out"
    run_here(train_args(out, "--max_iters=8", "--eval_interval=4", "--keep_last=1"), in_tmp)
    os.remove(out / "model.pt")  # best.pt stays a file of its own (model.pt was its hard link)
    _stub_checkpoint(out / "model.pt", damaged=True)
    kept = {n: _sha(out / n) for n in ("best.pt", "metrics.jsonl")}
    with pytest.raises(UserError, match=f"is damaged.*fall back to {out / 'best.pt'}"):
        train.main(train_args(out, "--max_iters=8", "--eval_interval=4", "--resume")[1:])
    os.remove(out / "model.pt")
    with pytest.raises(UserError, match="no checkpoint in .*drop --resume to start a new run"):
        train.main(train_args(out, "--max_iters=8", "--eval_interval=4", "--resume")[1:])
    with pytest.raises(UserError, match=r"already holds an earlier run's best.pt, metrics.jsonl .*--overwrite"):
        train.main(train_args(out, "--max_iters=8", "--eval_interval=4")[1:])
    assert {n: _sha(out / n) for n in kept} == kept


def test_a_dangling_numbered_checkpoint_is_skipped_when_naming_the_fall_back(in_tmp):
    """A model_<iter>.pt that is a link to nothing (or was removed after the folder was listed) is no checkpoint to
    fall back to: a damaged model.pt beside it is refused in one line by inference's load_model and by --resume."""
    from checkpoint_manager import load_model
    out = in_tmp / "out"
    out.mkdir()
    _stub_checkpoint(out / "model.pt", damaged=True)
    os.symlink(out / "gone.pt", out / "model_0000004.pt")
    _stub_checkpoint(out / "best.pt")
    with pytest.raises(UserError, match=f"model.pt is damaged.*; fall back to {out / 'best.pt'}$"):
        load_model(out / "model.pt", torch.device("cpu"))
    with pytest.raises(UserError, match=f"model.pt is damaged.*; fall back to {out / 'best.pt'}$"):
        train.main(train_args(out, "--max_iters=8", "--resume")[1:])
    os.remove(out / "best.pt")
    with pytest.raises(UserError, match="model.pt is damaged.*retrain it"):
        load_model(out / "model.pt", torch.device("cpu"))


def test_ctrl_c_before_the_first_checkpoint_names_the_command_that_starts_again(in_tmp):
    """Its metrics.jsonl is in out_dir: the same command alone would now be refused; the advice adds --overwrite (the
    files there are this run's own) once. Issue 97: after --overwrite, the resume advised kept it, which --resume
    refuses; every command advised parses and validates as the program will read it."""
    import shlex
    from types import SimpleNamespace
    from configurator import get_config
    run = SimpleNamespace(saved="", saved_iter=-1)
    said = train.interrupted(get_config(["--max_iters=50"]), run, ["--max_iters=50"])
    assert said.endswith("none was saved; start again with: python train.py --max_iters=50 --overwrite")
    said = train.interrupted(get_config(["--overwrite"]), run, ["--overwrite"])
    assert said.endswith("start again with: python train.py --overwrite")
    saved = SimpleNamespace(saved="out/model.pt", saved_iter=10)
    for argv in (["cpu", "--overwrite"], ["cpu", "--overwrite=true", "--max_iters=50"], ["cpu", "--overwrite", "true"],
                 ["cpu", "--init_from", "a.pt"], ["cpu", "--init-from=a.pt", "--overwrite"]):
        said = train.interrupted(get_config(argv), saved, argv)
        again = said.split("continue it with: ")[1]
        assert "overwrite" not in again and "init" not in again and again.endswith(" --resume"), said
        get_config(shlex.split(again)[2:])  # refused here if --resume met a key it refuses
    finished = SimpleNamespace(saved="out/model.pt", saved_iter=50)
    said = train.interrupted(get_config(["--max_iters=50", "--overwrite"]), finished, ["--max_iters=50", "--overwrite"])
    assert said.endswith("(the report alone: python train.py --max_iters=50 --resume)")


def test_a_ctrl_c_inside_the_writers_join_leaves_the_write_to_the_next_join():
    """Issue 80: a SIGINT that lands while train.py joins the background write (BackgroundWriter.wait) must not drop
    the write: train.py's Ctrl-C handler joins again, and its line then names the checkpoint the write made. A real
    signal (SIGALRM raising KeyboardInterrupt, as SIGINT does) arrives while the write is held on an event."""
    import threading
    from utils.fileio import BackgroundWriter

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    go, saved, writer = threading.Event(), [], BackgroundWriter()
    writer.submit(lambda: (go.wait(10), saved.append("model.pt")))
    old = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        with pytest.raises(KeyboardInterrupt):
            writer.wait()  # blocked in the join until the signal
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert saved == [] and writer.pending is not None  # the write still in flight, still owned
    go.set()
    writer.wait()  # the handler's join: the checkpoint is there when its line is printed
    assert saved == ["model.pt"] and writer.pending is None
    writer.submit(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        writer.wait()
    writer.wait()  # a failed write is raised once
