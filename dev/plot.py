"""PNG plots of training runs and evaluations, under artifacts/plots/ (matplotlib Agg: no screen).

    python dev/plot.py curves artifacts/models/cpu artifacts/models/cpu_ar  # train/val bpc
    python dev/plot.py entropy artifacts/eval/cpu.json  # entropy per timestep

`curves` reads run directories' metrics.jsonl, `entropy` scripts/eval.py's JSON. The other studies' plots
(plot_frontier.py, plot_epochs.py) use its figure and save helpers. --overwrite replaces an --out, never a checkpoint.
"""
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dev.readers import read_json, read_jsonl  # noqa: E402
from utils.cli import ArgParser, output  # noqa: E402
from utils.errors import UserError, run_cli  # noqa: E402
from utils.fileio import atomic_path, drop_if_empty, fresh_path  # noqa: E402

PLOTS = os.path.join("artifacts", "plots")  # where a plot goes unless --out names it
WHATS = ("curves", "entropy")


def read_eval_json(path):
    """scripts/eval.py's or frontier.py's --json document (rows under 'runs'), checked complete."""
    fix = f"write one with python scripts/eval.py CKPT ... --json {path}"
    return read_json(path, "a scripts/eval.py --json file", ("runs",), fix, rows=("name",))


def run_label(run_dir):
    """(directory name, objective, whether val is an exact NLL, train.py's name for the loss);
    (name, None, False, None) when its model.pt cannot be read."""
    name = os.path.basename(os.path.normpath(run_dir))
    try:
        import torch
        from objectives import OBJECTIVES
        from checkpoint_manager import checkpoint_config
        from utils.train_log import loss_label
        ckpt = torch.load(os.path.join(run_dir, "model.pt"), map_location="cpu", weights_only=True, mmap=True)
        cfg = checkpoint_config(ckpt, run_dir)
        return name, cfg.objective, OBJECTIVES[cfg.objective].EXACT, loss_label(cfg)[0].split(" ", 1)[1]
    except Exception:  # a label is not worth failing for
        return name, None, False, None


def _figure(ncols=1, figsize=(8, 5), **kw):
    """(pyplot, figure, axes) on matplotlib's file-only backend, each axis gridded."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, ncols, figsize=figsize, dpi=120, **kw)
    for ax in getattr(axes, "flat", [axes]):  # one axis, or an array of them
        ax.grid(alpha=0.3)
    return plt, fig, axes


def plot_to(out, name, plot):
    """Run plot(path) into --out (checked by utils.cli.output before any work: a .png, and an existing
    file replaced only with --overwrite) or, out '', a new artifacts/plots/NAME_k.png that no earlier
    plot holds (the same command run twice never collides), its placeholder removed if nothing came."""
    if out and not out.lower().endswith(".png"):
        raise UserError(f"--out {out} should end in .png")
    path = out or fresh_path(PLOTS, name, ".png")[0]
    try:
        plot(path)
    finally:
        if not out:
            drop_if_empty(path)


def _save(plt, fig, out):
    """Write fig to the PNG out atomically (no reader sees half a file) and close it."""
    if fig.get_layout_engine() is None:  # a constrained layout places its own legend
        fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    print(f"wrote {out}")


def plot_curves(run_dirs, out):
    """Each run's train loss and val figure in bits/char against iteration, on one chart; the train
    curve names its loss."""
    plt, fig, ax = _figure()
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, d in enumerate(run_dirs):
        rows = read_jsonl(os.path.join(d, "metrics.jsonl"), "run log", "give run directories written by train.py")
        train = sorted((r for r in rows if r.get("kind") == "train"), key=lambda r: r["iter"])
        evals = sorted((r for r in rows if r.get("kind") == "eval"), key=lambda r: r["iter"])
        if not evals:
            raise UserError(f"{d}/metrics.jsonl has no eval rows: train past one eval_interval first")
        name, objective, ar, loss_type = run_label(d)  # ar: val is an exact NLL, not a bound
        e0 = evals[0]  # nats/token -> bits/char with the run's own chars/token
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


def plot_entropy(paths, out):
    """Mean predictive entropy at masked positions against t / T, a line per diffusion run."""
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


def main(argv):
    p = ArgParser(prog="dev/plot.py", description="Plot training curves and evaluations to PNG.")
    p.add_argument("what", choices=WHATS, help="which plot: curves (train/val bits/char) or entropy (per "
                   "timestep)")
    p.add_argument("inputs", nargs="+", help="run dirs (curves) or eval.py --json files (entropy)")
    p.add_argument("--out", type=output, default="", help="the PNG to write; '' = a new artifacts/plots/<what>_k.png")
    a = p.parse_args(argv)
    plot = dict(curves=plot_curves, entropy=plot_entropy)[a.what]
    plot_to(a.out, a.what, lambda path: plot(a.inputs, path))


if __name__ == "__main__":
    run_cli(main)
