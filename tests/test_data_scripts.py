"""scripts/data.py, scripts/corpus.py, scripts/train_tokenizer.py and the BPE of utils/tokenizer.py, on the repo's
text and stories generated here (tests/story_grammar.py): no network.   python -m pytest -q tests/test_data_scripts.py
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from configurator import get_config
from helpers import FIXTURES, HANG, ROOT, assert_one_line_error, run_script as run
from scripts import corpus
from scripts.train_tokenizer import train_bpe
from story_grammar import stories
from utils.errors import UserError
from utils.tokenizer import MASK_TOKEN, BPETokenizer, split_stories

FIXTURE = FIXTURES / "tiny_stories.txt"
SHAKESPEARE = ROOT / "data" / "tinyshakespeare.txt"
SEP = corpus.SEPARATOR

def run_script(name, *args, env=None):
    return run(f"scripts/{name}", *args, env=env)


# python -c COUNT_WAITS SCRIPT ARGS: the script run with every wait it chooses counted (time.sleep and asyncio.sleep,
# as a retry's back-off sleeps), their seconds written to $SLEPT at exit
COUNT_WAITS = """import asyncio, atexit, os, runpy, sys, time
slept, sleep, asleep = [], time.sleep, asyncio.sleep
def counted(s):
    slept.append(s)
    sleep(s)
async def acounted(s, *args, **kwargs):
    slept.append(s)
    return await asleep(s, *args, **kwargs)
time.sleep, asyncio.sleep = counted, acounted
atexit.register(lambda: open(os.environ["SLEPT"], "w").write(str(sum(slept))))
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def assert_user_error(r, *needles):
    """Exit code 2, exactly one line on stderr starting with 'error:', no traceback."""
    return assert_one_line_error(r.returncode, r.stderr, *needles).strip()


def stories_of(path):
    text = Path(path).read_text(encoding="utf-8")
    assert text.endswith("\n" + SEP + "\n")
    return text[: -len(SEP) - 2].split("\n" + SEP + "\n")


def fixture_stories():
    return [s.strip() for s in FIXTURE.read_text(encoding="utf-8").split(SEP) if s.strip()]


# ----------------------------------------------------------------------------- data.py: local text

@pytest.mark.slower
def test_local_txt_all_in_order_and_an_existing_output_kept_without_force(tmp_path):
    out = tmp_path / "all.txt"
    out.write_text("precious\n", encoding="utf-8")
    assert_user_error(run_script("data.py", "--input-file", FIXTURE, "--output", out), "--overwrite", str(out))
    assert out.read_text(encoding="utf-8") == "precious\n"
    r = run_script("data.py", "--input-file", FIXTURE, "--output", out, "--force")
    assert r.returncode == 0, r.stderr
    assert "10 stories" in r.stdout and str(out) in r.stdout
    assert stories_of(out) == fixture_stories()  # stripped, original order, same format
    assert [p.name for p in tmp_path.iterdir()] == ["all.txt"]  # no temp files left


def test_sample_texts_uniform_and_bounded():
    items = [f"t{i}" for i in range(1000)]
    a = corpus.sample_texts(iter(items), 50, seed=3)
    assert a == corpus.sample_texts(iter(items), 50, seed=3) and len(set(a)) == 50
    assert max(int(t[1:]) for t in a) > 500  # not just the head of the stream
    assert sorted(corpus.sample_texts(iter(items[:5]), 50, seed=3)) == sorted(items[:5])
    assert list(corpus.sample_texts(iter(items), 0, seed=3)) == items  # 0 = all, in order


def test_split_on_chunk_boundaries(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus, "_CHUNK", 7)  # separators and blank lines straddle chunks
    p = tmp_path / "c.txt"
    p.write_text("one\n<|endoftext|>\n\ntwo two\n<|endoftext|>\nthree\n<|endoftext|>\n", encoding="utf-8")
    assert list(corpus.iter_local_texts(str(p))) == ["one", "two two", "three"]
    q = tmp_path / "b.txt"
    q.write_text("para one\nline\n\n\npara two\n  \npara three\n", encoding="utf-8")
    assert list(corpus.iter_local_texts(str(q), split_blank_lines=True)) == \
        ["para one\nline", "para two", "para three"]
    assert list(corpus.iter_local_texts(str(q))) == [q.read_text(encoding="utf-8")]  # one document


