"""The weights the repo ships (artifacts/weights: cpu, baby, baby_bd3 and the baby AR): each loads, says how it was
made, is the network and tokenizer its command trains today, samples its pinned text, and scores the test figure
its config.json gives (RESULTS' for its preset). A change to the network's shape, its parameter names or the
tokenizer fails here until the weights are exported again (scripts/export.py, artifacts/README.md says when).

    python -m pytest -q tests/test_shipped.py
"""
import json
import os
import re
import shlex
import shutil
from dataclasses import replace

import pytest

import configurator
import inference
from config import Config
from checkpoint_manager import load_model, read_checkpoint
from helpers import ROOT, assert_one_line_error, model_args, run_cli_here, script
from utils import fileio
from utils.tokenizer import CharTokenizer, fingerprint, tokenizer_from_state

NAMES = ("cpu", "baby", "baby_bd3", "baby_ar")
# seed 0, 24 tokens after "JULIET:" at batch 1, each folder's own sampler; the same text under ATEN_CPU_CAPABILITY
# default and avx2 (an AMD EPYC, torch 2.13.0). Pinned 2026-11-28 on the weights trained at 87939fb.
PINNED = {
    "cpu": "JULIET:\nWhy net so willmon, goo",
    "baby": "JULIET:\nWelleto me that not ere",
    "baby_bd3": "JULIET:\nHeaving approve me, not",
    "baby_ar": "JULIET:\nSir, Sir, I see his par",
}


def about(name):
    with open(ROOT / "artifacts" / "weights" / name / "config.json", encoding="utf-8") as f:
        return json.load(f)["about"]


def test_the_shipped_weights_fit_in_sixteen_megabytes():
    sizes = [os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(ROOT / "artifacts" / "weights") for f in fs]
    # model.safetensors, config.json, vocab.json and the card (README.md) each; checksums.txt lists them
    assert len(sizes) == 4 * len(NAMES) + 1
    assert sum(sizes) <= 16e6


# ---------------------------------------------------------------------------- the cards
FIGURE = re.compile(r"(≤|<=|=) ([0-9]+\.[0-9]{4}) ± ([0-9]+\.[0-9]{4})")  # a card's '≤ 1.8683 ± 0.0238', eval's '<='


def card(name):
    return (ROOT / "artifacts" / "weights" / name / "README.md").read_text(encoding="utf-8")


def card_figures(text):
    """[(bound or exact, figure, its se)] of a card's table of what it scores, in order."""
    table = text.split("\n## What it scores\n")[1].split("\n## ")[0]
    return [("=" if sign == "=" else "<=", float(v), float(se)) for sign, v, se in FIGURE.findall(table)]


def eval_figures(out):
    """The same of scripts/eval.py's table: its test bound (or NLL) row, then its AR mode's where it has one."""
    rows = [line for line in out.splitlines() if line.startswith(("test NLL/bound (nats/char)", "its AR mode"))]
    return [(sign, float(v), float(se)) for row in rows for sign, v, se in FIGURE.findall(row)]


@pytest.mark.parametrize("name", NAMES)
def test_each_has_a_card_in_the_hubs_shape_whose_figures_are_its_own(name):
    """Front matter (language, the repository's licence, model-index), the sections a hub card has, the command of config.json's
    'about', and the figures: the table's equal the model-index's and config.json's (the slow test: eval.py's)."""
    text = card(name)
    front, body = text.split("\n---\n", 1)
    assert front.startswith("---\nlanguage: en\nlicense:") and "model-index:" in front
    # the repository's licence, by the hub's own identifier for it, and a link to its text that resolves
    assert (ROOT / "LICENSE").read_text(encoding="utf-8").startswith("MIT License\n")
    assert re.search(r"^license: (.*)$", front, re.M)[1] == "mit"
    link = re.search(r"\]\(([^)]*LICENSE)\)", body.split("\n## Licence\n")[1])[1]
    assert (ROOT / "artifacts" / "weights" / name / link).resolve() == ROOT / "LICENSE"
    sections = re.findall(r"^## (.*)$", body, re.M)
    assert sections == ["The network", "Data and training", "What it scores", "Sample, race and serve it", "Limits",
                        "Licence"]
    made = about(name)
    assert f"```bash\n{made['command']}\n" in body and made["trained_at"] in body
    figures = card_figures(text)
    assert [v for _, v, _ in figures] == [float(v) for v in re.findall(r"value: ([0-9.]+)\}", front)]
    assert figures[0][1] == float(re.search(r"[0-9]+\.[0-9]{4}", made["test"]).group())
    assert f"{model_params(name):,}" in body and "public domain" in body and "It does not write sense." in body


