"""A perfect denoiser: a character bigram chain fitted on Tiny Shakespeare's training split, whose
posterior of every [MASK] given all the visible characters is exact (forward-backward, float64),
behind the interface the samplers call on a network. Every sampler of the repo runs on it unchanged,
so what its samples get wrong is the sampler's alone (Tang et al. 2026, arXiv 2602.19619, "Is your
diffusion sampler actually correct?": an exact HMM posterior in place of the network).

    python dev/limit.py --help                # the limit it measures
    python -m pytest -q tests/test_oracle.py  # every sampler against the chain's joint

Three parts. MarkovChain: the chain, its exact joint, NLL, entropies and posteriors. Oracle: the
chain as a network, model(idx, t, positions=..., sc=...) -> float32 logits ([MASK] at -inf), with
model.args, a KV cache it reads as the Transformer does (a column's token as its key, its position
as its value, so the cached context is the sampler's own), and the Transformer's own generate.
reveal_law: the exact law of a sampler that reveals several positions a pass, each drawn from its
marginal given what is visible, enumerated for a short canvas: the reference the tests hold the
samplers to at k tokens a pass, and dev/limit.py's exact distances.

Placement: an instrument of the laboratory, as dev/order_nll.py is (issue 104 asks to keep it out of
the product's path); tests/test_oracle.py imports it, no user command needs it.
"""
import sys

if __name__ == "__main__":  # a module: run as a file, it names its command
    said = ("dev/oracle.py is the perfect denoiser dev/limit.py and tests/test_oracle.py load, not a command: run "
            "python dev/limit.py --help")
    asked = bool({"-h", "--help"} & set(sys.argv))
    print(said if asked else f"error: {said}", file=sys.stdout if asked else sys.stderr)
    sys.exit(0 if asked else 2)

import itertools  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from model import ModelArgs, Transformer  # noqa: E402
from utils.fileio import read_text  # noqa: E402
from utils.tokenizer import CharTokenizer  # noqa: E402

SHAKESPEARE = "data/tinyshakespeare.txt"
# add-alpha smoothing of the bigram counts: every transition possible (a network's sample is scored
# finitely), alpha chosen as the one of 3, 1, 0.3, 0.1, 0.03 that gives held-out text the lowest
# NLL (dev/LOG.md, "The limit", gives the command that prints each)
ALPHA = 1.0  # add-one (Laplace): held-out NLL 2.4819 nats/char, 0.6 the same, 0.1 2.4838, 3 2.4843


