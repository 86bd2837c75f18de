"""converters/measure.py: a conversion's peak memory is its own process's, not its parent's.

Linux carries ``ru_maxrss`` across exec: a child of a big process (bench/zoo.py had built every torchvision
model to count parameters: 3.1 GB) read the parent's peak as its own, and `make zoo` printed 3153 MB for
models of every size. The count now starts from the child's VmHWM, which exec resets."""

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="Linux's /proc only")

CHILD = ("import resource\nfrom converters.measure import Stages\nstages = Stages()\n"
         "with stages('nothing'):\n    pass\n"
         "print(stages.summary()['peak_rss_mb'], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)\n")


def test_a_child_of_a_big_process_measures_its_own_peak():
    ballast = bytearray(600 * 2**20)
    for k in range(0, len(ballast), 4096):  # touched, so resident
        ballast[k] = 1
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True,
                          env=dict(os.environ, PYTHONPATH=root))
    peak, inherited = (float(v) for v in done.stdout.split())
    assert inherited > 600  # the situation: the kernel's ru_maxrss is the parent's
    assert peak < 300  # the child's own: an interpreter importing the measure module
    del ballast