def model_params(name):
    model, _ = load_model(str(ROOT / "artifacts" / "weights" / name), "cpu")
    return model.num_params()


@pytest.mark.parametrize("name", NAMES)
def test_each_is_the_network_and_tokenizer_its_command_trains_today(name):
    model, ckpt = load_model(str(ROOT / "artifacts" / "weights" / name), "cpu")  # strict: every name and shape
    made = about(name)
    assert made["preset"] in configurator.PRESETS and re.fullmatch(r"[0-9a-f]{7,40}", made["trained_at"])
    argv = shlex.split(made["command"])
    assert argv[:3] == ["python", "train.py", made["preset"]]
    cfg = configurator.get_config(argv[2:])  # the command, read and checked
    tok = tokenizer_from_state(ckpt["tokenizer"])
    text = (ROOT / cfg.data_path).read_text(encoding="utf-8")
    assert fingerprint(tok) == fingerprint(CharTokenizer(sorted(set(text))))
    assert ckpt["model_args"] == vars(model_args(cfg, tok.vocab_size))
    assert ckpt["config"]["objective"] == cfg.objective and model.num_params() < 850_000


def test_a_presets_own_run_is_read_first_and_the_shipped_weights_only_in_its_place(tmp_path, monkeypatch):
    (tmp_path / "artifacts" / "weights" / "cpu").mkdir(parents=True)
    (tmp_path / "artifacts" / "weights" / "baby").mkdir()  # shipped, and your own run of it too: yours is read
    (tmp_path / "artifacts" / "models" / "baby").mkdir(parents=True)
    (tmp_path / "artifacts" / "models" / "baby" / "model.pt").write_bytes(b"")
    monkeypatch.setattr(fileio, "REPO", str(tmp_path))
    monkeypatch.setattr(fileio, "SHIPPED", str(tmp_path / "artifacts" / "weights"))
    monkeypatch.chdir(tmp_path)
    shipped = os.path.join("artifacts", "weights", "cpu")
    assert fileio.own_or_shipped("artifacts/models/cpu/model.pt") == shipped
    assert fileio.own_or_shipped("./artifacts/models/cpu") == shipped
    assert fileio.own_or_shipped("artifacts/models/baby/model.pt") == "artifacts/models/baby/model.pt"  # your own
    for elsewhere in ("artifacts/models/cpu/best.pt", "runs/cpu/model.pt", "artifacts/models/baby_bd3/model.pt"):
        assert fileio.own_or_shipped(elsewhere) == elsewhere  # not a preset's run, or nothing shipped for it
    # found: it stands in, and what is read is the path returned (issue 97: the scripts compared, opened and printed
    # the path typed, which is not there)
    assert fileio.require_checkpoints(["artifacts/models/cpu/model.pt", "artifacts/models/baby/model.pt"], "") == [
        shipped, "artifacts/models/baby/model.pt"]
    with pytest.raises(fileio.UserError, match="artifacts/models/cpu and artifacts/weights/cpu are one checkpoint"):
        fileio.refuse_twins(["artifacts/models/cpu", "artifacts/weights/cpu"])  # compared as read
    fileio.refuse_twins(["artifacts/models/cpu/model.pt", "artifacts/models/baby/model.pt"])  # two runs: no twins
    from utils.cli import model_path
    assert model_path("artifacts/models/cpu/model.pt") == shipped and model_path("x.pt") == "x.pt"
    with pytest.raises(fileio.UserError, match="artifacts/models/baby_bd3/model.pt not found"):
        fileio.require_checkpoints(["artifacts/models/baby_bd3/model.pt"], "")
    for inside in (shipped, "artifacts/weights"):  # training never writes the shipped weights
        with pytest.raises(fileio.UserError, match="inside the folder of weights the repo ships"):
            fileio.check_run_folder(replace(Config(), out_dir=inside))
    for beside in ("artifacts/weightsX/cpu", "artifacts/models/cpu"):  # a name that starts alike is another folder
        fileio.check_run_folder(replace(Config(), out_dir=beside))


