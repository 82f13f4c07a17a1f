"""--init_from (checkpoint_manager.py): a run starts from another checkpoint's weights. Tiny models only.
python -m pytest -q tests/test_init_from.py"""
import pytest
import torch

from checkpoint_manager import load_weights_into
from conftest import train_tiny
from helpers import TINY, assert_one_line_error, real_text, run_cli_here
from model import ModelArgs, Transformer
from utils.checkpoint import load_checkpoint, save_checkpoint
from utils.errors import UserError
from utils.tokenizer import CharTokenizer, tokenizer_from_state


@pytest.fixture(scope="module")
def ar_ckpt(tmp_path_factory):
    """A tiny AR model trained for 200 steps on real text."""
    return train_tiny(tmp_path_factory, "ar_src", "--objective=ar", "--max_iters=200", "--eval_interval=200")


def _target(ckpt, **kw):
    a = {**ckpt["model_args"], "causal": False, **kw}
    torch.manual_seed(1)
    return Transformer(ModelArgs(**a))


def test_ar_to_mdlm_keeps_every_weight_and_zeroes_the_new_time_embedding(ar_ckpt):
    ck = load_checkpoint(ar_ckpt)
    model = _target(ck, time_cond="learned")
    msg = load_weights_into(model, str(ar_ckpt), tokenizer_from_state(ck["tokenizer"]))
    assert "time_emb starts at zero" in msg and "bidirectional" in msg
    own = model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in ck["model"].items())
    assert torch.count_nonzero(own["time_emb.weight"]) == 0
    # mdlm -> bd3 (no time input): the time embedding is dropped, the rest loads
    bd3 = _target(ck, time_cond="none")
    src = dict(ck, model=own)
    save_checkpoint(ar_ckpt.parent / "as_mdlm.pt", src)
    assert "time_emb dropped" in load_weights_into(bd3, str(ar_ckpt.parent / "as_mdlm.pt"), tokenizer_from_state(ck["tokenizer"]))


def test_a_source_trained_with_ema_starts_the_run_from_its_ema_weights(ar_ckpt):
    """The weights inference samples (load_model): a source's EMA, when it kept one, not its raw weights."""
    ck = load_checkpoint(ar_ckpt)
    ema = {k: v + 1.0 for k, v in ck["model"].items()}
    save_checkpoint(ar_ckpt.parent / "ema.pt", dict(ck, ema=ema))
    model = _target(ck, time_cond="none")
    load_weights_into(model, str(ar_ckpt.parent / "ema.pt"), tokenizer_from_state(ck["tokenizer"]))
    own = model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in ema.items())


def test_a_self_conditioned_target_starts_with_its_input_at_zero_and_a_source_with_one_drops_it(ar_ckpt):
    ck = load_checkpoint(ar_ckpt)
    tok = tokenizer_from_state(ck["tokenizer"])
    sc = _target(ck, time_cond="none", self_cond=True)
    assert "self-conditioning input starts at zero" in load_weights_into(sc, str(ar_ckpt), tok)
    assert torch.count_nonzero(sc.sc_proj.weight) == 0
    torch.nn.init.normal_(sc.sc_proj.weight)
    save_checkpoint(ar_ckpt.parent / "sc.pt",
                    dict(ck, model=sc.state_dict(), model_args={**ck["model_args"], "self_cond": True}))
    plain = _target(ck, time_cond="none")
    assert "sc_proj dropped" in load_weights_into(plain, str(ar_ckpt.parent / "sc.pt"), tok)


def test_converted_ar_starts_below_a_fresh_mdlm(ar_ckpt):
    """The first mdlm bound of AR weights is well below a fresh model's (~ln V): measured 3.75 vs 4.20 nats/token.
    Not more: the AR head at position i predicts token i+1, mdlm's predicts token i (no logit shift here), so
    what carries over is the representation, not the head."""
    from diffusion import Schedule
    from diffusion import diffusion_loss
    ck = load_checkpoint(ar_ckpt)
    tok = tokenizer_from_state(ck["tokenizer"])
    with open(real_text()) as f:
        ids = torch.tensor(tok.encode(f.read()[:20000]))
    x = ids[:64 * 32].view(32, 64)
    sched = Schedule(20, "cosine")
    conv, fresh = _target(ck, time_cond="none"), _target(ck, time_cond="none")
    load_weights_into(conv, str(ar_ckpt), tok)
    with torch.no_grad():
        t = torch.arange(1, 33) * 20 // 33 + 1
        bound = [diffusion_loss(m.eval(), x, sched, tok.mask_id, generator=torch.Generator().manual_seed(0), t=t)[1].mean().item()
                 for m in (conv, fresh)]
    assert bound[0] < bound[1] - 0.3, bound


def test_mismatched_width_and_tokenizer_are_refused(ar_ckpt):
    ck = load_checkpoint(ar_ckpt)
    with pytest.raises(UserError, match="n_embd=64"):
        load_weights_into(_target(ck, n_embd=32), str(ar_ckpt), tokenizer_from_state(ck["tokenizer"]))
    other = CharTokenizer(sorted(set("abcdefghij")))
    with pytest.raises(UserError, match="another tokenizer"):
        load_weights_into(_target(ck), str(ar_ckpt), other)


def test_train_refuses_a_mismatched_width_or_tokenizer_with_one_line(ar_ckpt, in_tmp, capsys):
    import train
    args = [f"--data_path={real_text()}", f"--out_dir={in_tmp / 'out'}", *TINY, "--max_iters=2",
            f"--init_from={ar_ckpt}"]
    code, _, err = run_cli_here(train.main, [*args, "--n_embd=32"], capsys)
    assert_one_line_error(code, err, "--init_from", "n_embd=64", "this run 32")
    code, _, err = run_cli_here(train.main, [*args, "--tokenizer=bpe"], capsys)
    assert_one_line_error(code, err, "--init_from", "char tokenizer", "--tokenizer=char")


def test_train_from_ar_weights_names_the_source(ar_ckpt, in_tmp, capsys):
    import train
    out = in_tmp / "out"
    code, stdout, err = run_cli_here(train.main, [f"--data_path={real_text()}", f"--out_dir={out}", *TINY,
                                                  "--max_iters=2", "--eval_interval=2", f"--init_from={ar_ckpt}"], capsys)
    assert code == 0, err
    assert "init_from" in stdout and "time_emb starts at zero" in stdout
    ck = load_checkpoint(out / "model.pt")
    assert ck["config"]["init_from"] == str(ar_ckpt) and ck["iter"] == 2
