"""Reverse samplers for masked diffusion (one loop, a few orthogonal switches) and AR decoding with a KV cache.

sample() denoises the positions of a canvas marked in gen_mask (a continuation, infill blanks, anything)
and never touches the rest. Its switches, each a key of config.py's sampling section:

    order            which masked positions are revealed first: confidence | margin | entropy | random
    tokens_per_step  how many per step: schedule (the diffusion schedule's 1 - alpha(t)) | linear (LLaDA) | cosine (MaskGIT)
    remask           refine (reference: least confident committed tokens go back to [MASK]) | none (LLaDA) | remdm (ReMDM)
    threshold        Fast-dLLM: commit every masked position scoring above it, at least one per step; NFE adaptive
    block_length     (config.py: semi_ar_length) semi-autoregressive blocks, left to right (LLaDA); a canvas
                     longer than the model's context slides a window that keeps the last block_size tokens

    python -c "from sampler import time_grid; print(time_grid(100, 8))"
    python inference.py --checkpoint artifacts/models/model.pt --threshold 0.9 --semi-ar-length 32
"""
import math
import time

import torch

from diffusion import predict_logits

ORDERS = ("confidence", "margin", "entropy", "random")
TOKENS_PER_STEP = ("schedule", "linear", "cosine")
REMASKS = ("refine", "none", "remdm")


def filter_logits(logits, temperature=1.0, top_k=0, top_p=1.0):
    """Temperature, top-k and top-p (nucleus) on float64 logits (..., V). Returns log-probabilities."""
    logits = logits.double()
    if temperature > 0:
        logits = logits / temperature
    if top_k and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) >= top_p  # keep the smallest prefix whose mass reaches top_p
        drop[..., 0] = False
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits.log_softmax(-1)


def sample_tokens(logp, temperature, generator=None):
    """Draw one token per position from float64 log-probs (..., V); argmax when temperature == 0.
    float64 matters: float32 categorical sampling quietly lowers the temperature (Zheng et al. 2024)."""
    if temperature == 0 or logp.numel() == 0:
        return logp.argmax(-1)
    probs = logp.exp().reshape(-1, logp.size(-1))
    draws = torch.multinomial(probs.cpu(), 1, generator=generator).to(logp.device)
    return draws.view(logp.shape[:-1])


def time_grid(T, steps):
    """Integer times T = t_0 > t_1 > ... > t_steps = 0 for `steps` reverse steps."""
    grid = torch.round(torch.linspace(T, 0, steps + 1, dtype=torch.float64)).long()
    assert len(torch.unique(grid)) == steps + 1, "steps must be <= T"
    return grid.tolist()


def time_for_fraction(schedule, frac):
    """The time t in 1..T whose mask probability 1 - alpha(t) is nearest to frac (B,): what a time-conditioned
    model is told when the canvas's masked fraction is off the grid (the index must mean the training mask rate)."""
    mp = 1.0 - schedule.alpha[1:].to(frac.device)  # (T,) increasing in t
    return (mp[None, :] - frac.double()[:, None]).abs().argmin(1) + 1


def masked_fraction(tokens_per_step, schedule, grid, i, steps):
    """Fraction of a block still masked after step i (0-based) of `steps`; 0 after the last step."""
    r = (i + 1) / steps
    if tokens_per_step == "schedule":
        return 1.0 - schedule.alpha[grid[i + 1]].item()
    if tokens_per_step == "linear":
        return 1.0 - r  # LLaDA: the same number of tokens every step
    return math.cos(0.5 * math.pi * r)  # MaskGIT (Chang et al. 2022): few tokens early, many late


