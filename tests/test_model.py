"""Model invariants: parameter counts, attention direction, KV cache. python -m pytest -q tests/test_model.py"""
import pytest
import torch

from model import decode, new_kv_cache
from model import ModelArgs, Transformer

pytestmark = pytest.mark.core  # the core tier (pytest.ini): the maths, the loop, the samplers


def test_reference_char_model_has_exactly_10_706_304_parameters():
    assert Transformer(ModelArgs(vocab_size=66)).num_params() == 10_706_304


def test_parameter_count_formula_bpe_and_ablations():
    L, d, T = 6, 384, 100
    blocks = L * (4 * d * d + 8 * d * d)  # attention qkv+proj, MLP 4x up and down; no biases, no norm gains
    for V in (66, 2048):
        assert Transformer(ModelArgs(vocab_size=V)).num_params() == blocks + 2 * V * d + (T + 1) * d
    assert Transformer(ModelArgs(vocab_size=2048)).num_params() == 12_228_480  # the reference's "~12.23M" BPE model
    assert Transformer(ModelArgs(vocab_size=66, time_cond="none")).num_params() == 10_706_304 - 101 * 384


def _tiny(**kw):
    torch.manual_seed(0)
    return Transformer(ModelArgs(vocab_size=11, block_size=16, n_layer=2, n_head=2, n_embd=32, diffusion_steps=10, **kw))


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


@pytest.mark.parametrize("static", [False, True])
def test_kv_cache_decoding_matches_full_forward(static):
    """decode over a KV cache, five columns in one pass then one a pass, gives the full causal forward's
    logits: on the cache eager decoding reads (the keys written) and on the static one a CUDA graph replays (the whole
    cache, masked)."""
    m = _tiny(causal=True, time_cond="none")
    m.compiler = (lambda fn: fn) if static else None  # the static cache, eager
    x = torch.randint(0, 10, (3, 16))
    cache = new_kv_cache(m, 3, "cpu")
    assert cache.static == static
    parts = [decode(m, x[:, :5], cache)] + [decode(m, x[:, i:i + 1], cache) for i in range(5, 16)]
    torch.testing.assert_close(torch.stack(parts, 1), m(x)[:, 4:], atol=1e-5, rtol=1e-5)


def test_flops_per_token_matches_the_6n_plus_attention_estimate():
    m = Transformer(ModelArgs(vocab_size=66))
    n = 10_706_304 - 66 * 384 - 101 * 384  # embedding lookups do no matmul
    assert m.flops_per_token() == 6 * n + 12 * 6 * 384 * 256
    assert 70e6 < m.flops_per_token() < 72e6  # REFERENCE.md: ~71 MFLOP for the default model


def test_dropout_only_in_training_mode():
    """dropout > 0 makes two training-mode passes differ; in eval mode the model is the dropout-free one."""
    x, t = torch.randint(0, 10, (2, 16)), torch.tensor([3, 7])
    drop, plain = _tiny(dropout=0.2), _tiny()
    plain.load_state_dict(drop.state_dict())  # same weights: nn.Dropout holds none
    drop.train()
    assert not torch.allclose(drop(x, t), drop(x, t))
    drop.eval(), plain.eval()
    assert torch.equal(drop(x, t), plain(x, t))
    assert torch.equal(drop(x, t), drop(x, t))


def test_dropout_zero_adds_no_module():
    assert not any(isinstance(m, torch.nn.Dropout) for m in _tiny().modules())
    assert sum(isinstance(m, torch.nn.Dropout) for m in _tiny(dropout=0.1).modules()) == 1 + 2 * 2  # embeddings; attn + MLP per layer


def test_qk_norm_makes_attention_blind_to_the_scale_of_queries_and_keys():
    x, t = torch.randint(0, 10, (2, 16)), torch.tensor([3, 7])
    for causal in (False, True):
        plain, normed = _tiny(causal=causal), _tiny(causal=causal, qk_norm=True)
        assert plain.num_params() == normed.num_params()  # parameter-free
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
    assert m.head is None and m.num_params() == _tiny(time_cond="none").num_params() - 11 * 32  # one V x d matrix less
    x = torch.randint(0, 10, (2, 16))
    h = {}
    m.layers[-1].register_forward_hook(lambda mod, i, o: h.update(x=o))
    logits = m(x)
    torch.testing.assert_close(logits, torch.nn.functional.rms_norm(h["x"], (32,)) @ m.tok_emb.weight.T)
    logits[:, :, 3].sum().backward()  # a head-only gradient reaches row 3 of the embedding even if no input is 3
    assert m.tok_emb.weight.grad[3].abs().sum() > 0
    assert m.flops_per_token() == _tiny(time_cond="none").flops_per_token()  # the head's matmul is still done


def test_a_cpu_load_lays_each_matmul_weight_out_transposed_with_the_same_values_and_logits(tmp_path):
    """checkpoint_manager.load_model on the CPU keeps every Linear weight (in, out) in memory (MKL multiplies a few rows
    by it ~2x faster: decoding, dev/LOG.md): the state_dict, the logits and a seeded KV-cached decode are the model's."""
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
