"""The tokens the samplers that decode (the AR's KV-cached generate, bd3's clean half drafted at batch 1 and alone at
batch > 1) drew before issue 89 made their steps replayable, pinned for fixed seeds: whatever path runs them now must
draw these, the eager one and the replayed one (--compile's, k steps a call: here eager, and on CUDA as CUDA graphs
where a GPU is present). The networks' weights are small integers over 8 (tests/test_pinned_samples.py's), so a
CPU's kernels move a logit in its last bits at most; three laws (T = 1; T = 0.8 with top-k 4; greedy), one and three
rows, a prompt longer than the context, no prompt; 40 tokens through a context of 16 (the window moves).

    python -m pytest -q tests/test_replay.py
"""
from dataclasses import replace

import pytest
import torch

import bd3
from diffusion import SamplerOptions
from model import ModelArgs, Transformer, decode
from utils.draws import Law
from test_pinned_samples import integer_weights

pytestmark = pytest.mark.core  # the core tier (pytest.ini): the maths, the loop, the samplers

V, MASK = 11, 10  # ten tokens and [MASK]: a token is one digit below
BLOCKS = bd3.Blocks(size=4, mask_id=MASK)
OPTS = {"T1": SamplerOptions(steps=1), "T0.8 k4": SamplerOptions(steps=1, law=Law(temperature=0.8, top_k=4)),
        "T0": SamplerOptions(steps=1, law=Law(temperature=0))}
# (sampler, law, batch, prompt length): the 40 tokens of each row, rows joined by '/'; drawn at 91a1a5c (before
# issue 89), torch 2.13.0 CPU. 'drafted' is sample_clean_ar(draft=True), 'clean' the clean half alone (draft=False)
PINNED = {
    ("ar", "T1", 1, 3): "9060378660316023248390028030478835904559",
    ("ar", "T1", 3, 3): "9255849270625550400600333006556904260062/6060242006786060060620620023060056000006/"
                        "0794056208606240600066600003003690317699",
    ("ar", "T1", 1, 20): "6220084375545106369422008400377932903625",
    ("drafted", "T1", 1, 3): "9233923610906942366500020000046220000600",
    ("drafted", "T1", 3, 3): "9070606276000302590069000092602228706706/6020628000600392320036083053040475606062/"
                             "0748755569992295592902970002599860866865",
    ("drafted", "T1", 1, 0): "6032479510626229200000020774240676262350",
    ("clean", "T1", 3, 3): "9255849270625552300600236005625600020036/6060242006786590362660551055086062100347/"
                           "0794056208606060600067725606056260608626",
    ("ar", "T0.8 k4", 1, 3): "9060629290237000006060007022676706603606",
    ("ar", "T0.8 k4", 3, 3): "9060606060320600000600062006226200000000/6060260006660020022230230000000062000227/"
                             "0462002006000000000067726262023600003250",
    ("ar", "T0.8 k4", 1, 20): "6200060620002000002232000000066600600000",
    ("drafted", "T0.8 k4", 1, 3): "9230062323060000080000040405606286260360",
    ("drafted", "T0.8 k4", 3, 3): "9060606060252002000000007022082962870624/6060626000600000000070626082009290006200/"
                                  "0428755506695225560620000000002027667876",
    ("drafted", "T0.8 k4", 1, 0): "9200000026200002000020602622200000000000",
    ("clean", "T0.8 k4", 3, 3): "9060606060320023600600000000026706260060/6060260006660020022230000000062062000000/"
                                "0462002006000000000067706262060620606022",
    ("ar", "T0", 1, 3): "9060606060000000222200000000000060626060",
    ("ar", "T0", 3, 3): "9060606060000000222200000000000060626060/6060606006000000006000060060060000060060/"
                        "0220000000000060626060000000000060626060",
    ("ar", "T0", 1, 20): "6200600000600600600000600600000600600000",
    ("drafted", "T0", 1, 3): "9060606060000000222200000000000606260600",
    ("drafted", "T0", 3, 3): "9060606060000000260000000000060626060000/6060606006000000600062620000000000000606/"
                             "0220000000000606260600000000060626060000",
    ("drafted", "T0", 1, 0): "9200000000220000000000000060626060000000",
    ("clean", "T0", 3, 3): "9060606060000000260000000000060626060000/6060606006000000600062620000000000000606/"
                           "0220000000000606260600000000060626060000",
}
# the passes each drafted sample took (rounds): the drafts kept are the old round's too
PASSES = {("T1", 1, 3): 25, ("T1", 3, 3): 37, ("T1", 1, 0): 23, ("T0.8 k4", 1, 3): 27, ("T0.8 k4", 3, 3): 38,
          ("T0.8 k4", 1, 0): 29, ("T0", 1, 3): 31, ("T0", 3, 3): 39, ("T0", 1, 0): 29}


def net(causal):
    """The AR (causal) or a --bd3_ar network (its clean half token-causal), blocks of 4, context 16, integer weights."""
    m = Transformer(ModelArgs(vocab_size=V, block_size=16, n_layer=2, n_head=2, n_embd=32, causal=causal,
                              time_cond="none", qk_norm=True, clean_causal=not causal)).eval()
    m.load_state_dict(integer_weights(m.state_dict()))
    return m


