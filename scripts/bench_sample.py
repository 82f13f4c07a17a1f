"""Sampler benchmark: one table, one row per sampler setting (plus AR + KV cache with --ar-checkpoint), one device.

Run from the repo root:

    python scripts/bench_sample.py --checkpoint artifacts/models/cpu/model.pt --ar-checkpoint artifacts/models/cpu_ar/model.pt
    python scripts/bench_sample.py --checkpoint M.pt --ar-checkpoint A.pt --gen-len 256 --steps 64 --num-samples 1 --device cuda
    python scripts/bench_sample.py --checkpoint M.pt --only reference,threshold --repeats 1 --gen-len 32   # a quick look
    python scripts/bench_sample.py --bd3-checkpoints B1.pt B4.pt --checkpoint M.pt --only semi-AR --ar-checkpoint A.pt \
        --gen-len 256 --num-samples 1     # block diffusion at each L' beside MDLM and AR, past a 64-token context

Columns:
  NFE       forward passes per sample (mean; adaptive for threshold rows). bd3: one per reverse step (a finished
            block enters the KV cache in the next block's first step); AR: one per token
  wall s    median over --repeats of the seconds for the whole batch (after one untimed warm-up); the rows are
            timed round-robin, so a drifting load slows them alike
  tok/s     generated tokens in the batch / wall s
  gen-PPL   exp(mean NLL of the generated tokens given the prompt) under the AR checkpoint, or under --judge
            (same tokenizer required, else exit 2); without a judge the AR row is scored by its own model
  dist-2    unique word bigrams / all word bigrams, pooled over the samples
  entropy   mean over samples of the entropy (nats) of the sample's own token histogram (low = repetitive)
Rows marked '=NFE' rerun a fixed-step sampler at the threshold row's mean NFE (equal-NFE comparisons).
The 'held-out text' row scores real validation windows of the same length (first token as the context).
Samples longer than the scorer's context are scored with a sliding window (evals/metrics.windowed_ar_nll);
an AR row past its context decodes with ar.sample_ar_window (the same window as bd3).
"""
import os
import statistics
import sys
from dataclasses import replace

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

import objectives  # noqa: E402
from ar import sample_ar_window  # noqa: E402
from canvas import build_canvas, generate  # noqa: E402
from common import Schedule  # noqa: E402
from configurator import config_from_dict, validate  # noqa: E402
from evals.samples import load_judge, score, start_ids  # noqa: E402
from utils.checkpoint import load_model  # noqa: E402
from utils.dataloader import split_texts  # noqa: E402
from utils.dist import pick_device, timed  # noqa: E402
from utils.cli import ArgParser, at_least, list_of  # noqa: E402
from utils.errors import UserError, run_cli  # noqa: E402
from utils.tokenizer import fingerprint, tokenizer_from_state  # noqa: E402

PLAIN = dict(order="confidence", tokens_per_step="schedule", remask="refine", threshold=0.0, semi_ar_length=0)


def parse_args(argv):
    p = ArgParser(prog="scripts/bench_sample.py", description="Benchmark every sampler setting on one checkpoint.")
    p.add_argument("--checkpoint", default="", help="masked diffusion (mdlm) model.pt: the sampler rows")
    p.add_argument("--bd3-checkpoints", nargs="*", default=[], help="block diffusion model.pt files (one per L')")
    p.add_argument("--bd3-steps", type=list_of(at_least(0)), default="0", help="comma-separated reverse steps per "
                   "block for the bd3 rows; 0 = the block's length (one token per step)")
    p.add_argument("--ar-checkpoint", default="", help="AR model.pt: the gen-PPL scorer and the AR + KV-cache row")
    p.add_argument("--judge", default="", help="another AR model.pt to score every row instead (e.g. a larger one); "
                   "--ar-checkpoint then only samples the AR row")
    p.add_argument("--prompt", default=None, help="prompt for every sample (default: the checkpoint's)")
    p.add_argument("--gen-len", type=at_least(1), default=256, help="tokens generated per sample")
    p.add_argument("--steps", type=at_least(1), default=64, help="NFE of the fixed-step rows")
    p.add_argument("--semi-ar-length", "--block-length", type=int, default=32, help="tokens per block of the semi-AR rows")
    p.add_argument("--threshold", type=float, default=0.9, help="confidence threshold of the parallel-decoding rows")
    p.add_argument("--num-samples", type=at_least(1), default=4, help="batch size")
    p.add_argument("--repeats", type=at_least(1), default=3, help="timed runs per row (median reported)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--only", type=list_of(str), default=[], help="comma-separated substrings: run only the sampler "
                   "rows whose name contains one (the AR, equal-NFE and held-out rows follow from the others)")
    a = p.parse_args(argv)
    if not a.checkpoint and not a.bd3_checkpoints:
        raise UserError("give a diffusion checkpoint: --checkpoint MDLM.pt and/or --bd3-checkpoints BD3.pt ...")
    return a


