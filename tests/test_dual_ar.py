"""Masked diffusion's dual objective (--dual_ar): a second pass of the same network, attending causally over the clean
window, learns the next token beside the diffusion loss. Its causal pass is the AR network of the same weights; the
training loss is the diffusion loss plus the weight times that term on the same draws; the bound (what eval.py
scores) does not read it; the key is checked and only mdlm reads it.

    python -m pytest -q tests/test_dual_ar.py
"""
import pytest
import torch
import torch.nn.functional as F

import ar
import diffusion
from diffusion import Draw, Schedule
from configurator import get_config, parse, validate
from helpers import MICRO, for_objective, loss as objective_loss
from model import ModelArgs, Transformer
from diffusion import SamplerOptions
from utils.draws import Law
from utils.errors import UserError
from objectives import OBJECTIVES

pytestmark = pytest.mark.core  # the core tier (pytest.ini): the maths, the loop, the samplers

V, MASK = 12, 11
ARGS = dict(vocab_size=V, block_size=16, n_layer=2, n_head=2, n_embd=16, time_cond="none")


def nets():
    """An mdlm network and the causal (AR) network with the same weights."""
    torch.manual_seed(0)
    bidir = Transformer(ModelArgs(**ARGS)).eval()
    causal = Transformer(ModelArgs(**ARGS, causal=True)).eval()
    causal.load_state_dict(bidir.state_dict())
    return bidir, causal


def batch():
    return torch.randint(0, MASK, (4, 16), generator=torch.Generator().manual_seed(1))


def test_the_causal_pass_is_the_ar_network_of_the_same_weights():
    bidir, causal = nets()
    x = batch()
    logits = causal(x[:, :-1])
    logits[..., MASK] = float("-inf")  # as every diffusion prediction: x0 is never [MASK]
    expect = F.cross_entropy(logits.reshape(-1, V), x[:, 1:].reshape(-1))
    assert torch.allclose(diffusion.dual_ar_loss(bidir, x, MASK), expect, rtol=0, atol=1e-6)
    # and it reads no token after the one it predicts: the bidirectional network's own pass over the window does
    assert not torch.allclose(diffusion.dual_ar_loss(bidir, x, MASK), ar.ar_loss(bidir, x)[0], atol=1e-3)
    y = x.clone()
    y[:, -1] = (y[:, -1] + 1) % MASK  # the last token is only a target: the other 14 terms stay
    per = lambda z: F.cross_entropy(causal(z[:, :-1])[:, :-1].reshape(-1, V), z[:, 1:-1].reshape(-1), reduction="none")
    assert torch.equal(per(x), per(y))


def test_loss_is_the_diffusion_loss_plus_the_weight_times_the_causal_term_on_the_same_draws():
    bidir, _ = nets()
    x, schedule = batch(), Schedule(100)
    base = get_config([*MICRO, "--objective=mdlm", "--block_size=16", "--mask_min=0.2", "--mask_max=0.8", "--time_cond=none"])

    def loss(weight):
        cfg = get_config([*MICRO, "--objective=mdlm", "--block_size=16", "--mask_min=0.2", "--mask_max=0.8", "--time_cond=none",
                          f"--dual_ar={weight}"])
        tok = type("Tok", (), dict(mask_id=MASK))
        draw = Draw(torch.Generator().manual_seed(3), torch.tensor(0.25))
        return objective_loss(OBJECTIVES["mdlm"], bidir, x, cfg, schedule, tok, draw)

    assert base.dual_ar == 0
    expect = loss(0) + 0.5 * diffusion.dual_ar_loss(bidir, x, MASK)
    assert torch.allclose(loss(0.5), expect, rtol=0, atol=1e-6) and loss(0.5) > loss(0) + 0.1


def test_the_key_is_checked_and_only_mdlm_reads_it():
    base = for_objective([*MICRO, "--objective=mdlm", "--time_cond=none"])
    assert get_config([*base, "--dual_ar=1"]).dual_ar == 1.0
    for bad in ("--dual_ar=-1", "--dual_ar=1 --time_cond=learned"):
        with pytest.raises(UserError, match="dual_ar"):
            get_config([*base, *bad.split()])
    for objective, fix in (("bd3", "--bd3_ar"), ("uniform", "--objective=mdlm"), ("ar", "next token")):
        with pytest.raises(UserError, match=f"dual_ar.*{fix}"):  # refused, never dropped
            get_config([*for_objective([*MICRO, f"--objective={objective}"]), "--dual_ar=1"])