def test_the_note_says_which_weights_are_read_how_they_were_made_and_how_to_train_your_own(capsys, monkeypatch,
                                                                                          tmp_path):
    for folder in ("weights", "weightsX"):  # the shipped folder, and one whose name only starts alike
        shutil.copytree(ROOT / "artifacts" / "weights" / "baby_ar", tmp_path / "artifacts" / folder / "baby_ar")
        shutil.copy(ROOT / "artifacts" / "weights" / "checksums.txt", tmp_path / "artifacts" / folder)
    monkeypatch.setattr(fileio, "REPO", str(tmp_path))
    monkeypatch.setattr(fileio, "SHIPPED", str(tmp_path / "artifacts" / "weights"))
    monkeypatch.chdir(tmp_path)
    read_checkpoint("artifacts/weightsX/baby_ar")
    assert capsys.readouterr().out == ""  # not the weights the repo ships: no note
    read_checkpoint("artifacts/weights/baby_ar")
    note = capsys.readouterr().out.strip()
    assert "\n" not in note
    assert note.startswith("reading artifacts/weights/baby_ar, the weights this repo ships")
    assert f"`{about('baby_ar')['command']}`" in note and about("baby_ar")["test"] in note
    assert "artifacts/models/baby_ar/model.pt is read instead once you train it" in note


@pytest.mark.parametrize("name", NAMES)
def test_each_samples_its_pinned_text(name, capsys):
    code, out, err = run_cli_here(inference.main, [f"--checkpoint={ROOT / 'artifacts' / 'weights' / name}",
                                                   "--prompt=JULIET:", "--gen_len=24", "--seed=0", "--device=cpu",
                                                   "--viz-video=off"], capsys)
    assert code == 0, err
    assert out.startswith("reading ") and "the weights this repo ships" in out.splitlines()[0]
    sample = out.split("\n", 2)[2].split("\n---- ")[0]  # after the note and the checkpoint line
    assert sample == PINNED[name], repr(sample)


# one code path four times: baby's and baby_ar's (4 s) in README's command, the two that take 10 s each in the slower
# tier (pytest.ini); the pinned samples above fail at once when any shipped weights change
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slower) if n in ("cpu", "baby_bd3") else n
                                  for n in NAMES])
def test_each_scores_its_test_figure_to_the_printed_digit(name, tmp_path, monkeypatch, capsys):
    """scripts/eval.py's test bound (128 windows x 8 times), the figure config.json and RESULTS give; and every
    figure of its card, with its error bar. (In a temp folder, which reads the repository's data/: eval.py encodes it
    into artifacts/data/ there.)"""
    (tmp_path / "data").symlink_to(ROOT / "data")
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli_here(script("eval").main, [str(ROOT / "artifacts" / "weights" / name), "--n-samples=0",
                                                     "--device=cpu"], capsys)
    assert code == 0, err
    figure = float(re.search(r"[0-9]+\.[0-9]{4}", about(name)["test"]).group())
    row = next(line for line in out.splitlines() if line.startswith("test NLL/bound (nats/char)"))
    measured = float(row.split("|")[1].split()[1])  # '<= 1.8683 ± 0.0240'
    assert max(map(len, out.splitlines()[-20:])) <= 120  # the table: its widest cell wraps
    assert abs(measured - figure) <= 0.5e-4 + 1e-6, (measured, figure)
    assert card_figures(card(name)) == eval_figures(out)  # each figure of its card, its ± too, as eval.py prints


