"""PNG plots of training runs and evaluations, under artifacts/plots/ (matplotlib, Agg: no screen needed).

    python scripts/plot.py curves artifacts/models/cpu artifacts/models/cpu_ar   # train/val bits/char, one chart
    python scripts/plot.py entropy artifacts/eval/cpu.json                       # entropy per timestep
    python scripts/plot.py frontier artifacts/eval/frontier_baby.json            # gen-PPL, n-gram JS vs entropy
    python scripts/plot.py frontier artifacts/eval/frontier_baby.json --x speed  # at the held-out entropy (or nfe)

`curves` reads run directories' metrics.jsonl, `entropy` scripts/eval.py's JSON, `frontier` scripts/frontier.py's
(dev/plot_epochs.py draws the data-constrained study's). --out names the PNG, written atomically; an existing file is
only replaced with --force, a checkpoint never.
"""
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils.cli import ArgParser, output, read_json, read_jsonl  # noqa: E402
from utils.errors import UserError, run_cli  # noqa: E402
from utils.fileio import atomic_path, check_output  # noqa: E402

DEFAULT_OUT = {what: f"artifacts/plots/{what}.png" for what in ("curves", "entropy", "frontier")}


def read_eval_json(path):
    """scripts/eval.py's or frontier.py's --json document (both keep their rows under 'runs'), checked complete."""
    fix = f"write one with python scripts/eval.py CKPT ... --json {path}"
    return read_json(path, "a scripts/eval.py --json file", ("runs",), fix, rows=("name",))


def run_label(run_dir):
    """(directory name, objective, whether its val figure is an exact NLL, training loss as train.py's log names it);
    (name, None, False, None) when its model.pt cannot be read."""
    name = os.path.basename(os.path.normpath(run_dir))
    try:
        import torch
        import objectives
        from configurator import config_from_dict
        from evals.report import loss_label
        ckpt = torch.load(os.path.join(run_dir, "model.pt"), map_location="cpu", weights_only=True, mmap=True)
        cfg = config_from_dict(ckpt["config"])
        return name, cfg.objective, objectives.get(cfg.objective).EXACT, loss_label(cfg)[0].split(" ", 1)[1]
    except Exception:  # no model.pt, or an unreadable one: a label is not worth failing for
        return name, None, False, None


def _figure(ncols=1, figsize=(8, 5), **kw):
    """(pyplot, the figure, its axes) on matplotlib's file-only backend, each axis gridded."""
    import matplotlib
    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, ncols, figsize=figsize, dpi=120, **kw)
    for ax in getattr(axes, "flat", [axes]):  # one axis, or an array of them
        ax.grid(alpha=0.3)
    return plt, fig, axes


def _save(plt, fig, out):
    """fig to the PNG out, atomically (a reader never sees half a file), then closed and 'wrote OUT' printed."""
    if fig.get_layout_engine() is None:  # a constrained layout places its own legend
        fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    print(f"wrote {out}")


def plot_curves(run_dirs, out, x=None):
    """Each run's training loss and validation figure in bits/char against iteration, on one chart: a diffusion run's
    val curve is a bound, an AR's an exact NLL, and its train curve names the loss it logs."""
    plt, fig, ax = _figure()
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, d in enumerate(run_dirs):
        rows = read_jsonl(os.path.join(d, "metrics.jsonl"), "run log", "give run directories written by train.py")
        train = sorted((r for r in rows if r.get("kind") == "train"), key=lambda r: r["iter"])
        evals = sorted((r for r in rows if r.get("kind") == "eval"), key=lambda r: r["iter"])
        if not evals:
            raise UserError(f"{d}/metrics.jsonl has no eval rows: train past one eval_interval first")
        name, objective, ar, loss_type = run_label(d)  # ar: the val curve is an exact NLL, not a bound
        e0 = evals[0]  # nats/token -> bits/char with the run's own chars/token, read back from an eval row
        to_bpc = e0["bits_per_char"] / e0["nats_per_token"] if e0["nats_per_token"] else 1 / math.log(2)
        c = colors[i % len(colors)]
        tag = f"{name} ({objective})" if objective else name
        if train:
            what = "NLL" if ar else "NELBO estimate"
            if not ar and loss_type not in ("elbo", None):  # a reweighted loss is no bound on the NLL
                what = f"{loss_type}, not a bound"
            ax.plot([r["iter"] for r in train], [r["loss"] * to_bpc for r in train], color=c, alpha=0.5, lw=1,
                    label=f"{tag} train ({what})")
        ax.errorbar([r["iter"] for r in evals], [r["bits_per_char"] for r in evals],
                    yerr=[r.get("bpc_se", 0) for r in evals], color=c, marker="o", ms=4, lw=2, capsize=3,
                    label=f"{tag} val {'NLL' if ar else 'bound'} ± se")
    ax.set(xlabel="iteration", ylabel="bits per character (lower is better)",
           title="Training and validation: diffusion bound vs AR NLL")
    ax.legend(fontsize=8)
    _save(plt, fig, out)


