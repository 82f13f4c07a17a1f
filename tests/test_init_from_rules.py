"""--init_from's rules, on hand-made checkpoints (no training): which conversions are allowed, the one-line errors
for the others, and that a converted adaLN model first computes what its source did; and that export.py, like
--init_from and inference.py, refuses a checkpoint no reader takes before it writes a file.
python -m pytest -q tests/test_init_from_rules.py"""
from dataclasses import asdict

import pytest
import torch

from checkpoint_manager import CONVERSIONS, check_conversion, load_weights_into, source_tokenizer
from helpers import MICRO, assert_one_line_error, real_text, run_cli_here
from model import ModelArgs, Transformer
from utils.errors import UserError
from utils.tokenizer import CharTokenizer

TOK = CharTokenizer(sorted(set(real_text().read_text())))  # the text train.py will read


def fake_ckpt(path, objective, **args):
    """A checkpoint as train.py writes it, of a random tiny model."""
    a = ModelArgs(**{**dict(vocab_size=TOK.vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=32,
                            diffusion_steps=20), **args})
    torch.manual_seed(0)
    model = Transformer(a)
    for p in model.parameters():  # every weight non-zero, adaLN's included: a trained source
        torch.nn.init.normal_(p, std=0.05)
    keys = ("block_size", "n_layer", "n_head", "n_embd", "diffusion_steps", "time_cond", "qk_norm", "self_cond",
            "tie_weights")  # the config that describes this network, as train.py saves it (readers check the two agree)
    config = dict(objective=objective, **{k: getattr(a, k) for k in keys})
    torch.save(dict(model=model.state_dict(), config=config, model_args=asdict(a), tokenizer=TOK.state(), iter=7), path)
    return model


def test_only_the_documented_conversions_pass():
    assert CONVERSIONS == {("ar", "mdlm"), ("ar", "bd3"), ("mdlm", "bd3")}
    for src in ("mdlm", "uniform", "ar", "bd3"):
        check_conversion(src, src, "x.pt")  # the same objective: fine-tuning with a new optimizer
    for src, dst in CONVERSIONS:
        check_conversion(src, dst, "x.pt")
    for src, dst in [("uniform", "mdlm"), ("mdlm", "ar"), ("bd3", "mdlm"), ("ar", "uniform"), ("mdlm", "uniform")]:
        with pytest.raises(UserError, match=f"is a {src} model and this run trains {dst}.*ar -> mdlm"):
            check_conversion(src, dst, "x.pt")


def test_train_refuses_an_undocumented_conversion_in_one_line(in_tmp, capsys):
    import train
    fake_ckpt(in_tmp / "u.pt", "uniform", causal=False)
    args = [f"--data_path={real_text()}", f"--out_dir={in_tmp / 'out'}", "--max_iters=1", f"--init_from={in_tmp / 'u.pt'}"]
    code, _, err = run_cli_here(train.main, [*args, "--objective=mdlm"], capsys)
    assert_one_line_error(code, err, "--init_from", "uniform model", "trains mdlm")
    assert not (in_tmp / "out").exists()
    fake_ckpt(in_tmp / "m.pt", "mdlm")
    code, _, err = run_cli_here(train.main, [*args[:-1], f"--init_from={in_tmp / 'm.pt'}", "--objective=ar"], capsys)
    assert_one_line_error(code, err, "mdlm model", "trains ar")
    assert source_tokenizer(str(in_tmp / "m.pt"), "char", "bd3").vocab_size == TOK.vocab_size


def test_a_learned_time_embedding_of_another_T_is_refused_in_one_line(in_tmp, capsys):
    import train
    fake_ckpt(in_tmp / "m.pt", "mdlm", time_cond="learned", diffusion_steps=20)
    target = Transformer(ModelArgs(vocab_size=TOK.vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=32,
                                   diffusion_steps=50))
    with pytest.raises(UserError, match="diffusion_steps=20 \\(this run 50\\): pass --diffusion_steps=20"):
        load_weights_into(target, str(in_tmp / "m.pt"), TOK)
    code, _, err = run_cli_here(train.main, [f"--data_path={real_text()}", f"--out_dir={in_tmp / 'out'}", *MICRO,
                                             "--n_layer=2", "--diffusion_steps=50", "--max_iters=1", f"--init_from={in_tmp / 'm.pt'}"], capsys)
    assert_one_line_error(code, err, "--init_from", "diffusion_steps=20", "this run 50")


@pytest.mark.parametrize("src_objective, src_args", [("ar", dict(causal=True, time_cond="none")),
                                                     ("bd3", dict(time_cond="none"))])