def test_a_preset_run_from_another_folder_is_told_to_run_from_the_repository_root(tmp_path, monkeypatch):
    """Run from elsewhere, a preset's own run is missing and no shipped weights stand in (they are the repo's):
    the refusal says where to run, as it does for a data file."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(fileio.UserError, match="run from the repository root"):
        fileio.require_checkpoints(["artifacts/models/cpu/model.pt"], "")
    with pytest.raises(fileio.UserError, match="train it first"):  # nothing of that name, here or shipped
        fileio.require_checkpoints(["artifacts/models/nope/model.pt"], "")


def test_shipped_weights_exported_again_sample_their_pinned_text_and_keep_how_they_were_made(tmp_path, capsys):
    """Issue 97: README's export line on a fresh clone reads the shipped folder in the preset's run's place, so an
    exported folder is exported again: the same weights (its pinned text), its EMA flag and its 'about' kept."""
    shipped = ROOT / "artifacts" / "weights" / "cpu"
    code, out, err = run_cli_here(script("export").main, [shipped, tmp_path / "again"], capsys)
    assert code == 0 and f"exported {shipped} " in out and "EMA weights" in out, err
    made = json.loads((tmp_path / "again" / "config.json").read_text())
    was = json.loads((shipped / "config.json").read_text())
    assert made["about"] == was["about"] and made["ema_weights"] == was["ema_weights"] and made["iter"] == was["iter"]
    code, out, err = run_cli_here(inference.main, [f"--checkpoint={tmp_path / 'again'}", "--prompt=JULIET:",
                                                   "--gen_len=24", "--seed=0", "--device=cpu", "--viz-video=off"],
                                  capsys)
    assert code == 0 and out.split("\n", 1)[1].split("\n---- ")[0] == PINNED["cpu"], out


@pytest.mark.slower
def test_each_cards_commands_run_as_written_on_a_fresh_copy(tmp_path):
    """Each card's 'Sample, race and serve it' lines, on a copy of what a fresh clone holds (its training lines are
    README's, which tests/test_readme.py runs); a line two cards share runs once. A --serve line serves its page."""
    import subprocess
    from helpers import fresh_copy, serve_briefly
    repo, env = fresh_copy(tmp_path)
    lines = []
    for name in NAMES:
        block = card(name).split("\n## Sample, race and serve it\n")[1].split("```bash\n")[1].split("```")[0]
        lines += [line for line in block.splitlines() if line and line not in lines]
    assert len(lines) == 10
    for line in lines:
        if "--serve" in line:
            code, status, err = serve_briefly(line, repo, env)
            assert (code, status) == (130, 200), (line, err)
            continue
        r = subprocess.run(["bash", "-c", line], cwd=repo, env=env, capture_output=True, text=True, timeout=600,
                           stdin=subprocess.DEVNULL)
        assert r.returncode == 0 and "the weights this repo ships" in r.stdout, (line, r.stderr[-2000:])


@pytest.fixture
def fresh_clone(tmp_path, monkeypatch):
    """A repository root with no run trained and the shipped weights (links to this repo's), run from there."""
    weights = tmp_path / "artifacts" / "weights"
    weights.mkdir(parents=True)
    for name in (*NAMES, "checksums.txt"):
        (weights / name).symlink_to(ROOT / "artifacts" / "weights" / name)
    monkeypatch.setattr(fileio, "REPO", str(tmp_path))
    monkeypatch.setattr(fileio, "SHIPPED", str(weights))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_command_names_the_shipped_folder_it_reads_in_a_presets_place(fresh_clone, capsys):
    """inference.py cpu on a fresh clone reads artifacts/weights/cpu and names that folder on its checkpoint line (not
    the run not trained yet); every other reader (read_checkpoint: eval.py, frontier.py, export, --init_from) reads
    the shipped folder too; the race sees a preset's run and its shipped folder as one checkpoint given twice."""
    code, out, err = run_cli_here(inference.main, ["cpu", "--prompt=JULIET:", "--gen_len=4", "--seed=0",
                                                   "--device=cpu", "--viz-video=off"], capsys)
    assert code == 0, err
    note, line = out.splitlines()[:2]
    assert note.startswith("reading artifacts/weights/cpu, ") and line.startswith("checkpoint artifacts/weights/cpu: ")
    ckpt = read_checkpoint("artifacts/models/baby_ar/model.pt")
    assert ckpt["config"]["objective"] == "ar"
    assert capsys.readouterr().out.startswith("reading artifacts/weights/baby_ar")
    with pytest.raises(fileio.UserError, match="artifacts/weights/baby is given twice"):
        script("race").parse_args(["artifacts/models/baby/model.pt", "artifacts/weights/baby"])


