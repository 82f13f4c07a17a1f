"""The data-constrained study's plot (dev/epochs.py's summary): dev nats/char against epochs over the data slice, or
training FLOPs.

    python dev/plot_epochs.py artifacts/epochs/summary.json                       # val nats/char vs epochs
    python dev/plot_epochs.py artifacts/epochs/summary.json --x flops --out artifacts/plots/epochs_flops.png
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dev.plot import _figure, _save, plot_to  # noqa: E402
from dev.readers import read_json  # noqa: E402
from utils.cli import ArgParser, output  # noqa: E402
from utils.errors import run_cli  # noqa: E402


def is_ar(r):
    """An AR's row (an exact NLL): eval.py's rows say so; dev/epochs.py's summary names the objective."""
    return r.get("exact", r["objective"] == "ar")


def plot_epochs(paths, out, x=None):
    """Dev nats/char against epochs over the data slice, or training FLOPs (log x): each data size's best AR (chosen
    on dev: its lowest periodic eval) dashed, the other AR configurations thin grey, diffusion runs in colour (band =
    ± se), and eval.py's figure on best.pt as a star."""
    plt, fig, ax = _figure()
    x = x or "epochs"
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fix = "write one with python dev/epochs.py (--summary-only for runs so far)"
    runs = [r for path in paths for r in read_json(path, "a dev/epochs.py summary", ("runs",), fix,
                                                    rows=("name", "objective", "train_chars", "extra", "curve"))["runs"]]
    sizes = sorted({r["train_chars"] for r in runs}, reverse=True)
    best_ar = {}  # data size -> the AR run with the lowest periodic eval (dev), as dev/epochs.py pairs
    for r in sorted((r for r in runs if is_ar(r) and "best_nats" in r), key=lambda r: r["best_nats"]):
        best_ar.setdefault(r["train_chars"], r)
    styles, grey_label = ["-", ":", "-.", "--"], True
    for i, r in enumerate(runs):
        if not r["curve"] or (x == "flops" and r["curve"][0].get("flops") is None):
            continue
        ls = styles[sizes.index(r["train_chars"]) % len(styles)]
        e, y, se = ([p[k] for p in r["curve"]] for k in ("epoch" if x == "epochs" else "flops", "nats", "se"))
        what = f"{r['objective']}{' ' + ' '.join(r['extra']) if r['extra'] else ''}, {r['train_chars']:,} chars"
        if is_ar(r) and best_ar.get(r["train_chars"]) is not r:
            ax.plot(e, y, color="0.6", ls=ls, lw=0.7, alpha=0.6, label="other AR configurations" if grey_label else None)
            grey_label = False
            continue
        c = "k" if is_ar(r) else colors[i % len(colors)]
        ax.plot(e, y, color=c, ls="--" if is_ar(r) else ls, lw=1.5,
                label=f"{'best AR: ' if is_ar(r) else ''}{r['name']} ({what})")
        ax.fill_between(e, [a - b for a, b in zip(y, se)], [a + b for a, b in zip(y, se)], color=c, alpha=0.12, lw=0)
        if r.get("finished"):
            ax.errorbar([r["final_epoch"] if x == "epochs" else r["final_flops"]], [r["final_nats"]], yerr=[r["final_se"]], color=c, marker="*", ms=10, capsize=3)
    ax.set_xscale("log")
    if x == "epochs":
        ax.xaxis.set_major_formatter(plt.matplotlib.ticker.FormatStrFormatter("%g"))  # 1, 10, 100 rather than 10^0
    ax.set_xlabel("epochs over the training slice (log)" if x == "epochs" else "training FLOPs (log)")
    ax.set_ylabel("dev nats per character, train.py's evals (lower is better)")
    ax.set_title("Models on a fixed slice of Tiny Shakespeare (★ = scripts/eval.py on best.pt: the test half)", fontsize=10)
    ax.set_ylim(top=min(3.2, ax.get_ylim()[1]))  # overfit AR runs climb far above: keep the interesting band
    ax.legend(fontsize=7)
    _save(plt, fig, out)


def main(argv):
    p = ArgParser(prog="dev/plot_epochs.py", description="Plot the data-constrained study's summary to PNG.")
    p.add_argument("inputs", nargs="+", help="dev/epochs.py summary JSON files (their runs drawn on one chart)")
    p.add_argument("--out", type=output, default="", help="the PNG to write; '' = a new artifacts/plots/epochs_k.png")
    p.add_argument("--x", choices=("epochs", "flops"), default="epochs", help="the x axis: epochs over the data "
                   "slice, or training FLOPs (log scale)")
    a = p.parse_args(argv)
    plot_to(a.out, "epochs", lambda path: plot_epochs(a.inputs, path, a.x))


if __name__ == "__main__":
    run_cli(main)
