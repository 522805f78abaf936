"""The fleet benchmark's operation (imported by path in the Dask worker processes)."""

import time


def sleep_ms(inputs=None, ms=20.0):
    """An I/O-bound operation: waits, burns nothing."""
    time.sleep(ms / 1000)
