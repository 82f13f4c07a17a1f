"""A drafter that knows the newest token, at the price of a second pass a round (issue 64's "the first drafted column
conditioned on the newest token"). --bd3_speculate drafts the next round in the pass that draws the newest token, so
its first draft cannot know it (dev/draft_ceiling.py: 0.53 kept; 0.88 for a state that knows it). Here a round is two
passes: a draft pass (the newest token as a clean column, which gives p of the next position, and the noisy copy of
its block known up to it: q for the rest of the block), then a verify pass (the drafts as clean columns: p of each
next position); keep_or_redraw keeps p's law whatever q. Batch 1, one window (prompt + tokens <= the context).
Timed in turns against --bd3_speculate's one-pass rounds and the AR's KV cache, the same seeds.
python dev/two_pass.py BD3_AR_CKPT AR_CKPT [--n 32] [--gen 63] [--rounds 5]"""
import os
import statistics
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, ".."), HERE]  # the repo, and dev/ (draft_ceiling's loader)
import bd3  # noqa: E402
from bd3 import keep_or_redraw, probs  # noqa: E402
from diffusion import no_mask_logit  # noqa: E402
from utils.draws import draw  # noqa: E402
from draft_ceiling import load_bd3_ar  # noqa: E402
from checkpoint_manager import load_model  # noqa: E402
from diffusion import SamplerOptions  # noqa: E402
from utils.cli import ArgParser, at_least, model_path  # noqa: E402
from utils.dist import hold_threads  # noqa: E402
from utils.errors import UserError, run_cli  # noqa: E402


@torch.no_grad()
def sample_two_pass(model, prompt, gen_len, n, mask_id, generator, opts=SamplerOptions(steps=1)):
    """(tokens (1, P + gen_len), passes, drafts kept a round by offset) of the clean half's AR, two passes a round.
    opts: the SamplerOptions whose law (temperature, top_k, top_p) shapes p and q (default: T = 1, unfiltered)."""
    (B, P), dev = prompt.shape, prompt.device
    assert B == 1 and P >= 1 and P + gen_len <= model.args.block_size
    W = model.args.block_size
    seq, end, passes, kept_at = prompt, P + gen_len, 0, [0] * n
    kv = bd3.RoundCache(model.args.n_layer, 1, W + 2 * n, dev, True)
    fill = torch.full((1, n), mask_id, device=dev)
    if P > 1:  # the prompt before its last token, cached
        model(seq[:, :P - 1], kv_cache=kv, rope_pos=torch.arange(P - 1, device=dev),
              attn_mask=torch.ones(P - 1, kv.end, dtype=torch.bool, device=dev).tril())
        kv.reset(P - 1)
    while seq.size(1) < end:
        S = seq.size(1)
        sb = S // n * n
        kd = min(sb + n, end) - S  # drafts: the rest of the newest token's block (>= 1)
        # draft pass: the newest token (clean, cached) and its block known up to it, [MASK] from S
        cols = torch.cat([seq[:, -1:], seq[:, sb:S], fill[:, :sb + n - S]], 1)
        pos, mask, _ = bd3.round_layout(S - 1, sb, (S - sb, 0, 0, 1, False), n, W, kv.end, dev)
        logits = no_mask_logit(model(cols, kv_cache=kv, rope_pos=pos, attn_mask=mask), mask_id)
        kv.reset(S)
        p0, q = probs(logits[:, :1], opts), probs(logits[:, 1 + S - sb:1 + S - sb + kd], opts)
        drafts = draw(q, generator)
        passes += 1
        # verify pass: the drafts as clean columns, each giving p of the position after it (the last: a bonus)
        pos, mask, _ = bd3.round_layout(S, sb, (0, kd - 1, kd - 1, 0, False), n, W, kv.end, dev)
        logits = no_mask_logit(model(drafts, kv_cache=kv, rope_pos=pos, attn_mask=mask), mask_id)
        passes += 1
        p = torch.cat([p0, probs(logits[:, :min(kd, end - S - 1)], opts)], 1)
        new = keep_or_redraw(p, q, drafts, generator)
        j = new.size(1) - 1
        for i in range(j):
            kept_at[i] += 1
        kv.reset(S + j)  # the kept drafts' columns; the newest token is the next draft pass's
        seq = torch.cat([seq, new], 1)
    return seq[:, :end], passes, kept_at


def main(argv):
    ap = ArgParser(prog="dev/two_pass.py", description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=model_path, help="a --bd3_ar model.pt (baby_bd3's)")
    ap.add_argument("ar_checkpoint", type=model_path, help="the AR it is timed against (baby_ar's)")
    ap.add_argument("--n", type=at_least(1), default=32, help="samples each sampler draws in a timed round, one at a "
                    "time (batch 1), seeds 0, 1, ...")
    ap.add_argument("--gen", type=at_least(1), default=63, help="tokens each sample generates after its one start "
                    "token (at most the context less one)")
    ap.add_argument("--rounds", type=at_least(1), default=5, help="timed rounds, in turns; the median is reported")
    args = ap.parse_args(argv)
    hold_threads()  # OMP_NUM_THREADS (or another thread variable), else 1
    model, n = load_bd3_ar(args.checkpoint)
    ar, ck = load_model(args.ar_checkpoint, "cpu")
    if not ar.args.causal:
        raise UserError(f"{args.ar_checkpoint} is not an AR (objective=ar): give the AR to time against")
    M, W = model.args.vocab_size - 1, model.args.block_size
    if 1 + args.gen > W:
        raise UserError(f"--gen {args.gen} does not fit one window of {W} after one token: give at most {W - 1}")
    prompt = torch.zeros(1, 1, dtype=torch.long)
    stats = dict(passes=0, kept=[0] * n)

    def two(s):
        _, passes, kept = sample_two_pass(model, prompt, args.gen, n, M, torch.Generator().manual_seed(s))
        stats["passes"] += passes
        stats["kept"] = [a + b for a, b in zip(stats["kept"], kept)]
    runs = {"two passes a round": two,
            "one pass a round (--bd3_speculate)": lambda s: bd3.sample_clean_ar(
                model, prompt, args.gen, bd3.Blocks(size=n, mask_id=M), generator=torch.Generator().manual_seed(s)),
            "the AR's KV cache": lambda s: ar.generate(prompt, args.gen, generator=torch.Generator().manual_seed(s),
                                                     mask_id=M)}
    times = {k: [] for k in runs}
    for _ in range(args.rounds):
        for k, f in runs.items():
            t = time.perf_counter()
            for s in range(args.n):
                f(s)
            times[k].append(time.perf_counter() - t)
    rounds = stats["passes"] / 2
    print(f"two passes a round: {args.gen * args.n * args.rounds / rounds:.3f} tokens a round, "
          f"{args.gen * args.n * args.rounds / stats['passes']:.3f} a pass; drafts kept by offset (cumulative, % of "
          "rounds) " + " / ".join(f"{100 * k / rounds:.1f}" for k in stats["kept"][:n - 1]))
    ar_s = statistics.median(times["the AR's KV cache"])
    for k, ts in times.items():
        s = statistics.median(ts)
        print(f"{k:<36} {args.gen * args.n / s:7.0f} tokens/s  {ar_s / s:.3f}x the AR")


if __name__ == "__main__":
    run_cli(main)
