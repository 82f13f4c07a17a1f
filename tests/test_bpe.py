"""BPE end to end: tokenizer wrapper, chunked data preparation, bits/char accounting, the
12.23M-parameter formula, a tiny BPE training run, sampling with a trace, and bad input.

    python -m pytest -q tests/test_bpe.py      # ~30 s on 2 CPU cores, offline

Every test runs on text the repo has: tests/fixtures/tiny_stories.txt (2.6 KB of hand-written stories) and
~120 KB of story sentences generated in the test (tests/story_grammar.py), the same on every machine, so a fresh
clone without the development corpora exercises BPE end to end. Tokenizer basics (special ids, literal "[MASK]",
the CLI) are in tests/test_data_scripts.py; this file covers what is built on them.
"""
import contextlib
import io
import json
import math
import os
import random
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import inference
import train
from configurator import get_config
from diffusion import SamplerOptions
from helpers import FIXTURES, ROOT, TINY, run_cli_here, script
from model import ModelArgs, Transformer
from scripts.train_tokenizer import save_tokenizer, train_bpe
from story_grammar import stories
from sampling.trace import open_trace
from utils.dataloader import chars_per_token, prepare_data
from utils.errors import UserError, run_cli
from utils.tokenizer import (EOT_TOKEN, BPETokenizer, CharTokenizer, fingerprint, normalize_prompt, split_for_encoding,
                             split_stories, symbol_to_byte)

SEP = EOT_TOKEN


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """~120 KB of stories (the fixture's, then generated ones), and a vocab-512 tokenizer trained on them."""
    text = (FIXTURES / "tiny_stories.txt").read_text(encoding="utf-8") + stories(120_000)
    d = tmp_path_factory.mktemp("bpe")
    path = d / "tokenizer.json"
    save_tokenizer(train_bpe(split_stories(text), vocab_size=512), str(path))
    return text, BPETokenizer.from_file(str(path)), path


# ----------------------------------------------------------------------------- encoding

def test_wrapper_round_trips_stories_byte_exactly(corpus):
    text, tok, _ = corpus
    ids = tok.encode(text)
    assert ids == tok.tok.encode(text).ids  # the threaded encoder is the plain one
    assert tok.decode(ids).encode("utf-8") == text.encode("utf-8")
    assert [i for chunk, _ in tok.encode_chunks(text, chunk_chars=5000) for i in chunk] == ids
    assert sum(n for _, n in tok.encode_chunks(text, chunk_chars=5000)) == len(text)
    # without separators the chunker cuts inside the text: still the same ids
    flat = text.replace(f"\n{SEP}\n", "\n\n")
    pieces = list(split_for_encoding(flat, piece_chars=300))
    assert "".join(pieces) == flat and len(pieces) > 100
    assert [i for p in pieces for i in tok.tok.encode(p).ids] == tok.tok.encode(flat).ids


def test_safe_cuts_on_random_strings(corpus):
    """Cut points must never change the ids, whatever the whitespace and punctuation around them."""
    tok = corpus[1].tok
    rng = random.Random(0)
    alphabet = ["a", "Bc", " ", "  ", "\n", "\n\n", ".", "“", "”", "\t", "é", "7", "'s", "'", "\r\n",
                "\u3000", "\u00a0", SEP, "!?", "-", " the", "\x0b"]
    for _ in range(500):
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        got = [i for p in split_for_encoding(s, piece_chars=rng.randint(1, 6)) for i in tok.encode(p).ids]
        assert got == tok.encode(s).ids, repr(s)


