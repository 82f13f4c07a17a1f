"""Self-distillation through time (distill.py, --distill_from): the KL against a hand computation, with no NaN in its
gradient where a law is 0; the teacher's target at one sub-step is its one pass; its k-step target against its law
worked by hand on a toy whose prediction counts the visible tokens, revealing at the chance the schedule gives; the
target is the teacher's own pass where a step reveals everything; the loss a mean KL over the masked positions, 0 for
a student equal to a teacher whose law ignores the canvas; a run's student starts as its teacher's weights; the
refusals, in one line, before any step; and, training (the slower tier): a student that starts elsewhere learns its
teacher (the logged loss drops), a cut run resumes bit for bit, and the student's checkpoint samples through
inference.py in its own passes.

    python -m pytest -q tests/test_distill.py
"""
import math
from types import SimpleNamespace

import pytest
import torch

import distill
import inference
import train
from diffusion import Draw, MaskedDiffusion, Schedule, predict_logits
from helpers import FIXTURES, assert_one_line_error, for_objective, rows, run_cli_here, run_here, train_args
from model import ModelArgs
from utils.checkpoint import load_checkpoint

V, MASK = 5, 4  # four tokens and [MASK]
W = torch.tensor([0.5, -0.3, 0.2, 0.0, 0.0])  # the toy's slope per visible token
C = torch.tensor([1.0, 0.0, -0.5, 0.3, 0.0])


class CountToy(torch.nn.Module):
    """A network whose law at every position is softmax(C + n W), n the row's visible tokens: a later pass, reading
    an earlier one's reveals, predicts differently, so a k-step target differs from one pass by a known amount."""

    def __init__(self, slope=W):
        super().__init__()
        self.args = ModelArgs(vocab_size=V, block_size=8, n_layer=1)
        self.slope = slope
        self.bias = torch.nn.Parameter(torch.zeros(V))  # a student's one weight: 0 at the teacher

    def forward(self, idx, t=None, sc=None, positions=None, attn_mask=None, **kw):
        n = (idx != MASK).sum(1).float()  # (B,)
        logits = C + n[:, None, None] * self.slope + self.bias  # (B, L, V)
        logits = logits.expand(*idx.shape, V)
        return logits if positions is None else logits.flatten(0, 1)[positions]


def toy_teacher(slope=W, h=20):
    """The toy as a teacher on a chain of 100 steps, its sub-step h."""
    return distill.Teacher(CountToy(slope), Schedule(100), MASK, h)


def law(n):
    """The toy's log-probs at n visible tokens, [MASK] never drawn."""
    return torch.log_softmax(C.masked_fill(torch.arange(V) == MASK, -math.inf) + n * W, -1)


@pytest.mark.core
def test_the_kl_matches_a_hand_computation_and_its_gradient_has_no_nan_where_a_law_is_0():
    p = torch.tensor([0.5, 0.5, 0.0])
    logits = torch.tensor([math.log(0.25), math.log(0.75), -math.inf], requires_grad=True)  # [MASK] at -inf
    logq = torch.log_softmax(logits, -1)
    kl = distill.masked_kl(p.log(), logq)
    assert kl.item() == pytest.approx(0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75))
    (grad,) = torch.autograd.grad(kl, logits)
    assert torch.allclose(grad, torch.tensor([0.25 - 0.5, 0.75 - 0.5, 0.0]))  # q - p: the forward KL's gradient
    assert distill.masked_kl(logq, logq).item() == 0.0


@pytest.mark.core
def test_at_one_sub_step_the_target_is_one_pass_of_the_teacher():
    """k = 1 (no sub-step uniforms): the target and the first pass are the teacher's own law at x_t, at every
    position, as predict_logits reads it ([MASK] never predicted)."""
    xt = torch.tensor([[0, MASK, MASK, 3, MASK, 1], [MASK] * 6])
    t = torch.tensor([30, 100])
    none = torch.zeros((0, 2, 6))
    target, first = distill.teacher_target(toy_teacher(), xt, t, None, none, none.double())
    one = torch.log_softmax(predict_logits(CountToy(), xt, t, MASK), -1)
    assert torch.equal(target, one) and torch.equal(first, one)
    assert torch.allclose(target[0, 1], law(3)) and torch.allclose(target[1, 0], law(0))


