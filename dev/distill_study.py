"""Self-distillation through time (SDTT) on a trained masked-diffusion checkpoint: a study (issue 104,
part 2). Does a student that learns in one pass what its teacher does in two sample better at few
passes, read at matched entropy?

    OMP_NUM_THREADS=1 python dev/distill_study.py artifacts/weights/baby --student-steps 16 --iters 600 \
        --out-dir artifacts/models/sdtt16
    python scripts/frontier.py artifacts/weights/baby artifacts/models/sdtt16/model.pt \
        --ar-checkpoint artifacts/weights/baby_ar --gen-len 48 --grid steps=16 --grid order=random ...

SDTT (Deschenaux & Gulcehre 2024, arXiv 2410.21035, Alg. 1): a window's masked state x_t goes through
two of the teacher's ancestral half-steps t -> t - h -> t - 2h, h = T / (2 S) for a student of S
steps. The target at a position is the teacher's x0 law where that position was revealed: its first
pass's for the positions the first half-step revealed, its second pass's (which read those reveals)
for the rest. The student reads x_t once and matches the target (KL, at the masked positions); the
teacher runs without gradients. One round halves the passes; --rounds > 1 hands the student over as
the next round's teacher (its steps halved again), every --iters steps.

Self-conditioning (the `baby` preset's): x_t's input is, for half the rows, the teacher's first
reading of x_t (training's rule, diffusion.self_condition_input), zeros for the rest; the teacher's
second half-step reads its first prediction, as diffusion.denoise feeds a pass the last one. The
dual objective's causal loss stays at the checkpoint's weight, so its AR mode stays trained.

A study in dev/: its verdict in dev/LOG.md ("Fewer passes by self-distillation").
"""
import copy
import os
import sys
import time
from dataclasses import asdict, replace

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

import checkpoint_manager  # noqa: E402
from diffusion import (SELF_COND_SHARE, Schedule, corrupt, dual_ar_loss, masking_draws, predict_logits,  # noqa: E402
                       self_condition_input, stratified_times)
from distill import Teacher, masked_kl, mean_target, teacher_target  # noqa: E402
from model import ModelArgs, Transformer  # noqa: E402
from utils import dataloader, optim  # noqa: E402
from utils.checkpoint import save_checkpoint  # noqa: E402
from utils.dist import keyed_generator  # noqa: E402
from utils.draws import uniforms  # noqa: E402
from utils.cli import ArgParser, at_least, list_of, model_path, seed  # noqa: E402
from utils.errors import UserError, run_cli  # noqa: E402
from utils.tokenizer import fingerprint, tokenizer_from_state  # noqa: E402

STREAM_DATA, STREAM_MASK, STREAM_TIME = 0, 1, 2  # train.py's keys


# ---------------------------------------------------------------- the loss, read beside the teacher's own pass
def sdtt_draws(n, L, schedule, generator, u, substeps=2, self_cond=True, m=1):
    """One micro-batch's draws, keyed: t stratified over 1..T (every mask rate a sampler visits),
    the masks' uniforms, self-conditioning's rows, the m targets' sub-steps' reveal and token
    uniforms (m, k - 1, n, L)."""
    t = stratified_times(n, schedule.T, None, "cpu", 0, n, u)
    drawn = masking_draws((n, L), t, SELF_COND_SHARE if self_cond else 0.0, generator)
    reveal_u = torch.rand((m, substeps - 1, n, L), generator=generator)
    token_u = uniforms((m, substeps - 1, n, L), generator, torch.device("cpu"))
    return drawn, reveal_u, token_u