def settings(a):
    b, tau = a.semi_ar_length, a.threshold
    return [
        ("reference: confidence, refine", {}),
        ("ancestral-like: random order", dict(order="random", remask="none")),
        ("LLaDA: confidence, linear", dict(tokens_per_step="linear", remask="none")),
        ("margin, linear", dict(order="margin", tokens_per_step="linear", remask="none")),
        ("entropy, linear", dict(order="entropy", tokens_per_step="linear", remask="none")),
        ("MaskGIT cosine counts", dict(tokens_per_step="cosine", remask="none")),
        ("ReMDM eta=0.02", dict(remask="remdm", remask_eta=0.02)),
        (f"semi-AR blocks of {b}, linear", dict(semi_ar_length=b, tokens_per_step="linear", remask="none")),
        (f"threshold {tau:g}", dict(threshold=tau, remask="none")),
        (f"threshold {tau:g} + blocks of {b}", dict(threshold=tau, remask="none", semi_ar_length=b)),
    ]


def generate_runner(model, tok, cfg, schedule, device, a):
    """One row's sampler as a call: seed -> (tokens, NFE per sample, prompt tokens, generated tokens per sample)."""
    canvas = build_canvas(cfg, tok, model.args.block_size)

    def run(seed):
        _, out, stats = generate(model, tok, canvas, cfg, schedule, device, torch.Generator().manual_seed(seed),
                                 num_samples=a.num_samples)
        return out, stats["nfe_per_sample"], stats["prompt_tokens"], canvas.n_gen
    return run


def ar_window_runner(model, tok, cfg, device, a):
    """The AR + KV cache row when prompt + gen_len exceeds the AR model's context: sample_ar_window."""
    start = start_ids(tok, cfg.prompt)
    prompt = torch.tensor(start, device=device).repeat(a.num_samples, 1)

    def run(seed):
        out = sample_ar_window(model, prompt, cfg.gen_len, cfg.temperature, generator=torch.Generator().manual_seed(seed))
        return out, [cfg.gen_len] * a.num_samples, len(start), cfg.gen_len  # one pass per token
    return run


def measure_rows(runners, tok, device, a, scorer):
    """Time the rows round-robin: one untimed warm-up call each (allocations, kernels), then every round calls
    each row once, so a shared machine whose load drifts slows all rows alike; median seconds per row."""
    for run in runners:
        run(a.seed)
    runs = [[] for _ in runners]  # per row, per round: (seconds, (tokens, NFE per sample, P, n_gen))
    for r in range(1, a.repeats + 1):
        for k, run in enumerate(runners):
            runs[k].append(timed(lambda: run(a.seed + r), device))
    rows = []
    for secs, results in (zip(*row) for row in runs):
        outs, nfes, P, n_gen = zip(*results)
        nfe = [n for per_round in nfes for n in per_round]
        row = dict(nfe=sum(nfe) / len(nfe), wall=statistics.median(secs))
        row["tps"] = a.num_samples * n_gen[-1] / row["wall"]
        rows.append(row | score(torch.cat(outs), P[-1], tok, scorer))
    return rows