def test_mask_never_comes_out_of_encode_or_prepared_data(corpus, in_tmp):
    text, tok, path = corpus
    tricky = text[:20_000] + "He typed [MASK] and [MASK][MASK].\n" + SEP + "\n[MASK]\n"
    assert tok.mask_id not in tok.encode(tricky)
    assert tok.mask_id not in tok.encode(normalize_prompt(tok, "[MASK] upon a time "))
    (in_tmp / "d.txt").write_text(tricky * 3, encoding="utf-8")
    cfg = get_config(["--tokenizer=bpe", f"--tokenizer_path={path}", "--data_path=d.txt", "--block_size=64"])
    _, train_ids, val_ids, meta = prepare_data(cfg, verbose=False)
    assert train_ids.dtype == np.uint16 and meta["tokenizer_fingerprint"] == fingerprint(tok)
    assert tok.mask_id not in set(np.unique(train_ids)) | set(np.unique(val_ids))
    cut = int(len(tricky * 3) * (1 - cfg.val_fraction))  # nanoGPT's split, by characters
    assert list(train_ids) == tok.encode((tricky * 3)[:cut]) and list(val_ids) == tok.encode((tricky * 3)[cut:])


# ----------------------------------------------------------------------------- bits/char accounting

def test_char_counts_are_exact(corpus):
    text, tok, _ = corpus
    from tokenizers import pre_tokenizers
    assert set(symbol_to_byte()) == set(pre_tokenizers.ByteLevel.alphabet())
    raw, counts = tok.token_bytes(), tok.char_counts()
    for i in range(tok.vocab_size):  # every token that decodes on its own decodes to its bytes
        s = tok.tok.decode([i], skip_special_tokens=False)
        if "\ufffd" not in s and i != tok.mask_id:
            assert s.encode("utf-8") == raw[i] and counts[i] == len(s)
    assert counts[tok.mask_id] == 0 and counts[tok.eot_id] == len(SEP)
    ids = tok.encode(text)
    assert sum(counts[i] for i in ids) == len(text)  # additive and exact over the whole text
    # windows: chars_per_token(windows) = characters the windows decode to / tokens (windows that
    # cut a multi-byte character decode to '\ufffd' and are left out of this comparison)
    rows = [ids[s:s + 64] for s in range(0, 64 * 60, 64)]
    rows = [r for r in rows if "\ufffd" not in tok.decode(r)]
    assert len(rows) > 30
    decoded = sum(len(tok.decode(r)) for r in rows)
    assert chars_per_token(tok, torch.tensor(rows)) * 64 * len(rows) == pytest.approx(decoded, rel=1e-12)
    ch = CharTokenizer(sorted(set("abc\n")))
    assert chars_per_token(ch, torch.tensor([[0, 1, 2, 3]])) == 1.0


# ----------------------------------------------------------------------------- model size, prompts, traces

def test_default_bpe_model_has_the_reference_size():
    cfg = get_config(["tinystories_bpe"])
    assert (cfg.tokenizer, cfg.n_layer, cfg.n_head, cfg.n_embd) == ("bpe", 6, 6, 384)
    V, d, L, T = 2048, 384, 6, 100
    formula = L * 12 * d * d + 2 * V * d + (T + 1) * d  # blocks (qkv, proj, 4x MLP) + emb + head + time emb
    assert formula == 12_228_480
    assert Transformer(ModelArgs.from_config(cfg, V)).num_params() == formula


def test_laptop_bpe_preset_reads_the_shipped_excerpt_and_trains_its_missing_tokenizer(in_tmp, capsys):
    cfg = get_config(["tinystories_bpe_cpu"])
    assert (cfg.tokenizer, cfg.data_path, cfg.objective, cfg.bd3_block, cfg.mask_min) == \
        ("bpe", "data/tinystories_train_head.txt", "bd3", 4, 0.5)
    V, d, L = 2048, 128, 4
    assert Transformer(ModelArgs.from_config(cfg, V)).num_params() == L * 12 * d * d + 2 * V * d == 1_310_720
    (in_tmp / "data").mkdir()
    shutil.copy(ROOT / cfg.data_path, in_tmp / cfg.data_path)  # ships with the repo: a fresh clone has it
    train.main(["tinystories_bpe_cpu", "--max_iters=0"])
    out = capsys.readouterr().out
    assert f"tokenizer: {cfg.tokenizer_path} does not exist, so training" in out, out
    made = (in_tmp / cfg.tokenizer_path).read_text()
    # the same tokenizer the README's command makes from the same file
    text = (in_tmp / cfg.data_path).read_text(encoding="utf-8")
    assert BPETokenizer.from_file(str(in_tmp / cfg.tokenizer_path)).vocab_size == 2048
    assert json.loads(made) == json.loads(train_bpe(split_stories(text), 2048).tok.to_str())
    train.main(["tinystories_bpe_cpu", "--max_iters=0"])  # a second run reads it, trains nothing
    assert "does not exist" not in capsys.readouterr().out and (in_tmp / cfg.tokenizer_path).read_text() == made