def test_adaln_target_first_computes_what_the_source_did(tmp_path, src_objective, src_args):
    """adaLN-Zero closes every gate; a converted model opens them, so at step 0 its logits are the source's with
    the target's attention (bidirectional), at any t."""
    src = fake_ckpt(tmp_path / "s.pt", src_objective, **src_args)
    a = ModelArgs(**{**asdict(src.args), "causal": False, "time_cond": "adaln"})
    target = Transformer(a)
    msg = load_weights_into(target, str(tmp_path / "s.pt"), TOK)
    assert "adaLN starts as the identity" in msg
    bidir = Transformer(ModelArgs(**{**asdict(src.args), "causal": False}))
    bidir.load_state_dict(src.state_dict())
    x = torch.randint(0, TOK.vocab_size, (3, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = bidir.eval()(x)
        for t in (1, 10, 20):
            got = target.eval()(x, torch.full((3,), t))
            assert torch.allclose(got, want, atol=1e-5), (t, (got - want).abs().max())
    # and it learns t: the modulation weights get a gradient at step 0
    target.train()(x, torch.full((3,), 5)).logsumexp(-1).mean().backward()
    assert target.adaln.layers[0].weight.grad.abs().sum() > 0


def test_a_tied_head_exports_and_loads_and_init_from_refuses_a_mismatch(in_tmp, capsys):
    from checkpoint_manager import load_model
    export = __import__("helpers").script("export")
    src = fake_ckpt(in_tmp / "t.pt", "mdlm", time_cond="none", tie_weights=True)
    assert "head.weight" not in src.state_dict()
    code, _, err = run_cli_here(export.main, [in_tmp / "t.pt", in_tmp / "exp"], capsys)
    assert code == 0, err
    x = torch.randint(0, TOK.vocab_size - 1, (2, 32))
    for path in (in_tmp / "t.pt", in_tmp / "exp"):
        torch.testing.assert_close(load_model(path, "cpu")[0](x), src.eval()(x), rtol=0, atol=0)
    untied = Transformer(ModelArgs(vocab_size=TOK.vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=32,
                                   diffusion_steps=20, time_cond="none"))
    with pytest.raises(UserError, match="tie_weights=True \\(this run False\\)"):
        load_weights_into(untied, str(in_tmp / "t.pt"), TOK)


def edited(path, out, **config):
    """A copy of checkpoint path with config keys edited, saved to out as a hand-edited model.pt is."""
    ckpt = torch.load(path, weights_only=True)
    ckpt["config"].update(config)
    torch.save(ckpt, out)
    return out


@pytest.mark.parametrize("edit, words", [
    (dict(objective="edm"), "objective='edm' is not one of"),  # issue 105: exported, exit 0
    (dict(block_size=64), "describes a network with block_size=64"),
    (dict(tokenizer="bpe"), "its config says tokenizer='bpe', its tokenizer is 'char'"),
])
def test_export_refuses_before_writing_what_every_reader_refuses(edit, words, in_tmp, capsys):
    import inference
    export = __import__("helpers").script("export")
    fake_ckpt(in_tmp / "m.pt", "mdlm", time_cond="none")
    bad = edited(in_tmp / "m.pt", in_tmp / "bad.pt", **edit)
    code, _, err = run_cli_here(export.main, [bad, in_tmp / "exp"], capsys)
    said = assert_one_line_error(code, err, words)
    assert not (in_tmp / "exp").exists()  # nothing written
    code, _, err = run_cli_here(inference.main, ["--checkpoint", bad, "--device=cpu", "--viz-video=off"], capsys)
    assert assert_one_line_error(code, err, words) == said  # the reader's own refusal, word for word
    code, _, err = run_cli_here(export.main, [in_tmp / "m.pt", in_tmp / "exp"], capsys)
    assert code == 0 and (in_tmp / "exp" / "config.json").is_file(), err  # the file as written exports


def test_init_from_an_objective_this_version_lacks_lists_those_it_knows_and_advises_none_it_refuses(in_tmp, capsys):
    import train
    fake_ckpt(in_tmp / "m.pt", "mdlm")
    edited(in_tmp / "m.pt", in_tmp / "edm.pt", objective="edm")
    args = [f"--data_path={real_text()}", f"--out_dir={in_tmp / 'out'}", "--max_iters=1", f"--init_from={in_tmp / 'edm.pt'}"]
    code, _, err = run_cli_here(train.main, args, capsys)
    assert_one_line_error(code, err, "objective='edm', which this version does not know (it knows mdlm, uniform, ar, "
                                     "bd3)", "train mdlm from scratch")
    assert "--objective=edm" not in err and not (in_tmp / "out").exists()