def bd3_rows(a, tok, device):
    """(name, model, cfg, overrides) for every bd3 checkpoint and steps-per-block setting, and a threshold row each."""
    rows = []
    for path in a.bd3_checkpoints:
        model, ckpt = load_model(path, device)
        cfg = config_from_dict(ckpt["config"])
        if "bd3_block" in objectives.get(cfg.objective).IGNORES:  # not block diffusion: it has no block size L'
            raise UserError(f"--bd3-checkpoints {path} is a {cfg.objective} model: give block diffusion (objective=bd3) ones")
        if fingerprint(tokenizer_from_state(ckpt["tokenizer"])) != fingerprint(tok):
            raise UserError(f"--bd3-checkpoints {path} uses another tokenizer than the other checkpoints")
        k = cfg.bd3_block
        band = f" [{cfg.mask_min:g},{cfg.mask_max:g}]" if (cfg.mask_min, cfg.mask_max) != (0, 1) else ""
        for s in sorted({min(s or k, k) for s in a.bd3_steps}):
            rows.append((f"bd3 L'={k}{band}, {s} steps/block", model, cfg, dict(steps=s)))
        rows.append((f"bd3 L'={k}{band}, threshold {a.threshold:g}", model, cfg, dict(threshold=a.threshold, remask="none")))
    names = [r[0] for r in rows]
    if len(set(names)) < len(names):
        raise UserError("two --bd3-checkpoints have the same block size and training band: give each once")
    return rows


def held_out(cfg, tok, a, scorer):
    """The same statistics on real validation windows of gen_len tokens (+1 token of context)."""
    try:
        _, val = split_texts(cfg)
    except UserError as e:
        return None, str(e).split(":")[0]
    ids = torch.tensor(tok.encode(val), dtype=torch.long)
    n, L = a.num_samples * a.repeats, a.gen_len + 1
    if len(ids) < L:
        return None, f"validation text shorter than {L} tokens"
    starts = torch.linspace(0, len(ids) - L, n).long()
    out = torch.stack([ids[s:s + L] for s in starts.tolist()])
    return score(out, 1, tok, scorer), None


def fmt(v, spec):
    return format(v, spec) if v is not None else format("n/a", ">" + spec.split(".")[0].lstrip(">").rstrip(",f"))


def show(name, r):
    print(f"{name:<44} {fmt(r.get('nfe'), '7.1f')} {fmt(r.get('wall'), '8.3f')} {fmt(r.get('tps'), '9,.0f')} "
          f"{fmt(r.get('gen_ppl'), '8.3f')} {r['distinct_2']:7.3f} {r['sample_entropy']:8.3f}", flush=True)


def equal_nfe_rows(mdlm, measured, model, tok, base, schedule, device, a, scorer):
    """The fixed-step samplers given the threshold row's mean NFE (equal-NFE comparisons): [(name, row)]."""
    thr = [name for name, over in mdlm if over.get("threshold") and not over.get("semi_ar_length")]
    if not thr:
        return []
    k = max(1, round(measured[thr[0]]["nfe"]))  # schedule counts need k <= T distinct grid times; linear counts do not
    ref = (f"=NFE {k}: reference", dict(steps=k)) if k <= base.diffusion_steps else \
        (f"=NFE {k}: confidence, refine, linear", dict(steps=k, tokens_per_step="linear"))
    eq = [ref, (f"=NFE {k}: LLaDA confidence, linear", dict(steps=k, tokens_per_step="linear", remask="none"))]
    runners = [generate_runner(model, tok, replace(base, **over), schedule, device, a) for _, over in eq]
    return [(name, r) for (name, _), r in zip(eq, measure_rows(runners, tok, device, a, scorer))]


