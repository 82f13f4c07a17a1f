"""Block diffusion (BD3-LM, Arriola et al. 2025): the bound, its per-block times, and the two-stream pass.

Cut the window into blocks of L' tokens. log p(x) = sum_b log p(x^b | x^<b), and each block's term is bounded by
the masked-diffusion NELBO of that block alone (diffusion.py), given the clean earlier blocks, with its own t:

    -log p(x) <= sum_b E_t_b E_q [ T w(t_b) * sum_{i in block b, masked} -log p(x0_i | x_t^b, x0^<b) ]

One forward pass covers every block: the network reads [x_t ; x_0] (2L tokens) under model.bd3_attn_mask, and the
loss sits on the noisy half. L' = 1 is the AR model (in expectation: a masked token sees only the clean tokens
before it); L' = L is MDLM. Sampling: sampler_bd3.py.

    python -c "from diffusion import Schedule; from diffusion_bd3 import band_times; print(band_times(Schedule(100), 0.3, 0.8))"
"""
import torch
import torch.nn.functional as F

from model import bd3_attn_mask


def band_times(schedule, lo=0.0, hi=1.0):
    """The times t in 1..T whose mask rate 1 - alpha(t) lies in [lo, hi] (long tensor). BD3-LM trains with mask
    rates clipped to a band [beta, omega] to cut the gradient variance; [0, 1] is every t (the full bound)."""
    mp = 1.0 - schedule.alpha
    t = torch.nonzero((mp >= lo - 1e-12) & (mp <= hi + 1e-12)).squeeze(1)
    t = t[t >= 1]
    if len(t) == 0:
        raise ValueError(f"no diffusion time has a mask rate in [{lo}, {hi}] (T={schedule.T}): widen the band")
    return t


def bd3_times(n, n_blocks, allowed, generator=None, device="cpu", offset=0, total=None, u=None):
    """A time for every block of n sequences: (n, n_blocks) long. The n * n_blocks draws take one stratum each of
    [0, 1) out of the global batch's total * n_blocks (shared u, as stratified_times), mapped onto `allowed`, then
    shuffled over (sequence, block) with `generator` so the blocks of one sequence get unrelated strata."""
    total = (total or n) * n_blocks
    if u is None:
        u = torch.rand((), generator=generator, dtype=torch.float64)
    i = torch.arange(offset * n_blocks, (offset + n) * n_blocks, dtype=torch.float64)
    k = len(allowed)
    idx = torch.floor((i + u) / total * k).long().clamp_(0, k - 1)
    perm = torch.randperm(len(idx), generator=generator)
    return allowed[idx[perm]].view(n, n_blocks).to(device)


def bd3_columns(L, block):
    """Columns of the two-stream pass over a window of L: x_t and x_0 less its last block (bd3_logits)."""
    return 2 * L - block


def bd3_flops_per_token(model, L, block):
    """Training FLOPs per window token of the two-stream pass: the model's per-token count over 2L - L' columns
    (attention over that many keys: the mask saves no FLOPs in dense SDPA), times (2L - L') / L."""
    n = bd3_columns(L, block)
    return model.flops_per_token(n) * n / L


def bd3_logits(model, xt, x0, block, mask_id, positions=None):
    """One block-diffusion pass: logits of the noisy half of [xt ; x0] (B, 2L) under bd3_attn_mask, with the
    [MASK] logit at -inf. Returns (B, L, V), or (N, V) at positions (B, L) bool of the noisy half.
    The clean half is only the context of later blocks (its logits carry no loss and are never computed), so its
    last block is left out; with one block (L' = L) all of it is: exactly MDLM's pass with time_cond='none'."""
    B, L = x0.shape
    if block == L:
        logits = model(xt, positions=positions)
    else:
        n = bd3_columns(L, block)  # the last clean block is context for no one: left out
        head = torch.ones_like(x0, dtype=torch.bool) if positions is None else positions
        rope = torch.arange(L, device=x0.device).repeat(2)[:n]  # both halves at positions 0..L-1
        logits = model(torch.cat([xt, x0[:, :L - block]], 1), attn_mask=bd3_attn_mask(L, block, x0.device)[:n, :n],
                       rope_pos=rope, positions=torch.cat([head, torch.zeros_like(head[:, block:])], 1))  # (N, V)
        logits = logits if positions is not None else logits.view(B, L, -1)
    return logits.index_fill(-1, torch.tensor([mask_id], device=logits.device), float("-inf"))  # x0 is never [MASK]


def bd3_loss(model, x0, schedule, mask_id, block, generator=None, t=None, allowed=None, masked_only=False):
    """Block-diffusion NELBO of x0 (B, L) with blocks of `block` tokens. t (B, L // block) per-block times, drawn
    here (stratified over the batch) if None, from `allowed` (band_times; default 1..T). Each block's tokens are
    masked with probability 1 - alpha(t_b) and weighted by k * w(t_b), k = len(allowed): with every t allowed
    that is T * w(t), so the sum over blocks estimates sum_b NELBO(x^b | x^<b) >= -log p(x0); with a clipped
    band it estimates only the band's share of it (train with it, never report it).
    Returns (loss, per-sequence NELBO in nats/token (B,), dict(t, t_tok (B, L), masked, logits, ce))."""
    B, L = x0.shape
    assert L % block == 0, f"block {block} must divide the window {L}"
    allowed = torch.arange(1, schedule.T + 1) if allowed is None else allowed
    if t is None:
        t = bd3_times(B, L // block, allowed, generator, x0.device)
    t_tok = t.repeat_interleave(block, 1)  # (B, L) each token's block time
    p = schedule.mask_prob(t_tok).to(torch.float32)
    masked = torch.rand(x0.shape, generator=generator, device="cpu").to(x0.device) < p  # CPU draws: same on any device
    xt = torch.where(masked, torch.full_like(x0, mask_id), x0)
    if masked_only:  # unmasked positions carry zero loss: skip their logits
        logits = bd3_logits(model, xt, x0, block, mask_id, positions=masked)  # (N, V)
        ce = torch.zeros(B, L, device=x0.device).masked_scatter(masked, F.cross_entropy(logits, x0[masked], reduction="none"))
    else:
        logits = bd3_logits(model, xt, x0, block, mask_id)
        ce = F.cross_entropy(logits.view(B * L, -1), x0.view(-1), reduction="none").view(B, L)
    w = (len(allowed) * schedule.weight.to(x0.device)[t_tok]).float()  # (B, L) importance weight k * w(t_b)
    nelbo = (w * ce * masked).sum(1) / L  # (B,) nats per token, normalised by L as the MDLM bound
    return nelbo.mean(), nelbo.detach(), dict(t=t, t_tok=t_tok, masked=masked, logits=logits.detach(), ce=ce.detach())