# ------------------------------------------------------------------------ the chain
class MarkovChain:
    """A stationary first-order chain over V symbols: P (V, V) float64 row-stochastic, pi its
    stationary law (the law of a window's first symbol, as training windows start anywhere)."""

    def __init__(self, P):
        self.P = P.double() / P.double().sum(1, keepdim=True)
        self.V = self.P.size(0)
        self.logP = self.P.log()
        pi = torch.full((self.V,), 1.0 / self.V, dtype=torch.float64)
        for _ in range(10_000):  # power iteration: pi P = pi
            nxt = pi @ self.P
            if (nxt - pi).abs().max() < 1e-15:
                break
            pi = nxt
        self.pi = nxt / nxt.sum()

    @classmethod
    def fit(cls, ids, V, alpha=ALPHA):
        """The bigram chain of a sequence of ids (N,) in 0..V-1, counts + alpha."""
        counts = torch.zeros(V * V, dtype=torch.float64)
        counts.index_add_(0, ids[:-1] * V + ids[1:], torch.ones(len(ids) - 1, dtype=torch.float64))
        return cls(counts.view(V, V) + alpha)

    def step_entropy(self):
        """h (V,): the entropy in nats of the next symbol after each symbol."""
        return -(self.P * self.logP).sum(1)

    def entropy_rate(self):
        """H = sum_a pi(a) h(a), nats a symbol: the NLL a symbol of the chain's own samples."""
        return float(self.pi @ self.step_entropy())

    def entropy(self, last, n):
        """The exact entropy (nats) of the n symbols after symbol `last`: sum_j mu_j h, mu_0 at
        `last`, mu_j = mu_{j-1} P."""
        mu = torch.zeros(self.V, dtype=torch.float64)
        mu[last] = 1.0
        h, total = self.step_entropy(), 0.0
        for _ in range(n):
            total += float(mu @ h)
            mu = mu @ self.P
        return total

    def nll(self, seqs, n_prompt):
        """-log p(seqs[:, n_prompt:] | seqs[:, :n_prompt]) (B,) float64, n_prompt >= 1."""
        steps = self.logP[seqs[:, :-1], seqs[:, 1:]]  # (B, L - 1): log P(x_{j-1}, x_j)
        return -steps[:, n_prompt - 1:].sum(1)

    def joint(self, last, n, after=None):
        """p of every n symbols after `last` (and before symbol `after`: an infill), (V ** n,)
        float64, in itertools.product's order."""
        seqs = torch.tensor(list(itertools.product(range(self.V), repeat=n)))
        full = torch.cat([torch.full((len(seqs), 1), last), seqs], 1)
        p = torch.exp(-self.nll(full, 1))
        if after is None:
            return p
        p = p * self.P[seqs[:, -1], after]
        return p / p.sum()

    def posterior(self, x, mask_id):
        """p(x_i | the visible symbols) (B, L, V) float64 at every position of x (B, L), [MASK] =
        unseen: forward-backward, each message rescaled to sum 1 (a visible position: one-hot)."""
        B, L = x.shape
        seen = x != mask_id
        e = torch.ones(B, L, self.V, dtype=torch.float64)  # the evidence of each position
        e[seen] = torch.nn.functional.one_hot(x[seen], self.V).double()
        fwd, bwd = torch.empty_like(e), torch.empty_like(e)
        f = self.pi * e[:, 0]
        fwd[:, 0] = f / f.sum(-1, keepdim=True)
        for i in range(1, L):  # alpha_i(b) = sum_a alpha_{i-1}(a) P(a, b) e_i(b)
            f = (fwd[:, i - 1] @ self.P) * e[:, i]
            fwd[:, i] = f / f.sum(-1, keepdim=True)
        bwd[:, L - 1] = 1.0
        for i in range(L - 2, -1, -1):  # beta_i(a) = sum_b P(a, b) e_{i+1}(b) beta_{i+1}(b)
            g = (bwd[:, i + 1] * e[:, i + 1]) @ self.P.T
            bwd[:, i] = g / g.sum(-1, keepdim=True)
        post = fwd * bwd
        return post / post.sum(-1, keepdim=True)


def shakespeare(alpha=ALPHA, path=SHAKESPEARE, val_fraction=0.1):
    """(the chain of the training split, the char tokenizer, the held-out ids): the split and the
    vocabulary as utils/dataloader.py makes them (the last val_fraction held out; every character
    of the text), so ids and [MASK] (the last id) match the shipped models'."""
    text = read_text(path, "the chain's text", f"give the path of {SHAKESPEARE}, or run from the repository root")
    cut = int(len(text) * (1 - val_fraction))
    tok = CharTokenizer(sorted(set(text)))
    ids = torch.tensor(tok.encode(text))
    return MarkovChain.fit(ids[:cut], len(tok.chars), alpha), tok, ids[cut:]


def held_out_nll(alpha):
    """The held-out text's NLL (nats/char) under the chain smoothed by alpha: how ALPHA was chosen."""
    chain, _, held = shakespeare(alpha)
    return float(chain.nll(held[None], 1)) / (len(held) - 1)


