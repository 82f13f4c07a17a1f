"""The limit line: dev/limit.py's JSONs drawn against tokens a pass. Each sampler on the perfect
denoiser is a solid line (the limit: what the sampler gets wrong with a perfect network); a
network's same sampler, scored by the same chain, is dashed beside it in the same colour; an
adaptive rule (threshold, entropy bound) is a point at its own tokens a pass. Three panels: the
excess NLL (+- se), the transition-level KL (the exact samplers' own value dotted: a finite sample's
floor), and the exact KL of the short laws.

    python dev/plot_limit.py artifacts/eval/limit.json artifacts/eval/limit_nets.json \\
        --out artifacts/plots/limit.png
    python dev/plot_limit.py artifacts/eval/limit.json --samplers "random order;confidence order;threshold"

--out names the PNG (by default a new artifacts/plots/limit_k.png), written atomically; an existing
file is only replaced with --overwrite.
"""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dev.plot import _figure, _save, plot_to  # noqa: E402
from dev.readers import read_json  # noqa: E402
from utils.cli import ArgParser, at_least, output  # noqa: E402
from utils.errors import UserError, run_cli  # noqa: E402

EXACT = ("AR", "bd3 drafting rounds")  # samplers whose law is the chain's at any tokens a pass


def family(name):
    """A curve's name: the sampler's, an adaptive rule's without its value (its points are its values)."""
    if name.startswith(("threshold", "entropy bound")):
        return re.sub(r" [0-9.]+", "", name)
    return name


def curves(rows, keep):
    """{(model, curve): its rows sorted by tokens a pass}, the curves in `keep` (all if empty)."""
    out = {}
    for r in rows:
        if not keep or family(r["sampler"]) in keep:
            out.setdefault((r["model"], family(r["sampler"])), []).append(r)
    return {key: sorted(pts, key=lambda r: r["tokens_per_pass"]) for key, pts in out.items()}


def draw_panel(ax, lines, key, colors, err=None):
    """One reading against tokens a pass: the oracle's solid, the networks' dashed, lone points."""
    for (model, sampler), pts in lines.items():
        xs = [r["tokens_per_pass"] for r in pts]
        ys = [r[key] for r in pts]
        oracle = model == "oracle"
        style = dict(color=colors[sampler], ls="-" if oracle else "--", marker="o" if oracle else "s", ms=4, lw=1.2)
        label = sampler if oracle else f"{model}: {sampler}"
        if err:
            ax.errorbar(xs, ys, yerr=[r[err] for r in pts], label=label, capsize=2, **style)
        else:
            ax.plot(xs, ys, label=label, **style)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("tokens a pass (generated characters / network passes)")


def plot_limit(paths, out, keep=(), dpi=120):
    docs = [read_json(p, "a dev/limit.py --json file", ("rows", "short"), "run python dev/limit.py --json FILE")
            for p in paths]
    rows = [r for d in docs for r in d["rows"]]
    lines = curves(rows, keep)
    if not lines:
        raise UserError("no rows for these samplers in the given JSONs: check --samplers against dev/limit.py's names")
    plt, fig, axes = _figure(3, (21, 8), layout="constrained")
    names = sorted({s for _, s in lines})
    palette = plt.cm.tab10.colors if len(names) <= 10 else plt.cm.tab20.colors  # distinct hues when few
    colors = {s: palette[i % len(palette)] for i, s in enumerate(names)}
    ax, ax_kl, ax_short = axes
    draw_panel(ax, lines, "excess", colors, err="excess_se")
    ax.axhline(0, color="k", lw=1)
    ax.set(ylabel="excess NLL under the true chain, nats/char (0 = the chain's own samples)",
           title="the limit: samples' NLL minus the chain's entropy (below 0: collapsed, not better)")
    draw_panel(ax_kl, lines, "trans_kl", colors)
    floor = [r["trans_kl"] for r in rows if r["model"] == "oracle" and r["sampler"] in EXACT]
    if floor:
        ax_kl.axhline(min(floor), color="k", ls=":", lw=1, label="exact samples' own (a finite sample's floor)")
    ax_kl.set(ylabel="transition-level KL of the samples from the chain, nats/char",
              title="is the law right? (0 only for the chain's law)")
    short = [dict(r, model="oracle") for d in docs for r in d["short"] if not keep or family(r["sampler"]) in keep]
    if short:
        draw_panel(ax_short, curves(short, ()), "kl", colors)
        n = docs[0]["settings"]["short_len"]
        ax_short.set(ylabel=f"KL(sampler's law || chain's) of {n} characters, nats/char (exact)",
                     title=f"the exact law of {n} characters, enumerated")
    handles, labels = ax.get_legend_handles_labels()
    kl_handles, kl_labels = ax_kl.get_legend_handles_labels()
    fig.legend(handles + kl_handles[-1:], labels + kl_labels[-1:], loc="outside lower center", ncol=4, fontsize=7)
    plt.rcParams["savefig.dpi"] = dpi  # (fig.set_dpi does not reach savefig)
    _save(plt, fig, out)


def main(argv):
    p = ArgParser(prog="dev/plot_limit.py", description="Plot dev/limit.py's limit lines to PNG.")
    p.add_argument("inputs", nargs="+", help="dev/limit.py --json files (the oracle's and the networks')")
    p.add_argument("--samplers", default="", help="';'-separated curves to draw: dev/limit.py's sampler names, "
                   "'threshold' and 'entropy bound, entropy' for the adaptive rules (default: all)")
    p.add_argument("--out", type=output, default="", help="the PNG to write; '' = a new artifacts/plots/limit_k.png")
    p.add_argument("--dpi", type=at_least(30), default=120, help="dots an inch (the figure is 21 x 8 inches): 70 "
                   "for docs/assets")
    a = p.parse_args(argv)
    keep = tuple(name.strip() for name in a.samplers.split(";") if name.strip())
    from dev.limit import SAMPLERS
    curves_there = list(dict.fromkeys(family(name) for name, _ in SAMPLERS))
    unknown = [name for name in keep if name not in curves_there]
    if unknown or (a.samplers and not keep):
        raise UserError(f"--samplers {(unknown or [a.samplers])[0]!r} names no curve: give names from "
                        f"{'; '.join(curves_there)}")
    plot_to(a.out, "limit", lambda path: plot_limit(a.inputs, path, keep, a.dpi))


if __name__ == "__main__":
    run_cli(main)
