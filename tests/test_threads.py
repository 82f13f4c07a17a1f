"""How many threads a CPU run takes (utils.dist.CpuThreads), driven by a fake clock, fake step times and a fake run
queue: no real timing. On 2 cores a second thread wins ~1.8x alone and loses 10-20x beside another job.
python -m pytest -q tests/test_threads.py"""
import random

import pytest
import torch

from utils.dist import THREAD_VARS, CpuThreads, fixed_threads, hold_threads
from utils.errors import UserError

CPU = torch.device("cpu")
QUIET = {1: 0.55, 2: 0.30}    # s/step of the cpu preset alone on 2 cores (dev/LOG.md, "How many CPU threads ...")
SHARED = {1: 0.60, 2: 6.0}    # beside another job at one thread: the second thread waits for a busy core


@pytest.fixture(autouse=True)
def two_cores(monkeypatch):
    """A 2-core machine; torch's thread count as the test found it, put back after (CpuThreads sets it)."""
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


class Machine:
    """A fake 2-core machine: the clock, the run queue and what a step costs at each count."""

    def __init__(self, step_s, others=0):
        self.now = 0.0
        self.step_s = step_s  # {threads: seconds a step}, or a function of the count
        self.others = others  # threads of other jobs ready to run
        self.threads = CpuThreads(CPU, environ={}, cores=2, clock=lambda: self.now, running=self.running)
        self.threads.tick()   # the first step's end: its time (setup) is not one the rule reads

    def running(self):
        return self.others + self.threads.n

    def steps(self, n):
        """n steps; returns the thread count after each and the lines the controller printed."""
        counts, lines = [], []
        for _ in range(n):
            cost = self.step_s(self.threads.n) if callable(self.step_s) else self.step_s[self.threads.n]
            self.now += cost
            line = self.threads.tick()
            counts.append(self.threads.n)
            lines += [line] if line else []
        return counts, lines


def test_a_run_alone_starts_at_one_thread_and_keeps_two_once_measured_faster():
    m = Machine(QUIET)
    assert m.threads.n == 1 == torch.get_num_threads()
    counts, lines = m.steps(30)
    first_two = counts.index(2)
    assert first_two < 12  # the try comes after two windows (~4 s at 0.55 s a step), its window after it
    assert counts[first_two:] == [2] * (30 - first_two)  # kept, never dropped
    assert lines == ["threads: 1 -> 2 (its steps measured 1.8x faster)"]
    assert torch.get_num_threads() == 2


def test_a_second_job_starting_drops_the_count_within_one_slow_step():
    """At 2 threads when another job starts, the next step runs 20x slower: the count drops after that one step."""
    m = Machine(QUIET)
    m.steps(30)
    assert m.threads.n == 2
    m.step_s, m.others = SHARED, 1
    started = m.now
    counts, lines = m.steps(40)
    assert counts[0] == 1 and m.now - started < 100  # one slow step, then one thread
    assert lines[0].startswith("threads: 2 -> 1 (steps 20.0x slower than at their best")
    assert counts == [1] * 40  # the run queue shows the other job: no try while it runs
    m.step_s, m.others = QUIET, 0  # it ended
    counts, lines = m.steps(40)
    assert counts[-1] == 2 and lines == ["threads: 1 -> 2 (its steps measured 1.8x faster)"]


class Pair:
    """Two jobs on one fake 2-core machine, the second started `gap` s after the first, each seeing the other only
    through the run queue; a step costs what both jobs' counts make it (0.9 s at one thread beside two)."""

    def __init__(self, gap):
        self.now, self.starts = 0.0, [0.0, gap]
        self.jobs, self.ends = [None, None], [0.0, gap]  # each job's controller (from its start), its step's end
        self.counts, self.lines = [[], []], []

    def running(self):
        return sum(job.n for job in self.jobs if job is not None)

    def cost(self, j):
        mine, other = self.jobs[j].n, self.jobs[1 - j]
        if other is None:
            return QUIET[mine]
        return SHARED[2] if mine == 2 else 0.6 if other.n == 1 else 0.9

    def run(self, seconds):
        while min(self.ends) < seconds:
            j = self.ends.index(min(self.ends))
            self.now = self.ends[j]
            if self.jobs[j] is None:  # its start: one thread, the start-up's end its first tick (untimed)
                self.jobs[j] = CpuThreads(CPU, environ={}, cores=2, clock=lambda: self.now, running=self.running)
            else:
                self.counts[j].append(self.jobs[j].n)
            line = self.jobs[j].tick()
            self.lines += [line] if line else []
            self.ends[j] = self.now + self.cost(j)
        return self


