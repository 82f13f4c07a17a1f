"""Sample metrics (the bound is evals/bound.py): change rate, distinct-n, sample entropy, gen-PPL
under our own AR (same tokenizer: no retokenization), n-gram JS divergence.

    python scripts/eval.py artifacts/models/baby/model.pt --n-samples 8   # distinct-n, entropy"""
import math
from collections import Counter

import torch
import torch.nn.functional as F


class ChangeRate:
    """An on_step hook. .rate: of generated positions holding a token before a step, the fraction
    changed after it (re-masked or replaced); 0 for a sampler that never revisits."""

    def __init__(self, mask_id):
        self.mask_id, self.changed, self.seen = mask_id, 0, 0

    def __call__(self, st):
        held = st.gen_mask & (st.prev != self.mask_id)
        self.changed += (held & (st.prev != st.x)).sum().item()
        self.seen += held.sum().item()

    @property
    def rate(self):
        return self.changed / self.seen if self.seen else 0.0


def distinct_n(texts, n):
    """Unique / all word n-grams over texts (Li et al. 2016): distinct_n(['a b a b'], 2) = 2/3."""
    grams = [tuple(w[i:i + n]) for w in (t.split() for t in texts) for i in range(len(w) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def sample_entropy(rows):
    """Mean entropy (nats) of each sample's own token histogram: low when a sampler repeats itself
    (Zheng et al. 2024 / ReMDM; gen-PPL is read against it)."""
    ents = []
    for r in rows:
        p = torch.bincount(torch.as_tensor(r).flatten()).double()
        p = p[p > 0] / p.sum()
        ents.append(-(p * p.log()).sum().item())
    return sum(ents) / len(ents) if ents else float("nan")


@torch.no_grad()
def ar_nll(model, seqs, n_prompt):
    """-log p(seqs[:, j] | seqs[:, :j]) for j >= n_prompt >= 1, (B, S - n_prompt) float32 nats."""
    B, S = seqs.shape
    assert 1 <= n_prompt < S and S - 1 <= model.args.block_size, (n_prompt, S, model.args.block_size)
    was_training = model.training
    model.eval()
    logits = model(seqs[:, :-1])[:, n_prompt - 1:]  # (B, S - n_prompt, V): position j-1 predicts token j
    model.train(was_training)
    return F.cross_entropy(logits.float().flatten(0, 1), seqs[:, n_prompt:].flatten(), reduction="none").view(B, -1)


def windowed_ar_nll(model, seqs, n_prompt):
    """ar_nll past context W: windows of W + 1, each token scored once with >= W // 2 of context."""
    S, W = seqs.size(1), model.args.block_size
    if S - 1 <= W:
        return ar_nll(model, seqs, n_prompt)
    parts, done = [], n_prompt  # tokens before `done` are scored, or are the prompt
    while done < S:
        s = min(max(0, done - W // 2 - 1), S - W - 1)  # the window [s, s + W] scores tokens done..s+W
        parts.append(ar_nll(model, seqs[:, s:s + W + 1], done - s))
        done = s + W + 1
    return torch.cat(parts, 1)


def gen_ppl(scorer, seqs, n_prompt, batch_size=32):
    """(gen-PPL, nats/token) of seqs[:, n_prompt:] given what precedes, by a windowed AR scorer."""
    nll = torch.cat([windowed_ar_nll(scorer, seqs[i:i + batch_size], n_prompt)
                     for i in range(0, len(seqs), batch_size)])
    mean = nll.double().mean().item()
    return math.exp(mean), mean


def char_ngrams(texts, n):
    """{n-gram: count} of character n-grams, pooled over texts (none across two texts)."""
    return Counter(t[i:i + n] for t in texts for i in range(len(t) - n + 1))


def js_divergence(p, q):
    """Jensen-Shannon divergence (bits; 0 = same, 1 = disjoint) of two count dicts; nan if empty."""
    sp, sq = sum(p.values()), sum(q.values())
    if not sp or not sq:
        return float("nan")
    js = 0.0
    for k in set(p) | set(q):
        a, b = p.get(k, 0) / sp, q.get(k, 0) / sq
        m = (a + b) / 2
        js += (a * math.log2(a / m) if a else 0.0) / 2 + (b * math.log2(b / m) if b else 0.0) / 2
    return js


def ngram_js(texts, reference, ns=(1, 2, 3, 4)):
    """A distance to held-out text that repetition cannot game (Franca & Tong 2026 ask for one
    beside gen-PPL): ({n: JS of the samples' character n-grams from reference's}, their mean)."""
    js = {n: js_divergence(char_ngrams(texts, n), char_ngrams([reference], n)) for n in ns}
    return js, sum(js.values()) / len(js)
