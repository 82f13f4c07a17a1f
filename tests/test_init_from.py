"""--init_from: the conversions allowed and the refusals of the others; what each keeps, zeroes and drops; export.py
refusing what every reader refuses before it writes. python -m pytest -q tests/test_init_from.py"""
from dataclasses import asdict

import pytest
import torch

import train
from checkpoint_manager import CONVERSIONS, check_conversion, load_model, load_weights_into, source_tokenizer
from conftest import train_tiny
from helpers import TINY, assert_one_line_error, real_text, run_cli_here, script
from model import ModelArgs, Transformer
from utils.checkpoint import load_checkpoint, save_checkpoint
from utils.errors import UserError
from utils.tokenizer import CharTokenizer, tokenizer_from_state

TOK = CharTokenizer(sorted(set(real_text().read_text())))  # the text train.py will read


def fake_ckpt(path, objective, **args):
    """A checkpoint as train.py writes it, every weight non-zero (a trained source)."""
    a = ModelArgs(**{**dict(vocab_size=TOK.vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=32,
                            diffusion_steps=20), **args})
    torch.manual_seed(0)
    model = Transformer(a)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    keys = ("block_size", "n_layer", "n_head", "n_embd", "diffusion_steps", "time_cond", "qk_norm", "self_cond",
            "tie_weights")  # the config describing this network (readers check the two agree)
    config = dict(objective=objective, **{k: getattr(a, k) for k in keys})
    torch.save(dict(model=model.state_dict(), config=config, model_args=asdict(a), tokenizer=TOK.state(), iter=7), path)
    return model


def edited(path, out, **config):
    ckpt = torch.load(path, weights_only=True)
    ckpt["config"].update(config)
    torch.save(ckpt, out)
    return out


def test_only_the_documented_conversions_pass_and_train_refuses_the_others_in_one_line(in_tmp, capsys):
    for src in ("mdlm", "uniform", "ar", "bd3"):
        check_conversion(src, src, "x.pt")  # the same objective: fine-tuning with a new optimizer
    for src, dst in CONVERSIONS:
        check_conversion(src, dst, "x.pt")
    for src, dst in [("uniform", "mdlm"), ("mdlm", "ar"), ("bd3", "mdlm"), ("ar", "uniform"), ("mdlm", "uniform")]:
        with pytest.raises(UserError, match=f"is a {src} model and this run trains {dst}.*ar -> mdlm"):
            check_conversion(src, dst, "x.pt")
    fake_ckpt(in_tmp / "u.pt", "uniform")
    args = [f"--data_path={real_text()}", f"--out_dir={in_tmp / 'out'}", "--max_iters=1"]
    code, _, err = run_cli_here(train.main, [*args, f"--init_from={in_tmp / 'u.pt'}", "--objective=mdlm"], capsys)
    assert_one_line_error(code, err, "--init_from", "uniform model", "trains mdlm")
    assert not (in_tmp / "out").exists()
    fake_ckpt(in_tmp / "m.pt", "mdlm")
    assert source_tokenizer(str(in_tmp / "m.pt"), "char", "bd3").vocab_size == TOK.vocab_size
    edited(in_tmp / "m.pt", in_tmp / "edm.pt", objective="edm")  # an objective this version lacks
    code, _, err = run_cli_here(train.main, [*args, f"--init_from={in_tmp / 'edm.pt'}"], capsys)
    assert_one_line_error(code, err, "objective='edm', which this version does not know (it knows mdlm, uniform, ar, "
                                     "bd3)", "train mdlm from scratch")
    assert "--objective=edm" not in err and not (in_tmp / "out").exists()


@pytest.mark.parametrize("source, target, words", [
    (dict(time_cond="learned"), dict(diffusion_steps=50),
     r"diffusion_steps=20 \(this run 50\): pass --diffusion_steps=20"),
    (dict(time_cond="none", tie_weights=True), dict(time_cond="none"), r"tie_weights=True \(this run False\)")])
def test_a_learned_time_embedding_of_another_T_or_another_head_is_refused(source, target, words, tmp_path):
    fake_ckpt(tmp_path / "s.pt", "mdlm", **source)
    net = Transformer(ModelArgs(**{**dict(vocab_size=TOK.vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=32,
                                          diffusion_steps=20), **target}))
    with pytest.raises(UserError, match=words):
        load_weights_into(net, str(tmp_path / "s.pt"), TOK)


