"""BPE end to end on text the repo has: the wrapper, chunked preparation, bits/char accounting, the offline presets,
a tiny run, its export and sampling, bad input. python -m pytest -q tests/test_bpe.py"""
import contextlib
import io
import json
import math
import os
import random
import shutil

import numpy as np
import pytest
import torch

import inference
import train
from configurator import get_config
from helpers import FIXTURES, ROOT, TINY, assert_one_line_error, run_cli_here, script
from scripts.train_tokenizer import save_tokenizer, train_bpe
from story_grammar import stories
from utils.dataloader import chars_per_token, prepare_data
from utils.errors import UserError
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


def test_wrapper_round_trips_stories_byte_exactly(corpus):
    text, tok, _ = corpus
    ids = tok.encode(text)
    assert ids == tok.tok.encode(text).ids  # the threaded encoder is the plain one
    assert tok.decode(ids).encode("utf-8") == text.encode("utf-8")
    assert [i for chunk, _ in tok.encode_chunks(text, chunk_chars=5000) for i in chunk] == ids
    assert sum(n for _, n in tok.encode_chunks(text, chunk_chars=5000)) == len(text)


def test_safe_cuts_on_random_strings(corpus):
    """split_for_encoding's cuts never change the ids, whatever is around them, and the pieces join to the string."""
    tok = corpus[1].tok
    rng = random.Random(0)
    alphabet = ["a", "Bc", " ", "  ", "\n", "\n\n", ".", "“", "”", "\t", "é", "7", "'s", "'", "\r\n",
                "\u3000", "\u00a0", SEP, "!?", "-", " the", "\x0b"]
    for _ in range(500):
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        pieces = list(split_for_encoding(s, piece_chars=rng.randint(1, 6)))
        assert "".join(pieces) == s and [i for p in pieces for i in tok.encode(p).ids] == tok.encode(s).ids, repr(s)


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
    # chars_per_token(windows) = characters the windows decode to / tokens (a cut multi-byte character left out)
    rows = [ids[s:s + 64] for s in range(0, 64 * 60, 64)]
    rows = [r for r in rows if "\ufffd" not in tok.decode(r)]
    assert len(rows) > 30
    decoded = sum(len(tok.decode(r)) for r in rows)
    assert chars_per_token(tok, torch.tensor(rows)) * 64 * len(rows) == pytest.approx(decoded, rel=1e-12)
    ch = CharTokenizer(sorted(set("abc\n")))
    assert chars_per_token(ch, torch.tensor([[0, 1, 2, 3]])) == 1.0


@pytest.mark.parametrize("preset", ["tinystories_bpe_cpu", "tinystories_cpu"])
def test_a_tinystories_laptop_preset_builds_offline_from_the_shipped_excerpt(preset, in_tmp, capsys):
    """No network needed; the BPE preset trains its missing tokenizer as README's command does, once."""
    cfg = get_config([preset])
    (in_tmp / "data").mkdir()
    shutil.copy(ROOT / cfg.data_path, in_tmp / cfg.data_path)  # ships with the repo: a fresh clone has it
    train.main([preset, "--max_iters=0"])
    out = capsys.readouterr().out
    assert "exiting without training" in out
    if cfg.tokenizer != "bpe":
        return
    assert f"tokenizer: {cfg.tokenizer_path} does not exist, so training" in out, out
    made = (in_tmp / cfg.tokenizer_path).read_text()
    text = (in_tmp / cfg.data_path).read_text(encoding="utf-8")
    assert json.loads(made) == json.loads(train_bpe(split_stories(text), 2048).tok.to_str())
    train.main([preset, "--max_iters=0"])  # a second run reads it, trains nothing
    assert "does not exist" not in capsys.readouterr().out and (in_tmp / cfg.tokenizer_path).read_text() == made


def test_prompt_normalisation(corpus):
    tok = corpus[1]
    assert normalize_prompt(tok, "Once upon a time \t ") == "Once upon a time"
    assert normalize_prompt(tok, "cafe\u0301\n") == "caf\u00e9\n"  # NFC; a newline is text
    assert normalize_prompt(tok, "") == ""
    with pytest.raises(UserError, match="empty after normalisation"):
        normalize_prompt(tok, " \t ")
    assert normalize_prompt(CharTokenizer(sorted(set("ab "))), "a ") == "a "  # char: every character counts


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


def test_bpe_export_carries_its_tokenizer_and_samples_the_same_bpe_tokens(bpe_run, tmp_path, capsys):
    d, _ = bpe_run
    ckpt, out = d / "artifacts/models/tinystories_bpe/model.pt", tmp_path / "export"
    assert run_cli_here(script("export").main, [ckpt, out], capsys)[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    assert BPETokenizer.from_file(str(out / "tokenizer.json")).vocab_size == 512  # the Hugging Face file, ours
    argv = ["--prompt", "Once upon a time", "--gen-len", 20, "--steps", 10, "--seed", 1, "--viz-video", "off"]
    a = run_cli_here(inference.main, ["--checkpoint", ckpt, *argv], capsys)[1].splitlines()
    b = run_cli_here(inference.main, ["--checkpoint", out, *argv], capsys)[1].splitlines()
    assert a[1:-1] == b[1:-1] and a[1].startswith("Once upon a time") and "_" not in a[1]
    assert "bpe vocab 512" in a[0] and "1 x 20 BPE tokens (--gen-len counts tokens" in "\n".join(a)


def test_bad_input_exits_2_and_overwrites_nothing(bpe_run, capsys, tmp_path, monkeypatch):
    """A BPE checkpoint's own refusals (its tokenizer missing, a prompt empty once normalised); no trace written."""
    d, _ = bpe_run
    monkeypatch.chdir(d)
    ckpt = "artifacts/models/tinystories_bpe/model.pt"
    before = (d / ckpt).read_bytes()
    video = tmp_path / "v.mp4"
    args = ["--checkpoint", ckpt, "--viz-video", video]
    code, _, err = run_cli_here(inference.main, [*args, "--tokenizer_path", tmp_path / "missing.json"], capsys)
    assert_one_line_error(code, err, "tokenizer not found", "train_tokenizer.py")
    code, _, err = run_cli_here(inference.main, [*args, "--prompt", " \t "], capsys)
    assert_one_line_error(code, err, "empty after normalisation")
    assert (d / ckpt).read_bytes() == before and not video.exists() and not video.with_suffix(".gif").exists()


def test_eval_divides_by_the_characters_of_the_scored_windows(bpe_run):
    """eval.py's bits/char divides by the scored tokens' chars a token, not all L + 1's, nor the whole split's."""
    from checkpoint_manager import checkpoint_config, load_model
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
    windows = fixed_windows(val[len(val) // 2:], 8, model.args.block_size + 1)  # the test half's
    cpt = chars_per_token(tok, windows[:, 1:])  # the scored last L of each L + 1
    assert row["chars_per_token"] == pytest.approx(cpt, rel=1e-12) != chars_per_token(tok, windows)
    assert row["bits_per_char"] == pytest.approx(row["nats_per_token"] / cpt / math.log(2), rel=1e-9)
    assert cpt != pytest.approx(meta["val_chars"] / meta["val_tokens"], rel=1e-4)  # the split's figure differs
