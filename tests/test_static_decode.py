"""Static-shape decoding (issues 74, 89): KV-cached decoding a CUDA graph can replay. model.decode_steps on a static
KVCache (preallocated to the context, its position a device tensor, attention over the whole cache masked to the
keys written) draws the same tokens as the eager cache (the keys written, counted on the host) and as a full pass
over the window without any cache, for the AR, --dual_sample's AR mode of a bidirectional network and bd3's clean
half at batch > 1, past the context, over several seeds. bd3's drafting round at batch 1 (issues 78, 89) likewise:
whole at fixed shapes (every draft slot and noisy state, the static cache, the check and the next drafts on the
device: bd3._whole_round) it draws the tokens of the round that passes only the columns it reads, and the host reads
once a call. All eager here; what dynamo traces of these steps (one graph per batch size, k rounds one graph) is in
tests/test_compile.py, the slower tier.

    python -m pytest -q tests/test_static_decode.py
"""
from dataclasses import replace

import pytest
import torch

import bd3
from utils.draws import Law, sample_tokens
from configurator import get_config
import model as model_py
from model import compile_decode, decode, decode_steps
from model import ModelArgs, Transformer
from diffusion import SamplerOptions

pytestmark = pytest.mark.core  # the core tier (pytest.ini): the maths, the loop, the samplers

V, MASK = 11, 10  # ten tokens and [MASK]
BLOCKS = bd3.Blocks(size=4, mask_id=MASK)  # bd3 networks below: blocks of 4


def _net(seed, causal=True, clean_causal=False, block=16):
    torch.manual_seed(seed)
    return Transformer(ModelArgs(vocab_size=V, block_size=block, n_layer=2, n_head=2, n_embd=32, causal=causal,
                                 time_cond="none", qk_norm=seed % 2 == 1, clean_causal=clean_causal)).eval()


def _static(model, on=True):
    """model with the static cache (what a compiled step reads), run eager: the steps stand in for their graph."""
    model.compiler = (lambda fn: fn) if on else None
    return model


def _uncached(model, prompt, n, generator, temperature=0.9, top_k=0):
    """decode.generate's law without a cache: each token from a full causal pass over the window, which keeps its last
    half when the next token does not fit. Returns (tokens (B, P + n), the filtered logits of each draw)."""
    W, seq, seen = model.args.block_size, prompt, []
    lo = max(0, prompt.size(1) - W)
    for _ in range(n):
        L = seq.size(1) - lo
        logits = model(seq[:, lo:], attn_mask=torch.ones(L, L, dtype=torch.bool).tril())[:, -1]
        logits[:, MASK] = float("-inf")
        seen.append(Law(temperature=temperature, top_k=top_k).log_probs(logits))
        seq = torch.cat([seq, sample_tokens(seen[-1], temperature, generator)[:, None]], 1)
        if seq.size(1) - lo > W:
            lo = seq.size(1) - W // 2
    return seq, seen


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("causal", [True, False], ids=["ar", "dual_sample"])
def test_the_static_decode_draws_the_eager_decodes_and_the_uncached_tokens(seed, causal):
    """Batch 3, a 5-token prompt, 40 tokens in a 16-token context (three slides of the window): the static cache and
    the eager one give the tokens of the uncached passes, their logits allclose; a prompt longer than the context
    too (its last W tokens read)."""
    for prompt in (torch.randint(0, 10, (3, 5)), torch.randint(0, 10, (1, 20))):
        ref, ref_logits = _uncached(_net(seed, causal), prompt, 40, torch.Generator().manual_seed(seed))
        for static in (False, True):
            got = []
            out = _static(_net(seed, causal), static).generate(prompt, 40, SamplerOptions(1, law=Law(temperature=0.9)),
                           torch.Generator().manual_seed(seed), MASK, on_token=lambda seq, filtered: got.append(filtered))
            assert torch.equal(out, ref), (static, seed)
            torch.testing.assert_close(torch.stack(got), torch.stack(ref_logits), atol=1e-5, rtol=1e-5)


