"""What scripts/eval.py, frontier.py, race.py and dev/order_nll.py share: open a checkpoint, draw
samples, time and count them (one timing for every speed figure), score them (and held-out text
alike), write the JSON.

    python scripts/frontier.py artifacts/models/baby/model.pt --n-samples 32 --repeats 1"""
import json
import os
import statistics
from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch

from objectives import OBJECTIVES
from sampling.canvas import start_token
from diffusion import SamplerOptions
from checkpoint_manager import checkpoint_config
from evals.metrics import distinct_n, gen_ppl, ngram_js, sample_entropy
from checkpoint_manager import load_model, read_checkpoint
from utils.dataloader import fixed_windows
from utils.dist import run_queue, timed
from utils.errors import UserError
from utils.fileio import atomic_open
from utils.tokenizer import fingerprint, tokenizer_from_state


def open_checkpoint(path, device, data_path="", val_path=None):
    """(model, checkpoint dict, config, tokenizer) of a model.pt or export; data_path and val_path
    override its text's (val_path None: the checkpoint's; '': split data_path)."""
    ckpt = read_checkpoint(path)
    cfg = checkpoint_config(ckpt, f"checkpoint {path}")  # before a layer is built
    model, ckpt = load_model(path, device, ckpt)
    cfg = replace(cfg, data_path=data_path or cfg.data_path, val_path=cfg.val_path if val_path is None else val_path)
    return model, ckpt, cfg, tokenizer_from_state(ckpt["tokenizer"])


def write_json(path, doc):
    """Write doc to path as JSON, atomically (a reader never sees half a file); say so."""
    with atomic_open(path) as f:
        json.dump(doc, f, indent=1)
    print(f"wrote {path}")


def start_ids(tok, prompt):
    """The ids every sample continues: the prompt's, or the AR start token (newline / EOT)."""
    return tok.encode(prompt) if prompt else [start_token(tok)]


def load_judge(path, device, tokenizers):
    """The AR judge of gen-PPL, checked: exact, on each checkpoint's tokenizer (it reads ids)."""
    judge, _, cfg, judge_tok = open_checkpoint(path, device)
    if not OBJECTIVES[cfg.objective].EXACT:
        raise UserError(f"--ar-checkpoint {path} is a {cfg.objective} model: give an AR checkpoint "
                        f"(python train.py ... --objective=ar)")
    fp = fingerprint(judge_tok)
    for what, tok in tokenizers.items():
        if fingerprint(tok) != fp:
            raise UserError(f"tokenizer of {what} ({fingerprint(tok)}) differs from the scorer {path}'s ({fp}): "
                            f"gen-PPL needs an AR scorer trained with the same tokenizer on the same data")
    return judge


@dataclass(frozen=True)
class Job:
    """What draws samples: a model, its config (its objective and schedule; num_samples: a batch)
    and the sampler run on it (built once by the script: SamplerOptions.from_config)."""
    model: object
    cfg: object
    opts: SamplerOptions
    mask_id: int


def draw(job, start, gen_len, n, generator, on_step=None):
    """n samples of gen_len tokens after start by the job's sampler, job.cfg.num_samples a batch, on
    the model's device: (tokens (n, len(start) + gen_len) on the CPU, forward passes per sample)."""
    model, cfg, mask_id = job.model, job.cfg, job.mask_id
    obj, out, nfe = OBJECTIVES[cfg.objective], [], []
    device = next(model.parameters()).device
    for i in range(0, n, cfg.num_samples):
        B = min(cfg.num_samples, n - i)
        x = torch.cat([torch.tensor(start, dtype=torch.long, device=device).repeat(B, 1),
                       torch.full((B, gen_len), mask_id, device=device)], 1)
        gen_mask = torch.arange(x.size(1), device=device).expand_as(x) >= len(start)
        x, stats = obj.sample(model, x, gen_mask, cfg, job.opts, mask_id, generator, on_step=on_step)
        out.append(x.cpu())
        nfe += stats["nfe_per_sample"]
    return torch.cat(out), nfe


@contextmanager
def columns_counted(model, start):
    """{'columns': n, 'calls': c}: the network calls in the block and the columns they read past the
    prompt `start` (ids) but its last token (whose column predicts the first new one, as an AR's
    does). A column before P - 1 is the prompt's only where a call holds the prompt there: after a
    window moves, the text at those positions is generated, and its columns count. Committed
    tokens over columns is p_cache (WeDLM): 1 for an AR. Eager: a compiled step runs no hook."""
    seen, compiler = dict(columns=0, calls=0), model.compiler
    P = len(start)

    def count(module, args, kwargs):
        idx, pos = args[0], kwargs.get("rope_pos")
        pos = torch.arange(idx.size(1), device=idx.device) if pos is None else pos
        early = pos < P - 1  # (n,) the columns at the prompt's positions, but its last
        prompt = torch.tensor(start, device=idx.device)[pos[early]]
        holds = bool(early.any()) and bool((idx[:, early] == prompt).all())
        seen["columns"] += idx.size(0) * (int((~early).sum()) if holds else idx.size(1))
        seen["calls"] += 1
    hook = model.register_forward_pre_hook(count, with_kwargs=True)
    model.compiler = None  # eager: the columns each pass reads
    try:
        yield seen
    finally:
        hook.remove()
        model.compiler = compiler