def test_the_char_tinystories_preset_builds_offline_from_the_shipped_excerpt(in_tmp, capsys):
    cfg = get_config(["tinystories_cpu"])
    (in_tmp / "data").mkdir()
    shutil.copy(ROOT / cfg.data_path, in_tmp / cfg.data_path)
    train.main(["tinystories_cpu", "--max_iters=0"])  # data, tokenizer, windows and model, no network
    assert "exiting without training" in capsys.readouterr().out


def test_the_report_reads_chars_per_token_over_the_scored_tokens_only(corpus):
    """evals.bound.report_windows: the chars a token of a window's last L tokens, the ones scored (the first is the
    AR's context), not of all L + 1; they differ on BPE, where tokens hold unequal characters."""
    from evals.bound import report_windows
    text, tok, _ = corpus
    ids = torch.tensor(tok.encode(text[:40_000]))
    windows, cpt = report_windows(tok, ids, ids, "test", 8, 32)
    assert windows.shape == (8, 33) and cpt == chars_per_token(tok, windows[:, 1:])
    assert cpt != chars_per_token(tok, windows)


def test_an_export_carries_its_bpe_tokenizer(corpus, tmp_path, capsys):
    """A BPE checkpoint (built by hand, untrained) exported: tokenizer.json is the run's, and the export loads with
    the tokenizer it was trained with (the fast twin of the slow test on a trained run)."""
    from checkpoint_manager import load_model
    from utils.checkpoint import save_checkpoint
    _, tok, path = corpus
    a = ModelArgs(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16, time_cond="none")
    state = dict(kind="bpe", json=path.read_text(encoding="utf-8"))
    config = dict(objective="mdlm", block_size=16, n_layer=1, n_head=2, n_embd=16, time_cond="none", tokenizer="bpe")
    save_checkpoint(tmp_path / "m.pt", dict(model=Transformer(a).state_dict(), config=config, model_args=vars(a),
                                            iter=0, tokenizer=state))
    out = tmp_path / "export"
    assert run_cli_here(script("export").main, [tmp_path / "m.pt", out], capsys)[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    _, ckpt = load_model(str(out), "cpu")
    assert ckpt["tokenizer"]["kind"] == "bpe" and fingerprint(BPETokenizer.from_json(ckpt["tokenizer"]["json"])) == \
        fingerprint(tok)


def test_prompt_normalisation(corpus):
    tok = corpus[1]
    assert normalize_prompt(tok, "Once upon a time \t ") == "Once upon a time"
    assert normalize_prompt(tok, "cafe\u0301\n") == "caf\u00e9\n"  # NFC; a newline is text
    assert normalize_prompt(tok, "") == ""
    with pytest.raises(UserError, match="empty after normalisation"):
        normalize_prompt(tok, " \t ")
    assert normalize_prompt(CharTokenizer(sorted(set("ab "))), "a ") == "a "  # char: every character counts


def test_bpe_trace_frame_fits_a_full_generation(corpus, tmp_path):
    text, tok, _ = corpus
    cfg = get_config(["--tokenizer=bpe", f"--viz_video={tmp_path / 't.mp4'}"])
    ids = tok.encode(text)
    with open_trace(cfg, SamplerOptions.from_config(cfg), "bpe", tok) as trace:
        writer = trace.video
        for start in range(0, len(ids) - 256, len(ids) // 12):  # 256-token stretches of the corpus
            tokens = [tok.token_text(i) for i in ids[start:start + 256]]
            writer.add_frame(tokens, ["kept"] * 256, step=0, t=0.0, nfe=0)
    assert writer.result["frames"] > 1 and writer.rows >= max(  # every frame fits the grid the trace closed with
        writer._layout([tok.token_text(i) for i in ids[s:s + 256]], ["kept"] * 256)[-1][0] + 1
        for s in range(0, len(ids) - 256, len(ids) // 12))


# ----------------------------------------------------------------------------- end to end

@pytest.fixture(scope="module")
def bpe_run(corpus, tmp_path_factory):
    """tinystories_bpe at TINY size for 150 iterations on the corpus: (run dir, stdout)."""
    text, _, tok_path = corpus
    d = tmp_path_factory.mktemp("bpe_run")
    (d / "data").mkdir()
    (d / "data" / "stories.txt").write_text(text, encoding="utf-8")
    cwd, out, threads = os.getcwd(), io.StringIO(), torch.get_num_threads()
    os.chdir(d)
    torch.set_num_threads(1)  # a model this small runs ~2x faster on one thread when the cores are shared
    try:
        with contextlib.redirect_stdout(out):
            train.main(["tinystories_bpe", f"--tokenizer_path={tok_path}", *TINY, "--max_iters=150",
                        "--eval_interval=15", "--learning_rate=3e-3", "--min_lr=3e-4", "--warmup_iters=20",
                        "--gen_len=32", "--prompt=Once upon a time "])
    finally:
        os.chdir(cwd)
        torch.set_num_threads(threads)
    return d, out.getvalue()


def test_tiny_bpe_run_learns_and_records_its_tokenizer(bpe_run, corpus):
    d, out = bpe_run
    assert "encoded train:" in out and "M chars/s" in out and "M tokens/s" in out
    evals = [r for r in map(json.loads, open(d / "artifacts/models/tinystories_bpe/metrics.jsonl")) if r["kind"] == "eval"]
    bpc = [e["bits_per_char"] for e in evals]
    assert len(bpc) == 10 and all(math.isfinite(b) for b in bpc)
    assert bpc[-1] < bpc[0] - 0.1, bpc  # measured: 2.93 at iter 15 -> 2.69 at 150
    uniform = math.log(511) / math.log(2) / (len(corpus[0]) / len(corpus[1].encode(corpus[0])))
    assert bpc[-1] < uniform  # below a uniform guess over the 511 tokens other than [MASK], in bits/char (3.40)
    ck = torch.load(d / "artifacts/models/tinystories_bpe/model.pt", weights_only=True)
    assert ck["tokenizer"]["kind"] == "bpe" and ck["tokenizer_fingerprint"] == fingerprint(corpus[1])
    assert ck["config"]["prompt"] == "Once upon a time"  # normalised before training started


def test_inference_samples_bpe_with_a_token_level_trace(bpe_run):
    d, _ = bpe_run
    video = d / "media" / "trace.mp4"
    args = ["--checkpoint", "artifacts/models/tinystories_bpe/model.pt", "--prompt", "Once upon a time",
            "--gen-len", 40, "--steps", 20, "--seed", 0, "--viz-video", video, "--trace-every", 4, "--gif-frame-ms", 100]
    r = subprocess.run([sys.executable, str(ROOT / "inference.py"), *map(str, args)], cwd=d, capture_output=True, text=True,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "bpe vocab 512" in lines[0]
    assert lines[1].startswith("Once upon a time") and "_" not in lines[1]
    assert "1 x 40 BPE tokens (--gen-len counts tokens" in r.stdout
    frames = int(r.stdout.split("trace: ")[1].split(" frames")[0])
    from PIL import Image
    with Image.open(video.with_suffix(".gif")) as gif:
        assert gif.n_frames == frames >= 1 + 20 // 4  # the all-[MASK] start, then every 4th step


def test_bpe_export_carries_its_tokenizer_and_samples_the_same(bpe_run, tmp_path, capsys):
    d, _ = bpe_run
    ckpt, out = d / "artifacts/models/tinystories_bpe/model.pt", tmp_path / "export"
    assert run_cli_here(script("export").main, [ckpt, out], capsys)[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    assert BPETokenizer.from_file(str(out / "tokenizer.json")).vocab_size == 512  # the Hugging Face file, ours
    argv = ["--prompt", "Once upon a time", "--gen-len", 20, "--steps", 10, "--seed", 1, "--viz-video", "off"]
    a = run_cli_here(inference.main, ["--checkpoint", ckpt, *argv], capsys)[1].splitlines()
    b = run_cli_here(inference.main, ["--checkpoint", out, *argv], capsys)[1].splitlines()
    assert a[1:-1] == b[1:-1] and a[1].startswith("Once upon a time")


def _cli_error(capsys, main, argv):
    """Run an entry point the way its __main__ does; return its one stderr line (exit 2)."""
    with pytest.raises(SystemExit) as e:
        run_cli(main, [str(a) for a in argv])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    return err


def test_bad_input_exits_2_and_overwrites_nothing(bpe_run, corpus, capsys, tmp_path, monkeypatch):
    d, _ = bpe_run
    monkeypatch.chdir(d)
    ckpt = "artifacts/models/tinystories_bpe/model.pt"
    before = (d / ckpt).read_bytes()
    video = tmp_path / "v.mp4"
    other = tmp_path / "other.json"
    save_tokenizer(train_bpe(split_stories(corpus[0][:50_000]), vocab_size=300), str(other))
    args = ["--checkpoint", ckpt, "--viz-video", video]
    err = _cli_error(capsys, inference.main, [*args, "--tokenizer_path", tmp_path / "missing.json"])
    assert "tokenizer not found" in err and "train_tokenizer.py" in err
    err = _cli_error(capsys, inference.main, [*args, "--tokenizer-path", other])
    assert "differs from the one" in err and "vocab 300" in err and "vocab 512" in err
    err = _cli_error(capsys, inference.main, [*args, "--prompt", " \t "])
    assert "empty after normalisation" in err
    # training: a tokenizer that is not ours fails before anything in out_dir is touched, even with --overwrite
    (tmp_path / "foreign.json").write_text('{"hello": 1}')
    err = _cli_error(capsys, train.main, ["tinystories_bpe", *TINY, "--max_iters=5", "--overwrite",
                                          f"--tokenizer_path={tmp_path / 'foreign.json'}"])
    assert "cannot read tokenizer" in err
    assert (d / ckpt).read_bytes() == before and not video.exists() and not video.with_suffix(".gif").exists()


def test_eval_divides_by_the_characters_of_the_scored_windows(bpe_run):
    """scripts/eval.py's bits/char = bound / (characters the scored windows decode to), not the whole split's
    chars/token, which differs from the windows' (1.07 % on the 10k-story recipe)."""
    from checkpoint_manager import checkpoint_config
    from helpers import script
    from checkpoint_manager import load_model
    from utils.dataloader import fixed_windows
    from utils.tokenizer import tokenizer_from_state
    d, _ = bpe_run
    ckpt = d / "artifacts/models/tinystories_bpe/model.pt"
    cwd = os.getcwd()
    os.chdir(d)
    try:
        out = d / "ev.json"
        script("eval").main([str(ckpt), "--n-windows", "8", "--n-t", "2", "--n-samples", "0",
                             "--device", "cpu", "--json", str(out)])
        row = json.loads(out.read_text())["runs"][0]
        model, ck = load_model(str(ckpt), "cpu")
        tok, _, val, meta = prepare_data(checkpoint_config(ck, "a checkpoint"), tokenizer_from_state(ck["tokenizer"]), verbose=False)
    finally:
        os.chdir(cwd)
    cpt = chars_per_token(tok, fixed_windows(val[len(val) // 2:], 8, model.args.block_size + 1)[:, 1:])  # test half: last L of L + 1
    assert row["chars_per_token"] == pytest.approx(cpt, rel=1e-12)
    assert row["bits_per_char"] == pytest.approx(row["nats_per_token"] / cpt / math.log(2), rel=1e-9)
    assert cpt != pytest.approx(meta["val_chars"] / meta["val_tokens"], rel=1e-4)  # the split's figure differs