def _canvas(P=4, L=14, B=3):
    x = batch()[:B, :L].clone()
    gen = (torch.arange(L) >= P).expand(B, L).clone()
    return x.masked_fill(gen, MASK), gen


NO_STEPS = [f for f in MICRO if not f.startswith("--steps")]  # a given --steps is the diffusion sampler's


def _cfg(*flags):
    """A dual network's sampling config, validated as inference.py validates it (train.py refuses --infill)."""
    cfg, given = parse([*NO_STEPS, "--objective=mdlm", "--block_size=16", "--time_cond=none", "--dual_ar=0.25",
                        *flags]).over()
    validate(cfg, given, training=False)
    return cfg


def _sampler(*flags):
    """(_cfg(*flags), its sampler: the SamplerOptions inference.py builds from it)."""
    cfg = _cfg(*flags)
    return cfg, SamplerOptions.from_config(cfg)


def test_dual_sample_draws_the_causal_networks_samples_exactly_and_keeps_the_prompt():
    """--dual_sample is the AR mode the dual objective trains: the causal network of the same weights, sampled with a
    KV cache, draws the same tokens from the same generator; the prompt is never changed; one Step a token."""
    bidir, causal = nets()
    x, gen = _canvas()
    steps = []
    cfg, opts = _sampler("--dual_sample", "--temperature=0.9", "--top_k=8")
    out, stats = diffusion.MaskedDiffusion().sample(bidir, x, gen, cfg, opts, MASK, torch.Generator().manual_seed(5),
                                                    on_step=steps.append)
    expect = causal.generate(x[:, :4], 10, SamplerOptions(1, law=Law(temperature=0.9, top_k=8)),
                             torch.Generator().manual_seed(5), MASK)
    assert torch.equal(out, expect) and torch.equal(out[:, :4], x[:, :4]) and not (out == MASK).any()
    # a Step a token; the NFE counts the prompt's pass before its last token too (every network call)
    assert stats["nfe"] == 11 and diffusion.MaskedDiffusion().passes(*_sampler("--dual_sample"), 10) == len(steps) == 10
    assert all(s.revealed.sum(1).tolist() == [1] * 3 and s.revealed[:, 4 + i].all() for i, s in enumerate(steps))
    assert steps[-1].finished == [True] * 3 and not any(steps[0].finished)


def test_dual_sample_is_refused_where_it_cannot_apply():
    with pytest.raises(UserError, match="trained without it"):  # no causal mode was trained
        get_config([*NO_STEPS, "--objective=mdlm", "--time_cond=none", "--dual_sample"])
    for flag in ("--order=l2r", "--steps=8", "--temperature_end_share=0.5", "--remask=remdm"):
        with pytest.raises(UserError, match=f"{flag.split('=')[0]} sets the diffusion sampler"):
            _cfg("--dual_sample", flag)
    for objective in ("bd3", "uniform", "ar"):
        with pytest.raises(UserError, match="dual_sample"):
            get_config([*for_objective([*MICRO, f"--objective={objective}"]), "--dual_sample"])
    bidir, _ = nets()
    x, gen = _canvas()
    gen[:, -2:] = False  # given text after the blanks: an infill, which only the diffusion sampler can do
    with pytest.raises(UserError, match="infill needs the diffusion sampler"):
        diffusion.MaskedDiffusion().sample(bidir, x, gen, *_sampler("--dual_sample"), MASK)


def test_dual_sample_refuses_a_canvas_it_cannot_continue_before_sampling(tmp_path):
    """The canvas is refused when built, not at sampling: --interactive's empty line took a seed and printed its header
    (prompt 3 drew with seed + 2), as its bad lines do not; --prompt '' and an infill were refused only at sampling."""
    from sampling.canvas import build_canvas
    from utils.tokenizer import CharTokenizer
    tok, suffix = CharTokenizer("abc "), tmp_path / "end.txt"
    suffix.write_text("c")
    for flags in (["--prompt="], ["--infill=ab[___:3]c"], ["--prompt=ab", f"--suffix_file={suffix}"]):
        with pytest.raises(UserError, match="--dual_sample continues a prompt"):
            build_canvas(*_sampler("--dual_sample", "--gen_len=4", *flags), tok, 16)
    assert build_canvas(*_sampler("--dual_sample", "--prompt=ab", "--gen_len=4"), tok, 16).n_gen == 4
    assert build_canvas(*_sampler("--prompt=", "--gen_len=4", "--steps=4"), tok, 16).n_gen == 4  # diffusion needs none


