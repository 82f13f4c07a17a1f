"""A sampler's likelihood is the likelihood of the law it draws from (issue 61). On tiny self-conditioned networks,
dev/order_nll.py's exact mixture read as the sampler reads self-conditioning (--self-cond-read sampler: each pass
reads the previous pass's prediction) against draws of inference.py's own sampler (canvas.generate: random order, one
token a pass) by chi-square, for mdlm read semi-autoregressively and for bd3's blocks; the mixture read as the bound
reads it (a fresh first pass a canvas), which no sampler draws from, fails the same test.

    python -m pytest -q tests/test_sampler_law.py
"""
import itertools
import re
import shlex
from dataclasses import replace

import pytest
import torch

from sampling.canvas import build_canvas, fill
from diffusion import SamplerOptions
from configurator import get_config
from helpers import ROOT, model_args, pooled_chi2, script
from model import Transformer
from utils.tokenizer import CharTokenizer

pytestmark = pytest.mark.core  # the core tier (pytest.ini): the maths, the loop, the samplers

order_nll = script("dev/order_nll")
TOK = CharTokenizer("abc")  # three characters, [MASK] = 3
PROMPT = "abca"


def _net(objective):
    """A random self-conditioned network whose self-conditioning input moves its logits (sc_proj is zero at init) and
    whose distributions are peaked, so that orders, and how a pass reads the last one, make different laws."""
    torch.manual_seed(1 if objective == "bd3" else 0)
    m = Transformer(model_args(get_config(_flags(objective)), TOK.vocab_size)).eval()
    with torch.no_grad():
        m.sc_proj.weight.normal_(0, 3.0)
        m.head.weight.mul_(8)
    return m


def _flags(objective):
    common = ["--block_size=8", "--n_layer=2", "--n_head=2", "--n_embd=16", "--self_cond", "--order=random",
              "--remask=none", "--steps=4", f"--prompt={PROMPT}", "--gen_len=4", "--device=cpu"]
    if objective == "bd3":
        return [*common, "--objective=bd3", "--bd3_block=4"]
    return [*common, "--time_cond=none", "--tokens_per_step=linear", "--semi_ar_length=4"]


def _law(model, objective, self_cond):
    """{the 4 generated tokens: probability} by order_nll.py's exact mixture over windows [prompt, y] (the law of the
    block after the prompt: mdlm's second semi-AR block of 4, bd3's second block)."""
    ys = torch.tensor(list(itertools.product(range(3), repeat=4)))
    x = torch.cat([torch.tensor(TOK.encode(PROMPT)).expand(len(ys), -1), ys], 1)
    logits_of, block = order_nll.PASSES[objective](model, get_config(_flags(objective)), x, TOK.mask_id)
    nll = order_nll.mixture_nll(logits_of, x, block, TOK.mask_id, TOK.vocab_size, self_cond, semi_ar=0 if block else 4)
    return {tuple(y.tolist()): p for y, p in zip(ys, torch.exp(-nll[:, 1]).tolist())}


@pytest.mark.parametrize("objective", ["mdlm", "bd3"])
def test_inference_draws_the_law_order_nll_scores_read_as_the_sampler_reads_it(objective):
    model, cfg = _net(objective), get_config(_flags(objective))
    law, bound_read = _law(model, objective, "sampler"), _law(model, objective, "bound")
    assert abs(sum(law.values()) - 1) < 1e-9 and abs(sum(bound_read.values()) - 1) < 1e-9  # exact: laws
    opts = SamplerOptions.from_config(cfg)
    canvas, g = build_canvas(cfg, opts, TOK, 8), torch.Generator().manual_seed(2)
    draws = [row[4:] for _ in range(10) for row in
             fill(model, TOK, canvas, replace(cfg, num_samples=2000), opts, "cpu", g)[1]
             .tolist()]
    chi2, limit = pooled_chi2(draws, law)
    assert chi2 < limit, (chi2, limit)
    chi2, limit = pooled_chi2(draws, bound_read)  # the control: the bound's reading is another law
    assert chi2 > limit, (chi2, limit)


def _law_by_hand(model):
    """The law of the random-order sampler's 4 tokens after the prompt, by enumeration: for each of the 24 orders and
    each of the 81 outcomes, pass k reveals the order's k-th position with a token drawn from the network's
    prediction there; the network reads, at each position still masked, the previous pass's prediction of it
    (self-conditioning; zeros at the first pass) and zeros at every other position, the decided ones included. The
    law is the mean over the orders of the product of the 4 chances."""
    ys = torch.tensor(list(itertools.product(range(3), repeat=4)))  # (81, 4)
    prompt = torch.tensor(TOK.encode(PROMPT)).expand(len(ys), -1)
    law = torch.zeros(len(ys), dtype=torch.float64)
    for order in itertools.permutations(range(4)):
        x = torch.cat([prompt, torch.full_like(ys, TOK.mask_id)], 1)  # (81, 8): the prompt, then 4 [MASK]s
        sc = torch.zeros(len(ys), 8, TOK.vocab_size)
        chance = torch.ones(len(ys), dtype=torch.float64)
        for pos in order:
            with torch.no_grad():
                logits = model(x, None, sc=sc)
            logits[..., TOK.mask_id] = float("-inf")  # x0 is never [MASK]
            chance = chance * torch.softmax(logits.double(), -1)[:, 4 + pos].gather(1, ys[:, pos, None])[:, 0]
            x = x.clone()
            x[:, 4 + pos] = ys[:, pos]
            sc = torch.softmax(logits, -1) * (x == TOK.mask_id)[..., None]  # this pass's prediction, masked only
        law += chance / 24
    return dict(zip(map(tuple, ys.tolist()), law.tolist()))