def main(argv):
    a = parse_args(argv)
    device = pick_device(a.device)
    first = a.checkpoint or a.bd3_checkpoints[0]
    model, ckpt = load_model(first, device)
    cfg, tok = config_from_dict(ckpt["config"]), tokenizer_from_state(ckpt["tokenizer"])
    if a.checkpoint and set(PLAIN) & set(objectives.get(cfg.objective).IGNORES):  # its rows vary these sampler switches
        raise UserError(f"--checkpoint {a.checkpoint} is a {cfg.objective} model: bench_sample compares masked-diffusion "
                        f"samplers; give an mdlm checkpoint (bd3 ones as --bd3-checkpoints, the AR one as --ar-checkpoint)")
    ar_model = load_judge(a.ar_checkpoint, device, {first: tok}) if a.ar_checkpoint else None  # the AR row's model
    scorer = load_judge(a.judge, device, {first: tok}, "--judge") if a.judge else ar_model
    sampling = dict(prompt=cfg.prompt if a.prompt is None else a.prompt, gen_len=a.gen_len, steps=a.steps,
                    temperature=a.temperature, top_k=0, top_p=1.0, num_samples=a.num_samples, infill="",
                    prefix_file="", suffix_file="", viz_video="", remask_eta=0.02, **PLAIN)
    base = replace(cfg, **sampling)
    validate(base)
    schedule = Schedule(cfg.diffusion_steps, cfg.schedule)
    bd3 = bd3_rows(a, tok, device)
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{device.type} ({torch.get_num_threads()} threads)"
    print(f"device {dev_name}, float32 weights, float64 sampling; torch {torch.__version__}")
    print(f"checkpoint {first}: {model.num_params():,} params, T={cfg.diffusion_steps} {cfg.schedule}; "
          f"{a.num_samples} samples x {a.gen_len} tokens, prompt {base.prompt!r}, temperature {a.temperature:g}, "
          f"{a.repeats} timed repeats (median)")
    mdlm = settings(a) if a.checkpoint else []  # the masked-diffusion rows --only keeps
    only = a.only
    unknown = [s for s in only if not any(s in name for name, _ in mdlm)]
    if unknown:
        raise UserError(f"--only {','.join(unknown)} matches no sampler row: use parts of these names: "
                        f"{'; '.join(name for name, _ in mdlm)}")
    mdlm = [(name, over) for name, over in mdlm if not only or any(s in name for s in only)]
    header = f"{'sampler':<44} {'NFE':>7} {'wall s':>8} {'tok/s':>9} {'gen-PPL':>8} {'dist-2':>7} {'entropy':>8}"
    print(header + "\n" + "-" * len(header))
    # every row is timed in the same rounds (mdlm settings, bd3 at each L', AR), so their tok/s compare
    named = [(name, generate_runner(model, tok, replace(base, **over), schedule, device, a)) for name, over in mdlm]
    for name, bmodel, bcfg, over in bd3:  # block diffusion, one row per L' and steps per block
        bcfg = replace(bcfg, **{**sampling, **over})
        named.append((name, generate_runner(bmodel, tok, bcfg, Schedule(bcfg.diffusion_steps, bcfg.schedule), device, a)))
    if ar_model is not None:
        ar_cfg, how = replace(base, objective="ar"), "judged" if a.judge else "self-scored"
        if len(tok.encode(base.prompt)) + a.gen_len <= ar_model.args.block_size - 1:
            named.append((f"AR + KV cache ({how})", generate_runner(ar_model, tok, ar_cfg, schedule, device, a)))
        else:
            named.append((f"AR + KV cache, sliding window ({how})", ar_window_runner(ar_model, tok, ar_cfg, device, a)))
    measured = dict(zip([n for n, _ in named], measure_rows([r for _, r in named], tok, device, a, scorer)))
    for name, _ in mdlm:
        show(name, measured[name])
    for name, r in equal_nfe_rows(mdlm, measured, model, tok, base, schedule, device, a, scorer):
        show(name, r)
    for name in list(measured)[len(mdlm):]:
        show(name, measured[name])
    ref, why = held_out(cfg, tok, a, scorer)
    if ref is not None:
        show("held-out text", ref)
    else:
        print(f"(no held-out row: {why})")
    if scorer is None:
        print("(gen-PPL needs --ar-checkpoint)")


if __name__ == "__main__":
    run_cli(main)