def sdtt_loss(student, teacher, x0, draws, schedule, mask_id, h, direction="forward", self_cond=True):
    """The student's mean KL to the teacher's mean target (distill.mean_target) over x_t's masked
    positions, and two readings there: the KL of the teacher's one-pass law (the student at step
    0) on the same draws, and the target's entropy. direction 'reverse': KL(student || target)."""
    drawn, reveal_u, token_u = draws
    xt, masked = corrupt(x0, drawn.t, schedule, mask_id, uniform=drawn.uniform)
    sc = None
    if self_cond:  # the teacher's reading of x_t, for half the rows (training's rule)
        sc = self_condition_input(lambda r: predict_logits(teacher, xt[r], drawn.t[r], mask_id), masked, drawn.rows)
    target, one_pass = mean_target(Teacher(teacher, schedule, mask_id, h), xt, drawn.t, sc, reveal_u, token_u)
    logq = torch.log_softmax(predict_logits(student, xt, drawn.t, mask_id, sc=sc), -1)
    pair = (target, logq) if direction == "forward" else (logq, target)
    kl = masked_kl(*pair)  # (B, L)
    base = masked_kl(target, one_pass) if direction == "forward" else masked_kl(one_pass, target)
    entropy = -masked_kl(target, torch.zeros_like(target))  # -sum p log p
    n = masked.sum().clamp(min=1)
    return (kl * masked).sum() / n, ((base * masked).sum() / n).detach(), ((entropy * masked).sum() / n).detach()


@torch.no_grad()
def reducible_gap(teacher, x0, schedule, mask_id, h, substeps, m, generator, self_cond=True):
    """What one round can teach at most, per masked position of x0's (n, L) states at t stratified
    over 1..T: the student's optimum under the forward KL is the target's mean over the sub-steps'
    draws, E[target] (m draws); its gain over the teacher's one pass is KL(E[target] || one pass),
    and E KL(target || E[target]) is the loss no student removes. Returns (gain, rest, mask rate),
    each (N,) over the N masked positions."""
    n, L = x0.shape
    drawn = masking_draws((n, L), stratified_times(n, schedule.T, generator), SELF_COND_SHARE if self_cond else 0.0,
                          generator)
    xt, masked = corrupt(x0, drawn.t, schedule, mask_id, uniform=drawn.uniform)
    sc = None
    if self_cond:
        sc = self_condition_input(lambda r: predict_logits(teacher, xt[r], drawn.t[r], mask_id), masked, drawn.rows)
    targets = []
    for _ in range(m):
        reveal_u = torch.rand((substeps - 1, n, L), generator=generator)
        token_u = uniforms((substeps - 1, n, L), generator, torch.device("cpu"))
        target, first = teacher_target(Teacher(teacher, schedule, mask_id, h), xt, drawn.t, sc, reveal_u, token_u)
        targets.append(target)
    mean = torch.stack(targets).exp().mean(0).log()  # (n, L, V)
    gain = masked_kl(mean, first)[masked]
    rest = torch.stack([masked_kl(tg, mean) for tg in targets]).mean(0)[masked]
    rate = masked.float().mean(1, keepdim=True).expand(n, L)[masked]
    return gain, rest, rate


def print_gap(a, teacher, cfg, tok, train_ids, schedule):
    """--gap: reducible_gap at --student-steps for each k of --gap's list, by the states' mask rate."""
    g = keyed_generator(a.seed, 7)
    x0 = dataloader.get_batch(train_ids, a.batch_size, cfg.block_size, g, torch.device("cpu"))
    for k in a.gap:
        h = round(schedule.T / (k * a.student_steps))
        gain, rest, rate = reducible_gap(teacher, x0, schedule, tok.mask_id, h, k, a.draws, g, cfg.self_cond)
        by = [(lo, hi) for lo, hi in ((0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.01))]
        parts = ", ".join(f"rate {lo:.2f}-{min(hi, 1):.2f}: {gain[(rate >= lo) & (rate < hi)].mean():.4f}"
                          for lo, hi in by)
        print(f"S={a.student_steps}, k={k} (the teacher at {k * a.student_steps} passes): the most a round can gain "
              f"{gain.mean():.4f} +- {gain.std() / len(gain) ** 0.5:.4f} nats a masked position ({parts}); the "
              f"loss no student removes {rest.mean():.4f}; {len(gain)} positions, {a.draws} draws each", flush=True)