def _sc_net():
    """A self-conditioned network whose self-conditioning input outweighs its token embedding (sc_proj ~ N(0, 1), the
    embedding x 0.1), so that where the network reads it changes the law: read at the decided positions too, the
    sampler's law moves by 0.10 in total variation (_net's by 0.005, which 20,000 draws cannot see)."""
    torch.manual_seed(3)
    m = Transformer(model_args(get_config(_flags("mdlm")), TOK.vocab_size)).eval()
    with torch.no_grad():
        m.sc_proj.weight.normal_(0, 1.0)
        m.tok_emb.weight.mul_(0.1)
        m.head.weight.mul_(8)
    return m


def test_the_sampler_and_the_scorer_read_self_conditioning_at_masked_positions_only():
    """An independent reference for both (they could be wrong alike, each reading the decided positions' last
    predictions, and agree): the law enumerated plainly here equals order_nll's mixture (exact), and inference's
    sampler's draws follow it (chi-square)."""
    model, cfg = _sc_net(), get_config(_flags("mdlm"))
    law = _law_by_hand(model)
    mixture = _law(model, "mdlm", "sampler")
    assert abs(sum(law.values()) - 1) < 1e-12 and max(abs(law[y] - mixture[y]) for y in law) < 1e-12
    opts = SamplerOptions.from_config(cfg)
    canvas, g = build_canvas(cfg, opts, TOK, 8), torch.Generator().manual_seed(5)
    draws = [row[4:] for _ in range(10) for row in
             fill(model, TOK, canvas, replace(cfg, num_samples=2000), opts, "cpu", g)[1]
             .tolist()]
    chi2, limit = pooled_chi2(draws, law)
    assert chi2 < limit, (chi2, limit)


@pytest.mark.parametrize("whole", [False, True], ids=["eager rounds", "whole rounds"])
def test_the_ar_mode_scored_is_the_law_bd3_speculate_draws(whole):
    """A --bd3_ar network's AR mode (bd3.ar_nll, what eval.py reports beside its bound): the first token from the noisy
    half's all-[MASK] block, each next from the clean half. Over every window it sums to 1, and the self-speculative
    sampler's draws (the noisy half drafting, the clean half checking) follow it by chi-square: the eager rounds and
    the whole ones (--compile's, here eager: fixed shapes, the check on the device)."""
    import bd3
    flags = ["--block_size=4", "--n_layer=2", "--n_head=2", "--n_embd=16", "--self_cond", "--objective=bd3",
             "--bd3_block=2", "--bd3_ar=1.0", "--bd3_speculate", "--device=cpu"]
    cfg = get_config(flags)
    torch.manual_seed(3)
    model = Transformer(model_args(cfg, TOK.vocab_size)).eval()
    model.compiler = (lambda fn: fn) if whole else None
    with torch.no_grad():
        model.head.weight.mul_(6)  # peaked: the drafts are often wrong, the check decides
    ys = torch.tensor(list(itertools.product(range(3), repeat=4)))
    windows = torch.cat([torch.zeros(len(ys), 1, dtype=torch.long), ys], 1)  # the first token is context: unread
    law = dict(zip(map(tuple, ys.tolist()), torch.exp(-4 * bd3.ar_nll(model, windows, cfg, TOK.mask_id)).tolist()))
    assert abs(sum(law.values()) - 1) < 1e-9
    assert bd3.ar_nll(model, windows, get_config([*flags[:-2], "--bd3_ar=0"]), TOK.mask_id) is None
    g, prompt = torch.Generator().manual_seed(4), torch.zeros(2000, 0, dtype=torch.long)
    draws = [row for _ in range(10) for row in
             bd3.sample_clean_ar(model, prompt, 4, bd3.Blocks(size=2, mask_id=TOK.mask_id), generator=g,
                                 draft=True)[0].tolist()]
    chi2, limit = pooled_chi2(draws, law)
    assert chi2 < limit, (chi2, limit)
    flat = {y: 1 / 81 for y in law}  # the control: a law it does not draw
    assert pooled_chi2(draws, flat)[0] > pooled_chi2(draws, flat)[1]


def test_readmes_semi_ar_row_names_the_sampler_whose_law_its_figure_is():
    """README's table gives `baby`'s semi-AR law (RESULTS: order_nll's mixture, blocks of 4), which is not the law its
    preset samples (random order at a falling temperature). The row names flags; read over the preset, they are the
    sampler whose law the test above ties to that mixture: blocks of 4, one random position a pass, temperature 1, no
    remasking. And the row says "not its preset's" exactly when the preset alone samples another law."""
    from configurator import parse
    row = next(line for line in (ROOT / "README.md").read_text().splitlines()
               if line.startswith("| `baby` |") and "semi-AR" in line)
    flags = shlex.split(re.search(r"`(--[^`]+)`", row.split("|")[2])[1])
    tied = dict(semi_ar_length=4, order="random", remask="none", tokens_per_step="linear", temperature=1.0,
                temperature_end_share=1.0, top_k=0, top_p=1.0)
    assert {k: getattr(get_config(_flags("mdlm")), k) for k in tied} == tied  # what the test above draws

    def draws_the_tied_law(cfg):
        return all(getattr(cfg, k) == v for k, v in tied.items()) and cfg.steps == cfg.gen_len  # a token a pass

    assert draws_the_tied_law(parse(["baby", *flags]).over()[0])
    assert ("not its preset's" in row) == (not draws_the_tied_law(parse(["baby"]).over()[0]))
