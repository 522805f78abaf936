"""Helpers shared by test files of different kinds (unit, integration, faults).

Importable as ``_helpers``: pytest puts ``tests/`` (the folder of the root
conftest) on ``sys.path``.
"""

import contextlib
import io
import os
import textwrap
import time

import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
XSD = os.path.join(TESTS, "data", "junit.xsd")


def wait_for(pred, timeout=10.0, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


# ---------------------------------------------------------------- CLI in process


def run_main(argv):
    """``cli.main(argv)`` with stdout and stderr captured: (exit code, out, err)."""
    from loadgen import cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    return code, out.getvalue(), err.getvalue()


# ---------------------------------------------------------------- plans


def write(tmp_path, text, name="plan.toml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return str(p)


# ---------------------------------------------------------------- reports


def temp_leftovers(folder):
    return [n for n in os.listdir(folder) if n.endswith(".tmp")]


def parse_prom(text):
    parser = pytest.importorskip("prometheus_client.parser")
    return {f.name: f for f in parser.text_string_to_metric_families(text)}


# ---------------------------------------------------------------- the engine with real processes

START_METHODS = ["fork", "spawn"]


def _no_cpu_guard():
    from loadgen.config import ResourceThresholds

    # The machine-wide CPU guard is off here: these tests are about the engine, and other
    # load on a shared machine must not stop them (the monitor's own tests cover the guard).
    return ResourceThresholds(max_cpu_percent=100)


def Runner(plan, thresholds=None, **kw):
    """loadgen's Runner with the machine-wide CPU guard off unless ``thresholds`` are given."""
    from loadgen.engine.runner import Runner as _Runner

    return _Runner(plan, _no_cpu_guard() if thresholds is None else thresholds, **kw)


def plan(ref=None, start_method="fork", **kw):
    """A RunPlan of ``ref`` (None: the embedded flow) sampled every 50 ms, 2 s unless told."""
    from loadgen.engine.load import RunPlan
    from loadgen.workload.targets import TargetSpec

    kw.setdefault("duration_s", 2.0)
    kwargs = kw.pop("kwargs", {})
    flow_params = kw.pop("flow_params", {})
    return RunPlan(target=TargetSpec(ref=ref, kwargs=kwargs, flow_params=flow_params, seed=1),
                   start_method=start_method, sample_interval_s=0.05, **kw)


# ---------------------------------------------------------------- loadgen serve

SERVE_LINE = r"^loadgen serve: listening on http://127\.0\.0\.1:(\d+)$"
SERVE_START_TIMEOUT_S = 30


class Served:
    """A started ``loadgen serve`` (its process, port and base URL), from the one line it prints."""

    def __init__(self, proc):
        import re

        self.proc = proc
        line = proc.stdout.readline().rstrip("\n")
        m = re.match(SERVE_LINE, line)
        assert m, f"unexpected first line {line!r}; stderr: {proc.stderr.read() if proc.poll() is not None else ''}"
        self.port = int(m.group(1))
        self.url = f"http://127.0.0.1:{self.port}"

    def socket(self):
        import socket

        return socket.create_connection(("127.0.0.1", self.port), timeout=10)


def start_serve(cli, *args):
    """``loadgen serve --port 0 ARGS`` through the ``cli`` fixture (which kills and reaps it)."""
    import threading

    proc = cli.start("serve", "--port", "0", *args)
    box = []
    t = threading.Thread(target=lambda: box.append(Served(proc)), daemon=True)
    t.start()
    t.join(SERVE_START_TIMEOUT_S)
    assert box, "loadgen serve did not print its listening line in time"
    return box[0]