def reveal_plan(n, fractions):
    """Positions still masked after each step, (B, S) long, for blocks of n (B,) positions: round(n * f_i) for
    the step's masked fraction f_i (f_S = 0), moved just enough that every step reveals at least one token.
    Rounding alone leaves empty passes: the cosine schedule keeps all n masked for the first steps (1 - alpha
    is ~1 near T) and none for the last ones (~0 near 0): 16 tokens in 48 steps ran out 3-9 steps early.
    Needs S <= n (one token per step at least); a row with fewer positions reveals them as early as it can."""
    S = len(fractions)
    f = torch.tensor(fractions, dtype=torch.float64)
    base = n[:, None] - torch.round(n[:, None].double() * f[None]).long()  # revealed after step i, (B, S)
    i = torch.arange(1, S + 1)
    # r_i = max(base_i, r_{i-1} + 1) with r_0 = 0, in closed form; then leave one token for each later step
    r = i + torch.cummax(base - i, dim=1).values.clamp(min=0)
    cap = torch.where(n[:, None] >= S, n[:, None] - (S - i), n[:, None])  # short rows: no tokens to spare
    r = torch.minimum(r, cap)
    return n[:, None] - r


def position_scores(logp, cand, order, generator=None):
    """logp (N, V) float64 filtered log-probs at the N positions being decided, cand (N,) their drawn tokens.
    Returns (confidence p(cand) (N,), ranking score (N,) in [0, 1]: higher is revealed first)."""
    p = logp.exp()
    conf = p.gather(-1, cand[:, None]).squeeze(-1)
    if order == "confidence":  # MaskGIT; LLaDA's low-confidence remasking
        return conf, conf
    if order == "margin":  # top-1 minus top-2 probability (Kim et al. 2025, "Train for the worst...")
        top = p.topk(min(2, p.size(-1)), dim=-1).values
        return conf, top[:, 0] - (top[:, 1] if top.size(1) > 1 else 0.0)
    if order == "entropy":  # exp(-H): 1 for a certain prediction, 1/V for a uniform one (Dream 7B)
        ent = -torch.where(p > 0, p * logp, torch.zeros_like(p)).sum(-1)
        return conf, torch.exp(-ent)
    # random: with schedule counts and remask='none' this is ancestral sampling with the count fixed (MDLM)
    return conf, torch.rand(len(cand), generator=generator, dtype=torch.float64).to(logp.device)


def check_options(steps, temperature, order, tokens_per_step, remask, remask_eta, threshold, block_length):
    """The switches' domains, asserted: config.validate gives users the messages (it imports the lists above)."""
    assert order in ORDERS and tokens_per_step in TOKENS_PER_STEP and remask in REMASKS, (order, tokens_per_step, remask)
    assert temperature >= 0 and 0 <= remask_eta <= 1 and 0 <= threshold <= 1 and block_length >= 0 and steps >= 1
    assert not (threshold > 0 and (order == "random" or remask == "remdm")), "threshold ranks by a score, never re-masks"


def _window(now, L, W):
    """Columns [lo, hi) the model sees while decoding the block `now` (B, L): the whole canvas when it fits,
    else the W positions ending at the block's last one (a sliding window keeping the latest context)."""
    if L <= W:
        return 0, L
    cols = now.any(0).nonzero().squeeze(1)
    first, last = cols.min().item(), cols.max().item() + 1
    lo = max(0, last - W)
    if first < lo:
        raise ValueError(f"a block spans {last - first} positions, more than the model's context of {W}")
    return lo, lo + W


