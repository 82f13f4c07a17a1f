"""Every member of the classes an experiment extends, tested the moment it exists: each noise schedule
config.py names keeps the chain's invariants, each sampler option changes the seeded draw of every
objective that samples or is refused by it in one line, each network option builds a network whose
shapes, gradients and parameter count are right. A new schedule, sampler key or network option
needs no line here to be checked; what it does is its own test's.

    python -m pytest -q tests/test_options.py
"""
import math
from dataclasses import fields, replace

import pytest
import torch
import torch.nn.functional as F

from config import CHOICES, Config
from configurator import parse, validate
from diffusion import SamplerOptions, Schedule, corrupt, survival
from model import ModelArgs, Transformer
from objectives import OBJECTIVES, model_args
from sampling.canvas import build_canvas
from utils.errors import UserError
from utils.tokenizer import CharTokenizer
from helpers import PACING, acting_value

pytestmark = pytest.mark.core  # the core tier (pytest.ini): the maths, the loop, the samplers


# ----------------------------------------------------------------------------- every schedule
@pytest.mark.parametrize("kind", CHOICES["schedule"])
def test_every_schedule_keeps_the_chains_invariants(kind):
    """alpha(0) = 1 and alpha(1) = 0 by its formula (the table's exact endpoints only round), falling
    all the way; the forward process masks 1 - alpha(t) of the tokens; the ELBO weight is
    (alpha(t-1) - alpha(t)) / (1 - alpha(t)), whose sum against 1 - alpha(t) telescopes to 1."""
    u = torch.linspace(0, 1, 1001, dtype=torch.float64)
    a = survival(kind, u)
    assert a[0].item() == pytest.approx(1.0, abs=1e-12) and a[-1].item() == pytest.approx(0.0, abs=1e-12), kind
    assert (a[1:] < a[:-1]).all(), f"{kind}: alpha must fall at every step"
    s = Schedule(50, kind)
    assert s.alpha[0] == 1 and s.alpha[50] == 0
    for t in (1, 7, 25, 49):
        assert s.weight[t].item() == pytest.approx((s.alpha[t - 1] - s.alpha[t]).item() / (1 - s.alpha[t].item()))
    assert (s.weight[1:] * (1 - s.alpha[1:])).sum().item() == pytest.approx(1.0)
    g = torch.Generator().manual_seed(0)
    for t in (5, 25, 45):
        _, masked = corrupt(torch.zeros(200, 200, dtype=torch.long), torch.full((200,), t), s, 7, generator=g)
        p = 1 - s.alpha[t].item()
        assert masked.double().mean().item() == pytest.approx(p, abs=5 * math.sqrt(p * (1 - p) / masked.numel()))


# ----------------------------------------------------------------------------- every sampler option
TOK = CharTokenizer("abcdefgh")  # 8 characters and [MASK]
V, N = TOK.vocab_size, 28  # vocab, generated tokens of the draws below (after the prompt "abc")
BASES = {  # a network and its checkpoint's sampler: each objective, each switch that changes which sampler runs
    "mdlm": ["--steps=6"], "mdlm-remdm": ["--steps=6", "--remask=remdm", "--remask_eta=0.05", "--order=random"],
    "mdlm-falling": ["--steps=6", "--order=random", "--remask=none", "--temperature_end_share=0.3"],
    "mdlm-dual": ["--steps=6", "--time_cond=none", "--dual_ar=0.25", "--dual_sample"],
    "bd3": ["--objective=bd3", "--bd3_block=8", "--steps=6"],
    "bd3-speculate": ["--objective=bd3", "--bd3_block=4", "--bd3_ar=1", "--bd3_speculate"],
    "uniform": ["--objective=uniform", "--steps=4"], "ar": ["--objective=ar"]}
NET = ["--n_layer=1", "--n_head=2", "--n_embd=32", "--block_size=32", "--diffusion_steps=20", "--num_samples=2",
       "--prompt=abc", f"--gen_len={N}"]


def _sampler_cfg(base, extra=()):
    cfg, _ = parse([*NET, *BASES[base], *extra]).over()
    return cfg


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    out = {}
    for base in BASES:
        cfg = _sampler_cfg(base)
        model = Transformer(model_args(cfg, V)).eval()
        for p in model.parameters():  # no zero-initialised part: every option reaches the logits
            torch.nn.init.normal_(p, std=0.2)
        out[base] = model
    return out