# ------------------------------------------------------------------------ the chain as a network
class Oracle(torch.nn.Module):
    """The chain behind a network's interface (vocabulary: its V symbols, then [MASK] = V). A column
    whose token is [MASK] gets the posterior of its position given the tokens it sees (attn_mask's,
    the cached ones included; all without a mask); a clean column, in a causal network (causal: the
    AR, clean_causal: bd3's --bd3_ar clean half), the next symbol's law P[token]; otherwise the
    posterior, a point mass on its token. Time and self-conditioning are unread."""

    generate = Transformer.generate  # nanoGPT's generate, the AR's sampler, run as it is

    def __init__(self, chain, block_size=256, causal=False, clean_causal=False):
        super().__init__()
        self.chain, self.mask_id = chain, chain.V
        self.args = ModelArgs(vocab_size=chain.V + 1, block_size=block_size, n_layer=1, n_head=1, n_embd=1,
                              time_cond="none", causal=causal, clean_causal=clean_causal)
        # read by model.new_kv_cache for the cache's dtype: float64 keeps tokens and positions exact
        self.tok_emb = torch.nn.Embedding(chain.V + 1, 1, dtype=torch.float64).requires_grad_(False)
        self.decode_cache, self.compiler, self.compiled = None, None, {}  # what model.generate reads

    def forward(self, idx, t=None, kv_cache=None, positions=None, attn_mask=None, rope_pos=None, head_cols=None,
                sc=None):
        """Float32 logits (B, C, V + 1) of idx (B, C), [MASK] at -inf; (N, V + 1) at flat
        `positions`; the first head_cols columns. The Transformer's arguments, read as it reads
        them."""
        B, C = idx.shape
        pos = torch.arange(C) if rope_pos is None else rope_pos.long().cpu()
        keys, kpos = idx, pos.expand(B, C)
        if kv_cache is not None:  # the cached columns, then this pass's: (B, K)
            k, v = kv_cache.update(idx[:, None, :, None].double(), kpos[:, None, :, None].double())
            keys, kpos = k[:, 0, :, 0].long(), v[:, 0, :, 0].long()
        seen = torch.ones(C, keys.size(1), dtype=torch.bool) if attn_mask is None else attn_mask.bool().cpu()
        probs = torch.zeros(B, C, self.chain.V, dtype=torch.float64)
        nxt = (idx != self.mask_id) & (self.args.causal or self.args.clean_causal)  # next-symbol columns
        probs[nxt] = self.chain.P[idx[nxt]]
        if not nxt.all():
            self._posteriors(probs, ~nxt, keys, kpos, seen, pos)
        logits = torch.cat([probs.log(), torch.full_like(probs[..., :1], -math.inf)], -1).float()
        if positions is not None:
            return logits.flatten(0, 1)[positions]
        return logits if head_cols is None else logits[:, :head_cols]

    def _posteriors(self, probs, want, keys, kpos, seen, pos):
        """probs[:, c] = the posterior at pos[c] given the tokens column c sees, where want (B, C):
        one forward-backward a distinct row of seen (C, K), over the positions 0..the last one."""
        rows, group = torch.unique(seen.to(torch.uint8), dim=0, return_inverse=True)
        for g, row in enumerate(rows.bool()):
            cols = (group == g).nonzero().squeeze(1)
            visible = row[None] & (keys != self.mask_id)  # (B, K)
            L = int(max(kpos.max(), pos[cols].max())) + 1
            canvas = torch.full((keys.size(0), L + 1), self.mask_id, dtype=torch.long)  # column L: a bin
            canvas.scatter_(1, torch.where(visible, kpos, L), torch.where(visible, keys, self.mask_id))
            post = self.chain.posterior(canvas[:, :L], self.mask_id)[:, pos[cols]]  # (B, n, V)
            probs[:, cols] = torch.where(want[:, cols, None], post, probs[:, cols])


# ---------------------------------------------------------------- the law of k tokens a pass
def score_of(mu, cand, order):
    """The ranking score (N, m) of the m masked positions of N candidate tuples (higher first):
    diffusion.position_scores' rule, stated plainly. mu (m, V) their marginals, cand (N, m)."""
    if order == "confidence":
        return mu[torch.arange(mu.size(0)), cand]  # the drawn candidate's probability: selects on the draw
    if order == "margin":
        top = mu.topk(2, dim=-1).values
        return (top[:, 0] - top[:, 1]).expand(len(cand), -1)
    if order == "entropy":
        h = -(mu * mu.clamp(min=1e-300).log()).sum(-1)
        return torch.exp(-h).expand(len(cand), -1)
    if order == "l2r":
        return (1.0 / (1.0 + torch.arange(mu.size(0), dtype=torch.float64))).expand(len(cand), -1)
    raise ValueError(order)


def revealed_sets(mu, cand, rule, keep):
    """[(revealed (N, m) bool, chance)] of one pass over N candidate tuples: the positions a rule
    reveals, and that set's chance when it is drawn apart from the tuple (random order, ancestral
    coins). rule: dict(kind=order|threshold|entropy_bound|ancestral, ...); keep: [MASK]s left."""
    N, m = cand.shape
    kind = "random" if rule.get("order") == "random" else rule["kind"]
    if kind in ("random", "ancestral"):
        out = []
        for bits in itertools.product((False, True), repeat=m):
            r = sum(bits)
            if kind == "random" and r != m - keep:
                continue
            chance = 1.0 / math.comb(m, r) if kind == "random" else rule["p"] ** r * (1 - rule["p"]) ** (m - r)
            if chance > 0:  # (the ancestral's last step reveals every position)
                out.append((torch.tensor(bits).expand(N, m), chance))
        return out
    score = score_of(mu, cand, rule.get("order", kind))
    if kind == "threshold":  # every score above it, and the best
        best = torch.nn.functional.one_hot(score.argmax(1), m).bool()
        return [((score > rule["value"]) | best, 1.0)]
    if kind == "entropy_bound":  # the longest prefix, best first, with sum H - max H <= the bound
        ranked = score.argsort(dim=1, descending=True, stable=True)
        h = (-(mu * mu.clamp(min=1e-300).log()).sum(-1))[ranked]  # (N, m) in rank order
        fits = h.cumsum(1) - h.cummax(1).values <= rule["value"]
        return [(torch.zeros(N, m, dtype=torch.bool).scatter(1, ranked, fits), 1.0)]
    stay = score.argsort(dim=1, stable=True).argsort(1) < keep  # the `keep` lowest stay [MASK]
    return [(~stay, 1.0)]