@torch.no_grad()
def sample(model, x, gen_mask, schedule, mask_id, steps, temperature=1.0, top_k=0, top_p=1.0,
           remask="refine", generator=None, on_step=None, *, order="confidence", tokens_per_step="schedule",
           remask_eta=0.0, threshold=0.0, block_length=0):
    """Reverse process over a batch. x (B, L): the canvas; positions where gen_mask (B, L) is True are
    generated (start as [MASK]); all others are fixed text and never change.

    Step mode (threshold == 0): `steps` passes split over the blocks (at most one per position); after step i
    the lowest-scored round(n * f(i)) of a block's n positions stay masked (f: tokens_per_step; reveal_plan
    keeps >= 1 reveal per step). remask='refine' (reference): a committed token keeps its commit score and
    goes back to [MASK] if newer candidates score higher; 'none' (LLaDA): committed tokens are final; 'remdm'
    (ReMDM, Wang et al. 2025): each committed token is re-masked w.p. remask_eta (at most as many as stay
    masked). With schedule counts a block's last step (into t = 0) is the reference's greedy pass.
    Threshold mode (Fast-dLLM, Wu et al. 2025): each step commits every masked position scoring above
    `threshold`, at least the best one; committed tokens are final.
    The model is told the t whose 1 - alpha(t) matches the masked fraction of the whole window it sees
    (given text counts as visible): what t meant in training. A sample takes part in a step only if the
    step reveals one of its tokens (threshold mode: until it is finished). on_step(dict) is called after every step with: step, t and s (the block's grid times,
    None when counts do not follow the grid), time (B,) told the model, x, prev, revealed, remasked, conf,
    is_masked_before, gen_mask (all (B, L)), logp (N, V) at the positions decided, nfe (B,), block, n_blocks,
    last (no [MASK] left anywhere), finished (per sample: it takes part in no further step).
    Returns (x with no [MASK] at generated positions, stats): nfe (batched forward passes), nfe_per_sample,
    seconds_per_sample (until the sample's last [MASK] was filled), seconds, blocks."""
    check_options(steps, temperature, order, tokens_per_step, remask, remask_eta, threshold, block_length)
    B, L = x.shape
    W, dev, t0 = model.args.block_size, x.device, time.perf_counter()
    gen_mask = gen_mask.bool()
    mask_tok = torch.full_like(x, mask_id)
    x = torch.where(gen_mask, mask_tok, x)
    # semi-AR blocks: the k-th generated position of a row (left to right) is in block k // block_length
    block_of = torch.where(gen_mask, (gen_mask.long().cumsum(1) - 1) // (block_length or L), -1)  # (B, L)
    last_block = block_of.max(1).values.tolist()  # per sample
    n_blocks = max(last_block) + 1
    if L > W and not (block_length and (gen_mask == gen_mask[:1]).all()):
        raise ValueError(f"a canvas of {L} tokens exceeds the model's context of {W}: decode it in blocks "
                         f"(block_length) with the same generated positions in every row")
    if not threshold and steps < n_blocks:
        raise ValueError(f"{steps} steps cannot decode {n_blocks} blocks: need at least one step per block")
    block_steps = [steps // max(n_blocks, 1) + (b < steps % max(n_blocks, 1)) for b in range(n_blocks)]
    conf = torch.zeros(B, L, dtype=torch.float64, device=dev)  # p(token) when committed: the trace's colour
    kept = torch.zeros_like(conf)  # its ranking score when committed: what 'refine' compares new candidates with
    nfe = torch.zeros(B, dtype=torch.long)
    done_at = [0.0] * B
    step = 0
    for b in range(n_blocks):
        now = block_of == b  # (B, L) this block's positions
        lo, hi = _window(now, L, W)
        n_now = now.sum(1)  # (B,)
        S = min(block_steps[b], int(n_now.max()))  # no step without a token to reveal
        grid = time_grid(schedule.T, S) if tokens_per_step == "schedule" and not threshold else None
        if not threshold:
            keep_after = reveal_plan(n_now.cpu(), [masked_fraction(tokens_per_step, schedule, grid, j, S)
                                                   for j in range(S)]).to(dev)  # (B, S)
        i = 0
        while True:
            is_masked = (x == mask_id) & now
            if (i == S) if not threshold else not is_masked.any():
                break
            # the samples in this forward: those with a token to reveal now (no pass that cannot change them)
            todo = is_masked.sum(1) > keep_after[:, i] if not threshold else is_masked.any(1)
            rows = todo.nonzero().squeeze(1)
            # the time index means what it meant in training: the mask rate of the whole window the model
            # sees (given text counts as visible), not of the generated positions only
            frac = (x[rows, lo:hi] == mask_id).double().mean(1)
            tm = time_for_fraction(schedule, frac)
            dec = is_masked & todo[:, None]  # (B, L) the positions decided this step
            sel = dec[rows, lo:hi]  # (R, W)
            logits = predict_logits(model, x[rows, lo:hi], tm, mask_id, positions=sel)
            if logits.dim() == 3:  # a model without the positions= shortcut returned (R, W, V)
                logits = logits[sel]
            logp = filter_logits(logits, temperature, top_k, top_p)  # (N, V) float64
            final = grid is not None and i == S - 1
            cand = sample_tokens(logp, 0.0 if final else temperature, generator)  # (N,)
            c_conf, c_score = position_scores(logp, cand, order, generator)
            # scatter back to the canvas (row-major order, as logits[sel] was gathered)
            cand_full = x.clone()
            cand_full[dec] = cand
            score_new = torch.full_like(conf, math.inf)  # +inf: never chosen to stay masked
            score_new[dec] = c_score
            conf_new = conf.clone()
            conf_new[dec] = c_conf
            committed = now & ~is_masked
            if threshold:
                commit = is_masked & (score_new > threshold)
                best = score_new.masked_fill(~is_masked, -1.0).argmax(1)  # at least one per sample: the best
                commit[rows, best[rows]] = True
                stay = is_masked & ~commit
            else:
                n_keep = keep_after[:, i]
                if remask == "refine":
                    score_new = torch.where(committed, kept, score_new)
                elif remask == "remdm" and remask_eta > 0:
                    u = torch.rand(B, L, generator=generator, dtype=torch.float64).to(dev)
                    u = u.masked_fill(~committed, 2.0)
                    # each committed token w.p. eta, at most n_keep: those with the smallest u (a random subset)
                    forced = (u < remask_eta) & (u.argsort(1).argsort(1) < n_keep[:, None])
                    score_new = score_new.masked_fill(forced, -math.inf)
                stay = score_new.argsort(1).argsort(1) < n_keep[:, None]  # rank 0 = lowest score
                stay = torch.where(todo[:, None], stay, is_masked)  # a sample sitting this step out is unchanged
            revealed, remasked = is_masked & ~stay, committed & stay
            prev = x
            x = torch.where(stay, mask_tok, torch.where(revealed, cand_full, x))
            conf = torch.where(revealed, conf_new, conf).masked_fill(remasked, 0.0)
            kept = torch.where(revealed, score_new, kept)
            nfe[rows.cpu()] += 1
            step, i = step + 1, i + 1
            left = ((x == mask_id) & gen_mask).any(1).tolist()
            for r in range(B):
                if not left[r] and not done_at[r]:
                    done_at[r] = time.perf_counter() - t0
            if on_step is not None:
                tfull = torch.zeros(B, dtype=torch.long, device=dev)
                tfull[rows] = tm
                on_step(dict(step=step, t=grid[i - 1] if grid else None, s=grid[i] if grid else None, time=tfull,
                             x=x, prev=prev, revealed=revealed, remasked=remasked, conf=conf, logp=logp,
                             is_masked_before=(prev == mask_id) & gen_mask, gen_mask=gen_mask, nfe=nfe.clone(),
                             block=b, n_blocks=n_blocks, last=not any(left),
                             finished=[not left[r] if threshold else i == S and b >= last_block[r] for r in range(B)]))
    assert not ((x == mask_id) & gen_mask).any(), "sampler left a [MASK]"
    return x, dict(nfe=step, nfe_per_sample=nfe.tolist(), seconds_per_sample=done_at,
                   seconds=time.perf_counter() - t0, blocks=n_blocks)


@torch.no_grad()
def sample_ar(model, prompt, gen_len, temperature=1.0, top_k=0, top_p=1.0, generator=None):
    """Autoregressive sampling with a KV cache. prompt (B, P) with P >= 1. Returns (B, P + gen_len)."""
    B, P = prompt.shape
    assert P + gen_len <= model.args.block_size, "AR sampling beyond block_size is not supported"
    cache = model.new_kv_cache(B, prompt.device, next(model.parameters()).dtype)
    logits = model(prompt, kv_cache=cache)[:, -1]
    out = [prompt]
    for i in range(gen_len):
        nxt = sample_tokens(filter_logits(logits, temperature, top_k, top_p), temperature, generator)
        out.append(nxt[:, None])
        if i + 1 < gen_len:
            logits = model(nxt[:, None], kv_cache=cache, start_pos=P + i)[:, -1]
    return torch.cat(out, 1)