class IdealStudent(torch.nn.Module):
    """The best student one round can make, run as a network: at each pass it returns the mean of
    m of the teacher's k-step targets (mean_target) at the canvas it reads: the forward KL's
    optimum, E[target], without training. It costs 1 + m (k - 1) teacher passes a pass: an
    instrument."""

    def __init__(self, teacher, schedule, mask_id, h, substeps, m, seed=0):
        super().__init__()
        self.teacher, self.schedule, self.mask_id, self.h, self.k, self.m = teacher, schedule, mask_id, h, substeps, m
        self.args = teacher.args
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # evals.samples reads the device off a parameter
        self.g = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def forward(self, idx, t=None, sc=None, positions=None, **kw):
        B, L = idx.shape
        reveal_u = torch.rand((self.m, self.k - 1, B, L), generator=self.g)
        token_u = uniforms((self.m, self.k - 1, B, L), self.g, torch.device("cpu"))
        chain = Teacher(self.teacher, self.schedule, self.mask_id, self.h)
        mean = mean_target(chain, idx, t, sc, reveal_u, token_u)[0]
        return mean if positions is None else mean.flatten(0, 1)[positions]  # (B, L, V) log E[target]


def print_ideal(a, teacher, cfg, tok, schedule):
    """--ideal M: gen-PPL at the held-out entropy of the teacher at S, 2S and 3S passes and of the
    ideal student (IdealStudent) at S, the preset's sampler otherwise (scripts/frontier.py's reading)."""
    from diffusion import SamplerOptions
    from evals.samples import Job, draw, held_out_windows, load_judge, score, start_ids
    from utils.draws import Law
    from scripts.frontier import at_entropy
    _, _, val_ids, _ = dataloader.prepare_data(cfg, tok, verbose=False)
    windows = held_out_windows(val_ids[:len(val_ids) // 2], a.n_samples, cfg.gen_len, "dev")
    held = score(windows, 0, tok)["sample_entropy"]
    ref = tok.decode(val_ids[len(val_ids) // 2:].tolist())  # test: the n-gram divergence's reference, as frontier's
    judge = load_judge(a.judge, torch.device("cpu"), {a.teacher: tok})
    S, start = a.student_steps, start_ids(tok, "")
    h = round(schedule.T / (a.substeps * S))
    ideal = IdealStudent(teacher, schedule, tok.mask_id, h, a.substeps, a.ideal, a.seed)
    passes = (S, 2 * S, 3 * S) if a.teacher_passes is None else a.teacher_passes
    rows = [(f"teacher, {n} passes", teacher, n) for n in passes]
    rows.append((f"ideal student of k = {a.substeps}, {S} passes ({a.ideal} targets a pass)", ideal, S))
    print(f"held-out entropy {held:.3f} (dev, {len(windows)} windows of {cfg.gen_len}); judge {a.judge}")
    for name, model, steps in rows:
        points = []
        for temp in a.temperatures:
            opts = replace(SamplerOptions.from_config(cfg), steps=steps, law=Law(temperature=temp), order="random",
                           remask="none")
            job = Job(model, replace(cfg, num_samples=64), opts, tok.mask_id)
            samples, _ = draw(job, start, cfg.gen_len, a.n_samples, torch.Generator().manual_seed(a.seed))
            points.append(score(samples, len(start), tok, judge, reference=ref))
            print(f"  {name}, T={temp:g}: entropy {points[-1]['sample_entropy']:.3f}, gen-PPL "
                  f"{points[-1]['gen_ppl']:.2f}, JS {points[-1]['js_mean']:.4f}", flush=True)
        reading = at_entropy(points, held, ("gen_ppl", "js_mean"))
        print(f"  {name} at the held-out entropy: gen-PPL {reading['gen_ppl']:.2f}, JS {reading['js_mean']:.4f}"
              if reading else
              f"  {name}: the held-out entropy not reached", flush=True)


# ---------------------------------------------------------------- the loop
def parse_args(argv):
    p = ArgParser(prog="dev/distill_study.py", description=__doc__.split("\n\n")[0])
    p.add_argument("teacher", type=model_path, help="a masked-diffusion model.pt or exported folder")
    p.add_argument("--out-dir", required=True, help="folder for the student's model.pt")
    p.add_argument("--student-steps", type=at_least(1), default=16, help="S: the student's passes; the teacher's k S")
    p.add_argument("--substeps", type=at_least(2), default=2, help="k: the teacher's passes a student pass (SDTT: 2)")
    p.add_argument("--rounds", type=at_least(1), default=1, help="rounds of --iters steps, S halved after each")
    p.add_argument("--iters", type=at_least(1), default=600, help="steps a round")
    p.add_argument("--batch-size", type=at_least(1), default=12)
    p.add_argument("--copies", type=at_least(1), default=2, help="masks (and times) of each window a step")
    p.add_argument("--targets", type=at_least(1), default=1, help="m: targets averaged a state (SDTT: 1)")
    p.add_argument("--direction", default="forward", choices=("forward", "reverse"))
    p.add_argument("--optimizer", default="", choices=("", "muon", "adamw"), help="'' = the checkpoint's")
    p.add_argument("--muon-lr", type=at_least(0.0), default=0.003)
    p.add_argument("--lr", type=at_least(0.0), default=5e-4, help="AdamW's (embeddings, head)")
    p.add_argument("--warmup", type=at_least(0), default=50)
    p.add_argument("--ema", type=at_least(0.0, most=0.9999), default=0.99)
    p.add_argument("--dual-ar", type=float, default=-1.0, help="the causal loss's weight; -1: the checkpoint's")
    p.add_argument("--seed", type=seed, default=1337)
    p.add_argument("--log", type=at_least(1), default=50)
    p.add_argument("--gap", type=list_of(at_least(1)), default=None,
                   help="k1,k2,...: print reducible_gap for each k instead of training")
    p.add_argument("--draws", type=at_least(1), default=16, help="--gap: draws of the sub-steps a state")
    p.add_argument("--ideal", type=at_least(0), default=0, help="M > 0: print the ideal student's frontier reading (M "
                   "targets a pass) beside the teacher's, instead of training")
    p.add_argument("--judge", type=model_path, default="artifacts/weights/baby_ar", help="--ideal: the AR judge")
    p.add_argument("--n-samples", type=at_least(2), default=256, help="--ideal: samples a point")
    p.add_argument("--temperatures", type=list_of(float), default=[0.6, 0.8, 1.0], help="--ideal: each curve's")
    p.add_argument("--teacher-passes", type=list_of(at_least(1)), default=None,
                   help="--ideal: the teacher's rows (default S, 2S, 3S)")
    return p.parse_args(argv)


def build(path, device):
    """(student, teacher, checkpoint dict, config) from a checkpoint: both start as its weights."""
    ckpt = checkpoint_manager.read_checkpoint(path)
    cfg = checkpoint_manager.checkpoint_config(ckpt, path)
    if cfg.objective != "mdlm":
        raise UserError(f"{path} is a {cfg.objective} model: SDTT here distils masked diffusion; give an mdlm "
                        f"checkpoint (artifacts/weights/baby)")
    student = Transformer(ModelArgs(**ckpt["model_args"]))
    student.load_state_dict(checkpoint_manager.weights(ckpt))
    teacher = copy.deepcopy(student).eval().requires_grad_(False)
    return student.to(device).train(), teacher.to(device), ckpt, cfg


def save(out, student_state, ckpt, cfg, it, note):
    """A model.pt every script reads: the teacher's config and tokenizer, the student's weights."""
    os.makedirs(out, exist_ok=True)
    keep = dict(config=asdict(cfg), model_args=ckpt["model_args"], tokenizer=ckpt["tokenizer"],
                tokenizer_fingerprint=fingerprint(tokenizer_from_state(ckpt["tokenizer"])), iter=it,
                meta=ckpt.get("meta", {}), best_val=float("nan"), best_iter=-1, val=None, study=note)
    save_checkpoint(os.path.join(out, "model.pt"), dict(keep, model=student_state))


def main(argv):
    a = parse_args(argv)
    device = torch.device("cpu")
    student, teacher, ckpt, cfg = build(a.teacher, device)
    tok = tokenizer_from_state(ckpt["tokenizer"])
    _, train_ids, _, _ = dataloader.prepare_data(cfg, tok, verbose=False)
    schedule = Schedule(cfg.diffusion_steps, cfg.schedule)
    if a.gap:
        return print_gap(a, teacher, cfg, tok, train_ids, schedule)
    if a.ideal:
        return print_ideal(a, teacher.eval(), cfg, tok, schedule)
    dual = cfg.dual_ar if a.dual_ar < 0 else a.dual_ar
    total = a.iters * a.rounds
    ocfg = replace(cfg, learning_rate=a.lr, min_lr=0.3 * a.lr, muon_lr=a.muon_lr, warmup_iters=a.warmup,
                   max_iters=total, weight_decay=0.0, optimizer=a.optimizer or cfg.optimizer)
    opt = optim.build_optimizer(student, ocfg, device)
    ema = optim.EMA(student, a.ema) if a.ema else None
    steps = a.student_steps
    print(f"teacher {a.teacher}; student {steps} passes (teacher {a.substeps * steps}); {a.rounds} round(s) x "
          f"{a.iters}; "
          f"batch {a.batch_size} x {a.copies}; {a.direction} KL; dual AR {dual}; threads {torch.get_num_threads()}")
    t0, acc, base, ent, nacc = time.time(), 0.0, 0.0, 0.0, 0
    for it in range(total):
        if it and it % a.iters == 0:  # the next round: the student (its average) teaches, half the passes
            teacher.load_state_dict((ema.model if ema else student).state_dict())
            steps //= 2
            print(f"round {it // a.iters + 1}: student {steps} passes")
        h = round(schedule.T / (a.substeps * steps))
        optim.set_lr(opt, optim.lr_at(it, ocfg) / ocfg.learning_rate)
        x = dataloader.get_batch(train_ids, a.batch_size, cfg.block_size, keyed_generator(a.seed, STREAM_DATA, it),
                                 device)
        u = torch.rand((), generator=keyed_generator(a.seed, STREAM_TIME, it), dtype=torch.float64)
        copies = x.repeat(a.copies, 1)
        draws = sdtt_draws(len(copies), x.size(1), schedule, keyed_generator(a.seed, STREAM_MASK, it), u,
                           a.substeps, cfg.self_cond, a.targets)
        loss, b, ent_t = sdtt_loss(student, teacher, copies, draws, schedule, tok.mask_id, h, a.direction,
                                   cfg.self_cond)
        total_loss = loss + (dual * dual_ar_loss(student, x, tok.mask_id) if dual else 0.0)
        total_loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if ema:
            ema.update(student)
        acc, base, ent, nacc = acc + loss.item(), base + b.item(), ent + ent_t.item(), nacc + 1
        if (it + 1) % a.log == 0:
            print(f"iter {it + 1}: KL {acc / nacc:.4f}, the teacher's one pass {base / nacc:.4f}, paired "
                  f"{(acc - base) / nacc:+.4f} (target entropy {ent / nacc:.3f}), "
                  f"{(time.time() - t0) / (it + 1) * 1e3:.0f} ms/step", flush=True)
            acc, base, ent, nacc = 0.0, 0.0, 0.0, 0
    state = (ema.model if ema else student).state_dict()
    # its sampler's default: the passes it learned (the teacher's other settings kept)
    own = replace(cfg, max_iters=total, out_dir=a.out_dir, checkpoint=os.path.join(a.out_dir, "model.pt"), steps=steps)
    save(a.out_dir, state, ckpt, own, total, vars(a))
    print(f"saved {os.path.join(a.out_dir, 'model.pt')} in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    run_cli(main)