def _bd3_uncached(model, prompt, n, block, generator, opts):
    """bd3.sample_clean_ar's batch path without a cache: each token from the clean half's causal pass over its window
    (blocks aligned to the window's start; a block that does not fit moves the window to keep its last half)."""
    W, seq, lo = model.args.block_size, prompt, 0
    keep = min((W // 2) // block * block, W - block)
    while seq.size(1) < prompt.size(1) + n:
        S = seq.size(1)
        if (S - lo) // block * block + block > W:
            lo = S - keep
        logits = model(seq[:, lo:], attn_mask=torch.ones(S - lo, S - lo, dtype=torch.bool).tril())[:, -1]
        logits[:, MASK] = float("-inf")
        seq = torch.cat([seq, bd3.draw(bd3.probs(logits, opts), generator)[:, None]], 1)
    return seq


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bd3s_clean_half_at_batch_above_1_draws_the_same_tokens_on_the_static_cache(seed):
    """sample_clean_ar at batch 4 (the clean half alone, in the AR's loop): the static cache and the eager one give
    the tokens of the uncached clean half past the context (blocks of 4, context 16), and the same laws token by
    token."""
    opts, prompt = SamplerOptions(steps=1, law=Law(temperature=1.0, top_k=5)), torch.randint(0, 10, (4, 3))
    ref = _bd3_uncached(_net(seed, False, True), prompt, 37, 4, torch.Generator().manual_seed(seed), opts)
    laws = {}
    for static in (False, True):
        seen, calls = [], []
        m = _static(_net(seed, False, True), static)
        hook = m.register_forward_pre_hook(lambda *a: calls.append(1))  # every network call
        out, stats = bd3.sample_clean_ar(m, prompt, 37, BLOCKS, opts, torch.Generator().manual_seed(seed),
                                         on_step=lambda st: seen.append(st.laws[1]))
        hook.remove()
        # a pass a token, and one for the text before the newest token each time the window moves: every call
        assert torch.equal(out, ref) and stats["nfe"] == len(calls) > 37, static
        laws[static] = torch.cat(seen)
    torch.testing.assert_close(laws[True], laws[False], atol=1e-5, rtol=1e-5)


def test_a_static_step_keeps_its_shapes_and_buffers():
    """What a CUDA graph needs of decode_steps: the same input and output shapes at every call (k = --replay_steps
    tokens, here 3, not the default 4; or one before the window moves and at the end), past the context too, and the
    same cache buffers, through the window's slides and into the next decode of the batch."""
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
    """--compile for sampling: 'auto' compiles the decoding steps (the AR's k tokens, bd3's k drafting rounds) on CUDA
    only, with CUDA graphs (mode 'reduce-overhead'); 'true' on a CPU too (no graphs there); 'false' never. Always
    whole (fullgraph) at static shapes, once a model and function (replay)."""
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


def test_the_static_decode_makes_no_host_sync():
    """Every token of the AR's decode and of bd3's clean half at batch 2 on the static cache, past the context, on the
    meta device under the sync check (tests/test_sync_free.py's): the position stays on the device."""
    from test_sync_free import checked_from_the_first_pass
    meta = torch.device("meta")
    for model, sample in ((_net(0), lambda m, x: m.generate(x, 20, SamplerOptions(1, law=Law(top_k=5)),
                                                          torch.Generator().manual_seed(0), MASK)),
                          (_net(1, False, True), lambda m, x: bd3.sample_clean_ar(m, x, 20, BLOCKS, draft=False,
                                                                                  generator=torch.Generator()))):
        model = _static(model.to(meta))
        leave = checked_from_the_first_pass(model)
        try:
            sample(model, torch.zeros(2, 3, dtype=torch.long, device=meta))
        finally:
            leave()
        assert model.decode_cache.static and model.decode_cache.k[0].device == meta


# ------------------------------------------------------------------------------------------ bd3's drafting round
def _drafting(seed, static):
    """A --bd3_ar network (blocks of 4, context 16) whose rounds are whole at fixed shapes if static (_whole_round, k
    a call), eager, as the compiled replay (what --compile makes of it) would run them, on the static cache."""
    return _static(_net(seed, False, True), static)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bd3s_drafting_rounds_draw_the_same_tokens_whole_at_fixed_shapes(seed):
    """sample_clean_ar drafting, 40 tokens through a context of 16 (its window moves): the whole round at fixed
    shapes (every draft slot and noisy state, the rest [MASK] and masked; the check, the redraw and the next drafts on
    the device), 1 or 3 rounds a call, draws the tokens of the round that passes only the columns it reads, in the
    same passes, at T = 1 and filtered, at batch 1 and at batch 3 (rows advance together)."""
    passes = []
    for opts in (SamplerOptions(steps=1, replay_steps=3), SamplerOptions(steps=1, law=Law(temperature=0.8, top_k=4))):
        for B, k in ((1, 1), (1, 3), (3, 3)):
            prompt = torch.randint(0, 10, (B, 3), generator=torch.Generator().manual_seed(seed))
            got = [bd3.sample_clean_ar(_drafting(seed, static), prompt, 40, BLOCKS, replace(opts, replay_steps=k),
                                       torch.Generator().manual_seed(seed), draft=True) for static in (False, True)]
            # the same rounds commit the same tokens (kept: drafts kept a round); a replay of k rounds may run
            # some without room (the end, a window to move): passes that commit nothing, in its NFE
            assert torch.equal(got[0][0], got[1][0]) and got[0][1]["kept"] == got[1][1]["kept"], (opts, B)
            assert got[0][1]["nfe"] <= got[1][1]["nfe"] <= got[0][1]["nfe"] + (k - 1) * 5, (opts, B, k)
            passes.append(got[0][1]["nfe"])
    assert min(passes) < 40  # drafts were kept: the rounds' later columns were read


def test_the_whole_rounds_read_nothing_on_the_host():
    """bd3._rounds (k = 3 whole rounds, what a replay runs) on the meta device under the sync check
    (tests/test_sync_free.py's): no device value read on the host, no output sized by device values, no copy."""
    from test_sync_free import NoHostSync
    meta = torch.device("meta")
    model = _drafting(0, True).to(meta)
    c = bd3._round_cache(model, 1, 4, meta)
    decode(model, torch.zeros(1, 2, dtype=torch.long, device=meta), c)  # the window before the newest token
    c.new_window(torch.zeros(1, 3, dtype=torch.long, device=meta), 40)
    u = torch.zeros(3 * 9, dtype=torch.float64, device=meta)
    with NoHostSync():
        counts, used, laws = bd3._rounds(model, c, u, 3, SamplerOptions(1, law=Law(top_k=5)), MASK)
    assert counts.shape == (3,) and used.shape == () and [tuple(p.shape) for p in laws] == [(1, 5, V)] * 3


def test_an_eager_drafting_round_reads_one_number_on_the_host(monkeypatch):
    """Every pass of sample_clean_ar at batch 1 on the meta device, past the context, under the sync check: no copy
    between the host and the device, no output sized by device values, and one device value read on the host a
    drafting round (the drafts it kept; meta has no numbers: 0, 1, 0, ... here)."""
    from test_sync_free import NoHostSync
    reads, rounds, real = [], [], bd3.keep_or_redraw

    class OneRead(NoHostSync):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.overloadpacket is torch.ops.aten._local_scalar_dense:
                reads.append(len(rounds))
                return len(reads) % 2  # a count every drafting round can keep (it drafts one or more)
            return super().__torch_dispatch__(func, types, args, kwargs)

    def counted(p, q, drafts, generator):
        rounds.append(drafts.size(1))
        return real(p, q, drafts, generator)
    monkeypatch.setattr(bd3, "keep_or_redraw", counted)
    prefills = []  # the text before the newest token, passed at each window's start: a call of its own
    monkeypatch.setattr(bd3, "decode", lambda *a: prefills.append(1) or decode(*a))
    model = _drafting(0, False).to(torch.device("meta"))
    with OneRead():  # the call's setup too: it builds its cache and [MASK] block on the device
        out, stats = bd3.sample_clean_ar(model, torch.zeros(1, 3, dtype=torch.long, device="meta"), 40, BLOCKS,
                                         SamplerOptions(1, law=Law(top_k=5)), torch.Generator().manual_seed(0))
    drafting = [i + 1 for i, k in enumerate(rounds) if k]  # rounds read so far when each drafting round reads
    assert reads == drafting and len(drafting) > 10 and stats["nfe"] == len(rounds) + len(prefills) > len(rounds)


