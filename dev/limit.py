"""The limit: how many tokens a pass can each sampler reveal before its samples go wrong, with a
perfect network? Every sampler of the repo runs unchanged on dev/oracle.py's perfect denoiser (Tiny
Shakespeare's bigram chain, its exact posterior), at 1 to 48 tokens a pass (and the adaptive rules
at their own), and its samples are scored by the true chain (Tang et al. 2026, arXiv 2602.19619).

    python dev/limit.py --json artifacts/eval/limit.json       # the oracle: ~1 hour on a busy core
    python dev/limit.py --json artifacts/eval/limit_nets.json --no-oracle --n-samples 256 \\
        --checkpoints artifacts/weights/baby artifacts/weights/baby_bd3 artifacts/weights/baby_ar
    python dev/plot_limit.py artifacts/eval/limit.json artifacts/eval/limit_nets.json

RESULTS.md ("The limit") gives the runs it reports. The tables are printed at the end of a run.

Three readings a sampler and tokens a pass, over --n-samples samples of --gen-len characters after
--prompt:
  excess   the samples' NLL under the chain minus the chain's own entropy of that text (given the
           prompt), nats/char, mean +- se over samples: 0 for exact samples. It is KL(q || p) less
           the samples' entropy deficit H(p) - H(q), so a sampler that collapses onto likely text
           reads NEGATIVE while wrong: excess alone never says "right".
  trans_kl the samples' empirical transition law against the chain's, sum_a w_a KL(p^(.|a) || P(a, .))
           (the paper's transition-level KL rate): 0 only for the chain's law, but read against the
           exact samplers' own (the AR, the drafted rounds: a finite sample's floor). It says "wrong"
           whichever way the entropy moved; trans_h beside it is the same law's entropy (the deficit's
           sign).
  short    the exact law of --short-len characters after --short-prompt, enumerated
           (dev/oracle.reveal_law), against the chain's: TV, and per character KL, the entropy deficit
           and the excess (= KL - deficit). The sampler's law, not an estimate.
A network's samples (--checkpoints) are scored by the same chain: that measures their distance to
the chain, not to Shakespeare; a network can be nearer Shakespeare than a bigram chain is.
"""
import math
import os
import sys
import time

import torch

sys.path[:0] = [os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."),
                os.path.dirname(os.path.abspath(__file__))]  # the repo, and dev/ (oracle)
import bd3  # noqa: E402
import diffusion  # noqa: E402
import oracle  # noqa: E402
from diffusion import SamplerOptions, Schedule  # noqa: E402
from evals.metrics import sample_entropy  # noqa: E402
from evals.samples import write_json  # noqa: E402
from utils.cli import ArgParser, at_least, list_of, output, seed, typed  # noqa: E402
from utils.dist import hold_threads  # noqa: E402
from utils.errors import UserError, run_cli  # noqa: E402
from utils.fileio import require_checkpoints  # noqa: E402
from utils.tokenizer import fingerprint  # noqa: E402

# (name, how it samples): the repo's samplers at temperature 1, linear counts (k tokens every pass;
# the default schedule counts end in an argmax), committed tokens final unless the name says
SAMPLERS = [("ancestral", dict(kind="ancestral"))] + [
    (f"{o} order", dict(kind="denoise", order=o)) for o in ("random", "l2r", "margin", "entropy", "confidence")] + [
    ("confidence, refine", dict(kind="denoise", order="confidence", remask="refine")),
    ("ReMDM eta 0.05, random", dict(kind="denoise", order="random", remask="remdm", remask_eta=0.05)),
    ("semi-AR 16, random", dict(kind="denoise", order="random", semi_ar_length=16)),
    ("semi-AR 16, confidence", dict(kind="denoise", order="confidence", semi_ar_length=16)),
    ("bd3 blocks of 4, random", dict(kind="bd3", order="random")),
    ("bd3 blocks of 4, confidence", dict(kind="bd3", order="confidence"))] + [
    (f"threshold {v:g}", dict(kind="denoise", order="confidence", threshold=v)) for v in (0.9, 0.5, 0.3, 0.2, 0.1)] + [
    (f"entropy bound {v:g}, entropy", dict(kind="denoise", order="entropy", entropy_bound=v))
    for v in (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)] + [
    ("AR", dict(kind="ar")), ("bd3 drafting rounds", dict(kind="drafted"))]