@pytest.mark.core
def test_a_sub_step_reveals_at_the_chance_the_schedule_gives():
    """From t to s = t - h a masked position is revealed with chance (alpha(s) - alpha(t)) / (1 - alpha(t)), as
    diffusion.sample_ancestral reveals: a uniform just under it reveals (the next pass sees one more token), one just
    over it does not."""
    schedule = Schedule(100)
    alpha = schedule.on(torch.device("cpu"))[0]
    chance = ((alpha[40] - alpha[60]) / (1 - alpha[60])).item()
    xt = torch.tensor([[0, MASK, MASK], [0, MASK, MASK]])
    t = torch.tensor([60, 60])
    reveal_u = torch.tensor([[[1.0, chance - 1e-4, 1.0], [1.0, chance + 1e-4, 1.0]]])
    token_u = torch.full((1, 2, 3), 0.5, dtype=torch.float64)
    target, _ = distill.teacher_target(toy_teacher(), xt, t, None, reveal_u, token_u)
    assert torch.allclose(target[0, 2], law(2))  # pass 2 read position 1's reveal
    assert torch.allclose(target[1, 2], law(1))  # nothing revealed: pass 2 saw what pass 1 saw


@pytest.mark.core
def test_the_target_is_each_positions_law_where_it_was_revealed_worked_by_hand():
    """Two sub-steps and three: a position revealed at sub-step j takes pass j's law, one never revealed the last
    pass's; each pass reads the reveals before it (the toy's law moves with the visible count)."""
    xt = torch.tensor([[0, MASK, MASK, MASK, 1, MASK]])  # 2 visible, 4 masked
    t = torch.tensor([60])  # h = 20: reveal chances 0.54 (60 -> 40), then 0.74 (40 -> 20)
    # sub-step 1 reveals positions 1 and 3 (uniform 0), not 2 and 5 (~1); sub-step 2 reveals position 2
    reveal_u = torch.tensor([[[0.0, 0.0, 0.999, 0.0, 0.0, 0.999]], [[0.0, 0.0, 0.0, 0.0, 0.0, 0.999]]])
    token_u = torch.full((2, 1, 6), 0.5, dtype=torch.float64)
    target, first = distill.teacher_target(toy_teacher(), xt, t, None, reveal_u[:1], token_u[:1])
    assert torch.allclose(first[0], law(2).expand(6, V))
    for i, n in ((1, 2), (3, 2), (2, 4), (5, 4)):  # revealed by pass 1 (2 visible), or not (pass 2 sees 4)
        assert torch.allclose(target[0, i], law(n)), i
    target, _ = distill.teacher_target(toy_teacher(), xt, t, None, reveal_u, token_u)
    for i, n in ((1, 2), (3, 2), (2, 4), (5, 5)):  # pass 3 sees 5: position 2 revealed by pass 2
        assert torch.allclose(target[0, i], law(n)), i
    # the mean of two targets, one first pass shared: the mean of their laws, position by position
    mean, _ = distill.mean_target(toy_teacher(), xt, t, None, torch.stack([reveal_u, reveal_u * 0]),
                                  torch.stack([token_u, token_u]))
    everything = distill.teacher_target(toy_teacher(), xt, t, None, reveal_u * 0, token_u)[0]
    assert torch.allclose(mean.exp(), (target.exp() + everything.exp()) / 2)


@pytest.mark.core
def test_where_the_step_reveals_everything_the_target_is_the_teachers_own_pass():
    xt = torch.tensor([[0, MASK, MASK, 2, MASK, MASK]] * 3)
    t = torch.tensor([5, 10, 20])  # h = 20: the first sub-step ends at t = 0, where alpha = 1 reveals every [MASK]
    g = torch.Generator().manual_seed(0)
    reveal_u, token_u = torch.rand((2, 3, 6), generator=g), torch.rand((2, 3, 6), generator=g, dtype=torch.float64)
    target, first = distill.teacher_target(toy_teacher(), xt, t, None, reveal_u, token_u)
    masked = xt == MASK
    assert torch.equal(target[masked], first[masked])