def own_run(at, ckpt, step):
    """The preset run's model.pt at `at`, as train.py leaves it at `step`: the shipped weights' tensors and config."""
    import torch
    at.parent.mkdir(parents=True, exist_ok=True)
    keep = ("model", "config", "model_args", "tokenizer", "meta")
    torch.save({**{k: ckpt[k] for k in keep}, "iter": step}, at)


def test_a_run_in_progress_is_read_in_the_shipped_weights_place_and_said_so_with_its_step(fresh_clone, capsys):
    """Issue 105: while `python train.py cpu` runs, its model.pt (step 250) stood in for the shipped weights and
    nothing said so. Every reader (read_checkpoint: inference, eval, race, export) now says which step of how many it
    reads and how to read the shipped ones; a finished run (its last step) is read as before, without a word."""
    shipped = read_checkpoint("artifacts/weights/cpu")
    capsys.readouterr()
    run = fresh_clone / "artifacts" / "models" / "cpu" / "model.pt"
    own_run(run, shipped, 250)
    code, out, err = run_cli_here(inference.main, ["cpu", "--prompt=JULIET:", "--gen_len=4", "--seed=0",
                                                   "--device=cpu", "--viz-video=off"], capsys)
    assert code == 0, err
    note, line = out.splitlines()[:2]
    assert note == ("reading artifacts/models/cpu/model.pt, your run at step 250 of its 2,000 (still training, or "
                    "stopped before its end), in place of artifacts/weights/cpu, the weights this repo ships: give "
                    "artifacts/weights/cpu to read those")
    assert line.startswith("checkpoint artifacts/models/cpu/model.pt: ")
    code, out, err = run_cli_here(inference.main, ["--checkpoint=artifacts/weights/cpu", "--prompt=JULIET:",
                                                   "--gen_len=4", "--device=cpu", "--viz-video=off"], capsys)
    assert code == 0 and out.startswith("reading artifacts/weights/cpu, the weights this repo ships"), err  # the advice
    own_run(run, shipped, 2000)  # finished
    read_checkpoint("artifacts/models/cpu/model.pt")
    assert capsys.readouterr().out == ""
    own_run(fresh_clone / "runs" / "cpu" / "model.pt", shipped, 250)  # no shipped weights stand in for it: no word
    read_checkpoint("runs/cpu/model.pt")
    assert capsys.readouterr().out == ""



@pytest.fixture
def shipped_copy(tmp_path, monkeypatch):
    """A repository root whose artifacts/weights are copies of the shipped folders (and their list), to edit."""
    shutil.copytree(ROOT / "artifacts" / "weights", tmp_path / "artifacts" / "weights")
    monkeypatch.setattr(fileio, "REPO", str(tmp_path))
    monkeypatch.setattr(fileio, "SHIPPED", str(tmp_path / "artifacts" / "weights"))
    monkeypatch.chdir(tmp_path)
    return tmp_path / "artifacts" / "weights"


def edit_config(folder, change):
    """config.json of folder, changed by change(its JSON) and written back as export.py writes it."""
    path = folder / "config.json"
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta, indent=1))


def both(key, value):
    """A trained key changed in config and in config.json's own copy of it, where it has one (they must agree)."""
    def change(meta):
        meta["config"][key] = value
        if key in meta:
            meta[key] = value
    return change


