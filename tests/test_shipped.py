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
from helpers import HANG, ROOT, model_args, run_cli_here, script
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
    assert len(sizes) == 4 * len(NAMES)  # model.safetensors, config.json, vocab.json and the card (README.md) each
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
    """Front matter (language, licence, model-index), the sections a hub card has, the command of config.json's
    'about', and the figures: the table's equal the model-index's and config.json's (the slow test: eval.py's)."""
    text = card(name)
    front, body = text.split("\n---\n", 1)
    assert front.startswith("---\nlanguage: en\nlicense:") and "model-index:" in front
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
    cfg, _ = configurator.parse(argv[2:])
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
def test_each_scores_its_test_figure_to_the_printed_digit(name, capsys):
    """scripts/eval.py's test bound (128 windows x 8 times), the figure config.json and RESULTS give; and every
    figure of its card, with its error bar."""
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
        r = subprocess.run(["bash", "-c", line], cwd=repo, env=env, capture_output=True, text=True, timeout=HANG,
                           stdin=subprocess.DEVNULL)
        assert r.returncode == 0 and "the weights this repo ships" in r.stdout, (line, r.stderr[-2000:])


@pytest.fixture
def fresh_clone(tmp_path, monkeypatch):
    """A repository root with no run trained and the shipped weights (links to this repo's), run from there."""
    weights = tmp_path / "artifacts" / "weights"
    weights.mkdir(parents=True)
    for name in NAMES:
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
