"""The sampler studies' figures, from scripts/frontier.py's JSONs: every sampler's curve against sample entropy
(gen-PPL and the n-gram JS divergence to held-out text, two panels), or each curve's reading at the held-out entropy
against wall-clock tokens/s or NFE. scripts/frontier.py's table (its stdout, and its JSON) is the product's reading of
a frontier; these plots are the figures dev/LOG.md's sampler studies drew from it. dev/plot.py draws the
training curves and the entropy per timestep with the same figure and save helpers.

    python dev/plot_frontier.py artifacts/eval/frontier_baby.json            # gen-PPL, n-gram JS vs entropy
    python dev/plot_frontier.py artifacts/eval/frontier_baby.json --x speed  # at the held-out entropy (or nfe)

--out names the PNG (by default a new artifacts/plots/frontier_k.png), written atomically; an existing file is
only replaced with --overwrite, a checkpoint never.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dev.plot import _figure, _save, plot_to, read_eval_json  # noqa: E402
from utils.cli import ArgParser, output  # noqa: E402
from utils.errors import UserError, run_cli  # noqa: E402


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
        panels = [("nfe", "NFE: forward passes per sample, at the crossing", "quality vs NFE")]
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
                    xv = v and v.get(key, sum(q["nfe"] for q in pts) / len(pts))  # NFE: older JSONs read none
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
    p = ArgParser(prog="dev/plot_frontier.py", description="Plot scripts/frontier.py's samplers to PNG.")
    p.add_argument("inputs", nargs="+", help="scripts/frontier.py --json files (their runs drawn on one chart)")
    p.add_argument("--out", type=output, default="", help="the PNG to write; '' = a new artifacts/plots/frontier_k.png")
    p.add_argument("--x", choices=("entropy", "speed", "nfe"), default=None, help="the x axis: entropy (default), "
                   "speed (tokens/s at the held-out entropy) or nfe")
    a = p.parse_args(argv)
    plot_to(a.out, "frontier", lambda path: plot_frontier(a.inputs, path, a.x))


if __name__ == "__main__":
    run_cli(main)
