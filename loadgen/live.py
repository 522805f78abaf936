"""Live Prometheus metrics while a run goes: ``--metrics-port PORT`` serves them on 127.0.0.1.

The master updates :class:`LiveMetrics` once a written second (the progress hook: the same records as
``timeseries.jsonl``); ``prometheus_client``'s HTTP server thread renders them at each scrape from
that snapshot, so a scrape never touches the engine's state and costs the run nothing between scrapes.
Served: the run's counters so far (operations started, succeeded, failed, dropped, rejected), in
flight, the last second's throughput and latency percentiles, the cumulative latency histogram (HDR
buckets folded into Prometheus ``le`` buckets), the pool's memory and the machine's CPU, and the
thresholds. The end-of-run textfile (``--prom-textfile``) stays as it is.

Needs the ``prometheus_client`` package (``pip install 'loadgen[metrics]'``); without it, or with the
port taken, ``--metrics-port`` is a usage error before anything runs.
"""

from __future__ import annotations

import threading

from .errors import UsageError

# Prometheus histogram bucket bounds, seconds (``le``): 1 ms to 60 s in 1-2.5-5 steps, then +Inf.
BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_COUNTERS = ("started", "succeeded", "failed", "dropped", "rejected")


class LiveMetrics:
    """A snapshot of the run for scrapes, updated by the master each second (:meth:`__call__`, a
    progress hook) and read by the server thread (:meth:`collect`). ``then``: the next hook."""

    in_process_only = True  # a hook of this process: processes it forks (a parallel plan's entries) cannot feed it

    def __init__(self, then=None):
        self.then = then
        self._lock = threading.Lock()
        self._snap = None
        self._totals = {}  # phase → counter → operations so far
        self._server = None

    # -- the master's side

    def __call__(self, runner, rec):
        """Fold one written second into the snapshot (cost: a cumulative sum over the run's latency
        histogram, ~0.1 ms), then call ``then``."""
        hist = runner.out.latency_hist
        total = hist.count
        buckets = list(zip(BUCKETS_S, hist.counts_at_most([le * 1e6 for le in BUCKETS_S])))
        phase = str(rec.get("phase") or "")
        with self._lock:
            totals = self._totals.setdefault(phase, dict.fromkeys(_COUNTERS, 0))  # per phase: monotonic
            for k in _COUNTERS:
                totals[k] += int(rec.get("ops" if k == "started" else k) or 0)
            self._snap = {
                "phase": phase, "rec": rec, "buckets": buckets, "count": total,
                "sum_s": hist.mean_us() * total / 1e6 if total else 0.0,
                "thresholds": runner.thresholds,
            }
        if self.then is not None:
            self.then(runner, rec)

    def done(self):
        """Stop serving; then ``then.done()`` when it has one."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if hasattr(self.then, "done"):
            self.then.done()

    # -- the server's side

    def serve(self, port, addr="127.0.0.1"):
        """Serve on ``addr:port`` from now on; :class:`UsageError` when the package is missing or the port
        cannot be bound. Returns self."""
        try:
            from prometheus_client import start_http_server
            from prometheus_client.registry import CollectorRegistry
        except ImportError:
            raise UsageError("--metrics-port needs the prometheus_client package: pip install "
                             "'loadgen[metrics]'") from None
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)
        try:
            self._server, _ = start_http_server(port, addr=addr, registry=registry)
        except OSError as e:
            raise UsageError(f"--metrics-port {port}: cannot serve on {addr}:{port}: {e.strerror or e}") from None
        return self

    def collect(self):
        """The metric families of the snapshot (prometheus_client's collector protocol)."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        with self._lock:
            snap, totals = self._snap, {p: dict(t) for p, t in self._totals.items()}
        if snap is None:
            return
        labels, phase = ["phase"], [snap["phase"]]
        for k in _COUNTERS:
            c = CounterMetricFamily(f"loadgen_operations_{k}", f"Operations {k} so far, per phase.", labels=labels)
            for p, t in totals.items():
                c.add_metric([p], t[k])
            yield c
        rec = snap["rec"]
        gauges = (
            ("loadgen_in_flight", "Operations in flight at the end of the last second.", rec.get("in_flight")),
            ("loadgen_throughput_ops_per_second", "Operations completed in the last second.", rec.get("throughput")),
            ("loadgen_success_rate", "Succeeded / completed in the last second (0-1).", rec.get("success_rate")),
            ("loadgen_pool_memory_bytes", "The pool's memory (PSS) in the last second.",
             None if rec.get("pool_memory_mb") is None else rec["pool_memory_mb"] * 2**20),
            ("loadgen_machine_cpu_percent", "Machine CPU in the last second (0-100).", rec.get("cpu_percent")),
        )
        for name, text, value in gauges:
            if value is not None:
                g = GaugeMetricFamily(name, text, labels=labels)
                g.add_metric(phase, float(value))
                yield g
        lat = rec.get("latency_ms") or {}
        g = GaugeMetricFamily("loadgen_second_latency_seconds", "Latency percentiles of the last second.",
                              labels=["phase", "stat"])
        for stat, ms in lat.items():
            if ms is not None:
                g.add_metric([snap["phase"], stat], ms / 1000)
        yield g
        h = HistogramMetricFamily("loadgen_latency_seconds", "Operation latency so far in this run (HDR).",
                                  labels=labels)
        h.add_metric(phase, [(str(le), n) for le, n in snap["buckets"]] + [("+Inf", snap["count"])],
                     sum_value=snap["sum_s"])
        yield h
        t = snap["thresholds"]
        g = GaugeMetricFamily("loadgen_threshold", "The run's safety thresholds.", labels=["name"])
        for name in ("max_memory_mb", "max_cpu_percent", "max_concurrent_operations", "min_available_memory_mb"):
            value = getattr(t, name, None)
            if value is not None:
                g.add_metric([name], float(value))
        yield g
