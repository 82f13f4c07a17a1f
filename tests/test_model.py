"""The network's invariants (each option's shapes, gradients and parameter count: tests/test_options.py; KV-cached
decoding: tests/test_replay.py): attention direction, time input, dropout, qk-norm, the tied head, the CPU load's
layout, and no attention mask leaving a query with nothing to attend to (a softmax over no keys is NaN on MPS).

    python -m pytest -q tests/test_model.py
"""
import itertools

import pytest
import torch
import torch.nn.functional as F

import bd3
from diffusion import SamplerOptions, Schedule, causal_logits
from model import KVCache, ModelArgs, Transformer

pytestmark = pytest.mark.core  # the core tier (pytest.ini): the maths, the loop, the samplers

V, MASK = 11, 10
CPU = torch.device("cpu")


def test_the_reference_models_parameter_counts():
    assert Transformer(ModelArgs(vocab_size=66)).num_params() == 10_706_304
    assert Transformer(ModelArgs(vocab_size=2048)).num_params() == 12_228_480  # the reference's "~12.23M" BPE model
    assert Transformer(ModelArgs(vocab_size=66, time_cond="none")).num_params() == 10_706_304 - 101 * 384


def _tiny(**kw):
    torch.manual_seed(0)
    return Transformer(ModelArgs(vocab_size=V, block_size=16, n_layer=2, n_head=2, n_embd=32, diffusion_steps=10, **kw))


def test_bidirectional_model_sees_the_future_and_causal_does_not():
    x = torch.randint(0, 10, (2, 16))
    y = x.clone()
    y[:, 12] = (y[:, 12] + 1) % 10  # perturb a later token
    t = torch.tensor([3, 7])
    bi = _tiny()
    assert not torch.allclose(bi(x, t)[:, :12], bi(y, t)[:, :12])
    causal = _tiny(causal=True, time_cond="none")
    torch.testing.assert_close(causal(x)[:, :12], causal(y)[:, :12])
    assert not torch.allclose(causal(x)[:, 12:], causal(y)[:, 12:])


def test_time_conditioning_changes_the_output_only_when_on():
    x = torch.randint(0, 10, (1, 16))
    m = _tiny()
    assert not torch.allclose(m(x, torch.tensor([1])), m(x, torch.tensor([9])))
    m0 = _tiny(time_cond="none")
    torch.testing.assert_close(m0(x, torch.tensor([1])), m0(x, torch.tensor([9])))


def test_the_ar_never_emits_mask():
    """[MASK] is in an AR's vocabulary but never a target; a head that favours it must still never draw it."""
    torch.manual_seed(7)
    ar = Transformer(ModelArgs(vocab_size=4, block_size=16, n_layer=2, n_head=2, n_embd=16, causal=True,
                               time_cond="none")).double().eval()
    with torch.no_grad():
        ar.head.weight.mul_(20)
        ar.head.weight[3] = ar.head.weight[:3].mean(0) + 0.5 * ar.tok_emb.weight.mean(0)
        ar.head.weight[3] *= 5  # a large [MASK] logit at many positions
    prompt, g = torch.zeros(64, 1, dtype=torch.long), torch.Generator().manual_seed(9)
    assert (ar.generate(prompt, 20, generator=g) == 3).any()  # the control: unfiltered, it is drawn
    assert not (ar.generate(prompt, 20, generator=g, mask_id=3) == 3).any()


def test_flops_per_token_matches_the_6n_plus_attention_estimate():
    m = Transformer(ModelArgs(vocab_size=66))
    n = 10_706_304 - 66 * 384 - 101 * 384  # embedding lookups do no matmul
    assert m.flops_per_token() == 6 * n + 12 * 6 * 384 * 256
    assert 70e6 < m.flops_per_token() < 72e6  # REFERENCE.md: ~71 MFLOP for the default model


def test_dropout_acts_only_in_training_mode_and_zero_adds_no_module():
    x, t = torch.randint(0, 10, (2, 16)), torch.tensor([3, 7])
    drop, plain = _tiny(dropout=0.2), _tiny()
    plain.load_state_dict(drop.state_dict())  # same weights: nn.Dropout holds none
    drop.train()
    assert not torch.allclose(drop(x, t), drop(x, t))
    drop.eval(), plain.eval()
    assert torch.equal(drop(x, t), plain(x, t)) and torch.equal(drop(x, t), drop(x, t))
    assert not any(isinstance(m, torch.nn.Dropout) for m in plain.modules())
    assert sum(isinstance(m, torch.nn.Dropout) for m in _tiny(dropout=0.1).modules()) == 1 + 2 * 2  # emb; attn + MLP


