"""A draft tree for `baby_bd3`'s self-speculative rounds (issue 95, part 2), kept as an instrument: on
this CPU it was level with one drafted block a round, so it left the product (dev/LOG.md, "A draft
tree for baby_bd3's self-speculative rounds"). Inside `with tree_rounds(k):` bd3.sample_clean_ar's
drafting rounds (batch 1, eager) propose k candidates at the first drafted position instead of one:
the spine is bd3._draft_round's drafts, and beside each spine draft its siblings, drawn from the same
law q without replacement (tree_widths: k at the first position, half as many at each next). A
sibling is a clean column that sees the text, the newest token and the spine before it (a tree
attention mask, positions by depth), so one pass gives every candidate's next-token law; the noisy
states follow the spine alone. A kept sibling is a leaf: the round ends with it and a token drawn
from its own column's law. Every token is the clean half's (tests/test_draft_tree.py).

    python dev/spec_rounds.py artifacts/weights/baby_bd3 --ar artifacts/weights/baby_ar --tree 1,2,3,4
    python dev/draft_ceiling.py artifacts/weights/baby_bd3 --tree 4
"""
import contextlib
import os
import sys
from functools import lru_cache

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import bd3  # noqa: E402
from diffusion import no_mask_logit  # noqa: E402
from utils.draws import draw, uniforms  # noqa: E402


def accept_among(p, q, cands, u):
    """Recursive rejection sampling over candidates drawn in turn from q without replacement
    (Recursive Speculative Decoding, Jeon et al. 2024, Alg. 2; with replacement it is SpecInfer's
    multi-step speculative sampling, Miao et al. 2023, Thm 4.2): candidate i is kept when
    u_i q_i(c_i) < p_i(c_i), q_i being q without c_1..c_(i-1), renormalised; after a rejection
    the target becomes p_(i+1) = max(0, p_i - q_i) / its sum. So the kept token, or one drawn
    from the last residual, is p-distributed. p, q (V,) float64 numpy laws; cands: ints; u: floats.
    Returns (the index kept or None, the law to draw from when none is)."""
    for i, c in enumerate(cands):
        if u[i] * q[c] < p[c]:
            return i, None
        resid = np.maximum(p - q, 0.0)
        if resid.sum() > 0:  # (p = q keeps every candidate: no residual is ever drawn from)
            p = resid / resid.sum()
        q = q.copy()
        q[c] = 0.0  # the next candidate's law: q without the ones drawn before it
        if q.sum() > 0:
            q = q / q.sum()
    return None, p