BLOCK = 4  # bd3's block (baby_bd3's)
# an objective's samplers (a network runs those of its own objective; the oracle runs every one)
RUNS = dict(mdlm=("ancestral", "denoise"), bd3=("bd3", "drafted"), ar=("ar",))


def adaptive(spec):
    return bool(spec.get("threshold") or spec.get("entropy_bound"))


def tokens_a_pass(spec, ks, gen_len):
    """The k a sampler runs at: each of ks its plan can keep (one for the adaptive rules and the
    one-token ones: their passes are their own)."""
    if adaptive(spec) or spec["kind"] in ("ar", "drafted"):
        return [1]
    top = BLOCK if spec["kind"] == "bd3" else spec.get("semi_ar_length") or gen_len  # a pass a block at least
    return [k for k in ks if k <= top]


def options(spec, steps):
    kw = {k: v for k, v in spec.items() if k != "kind"}
    return SamplerOptions(**{**dict(steps=steps, remask="none", tokens_per_step="linear"), **kw})


def draw(net, spec, k, start, gen_len, batch, g):
    """batch samples (batch, P + gen_len) of one sampler at k tokens a pass, and each one's passes."""
    mask, P = net.args.vocab_size - 1, len(start)
    prompt = torch.tensor(start).repeat(batch, 1)
    x = torch.cat([prompt, torch.full((batch, gen_len), mask)], 1)
    gen = torch.arange(x.size(1)).expand_as(x) >= P
    kind = spec["kind"]
    if kind == "ancestral":
        steps = gen_len // k
        return diffusion.sample_ancestral(net, x, gen, net.schedule, mask, steps, g), [steps] * batch
    if kind == "denoise":
        y, st = diffusion.denoise(net, x, gen, net.schedule, mask, options(spec, gen_len // k), g)
        return y, st["nfe_per_sample"]
    if kind == "bd3":
        blocks = bd3.Blocks(BLOCK, mask)
        y, st = bd3.sample_bd3(net, prompt, gen_len, blocks, net.schedule, options(spec, BLOCK // k), g)
        return y, st["nfe_per_sample"]
    if kind == "ar":
        counts = {}
        return net.generate(prompt, gen_len, None, g, mask, counts=counts), [counts["calls"]] * batch
    rows, passes = [], []  # drafted: at batch 1, where every round drafts (inference.py's)
    for row in prompt:
        y, st = bd3.sample_clean_ar(net, row[None], gen_len, bd3.Blocks(BLOCK, mask), SamplerOptions(steps=1), g)
        rows.append(y)
        passes.append(st["nfe"])
    return torch.cat(rows), passes


def transitions(chain, text):
    """(KL rate, entropy rate) of text's (N, S) empirical transition law, each row a weighted by
    its share w_a of the transitions: sum_a w_a KL(p^(.|a) || P(a, .)), sum_a w_a H(p^(.|a))."""
    V = chain.V
    counts = torch.zeros(V * V, dtype=torch.float64)
    pairs = (text[:, :-1] * V + text[:, 1:]).flatten()
    counts.index_add_(0, pairs, torch.ones(len(pairs), dtype=torch.float64))
    counts = counts.view(V, V)
    rows = counts.sum(1)
    w = rows / rows.sum()
    p = counts / rows.clamp(min=1)[:, None]
    logp = torch.where(p > 0, p.log(), 0.0)
    kl = (p * (logp - chain.logP)).sum(1)
    return float(w @ kl), float(w @ -(p * logp).sum(1))


def score(chain, samples, P, passes):
    """One point's readings (module docstring) of samples (n, P + G) and their passes (n,)."""
    G = samples.size(1) - P
    excess = (chain.nll(samples, P) - chain.entropy(int(samples[0, P - 1]), G)) / G  # (n,) nats/char
    kl, h = transitions(chain, samples[:, P - 1:])  # the prompt's last character leads the first transition
    mean = sum(passes) / len(passes)
    return dict(tokens_per_pass=G / mean, passes=mean, excess=float(excess.mean()),
                excess_se=float(excess.std() / math.sqrt(len(excess))), trans_kl=kl, trans_h=h,
                sample_entropy=sample_entropy(samples[:, P:].tolist()), n=len(excess))


def run_model(name, nets, objective, args, start, chain):
    """Every sampler of `objective` ('oracle': all) at each k: a row each, printed."""
    rows = []
    kinds = sum(RUNS.values(), ()) if objective == "oracle" else RUNS[objective]
    for sampler, spec in SAMPLERS:
        if spec["kind"] not in kinds or (spec["kind"] == "drafted" and "drafted" not in nets):
            continue
        if args.samplers and sampler not in args.samplers:
            continue
        net = nets.get(spec["kind"], nets["plain"])
        n = min(args.n_samples, args.drafted_samples) if spec["kind"] == "drafted" else args.n_samples
        for k in tokens_a_pass(spec, args.tokens_a_pass, args.gen_len):
            g, t0 = torch.Generator().manual_seed(args.seed), time.time()
            out, passes = [], []
            for i in range(0, n, args.batch_size):
                y, p = draw(net, spec, k, start, args.gen_len, min(args.batch_size, n - i), g)
                out.append(y[:, :len(start) + args.gen_len])
                passes += p
            row = dict(model=name, sampler=sampler, spec=spec, k=k, seconds=time.time() - t0,
                       **score(chain, torch.cat(out), len(start), passes))
            rows.append(row)
            print(f"  {name:>10} {sampler:<30} {row['tokens_per_pass']:6.2f} tokens a pass: excess "
                  f"{row['excess']:+.4f} +- {row['excess_se']:.4f} nats/char, trans KL {row['trans_kl']:.4f}, trans H "
                  f"{row['trans_h']:.3f}, sample entropy {row['sample_entropy']:.3f} ({row['seconds']:.0f} s)",
                  flush=True)
    return rows


def short_rows(chain, tok, args):
    """The exact law of --short-len characters after --short-prompt's last, for each sampler the
    enumeration covers, at each number of passes: a row each (dev/oracle.distances), printed."""
    n, last = args.short_len, tok.encode(args.short_prompt)[-1]
    joint = chain.joint(last, n)
    sched = Schedule(1000)
    rows = []
    rules = [(f"{o} order", dict(kind="order", order=o)) for o in ("l2r", "margin", "entropy", "confidence")]
    rules = [("random order", dict(kind="random"))] + rules
    for steps in range(n, 0, -1):
        gen = torch.ones(1, n, dtype=torch.bool)
        plan = diffusion.Blocks(gen, sched, options(dict(kind="denoise"), steps)).plans[0][0].tolist()
        grid, alpha = diffusion.time_grid(sched.T, steps), sched.alpha
        coins = [float((alpha[s] - alpha[t]) / (1 - alpha[t])) for t, s in zip(grid[:-1], grid[1:])]
        for name, rule in [("ancestral", dict(kind="ancestral", p=coins))] + rules:
            law, passes = oracle.reveal_law(chain, last, n, rule, None if name == "ancestral" else plan)
            passes = steps if name == "ancestral" else passes  # its every step is a pass
            rows.append(dict(sampler=name, passes=passes, **oracle.distances(law, joint, n)))
    rules = [(f"threshold {v:g}", dict(kind="threshold", order="confidence", value=v)) for v in (0.5, 0.2, 0.1)]
    rules += [(f"entropy bound {v:g}, entropy", dict(kind="entropy_bound", order="entropy", value=v))
              for v in (2.0, 4.0, 8.0)]
    for name, rule in rules:  # the adaptive rules: their own passes
        law, passes = oracle.reveal_law(chain, last, n, rule)
        rows.append(dict(sampler=name, passes=passes, **oracle.distances(law, joint, n)))
    for r in rows:
        r["tokens_per_pass"] = n / r["passes"]
        print(f"  short {r['sampler']:<28} {r['tokens_per_pass']:5.2f} tokens a pass: TV {r['tv']:.4f}, KL "
              f"{r['kl']:.4f}, deficit {r['deficit']:+.4f}, excess {r['excess']:+.4f} nats/char", flush=True)
    return rows


def tables(doc):
    """RESULTS' tables of a run, markdown: the excess (+- se) and the transition KL at each k of the
    fixed counts; the adaptive and exact samplers at their own tokens a pass; the short exact laws;
    each network beside the oracle's same sampler."""
    rows, ks = doc["rows"], doc["settings"]["tokens_a_pass"]
    head = "| sampler | " + " | ".join(f"{k}" for k in ks) + " |\n|---|" + "---|" * len(ks)
    out = []
    for key, fmt in (("excess", "{excess:+.3f} ± {excess_se:.3f}"), ("trans_kl", "{trans_kl:.3f}")):
        lines = [f"**{key}** (columns: tokens a pass, k)", "", head]
        for sampler in dict.fromkeys(r["sampler"] for r in rows):  # in the run's order
            cells = {r["k"]: fmt.format(**r) for r in rows if r["model"] == "oracle" and r["sampler"] == sampler
                     and not adaptive(r["spec"]) and r["spec"]["kind"] not in ("ar", "drafted")}
            if cells:
                lines.append(f"| {sampler} | " + " | ".join(cells.get(k, "") for k in ks) + " |")
        out.append("\n".join(lines))
    lines = ["| sampler | tokens a pass | excess | transition KL | transition entropy |", "|---|---|---|---|---|"]
    for r in rows:
        if r["model"] == "oracle" and (adaptive(r["spec"]) or r["spec"]["kind"] in ("ar", "drafted")):
            lines.append(f"| {r['sampler']} | {r['tokens_per_pass']:.2f} | {r['excess']:+.3f} ± {r['excess_se']:.3f} "
                         f"| {r['trans_kl']:.3f} | {r['trans_h']:.3f} |")
    out.append("\n".join(lines))
    lines = ["| sampler | tokens a pass | TV | KL | entropy deficit | excess |", "|---|---|---|---|---|---|"]
    for r in doc["short"]:
        lines.append(f"| {r['sampler']} | {r['tokens_per_pass']:.2f} | {r['tv']:.3f} | {r['kl']:.3f} | "
                     f"{r['deficit']:+.3f} | {r['excess']:+.3f} |")
    out.append("\n".join(lines))
    lines = ["| network | sampler | tokens a pass | excess | transition KL |", "|---|---|---|---|---|"]
    for r in rows:
        if r["model"] != "oracle":
            lines.append(f"| {r['model']} | {r['sampler']} | {r['tokens_per_pass']:.2f} | {r['excess']:+.3f} ± "
                         f"{r['excess_se']:.3f} | {r['trans_kl']:.3f} |")
    out.append("\n".join(lines))
    return "\n\n".join(out)


def networks(paths):
    """[(name, {kind: the network}, objective, its tokenizer)] of each checkpoint (one-line refusals
    of a path missing, damaged or unsafe, before any text is read)."""
    from checkpoint_manager import load_model
    from utils.tokenizer import tokenizer_from_state
    out = []
    for path in require_checkpoints(paths, "give the shipped exports (artifacts/weights/baby, ...)"):
        model, ck = load_model(path, "cpu")
        model.eval()
        model.schedule = Schedule(ck["diffusion_steps"], ck["schedule"])  # the grid it was trained on
        nets = dict(plain=model)
        if ck["config"].get("bd3_ar"):
            nets["drafted"] = model
        out.append((os.path.basename(os.path.normpath(path)), nets, ck["objective"],
                    tokenizer_from_state(ck["tokenizer"])))
    return out


def parse_args(argv):
    ap = ArgParser(prog="dev/limit.py", description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=output, required=True, help="write every row here (dev/plot_limit.py reads it; "
                    "the tables are printed at the end)")
    ap.add_argument("--checkpoints", nargs="+", default=[], help="networks scored beside the oracle (their own "
                    "objective's samplers): shipped exports or model.pt files of Tiny Shakespeare's characters")
    ap.add_argument("--no-oracle", action="store_true", help="the networks alone")
    ap.add_argument("--samplers", default="", help="';'-separated names of the samplers to run (their names hold "
                    "commas; default: all; a network runs those of its objective)")
    ap.add_argument("--tokens-a-pass", type=list_of(at_least(1)), default="1,2,4,8,16,48", help="k, comma-"
                    "separated: gen_len / k passes (bd3: a block's 4 / k; semi-AR: k <= its block); each must divide "
                    "--gen-len")
    ap.add_argument("--gen-len", type=at_least(2), default=48, help="characters a sample (the presets' 48)")
    ap.add_argument("--prompt", default="ROMEO:", help="text every sample continues (the presets')")
    ap.add_argument("--n-samples", type=at_least(2, "a standard error"), default=1024, help="samples a point")
    ap.add_argument("--drafted-samples", type=at_least(2), default=256, help="samples of the drafted rounds, drawn "
                    "one at a time (batch 1, where each round drafts)")
    ap.add_argument("--batch-size", type=at_least(1), default=256, help="samples a sampler call")
    ap.add_argument("--short-len", type=at_least(0, most=3), default=3, help="characters of the oracle's exact laws "
                    "(65 ** n outcomes); 0: none")
    ap.add_argument("--short-prompt", default="ROMEO: ", help="the exact laws' text before (its last character)")
    ap.add_argument("--seed", type=seed, default=0, help="seeds each point's samples")
    args = ap.parse_args(argv)
    check(args, typed(argv))
    return args


def check(args, given):
    """Refuse, before any work, what would run nothing or be ignored where it is given."""
    raw, names = args.samplers, dict(SAMPLERS)
    args.samplers = [name.strip() for name in raw.split(";") if name.strip()]
    unknown = [name for name in args.samplers if name not in names]
    if unknown or ("--samplers" in given and not args.samplers):
        raise UserError(f"--samplers {(unknown or [raw])[0]!r} names no sampler here: give names from "
                        f"{'; '.join(names)}")
    if args.no_oracle and not args.checkpoints:
        raise UserError("--no-oracle with no --checkpoints runs nothing: drop --no-oracle, or give --checkpoints")
    bad = [k for k in args.tokens_a_pass if args.gen_len % k]
    if bad:
        raise UserError(f"--tokens-a-pass {bad[0]} does not divide --gen-len {args.gen_len}: give divisors of it")
    if not args.prompt:
        raise UserError("--prompt is empty: give text to continue (the AR and bd3 continue a prompt), e.g. ROMEO:")
    if args.no_oracle and "--short-len" in given:
        raise UserError("--short-len sets the oracle's exact laws, and --no-oracle draws none: drop one of them")
    if "--short-prompt" in given and (args.no_oracle or not args.short_len):
        raise UserError("--short-prompt acts only with the oracle's exact laws (--short-len 1 to 3): drop it")
    drafted = [name for name, spec in SAMPLERS if spec["kind"] == "drafted"]
    if "--drafted-samples" in given and args.samplers and not set(drafted) & set(args.samplers):
        raise UserError("--drafted-samples acts only when --samplers runs the bd3 drafting rounds: drop it")


def main(argv):
    args = parse_args(argv)
    nets = networks(args.checkpoints)  # a bad checkpoint refused before the text is read
    chain, tok, _ = oracle.shakespeare()
    for name, _, _, net_tok in nets:
        if fingerprint(net_tok) != fingerprint(tok):
            raise UserError(f"{name} reads another vocabulary than Tiny Shakespeare's characters: give a char model "
                            f"trained on data/tinyshakespeare.txt (the shipped baby, cpu, baby_bd3 or baby_ar)")
    start = tok.encode(args.prompt)  # refuses a character not in the text
    tok.encode(args.short_prompt)
    hold_threads()  # OMP_NUM_THREADS (or another thread variable), else 1
    entropy = chain.entropy(start[-1], args.gen_len) / args.gen_len
    print(f"chain: Tiny Shakespeare's training split, bigram, add-one; entropy rate {chain.entropy_rate():.4f} "
          f"nats/char; {args.gen_len} characters after {args.prompt!r}: {entropy:.4f} nats/char")
    rows, short = [], []
    if not args.no_oracle:
        full = dict(plain=oracle.Oracle(chain), ar=oracle.Oracle(chain, causal=True),
                    drafted=oracle.Oracle(chain, block_size=64, clean_causal=True))
        for net in full.values():
            net.schedule = Schedule(1000)  # the oracle reads no time: the shipped models' grid
        rows += run_model("oracle", full, "oracle", args, start, chain)
        short = short_rows(chain, tok, args) if args.short_len else []
    for name, nets_of, objective, _ in nets:
        rows += run_model(name, nets_of, objective, args, start, chain)
    doc = dict(settings=vars(args), entropy_rate=chain.entropy_rate(), alpha=oracle.ALPHA, entropy=entropy,
               rows=rows, short=short, threads=torch.get_num_threads(), torch=torch.__version__)
    write_json(args.json, doc)
    print(tables(doc))


if __name__ == "__main__":
    run_cli(main)