def test_qk_norm_makes_attention_blind_to_the_scale_of_queries_and_keys():
    x, t = torch.randint(0, 10, (2, 16)), torch.tensor([3, 7])
    for causal in (False, True):
        plain, normed = _tiny(causal=causal), _tiny(causal=causal, qk_norm=True)
        with torch.no_grad():
            before = (plain(x, t), normed(x, t))
            for m in (plain, normed):
                for layer in m.layers:  # scale the query and key rows of qkv; values untouched
                    layer.attn.qkv.weight[: 2 * 32] *= 5.0
            after = (plain(x, t), normed(x, t))
        assert not torch.allclose(before[0], after[0], atol=1e-3)  # without it the logits sharpen
        assert torch.allclose(before[1], after[1], atol=1e-5)
        assert not torch.allclose(before[0], before[1], atol=1e-3)  # and it is a different network


def test_tied_head_is_the_embedding_matrix_and_trains_it():
    m = _tiny(time_cond="none", tie_weights=True)
    assert m.head is None
    x = torch.randint(0, 10, (2, 16))
    h = {}
    m.layers[-1].register_forward_hook(lambda mod, i, o: h.update(x=o))
    logits = m(x)
    torch.testing.assert_close(logits, torch.nn.functional.rms_norm(h["x"], (32,)) @ m.tok_emb.weight.T)
    logits[:, :, 3].sum().backward()  # a head-only gradient reaches row 3 of the embedding even if no input is 3
    assert m.tok_emb.weight.grad[3].abs().sum() > 0
    assert m.flops_per_token() == _tiny(time_cond="none").flops_per_token()  # the head's matmul is still done


def test_a_cpu_load_lays_each_matmul_weight_out_transposed_with_the_same_values_and_logits(tmp_path):
    """load_model on the CPU keeps every Linear weight (in, out) in memory (MKL multiplies a few rows by it ~2x
    faster): the state_dict, the logits and a seeded KV-cached decode are the model's."""
    from checkpoint_manager import load_model
    from utils.checkpoint import save_checkpoint
    torch.manual_seed(0)
    a = ModelArgs(vocab_size=11, block_size=16, n_layer=2, n_head=2, n_embd=32, time_cond="none", causal=True)
    m = Transformer(a).eval()
    save_checkpoint(tmp_path / "m.pt", dict(model=m.state_dict(), config={}, model_args=vars(a), iter=0,
                                            tokenizer=dict(kind="char", chars="abcdefghij")))
    got, _ = load_model(tmp_path / "m.pt", "cpu")
    lin = [x.weight for x in got.modules() if isinstance(x, torch.nn.Linear)]
    assert len(lin) == 2 * 4 + 1 and all(w.stride() == (1, w.size(0)) for w in lin)  # (out, in) values, (in, out) memory
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in got.state_dict().items())
    idx = torch.randint(0, 10, (3, 9))
    with torch.no_grad():
        assert torch.allclose(got(idx), m(idx), atol=1e-5)
    seeded = [x.generate(idx[:, :2], 6, generator=torch.Generator().manual_seed(1), mask_id=10) for x in (got, m)]
    assert torch.equal(*seeded)


# ----------------------------------------------------------------------------- no attention mask leaves a query empty
def _empty_rows(mask):
    """The query rows of a boolean mask (..., queries, keys) that attend to nothing."""
    return (~mask.any(-1)).nonzero().tolist()


