"""dev/nanogpt_score.py: a stand-in nanoGPT clone (a bigram model) scored by hand on eval.py's windows, this repo's
runs paired beside it; its refusals. python -m pytest -q tests/test_nanogpt_score.py"""
import pickle
import re

import pytest
import torch

from checkpoint_manager import checkpoint_config, load_model
from conftest import train_tiny
from evals.bound import report_windows
from helpers import assert_one_line_error, run_cli_here, script
from utils.dataloader import prepare_data
from utils.tokenizer import tokenizer_from_state

pytestmark = pytest.mark.slower  # the slower tier (pytest.ini): a dev/ script's test

ns = script("dev/nanogpt_score")
MODEL_PY = '''
from dataclasses import dataclass
import torch, torch.nn as nn, torch.nn.functional as F

@dataclass
class GPTConfig:
    block_size: int = 256
    vocab_size: int = 65

# nanoGPT's interface: forward(idx, targets) -> (logits, loss); a bigram model: row idx of a table
class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config, self.table = config, nn.Parameter(torch.zeros(config.vocab_size, config.vocab_size))

    def forward(self, idx, targets=None):
        logits = self.table[idx]
        return logits, F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.view(-1))
'''


def table(V):
    """The stand-in's bigram logits (V, V): unequal, so a shifted target or a window read one off changes the figure."""
    return 3 * torch.randn(V, V, generator=torch.Generator().manual_seed(0))


def by_hand(windows, T):
    """(mean, se) of the stand-in's per-window NLL over eval.py's windows (N, L + 1), written out."""
    per = [sum(-torch.log_softmax(T[w[i]], -1)[w[i + 1]].item() for i in range(len(w) - 1)) / (len(w) - 1)
           for w in windows.tolist()]
    mean = sum(per) / len(per)
    return mean, (sum((v - mean) ** 2 for v in per) / (len(per) - 1) / len(per)) ** 0.5


def clone(tmp_path, tok, swap=False, drop_last=False):
    """A nanoGPT clone: model.py, meta.pkl (tok's ids; two swapped, or the last missing) and out/ckpt.pt."""
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "model.py").write_text(MODEL_PY)
    stoi = {c: i for c, i in tok.stoi.items() if i != tok.mask_id and not (drop_last and i == tok.mask_id - 1)}
    if swap:
        a, b = sorted(stoi)[:2]
        stoi[a], stoi[b] = stoi[b], stoi[a]
    (tmp_path / "data" / "shakespeare_char").mkdir(parents=True)
    with open(tmp_path / "data" / "shakespeare_char" / "meta.pkl", "wb") as f:
        pickle.dump(dict(vocab_size=len(stoi), stoi=stoi, itos={i: c for c, i in stoi.items()}), f)
    (tmp_path / "out").mkdir()
    torch.save(dict(model=dict(table=table(len(stoi))), model_args=dict(block_size=256, vocab_size=len(stoi)),
                    iter_num=7, config=dict(dataset="shakespeare_char")), tmp_path / "out" / "ckpt.pt")
    return tmp_path / "out" / "ckpt.pt"