def reveal_law(chain, last, n, rule, plan=None, after=()):
    """The exact law (V ** n,) of a sampler's n symbols after symbol `last` (and before the symbols
    `after`: an infill), in product order: a pass draws a candidate at every [MASK] from its
    posterior given the visible symbols, reveals the rule's positions with their candidates, and the
    next pass reads them. plan: [MASK]s left after each pass (a fixed count, as denoise's plan);
    None: adaptive (threshold, entropy_bound) or ancestral (rule['p'] per pass, a list). Enumerated
    pass by pass over the V ** m candidate tuples of the m [MASK]s. Returns (the law, the expected
    passes: the chance each pass runs, summed)."""
    V, mask = chain.V, chain.V
    level = {(mask,) * n: 1.0}
    law = torch.zeros(V ** n, dtype=torch.float64)
    digit = V ** torch.arange(n - 1, -1, -1)  # a sequence's index in the law: its symbols as base-V digits
    step, passes = 0, 0.0
    while level:
        nodes = list(level)
        passes += sum(level.values())  # the chance this pass runs
        post = chain.posterior(torch.tensor([[last, *v, *after] for v in nodes]), mask)[:, 1:n + 1]  # (nodes, n, V)
        nxt = {}
        for node, mu_all in zip(nodes, post):
            masked = [i for i in range(n) if node[i] == mask]
            mu = mu_all[masked]  # (m, V)
            if len(masked) == 1 and rule["kind"] != "ancestral":  # every rule reveals the last one: its marginal
                base = sum(s * int(digit[i]) for i, s in enumerate(node) if s != mask)
                law[base + torch.arange(V) * digit[masked[0]]] += mu[0] * level[node]
                continue
            cand = torch.tensor(list(itertools.product(range(V), repeat=len(masked))))  # (N, m)
            w = mu[torch.arange(len(masked)), cand].prod(1) * level[node]  # (N,) each tuple's chance
            one = dict(rule, p=rule["p"][step]) if rule["kind"] == "ancestral" else rule
            keep = None if plan is None else plan[step]
            for shown, chance in revealed_sets(mu, cand, one, keep):
                _move(nxt, node, masked, cand, shown, w * chance)
        level = {}
        for node, weight in nxt.items():
            if mask in node:
                level[node] = weight
            else:
                law[int((torch.tensor(node) * digit).sum())] += weight
        step += 1
    return law, passes


def _move(nxt, node, masked, cand, shown, w):
    """Add each tuple's weight w (N,) to the node it leads to: node with its shown (N, m) candidates
    in place of their [MASK]s."""
    V = int(cand.max()) + 2 if cand.numel() else 2
    code = torch.where(shown, cand + 1, 0)  # 0: still [MASK]
    key = (code * (V ** torch.arange(code.size(1)))).sum(1)
    keys, inverse = torch.unique(key, return_inverse=True)
    total = torch.zeros(len(keys), dtype=torch.float64).index_add_(0, inverse, w)
    mask = node[masked[0]]
    for k, weight in zip(keys.tolist(), total.tolist()):
        child = list(node)
        for j, i in enumerate(masked):
            digit = k // V ** j % V
            child[i] = mask if digit == 0 else digit - 1
        child = tuple(child)
        nxt[child] = nxt.get(child, 0.0) + weight


def distances(law, joint, n):
    """TV(q, p) of the n symbols, and per symbol KL(q || p), H(p) - H(q) (the entropy deficit) and
    the excess NLL E_q[-log p] - H(p) = KL - deficit, of a sampler's law q against the chain's p."""
    q, p = law, joint
    h_p = float(-(p * p.log()).sum())
    h_q = float(-(q[q > 0] * q[q > 0].log()).sum())
    kl = float((q[q > 0] * (q[q > 0].log() - p[q > 0].log())).sum())
    return dict(tv=float((q - p).abs().sum()) / 2, kl=kl / n, deficit=(h_p - h_q) / n,
                excess=float(-(q * p.log()).sum() - h_p) / n)
