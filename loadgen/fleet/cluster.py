"""The Dask side of fleets: finding and starting clusters, and the worker set-up loadgen needs.

``loadgen cluster local`` (:func:`cluster_command`) serves a loopback
cluster to try fleet mode on one machine; :func:`start_local_cluster` is
the same for tests and benchmarks. :data:`WORKER_CONFIG` is what a Dask
worker that runs loadgen shards must be set to, :data:`RESOURCE` the
resource that marks a load-test machine. Dask is imported only here and
only when a fleet command runs (:func:`import_distributed`).
"""

from __future__ import annotations

import logging
import signal
import threading

from ..config import check_int
from ..errors import ExitCode, UsageError

INSTALL_HINT = "pip install 'loadgen[distributed]' (or: pip install 'dask[distributed]')"
RESOURCE = "loadgen"  # the Dask worker resource that marks a load-test machine: --resources loadgen=1

# Dask settings for workers that run loadgen shards (set by `cluster local`; the README gives the
# same for `dask worker`): loadgen's pool and monitor are children of the worker process, so the
# process must not be daemonic; the nanny's memory manager must not pause, spill or restart the
# worker before loadgen's own thresholds act; the statistical profiler would sample the loadgen
# master's threads every 10 ms, so it is off.
WORKER_CONFIG = {
    "distributed.worker.daemon": False,
    "distributed.worker.memory.target": False,
    "distributed.worker.memory.spill": False,
    "distributed.worker.memory.pause": False,
    "distributed.worker.memory.terminate": False,
    "distributed.worker.profile.enabled": False,
}


def start_local_cluster(workers, port=0):
    """A loopback Dask cluster for trying fleet mode: ``workers`` worker processes on 127.0.0.1,
    one thread each, each offering the ``loadgen`` resource, with :data:`WORKER_CONFIG`.

    The settings are made process-wide (not in a ``with`` block) because the nanny reads
    ``distributed.worker.daemon`` again whenever it restarts a worker. Returns the LocalCluster.
    """
    import_distributed()
    import dask
    from distributed import LocalCluster

    dask.config.set(WORKER_CONFIG)
    # The scheduler's HTTP routes (health, metrics) start even without a dashboard, on 8787 unless
    # told otherwise: a free loopback port instead, so a real Dask dashboard keeps its port.
    return LocalCluster(n_workers=workers, processes=True, host="127.0.0.1", scheduler_port=port,
                        threads_per_worker=1, memory_limit=0, resources={RESOURCE: 1}, dashboard_address=None,
                        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"}, silence_logs=logging.ERROR)


def cluster_command(workers, port):
    """``loadgen cluster local --workers N [--port P]``: serve a loopback cluster until Ctrl-C (exit 0).
    ``workers`` and ``port`` as typed; :class:`UsageError` for bad ones."""
    workers = check_int(workers, "--workers", 1)
    port = check_int(port, "--port", 0, 65535)
    try:
        cluster = start_local_cluster(workers, port)
    except OSError as e:
        raise UsageError(f"cannot start a local Dask cluster on 127.0.0.1:{port}: {e.strerror or e}") from None
    stop = threading.Event()
    old = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        address = cluster.scheduler_address
        print(f"loadgen: local Dask cluster at {address}: {workers} worker process(es) on 127.0.0.1, "
              f"resource {RESOURCE}=1, one thread, no Dask memory limit")
        print(f"loadgen: try `python -m loadgen run concurrent_load --cluster {address}`; Ctrl-C stops the cluster",
              flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        cluster.close()
    print("loadgen: local cluster stopped")
    return ExitCode.OK


def workers_of(client):
    """``{address: info}`` of every worker the scheduler knows, asked now.

    Not ``Client.scheduler_info()``: it returns the Client's cached identity, which the Client's
    own periodic refresh may have replaced, between the call and the read, with a copy that lists
    no worker at all — a worker would look gone.
    """
    try:
        info = client.sync(client.scheduler.identity, n_workers=-1)
    except TypeError:  # older distributed: identity() takes no n_workers and lists every worker
        info = client.sync(client.scheduler.identity)
    return info.get("workers", {})


def import_distributed():
    """The ``distributed`` module; :class:`UsageError` saying how to install it when it is missing."""
    try:
        import distributed
    except ImportError:
        raise UsageError(f"fleet mode needs Dask distributed, which is not installed: {INSTALL_HINT}") from None
    return distributed


def normalise_address(address):
    """``host:port`` or ``tcp://host:port`` → ``tcp://host:port``; :class:`UsageError` for anything else."""
    text = str(address or "").strip()
    if not text:
        raise UsageError("--cluster: expected a scheduler address like tcp://10.0.0.5:8786")
    if "://" not in text:
        text = "tcp://" + text
    scheme, _, rest = text.partition("://")
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--cluster: {address!r} is not a scheduler address like tcp://10.0.0.5:8786")
    return text


def first_line(e):
    """The first line of an exception's message (its type name when empty)."""
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def close_quietly(client, timeout=5):
    """Close a Dask Client within ``timeout`` s, ignoring a scheduler that is already gone."""
    try:
        client.close(timeout=timeout)
    except Exception:  # noqa: BLE001 - the scheduler may already be gone
        pass