def plot_entropy(paths, out, x=None):
    """The mean predictive entropy at masked positions against t / T, a line per diffusion run of the eval JSONs."""
    plt, fig, ax = _figure()
    runs = [r for p in paths for r in read_eval_json(p)["runs"] if r.get("entropy_by_t")]
    if not runs:
        raise UserError("no diffusion runs with entropy_by_t in " + ", ".join(paths) + ": AR runs have no timesteps")
    for r in runs:
        e = r["entropy_by_t"]  # (lo, hi, entropy) per band of t
        T = e[-1][1]
        ax.plot([(lo + hi) / 2 / T for lo, hi, _ in e], [v for _, _, v in e], marker="o",
                label=f"{r['name']} ({r.get('schedule', '')}, {r.get('time_cond', '')})")
    ax.set(xlabel="diffusion time t / T  (more tokens masked to the right)", title="Entropy per timestep",
           ylabel="mean predictive entropy at masked positions (nats)")
    ax.legend(fontsize=8)
    _save(plt, fig, out)


def plot_frontiers(docs, out):
    """Every sampler's curve (points along temperature; the AR's dashed black) against sample entropy, two panels:
    gen-PPL and the mean n-gram JS to held-out text, with that text's entropy (vertical) and own divergence (floor)."""
    if not any(r["points"] for d in docs for r in d["runs"]):
        raise UserError("no points in the given frontier JSONs: run scripts/frontier.py with a grid")
    from matplotlib.ticker import ScalarFormatter
    plt, fig, (ax, ax_js) = _figure(2, (16, 8), layout="constrained")
    ax.set_prop_cycle(color=plt.cm.tab20.colors)  # many curves: 20 colours before one repeats
    held = docs[0]["held_out"]
    for d in docs:
        for r in d["runs"]:
            curves = {}
            for pt in r["points"]:
                curves.setdefault(pt["curve"], []).append(pt)
            for name, pts in curves.items():
                pts.sort(key=lambda q: q["sample_entropy"])
                style = dict(color="k", ls="--") if r["exact"] else {}
                label = f"{r['name']} ({r['objective']}): {name}, NFE {pts[0]['nfe']:.0f}"
                xs = [q["sample_entropy"] for q in pts]
                line, = ax.plot(xs, [q["gen_ppl"] for q in pts], marker="o", ms=3, lw=1, label=label, **style)
                ax_js.plot(xs, [q["js_mean"] for q in pts], marker="o", ms=3, lw=1, color=line.get_color(),
                           ls=line.get_linestyle())
    for a in (ax, ax_js):
        a.axvline(held["sample_entropy"], color="grey", ls=":", lw=1,
                  label=f"held-out text entropy {held['sample_entropy']:.2f}")
        a.set_xlabel("sample entropy (nats, per-sample token histogram; higher = more diverse)")
    ax_js.axhline(held["js_mean"], color="grey", ls="-.", lw=1,
                  label=f"held-out text of the samples' size {held['js_mean']:.3f}")
    ax.set_yscale("log")
    for axis_fmt in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
        axis_fmt(ScalarFormatter())  # plain numbers on a log axis
    ax.set(ylabel="gen-PPL under the AR judge (lower = likelier)",
           title="gen-PPL vs entropy, one curve per sampler (points: temperatures)")
    ax_js.set(ylabel="JS divergence to held-out char 1-4-grams, bits (lower = closer)",
              title="n-gram divergence vs entropy (repetition cannot game it)")
    handles, labels = ax.get_legend_handles_labels()
    js_handles, js_labels = ax_js.get_legend_handles_labels()
    fig.legend(handles + js_handles[-1:], labels + js_labels[-1:], loc="outside lower center", ncol=2,
               fontsize=7)  # below both panels: the curves stay visible
    _save(plt, fig, out)


