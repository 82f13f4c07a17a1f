"""The evaluation: the bound (bound.py), sample metrics (metrics.py, samples.py), the end-of-run
report (report.py). Below, what scripts/eval.py's flags read before torch is imported.

    python scripts/eval.py artifacts/models/baby/model.pt --n-samples 0   # the test bound ± se"""

SPLITS = ("test", "dev", "val", "train")  # scripts/eval.py --split; test reports, dev chooses
# the figure records report: scripts/eval.py's defaults, repeated by train.py's last report line
REPORT = dict(split="test", n_windows=128, n_t=8, batch_size=32, seed=0)
