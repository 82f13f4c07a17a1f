"""Shared fixtures (helpers: tests/helpers.py), and the check that each test is in one tier (pytest.ini names them).
Run from the repo root: python -m pytest -q -m core tests (the edit-run loop), -m "not slower" (README's command),
-m slower (CI's second line)."""
import os

import pytest
import torch

from helpers import ROOT, TINY, for_objective, real_text

# One thread for this process, as for the runs it starts (helpers.ENV): a suite beside other work then never waits on a
# busy core (a step at 2 threads runs 10-20x slower while another job holds one of 2 cores), in-process runs keep one
# count whatever the load (utils.dist.CpuThreads follows it only where OMP_NUM_THREADS is unset), and the pinned
# figures were measured at one thread. OMP_NUM_THREADS=N given to pytest keeps N; the tests of the rule pass their own
# environment.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def pytest_collection_modifyitems(items):
    """Each test in one tier: marked core, marked slower, or neither (README's command runs the first and the last)."""
    both = [item.nodeid for item in items if item.get_closest_marker("core") and item.get_closest_marker("slower")]
    if both:
        raise pytest.UsageError(f"marked core and slower, two tiers: {', '.join(both[:3])}: keep one (pytest.ini)")


def artifacts_files():
    """{path: (size, mtime_ns), or None for a folder} of everything under the repository's artifacts/ (the shipped
    weights, and a user's runs, data and media)."""
    found = {}
    for folder, dirs, files in os.walk(ROOT / "artifacts"):
        found.update((os.path.join(folder, d), None) for d in dirs)
        for name in files:
            path = os.path.join(folder, name)
            try:
                st = os.stat(path)
            except FileNotFoundError:  # gone between the listing and the look
                continue
            found[path] = (st.st_size, st.st_mtime_ns)
    return found


def artifacts_touched(before, after):
    """The paths of two artifacts_files() that differ: new, changed or gone, sorted."""
    return sorted({p for p in after if before.get(p, "new") != after[p]} | (set(before) - set(after)))


@pytest.fixture(autouse=True)
def stays_out_of_the_repos_artifacts(request):
    """The rule, not a habit: a test that writes, changes or removes anything under the repository's artifacts/ (a
    user's runs, traces and the shipped weights live there) fails, naming what it touched. Tests write in their temp
    folders (in_tmp, tmp_path)."""
    before = artifacts_files()
    yield
    touched = artifacts_touched(before, artifacts_files())
    if touched:
        shown = ", ".join(os.path.relpath(p, ROOT) for p in touched[:4]) + (" ..." if touched[4:] else "")
        pytest.fail(f"{request.node.nodeid} touched the repository's artifacts/ ({len(touched)}: {shown}): write in "
                    f"a temp folder (tmp_path, in_tmp); a run of your own writing there meanwhile shows here too",
                    pytrace=False)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run inside a temp dir so artifacts/ (data cache, checkpoints) never touch the repo
    (stays_out_of_the_repos_artifacts fails a test that does)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def train_tiny(tmp_path_factory, name, *extra):
    """Train a TINY model on real text in its own temp dir (data cache included); returns its model.pt."""
    import train
    d = tmp_path_factory.mktemp(name)
    cwd = os.getcwd()
    os.chdir(d)
    try:
        train.main(for_objective([f"--data_path={real_text()}", f"--out_dir={d / 'out'}", "--learning_rate=3e-3",
                                  "--min_lr=3e-4", "--warmup_iters=20", "--gen_len=32", *TINY, *extra]))
    finally:
        os.chdir(cwd)
    return d / "out" / "model.pt"


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    """A tiny diffusion model trained for 300 steps on real text (shared by the slower tests)."""
    return train_tiny(tmp_path_factory, "tiny", "--max_iters=300", "--eval_interval=150")