def _draw(model, cfg, seed=0):
    """Two samples of the canvas the config asks for, checked as the scripts check it (build_canvas)."""
    opts = SamplerOptions.from_config(cfg)
    canvas = build_canvas(cfg, opts, TOK, cfg.block_size)
    x, gen_mask = torch.tensor(canvas.ids).repeat(2, 1), torch.tensor(canvas.gen).repeat(2, 1)
    return OBJECTIVES[cfg.objective].sample(model, x, gen_mask, cfg, opts, TOK.mask_id,
                                            torch.Generator().manual_seed(seed))[0]


CASES = [(base, key, value) for base in BASES for key in SamplerOptions.keys()
         for value in acting_value(key, getattr(_sampler_cfg(base), key))]


@pytest.mark.parametrize("base, key, value", CASES, ids=[f"{b}-{k}={v}" for b, k, v in CASES])
def test_every_sampler_option_changes_the_draw_or_is_refused(base, key, value, nets):
    """A sampler key given over a checkpoint's sampler either changes its seeded draw (PACING's keys:
    leaves it as it was) or is refused in one line naming the key: a key an objective reads into
    nothing (a filter threaded through one sampler and not another) fails here."""
    cfg = _sampler_cfg(base, [f"--{key}={value}"])
    before = _draw(nets[base], _sampler_cfg(base))
    try:
        validate(cfg, {key}, training=False)
        after = _draw(nets[base], cfg)  # its canvas checked first, as the scripts do
    except UserError as e:
        assert key.replace("_", "-") in str(e).replace("_", "-") and "\n" not in str(e), e
        return
    if key in PACING:
        assert torch.equal(before, after), f"{key}={value} changed {base}'s samples"
    else:
        assert not torch.equal(before, after), f"{base} reads --{key}={value} into nothing: the same tokens"


def test_the_samplers_defaults_are_config_pys():
    """SamplerOptions() is the sampler config.py's defaults describe: one default a key."""
    assert SamplerOptions() == SamplerOptions.from_config(Config())


# ----------------------------------------------------------------------------- every network option
NETWORK = [f.name for f in fields(ModelArgs) if f.name not in ("vocab_size", "block_size", "n_layer", "n_head",
                                                                  "n_embd", "diffusion_steps", "dropout")]
OPTIONS = [(name, value) for name in NETWORK for value in (CHOICES.get(name) or (True,))
           if value != getattr(ModelArgs(vocab_size=V), name)]


def expected_params(a):
    """The parameter count by hand: embeddings, 12 d^2 a layer (qkv 3, proj 1, the MLP's 4 + 4),
    the head unless tied, the time input, adaLN's MLP and modulations, self-conditioning's map."""
    d, L = a.n_embd, a.n_layer
    n = a.vocab_size * d + L * 12 * d * d + (0 if a.tie_weights else a.vocab_size * d)
    n += (a.diffusion_steps + 1) * d if a.time_cond == "learned" else 0
    n += 2 * (d * d + d) + L * (6 * d * d + 6 * d) + 2 * d * d + 2 * d if a.time_cond == "adaln" else 0
    return n + (d * d if a.self_cond else 0)


@pytest.mark.parametrize("name, value", OPTIONS, ids=[f"{n}={v}" for n, v in OPTIONS])
def test_every_network_option_shapes_gradients_and_parameter_count(name, value):
    """Each ModelArgs switch at each of its values: logits (B, L, V), a gradient at every parameter
    (weights drawn away from a zero start, so a part the forward skips is found), the count a hand
    formula gives."""
    a = replace(ModelArgs(vocab_size=V, block_size=16, n_layer=2, n_head=2, n_embd=16, diffusion_steps=10),
                **{name: value})
    model = Transformer(a)
    assert model.num_params() == expected_params(a), (name, value)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randint(0, V, (3, 16), generator=torch.Generator().manual_seed(0))
    t = torch.tensor([1, 5, 10])
    sc = torch.softmax(torch.randn(3, 16, V), -1) if a.self_cond else None
    logits = model(x, t, sc=sc)
    assert logits.shape == (3, 16, V) and logits.dtype == torch.float32
    F.cross_entropy(logits.flatten(0, 1), x.flatten()).backward()
    silent = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not silent, f"{name}={value}: no gradient reaches {silent}"
