"""Fixtures that keep process tests honest: every child reaped, orphans detected, leftovers fail.

The tests are laid out by kind, and the kind is the marker (applied here, by directory):

- ``tests/unit/``: no process is started (pure functions, data, fakes); ``-m unit`` runs in seconds;
- ``tests/integration/``: real processes (runner, monitor, stressors, reports of real runs, examples,
  fleet on a local Dask cluster, the seed's heavy-load suite, the browser check);
- ``tests/faults/``: fault injection into real processes (kills, signals, crashes, full disks).

The strict reaper (``reap_children``, autouse) lives in ``_reaping.py``.
"""

import os
import subprocess
import sys

import psutil
import pytest

pytest.register_assert_rewrite("_reaping")  # a plugin (below) that this file imports first

from _helpers import ROOT, TESTS, XSD
from _reaping import alive, kill_all

pytest_plugins = ["pytester", "_reaping"]

KINDS = ("unit", "integration", "faults")


def pytest_collection_modifyitems(config, items):
    """Mark every test with its kind, from its directory; a test outside the kind folders is an error."""
    misplaced = set()
    for item in items:
        try:
            rel = os.path.relpath(str(item.path), TESTS)
        except ValueError:
            continue
        parts = rel.split(os.sep)
        if parts[0] == os.pardir:
            continue  # not one of ours (a pytester inner run, a path given outside tests/)
        if len(parts) > 1 and parts[0] in KINDS:
            item.add_marker(getattr(pytest.mark, parts[0]))
        else:
            misplaced.add(rel)
    if misplaced:
        raise pytest.UsageError(f"tests must live in tests/{{{','.join(KINDS)}}}/ (the folder is their kind "
                                f"and marker): {', '.join(sorted(misplaced))}")


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
    return [p for p in found if alive(p)]


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


@pytest.fixture(scope="module")
def schema():
    """The JUnit XML schema Jenkins reads (tests/data/junit.xsd)."""
    xmlschema = pytest.importorskip("xmlschema")
    return xmlschema.XMLSchema(XSD)