def test_a_presets_falling_temperature_is_not_the_ar_modes():
    """baby's temperature falls as its canvas fills (1.0 to 0.1x); its AR mode draws at a constant default unless given
    one."""
    c = get_config(["baby", "--dual_sample"])
    assert (c.temperature, c.temperature_end_share) == (1.0, 1.0)
    assert get_config(["baby", "--dual_sample", "--temperature=0.9"]).temperature == 0.9
    assert (get_config(["baby"]).temperature, get_config(["baby"]).temperature_end_share) == (1.0, 0.1)


def test_a_dual_trained_checkpoint_samples_its_ar_mode_through_the_cli_with_a_trace(tmp_path_factory, in_tmp, capsys):
    """train.py --dual_ar, then inference.py --dual_sample: the prompt kept, one trace frame a token, the sampler named.
    Run in a temp folder: eval.py and order_nll.py encode the data there."""
    tmp_path = in_tmp
    import inference
    from conftest import train_tiny
    from helpers import run_cli_here
    ckpt = train_tiny(tmp_path_factory, "dual", "--max_iters=20", "--eval_interval=20", "--time_cond=none",
                      "--dual_ar=0.25", "--viz_video=off")
    video = tmp_path / "t.mp4"
    code, out, err = run_cli_here(inference.main, ["--checkpoint", str(ckpt), "--dual_sample", "--prompt", "ROMEO:",
                                                   "--gen_len", "12", "--viz_video", str(video)], capsys)
    assert code == 0, err
    # 12 tokens, and the prompt's pass before its last token: every network call
    assert "ROMEO:" in out and "its AR mode" in out and "NFE 13 per sample" in out
    assert (video.with_suffix(".gif")).exists() and "13 frames" in out  # the start and one a token
    # scripts/eval.py reads its AR mode beside its bound: the figure order_nll.py --orders causal prints, same windows
    import json
    from helpers import script
    code, out, err = run_cli_here(script("eval").main, [str(ckpt), "--n-samples", "0",
                                                         "--n-windows", "4", "--split", "dev", "--json",
                                                         str(tmp_path / "e.json")], capsys)
    assert code == 0, err
    mode = json.loads((tmp_path / "e.json").read_text())["runs"][0]["ar_mode"]
    assert len(mode["per_window"]) == 4 and "its AR mode" in out
    code, out, err = run_cli_here(script("dev/order_nll").main, [str(ckpt), "--orders", "causal", "--n-windows", "4",
                                                             "--split", "dev"], capsys)
    assert code == 0 and f"causal: {mode['nats_per_token']:.4f} +- {mode['se']:.4f}" in out, out


def test_the_bound_is_the_diffusion_nelbo_whatever_the_dual_weight():
    """The dual objective changes what is trained, never what is reported: diffusion.bound (what evaluation and every
    record read) of a network trained with --dual_ar is its masked-diffusion NELBO alone, the same figure at any
    weight, with no trace of the causal pass's CE (which is far from it on this network)."""
    bidir, _ = nets()
    tok = type("Tok", (), dict(mask_id=MASK))
    x = torch.randint(0, MASK, (6, 16), generator=torch.Generator().manual_seed(4))
    t = torch.tensor([[3], [7], [10], [15], [18], [20]])
    figures = [diffusion.MaskedDiffusion().bound(bidir, x, _cfg(f"--dual_ar={w}", "--steps=8"), Schedule(20), tok, t, torch.Generator().manual_seed(5))[0]
               for w in (0.0, 0.25, 1.0)]
    _, nelbo, _ = diffusion.diffusion_loss(bidir, x, Schedule(20), MASK, generator=torch.Generator().manual_seed(5),
                                           t=t[:, 0])
    assert all(torch.equal(f, nelbo) for f in figures)
    assert abs(diffusion.dual_ar_loss(bidir, x, MASK).item() - nelbo.mean().item()) > 0.1  # a mix would move it
