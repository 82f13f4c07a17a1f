"""The decoders' replayable steps (the AR's generate, --dual_sample's AR mode, bd3's clean half): pinned tokens drawn
eagerly and replayed k steps a call (--compile's path, here eager); the static cache against the eager one and the
uncached pass; a step's fixed shapes; compile_decode's policy; bd3's whole drafting rounds at fixed shapes.

    python -m pytest -q tests/test_replay.py
"""
from dataclasses import replace

import pytest
import torch

import bd3
import model as model_py
from configurator import get_config
from diffusion import SamplerOptions
from model import ModelArgs, Transformer, compile_decode, decode, decode_steps
from utils.draws import Law, sample_tokens
from test_pinned_samples import integer_weights

pytestmark = pytest.mark.core  # the core tier (pytest.ini): the maths, the loop, the samplers

V, MASK = 11, 10  # ten tokens and [MASK]: a token is one digit below
BLOCKS = bd3.Blocks(size=4, mask_id=MASK)
OPTS = {"T1": SamplerOptions(steps=1), "T0.8 k4": SamplerOptions(steps=1, law=Law(temperature=0.8, top_k=4)),
        "T0": SamplerOptions(steps=1, law=Law(temperature=0))}
# (sampler, law, batch, prompt length): the 40 tokens after the prompt of each row (integer weights), rows joined by
# '/'; pinned at 91a1a5c, torch 2.13.0 CPU. 'drafted': sample_clean_ar(draft=True); 'clean': the clean half alone
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
    """(the 40 tokens after prompt as PINNED writes them, the rounds that commit tokens) of one sampler, seed 5; its
    NFE is every network call: those rounds, the prefills, and a replay's rounds without room."""
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
    # the rounds that committed tokens (with no prompt the first token is a pass of its own); only whole rounds idle
    rounds = 40 if kind == "ar" else round((40 - (P == 0)) / (st["kept"] + 1)) + (P == 0)
    idle = nfe - len(prefills) - rounds
    assert idle == 0 if kind != "drafted" or getattr(model, "compiler", None) is None else idle >= 0, (kind, P, idle, calls)
    return "/".join("".join(map(str, row)) for row in out[:, P:].tolist()), rounds


def replayed(model):
    """model decoding as --compile runs it, here eager: the static cache, k tokens (or whole rounds) a call."""
    model.compiler, model.compiled = (lambda fn: fn), {}
    return model


@pytest.mark.parametrize("k", [0, 1, 4], ids=["eager", "replayed k=1", "replayed k=4"])
@pytest.mark.parametrize("key", list(PINNED), ids=lambda k: " ".join(map(str, k)))
def test_a_fixed_seed_draws_the_tokens_drawn_before_the_replay(key, k):
    """Eager, and replayed k steps a call: the pinned tokens in the pinned passes (the AR and the clean half: a pass a
    token)."""
    kind, law, B, P = key
    prompt = torch.randint(0, 10, (B, P), generator=torch.Generator().manual_seed(P))
    model = replayed(net(kind == "ar")) if k else None
    tokens, passes = sample(kind, replace(OPTS[law], replay_steps=k) if k else OPTS[law], prompt, model)
    assert tokens == PINNED[key]
    assert passes == (PASSES[law, B, P] if kind == "drafted" else 40)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU")
def test_on_cuda_the_replays_are_graphs_that_draw_the_eager_tokens():
    """compile_decode on CUDA: CUDA graph replays, none skipped, drawing the pinned tokens at T = 0 and the eager CUDA
    steps' at T = 1 (CUDA's uniforms there)."""
    from torch._dynamo.utils import counters
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


# ----------------------------------------------------------------------------- the static cache against the eager one
def _net(seed, causal=True, clean_causal=False, block=16):
    """A random network (qk_norm on odd seeds): the AR, a bidirectional one (--dual_sample), or a --bd3_ar one."""
    torch.manual_seed(seed)
    return Transformer(ModelArgs(vocab_size=V, block_size=block, n_layer=2, n_head=2, n_embd=32, causal=causal,
                                 time_cond="none", qk_norm=seed % 2 == 1, clean_causal=clean_causal)).eval()


def _static(model, on=True):
    """model with the static cache (what a compiled step reads), run eager: the steps stand in for their graph."""
    model.compiler = (lambda fn: fn) if on else None
    return model


