"""What a sampler reports after each network pass: a Step (the canvas before and after, what was
revealed and re-masked, each committed token's probability, the law drawn from). The trace video,
the HTML page, --live and the progress bar read Steps; the samplers only hand them over. Here too
the bookkeeping that turns a pass into a Step (StepRecord), kept apart from the draws themselves.

    python -m pytest -q tests/test_trace.py   # Steps as the trace reads them
"""
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class Step:
    """A reverse step as reported to on_step. Tensors: (B, L) over the canvas unless noted."""
    step: int                 # batched forward passes so far
    nfe: torch.Tensor         # (B,) forward passes each sample has taken part in
    time: torch.Tensor        # (B,) the time the model was told (0 for samples that skip the step)
    x: torch.Tensor           # the canvas after the step
    prev: torch.Tensor        # the canvas before it
    gen_mask: torch.Tensor    # generated positions (the rest is given text, never changed)
    revealed: torch.Tensor    # positions that took a new token this step
    remasked: torch.Tensor    # positions sent back to [MASK]
    conf: torch.Tensor        # float64 probability of each committed token when drawn (0 where none)
    finished: list            # (B,) bool: the sample takes part in no further step
    block: int = 0            # the semi-AR or bd3 block being decoded, of n_blocks
    n_blocks: int = 1
    laws: tuple = None        # (at (n,) flat positions of the canvas, logp (n, V)): what the step drew from there


@dataclass
class Drew:
    """What one pass of denoise() drew and decided: flat positions `at` (n,) of the canvas, the
    log-probs there (n, V) (a point mass where it took the argmax), the tokens drawn (n,), the
    (B, L) masks of positions revealed and re-masked, and the time told (B,)."""
    at: torch.Tensor
    laws: torch.Tensor
    cand: torch.Tensor
    revealed: torch.Tensor
    remasked: torch.Tensor
    told: torch.Tensor


class StepRecord:
    """denoise()'s bookkeeping, apart from its draws: passes a sample took part in (nfe), the
    seconds to each sample's last fill, and, with on_step, each committed token's probability and
    the Step of every pass."""

    def __init__(self, gen_mask, mask_id, last_block, on_step):
        B, L = gen_mask.shape
        self.gen_mask, self.mask_id, self.on_step, self.t0 = gen_mask, mask_id, on_step, time.perf_counter()
        self.last_block = last_block  # (B,) each sample's last semi-AR block
        self.n_blocks = max(last_block) + 1
        self.steps = 0  # batched passes so far
        self.nfe = torch.zeros(B, dtype=torch.long)
        self.done_at = [0.0] * B  # seconds to each sample's last fill
        self.conf = torch.zeros(B, L, dtype=torch.float64, device=gen_mask.device)  # p(token) at commit

    def after(self, b, prev, x, drew, todo, block_done, masked=None):
        """After a pass over block b: count it for the samples `todo` (B, host) took part, time
        the samples it finished, report the Step. masked: each sample's [MASK]s left in the block
        (host counts, from the plan), or None to read them off x (threshold decoding)."""
        self.steps += 1
        self.nfe += todo
        if masked is None:
            left = ((x == self.mask_id) & self.gen_mask).any(1).tolist()
        else:  # later blocks are all [MASK]
            left = [m > 0 or b < last for m, last in zip(masked, self.last_block)]
        for r, any_left in enumerate(left):
            if not self.done_at[r] and not any_left:
                self.done_at[r] = time.perf_counter() - self.t0
        if self.on_step is None:
            return
        new_conf = drew.laws.gather(-1, drew.cand[:, None]).squeeze(-1).exp()  # p(cand) under the law it was drawn from
        conf = self.conf.flatten().scatter(0, drew.at, new_conf).view_as(self.conf)
        self.conf = torch.where(drew.revealed, conf, self.conf).masked_fill(drew.remasked, 0.0)
        finished = [block_done and not any_left for any_left in left]
        self.on_step(Step(step=self.steps, nfe=self.nfe.clone(), time=drew.told, x=x, prev=prev,
                          gen_mask=self.gen_mask, revealed=drew.revealed, remasked=drew.remasked, conf=self.conf,
                          block=b, n_blocks=self.n_blocks, finished=finished, laws=(drew.at, drew.laws)))

    def stats(self, blocks):
        """denoise()'s stats: passes (batched and per sample) and seconds."""
        return dict(nfe=self.steps, nfe_per_sample=self.nfe.tolist(), seconds_per_sample=self.done_at,
                    seconds=time.perf_counter() - self.t0, blocks=blocks)


# ------------------------------------------------------------------------ left to right
def prompt_length(x, gen_mask):
    """P, the given tokens of a continuation x (B, L): each row's first P, then blanks (none: L)."""
    P = int(gen_mask[0].long().argmax()) if gen_mask[0].any() else x.size(1)
    assert (gen_mask == gen_mask[:1]).all() and gen_mask[0, P:].all(), "one prompt length in every row, then blanks"
    return P


def ordered_step(prev, seq, P, L, n, mask_id, p, conf):
    """A pass of ordered decoding (the AR's token, a bd3 round) as a Step over L tokens: seq (B, S)
    so far ([MASK] after), prev before it, n passes, p (B, k, V) the laws its k new tokens were
    drawn from; conf (B, L), each token's probability when drawn, is updated with theirs."""
    (B, S), dev = seq.shape, seq.device
    x = F.pad(seq, (0, L - S), value=mask_id)
    before = F.pad(prev, (0, L - prev.size(1)), value=mask_id)
    gen = (torch.arange(L, device=dev) >= P).expand(B, L)
    cols = torch.arange(prev.size(1), S, device=dev)  # the pass's new tokens
    at = (torch.arange(B, device=dev)[:, None] * L + cols).flatten()
    law = p[:, :S - prev.size(1)]  # (B, k, V)
    conf[:, cols] = law.gather(-1, seq[:, cols, None]).squeeze(-1).double()
    return Step(step=n, nfe=torch.full((B,), n), time=torch.zeros(B, dtype=torch.long), x=x, prev=before,
                gen_mask=gen, revealed=x != before, remasked=torch.zeros_like(gen), conf=conf.clone(),
                finished=[S >= L] * B, laws=(at, law.flatten(0, 1).log()))