@pytest.mark.parametrize("src_objective, src_args", [("ar", dict(causal=True, time_cond="none")),
                                                     ("bd3", dict(time_cond="none"))])
def test_adaln_target_first_computes_what_the_source_did(tmp_path, src_objective, src_args):
    """A converted adaLN model opens its gates: at step 0 the source's (bidirectional) logits at any t; it learns t."""
    src = fake_ckpt(tmp_path / "s.pt", src_objective, **src_args)
    target = Transformer(ModelArgs(**{**asdict(src.args), "causal": False, "time_cond": "adaln"}))
    assert "adaLN starts as the identity" in load_weights_into(target, str(tmp_path / "s.pt"), TOK)
    bidir = Transformer(ModelArgs(**{**asdict(src.args), "causal": False}))
    bidir.load_state_dict(src.state_dict())
    x = torch.randint(0, TOK.vocab_size, (3, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = bidir.eval()(x)
        for t in (1, 10, 20):
            got = target.eval()(x, torch.full((3,), t))
            assert torch.allclose(got, want, atol=1e-5), (t, (got - want).abs().max())
    target.train()(x, torch.full((3,), 5)).logsumexp(-1).mean().backward()
    assert target.adaln.layers[0].weight.grad.abs().sum() > 0


def test_a_tied_head_exports_and_loads(in_tmp, capsys):
    src = fake_ckpt(in_tmp / "t.pt", "mdlm", time_cond="none", tie_weights=True)
    assert "head.weight" not in src.state_dict()
    code, _, err = run_cli_here(script("export").main, [in_tmp / "t.pt", in_tmp / "exp"], capsys)
    assert code == 0, err
    x = torch.randint(0, TOK.vocab_size - 1, (2, 32))
    for path in (in_tmp / "t.pt", in_tmp / "exp"):
        torch.testing.assert_close(load_model(path, "cpu")[0](x), src.eval()(x), rtol=0, atol=0)


@pytest.mark.parametrize("edit, words", [
    (dict(objective="edm"), "objective='edm' is not one of"),
    (dict(block_size=64), "describes a network with block_size=64"),
    (dict(tokenizer="bpe"), "its config says tokenizer='bpe', its tokenizer is 'char'"),
])
def test_export_refuses_before_writing_what_every_reader_refuses(edit, words, in_tmp, capsys):
    import inference
    export = script("export")
    fake_ckpt(in_tmp / "m.pt", "mdlm", time_cond="none")
    bad = edited(in_tmp / "m.pt", in_tmp / "bad.pt", **edit)
    code, _, err = run_cli_here(export.main, [bad, in_tmp / "exp"], capsys)
    said = assert_one_line_error(code, err, words)
    assert not (in_tmp / "exp").exists()  # nothing written
    code, _, err = run_cli_here(inference.main, ["--checkpoint", bad, "--device=cpu", "--viz-video=off"], capsys)
    assert assert_one_line_error(code, err, words) == said  # the reader's own refusal, word for word
    code, _, err = run_cli_here(export.main, [in_tmp / "m.pt", in_tmp / "exp"], capsys)
    assert code == 0 and (in_tmp / "exp" / "config.json").is_file(), err  # the file as written exports


@pytest.fixture(scope="module")
def ar_ckpt(tmp_path_factory):
    return train_tiny(tmp_path_factory, "ar_src", "--objective=ar", "--max_iters=200", "--eval_interval=200")


def _target(ckpt, **kw):
    torch.manual_seed(1)
    return Transformer(ModelArgs(**{**ckpt["model_args"], "causal": False, **kw}))


def test_ar_to_mdlm_keeps_every_weight_and_zeroes_the_new_time_embedding(ar_ckpt):
    ck = load_checkpoint(ar_ckpt)
    tok = tokenizer_from_state(ck["tokenizer"])
    model = _target(ck, time_cond="learned")
    msg = load_weights_into(model, str(ar_ckpt), tok)
    assert "time_emb starts at zero" in msg and "bidirectional" in msg
    own = model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in ck["model"].items())
    assert torch.count_nonzero(own["time_emb.weight"]) == 0
    # mdlm -> bd3 (no time input): the time embedding is dropped, the rest loads
    save_checkpoint(ar_ckpt.parent / "as_mdlm.pt", dict(ck, model=own))
    assert "time_emb dropped" in load_weights_into(_target(ck, time_cond="none"), str(ar_ckpt.parent / "as_mdlm.pt"),
                                                   tok)


def test_a_source_trained_with_ema_starts_the_run_from_its_ema_weights(ar_ckpt):
    """A source's EMA, when it kept one, not its raw weights (what inference samples)."""
    ck = load_checkpoint(ar_ckpt)
    ema = {k: v + 1.0 for k, v in ck["model"].items()}
    save_checkpoint(ar_ckpt.parent / "ema.pt", dict(ck, ema=ema))
    model = _target(ck, time_cond="none")
    load_weights_into(model, str(ar_ckpt.parent / "ema.pt"), tokenizer_from_state(ck["tokenizer"]))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in ema.items())


