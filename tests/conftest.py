"""Fixtures that keep process tests honest: every child reaped, orphans detected."""

import os
import signal
import subprocess
import sys
import time
import uuid

import psutil
import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)


def tagged(tag):
    """Processes whose environment carries LOADGEN_TEST_TAG=tag (they survive reparenting)."""
    found = []
    for p in psutil.process_iter(["pid"]):
        try:
            if p.pid != os.getpid() and p.environ().get("LOADGEN_TEST_TAG") == tag:
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return [p for p in found if _alive(p)]


def _alive(p):
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _is_resource_tracker(p):
    """multiprocess's resource tracker lives as long as the test process, by design."""
    try:
        return "resource_tracker" in " ".join(p.cmdline())
    except psutil.Error:
        return False


def kill_all(procs):
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=3)


@pytest.fixture(autouse=True)
def reap_children():
    """After each test: kill and reap whatever children the test process left behind."""
    yield
    me = psutil.Process()
    left = [c for c in me.children(recursive=True) if _alive(c) and not _is_resource_tracker(c)]
    kill_all(left)


@pytest.fixture
def cli(tmp_path):
    """Start ``python -m loadgen ...`` tagged, so its whole tree can be found after the master dies."""
    tag = uuid.uuid4().hex
    started = []

    class Cli:
        def __init__(self):
            self.tag = tag

        def env(self):
            env = dict(os.environ, LOADGEN_TEST_TAG=tag, PYTHONPATH=os.pathsep.join([TESTS, ROOT]))
            return env

        def start(self, *args, **kw):
            p = subprocess.Popen([sys.executable, "-m", "loadgen", *args], cwd=str(tmp_path), env=self.env(),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
            started.append(p)
            return p

        def run(self, *args, timeout=120):
            p = self.start(*args)
            out, err = p.communicate(timeout=timeout)
            return p.returncode, out, err

        def survivors(self):
            return tagged(tag)

    yield Cli()
    for p in started:
        if p.poll() is None:
            p.kill()
            p.wait(5)
    kill_all(tagged(tag))


def wait_for(pred, timeout=10.0, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()
