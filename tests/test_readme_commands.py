"""The core tier's one test per README command (issue 98): each command README.md shows, in the order shown, through
its script's main() in this process, in a scratch folder where the repository's data/ is read and the shipped weights
stand in for runs not trained yet. Training lines get test_readme.py's tiny model and few steps; so the lines after
them read those tiny runs, as a reader's would read theirs. The same lines as typed, each a process on a fresh copy:
tests/test_readme.py (the slower tier).

    python -m pytest -q -m core tests/test_readme_commands.py
"""
import os
import re
import shlex

import pytest

import inference
import train
from helpers import ROOT, run_cli_here, script
from test_readme import readme_commands, readme_lines, shrink

pytestmark = pytest.mark.core  # the core tier (pytest.ini): one run of each README command

# the work a figure's line asks, shortened where the line does not set it: eval's and frontier's figures on fewer
# windows, times and samples, the race on fewer seeds (their paths all run); sample lines run as they read
QUICK = {"scripts/eval.py": dict(n_windows=4, n_t=1, n_samples=2),
         "scripts/frontier.py": dict(time_batches=1, n_samples=4), "scripts/race.py": dict(seeds=3)}
IN_OTHER_TESTS = ("--serve",)  # serves until Ctrl-C: tests/test_serve.py draws through its server in this process


def entry_point(rel):
    """The main() a command's script runs: train.py, inference.py, scripts/NAME.py, dev/NAME.py."""
    if rel == "train.py":
        return train.main
    if rel == "inference.py":
        return inference.main
    folder, name = os.path.split(rel[:-3])
    return script(f"dev/{name}" if folder == "dev" else name).main


def invocations(cmd):
    """(script, argv) for each `python X.py ...` or `torchrun ... X.py ...` of a command line (its && parts), with
    shrink's tiny model and QUICK's shortening appended where the line does not set them; torchrun's own flags go (one
    process runs the script's flags here: the ranks are tests/test_train_scale.py's)."""
    out = []
    for seg in shrink(cmd).split("&&"):
        words = shlex.split(seg)
        at = next(i for i, w in enumerate(words) if w.endswith(".py"))
        rel, argv = words[at], words[at + 1:]
        given = {w.split("=")[0].lstrip("-").replace("-", "_") for w in argv if w.startswith("--")}
        argv += [f"--{k.replace('_', '-')}={v}" for k, v in QUICK.get(rel, {}).items() if k not in given]
        out.append((rel, argv))
    return out


def test_the_commands_split_into_scripts_and_their_flags():
    got = invocations("python train.py cpu --max_iters=20 && torchrun --nproc_per_node=2 train.py cpu --device=cpu")
    assert [rel for rel, _ in got] == ["train.py", "train.py"] and "--max_iters=20" in got[0][1]
    assert "--n_layer=1" in got[0][1] and "--nproc_per_node=2" not in got[1][1]
    rel, argv = invocations("python scripts/eval.py a.pt --n-samples 0")[0]
    assert rel == "scripts/eval.py" and "--n-samples" in argv and "--n-samples=2" not in argv and "--n-t=1" in argv
    assert invocations('python inference.py cpu --prompt "JULIET:"')[0][1] == ["cpu", "--prompt", "JULIET:"]
    assert invocations("python scripts/race.py")[0][1] == ["--seeds=3"]


def test_each_readme_command_runs_in_this_process(tmp_path, monkeypatch, capsys):
    from utils import fileio
    (tmp_path / "data").symlink_to(ROOT / "data")  # README's data files, read where a reader's run reads them
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(fileio, "REPO", str(tmp_path))  # its runs are the repository's: the shipped weights stand in
    ran = []
    for cmd, _ in readme_lines((ROOT / "README.md").read_text()):
        if any(flag in cmd for flag in IN_OTHER_TESTS):
            continue
        for rel, argv in invocations(cmd):
            code, out, err = run_cli_here(entry_point(rel), argv, capsys)
            assert code == 0 and "Traceback" not in err, f"{cmd}\n{out[-1500:]}\n{err[-2000:]}"
            ran.append(rel)
    assert {"train.py", "inference.py", "scripts/race.py", "scripts/eval.py", "scripts/export.py",
            "scripts/frontier.py"} <= set(ran)
    assert (tmp_path / "artifacts" / "models" / "cpu" / "model.pt").is_file()  # the lines after it read this run


def sampling_rules(text):
    """The flag sets README's Sampling section names in its prose (`--a 1 --b x`: a flag and a value at least, no
    PLACEHOLDER): each a rule a reader types after the section's preset."""
    section = text.split("\n## Sampling\n", 1)[1].split("\n## ", 1)[0]
    prose = re.sub(r"```.*?```", "", section, flags=re.S)
    return [span for span in re.findall(r"`(--[^`]+)`", prose)
            if re.search(r"\s[^-\s]", span) and not re.search(r"[A-Z]", span)]


def test_each_rule_the_sampling_prose_names_runs_on_cpu_as_typed(monkeypatch, capsys):
    """Every line of the Sampling section samples `cpu`, so a rule its prose names ("... is the EB-Sampler's rule") is
    typed after `python inference.py cpu`, and runs there as written (issue 105: --entropy_bound 0.5 --order entropy
    was refused on cpu, whose preset remasks). No trace: nothing is written."""
    monkeypatch.chdir(ROOT)
    text = (ROOT / "README.md").read_text()
    rules = sampling_rules(text)
    assert any(re.search("--entropy[-_]bound", r) for r in rules) and any("--threshold" in r for r in rules)
    assert sampling_rules("\n## Sampling\n`--top-k`, `--viz-video PATH` and `--order l2r`.\n## Next\n") == ["--order l2r"]
    for rule in rules:
        code, out, err = run_cli_here(inference.main, ["cpu", *shlex.split(rule), "--viz-video=off"], capsys)
        assert code == 0, (rule, err)


def test_the_threshold_lines_figure_is_what_it_prints():
    """README: Fast-dLLM's threshold saves almost nothing on `cpu`, "over N passes for M tokens". Its line, as typed,
    prints M tokens in more than N passes (the figure holds on the chips tried: 94 on one, 95 on another)."""
    import io
    from contextlib import redirect_stdout
    text = (ROOT / "README.md").read_text()
    said = re.search(r"over (\d+) passes\s+for (\d+) tokens", text)
    line = next(c for c in readme_commands(text) if c.startswith("python inference.py cpu --threshold"))
    out = io.StringIO()
    with redirect_stdout(out):
        inference.main([*shlex.split(line)[2:], "--viz-video=off"])
    tokens, passes = re.search(r"---- 1 x (\d+) tokens, NFE (\d+) per sample", out.getvalue()).groups()
    assert said and int(tokens) == int(said[2]) and int(passes) > int(said[1]), (tokens, passes, said[0])