@pytest.mark.parametrize("gap", [0.0, 1.0, 2.5])
def test_two_jobs_started_together_stay_at_one_thread_each(gap):
    """Each job tries a second thread only after two windows with a core free (>= 4 s), by which time the other shows
    in the run queue: neither tries, and each steps at the one-thread pace."""
    torch.set_num_threads(2)  # torch's own count on 2 cores (the suite runs at 1): each job must start at one
    pair = Pair(gap).run(300.0)
    assert [set(c) for c in pair.counts] == [{1}, {1}] and pair.lines == []
    assert all(len(c) >= 300 / 0.6 - 10 for c in pair.counts)  # every step at 0.6 s: none waited for a busy core


def test_a_long_shared_stretch_tries_nothing_so_a_freed_core_is_taken_at_once():
    """Ten minutes beside another job: no second thread is tried; when the other ends, it is taken within two
    windows, as a fresh run would."""
    m = Machine(SHARED, others=1)
    counts, lines = m.steps(1000)  # ~600 s
    assert set(counts) == {1} and lines == [] and m.threads.wait == 10.0
    m.step_s, m.others = QUIET, 0
    counts, lines = m.steps(20)  # ~11 s
    assert counts[-1] == 2 and lines == ["threads: 1 -> 2 (its steps measured 1.8x faster)"]


def test_free_cores_raise_the_count_only_when_its_steps_measure_faster():
    """A second thread that gains nothing: every try is measured and undone, and the tries thin out (the wait
    doubles)."""
    m = Machine({1: 0.5, 2: 0.48})
    counts, lines = m.steps(2000)  # ~1000 s
    tries = sum(1 for a, b in zip(counts, counts[1:]) if (a, b) == (1, 2))
    assert lines == [] and counts[-1] == 1
    assert 3 <= tries <= 7  # at ~4 s, then 10, 20, 40, 80, 160 s apart, then every 320 s at most
    assert sum(c == 2 for c in counts) < 0.05 * len(counts)  # the tries cost under 5 % of the steps


def test_noisy_steps_do_not_flap_the_count():
    """Steps that vary by +-20 % and an odd slow one (GC, a checkpoint written beside): the count stays put."""
    rng = random.Random(0)

    def noisy(n):
        slow = 2.5 if rng.random() < 0.01 else 1.0  # one step in 100 at 2.5x (under the 4.5x that decides alone)
        return QUIET[n] * rng.uniform(0.8, 1.2) * slow
    m = Machine(noisy)
    counts, lines = m.steps(3000)  # ~15 min
    changes = sum(1 for a, b in zip(counts, counts[1:]) if a != b)
    assert counts[-1] == 2 and changes == 1 and len(lines) == 1


def test_a_pause_is_no_step_and_dearer_work_finds_its_count_again():
    """restart(): a pause is not a slow step; dearer passes drop the count, and a try measures its way back."""
    m = Machine(QUIET)
    m.steps(30)
    m.now += 600  # an eval, ten minutes
    m.threads.restart()
    assert m.steps(5)[0] == [2] * 5
    m.threads.restart()
    m.step_s = {1: 5.5, 2: 3.0}  # passes ten times dearer
    counts, lines = m.steps(20)
    assert counts[:2] == [2, 1] and counts[-1] == 2 and len(lines) == 2  # (the first step after a restart: untimed)