@pytest.mark.slower
def test_a_sample_of_stories_is_seeded(tmp_path):
    src_file, out = tmp_path / "stories_src.txt", tmp_path / "s.txt"
    src_file.write_text(stories(100_000), encoding="utf-8")  # ~200 stories
    r = run_script("data.py", "--input-file", src_file, "--num-stories", 100, "--seed", 1337, "--output", out)
    assert r.returncode == 0, r.stderr
    got = stories_of(out)

    def direct(seed):  # the same logic called in this process
        return corpus.sample_texts(corpus.iter_local_texts(str(src_file)), 100, seed)
    assert len(set(got)) == 100 and set(got) <= {s.strip() for s in src_file.read_text(encoding="utf-8").split(SEP)}
    assert got == direct(1337) != direct(1338)
    assert "“" in out.read_text(encoding="utf-8")  # Unicode typography survives


@pytest.mark.slower
def test_shakespeare_is_one_document_unchanged(tmp_path):
    out = tmp_path / "shakespeare.txt"
    r = run_script("data.py", "--input-file", SHAKESPEARE, "--output", out)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == SHAKESPEARE.read_bytes()
    assert "1 document" in r.stdout and "65 distinct" in r.stdout


def test_single_document_fallback_unchanged(tmp_path):
    src = tmp_path / "doc.txt"
    src.write_bytes("First Citizen:\r\nBefore we proceed any further, hear me speak.\n\n\nAll:\nSpeak.  \n".encode())
    out = tmp_path / "out.txt"
    stats = corpus.write_corpus(corpus.iter_local_texts(str(src)), str(out), single_document=True)
    assert out.read_bytes() == src.read_bytes() and stats["stories"] == 1


# ----------------------------------------------------------------------------- data.py: datasets path

