"""``python -m loadgen`` as a user starts it: help with no arguments, and for ``run``."""

import subprocess
import sys


def test_help_and_no_arguments_print_help():
    out = subprocess.run([sys.executable, "-m", "loadgen"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "usage: loadgen" in out.stdout
    out = subprocess.run([sys.executable, "-m", "loadgen", "run", "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "--concurrency" in out.stdout
