"""Every command README.md shows runs as written, in the order shown, on a fresh copy of the repository (issue 62):
each ```bash block's lines, continuation lines joined and comments dropped. Training commands get a tiny model and a
few steps appended (keys the command sets itself are left as written), so that the chain of files the README walks
through (train -> sample -> export -> evaluate) is the one a reader's run makes. Setup lines (venv, pip), the test
command itself and the lines for several machines (torchrun --nnodes=2: each waits for the others) are not re-run; the
last are read by torchrun's own parser instead.

    python -m pytest -q tests/test_readme.py
"""
import re
import subprocess
import time

import pytest

from helpers import ROOT, fresh_copy, serve_briefly

TINY = dict(max_iters=6, eval_interval=3, eval_iters=1, log_interval=3, warmup_iters=1, batch_size=4, n_layer=1,
            n_head=2, n_embd=32, device="cpu", keep_last=1)
SKIP = ("python3 -m venv", "pip ", "python -m pytest")


def readme_lines(text):
    """(command, the whole line with its caption) for the shell lines of README's ```bash blocks, in order:
    continuations joined, comment lines and setup lines dropped."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            cmd = re.sub(r"\s+#.*$", "", line).strip()
            if cmd and not cmd.startswith("#") and not cmd.startswith(SKIP) and not for_machines(cmd):
                lines.append((cmd, line))
    return lines


def for_machines(cmd):
    """Whether cmd is a torchrun line for one of several machines (--nnodes=N, N > 1)."""
    nodes = re.search(r"--nnodes[= ](\d+)", cmd)
    return cmd.startswith("torchrun ") and nodes is not None and int(nodes[1]) > 1


def readme_commands(text):
    """The commands alone, captions dropped."""
    return [cmd for cmd, _ in readme_lines(text)]


def promised_files(line):
    """The trace files a README line names, in its command (--viz-video PATH) or its caption (artifacts/....mp4 +
    .gif): each MP4 and the GIF written beside it (issue 73: the second command's caption promised a trace that only
    --viz-video writes). A caption that puts the trace in a folder (artifacts/media/) promises a new MP4 and GIF there:
    the folder is returned."""
    stems = re.findall(r"(artifacts/[\w./-]+)\.mp4", line)
    folders = [] if stems else re.findall(r"trace.* in (artifacts/[\w/-]+/)", line)
    return [f"{stem}{ext}" for stem in dict.fromkeys(stems) for ext in (".mp4", ".gif")] + folders


def shrink(cmd):
    """Each `train.py` invocation in a command line gets the TINY keys it does not set itself."""
    parts = []
    for seg in cmd.split("&&"):
        if re.search(r"(^|\s)train\.py(\s|$)", seg):
            given = set(re.findall(r"--([a-z_0-9]+)", seg))
            seg = seg.rstrip() + "".join(f" --{k}={v}" for k, v in TINY.items() if k not in given) + " "
        parts.append(seg)
    return "&&".join(parts)


def test_the_readme_commands_are_found_and_shrunk():
    text = "```bash\n# setup\npip install x\npython train.py cpu   # train\npython inference.py cpu \\\n  --seed 0\n```\n"
    assert readme_commands(text) == ["python train.py cpu", "python inference.py cpu    --seed 0"]
    assert promised_files("python x.py --viz-video artifacts/a.mp4   # its trace: artifacts/a.mp4 + .gif") == [
        "artifacts/a.mp4", "artifacts/a.gif"]
    assert promised_files("python x.py   # the text, its trace (MP4 + GIF) in artifacts/media/") == ["artifacts/media/"]
    got = shrink("python train.py cpu --max_iters=20 && python inference.py cpu")
    assert "--max_iters=20" in got and "--max_iters=6" not in got and "--n_layer=1" in got
    assert got.endswith("&& python inference.py cpu")  # sampling is left as written
    cmds = readme_commands((ROOT / "README.md").read_text())
    assert any(c.startswith("python train.py") for c in cmds) and any("inference.py" in c for c in cmds)


@pytest.mark.slower
def test_every_readme_command_runs_in_order_on_a_fresh_copy(tmp_path):
    repo, env = fresh_copy(tmp_path)
    for cmd, line in readme_lines((ROOT / "README.md").read_text()):
        caption = line[len(line.split("#")[0]):]
        # a caption that promises a trace names where it goes: in the caption, or through --viz-video in the command
        assert "trace" not in caption or promised_files(line), line
        if "--serve" in cmd:  # it serves until Ctrl-C: its page is fetched, then it is stopped
            code, status, err = serve_briefly(cmd, repo, env)
            assert (code, status) == (130, 200), (cmd, err)
            continue
        started = time.time()
        r = subprocess.run(["bash", "-c", shrink(cmd)], cwd=repo, env=env, capture_output=True, text=True,
                           stdin=subprocess.DEVNULL, timeout=600)
        assert r.returncode == 0, f"{cmd}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
        for path in promised_files(line):  # what the caption says the command writes, written by this command
            if path.endswith("/"):  # a new MP4 and GIF in the folder
                new = {p.suffix for p in (repo / path).glob("*") if p.stat().st_mtime >= started - 1}
                assert {".mp4", ".gif"} <= new, (line, path)
            else:
                assert (repo / path).is_file() and (repo / path).stat().st_mtime >= started - 1, (line, path)


def test_the_logs_index_lists_every_entry_in_order():
    """dev/LOG.md opens with an index, a line per entry (date · commit · title · verdict), in the order of the entries
    below it (newest first): an entry added without its index line, or out of order, fails here."""
    lines = (ROOT / "dev" / "LOG.md").read_text().splitlines()
    entries = [ln[3:].split(" · ", 2) for ln in lines if ln.startswith("## 20")]
    index = [ln[2:].split(" · ", 2) for ln in lines if re.match(r"- 20\d\d-\d\d-\d\d · ", ln)]
    assert len(index) == len(entries) > 0
    for (date, commit, rest), (i_date, i_commit, i_rest) in zip(entries, index):
        assert (i_date, i_commit) == (date, commit), rest
        title, verdict = i_rest.rsplit(" · ", 1)
        assert rest.startswith(title) and rest.endswith(verdict), rest  # the heading's title, then its verdict
    dates = [e[0] for e in entries]
    assert dates == sorted(dates, reverse=True)  # newest first


# what makes a line that reads checkpoints quick, appended where the line does not set the flag itself: its figures
# then rest on fewer windows and times, its work on every path it had
QUICK = {"scripts/eval.py": dict(n_windows=4, n_t=1), "scripts/frontier.py": dict(time_batches=1)}


def quicken(cmd):
    """Each scripts/eval.py or frontier.py invocation in a command line gets the QUICK flags it does not set."""
    parts = []
    for seg in cmd.split("&&"):
        for script, flags in QUICK.items():
            if script in seg:
                given = set(re.findall(r"--([a-z-]+)", seg))
                seg = seg.rstrip() + "".join(f" --{k.replace('_', '-')} {v}" for k, v in flags.items()
                                             if k.replace("_", "-") not in given) + " "
        parts.append(seg)
    return "&&".join(parts)


def stand_in_lines(text):
    """README's lines that read a preset's checkpoint without training it first: its Evaluation section whole, and
    every other line naming artifacts/models/ with no train.py or torchrun in it."""
    section = text.split("## Evaluation", 1)[1].split("\n## ", 1)[0]
    evaluation = readme_commands(section)
    others = [c for c in readme_commands(text) if "artifacts/models/" in c and c not in evaluation
              and not re.search(r"train\.py|torchrun", c)]
    return evaluation + others


def test_the_stand_in_lines_are_found_and_quickened():
    lines = stand_in_lines((ROOT / "README.md").read_text())
    assert len([c for c in lines if "scripts/eval.py" in c]) >= 2 and any("frontier.py" in c for c in lines)
    assert any(c.startswith("python scripts/export.py artifacts/models/") for c in lines)
    got = quicken("python scripts/eval.py a.pt --n-t 2 && python scripts/export.py a.pt b")
    assert "--n-t 2" in got and "--n-t 1" not in got and "--n-windows 4" in got and got.endswith("a.pt b")


@pytest.mark.slower
def test_readmes_checkpoint_lines_run_on_a_fresh_clone_where_the_shipped_weights_stand_in(tmp_path):
    """Issue 97: on a fresh clone (no artifacts/models: no run of one's own), README's Evaluation lines crashed with
    FileNotFoundError from os.path.samefile after their work, and export.py's from os.path.getsize: each compared,
    opened or printed the path typed, not the shipped weights read in its place. Each line runs as typed, QUICK
    flags appended; what it prints names the weights it read."""
    repo, env = fresh_copy(tmp_path)
    assert not (repo / "artifacts" / "models").exists()
    for cmd in stand_in_lines((ROOT / "README.md").read_text()):
        r = subprocess.run(["bash", "-c", quicken(cmd)], cwd=repo, env=env, capture_output=True, text=True,
                           stdin=subprocess.DEVNULL, timeout=900)
        assert r.returncode == 0 and "Traceback" not in r.stderr, f"{cmd}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
        if "artifacts/models/" in cmd:  # the weights read are named, not a path that is not there
            assert "artifacts/weights/" in r.stdout, f"{cmd}\n{r.stdout[-2000:]}"
    assert not (repo / "artifacts" / "models").exists()  # nothing written where a run of one's own goes


def test_ci_runs_readmes_test_command_and_then_the_slower_tier():
    """.ci/run's test lines are README's first test line, then its slower-tier line: together every tier (issue 98).
    A tier README names that CI leaves out, or a CI line README does not show, fails here."""
    tests = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text().split("## Tests", 1)[1], re.S)[0]
    shown = [re.sub(r"\s+#.*$", "", line).strip() for line in tests.splitlines() if line.strip()]
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line.startswith("python -m pytest")]
    assert ci == [shown[0], shown[2]] and shown[0] == 'python -m pytest -q -m "not slower" tests', (ci, shown)
    assert shown[1] == "python -m pytest -q -m core tests" and shown[2] == "python -m pytest -q -m slower tests"


def test_readmes_lines_for_several_machines_start_one_run_and_fsdp_is_sized_by_the_model_it_would_shard():
    """README's torchrun lines for several machines wait for each other, so they are read, not run: by torchrun's own
    parser, one line a machine (node ranks 0..N-1), each the same run with the same rendezvous, a run whose batch the
    world of N x nproc ranks divides. The figure beside them: that preset's training state, as model.py estimates it."""
    import torch
    from torch.distributed.run import get_args_parser
    import configurator
    from objectives import model_args
    from model import Transformer
    from utils.dist import grad_accum_steps
    text = (ROOT / "README.md").read_text()
    lines = [re.sub(r"\s+#.*$", "", line).strip() for block in re.findall(r"```bash\n(.*?)```", text, re.S)
             for line in block.splitlines()]
    runs = [get_args_parser().parse_args(line.split()[1:]) for line in lines if for_machines(line)]
    assert len(runs) >= 2 and [int(r.node_rank) for r in runs] == list(range(int(runs[0].nnodes)))
    same = [(r.nnodes, r.nproc_per_node, r.master_addr, r.master_port, r.training_script, r.training_script_args)
            for r in runs]
    assert len(set(map(str, same))) == 1 and not runs[0].standalone
    assert runs[0].training_script == "train.py"
    cfg, _ = configurator.parse(runs[0].training_script_args).over()
    world = int(runs[0].nnodes) * int(runs[0].nproc_per_node)
    grad_accum_steps(cfg.total_batch_size, cfg.batch_size * cfg.block_size, world)  # a world it divides
    preset = runs[0].training_script_args[0]
    said = re.search(rf"`{preset}`'s weights, gradients and AdamW moments take ([0-9.]+) GB in fp32", text)
    with torch.device("meta"):
        model = Transformer(model_args(cfg, 2048))  # its BPE's 2,048 tokens (config.py)
    assert said and float(said[1]) == round(model.estimate_memory(1, bf16=True)[0] / 1e9, 1)
