"""Samplers that revisit committed tokens, for the masked-diffusion reverse sampler (diffusion.denoise): ReMDM's
remasking schedules and the end-of-sampling corrector. Imports nothing from the project but common.

ReMDM (Wang et al. 2025, arXiv 2503.00307, eq. 5): a step t -> s of the reverse process may send a committed token
back to [MASK] with probability sigma_t, and reveals a masked one with probability (alpha_s - (1 - sigma_t) alpha_t)
/ (1 - alpha_t), so the marginal q(z_s | x) is the forward process's whatever sigma_t is, as long as
0 <= sigma_t <= sigma_max = min(1, (1 - alpha_s) / alpha_t). Our sampler fixes the counts instead of drawing them
(reveal_plan): a block of n positions keeps n_keep masked after the step. With m committed tokens before it,
alpha_t = m / n and 1 - alpha_s = n_keep / n, so sigma_max = min(1, n_keep / m): the expected number re-masked,
sigma * m, never exceeds what stays masked. The schedules of sigma_t (paper Sec. 4.1):

    constant  sigma_t = eta                 (this repo's first switch; the draw is capped at n_keep)
    cap       sigma_t = min(eta, sigma_max) ("max-capped")
    rescale   sigma_t = eta * sigma_max     ("rescaled")
    loop      three phases over the step budget: MDLM steps (sigma = 0) reveal down to a mask rate 1 - alpha_on
              over the first 1 - t_on of the steps; then t_on - t_off of the steps at that fixed rate, each
              re-masking committed tokens w.p. eta and revealing as many (re-predict at fixed noise); then MDLM
              steps to the clean text over the last t_off. Every step is a forward pass: NFE = steps.

The corrector (predictor-corrector, Campbell et al. 2022; Duo's Psi-samplers, 2602.21185; ReMDM-conf's choice
of the least confident tokens): after a block is fully revealed, K passes that each re-mask the fraction `frac`
of its tokens the model was least sure of when it drew them, and redraw those given all the others (one forward
pass each: NFE = steps + K per block). That choice is greedy: the tokens drawn against the odds are the ones redrawn,
so the samples' entropy falls with K. pick='random' redraws a uniformly random share instead, a Gibbs sweep over
the block: under a model that knew the data's conditionals it leaves the samples' distribution where it was and
only repairs what drawing several tokens in one step got wrong.

    python -c "from remasking import loop_split; print(loop_split(32, 48, 0.9, 0.55, 0.05))"
"""
import torch

from common import reveal_plan

REMDM_SCHEDULES = ("constant", "cap", "rescale", "loop")
# the config keys of these samplers, named as denoise()'s arguments: objectives that draw each token once (ar) or
# redraw all (uniform) refuse them
REVISIT_KEYS = ("remdm_schedule", "remdm_alpha_on", "remdm_t_on", "remdm_t_off", "corrector_steps", "corrector_frac",
                "corrector_pick")
CORRECTOR_PICKS = ("confidence", "random")


def sigma(kind, eta, committed, n_keep, loop_step=False):
    """sigma_t per row (B,) float64: each committed token's probability of going back to [MASK] this step.
    committed (B,) tokens held before the step, n_keep (B,) positions masked after it."""
    m, k = committed.double(), n_keep.double()
    smax = torch.where(m > 0, (k / m.clamp(min=1)).clamp(max=1.0), torch.zeros_like(m))  # min(1, (1-alpha_s)/alpha_t)
    if kind == "constant":
        return torch.full_like(m, eta)
    if kind == "cap":
        return smax.clamp(max=eta)
    if kind == "rescale":
        return eta * smax
    return torch.full_like(m, eta if loop_step else 0.0)  # loop: eta at the fixed noise level, MDLM elsewhere


def loop_split(steps, n, alpha_on, t_on, t_off):
    """(steps revealing down to the loop's rate, loop steps, steps revealing the rest) for a block whose rows hold at
    most n generated positions. Time runs 1 -> 0 evenly over the steps; each reveal phase gets at least one step
    and at most one per token it reveals (a step with nothing to reveal is dropped, not counted)."""
    n_on = round(n * (1 - alpha_on))  # masked during the loop
    first = min(max(1, round(steps * (1 - t_on))), n - n_on)
    last = min(max(1, round(steps * t_off)), n_on)
    loop = max(0, steps - first - last) if n_on else 0  # nothing masked: no loop to run
    return first, loop, last


def loop_plan(n, steps, alpha_on, t_on, t_off, fractions):
    """The loop schedule's counts: (positions still masked after each step (B, S) long, which steps loop (S,) bool).
    n (B,) generated positions per row; fractions(j, k): the masked fraction after step j of a k-step reveal (the
    sampler's tokens_per_step curve), used for both reveal phases."""
    first, loop, last = loop_split(steps, int(n.max()), alpha_on, t_on, t_off)
    n_on = torch.round(n.double() * (1 - alpha_on)).long()  # (B,)
    keep1 = n_on[:, None] + reveal_plan(n - n_on, [fractions(j, first) for j in range(first)])  # down to n_on
    keep3 = reveal_plan(n_on, [fractions(j, last) for j in range(last)]) if last else n_on[:, :0]
    keep = torch.cat([keep1, n_on[:, None].expand(-1, loop), keep3], 1)
    return keep, torch.tensor([False] * first + [True] * loop + [False] * last)


def least_confident(conf, now, frac):
    """The corrector's pick (B, L) bool: in each row, the round(frac * n) positions of the block `now` (at least one
    where it has any) whose tokens had the lowest probability when drawn (conf, float64; 0 for fixed text)."""
    n = now.sum(1)
    k = torch.where(n > 0, torch.round(n.double() * frac).long().clamp(min=1), n)  # (B,)
    rank = conf.masked_fill(~now, float("inf")).argsort(dim=1, stable=True).argsort(1)  # 0 = least confident
    return (rank < k[:, None]) & now


def corrector_positions(kind, conf, now, frac, generator=None):
    """The corrector's pass's positions (B, L) bool: the least confident ('confidence') or a uniformly random
    ('random', drawn on the CPU with `generator`) round(frac * n) of each row's block `now`."""
    if kind == "random":
        conf = torch.rand(conf.shape, generator=generator, dtype=torch.float64).to(conf.device)
    return least_confident(conf, now, frac)