def time_draws(jobs, start, gen_len, b, rounds, seed, device, per_round=1):
    """Time samplers as frontier.py and race.py report them. Each job (a Job) makes an untimed
    warm-up draw of b samples and one whose calls and columns are counted, both at `seed`; then,
    in each of `rounds` rounds, every job in turn makes `per_round` timed draws (seeds seed +
    per_round * k + j, k = 1..rounds), with no callback inside: a load that drifts slows every job
    alike. Returns ([per job: dict(seconds=[a draw's seconds, a round each], passes=[a timed
    draw's passes a sample], seeds, columns, calls)], [threads ready to run at each timed draw's
    start: run_queue, None where the OS keeps none])."""
    out = [dict(seconds=[], passes=[], seeds=[]) for _ in jobs]
    ready = []

    def call(job, s, row=None):  # row: collects the draw's passes a sample
        batch = replace(job, cfg=replace(job.cfg, num_samples=b))
        nfe = draw(batch, start, gen_len, b, torch.Generator().manual_seed(s))[1]
        if row is not None:
            row["passes"].append(statistics.mean(nfe))
            row["seeds"].append(s)
    for job, row in zip(jobs, out):
        call(job, seed)
        with columns_counted(job.model, start) as seen:
            call(job, seed)
        row.update(columns=seen["columns"], calls=seen["calls"])
    for k in range(1, rounds + 1):
        for job, row in zip(jobs, out):
            ready.append(run_queue())
            seeds = [seed + per_round * k + j for j in range(per_round)]
            seconds = timed(lambda: [call(job, s, row) for s in seeds], device)[0]
            row["seconds"].append(seconds / per_round)
    return out, ready


def speed_figures(row, b, gen_len):
    """The figures of one time_draws job: tokens/s = b * gen_len / its median seconds, with the
    spread (its slowest and fastest draw's); tokens a pass = gen_len / its median passes, with the
    spread; p_cache = the counted draw's tokens / columns."""
    seconds, passes = statistics.median(row["seconds"]), statistics.median(row["passes"])
    return dict(seconds=seconds, tokens_per_s=b * gen_len / seconds,
                spread=[b * gen_len / max(row["seconds"]), b * gen_len / min(row["seconds"])], passes=passes,
                tokens_per_pass=gen_len / passes,
                pass_spread=[gen_len / max(row["passes"]), gen_len / min(row["passes"])],
                p_cache=b * gen_len / row["columns"])


def busy_note(ready, device):
    """A line saying timed figures were read on a busy CPU (more threads ready to run than cores,
    the median over the rounds), else ""; as dev/bench_train.py words it."""
    known = [n for n in ready if n is not None]
    cores = os.cpu_count() or 1
    if device.type != "cpu" or not known or statistics.median(known) <= cores:
        return ""
    return (f"note: the machine was busy: {statistics.median(known):g} threads ready to run on {cores} cores (median "
            f"while timing, up to {max(known)}); these figures are not its speed, nor their ratios: time it alone")


def score(samples, P, tok, judge=None, batch_size=32, reference=None):
    """Figures of samples (n, P + gen_len) past their P given tokens: distinct-2/-3, sample entropy,
    first text; with a judge, gen-PPL and NLL; with reference, n-gram JS (js, js_mean, bits)."""
    gen = samples[:, P:].cpu()
    texts = [tok.decode(row.tolist()) for row in gen]
    res = dict(distinct_2=distinct_n(texts, 2), distinct_3=distinct_n(texts, 3), sample_entropy=sample_entropy(gen),
               sample_text=texts[0])
    if judge is not None:
        seqs = samples.to(next(judge.parameters()).device)
        if not P:  # the AR start token: the judge's one token of context
            first = torch.full((len(seqs), 1), start_token(tok), dtype=torch.long, device=seqs.device)
            seqs, P = torch.cat([first, seqs], 1), 1
        res["gen_ppl"], res["gen_nll"] = gen_ppl(judge, seqs, P, batch_size)
    if reference is not None:
        js, js_mean = ngram_js(texts, reference)  # n = 1..4
        res.update(js={str(n): v for n, v in js.items()}, js_mean=js_mean)
    return res


def held_out_windows(ids, n, length, what="the split"):
    """n disjoint windows of `length` tokens evenly spaced over ids, to read samples against."""
    windows = fixed_windows(ids, n, length)
    if windows.size(1) != length:
        raise UserError(f"{what} has fewer than {length} tokens: use a shorter --gen-len")
    return windows