def sample(kind, opts, prompt, model=None):
    """(the 40 tokens after prompt as PINNED writes them, passes: the rounds that commit tokens) of one sampler,
    seed 5. The NFE it reports is every network call (a forward hook counts them): those rounds, the prefills of
    the window's text before its newest token, and a replay's rounds without room."""
    g, P, model = torch.Generator().manual_seed(5), prompt.size(1), model or net(kind == "ar")
    calls, prefills = [], []
    hook = model.register_forward_pre_hook(lambda m, args, kw: calls.append(args[0].size(1)), with_kwargs=True)
    try:
        if kind == "ar":
            counts = {}
            out = model.generate(prompt, 40, opts, g, MASK, counts=counts)
            nfe = counts["calls"]
            prefills = [n for n in calls if n > 1]  # a step passes the newest token alone; these prefills pass 2+
        else:
            bd3.decode = lambda m, idx, cache: prefills.append(1) or decode(m, idx, cache)  # its prefills' call
            out, st = bd3.sample_clean_ar(model, prompt, 40, BLOCKS, opts, g, draft=kind == "drafted")
            nfe = st["nfe"]
    finally:
        bd3.decode = decode
        hook.remove()
    assert nfe == len(calls) and len(prefills) >= (P > 1), (nfe, calls)
    # the rounds that committed tokens: the rest of the NFE, less the rounds a replay ran without room (the end, a
    # window to move), which only whole rounds k a call have
    # (with no prompt, the noisy half's first token is a pass of its own)
    rounds = 40 if kind == "ar" else round((40 - (P == 0)) / (st["kept"] + 1)) + (P == 0)
    idle = nfe - len(prefills) - rounds
    assert idle == 0 if kind != "drafted" or getattr(model, "compiler", None) is None else idle >= 0, (kind, P, idle, calls)
    return "/".join("".join(map(str, row)) for row in out[:, P:].tolist()), rounds


@pytest.mark.parametrize("key", list(PINNED), ids=lambda k: " ".join(map(str, k)))
def test_a_fixed_seed_draws_the_tokens_drawn_before_the_replay(key):
    kind, law, B, P = key
    prompt = torch.randint(0, 10, (B, P), generator=torch.Generator().manual_seed(P))
    tokens, passes = sample(kind, OPTS[law], prompt)
    assert tokens == PINNED[key]
    assert passes == (PASSES[law, B, P] if kind == "drafted" else 40)  # the AR and the clean half: a pass a token


def replayed(model):
    """model whose decoding runs as --compile runs it, here eager: the static cache, decode_steps k tokens a call,
    bd3's whole rounds (bd3._rounds) k a call (model.compiler returns each function unchanged)."""
    model.compiler, model.compiled = (lambda fn: fn), {}
    return model


@pytest.mark.parametrize("k", [1, 4])
@pytest.mark.parametrize("key", list(PINNED), ids=lambda k: " ".join(map(str, k)))
def test_the_replayed_steps_draw_the_pinned_tokens_whatever_k(key, k):
    """The replayed path (fixed shapes, the check and the next drafts on the device, uniforms drawn ahead into a
    buffer) draws the pinned tokens in the pinned passes, k steps a call or one."""
    kind, law, B, P = key
    prompt = torch.randint(0, 10, (B, P), generator=torch.Generator().manual_seed(P))
    tokens, passes = sample(kind, replace(OPTS[law], replay_steps=k), prompt, replayed(net(kind == "ar")))
    assert tokens == PINNED[key]
    assert passes == (PASSES[law, B, P] if kind == "drafted" else 40)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU")
def test_on_cuda_the_replays_are_graphs_that_draw_the_eager_tokens():
    """compile_decode on CUDA (mode reduce-overhead): the AR's 4 tokens and bd3's 4 whole rounds a CUDA graph replay,
    none skipped (torch._dynamo's cudagraph_skips), their tokens the pinned ones at T = 0 and, at T = 1, those of the
    same steps run eagerly on CUDA (the uniforms are CUDA's there, not the CPU pins')."""
    from torch._dynamo.utils import counters
    from configurator import get_config
    from model import compile_decode
    cuda = torch.device("cuda")
    torch._dynamo.reset()
    skips = counters["inductor"]["cudagraph_skips"]
    for key in [k for k in PINNED if k[0] != "clean" and k[1] in ("T0", "T1")]:
        kind, law, B, P = key
        prompt = torch.randint(0, 10, (B, P), generator=torch.Generator().manual_seed(P)).to(cuda)
        graphed = net(kind == "ar").to(cuda)
        compile_decode(graphed, get_config(["--compile=true"]), cuda)
        got = [sample(kind, OPTS[law], prompt, graphed) for _ in range(2)]  # the second replays what the first recorded
        want = PINNED[key] if law == "T0" else sample(kind, OPTS[law], prompt, replayed(net(kind == "ar").to(cuda)))[0]
        assert got[0][0] == got[1][0] == want, key
    assert counters["inductor"]["cudagraph_skips"] == skips
    torch._dynamo.reset()