def tree_widths(k, kd):
    """Candidates at each of kd drafted positions: k at the first, then half as many (rounded up)
    each position further, so the tree branches where a draft is most often checked."""
    return [max(1, -(-k // 2 ** j)) for j in range(kd)]


def draw_siblings(q, drafts, k, generator):
    """Each spine draft's siblings (tree_widths(k, kd)[j] - 1 at position j), drawn from its law
    q (kd, V) numpy without replacement, the spine's draft excluded: the Gumbel-top-k trick (Vieira
    2014; Kool et al. 2019), whose order is that of drawing one at a time. Fewer where q has fewer
    tokens. drafts: the spine's (kd ints). Returns [[int]] a position."""
    widths = tree_widths(k, len(drafts))
    rest = q.copy()
    rest[range(len(drafts)), drafts] = 0.0
    u = uniforms(rest.shape, generator, "cpu").numpy()
    with np.errstate(divide="ignore"):
        keys = np.log(rest) - np.log(-np.log(u))  # log q + Gumbel noise; -inf where q is 0
    order = np.argsort(-keys, -1)[:, :max(widths) - 1]
    return [[int(c) for c in order[j, :w - 1] if keys[j, c] > -np.inf] for j, w in enumerate(widths)]


@lru_cache(maxsize=1024)
def tree_layout(n0, sb, cols, n, W, keys, device, depths):
    """bd3.round_layout's (pos, mask, known) with siblings as clean columns after the spine's kd
    drafts: the one at depth j (position n0 + 1 + j) sees what spine draft j sees but itself
    instead of it, and no other column sees a sibling. depths: each sibling's j, in order."""
    kd, ns = cols[1], len(depths)
    pos, mask, known = bd3.cached_layout(n0, sb, cols, n, W, keys - ns, device)
    at = 1 + kd  # the first sibling's column
    C = len(pos) + ns
    kept = torch.cat([torch.arange(at), torch.arange(at + ns, C)]).to(device)  # the round's columns, moved
    full = torch.zeros(C, n0 + C, dtype=torch.bool, device=device)
    full[kept[:, None], torch.cat([torch.arange(n0, device=device), n0 + kept])[None]] = mask
    for i, j in enumerate(depths):
        full[at + i] = full[1 + j]
        full[at + i, n0 + 1 + j] = False
        full[at + i, n0 + at + i] = True
    sib_pos = n0 + 1 + torch.tensor(depths, dtype=torch.long, device=device)
    return torch.cat([pos[:at], sib_pos, pos[at:]]), full, known


def outcomes_of(S, kd, e, end, n, lo, W):
    """bd3._draft_round's outcomes (the round's newest token r, with kd drafts from S in the block
    ending at e) that need a state, its in-block states, and whether the next block drafts."""
    outcomes = [r for r in range(S, S + kd + 1) if r + 1 < end and (r < e - 1 or e + n - lo <= W)]
    states = tuple(r for r in outcomes if r < e - 1)
    return outcomes, states, states != tuple(outcomes)


def tree_round(model, s, end, fill, mask_id, opts, generator, k):
    """bd3._draft_round with k candidates at the first drafted position (batch 1, s.q drawn from):
    the spine's drafts and their siblings in one pass, checked by walk_tree. Returns (kept, q,
    laws) as it does."""
    S, n, W = s.seq.size(1), fill.size(1), model.args.block_size
    sb = s.lo + (S - s.lo) // n * n
    e = sb + n
    q = s.q[:, S - sb:min(e, end) - sb]  # (1, kd, V) the drafts' laws
    drafts = draw(q, generator)
    kd = drafts.size(1)
    q_host = q[0].cpu().numpy()
    sibs = draw_siblings(q_host, drafts[0].tolist(), k, generator)
    depths = tuple(j for j, cs in enumerate(sibs) for _ in cs)  # each sibling's position past S
    outcomes, states, nxt = outcomes_of(S, kd, e, end, n, s.lo, W)
    n0, ns = S - 1 - s.lo, len(depths)
    s.kv.end += 1 + kd + ns + n * (len(states) + nxt)
    pos, mask, known = tree_layout(n0, sb - s.lo, (S - sb, kd, kd, len(states), nxt), n, W, s.kv.end,
                                   fill.device, depths)
    block = torch.cat([s.seq[:, sb:], drafts, fill], 1)[:, None, :n]
    noisy = torch.where(known, block, mask_id).flatten(1)
    sib_ids = torch.tensor([[c for cs in sibs for c in cs]], dtype=torch.long, device=fill.device)
    ids = torch.cat([s.seq[:, -1:], drafts, sib_ids, noisy, fill[:, :n * nxt]], 1)
    logits = no_mask_logit(model(ids, kv_cache=s.kv, rope_pos=pos, attn_mask=mask), mask_id)
    p = bd3.probs(logits[0, :1 + kd + ns], opts)  # (1 + kd + ns, V): the newest's, the spine's, the siblings'
    new, rows, sib = walk_tree(p.cpu().numpy(), q_host, drafts[0].tolist(), sibs, end - S, generator)
    if sib is not None and len(new) > sib[0] + 1:  # a kept sibling, then a token: its keys follow the spine's
        move_column(s.kv, n0 + 1 + kd + sib[1], n0 + 1 + sib[0])
    s.kv.reset(n0 + len(new))  # the newest token and the kept candidates
    law = p[rows][None]  # what each new token was drawn from
    r = S + len(new) - 1  # the newest token: the next round drafts from its outcome's state
    if sib is not None:
        # a kept sibling has no state: the next round drafts from the spine's state that knows
        # the text before the sibling, in its block, or else from the next block's, which saw the
        # spine's draft where the sibling is (any law known before a round may draft: exact)
        r = S + sib[0] if r + 1 < e else e - 1
    new = torch.tensor([new], dtype=torch.long, device=fill.device)
    if r not in outcomes:
        return new, None, law
    c = 1 + kd + ns + n * (r - S) if r in states else ids.size(1) - n  # (else the next block's, all [MASK])
    return new, bd3.probs(logits[:, c:c + n], opts), law


def walk_tree(p, q, drafts, sibs, left, generator):
    """A tree round's check from the newest token: at each drafted position j the spine's draft
    and its siblings by accept_among against p[j]. The spine's draft kept walks on; a sibling kept
    ends the round with a token from its own column's law; none kept, with one from the residual;
    the spine kept to its end, with the bonus token from p[kd]. No token from `left` (end - S) on.
    p (1 + kd + ns, V): the pass's clean laws, by column; q (kd, V). Returns (tokens, p's row each
    was drawn from, (j, the kept sibling's index among all siblings) or None)."""
    kd, k = len(drafts), 1 + max(map(len, sibs), default=0)
    u = uniforms((kd * k + 1,), generator, "cpu").numpy()  # each check's, then the last token's
    new, row = [], 1 + kd  # row: p's row of position j's first sibling
    for j in range(kd):
        cands = [drafts[j], *sibs[j]]
        i, resid = accept_among(p[j], q[j], cands, u[j * k:j * k + len(cands)])
        if i is None:
            return new + [draw_one(resid, u[-1])], list(range(j + 1)), None
        new.append(cands[i])
        if i > 0:  # a sibling, a leaf: the token after it from its own column's law
            at = row + i - 1
            if j + 1 < left:
                return new + [draw_one(p[at], u[-1])], [*range(j + 1), at], (j, at - 1 - kd)
            return new, list(range(j + 1)), (j, at - 1 - kd)
        row += len(sibs[j])
    if kd < left:  # every draft kept: the bonus token
        new.append(draw_one(p[kd], u[-1]))
    return new, list(range(len(new))), None


def draw_one(law, u):
    """utils.draws.draw_at's token from a numpy law (V,) and its uniform u: the first index whose
    cumulative mass passes u times the total (inverse CDF)."""
    c = np.cumsum(law)
    return min(int(np.searchsorted(c, u * c[-1], side="right")), len(law) - 1)


def move_column(kv, src, dst):
    """The cache's keys and values at column src copied to column dst, in every layer."""
    for k, v in zip(kv.k, kv.v):
        k[:, :, dst] = k[:, :, src]
        v[:, :, dst] = v[:, :, src]


@contextlib.contextmanager
def tree_rounds(k):
    """Inside, bd3.sample_clean_ar's eager drafting rounds (batch 1) are tree rounds of k candidates
    at the first drafted position; a round with nothing to draft from stays bd3's plain one."""
    plain = bd3._draft_round

    def round_(model, s, end, fill, mask_id, opts, generator):
        if s.q is None or k == 1:
            return plain(model, s, end, fill, mask_id, opts, generator)
        assert s.seq.size(0) == 1, "a draft tree is checked at batch 1"
        return tree_round(model, s, end, fill, mask_id, opts, generator, k)
    bd3._draft_round = round_
    try:
        yield
    finally:
        bd3._draft_round = plain
