"""Fixtures that keep process tests honest: every child reaped, orphans detected."""

import os
import subprocess
import sys
import time

import psutil
import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)


def in_session(sid):
    """Live processes of session ``sid``: a run started in its own session keeps it in every
    descendant, even after reparenting (setproctitle overwrites the environment, so an
    environment tag would not survive)."""
    found = []
    for p in psutil.process_iter(["pid"]):
        try:
            if p.pid != os.getpid() and os.getsid(p.pid) == sid:
                found.append(p)
        except (ProcessLookupError, PermissionError, psutil.Error):
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
    started = []

    class Cli:
        def env(self):
            return dict(os.environ, PYTHONPATH=os.pathsep.join([TESTS, ROOT]))

        def start(self, *args, **kw):
            p = subprocess.Popen([sys.executable, "-m", "loadgen", *args], cwd=str(tmp_path), env=self.env(),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 start_new_session=True, **kw)
            started.append(p)
            return p

        def run(self, *args, timeout=120):
            p = self.start(*args)
            out, err = p.communicate(timeout=timeout)
            return p.returncode, out, err

        def survivors(self):
            return [x for p in started for x in in_session(p.pid)]

    yield Cli()
    for p in started:
        if p.poll() is None:
            p.kill()
            p.wait(5)
    kill_all([x for p in started for x in in_session(p.pid)])


def wait_for(pred, timeout=10.0, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()