def test_scores_nanogpt_on_evals_windows_and_pairs_each_run(tiny_ckpt, in_tmp, tmp_path, tmp_path_factory, capsys):
    tok = tokenizer_from_state(load_model(tiny_ckpt, "cpu")[1]["tokenizer"])
    ckpt, V = clone(tmp_path, tok), tok.vocab_size - 1  # [MASK] is not nanoGPT's
    code, out, err = run_cli_here(ns.main, [str(ckpt), "--against", str(tiny_ckpt), "--split", "dev",
                                            "--n-windows", "16", "--n-t", "2"], capsys)
    assert code == 0, err
    cfg = checkpoint_config(load_model(tiny_ckpt, "cpu")[1], "a checkpoint")
    _, train_ids, val_ids, _ = prepare_data(cfg, tok, verbose=False)
    windows, _ = report_windows(tok, train_ids, val_ids, "dev", 16, cfg.block_size)  # eval.py's own windows
    mean, se = by_hand(windows, table(V))
    assert f"(iter 7): = {mean:.4f} ± {se:.4f}" in out, (mean, se, out)
    got, d = re.search(r"\(mdlm\): (\d\.\d{4}) ± \d\.\d{4}; minus nanoGPT's: ([+-]\d\.\d{4})", out).groups()
    assert float(d) == pytest.approx(float(got) - mean, abs=2e-4) and "16 windows, the last 64 tokens" in out
    assert "its AR mode" not in out  # trained without --dual_ar: no causal mode to read
    dual = train_tiny(tmp_path_factory, "dual", "--max_iters=20", "--eval_interval=20", "--time_cond=none",
                      "--dual_ar=0.25", "--viz_video=off")  # a --dual_ar network: its causal pass is scored too
    code, out, err = run_cli_here(ns.main, [str(ckpt), "--against", str(dual), "--split", "dev", "--n-windows", "16",
                                            "--n-t", "2"], capsys)
    got, d = re.search(r"its AR mode \(what --dual_sample, --bd3_speculate sample\): = (\d\.\d{4}) ± \d\.\d{4}; "
                       r"minus nanoGPT's: ([+-]\d\.\d{4})", out).groups()
    assert code == 0 and float(d) == pytest.approx(float(got) - mean, abs=2e-4), out
    orders = tmp_path / "orders.json"  # order_nll.py's figures on the same windows, paired against nanoGPT's too
    code, _, err = run_cli_here(script("dev/order_nll").main, [str(dual), "--orders", "l2r,mixture", "--mixture-k", "2",
                                                           "--split", "dev", "--n-windows", "16", "--device", "cpu",
                                                           "--json", str(orders)], capsys)
    assert code == 0, err
    code, out, err = run_cli_here(ns.main, [str(ckpt), "--against", str(dual), "--split", "dev", "--n-windows", "16",
                                            "--n-t", "2", "--orders", str(orders)], capsys)
    for order in ("l2r", "mixture"):
        got, d = re.search(rf"order_nll {order} \(.*\): = (\d\.\d{{4}}) ± \d\.\d{{4}}; minus nanoGPT's: "
                           r"([+-]\d\.\d{4})", out).groups()
        assert code == 0 and float(d) == pytest.approx(float(got) - mean, abs=2e-4), out
    code, _, err = run_cli_here(ns.main, [str(ckpt), "--against", str(dual), "--orders", str(orders)], capsys)
    assert_one_line_error(code, err, "split dev", "--split")  # other windows than the file's: refused
    code, _, err = run_cli_here(ns.main, [str(clone(tmp_path / "swapped", tok, swap=True)), "--against",
                                          str(tiny_ckpt)], capsys)
    assert_one_line_error(code, err, "character ids differ")
    code, _, err = run_cli_here(ns.main, [str(clone(tmp_path / "lacking", tok, drop_last=True)), "--against",
                                          str(tiny_ckpt)], capsys)
    assert_one_line_error(code, err, "has no id for 1 of the checkpoint's characters", "prepared from another text")


def test_meta_pkl_is_read_as_plain_data_and_a_pickle_that_would_run_code_runs_nothing(tmp_path):
    """meta.pkl is read as plain data: a pickle that would run a command, a text or another object is refused unrun."""
    from utils.errors import UserError
    good = tmp_path / "meta.pkl"
    with open(good, "wb") as f:
        pickle.dump(dict(vocab_size=2, stoi={"a": 0, "b": 1}, itos={0: "a", 1: "b"}), f)
    assert ns.read_meta(good) == {"a": 0, "b": 1}
    witness = tmp_path / "PWNED"

    class Evil:
        def __reduce__(self):
            import os
            return os.system, (f"touch {witness}",)
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(dict(stoi=Evil())))
    (tmp_path / "text.pkl").write_text("not a pickle\n")
    (tmp_path / "list.pkl").write_bytes(pickle.dumps([1, 2]))
    for bad in ("evil.pkl", "text.pkl", "list.pkl"):
        with pytest.raises(UserError, match="is not nanoGPT's meta.pkl of plain data.*nothing in it was run"):
            ns.read_meta(tmp_path / bad)
    assert not witness.exists()
    pickle.loads((tmp_path / "evil.pkl").read_bytes())  # the control: a plain unpickler runs it
    assert witness.exists()