def plot_at_held_out(docs, out, x):
    """Each run's at_held_out: a marker per sampler, its gen-PPL at the held-out entropy against wall-clock tokens/s
    (x = speed: log x, a panel per timed batch size) or NFE (x = nfe); the AR a black star; none where not reached."""
    if x == "nfe":
        panels = [("nfe", "NFE: forward passes per sample (mean over the curve's points)", "quality vs NFE")]
    else:
        batches = sorted({int(k.split("_b")[1]) for d in docs for r in d["runs"] for v in r["at_held_out"].values()
                          if v for k in v if k.startswith("tokens_per_s_b")})
        panels = [(f"tokens_per_s_b{b}", f"tokens/s, batch {b} (wall clock, {docs[0].get('threads', '?')} thread(s), "
                   f"{docs[0]['device']})", f"speed vs quality, batch {b}") for b in batches]
    marks = [[] for _ in panels]  # per panel: (x, gen-PPL, label, style)
    for d in docs:
        for r in d["runs"]:
            for curve, v in r["at_held_out"].items():
                pts = [q for q in r["points"] if q["curve"] == curve]
                style = dict(color="k", marker="*", ms=14) if r["exact"] else dict(marker="o", ms=7)
                for m, (key, _, _) in zip(marks, panels):
                    xv = sum(q["nfe"] for q in pts) / len(pts) if key == "nfe" else v and v.get(key)
                    if v and xv:
                        m.append((xv, v["gen_ppl"], f"{r['name']} ({r['objective']}): {curve}", style))
    if not any(marks):
        raise UserError("no sampler's curve in the given frontier JSONs reaches the held-out entropy" + (
            "" if x == "nfe" else " with a timed reading: run scripts/frontier.py with --repeats 1 or more") +
            ": give its grid temperatures on both sides of it")
    plt, fig, axes = _figure(len(panels), (8 * len(panels), 7), layout="constrained", squeeze=False)
    for i, (ax, (_, xlabel, title), m) in enumerate(zip(axes[0], panels, marks)):
        ax.set_prop_cycle(color=plt.cm.tab20.colors)
        for xv, y, label, style in m:
            ax.plot([xv], [y], ls="", label=label if i == 0 else None, **style)
        ax.set_xscale("log")
        ax.set(xlabel=xlabel, ylabel="gen-PPL at the held-out entropy (lower = likelier)", title=title)
    fig.legend(loc="outside lower center", ncol=2, fontsize=7)
    _save(plt, fig, out)


def plot_frontier(paths, out, x=None):
    """scripts/frontier.py's JSONs: the curves against entropy (x None or entropy), or each curve's reading at the
    held-out entropy against speed or NFE (plot_at_held_out)."""
    docs = [read_eval_json(p) for p in paths]
    not_frontier = [p for p, d in zip(paths, docs) if "held_out" not in d]
    if not_frontier:
        raise UserError("frontier plots read scripts/frontier.py's JSONs (python scripts/frontier.py CKPT ... "
                        f"--ar-checkpoint AR.pt --json FILE): {', '.join(not_frontier)} is not one")
    return plot_at_held_out(docs, out, x) if x in ("speed", "nfe") else plot_frontiers(docs, out)


def main(argv):
    p = ArgParser(prog="scripts/plot.py", description="Plot training curves and evaluations to PNG.")
    p.add_argument("what", choices=tuple(DEFAULT_OUT), help="which plot: curves (train/val bits/char), entropy (per "
                   "timestep) or frontier (samplers against entropy)")
    p.add_argument("inputs", nargs="+", help="run dirs (curves), eval.py --json files (entropy) or frontier.py's")
    p.add_argument("--out", type=output, default="", help="the PNG to write; '' = artifacts/plots/<what>.png")
    p.add_argument("--x", choices=("entropy", "speed", "nfe"), default=None, help="the frontier plot's x axis: "
                   "entropy (default), speed (tokens/s at the held-out entropy) or nfe")
    a = p.parse_args(argv)
    if a.x and a.what != "frontier":
        raise UserError(f"--x {a.x} is not an x axis of the {a.what} plot: it has its own: drop --x")
    out = a.out or DEFAULT_OUT[a.what]
    check_output(out, a.force, "--out")  # the default path too
    if not out.lower().endswith(".png"):
        raise UserError(f"--out {out} should end in .png")
    dict(curves=plot_curves, entropy=plot_entropy, frontier=plot_frontier)[a.what](a.inputs, out, a.x)  # None: own x


if __name__ == "__main__":
    run_cli(main)
