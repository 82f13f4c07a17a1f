"""Fault injection for tests/test_faults.py: run a script, and SIGKILL this process halfway through
writing its Nth torch.save (half the bytes are on disk, fsynced, when the kill lands).

    python tests/kill_mid_save.py N train.py ARGS...
"""
import io
import os
import runpy
import signal
import sys

import torch

n, script = int(sys.argv[1]), sys.argv[2]
sys.argv = sys.argv[2:]
real_save, calls = torch.save, 0


def save(obj, f, *args, **kwargs):
    global calls
    calls += 1
    if calls < n:
        return real_save(obj, f, *args, **kwargs)
    buf = io.BytesIO()
    real_save(obj, buf, *args, **kwargs)
    data = buf.getvalue()
    with open(f, "wb") as out:
        out.write(data[: len(data) // 2])
        out.flush()
        os.fsync(out.fileno())
    os.kill(os.getpid(), signal.SIGKILL)


torch.save = save
sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
runpy.run_path(script, run_name="__main__")