@pytest.mark.core
def test_the_loss_is_the_mean_kl_over_masked_positions_0_for_a_student_equal_to_a_canvas_blind_teacher():
    """The loss as train.py calls it (draws, then loss): the teacher's k-step target is its one pass at every draw."""
    schedule = Schedule(100)
    cfg = SimpleNamespace(mask_draws=2, self_cond=False, dual_ar=0.0, diffusion_steps=100, distill_steps=4,
                          mask_min=0.0, mask_max=1.0, mask_ramp=0.0, block_size=8)
    tok = SimpleNamespace(mask_id=MASK)
    obj = distill.SelfDistillation(MaskedDiffusion(), toy_teacher(slope=torch.zeros(V), h=8))
    x = torch.randint(0, MASK, (3, 8), generator=torch.Generator().manual_seed(1))
    drawn = obj.draws(x, cfg, schedule, tok, Draw(generator=torch.Generator().manual_seed(2), u=torch.tensor(0.3)))
    assert drawn.reveal_u.shape == (distill.TARGETS, distill.SUBSTEPS - 1, 6, 8)
    assert obj.loss(CountToy(slope=torch.zeros(V)), x, cfg, schedule, tok, drawn).item() == pytest.approx(0, abs=1e-6)
    other = CountToy(slope=torch.zeros(V))
    with torch.no_grad():
        other.bias[0] = 1.0
    # every masked position has the same two laws: the mean over them is their one KL, by hand
    p = law(0).exp()
    q = torch.log_softmax(C.masked_fill(torch.arange(V) == MASK, -math.inf) + other.bias.detach(), -1).exp()
    hand = sum(p[i] * math.log(p[i] / q[i]) for i in range(MASK))
    assert obj.loss(other, x, cfg, schedule, tok, drawn).item() == pytest.approx(hand.item(), rel=1e-5)