EDITS = {  # issue 105: each was read as found, and the first two still called the shipped weights
    "the test figure": lambda meta: meta["about"].update(test="<= 1.2345 nats/char"),
    "baby's schedule": both("schedule", "linear"),
    "its objective": both("objective", "uniform"),
    "its block_size": lambda meta: (both("block_size", 32)(meta), meta["model_args"].update(block_size=32)),
    "its diffusion_steps": lambda meta: (both("diffusion_steps", 100)(meta),
                                         meta["model_args"].update(diffusion_steps=100)),
    "its tokenizer's fingerprint": lambda meta: meta.update(tokenizer_fingerprint="0" * 16),
    "its step": lambda meta: meta.update(iter=4000),
    "the command that made it": lambda meta: meta["about"].update(command="python train.py baby --max_iters=9"),
}


@pytest.mark.parametrize("what", EDITS)
def test_a_config_json_changed_where_the_networks_meaning_lies_is_refused(what, shipped_copy, capsys):
    """What a model means is in its config.json as much as in its tensors: the export's checksum covers both (all but
    the sampling defaults), so an edit there is refused in one line, never read as the shipped model."""
    edit_config(shipped_copy / "baby", EDITS[what])
    code, out, err = run_cli_here(inference.main, ["--checkpoint=artifacts/weights/baby", "--device=cpu",
                                                   "--viz-video=off"], capsys)
    assert_one_line_error(code, err, "config.json was changed after scripts/export.py wrote it")
    assert "the weights this repo ships" not in out


def test_a_sampling_default_is_the_users_to_edit_and_the_weights_stay_the_shipped_ones(shipped_copy, capsys):
    edit_config(shipped_copy / "baby", lambda meta: meta["config"].update(prompt="JULIET:", gen_len=24))
    code, out, err = run_cli_here(inference.main, ["--checkpoint=artifacts/weights/baby", "--seed=0", "--device=cpu",
                                                   "--viz-video=off"], capsys)
    assert code == 0 and out.startswith("reading artifacts/weights/baby, the weights this repo ships"), err
    assert out.split("\n", 2)[2].split("\n---- ")[0] == PINNED["baby"]  # its new defaults, sampled


def test_only_the_files_the_repo_ships_are_called_its_shipped_weights(shipped_copy, tmp_path, capsys):
    """A folder of artifacts/weights exported again (the card's own export line, say, with a run of your own) holds
    valid files that are not the shipped ones: it is read, and said not to be them (checksums.txt lists each)."""
    code, _, err = run_cli_here(script("export").main, [shipped_copy / "baby_ar", shipped_copy / "cpu",
                                                        "--overwrite"], capsys)
    assert code == 0, err
    read_checkpoint("artifacts/weights/cpu")
    said = capsys.readouterr().out
    assert said.startswith("reading artifacts/weights/cpu: its files are not the ones this repo ships") and "\n" == \
        said[-1] and said.count("\n") == 1
    assert "the weights this repo ships (" not in said


def test_a_users_export_with_a_trained_key_changed_is_refused_and_one_written_before_the_checksum_is_said(
        shipped_copy, tmp_path, capsys):
    mine = tmp_path / "mine"
    code, _, err = run_cli_here(script("export").main, [shipped_copy / "baby", mine], capsys)
    assert code == 0, err
    edit_config(mine, both("schedule", "linear"))
    code, _, err = run_cli_here(inference.main, [f"--checkpoint={mine}", "--device=cpu", "--viz-video=off"], capsys)
    assert_one_line_error(code, err, f"exported model {mine}: its config.json was changed")
    edit_config(mine, lambda meta: (both("schedule", "cosine")(meta), meta.pop("config_checksum")))  # an older export
    code, out, err = run_cli_here(inference.main, [f"--checkpoint={mine}", "--device=cpu", "--viz-video=off"], capsys)
    assert code == 0 and f"note: exported model {mine} predates config.json's checksum" in out, err