@pytest.mark.slower
def test_jsonl_and_parquet_through_datasets(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    rows = [{"id": i, "content": f"  Story number {i}. “Hi,” she said — it’s fine.\n"} for i in range(12)]
    jl = tmp_path / "d.jsonl"
    jl.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    pqf = tmp_path / "d.parquet"
    pq.write_table(pa.table({"id": [r["id"] for r in rows], "content": [r["content"] for r in rows]}), pqf)
    want = [r["content"].strip() for r in rows]

    out = tmp_path / "j.txt"
    r = run_script("data.py", "--input-file", jl, "--text-field", "content", "--output", out)
    assert r.returncode == 0, r.stderr
    assert stories_of(out) == want

    assert corpus.local_format(str(pqf)) == "parquet"
    assert list(corpus.iter_local_texts(str(pqf), text_field="content")) == [r["content"] for r in rows]
    picked = corpus.sample_texts(corpus.iter_local_texts(str(pqf), "content"), 5, seed=1)
    assert len(picked) == 5 and picked == corpus.sample_texts(
        corpus.iter_local_texts(str(pqf), "content"), 5, seed=1)

    r = run_script("data.py", "--input-file", pqf, "--output", tmp_path / "x.txt")  # default field 'text'
    assert_user_error(r, "'text'", "content", "--text-field")
    assert not (tmp_path / "x.txt").exists()


# ----------------------------------------------------------------------------- data.py: errors

@pytest.mark.slower
def test_bad_inputs_are_one_line_errors(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    seps = tmp_path / "seps.txt"
    seps.write_text(f"\n{SEP}\n \n{SEP}\n", encoding="utf-8")
    out = tmp_path / "o.txt"
    with pytest.raises(UserError, match="empty"):
        corpus.local_format(str(empty))
    with pytest.raises(UserError, match="no stories"):
        corpus.write_corpus(corpus.iter_local_texts(str(seps)), str(out))
    odd = tmp_path / "data.xyz"
    odd.write_text("x", encoding="utf-8")
    with pytest.raises(UserError, match="unsupported"):
        corpus.local_format(str(odd))
    doc = tmp_path / "doc.txt"
    doc.write_text("one single document\n", encoding="utf-8")
    assert_user_error(run_script("data.py", "--input-file", doc, "--num-stories", 5, "--output", out),
                      "one document", "--num-stories")
    assert not out.exists()


def test_hub_path_with_a_fake_hub(monkeypatch):
    """iter_hf_texts' shuffle/take/text-field logic, with load_dataset replaced (no network)."""
    datasets = pytest.importorskip("datasets")
    calls = []

    def fake_load_dataset(name, config=None, split=None, streaming=False):
        calls.append((name, config, split, streaming))
        rows = [{"text": f"story {i}", "n": i} for i in range(200)]
        return datasets.IterableDataset.from_generator(lambda: iter(rows))

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # skips the reachability probe
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    a = list(corpus.iter_hf_texts("some/dataset", "train", "text", seed=5, shuffle_buffer=50, num=20))
    b = list(corpus.iter_hf_texts("some/dataset", "train", "text", seed=5, shuffle_buffer=50, num=20))
    assert calls[0] == ("some/dataset", None, "train", True)
    assert len(a) == 20 and a == b and a != [f"story {i}" for i in range(20)]
    assert list(corpus.iter_hf_texts("some/dataset", num=0))[:3] == ["story 0", "story 1", "story 2"]
    with pytest.raises(UserError, match="--text-field"):
        list(corpus.iter_hf_texts("some/dataset", text_field="content", num=3))


def test_a_missing_data_file_names_the_command_that_makes_it(tmp_path, monkeypatch):
    """The presets' files name their scripts/data.py command (the shipped corpus: git checkout), a path in the repo
    but not here says where to run, any other path the flag."""
    from utils import dataloader, fileio

    def advice(*argv):
        with pytest.raises(UserError) as e:
            dataloader.split_texts(get_config(list(argv)))
        assert "../shared" not in str(e.value)
        return str(e.value)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(fileio, "REPO", str(tmp_path / "clone"))  # a clone where no data was made yet
    tinystories = "python scripts/data.py --dataset roneneldan/TinyStories --split "
    assert "git checkout -- data/tinystories_train_head.txt" in advice("tinystories_cpu")  # ships with the repo
    assert f"{tinystories}train --num-stories 10000 --seed 1337 --output data/stories.txt" in advice("tinystories_bpe")
    assert f"{tinystories}train --output data/tinystories_train.txt" in advice("tinystories_char")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "tinystories_train.txt").write_text("Once upon a time")
    assert f"{tinystories}validation --output data/tinystories_valid.txt" in advice("gpt200m")
    assert "git checkout -- data/tinyshakespeare.txt" in advice("cpu")
    assert "give --data_path=PATH of a UTF-8 text file" in advice("--data_path=mine.txt")
    monkeypatch.setattr(fileio, "REPO", str(ROOT))
    assert f"run from the repository root ({ROOT})" in advice("cpu")  # run from elsewhere


def test_hub_error_messages():
    from datasets.exceptions import DatasetNotFoundError
    e = corpus._hub_error("no/such", "train", DatasetNotFoundError("Dataset 'no/such' doesn't exist"))
    assert "not found" in str(e) and "--input-file" in str(e)
    e = corpus._hub_error("a/b", "train", ConnectionError("Couldn't reach 'a/b' on the Hub (LocalEntryNotFoundError)"))
    assert str(e).startswith("could not reach the Hugging Face hub for 'a/b' (offline? ConnectionError: "
                             "LocalEntryNotFoundError)")
    e = corpus._hub_error("a/b", "tran", ValueError("Bad split: tran. Available splits: ['train']"))
    assert "--split" in str(e)


@pytest.mark.slower
def test_hub_unreachable_is_fast_one_line(tmp_path):
    """No wait for a retry (`datasets` alone slept 1, 2, 4, 8 and 8 s): the waits are counted, not timed."""
    out, slept = tmp_path / "o.txt", tmp_path / "slept"
    args = ("--dataset", "roneneldan/TinyStories", "--split", "train", "--num-stories", 10000,
            "--seed", 1337, "--output", out)
    # an endpoint nobody listens on (no network use, deterministic), then offline mode
    for env in ({"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0"},
                {"HF_HUB_OFFLINE": "1"}):
        r = subprocess.run([sys.executable, "-c", COUNT_WAITS, str(ROOT / "scripts" / "data.py"), *map(str, args)],
                           cwd=ROOT, env={**os.environ, **env, "SLEPT": str(slept)}, capture_output=True, text=True,
                           timeout=HANG)
        line = assert_user_error(r, "could not reach the Hugging Face hub", "roneneldan/TinyStories",
                                 "--input-file")
        assert "offline?" in line and float(slept.read_text()) == 0
    assert not out.exists()


# ----------------------------------------------------------------------------- tokenizer

@pytest.fixture(scope="module")
def tok512():
    """A 512-token BPE on ~120 KB of stories: the fixture's, then generated ones (a few hundred distinct words)."""
    text = FIXTURE.read_text(encoding="utf-8") + stories(120_000)
    tok = train_bpe(split_stories(text), vocab_size=512, min_frequency=2)
    return tok, text


def test_tokenizer_vocab_and_special_ids(tok512):
    tok, text = tok512
    assert tok.vocab_size == tok.tok.get_vocab_size() == 512
    assert tok.eot_id == 0 and tok.mask_id == 1
    assert tok.tok.id_to_token(1) == MASK_TOKEN
    assert tok.tok.encode(SEP).ids == [0]
    assert tok.tok.encode(f"The end.\n{SEP}\nOnce").ids.count(0) == 1


def test_tokenizer_round_trip_byte_exact(tok512):
    tok, text = tok512
    ids = tok.encode(text)
    assert ids == tok.tok.encode(text).ids  # the batched encoder is exact
    assert tok.decode(ids).encode("utf-8") == text.encode("utf-8")
    assert ids.count(0) == text.count(SEP)
    assert all(c in text for c in "“”’—é\n")
    assert len(text) / len(ids) > 2.0  # it actually compresses
    for s in ["", "\t\r\n  x  \n\n", "héllo 🙂 “q” — ’ \x00\x7f", "日本語のテキスト", "a\u200bb"]:
        assert tok.decode(tok.tok.encode(s).ids) == s


def test_tokenizer_never_emits_mask(tok512):
    tok, text = tok512
    m = tok.mask_id
    for s in ["[MASK]", " [MASK]", "[MASK][MASK]", "x[MASK]y", "[[MASK]]", "[ MASK ]", "[mask]",
              f"{SEP}[MASK]{SEP}", "MASK", "[MASK" * 20, text[:5000] + "[MASK]"]:
        ids = tok.tok.encode(s).ids
        assert m not in ids, s
        assert tok.decode(ids) == s
    assert tok.tok.decode([m], skip_special_tokens=False) == MASK_TOKEN  # the id itself still decodes
    assert m not in tok.encode(text)


@pytest.mark.slower
def test_train_tokenizer_cli(tmp_path, tok512):
    _, text = tok512
    src = tmp_path / "train.txt"
    src.write_text(text, encoding="utf-8")
    out = tmp_path / "tok" / "sub" / "tokenizer.json"
    r = run_script("train_tokenizer.py", "--input", src, "--output", out, "--vocab-size", 300)
    assert r.returncode == 0, r.stderr
    assert "vocab size 300" in r.stdout and "chars/token" in r.stdout
    tok = BPETokenizer.from_file(str(out))
    assert tok.vocab_size == 300 and tok.mask_id == 1
    assert tok.mask_id not in tok.tok.encode("[MASK]").ids
    before = out.read_bytes()
    assert_user_error(run_script("train_tokenizer.py", "--input", src, "--output", out), "--overwrite")
    assert out.read_bytes() == before
    assert_user_error(run_script("train_tokenizer.py", "--input", tmp_path / "nope.txt", "--output",
                                 tmp_path / "t.json"), "not found")
