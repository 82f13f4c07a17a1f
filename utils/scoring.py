"""Score text under an autoregressive checkpoint: per-token NLL of a continuation given its prefix.

Generative perplexity (utils.metrics.gen_ppl, scripts/eval.py) is exp(mean of these NLLs) over
generated tokens, with our own AR baseline as the scorer: same data, same tokenizer, no
retokenization.

    python -c "from utils.scoring import ar_nll; help(ar_nll)"
"""
import torch
import torch.nn.functional as F


@torch.no_grad()
def ar_nll(model, seqs, n_prompt):
    """-log p(seqs[:, j] | seqs[:, :j]) in nats for j >= n_prompt, under a causal model.
    seqs (B, S) long with 1 <= n_prompt < S and S - 1 <= block_size. Returns (B, S - n_prompt) float32."""
    B, S = seqs.shape
    if not 1 <= n_prompt < S:
        raise ValueError(f"n_prompt={n_prompt} must be in [1, {S - 1}]: the first token has no context to be scored on")
    if S - 1 > model.args.block_size:
        raise ValueError(f"sequence of {S} tokens needs a scorer context of {S - 1}, more than block_size {model.args.block_size}")
    was_training = model.training
    model.eval()
    logits = model(seqs[:, :-1])[:, n_prompt - 1:]  # (B, S - n_prompt, V): position j-1 predicts token j
    model.train(was_training)
    target = seqs[:, n_prompt:]
    return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), target.reshape(-1), reduction="none").view(B, -1)