# ----------------------------------------------------------------------------- runs (the slower tier)
DISTIL = ["--max_iters=40", "--eval_interval=10", "--log_interval=5", "--distill_steps=4", "--mask_draws=1",
          "--muon_lr=3e-3", "--optimizer=muon", "--min_lr=3e-3", "--learning_rate=3e-3"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A MICRO masked-diffusion run of 300 steps (the teacher), and its checkpoint at 10 (a student's start)."""
    d = tmp_path_factory.mktemp("teacher")
    run_here(train_args(d / "out", "--max_iters=300", "--eval_interval=10", "--keep_last=30", "--self_cond"), d,
             threads=1)
    return d / "out"


@pytest.mark.slower
def test_a_student_that_starts_elsewhere_learns_its_teacher(teacher, tmp_path):
    run_here(train_args(tmp_path / "s", *DISTIL, f"--distill_from={teacher / 'model.pt'}",
                        f"--init_from={teacher / 'model_0000010.pt'}", "--self_cond"), tmp_path, threads=1)
    losses = [r["loss"] for r in rows(tmp_path / "s") if r["kind"] == "train"]
    assert losses[-1] < 0.7 * losses[0], losses


@pytest.mark.slower
def test_a_cut_distillation_resumes_bit_for_bit(teacher, tmp_path):
    """20 steps + --resume to 40 equal 40 uninterrupted (losses, evals, weights): the resumed run takes its teacher
    and its passes from its checkpoint, reads the teacher again, and draws its sub-steps as the step's key says."""
    common = [*DISTIL[1:], f"--distill_from={teacher / 'model.pt'}", "--self_cond"]
    run_here(train_args(tmp_path / "full", *common, "--max_iters=40"), tmp_path, threads=1)
    run_here(train_args(tmp_path / "cut", *common, "--max_iters=20"), tmp_path, threads=1)
    resumable = ["--eval_interval=10", "--log_interval=5", "--eval_iters=2"]  # the rest from the checkpoint
    run_here([f"--out_dir={tmp_path / 'cut'}", *resumable, "--max_iters=40", "--resume"], tmp_path, threads=1)
    keys = ("kind", "iter", "loss", "lr", "nats_per_token")
    def strip(d):
        return [{k: r.get(k) for k in keys} for r in rows(d) if not (r["kind"] == "eval" and r["iter"] == 20)]
    assert strip(tmp_path / "cut") == strip(tmp_path / "full")
    a, b = load_checkpoint(tmp_path / "full" / "model.pt"), load_checkpoint(tmp_path / "cut" / "model.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


@pytest.mark.slower
def test_the_students_checkpoint_samples_through_inference_in_its_own_passes(teacher, tmp_path, capsys):
    out = tmp_path / "s"
    run_here(train_args(out, *DISTIL[1:], "--max_iters=4", f"--distill_from={teacher / 'model.pt'}", "--self_cond",
                        "--steps=4"), tmp_path, threads=1)
    capsys.readouterr()
    code, text, err = run_cli_here(inference.main, ["--checkpoint", out / "model.pt", "--viz-video", "off",
                                                    "--seed", "0"], capsys)
    assert code == 0 and "NFE 4 per sample" in text, err


# ----------------------------------------------------------------------------- runs in this process
@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    """Three MICRO runs of 3 steps: a masked-diffusion teacher, an AR model, and a masked-diffusion model of another
    text (another character set: another tokenizer)."""
    d = tmp_path_factory.mktemp("teachers")
    run_here(train_args(d / "mdlm", "--max_iters=3", "--eval_interval=3", "--self_cond"), d, threads=1)
    run_here(for_objective(train_args(d / "ar", "--max_iters=3", "--eval_interval=3", "--objective=ar")), d,
             threads=1)
    other = train_args(d / "other", "--max_iters=3", "--eval_interval=3")
    other[1] = f"--data_path={FIXTURES / 'tiny_stories.txt'}"
    run_here(other, d, threads=1)
    return d


def test_the_student_starts_as_its_teacher(teachers, in_tmp, monkeypatch, capsys):
    """At the first step's loss the student's weights are the teacher's, bit for bit (build loads them), and the
    teacher takes no gradient."""
    seen = []
    loss = distill.SelfDistillation.loss

    def spy(self, model, *args):
        teacher = self.teacher.net.state_dict()
        seen.append(all(torch.equal(v, teacher[k]) for k, v in model.state_dict().items()))
        seen.append(not any(p.requires_grad for p in self.teacher.net.parameters()))
        return loss(self, model, *args)

    monkeypatch.setattr(distill.SelfDistillation, "loss", spy)
    argv = train_args(in_tmp / "s", "--max_iters=1", "--eval_interval=1", "--self_cond", "--distill_steps=4",
                      f"--distill_from={teachers / 'mdlm' / 'model.pt'}")
    code, _, err = run_cli_here(train.main, argv[1:], capsys)
    assert code == 0, err
    assert seen[:2] == [True, True], seen


@pytest.mark.parametrize("extra, words", [
    (["--objective=bd3"], ["objective=bd3 does not read --distill_from", "--objective=mdlm"]),
    (["--distill_steps=7"], ["distill_steps=7", "sub-step", "--distill_steps=6"]),
    (["--distill_from=NOWHERE/model.pt"], ["NOWHERE/model.pt"]),
    (["--distill_from={ar}"], ["is a ar model", "give an mdlm checkpoint"]),
    (["--distill_from={other}"], ["not in the model's vocabulary"]),  # --init_from's check, the teacher's text
])
def test_a_distillation_that_cannot_work_is_refused_in_one_line(teachers, in_tmp, capsys, extra, words):
    """Each before a step: a student of another objective, passes the chain cannot split, a teacher missing, an AR
    teacher, a teacher of another text's tokenizer."""
    paths = dict(ar=teachers / "ar" / "model.pt", other=teachers / "other" / "model.pt")
    extra = [e.format(**paths) for e in extra]
    argv = train_args(in_tmp / "s", "--max_iters=2", "--self_cond", "--distill_steps=4",
                      f"--distill_from={teachers / 'mdlm' / 'model.pt'}", *extra)[1:]
    code, _, err = run_cli_here(train.main, argv, capsys)
    assert_one_line_error(code, err, *words)
    assert not (in_tmp / "s" / "metrics.jsonl").exists()