def test_no_mask_builder_leaves_a_query_with_nothing_to_attend_to():
    """Over their arguments: bd3_attn_mask and the slice bd3_logits passes; pending_mask; round_layout at every (cached
    columns, drafts read) a drafting round meets in a context of 16, at the columns an eager round reads and at fixed
    shapes (the unread slots masked); decode's mask over a static cache."""
    for (L, block), causal in itertools.product([(8, 1), (8, 2), (8, 4), (8, 8), (16, 4)], (False, True)):
        full, n = bd3.bd3_attn_mask(L, block, CPU, causal), 2 * L - block  # bd3_logits leaves the last block out
        assert _empty_rows(full) == [] and _empty_rows(full[:n, :n]) == [], (L, block, causal)
    for n0, m, block, causal in itertools.product((0, 4, 8), (4, 8), (2, 4), (False, True)):
        assert _empty_rows(bd3.pending_mask(n0, m, block, CPU, causal)) == [], (n0, m, block, causal)
    W, n = 16, 4
    for n0 in range(W - 1):
        S = n0 + 1
        sb = S // n * n
        e = sb + n
        for kd in range(e - S + 1):
            fixed = bd3.round_layout(n0, sb, (0, kd, n, n - 1, True), n, W, W + n * n + 2 * n, CPU)[1]
            # the eager round's columns (_draft_round): the states its outcomes need, the next block if one needs it
            outcomes = [r for r in range(S, S + kd + 1) if r < e - 1 or e + n <= W]
            states = [r for r in outcomes if r < e - 1]
            nxt = len(states) != len(outcomes)
            keys = n0 + 1 + kd + n * (len(states) + nxt)
            read = bd3.round_layout(n0, sb, (S - sb, kd, kd, len(states), nxt), n, W, keys, CPU)[1]
            assert _empty_rows(fixed) == [] and _empty_rows(read) == [], (n0, kd)
    cache = KVCache(1, 1, 1, 16, 2, CPU, torch.float32, static=False)
    cache.static, cache.end = True, 16  # the mask decode builds over a static cache's whole buffer
    for pos in range(16):
        cache.pos.fill_(pos)
        for n in range(1, 16 - pos + 1):
            assert _empty_rows(cache.cols[:cache.end] <= (cache.pos + cache.cols[:n])[:, None]) == [], (pos, n)


def test_every_mask_the_samplers_and_losses_pass_has_no_empty_row(monkeypatch):
    """Recorded at the attention call: the AR's decode and --dual_sample's (eager and static), bd3's drafting rounds
    (eager and whole), its clean half alone, its block sampler, and the training passes of bd3 and --dual_ar."""
    seen, sdpa = [], F.scaled_dot_product_attention

    def recorded(q, k, v, attn_mask=None, **kw):
        if attn_mask is not None:
            seen.append(attn_mask)
        return sdpa(q, k, v, attn_mask=attn_mask, **kw)
    monkeypatch.setattr(F, "scaled_dot_product_attention", recorded)
    g, opts, blocks = torch.Generator().manual_seed(0), SamplerOptions(steps=2), bd3.Blocks(size=4, mask_id=MASK)
    prompt = torch.randint(0, MASK, (1, 3), generator=g)

    def net(**kw):
        torch.manual_seed(0)
        return Transformer(ModelArgs(vocab_size=V, block_size=16, n_layer=1, n_head=2, n_embd=16, time_cond="none",
                                     **kw)).eval()
    with torch.no_grad():
        for static in (False, True):  # the eager caches, and the static ones compiled replays run (here eager)
            ar, dual, clean = net(causal=True), net(), net(clean_causal=True)
            for m in (ar, dual, clean):
                m.compiler = (lambda fn: fn) if static else None
            ar.generate(prompt, 20, opts, g, MASK)
            dual.generate(prompt, 10, opts, g, MASK)  # --dual_sample: the AR mode of a bidirectional network
            bd3.sample_clean_ar(clean, prompt, 20, blocks, opts, g)  # drafting rounds, batch 1
            bd3.sample_clean_ar(clean, prompt[:, :0], 20, blocks, opts, g)  # no prompt
            bd3.sample_clean_ar(clean, prompt.expand(2, -1), 20, blocks, opts, g)  # the clean half alone
        bd3.sample_bd3(net(), prompt, 20, blocks, Schedule(10), opts, g)  # block diffusion, its cached context
        x = torch.randint(0, MASK, (2, 16), generator=g)
        bd3.bd3_logits(clean, torch.full_like(x, MASK), x, 4, MASK, clean=True)  # --bd3_ar's training pass
        bd3.bd3_logits(net(), torch.full_like(x, MASK), x, 4, MASK)
        causal_logits(dual, x, MASK)  # --dual_ar's
    assert len(seen) > 100 and all(m.dtype == torch.bool for m in seen)
    assert [i for i, m in enumerate(seen) if _empty_rows(m)] == []
