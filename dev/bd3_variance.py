"""How noisy is block diffusion's training signal? The variance of the loss and of its gradient over the random
times and masks, for a trained checkpoint, one fixed training-sized batch, with the full range of mask rates and
with clipped bands (BD3-LM, Arriola et al. 2025, tune the band [beta, omega] per block size to minimise it).

    python dev/bd3_variance.py artifacts/models/baby_bd3_4/model.pt --bands 0-1,0.3-0.8,0.5-1 --draws 32

Per band: the mean of the training loss (the band's share of the bound: not comparable across bands), its
relative standard deviation over draws, and the gradient's relative variance E|g - E g|^2 / |E g|^2 (the
noise an optimizer step sees, in units of the signal; scale-free, so bands compare). The windows are fixed;
only t and the masks are redrawn (draw k uses the same generator seed for every band).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from checkpoint_manager import checkpoint_config  # noqa: E402
from bd3 import bd3_loss, bd3_times, block_draws  # noqa: E402
from diffusion import Schedule, band_times  # noqa: E402
from checkpoint_manager import load_model  # noqa: E402
from objectives import OBJECTIVES  # noqa: E402
from utils.dataloader import fixed_windows, prepare_data  # noqa: E402
from utils.cli import ArgParser, at_least, band, list_of, seed  # noqa: E402
from utils.errors import UserError, run_cli  # noqa: E402
from utils.tokenizer import tokenizer_from_state  # noqa: E402


def band_stats(model, x, schedule, mask_id, block, band, draws, seed):
    """(mean loss, relative sd of the loss, relative gradient variance) over `draws` redraws of t and masks."""
    allowed = band_times(schedule, *band)
    params = [p for p in model.parameters() if p.requires_grad]
    losses, grads = [], []
    for k in range(draws):
        g = torch.Generator().manual_seed(seed + k)
        t = bd3_times(len(x), x.size(1) // block, allowed, g)
        drawn = block_draws(x.shape, t, 0.0, g, x.device, len(allowed))  # the masks, then k = the band's times
        loss, _, _ = bd3_loss(model, x, schedule, mask_id, block, drawn)
        model.zero_grad(set_to_none=True)
        loss.backward()
        losses.append(loss.item())
        grads.append(torch.cat([p.grad.flatten() for p in params]).double())
    G, L = torch.stack(grads), torch.tensor(losses, dtype=torch.float64)
    mean_g = G.mean(0)
    rel_var = (G - mean_g).square().sum(1).mean().item() / mean_g.square().sum().item()
    return L.mean().item(), (L.std() / L.mean()).item(), rel_var


def main(argv):
    p = ArgParser(prog="dev/bd3_variance.py", description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", help="a bd3 model.pt (objective=bd3)")
    p.add_argument("--bands", type=list_of(band), default="0-1,0.3-0.8,0.5-1",
                   help="mask-rate bands lo-hi, comma-separated; 0-1 = the bound")
    p.add_argument("--draws", type=at_least(2, "a spread"), default=32, help="redraws of t and masks per band")
    p.add_argument("--batch", type=at_least(0), default=0, help="windows in the fixed batch (0 = the checkpoint's "
                   "batch_size)")
    p.add_argument("--seed", type=seed, default=0, help="seeds the draws of t and masks: draw k takes the same seed in "
                   "every band")
    a = p.parse_args(argv)
    model, ckpt = load_model(a.checkpoint, "cpu")
    cfg = checkpoint_config(ckpt, f"checkpoint {a.checkpoint}")
    if not OBJECTIVES[cfg.objective].BLOCKS:  # not block diffusion: it has no blocks, no bands
        raise UserError(f"{a.checkpoint} is a {cfg.objective} model: give a bd3 checkpoint")
    tok = tokenizer_from_state(ckpt["tokenizer"])
    _, train_ids, _, _ = prepare_data(cfg, tok, verbose=False)
    x = fixed_windows(train_ids, a.batch or cfg.batch_size, cfg.block_size)
    schedule = Schedule(cfg.diffusion_steps, cfg.schedule)
    model.train()
    print(f"{a.checkpoint}: L'={cfg.bd3_block}, batch {len(x)} x {cfg.block_size} training windows, {a.draws} draws per band")
    print(f"{'band':<10} {'mean loss':>10} {'loss sd/mean':>13} {'grad var/|E g|^2':>17}")
    for lo, hi in a.bands:
        mean, rel_sd, rel_var = band_stats(model, x, schedule, tok.mask_id, cfg.bd3_block, (lo, hi), a.draws, a.seed)
        print(f"{lo:g}-{hi:g}".ljust(10) + f" {mean:10.4f} {rel_sd:13.4f} {rel_var:17.3f}", flush=True)


if __name__ == "__main__":
    run_cli(main)