def test_a_self_conditioned_target_starts_with_its_input_at_zero_and_a_source_with_one_drops_it(ar_ckpt):
    ck = load_checkpoint(ar_ckpt)
    tok = tokenizer_from_state(ck["tokenizer"])
    sc = _target(ck, time_cond="none", self_cond=True)
    assert "self-conditioning input starts at zero" in load_weights_into(sc, str(ar_ckpt), tok)
    assert torch.count_nonzero(sc.sc_proj.weight) == 0
    torch.nn.init.normal_(sc.sc_proj.weight)
    save_checkpoint(ar_ckpt.parent / "sc.pt",
                    dict(ck, model=sc.state_dict(), model_args={**ck["model_args"], "self_cond": True}))
    assert "sc_proj dropped" in load_weights_into(_target(ck, time_cond="none"), str(ar_ckpt.parent / "sc.pt"), tok)


def test_converted_ar_starts_below_a_fresh_mdlm(ar_ckpt):
    """The first mdlm bound of AR weights is well below a fresh model's: measured 3.75 vs 4.20 nats/token."""
    from diffusion import Schedule, diffusion_loss
    ck = load_checkpoint(ar_ckpt)
    tok = tokenizer_from_state(ck["tokenizer"])
    x = torch.tensor(tok.encode(real_text().read_text()[:20000]))[:64 * 32].view(32, 64)
    conv, fresh = _target(ck, time_cond="none"), _target(ck, time_cond="none")
    load_weights_into(conv, str(ar_ckpt), tok)
    with torch.no_grad():
        t = torch.arange(1, 33) * 20 // 33 + 1
        bound = [diffusion_loss(m.eval(), x, Schedule(20, "cosine"), tok.mask_id,
                                generator=torch.Generator().manual_seed(0), t=t)[1].mean().item() for m in (conv, fresh)]
    assert bound[0] < bound[1] - 0.3, bound


def test_a_mismatched_width_or_tokenizer_is_refused_in_one_line(ar_ckpt, in_tmp, capsys):
    ck = load_checkpoint(ar_ckpt)
    with pytest.raises(UserError, match="another tokenizer"):
        load_weights_into(_target(ck), str(ar_ckpt), CharTokenizer(sorted(set("abcdefghij"))))
    args = [f"--data_path={real_text()}", f"--out_dir={in_tmp / 'out'}", *TINY, "--max_iters=2",
            f"--init_from={ar_ckpt}"]
    code, _, err = run_cli_here(train.main, [*args, "--n_embd=32"], capsys)
    assert_one_line_error(code, err, "--init_from", "n_embd=64", "this run 32")
    code, _, err = run_cli_here(train.main, [*args, "--tokenizer=bpe"], capsys)
    assert_one_line_error(code, err, "--init_from", "char tokenizer", "--tokenizer=char")


def test_train_from_ar_weights_names_the_source(ar_ckpt, in_tmp, capsys):
    out = in_tmp / "out"
    code, stdout, err = run_cli_here(train.main, [f"--data_path={real_text()}", f"--out_dir={out}", *TINY,
                                                  "--max_iters=2", "--eval_interval=2", f"--init_from={ar_ckpt}"], capsys)
    assert code == 0, err
    assert "init_from" in stdout and "time_emb starts at zero" in stdout
    ck = load_checkpoint(out / "model.pt")
    assert ck["config"]["init_from"] == str(ar_ckpt) and ck["iter"] == 2