@pytest.mark.parametrize("environ, runs, said", [
    ({}, 2, None), ({"OMP_NUM_THREADS": ""}, 2, None), ({"OMP_NUM_THREADS": " 2"}, 2, (2, "OMP_NUM_THREADS=2")),
    ({"MKL_NUM_THREADS": "3"}, 3, (3, "MKL_NUM_THREADS=3")),
    # torch reads MKL's over OpenMP's, and MKL keeps to the cores it finds
    (dict(OMP_NUM_THREADS="1", MKL_NUM_THREADS="2"), 2, (2, "MKL_NUM_THREADS=2, which torch reads over OMP_NUM_THREADS=1")),
    (dict(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1"), 1, (1, "MKL_NUM_THREADS=1 and OMP_NUM_THREADS=1")),
    (dict(OMP_NUM_THREADS="8"), 2, (2, "OMP_NUM_THREADS=8; torch runs 2: MKL keeps to the cores it finds")),
    # every math library's variable, alone or as a cap: the least holds them all
    (dict(OPENBLAS_NUM_THREADS="1"), 2, (1, "OPENBLAS_NUM_THREADS=1")),
    (dict(VECLIB_MAXIMUM_THREADS="1"), 2, (1, "VECLIB_MAXIMUM_THREADS=1")),
    (dict(OMP_THREAD_LIMIT="1"), 2, (1, "OMP_THREAD_LIMIT=1")),
    (dict(OMP_NUM_THREADS="2", OPENBLAS_NUM_THREADS="1"), 2,
     (1, "OMP_NUM_THREADS=2 and OPENBLAS_NUM_THREADS=1; every library held to the least, OPENBLAS_NUM_THREADS's")),
    (dict(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="4"), 1, (1, "OMP_NUM_THREADS=1 and OPENBLAS_NUM_THREADS=4")),
    (dict(OPENBLAS_NUM_THREADS="8"), 2, (2, "OPENBLAS_NUM_THREADS=8; torch runs 2: the libraries keep to the cores they "
                                           "find")),
    (dict(OMP_THREAD_LIMIT="1", VECLIB_MAXIMUM_THREADS="2"), 2,
     (1, "VECLIB_MAXIMUM_THREADS=2 and OMP_THREAD_LIMIT=1; every library held to the least, OMP_THREAD_LIMIT's")),
])
def test_a_count_the_user_gives_is_the_least_every_variable_asks_and_the_line_names_it(environ, runs, said):
    assert fixed_threads(environ, runs=runs) == said


def test_a_count_the_user_gives_is_kept_and_a_bad_one_refused():
    before = torch.get_num_threads()
    given = CpuThreads(CPU, environ={"OMP_NUM_THREADS": str(before)}, cores=2)
    assert not given.auto and given.given == before and given.line == f"threads: {before} (OMP_NUM_THREADS={before})"
    assert given.tick() == given.tick() == "" and torch.get_num_threads() == before  # never changed
    accelerator = CpuThreads(torch.device("meta"), environ={}, cores=2)
    assert not accelerator.auto and accelerator.tick() == "" and "the device does the work" in accelerator.line
    for bad in ("0", "abc", "1e3", "-1", "2.5"):
        for name in THREAD_VARS:  # every one: a library under torch reads each
            with pytest.raises(UserError, match=f"{name}={bad} is not a positive integer"):
                fixed_threads({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", name: bad})
    assert CpuThreads(CPU, world=2, environ={}, cores=2).cores == 1  # two ranks share the cores
    # the start-up line of a count the run picks: one thread, of the cores it may grow to
    assert CpuThreads(CPU, environ={}, cores=2).line == ("threads: 1 of 2 core(s), more while free and measured "
                                                         "faster (OMP_NUM_THREADS=N fixes it)")
    held = CpuThreads(CPU, environ={"OPENBLAS_NUM_THREADS": "1"}, cores=2)
    assert not held.auto and held.n == 1 == torch.get_num_threads()  # set, not only named
    assert held.line == "threads: 1 (OPENBLAS_NUM_THREADS=1)"
    assert hold_threads({}) == 1 and hold_threads({"OMP_THREAD_LIMIT": "1"}) == 1 == torch.get_num_threads()
    with pytest.raises(UserError, match="OMP_THREAD_LIMIT=x is not a positive integer"):
        hold_threads({"OMP_THREAD_LIMIT": "x"})


# (environ, the count every library must run): torch's own variables, then each library's alone and as a cap
LINES = [(dict(OMP_NUM_THREADS="1", MKL_NUM_THREADS="2"), None), (dict(OMP_NUM_THREADS="2", MKL_NUM_THREADS="1"), 1),
         (dict(OMP_NUM_THREADS="64"), None), (dict(OPENBLAS_NUM_THREADS="1"), 1), (dict(OMP_THREAD_LIMIT="1"), 1),
         (dict(VECLIB_MAXIMUM_THREADS="1"), 1), (dict(OMP_NUM_THREADS="2", OPENBLAS_NUM_THREADS="1"), 1),
         (dict(MKL_NUM_THREADS="2", OMP_THREAD_LIMIT="1"), 1)]


@pytest.mark.slower
@pytest.mark.parametrize("environ, count", LINES)
def test_the_start_up_line_says_what_every_library_really_runs(environ, count):
    """In a fresh process (the libraries read their variables at load): the line's count is torch's, OpenMP's and
    MKL's after a matmul."""
    import os
    import re
    import subprocess
    import sys
    from helpers import HANG, ROOT
    code = ("import torch; from utils.dist import CpuThreads; line = CpuThreads(torch.device('cpu')).line; "
            "torch.ones(64, 64) @ torch.ones(64, 64); print(line, '|', torch.get_num_threads()); "
            "print(torch.__config__.parallel_info())")
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**env, **environ}, capture_output=True, text=True,
                       timeout=HANG)
    assert r.returncode == 0, r.stdout + r.stderr
    first, info = r.stdout.split("\n", 1)
    line, runs = first.rsplit(" | ", 1)
    assert line.startswith(f"threads: {runs} (") and (count is None or int(runs) == count), r.stdout
    assert all(f"{k}={v}" in line for k, v in environ.items()), line
    for library in ("omp_get_max_threads", "mkl_get_max_threads"):  # every library torch drives runs the count
        held = re.search(rf"{library}\(\) : (\d+)", info)
        assert held is None or held[1] == runs, (library, info)


def test_a_bad_thread_count_is_refused_before_any_work(monkeypatch, capsys):
    """A bad OMP_NUM_THREADS is refused before the config is printed."""
    import train
    from helpers import script
    bench_train = script("dev/bench_train")
    monkeypatch.setenv("OMP_NUM_THREADS", "1e3")
    for main in (lambda: train.main(["cpu", "--max_iters=0"]), lambda: bench_train.main(["cpu"])):
        with pytest.raises(UserError, match="OMP_NUM_THREADS=1e3 is not a positive integer"):
            main()
    assert "config" not in capsys.readouterr().out  # refused before the config is printed


@pytest.mark.parametrize("ready, busy", [(2, False), (9, True)])
def test_the_benchmark_says_when_the_machine_was_too_busy_for_its_figures(ready, busy, monkeypatch, capsys):
    """The benchmark holds one thread while timing and, when more threads were ready than cores, says so."""
    from helpers import run_cli_here, script
    bench_train = script("dev/bench_train")
    monkeypatch.setattr(bench_train, "run_queue", lambda: ready)
    monkeypatch.delenv("OMP_NUM_THREADS")
    argv = ["--n_layer=1", "--n_head=2", "--n_embd=16", "--block_size=16", "--batch_size=2", "--iters=1",
            "--repeats=3", "--warmup=0", "--device=cpu"]
    code, out, err = run_cli_here(bench_train.main, argv, capsys)
    assert code == 0, err
    assert "warm-up; 1 thread(s) (OMP_NUM_THREADS=N times at N)" in out
    note = f"note: the machine was busy: {ready} threads ready to run on 2 cores"
    assert (note in out) == busy and ("not its speed, nor their ratios" in out) == busy