def _uncached(model, prompt, n, generator, temperature=0.9):
    """generate's law without a cache, the window keeping its last half when full: (tokens, each draw's log-probs)."""
    W, seq, seen = model.args.block_size, prompt, []
    lo = max(0, prompt.size(1) - W)
    for _ in range(n):
        L = seq.size(1) - lo
        logits = model(seq[:, lo:], attn_mask=torch.ones(L, L, dtype=torch.bool).tril())[:, -1]
        logits[:, MASK] = float("-inf")
        seen.append(Law(temperature=temperature).log_probs(logits))
        seq = torch.cat([seq, sample_tokens(seen[-1], temperature, generator)[:, None]], 1)
        if seq.size(1) - lo > W:
            lo = seq.size(1) - W // 2
    return seq, seen


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("causal", [True, False], ids=["ar", "dual_sample"])
def test_the_static_decode_draws_the_eager_decodes_and_the_uncached_tokens(seed, causal):
    """40 tokens through a 16-token context, and a prompt longer than it: both caches give the uncached tokens."""
    for prompt in (torch.randint(0, 10, (3, 5)), torch.randint(0, 10, (1, 20))):
        ref, ref_logits = _uncached(_net(seed, causal), prompt, 40, torch.Generator().manual_seed(seed))
        for static in (False, True):
            got = []
            out = _static(_net(seed, causal), static).generate(prompt, 40, SamplerOptions(1, law=Law(temperature=0.9)),
                           torch.Generator().manual_seed(seed), MASK, on_token=lambda seq, filtered: got.append(filtered))
            assert torch.equal(out, ref), (static, seed)
            torch.testing.assert_close(torch.stack(got), torch.stack(ref_logits), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bd3s_clean_half_at_batch_above_1_draws_the_same_tokens_on_the_static_cache(seed):
    """sample_clean_ar at batch 4: both caches give the uncached clean half's tokens past the context, the same laws
    token by token, and an NFE of every network call."""
    opts, prompt = SamplerOptions(steps=1, law=Law(temperature=1.0, top_k=5)), torch.randint(0, 10, (4, 3))
    model, g = _net(seed, False, True), torch.Generator().manual_seed(seed)
    W, seq, lo = model.args.block_size, prompt, 0
    while seq.size(1) < 40:
        S = seq.size(1)
        if (S - lo) // 4 * 4 + 4 > W:
            lo = S - min((W // 2) // 4 * 4, W - 4)
        logits = model(seq[:, lo:], attn_mask=torch.ones(S - lo, S - lo, dtype=torch.bool).tril())[:, -1]
        logits[:, MASK] = float("-inf")
        seq = torch.cat([seq, bd3.draw(bd3.probs(logits, opts), g)[:, None]], 1)
    laws = {}
    for static in (False, True):
        seen, calls = [], []
        m = _static(_net(seed, False, True), static)
        hook = m.register_forward_pre_hook(lambda *a: calls.append(1))
        out, stats = bd3.sample_clean_ar(m, prompt, 37, BLOCKS, opts, torch.Generator().manual_seed(seed),
                                         on_step=lambda st: seen.append(st.laws[1]))
        hook.remove()
        assert torch.equal(out, seq) and stats["nfe"] == len(calls) > 37, static
        laws[static] = torch.cat(seen)
    torch.testing.assert_close(laws[True], laws[False], atol=1e-5, rtol=1e-5)


def test_a_static_step_keeps_its_shapes_and_buffers():
    """What a CUDA graph needs of decode_steps: the same shapes at every call (k tokens, or one before the window moves
    and at the end) and the same cache buffers, into the next decode of the batch."""
    m = _static(_net(0))
    shapes, ptrs = set(), set()

    def recording(fn):  # model.compiler's place: the function as a graph would see each call
        def steps(model, newest, cache, u, law, mask_id):
            out = fn(model, newest, cache, u, law, mask_id)
            shapes.add((tuple(newest.shape), tuple(u.shape), *(tuple(t.shape) for t in (*out, *cache.k, *cache.v))))
            ptrs.add(tuple(t.data_ptr() for t in (*cache.k, *cache.v, cache.pos)))
            return out
        return steps
    m.compiler = recording
    for seed in (0, 1):
        m.generate(torch.randint(0, 10, (2, 3)), 40, SamplerOptions(1, replay_steps=3),
                   torch.Generator().manual_seed(seed), mask_id=MASK)
    assert {s[:2] for s in shapes} == {((2, 1), (3, 2)), ((2, 1), (1, 2))} and len(shapes) == 2, shapes
    assert len(ptrs) == 1, ptrs


def test_compile_decode_compiles_the_step_where_compile_says(monkeypatch):
    """'auto' compiles on CUDA only, with CUDA graphs; 'true' on a CPU too; 'false' never; whole, at static shapes."""
    seen = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: seen.append(kw) or fn)
    for flag, device, mode in (("auto", "cuda", "reduce-overhead"), ("auto", "cpu", None), ("true", "cpu", None),
                               ("true", "cuda", "reduce-overhead"), ("false", "cuda", None)):
        seen.clear()
        m = _net(0)
        compile_decode(m, get_config([f"--compile={flag}"]), device)
        compiled = flag == "true" or (flag == "auto" and device == "cuda")
        assert (m.compiler is not None) == compiled, (flag, device)
        assert model_py.replay(m, decode_steps) is decode_steps and model_py.replay(m, decode) is decode
        assert len(seen) == 2 * compiled and all(kw == dict(mode=mode, fullgraph=True, dynamic=False) for kw in seen)


def _drafting(seed, static):
    """A --bd3_ar network (blocks of 4, context 16) whose rounds are whole at fixed shapes if static (k a call)."""
    return _static(_net(seed, False, True), static)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bd3s_drafting_rounds_draw_the_same_tokens_whole_at_fixed_shapes(seed):
    """40 tokens through a context of 16: whole rounds at fixed shapes, 1 or 3 a call, draw the eager rounds' tokens in
    the same passes, at T = 1 and filtered, at batch 1 and 3."""
    passes = []
    for opts in (SamplerOptions(steps=1, replay_steps=3), SamplerOptions(steps=1, law=Law(temperature=0.8, top_k=4))):
        for B, k in ((1, 1), (1, 3), (3, 3)):
            prompt = torch.randint(0, 10, (B, 3), generator=torch.Generator().manual_seed(seed))
            got = [bd3.sample_clean_ar(_drafting(seed, static), prompt, 40, BLOCKS, replace(opts, replay_steps=k),
                                       torch.Generator().manual_seed(seed), draft=True) for static in (False, True)]
            # a replay of k rounds may run some without room: passes that commit nothing, in its NFE
            assert torch.equal(got[0][0], got[1][0]) and got[0][1]["kept"] == got[1][1]["kept"], (opts, B)
            assert got[0][1]["nfe"] <= got[1][1]["nfe"] <= got[0][1]["nfe"] + (k - 1) * 5, (opts, B, k)
            passes.append(got[0][1]["nfe"])
    assert min(passes) < 40  # drafts were kept: the rounds' later columns were read
