"""Targets for the fleet tests (imported by path inside Dask worker processes)."""

import multiprocessing
import time


def _nothing():
    pass


def stdlib_child(inputs=None):
    """Starts and joins a stdlib multiprocessing child: fails in a daemonic Dask worker
    ('daemonic processes are not allowed to have children')."""
    p = multiprocessing.get_context("fork").Process(target=_nothing)
    p.start()
    p.join()
    time.sleep(0.005)
