"""Validation metrics: the ELBO with a standard error, reconstruction accuracy, entropy per
timestep, and sample statistics (reverse-step token change rate, distinct-n).

The bound is estimated per sequence with n_t stratified times t_k = floor((k + u) / n_t * T) + 1
(u ~ U[0,1) per sequence), which is unbiased for (1/T) sum_t of the per-t terms; the standard
error is the spread of those per-sequence estimates over the fixed validation windows.
"""
import math

import torch

from diffusion import ar_loss, diffusion_loss

LN2 = math.log(2)


@torch.no_grad()
def evaluate(model, windows, schedule, mask_id, objective, batch_size, device, ctx, n_t=1, seed=0,
             chars_per_token=1.0, details=False, entropy_bins=10):
    """Bound (mdlm) or exact NLL (ar) over fixed windows (N, L) or (N, L+1) for ar.
    Returns dict: nats_per_token, se, bits_per_char, bpc_se, ppl (per token) and, with
    details, recon_acc and entropy_by_t (list of (t_lo, t_hi, mean entropy in nats))."""
    was_training = model.training
    model.eval()
    g = torch.Generator().manual_seed(seed)
    per_seq, correct, n_masked = [], 0, 0
    T = schedule.T
    ent_sum = torch.zeros(entropy_bins, dtype=torch.float64)
    ent_cnt = torch.zeros(entropy_bins, dtype=torch.float64)
    for i in range(0, len(windows), batch_size):
        x = windows[i:i + batch_size].to(device)
        if objective == "ar":
            with ctx:
                _, nll = ar_loss(model, x)
            per_seq.append(nll.double().cpu())
            continue
        acc = torch.zeros(len(x), dtype=torch.float64)
        u = torch.rand(len(x), generator=g, dtype=torch.float64)
        for k in range(n_t):
            t = (torch.floor((k + u) / n_t * T).long() + 1).clamp(1, T).to(device)
            with ctx:
                _, nelbo, aux = diffusion_loss(model, x, schedule, mask_id, generator=g, t=t)
            acc += nelbo.double().cpu()
            if details:
                m, logits = aux["masked"], aux["logits"]
                correct += ((logits.argmax(-1) == x) & m).sum().item()
                n_masked += m.sum().item()
                logp = logits.log_softmax(-1)
                ent = -(logp.exp() * logp.nan_to_num(neginf=0.0)).sum(-1)  # (B, L)
                b = ((t - 1) * entropy_bins // T).cpu()
                ent_sum.index_add_(0, b, (ent * m).sum(1).double().cpu())
                ent_cnt.index_add_(0, b, m.sum(1).double().cpu())
        per_seq.append(acc / n_t)
    model.train(was_training)
    v = torch.cat(per_seq)
    mean, se = v.mean().item(), (v.std().item() / math.sqrt(len(v)) if len(v) > 1 else float("nan"))
    out = dict(nats_per_token=mean, se=se, bits_per_char=mean / chars_per_token / LN2,
               bpc_se=se / chars_per_token / LN2, ppl=math.exp(mean), n_windows=len(v), n_t=n_t)
    if details and objective == "mdlm":
        out["recon_acc"] = correct / max(n_masked, 1)
        edges = [round(1 + j * T / entropy_bins) for j in range(entropy_bins + 1)]
        out["entropy_by_t"] = [(edges[j], edges[j + 1] - 1, (ent_sum[j] / ent_cnt[j]).item() if ent_cnt[j] else float("nan"))
                               for j in range(entropy_bins)]
    return out


class ChangeRate:
    """Reverse-step token change rate: of the generated positions revealed before a step, the
    fraction whose token differs after it (re-masked or replaced). 0 for samplers that never revisit."""

    def __init__(self):
        self.changed, self.seen = 0, 0

    def __call__(self, info):
        prev_revealed = info["gen_mask"] & ~info["is_masked_before"]
        self.changed += (prev_revealed & (info["prev"] != info["x"])).sum().item()
        self.seen += prev_revealed.sum().item()

    @property
    def rate(self):
        return self.changed / self.seen if self.seen else 0.0


def distinct_n(texts, n):
    """Unique word n-grams / all word n-grams, pooled over texts (Li et al. 2016)."""
    grams = [tuple(w[i:i + n]) for w in (t.split() for t in texts) for i in range(len(w) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0
